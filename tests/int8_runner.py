#!/usr/bin/python3
"""Independent runner for qat's int8 model files (`qat export`).

Written only from docs/FORMAT-int8.md, with h5py and numpy and nothing from
the qat project, to check that the format is specified precisely enough for
a third party to reproduce the runtime's int8 logits bit for bit.

Usage: int8_runner.py MODEL.int8.h5 INPUT OUT.npy

INPUT is an IDX file (raw or gzip-compressed, uint8 images [N, H, W]) or a
.npy file: uint8 pixels [N, C, H, W] or [N, H, W], or float32 normalised
inputs [N, C, H, W] (or [N, H, W] when C = 1).  OUT.npy receives the int8
logits [N, classes], or the float32 logits of a model with float ops
(docs/FORMAT-int8.md, "Float ops"; run_float_model below).
"""

import gzip
import struct
import sys

import h5py
import numpy as np

BATCH = 500  # images per batch: bounds the im2col memory


class FormatError(Exception):
    """The model or input file does not match the specification."""


# --------------------------------------------------------------------------
# Reading attributes
# --------------------------------------------------------------------------

def _str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        return _str(value.reshape(-1)[0])
    return str(value)


def _scalar(value, what):
    a = np.asarray(value)
    if a.size != 1:
        raise FormatError("%s: expected a scalar, got shape %s" % (what, a.shape))
    return a.reshape(-1)[0]


class Op:
    """One op group: its attributes and datasets, read into numpy."""

    def __init__(self, index, group):
        self.index = index
        self.group = group
        self.where = "op %s" % group.name
        self.type = _str(self.attr("type"))
        self.name = _str(group.attrs.get("name", ""))
        self.inputs = [int(v) for v in np.asarray(self.attr("inputs")).reshape(-1)]
        self.out_shape = tuple(int(v) for v in np.asarray(self.attr("out_shape")).reshape(-1))
        self.out_scale = np.float32(_scalar(self.attr("out_scale"), self.where + " out_scale"))
        self.out_zero_point = self.int_attr("out_zero_point")
        if not -128 <= self.out_zero_point <= 127:
            raise FormatError("%s: out_zero_point %d not in [-128, 127]"
                              % (self.where, self.out_zero_point))
        for i in self.inputs:
            if not 0 <= i < index:
                raise FormatError("%s: input %d is not an earlier op" % (self.where, i))

    def attr(self, key):
        if key not in self.group.attrs:
            raise FormatError("%s: missing attribute '%s'" % (self.where, key))
        return self.group.attrs[key]

    def int_attr(self, key):
        return int(_scalar(self.attr(key), "%s %s" % (self.where, key)))

    def int_array_attr(self, key, n):
        a = np.asarray(self.attr(key)).reshape(-1).astype(np.int64)
        if a.size != n:
            raise FormatError("%s: attribute '%s' has %d values, expected %d"
                              % (self.where, key, a.size, n))
        return a

    def dataset(self, key, dtype, shape=None):
        if key not in self.group:
            raise FormatError("%s: missing dataset '%s'" % (self.where, key))
        d = self.group[key]
        if d.dtype != np.dtype(dtype):
            raise FormatError("%s: dataset '%s' is %s, expected %s"
                              % (self.where, key, d.dtype, np.dtype(dtype)))
        a = d[()]
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise FormatError("%s: dataset '%s' has shape %s, expected %s"
                              % (self.where, key, a.shape, tuple(shape)))
        return a


def load_model(path):
    f = h5py.File(path, "r")
    fmt = _str(f.attrs.get("qat_format", ""))
    if fmt != "int8-model":
        raise FormatError("%s: qat_format '%s', expected 'int8-model'" % (path, fmt))
    version = int(_scalar(f.attrs.get("format_version", -1), "format_version"))
    if version not in (1, 2, 3):
        raise FormatError("%s: format_version %d, expected 1, 2 or 3" % (path, version))
    num_ops = int(_scalar(f.attrs["num_ops"], "num_ops"))
    if "ops" not in f:
        raise FormatError("%s: no group /ops" % path)
    groups = f["ops"]
    names = sorted(groups.keys(), key=lambda k: int(k))
    if [int(k) for k in names] != list(range(num_ops)):
        raise FormatError("%s: /ops holds %s, expected %d ops numbered 0..%d"
                          % (path, names, num_ops, num_ops - 1))
    ops = [Op(i, groups[k]) for i, k in enumerate(names)]
    if num_ops < 1 or ops[0].type != "input":
        raise FormatError("%s: op 0 is not the input op" % path)
    return f, ops


