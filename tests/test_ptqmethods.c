/* PTQ methods (qat/ptq.h): cross-layer equalization, empirical bias
 * correction, AdaRound, on small synthetic models and data. */
#include <check.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/ptq.h"
#include "qat/qio.h"
#include "quant/internal.h"
#include "testutil.h"

/* conv(1->8) BN relu conv(8->8) BN relu maxpool conv(8->6, bias) relu
 * flatten linear(216->16) relu linear(16->5), with BN statistics and
 * per-channel weight magnitudes spread over two decades, so the channel
 * ranges differ a lot. Deterministic from seed. */
static void spread(qat_model *m, uint64_t seed, float decades);

static qat_model *make_model(uint64_t seed)
{
    qat_model *m = qat_model_create(1, 12, 12);
    int x = qat_model_conv2d(m, "c1", 0, 8, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, "bn1", x);
    x = qat_model_relu(m, "r1", x);
    x = qat_model_conv2d(m, "c2", x, 8, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, "bn2", x);
    x = qat_model_relu(m, "r2", x);
    x = qat_model_maxpool2d(m, "mp", x, 2, 2);
    x = qat_model_conv2d(m, "c3", x, 6, 3, 1, 1, 1);
    x = qat_model_relu(m, "r3", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc1", x, 16, 1);
    x = qat_model_relu(m, "r4", x);
    x = qat_model_linear(m, "fc2", x, 5, 1);
    ck_assert_int_ge(x, 0);
    ck_assert_int_eq(qat_model_init(m, seed), QAT_OK);
    spread(m, seed, 2.0f);
    return m;
}

/* per-channel weight magnitudes over two decades, random BN statistics */
static void spread(qat_model *m, uint64_t seed, float decades)
{
    qat_rng r;
    qat_rng_seed(&r, seed + 1);
    for (int i = 1; i < qat_model_num_layers(m); i++) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type == QAT_LAYER_CONV2D || l->type == QAT_LAYER_LINEAR) {
            size_t per = l->weight->numel / (size_t)l->out_ch;
            for (int c = 0; c < l->out_ch; c++) {
                float f = powf(10.0f, decades * (qat_rng_uniform(&r) - 0.5f));
                for (size_t k = 0; k < per; k++) l->weight->data[(size_t)c * per + k] *= f;
            }
            if (l->bias)
                for (int c = 0; c < l->out_ch; c++) l->bias->data[c] = 0.2f * (qat_rng_uniform(&r) - 0.5f);
        } else if (l->type == QAT_LAYER_BATCHNORM2D) {
            for (int c = 0; c < l->out_ch; c++) {
                l->weight->data[c] = 0.3f + 2.0f * qat_rng_uniform(&r);
                l->bias->data[c] = qat_rng_uniform(&r) - 0.3f;
                l->running_mean->data[c] = qat_rng_uniform(&r) - 0.5f;
                l->running_var->data[c] = 0.05f + qat_rng_uniform(&r);
            }
        }
    }
}

static qat_tensor *make_input(int n, uint64_t seed)
{
    qat_tensor *x = qat_tensor_create(4, (int[]){n, 1, 12, 12}, 0);
    qat_rng r;
    qat_rng_seed(&r, seed);
    tu_fill_uniform(x->data, x->numel, -1.5f, 2.0f, &r);
    return x;
}

/* the model's output on x, copied */
static float *run(qat_model *m, const qat_tensor *x, size_t *n)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *xi = qat_new_leaf(ctx, 4, x->shape, x->data);
    qat_tensor *y = qat_model_forward(ctx, m, xi);
    ck_assert_ptr_nonnull(y);
    float *out = malloc(y->numel * sizeof *out);
    memcpy(out, y->data, y->numel * sizeof *out);
    *n = y->numel;
    qat_ctx_free(ctx);
    return out;
}

