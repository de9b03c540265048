/* runtime/float_ops.c: the float ops of the runtime (docs/FORMAT-int8.md,
 * "Float ops"): float32 / float16 tensors between ops, float conv2d and
 * linear with float32 or float16 weights accumulated in double, and the
 * dynamically quantized conv2d / linear (int8 weights, activations
 * quantized per call from their own range, an int32 GEMM, a float32
 * epilogue), plus the planner and the run loop of graphs that hold float
 * ops (int8 ops in such a graph run through model.c).
 *
 * Every float op's arithmetic is fixed by the format, not by the kernel:
 * sums are taken in double in the order the format gives (so a SIMD kernel
 * vectorises across outputs, never across the sum), the integer GEMM is
 * exact, and the epilogue is three float32 operations in a fixed order.
 * The VNNI GEMM is bit-identical to the portable one (tests/test_dynamic.c)
 * and quant/dynamic.c computes the same numbers on the library side. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/half.h"
#include "runtime/rt_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RT_HAVE_X86 1
#endif

/* ---- element rounding ---- */

static inline float fround(const rt_op *op, double v)
{
    return op->fdt == RT_DT_F16 ? qat_f16_round(v) : op->fdt == RT_DT_BF16 ? qat_bf16_round(v) : (float)v;
}

/* ReLU as the format defines it: y if y > 0, else +0 (also for -0, NaN). */
static inline float frelu(float y)
{
    return y > 0 ? y : 0.0f;
}

static int nthreads(const qat_rt_model *m, int n)
{
    int t = m->threads < m->slots ? m->threads : m->slots;
    if (t < 1) t = 1;
    return n < t ? n : t;
}

/* ---- the input op ---- */

/* x = (float32(p) / 255 - mean) / std, every step in float32 */
static inline float norm_pixel(const rt_op *op, uint8_t p)
{
    return ((float)p / 255.0f - op->mean) / op->std;
}

/* ---- float conv2d / linear (float32 or float16 weights) ----
 * acc = sum over k = (ic, kh, kw) ascending, inside the image, of
 * (double)x * (double)w, from +0; y = round(acc + (double)bias); ReLU. */

#define CONV_CHUNK 64

/* one image: x [IC, H, W], y [OC, OH, OW] */
void qat_rti_conv_float_ref(const rt_op *op, const float *x, float *y)
{
    const int IC = op->ic, H = op->in_h, W = op->in_w, KH = op->kh, KW = op->kw;
    const int S = op->stride, P = op->pad, OH = op->out_shape[1], OW = op->out_shape[2];
    const size_t K = (size_t)IC * KH * KW;
    double acc[CONV_CHUNK];
    for (int oc = 0; oc < op->oc; oc++) {
        const float *w = op->fweight + (size_t)oc * K;
        for (int oh = 0; oh < OH; oh++) {
            for (int o0 = 0; o0 < OW; o0 += CONV_CHUNK) {
                const int o1 = OW - o0 < CONV_CHUNK ? OW : o0 + CONV_CHUNK;
                for (int j = 0; j < o1 - o0; j++) acc[j] = 0.0;
                for (int ic = 0; ic < IC; ic++)
                    for (int kh = 0; kh < KH; kh++) {
                        const int ih = oh * S - P + kh;
                        if (ih < 0 || ih >= H) continue;
                        const float *row = x + ((size_t)ic * H + ih) * W;
                        for (int kw = 0; kw < KW; kw++) {
                            const double wv = w[((size_t)ic * KH + kh) * KW + kw];
                            /* ow with 0 <= ow*S - P + kw < W */
                            int lo = P - kw > 0 ? (P - kw + S - 1) / S : 0;
                            int hi = W - 1 + P - kw >= 0 ? (W - 1 + P - kw) / S + 1 : 0;
                            if (lo < o0) lo = o0;
                            if (hi > o1) hi = o1;
                            const float *xr = row - P + kw;
                            if (S == 1)
                                for (int ow = lo; ow < hi; ow++) acc[ow - o0] += (double)xr[ow] * wv;
                            else
                                for (int ow = lo; ow < hi; ow++) acc[ow - o0] += (double)xr[ow * S] * wv;
                        }
                    }
                float *yr = y + ((size_t)oc * OH + oh) * OW;
                const double b = op->fbias[oc];
                for (int ow = o0; ow < o1; ow++) {
                    float v = fround(op, acc[ow - o0] + b);
                    yr[ow] = op->relu ? frelu(v) : v;
                }
            }
        }
    }
}

