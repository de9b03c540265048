/* tests/test_mobilenet.c: quantization of MobileNet-class graphs
 * (docs/QUANT.md, section 18): grouped / depthwise convs with BN folding,
 * fused relu6 and per-channel clamps, hardswish / hardsigmoid / clamp act
 * units (int8 tables), concat in both modes (requantize, shared scale),
 * upsample.
 *
 * - BN folding with groups: the folded conv equals conv + BN (eval).
 * - mobilenet, mobilenet-hs (random init, calibrated on random pixels),
 *   and a U-Net-like graph (conv -> maxpool -> conv -> upsample -> concat
 *   with the first conv -> depthwise conv with per-channel relu6 bounds ->
 *   conv -> hardsigmoid -> clamp -> ...), exported at w8a8 per channel and
 *   run by the int8 runtime: every op's int8 output equal to the fake-quant
 *   model's (integer-grid evaluation), element for element.
 * - Act units: in the float32 fake-quant graph every hardswish /
 *   hardsigmoid / clamp output is exactly its int8 table applied to its
 *   input grid.
 * - QAT steps: gradients reach the weights through every new unit and the
 *   learnable scales of act / concat units (a shared group's scale too).
 * - The graph checks name the op and its shape. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/data.h"
#include "qat/optim.h"
#include "qat/qio.h"
#include "qat/quant.h"
#include "qat/runtime.h"
#include "quant/internal.h"
#include "testutil.h"

#define OK(e)                                                                                  \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());               \
    } while (0)
#define RT_OK(e)                                                                               \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_rt_last_error());            \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

#define MEAN 0.2860f
#define STD 0.3530f

/* ---- helpers ---- */

/* n random images of m's input shape as uint8 pixels, and the float input
 * the input op's LUT stands for ((p / 255 - mean) / std, as the exporter
 * computes it). */
static void random_pixels(const qat_model *m, int n, uint64_t seed, uint8_t **px, float **xf)
{
    const qat_layer *in = qat_model_layer_c(m, 0);
    size_t per = (size_t)in->out_shape[0] * in->out_shape[1] * in->out_shape[2];
    qat_rng r;
    qat_rng_seed(&r, seed);
    *px = malloc((size_t)n * per);
    *xf = malloc((size_t)n * per * sizeof(float));
    ck_assert(*px && *xf);
    for (size_t i = 0; i < (size_t)n * per; i++) {
        (*px)[i] = (uint8_t)qat_rng_below(&r, 256);
        (*xf)[i] = ((float)(*px)[i] / 255.0f - MEAN) / STD;
    }
}

static qat_tensor *input_tensor(qat_ctx *ctx, const qat_model *m, const float *x, int n)
{
    const qat_layer *in = qat_model_layer_c(m, 0);
    qat_tensor *t = qat_new(ctx, 4, (int[]){n, in->out_shape[0], in->out_shape[1], in->out_shape[2]});
    NN(t);
    memcpy(t->data, x, t->numel * sizeof(float));
    return t;
}

/* PTQ on `batches` batches of 16 random images: observers on, fake-quant
 * off, finalize. */
static void calibrate_random(qat_qmodel *qm, int batches, uint64_t seed)
{
    qat_model *m = qat_qmodel_float(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int b = 0; b < batches; b++) {
        uint8_t *px;
        float *xf;
        random_pixels(m, 16, seed + (uint64_t)b, &px, &xf);
        OK(qat_qmodel_calibrate(ctx, qm, input_tensor(ctx, m, xf, 16)));
        qat_ctx_reset(ctx);
        free(px);
        free(xf);
    }
    OK(qat_qmodel_finalize(qm));
    qat_ctx_free(ctx);
}

static qat_qmodel *prepare(qat_model *m, const char *spec, int concat_mode)
{
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, spec));
    cfg.concat_mode = concat_mode;
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    return qm;
}

/* The layer whose output an int8 op gives: its unit's output layer (a
 * unit's op is named after its head layer), or the layer itself. */
static int op_layer(qat_qmodel *qm, const char *name)
{
    int li = qat_model_find(qat_qmodel_float(qm), name);
    ck_assert_msg(li >= 0, "op '%s' names no layer", name);
    int u = qm->layer_owner[li];
    return u >= 0 ? qm->units[u].last : li;
}

