/* Fake-quantization kernels: forward with the straight-through mask, the
 * mask backward, LSQ gradients, and the bias grid. Rules: docs/QUANT.md;
 * every rounding comes from runtime/rounding.h. */
#include <math.h>

#include "autograd/kernels.h"
#include "quant/fakequant.h"
#include "runtime/rounding.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define QAT_HAVE_AVX512 1
#else
#define QAT_HAVE_AVX512 0
#endif

/* The element loops are cloned for AVX-512 and AVX2 (picked at load time;
 * the baseline build is SSE2): same expressions, so the same results. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* Below this many elements a loop stays on the calling thread. */
#define PAR_MIN 65536
/* LSQ sums: fixed blocks, summed in block order, so the result does not
 * depend on the number of threads. */
#define SUM_BLOCKS 64

int32_t qat_zero_point_from_float(float z, int32_t qmin, int32_t qmax)
{
    /* same rounding as the grid; saturation keeps NaN/huge values in range */
    return qat_quantize_val(z, 1.0f, 0, qmin, qmax);
}

/* ---- per tensor ---- */

/* One element of the forward; shared by the tensor and channel kernels. */
static inline float fq_one(uint8_t *m, float x, float scale, float inv_s, int32_t zp,
                           int32_t qmin, int32_t qmax)
{
    int32_t q = qat_quantize_val_unclamped(x, inv_s, zp);
    *m = (uint8_t)((q >= qmin) & (q <= qmax));
    return (float)(qat_clamp_i32(q, qmin, qmax) - zp) * scale;
}

/* x, y: (n) */
CLONES static void fq_span(float *y, uint8_t *mask, const float *x, float scale, int32_t zp,
                    int32_t qmin, int32_t qmax, size_t n)
{
    float inv_s = 1.0f / scale;
    if (mask) {
        for (size_t i = 0; i < n; i++) y[i] = fq_one(&mask[i], x[i], scale, inv_s, zp, qmin, qmax);
    } else {
        for (size_t i = 0; i < n; i++) {
            int32_t q = qat_quantize_val(x[i], inv_s, zp, qmin, qmax);
            y[i] = (float)(q - zp) * scale;
        }
    }
}

void qat_fqk_forward(float *y, uint8_t *mask, const float *x, float scale, int32_t zp,
                     int32_t qmin, int32_t qmax, size_t n)
{
    if (n < PAR_MIN) {
        fq_span(y, mask, x, scale, zp, qmin, qmax, n);
        return;
    }
    const size_t chunk = 16384;
    long nchunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
    for (long k = 0; k < nchunks; k++) {
        size_t a = (size_t)k * chunk;
        size_t len = n - a < chunk ? n - a : chunk;
        fq_span(y + a, mask ? mask + a : NULL, x + a, scale, zp, qmin, qmax, len);
    }
}

/* fq(relu(x)): the ReLU's gradient (x > 0) is folded into the mask. */
CLONES static void fq_relu_span(float *y, uint8_t *mask, const float *x, float scale, int32_t zp, int32_t qmin,
                         int32_t qmax, size_t n)
{
    float inv_s = 1.0f / scale;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f; /* NaN -> 0, as qat_relu */
        uint8_t m;
        y[i] = fq_one(&m, v, scale, inv_s, zp, qmin, qmax);
        mask[i] = m & (x[i] > 0.0f);
    }
}

void qat_fqk_relu_forward(float *y, uint8_t *mask, const float *x, float scale, int32_t zp, int32_t qmin,
                          int32_t qmax, size_t n)
{
    const size_t chunk = 16384;
    long nchunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long k = 0; k < nchunks; k++) {
        size_t a = (size_t)k * chunk;
        size_t len = n - a < chunk ? n - a : chunk;
        fq_relu_span(y + a, mask + a, x + a, scale, zp, qmin, qmax, len);
    }
}

/* The same computation written the way PyTorch's CPU kernel writes it:
 * int64 qval = zp + nearbyintf(x * inv_s), clamp, (qval - zp) * s. The
 * product is saturated before nearbyintf only to keep the int64 conversion
 * defined. */
