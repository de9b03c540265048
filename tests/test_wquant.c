/* Quantizers beyond the uniform grid (quant/weights.c, qat/half.h):
 * fp16/bf16 rounding, binary weights, codebook (k-means) and hashed
 * weights: values, gradients, determinism, the integer weights the
 * converter takes, checkpoints, and the int8 runtime's agreement. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/format_int8.h"
#include "qat/half.h"
#include "qat/qio.h"
#include "qat/quant.h"
#include "qat/runtime.h"
#include "quant/convert.h"
#include "quant/internal.h"
#include "testutil.h"

#define OK(e)                                                                                                  \
    do {                                                                                                       \
        int rc_ = (e);                                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());                               \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- fp16 / bf16 ---- */

START_TEST(test_f16_values)
{
    struct {
        double x;
        uint16_t h;
    } v[] = {{1.0, 0x3c00},
             {-2.0, 0xc000},
             {65504.0, 0x7bff},
             {65519.99, 0x7bff},
             {65520.0, 0x7bff}, /* IEEE would give +inf: saturated */
             {1e10, 0x7bff},
             {-1e10, 0xfbff},
             {INFINITY, 0x7bff},
             {-INFINITY, 0xfbff},
             {0x1p-24, 0x0001},       /* smallest subnormal */
             {0x1p-25, 0x0000},       /* tie between 0 and 2^-24: even (0) */
             {0x1.8p-24, 0x0002},     /* 1.5 ulp: tie, even (2) */
             {0x1p-14, 0x0400},       /* smallest normal */
             {1.0 + 0x1p-11, 0x3c00}, /* tie: even */
             {1.0 + 0x1.8p-10, 0x3c02},
             {1.0 + 0x1p-11 + 0x1p-40, 0x3c01}, /* just above the tie: a double rounded once */
             {0.0, 0x0000},
             {-0.0, 0x8000},
             {0.1, 0x2e66}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint16_t h = qat_f16_from_double(v[i].x);
        ck_assert_msg(h == v[i].h, "f16(%a) = %04x, expected %04x", v[i].x, h, v[i].h);
    }
    ck_assert_uint_eq(qat_f16_from_double(NAN), 0x7e00);
    ck_assert(isnan(qat_f16_to_float(0x7e00)));
    ck_assert(qat_f16_to_float(0x7c00) == INFINITY);
    /* every finite pattern decodes and encodes back to itself */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        float f = qat_f16_to_float((uint16_t)h);
        ck_assert_msg(qat_f16_from_float(f) == h, "%04x -> %g -> %04x", h, f, qat_f16_from_float(f));
        ck_assert(qat_f16_round(f) == f);
    }
#ifdef __FLT16_MAX__
    /* against the compiler's own conversion (round to nearest even), away
     * from the overflow where qat saturates */
    qat_rng r;
    qat_rng_seed(&r, 7);
    for (int i = 0; i < 200000; i++) {
        float x = (qat_rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)(qat_rng_uniform(&r) * 44) - 28);
        __extension__ _Float16 c = (_Float16)x;
        ck_assert_msg(qat_f16_round(x) == (float)c, "x %a: %a vs %a", (double)x, (double)qat_f16_round(x), (double)(float)c);
    }
#endif
}
END_TEST

START_TEST(test_bf16_values)
{
    qat_rng r;
    qat_rng_seed(&r, 8);
    for (int i = 0; i < 200000; i++) {
        float x = (qat_rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)(qat_rng_uniform(&r) * 200) - 100);
        /* the usual bit trick: add 0x7fff + lsb, truncate */
        uint32_t u = fbits(x);
        u += 0x7fffu + ((u >> 16) & 1u);
        float ref = bitsf(u & 0xffff0000u);
        ck_assert_msg(qat_bf16_round(x) == ref, "x %a: %a vs %a", (double)x, (double)qat_bf16_round(x), (double)ref);
        ck_assert(qat_bf16_to_float(qat_bf16_from_double(x)) == ref);
    }
    ck_assert(qat_bf16_round(1e39) == (float)QAT_BF16_MAX);
    ck_assert(qat_bf16_round(-INFINITY) == -(float)QAT_BF16_MAX);
    ck_assert_uint_eq(qat_bf16_from_double(1.0), 0x3f80);
}
END_TEST

