#!/usr/bin/env bash
# HTTP/2 benchmark: Trellis vs nginx vs h2o with h2load, over TLS (ALPN h2) and
# cleartext h2 with prior knowledge (h2c). Same machine, same ECDSA P-256
# certificate, same www dir; runs interleaved (trellis, nginx, h2o, trellis,
# ...) and reported as medians. See the "HTTP/2" section of bench/README.md.
#
# Workloads (h2load -c CONNECTIONS -m STREAMS -t THREADS -D DURATION):
#   tls-hello   https://.../hello   ALPN h2     trellis: hello plugin; nginx: return 200; h2o: a 13-byte file
#   tls-1k      https://.../1k.bin  ALPN h2     1024 random bytes from the static plugin / nginx / h2o file.dir
#   h2c-hello   http://.../hello    prior knowledge (h2load speaks h2c directly on http:// URLs)
#   h2c-1k      http://.../1k.bin   prior knowledge
#
# Environment knobs:
#   DURATION=10      seconds per h2load run (-D)
#   CONNECTIONS=64   h2load clients (-c)
#   STREAMS=10       concurrent streams per connection (-m)
#   THREADS=1        h2load threads (-t)
#   ROUNDS=3         interleaved rounds per workload
#   ONLY=NAME        run only these workloads (comma or space separated)
#   SERVERS="trellis nginx h2o"  servers to benchmark (e.g. SERVERS="nginx h2o"
#                    to check the harness without a Trellis that speaks h2)
#   WORKERS=auto     workers for every server ("auto" = nproc): trellis
#                    "workers", nginx worker_processes, h2o num-threads
#   NGINX_PROTOCOLS=TLSv1.2  nginx ssl_protocols (Trellis offers TLS 1.2 only)
#   TRELLIS_BIN=build/trellis   PLUGIN_DIR=<dir of TRELLIS_BIN>/plugins
#   NGINX_BIN=nginx  H2O_BIN=h2o
#   TRELLIS_LOG_LEVEL=warn
#   KEEP_TMP=1       keep the temporary directory (configs, logs, raw output)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-trellis nginx h2o}
WORKERS=${WORKERS:-auto}
NGINX_PROTOCOLS=${NGINX_PROTOCOLS:-TLSv1.2}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT_DIR/build/trellis}
PLUGIN_DIR=${PLUGIN_DIR:-$(dirname "$TRELLIS_BIN")/plugins}
NGINX_BIN=${NGINX_BIN:-nginx}
H2O_BIN=${H2O_BIN:-h2o}
TRELLIS_LOG_LEVEL=${TRELLIS_LOG_LEVEL:-warn}
KEEP_TMP=${KEEP_TMP:-0}
ADDRESS=127.0.0.1
RESULTS_DIR=$BENCH_DIR/results

ALL_SERVERS=(trellis nginx h2o)
ALL_WORKLOADS=(tls-hello tls-1k h2c-hello h2c-1k)

# die/warn/info, ports, knob parsing, server start/stop, run_client, median, ratio, ...
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------- checks
check_uint_knobs DURATION CONNECTIONS STREAMS THREADS ROUNDS
parse_workers
parse_servers "${ALL_SERVERS[@]}"
parse_workloads "${ALL_WORKLOADS[@]}"
ensure_packages h2load nghttp2-client
ensure_packages curl curl
ensure_packages openssl openssl
ensure_packages ss iproute2
ensure_server_packages hello static

# ---------------------------------------------------------------- temp dir, content, certificate
bench_tmpdir trellis-h2-bench       # servers and clients are stopped on exit (lib.sh)
WWW=$TMP/www
make_www "$WWW"
printf 'Hello, World!' > "$WWW/hello"   # h2o's /hello (nginx and trellis answer it themselves)
chmod 644 "$WWW/hello"
make_cert

# ---------------------------------------------------------------- start servers
declare -A TLS_PORT=() H2C_PORT=()
for s in "${SERVER_LIST[@]}"; do
    TLS_PORT[$s]=$(free_port)
    H2C_PORT[$s]=$(free_port)
done

# ready NAME LOG: both ports answer over h2 (bounded poll, see wait_ready), and are ours.
ready() {
    local s=$1 log=$2
    wait_ready "$s" "${SERVER_PID[$s]}" "$log" "https://$ADDRESS:${TLS_PORT[$s]}/1k.bin" --http2 --cacert "$CERT"
    wait_ready "$s" "${SERVER_PID[$s]}" "$log" "http://$ADDRESS:${H2C_PORT[$s]}/1k.bin" --http2-prior-knowledge
    server_started "$s" "${TLS_PORT[$s]} ${H2C_PORT[$s]}"
}