void qat_fqk_forward_ref(float *y, uint8_t *mask, const float *x, float scale,
                         int32_t zp, int32_t qmin, int32_t qmax, size_t n)
{
    float inv_s = 1.0f / scale;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv_s;
        if (isnan(v)) v = -1e12f;
        v = fminf(fmaxf(v, -1e12f), 1e12f);
        int64_t q = (int64_t)zp + (int64_t)nearbyintf(v);
        int64_t qc = q < qmin ? qmin : q > qmax ? qmax : q;
        if (mask) mask[i] = (uint8_t)(qmin <= q && q <= qmax);
        y[i] = (float)(qc - zp) * scale;
    }
}

void qat_fqk_backward(float *dx, const float *dy, const uint8_t *mask, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * (float)mask[i];
}

/* ---- per channel ---- */

void qat_fqk_channel_forward(float *y, uint8_t *mask, const float *x,
                             const float *scales, const int32_t *zps, int32_t qmin,
                             int32_t qmax, size_t outer, size_t channels, size_t inner)
{
    /* one row = (o, c): inner contiguous elements with one (s, zp) */
    long rows = (long)(outer * channels);
#pragma omp parallel for schedule(static) if (outer * channels * inner >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        size_t c = (size_t)r % channels, off = (size_t)r * inner;
        fq_span(y + off, mask ? mask + off : NULL, x + off, scales[c], zps[c], qmin, qmax,
                inner);
    }
}

void qat_fqk_channel_forward_ref(float *y, uint8_t *mask, const float *x,
                                 const float *scales, const int32_t *zps,
                                 int32_t qmin, int32_t qmax, size_t outer,
                                 size_t channels, size_t inner)
{
    for (size_t o = 0; o < outer; o++)
        for (size_t c = 0; c < channels; c++) {
            size_t off = (o * channels + c) * inner;
            qat_fqk_forward_ref(y + off, mask ? mask + off : NULL, x + off, scales[c],
                                zps[c], qmin, qmax, inner);
        }
}

/* ---- LSQ ---- */

/* Gradients of one element (PyTorch's expression order, float32), without
 * branches; with relu the input is relu(x) and the ReLU's gradient is
 * folded into dx. Out of range, (q < qmin ? qmin : qmax) - zp = qc - zp. */
static inline void lsq_one(float *dx, float *ds, float *dz, float dy, float x, float scale,
                           float inv_s, int32_t zp, int32_t qmin, int32_t qmax, float g, int relu)
{
    float xv = relu ? (x > 0.0f ? x : 0.0f) : x;
    int32_t q = qat_quantize_val_unclamped(xv, inv_s, zp);
    int in = (q >= qmin) & (q <= qmax);
    int32_t qc = qat_clamp_i32(q, qmin, qmax);
    float xfq = (float)(qc - zp) * scale;
    float ds_in = dy * (xfq - xv) * inv_s * g, ds_out = dy * (float)(qc - zp) * g;
    *dx = dy * (float)(in & (relu ? x > 0.0f : 1));
    *ds = in ? ds_in : ds_out;
    *dz = in ? 0.0f : dy * -1.0f * scale * g;
}

/* The sums run in LSQ_LANES interleaved double accumulators (element i
 * into lane i mod 8, the tail after the last full group into lane 0), added
 * in lane order at the end: a fixed order, independent of threads, that
 * the AVX-512 and AVX2 kernels below follow exactly. */
#define LSQ_LANES 8

#if QAT_HAVE_AVX512
#define AVX512 __attribute__((target("avx512f")))
/* Groups of 16 elements: the portable expressions lane by lane (the same
 * IEEE operations in the same order), so dx and both sums are identical to
 * lsq_span's. Returns how many elements it did (a multiple of 16). */
