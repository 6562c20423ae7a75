#!/usr/bin/env bash
# PyPI benchmark: `airlock serve` as a PyPI proxy vs devpi-server vs proxpi, all three
# mirroring the same local upstream on 127.0.0.1. Prints one table with ratios and the
# targets beside them. Numbers, not assertions.
#
#   bash bench/pypi/run.sh          # about 5 minutes on 2 cores; needs python3, nginx, wrk, curl
#
#   upstream:  nginx serving a generated static simple index (make_index.py): 30 projects in a
#              dependency tree, one newest wheel each (20 KiB .. 8 MiB, about 43 MiB in all),
#              three older small releases listed beside it, sha256 in every link, PEP 658
#              metadata files; PEP 691 JSON or PEP 503 HTML by the Accept header; file URLs
#              absolute, as PyPI's point at another host. Its access log counts what each
#              proxy fetched.
#   airlock:   airlock serve, TLS off, one `format = "pypi"` proxy -> the upstream
#   devpi:     devpi-server (devpi-init --no-root-pypi, then root/pypi created as a mirror
#              index whose mirror_url is the upstream), defaults otherwise (50 threads)
#   proxpi:    proxpi as its Docker image runs it (gunicorn --preload, one worker, 2 threads),
#              PROXPI_INDEX_URL = the upstream, PROXPI_CACHE_DIR in the temp dir
#
# The peers come from PyPI, pinned below, installed once into venvs under
# ${XDG_CACHE_HOME:-~/.cache}/airlock-bench/pypi (BENCH_PEERS=dir to put them elsewhere) and
# reused on later runs. The pip that does the downloads is pinned too. Nothing else leaves
# the machine: the peers run with HTTP(S)_PROXY pointing at a closed local port (loopback
# excepted), so any attempt of theirs to reach the internet fails, and the upstream's log
# must show every wheel fetched by the proxies (never by pip directly; proxpi redirects
# a client to the upstream when a download outlasts PROXPI_DOWNLOAD_TIMEOUT).
#
# Rows:
#   cold:  `pip download bench-app` (resolves and fetches the 30 wheels, --no-cache-dir)
#          through a freshly started proxy with an empty cache; wall time.
#   warm:  the same again, the proxy's cache now full (pip's own cache still off).
#   index: requests/s for /simple/bench-lib26/ (cached) with pip's Accept header, wrk
#          with BENCH_CONN connections for BENCH_SECS.
#   RSS:   VmRSS two seconds after a fresh start; VmHWM (peak) after all the runs and the
#          index load. For proxpi the gunicorn master and worker are added up.
#   proxy CPU: user + system time of the proxy process(es) during one warm download (from
#          /proc/<pid>/stat): pip itself takes most of a warm run's wall time.
# How they store: airlock commits every page, metadata file and wheel durably (fsync of the
# file and its directory, then the index) before the response completes; devpi-server
# writes its keyfs (sqlite) and files; proxpi keeps index pages in memory and writes files
# without fsync. Cold wall times include that difference.
# Each of BENCH_REPS rounds starts all three fresh and runs cold once and warm twice for
# each, servers in a rotating order; the table shows medians. The index load runs in the
# last round, interleaved, best of BENCH_RPS_REPS (other load only ever slows a run).
#
# Tunables (environment):
#   BENCH_REPS=3  BENCH_SECS=5  BENCH_CONN=16  BENCH_RPS_REPS=2
#   AIRLOCK_BIN=path   use this binary instead of `cargo build --release -p airlock`
#   BENCH_KEEP=1       keep the temp dir (configs, logs, the upstream's access log)
set -euo pipefail

DEVPI_SERVER_VERSION=6.20.3
PROXPI_VERSION=1.3.1
GUNICORN_VERSION=27.0.1
PIP_VERSION=26.3

BENCH_REPS=${BENCH_REPS:-3}
BENCH_SECS=${BENCH_SECS:-5}
BENCH_CONN=${BENCH_CONN:-16}
BENCH_RPS_REPS=${BENCH_RPS_REPS:-2}
BENCH_PEERS=${BENCH_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock-bench/pypi}

