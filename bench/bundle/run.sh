#!/usr/bin/env bash
# Bundle benchmark: `airlock bundle create`, `import` and `verify` throughput beside the tools
# people script today. Everything on 127.0.0.1 with random ports in a temp dir; prints one
# table with ratios and the targets of issue 14 beside them. Numbers, not assertions.
#
#   upstream:  docker-registry holding BENCH_IMAGES generated images (make_images.py: each an
#              OCI index of BENCH_PLATFORMS platforms, each platform BENCH_LAYERS layers of
#              BENCH_LAYER_MIB MiB of random bytes; nothing shared, nothing compresses)
#   create:    airlock bundle create, --config with an OCI proxy for docker.io whose upstream
#              is that registry, a spec listing every image
#   vs:        skopeo copy --all docker://... oci-archive:... (one archive per image, the
#              sum of the times), and skopeo copy --all docker://... docker://<a second,
#              empty docker-registry> (the sum of the times)
#   import:    airlock bundle import --allow-unsigned into a stopped gateway's fresh data_dir
#   vs:        dd of the bundle file to the same disk, bs=1M conv=fsync
#   verify:    airlock bundle verify (every blob hashed), beside sha256sum of the bundle file
#
# Tunables (environment):
#   BENCH_IMAGES=4      images
#   BENCH_PLATFORMS=2   platforms per image (an OCI index each)
#   BENCH_LAYERS=2      layers per platform
#   BENCH_LAYER_MIB=64  MiB per layer (defaults: 4 x 2 x 2 x 64 MiB = 1 GiB)
#   BENCH_REPS=3        repetitions, tools interleaved; the fastest of each is reported
#   BENCH_TIMEOUT=600   seconds any one command may take before the run fails
#   AIRLOCK_BIN=path    use this airlock binary instead of `cargo build --release -p airlock`
#   BENCH_KEEP=1        keep the temp dir (configs, logs) for a look after
#
# Rates: create and both skopeo rows move the same content (every blob and manifest of the
# images) and are given as those bytes per second. import, dd, verify and sha256sum process
# the bundle file and are given as its bytes per second. MB = 10^6 bytes.
#
# Caches: page caches are not dropped (that needs root on the host and slows everything else
# running there). Every run is warm-cache: the upstream's blobs, and the bundle that import,
# dd, verify and sha256sum read, were just written and are in memory on a machine with
# enough of it. What differs between the tools is CPU work and what they write and sync.
#
# Durability, as each tool does it: create writes the bundle through a 1 MiB buffer and
# fsyncs each volume once before renaming it into place. import reads the bundle once,
# streaming each missing blob into a temp file in the store while it is hashed; when the
# whole bundle checked out it fsyncs those files (16 at a time), renames them into place and
# fsyncs each directory once (a blob is either whole or absent after a crash), then records
# everything in one index transaction. dd conv=fsync fsyncs once at the end. skopeo and docker-registry do not fsync.
#
# Best of BENCH_REPS: on a shared machine other load only ever makes a run slower. The CPU
# time (user + system, the tool and its children) is printed beside the wall time: on a busy
# machine a tool's wall time grows with the CPU it has to win from everything else.
set -euo pipefail

BENCH_IMAGES=${BENCH_IMAGES:-4}
BENCH_PLATFORMS=${BENCH_PLATFORMS:-2}
BENCH_LAYERS=${BENCH_LAYERS:-2}
BENCH_LAYER_MIB=${BENCH_LAYER_MIB:-64}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}

export PATH="$PATH:/usr/sbin:/sbin"
need() { # command package
    command -v "$1" >/dev/null 2>&1 || { echo "bench/bundle needs $1 (apt-get install -y $2)" >&2; exit 1; }
}
need docker-registry docker-registry
need skopeo skopeo
need curl curl
need python3 python3
need dd coreutils
need sha256sum coreutils
[ -n "${AIRLOCK_BIN:-}" ] || need cargo "cargo (or rustup)"

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -n "${AIRLOCK_BIN:-}" ]; then
    airlock=$AIRLOCK_BIN
else
    echo "building airlock (release)..." >&2
    cargo build --release --quiet --locked -p airlock
    airlock=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/airlock
fi
[ -x "$airlock" ] || { echo "no airlock binary at $airlock" >&2; exit 1; }

work=$(mktemp -d)
pids=()
mirror_pid=
cleanup() {
    local pid
    for pid in $(jobs -p) "${pids[@]}" $mirror_pid; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}" $mirror_pid; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url: until it answers at all (any status), at most 20 s
    local _
    for _ in $(seq 200); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    exit 1
}

