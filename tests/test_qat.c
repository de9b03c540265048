/* The quantization layer (include/qat/quant.h, qio.h): unit grouping on the
 * reference models, BN folding against the float model, the fake-quant
 * forward recomputed by hand, gradients (the folding graph by finite
 * differences, the STE and LSQ rules exactly), switches, PTQ with every
 * calibrator on a trained LeNet-5, per-layer error metrics, and QAT
 * checkpoints (exact reload, corrupted files). */
#include <check.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/data.h"
#include "qat/io.h"
#include "qat/optim.h"
#include "qat/qio.h"
#include "quant/internal.h"
#include "qat/quant.h"
#include "quant/fakequant.h"
#include "quant/internal.h"
#include "runtime/rounding.h"
#include "testutil.h"

#define OK(e)                                                                                  \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());               \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

/* ---- helpers ---- */

static float max_abs(const float *a, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i]));
    return m;
}

/* max |a - b| <= rtol * max |a| (relative to the tensor's magnitude) */
static void assert_close_rel(const float *a, const float *b, size_t n, double rtol, const char *what)
{
    double scale = fmax(max_abs(a, n), 1e-30), worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst) worst = d, wi = i;
    }
    ck_assert_msg(worst <= rtol * scale, "%s: element %zu: %.9g vs %.9g (max |diff| %.3g > %.1g * %.3g)", what, wi,
                  a[wi], b[wi], worst, rtol, scale);
}

static void fill_tensor(qat_tensor *t, float lo, float hi, qat_rng *r) { tu_fill_uniform(t->data, t->numel, lo, hi, r); }

/* Random, non-trivial BN parameters and running statistics (gamma of both
 * signs, |gamma| in [0.5, 1.5]). */
static void randomize_bn(qat_model *m, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type != QAT_LAYER_BATCHNORM2D) continue;
        for (int c = 0; c < l->out_ch; c++) {
            float g = 0.5f + qat_rng_uniform(&r);
            l->weight->data[c] = qat_rng_uniform(&r) < 0.3f ? -g : g;
            l->bias->data[c] = qat_rng_uniform(&r) - 0.5f;
            l->running_mean->data[c] = 0.8f * qat_rng_uniform(&r) - 0.4f;
            l->running_var->data[c] = 0.2f + 1.8f * qat_rng_uniform(&r);
        }
    }
}

/* input 3x8x8 -> c1 conv(4, k3, p1, bias) b1 r1 -> c2 conv(5, k3, s2, p1) b2
 * -> flatten -> fc linear(3) */
static qat_model *convbn_model(uint64_t seed)
{
    qat_model *m = qat_model_create(3, 8, 8);
    NN(m);
    int x = qat_model_conv2d(m, "c1", 0, 4, 3, 1, 1, 1);
    x = qat_model_batchnorm2d(m, "b1", x);
    x = qat_model_relu(m, "r1", x);
    x = qat_model_conv2d(m, "c2", x, 5, 3, 2, 1, 0);
    x = qat_model_batchnorm2d(m, "b2", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc", x, 3, 1);
    ck_assert_msg(x == 7, "convbn_model: %d: %s", x, qat_last_error());
    OK(qat_model_init(m, seed));
    randomize_bn(m, seed + 1);
    return m;
}

/* input 1x5x5 -> conv(2, k3, bias) -> relu -> flatten -> fc linear(3, bias) */
static qat_model *tiny_model(uint64_t seed)
{
    qat_model *m = qat_model_create(1, 5, 5);
    NN(m);
    int x = qat_model_conv2d(m, "conv", 0, 2, 3, 1, 0, 1);
    x = qat_model_relu(m, "relu", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc", x, 3, 1);
    ck_assert_int_eq(x, 4);
    OK(qat_model_init(m, seed));
    return m;
}

static qat_qmodel *prepare(qat_model *m, const char *spec, int calib)
{
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, spec));
    if (calib >= 0) qat_qconfig_set_calibrator(&cfg, (qat_calibrator)calib);
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    return qm;
}

/* PTQ on random data: fake-quant off, `batches` calibration batches of n
 * images U(-1, 1.5), finalize. */
static void calibrate_random(qat_ctx *ctx, qat_qmodel *qm, int n, int batches, uint64_t seed)
{
    const qat_layer *in = qat_model_layer_c(qat_qmodel_float(qm), 0);
    qat_rng r;
    qat_rng_seed(&r, seed);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int b = 0; b < batches; b++) {
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, in->out_shape[0], in->out_shape[1], in->out_shape[2]});
        NN(x);
        fill_tensor(x, -1.0f, 1.5f, &r);
        OK(qat_qmodel_calibrate(ctx, qm, x));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
}

static qat_tensor *random_input(qat_ctx *ctx, const qat_model *m, int n, float lo, float hi, qat_rng *r)
{
    const qat_layer *in = qat_model_layer_c(m, 0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){n, in->out_shape[0], in->out_shape[1], in->out_shape[2]});
    NN(x);
    fill_tensor(x, lo, hi, r);
    return x;
}

/* Fake-quantize one value as docs/QUANT.md §2 says, with libm's nearbyintf
 * (independent of the kernels' implementation). */
static float fq_ref(float x, float s, int32_t zp, int32_t qmin, int32_t qmax, int *inside)
{
    float inv = 1.0f / s;
    float r = nearbyintf(x * inv);
    double qu = (double)zp + (double)r;
    if (inside) *inside = qu >= qmin && qu <= qmax;
    if (qu < qmin) qu = qmin;
    if (qu > qmax) qu = qmax;
    return (float)((int32_t)qu - zp) * s;
}

/* |x*inv_s - (k + 1/2)| small: x lies on a rounding boundary of the grid */
static int near_tie(double x, float s)
{
    double v = x * (double)(1.0f / s);
    return fabs(v - floor(v) - 0.5) < 2e-3;
}

/* ---- 1. unit grouping ---- */

typedef struct {
    const char *name;
    qat_unit_kind kind;
    int head, bn, relu, last, in0, in1;
} unit_exp;

#define U_IN {"input", QAT_UNIT_INPUT, 0, -1, -1, 0, -1, -1}
#define CONV QAT_UNIT_CONV

static const unit_exp mlp_units[] = {
    U_IN,
    {"classifier.0", CONV, 2, -1, 3, 3, 0, -1},
    {"classifier.2", CONV, 4, -1, 5, 5, 1, -1},
    {"classifier.4", CONV, 6, -1, -1, 6, 2, -1},
};
static const unit_exp lenet5_units[] = {
    U_IN,
    {"features.0", CONV, 1, 2, 3, 3, 0, -1},
    {"features.4", CONV, 5, 6, 7, 7, 1, -1},
    {"classifier.0", CONV, 10, -1, 11, 11, 2, -1},
    {"classifier.2", CONV, 12, -1, 13, 13, 3, -1},
    {"classifier.4", CONV, 14, -1, -1, 14, 4, -1},
};
static const unit_exp convnet_units[] = {
    U_IN,
    {"features.0", CONV, 1, 2, 3, 3, 0, -1},
    {"features.3", CONV, 4, 5, 6, 6, 1, -1},
    {"features.7", CONV, 8, 9, 10, 10, 2, -1},
    {"features.10", CONV, 11, 12, 13, 13, 3, -1},
    {"classifier.0", CONV, 16, -1, 17, 17, 4, -1},
    {"classifier.2", CONV, 18, -1, -1, 18, 5, -1},
};
/* layer indices: stem 1-3; layer1 conv1 4-6, conv2 7-8, add 9, relu2 10;
 * layer2 conv1 11-13, conv2 14-15, shortcut 16-17, add 18, relu2 19;
 * layer3 20-22, 23-24, 25-26, add 27, relu2 28; gap 29; fc 30 */
static const unit_exp resnet8_units[] = {
    U_IN,
    {"stem.conv", CONV, 1, 2, 3, 3, 0, -1},
    {"layer1.conv1", CONV, 4, 5, 6, 6, 1, -1},
    {"layer1.conv2", CONV, 7, 8, -1, 8, 2, -1},
    {"layer1.add", QAT_UNIT_ADD, 9, -1, 10, 10, 3, 1},
    {"layer2.conv1", CONV, 11, 12, 13, 13, 4, -1},
    {"layer2.conv2", CONV, 14, 15, -1, 15, 5, -1},
    {"layer2.shortcut.0", CONV, 16, 17, -1, 17, 4, -1},
    {"layer2.add", QAT_UNIT_ADD, 18, -1, 19, 19, 6, 7},
    {"layer3.conv1", CONV, 20, 21, 22, 22, 8, -1},
    {"layer3.conv2", CONV, 23, 24, -1, 24, 9, -1},
    {"layer3.shortcut.0", CONV, 25, 26, -1, 26, 8, -1},
    {"layer3.add", QAT_UNIT_ADD, 27, -1, 28, 28, 10, 11},
    {"gap", QAT_UNIT_POOL, 29, -1, -1, 29, 12, -1},
    {"fc", CONV, 30, -1, -1, 30, 13, -1},
};

/* layer -> unit giving its grid, for layers outside units or at their end */
typedef struct {
    int layer, unit;
} grid_exp;

static const struct {
    const char *arch;
    int n_layers;
    const unit_exp *units;
    int n_units;
    grid_exp grid[8];
    int n_grid;
} archs[] = {
    {"mlp", 7, mlp_units, 4, {{0, 0}, {1, 0}, {2, -1}, {3, 1}, {5, 2}, {6, 3}}, 6},
    {"lenet5", 15, lenet5_units, 6, {{1, -1}, {2, -1}, {3, 1}, {4, 1}, {8, 2}, {9, 2}, {11, 3}, {14, 5}}, 8},
    {"convnet", 19, convnet_units, 7, {{3, 1}, {7, 2}, {14, 4}, {15, 4}, {16, -1}, {17, 5}}, 6},
    {"resnet8", 31, resnet8_units, 15, {{3, 1}, {8, 3}, {9, -1}, {10, 4}, {17, 7}, {28, 12}, {29, 13}, {30, 14}}, 8},
};

