/* tests/test_dynamic.c: dynamic quantization and the runtime's float ops
 * (qat/dynamic.h, quant/dynamic.c, io/export_float.c, runtime/float_ops.c,
 * runtime/load_float.c; docs/FORMAT-int8.md "Float ops").
 *
 * - The dynamic linear of a small MLP against a reference computed here
 *   from the float weights and the formulas of the format (weights
 *   quantized again by this file, activations quantized per call).
 * - Run-time activation quantization at its edges: all-zero, constant,
 *   negative-only and huge-range inputs (scale and zero point by hand).
 * - The library's evaluation against the runtime on a model with every op
 *   kind (BN folded, ReLUs fused, residual add, pools), for w8 / fp16,
 *   linear / all layers, per tensor / per row, reference and VNNI
 *   kernels, 1 and 2 threads: identical float32 bits.
 * - A synthetic graph of float16 ops against a double-precision reference.
 * - The SIMD float conv2d / linear kernels (AVX2, AVX-512) against the
 *   portable ones, bit for bit: random odd shapes, padding, strides 1-3,
 *   float32 / float16 outputs, ReLU, blocks of output positions (the
 *   batch-1 split), binary16 rounding edges (ties, subnormals, saturation,
 *   -0) and inf inputs (NaN sums).
 * - Malformed float ops are refused at load with the op and field named.
 * (Against numpy: tests/test_dynamic.sh.) */
#include <check.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/dynamic.h"
#include "qat/format_int8.h"
#include "qat/half.h"
#include "qat/io.h"
#include "qat/runtime.h"
#include "quant/dynamic_graph.h"
#include "runtime/rt_internal.h"
#include "testutil.h"

#define OK(e)                                                                                  \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());               \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

static void fill_pixels(uint8_t *p, size_t n, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(qat_rng_u32(&r) & 0xff);
}

static int same_bits(const float *a, const float *b, size_t n, size_t *first)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i])) {
            *first = i;
            return 0;
        }
    return 1;
}

/* ---- a reference dynamic linear, written from the format ---- */

static void ref_params(const float *x, size_t n, float *s, int32_t *z)
{
    float lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    *s = (float)(((double)hi - lo) / 255.0);
    if (*s == 0) *s = 1.0f;
    double zz = -128.0 - nearbyint((double)lo / *s);
    *z = (int32_t)fmin(127, fmax(-128, zz));
}

/* y [n, out] of x [n, in] through linear weights w [out, in] (float),
 * quantized here per row (amax / 127, round half even), activations per
 * call (row = 0) or per sample */
static void ref_dyn_linear(const float *x, int n, int in, int out, const float *w, const float *b, int relu,
                           int row, float *y)
{
    float s_all;
    int32_t z_all;
    ref_params(x, (size_t)n * in, &s_all, &z_all);
    for (int r = 0; r < n; r++) {
        float s = s_all;
        int32_t z = z_all;
        if (row) ref_params(x + (size_t)r * in, (size_t)in, &s, &z);
        for (int o = 0; o < out; o++) {
            float amax = 0;
            for (int k = 0; k < in; k++) amax = fmaxf(amax, fabsf(w[(size_t)o * in + k]));
            const float ws = amax / 127.0f;
            int64_t acc = 0;
            for (int k = 0; k < in; k++) {
                long q = lrintf(x[(size_t)r * in + k] * (1.0f / s)) + z;
                q = q < -128 ? -128 : q > 127 ? 127 : q;
                long wq = lrintf(w[(size_t)o * in + k] / ws);
                acc += (int64_t)wq * (q - z);
            }
            float m = s * ws;
            float v = (float)acc * m;
            v = v + b[o];
            y[(size_t)r * out + o] = relu && !(v > 0) ? 0.0f : v;
        }
    }
}

static qat_model *small_mlp(void)
{
    qat_model *m = qat_model_create(1, 6, 6);
    int x = qat_model_flatten(m, "flat", 0);
    x = qat_model_linear(m, "fc1", x, 20, 1);
    x = qat_model_relu(m, "relu1", x);
    x = qat_model_linear(m, "fc2", x, 7, 1);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(m, 7));
    OK(qat_model_set_input_norm(m, 0.3f, 0.4f));
    return m;
}

static void check_mlp_reference(int row)
{
    qat_model *m = small_mlp();
    qat_dynamic_opts o = qat_dynamic_opts_defaults();
    o.act_row = row;
    qat_dynmodel *d = qat_dynmodel_build(m, &o);
    NN(d);
    ck_assert_int_eq(qat_dynmodel_num_ops(d), 4); /* input, flatten, fc1+relu1, fc2 */
    enum { N = 9 };
    uint8_t px[N * 36];
    fill_pixels(px, sizeof px, 11);
    float got[N * 7], x[N * 36], h[N * 20], want[N * 7];
    OK(qat_dynmodel_forward_u8(d, px, N, got));
    for (int i = 0; i < N * 36; i++) x[i] = ((float)px[i] / 255.0f - 0.3f) / 0.4f;
    const qat_layer *l1 = qat_model_layer_c(m, 2), *l2 = qat_model_layer_c(m, 4);
    ref_dyn_linear(x, N, 36, 20, l1->weight->data, l1->bias->data, 1, row, h);
    ref_dyn_linear(h, N, 20, 7, l2->weight->data, l2->bias->data, 0, row, want);
    size_t at = 0;
    ck_assert_msg(same_bits(got, want, N * 7, &at), "logit %zu: library %.9g, reference %.9g", at,
                  (double)got[at], (double)want[at]);
    /* the per-tensor result of an image depends on the others; per row not */
    float one[7];
    OK(qat_dynmodel_forward_u8(d, px + 36, 1, one));
    ck_assert_int_eq(same_bits(one, got + 7, 7, &at), row);
    qat_dynmodel_free(d);
    qat_model_free(m);
}

