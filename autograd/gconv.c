/* Grouped convolution (groups > 1; depthwise when groups = C): a direct
 * kernel, no im2col. Forward and input gradient go plane by plane (one
 * output or input channel of one sample), the weight gradient output
 * channel by output channel, each plane or channel computed by one thread
 * in a fixed order, so results depend neither on the thread count nor on
 * the schedule. groups 1 goes to qat_conv2d (the GEMM paths of conv.c). */
#include <omp.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

typedef struct {
    int N, C, H, W, OC, K, OH, OW, stride, pad, groups;
} gconv_dims;

/* Output columns ow whose tap kw lands inside the row: ow*s - pad + kw in
 * [0, W) for ow in [*a, *b). */
static void valid_cols(const gconv_dims *d, int kw, int *a, int *b)
{
    const int s = d->stride;
    int lo = d->pad - kw <= 0 ? 0 : (d->pad - kw + s - 1) / s;
    int hi = d->W + d->pad - kw <= 0 ? 0 : (d->W + d->pad - kw + s - 1) / s;
    if (hi > d->OW) hi = d->OW;
    if (lo > hi) lo = hi;
    *a = lo;
    *b = hi;
}

static int gconv_threads(const gconv_dims *d)
{
    double macs = (double)d->N * d->OC * (d->C / d->groups) * d->K * d->K * d->OH * d->OW;
    return macs < 1e6 ? 1 : qat_get_num_threads();
}

/* ---- portable kernels: one plane / one channel ---- */

/* y plane (OH x OW) = bias + sum over the group's Cg input planes */
static void fwd_plane(float *restrict y, const float *restrict x, const float *restrict w, float bias,
                      int Cg, const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int i = 0; i < OH * OW; i++) y[i] = 0.0f;
    for (int ci = 0; ci < Cg; ci++) {
        const float *xp = x + (size_t)ci * H * W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float wv = w[(ci * K + kh) * K + kw];
                int a, b;
                valid_cols(d, kw, &a, &b);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *xr = xp + (size_t)ih * W - d->pad + kw;
                    float *yr = y + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) yr[ow] += wv * xr[ow];
                    else
                        for (int ow = a; ow < b; ow++) yr[ow] += wv * xr[ow * s];
                }
            }
    }
    if (bias != 0.0f)
        for (int i = 0; i < OH * OW; i++) y[i] += bias;
}

/* dx plane (H x W) += sum over the OCg output planes of the group that
 * read it (dy planes at dy, stride OH*OW; w rows at w, stride Cg*K*K) */
static void dx_plane(float *restrict dx, const float *restrict dy, const float *restrict w, int OCg,
                     ptrdiff_t wstride, const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int o = 0; o < OCg; o++) {
        const float *g = dy + (size_t)o * OH * OW, *wo = w + o * wstride;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float wv = wo[kh * K + kw];
                int a, b;
                valid_cols(d, kw, &a, &b);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    float *xr = dx + (size_t)ih * W - d->pad + kw;
                    const float *gr = g + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) xr[ow] += wv * gr[ow];
                    else
                        for (int ow = a; ow < b; ow++) xr[ow * s] += wv * gr[ow];
                }
            }
    }
}

/* dw[ci][kh][kw] of one output channel += sum over pixels of dy plane *
 * the Cg input planes */
static void dw_plane(float *restrict dw, const float *restrict dy, const float *restrict x, int Cg,
                     const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int ci = 0; ci < Cg; ci++) {
        const float *xp = x + (size_t)ci * H * W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                int a, b;
                valid_cols(d, kw, &a, &b);
                float acc = 0.0f;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *xr = xp + (size_t)ih * W - d->pad + kw, *gr = dy + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) acc += gr[ow] * xr[ow];
                    else
                        for (int ow = a; ow < b; ow++) acc += gr[ow] * xr[ow * s];
                }
                dw[(ci * K + kh) * K + kw] += acc;
            }
    }
}

/* ---- the op ---- */

static void gconv_forward(const gconv_dims *d, const float *x, const float *w, const float *bias, float *y)
{
    const int Cg = d->C / d->groups, OCg = d->OC / d->groups, KK = d->K * d->K;
    const ptrdiff_t planes = (ptrdiff_t)d->N * d->OC;
#pragma omp parallel for num_threads(gconv_threads(d)) schedule(dynamic, 8)
    for (ptrdiff_t p = 0; p < planes; p++) {
        int n = (int)(p / d->OC), o = (int)(p % d->OC), g = o / OCg;
        fwd_plane(y + (size_t)p * d->OH * d->OW, x + ((size_t)n * d->C + (size_t)g * Cg) * d->H * d->W,
                  w + (size_t)o * Cg * KK, bias ? bias[o] : 0.0f, Cg, d);
    }
}

