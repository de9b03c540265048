/* Finite-difference gradient checks for every differentiable op.
 *
 * Method (ggml's test-grad0): the op runs in float as the library runs it;
 * the loss L = sum_j w_j y_j with random w (a plain sum(y) would hide a
 * backward that ignores dy) is accumulated in double; the numeric gradient
 * is the central difference (L(x+h) - L(x-h)) / (x+h - x-h) with the
 * perturbed values as actually stored in float. The analytic gradient comes
 * from qat_backward on qat_sum(qat_mul(y, w)). Shapes are drawn from fixed
 * seeds; tolerance is |a - n| <= atol + rtol * max(|a|, |n|). Samples at
 * kinks (ReLU at 0, max-pool near-ties) are skipped, with a budget so that
 * skipping cannot hide a broken op. Every case runs with 1 and 2 threads. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/tensor.h"
#include "testutil.h"

#define GC_MAX_IN 9
#define GC_MAX_SAMPLES 48

enum { GC_LEAF, GC_PARAM, GC_CONST };

typedef struct gc_spec gc_spec;
typedef qat_tensor *(*gc_fn)(qat_ctx *ctx, qat_tensor **in, const gc_spec *s);

struct gc_spec {
    const char *name;
    gc_fn fn;
    int n_in;
    int ndim[GC_MAX_IN];
    int shape[GC_MAX_IN][4];
    int kind[GC_MAX_IN]; /* GC_LEAF: step leaf; GC_PARAM: persistent, grad; GC_CONST: no grad */
    float lo[GC_MAX_IN], hi[GC_MAX_IN];
    /* op configuration */
    int stride, pad, k, training, rs_ndim, rs_shape[4]; /* channel_mul: k axis, training divide */
    const uint8_t *labels;
    int groups;                /* grouped conv */
    float clo, chi;            /* clamp bounds */
    const float *hi_c;         /* clamp_channels bounds */
    /* checker settings */
    double h, atol, rtol;
    int relu_kink;    /* skip samples of input 0 with |x| < 3h */
    int n_kinks;      /* skip samples of input 0 within 3h of kink[] */
    float kink[2];
    int detect_kinks; /* skip samples whose one-sided differences disagree */
    uint64_t seed;
};

typedef struct {
    int checked, skipped, failed;
    char first[512]; /* first mismatch */
} gc_result;

typedef struct {
    const gc_spec *s;
    qat_ctx *ctx;
    float *val[GC_MAX_IN];
    qat_tensor *pt[GC_MAX_IN];
    qat_tensor *cur[GC_MAX_IN];
    float *w;
    size_t wn;
} gc_run;

static qat_tensor *gc_build(gc_run *r)
{
    const gc_spec *s = r->s;
    qat_ctx_reset(r->ctx);
    qat_ctx_set_training(r->ctx, 1);
    for (int i = 0; i < s->n_in; i++) {
        if (s->kind[i] == GC_LEAF) {
            r->cur[i] = qat_new_leaf(r->ctx, s->ndim[i], s->shape[i], r->val[i]);
        } else {
            memcpy(r->pt[i]->data, r->val[i], r->pt[i]->numel * sizeof(float));
            r->cur[i] = r->pt[i];
        }
        ck_assert_ptr_nonnull(r->cur[i]);
    }
    qat_tensor *y = s->fn(r->ctx, r->cur, s);
    ck_assert_msg(y != NULL, "%s: forward failed: %s", s->name, qat_last_error());
    return y;
}

static double gc_loss(gc_run *r)
{
    qat_tensor *y = gc_build(r);
    ck_assert_uint_eq(y->numel, r->wn);
    double L = 0;
    for (size_t j = 0; j < r->wn; j++) L += (double)r->w[j] * (double)y->data[j];
    return L;
}

/* Runs the check; mismatches are counted, not asserted, so that the checker
 * itself can be tested on a deliberately wrong backward. */