/* linear, samples [n0, n1): weights transposed at plan time (dpack,
 * [IN][OUT]) so the sum runs over k while the lanes hold outputs */
#define LIN_MB 4
#define LIN_OB 32
void qat_rti_linear_float_ref(const rt_op *op, const float *x, float *y, int n0, int n1)
{
    const int IN = op->ic, OUT = op->oc;
    const float *wt = op->dpack;
    double acc[LIN_MB][LIN_OB];
    for (int r0 = n0; r0 < n1; r0 += LIN_MB) {
        const int mb = n1 - r0 < LIN_MB ? n1 - r0 : LIN_MB;
        for (int o0 = 0; o0 < OUT; o0 += LIN_OB) {
            const int ob = OUT - o0 < LIN_OB ? OUT - o0 : LIN_OB;
            memset(acc, 0, sizeof acc);
            for (int k = 0; k < IN; k++) {
                const float *wk = wt + (size_t)k * OUT + o0;
                for (int r = 0; r < mb; r++) {
                    const double xv = x[(size_t)(r0 + r) * IN + k];
                    for (int j = 0; j < ob; j++) acc[r][j] += xv * (double)wk[j];
                }
            }
            for (int r = 0; r < mb; r++)
                for (int j = 0; j < ob; j++) {
                    float v = fround(op, acc[r][j] + (double)op->fbias[o0 + j]);
                    y[(size_t)(r0 + r) * OUT + o0 + j] = op->relu ? frelu(v) : v;
                }
        }
    }
}

/* ---- dynamic quantization ---- */

/* Scale and zero point of a run-time activation range (docs/FORMAT-int8.md,
 * "Float ops"): the range [min(0, lo), max(0, hi)] over 255 steps. */
static void dyn_params(float lo, float hi, float *scale, int32_t *zp)
{
    if (lo > 0) lo = 0;
    if (hi < 0) hi = 0;
    float s = (float)(((double)hi - (double)lo) / 255.0);
    if (!(s > 0) || isinf(1.0f / s)) s = 1.0f;
    double z = -128.0 - nearbyint((double)lo / (double)s);
    *scale = s;
    *zp = (int32_t)(z < -128 ? -128 : z > 127 ? 127 : z);
}

static void range_ref(const float *x, size_t n, float *lo, float *hi)
{
    float a = 0, b = 0; /* the range always holds 0 */
    for (size_t i = 0; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}

#ifdef RT_HAVE_X86
/* min and max are exact: any order gives the same range (NaN ignored as
 * range_ref ignores it: vminps returns its second operand, the running
 * value, when x is NaN) */
__attribute__((target("avx512f"))) static void range_avx512(const float *x, size_t n, float *lo, float *hi)
{
    __m512 a = _mm512_setzero_ps(), b = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        a = _mm512_min_ps(v, a);
        b = _mm512_max_ps(v, b);
    }
    float la = _mm512_reduce_min_ps(a), hb = _mm512_reduce_max_ps(b);
    float rl, rh;
    range_ref(x + i, n - i, &rl, &rh);
    *lo = rl < la ? rl : la;
    *hi = rh > hb ? rh : hb;
}
#endif

static void range_of(const float *x, size_t n, float *lo, float *hi)
{
#ifdef RT_HAVE_X86
    if (qat_rti_cpu_has(QAT_RT_ISA_AVX512_VNNI)) {
        range_avx512(x, n, lo, hi);
        return;
    }
#endif
    range_ref(x, n, lo, hi);
}

/* q + 128 as uint8 for q = clamp(rint(x * inv) + zp, -128, 127). |t| is
 * first clamped to 512 (NaN to 0), where adding and subtracting 1.5 * 2^23
 * rounds to the nearest integer, ties to even, as rint does (float32
 * arithmetic, no contraction): a loop GCC vectorises. */
static inline uint8_t dyn_q(float x, float inv, int32_t zp)
{
    float t = x * inv;
    t = t == t ? t : 0.0f;
    t = t < -512.0f ? -512.0f : t > 512.0f ? 512.0f : t;
    const float r = (t + 12582912.0f) - 12582912.0f;
    int32_t v = (int32_t)r + zp;
    v = v < -128 ? -128 : v > 127 ? 127 : v;
    return (uint8_t)(v + 128);
}