START_TEST(test_cle_output_unchanged)
{
    qat_model *m = make_model(11);
    qat_tensor *x = make_input(4, 12);
    size_t n0, n1;
    float *y0 = run(m, x, &n0);
    ck_assert_int_eq(qat_cle_fold_bn(m), 2);
    float *yf = run(m, x, &n1);
    ck_assert_int_eq(qat_cle_pairs(m, NULL, NULL, 0), 4); /* c1-c2, c2-c3 (maxpool), c3-fc1 (flatten), fc1-fc2 */
    qat_cle_report rep;
    ck_assert_int_eq(qat_cle_equalize(m, NULL, &rep), QAT_OK);
    ck_assert_int_eq(rep.pairs, 4);
    ck_assert(rep.max_dev <= 1e-6);
    ck_assert_int_gt(rep.sweeps, 1);
    float *y1 = run(m, x, &n1);
    ck_assert_uint_eq(n0, n1);
    double mx = 0, dfold = 0, dcle = 0;
    for (size_t i = 0; i < n0; i++) {
        mx = fmax(mx, fabs(y0[i]));
        dfold = fmax(dfold, fabs(yf[i] - y0[i]));
        dcle = fmax(dcle, fabs(y1[i] - y0[i]));
    }
    ck_assert(mx > 0.1);
    ck_assert_msg(dfold <= 1e-5 * mx, "BN fold changed the output by %g (max %g)", dfold, mx);
    ck_assert_msg(dcle <= 1e-5 * mx, "CLE changed the output by %g (max %g)", dcle, mx);
    /* the folded BN is a pure bias: sigma exactly 1 */
    const qat_layer *bn = qat_model_layer_c(m, qat_model_find(m, "bn1"));
    for (int c = 0; c < bn->out_ch; c++) {
        ck_assert(bn->weight->data[c] == 1.0f && bn->running_mean->data[c] == 0.0f);
        ck_assert(1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps) == 1.0f);
    }
    free(y0);
    free(yf);
    free(y1);
    qat_tensor_free(x);
    qat_model_free(m);
}
END_TEST

/* max over channels of |log(r1/r2)| of every pair */
static double imbalance(const qat_model *m)
{
    int first[64], second[64], np = qat_cle_pairs(m, first, second, 64);
    ck_assert_int_le(np, 64);
    double worst = 0;
    for (int p = 0; p < np; p++) {
        float r1[512], r2[512];
        ck_assert_int_eq(qat_cle_ranges(m, first[p], second[p], r1, r2), QAT_OK);
        for (int c = 0; c < qat_model_layer_c(m, first[p])->out_ch; c++) {
            ck_assert(r1[c] > 0 && r2[c] > 0);
            worst = fmax(worst, fabs(log((double)r1[c] / r2[c])));
        }
    }
    return worst;
}

START_TEST(test_cle_equalizes_ranges)
{
    qat_model *m = make_model(21);
    ck_assert_int_eq(qat_cle_fold_bn(m), 2);
    double before = imbalance(m);
    ck_assert_msg(before > 1.0, "the test model is already balanced (%g)", before);
    ck_assert_int_eq(qat_cle_equalize(m, NULL, NULL), QAT_OK);
    double after = imbalance(m);
    /* the fixed point: r1_c = r2_c for every pair */
    ck_assert_msg(after < 1e-4, "ranges differ by a factor exp(%g) after CLE", after);
    /* the ranges of the flatten pair are over the channel's whole column block */
    int c3 = qat_model_find(m, "c3"), fc1 = qat_model_find(m, "fc1");
    float r1[6], r2[6];
    ck_assert_int_eq(qat_cle_ranges(m, c3, fc1, r1, r2), QAT_OK);
    const qat_layer *l = qat_model_layer_c(m, fc1);
    for (int c = 0; c < 6; c++) {
        float mx = 0;
        for (int o = 0; o < l->out_ch; o++)
            for (int k = 0; k < 36; k++) mx = fmaxf(mx, fabsf(l->weight->data[(size_t)o * 216 + c * 36 + k]));
        ck_assert(mx == r2[c]);
    }
    qat_model_free(m);
}
END_TEST

/* MobileNet (pw -> dw -> pw with ReLU6, linear bottlenecks): CLE through
 * depthwise convs and clamps leaves the function unchanged and equalizes. */