static gc_result gc_check(const gc_spec *s)
{
    gc_result res = {0, 0, 0, ""};
    gc_run r = {.s = s};
    qat_rng rng;
    qat_rng_seed(&rng, s->seed);
    r.ctx = qat_ctx_create(1 << 16);
    ck_assert_ptr_nonnull(r.ctx);
    size_t numel[GC_MAX_IN];
    for (int i = 0; i < s->n_in; i++) {
        numel[i] = 1;
        for (int d = 0; d < s->ndim[i]; d++) numel[i] *= (size_t)s->shape[i][d];
        r.val[i] = malloc(numel[i] * sizeof(float));
        ck_assert_ptr_nonnull(r.val[i]);
        tu_fill_uniform(r.val[i], numel[i], s->lo[i], s->hi[i], &rng);
        if (s->kind[i] != GC_LEAF) {
            r.pt[i] = qat_tensor_create(s->ndim[i], s->shape[i], s->kind[i] == GC_PARAM);
            ck_assert_ptr_nonnull(r.pt[i]);
        }
    }

    /* analytic gradients; parameter gradients start at 0.25, not 0, so that
     * a backward that overwrites instead of adding is caught */
    for (int i = 0; i < s->n_in; i++)
        if (s->kind[i] == GC_PARAM)
            for (size_t j = 0; j < numel[i]; j++) r.pt[i]->grad[j] = 0.25f;
    qat_tensor *y = gc_build(&r);
    r.wn = y->numel;
    r.w = malloc(r.wn * sizeof(float));
    ck_assert_ptr_nonnull(r.w);
    tu_fill_uniform(r.w, r.wn, -1.0f, 1.0f, &rng);
    qat_tensor *wt = qat_from(r.ctx, y->ndim, y->shape, r.w);
    qat_tensor *loss = qat_sum(r.ctx, qat_mul(r.ctx, y, wt));
    int st = qat_backward(r.ctx, loss);
    ck_assert_msg(st == QAT_OK, "%s: backward: %s", s->name, qat_last_error());
    float *ana[GC_MAX_IN] = {0};
    for (int i = 0; i < s->n_in; i++) {
        if (s->kind[i] == GC_CONST) {
            ck_assert_msg(r.cur[i]->grad == NULL, "%s: input %d has no grad but got one", s->name, i);
            continue;
        }
        ck_assert_msg(r.cur[i]->grad != NULL, "%s: input %d received no gradient", s->name, i);
        ana[i] = malloc(numel[i] * sizeof(float));
        ck_assert_ptr_nonnull(ana[i]);
        memcpy(ana[i], r.cur[i]->grad, numel[i] * sizeof(float));
        if (s->kind[i] == GC_PARAM)
            for (size_t j = 0; j < numel[i]; j++) ana[i][j] -= 0.25f;
    }

    /* numeric gradients */
    double f0 = gc_loss(&r);
    for (int i = 0; i < s->n_in; i++) {
        if (s->kind[i] == GC_CONST) continue;
        size_t ns = numel[i] <= GC_MAX_SAMPLES ? numel[i] : GC_MAX_SAMPLES;
        for (size_t q = 0; q < ns; q++) {
            size_t j = numel[i] <= GC_MAX_SAMPLES ? q : qat_rng_below(&rng, (uint32_t)numel[i]);
            float v = r.val[i][j];
            double h = s->h * fmax(1.0, fabs(v));
            if (s->relu_kink && i == 0 && fabs(v) < 3 * h) {
                res.skipped++;
                continue;
            }
            int near = 0;
            for (int k = 0; k < s->n_kinks && i == 0; k++) near |= fabs(v - s->kink[k]) < 3 * h;
            if (near) {
                res.skipped++;
                continue;
            }
            float xp = (float)(v + h), xm = (float)(v - h);
            r.val[i][j] = xp;
            double fp = gc_loss(&r);
            r.val[i][j] = xm;
            double fm = gc_loss(&r);
            r.val[i][j] = v;
            double num = (fp - fm) / ((double)xp - (double)xm);
            double a = ana[i][j];
            double tol = s->atol + s->rtol * fmax(fabs(a), fabs(num));
            if (s->detect_kinks) {
                double dp = (fp - f0) / ((double)xp - v), dm = (f0 - fm) / ((double)v - xm);
                if (fabs(dp - dm) > tol) {
                    res.skipped++;
                    continue;
                }
            }
            res.checked++;
            if (!(fabs(a - num) <= tol)) {
                if (!res.failed)
                    snprintf(res.first, sizeof res.first,
                             "%s (threads %d): d/d in%d[%zu]: analytic %.7g, numeric %.7g (tol %.3g)",
                             s->name, qat_get_num_threads(), i, j, a, num, tol);
                res.failed++;
            }
        }
    }

    for (int i = 0; i < s->n_in; i++) {
        free(r.val[i]);
        free(ana[i]);
        qat_tensor_free(r.pt[i]);
    }
    free(r.w);
    qat_ctx_free(r.ctx);
    return res;
}

/* Checks with 1 and 2 threads: no mismatch, and few skipped samples. */
static void gc_assert(const gc_spec *s)
{
    for (int nt = 1; nt <= 2; nt++) {
        qat_set_num_threads(nt);
        gc_result res = gc_check(s);
        ck_assert_msg(res.failed == 0, "%d of %d mismatches; first: %s", res.failed, res.checked,
                      res.first);
        ck_assert_msg(res.checked > 0 && res.skipped <= res.checked / 4 + 1,
                      "%s: %d samples checked, %d skipped at kinks", s->name, res.checked,
                      res.skipped);
    }
}

static int rnd(qat_rng *r, int lo, int hi) { return lo + (int)qat_rng_below(r, (uint32_t)(hi - lo + 1)); }

static void set_in(gc_spec *s, int i, int kind, float lo, float hi, int ndim, int d0, int d1, int d2,
                   int d3)
{
    s->kind[i] = kind;
    s->lo[i] = lo;
    s->hi[i] = hi;
    s->ndim[i] = ndim;
    int d[4] = {d0, d1, d2, d3};
    for (int k = 0; k < 4; k++) s->shape[i][k] = k < ndim ? d[k] : 1;
    if (i + 1 > s->n_in) s->n_in = i + 1;
}

static gc_spec spec(const char *name, gc_fn fn, uint64_t seed)
{
    gc_spec s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.fn = fn;
    s.seed = seed;
    s.h = 1e-2;
    s.atol = 1e-3;
    s.rtol = 1e-3;
    return s;
}

/* ---- op wrappers ---- */