typedef struct {
    long compared, equal;
    long logits, logits_equal;
    int ops, isas; /* ops of the file; kernel families run */
} exactness;

/* Exports qm, runs the runtime on n random images with every kernel
 * family the CPU has (reference C, AVX2, AVX-512 VNNI) and compares every
 * op's int8 output with the fake-quant model's output of the same layer
 * (evaluated in `mode`), as grid indices round(v / s) + z. The counts add
 * up over the kernel families. */
static exactness run_exact(qat_qmodel *qm, const char *file, int n, uint64_t seed, qat_eval_mode mode)
{
    qat_model *m = qat_qmodel_float(qm);
    const char *path = tu_tmp_path(file);
    qat_export_opts eo = qat_export_opts_defaults();
    eo.mean = MEAN;
    eo.std = STD;
    OK(qat_export_int8(qm, path, &eo));
    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(path, &rt));
    RT_OK(qat_rt_prepare(rt, n));
    uint8_t *px;
    float *xf;
    random_pixels(m, n, seed, &px, &xf);
    int K = qat_rt_num_classes(rt);
    int8_t *logits = malloc((size_t)n * K);
    ck_assert_ptr_nonnull(logits);

    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    OK(qat_qmodel_set_eval_mode(qm, mode));
    qat_tensor **out = qat_qmodel_forward_all(ctx, qm, input_tensor(ctx, m, xf, n));
    NN(out);
    OK(qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID));
    exactness e = {0};
    e.ops = qat_rt_num_ops(rt);
    for (int isa = QAT_RT_ISA_REF; isa <= (int)qat_rt_best_isa(); isa++) {
        if (qat_rt_set_isa(rt, (qat_rt_isa)isa) != QAT_OK) continue; /* not on this CPU */
        RT_OK(qat_rt_run_u8(rt, px, n, logits));
        for (int i = 1; i < e.ops; i++) { /* op 0: the input LUT, checked through op 1 */
            qat_rt_op_info info;
            RT_OK(qat_rt_op(rt, i, &info));
            const int8_t *q = qat_rt_op_output(rt, i);
            ck_assert_ptr_nonnull(q);
            const qat_tensor *y = out[op_layer(qm, info.name)];
            size_t per = 1;
            for (int d = 0; d < info.out_ndim; d++) per *= (size_t)info.out_shape[d];
            ck_assert_msg(y->numel == per * (size_t)n, "op %d '%s': %zu elements, the layer has %zu", i, info.name,
                          per * (size_t)n, y->numel);
            long bad = 0, first = -1;
            for (size_t k = 0; k < y->numel; k++) {
                long v = lrintf(y->data[k] / info.out_scale) + info.out_zero_point;
                if (v != q[k]) {
                    if (first < 0) first = (long)k;
                    bad++;
                }
            }
            if (bad && mode == QAT_EVAL_INTEGER_GRID)
                printf("test_mobilenet: %s (%s kernels) op %d %s '%s': %ld of %zu differ (first at %ld: runtime %d, "
                       "fake-quant %ld)\n",
                       file, qat_rt_isa_name((qat_rt_isa)isa), i, info.type, info.name, bad, y->numel, first, q[first],
                       lrintf(y->data[first] / info.out_scale) + info.out_zero_point);
            e.compared += (long)y->numel;
            e.equal += (long)y->numel - bad;
            if (i == e.ops - 1) {
                e.logits += (long)y->numel;
                e.logits_equal += (long)y->numel - bad;
                for (size_t k = 0; k < y->numel; k++) ck_assert_int_eq(logits[k], q[k]);
            }
        }
        e.isas++;
    }
    ck_assert_int_ge(e.isas, 1);
    qat_ctx_free(ctx);
    qat_rt_free(rt);
    free(logits);
    free(px);
    free(xf);
    return e;
}

static void assert_exact(const char *what, exactness e)
{
    printf("test_mobilenet: %-34s %d ops x %d kernel families, %ld of %ld int8 outputs equal (%.6f%%), logits %ld of "
           "%ld\n",
           what, e.ops, e.isas, e.equal, e.compared, 100.0 * (double)e.equal / (double)e.compared, e.logits_equal,
           e.logits);
    ck_assert_msg(e.compared > 0 && e.equal == e.compared, "%s: %ld of %ld int8 outputs differ", what,
                  e.compared - e.equal, e.compared);
}

