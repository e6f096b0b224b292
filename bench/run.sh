#!/usr/bin/env bash
# The Trellis benchmark, one command: Trellis vs nginx vs h2o vs lighttpd
# (mod_mbedtls) on loopback, same files, same clients, configs from bench/.
# Throughput (wrk, plain and HTTPS at TLS 1.2), TLS handshake rates (openssl
# s_time), idle scaling (p50/p99 with 0 / 1,000 / 10,000 idle keep-alive
# connections held open, with a control) and memory per idle connection
# (idle_memory.py). Server CPU per request from /proc. Prints a Markdown table,
# writes bench/results/latest.{md,dat,svg}; --publish (or PUBLISH=1) copies the
# table and chart to bench/results.md and bench/chart.svg. See bench/README.md.
#
#   bench/run.sh [--publish]
#
# Environment knobs (defaults in brackets):
#   DURATION [6]       seconds per wrk run
#   HS_DURATION [=DURATION]  seconds per s_time run;  HS_CLIENTS [2] parallel s_time processes
#   ROUNDS [3]         interleaved rounds per workload (median, min-max reported)
#   THREADS [1]  CONNECTIONS [64]   wrk -t / -c
#   ONLY [all]         workloads, comma or space separated (see ALL_WORKLOADS below)
#   SERVERS ["trellis nginx h2o lighttpd"]   any subset, in this order
#   WORKERS [2]        workers per server ("auto" = nproc)
#   IDLE_COUNTS ["0 1000 10000"]  IDLE_REPS [5]  IDLE_DURATION [5]  idle scaling
#   IDLE_SERVERS [trellis]  servers measured with their own idle connections
#   IDLE_CONTROL [nginx]    who holds the control's idle connections
#   IDLE_SETTLE [1]    seconds between the holder's last connect and the measurement
#   MEM_CONNS [10000]  idle connections for idle_memory.py (plain and --tls)
#   NGINX_PROTOCOLS [TLSv1.2]  nginx ssl_protocols
#   TRELLIS_BIN [build/trellis]  PLUGIN_DIR [<dir of TRELLIS_BIN>/plugins]
#   NGINX_BIN [nginx]  H2O_BIN [h2o]  LIGHTTPD_BIN [lighttpd]  TRELLIS_LOG_LEVEL [warn]
#   KEEP_TMP [0]       1 keeps the temp dir (configs, logs, raw client output)
#   PUBLISH [0]        1 = --publish
#   REPORT_NAME [latest]  results/REPORT_NAME.{md,dat,svg} (tls.sh uses tls-latest)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

PUBLISH=${PUBLISH:-0}
for arg in "$@"; do
    case $arg in
        --publish) PUBLISH=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

DURATION=${DURATION:-6}
HS_DURATION=${HS_DURATION:-$DURATION}
HS_CLIENTS=${HS_CLIENTS:-2}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-trellis nginx h2o lighttpd}
WORKERS=${WORKERS:-2}
IDLE_COUNTS=${IDLE_COUNTS:-0 1000 10000}
IDLE_REPS=${IDLE_REPS:-5}
IDLE_DURATION=${IDLE_DURATION:-5}
IDLE_SERVERS=${IDLE_SERVERS:-trellis}
IDLE_CONTROL=${IDLE_CONTROL:-nginx}
IDLE_SETTLE=${IDLE_SETTLE:-1}
MEM_CONNS=${MEM_CONNS:-10000}
NGINX_PROTOCOLS=${NGINX_PROTOCOLS:-TLSv1.2}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT_DIR/build/trellis}
PLUGIN_DIR=${PLUGIN_DIR:-$(dirname "$TRELLIS_BIN")/plugins}
NGINX_BIN=${NGINX_BIN:-nginx}
H2O_BIN=${H2O_BIN:-h2o}
LIGHTTPD_BIN=${LIGHTTPD_BIN:-lighttpd}
TRELLIS_LOG_LEVEL=${TRELLIS_LOG_LEVEL:-warn}
KEEP_TMP=${KEEP_TMP:-0}
REPORT_NAME=${REPORT_NAME:-latest}
ADDRESS=127.0.0.1
RESULTS_DIR=$BENCH_DIR/results
CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256   # the suite every server prefers (TLS 1.2)

ALL_SERVERS=(trellis nginx h2o lighttpd)
ALL_WORKLOADS=(hello static-1k static-100k static-10m static-1k-close hello-pipelined-16
               https-keepalive-1k https-keepalive-100k https-keepalive-10m
               full-handshakes resumed-handshakes idle-scaling idle-memory)

# die/warn/info, ports, knob parsing, server start/stop, run_client, cpu_ticks, median, ...
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

START_NS=$(date +%s%N)

# ---------------------------------------------------------------- checks
check_uint_knobs DURATION HS_DURATION HS_CLIENTS THREADS CONNECTIONS ROUNDS IDLE_REPS IDLE_DURATION IDLE_SETTLE MEM_CONNS
parse_workers
parse_servers "${ALL_SERVERS[@]}"
parse_workloads "${ALL_WORKLOADS[@]}"
read -r -a IDLE_COUNT_LIST <<< "$IDLE_COUNTS"
for n in "${IDLE_COUNT_LIST[@]}"; do is_uint "$n" || die "IDLE_COUNTS: '$n' is not a number"; done

