/* runtime/rounding.h: every rounding rule qat uses, in one place.
 *
 * Fake-quant (quant/), convert and the integer runtime (runtime/) include
 * this header so that the float simulation and the int8 model round the
 * same way (docs/QUANT.md gives the rules and their sources). Header-only,
 * static inline, no dependency on the rest of qat.
 *
 * Floating-point environment: the float parts (qat_quantize_val*, the bias
 * helper) assume the default environment, round-to-nearest with ties to
 * even, which every C program starts in; qat never calls fesetround. Under
 * another rounding mode the product x * inv_scale and the rounding trick of
 * qat_quantize_val_unclamped would follow that mode (as nearbyintf and
 * lrintf do); qat_round_half_even alone is mode-independent. Floats must be
 * evaluated in float (FLT_EVAL_METHOD 0: x86-64 SSE, ARM), checked below.
 *
 * The requantization parts (qat_quantize_multiplier's result and every
 * qat_requant_* / qat_srdhm / qat_rounding_divide_by_pot) use integers only:
 * the runtime's per-inference path never touches float. */
#ifndef QAT_RUNTIME_ROUNDING_H
#define QAT_RUNTIME_ROUNDING_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "qat's rounding needs float arithmetic evaluated in float (FLT_EVAL_METHOD 0)"
#endif

/* Right shifts of negative numbers are implementation-defined in C; every
 * compiler qat supports (GCC, Clang) shifts arithmetically. Refuse others. */
_Static_assert((-1 >> 1) == -1 && ((int64_t)-1 >> 1) == (int64_t)-1,
               "qat needs arithmetic right shifts of negative integers");

/* ---- float -> integer grid ---- */

/* nearbyint(v) with ties to even, as an int32, for |v| < 2^31 (not NaN).
 * (int32_t)v truncates toward zero in every rounding mode; d = v - t is
 * exact (the fractional part of a float is representable), so the tie test
 * is exact too. For |v| >= 2^23, v is an integer and d = 0. */
static inline int32_t qat_round_half_even(float v)
{
    int32_t t = (int32_t)v;
    float d = v - (float)t;
    int32_t odd = t & 1; /* also 1 for odd negative t (two's complement) */
    t += (d > 0.5f) - (d < -0.5f);
    t += (d == 0.5f) & odd;
    t -= (d == -0.5f) & odd;
    return t;
}

/* Saturation bound of qat_quantize_val_unclamped: 2^22, far outside any
 * grid (|q - zp| <= 65535) and inside the range where the rounding trick
 * below is exact. */
#define QAT_QUANT_SAT 4194304.0f /* 2^22 */

/* zp + nearbyint(x * inv_scale) (ties to even), NOT clamped: the value whose
 * membership in [qmin, qmax] is the straight-through mask. inv_scale is
 * 1.0f / scale, the float32 reciprocal computed once by the caller
 * (PyTorch's rule: multiply, never divide per element).
 *
 * Equal to zp + nearbyintf(x * inv_scale) for |x * inv_scale| <= 2^22;
 * beyond that the rounded value is saturated to +-2^22, which keeps the
 * mask and the clamped value exact: +-inf and huge inputs quantize to
 * qmax / qmin with a zero mask. NaN gives zp - 2^22: qmin and a zero mask
 * (PyTorch's int64 cast gives the same on x86).
 *
 * How: (v + 1.5*2^23) - 1.5*2^23 rounds v to an integer in the current
 * rounding mode (ties to even in the default one) when |v| <= 2^22, and
 * keeps |result| >= 2^22 beyond (addition is monotonic); the saturation
 * comes after the arithmetic, as select instructions, so the loops that
 * call this vectorise (GCC will not if-convert a float select that feeds
 * more float arithmetic under the default -ftrapping-math). tests/test_round.c
 * checks it against nearbyintf on every tie and on random values.
 * Range of zp: [-2^29, 2^29] (always within [qmin, qmax] in practice). */
static inline int32_t qat_quantize_val_unclamped(float x, float inv_scale, int32_t zp)
{
    float v = x * inv_scale;
    float r = (v + 12582912.0f) - 12582912.0f;
    r = r > -QAT_QUANT_SAT ? r : -QAT_QUANT_SAT; /* also NaN */
    r = r < QAT_QUANT_SAT ? r : QAT_QUANT_SAT;
    return zp + (int32_t)r;
}