/* ---- 1. BN folding with groups ---- */

static const struct {
    int cin, cout, groups;
} fold_cases[] = {{8, 12, 4}, {6, 12, 6}, {6, 6, 6}, {4, 8, 1}};

START_TEST(test_bn_fold_groups)
{
    int C = fold_cases[_i].cin, OC = fold_cases[_i].cout, G = fold_cases[_i].groups;
    qat_model *m = qat_model_create(C, 9, 9);
    NN(m);
    int x = qat_model_conv2d_grouped(m, "conv", 0, OC, 3, 2, 1, G, _i % 2);
    x = qat_model_batchnorm2d(m, "bn", x);
    ck_assert_msg(x > 0, "%s", qat_last_error());
    OK(qat_model_init(m, 7));
    qat_rng r;
    qat_rng_seed(&r, 3 + (uint64_t)_i);
    qat_layer *bn = qat_model_layer(m, x);
    for (int c = 0; c < OC; c++) {
        bn->weight->data[c] = 0.5f + qat_rng_uniform(&r);
        bn->bias->data[c] = qat_rng_uniform(&r) - 0.5f;
        bn->running_mean->data[c] = 0.4f * (qat_rng_uniform(&r) - 0.5f);
        bn->running_var->data[c] = 0.2f + 2.0f * qat_rng_uniform(&r);
    }
    qat_qmodel *qm = prepare(m, "w8a8", 0);
    ck_assert_int_eq(qat_qmodel_num_units(qm), 2);
    qat_qunit *un = qat_qmodel_unit(qm, 1);
    ck_assert_int_eq(un->kind, QAT_UNIT_CONV);
    ck_assert_int_eq(un->bn, x);
    ck_assert_int_eq(un->weight.n, OC); /* per output channel */
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *in = qat_new(ctx, 4, (int[]){3, C, 9, 9});
    NN(in);
    tu_fill_uniform(in->data, in->numel, -2, 2, &r);
    qat_tensor *ref = qat_model_forward(ctx, m, in);
    qat_tensor *w, *b;
    OK(qat_qunit_fold(ctx, qm, un, &w, &b));
    ck_assert_int_eq(w->shape[0], OC);
    ck_assert_int_eq(w->shape[1], C / G);
    const qat_layer *l = qat_model_layer_c(m, 1);
    qat_tensor *y = qat_conv2d_grouped(ctx, in, w, b, l->stride, l->pad, G);
    NN(y);
    NN(ref);
    ck_assert_int_eq(y->numel, ref->numel);
    double maxerr = 0;
    for (size_t i = 0; i < y->numel; i++) {
        double e = fabs((double)y->data[i] - ref->data[i]) / (1.0 + fabs(ref->data[i]));
        if (e > maxerr) maxerr = e;
    }
    ck_assert_msg(maxerr < 1e-5, "groups %d: folded conv differs from conv+BN by %g", G, maxerr);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 2. the reference models, exported and run ---- */

static const char *const archs[] = {"mobilenet", "mobilenet-hs"};

START_TEST(test_mobilenet_exact)
{
    qat_model *m = qat_model_build(archs[_i], 40 + (uint64_t)_i);
    NN(m);
    qat_qmodel *qm = prepare(m, "w8a8", 0);
    /* units: stem.conv+bn+relu6 fused, depthwise convs with groups */
    int u = qat_qmodel_find_unit(qm, "blocks.0.dw.conv");
    ck_assert_int_ge(u, 0);
    qat_qunit *un = qat_qmodel_unit(qm, u);
    ck_assert_int_eq(un->kind, QAT_UNIT_CONV);
    ck_assert_int_ge(un->bn, 0);
    ck_assert_int_ge(un->relu, 0);
    ck_assert_int_eq(qat_model_layer_c(m, un->relu)->type, QAT_LAYER_CLAMP);
    ck_assert_int_eq(qat_model_layer_c(m, un->head)->groups, 16);
    int acts = 0;
    for (int k = 0; k < qat_qmodel_num_units(qm); k++) acts += qat_qmodel_unit(qm, k)->kind == QAT_UNIT_ACT;
    /* mobilenet-hs: hardswish in blocks 3..6 (expand and dw) and the head */
    ck_assert_int_eq(acts, _i ? 9 : 0);
    /* input, stem, 3 + 6 * 3 convs, 3 adds, head, gap, fc (+ the acts) */
    ck_assert_int_eq(qat_qmodel_num_units(qm), 29 + acts);
    if (_i) { /* hardswish: its own unit after the conv+BN unit */
        int ue = qat_qmodel_find_unit(qm, "blocks.3.expand.conv"), ua = qat_qmodel_find_unit(qm, "blocks.3.expand.act");
        ck_assert_int_ge(ue, 0);
        ck_assert_int_ge(ua, 0);
        ck_assert_int_eq(qat_qmodel_unit(qm, ue)->relu, -1);
        ck_assert_int_eq(qat_qmodel_unit(qm, ue)->last, qat_model_find(m, "blocks.3.expand.bn"));
        ck_assert_int_eq(qat_qmodel_unit(qm, ua)->kind, QAT_UNIT_ACT);
        ck_assert_int_eq(qat_qmodel_unit(qm, ua)->in_unit[0], ue);
        ck_assert_int_eq(qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, "blocks.3.dw.conv"))->in_unit[0], ua);
    }
    calibrate_random(qm, 4, 100);
    char file[64];
    snprintf(file, sizeof file, "%s.int8.h5", archs[_i]);
    exactness e = run_exact(qm, file, 24, 900 + (uint64_t)_i, QAT_EVAL_INTEGER_GRID);
    assert_exact(archs[_i], e);
    /* the float32 graph: reported (it rounds differently near ties) */
    exactness f = run_exact(qm, file, 24, 900 + (uint64_t)_i, QAT_EVAL_FLOAT32_GRAPH);
    printf("test_mobilenet: %s float32 graph: %.4f%% of int8 outputs equal\n", archs[_i],
           100.0 * (double)f.equal / (double)f.compared);
    ck_assert(f.equal >= f.compared * 0.95);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 3. a U-Net-like graph ---- */