ensure_packages wrk wrk
ensure_packages curl curl
ensure_packages openssl openssl
ensure_packages ss iproute2
ensure_packages python3 python3
ensure_packages gnuplot gnuplot-nox
ensure_packages h2load nghttp2-client      # for h2.sh; checked here so one run sets the box up
ensure_server_packages hello static
(( $(ulimit -Hn) >= 12000 )) || ! want idle-scaling \
    || die "idle scaling holds 10,000 connections: the hard RLIMIT_NOFILE ($(ulimit -Hn)) is too low"

# ---------------------------------------------------------------- temp dir, content, certificate
bench_tmpdir trellis-bench
WWW=$TMP/www
make_www "$WWW"
printf 'Hello, World!' > "$WWW/hello"   # /hello for h2o and lighttpd (trellis and nginx answer it themselves)
chmod 644 "$WWW/hello"
make_cert
mkdir -p "$TMP/raw"

# Every TLS client (wrk, s_time, s_client) gets this OpenSSL configuration: it
# offers TLS 1.2 only. h2o 2.2.5 cannot be capped at TLS 1.2 from its own config,
# so capping the client is the way to give every server the same handshake.
CLIENT_CNF=$TMP/openssl-client-tls12.cnf
cat > "$CLIENT_CNF" <<'EOF'
openssl_conf = bench_client
[bench_client]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_tls12
[bench_tls12]
MinProtocol = TLSv1.2
MaxProtocol = TLSv1.2
EOF

# ---------------------------------------------------------------- start servers
declare -A PORT=() TLS_PORT=()
for s in "${SERVER_LIST[@]}"; do
    PORT[$s]=$(free_port)
    TLS_PORT[$s]=$(free_port)
done

ready() { # NAME LOG: plain /hello and https /1k.bin answer, and the listeners are ours
    local s=$1 log=$2
    wait_ready "$s" "${SERVER_PID[$s]}" "$log" "http://$ADDRESS:${PORT[$s]}/hello"
    wait_ready "$s" "${SERVER_PID[$s]}" "$log" "https://$ADDRESS:${TLS_PORT[$s]}/1k.bin" --cacert "$CERT"
    server_started "$s" "${PORT[$s]} ${TLS_PORT[$s]}"
}
common=(ADDRESS="$ADDRESS" WWW="$WWW" CERT="$CERT" KEY="$KEY")
for s in "${SERVER_LIST[@]}"; do
    ports="${PORT[$s]} ${TLS_PORT[$s]}"
    case $s in
        trellis)
            start_trellis "$BENCH_DIR/trellis.json.in" "$ports" "${common[@]}" \
                WORKERS_JSON="$TRELLIS_WORKERS_JSON" PLUGIN_DIR="$PLUGIN_DIR" \
                PORT="${PORT[$s]}" TLS_PORT="${TLS_PORT[$s]}" LOG_LEVEL="$TRELLIS_LOG_LEVEL"
            ready trellis "$TMP/trellis.log" ;;
        nginx)
            start_nginx "$BENCH_DIR/nginx.conf.in" "$ports" "${common[@]}" WORKERS="$NWORKERS" \
                PORT="${PORT[$s]}" TLS_PORT="${TLS_PORT[$s]}" PROTOCOLS="$NGINX_PROTOCOLS"
            ready nginx "$NGINX_ERROR_LOG" ;;
        h2o)
            start_h2o "$BENCH_DIR/h2o.conf.in" "$ports" "${common[@]}" WORKERS="$NWORKERS" \
                PLAIN_PORT="${PORT[$s]}" TLS_PORT="${TLS_PORT[$s]}"
            ready h2o "$TMP/h2o/error.log" ;;
        lighttpd)
            start_lighttpd "$BENCH_DIR/lighttpd.conf.in" "$ports" "${common[@]}" \
                MAX_WORKER="$LIGHTTPD_MAX_WORKER" PORT="${PORT[$s]}" TLS_PORT="${TLS_PORT[$s]}"
            ready lighttpd "$TMP/lighttpd/error.log"
            lighttpd_started ;;
    esac
done

# verify NAME: the bodies are right over both listeners; TLS_INFO = what the
# capped client negotiates (the same OpenSSL configuration as wrk and s_time).
declare -A TLS_INFO=()
verify() {
    local s=$1 base=http://$ADDRESS:${PORT[$1]} tbase=https://$ADDRESS:${TLS_PORT[$1]} body out proto cipher tmpkey
    body=$(curl -fsS --max-time 5 "$base/hello") || die "$s: GET /hello failed"
    [[ $body == "Hello, World!" ]] || die "$s: GET /hello returned '$body', expected 'Hello, World!'"
    for f in 1k.bin 100k.bin; do
        curl -fsS --max-time 5 -o "$TMP/$s-$f" "$base/$f" || die "$s: GET /$f failed"
        cmp -s "$TMP/$s-$f" "$WWW/$f" || die "$s: GET /$f body differs from the file"
        curl -fsS --max-time 5 --cacert "$CERT" -o "$TMP/$s-tls-$f" "$tbase/$f" || die "$s: GET $tbase/$f failed"
        cmp -s "$TMP/$s-tls-$f" "$WWW/$f" || die "$s: GET $tbase/$f body differs from the file"
    done
    out=$(OPENSSL_CONF=$CLIENT_CNF timeout 10 openssl s_client -connect "$ADDRESS:${TLS_PORT[$s]}" \
              -servername localhost -CAfile "$CERT" < /dev/null 2>&1) || true
    proto=$(awk -F': ' '/^ *Protocol *:/ { print $2; exit }' <<< "$out")
    cipher=$(awk -F': ' '/^ *Cipher *:/ { print $2; exit }' <<< "$out")
    tmpkey=$(awk -F': ' '/^Server Temp Key:/ { print $2; exit }' <<< "$out")
    [[ -n $proto && -n $cipher ]] || { echo "$out" >&2; die "$s: openssl s_client handshake failed"; }
    TLS_INFO[$s]="$proto, $cipher, ${tmpkey:-?}"
    [[ $proto == TLSv1.2 && $cipher == "$CIPHER" ]] \
        || warn "$s negotiated $proto $cipher with the TLS 1.2 client, not TLSv1.2 $CIPHER"
    info "$s OK: http://$ADDRESS:${PORT[$s]} and https://$ADDRESS:${TLS_PORT[$s]} (${TLS_INFO[$s]})"
}
for s in "${SERVER_LIST[@]}"; do verify "$s"; done

