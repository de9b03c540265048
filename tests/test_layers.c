/* Model graphs: the reference models of docs/MODELS.md (layers, shapes, names,
 * parameter counts equal to PyTorch's), initialisation, builder errors, a
 * custom model forward/backward, and a tiny model that learns. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/model.h"
#include "testutil.h"

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

#define ASSERT_ERR_HAS(sub) \
    ck_assert_msg(has(qat_last_error(), sub), "last error '%s' lacks '%s'", qat_last_error(), sub)

/* Parameter counts from PyTorch: the docs/MODELS.md nets built with torch.nn
 * (conv without bias before BN) and counted with
 * sum(p.numel() for p in m.parameters()) (torch 1.13). Tensors: number of
 * parameters(); buffers: running_mean/var (num_batches_tracked aside). */
static const struct {
    const char *arch;
    size_t params;
    int n_params, n_buffers, n_layers;
} ref_models[] = {
    {"mlp", 235146, 6, 0, 7},        /* input flatten 5 */
    {"lenet5", 61728, 12, 4, 15},    /* input 8 features flatten 5 classifier */
    {"convnet", 468010, 16, 8, 19},  /* input 4x(conv bn relu) 2 pools flatten 3 */
    {"resnet8", 77754, 29, 18, 31},  /* input stem 3, blocks 7+9+9, gap fc */
    /* input stem 3, block 0 7, blocks 1-6 9 or 10 (add on 2, 4, 6), head 3, gap flatten fc */
    {"mobilenet", 96362, 68, 44, 67},
    {"mobilenet-hs", 96362, 68, 44, 67},
};

static const qat_named_tensor *find_param(const qat_model *m, const char *name)
{
    int n = qat_model_num_params(m);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < n; i++)
        if (strcmp(p[i].name, name) == 0) return &p[i];
    n = qat_model_num_buffers(m);
    p = qat_model_buffers(m);
    for (int i = 0; i < n; i++)
        if (strcmp(p[i].name, name) == 0) return &p[i];
    return NULL;
}

static void assert_tensor(const qat_model *m, const char *name, int ndim, int d0, int d1, int d2,
                          int d3)
{
    const qat_named_tensor *p = find_param(m, name);
    ck_assert_msg(p != NULL, "%s: no tensor '%s'", qat_model_arch(m), name);
    int d[4] = {d0, d1, d2, d3};
    ck_assert_msg(p->t->ndim == ndim, "%s: ndim %d, expected %d", name, p->t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        ck_assert_msg(p->t->shape[i] == d[i], "%s: dim %d is %d, expected %d", name, i,
                      p->t->shape[i], d[i]);
}

START_TEST(test_reference_models)
{
    qat_set_num_threads(2);
    qat_model *m = qat_model_build(ref_models[_i].arch, 1);
    ck_assert_msg(m != NULL, "%s: %s", ref_models[_i].arch, qat_last_error());
    ck_assert_str_eq(qat_model_arch(m), ref_models[_i].arch);
    ck_assert_int_eq(qat_model_num_layers(m), ref_models[_i].n_layers);
    ck_assert_uint_eq(qat_model_param_count(m), ref_models[_i].params);
    ck_assert_int_eq(qat_model_num_params(m), ref_models[_i].n_params);
    ck_assert_int_eq(qat_model_num_buffers(m), ref_models[_i].n_buffers);
    const qat_layer *in = qat_model_layer_c(m, 0);
    ck_assert_int_eq(in->type, QAT_LAYER_INPUT);
    ck_assert_int_eq(in->out_shape[0], 1);
    ck_assert_int_eq(in->out_shape[1], 28);
    ck_assert_int_eq(in->out_shape[2], 28);
    const qat_layer *out = qat_model_layer_c(m, qat_model_num_layers(m) - 1);
    ck_assert_int_eq(out->type, QAT_LAYER_LINEAR);
    ck_assert_int_eq(out->out_ndim, 1);
    ck_assert_int_eq(out->out_shape[0], 10);
    ck_assert_ptr_null(qat_model_layer_c(m, qat_model_num_layers(m)));
    ck_assert_ptr_null(qat_model_layer_c(m, -1));

    /* forward on a random batch, training and evaluation; every layer's
     * output has the shape the builder announced */
    qat_rng r;
    qat_rng_seed(&r, 5);
    qat_ctx *ctx = qat_ctx_create(0);
    for (int training = 1; training >= 0; training--) {
        qat_ctx_set_training(ctx, training);
        qat_tensor *x = qat_new(ctx, 4, (int[]){3, 1, 28, 28});
        tu_fill_uniform(x->data, x->numel, -1, 2, &r);
        qat_tensor **all = qat_model_forward_all(ctx, m, x);
        ck_assert_msg(all != NULL, "%s", qat_last_error());
        for (int i = 0; i < qat_model_num_layers(m); i++) {
            const qat_layer *l = qat_model_layer_c(m, i);
            ck_assert_int_eq(all[i]->shape[0], 3);
            ck_assert_msg(all[i]->ndim == l->out_ndim + 1, "layer %s: ndim %d", l->name, all[i]->ndim);
            for (int k = 0; k < l->out_ndim; k++) ck_assert_int_eq(all[i]->shape[k + 1], l->out_shape[k]);
        }
        qat_tensor *y = all[qat_model_num_layers(m) - 1];
        ck_assert_int_eq(y->ndim, 2);
        ck_assert_int_eq(y->shape[1], 10);
        for (size_t k = 0; k < y->numel; k++) ck_assert(isfinite(y->data[k]));
        qat_ctx_reset(ctx);
    }
    /* backward reaches every parameter */
    qat_ctx_set_training(ctx, 1);
    qat_tensor *x = qat_new(ctx, 4, (int[]){4, 1, 28, 28});
    tu_fill_uniform(x->data, x->numel, -1, 2, &r);
    const uint8_t lab[4] = {1, 7, 3, 9};
    qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, x), lab);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < qat_model_num_params(m); i++) {
        double s = 0;
        for (size_t k = 0; k < p[i].t->numel; k++) s += fabs(p[i].t->grad[k]);
        ck_assert_msg(s > 0, "%s: %s got no gradient", ref_models[_i].arch, p[i].name);
    }
    qat_model_zero_grad(m);
    for (int i = 0; i < qat_model_num_params(m); i++)
        for (size_t k = 0; k < p[i].t->numel; k++) ck_assert(p[i].t->grad[k] == 0.0f);
    qat_ctx_free(ctx);
    qat_model_free(m);
}
END_TEST

