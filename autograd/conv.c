/* conv2d (im2col + GEMM) and pooling; forward and backward side by side. */
#include <float.h>
#include <omp.h>
#include <string.h>

#include "autograd/internal.h"

typedef struct {
    int N, C, H, W, OC, KH, KW, OH, OW, stride, pad;
} conv_dims;

/* col is (C*KH*KW, OH*OW); x is one image (C,H,W) */
static void im2col(float *col, const float *x, const conv_dims *d)
{
    int ohw = d->OH * d->OW;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                float *row = col + ((size_t)(c * d->KH + kh) * d->KW + kw) * ohw;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    float *r = row + oh * d->OW;
                    if (ih < 0 || ih >= d->H) {
                        memset(r, 0, (size_t)d->OW * sizeof(float));
                        continue;
                    }
                    const float *xr = x + ((size_t)c * d->H + ih) * d->W;
                    for (int ow = 0; ow < d->OW; ow++) {
                        int iw = ow * d->stride - d->pad + kw;
                        r[ow] = (iw >= 0 && iw < d->W) ? xr[iw] : 0.0f;
                    }
                }
            }
}

/* dx (C,H,W) += col2im(dcol) */
static void col2im_add(float *dx, const float *dcol, const conv_dims *d)
{
    int ohw = d->OH * d->OW;
    for (int c = 0; c < d->C; c++)
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                const float *row = dcol + ((size_t)(c * d->KH + kh) * d->KW + kw) * ohw;
                for (int oh = 0; oh < d->OH; oh++) {
                    int ih = oh * d->stride - d->pad + kh;
                    if (ih < 0 || ih >= d->H) continue;
                    float *xr = dx + ((size_t)c * d->H + ih) * d->W;
                    const float *r = row + oh * d->OW;
                    for (int ow = 0; ow < d->OW; ow++) {
                        int iw = ow * d->stride - d->pad + kw;
                        if (iw >= 0 && iw < d->W) xr[iw] += r[ow];
                    }
                }
            }
}

static void conv_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    const conv_dims *d = e->saved;
    int K = d->C * d->KH * d->KW, ohw = d->OH * d->OW;
    float *dx = qat_grad(ctx, x), *dw = qat_grad(ctx, w), *db = b ? qat_grad(ctx, b) : NULL;
    int nt = qat_get_num_threads();
    if (nt > d->N) nt = d->N;
    size_t colsz = (size_t)K * ohw;
    float *cols = qat_arena_alloc(ctx, (size_t)nt * colsz * sizeof(float));
    float *dwp = dw ? qat_arena_alloc(ctx, (size_t)nt * w->numel * sizeof(float)) : NULL;
    if (!cols || (dw && !dwp)) return; /* out of memory: error is set */
    if (dwp) memset(dwp, 0, (size_t)nt * w->numel * sizeof(float));
    /* contiguous static chunks of samples per thread: deterministic sums */
#pragma omp parallel num_threads(nt)
    {
        /* split over the threads actually running: a nested region (the
         * caller's own parallel loop) may get fewer than nt */
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int per = (d->N + nth - 1) / nth, n0 = t * per, n1 = n0 + per < d->N ? n0 + per : d->N;
        float *col = cols + (size_t)t * colsz;
        for (int n = n0; n < n1; n++) {
            const float *dy = y->grad + (size_t)n * d->OC * ohw; /* (OC, OH*OW) */
            if (dwp) {
                im2col(col, x->data + (size_t)n * d->C * d->H * d->W, d);
                /* dW (OC,K) += dy (OC,ohw) col^T */
                qat_sgemm(0, 1, d->OC, K, ohw, 1.0f, dy, ohw, col, ohw, 1.0f,
                          dwp + (size_t)t * w->numel, K);
            }
            if (dx) {
                /* dcol (K,ohw) = W^T (K,OC) dy (OC,ohw) */
                qat_sgemm(1, 0, K, ohw, d->OC, 1.0f, w->data, K, dy, ohw, 0.0f, col, ohw);
                col2im_add(dx + (size_t)n * d->C * d->H * d->W, col, d);
            }
        }
    }
    if (dw)
        for (int t = 0; t < nt; t++)
            for (size_t i = 0; i < w->numel; i++) dw[i] += dwp[(size_t)t * w->numel + i];
    if (db)
        for (int n = 0; n < d->N; n++)
            for (int o = 0; o < d->OC; o++) {
                const float *g = y->grad + ((size_t)n * d->OC + o) * ohw;
                float s = 0;
                for (int i = 0; i < ohw; i++) s += g[i];
                db[o] += s;
            }
}

