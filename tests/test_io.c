/* HDF5 checkpoints: round trips (bitwise), rebuilding any model from its
 * graph, optimizer and training state for exact resume, mismatch and
 * damaged-file errors, atomic writes, and no leaked HDF5 handles. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qat/io.h"
#include "testutil.h"

/* Every HDF5 file and object the library opens must be closed after each
 * call. */
static void assert_no_handles(void)
{
    ck_assert_int_eq((int)H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void assert_error_contains(const char *needle)
{
    const char *e = qat_last_error();
    if (!strstr(e, needle)) ck_abort_msg("error '%s' does not contain '%s'", e, needle);
}

/* Random values in every parameter and buffer, and BN counters, so that a
 * load that forgets something shows. */
static void perturb(qat_model *m, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < qat_model_num_params(m); i++) tu_fill_uniform(p[i].t->data, p[i].t->numel, -1, 1, &r);
    const qat_named_tensor *b = qat_model_buffers(m);
    for (int i = 0; i < qat_model_num_buffers(m); i++) tu_fill_uniform(b[i].t->data, b[i].t->numel, 0.1f, 2, &r);
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type == QAT_LAYER_BATCHNORM2D) l->num_batches_tracked = 1000 + qat_rng_below(&r, 1000);
    }
}

/* Bitwise equality of every parameter, buffer and BN counter. */
static void assert_same_weights(qat_model *a, qat_model *b)
{
    ck_assert_int_eq(qat_model_num_params(a), qat_model_num_params(b));
    ck_assert_int_eq(qat_model_num_buffers(a), qat_model_num_buffers(b));
    const qat_named_tensor *pa = qat_model_params(a), *pb = qat_model_params(b);
    for (int i = 0; i < qat_model_num_params(a); i++) {
        ck_assert_str_eq(pa[i].name, pb[i].name);
        ck_assert_uint_eq(pa[i].t->numel, pb[i].t->numel);
        ck_assert_msg(memcmp(pa[i].t->data, pb[i].t->data, pa[i].t->numel * sizeof(float)) == 0, "%s differs",
                      pa[i].name);
    }
    const qat_named_tensor *ba = qat_model_buffers(a), *bb = qat_model_buffers(b);
    for (int i = 0; i < qat_model_num_buffers(a); i++) {
        ck_assert_str_eq(ba[i].name, bb[i].name);
        ck_assert_msg(memcmp(ba[i].t->data, bb[i].t->data, ba[i].t->numel * sizeof(float)) == 0, "%s differs",
                      ba[i].name);
    }
    for (int i = 0; i < qat_model_num_layers(a); i++)
        ck_assert_int_eq(qat_model_layer(a, i)->num_batches_tracked, qat_model_layer(b, i)->num_batches_tracked);
}

/* ---- round trip of the reference models ---- */

static const char *const archs[] = {"mlp", "lenet5", "convnet", "resnet8", "mobilenet", "mobilenet-hs"};

START_TEST(test_roundtrip_reference)
{
    const char *arch = archs[_i];
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path(arch));
    qat_model *m = qat_model_build(arch, 1);
    ck_assert_ptr_nonnull(m);
    perturb(m, 77 + (uint64_t)_i);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    assert_no_handles();
    qat_model *fresh = qat_model_build(arch, 2);
    ck_assert_ptr_nonnull(fresh);
    ck_assert_int_eq(qat_checkpoint_load(path, fresh, NULL, NULL), QAT_OK);
    assert_no_handles();
    assert_same_weights(m, fresh);
    /* and rebuilt from the file alone */
    qat_model *rebuilt = qat_model_load(path);
    ck_assert_ptr_nonnull(rebuilt);
    assert_no_handles();
    ck_assert_str_eq(qat_model_arch(rebuilt), arch);
    ck_assert_int_eq(qat_model_num_layers(rebuilt), qat_model_num_layers(m));
    assert_same_weights(m, rebuilt);
    qat_model_free(rebuilt);
    qat_model_free(fresh);
    qat_model_free(m);
}
END_TEST

/* ---- rebuilding a custom model ---- */

static qat_model *custom_model(uint64_t seed)
{
    qat_model *m = qat_model_create(3, 13, 11);
    ck_assert_ptr_nonnull(m);
    int x = qat_model_conv2d(m, "stem", 0, 5, 3, 2, 2, 1); /* stride 2, pad 2: 5x8x7 */
    x = qat_model_batchnorm2d(m, "stem_bn", x);
    int a = qat_model_relu(m, "stem_relu", x);
    int y = qat_model_conv2d(m, "branch", a, 5, 3, 1, 1, 0);
    y = qat_model_batchnorm2d(m, "branch_bn", y);
    int s = qat_model_add(m, "sum", y, a);
    s = qat_model_relu(m, NULL, s);
    s = qat_model_avgpool2d(m, "avg", s, 2, 1);
    s = qat_model_maxpool2d(m, "max", s, 3, 2);
    s = qat_model_conv2d(m, "wide", s, 7, 1, 1, 0, 1);
    s = qat_model_global_avgpool(m, "gap", s);
    s = qat_model_linear(m, "head", s, 3, 1);
    ck_assert_int_ge(s, 0);
    /* non-default BN hyperparameters must survive too */
    qat_layer *bn = qat_model_layer(m, qat_model_find(m, "branch_bn"));
    bn->bn_eps = 1e-3f;
    bn->bn_momentum = 0.25f;
    ck_assert_int_eq(qat_model_init(m, seed), QAT_OK);
    return m;
}