static qat_tensor *f_linear(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_linear(c, in[0], in[1], s->n_in > 2 ? in[2] : NULL);
}
static qat_tensor *f_matmul(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_matmul(c, in[0], in[1]);
}
static qat_tensor *f_bias_add(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_bias_add(c, in[0], in[1]);
}
static qat_tensor *f_add(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_add(c, in[0], in[1]);
}
static qat_tensor *f_mul(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_mul(c, in[0], in[1]);
}
/* the same tensor on both sides: d(x+x) = 2, d(x*x) = 2x */
static qat_tensor *f_add_relu(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_add_relu(c, in[0], in[1]);
}
static qat_tensor *f_add_relu_self(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_add_relu(c, in[0], in[0]);
}
static qat_tensor *f_add_self(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_add(c, in[0], in[0]);
}
static qat_tensor *f_mul_self(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_mul(c, in[0], in[0]);
}
static qat_tensor *f_channel_mul(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_channel_mul(c, in[0], in[1], s->k, s->training);
}
static qat_tensor *f_relu(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_relu(c, in[0]);
}
static qat_tensor *f_conv(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_conv2d(c, in[0], in[1], s->n_in > 2 ? in[2] : NULL, s->stride, s->pad);
}
static qat_tensor *f_maxpool(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_maxpool2d(c, in[0], s->k, s->stride);
}
static qat_tensor *f_maxpool_ex(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    const int32_t *ix = NULL;
    qat_tensor *y = qat_maxpool2d_ex(c, in[0], s->k, s->stride, s->pad, &ix);
    ck_assert(!y || ix);
    return y;
}
static qat_tensor *f_avgpool(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_avgpool2d(c, in[0], s->k, s->stride);
}
static qat_tensor *f_gap(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_global_avgpool(c, in[0]);
}
static qat_tensor *f_bn(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    qat_ctx_set_training(c, s->training);
    return qat_batchnorm2d(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static qat_tensor *f_bn_relu(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    qat_ctx_set_training(c, s->training);
    return qat_batchnorm2d_relu(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static qat_tensor *f_bn_clamp(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    qat_ctx_set_training(c, s->training);
    return qat_batchnorm2d_clamp(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f, s->clo, s->chi, s->hi_c);
}
static qat_tensor *f_bn_hardswish(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    qat_ctx_set_training(c, s->training);
    return qat_batchnorm2d_hardswish(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static qat_tensor *f_reshape(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_reshape(c, in[0], s->rs_ndim, s->rs_shape);
}
static qat_tensor *f_flatten(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_flatten(c, in[0]);
}
static qat_tensor *f_sum(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_sum(c, in[0]);
}
static qat_tensor *f_ce(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_cross_entropy(c, in[0], s->labels);
}
/* x -> conv(w,b) -> BN(gamma,beta) -> ReLU -> maxpool 2 -> flatten ->
 * linear(fw,fb) -> cross-entropy: a chain through the tape */
static qat_tensor *f_net(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    qat_tensor *x = qat_conv2d(c, in[0], in[1], in[2], 1, 1);
    x = qat_batchnorm2d(c, x, in[3], in[4], in[5], in[6], 0.1f, 1e-5f);
    x = qat_relu(c, x);
    x = qat_maxpool2d(c, x, 2, 2);
    x = qat_flatten(c, x);
    x = qat_linear(c, x, in[7], in[8]);
    return qat_cross_entropy(c, x, s->labels);
}

static qat_tensor *f_gconv(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_conv2d_grouped(c, in[0], in[1], s->n_in > 2 ? in[2] : NULL, s->stride, s->pad, s->groups);
}
static qat_tensor *f_clamp(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_clamp(c, in[0], s->clo, s->chi);
}
static qat_tensor *f_clamp_ch(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_clamp_channels(c, in[0], s->clo, s->hi_c);
}
static qat_tensor *f_hardswish(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_hardswish(c, in[0]);
}
static qat_tensor *f_hardsigmoid(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_hardsigmoid(c, in[0]);
}
static qat_tensor *f_concat(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_concat(c, in[0], in[1]);
}
static qat_tensor *f_concat_self(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return qat_concat(c, in[0], in[0]);
}
static qat_tensor *f_upsample(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    return qat_upsample_nearest(c, in[0], s->k);
}
/* an inverted residual block's middle: depthwise conv -> BN -> hardswish
 * -> 1x1 conv -> concat with the input -> upsample (a chain through the
 * tape with the new ops) */
static qat_tensor *f_dw_chain(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    qat_tensor *x = qat_conv2d_grouped(c, in[0], in[1], NULL, 1, 1, in[0]->shape[1]);
    x = qat_batchnorm2d(c, x, in[2], in[3], in[4], in[5], 0.1f, 1e-5f);
    x = qat_hardswish(c, x);
    x = qat_conv2d(c, x, in[6], NULL, 1, 0);
    x = qat_clamp(c, qat_concat(c, x, in[0]), -1.5f, 1.5f);
    return qat_upsample_nearest(c, x, 2);
}

/* ---- the checker can fail ---- */

static void bad_scale2_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *dx = qat_grad(ctx, e->in[0]);
    for (size_t i = 0; i < e->out->numel; i++) dx[i] += e->out->grad[i]; /* wrong: misses the 2 */
}
static void nody_scale2_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *dx = qat_grad(ctx, e->in[0]);
    for (size_t i = 0; i < e->out->numel; i++) dx[i] += 2.0f; /* wrong: ignores dy */
}
static qat_tensor *scale2(qat_ctx *c, qat_tensor *x, qat_backward_fn bw)
{
    qat_tensor *y = qat_new(c, x->ndim, x->shape);
    for (size_t i = 0; i < x->numel; i++) y->data[i] = 2.0f * x->data[i];
    if (qat_needs_grad(c, 1, &x)) qat_tape_record(c, "scale2", bw, y, 1, &x, NULL);
    return y;
}
static qat_tensor *f_bad1(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return scale2(c, in[0], bad_scale2_backward);
}
static qat_tensor *f_bad2(qat_ctx *c, qat_tensor **in, const gc_spec *s)
{
    (void)s;
    return scale2(c, in[0], nody_scale2_backward);
}

START_TEST(test_checker_detects_wrong_backward)
{
    gc_spec s = spec("bad_scale", f_bad1, 1);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, 3, 4, 0, 0);
    gc_result r = gc_check(&s);
    ck_assert_int_eq(r.failed, 12);
    s = spec("nody_scale", f_bad2, 2);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, 3, 4, 0, 0);
    r = gc_check(&s);
    ck_assert_int_ge(r.failed, 10); /* dy = w is random, never 1 */
}
END_TEST

/* ---- linear, matmul ---- */

START_TEST(test_linear)
{
    qat_rng r;
    qat_rng_seed(&r, 100 + (uint64_t)_i);
    int N = rnd(&r, 1, 6), K = rnd(&r, 1, 9), M = rnd(&r, 1, 7);
    gc_spec s = spec("linear+bias", f_linear, 200 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, N, K, 0, 0);
    set_in(&s, 1, GC_PARAM, -1, 1, 2, M, K, 0, 0);
    set_in(&s, 2, GC_PARAM, -1, 1, 1, M, 0, 0, 0);
    gc_assert(&s);
    s.name = "linear-nobias";
    s.n_in = 2;
    gc_assert(&s);
}
END_TEST

/* Large enough (>= 2 MFLOP) that the GEMMs are split over threads, both by
 * rows and by columns of C. */
START_TEST(test_linear_large)
{
    gc_spec s = spec("linear-large", f_linear, 7);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, 64, 128, 0, 0);
    set_in(&s, 1, GC_PARAM, -0.1f, 0.1f, 2, 130, 128, 0, 0);
    set_in(&s, 2, GC_PARAM, -1, 1, 1, 130, 0, 0, 0);
    s.atol = 2e-3;
    gc_assert(&s);
}
END_TEST

START_TEST(test_matmul)
{
    qat_rng r;
    qat_rng_seed(&r, 300 + (uint64_t)_i);
    int N = rnd(&r, 1, 6), K = rnd(&r, 1, 9), M = rnd(&r, 1, 7);
    gc_spec s = spec("matmul", f_matmul, 400 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, N, K, 0, 0);
    set_in(&s, 1, GC_PARAM, -1, 1, 2, K, M, 0, 0);
    gc_assert(&s);
    /* a const right side: only da flows */
    s.kind[1] = GC_CONST;
    gc_assert(&s);
}
END_TEST

START_TEST(test_matmul_large)
{
    gc_spec s = spec("matmul-large", f_matmul, 8);
    set_in(&s, 0, GC_PARAM, -1, 1, 2, 140, 100, 0, 0);
    set_in(&s, 1, GC_LEAF, -0.1f, 0.1f, 2, 100, 72, 0, 0);
    s.atol = 2e-3;
    gc_assert(&s);
}
END_TEST

/* ---- elementwise ---- */

START_TEST(test_bias_add)
{
    qat_rng r;
    qat_rng_seed(&r, 500 + (uint64_t)_i);
    int N = rnd(&r, 1, 4), C = rnd(&r, 1, 5), H = rnd(&r, 1, 4), W = rnd(&r, 1, 4);
    gc_spec s = spec("bias_add-2d", f_bias_add, 600 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 2, N, C, 0, 0);
    set_in(&s, 1, GC_PARAM, -1, 1, 1, C, 0, 0, 0);
    gc_assert(&s);
    s.name = "bias_add-4d";
    set_in(&s, 0, GC_LEAF, -1, 1, 4, N, C, H, W);
    gc_assert(&s);
}
END_TEST

START_TEST(test_add_mul)
{
    qat_rng r;
    qat_rng_seed(&r, 700 + (uint64_t)_i);
    int nd = rnd(&r, 1, 4), d[4];
    for (int k = 0; k < 4; k++) d[k] = rnd(&r, 1, 4);
    gc_spec s = spec("add", f_add, 800 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, nd, d[0], d[1], d[2], d[3]);
    set_in(&s, 1, GC_PARAM, -1, 1, nd, d[0], d[1], d[2], d[3]);
    gc_assert(&s);
    s.name = "mul";
    s.fn = f_mul;
    s.lo[1] = -2;
    s.hi[1] = 2;
    gc_assert(&s);
    s.n_in = 1;
    s.name = "add-self";
    s.fn = f_add_self;
    gc_assert(&s);
    s.name = "mul-self";
    s.fn = f_mul_self;
    gc_assert(&s);
    /* add_relu: kinks where a + b = 0 (samples there are skipped) */
    s = spec("add_relu", f_add_relu, 850 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, nd, d[0], d[1], d[2], d[3]);
    set_in(&s, 1, GC_PARAM, -1, 1, nd, d[0], d[1], d[2], d[3]);
    s.detect_kinks = 1;
    gc_assert(&s);
    s.n_in = 1;
    s.name = "add_relu-self";
    s.fn = f_add_relu_self;
    gc_assert(&s);
}
END_TEST

/* channel_mul: every axis, multiply (k = axis, training = divide) */
START_TEST(test_channel_mul)
{
    qat_rng r;
    qat_rng_seed(&r, 2300 + (uint64_t)_i);
    int nd = rnd(&r, 1, 4), d[4];
    for (int k = 0; k < 4; k++) d[k] = rnd(&r, 1, 4);
    int axis = _i % nd;
    gc_spec s = spec("channel_mul", f_channel_mul, 2400 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, nd, d[0], d[1], d[2], d[3]);
    set_in(&s, 1, GC_PARAM, 0.5f, 2.0f, 1, d[axis], 0, 0, 0);
    s.k = axis;
    s.training = 0;
    gc_assert(&s);
    s.name = "channel_div";
    s.training = 1;
    gc_assert(&s);
}
END_TEST

static void bn_spec(gc_spec *s, int ndim, int N, int C, int H, int W);

/* Above the size where the add/relu/channel_mul/maxpool/BN loops run in
 * parallel. */
START_TEST(test_add_relu_large)
{
    gc_spec s = spec("add-large", f_add, 9);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 4, 8, 32, 40);
    set_in(&s, 1, GC_PARAM, -1, 1, 4, 4, 8, 32, 40);
    gc_assert(&s);
    s = spec("add_relu-large", f_add_relu, 14);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 4, 8, 32, 40);
    set_in(&s, 1, GC_PARAM, -1, 1, 4, 4, 8, 32, 40);
    s.detect_kinks = 1;
    gc_assert(&s);
    s = spec("relu-large", f_relu, 10);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 4, 8, 32, 40);
    s.relu_kink = 1;
    gc_assert(&s);
    s = spec("maxpool-large", f_maxpool, 12);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 4, 8, 64, 80);
    s.k = 2;
    s.stride = 2;
    s.h = 1e-3;
    s.detect_kinks = 1;
    gc_assert(&s);
    s = spec("batchnorm2d-train-large", f_bn, 13);
    bn_spec(&s, 4, 4, 8, 32, 40);
    s.training = 1;
    /* each value moves the statistics of 5120 outputs, whose float rounding
     * then changes: a larger step keeps that noise below the tolerance */
    s.h = 2e-2;
    s.rtol = 5e-3;
    gc_assert(&s);
    s = spec("channel_div-large", f_channel_mul, 11);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 4, 8, 32, 40);
    set_in(&s, 1, GC_PARAM, 0.5f, 2.0f, 1, 8, 0, 0, 0);
    s.k = 1;
    s.training = 1;
    gc_assert(&s);
}
END_TEST