AVX512 static size_t lsq_span_avx512(float *dx, double *ls, double *lz, const float *dy, const float *x, float scale,
                                     float inv_s, int32_t zp, int32_t qmin, int32_t qmax, float g, size_t n, int relu)
{
    const __m512 vs = _mm512_set1_ps(scale), vinv = _mm512_set1_ps(inv_s), vg = _mm512_set1_ps(g);
    const __m512 magic = _mm512_set1_ps(12582912.0f), sat = _mm512_set1_ps(QAT_QUANT_SAT),
                 nsat = _mm512_set1_ps(-QAT_QUANT_SAT), zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f),
                 mone = _mm512_set1_ps(-1.0f);
    const __m512i vzp = _mm512_set1_epi32(zp), vmin = _mm512_set1_epi32(qmin), vmax = _mm512_set1_epi32(qmax);
    __m512d as = _mm512_loadu_pd(ls), az = _mm512_loadu_pd(lz);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xo = _mm512_loadu_ps(x + i), d = _mm512_loadu_ps(dy + i);
        __mmask16 pos = _mm512_cmp_ps_mask(xo, zero, _CMP_GT_OQ);
        __m512 xv = relu ? _mm512_maskz_mov_ps(pos, xo) : xo;
        __m512 r = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xv, vinv), magic), magic);
        r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, nsat, _CMP_GT_OQ), nsat, r);
        r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, sat, _CMP_LT_OQ), sat, r);
        __m512i q = _mm512_add_epi32(vzp, _mm512_cvttps_epi32(r));
        __mmask16 in = _mm512_cmpge_epi32_mask(q, vmin) & _mm512_cmple_epi32_mask(q, vmax);
        __m512i qc = _mm512_min_epi32(_mm512_max_epi32(q, vmin), vmax);
        __m512 qf = _mm512_cvtepi32_ps(_mm512_sub_epi32(qc, vzp));
        __m512 xfq = _mm512_mul_ps(qf, vs);
        __m512 ds_in = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(xfq, xv)), vinv), vg);
        __m512 ds_out = _mm512_mul_ps(_mm512_mul_ps(d, qf), vg);
        __m512 ds = _mm512_mask_blend_ps(in, ds_out, ds_in);
        __m512 dz = _mm512_maskz_mov_ps((__mmask16)~in, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, mone), vs), vg));
        if (dx) {
            __m512 gx = _mm512_mul_ps(d, _mm512_maskz_mov_ps(relu ? (__mmask16)(in & pos) : in, one));
            _mm512_storeu_ps(dx + i, _mm512_add_ps(_mm512_loadu_ps(dx + i), gx));
        }
        as = _mm512_add_pd(as, _mm512_cvtps_pd(_mm512_castps512_ps256(ds)));
        as = _mm512_add_pd(as, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ds), 1))));
        az = _mm512_add_pd(az, _mm512_cvtps_pd(_mm512_castps512_ps256(dz)));
        az = _mm512_add_pd(az, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dz), 1))));
    }
    _mm512_storeu_pd(ls, as);
    _mm512_storeu_pd(lz, az);
    return i;
}

#define AVX2 __attribute__((target("avx2,fma")))
/* The same with 8 elements per step, for CPUs without AVX-512F: a group's
 * elements i + l go to lanes l of the 8 double accumulators, lanes 0-3 in
 * the first register and 4-7 in the second, as in the portable loop. A
 * multiply and an add stay two operations (-ffp-contract=off). Returns how
 * many elements it did (a multiple of 8). */