static void assert_same_graph(qat_model *a, qat_model *b)
{
    ck_assert_int_eq(qat_model_num_layers(a), qat_model_num_layers(b));
    for (int i = 0; i < qat_model_num_layers(a); i++) {
        const qat_layer *x = qat_model_layer_c(a, i), *y = qat_model_layer_c(b, i);
        ck_assert_str_eq(x->name, y->name);
        ck_assert_int_eq(x->type, y->type);
        ck_assert_int_eq(x->n_inputs, y->n_inputs);
        for (int k = 0; k < x->n_inputs; k++) ck_assert_int_eq(x->inputs[k], y->inputs[k]);
        ck_assert_int_eq(x->out_ndim, y->out_ndim);
        for (int k = 0; k < x->out_ndim; k++) ck_assert_int_eq(x->out_shape[k], y->out_shape[k]);
        ck_assert_int_eq(x->in_ch, y->in_ch);
        ck_assert_int_eq(x->out_ch, y->out_ch);
        ck_assert_int_eq(x->kernel, y->kernel);
        ck_assert_int_eq(x->stride, y->stride);
        ck_assert_int_eq(x->pad, y->pad);
        ck_assert_int_eq(x->has_bias, y->has_bias);
        ck_assert(memcmp(&x->bn_eps, &y->bn_eps, sizeof(float)) == 0);
        ck_assert(memcmp(&x->bn_momentum, &y->bn_momentum, sizeof(float)) == 0);
        ck_assert_int_eq(x->groups, y->groups);
        ck_assert(memcmp(&x->clamp_lo, &y->clamp_lo, sizeof(float)) == 0);
        ck_assert(memcmp(&x->clamp_hi, &y->clamp_hi, sizeof(float)) == 0);
        ck_assert_int_eq(x->clamp_hi_c != NULL, y->clamp_hi_c != NULL);
    }
}

/* Output of the model on a fixed random batch, in evaluation mode, copied
 * out of the arena. */
static float *forward_eval(qat_model *m, int c, int h, int w, size_t *n_out)
{
    qat_ctx *ctx = qat_ctx_create(1 << 20);
    ck_assert_ptr_nonnull(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    float x[2 * 3 * 13 * 11];
    qat_rng r;
    qat_rng_seed(&r, 5);
    ck_assert_uint_le((size_t)(2 * c * h * w), sizeof x / sizeof x[0]);
    tu_fill_uniform(x, (size_t)(2 * c * h * w), -2, 2, &r);
    qat_tensor *xt = qat_from(ctx, 4, (int[]){2, c, h, w}, x);
    qat_tensor *y = qat_model_forward(ctx, m, xt);
    ck_assert_msg(y != NULL, "%s", qat_last_error());
    float *out = malloc(y->numel * sizeof *out);
    memcpy(out, y->data, y->numel * sizeof *out);
    *n_out = y->numel;
    qat_ctx_free(ctx);
    return out;
}

START_TEST(test_model_load_custom)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("custom.h5"));
    qat_model *m = custom_model(3);
    perturb(m, 4);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    qat_model *r = qat_model_load(path);
    ck_assert_msg(r != NULL, "%s", qat_last_error());
    assert_no_handles();
    ck_assert_str_eq(qat_model_arch(r), "custom");
    assert_same_graph(m, r);
    assert_same_weights(m, r);
    /* spot checks of what the graph holds */
    const qat_layer *stem = qat_model_layer_c(r, 1);
    ck_assert_int_eq(stem->stride, 2);
    ck_assert_int_eq(stem->pad, 2);
    ck_assert_int_eq(stem->out_shape[1], 8); /* (13 + 4 - 3) / 2 + 1 */
    ck_assert_int_eq(stem->out_shape[2], 7); /* (11 + 4 - 3) / 2 + 1 */
    ck_assert_int_eq(qat_model_layer_c(r, qat_model_find(r, "sum"))->n_inputs, 2);
    ck_assert_float_eq(qat_model_layer_c(r, qat_model_find(r, "branch_bn"))->bn_eps, 1e-3f);

    size_t na = 0, nb = 0;
    float *ya = forward_eval(m, 3, 13, 11, &na), *yb = forward_eval(r, 3, 13, 11, &nb);
    ck_assert_uint_eq(na, 6);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(ya, yb, na * sizeof(float)) == 0);
    free(ya);
    free(yb);
    qat_model_free(r);
    qat_model_free(m);
}
END_TEST

/* ---- the layers of issue 15: grouped conv, clamp, hard activations,
 * concat, upsample ---- */

/* A U-Net-like block: conv -> maxpool -> conv -> upsample x2 -> concat with
 * the first conv's output -> conv, with a depthwise conv, a relu6 with
 * per-channel bounds, hardswish and hardsigmoid on the way. */
static qat_model *unet_model(uint64_t seed)
{
    qat_model *m = qat_model_create(3, 8, 8);
    ck_assert_ptr_nonnull(m);
    int a = qat_model_conv2d(m, "enc", 0, 4, 3, 1, 1, 1);          /* 4x8x8 */
    a = qat_model_relu6(m, "enc_act", a);
    int d = qat_model_maxpool2d(m, "down", a, 2, 2);                /* 4x4x4 */
    d = qat_model_conv2d_grouped(m, "dw", d, 8, 3, 1, 1, 4, 0);     /* depthwise x2: 8x4x4 */
    d = qat_model_batchnorm2d(m, "dw_bn", d);
    d = qat_model_hardswish(m, "dw_act", d);
    d = qat_model_conv2d_grouped(m, "mid", d, 6, 1, 1, 0, 2, 1);    /* groups 2: 6x4x4 */
    d = qat_model_hardsigmoid(m, "gate", d);
    int u = qat_model_upsample(m, "up", d, 2);                      /* 6x8x8 */
    int c = qat_model_concat(m, "cat", u, a);                       /* 10x8x8 */
    c = qat_model_clamp(m, "clip", c, -0.5f, 1.25f);
    c = qat_model_conv2d(m, "dec", c, 2, 3, 1, 1, 0);               /* 2x8x8 */
    c = qat_model_global_avgpool(m, "gap", c);
    int f = qat_model_concat(m, "cat_flat", c, c);                  /* 4 features */
    ck_assert_int_ge(f, 0);
    const float hi[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, qat_model_find(m, "enc_act"), hi), QAT_OK);
    ck_assert_int_eq(qat_model_init(m, seed), QAT_OK);
    return m;
}

