/* runtime/float_ops_simd.c: SIMD kernels of the float conv2d and linear
 * (float32 / float16 weights), bit-identical to the portable ones in
 * float_ops.c (tests/test_dynamic.c compares them).
 *
 * The format fixes each output's arithmetic (docs/FORMAT-int8.md, "Float
 * ops"): a float64 sum over k ascending of float64(x) * float64(w) from +0,
 * then + float64(bias), one rounding (float32, or binary16 for a float16
 * op), ReLU. These kernels keep exactly that per output and vectorise
 * ACROSS outputs: a lane holds one output (conv: one output position of
 * one channel; linear: one output feature of one sample) and runs its own
 * sum in the same k order.
 *
 * Multiply and add are two IEEE double operations (no fused multiply-add
 * is asked for; with -std=c11 GCC does not contract). The product of two
 * float32 values is exact in double (24 + 24 significant bits <= 53, the
 * exponents far inside double's range), so the multiply rounds nothing and
 * the add is the one rounding the scalar `acc += x * w` makes. An FMA would
 * give the same bits for the same reason, so a build that contracts stays
 * exact; but nothing here depends on it.
 *
 * Conv padding: positions outside the image are read as +0 from a zero
 * padded copy of the image. The format allows it: +-0 * w (w finite) added
 * to the sum changes nothing, since the sum starts at +0 and an IEEE sum
 * that cancels to zero is +0, never -0.
 *
 * Written once with GCC vector extensions (8 doubles a vector) and compiled
 * twice through function target attributes: AVX-512F (a vector is one zmm;
 * tiles of 6 channels / rows x 4 vectors, 24 of the 32 registers) and AVX2
 * (two ymm; 3 x 2, 12 of the 16). */
#ifndef FOS_SUF /* ---- the file: the portable part, then the two copies ---- */
#include <stdint.h>
#include <string.h>

#include "core/internal.h"
#include "runtime/rt_internal.h"

/* the padded, phase-split image of one input x [IC, H, W] (portable; only
 * the pixels inside the image are written, the rest stays zero) */
void qat_rti_fconv_pad(const rt_op *op, const float *x, double *pad)
{
    const int IC = op->ic, H = op->in_h, W = op->in_w, S = op->stride, P = op->pad;
    const size_t plane = (size_t)op->fhs * op->fws;
    for (int ic = 0; ic < IC; ic++)
        for (int ih = 0; ih < H; ih++) {
            const float *xr = x + ((size_t)ic * H + ih) * W;
            const int a = ih + P;
            if (S == 1) {
                double *d = pad + (size_t)ic * plane + (size_t)a * op->fws + P;
                for (int iw = 0; iw < W; iw++) d[iw] = xr[iw];
                continue;
            }
            for (int iw = 0; iw < W; iw++) {
                const int b = iw + P;
                pad[((size_t)(ic * S + a % S) * S + b % S) * plane + (size_t)(a / S) * op->fws + b / S] = xr[iw];
            }
        }
}

#if defined(__x86_64__) && defined(__GNUC__)

/* the helpers below take and return vectors but are always inlined into
 * the AVX-512 / AVX2 functions: no call crosses the ABI it warns of */
#pragma GCC diagnostic ignored "-Wpsabi"

#define AI static inline __attribute__((always_inline))
#define FOS_CAT2(a, b) a##_##b
#define FOS_CAT(a, b) FOS_CAT2(a, b)
#define FN(name) FOS_CAT(name, FOS_SUF)

/* output positions [q, q + n) of channel plane yc from t (q = oh * fws + ow;
 * positions with ow >= OW are not outputs) */
static void put_q(const rt_op *op, const float *t, float *yc, int q, int n)
{
    const int Ws = op->fws, OW = op->out_shape[2];
    int oh = q / Ws, ow = q - oh * Ws;
    for (int i = 0; i < n;) {
        int len = Ws - ow < n - i ? Ws - ow : n - i;
        if (ow < OW) memcpy(yc + (size_t)oh * OW + ow, t + i, (size_t)(OW - ow < len ? OW - ow : len) * sizeof *t);
        i += len;
        oh++;
        ow = 0;
    }
}

