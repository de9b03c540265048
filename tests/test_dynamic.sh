#!/bin/sh
# Dynamic quantization end to end on the shipped data subset: train a tiny
# lenet5 (1 epoch), `qat ptq --dynamic` in several variants, `qat export`,
# then
#   - `qat eval EXPORTED DYNAMIC.h5`: the runtime against the library's
#     evaluation of the dynamic checkpoint: 100% top-1, 100% identical
#     float32 logits;
#   - `qat run` against the independent numpy runner (tests/int8_runner.py,
#     written from docs/FORMAT-int8.md "Float ops"): identical float32
#     logits (the runner sums in the format's order, so bit for bit);
#   - `qat inspect --json` marks the float path and the dynamic layers.
# Usage: test_dynamic.sh QAT_BINARY [DATA_DIR]
set -eu
qat=$1
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/data/fashion-mnist-small}
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/test_dynamic.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$qat" train --model lenet5 --epochs 1 --data "$data" --val 200 --threads 2 --out "$work/f.h5" >/dev/null 2>&1

for variant in "w8 linear tensor" "fp16 linear row" "w8 all row" "fp16 all tensor"; do
    set -- $variant
    tag="$1-$2-$3"
    "$qat" ptq --from "$work/f.h5" --dynamic --quant "$1" --dynamic-layers "$2" --dynamic-act "$3" \
        --data "$data" --val 200 --out "$work/$tag.h5" --json >"$work/$tag.ptq.json" 2>/dev/null
    "$qat" export --from "$work/$tag.h5" --out "$work/$tag.int8.h5" >/dev/null
    "$qat" eval "$work/$tag.int8.h5" "$work/$tag.h5" --data "$data" --json >"$work/$tag.eval.json" 2>/dev/null
    "$qat" run "$work/$tag.int8.h5" "$data/t10k-images-idx3-ubyte.gz" --save-logits "$work/$tag.qat.npy" >/dev/null
    "$python" "$here/int8_runner.py" "$work/$tag.int8.h5" "$data/t10k-images-idx3-ubyte.gz" "$work/$tag.py.npy"
    "$qat" inspect "$work/$tag.int8.h5" --json >"$work/$tag.inspect.json"
    "$python" - "$work" "$tag" "$1" "$2" "$3" <<'PY'
import json, sys
import numpy as np
work, tag, quant, layers, act = sys.argv[1:]
fail = []
ptq = json.load(open("%s/%s.ptq.json" % (work, tag)))
ev = json.load(open("%s/%s.eval.json" % (work, tag)))
if ev["top1_agreement"] != 1.0 or ev["logit_agreement"] != 1.0:
    fail.append("eval vs run: top-1 %s, identical logits %s" % (ev["top1_agreement"], ev["logit_agreement"]))
if abs(ev["reference_test_accuracy"] - ptq["test_accuracy"]) > 0:
    fail.append("ptq accuracy %s, eval of the checkpoint %s" % (ptq["test_accuracy"], ev["reference_test_accuracy"]))
if ptq["test_accuracy"] < ptq["float_test_accuracy"] - 0.02:
    fail.append("accuracy %s vs float %s" % (ptq["test_accuracy"], ptq["float_test_accuracy"]))
a = np.load("%s/%s.qat.npy" % (work, tag))
b = np.load("%s/%s.py.npy" % (work, tag))
if a.dtype != np.float32 or a.shape != b.shape:
    fail.append("qat run logits %s %s, runner %s %s" % (a.dtype, a.shape, b.dtype, b.shape))
else:
    same = np.mean(a.view(np.uint32) == b.view(np.uint32))
    if same != 1.0:
        i = int(np.argmax((a.view(np.uint32) != b.view(np.uint32)).any(axis=1)))
        fail.append("qat run vs numpy: %.6f identical; row %d: %s vs %s" % (same, i, a[i], b[i]))
ins = json.load(open("%s/%s.inspect.json" % (work, tag)))
ops = {o["name"]: o for o in ins["ops"]}
lin, conv = ops["classifier.0"], ops["features.0"]
if not lin["float_path"] or lin["dynamic"] != (quant == "w8") or lin["weight_dtype"] != ("int8" if quant == "w8" else "float16"):
    fail.append("inspect classifier.0: %s" % lin)
want_conv = ("int8" if quant == "w8" else "float16") if layers == "all" else "float32"
if conv["weight_dtype"] != want_conv:
    fail.append("inspect features.0 weight_dtype %s, expected %s" % (conv["weight_dtype"], want_conv))
if quant == "w8" and lin["act_quant"] != act:
    fail.append("inspect act_quant %s, expected %s" % (lin["act_quant"], act))
print("%s: accuracy %.4f (float %.4f), eval==run %s/%s, numpy identical" % (
    tag, ptq["test_accuracy"], ptq["float_test_accuracy"], ev["top1_agreement"], ev["logit_agreement"]))
if fail:
    print("FAIL %s: %s" % (tag, "; ".join(fail)))
    sys.exit(1)
PY
done