/* input 1x16x16
 *   c1 conv(8, k3 p1) bn relu6 ------------------------------.
 *   mp maxpool 2 -> c2 conv(8, k3 p1) relu -> up upsample x2 -> cat concat(up, c1)
 *   dw conv(16, k3 p1, groups 16) bn relu6 (per-channel bounds) -> c3 conv(6, k1)
 *   -> hsig hardsigmoid -> clip clamp(0.1, 0.8) -> hs2 hardswish
 *   -> gap -> fc linear(10) */
static qat_model *unet(uint64_t seed)
{
    qat_model *m = qat_model_create(1, 16, 16);
    NN(m);
    int c1 = qat_model_conv2d(m, "c1", 0, 8, 3, 1, 1, 0);
    c1 = qat_model_batchnorm2d(m, "bn1", c1);
    c1 = qat_model_relu6(m, "r1", c1);
    int x = qat_model_maxpool2d(m, "mp", c1, 2, 2);
    x = qat_model_conv2d(m, "c2", x, 8, 3, 1, 1, 1);
    x = qat_model_relu(m, "r2", x);
    x = qat_model_upsample(m, "up", x, 2);
    x = qat_model_concat(m, "cat", x, c1);
    x = qat_model_conv2d_grouped(m, "dw", x, 16, 3, 1, 1, 16, 0);
    x = qat_model_batchnorm2d(m, "dwbn", x);
    int clip6 = x = qat_model_relu6(m, "dwact", x);
    x = qat_model_conv2d(m, "c3", x, 6, 1, 1, 0, 1);
    x = qat_model_hardsigmoid(m, "hsig", x);
    x = qat_model_clamp(m, "clip", x, 0.1f, 0.8f);
    x = qat_model_hardswish(m, "hs2", x);
    x = qat_model_global_avgpool(m, "gap", x);
    x = qat_model_linear(m, "fc", x, 10, 1);
    ck_assert_msg(x > 0, "unet: %s", qat_last_error());
    OK(qat_model_init(m, seed));
    /* c2's outputs wider than c1's: the concat's own range is not c1's */
    qat_layer *l2 = qat_model_layer(m, qat_model_find(m, "c2"));
    for (size_t k = 0; k < l2->weight->numel; k++) l2->weight->data[k] *= 4.0f;
    float hi[16];
    for (int c = 0; c < 16; c++) hi[c] = 1.0f + 0.3f * (float)c; /* as CLE would set them */
    OK(qat_layer_set_clamp_channels(m, clip6, hi));
    /* BN statistics that are not the identity */
    qat_layer *bn = qat_model_layer(m, qat_model_find(m, "dwbn"));
    for (int c = 0; c < 16; c++) {
        bn->running_mean->data[c] = 0.05f * (float)(c % 5) - 0.1f;
        bn->running_var->data[c] = 0.5f + 0.1f * (float)(c % 7);
        bn->weight->data[c] = 0.8f + 0.05f * (float)c;
    }
    return m;
}