/* qat_model_forward runs each BN + ReLU pair as one op; forward_all runs
 * every layer: the logits, every parameter gradient and the running
 * statistics must be the same bits, on every engine */
static const char *const fused_archs[] = {"convnet", "resnet8", "mobilenet", "mobilenet-hs", "mobilenet"};

START_TEST(test_bn_relu_fused_same_bits)
{
    /* case 4: per-channel clamp bounds (BN + clamp_channels fused) */
    const char *arch = fused_archs[_i];
    qat_set_num_threads(2);
    qat_rng r;
    qat_rng_seed(&r, 9);
    float x[6 * 784];
    tu_fill_uniform(x, 6 * 784, -1, 2, &r);
    const uint8_t lab[6] = {1, 7, 3, 9, 0, 4};
    float *g[2] = {NULL, NULL}, *st[2] = {NULL, NULL}, logits[2][60];
    size_t ng = 0, ns = 0;
    for (int fused = 0; fused < 2; fused++) {
        qat_model *m = qat_model_build(arch, 1);
        if (_i == 4) {
            float hi[64];
            for (int c = 0; c < 64; c++) hi[c] = 0.05f + 0.1f * (float)(c % 16);
            ck_assert_int_eq(qat_layer_set_clamp_channels(m, qat_model_find(m, "stem.act"), hi), QAT_OK);
            ck_assert_int_eq(qat_layer_set_clamp_channels(m, qat_model_find(m, "blocks.1.dw.act"), hi), QAT_OK);
        }
        qat_ctx *ctx = qat_ctx_create(0);
        qat_tensor *xt = qat_from(ctx, 4, (int[]){6, 1, 28, 28}, x);
        qat_tensor *y = fused ? qat_model_forward(ctx, m, xt) : qat_model_forward_all(ctx, m, xt)[qat_model_num_layers(m) - 1];
        ck_assert_ptr_nonnull(y);
        memcpy(logits[fused], y->data, sizeof logits[0]);
        ck_assert_int_eq(qat_backward(ctx, qat_cross_entropy(ctx, y, lab)), QAT_OK);
        const qat_named_tensor *p = qat_model_params(m), *b = qat_model_buffers(m);
        ng = ns = 0;
        for (int i = 0; i < qat_model_num_params(m); i++) ng += p[i].t->numel;
        for (int i = 0; i < qat_model_num_buffers(m); i++) ns += b[i].t->numel;
        g[fused] = malloc(ng * sizeof(float));
        st[fused] = malloc(ns * sizeof(float));
        size_t o = 0;
        for (int i = 0; i < qat_model_num_params(m); i++, o += p[i - 1].t->numel)
            memcpy(g[fused] + o, p[i].t->grad, p[i].t->numel * sizeof(float));
        o = 0;
        for (int i = 0; i < qat_model_num_buffers(m); i++, o += b[i - 1].t->numel)
            memcpy(st[fused] + o, b[i].t->data, b[i].t->numel * sizeof(float));
        qat_ctx_free(ctx);
        qat_model_free(m);
    }
    ck_assert_msg(memcmp(logits[0], logits[1], sizeof logits[0]) == 0, "%s: logits differ", arch);
    ck_assert_msg(memcmp(g[0], g[1], ng * sizeof(float)) == 0, "%s: gradients differ", arch);
    ck_assert_msg(memcmp(st[0], st[1], ns * sizeof(float)) == 0, "%s: BN statistics differ", arch);
    for (int k = 0; k < 2; k++) free(g[k]), free(st[k]);
}
END_TEST

/* qat_add_relu against qat_add then qat_relu, bit for bit: values, and
 * the gradients of both inputs, with sums that cancel exactly, signed
 * zeros in inputs and upstream gradients, one tensor as both inputs, and a
 * gradient that accumulates (a also read by a later op); below and above
 * the size where the loops go parallel. */
