/* Models as graphs of layers: builders, parameters, forward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "qat/model.h"

struct qat_model {
    qat_layer *layers;
    int n, cap;
    char prefix[QAT_NAME_MAX];
    int prefix_count;
    char arch[32];
    qat_named_tensor *params, *buffers;
    int n_params, n_buffers;
    int status; /* first builder failure, passed through */
    int has_norm;   /* input normalisation known (qat_model_set_input_norm) */
    float mean, std;
};

static int build_lists(qat_model *m);

static const char *const type_names[QAT_LAYER_COUNT] = {
    [QAT_LAYER_INPUT] = "input",
    [QAT_LAYER_CONV2D] = "conv2d",
    [QAT_LAYER_LINEAR] = "linear",
    [QAT_LAYER_BATCHNORM2D] = "batchnorm2d",
    [QAT_LAYER_RELU] = "relu",
    [QAT_LAYER_MAXPOOL2D] = "maxpool2d",
    [QAT_LAYER_AVGPOOL2D] = "avgpool2d",
    [QAT_LAYER_GLOBAL_AVGPOOL] = "global_avgpool",
    [QAT_LAYER_FLATTEN] = "flatten",
    [QAT_LAYER_ADD] = "add",
    [QAT_LAYER_CLAMP] = "clamp",
    [QAT_LAYER_HARDSWISH] = "hardswish",
    [QAT_LAYER_HARDSIGMOID] = "hardsigmoid",
    [QAT_LAYER_CONCAT] = "concat",
    [QAT_LAYER_UPSAMPLE] = "upsample",
};
_Static_assert(QAT_LAYER_COUNT == 15, "type_names must list every layer type");

const char *qat_layer_type_name(qat_layer_type t)
{
    return ((unsigned)t < QAT_LAYER_COUNT) ? type_names[t] : NULL;
}

int qat_layer_type_from_name(const char *name)
{
    for (int i = 0; i < QAT_LAYER_COUNT; i++)
        if (name && strcmp(name, type_names[i]) == 0) return i;
    return -1;
}

qat_model *qat_model_create(int c, int h, int w)
{
    if (c <= 0 || h <= 0 || w <= 0)
        return qat_error_null(QAT_ERR_ARG, "qat_model_create: input shape (%d,%d,%d) invalid", c, h, w);
    qat_model *m = qat_calloc(1, sizeof *m);
    if (!m) return qat_error_null(QAT_ERR_NOMEM, "qat_model_create: out of memory");
    m->cap = 16;
    m->layers = qat_calloc((size_t)m->cap, sizeof *m->layers);
    if (!m->layers) {
        free(m);
        return qat_error_null(QAT_ERR_NOMEM, "qat_model_create: out of memory");
    }
    qat_layer *in = &m->layers[m->n++];
    in->type = QAT_LAYER_INPUT;
    snprintf(in->name, sizeof in->name, "input");
    in->out_ndim = 3;
    in->out_shape[0] = c;
    in->out_shape[1] = h;
    in->out_shape[2] = w;
    snprintf(m->arch, sizeof m->arch, "custom");
    if (build_lists(m)) { /* empty, but the getters never allocate */
        qat_model_free(m);
        return NULL;
    }
    return m;
}

void qat_model_free(qat_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n; i++) {
        qat_layer *l = &m->layers[i];
        qat_tensor_free(l->weight);
        qat_tensor_free(l->bias);
        qat_tensor_free(l->running_mean);
        qat_tensor_free(l->running_var);
        qat_tensor_free(l->clamp_hi_c);
    }
    free(m->layers);
    free(m->params);
    free(m->buffers);
    free(m);
}

void qat_model_set_prefix(qat_model *m, const char *prefix)
{
    snprintf(m->prefix, sizeof m->prefix, "%s", prefix ? prefix : "");
    m->prefix_count = 0;
}

const char *qat_model_arch(const qat_model *m) { return m->arch; }
void qat_model_set_arch(qat_model *m, const char *arch) { snprintf(m->arch, sizeof m->arch, "%s", arch); }
int qat_model_num_layers(const qat_model *m) { return m->n; }
qat_layer *qat_model_layer(qat_model *m, int i) { return (i >= 0 && i < m->n) ? &m->layers[i] : NULL; }
const qat_layer *qat_model_layer_c(const qat_model *m, int i)
{
    return (i >= 0 && i < m->n) ? &m->layers[i] : NULL;
}

