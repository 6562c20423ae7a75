#!/usr/bin/env bash
# Soak benchmark: the mixed load of crates/airlock/tests/soak.rs (image pulls cold and
# warm with evictions forced by a small max_size, raw file downloads, egress tunnels,
# upstreams behind a link that fails 5% of requests and stalls 1%, the gateway killed and
# restarted halfway) for SOAK_SECS seconds (default 1800, 30 minutes) against a release
# build, printing the gateway's RSS and open fds over time, what succeeded, errors by kind
# and responses with wrong bytes (must be 0). `scripts/test.sh` runs the same test for 3
# minutes with the debug build.
#
# Needs root (the gateway runs in a mount namespace of its own so that a test name resolves
# to the loopback echo server the tunnels reach), curl and util-linux's unshare.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export AIRLOCK_SOAK_SECS=${SOAK_SECS:-1800}
exec cargo test --release --locked -p airlock --test soak -- --nocapture