START_TEST(test_unet_exact)
{
    int mode = _i; /* QAT_CONCAT_REQUANTIZE, QAT_CONCAT_SHARED */
    qat_model *m = unet(5);
    qat_qmodel *qm = prepare(m, "w8a8", mode);
    const char *kinds[][2] = {{"input", "input"}, {"c1", "conv"}, {"c2", "conv"}, {"cat", "concat"}, {"dw", "conv"},
                              {"c3", "conv"},     {"hsig", "act"},  {"clip", "act"}, {"hs2", "act"},    {"gap", "pool"},
                              {"fc", "conv"}};
    ck_assert_int_eq(qat_qmodel_num_units(qm), 11);
    for (int k = 0; k < 11; k++) {
        int u = qat_qmodel_find_unit(qm, kinds[k][0]);
        ck_assert_msg(u >= 0, "no unit %s", kinds[k][0]);
        ck_assert_str_eq(qat_unit_kind_name(qat_qmodel_unit(qm, u)->kind), kinds[k][1]);
    }
    int ucat = qat_qmodel_find_unit(qm, "cat"), uc1 = qat_qmodel_find_unit(qm, "c1"),
        uc2 = qat_qmodel_find_unit(qm, "c2");
    ck_assert_int_eq(qat_qmodel_unit(qm, uc1)->act_share, mode ? ucat : -1);
    ck_assert_int_eq(qat_qmodel_unit(qm, uc2)->act_share, mode ? ucat : -1);
    ck_assert_int_eq(qat_qmodel_unit(qm, ucat)->act_share, -1);
    calibrate_random(qm, 3, 7);
    const qat_qunit *cat = qat_qmodel_unit(qm, ucat), *u1 = qat_qmodel_unit(qm, uc1);
    if (mode) { /* the members carry the concat's parameters */
        ck_assert_float_eq(u1->act.scale[0], qat_quantizer_scales(&cat->act)[0]);
        ck_assert_int_eq(u1->act.zero_point[0], cat->act.zero_point[0]);
    } else {
        ck_assert_float_ne(u1->act.scale[0], cat->act.scale[0]);
    }
    exactness e = run_exact(qm, mode ? "unet-shared.int8.h5" : "unet.int8.h5", 20, 77, QAT_EVAL_INTEGER_GRID);
    assert_exact(mode ? "unet, shared concat scale" : "unet, requantizing concat", e);
    /* the concat op: identity multipliers when shared */
    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(tu_tmp_path(mode ? "unet-shared.int8.h5" : "unet.int8.h5"), &rt));
    for (int i = 0; i < qat_rt_num_ops(rt); i++) {
        qat_rt_op_info a, b, c;
        RT_OK(qat_rt_op(rt, i, &a));
        if (strcmp(a.type, "concat")) continue;
        RT_OK(qat_rt_op(rt, a.inputs[0], &b));
        RT_OK(qat_rt_op(rt, a.inputs[1], &c));
        ck_assert_str_eq(b.type, "upsample");
        ck_assert_str_eq(c.name, "c1");
        if (mode) {
            ck_assert_float_eq(b.out_scale, a.out_scale);
            ck_assert_float_eq(c.out_scale, a.out_scale);
            ck_assert_int_eq(b.out_zero_point, a.out_zero_point);
        }
    }
    qat_rt_free(rt);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* Nested concats whose inputs are the network input, an act unit and a
 * conv: with a shared scale every one of them (and the inner concat) uses
 * the outer concat's quantizer.
 *   input 1x8x8 -> hs hardswish -------------.
 *   input -> b conv(3, k3 p1) relu6 -> cat1 concat(hs, b) -> cat2 concat(cat1, input)
 *   -> c conv(4, k3 s2) -> fl flatten -> fc linear(10) */
