#!/bin/sh
# `qat inspect --json` on every kind of file it accepts: the committed int8
# model, a float checkpoint and a PTQ checkpoint trained here, and the int8
# export of the latter (w4a8: its weights packed at 4 bits; the encoding,
# bits, stored bytes and the payload against dense int8 are checked). stdout must be exactly one JSON object; checked with
# python3's json module: op/layer/unit counts, types, inputs, bits, scale
# ranges, payload_bytes (== `qat eval --json` for int8 models; == the h5py
# sum when h5py is there) and file_bytes (== the file's size).
# Usage: test_inspect.sh QAT_BINARY [DATA_DIR]; PYTHON = python3.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 QAT_BINARY [DATA_DIR]" >&2
    exit 2
fi
qat=$1
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/data/fashion-mnist-small}
python=${PYTHON:-/usr/bin/python3}
int8=$here/data/lenet5-small.int8.h5

work=$(mktemp -d "${TMPDIR:-/tmp}/test_inspect.XXXXXX")
trap 'rm -rf "$work"' EXIT

run() { # OUT CMD...: stdout to OUT, stderr shown on failure
    out=$1
    shift
    "$@" >"$out" 2>"$work/err" || {
        echo "FAIL: $*" >&2
        cat "$work/err" >&2
        exit 1
    }
}

opts="--data $data --val 100 --limit-train 600 --limit-test 100 --threads 2"
# shellcheck disable=SC2086
run /dev/null "$qat" train --model lenet5 --epochs 1 $opts --out "$work/f.h5"
# shellcheck disable=SC2086
run /dev/null "$qat" ptq --from "$work/f.h5" --quant w4a8 --calib minmax --calib-size 64 $opts --out "$work/p.h5"
run /dev/null "$qat" export --from "$work/p.h5" --out "$work/p.int8.h5"

for f in "$int8" "$work/f.h5" "$work/p.h5" "$work/p.int8.h5"; do
    b=$(basename "$f")
    run "$work/$b.json" "$qat" inspect "$f" --json
    run "$work/$b.txt" "$qat" inspect "$f"
done
for f in "$int8" "$work/p.int8.h5"; do
    run "$work/$(basename "$f").eval.json" "$qat" eval "$f" --data "$data" --limit-test 100 --threads 2 --json
done

# usage errors: no file, an unknown option
for args in "" "--bogus $int8"; do
    # shellcheck disable=SC2086
    if "$qat" inspect $args >/dev/null 2>&1; then
        echo "FAIL: qat inspect $args succeeded" >&2
        exit 1
    fi
done

"$python" - "$work" "$int8" <<'PY'
import json, os, sys

work, int8 = sys.argv[1], sys.argv[2]
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)


def load(path):
    with open(path) as fh:
        text = fh.read()
    return json.loads(text)  # exactly one JSON value: extra output fails here


def common(d, path, fmt):
    check(d["command"] == "inspect", f"{path}: command")
    check(d["format"] == fmt, f"{path}: format {d['format']}")
    check(d["file_bytes"] == os.path.getsize(path), f"{path}: file_bytes {d['file_bytes']}")
    check(0 < d["payload_bytes"] < d["file_bytes"], f"{path}: payload_bytes {d['payload_bytes']}")
    try:
        import h5py
    except ImportError:
        return
    total = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: total.append(o.size * o.dtype.itemsize) if isinstance(o, h5py.Dataset) else None)
    check(d["payload_bytes"] == sum(total), f"{path}: payload_bytes {d['payload_bytes']} != h5py {sum(total)}")


