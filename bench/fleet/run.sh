#!/usr/bin/env bash
# Fleet benchmark: N cluster nodes (default 1,000) pull one multi-layer image (default 1 GiB)
# through `airlock serve` from a cold cache, the upstream behind a modelled internet link;
# then the same fleet against nginx serving the same files from disk (the warm ceiling, as
# in bench/registry). Everything on 127.0.0.1, random ports, a temp dir. Prints one table and,
# last, exactly:
#   fleet: nodes=N upstream_fetches=F peak_rss_mib=R p99_over_p50=X errors=E
# Targets (issue 18): F = the number of distinct blobs, R <= 256, X <= 3, E = 0.
#
#   upstream:  docker-registry <- nginx "counter" (logs every upstream request; blobs sent at
#              FLEET_LINK MiB/s per connection)
#   airlock:   airlock serve, TLS off, proxy for docker.io -> counter
#   ceiling:   nginx serving the registry paths straight from the image's files (sendfile)
#   spegel:    a third fleet run modelling K3s's embedded mirror (k3s_embedded_registry):
#              manifests from the gateway; config and layers from the gateway until some
#              node holds the image, then from peers (the ceiling nginx stands in for them).
#              Reported: the gateway's egress with and without it
#   TLS rows:  the cold fleet again through a second gateway (its own empty data_dir) with
#              tls.mode = "self-signed", and the ceiling nginx over TLS with that gateway's
#              certificate and key, sendfile off (FLEET_TLS=0 skips them)
#   fleet:     crates/airlock-gateway/examples/fleet.rs, one thread per node and per layer
#              connection (containerd's order: manifest, config, layers over FLEET_CONNS
#              connections), starts spread over FLEET_RAMP s; rustls when --tls-ca is given
#
# All fleet connections come from 127.0.0.1, so the gateway's per-client connection cap is
# raised for the run (a real fleet comes from N addresses); the global cap stays the default.
#
# Tunables (environment):
#   FLEET_NODES=1000   nodes
#   FLEET_MIB=1024     image size in MiB, split into FLEET_LAYERS layers
#   FLEET_LAYERS=8
#   FLEET_CONNS=3      parallel layer connections per node
#   FLEET_RAMP=30      seconds over which the nodes start
#   FLEET_LINK=50      MiB/s per upstream connection (0: no limit)
#   FLEET_TLS=1        also the TLS rows (0: skip)
#   AIRLOCK_BIN=path   use this airlock binary instead of `cargo build --release -p airlock`
#   FLEET_BIN=path     use this fleet generator instead of building the example (release)
#   BENCH_KEEP=1       keep the temp dir
set -euo pipefail

FLEET_NODES=${FLEET_NODES:-1000}
FLEET_MIB=${FLEET_MIB:-1024}
FLEET_LAYERS=${FLEET_LAYERS:-8}
FLEET_CONNS=${FLEET_CONNS:-3}
FLEET_RAMP=${FLEET_RAMP:-30}
FLEET_LINK=${FLEET_LINK:-50}
FLEET_TLS=${FLEET_TLS:-1}

export PATH="$PATH:/usr/sbin:/sbin"
need() { command -v "$1" >/dev/null 2>&1 || { echo "bench/fleet needs $1 (apt-get install -y $2)" >&2; exit 1; }; }
need docker-registry docker-registry
need nginx nginx
need skopeo skopeo
need curl curl
need python3 python3

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
if [ -n "${AIRLOCK_BIN:-}" ]; then
    airlock=$AIRLOCK_BIN
else
    echo "building airlock (release)..." >&2
    cargo build --release --quiet --locked -p airlock
    airlock=$target_dir/release/airlock
fi
if [ -n "${FLEET_BIN:-}" ]; then
    generator=$FLEET_BIN
else
    echo "building the fleet generator (release)..." >&2
    cargo build --release --quiet --locked -p airlock-gateway --example fleet
    generator=$target_dir/release/examples/fleet
fi
[ -x "$airlock" ] || { echo "no airlock binary at $airlock" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in $(jobs -p) "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Thousands of sockets in one process, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cp "$generator" "$work/fleet"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {
    local _
    for _ in $(seq 200); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
    echo "nothing answers at $1" >&2
    exit 1
}
up_port=$(free_port)
count_port=$(free_port)
ceiling_port=$(free_port)
airlock_port=$(free_port)
tls_port=$(free_port)
ceiling_tls_port=$(free_port)

