/* tests/test_export.c: int8 export (qat_export_int8, io/export.c) and the
 * runtime running what it wrote.
 *
 * - A tiny model whose quantizers are set by hand: its int8 logits and
 *   every dataset of the file are worked out in the comments from the
 *   formulas of docs/FORMAT-int8.md, and the file is read back with the
 *   HDF5 C API (nothing from io/).
 * - A custom model (stride 2, padding 2, 3/5/7 channels, BN, ReLU,
 *   max-pool, residual adds, average pools, linear layers) and every
 *   reference model, PTQ-calibrated on the shipped Fashion-MNIST subset:
 *   the runtime's int8 logits against the fake-quant model's logits on the
 *   output grid, and every exported multiplier/zero point against the
 *   quantizers it was copied from.
 * - Activations below 8 bits keep their range where real values leave it
 *   (the input and the average pools included), or export refuses.
 * - Unsupported models fail with named errors and write no file.
 * - A corrupted multiplier is seen by the agreement check.
 * - The payload of mlp and convnet is about a quarter of the float model.
 * (Malformed files through the loader: tests/test_runtime.c.) */
#include <check.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- the exported file through the HDF5 C API ---- */

static hid_t h5_open(const char *path, unsigned flags)
{
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "%s: cannot open with HDF5", path);
    return f;
}

static hid_t op_group(hid_t f, int i)
{
    char name[32];
    snprintf(name, sizeof name, "/ops/%03d", i);
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    ck_assert_msg(g >= 0, "no group %s", name);
    return g;
}

/* n elements of attribute name (any rank), converted to mem; returns n */
static int attr_read(hid_t o, const char *name, hid_t mem, void *out, int max)
{
    hid_t a = H5Aopen(o, name, H5P_DEFAULT);
    ck_assert_msg(a >= 0, "no attribute %s", name);
    hid_t sp = H5Aget_space(a);
    int n = (int)H5Sget_simple_extent_npoints(sp);
    ck_assert_msg(n <= max, "attribute %s: %d elements, expected at most %d", name, n, max);
    if (n > 0) ck_assert_int_ge(H5Aread(a, mem, out), 0);
    H5Sclose(sp);
    H5Aclose(a);
    return n;
}

static int32_t attr_i32(hid_t o, const char *name)
{
    int32_t v = 0;
    ck_assert_int_eq(attr_read(o, name, H5T_NATIVE_INT32, &v, 1), 1);
    return v;
}

static float attr_f32(hid_t o, const char *name)
{
    float v = 0;
    ck_assert_int_eq(attr_read(o, name, H5T_NATIVE_FLOAT, &v, 1), 1);
    return v;
}

/* a variable-length string attribute, copied into buf */
static void attr_str(hid_t o, const char *name, char *buf, size_t size)
{
    hid_t a = H5Aopen(o, name, H5P_DEFAULT);
    ck_assert_msg(a >= 0, "no attribute %s", name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    char *s = NULL;
    ck_assert_int_ge(H5Aread(a, t, &s), 0);
    snprintf(buf, size, "%s", s ? s : "");
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
}

/* dataset name: its shape into dims (ndim returned), up to max elements into out */
static int dset_read(hid_t g, const char *name, hid_t mem, void *out, size_t max, hsize_t dims[4])
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "no dataset %s", name);
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    ck_assert(nd >= 1 && nd <= 4);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    ck_assert_msg((size_t)H5Sget_simple_extent_npoints(sp) <= max, "dataset %s larger than %zu", name, max);
    ck_assert_int_ge(H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), 0);
    H5Sclose(sp);
    H5Dclose(d);
    return nd;
}

/* dataset name, malloc'd (elements of esize bytes), its shape into dims */
static void *dset_get(hid_t g, const char *name, hid_t mem, size_t esize, int *ndim, hsize_t dims[4])
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "no dataset %s", name);
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    ck_assert(nd >= 1 && nd <= 4);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    void *out = malloc((size_t)H5Sget_simple_extent_npoints(sp) * esize);
    ck_assert_ptr_nonnull(out);
    ck_assert_int_ge(H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), 0);
    H5Sclose(sp);
    H5Dclose(d);
    *ndim = nd;
    return out;
}

static void dset_write(hid_t g, const char *name, hid_t mem, const void *v)
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "no dataset %s", name);
    ck_assert_int_ge(H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(d);
}

/* TFLite's QuantizeMultiplier written out again, without frexp: the shift
 * e that puts M * 2^(31-e) in [2^30, 2^31), m0 = round(M * 2^(31-e)), a
 * carry to 2^31 moves to 2^30 and e+1; shifts below -31 flush to 0. */
static void ref_multiplier(double M, int32_t *m0, int32_t *shift)
{
    *m0 = 0;
    *shift = 0;
    if (M == 0) return;
    int e = 0;
    while (ldexp(M, 31 - e) >= 2147483648.0) e++;
    while (ldexp(M, 31 - e) < 1073741824.0) e--;
    double q = floor(ldexp(M, 31 - e) + 0.5); /* exact: an integer plus 0.5 below 2^31 */
    if (q >= 2147483648.0) q /= 2, e++;
    if (e < -31) return;
    ck_assert_int_le(e, 30);
    *m0 = (int32_t)q;
    *shift = e;
}

/* ---- models, calibration, agreement ---- */

static qat_qmodel *prepare(qat_model *m, const char *spec)
{
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, spec));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    return qm;
}

static qat_dataset *g_train, *g_test;

static void load_data(void)
{
    if (g_train) return;
    OK(qat_dataset_load_fashion_mnist(tu_data_path("fashion-mnist-small"), 1, &g_train));
    OK(qat_dataset_load_fashion_mnist(tu_data_path("fashion-mnist-small"), 0, &g_test));
}

/* A few SGD steps on the training subset (batch 32, lr 0.05): BN running
 * statistics and logits that are not those of a fresh initialisation. */
static void train_steps(qat_model *m, int steps, uint64_t seed)
{
    load_data();
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.05;
    o.momentum = 0.9;
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &o);
    NN(opt);
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = 32;
    bo.seed = seed;
    qat_batch_iter *it = NULL;
    OK(qat_batch_iter_create(g_train, &bo, &it));
    float *xb = malloc(qat_batch_iter_x_size(it) * sizeof(float));
    ck_assert_ptr_nonnull(xb);
    uint8_t yb[32];
    qat_ctx *ctx = qat_ctx_create(0);
    NN(ctx);
    qat_ctx_set_training(ctx, 1);
    for (int step = 0; step < steps; step++) {
        int n;
        ck_assert_int_eq(qat_batch_iter_next(it, xb, yb, &n), 1);
        qat_tensor *logits = qat_model_forward(ctx, m, qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb));
        qat_tensor *loss = qat_cross_entropy(ctx, logits, yb);
        NN(loss);
        qat_optim_zero_grad(opt);
        OK(qat_backward(ctx, loss));
        OK(qat_optim_step(opt));
        qat_ctx_reset(ctx);
    }
    qat_ctx_free(ctx);
    free(xb);
    qat_batch_iter_free(it);
    qat_optim_free(opt);
}

/* PTQ: observers on the first n training images (fake-quant off), finalize */
static void ptq_calibrate(qat_ctx *ctx, qat_qmodel *qm, int n)
{
    load_data();
    qat_qmodel_set_fake_quant(qm, 0);
    for (int s = 0; s < n; s += 64) {
        int b = n - s < 64 ? n - s : 64, idx[64];
        for (int k = 0; k < b; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){b, 1, 28, 28});
        NN(x);
        OK(qat_dataset_normalize_into(g_train, idx, b, x->data));
        OK(qat_qmodel_calibrate(ctx, qm, x));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
}