/* Row bytes of the quantized activations: linear rows padded to 4 bytes
 * (VNNI cells; padding 128, q = 0, meets zero weights), conv one image. */
static size_t dq_row(const rt_op *op)
{
    if (op->type == RT_OP_LINEAR) return ((size_t)op->ic + 3) / 4 * 4;
    return (size_t)op->in_c * op->in_h * op->in_w;
}

#ifdef RT_HAVE_X86
/* dyn_q on 16 lanes: the same clamp, the same rounding (roundscale to
 * nearest even), the same clamp of the result */
__attribute__((target("avx512f,avx512bw"))) static size_t quant_avx512(const float *x, size_t n, float inv,
                                                                       int32_t zp, uint8_t *q)
{
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-512.0f), hi = _mm512_set1_ps(512.0f);
    const __m512i vz = _mm512_set1_epi32(zp + 128), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv);
        t = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, t, _CMP_ORD_Q), t); /* NaN -> 0 */
        t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
        __m512i v = _mm512_cvtps_epi32(_mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, vz), zero), top);
        _mm_storeu_si128((__m128i *)(void *)(q + i), _mm512_cvtepi32_epi8(v));
    }
    return i;
}
#endif

void qat_rti_dyn_quantize(const rt_op *op, const float *x, int n, uint8_t *q, float *scale, int32_t *zp)
{
    const size_t in = op->type == RT_OP_LINEAR ? (size_t)op->ic : (size_t)op->in_c * op->in_h * op->in_w;
    const size_t row = dq_row(op);
    if (!op->act_row) {
        float lo, hi;
        range_of(x, (size_t)n * in, &lo, &hi);
        dyn_params(lo, hi, &scale[0], &zp[0]);
    }
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * in;
        if (op->act_row) {
            float lo, hi;
            range_of(xr, in, &lo, &hi);
            dyn_params(lo, hi, &scale[r], &zp[r]);
        }
        const float s = op->act_row ? scale[r] : scale[0];
        const int32_t z = op->act_row ? zp[r] : zp[0];
        const float inv = 1.0f / s;
        uint8_t *qr = q + (size_t)r * row;
        size_t k = 0;
#ifdef RT_HAVE_X86
        if (qat_rti_cpu_has(QAT_RT_ISA_AVX512_VNNI)) k = quant_avx512(xr, in, inv, z, qr);
#endif
        for (; k < in; k++) qr[k] = dyn_q(xr[k], inv, z);
        for (k = in; k < row; k++) qr[k] = 128;
    }
}

/* y = float32(acc) * float32(scale * weight_scale[o]) + bias[o], then ReLU */
static inline float dyn_epi(const rt_op *op, int32_t acc, float s, int o)
{
    const float ms = s * op->weight_scale[o];
    const float t = (float)acc * ms;
    const float y = t + op->fbias[o];
    return op->relu ? frelu(y) : y;
}

void qat_rti_dyn_gemm_ref(const rt_op *op, const uint8_t *q, const float *scale, const int32_t *zp, int n,
                          float *y)
{
    const int IN = op->ic, OUT = op->oc;
    const size_t row = dq_row(op);
    for (int r = 0; r < n; r++) {
        const uint8_t *qr = q + (size_t)r * row;
        const float s = op->act_row ? scale[r] : scale[0];
        const int32_t z = op->act_row ? zp[r] : zp[0];
        for (int o = 0; o < OUT; o++) {
            const int8_t *w = op->weight + (size_t)o * IN;
            int32_t acc = 0;
            for (int k = 0; k < IN; k++) acc += (int32_t)w[k] * (int32_t)qr[k];
            acc -= (128 + z) * op->rowsum[o]; /* sum w * (q + 128) - (128 + zp) * sum w */
            y[(size_t)r * OUT + o] = dyn_epi(op, acc, s, o);
        }
    }
}

/* one image of a dynamic conv: u [IC, H, W] (q + 128), y [OC, OH, OW];
 * positions outside the image are x = 0, i.e. q = zp: they add nothing */
