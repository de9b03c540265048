/* Bounded activations (clamp / relu6, hardswish, hardsigmoid), channel
 * concatenation and nearest-neighbour upsampling; forward and backward side
 * by side. The formulas are PyTorch's, operation for operation (the
 * portable loops are also what the compiler vectorises: each element's
 * arithmetic is the same in every lane). */
#include <math.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

#define PAR_MIN 32768 /* elements below which a loop stays serial */
#define BLK 4096
#define NBLK(n) ((ptrdiff_t)(((n) + BLK - 1) / BLK))

/* -O2's cost model leaves these loops scalar */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "vect-cost-model=dynamic")
#endif
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define ACT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ACT_CLONES
#endif

/* ---- elementwise spans ---- */

/* (an in-place call of a two-pointer loop would take the vectoriser's
 * scalar fallback after its overlap check: in-place versions are separate) */
ACT_CLONES static void clamp_span(float *restrict y, const float *restrict x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        v = v < lo ? lo : v; /* NaN fails both tests and stays */
        y[i] = v > hi ? hi : v;
    }
}

ACT_CLONES static void clamp_inplace(float *restrict y, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        float v = y[i];
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

/* d (+)= lo < x < hi ? dy : -0.0f (-0.0f: the exact identity of addition) */
ACT_CLONES static void clamp_bwd_span(float *restrict d, const float *restrict x, const float *restrict dy,
                                      size_t n, float lo, float hi, int fresh)
{
    if (fresh)
        for (size_t i = 0; i < n; i++) d[i] = 0.0f + (((x[i] > lo) & (x[i] < hi)) ? dy[i] : -0.0f);
    else
        for (size_t i = 0; i < n; i++) d[i] += ((x[i] > lo) & (x[i] < hi)) ? dy[i] : -0.0f;
}

static inline float relu6f(float v)
{
    v = v < 0.0f ? 0.0f : v;
    return v > 6.0f ? 6.0f : v;
}

ACT_CLONES static void hardswish_span(float *restrict y, const float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] * relu6f(x[i] + 3.0f) / 6.0f;
}

ACT_CLONES static void hardswish_inplace(float *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = y[i] * relu6f(y[i] + 3.0f) / 6.0f;
}

/* x: BN's recomputed output in d (in place, fresh) */
ACT_CLONES static void hardswish_bwd_inplace(float *restrict d, const float *restrict dy, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = d[i], g = v < -3.0f ? 0.0f : v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i];
        d[i] = 0.0f + g;
    }
}

ACT_CLONES static void hardswish_bwd_span(float *restrict d, const float *restrict x, const float *restrict dy,
                                          size_t n, int fresh)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i], g = v < -3.0f ? 0.0f : v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i];
        if (fresh)
            d[i] = 0.0f + g;
        else
            d[i] += g;
    }
}

ACT_CLONES static void hardsigmoid_span(float *restrict y, const float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = relu6f(x[i] + 3.0f) / 6.0f;
}

ACT_CLONES static void hardsigmoid_bwd_span(float *restrict d, const float *restrict x, const float *restrict dy,
                                            size_t n, int fresh)
{
    const float sixth = 1.0f / 6.0f;
    for (size_t i = 0; i < n; i++) {
        float g = ((x[i] > -3.0f) & (x[i] < 3.0f)) ? dy[i] * sixth : 0.0f;
        if (fresh)
            d[i] = 0.0f + g;
        else
            d[i] += g;
    }
}

void qat_k_clamp_fwd(float *y, const float *x, size_t n, float lo, float hi)
{
    if (y == x)
        clamp_inplace(y, n, lo, hi);
    else
        clamp_span(y, x, n, lo, hi);
}
void qat_k_clamp_bwd(float *dx, const float *x, const float *dy, size_t n, float lo, float hi, int fresh)
{
    clamp_bwd_span(dx, x, dy, n, lo, hi, fresh);
}
void qat_k_hardswish_fwd(float *y, const float *x, size_t n)
{
    if (y == x)
        hardswish_inplace(y, n);
    else
        hardswish_span(y, x, n);
}
void qat_k_hardswish_bwd(float *dx, const float *x, const float *dy, size_t n, int fresh)
{
    if (dx == x && fresh)
        hardswish_bwd_inplace(dx, dy, n);
    else
        hardswish_bwd_span(dx, x, dy, n, fresh);
}

/* BN's normalisation (qat_k_bn_apply's operations) and the activation in
 * one pass */
ACT_CLONES static void bn_clamp_span(float *restrict y, const float *restrict x, size_t n, float mean, float is,
                                     float g, float b, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        float v = g * ((x[i] - mean) * is) + b;
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

ACT_CLONES static void bn_hardswish_span(float *restrict y, const float *restrict x, size_t n, float mean,
                                         float is, float g, float b)
{
    for (size_t i = 0; i < n; i++) {
        float v = g * ((x[i] - mean) * is) + b;
        y[i] = v * relu6f(v + 3.0f) / 6.0f;
    }
}

ACT_CLONES static void bn_hardswish_bwd_span(float *restrict d, const float *restrict x,
                                             const float *restrict dy, size_t n, float mean, float is, float g,
                                             float b)
{
    for (size_t i = 0; i < n; i++) {
        float v = g * ((x[i] - mean) * is) + b;
        float t = v < -3.0f ? 0.0f : v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i];
        d[i] = 0.0f + t;
    }
}