START_TEST(test_relu)
{
    qat_rng r;
    qat_rng_seed(&r, 900 + (uint64_t)_i);
    gc_spec s = spec("relu", f_relu, 1000 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, rnd(&r, 1, 3), rnd(&r, 1, 4), rnd(&r, 1, 5), rnd(&r, 1, 5));
    s.relu_kink = 1;
    gc_assert(&s);
}
END_TEST

/* ---- conv2d ---- */

typedef struct {
    int N, C, H, W, OC, KH, KW, stride, pad, bias;
} conv_cfg;

static const conv_cfg conv_cfgs[] = {
    {3, 1, 5, 5, 2, 3, 3, 1, 0, 1},   /* plain 3x3 */
    {3, 3, 7, 6, 5, 3, 3, 2, 1, 0},   /* stride 2, pad 1, non-square input, odd channels */
    {5, 2, 6, 9, 3, 5, 5, 1, 2, 1},   /* 5x5, pad 2 */
    {3, 4, 5, 7, 3, 1, 1, 1, 0, 1},   /* 1x1, stride 1: the no-im2col path */
    {3, 3, 6, 6, 2, 1, 1, 2, 0, 0},   /* 1x1 stride 2 (shortcut) */
    {2, 3, 8, 5, 4, 5, 5, 2, 2, 0},   /* 5x5 stride 2 pad 2 */
    {1, 2, 4, 4, 3, 3, 3, 1, 1, 1},   /* N=1 < threads */
    {5, 3, 9, 9, 7, 3, 3, 3, 1, 1},   /* stride 3 */
    {3, 2, 6, 7, 3, 2, 3, 1, 1, 1},   /* non-square kernel */
    {7, 5, 4, 3, 1, 3, 3, 1, 2, 0},   /* pad 2 > needed, OC 1, batch 7 */
    {4, 1, 3, 3, 2, 5, 5, 1, 1, 1},   /* kernel larger than input, padding makes it fit */
};