START_TEST(test_cle_mobilenet)
{
    qat_model *m = qat_model_build("mobilenet", 61);
    ck_assert_ptr_nonnull(m);
    /* one decade: with two, float32 rounding alone (BN folding) moves
     * this deep random network's output by 3e-5 of its range */
    spread(m, 61, 1.0f);
    qat_tensor *x = qat_tensor_create(4, (int[]){2, 1, 28, 28}, 0);
    qat_rng r;
    qat_rng_seed(&r, 62);
    tu_fill_uniform(x->data, x->numel, -1.0f, 2.0f, &r);
    size_t n0, n1;
    float *y0 = run(m, x, &n0);
    ck_assert_int_gt(qat_cle_fold_bn(m), 20);
    {
        size_t nf;
        float *yf = run(m, x, &nf);
        double mxf = 0, df = 0;
        for (size_t i = 0; i < n0; i++) {
            mxf = fmax(mxf, fabs(y0[i]));
            df = fmax(df, fabs(yf[i] - y0[i]));
        }
        ck_assert_msg(df <= 1e-5 * mxf, "BN folding changed mobilenet's output by %g (max %g)", df, mxf);
        free(yf);
    }
    int first[64], second[64], np = qat_cle_pairs(m, first, second, 64), dw_second = 0, dw_first = 0;
    for (int p = 0; p < np; p++) {
        dw_second += qat_model_layer_c(m, second[p])->groups > 1;
        dw_first += qat_model_layer_c(m, first[p])->groups > 1;
    }
    ck_assert_int_ge(dw_second, 6); /* expand -> dw */
    ck_assert_int_ge(dw_first, 7);  /* dw -> project */
    double before = imbalance(m);
    ck_assert(before > 1.0);
    ck_assert_int_eq(qat_cle_equalize(m, NULL, NULL), QAT_OK);
    ck_assert(imbalance(m) < 1e-4);
    int clamps = 0;
    for (int i = 0; i < qat_model_num_layers(m); i++) clamps += qat_model_layer_c(m, i)->clamp_hi_c != NULL;
    ck_assert_int_ge(clamps, 13); /* every ReLU6 between two convs got per-channel bounds */
    float *y1 = run(m, x, &n1);
    double mx = 0, d = 0;
    for (size_t i = 0; i < n0; i++) {
        mx = fmax(mx, fabs(y0[i]));
        d = fmax(d, fabs(y1[i] - y0[i]));
    }
    ck_assert(mx > 0.01);
    ck_assert_msg(d <= 1e-5 * mx, "CLE changed mobilenet's output by %g (max %g)", d, mx);
    free(y0);
    free(y1);
    qat_tensor_free(x);
    qat_model_free(m);
}
END_TEST