qat_tensor *qat_conv2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b, int stride,
                       int pad)
{
    if (!x || !w) return NULL;
    char sa[64], sb[64];
    if (x->ndim != 4 || w->ndim != 4)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input %s must be [N,C,H,W] and weight %s [OC,C,KH,KW]",
                              qat_shape_str(x, sa, sizeof sa), qat_shape_str(w, sb, sizeof sb));
    if (x->shape[1] != w->shape[1])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input has %d channels, weight expects %d",
                              x->shape[1], w->shape[1]);
    if (stride < 1 || pad < 0)
        return qat_error_null(QAT_ERR_ARG, "conv2d: stride %d / padding %d invalid", stride, pad);
    conv_dims *d = qat_arena_alloc(ctx, sizeof *d);
    if (!d) return NULL;
    *d = (conv_dims){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                     .OC = w->shape[0], .KH = w->shape[2], .KW = w->shape[3],
                     .stride = stride, .pad = pad};
    if (d->H + 2 * pad < d->KH || d->W + 2 * pad < d->KW)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: kernel %dx%d larger than padded input %dx%d",
                              d->KH, d->KW, d->H + 2 * pad, d->W + 2 * pad);
    if (b && (b->ndim != 1 || b->shape[0] != d->OC))
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: bias must have %d elements", d->OC);
    d->OH = (d->H + 2 * pad - d->KH) / stride + 1;
    d->OW = (d->W + 2 * pad - d->KW) / stride + 1;
    qat_tensor *y = qat_new(ctx, 4, (int[]){d->N, d->OC, d->OH, d->OW});
    if (!y) return NULL;
    int K = d->C * d->KH * d->KW, ohw = d->OH * d->OW;
    int nt = qat_get_num_threads();
    if (nt > d->N) nt = d->N;
    size_t colsz = (size_t)K * ohw;
    float *cols = qat_arena_alloc(ctx, (size_t)nt * colsz * sizeof(float));
    if (!cols) return NULL;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < d->N; n++) {
        float *col = cols + (size_t)omp_get_thread_num() * colsz;
        float *yn = y->data + (size_t)n * d->OC * ohw;
        const float *xn = x->data + (size_t)n * d->C * d->H * d->W;
        const float *src = xn;
        if (!(d->KH == 1 && d->KW == 1 && stride == 1 && pad == 0)) {
            im2col(col, xn, d);
            src = col;
        }
        if (b)
            for (int o = 0; o < d->OC; o++)
                for (int i = 0; i < ohw; i++) yn[(size_t)o * ohw + i] = b->data[o];
        /* y (OC,ohw) = W (OC,K) col (K,ohw) */
        qat_sgemm(0, 0, d->OC, ohw, K, 1.0f, w->data, K, src, ohw, b ? 1.0f : 0.0f, yn, ohw);
    }
    qat_tensor *in[3] = {x, w, b};
    if (qat_needs_grad(ctx, 3, in) &&
        qat_tape_record(ctx, "conv2d", conv_backward, y, 3, in, d) != QAT_OK)
        return NULL;
    return y;
}

/* ---- pooling ---- */

typedef struct {
    int k, stride;
    int32_t *argmax; /* max pool: flat input index per output element */
} pool_saved;

static qat_tensor *pool_out(qat_ctx *ctx, const char *op, qat_tensor *x, int k, int stride)
{
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "%s: input must be [N,C,H,W]", op);
    if (k < 1 || stride < 1) return qat_error_null(QAT_ERR_ARG, "%s: kernel %d / stride %d invalid", op, k, stride);
    if (x->shape[2] < k || x->shape[3] < k)
        return qat_error_null(QAT_ERR_SHAPE, "%s: kernel %d larger than input %dx%d", op, k, x->shape[2], x->shape[3]);
    int OH = (x->shape[2] - k) / stride + 1, OW = (x->shape[3] - k) / stride + 1;
    return qat_new(ctx, 4, (int[]){x->shape[0], x->shape[1], OH, OW});
}