START_TEST(test_conv2d)
{
    const conv_cfg *c = &conv_cfgs[_i];
    char name[96];
    snprintf(name, sizeof name, "conv2d[N%d C%d %dx%d OC%d k%dx%d s%d p%d%s]", c->N, c->C, c->H,
             c->W, c->OC, c->KH, c->KW, c->stride, c->pad, c->bias ? " bias" : "");
    gc_spec s = spec(name, f_conv, 1100 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, c->N, c->C, c->H, c->W);
    set_in(&s, 1, GC_PARAM, -1, 1, 4, c->OC, c->C, c->KH, c->KW);
    if (c->bias) set_in(&s, 2, GC_PARAM, -1, 1, 1, c->OC, 0, 0, 0);
    s.stride = c->stride;
    s.pad = c->pad;
    gc_assert(&s);
}
END_TEST

/* ---- pooling ---- */

typedef struct {
    int N, C, H, W, k, stride;
} pool_cfg;

static const pool_cfg pool_cfgs[] = {
    {2, 3, 4, 4, 2, 2}, {2, 2, 7, 5, 2, 2}, /* odd sizes: the last row/col is dropped */
    {3, 2, 7, 7, 3, 2}, {1, 3, 6, 9, 3, 2}, /* overlapping windows */
    {2, 1, 5, 6, 3, 1}, {2, 2, 3, 3, 3, 3}, /* stride 1; window = whole image */
};

START_TEST(test_maxpool)
{
    const pool_cfg *c = &pool_cfgs[_i];
    gc_spec s = spec("maxpool2d", f_maxpool, 1200 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, c->N, c->C, c->H, c->W);
    s.k = c->k;
    s.stride = c->stride;
    s.h = 1e-3; /* piecewise linear: no truncation error, fewer near-ties */
    s.detect_kinks = 1;
    gc_assert(&s);
}
END_TEST

/* with padding (qat_maxpool2d_ex): edge windows are clipped */
typedef struct {
    int N, C, H, W, k, stride, pad;
} pool_pad_cfg;

static const pool_pad_cfg pool_pad_cfgs[] = {
    {2, 3, 5, 5, 3, 2, 1}, {2, 2, 6, 7, 2, 2, 1}, /* 3x3 s2 p1 (ResNet stem); 2x2 p1 */
    {1, 3, 7, 6, 3, 1, 1}, {2, 2, 4, 4, 5, 2, 2}, /* stride 1; kernel larger than input */
    {2, 1, 5, 6, 4, 3, 2}, {2, 2, 6, 6, 2, 2, 0}, /* even kernel, pad k/2; the 2x2 fast path */
};