export PATH="$PATH:/usr/sbin:/sbin" # nginx lives in sbin
need() { # command package
    command -v "$1" >/dev/null 2>&1 || { echo "bench/pypi needs $1 (apt-get install -y $2)" >&2; exit 1; }
}
need nginx nginx
need wrk wrk
need curl curl
need python3 "python3 python3-venv"
need sha256sum coreutils
[ -n "${AIRLOCK_BIN:-}" ] || need cargo "cargo (or rustup)"

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# ---------------------------------------------------------------- the peers and pip, pinned
venv() { # name packages...: a venv under BENCH_PEERS with exactly these pins, made once
    local dir="$BENCH_PEERS/$1"
    shift
    if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$*" ]; then
        echo "installing $* into $dir..." >&2
        rm -rf "$dir"
        python3 -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
        echo "$*" >"$dir/.pins"
    fi
    echo "$dir"
}
devpi_venv=$(venv devpi "devpi-server==$DEVPI_SERVER_VERSION")
proxpi_venv=$(venv proxpi "proxpi==$PROXPI_VERSION" "gunicorn==$GUNICORN_VERSION")
client_venv=$(venv client "pip==$PIP_VERSION")

if [ -n "${AIRLOCK_BIN:-}" ]; then
    airlock=$AIRLOCK_BIN
else
    echo "building airlock (release)..." >&2
    cargo build --release --quiet --locked -p airlock
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    airlock="$target_dir/release/airlock"
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

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url [tries of 0.1 s]: until it answers at all (any status)
    local _
    for _ in $(seq "${2:-300}"); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    exit 1
}

now() { date +%s.%N; }
calc() { python3 -c "import sys; from math import *; from statistics import median; print($1)"; }

# ---------------------------------------------------------------- upstream: a static simple index
up_port=$(free_port)
upstream="http://127.0.0.1:$up_port"
echo "generating the upstream index (30 wheels)..." >&2
python3 "$root/bench/pypi/make_index.py" "$work/upstream" "$upstream" >"$work/newest.txt"

nginx_user="" # as root, nginx workers would drop to a user that cannot read the temp dir
[ "$(id -u)" != 0 ] || nginx_user="user $(id -un) $(id -gn);"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
$nginx_user
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $work/nginx/client;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    log_format counter '\$request_method \$uri \$status \$body_bytes_sent "\$http_user_agent"';
    # PEP 691: JSON to whoever accepts it, else PEP 503 HTML.
    map \$http_accept \$simple_page {
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }
    server {
        listen 127.0.0.1:$up_port;
        access_log $work/nginx/access.log counter;
        root $work/upstream;
        sendfile on;
        location /simple/ {
            index \$simple_page;
            types { application/vnd.pypi.simple.v1+json json; text/html html; }
            add_header Vary Accept;
        }
        location /packages/ {
            types { }
            default_type application/octet-stream;
        }
    }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
wait_http "$upstream/simple/"
access="$work/nginx/access.log"
curl -sf -o /dev/null -H 'Accept: application/vnd.pypi.simple.v1+json' "$upstream/simple/bench-app/" ||
    { echo "the upstream does not serve its index" >&2; exit 1; }

# ---------------------------------------------------------------- the three proxies
# The peers reach the upstream on loopback and nothing else: a proxy on a closed port.
no_internet=(env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9
    https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost)
servers=(airlock devpi proxpi)
declare -A port pid_of index_url

start_airlock() { # dir
    port[airlock]=$(free_port)
    cat >"$1/airlock.toml" <<TOML
data_dir = "$1/data"

[server]
listen = "127.0.0.1:${port[airlock]}"

[tls]
mode = "off"

[[proxy]]
name = "pypi-proxy"
format = "pypi"
upstream = "$upstream/"
TOML
    "$airlock" config check "$1/airlock.toml" >"$1/check.log" 2>&1 || { cat "$1/check.log" >&2; exit 1; }
    "$airlock" serve --config "$1/airlock.toml" >"$1/server.log" 2>&1 &
    pid_of[airlock]=$!
    pids+=($!)
    index_url[airlock]="http://127.0.0.1:${port[airlock]}/repository/pypi-proxy/simple/"
}