def int8_model(path, jname, wbits):
    d = load(os.path.join(work, jname + ".json"))
    e = load(os.path.join(work, jname + ".eval.json"))
    common(d, path, "int8-model")
    check(d["payload_bytes"] == e["payload_bytes"],
          f"{path}: payload_bytes {d['payload_bytes']} != eval's {e['payload_bytes']}")
    check(d["model"] == "lenet5", f"{path}: model")
    ops = d["ops"]
    check(d["num_ops"] == len(ops) == 9, f"{path}: {len(ops)} ops")
    check([o["index"] for o in ops] == list(range(9)), f"{path}: op indices")
    check([o["type"] for o in ops] == ["input", "conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten",
                                       "linear", "linear", "linear"], f"{path}: op types")
    check(ops[0]["inputs"] == [] and all(o["inputs"] == [i - 1] for i, o in enumerate(ops) if i),
          f"{path}: op inputs")
    check(ops[1]["output_shape"] == [6, 28, 28] and ops[5]["output_shape"] == [400], f"{path}: output shapes")
    check(ops[6]["name"] == "classifier.0", f"{path}: op 6 name")
    for o in ops:
        weighted = o["type"] in ("conv2d", "linear")
        check(o["act_bits"] == 8, f"{path}: op {o['index']} act_bits {o['act_bits']}")
        check(o["weight_bits"] == (wbits if weighted else None), f"{path}: op {o['index']} weight_bits")
        check(-128 <= o["out_zero_point"] <= 127 and o["out_scale"] > 0, f"{path}: op {o['index']} output grid")
        if weighted:
            ws, m, s = o["weight_scale"], o["multiplier"], o["shift"]
            check(0 < ws["min"] <= ws["max"], f"{path}: op {o['index']} weight_scale {ws}")
            check(2**30 <= m["min"] <= m["max"] < 2**31, f"{path}: op {o['index']} multiplier {m}")
            check(-31 <= s["min"] <= s["max"] <= 30, f"{path}: op {o['index']} shift {s}")
            check(o["weight_bytes"] > 0, f"{path}: op {o['index']} weight_bytes")
        else:
            check(o["weight_scale"] is None and o["multiplier"] is None and o["weight_bytes"] == 0,
                  f"{path}: op {o['index']} has weights")
    # weight encodings: the committed version-1 model is int8, a w4a8
    # export is packed at 4 bits (docs/FORMAT-int8.md, "Weight encodings")
    counts = {1: 150, 3: 2400, 6: 48000, 7: 10080, 8: 840}
    for o in ops:
        if o["type"] not in ("conv2d", "linear"):
            check(o["weight_encoding"] is None and o["weight_stored_bytes"] == 0, f"{path}: op {o['index']} encoding")
            continue
        n = counts[o["index"]]
        check(o["weight_count"] == n, f"{path}: op {o['index']} weight_count {o['weight_count']}")
        check(o["weight_encoding"] == ("int8" if wbits == 8 else "packed"), f"{path}: op {o['index']} encoding")
        check(o["stored_weight_bits"] == wbits, f"{path}: op {o['index']} stored_weight_bits")
        check(o["weight_stored_bytes"] == (n * wbits + 7) // 8, f"{path}: op {o['index']} weight_stored_bytes")
        check(o["codebook_k"] is None and o["hash_seed"] is None, f"{path}: op {o['index']} codebook/seed")
    stored = sum(o["weight_stored_bytes"] for o in ops)
    check(d["weight_stored_bytes"] == stored and d["weight_count"] == sum(counts.values()), f"{path}: weight totals")
    check(d["payload_dense_int8_bytes"] == d["payload_bytes"] - stored + sum(counts.values()),
          f"{path}: payload_dense_int8_bytes {d['payload_dense_int8_bytes']}")
    if wbits < 8:
        check(d["payload_bytes"] <= 0.55 * d["payload_dense_int8_bytes"], f"{path}: w4 payload not <= 55% of dense")
    # conv features.0: 6x1x5x5 int8 weights + 6 x int32 bias, multiplier, shift
    check(ops[1]["weight_bytes"] == 150 + 3 * 6 * 4, f"{path}: op 1 weight_bytes {ops[1]['weight_bytes']}")
    # the table has an inputs column
    with open(os.path.join(work, jname + ".txt")) as fh:
        lines = fh.read().splitlines()
    head = next(l for l in lines if l.startswith("op "))
    check(head.split()[:4] == ["op", "name", "type", "inputs"], f"{path}: table header {head}")


def checkpoint(path, fmt):
    d = load(os.path.join(work, os.path.basename(path) + ".json"))
    common(d, path, fmt)
    layers = d["layers"]
    check(len(layers) == 15 and layers[0]["type"] == "input", f"{path}: layers")
    c0 = layers[1]
    check(c0["name"] == "features.0" and c0["type"] == "conv2d" and c0["inputs"] == [0]
          and c0["output_shape"] == [6, 28, 28], f"{path}: layer 1 {c0}")
    check(c0["params"] == [{"name": "features.0.weight", "shape": [6, 1, 5, 5]}], f"{path}: layer 1 params")
    check(layers[10]["params"][0]["shape"] == [120, 400], f"{path}: classifier.0 weight shape")
    check(d["parameters"] == sum(l["param_count"] for l in layers) == 61728, f"{path}: parameters")
    check(d["float_bytes"] == 4 * d["parameters"], f"{path}: float_bytes")
    return d


checkpoint(os.path.join(work, "f.h5"), "float-checkpoint")
p = checkpoint(os.path.join(work, "p.h5"), "qat-checkpoint")
check(p["recipe"]["method"] == "ptq" and p["recipe"]["spec"] == "w4a8", "p.h5: recipe")
units = p["units"]
check([u["name"] for u in units] == ["input", "features.0", "features.4", "classifier.0", "classifier.2",
                                     "classifier.4"], "p.h5: unit names")
for u in units:
    conv = u["kind"] == "conv"
    check(u["act_bits"] == 8 and u["weight_bits"] == (4 if conv else None), f"p.h5: unit {u['name']} bits")
    if conv:
        w = u["weight"]
        check(w["bits"] == 4 and w["qmax"] == 7 and 0 < w["scale"]["min"] <= w["scale"]["max"],
              f"p.h5: unit {u['name']} weight {w}")
    check(u["act"]["scale"]["min"] > 0, f"p.h5: unit {u['name']} act scale")
f0 = units[1]
check(f0["layers"] == {"head": 1, "last": 3, "bn": 2, "relu": 3} and f0["weight"]["channels"] == 6,
      f"p.h5: features.0 unit {f0}")

int8_model(int8, os.path.basename(int8), 8)
int8_model(os.path.join(work, "p.int8.h5"), "p.int8.h5", 4)

if fails:
    for f in fails:
        print("FAIL:", f, file=sys.stderr)
    sys.exit(1)
print("inspect --json: all checks passed")
PY