static void maxpool_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *dx = qat_grad(ctx, e->in[0]);
    if (!dx) return;
    const pool_saved *s = e->saved;
    const float *dy = e->out->grad;
    for (size_t i = 0; i < e->out->numel; i++) dx[s->argmax[i]] += dy[i];
}

qat_tensor *qat_maxpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride)
{
    if (!x) return NULL;
    qat_tensor *y = pool_out(ctx, "maxpool2d", x, k, stride);
    if (!y) return NULL;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    int need = qat_needs_grad(ctx, 1, &x);
    pool_saved *s = need ? qat_arena_alloc(ctx, sizeof *s) : NULL;
    int32_t *am = need ? qat_arena_alloc(ctx, y->numel * sizeof(int32_t)) : NULL;
    if (need && (!s || !am)) return NULL;
#pragma omp parallel for if (y->numel > 32768) schedule(static)
    for (int p = 0; p < NC; p++) {
        const float *xp = x->data + (size_t)p * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int best = (oh * stride) * W + ow * stride;
                float m = xp[best];
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        int idx = (oh * stride + i) * W + ow * stride + j;
                        if (xp[idx] > m) { /* first maximum wins; NaN never selected */
                            m = xp[idx];
                            best = idx;
                        }
                    }
                size_t o = ((size_t)p * OH + oh) * OW + ow;
                y->data[o] = m;
                if (am) am[o] = (int32_t)((size_t)p * H * W + (size_t)best);
            }
    }
    if (need) {
        s->k = k;
        s->stride = stride;
        s->argmax = am;
        if (qat_tape_record(ctx, "maxpool2d", maxpool_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

static void avgpool_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *y = e->out;
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    const pool_saved *s = e->saved;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3], k = s->k, st = s->stride;
    float inv = 1.0f / (float)(k * k);
    for (int p = 0; p < NC; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float g = y->grad[((size_t)p * OH + oh) * OW + ow] * inv;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        dx[(size_t)p * H * W + (size_t)(oh * st + i) * W + ow * st + j] += g;
            }
}

qat_tensor *qat_avgpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride)
{
    if (!x) return NULL;
    qat_tensor *y = pool_out(ctx, "avgpool2d", x, k, stride);
    if (!y) return NULL;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    float inv = 1.0f / (float)(k * k);
    for (int p = 0; p < NC; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float s = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        s += x->data[(size_t)p * H * W + (size_t)(oh * stride + i) * W + ow * stride + j];
                y->data[((size_t)p * OH + oh) * OW + ow] = s * inv;
            }
    if (qat_needs_grad(ctx, 1, &x)) {
        pool_saved *s = qat_arena_alloc(ctx, sizeof *s);
        if (!s) return NULL;
        s->k = k;
        s->stride = stride;
        s->argmax = NULL;
        if (qat_tape_record(ctx, "avgpool2d", avgpool_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

static void gap_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    size_t NC = (size_t)x->shape[0] * x->shape[1], HW = (size_t)x->shape[2] * x->shape[3];
    float inv = 1.0f / (float)HW;
    for (size_t p = 0; p < NC; p++) {
        float g = e->out->grad[p] * inv;
        for (size_t i = 0; i < HW; i++) dx[p * HW + i] += g;
    }
}

qat_tensor *qat_global_avgpool(qat_ctx *ctx, qat_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "global_avgpool: input must be [N,C,H,W]");
    qat_tensor *y = qat_new(ctx, 2, (int[]){x->shape[0], x->shape[1]});
    if (!y) return NULL;
    size_t NC = (size_t)x->shape[0] * x->shape[1], HW = (size_t)x->shape[2] * x->shape[3];
    float inv = 1.0f / (float)HW;
    for (size_t p = 0; p < NC; p++) {
        float s = 0;
        for (size_t i = 0; i < HW; i++) s += x->data[p * HW + i];
        y->data[p] = s * inv;
    }
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "global_avgpool", gap_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}
