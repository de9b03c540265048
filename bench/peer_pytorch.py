#!/usr/bin/python3
"""qat's PyTorch peer: the models and recipes of docs/MODELS.md in PyTorch
eager mode (torch.ao.quantization), to set qat's accuracy and speed beside
PyTorch's on the same images and the same machine.

Modes:
  (default)      float training, then PTQ (MinMax, moving-average MinMax and
                 PyTorch's histogram calibrators) and QAT for each --quant
                 spec; specs with 8-bit activations are also converted to
                 the int8 engine and run; inference speed of fp32 and int8.
  --float-only   float training and its test accuracy only (the training
                 speed that bench/run_bench.py sets beside `qat train`).
  --load-float F --bench-only
                 no training: fp32, BN-folded fp32 and int8 (W8A8 PTQ,
                 MinMax) inference speed of the float checkpoint F.

Results: one JSON object, written to --out, or to stdout without it;
progress goes to stderr. bench/run_bench.py reads
float.train_images_per_s_median, float.peak_rss_train_bytes and
inference.{fp32,int8_<engine>}.{throughput_images_per_s,
latency_b1_median_us}.

  /usr/bin/python3 bench/peer_pytorch.py --model lenet5 --epochs 5 --out lenet5.json
  /usr/bin/python3 bench/peer_pytorch.py --model convnet --epochs 1 --float-only --limit-train 12800

Written for Debian's python3-torch (1.13), which has the onednn and qnnpack
quantized engines but not fbgemm (--engine picks one; onednn by default).
Threads: --threads (default 2) sets torch's pool; OMP_NUM_THREADS defaults
to the same and OPENBLAS_NUM_THREADS to 1 (torch's float Linear calls
OpenBLAS, whose own pool would fight OpenMP's for the cores), both before
torch loads; set them in the environment to override.

Where the peer cannot follow qat exactly (different random number
generators, PyTorch's own observers and BN-folding code), docs/MODELS.md
says so."""
import os
import sys


def _argv_threads(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


# Before torch (and its OpenMP and OpenBLAS) is loaded.
os.environ.setdefault("OMP_NUM_THREADS", _argv_threads(sys.argv[1:]))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import copy  # noqa: E402
import gzip  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.ao import quantization as tq  # noqa: E402
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize  # noqa: E402

try:  # torch >= 2.0
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats
except ImportError:  # torch 1.13
    from torch.nn.intrinsic.qat import freeze_bn_stats

warnings.filterwarnings("ignore", module="torch")

DATA_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
MEAN, STD = 0.2860, 0.3530
T0 = time.perf_counter()


def log(msg):
    sys.stderr.write("[%7.1fs] %s\n" % (time.perf_counter() - T0, msg))
    sys.stderr.flush()


# ------------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (gzip-compressed or not) as a numpy array."""
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SystemExit("%s: not an IDX file of unsigned bytes" % path)
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def normalise(images):
    """uint8 [N,28,28] -> float32 [N,1,28,28], qat's table: every pixel value
    p maps to (p/255 - mean)/std evaluated in float32, as qat computes it, so
    both sides see the same input floats."""
    p = np.arange(256, dtype=np.float32)
    table = (p / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(np.ascontiguousarray(table[images][:, None]))


def load_data(a):
    """Training images: the first --limit-train of the file, of which --val
    (a seeded random choice) are held out for choices; then the test set."""
    d = a.data
    xtr = read_idx(os.path.join(d, "train-images-idx3-ubyte"))
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte"))
    xte = read_idx(os.path.join(d, "t10k-images-idx3-ubyte"))
    yte = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte"))
    if a.limit_train:
        xtr, ytr = xtr[:a.limit_train], ytr[:a.limit_train]
    if a.limit_test:
        xte, yte = xte[:a.limit_test], yte[:a.limit_test]
    if a.val >= len(xtr):
        raise SystemExit("--val %d leaves no training images (there are %d)" % (a.val, len(xtr)))
    g = torch.Generator().manual_seed(a.seed + 1000003)
    held = torch.zeros(len(xtr), dtype=torch.bool)
    held[torch.randperm(len(xtr), generator=g)[:a.val]] = True
    keep = (~held).numpy()
    D = {"train": (normalise(xtr[keep]), torch.from_numpy(ytr[keep].astype(np.int64))),
         "val": (normalise(xtr[~keep]), torch.from_numpy(ytr[~keep].astype(np.int64))),
         "test": (normalise(xte), torch.from_numpy(yte.astype(np.int64)))}
    g = torch.Generator().manual_seed(a.seed + 777)
    ntr = D["train"][0].shape[0]
    D["calib"] = D["train"][0][torch.randperm(ntr, generator=g)[:a.calib]].contiguous()
    return D


# ------------------------------------------------------------------- models
# Layer names follow qat's (features.0, classifier.2, layer2.shortcut.0, ...),
# so a state_dict key names the same layer as qat's checkpoints and
# `qat inspect` do. Children are registered in the order data flows through
# them: fusion_groups() relies on it.

def conv(cin, cout, k, stride=1, pad=0, groups=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=False)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


def named(**mods):
    return nn.Sequential(collections.OrderedDict(mods))


class Plain(nn.Module):
    """input -> features -> flatten -> classifier (mlp, lenet5, convnet)."""

    def __init__(self, features, classifier):
        super().__init__()
        self.quant = tq.QuantStub()
        self.features = nn.Sequential(*features)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(*classifier)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.classifier(self.flatten(self.features(self.quant(x)))))


def mlp():
    return Plain([], [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)])


