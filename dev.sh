#!/usr/bin/env bash
# The two commands of the README.
#   ./dev.sh run    install what is missing, build (Release), serve www/ with ./server.json
#   ./dev.sh test   install what is missing, build Release and ASan+UBSan, run the whole suite on both
# Debian 12, as root (apt-get is only called when a package is missing).
set -euo pipefail
cd "$(dirname "$0")"

# What building and testing needs, all from Debian 12.
PACKAGES=(build-essential cmake pkg-config libuv1-dev node-llhttp libmbedtls-dev nlohmann-json3-dev
          doctest-dev curl openssl python3 wrk)
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

run_suite() {
    local dir=$1
    echo "dev.sh: test suite in $dir"
    ctest --test-dir "$dir" --output-on-failure -j1
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
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_suite build-asan
    ;;
*)
    echo "usage: ./dev.sh run | test" >&2
    exit 2
    ;;
esac