START_TEST(test_model_load_unet)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("unet.h5"));
    qat_model *m = unet_model(3);
    perturb(m, 4);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    qat_model *r = qat_model_load(path);
    ck_assert_msg(r != NULL, "%s", qat_last_error());
    assert_no_handles();
    assert_same_graph(m, r);
    assert_same_weights(m, r);
    const qat_layer *dw = qat_model_layer_c(r, qat_model_find(r, "dw"));
    ck_assert_int_eq(dw->groups, 4);
    ck_assert_int_eq(dw->weight->shape[1], 1);
    ck_assert_int_eq(qat_model_layer_c(r, qat_model_find(r, "mid"))->groups, 2);
    ck_assert_int_eq(qat_model_layer_c(r, qat_model_find(r, "up"))->kernel, 2);
    const qat_layer *cat = qat_model_layer_c(r, qat_model_find(r, "cat"));
    ck_assert_int_eq(cat->n_inputs, 2);
    ck_assert_int_eq(cat->out_shape[0], 10);
    ck_assert_float_eq(qat_model_layer_c(r, qat_model_find(r, "clip"))->clamp_hi, 1.25f);
    const qat_layer *act = qat_model_layer_c(r, qat_model_find(r, "enc_act"));
    ck_assert_ptr_nonnull(act->clamp_hi_c);
    ck_assert_int_ge(qat_model_find(r, "enc_act"), 0);
    size_t na = 0, nb = 0;
    float *ya = forward_eval(m, 3, 8, 8, &na), *yb = forward_eval(r, 3, 8, 8, &nb);
    ck_assert_uint_eq(na, 8);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(ya, yb, na * sizeof(float)) == 0);
    free(ya);
    free(yb);

    /* the per-channel bounds must be in the loaded model too: a model
     * without them is a different graph */
    qat_model *plain = unet_model(3);
    ck_assert_int_eq(qat_layer_set_clamp_channels(plain, qat_model_find(plain, "enc_act"), NULL), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_load(path, plain, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("'enc_act' is clamp with per-channel bounds (0/1) 1, model has 0");
    qat_model_free(plain);
    /* another groups count */
    qat_model *g1 = qat_model_create(3, 8, 8);
    int x = qat_model_conv2d(g1, "enc", 0, 4, 3, 1, 1, 1);
    x = qat_model_relu6(g1, "enc_act", x);
    x = qat_model_maxpool2d(g1, "down", x, 2, 2);
    x = qat_model_conv2d_grouped(g1, "dw", x, 8, 3, 1, 1, 2, 0);
    ck_assert_int_ge(x, 0);
    ck_assert_int_eq(qat_checkpoint_load(path, g1, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("'enc_act' is clamp"); /* the first difference */
    qat_layer_set_clamp_channels(g1, qat_model_find(g1, "enc_act"), (const float[]){1, 1, 1, 1});
    ck_assert_int_eq(qat_checkpoint_load(path, g1, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint layer 4 'dw' is conv2d with groups 4, model has 2");
    qat_model_free(g1);
    /* other clamp bounds */
    qat_model *b = unet_model(3);
    qat_model_layer(b, qat_model_find(b, "clip"))->clamp_hi = 1.5f;
    ck_assert_int_eq(qat_checkpoint_load(path, b, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("'clip' is clamp to [-0.5, 1.25], model's to [-0.5, 1.5]");
    qat_model_free(b);
    assert_no_handles();
    qat_model_free(r);
    qat_model_free(m);
}
END_TEST

/* A mobilenet-hs whose clamp got per-channel bounds (as CLE sets them). */
START_TEST(test_mobilenet_clamp_channels)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("mnhs.h5"));
    qat_model *m = qat_model_build("mobilenet-hs", 1);
    ck_assert_ptr_nonnull(m);
    int li = qat_model_find(m, "blocks.1.dw.act");
    float hi[64];
    for (int c = 0; c < 64; c++) hi[c] = 1.0f + (float)c / 8.0f;
    ck_assert_int_eq(qat_layer_set_clamp_channels(m, li, hi), QAT_OK);
    int nb = qat_model_num_buffers(m);
    int found = 0;
    for (int i = 0; i < nb; i++)
        if (strcmp(qat_model_buffers(m)[i].name, "blocks.1.dw.act.clamp_hi") == 0) {
            found++;
            ck_assert_ptr_eq(qat_model_buffers(m)[i].t, qat_model_layer_c(m, li)->clamp_hi_c);
            ck_assert_int_eq(qat_model_buffers(m)[i].t->numel, 64);
        }
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    qat_model *r = qat_model_load(path);
    ck_assert_msg(r != NULL, "%s", qat_last_error());
    ck_assert_str_eq(qat_model_arch(r), "mobilenet-hs");
    assert_same_graph(m, r);
    assert_same_weights(m, r);
    ck_assert(memcmp(qat_model_layer_c(r, li)->clamp_hi_c->data, hi, sizeof hi) == 0);
    /* into a built mobilenet-hs: only once it has the bounds too */
    qat_model *f = qat_model_build("mobilenet-hs", 2);
    ck_assert_int_eq(qat_checkpoint_load(path, f, NULL, NULL), QAT_ERR_FORMAT);
    float ones[64];
    for (int c = 0; c < 64; c++) ones[c] = 6.0f;
    ck_assert_int_eq(qat_layer_set_clamp_channels(f, li, ones), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_load(path, f, NULL, NULL), QAT_OK);
    assert_same_weights(m, f);
    /* removing the bounds drops the buffer */
    ck_assert_int_eq(qat_layer_set_clamp_channels(f, li, NULL), QAT_OK);
    ck_assert_int_eq(qat_model_num_buffers(f), nb - 1);
    ck_assert_ptr_null(qat_model_layer_c(f, li)->clamp_hi_c);
    assert_no_handles();
    qat_model_free(f);
    qat_model_free(r);
    qat_model_free(m);
}
END_TEST

/* A checkpoint written before groups and clamps existed has no groups,
 * clamp_channels, clamp_lo and clamp_hi columns: it loads with dense
 * convolutions. */
static void drop_dataset(const char *path, const char *name)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    ck_assert_int_ge(H5Ldelete(f, name, H5P_DEFAULT), 0);
    H5Fclose(f);
}

START_TEST(test_old_checkpoint_groups)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("old.h5"));
    qat_model *m = qat_model_build("resnet8", 1);
    perturb(m, 9);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    static const char *const cols[] = {"groups", "clamp_channels", "clamp_lo", "clamp_hi"};
    char name[128];
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "/model/graph/%s", cols[k]);
        drop_dataset(path, name);
    }
    qat_model *r = qat_model_load(path);
    ck_assert_msg(r != NULL, "%s", qat_last_error());
    assert_same_graph(m, r);
    assert_same_weights(m, r);
    for (int i = 0; i < qat_model_num_layers(r); i++) {
        const qat_layer *l = qat_model_layer_c(r, i);
        ck_assert_int_eq(l->groups, l->type == QAT_LAYER_CONV2D ? 1 : 0);
    }
    qat_model *f = qat_model_build("resnet8", 2);
    ck_assert_int_eq(qat_checkpoint_load(path, f, NULL, NULL), QAT_OK);
    assert_same_weights(m, f);
    qat_model_free(f);
    qat_model_free(r);

    /* a depthwise model without its groups column is read as dense and
     * refused: the stored weights do not fit */
    qat_model *mn = qat_model_build("mobilenet", 1);
    ck_assert_int_eq(qat_checkpoint_save(path, mn, NULL, NULL), QAT_OK);
    drop_dataset(path, "/model/graph/groups");
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("blocks.0.dw.conv");
    assert_no_handles();
    qat_model_free(mn);
    qat_model_free(m);
}
END_TEST

