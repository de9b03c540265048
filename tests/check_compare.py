#!/usr/bin/env python3
"""Checks the output of `qat compare --json` (tests/test_compare.sh).

    check_compare.py QAT DATA_DIR STDOUT_FILE OUT_DIR

- STDOUT_FILE holds exactly one JSON object (nothing else but whitespace)
  with the keys docs/REPORT.md lists, and OUT_DIR/results.json equals it;
- OUT_DIR holds report.html, sensitivity.csv and one
  layers-<spec>-<method>-<calib>.csv per run, whose rows are the run's layers;
- every exported run's int8 model, evaluated again by `qat eval --json`, has
  test_accuracy exactly equal to the run's int8_test_accuracy;
- the sensitivity ranking (at w2a8) puts the damaged unit classifier.2 first,
  far ahead of every other unit.
Python standard library only. Prints the problems and exits 1 if any.
"""
import csv
import json
import os
import subprocess
import sys

TOP_KEYS = ["model", "from", "out_dir", "threads", "test_images", "val_images", "calib_images", "qat_epochs",
            "float_val_accuracy", "float_test_accuracy", "float_bytes", "float_history", "specs", "runs",
            "sensitivity_spec", "sensitivity", "budget_bytes", "overrides_file", "overrides", "seconds"]
RUN_KEYS = ["spec", "method", "calib", "val_accuracy", "test_accuracy", "test_accuracy_drop", "chosen", "exported",
            "int8_test_accuracy", "int8_images_per_s", "top1_agreement", "logit_agreement", "max_logit_diff_steps",
            "float32_graph_top1_agreement", "float32_graph_logit_agreement", "model_bytes", "compression_vs_float", "file_bytes", "seconds", "file", "int8_file", "layers", "history"]
SENS_KEYS = ["rank", "unit", "val_accuracy", "accuracy_drop", "sqnr_db", "weight_params"]
DAMAGED = "classifier.2"

problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def main():
    qat, data, stdout_file, out_dir = sys.argv[1:5]
    text = open(stdout_file, encoding="utf-8").read()
    try:
        obj, end = json.JSONDecoder().raw_decode(text.lstrip())
    except ValueError as e:
        print(f"FAIL: {stdout_file}: stdout is not JSON: {e}")
        return 1
    check(text.lstrip()[end:].strip() == "", f"{stdout_file}: text after the JSON object")
    if not check(isinstance(obj, dict), "stdout is not a JSON object"):
        return report()

    for k in TOP_KEYS:
        check(k in obj, f"results: missing key {k}")
    check(obj.get("model") == "lenet5", f"model {obj.get('model')!r}, expected 'lenet5'")
    check(obj.get("specs") == ["w8a8", "w2a8"], f"specs {obj.get('specs')}")
    check(obj.get("val_images") == 200 and obj.get("calib_images") == 256 and obj.get("threads") == 2,
          "val_images/calib_images/threads do not echo --val 200 --calib-size 256 --threads 2")
    fa = obj.get("float_test_accuracy")
    check(isinstance(fa, (int, float)) and 0.2 < fa <= 1, f"float_test_accuracy {fa}")

    with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
        check(json.load(f) == obj, "results.json differs from --json stdout")
    for name in ("report.html", "sensitivity.csv"):
        check(os.path.getsize(os.path.join(out_dir, name)) > 0, f"{name} missing or empty")

    runs = obj.get("runs", [])
    # 2 specs x (2 PTQ calibrators + 1 QAT)
    check(len(runs) == 6, f"{len(runs)} runs, expected 6")
    csvs = sorted(n for n in os.listdir(out_dir) if n.startswith("layers-") and n.endswith(".csv"))
    check(len(csvs) == len(runs), f"{len(csvs)} layers-*.csv files for {len(runs)} runs: {csvs}")
    n_exported = 0
    for i, run in enumerate(runs):
        tag = f"runs[{i}]"
        missing = [k for k in RUN_KEYS if k not in run]
        if not check(not missing, f"{tag}: missing keys {missing}"):
            continue
        tag = f"runs[{i}] {run['spec']} {run['method']} {run['calib']}"
        check(run["method"] in ("ptq", "qat"), f"{tag}: method")
        check(run["method"] != "ptq" or run["calib"] in ("minmax", "mse"), f"{tag}: calib")
        check(isinstance(run["model_bytes"], int) and run["model_bytes"] > 0, f"{tag}: model_bytes")
        check(isinstance(run["seconds"], (int, float)) and run["seconds"] >= 0, f"{tag}: seconds")
        check(0 <= run["test_accuracy"] <= 1 and 0 <= run["val_accuracy"] <= 1, f"{tag}: accuracies")
        layers = run["layers"]
        check(len(layers) > 0 and all({"name", "cosine", "sqnr_db", "mse"} <= set(l) for l in layers),
              f"{tag}: layers")
        path = os.path.join(out_dir, f"layers-{run['spec']}-{run['method']}-{run['calib']}.csv")
        if check(os.path.exists(path), f"{tag}: no {path}"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            check(rows and rows[0] == ["name", "cosine", "sqnr_db", "mse"], f"{path}: header {rows[:1]}")
            check([r[0] for r in rows[1:]] == [l["name"] for l in layers], f"{path}: units differ from the run's layers")
        if run["exported"] is True:
            n_exported += 1
            for k in ("int8_test_accuracy", "top1_agreement", "logit_agreement", "int8_file"):
                check(run[k] is not None, f"{tag}: exported but {k} is null")
            if run["int8_file"] is None:
                continue
            # the fake-quant model evaluated on the integer grid is what the runtime computes
            check(run["top1_agreement"] == 1 and run["logit_agreement"] == 1 and run["max_logit_diff_steps"] == 0,
                  f"{tag}: agreement {run['top1_agreement']} {run['logit_agreement']} {run['max_logit_diff_steps']}")
            check(run["float32_graph_logit_agreement"] is not None and run["float32_graph_logit_agreement"] >= 0.99,
                  f"{tag}: float32_graph_logit_agreement {run['float32_graph_logit_agreement']}")
            p = subprocess.run([qat, "eval", run["int8_file"], "--data", data, "--json"],
                               capture_output=True, text=True)
            if not check(p.returncode == 0, f"{tag}: qat eval {run['int8_file']} failed: {p.stderr.strip()}"):
                continue
            ev = json.loads(p.stdout)
            check(ev.get("format") == "int8-model", f"{tag}: qat eval format {ev.get('format')}")
            check(ev.get("test_accuracy") == run["int8_test_accuracy"],
                  f"{tag}: qat eval test_accuracy {ev.get('test_accuracy')} != int8_test_accuracy "
                  f"{run['int8_test_accuracy']}")
        else:
            check(run["exported"] is False, f"{tag}: exported {run['exported']!r}")
            for k in ("int8_test_accuracy", "top1_agreement", "logit_agreement", "int8_file"):
                check(run[k] is None, f"{tag}: not exported but {k} = {run[k]!r}")
    # the chosen PTQ calibrator and QAT of each spec are exported
    check(n_exported == 4, f"{n_exported} exported runs, expected 4")

    sens = obj.get("sensitivity", [])
    check(obj.get("sensitivity_spec") == "w2a8", f"sensitivity_spec {obj.get('sensitivity_spec')!r}")
    if check(len(sens) >= 2, f"sensitivity has {len(sens)} entries"):
        for i, s in enumerate(sens):
            missing = [k for k in SENS_KEYS if k not in s]
            check(not missing, f"sensitivity[{i}]: missing keys {missing}")
            check(s.get("rank") == i + 1, f"sensitivity[{i}]: rank {s.get('rank')}")
        check(sens[0].get("unit") == DAMAGED,
              f"most sensitive unit {sens[0].get('unit')!r}, expected the damaged {DAMAGED!r}: {sens}")
        d0, d1 = sens[0].get("accuracy_drop", 0), sens[1].get("accuracy_drop", 0)
        check(d0 >= 0.15 and d0 >= d1 + 0.1, f"damaged unit drop {d0} not far above the next ({d1})")
        check(sorted((s["accuracy_drop"] for s in sens), reverse=True) == [s["accuracy_drop"] for s in sens],
              "sensitivity not sorted by accuracy_drop")
    return report(obj)


def report(obj=None):
    if problems:
        for p in problems:
            print("FAIL:", p)
        return 1
    s = obj["sensitivity"][0]
    print(f"compare ok: {len(obj['runs'])} runs, float test {obj['float_test_accuracy']}, "
          f"most sensitive {s['unit']} (drop {s['accuracy_drop']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