static inline int32_t qat_clamp_i32(int32_t q, int32_t qmin, int32_t qmax)
{
    return q < qmin ? qmin : q > qmax ? qmax : q;
}

/* q = clamp(zp + nearbyint(x * inv_scale), qmin, qmax): PyTorch's
 * quantize_val and fake-quant rule. The runtime's input quantization and
 * its 256-entry uint8 lookup table use this same function. */
static inline int32_t qat_quantize_val(float x, float inv_scale, int32_t zp,
                                       int32_t qmin, int32_t qmax)
{
    return qat_clamp_i32(qat_quantize_val_unclamped(x, inv_scale, zp), qmin, qmax);
}

/* ---- bias onto the int32 grid ---- */

/* Bias range: the int32 bias is saturated to [-2^30, 2^30]. The only way to
 * reach it is a degenerate channel (all-zero weights give s_w = eps, so
 * b / s_b explodes); keeping 2^30 of headroom means acc + bias cannot
 * overflow int32 while |sum of w*x| < 2^30, i.e. for any int8 layer with
 * fewer than 2^30 / (127 * 255) = 33155 terms per output. */
#define QAT_BIAS_QMAX 1073741824 /* 2^30 */
#define QAT_BIAS_QMIN (-QAT_BIAS_QMAX)

/* Scale of a bias channel: s_b = fl32(s_in * s_w[c]), a float32 product
 * (convert and fake-quant both call this, so they divide by the same s_b). */
static inline float qat_bias_scale(float s_in, float s_w)
{
    return s_in * s_w;
}

/* b_q = clamp(nearbyint(b * fl32(1/s_b)), QAT_BIAS_QMIN, QAT_BIAS_QMAX), ties
 * to even: the activation/weight rule (multiply by the float32 reciprocal)
 * applied with zero point 0 and the saturated int32 range. NaN b gives 0;
 * +-inf saturate. s_b > 0 (scales are >= QAT_SCALE_EPS, so s_b >= 2^-46). */
static inline int32_t qat_quantize_bias_val(float b, float s_b)
{
    float v = b * (1.0f / s_b);
    if (v != v) return 0;
    if (v < (float)QAT_BIAS_QMIN) return QAT_BIAS_QMIN;
    if (v > (float)QAT_BIAS_QMAX) return QAT_BIAS_QMAX;
    return qat_round_half_even(v);
}

/* ---- fixed-point multipliers (convert) ---- */

/* Real multiplier of an output channel, in double as TFLite computes it:
 * M = s_in * s_w[c] / s_out. */
static inline double qat_requant_real_multiplier(float s_in, float s_w, float s_out)
{
    return (double)s_in * (double)s_w / (double)s_out;
}

/* TFLite's QuantizeMultiplier: M = m0 * 2^(shift - 31) with m0 in
 * [2^30, 2^31). frexp gives M = m * 2^shift, m in [0.5, 1);
 * m0 = round(m * 2^31) with ties away from zero (C round(), as TfLiteRound);
 * if that rounds up to 2^31, m0 = 2^30 and shift + 1.
 * - M == 0: m0 = 0, shift = 0.
 * - shift < -31 (M < 2^-32, after the carry): m0 = 0, shift = 0 (flushed to
 *   zero; |acc * M| < 0.5 for every int32 acc, so the product is 0 anyway).
 * - shift > 30 (M >= 2^30): m0 = 2^31 - 1, shift = 30, as TFLite's
 *   single-rounding build; M is saturated to about 2^30. qat caps in every
 *   build, so both requant variants below only ever see shift in [-31, 30].
 * So the results: shift in [-31, 30], m0 in {0} U [2^30, 2^31).
 * Returns 0, or -1 (m0 = 0, shift = 0) when M is negative, NaN or infinite. */
static inline int qat_quantize_multiplier(double M, int32_t *m0, int *shift)
{
    *m0 = 0;
    *shift = 0;
    if (!(M >= 0.0) || isinf(M)) return -1;
    if (M == 0.0) return 0;
    int e;
    double m = frexp(M, &e);
    int64_t q = (int64_t)round(m * 2147483648.0); /* exact scaling by 2^31 */
    if (q == ((int64_t)1 << 31)) {
        q /= 2;
        e += 1;
    }
    if (e < -31) return 0;
    if (e > 30) {
        e = 30;
        q = ((int64_t)1 << 31) - 1;
    }
    *m0 = (int32_t)q;
    *shift = e;
    return 0;
}