static qat_qmodel *calibrated(qat_model *m, const char *spec, const qat_tensor *x)
{
    qat_qconfig cfg;
    ck_assert_int_eq(qat_qconfig_init(&cfg, spec), QAT_OK);
    qat_qconfig_set_calibrator(&cfg, QAT_CALIBRATOR_MINMAX);
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    ck_assert_ptr_nonnull(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_qmodel_set_observers(qm, 1);
    ck_assert_int_eq(qat_qmodel_calibrate(ctx, qm, qat_new_leaf(ctx, 4, x->shape, x->data)), QAT_OK);
    ck_assert_int_eq(qat_qmodel_finalize(qm), QAT_OK);
    qat_ctx_free(ctx);
    return qm;
}

/* Per unit u and channel c: E[quantized pre-activation] - E[reference
 * pre-activation] over x (float32 graph), and the reference RMS. */
static void mean_errors(qat_qmodel *qm, qat_model *ref, const qat_tensor *x, double *err, double *rms, int *bound_c,
                        double *bound)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    qat_tensor **fo = qat_model_forward_all(ctx, ref, qat_new_leaf(ctx, 4, x->shape, x->data));
    ck_assert_ptr_nonnull(fo);
    int k = 0;
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        if (un->kind != QAT_UNIT_CONV) continue;
        int fq = un->act.fake_quant;
        un->act.fake_quant = 0;
        qat_tensor **qo = qat_qmodel_forward_all(ctx, qm, qat_new_leaf(ctx, 4, x->shape, x->data));
        un->act.fake_quant = fq;
        ck_assert_ptr_nonnull(qo);
        const qat_tensor *q = qo[un->head], *f = fo[un->bn >= 0 ? un->bn : un->head];
        ck_assert_uint_eq(q->numel, f->numel);
        int N = q->shape[0], C = q->shape[1];
        size_t inner = q->numel / ((size_t)N * C);
        const float *sw = qat_channel_weight_scales(ctx, &un->weight, C);
        float s_in = qat_qunit_input_scale(qm, un);
        for (int c = 0; c < C; c++, k++) {
            double d = 0, ss = 0;
            for (int n = 0; n < N; n++)
                for (size_t i = 0; i < inner; i++) {
                    size_t o = ((size_t)n * C + c) * inner + i;
                    d += (double)q->data[o] - f->data[o];
                    ss += (double)f->data[o] * f->data[o];
                }
            err[k] = d / ((double)N * inner);
            rms[k] = sqrt(ss / ((double)N * inner));
            bound[k] = 0.5 * (double)s_in * sw[c]; /* the bias's own grid */
        }
    }
    *bound_c = k;
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
    qat_ctx_free(ctx);
}

START_TEST(test_bias_correction_zeroes_mean_error)
{
    qat_model *m = make_model(31), *ref = make_model(31);
    qat_tensor *x = make_input(32, 32);
    qat_qmodel *qm = calibrated(m, "w4a8", x);
    double e0[64], r0[64], b0[64], e1[64], r1[64], b1[64];
    int n0, n1;
    mean_errors(qm, ref, x, e0, r0, &n0, b0);
    qat_biascorr_report rep;
    ck_assert_int_eq(qat_bias_correct(qm, NULL, x, 8, &rep), QAT_OK);
    ck_assert_int_eq(rep.n, 5);
    mean_errors(qm, ref, x, e1, r1, &n1, b1);
    ck_assert_int_eq(n0, n1);
    int big = 0;
    for (int k = 0; k < n1; k++) {
        double tol = 1e-4 * r1[k] + b1[k];
        big += fabs(e0[k]) > 10 * tol;
        ck_assert_msg(fabs(e1[k]) <= tol, "channel %d: mean error %g after correction (was %g, rms %g, bias grid %g)", k,
                      e1[k], e0[k], r1[k], b1[k]);
    }
    ck_assert_msg(big >= 5, "only %d channels had a mean error worth correcting", big);
    /* with a snapshot as the reference the float model may differ: the same result */
    qat_qmodel_free(qm);
    qat_tensor_free(x);
    qat_model_free(m);
    qat_model_free(ref);
}
END_TEST