int qat_model_find(const qat_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->layers[i].name, name) == 0) return i;
    return -1;
}

static int fail(qat_model *m, int status)
{
    if (!m->status) m->status = status;
    return status;
}

/* Appends a layer reading `in` (checked), named `name` or automatically. */
static qat_layer *append(qat_model *m, const char *op, const char *name, qat_layer_type type,
                         int n_inputs, int in0, int in1, int *index)
{
    if (m->status) return NULL;
    int ins[2] = {in0, in1};
    for (int i = 0; i < n_inputs; i++)
        if (ins[i] < 0 || ins[i] >= m->n) {
            fail(m, qat_error(QAT_ERR_ARG, "%s: input layer %d does not exist (model has %d layers)", op,
                              ins[i], m->n));
            return NULL;
        }
    char buf[QAT_NAME_MAX + 16];
    if (!name) {
        if (m->prefix[0])
            snprintf(buf, sizeof buf, "%s.%d", m->prefix, m->prefix_count);
        else
            snprintf(buf, sizeof buf, "%d", m->n - 1);
        name = buf;
    }
    if (strlen(name) >= QAT_NAME_MAX || !name[0]) {
        fail(m, qat_error(QAT_ERR_ARG, "%s: layer name '%s' empty or too long", op, name));
        return NULL;
    }
    if (qat_model_find(m, name) >= 0) {
        fail(m, qat_error(QAT_ERR_ARG, "%s: a layer named '%s' exists already", op, name));
        return NULL;
    }
    if (m->n == m->cap) {
        qat_layer *l = qat_realloc(m->layers, (size_t)m->cap * 2 * sizeof *l);
        if (!l) {
            fail(m, qat_error(QAT_ERR_NOMEM, "%s: out of memory", op));
            return NULL;
        }
        m->layers = l;
        m->cap *= 2;
    }
    m->prefix_count++;
    qat_layer *l = &m->layers[m->n];
    memset(l, 0, sizeof *l);
    l->type = type;
    memcpy(l->name, name, strlen(name) + 1);
    l->n_inputs = n_inputs;
    l->inputs[0] = in0;
    l->inputs[1] = n_inputs > 1 ? in1 : -1;
    *index = m->n++;
    return l;
}

/* layer idx came with parameters: the lists are rebuilt now */
static int params_added(qat_model *m, int idx)
{
    int rc = build_lists(m);
    return rc ? fail(m, rc) : idx;
}

static const qat_layer *input_of(qat_model *m, const qat_layer *l, int k)
{
    return &m->layers[l->inputs[k]];
}

static int need_image(qat_model *m, const char *op, const qat_layer *src)
{
    if (src->out_ndim != 3)
        return fail(m, qat_error(QAT_ERR_SHAPE, "%s: input '%s' is not an image (C,H,W)", op, src->name));
    return 0;
}

int qat_model_conv2d_grouped(qat_model *m, const char *name, int in, int out_ch, int kernel, int stride,
                             int pad, int groups, int bias)
{
    int idx;
    if (out_ch <= 0 || kernel <= 0 || stride <= 0 || pad < 0 || groups <= 0)
        return fail(m, qat_error(QAT_ERR_ARG, "conv2d: out_ch %d, kernel %d, stride %d, pad %d, groups %d invalid",
                                 out_ch, kernel, stride, pad, groups));
    qat_layer *l = append(m, "conv2d", name, QAT_LAYER_CONV2D, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (need_image(m, "conv2d", src)) return (m->n--, m->status);
    int C = src->out_shape[0], H = src->out_shape[1], W = src->out_shape[2];
    if (C % groups || out_ch % groups) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_ARG, "conv2d '%s': %d groups do not divide %d input and %d output channels",
                                 l->name, groups, C, out_ch));
    }
    if (H + 2 * pad < kernel || W + 2 * pad < kernel) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_SHAPE, "conv2d '%s': kernel %d larger than padded input %dx%d",
                                 l->name, kernel, H + 2 * pad, W + 2 * pad));
    }
    l->in_ch = C;
    l->out_ch = out_ch;
    l->kernel = kernel;
    l->stride = stride;
    l->pad = pad;
    l->groups = groups;
    l->has_bias = bias != 0;
    l->out_ndim = 3;
    l->out_shape[0] = out_ch;
    l->out_shape[1] = (H + 2 * pad - kernel) / stride + 1;
    l->out_shape[2] = (W + 2 * pad - kernel) / stride + 1;
    l->weight = qat_tensor_create(4, (int[]){out_ch, C / groups, kernel, kernel}, 1);
    if (bias) l->bias = qat_tensor_create(1, (int[]){out_ch}, 1);
    if (!l->weight || (bias && !l->bias)) return fail(m, QAT_ERR_NOMEM);
    return params_added(m, idx);
}