static inline int32_t qat_sat_i64_to_i32(int64_t v)
{
    return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

/* qat's requantization: round(acc * m0 * 2^(shift - 31)) with a single
 * rounding, ties toward +inf: with t = 31 - shift,
 *     r = (acc * (int64)m0 + 2^(t-1)) >> t      (arithmetic shift)
 * (TFLite's TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier), then
 * saturated to int32 (TFLite only DCHECKs that it fits).
 * Range of m0: [0, 2^31) (qat_quantize_multiplier's output).
 * Range of shift: any int. [-31, 30] (t in [1, 62]) is what
 * qat_quantize_multiplier produces and the fast path: the int64 sum cannot
 * overflow since |acc * m0| < 2^62. shift < -31 (t >= 63) gives 0, the exact
 * result (|acc * m0| < 2^62 <= 2^(t-1), below one half). shift > 30 (t <= 0)
 * is an exact left shift, saturated. */
static inline int32_t qat_requant_single(int32_t acc, int32_t m0, int shift)
{
    int64_t p = (int64_t)acc * (int64_t)m0;
    if (shift <= 30) {
        if (shift < -31) return 0;
        int t = 31 - shift;
        return qat_sat_i64_to_i32((p + ((int64_t)1 << (t - 1))) >> t);
    }
    /* t <= 0: r = p * 2^(shift - 31), no rounding; saturate without overflow */
    if (p == 0) return 0;
    int k = shift - 31;
    if (k >= 32) return p > 0 ? INT32_MAX : INT32_MIN;
    if (p > ((int64_t)INT32_MAX >> k)) return INT32_MAX;
    if (p < ((int64_t)INT32_MIN >> k)) return INT32_MIN;
    return (int32_t)(p * ((int64_t)1 << k));
}

/* One output of a requantized op: clamp(qat_requant_single(acc, m0, shift)
 * + zp, lo, hi), the sum in int64 (cannot overflow): the expression of the
 * runtime reference kernels' epilogue (requant_s8 in runtime/kernels_ref.c).
 * The public qat_requantize() (include/qat/quant.h) is this function. */
static inline int32_t qat_requant_clamp(int32_t acc, int32_t m0, int shift, int32_t zp, int32_t lo, int32_t hi)
{
    int64_t v = (int64_t)qat_requant_single(acc, m0, shift) + zp;
    return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

/* ---- gemmlowp double rounding (TFLite compatibility option only) ---- */

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31) with the
 * nudge 2^30 (or 1 - 2^30 for a negative product) and a division that
 * truncates toward zero, so exact ties go toward +inf: srdhm(3, 2^30) = 2,
 * srdhm(-3, 2^30) = -1. The only overflow, a = b = INT32_MIN, saturates to
 * INT32_MAX. */
static inline int32_t qat_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: round(x / 2^e), ties away from zero.
 * Range of e: [0, 31]. */
static inline int32_t qat_rounding_divide_by_pot(int32_t x, int e)
{
    int64_t mask = ((int64_t)1 << e) - 1;
    int64_t rem = (int64_t)x & mask;
    int64_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(((int64_t)x >> e) + (rem > thr ? 1 : 0));
}

/* TFLite's default (double rounding) MultiplyByQuantizedMultiplier:
 *   left = max(shift, 0), right = max(-shift, 0)
 *   RoundingDivideByPOT(SRDHM(acc * 2^left, m0), right)
 * Differs from qat_requant_single by at most 1 (two roundings). TFLite
 * requires acc * 2^left to fit in int32 and wraps otherwise (signed
 * overflow, undefined in C); this computes the same wrapped value without
 * the undefined behaviour. Range of shift: [-31, 30]. */
static inline int32_t qat_requant_gemmlowp(int32_t acc, int32_t m0, int shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    uint32_t u = (uint32_t)acc << left; /* two's complement wrap, as TFLite */
    int32_t x = u <= (uint32_t)INT32_MAX ? (int32_t)u
                                         : (int32_t)(int64_t)((int64_t)u - ((int64_t)1 << 32));
    return qat_rounding_divide_by_pot(qat_srdhm(x, m0), right);
}

#endif
