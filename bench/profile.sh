#!/usr/bin/env bash
# Cost per request, the way issue 12 asks: Trellis vs nginx, one worker each,
# on loopback, for three workloads:
#   hello     GET /hello, keep-alive (one curl, URL globbing)
#   1k        GET /1k.bin (a 1 KiB file), keep-alive (one curl)
#   1k-close  GET /1k.bin with "Connection: close", a new TCP connection per
#             request (bench/profile_helper.py conns)
# 1. Instructions per request (valgrind --tool=callgrind): each server is run
#    twice per workload under callgrind, driven with CG_N1 and then CG_N2
#    requests; (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown.
#    The top functions by self cost come from the same difference, per request.
# 2. Syscalls per request (strace -c -f -p PID, all threads): each server runs
#    natively, strace attaches after start-up and warm-up, STRACE_N requests
#    are driven, strace is detached with SIGINT and its counts divided by N.
# Prints a Markdown report and writes bench/results/profile.md.
#
#   bench/profile.sh
#
# Trellis under valgrind: valgrind 3.19 (Debian 12) does not know the openat2
# syscall and fails it with ENOSYS, so the static plugin refuses to start
# ("needs openat2 (Linux 5.6 or later)"); it has no fallback, on purpose (no
# race-free way to stay beneath root without it). For the callgrind runs only,
# Trellis gets LD_PRELOAD=bench/openat2_shim.c (compiled into the temp dir),
# which turns syscall(SYS_openat2, ...) into openat() and passes every other
# syscall() through. The static plugin calls openat2 only on an open-file-cache
# miss or revalidation (once per file per second), so the per-request path
# callgrind counts is the plugin's real one and both servers serve the same
# 1 KiB file. The strace runs are native (no shim). The alternatives were
# worse: measuring only hello, or comparing a Trellis file against an nginx
# `return 200` with a 1 KiB body.
#
# Environment knobs (defaults in brackets):
#   CG_N1 [2000]  CG_N2 [6000]  requests of the two callgrind runs per workload
#   STRACE_N [3000]     requests per strace run
#   TOP [8]             functions per top-functions table
#   ONLY [all]          workloads (hello 1k 1k-close), comma or space separated
#   SERVERS ["trellis nginx"]   any subset
#   PHASES ["callgrind strace"] either or both
#   PORT_MIN [19000]  PORT_MAX [19999]  ports the servers may listen on
#   STARTUP_TIMEOUT [120]  seconds a server (under valgrind) may take to answer
#   CLIENT_TIMEOUT [900]   seconds one client run may take
#   TRELLIS_BIN [build/trellis]  PLUGIN_DIR [<dir of TRELLIS_BIN>/plugins]
#   NGINX_BIN [nginx]  TRELLIS_LOG_LEVEL [warn]  CC [cc]
#   KEEP_TMP [0]        1 keeps the temp dir (configs, logs, callgrind.out files)
#   REPORT_NAME [profile]  results/REPORT_NAME.md
# Needs valgrind, strace, nginx (nginx-light), curl, python3, a C compiler;
# missing ones are installed with apt-get when running as root.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

for arg in "$@"; do
    case $arg in
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "profile.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

CG_N1=${CG_N1:-2000}
CG_N2=${CG_N2:-6000}
STRACE_N=${STRACE_N:-3000}
TOP=${TOP:-8}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-trellis nginx}
PHASES=${PHASES:-callgrind strace}
PORT_MIN=${PORT_MIN:-19000}
PORT_MAX=${PORT_MAX:-19999}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-120}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-900}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT_DIR/build/trellis}
PLUGIN_DIR=${PLUGIN_DIR:-$(dirname "$TRELLIS_BIN")/plugins}
NGINX_BIN=${NGINX_BIN:-nginx}
TRELLIS_LOG_LEVEL=${TRELLIS_LOG_LEVEL:-warn}
CC=${CC:-cc}
KEEP_TMP=${KEEP_TMP:-0}
REPORT_NAME=${REPORT_NAME:-profile}
ADDRESS=127.0.0.1
RESULTS_DIR=$BENCH_DIR/results
HELPER=$BENCH_DIR/profile_helper.py