START_TEST(test_linear_reference)
{
    check_mlp_reference(0);
    check_mlp_reference(1);
}
END_TEST

/* ---- run-time activation quantization at its edges ---- */

/* a hand-made dynamic linear op: in 5 inputs, 3 outputs */
static void edge_op(rt_op *op, int8_t *w, float *ws, float *b, int32_t *rs)
{
    static const int8_t W[15] = {1, -2, 3, 127, -127, 0, 5, 0, 0, 0, -1, -1, -1, -1, -1};
    memset(op, 0, sizeof *op);
    op->type = RT_OP_LINEAR;
    op->fdt = RT_DT_F32;
    op->wdt = RT_W_I8;
    op->ic = 5;
    op->oc = 3;
    memcpy(w, W, 15);
    for (int o = 0; o < 3; o++) {
        ws[o] = 0.01f * (float)(o + 1);
        b[o] = 0.5f - (float)o;
        rs[o] = 0;
        for (int k = 0; k < 5; k++) rs[o] += W[o * 5 + k];
    }
    op->weight = w;
    op->weight_scale = ws;
    op->fbias = b;
    op->rowsum = rs;
}

START_TEST(test_act_quant_edges)
{
    rt_op op;
    int8_t w[15];
    float ws[3], b[3], s[2], y[6];
    int32_t rs[3], z[2];
    uint8_t q[16];
    edge_op(&op, w, ws, b, rs);
    /* all zero: scale 1 (nothing to measure), every q the zero point, y = bias */
    float zero[5] = {0, 0, 0, 0, 0};
    qat_rti_dyn_quantize(&op, zero, 1, q, s, z);
    ck_assert_float_eq(s[0], 1.0f);
    ck_assert_int_eq(z[0], -128);
    qat_rti_dyn_gemm_ref(&op, q, s, z, 1, y);
    for (int o = 0; o < 3; o++) ck_assert_float_eq(y[o], b[o]);
    /* constant 2.5: range [0, 2.5], zp -128, every q = 127 (x exactly on the grid) */
    float c[5] = {2.5f, 2.5f, 2.5f, 2.5f, 2.5f};
    qat_rti_dyn_quantize(&op, c, 1, q, s, z);
    ck_assert_float_eq(s[0], (float)(2.5 / 255.0));
    ck_assert_int_eq(z[0], -128);
    for (int k = 0; k < 5; k++) ck_assert_int_eq(q[k], 127 + 128);
    qat_rti_dyn_gemm_ref(&op, q, s, z, 1, y);
    for (int o = 0; o < 3; o++) {
        float want = (float)(255 * rs[o]) * (s[0] * ws[o]) + b[o];
        ck_assert_float_eq(y[o], want);
    }
    /* negative only: range [-3, 0], zp = 127, -3 -> -128 */
    float neg[5] = {-3.0f, -1.5f, -0.25f, -3.0f, -2.0f};
    qat_rti_dyn_quantize(&op, neg, 1, q, s, z);
    ck_assert_float_eq(s[0], (float)(3.0 / 255.0));
    ck_assert_int_eq(z[0], 127);
    ck_assert_int_eq((int)q[0] - 128, -128);
    ck_assert_int_eq((int)q[2] - 128, 127 + (int)lrintf(-0.25f * (1.0f / s[0])));
    /* huge range, two rows per row: each row its own scale; no overflow */
    op.act_row = 1;
    float huge[10] = {-1e38f, 1e38f, 0, 5e37f, -3e37f, 1e-30f, -2e-30f, 0, 0, 1e-30f};
    qat_rti_dyn_quantize(&op, huge, 2, q, s, z);
    ck_assert_float_eq(s[0], (float)(2e38 / 255.0));
    ck_assert_float_eq_tol(s[1], (float)(3e-30 / 255.0), 1e-37f);
    ck_assert_int_eq(z[0], (int32_t)(-128 - nearbyint(-1e38 / (double)s[0])));
    ck_assert_int_eq((int)q[0] - 128, -128);
    qat_rti_dyn_gemm_ref(&op, q, s, z, 2, y);
    for (int i = 0; i < 6; i++) ck_assert_msg(isfinite(y[i]), "y[%d] = %g", i, (double)y[i]);
    /* each dequantized input within half a step of x */
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 5; k++) {
            double xr = ((double)q[r * 8 + k] - 128 - z[r]) * s[r];
            ck_assert_msg(fabs(xr - huge[r * 5 + k]) <= 0.5001 * s[r], "row %d input %d: %g vs %g", r, k, xr,
                          (double)huge[r * 5 + k]);
        }
}
END_TEST