START_TEST(test_units_reference_models)
{
    qat_model *m = qat_model_build(archs[_i].arch, 1);
    NN(m);
    ck_assert_int_eq(qat_model_num_layers(m), archs[_i].n_layers);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    ck_assert_ptr_eq(qat_qmodel_float(qm), m);
    ck_assert_int_eq(qat_qmodel_num_units(qm), archs[_i].n_units);
    for (int u = 0; u < archs[_i].n_units; u++) {
        const unit_exp *e = &archs[_i].units[u];
        qat_qunit *un = qat_qmodel_unit(qm, u);
        NN(un);
        ck_assert_msg(!strcmp(un->name, e->name), "%s unit %d: '%s', expected '%s'", archs[_i].arch, u, un->name,
                      e->name);
        ck_assert_msg(un->kind == e->kind && un->head == e->head && un->bn == e->bn && un->relu == e->relu &&
                          un->last == e->last && un->in_unit[0] == e->in0 && un->in_unit[1] == e->in1,
                      "%s unit '%s': kind %s head %d bn %d relu %d last %d in %d,%d; expected %s %d %d %d %d %d,%d",
                      archs[_i].arch, un->name, qat_unit_kind_name(un->kind), un->head, un->bn, un->relu, un->last,
                      un->in_unit[0], un->in_unit[1], qat_unit_kind_name(e->kind), e->head, e->bn, e->relu, e->last,
                      e->in0, e->in1);
        ck_assert_int_eq(qat_qmodel_find_unit(qm, e->name), u);
        /* quantizers of a w8a8 unit */
        ck_assert_int_eq(un->cfg.quantize, 1);
        ck_assert_int_eq(un->act.n, 1);
        ck_assert_int_eq(un->act.qmin, -128);
        ck_assert_int_eq(un->act.qmax, 127);
        ck_assert_ptr_null(un->act.lsq_scale);
        ck_assert_int_eq(un->bn_frozen, 0);
        if (un->kind == QAT_UNIT_CONV) {
            ck_assert_int_eq(un->weight.n, qat_model_layer(m, un->head)->out_ch);
            ck_assert_int_eq(un->weight.qmin, -127);
            ck_assert_int_eq(un->weight.qmax, 127);
            ck_assert_int_eq(un->weight.scheme.per_channel, 1);
            ck_assert_ptr_null(un->weight.lsq_scale);
        } else {
            ck_assert_int_eq(un->weight.n, 0);
        }
        /* a unit's output layer is on its own grid */
        ck_assert_int_eq(qat_qmodel_layer_unit(qm, e->last), u);
    }
    ck_assert_ptr_null(qat_qmodel_unit(qm, archs[_i].n_units));
    ck_assert_ptr_null(qat_qmodel_unit(qm, -1));
    ck_assert_int_eq(qat_qmodel_find_unit(qm, "nope"), -1);
    for (int k = 0; k < archs[_i].n_grid; k++)
        ck_assert_msg(qat_qmodel_layer_unit(qm, archs[_i].grid[k].layer) == archs[_i].grid[k].unit,
                      "%s: layer %d on the grid of unit %d, expected %d", archs[_i].arch, archs[_i].grid[k].layer,
                      qat_qmodel_layer_unit(qm, archs[_i].grid[k].layer), archs[_i].grid[k].unit);
    ck_assert_int_eq(qat_qmodel_layer_unit(qm, -1), -1);
    ck_assert_int_eq(qat_qmodel_layer_unit(qm, archs[_i].n_layers), -1);
    ck_assert_int_eq(qat_qmodel_num_params(qm), 0); /* no LSQ at 8 bits */
    qat_qmodel_free(qm);

    /* w4a4: LSQ everywhere, parameters named after the units */
    qm = prepare(m, "w4a4", -1);
    int n_conv = 0;
    for (int u = 0; u < archs[_i].n_units; u++) n_conv += archs[_i].units[u].kind == QAT_UNIT_CONV;
    ck_assert_int_eq(qat_qmodel_num_params(qm), 2 * archs[_i].n_units + n_conv);
    const qat_named_tensor *p = qat_qmodel_params(qm);
    ck_assert_str_eq(p[0].name, "input.act_scale");
    ck_assert_str_eq(p[1].name, "input.act_zero_point");
    char want[96];
    snprintf(want, sizeof want, "%s.weight_scale", archs[_i].units[1].name);
    ck_assert_str_eq(p[2].name, want);
    ck_assert_int_eq(p[2].no_decay, 1);
    ck_assert_int_eq((int)p[2].t->numel, qat_model_layer(m, archs[_i].units[1].head)->out_ch);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* Every reference model runs through its qmodel: with fake-quant off it
 * is the float model (BN folded everywhere, shortcuts included); with it
 * on, every unit's output and every layer qat_qmodel_layer_unit() assigns
 * to a unit lie on that unit's grid; in training (w4a4, BN unfrozen)
 * every learnable scale receives a gradient. */
START_TEST(test_units_forward_reference_models)
{
    qat_model *m = qat_model_build(archs[_i].arch, 7);
    randomize_bn(m, 8);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    calibrate_random(ctx, qm, 4, 2, 9);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 10);
    qat_tensor *x = random_input(ctx, m, 3, -1, 1.5f, &r);
    qat_tensor **f = qat_model_forward_all(ctx, m, x);
    NN(f);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_tensor **q = qat_qmodel_forward_all(ctx, qm, x);
    NN(q);
    int nl = archs[_i].n_layers;
    assert_close_rel(f[nl - 1]->data, q[nl - 1]->data, f[nl - 1]->numel, 1e-4, archs[_i].arch);
    qat_qmodel_set_fake_quant(qm, 1);
    q = qat_qmodel_forward_all(ctx, qm, x);
    NN(q);
    for (int i = 0; i < nl; i++) {
        int u = qat_qmodel_layer_unit(qm, i);
        if (u < 0) continue;
        const qat_quantizer *a = &qat_qmodel_unit(qm, u)->act;
        for (size_t k = 0; k < q[i]->numel; k++) {
            float v = q[i]->data[k] / a->scale[0] + (float)a->zero_point[0];
            ck_assert_msg(fabsf(v - nearbyintf(v)) < 1e-3f && v > a->qmin - 0.01f && v < a->qmax + 0.01f,
                          "%s layer %d (%s) element %zu = %g: not on the grid of unit %d (%g, %d)", archs[_i].arch, i,
                          qat_model_layer(m, i)->name, k, q[i]->data[k], u, a->scale[0], a->zero_point[0]);
        }
    }
    qat_ctx_reset(ctx);
    qat_qmodel_free(qm);

    qm = prepare(m, "w4a4", -1);
    calibrate_random(ctx, qm, 4, 1, 11);
    qat_ctx_set_training(ctx, 1);
    qat_ctx_set_grad(ctx, 1);
    uint8_t labels[4] = {1, 7, 3, 0};
    /* (a wider range than calibrated, so that some elements clamp) */
    qat_tensor *loss = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, random_input(ctx, m, 4, -2, 3, &r)),
                                         labels);
    NN(loss);
    OK(qat_backward(ctx, loss));
    int zp_grads = 0;
    for (int i = 0; i < qat_qmodel_num_params(qm); i++) {
        const qat_named_tensor *p = &qat_qmodel_params(qm)[i];
        /* a zero point's gradient needs clamped elements, which a unit
         * whose BN normalises with batch statistics may not have */
        if (strstr(p->name, "zero_point")) {
            zp_grads += max_abs(p->t->grad, p->t->numel) > 0;
            continue;
        }
        ck_assert_msg(max_abs(p->t->grad, p->t->numel) > 0, "%s: %s has no gradient", archs[_i].arch, p->name);
    }
    ck_assert_int_gt(zp_grads, 1);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_units_unsupported_bn)
{
    /* BN after a ReLU */
    qat_model *m = qat_model_create(1, 6, 6);
    int x = qat_model_conv2d(m, "c", 0, 2, 3, 1, 1, 0);
    x = qat_model_relu(m, "r", x);
    x = qat_model_batchnorm2d(m, "bn_after_relu", x);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(m, 1));
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    qat_clear_error();
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    ck_assert_msg(strstr(qat_last_error(), "bn_after_relu") && strstr(qat_last_error(), "batchnorm"), "%s",
                  qat_last_error());
    qat_model_free(m);

    /* BN after a conv whose output is also read elsewhere: not foldable */
    m = qat_model_create(1, 6, 6);
    int c = qat_model_conv2d(m, "c", 0, 2, 3, 1, 1, 0);
    int b = qat_model_batchnorm2d(m, "bn_shared", c);
    int r = qat_model_relu(m, "r", c);
    x = qat_model_add(m, "a", b, r);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(m, 1));
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    ck_assert_msg(strstr(qat_last_error(), "bn_shared"), "%s", qat_last_error());
    qat_model_free(m);
}
END_TEST

START_TEST(test_units_overrides)
{
    qat_model *m = qat_model_build("lenet5", 3);
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "features.9=w4a4"));
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    ck_assert_msg(strstr(qat_last_error(), "features.9") &&
                      strstr(qat_last_error(),
                             "input, features.0, features.4, classifier.0, classifier.2, classifier.4"),
                  "%s", qat_last_error());
    /* malformed overrides */
    ck_assert_int_eq(qat_qconfig_add_override(&cfg, "noequals"), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qconfig_add_override(&cfg, "=w8a8"), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qconfig_add_override(&cfg, "features.0=w9a8"), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qconfig_add_override(&cfg, "features.0=w8"), QAT_ERR_ARG);

    /* a per-unit bit width */
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "features.4=w4a8"));
    OK(qat_qconfig_add_override(&cfg, "classifier.2=float"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qunit *f4 = qat_qmodel_unit(qm, 2), *c2 = qat_qmodel_unit(qm, 4), *c4 = qat_qmodel_unit(qm, 5);
    ck_assert_int_eq(f4->weight.qmax, 7);
    ck_assert_ptr_nonnull(f4->weight.lsq_scale);
    ck_assert_int_eq(f4->act.qmax, 127);
    ck_assert_ptr_null(f4->act.lsq_scale);
    ck_assert_int_eq(c2->cfg.quantize, 0);
    ck_assert_int_eq(c2->act.n, 0);
    ck_assert_int_eq(c2->weight.n, 0);
    /* the float unit's output is on no grid; the next unit reads float */
    ck_assert_int_eq(qat_qmodel_layer_unit(qm, 13), -1);
    ck_assert_int_eq(c4->in_unit[0], -1);

    /* its output equals the float layers' output on the same input */
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 8, 2, 5);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 6);
    qat_tensor *x = random_input(ctx, m, 4, -1, 1, &r);
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, x);
    NN(all);
    qat_layer *l12 = qat_model_layer(m, 12);
    qat_tensor *lin = qat_linear(ctx, all[11], l12->weight, l12->bias), *rel = qat_relu(ctx, lin);
    ck_assert_int_eq(memcmp(lin->data, all[12]->data, lin->numel * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(rel->data, all[13]->data, rel->numel * sizeof(float)), 0);
    /* while the unit before it is quantized: its output lies on its grid */
    qat_qunit *c0 = qat_qmodel_unit(qm, 3);
    float s = c0->act.scale[0];
    for (size_t i = 0; i < all[11]->numel; i++) {
        float v = all[11]->data[i] / s;
        ck_assert_msg(fabsf(v - nearbyintf(v)) < 1e-3f, "classifier.1 output %g not on the grid %g", all[11]->data[i],
                      s);
    }
    qat_qmodel_free(qm);

    /* the network input left float */
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "input=float"));
    qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    calibrate_random(ctx, qm, 8, 1, 7);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    x = random_input(ctx, m, 2, -1, 1, &r);
    all = qat_qmodel_forward_all(ctx, qm, x);
    NN(all);
    ck_assert_int_eq(memcmp(all[0]->data, x->data, x->numel * sizeof(float)), 0);
    ck_assert_int_eq(qat_qmodel_unit(qm, 1)->in_unit[0], -1);
    qat_qmodel_free(qm);
    qat_ctx_free(ctx);
    qat_model_free(m);
}
END_TEST

START_TEST(test_config_parse)
{
    qat_unit_config u;
    OK(qat_unit_config_parse("w4a8", &u));
    ck_assert_int_eq(u.quantize, 1);
    ck_assert_int_eq(u.weight.bits, 4);
    ck_assert_int_eq(u.act.bits, 8);
    ck_assert_int_eq(u.lsq_weight, 1);
    ck_assert_int_eq(u.lsq_act, 0);
    ck_assert_int_eq(u.weight.per_channel, 1);
    ck_assert_int_eq(u.weight.narrow, 1);
    ck_assert_int_eq(u.act.symmetric, 0);
    ck_assert_int_eq(u.calib, QAT_CALIBRATOR_EMA);
    OK(qat_unit_config_parse("w2a16", &u));
    ck_assert_int_eq(u.lsq_act, 0);
    OK(qat_unit_config_parse("float", &u));
    ck_assert_int_eq(u.quantize, 0);
    const char *bad[] = {"w0a8", "w8a9", "w8a8x", "a8w8", "", "W8A8", "w8a", "w12a8", "wc1a8", "wc300a8", "wh0a8",
                         "wh257a8", "fp8", "fp16a8", "w1a1", "wca8", "wc16", "w-1a8", "w 8a8", "w+8a8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(qat_unit_config_parse(bad[i], &u) == QAT_ERR_ARG, "'%s' accepted", bad[i]);
        /* the message lists the grammar */
        ck_assert_ptr_nonnull(strstr(qat_last_error(), "wc<K>a<A>"));
        ck_assert_ptr_nonnull(strstr(qat_last_error(), "fp16"));
    }
    /* the new forms, and the spec each turns back into */
    struct {
        const char *spec;
        int bits, kind, k, fmt, per_channel, lsq_w;
    } good[] = {{"w1a8", 1, QAT_WEIGHT_UNIFORM, 0, 0, 1, 1},       {"w2a8", 2, QAT_WEIGHT_UNIFORM, 0, 0, 1, 1},
                {"wc16a8", 8, QAT_WEIGHT_CODEBOOK, 16, 0, 0, 0},  {"wc2a4", 8, QAT_WEIGHT_CODEBOOK, 2, 0, 0, 0},
                {"wc256a8", 8, QAT_WEIGHT_CODEBOOK, 256, 0, 0, 0}, {"wh64a8", 8, QAT_WEIGHT_HASHED, 64, 0, 0, 0},
                {"fp16", 16, QAT_WEIGHT_UNIFORM, 0, QAT_FLOAT_FP16, 0, 0},
                {"bf16", 16, QAT_WEIGHT_UNIFORM, 0, QAT_FLOAT_BF16, 0, 0}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        OK(qat_unit_config_parse(good[i].spec, &u));
        ck_assert_int_eq(u.quantize, 1);
        ck_assert_int_eq(u.weight.bits, good[i].bits);
        ck_assert_int_eq(u.weight_kind, good[i].kind);
        ck_assert_int_eq(u.weight_k, good[i].k);
        ck_assert_int_eq(u.float_format, good[i].fmt);
        ck_assert_int_eq(u.weight.per_channel, good[i].per_channel);
        ck_assert_int_eq(u.lsq_weight, good[i].lsq_w);
        char buf[32];
        ck_assert_str_eq(qat_unit_config_spec(&u, buf, sizeof buf), good[i].spec);
    }
    u.weight.narrow = 0; /* not what any spec makes */
    char buf[32];
    ck_assert_str_eq(qat_unit_config_spec(&u, buf, sizeof buf), "custom");
    for (int c = 0; c < QAT_CALIBRATOR_COUNT; c++)
        ck_assert_int_eq(qat_calibrator_from_name(qat_calibrator_name((qat_calibrator)c)), c);
    ck_assert_int_eq(qat_calibrator_from_name("entropy"), -1);
    ck_assert_ptr_null(qat_calibrator_name(QAT_CALIBRATOR_COUNT));
    ck_assert_str_eq(qat_unit_kind_name(QAT_UNIT_POOL), "pool");
}
END_TEST

/* ---- 2. BN folding equivalence (fake-quant off) ---- */

START_TEST(test_bn_fold_eval)
{
    qat_model *m = convbn_model(11);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 12);
    for (int rep = 0; rep < 3; rep++) {
        qat_tensor *x = random_input(ctx, m, 4, -2, 2, &r);
        qat_tensor **f = qat_model_forward_all(ctx, m, x);
        qat_tensor **q = qat_qmodel_forward_all(ctx, qm, x);
        NN(f);
        NN(q);
        /* unit outputs: r1 (conv+bn+relu), b2 (conv+bn), fc (logits) */
        const int layers[] = {3, 5, 7};
        for (int k = 0; k < 3; k++) {
            char what[32];
            snprintf(what, sizeof what, "layer %d", layers[k]);
            assert_close_rel(f[layers[k]]->data, q[layers[k]]->data, f[layers[k]]->numel, 1e-5, what);
        }
        /* not identical by construction: the folded form really runs */
        ck_assert_int_ne(memcmp(f[5]->data, q[5]->data, f[5]->numel * sizeof(float)), 0);
        qat_ctx_reset(ctx);
    }
    /* BN statistics untouched in evaluation */
    ck_assert_int_eq(qat_model_layer(m, 2)->num_batches_tracked, 0);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_bn_fold_training)
{
    qat_model *mf = convbn_model(21), *mq = convbn_model(21);
    qat_qmodel *qm = prepare(mq, "w8a8", -1);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 1);
    qat_rng r;
    qat_rng_seed(&r, 22);
    const int bns[2] = {2, 5};
    float rm0[5];
    memcpy(rm0, qat_model_layer(mf, 5)->running_mean->data, sizeof rm0);
    for (int step = 0; step < 3; step++) {
        qat_tensor *x = random_input(ctx, mf, 6, -2, 2, &r);
        qat_tensor **f = qat_model_forward_all(ctx, mf, x);
        qat_tensor **q = qat_qmodel_forward_all(ctx, qm, x);
        NN(f);
        NN(q);
        const int layers[] = {3, 5, 7};
        for (int k = 0; k < 3; k++) {
            char what[48];
            snprintf(what, sizeof what, "step %d layer %d", step, layers[k]);
            assert_close_rel(f[layers[k]]->data, q[layers[k]]->data, f[layers[k]]->numel, 1e-5, what);
        }
        for (int k = 0; k < 2; k++) {
            qat_layer *a = qat_model_layer(mf, bns[k]), *b = qat_model_layer(mq, bns[k]);
            assert_close_rel(a->running_mean->data, b->running_mean->data, (size_t)a->out_ch, 1e-5, "running_mean");
            assert_close_rel(a->running_var->data, b->running_var->data, (size_t)a->out_ch, 1e-5, "running_var");
            ck_assert_int_eq(a->num_batches_tracked, step + 1);
            ck_assert_int_eq(b->num_batches_tracked, step + 1);
        }
        qat_ctx_reset(ctx);
    }
    /* the statistics did move */
    ck_assert_int_ne(memcmp(rm0, qat_model_layer(mq, 5)->running_mean->data, sizeof rm0), 0);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(mf);
    qat_model_free(mq);
}
END_TEST