int qat_model_conv2d(qat_model *m, const char *name, int in, int out_ch, int kernel, int stride,
                     int pad, int bias)
{
    return qat_model_conv2d_grouped(m, name, in, out_ch, kernel, stride, pad, 1, bias);
}

int qat_model_linear(qat_model *m, const char *name, int in, int out_features, int bias)
{
    int idx;
    if (out_features <= 0)
        return fail(m, qat_error(QAT_ERR_ARG, "linear: out_features %d invalid", out_features));
    qat_layer *l = append(m, "linear", name, QAT_LAYER_LINEAR, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (src->out_ndim != 1) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_SHAPE, "linear '%s': input '%s' is not flat (add a flatten layer)",
                                 l->name, src->name));
    }
    l->in_ch = src->out_shape[0];
    l->out_ch = out_features;
    l->has_bias = bias != 0;
    l->out_ndim = 1;
    l->out_shape[0] = out_features;
    l->weight = qat_tensor_create(2, (int[]){out_features, l->in_ch}, 1);
    if (bias) l->bias = qat_tensor_create(1, (int[]){out_features}, 1);
    if (!l->weight || (bias && !l->bias)) return fail(m, QAT_ERR_NOMEM);
    return params_added(m, idx);
}

int qat_model_batchnorm2d(qat_model *m, const char *name, int in)
{
    int idx;
    qat_layer *l = append(m, "batchnorm2d", name, QAT_LAYER_BATCHNORM2D, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (need_image(m, "batchnorm2d", src)) return (m->n--, m->status);
    int C = src->out_shape[0];
    l->in_ch = l->out_ch = C;
    l->bn_eps = 1e-5f;
    l->bn_momentum = 0.1f;
    l->out_ndim = 3;
    memcpy(l->out_shape, src->out_shape, sizeof l->out_shape);
    l->weight = qat_tensor_create(1, &C, 1);
    l->bias = qat_tensor_create(1, &C, 1);
    l->running_mean = qat_tensor_create(1, &C, 0);
    l->running_var = qat_tensor_create(1, &C, 0);
    if (!l->weight || !l->bias || !l->running_mean || !l->running_var) return fail(m, QAT_ERR_NOMEM);
    for (int c = 0; c < C; c++) {
        l->weight->data[c] = 1.0f;
        l->running_var->data[c] = 1.0f;
    }
    return params_added(m, idx);
}

static int same_shape_layer(qat_model *m, const char *op, const char *name, qat_layer_type type,
                            int in)
{
    int idx;
    qat_layer *l = append(m, op, name, type, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    l->out_ndim = src->out_ndim;
    memcpy(l->out_shape, src->out_shape, sizeof l->out_shape);
    return idx;
}

int qat_model_relu(qat_model *m, const char *name, int in)
{
    return same_shape_layer(m, "relu", name, QAT_LAYER_RELU, in);
}

static int pool_layer(qat_model *m, const char *op, const char *name, qat_layer_type type, int in,
                      int kernel, int stride)
{
    int idx;
    if (kernel <= 0 || stride <= 0)
        return fail(m, qat_error(QAT_ERR_ARG, "%s: kernel %d / stride %d invalid", op, kernel, stride));
    qat_layer *l = append(m, op, name, type, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (need_image(m, op, src)) return (m->n--, m->status);
    if (src->out_shape[1] < kernel || src->out_shape[2] < kernel) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_SHAPE, "%s: kernel %d larger than input %dx%d", op, kernel,
                                 src->out_shape[1], src->out_shape[2]));
    }
    l->kernel = kernel;
    l->stride = stride;
    l->in_ch = l->out_ch = src->out_shape[0];
    l->out_ndim = 3;
    l->out_shape[0] = src->out_shape[0];
    l->out_shape[1] = (src->out_shape[1] - kernel) / stride + 1;
    l->out_shape[2] = (src->out_shape[2] - kernel) / stride + 1;
    return idx;
}

