/* runtime/kernels_ref.c: the portable reference kernels, integer only.
 *
 * Each is a direct transcription of docs/FORMAT-int8.md over a batch:
 * int8 inputs, int32 accumulators (load.c proved they cannot overflow),
 * int64 for the requantization product. The fast kernels (kernels_avx2.c,
 * kernels_vnni.c) are tested bit-exact against these; the element-wise and
 * pooling ops here are shared by every ISA. All but linear work on one
 * sample: model.c runs chains of them image by image on each thread, so
 * an image's activations stay in cache from one op to the next. */
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
    const size_t P = (size_t)op->out_shape[1] * op->out_shape[2];
    return (size_t)op->oc * P * sizeof(int32_t) + P * sizeof(int16_t) + 64;
}

/* conv2d, any groups (docs/FORMAT-int8.md): output channel oc of group
 * g = oc / (OC/groups) sums over the input channels [g * C/groups,
 * (g+1) * C/groups), weight [OC, C/groups, KH, KW]; groups 1 is the
 * ordinary conv. x [C, H, W], y [OC, OH, OW] (one image). For each tap
 * k = (ic, kh, kw): col[p] = x at the tap of output p, minus the zero
 * point (0 in the padding), then acc[oc][p] += w[oc][k] * col[p] for the
 * group's channels: long inner loops over the P = OH*OW positions, which
 * compilers vectorize. scratch: acc [OC][P] int32, col [P] int16. */
void qat_rti_conv2d_ref(const rt_op *op, const int8_t *xi, int8_t *yi, uint8_t *scratch)
{
    const int H = op->in_h, W = op->in_w, G = op->groups;
    const int OC = op->oc, KH = op->kh, KW = op->kw, S = op->stride, P = op->pad;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const int CG = op->in_c / G, OCG = OC / G;
    const size_t NP = (size_t)OH * OW, K = (size_t)CG * KH * KW;
    const int32_t zp = op->in_zp;
    int32_t *acc = (int32_t *)(void *)scratch;
    int16_t *col = (int16_t *)(void *)(scratch + (size_t)OC * NP * sizeof(int32_t));
    for (int oc = 0; oc < OC; oc++)
        for (size_t p = 0; p < NP; p++) acc[(size_t)oc * NP + p] = op->bias[oc];
    for (int g = 0; g < G; g++)
        for (int icg = 0; icg < CG; icg++)
            for (int kh = 0; kh < KH; kh++)
                for (int kw = 0; kw < KW; kw++) {
                    const int ic = g * CG + icg;
                    for (int oh = 0; oh < OH; oh++) {
                        const int ih = oh * S - P + kh;
                        int16_t *cr = col + (size_t)oh * OW;
                        for (int ow = 0; ow < OW; ow++) {
                            const int iw = ow * S - P + kw;
                            cr[ow] = (int16_t)(ih >= 0 && ih < H && iw >= 0 && iw < W
                                                   ? xi[((size_t)ic * H + ih) * W + iw] - zp
                                                   : 0);
                        }
                    }
                    const size_t k = ((size_t)icg * KH + kh) * KW + kw;
                    for (int oc = g * OCG; oc < (g + 1) * OCG; oc++) {
                        const int32_t wv = op->weight[(size_t)oc * K + k];
                        int32_t *a = acc + (size_t)oc * NP;
                        if (wv)
                            for (size_t p = 0; p < NP; p++) a[p] += wv * col[p];
                    }
                }
    for (int oc = 0; oc < OC; oc++)
        for (size_t p = 0; p < NP; p++)
            yi[(size_t)oc * NP + p] = requant_s8(acc[(size_t)oc * NP + p], op->mult[oc], op->shift[oc],
                                                 op->out_zp, op->act_min, qat_rti_act_hi(op, oc));
}

/* y = table[x + 128], [size] */
void qat_rti_lut_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    for (size_t j = 0; j < op->out_size; j++) y[j] = op->lut[(uint8_t)(x[j] + 128)];
}

/* y = the channels (features) of xs[0], xs[1], ... one after the other,
 * each requantized: clamp(requant(x - z_i, m_i, s_i) + zp, lo, hi). An
 * input on the output's grid (m = 2^30, s = 1, z_i = zp) is a copy. */
void qat_rti_concat_s8(const rt_op *op, const int8_t *const *xs, int8_t *y)
{
    const size_t hw = op->out_ndim == 3 ? (size_t)op->out_shape[1] * op->out_shape[2] : 1;
    for (int i = 0; i < op->n_inputs; i++) {
        const size_t n = (size_t)op->cat_c[i] * hw;
        const int8_t *x = xs[i];
        const int32_t m = op->cat_mult[i], s = op->cat_shift[i], z = op->cat_zp[i];
        if (m == (1 << 30) && s == 1 && z == op->out_zp && op->act_min == -128 && op->act_max == 127)
            memcpy(y, x, n);
        else
            for (size_t j = 0; j < n; j++)
                y[j] = requant_s8((int32_t)x[j] - z, m, s, op->out_zp, op->act_min, op->act_max);
        y += n;
    }
}

/* x [C, H, W] -> y [C, H*f, W*f], y[c][h][w] = x[c][h / f][w / f] */
void qat_rti_upsample_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    const int f = op->kernel, H = op->in_h, W = op->in_w, OW = W * f;
    for (int c = 0; c < op->in_c; c++)
        for (int h = 0; h < H; h++) {
            const int8_t *xr = x + ((size_t)c * H + h) * W;
            int8_t *yr = y + ((size_t)c * H * f + (size_t)h * f) * OW;
            for (int w = 0; w < W; w++)
                for (int k = 0; k < f; k++) yr[w * f + k] = xr[w];
            for (int k = 1; k < f; k++) memcpy(yr + (size_t)k * OW, yr, (size_t)OW);
        }
}