now() { date +%s.%N; }
calc() { python3 -c "import sys; from math import *; print($1)"; }

up_port=$(free_port)
mirror_port=$(free_port)
closed_port=$(free_port) # the importing gateway's upstream: nothing listens there

registry_config() { # file port rootdir
    cat >"$1" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $3
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
YML
}

# ---------------------------------------------------------------- the upstream and its images
registry_config "$work/upstream.yml" "$up_port" "$work/upstream-data"
docker-registry serve "$work/upstream.yml" >"$work/upstream.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/v2/"

echo "generating $BENCH_IMAGES images x $BENCH_PLATFORMS platforms x $BENCH_LAYERS layers x $BENCH_LAYER_MIB MiB..." >&2
mapfile -t made < <(python3 "$root/bench/bundle/make_images.py" "$work/layout" \
    "$BENCH_IMAGES" "$BENCH_PLATFORMS" "$BENCH_LAYERS" $((BENCH_LAYER_MIB << 20)))
payload=${made[0]}
tags=("${made[@]:1}")
echo "pushing them to the upstream registry..." >&2
for tag in "${tags[@]}"; do
    timeout "$BENCH_TIMEOUT" skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false \
        "oci:$work/layout:$tag" "docker://127.0.0.1:$up_port/bench/$tag:v1" >&2
done
rm -rf "$work/layout" # the registry holds its own copy; keep the disk for the runs

# ---------------------------------------------------------------- configurations
# Creating side: docker.io is served by the local upstream (as in bench/registry).
cat >"$work/create.toml" <<TOML
data_dir = "$work/create-data"

[server]
listen = "127.0.0.1:$closed_port"

[tls]
mode = "off"

[[proxy]]
name = "dockerhub-proxy"
format = "oci"
upstream = "http://127.0.0.1:$up_port"
host = "docker.io"
TOML
{
    echo "images:"
    for tag in "${tags[@]}"; do echo "  - docker.io/bench/$tag:v1"; done
} >"$work/spec.yaml"

import_config() { # data_dir -> the importing gateway's configuration (never started)
    cat >"$work/import.toml" <<TOML
data_dir = "$1"

[server]
listen = "127.0.0.1:$closed_port"

[tls]
mode = "off"

[[proxy]]
name = "dockerhub-proxy"
format = "oci"
upstream = "http://127.0.0.1:$closed_port"
host = "docker.io"
offline = true
TOML
}

# skopeo's temp files (oci-archive is built in a temp dir, then archived) stay on this disk
# and in the temp dir.
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"

# ---------------------------------------------------------------- the runs
declare -A best cpu
record() { # key wall_seconds cpu_seconds: keep the fastest wall time, and the least CPU time
    if [ -z "${best[$1]:-}" ] || [ "$(calc "int($2 < ${best[$1]})")" = 1 ]; then best[$1]=$2; fi
    if [ -z "${cpu[$1]:-}" ] || [ "$(calc "int($3 < ${cpu[$1]})")" = 1 ]; then cpu[$1]=$3; fi
}

timed() { # key command...: runs it, records its wall time and its (and its children's) CPU time
    local key=$1 wall user sys TIMEFORMAT='%R %U %S'
    shift
    if ! { time "$@" >>"$work/$key.log" 2>&1; } 2>"$work/time.out"; then
        echo "$key failed; its output:" >&2
        tail -20 "$work/$key.log" >&2
        exit 1
    fi
    read -r wall user sys <"$work/time.out"
    record "$key" "$wall" "$(calc "$user + $sys")"
}

# (Called from `timed`, in an `||` list where `set -e` does not apply: failures return.)
skopeo_archives() { # one oci-archive per image
    local tag
    rm -rf "$work/archives"
    mkdir -p "$work/archives" || return 1
    for tag in "${tags[@]}"; do
        timeout "$BENCH_TIMEOUT" skopeo copy --quiet --all --preserve-digests --src-tls-verify=false \
            "docker://127.0.0.1:$up_port/bench/$tag:v1" "oci-archive:$work/archives/$tag.tar:$tag" || return 1
    done
}

mirror_start() { # a fresh, empty second registry
    registry_config "$work/mirror.yml" "$mirror_port" "$work/mirror-data"
    docker-registry serve "$work/mirror.yml" >>"$work/mirror.log" 2>&1 &
    mirror_pid=$!
    wait_http "http://127.0.0.1:$mirror_port/v2/"
}

mirror_stop() {
    kill "$mirror_pid" 2>/dev/null || true
    wait "$mirror_pid" 2>/dev/null || true
    mirror_pid=
    rm -rf "$work/mirror-data"
}