START_TEST(test_add_relu_fused_same_bits)
{
    const int n = _i == 0 ? 37 : 70001;
    qat_set_num_threads(2);
    qat_rng r;
    qat_rng_seed(&r, 21 + (uint64_t)_i);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
    tu_fill_uniform(a, n, -1, 1, &r);
    tu_fill_uniform(b, n, -1, 1, &r);
    tu_fill_uniform(c, n, -1, 1, &r);
    for (int i = 0; i < n; i += 5) b[i] = -a[i];            /* a + b = 0 exactly */
    for (int i = 1; i < n; i += 7) a[i] = -0.0f, b[i] = 0.0f; /* -0 + 0 */
    for (int i = 2; i < n; i += 11) a[i] = b[i] = -0.0f;      /* -0 + -0 = -0 */
    for (int i = 3; i < n; i += 6) c[i] = i % 4 ? 0.0f : -0.0f; /* signed zero upstream gradients */
    for (int alias = 0; alias < 2; alias++)
        for (int reuse = 0; reuse < 2; reuse++) {
            float *out[2], *ga[2], *gb[2];
            for (int fused = 0; fused < 2; fused++) {
                qat_ctx *ctx = qat_ctx_create(0);
                qat_tensor *ta = qat_new_leaf(ctx, 1, &n, a), *tb = alias ? ta : qat_new_leaf(ctx, 1, &n, b);
                qat_tensor *tc = qat_from(ctx, 1, &n, c);
                qat_tensor *z = fused ? qat_add_relu(ctx, ta, tb) : qat_relu(ctx, qat_add(ctx, ta, tb));
                ck_assert_ptr_nonnull(z);
                qat_tensor *y = qat_mul(ctx, z, tc);
                if (reuse) y = qat_add(ctx, y, ta); /* a's gradient: written first by this add */
                ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, y)), QAT_OK);
                out[fused] = malloc(n * sizeof(float));
                ga[fused] = malloc(n * sizeof(float));
                gb[fused] = malloc(n * sizeof(float));
                memcpy(out[fused], z->data, n * sizeof(float));
                memcpy(ga[fused], ta->grad, n * sizeof(float));
                memcpy(gb[fused], tb->grad, n * sizeof(float));
                qat_ctx_free(ctx);
            }
            ck_assert_msg(memcmp(out[0], out[1], n * sizeof(float)) == 0, "n %d alias %d reuse %d: values differ", n,
                          alias, reuse);
            ck_assert_msg(memcmp(ga[0], ga[1], n * sizeof(float)) == 0, "n %d alias %d reuse %d: d/da differs", n,
                          alias, reuse);
            ck_assert_msg(memcmp(gb[0], gb[1], n * sizeof(float)) == 0, "n %d alias %d reuse %d: d/db differs", n,
                          alias, reuse);
            /* and the values are relu(a + b) */
            for (int i = 0; i < n; i++) {
                float v = a[i] + (alias ? a[i] : b[i]);
                ck_assert(out[1][i] == (v > 0 ? v : 0.0f) && !signbit(out[1][i]));
            }
            for (int k = 0; k < 2; k++) free(out[k]), free(ga[k]), free(gb[k]);
        }
    free(a), free(b), free(c);
}
END_TEST

START_TEST(test_mlp_names)
{
    qat_model *m = qat_model_build("mlp", 0);
    const char *names[6] = {"classifier.0.weight", "classifier.0.bias", "classifier.2.weight",
                            "classifier.2.bias", "classifier.4.weight", "classifier.4.bias"};
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < 6; i++) ck_assert_str_eq(p[i].name, names[i]);
    assert_tensor(m, "classifier.0.weight", 2, 256, 784, 0, 0);
    assert_tensor(m, "classifier.2.weight", 2, 128, 256, 0, 0);
    assert_tensor(m, "classifier.4.bias", 1, 10, 0, 0, 0);
    ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "flatten"))->out_shape[0], 784);
    qat_model_free(m);
}
END_TEST

START_TEST(test_lenet5_names)
{
    qat_model *m = qat_model_build("lenet5", 0);
    /* the parameter order is the PyTorch order (torch names 0., 1., 4., ...
     * under features/classifier Sequentials) */
    const char *names[12] = {"features.0.weight",   "features.1.weight",  "features.1.bias",
                             "features.4.weight",   "features.5.weight",  "features.5.bias",
                             "classifier.0.weight", "classifier.0.bias",  "classifier.2.weight",
                             "classifier.2.bias",   "classifier.4.weight", "classifier.4.bias"};
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < 12; i++) ck_assert_str_eq(p[i].name, names[i]);
    assert_tensor(m, "features.0.weight", 4, 6, 1, 5, 5);
    assert_tensor(m, "features.4.weight", 4, 16, 6, 5, 5);
    assert_tensor(m, "features.1.running_mean", 1, 6, 0, 0, 0);
    assert_tensor(m, "features.5.running_var", 1, 16, 0, 0, 0);
    assert_tensor(m, "classifier.0.weight", 2, 120, 400, 0, 0);
    assert_tensor(m, "classifier.2.weight", 2, 84, 120, 0, 0);
    assert_tensor(m, "classifier.4.weight", 2, 10, 84, 0, 0);
    ck_assert_ptr_null(find_param(m, "features.0.bias")); /* conv before BN: no bias */
    /* weight decay exclusions: biases and BN parameters */
    ck_assert_int_eq(find_param(m, "features.0.weight")->no_decay, 0);
    ck_assert_int_eq(find_param(m, "features.1.weight")->no_decay, 1);
    ck_assert_int_eq(find_param(m, "features.1.bias")->no_decay, 1);
    ck_assert_int_eq(find_param(m, "classifier.0.weight")->no_decay, 0);
    ck_assert_int_eq(find_param(m, "classifier.0.bias")->no_decay, 1);
    ck_assert_int_eq(find_param(m, "features.4.weight")->layer, qat_model_find(m, "features.4"));
    /* per-layer shapes */
    static const struct {
        const char *name;
        int c, h, w;
    } shp[] = {{"features.0", 6, 28, 28}, {"features.3", 6, 14, 14}, {"features.4", 16, 10, 10},
               {"features.7", 16, 5, 5}};
    for (size_t i = 0; i < sizeof shp / sizeof shp[0]; i++) {
        const qat_layer *l = qat_model_layer_c(m, qat_model_find(m, shp[i].name));
        ck_assert_ptr_nonnull(l);
        ck_assert_int_eq(l->out_shape[0], shp[i].c);
        ck_assert_int_eq(l->out_shape[1], shp[i].h);
        ck_assert_int_eq(l->out_shape[2], shp[i].w);
    }
    const qat_layer *l = qat_model_layer_c(m, qat_model_find(m, "features.0"));
    ck_assert_int_eq(l->type, QAT_LAYER_CONV2D);
    ck_assert_int_eq(l->kernel, 5);
    ck_assert_int_eq(l->pad, 2);
    ck_assert_int_eq(l->has_bias, 0);
    l = qat_model_layer_c(m, qat_model_find(m, "features.1"));
    ck_assert_int_eq(l->type, QAT_LAYER_BATCHNORM2D);
    ck_assert_float_eq(l->bn_eps, 1e-5f);
    ck_assert_float_eq(l->bn_momentum, 0.1f);
    ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "flatten"))->out_shape[0], 400);
    qat_model_free(m);
}
END_TEST

