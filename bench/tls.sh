#!/usr/bin/env bash
# HTTPS benchmark: Trellis vs nginx vs lighttpd (mod_mbedtls, the same mbedTLS
# 2.28 as Trellis). Now a thin wrapper around bench/run.sh, which measures the
# same workloads (and h2o, and everything else) in one run:
#
#   https-keepalive-1k/-100k/-10m  wrk over TLS 1.2 keep-alive connections (req/s)
#   full-handshakes      openssl s_time -new: full handshakes per second
#   resumed-handshakes   openssl s_time -reuse: resumed handshakes per second
#
# The knobs are run.sh's (DURATION, HS_DURATION, HS_CLIENTS, THREADS,
# CONNECTIONS, ROUNDS, ONLY, SERVERS, WORKERS, NGINX_PROTOCOLS, TRELLIS_BIN,
# PLUGIN_DIR, NGINX_BIN, LIGHTTPD_BIN, TRELLIS_LOG_LEVEL, KEEP_TMP) with
# tls.sh's old defaults below. The report goes to bench/results/tls-latest.md
# (and .svg when nginx is among the servers).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export SERVERS=${SERVERS:-trellis nginx lighttpd}
export ONLY=${ONLY:-https-keepalive-1k,https-keepalive-100k,https-keepalive-10m,full-handshakes,resumed-handshakes}
export DURATION=${DURATION:-10}
export HS_DURATION=${HS_DURATION:-10}
export WORKERS=${WORKERS:-auto}
export REPORT_NAME=${REPORT_NAME:-tls-latest}
export BENCH_PROG=tls.sh

exec "$BENCH_DIR/run.sh" "$@"
