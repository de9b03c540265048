#!/usr/bin/env python3
"""Golden values for tests/test_fakequant.c and tests/test_qparams.c, from
PyTorch's own kernels (CPU):

  --fakequant  torch.fake_quantize_per_tensor_affine (+ its mask gradient),
               torch.fake_quantize_per_channel_affine,
               torch._fake_quantize_learnable_per_tensor_affine and
               _per_channel_affine (LSQ: dX, dScale, dZeroPoint)
  --qparams    torch.ao.quantization.MinMaxObserver(...).calculate_qparams()

Prints C initialisers to paste into the tests. Run with the Debian
python3-torch: /usr/bin/python3 tests/gen_fakequant_golden.py --fakequant
Floats are printed with the fewest digits that round-trip float32.

Where qat deliberately differs from PyTorch the generator avoids the case
and says so (see docs/QUANT.md):
  * symmetric unsigned zero point: qat (qmin+qmax+1)/2, PyTorch with a
    custom range (qmin+qmax)//2; the table takes PyTorch's scale and qat's zp.
  * learnable per-tensor backward: PyTorch rounds the float zero point as
    (int)(z + 0.5f) (truncation) while the forward uses nearbyint; for a
    negative integer-valued z that is z + 1. qat uses the forward's zp, so
    the per-tensor LSQ goldens use zero points >= 0 where both agree.
"""
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.manual_seed(0)
rng = np.random.default_rng(12345)


def lit(v):
    v = np.float32(v)
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    s = np.format_float_scientific(v, unique=True, trim="0")  # shortest round trip
    m, e = s.split("e")
    e = int(e)
    if -5 <= e <= 8:  # plain notation where it is short
        s = np.format_float_positional(v, unique=True, trim="0")
    else:
        s = "%se%d" % (m, e)
    assert np.float32(s) == v
    return s + "f"


def arr(name, values, ctype="float", per_line=6):
    fmt = lit if ctype == "float" else (lambda v: "%d" % v)
    vals = [fmt(v) for v in np.asarray(values).ravel()]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return "static const %s %s[%d] = {\n    %s,\n};\n" % (ctype, name, len(vals), ",\n    ".join(lines))


def fq_inputs(scale, n_random):
    """Ties (x * fl32(1/s) exactly k + 0.5), edges, out of range, random."""
    inv = np.float32(1.0) / np.float32(scale)
    ks = np.arange(-140, 140, 7, dtype=np.float32)
    ties = (ks + np.float32(0.5)) / inv  # exact when s is a power of two
    ties = ties[(ties * inv) == ks + np.float32(0.5)]
    rand = rng.uniform(-160, 160, n_random).astype(np.float32) * np.float32(scale)
    special = np.array([0.0, -0.0, 1e6, -1e6], dtype=np.float32)
    return np.concatenate([ties, rand, special]).astype(np.float32)