/* The output quantizer of qm (the last layer's unit). */
static const qat_quantizer *out_quantizer(qat_qmodel *qm)
{
    int nl = qat_model_num_layers(qat_qmodel_float(qm));
    int u = qat_qmodel_layer_unit(qm, nl - 1);
    ck_assert_int_ge(u, 0);
    return &qat_qmodel_unit(qm, u)->act;
}

/* The fake-quant model's logits on its output grid, q = round(y / s) + z
 * (y = (q - z) * s exactly), for the first n images of ds: [n, K]. */
static int8_t *fq_logits(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, int K)
{
    const qat_quantizer *q = out_quantizer(qm);
    float inv = 1.0f / qat_quantizer_scales(q)[0];
    int32_t z;
    qat_quantizer_zero_points(q, &z);
    int8_t *all = malloc((size_t)n * K);
    ck_assert_ptr_nonnull(all);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    for (int s = 0; s < n; s += 100) {
        int b = n - s < 100 ? n - s : 100, idx[100];
        for (int k = 0; k < b; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){b, ds->c, ds->h, ds->w});
        NN(x);
        OK(qat_dataset_normalize_into(ds, idx, b, x->data));
        qat_tensor *y = qat_qmodel_forward(ctx, qm, x);
        NN(y);
        ck_assert_int_eq((int)y->numel, b * K);
        for (size_t i = 0; i < y->numel; i++) {
            long v = lrintf(y->data[i] * inv) + z;
            ck_assert_msg(v >= -128 && v <= 127, "fake-quant logit %g off the int8 grid", y->data[i]);
            all[(size_t)s * K + i] = (int8_t)v;
        }
        qat_ctx_reset(ctx);
    }
    return all;
}

/* The runtime's logits for the first n images of ds (uint8 pixels via the
 * LUT), batches of 100: [n, K]. */
static int8_t *rt_logits(const char *path, const qat_dataset *ds, int n, int K)
{
    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(path, &rt));
    ck_assert_int_eq(qat_rt_num_classes(rt), K);
    RT_OK(qat_rt_prepare(rt, 100));
    int8_t *all = malloc((size_t)n * K);
    ck_assert_ptr_nonnull(all);
    size_t img = (size_t)ds->c * ds->h * ds->w;
    for (int s = 0; s < n; s += 100) {
        int b = n - s < 100 ? n - s : 100;
        RT_OK(qat_rt_run_u8(rt, ds->images + (size_t)s * img, b, all + (size_t)s * K));
    }
    qat_rt_free(rt);
    return all;
}

typedef struct agreement {
    double top1, logits;
    int max_diff;
    /* the same against the fake-quant model evaluated with the float32
     * graph (qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH), as PyTorch evaluates) */
    double f32_top1, f32_logits;
    int f32_max_diff;
} agreement;