int qat_model_maxpool2d(qat_model *m, const char *name, int in, int kernel, int stride)
{
    return pool_layer(m, "maxpool2d", name, QAT_LAYER_MAXPOOL2D, in, kernel, stride);
}

int qat_model_avgpool2d(qat_model *m, const char *name, int in, int kernel, int stride)
{
    return pool_layer(m, "avgpool2d", name, QAT_LAYER_AVGPOOL2D, in, kernel, stride);
}

int qat_model_global_avgpool(qat_model *m, const char *name, int in)
{
    int idx;
    qat_layer *l = append(m, "global_avgpool", name, QAT_LAYER_GLOBAL_AVGPOOL, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (need_image(m, "global_avgpool", src)) return (m->n--, m->status);
    l->in_ch = l->out_ch = src->out_shape[0];
    l->out_ndim = 1;
    l->out_shape[0] = src->out_shape[0];
    return idx;
}

int qat_model_flatten(qat_model *m, const char *name, int in)
{
    int idx;
    qat_layer *l = append(m, "flatten", name, QAT_LAYER_FLATTEN, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    int n = 1;
    for (int i = 0; i < src->out_ndim; i++) n *= src->out_shape[i];
    l->out_ndim = 1;
    l->out_shape[0] = n;
    return idx;
}

int qat_model_add(qat_model *m, const char *name, int a, int b)
{
    int idx;
    qat_layer *l = append(m, "add", name, QAT_LAYER_ADD, 2, a, b, &idx);
    if (!l) return m->status;
    const qat_layer *la = input_of(m, l, 0), *lb = input_of(m, l, 1);
    if (la->out_ndim != lb->out_ndim || memcmp(la->out_shape, lb->out_shape, sizeof la->out_shape)) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_SHAPE, "add: '%s' and '%s' have different shapes", la->name, lb->name));
    }
    l->out_ndim = la->out_ndim;
    memcpy(l->out_shape, la->out_shape, sizeof l->out_shape);
    return idx;
}

int qat_model_clamp(qat_model *m, const char *name, int in, float lo, float hi)
{
    if (isnan(lo) || isnan(hi) || lo > hi)
        return fail(m, qat_error(QAT_ERR_ARG, "clamp: bounds [%g, %g] invalid (need lo <= hi, not NaN)", (double)lo,
                                 (double)hi));
    int idx = same_shape_layer(m, "clamp", name, QAT_LAYER_CLAMP, in);
    if (idx < 0) return idx;
    m->layers[idx].clamp_lo = lo;
    m->layers[idx].clamp_hi = hi;
    return idx;
}

int qat_model_relu6(qat_model *m, const char *name, int in) { return qat_model_clamp(m, name, in, 0.0f, 6.0f); }