static void dyn_conv_image(const rt_op *op, const uint8_t *u, float s, int32_t z, float *y)
{
    const int IC = op->ic, H = op->in_h, W = op->in_w, KH = op->kh, KW = op->kw;
    const int S = op->stride, P = op->pad, OH = op->out_shape[1], OW = op->out_shape[2];
    const size_t K = (size_t)IC * KH * KW;
    for (int oc = 0; oc < op->oc; oc++) {
        const int8_t *w = op->weight + (size_t)oc * K;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int32_t acc = 0;
                for (int ic = 0; ic < IC; ic++)
                    for (int kh = 0; kh < KH; kh++) {
                        const int ih = oh * S - P + kh;
                        if (ih < 0 || ih >= H) continue;
                        for (int kw = 0; kw < KW; kw++) {
                            const int iw = ow * S - P + kw;
                            if (iw < 0 || iw >= W) continue;
                            acc += (int32_t)w[((size_t)ic * KH + kh) * KW + kw] *
                                   ((int32_t)u[((size_t)ic * H + ih) * W + iw] - 128 - z);
                        }
                    }
                y[((size_t)oc * OH + oh) * OW + ow] = dyn_epi(op, acc, s, oc);
            }
    }
}

/* ---- the VNNI dynamic GEMM: weights [IN/4][opad][4] int8, 16 outputs a
 * vector, tiles of 4 rows x 2 vectors; exact int32 sums, the epilogue in
 * the same three float32 operations as dyn_epi ---- */

#ifdef RT_HAVE_X86
#define VN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

static int vnni_pack(rt_op *op)
{
    const int IN = op->ic, OUT = op->oc, kg = (IN + 3) / 4;
    const int opad = (OUT + 15) / 16 * 16;
    int8_t *w = qat_rti_alloc((size_t)kg * opad * 4 + 64);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory packing %s", op->name);
    for (int o = 0; o < OUT; o++)
        for (int k = 0; k < IN; k++) w[((size_t)(k / 4) * opad + o) * 4 + k % 4] = op->weight[(size_t)o * IN + k];
    op->dpack = w;
    op->dpack_opad = opad;
    return QAT_OK;
}

VN_TARGET static void vnni_tile(const rt_op *op, const uint8_t *q, const float *scale, const int32_t *zp,
                                int r0, int mr, int o0, int nv, float *y)
{
    const int kg = (op->ic + 3) / 4, opad = op->dpack_opad, OUT = op->oc;
    const size_t row = dq_row(op);
    const int8_t *wp = (const int8_t *)op->dpack + (size_t)o0 * 4;
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
            a31 = a00;
    const uint8_t *q0 = q + (size_t)r0 * row, *q1 = q0 + (mr > 1 ? row : 0), *q2 = q0 + (mr > 2 ? 2 * row : 0),
                  *q3 = q0 + (mr > 3 ? 3 * row : 0);
    for (int j = 0; j < kg; j++) {
        const int8_t *wj = wp + (size_t)j * opad * 4;
        const __m512i w0 = _mm512_loadu_si512((const void *)wj);
        const __m512i w1 = nv > 1 ? _mm512_loadu_si512((const void *)(wj + 64)) : _mm512_setzero_si512();
        int32_t v;
        memcpy(&v, q0 + 4 * (size_t)j, 4);
        __m512i x = _mm512_set1_epi32(v);
        a00 = _mm512_dpbusd_epi32(a00, x, w0);
        a01 = _mm512_dpbusd_epi32(a01, x, w1);
        memcpy(&v, q1 + 4 * (size_t)j, 4);
        x = _mm512_set1_epi32(v);
        a10 = _mm512_dpbusd_epi32(a10, x, w0);
        a11 = _mm512_dpbusd_epi32(a11, x, w1);
        memcpy(&v, q2 + 4 * (size_t)j, 4);
        x = _mm512_set1_epi32(v);
        a20 = _mm512_dpbusd_epi32(a20, x, w0);
        a21 = _mm512_dpbusd_epi32(a21, x, w1);
        memcpy(&v, q3 + 4 * (size_t)j, 4);
        x = _mm512_set1_epi32(v);
        a30 = _mm512_dpbusd_epi32(a30, x, w0);
        a31 = _mm512_dpbusd_epi32(a31, x, w1);
    }
    __m512i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    const __m512 zero = _mm512_setzero_ps();
    for (int v = 0; v < nv; v++) {
        const int o = o0 + 16 * v;
        const int left = OUT - o;
        const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        const __m512i rs = _mm512_maskz_loadu_epi32(mk, op->rowsum + o);
        const __m512 ws = _mm512_maskz_loadu_ps(mk, op->weight_scale + o);
        const __m512 bs = _mm512_maskz_loadu_ps(mk, op->fbias + o);
        for (int r = 0; r < mr; r++) {
            const float s = op->act_row ? scale[r0 + r] : scale[0];
            const int32_t z = op->act_row ? zp[r0 + r] : zp[0];
            __m512i a = _mm512_sub_epi32(acc[r][v], _mm512_mullo_epi32(_mm512_set1_epi32(128 + z), rs));
            __m512 ms = _mm512_mul_ps(_mm512_set1_ps(s), ws);
            __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(a), ms);
            __m512 yv = _mm512_add_ps(t, bs);
            if (op->relu) yv = _mm512_max_ps(yv, zero); /* second operand for -0 and NaN: frelu */
            _mm512_mask_storeu_ps(y + (size_t)(r0 + r) * OUT + o, mk, yv);
        }
    }
}
#endif