static int argmax8(const int8_t *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static agreement agree(const int8_t *a, const int8_t *b, int n, int K)
{
    agreement r = {0};
    long top = 0, same = 0;
    for (int i = 0; i < n; i++) {
        top += argmax8(a + (size_t)i * K, K) == argmax8(b + (size_t)i * K, K);
        for (int k = 0; k < K; k++) {
            int d = abs(a[(size_t)i * K + k] - b[(size_t)i * K + k]);
            same += d == 0;
            if (d > r.max_diff) r.max_diff = d;
        }
    }
    r.top1 = (double)top / n;
    r.logits = (double)same / ((double)n * K);
    return r;
}

/* Runtime vs fake-quant on the first n test images. */
static agreement file_agreement(qat_ctx *ctx, qat_qmodel *qm, const char *path, int n)
{
    load_data();
    int K = qat_model_layer_c(qat_qmodel_float(qm), qat_model_num_layers(qat_qmodel_float(qm)) - 1)->out_shape[0];
    int8_t *f = fq_logits(ctx, qm, g_test, n, K);
    int8_t *r = rt_logits(path, g_test, n, K);
    agreement a = agree(r, f, n, K);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    int8_t *g = fq_logits(ctx, qm, g_test, n, K);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
    agreement b = agree(r, g, n, K);
    a.f32_top1 = b.top1;
    a.f32_logits = b.logits;
    a.f32_max_diff = b.max_diff;
    free(f);
    free(g);
    free(r);
    return a;
}

/* Every op of the file against the qmodel it came from and the formulas:
 * out_scale/out_zero_point copied from the unit's activation quantizer (or
 * the input op's for max-pool/flatten/relu), in_zero_point = the input op's
 * out_zero_point, weights in [-127, 127], multipliers and shifts =
 * QuantizeMultiplier of the real multiplier, add shifts as large as they
 * can be. Returns the number of ops. */
static int check_file(const char *path, qat_qmodel *qm)
{
    hid_t f = h5_open(path, H5F_ACC_RDONLY);
    char s[64];
    attr_str(f, "qat_format", s, sizeof s);
    ck_assert_str_eq(s, "int8-model");
    ck_assert_int_eq(attr_i32(f, "format_version"), QAT_I8_FORMAT_VERSION);
    int n = attr_i32(f, "num_ops");
    ck_assert_int_ge(n, 2);
    float *scale = calloc((size_t)n, sizeof *scale);
    int32_t *zp = calloc((size_t)n, sizeof *zp);
    int *size = calloc((size_t)n, sizeof *size);
    ck_assert(scale && zp && size);
    for (int i = 0; i < n; i++) {
        hid_t g = op_group(f, i);
        char type[32], name[QAT_NAME_MAX];
        attr_str(g, "type", type, sizeof type);
        attr_str(g, "name", name, sizeof name);
        int32_t in[2] = {-1, -1}, shape[3] = {1, 1, 1};
        int nin = attr_read(g, "inputs", H5T_NATIVE_INT32, in, 2);
        int nd = attr_read(g, "out_shape", H5T_NATIVE_INT32, shape, 3);
        size[i] = shape[0] * (nd == 3 ? shape[1] * shape[2] : 1);
        scale[i] = attr_f32(g, "out_scale");
        zp[i] = attr_i32(g, "out_zero_point");
        ck_assert_int_eq(nin, strcmp(type, "input") ? strcmp(type, "add") ? 1 : 2 : 0);
        ck_assert_msg(i == 0 ? !strcmp(type, "input") : strcmp(type, "input") != 0, "op %d: %s", i, type);
        for (int k = 0; k < nin; k++) ck_assert_msg(in[k] >= 0 && in[k] < i, "op %d reads op %d", i, in[k]);
        int u = qat_qmodel_find_unit(qm, name);
        if (!strcmp(type, "maxpool2d") || !strcmp(type, "flatten") || !strcmp(type, "relu")) {
            ck_assert_msg(scale[i] == scale[in[0]] && zp[i] == zp[in[0]], "op %d (%s) changes the grid", i, type);
        } else {
            ck_assert_msg(u >= 0, "op %d (%s '%s') is no unit of the qmodel", i, type, name);
            const qat_quantizer *q = &qat_qmodel_unit(qm, u)->act;
            int32_t qz;
            qat_quantizer_zero_points(q, &qz);
            ck_assert_msg(scale[i] == qat_quantizer_scales(q)[0] && zp[i] == qz, "op %d '%s': out %g/%d, quantizer %g/%d",
                          i, name, scale[i], zp[i], qat_quantizer_scales(q)[0], qz);
        }
        if (!strcmp(type, "conv2d") || !strcmp(type, "linear")) {
            const qat_qunit *un = qat_qmodel_unit(qm, u);
            int OC = shape[0];
            ck_assert_int_eq(attr_i32(g, "in_zero_point"), zp[in[0]]);
            const qat_quantizer *q = &un->act;
            ck_assert_int_eq(attr_i32(g, "act_min"), un->relu >= 0 && zp[i] > q->qmin ? zp[i] : q->qmin);
            ck_assert_int_eq(attr_i32(g, "act_max"), q->qmax);
            hsize_t d[4];
            int wnd, nd1;
            /* below 8 bits the weights are packed (docs/FORMAT-int8.md,
             * "Weight encodings"): decode them to int8 */
            char enc[16];
            attr_str(g, "weight_encoding", enc, sizeof enc);
            int wb = un->weight.scheme.bits;
            ck_assert_int_eq(attr_i32(g, "weight_bits"), wb);
            ck_assert_str_eq(enc, wb < 8 ? "packed" : "int8");
            int8_t *w;
            if (wb < 8) {
                int32_t ws4[4] = {0, 0, 0, 0};
                wnd = attr_read(g, "weight_shape", H5T_NATIVE_INT32, ws4, 4);
                for (int k = 0; k < wnd; k++) d[k] = (hsize_t)ws4[k];
                size_t nw = 1;
                for (int k = 0; k < wnd; k++) nw *= d[k];
                hsize_t pd[4];
                int pnd;
                uint8_t *p = dset_get(g, "weight", H5T_NATIVE_UINT8, 1, &pnd, pd);
                ck_assert(pnd == 1 && pd[0] == (nw * (size_t)wb + 7) / 8);
                w = malloc(nw);
                qat_unpack_weights(w, p, nw, wb);
                free(p);
            } else {
                w = dset_get(g, "weight", H5T_NATIVE_INT8, 1, &wnd, d);
            }
            ck_assert_int_eq(wnd, type[0] == 'c' ? 4 : 2);
            ck_assert_int_eq((int)d[0], OC);
            size_t per = 1;
            for (int k = 1; k < wnd; k++) per *= d[k];
            for (size_t k = 0; k < per * (size_t)OC; k++) ck_assert_int_ge(w[k], -127);
            int32_t *mult = dset_get(g, "multiplier", H5T_NATIVE_INT32, 4, &nd1, d);
            ck_assert(nd1 == 1 && (int)d[0] == OC);
            int32_t *sh = dset_get(g, "shift", H5T_NATIVE_INT32, 4, &nd1, d);
            ck_assert(nd1 == 1 && (int)d[0] == OC);
            float *ws = dset_get(g, "weight_scale", H5T_NATIVE_FLOAT, 4, &nd1, d);
            ck_assert(nd1 == 1 && (int)d[0] == OC);
            for (int c = 0; c < OC; c++) {
                int32_t em, es;
                ref_multiplier((double)scale[in[0]] * ws[c] / scale[i], &em, &es);
                ck_assert_msg(mult[c] == em && sh[c] == es, "op %d '%s' channel %d: multiplier %d shift %d, expected %d %d",
                              i, name, c, mult[c], sh[c], em, es);
                ck_assert_msg(ws[c] == qat_quantizer_scales(&un->weight)[un->weight.n > 1 ? c : 0],
                              "op %d channel %d: weight scale not copied", i, c);
            }
            free(w);
            free(mult);
            free(sh);
            free(ws);
        } else if (!strcmp(type, "add")) {
            int32_t m[2], z[2];
            ck_assert_int_eq(attr_read(g, "multiplier", H5T_NATIVE_INT32, m, 2), 2);
            ck_assert_int_eq(attr_read(g, "in_zero_point", H5T_NATIVE_INT32, z, 2), 2);
            int t = attr_i32(g, "add_shift");
            ck_assert(t >= 1 && t <= 62);
            ck_assert(z[0] == zp[in[0]] && z[1] == zp[in[1]]);
            for (int k = 0; k < 2; k++) {
                double want = (double)scale[in[k]] / scale[i];
                ck_assert_msg(m[k] == (int32_t)floor(ldexp(want, t) + 0.5), "add '%s': m[%d] = %d for %.17g * 2^%d",
                              name, k, m[k], want, t);
            }
            /* the most precise shift: one more bit would overflow int32 */
            int32_t mx = m[0] > m[1] ? m[0] : m[1];
            ck_assert_msg(t == 62 || mx >= (1 << 30), "add '%s': t = %d leaves precision unused (m %d)", name, t, mx);
            const qat_qunit *un = qat_qmodel_unit(qm, u);
            ck_assert_int_eq(attr_i32(g, "act_min"), un->relu >= 0 && zp[i] > un->act.qmin ? zp[i] : un->act.qmin);
            ck_assert_int_eq(attr_i32(g, "act_max"), un->act.qmax);
        } else if (!strcmp(type, "global_avgpool") || !strcmp(type, "avgpool2d")) {
            int win = size[in[0]] / shape[0]; /* H*W of the input per channel */
            if (type[0] == 'a') {
                int k = attr_i32(g, "kernel");
                win = k * k;
            }
            int32_t em, es;
            ref_multiplier((double)scale[in[0]] / ((double)win * scale[i]), &em, &es);
            ck_assert_int_eq(attr_i32(g, "multiplier"), em);
            ck_assert_int_eq(attr_i32(g, "shift"), es);
            ck_assert_int_eq(attr_i32(g, "in_zero_point"), zp[in[0]]);
        }
        H5Gclose(g);
    }
    H5Fclose(f);
    free(scale);
    free(zp);
    free(size);
    return n;
}

/* ---- 1. a model worked out by hand ---- */

static void set_quantizer(qat_quantizer *q, const float *s, const int32_t *z)
{
    for (int c = 0; c < q->n; c++) {
        q->scale[c] = s[c];
        q->zero_point[c] = z ? z[c] : 0;
    }
    q->initialized = 1;
    q->observe = 0;
    q->fake_quant = 1;
}

/* input 1x2x2 -> conv 1x1 (1 channel, w 0.7, b 0.28) -> relu -> flatten ->
 * fc linear(4 -> 2), w [[0.5, -0.25, 0.125, 1], [-1, 0.75, 0.3, -0.6]],
 * b [0.1, -0.21]. Quantizers set by hand (no calibration):
 *   input  s = 0.5,  z = -1
 *   conv   s_w = 1/16;           out s = 0.25, z = 2 (after the ReLU)
 *   fc     s_w = [1/64, 0.01f];  out s = 0.1f, z = -3 */
static qat_qmodel *hand_model(qat_model **mp)
{
    qat_model *m = qat_model_create(1, 2, 2);
    NN(m);
    int x = qat_model_conv2d(m, "conv", 0, 1, 1, 1, 0, 1);
    x = qat_model_relu(m, "relu", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc", x, 2, 1);
    ck_assert_int_eq(x, 4);
    qat_layer *conv = qat_model_layer(m, 1), *fc = qat_model_layer(m, 4);
    conv->weight->data[0] = 0.7f;
    conv->bias->data[0] = 0.28f;
    const float W[8] = {0.5f, -0.25f, 0.125f, 1.0f, -1.0f, 0.75f, 0.3f, -0.6f};
    memcpy(fc->weight->data, W, sizeof W);
    fc->bias->data[0] = 0.1f;
    fc->bias->data[1] = -0.21f;
    qat_qmodel *qm = prepare(m, "w8a8");
    ck_assert_int_eq(qat_qmodel_num_units(qm), 3);
    qat_qunit *in = qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, "input"));
    qat_qunit *uc = qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, "conv"));
    qat_qunit *uf = qat_qmodel_unit(qm, qat_qmodel_find_unit(qm, "fc"));
    ck_assert_int_eq(uc->relu, 2);
    ck_assert_int_eq(uc->weight.n, 1);
    ck_assert_int_eq(uf->weight.n, 2);
    set_quantizer(&in->act, (float[]){0.5f}, (int32_t[]){-1});
    set_quantizer(&uc->weight, (float[]){0.0625f}, NULL);
    set_quantizer(&uc->act, (float[]){0.25f}, (int32_t[]){2});
    set_quantizer(&uf->weight, (float[]){1.0f / 64, 0.01f}, NULL);
    set_quantizer(&uf->act, (float[]){0.1f}, (int32_t[]){-3});
    *mp = m;
    return qm;
}

