#!/usr/bin/env bash
# The commands of the README.
#   ./dev.sh run    install what is missing, build (Release), serve www/ with ./server.json
#   ./dev.sh test   install what is missing, build Release and ASan+UBSan, run the whole suite on both,
#                   then each libFuzzer harness for FUZZ_SECONDS (default 60)
#   ./dev.sh fuzz [seconds]   only the fuzz stage, each harness for `seconds` (default FUZZ_SECONDS)
#   ./dev.sh tsan   the multi-threaded tests under ThreadSanitizer (build-tsan)
# Debian 12, as root (apt-get is only called when a package is missing).
set -euo pipefail
cd "$(dirname "$0")"

# What building and testing needs, all from Debian 12.
# For the fuzz stage: clang, libclang-rt-14-dev (libFuzzer's runtime, libclang_rt.fuzzer*.a, only
# recommended by clang) and llvm (llvm-symbolizer, for file:line in the stacks of a crash report).
# For the HTTP/2 tests: python3-h2 (with hpack, which tests/integration/h2client.py borrows from
# Debian's dist-packages when another python3 runs the suite), nghttp2-client (nghttp, h2load).
# For the deployment tests (test_88, test_89): haproxy (the rolling restart behind it, and
# `haproxy -c` of deploy/haproxy.cfg), logrotate (`logrotate -d` of deploy/logrotate) and systemd
# (systemd-analyze, to verify the installed unit; nothing is started: in a container it is only
# the package's files).
# For the browser test (test_95): chromium (headless, driven over the DevTools protocol by
# tests/integration/cdp.py) and libnss3-tools (certutil, to trust the test CA in the NSS database
# that chromium reads).
PACKAGES=(build-essential cmake pkg-config libuv1-dev node-llhttp libmbedtls-dev nlohmann-json3-dev
          doctest-dev curl openssl python3 wrk clang libclang-rt-14-dev llvm
          libnghttp2-dev python3-h2 nghttp2-client haproxy logrotate systemd
          chromium libnss3-tools)
JOBS=$(nproc)

install_missing() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "dev.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# build DIR [cmake options...]
build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
    cmake --build "$dir" -j"$JOBS"
}

# run_suite DIR [ctest options...]
run_suite() {
    local dir=$1
    shift
    echo "dev.sh: test suite in $dir"
    ctest --test-dir "$dir" --output-on-failure -j1 "$@"
}

# The libFuzzer harnesses of tests/fuzz (README "Fuzzing"), built with clang in build-fuzz/, each run
# for $1 seconds on a copy of its seed corpus (the corpus in the repository is never written). Any
# crash, sanitizer report or broken invariant fails the stage; the input is kept in
# build-fuzz/fuzz-artifacts/.
fuzz() {
    local seconds=$1
    local dir=build-fuzz artifacts work harness passed=0 failed=0
    if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
        echo "dev.sh: fuzz: seconds must be a positive integer, got '$seconds'" >&2
        return 2
    fi
    CC=clang CXX=clang++ cmake -S . -B "$dir" -DTRELLIS_FUZZ=ON -DTRELLIS_BUILD_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$dir" -j"$JOBS" --target fuzz_session fuzz_config fuzz_path
    artifacts=$PWD/$dir/fuzz-artifacts
    mkdir -p "$artifacts"
    work=$(mktemp -d)
    for harness in session config path; do
        mkdir -p "$work/$harness"
        cp tests/fuzz/corpus/$harness/* "$work/$harness/"
        local dict=()
        [[ $harness == session ]] && dict=(-dict=tests/fuzz/http.dict)
        echo "dev.sh: fuzz_$harness for ${seconds}s"
        if ! "$dir/tests/fuzz/fuzz_$harness" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            "${dict[@]}" -artifact_prefix="$artifacts/$harness-" \
            "$work/$harness" >"$work/$harness.log" 2>&1; then
            failed=$((failed + 1))
            # The report (stack, invariant, input) is at the end; the progress lines are not.
            grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^[[:space:]]+NEW_FUNC' "$work/$harness.log" |
                tail -n 80 || true
            echo "dev.sh: fuzz_$harness FAILED; the input is in $artifacts/ (README: reproduce a crash)" >&2
        else
            passed=$((passed + 1))
            grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$harness.log" || true
        fi
    done
    rm -rf "$work"
    echo "fuzz: $passed passed, $failed failed"
    ((failed == 0))
}

case "${1:-}" in
run)
    install_missing
    build build
    exec build/trellis --config server.json
    ;;
test)
    install_missing
    build build
    run_suite build
    # The same suite under AddressSanitizer + UndefinedBehaviorSanitizer: any report fails it.
    build build-asan -DTRELLIS_SANITIZE=address,undefined
    # The minute-long load test (label "load") runs in the Release pass only, to keep CI near 20
    # minutes; `ctest --test-dir build-asan -L load` runs it under the sanitizers too.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_suite build-asan -LE load
    fuzz "${FUZZ_SECONDS:-60}"
    ;;
fuzz)
    install_missing
    fuzz "${2:-${FUZZ_SECONDS:-60}}"
    ;;
tsan)
    # ThreadSanitizer over the tests where threads meet: workers, the thread pool, async answers
    # from plugin threads, reloads, shutdown, logs, ticket keys shared by the workers, the PROXY
    # stage, and the SIGUSR2 upgrade (a spawn while workers close sockets). Any report fails (the
    # harness looks for it).
    install_missing
    build build-tsan -DTRELLIS_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        ctest --test-dir build-tsan --output-on-failure -j1 \
        -R 'unit|test_50|test_55|test_60|test_62|test_65|test_66|test_67|test_72|test_75|test_85|test_86|test_87|test_90'
    ;;
*)
    echo "usage: ./dev.sh run | test | fuzz [seconds] | tsan" >&2
    exit 2
    ;;
esac