START_TEST(test_resnet8_names)
{
    qat_model *m = qat_model_build("resnet8", 0);
    assert_tensor(m, "stem.conv.weight", 4, 16, 1, 3, 3);
    assert_tensor(m, "stem.bn.weight", 1, 16, 0, 0, 0);
    assert_tensor(m, "layer1.conv1.weight", 4, 16, 16, 3, 3);
    assert_tensor(m, "layer1.bn2.bias", 1, 16, 0, 0, 0);
    ck_assert_ptr_null(find_param(m, "layer1.shortcut.0.weight")); /* identity shortcut */
    assert_tensor(m, "layer2.conv1.weight", 4, 32, 16, 3, 3);
    assert_tensor(m, "layer2.shortcut.0.weight", 4, 32, 16, 1, 1);
    assert_tensor(m, "layer2.shortcut.1.running_var", 1, 32, 0, 0, 0);
    assert_tensor(m, "layer3.conv2.weight", 4, 64, 64, 3, 3);
    assert_tensor(m, "layer3.shortcut.0.weight", 4, 64, 32, 1, 1);
    assert_tensor(m, "fc.weight", 2, 10, 64, 0, 0);
    assert_tensor(m, "fc.bias", 1, 10, 0, 0, 0);
    const qat_layer *l = qat_model_layer_c(m, qat_model_find(m, "layer2.conv1"));
    ck_assert_int_eq(l->stride, 2);
    ck_assert_int_eq(l->out_shape[1], 14);
    l = qat_model_layer_c(m, qat_model_find(m, "layer2.add"));
    ck_assert_int_eq(l->type, QAT_LAYER_ADD);
    ck_assert_int_eq(l->n_inputs, 2);
    ck_assert_int_eq(l->inputs[0], qat_model_find(m, "layer2.bn2"));
    ck_assert_int_eq(l->inputs[1], qat_model_find(m, "layer2.shortcut.1"));
    l = qat_model_layer_c(m, qat_model_find(m, "layer1.add"));
    ck_assert_int_eq(l->inputs[1], qat_model_find(m, "stem.relu")); /* identity */
    l = qat_model_layer_c(m, qat_model_find(m, "layer3.relu2"));
    ck_assert_int_eq(l->out_shape[0], 64);
    ck_assert_int_eq(l->out_shape[1], 7);
    ck_assert_int_eq(l->out_shape[2], 7);
    ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "gap"))->out_shape[0], 64);
    qat_model_free(m);
}
END_TEST

/* The PyTorch peer's MobileNet (bench/peer_pytorch.py): its state_dict
 * keys and shapes, its module types. */
START_TEST(test_mobilenet_names)
{
    static const int blocks[7][4] = {{16, 16, 1, 1}, {16, 24, 4, 2}, {24, 24, 4, 1}, {24, 32, 4, 2},
                                     {32, 32, 4, 1}, {32, 64, 4, 1}, {64, 64, 4, 1}};
    for (int hs = 0; hs < 2; hs++) {
        qat_model *m = qat_model_build(hs ? "mobilenet-hs" : "mobilenet", 1);
        ck_assert_ptr_nonnull(m);
        assert_tensor(m, "stem.conv.weight", 4, 16, 1, 3, 3);
        assert_tensor(m, "stem.bn.running_mean", 1, 16, 0, 0, 0);
        ck_assert_ptr_null(find_param(m, "stem.conv.bias"));
        ck_assert_ptr_null(find_param(m, "blocks.0.expand.conv.weight"));
        char n[96];
        int prev = qat_model_find(m, "stem.act");
        for (int i = 0; i < 7; i++) {
            int cin = blocks[i][0], cout = blocks[i][1], t = blocks[i][2], st = blocks[i][3], h = cin * t;
            const char *act = hs && i >= 3 ? "hardswish" : "clamp";
            if (t != 1) {
                snprintf(n, sizeof n, "blocks.%d.expand.conv.weight", i);
                assert_tensor(m, n, 4, h, cin, 1, 1);
                snprintf(n, sizeof n, "blocks.%d.expand.bn.running_var", i);
                assert_tensor(m, n, 1, h, 0, 0, 0);
                snprintf(n, sizeof n, "blocks.%d.expand.act", i);
                ck_assert_str_eq(qat_layer_type_name(qat_model_layer_c(m, qat_model_find(m, n))->type), act);
                snprintf(n, sizeof n, "blocks.%d.expand.conv", i);
                ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, n))->inputs[0], prev);
            }
            snprintf(n, sizeof n, "blocks.%d.dw.conv.weight", i);
            assert_tensor(m, n, 4, h, 1, 3, 3);
            snprintf(n, sizeof n, "blocks.%d.dw.conv", i);
            const qat_layer *dw = qat_model_layer_c(m, qat_model_find(m, n));
            ck_assert_int_eq(dw->groups, h);
            ck_assert_int_eq(dw->stride, st);
            ck_assert_int_eq(dw->pad, 1);
            ck_assert_int_eq(dw->has_bias, 0);
            snprintf(n, sizeof n, "blocks.%d.dw.bn.weight", i);
            assert_tensor(m, n, 1, h, 0, 0, 0);
            snprintf(n, sizeof n, "blocks.%d.dw.act", i);
            const qat_layer *a = qat_model_layer_c(m, qat_model_find(m, n));
            ck_assert_str_eq(qat_layer_type_name(a->type), act);
            if (a->type == QAT_LAYER_CLAMP) {
                ck_assert_float_eq(a->clamp_lo, 0.0f);
                ck_assert_float_eq(a->clamp_hi, 6.0f);
            }
            snprintf(n, sizeof n, "blocks.%d.project.conv.weight", i);
            assert_tensor(m, n, 4, cout, h, 1, 1);
            snprintf(n, sizeof n, "blocks.%d.project.bn.bias", i);
            assert_tensor(m, n, 1, cout, 0, 0, 0);
            snprintf(n, sizeof n, "blocks.%d.add", i);
            int add = qat_model_find(m, n);
            if (st == 1 && cin == cout) {
                ck_assert_int_ge(add, 0);
                const qat_layer *l = qat_model_layer_c(m, add);
                snprintf(n, sizeof n, "blocks.%d.project.bn", i);
                ck_assert_int_eq(l->inputs[0], qat_model_find(m, n));
                ck_assert_int_eq(l->inputs[1], prev);
                prev = add;
            } else {
                ck_assert_int_eq(add, -1);
                snprintf(n, sizeof n, "blocks.%d.project.bn", i);
                prev = qat_model_find(m, n);
            }
        }
        ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "head.conv"))->inputs[0], prev);
        assert_tensor(m, "head.conv.weight", 4, 256, 64, 1, 1);
        ck_assert_str_eq(qat_layer_type_name(qat_model_layer_c(m, qat_model_find(m, "head.act"))->type),
                         hs ? "hardswish" : "clamp");
        ck_assert_str_eq(qat_layer_type_name(qat_model_layer_c(m, qat_model_find(m, "stem.act"))->type), "clamp");
        ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "gap"))->type, QAT_LAYER_GLOBAL_AVGPOOL);
        ck_assert_int_eq(qat_model_layer_c(m, qat_model_find(m, "flatten"))->type, QAT_LAYER_FLATTEN);
        assert_tensor(m, "fc.weight", 2, 10, 256, 0, 0);
        assert_tensor(m, "fc.bias", 1, 10, 0, 0, 0);
        /* PyTorch's init of a depthwise conv: fan_in = 1 * 3 * 3, bound 1/3 */
        const qat_named_tensor *w = find_param(m, "blocks.6.dw.conv.weight");
        float mx = 0;
        for (size_t k = 0; k < w->t->numel; k++) mx = fabsf(w->t->data[k]) > mx ? fabsf(w->t->data[k]) : mx;
        ck_assert_float_le(mx, 1.0f / 3.0f);
        ck_assert_float_gt(mx, 0.3f);
        qat_model_free(m);
    }
}
END_TEST