AVX2 static size_t lsq_span_avx2(float *dx, double *ls, double *lz, const float *dy, const float *x, float scale,
                                 float inv_s, int32_t zp, int32_t qmin, int32_t qmax, float g, size_t n, int relu)
{
    const __m256 vs = _mm256_set1_ps(scale), vinv = _mm256_set1_ps(inv_s), vg = _mm256_set1_ps(g);
    const __m256 magic = _mm256_set1_ps(12582912.0f), sat = _mm256_set1_ps(QAT_QUANT_SAT),
                 nsat = _mm256_set1_ps(-QAT_QUANT_SAT), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
                 mone = _mm256_set1_ps(-1.0f);
    const __m256i vzp = _mm256_set1_epi32(zp), vmin = _mm256_set1_epi32(qmin), vmax = _mm256_set1_epi32(qmax);
    __m256d as0 = _mm256_loadu_pd(ls), as1 = _mm256_loadu_pd(ls + 4), az0 = _mm256_loadu_pd(lz),
            az1 = _mm256_loadu_pd(lz + 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xo = _mm256_loadu_ps(x + i), d = _mm256_loadu_ps(dy + i);
        __m256 pos = _mm256_cmp_ps(xo, zero, _CMP_GT_OQ);
        __m256 xv = relu ? _mm256_and_ps(pos, xo) : xo;
        __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xv, vinv), magic), magic);
        r = _mm256_blendv_ps(nsat, r, _mm256_cmp_ps(r, nsat, _CMP_GT_OQ));
        r = _mm256_blendv_ps(sat, r, _mm256_cmp_ps(r, sat, _CMP_LT_OQ));
        __m256i q = _mm256_add_epi32(vzp, _mm256_cvttps_epi32(r));
        /* out of [qmin, qmax]: qmin > q or q > qmax */
        __m256 out = _mm256_castsi256_ps(_mm256_or_si256(_mm256_cmpgt_epi32(vmin, q), _mm256_cmpgt_epi32(q, vmax)));
        __m256i qc = _mm256_min_epi32(_mm256_max_epi32(q, vmin), vmax);
        __m256 qf = _mm256_cvtepi32_ps(_mm256_sub_epi32(qc, vzp));
        __m256 xfq = _mm256_mul_ps(qf, vs);
        __m256 ds_in = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(xfq, xv)), vinv), vg);
        __m256 ds_out = _mm256_mul_ps(_mm256_mul_ps(d, qf), vg);
        __m256 ds = _mm256_blendv_ps(ds_in, ds_out, out);
        __m256 dz = _mm256_and_ps(out, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, mone), vs), vg)); /* in: +0.0 */
        if (dx) {
            __m256 gx = _mm256_mul_ps(d, _mm256_andnot_ps(out, relu ? _mm256_and_ps(pos, one) : one));
            _mm256_storeu_ps(dx + i, _mm256_add_ps(_mm256_loadu_ps(dx + i), gx));
        }
        as0 = _mm256_add_pd(as0, _mm256_cvtps_pd(_mm256_castps256_ps128(ds)));
        as1 = _mm256_add_pd(as1, _mm256_cvtps_pd(_mm256_extractf128_ps(ds, 1)));
        az0 = _mm256_add_pd(az0, _mm256_cvtps_pd(_mm256_castps256_ps128(dz)));
        az1 = _mm256_add_pd(az1, _mm256_cvtps_pd(_mm256_extractf128_ps(dz, 1)));
    }
    _mm256_storeu_pd(ls, as0);
    _mm256_storeu_pd(ls + 4, as1);
    _mm256_storeu_pd(lz, az0);
    _mm256_storeu_pd(lz + 4, az1);
    return i;
}
#endif

/* Accumulates over (n): dx (may be NULL) += ..., sums into *sum_s, *sum_z. */
static void lsq_span(float *dx, double *sum_s, double *sum_z, const float *dy, const float *x, float scale,
                     int32_t zp, int32_t qmin, int32_t qmax, float g, size_t n, int relu)
{
    float inv_s = 1.0f / scale;
    double ls[LSQ_LANES] = {0}, lz[LSQ_LANES] = {0};
    size_t i = 0;
#if QAT_HAVE_AVX512
    const int level = qat_simd_level();
    if (level == QAT_SIMD_AVX512)
        i = lsq_span_avx512(dx, ls, lz, dy, x, scale, inv_s, zp, qmin, qmax, g, n, relu);
    else if (level == QAT_SIMD_AVX2)
        i = lsq_span_avx2(dx, ls, lz, dy, x, scale, inv_s, zp, qmin, qmax, g, n, relu);
#endif
    for (; i + LSQ_LANES <= n; i += LSQ_LANES)
        for (int l = 0; l < LSQ_LANES; l++) {
            float gx, gs, gz;
            lsq_one(&gx, &gs, &gz, dy[i + l], x[i + l], scale, inv_s, zp, qmin, qmax, g, relu);
            if (dx) dx[i + l] += gx;
            ls[l] += gs;
            lz[l] += gz;
        }
    for (; i < n; i++) {
        float gx, gs, gz;
        lsq_one(&gx, &gs, &gz, dy[i], x[i], scale, inv_s, zp, qmin, qmax, g, relu);
        if (dx) dx[i] += gx;
        ls[0] += gs;
        lz[0] += gz;
    }
    double ss = 0.0, sz = 0.0;
    for (int l = 0; l < LSQ_LANES; l++) {
        ss += ls[l];
        sz += lz[l];
    }
    *sum_s += ss;
    *sum_z += sz;
}