def lenet5():
    return Plain([conv(1, 6, 5, pad=2), bn(6), nn.ReLU(), nn.MaxPool2d(2, 2),
                  conv(6, 16, 5), bn(16), nn.ReLU(), nn.MaxPool2d(2, 2)],
                 [nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)])


def convnet():
    f, cin = [], 1
    for i, w in enumerate((32, 32, 64, 64)):
        f += [conv(cin, w, 3, pad=1), bn(w), nn.ReLU()]
        if i % 2:
            f.append(nn.MaxPool2d(2, 2))
        cin = w
    return Plain(f, [nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)])


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is
    conv1x1(stride)+BN when the shape changes, else the identity."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv(cin, cout, 3, stride, 1), bn(cout), nn.ReLU()
        self.conv2, self.bn2 = conv(cout, cout, 3, 1, 1), bn(cout)
        self.shortcut = (named(**{"0": conv(cin, cout, 1, stride), "1": bn(cout)})
                         if stride != 1 or cin != cout else None)
        self.add = nn.quantized.FloatFunctional()  # add + ReLU, one requantization

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.add.add_relu(y, self.shortcut(x) if self.shortcut is not None else x)


class ResNet8(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = named(conv=conv(1, 16, 3, 1, 1), bn=bn(16), relu=nn.ReLU())
        self.layer1, self.layer2, self.layer3 = BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(self.quant(x)))))
        return self.dequant(self.fc(self.flatten(self.gap(x))))


class InvertedResidual(nn.Module):
    """[1x1 expand BN act] (t > 1) -> 3x3 depthwise BN act -> 1x1 project BN
    (linear), plus the input when the stride is 1 and cin == cout."""

    def __init__(self, cin, cout, t, stride, act):
        super().__init__()
        h = cin * t
        self.expand = named(conv=conv(cin, h, 1), bn=bn(h), act=act()) if t != 1 else None
        self.dw = named(conv=conv(h, h, 3, stride, 1, groups=h), bn=bn(h), act=act())
        self.project = named(conv=conv(h, cout, 1), bn=bn(cout))
        self.add = nn.quantized.FloatFunctional() if stride == 1 and cin == cout else None

    def forward(self, x):
        y = self.project(self.dw(self.expand(x) if self.expand is not None else x))
        return self.add.add(y, x) if self.add is not None else y