skopeo_registry() { # every image into the second registry
    local tag
    for tag in "${tags[@]}"; do
        timeout "$BENCH_TIMEOUT" skopeo copy --quiet --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
            "docker://127.0.0.1:$up_port/bench/$tag:v1" "docker://127.0.0.1:$mirror_port/bench/$tag:v1" || return 1
    done
}

bundle="$work/bundle.tar"
for rep in $(seq "$BENCH_REPS"); do
    echo "run $rep of $BENCH_REPS: create..." >&2
    rm -f "$bundle"
    timed create timeout "$BENCH_TIMEOUT" "$airlock" bundle create --spec "$work/spec.yaml" --out "$bundle" --config "$work/create.toml"

    echo "run $rep of $BENCH_REPS: skopeo to oci-archive..." >&2
    timed skopeo_archive skopeo_archives
    rm -rf "$work/archives"

    echo "run $rep of $BENCH_REPS: skopeo to a registry..." >&2
    mirror_start
    timed skopeo_registry skopeo_registry
    mirror_stop

    echo "run $rep of $BENCH_REPS: import, dd, verify, sha256sum..." >&2
    rm -rf "$work/gateway"
    import_config "$work/gateway"
    timed import timeout "$BENCH_TIMEOUT" "$airlock" bundle import "$bundle" --config "$work/import.toml" --allow-unsigned
    rm -rf "$work/gateway"

    timed dd timeout "$BENCH_TIMEOUT" dd if="$bundle" of="$work/dd.out" bs=1M conv=fsync
    rm -f "$work/dd.out"

    timed verify timeout "$BENCH_TIMEOUT" "$airlock" bundle verify "$bundle"
    timed sha256sum timeout "$BENCH_TIMEOUT" sha256sum "$bundle"
done
bundle_bytes=$(stat -c %s "$bundle")

# ---------------------------------------------------------------- the table
rate() { calc "round($1 / ${best[$2]} / 1e6)"; }   # bytes key -> MB/s
secs() { calc "f'{${best[$1]}:.2f}'"; }
cpus() { calc "f'{${cpu[$1]}:.2f}'"; }
ratio() { calc "f'{${best[$2]} / ${best[$1]}:.2f}x'"; } # a b -> how much faster a is than b
fmt='%-44s %6s %7s %7s   %-20s %s\n'
row() { # label bytes key ratio target
    if [ -n "$3" ]; then
        printf "$fmt" "$1" "$(rate "$2" "$3")" "$(secs "$3")" "$(cpus "$3")" "$4" "$5"
    else
        printf "$fmt" "$1" "$2" "wall s" "CPU s" "$4" "$5"
    fi
}
echo
if [ -n "${AIRLOCK_BIN:-}" ]; then label="airlock (AIRLOCK_BIN)"; else
    label="airlock $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"; fi
echo "$label, $(skopeo --version), $(docker-registry --version | awk '{print $NF}');" \
    "$BENCH_IMAGES images x $BENCH_PLATFORMS platforms x $BENCH_LAYERS layers x $BENCH_LAYER_MIB MiB" \
    "($(calc "f'{$payload / 2**20:.0f}'") MiB of content, bundle $(calc "f'{$bundle_bytes / 2**20:.0f}'") MiB);" \
    "loopback, warm page cache, $(nproc) cores, best of $BENCH_REPS"
row "" "MB/s" "" "ratio" "target"
row "bundle create" "$payload" create "" ""
row "skopeo copy --all -> oci-archive (sum)" "$payload" skopeo_archive \
    "create/this $(ratio create skopeo_archive)" "create >= skopeo"
row "skopeo copy --all -> docker-registry (sum)" "$payload" skopeo_registry \
    "create/this $(ratio create skopeo_registry)" "create >= skopeo"
row "bundle import (fresh data_dir)" "$bundle_bytes" import "" ""
row "dd bs=1M conv=fsync of the bundle" "$bundle_bytes" dd "import/this $(ratio import dd)" "import >= 0.8x dd"
row "bundle verify" "$bundle_bytes" verify "" ""
row "sha256sum of the bundle" "$bundle_bytes" sha256sum "verify/this $(ratio verify sha256sum)" ""
echo
echo "create and skopeo: content bytes per second; import, dd, verify, sha256sum: bundle bytes per second."
echo "ratio a/this: how many times faster a is than the row's tool (wall time; above 1: a is faster)."
echo "CPU s: user + system time of the tool and its children (not the registries serving it)."