static void lsq_tensor(float *dx, float *dscale, float *dzp, const float *dy, const float *x, float scale,
                       int32_t zp, int32_t qmin, int32_t qmax, float grad_factor, size_t n, int relu)
{
    double part_s[SUM_BLOCKS] = {0}, part_z[SUM_BLOCKS] = {0};
    size_t block = (n + SUM_BLOCKS - 1) / SUM_BLOCKS;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int b = 0; b < SUM_BLOCKS; b++) {
        size_t a = (size_t)b * block;
        if (a >= n) continue;
        size_t len = n - a < block ? n - a : block;
        lsq_span(dx ? dx + a : NULL, &part_s[b], &part_z[b], dy + a, x + a, scale, zp, qmin, qmax, grad_factor,
                 len, relu);
    }
    double ss = 0.0, sz = 0.0;
    for (int b = 0; b < SUM_BLOCKS; b++) {
        ss += part_s[b];
        sz += part_z[b];
    }
    *dscale += (float)ss;
    if (dzp) *dzp += (float)sz;
}

void qat_fqk_lsq_relu_backward(float *dx, float *dscale, float *dzp, const float *dy, const float *x,
                               float scale, int32_t zp, int32_t qmin, int32_t qmax, float grad_factor,
                               size_t n)
{
    lsq_tensor(dx, dscale, dzp, dy, x, scale, zp, qmin, qmax, grad_factor, n, 1);
}

void qat_fqk_lsq_backward(float *dx, float *dscale, float *dzp, const float *dy,
                          const float *x, float scale, int32_t zp, int32_t qmin,
                          int32_t qmax, float grad_factor, size_t n)
{
    lsq_tensor(dx, dscale, dzp, dy, x, scale, zp, qmin, qmax, grad_factor, n, 0);
}

/* Literal transcription of PyTorch's per-element kernel (int64 xqi from
 * nearbyint(zp + x * inv_s)), summed sequentially in double. */
void qat_fqk_lsq_backward_ref(float *dx, float *dscale, float *dzp, const float *dy,
                              const float *x, float scale, int32_t zp, int32_t qmin,
                              int32_t qmax, float grad_factor, size_t n)
{
    float inv_s = 1.0f / scale;
    float dscale_small = (float)(qmin - zp), dscale_big = (float)(qmax - zp);
    double ss = 0.0, sz = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v = (float)zp + x[i] * inv_s;
        if (isnan(v)) v = -1e12f;
        v = fminf(fmaxf(v, -1e12f), 1e12f);
        int64_t q = (int64_t)nearbyintf(v);
        int in = q >= qmin && q <= qmax;
        if (dx) dx[i] += dy[i] * (float)in;
        float xfq = (float)((q < qmin ? qmin : q > qmax ? qmax : q) - zp) * scale;
        if (!in) {
            sz += dy[i] * (-1) * scale * grad_factor;
            ss += (q < qmin ? dy[i] * dscale_small : dy[i] * dscale_big) * grad_factor;
        } else {
            ss += dy[i] * (xfq - x[i]) * inv_s * grad_factor;
        }
    }
    *dscale += (float)ss;
    if (dzp) *dzp += (float)sz;
}

void qat_fqk_lsq_channel_backward(float *dx, float *dscales, float *dzps,
                                  const float *dy, const float *x,
                                  const float *scales, const int32_t *zps,
                                  int32_t qmin, int32_t qmax, float grad_factor,
                                  size_t outer, size_t channels, size_t inner)
{
    /* channel-major: each thread owns whole channels, so each channel's sum
     * is a fixed sequential order over (o, i) */
    long nc = (long)channels;
#pragma omp parallel for schedule(static) if (outer * channels * inner >= PAR_MIN)
    for (long cl = 0; cl < nc; cl++) {
        size_t c = (size_t)cl;
        double ss = 0.0, sz = 0.0;
        for (size_t o = 0; o < outer; o++) {
            size_t off = (o * channels + c) * inner;
            lsq_span(dx ? dx + off : NULL, &ss, &sz, dy + off, x + off, scales[c], zps[c], qmin,
                     qmax, grad_factor, inner, 0);
        }
        dscales[c] += (float)ss;
        if (dzps) dzps[c] += (float)sz;
    }
}

/* ---- bias ---- */

void qat_fqk_bias(float *out, const float *bias, const float *s_w, float s_in, int n)
{
    for (int c = 0; c < n; c++) {
        float s_b = qat_bias_scale(s_in, s_w[c]);
        out[c] = (float)qat_quantize_bias_val(bias[c], s_b) * s_b;
    }
}

void qat_fqk_bias_backward(float *dbias, const float *dout, int n)
{
    for (int c = 0; c < n; c++) dbias[c] += dout[c];
}