/* ---- optimizer state ---- */

/* Deterministic gradients for step k. */
static void fill_grads(qat_model *m, int k)
{
    qat_rng r;
    qat_rng_seed(&r, 1000 + (uint64_t)k);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < qat_model_num_params(m); i++) tu_fill_uniform(p[i].t->grad, p[i].t->numel, -1, 1, &r);
}

static qat_optim *make_optim(qat_model *m, qat_optim_kind kind)
{
    qat_optim_options o = qat_optim_options_defaults(kind);
    o.lr = 0.05;
    o.weight_decay = 5e-4;
    if (kind == QAT_OPTIM_SGD) {
        o.momentum = 0.9;
        o.nesterov = 1;
    }
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &o);
    ck_assert_ptr_nonnull(opt);
    return opt;
}

static void assert_same_optim(qat_optim *a, qat_optim *b)
{
    ck_assert_int_eq(qat_optim_step_count(a), qat_optim_step_count(b));
    ck_assert(qat_optim_lr(a) == qat_optim_lr(b));
    ck_assert_int_eq(qat_optim_num_state(a), qat_optim_num_state(b));
    size_t na = 0, nb = 0;
    int64_t *sa = qat_optim_param_steps(a, &na), *sb = qat_optim_param_steps(b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(sa, sb, na * sizeof *sa) == 0);
    for (int i = 0; i < qat_optim_num_params(a); i++) {
        ck_assert(qat_optim_param_lr_scale(a, i) == qat_optim_param_lr_scale(b, i));
        ck_assert(qat_optim_param_weight_decay(a, i) == qat_optim_param_weight_decay(b, i));
    }
    for (int i = 0; i < qat_optim_num_state(a); i++) {
        const char *n1, *n2;
        float *d1, *d2;
        size_t l1, l2;
        ck_assert_int_eq(qat_optim_state(a, i, &n1, &d1, &l1), QAT_OK);
        ck_assert_int_eq(qat_optim_state(b, i, &n2, &d2, &l2), QAT_OK);
        ck_assert_str_eq(n1, n2);
        ck_assert_uint_eq(l1, l2);
        ck_assert_msg(memcmp(d1, d2, l1 * sizeof(float)) == 0, "state %s differs", n1);
    }
    const qat_schedule *s1 = qat_optim_schedule(a), *s2 = qat_optim_schedule(b);
    ck_assert_int_eq(s1 != NULL, s2 != NULL);
    if (s1) { /* field by field: the struct has padding after kind */
        ck_assert_int_eq(s1->kind, s2->kind);
        ck_assert(s1->base_lr == s2->base_lr && s1->min_lr == s2->min_lr && s1->gamma == s2->gamma);
        ck_assert(s1->total_steps == s2->total_steps && s1->step_size == s2->step_size &&
                  s1->warmup_steps == s2->warmup_steps);
    }
}

/* Steps an optimizer a few times, saves, loads into a fresh model and
 * optimizer (and through qat_optim_load), then one more identical step
 * everywhere must give bitwise identical parameters. */
static void optim_roundtrip(qat_optim_kind kind, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path(file));
    qat_model *m = qat_model_build("lenet5", 11);
    qat_optim *o = make_optim(m, kind);
    /* a group with its own lr scale and decay, and a warm-up cosine */
    ck_assert_int_eq(qat_optim_set_group(o, 0, 2, 0.5, 0.0), QAT_OK);
    qat_schedule s = qat_schedule_cosine(0.05, 0.001, 100);
    s.warmup_steps = 2;
    ck_assert_int_eq(qat_optim_set_schedule(o, &s), QAT_OK);
    for (int k = 0; k < 3; k++) {
        fill_grads(m, k);
        ck_assert_int_eq(qat_optim_step(o), QAT_OK);
    }
    ck_assert_int_eq(qat_checkpoint_save(path, m, o, NULL), QAT_OK);
    assert_no_handles();

    qat_model *m2 = qat_model_build("lenet5", 12);
    qat_optim *o2 = make_optim(m2, kind);
    ck_assert_msg(qat_checkpoint_load(path, m2, o2, NULL) == QAT_OK, "%s", qat_last_error());
    assert_no_handles();
    assert_same_optim(o, o2);

    qat_model *m3 = qat_model_load(path);
    ck_assert_ptr_nonnull(m3);
    qat_optim *o3 = qat_optim_load(path, qat_model_params(m3), qat_model_num_params(m3));
    ck_assert_msg(o3 != NULL, "%s", qat_last_error());
    assert_no_handles();
    assert_same_optim(o, o3);
    ck_assert(memcmp(qat_optim_get_options(o), qat_optim_get_options(o3), sizeof(qat_optim_options)) == 0);

    fill_grads(m, 3);
    fill_grads(m2, 3);
    fill_grads(m3, 3);
    ck_assert_int_eq(qat_optim_step(o), QAT_OK);
    ck_assert_int_eq(qat_optim_step(o2), QAT_OK);
    ck_assert_int_eq(qat_optim_step(o3), QAT_OK);
    assert_same_weights(m, m2);
    assert_same_weights(m, m3);
    assert_same_optim(o, o2);
    assert_same_optim(o, o3);
    /* the step actually moved the weights */
    const qat_named_tensor *p = qat_model_params(m);
    ck_assert_int_eq(qat_optim_step_count(o), 4);
    ck_assert(p[0].t->data[0] != 0.0f);

    qat_optim_free(o3);
    qat_model_free(m3);
    qat_optim_free(o2);
    qat_model_free(m2);
    qat_optim_free(o);
    qat_model_free(m);
}

