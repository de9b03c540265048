#!/usr/bin/python3
"""qat against PyTorch on this machine: one command, one JSON object.

Runs, interleaved and repeated (medians reported), for each model:
  - float training images/s, batch 128, 2 threads: `qat train` vs the
    peer (bench/peer_pytorch.py --float-only: PyTorch eager mode, the same
    models and recipe, docs/MODELS.md), same images;
  - QAT step cost: `qat train --from F --quant w8a8 / w4a4` images/s over
    the float step, and the same for --qat-specs (default w1a8, wc16a8,
    fp16: binary, clustered and fp16 QAT);
  - int8 inference of the exported W8A8 QAT model (bench_runtime --file:
    images/s at batch 128, batch-1 latency, multiply-adds per second and
    their share of the VNNI peak measured on this machine; peer:
    --bench-only, oneDNN int8) and fp32 inference (bench_train);
  - peak RSS of `qat train` vs the peer's training.
Usage: bench/run_bench.py [--models lenet5,convnet] [--reps 3] [--limit-train N]
                          [--native-blas | --both-blas] [--isa avx2] [--no-peer] [--out FILE]
--limit-train: training images read, the first N of the file, of which both
sides hold out 1,000 for validation (--val 1000) and train on the rest;
default: 55,000 for mlp and lenet5 (an epoch of 12,800 lasts a third of a
second, too short to time on a shared machine), 12,800 for convnet and
resnet8.
--native-blas unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for both sides;
--both-blas runs everything both ways and prints {"env": ..., "native": ...}.
--isa avx2 caps both sides at AVX2 + FMA, to measure on an AVX-512 machine
what an AVX2-only CPU (e.g. AMD Zen 3) runs: qat's engine (QAT_SIMD=1) and
int8 runtime (bench_runtime --isa avx2), PyTorch's oneDNN
(ONEDNN_MAX_CPU_ISA=AVX2, no AVX-VNNI) and, for both, OpenBLAS
(OPENBLAS_CORETYPE=Haswell).
Build first (scripts/bench.sh does both)."""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
QAT = os.path.join(ROOT, "build", "tools", "qat")
BENCH_TRAIN = os.path.join(ROOT, "build", "bench", "bench_train")
BENCH_RT = os.path.join(ROOT, "build", "bench", "bench_runtime")
PEER = os.path.join(HERE, "peer_pytorch.py")


def run(cmd, env, timeout=3600):
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit("failed: " + " ".join(cmd))
    return p.stdout, time.time() - t


def qat_json(args, env):
    out, _ = run(["/usr/bin/time", "-f", "RSS %M"] + [QAT] + args + ["--json"], env)
    return json.loads(out)


def peak_rss_kib(cmd, env):
    p = subprocess.run(["/usr/bin/time", "-f", "RSS %M"] + cmd, env=env, capture_output=True, text=True)
    m = re.findall(r"RSS (\d+)", p.stderr)
    return int(m[-1]) if m else None


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def ratio(a, b):
    return a / b if a and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,lenet5,convnet,resnet8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--native-blas", action="store_true")
    ap.add_argument("--both-blas", action="store_true")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--qat-specs", default="w1a8,wc16a8,fp16",
                    help="QAT specs timed besides w8a8 and w4a4 (step cost over float), '' for none")
    a = ap.parse_args()
    if a.both_blas:
        both = {}
        for native in (False, True):
            a.native_blas = native
            both["native" if native else "env"] = bench(a)
        s = json.dumps(both, indent=1)
        print(s)
        if a.out:
            open(a.out, "w").write(s + "\n")
        return
    R = bench(a)
    s = json.dumps(R, indent=1)
    print(s)
    if a.out:
        open(a.out, "w").write(s + "\n")


