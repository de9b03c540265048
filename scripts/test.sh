#!/bin/sh
# The test suite: installs what is missing, builds, runs every Check suite.
# Usage: scripts/test.sh              (build/)
#        scripts/test.sh --sanitize   (build-asan/, AddressSanitizer + UBSan)
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
    sh scripts/setup.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    exec meson test -C build-asan --print-errorlogs --timeout-multiplier 4
fi
sh scripts/setup.sh build
exec meson test -C build --print-errorlogs