START_TEST(test_concat_groups)
{
    int mode = _i;
    qat_model *m = qat_model_create(1, 8, 8);
    NN(m);
    int hs = qat_model_hardswish(m, "hs", 0);
    int b = qat_model_conv2d(m, "b", 0, 3, 3, 1, 1, 1);
    b = qat_model_relu6(m, "br", b);
    int x = qat_model_concat(m, "cat1", hs, b);
    x = qat_model_concat(m, "cat2", x, 0);
    x = qat_model_conv2d(m, "c", x, 4, 3, 2, 0, 1);
    x = qat_model_flatten(m, "fl", x);
    x = qat_model_linear(m, "fc", x, 10, 1);
    ck_assert_msg(x > 0, "%s", qat_last_error());
    OK(qat_model_init(m, 21));
    qat_qmodel *qm = prepare(m, "w8a8", mode);
    int root = qat_qmodel_find_unit(qm, "cat2");
    const char *members[] = {"input", "hs", "b", "cat1"};
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, members[k]))->act_share, mode ? root : -1);
    calibrate_random(qm, 3, 13);
    if (mode) /* the root saw the union of its members' ranges */
        for (int k = 0; k < 4; k++)
            ck_assert_float_eq(qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, members[k]))->act.scale[0],
                               qat_qmodel_unit(qm, root)->act.scale[0]);
    exactness e = run_exact(qm, mode ? "groups-shared.int8.h5" : "groups.int8.h5", 16, 5, QAT_EVAL_INTEGER_GRID);
    assert_exact(mode ? "nested concats, shared" : "nested concats, requantizing", e);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 4. act units: table == fake-quant, bit for bit ---- */

START_TEST(test_act_tables)
{
    qat_model *m = _i ? unet(9) : qat_model_build("mobilenet-hs", 3);
    NN(m);
    qat_qmodel *qm = prepare(m, _i ? "w8a8" : "w8a4", 0); /* 4-bit outputs too */
    calibrate_random(qm, 3, 31);
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    uint8_t *px;
    float *xf;
    random_pixels(m, 12, 5, &px, &xf);
    long checked = 0;
    for (int mode = 0; mode < 2; mode++) {
        OK(qat_qmodel_set_eval_mode(qm, mode ? QAT_EVAL_FLOAT32_GRAPH : QAT_EVAL_INTEGER_GRID));
        qat_tensor **out = qat_qmodel_forward_all(ctx, qm, input_tensor(ctx, m, xf, 12));
        NN(out);
        for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
            qat_qunit *un = qat_qmodel_unit(qm, u);
            if (un->kind != QAT_UNIT_ACT) continue;
            int8_t table[256];
            OK(qat_act_table(qm, un, table));
            const qat_layer *l = qat_model_layer_c(m, un->head);
            const qat_quantizer *iq = &qat_qmodel_unit(qm, un->in_unit[0])->act;
            float si = qat_quantizer_scales(iq)[0], so = qat_quantizer_scales(&un->act)[0];
            int32_t zi, zo;
            qat_quantizer_zero_points(iq, &zi);
            qat_quantizer_zero_points(&un->act, &zo);
            const qat_tensor *x = out[l->inputs[0]], *y = out[un->head];
            ck_assert_int_eq(x->numel, y->numel);
            for (size_t k = 0; k < x->numel; k++) {
                long q = lrintf(x->data[k] / si) + zi;
                ck_assert(q >= -128 && q <= 127);
                float want = (float)(table[q + 128] - zo) * so;
                ck_assert_msg(memcmp(&want, &y->data[k], sizeof want) == 0,
                              "%s unit '%s' element %zu: table gives %a, fake-quant %a", mode ? "float32" : "grid",
                              un->name, k, (double)want, (double)y->data[k]);
            }
            checked += (long)x->numel;
        }
        qat_ctx_reset(ctx);
    }
    ck_assert_int_gt(checked, 1000);
    free(px);
    free(xf);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 5. QAT steps ---- */