/* x [n, IN], weight [OUT, IN], y [n, OUT] */
void qat_rti_linear_ref(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads)
{
    const int IN = op->ic, OUT = op->oc;
    const int32_t zp = op->in_zp;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        const int8_t *xi = x + (size_t)i * IN;
        for (int o = 0; o < OUT; o++) {
            const int8_t *w = op->weight + (size_t)o * IN;
            int32_t acc = op->bias[o];
            for (int k = 0; k < IN; k++) acc += (int32_t)w[k] * ((int32_t)xi[k] - zp);
            y[(size_t)i * OUT + o] =
                requant_s8(acc, op->mult[o], op->shift[o], op->out_zp, op->act_min, qat_rti_act_hi(op, o));
        }
    }
}

/* a, b, y [size] (one sample) */
void qat_rti_add_s8(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
{
    const size_t sz = op->out_size;
    const int64_t ma = op->add_mult[0], mb = op->add_mult[1];
    const int32_t za = op->add_zp[0], zb = op->add_zp[1];
    const int t = op->add_shift;
    const int64_t half = (int64_t)1 << (t - 1);
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
    for (size_t j = 0; j < sz; j++) {
        int64_t v = ((int64_t)a[j] - za) * ma + ((int64_t)b[j] - zb) * mb;
        int64_t r = ((v + half) >> t) + zp;
        y[j] = (int8_t)(r < lo ? lo : r > hi ? hi : r);
    }
}

/* x [C, H, W] -> y [C] */
void qat_rti_global_avgpool_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    const size_t hw = (size_t)op->in_h * op->in_w;
    const int32_t zp = op->in_zp;
    for (int c = 0; c < op->in_c; c++) {
        const int8_t *xc = x + (size_t)c * hw;
        int32_t acc = 0;
        for (size_t p = 0; p < hw; p++) acc += (int32_t)xc[p] - zp;
        y[c] = requant_s8(acc, op->pool_mult, op->pool_shift, op->out_zp, op->act_min, op->act_max);
    }
}

/* the global average pool's epilogue for channels [c0, c0 + n): sums[i]
 * = sum over the plane of x - zp (for the fast kernels, which sum in any
 * order: integers) */
void qat_rti_global_avgpool_fin(const rt_op *op, const int32_t *sums, int c0, int n, int8_t *y)
{
    for (int i = 0; i < n; i++)
        y[c0 + i] = requant_s8(sums[i], op->pool_mult, op->pool_shift, op->out_zp, op->act_min, op->act_max);
}

/* x [C, H, W] -> y [C, OH, OW], kernel x kernel windows, no padding */
void qat_rti_avgpool2d_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    const int H = op->in_h, W = op->in_w, K = op->kernel, S = op->stride;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const int32_t zp = op->in_zp;
    for (int c = 0; c < op->in_c; c++) {
        const int8_t *xc = x + (size_t)c * H * W;
        int8_t *yc = y + (size_t)c * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int32_t acc = 0;
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++)
                        acc += (int32_t)xc[(size_t)(oh * S + kh) * W + ow * S + kw] - zp;
                yc[oh * OW + ow] = requant_s8(acc, op->pool_mult, op->pool_shift, op->out_zp,
                                              op->act_min, op->act_max);
            }
    }
}

/* x [C, H, W] -> y [C, OH, OW]: maximum of each window, no padding */
void qat_rti_maxpool2d_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    const int H = op->in_h, W = op->in_w, K = op->kernel, S = op->stride;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    if (K == 2 && S == 2) { /* the common case, without the window loops */
        for (int c = 0; c < op->in_c; c++)
            for (int oh = 0; oh < OH; oh++) {
                const int8_t *r0 = x + ((size_t)c * H + 2 * oh) * W, *r1 = r0 + W;
                int8_t *yr = y + ((size_t)c * OH + oh) * OW;
                for (int ow = 0; ow < OW; ow++) {
                    int8_t a = r0[2 * ow] > r0[2 * ow + 1] ? r0[2 * ow] : r0[2 * ow + 1];
                    int8_t b = r1[2 * ow] > r1[2 * ow + 1] ? r1[2 * ow] : r1[2 * ow + 1];
                    yr[ow] = a > b ? a : b;
                }
            }
        return;
    }
    for (int c = 0; c < op->in_c; c++) {
        const int8_t *xc = x + (size_t)c * H * W;
        int8_t *yc = y + (size_t)c * OH * OW;
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

/* y = max(x, zp), [size] */
void qat_rti_relu_s8(const rt_op *op, const int8_t *x, int8_t *y)
{
    const int8_t zp = (int8_t)op->out_zp;
    for (size_t j = 0; j < op->out_size; j++) y[j] = x[j] > zp ? x[j] : zp;
}

/* raw pixels through the input op's 256-entry table, [n, size] */
void qat_rti_input_u8(const rt_op *op, const uint8_t *p, int8_t *y, int n, int threads)
{
    const size_t sz = op->out_size;
    /* a thread per image at most, none below 256 KiB (a table look-up a
     * byte: waking a second thread on a busy machine costs more) */
    const int T = (size_t)n * sz < ((size_t)1 << 18) ? 1 : threads < n ? threads : n;
#pragma omp parallel for num_threads(T) if (T > 1) schedule(static)
    for (int i = 0; i < n; i++)
        for (size_t j = (size_t)i * sz; j < (size_t)(i + 1) * sz; j++) y[j] = op->lut[p[j]];
}
