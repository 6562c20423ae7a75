#!/usr/bin/env bash
# Store benchmark (issue 18, item 6). Part 1, the metadata index at scale: 1,000 and
# 1,000,000 blobs (a tenth of them tagged manifests, a tenth as many package files): index
# size on disk, time to open it again (the gateway's start), hit lookups p50/p99 from 8
# tasks. Targets: open <= 2 s, hit p99 flat from 1,000 to 1,000,000.
# Part 2, eviction planning: a synthetic snapshot of N
# images (a config and 8 layers each, a third of the layers shared with the previous image)
# and as many orphan blobs; `evict::plan` frees 10% under `max_size`. Beside it the plan as
# first written (`evict::walks`: a full closure walk per candidate dropped) up to 2,000
# images, which must delete exactly the same blobs. Target: a million blobs plan in <= 1 s.
#
#   bench/store/run.sh                  # both parts, default sizes
#   bench/store/run.sh 1000 100000      # eviction planning only, chosen sizes of images
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p airlock-store --example evict_plan --example index_scale
if [ $# -eq 0 ]; then
  echo "== the index: size, start, hit latency"
  target/release/examples/index_scale 1000 1000000
  echo
  echo "== eviction planning"
fi
exec target/release/examples/evict_plan "$@"
