# Shared bash helpers for the bench/ harnesses (run.sh, h2.sh; tls.sh is a
# thin wrapper around run.sh). Source it:
#     . "$BENCH_DIR/lib.sh"
# Callers set ADDRESS (the loopback address servers listen on) before using
# free_port, and TMP (bench_tmpdir) before using anything that writes there.
# Messages are prefixed with the name of the calling script.
# shellcheck shell=bash
# Variables set here (NWORKERS, NGINX_ERROR_LOG, ...) are used by the callers;
# knobs (WORKERS, SERVERS, ...) are set by them:
# shellcheck disable=SC2034,SC2153

BENCH_PROG=${BENCH_PROG:-$(basename "$0")}

die()  { echo "$BENCH_PROG: error: $*" >&2; exit 1; }
warn() { echo "$BENCH_PROG: WARNING: $*" >&2; }
info() { echo "$BENCH_PROG: $*" >&2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# stop_pid PID NAME [SIGNAL] [SECONDS]: signal PID (default TERM), wait up to SECONDS (default 5),
# then KILL.
stop_pid() {
    local pid=$1 name=$2 sig=${3:-TERM} seconds=${4:-5} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for (( i = 0; i < seconds * 10; i++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop within $seconds s of SIG$sig; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# pid_alive PID: true while PID exists and is not a zombie (an orphaned worker
# whose parent already exited stays a zombie until init reaps it).
pid_alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# wait_gone NAME PID...: bounded wait (5 s) for processes that are not our
# children (e.g. worker processes), then SIGKILL the survivors.
wait_gone() {
    local name=$1 pid i left
    shift
    for (( i = 0; i < 50; i++ )); do
        left=0
        for pid in "$@"; do pid_alive "$pid" && left=1; done
        (( left )) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if pid_alive "$pid"; then
            warn "$name process $pid still running; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

USED_PORTS=()
port_in_use() { (exec 3<>"/dev/tcp/$ADDRESS/$1") 2>/dev/null; }
# free_port: a port nothing listens on, below the kernel's ephemeral range when
# possible: client sockets (wrk, s_time, earlier runs) in TIME_WAIT on an
# ephemeral port make bind() fail there although nothing listens.
free_port() {
    local p i u taken lo=20000 span=40000 eph
    eph=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
    if is_uint "${eph:-}" && (( eph > 11024 )); then
        lo=10000; span=$(( eph - lo ))
    fi
    for (( i = 0; i < 200; i++ )); do
        p=$(( lo + (RANDOM * 32768 + RANDOM) % span ))
        taken=0
        for u in "${USED_PORTS[@]:-}"; do [[ $u == "$p" ]] && taken=1; done
        (( taken )) && continue
        port_in_use "$p" && continue
        USED_PORTS+=("$p")
        echo "$p"
        return 0
    done
    die "could not find a free port"
}

# subst TEMPLATE OUT KEY=VALUE...: replace every @KEY@ in TEMPLATE; fails if a
# placeholder outside a comment is left over.
subst() {
    local in=$1 out=$2 kv key val script=
    shift 2
    for kv in "$@"; do
        key=${kv%%=*}
        val=${kv#*=}
        val=${val//\\/\\\\}; val=${val//|/\\|}; val=${val//&/\\&}
        script+="s|@${key}@|${val}|g;"
    done
    sed -e "$script" "$in" > "$out"
    local left
    left=$(grep -v '^[[:space:]]*#' "$out" | grep -o '@[A-Z_]\+@' | sort -u | tr '\n' ' ' || true)
    [[ -z $left ]] || die "unsubstituted placeholder(s) in $out: $left"
}

# wait_ready NAME PID LOG URL [CURL_ARGS...]: bounded poll (~15 s) until URL
# answers (or the process dies); CURL_ARGS e.g. --cacert FILE for https.
# A server that exits because its port is taken is reported as such (loudly).
wait_ready() {
    local name=$1 pid=$2 log=$3 url=$4 i port
    shift 4
    for (( i = 0; i < 150; i++ )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log ($log) ----" >&2; cat "$log" >&2 || true
            if grep -qi 'in use' "$log" 2>/dev/null; then
                port=${url#*://*:}; port=${port%%/*}
                die "$name could not start: a port is busy (address already in use; $url).$(port_holders_msg "$port")"
            fi
            die "$name exited during startup"
        fi
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "---- $name log ($log) ----" >&2; cat "$log" >&2 || true
    die "$name did not become ready at $url"
}

# wrk_stats FILE: prints "REQ_PER_SEC ERRORS" from wrk output (errors = non-2xx/3xx
# responses + socket errors); fails if Requests/sec is missing.
wrk_stats() {
    local out=$1 rps non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $rps ]] || return 1
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    # "Socket errors: connect 0, read 0, write 0, timeout 0"
    sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    echo "$rps $(( ${non2xx:-0} + ${sockerr:-0} ))"
}

median() { # values... -> median (mean of the two middle values for even counts)
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print ""; exit }
              if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2];
              else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fmt_num() { if [[ -n $1 ]]; then printf '%.0f' "$1"; else printf -- '-'; fi; }

# ratio A B -> A/B with two decimals, or "-" when either is missing or B is 0.
ratio() {
    if [[ -n $1 && -n $2 ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
    else
        printf -- '-'
    fi
}

machine_info() {
    echo "$(uname -srm), nproc $(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo 'cpu ?')"
}

# check_release_build TRELLIS_BIN: warn when the CMake cache next to it is not a Release build.
check_release_build() {
    local cache btype
    cache=$(dirname "$1")/CMakeCache.txt
    [[ -f $cache ]] || return 0
    btype=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
    [[ $btype == Release ]] || warn "trellis build type is '${btype:-<empty>}', not Release: numbers will not be representative"
}

# ensure_packages WHAT PACKAGE...: WHAT is a command name or an absolute file
# path; if it is missing, apt-get install PACKAGEs (needs root and apt-get).
have() { if [[ $1 == /* ]]; then [[ -e $1 ]]; else command -v "$1" >/dev/null; fi; }
ensure_packages() {
    local what=$1
    shift
    have "$what" && return 0
    { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; } \
        || die "$what not found; install it: apt-get install -y $*"
    info "$what not found: apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2 || die "apt-get install -y $* failed"
    have "$what" || die "$what still not found after installing $*"
}

# make_www DIR: what every server serves: 1 KiB, 100 KiB and 10 MiB files and an index, readable by the
# unprivileged workers nginx and lighttpd switch to when started as root.
make_www() {
    local www=$1
    mkdir -p "$www"
    head -c 1024 /dev/urandom > "$www/1k.bin"
    head -c 102400 /dev/urandom > "$www/100k.bin"
    head -c 10485760 /dev/urandom > "$www/10m.bin"
    printf '%s\n' '<!doctype html>' \
        '<html><head><title>trellis bench</title></head><body><p>bench</p></body></html>' > "$www/index.html"
    chmod 644 "$www"/*
    chmod 755 "$www"
}

# ---------------------------------------------------------------- ports: loud when busy
# listener_pids PORT: pids of the processes listening on ADDRESS:PORT or *:PORT
# (from ss -ltnp; empty if ss shows no owner, e.g. without privileges).
listener_pids() {
    ss -H -ltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}
port_holders_msg() { # PORT -> " Listening on it: <ss line>..." or ""
    local lines
    lines=$(ss -H -ltnp "sport = :$1" 2>/dev/null || true)
    [[ -n $lines ]] && printf ' Listening on port %s (ss -ltnp):\n%s' "$1" "$lines"
}
# assert_port_free PORT WHAT: die (exit 1) when something listens on or answers at PORT:
# a leftover server would otherwise be measured instead of ours.
assert_port_free() {
    if port_in_use "$1" || [[ -n $(ss -H -ltn "sport = :$1" 2>/dev/null || true) ]]; then
        die "port $1 (for $2) is busy: something already listens there; refusing to start, or we would measure it.$(port_holders_msg "$1")"
    fi
}
# assert_port_owned PORT NAME PID...: every listener on PORT must be one of PIDs
# (SO_REUSEPORT lets a leftover Trellis share a port with a new one silently).
assert_port_owned() {
    local port=$1 name=$2 p ours
    shift 2
    ours=" $* "
    for p in $(listener_pids "$port"); do
        [[ $ours == *" $p "* ]] \
            || die "port $port: process $p ($(cat "/proc/$p/comm" 2>/dev/null || echo '?')) listens there too, not $name; a leftover server would share the load.$(port_holders_msg "$port")"
    done
}

# ---------------------------------------------------------------- knobs
# check_uint_knobs NAME...: each variable must hold a positive integer.
check_uint_knobs() {
    local v
    for v in "$@"; do
        { is_uint "${!v}" && (( ${!v} > 0 )); } || die "$v must be a positive integer (got '${!v}')"
    done
}
# parse_workers: WORKERS (auto | N) -> NWORKERS, TRELLIS_WORKERS_JSON, LIGHTTPD_MAX_WORKER.
parse_workers() {
    if [[ $WORKERS == auto ]]; then
        NWORKERS=$(nproc)
        TRELLIS_WORKERS_JSON='"auto"'   # = std::thread::hardware_concurrency() = nproc
    else
        { is_uint "$WORKERS" && (( WORKERS > 0 )); } || die "WORKERS must be 'auto' or a positive integer"
        NWORKERS=$WORKERS
        TRELLIS_WORKERS_JSON=$WORKERS
    fi
    # lighttpd: server.max-worker = N forks N workers under a master; 0 = one process.
    if (( NWORKERS > 1 )); then LIGHTTPD_MAX_WORKER=$NWORKERS; else LIGHTTPD_MAX_WORKER=0; fi
}
# parse_servers KNOWN...: SERVERS -> SERVER_LIST (order kept), checked against KNOWN.
parse_servers() {
    local s known=" $* "
    read -r -a SERVER_LIST <<< "$SERVERS"
    (( ${#SERVER_LIST[@]} > 0 )) || die "SERVERS is empty"
    for s in "${SERVER_LIST[@]}"; do
        [[ $known == *" $s "* ]] || die "unknown server '$s' in SERVERS (known:$known)"
    done
}
has_server() { local s; for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
# parse_workloads KNOWN...: ONLY (comma/space separated, empty = all) -> WORKLOADS.
parse_workloads() {
    local w known=" $* " wanted=()
    WORKLOADS=()
    if [[ -z $ONLY ]]; then WORKLOADS=("$@"); return 0; fi
    read -r -a wanted <<< "${ONLY//,/ }"
    for w in "${wanted[@]}"; do
        [[ $known == *" $w "* ]] || die "unknown workload '$w' in ONLY (known:$known)"
        WORKLOADS+=("$w")
    done
}
want() { local w; for w in "${WORKLOADS[@]}"; do [[ $w == "$1" ]] && return 0; done; return 1; }

# check_trellis PLUGIN...: TRELLIS_BIN/PLUGIN_DIR exist (made absolute), the plugins are there.
check_trellis() {
    local p
    [[ -x $TRELLIS_BIN ]] || die "trellis binary '$TRELLIS_BIN' not found or not executable.
  Build it first (Release):  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build
  or point TRELLIS_BIN at it (or leave trellis out of SERVERS to exercise the harness alone)."
    TRELLIS_BIN=$(cd "$(dirname "$TRELLIS_BIN")" && pwd)/$(basename "$TRELLIS_BIN")
    [[ -d $PLUGIN_DIR ]] || die "plugin directory '$PLUGIN_DIR' not found (set PLUGIN_DIR)"
    PLUGIN_DIR=$(cd "$PLUGIN_DIR" && pwd)
    for p in "$@"; do
        [[ -f $PLUGIN_DIR/$p.so ]] || die "plugin $PLUGIN_DIR/$p.so not found"
    done
    check_release_build "$TRELLIS_BIN"
}
# ensure_server_packages: install (as root, apt-get) what the servers in SERVER_LIST need.
ensure_server_packages() {
    if has_server nginx; then
        [[ $NGINX_BIN == nginx ]] && ensure_packages nginx nginx-light
        command -v "$NGINX_BIN" >/dev/null || die "nginx binary '$NGINX_BIN' not found"
    fi
    if has_server h2o; then
        [[ $H2O_BIN == h2o ]] && ensure_packages h2o h2o
        command -v "$H2O_BIN" >/dev/null || die "h2o binary '$H2O_BIN' not found"
    fi
    if has_server lighttpd; then
        if [[ $LIGHTTPD_BIN == lighttpd ]]; then
            ensure_packages lighttpd lighttpd lighttpd-mod-mbedtls
            ensure_packages /usr/lib/lighttpd/mod_mbedtls.so lighttpd-mod-mbedtls
        fi
        command -v "$LIGHTTPD_BIN" >/dev/null || die "lighttpd binary '$LIGHTTPD_BIN' not found"
        command -v setsid >/dev/null || die "setsid not found (util-linux)"
    fi
    if has_server trellis; then check_trellis "$@"; fi
}

# ---------------------------------------------------------------- temp dir, servers, cleanup
# Servers started with launch_server are recorded in SERVER_PID and stopped on
# exit (including Ctrl-C); clients started with run_client in CLIENT_PIDS.
declare -A SERVER_PID=()
declare -A SERVER_EXTRA_PIDS=()   # forked workers to wait for after the master (lighttpd)
declare -A SERVER_LOG=()          # the server's stdout/stderr
CLIENT_PIDS=()

stop_clients() {
    local pid
    for pid in "${CLIENT_PIDS[@]:-}"; do [[ -n $pid ]] && stop_pid "$pid" client; done
    CLIENT_PIDS=()
}
stop_server() { # NAME
    local extra
    [[ -n ${SERVER_PID[$1]:-} ]] || return 0
    extra=${SERVER_EXTRA_PIDS[$1]:-}
    stop_pid "${SERVER_PID[$1]}" "$1"
    # shellcheck disable=SC2086
    [[ -z $extra ]] || wait_gone "$1 worker" $extra
    unset "SERVER_PID[$1]"
}
bench_cleanup() {
    local rc=$? s
    trap - EXIT INT TERM HUP
    stop_clients
    for s in "${!SERVER_PID[@]}"; do stop_server "$s"; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        info "kept temporary directory $TMP"
    elif [[ -n ${TMP:-} ]]; then
        rm -rf "$TMP"
    fi
    exit "$rc"
}
# bench_tmpdir PREFIX: TMP = a fresh world-readable temp dir (nginx, lighttpd and h2o
# workers drop to 'nobody' when started as root) and the cleanup traps.
bench_tmpdir() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# make_cert: CERT, KEY = a self-signed ECDSA P-256 certificate for localhost/127.0.0.1 in TMP.
make_cert() {
    CERT=$TMP/localhost.crt
    KEY=$TMP/localhost.key
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' \
        -keyout "$KEY" -out "$CERT" > "$TMP/openssl-req.log" 2>&1 \
        || { cat "$TMP/openssl-req.log" >&2; die "could not create the test certificate"; }
    chmod 644 "$KEY"   # nginx/h2o read it as root; lighttpd workers as 'nobody'; temp dir only
}

# server_pids NAME: the server's process and all its descendants (nginx/lighttpd workers).
descendants() { local c; echo "$1"; for c in $(pgrep -P "$1" || true); do descendants "$c"; done; }
server_pids() {
    [[ -n ${SERVER_PID[$1]:-} ]] || return 0
    descendants "${SERVER_PID[$1]}" | tr '\n' ' '
}

# launch_server NAME LOG PORTS -- COMMAND...: refuse loudly if any of PORTS is busy,
# then start COMMAND in the background (stdout+stderr to LOG) as server NAME.
launch_server() {
    local name=$1 log=$2 ports=$3 p
    shift 3
    [[ $1 == -- ]] && shift
    for p in $ports; do assert_port_free "$p" "$name"; done
    "$@" > "$log" 2>&1 &
    SERVER_PID[$name]=$!
    SERVER_LOG[$name]=$log
}
# check_alive NAME: die loudly (keeping the temp dir and showing the log) when a
# server we started has exited, e.g. crashed under the previous load.
check_alive() {
    local name=$1 pid=${SERVER_PID[$1]:-} rc=0 how
    [[ -n $pid ]] || return 0
    pid_alive "$pid" && return 0
    wait "$pid" 2>/dev/null || rc=$?
    how="exit status $rc"
    (( rc > 128 )) && how+=" (signal $(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 ))))"
    KEEP_TMP=1
    unset "SERVER_PID[$name]"
    echo "---- last lines of $name's output (${SERVER_LOG[$name]:-?}) ----" >&2
    tail -n 30 "${SERVER_LOG[$name]:-/dev/null}" >&2 || true
    die "$name (pid $pid) died during the benchmark: $how. Temp dir kept: $TMP"
}
# server_started NAME PORTS: after wait_ready: the listeners on PORTS are ours.
server_started() {
    local name=$1 ports=$2 p pids
    read -r -a pids <<< "$(server_pids "$name")"
    for p in $ports; do assert_port_owned "$p" "$name" "${pids[@]}"; done
}

# start_nginx TEMPLATE PORTS KEY=VALUE...: config from TEMPLATE in TMP/nginx, nginx -t, start.
start_nginx() {
    local tpl=$1 ports=$2 ngx=$TMP/nginx
    shift 2
    mkdir -p "$ngx/conf" "$ngx/logs" "$ngx/tmp"
    subst "$tpl" "$ngx/conf/nginx.conf" PREFIX="$ngx" "$@"
    "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e "$ngx/logs/error.log" -t \
        > "$TMP/nginx-test.log" 2>&1 || { cat "$TMP/nginx-test.log" >&2; die "nginx -t rejected the config"; }
    launch_server nginx "$TMP/nginx.log" "$ports" -- \
        "$NGINX_BIN" -p "$ngx/" -c conf/nginx.conf -e "$ngx/logs/error.log"
    NGINX_ERROR_LOG=$ngx/logs/error.log
}
# start_trellis TEMPLATE PORTS KEY=VALUE...
start_trellis() {
    local tpl=$1 ports=$2
    shift 2
    subst "$tpl" "$TMP/trellis.json" "$@"
    launch_server trellis "$TMP/trellis.log" "$ports" -- "$TRELLIS_BIN" --config "$TMP/trellis.json"
}
# start_h2o TEMPLATE PORTS KEY=VALUE...: one process (master mode "worker": threads).
start_h2o() {
    local tpl=$1 ports=$2
    shift 2
    mkdir -p "$TMP/h2o"
    subst "$tpl" "$TMP/h2o/h2o.conf" PREFIX="$TMP/h2o" "$@"
    "$H2O_BIN" -t -c "$TMP/h2o/h2o.conf" > "$TMP/h2o-test.log" 2>&1 \
        || { cat "$TMP/h2o-test.log" >&2; die "h2o -t rejected the config"; }
    launch_server h2o "$TMP/h2o.log" "$ports" -- "$H2O_BIN" -c "$TMP/h2o/h2o.conf"
}
# start_lighttpd TEMPLATE PORTS KEY=VALUE...: in its own session (on shutdown lighttpd's
# master signals its process group, which would otherwise include this script).
start_lighttpd() {
    local tpl=$1 ports=$2 ltd=$TMP/lighttpd
    shift 2
    mkdir -p "$ltd/tmp"
    subst "$tpl" "$ltd/lighttpd.conf" PREFIX="$ltd" "$@"
    "$LIGHTTPD_BIN" -tt -f "$ltd/lighttpd.conf" > "$TMP/lighttpd-test.log" 2>&1 \
        || { cat "$TMP/lighttpd-test.log" >&2; die "lighttpd -tt rejected the config"; }
    launch_server lighttpd "$TMP/lighttpd.log" "$ports" -- setsid "$LIGHTTPD_BIN" -D -f "$ltd/lighttpd.conf"
}
# lighttpd_started: after wait_ready: remember the forked workers (they outlive the master).
lighttpd_started() {
    local pid=${SERVER_PID[lighttpd]} workers
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == lighttpd* ]] \
        || die "setsid forked: pid $pid is not lighttpd (run the script without job control)"
    if (( LIGHTTPD_MAX_WORKER > 0 )); then
        local wk
        workers=$(pgrep -P "$pid" | tr '\n' ' ')
        SERVER_EXTRA_PIDS[lighttpd]=$workers
        read -r -a wk <<< "$workers"
        (( ${#wk[@]} == LIGHTTPD_MAX_WORKER )) \
            || warn "lighttpd: expected $LIGHTTPD_MAX_WORKER worker processes, found ${#wk[@]}"
    fi
}

# ---------------------------------------------------------------- clients, CPU
# run_client SECONDS OUT COMMAND...: run a load client in the background, bounded
# by timeout(1) at SECONDS, output to OUT; returns its exit status. Waiting on a
# background child lets a trapped signal (Ctrl-C) interrupt at once, whereas bash
# defers traps until a foreground child exits (and wrk itself catches SIGINT).
run_client() {
    local limit=$1 out=$2 rc=0 pid
    shift 2
    timeout -k 5 "$limit" "$@" > "$out" 2>&1 &
    pid=$!
    CLIENT_PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_client "$pid"
    (( rc != 124 && rc != 137 )) || warn "client killed after ${limit}s: $*"
    return "$rc"
}
forget_client() { # PID: no longer stop it on exit
    local p keep=()
    for p in "${CLIENT_PIDS[@]:-}"; do [[ -n $p && $p != "$1" ]] && keep+=("$p"); done
    CLIENT_PIDS=("${keep[@]:-}")
}

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_ticks PID...: summed utime + stime (clock ticks, all threads) of the live PIDs.
cpu_ticks() {
    local p s f t=0
    for p in "$@"; do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }                     # after "pid (comm) ": field 3 (state) onwards
        read -r -a f <<< "$s"
        t=$(( t + f[11] + f[12] ))      # fields 14 (utime) and 15 (stime)
    done
    echo "$t"
}
# us_per ticks count -> microseconds of CPU per unit (2 decimals), or "" when count is 0.
us_per() {
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n }'
}
# wrk_requests FILE: the request count from "N requests in T, B read".
wrk_requests() { awk '/ requests in / { print $1; exit }' "$1"; }
# wrk_latency_us FILE PERCENT: a --latency percentile ("  99%  1.23ms") in microseconds.
wrk_latency_us() {
    awk -v pct="$2%" '$1 == pct && NF == 2 {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (m > 0) printf "%.1f\n", v * m
        exit }' "$1"
}
min_max() { # values... -> "MIN MAX" (nothing for no values)
    printf '%s\n' "$@" | sort -g | awk 'NF { if (!n++) lo = $1; hi = $1 } END { if (n) print lo, hi }'
}