/* ---- the hash of the format ---- */

START_TEST(test_hash_bucket)
{
    /* values computed independently (Python, from docs/FORMAT-int8.md) */
    ck_assert_uint_eq(qat_i8_hash_bucket(0, 0, 64), 0);
    ck_assert_uint_eq(qat_i8_hash_bucket(0, 1, 64), 55);
    ck_assert_uint_eq(qat_i8_hash_bucket(12345, 7, 64), 25);
    ck_assert_uint_eq(qat_i8_hash_bucket(0xFFFFFFFFu, 123456, 256), 233);
    ck_assert_uint_eq(qat_i8_hash_bucket(2166136261u, 99, 3), 2);
}
END_TEST

/* ---- single quantizers ---- */

static qat_quantizer weight_quantizer(const char *spec, int oc)
{
    qat_unit_config u;
    OK(qat_unit_config_parse(spec, &u));
    qat_quantizer q;
    qat_observer_opts wo = qat_observer_opts_defaults(u.weight.per_channel ? QAT_OBSERVER_PER_CHANNEL_MINMAX
                                                                            : QAT_OBSERVER_MINMAX);
    wo.channels = u.weight.per_channel ? oc : 1;
    wo.memoryless = 1;
    OK(qat_quantizer_init(&q, &u.weight, u.weight.per_channel ? oc : 1, u.lsq_weight, &wo));
    q.kind = u.weight_kind;
    q.k = u.weight_k;
    if (q.k) {
        q.values = qat_tensor_create(1, &q.k, 1);
        NN(q.values);
        q.seed = 0x1234u;
    }
    return q;
}

/* Binary: alpha = mean |w| per channel, sign(0) = +1, the scaled clip,
 * and d alpha = g * sum dy * sign(w), checked by finite differences. */
START_TEST(test_binary)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_quantizer q = weight_quantizer("w1a8", 3);
    ck_assert_int_eq(q.qmin, -1);
    ck_assert_int_eq(q.qmax, 1);
    ck_assert_ptr_nonnull(q.lsq_scale);
    qat_tensor *w = qat_tensor_create(2, (int[]){3, 4}, 1);
    float wv[12] = {0.5f, -1.0f, 0.0f, 2.5f, /* mean |w| 1 */ -0.2f, -0.2f, -0.2f, -0.2f, /* 0.2 */ -0.0f, 3.0f,
                    -3.0f, 0.1f};
    memcpy(w->data, wv, sizeof wv);
    qat_tensor *y = qat_fq(ctx, w, &q, 1);
    NN(y);
    ck_assert(q.initialized);
    ck_assert_float_eq_tol(q.lsq_scale->data[0], 1.0f, 1e-7f);
    ck_assert_float_eq_tol(q.lsq_scale->data[1], 0.2f, 1e-7f);
    ck_assert_float_eq_tol(q.lsq_scale->data[2], 1.525f, 1e-6f);
    float a2 = q.lsq_scale->data[2];
    float yref[12] = {1, -1, 1, 1, -0.2f, -0.2f, -0.2f, -0.2f, a2, a2, -a2, a2};
    for (int i = 0; i < 12; i++) ck_assert_msg(y->data[i] == yref[i], "y[%d] %g vs %g", i, y->data[i], yref[i]);
    /* loss = sum y * r: d alpha_c = g * sum r * sign(w) (g = 1/sqrt(4)), dw = r inside |w| <= alpha */
    float rv[12] = {1, 2, 3, 4, -1, 0.5f, 2, 1, 1, 1, 1, 1};
    qat_tensor *rt = qat_from(ctx, 2, (int[]){3, 4}, rv);
    OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, rt))));
    double ds0 = 0.5 * (1 - 2 + 3 + 4), ds1 = 0.5 * (1 - 0.5 - 2 - 1), ds2 = 0.5 * (1 + 1 - 1 + 1);
    ck_assert_float_eq_tol(q.lsq_scale->grad[0], (float)ds0, 1e-6f);
    ck_assert_float_eq_tol(q.lsq_scale->grad[1], (float)ds1, 1e-6f);
    ck_assert_float_eq_tol(q.lsq_scale->grad[2], (float)ds2, 1e-6f);
    float dwref[12] = {1, 2, 3, 0, -1, 0.5f, 2, 1, 1, 0, 0, 1};
    for (int i = 0; i < 12; i++) ck_assert_msg(w->grad[i] == dwref[i], "dw[%d] %g vs %g", i, w->grad[i], dwref[i]);
    /* finite differences on alpha (the loss is linear in it: exact up to rounding) */
    qat_ctx_set_grad(ctx, 0);
    for (int c = 0; c < 3; c++) {
        double h = 1e-3, f[2];
        float a0 = q.lsq_scale->data[c];
        for (int s = 0; s < 2; s++) {
            qat_ctx_reset(ctx);
            q.lsq_scale->data[c] = a0 + (float)(s ? h : -h);
            qat_tensor *yy = qat_fq(ctx, w, &q, 1);
            NN(yy);
            f[s] = 0;
            for (int i = 0; i < 12; i++) f[s] += (double)yy->data[i] * rv[i];
        }
        q.lsq_scale->data[c] = a0;
        double fd = (f[1] - f[0]) / (2 * h);
        double an = q.lsq_scale->grad[c] / 0.5; /* without the LSQ gradient scale */
        ck_assert_msg(fabs(fd - an) < 1e-3, "channel %d: fd %g vs %g", c, fd, an);
    }
    /* the integer weights */
    int8_t wi[12];
    OK(qat_quantizer_weight_ints(&q, w->data, 12, wi));
    for (int i = 0; i < 12; i++) ck_assert_int_eq(wi[i], wv[i] >= 0 ? 1 : -1);
    qat_tensor_free(w);
    qat_quantizer_free(&q);
    qat_ctx_free(ctx);
}
END_TEST