/* Two images: x = [1, -1.5, 2.5, 3] and x = [0, 0, 0, 0]. */
static const float hand_x[8] = {1.0f, -1.5f, 2.5f, 3.0f, 0, 0, 0, 0};

/* input: q = -1 + round(x / 0.5) = [1, -4, 4, 5] and [-1, -1, -1, -1]
 *   (q - z_in = [2, -3, 5, 6] and [0, 0, 0, 0])
 * conv: w_q = round(0.7 * 16) = round(11.2) = 11; s_b = 0.5 * 1/16 = 1/32,
 *   b_q = round(0.28 * 32) = round(8.96) = 9;
 *   acc = 9 + 11 * (q - z_in) = [31, -24, 64, 75] and [9, 9, 9, 9];
 *   M = 0.5 * 0.0625 / 0.25 = 0.125 = 2^30 * 2^(-2-31): m = 2^30, shift -2,
 *   t = 33, requant = floor(acc / 8 + 1/2): [4, -3, 8, 9] and [1, 1, 1, 1]
 *   (31/8 = 3.875, -24/8 = -3, 64/8 = 8, 75/8 = 9.375, 9/8 = 1.125);
 *   + z_out 2 = [6, -1, 10, 11], [3, 3, 3, 3]; ReLU: act_min = z_out = 2:
 *   [6, 2, 10, 11] and [3, 3, 3, 3]. */
static const int8_t hand_conv[8] = {6, 2, 10, 11, 3, 3, 3, 3};
/* fc: input q - 2 = [4, 0, 8, 9] and [1, 1, 1, 1].
 * channel 0: s_w = 1/64: w_q = 64 * [0.5, -0.25, 0.125, 1] = [32, -16, 8, 64];
 *   s_b = 0.25/64 = 1/256, b_q = round(0.1 * 256) = round(25.6) = 26;
 *   acc = 26 + 32*4 - 16*0 + 8*8 + 64*9 = 26 + 128 + 64 + 576 = 794
 *     and 26 + 32 - 16 + 8 + 64 = 114;
 *   M = 0.25 * (1/64) / 0.1f = 2^-8 / (13421773 * 2^-27) = 2^19 / 13421773
 *     = 0.0390624994 = 0.62499999 * 2^-4: m = round(2^54 / 13421773)
 *     = 1342177260, shift -4 (t = 35);
 *   794 * M = 31.0156 -> 31, 114 * M = 4.4531 -> 4; + z_out (-3): 28, 1.
 * channel 1: s_w = 0.01f, 1/s_w = 100.0f: w_q = [-100, 75, 30, -60];
 *   s_b = 0.25 * 0.01f = 0.0025f, 1/s_b = 400.0f, b_q = round(-0.21 * 400) = -84;
 *   acc = -84 - 100*4 + 75*0 + 30*8 - 60*9 = -84 - 400 + 240 - 540 = -784
 *     and -84 - 100 + 75 + 30 - 60 = -139;
 *   M = 0.25 * 0.01f / 0.1f with 0.01f = 10737418 * 2^-30:
 *     = (10737418 / 13421773) * 2^-5 = 0.79999997 * 2^-5:
 *     m = round(10737418 * 2^31 / 13421773) = round(1717986854.4)
 *     = 1717986854, shift -5 (t = 36);
 *   -784 * M = -19.6 -> -20, -139 * M = -3.475 -> -3; + z_out: -23, -6. */
static const int8_t hand_logits[4] = {28, -23, 1, -6};