START_TEST(test_optim_sgd_roundtrip) { optim_roundtrip(QAT_OPTIM_SGD, "sgd.h5"); }
END_TEST

START_TEST(test_optim_adamw_roundtrip) { optim_roundtrip(QAT_OPTIM_ADAMW, "adamw.h5"); }
END_TEST

START_TEST(test_optim_mismatch)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("optmis.h5"));
    qat_model *m = qat_model_build("mlp", 1);
    qat_optim *o = make_optim(m, QAT_OPTIM_SGD);
    fill_grads(m, 0);
    qat_optim_step(o);
    ck_assert_int_eq(qat_checkpoint_save(path, m, o, NULL), QAT_OK);

    /* other momentum */
    qat_optim_options opts = *qat_optim_get_options(o);
    opts.momentum = 0.8;
    qat_optim *o2 = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &opts);
    ck_assert_int_eq(qat_checkpoint_load(path, m, o2, NULL), QAT_ERR_FORMAT);
    assert_error_contains("optmis.h5");
    assert_error_contains("checkpoint optimizer has momentum 0.9, the optimizer has 0.8");
    ck_assert_int_eq(qat_optim_step_count(o2), 0); /* untouched */
    qat_optim_free(o2);

    /* other kind */
    qat_optim *o3 = make_optim(m, QAT_OPTIM_ADAMW);
    ck_assert_int_eq(qat_checkpoint_load(path, m, o3, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint optimizer is sgd, the optimizer is adamw");
    qat_optim_free(o3);

    /* fewer parameters */
    qat_optim *o4 = qat_optim_create(qat_model_params(m), 4, qat_optim_get_options(o));
    ck_assert_int_eq(qat_checkpoint_load(path, m, o4, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint optimizer has 6 parameters, the optimizer has 4");
    qat_optim_free(o4);
    assert_no_handles();

    /* a file without optimizer state */
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_load(path, m, o, NULL), QAT_ERR_FORMAT);
    assert_error_contains("holds no optimizer state");
    ck_assert_ptr_null(qat_optim_load(path, qat_model_params(m), qat_model_num_params(m)));
    assert_error_contains("holds no optimizer state");
    assert_no_handles();
    qat_optim_free(o);
    qat_model_free(m);
}
END_TEST

/* ---- training state ---- */

static qat_epoch_record record(int e)
{
    qat_epoch_record r;
    r.epoch = e;
    r.train_loss = 1.0 / (e + 1);
    r.train_accuracy = 0.5 + 0.1 * e;
    r.val_accuracy = e == 1 ? NAN : 0.45 + 0.1 * e;
    r.test_accuracy = 0.44 + 0.1 * e;
    r.lr = 0.05 * cos(e);
    r.train_images_per_s = 12345.678 + e;
    r.train_images_per_s_wall = 11111.5 + e;
    r.seconds = 4.25 * (e + 1);
    return r;
}

START_TEST(test_train_state_roundtrip)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("train.h5"));
    qat_model *m = qat_model_build("mlp", 1);
    qat_train_state st;
    qat_train_state_init(&st);
    st.epoch = 3;
    st.global_step = 1289;
    st.seed = 0xfedcba9876543210ull;
    st.threads = 2;
    st.iter.seed = 0x8000000000000001ull;
    st.iter.epoch = 3;
    st.iter.position = 256;
    qat_rng_seed(&st.iter.aug_rng, 9);
    qat_rng_seed(&st.rng, 10);
    qat_rng_u32(&st.rng);
    snprintf(st.recipe.arch, sizeof st.recipe.arch, "mlp");
    st.recipe.epochs = 10;
    st.recipe.batch_size = 128;
    st.recipe.lr = 0.05;
    st.recipe.weight_decay = 5e-4;
    st.recipe.momentum = 0.9;
    st.recipe.val_size = 5000;
    for (int e = 0; e < 20; e++) {
        qat_epoch_record r = record(e);
        ck_assert_int_eq(qat_train_state_add_epoch(&st, &r), QAT_OK);
    }
    ck_assert_int_eq(st.n_history, 20);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, &st), QAT_OK);

    /* the destination holds a history already: the load frees it */
    qat_train_state back;
    qat_train_state_init(&back);
    qat_epoch_record junk = record(99);
    qat_train_state_add_epoch(&back, &junk);
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, &back), QAT_OK);
    assert_no_handles();
    ck_assert_int_eq(back.epoch, 3);
    ck_assert_int_eq(back.global_step, 1289);
    ck_assert(back.seed == 0xfedcba9876543210ull);
    ck_assert_int_eq(back.threads, 2);
    ck_assert(back.iter.seed == 0x8000000000000001ull);
    ck_assert_int_eq(back.iter.epoch, 3);
    ck_assert_int_eq(back.iter.position, 256);
    ck_assert(memcmp(&back.iter.aug_rng, &st.iter.aug_rng, sizeof st.rng) == 0);
    ck_assert(memcmp(&back.rng, &st.rng, sizeof st.rng) == 0);
    ck_assert_str_eq(back.recipe.arch, "mlp");
    ck_assert_int_eq(back.recipe.epochs, 10);
    ck_assert_int_eq(back.recipe.batch_size, 128);
    ck_assert(back.recipe.lr == 0.05 && back.recipe.weight_decay == 5e-4 && back.recipe.momentum == 0.9);
    ck_assert_int_eq(back.recipe.val_size, 5000);
    ck_assert_int_eq(back.n_history, 20);
    for (int e = 0; e < 20; e++) {
        const qat_epoch_record *a = &st.history[e], *b = &back.history[e];
        ck_assert_int_eq(a->epoch, b->epoch);
        ck_assert(a->train_loss == b->train_loss && a->train_accuracy == b->train_accuracy);
        ck_assert(e == 1 ? isnan(b->val_accuracy) : a->val_accuracy == b->val_accuracy);
        ck_assert(a->test_accuracy == b->test_accuracy && a->lr == b->lr);
        ck_assert(a->train_images_per_s == b->train_images_per_s);
        ck_assert(a->train_images_per_s_wall == b->train_images_per_s_wall && a->seconds == b->seconds);
    }
    /* an empty history round-trips too */
    qat_train_state_free(&st);
    ck_assert_ptr_null(st.history);
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, &st), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, &back), QAT_OK);
    ck_assert_int_eq(back.n_history, 0);
    ck_assert_int_eq(back.epoch, 0);

    /* asking for a training state the file does not hold */
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, &back), QAT_ERR_FORMAT);
    assert_error_contains("holds no training state");
    qat_train_state_free(&back);
    qat_train_state_free(NULL);
    assert_no_handles();
    qat_model_free(m);
}
END_TEST