void qat_k_bn_clamp(float *y, const float *x, size_t n, float mean, float is, float g, float b, float lo,
                    float hi)
{
    bn_clamp_span(y, x, n, mean, is, g, b, lo, hi);
}
void qat_k_bn_hardswish(float *y, const float *x, size_t n, float mean, float is, float g, float b)
{
    bn_hardswish_span(y, x, n, mean, is, g, b);
}
void qat_k_bn_hardswish_bwd(float *dz, const float *x, const float *dy, size_t n, float mean, float is, float g,
                            float b)
{
    bn_hardswish_bwd_span(dz, x, dy, n, mean, is, g, b);
}

/* ---- clamp ---- */

typedef struct {
    float lo, hi;
    const float *hi_c; /* per-channel bounds (arena copy) or NULL */
    size_t plane;      /* elements per channel of a sample */
    int C;
} clamp_saved;

static void clamp_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const clamp_saved *s = e->saved;
    int fresh;
    float *dx = qat_grad_fresh(ctx, e->in[0], &fresh);
    if (!dx) return;
    const float *x = e->in[0]->data, *dy = e->out->grad;
    size_t n = e->out->numel;
    if (s->hi_c) {
        ptrdiff_t planes = (ptrdiff_t)(n / s->plane);
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (ptrdiff_t p = 0; p < planes; p++) {
            size_t o = (size_t)p * s->plane;
            clamp_bwd_span(dx + o, x + o, dy + o, s->plane, s->lo, s->hi_c[p % s->C], fresh);
        }
        return;
    }
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        clamp_bwd_span(dx + i, x + i, dy + i, m, s->lo, s->hi, fresh);
    }
}