ALL_WORKLOADS=(hello 1k 1k-close)
declare -A WL_PATH=([hello]=/hello [1k]=/1k.bin [1k-close]=/1k.bin)
declare -A WL_DESC=([hello]='GET /hello, keep-alive' [1k]='GET /1k.bin, keep-alive'
                    [1k-close]='GET /1k.bin, new connection per request')

# die/warn/info, subst, launch_server, stop_pid, run_client, ratio, bench_tmpdir, ...
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

START_NS=$(date +%s%N)

# ---------------------------------------------------------------- checks
check_uint_knobs CG_N1 CG_N2 STRACE_N TOP PORT_MIN PORT_MAX STARTUP_TIMEOUT CLIENT_TIMEOUT
(( CG_N2 > CG_N1 )) || die "CG_N2 ($CG_N2) must be larger than CG_N1 ($CG_N1)"
(( PORT_MAX > PORT_MIN )) || die "PORT_MAX must be above PORT_MIN"
parse_servers trellis nginx
parse_workloads "${ALL_WORKLOADS[@]}"
read -r -a PHASE_LIST <<< "$PHASES"
(( ${#PHASE_LIST[@]} > 0 )) || die "PHASES is empty"
for p in "${PHASE_LIST[@]}"; do
    [[ $p == callgrind || $p == strace ]] || die "unknown phase '$p' in PHASES (callgrind strace)"
done
want_phase() { [[ " $PHASES " == *" $1 "* ]]; }

ensure_packages curl curl
ensure_packages python3 python3
ensure_packages ss iproute2
want_phase callgrind && { ensure_packages valgrind valgrind; ensure_packages callgrind_annotate valgrind; }
want_phase strace && ensure_packages strace strace
if has_server trellis && want_phase callgrind; then ensure_packages "$CC" gcc libc6-dev; fi
ensure_server_packages hello static

# ---------------------------------------------------------------- temp dir, content
bench_tmpdir trellis-profile
WWW=$TMP/www
mkdir -p "$WWW" "$TMP/raw" "$TMP/cg"
printf 'Hello, World!' > "$WWW/hello"
head -c 1024 /dev/urandom > "$WWW/1k.bin"
chmod 644 "$WWW"/*
chmod 755 "$WWW"

if has_server trellis && want_phase callgrind; then
    SHIM=$TMP/openat2_shim.so
    "$CC" -O2 -shared -fPIC -o "$SHIM" "$BENCH_DIR/openat2_shim.c" -ldl > "$TMP/shim-cc.log" 2>&1 \
        || { cat "$TMP/shim-cc.log" >&2; die "could not compile bench/openat2_shim.c"; }
fi

# ---------------------------------------------------------------- servers
# profile_port: a free port in PORT_MIN..PORT_MAX (fresh for every start: the
# 1k-close runs leave the server's side of each connection in TIME_WAIT).
profile_port() {
    local p i
    for (( i = 0; i < 200; i++ )); do
        p=$(( PORT_MIN + RANDOM % (PORT_MAX - PORT_MIN + 1) ))
        port_in_use "$p" && continue
        [[ -z $(ss -H -ltn "sport = :$p" 2>/dev/null || true) ]] || continue
        echo "$p"
        return 0
    done
    die "no free port in $PORT_MIN-$PORT_MAX"
}

# start_profiled NAME MODE [CALLGRIND_OUT]: start server NAME on a fresh port
# (PORT), natively (MODE native) or under callgrind (MODE callgrind), then
# wait until it answers and check both URLs byte for byte.
start_profiled() {
    local name=$1 mode=$2 out=${3:-} tag pre=()
    PORT=$(profile_port)
    tag=$name-$mode-$PORT
    if [[ $mode == callgrind ]]; then
        pre=(valgrind --tool=callgrind "--callgrind-out-file=$out" "--log-file=$TMP/raw/$tag.valgrind.log")
    fi
    case $name in
        trellis)
            subst "$BENCH_DIR/trellis-profile.json.in" "$TMP/$tag.json" \
                PLUGIN_DIR="$PLUGIN_DIR" ADDRESS="$ADDRESS" PORT="$PORT" WWW="$WWW" LOG_LEVEL="$TRELLIS_LOG_LEVEL"
            if [[ $mode == callgrind ]]; then
                launch_server trellis "$TMP/raw/$tag.log" "$PORT" -- \
                    env LD_PRELOAD="$SHIM" "${pre[@]}" "$TRELLIS_BIN" --config "$TMP/$tag.json"
            else
                launch_server trellis "$TMP/raw/$tag.log" "$PORT" -- "$TRELLIS_BIN" --config "$TMP/$tag.json"
            fi
            ;;
        nginx)
            local ngx=$TMP/$tag
            mkdir -p "$ngx/conf" "$ngx/logs" "$ngx/tmp"
            subst "$BENCH_DIR/nginx-profile.conf.in" "$ngx/conf/nginx.conf" \
                PREFIX="$ngx" ADDRESS="$ADDRESS" PORT="$PORT" WWW="$WWW"
            "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e "$ngx/logs/error.log" -t \
                > "$TMP/raw/$tag.test.log" 2>&1 \
                || { cat "$TMP/raw/$tag.test.log" >&2; die "nginx -t rejected the config"; }
            launch_server nginx "$TMP/raw/$tag.log" "$PORT" -- \
                "${pre[@]}" "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e "$ngx/logs/error.log"
            ;;
    esac
    wait_up "$name" "http://$ADDRESS:$PORT/hello"
    # `env` execs valgrind/trellis, so the pid we hold is the server's own.
    server_started "$name" "$PORT"
    [[ $(curl -sS --max-time 60 "http://$ADDRESS:$PORT/hello") == 'Hello, World!' ]] \
        || die "$name: /hello did not answer 'Hello, World!'"
    curl -sS --max-time 60 "http://$ADDRESS:$PORT/1k.bin" | cmp -s - "$WWW/1k.bin" \
        || die "$name: /1k.bin is not the file"
}

# wait_up NAME URL: bounded poll (STARTUP_TIMEOUT) until URL answers. One
# connection at a time with a long --max-time: a connect that lands in the
# backlog before the server's loop runs is answered, never abandoned, so
# every run of a server sees the same start-up requests.
wait_up() {
    local name=$1 url=$2 pid=${SERVER_PID[$1]} deadline=$(( SECONDS + STARTUP_TIMEOUT ))
    while (( SECONDS < deadline )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log (${SERVER_LOG[$name]}) ----" >&2; cat "${SERVER_LOG[$name]}" >&2 || true
            die "$name exited during startup"
        fi
        curl -fsS -o /dev/null --max-time "$STARTUP_TIMEOUT" "$url" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "---- $name log (${SERVER_LOG[$name]}) ----" >&2; cat "${SERVER_LOG[$name]}" >&2 || true
    die "$name did not answer $url within ${STARTUP_TIMEOUT}s"
}

# stop_profiled NAME: SIGTERM, then wait (up to 60 s: valgrind writes its
# callgrind.out at exit) before SIGKILL.
stop_profiled() {
    local name=$1 pid=${SERVER_PID[$1]:-}
    [[ -n $pid ]] || return 0
    check_alive "$name"
    stop_pid "$pid" "$name" TERM 60
    unset "SERVER_PID[$name]"
}

# drive WORKLOAD N OUT: N requests of WORKLOAD against PORT; fails unless all
# N were answered 200 (and, keep-alive, over one connection).
drive() {
    local w=$1 n=$2 out=$3 url ok conns
    url="http://$ADDRESS:$PORT${WL_PATH[$w]}"
    case $w in
        1k-close)
            run_client "$CLIENT_TIMEOUT" "$out" python3 "$HELPER" conns "$ADDRESS" "$PORT" "${WL_PATH[$w]}" "$n" \
                || { cat "$out" >&2; die "$w: the client failed"; }
            ;;
        *)
            # -o /dev/null applies to every URL of the glob; -w prints one line per request.
            run_client "$CLIENT_TIMEOUT" "$out" curl -sS --max-time "$CLIENT_TIMEOUT" -o /dev/null \
                -w '%{http_code} %{num_connects}\n' "$url?[1-$n]" \
                || { tail -n 5 "$out" >&2; die "$w: curl failed"; }
            ok=$(awk '$1 == 200 { n++ } END { print n + 0 }' "$out")
            conns=$(awk '{ c += $2 } END { print c + 0 }' "$out")
            (( ok == n )) || die "$w: $ok of $n requests answered 200 (see $out)"
            (( conns == 1 )) || warn "$w: curl opened $conns connections for $n keep-alive requests"
            ;;
    esac
}

# ---------------------------------------------------------------- callgrind
declare -A IPR=() FIXED=() TOPROWS=()
cg_total() { # CALLGRIND_OUT -> total Ir
    awk '/^summary:/ { print $2; found = 1; exit } END { if (!found) exit 1 }' "$1" \
        || die "no summary line in $1 (did valgrind exit cleanly?)"
}
run_callgrind() { # SERVER WORKLOAD
    local s=$1 w=$2 n out t1 t2 vglog
    for n in "$CG_N1" "$CG_N2"; do
        out=$TMP/cg/$s-$w-$n.out
        info "callgrind: $s $w, $n requests"
        start_profiled "$s" callgrind "$out"
        vglog=$TMP/raw/$s-callgrind-$PORT.valgrind.log
        drive "$w" "$n" "$TMP/raw/cg-$s-$w-$n.client"
        stop_profiled "$s"
        [[ -s $out ]] || die "$s: valgrind wrote no $out (log: $vglog)"
        if grep -qi 'unhandled' "$vglog"; then
            grep -i 'unhandled' "$vglog" | sort -u | head -n 5 >&2
            warn "$s ($w): valgrind met syscalls it does not know (above): the counts may miss work"
        fi
    done
    t1=$(cg_total "$TMP/cg/$s-$w-$CG_N1.out")
    t2=$(cg_total "$TMP/cg/$s-$w-$CG_N2.out")
    IPR[$s,$w]=$(awk -v a="$t1" -v b="$t2" -v n1="$CG_N1" -v n2="$CG_N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    FIXED[$s,$w]=$(awk -v a="$t1" -v p="${IPR[$s,$w]}" -v n1="$CG_N1" 'BEGIN { printf "%.1f", (a - p * n1) / 1e6 }')
    TOPROWS[$s,$w]=$(python3 "$HELPER" top "$TMP/cg/$s-$w-$CG_N1.out" "$TMP/cg/$s-$w-$CG_N2.out" "$CG_N1" "$CG_N2" "$TOP") \
        || die "callgrind_annotate failed on $s $w"
    info "callgrind: $s $w: ${IPR[$s,$w]} instructions/request"
}

# ---------------------------------------------------------------- strace
# Syscall groups of the report, in order: "label|syscall syscall ...".
SC_GROUPS=(
    'accept / accept4|accept accept4'
    'setsockopt|setsockopt'
    'getsockopt / getsockname / getpeername|getsockopt getsockname getpeername'
    'epoll_ctl|epoll_ctl'
    'epoll_wait / epoll_pwait|epoll_wait epoll_pwait epoll_pwait2'
    'read / readv / recvfrom / recvmsg|read readv recvfrom recvmsg'
    'write / writev / sendmsg / sendto|write writev sendmsg sendto'
    'sendfile|sendfile sendfile64'
    'close|close'
    'shutdown|shutdown'
    'ioctl|ioctl'
    'timerfd / clock / nanosleep|timerfd_create timerfd_settime timerfd_gettime clock_gettime clock_nanosleep gettimeofday nanosleep'
    'pread64|pread64'
    'openat / openat2|open openat openat2'
    'fstat / newfstatat / statx|fstat newfstatat statx stat lstat'
    'futex|futex'
)
declare -A SC=() SC_OTHER=() SC_ERRORS=() NTHREADS=()
run_strace() { # SERVER WORKLOAD
    local s=$1 w=$2 pid tasks sum spid i g label names attached
    pid=${SERVER_PID[$s]}
    sum=$TMP/raw/strace-$s-$w.txt
    tasks=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l)
    NTHREADS[$s]=$tasks
    info "strace: $s $w, $STRACE_N requests ($tasks thread(s))"
    strace -c -f -o "$sum" -p "$pid" 2> "$TMP/raw/strace-$s-$w.err" &
    spid=$!
    CLIENT_PIDS+=("$spid")
    # -p PID -f attaches every thread of PID: "Process N attached with T threads"
    # (strace 6), or one "Process N attached" per thread.
    for (( i = 0; i < 100; i++ )); do
        attached=$(awk '/attached with [0-9]+ threads/ { print $(NF - 1); exit }
                        /attached/ { n++ } END { if (n) print n }' "$TMP/raw/strace-$s-$w.err" | head -n 1)
        attached=${attached:-0}
        (( attached >= tasks )) && break
        kill -0 "$spid" 2>/dev/null || { cat "$TMP/raw/strace-$s-$w.err" >&2; die "strace exited"; }
        sleep 0.1
    done
    (( attached >= tasks )) || die "strace attached $attached of $tasks threads of $s"
    drive "$w" "$STRACE_N" "$TMP/raw/strace-$s-$w.client"
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    forget_client "$spid"
    check_alive "$s"
    [[ -s $sum ]] || die "strace wrote no summary ($sum)"
    # "% time seconds usecs/call calls [errors] syscall": calls = $4, name = $NF.
    for g in "${SC_GROUPS[@]}"; do
        label=${g%%|*}
        names=" ${g#*|} "
        SC[$s,$w,$label]=$(awk -v names="$names" -v n="$STRACE_N" '
            $1 ~ /^[0-9.]+$/ && $NF != "total" && index(names, " " $NF " ") { c += $4 }
            END { printf "%.2f", c / n }' "$sum")
    done
    local all
    all=" "
    for g in "${SC_GROUPS[@]}"; do all+="${g#*|} "; done
    SC[$s,$w,other]=$(awk -v names="$all" -v n="$STRACE_N" '
        $1 ~ /^[0-9.]+$/ && $NF != "total" && !index(names, " " $NF " ") { c += $4 }
        END { printf "%.2f", c / n }' "$sum")
    SC_OTHER[$s,$w]=$(awk -v names="$all" -v n="$STRACE_N" '
        $1 ~ /^[0-9.]+$/ && $NF != "total" && !index(names, " " $NF " ") { printf "%s%s %.2f", sep, $NF, $4 / n; sep = ", " }' "$sum")
    SC_ERRORS[$s,$w]=$(awk -v n="$STRACE_N" '
        $1 ~ /^[0-9.]+$/ && $NF != "total" && NF == 6 && $5 > 0 { printf "%s%s %d (%.2f/request)", sep, $NF, $5, $5 / n; sep = ", " }' "$sum")
    SC[$s,$w,total]=$(awk -v n="$STRACE_N" '$NF == "total" { printf "%.2f", $4 / n }' "$sum")
    [[ -n ${SC[$s,$w,total]} ]] || die "no total line in $sum"
}

# ---------------------------------------------------------------- run
if want_phase strace; then
    for s in "${SERVER_LIST[@]}"; do
        start_profiled "$s" native
        for w in "${WORKLOADS[@]}"; do
            # warm-up outside the count: caches, the file cache, lazy allocations
            drive "$w" 20 "$TMP/raw/warmup-$s-$w.client"
            run_strace "$s" "$w"
        done
        stop_profiled "$s"
    done
fi
if want_phase callgrind; then
    for w in "${WORKLOADS[@]}"; do
        for s in "${SERVER_LIST[@]}"; do run_callgrind "$s" "$w"; done
    done
fi

# ---------------------------------------------------------------- report
ELAPSED=$(( ($(date +%s%N) - START_NS) / 1000000000 ))
commas() { printf '%s' "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }
both() { has_server trellis && has_server nginx; }
REPORT=$TMP/report.md
{
    echo "# Cost per request: Trellis vs nginx (callgrind, strace)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), run time $(( ELAPSED / 60 )) min $(( ELAPSED % 60 )) s, $(machine_info)."
    has_server trellis && echo "Trellis $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?') ($TRELLIS_BIN), 1 worker, access log off."
    has_server nginx && echo "$("$NGINX_BIN" -v 2>&1 | sed 's|^nginx version: ||'), \`master_process off; daemon off; worker_processes 1;\`, sendfile, open_file_cache, access_log off."
    echo "Clients: keep-alive = one \`curl\` with URL globbing (one connection); new connection = \`bench/profile_helper.py conns\`."
    echo
    echo "| workload | request |"
    echo "| --- | --- |"
    for w in "${WORKLOADS[@]}"; do echo "| \`$w\` | ${WL_DESC[$w]} |"; done
    if want_phase callgrind; then
        echo
        echo "## Instructions per request (callgrind)"
        echo
        echo "$(valgrind --version 2>/dev/null); (Ir($CG_N2 requests) − Ir($CG_N1 requests)) / $(( CG_N2 - CG_N1 )), all threads."
        echo "\"fixed\" = start-up and shutdown (the intercept), millions of Ir."
        echo "Trellis runs with \`bench/openat2_shim.c\` preloaded (valgrind 3.19 lacks openat2; see bench/README.md)."
        echo
        hdr="| workload |" sep="| --- |"
        for s in "${SERVER_LIST[@]}"; do hdr+=" $s Ir/req | $s fixed (M) |"; sep+=" ---: | ---: |"; done
        both && { hdr+=" trellis/nginx |"; sep+=" ---: |"; }
        echo "$hdr"; echo "$sep"
        for w in "${WORKLOADS[@]}"; do
            row="| \`$w\` |"
            for s in "${SERVER_LIST[@]}"; do row+=" $(commas "${IPR[$s,$w]}") | ${FIXED[$s,$w]} |"; done
            both && row+=" $(ratio "${IPR[trellis,$w]}" "${IPR[nginx,$w]}") |"
            echo "$row"
        done
    fi
    if want_phase strace; then
        echo
        echo "## Syscalls per request (strace -c -f)"
        echo
        echo "$(strace -V 2>/dev/null | head -n 1); attached to the running server (every thread) after a 20-request warm-up, $STRACE_N requests, calls / requests (failed calls such as EAGAIN included)."
        threads=""
        for s in "${SERVER_LIST[@]}"; do threads+="${threads:+, }$s ${NTHREADS[$s]:-?}"; done
        echo "Threads traced: $threads."
        for w in "${WORKLOADS[@]}"; do
            echo
            echo "### \`$w\`"
            echo
            hdr="| syscall |" sep="| --- |"
            for s in "${SERVER_LIST[@]}"; do hdr+=" $s |"; sep+=" ---: |"; done
            echo "$hdr"; echo "$sep"
            labels=()
            for g in "${SC_GROUPS[@]}"; do labels+=("${g%%|*}"); done
            for label in "${labels[@]}" other total; do
                row="| $label |"
                [[ $label == total ]] && row="| **total** |"
                for s in "${SERVER_LIST[@]}"; do
                    if [[ $label == total ]]; then row+=" **${SC[$s,$w,$label]}** |"; else row+=" ${SC[$s,$w,$label]} |"; fi
                done
                echo "$row"
            done
            for s in "${SERVER_LIST[@]}"; do
                [[ -z ${SC_OTHER[$s,$w]} ]] || echo "
other, $s: ${SC_OTHER[$s,$w]}"
                [[ -z ${SC_ERRORS[$s,$w]} ]] || echo "
failed (included above), $s: ${SC_ERRORS[$s,$w]}"
            done
        done
    fi
    if want_phase callgrind; then
        echo
        echo "## Top functions by self cost (Ir per request, from the same difference)"
        for w in "${WORKLOADS[@]}"; do
            for s in "${SERVER_LIST[@]}"; do
                echo
                echo "### $s, \`$w\` ($(commas "${IPR[$s,$w]}") Ir/request)"
                echo
                echo "| function | object | Ir/request | share |"
                echo "| --- | --- | ---: | ---: |"
                echo "${TOPROWS[$s,$w]}"
            done
        done
    fi
} > "$REPORT"

mkdir -p "$RESULTS_DIR"
cp "$REPORT" "$RESULTS_DIR/$REPORT_NAME.md"
cat "$REPORT"
info "report written to $RESULTS_DIR/$REPORT_NAME.md (run time ${ELAPSED}s)"