# ---------------------------------------------------------------- the image
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
echo "generating $FLEET_LAYERS random layers, $FLEET_MIB MiB in all..." >&2
hexes=()
for _ in $(seq "$FLEET_LAYERS"); do
    head -c $((FLEET_MIB * 1048576 / FLEET_LAYERS)) /dev/urandom >"$work/blob.tmp"
    hex=$(sha256sum "$work/blob.tmp" | cut -d' ' -f1)
    mv "$work/blob.tmp" "$layout/blobs/sha256/$hex"
    hexes+=("$hex")
done
manifest_hex=$(python3 - "$layout" "${hexes[@]}" <<'PY'
import hashlib, json, os, sys
layout, layers = sys.argv[1], sys.argv[2:]
def put(data, media):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", hexd), "wb") as f:
        f.write(data)
    return {"mediaType": media, "digest": "sha256:" + hexd, "size": len(data)}
size = lambda h: os.path.getsize(os.path.join(layout, "blobs", "sha256", h))
config = json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h for h in layers]}}).encode()
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": put(config, "application/vnd.oci.image.config.v1+json"),
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h,
                "size": size(h)} for h in layers]}).encode()
desc = put(manifest, "application/vnd.oci.image.manifest.v1+json")
desc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
json.dump({"schemaVersion": 2, "manifests": [desc]}, open(os.path.join(layout, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(layout, "oci-layout"), "w"))
print(desc["digest"].split(":")[1])
PY
)
distinct=$((FLEET_LAYERS + 1)) # the layers and the config

# ---------------------------------------------------------------- upstream, counter, ceiling
cat >"$work/upstream.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/upstream-data
http:
  addr: 127.0.0.1:$up_port
YML
docker-registry serve "$work/upstream.yml" >"$work/upstream.log" 2>&1 &
pids+=($!)

# The gateway configs; the TLS one starts now, so nginx can serve its certificate and key.
gateway_config() { # file data_dir port tls_mode
    cat >"$1" <<TOML
data_dir = "$2"

[server]
listen = "127.0.0.1:$3"
max_connections_per_client = 16384
max_connections = 16384

[tls]
mode = "$4"

[[proxy]]
name = "dockerhub-proxy"
format = "oci"
upstream = "http://127.0.0.1:$count_port"
host = "docker.io"
TOML
}
# The paths a mirror serves, straight from the image's files: both ceilings' locations.
ceiling_locations="location ~ ^/v2/library/bench/blobs/sha256:([0-9a-f]+)\$ {
            alias $layout/blobs/sha256/\$1;
            default_type application/octet-stream;
        }
        location = /v2/library/bench/manifests/v1 {
            alias $layout/blobs/sha256/$manifest_hex;
            default_type application/vnd.oci.image.manifest.v1+json;
        }"
tls_ceiling=""
if [ "$FLEET_TLS" = 1 ]; then
    gateway_config "$work/airlock-tls.toml" "$work/airlock-tls-data" "$tls_port" self-signed
    "$airlock" serve --config "$work/airlock-tls.toml" >"$work/airlock-tls.log" 2>&1 &
    gateway_tls=$!
    pids+=($gateway_tls)
    ca="$work/airlock-tls-data/tls/ca.crt"
    for _ in $(seq 200); do
        [ -s "$ca" ] && curl -s -o /dev/null --max-time 1 --cacert "$ca" "https://127.0.0.1:$tls_port/healthz" && break
        sleep 0.1
    done
    tls_ceiling="server { # the ceiling over TLS: the TLS gateway's certificate and key
        listen 127.0.0.1:$ceiling_tls_port ssl backlog=16384;
        ssl_certificate $work/airlock-tls-data/tls/server.crt;
        ssl_certificate_key $work/airlock-tls-data/tls/server.key;
        access_log off;
        sendfile off;
        keepalive_requests 100000;
        $ceiling_locations
    }"
fi