common=(ADDRESS="$ADDRESS" WWW="$WWW" CERT="$CERT" KEY="$KEY")
for s in "${SERVER_LIST[@]}"; do
    ports="${TLS_PORT[$s]} ${H2C_PORT[$s]}"
    case $s in
        trellis)
            start_trellis "$BENCH_DIR/trellis-h2.json.in" "$ports" "${common[@]}" \
                WORKERS_JSON="$TRELLIS_WORKERS_JSON" PLUGIN_DIR="$PLUGIN_DIR" \
                TLS_PORT="${TLS_PORT[$s]}" H2C_PORT="${H2C_PORT[$s]}" LOG_LEVEL="$TRELLIS_LOG_LEVEL"
            ready trellis "$TMP/trellis.log" ;;
        nginx)
            start_nginx "$BENCH_DIR/nginx-h2.conf.in" "$ports" "${common[@]}" WORKERS="$NWORKERS" \
                TLS_PORT="${TLS_PORT[$s]}" H2C_PORT="${H2C_PORT[$s]}" PROTOCOLS="$NGINX_PROTOCOLS"
            ready nginx "$NGINX_ERROR_LOG" ;;
        h2o)
            start_h2o "$BENCH_DIR/h2o.conf.in" "$ports" "${common[@]}" WORKERS="$NWORKERS" \
                TLS_PORT="${TLS_PORT[$s]}" PLAIN_PORT="${H2C_PORT[$s]}"
            ready h2o "$TMP/h2o/error.log" ;;
    esac
done

# verify NAME: /hello and /1k.bin over h2 on both ports, byte for byte.
verify() {
    local s=$1 url proto ver
    for url in "https://$ADDRESS:${TLS_PORT[$s]}" "http://$ADDRESS:${H2C_PORT[$s]}"; do
        [[ $url == https* ]] && proto=(--http2 --cacert "$CERT") || proto=(--http2-prior-knowledge)
        ver=$(curl -fsS --max-time 5 "${proto[@]}" -o "$TMP/$s-hello" -w '%{http_version}' "$url/hello") \
            || die "$s: GET $url/hello failed"
        [[ $ver == 2 ]] || die "$s: $url/hello answered over HTTP/$ver, not HTTP/2"
        [[ $(cat "$TMP/$s-hello") == "Hello, World!" ]] || die "$s: $url/hello body is not 'Hello, World!'"
        curl -fsS --max-time 5 "${proto[@]}" -o "$TMP/$s-1k.bin" "$url/1k.bin" || die "$s: GET $url/1k.bin failed"
        cmp -s "$TMP/$s-1k.bin" "$WWW/1k.bin" || die "$s: $url/1k.bin differs from the file"
    done
    info "$s OK: h2 at https://$ADDRESS:${TLS_PORT[$s]} and h2c at http://$ADDRESS:${H2C_PORT[$s]}"
}
for s in "${SERVER_LIST[@]}"; do verify "$s"; done

# ---------------------------------------------------------------- benchmark
mkdir -p "$TMP/raw"
TOTAL_ERRORS=0
declare -A RESULTS=() ERRORS=() NEGOTIATED=()

# h2load_stats FILE: "REQ_PER_SEC ERRORS" (errors = failed + errored + timeout + non-2xx).
h2load_stats() {
    awk '/^finished in/ { rps = $4 }
         /^requests:/ { gsub(",", ""); err = $10 + $12 + $14 }
         /^status codes:/ { gsub(",", ""); non2xx = $5 + $7 + $9 }
         END { if (rps == "") exit 1; printf "%s %d\n", rps, err + non2xx }' "$1"
}