/* ---- library evaluation == runtime ---- */

static qat_model *every_op_model(void)
{
    qat_model *m = qat_model_create(2, 9, 9);
    int a = qat_model_conv2d(m, "c1", 0, 5, 3, 1, 1, 1);
    a = qat_model_batchnorm2d(m, "bn1", a);
    a = qat_model_relu(m, "r1", a);
    int b = qat_model_conv2d(m, "c2", a, 5, 3, 1, 1, 0);
    b = qat_model_batchnorm2d(m, "bn2", b);
    int x = qat_model_add(m, "add", a, b);
    x = qat_model_relu(m, "r2", x);
    x = qat_model_maxpool2d(m, "mp", x, 2, 2);
    int g = qat_model_conv2d(m, "c3", x, 6, 3, 2, 0, 1); /* 4x4 -> 1x1 */
    g = qat_model_relu(m, "r3", g);
    int p = qat_model_avgpool2d(m, "ap", x, 2, 2);
    p = qat_model_global_avgpool(m, "gap", p);
    (void)g;
    int f = qat_model_flatten(m, "flat", x);
    f = qat_model_linear(m, "fc1", f, 33, 1);
    f = qat_model_relu(m, "r4", f);
    f = qat_model_linear(m, "fc2", f, 5, 1);
    /* the pools' branch joins through a linear of its own */
    int q = qat_model_linear(m, "fcp", p, 5, 0);
    int y = qat_model_add(m, "out", f, q);
    ck_assert_msg(y >= 0, "%s", qat_last_error());
    OK(qat_model_init(m, 3));
    OK(qat_model_set_input_norm(m, 0.25f, 0.5f));
    qat_rng r;
    qat_rng_seed(&r, 5);
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type != QAT_LAYER_BATCHNORM2D) continue;
        tu_fill_uniform(l->weight->data, l->weight->numel, 0.5f, 1.5f, &r);
        tu_fill_uniform(l->bias->data, l->bias->numel, -0.2f, 0.2f, &r);
        tu_fill_uniform(l->running_mean->data, l->running_mean->numel, -0.3f, 0.3f, &r);
        tu_fill_uniform(l->running_var->data, l->running_var->numel, 0.5f, 2.0f, &r);
    }
    return m;
}

static void eval_vs_runtime(qat_model *m, const qat_dynamic_opts *o, int n, const char *tag)
{
    qat_dynmodel *d = qat_dynmodel_build(m, o);
    NN(d);
    const char *path = tu_tmp_path("dyn.int8.h5");
    OK(qat_export_dynamic(m, o, path, "test"));
    int shape[3] = {0};
    const qat_layer *in = qat_model_layer_c(m, 0);
    size_t img = (size_t)in->out_shape[0] * in->out_shape[1] * in->out_shape[2];
    int K = qat_dynmodel_num_classes(d);
    uint8_t *px = malloc((size_t)n * img);
    float *lib = malloc((size_t)n * K * sizeof *lib), *run = malloc((size_t)n * K * sizeof *run);
    ck_assert(px && lib && run);
    fill_pixels(px, (size_t)n * img, 99);
    OK(qat_dynmodel_forward_u8(d, px, n, lib));
    qat_rt_model *rt = NULL;
    ck_assert_msg(qat_rt_load_file(path, &rt) == QAT_OK, "%s: %s", tag, qat_rt_last_error());
    qat_rt_input_shape(rt, shape);
    ck_assert_int_eq(shape[0], in->out_shape[0]);
    ck_assert_int_eq(qat_rt_output_dtype(rt), QAT_RT_DTYPE_FLOAT32);
    ck_assert_int_eq(qat_rt_num_classes(rt), K);
    const qat_rt_isa isas[3] = {QAT_RT_ISA_REF, QAT_RT_ISA_AVX2, qat_rt_best_isa()};
    for (int ii = 0; ii < 3; ii++)
        for (int th = 1; th <= 2; th++) {
            if (!qat_rti_cpu_has(isas[ii])) continue;
            OK(qat_rt_set_isa(rt, isas[ii]));
            qat_rt_set_threads(rt, th);
            OK(qat_rt_prepare(rt, n));
            memset(run, 0xff, (size_t)n * K * sizeof *run);
            OK(qat_rt_run_u8_float(rt, px, n, run));
            size_t at = 0;
            ck_assert_msg(same_bits(lib, run, (size_t)n * K, &at),
                          "%s, %s kernels, %d threads: logit %zu library %.9g runtime %.9g", tag,
                          qat_rt_isa_name(isas[ii]), th, at, (double)lib[at], (double)run[at]);
        }
    /* int8 logits are refused on a float-logit model */
    int8_t q8[8];
    ck_assert_int_eq(qat_rt_run_u8(rt, px, 1, q8), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_rt_last_error(), "float32"));
    qat_rt_free(rt);
    free(px);
    free(lib);
    free(run);
    qat_dynmodel_free(d);
}