def gen_fakequant():
    out = []
    # ---- per tensor forward + mask ----
    configs = [(0.25, 0, -128, 127), (0.25, 3, -128, 127), (0.1, -7, -128, 127),
               (0.0625, 5, 0, 15), (0.5, 0, -7, 7)]
    out.append("/* per-tensor fake-quant: (scale, zp, qmin, qmax), inputs, outputs, masks */")
    out.append("#define FQ_NCONFIG %d" % len(configs))
    xs, ys, ms = [], [], []
    n_each = None
    for (s, z, lo, hi) in configs:
        x = fq_inputs(s, 24)
        if n_each is None:
            n_each = len(x)
        x = x[:n_each]
        if len(x) < n_each:
            x = np.concatenate([x, rng.uniform(-40, 40, n_each - len(x)).astype(np.float32)])
        xt = torch.tensor(x, requires_grad=True)
        y = torch.fake_quantize_per_tensor_affine(xt, s, z, lo, hi)
        y.backward(torch.ones_like(y))
        xs.append(x)
        ys.append(y.detach().numpy())
        ms.append(xt.grad.numpy().astype(np.int32))
    out.append("#define FQ_N %d" % n_each)
    out.append("static const struct { float scale; int32_t zp, qmin, qmax; } fq_cfg[FQ_NCONFIG] = {")
    for (s, z, lo, hi) in configs:
        out.append("    {%s, %d, %d, %d}," % (lit(s), z, lo, hi))
    out.append("};")
    out.append(arr("fq_x", np.concatenate(xs)))
    out.append(arr("fq_y", np.concatenate(ys)))
    out.append(arr("fq_mask", np.concatenate(ms), "uint8_t", 20))

    # ---- per channel, axis 1 of (2, 3, 5) ----
    shape = (2, 3, 5)
    x = rng.uniform(-3, 3, shape).astype(np.float32)
    sc = np.array([0.05, 0.01, 0.1], dtype=np.float32)
    zp = np.array([0, 10, -20], dtype=np.int32)
    xt = torch.tensor(x, requires_grad=True)
    y = torch.fake_quantize_per_channel_affine(xt, torch.tensor(sc), torch.tensor(zp), 1, -128, 127)
    y.backward(torch.ones_like(y))
    out.append("/* per-channel fake-quant, axis 1 of (2, 3, 5), [-128, 127] */")
    out.append(arr("fqc_x", x))
    out.append(arr("fqc_scale", sc))
    out.append(arr("fqc_zp", zp, "int32_t"))
    out.append(arr("fqc_y", y.detach().numpy()))
    out.append(arr("fqc_mask", xt.grad.numpy().astype(np.int32), "uint8_t", 15))

    # ---- LSQ per tensor ----
    out.append("/* learnable per tensor: (scale, zp, qmin, qmax, grad_factor), x, dy -> dx, dscale, dzp */")
    lsq_cfg = [(0.1, 0.0, -8, 7), (0.05, 3.0, 0, 15), (0.2, 0.0, -1, 1)]
    n = 40
    lx, ldy, ldx, lds, ldz = [], [], [], [], []
    for (s, z, lo, hi) in lsq_cfg:
        x = rng.uniform(-1.2, 1.2, n).astype(np.float32)
        dy = rng.normal(0, 1, n).astype(np.float32)
        g = 1.0 / np.sqrt(n * hi)
        xt = torch.tensor(x, requires_grad=True)
        st = torch.tensor([s], dtype=torch.float32, requires_grad=True)
        zt = torch.tensor([z], dtype=torch.float32, requires_grad=True)
        y = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, lo, hi, g)
        y.backward(torch.tensor(dy))
        lx.append(x)
        ldy.append(dy)
        ldx.append(xt.grad.numpy())
        lds.append(st.grad.item())
        ldz.append(zt.grad.item())
    out.append("#define LSQ_NCONFIG %d\n#define LSQ_N %d" % (len(lsq_cfg), n))
    out.append("static const struct { float scale; int32_t zp, qmin, qmax; float grad_factor, dscale, dzp; } lsq_cfg[LSQ_NCONFIG] = {")
    for (s, z, lo, hi), ds, dz in zip(lsq_cfg, lds, ldz):
        g = np.float32(1.0 / np.sqrt(n * hi))
        out.append("    {%s, %d, %d, %d, %s, %s, %s}," % (lit(s), int(z), lo, hi, lit(g), lit(ds), lit(dz)))
    out.append("};")
    out.append(arr("lsq_x", np.concatenate(lx)))
    out.append(arr("lsq_dy", np.concatenate(ldy)))
    out.append(arr("lsq_dx", np.concatenate(ldx)))

    # ---- LSQ per channel, axis 0 of (3, 2, 4) (zero points may be negative:
    # the per-channel backward rounds them like the forward) ----
    shape = (3, 2, 4)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    dy = rng.normal(0, 1, shape).astype(np.float32)
    sc = np.array([0.1, 0.05, 0.2], dtype=np.float32)
    zp = np.array([0.0, -3.0, 2.0], dtype=np.float32)
    lo, hi = -8, 7
    g = 1.0 / np.sqrt(8 * hi)
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(sc, requires_grad=True)
    zt = torch.tensor(zp, requires_grad=True)
    y = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, 0, lo, hi, g)
    y.backward(torch.tensor(dy))
    out.append("/* learnable per channel, axis 0 of (3, 2, 4), [-8, 7], grad_factor 1/sqrt(8*7) */")
    out.append("#define LSQC_GRAD_FACTOR %s" % lit(np.float32(g)))
    out.append(arr("lsqc_x", x))
    out.append(arr("lsqc_dy", dy))
    out.append(arr("lsqc_scale", sc))
    out.append(arr("lsqc_zp", zp.astype(np.int32), "int32_t"))
    out.append(arr("lsqc_dx", xt.grad.numpy()))
    out.append(arr("lsqc_dscale", st.grad.numpy()))
    out.append(arr("lsqc_dzp", zt.grad.numpy()))
    print("\n".join(out))


def gen_qparams():
    schemes = [("NARROW_SYM", 1, 1, 1), ("SYM_SIGNED", 1, 1, 0), ("AFF_SIGNED", 0, 1, 0),
               ("AFF_UNSIGNED", 0, 0, 0), ("SYM_UNSIGNED", 1, 0, 0)]
    cases = [(-1.0, 2.0), (0.0, 0.0), (3.0, 3.0), (-3.0, -3.0), (0.5, 4.0), (-4.0, -0.5),
             (-1e-30, 1e-30), (-1e30, 1e30), (-2.0, 1e30), (-0.3, 0.7)]
    for bits in (8, 4, 2):
        for name, sym, signed, narrow in schemes:
            if signed:
                half = 1 << (bits - 1)
                qmin, qmax = (-(half - 1) if narrow else -half), half - 1
            else:
                qmin, qmax = 0, (1 << bits) - 1
            for mn, mx in cases:
                obs = torch.ao.quantization.MinMaxObserver(
                    dtype=torch.qint8 if signed else torch.quint8,
                    qscheme=torch.per_tensor_symmetric if sym else torch.per_tensor_affine,
                    quant_min=qmin, quant_max=qmax)
                obs(torch.tensor([mn, mx], dtype=torch.float32))
                s, z = obs.calculate_qparams()
                z = int(z.item())
                if sym and not signed:
                    z = (qmin + qmax + 1) // 2  # qat's rule (PyTorch: (qmin+qmax)//2)
                print("    {%d, %s, %s, %s, %s, %d}," % (bits, name, lit(mn), lit(mx),
                                                     lit(s.item()), z))


if __name__ == "__main__":
    if "--qparams" in sys.argv:
        gen_qparams()
    else:
        gen_fakequant()