# --------------------------------------------------------------------------
# Weight encodings (format version 2, "Weight encodings")
# --------------------------------------------------------------------------

ENCODINGS = ("int8", "packed", "codebook", "hashed")


def hash_bucket(seed, index, k):
    """The bucket of flat weight index (uint64 array) of a hashed layer."""
    x = (np.asarray(index, dtype=np.uint64) + np.uint64((seed * 0x9E3779B9) & 0xFFFFFFFF)) \
        & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return (x % np.uint64(k)).astype(np.int64)


def index_bits(k):
    """ceil(log2 K), at least 1."""
    b = 1
    while (1 << b) < k:
        b += 1
    return b


def unpack_codes(op, payload, n, bits, what):
    """n codes of `bits` bits from the little-endian bit stream `payload`."""
    nb = (n * bits + 7) // 8
    if payload.ndim != 1 or payload.size != nb:
        raise FormatError("%s: dataset 'weight' has shape %s, expected (%d,) = ceil(%d x %d bits / 8) (%s)"
                          % (op.where, payload.shape, nb, n, bits, what))
    stream = np.unpackbits(payload, bitorder="little")       # stream bit p = bit p%8 of byte p//8
    if np.any(stream[n * bits:]):
        raise FormatError("%s: dataset 'weight': padding bits after the last code are not 0" % op.where)
    b = stream[:n * bits].reshape(n, bits).astype(np.int64)   # column j = bit j of the code
    return (b << np.arange(bits, dtype=np.int64)).sum(axis=1)