/* ---- 3. fake-quant forward semantics, by hand ---- */

/* y[n][oc][i][j] (or y[n][oc] for linear) = sum x̂ ŵ + b̂, in double */
static void conv_ref(double *y, const float *x, const float *w, const float *b, int N, int C, int H, int W, int OC,
                     int K)
{
    int OH = H - K + 1, OW = W - K + 1;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    double acc = b[o];
                    for (int c = 0; c < C; c++)
                        for (int ki = 0; ki < K; ki++)
                            for (int kj = 0; kj < K; kj++)
                                acc += (double)x[((n * C + c) * H + i + ki) * W + j + kj] *
                                       (double)w[((o * C + c) * K + ki) * K + kj];
                    y[((n * OC + o) * OH + i) * OW + j] = acc;
                }
}

/* ŵ per output channel and b̂ on the s_in * s_w grid */
static void quantize_wb(float *wq, float *bq, const qat_layer *l, const qat_quantizer *wz, float s_in)
{
    int oc = l->out_ch;
    size_t per = l->weight->numel / (size_t)oc;
    for (int o = 0; o < oc; o++) {
        for (size_t k = 0; k < per; k++)
            wq[o * per + k] = fq_ref(l->weight->data[o * per + k], wz->scale[o], 0, -127, 127, NULL);
        float sb = qat_bias_scale(s_in, wz->scale[o]);
        bq[o] = (float)qat_quantize_bias_val(l->bias->data[o], sb) * sb;
    }
}

/* got == fq(pre) except at rounding ties (at most max_ties of them) */
static void check_fq_output(const float *got, const double *pre, size_t n, int relu, const qat_quantizer *a,
                            int max_ties, const char *what)
{
    int ties = 0;
    for (size_t i = 0; i < n; i++) {
        double v = relu && pre[i] < 0 ? 0 : pre[i];
        float want = fq_ref((float)v, a->scale[0], a->zero_point[0], a->qmin, a->qmax, NULL);
        if (got[i] == want) continue;
        ck_assert_msg(near_tie(v, a->scale[0]) && fabsf(got[i] - want) <= 1.0001f * a->scale[0],
                      "%s element %zu: %.9g, expected %.9g (pre-activation %.9g, scale %g)", what, i, got[i], want, v,
                      a->scale[0]);
        ties++;
    }
    ck_assert_msg(ties <= max_ties, "%s: %d elements at rounding ties", what, ties);
}

START_TEST(test_fake_quant_forward_by_hand)
{
    qat_model *m = tiny_model(31);
    qat_layer *conv = qat_model_layer(m, 1), *fc = qat_model_layer(m, 4);
    qat_rng r;
    qat_rng_seed(&r, 32);
    fill_tensor(conv->bias, -0.3f, 0.3f, &r);
    qat_qmodel *qm = prepare(m, "w8a8", QAT_CALIBRATOR_MINMAX);
    qat_qunit *ui = qat_qmodel_unit(qm, 0), *uc = qat_qmodel_unit(qm, 1), *uf = qat_qmodel_unit(qm, 2);
    ck_assert_int_eq(qat_qmodel_num_units(qm), 3);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel_set_fake_quant(qm, 0);

    /* two calibration batches; the float activations as the observers
     * should see them */
    float xs[2][50];
    tu_fill_uniform(xs[0], 50, -1.0f, 2.0f, &r);
    tu_fill_uniform(xs[1], 50, -1.5f, 1.0f, &r);
    float xmin = INFINITY, xmax = -INFINITY, cmin = INFINITY, cmax = -INFINITY, fmin = INFINITY, fmax = -INFINITY;
    for (int b = 0; b < 2; b++) {
        qat_ctx_set_grad(ctx, 0);
        qat_ctx_set_training(ctx, 0);
        qat_tensor *x = qat_from(ctx, 4, (int[]){2, 1, 5, 5}, xs[b]);
        for (int i = 0; i < 50; i++) xmin = fminf(xmin, xs[b][i]), xmax = fmaxf(xmax, xs[b][i]);
        qat_tensor *c = qat_relu(ctx, qat_conv2d(ctx, x, conv->weight, conv->bias, 1, 0));
        qat_tensor *f = qat_linear(ctx, qat_flatten(ctx, c), fc->weight, fc->bias);
        NN(f);
        for (size_t i = 0; i < c->numel; i++) cmin = fminf(cmin, c->data[i]), cmax = fmaxf(cmax, c->data[i]);
        for (size_t i = 0; i < f->numel; i++) fmin = fminf(fmin, f->data[i]), fmax = fmaxf(fmax, f->data[i]);
        qat_ctx_set_training(ctx, 1); /* calibrate switches to evaluation itself */
        qat_ctx_set_grad(ctx, 1);
        OK(qat_qmodel_calibrate(ctx, qm, x));
        ck_assert_int_eq(qat_ctx_training(ctx), 1);
        ck_assert_int_eq(qat_ctx_grad_enabled(ctx), 1);
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));

    qat_qscheme as = qat_qscheme_activation(8), ws = qat_qscheme_weight(8);
    float s;
    int32_t z;
    /* input quantizer = qparams of the observed range */
    OK(qat_qparams_from_minmax(&as, xmin, xmax, &s, &z));
    ck_assert_float_eq(ui->act.scale[0], s);
    ck_assert_int_eq(ui->act.zero_point[0], z);
    OK(qat_qparams_from_minmax(&as, cmin, cmax, &s, &z));
    ck_assert_float_eq(uc->act.scale[0], s);
    ck_assert_int_eq(uc->act.zero_point[0], z);
    ck_assert_int_eq(z, -128); /* after a ReLU */
    OK(qat_qparams_from_minmax(&as, fmin, fmax, &s, &z));
    ck_assert_float_eq(uf->act.scale[0], s);
    ck_assert_int_eq(uf->act.zero_point[0], z);
    /* weights: per output channel, symmetric narrow */
    const qat_layer *ls[2] = {conv, fc};
    const qat_qunit *us[2] = {uc, uf};
    for (int k = 0; k < 2; k++) {
        int oc = ls[k]->out_ch;
        size_t per = ls[k]->weight->numel / (size_t)oc;
        float mins[3], maxs[3], sc[3];
        int32_t zp[3];
        for (int o = 0; o < oc; o++) {
            mins[o] = INFINITY, maxs[o] = -INFINITY;
            for (size_t i = 0; i < per; i++) {
                mins[o] = fminf(mins[o], ls[k]->weight->data[o * per + i]);
                maxs[o] = fmaxf(maxs[o], ls[k]->weight->data[o * per + i]);
            }
        }
        OK(qat_qparams_from_minmax_n(&ws, mins, maxs, oc, sc, zp));
        for (int o = 0; o < oc; o++) {
            ck_assert_float_eq(us[k]->weight.scale[o], sc[o]);
            ck_assert_int_eq(us[k]->weight.zero_point[o], 0);
        }
    }
    /* finalize: observers off, fake-quant on, everything initialised */
    for (int u = 0; u < 3; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        ck_assert_int_eq(un->act.observe, 0);
        ck_assert_int_eq(un->act.fake_quant, 1);
        ck_assert_int_eq(un->act.initialized, 1);
    }

    /* the forward, recomputed */
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    float x[2 * 25], xq[2 * 25], wq[18 * 3], bq[3];
    tu_fill_uniform(x, 50, -1.6f, 2.2f, &r); /* also outside the calibrated range */
    x[0] = xmin - 1.0f;
    x[1] = xmax + 1.0f;
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, qat_from(ctx, 4, (int[]){2, 1, 5, 5}, x));
    NN(all);
    for (int i = 0; i < 50; i++)
        xq[i] = fq_ref(x[i], ui->act.scale[0], ui->act.zero_point[0], -128, 127, NULL);
    ck_assert_int_eq(memcmp(all[0]->data, xq, sizeof xq), 0);
    ck_assert_float_eq(xq[0], (float)(-128 - ui->act.zero_point[0]) * ui->act.scale[0]);

    double pre[2 * 2 * 3 * 3];
    quantize_wb(wq, bq, conv, &uc->weight, ui->act.scale[0]);
    conv_ref(pre, xq, wq, bq, 2, 1, 5, 5, 2, 3);
    /* the head's output is the conv itself (not yet quantized) */
    for (int i = 0; i < 36; i++)
        ck_assert_msg(fabs(all[1]->data[i] - pre[i]) <= 1e-5 * (1 + fabs(pre[i])), "conv %d: %.9g vs %.9g", i,
                      all[1]->data[i], pre[i]);
    check_fq_output(all[2]->data, pre, 36, 1, &uc->act, 1, "conv unit");
    /* flatten keeps the grid */
    ck_assert_int_eq(memcmp(all[2]->data, all[3]->data, 36 * sizeof(float)), 0);

    /* the linear unit on the conv unit's grid */
    double lpre[2 * 3];
    quantize_wb(wq, bq, fc, &uf->weight, uc->act.scale[0]);
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 3; o++) {
            double acc = bq[o];
            for (int k = 0; k < 18; k++) acc += (double)all[3]->data[n * 18 + k] * (double)wq[o * 18 + k];
            lpre[n * 3 + o] = acc;
        }
    check_fq_output(all[4]->data, lpre, 6, 0, &uf->act, 0, "logits");
    /* qat_qmodel_forward returns the same logits */
    qat_tensor *y = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){2, 1, 5, 5}, x));
    ck_assert_int_eq(memcmp(y->data, all[4]->data, 6 * sizeof(float)), 0);
    /* the bias is not the float bias: b̂ differs from b for some channel */
    int moved = 0;
    for (int o = 0; o < 3; o++) moved |= bq[o] != fc->bias->data[o];
    ck_assert(moved);

    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* A weight quantizer per tensor: the bias grid uses its one scale for
 * every channel. */
START_TEST(test_per_tensor_weights)
{
    qat_model *m = tiny_model(41);
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    cfg.base.weight.per_channel = 0;
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qunit *ui = qat_qmodel_unit(qm, 0), *uc = qat_qmodel_unit(qm, 1);
    ck_assert_int_eq(uc->weight.n, 1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 4, 1, 42);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 43);
    qat_tensor *x = random_input(ctx, m, 2, -1, 1, &r);
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, x);
    NN(all);
    qat_layer *conv = qat_model_layer(m, 1);
    float amax = max_abs(conv->weight->data, conv->weight->numel);
    ck_assert_float_eq(uc->weight.scale[0], amax / 127.0f);
    /* recompute with the one scale for both channels */
    float xq[50], wq[18], bq[2];
    for (int i = 0; i < 50; i++)
        xq[i] = fq_ref(x->data[i], ui->act.scale[0], ui->act.zero_point[0], -128, 127, NULL);
    for (int i = 0; i < 18; i++) wq[i] = fq_ref(conv->weight->data[i], uc->weight.scale[0], 0, -127, 127, NULL);
    for (int o = 0; o < 2; o++) {
        float sb = qat_bias_scale(ui->act.scale[0], uc->weight.scale[0]);
        bq[o] = (float)qat_quantize_bias_val(conv->bias->data[o], sb) * sb;
    }
    double pre[36];
    conv_ref(pre, xq, wq, bq, 2, 1, 5, 5, 2, 3);
    check_fq_output(all[2]->data, pre, 36, 1, &uc->act, 1, "per-tensor conv unit");
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 4. gradients ---- */

typedef struct {
    qat_model *m;
    qat_qmodel *qm;
    qat_ctx *ctx;
    const float *x;
    const float *w; /* loss weights [N, 3] */
    int n;
    int restore_stats;
    float *stats; /* running statistics saved before the check */
} fd_setup;

static void save_stats(fd_setup *s, int restore)
{
    size_t off = 0;
    for (int i = 0; i < qat_model_num_buffers(s->m); i++) {
        qat_tensor *t = qat_model_buffers(s->m)[i].t;
        if (restore)
            memcpy(t->data, s->stats + off, t->numel * sizeof(float));
        else
            memcpy(s->stats + off, t->data, t->numel * sizeof(float));
        off += t->numel;
    }
}

