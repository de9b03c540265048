/* runtime/kernels_ref.c: the portable reference kernels, integer only.
 *
 * Each is a direct transcription of docs/FORMAT-int8.md over a batch:
 * int8 inputs, int32 accumulators (load.c proved they cannot overflow),
 * int64 for the requantization product. The fast kernels (kernels_avx2.c,
 * kernels_vnni.c) are tested bit-exact against these; the element-wise and
 * pooling ops here are shared by every ISA. The batch is split over OpenMP
 * threads; results do not depend on the thread count. */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "runtime/rounding.h"
#include "runtime/rt_internal.h"

#pragma GCC poison float double

/* y = clamp(requant(acc, m, s) + zp, lo, hi); ranges as load.c checked:
 * m in {0} U [2^30, 2^31), s in [-31, 30], zp/lo/hi in [-128, 127]. */
static inline int8_t requant_s8(int32_t acc, int32_t m, int32_t s, int32_t zp, int32_t lo,
                                int32_t hi)
{
    int64_t v = (int64_t)qat_requant_single(acc, m, s) + zp;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

size_t qat_rti_conv2d_ref_scratch(const rt_op *op)
{
    return (size_t)op->out_shape[1] * (size_t)op->out_shape[2] * sizeof(int32_t);
}

/* x [n, C, H, W], weight [OC, C, KH, KW], y [n, OC, OH, OW]: per output
 * channel an int32 plane acc[OH*OW] (scratch) gathers one (ic, kh, kw) tap
 * at a time over the rows and columns that fall inside the input. */
void qat_rti_conv2d_ref(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                        uint8_t *scratch, size_t slot_bytes)
{
    const int C = op->in_c, H = op->in_h, W = op->in_w;
    const int OC = op->oc, KH = op->kh, KW = op->kw, S = op->stride, P = op->pad;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const int32_t zp = op->in_zp;
    const size_t in_sz = (size_t)C * H * W, out_sz = (size_t)OC * OH * OW;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++) {
        int32_t *acc = (int32_t *)(void *)(scratch + (size_t)omp_get_thread_num() * slot_bytes);
        const int8_t *xi = x + (size_t)i * in_sz;
        int8_t *yi = y + (size_t)i * out_sz;
        for (int oc = 0; oc < OC; oc++) {
            for (int p = 0; p < OH * OW; p++) acc[p] = op->bias[oc];
            const int8_t *w = op->weight + (size_t)oc * C * KH * KW;
            for (int ic = 0; ic < C; ic++)
                for (int kh = 0; kh < KH; kh++)
                    for (int kw = 0; kw < KW; kw++) {
                        const int32_t wv = w[((size_t)ic * KH + kh) * KW + kw];
                        if (!wv) continue;
                        /* columns with 0 <= ow*S - P + kw < W */
                        int ow0 = 0, ow1 = OW;
                        while (ow0 < OW && ow0 * S - P + kw < 0) ow0++;
                        while (ow1 > ow0 && (ow1 - 1) * S - P + kw >= W) ow1--;
                        for (int oh = 0; oh < OH; oh++) {
                            const int ih = oh * S - P + kh;
                            if (ih < 0 || ih >= H) continue;
                            const int8_t *xr = xi + ((size_t)ic * H + ih) * W - P + kw;
                            int32_t *ar = acc + (size_t)oh * OW;
                            for (int ow = ow0; ow < ow1; ow++)
                                ar[ow] += wv * ((int32_t)xr[ow * S] - zp);
                        }
                    }
            int8_t *yo = yi + (size_t)oc * OH * OW;
            for (int p = 0; p < OH * OW; p++)
                yo[p] = requant_s8(acc[p], op->mult[oc], op->shift[oc], op->out_zp, op->act_min,
                                   op->act_max);
        }
    }
}

/* x [n, IN], weight [OUT, IN], y [n, OUT] */
void qat_rti_linear_ref(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads)
{
    const int IN = op->ic, OUT = op->oc;
    const int32_t zp = op->in_zp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++) {
        const int8_t *xi = x + (size_t)i * IN;
        for (int o = 0; o < OUT; o++) {
            const int8_t *w = op->weight + (size_t)o * IN;
            int32_t acc = op->bias[o];
            for (int k = 0; k < IN; k++) acc += (int32_t)w[k] * ((int32_t)xi[k] - zp);
            y[(size_t)i * OUT + o] =
                requant_s8(acc, op->mult[o], op->shift[o], op->out_zp, op->act_min, op->act_max);
        }
    }
}