/* Codebook: k-means finds the two clusters; every weight takes its nearest
 * centroid on the int8 grid; d c_k = sum of its members' dy, dw = dy. */
START_TEST(test_codebook)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_quantizer q = weight_quantizer("wc2a8", 2);
    ck_assert_int_eq(q.n, 1);
    qat_tensor *w = qat_tensor_create(2, (int[]){2, 3}, 1);
    float wv[6] = {0.0f, 1.1f, 0.1f, 1.2f, 0.2f, 1.0f};
    memcpy(w->data, wv, sizeof wv);
    qat_tensor *y = qat_fq(ctx, w, &q, 1);
    NN(y);
    ck_assert_float_eq_tol(q.values->data[0], 0.1f, 1e-6f);
    ck_assert_float_eq_tol(q.values->data[1], 1.1f, 1e-6f);
    float s = 1.1f / 127.0f;
    ck_assert_float_eq(q.scale[0], s);
    float lo = nearbyintf(q.values->data[0] / s) * s, hi = 127.0f * s;
    float yref[6] = {lo, hi, lo, hi, lo, hi};
    for (int i = 0; i < 6; i++) ck_assert_msg(y->data[i] == yref[i], "y[%d] %g vs %g", i, y->data[i], yref[i]);
    float rv[6] = {1, 2, 3, 4, 5, 6};
    qat_tensor *rt = qat_from(ctx, 2, (int[]){2, 3}, rv);
    OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, rt))));
    /* the members' sum over their count */
    ck_assert_float_eq(q.values->grad[0], (1 + 3 + 5) / 3.0f);
    ck_assert_float_eq(q.values->grad[1], (2 + 4 + 6) / 3.0f);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(w->grad[i], rv[i]);
    /* learned from here: a second observation keeps the centroids */
    q.values->data[0] = 0.3f;
    qat_ctx_reset(ctx);
    NN(qat_fq(ctx, w, &q, 1));
    ck_assert_float_eq(q.values->data[0], 0.3f);
    int8_t wi[6], vi[2];
    OK(qat_quantizer_weight_ints(&q, w->data, 6, wi));
    OK(qat_quantizer_value_ints(&q, vi));
    ck_assert_int_eq(vi[1], 127);
    for (int i = 0; i < 6; i++) ck_assert_int_eq(wi[i], vi[i % 2]);
    qat_tensor_free(w);
    qat_quantizer_free(&q);
    qat_ctx_free(ctx);
}
END_TEST