START_TEST(test_clipped_normal_mean)
{
    qat_rng r;
    qat_rng_seed(&r, 81);
    const double cases[][4] = {{0.3, 1.2, 0, INFINITY}, {-0.5, 0.7, 0, 6}, {4.0, 2.5, 0, 6}, {1.0, 2.0, -INFINITY, INFINITY}};
    for (int k = 0; k < 4; k++) {
        double sum = 0;
        const int n = 400000;
        for (int i = 0; i < n; i++) {
            double z = cases[k][0] + cases[k][1] * qat_rng_normal(&r);
            sum += z < cases[k][2] ? cases[k][2] : z > cases[k][3] ? cases[k][3] : z;
        }
        double e = qat_clipped_normal_mean(cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
        ck_assert_msg(fabs(e - sum / n) < 0.01 * cases[k][1], "case %d: %g, Monte Carlo %g", k, e, sum / n);
    }
    ck_assert(qat_clipped_normal_mean(7, 0, 0, 6) == 6);
}
END_TEST

/* Analytic correction of c2 (its input: BN1 through a ReLU): the bias moves
 * by -(W_q - W) E[x], E[x] integrated numerically over N(beta, gamma^2). */
START_TEST(test_bias_correction_analytic)
{
    qat_model *m = make_model(71);
    qat_tensor *x = make_input(16, 72);
    qat_qmodel *qm = calibrated(m, "w4a8", x);
    const qat_layer *bn1 = qat_model_layer_c(m, qat_model_find(m, "bn1")), *c2 = qat_model_layer_c(m, qat_model_find(m, "c2"));
    const qat_layer *bn2 = qat_model_layer_c(m, qat_model_find(m, "bn2"));
    double ex[8];
    for (int c = 0; c < 8; c++) { /* E[relu(z)], z ~ N(beta, gamma^2), by the midpoint rule over +-12 sigma */
        double mu = bn1->bias->data[c], sg = fabs(bn1->weight->data[c]), sum = 0, h = 24 * sg / 400000;
        for (int i = 0; i < 400000; i++) {
            double z = mu - 12 * sg + (i + 0.5) * h;
            sum += fmax(0.0, z) * exp(-0.5 * (z - mu) * (z - mu) / (sg * sg)) / (sg * sqrt(2 * 3.14159265358979323846)) * h;
        }
        ex[c] = sum;
    }
    /* the folded weight and its nearest rounding, by hand */
    int u = qat_qmodel_find_unit(qm, "c2");
    qat_qunit *un = qat_qmodel_unit(qm, u);
    const float *sc = qat_quantizer_scales(&un->weight);
    double want[8], before[8];
    for (int c = 0; c < 8; c++) {
        float sf = bn2->weight->data[c] * (1.0f / sqrtf(bn2->running_var->data[c] + bn2->bn_eps));
        float s = sc[un->weight.n > 1 ? c : 0], inv = 1.0f / s;
        want[c] = 0;
        for (int i = 0; i < 8; i++)
            for (int k = 0; k < 9; k++) {
                float w = c2->weight->data[(c * 8 + i) * 9 + k] * sf;
                float q = fminf(fmaxf(nearbyintf(w * inv), (float)un->weight.qmin), (float)un->weight.qmax) * s;
                want[c] += ((double)q - w) * ex[i];
            }
        before[c] = bn2->bias->data[c];
    }
    ck_assert_int_eq(qat_bias_correct_analytic(qm), 1); /* c2 only: c1 reads the image, c3 a max-pool */
    double big = 0;
    for (int c = 0; c < 8; c++) {
        double got = before[c] - bn2->bias->data[c];
        big = fmax(big, fabs(want[c]));
        ck_assert_msg(fabs(got - want[c]) <= 1e-3 * fabs(want[c]) + 1e-6, "channel %d: %g, expected %g", c, got, want[c]);
    }
    ck_assert(big > 1e-3);
    qat_qmodel_free(qm);
    /* after CLE the BN statistics are gone: nothing to correct */
    qat_cle_fold_bn(m);
    qm = calibrated(m, "w4a8", x);
    ck_assert_int_eq(qat_bias_correct_analytic(qm), 0);
    qat_qmodel_free(qm);
    qat_tensor_free(x);
    qat_model_free(m);
}
END_TEST

/* nearest integer weights of every eligible unit, flattened */
static int32_t *nearest_ints(qat_qmodel *qm, size_t *n, int on_grid)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_grad(ctx, 0);
    int32_t *q = NULL;
    *n = 0;
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        if (un->kind != QAT_UNIT_CONV) continue;
        qat_tensor *w, *b;
        ck_assert_int_eq(qat_qunit_fold(ctx, qm, un, &w, &b), QAT_OK);
        int C = qat_model_layer_c(qat_qmodel_float(qm), un->head)->out_ch;
        const float *s = qat_channel_weight_scales(ctx, &un->weight, C);
        q = realloc(q, (*n + w->numel) * sizeof *q);
        size_t per = w->numel / (size_t)C;
        for (size_t i = 0; i < w->numel; i++) {
            float inv = 1.0f / s[i / per], t = w->data[i] * inv;
            long v = lrintf(t);
            v = v < un->weight.qmin ? un->weight.qmin : v > un->weight.qmax ? un->weight.qmax : v;
            q[*n + i] = (int32_t)v;
            /* the stored weight sits on its grid point (to float rounding) */
            if (on_grid) ck_assert(fabsf(t - (float)v) < 1e-3f || fabsf(t) > (float)un->weight.qmax);
        }
        *n += w->numel;
    }
    qat_ctx_free(ctx);
    return q;
}