qat_tensor *qat_clamp(qat_ctx *ctx, qat_tensor *x, float lo, float hi)
{
    if (!x) return NULL;
    if (isnan(lo) || isnan(hi) || lo > hi)
        return qat_error_null(QAT_ERR_ARG, "clamp: bounds [%g, %g] invalid (need lo <= hi, not NaN)", (double)lo,
                              (double)hi);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    size_t n = x->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        clamp_span(y->data + i, x->data + i, m, lo, hi);
    }
    if (qat_needs_grad(ctx, 1, &x)) {
        clamp_saved *s = qat_arena_alloc(ctx, sizeof *s);
        if (!s) return NULL;
        *s = (clamp_saved){lo, hi, NULL, 0, 0};
        if (qat_tape_record(ctx, "clamp", clamp_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

qat_tensor *qat_clamp_channels(qat_ctx *ctx, qat_tensor *x, float lo, const float *hi_c)
{
    if (!x) return NULL;
    if (!hi_c) return qat_error_null(QAT_ERR_ARG, "clamp_channels: bounds are NULL");
    if (x->ndim < 2) return qat_error_null(QAT_ERR_SHAPE, "clamp_channels: input needs a channel dimension (dim 1)");
    int C = x->shape[1];
    for (int c = 0; c < C; c++)
        if (isnan(lo) || isnan(hi_c[c]) || hi_c[c] < lo)
            return qat_error_null(QAT_ERR_ARG, "clamp_channels: channel %d bounds [%g, %g] invalid", c, (double)lo,
                                  (double)hi_c[c]);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    float *hc = qat_arena_alloc(ctx, (size_t)C * sizeof(float));
    if (!y || !hc) return NULL;
    memcpy(hc, hi_c, (size_t)C * sizeof(float));
    size_t plane = x->numel / ((size_t)x->shape[0] * (size_t)C);
    ptrdiff_t planes = (ptrdiff_t)(x->numel / plane);
#pragma omp parallel for if (x->numel > PAR_MIN) schedule(static)
    for (ptrdiff_t p = 0; p < planes; p++)
        clamp_span(y->data + (size_t)p * plane, x->data + (size_t)p * plane, plane, lo, hc[p % C]);
    if (qat_needs_grad(ctx, 1, &x)) {
        clamp_saved *s = qat_arena_alloc(ctx, sizeof *s);
        if (!s) return NULL;
        *s = (clamp_saved){lo, 0.0f, hc, plane, C};
        if (qat_tape_record(ctx, "clamp_channels", clamp_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

/* ---- hardswish, hardsigmoid ---- */

typedef void (*span_fwd)(float *, const float *, size_t);
typedef void (*span_bwd)(float *, const float *, const float *, size_t, int);

/* dx (+)= f'(x) * dy over blocks, f' given as a span kernel */
static void unary_backward(qat_ctx *ctx, const qat_tape_entry *e, span_bwd g)
{
    int fresh;
    float *dx = qat_grad_fresh(ctx, e->in[0], &fresh);
    if (!dx) return;
    const float *x = e->in[0]->data, *dy = e->out->grad;
    size_t n = e->out->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        g(dx + i, x + i, dy + i, m, fresh);
    }
}

static void hardswish_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    unary_backward(ctx, e, hardswish_bwd_span);
}

static void hardsigmoid_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    unary_backward(ctx, e, hardsigmoid_bwd_span);
}

static qat_tensor *unary(qat_ctx *ctx, const char *name, qat_tensor *x, span_fwd f, qat_backward_fn bwd)
{
    if (!x) return NULL;
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    size_t n = x->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        f(y->data + i, x->data + i, m);
    }
    if (qat_needs_grad(ctx, 1, &x) && qat_tape_record(ctx, name, bwd, y, 1, &x, NULL) != QAT_OK) return NULL;
    return y;
}

qat_tensor *qat_hardswish(qat_ctx *ctx, qat_tensor *x)
{
    return unary(ctx, "hardswish", x, hardswish_span, hardswish_backward);
}

qat_tensor *qat_hardsigmoid(qat_ctx *ctx, qat_tensor *x)
{
    return unary(ctx, "hardsigmoid", x, hardsigmoid_span, hardsigmoid_backward);
}

/* ---- concat ---- */

static void concat_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *y = e->out;
    const int N = y->shape[0];
    const size_t ys = y->numel / (size_t)N;
    size_t off = 0;
    for (int k = 0; k < 2; k++) { /* a then b (they may be one tensor) */
        qat_tensor *t = e->in[k];
        const size_t ts = t->numel / (size_t)N;
        float *d = qat_grad(ctx, t);
        if (d)
            for (int n = 0; n < N; n++) {
                const float *g = y->grad + (size_t)n * ys + off;
                float *dn = d + (size_t)n * ts;
                for (size_t i = 0; i < ts; i++) dn[i] += g[i];
            }
        off += ts;
    }
}

qat_tensor *qat_concat(qat_ctx *ctx, qat_tensor *a, qat_tensor *b)
{
    if (!a || !b) return NULL;
    char sa[64], sb[64];
    int ok = a->ndim == b->ndim && (a->ndim == 2 || a->ndim == 4) && a->shape[0] == b->shape[0];
    for (int i = 2; ok && i < a->ndim; i++) ok = a->shape[i] == b->shape[i];
    if (!ok)
        return qat_error_null(QAT_ERR_SHAPE, "concat: %s and %s must be [N,C,H,W] of equal N, H, W (or [N,F])",
                              qat_shape_str(a, sa, sizeof sa), qat_shape_str(b, sb, sizeof sb));
    int shape[4];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = a->shape[1] + b->shape[1];
    qat_tensor *y = qat_new(ctx, a->ndim, shape);
    if (!y) return NULL;
    const int N = a->shape[0];
    const size_t as = a->numel / (size_t)N, bs = b->numel / (size_t)N;
    for (int n = 0; n < N; n++) {
        memcpy(y->data + (size_t)n * (as + bs), a->data + (size_t)n * as, as * sizeof(float));
        memcpy(y->data + (size_t)n * (as + bs) + as, b->data + (size_t)n * bs, bs * sizeof(float));
    }
    qat_tensor *in[2] = {a, b};
    if (qat_needs_grad(ctx, 2, in) && qat_tape_record(ctx, "concat", concat_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- nearest upsampling ---- */

static void upsample_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *y = e->out;
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    const ptrdiff_t NC = (ptrdiff_t)x->shape[0] * x->shape[1];
    const int H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3], f = OH / H;
#pragma omp parallel for if (y->numel > PAR_MIN) schedule(static)
    for (ptrdiff_t p = 0; p < NC; p++) {
        const float *g = y->grad + (size_t)p * OH * OW;
        float *d = dx + (size_t)p * H * W;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                float s = 0.0f; /* the f*f copies in row-major order */
                for (int i = 0; i < f; i++)
                    for (int j = 0; j < f; j++) s += g[(size_t)(h * f + i) * OW + w * f + j];
                d[(size_t)h * W + w] += s;
            }
    }
}

qat_tensor *qat_upsample_nearest(qat_ctx *ctx, qat_tensor *x, int factor)
{
    if (!x) return NULL;
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "upsample: input must be [N,C,H,W]");
    if (factor < 1 || factor > 4096) return qat_error_null(QAT_ERR_ARG, "upsample: factor %d invalid", factor);
    const int H = x->shape[2], W = x->shape[3], OH = H * factor, OW = W * factor;
    qat_tensor *y = qat_new(ctx, 4, (int[]){x->shape[0], x->shape[1], OH, OW});
    if (!y) return NULL;
    const ptrdiff_t NC = (ptrdiff_t)x->shape[0] * x->shape[1];
#pragma omp parallel for if (y->numel > PAR_MIN) schedule(static)
    for (ptrdiff_t p = 0; p < NC; p++) {
        const float *s = x->data + (size_t)p * H * W;
        float *o = y->data + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            const float *r = s + (size_t)(oh / factor) * W;
            float *orow = o + (size_t)oh * OW;
            for (int ow = 0; ow < OW; ow++) orow[ow] = r[ow / factor];
        }
    }
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "upsample_nearest", upsample_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}