# ---------------------------------------------------------------- measurements
TOTAL_ERRORS=0
declare -A RESULTS=() CPU=() ERRORS=() NORESUME=()

record_error() { # server workload count message
    warn "$4"
    ERRORS[$1,$2]=$(( ${ERRORS[$1,$2]:-0} + $3 ))
    TOTAL_ERRORS=$(( TOTAL_ERRORS + $3 ))
}
unit() {
    case $1 in
        static-1k-close|*-handshakes) echo conn/s ;;
        *) echo req/s ;;
    esac
}

# run_wrk SERVER WORKLOAD ROUND
run_wrk() {
    local s=$1 w=$2 round=$3 out base=http://$ADDRESS:${PORT[$1]} tbase=https://$ADDRESS:${TLS_PORT[$1]}
    local args=() pids t0 t1 stats rps errors n cpu
    out=$TMP/raw/$s-$w-$round.txt
    case $w in
        hello)                args=("$base/hello") ;;
        static-1k|static-100k|static-10m) args=("$base/${w#static-}.bin") ;;
        static-1k-close)      args=(-H 'Connection: close' "$base/1k.bin") ;;
        hello-pipelined-16)   args=(-s "$BENCH_DIR/pipeline.lua" "$base/hello" -- /hello 16) ;;
        https-keepalive-*)    args=("$tbase/${w#https-keepalive-}.bin") ;;
        *) die "internal: unknown wrk workload $w" ;;
    esac
    check_alive "$s"
    read -r -a pids <<< "$(server_pids "$s")"
    t0=$(cpu_ticks "${pids[@]}")
    run_client $(( DURATION + 30 )) "$out" env OPENSSL_CONF="$CLIENT_CNF" \
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 5s "${args[@]}" \
        || { cat "$out" >&2; check_alive "$s"; die "wrk failed for $s/$w"; }
    t1=$(cpu_ticks "${pids[@]}")
    check_alive "$s"
    stats=$(wrk_stats "$out") || { cat "$out" >&2; die "could not parse Requests/sec for $s/$w"; }
    read -r rps errors <<< "$stats"
    n=$(wrk_requests "$out")
    cpu=$(us_per $(( t1 - t0 )) "${n:-0}")
    (( errors == 0 )) || record_error "$s" "$w" "$errors" \
        "$s/$w round $round: $errors non-2xx/3xx responses or socket errors ($(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' ' || true))"
    RESULTS[$s,$w]="${RESULTS[$s,$w]:-} $rps"
    CPU[$s,$w]="${CPU[$s,$w]:-} $cpu"
    printf '  %-20s %-8s round %d/%d: %12.2f %s, %8s us CPU each\n' "$w" "$s" "$round" "$ROUNDS" "$rps" "$(unit "$w")" "$cpu" >&2
}