def read_weight(op, rank):
    """The conv/linear weight as int8 of its logical shape, in any encoding."""
    enc = _str(op.group.attrs["weight_encoding"]) if "weight_encoding" in op.group.attrs else "int8"
    if enc not in ENCODINGS:
        raise FormatError("%s: weight_encoding '%s', expected one of %s" % (op.where, enc, ENCODINGS))
    if "weight_bits" in op.group.attrs or enc != "int8":
        bits = op.int_attr("weight_bits")
        if not 1 <= bits <= 8:
            raise FormatError("%s: weight_bits %d not in 1..8" % (op.where, bits))
    else:
        bits = 8
    if enc == "int8":
        w = op.dataset("weight", np.int8)
        if w.ndim != rank:
            raise FormatError("%s: weight has rank %d, expected %d" % (op.where, w.ndim, rank))
        if "weight_shape" in op.group.attrs and \
                tuple(op.int_array_attr("weight_shape", rank)) != tuple(w.shape):
            raise FormatError("%s: weight_shape differs from the weight's shape" % op.where)
        lo, hi = (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        bad = (w < lo) | (w > hi) | ((w == 0) if bits == 1 else False)
        if np.any(bad):
            raise FormatError("%s: dataset 'weight' has values outside weight_bits %d" % (op.where, bits))
        return w
    shape = tuple(int(v) for v in op.int_array_attr("weight_shape", rank))
    if any(d < 1 for d in shape):
        raise FormatError("%s: weight_shape %s" % (op.where, shape))
    n = int(np.prod(shape, dtype=np.int64))
    if enc == "packed":
        codes = unpack_codes(op, op.dataset("weight", np.uint8), n, bits, "packed weights")
        if bits == 1:
            w = np.where(codes == 1, 1, -1)
        else:
            w = np.where(codes >= (1 << (bits - 1)), codes - (1 << bits), codes)
        return w.astype(np.int8).reshape(shape)
    cb = op.dataset("codebook", np.int8)
    if cb.ndim != 1 or not 2 <= cb.size <= 256:
        raise FormatError("%s: dataset 'codebook' has shape %s, expected (K,) with K in 2..256"
                          % (op.where, cb.shape))
    k = cb.size
    if bits != index_bits(k):
        raise FormatError("%s: weight_bits %d, expected ceil(log2 K) = %d (dataset 'codebook')"
                          % (op.where, bits, index_bits(k)))
    if enc == "codebook":
        idx = unpack_codes(op, op.dataset("weight", np.uint8), n, bits, "codebook indices")
        if np.any(idx >= k):
            i = int(np.nonzero(idx >= k)[0][0])
            raise FormatError("%s: dataset 'weight': index %d of weight %d is outside dataset 'codebook' (K = %d)"
                              % (op.where, idx[i], i, k))
        return cb[idx].reshape(shape)
    if "weight" in op.group:
        raise FormatError("%s: a hashed op has a dataset 'weight'" % op.where)
    seed = op.int_attr("hash_seed")          # missing: FormatError naming it
    if not 0 <= seed < (1 << 32):
        raise FormatError("%s: hash_seed %d not in [0, 2^32)" % (op.where, seed))
    return cb[hash_bucket(seed, np.arange(n, dtype=np.uint64), k)].reshape(shape)


# --------------------------------------------------------------------------
# Integer arithmetic
# --------------------------------------------------------------------------

def requant(acc, m, s):
    """requant(acc, m, s), elementwise with broadcasting, int64 arithmetic."""
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if np.any((m != 0) & ((m < (1 << 30)) | (m >= (1 << 31)))):
        raise FormatError("multiplier outside [2^30, 2^31) and not 0")
    if np.any((s < -31) | (s > 30)):
        raise FormatError("shift outside [-31, 30]")
    if np.any(np.abs(acc) >= (1 << 31)):
        raise FormatError("accumulator does not fit in 31 bits + sign")
    t = 31 - s
    r = (acc * m + (np.int64(1) << (t - 1))) >> t
    return np.where(m == 0, np.int64(0), r)


def clamp(v, lo, hi):
    return np.minimum(np.maximum(v, lo), hi)


def windows(x, kh, kw, stride, oh, ow):
    """[B, C, H, W] -> view [B, C, OH, OW, KH, KW] of the stride-spaced windows."""
    w = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    w = w[:, :, ::stride, ::stride]
    if w.shape[2] < oh or w.shape[3] < ow:
        raise FormatError("out_shape larger than the input allows")
    return w[:, :, :oh, :ow]


# --------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------

def quantize_float(x, op):
    """Quantize normalised float32 inputs with the input op's formula."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        inv = np.float32(np.float32(1) / op.out_scale)
        y = (x * inv).astype(np.float32)
        r = np.rint(y).astype(np.float64)          # round half to even
    if np.any(np.isnan(r)):
        raise FormatError("NaN in the float input")
    lo, hi = op.int_attr("act_min"), op.int_attr("act_max")
    q = clamp(np.float64(op.out_zero_point) + r, float(lo), float(hi))
    return q.astype(np.int8)


def check_lut(op, lut):
    """Recompute the lut from mean/std; warn (stderr) on any difference."""
    mean = np.float32(_scalar(op.attr("mean"), op.where + " mean"))
    std = np.float32(_scalar(op.attr("std"), op.where + " std"))
    p = np.arange(256, dtype=np.float32)
    x = ((p / np.float32(255)).astype(np.float32) - mean).astype(np.float32)
    x = (x / std).astype(np.float32)
    ref = quantize_float(x, op)
    bad = np.nonzero(ref != lut)[0]
    if bad.size:
        sys.stderr.write("int8_runner: warning: %s lut differs from the formula at %d "
                         "pixel values (first p=%d: lut %d, formula %d)\n"
                         % (op.where, bad.size, bad[0], lut[bad[0]], ref[bad[0]]))


def act_hi(op, n):
    """act_max, or the per-channel bounds of dataset act_max_channel (version 3)."""
    lo, hi = op.int_attr("act_min"), op.int_attr("act_max")
    if "act_max_channel" not in op.group:
        return hi
    amc = op.dataset("act_max_channel", np.int32, (n,)).astype(np.int64)
    if np.any((amc < lo) | (amc > 127)):
        raise FormatError("%s: act_max_channel outside [act_min, 127]" % op.where)
    return amc


def run_conv2d(op, x):
    c, h, w = x.shape[1:]
    oc, oh, ow = op.out_shape
    groups = op.int_attr("groups") if "groups" in op.group.attrs else 1
    if groups < 1 or c % groups or oc % groups:
        raise FormatError("%s: groups %d does not divide the %d input and %d output channels"
                          % (op.where, groups, c, oc))
    weight = read_weight(op, 4)
    if weight.ndim != 4 or weight.shape[0] != oc or weight.shape[1] != c // groups:
        raise FormatError("%s: weight shape %s does not fit input %s, output %s, groups %d"
                          % (op.where, weight.shape, x.shape[1:], op.out_shape, groups))
    kh, kw = weight.shape[2:]
    stride, pad = op.int_attr("stride"), op.int_attr("pad")
    if oh != (h + 2 * pad - kh) // stride + 1 or ow != (w + 2 * pad - kw) // stride + 1:
        raise FormatError("%s: out_shape %s inconsistent with stride/pad/kernel"
                          % (op.where, op.out_shape))
    bias = op.dataset("bias", np.int32, (oc,)).astype(np.int64)
    mult = op.dataset("multiplier", np.int32, (oc,)).astype(np.int64)
    shift = op.dataset("shift", np.int32, (oc,)).astype(np.int64)
    zin = op.int_attr("in_zero_point")
    lo, hi = op.int_attr("act_min"), act_hi(op, oc)
    cg, ocg = c // groups, oc // groups
    # group g: output channels [g*ocg, (g+1)*ocg) read input channels [g*cg, (g+1)*cg)
    wmat = weight.reshape(groups, ocg, cg * kh * kw).astype(np.int64).transpose(0, 2, 1)  # [G, CG*KH*KW, OCG]
    out = np.empty((x.shape[0], oc, oh, ow), dtype=np.int8)
    for b0 in range(0, x.shape[0], BATCH):
        xb = x[b0:b0 + BATCH].astype(np.int64) - zin
        # padding with the input zero point == padding (x - zin) with 0
        xb = np.pad(xb, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        cols = windows(xb, kh, kw, stride, oh, ow)               # [B,C,OH,OW,KH,KW]
        nb = cols.shape[0]
        cols = cols.reshape(nb, groups, cg, oh, ow, kh, kw)
        cols = cols.transpose(0, 1, 3, 4, 2, 5, 6).reshape(nb, groups, oh * ow, cg * kh * kw)
        acc = np.matmul(cols, wmat)                              # [B,G,OH*OW,OCG]
        acc = acc.transpose(0, 2, 1, 3).reshape(nb, oh, ow, oc) + bias   # [B,OH,OW,OC]
        y = requant(acc, mult, shift) + op.out_zero_point
        out[b0:b0 + BATCH] = clamp(y, lo, hi).transpose(0, 3, 1, 2)
    return out


def run_linear(op, x):
    x = x.reshape(x.shape[0], -1)
    (nout,) = op.out_shape
    weight = read_weight(op, 2)
    if weight.shape != (nout, x.shape[1]):
        raise FormatError("%s: weight shape %s, expected %s" % (op.where, weight.shape, (nout, x.shape[1])))
    bias = op.dataset("bias", np.int32, (nout,)).astype(np.int64)
    mult = op.dataset("multiplier", np.int32, (nout,)).astype(np.int64)
    shift = op.dataset("shift", np.int32, (nout,)).astype(np.int64)
    zin = op.int_attr("in_zero_point")
    lo, hi = op.int_attr("act_min"), act_hi(op, nout)
    acc = np.matmul(x.astype(np.int64) - zin, weight.astype(np.int64).T) + bias
    return clamp(requant(acc, mult, shift) + op.out_zero_point, lo, hi).astype(np.int8)


def run_add(op, a, b):
    if a.shape != b.shape:
        raise FormatError("%s: inputs of shapes %s and %s" % (op.where, a.shape, b.shape))
    m = op.int_array_attr("multiplier", 2)
    z = op.int_array_attr("in_zero_point", 2)
    t = op.int_attr("add_shift")
    if not 1 <= t <= 62:
        raise FormatError("%s: add_shift %d not in [1, 62]" % (op.where, t))
    if np.any((m < 0) | (m >= (1 << 31))):
        raise FormatError("%s: multiplier outside [0, 2^31)" % op.where)
    lo, hi = op.int_attr("act_min"), op.int_attr("act_max")
    v = (a.astype(np.int64) - z[0]) * m[0] + (b.astype(np.int64) - z[1]) * m[1]
    y = ((v + (np.int64(1) << (t - 1))) >> t) + op.out_zero_point
    return clamp(y, lo, hi).astype(np.int8)


def run_global_avgpool(op, x):
    zin = op.int_attr("in_zero_point")
    acc = (x.astype(np.int64) - zin).sum(axis=(2, 3))
    y = requant(acc, op.int_attr("multiplier"), op.int_attr("shift")) + op.out_zero_point
    return clamp(y, op.int_attr("act_min"), op.int_attr("act_max")).astype(np.int8)


def pool_windows(op, x):
    k, stride = op.int_attr("kernel"), op.int_attr("stride")
    c, oh, ow = op.out_shape
    h, w = x.shape[2:]
    if c != x.shape[1] or oh != (h - k) // stride + 1 or ow != (w - k) // stride + 1:
        raise FormatError("%s: out_shape %s inconsistent with input %s, kernel %d, stride %d"
                          % (op.where, op.out_shape, x.shape[1:], k, stride))
    return windows(x, k, k, stride, oh, ow)


def run_avgpool2d(op, x):
    zin = op.int_attr("in_zero_point")
    acc = (pool_windows(op, x).astype(np.int64) - zin).sum(axis=(4, 5))
    y = requant(acc, op.int_attr("multiplier"), op.int_attr("shift")) + op.out_zero_point
    return clamp(y, op.int_attr("act_min"), op.int_attr("act_max")).astype(np.int8)


def run_maxpool2d(op, x):
    return pool_windows(op, x).max(axis=(4, 5)).astype(np.int8)


def run_relu(op, x):
    return np.maximum(x, np.int8(op.out_zero_point)).astype(np.int8)


def run_flatten(op, x):
    return x.reshape(x.shape[0], -1)


def run_lut(op, x):
    table = op.dataset("table", np.int8, (256,))
    return table[x.astype(np.int64) + 128]


def run_upsample(op, x):
    f = op.int_attr("scale")
    if f < 1:
        raise FormatError("%s: scale %d < 1" % (op.where, f))
    return np.repeat(np.repeat(x, f, axis=2), f, axis=3)


def run_concat(op, xs):
    k = len(xs)
    m = op.int_array_attr("multiplier", k)
    s = op.int_array_attr("shift", k)
    z = op.int_array_attr("in_zero_point", k)
    lo, hi = op.int_attr("act_min"), op.int_attr("act_max")
    if any(x.ndim != xs[0].ndim or x.shape[2:] != xs[0].shape[2:] for x in xs):
        raise FormatError("%s: inputs of shapes %s cannot be concatenated"
                          % (op.where, [x.shape[1:] for x in xs]))
    ys = [clamp(requant(x.astype(np.int64) - z[i], m[i], s[i]) + op.out_zero_point, lo, hi)
          for i, x in enumerate(xs)]
    return np.concatenate(ys, axis=1).astype(np.int8)


UNARY = {
    "conv2d": run_conv2d,
    "linear": run_linear,
    "global_avgpool": run_global_avgpool,
    "avgpool2d": run_avgpool2d,
    "maxpool2d": run_maxpool2d,
    "relu": run_relu,
    "flatten": run_flatten,
    "lut": run_lut,
    "upsample": run_upsample,
}


def run_model(ops, inputs):
    """inputs: ('pixels', uint8 [N,C,H,W]) or ('float', float32 [N,C,H,W])."""
    op0 = ops[0]
    kind, data = inputs
    if tuple(data.shape[1:]) != op0.out_shape:
        raise FormatError("input per-sample shape %s, model expects %s"
                          % (tuple(data.shape[1:]), op0.out_shape))
    if kind == "pixels":
        lut = op0.dataset("lut", np.int8, (256,))
        check_lut(op0, lut)
        x = lut[data]
    else:
        x = quantize_float(data, op0)
    outs = [x]
    for op in ops[1:]:
        if op.type == "input":
            raise FormatError("%s: a second input op" % op.where)
        if op.type == "add":
            if len(op.inputs) != 2:
                raise FormatError("%s: add needs 2 inputs" % op.where)
            y = run_add(op, outs[op.inputs[0]], outs[op.inputs[1]])
        elif op.type == "concat":
            if len(op.inputs) < 2:
                raise FormatError("%s: concat needs at least 2 inputs" % op.where)
            y = run_concat(op, [outs[i] for i in op.inputs])
        elif op.type in UNARY:
            if len(op.inputs) != 1:
                raise FormatError("%s: %s needs 1 input" % (op.where, op.type))
            y = UNARY[op.type](op, outs[op.inputs[0]])
        else:
            raise FormatError("%s: unknown op type '%s'" % (op.where, op.type))
        if tuple(y.shape[1:]) != op.out_shape:
            raise FormatError("%s (%s): computed shape %s, out_shape %s"
                              % (op.where, op.type, tuple(y.shape[1:]), op.out_shape))
        outs.append(y)
    return outs[-1].reshape(data.shape[0], -1)


# --------------------------------------------------------------------------
# Float ops (docs/FORMAT-int8.md, "Float ops"): ops with a dtype attribute
# --------------------------------------------------------------------------

FLOAT_BATCH = 256  # `qat run` calls the runtime on 256 images at a time; a
                   # per-tensor dynamic scale covers one call


def op_dtype(op):
    """'float32' / 'float16' / 'bfloat16' for a float op, None for an int8 op."""
    if "dtype" not in op.group.attrs:
        return None
    d = _str(op.group.attrs["dtype"])
    if d not in ("float32", "float16", "bfloat16"):
        raise FormatError("%s: dtype '%s', expected float32, float16 or bfloat16" % (op.where, d))
    return d


def f16_round(v):
    """float64 -> nearest binary16 (ties to even, one rounding), saturating
    at +-65504, NaN kept; returned as float32."""
    v = np.asarray(v, dtype=np.float64)
    h = v.astype(np.float16)
    h = np.where(np.isinf(h) & ~np.isnan(v), np.sign(v) * np.float16(65504), h).astype(np.float16)
    return h.astype(np.float32)


def bf16_round(v):
    """float64 -> nearest bfloat16 (8 significant bits, ties to even, one
    rounding, subnormals), saturating at +-(2 - 2^-7) * 2^127, NaN kept;
    returned as float32."""
    v = np.asarray(v, dtype=np.float64)
    _, e = np.frexp(v)                              # |v| in [2^(e-1), 2^e)
    q = np.ldexp(1.0, np.maximum(e - 1, -126) - 7)  # the quantum at v
    r = np.rint(v / q) * q                          # rint: ties to even
    r = np.where(v == 0, v, r)
    mx = (2.0 - 2.0 ** -7) * 2.0 ** 127
    r = np.where(np.isnan(v), v, np.clip(r, -mx, mx))
    return r.astype(np.float32)


def f_round(op, v):
    d = op_dtype(op)
    if d == "float16":
        return f16_round(v)
    if d == "bfloat16":
        return bf16_round(v)
    return np.asarray(v, dtype=np.float64).astype(np.float32)


def f_relu(y):
    return np.where(y > 0, y, np.float32(0)).astype(np.float32)


def as_float(ops, index, x):
    """An op's output as float32: an int8 output dequantized."""
    if op_dtype(ops[index]) is not None:
        return x
    p = ops[index]
    return ((x.astype(np.int32) - p.out_zero_point).astype(np.float32) * p.out_scale).astype(np.float32)


def f_weights(op, shape):
    wd = _str(op.attr("weight_dtype"))
    if wd == "float32":
        return wd, op.dataset("weight", np.float32, shape)
    if wd == "float16":
        return wd, op.dataset("weight", np.uint16, shape).view(np.float16).astype(np.float32)
    if wd == "bfloat16":
        bits = op.dataset("weight", np.uint16, shape).astype(np.uint32) << 16
        w = bits.view(np.float32)
        if not np.all(np.isfinite(w)):
            raise FormatError("%s: weight is not finite bfloat16" % op.where)
        return wd, w
    if wd == "int8":
        return wd, op.dataset("weight", np.int8, shape)
    raise FormatError("%s: weight_dtype '%s'" % (op.where, wd))


def dyn_params(x):
    """Run-time activation scale and zero point of the values x (float32)."""
    lo = min(np.float32(0), np.float32(x.min()))
    hi = max(np.float32(0), np.float32(x.max()))
    s = np.float32((np.float64(hi) - np.float64(lo)) / 255.0)
    with np.errstate(divide="ignore", over="ignore"):
        if not s > 0 or np.isinf(np.float32(1) / s):
            s = np.float32(1)
    z = int(np.clip(-128.0 - np.rint(np.float64(lo) / np.float64(s)), -128, 127))
    return s, z


def dyn_quantize(op, x):
    """x [N, ...] -> (q - zp) int64 and the scale of each row (float32)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    per_row = _str(op.attr("act_quant")) == "row"
    if _str(op.attr("act_quant")) not in ("row", "tensor"):
        raise FormatError("%s: act_quant" % op.where)
    groups = [(r, r + 1) for r in range(n)] if per_row else [(0, n)]
    d = np.empty(flat.shape, dtype=np.int64)
    scales = np.empty(n, dtype=np.float32)
    for a, b in groups:
        s, z = dyn_params(flat[a:b])
        inv = np.float32(1) / s
        t = (flat[a:b] * inv).astype(np.float32)
        q = np.clip(np.rint(t).astype(np.int64) + z, -128, 127)
        d[a:b] = q - z
        scales[a:b] = s
    return d.reshape(x.shape), scales


def dyn_epilogue(op, acc, scales, oc):
    """y = float32(acc) * float32(s * weight_scale) + bias, acc [N, OC, ...]"""
    ws = op.dataset("weight_scale", np.float32, (oc,))
    bias = op.dataset("bias", np.float32, (oc,))
    extra = (1,) * (acc.ndim - 2)
    ms = (scales.reshape((-1, 1) + extra) * ws.reshape((1, oc) + extra)).astype(np.float32)
    t = (acc.astype(np.float32) * ms).astype(np.float32)
    return (t + bias.reshape((1, oc) + extra)).astype(np.float32)


def seq_dot(cols, w):
    """sum over k ascending, in float64, of cols[..., k] * w[o, k]: the
    order of the format (so the result is the C runtime's, bit for bit)."""
    acc = np.zeros(cols.shape[:-1] + (w.shape[0],), dtype=np.float64)
    w64 = w.astype(np.float64)
    c64 = cols.astype(np.float64)
    for k in range(w.shape[1]):
        acc += c64[..., k:k + 1] * w64[:, k]
    return acc


def f_conv2d(op, x):
    n, c, h, w = x.shape
    stride, pad = op.int_attr("stride"), op.int_attr("pad")
    oc, kh, kw = op.out_shape[0], None, None
    wshape = op.group["weight"].shape
    if len(wshape) != 4 or wshape[0] != oc or wshape[1] != c:
        raise FormatError("%s: weight shape %s" % (op.where, wshape))
    kh, kw = wshape[2], wshape[3]
    wd, weight = f_weights(op, wshape)
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    relu = op.int_attr("relu") if "relu" in op.group.attrs else 0
    if wd == "int8":
        d, scales = dyn_quantize(op, x)
        dp = np.pad(d, ((0, 0), (0, 0), (pad, pad), (pad, pad)))     # padding: q = zp, d = 0
        cols = windows(dp, kh, kw, stride, oh, ow)                    # [N, C, OH, OW, KH, KW]
        cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, -1)
        acc = np.einsum("nhwk,ok->nohw", cols, weight.reshape(oc, -1).astype(np.int64))
        y = dyn_epilogue(op, acc, scales, oc)
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))     # zeros add nothing
        cols = windows(xp, kh, kw, stride, oh, ow).transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, -1)
        acc = seq_dot(cols, weight.reshape(oc, -1)).transpose(0, 3, 1, 2)
        bias = op.dataset("bias", np.float32, (oc,)).astype(np.float64)
        y = f_round(op, acc + bias.reshape(1, oc, 1, 1))
    return f_relu(y) if relu else y