/* the loops over tiles: mr a constant in each case so the accumulators
 * stay in registers */
#define TILE_CASES(call, MRX)                                                                      \
    switch (MRX) {                                                                                 \
    case 1: call(1); break;                                                                        \
    case 2: call(2); break;                                                                        \
    case 3: call(3); break;                                                                        \
    case 4: call(4); break;                                                                        \
    case 5: call(5); break;                                                                        \
    default: call(6); break;                                                                       \
    }

#define FOS_SUF avx512
#define FOS_TARGET "avx512f"
#define FOS_VL 8
#define FOS_MR 6
#define FOS_NV 4
#include "runtime/float_ops_simd.c"
#undef FOS_SUF
#undef FOS_TARGET
#undef FOS_VL
#undef FOS_MR
#undef FOS_NV

#define FOS_SUF avx2
#define FOS_TARGET "avx2"
#define FOS_VL 4
#define FOS_MR 3
#define FOS_NV 4
#include "runtime/float_ops_simd.c"

int qat_rti_fconv_simd(qat_rt_isa isa, const rt_op *op, const double *pad, float *y, int q0, int q1)
{
    if (!op->fw) return 0;
    if (isa == QAT_RT_ISA_AVX512_VNNI) fconv_avx512(op, pad, y, q0, q1);
    else if (isa == QAT_RT_ISA_AVX2) fconv_avx2(op, pad, y, q0, q1);
    else return 0;
    return 1;
}

int qat_rti_flinear_simd(qat_rt_isa isa, const rt_op *op, const float *x, float *y, int n0, int n1)
{
    if (!op->fw) return 0;
    if (isa == QAT_RT_ISA_AVX512_VNNI) flinear_avx512(op, x, y, n0, n1);
    else if (isa == QAT_RT_ISA_AVX2) flinear_avx2(op, x, y, n0, n1);
    else return 0;
    return 1;
}

#else

int qat_rti_fconv_simd(qat_rt_isa isa, const rt_op *op, const double *pad, float *y, int q0, int q1)
{
    (void)isa, (void)op, (void)pad, (void)y, (void)q0, (void)q1;
    return 0;
}

int qat_rti_flinear_simd(qat_rt_isa isa, const rt_op *op, const float *x, float *y, int n0, int n1)
{
    (void)isa, (void)op, (void)x, (void)y, (void)n0, (void)n1;
    return 0;
}

#endif

#else /* ---- one copy of the kernels: FOS_SUF, FOS_TARGET, FOS_VL doubles a
       * vector, tiles of FOS_MR channels / rows x FOS_NV vectors ---- */

typedef double FN(vd) __attribute__((vector_size(FOS_VL * 8)));
typedef double FN(vdu) __attribute__((vector_size(FOS_VL * 8), aligned(8), may_alias));
typedef int64_t FN(vi) __attribute__((vector_size(FOS_VL * 8)));
typedef uint64_t FN(vu) __attribute__((vector_size(FOS_VL * 8)));
typedef float FN(vf) __attribute__((vector_size(FOS_VL * 4)));
typedef int32_t FN(vi32) __attribute__((vector_size(FOS_VL * 4)));
typedef float FN(vfu) __attribute__((vector_size(FOS_VL * 4), aligned(4), may_alias));
#define vd FN(vd)
#define vdu FN(vdu)
#define vi FN(vi)
#define vu FN(vu)
#define vf FN(vf)
#define vi32 FN(vi32)
#define vfu FN(vfu)
#define VL FOS_VL
#define TGT __attribute__((target(FOS_TARGET)))

AI TGT vd FN(vload)(const double *p)
{
    return *(const vdu *)(const void *)p;
}

AI TGT vd FN(vsel)(vi m, vd a, vd b)
{
    return (vd)(((vi)a & m) | ((vi)b & ~m));
}

