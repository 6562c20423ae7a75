#!/usr/bin/env bash
# Store benchmark (issue 18, item 6), eviction planning so far: a synthetic snapshot of N
# images (a config and 8 layers each, a third of the layers shared with the previous image)
# and as many orphan blobs; `evict::plan` frees 10% under `max_size`. Beside it the plan as
# first written (`evict::walks`: a full closure walk per candidate dropped) up to 2,000
# images, which must delete exactly the same blobs. Target: a million blobs plan in <= 1 s.
#
#   bench/store/run.sh                  # 1,000 2,000 10,000 100,000 images
#   bench/store/run.sh 1000 100000      # chosen sizes
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p airlock-store --example evict_plan
exec target/release/examples/evict_plan "$@"