/* k-means is deterministic, and with K distinct inputs it reproduces them. */
START_TEST(test_kmeans_determinism)
{
    qat_rng r;
    qat_rng_seed(&r, 9);
    qat_tensor *w = qat_tensor_create(1, (int[]){5000}, 0);
    tu_fill_uniform(w->data, w->numel, -1, 1, &r);
    for (size_t i = 0; i < w->numel; i += 3) w->data[i] *= 0.1f;
    float first[16];
    for (int rep = 0; rep < 2; rep++) {
        qat_ctx *ctx = qat_ctx_create(0);
        qat_quantizer q = weight_quantizer("wc16a8", 1);
        NN(qat_fq(ctx, w, &q, 1));
        if (rep == 0) memcpy(first, q.values->data, sizeof first);
        else ck_assert(!memcmp(first, q.values->data, sizeof first));
        /* Lloyd's fixed point: each centroid is the mean of its members */
        int8_t dummy;
        (void)dummy;
        double sum[16] = {0};
        int cnt[16] = {0};
        for (size_t i = 0; i < w->numel; i++) {
            int best = 0;
            for (int k = 1; k < 16; k++)
                if (fabsf(w->data[i] - q.values->data[k]) < fabsf(w->data[i] - q.values->data[best])) best = k;
            sum[best] += w->data[i];
            cnt[best]++;
        }
        for (int k = 0; k < 16; k++)
            if (cnt[k]) ck_assert_float_eq_tol(q.values->data[k], (float)(sum[k] / cnt[k]), 1e-5f);
        qat_quantizer_free(&q);
        qat_ctx_free(ctx);
    }
    float few[4] = {-0.5f, 0.25f, 0.75f, 0.25f};
    qat_tensor *x = qat_tensor_create(1, (int[]){4}, 0);
    memcpy(x->data, few, sizeof few);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_quantizer q = weight_quantizer("wc3a8", 1);
    NN(qat_fq(ctx, x, &q, 1));
    ck_assert_float_eq(q.values->data[0], -0.5f);
    ck_assert_float_eq(q.values->data[1], 0.25f);
    ck_assert_float_eq(q.values->data[2], 0.75f);
    qat_quantizer_free(&q);
    qat_ctx_free(ctx);
    qat_tensor_free(x);
    qat_tensor_free(w);
}
END_TEST

/* Hashed: weight i takes bucket hash(seed, i); bucket values start as
 * their members' means; only they get gradients. */
START_TEST(test_hashed)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_quantizer q = weight_quantizer("wh4a8", 4);
    qat_rng r;
    qat_rng_seed(&r, 10);
    qat_tensor *w = qat_tensor_create(2, (int[]){4, 25}, 1);
    tu_fill_uniform(w->data, w->numel, -1, 1, &r);
    qat_tensor *y = qat_fq(ctx, w, &q, 1);
    NN(y);
    double sum[4] = {0};
    int cnt[4] = {0};
    for (int i = 0; i < 100; i++) {
        unsigned b = qat_i8_hash_bucket(q.seed, (unsigned)i, 4);
        sum[b] += w->data[i];
        cnt[b]++;
    }
    float s = qat_values_scale(&q);
    for (int k = 0; k < 4; k++) {
        ck_assert_int_gt(cnt[k], 0);
        ck_assert_float_eq_tol(q.values->data[k], (float)(sum[k] / cnt[k]), 1e-6f);
    }
    float rv[100];
    for (int i = 0; i < 100; i++) rv[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 100; i++) {
        unsigned b = qat_i8_hash_bucket(q.seed, (unsigned)i, 4);
        float ref = nearbyintf(q.values->data[b] / s) * s;
        ck_assert_msg(y->data[i] == ref, "y[%d] %g vs %g", i, y->data[i], ref);
    }
    qat_tensor *rt = qat_from(ctx, 2, (int[]){4, 25}, rv);
    OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, rt))));
    double g[4] = {0};
    for (int i = 0; i < 100; i++) g[qat_i8_hash_bucket(q.seed, (unsigned)i, 4)] += rv[i];
    for (int k = 0; k < 4; k++) ck_assert_float_eq_tol(q.values->grad[k], (float)g[k], 1e-5f);
    for (int i = 0; i < 100; i++) ck_assert_float_eq(w->grad[i], 0.0f);
    int8_t wi[100], vi[4];
    OK(qat_quantizer_weight_ints(&q, w->data, 100, wi));
    OK(qat_quantizer_value_ints(&q, vi));
    for (int i = 0; i < 100; i++) ck_assert_int_eq(wi[i], vi[qat_i8_hash_bucket(q.seed, (unsigned)i, 4)]);
    qat_tensor_free(w);
    qat_quantizer_free(&q);
    qat_ctx_free(ctx);
}
END_TEST