int qat_layer_set_clamp_channels(qat_model *m, int layer, const float *hi_c)
{
    qat_layer *l = qat_model_layer(m, layer);
    if (!l || l->type != QAT_LAYER_CLAMP)
        return qat_error(QAT_ERR_ARG, "qat_layer_set_clamp_channels: layer %d is not a clamp layer", layer);
    if (!hi_c) {
        if (!l->clamp_hi_c) return QAT_OK;
        qat_tensor *old = l->clamp_hi_c;
        l->clamp_hi_c = NULL;
        int rc = build_lists(m);
        if (rc) {
            l->clamp_hi_c = old;
            return rc;
        }
        qat_tensor_free(old);
        return QAT_OK;
    }
    int C = l->out_shape[0];
    for (int c = 0; c < C; c++)
        if (isnan(hi_c[c]) || hi_c[c] < l->clamp_lo)
            return qat_error(QAT_ERR_ARG, "clamp '%s': channel %d upper bound %g below the lower bound %g (or NaN)",
                             l->name, c, (double)hi_c[c], (double)l->clamp_lo);
    if (!l->clamp_hi_c) {
        qat_tensor *t = qat_tensor_create(1, &C, 0);
        if (!t) return QAT_ERR_NOMEM;
        l->clamp_hi_c = t;
        int rc = build_lists(m);
        if (rc) {
            l->clamp_hi_c = NULL;
            qat_tensor_free(t);
            return rc;
        }
    }
    memcpy(l->clamp_hi_c->data, hi_c, (size_t)C * sizeof(float));
    return QAT_OK;
}

int qat_model_hardswish(qat_model *m, const char *name, int in)
{
    return same_shape_layer(m, "hardswish", name, QAT_LAYER_HARDSWISH, in);
}

int qat_model_hardsigmoid(qat_model *m, const char *name, int in)
{
    return same_shape_layer(m, "hardsigmoid", name, QAT_LAYER_HARDSIGMOID, in);
}

int qat_model_concat(qat_model *m, const char *name, int a, int b)
{
    int idx;
    qat_layer *l = append(m, "concat", name, QAT_LAYER_CONCAT, 2, a, b, &idx);
    if (!l) return m->status;
    const qat_layer *la = input_of(m, l, 0), *lb = input_of(m, l, 1);
    int ok = la->out_ndim == lb->out_ndim;
    for (int k = 1; ok && k < la->out_ndim; k++) ok = la->out_shape[k] == lb->out_shape[k];
    if (!ok) {
        m->n--;
        return fail(m, qat_error(QAT_ERR_SHAPE, "concat: '%s' and '%s' differ in rank or spatial size", la->name,
                                 lb->name));
    }
    l->out_ndim = la->out_ndim;
    memcpy(l->out_shape, la->out_shape, sizeof l->out_shape);
    l->out_shape[0] = la->out_shape[0] + lb->out_shape[0];
    l->in_ch = la->out_shape[0];
    l->out_ch = l->out_shape[0];
    return idx;
}

int qat_model_upsample(qat_model *m, const char *name, int in, int factor)
{
    int idx;
    if (factor < 1 || factor > 4096) return fail(m, qat_error(QAT_ERR_ARG, "upsample: factor %d invalid", factor));
    qat_layer *l = append(m, "upsample", name, QAT_LAYER_UPSAMPLE, 1, in, -1, &idx);
    if (!l) return m->status;
    const qat_layer *src = input_of(m, l, 0);
    if (need_image(m, "upsample", src)) return (m->n--, m->status);
    l->kernel = factor;
    l->in_ch = l->out_ch = src->out_shape[0];
    l->out_ndim = 3;
    l->out_shape[0] = src->out_shape[0];
    l->out_shape[1] = src->out_shape[1] * factor;
    l->out_shape[2] = src->out_shape[2] * factor;
    return idx;
}

int qat_model_basic_block(qat_model *m, const char *prefix, int in, int out_ch, int stride)
{
    char n[2 * QAT_NAME_MAX];
#define NM(s) (snprintf(n, sizeof n, "%s.%s", prefix, s), n)
    if (m->status) return m->status;
    if (in < 0 || in >= m->n) return fail(m, qat_error(QAT_ERR_ARG, "basic_block: input %d does not exist", in));
    int cin = m->layers[in].out_shape[0];
    int x = qat_model_conv2d(m, NM("conv1"), in, out_ch, 3, stride, 1, 0);
    x = qat_model_batchnorm2d(m, NM("bn1"), x);
    x = qat_model_relu(m, NM("relu1"), x);
    x = qat_model_conv2d(m, NM("conv2"), x, out_ch, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, NM("bn2"), x);
    int sc = in;
    if (stride != 1 || cin != out_ch) {
        sc = qat_model_conv2d(m, NM("shortcut.0"), in, out_ch, 1, stride, 0, 0);
        sc = qat_model_batchnorm2d(m, NM("shortcut.1"), sc);
    }
    x = qat_model_add(m, NM("add"), x, sc);
    x = qat_model_relu(m, NM("relu2"), x);
#undef NM
    return x;
}