static void gconv_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    const gconv_dims *d = e->saved;
    const int Cg = d->C / d->groups, OCg = d->OC / d->groups, KK = d->K * d->K;
    const size_t hw = (size_t)d->H * d->W, ohw = (size_t)d->OH * d->OW;
    const float *dy = y->grad;
    const int nt = gconv_threads(d);
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh);
    if (dx) {
        const ptrdiff_t planes = (ptrdiff_t)d->N * d->C;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 8)
        for (ptrdiff_t p = 0; p < planes; p++) {
            int n = (int)(p / d->C), c = (int)(p % d->C), g = c / Cg, ci = c % Cg;
            float *dxp = dx + (size_t)p * hw;
            if (fresh) memset(dxp, 0, hw * sizeof(float));
            dx_plane(dxp, dy + ((size_t)n * d->OC + (size_t)g * OCg) * ohw,
                     w->data + ((size_t)g * OCg * Cg + (size_t)ci) * KK, OCg, (ptrdiff_t)Cg * KK, d);
        }
    }
    float *dw = qat_grad(ctx, w), *db = b ? qat_grad(ctx, b) : NULL;
    if (dw || db) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int o = 0; o < d->OC; o++) {
            int g = o / OCg;
            float bs = 0.0f;
            for (int n = 0; n < d->N; n++) {
                const float *g_ = dy + ((size_t)n * d->OC + o) * ohw;
                if (dw) dw_plane(dw + (size_t)o * Cg * KK, g_, x->data + ((size_t)n * d->C + (size_t)g * Cg) * hw, Cg, d);
                if (db)
                    for (size_t i = 0; i < ohw; i++) bs += g_[i];
            }
            if (db) db[o] += bs;
        }
    }
}

qat_tensor *qat_conv2d_grouped(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b, int stride, int pad,
                               int groups)
{
    if (!x || !w) return NULL;
    if (groups == 1) return qat_conv2d(ctx, x, w, b, stride, pad);
    char sa[64], sb[64];
    if (x->ndim != 4 || w->ndim != 4)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input %s must be [N,C,H,W] and weight %s [OC,C/groups,KH,KW]",
                              qat_shape_str(x, sa, sizeof sa), qat_shape_str(w, sb, sizeof sb));
    if (groups < 1 || x->shape[1] % groups || w->shape[0] % groups)
        return qat_error_null(QAT_ERR_ARG, "conv2d: %d groups do not divide %d input and %d output channels", groups,
                              x->shape[1], w->shape[0]);
    if (x->shape[1] / groups != w->shape[1])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input has %d channels in %d groups (%d each), weight %s expects %d",
                              x->shape[1], groups, x->shape[1] / groups, qat_shape_str(w, sb, sizeof sb), w->shape[1]);
    if (w->shape[2] != w->shape[3])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: grouped kernel %dx%d must be square", w->shape[2], w->shape[3]);
    if (stride < 1 || pad < 0)
        return qat_error_null(QAT_ERR_ARG, "conv2d: stride %d / padding %d invalid", stride, pad);
    gconv_dims *d = qat_arena_alloc(ctx, sizeof *d);
    if (!d) return NULL;
    *d = (gconv_dims){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .OC = w->shape[0],
                      .K = w->shape[2], .stride = stride, .pad = pad, .groups = groups};
    if (d->H + 2 * pad < d->K || d->W + 2 * pad < d->K)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: kernel %dx%d larger than padded input %dx%d", d->K, d->K,
                              d->H + 2 * pad, d->W + 2 * pad);
    if (b && (b->ndim != 1 || b->shape[0] != d->OC))
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: bias must have %d elements", d->OC);
    d->OH = (d->H + 2 * pad - d->K) / stride + 1;
    d->OW = (d->W + 2 * pad - d->K) / stride + 1;
    qat_tensor *y = qat_new(ctx, 4, (int[]){d->N, d->OC, d->OH, d->OW});
    if (!y) return NULL;
    gconv_forward(d, x->data, w->data, b ? b->data : NULL, y->data);
    qat_tensor *in[3] = {x, w, b};
    if (qat_needs_grad(ctx, 3, in) && qat_tape_record(ctx, "conv2d_grouped", gconv_backward, y, 3, in, d) != QAT_OK)
        return NULL;
    return y;
}