/* qat_f16_round on the lanes: clamp to +-65536 (inf too), round to a
 * multiple of the binary16 quantum 2^(max(e, -14) - 10) of |x| in [2^e,
 * 2^(e+1)) by adding and subtracting M = 1.5 * 2^(max(e, -14) + 42) (its
 * ulp is that quantum; one IEEE add rounds to nearest even), the sign put
 * back on results that round to zero (-0, as nearbyint gives it),
 * saturate at +-65504. NaN lanes keep their value, as qat_f16_round
 * returns a NaN as it is. */
AI TGT vd FN(f16_round_v)(vd v)
{
    const vi sign = (vi){0} + INT64_MIN, expo = (vi){0} + 0x7ff0000000000000LL;
    const vd big = (vd){0} + 65536.0, tiny = (vd){0} + 0x1p-14, fmax = (vd){0} + 65504.0;
    const vi nan = v != v;
    vd c = FN(vsel)(v > big, big, v);
    c = FN(vsel)(c < -big, -big, c);
    vd a = (vd)((vi)c & ~sign);
    a = FN(vsel)(a < tiny, tiny, a);
    /* unsigned: a NaN lane's exponent 0x7ff wraps here (its result is
     * replaced below), which a signed add may not do */
    const vu ea = (vu)((vi)a & expo);
    const vd M = (vd)((ea + ((vu){0} + (42ULL << 52))) | ((vu){0} + (1ULL << 51)));
    vd r = (c + M) - M;
    r = (vd)((vi)r | ((vi)c & sign));
    r = FN(vsel)(r > fmax, fmax, r);
    r = FN(vsel)(r < -fmax, -fmax, r);
    return FN(vsel)(nan, v, r);
}

/* qat_bf16_round on the lanes, the same way: clamp to +-2^128 (inf too),
 * the quantum of |x| in [2^e, 2^(e+1)) is 2^(max(e, -126) - 7), so M =
 * 1.5 * 2^(max(e, -126) + 45); saturate at +-(2 - 2^-7) 2^127. */
AI TGT vd FN(bf16_round_v)(vd v)
{
    const vi sign = (vi){0} + INT64_MIN, expo = (vi){0} + 0x7ff0000000000000LL;
    const vd big = (vd){0} + 0x1p128, tiny = (vd){0} + 0x1p-126, fmax = (vd){0} + 0x1.fep127;
    const vi nan = v != v;
    vd c = FN(vsel)(v > big, big, v);
    c = FN(vsel)(c < -big, -big, c);
    vd a = (vd)((vi)c & ~sign);
    a = FN(vsel)(a < tiny, tiny, a);
    const vu ea = (vu)((vi)a & expo); /* unsigned, as in f16_round_v */
    const vd M = (vd)((ea + ((vu){0} + (45ULL << 52))) | ((vu){0} + (1ULL << 51)));
    vd r = (c + M) - M;
    r = (vd)((vi)r | ((vi)c & sign));
    r = FN(vsel)(r > fmax, fmax, r);
    r = FN(vsel)(r < -fmax, -fmax, r);
    return FN(vsel)(nan, v, r);
}

/* round(acc + bias) to the op's dtype, then ReLU (y > 0 ? y : +0) */
AI TGT vf FN(finish)(const rt_op *op, vd s)
{
    vf f = __builtin_convertvector(op->fdt == RT_DT_F16    ? FN(f16_round_v)(s)
                                   : op->fdt == RT_DT_BF16 ? FN(bf16_round_v)(s)
                                                           : s,
                                   vf);
    if (op->relu) f = (vf)((vi32)f & (f > (vf){0}));
    return f;
}

/* channels [oc0, oc0 + mr) x positions [q0, q0 + VL nv) of one image: acc
 * [r][v] lane j is output (oc0 + r, q0 + VL v + j) */