# run_stime SERVER WORKLOAD ROUND: HS_CLIENTS parallel 'openssl s_time' processes
# (no HTTP request: connect, handshake, close_notify, close; repeat), TLS 1.2.
# The rate is the summed connection count over the measured wall-clock time.
run_stime() {
    local s=$1 w=$2 round=$3 mode i out pid t0 t1 n count=0 full=0 resumed=0 marks pids c0 c1 rc
    local outs=() spids=()
    [[ $w == full-handshakes ]] && mode=-new || mode=-reuse
    check_alive "$s"
    read -r -a pids <<< "$(server_pids "$s")"
    c0=$(cpu_ticks "${pids[@]}")
    t0=$(date +%s%N)
    for (( i = 1; i <= HS_CLIENTS; i++ )); do
        out=$TMP/raw/$s-$w-$round-$i.txt
        outs+=("$out")
        OPENSSL_CONF=$CLIENT_CNF timeout -k 5 $(( HS_DURATION + 30 )) openssl s_time \
            -connect "$ADDRESS:${TLS_PORT[$s]}" "$mode" -time "$HS_DURATION" -cipher "$CIPHER" > "$out" 2>&1 &
        spids+=($!)
        CLIENT_PIDS+=($!)
    done
    for pid in "${spids[@]}"; do
        rc=0; wait "$pid" || rc=$?
        forget_client "$pid"
        if (( rc != 0 )); then
            for out in "${outs[@]}"; do tail -n 20 "$out" >&2; done
            check_alive "$s"
            die "openssl s_time $mode failed for $s (exit $rc)"
        fi
    done
    t1=$(date +%s%N)
    c1=$(cpu_ticks "${pids[@]}")
    for out in "${outs[@]}"; do
        # "1123 connections in 4 real seconds, 0 bytes read per connection"
        n=$(awk '/connections in .* real seconds/ { print $1; exit }' "$out")
        [[ -n $n ]] || { tail -n 20 "$out" >&2; die "could not parse s_time output for $s/$w"; }
        count=$(( count + n ))
        # progress marks: one per connection, '*' = full handshake, 'r' = resumed
        marks=$(grep -E '^[*r]+$' "$out" | tr -d '\n' || true)
        resumed=$(( resumed + $(tr -cd 'r' <<< "$marks" | wc -c) ))
        full=$(( full + $(tr -cd '*' <<< "$marks" | wc -c) ))
    done
    local wall rate cpu
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    rate=$(awk -v n="$count" -v w="$wall" 'BEGIN { printf "%.2f", n / w }')
    cpu=$(us_per $(( c1 - c0 )) "$count")
    if [[ $mode == -new ]]; then
        (( resumed == 0 )) || record_error "$s" "$w" "$resumed" \
            "$s/$w round $round: $resumed of $((full + resumed)) s_time -new connections were resumed"
    else
        if (( resumed == 0 )); then
            # h2o 2.2.5 as packaged: no resumption at all (a property, not a glitch): noted, not counted
            [[ -n ${NORESUME[$s]:-} ]] || warn "$s resumed none of its s_time -reuse connections: they are all full handshakes"
            NORESUME[$s]=1
        else
            # the first connection of each client is full (it obtains the session)
            (( full <= HS_CLIENTS )) || record_error "$s" "$w" "$((full - HS_CLIENTS))" \
                "$s/$w round $round: $full of $((full + resumed)) s_time -reuse connections were NOT resumed (full handshakes)"
        fi
    fi
    RESULTS[$s,$w]="${RESULTS[$s,$w]:-} $rate"
    CPU[$s,$w]="${CPU[$s,$w]:-} $cpu"
    printf '  %-20s %-8s round %d/%d: %12.2f conn/s, %8s us CPU each (%d in %ss; full %d, resumed %d)\n' \
        "$w" "$s" "$round" "$ROUNDS" "$rate" "$cpu" "$count" "$wall" "$full" "$resumed" >&2
}

# ---- idle scaling: one wrk connection (--latency) measures p50/p99 of /hello on
# TARGET while a holder process keeps N idle keep-alive connections open to HOLDER.
declare -A IDLE_P50=() IDLE_P99=() IDLE_RPS=() IDLE_CPU=()
HOLDER_OUT=
# start_holder SERVER N: bounded wait (120 s) until idle_hold.py has N connections open.
start_holder() {
    local s=$1 n=$2 i
    HOLDER_OUT=$TMP/raw/holder-$s-$n-$RANDOM.txt
    python3 "$BENCH_DIR/idle_hold.py" "$ADDRESS" "${PORT[$s]}" "$n" --max-seconds 300 > "$HOLDER_OUT" 2>&1 &
    HOLDER_PID=$!
    CLIENT_PIDS+=("$HOLDER_PID")
    for (( i = 0; i < 1200; i++ )); do
        grep -q '^ready' "$HOLDER_OUT" && return 0
        kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$HOLDER_OUT" >&2; die "idle_hold.py failed to open $n connections to $s"; }
        sleep 0.1
    done
    die "idle_hold.py did not open $n connections to $s within 120 s"
}
# stop_holder SERVER WORKLOAD-KEY: prints nothing; records an error if the server closed some.
stop_holder() {
    local s=$1 key=$2 rc=0 closed
    kill -TERM "$HOLDER_PID" 2>/dev/null || true
    wait "$HOLDER_PID" || rc=$?
    forget_client "$HOLDER_PID"
    closed=$(awk '/^closed/ { print $2 }' "$HOLDER_OUT")
    if [[ -z $closed ]] || (( rc == 1 )); then
        cat "$HOLDER_OUT" >&2; die "idle_hold.py against $s failed (exit $rc)"
    fi
    (( closed == 0 )) || record_error "$key" idle-scaling "$closed" \
        "idle scaling $key: $s closed $closed of its idle connections during the measurement"
}
idle_measure() { # TARGET HOLDER N REP
    local t=$1 h=$2 n=$3 rep=$4 key out pids c0 c1 p50 p99 rps reqs cpu
    key="$t|$h|$n"
    out=$TMP/raw/idle-$t-$h-$n-$rep.txt
    check_alive "$t"; check_alive "$h"
    (( n == 0 )) || start_holder "$h" "$n"
    sleep "$IDLE_SETTLE"    # let the server settle after the burst of connects
    read -r -a pids <<< "$(server_pids "$t")"
    c0=$(cpu_ticks "${pids[@]}")
    run_client $(( IDLE_DURATION + 30 )) "$out" \
        wrk -t 1 -c 1 -d "${IDLE_DURATION}s" --timeout 5s --latency "http://$ADDRESS:${PORT[$t]}/hello" \
        || { cat "$out" >&2; check_alive "$t"; die "wrk failed for idle scaling $key"; }
    c1=$(cpu_ticks "${pids[@]}")
    (( n == 0 )) || stop_holder "$h" "$key"
    p50=$(wrk_latency_us "$out" 50); p99=$(wrk_latency_us "$out" 99)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(wrk_requests "$out")
    [[ -n $p50 && -n $p99 && -n $rps ]] || { cat "$out" >&2; die "could not parse wrk --latency output ($key)"; }
    cpu=$(us_per $(( c1 - c0 )) "${reqs:-0}")
    IDLE_P50[$key]="${IDLE_P50[$key]:-} $p50"
    IDLE_P99[$key]="${IDLE_P99[$key]:-} $p99"
    IDLE_RPS[$key]="${IDLE_RPS[$key]:-} $rps"
    IDLE_CPU[$key]="${IDLE_CPU[$key]:-} $cpu"
    printf '  idle %-8s %6d idle on %-8s rep %d/%d: p50 %8.1f us  p99 %8.1f us  %9.1f req/s%s\n' \
        "$t" "$n" "$h" "$rep" "$IDLE_REPS" "$p50" "$p99" "$rps" \
        "$( (( n == 0 )) || awk '/^ready/ { printf "  (opened in %s)", $3 }' "$HOLDER_OUT")" >&2
}
IDLE_CONDS=()       # "TARGET|HOLDER|N", in measuring order
IDLE_MAX=0
for n in "${IDLE_COUNT_LIST[@]}"; do (( n > IDLE_MAX )) && IDLE_MAX=$n; done
run_idle_scaling() {
    local s n c rep
    IDLE_CONDS=()
    for s in $IDLE_SERVERS; do
        has_server "$s" || { warn "idle scaling: $s is not in SERVERS; skipped"; continue; }
        for n in "${IDLE_COUNT_LIST[@]}"; do IDLE_CONDS+=("$s|$s|$n"); done
    done
    if has_server trellis && has_server "$IDLE_CONTROL" && (( IDLE_MAX > 0 )); then
        IDLE_CONDS+=("trellis|$IDLE_CONTROL|$IDLE_MAX")
    else
        warn "idle scaling: no control (needs trellis and $IDLE_CONTROL in SERVERS and a non-zero count in IDLE_COUNTS)"
    fi
    info "idle scaling: ${#IDLE_CONDS[@]} conditions x $IDLE_REPS reps, wrk -t1 -c1 -d${IDLE_DURATION}s --latency"
    for (( rep = 1; rep <= IDLE_REPS; rep++ )); do
        for c in "${IDLE_CONDS[@]}"; do
            IFS='|' read -r t h n <<< "$c"
            idle_measure "$t" "$h" "$n" "$rep"
        done
    done
}

