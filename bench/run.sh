#!/usr/bin/env bash
# Trellis vs nginx benchmark: same machine, same files, same wrk settings,
# runs interleaved (trellis, nginx, trellis, nginx, ...) and reported as
# medians. See bench/README.md.
#
# Environment knobs:
#   DURATION=10      seconds per wrk run
#   THREADS=1        wrk threads
#   CONNECTIONS=64   wrk connections
#   ROUNDS=3         interleaved rounds per workload
#   ONLY=NAME        run only this workload (hello, static-1k, static-100k, static-10m, hello-pipelined-16;
#                    several may be given, separated by commas or spaces)
#   SERVERS="trellis nginx"  servers to benchmark (e.g. SERVERS=nginx to
#                    check the harness without a trellis build)
#   WORKERS=auto     server worker count ("auto" = nproc for both servers)
#   TRELLIS_BIN=build/trellis   trellis binary
#   PLUGIN_DIR=<dir of TRELLIS_BIN>/plugins   trellis plugin directory
#   NGINX_BIN=nginx  nginx binary
#   TRELLIS_LOG_LEVEL=warn      trellis log level during the run
#   KEEP_TMP=1       keep the temporary directory (configs, logs, wrk output)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-trellis nginx}
WORKERS=${WORKERS:-auto}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT_DIR/build/trellis}
PLUGIN_DIR=${PLUGIN_DIR:-$(dirname "$TRELLIS_BIN")/plugins}
NGINX_BIN=${NGINX_BIN:-nginx}
TRELLIS_LOG_LEVEL=${TRELLIS_LOG_LEVEL:-warn}
KEEP_TMP=${KEEP_TMP:-0}
ADDRESS=127.0.0.1
RESULTS_DIR=$BENCH_DIR/results

ALL_WORKLOADS=(hello static-1k static-100k static-10m hello-pipelined-16)

# die/warn/info, stop_pid, free_port, subst, wait_ready, wrk_stats, median, ...
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- checks
for v in DURATION THREADS CONNECTIONS ROUNDS; do
    { is_uint "${!v}" && (( ${!v} > 0 )); } || die "$v must be a positive integer (got '${!v}')"
done
if [[ $WORKERS == auto ]]; then
    NGINX_WORKERS=$(nproc)
    TRELLIS_WORKERS_JSON='"auto"'
else
    { is_uint "$WORKERS" && (( WORKERS > 0 )); } || die "WORKERS must be 'auto' or a positive integer"
    NGINX_WORKERS=$WORKERS
    TRELLIS_WORKERS_JSON=$WORKERS
fi

