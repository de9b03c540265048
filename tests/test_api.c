/* The public API is enough to write a QAT training script: only <qat.h>
 * here (tests/meson.build links the internal library, but nothing private
 * is included). qat.h's tour runs as written; a few QAT steps at w4a4 with
 * qat_qmodel_parameters() train the learnable scales (and with the float
 * model's list alone they do not move: what examples/train_qat.c did);
 * without qat_qmodel_clamp_params a loop trains bit for bit like `qat
 * train`'s, which calls it after each step. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qat.h"
#include "testutil.h"

#define OK(e)                                                                                  \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());               \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

enum { B = 16, HW = 12 };

/* input 1x12x12 -> conv(6, 3x3, pad 1) -> BN -> ReLU -> maxpool 2 ->
 * conv(8, 3x3) -> ReLU -> flatten -> fc(10) */
static qat_model *small_model(uint64_t seed)
{
    qat_model *m = qat_model_create(1, HW, HW);
    NN(m);
    int x = qat_model_conv2d(m, "conv1", 0, 6, 3, 1, 1, 1);
    x = qat_model_batchnorm2d(m, "bn1", x);
    x = qat_model_relu(m, "relu1", x);
    x = qat_model_maxpool2d(m, "pool", x, 2, 2);
    x = qat_model_conv2d(m, "conv2", x, 8, 3, 1, 0, 1);
    x = qat_model_relu(m, "relu2", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc", x, 10, 1);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(m, seed));
    return m;
}

/* batch b of a fixed random data set: images U(-1, 1), labels < 10 */
static void batch(int b, float *x, uint8_t *y)
{
    qat_rng r;
    qat_rng_seed(&r, 1000 + (uint64_t)b);
    tu_fill_uniform(x, (size_t)B * HW * HW, -1.0f, 1.0f, &r);
    for (int i = 0; i < B; i++) y[i] = (uint8_t)qat_rng_below(&r, 10);
}

/* prepared at spec, calibrated on 4 batches (PTQ start point) */
static qat_qmodel *prepare(qat_ctx *ctx, qat_model *m, const char *spec)
{
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, spec));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qmodel_set_fake_quant(qm, 0);
    float x[B * HW * HW];
    uint8_t y[B];
    for (int b = 0; b < 4; b++) {
        batch(b, x, y);
        OK(qat_qmodel_calibrate(ctx, qm, qat_from(ctx, 4, (int[]){B, 1, HW, HW}, x)));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
    qat_qmodel_set_observers(qm, 1);
    return qm;
}

/* One training step; clamp: call qat_qmodel_clamp_params after it, as
 * `qat train` does. Returns how many learnable scales the optimizer step
 * left below QAT_SCALE_EPS (before any clamp). */
static int step(qat_ctx *ctx, qat_qmodel *qm, qat_optim *opt, int b, int clamp, float *loss_out)
{
    float x[B * HW * HW];
    uint8_t y[B];
    batch(b, x, y);
    qat_ctx_set_training(ctx, 1);
    qat_tensor *xt = qat_from(ctx, 4, (int[]){B, 1, HW, HW}, x);
    qat_tensor *loss = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, xt), y);
    qat_optim_zero_grad(opt);
    OK(qat_backward(ctx, loss));
    OK(qat_optim_step(opt));
    *loss_out = loss->data[0];
    int below = 0;
    const qat_named_tensor *qp = qat_qmodel_params(qm);
    for (int i = 0; i < qat_qmodel_num_params(qm); i++)
        if (strstr(qp[i].name, "_scale"))
            for (size_t k = 0; k < qp[i].t->numel; k++) below += !(qp[i].t->data[k] >= QAT_SCALE_EPS);
    if (clamp) qat_qmodel_clamp_params(qm);
    qat_ctx_reset(ctx);
    return below;
}

static qat_optim *make_optim(const qat_named_tensor *p, int n, double lr)
{
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = lr;
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(p, n, &o);
    NN(opt);
    return opt;
}

/* the learnable quantization parameters' values, concatenated */
static size_t snapshot(const qat_qmodel *qm, float *out)
{
    size_t k = 0;
    for (int i = 0; i < qat_qmodel_num_params(qm); i++) {
        const qat_tensor *t = qat_qmodel_params(qm)[i].t;
        memcpy(out + k, t->data, t->numel * sizeof(float));
        k += t->numel;
    }
    return k;
}

/* qat_qmodel_parameters: the float model's list, then the qmodel's, with
 * their no_decay flags; snprintf's contract. */