static double fd_loss(fd_setup *s, int backward)
{
    if (s->restore_stats) save_stats(s, 1);
    qat_ctx_reset(s->ctx);
    const qat_layer *in = qat_model_layer_c(s->m, 0);
    qat_tensor *x = qat_from(s->ctx, 4, (int[]){s->n, in->out_shape[0], in->out_shape[1], in->out_shape[2]}, s->x);
    qat_tensor *y = qat_qmodel_forward(s->ctx, s->qm, x);
    NN(y);
    double L = 0;
    for (size_t j = 0; j < y->numel; j++) L += (double)s->w[j] * (double)y->data[j];
    if (backward) {
        qat_tensor *wt = qat_from(s->ctx, y->ndim, y->shape, s->w);
        OK(qat_backward(s->ctx, qat_sum(s->ctx, qat_mul(s->ctx, y, wt))));
    }
    return L;
}

/* central differences on up to `samples` elements of p; kinks (one-sided
 * differences disagreeing) are skipped within a budget */
static void fd_check_param(fd_setup *s, qat_tensor *p, const float *grad, const char *name, int samples, qat_rng *r)
{
    /* h = 1e-3: with 1e-2, ReLU kinks crossed inside [v-h, v+h] (every
     * weight moves hundreds of pre-activations) bend the difference by
     * several per cent */
    const float h = 1e-3f;
    int checked = 0, skipped = 0;
    for (int k = 0; k < samples; k++) {
        size_t j = p->numel <= (size_t)samples ? (size_t)k : qat_rng_below(r, (uint32_t)p->numel);
        if (j >= p->numel) break;
        float v = p->data[j];
        double L0 = fd_loss(s, 0);
        p->data[j] = v + h;
        float vp = p->data[j];
        double Lp = fd_loss(s, 0);
        p->data[j] = v - h;
        float vm = p->data[j];
        double Lm = fd_loss(s, 0);
        p->data[j] = v;
        double num = (Lp - Lm) / ((double)vp - (double)vm);
        double fwd = (Lp - L0) / ((double)vp - v), bwd = (L0 - Lm) / ((double)v - vm);
        if (fabs(fwd - bwd) > 2e-3 + 0.05 * fmax(fabs(fwd), fabs(bwd))) {
            skipped++;
            continue;
        }
        double a = grad[j];
        ck_assert_msg(fabs(a - num) <= 1e-3 + 1e-2 * fmax(fabs(a), fabs(num)),
                      "%s[%zu]: analytic %.6g, numeric %.6g", name, j, a, num);
        checked++;
    }
    ck_assert_msg(skipped <= samples / 4 && checked >= 1, "%s: %d checked, %d skipped at kinks", name, checked,
                  skipped);
}

static void fd_run(int bn_training)
{
    qat_model *m = convbn_model(51);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_qmodel_freeze_bn(qm, !bn_training);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 1);
    qat_rng r;
    qat_rng_seed(&r, 52);
    float x[4 * 3 * 64], w[12], stats[18];
    tu_fill_uniform(x, sizeof x / sizeof x[0], -2, 2, &r);
    tu_fill_uniform(w, 12, -1, 1, &r);
    fd_setup s = {.m = m, .qm = qm, .ctx = ctx, .x = x, .w = w, .n = 4, .restore_stats = 1, .stats = stats};
    ck_assert_int_eq(qat_model_num_buffers(m), 4);
    save_stats(&s, 0);

    /* analytic gradients (accumulated onto a nonzero start, then removed) */
    const char *names[] = {"c1.weight", "c1.bias", "b1.weight", "b1.bias", "c2.weight", "b2.weight", "fc.weight"};
    const int np = (int)(sizeof names / sizeof names[0]);
    float *grads[7];
    qat_model_zero_grad(m);
    fd_loss(&s, 1);
    for (int k = 0; k < np; k++) {
        const qat_named_tensor *p = NULL;
        for (int i = 0; i < qat_model_num_params(m); i++)
            if (!strcmp(qat_model_params(m)[i].name, names[k])) p = &qat_model_params(m)[i];
        NN(p);
        grads[k] = malloc(p->t->numel * sizeof(float));
        memcpy(grads[k], p->t->grad, p->t->numel * sizeof(float));
        /* (before a training BN the conv bias has no effect) */
        if (!(bn_training && k == 1)) ck_assert_msg(max_abs(grads[k], p->t->numel) > 0, "%s: zero gradient", names[k]);
    }
    /* the same function computed by the float model (evaluation BN for the
     * folded form, batch-statistics BN for the training form) has the same
     * gradients, up to rounding */
    qat_ctx *fctx = qat_ctx_create(0);
    qat_ctx_set_training(fctx, bn_training);
    save_stats(&s, 1);
    qat_model_zero_grad(m);
    qat_tensor *fy = qat_model_forward(fctx, m, qat_from(fctx, 4, (int[]){4, 3, 8, 8}, x));
    NN(fy);
    OK(qat_backward(fctx, qat_sum(fctx, qat_mul(fctx, fy, qat_from(fctx, 2, fy->shape, w)))));
    for (int k = 0; k < np; k++) {
        qat_tensor *t = NULL;
        for (int i = 0; i < qat_model_num_params(m); i++)
            if (!strcmp(qat_model_params(m)[i].name, names[k])) t = qat_model_params(m)[i].t;
        float scale = max_abs(t->grad, t->numel);
        for (size_t j = 0; j < t->numel; j++)
            ck_assert_msg(fabsf(t->grad[j] - grads[k][j]) <= 1e-4f * scale + 1e-6f,
                          "%s[%zu]: qmodel gradient %.7g, float model %.7g", names[k], j, grads[k][j], t->grad[j]);
    }
    qat_ctx_free(fctx);

    /* finite differences. With BN training, the running statistics the
     * weight fold uses are not what the forward normalises with: gamma's
     * gradient must still be exact */
    for (int k = 0; k < np; k++) {
        qat_tensor *t = NULL;
        for (int i = 0; i < qat_model_num_params(m); i++)
            if (!strcmp(qat_model_params(m)[i].name, names[k])) t = qat_model_params(m)[i].t;
        fd_check_param(&s, t, grads[k], names[k], 12, &r);
        free(grads[k]);
    }
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}

START_TEST(test_grad_fold_frozen) { fd_run(0); }
END_TEST

START_TEST(test_grad_fold_training) { fd_run(1); }
END_TEST

/* STE: dx == dy * mask exactly, on a unit's real quantizers (per tensor
 * and per channel) */
START_TEST(test_grad_ste_exact)
{
    qat_model *m = tiny_model(61);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 4, 1, 62);
    qat_rng r;
    qat_rng_seed(&r, 63);
    qat_quantizer *qs[2] = {&qat_qmodel_unit(qm, 0)->act, &qat_qmodel_unit(qm, 1)->weight};
    int shapes[2][4] = {{2, 1, 5, 5}, {2, 1, 3, 3}};
    for (int k = 0; k < 2; k++) {
        qat_quantizer *q = qs[k];
        qat_ctx_set_training(ctx, 1);
        qat_ctx_set_grad(ctx, 1);
        size_t n = (size_t)shapes[k][0] * shapes[k][1] * shapes[k][2] * shapes[k][3];
        float xv[50], wv[50];
        float range = 200.0f * q->scale[0];
        tu_fill_uniform(xv, n, -range, range, &r); /* about half of it clamps */
        tu_fill_uniform(wv, n, -1, 1, &r);
        xv[0] = (float)(q->qmax - q->zero_point[0]) * q->scale[0]; /* exactly qmax */
        qat_tensor *x = qat_new_leaf(ctx, 4, shapes[k], xv);
        qat_tensor *y = qat_fq(ctx, x, q, 0);
        NN(y);
        OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, qat_from(ctx, 4, shapes[k], wv)))));
        int in = 0, out = 0;
        size_t inner = n / (size_t)q->n;
        for (size_t i = 0; i < n; i++) {
            size_t c = q->n > 1 ? i / inner : 0;
            int inside;
            float want = fq_ref(xv[i], q->scale[c], q->zero_point[c], q->qmin, q->qmax, &inside);
            ck_assert_float_eq(y->data[i], want);
            ck_assert_msg(x->grad[i] == (inside ? wv[i] : 0.0f), "quantizer %d element %zu: dx %g, dy %g, mask %d", k,
                          i, x->grad[i], wv[i], inside);
            in += inside, out += !inside;
        }
        ck_assert_int_gt(in, 5);
        ck_assert_int_gt(out, 5);
        qat_ctx_reset(ctx);
    }
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* LSQ (w4a4): the gradients reaching the learnable scales and zero points
 * equal quant/fakequant.h's kernels on the same data. */
START_TEST(test_grad_lsq_exact)
{
    qat_model *m = qat_model_create(1, 6, 6);
    ck_assert_int_eq(qat_model_conv2d(m, "conv", 0, 3, 3, 1, 1, 1), 1);
    OK(qat_model_init(m, 71));
    qat_layer *conv = qat_model_layer(m, 1);
    qat_qmodel *qm = prepare(m, "w4a4", -1);
    qat_qunit *ui = qat_qmodel_unit(qm, 0), *uc = qat_qmodel_unit(qm, 1);
    ck_assert_int_eq(qat_qmodel_num_params(qm), 5);
    NN(ui->act.lsq_scale);
    NN(ui->act.lsq_zp);
    NN(uc->weight.lsq_scale);
    ck_assert_ptr_null(uc->weight.lsq_zp); /* symmetric weights */
    NN(uc->act.lsq_zp);
    qat_ctx *ctx = qat_ctx_create(0), *ctx2 = qat_ctx_create(0);
    calibrate_random(ctx, qm, 4, 2, 72);
    /* the learnable parameters start from the calibrated ones */
    ck_assert_float_eq(ui->act.lsq_scale->data[0], ui->act.scale[0]);
    ck_assert_float_eq(ui->act.lsq_zp->data[0], (float)ui->act.zero_point[0]);
    for (int c = 0; c < 3; c++) ck_assert_float_eq(uc->weight.lsq_scale->data[c], uc->weight.scale[c]);
    /* move them off the calibrated values, as training would */
    ui->act.lsq_scale->data[0] *= 0.9f;
    ui->act.lsq_zp->data[0] += 1.3f;
    uc->weight.lsq_scale->data[1] *= 1.2f;
    uc->act.lsq_scale->data[0] *= 0.8f;

    qat_rng r;
    qat_rng_seed(&r, 73);
    const int N = 2;
    float xv[2 * 36], wv[2 * 3 * 36];
    tu_fill_uniform(xv, 72, -1.2f, 1.8f, &r);
    tu_fill_uniform(wv, 216, -1, 1, &r);
    for (int i = 0; i < qat_qmodel_num_params(qm); i++) qat_tensor_zero_grad(qat_qmodel_params(qm)[i].t);
    qat_model_zero_grad(m);
    qat_ctx_set_training(ctx, 1);
    qat_ctx_set_grad(ctx, 1);
    qat_ctx_set_retain_grads(ctx, 1); /* all[0]->grad is read below */
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, qat_from(ctx, 4, (int[]){N, 1, 6, 6}, xv));
    NN(all);
    qat_tensor *y = all[1];
    OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, qat_from(ctx, 4, y->shape, wv)))));

    /* recompute the conv unit's pieces without gradients */
    qat_ctx_set_grad(ctx2, 0);
    qat_ctx_set_training(ctx2, 1);
    qat_tensor *wq = qat_fq(ctx2, conv->weight, &uc->weight, 0);
    float s_in = ui->act.lsq_scale->data[0];
    qat_tensor *bq = qat_fq_bias(ctx2, conv->bias, s_in, uc->weight.lsq_scale->data);
    /* a copy of the input unit's output: all[0]->grad must stay as the
     * model's backward left it */
    qat_tensor *xin = qat_from(ctx2, 4, all[0]->shape, all[0]->data);
    qat_tensor *pre = qat_conv2d(ctx2, xin, wq, bq, 1, 1);
    NN(pre);
    size_t n = pre->numel;
    /* act: dy = the loss weights */
    float ds = 0, dz = 0, *dpre = calloc(n, sizeof(float));
    int32_t qmin = uc->act.qmin, qmax = uc->act.qmax;
    ck_assert_int_eq(qmax, 7);
    float sa = uc->act.lsq_scale->data[0];
    int32_t za = qat_zero_point_from_float(uc->act.lsq_zp->data[0], qmin, qmax);
    qat_fqk_lsq_backward(dpre, &ds, &dz, wv, pre->data, sa, za, qmin, qmax,
                         (float)(1.0 / sqrt((double)n * qmax)), n);
    ck_assert_float_eq(uc->act.lsq_scale->grad[0], ds);
    ck_assert_float_eq(uc->act.lsq_zp->grad[0], dz);
    ck_assert(ds != 0 && dz != 0);
    /* weight: dŵ from the conv backward of dpre, then the per-channel kernel */
    qat_ctx_set_grad(ctx2, 1);
    qat_tensor *wl = qat_new_leaf(ctx2, 4, wq->shape, wq->data);
    qat_tensor *pre2 = qat_conv2d(ctx2, xin, wl, bq, 1, 1);
    OK(qat_backward(ctx2, qat_sum(ctx2, qat_mul(ctx2, pre2, qat_from(ctx2, 4, pre2->shape, dpre)))));
    float dsw[3] = {0, 0, 0}, dw[27] = {0};
    int32_t zw[3] = {0, 0, 0};
    qat_fqk_lsq_channel_backward(dw, dsw, NULL, wl->grad, conv->weight->data, uc->weight.lsq_scale->data, zw,
                                 -7, 7, (float)(1.0 / sqrt(9.0 * 7.0)), 1, 3, 9);
    for (int c = 0; c < 3; c++) ck_assert_float_eq(uc->weight.lsq_scale->grad[c], dsw[c]);
    for (int i = 0; i < 27; i++) ck_assert_float_eq(conv->weight->grad[i], dw[i]);
    /* input: dy is the gradient that reached the input unit's output */
    NN(all[0]->grad);
    float dsi = 0, dzi = 0;
    int32_t zi = qat_zero_point_from_float(ui->act.lsq_zp->data[0], ui->act.qmin, ui->act.qmax);
    qat_fqk_lsq_backward(NULL, &dsi, &dzi, all[0]->grad, xv, s_in, zi, ui->act.qmin, ui->act.qmax,
                         (float)(1.0 / sqrt(72.0 * ui->act.qmax)), 72);
    ck_assert_float_eq(ui->act.lsq_scale->grad[0], dsi);
    ck_assert_float_eq(ui->act.lsq_zp->grad[0], dzi);
    ck_assert(dsi != 0);
    free(dpre);
    qat_ctx_free(ctx2);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* clamp_params keeps learnable scales positive and zero points in range */