nginx_user=""
[ "$(id -u)" != 0 ] || nginx_user="user $(id -un) $(id -gn);"
link=""
[ "$FLEET_LINK" = 0 ] || link="limit_rate ${FLEET_LINK}m; proxy_max_temp_file_size 0;"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
$nginx_user
worker_processes auto;
worker_rlimit_nofile 65536;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 16384; }
http {
    client_body_temp_path $work/nginx/client;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    log_format counter '\$request_method \$uri \$status \$body_bytes_sent';
    server {
        listen 127.0.0.1:$count_port;
        access_log $work/nginx/counter.log counter;
        location / {
            proxy_pass http://127.0.0.1:$up_port;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }
        location ~ ^/v2/library/bench/blobs/ { # the modelled internet link
            $link
            proxy_pass http://127.0.0.1:$up_port;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
            proxy_read_timeout 600s;
        }
    }
    server { # the same paths a mirror serves, straight from the files
        listen 127.0.0.1:$ceiling_port backlog=16384;
        access_log off;
        sendfile on;
        tcp_nopush on;
        keepalive_requests 100000;
        $ceiling_locations
    }
    $tls_ceiling
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/v2/"
wait_http "http://127.0.0.1:$count_port/v2/"
echo "pushing the image to the upstream registry..." >&2
skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$layout:v1" "docker://127.0.0.1:$up_port/library/bench:v1" >&2
: >"$work/nginx/counter.log"

gateway_config "$work/airlock.toml" "$work/airlock-data" "$airlock_port" off
"$airlock" serve --config "$work/airlock.toml" >"$work/airlock.log" 2>&1 &
gateway=$!
pids+=($gateway)
wait_http "http://127.0.0.1:$airlock_port/healthz"

# ---------------------------------------------------------------- the runs
sample() { # pid -> max fds seen, written to $work/fds.max until the pid's sampler is stopped
    local max=0 n
    while kill -0 "$1" 2>/dev/null; do
        n=$(ls "/proc/$1/fd" 2>/dev/null | wc -l)
        [ "$n" -gt "$max" ] && max=$n && echo "$max" >"$work/fds.max"
        sleep 0.2
    done
}
fleet() { # port [CA file: TLS] -> the summary line
    "$work/fleet" --addr "127.0.0.1:$1" --nodes "$FLEET_NODES" --layer-conns "$FLEET_CONNS" \
        --ramp "$FLEET_RAMP" ${2:+--tls-ca "$2"} 2>"$work/fleet-$1.err" | tail -n 1
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo "fleet of $FLEET_NODES nodes through airlock (cold)..." >&2
echo 0 >"$work/fds.max"
sample "$gateway" &
sampler=$!
cold=$(fleet "$airlock_port")
kill "$sampler" 2>/dev/null || true
peak_rss_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$gateway/status")
peak_fds=$(cat "$work/fds.max")
echo "fleet of $FLEET_NODES nodes against nginx (the warm ceiling)..." >&2
ceiling=$(fleet "$ceiling_port")
# K3s's embedded mirror (k3s_embedded_registry), modelled: once a node holds the image,
# later nodes take its blobs from peers (nginx stands in for their mirrors).
echo "fleet of $FLEET_NODES nodes through airlock with the embedded mirror (model)..." >&2
spegel=$("$work/fleet" --addr "127.0.0.1:$airlock_port" --peer-addr "127.0.0.1:$ceiling_port" \
    --nodes "$FLEET_NODES" --layer-conns "$FLEET_CONNS" --ramp "$FLEET_RAMP" \
    2>"$work/fleet-spegel.err" | tail -n 1)

# Upstream fetches per blob: GETs of blob paths that reached the upstream.
fetches=$(grep -c '^GET /v2/library/bench/blobs/sha256:' "$work/nginx/counter.log" || true)
max_per_blob=$(grep '^GET /v2/library/bench/blobs/sha256:' "$work/nginx/counter.log" |
    cut -d' ' -f2 | sort | uniq -c | sort -rn | head -n 1 | awk '{print $1}')
manifest_fetches=$(grep -c '^GET /v2/library/bench/manifests/' "$work/nginx/counter.log" || true)

if [ "$FLEET_TLS" = 1 ]; then
    : >"$work/nginx/counter.log"
    echo "fleet of $FLEET_NODES nodes through airlock over TLS (cold, its own data_dir)..." >&2
    echo 0 >"$work/fds.max"
    sample "$gateway_tls" &
    sampler=$!
    cold_tls=$(fleet "$tls_port" "$ca")
    kill "$sampler" 2>/dev/null || true
    peak_rss_tls_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$gateway_tls/status")
    peak_fds_tls=$(cat "$work/fds.max")
    echo "fleet of $FLEET_NODES nodes against nginx over TLS (the warm ceiling)..." >&2
    ceiling_tls=$(fleet "$ceiling_tls_port" "$ca")
    fetches_tls=$(grep -c '^GET /v2/library/bench/blobs/sha256:' "$work/nginx/counter.log" || true)
fi

rate() { python3 -c "print(f'{$(field "$1" bytes) / $(field "$1" wall_s) / 1048576:.0f}')"; }
p99_over_p50=$(python3 -c "print(f'{$(field "$cold" p99_s) / max($(field "$cold" p50_s), 1e-9):.2f}')")
ratio=$(python3 -c "print(f'{$(rate "$cold") / max($(rate "$ceiling"), 1):.2f}')")

printf '\n%-44s %14s %14s  %s\n' "fleet: $FLEET_NODES nodes, $FLEET_MIB MiB image" "airlock (cold)" "nginx (warm)" "target"
row() { printf '%-44s %14s %14s  %s\n' "$@"; }
row "upstream blob fetches (distinct blobs: $distinct)" "$fetches" "-" "= $distinct"
row "most fetches of one blob" "${max_per_blob:-0}" "-" "1"
row "upstream manifest fetches" "$manifest_fetches" "-" ""
row "gateway peak RSS, MiB" "$((peak_rss_kib / 1024))" "-" "<= 256"
row "gateway peak open fds" "$peak_fds" "-" ""
row "aggregate MiB/s (ratio to nginx)" "$(rate "$cold") ($ratio)" "$(rate "$ceiling")" ""
row "per-node completion p50 s" "$(field "$cold" p50_s)" "$(field "$ceiling" p50_s)" ""
row "per-node completion p99 s" "$(field "$cold" p99_s)" "$(field "$ceiling" p99_s)" ""
row "per-node completion max s" "$(field "$cold" max_s)" "$(field "$ceiling" max_s)" ""
row "p99 / p50" "$p99_over_p50" "" "<= 3"
mib_of() { python3 -c "print(f'{$1 / 1048576:.0f}')"; }
row "gateway egress MiB, no embedded mirror" "$(mib_of "$(field "$cold" gateway_bytes)")" "-" ""
row "gateway egress MiB, embedded mirror (model)" "$(mib_of "$(field "$spegel" gateway_bytes)")" "-" \
    "peers: $(mib_of "$(field "$spegel" peer_bytes)") MiB, failed: $(field "$spegel" errors)"
row "failed nodes (kinds)" "$(field "$cold" errors) ($(field "$cold" error_kinds))" \
    "$(field "$ceiling" errors) ($(field "$ceiling" error_kinds))" "0"
if [ "$FLEET_TLS" = 1 ]; then
    tls_ratio=$(python3 -c "print(f'{$(rate "$cold_tls") / max($(rate "$ceiling_tls"), 1):.2f}')")
    tls_p99_over_p50=$(python3 -c "print(f'{$(field "$cold_tls" p99_s) / max($(field "$cold_tls" p50_s), 1e-9):.2f}')")
    row "TLS: upstream blob fetches" "$fetches_tls" "-" "= $distinct"
    row "TLS: gateway peak RSS MiB / open fds" "$((peak_rss_tls_kib / 1024)) / $peak_fds_tls" "-" "<= 256 MiB"
    row "TLS: aggregate MiB/s (ratio to nginx TLS)" "$(rate "$cold_tls") ($tls_ratio)" "$(rate "$ceiling_tls")" ""
    row "TLS: per-node completion p50 / p99 s" "$(field "$cold_tls" p50_s) / $(field "$cold_tls" p99_s)" \
        "$(field "$ceiling_tls" p50_s) / $(field "$ceiling_tls" p99_s)" ""
    row "TLS: p99 / p50" "$tls_p99_over_p50" "" "<= 3"
    row "TLS: failed nodes (kinds)" "$(field "$cold_tls" errors) ($(field "$cold_tls" error_kinds))" \
        "$(field "$ceiling_tls" errors) ($(field "$ceiling_tls" error_kinds))" "0"
fi
[ -s "$work/fleet-$airlock_port.err" ] && { echo "first airlock failures:" >&2; head -n 5 "$work/fleet-$airlock_port.err" >&2; }
echo "fleet: nodes=$FLEET_NODES upstream_fetches=$fetches peak_rss_mib=$((peak_rss_kib / 1024)) p99_over_p50=$p99_over_p50 errors=$(field "$cold" errors)"