read -r -a SERVER_LIST <<< "$SERVERS"
(( ${#SERVER_LIST[@]} > 0 )) || die "SERVERS is empty"
for s in "${SERVER_LIST[@]}"; do
    [[ $s == trellis || $s == nginx ]] || die "unknown server '$s' in SERVERS (trellis, nginx)"
done
has_server() { local s; for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

WORKLOADS=()
if [[ -n $ONLY ]]; then
    read -r -a wanted <<< "${ONLY//,/ }"
    for w in "${wanted[@]}"; do
        found=0
        for a in "${ALL_WORKLOADS[@]}"; do [[ $a == "$w" ]] && found=1; done
        (( found )) || die "unknown workload '$w' in ONLY (known: ${ALL_WORKLOADS[*]})"
        WORKLOADS+=("$w")
    done
else
    WORKLOADS=("${ALL_WORKLOADS[@]}")
fi

command -v wrk  >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
if has_server nginx; then
    command -v "$NGINX_BIN" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"
fi
if has_server trellis; then
    [[ -x $TRELLIS_BIN ]] || die "trellis binary '$TRELLIS_BIN' not found or not executable.
  Build it first (Release):  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build
  or point TRELLIS_BIN at it (or use SERVERS=nginx to exercise the harness alone)."
    TRELLIS_BIN=$(cd "$(dirname "$TRELLIS_BIN")" && pwd)/$(basename "$TRELLIS_BIN")
    [[ -d $PLUGIN_DIR ]] || die "plugin directory '$PLUGIN_DIR' not found (set PLUGIN_DIR)"
    PLUGIN_DIR=$(cd "$PLUGIN_DIR" && pwd)
    for p in hello static; do
        [[ -f $PLUGIN_DIR/$p.so ]] || die "plugin $PLUGIN_DIR/$p.so not found"
    done
    check_release_build "$TRELLIS_BIN"
fi

# ---------------------------------------------------------------- temp dir + cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/trellis-bench.XXXXXX")
# nginx workers drop to 'nobody' when started as root: let them read the www dir.
chmod 755 "$TMP"

TRELLIS_PID=
NGINX_PID=
WRK_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$WRK_PID" wrk
    stop_pid "$TRELLIS_PID" trellis
    stop_pid "$NGINX_PID" nginx
    if [[ $KEEP_TMP == 1 ]]; then
        info "kept temporary directory $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- content
WWW=$TMP/www
make_www "$WWW"

# ---------------------------------------------------------------- helpers
# verify NAME BASEURL: /hello and /1k.bin must return the expected bodies.
verify() {
    local name=$1 base=$2 body
    body=$(curl -fsS --max-time 5 "$base/hello") || die "$name: GET /hello failed"
    [[ $body == "Hello, World!" ]] || die "$name: GET /hello returned '$body', expected 'Hello, World!'"
    curl -fsS --max-time 5 -o "$TMP/$name-1k.bin" "$base/1k.bin" || die "$name: GET /1k.bin failed"
    cmp -s "$TMP/$name-1k.bin" "$WWW/1k.bin" || die "$name: GET /1k.bin body differs from the file"
    curl -fsS --max-time 5 -o /dev/null "$base/" || die "$name: GET / (index) failed"
    info "$name OK at $base (/hello, /1k.bin, /)"
}

# ---------------------------------------------------------------- start servers
declare -A BASE
if has_server trellis; then
    port=$(free_port)
    subst "$BENCH_DIR/trellis.json.in" "$TMP/trellis.json" \
        WORKERS_JSON="$TRELLIS_WORKERS_JSON" PLUGIN_DIR="$PLUGIN_DIR" \
        ADDRESS="$ADDRESS" PORT="$port" WWW="$WWW" LOG_LEVEL="$TRELLIS_LOG_LEVEL"
    "$TRELLIS_BIN" --config "$TMP/trellis.json" > "$TMP/trellis.log" 2>&1 &
    TRELLIS_PID=$!
    BASE[trellis]="http://$ADDRESS:$port"
    wait_ready trellis "$TRELLIS_PID" "$TMP/trellis.log" "${BASE[trellis]}/hello"
fi
if has_server nginx; then
    port=$(free_port)
    NGX=$TMP/nginx
    mkdir -p "$NGX/conf" "$NGX/logs" "$NGX/tmp"
    subst "$BENCH_DIR/nginx.conf.in" "$NGX/conf/nginx.conf" \
        WORKERS="$NGINX_WORKERS" PREFIX="$NGX" ADDRESS="$ADDRESS" PORT="$port" WWW="$WWW"
    "$NGINX_BIN" -p "$NGX/" -c conf/nginx.conf -e "$NGX/logs/error.log" -t \
        > "$TMP/nginx-test.log" 2>&1 || { cat "$TMP/nginx-test.log" >&2; die "nginx -t rejected the config"; }
    "$NGINX_BIN" -p "$NGX/" -c conf/nginx.conf -e "$NGX/logs/error.log" \
        > "$TMP/nginx.log" 2>&1 &
    NGINX_PID=$!
    BASE[nginx]="http://$ADDRESS:$port"
    wait_ready nginx "$NGINX_PID" "$NGX/logs/error.log" "${BASE[nginx]}/hello"
fi
for s in "${SERVER_LIST[@]}"; do verify "$s" "${BASE[$s]}"; done

# ---------------------------------------------------------------- benchmark
# run_wrk SERVER WORKLOAD ROUND -> prints req/s; wrk output kept in $TMP/wrk
mkdir -p "$TMP/wrk"
TOTAL_ERRORS=0
declare -A RESULTS      # RESULTS[server,workload] = "r1 r2 ..."
declare -A ERRORS       # ERRORS[server,workload] = count of non-2xx + socket errors

run_wrk() {
    local server=$1 workload=$2 round=$3 base=${BASE[$1]} out args=()
    out=$TMP/wrk/$server-$workload-$round.txt
    case $workload in
        hello)              args=("$base/hello") ;;
        static-1k)          args=("$base/1k.bin") ;;
        static-100k)        args=("$base/100k.bin") ;;
        static-10m)         args=("$base/10m.bin") ;;
        hello-pipelined-16) args=(-s "$BENCH_DIR/pipeline.lua" "$base/hello" -- /hello 16) ;;
        *) die "internal: unknown workload $workload" ;;
    esac
    # Run wrk in the background and wait for it: a trapped signal (Ctrl-C)
    # interrupts 'wait' at once, whereas bash defers traps until a
    # foreground child exits (and wrk itself catches SIGINT).
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 5s "${args[@]}" > "$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=
        cat "$out" >&2
        die "wrk failed for $server/$workload"
    fi
    WRK_PID=
    local stats rps errors
    stats=$(wrk_stats "$out") || { cat "$out" >&2; die "could not parse Requests/sec for $server/$workload"; }
    read -r rps errors <<< "$stats"
    if (( errors > 0 )); then
        warn "$server/$workload round $round: $errors non-2xx/3xx responses or socket errors ($(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' ' || true))"
        ERRORS[$server,$workload]=$(( ${ERRORS[$server,$workload]:-0} + errors ))
        TOTAL_ERRORS=$(( TOTAL_ERRORS + errors ))
    fi
    RESULTS[$server,$workload]="${RESULTS[$server,$workload]:-} $rps"
    printf '  %-20s %-8s round %d/%d: %12.2f req/s\n' "$workload" "$server" "$round" "$ROUNDS" "$rps" >&2
}

