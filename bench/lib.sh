# Shared bash helpers for the bench/ harnesses (run.sh, tls.sh). Source it:
#     . "$BENCH_DIR/lib.sh"
# Callers set ADDRESS (the loopback address servers listen on) before using
# free_port, and TMP before using anything that writes there. Messages are
# prefixed with the name of the calling script.
# shellcheck shell=bash

BENCH_PROG=${BENCH_PROG:-$(basename "$0")}

die()  { echo "$BENCH_PROG: error: $*" >&2; exit 1; }
warn() { echo "$BENCH_PROG: WARNING: $*" >&2; }
info() { echo "$BENCH_PROG: $*" >&2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# stop_pid PID NAME [SIGNAL]: signal PID (default TERM), wait up to 5 s, then KILL.
stop_pid() {
    local pid=$1 name=$2 sig=${3:-TERM} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for (( i = 0; i < 50; i++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop on SIG$sig; sending SIGKILL"
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
wait_ready() {
    local name=$1 pid=$2 log=$3 url=$4 i
    shift 4
    for (( i = 0; i < 150; i++ )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log ($log) ----" >&2; cat "$log" >&2 || true
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