START_TEST(test_hand_logits)
{
    qat_model *m;
    qat_qmodel *qm = hand_model(&m);
    const char *path = tu_tmp_path("hand.int8.h5");
    qat_export_opts o = qat_export_opts_defaults();
    o.mean = 0.5f;
    o.std = 0.5f;
    o.source = "hand.h5";
    OK(qat_export_int8(qm, path, &o));

    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(path, &rt));
    RT_OK(qat_rt_prepare(rt, 2));
    ck_assert_int_eq(qat_rt_num_ops(rt), 4);
    ck_assert_int_eq(qat_rt_num_classes(rt), 2);
    ck_assert_float_eq(qat_rt_output_scale(rt), 0.1f);
    ck_assert_int_eq(qat_rt_output_zero_point(rt), -3);
    int8_t y[4];
    RT_OK(qat_rt_run_f32(rt, hand_x, 2, y));
    const int8_t *xq = qat_rt_op_output(rt, 0), *c = qat_rt_op_output(rt, 1);
    const int8_t want_x[8] = {1, -4, 4, 5, -1, -1, -1, -1};
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(xq[i] == want_x[i], "input %d: %d, expected %d", i, xq[i], want_x[i]);
        ck_assert_msg(c[i] == hand_conv[i], "conv output %d: %d, expected %d", i, c[i], hand_conv[i]);
    }
    for (int i = 0; i < 4; i++) ck_assert_msg(y[i] == hand_logits[i], "logit %d: %d, expected %d", i, y[i], hand_logits[i]);
    /* the real logits: (28 + 3) * 0.1 = 3.1, (-23 + 3) * 0.1 = -2 */
    float real[4];
    qat_rt_dequantize(rt, y, 4, real);
    ck_assert_float_eq_tol(real[0], 3.1f, 1e-6f);
    ck_assert_float_eq_tol(real[1], -2.0f, 1e-6f);

    /* the fake-quant model gives the same grid values */
    qat_ctx *ctx = qat_ctx_create(0);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *yf = qat_qmodel_forward(ctx, qm, qat_from(ctx, 4, (int[]){2, 1, 2, 2}, hand_x));
    NN(yf);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(lrintf(yf->data[i] * 10.0f) - 3 == hand_logits[i], "fake-quant logit %d: %g", i, yf->data[i]);

    /* uint8 pixels through the LUT: x = (p/255 - 0.5) / 0.5, q = -1 + round(2x)
     * p = 0: x = -1 -> -3;  p = 64: x = -0.498 -> -1 + round(-0.996) = -2;
     * p = 128: x = 0.0039 -> -1;  p = 191: x = 0.498 -> 0;  p = 255: x = 1 -> 1 */
    const uint8_t px[8] = {0, 64, 128, 191, 255, 255, 0, 128};
    const int8_t want_px[8] = {-3, -2, -1, 0, 1, 1, -3, -1};
    RT_OK(qat_rt_run_u8(rt, px, 2, y));
    xq = qat_rt_op_output(rt, 0);
    for (int i = 0; i < 8; i++) ck_assert_msg(xq[i] == want_px[i], "pixel %d -> %d, expected %d", px[i], xq[i], want_px[i]);
    qat_rt_free(rt);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_hand_datasets)
{
    qat_model *m;
    qat_qmodel *qm = hand_model(&m);
    const char *path = tu_tmp_path("hand2.int8.h5");
    qat_export_opts o = qat_export_opts_defaults();
    o.mean = 0.5f;
    o.std = 0.5f;
    o.source = "hand.h5";
    OK(qat_export_int8(qm, path, &o));
    hid_t f = h5_open(path, H5F_ACC_RDONLY);
    char s[64];
    attr_str(f, "qat_format", s, sizeof s);
    ck_assert_str_eq(s, "int8-model");
    attr_str(f, "arch", s, sizeof s);
    ck_assert_str_eq(s, "custom");
    attr_str(f, "source", s, sizeof s);
    ck_assert_str_eq(s, "hand.h5");
    ck_assert_int_eq(attr_i32(f, "format_version"), QAT_I8_FORMAT_VERSION);
    ck_assert_int_eq(attr_i32(f, "num_ops"), 4);
    hsize_t d[4];
    int32_t v[8];

    /* 000 input: the input quantizer, mean/std, the LUT */
    hid_t g = op_group(f, 0);
    attr_str(g, "type", s, sizeof s);
    ck_assert_str_eq(s, "input");
    ck_assert_int_eq(attr_read(g, "inputs", H5T_NATIVE_INT32, v, 2), 0);
    ck_assert_int_eq(attr_read(g, "out_shape", H5T_NATIVE_INT32, v, 3), 3);
    ck_assert(v[0] == 1 && v[1] == 2 && v[2] == 2);
    ck_assert_float_eq(attr_f32(g, "out_scale"), 0.5f);
    ck_assert_int_eq(attr_i32(g, "out_zero_point"), -1);
    ck_assert_float_eq(attr_f32(g, "mean"), 0.5f);
    ck_assert_float_eq(attr_f32(g, "std"), 0.5f);
    int8_t lut[256];
    ck_assert_int_eq(dset_read(g, "lut", H5T_NATIVE_INT8, lut, 256, d), 1);
    ck_assert_int_eq((int)d[0], 256);
    /* q = -1 + round(2x), 2x = 4p/255 - 2 crosses -1.5, -0.5, 0.5, 1.5 at
     * p = 31.875, 95.625, 159.375, 223.125 (no ties): q = -3 up to p = 31,
     * -2 up to 95, -1 up to 159, 0 up to 223, 1 above */
    for (int p = 0; p < 256; p++) {
        int want = p <= 31 ? -3 : p <= 95 ? -2 : p <= 159 ? -1 : p <= 223 ? 0 : 1;
        ck_assert_msg(lut[p] == want, "lut[%d] = %d, expected %d", p, lut[p], want);
    }
    H5Gclose(g);

    /* 001 conv2d with the fused ReLU */
    g = op_group(f, 1);
    attr_str(g, "type", s, sizeof s);
    ck_assert_str_eq(s, "conv2d");
    attr_str(g, "name", s, sizeof s);
    ck_assert_str_eq(s, "conv");
    ck_assert_int_eq(attr_read(g, "inputs", H5T_NATIVE_INT32, v, 2), 1);
    ck_assert_int_eq(v[0], 0);
    ck_assert_int_eq(attr_read(g, "out_shape", H5T_NATIVE_INT32, v, 3), 3);
    ck_assert(v[0] == 1 && v[1] == 2 && v[2] == 2);
    ck_assert_float_eq(attr_f32(g, "out_scale"), 0.25f);
    ck_assert_int_eq(attr_i32(g, "out_zero_point"), 2);
    ck_assert_int_eq(attr_i32(g, "stride"), 1);
    ck_assert_int_eq(attr_i32(g, "pad"), 0);
    ck_assert_int_eq(attr_i32(g, "in_zero_point"), -1);
    ck_assert_int_eq(attr_i32(g, "act_min"), 2); /* the ReLU: act_min = out_zero_point */
    ck_assert_int_eq(attr_i32(g, "act_max"), 127);
    int8_t w[8];
    ck_assert_int_eq(dset_read(g, "weight", H5T_NATIVE_INT8, w, 1, d), 4);
    ck_assert(d[0] == 1 && d[1] == 1 && d[2] == 1 && d[3] == 1);
    ck_assert_int_eq(w[0], 11); /* round(0.7 * 16) */
    dset_read(g, "bias", H5T_NATIVE_INT32, v, 1, d);
    ck_assert_int_eq(v[0], 9); /* round(0.28 / (0.5 / 16)) = round(8.96) */
    dset_read(g, "multiplier", H5T_NATIVE_INT32, v, 1, d);
    ck_assert_int_eq(v[0], 1 << 30); /* 0.125 = 2^30 * 2^(-2 - 31) */
    dset_read(g, "shift", H5T_NATIVE_INT32, v, 1, d);
    ck_assert_int_eq(v[0], -2);
    float ws[2];
    dset_read(g, "weight_scale", H5T_NATIVE_FLOAT, ws, 1, d);
    ck_assert_float_eq(ws[0], 0.0625f);
    H5Gclose(g);

    /* 002 flatten: the conv's grid */
    g = op_group(f, 2);
    attr_str(g, "type", s, sizeof s);
    ck_assert_str_eq(s, "flatten");
    ck_assert_int_eq(attr_read(g, "out_shape", H5T_NATIVE_INT32, v, 3), 1);
    ck_assert_int_eq(v[0], 4);
    ck_assert_float_eq(attr_f32(g, "out_scale"), 0.25f);
    ck_assert_int_eq(attr_i32(g, "out_zero_point"), 2);
    H5Gclose(g);

    /* 003 linear: the logits */
    g = op_group(f, 3);
    attr_str(g, "type", s, sizeof s);
    ck_assert_str_eq(s, "linear");
    attr_str(g, "name", s, sizeof s);
    ck_assert_str_eq(s, "fc");
    ck_assert_int_eq(attr_read(g, "inputs", H5T_NATIVE_INT32, v, 2), 1);
    ck_assert_int_eq(v[0], 2);
    ck_assert_int_eq(attr_read(g, "out_shape", H5T_NATIVE_INT32, v, 3), 1);
    ck_assert_int_eq(v[0], 2);
    ck_assert_float_eq(attr_f32(g, "out_scale"), 0.1f);
    ck_assert_int_eq(attr_i32(g, "out_zero_point"), -3);
    ck_assert_int_eq(attr_i32(g, "in_zero_point"), 2);
    ck_assert_int_eq(attr_i32(g, "act_min"), -128); /* no ReLU */
    ck_assert_int_eq(attr_i32(g, "act_max"), 127);
    ck_assert_int_eq(dset_read(g, "weight", H5T_NATIVE_INT8, w, 8, d), 2);
    ck_assert(d[0] == 2 && d[1] == 4);
    const int8_t want_w[8] = {32, -16, 8, 64, -100, 75, 30, -60};
    for (int i = 0; i < 8; i++) ck_assert_msg(w[i] == want_w[i], "fc weight %d: %d, expected %d", i, w[i], want_w[i]);
    dset_read(g, "bias", H5T_NATIVE_INT32, v, 2, d);
    ck_assert(v[0] == 26 && v[1] == -84); /* round(0.1 * 256), round(-0.21 * 400) */
    dset_read(g, "multiplier", H5T_NATIVE_INT32, v, 2, d);
    ck_assert_int_eq(v[0], 1342177260); /* round(2^54 / 13421773) */
    ck_assert_int_eq(v[1], 1717986854);
    dset_read(g, "shift", H5T_NATIVE_INT32, v, 2, d);
    ck_assert(v[0] == -4 && v[1] == -5);
    dset_read(g, "weight_scale", H5T_NATIVE_FLOAT, ws, 2, d);
    ck_assert(ws[0] == 1.0f / 64 && ws[1] == 0.01f);
    H5Gclose(g);
    H5Fclose(f);

    /* the same numbers from the general formulas: b_q = round(b / (s_in*s_w)),
     * multiplier/shift = QuantizeMultiplier(s_in * s_w / s_out) */
    ck_assert_int_eq(check_file(path, qm), 4);
    /* the two fc multipliers in integers (0.1f = 13421773 * 2^-27,
     * 0.01f = 10737418 * 2^-30) */
    ck_assert_uint_eq(((1ull << 54) + 13421773 / 2) / 13421773, 1342177260u);
    ck_assert_uint_eq(((10737418ull << 31) + 13421773 / 2) / 13421773, 1717986854u);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 2. any model from the public layer API ---- */

/* input 1x28x28
 * c1 conv(3, k5, s2, p2) bn1 r1            -> 3x14x14
 * c2 conv(5, k3, s1, p2, bias) r2          -> 5x16x16
 * mp maxpool(2, 2), rmp relu (standalone)  -> 5x8x8
 * blk basic block(7, stride 2): conv1 3x3 s2, bn, relu, conv2, bn,
 *     shortcut conv1x1 s2 + bn, add, relu  -> 7x4x4
 * c3 conv(7, k3, p1) bn3, add2 = blk + bn3 (no ReLU) -> 7x4x4
 * ap avgpool(2, 2)                         -> 7x2x2
 * gap                                      -> 7
 * fc1 linear(9) r3, fc2 linear(10) */
static qat_model *custom_model(uint64_t seed)
{
    qat_model *m = qat_model_create(1, 28, 28);
    qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD); /* the training data's */
    NN(m);
    int x = qat_model_conv2d(m, "c1", 0, 3, 5, 2, 2, 0);
    x = qat_model_batchnorm2d(m, "bn1", x);
    x = qat_model_relu(m, "r1", x);
    x = qat_model_conv2d(m, "c2", x, 5, 3, 1, 2, 1);
    x = qat_model_relu(m, "r2", x);
    x = qat_model_maxpool2d(m, "mp", x, 2, 2);
    x = qat_model_relu(m, "rmp", x);
    x = qat_model_basic_block(m, "blk", x, 7, 2);
    int y = qat_model_conv2d(m, "c3", x, 7, 3, 1, 1, 0);
    y = qat_model_batchnorm2d(m, "bn3", y);
    x = qat_model_add(m, "add2", x, y);
    x = qat_model_avgpool2d(m, "ap", x, 2, 2);
    x = qat_model_global_avgpool(m, "gap", x);
    x = qat_model_linear(m, "fc1", x, 9, 1);
    x = qat_model_relu(m, "r3", x);
    x = qat_model_linear(m, "fc2", x, 10, 1);
    ck_assert_msg(x > 0, "custom model: %s", qat_last_error());
    const qat_layer *l = qat_model_layer_c(m, qat_model_find(m, "blk.add"));
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(l->out_shape[0], 7);
    ck_assert_int_eq(l->out_shape[1], 4);
    OK(qat_model_init(m, seed));
    return m;
}