int qat_rti_dyn_gemm_vnni(const rt_op *op, const uint8_t *q, const float *scale, const int32_t *zp, int n,
                          float *y)
{
#ifdef RT_HAVE_X86
    if (!op->dpack || op->type != RT_OP_LINEAR || !qat_rti_cpu_has(QAT_RT_ISA_AVX512_VNNI)) return 0;
    const int nvec = op->dpack_opad / 16;
    for (int r0 = 0; r0 < n; r0 += 4)
        for (int v0 = 0; v0 < nvec; v0 += 2)
            vnni_tile(op, q, scale, zp, r0, n - r0 < 4 ? n - r0 : 4, v0 * 16, nvec - v0 < 2 ? nvec - v0 : 2, y);
    return 1;
#else
    (void)op, (void)q, (void)scale, (void)zp, (void)n, (void)y;
    return 0;
#endif
}

/* The dynamic linear over a batch, tiles split over T threads. */
static void dyn_linear(const qat_rt_model *m, const rt_op *op, const float *x, float *y, int n)
{
    qat_rti_dyn_quantize(op, x, n, op->dq, op->dscale, op->dzp);
    const double work = (double)n * op->ic * op->oc;
    const int T = work >= (double)(1 << 20) ? nthreads(m, 1 << 30) : 1;
#ifdef RT_HAVE_X86
    if (op->dpack) {
        const int nvec = op->dpack_opad / 16, rt = (n + 3) / 4, vt = (nvec + 1) / 2;
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
        for (int w = 0; w < rt * vt; w++) {
            const int r0 = w % rt * 4, v0 = w / rt * 2;
            vnni_tile(op, op->dq, op->dscale, op->dzp, r0, n - r0 < 4 ? n - r0 : 4, v0 * 16,
                      nvec - v0 < 2 ? nvec - v0 : 2, y);
        }
        return;
    }
#endif
    const size_t row = dq_row(op);
    const int chunk = (n + T - 1) / T;
#pragma omp parallel for num_threads(T) schedule(static)
    for (int t = 0; t < T; t++) {
        const int r0 = t * chunk, r1 = r0 + chunk < n ? r0 + chunk : n;
        if (r1 <= r0) continue;
        const int rr = op->act_row ? r0 : 0;
        qat_rti_dyn_gemm_ref(op, op->dq + (size_t)r0 * row, op->dscale + rr, op->dzp + rr, r1 - r0,
                             y + (size_t)r0 * op->oc);
    }
}

/* The SIMD float conv over a batch: images over the threads, each padded
 * into its thread's slot; fewer images than threads (batch 1): every image
 * into a slot of its own, then its blocks of 32 output positions over the
 * threads. Same bits either way: each output is one lane's sum. */
#define FQ_BLOCK 32
static void conv_float_simd(const qat_rt_model *m, const rt_op *op, const float *x, float *y, int n)
{
    const size_t isz = (size_t)op->ic * op->in_h * op->in_w, osz = op->out_size;
    const int nb = (op->fqn + FQ_BLOCK - 1) / FQ_BLOCK;
    int T = nthreads(m, 1 << 30);
    if (T > op->fslots) T = op->fslots;
    const double work = (double)op->oc * op->ic * op->kh * op->kw * op->fqn;
    if (n >= T || nb < 2 || work < (double)(1 << 16)) {
        T = n < T ? n : T;
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
        for (int b = 0; b < n; b++) {
            double *pad = op->fpad + (size_t)omp_get_thread_num() * op->fimg;
            qat_rti_fconv_pad(op, x + (size_t)b * isz, pad);
            qat_rti_fconv_simd(m->isa, op, pad, y + (size_t)b * osz, 0, op->fqn);
        }
        return;
    }
    for (int b = 0; b < n; b++) qat_rti_fconv_pad(op, x + (size_t)b * isz, op->fpad + (size_t)b * op->fimg);
#pragma omp parallel for num_threads(T) schedule(static)
    for (int i = 0; i < n * nb; i++) {
        const int b = i / nb, q0 = i % nb * FQ_BLOCK, q1 = q0 + FQ_BLOCK < op->fqn ? q0 + FQ_BLOCK : op->fqn;
        qat_rti_fconv_simd(m->isa, op, op->fpad + (size_t)b * op->fimg, y + (size_t)b * osz, q0, q1);
    }
}