START_TEST(test_maxpool_pad)
{
    const pool_pad_cfg *c = &pool_pad_cfgs[_i];
    char name[80];
    snprintf(name, sizeof name, "maxpool2d_ex[%dx%d k%d s%d p%d]", c->H, c->W, c->k, c->stride, c->pad);
    gc_spec s = spec(name, f_maxpool_ex, 1250 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, c->N, c->C, c->H, c->W);
    s.k = c->k;
    s.stride = c->stride;
    s.pad = c->pad;
    s.h = 1e-3;
    s.detect_kinks = 1;
    gc_assert(&s);
}
END_TEST

START_TEST(test_avgpool)
{
    const pool_cfg *c = &pool_cfgs[_i];
    gc_spec s = spec("avgpool2d", f_avgpool, 1300 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, c->N, c->C, c->H, c->W);
    s.k = c->k;
    s.stride = c->stride;
    gc_assert(&s);
}
END_TEST

START_TEST(test_global_avgpool)
{
    qat_rng r;
    qat_rng_seed(&r, 1400 + (uint64_t)_i);
    gc_spec s = spec("global_avgpool", f_gap, 1500 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, rnd(&r, 1, 4), rnd(&r, 1, 5), rnd(&r, 1, 6), rnd(&r, 1, 6));
    gc_assert(&s);
}
END_TEST

/* ---- batch norm ---- */

static void bn_spec(gc_spec *s, int ndim, int N, int C, int H, int W)
{
    set_in(s, 0, GC_LEAF, -2, 2, ndim, N, C, H, W);
    set_in(s, 1, GC_PARAM, 0.5f, 1.5f, 1, C, 0, 0, 0);  /* gamma */
    set_in(s, 2, GC_PARAM, -0.5f, 0.5f, 1, C, 0, 0, 0); /* beta */
    set_in(s, 3, GC_CONST, -0.3f, 0.3f, 1, C, 0, 0, 0); /* running mean */
    set_in(s, 4, GC_CONST, 0.5f, 1.5f, 1, C, 0, 0, 0);  /* running var */
}

START_TEST(test_batchnorm_train)
{
    qat_rng r;
    qat_rng_seed(&r, 1600 + (uint64_t)_i);
    int N = rnd(&r, 1, 4), C = rnd(&r, 1, 3), H = rnd(&r, 2, 4), W = rnd(&r, 2, 4);
    gc_spec s = spec("batchnorm2d-train", f_bn, 1700 + (uint64_t)_i);
    bn_spec(&s, 4, N, C, H, W);
    s.training = 1;
    s.h = 2e-3;
    s.rtol = 5e-3;
    gc_assert(&s);
    s.name = "batchnorm2d-train-2d";
    bn_spec(&s, 2, rnd(&r, 4, 9), C, 0, 0);
    gc_assert(&s);
}
END_TEST

START_TEST(test_batchnorm_eval)
{
    qat_rng r;
    qat_rng_seed(&r, 1800 + (uint64_t)_i);
    int N = rnd(&r, 1, 4), C = rnd(&r, 1, 3), H = rnd(&r, 1, 4), W = rnd(&r, 1, 4);
    gc_spec s = spec("batchnorm2d-eval", f_bn, 1900 + (uint64_t)_i);
    bn_spec(&s, 4, N, C, H, W);
    s.training = 0;
    gc_assert(&s);
}
END_TEST

/* BN with its ReLU fused: kinks where BN's output crosses 0 are skipped */
START_TEST(test_batchnorm_relu)
{
    qat_rng r;
    qat_rng_seed(&r, 2000 + (uint64_t)_i);
    int N = rnd(&r, 2, 4), C = rnd(&r, 1, 3), H = rnd(&r, 2, 4), W = rnd(&r, 2, 4);
    gc_spec s = spec("batchnorm2d-relu-train", f_bn_relu, 2100 + (uint64_t)_i);
    bn_spec(&s, 4, N, C, H, W);
    s.training = 1;
    s.h = 2e-3;
    s.rtol = 5e-3;
    s.detect_kinks = 1;
    gc_assert(&s);
    s.name = "batchnorm2d-relu-eval";
    s.training = 0;
    gc_assert(&s);
}
END_TEST

/* BN with a fused clamp / per-channel clamp / hard-swish */
START_TEST(test_batchnorm_act)
{
    qat_rng r;
    qat_rng_seed(&r, 2300 + (uint64_t)_i);
    int N = rnd(&r, 2, 4), C = rnd(&r, 1, 3), H = rnd(&r, 2, 4), W = rnd(&r, 2, 4);
    gc_spec s = spec("batchnorm2d-clamp-train", f_bn_clamp, 2400 + (uint64_t)_i);
    bn_spec(&s, 4, N, C, H, W);
    s.training = 1;
    s.h = 2e-3;
    s.rtol = 5e-3;
    s.detect_kinks = 1;
    s.clo = -0.5f;
    s.chi = 0.8f;
    gc_assert(&s);
    const float hi_c[3] = {0.3f, 1.0f, 0.6f};
    s.name = "batchnorm2d-clamp_channels-train";
    s.hi_c = hi_c;
    gc_assert(&s);
    s.name = "batchnorm2d-clamp-eval";
    s.training = 0;
    s.hi_c = NULL;
    gc_assert(&s);
    s.name = "batchnorm2d-hardswish-train";
    s.fn = f_bn_hardswish;
    s.training = 1;
    gc_assert(&s);
}
END_TEST

/* ---- shape ops, sum, loss ---- */

START_TEST(test_reshape_flatten_sum)
{
    gc_spec s = spec("reshape", f_reshape, 21);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 2, 3, 2, 2);
    s.rs_ndim = 3;
    s.rs_shape[0] = 4;
    s.rs_shape[1] = 6;
    s.rs_shape[2] = 1;
    gc_assert(&s);
    s.name = "flatten";
    s.fn = f_flatten;
    gc_assert(&s);
    s.name = "sum";
    s.fn = f_sum;
    gc_assert(&s);
    s.name = "sum-scalar";
    set_in(&s, 0, GC_PARAM, -1, 1, 0, 0, 0, 0, 0);
    gc_assert(&s);
}
END_TEST

