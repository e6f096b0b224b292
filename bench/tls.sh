#!/usr/bin/env bash
# HTTPS benchmark: Trellis vs nginx vs lighttpd (mod_mbedtls, the same mbedTLS
# 2.28 as Trellis). Same machine, same ECDSA P-256 certificate, same www dir,
# same clients; runs interleaved (trellis, nginx, lighttpd, trellis, ...) and
# reported as medians. See the "TLS" section of bench/README.md.
#
# Workloads:
#   https-keepalive-1k/-100k/-10m  wrk over TLS keep-alive connections, GET /1k.bin, /100k.bin, /10m.bin (req/s)
#   full-handshakes      openssl s_time -new: full handshakes per second, no
#                        resumption (s_time -new never offers a session)
#   resumed-handshakes   openssl s_time -reuse: resumed handshakes per second
#
# Environment knobs:
#   DURATION=10      seconds per wrk run
#   HS_DURATION=10   seconds per s_time run (s_time -time)
#   HS_CLIENTS=2     parallel s_time processes per handshake run (summed; one
#                    s_time is sequential, one handshake in flight at a time)
#   THREADS=1        wrk threads
#   CONNECTIONS=64   wrk connections
#   ROUNDS=3         interleaved rounds per workload
#   ONLY=NAME        run only these workloads (comma or space separated)
#   SERVERS="trellis nginx lighttpd"  servers to benchmark
#   WORKERS=auto     worker processes for every server ("auto" = nproc)
#   NGINX_PROTOCOLS=TLSv1.2  nginx ssl_protocols ("TLSv1.2 TLSv1.3" lets nginx
#                    use TLS 1.3, which Trellis and mod_mbedtls cannot)
#   TRELLIS_BIN=build/trellis   trellis binary
#   PLUGIN_DIR=<dir of TRELLIS_BIN>/plugins   trellis plugin directory
#   NGINX_BIN=nginx  nginx binary
#   LIGHTTPD_BIN=lighttpd  lighttpd binary
#   TRELLIS_LOG_LEVEL=warn      trellis log level during the run
#   KEEP_TMP=1       keep the temporary directory (configs, logs, raw output)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10}
HS_DURATION=${HS_DURATION:-10}
HS_CLIENTS=${HS_CLIENTS:-2}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-trellis nginx lighttpd}
WORKERS=${WORKERS:-auto}
NGINX_PROTOCOLS=${NGINX_PROTOCOLS:-TLSv1.2}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT_DIR/build/trellis}
PLUGIN_DIR=${PLUGIN_DIR:-$(dirname "$TRELLIS_BIN")/plugins}
NGINX_BIN=${NGINX_BIN:-nginx}
LIGHTTPD_BIN=${LIGHTTPD_BIN:-lighttpd}
TRELLIS_LOG_LEVEL=${TRELLIS_LOG_LEVEL:-warn}
KEEP_TMP=${KEEP_TMP:-0}
ADDRESS=127.0.0.1
RESULTS_DIR=$BENCH_DIR/results
CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256   # the suite every server prefers (TLS 1.2)

ALL_SERVERS=(trellis nginx lighttpd)
ALL_WORKLOADS=(https-keepalive-1k https-keepalive-100k https-keepalive-10m full-handshakes resumed-handshakes)

# die/warn/info, stop_pid, free_port, subst, wait_ready, wrk_stats, median, ...
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- checks
for v in DURATION HS_DURATION HS_CLIENTS THREADS CONNECTIONS ROUNDS; do
    { is_uint "${!v}" && (( ${!v} > 0 )); } || die "$v must be a positive integer (got '${!v}')"
done
if [[ $WORKERS == auto ]]; then
    NWORKERS=$(nproc)
    TRELLIS_WORKERS_JSON='"auto"'   # = std::thread::hardware_concurrency() = nproc
else
    { is_uint "$WORKERS" && (( WORKERS > 0 )); } || die "WORKERS must be 'auto' or a positive integer"
    NWORKERS=$WORKERS
    TRELLIS_WORKERS_JSON=$WORKERS
fi
# lighttpd: server.max-worker = N forks N workers under a master; 0 = one process.
(( NWORKERS > 1 )) && LIGHTTPD_MAX_WORKER=$NWORKERS || LIGHTTPD_MAX_WORKER=0