START_TEST(test_lsq_clamp)
{
    qat_model *m = tiny_model(81);
    qat_qmodel *qm = prepare(m, "w4a4", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 2, 1, 82);
    qat_qunit *uc = qat_qmodel_unit(qm, 1);
    uc->weight.lsq_scale->data[0] = -0.5f;
    uc->weight.lsq_scale->data[1] = 0.25f;
    uc->act.lsq_scale->data[0] = NAN;
    uc->act.lsq_zp->data[0] = 9.7f;
    qat_qmodel_clamp_params(qm);
    ck_assert_float_eq(uc->weight.lsq_scale->data[0], QAT_SCALE_EPS);
    ck_assert_float_eq(uc->weight.scale[0], QAT_SCALE_EPS);
    ck_assert_float_eq(uc->weight.scale[1], 0.25f);
    ck_assert_float_eq(uc->act.lsq_scale->data[0], QAT_SCALE_EPS);
    ck_assert_float_eq(uc->act.lsq_zp->data[0], 7.0f);
    ck_assert_int_eq(uc->act.zero_point[0], 7);
    uc->act.lsq_zp->data[0] = -8.6f;
    qat_qmodel_clamp_params(qm);
    ck_assert_float_eq(uc->act.lsq_zp->data[0], -8.0f);
    ck_assert_int_eq(uc->act.zero_point[0], -8);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

static void assert_quantizer_eq(qat_quantizer *a, qat_quantizer *b, const char *what);

/* Without qat_qmodel_clamp_params the quantizers project their learnable
 * parameters themselves before any use (forward, integer evaluation,
 * export): the same state as after clamp_params. */
START_TEST(test_lsq_projected_without_clamp)
{
    qat_model *m = tiny_model(83);
    qat_qmodel *qm = prepare(m, "w4a4", -1), *ref_qm = prepare(m, "w4a4", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 2, 1, 84);
    calibrate_random(ctx, ref_qm, 2, 1, 84);
    for (int k = 0; k < 2; k++) {
        qat_qunit *uc = qat_qmodel_unit(k ? ref_qm : qm, 1);
        uc->weight.lsq_scale->data[0] = -0.5f;
        uc->act.lsq_scale->data[0] = NAN;
        uc->act.lsq_zp->data[0] = 9.7f;
    }
    qat_qmodel_clamp_params(ref_qm);
    qat_rng r;
    qat_rng_seed(&r, 85);
    qat_tensor *x = random_input(ctx, m, 2, -1, 1.5f, &r);
    for (int training = 0; training < 2; training++) {
        qat_ctx_set_training(ctx, training);
        qat_tensor *y = qat_qmodel_forward(ctx, qm, x), *yr = qat_qmodel_forward(ctx, ref_qm, x);
        NN(y);
        NN(yr);
        ck_assert(!memcmp(y->data, yr->data, y->numel * sizeof(float)));
        assert_quantizer_eq(&qat_qmodel_unit(qm, 1)->weight, &qat_qmodel_unit(ref_qm, 1)->weight, "weight");
        assert_quantizer_eq(&qat_qmodel_unit(qm, 1)->act, &qat_qmodel_unit(ref_qm, 1)->act, "act");
    }
    ck_assert_float_eq(qat_qmodel_unit(qm, 1)->weight.lsq_scale->data[0], QAT_SCALE_EPS);
    ck_assert_float_eq(qat_qmodel_unit(qm, 1)->act.lsq_zp->data[0], 7.0f);
    /* a reader that is not the forward: the export's accessors */
    qat_qmodel_unit(qm, 1)->act.lsq_scale->data[0] = -1.0f;
    ck_assert_float_eq(qat_quantizer_scales(&qat_qmodel_unit(qm, 1)->act)[0], QAT_SCALE_EPS);
    ck_assert_float_eq(qat_qmodel_unit(qm, 1)->act.scale[0], QAT_SCALE_EPS);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_qmodel_free(ref_qm);
    qat_model_free(m);
}
END_TEST

/* The public fake-quant ops (include/qat/quant.h) on a quantizer's own
 * parameters give the quantizer's forward and gradients bit for bit: LSQ
 * per channel (w4 weights) and per tensor (a4 activations), fixed per
 * channel and per tensor (w8a8). */
START_TEST(test_public_ops_match_quantizers)
{
    const char *specs[2] = {"w4a4", "w8a8"};
    for (int sp = 0; sp < 2; sp++) {
        qat_model *m = tiny_model(91);
        qat_qmodel *qm = prepare(m, specs[sp], -1);
        qat_ctx *ctx = qat_ctx_create(0);
        calibrate_random(ctx, qm, 4, 2, 92);
        qat_qunit *uc = qat_qmodel_unit(qm, 1);
        qat_quantizer *wq = &uc->weight, *aq = &uc->act;
        int lsq = wq->lsq_scale != NULL;
        ck_assert_int_eq(lsq, sp == 0);
        if (lsq) { /* off the calibrated values, as training moves them */
            wq->lsq_scale->data[1] *= 1.3f;
            aq->lsq_scale->data[0] *= 0.9f;
            aq->lsq_zp->data[0] += 0.7f;
        }
        qat_tensor *w = qat_model_layer(m, uc->head)->weight;
        qat_rng r;
        qat_rng_seed(&r, 93);
        float xv[2 * 2 * 3 * 3], gw[2][18], gx[2][36], gs[2][2], ga[2], gz[2];
        tu_fill_uniform(xv, 36, -2, 2, &r);
        float dyw[18], dyx[36];
        tu_fill_uniform(dyw, 18, -1, 1, &r);
        tu_fill_uniform(dyx, 36, -1, 1, &r);
        qat_tensor *yw[2], *ya[2];
        for (int path = 0; path < 2; path++) {
            qat_tensor_zero_grad(w);
            if (lsq) {
                qat_tensor_zero_grad(wq->lsq_scale);
                qat_tensor_zero_grad(aq->lsq_scale);
                qat_tensor_zero_grad(aq->lsq_zp);
            }
            qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){2, 2, 3, 3}, xv);
            if (path == 0) {
                yw[0] = qat_fq(ctx, w, wq, 0);
                ya[0] = qat_fq(ctx, x, aq, 0);
            } else if (lsq) {
                yw[1] = qat_fake_quant_lsq_per_channel(ctx, w, wq->lsq_scale, NULL, 0, wq->qmin, wq->qmax, 0.0f);
                ya[1] = qat_fake_quant_lsq(ctx, x, aq->lsq_scale, aq->lsq_zp, aq->qmin, aq->qmax, 0.0f);
            } else {
                yw[1] = qat_fake_quant_per_channel(ctx, w, wq->scale, wq->zero_point, 0, wq->qmin, wq->qmax);
                ya[1] = qat_fake_quant_per_tensor(ctx, x, aq->scale[0], aq->zero_point[0], aq->qmin, aq->qmax);
            }
            NN(yw[path]);
            NN(ya[path]);
            qat_tensor *l = qat_add(ctx, qat_sum(ctx, qat_mul(ctx, yw[path], qat_from(ctx, 4, w->shape, dyw))),
                                    qat_sum(ctx, qat_mul(ctx, ya[path], qat_from(ctx, 4, x->shape, dyx))));
            OK(qat_backward(ctx, l));
            memcpy(gw[path], w->grad, sizeof gw[path]);
            memcpy(gx[path], x->grad, sizeof gx[path]);
            if (lsq) {
                memcpy(gs[path], wq->lsq_scale->grad, sizeof gs[path]);
                ga[path] = aq->lsq_scale->grad[0];
                gz[path] = aq->lsq_zp->grad[0];
            }
        }
        ck_assert(!memcmp(yw[0]->data, yw[1]->data, 18 * sizeof(float)));
        ck_assert(!memcmp(ya[0]->data, ya[1]->data, 36 * sizeof(float)));
        ck_assert(!memcmp(gw[0], gw[1], sizeof gw[0]) && !memcmp(gx[0], gx[1], sizeof gx[0]));
        if (lsq) {
            ck_assert(!memcmp(gs[0], gs[1], sizeof gs[0]));
            ck_assert(ga[0] == ga[1] && gz[0] == gz[1]);
            ck_assert(gs[0][0] != 0 && ga[0] != 0 && gz[0] != 0);
        }
        qat_ctx_free(ctx);
        qat_qmodel_free(qm);
        qat_model_free(m);
    }
}
END_TEST

/* ---- 5. switches ---- */

START_TEST(test_switch_freeze_bn)
{
    qat_model *m = convbn_model(91);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 4, 2, 92);
    qat_layer *b1 = qat_model_layer(m, 2);
    float rm[4], rv[4];
    memcpy(rm, b1->running_mean->data, sizeof rm);
    memcpy(rv, b1->running_var->data, sizeof rv);
    int64_t nbt = b1->num_batches_tracked;
    qat_rng r;
    qat_rng_seed(&r, 93);
    float xv[2 * 192];
    tu_fill_uniform(xv, 384, -2, 2, &r);

    qat_qmodel_freeze_bn(qm, 1);
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) ck_assert_int_eq(qat_qmodel_unit(qm, u)->bn_frozen, 1);
    qat_ctx_set_training(ctx, 1);
    qat_tensor *yt = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){2, 3, 8, 8}, xv));
    NN(yt);
    ck_assert_int_eq(memcmp(rm, b1->running_mean->data, sizeof rm), 0);
    ck_assert_int_eq(memcmp(rv, b1->running_var->data, sizeof rv), 0);
    ck_assert_int_eq(b1->num_batches_tracked, nbt);
    /* frozen BN + frozen observers: training forward == evaluation forward */
    qat_ctx_set_training(ctx, 0);
    qat_tensor *ye = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){2, 3, 8, 8}, xv));
    ck_assert_int_eq(memcmp(yt->data, ye->data, ye->numel * sizeof(float)), 0);
    qat_ctx_reset(ctx);

    qat_qmodel_freeze_bn(qm, 0);
    qat_ctx_set_training(ctx, 1);
    yt = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){2, 3, 8, 8}, xv));
    NN(yt);
    ck_assert_int_ne(memcmp(rm, b1->running_mean->data, sizeof rm), 0);
    ck_assert_int_ne(memcmp(rv, b1->running_var->data, sizeof rv), 0);
    ck_assert_int_eq(b1->num_batches_tracked, nbt + 1);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_switch_observers)
{
    qat_model *m = convbn_model(101);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 4, 2, 102);
    qat_qunit *ui = qat_qmodel_unit(qm, 0), *u1 = qat_qmodel_unit(qm, 1);
    ck_assert_str_eq(u1->name, "c1");
    qat_qmodel_freeze_bn(qm, 1); /* W_fold must see the same running variance */
    float ws[4], s_in = ui->act.scale[0], s_a = u1->act.scale[0];
    int32_t z_in = ui->act.zero_point[0];
    memcpy(ws, u1->weight.scale, sizeof ws);
    qat_tensor *w = qat_model_layer(m, 1)->weight;
    for (size_t i = 0; i < w->numel; i++) w->data[i] *= 2.0f;
    qat_rng r;
    qat_rng_seed(&r, 103);
    qat_ctx_set_training(ctx, 1);
    /* finalize left the observers off: nothing moves */
    ck_assert_ptr_nonnull(qat_qmodel_forward(ctx, qm, random_input(ctx, m, 4, -6, 6, &r)));
    ck_assert_int_eq(memcmp(ws, u1->weight.scale, sizeof ws), 0);
    ck_assert_float_eq(ui->act.scale[0], s_in);
    ck_assert_int_eq(ui->act.zero_point[0], z_in);
    ck_assert_float_eq(u1->act.scale[0], s_a);
    qat_ctx_reset(ctx);
    /* on: weight scales follow the weights (memoryless), activations the
     * moving average */
    qat_qmodel_set_observers(qm, 1);
    ck_assert_ptr_nonnull(qat_qmodel_forward(ctx, qm, random_input(ctx, m, 4, -6, 6, &r)));
    for (int c = 0; c < 4; c++) ck_assert_float_eq(u1->weight.scale[c], 2.0f * ws[c]);
    ck_assert_float_ne(ui->act.scale[0], s_in);
    ck_assert_float_gt(ui->act.scale[0], s_in);
    ck_assert_float_ne(u1->act.scale[0], s_a);
    /* observers do not observe in evaluation */
    float s2 = ui->act.scale[0];
    qat_ctx_set_training(ctx, 0);
    ck_assert_ptr_nonnull(qat_qmodel_forward(ctx, qm, random_input(ctx, m, 4, -20, 20, &r)));
    ck_assert_float_eq(ui->act.scale[0], s2);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_switch_fake_quant)
{
    qat_model *m = qat_model_build("mlp", 111);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 8, 2, 112);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 113);
    qat_tensor *x = random_input(ctx, m, 4, -1, 1.5f, &r);
    qat_tensor *yf = qat_model_forward(ctx, m, x);
    qat_tensor *yq = qat_qmodel_forward(ctx, qm, x);
    NN(yf);
    NN(yq);
    ck_assert_int_ne(memcmp(yf->data, yq->data, yf->numel * sizeof(float)), 0);
    /* off: exactly the float model (no BN to fold in the MLP) */
    qat_qmodel_set_fake_quant(qm, 0);
    yq = qat_qmodel_forward(ctx, qm, x);
    ck_assert_int_eq(memcmp(yf->data, yq->data, yf->numel * sizeof(float)), 0);
    qat_qmodel_set_fake_quant(qm, 1);

    /* one unit off: it runs float on the previous unit's quantized output */
    ck_assert_int_eq(qat_qmodel_set_unit_fake_quant(qm, "classifier.9", 0), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "classifier.9"));
    OK(qat_qmodel_set_unit_fake_quant(qm, "classifier.2", 0));
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, x);
    NN(all);
    qat_layer *l4 = qat_model_layer(m, 4);
    qat_tensor *ref = qat_relu(ctx, qat_linear(ctx, all[3], l4->weight, l4->bias));
    ck_assert_int_eq(memcmp(ref->data, all[5]->data, ref->numel * sizeof(float)), 0);
    /* and the units around it are still quantized */
    qat_qunit *u1 = qat_qmodel_unit(qm, 1), *u3 = qat_qmodel_unit(qm, 3);
    for (size_t i = 0; i < all[3]->numel; i++) {
        float v = all[3]->data[i] / u1->act.scale[0];
        ck_assert(fabsf(v - nearbyintf(v)) < 1e-3f);
    }
    int on_grid = 1;
    for (size_t i = 0; i < all[5]->numel; i++) {
        float v = all[5]->data[i] / u1->act.scale[0];
        on_grid &= fabsf(v - nearbyintf(v)) < 1e-3f;
    }
    ck_assert(!on_grid);
    for (size_t i = 0; i < all[6]->numel; i++) {
        float v = all[6]->data[i] / u3->act.scale[0];
        ck_assert(fabsf(v - nearbyintf(v)) < 1e-3f);
    }
    OK(qat_qmodel_set_unit_fake_quant(qm, "classifier.2", 1));
    all = qat_qmodel_forward_all(ctx, qm, x);
    ck_assert_int_ne(memcmp(ref->data, all[5]->data, ref->numel * sizeof(float)), 0);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* qat_fq_relu = qat_fq(qat_relu(x)): output, observer state and
 * gradient, over several steps of an EMA observer; a quantizer it cannot
 * fuse (LSQ) runs the composition. */