START_TEST(test_cross_entropy)
{
    qat_rng r;
    qat_rng_seed(&r, 2000 + (uint64_t)_i);
    int N = rnd(&r, 1, 6), C = rnd(&r, 2, 10);
    uint8_t labels[6];
    for (int n = 0; n < N; n++) labels[n] = (uint8_t)qat_rng_below(&r, (uint32_t)C);
    gc_spec s = spec("cross_entropy", f_ce, 2100 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -3, 3, 2, N, C, 0, 0);
    s.labels = labels;
    gc_assert(&s);
    s.name = "cross_entropy-wide";
    s.lo[0] = -15;
    s.hi[0] = 15;
    gc_assert(&s);
}
END_TEST

START_TEST(test_small_net)
{
    static const uint8_t labels[3] = {2, 0, 4};
    gc_spec s = spec("conv-bn-relu-pool-linear-ce", f_net, 2200 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 3, 2, 6, 6);
    set_in(&s, 1, GC_PARAM, -0.5f, 0.5f, 4, 3, 2, 3, 3);
    set_in(&s, 2, GC_PARAM, -0.5f, 0.5f, 1, 3, 0, 0, 0);
    set_in(&s, 3, GC_PARAM, 0.5f, 1.5f, 1, 3, 0, 0, 0);  /* gamma */
    set_in(&s, 4, GC_PARAM, -0.5f, 0.5f, 1, 3, 0, 0, 0); /* beta */
    set_in(&s, 5, GC_CONST, 0, 0, 1, 3, 0, 0, 0);
    set_in(&s, 6, GC_CONST, 1, 1, 1, 3, 0, 0, 0);
    set_in(&s, 7, GC_PARAM, -0.5f, 0.5f, 2, 5, 27, 0, 0);
    set_in(&s, 8, GC_PARAM, -0.5f, 0.5f, 1, 5, 0, 0, 0);
    s.labels = labels;
    s.h = 1e-3;
    s.atol = 2e-4;
    s.rtol = 1e-2;
    s.detect_kinks = 1;
    gc_assert(&s);
}
END_TEST

/* ---- grouped convolution, bounded activations, concat, upsample ---- */

/* N, C, H, W, OC, K, stride, pad, groups, bias */
static const int gconv_cfgs[][10] = {
    {2, 4, 5, 5, 6, 3, 1, 1, 2, 1},  /* groups 2 */
    {2, 4, 6, 5, 4, 3, 2, 0, 2, 0},  /* groups 2, stride 2, pad 0 */
    {2, 3, 5, 6, 3, 3, 1, 1, 3, 0},  /* depthwise */
    {2, 3, 7, 7, 3, 3, 2, 1, 3, 1},  /* depthwise stride 2 */
    {2, 3, 6, 6, 3, 3, 1, 0, 3, 0},  /* depthwise pad 0 */
    {2, 2, 7, 6, 2, 3, 2, 0, 2, 1},  /* depthwise stride 2 pad 0 */
    {1, 3, 5, 5, 6, 3, 1, 1, 3, 1},  /* depthwise, multiplier 2 */
    {2, 2, 6, 6, 4, 3, 2, 1, 2, 0},  /* depthwise, multiplier 2, stride 2 */
    {2, 4, 5, 5, 4, 1, 1, 0, 4, 0},  /* depthwise 1x1 */
    {2, 4, 8, 8, 4, 5, 2, 2, 4, 1},  /* depthwise 5x5 */
    {1, 4, 6, 6, 8, 3, 1, 0, 1, 1},  /* groups 1 (qat_conv2d) */
    {3, 5, 9, 9, 5, 3, 1, 1, 5, 0},  /* depthwise, odd sizes */
    {2, 6, 3, 3, 6, 3, 1, 1, 6, 0},  /* depthwise, tiny planes */
    {2, 6, 8, 8, 6, 3, 2, 1, 6, 0},  /* depthwise stride 2, even planes */
};

START_TEST(test_conv_grouped)
{
    const int *c = gconv_cfgs[_i];
    gc_spec s = spec("conv2d_grouped", f_gconv, 3000 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, c[0], c[1], c[2], c[3]);
    set_in(&s, 1, GC_PARAM, -1, 1, 4, c[4], c[1] / c[8], c[5], c[5]);
    if (c[9]) set_in(&s, 2, GC_PARAM, -1, 1, 1, c[4], 0, 0, 0);
    s.stride = c[6];
    s.pad = c[7];
    s.groups = c[8];
    s.h = 1e-2;
    s.atol = 2e-3;
    s.rtol = 2e-3;
    gc_assert(&s);
}
END_TEST

START_TEST(test_clamp)
{
    qat_rng r;
    qat_rng_seed(&r, 3100 + (uint64_t)_i);
    int N = rnd(&r, 1, 3), C = rnd(&r, 1, 4), H = rnd(&r, 1, 4), W = rnd(&r, 1, 4);
    gc_spec s = spec("clamp-relu6", f_clamp, 3200 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -3, 9, 4, N, C, H, W);
    s.clo = 0.0f;
    s.chi = 6.0f;
    s.detect_kinks = 1;
    gc_assert(&s);
    s.name = "clamp-flat";
    set_in(&s, 0, GC_LEAF, -2, 2, 2, N, C * H * W, 0, 0);
    s.clo = -0.5f;
    s.chi = 0.75f;
    gc_assert(&s);
    float hi_c[4];
    for (int k = 0; k < C; k++) hi_c[k] = 0.5f + (float)k;
    s.name = "clamp_channels";
    s.fn = f_clamp_ch;
    s.hi_c = hi_c;
    s.clo = -0.25f;
    set_in(&s, 0, GC_LEAF, -2, 4, 4, N, C, H, W);
    gc_assert(&s);
}
END_TEST