/* a, b, y [n, size] */
void qat_rti_add_s8(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y, int n,
                    int threads)
{
    const size_t sz = op->out_size;
    const int64_t ma = op->add_mult[0], mb = op->add_mult[1];
    const int32_t za = op->add_zp[0], zb = op->add_zp[1];
    const int t = op->add_shift;
    const int64_t half = (int64_t)1 << (t - 1);
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++) {
        const size_t base = (size_t)i * sz;
        for (size_t j = base; j < base + sz; j++) {
            int64_t v = ((int64_t)a[j] - za) * ma + ((int64_t)b[j] - zb) * mb;
            int64_t r = ((v + half) >> t) + zp;
            y[j] = (int8_t)(r < lo ? lo : r > hi ? hi : r);
        }
    }
}

/* x [n, C, H, W] -> y [n, C] */
void qat_rti_global_avgpool_s8(const rt_op *op, const rt_op *in, const int8_t *x, int8_t *y,
                               int n, int threads)
{
    (void)in;
    const int C = op->in_c;
    const size_t hw = (size_t)op->in_h * op->in_w;
    const int32_t zp = op->in_zp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            const int8_t *xc = x + ((size_t)i * C + c) * hw;
            int32_t acc = 0;
            for (size_t p = 0; p < hw; p++) acc += (int32_t)xc[p] - zp;
            y[(size_t)i * C + c] =
                requant_s8(acc, op->pool_mult, op->pool_shift, op->out_zp, -128, 127);
        }
}

/* x [n, C, H, W] -> y [n, C, OH, OW], kernel x kernel windows, no padding */
void qat_rti_avgpool2d_s8(const rt_op *op, const rt_op *in, const int8_t *x, int8_t *y, int n,
                          int threads)
{
    (void)in;
    const int C = op->in_c, H = op->in_h, W = op->in_w, K = op->kernel, S = op->stride;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const int32_t zp = op->in_zp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            const int8_t *xc = x + ((size_t)i * C + c) * H * W;
            int8_t *yc = y + ((size_t)i * C + c) * OH * OW;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    int32_t acc = 0;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++)
                            acc += (int32_t)xc[(size_t)(oh * S + kh) * W + ow * S + kw] - zp;
                    yc[oh * OW + ow] =
                        requant_s8(acc, op->pool_mult, op->pool_shift, op->out_zp, -128, 127);
                }
        }
}

/* x [n, C, H, W] -> y [n, C, OH, OW]: maximum of each window, no padding */
void qat_rti_maxpool2d_s8(const rt_op *op, const rt_op *in, const int8_t *x, int8_t *y, int n,
                          int threads)
{
    (void)in;
    const int C = op->in_c, H = op->in_h, W = op->in_w, K = op->kernel, S = op->stride;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            const int8_t *xc = x + ((size_t)i * C + c) * H * W;
            int8_t *yc = y + ((size_t)i * C + c) * OH * OW;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    int8_t v = -128;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            int8_t e = xc[(size_t)(oh * S + kh) * W + ow * S + kw];
                            v = e > v ? e : v;
                        }
                    yc[oh * OW + ow] = v;
                }
        }
}

/* y = max(x, zp), [n, size] */
void qat_rti_relu_s8(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads)
{
    const size_t sz = op->out_size;
    const int8_t zp = (int8_t)op->out_zp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (size_t j = (size_t)i * sz; j < (size_t)(i + 1) * sz; j++) y[j] = x[j] > zp ? x[j] : zp;
}

/* raw pixels through the input op's 256-entry table, [n, size] */
void qat_rti_input_u8(const rt_op *op, const uint8_t *p, int8_t *y, int n, int threads)
{
    const size_t sz = op->out_size;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (size_t j = (size_t)i * sz; j < (size_t)(i + 1) * sz; j++) y[j] = op->lut[p[j]];
}