START_TEST(test_eval_equals_runtime)
{
    qat_model *m = every_op_model();
    for (int w = 0; w < 2; w++)
        for (int all = 0; all < 2; all++)
            for (int row = 0; row < 2; row++) {
                qat_dynamic_opts o = {w ? QAT_DYN_FP16 : QAT_DYN_W8, all, row};
                char tag[64];
                snprintf(tag, sizeof tag, "%s %s %s", w ? "fp16" : "w8", all ? "all" : "linear", row ? "row" : "tensor");
                eval_vs_runtime(m, &o, 11, tag);
            }
    qat_model_free(m);
    /* wide layers: VNNI tiles of several vectors and rows with remainders */
    qat_model *w = qat_model_create(1, 13, 11);
    int x = qat_model_flatten(w, "flat", 0);
    x = qat_model_linear(w, "a", x, 70, 1);
    x = qat_model_relu(w, "ar", x);
    x = qat_model_linear(w, "b", x, 37, 1);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(w, 8));
    OK(qat_model_set_input_norm(w, 0.1f, 0.3f));
    qat_dynamic_opts o = qat_dynamic_opts_defaults();
    eval_vs_runtime(w, &o, 13, "wide w8");
    o.act_row = 1;
    eval_vs_runtime(w, &o, 6, "wide w8 row");
    qat_model_free(w);
    /* float convs big enough that a batch of 1 splits its positions over 2
     * threads (float_ops.c conv_float_simd), stride 2 and padding */
    qat_model *c = qat_model_create(3, 21, 19);
    x = qat_model_conv2d(c, "c1", 0, 9, 3, 1, 1, 1);
    x = qat_model_relu(c, "c1r", x);
    x = qat_model_conv2d(c, "c2", x, 7, 3, 2, 1, 1);
    x = qat_model_flatten(c, "flat", x);
    x = qat_model_linear(c, "fc", x, 10, 1);
    ck_assert_int_ge(x, 0);
    OK(qat_model_init(c, 9));
    OK(qat_model_set_input_norm(c, 0.2f, 0.4f));
    o = qat_dynamic_opts_defaults();
    eval_vs_runtime(c, &o, 1, "conv w8 batch 1");
    eval_vs_runtime(c, &o, 3, "conv w8 batch 3");
    o.weights = QAT_DYN_FP16;
    eval_vs_runtime(c, &o, 1, "conv fp16 batch 1");
    qat_model_free(c);
}
END_TEST

/* ---- static float16 ops against a double-precision reference ---- */

static float f16w(double v, uint16_t *bits)
{
    *bits = qat_f16_from_double(v);
    return qat_f16_to_float(*bits);
}