/* ---- parameters ---- */

/* The parameter and buffer lists, rebuilt by the model's creation and by
 * every builder that adds parameters, so that the getters never allocate
 * (a getter that could fail would hand out an empty list). On failure the
 * previous lists stay. */
static int build_lists(qat_model *m)
{
    int np = 0, nb = 0;
    for (int i = 0; i < m->n; i++) {
        const qat_layer *l = &m->layers[i];
        np += (l->weight != NULL) + (l->bias != NULL);
        nb += (l->running_mean != NULL) + (l->running_var != NULL) + (l->clamp_hi_c != NULL);
    }
    qat_named_tensor *params = qat_calloc((size_t)np + 1, sizeof *params);
    qat_named_tensor *buffers = qat_calloc((size_t)nb + 1, sizeof *buffers);
    if (!params || !buffers) {
        free(params);
        free(buffers);
        return qat_error(QAT_ERR_NOMEM, "model: out of memory listing parameters");
    }
    free(m->params);
    free(m->buffers);
    m->params = params;
    m->buffers = buffers;
    np = nb = 0;
    for (int i = 0; i < m->n; i++) {
        const qat_layer *l = &m->layers[i];
        int bn = l->type == QAT_LAYER_BATCHNORM2D;
        if (l->weight)
            m->params[np++] = (qat_named_tensor){.t = l->weight, .no_decay = bn, .layer = i};
        if (l->weight) snprintf(m->params[np - 1].name, sizeof m->params[0].name, "%s.weight", l->name);
        if (l->bias) {
            m->params[np] = (qat_named_tensor){.t = l->bias, .no_decay = 1, .layer = i};
            snprintf(m->params[np++].name, sizeof m->params[0].name, "%s.bias", l->name);
        }
        if (l->running_mean) {
            m->buffers[nb] = (qat_named_tensor){.t = l->running_mean, .no_decay = 1, .layer = i};
            snprintf(m->buffers[nb++].name, sizeof m->buffers[0].name, "%s.running_mean", l->name);
            m->buffers[nb] = (qat_named_tensor){.t = l->running_var, .no_decay = 1, .layer = i};
            snprintf(m->buffers[nb++].name, sizeof m->buffers[0].name, "%s.running_var", l->name);
        }
        if (l->clamp_hi_c) {
            m->buffers[nb] = (qat_named_tensor){.t = l->clamp_hi_c, .no_decay = 1, .layer = i};
            snprintf(m->buffers[nb++].name, sizeof m->buffers[0].name, "%s.clamp_hi", l->name);
        }
    }
    m->n_params = np;
    m->n_buffers = nb;
    return QAT_OK;
}

int qat_model_num_params(const qat_model *m) { return m->n_params; }
const qat_named_tensor *qat_model_params(const qat_model *m) { return m->params; }
int qat_model_num_buffers(const qat_model *m) { return m->n_buffers; }
const qat_named_tensor *qat_model_buffers(const qat_model *m) { return m->buffers; }

size_t qat_model_param_count(const qat_model *m)
{
    size_t n = 0;
    int np = qat_model_num_params(m);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < np; i++) n += p[i].t->numel;
    return n;
}

void qat_model_zero_grad(qat_model *m)
{
    int np = qat_model_num_params(m);
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < np; i++) qat_tensor_zero_grad(p[i].t);
}