/* fp16 activations: the output is fp16-representable, STE inside the range. */
START_TEST(test_fp16_quantizer)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_unit_config u;
    OK(qat_unit_config_parse("fp16", &u));
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "fp16"));
    qat_model *m = qat_model_build("lenet5", 3);
    NN(m);
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_rng r;
    qat_rng_seed(&r, 11);
    qat_tensor *x = qat_new(ctx, 4, (int[]){2, 1, 28, 28});
    tu_fill_uniform(x->data, x->numel, -1, 2, &r);
    qat_tensor **out = qat_qmodel_forward_all(ctx, qm, x);
    NN(out);
    for (int u2 = 0; u2 < qat_qmodel_num_units(qm); u2++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u2);
        const qat_tensor *t = out[un->last];
        for (size_t i = 0; i < t->numel; i++)
            ck_assert_msg(qat_f16_round(t->data[i]) == t->data[i], "%s[%zu] = %a is not fp16", un->name, i,
                          (double)t->data[i]);
    }
    /* the double-precision evaluation (what the runtime's float ops
     * compute) and the float32 graph differ by at most an fp16 step or two */
    {
        const qat_qunit *lu = qat_qmodel_unit(qm, qat_qmodel_num_units(qm) - 1);
        qat_tensor *yg = out[lu->last];
        OK(qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH));
        qat_tensor *yf = qat_qmodel_forward(ctx, qm, x);
        NN(yf);
        long same = 0;
        float big = 0;
        for (size_t i = 0; i < yg->numel; i++) big = fmaxf(big, fabsf(yg->data[i]));
        for (size_t i = 0; i < yf->numel; i++) {
            same += yf->data[i] == yg->data[i];
            ck_assert_msg(fabsf(yf->data[i] - yg->data[i]) <= 1e-2f * big,
                          "logit %zu: %g vs %g", i, yf->data[i], yg->data[i]);
        }
        ck_assert_int_ge(same, (long)yf->numel / 4);
        OK(qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID));
    }
    /* training: gradients reach every weight */
    qat_ctx_reset(ctx);
    qat_ctx_set_training(ctx, 1);
    x = qat_new(ctx, 4, (int[]){2, 1, 28, 28});
    tu_fill_uniform(x->data, x->numel, -1, 2, &r);
    qat_tensor *y = qat_qmodel_forward(ctx, qm, x);
    NN(y);
    OK(qat_backward(ctx, qat_sum(ctx, y)));
    int n = qat_qmodel_parameters(qm, NULL, 0);
    qat_named_tensor *p = malloc((size_t)n * sizeof *p);
    qat_qmodel_parameters(qm, p, n);
    for (int i = 0; i < n; i++) {
        if (!strstr(p[i].name, "weight")) continue;
        double g = 0;
        for (size_t k = 0; k < p[i].t->numel; k++) g += fabs(p[i].t->grad[k]);
        ck_assert_msg(g > 0, "%s has no gradient", p[i].name);
    }
    free(p);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- whole models: PTQ, integer grid == float32 graph, checkpoint, int8 runtime ---- */

static void calibrate(qat_ctx *ctx, qat_qmodel *qm, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int b = 0; b < 2; b++) {
        qat_tensor *x = qat_new(ctx, 4, (int[]){16, 1, 28, 28});
        NN(x);
        tu_fill_uniform(x->data, x->numel, -0.5f, 2.0f, &r);
        OK(qat_qmodel_calibrate(ctx, qm, x));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
}