START_TEST(test_new_layer_builders)
{
    qat_model *m = qat_model_create(4, 6, 6);
    int c = qat_model_conv2d_grouped(m, "g", 0, 6, 3, 1, 1, 2, 1);
    ck_assert_int_ge(c, 0);
    const qat_layer *l = qat_model_layer_c(m, c);
    ck_assert_int_eq(l->groups, 2);
    ck_assert_int_eq(l->weight->shape[0], 6);
    ck_assert_int_eq(l->weight->shape[1], 2);
    ck_assert_int_eq(qat_model_layer_c(m, qat_model_conv2d(m, "d", 0, 4, 1, 1, 0, 0))->groups, 1);
    int r6 = qat_model_relu6(m, "r6", c);
    ck_assert_float_eq(qat_model_layer_c(m, r6)->clamp_hi, 6.0f);
    int up = qat_model_upsample(m, "up", r6, 3);
    ck_assert_int_eq(qat_model_layer_c(m, up)->out_shape[1], 18);
    ck_assert_int_eq(qat_model_layer_c(m, up)->kernel, 3);
    int cat = qat_model_concat(m, "cat", c, 0);
    ck_assert_int_eq(qat_model_layer_c(m, cat)->out_shape[0], 10);
    ck_assert_int_ge(qat_model_hardswish(m, "hs", cat), 0);
    ck_assert_int_ge(qat_model_hardsigmoid(m, "hsig", cat), 0);
    /* per-channel bounds */
    float hi[6] = {1, 2, 3, 4, 5, 6};
    int nb = qat_model_num_buffers(m);
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, r6, hi), QAT_OK);
    ck_assert_int_eq(qat_model_num_buffers(m), nb + 1);
    ck_assert_ptr_nonnull(find_param(m, "r6.clamp_hi"));
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, cat, hi), QAT_ERR_ARG);
    hi[2] = -1;
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, r6, hi), QAT_ERR_ARG);
    ck_assert(strstr(qat_last_error(), "channel 2 upper bound -1 below the lower bound 0"));
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, r6, NULL), QAT_OK);
    ck_assert_int_eq(qat_model_num_buffers(m), nb);
    qat_model_free(m);

    /* errors */
    m = qat_model_create(4, 6, 6);
    ck_assert_int_eq(qat_model_conv2d_grouped(m, "g", 0, 6, 3, 1, 1, 3, 0), QAT_ERR_ARG);
    ck_assert(strstr(qat_last_error(), "3 groups do not divide 4 input and 6 output channels"));
    qat_model_free(m);
    m = qat_model_create(4, 6, 6);
    ck_assert_int_eq(qat_model_clamp(m, "c", 0, 2.0f, 1.0f), QAT_ERR_ARG);
    qat_model_free(m);
    m = qat_model_create(4, 6, 6);
    int p = qat_model_maxpool2d(m, "p", 0, 2, 2);
    ck_assert_int_eq(qat_model_concat(m, "cat", 0, p), QAT_ERR_SHAPE);
    ck_assert(strstr(qat_last_error(), "concat: 'input' and 'p' differ"));
    qat_model_free(m);
    m = qat_model_create(4, 6, 6);
    ck_assert_int_eq(qat_model_upsample(m, "u", 0, 0), QAT_ERR_ARG);
    qat_model_free(m);
    m = qat_model_create(4, 6, 6);
    int f = qat_model_flatten(m, "f", 0);
    ck_assert_int_eq(qat_model_upsample(m, "u", f, 2), QAT_ERR_SHAPE);
    qat_model_free(m);
}
END_TEST