start_devpi() { # dir
    port[devpi]=$(free_port)
    "${no_internet[@]}" "$devpi_venv/bin/devpi-init" --serverdir "$1/server" --no-root-pypi \
        --root-passwd bench >"$1/init.log" 2>&1
    "${no_internet[@]}" "$devpi_venv/bin/devpi-server" --serverdir "$1/server" --host 127.0.0.1 \
        --port "${port[devpi]}" >"$1/server.log" 2>&1 &
    pid_of[devpi]=$!
    pids+=($!)
    index_url[devpi]="http://127.0.0.1:${port[devpi]}/root/pypi/+simple/"
}

configure_devpi() { # after it answers: root/pypi mirrors the local upstream
    curl -sf -o /dev/null -u root:bench -X PUT -H 'Content-Type: application/json' -H 'Accept: application/json' \
        -d "{\"type\": \"mirror\", \"mirror_url\": \"$upstream/simple/\"}" \
        "http://127.0.0.1:${port[devpi]}/root/pypi" || { echo "devpi: creating the mirror index failed" >&2; exit 1; }
}

start_proxpi() { # dir
    port[proxpi]=$(free_port)
    "${no_internet[@]}" PROXPI_INDEX_URL="$upstream/simple/" PROXPI_CACHE_DIR="$1/cache" \
        "$proxpi_venv/bin/gunicorn" --preload --access-logfile - --bind "127.0.0.1:${port[proxpi]}" \
        --threads 2 proxpi.server:app >"$1/server.log" 2>&1 &
    pid_of[proxpi]=$!
    pids+=($!)
    index_url[proxpi]="http://127.0.0.1:${port[proxpi]}/index/"
}

start_all() { # round: fresh data dirs, all three started side by side
    local s
    for s in "${servers[@]}"; do
        mkdir -p "$work/$s.$1"
        "start_$s" "$work/$s.$1"
    done
    wait_http "http://127.0.0.1:${port[airlock]}/healthz"
    wait_http "http://127.0.0.1:${port[devpi]}/+api" 600
    wait_http "http://127.0.0.1:${port[proxpi]}/health"
    configure_devpi
}

stop_all() {
    local s
    for s in "${servers[@]}"; do kill "${pid_of[$s]}" 2>/dev/null || true; done
    for s in "${servers[@]}"; do wait "${pid_of[$s]}" 2>/dev/null || true; done
}

