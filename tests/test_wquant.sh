#!/bin/sh
# The quantization methods of docs/QUANT.md sections 14-15 end to end on the
# shipped data subset: train a tiny lenet5 (1 epoch), `qat ptq` at w8a8,
# w1a8 (binary), wc16a8 (clustered), w8a8 with hashed dense layers, fp16 and
# bf16, `qat export`, then for each
#   - `qat eval EXPORTED CHECKPOINT`: the runtime against the fake-quant
#     model: 100% top-1 and 100% identical logits (int8 or float32);
#   - `qat run` against the independent numpy runner (tests/int8_runner.py,
#     written from docs/FORMAT-int8.md): identical logits;
#   - `qat inspect --json`: the weight encodings / float path the spec needs,
#     and the payload bars of issue 14 (w1a8 <= 20%, wc16a8 <= 60% of w8a8).
# Usage: test_wquant.sh QAT_BINARY [DATA_DIR]
set -eu
qat=$1
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/data/fashion-mnist-small}
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/test_wquant.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$qat" train --model lenet5 --epochs 1 --data "$data" --val 200 --threads 2 --out "$work/f.h5" >/dev/null 2>&1

for variant in "w8a8 w8a8" "w1a8 w1a8" "wc16a8 wc16a8" "wh w8a8 --override classifier.0=wh64a8 --override classifier.2=wh64a8" \
    "fp16 fp16" "bf16 bf16"; do
    set -- $variant
    tag=$1
    shift
    spec=$1
    shift
    "$qat" ptq --from "$work/f.h5" --quant "$spec" "$@" --calib minmax --calib-size 256 --data "$data" --val 200 \
        --out "$work/$tag.h5" --json >"$work/$tag.ptq.json" 2>/dev/null
    "$qat" export --from "$work/$tag.h5" --out "$work/$tag.int8.h5" >/dev/null
    "$qat" eval "$work/$tag.int8.h5" "$work/$tag.h5" --data "$data" --json >"$work/$tag.eval.json" 2>/dev/null
    "$qat" run "$work/$tag.int8.h5" "$data/t10k-images-idx3-ubyte.gz" --save-logits "$work/$tag.qat.npy" >/dev/null
    "$python" "$here/int8_runner.py" "$work/$tag.int8.h5" "$data/t10k-images-idx3-ubyte.gz" "$work/$tag.py.npy"
    "$qat" inspect "$work/$tag.int8.h5" --json >"$work/$tag.inspect.json"
done

"$python" - "$work" <<'PY'
import json, sys
import numpy as np
work = sys.argv[1]
fail = []
def load(tag, what):
    return json.load(open("%s/%s.%s.json" % (work, tag, what)))
payload = {}
for tag in ["w8a8", "w1a8", "wc16a8", "wh", "fp16", "bf16"]:
    ptq, ev, ins = load(tag, "ptq"), load(tag, "eval"), load(tag, "inspect")
    if ev["top1_agreement"] != 1.0 or ev["logit_agreement"] != 1.0:
        fail.append("%s: runtime vs fake-quant top-1 %s, identical logits %s" % (tag, ev["top1_agreement"], ev["logit_agreement"]))
    a = np.load("%s/%s.qat.npy" % (work, tag))
    b = np.load("%s/%s.py.npy" % (work, tag))
    if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
        fail.append("%s: qat run and the numpy runner differ (%s %s vs %s %s)" % (tag, a.dtype, a.shape, b.dtype, b.shape))
    ops = {o["name"]: o for o in ins["ops"]}
    payload[tag] = ins["payload_bytes"]
    conv, fc = ops["features.0"], ops["classifier.0"]
    want = {"w8a8": ("int8", 8), "w1a8": ("packed", 1), "wc16a8": ("codebook", 4), "wh": ("int8", 8)}
    if tag in want and (conv.get("weight_encoding"), conv.get("weight_bits")) != want[tag]:
        fail.append("%s: features.0 stored as %s/%s, expected %s" % (tag, conv.get("weight_encoding"), conv.get("weight_bits"), want[tag]))
    if tag == "wh" and (fc.get("weight_encoding") != "hashed" or fc.get("codebook_k") != 64):
        fail.append("wh: classifier.0 stored as %s K=%s" % (fc.get("weight_encoding"), fc.get("codebook_k")))
    if tag in ("fp16", "bf16"):
        d = "float16" if tag == "fp16" else "bfloat16"
        if not fc.get("float_path") or fc.get("weight_dtype") != d or fc.get("dtype") != d:
            fail.append("%s: classifier.0 %s" % (tag, {k: fc.get(k) for k in ("float_path", "dtype", "weight_dtype")}))
        if abs(ptq["test_accuracy"] - ptq["float_test_accuracy"]) > 0.005:
            fail.append("%s: accuracy %s vs float %s" % (tag, ptq["test_accuracy"], ptq["float_test_accuracy"]))
    print("%-7s accuracy %.4f (float %.4f), payload %6d bytes, runtime == fake-quant, qat run == numpy" % (
        tag, ptq["test_accuracy"], ptq["float_test_accuracy"], payload[tag]))
if payload["w1a8"] > 0.20 * payload["w8a8"]:
    fail.append("w1a8 payload %d > 20%% of w8a8's %d" % (payload["w1a8"], payload["w8a8"]))
if payload["wc16a8"] > 0.60 * payload["w8a8"]:
    fail.append("wc16a8 payload %d > 60%% of w8a8's %d" % (payload["wc16a8"], payload["w8a8"]))
if fail:
    print("FAIL: " + "; ".join(fail))
    sys.exit(1)
PY