def f_linear(op, x):
    x = x.reshape(x.shape[0], -1)
    nout = op.out_shape[0]
    wd, weight = f_weights(op, (nout, x.shape[1]))
    relu = op.int_attr("relu") if "relu" in op.group.attrs else 0
    if wd == "int8":
        d, scales = dyn_quantize(op, x)
        acc = np.matmul(d, weight.astype(np.int64).T)                 # exact
        y = dyn_epilogue(op, acc, scales, nout)
    else:
        bias = op.dataset("bias", np.float32, (nout,)).astype(np.float64)
        y = f_round(op, seq_dot(x, weight) + bias)
    return f_relu(y) if relu else y


def f_pool(op, x):
    if op.type == "global_avgpool":
        n, c, h, w = x.shape
        s = np.zeros((n, c), dtype=np.float64)
        for i in range(h):
            for j in range(w):
                s += x[:, :, i, j].astype(np.float64)
        return f_round(op, s / float(h * w))
    win = pool_windows(op, x)                                         # [N, C, OH, OW, K, K]
    if op.type == "maxpool2d":
        return win.max(axis=(4, 5)).astype(np.float32)
    k = win.shape[4]
    s = np.zeros(win.shape[:4], dtype=np.float64)
    for i in range(k):
        for j in range(k):
            s += win[..., i, j].astype(np.float64)
    return f_round(op, s / float(k * k))