START_TEST(test_fp16_graph)
{
    /* input (1,5,5) f16 -> conv 2ch k3 p1 relu (f16 weights) -> add with
     * conv2 (f32 weights, f16 out) -> avgpool k2 s2 -> flatten -> linear 3 */
    qat_dynmodel *d = qat_dg_create(7);
    NN(d);
    qat_rng r;
    qat_rng_seed(&r, 21);
    dg_op *o = d->ops;
    o[0] = (dg_op){.kind = DG_INPUT, .out_ndim = 3, .out_shape = {1, 5, 5}, .f16 = 1, .mean = 0.3f, .std = 0.2f};
    for (int c = 0; c < 2; c++) {
        dg_op *cv = &o[1 + c];
        *cv = (dg_op){.kind = DG_CONV2D, .n_in = 1, .in = {0}, .out_ndim = 3, .out_shape = {2, 5, 5}, .f16 = 1,
                      .relu = c == 0, .wdt = c == 0 ? DG_W_F16 : DG_W_F32, .oc = 2, .ic = 1, .kh = 3, .kw = 3,
                      .stride = 1, .pad = 1};
        cv->w = malloc(18 * sizeof *cv->w);
        cv->w16 = c == 0 ? malloc(18 * sizeof *cv->w16) : NULL;
        cv->bias = malloc(2 * sizeof *cv->bias);
        for (int i = 0; i < 18; i++) {
            double v = (qat_rng_uniform(&r) - 0.5) * 3.0;
            if (c == 0) cv->w[i] = f16w(v, &cv->w16[i]);
            else cv->w[i] = (float)v;
        }
        for (int i = 0; i < 2; i++) cv->bias[i] = qat_f16_round(qat_rng_uniform(&r) - 0.5);
        snprintf(cv->name, sizeof cv->name, "conv%d", c);
    }
    o[3] = (dg_op){.kind = DG_ADD, .n_in = 2, .in = {1, 2}, .out_ndim = 3, .out_shape = {2, 5, 5}, .f16 = 1};
    o[4] = (dg_op){.kind = DG_AVGPOOL2D, .n_in = 1, .in = {3}, .out_ndim = 3, .out_shape = {2, 2, 2}, .f16 = 1,
                   .kernel = 2, .stride = 2};
    o[5] = (dg_op){.kind = DG_FLATTEN, .n_in = 1, .in = {4}, .out_ndim = 1, .out_shape = {8}, .f16 = 1};
    o[6] = (dg_op){.kind = DG_LINEAR, .n_in = 1, .in = {5}, .out_ndim = 1, .out_shape = {3}, .f16 = 1,
                   .wdt = DG_W_F16, .oc = 3};
    o[6].w = malloc(24 * sizeof(float));
    o[6].w16 = malloc(24 * sizeof(uint16_t));
    o[6].bias = malloc(3 * sizeof(float));
    for (int i = 0; i < 24; i++) o[6].w[i] = f16w((qat_rng_uniform(&r) - 0.5) * 60000.0, &o[6].w16[i]);
    for (int i = 0; i < 3; i++) o[6].bias[i] = qat_f16_round(qat_rng_uniform(&r) * 10);
    d->n = 7;
    for (int i = 0; i < 7; i++)
        if (!o[i].name[0]) snprintf(o[i].name, sizeof o[i].name, "op%d", i);
    OK(qat_dg_finish(d));
    const char *path = tu_tmp_path("fp16.int8.h5");
    OK(qat_dg_write(d, path, NULL));

    enum { N = 4 };
    uint8_t px[N * 25];
    fill_pixels(px, sizeof px, 3);
    /* the reference, in double, every op rounded once to binary16 */
    float want[N * 3];
    for (int n = 0; n < N; n++) {
        double x[25], cv[2][2][25], a[2][25], p[8];
        for (int i = 0; i < 25; i++) x[i] = qat_f16_round(((float)px[n * 25 + i] / 255.0f - 0.3f) / 0.2f);
        for (int c = 0; c < 2; c++)
            for (int oc = 0; oc < 2; oc++)
                for (int h = 0; h < 5; h++)
                    for (int w = 0; w < 5; w++) {
                        double s = 0;
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                int ih = h - 1 + i, iw = w - 1 + j;
                                if (ih >= 0 && ih < 5 && iw >= 0 && iw < 5)
                                    s += x[ih * 5 + iw] * (double)o[1 + c].w[oc * 9 + i * 3 + j];
                            }
                        double v = qat_f16_round(s + o[1 + c].bias[oc]);
                        cv[c][oc][h * 5 + w] = c == 0 && v < 0 ? 0 : v;
                    }
        for (int oc = 0; oc < 2; oc++)
            for (int i = 0; i < 25; i++) a[oc][i] = qat_f16_round(cv[0][oc][i] + cv[1][oc][i]);
        for (int oc = 0; oc < 2; oc++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    const double *q = &a[oc][(2 * i) * 5 + 2 * j];
                    p[oc * 4 + i * 2 + j] = qat_f16_round((q[0] + q[1] + q[5] + q[6]) / 4.0);
                }
        for (int k = 0; k < 3; k++) {
            double s = 0;
            for (int i = 0; i < 8; i++) s += p[i] * o[6].w[k * 8 + i];
            want[n * 3 + k] = qat_f16_round(s + o[6].bias[k]);
        }
    }
    float lib[N * 3], run[N * 3];
    OK(qat_dynmodel_forward_u8(d, px, N, lib));
    qat_rt_model *rt = NULL;
    ck_assert_msg(qat_rt_load_file(path, &rt) == QAT_OK, "%s", qat_rt_last_error());
    OK(qat_rt_prepare(rt, N));
    OK(qat_rt_run_u8_float(rt, px, N, run));
    size_t at = 0;
    ck_assert_msg(same_bits(want, run, N * 3, &at), "runtime logit %zu: %.9g, reference %.9g", at, (double)run[at],
                  (double)want[at]);
    ck_assert_msg(same_bits(want, lib, N * 3, &at), "library logit %zu: %.9g, reference %.9g", at, (double)lib[at],
                  (double)want[at]);
    /* the saturation of binary16 is reached by these weights: some logit is +-65504 */
    int sat = 0;
    for (int i = 0; i < N * 3; i++) sat |= fabsf(want[i]) == 65504.0f;
    ck_assert_msg(sat, "the test should reach binary16 saturation");
    qat_rt_free(rt);
    qat_dynmodel_free(d);
}
END_TEST


/* ---- SIMD float kernels against the portable ones ---- */

static const qat_rt_isa simd_isas[2] = {QAT_RT_ISA_AVX2, QAT_RT_ISA_AVX512_VNNI};

/* a float op by hand: weights float32 (or binary16 values), bias float32 */
static rt_op hand_op(rt_op_type type, int f16, int relu, int oc, int ic, int kh, int kw, qat_rng *r)
{
    rt_op op;
    memset(&op, 0, sizeof op);
    op.type = type;
    /* f16: 0 float32, 1 float16, 2 bfloat16 */
    op.fdt = f16 == 1 ? RT_DT_F16 : f16 == 2 ? RT_DT_BF16 : RT_DT_F32;
    op.wdt = f16 == 1 ? RT_W_F16 : f16 == 2 ? RT_W_BF16 : RT_W_F32;
    op.relu = relu;
    op.oc = oc;
    op.ic = ic;
    op.kh = kh;
    op.kw = kw;
    op.stride = 1;
    const size_t K = (size_t)ic * kh * kw;
    op.fweight = malloc((size_t)oc * K * sizeof *op.fweight + 4);
    op.fbias = malloc((size_t)oc * sizeof *op.fbias + 4);
    ck_assert(op.fweight && op.fbias);
    for (size_t i = 0; i < (size_t)oc * K; i++) {
        const double v = (qat_rng_uniform(r) - 0.5) * 2.0;
        op.fweight[i] = f16 == 1 ? qat_f16_round(v) : f16 == 2 ? qat_bf16_round(v) : (float)v;
    }
    for (int i = 0; i < oc; i++) op.fbias[i] = (float)(qat_rng_uniform(r) - 0.5);
    return op;
}