run_h2load() { # server workload round
    local s=$1 w=$2 round=$3 out url path stats rps errors neg
    out=$TMP/raw/$s-$w-$round.txt
    [[ $w == *-hello ]] && path=/hello || path=/1k.bin
    [[ $w == tls-* ]] && url="https://$ADDRESS:${TLS_PORT[$s]}$path" || url="http://$ADDRESS:${H2C_PORT[$s]}$path"
    run_client $(( DURATION + 30 )) "$out" h2load -c "$CONNECTIONS" -m "$STREAMS" -t "$THREADS" -D "$DURATION" "$url" \
        || { tail -n 30 "$out" >&2; die "h2load failed for $s/$w"; }
    stats=$(h2load_stats "$out") || { tail -n 30 "$out" >&2; die "could not parse h2load output for $s/$w"; }
    read -r rps errors <<< "$stats"
    if (( errors > 0 )); then
        warn "$s/$w round $round: $errors failed/errored/timed-out or non-2xx requests ($(grep -E '^(requests|status codes):' "$out" | tr '\n' ' '))"
        ERRORS[$s,$w]=$(( ${ERRORS[$s,$w]:-0} + errors ))
        TOTAL_ERRORS=$(( TOTAL_ERRORS + errors ))
    fi
    # what was negotiated: "TLS Protocol: ...", "Cipher: ...", "Server Temp Key: ...", "Application protocol: h2"
    neg=$(awk -F': ' '/^TLS Protocol:/ { p = $2 } /^Cipher:/ { c = $2 } /^Server Temp Key:/ { k = $2 }
                      /^Application protocol:/ { a = $2 }
                      END { if (p != "") printf "%s, %s, %s, ", p, c, k; printf "ALPN/protocol %s", a }' "$out")
    [[ $neg == *"protocol h2"* ]] || warn "$s/$w round $round: h2load did not speak h2 ($neg)"
    NEGOTIATED[$s,${w%%-*}]=$neg
    RESULTS[$s,$w]="${RESULTS[$s,$w]:-} $rps"
    printf '  %-10s %-8s round %d/%d: %12.2f req/s\n' "$w" "$s" "$round" "$ROUNDS" "$rps" >&2
}

info "h2load -c $CONNECTIONS -m $STREAMS -t $THREADS -D $DURATION; $ROUNDS round(s); workloads: ${WORKLOADS[*]}; servers: ${SERVER_LIST[*]}"
for w in "${WORKLOADS[@]}"; do
    for (( round = 1; round <= ROUNDS; round++ )); do
        for s in "${SERVER_LIST[@]}"; do run_h2load "$s" "$w" "$round"; done
    done
done

# ---------------------------------------------------------------- report
{
    echo "# HTTP/2: Trellis vs nginx vs h2o (h2load)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- machine: $(machine_info)"
    echo "- client: $(h2load --version 2>&1 | head -n 1), h2load -c $CONNECTIONS -m $STREAMS -t $THREADS -D $DURATION (https:// = TLS with ALPN h2; http:// = h2c with prior knowledge)"
    echo "- trellis: $(has_server trellis && echo "$TRELLIS_BIN (workers: $WORKERS; /hello = hello plugin)" || echo 'not run')"
    if has_server nginx; then
        echo "- nginx: $("$NGINX_BIN" -v 2>&1 | sed -n 's/^nginx version: //p') (worker_processes $NWORKERS, ssl_protocols $NGINX_PROTOCOLS; /hello = return 200)"
    else
        echo "- nginx: not run"
    fi
    if has_server h2o; then
        echo "- h2o: $("$H2O_BIN" --version 2>&1 | sed -n 's/^h2o version //p') (num-threads $NWORKERS; /hello = a 13-byte static file)"
    else
        echo "- h2o: not run"
    fi
    echo "- certificate: ECDSA P-256, self-signed, the same file for every server. Trellis (mbedTLS 2.28) and nginx (ssl_protocols $NGINX_PROTOCOLS) speak TLS 1.2; h2o 2.2 has no maximum version and h2load cannot cap it, so h2o negotiates TLS 1.3 (see below)"
    echo "- negotiated (as h2load reports it):"
    for s in "${SERVER_LIST[@]}"; do
        echo "  - $s: TLS: ${NEGOTIATED[$s,tls]:-not run}; cleartext: ${NEGOTIATED[$s,h2c]:-not run}"
    done
    echo "- $ROUNDS interleaved round(s), median req/s reported; client and servers share the same cores"
    echo
    echo "| workload | trellis | nginx | h2o | trellis/nginx | trellis/h2o |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for w in "${WORKLOADS[@]}"; do
        declare -A med=()
        for s in "${ALL_SERVERS[@]}"; do
            med[$s]=
            # shellcheck disable=SC2086
            has_server "$s" && med[$s]=$(median ${RESULTS[$s,$w]})
        done
        echo "| $w (req/s) | $(fmt_num "${med[trellis]}") | $(fmt_num "${med[nginx]}") | $(fmt_num "${med[h2o]}") | $(ratio "${med[trellis]}" "${med[nginx]}") | $(ratio "${med[trellis]}" "${med[h2o]}") |"
    done
    echo
    echo "All runs (in round order):"
    echo
    for w in "${WORKLOADS[@]}"; do
        for s in "${SERVER_LIST[@]}"; do
            # shellcheck disable=SC2086
            echo "- $w / $s: $(printf '%s ' ${RESULTS[$s,$w]})req/s$([[ -n ${ERRORS[$s,$w]:-} ]] && echo " (errors: ${ERRORS[$s,$w]})")"
        done
    done
    if (( TOTAL_ERRORS > 0 )); then
        echo
        echo "**WARNING: $TOTAL_ERRORS failed or non-2xx requests in total; a run with errors is not a valid result.**"
    fi
} > "$TMP/report.md"

mkdir -p "$RESULTS_DIR"
cp "$TMP/report.md" "$RESULTS_DIR/h2-latest.md"
cat "$TMP/report.md"
echo
info "report written to ${RESULTS_DIR#"$ROOT_DIR"/}/h2-latest.md"
(( TOTAL_ERRORS == 0 )) || warn "$TOTAL_ERRORS failed or non-2xx requests in total"
