#!/bin/sh
# Bit-for-bit comparison of `qat run` with the independent Python runner
# (tests/int8_runner.py, written only from docs/FORMAT-int8.md).
# Usage: test_int8_runner.sh QAT_BINARY MODEL.int8.h5 [INPUT]
#   Exit 0 iff both produce identical int8 logits.
# Or:    test_int8_runner.sh --encodings QAT_BINARY WENC_MAKE DATA_DIR
#   The weight encodings (docs/FORMAT-int8.md, "Weight encodings"): trains
#   a small lenet5 (1 epoch, 600 images), exports it at w8a8, w4a8 and w2a8
#   (w4/w2 are written packed: the files must be smaller), writes 1/3/5/6/7-
#   bit packed, codebook and hashed re-encodings of it with qat's writer
#   (tests/wenc_make.c), and compares `qat run` with the runner on every
#   file; then damages files (short/long payload, nonzero padding, codebook
#   index >= K, missing hash_seed / codebook, K = 1, weight_bits 9, unknown
#   encoding) and checks that both reject each, qat naming the dataset or
#   attribute.
# Or:    test_int8_runner.sh --v3 QAT_BINARY INPUT
#   Format version 3: the synthetic files of tests/gen_int8_v3.py (grouped
#   and depthwise conv2d, act_max_channel, lut, concat, upsample) through
#   `qat run` and the runner, bit for bit; then damaged copies (groups not
#   dividing the channels, a weight of the wrong IC/groups, a table of 255,
#   concat inputs of different H, W, act_max_channel below act_min,
#   upsample out_shape) that both must reject, qat naming the field.
set -u
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_int8_runner.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# compare QAT MODEL INPUT: 0 iff identical logits
compare() {
    if ! "$1" run "$2" "$3" --save-logits "$tmp/qat.npy" >/dev/null; then
        echo "FAIL: qat run $2 $3 failed" >&2
        return 1
    fi
    if ! "$python" "$here/int8_runner.py" "$2" "$3" "$tmp/py.npy"; then
        echo "FAIL: int8_runner.py $2 $3 failed" >&2
        return 1
    fi
    "$python" - "$tmp/qat.npy" "$tmp/py.npy" "$2" <<'PY'
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
print("%s: %d of %d logits differ (shape %s)" % (sys.argv[3].split("/")[-1], diff, a.size, a.shape))
if diff:
    rows = np.nonzero((a != b).any(axis=1))[0]
    print("rows differing: %d, first row %d: qat %s, runner %s"
          % (rows.size, rows[0], a[rows[0]].tolist(), b[rows[0]].tolist()))
    sys.exit(1)
PY
}