START_TEST(test_fq_relu_op)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_rng r;
    qat_rng_seed(&r, 141);
    for (int lsq = 0; lsq < 2; lsq++) {
        qat_qscheme sc = qat_qscheme_activation(lsq ? 4 : 8);
        qat_observer_opts oo = qat_observer_opts_defaults(QAT_OBSERVER_EMA);
        qat_quantizer qa, qb;
        OK(qat_quantizer_init(&qa, &sc, 1, lsq, &oo));
        OK(qat_quantizer_init(&qb, &sc, 1, lsq, &oo));
        for (int step = 0; step < 3; step++) {
            qat_tensor *x = qat_tensor_create(4, (int[]){8, 3, 17, 19}, 1), *wp = qat_tensor_create(4, (int[]){8, 3, 17, 19}, 0);
            NN(x);
            NN(wp);
            fill_tensor(x, -2.0f + (float)step, 3.0f, &r);
            fill_tensor(wp, -1.0f, 1.0f, &r);
            qat_tensor *w = qat_from(ctx, 4, wp->shape, wp->data);
            qat_tensor *relu_out = NULL;
            qat_tensor *ya = qat_fq_relu(ctx, x, &qa, 1, &relu_out);
            NN(ya);
            NN(relu_out);
            OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, ya, w))));
            float *ga = malloc(x->numel * sizeof *ga), *ya_v = malloc(x->numel * sizeof *ya_v);
            memcpy(ga, x->grad, x->numel * sizeof *ga);
            memcpy(ya_v, ya->data, x->numel * sizeof *ya_v);
            memset(x->grad, 0, x->numel * sizeof(float));
            qat_ctx_reset(ctx);
            w = qat_from(ctx, 4, wp->shape, wp->data);
            qat_tensor *yb = qat_fq(ctx, qat_relu(ctx, x), &qb, 1);
            NN(yb);
            OK(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, yb, w))));
            for (size_t i = 0; i < x->numel; i++) {
                ck_assert_msg(ya_v[i] == yb->data[i], "lsq %d step %d: y[%zu] %g vs %g", lsq, step, i, ya_v[i],
                              yb->data[i]);
                ck_assert_msg(ga[i] == x->grad[i], "lsq %d step %d: dx[%zu] %g vs %g", lsq, step, i, ga[i],
                              x->grad[i]);
            }
            ck_assert(qa.scale[0] == qb.scale[0] && qa.zero_point[0] == qb.zero_point[0]);
            if (lsq) { /* the learnable scale and zero point get the same gradients */
                ck_assert_msg(qa.lsq_scale->grad[0] == qb.lsq_scale->grad[0], "step %d: dscale %g vs %g", step,
                              qa.lsq_scale->grad[0], qb.lsq_scale->grad[0]);
                ck_assert(qa.lsq_scale->grad[0] != 0.0f);
                ck_assert(qa.lsq_zp->grad[0] == qb.lsq_zp->grad[0]);
            }
            free(ga);
            free(ya_v);
            qat_ctx_reset(ctx);
            qat_tensor_free(x);
            qat_tensor_free(wp);
        }
        qat_quantizer_free(&qa);
        qat_quantizer_free(&qb);
    }
    qat_ctx_free(ctx);
}
END_TEST

/* Evaluation on the integer grid (the default) and with the float32 graph
 * compute the same function: every unit's output is on its grid in both,
 * they agree except near rounding boundaries (never more than a few steps
 * after several layers), the pre-activations inside a unit match the float
 * graph's to float32 precision, and training mode is unaffected. */
START_TEST(test_integer_eval)
{
    qat_model *m = qat_model_build("resnet8", 131);
    NN(m);
    qat_qmodel *qm = prepare(m, "w8a8", QAT_CALIBRATOR_MINMAX);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 8, 2, 132);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 133);
    qat_tensor *x = random_input(ctx, m, 16, -1, 1.5f, &r);
    qat_tensor **gi = qat_qmodel_forward_all(ctx, qm, x);
    NN(gi);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    qat_tensor **gf = qat_qmodel_forward_all(ctx, qm, x);
    NN(gf);
    long same = 0, total = 0;
    for (int u = 1; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        float sc = un->act.scale[0];
        const qat_tensor *a = gi[un->last], *b = gf[un->last];
        ck_assert_int_eq((int)a->numel, (int)b->numel);
        for (size_t i = 0; i < a->numel; i++) {
            float qa = a->data[i] / sc, qb = b->data[i] / sc;
            ck_assert_msg(fabsf(qa - nearbyintf(qa)) < 1e-3f, "%s: integer eval off the grid", un->name);
            ck_assert(fabsf(qb - nearbyintf(qb)) < 1e-3f);
            long d = labs(lrintf(qa) - lrintf(qb));
            ck_assert_msg(d <= 4, "%s: %ld steps apart", un->name, d);
            same += d == 0;
        }
        total += (long)a->numel;
        if (un->kind == QAT_UNIT_CONV && u == 1) {
            /* the first conv reads the same input in both: its pre-activation
             * (BN folded in) agrees to float32 rounding */
            const qat_tensor *pa = gi[un->head], *pb = gf[un->head];
            for (size_t i = 0; i < pa->numel; i++)
                ck_assert_msg(fabsf(pa->data[i] - pb->data[i]) <= 1e-4f * (1 + fabsf(pb->data[i])), "%s: %g vs %g",
                              un->name, pa->data[i], pb->data[i]);
        }
    }
    double frac = (double)same / total;
    printf("test_integer_eval: %.6f of %ld unit outputs identical to the float32 graph\n", frac, total);
    ck_assert_msg(frac > 0.999 && frac < 1.0, "identical fraction %.6f", frac);
    /* training mode runs the float32 graph either way (observers and BN
     * statistics held, so two forwards see the same state) */
    qat_qmodel_set_observers(qm, 0);
    qat_qmodel_freeze_bn(qm, 1);
    qat_ctx_set_training(ctx, 1);
    qat_tensor *ta = qat_qmodel_forward(ctx, qm, x);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
    qat_tensor *tb = qat_qmodel_forward(ctx, qm, x);
    NN(ta);
    NN(tb);
    ck_assert_int_eq(memcmp(ta->data, tb->data, ta->numel * sizeof(float)), 0);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* finalize without calibration data names the unit; forward with
 * fake-quant on before any observation is a state error */
START_TEST(test_uncalibrated)
{
    qat_model *m = tiny_model(121);
    qat_qmodel *qm = prepare(m, "w8a8", -1);
    qat_ctx *ctx = qat_ctx_create(0);
    ck_assert_int_eq(qat_qmodel_finalize(qm), QAT_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "input"));
    qat_ctx_set_training(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 122);
    ck_assert_ptr_null(qat_qmodel_forward(ctx, qm, random_input(ctx, m, 2, -1, 1, &r)));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "no parameters"));
    /* wrong input shape */
    qat_tensor *bad = qat_new(ctx, 4, (int[]){2, 1, 6, 5});
    ck_assert_ptr_null(qat_qmodel_forward(ctx, qm, bad));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "expected [N,1,5,5]"));
    ck_assert_int_eq(qat_qmodel_calibrate(ctx, qm, NULL), QAT_ERR_ARG);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 6. PTQ on a trained LeNet-5 ---- */

static qat_dataset *g_train, *g_test;
static qat_model *g_lenet;
static double g_float_acc;

static void load_data(void)
{
    if (g_train) return;
    OK(qat_dataset_load_fashion_mnist(tu_data_path("fashion-mnist-small"), 1, &g_train));
    OK(qat_dataset_load_fashion_mnist(tu_data_path("fashion-mnist-small"), 0, &g_test));
    ck_assert_int_eq(g_train->n, 2000);
    ck_assert_int_eq(g_test->n, 1000);
}

static double evaluate(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, const qat_dataset *ds)
{
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    long correct = 0;
    for (int s = 0; s < ds->n; s += 250) {
        int n = ds->n - s < 250 ? ds->n - s : 250;
        int idx[250];
        for (int k = 0; k < n; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, ds->c, ds->h, ds->w});
        NN(x);
        OK(qat_dataset_normalize_into(ds, idx, n, x->data));
        qat_tensor *y = qm ? qat_qmodel_forward(ctx, qm, x) : qat_model_forward(ctx, m, x);
        NN(y);
        correct += qat_count_correct(y, ds->labels + s);
        qat_ctx_reset(ctx);
    }
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    return (double)correct / ds->n;
}

/* LeNet-5 trained for 100 steps of 64 (SGD momentum 0.9, lr 0.05 cosine,
 * wd 5e-4), once per process */
static qat_model *trained_lenet5(void)
{
    if (g_lenet) return g_lenet;
    load_data();
    qat_model *m = qat_model_build("lenet5", 2024);
    NN(m);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.05;
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &o);
    NN(opt);
    qat_schedule sc = qat_schedule_cosine(0.05, 0, 100);
    OK(qat_optim_set_schedule(opt, &sc));
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = 64;
    bo.seed = 7;
    qat_batch_iter *it = NULL;
    OK(qat_batch_iter_create(g_train, &bo, &it));
    float *xb = malloc(qat_batch_iter_x_size(it) * sizeof(float));
    uint8_t yb[64];
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 1);
    for (int step = 0; step < 100;) {
        int n;
        if (qat_batch_iter_next(it, xb, yb, &n) != 1) {
            qat_batch_iter_reset_epoch(it);
            continue;
        }
        qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb)), yb);
        qat_optim_zero_grad(opt);
        OK(qat_backward(ctx, loss));
        OK(qat_optim_step(opt));
        qat_ctx_reset(ctx);
        step++;
    }
    g_float_acc = evaluate(ctx, m, NULL, g_test);
    fprintf(stderr, "test_qat: lenet5 after 100 steps: float test accuracy %.4f\n", g_float_acc);
    ck_assert_msg(g_float_acc > 0.7, "float accuracy %.4f", g_float_acc);
    qat_ctx_free(ctx);
    free(xb);
    qat_batch_iter_free(it);
    qat_optim_free(opt);
    g_lenet = m;
    return m;
}

/* PTQ: calibrate on the first 512 training images (fake-quant off), finalize */
static qat_qmodel *ptq(qat_ctx *ctx, qat_model *m, const char *spec, int calib)
{
    qat_qmodel *qm = prepare(m, spec, calib);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int s = 0; s < 512; s += 128) {
        int idx[128];
        for (int k = 0; k < 128; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){128, 1, 28, 28});
        OK(qat_dataset_normalize_into(g_train, idx, 128, x->data));
        OK(qat_qmodel_calibrate(ctx, qm, x));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
    return qm;
}

START_TEST(test_ptq_calibrators)
{
    qat_model *m = trained_lenet5();
    qat_ctx *ctx = qat_ctx_create(0);
    int cal = _i;
    qat_qmodel *qm = ptq(ctx, m, "w8a8", cal);
    double acc = evaluate(ctx, m, qm, g_test);
    fprintf(stderr, "test_qat: PTQ w8a8 %-10s test accuracy %.4f (float %.4f)\n",
            qat_calibrator_name((qat_calibrator)cal), acc, g_float_acc);
    ck_assert_msg(fabs(acc - g_float_acc) <= 0.02, "w8a8 %s: %.4f vs float %.4f",
                  qat_calibrator_name((qat_calibrator)cal), acc, g_float_acc);
    /* the float model is untouched by PTQ */
    ck_assert_float_eq(evaluate(ctx, m, NULL, g_test), g_float_acc);
    qat_qmodel_free(qm);
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_ptq_w2a8_loses)
{
    qat_model *m = trained_lenet5();
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel *qm = ptq(ctx, m, "w2a8", -1);
    /* ternary weights */
    qat_qunit *u = qat_qmodel_unit(qm, 1);
    ck_assert_int_eq(u->weight.qmin, -1);
    ck_assert_int_eq(u->weight.qmax, 1);
    double acc = evaluate(ctx, m, qm, g_test);
    fprintf(stderr, "test_qat: PTQ w2a8 test accuracy %.4f (float %.4f)\n", acc, g_float_acc);
    /* Ternary weights lose clearly more than 8 bits do; how much depends
     * on the model (this 100-step LeNet-5 keeps more than the full one:
     * full Fashion-MNIST lenet5 falls from 90.4% to 62%), and the MSE
     * initialisation of the (learnable) ternary scales softens it. */
    ck_assert_msg(acc < g_float_acc - 0.03, "w2a8 PTQ %.4f vs float %.4f", acc, g_float_acc);
    qat_qmodel_free(qm);
    qat_ctx_free(ctx);
}
END_TEST