class MobileNet(nn.Module):
    """MobileNetV2-style (docs/MODELS.md); hard_swish: mobilenet-hs."""
    BLOCKS = ((16, 16, 1, 1), (16, 24, 4, 2), (24, 24, 4, 1), (24, 32, 4, 2),
              (32, 32, 4, 1), (32, 64, 4, 1), (64, 64, 4, 1))

    def __init__(self, hard_swish=False):
        super().__init__()
        late = nn.Hardswish if hard_swish else nn.ReLU6
        self.quant = tq.QuantStub()
        self.stem = named(conv=conv(1, 16, 3, 1, 1), bn=bn(16), act=nn.ReLU6())
        self.blocks = nn.Sequential(*[InvertedResidual(ci, co, t, s, late if i >= 3 else nn.ReLU6)
                                      for i, (ci, co, t, s) in enumerate(self.BLOCKS)])
        self.head = named(conv=conv(64, 256, 1), bn=bn(256), act=late())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(256, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.head(self.blocks(self.stem(self.quant(x))))
        return self.dequant(self.fc(self.flatten(self.gap(x))))


MODELS = {"mlp": mlp, "lenet5": lenet5, "convnet": convnet, "resnet8": ResNet8,
          "mobilenet": MobileNet, "mobilenet-hs": lambda: MobileNet(hard_swish=True)}


def fusion_groups(model):
    """Names of the runs eager mode can fuse: conv+BN(+ReLU), conv+ReLU,
    linear+ReLU, among consecutive children of one parent. ReLU6 and
    hard-swish are not fusible in eager mode and stay separate."""
    groups = []

    def walk(mod, prefix):
        kids = list(mod.named_children())
        i = 0
        while i < len(kids):
            name, m = kids[i]
            nxt = [type(k[1]) for k in kids[i + 1:i + 3]]
            g = None
            if isinstance(m, nn.Conv2d) and nxt[:1] == [nn.BatchNorm2d]:
                g = kids[i:i + (3 if nxt[1:2] == [nn.ReLU] else 2)]
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and nxt[:1] == [nn.ReLU]:
                g = kids[i:i + 2]
            if g:
                groups.append([prefix + n for n, _ in g])
                i += len(g)
                continue
            walk(m, prefix + name + ".")
            i += 1

    walk(model, "")
    return groups


# ------------------------------------------------------------------- quantization configs

def parse_spec(spec):
    """'wXaY' -> (X, Y)."""
    try:
        w, a = spec[1:].split("a")
        wb, ab = int(w), int(a)
        if spec[0] == "w" and 2 <= wb <= 8 and 2 <= ab <= 8:
            return wb, ab
    except ValueError:
        pass
    raise SystemExit("quantization spec '%s': expected wXaY with X, Y in 2..8 (e.g. w8a8)" % spec)


ACT_OBSERVERS = {"minmax": tq.MinMaxObserver, "ema": tq.MovingAverageMinMaxObserver,
                 "hist": tq.HistogramObserver}


def qconfig(wb, ab, act_obs="ema", lsq_w=False, lsq_a=False, per_tensor=False):
    """docs/MODELS.md's quantizers: weights per output channel, symmetric,
    [-(2^(w-1)-1), 2^(w-1)-1], a memoryless MinMax (moving average with
    constant 1) of the weight as the forward sees it (BN folded); activations
    per tensor, affine, [0, 2^a - 1], observer act_obs (moving average
    constant 0.01 for 'ema'). lsq_w / lsq_a: learnable weight scales /
    activation scale and zero point (gradients scaled by
    1/sqrt(numel * qmax)); their observers only give the starting values.
    per_tensor: one weight scale per layer (per_tensor_symmetric) instead of
    one per output channel."""
    wq = 2 ** (wb - 1) - 1
    wargs = dict(observer=tq.MovingAveragePerChannelMinMaxObserver, averaging_constant=1.0,
                 quant_min=-wq, quant_max=wq, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    if per_tensor:
        wargs = dict(observer=tq.MovingAverageMinMaxObserver, averaging_constant=1.0,
                     quant_min=-wq, quant_max=wq, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    aargs = dict(observer=ACT_OBSERVERS[act_obs], quant_min=0, quant_max=2 ** ab - 1, dtype=torch.quint8,
                 qscheme=torch.per_tensor_affine, reduce_range=False)
    def fq(learnable, args):
        if learnable:
            return _LearnableFakeQuantize.with_args(use_grad_scaling=True, **args)
        return tq.FakeQuantize.with_args(**args)

    return tq.QConfig(activation=fq(lsq_a, aargs), weight=fq(lsq_w, wargs))


def torch_qconfig(engine):
    """PyTorch's own QAT defaults for the engine (--qconfig torch, W8A8
    only; also used to calibrate PTQ)."""
    return tq.get_default_qat_qconfig(engine)


def lsq_fake_quants(model):
    return [m for m in model.modules() if isinstance(m, _LearnableFakeQuantize)]


def size_lsq_weights(model):
    """_LearnableFakeQuantize must know its channel count when it is built,
    and qconfigs are built before the layer is known: give every per-channel
    learnable weight quantizer one scale per output channel."""
    for m in model.modules():
        fq = getattr(m, "weight_fake_quant", None)
        if isinstance(fq, _LearnableFakeQuantize) and fq.qscheme == torch.per_channel_symmetric:
            c = m.weight.shape[0]
            fq.scale = nn.Parameter(torch.ones(c))
            fq.zero_point = nn.Parameter(torch.zeros(c))


def effective_weight(m):
    """The weight the module's weight quantizer sees: W * gamma / sigma for
    a conv with BN folded in training, W otherwise."""
    w = m.weight.detach()
    if hasattr(m, "bn") and isinstance(m.bn, nn.BatchNorm2d):
        sf = m.bn.weight.detach() / torch.sqrt(m.bn.running_var + m.bn.eps)
        w = w * sf.reshape(-1, *([1] * (w.dim() - 1)))
    return w


def mse_weight_scales(model):
    """Learnable weight scales start from a per-channel search of the
    clipping ratio r in [0.30, 1.00] (step 0.01) minimising the squared
    quantization error, as qat does, rather than from MinMax."""
    for m in model.modules():
        fq = getattr(m, "weight_fake_quant", None)
        if not isinstance(fq, _LearnableFakeQuantize):
            continue
        w = effective_weight(m).reshape(m.weight.shape[0], -1).double()
        q = float(fq.quant_max)
        amax = w.abs().amax(1).clamp_min(1e-12)
        best_err, best = None, None
        for r in np.arange(30, 101) / 100.0:
            s = (r * amax / q)[:, None]
            err = ((torch.clamp(torch.round(w / s), -q, q) * s - w) ** 2).sum(1)
            if best is None:
                best_err, best = err, s[:, 0].clone()
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best = torch.where(better, s[:, 0], best)
        fq.scale.data.copy_(best.float().clamp_min(float(fq.eps)))


# ------------------------------------------------------------------- training and evaluation

def cosine(base, step, total):
    return 0.5 * base * (1.0 + math.cos(math.pi * step / total))


def train(model, data, epochs, lr, a, seed, tag, at_epoch=None):
    """SGD (momentum, weight decay on conv/linear weights only), learning
    rate cosine from lr to 0 over every step of the run, batches of a fresh
    seeded permutation each epoch (the last one smaller). Timed: forward,
    loss, backward and step; gathering the batch is outside the timer."""
    X, Y = data
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": [p for p in params if p.dim() > 1], "weight_decay": a.wd},
                           {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
                          lr=lr, momentum=a.momentum)
    n, B = X.shape[0], a.batch
    spe = (n + B - 1) // B
    total, step = epochs * spe, 0
    gen = torch.Generator().manual_seed(seed)
    out = []
    for ep in range(epochs):
        model.train()
        if at_epoch:
            at_epoch(model, ep)
        order = torch.randperm(n, generator=gen)
        busy, loss_sum, correct = 0.0, 0.0, 0
        wall0 = time.perf_counter()
        for k in range(spe):
            idx = order[k * B:(k + 1) * B]
            xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
            for g in opt.param_groups:
                g["lr"] = cosine(lr, step, total)
            t = time.perf_counter()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            busy += time.perf_counter() - t
            loss_sum += loss.item() * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            step += 1
        wall = time.perf_counter() - wall0
        e = {"epoch": ep + 1, "loss": loss_sum / n, "train_acc": correct / n, "compute_s": busy, "wall_s": wall,
             "images_per_s": n / busy, "images_per_s_wall": n / wall}
        out.append(e)
        log("%s epoch %d/%d loss %.4f train_acc %.4f %.0f img/s" % (tag, ep + 1, epochs, e["loss"],
                                                                    e["train_acc"], e["images_per_s"]))
    return out


@torch.no_grad()
def evaluate(model, data, bs=500):
    X, Y = data
    model.eval()
    logits = torch.cat([model(X[i:i + bs]) for i in range(0, X.shape[0], bs)]).float()
    return float((logits.argmax(1) == Y).float().mean()), logits


def agreement(a, b):
    return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
            "max_abs_logit_diff": float((a - b).abs().max()),
            "mean_abs_logit_diff": float((a - b).abs().mean())}


def bench_inference(model, X, lat_iters, bs=128, reps=5, warmup=100):
    """Throughput: whole batches of bs test images, median of reps passes
    (after a warm-up pass over ten batches). Latency: one image at a time,
    median of lat_iters calls after warmup calls."""
    model.eval()
    n = (X.shape[0] // bs) * bs
    batches = [X[i:i + bs].contiguous() for i in range(0, n, bs)]
    ones = [X[i % X.shape[0]:i % X.shape[0] + 1].contiguous() for i in range(lat_iters + warmup)]
    with torch.inference_mode():
        for b in batches[:10]:
            model(b)
        ips = []
        for _ in range(reps):
            t = time.perf_counter()
            for b in batches:
                model(b)
            ips.append(n / (time.perf_counter() - t))
        for x in ones[:warmup]:
            model(x)
        lat = []
        for x in ones[warmup:]:
            t = time.perf_counter()
            model(x)
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {"batch": bs, "throughput_images_per_s": statistics.median(ips), "throughput_reps": ips,
            "latency_b1_median_us": 1e6 * statistics.median(lat),
            "latency_b1_p10_us": 1e6 * lat[len(lat) // 10], "latency_b1_p90_us": 1e6 * lat[9 * len(lat) // 10],
            "latency_iters": lat_iters}


# ------------------------------------------------------------------- PTQ and QAT

@torch.no_grad()
def calibrate(model, X, bs=128):
    """Observers on, fake-quant off, evaluation mode (BN uses its running
    statistics): the quantizers see float activations, as in PTQ."""
    model.eval()
    model.apply(tq.enable_observer)
    model.apply(tq.disable_fake_quant)
    for i in range(0, X.shape[0], bs):
        model(X[i:i + bs])
    model.apply(tq.enable_fake_quant)


def ptq(float_model, qc, Xcal):
    """BN folded into the conv (evaluation-mode fusion), quantizers placed,
    calibrated, then frozen: a fake-quant model that convert() can lower.
    Learnable weight quantizers (4 bits and below) take the MSE scales and
    keep them (no training here)."""
    m = tq.fuse_modules(copy.deepcopy(float_model).eval(), fusion_groups(float_model))
    m.train()
    m.qconfig = qc
    tq.prepare_qat(m, inplace=True)
    size_lsq_weights(m)
    calibrate(m, Xcal)
    mse_weight_scales(m)
    m.apply(tq.disable_observer)
    return m.eval()


def qat_prepare(float_model, qc, Xcal):
    """Conv+BN(+ReLU) fused for training (PyTorch's BN-folding simulation),
    quantizers placed and calibrated on the calibration images (the PTQ
    starting point), then set for training: observers on, learnable
    quantizers learning from their calibrated (weights: MSE) values."""
    m = tq.fuse_modules_qat(copy.deepcopy(float_model).train(), fusion_groups(float_model))
    m.qconfig = qc
    tq.prepare_qat(m, inplace=True)
    size_lsq_weights(m)
    calibrate(m, Xcal)
    mse_weight_scales(m)
    for fq in lsq_fake_quants(m):
        fq.enable_param_learning()
    return m.train()


def to_int8(fq_model):
    """The int8 model of the engine set in torch.backends.quantized."""
    return tq.convert(copy.deepcopy(fq_model).eval())


def state_bytes(model):
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


# ------------------------------------------------------------------- process facts

def status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss():
    """VmHWM back to the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def environment():
    e = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
         "quantized_engine": torch.backends.quantized.engine,
         "supported_quantized_engines": torch.backends.quantized.supported_engines,
         "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                               "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}}
    caps = [l.strip() for l in torch.__config__.show().splitlines() if "CPU capability" in l]
    if caps:
        e["aten_cpu_capability"] = caps[0]
    try:
        import ctypes
        ob = ctypes.CDLL("libopenblas.so.0")
        ob.openblas_get_corename.restype = ctypes.c_char_p
        e["openblas"] = {"core": ob.openblas_get_corename().decode(), "threads": ob.openblas_get_num_threads()}
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            e["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return e


# ------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--data", default=DATA_DIR, help="directory of the Fashion-MNIST IDX files")
    ap.add_argument("--epochs", type=int, default=5, help="float epochs (default 5)")
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--qat-lr", type=float, default=0.005)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-train", type=int, default=0, help="use the first N training images (0: all 60,000)")
    ap.add_argument("--limit-test", type=int, default=0, help="use the first N test images (0: all 10,000)")
    ap.add_argument("--val", type=int, default=5000, help="training images held out for choices (default 5000)")
    ap.add_argument("--calib", type=int, default=1024, help="calibration images (default 1024)")
    ap.add_argument("--quant", default="w8a8,w4a8,w4a4", help="PTQ and QAT specs, comma-separated ('' = none)")
    ap.add_argument("--qat-quant", default=None,
                    help="the specs of --quant that also get a QAT run (default: all of them)")
    ap.add_argument("--ptq-per-tensor", action="store_true",
                    help="also run W8A8 PTQ with per-tensor weight scales (row 'w8a8_per_tensor')")
    ap.add_argument("--calibrators", default="minmax,ema,hist",
                    help="PTQ activation observers: minmax, ema (moving average), hist (PyTorch's histogram)")
    ap.add_argument("--freeze-bn-after", type=int, default=1, help="QAT: BN statistics frozen from this epoch on")
    ap.add_argument("--freeze-observers-after", type=int, default=-1,
                    help="QAT: observers frozen from this epoch on (default: half the QAT epochs, rounded up)")
    ap.add_argument("--engine", default="onednn", choices=["onednn", "qnnpack"],
                    help="quantized engine the int8 models run on")
    ap.add_argument("--qconfig", default="recipe", choices=["recipe", "torch"],
                    help="8-bit quantizers: docs/MODELS.md's (default) or PyTorch's defaults for the engine")
    ap.add_argument("--lat-iters", type=int, default=1000, help="batch-1 latency calls")
    ap.add_argument("--save-float", help="write the float state_dict here")
    ap.add_argument("--load-float", help="start from this float state_dict instead of training")
    ap.add_argument("--float-only", action="store_true", help="train and test the float model only")
    ap.add_argument("--bench-only", action="store_true",
                    help="with --load-float: fp32, BN-folded fp32 and int8 (W8A8 PTQ, MinMax) inference speed only")
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    a = ap.parse_args(argv)
    if a.bench_only and not a.load_float:
        ap.error("--bench-only needs --load-float")
    return a


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.quantized.engine = a.engine
    torch.manual_seed(a.seed)
    R = {"model": a.model, "args": vars(a), "env": environment(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save():
        R["total_s"] = time.perf_counter() - T0
        s = json.dumps(R, indent=1)
        if a.out:
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out + ".part", "w") as f:
                f.write(s + "\n")
            os.replace(a.out + ".part", a.out)

    D = load_data(a)
    R["data"] = {k: int(D[k][0].shape[0]) for k in ("train", "val", "test")}
    R["data"].update(calib=int(D["calib"].shape[0]), normalisation=[MEAN, STD], dir=a.data)
    log("%s: %d train / %d val / %d test images, %d threads, engine %s" % (
        a.model, R["data"]["train"], R["data"]["val"], R["data"]["test"], torch.get_num_threads(), a.engine))

    model = MODELS[a.model]()
    R["params"] = sum(p.numel() for p in model.parameters())
    fl = {"epochs": a.epochs, "lr": a.lr, "batch": a.batch, "wd": a.wd, "momentum": a.momentum}
    if a.load_float:
        model.load_state_dict(torch.load(a.load_float))
        fl = {"loaded_from": a.load_float}
    else:
        fl["rss_before_train_bytes"] = status_bytes("VmRSS")
        fl["peak_rss_reset"] = reset_peak_rss()
        fl["per_epoch"] = train(model, D["train"], a.epochs, a.lr, a, a.seed, "float")
        fl["peak_rss_train_bytes"] = status_bytes("VmHWM")
        fl["train_images_per_s_median"] = statistics.median(e["images_per_s"] for e in fl["per_epoch"])
        fl["train_images_per_s_wall_median"] = statistics.median(e["images_per_s_wall"] for e in fl["per_epoch"])
        if a.save_float:
            torch.save(model.state_dict(), a.save_float)
    model.eval()
    fl["test_acc"] = evaluate(model, D["test"])[0]
    if D["val"][0].shape[0]:
        fl["val_acc"] = evaluate(model, D["val"])[0]
    log("float test acc %.4f" % fl["test_acc"])
    R["float"] = fl
    save()
    if a.float_only:
        return finish(R, save, a)

    Xte = D["test"][0]
    folded = tq.fuse_modules(copy.deepcopy(model).eval(), fusion_groups(model))
    if a.bench_only:
        q = to_int8(ptq(model, qconfig(8, 8, "minmax"), D["calib"]))
        R["int8_ptq_minmax_test_acc"] = evaluate(q, D["test"])[0]
        R["inference"] = {"fp32": bench_inference(model, Xte, a.lat_iters),
                          "fp32_bn_folded": bench_inference(folded, Xte, a.lat_iters),
                          "int8_" + a.engine: bench_inference(q, Xte, a.lat_iters)}
        log(", ".join("%s %.0f img/s, %.1f us" % (k, v["throughput_images_per_s"], v["latency_b1_median_us"])
                      for k, v in R["inference"].items()))
        return finish(R, save, a)

    R["sizes"] = {"fp32_state_dict_bytes": state_bytes(model)}
    R["inference"] = {"fp32": bench_inference(model, Xte, a.lat_iters),
                      "fp32_bn_folded": bench_inference(folded, Xte, a.lat_iters)}
    R["ptq"], R["qat"] = {}, {}
    fob = a.freeze_observers_after if a.freeze_observers_after >= 0 else (a.qat_epochs + 1) // 2
    if a.ptq_per_tensor:
        P = {}
        for cal in [c for c in a.calibrators.split(",") if c]:
            m = ptq(model, qconfig(8, 8, cal, per_tensor=True), D["calib"])
            r = {"test_acc": evaluate(m, D["test"])[0], "val_acc": evaluate(m, D["val"])[0]
                 if D["val"][0].shape[0] else None}
            r.update(int8_results(m, D["test"]))
            r.pop("int8_model", None)
            P[cal] = r
            log("w8a8 per-tensor PTQ %s: fake-quant test acc %.4f int8 %.4f" % (cal, r["test_acc"],
                                                                                  r["int8_test_acc"]))
        chosen = max(P, key=lambda c: (P[c]["val_acc"] or 0.0, -list(P).index(c)))
        R["ptq"]["w8a8_per_tensor"] = {"calibrators": P, "chosen": chosen}
        save()
    for spec in [s for s in a.quant.split(",") if s]:
        wb, ab = parse_spec(spec)
        lsq_w, lsq_a = wb <= 4, ab <= 4  # qat's rule: learnable at 4 bits and below
        lowers = ab == 8  # int8 activations: convert() gives a model the engine runs
        use_torch = a.qconfig == "torch" and wb == 8 and ab == 8

        # PTQ: every calibrator, the one to keep chosen on the validation images
        P = {}
        for cal in ["torch"] if use_torch else [c for c in a.calibrators.split(",") if c]:
            qc = torch_qconfig(a.engine) if use_torch else qconfig(wb, ab, cal, lsq_w=lsq_w)
            m = ptq(model, qc, D["calib"])
            r = {"test_acc": evaluate(m, D["test"])[0], "val_acc": evaluate(m, D["val"])[0]
                 if D["val"][0].shape[0] else None}
            if lowers:
                r.update(int8_results(m, D["test"]))
                r.pop("int8_model", None)
            P[cal] = r
            log("%s PTQ %s: fake-quant test acc %.4f%s" % (spec, cal, r["test_acc"],
                                                           " int8 %.4f" % r["int8_test_acc"] if "int8_test_acc" in r
                                                           else ""))
        chosen = max(P, key=lambda c: (P[c]["val_acc"] or 0.0, -list(P).index(c)))
        R["ptq"][spec] = {"calibrators": P, "chosen": chosen}
        save()

        # QAT from the float model
        if a.qat_quant is not None and spec not in a.qat_quant.split(","):
            continue
        torch.manual_seed(a.seed)
        qc = torch_qconfig(a.engine) if use_torch else qconfig(wb, ab, "ema", lsq_w, lsq_a)
        m = qat_prepare(model, qc, D["calib"])
        start = evaluate(m, D["test"])[0]
        m.train()

        def at_epoch(mod, ep):
            if ep >= a.freeze_bn_after:
                mod.apply(freeze_bn_stats)
            if ep >= fob:
                mod.apply(tq.disable_observer)

        reset_peak_rss()
        ep = train(m, D["train"], a.qat_epochs, a.qat_lr, a, a.seed + 1, "QAT " + spec, at_epoch)
        r = {"epochs": a.qat_epochs, "lr": a.qat_lr, "lsq_weights": lsq_w, "lsq_activations": lsq_a, "ptq_start_test_acc": start,
             "freeze_bn_after": a.freeze_bn_after, "freeze_observers_after": fob, "per_epoch": ep,
             "train_images_per_s_median": statistics.median(e["images_per_s"] for e in ep),
             "peak_rss_train_bytes": status_bytes("VmHWM")}
        r["test_acc"], fq_logits = evaluate(m, D["test"])
        if D["val"][0].shape[0]:
            r["val_acc"] = evaluate(m, D["val"])[0]
        if lowers:
            r.update(int8_results(m, D["test"], fq_logits))
            if "int8_model" in r:
                R["inference"]["int8_qat_%s_%s" % (spec, a.engine)] = bench_inference(r["int8_model"], Xte,
                                                                                       a.lat_iters)
                R["sizes"]["int8_qat_%s_state_dict_bytes" % spec] = state_bytes(r["int8_model"])
        r.pop("int8_model", None)
        R["qat"][spec] = r
        log("%s QAT: fake-quant test acc %.4f%s" % (spec, r["test_acc"],
                                                     " int8 %.4f" % r["int8_test_acc"] if "int8_test_acc" in r
                                                     else ""))
        save()
    return finish(R, save, a)


def int8_results(fq_model, test, fq_logits=None):
    """Convert to the int8 engine; test accuracy and agreement with the
    fake-quant model it came from."""
    try:
        q = to_int8(fq_model)
        acc, logits = evaluate(q, test)
    except (RuntimeError, NotImplementedError, AssertionError) as ex:  # no kernel for some layer
        return {"int8_error": repr(ex)}
    if fq_logits is None:
        fq_logits = evaluate(fq_model, test)[1]
    return {"int8_engine": torch.backends.quantized.engine, "int8_test_acc": acc,
            "int8_vs_fake_quant": agreement(fq_logits, logits), "int8_model": q}


def finish(R, save, a):
    for spec in R.get("ptq", {}).values():
        for r in spec["calibrators"].values():
            r.pop("int8_model", None)
    R["peak_rss_process_bytes"] = status_bytes("VmHWM")
    R["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    if not a.out:
        R["total_s"] = time.perf_counter() - T0
        print(json.dumps(R, indent=1))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