static const struct {
    const char *arch, *spec;
    int concat_mode;
} train_cases[] = {
    {"mobilenet-hs", "w8a8", 0}, {"mobilenet-hs", "w4a4", 0}, {"unet", "w4a4", 1}, {"unet", "w8a8", 1}};

START_TEST(test_qat_steps)
{
    qat_model *m = strcmp(train_cases[_i].arch, "unet") ? qat_model_build(train_cases[_i].arch, 8) : unet(8);
    NN(m);
    qat_qmodel *qm = prepare(m, train_cases[_i].spec, train_cases[_i].concat_mode);
    int np = qat_qmodel_parameters(qm, NULL, 0);
    qat_named_tensor *p = malloc((size_t)np * sizeof *p);
    ck_assert_ptr_nonnull(p);
    qat_qmodel_parameters(qm, p, np);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.01;
    qat_optim *opt = qat_optim_create(p, np, &o);
    NN(opt);
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 1);
    int lsq = !strcmp(train_cases[_i].spec, "w4a4");
    float first = 0, last = 0;
    for (int step = 0; step < 4; step++) {
        uint8_t *px, yb[16];
        float *xf;
        random_pixels(m, 16, 50 + (uint64_t)step, &px, &xf);
        for (int k = 0; k < 16; k++) yb[k] = (uint8_t)(px[k * 7] % 10);
        qat_tensor *logits = qat_qmodel_forward(ctx, qm, input_tensor(ctx, m, xf, 16));
        NN(logits);
        qat_tensor *loss = qat_cross_entropy(ctx, logits, yb);
        NN(loss);
        ck_assert(isfinite(loss->data[0]));
        if (!step) first = loss->data[0];
        last = loss->data[0];
        qat_optim_zero_grad(opt);
        OK(qat_backward(ctx, loss));
        /* gradients: every conv weight (through hardswish tables, clamps,
         * concat, upsample), and the learnable activation scales of the act
         * and concat units */
        for (int k = 0; k < np; k++) {
            const char *nm = p[k].name;
            int weight = strstr(nm, ".weight") && !strstr(nm, "scale") && !strstr(nm, "bn");
            int act_scale = strstr(nm, ".act_scale") != NULL;
            if (!weight && !act_scale) continue;
            if (act_scale && step == 0) continue; /* initialised by the first forward */
            double g = 0;
            for (size_t e = 0; p[k].t->grad && e < p[k].t->numel; e++) g += fabs(p[k].t->grad[e]);
            ck_assert_msg(g > 0, "%s: step %d, no gradient reaches %s", train_cases[_i].arch, step, nm);
        }
        OK(qat_optim_step(opt));
        qat_qmodel_clamp_params(qm);
        qat_ctx_reset(ctx);
        free(px);
        free(xf);
    }
    printf("test_mobilenet: QAT %s %s%s: loss %.4f -> %.4f\n", train_cases[_i].arch, train_cases[_i].spec,
           train_cases[_i].concat_mode ? " shared" : "", first, last);
    /* learnable scales exist where expected: act units' and the concat's;
     * a shared group's members have none of their own */
    int with_scale = 0;
    for (int k = 0; k < np; k++) with_scale += strstr(p[k].name, ".act_scale") != NULL;
    if (lsq) ck_assert_int_gt(with_scale, 0);
    if (train_cases[_i].concat_mode) {
        int found = 0;
        for (int k = 0; k < np; k++) {
            found += !strcmp(p[k].name, "cat.act_scale");
            ck_assert_msg(strcmp(p[k].name, "c1.act_scale") && strcmp(p[k].name, "c2.act_scale"),
                          "a shared member has its own scale: %s", p[k].name);
        }
        ck_assert_int_eq(found, lsq);
    }
    /* the trained model still exports bit-exact (learned scales too) */
    {
        qat_qmodel_set_observers(qm, 0);
        char file[64];
        snprintf(file, sizeof file, "trained-%d.int8.h5", _i);
        exactness e = run_exact(qm, file, 8, 3, QAT_EVAL_INTEGER_GRID);
        assert_exact(file, e);
    }
    qat_ctx_free(ctx);
    qat_optim_free(opt);
    free(p);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 6. checkpoints keep the concat mode ---- */

