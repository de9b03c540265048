#!/usr/bin/python3
"""qat's dynamic quantization against PyTorch's quantize_dynamic, same run.

For each float checkpoint (mlp, lenet5: `qat train`), for w8 (PyTorch qint8)
and fp16 (PyTorch float16):
  - qat: `qat ptq --dynamic` + `qat export`, accuracy from `qat eval` of the
    exported file (the runtime), throughput from bench_runtime --file
    (batch 128 images/s and batch-1 latency, median of its 7 repeats);
  - PyTorch 1.13: the same weights loaded into the peer's module
    (bench/peer_pytorch.py names), BN folded as qat folds it (eval mode),
    torch.quantization.quantize_dynamic({nn.Linear}, dtype), accuracy on the
    test set in batches of 256 and throughput at batch 128 and 1.
Timings alternate qat / PyTorch in PAIRS rounds; the medians are reported
(the machine is shared: single runs swing). One JSON object on stdout.

Usage: bench_dynamic.py QAT BENCH_RUNTIME DATA_DIR OUT_DIR CKPT.h5 [CKPT.h5 ...]
       [--threads N] [--pairs P]
"""

import json
import os
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_pytorch as peer  # noqa: E402


def log(msg):
    sys.stderr.write("bench_dynamic: %s\n" % msg)
    sys.stderr.flush()


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()
    return json.loads(out)


def torch_model(ckpt):
    """The checkpoint's float model as the peer's module, in eval mode."""
    with h5py.File(ckpt, "r") as f:
        arch = f.attrs["arch"]
        arch = arch.decode() if isinstance(arch, bytes) else str(arch)
        model = getattr(peer, arch)()
        sd = model.state_dict()
        for k in list(sd.keys()):
            grp = "/model/params/" + k if "/model/params/" + k in f else "/model/buffers/" + k
            if grp in f:
                sd[k] = torch.from_numpy(np.asarray(f[grp][()]).astype(sd[k].numpy().dtype)).reshape(sd[k].shape)
        model.load_state_dict(sd)
        g = f["/model"]
        mean = float(np.asarray(g.attrs.get("input_mean", 0.2860)))
        std = float(np.asarray(g.attrs.get("input_std", 0.3530)))
    model.eval()
    return arch, model, mean, std


def torch_bench(model, X, bs, seconds=1.0):
    xb = X[:bs]
    with torch.no_grad():
        for _ in range(5):
            model(xb)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(xb)
            n += 1
        dt = (time.perf_counter() - t0) / n
    return bs / dt, dt


def main(argv):
    threads, pairs, args = 1, 5, []
    i = 1
    while i < len(argv):
        if argv[i] == "--threads":
            threads = int(argv[i + 1])
            i += 2
        elif argv[i] == "--pairs":
            pairs = int(argv[i + 1])
            i += 2
        else:
            args.append(argv[i])
            i += 1
    if len(args) < 5:
        sys.stderr.write(__doc__)
        return 2
    qat, bench_rt, data, out_dir, ckpts = args[0], args[1], args[2], args[3], args[4:]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(threads)
    # the default engine (Debian's torch has onednn and qnnpack, no fbgemm)
    engine = torch.backends.quantized.engine
    images = peer.read_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"))
    labels = peer.read_idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    rows = []
    for ckpt in ckpts:
        arch, fmodel, mean, std = torch_model(ckpt)
        x = ((images.astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)).astype(np.float32)
        X = torch.from_numpy(x.reshape(-1, 1, 28, 28))
        with torch.no_grad():
            float_acc = float(np.mean(np.concatenate([fmodel(X[s:s + 256]).argmax(1).numpy()
                                                      for s in range(0, len(X), 256)]) == labels))
        for spec, dt in (("w8", torch.qint8), ("fp16", torch.float16)):
            base = os.path.join(out_dir, "%s-dyn-%s" % (arch, spec))
            log("%s %s: qat ptq --dynamic, export, eval" % (arch, spec))
            subprocess.run([qat, "ptq", "--from", ckpt, "--dynamic", "--quant", spec, "--out", base + ".h5",
                            "--data", data, "--threads", str(threads), "--json"], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run([qat, "export", "--from", base + ".h5", "--out", base + ".int8.h5", "--json"],
                           check=True, stdout=subprocess.DEVNULL)
            ev = run_json([qat, "eval", base + ".int8.h5", base + ".h5", "--data", data, "--threads",
                           str(threads), "--json"])
            try:
                tq = torch.quantization.quantize_dynamic(fmodel, {nn.Linear}, dtype=dt)
                with torch.no_grad():
                    t_acc = float(np.mean(np.concatenate([tq(X[s:s + 256]).argmax(1).numpy()
                                                          for s in range(0, len(X), 256)]) == labels))
                t_err = None
            except RuntimeError as e:  # Debian's torch: no FBGEMM, no fp16 dynamic linear
                tq, t_acc, t_err = None, None, str(e).splitlines()[0]
                log("%s %s: PyTorch cannot run it: %s" % (arch, spec, t_err))
            q128, q1, p128, p1 = [], [], [], []
            for r in range(pairs):
                log("%s %s: timing pair %d/%d" % (arch, spec, r + 1, pairs))
                b = run_json([bench_rt, "--file", base + ".int8.h5", "--threads", str(threads), "--seconds", "1",
                              "--isa", "avx512_vnni" if "avx512_vnni" in open("/proc/cpuinfo").read() else "ref"])
                isa = b["models"][0]["isas"][0]
                q128.append(isa["images_per_s"])
                q1.append(1e6 / isa["batch1_latency_us"])
                if tq is not None:
                    p128.append(torch_bench(tq, X, 128, 0.7)[0])
                    p1.append(torch_bench(tq, X, 1, 0.3)[0])
            row = {
                "model": arch, "spec": spec, "torch_dtype": str(dt),
                "float_accuracy_torch": float_acc,
                "qat_accuracy": ev["test_accuracy"], "qat_library_accuracy": ev["reference_test_accuracy"],
                "qat_top1_agreement_eval_vs_run": ev["top1_agreement"],
                "qat_identical_logits_eval_vs_run": ev["logit_agreement"],
                "torch_accuracy": t_acc, "torch_error": t_err,
                "qat_batch128_images_per_s": statistics.median(q128),
                "torch_batch128_images_per_s": statistics.median(p128) if p128 else None,
                "qat_batch1_images_per_s": statistics.median(q1),
                "torch_batch1_images_per_s": statistics.median(p1) if p1 else None,
                "pairs": pairs, "threads": threads,
            }
            if p128:
                row["speedup_batch128"] = row["qat_batch128_images_per_s"] / row["torch_batch128_images_per_s"]
                row["speedup_batch1"] = row["qat_batch1_images_per_s"] / row["torch_batch1_images_per_s"]
            rows.append(row)
            log(json.dumps(row))
    json.dump({"bench": "dynamic", "torch": torch.__version__, "engine": engine, "rows": rows}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