START_TEST(test_parameters_list)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_model *m = small_model(1);
    qat_qmodel *qm = prepare(ctx, m, "w4a4");
    int nf = qat_model_num_params(m), nq = qat_qmodel_num_params(qm);
    ck_assert_int_gt(nq, 0);
    int n = qat_qmodel_parameters(qm, NULL, 0);
    ck_assert_int_eq(n, nf + nq);
    qat_named_tensor *p = malloc((size_t)(n + 1) * sizeof *p);
    memset(&p[n], 0x5a, sizeof p[n]);
    ck_assert_int_eq(qat_qmodel_parameters(qm, p, n), n);
    for (int i = 0; i < n; i++) {
        const qat_named_tensor *want = i < nf ? &qat_model_params(m)[i] : &qat_qmodel_params(qm)[i - nf];
        ck_assert_str_eq(p[i].name, want->name);
        ck_assert_ptr_eq(p[i].t, want->t);
        ck_assert_int_eq(p[i].no_decay, want->no_decay);
        if (i >= nf) ck_assert_int_eq(p[i].no_decay, 1);
    }
    ck_assert_str_eq(p[0].name, "conv1.weight");
    ck_assert_int_eq(p[0].no_decay, 0);
    ck_assert_str_eq(p[nf].name, "input.act_scale");
    unsigned char sentinel[sizeof p[n]];
    memset(sentinel, 0x5a, sizeof sentinel);
    ck_assert(!memcmp(&p[n], sentinel, sizeof sentinel)); /* nothing past n */
    /* room for 2: two written, the total returned */
    memset(p, 0, (size_t)n * sizeof *p);
    ck_assert_int_eq(qat_qmodel_parameters(qm, p, 2), n);
    ck_assert_ptr_nonnull(p[1].t);
    ck_assert_ptr_null(p[2].t);
    ck_assert_int_lt(qat_qmodel_parameters(NULL, p, n), 0);
    ck_assert_int_lt(qat_qmodel_parameters(qm, NULL, 3), 0);
    /* the optimizer: weight decay on the float weights only */
    ck_assert_int_eq(qat_qmodel_parameters(qm, p, n), n);
    qat_optim *opt = make_optim(p, n, 0.01);
    free(p);
    for (int i = 0; i < n; i++) {
        const char *name = qat_optim_param(opt, i)->name;
        double wd = qat_optim_param_weight_decay(opt, i);
        int decays = strstr(name, ".weight") && !strstr(name, "bn") && !strstr(name, "scale");
        ck_assert_msg(wd == (decays ? 5e-4 : 0.0), "%s: weight decay %g", name, wd);
    }
    qat_optim_free(opt);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

/* A few QAT steps at w4a4: with qat_model_params only (the old
 * examples/train_qat.c) the learnable scales and zero points stay where
 * calibration put them; with qat_qmodel_parameters every scale moves
 * (and zero points where activations are clipped). */
START_TEST(test_w4a4_scales_train)
{
    float before[256], after[256];
    for (int all = 0; all < 2; all++) {
        qat_ctx *ctx = qat_ctx_create(0);
        qat_model *m = small_model(2);
        qat_qmodel *qm = prepare(ctx, m, "w4a4");
        size_t nv = snapshot(qm, before);
        ck_assert(nv > 0 && nv <= 256);
        qat_optim *opt;
        if (all) {
            int n = qat_qmodel_parameters(qm, NULL, 0);
            qat_named_tensor *p = malloc((size_t)n * sizeof *p);
            qat_qmodel_parameters(qm, p, n);
            opt = make_optim(p, n, 0.01);
            free(p);
        } else {
            opt = make_optim(qat_model_params(m), qat_model_num_params(m), 0.01);
        }
        float loss;
        for (int s = 0; s < 4; s++) step(ctx, qm, opt, s, 0, &loss);
        ck_assert(isfinite(loss));
        snapshot(qm, after);
        if (!all) {
            ck_assert_msg(!memcmp(before, after, nv * sizeof(float)),
                          "learnable parameters moved without being given to the optimizer");
        } else {
            size_t k = 0;
            int zp_moved = 0;
            for (int i = 0; i < qat_qmodel_num_params(qm); i++) {
                const qat_named_tensor *q = &qat_qmodel_params(qm)[i];
                int moved = 0;
                for (size_t j = 0; j < q->t->numel; j++) moved |= before[k + j] != after[k + j];
                /* a zero point only learns from clipped values: the input's
                 * range covers these images, so it may stay */
                if (strstr(q->name, "_scale"))
                    ck_assert_msg(moved, "%s did not move", q->name);
                else
                    zp_moved += moved;
                k += q->t->numel;
            }
            ck_assert_int_gt(zp_moved, 0);
        }
        qat_optim_free(opt);
        qat_qmodel_free(qm);
        qat_model_free(m);
        qat_ctx_free(ctx);
    }
}
END_TEST

/* The LSQ constraint without qat_qmodel_clamp_params: with a learning rate
 * large enough that steps drive scales below zero, a loop that never
 * clamps and one that clamps after every step (`qat train`) give the same
 * losses, parameters and evaluation, bit for bit. */