/* ---- the other float ops, one sample ---- */

static void pool_float(const rt_op *op, const float *x, float *y)
{
    const int C = op->in_c, H = op->in_h, W = op->in_w;
    if (op->type == RT_OP_GLOBAL_AVGPOOL) {
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int i = 0; i < H * W; i++) s += (double)x[(size_t)c * H * W + i];
            y[c] = fround(op, s / (double)(H * W));
        }
        return;
    }
    const int K = op->kernel, S = op->stride, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float *p = x + ((size_t)c * H + (size_t)oh * S) * W + (size_t)ow * S;
                float *o = y + ((size_t)c * OH + oh) * OW + ow;
                if (op->type == RT_OP_MAXPOOL2D) {
                    float mx = p[0];
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) mx = p[(size_t)i * W + j] > mx ? p[(size_t)i * W + j] : mx;
                    *o = mx;
                } else {
                    double s = 0;
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) s += (double)p[(size_t)i * W + j];
                    *o = fround(op, s / (double)(K * K));
                }
            }
}

/* ---- planning ---- */

static void *zalloc(size_t bytes)
{
    return qat_rti_alloc(bytes ? bytes : 1);
}

/* The SIMD kernels' state of a float conv2d / linear (rt_op fw ...): the
 * weights and bias as double; conv: the tap offsets in the padded,
 * phase-split image and one such image per slot (zeroed here once: the
 * kernels write only the pixels inside the image). */
int qat_rti_float_simd_plan(rt_op *op, int slots)
{
    const int K = op->ic * op->kh * op->kw, OC = op->oc;
    if (op->type == RT_OP_LINEAR) {
        const int P = (OC + 31) / 32 * 32;
        if (!(op->fw = zalloc((size_t)op->ic * P * sizeof *op->fw)) || !(op->fbd = zalloc((size_t)P * sizeof *op->fbd)))
            return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning %s", op->name);
        for (int o = 0; o < OC; o++) {
            for (int k = 0; k < op->ic; k++) op->fw[(size_t)k * P + o] = op->fweight[(size_t)o * op->ic + k];
            op->fbd[o] = op->fbias[o];
        }
        op->fopad = P;
        return QAT_OK;
    }
    const int S = op->stride, P = op->pad, KH = op->kh, KW = op->kw;
    op->fhs = (op->in_h + 2 * P + S - 1) / S;
    op->fws = (op->in_w + 2 * P + S - 1) / S;
    op->fqn = op->out_shape[1] * op->fws;
    const size_t plane = (size_t)op->fhs * op->fws, planes = plane * op->ic * S * S;
    op->fimg = (planes + (size_t)(op->fqn + 31) / 32 * 32 + 16 + 7) / 8 * 8;
    if (op->fimg > (size_t)1 << 30) return QAT_OK; /* offsets beyond int32: the portable kernel */
    op->fslots = slots;
    if (!(op->fw = zalloc((size_t)OC * K * sizeof *op->fw)) || !(op->fbd = zalloc((size_t)OC * sizeof *op->fbd)) ||
        !(op->fkoff = zalloc((size_t)K * sizeof *op->fkoff)) ||
        !(op->fpad = zalloc((size_t)slots * op->fimg * sizeof *op->fpad)))
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning %s", op->name);
    for (size_t i = 0; i < (size_t)OC * K; i++) op->fw[i] = op->fweight[i];
    for (int o = 0; o < OC; o++) op->fbd[o] = op->fbias[o];
    for (int ic = 0, k = 0; ic < op->ic; ic++)
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++, k++)
                op->fkoff[k] = (int32_t)(((size_t)(ic * S + kh % S) * S + kw % S) * plane +
                                         (size_t)(kh / S) * op->fws + (size_t)(kw / S));
    return QAT_OK;
}