# ---- memory per idle connection: idle_memory.py (its own servers, one worker each)
declare -A MEM=()
run_idle_memory() {
    local mode out flag line name val
    for mode in plain tls; do
        out=$TMP/raw/idle-memory-$mode.txt
        [[ $mode == tls ]] && flag=(--tls) || flag=()
        info "idle memory ($mode): $MEM_CONNS idle connections per server (bench/idle_memory.py)"
        run_client 900 "$out" env TRELLIS_BIN="$TRELLIS_BIN" TRELLIS_PLUGIN_DIR="$PLUGIN_DIR" \
            python3 "$BENCH_DIR/idle_memory.py" "$MEM_CONNS" "${flag[@]}" \
            || { cat "$out" >&2; die "idle_memory.py ($mode) failed"; }
        while read -r line; do
            # "trellis: 336 bytes per idle connection (RSS growth / N)"
            [[ $line =~ ^([a-z0-9]+):\ (-?[0-9]+)\ bytes\ per\ idle ]] || continue
            name=${BASH_REMATCH[1]}; val=${BASH_REMATCH[2]}
            MEM[$mode,$name]=$val
        done < "$out"
        grep -i warning "$out" >&2 || true
        printf '  idle memory %-5s %s\n' "$mode" "$(grep -E 'bytes per idle' "$out" | tr '\n' ' ')" >&2
    done
}

if ! has_server trellis; then
    want idle-memory && warn "idle-memory needs trellis; skipped"
fi
info "wrk -t $THREADS -c $CONNECTIONS -d ${DURATION}s; s_time: $HS_CLIENTS x ${HS_DURATION}s; $ROUNDS round(s); workloads: ${WORKLOADS[*]}; servers: ${SERVER_LIST[*]}; $NWORKERS worker(s) each"
for w in "${WORKLOADS[@]}"; do
    case $w in
        idle-scaling) run_idle_scaling; continue ;;
        idle-memory) has_server trellis && run_idle_memory; continue ;;
    esac
    for (( round = 1; round <= ROUNDS; round++ )); do
        for s in "${SERVER_LIST[@]}"; do    # interleaved: trellis, nginx, h2o, lighttpd, trellis, ...
            case $w in
                *-handshakes) run_stime "$s" "$w" "$round" ;;
                *)            run_wrk "$s" "$w" "$round" ;;
            esac
        done
    done
done

# Stop the servers before writing the report: nothing may run while gnuplot draws.
for s in "${SERVER_LIST[@]}"; do stop_server "$s"; done
ELAPSED=$(( ($(date +%s%N) - START_NS) / 1000000000 ))

