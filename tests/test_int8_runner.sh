#!/bin/sh
# Bit-for-bit comparison of `qat run` with the independent Python runner
# (tests/int8_runner.py, written only from docs/FORMAT-int8.md).
# Usage: test_int8_runner.sh QAT_BINARY MODEL.int8.h5 [INPUT]
# Exit 0 iff both produce identical int8 logits.
set -u
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 QAT_BINARY MODEL.int8.h5 [INPUT]" >&2
    exit 2
fi
qat=$1
model=$2
here=$(cd "$(dirname "$0")" && pwd)
input=${3:-$here/data/fashion-mnist-small/t10k-images-idx3-ubyte.gz}
python=${PYTHON:-/usr/bin/python3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_int8_runner.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

if ! "$qat" run "$model" "$input" --save-logits "$tmp/qat.npy"; then
    echo "FAIL: qat run $model $input failed" >&2
    exit 1
fi
if ! "$python" "$here/int8_runner.py" "$model" "$input" "$tmp/py.npy"; then
    echo "FAIL: int8_runner.py $model $input failed" >&2
    exit 1
fi
"$python" - "$tmp/qat.npy" "$tmp/py.npy" <<'PY'
import sys
import numpy as np
a = np.load(sys.argv[1])
b = np.load(sys.argv[2])
if a.dtype != np.int8:
    print("FAIL: qat logits dtype %s, expected int8" % a.dtype)
    sys.exit(1)
if a.shape != b.shape:
    print("FAIL: qat logits shape %s, int8_runner.py shape %s" % (a.shape, b.shape))
    sys.exit(1)
diff = int(np.count_nonzero(a != b))
print("%d of %d logits differ (shape %s)" % (diff, a.size, a.shape))
if diff:
    rows = np.nonzero((a != b).any(axis=1))[0]
    print("rows differing: %d, first row %d: qat %s, runner %s"
          % (rows.size, rows[0], a[rows[0]].tolist(), b[rows[0]].tolist()))
    sys.exit(1)
PY