def f_add(op, a, b):
    if op_dtype(op) in ("float16", "bfloat16"):
        y = f_round(op, a.astype(np.float64) + b.astype(np.float64))
    else:
        y = (a + b).astype(np.float32)
    relu = op.int_attr("relu") if "relu" in op.group.attrs else 0
    return f_relu(y) if relu else y


def f_input(op, kind, data):
    if kind == "pixels":
        mean = np.float32(_scalar(op.attr("mean"), "mean"))
        std = np.float32(_scalar(op.attr("std"), "std"))
        x = (((data.astype(np.float32) / np.float32(255)).astype(np.float32) - mean) / std).astype(np.float32)
    else:
        x = data.astype(np.float32)
    return x if op_dtype(op) == "float32" else f_round(op, x)


def run_float_batch(ops, kind, data):
    """One runtime call's worth of images through a model with float ops."""
    op0 = ops[0]
    if op_dtype(op0) is None:
        x = op0.dataset("lut", np.int8, (256,))[data] if kind == "pixels" else quantize_float(data, op0)
    else:
        x = f_input(op0, kind, data)
    outs = [x]
    for op in ops[1:]:
        if op_dtype(op) is None:
            if any(op_dtype(ops[i]) is not None for i in op.inputs):
                raise FormatError("%s: an int8 op reading a float op" % op.where)
            if op.type == "add":
                y = run_add(op, outs[op.inputs[0]], outs[op.inputs[1]])
            elif op.type == "concat":
                y = run_concat(op, [outs[i] for i in op.inputs])
            elif op.type in UNARY:
                y = UNARY[op.type](op, outs[op.inputs[0]])
            else:
                raise FormatError("%s: unknown op type '%s'" % (op.where, op.type))
        else:
            if op.type == "conv2d" and "groups" in op.group.attrs and op.int_attr("groups") != 1:
                raise FormatError("%s: a float conv2d with groups %d (grouped convs are int8 only)"
                                  % (op.where, op.int_attr("groups")))
            ins = [as_float(ops, i, outs[i]) for i in op.inputs]
            if op.type == "conv2d":
                y = f_conv2d(op, ins[0])
            elif op.type == "linear":
                y = f_linear(op, ins[0])
            elif op.type in ("global_avgpool", "avgpool2d", "maxpool2d"):
                y = f_pool(op, ins[0])
            elif op.type == "relu":
                y = f_relu(ins[0])
            elif op.type == "flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif op.type == "add":
                y = f_add(op, ins[0], ins[1])
            else:   # lut, concat, upsample (version 3) are int8 only
                raise FormatError("%s: op type '%s' has no float form" % (op.where, op.type))
        if tuple(y.shape[1:]) != op.out_shape:
            raise FormatError("%s (%s): computed shape %s, out_shape %s"
                              % (op.where, op.type, tuple(y.shape[1:]), op.out_shape))
        outs.append(y)
    return as_float(ops, len(ops) - 1, outs[-1]).reshape(data.shape[0], -1)