START_TEST(test_layer_type_names)
{
    for (int t = 0; t < QAT_LAYER_COUNT; t++) {
        const char *n = qat_layer_type_name((qat_layer_type)t);
        ck_assert_ptr_nonnull(n);
        ck_assert_int_eq(qat_layer_type_from_name(n), t);
    }
    ck_assert_str_eq(qat_layer_type_name(QAT_LAYER_CONV2D), "conv2d");
    ck_assert_str_eq(qat_layer_type_name(QAT_LAYER_GLOBAL_AVGPOOL), "global_avgpool");
    ck_assert_ptr_null(qat_layer_type_name(QAT_LAYER_COUNT));
    ck_assert_int_eq(qat_layer_type_from_name("conv3d"), -1);
    ck_assert_int_eq(qat_layer_type_from_name(NULL), -1);
}
END_TEST

/* ---- initialisation ---- */

START_TEST(test_init)
{
    qat_model *a = qat_model_build("lenet5", 42), *b = qat_model_build("lenet5", 42);
    qat_model *c = qat_model_build("lenet5", 43);
    const qat_named_tensor *pa = qat_model_params(a), *pb = qat_model_params(b),
                           *pc = qat_model_params(c);
    int n = qat_model_num_params(a);
    for (int i = 0; i < n; i++) {
        const qat_tensor *t = pa[i].t;
        ck_assert_int_eq(memcmp(t->data, pb[i].t->data, t->numel * sizeof(float)), 0);
        const qat_layer *l = qat_model_layer_c(a, pa[i].layer);
        if (l->type == QAT_LAYER_BATCHNORM2D) {
            float want = strstr(pa[i].name, ".weight") ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->numel; k++) ck_assert(t->data[k] == want);
            continue;
        }
        ck_assert_msg(memcmp(t->data, pc[i].t->data, t->numel * sizeof(float)) != 0,
                      "%s: seeds 42 and 43 give the same values", pa[i].name);
        /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases */
        const qat_tensor *w = l->weight;
        double fan_in = (double)(w->numel / (size_t)w->shape[0]);
        double bound = 1.0f / sqrtf((float)fan_in) * (1 + 1e-6), mx = 0, mean = 0;
        for (size_t k = 0; k < t->numel; k++) {
            ck_assert_msg(fabs(t->data[k]) <= bound, "%s[%zu] = %g outside +-%g", pa[i].name, k,
                          t->data[k], bound);
            mx = fmax(mx, fabs(t->data[k]));
            mean += t->data[k];
        }
        mean /= (double)t->numel;
        if (t->numel >= 100) { /* fills the range, centred */
            ck_assert_msg(mx > 0.95 * bound, "%s: max |w| %g of bound %g", pa[i].name, mx, bound);
            ck_assert_msg(fabs(mean) < 0.2 * bound, "%s: mean %g", pa[i].name, mean);
        }
    }
    const qat_named_tensor *bu = qat_model_buffers(a);
    for (int i = 0; i < qat_model_num_buffers(a); i++) {
        float want = strstr(bu[i].name, "running_var") ? 1.0f : 0.0f;
        for (size_t k = 0; k < bu[i].t->numel; k++) ck_assert(bu[i].t->data[k] == want);
    }
    /* re-initialising restores the state after training touched it */
    qat_layer *bn = qat_model_layer(a, qat_model_find(a, "features.1"));
    bn->running_mean->data[0] = 5;
    bn->weight->data[0] = 7;
    bn->num_batches_tracked = 3;
    pa[0].t->data[0] = 100;
    ck_assert_int_eq(qat_model_init(a, 42), QAT_OK);
    ck_assert(bn->running_mean->data[0] == 0.0f && bn->weight->data[0] == 1.0f);
    ck_assert_int_eq(bn->num_batches_tracked, 0);
    ck_assert_int_eq(memcmp(pa[0].t->data, pb[0].t->data, pa[0].t->numel * sizeof(float)), 0);
    qat_model_free(a);
    qat_model_free(b);
    qat_model_free(c);
}
END_TEST

/* ---- builder errors ---- */