# ---------------------------------------------------------------- report
fmt_n() { # number -> rounded, thousands separated (1234567.8 -> 1,234,568); "-" if empty
    [[ -n ${1:-} ]] || { printf -- '-'; return; }
    awk -v v="$1" 'BEGIN { d = (v < 10 && v != int(v)) ? 1 : 0; s = sprintf("%." d "f", v)
        n = split(s, p, "."); i = p[1]; o = ""
        while (length(i) > 3) { o = "," substr(i, length(i) - 2) o; i = substr(i, 1, length(i) - 3) }
        printf "%s%s%s", i, o, (n > 1 ? "." p[2] : "") }'
}
# shellcheck disable=SC2086
med() { median $1; }
# range "V1 V2 ..." -> "min–max", formatted like fmt_n
range() {
    local lo hi
    # shellcheck disable=SC2086
    read -r lo hi <<< "$(min_max $1)"
    [[ -n ${lo:-} ]] && printf '%s–%s' "$(fmt_n "$lo")" "$(fmt_n "$hi")" || printf -- '-'
}
noresume() { [[ $2 != resumed-handshakes || -z ${NORESUME[$1]:-} ]] || printf ' (no resumption: all full handshakes)'; }
errnote() { [[ -z ${ERRORS[$1]:-} ]] || printf ' ⚠ %s errors' "${ERRORS[$1]}"; }
# label WORKLOAD [chart]: the table's name of a workload, or with "chart" the chart's, short enough
# to sit level under its bars (rotated labels render differently from one SVG viewer to the next).
label() {
    local long short
    case $1 in
        hello) long='hello, keep-alive (13 B)' short='hello' ;;
        static-1k) long='1 KiB file, keep-alive' short='1 KiB' ;;
        static-100k) long='100 KiB file, keep-alive' short='100 KiB' ;;
        static-10m) long='10 MiB file, keep-alive' short='10 MiB' ;;
        static-1k-close) long='1 KiB, new connection per request' short='new conn.' ;;
        hello-pipelined-16) long='hello, pipelined x16' short='pipelined' ;;
        https-keepalive-1k) long='HTTPS 1 KiB, keep-alive' short='TLS 1 KiB' ;;
        https-keepalive-100k) long='HTTPS 100 KiB, keep-alive' short='TLS 100 KiB' ;;
        https-keepalive-10m) long='HTTPS 10 MiB, keep-alive' short='TLS 10 MiB' ;;
        full-handshakes) long='full TLS 1.2 handshakes' short='full hs' ;;
        resumed-handshakes) long='resumed TLS 1.2 handshakes' short='resumed hs' ;;
    esac
    if [[ ${2:-} == chart ]]; then echo "$short"; else echo "$long"; fi
}
server_version() {
    case $1 in
        trellis) echo "Trellis $TRELLIS_BIN ($(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'); mbedTLS 2.28)" ;;
        nginx) echo "nginx $("$NGINX_BIN" -v 2>&1 | sed -n 's/^nginx version: nginx\///p') ($("$NGINX_BIN" -V 2>&1 | sed -n 's/^built with //p'); ssl_protocols $NGINX_PROTOCOLS)" ;;
        h2o) echo "h2o $("$H2O_BIN" --version 2>&1 | sed -n 's/^h2o version //p') (num-threads $NWORKERS)" ;;
        lighttpd) echo "$("$LIGHTTPD_BIN" -v 2>&1 | sed -n '1s/ - .*//p' | sed 's/ (ssl)//') with mod_mbedtls $(dpkg-query -W -f='${Version}' 'libmbedtls[0-9]*' 2>/dev/null | head -c 20 || echo '?') (server.max-worker $LIGHTTPD_MAX_WORKER)" ;;
    esac
}
THROUGHPUT=()
for w in "${WORKLOADS[@]}"; do [[ $w == idle-* ]] || THROUGHPUT+=("$w"); done
OTHERS=()
for s in nginx h2o lighttpd; do has_server "$s" && OTHERS+=("$s"); done