/* ---- mismatches and damaged files ---- */

START_TEST(test_mismatch_arch)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("lenet.h5"));
    qat_model *l = qat_model_build("lenet5", 1);
    ck_assert_int_eq(qat_checkpoint_save(path, l, NULL, NULL), QAT_OK);
    qat_model *c = qat_model_build("convnet", 1), *ref = qat_model_build("convnet", 1);
    ck_assert_int_eq(qat_checkpoint_load(path, c, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("lenet.h5: checkpoint layer 1 'features.0' is conv2d with 6 output channels, model has 32");
    assert_error_contains("checkpoint arch 'lenet5', model arch 'convnet'");
    assert_same_weights(c, ref); /* nothing was changed */
    assert_no_handles();

    /* same layers, one hyperparameter differs: a custom copy of lenet5
     * with another kernel size of the second conv */
    qat_model *k = qat_model_create(1, 28, 28);
    qat_model_set_prefix(k, "features");
    int x = qat_model_conv2d(k, NULL, 0, 6, 5, 1, 2, 0);
    x = qat_model_batchnorm2d(k, NULL, x);
    x = qat_model_relu(k, NULL, x);
    x = qat_model_maxpool2d(k, NULL, x, 2, 2);
    x = qat_model_conv2d(k, NULL, x, 16, 3, 1, 0, 0);
    ck_assert_int_ge(x, 0);
    ck_assert_int_eq(qat_checkpoint_load(path, k, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint layer 5 'features.4' is conv2d with kernel size 5, model has 3");
    qat_model_free(k);

    /* a prefix of the graph: the layer count differs */
    qat_model *p = qat_model_create(1, 28, 28);
    qat_model_set_prefix(p, "features");
    qat_model_conv2d(p, NULL, 0, 6, 5, 1, 2, 0);
    ck_assert_int_eq(qat_checkpoint_load(path, p, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint has 15 layers, model has 2: checkpoint layer 2 'features.1' is extra");
    qat_model_free(p);

    /* another input shape */
    qat_model *i3 = qat_model_create(3, 28, 28);
    ck_assert_int_eq(qat_checkpoint_load(path, i3, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("checkpoint input is (1,28,28), model input is (3,28,28)");
    qat_model_free(i3);
    assert_no_handles();
    qat_model_free(ref);
    qat_model_free(c);
    qat_model_free(l);
}
END_TEST

/* Edits a saved file with HDF5 directly. */
static void replace_dataset(const char *path, const char *name, hid_t type, int ndim, const hsize_t *dims)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    ck_assert_int_ge(H5Ldelete(f, name, H5P_DEFAULT), 0);
    if (type >= 0) {
        hid_t sp = H5Screate_simple(ndim, dims, NULL);
        hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ck_assert_int_ge(ds, 0);
        H5Dclose(ds);
        H5Sclose(sp);
    }
    H5Fclose(f);
}

START_TEST(test_bad_datasets)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("bad.h5"));
    qat_model *m = qat_model_build("mlp", 1), *ref = qat_model_build("mlp", 1);
    perturb(ref, 1);
    perturb(m, 1);

    /* missing parameter */
    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    replace_dataset(path, "/model/params/classifier.2.bias", -1, 0, NULL);
    perturb(m, 2);
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("bad.h5: dataset /model/params/classifier.2.bias: missing");
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("dataset /model/params/classifier.2.bias: missing");
    assert_no_handles();

    /* wrong shape */
    ck_assert_int_eq(qat_checkpoint_save(path, ref, NULL, NULL), QAT_OK);
    replace_dataset(path, "/model/params/classifier.0.weight", H5T_IEEE_F32LE, 2, (hsize_t[]){256, 783});
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_SHAPE);
    assert_error_contains("dataset /model/params/classifier.0.weight: shape [256,783], expected [256,784]");

    /* wrong type */
    ck_assert_int_eq(qat_checkpoint_save(path, ref, NULL, NULL), QAT_OK);
    replace_dataset(path, "/model/params/classifier.0.bias", H5T_IEEE_F64LE, 1, (hsize_t[]){256});
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("dataset /model/params/classifier.0.bias: is float64, expected float32");

    /* an extra parameter */
    ck_assert_int_eq(qat_checkpoint_save(path, ref, NULL, NULL), QAT_OK);
    {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        hsize_t d = 3;
        hid_t sp = H5Screate_simple(1, &d, NULL);
        hid_t ds = H5Dcreate2(f, "/model/params/ghost.weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT);
        H5Dclose(ds);
        H5Sclose(sp);
        H5Fclose(f);
    }
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("dataset /model/params/ghost.weight: is not a parameter of the model");

    /* a graph column of the wrong length */
    ck_assert_int_eq(qat_checkpoint_save(path, ref, NULL, NULL), QAT_OK);
    replace_dataset(path, "/model/graph/kernel", H5T_STD_I32LE, 1, (hsize_t[]){3});
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("dataset /model/graph/kernel: shape [3], expected [7]");

    /* an unknown layer type */
    ck_assert_int_eq(qat_checkpoint_save(path, ref, NULL, NULL), QAT_OK);
    {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t ds = H5Dopen2(f, "/model/graph/type", H5P_DEFAULT);
        hid_t t = H5Dget_type(ds);
        size_t w = H5Tget_size(t);
        char *buf = calloc(7, w);
        H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        memcpy(buf + 2 * w, "gelu", 5);
        H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        free(buf);
        H5Tclose(t);
        H5Dclose(ds);
        H5Fclose(f);
    }
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("layer 2 'classifier.0' has unknown type 'gelu'");

    /* nothing of the failed loads reached the model */
    assert_same_weights(m, m); /* sanity */
    qat_model *chk = qat_model_build("mlp", 1);
    perturb(chk, 2);
    assert_same_weights(m, chk);
    qat_model_free(chk);
    assert_no_handles();
    qat_model_free(ref);
    qat_model_free(m);
}
END_TEST

START_TEST(test_truncated_and_missing)
{
    char path[4096], half[4096], junk[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("whole.h5"));
    snprintf(half, sizeof half, "%s", tu_tmp_path("half.h5"));
    snprintf(junk, sizeof junk, "%s", tu_tmp_path("junk.h5"));
    qat_model *m = qat_model_build("lenet5", 1);
    qat_optim *o = make_optim(m, QAT_OPTIM_SGD);
    ck_assert_int_eq(qat_checkpoint_save(path, m, o, NULL), QAT_OK);

    /* a copy truncated to half its size */
    FILE *in = fopen(path, "rb");
    ck_assert_ptr_nonnull(in);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *bytes = malloc((size_t)size);
    ck_assert_uint_eq(fread(bytes, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    ck_assert_int_eq(tu_write_file(half, bytes, (size_t)size), 0);
    ck_assert_int_eq(truncate(half, size / 2), 0);
    free(bytes);

    /* HDF5 must print nothing: capture stderr meanwhile */
    char errpath[4096];
    snprintf(errpath, sizeof errpath, "%s", tu_tmp_path("stderr.txt"));
    fflush(stderr);
    int saved = dup(2);
    int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    dup2(fd, 2);
    close(fd);

    int rc_load = qat_checkpoint_load(half, m, o, NULL);
    char msg_load[512];
    snprintf(msg_load, sizeof msg_load, "%s", qat_last_error());
    qat_model *r = qat_model_load(half);
    qat_file_info info;
    int rc_info = qat_checkpoint_info(half, &info);
    int rc_missing = qat_checkpoint_load(tu_tmp_path("nope.h5"), m, NULL, NULL);
    char msg_missing[512];
    snprintf(msg_missing, sizeof msg_missing, "%s", qat_last_error());
    ck_assert_int_eq(tu_write_file(junk, "not an hdf5 file at all", 23), 0);
    int rc_junk = qat_checkpoint_load(junk, m, NULL, NULL);
    char msg_junk[512];
    snprintf(msg_junk, sizeof msg_junk, "%s", qat_last_error());

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat sb;
    ck_assert_int_eq(stat(errpath, &sb), 0);
    ck_assert_int_eq((int)sb.st_size, 0);

    ck_assert_int_eq(rc_load, QAT_ERR_FORMAT);
    ck_assert_msg(strstr(msg_load, "half.h5") && strstr(msg_load, "truncated"), "%s", msg_load);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(rc_info, QAT_ERR_FORMAT);
    ck_assert_int_eq(rc_missing, QAT_ERR_IO);
    ck_assert_msg(strstr(msg_missing, "nope.h5: cannot open: No such file or directory"), "%s", msg_missing);
    ck_assert_int_eq(rc_junk, QAT_ERR_FORMAT);
    ck_assert_msg(strstr(msg_junk, "junk.h5: not an HDF5 file"), "%s", msg_junk);
    assert_no_handles();
    qat_optim_free(o);
    qat_model_free(m);
}
END_TEST

/* Rewrites the root qat_format as a fixed-length string. */
static void set_format(const char *path, const char *kind)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, strlen(kind));
    hid_t sp = H5Screate(H5S_SCALAR);
    H5Adelete(f, "qat_format");
    hid_t a = H5Acreate2(f, "qat_format", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(H5Awrite(a, st, kind), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(st);
    H5Fclose(f);
}

START_TEST(test_wrong_kind_and_version)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("kind.h5"));
    qat_model *m = qat_model_build("mlp", 1);
    qat_optim *o = make_optim(m, QAT_OPTIM_SGD);
    ck_assert_int_eq(qat_checkpoint_save(path, m, o, NULL), QAT_OK);
    set_format(path, "int8-model");
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("kind.h5: is a 'int8-model' file, expected 'float-checkpoint'");
    ck_assert_ptr_null(qat_optim_load(path, qat_model_params(m), qat_model_num_params(m)));
    assert_error_contains("kind.h5: is a 'int8-model' file, expected 'float-checkpoint' or 'qat-checkpoint'");
    qat_file_info info;
    ck_assert_int_eq(qat_checkpoint_info(path, &info), QAT_OK);
    ck_assert_str_eq(info.format, "int8-model"); /* fixed-length strings read too */

    /* a QAT checkpoint stores its optimizer like a float one */
    set_format(path, "qat-checkpoint");
    qat_optim *o2 = qat_optim_load(path, qat_model_params(m), qat_model_num_params(m));
    ck_assert_msg(o2 != NULL, "%s", qat_last_error());
    qat_optim_free(o2);
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("is a 'qat-checkpoint' file, expected 'float-checkpoint'");
    qat_optim_free(o);

    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int v = 99;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a);
    H5Fclose(f);
    ck_assert_int_eq(qat_checkpoint_load(path, m, NULL, NULL), QAT_ERR_FORMAT);
    assert_error_contains("format_version 99 is newer");

    /* an HDF5 file that is not a qat file */
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    ck_assert_ptr_null(qat_model_load(path));
    assert_error_contains("kind.h5: not a qat file");
    ck_assert_int_eq(qat_checkpoint_info(path, &info), QAT_ERR_FORMAT);
    assert_no_handles();
    qat_model_free(m);
}
END_TEST

/* ---- atomic writes ---- */

START_TEST(test_atomic_save)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s", tu_tmp_path("atomic.h5"));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    qat_model *a = qat_model_build("mlp", 1);
    perturb(a, 5);
    ck_assert_int_eq(qat_checkpoint_save(path, a, NULL, NULL), QAT_OK);
    ck_assert(file_exists(path));
    ck_assert(!file_exists(tmp));

    /* a save that fails inside the writer (a name HDF5 cannot hold) leaves
     * the old file intact and no temporary file */
    qat_model *bad = qat_model_create(1, 28, 28);
    qat_model_flatten(bad, "a/b", 0);
    ck_assert_int_eq(qat_checkpoint_save(path, bad, NULL, NULL), QAT_ERR_ARG);
    assert_error_contains("'a/b' contains '/'");
    ck_assert(!file_exists(tmp));
    qat_model *back = qat_model_load(path);
    ck_assert_ptr_nonnull(back);
    assert_same_weights(a, back);
    qat_model_free(back);
    qat_model_free(bad);

    /* a directory that does not exist */
    char nodir[4096];
    snprintf(nodir, sizeof nodir, "%s", tu_tmp_path("no/such/dir/x.h5"));
    ck_assert_int_eq(qat_checkpoint_save(nodir, a, NULL, NULL), QAT_ERR_IO);
    assert_error_contains("No such file or directory");
    assert_error_contains("no/such/dir/x.h5");

    /* overwriting with another model replaces the file completely */
    qat_model *b = qat_model_build("lenet5", 2);
    ck_assert_int_eq(qat_checkpoint_save(path, b, NULL, NULL), QAT_OK);
    ck_assert(!file_exists(tmp));
    qat_file_info info;
    ck_assert_int_eq(qat_checkpoint_info(path, &info), QAT_OK);
    ck_assert_str_eq(info.arch, "lenet5");

    /* the target is a directory: rename fails, the temp file goes */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_tmp_path("adir"));
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char adir_tmp[4200];
    snprintf(adir_tmp, sizeof adir_tmp, "%s.tmp.%ld", dir, (long)getpid());
    ck_assert_int_eq(qat_checkpoint_save(dir, b, NULL, NULL), QAT_ERR_IO);
    ck_assert(!file_exists(adir_tmp));
    assert_no_handles();
    qat_model_free(b);
    qat_model_free(a);
}
END_TEST

START_TEST(test_info)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path("info.h5"));
    qat_model *m = qat_model_build("resnet8", 1);
    qat_optim *o = make_optim(m, QAT_OPTIM_SGD);
    qat_train_state st;
    qat_train_state_init(&st);
    st.epoch = 2;
    qat_epoch_record r = record(0);
    qat_train_state_add_epoch(&st, &r);
    r = record(1);
    qat_train_state_add_epoch(&st, &r);
    ck_assert_int_eq(qat_checkpoint_save(path, m, o, &st), QAT_OK);
    qat_file_info info;
    ck_assert_int_eq(qat_checkpoint_info(path, &info), QAT_OK);
    assert_no_handles();
    ck_assert_str_eq(info.format, QAT_FORMAT_FLOAT_CHECKPOINT);
    ck_assert_int_eq(info.format_version, QAT_FORMAT_VERSION);
    ck_assert_str_eq(info.arch, "resnet8");
    ck_assert_int_eq(info.num_layers, qat_model_num_layers(m));
    ck_assert_int_eq(info.input_shape[0], 1);
    ck_assert_int_eq(info.input_shape[1], 28);
    ck_assert_int_eq(info.input_shape[2], 28);
    ck_assert_int_eq(info.num_params, qat_model_num_params(m));
    ck_assert_int_eq(info.has_optim, 1);
    ck_assert_int_eq(info.has_train, 1);
    ck_assert_int_eq(info.epoch, 2);
    ck_assert_int_eq(info.num_history, 2);

    ck_assert_int_eq(qat_checkpoint_save(path, m, NULL, NULL), QAT_OK);
    ck_assert_int_eq(qat_checkpoint_info(path, &info), QAT_OK);
    ck_assert_int_eq(info.has_optim, 0);
    ck_assert_int_eq(info.has_train, 0);
    ck_assert_int_eq(info.epoch, -1);
    ck_assert_int_eq(info.num_history, 0);
    ck_assert_int_eq(qat_checkpoint_info(tu_tmp_path("absent.h5"), &info), QAT_ERR_IO);
    assert_no_handles();
    qat_train_state_free(&st);
    qat_optim_free(o);
    qat_model_free(m);
}
END_TEST