read -r -a SERVER_LIST <<< "$SERVERS"
(( ${#SERVER_LIST[@]} > 0 )) || die "SERVERS is empty"
for s in "${SERVER_LIST[@]}"; do
    [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || die "unknown server '$s' in SERVERS (${ALL_SERVERS[*]})"
done
has_server() { local s; for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

WORKLOADS=()
if [[ -n $ONLY ]]; then
    read -r -a wanted <<< "${ONLY//,/ }"
    for w in "${wanted[@]}"; do
        [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w' in ONLY (known: ${ALL_WORKLOADS[*]})"
        WORKLOADS+=("$w")
    done
else
    WORKLOADS=("${ALL_WORKLOADS[@]}")
fi

ensure_packages wrk wrk
ensure_packages curl curl
ensure_packages openssl openssl
if has_server nginx; then
    [[ $NGINX_BIN == nginx ]] && ensure_packages nginx nginx-light
    command -v "$NGINX_BIN" >/dev/null || die "nginx binary '$NGINX_BIN' not found"
fi
if has_server lighttpd; then
    if [[ $LIGHTTPD_BIN == lighttpd ]]; then
        ensure_packages lighttpd lighttpd lighttpd-mod-mbedtls
        ensure_packages /usr/lib/lighttpd/mod_mbedtls.so lighttpd-mod-mbedtls
    fi
    command -v "$LIGHTTPD_BIN" >/dev/null || die "lighttpd binary '$LIGHTTPD_BIN' not found"
    command -v setsid >/dev/null || die "setsid not found (util-linux)"
fi
if has_server trellis; then
    [[ -x $TRELLIS_BIN ]] || die "trellis binary '$TRELLIS_BIN' not found or not executable.
  Build it first (Release):  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build
  or point TRELLIS_BIN at it (or leave trellis out of SERVERS to exercise the harness alone)."
    TRELLIS_BIN=$(cd "$(dirname "$TRELLIS_BIN")" && pwd)/$(basename "$TRELLIS_BIN")
    [[ -d $PLUGIN_DIR ]] || die "plugin directory '$PLUGIN_DIR' not found (set PLUGIN_DIR)"
    PLUGIN_DIR=$(cd "$PLUGIN_DIR" && pwd)
    [[ -f $PLUGIN_DIR/static.so ]] || die "plugin $PLUGIN_DIR/static.so not found"
    check_release_build "$TRELLIS_BIN"
fi

# ---------------------------------------------------------------- temp dir + cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/trellis-tls-bench.XXXXXX")
# nginx workers drop to 'nobody' when started as root: let them read the www dir.
chmod 755 "$TMP"

TRELLIS_PID=
NGINX_PID=
LIGHTTPD_PID=
LIGHTTPD_WORKER_PIDS=()
CLIENT_PIDS=()          # wrk / s_time processes currently running

stop_clients() {
    local pid
    for pid in "${CLIENT_PIDS[@]:-}"; do stop_pid "$pid" client; done
    CLIENT_PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_clients
    stop_pid "$TRELLIS_PID" trellis
    stop_pid "$NGINX_PID" nginx
    # lighttpd's master exits at once on SIGTERM; its workers finish on their own.
    stop_pid "$LIGHTTPD_PID" lighttpd
    (( ${#LIGHTTPD_WORKER_PIDS[@]} == 0 )) || wait_gone "lighttpd worker" "${LIGHTTPD_WORKER_PIDS[@]}"
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

# ---------------------------------------------------------------- content + certificate
WWW=$TMP/www
make_www "$WWW"

CERT=$TMP/localhost.crt
KEY=$TMP/localhost.key
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' \
    -keyout "$KEY" -out "$CERT" > "$TMP/openssl-req.log" 2>&1 \
    || { cat "$TMP/openssl-req.log" >&2; die "could not create the test certificate"; }
chmod 600 "$KEY"

# ---------------------------------------------------------------- helpers
# verify NAME PORT: /1k.bin over https (certificate verified against CERT)
# must return the file; records the negotiated TLS parameters in TLS_INFO.
declare -A TLS_INFO
verify() {
    local name=$1 port=$2 out proto cipher tmpkey ticket vrc
    curl -fsS --max-time 5 --cacert "$CERT" -o "$TMP/$name-1k.bin" "https://$ADDRESS:$port/1k.bin" \
        || die "$name: GET https://$ADDRESS:$port/1k.bin failed"
    cmp -s "$TMP/$name-1k.bin" "$WWW/1k.bin" || die "$name: GET /1k.bin body differs from the file"
    curl -fsS --max-time 5 --cacert "$CERT" -o /dev/null "https://$ADDRESS:$port/" \
        || die "$name: GET / (index) failed"
    out=$(timeout 10 openssl s_client -connect "$ADDRESS:$port" -servername localhost \
              -CAfile "$CERT" < /dev/null 2>&1) || true
    proto=$(awk -F': ' '/^ *Protocol *:/ { print $2; exit }' <<< "$out")
    cipher=$(awk -F': ' '/^ *Cipher *:/ { print $2; exit }' <<< "$out")
    tmpkey=$(awk -F': ' '/^Server Temp Key:/ { print $2; exit }' <<< "$out")
    vrc=$(awk -F': ' '/Verify return code:/ { print $2; exit }' <<< "$out")
    grep -q 'TLS session ticket lifetime hint' <<< "$out" && ticket=yes || ticket=no
    [[ -n $proto && -n $cipher ]] || { echo "$out" >&2; die "$name: openssl s_client handshake failed"; }
    TLS_INFO[$name]="$proto, $cipher, key exchange ${tmpkey:-?}, session ticket issued: $ticket, verify: ${vrc:-?}"
    [[ $proto == TLSv1.2 && $cipher == "$CIPHER" ]] \
        || warn "$name negotiated $proto $cipher with the default OpenSSL client, not TLSv1.2 $CIPHER"
    [[ $vrc == 0* ]] || warn "$name: certificate did not verify against $CERT ($vrc)"
    info "$name OK at https://$ADDRESS:$port (${TLS_INFO[$name]})"
}

# ---------------------------------------------------------------- start servers
declare -A PORT
if has_server trellis; then
    PORT[trellis]=$(free_port)
    subst "$BENCH_DIR/trellis-tls.json.in" "$TMP/trellis.json" \
        WORKERS_JSON="$TRELLIS_WORKERS_JSON" PLUGIN_DIR="$PLUGIN_DIR" ADDRESS="$ADDRESS" \
        PORT="${PORT[trellis]}" WWW="$WWW" CERT="$CERT" KEY="$KEY" LOG_LEVEL="$TRELLIS_LOG_LEVEL"
    "$TRELLIS_BIN" --config "$TMP/trellis.json" > "$TMP/trellis.log" 2>&1 &
    TRELLIS_PID=$!
    wait_ready trellis "$TRELLIS_PID" "$TMP/trellis.log" "https://$ADDRESS:${PORT[trellis]}/1k.bin" --cacert "$CERT"
fi
if has_server nginx; then
    PORT[nginx]=$(free_port)
    NGX=$TMP/nginx
    mkdir -p "$NGX/conf" "$NGX/logs" "$NGX/tmp"
    subst "$BENCH_DIR/nginx-tls.conf.in" "$NGX/conf/nginx.conf" \
        WORKERS="$NWORKERS" PREFIX="$NGX" ADDRESS="$ADDRESS" PORT="${PORT[nginx]}" WWW="$WWW" \
        CERT="$CERT" KEY="$KEY" PROTOCOLS="$NGINX_PROTOCOLS"
    "$NGINX_BIN" -p "$NGX/" -c conf/nginx.conf -e "$NGX/logs/error.log" -t \
        > "$TMP/nginx-test.log" 2>&1 || { cat "$TMP/nginx-test.log" >&2; die "nginx -t rejected the config"; }
    "$NGINX_BIN" -p "$NGX/" -c conf/nginx.conf -e "$NGX/logs/error.log" \
        > "$TMP/nginx.log" 2>&1 &
    NGINX_PID=$!
    wait_ready nginx "$NGINX_PID" "$NGX/logs/error.log" "https://$ADDRESS:${PORT[nginx]}/1k.bin" --cacert "$CERT"
fi
if has_server lighttpd; then
    PORT[lighttpd]=$(free_port)
    LTD=$TMP/lighttpd
    mkdir -p "$LTD/tmp"
    subst "$BENCH_DIR/lighttpd-tls.conf.in" "$LTD/lighttpd.conf" \
        MAX_WORKER="$LIGHTTPD_MAX_WORKER" PREFIX="$LTD" ADDRESS="$ADDRESS" PORT="${PORT[lighttpd]}" \
        WWW="$WWW" CERT="$CERT" KEY="$KEY"
    "$LIGHTTPD_BIN" -tt -f "$LTD/lighttpd.conf" > "$TMP/lighttpd-test.log" 2>&1 \
        || { cat "$TMP/lighttpd-test.log" >&2; die "lighttpd -tt rejected the config"; }
    # Own session: on shutdown lighttpd's master signals its process group
    # (kill(0, ...)), which would otherwise include this script.
    setsid "$LIGHTTPD_BIN" -D -f "$LTD/lighttpd.conf" > "$TMP/lighttpd.log" 2>&1 &
    LIGHTTPD_PID=$!
    wait_ready lighttpd "$LIGHTTPD_PID" "$LTD/error.log" "https://$ADDRESS:${PORT[lighttpd]}/1k.bin" --cacert "$CERT"
    [[ $(cat "/proc/$LIGHTTPD_PID/comm" 2>/dev/null) == lighttpd* ]] \
        || die "setsid forked: pid $LIGHTTPD_PID is not lighttpd (run tls.sh without job control)"
    if (( LIGHTTPD_MAX_WORKER > 0 )); then
        read -r -a LIGHTTPD_WORKER_PIDS <<< "$(pgrep -P "$LIGHTTPD_PID" | tr '\n' ' ')"
        (( ${#LIGHTTPD_WORKER_PIDS[@]} == LIGHTTPD_MAX_WORKER )) \
            || warn "lighttpd: expected $LIGHTTPD_MAX_WORKER worker processes, found ${#LIGHTTPD_WORKER_PIDS[@]}"
    fi
fi
for s in "${SERVER_LIST[@]}"; do verify "$s" "${PORT[$s]}"; done

# ---------------------------------------------------------------- benchmark
mkdir -p "$TMP/raw"
TOTAL_ERRORS=0
declare -A RESULTS      # RESULTS[server,workload] = "r1 r2 ..."
declare -A ERRORS       # ERRORS[server,workload] = count of errors / unexpected handshakes
declare -A EXTRA        # EXTRA[server,workload] = " [per-run detail]..."

record_error() { # server workload count message
    warn "$4"
    ERRORS[$1,$2]=$(( ${ERRORS[$1,$2]:-0} + $3 ))
    TOTAL_ERRORS=$(( TOTAL_ERRORS + $3 ))
}

# Clients run in the background and are waited for: a trapped signal (Ctrl-C)
# interrupts 'wait' at once, whereas bash defers traps until a foreground
# child exits (and wrk itself catches SIGINT).
run_wrk() { # server workload round
    local server=$1 workload=$2 round=$3 out stats rps errors
    out=$TMP/raw/$server-$workload-$round.txt
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 5s \
        "https://$ADDRESS:${PORT[$server]}/${workload#https-keepalive-}.bin" > "$out" 2>&1 &
    CLIENT_PIDS=($!)
    if ! wait "${CLIENT_PIDS[0]}"; then
        CLIENT_PIDS=()
        cat "$out" >&2
        die "wrk failed for $server/$workload"
    fi
    CLIENT_PIDS=()
    stats=$(wrk_stats "$out") || { cat "$out" >&2; die "could not parse Requests/sec for $server/$workload"; }
    read -r rps errors <<< "$stats"
    (( errors == 0 )) || record_error "$server" "$workload" "$errors" \
        "$server/$workload round $round: $errors non-2xx/3xx responses or socket errors ($(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' ' || true))"
    RESULTS[$server,$workload]="${RESULTS[$server,$workload]:-} $rps"
    printf '  %-20s %-8s round %d/%d: %12.2f req/s\n' "$workload" "$server" "$round" "$ROUNDS" "$rps" >&2
}

# run_stime SERVER WORKLOAD ROUND: HS_CLIENTS parallel 'openssl s_time' processes
# (no HTTP request: connect, handshake, close_notify, close; repeat). The rate
# is the summed connection count over the measured wall-clock time (s_time's
# own "N connections in T real seconds" has whole-second resolution, and
# "connections/user sec" counts only the client's user CPU time).
run_stime() {
    local server=$1 workload=$2 round=$3 mode i out pid t0 t1 n count=0 user=0 full=0 resumed=0
    local outs=() marks
    [[ $workload == full-handshakes ]] && mode=-new || mode=-reuse
    t0=$(date +%s%N)
    for (( i = 1; i <= HS_CLIENTS; i++ )); do
        out=$TMP/raw/$server-$workload-$round-$i.txt
        outs+=("$out")
        openssl s_time -connect "$ADDRESS:${PORT[$server]}" "$mode" -time "$HS_DURATION" \
            -cipher "$CIPHER" > "$out" 2>&1 &
        CLIENT_PIDS+=($!)
    done
    for pid in "${CLIENT_PIDS[@]}"; do
        if ! wait "$pid"; then
            CLIENT_PIDS=()
            for out in "${outs[@]}"; do tail -n 20 "$out" >&2; done
            die "openssl s_time $mode failed for $server"
        fi
    done
    t1=$(date +%s%N)
    CLIENT_PIDS=()
    for out in "${outs[@]}"; do
        # "1123 connections in 0.85s; 1321.18 connections/user sec, bytes read 0"
        # "1123 connections in 4 real seconds, 0 bytes read per connection"
        n=$(awk '/connections in .* real seconds/ { print $1; exit }' "$out")
        [[ -n $n ]] || { tail -n 20 "$out" >&2; die "could not parse s_time output for $server/$workload"; }
        count=$(( count + n ))
        user=$(awk -v u="$user" '/connections in [0-9.]+s;/ { sub("s;", "", $4); u += $4; exit } END { print u }' "$out")
        # progress marks: one per connection, '*' = full handshake, 'r' = resumed
        marks=$(grep -E '^[*r]+$' "$out" | tr -d '\n' || true)
        resumed=$(( resumed + $(tr -cd 'r' <<< "$marks" | wc -c) ))
        full=$(( full + $(tr -cd '*' <<< "$marks" | wc -c) ))
    done
    local wall rate
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    rate=$(awk -v n="$count" -v w="$wall" 'BEGIN { printf "%.2f", n / w }')
    if [[ $mode == -new ]]; then
        (( resumed == 0 )) || record_error "$server" "$workload" "$resumed" \
            "$server/$workload round $round: $resumed of $((full + resumed)) s_time -new connections were resumed"
    else
        # the first connection of each client is full (it obtains the session)
        (( full <= HS_CLIENTS )) || record_error "$server" "$workload" "$((full - HS_CLIENTS))" \
            "$server/$workload round $round: $full of $((full + resumed)) s_time -reuse connections were NOT resumed (full handshakes)"
    fi
    RESULTS[$server,$workload]="${RESULTS[$server,$workload]:-} $rate"
    EXTRA[$server,$workload]="${EXTRA[$server,$workload]:-} [$count conn / ${wall}s, client user CPU $(awk -v u="$user" -v w="$wall" -v c="$HS_CLIENTS" 'BEGIN { printf "%.0f%%", 100 * u / w / c }') per s_time]"
    printf '  %-20s %-8s round %d/%d: %12.2f conn/s (%d connections in %ss, %d s_time client(s); full %d, resumed %d)\n' \
        "$workload" "$server" "$round" "$ROUNDS" "$rate" "$count" "$wall" "$HS_CLIENTS" "$full" "$resumed" >&2
}

info "wrk: -t $THREADS -c $CONNECTIONS -d ${DURATION}s; s_time: $HS_CLIENTS parallel process(es) x ${HS_DURATION}s, -cipher $CIPHER; $ROUNDS round(s); workloads: ${WORKLOADS[*]}; servers: ${SERVER_LIST[*]}"
for workload in "${WORKLOADS[@]}"; do
    for (( round = 1; round <= ROUNDS; round++ )); do
        for s in "${SERVER_LIST[@]}"; do    # interleaved: trellis, nginx, lighttpd, trellis, ...
            case $workload in
                https-keepalive-*) run_wrk "$s" "$workload" "$round" ;;
                *-handshakes)       run_stime "$s" "$workload" "$round" ;;
            esac
        done
    done
done

# ---------------------------------------------------------------- report
unit() { [[ $1 == https-keepalive-* ]] && echo 'req/s' || echo 'conn/s'; }
{
    echo "# HTTPS: Trellis vs nginx vs lighttpd"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- machine: $(machine_info)"
    echo "- trellis: $(has_server trellis && echo "$TRELLIS_BIN (workers: $WORKERS; mbedTLS 2.28)" || echo 'not run')"
    if has_server nginx; then
        echo "- nginx: $("$NGINX_BIN" -V 2>&1 | sed -n 's/^nginx version: //p'), $("$NGINX_BIN" -V 2>&1 | sed -n 's/^built with //p') (worker_processes $NWORKERS, ssl_protocols $NGINX_PROTOCOLS)"
    else
        echo "- nginx: not run"
    fi
    if has_server lighttpd; then
        echo "- lighttpd: $("$LIGHTTPD_BIN" -v 2>&1 | sed -n '1s/ - .*//p') with mod_mbedtls, mbedTLS $(dpkg-query -W -f='${Version}\n' 'libmbedtls[0-9]*' 2>/dev/null | head -n 1 || echo '?') (server.max-worker $LIGHTTPD_MAX_WORKER)"
    else
        echo "- lighttpd: not run"
    fi
    echo "- certificate: ECDSA P-256, self-signed for localhost/127.0.0.1, the same file for every server; session tickets/caches at each server's defaults"
    echo "- negotiated with the default OpenSSL client ($(openssl version | awk '{ print $1, $2 }')):"
    for s in "${SERVER_LIST[@]}"; do echo "  - $s: ${TLS_INFO[$s]}"; done
    echo "- https-keepalive-1k: wrk -t $THREADS -c $CONNECTIONS -d ${DURATION}s --timeout 5s https://.../1k.bin (keep-alive; handshakes only at connection start)"
    echo "- full-handshakes: openssl s_time -new -time $HS_DURATION -cipher $CIPHER, $HS_CLIENTS process(es) in parallel, counts summed; every connection is a full ECDHE-ECDSA handshake (s_time -new never offers a session), no HTTP request"
    echo "- resumed-handshakes: openssl s_time -reuse, same settings (abbreviated handshake with the first connection's session)"
    echo "- handshake rates = connections / wall-clock seconds of the s_time run; $ROUNDS interleaved round(s), median reported; clients and servers share the same cores"
    echo
    echo "| workload | trellis | nginx | lighttpd | trellis/nginx | trellis/lighttpd |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for workload in "${WORKLOADS[@]}"; do
        declare -A med=()
        for s in "${ALL_SERVERS[@]}"; do
            med[$s]=
            # shellcheck disable=SC2086
            has_server "$s" && med[$s]=$(median ${RESULTS[$s,$workload]})
        done
        echo "| $workload ($(unit "$workload")) | $(fmt_num "${med[trellis]}") | $(fmt_num "${med[nginx]}") | $(fmt_num "${med[lighttpd]}") | $(ratio "${med[trellis]}" "${med[nginx]}") | $(ratio "${med[trellis]}" "${med[lighttpd]}") |"
    done
    echo
    echo "Why s_time and not wrk for handshakes: wrk with \`-H 'Connection: close'\` would"
    echo "measure RESUMED handshakes, not full ones: wrk 4.1 keeps the TLS session of its"
    echo "first connection and offers it on every reconnect. \`openssl s_time -new\` never"
    echo "offers a session, so every connection is a full handshake."
    echo "One s_time process is sequential (one handshake in flight, and it does the"
    echo "client side of ECDHE + ECDSA verify itself), so $HS_CLIENTS run in parallel and"
    echo "their counts are summed; the per-run client CPU below shows how busy they were."
    echo
    echo "All runs (in round order):"
    echo
    for workload in "${WORKLOADS[@]}"; do
        for s in "${SERVER_LIST[@]}"; do
            # shellcheck disable=SC2086
            echo "- $workload / $s: $(printf '%s ' ${RESULTS[$s,$workload]})$(unit "$workload")${EXTRA[$s,$workload]:-}$([[ -n ${ERRORS[$s,$workload]:-} ]] && echo " (errors: ${ERRORS[$s,$workload]})")"
        done
    done
    if (( TOTAL_ERRORS > 0 )); then
        echo
        echo "**WARNING: $TOTAL_ERRORS errors or unexpected handshake kinds in total; see the per-run lines above.**"
    fi
} > "$TMP/report.md"

mkdir -p "$RESULTS_DIR"
cp "$TMP/report.md" "$RESULTS_DIR/tls-latest.md"
cat "$TMP/report.md"
echo
info "report written to ${RESULTS_DIR#"$ROOT_DIR"/}/tls-latest.md"
(( TOTAL_ERRORS == 0 )) || warn "$TOTAL_ERRORS errors or unexpected handshake kinds in total"
