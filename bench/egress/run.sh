#!/usr/bin/env bash
# Egress proxy benchmark: airlock vs Squid (configured like Scout's squid.conf) vs a direct
# connection, all on loopback. Prints one table. Numbers, not assertions.
#
# Measures tunnel throughput (one large transfer, then many in parallel), new tunnels per
# second (CONNECT + 1-byte exchange + close), and proxy RSS while holding idle tunnels.
# Each throughput and rate figure is the best of RUNS runs.
# Tunables (environment): BYTES_ONE, PARALLEL, BYTES_EACH, RATE_CONC, RATE_SECS, IDLE, RUNS.
#
# Note: airlock runs here as the egress proxy alone (examples/egress-bench.rs), with its
# decision log written as JSON lines to a file; Squid writes its access.log. Inside
# `airlock serve` the registry and package proxies add their own (separate) memory.
set -euo pipefail

BYTES_ONE=${BYTES_ONE:-$((1 << 30))}
PARALLEL=${PARALLEL:-64}
BYTES_EACH=${BYTES_EACH:-$((32 << 20))}
RATE_CONC=${RATE_CONC:-32}
RATE_SECS=${RATE_SECS:-5}
IDLE=${IDLE:-1000}
RUNS=${RUNS:-3}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for tool in squid python3; do
    command -v "$tool" >/dev/null || { echo "bench/egress needs $tool (apt-get install -y $tool)" >&2; exit 1; }
done

cargo build --release --quiet -p airlock-egress --example egress-bench --features test-resolver
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bench="$target_dir/release/examples/egress-bench"

work=$(mktemp -d)
chmod 0777 "$work" # squid drops to its own user and writes its logs here
pids=()
cleanup() {
    exec 3>&- 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # port
    for _ in $(seq 100); do
        if (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
src_port=$(free_port)
airlock_port=$(free_port)
squid_port=$(free_port)
target="bench.test:$src_port"

"$bench" source "127.0.0.1:$src_port" &
pids+=($!)
"$bench" proxy "127.0.0.1:$airlock_port" bench.test=127.0.0.1 "$src_port" "$work/airlock.log" &
airlock_pid=$!
pids+=($airlock_pid)

echo "127.0.0.1 bench.test" >"$work/hosts"
cat >"$work/squid.conf" <<SQUID
# As Scout's squid.conf: CONNECT only, exact domains, TLS port only, nothing cached.
acl allowed_domains dstdomain bench.test
acl SSL_ports port 443 $src_port
acl CONNECT method CONNECT
http_access deny !CONNECT
http_access deny CONNECT !SSL_ports
http_access allow CONNECT allowed_domains
http_access deny all
http_port 127.0.0.1:$squid_port
cache deny all
hosts_file $work/hosts
dns_nameservers 127.0.0.1
pid_filename $work/squid.pid
cache_log $work/cache.log
access_log stdio:$work/access.log
coredump_dir $work
pinger_enable off
max_filedescriptors 16384
shutdown_lifetime 1 seconds
SQUID
squid -N -f "$work/squid.conf" &
squid_pid=$!
pids+=($squid_pid)

wait_listening "$src_port"
wait_listening "$airlock_port"
wait_listening "$squid_port"

declare -A result
best_of() { # runs command...: the best of RUNS results (a busy machine only makes numbers worse)
    local best=0 value
    for _ in $(seq "$RUNS"); do
        value=$("$@")
        best=$(python3 -c 'import sys; print(max(sys.argv[1:], key=float))' "$best" "$value")
    done
    echo "$best"
}
measure() { # name via
    local name=$1 via=$2
    echo "  $name: one transfer..." >&2
    result[$name,one]=$(best_of "$bench" throughput "$via" "$target" "127.0.0.1:$src_port" 1 "$BYTES_ONE")
    echo "  $name: $PARALLEL parallel..." >&2
    result[$name,par]=$(best_of "$bench" throughput "$via" "$target" "127.0.0.1:$src_port" "$PARALLEL" "$BYTES_EACH")
    echo "  $name: tunnels/s..." >&2
    result[$name,rate]=$(best_of "$bench" rate "$via" "$target" "127.0.0.1:$src_port" "$RATE_CONC" "$RATE_SECS")
}

rss_kib() { # pid: RSS of the process and its children, KiB
    local total=0 pid
    for pid in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}

idle_rss() { # name pid proxy_port
    local name=$1 pid=$2 port=$3
    echo "  $name: $IDLE idle tunnels..." >&2
    result[$name,rss0]=$(rss_kib "$pid")
    rm -f "$work/hold" "$work/idle.out"
    mkfifo "$work/hold"
    "$bench" idle "127.0.0.1:$port" "$target" "$IDLE" <"$work/hold" >"$work/idle.out" &
    local client=$!
    exec 3>"$work/hold"
    for _ in $(seq 300); do
        grep -q ready "$work/idle.out" 2>/dev/null && break
        kill -0 "$client" 2>/dev/null || { echo "idle client failed" >&2; exit 1; }
        sleep 0.1
    done
    sleep 1
    result[$name,rss]=$(rss_kib "$pid")
    exec 3>&-
    wait "$client" || true
}

echo "measuring (1 transfer of $BYTES_ONE B; $PARALLEL x $BYTES_EACH B; $RATE_CONC clients for ${RATE_SECS}s; $IDLE idle tunnels; best of $RUNS)" >&2
measure direct direct
measure airlock "127.0.0.1:$airlock_port"
measure squid "127.0.0.1:$squid_port"
idle_rss airlock "$airlock_pid" "$airlock_port"
idle_rss squid "$squid_pid" "$squid_port"

ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}x' if b else '-')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.1f}')" "$1"; }

printf '\n%-34s %10s %10s %10s %14s %14s\n' metric direct airlock squid airlock/direct airlock/squid
row() { # label key
    printf '%-34s %10s %10s %10s %14s %14s\n' "$1" "${result[direct,$2]}" "${result[airlock,$2]}" "${result[squid,$2]}" \
        "$(ratio "${result[airlock,$2]}" "${result[direct,$2]}")" "$(ratio "${result[airlock,$2]}" "${result[squid,$2]}")"
}
row "throughput, 1 tunnel (MB/s)" one
row "throughput, $PARALLEL tunnels (MB/s)" par
row "new tunnels per second" rate
printf '%-34s %10s %10s %10s %14s %14s\n' "RSS idle (MiB)" - "$(mib "${result[airlock,rss0]}")" "$(mib "${result[squid,rss0]}")" - \
    "$(ratio "${result[airlock,rss0]}" "${result[squid,rss0]}")"
printf '%-34s %10s %10s %10s %14s %14s\n' "RSS with $IDLE idle tunnels (MiB)" - "$(mib "${result[airlock,rss]}")" "$(mib "${result[squid,rss]}")" - \
    "$(ratio "${result[airlock,rss]}" "${result[squid,rss]}")"
echo
echo "machine: $(nproc) cores, load average at start $load_at_start; client, source and proxy share those cores"