def run_float_model(ops, inputs):
    kind, data = inputs
    return np.concatenate([run_float_batch(ops, kind, data[s:s + FLOAT_BATCH])
                           for s in range(0, data.shape[0], FLOAT_BATCH)])


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def read_idx(path):
    """An IDX file (raw or gzip) -> numpy array (uint8 data only)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise FormatError("%s: too short for an IDX file" % path)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise FormatError("%s: magic 0x%08x, expected uint8 IDX (0x000008nn)"
                          % (path, struct.unpack(">I", raw[:4])[0]))
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    count = int(np.prod(dims, dtype=np.int64))
    if len(body) != count:
        raise FormatError("%s: %d data bytes, header says %d" % (path, len(body), count))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_input(path, in_shape):
    if path.endswith(".npy"):
        a = np.load(path)
    else:
        a = read_idx(path)
    if a.ndim == 3 and in_shape[0] == 1:
        a = a.reshape(a.shape[0], 1, a.shape[1], a.shape[2])
    if a.ndim != 4:
        raise FormatError("%s: input of shape %s, expected [N, C, H, W] or [N, H, W]"
                          % (path, a.shape))
    if a.dtype == np.uint8:
        return ("pixels", a)
    if a.dtype == np.float32:
        return ("float", a)
    raise FormatError("%s: dtype %s, expected uint8 pixels or float32" % (path, a.dtype))


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: %s MODEL.int8.h5 INPUT OUT.npy\n" % argv[0])
        return 2
    model, inp, out = argv[1:]
    try:
        f, ops = load_model(model)
        with f:
            inputs = load_input(inp, ops[0].out_shape)
            if any(op_dtype(op) is not None for op in ops):
                logits = run_float_model(ops, inputs)     # float32 logits
            else:
                logits = run_model(ops, inputs).astype(np.int8)
    except (FormatError, OSError, KeyError, ValueError) as e:
        sys.stderr.write("int8_runner: %s\n" % e)
        return 1
    np.save(out, logits)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