info "wrk: -t $THREADS -c $CONNECTIONS -d ${DURATION}s --timeout 5s; $ROUNDS round(s); workloads: ${WORKLOADS[*]}; servers: ${SERVER_LIST[*]}"
for workload in "${WORKLOADS[@]}"; do
    for (( round = 1; round <= ROUNDS; round++ )); do
        for s in "${SERVER_LIST[@]}"; do    # interleaved: trellis, nginx, trellis, nginx, ...
            run_wrk "$s" "$workload" "$round"
        done
    done
done

# ---------------------------------------------------------------- report
{
    echo "# Trellis vs nginx"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- machine: $(machine_info)"
    echo "- trellis: $(has_server trellis && echo "$TRELLIS_BIN (workers: $WORKERS)" || echo 'not run')"
    if has_server nginx; then
        echo "- nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //') (worker_processes $NGINX_WORKERS)"
    else
        echo "- nginx: not run"
    fi
    echo "- wrk: -t $THREADS -c $CONNECTIONS -d ${DURATION}s --timeout 5s, $ROUNDS interleaved round(s), median reported; wrk and the servers share the same cores"
    echo
    echo "| workload | trellis req/s (median) | nginx req/s (median) | ratio trellis/nginx |"
    echo "| --- | ---: | ---: | ---: |"
    for workload in "${WORKLOADS[@]}"; do
        t=; n=; ratio=-
        # shellcheck disable=SC2086
        has_server trellis && t=$(median ${RESULTS[trellis,$workload]})
        # shellcheck disable=SC2086
        has_server nginx && n=$(median ${RESULTS[nginx,$workload]})
        if [[ -n $t && -n $n ]]; then
            ratio=$(awk -v a="$t" -v b="$n" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        fi
        echo "| $workload | $(fmt_num "$t") | $(fmt_num "$n") | $ratio |"
    done
    echo
    echo "All runs (req/s, in round order):"
    echo
    for workload in "${WORKLOADS[@]}"; do
        for s in "${SERVER_LIST[@]}"; do
            # shellcheck disable=SC2086
            echo "- $workload / $s: $(printf '%s ' ${RESULTS[$s,$workload]})$([[ -n ${ERRORS[$s,$workload]:-} ]] && echo "(errors: ${ERRORS[$s,$workload]})")"
        done
    done
    if (( TOTAL_ERRORS > 0 )); then
        echo
        echo "**WARNING: $TOTAL_ERRORS non-2xx/3xx responses or socket errors in total; see the per-run lines above.**"
    fi
} > "$TMP/report.md"

mkdir -p "$RESULTS_DIR"
cp "$TMP/report.md" "$RESULTS_DIR/latest.md"
cat "$TMP/report.md"
echo
info "report written to ${RESULTS_DIR#"$ROOT_DIR"/}/latest.md"
(( TOTAL_ERRORS == 0 )) || warn "$TOTAL_ERRORS non-2xx/3xx responses or socket errors in total"