/* pre-activation MSE of conv unit k (in order) vs the reference */
static double unit_mse(qat_qmodel *qm, qat_model *ref, const qat_tensor *x, int k)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    qat_tensor **fo = qat_model_forward_all(ctx, ref, qat_new_leaf(ctx, 4, x->shape, x->data));
    qat_tensor **qo = qat_qmodel_forward_all(ctx, qm, qat_new_leaf(ctx, 4, x->shape, x->data));
    qat_qunit *un = NULL;
    for (int u = 0; u < qat_qmodel_num_units(qm) && !un; u++)
        if (qat_qmodel_unit(qm, u)->kind == QAT_UNIT_CONV && k-- == 0) un = qat_qmodel_unit(qm, u);
    const qat_tensor *q = qo[un->head], *f = fo[un->bn >= 0 ? un->bn : un->head];
    double e = 0;
    for (size_t i = 0; i < q->numel; i++) e += ((double)q->data[i] - f->data[i]) * ((double)q->data[i] - f->data[i]);
    e /= (double)q->numel;
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
    qat_ctx_free(ctx);
    return e;
}

static qat_adaround_opts test_opts(void)
{
    qat_adaround_opts o = qat_adaround_opts_defaults();
    o.iters = 400;
    o.batch_rows = 256;
    o.lr = 1e-2f;
    o.seed = 5;
    return o;
}

START_TEST(test_adaround)
{
    qat_model *m = make_model(41), *ref = make_model(41);
    qat_tensor *x = make_input(16, 42);
    qat_qmodel *qm = calibrated(m, "w4a8", x);
    size_t n0, n1;
    int32_t *q0 = nearest_ints(qm, &n0, 0); /* before: nearest rounding of the float weights */
    double mse0 = unit_mse(qm, ref, x, 0), mse0_fc1 = unit_mse(qm, ref, x, 3);
    qat_adaround_opts o = test_opts();
    qat_adaround_report rep;
    ck_assert_int_eq(qat_adaround(qm, NULL, x, &o, &rep), QAT_OK);
    ck_assert_int_eq(rep.n, 5);
    long flipped = 0;
    if (getenv("PTQ_TEST_VERBOSE"))
        for (int k = 0; k < rep.n; k++)
            fprintf(stderr, "%s: nearest %g adaround %g flipped %ld/%ld\n", rep.layers[k].name, rep.layers[k].mse_nearest,
                    rep.layers[k].mse_adaround, rep.layers[k].flipped, rep.layers[k].weights);
    int better = 0;
    for (int k = 0; k < rep.n; k++) {
        ck_assert_msg(rep.layers[k].mse_adaround <= rep.layers[k].mse_nearest, "%s: MSE %g, nearest %g",
                      rep.layers[k].name, rep.layers[k].mse_adaround, rep.layers[k].mse_nearest);
        better += rep.layers[k].mse_adaround < 0.95 * rep.layers[k].mse_nearest;
        ck_assert(!rep.layers[k].kept_nearest || rep.layers[k].flipped == 0);
        flipped += rep.layers[k].flipped;
    }
    ck_assert_int_ge(better, 3);
    ck_assert_int_gt(flipped, 0);
    int32_t *q1 = nearest_ints(qm, &n1, 1); /* after: the stored weights are on the grid */
    ck_assert_uint_eq(n0, n1);
    long moved = 0;
    for (size_t i = 0; i < n0; i++) {
        ck_assert_msg(abs(q1[i] - q0[i]) <= 1, "weight %zu moved from %d to %d", i, q0[i], q1[i]);
        moved += q1[i] != q0[i];
    }
    ck_assert_int_eq(moved, flipped); /* the quantizer's rounding gives AdaRound's choice */
    /* independently: the first unit (same input) and fc1 (inputs from the rounded units) */
    double mse1 = unit_mse(qm, ref, x, 0), mse1_fc1 = unit_mse(qm, ref, x, 3);
    ck_assert_msg(mse1 <= mse0 * (1 + 1e-9), "first unit's output MSE %g, nearest %g", mse1, mse0);
    ck_assert(fabs(mse1 - rep.layers[0].mse_adaround) <= 1e-3 * mse1 + 1e-9);
    ck_assert_msg(mse1_fc1 < 0.8 * mse0_fc1, "fc1's output MSE %g, nearest %g", mse1_fc1, mse0_fc1);
    /* deterministic: the same seed, the same weights */
    qat_model *m2 = make_model(41);
    qat_qmodel *qm2 = calibrated(m2, "w4a8", x);
    ck_assert_int_eq(qat_adaround(qm2, NULL, x, &o, NULL), QAT_OK);
    for (int i = 1; i < qat_model_num_layers(m); i++) {
        const qat_layer *a = qat_model_layer_c(m, i), *b = qat_model_layer_c(m2, i);
        if (a->weight) ck_assert(!memcmp(a->weight->data, b->weight->data, a->weight->numel * sizeof(float)));
    }
    free(q0);
    free(q1);
    qat_qmodel_free(qm2);
    qat_model_free(m2);
    qat_qmodel_free(qm);
    qat_tensor_free(x);
    qat_model_free(m);
    qat_model_free(ref);
}
END_TEST

