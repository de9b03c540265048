#!/usr/bin/env python3
"""Synthetic int8 model files of format version 3 (docs/FORMAT-int8.md),
written with h5py from the document alone: grouped and depthwise conv2d,
act_max_channel, lut, concat (requantized and identity inputs, spatial and
flat), upsample. tests/test_int8_runner.sh --v3 runs each through `qat run`
and tests/int8_runner.py and compares the logits bit for bit.

usage: gen_int8_v3.py OUT_DIR [SEED]   (writes OUT_DIR/<name>.int8.h5, prints the names)
"""
import math
import sys

import h5py
import numpy as np


def to_mult(real):
    """real multiplier -> (m in [2^30, 2^31), shift), docs/FORMAT-int8.md."""
    f, e = math.frexp(real)
    q = int(round(f * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        e += 1
    if e < -31:
        return 0, 0
    if e > 30:
        return (1 << 31) - 1, 30
    return q, e


class Model:
    def __init__(self, rng, c, h, w):
        self.rng = rng
        self.ops = []
        zp = int(rng.integers(-128, 128))
        scale = 1.0 / 64
        p = np.arange(256, dtype=np.float32)
        mean, std = np.float32(0.25), np.float32(0.5)
        x = (((p / np.float32(255)).astype(np.float32) - mean) / std).astype(np.float32)
        inv = np.float32(np.float32(1) / np.float32(scale))
        q = np.clip(zp + np.rint((x * inv).astype(np.float32)), -128, 127).astype(np.int8)
        self.add("input", [], (c, h, w), zp, scale,
                 attrs=dict(mean=mean, std=std, act_min=-128, act_max=127), dsets=dict(lut=q))

    def add(self, typ, inputs, shape, zp, scale=0.05, attrs=None, dsets=None):
        self.ops.append(dict(type=typ, inputs=list(inputs), shape=tuple(shape), zp=int(zp),
                             scale=float(scale), attrs=attrs or {}, dsets=dsets or {}))
        return len(self.ops) - 1

    def shape(self, i):
        return self.ops[i]["shape"]

    def zp(self, i):
        return self.ops[i]["zp"]

    def conv(self, x, oc, k, stride=1, pad=0, groups=1, amc=False, relu=False, write_groups=None):
        rng = self.rng
        c, h, w = self.shape(x)
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        kk = c // groups * k * k
        weight = rng.integers(-127, 128, size=(oc, c // groups, k, k)).astype(np.int8)
        if rng.integers(0, 4) == 0:
            weight[0] = 127 if rng.integers(0, 2) else -128  # an extreme channel
        bias = rng.integers(-5000, 5000, size=oc).astype(np.int32)
        mm = [to_mult(40.0 / (math.sqrt(kk) * 73 * 75) * 2 ** (3 * rng.random() - 1.5)) for _ in range(oc)]
        zp = int(rng.integers(-128, 128))
        attrs = dict(stride=stride, pad=pad, in_zero_point=self.zp(x),
                     act_min=zp if relu else -128, act_max=127)
        if groups != 1 or write_groups:
            attrs["groups"] = groups
        dsets = dict(weight=weight, bias=bias,
                     multiplier=np.array([m for m, _ in mm], np.int32),
                     shift=np.array([s for _, s in mm], np.int32),
                     weight_scale=np.full(oc, 0.01, np.float32))
        if amc:
            lo = attrs["act_min"]
            dsets["act_max_channel"] = rng.integers(lo, 128, size=oc).astype(np.int32)
        return self.add("conv2d", [x], (oc, oh, ow), zp, attrs=attrs, dsets=dsets)

    def linear(self, x, n, amc=False, gain=1.0):
        rng = self.rng
        k = int(np.prod(self.shape(x)))
        weight = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
        bias = rng.integers(-5000, 5000, size=n).astype(np.int32)
        mm = [to_mult(gain * 40.0 / (math.sqrt(k) * 73 * 75)) for _ in range(n)]
        zp = int(rng.integers(-128, 128))
        dsets = dict(weight=weight, bias=bias,
                     multiplier=np.array([m for m, _ in mm], np.int32),
                     shift=np.array([s for _, s in mm], np.int32))
        if amc:
            dsets["act_max_channel"] = rng.integers(0, 128, size=n).astype(np.int32)
        return self.add("linear", [x], (n,), zp,
                        attrs=dict(in_zero_point=self.zp(x), act_min=-128, act_max=127), dsets=dsets)

    def lut(self, x):
        t = np.clip(np.arange(-128, 128) // 2 + self.rng.integers(-20, 20, size=256), -128, 127)
        # the table is centred near 0: so is its zero point
        return self.add("lut", [x], self.shape(x), int(self.rng.integers(-8, 8)),
                        dsets=dict(table=t.astype(np.int8)))

    def upsample(self, x, f):
        c, h, w = self.shape(x)
        return self.add("upsample", [x], (c, h * f, w * f), self.zp(x), self.ops[x]["scale"],
                        attrs=dict(scale=f))

    def concat(self, xs, identity=()):
        rng = self.rng
        zp = int(rng.integers(-128, 128))
        m, s, z = [], [], []
        for j, x in enumerate(xs):
            if j in identity:
                mj, sj, zj = 1 << 30, 1, zp
            else:
                (mj, sj), zj = to_mult(2 ** (3 * rng.random() - 2)), self.zp(x)
            m.append(mj)
            s.append(sj)
            z.append(zj)
        sh = list(self.shape(xs[0]))
        sh[0] = sum(self.shape(x)[0] for x in xs)
        return self.add("concat", xs, sh, zp,
                        attrs=dict(multiplier=np.array(m, np.int32), shift=np.array(s, np.int32),
                                   in_zero_point=np.array(z, np.int32), act_min=-128, act_max=127))

    def pool(self, typ, x, k=2, s=2, gain=1.0):
        c, h, w = self.shape(x)
        if typ == "global_avgpool":
            m, sh = to_mult(gain / (h * w))
            return self.add(typ, [x], (c,), int(self.rng.integers(-128, 128)),
                            attrs=dict(in_zero_point=self.zp(x), multiplier=m, shift=sh, act_min=-128, act_max=127))
        shape = (c, (h - k) // s + 1, (w - k) // s + 1)
        if typ == "maxpool2d":
            return self.add(typ, [x], shape, self.zp(x), attrs=dict(kernel=k, stride=s))
        m, sh = to_mult(1.0 / (k * k))
        return self.add(typ, [x], shape, int(self.rng.integers(-128, 128)),
                        attrs=dict(kernel=k, stride=s, in_zero_point=self.zp(x), multiplier=m, shift=sh,
                                   act_min=-128, act_max=127))

    def flatten(self, x):
        return self.add("flatten", [x], (int(np.prod(self.shape(x))),), self.zp(x))

    def write(self, path):
        str_t = h5py.string_dtype("utf-8")
        with h5py.File(path, "w") as f:
            f.attrs.create("qat_format", "int8-model", dtype=str_t)
            f.attrs["format_version"] = np.int32(3)
            f.attrs.create("arch", "custom", dtype=str_t)
            f.attrs["num_ops"] = np.int32(len(self.ops))
            g = f.create_group("ops")
            for i, o in enumerate(self.ops):
                og = g.create_group("%03d" % i)
                og.attrs.create("type", o["type"], dtype=str_t)
                og.attrs.create("name", "%s%d" % (o["type"], i), dtype=str_t)
                og.attrs["inputs"] = np.array(o["inputs"], np.int32)
                og.attrs["out_shape"] = np.array(o["shape"], np.int32)
                og.attrs["out_scale"] = np.float32(o["scale"])
                og.attrs["out_zero_point"] = np.int32(o["zp"])
                for k, v in o["attrs"].items():
                    if isinstance(v, np.ndarray):
                        og.attrs[k] = v
                    elif isinstance(v, (np.floating, float)):
                        og.attrs[k] = np.float32(v)
                    else:
                        og.attrs[k] = np.int32(v)
                for k, v in o["dsets"].items():
                    og.create_dataset(k, data=v)


def mbv2(rng):
    """A MobileNetV2-like stack: stem, inverted residuals with depthwise
    3x3 stride 2 and 1, per-channel clamps, a LUT activation, an add."""
    m = Model(rng, 1, 28, 28)
    x = m.conv(0, 16, 3, 1, 1, amc=True, relu=True, write_groups=True)
    x = m.conv(x, 48, 1, amc=True, relu=True)
    x = m.conv(x, 48, 3, 2, 1, groups=48, amc=True, relu=True)      # 14x14
    x = m.conv(x, 24, 1)
    y = m.conv(x, 96, 1, relu=True)
    y = m.conv(y, 96, 3, 1, 1, groups=96, amc=True)
    y = m.lut(y)                                                    # hardswish-like
    y = m.conv(y, 24, 1)
    a = m.add("add", [x, y], m.shape(x), int(rng.integers(-128, 128)),
              attrs=dict(multiplier=np.array([1 << 29, 1 << 29], np.int32), add_shift=30,
                         in_zero_point=np.array([m.zp(x), m.zp(y)], np.int32), act_min=-128, act_max=127))
    a = m.conv(a, 144, 1, relu=True)
    a = m.conv(a, 144, 3, 2, 1, groups=144, amc=True)               # 7x7
    a = m.conv(a, 32, 1)
    a = m.pool("global_avgpool", a, gain=6.0)
    m.linear(a, 10, amc=True, gain=6.0)
    return m


def grouped(rng):
    """Grouped convs that are not depthwise 3x3: several channels a group,
    channel multipliers 2 and 3, 5x5 and 1x1 kernels, stride 3."""
    m = Model(rng, 1, 28, 28)
    x = m.conv(0, 6, 3, 1, 1, relu=True)
    x = m.conv(x, 9, 3, 1, 1, groups=3)
    x = m.conv(x, 6, 1, groups=3, amc=True)
    x = m.conv(x, 12, 3, 2, 1, groups=6)                             # multiplier 2
    x = m.conv(x, 12, 5, 1, 2, groups=4)
    x = m.conv(x, 36, 3, 3, 0, groups=12)                            # multiplier 3, stride 3
    x = m.pool("maxpool2d", x)
    x = m.flatten(x)
    m.linear(x, 10)
    return m


def concat_up(rng):
    """lut, upsample (2 and 3), concat of 3 spatial inputs (one identity) and
    of 2 flat ones, avgpool2d."""
    m = Model(rng, 1, 28, 28)
    a = m.conv(0, 4, 3, 2, 1)                                        # 14x14
    b = m.conv(a, 5, 3, 2, 1)                                        # 7x7
    u = m.upsample(b, 2)                                             # 14x14
    h = m.lut(a)
    c = m.concat([a, u, h], identity=(1,))
    c = m.conv(c, 13, 3, 1, 1, groups=13)
    p = m.pool("avgpool2d", c, 2, 2)                                 # 7x7
    t = m.upsample(m.conv(p, 3, 3, 3, 1), 3)                         # 3x3 -> 9x9
    f1 = m.flatten(p)
    f2 = m.flatten(t)
    f = m.concat([f1, f2])
    f = m.lut(f)
    m.linear(f, 10)
    return m


def mobilenet_hs(rng):
    """The shapes of qat's reference mobilenet-hs (docs/MODELS.md): stem,
    seven inverted residual blocks IR(cin, cout, t, s), 1x1 head, GAP,
    linear; ReLU6 as a fused clamp with per-channel bounds in blocks 0..2,
    hard-swish as a lut after the conv from block 3 on and in the head."""
    m = Model(rng, 1, 28, 28)

    def act(x, hs):
        return m.lut(x) if hs else x

    def add(a, b):
        return m.add("add", [a, b], m.shape(a), int(rng.integers(-128, 128)),
                     attrs=dict(multiplier=np.array([1 << 29, 1 << 29], np.int32), add_shift=30,
                                in_zero_point=np.array([m.zp(a), m.zp(b)], np.int32), act_min=-128, act_max=127))

    x = m.conv(0, 16, 3, 1, 1, amc=True, relu=True)
    for i, (cin, cout, t, s) in enumerate([(16, 16, 1, 1), (16, 24, 4, 2), (24, 24, 4, 1), (24, 32, 4, 2),
                                           (32, 32, 4, 1), (32, 64, 4, 1), (64, 64, 4, 1)]):
        hs = i >= 3
        y = x
        if t != 1:
            y = act(m.conv(y, cin * t, 1, amc=not hs, relu=not hs), hs)
        y = act(m.conv(y, cin * t, 3, s, 1, groups=cin * t, amc=not hs, relu=not hs), hs)
        y = m.conv(y, cout, 1)
        x = add(x, y) if s == 1 and cin == cout else y
    x = act(m.conv(x, 256, 1), True)
    x = m.pool("global_avgpool", x, gain=2.0)
    m.linear(x, 10, gain=1.0)
    return m


MODELS = {"v3-mbv2": mbv2, "v3-grouped": grouped, "v3-concat-up": concat_up, "v3-mobilenet-hs": mobilenet_hs}


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write(__doc__)
        return 2
    seed = int(argv[2]) if len(argv) == 3 else 1
    for i, (name, fn) in enumerate(MODELS.items()):
        fn(np.random.default_rng(seed * 100 + i)).write("%s/%s.int8.h5" % (argv[1], name))
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