/* recalibrate: the histogram observers re-derive parameters with another
 * method without observing again; MINMAX gives exactly what the minmax
 * calibrator gives (calibration runs float, so every observer saw the same
 * values) */
START_TEST(test_ptq_recalibrate)
{
    qat_model *m = trained_lenet5();
    qat_ctx *ctx = qat_ctx_create(0);
    int64_t nbt = qat_model_layer(m, 2)->num_batches_tracked;
    float rm0 = qat_model_layer(m, 2)->running_mean->data[0];
    qat_qmodel *qk = ptq(ctx, m, "w8a8", QAT_CALIBRATOR_KL), *qmm = ptq(ctx, m, "w8a8", QAT_CALIBRATOR_MINMAX);
    /* calibration runs in evaluation mode: BN statistics untouched */
    ck_assert_int_eq(qat_model_layer(m, 2)->num_batches_tracked, nbt);
    ck_assert_float_eq(qat_model_layer(m, 2)->running_mean->data[0], rm0);
    /* the input's range is the calibration images' range */
    float *x = malloc((size_t)512 * 784 * sizeof(float)), mn = INFINITY, mx = -INFINITY;
    OK(qat_dataset_normalize_into(g_train, NULL, 512, x));
    for (size_t i = 0; i < (size_t)512 * 784; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    free(x);
    qat_qscheme as = qat_qscheme_activation(8);
    float s;
    int32_t z;
    OK(qat_qparams_from_minmax(&as, mn, mx, &s, &z));
    ck_assert_float_eq(qat_qmodel_unit(qmm, 0)->act.scale[0], s);
    ck_assert_int_eq(qat_qmodel_unit(qmm, 0)->act.zero_point[0], z);
    int differs = 0;
    for (int u = 0; u < qat_qmodel_num_units(qk); u++)
        differs |= qat_qmodel_unit(qk, u)->act.scale[0] != qat_qmodel_unit(qmm, u)->act.scale[0];
    ck_assert(differs); /* KL clips somewhere */
    ck_assert_int_eq(qat_qmodel_recalibrate(qk, QAT_CALIBRATOR_EMA), QAT_ERR_ARG);
    OK(qat_qmodel_recalibrate(qk, QAT_CALIBRATOR_MINMAX));
    for (int u = 0; u < qat_qmodel_num_units(qk); u++) {
        qat_qunit *a = qat_qmodel_unit(qk, u), *b = qat_qmodel_unit(qmm, u);
        ck_assert_msg(a->act.scale[0] == b->act.scale[0] && a->act.zero_point[0] == b->act.zero_point[0],
                      "unit %s: recalibrated %g/%d, minmax calibrator %g/%d", a->name, a->act.scale[0],
                      a->act.zero_point[0], b->act.scale[0], b->act.zero_point[0]);
        if (a->weight.n)
            ck_assert(!memcmp(a->weight.scale, b->weight.scale, (size_t)a->weight.n * sizeof(float)));
    }
    ck_assert_double_eq(evaluate(ctx, m, qk, g_test), evaluate(ctx, m, qmm, g_test));
    qat_qmodel_free(qk);
    qat_qmodel_free(qmm);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- 7. per-layer metrics ---- */

START_TEST(test_error_metrics_by_hand)
{
    const float a[4] = {1, 2, 3, 4}, twice[4] = {2, 4, 6, 8}, neg[4] = {-1, -2, -3, -4};
    float near[4];
    for (int i = 0; i < 4; i++) near[i] = a[i] * 1.1f;
    double c, s, e;
    qat_error_metrics(a, a, 4, &c, &s, &e);
    ck_assert_double_eq(c, 1.0);
    ck_assert(isinf(s) && s > 0);
    ck_assert_double_eq(e, 0.0);
    qat_error_metrics(a, twice, 4, &c, &s, &e);
    ck_assert_double_eq_tol(c, 1.0, 1e-15);
    ck_assert_double_eq_tol(s, 0.0, 1e-12);  /* noise power = signal power */
    ck_assert_double_eq_tol(e, 7.5, 1e-15);  /* (1+4+9+16)/4 */
    qat_error_metrics(a, near, 4, &c, &s, &e);
    ck_assert_double_eq_tol(s, 20.0, 1e-5);  /* 10 log10(1 / 0.1^2) */
    ck_assert_double_eq_tol(e, 0.075, 1e-7);
    qat_error_metrics(a, neg, 4, &c, &s, &e);
    ck_assert_double_eq_tol(c, -1.0, 1e-15);
    ck_assert_double_eq_tol(s, 10 * log10(30.0 / 120.0), 1e-12);
    const float x[2] = {1, 0}, y[2] = {0, 1};
    qat_error_metrics(x, y, 2, &c, &s, &e);
    ck_assert_double_eq(c, 0.0);
    ck_assert_double_eq_tol(s, -10 * log10(2.0), 1e-12);
    ck_assert_double_eq(e, 1.0);
    const float z[3] = {0, 0, 0};
    qat_error_metrics(z, z, 3, &c, &s, &e);
    ck_assert_double_eq(c, 1.0);
    ck_assert(isinf(s));
    qat_error_metrics(a, a, 4, NULL, NULL, NULL); /* optional outputs */
}
END_TEST

START_TEST(test_layer_errors)
{
    qat_model *m = trained_lenet5();
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel *q8 = ptq(ctx, m, "w8a8", -1), *q4 = ptq(ctx, m, "w4a4", -1);
    qat_tensor *x = qat_new(ctx, 4, (int[]){200, 1, 28, 28});
    OK(qat_dataset_normalize_into(g_test, NULL, 200, x->data));
    qat_layer_error e8[6], e4[6];
    ck_assert_int_eq(qat_qmodel_layer_errors(ctx, q8, x, e8), 6);
    ck_assert_int_eq(qat_qmodel_layer_errors(ctx, q4, x, e4), 6);
    for (int u = 0; u < 6; u++) {
        ck_assert_str_eq(e8[u].name, lenet5_units[u].name);
        ck_assert_str_eq(e4[u].name, lenet5_units[u].name);
        ck_assert_int_eq(e8[u].layer, lenet5_units[u].last);
        fprintf(stderr, "test_qat: %-13s w8a8 SQNR %6.2f dB cos %.5f | w4a4 SQNR %6.2f dB cos %.5f\n", e8[u].name,
                e8[u].sqnr_db, e8[u].cosine, e4[u].sqnr_db, e4[u].cosine);
        ck_assert_msg(e8[u].sqnr_db > e4[u].sqnr_db + 6, "%s: w8a8 %.2f dB, w4a4 %.2f dB", e8[u].name,
                      e8[u].sqnr_db, e4[u].sqnr_db);
        ck_assert(e8[u].cosine > 0.99 && e8[u].cosine <= 1.0 + 1e-12);
        ck_assert(e8[u].mse < e4[u].mse);
    }
    /* the input unit alone: 8-bit rounding of the images, > 30 dB */
    ck_assert_double_gt(e8[0].sqnr_db, 30);
    /* the metric entries are the metrics of the two models' outputs */
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *yf = qat_model_forward(ctx, m, x), *yq = qat_qmodel_forward(ctx, q8, x);
    double c, s, e;
    qat_error_metrics(yf->data, yq->data, yf->numel, &c, &s, &e);
    ck_assert_double_eq(s, e8[5].sqnr_db);
    ck_assert_double_eq(c, e8[5].cosine);
    ck_assert_double_eq(e, e8[5].mse);
    qat_qmodel_free(q8);
    qat_qmodel_free(q4);

    /* a float unit has no entry */
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "features.4=float"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qmodel_set_fake_quant(qm, 0);
    OK(qat_qmodel_calibrate(ctx, qm, x));
    OK(qat_qmodel_finalize(qm));
    qat_layer_error ef[6];
    ck_assert_int_eq(qat_qmodel_layer_errors(ctx, qm, x, ef), 5);
    ck_assert_str_eq(ef[1].name, "features.0");
    ck_assert_str_eq(ef[2].name, "classifier.0");
    qat_qmodel_free(qm);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- 8. QAT checkpoints ---- */

static void assert_quantizer_eq(qat_quantizer *a, qat_quantizer *b, const char *what)
{
    ck_assert_msg(a->n == b->n, "%s: %d vs %d parameters", what, a->n, b->n);
    if (!a->n) return; /* no quantizer (e.g. the input unit's weight) */
    ck_assert_msg(!memcmp(&a->scheme, &b->scheme, sizeof a->scheme) && a->qmin == b->qmin && a->qmax == b->qmax,
                  "%s: scheme", what);
    ck_assert_msg(a->observe == b->observe && a->fake_quant == b->fake_quant && a->initialized == b->initialized,
                  "%s: flags %d%d%d vs %d%d%d", what, a->observe, a->fake_quant, a->initialized, b->observe,
                  b->fake_quant, b->initialized);
    ck_assert_msg(!memcmp(a->scale, b->scale, (size_t)a->n * sizeof(float)), "%s: scales", what);
    ck_assert_msg(!memcmp(a->zero_point, b->zero_point, (size_t)a->n * sizeof(int32_t)), "%s: zero points", what);
    ck_assert_msg((a->lsq_scale == NULL) == (b->lsq_scale == NULL), "%s: lsq", what);
    if (a->lsq_scale) ck_assert_msg(!memcmp(a->lsq_scale->data, b->lsq_scale->data, (size_t)a->n * 4), "%s lsq", what);
    ck_assert_msg((a->lsq_zp == NULL) == (b->lsq_zp == NULL), "%s: lsq zp", what);
    if (a->lsq_zp) ck_assert_msg(!memcmp(a->lsq_zp->data, b->lsq_zp->data, (size_t)a->n * 4), "%s lsq zp", what);
    ck_assert_msg((a->obs == NULL) == (b->obs == NULL), "%s: observer", what);
    if (!a->obs) return;
    ck_assert_int_eq(qat_observer_num_state(a->obs), qat_observer_num_state(b->obs));
    ck_assert_int_eq(qat_observer_options(a->obs)->kind, qat_observer_options(b->obs)->kind);
    for (int i = 0; i < qat_observer_num_state(a->obs); i++) {
        const char *na, *nb;
        const double *da, *db;
        size_t la, lb;
        OK(qat_observer_state(a->obs, i, &na, &da, &la));
        OK(qat_observer_state(b->obs, i, &nb, &db, &lb));
        ck_assert_str_eq(na, nb);
        ck_assert_msg(la == lb && (la == 0 || !memcmp(da, db, la * sizeof(double))), "%s: observer state '%s'", what,
                      na);
    }
}

static void assert_qmodels_eq(qat_qmodel *a, qat_qmodel *b)
{
    ck_assert_int_eq(qat_qmodel_num_units(a), qat_qmodel_num_units(b));
    ck_assert_int_eq(qat_qmodel_num_params(a), qat_qmodel_num_params(b));
    for (int u = 0; u < qat_qmodel_num_units(a); u++) {
        qat_qunit *ua = qat_qmodel_unit(a, u), *ub = qat_qmodel_unit(b, u);
        ck_assert_str_eq(ua->name, ub->name);
        ck_assert_int_eq(ua->kind, ub->kind);
        ck_assert_int_eq(ua->bn_frozen, ub->bn_frozen);
        ck_assert_msg(!memcmp(&ua->cfg, &ub->cfg, sizeof ua->cfg), "unit %s: configuration", ua->name);
        char what[96];
        snprintf(what, sizeof what, "%s.weight", ua->name);
        assert_quantizer_eq(&ua->weight, &ub->weight, what);
        snprintf(what, sizeof what, "%s.act", ua->name);
        assert_quantizer_eq(&ua->act, &ub->act, what);
    }
    for (int i = 0; i < qat_qmodel_num_params(a); i++)
        ck_assert_str_eq(qat_qmodel_params(a)[i].name, qat_qmodel_params(b)[i].name);
}

/* a few QAT steps from PTQ; returns the optimizer */
static qat_optim *qat_steps(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, int steps, uint64_t seed)
{
    int np = qat_model_num_params(m), nq = qat_qmodel_num_params(qm);
    qat_named_tensor *all = malloc((size_t)(np + nq + 1) * sizeof *all);
    memcpy(all, qat_model_params(m), (size_t)np * sizeof *all);
    if (nq) memcpy(all + np, qat_qmodel_params(qm), (size_t)nq * sizeof *all);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.01;
    o.momentum = 0.9;
    qat_optim *opt = qat_optim_create(all, np + nq, &o);
    NN(opt);
    free(all);
    qat_rng r;
    qat_rng_seed(&r, seed);
    qat_ctx_set_training(ctx, 1);
    qat_ctx_set_grad(ctx, 1);
    for (int s = 0; s < steps; s++) {
        int idx[32];
        uint8_t lab[32];
        for (int k = 0; k < 32; k++) idx[k] = (int)qat_rng_below(&r, (uint32_t)g_train->n), lab[k] = g_train->labels[idx[k]];
        qat_tensor *x = qat_new(ctx, 4, (int[]){32, 1, 28, 28});
        OK(qat_dataset_normalize_into(g_train, idx, 32, x->data));
        qat_tensor *loss = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, x), lab);
        qat_optim_zero_grad(opt);
        OK(qat_backward(ctx, loss));
        OK(qat_optim_step(opt));
        qat_qmodel_clamp_params(qm);
        qat_ctx_reset(ctx);
    }
    return opt;
}

static void checkpoint_roundtrip(const char *spec, int calib)
{
    load_data();
    qat_model *m = qat_model_build("lenet5", 131);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel *qm = ptq(ctx, m, spec, calib);
    qat_qmodel_set_observers(qm, 1);
    qat_optim *opt = qat_steps(ctx, m, qm, 3, 132);
    /* mixed switches to round-trip */
    qat_qmodel_unit(qm, 1)->bn_frozen = 1;
    qat_qmodel_unit(qm, 3)->act.observe = 0;
    qat_qmodel_unit(qm, 4)->weight.fake_quant = 0;
    qat_train_state st, st2;
    qat_train_state_init(&st);
    qat_train_state_init(&st2);
    st.epoch = 1;
    st.global_step = 3;
    st.seed = 99;
    qat_qrecipe rec = {.method = "qat", .calib_size = 512, .freeze_bn_after = 1, .freeze_observers_after = 2};
    snprintf(rec.spec, sizeof rec.spec, "%s", spec);
    snprintf(rec.calib, sizeof rec.calib, "%s", qat_calibrator_name((qat_calibrator)(calib < 0 ? 1 : calib)));
    char path[256];
    snprintf(path, sizeof path, "%s", tu_tmp_path("qat-ckpt.h5"));
    OK(qat_qcheckpoint_save(path, qm, opt, &st, &rec));

    qat_model *m2 = NULL;
    qat_qrecipe rec2;
    qat_qmodel *qm2 = qat_qmodel_load(path, &m2, &st2, &rec2);
    NN(qm2);
    NN(m2);
    ck_assert_str_eq(qat_model_arch(m2), "lenet5");
    ck_assert_str_eq(rec2.method, "qat");
    ck_assert_str_eq(rec2.spec, spec);
    ck_assert_str_eq(rec2.calib, rec.calib);
    ck_assert_int_eq(rec2.calib_size, 512);
    ck_assert_int_eq(rec2.freeze_bn_after, 1);
    ck_assert_int_eq(rec2.freeze_observers_after, 2);
    ck_assert_int_eq(st2.epoch, 1);
    ck_assert_int_eq(st2.global_step, 3);
    assert_qmodels_eq(qm, qm2);
    /* the optimizer over model + quantization parameters reloads */
    int np = qat_model_num_params(m2), nq = qat_qmodel_num_params(qm2);
    qat_named_tensor *all = malloc((size_t)(np + nq + 1) * sizeof *all);
    memcpy(all, qat_model_params(m2), (size_t)np * sizeof *all);
    if (nq) memcpy(all + np, qat_qmodel_params(qm2), (size_t)nq * sizeof *all);
    qat_optim *opt2 = qat_optim_load(path, all, np + nq);
    NN(opt2);
    free(all);
    ck_assert_int_eq(qat_optim_step_count(opt2), 3);

    /* forward: bitwise identical, in evaluation and in training */
    qat_tensor *x = qat_new(ctx, 4, (int[]){64, 1, 28, 28});
    OK(qat_dataset_normalize_into(g_test, NULL, 64, x->data));
    for (int tr = 0; tr < 2; tr++) {
        qat_ctx_set_training(ctx, tr);
        qat_tensor *y1 = qat_qmodel_forward(ctx, qm, x), *y2 = qat_qmodel_forward(ctx, qm2, x);
        NN(y1);
        NN(y2);
        ck_assert_msg(!memcmp(y1->data, y2->data, y1->numel * sizeof(float)), "%s: outputs differ (training %d)",
                      spec, tr);
        /* another observing step on both: identical parameters and state */
        assert_qmodels_eq(qm, qm2);
    }
    /* and the training continues identically */
    qat_ctx_reset(ctx);
    qat_optim_free(opt);
    qat_optim_free(opt2);
    qat_train_state_free(&st);
    qat_train_state_free(&st2);
    qat_qmodel_free(qm);
    qat_qmodel_free(qm2);
    qat_model_free(m);
    qat_model_free(m2);
    qat_ctx_free(ctx);
}

START_TEST(test_checkpoint_w4a4_lsq) { checkpoint_roundtrip("w4a4", -1); }
END_TEST

START_TEST(test_checkpoint_w8a8_ema) { checkpoint_roundtrip("w8a8", QAT_CALIBRATOR_EMA); }
END_TEST

START_TEST(test_checkpoint_w8a8_kl) { checkpoint_roundtrip("w8a8", QAT_CALIBRATOR_KL); }
END_TEST

static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) return -1;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    return fclose(b);
}