/* A snapshot reference: the model may be changed before (CLE) and the
 * float reference is what the snapshot holds. */
START_TEST(test_snapshot_reference)
{
    qat_model *m = make_model(51), *ref = make_model(51);
    qat_tensor *x = make_input(16, 52);
    qat_cle_fold_bn(m);
    qat_cle_equalize(m, NULL, NULL);
    qat_cle_fold_bn(ref);
    qat_cle_equalize(ref, NULL, NULL);
    qat_model_snapshot *snap = qat_model_snapshot_take(m);
    qat_qmodel *qm = calibrated(m, "w4a8", x);
    qat_adaround_opts o = test_opts();
    o.iters = 100;
    ck_assert_int_eq(qat_adaround(qm, snap, x, &o, NULL), QAT_OK);
    /* the model changed; swapping restores the snapshot's values and back */
    const qat_layer *c1 = qat_model_layer_c(m, qat_model_find(m, "c1")), *r1 = qat_model_layer_c(ref, qat_model_find(ref, "c1"));
    ck_assert(memcmp(c1->weight->data, r1->weight->data, c1->weight->numel * sizeof(float)) != 0);
    ck_assert_int_eq(qat_model_snapshot_swap(snap, m), QAT_OK);
    ck_assert(!memcmp(c1->weight->data, r1->weight->data, c1->weight->numel * sizeof(float)));
    ck_assert_int_eq(qat_model_snapshot_swap(snap, m), QAT_OK);
    /* bias correction with the snapshot as the reference zeroes the mean error vs ref */
    ck_assert_int_eq(qat_bias_correct(qm, snap, x, 8, NULL), QAT_OK);
    double e[64], r[64], b[64];
    int n;
    mean_errors(qm, ref, x, e, r, &n, b);
    for (int k = 0; k < n; k++) ck_assert_msg(fabs(e[k]) <= 1e-4 * r[k] + b[k], "channel %d: %g", k, e[k]);
    /* a model with other tensors is refused */
    qat_model *other = qat_model_build("lenet5", 1);
    ck_assert_int_ne(qat_model_snapshot_swap(snap, other), QAT_OK);
    qat_model_free(other);
    qat_model_snapshot_free(snap);
    qat_qmodel_free(qm);
    qat_tensor_free(x);
    qat_model_free(m);
    qat_model_free(ref);
}
END_TEST

