#!/usr/bin/env bash
# Soak run of the parsers' property tests: the same tests `cargo test` runs with a few
# dozen to a few hundred cases each, here with PROPTEST_CASES cases each (default 20000),
# repeated with fresh random seeds until FUZZ_MINUTES have passed (default: one round).
# Debug builds keep overflow checks on, which is what a fuzz run wants.
#
#   scripts/fuzz.sh                          # one round of 20,000 cases per property
#   PROPTEST_CASES=100000 FUZZ_MINUTES=60 scripts/fuzz.sh
#
# A failure prints the minimal input proptest shrank it to, and proptest records its seed
# in a `*.proptest-regressions` file beside the test: fix the parser, add a regression
# test named for the bug, and commit the file so every later run tries that input first.
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
minutes="${FUZZ_MINUTES:-0}"

# Every parser that faces the network or an operator's file, by the tests that fuzz it.
runs=(
  "-p airlock-types --lib"                       # digests, image references, names, allowlist, PyPI names, request ids
  "-p airlock-types --test props"                # Range, host names, CIDRs, sizes and durations
  "-p airlock-upstream --lib challenge"          # WWW-Authenticate
  "-p airlock-egress --lib request"              # CONNECT requests
  "-p airlock-registry --lib route"              # /v2/ paths and routing
  "-p airlock-store --test manifest_refs"        # manifests and indexes
  "-p airlock-packages --lib"                    # PyPI HTML/JSON, conda repodata and shards, Helm index, Maven metadata
  "-p airlock-yum --lib"                         # primary.xml (arbitrary bytes, cuts)
  "-p airlock-yum --test props"                  # repomd.xml, primary.xml, every compression
  "-p airlock-config --test props"               # the TOML configuration
  "-p airlock-policy --lib"                      # [[policy]] globs, entries, evaluation
  "-p airlock-ansible --test inventory_props"    # YAML inventories and vars
  "-p airlock-ansible --test vault_props"        # vault envelopes
  "-p airlock-site --test inventory_check junk"  # the site checks over any inventory
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
round=0
while :; do
  round=$((round + 1))
  echo "== fuzz round $round, $PROPTEST_CASES cases per property"
  for run in "${runs[@]}"; do
    # shellcheck disable=SC2086 # each entry is a list of cargo arguments
    if ! cargo test --locked $run -- --test-threads 2 >"$log" 2>&1; then
      cat "$log"
      echo "fuzz: cargo test $run failed" >&2
      exit 1
    fi
    echo "$run: $(grep -E '^test result' "$log" | tail -1)"
  done
  elapsed=$(( $(date +%s) - started ))
  if [ "$elapsed" -ge $((minutes * 60)) ]; then
    break
  fi
done
echo "fuzz: $round round(s), $PROPTEST_CASES cases per property, $(( $(date +%s) - started ))s, no failure"
