/* Fake-quantization kernels: forward with the straight-through mask, the
 * mask backward, LSQ gradients, and the bias grid. Rules: docs/QUANT.md;
 * every rounding comes from runtime/rounding.h. */
#include <math.h>

#include "quant/fakequant.h"
#include "runtime/rounding.h"

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
static void fq_span(float *y, uint8_t *mask, const float *x, float scale, int32_t zp,
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

void qat_fake_quant_forward(float *y, uint8_t *mask, const float *x, float scale, int32_t zp,
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

/* The same computation written the way PyTorch's CPU kernel writes it:
 * int64 qval = zp + nearbyintf(x * inv_s), clamp, (qval - zp) * s. The
 * product is saturated before nearbyintf only to keep the int64 conversion
 * defined. */
void qat_fake_quant_forward_ref(float *y, uint8_t *mask, const float *x, float scale,
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

void qat_fake_quant_backward(float *dx, const float *dy, const uint8_t *mask, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * (float)mask[i];
}

/* ---- per channel ---- */

void qat_fake_quant_channel_forward(float *y, uint8_t *mask, const float *x,
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

void qat_fake_quant_channel_forward_ref(float *y, uint8_t *mask, const float *x,
                                        const float *scales, const int32_t *zps,
                                        int32_t qmin, int32_t qmax, size_t outer,
                                        size_t channels, size_t inner)
{
    for (size_t o = 0; o < outer; o++)
        for (size_t c = 0; c < channels; c++) {
            size_t off = (o * channels + c) * inner;
            qat_fake_quant_forward_ref(y + off, mask ? mask + off : NULL, x + off, scales[c],
                                       zps[c], qmin, qmax, inner);
        }
}

/* ---- LSQ ---- */

/* Gradients of one element (PyTorch's expression order, float32). */
static inline void lsq_one(float *dx, float *ds, float *dz, float dy, float x, float scale,
                           float inv_s, int32_t zp, int32_t qmin, int32_t qmax, float g)
{
    int32_t q = qat_quantize_val_unclamped(x, inv_s, zp);
    int in = (q >= qmin) & (q <= qmax);
    *dx = dy * (float)in;
    if (!in) {
        *dz = dy * -1.0f * scale * g;
        *ds = dy * (float)((q < qmin ? qmin : qmax) - zp) * g;
    } else {
        float xfq = (float)(q - zp) * scale;
        *dz = 0.0f;
        *ds = dy * (xfq - x) * inv_s * g;
    }
}

/* Accumulates over (n): dx (may be NULL) += ..., sums into *sum_s, *sum_z. */
static void lsq_span(float *dx, double *sum_s, double *sum_z, const float *dy, const float *x,
                     float scale, int32_t zp, int32_t qmin, int32_t qmax, float g, size_t n)
{
    float inv_s = 1.0f / scale;
    double ss = 0.0, sz = 0.0;
    for (size_t i = 0; i < n; i++) {
        float gx, gs, gz;
        lsq_one(&gx, &gs, &gz, dy[i], x[i], scale, inv_s, zp, qmin, qmax, g);
        if (dx) dx[i] += gx;
        ss += gs;
        sz += gz;
    }
    *sum_s += ss;
    *sum_z += sz;
}

void qat_fake_quant_lsq_backward(float *dx, float *dscale, float *dzp, const float *dy,
                                 const float *x, float scale, int32_t zp, int32_t qmin,
                                 int32_t qmax, float grad_factor, size_t n)
{
    double part_s[SUM_BLOCKS] = {0}, part_z[SUM_BLOCKS] = {0};
    size_t block = (n + SUM_BLOCKS - 1) / SUM_BLOCKS;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int b = 0; b < SUM_BLOCKS; b++) {
        size_t a = (size_t)b * block;
        if (a >= n) continue;
        size_t len = n - a < block ? n - a : block;
        lsq_span(dx ? dx + a : NULL, &part_s[b], &part_z[b], dy + a, x + a, scale, zp, qmin,
                 qmax, grad_factor, len);
    }
    double ss = 0.0, sz = 0.0;
    for (int b = 0; b < SUM_BLOCKS; b++) {
        ss += part_s[b];
        sz += part_z[b];
    }
    *dscale += (float)ss;
    if (dzp) *dzp += (float)sz;
}

/* Literal transcription of PyTorch's per-element kernel (int64 xqi from
 * nearbyint(zp + x * inv_s)), summed sequentially in double. */
void qat_fake_quant_lsq_backward_ref(float *dx, float *dscale, float *dzp, const float *dy,
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

void qat_fake_quant_lsq_channel_backward(float *dx, float *dscales, float *dzps,
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
                     qmax, grad_factor, inner);
        }
        dscales[c] += (float)ss;
        if (dzps) dzps[c] += (float)sz;
    }
}

/* ---- bias ---- */

void qat_fake_quant_bias(float *out, const float *bias, const float *s_w, float s_in, int n)
{
    for (int c = 0; c < n; c++) {
        float s_b = qat_bias_scale(s_in, s_w[c]);
        out[c] = (float)qat_quantize_bias_val(bias[c], s_b) * s_b;
    }
}

void qat_fake_quant_bias_backward(float *dbias, const float *dout, int n)
{
    for (int c = 0; c < n; c++) dbias[c] += dout[c];
}