/* overwrite a float32 1-D dataset's first element */
static void poke_f32(const char *path, const char *dset, float v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "%s: no dataset %s", path, dset);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    float *buf = malloc((size_t)n * sizeof(float));
    ck_assert_int_ge(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    buf[0] = v;
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    free(buf);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

static void poke_attr_i32(const char *path, const char *obj, const char *attr, int idx, int32_t v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    ck_assert_int_ge(o, 0);
    hid_t a = H5Aopen(o, attr, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    int32_t buf[32];
    ck_assert_int_ge(H5Aread(a, H5T_NATIVE_INT32, buf), 0);
    buf[idx] = v;
    ck_assert_int_ge(H5Awrite(a, H5T_NATIVE_INT32, buf), 0);
    H5Aclose(a);
    H5Oclose(o);
    H5Fclose(f);
}

START_TEST(test_checkpoint_corrupt)
{
    load_data();
    qat_model *m = qat_model_build("lenet5", 141);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel *qm = ptq(ctx, m, "w4a4", -1);
    char good[256], bad[256];
    snprintf(good, sizeof good, "%s", tu_tmp_path("good.h5"));
    snprintf(bad, sizeof bad, "%s", tu_tmp_path("bad.h5"));
    OK(qat_qcheckpoint_save(good, qm, NULL, NULL, NULL));
    qat_model *m2 = NULL;
    qat_qmodel *qm2 = qat_qmodel_load(good, &m2, NULL, NULL);
    NN(qm2);
    qat_qmodel_free(qm2);
    qat_model_free(m2);

    static const struct {
        const char *dset;
        float v;
        const char *want; /* in the message */
    } cases[] = {
        {"/quant/units/001/act/scale", -1.0f, "scale"},
        {"/quant/units/001/weight/scale", 0.0f, "scale"},
        {"/quant/units/002/act/scale", NAN, "scale"},
        {"/quant/units/001/act/lsq_scale", -0.5f, "scale"},
        {"/quant/units/001/weight/lsq_scale", INFINITY, "scale"},
        {"/quant/units/001/act/lsq_zero_point", 100.0f, "zero point"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        OK(copy_file(good, bad) ? QAT_ERR_IO : QAT_OK);
        poke_f32(bad, cases[k].dset, cases[k].v);
        m2 = (qat_model *)1;
        qat_clear_error();
        ck_assert_msg(qat_qmodel_load(bad, &m2, NULL, NULL) == NULL, "%s = %g accepted", cases[k].dset, cases[k].v);
        ck_assert_ptr_null(m2);
        const char *e = qat_last_error();
        if (getenv("QAT_TEST_VERBOSE")) fprintf(stderr, "%s\n", e);
        ck_assert_msg(strstr(e, "bad.h5") && strstr(e, cases[k].want), "%s: message '%s'", cases[k].dset, e);
    }
    /* a zero point out of range; a scheme that is not the configured one */
    OK(copy_file(good, bad) ? QAT_ERR_IO : QAT_OK);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/quant/units/001/act/zero_point", H5P_DEFAULT);
    int32_t zp = 1000;
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, &zp), 0);
    H5Dclose(d);
    H5Fclose(f);
    ck_assert_ptr_null(qat_qmodel_load(bad, &m2, NULL, NULL));
    ck_assert_msg(strstr(qat_last_error(), "zero point"), "%s", qat_last_error());

    OK(copy_file(good, bad) ? QAT_ERR_IO : QAT_OK);
    poke_attr_i32(bad, "/quant/units/002/weight", "scheme", 0, 6);
    ck_assert_ptr_null(qat_qmodel_load(bad, &m2, NULL, NULL));
    ck_assert_msg(strstr(qat_last_error(), "scheme"), "%s", qat_last_error());

    OK(copy_file(good, bad) ? QAT_ERR_IO : QAT_OK);
    poke_attr_i32(bad, "/quant/units/002/act", "flags", 1, 7);
    ck_assert_ptr_null(qat_qmodel_load(bad, &m2, NULL, NULL));
    ck_assert_msg(strstr(qat_last_error(), "flags"), "%s", qat_last_error());

    /* a float checkpoint is not a QAT checkpoint */
    OK(qat_checkpoint_save(bad, m, NULL, NULL));
    ck_assert_ptr_null(qat_qmodel_load(bad, &m2, NULL, NULL));
    ck_assert_msg(strstr(qat_last_error(), "float-checkpoint"), "%s", qat_last_error());
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

/* A model with more units than QAT_MAX_OVERRIDES saves and loads. */
START_TEST(test_checkpoint_many_units)
{
    qat_model *m = qat_model_create(2, 4, 4);
    int x = 0;
    for (int i = 0; i < 70; i++) {
        x = qat_model_conv2d(m, NULL, x, 2, 3, 1, 1, 1);
        x = qat_model_relu(m, NULL, x);
    }
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(m, 151));
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "20=w4a8"));
    OK(qat_qconfig_add_override(&cfg, "40=float"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    ck_assert_int_eq(qat_qmodel_num_units(qm), 71);
    qat_ctx *ctx = qat_ctx_create(0);
    calibrate_random(ctx, qm, 2, 1, 152);
    const char *path = tu_tmp_path("many.h5");
    OK(qat_qcheckpoint_save(path, qm, NULL, NULL, NULL));
    qat_model *m2 = NULL;
    qat_qmodel *qm2 = qat_qmodel_load(path, &m2, NULL, NULL);
    NN(qm2);
    assert_qmodels_eq(qm, qm2);
    ck_assert_int_eq(qat_qmodel_unit(qm2, qat_qmodel_find_unit(qm2, "20"))->weight.qmax, 7);
    ck_assert_int_eq(qat_qmodel_unit(qm2, qat_qmodel_find_unit(qm2, "40"))->cfg.quantize, 0);
    /* the same outputs */
    qat_ctx_set_training(ctx, 0);
    qat_rng r;
    qat_rng_seed(&r, 153);
    qat_tensor *xin = random_input(ctx, m, 2, -1, 1, &r);
    qat_tensor *y1 = qat_qmodel_forward(ctx, qm, xin), *y2 = qat_qmodel_forward(ctx, qm2, xin);
    NN(y1);
    NN(y2);
    ck_assert_int_eq(memcmp(y1->data, y2->data, y1->numel * sizeof(float)), 0);
    qat_qmodel_free(qm2);
    qat_model_free(m2);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

static void teardown_all(void)
{
    qat_model_free(g_lenet);
    qat_dataset_free(g_train);
    qat_dataset_free(g_test);
    g_lenet = NULL;
    g_train = g_test = NULL;
}

static Suite *qat_suite(void)
{
    Suite *s = suite_create("qat");
    TCase *t = tcase_create("units");
    tcase_add_loop_test(t, test_units_reference_models, 0, 4);
    tcase_add_loop_test(t, test_units_forward_reference_models, 0, 4);
    tcase_add_test(t, test_units_unsupported_bn);
    tcase_add_test(t, test_units_overrides);
    tcase_add_test(t, test_config_parse);
    suite_add_tcase(s, t);

    t = tcase_create("bn_fold");
    tcase_add_test(t, test_bn_fold_eval);
    tcase_add_test(t, test_bn_fold_training);
    suite_add_tcase(s, t);

    t = tcase_create("forward");
    tcase_add_test(t, test_fake_quant_forward_by_hand);
    tcase_add_test(t, test_per_tensor_weights);
    tcase_add_test(t, test_uncalibrated);
    suite_add_tcase(s, t);

    t = tcase_create("grad");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_grad_fold_frozen);
    tcase_add_test(t, test_grad_fold_training);
    tcase_add_test(t, test_grad_ste_exact);
    tcase_add_test(t, test_grad_lsq_exact);
    tcase_add_test(t, test_lsq_clamp);
    tcase_add_test(t, test_lsq_projected_without_clamp);
    tcase_add_test(t, test_public_ops_match_quantizers);
    suite_add_tcase(s, t);

    t = tcase_create("switches");
    tcase_add_test(t, test_switch_freeze_bn);
    tcase_add_test(t, test_switch_observers);
    tcase_add_test(t, test_switch_fake_quant);
    tcase_add_test(t, test_integer_eval);
    tcase_add_test(t, test_fq_relu_op);
    suite_add_tcase(s, t);

    t = tcase_create("ptq");
    tcase_set_timeout(t, 120);
    tcase_add_loop_test(t, test_ptq_calibrators, 0, QAT_CALIBRATOR_COUNT);
    tcase_add_test(t, test_ptq_w2a8_loses);
    tcase_add_test(t, test_ptq_recalibrate);
    suite_add_tcase(s, t);

    t = tcase_create("metrics");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_error_metrics_by_hand);
    tcase_add_test(t, test_layer_errors);
    suite_add_tcase(s, t);

    t = tcase_create("checkpoint");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_checkpoint_w4a4_lsq);
    tcase_add_test(t, test_checkpoint_w8a8_ema);
    tcase_add_test(t, test_checkpoint_w8a8_kl);
    tcase_add_test(t, test_checkpoint_corrupt);
    tcase_add_test(t, test_checkpoint_many_units);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(qat_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    teardown_all();
    return failed ? 1 : 0;
}