static void print_agreement(const char *what, agreement a)
{
    printf("test_export: %-28s top-1 agreement %.4f, logit agreement %.4f, max diff %d step(s); "
           "float32 graph: %.4f, %.4f, %d\n",
           what, a.top1, a.logits, a.max_diff, a.f32_top1, a.f32_logits, a.f32_max_diff);
}

/* The runtime gives the fake-quant model's int8 logits exactly (evaluated
 * on the integer grid, the default), and never more than one step from
 * the float32 graph's, which rounds differently near rounding boundaries. */
static void assert_agrees(const char *what, agreement a)
{
    ck_assert_msg(a.top1 == 1.0 && a.logits == 1.0 && a.max_diff == 0, "%s: top-1 %.4f logits %.4f max %d", what,
                  a.top1, a.logits, a.max_diff);
    ck_assert_msg(a.f32_top1 >= 0.99 && a.f32_logits >= 0.99 && a.f32_max_diff <= 1,
                  "%s, float32 graph: top-1 %.4f logits %.4f max %d", what, a.f32_top1, a.f32_logits, a.f32_max_diff);
}

/* quantization configurations of the custom model */
static const struct {
    const char *spec;
    int per_tensor_weights;
    qat_calibrator calib;
} custom_cfgs[] = {
    {"w8a8", 0, QAT_CALIBRATOR_EMA},
    {"w8a8", 1, QAT_CALIBRATOR_KL},
    {"w4a8", 0, QAT_CALIBRATOR_MINMAX},
    {"w4a4", 0, QAT_CALIBRATOR_MINMAX},
};

START_TEST(test_custom_model)
{
    qat_model *m = custom_model(11);
    train_steps(m, 30, 5);
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, custom_cfgs[_i].spec));
    qat_qconfig_set_calibrator(&cfg, custom_cfgs[_i].calib);
    if (custom_cfgs[_i].per_tensor_weights) cfg.base.weight.per_channel = 0;
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 256);
    const char *path = tu_tmp_path("custom.int8.h5");
    OK(qat_export_int8(qm, path, NULL));
    /* 15 ops: input c1 c2 mp rmp blk.conv1 blk.conv2 blk.shortcut.0 blk.add
     * c3 add2 ap gap fc1 fc2 (BN and fused ReLUs fold into their units) */
    ck_assert_int_eq(check_file(path, qm), 15);
    agreement a = file_agreement(ctx, qm, path, 1000);
    char what[32];
    snprintf(what, sizeof what, "custom %s%s %s", custom_cfgs[_i].spec, custom_cfgs[_i].per_tensor_weights ? " per-tensor" : "",
             qat_calibrator_name(custom_cfgs[_i].calib));
    print_agreement(what, a);
    assert_agrees(what, a);

    /* float inputs quantized by the runtime = the pixels through the LUT */
    load_data();
    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(path, &rt));
    RT_OK(qat_rt_prepare(rt, 64));
    float *x = malloc(64 * 784 * sizeof *x);
    int8_t ya[640], yb[640];
    ck_assert_ptr_nonnull(x);
    OK(qat_dataset_normalize_into(g_test, NULL, 64, x));
    RT_OK(qat_rt_run_f32(rt, x, 64, ya));
    RT_OK(qat_rt_run_u8(rt, g_test->images, 64, yb));
    ck_assert_mem_eq(ya, yb, sizeof ya);
    free(x);
    qat_rt_free(rt);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

static const char *const archs[] = {"mlp", "lenet5", "convnet", "resnet8"};

START_TEST(test_reference_models)
{
    const char *arch = archs[_i];
    qat_model *m = qat_model_build(arch, 100 + (uint64_t)_i);
    qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD); /* the training data's */
    NN(m);
    train_steps(m, 10, 3);
    qat_qmodel *qm = prepare(m, "w8a8");
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 256);
    char name[64];
    snprintf(name, sizeof name, "%s.int8.h5", arch);
    const char *path = tu_tmp_path(name);
    OK(qat_export_int8(qm, path, NULL));
    hid_t f = h5_open(path, H5F_ACC_RDONLY);
    char s[32];
    attr_str(f, "arch", s, sizeof s);
    ck_assert_str_eq(s, arch);
    H5Fclose(f);
    check_file(path, qm);
    agreement a = file_agreement(ctx, qm, path, 500);
    print_agreement(arch, a);
    assert_agrees(arch, a);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 3. what cannot be converted ---- */