START_TEST(test_checkpoint_shared)
{
    qat_model *m = unet(12);
    qat_qmodel *qm = prepare(m, "w8a8", QAT_CONCAT_SHARED);
    calibrate_random(qm, 2, 9);
    const char *path = tu_tmp_path("unet-shared.qat.h5");
    OK(qat_qcheckpoint_save(path, qm, NULL, NULL, NULL));
    qat_model *m2 = NULL;
    qat_qmodel *q2 = qat_qmodel_load(path, &m2, NULL, NULL);
    NN(q2);
    ck_assert_int_eq(qat_qmodel_config(q2)->concat_mode, QAT_CONCAT_SHARED);
    int u = qat_qmodel_find_unit(q2, "c1");
    ck_assert_int_eq(qat_qmodel_unit(q2, u)->act_share, qat_qmodel_find_unit(q2, "cat"));
    ck_assert_ptr_nonnull(qat_model_layer_c(m2, qat_model_find(m2, "dwact"))->clamp_hi_c);
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    uint8_t *px;
    float *xf;
    random_pixels(m, 8, 4, &px, &xf);
    qat_tensor *a = qat_qmodel_forward(ctx, qm, input_tensor(ctx, m, xf, 8));
    qat_tensor *b = qat_qmodel_forward(ctx, q2, input_tensor(ctx, m2, xf, 8));
    NN(a);
    NN(b);
    ck_assert_mem_eq(a->data, b->data, a->numel * sizeof(float));
    free(px);
    free(xf);
    qat_ctx_free(ctx);
    qat_qmodel_free(q2);
    qat_model_free(m2);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 7. what is refused, by name and shape ---- */

START_TEST(test_unsupported)
{
    /* a clamp with per-channel bounds that is not fused into a conv */
    qat_model *m = qat_model_create(2, 6, 6);
    int x = qat_model_conv2d(m, "c", 0, 4, 3, 1, 1, 0);
    x = qat_model_maxpool2d(m, "mp", x, 2, 2);
    int cl = qat_model_relu6(m, "clip", x);
    x = qat_model_flatten(m, "fl", cl);
    x = qat_model_linear(m, "fc", x, 3, 1);
    ck_assert_int_gt(x, 0);
    OK(qat_model_init(m, 1));
    OK(qat_layer_set_clamp_channels(m, cl, (const float[]){1, 2, 3, 4}));
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    ck_assert_msg(strstr(qat_last_error(), "clamp 'clip' [4,3,3]") != NULL, "%s", qat_last_error());
    OK(qat_layer_set_clamp_channels(m, cl, NULL));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    ck_assert_int_eq(qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, "clip"))->kind, QAT_UNIT_ACT);
    qat_qmodel_free(qm);
    qat_model_free(m);

    /* a shared concat scale with a float input unit */
    m = unet(2);
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "c2=float"));
    cfg.concat_mode = QAT_CONCAT_SHARED;
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    ck_assert_msg(strstr(qat_last_error(), "concat 'cat' [16,16,16]") != NULL, "%s", qat_last_error());
    cfg.concat_mode = 7;
    ck_assert_ptr_null(qat_qmodel_prepare(m, &cfg));
    /* requantizing: prepare works, export names the concat */
    cfg.concat_mode = QAT_CONCAT_REQUANTIZE;
    qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    calibrate_random(qm, 1, 2);
    ck_assert_int_ne(qat_export_int8(qm, tu_tmp_path("never.int8.h5"), &(qat_export_opts){MEAN, STD, NULL}), QAT_OK);
    ck_assert_msg(strstr(qat_last_error(), "float") != NULL, "%s", qat_last_error());
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

static Suite *mobilenet_suite(void)
{
    Suite *s = suite_create("mobilenet");
    TCase *t = tcase_create("core");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, test_bn_fold_groups, 0, (int)(sizeof fold_cases / sizeof fold_cases[0]));
    tcase_add_loop_test(t, test_mobilenet_exact, 0, 2);
    tcase_add_loop_test(t, test_unet_exact, 0, 2);
    tcase_add_loop_test(t, test_concat_groups, 0, 2);
    tcase_add_loop_test(t, test_act_tables, 0, 2);
    tcase_add_loop_test(t, test_qat_steps, 0, (int)(sizeof train_cases / sizeof train_cases[0]));
    tcase_add_test(t, test_checkpoint_shared);
    tcase_add_test(t, test_unsupported);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mobilenet_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