START_TEST(test_hard_acts)
{
    qat_rng r;
    qat_rng_seed(&r, 3300 + (uint64_t)_i);
    int N = rnd(&r, 1, 3), C = rnd(&r, 1, 4), H = rnd(&r, 2, 4), W = rnd(&r, 2, 4);
    gc_spec s = spec("hardswish", f_hardswish, 3400 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -5, 5, 4, N, C, H, W);
    s.n_kinks = 2; /* x = -3 and x = 3: the curvature in between is too
                    * large for detect_kinks' one-sided test */
    s.kink[0] = -3.0f;
    s.kink[1] = 3.0f;
    gc_assert(&s);
    s.name = "hardsigmoid";
    s.fn = f_hardsigmoid;
    gc_assert(&s);
}
END_TEST

START_TEST(test_concat_upsample)
{
    qat_rng r;
    qat_rng_seed(&r, 3500 + (uint64_t)_i);
    int N = rnd(&r, 1, 3), Ca = rnd(&r, 1, 3), Cb = rnd(&r, 1, 3), H = rnd(&r, 1, 4), W = rnd(&r, 1, 4);
    gc_spec s = spec("concat", f_concat, 3600 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, N, Ca, H, W);
    set_in(&s, 1, GC_PARAM, -1, 1, 4, N, Cb, H, W);
    gc_assert(&s);
    s.name = "concat-flat";
    set_in(&s, 0, GC_LEAF, -1, 1, 2, N, Ca * 3, 0, 0);
    set_in(&s, 1, GC_LEAF, -1, 1, 2, N, Cb, 0, 0);
    gc_assert(&s);
    s.name = "concat-self";
    s.fn = f_concat_self;
    s.n_in = 1;
    gc_assert(&s);
    s = spec("upsample", f_upsample, 3700 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, N, Ca, H, W);
    s.k = 1 + _i % 3;
    gc_assert(&s);
}
END_TEST

START_TEST(test_dw_chain)
{
    gc_spec s = spec("dwconv-bn-hardswish-conv-concat-clamp-upsample", f_dw_chain, 3800 + (uint64_t)_i);
    set_in(&s, 0, GC_LEAF, -1, 1, 4, 2, 3, 5, 5);
    set_in(&s, 1, GC_PARAM, -0.5f, 0.5f, 4, 3, 1, 3, 3);
    set_in(&s, 2, GC_PARAM, 0.5f, 1.5f, 1, 3, 0, 0, 0);  /* gamma */
    set_in(&s, 3, GC_PARAM, -0.5f, 0.5f, 1, 3, 0, 0, 0); /* beta */
    set_in(&s, 4, GC_CONST, 0, 0, 1, 3, 0, 0, 0);
    set_in(&s, 5, GC_CONST, 1, 1, 1, 3, 0, 0, 0);
    set_in(&s, 6, GC_PARAM, -0.5f, 0.5f, 4, 2, 3, 1, 1);
    s.h = 1e-3;
    s.atol = 2e-4;
    s.rtol = 1e-2;
    s.detect_kinks = 1;
    gc_assert(&s);
}
END_TEST

static Suite *gradcheck_suite(void)
{
    Suite *s = suite_create("gradcheck");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_checker_detects_wrong_backward);
    tcase_add_loop_test(tc, test_linear, 0, 6);
    tcase_add_test(tc, test_linear_large);
    tcase_add_loop_test(tc, test_matmul, 0, 6);
    tcase_add_test(tc, test_matmul_large);
    tcase_add_loop_test(tc, test_bias_add, 0, 4);
    tcase_add_loop_test(tc, test_add_mul, 0, 4);
    tcase_add_test(tc, test_add_relu_large);
    tcase_add_loop_test(tc, test_channel_mul, 0, 8);
    tcase_add_loop_test(tc, test_relu, 0, 4);
    tcase_add_loop_test(tc, test_conv2d, 0, (int)(sizeof conv_cfgs / sizeof conv_cfgs[0]));
    tcase_add_loop_test(tc, test_maxpool, 0, (int)(sizeof pool_cfgs / sizeof pool_cfgs[0]));
    tcase_add_loop_test(tc, test_maxpool_pad, 0, (int)(sizeof pool_pad_cfgs / sizeof pool_pad_cfgs[0]));
    tcase_add_loop_test(tc, test_avgpool, 0, (int)(sizeof pool_cfgs / sizeof pool_cfgs[0]));
    tcase_add_loop_test(tc, test_global_avgpool, 0, 4);
    tcase_add_loop_test(tc, test_batchnorm_train, 0, 6);
    tcase_add_loop_test(tc, test_batchnorm_eval, 0, 4);
    tcase_add_loop_test(tc, test_batchnorm_relu, 0, 4);
    tcase_add_loop_test(tc, test_batchnorm_act, 0, 4);
    tcase_add_test(tc, test_reshape_flatten_sum);
    tcase_add_loop_test(tc, test_cross_entropy, 0, 6);
    tcase_add_loop_test(tc, test_small_net, 0, 3);
    tcase_add_loop_test(tc, test_conv_grouped, 0, (int)(sizeof gconv_cfgs / sizeof gconv_cfgs[0]));
    tcase_add_loop_test(tc, test_clamp, 0, 4);
    tcase_add_loop_test(tc, test_hard_acts, 0, 4);
    tcase_add_loop_test(tc, test_concat_upsample, 0, 4);
    tcase_add_loop_test(tc, test_dw_chain, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gradcheck_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