int qat_model_init(qat_model *m, uint64_t seed)
{
    if (m->status) return m->status;
    qat_rng r;
    qat_rng_seed(&r, seed);
    for (int i = 0; i < m->n; i++) {
        qat_layer *l = &m->layers[i];
        if (l->type == QAT_LAYER_CONV2D || l->type == QAT_LAYER_LINEAR) {
            size_t fan_in = l->weight->numel / (size_t)l->weight->shape[0];
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t k = 0; k < l->weight->numel; k++)
                l->weight->data[k] = bound * (2.0f * qat_rng_uniform(&r) - 1.0f);
            if (l->bias)
                for (size_t k = 0; k < l->bias->numel; k++)
                    l->bias->data[k] = bound * (2.0f * qat_rng_uniform(&r) - 1.0f);
        } else if (l->type == QAT_LAYER_BATCHNORM2D) {
            for (int c = 0; c < l->out_ch; c++) {
                l->weight->data[c] = 1.0f;
                l->bias->data[c] = 0.0f;
                l->running_mean->data[c] = 0.0f;
                l->running_var->data[c] = 1.0f;
            }
            l->num_batches_tracked = 0;
        }
    }
    return QAT_OK;
}

/* ---- forward ---- */

qat_tensor *qat_layer_forward(qat_ctx *ctx, qat_layer *l, qat_tensor *const *in)
{
    qat_tensor *x = in[0];
    switch (l->type) {
    case QAT_LAYER_INPUT:
        return x;
    case QAT_LAYER_CONV2D:
        return l->groups > 1 ? qat_conv2d_grouped(ctx, x, l->weight, l->bias, l->stride, l->pad, l->groups)
                             : qat_conv2d(ctx, x, l->weight, l->bias, l->stride, l->pad);
    case QAT_LAYER_LINEAR:
        return qat_linear(ctx, x, l->weight, l->bias);
    case QAT_LAYER_BATCHNORM2D:
        if (qat_ctx_training(ctx)) l->num_batches_tracked++;
        return qat_batchnorm2d(ctx, x, l->weight, l->bias, l->running_mean, l->running_var,
                               l->bn_momentum, l->bn_eps);
    case QAT_LAYER_RELU:
        return qat_relu(ctx, x);
    case QAT_LAYER_MAXPOOL2D:
        return qat_maxpool2d(ctx, x, l->kernel, l->stride);
    case QAT_LAYER_AVGPOOL2D:
        return qat_avgpool2d(ctx, x, l->kernel, l->stride);
    case QAT_LAYER_GLOBAL_AVGPOOL:
        return qat_global_avgpool(ctx, x);
    case QAT_LAYER_FLATTEN:
        return qat_flatten(ctx, x);
    case QAT_LAYER_ADD:
        return qat_add(ctx, x, in[1]);
    case QAT_LAYER_CLAMP:
        return l->clamp_hi_c ? qat_clamp_channels(ctx, x, l->clamp_lo, l->clamp_hi_c->data)
                             : qat_clamp(ctx, x, l->clamp_lo, l->clamp_hi);
    case QAT_LAYER_HARDSWISH:
        return qat_hardswish(ctx, x);
    case QAT_LAYER_HARDSIGMOID:
        return qat_hardsigmoid(ctx, x);
    case QAT_LAYER_CONCAT:
        return qat_concat(ctx, x, in[1]);
    case QAT_LAYER_UPSAMPLE:
        return qat_upsample_nearest(ctx, x, l->kernel);
    case QAT_LAYER_COUNT:
        break;
    }
    return qat_error_null(QAT_ERR_UNSUPPORTED, "layer '%s': unknown type %d", l->name, (int)l->type);
}

/* Layer i (a BN or a residual add) has one reader, the activation right
 * after it (a BN: ReLU, clamp or hard-swish; an add: ReLU): the two run as
 * one op (qat_batchnorm2d_relu, _clamp, _hardswish, qat_add_relu: same
 * bits) and layer i's own output is never formed. */
static int relu_pair(const qat_model *m, int i)
{
    const qat_layer *l = &m->layers[i], *r = i + 1 < m->n ? &m->layers[i + 1] : NULL;
    if (!r || r->inputs[0] != i) return 0;
    int ok = (l->type == QAT_LAYER_ADD && r->type == QAT_LAYER_RELU) ||
             (l->type == QAT_LAYER_BATCHNORM2D && (r->type == QAT_LAYER_RELU || r->type == QAT_LAYER_CLAMP ||
                                                   r->type == QAT_LAYER_HARDSWISH));
    if (!ok) return 0;
    for (int j = i + 2; j < m->n; j++)
        for (int k = 0; k < m->layers[j].n_inputs; k++)
            if (m->layers[j].inputs[k] == i) return 0;
    return 1;
}