/* ---- `qat ptq --cle --adaround --bias-correction` (QAT_EXE) ---- */

static int qat_cmd(const char *args, const char *out)
{
    const char *exe = getenv("QAT_EXE");
    ck_assert_msg(exe && *exe, "QAT_EXE is not set (tests/meson.build sets it)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' ptq --data '%s' --val 100 --limit-test 200 --threads 1 %s >'%s' 2>'%s.err'", exe,
             tu_data_path("fashion-mnist-small"), args, out, out);
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static char *slurp(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

START_TEST(test_tool)
{
    qat_model *m = qat_model_build("convnet", 3);
    spread(m, 3, 1.0f);
    qat_model_set_input_norm(m, 0.2860f, 0.3530f);
    char f[256], p[256], o[256], args[1024];
    snprintf(f, sizeof f, "%s", tu_tmp_path("float.h5"));
    snprintf(p, sizeof p, "%s", tu_tmp_path("ptq.h5"));
    snprintf(o, sizeof o, "%s", tu_tmp_path("ptq.json"));
    ck_assert_int_eq(qat_checkpoint_save(f, m, NULL, NULL), QAT_OK);
    qat_model_free(m);
    snprintf(args, sizeof args,
             "--from '%s' --quant w4a8 --cle --adaround --adaround-iters 30 --adaround-images 32 --bias-correction "
             "--bc-images 32 --calib-size 64 --seed 4 --json --out '%s'",
             f, p);
    char err[300];
    snprintf(err, sizeof err, "%s.err", o);
    ck_assert_msg(qat_cmd(args, o) == 0, "%s", slurp(err));
    const char *js = slurp(o);
    ck_assert_msg(strstr(js, "\"ptq_methods\":\"cle+adaround+bc\"") && strstr(js, "\"adaround_units\"") &&
                      strstr(js, "\"bias_correction_units\""),
                  "%s", js);
    ck_assert_msg(strstr(slurp(err), "adaround features.0"), "no AdaRound progress line");
    /* the attribute */
    hid_t h = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(h >= 0);
    hid_t a = H5Aopen_by_name(h, "/quant", "ptq_methods", H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0);
    hid_t t = H5Aget_type(a);
    char *v = NULL;
    ck_assert(H5Tis_variable_str(t) > 0);
    ck_assert(H5Aread(a, t, &v) >= 0);
    ck_assert_str_eq(v, "cle+adaround+bc");
    H5free_memory(v);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(h);
    /* the checkpoint: BN folded by CLE, AdaRound's weights on their grid */
    qat_model *fm = NULL;
    qat_qmodel *qm = qat_qmodel_load(p, &fm, NULL, NULL);
    ck_assert_ptr_nonnull(qm);
    const qat_layer *bn = qat_model_layer_c(fm, qat_model_find(fm, "features.1"));
    ck_assert(bn->weight->data[0] == 1.0f && bn->running_mean->data[0] == 0.0f);
    size_t n;
    free(nearest_ints(qm, &n, 1));
    ck_assert_uint_gt(n, 1000);
    qat_qmodel_free(qm);
    qat_model_free(fm);
    /* refused combinations */
    snprintf(args, sizeof args, "--from '%s' --quant w8a8 --bias-correction --bias-correction-analytic", f);
    ck_assert_int_eq(qat_cmd(args, o), 2);
    snprintf(args, sizeof args, "--from '%s' --quant w8 --dynamic --cle", f);
    ck_assert_int_eq(qat_cmd(args, o), 2);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ptqmethods");
    TCase *t = tcase_create("ptqmethods");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, test_cle_output_unchanged);
    tcase_add_test(t, test_cle_equalizes_ranges);
    tcase_add_test(t, test_cle_mobilenet);
    tcase_add_test(t, test_bias_correction_zeroes_mean_error);
    tcase_add_test(t, test_clipped_normal_mean);
    tcase_add_test(t, test_bias_correction_analytic);
    tcase_add_test(t, test_adaround);
    tcase_add_test(t, test_snapshot_reference);
    tcase_add_test(t, test_tool);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