def bench(a):
    env = dict(os.environ)
    if a.native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    rt_isa = []
    if a.isa == "avx2":
        env.update(OPENBLAS_CORETYPE="Haswell", QAT_SIMD="1")
        rt_isa = ["--isa", "avx2"]
    penv = dict(env, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS="1")
    if a.isa == "avx2":
        penv["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    tmp = tempfile.mkdtemp(prefix="qat-bench-")
    limits = {m: a.limit_train or (55000 if m in ("mlp", "lenet5") else 12800) for m in a.models.split(",")}
    R = {"machine": os.uname().nodename, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
         "threads": a.threads, "reps": a.reps, "limit_train": limits,
         "openblas_coretype": env.get("OPENBLAS_CORETYPE", "(unset: native)"), "isa_cap": a.isa, "models": {}}
    cfg, _ = run([BENCH_TRAIN, "--models", "mlp", "--steps", "2", "--reps", "1", "--threads", "1"], env)
    R["openblas"] = json.loads(cfg).get("openblas")
    R["engine"] = json.loads(cfg).get("engine")  # qat's float kernels (avx512 / avx2 / portable)
    R["peer_onednn_max_isa"] = penv.get("ONEDNN_MAX_CPU_ISA", "(unset: best)")
    for model in a.models.split(","):
        common = ["--threads", str(a.threads), "--limit-train", str(limits[model]), "--val", "1000",
                  "--limit-test", "2000"]
        M = {"qat": {}, "peer": {}}
        fl = os.path.join(tmp, model + "-float.h5")
        run([QAT, "train", "--model", model, "--epochs", "1", "--out", fl] + common, env)
        q8, q4 = os.path.join(tmp, model + "-w8a8.h5"), os.path.join(tmp, model + "-w4a4.h5")
        i8 = os.path.join(tmp, model + ".int8.h5")
        sd = os.path.join(tmp, model + ".pt")
        tr, trq8, trq4, rss, ips8, peer_tr, peer_rss, peer_i8, peer_fp32 = ([] for _ in range(9))
        extra = [x for x in a.qat_specs.split(",") if x]
        trx = {x: [] for x in extra}
        lat8, share8, peer_lat8, peer_lat32 = [], [], [], []
        rt_info = {}
        for rep in range(a.reps):
            # interleaved: ours, then the peer, each rep
            j = qat_json(["train", "--model", model, "--epochs", "1", "--out", os.path.join(tmp, "x.h5")] + common, env)
            tr.append(j["train_images_per_s"])
            rss.append(peak_rss_kib([QAT, "train", "--model", model, "--epochs", "1", "--out",
                                     os.path.join(tmp, "y.h5"), "--json"] + common, env))
            j = qat_json(["train", "--from", fl, "--quant", "w8a8", "--epochs", "2", "--out", q8] + common, env)
            trq8.append(j["train_images_per_s"])
            j = qat_json(["train", "--from", fl, "--quant", "w4a4", "--epochs", "2", "--out", q4] + common, env)
            trq4.append(j["train_images_per_s"])
            for x in extra:  # the other quantization methods' QAT step
                j = qat_json(["train", "--from", fl, "--quant", x, "--epochs", "2", "--out",
                              os.path.join(tmp, model + "-" + x + ".h5")] + common, env)
                trx[x].append(j["train_images_per_s"])
            run([QAT, "export", "--from", q8, "--out", i8], env)
            out, _ = run([BENCH_RT, "--file", i8, "--threads", str(a.threads), "--seconds", "2"] + rt_isa, env)
            J = json.loads(out)
            best = J["models"][0]["isas"][-1]  # the fastest kernel family this CPU runs
            ips8.append(best["images_per_s"])
            lat8.append(best["batch1_latency_us"])
            share8.append(best["vnni_peak_share"])
            rt_info = {"isa": best["isa"], "macs_per_image": J["models"][0]["macs_per_image"],
                       "vnni_peak_gmacs": J["models"][0]["vnni_peak_gmacs"]}
            if not a.no_peer:
                pj = os.path.join(tmp, "peer.json")
                # the same training images as `qat train` (--limit-train, --val 1000)
                run(["/usr/bin/python3", PEER, "--model", model, "--epochs", "1", "--float-only",
                     "--threads", str(a.threads), "--limit-train", str(limits[model]), "--val", "1000",
                     "--save-float", sd, "--out", pj], penv)
                P = json.load(open(pj))
                peer_tr.append(P["float"]["train_images_per_s_median"])
                peer_rss.append(P["float"].get("peak_rss_train_bytes", 0) / 1024 or None)
                if rep == 0 or True:
                    run(["/usr/bin/python3", PEER, "--model", model, "--load-float", sd, "--bench-only",
                         "--threads", str(a.threads), "--lat-iters", "200", "--out", pj], penv)
                    P = json.load(open(pj))
                    inf = P["inference"]
                    peer_fp32.append(inf["fp32"]["throughput_images_per_s"])
                    peer_lat32.append(inf["fp32"].get("latency_b1_median_us"))
                    k8 = [k for k in inf if k.startswith("int8")][0]
                    peer_i8.append(inf[k8]["throughput_images_per_s"])
                    peer_lat8.append(inf[k8].get("latency_b1_median_us"))
        bt, _ = run([BENCH_TRAIN, "--models", model, "--threads", str(a.threads), "--reps", str(a.reps)], env)
        B = json.loads(bt)
        b = B["models"][model] if "models" in B else B.get(model, {})
        M["qat"] = {"train_images_per_s": med(tr), "qat_w8a8_images_per_s": med(trq8),
                    "qat_w4a4_images_per_s": med(trq4),
                    "qat_w8a8_step_cost_vs_float": ratio(med(tr), med(trq8)),
                    "qat_w4a4_step_cost_vs_float": ratio(med(tr), med(trq4)),
                    "int8_images_per_s": med(ips8),
                    "int8_batch1_latency_us": med(lat8),
                    "int8_isa": rt_info.get("isa"),
                    "int8_macs_per_image": rt_info.get("macs_per_image"),
                    "int8_vnni_peak_share": med(share8),
                    "vnni_peak_gmacs": rt_info.get("vnni_peak_gmacs"),
                    "fp32_infer_images_per_s": b.get("infer_images_per_s"),
                    "fp32_batch1_latency_us": b.get("latency_us"),
                    "int8_vs_own_fp32": ratio(med(ips8), b.get("infer_images_per_s")),
                    "peak_rss_mib": med(rss) / 1024 if med(rss) else None,
                    "runs_train_images_per_s": tr,
                    "runs_qat_w8a8_images_per_s": trq8, "runs_qat_w4a4_images_per_s": trq4,
                    "qat_other_specs": {x: {"images_per_s": med(trx[x]),
                                            "step_cost_vs_float": ratio(med(tr), med(trx[x])),
                                            "runs_images_per_s": trx[x]} for x in extra}}
        if not a.no_peer:
            M["peer"] = {"train_images_per_s": med(peer_tr), "int8_images_per_s": med(peer_i8),
                         "int8_batch1_latency_us": med(peer_lat8),
                         "fp32_infer_images_per_s": med(peer_fp32),
                         "fp32_batch1_latency_us": med(peer_lat32),
                         "peak_rss_mib": med(peer_rss) / 1024 if med(peer_rss) else None,
                         "runs_train_images_per_s": peer_tr}
            pairs = [ratio(x, y) for x, y in zip(tr, peer_tr)]
            M["ratios"] = {"train_vs_peer": ratio(med(tr), med(peer_tr)),
                           "train_vs_peer_pairs": pairs,
                           "train_vs_peer_median_of_pairs": med(pairs),
                           "int8_vs_peer_int8": ratio(med(ips8), med(peer_i8)),
                           "int8_latency_peer_over_qat": ratio(med(peer_lat8), med(lat8)),
                           "peak_rss_vs_peer": ratio(med(rss), med(peer_rss))}
        R["models"][model] = M
        sys.stderr.write(json.dumps({model: M.get("ratios", M["qat"])}) + "\n")
    return R


if __name__ == "__main__":
    main()