/* input 1x28x28 -> c1 conv(3, k3, s2) bn r -> flatten -> fc linear(10) */
static qat_model *small_model(void)
{
    qat_model *m = qat_model_create(1, 28, 28);
    qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD); /* the training data's */
    NN(m);
    int x = qat_model_conv2d(m, "c1", 0, 3, 3, 2, 0, 0);
    x = qat_model_batchnorm2d(m, "bn", x);
    x = qat_model_relu(m, "r", x);
    x = qat_model_flatten(m, "flat", x);
    x = qat_model_linear(m, "fc", x, 10, 1);
    ck_assert_int_gt(x, 0);
    OK(qat_model_init(m, 3));
    return m;
}

/* export fails with status st, a message containing each of msgs, and no file */
static void expect_export_error(qat_qmodel *qm, int st, const char *const *msgs, int n)
{
    const char *path = tu_tmp_path("refused.int8.h5");
    unlink(path);
    int rc = qat_export_int8(qm, path, NULL);
    ck_assert_msg(rc == st, "export returned %d (%s), expected %d", rc, qat_last_error(), st);
    for (int i = 0; i < n; i++)
        ck_assert_msg(strstr(qat_last_error(), msgs[i]) != NULL, "message '%s' lacks '%s'", qat_last_error(), msgs[i]);
    ck_assert_msg(access(path, F_OK) != 0, "a refused export left %s", path);
}

START_TEST(test_float_override)
{
    qat_model *m = small_model();
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "c1=float"));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 64);
    expect_export_error(qm, QAT_ERR_UNSUPPORTED, (const char *[]){"'c1'", "float"}, 2);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

START_TEST(test_wide_activations)
{
    qat_model *m = small_model();
    qat_qmodel *qm = prepare(m, "w8a16");
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 64);
    expect_export_error(qm, QAT_ERR_UNSUPPORTED, (const char *[]){"'input'", "int8"}, 2);
    qat_qmodel_free(qm);

    /* 16-bit weights */
    qm = prepare(m, "w16a8");
    ptq_calibrate(ctx, qm, 64);
    expect_export_error(qm, QAT_ERR_UNSUPPORTED, (const char *[]){"'c1'", "weights"}, 2);
    qat_qmodel_free(qm);

    /* unsigned 8-bit activations ([0, 255] is no int8) on one unit */
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a8"));
    OK(qat_qconfig_add_override(&cfg, "fc=w8a8"));
    cfg.overrides[0].cfg.act.is_signed = 0;
    qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    ptq_calibrate(ctx, qm, 64);
    expect_export_error(qm, QAT_ERR_UNSUPPORTED, (const char *[]){"'fc'", "[0, 255]"}, 2);
    qat_qmodel_free(qm);
    qat_ctx_free(ctx);
    qat_model_free(m);
}
END_TEST

START_TEST(test_uncalibrated)
{
    qat_model *m = small_model();
    qat_qmodel *qm = prepare(m, "w8a8");
    expect_export_error(qm, QAT_ERR_STATE, (const char *[]){"'input'", "calibrate"}, 2);
    /* observers ran but finalize was not called: fake-quant is still off */
    qat_ctx *ctx = qat_ctx_create(0);
    qat_qmodel_set_fake_quant(qm, 0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){4, 1, 28, 28});
    qat_rng r;
    qat_rng_seed(&r, 1);
    tu_fill_uniform(x->data, x->numel, -1, 2, &r);
    OK(qat_qmodel_calibrate(ctx, qm, x));
    expect_export_error(qm, QAT_ERR_STATE, (const char *[]){"unit '"}, 1);
    /* arguments */
    ck_assert_int_eq(qat_export_int8(NULL, tu_tmp_path("x.h5"), NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_export_int8(qm, NULL, NULL), QAT_ERR_ARG);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* The input normalisation comes from the model (the training data's), is
 * kept by checkpoints, and an export without one fails naming it. */
START_TEST(test_input_norm_from_model)
{
    qat_model *m = qat_model_build("lenet5", 3);
    NN(m);
    qat_qmodel *qm = prepare(m, "w8a8");
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 64);
    const char *path = tu_tmp_path("norm.int8.h5");
    ck_assert_int_eq(qat_model_input_norm(m, NULL, NULL), 0);
    ck_assert_int_eq(qat_export_int8(qm, path, NULL), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "normalisation"));
    ck_assert_int_eq(qat_model_set_input_norm(m, 0.25f, 0.0f), QAT_ERR_ARG);
    ck_assert_int_eq(qat_model_set_input_norm(m, NAN, 1.0f), QAT_ERR_ARG);
    OK(qat_model_set_input_norm(m, 0.125f, 0.75f));
    OK(qat_export_int8(qm, path, NULL));
    hid_t f = h5_open(path, H5F_ACC_RDONLY);
    hid_t g = H5Gopen2(f, "ops/000", H5P_DEFAULT);
    ck_assert_float_eq(attr_f32(g, "mean"), 0.125f);
    ck_assert_float_eq(attr_f32(g, "std"), 0.75f);
    H5Gclose(g);
    H5Fclose(f);
    /* explicit options win over the model's */
    qat_export_opts o = qat_export_opts_defaults();
    o.mean = 0.5f;
    OK(qat_export_int8(qm, path, &o));
    f = h5_open(path, H5F_ACC_RDONLY);
    g = H5Gopen2(f, "ops/000", H5P_DEFAULT);
    ck_assert_float_eq(attr_f32(g, "mean"), 0.5f);
    ck_assert_float_eq(attr_f32(g, "std"), 0.75f);
    H5Gclose(g);
    H5Fclose(f);
    /* a float checkpoint and a QAT checkpoint keep it */
    char fp[512], qp[512]; /* tu_tmp_path returns one static buffer */
    snprintf(fp, sizeof fp, "%s", tu_tmp_path("norm-float.h5"));
    snprintf(qp, sizeof qp, "%s", tu_tmp_path("norm-qat.h5"));
    OK(qat_checkpoint_save(fp, m, NULL, NULL));
    qat_model *m2 = qat_model_load(fp);
    NN(m2);
    float mean = 0, std = 0;
    ck_assert_int_eq(qat_model_input_norm(m2, &mean, &std), 1);
    ck_assert_float_eq(mean, 0.125f);
    ck_assert_float_eq(std, 0.75f);
    OK(qat_qcheckpoint_save(qp, qm, NULL, NULL, NULL));
    qat_model *m3 = NULL;
    qat_qmodel *qm3 = qat_qmodel_load(qp, &m3, NULL, NULL);
    NN(qm3);
    ck_assert_int_eq(qat_model_input_norm(m3, &mean, &std), 1);
    ck_assert_float_eq(mean, 0.125f);
    ck_assert_float_eq(std, 0.75f);
    /* a file with only one of the two attributes is refused, naming it */
    f = h5_open(fp, H5F_ACC_RDWR);
    g = H5Gopen2(f, "model", H5P_DEFAULT);
    ck_assert_int_ge(H5Adelete(g, "input_std"), 0);
    H5Gclose(g);
    H5Fclose(f);
    ck_assert_ptr_null(qat_model_load(fp));
    ck_assert_msg(strstr(qat_last_error(), "input_std") != NULL, "%s", qat_last_error());
    /* neither (a file of an older qat): loads without one */
    f = h5_open(fp, H5F_ACC_RDWR);
    g = H5Gopen2(f, "model", H5P_DEFAULT);
    ck_assert_int_ge(H5Adelete(g, "input_mean"), 0);
    H5Gclose(g);
    H5Fclose(f);
    qat_model *m4 = qat_model_load(fp);
    NN(m4);
    ck_assert_int_eq(qat_model_input_norm(m4, NULL, NULL), 0);
    qat_model_free(m4);
    qat_qmodel_free(qm3);
    qat_model_free(m3);
    qat_model_free(m2);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 4. a corrupted multiplier is noticed ---- */

START_TEST(test_corrupt_multiplier)
{
    qat_model *m = qat_model_build("lenet5", 7);
    qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD); /* the training data's */
    NN(m);
    train_steps(m, 10, 4);
    qat_qmodel *qm = prepare(m, "w8a8");
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 256);
    const char *path = tu_tmp_path("corrupt.int8.h5");
    OK(qat_export_int8(qm, path, NULL));
    agreement a = file_agreement(ctx, qm, path, 500);
    print_agreement("lenet5", a);
    assert_agrees("unmodified lenet5", a);

    /* op 001 is the first conv (features.0 + BN + ReLU): channel 2's
     * multiplier times 0.9, renormalised into [2^30, 2^31) */
    hid_t f = h5_open(path, H5F_ACC_RDWR);
    hid_t g = op_group(f, 1);
    char s[32];
    attr_str(g, "type", s, sizeof s);
    ck_assert_str_eq(s, "conv2d");
    int32_t mult[6], sh[6];
    hsize_t d[4];
    dset_read(g, "multiplier", H5T_NATIVE_INT32, mult, 6, d);
    ck_assert_int_eq((int)d[0], 6);
    dset_read(g, "shift", H5T_NATIVE_INT32, sh, 6, d);
    int64_t nm = (int64_t)mult[2] * 9 / 10;
    if (nm < (1 << 30)) {
        nm *= 2;
        sh[2] -= 1;
    }
    ck_assert(nm >= (1 << 30) && nm < ((int64_t)1 << 31) && sh[2] >= -31);
    mult[2] = (int32_t)nm;
    dset_write(g, "multiplier", H5T_NATIVE_INT32, mult);
    dset_write(g, "shift", H5T_NATIVE_INT32, sh);
    H5Gclose(g);
    H5Fclose(f);
    agreement b = file_agreement(ctx, qm, path, 500);
    print_agreement("corrupt", b);
    /* (about 0.58 here, up to 5 steps apart) */
    ck_assert_msg(b.logits < 0.99, "a multiplier 10%% off still agrees: %.4f", b.logits);
    ck_assert_msg(b.logits < a.logits, "corrupted %.4f, unmodified %.4f", b.logits, a.logits);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