AI TGT void FN(conv_tile)(const rt_op *op, const double *pad, float *y, int oc0, const int mr, const int nv, int q0)
{
    const int K = op->ic * op->kh * op->kw;
    const double *w = op->fw + (size_t)oc0 * K;
    const int32_t *ko = op->fkoff;
    const double *xq = pad + q0;
    vd acc[FOS_MR][FOS_NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = (vd){0};
    for (int k = 0; k < K; k++) {
        const double *xk = xq + ko[k];
        vd xv[FOS_NV];
        for (int v = 0; v < nv; v++) xv[v] = FN(vload)(xk + VL * v);
        for (int r = 0; r < mr; r++) {
            const double wk = w[(size_t)r * K + k];
            for (int v = 0; v < nv; v++) acc[r][v] += xv[v] * wk;
        }
    }
    const int n = op->fqn - q0 < VL * nv ? op->fqn - q0 : VL * nv;
    const size_t plane = (size_t)op->out_shape[1] * op->out_shape[2];
    for (int r = 0; r < mr; r++) {
        float t[VL * FOS_NV];
        const double b = op->fbd[oc0 + r];
        for (int v = 0; v < nv; v++) *(vfu *)(void *)(t + VL * v) = FN(finish)(op, acc[r][v] + b);
        put_q(op, t, y + (size_t)(oc0 + r) * plane, q0, n);
    }
}

/* rows [r0, r0 + mr) x outputs [o0, o0 + VL nv) (o0 + VL nv <= fopad) */
AI TGT void FN(lin_tile)(const rt_op *op, const float *x, float *y, int r0, const int mr, const int nv, int o0)
{
    const int IN = op->ic, OUT = op->oc, P = op->fopad;
    const double *w = op->fw + o0;
    const float *xr = x + (size_t)r0 * IN;
    vd acc[FOS_MR][FOS_NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = (vd){0};
    for (int k = 0; k < IN; k++) {
        const double *wk = w + (size_t)k * P;
        vd wv[FOS_NV];
        for (int v = 0; v < nv; v++) wv[v] = FN(vload)(wk + VL * v);
        for (int r = 0; r < mr; r++) {
            const double xk = xr[(size_t)r * IN + k];
            for (int v = 0; v < nv; v++) acc[r][v] += xk * wv[v];
        }
    }
    for (int v = 0; v < nv; v++) {
        const int o = o0 + VL * v;
        if (o >= OUT) break;
        const vd b = FN(vload)(op->fbd + o);
        for (int r = 0; r < mr; r++) {
            float *yr = y + (size_t)(r0 + r) * OUT + o;
            const vf f = FN(finish)(op, acc[r][v] + b);
            if (OUT - o >= VL) *(vfu *)(void *)yr = f;
            else memcpy(yr, &f, (size_t)(OUT - o) * sizeof(float));
        }
    }
}

/* positions [q0, q1) of one image (q0 a multiple of VL * FOS_NV) */
TGT static void FN(fconv)(const rt_op *op, const double *pad, float *y, int q0, int q1)
{
    for (int q = q0; q < q1; q += VL * FOS_NV)
        for (int oc = 0; oc < op->oc; oc += FOS_MR) {
            const int mr = op->oc - oc < FOS_MR ? op->oc - oc : FOS_MR;
#define CONV_CALL(m) FN(conv_tile)(op, pad, y, oc, (m) < FOS_MR ? (m) : FOS_MR, FOS_NV, q)
            TILE_CASES(CONV_CALL, mr)
#undef CONV_CALL
        }
}

/* rows [n0, n1) */
TGT static void FN(flinear)(const rt_op *op, const float *x, float *y, int n0, int n1)
{
    for (int r = n0; r < n1; r += FOS_MR) {
        const int mr = n1 - r < FOS_MR ? n1 - r : FOS_MR;
        for (int o = 0; o < op->fopad; o += VL * FOS_NV) {
#define LIN_CALL(m) FN(lin_tile)(op, x, y, r, (m) < FOS_MR ? (m) : FOS_MR, FOS_NV, o)
            TILE_CASES(LIN_CALL, mr)
#undef LIN_CALL
        }
    }
}

#undef vd
#undef vdu
#undef vi
#undef vu
#undef vf
#undef vi32
#undef vfu
#undef VL
#undef TGT
#endif
