#!/bin/sh
# Installs the Debian packages qat needs (only those missing), then
# configures and builds. Sourced by scripts/test.sh and scripts/demo.sh.
# Usage: scripts/setup.sh [BUILD_DIR] [extra meson options...]
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ $# -gt 0 ] && shift
PKGS="meson ninja-build pkg-config gcc libopenblas-dev libhdf5-dev check zlib1g-dev dataset-fashion-mnist python3-numpy python3-h5py"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "qat: installing:$missing" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
fi
WERROR=false
[ "${CI:-}" = "true" ] && WERROR=true
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" -Dwerror=$WERROR "$@" >&2
fi
ninja -C "$BUILD" >&2