static void hand_free(rt_op *op)
{
    qat_rti_dealloc(op->fw);
    qat_rti_dealloc(op->fbd);
    qat_rti_dealloc(op->fpad);
    qat_rti_dealloc(op->fkoff);
    free(op->dpack);
    free(op->fweight);
    free(op->fbias);
}

/* inputs: mostly uniform, some exact zeros, some large (float16 ops reach
 * saturation), some tiny */
static void fill_x(float *x, size_t n, qat_rng *r)
{
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = qat_rng_u32(r) % 16;
        const double v = (qat_rng_uniform(r) - 0.5) * 4.0;
        x[i] = u == 0 ? 0.0f : u == 1 ? (float)(v * 3000.0) : u == 2 ? (float)(v * 1e-6) : (float)v;
    }
}

START_TEST(test_float_conv_simd)
{
    qat_rng r;
    qat_rng_seed(&r, 77);
    for (int c = 0; c < 60; c++) {
        const int S = 1 + (int)(qat_rng_u32(&r) % 3), KH = 1 + (int)(qat_rng_u32(&r) % 5),
                  KW = 1 + (int)(qat_rng_u32(&r) % 5), P = (int)(qat_rng_u32(&r) % 3);
        const int IC = 1 + (int)(qat_rng_u32(&r) % 5), OC = 1 + (int)(qat_rng_u32(&r) % 13);
        int H = KH + (int)(qat_rng_u32(&r) % 17), W = KW + (int)(qat_rng_u32(&r) % 23);
        const int f16 = c % 3, relu = c % 2 == 0;
        rt_op op = hand_op(RT_OP_CONV2D, f16, relu, OC, IC, KH, KW, &r);
        op.stride = S;
        op.pad = P;
        op.in_c = IC;
        op.in_h = H;
        op.in_w = W;
        const int OH = (H + 2 * P - KH) / S + 1, OW = (W + 2 * P - KW) / S + 1;
        op.out_ndim = 3;
        op.out_shape[0] = OC;
        op.out_shape[1] = OH;
        op.out_shape[2] = OW;
        op.out_size = (size_t)OC * OH * OW;
        OK(qat_rti_float_simd_plan(&op, 1));
        const size_t isz = (size_t)IC * H * W;
        float *x = malloc(isz * sizeof *x), *want = malloc(op.out_size * sizeof *want),
              *got = malloc(op.out_size * sizeof *got);
        ck_assert(x && want && got);
        fill_x(x, isz, &r);
        qat_rti_conv_float_ref(&op, x, want);
        qat_rti_fconv_pad(&op, x, op.fpad);
        for (int ii = 0; ii < 2; ii++) {
            if (!qat_rti_cpu_has(simd_isas[ii])) continue;
            for (int split = 0; split < 2; split++) {
                memset(got, 0xff, op.out_size * sizeof *got);
                if (!split) {
                    ck_assert(qat_rti_fconv_simd(simd_isas[ii], &op, op.fpad, got, 0, op.fqn));
                } else { /* blocks of 32 positions in reverse order, as threads may run them */
                    for (int q0 = (op.fqn - 1) / 32 * 32; q0 >= 0; q0 -= 32)
                        ck_assert(qat_rti_fconv_simd(simd_isas[ii], &op, op.fpad, got, q0,
                                                     q0 + 32 < op.fqn ? q0 + 32 : op.fqn));
                }
                size_t at = 0;
                ck_assert_msg(same_bits(want, got, op.out_size, &at),
                              "case %d (%s, split %d): ic %d oc %d %dx%d k %dx%d s %d p %d %s relu %d: "
                              "output %zu portable %a simd %a",
                              c, qat_rt_isa_name(simd_isas[ii]), split, IC, OC, H, W, KH, KW, S, P,
                              f16 ? "f16" : "f32", relu, at, (double)want[at], (double)got[at]);
            }
        }
        free(x);
        free(want);
        free(got);
        hand_free(&op);
    }
}
END_TEST

/* linear [n, IN] -> [n, OUT], the portable kernel's transposed weights */
static void lin_check(rt_op *op, const float *x, int n, const char *tag)
{
    op->dpack = malloc((size_t)op->ic * op->oc * sizeof(float) + 4);
    ck_assert(op->dpack);
    float *wt = op->dpack;
    for (int o = 0; o < op->oc; o++)
        for (int k = 0; k < op->ic; k++) wt[(size_t)k * op->oc + o] = op->fweight[(size_t)o * op->ic + k];
    OK(qat_rti_float_simd_plan(op, 1));
    const size_t ny = (size_t)n * op->oc;
    float *want = malloc(ny * sizeof *want), *got = malloc(ny * sizeof *got);
    ck_assert(want && got);
    qat_rti_linear_float_ref(op, x, want, 0, n);
    for (int ii = 0; ii < 2; ii++) {
        if (!qat_rti_cpu_has(simd_isas[ii])) continue;
        memset(got, 0xff, ny * sizeof *got);
        ck_assert(qat_rti_flinear_simd(simd_isas[ii], op, x, got, 0, n));
        size_t at = 0;
        ck_assert_msg(same_bits(want, got, ny, &at), "%s (%s): in %d out %d n %d %s relu %d: output %zu portable %a simd %a",
                      tag, qat_rt_isa_name(simd_isas[ii]), op->ic, op->oc, n, op->fdt == RT_DT_F16 ? "f16" : op->fdt == RT_DT_BF16 ? "bf16" : "f32",
                      op->relu, at, (double)want[at], (double)got[at]);
    }
    free(want);
    free(got);
}