if [ "${1:-}" = "--v3" ]; then
    if [ $# -ne 3 ]; then
        echo "usage: $0 --v3 QAT_BINARY INPUT" >&2
        exit 2
    fi
    qat=$2
    input=$3
    fail=0
    mkdir "$tmp/v3" "$tmp/bad"
    "$python" "$here/gen_int8_v3.py" "$tmp/v3" 7 >"$tmp/names" || exit 1
    # the first 300 images (uint8 [N, 28, 28] .npy) keep this quick
    "$python" - "$here" "$input" "$tmp/small.npy" <<'PY' || exit 1
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import int8_runner
np.save(sys.argv[3], int8_runner.read_idx(sys.argv[2])[:300])
PY
    for n in $(cat "$tmp/names"); do
        compare "$qat" "$tmp/v3/$n.int8.h5" "$tmp/small.npy" || fail=1
    done
    "$python" - "$tmp/v3" "$tmp/bad" <<'PY' || fail=1
import shutil, sys
import h5py
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
def damage(name, base, op, fn, expect):
    p = "%s/%s.int8.h5" % (dst, name)
    shutil.copy("%s/%s.int8.h5" % (src, base), p)
    with h5py.File(p, "r+") as f:
        fn(f["ops/" + op])
    with open(p + ".expect", "w") as fh:
        fh.write(expect)
def replace(g, k, v):
    del g[k]
    g[k] = v
# v3-grouped: op 002 is conv2d groups 3 (6 -> 9 channels, weight [9, 2, 3, 3])
damage("groups4", "v3-grouped", "002", lambda g: g.attrs.__setitem__("groups", np.int32(4)),
       "attribute groups = 4 does not divide the input's 6 channels")
damage("wgroup", "v3-grouped", "002", lambda g: replace(g, "weight", np.zeros((9, 3, 3, 3), np.int8)),
       "dataset weight has 3 input channels per group, expected IC/groups = 6/3 = 2")
# v3-concat-up: op 004 is a lut, op 005 the concat of ops 1, 3, 4; op 003 upsample
damage("table", "v3-concat-up", "004", lambda g: replace(g, "table", np.zeros(255, np.int8)),
       "dataset table has 255 elements, expected 256")
damage("catshape", "v3-concat-up", "005", lambda g: g.attrs.__setitem__("inputs", np.array([1, 2, 4], np.int32)),
       "not concatenable")
damage("upshape", "v3-concat-up", "003", lambda g: g.attrs.__setitem__("out_shape", np.array([5, 15, 14], np.int32)),
       "out_shape is (5, 15, 14), expected (5, 14, 14)")
# v3-mbv2: op 002 is a 1x1 conv with act_max_channel and act_min = its zero point
def low_amc(g):
    a = g["act_max_channel"][()]
    a[3] = int(g.attrs["act_min"]) - 1
    replace(g, "act_max_channel", a)
damage("amc", "v3-mbv2", "002", low_amc, "dataset act_max_channel[3] =")
PY
    for f in "$tmp"/bad/*.int8.h5; do
        b=$(basename "$f")
        if "$qat" run "$f" "$input" --save-logits "$tmp/x.npy" 2>"$tmp/err"; then
            echo "FAIL: qat run accepted $b" >&2
            fail=1
        elif ! grep -qF "$(cat "$f.expect")" "$tmp/err"; then
            echo "FAIL: qat run $b: message does not say '$(cat "$f.expect")':" >&2
            cat "$tmp/err" >&2
            fail=1
        else
            echo "$b: qat rejects it: $(tail -1 "$tmp/err")"
        fi
        if "$python" "$here/int8_runner.py" "$f" "$input" "$tmp/x.npy" 2>"$tmp/err"; then
            echo "FAIL: int8_runner.py accepted $b" >&2
            fail=1
        else
            echo "$b: int8_runner.py rejects it: $(tail -1 "$tmp/err")"
        fi
    done
    exit $fail
fi

if [ "${1:-}" != "--encodings" ]; then
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then
        echo "usage: $0 QAT_BINARY MODEL.int8.h5 [INPUT] | --encodings QAT_BINARY WENC_MAKE DATA_DIR" >&2
        exit 2
    fi
    compare "$1" "$2" "${3:-$here/data/fashion-mnist-small/t10k-images-idx3-ubyte.gz}"
    exit $?
fi

if [ $# -ne 4 ]; then
    echo "usage: $0 --encodings QAT_BINARY WENC_MAKE DATA_DIR" >&2
    exit 2
fi
qat=$2
make=$3
data=$4
input=$data/t10k-images-idx3-ubyte.gz
fail=0
quiet() { # CMD...: output only on failure
    "$@" >"$tmp/log" 2>&1 || { echo "FAIL: $*" >&2; cat "$tmp/log" >&2; exit 1; }
}
opts="--data $data --val 100 --limit-train 600 --limit-test 100 --threads 2 --seed 3"
# shellcheck disable=SC2086
quiet "$qat" train --model lenet5 --epochs 1 $opts --out "$tmp/f.h5"
for spec in w8a8 w4a8 w2a8; do
    # shellcheck disable=SC2086
    quiet "$qat" ptq --from "$tmp/f.h5" --quant $spec --calib minmax --calib-size 64 $opts --out "$tmp/p.h5"
    quiet "$qat" export --from "$tmp/p.h5" --out "$tmp/$spec.int8.h5"
    compare "$qat" "$tmp/$spec.int8.h5" "$input" || fail=1
done
# sub-byte files are packed: payloads strictly smaller, and as the doc's
# sizes say
"$python" - "$tmp" <<'PY' || fail=1
import sys
import h5py
import numpy as np
d = sys.argv[1]
def payload(p):
    tot = [0]
    with h5py.File(p, "r") as f:
        f.visititems(lambda n, o: tot.__setitem__(0, tot[0] + o.size * o.dtype.itemsize)
                     if isinstance(o, h5py.Dataset) else None)
    return tot[0]
p8, p4, p2 = (payload("%s/%s.int8.h5" % (d, s)) for s in ("w8a8", "w4a8", "w2a8"))
ok = True
with h5py.File(d + "/w4a8.int8.h5", "r") as f:
    for k in f["ops"]:
        g = f["ops"][k]
        if g.attrs["type"] in ("conv2d", "linear"):
            n = int(np.prod(g.attrs["weight_shape"]))
            if g.attrs["weight_encoding"] != "packed" or g.attrs["weight_bits"] != 4 \
                    or g["weight"].shape != ((n * 4 + 7) // 8,) or g["weight"].dtype != np.uint8:
                print("FAIL: w4a8 op %s is not packed at 4 bits" % k)
                ok = False
print("payload w8a8 %d, w4a8 %d (%.1f%%), w2a8 %d (%.1f%%)" % (p8, p4, 100.0 * p4 / p8, p2, 100.0 * p2 / p8))
if not (p2 < p4 <= 0.55 * p8):
    print("FAIL: payloads not w2 < w4 <= 55% of w8")
    ok = False
sys.exit(0 if ok else 1)
PY

mkdir "$tmp/enc"
quiet "$make" "$tmp/w8a8.int8.h5" "$tmp/enc"
# the first 300 test images (uint8 [N, 28, 28] .npy) keep this quick
"$python" - "$here" "$input" "$tmp/small.npy" <<'PY' || exit 1
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import int8_runner
np.save(sys.argv[3], int8_runner.read_idx(sys.argv[2])[:300])
PY
for f in "$tmp"/enc/*.int8.h5; do
    compare "$qat" "$f" "$tmp/small.npy" || fail=1
done

# bad inputs: each damaged copy must fail in both readers; qat's message
# must name the dataset or attribute
mkdir "$tmp/bad"
"$python" - "$tmp/enc" "$tmp/bad" <<'PY' || fail=1
import shutil, sys
import h5py
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
def damage(name, base, fn, expect, op="003"):
    """A copy of src/base with op's group (003: features.4, a conv) damaged by fn."""
    p = "%s/%s.int8.h5" % (dst, name)
    shutil.copy("%s/%s.int8.h5" % (src, base), p)
    with h5py.File(p, "r+") as f:
        fn(f["ops/" + op])
    with open(p + ".expect", "w") as fh:
        fh.write(expect)
def resize(g, delta):
    w = g["weight"][()]
    del g["weight"]
    g["weight"] = np.concatenate([w, np.zeros(max(delta, 0), np.uint8)])[:w.size + delta]
def set_first(g, v):
    w = g["weight"][()]
    w[0] = v
    g["weight"][...] = w
def pad_bits(g):
    w = g["weight"][()]
    w[-1] |= 0x80
    g["weight"][...] = w
def attr(g, k, v):
    if v is None:
        del g.attrs[k]
    else:
        g.attrs[k] = v
damage("short", "p3", lambda g: resize(g, -1), "dataset weight has")
damage("long", "p5", lambda g: resize(g, 1), "dataset weight has")
# features.0: 150 weights, 150 bits at 1 bit: the last byte has 2 padding bits
damage("padding", "bin1", pad_bits, "padding bits", op="001")
damage("index", "cb5", lambda g: set_first(g, 0xFF), "dataset codebook has K = 5")   # 3-bit indices: 7 >= 5
damage("noseed", "hashed", lambda g: attr(g, "hash_seed", None), "missing attribute hash_seed")
damage("nocodebook", "cb", lambda g: g.__delitem__("codebook"), "missing dataset codebook")
damage("k1", "hashed", lambda g: (g.__delitem__("codebook"), g.create_dataset("codebook", data=np.zeros(1, np.int8))),
       "dataset codebook has shape [1]")
damage("bits9", "p6", lambda g: attr(g, "weight_bits", np.int32(9)), "attribute weight_bits = 9")
damage("cbbits", "cb200", lambda g: attr(g, "weight_bits", np.int32(7)), "attribute weight_bits = 7")
damage("enc", "p7", lambda g: attr(g, "weight_encoding", "zstd"), "attribute weight_encoding = 'zstd'")
damage("hashw", "hashed", lambda g: g.create_dataset("weight", data=np.zeros(3, np.uint8)), "dataset weight present")
PY
for f in "$tmp"/bad/*.int8.h5; do
    b=$(basename "$f")
    if "$qat" run "$f" "$input" --save-logits "$tmp/x.npy" 2>"$tmp/err"; then
        echo "FAIL: qat run accepted $b" >&2
        fail=1
    elif ! grep -qF "$(cat "$f.expect")" "$tmp/err"; then
        echo "FAIL: qat run $b: message does not say '$(cat "$f.expect")':" >&2
        cat "$tmp/err" >&2
        fail=1
    else
        echo "$b: qat rejects it: $(tail -1 "$tmp/err")"
    fi
    if "$python" "$here/int8_runner.py" "$f" "$input" "$tmp/x.npy" 2>"$tmp/err"; then
        echo "FAIL: int8_runner.py accepted $b" >&2
        fail=1
    else
        echo "$b: int8_runner.py rejects it: $(tail -1 "$tmp/err")"
    fi
done
exit $fail
