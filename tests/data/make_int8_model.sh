#!/bin/sh
# Regenerates tests/data/lenet5-small.int8.h5, the small int8 model that
# the int8_runner meson test feeds to tests/test_int8_runner.sh (qat run
# against the independent numpy runner, bit for bit):
#   LeNet-5 trained 1 epoch on the shipped Fashion-MNIST subset
#   (tests/data/fashion-mnist-small, 1800 training images, --val 200),
#   PTQ W8A8 (MinMax, 1024 calibration images), exported.
# Usage: tests/data/make_int8_model.sh path/to/qat [OUT.int8.h5]
# Takes a few seconds. The file depends on the build (float summation
# order with threads), so regenerate it only on purpose and commit it.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 QAT_BINARY [OUT.int8.h5]" >&2
    exit 2
fi
qat=$1
here=$(cd "$(dirname "$0")" && pwd)
out=${2:-$here/lenet5-small.int8.h5}
data=$here/fashion-mnist-small

tmp=$(mktemp -d "${TMPDIR:-/tmp}/make_int8_model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

"$qat" train --model lenet5 --epochs 1 --data "$data" --val 200 --seed 1 --threads 1 \
    --out "$tmp/float.h5"
"$qat" ptq --from "$tmp/float.h5" --quant w8a8 --calib minmax --calib-size 1024 \
    --data "$data" --val 200 --seed 1 --threads 1 --out "$tmp/ptq.h5"
"$qat" export --from "$tmp/ptq.h5" --out "$tmp/model.int8.h5"
mv "$tmp/model.int8.h5" "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