int qat_rti_float_plan(qat_rt_model *m, int max_batch)
{
    /* as model.c counts its slots: every thread a run may use */
    int slots = omp_get_num_procs();
    if (m->threads > slots) slots = m->threads;
    if (slots < 1) slots = 1;
    for (int i = 0; i < m->n_ops; i++) {
        rt_op *op = &m->ops[i];
        if (op->fdt == RT_DT_INT8 || op->type == RT_OP_FLATTEN) continue;
        for (int k = 0; k < op->n_inputs; k++) {
            const rt_op *p = &m->ops[op->inputs[k]];
            if (p->fdt != RT_DT_INT8) continue;
            if (!(op->fin[k] = zalloc((size_t)max_batch * p->out_size * sizeof(float))))
                return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning %s", op->name);
        }
        if ((op->type == RT_OP_LINEAR || op->type == RT_OP_CONV2D) && op->wdt == RT_W_I8) {
            op->dq = zalloc((size_t)max_batch * dq_row(op));
            op->dscale = zalloc((size_t)max_batch * sizeof *op->dscale);
            op->dzp = zalloc((size_t)max_batch * sizeof *op->dzp);
            if (!op->dq || !op->dscale || !op->dzp)
                return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning %s", op->name);
#ifdef RT_HAVE_X86
            int st;
            if (op->type == RT_OP_LINEAR && m->isa == QAT_RT_ISA_AVX512_VNNI && (st = vnni_pack(op))) return st;
#endif
        } else if (op->type == RT_OP_LINEAR || op->type == RT_OP_CONV2D) {
            int st;
            if ((st = qat_rti_float_simd_plan(op, slots))) return st;
            if (op->type == RT_OP_CONV2D) continue;
            float *wt = zalloc((size_t)op->ic * op->oc * sizeof *wt);
            if (!wt) return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning %s", op->name);
            for (int o = 0; o < op->oc; o++)
                for (int k = 0; k < op->ic; k++) wt[(size_t)k * op->oc + o] = op->fweight[(size_t)o * op->ic + k];
            op->dpack = wt;
        }
    }
    return QAT_OK;
}

void qat_rti_float_unplan(qat_rt_model *m)
{
    for (int i = 0; i < m->n_ops; i++) {
        rt_op *op = &m->ops[i];
        qat_rti_dealloc(op->fin[0]);
        qat_rti_dealloc(op->fin[1]);
        qat_rti_dealloc(op->dq);
        qat_rti_dealloc(op->dscale);
        qat_rti_dealloc(op->dzp);
        qat_rti_dealloc(op->dpack);
        qat_rti_dealloc(op->fw);
        qat_rti_dealloc(op->fbd);
        qat_rti_dealloc(op->fpad);
        qat_rti_dealloc(op->fkoff);
        op->fw = op->fbd = op->fpad = NULL;
        op->fkoff = NULL;
        op->fslots = 0;
        op->fin[0] = op->fin[1] = NULL;
        op->dq = NULL;
        op->dscale = NULL;
        op->dzp = NULL;
        op->dpack = NULL;
        op->dpack_opad = 0;
    }
}

/* ---- running ---- */

/* Input k of op as float32 [n, size]: the producer's output, or its int8
 * output dequantized, (float)(q - zp) * scale. */
static const float *float_input(qat_rt_model *m, rt_op *op, int k, int n, int T)
{
    const rt_op *p = &m->ops[op->inputs[k]];
    if (p->fdt != RT_DT_INT8) return (const float *)(const void *)m->out[op->inputs[k]];
    const int8_t *q = m->out[op->inputs[k]];
    float *f = op->fin[k];
    const long long total = (long long)n * (long long)p->out_size;
    const float s = p->out_scale;
    const int32_t z = p->out_zp;
#pragma omp parallel for num_threads(T) schedule(static) if (total > 65536)
    for (long long i = 0; i < total; i++) f[i] = (float)(q[i] - z) * s;
    return f;
}

