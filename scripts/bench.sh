#!/bin/sh
# Benchmarks against PyTorch (bench/peer_pytorch.py), side by side,
# printing one JSON object. Installs what is missing (python3-torch for the
# peer), builds, then runs bench/run_bench.py with the given options
# (e.g. --models lenet5,convnet --reps 3 --native-blas).
# scripts/bench.sh --dynamic DATA_DIR OUT_DIR mlp.h5 lenet5.h5 [--threads N] [--pairs P]:
# dynamic quantization against torch quantize_dynamic (bench/bench_dynamic.py).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh build
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch >&2
fi
if [ "${1:-}" = "--dynamic" ]; then
    shift
    exec /usr/bin/python3 bench/bench_dynamic.py build/tools/qat build/bench/bench_runtime "$@"
fi
exec /usr/bin/python3 bench/run_bench.py "$@"