REPORT=$TMP/report.md
{
    echo "# Trellis benchmark: $(printf '%s, ' "${SERVER_LIST[@]}" | sed 's/, $//')"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); run took $(( ELAPSED / 60 )) min $(( ELAPSED % 60 )) s"
    echo "- machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo 'cpu ?'), $(nproc) cores, $(uname -sr) $(uname -m); clients and servers share the cores"
    for s in "${SERVER_LIST[@]}"; do echo "- $s: $(server_version "$s"), $NWORKERS worker(s)"; done
    if (( ${#THROUGHPUT[@]} )); then
        echo "- clients: $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }') -t $THREADS -c $CONNECTIONS -d ${DURATION}s; $(openssl version | awk '{ print $1, $2 }') s_time, $HS_CLIENTS in parallel, ${HS_DURATION}s; $ROUNDS interleaved round(s)"
        echo "- TLS: every client offers TLS 1.2 only (OPENSSL_CONF with MaxProtocol = TLSv1.2, for wrk, s_time and the s_client check); negotiated:"
        for s in "${SERVER_LIST[@]}"; do echo "  $s: ${TLS_INFO[$s]:-?};"; done
        echo
        echo "Each cell: **median** (min–max over the rounds) · server CPU per request (per connection for conn/s rows), µs, median."
        echo "Ratios: Trellis's median throughput over the other server's (> 1: Trellis faster), and in brackets its CPU per request over theirs (< 1: Trellis cheaper)."
        echo
        hdr="| workload | unit |"; sep="| --- | --- |"
        for s in "${SERVER_LIST[@]}"; do hdr+=" $s |"; sep+=" ---: |"; done
        if has_server trellis; then
            for s in "${OTHERS[@]}"; do hdr+=" trellis/$s |"; sep+=" ---: |"; done
        fi
        echo "$hdr"; echo "$sep"
        for w in "${THROUGHPUT[@]}"; do
            row="| $(label "$w") | $(unit "$w") |"
            for s in "${SERVER_LIST[@]}"; do
                row+=" **$(fmt_n "$(med "${RESULTS[$s,$w]:-}")")** ($(range "${RESULTS[$s,$w]:-}")) · $(fmt_n "$(med "${CPU[$s,$w]:-}")") µs$(errnote "$s,$w")$(noresume "$s" "$w") |"
            done
            if has_server trellis; then
                for s in "${OTHERS[@]}"; do
                    if [[ -n $(noresume "$s" "$w") ]]; then row+=" - |"; continue; fi
                    row+=" $(ratio "$(med "${RESULTS[trellis,$w]}")" "$(med "${RESULTS[$s,$w]}")") ($(ratio "$(med "${CPU[trellis,$w]}")" "$(med "${CPU[$s,$w]}")")) |"
                done
            fi
            echo "$row"
        done
        echo
        echo "Notes:"
        echo "- hello: Trellis answers with its hello plugin and nginx with \`return 200\`; h2o and lighttpd have no such directive and serve a 13-byte file \`/hello\` (the same bytes), so for them it is a small-file workload."
        echo "- new connection per request: wrk with \`-H 'Connection: close'\`; the server closes after each response, wrk reconnects; the rate is connections/s and CPU is per connection."
        echo "- handshakes: \`openssl s_time -new\` (full: s_time never offers a session) and \`-reuse\` (resumed with the first connection's session), $HS_CLIENTS processes in parallel for ${HS_DURATION}s, counts summed over the measured wall-clock time; no HTTP request. wrk with \`Connection: close\` over https would measure resumed handshakes: wrk 4.1 offers its first session on every reconnect."
        for s in "${!NORESUME[@]}"; do
            echo "- $s resumed none of the \`s_time -reuse\` connections (it issued no usable session ID or ticket), so its \"resumed\" row counts full handshakes; no ratio is given and the chart leaves it out."
        done
        echo "- server CPU = utime + stime from /proc/PID/stat of every server process (nginx master + workers, lighttpd master + workers, h2o, trellis; all threads) after minus before the client run, divided by the requests (connections) the client counted; clock tick $CLK_TCK Hz."
    fi
    if want idle-scaling && (( ${#IDLE_CONDS[@]} )); then
        echo
        echo "## Idle scaling"
        echo
        echo "One wrk connection (\`wrk -t1 -c1 -d${IDLE_DURATION}s --latency /hello\`) on the measured server while \`idle_hold.py\` holds N idle keep-alive connections (each had one request) open to the holding server; ${IDLE_REPS} interleaved reps, medians (min–max) of wrk's p50 and p99 in µs. The control holds the connections on $IDLE_CONTROL while Trellis is measured: the holder process and the kernel cost something by themselves."
        echo
        echo "| measured | idle connections on | N | p50 µs | p99 µs | req/s | CPU µs/req |"
        echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        for c in "${IDLE_CONDS[@]}"; do
            IFS='|' read -r t h n <<< "$c"
            echo "| $t | $h | $(fmt_n "$n") | **$(fmt_n "$(med "${IDLE_P50[$c]}")")** ($(range "${IDLE_P50[$c]}")) | **$(fmt_n "$(med "${IDLE_P99[$c]}")")** ($(range "${IDLE_P99[$c]}")) | $(fmt_n "$(med "${IDLE_RPS[$c]}")") | $(fmt_n "$(med "${IDLE_CPU[$c]}")") |"
        done
        own="trellis|trellis|$IDLE_MAX"; ctl="trellis|$IDLE_CONTROL|$IDLE_MAX"; zero="trellis|trellis|0"
        if [[ -n ${IDLE_P99[$own]:-} && -n ${IDLE_P99[$ctl]:-} ]]; then
            r99=$(ratio "$(med "${IDLE_P99[$own]}")" "$(med "${IDLE_P99[$ctl]}")")
            v99=$(awk -v r="$r99" 'BEGIN { print (r != "-" && r <= 1.1) ? "PASS" : "FAIL" }')
            echo
            echo "- target p99: Trellis holding $(fmt_n "$IDLE_MAX") itself / control (them held on $IDLE_CONTROL) = **$r99** (target ≤ 1.10): **$v99**"
            if [[ -n ${IDLE_P50[$zero]:-} ]]; then
                r50=$(ratio "$(med "${IDLE_P50[$own]}")" "$(med "${IDLE_P50[$zero]}")")
                v50=$(awk -v r="$r50" 'BEGIN { print (r != "-" && r <= 1.1 && r >= 0.9) ? "PASS" : "FAIL" }')
                echo "- target p50 flat: Trellis p50 with $(fmt_n "$IDLE_MAX") / with 0 = **$r50** (flat = 0.90–1.10): **$v50**"
            fi
            (( IDLE_REPS >= 5 )) || echo "- only $IDLE_REPS rep(s): the targets ask for ≥ 5; not a verdict"
        fi
    fi
    if want idle-memory && has_server trellis; then
        echo
        echo "## Memory per idle connection"
        echo
        echo "\`bench/idle_memory.py $MEM_CONNS [--tls]\`: RSS growth / N after N keep-alive connections each made one request (\`GET /hello\`) and went quiet; one worker process per server, its own instances."
        echo
        echo "| transport | trellis | nginx | lighttpd | trellis/nginx | target |"
        echo "| --- | ---: | ---: | ---: | ---: | --- |"
        for mode in plain tls; do
            t=${MEM[$mode,trellis]:-}; n=${MEM[$mode,nginx]:-}; l=${MEM[$mode,lighttpd]:-}
            if [[ $mode == plain ]]; then
                tgt=$(awk -v t="${t:-}" 'BEGIN { if (t == "") print "-"; else printf "≤ 400 B: **%s**", (t <= 400 ? "PASS" : "FAIL") }')
            else
                tgt="report against nginx's 15.3 KB: trellis/15,300 = $(ratio "$t" 15300)"
            fi
            echo "| $mode | $(fmt_n "$t") B | $(fmt_n "$n") B | $(fmt_n "$l") B | $(ratio "$t" "$n") | $tgt |"
        done
    fi
    echo
    echo "## All runs"
    echo
    for w in "${THROUGHPUT[@]}"; do
        for s in "${SERVER_LIST[@]}"; do
            # shellcheck disable=SC2086
            echo "- $w / $s: $(printf '%s ' ${RESULTS[$s,$w]:-})$(unit "$w"); CPU µs: $(printf '%s ' ${CPU[$s,$w]:-})$(errnote "$s,$w")"
        done
    done
    for c in "${IDLE_CONDS[@]}"; do
        echo "- idle $c: p50 ${IDLE_P50[$c]# }; p99 ${IDLE_P99[$c]# }$(errnote "$c,idle-scaling")"
    done
    if (( TOTAL_ERRORS > 0 )); then
        echo
        echo "**WARNING: $TOTAL_ERRORS errors (non-2xx, socket errors, unexpected handshake kinds or closed idle connections); see above. A run with errors is not a valid result.**"
    fi
} > "$REPORT"

# ---------------------------------------------------------------- chart: throughput relative to nginx
mkdir -p "$RESULTS_DIR"
DAT=$RESULTS_DIR/$REPORT_NAME.dat
SVG=$RESULTS_DIR/$REPORT_NAME.svg
CHART=0
if has_server nginx && (( ${#THROUGHPUT[@]} )); then
    {
        echo "# throughput / nginx's, medians; $(date -u '+%Y-%m-%d %H:%M UTC')"
        printf '"workload"'; for s in "${SERVER_LIST[@]}"; do printf ' "%s"' "$s"; done; echo
        for w in "${THROUGHPUT[@]}"; do
            printf '"%s"' "$(label "$w" chart)"
            for s in "${SERVER_LIST[@]}"; do
                r=$(ratio "$(med "${RESULTS[$s,$w]}")" "$(med "${RESULTS[nginx,$w]}")")
                [[ $r == - || -n $(noresume "$s" "$w") ]] && r='?'
                printf ' %s' "$r"
            done
            echo
        done
    } > "$DAT"
    machine="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null), $(nproc) cores, $(date -u '+%Y-%m-%d')"
    ncol=$(( ${#SERVER_LIST[@]} + 1 ))
    GP=$RESULTS_DIR/$REPORT_NAME.gp     # kept: re-render with another terminal if wanted
    cat > "$GP" <<EOF
set terminal svg size 1200,560 dynamic enhanced font "sans,12" background rgb "white"
set output "$SVG"
set title "Throughput relative to nginx (nginx = 1.0, higher is better), medians of $ROUNDS round(s)\n{/*0.8 $machine; $NWORKERS workers each; wrk -c$CONNECTIONS}"
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border rgb "black"
set boxwidth 0.9
set key outside right top vertical
set ylabel "throughput / nginx"
set yrange [0:*]
set grid ytics lc rgb "#cccccc"
set xtics nomirror
set bmargin 4
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb "black"
set linetype 1 lc rgb "#2b6cb0"
set linetype 2 lc rgb "#a0aec0"
set linetype 3 lc rgb "#dd6b20"
set linetype 4 lc rgb "#38a169"
plot for [i=2:$ncol] "$DAT" using i:xtic(1) title columnheader(i)
EOF
    if gnuplot "$GP" > "$TMP/gnuplot.log" 2>&1; then CHART=1
    else cat "$TMP/gnuplot.log" >&2; warn "gnuplot failed; no chart"
    fi
else
    warn "no chart: it needs nginx in SERVERS and at least one throughput workload"
fi
if (( CHART )); then
    { echo; echo "Chart: \`bench/results/$REPORT_NAME.svg\` (data: \`$REPORT_NAME.dat\`)."; } >> "$REPORT"
fi

cp "$REPORT" "$RESULTS_DIR/$REPORT_NAME.md"
cat "$REPORT"
echo
info "report written to ${RESULTS_DIR#"$ROOT_DIR"/}/$REPORT_NAME.md$( (( CHART )) && echo ", chart ${SVG#"$ROOT_DIR"/}"); run took ${ELAPSED}s"
if [[ $PUBLISH == 1 ]]; then
    sed "s|bench/results/$REPORT_NAME.svg|bench/chart.svg|" "$REPORT" > "$BENCH_DIR/results.md"
    (( CHART )) && cp "$SVG" "$BENCH_DIR/chart.svg"
    info "published: bench/results.md$( (( CHART )) && echo ' and bench/chart.svg') (commit them)"
fi
(( TOTAL_ERRORS == 0 )) || warn "$TOTAL_ERRORS errors in total; see the report"