tree_pids() { # pid: it and its children
    echo "$1"
    pgrep -P "$1" || true
}
status_kib() { # field pid: the field (VmRSS, VmHWM) summed over the process and its children
    local total=0 p
    for p in $(tree_pids "$2"); do
        total=$((total + $(awk -v f="$1:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

cpu_ticks() { # pid: user + system clock ticks of the process and its children
    local total=0 p
    for p in $(tree_pids "$1"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# ---------------------------------------------------------------- pip download, checked
expected=$(awk '{print $1, $3}' "$work/newest.txt" | sort)
log_lines() { wc -l <"$access"; }
upstream_since() { # line-count regex: upstream requests logged after that line matching regex
    tail -n +"$(($1 + 1))" "$access" | grep -cE "$2" || true
}

pip_download() { # server -> prints wall seconds; fails if the 30 wheels are not all there
    local dest="$work/dl" t0 t1 got
    rm -rf "$dest"
    t0=$(now)
    "$client_venv/bin/pip" download --isolated --no-cache-dir --disable-pip-version-check --no-input \
        --progress-bar off -q -d "$dest" --index-url "${index_url[$1]}" bench-app >"$work/pip.log" 2>&1 ||
        { echo "pip download through $1 failed:" >&2; cat "$work/pip.log" >&2; exit 1; }
    t1=$(now)
    got=$(cd "$dest" && sha256sum -- * | awk '{print $2, $1}' | sort)
    [ "$got" = "$expected" ] || { echo "pip download through $1: not the 30 expected wheels" >&2; exit 1; }
    calc "$t1 - $t0"
}

declare -A samples
add() { samples[$1]="${samples[$1]:-} $2"; }
median_of() { # key -> median of its samples
    # shellcheck disable=SC2086 # the samples are space-separated numbers
    python3 -c "import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" ${samples[$1]}; }

# The index load: wrk with a Lua done hook (the registry bench's report.lua, inline).
cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %.6f %d %d\n", summary.bytes, summary.duration / 1e6,
        summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
pip_accept="application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
rps() { # server -> requests/s for one cached project page
    local url="${index_url[$1]}bench-lib26/" out n secs errs
    out=$(wrk -t2 -c"$BENCH_CONN" -d"${BENCH_SECS}s" --timeout 10s -s "$work/report.lua" -H "Accept: $pip_accept" "$url" 2>&1) ||
        { echo "wrk failed on $url: $out" >&2; exit 1; }
    read -r _ secs n errs <<<"$(grep '^RESULT' <<<"$out" | cut -d' ' -f2-)"
    [ "$errs" = 0 ] || echo "  warning: $errs errors in the index load on $1" >&2
    calc "round($n / $secs)"
}

declare -A best hwm
keep_best() { # key value: keep the largest value seen
    if [ -z "${best[$1]:-}" ] || [ "$(calc "$2 > ${best[$1]}")" = True ]; then best[$1]=$2; fi
}

# ---------------------------------------------------------------- the rounds
wheel_get='^GET /packages/.*\.whl 200 '
by_pip='"pip/'
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$BENCH_REPS"); do
    echo "round $round of $BENCH_REPS: starting airlock, devpi-server, proxpi with empty caches..." >&2
    start_all "$round"
    sleep 2
    for s in "${servers[@]}"; do add "$s,rss0" "$(status_kib VmRSS "${pid_of[$s]}")"; done
    # A rotating order: none of them is always first on a cold upstream page cache.
    order=("${servers[@]:$(((round - 1) % 3))}" "${servers[@]:0:$(((round - 1) % 3))}")
    for s in "${order[@]}"; do
        n0=$(log_lines)
        t=$(pip_download "$s")
        add "$s,cold" "$t"
        fetched=$(upstream_since "$n0" "$wheel_get")
        direct=$(upstream_since "$n0" "$by_pip")
        printf '  %-7s cold: %5.2fs, %s wheels fetched upstream, %s upstream requests by pip itself\n' "$s" "$t" "$fetched" "$direct" >&2
        [ "$direct" = 0 ] || { echo "pip reached the upstream directly through $s (redirected?)" >&2; exit 1; }
        [ "$fetched" -ge 30 ] || { echo "$s fetched only $fetched wheels upstream on a cold run" >&2; exit 1; }
    done
    for s in "${order[@]}" "${order[@]}" "${order[@]}"; do
        n0=$(log_lines)
        c0=$(cpu_ticks "${pid_of[$s]}")
        t=$(pip_download "$s")
        add "$s,warm" "$t"
        add "$s,cpu" "$(($(cpu_ticks "${pid_of[$s]}") - c0))"
        fetched=$(upstream_since "$n0" "$wheel_get")
        [ "$fetched" = 0 ] || { echo "$s fetched $fetched wheels upstream on a warm run" >&2; exit 1; }
        [ "$(upstream_since "$n0" "$by_pip")" = 0 ] || { echo "pip reached the upstream directly through $s" >&2; exit 1; }
    done
    echo "  warm medians so far: $(for s in "${servers[@]}"; do printf '%s %.2fs  ' "$s" "$(median_of "$s,warm")"; done)" >&2
    if [ "$round" = "$BENCH_REPS" ]; then
        echo "  index requests/s ($BENCH_CONN connections, ${BENCH_SECS}s, best of $BENCH_RPS_REPS)..." >&2
        n0=$(log_lines)
        for _ in $(seq "$BENCH_RPS_REPS"); do
            for s in "${order[@]}"; do keep_best "$s,rps" "$(rps "$s")"; done
        done
        rps_upstream=$(upstream_since "$n0" '.')
        for s in "${servers[@]}"; do hwm[$s]=$(status_kib VmHWM "${pid_of[$s]}"); done
    fi
    stop_all
done

# Nothing went anywhere but the upstream: no peer log mentions a public index.
if grep -lE 'pypi\.org/simple|pythonhosted\.org' "$work"/devpi.*/server.log "$work"/proxpi.*/server.log 2>/dev/null; then
    echo "  warning: a peer log above names a public index" >&2
fi

# ---------------------------------------------------------------- the table
declare -A r
for s in "${servers[@]}"; do
    r[$s,cold]=$(calc "f'{$(median_of "$s,cold"):.2f}'")
    r[$s,warm]=$(calc "f'{$(median_of "$s,warm"):.2f}'")
    r[$s,cpu]=$(calc "round($(median_of "$s,cpu") * 1000 / $(getconf CLK_TCK))")
    r[$s,rps]=${best[$s,rps]}
    r[$s,rss0]=$(calc "f'{$(median_of "$s,rss0") / 1024:.1f}'")
    r[$s,hwm]=$(calc "f'{${hwm[$s]} / 1024:.1f}'")
done
ratio() { calc "f'{$1 / $2:.2f}x'"; }
fmt='%-44s %9s %9s %9s %9s %9s   %s\n'
row() { # label key better(min|max) target
    local key=$2 peer
    if [ "$3" = min ]; then
        peer=$(calc "min(${r[devpi,$key]}, ${r[proxpi,$key]})")
    else
        peer=$(calc "max(${r[devpi,$key]}, ${r[proxpi,$key]})")
    fi
    printf "$fmt" "$1" "${r[airlock,$key]}" "${r[devpi,$key]}" "${r[proxpi,$key]}" \
        "$(ratio "${r[airlock,$key]}" "$peer")" "$(ratio "${r[airlock,$key]}" "${r[devpi,$key]}")" "$4"
}
echo
if [ -n "${AIRLOCK_BIN:-}" ]; then label="airlock (AIRLOCK_BIN)"; else
    label="airlock $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"; fi
echo "$label vs devpi-server $DEVPI_SERVER_VERSION vs proxpi $PROXPI_VERSION (gunicorn $GUNICORN_VERSION), pip $PIP_VERSION;" \
    "one local upstream (nginx, 30 wheels, $(calc "f'{sum(int(l.split()[1]) for l in open(\"$work/newest.txt\")) / 2**20:.1f}'") MiB);" \
    "$(nproc) cores, load average at start $load_at_start; medians of $BENCH_REPS rounds"
printf "$fmt" metric airlock devpi proxpi "a/best" "a/devpi" target
row "cold pip download, 30 wheels, wall s" cold min "a/best <= 1x"
row "warm pip download, 30 wheels, wall s" warm min "a/best <= 1x"
row "proxy CPU per warm download, ms" cpu min "-"
row "index /simple/<project>/, req/s ($BENCH_CONN conn)" rps max "a/devpi >= 3x"
row "RSS idle (fresh start), MiB" rss0 min "a fraction: a/best < 1x"
row "RSS peak (VmHWM after all runs), MiB" hwm min "a fraction: a/best < 1x"
echo
echo "a/best: airlock vs the better peer for that row (faster, more req/s, less memory); a/devpi: vs devpi-server."
echo "Wall time and RSS: lower is better; req/s: higher is better. Every cold run fetched all 30 wheels"
echo "upstream through the proxy and every warm run none; upstream requests during the index load: $rps_upstream."