START_TEST(test_float_linear_simd)
{
    qat_rng r;
    qat_rng_seed(&r, 78);
    static const int outs[] = {1, 3, 8, 10, 33, 70, 120};
    for (int c = 0; c < 42; c++) {
        const int IN = 1 + (int)(qat_rng_u32(&r) % 97), OUT = outs[c % 7], n = 1 + (int)(qat_rng_u32(&r) % 15);
        rt_op op = hand_op(RT_OP_LINEAR, c / 7 % 2, c / 14 % 2, OUT, IN, 1, 1, &r);
        float *x = malloc((size_t)n * IN * sizeof *x);
        ck_assert(x);
        fill_x(x, (size_t)n * IN, &r);
        lin_check(&op, x, n, "random");
        free(x);
        hand_free(&op);
    }
    /* binary16 rounding edges through y = round(x * w + b), IN = 1: w and b
     * put acc + b on ties of the binary16 quantum, just off them, on
     * subnormals, around 65504 / 65520 (saturation), near zero from below
     * (-0); x = +-1, +-inf (inf * w, and inf - inf = NaN with the bias) */
    enum { EO = 96 };
    rt_op op = hand_op(RT_OP_LINEAR, 1, 0, EO, 1, 1, 1, &r);
    static const double base[] = {1.0, 1.5, 3.0, 1024.0, 2048.0, 0x1p-14, 0x1p-20, 0x1p-24, 65504.0, 65488.0, 60000.0, 0.0};
    for (int o = 0; o < EO; o++) {
        const double b0 = base[o % 12] * (o & 16 ? -1 : 1);
        double e = 0.0;
        int E;
        frexp(fabs(b0) > 0 ? fabs(b0) : 1e-30, &E);
        const double quantum = ldexp(1.0, (E - 1 < -14 ? -14 : E - 1) - 10);
        switch (o / 12 % 8) {
        case 0: e = 0.5 * quantum; break;                 /* a tie */
        case 1: e = 0.5 * quantum + ldexp(quantum, -20); break;
        case 2: e = 0.5 * quantum - ldexp(quantum, -20); break;
        case 3: e = 1.5 * quantum; break;                 /* a tie, the other way */
        case 4: e = 16.0; break;                           /* beyond 65504 + 16 */
        case 5: e = -0x1p-30; break;                       /* -0 near zero */
        case 6: e = 0.25 * quantum; break;
        default: e = 0.0; break;
        }
        op.fweight[o] = (float)(b0 + e);
        op.fbias[o] = (float)((b0 + e) - (double)op.fweight[o]); /* the float32 rest */
    }
    op.fbias[7] = INFINITY; /* inf + (-inf) = NaN when x = -inf */
    op.fweight[7] = 1.0f;
    const float x[6] = {1.0f, -1.0f, INFINITY, -INFINITY, 0.5f, 0.0f};
    lin_check(&op, x, 6, "f16 edges");
    hand_free(&op);
}
END_TEST

/* ---- malformed float ops ---- */

/* the file of a small dynamic mlp with one thing changed in op 2 (fc1) */
static int load_changed(void (*change)(hid_t g), const char *wdt)
{
    qat_model *m = small_mlp();
    qat_dynamic_opts o = qat_dynamic_opts_defaults();
    if (!strcmp(wdt, "fp16")) o.weights = QAT_DYN_FP16;
    const char *path = tu_tmp_path("bad.int8.h5");
    OK(qat_export_dynamic(m, &o, path, NULL));
    qat_model_free(m);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    hid_t g = H5Gopen2(f, "/ops/002", H5P_DEFAULT);
    ck_assert(g >= 0);
    change(g);
    H5Gclose(g);
    H5Fclose(f);
    qat_rt_model *rt = NULL;
    int st = qat_rt_load_file(path, &rt);
    ck_assert_ptr_null(rt);
    return st;
}