START_TEST(test_null_args)
{
    qat_model *m = qat_model_build("mlp", 1);
    ck_assert_int_eq(qat_checkpoint_save(NULL, m, NULL, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_checkpoint_save(tu_tmp_path("x.h5"), NULL, NULL, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_checkpoint_load(NULL, m, NULL, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_checkpoint_load(tu_tmp_path("x.h5"), NULL, NULL, NULL), QAT_ERR_ARG);
    ck_assert_ptr_null(qat_model_load(NULL));
    ck_assert_int_eq(qat_checkpoint_info(NULL, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_train_state_add_epoch(NULL, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_checkpoint_save("", m, NULL, NULL), QAT_ERR_ARG);
    qat_model_free(m);
}
END_TEST

/* One case per test, so that CK_RUN_CASE=<name> runs one alone. */
#define ADD(s, fn)                                \
    do {                                          \
        TCase *tc_ = tcase_create(#fn);           \
        tcase_set_timeout(tc_, 120);              \
        tcase_add_test(tc_, fn);                  \
        suite_add_tcase(s, tc_);                  \
    } while (0)

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("test_roundtrip_reference");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_roundtrip_reference, 0, (int)(sizeof archs / sizeof archs[0]));
    suite_add_tcase(s, tc);
    ADD(s, test_model_load_custom);
    ADD(s, test_model_load_unet);
    ADD(s, test_mobilenet_clamp_channels);
    ADD(s, test_old_checkpoint_groups);
    ADD(s, test_optim_sgd_roundtrip);
    ADD(s, test_optim_adamw_roundtrip);
    ADD(s, test_optim_mismatch);
    ADD(s, test_train_state_roundtrip);
    ADD(s, test_mismatch_arch);
    ADD(s, test_bad_datasets);
    ADD(s, test_truncated_and_missing);
    ADD(s, test_wrong_kind_and_version);
    ADD(s, test_atomic_save);
    ADD(s, test_info);
    ADD(s, test_null_args);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(io_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