static void model_roundtrip(const char *spec)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_model *m = qat_model_build("lenet5", 21);
    NN(m);
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, spec));
    OK(qat_qconfig_add_override(&cfg, "classifier.4=w8a8"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    calibrate(ctx, qm, 22);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 23);
    int N = 32;
    qat_tensor *x = qat_new(ctx, 4, (int[]){N, 1, 28, 28});
    /* pixels, normalised as the runtime's LUT does it */
    uint8_t *px = malloc((size_t)N * 784);
    for (int i = 0; i < N * 784; i++) {
        px[i] = (uint8_t)(qat_rng_uniform(&r) * 256.0f);
        x->data[i] = ((float)px[i] / 255.0f - 0.2860f) / 0.3530f;
    }
    qat_tensor *yg = qat_qmodel_forward(ctx, qm, x);
    NN(yg);
    float *grid = malloc(yg->numel * sizeof *grid);
    memcpy(grid, yg->data, yg->numel * sizeof *grid);
    /* the float32 graph agrees up to boundary cases */
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    qat_tensor *yf = qat_qmodel_forward(ctx, qm, x);
    NN(yf);
    const qat_qunit *last = qat_qmodel_unit(qm, qat_qmodel_num_units(qm) - 1);
    float so = last->act.scale[0];
    long same = 0;
    for (size_t i = 0; i < yf->numel; i++) same += fabsf(yf->data[i] - grid[i]) < 0.5f * so;
    ck_assert_msg(same >= (long)yf->numel * 9 / 10, "%s: float32 graph and grid agree on %ld of %zu", spec, same,
                  yf->numel);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
    /* checkpoint round trip: the same outputs */
    const char *path = tu_tmp_path("wq.h5");
    OK(qat_qcheckpoint_save(path, qm, NULL, NULL, NULL));
    qat_model *m2 = NULL;
    qat_qmodel *qm2 = qat_qmodel_load(path, &m2, NULL, NULL);
    NN(qm2);
    qat_tensor *y2 = qat_qmodel_forward(ctx, qm2, x);
    NN(y2);
    for (size_t i = 0; i < y2->numel; i++) ck_assert_msg(y2->data[i] == grid[i], "%s: reloaded logit %zu differs", spec, i);
    /* the int8 export runs in the runtime with the grid's logits */
    const char *ipath = tu_tmp_path("wq.int8.h5");
    qat_export_opts eo = qat_export_opts_defaults();
    eo.mean = 0.2860f;
    eo.std = 0.3530f;
    OK(qat_export_int8(qm, ipath, &eo));
    qat_rt_model *rt = NULL;
    ck_assert_msg(qat_rt_load_file(ipath, &rt) == QAT_OK, "%s", qat_rt_last_error());
    OK(qat_rt_prepare(rt, N));
    int8_t *lq = malloc((size_t)N * 10);
    OK(qat_rt_run_u8(rt, px, N, lq));
    float os = qat_rt_output_scale(rt);
    int32_t oz = qat_rt_output_zero_point(rt);
    long agree = 0;
    for (int i = 0; i < N * 10; i++) agree += (float)(lq[i] - oz) * os == grid[i];
    ck_assert_msg(agree == N * 10, "%s: runtime equals the grid on %ld of %d logits", spec, agree, N * 10);
    free(lq);
    qat_rt_free(rt);
    qat_qmodel_free(qm2);
    qat_model_free(m2);
    free(grid);
    free(px);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}

START_TEST(test_model_binary) { model_roundtrip("w1a8"); }
END_TEST
START_TEST(test_model_codebook) { model_roundtrip("wc16a8"); }
END_TEST
START_TEST(test_model_hashed) { model_roundtrip("wh64a8"); }
END_TEST

static Suite *wquant_suite(void)
{
    Suite *s = suite_create("wquant");
    TCase *t = tcase_create("formats");
    tcase_add_test(t, test_f16_values);
    tcase_add_test(t, test_bf16_values);
    tcase_add_test(t, test_hash_bucket);
    suite_add_tcase(s, t);
    t = tcase_create("quantizers");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_binary);
    tcase_add_test(t, test_codebook);
    tcase_add_test(t, test_kmeans_determinism);
    tcase_add_test(t, test_hashed);
    tcase_add_test(t, test_fp16_quantizer);
    suite_add_tcase(s, t);
    t = tcase_create("models");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_model_binary);
    tcase_add_test(t, test_model_codebook);
    tcase_add_test(t, test_model_hashed);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wquant_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
