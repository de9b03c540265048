#!/bin/sh
# End to end test of `qat compare` on the shipped data: train a tiny float
# LeNet-5, damage one layer on purpose (classifier.2), compare w8a8,w2a8 with
# two calibrators, QAT and the sensitivity pass, then check the output with
# tests/check_compare.py (JSON keys, results.json == stdout, report files,
# int8 accuracies re-measured by `qat eval`, classifier.2 ranked first).
# Usage: test_compare.sh QAT_BINARY [DATA_DIR]; PYTHON = python3 with numpy and h5py.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 QAT_BINARY [DATA_DIR]" >&2
    exit 2
fi
qat=$1
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/data/fashion-mnist-small}
python=${PYTHON:-/usr/bin/python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/test_compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$qat" train --model lenet5 --epochs 1 --data "$data" --val 200 --threads 2 \
    --out "$work/f.h5" >/dev/null

# Damage classifier.2 so that quantizing it alone at 2 bits destroys the model
# while the float model stays as it was: hidden unit 0 of classifier.0 is made
# dead (zero weights and bias, so ReLU gives 0 on every image) and
# classifier.2's column 0, which only ever multiplies that 0, gets weights 10x
# the largest |w|. The float output does not change, but a 2-bit grid
# spanning the outlier rounds every other weight of classifier.2 to zero.
"$python" - "$work/f.h5" "$work/damaged.h5" <<'PY'
import shutil, sys
import h5py, numpy as np
shutil.copyfile(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    p = f["model/params"]
    for name in ("classifier.0.weight", "classifier.0.bias", "classifier.2.weight"):
        assert name in p, f"{sys.argv[1]}: no /model/params/{name}"
    w0 = p["classifier.0.weight"][...]
    b0 = p["classifier.0.bias"][...]
    w2 = p["classifier.2.weight"][...]
    assert w0.shape == (120, 400) and w2.shape == (84, 120), (w0.shape, w2.shape)
    w0[0, :] = 0
    b0[0] = 0
    w2[:, 0] = 10.0 * np.abs(w2).max()
    p["classifier.0.weight"][...] = w0
    p["classifier.0.bias"][...] = b0
    p["classifier.2.weight"][...] = w2
PY

"$qat" compare --from "$work/damaged.h5" --quant w8a8,w2a8 --calib minmax,mse \
    --qat-epochs 1 --calib-size 256 --sensitivity --data "$data" --val 200 --threads 2 \
    --out "$work/cmp" --json >"$work/cmp.json" 2>"$work/cmp.log" || {
    echo "FAIL: qat compare failed:" >&2
    cat "$work/cmp.log" >&2
    exit 1
}

"$python" "$here/check_compare.py" "$qat" "$data" "$work/cmp.json" "$work/cmp"
"$python" "$here/check_report.py" "$work/cmp"