static void run_float_op(qat_rt_model *m, int i, int n)
{
    rt_op *op = &m->ops[i];
    const int T = nthreads(m, n);
    if (op->type == RT_OP_FLATTEN) return; /* shares its input's buffer */
    const float *x = float_input(m, op, 0, n, T);
    float *y = (float *)(void *)m->out[i];
    const size_t isz = m->ops[op->inputs[0]].out_size, osz = op->out_size;
    switch (op->type) {
    case RT_OP_LINEAR:
        if (op->wdt == RT_W_I8) {
            dyn_linear(m, op, x, y, n);
        } else {
            const int chunk = ((n + T - 1) / T + LIN_MB - 1) / LIN_MB * LIN_MB;
#pragma omp parallel for num_threads(T) schedule(static)
            for (int t = 0; t < T; t++) {
                const int r0 = t * chunk, r1 = r0 + chunk < n ? r0 + chunk : n;
                if (r1 > r0 && !qat_rti_flinear_simd(m->isa, op, x, y, r0, r1))
                    qat_rti_linear_float_ref(op, x, y, r0, r1);
            }
        }
        break;
    case RT_OP_CONV2D:
        if (op->wdt == RT_W_I8) {
            qat_rti_dyn_quantize(op, x, n, op->dq, op->dscale, op->dzp);
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
            for (int b = 0; b < n; b++)
                dyn_conv_image(op, op->dq + (size_t)b * isz, op->act_row ? op->dscale[b] : op->dscale[0],
                               op->act_row ? op->dzp[b] : op->dzp[0], y + (size_t)b * osz);
        } else if (op->fw && m->isa != QAT_RT_ISA_REF) {
            conv_float_simd(m, op, x, y, n);
        } else {
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
            for (int b = 0; b < n; b++) qat_rti_conv_float_ref(op, x + (size_t)b * isz, y + (size_t)b * osz);
        }
        break;
    case RT_OP_ADD: {
        const float *x2 = float_input(m, op, 1, n, T);
        const long long total = (long long)n * (long long)osz;
#pragma omp parallel for num_threads(T) schedule(static) if (total > 65536)
        for (long long e = 0; e < total; e++) {
            float v = op->fdt == RT_DT_F32 ? x[e] + x2[e] : fround(op, (double)x[e] + (double)x2[e]);
            y[e] = op->relu ? frelu(v) : v;
        }
        break;
    }
    case RT_OP_RELU: {
        const long long total = (long long)n * (long long)osz;
        for (long long e = 0; e < total; e++) y[e] = frelu(x[e]);
        break;
    }
    case RT_OP_GLOBAL_AVGPOOL:
    case RT_OP_AVGPOOL2D:
    case RT_OP_MAXPOOL2D:
#pragma omp parallel for num_threads(T) schedule(static)
        for (int b = 0; b < n; b++) pool_float(op, x + (size_t)b * isz, y + (size_t)b * osz);
        break;
    default: break;
    }
}

void qat_rti_float_run_ops(qat_rt_model *m, int n)
{
    for (int i = 1; i < m->n_ops; i++) {
        if (m->ops[i].fdt == RT_DT_INT8) qat_rti_run_int8_op(m, i, n);
        else run_float_op(m, i, n);
    }
}

void qat_rti_float_run_u8(qat_rt_model *m, const uint8_t *pixels, int n)
{
    const rt_op *in = &m->ops[0];
    if (in->fdt == RT_DT_INT8) {
        qat_rti_input_u8(in, pixels, m->out[0], n, nthreads(m, n));
    } else {
        float *y = (float *)(void *)m->out[0];
        const long long total = (long long)n * (long long)in->out_size;
        float lut[256]; /* the value of each pixel, computed once a call */
        for (int p = 0; p < 256; p++) {
            const float v = norm_pixel(in, (uint8_t)p);
            lut[p] = in->fdt == RT_DT_F32 ? v : fround(in, v);
        }
        for (long long e = 0; e < total; e++) y[e] = lut[pixels[e]];
    }
    qat_rti_float_run_ops(m, n);
}

long long qat_rti_float_run_f32(qat_rt_model *m, const float *x, int n)
{
    const rt_op *in = &m->ops[0];
    if (in->fdt == RT_DT_INT8) {
        long long nan = qat_rti_input_f32(in, x, m->out[0], n, nthreads(m, n));
        if (nan >= 0) return nan;
    } else {
        float *y = (float *)(void *)m->out[0];
        const long long total = (long long)n * (long long)in->out_size;
        for (long long e = 0; e < total; e++)
            if (isnan(x[e])) return e;
        for (long long e = 0; e < total; e++) y[e] = in->fdt == RT_DT_F32 ? x[e] : fround(in, x[e]);
    }
    qat_rti_float_run_ops(m, n);
    return -1;
}