/* ---- 5. payload ---- */

START_TEST(test_payload)
{
    const char *arch = _i ? "convnet" : "mlp";
    qat_model *m = qat_model_build(arch, 1);
    qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD); /* the training data's */
    NN(m);
    qat_qmodel *qm = prepare(m, "w8a8");
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 64);
    const char *path = tu_tmp_path("payload.int8.h5");
    OK(qat_export_int8(qm, path, NULL));
    qat_rt_model *rt = NULL;
    RT_OK(qat_rt_load_file(path, &rt));
    size_t payload = qat_rt_payload_bytes(rt), fl = 4 * qat_model_param_count(m);
    printf("test_export: %-8s payload %zu bytes = %.1f%% of %zu float bytes\n", arch, payload, 100.0 * payload / fl, fl);
    ck_assert_msg(payload <= fl * 27 / 100, "%s: payload %zu > 27%% of %zu", arch, payload, fl);
    /* and at least the int8 weights */
    ck_assert_uint_ge(payload, qat_model_param_count(m) * 9 / 10);
    qat_rt_free(rt);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST


/* Activations below 8 bits: every op's output must stay on its quantizer's
 * range [qmin, qmax] as in fake-quant, also where the real values leave
 * it (a learned LSQ range clips; here the ranges of the input and the
 * average pools are narrowed to 0.15x of the calibrated ones). Export
 * either refuses such a model naming a unit, or writes a file that agrees
 * with the fake-quant model: float inputs through the runtime's quantizer
 * give the same logits as pixels through the LUT, and the logits agree. */
START_TEST(test_low_bit_ranges)
{
    qat_model *m = custom_model(11);
    train_steps(m, 30, 5);
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, "w8a4"));
    qat_qconfig_set_calibrator(&cfg, QAT_CALIBRATOR_MINMAX);
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    ptq_calibrate(ctx, qm, 256);
    const char *narrow[] = {"input", "ap", "gap"};
    for (int k = 0; k < 3; k++) {
        int u = qat_qmodel_find_unit(qm, narrow[k]);
        ck_assert_int_ge(u, 0);
        qat_quantizer *q = &qat_qmodel_unit(qm, u)->act;
        ck_assert_ptr_nonnull(q->lsq_scale); /* LSQ at 4 bits */
        ck_assert_int_eq(q->qmax, 7);
        q->lsq_scale->data[0] *= 0.15f;
        q->scale[0] = q->lsq_scale->data[0];
    }
    const char *path = tu_tmp_path("a4.int8.h5");
    int rc = qat_export_int8(qm, path, NULL);
    if (rc) {
        ck_assert_msg(rc == QAT_ERR_UNSUPPORTED, "export: %d %s", rc, qat_last_error());
        ck_assert_msg(strstr(qat_last_error(), "'input'") || strstr(qat_last_error(), "'ap'") ||
                          strstr(qat_last_error(), "'gap'"),
                      "refusal names no narrowed unit: %s", qat_last_error());
    } else {
        check_file(path, qm);
        qat_rt_model *rt = NULL;
        RT_OK(qat_rt_load_file(path, &rt));
        RT_OK(qat_rt_prepare(rt, 100));
        float *x = malloc(100 * 784 * sizeof *x);
        int8_t ya[1000], yb[1000];
        ck_assert_ptr_nonnull(x);
        OK(qat_dataset_normalize_into(g_test, NULL, 100, x));
        RT_OK(qat_rt_run_u8(rt, g_test->images, 100, yb));
        RT_OK(qat_rt_run_f32(rt, x, 100, ya));
        const int8_t *xq = qat_rt_op_output(rt, 0);
        int lo = 127, hi = -128;
        for (int i = 0; i < 100 * 784; i++) lo = xq[i] < lo ? xq[i] : lo, hi = xq[i] > hi ? xq[i] : hi;
        ck_assert_msg(lo >= -8 && hi <= 7, "float inputs quantized to [%d, %d], the input grid is [-8, 7]", lo, hi);
        ck_assert_mem_eq(ya, yb, sizeof ya);
        free(x);
        qat_rt_free(rt);
        agreement a = file_agreement(ctx, qm, path, 1000);
        print_agreement("custom w8a4 narrowed", a);
        assert_agrees("w8a4", a);
    }
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
}
END_TEST

static Suite *export_suite(void)
{
    Suite *s = suite_create("export");
    TCase *tc = tcase_create("hand");
    tcase_add_test(tc, test_hand_logits);
    tcase_add_test(tc, test_hand_datasets);
    suite_add_tcase(s, tc);
    tc = tcase_create("models");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_custom_model, 0, (int)(sizeof custom_cfgs / sizeof custom_cfgs[0]));
    tcase_add_loop_test(tc, test_reference_models, 0, 4);
    tcase_add_test(tc, test_input_norm_from_model);
    tcase_add_test(tc, test_corrupt_multiplier);
    tcase_add_loop_test(tc, test_payload, 0, 2);
    suite_add_tcase(s, tc);
    tcase_add_test(tc, test_low_bit_ranges);
    tc = tcase_create("refused");
    tcase_add_test(tc, test_float_override);
    tcase_add_test(tc, test_wide_activations);
    tcase_add_test(tc, test_uncalibrated);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    SRunner *sr = srunner_create(export_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    qat_dataset_free(g_train);
    qat_dataset_free(g_test);
    return failures ? 1 : 0;
}