static void set_str(hid_t g, const char *name, const char *v)
{
    H5Adelete(g, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void short_f16(hid_t g)
{
    H5Ldelete(g, "weight", H5P_DEFAULT);
    hsize_t d[2] = {20, 35}; /* one input short */
    uint16_t *v = calloc(20 * 35, 2);
    hid_t s = H5Screate_simple(2, d, NULL);
    hid_t ds = H5Dcreate2(g, "weight", H5T_STD_U16LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    H5Sclose(s);
    free(v);
}
static void bad_dtype(hid_t g) { set_str(g, "dtype", "float8"); }
static void bad_wdtype(hid_t g) { set_str(g, "weight_dtype", "int4"); }
static void bad_act(hid_t g) { set_str(g, "act_quant", "channel"); }
static void inf_f16(hid_t g)
{
    hid_t ds = H5Dopen2(g, "weight", H5P_DEFAULT);
    uint16_t *v = calloc(20 * 36, 2);
    v[37] = 0x7c00; /* +inf */
    H5Dwrite(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    free(v);
}
static void zero_scale(hid_t g)
{
    hid_t ds = H5Dopen2(g, "weight_scale", H5P_DEFAULT);
    float v[20];
    for (int i = 0; i < 20; i++) v[i] = i == 4 ? 0.0f : 1.0f;
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
}

static void expect_msg(int st, int want, const char *a, const char *b)
{
    const char *e = qat_rt_last_error();
    ck_assert_msg(st == want, "status %d, expected %d: %s", st, want, e);
    ck_assert_msg(strstr(e, "ops/002 (fc1)") && strstr(e, a) && (!b || strstr(e, b)), "message '%s' lacks '%s'", e,
                  a);
}

START_TEST(test_bad_files)
{
    expect_msg(load_changed(short_f16, "fp16"), QAT_ERR_FORMAT, "dataset weight", "expected 720");
    expect_msg(load_changed(bad_dtype, "w8"), QAT_ERR_UNSUPPORTED, "dtype = 'float8'", NULL);
    expect_msg(load_changed(bad_wdtype, "w8"), QAT_ERR_UNSUPPORTED, "weight_dtype = 'int4'", NULL);
    expect_msg(load_changed(bad_act, "w8"), QAT_ERR_UNSUPPORTED, "act_quant = 'channel'", NULL);
    expect_msg(load_changed(inf_f16, "fp16"), QAT_ERR_FORMAT, "weight[37]", "binary16");
    expect_msg(load_changed(zero_scale, "w8"), QAT_ERR_FORMAT, "weight_scale[4]", NULL);
}
END_TEST

/* ---- checkpoints, options ---- */

START_TEST(test_checkpoint_and_opts)
{
    qat_dynamic_opts o = qat_dynamic_opts_defaults(), back;
    ck_assert_int_eq(qat_dynamic_opts_parse(&o, "w4", NULL, NULL), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "w8"));
    ck_assert_int_eq(qat_dynamic_opts_parse(&o, NULL, "conv", NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_dynamic_opts_parse(&o, NULL, NULL, "channel"), QAT_ERR_ARG);
    OK(qat_dynamic_opts_parse(&o, "fp16", "all", "row"));
    ck_assert(o.weights == QAT_DYN_FP16 && o.all_layers == 1 && o.act_row == 1);
    qat_model *m = small_mlp();
    const char *path = tu_tmp_path("dyn.h5");
    OK(qat_dynamic_save(path, m, &o));
    qat_file_info info;
    OK(qat_checkpoint_info(path, &info));
    ck_assert_str_eq(info.format, QAT_FORMAT_DYNAMIC_CHECKPOINT);
    qat_model *m2 = qat_dynamic_load(path, &back);
    NN(m2);
    ck_assert(back.weights == o.weights && back.all_layers == o.all_layers && back.act_row == o.act_row);
    const qat_layer *a = qat_model_layer_c(m, 2), *b = qat_model_layer_c(m2, 2);
    ck_assert_int_eq(memcmp(a->weight->data, b->weight->data, a->weight->numel * sizeof(float)), 0);
    /* a float checkpoint is not a dynamic one */
    ck_assert_ptr_null(qat_dynamic_load(tu_data_path("lenet5-small.int8.h5"), &back));
    /* a model without input normalisation cannot be built */
    qat_model *bare = qat_model_create(1, 2, 2);
    qat_model_linear(bare, "fc", qat_model_flatten(bare, "f", 0), 2, 1);
    ck_assert_ptr_null(qat_dynmodel_build(bare, &o));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "normalisation"));
    qat_model_free(bare);
    qat_model_free(m2);
    qat_model_free(m);
}
END_TEST

/* an int8 model through the float-logit call: its logits dequantized */
START_TEST(test_int8_model_float_logits)
{
    qat_rt_model *rt = NULL;
    ck_assert_int_eq(qat_rt_load_file(tu_data_path("lenet5-small.int8.h5"), &rt), QAT_OK);
    ck_assert_int_eq(qat_rt_output_dtype(rt), QAT_RT_DTYPE_INT8);
    OK(qat_rt_prepare(rt, 3));
    uint8_t px[3 * 784];
    fill_pixels(px, sizeof px, 1);
    int8_t q[30];
    float f[30], want[30];
    OK(qat_rt_run_u8(rt, px, 3, q));
    OK(qat_rt_run_u8_float(rt, px, 3, f));
    qat_rt_dequantize(rt, q, 30, want);
    size_t at;
    ck_assert(same_bits(f, want, 30, &at));
    ck_assert_ptr_null(qat_rt_op_output_f32(rt, 1));
    qat_rt_free(rt);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dynamic");
    TCase *t = tcase_create("dynamic");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_linear_reference);
    tcase_add_test(t, test_act_quant_edges);
    tcase_add_test(t, test_eval_equals_runtime);
    tcase_add_test(t, test_fp16_graph);
    tcase_add_test(t, test_float_conv_simd);
    tcase_add_test(t, test_float_linear_simd);
    tcase_add_test(t, test_bad_files);
    tcase_add_test(t, test_checkpoint_and_opts);
    tcase_add_test(t, test_int8_model_float_logits);
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