START_TEST(test_clamp_not_needed)
{
    enum { STEPS = 6 };
    float loss[2][STEPS], eval[2][B * 10];
    int overshoots = 0;
    qat_model *ms[2];
    qat_qmodel *qms[2];
    for (int clamp = 0; clamp < 2; clamp++) {
        qat_ctx *ctx = qat_ctx_create(0);
        qat_model *m = ms[clamp] = small_model(3);
        qat_qmodel *qm = qms[clamp] = prepare(ctx, m, "w4a4");
        int n = qat_qmodel_parameters(qm, NULL, 0), nf = qat_model_num_params(m);
        qat_named_tensor *p = malloc((size_t)n * sizeof *p);
        qat_qmodel_parameters(qm, p, n);
        qat_optim *opt = make_optim(p, n, 0.05);
        free(p);
        /* conv2's weight scales at lr 1.5: steps overshoot below 0 */
        int ws = qat_optim_find(opt, "conv2.weight_scale");
        ck_assert_int_ge(ws, nf);
        OK(qat_optim_set_group(opt, ws, 1, 30.0, -1.0));
        for (int s = 0; s < STEPS; s++) overshoots += step(ctx, qm, opt, s, clamp, &loss[clamp][s]);
        /* evaluation right after the last step (integer grid) */
        float x[B * HW * HW];
        uint8_t y[B];
        batch(99, x, y);
        qat_ctx_set_training(ctx, 0);
        qat_ctx_set_grad(ctx, 0);
        qat_tensor *out = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){B, 1, HW, HW}, x));
        NN(out);
        memcpy(eval[clamp], out->data, sizeof eval[clamp]);
        qat_optim_free(opt);
        qat_ctx_free(ctx);
    }
    ck_assert_msg(overshoots > 0, "no step drove a scale below QAT_SCALE_EPS: the test proves nothing");
    ck_assert(!memcmp(loss[0], loss[1], sizeof loss[0]));
    ck_assert(!memcmp(eval[0], eval[1], sizeof eval[0]));
    int n = qat_qmodel_parameters(qms[0], NULL, 0);
    qat_named_tensor *p0 = malloc((size_t)n * sizeof *p0), *p1 = malloc((size_t)n * sizeof *p1);
    qat_qmodel_parameters(qms[0], p0, n);
    qat_qmodel_parameters(qms[1], p1, n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(!memcmp(p0[i].t->data, p1[i].t->data, p0[i].t->numel * sizeof(float)), "%s differs",
                      p0[i].name);
        if (strstr(p0[i].name, "_scale"))
            for (size_t k = 0; k < p0[i].t->numel; k++) ck_assert(p0[i].t->data[k] >= QAT_SCALE_EPS);
    }
    free(p0);
    free(p1);
    for (int k = 0; k < 2; k++) {
        qat_qmodel_free(qms[k]);
        qat_model_free(ms[k]);
    }
}
END_TEST

/* include/qat.h's tour, as written there (random images). */
START_TEST(test_tour)
{
    enum { TB = 8 };
    float images[TB * 28 * 28];
    uint8_t labels[TB];
    qat_rng r;
    qat_rng_seed(&r, 5);
    tu_fill_uniform(images, sizeof images / sizeof *images, -1, 1, &r);
    for (int i = 0; i < TB; i++) labels[i] = (uint8_t)qat_rng_below(&r, 10);

    qat_model *m = qat_model_create(1, 28, 28);
    int x = qat_model_conv2d(m, "conv", 0, 8, 3, 1, 1, 1);
    x = qat_model_batchnorm2d(m, "bn", x);
    x = qat_model_relu(m, "relu", x);
    x = qat_model_maxpool2d(m, "pool", x, 2, 2);
    x = qat_model_flatten(m, "flat", x);
    qat_model_linear(m, "fc", x, 10, 1);
    OK(qat_model_init(m, 42));

    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *t = qat_from(ctx, 4, (int[]){TB, 1, 28, 28}, images);
    qat_tensor *q = qat_fake_quant_per_tensor(ctx, t, 0.02f, 0, -128, 127);
    NN(q);
    qat_tensor *s = qat_tensor_create(1, (int[]){1}, 1);
    s->data[0] = 0.1f;
    q = qat_fake_quant_lsq(ctx, t, s, NULL, -7, 7, 0);
    NN(q);
    qat_ctx_reset(ctx);

    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w4a4"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int b = 0; b < 2; b++) {
        OK(qat_qmodel_calibrate(ctx, qm, qat_from(ctx, 4, (int[]){TB, 1, 28, 28}, images)));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));

    int n = qat_qmodel_parameters(qm, NULL, 0);
    qat_named_tensor *p = malloc((size_t)n * sizeof *p);
    qat_qmodel_parameters(qm, p, n);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.01;
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(p, n, &o);
    NN(opt);
    free(p);

    qat_tensor *xt = qat_from(ctx, 4, (int[]){TB, 1, 28, 28}, images);
    qat_tensor *loss = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, xt), labels);
    qat_optim_zero_grad(opt);
    OK(qat_backward(ctx, loss));
    OK(qat_optim_step(opt));
    qat_ctx_reset(ctx);

    qat_optim_free(opt);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_tensor_free(s);
    qat_ctx_free(ctx);
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_parameters_list);
    tcase_add_test(tc, test_w4a4_scales_train);
    tcase_add_test(tc, test_clamp_not_needed);
    tcase_add_test(tc, test_tour);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(api_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