START_TEST(test_builder_errors)
{
    qat_clear_error();
    ck_assert_ptr_null(qat_model_build("resnet50", 1));
    ASSERT_ERR_HAS("unknown model 'resnet50'");
    ck_assert_ptr_null(qat_model_build(NULL, 1));
    ck_assert_ptr_null(qat_model_create(0, 28, 28));
    ASSERT_ERR_HAS("input shape");

    /* unknown input index */
    qat_model *m = qat_model_create(1, 8, 8);
    ck_assert_int_eq(qat_model_conv2d(m, "c", 3, 4, 3, 1, 1, 1), QAT_ERR_ARG);
    ASSERT_ERR_HAS("input layer 3 does not exist");
    ck_assert_int_eq(qat_model_num_layers(m), 1);
    /* the failure passes through the rest of the chain and to init/forward */
    ck_assert_int_eq(qat_model_relu(m, NULL, 0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_model_basic_block(m, "b", 0, 4, 1), QAT_ERR_ARG);
    ck_assert_int_eq(qat_model_init(m, 1), QAT_ERR_ARG);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){2, 1, 8, 8});
    ck_assert_ptr_null(qat_model_forward(ctx, m, x));
    ASSERT_ERR_HAS("building it failed");
    qat_model_free(m);

    m = qat_model_create(1, 8, 8);
    ck_assert_int_eq(qat_model_relu(m, NULL, -1), QAT_ERR_ARG);
    qat_model_free(m);

    /* linear on a non-flat input */
    m = qat_model_create(1, 8, 8);
    int c = qat_model_conv2d(m, "conv", 0, 4, 3, 1, 1, 1);
    ck_assert_int_eq(c, 1);
    ck_assert_int_eq(qat_model_linear(m, "fc", c, 10, 1), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("linear 'fc': input 'conv' is not flat");
    ck_assert_int_eq(qat_model_num_layers(m), 2);
    qat_model_free(m);

    /* duplicate name */
    m = qat_model_create(1, 8, 8);
    qat_model_conv2d(m, "conv", 0, 4, 3, 1, 1, 1);
    ck_assert_int_eq(qat_model_relu(m, "conv", 1), QAT_ERR_ARG);
    ASSERT_ERR_HAS("a layer named 'conv' exists already");
    qat_model_free(m);
    m = qat_model_create(1, 8, 8);
    qat_model_set_prefix(m, "f");
    qat_model_relu(m, NULL, 0);              /* f.0 */
    qat_model_set_prefix(m, "f");            /* counter restarts: f.0 again */
    ck_assert_int_eq(qat_model_relu(m, NULL, 1), QAT_ERR_ARG);
    ASSERT_ERR_HAS("'f.0' exists already");
    qat_model_free(m);

    /* add of different shapes */
    m = qat_model_create(3, 8, 8);
    int a = qat_model_conv2d(m, "a", 0, 4, 3, 1, 1, 0);
    int b = qat_model_conv2d(m, "b", 0, 4, 3, 2, 1, 0);
    ck_assert_int_eq(qat_model_add(m, "sum", a, b), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("add: 'a' and 'b' have different shapes");
    qat_model_free(m);
    m = qat_model_create(3, 8, 8);
    a = qat_model_conv2d(m, "a", 0, 4, 3, 1, 1, 0);
    ck_assert_int_eq(qat_model_add(m, "sum", a, 0), QAT_ERR_SHAPE); /* 4 vs 3 channels */
    qat_model_free(m);

    /* other argument and shape errors */
    m = qat_model_create(1, 4, 4);
    ck_assert_int_eq(qat_model_conv2d(m, NULL, 0, 4, 7, 1, 1, 0), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("kernel 7 larger than padded input 6x6");
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    ck_assert_int_eq(qat_model_conv2d(m, NULL, 0, 4, 3, 0, 1, 0), QAT_ERR_ARG);
    ASSERT_ERR_HAS("stride 0");
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    ck_assert_int_eq(qat_model_maxpool2d(m, NULL, 0, 5, 1), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("maxpool2d: kernel 5 larger than input 4x4");
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    int f = qat_model_flatten(m, NULL, 0);
    ck_assert_int_eq(qat_model_batchnorm2d(m, NULL, f), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("is not an image");
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    ck_assert_int_eq(qat_model_linear(m, NULL, qat_model_flatten(m, NULL, 0), 0, 1), QAT_ERR_ARG);
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    char longname[100];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ck_assert_int_eq(qat_model_relu(m, longname, 0), QAT_ERR_ARG);
    ASSERT_ERR_HAS("too long");
    qat_model_free(m);
    m = qat_model_create(1, 4, 4);
    ck_assert_int_eq(qat_model_relu(m, "", 0), QAT_ERR_ARG);
    qat_model_free(m);

    /* forward with the wrong input shape */
    m = qat_model_build("mlp", 1);
    ck_assert_ptr_null(qat_model_forward(ctx, m, qat_new(ctx, 4, (int[]){2, 1, 28, 27})));
    ASSERT_ERR_HAS("model: input [2,1,28,27], expected [N,1,28,28]");
    ck_assert_ptr_null(qat_model_forward(ctx, m, NULL));
    qat_model_free(m);
    qat_model_free(NULL);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- a custom model ---- */

static qat_model *custom_model(void)
{
    /* input 3x11x9: conv 5x5 stride 2 pad 2 (odd channels) -> BN -> ReLU ->
     * avgpool 2 s1 -> conv1x1 -> residual add with a 3x3 s1 conv ->
     * GAP -> linear (no bias) -> 4 classes */
    qat_model *m = qat_model_create(3, 11, 9);
    int x = qat_model_conv2d(m, "conv1", 0, 5, 5, 2, 2, 1); /* 5x6x5 */
    x = qat_model_batchnorm2d(m, "bn1", x);
    x = qat_model_relu(m, "relu1", x);
    x = qat_model_avgpool2d(m, "pool", x, 2, 1); /* 5x5x4 */
    int a = qat_model_conv2d(m, "conv2", x, 7, 1, 1, 0, 1);
    int b = qat_model_conv2d(m, "conv3", x, 7, 3, 1, 1, 0);
    x = qat_model_add(m, "add", a, b);
    x = qat_model_global_avgpool(m, "gap", x);
    x = qat_model_linear(m, "fc", x, 4, 0);
    ck_assert_msg(x > 0, "custom model: %s", qat_last_error());
    ck_assert_int_eq(qat_model_init(m, 3), QAT_OK);
    return m;
}

START_TEST(test_custom_model)
{
    qat_set_num_threads(2);
    qat_model *m = custom_model();
    ck_assert_str_eq(qat_model_arch(m), "custom");
    ck_assert_int_eq(qat_model_num_layers(m), 10);
    const qat_layer *l = qat_model_layer_c(m, qat_model_find(m, "conv1"));
    ck_assert_int_eq(l->out_shape[0], 5);
    ck_assert_int_eq(l->out_shape[1], 6);
    ck_assert_int_eq(l->out_shape[2], 5);
    l = qat_model_layer_c(m, qat_model_find(m, "pool"));
    ck_assert_int_eq(l->out_shape[1], 5);
    ck_assert_int_eq(l->out_shape[2], 4);
    /* conv1 375+5, bn 10, conv2 35+7, conv3 315, fc 28 */
    ck_assert_uint_eq(qat_model_param_count(m), 375 + 5 + 10 + 35 + 7 + 315 + 28);
    ck_assert_ptr_null(find_param(m, "fc.bias"));
    ck_assert_ptr_nonnull(find_param(m, "conv2.bias"));

    qat_rng r;
    qat_rng_seed(&r, 8);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){5, 3, 11, 9});
    tu_fill_uniform(x->data, x->numel, -1, 1, &r);
    const uint8_t lab[5] = {0, 1, 2, 3, 1};
    qat_tensor *y = qat_model_forward(ctx, m, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[0], 5);
    ck_assert_int_eq(y->shape[1], 4);
    ck_assert_int_eq(qat_backward(ctx, qat_cross_entropy(ctx, y, lab)), QAT_OK);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < qat_model_num_params(m); i++) {
        double s = 0;
        for (size_t k = 0; k < p[i].t->numel; k++) s += fabs(p[i].t->grad[k]);
        ck_assert_msg(s > 0, "%s got no gradient", p[i].name);
    }
    /* BN counted one training batch; evaluation does not count */
    qat_layer *bn = qat_model_layer(m, qat_model_find(m, "bn1"));
    ck_assert_int_eq(bn->num_batches_tracked, 1);
    qat_ctx_reset(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    x = qat_new(ctx, 4, (int[]){1, 3, 11, 9}); /* batch of one: fine in evaluation */
    tu_fill_uniform(x->data, x->numel, -1, 1, &r);
    ck_assert_ptr_nonnull(qat_model_forward(ctx, m, x));
    ck_assert_int_eq(bn->num_batches_tracked, 1);
    qat_ctx_free(ctx);
    qat_model_free(m);
}
END_TEST

/* ---- a tiny model learns ---- */

/* Two classes of 6x6 images: class 0 bright in the top half, class 1 in the
 * bottom half, with noise; separable. */
static void make_batch(float *x, uint8_t *lab, int n, qat_rng *r)
{
    for (int i = 0; i < n; i++) {
        lab[i] = (uint8_t)qat_rng_below(r, 2);
        for (int h = 0; h < 6; h++)
            for (int w = 0; w < 6; w++) {
                float base = ((h < 3) == (lab[i] == 0)) ? 1.0f : 0.0f;
                x[(i * 6 + h) * 6 + w] = base + 0.6f * (qat_rng_uniform(r) - 0.5f);
            }
    }
}

START_TEST(test_tiny_model_learns)
{
    qat_set_num_threads(2);
    qat_model *m = qat_model_create(1, 6, 6);
    int x = qat_model_conv2d(m, "conv", 0, 4, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, "bn", x);
    x = qat_model_relu(m, "relu", x);
    x = qat_model_maxpool2d(m, "pool", x, 2, 2);
    x = qat_model_flatten(m, "flatten", x);
    x = qat_model_linear(m, "fc1", x, 8, 1);
    x = qat_model_relu(m, "relu2", x);
    x = qat_model_linear(m, "fc2", x, 2, 1);
    ck_assert_int_gt(x, 0);
    qat_model_init(m, 11);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_rng r;
    qat_rng_seed(&r, 12);
    enum { B = 16 };
    float xb[B * 36];
    uint8_t lab[B];
    float first = 0, last = 0;
    const float lr = 0.1f;
    for (int step = 0; step < 50; step++) {
        make_batch(xb, lab, B, &r);
        qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, qat_from(ctx, 4, (int[]){B, 1, 6, 6}, xb)), lab);
        ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
        /* plain SGD: p -= lr * g */
        const qat_named_tensor *p = qat_model_params(m);
        for (int i = 0; i < qat_model_num_params(m); i++)
            for (size_t k = 0; k < p[i].t->numel; k++) p[i].t->data[k] -= lr * p[i].t->grad[k];
        qat_model_zero_grad(m);
        if (step == 0) first = loss->data[0];
        if (step >= 45) last += loss->data[0] / 5; /* mean of the last 5 */
        qat_ctx_reset(ctx);
    }
    ck_assert_msg(last < 0.5f * first, "loss %g -> %g", first, last);
    /* and the trained model classifies held-out data in evaluation mode */
    qat_ctx_set_training(ctx, 0);
    make_batch(xb, lab, B, &r);
    qat_tensor *y = qat_model_forward(ctx, m, qat_from(ctx, 4, (int[]){B, 1, 6, 6}, xb));
    ck_assert_int_ge(qat_count_correct(y, lab), B - 1);
    qat_ctx_free(ctx);
    qat_model_free(m);
}
END_TEST

static Suite *layers_suite(void)
{
    Suite *s = suite_create("layers");
    TCase *tc = tcase_create("models");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_reference_models, 0, (int)(sizeof ref_models / sizeof ref_models[0]));
    tcase_add_loop_test(tc, test_bn_relu_fused_same_bits, 0, 5);
    tcase_add_loop_test(tc, test_add_relu_fused_same_bits, 0, 2);
    tcase_add_test(tc, test_mlp_names);
    tcase_add_test(tc, test_lenet5_names);
    tcase_add_test(tc, test_resnet8_names);
    tcase_add_test(tc, test_mobilenet_names);
    tcase_add_test(tc, test_new_layer_builders);
    tcase_add_test(tc, test_layer_type_names);
    tcase_add_test(tc, test_init);
    tcase_add_test(tc, test_builder_errors);
    tcase_add_test(tc, test_custom_model);
    tcase_add_test(tc, test_tiny_model_learns);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(layers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