/* The float model's graph walker: every layer's output (fuse 0), or with
 * fuse only those the model's output depends on as separate tensors (a
 * fused BN's or add's slot holds the ReLU's output). Its quantized
 * counterpart, qat_qmodel_forward_all (quant/forward.c), walks the same
 * layers grouped into quantization units (quant/internal.h says why both
 * exist). */
static qat_tensor **forward(qat_ctx *ctx, qat_model *m, qat_tensor *x, int fuse)
{
    if (!x) return NULL;
    if (m->status) return qat_error_null(m->status, "model: building it failed earlier (%s)", qat_status_str(m->status));
    const qat_layer *in = &m->layers[0];
    if (x->ndim != 4 || x->shape[1] != in->out_shape[0] || x->shape[2] != in->out_shape[1] ||
        x->shape[3] != in->out_shape[2]) {
        char s[64];
        return qat_error_null(QAT_ERR_SHAPE, "model: input %s, expected [N,%d,%d,%d]", qat_shape_str(x, s, sizeof s),
                              in->out_shape[0], in->out_shape[1], in->out_shape[2]);
    }
    qat_tensor **out = qat_arena_alloc(ctx, (size_t)m->n * sizeof *out);
    if (!out) return NULL;
    out[0] = x;
    for (int i = 1; i < m->n; i++) {
        qat_layer *l = &m->layers[i];
        qat_tensor *ins[2] = {out[l->inputs[0]], l->n_inputs > 1 ? out[l->inputs[1]] : NULL};
        if (fuse && relu_pair(m, i)) {
            if (l->type == QAT_LAYER_ADD) {
                out[i] = out[i + 1] = qat_add_relu(ctx, ins[0], ins[1]);
            } else {
                const qat_layer *a = &m->layers[i + 1];
                if (qat_ctx_training(ctx)) l->num_batches_tracked++;
                if (a->type == QAT_LAYER_RELU)
                    out[i] = qat_batchnorm2d_relu(ctx, ins[0], l->weight, l->bias, l->running_mean, l->running_var,
                                                  l->bn_momentum, l->bn_eps);
                else if (a->type == QAT_LAYER_CLAMP)
                    out[i] = qat_batchnorm2d_clamp(ctx, ins[0], l->weight, l->bias, l->running_mean, l->running_var,
                                                   l->bn_momentum, l->bn_eps, a->clamp_lo, a->clamp_hi,
                                                   a->clamp_hi_c ? a->clamp_hi_c->data : NULL);
                else
                    out[i] = qat_batchnorm2d_hardswish(ctx, ins[0], l->weight, l->bias, l->running_mean,
                                                       l->running_var, l->bn_momentum, l->bn_eps);
                out[i + 1] = out[i];
            }
            if (!out[i]) return NULL;
            i++;
            continue;
        }
        out[i] = qat_layer_forward(ctx, l, ins);
        if (!out[i]) return NULL;
    }
    return out;
}

qat_tensor **qat_model_forward_all(qat_ctx *ctx, qat_model *m, qat_tensor *x) { return forward(ctx, m, x, 0); }

qat_tensor *qat_model_forward(qat_ctx *ctx, qat_model *m, qat_tensor *x)
{
    qat_tensor **all = forward(ctx, m, x, 1);
    return all ? all[m->n - 1] : NULL;
}

int qat_model_set_input_norm(qat_model *m, float mean, float std)
{
    if (!m) return qat_error(QAT_ERR_ARG, "qat_model_set_input_norm: model is NULL");
    if (!(std > 0) || !isfinite(mean) || !isfinite(std))
        return qat_error(QAT_ERR_ARG, "qat_model_set_input_norm: mean %g, std %g (std must be > 0, both finite)",
                         (double)mean, (double)std);
    m->has_norm = 1;
    m->mean = mean;
    m->std = std;
    return QAT_OK;
}

int qat_model_input_norm(const qat_model *m, float *mean, float *std)
{
    if (!m || !m->has_norm) return 0;
    if (mean) *mean = m->mean;
    if (std) *std = m->std;
    return 1;
}
