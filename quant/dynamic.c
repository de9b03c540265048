/* quant/dynamic.c: dynamic quantization (qat/dynamic.h) on the library
 * side: the float-op graph of a float model (BN folded, ReLU fused,
 * linear / conv weights int8 per channel or binary16) and its evaluation.
 *
 * The evaluation here is written from docs/FORMAT-int8.md ("Float ops")
 * independently of the runtime's kernels (runtime/float_ops.c): plain
 * loops, the same sums in double in the same order, the same run-time
 * activation quantization and the same float32 epilogue, so `qat eval` of
 * a dynamic checkpoint and `qat run` of its export agree bit for bit;
 * tests/test_dynamic.c holds them to it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/half.h"
#include "quant/dynamic_graph.h"

qat_dynamic_opts qat_dynamic_opts_defaults(void)
{
    qat_dynamic_opts o = {QAT_DYN_W8, 0, 0};
    return o;
}

const char *qat_dynamic_weights_name(qat_dyn_weights w)
{
    return w == QAT_DYN_FP16 ? "fp16" : "w8";
}

int qat_dynamic_opts_parse(qat_dynamic_opts *o, const char *quant, const char *layers, const char *act)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_dynamic_opts_parse: opts is NULL");
    if (quant) {
        if (!strcmp(quant, "w8") || !strcmp(quant, "w8a8")) o->weights = QAT_DYN_W8;
        else if (!strcmp(quant, "fp16")) o->weights = QAT_DYN_FP16;
        else
            return qat_error(QAT_ERR_ARG, "dynamic quantization: --quant '%s': expected w8 (int8 weights per "
                                          "output channel) or fp16 (binary16 weights)", quant);
    }
    if (layers) {
        if (!strcmp(layers, "linear")) o->all_layers = 0;
        else if (!strcmp(layers, "all")) o->all_layers = 1;
        else return qat_error(QAT_ERR_ARG, "dynamic quantization: --dynamic-layers '%s': expected linear or all", layers);
    }
    if (act) {
        if (!strcmp(act, "tensor")) o->act_row = 0;
        else if (!strcmp(act, "row")) o->act_row = 1;
        else return qat_error(QAT_ERR_ARG, "dynamic quantization: --dynamic-act '%s': expected tensor or row", act);
    }
    return QAT_OK;
}

/* ---- the graph ---- */

qat_dynmodel *qat_dg_create(int n)
{
    qat_dynmodel *d = qat_calloc(1, sizeof *d);
    if (!d) return qat_error_null(QAT_ERR_NOMEM, "out of memory");
    d->ops = qat_calloc((size_t)(n > 0 ? n : 1), sizeof *d->ops);
    if (!d->ops) {
        free(d);
        return qat_error_null(QAT_ERR_NOMEM, "out of memory");
    }
    snprintf(d->arch, sizeof d->arch, "custom");
    return d;
}

void qat_dynmodel_free(qat_dynmodel *d)
{
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        dg_op *op = &d->ops[i];
        free(op->w);
        free(op->w16);
        free(op->w8);
        free(op->wscale);
        free(op->rowsum);
        free(op->bias);
    }
    free(d->ops);
    free(d);
}

int qat_dynmodel_num_classes(const qat_dynmodel *d)
{
    return d && d->n ? (int)d->ops[d->n - 1].out_size : 0;
}

int qat_dynmodel_num_ops(const qat_dynmodel *d)
{
    return d ? d->n : 0;
}

int qat_dg_quantize_weights(dg_op *op)
{
    const size_t k = (size_t)op->ic * op->kh * op->kw;
    op->w8 = qat_malloc((size_t)op->oc * k + 1);
    op->wscale = qat_malloc((size_t)op->oc * sizeof *op->wscale);
    if (!op->w8 || !op->wscale) return qat_error(QAT_ERR_NOMEM, "out of memory quantizing %s", op->name);
    for (int o = 0; o < op->oc; o++) {
        const float *w = op->w + (size_t)o * k;
        float amax = 0;
        for (size_t j = 0; j < k; j++) amax = fabsf(w[j]) > amax ? fabsf(w[j]) : amax;
        float s = amax / 127.0f; /* narrow symmetric: [-127, 127] */
        if (!(s > 0) || !isfinite(s)) s = 1.0f;
        op->wscale[o] = s;
        for (size_t j = 0; j < k; j++) {
            float q = nearbyintf(w[j] / s);
            op->w8[(size_t)o * k + j] = (int8_t)(q < -127 ? -127 : q > 127 ? 127 : q);
        }
    }
    free(op->w);
    op->w = NULL;
    op->wdt = DG_W_I8;
    return QAT_OK;
}

int qat_dg_half_weights(dg_op *op)
{
    const size_t n = (size_t)op->oc * op->ic * op->kh * op->kw;
    op->w16 = qat_malloc(n * sizeof *op->w16 + 1);
    if (!op->w16) return qat_error(QAT_ERR_NOMEM, "out of memory converting %s", op->name);
    for (size_t i = 0; i < n; i++) {
        op->w16[i] = qat_f16_from_float(op->w[i]); /* saturating (qat/half.h) */
        op->w[i] = qat_f16_to_float(op->w16[i]);
    }
    op->wdt = DG_W_F16;
    return QAT_OK;
}

int qat_dg_finish(qat_dynmodel *d)
{
    for (int i = 0; i < d->n; i++) {
        dg_op *op = &d->ops[i];
        size_t sz = 1;
        for (int k = 0; k < op->out_ndim; k++) sz *= (size_t)op->out_shape[k];
        op->out_size = sz;
        if (op->kind == DG_INPUT) continue;
        for (int k = 0; k < op->n_in; k++)
            if (op->in[k] < 0 || op->in[k] >= i)
                return qat_error(QAT_ERR_ARG, "dynamic graph: op %d (%s): input %d is not an earlier op", i, op->name,
                                 op->in[k]);
        const dg_op *in = &d->ops[op->in[0]];
        op->in_c = in->out_shape[0];
        op->in_h = in->out_ndim == 3 ? in->out_shape[1] : 1;
        op->in_w = in->out_ndim == 3 ? in->out_shape[2] : 1;
        if (op->kind == DG_LINEAR) {
            op->ic = (int)in->out_size;
            op->kh = op->kw = 1;
            op->oc = op->out_shape[0];
        }
        if (op->kind == DG_CONV2D && op->ic != op->in_c)
            return qat_error(QAT_ERR_ARG, "dynamic graph: op %d (%s): %d input channels, weight has %d", i, op->name,
                             op->in_c, op->ic);
        if ((op->kind == DG_LINEAR || op->kind == DG_CONV2D) && op->wdt == DG_W_I8 && !op->rowsum) {
            const size_t k = (size_t)op->ic * op->kh * op->kw;
            op->rowsum = qat_calloc((size_t)op->oc, sizeof *op->rowsum);
            if (!op->rowsum) return qat_error(QAT_ERR_NOMEM, "out of memory");
            for (int o = 0; o < op->oc; o++)
                for (size_t j = 0; j < k; j++) op->rowsum[o] += op->w8[(size_t)o * k + j];
        }
    }
    return QAT_OK;
}

/* the only layer reading layer i, or -1 (none, several, or i is the output) */
static int sole_consumer(const qat_model *m, int i)
{
    int n = qat_model_num_layers(m), c = -1;
    if (i == n - 1) return -1;
    for (int j = i + 1; j < n; j++) {
        const qat_layer *l = qat_model_layer_c(m, j);
        for (int k = 0; k < l->n_inputs; k++)
            if (l->inputs[k] == i) {
                if (c >= 0) return -1;
                c = j;
            }
    }
    return c;
}

void qat_dg_set_shape(dg_op *op, const qat_layer *l)
{
    op->out_ndim = l->out_ndim;
    for (int k = 0; k < 3; k++) op->out_shape[k] = k < l->out_ndim ? l->out_shape[k] : 0;
}

/* conv / linear weights, BN folded (sf = gamma / sqrt(var + eps) in double) */
static int take_weights(dg_op *op, const qat_layer *l, const qat_layer *bn)
{
    const int oc = l->out_ch;
    const size_t k = l->weight->numel / (size_t)oc;
    op->w = qat_malloc((size_t)oc * k * sizeof *op->w);
    op->bias = qat_calloc((size_t)oc, sizeof *op->bias);
    if (!op->w || !op->bias) return qat_error(QAT_ERR_NOMEM, "out of memory");
    for (int o = 0; o < oc; o++) {
        const double b = l->bias ? l->bias->data[o] : 0.0;
        double sf = 1.0, shift = b;
        if (bn) {
            sf = bn->weight->data[o] / sqrt((double)bn->running_var->data[o] + bn->bn_eps);
            shift = bn->bias->data[o] + sf * (b - bn->running_mean->data[o]);
        }
        for (size_t j = 0; j < k; j++) op->w[(size_t)o * k + j] = (float)(l->weight->data[(size_t)o * k + j] * sf);
        op->bias[o] = (float)shift;
    }
    return QAT_OK;
}

qat_dynmodel *qat_dynmodel_build(const qat_model *m, const qat_dynamic_opts *o)
{
    qat_dynmodel *d = NULL;
    qat_dg_build(m, o, &d);
    return d;
}

int qat_dg_build(const qat_model *m, const qat_dynamic_opts *o, qat_dynmodel **out)
{
    *out = NULL;
    if (!m) return qat_error(QAT_ERR_ARG, "qat_dynmodel_build: model is NULL");
    qat_dynamic_opts dflt = qat_dynamic_opts_defaults();
    if (!o) o = &dflt;
    float mean, std;
    if (!qat_model_input_norm(m, &mean, &std))
        return qat_error(QAT_ERR_ARG, "dynamic quantization: the model stores no input normalisation "
                                      "(qat_model_set_input_norm)");
    const int nl = qat_model_num_layers(m);
    qat_dynmodel *d = qat_dg_create(nl);
    int *map = qat_calloc((size_t)nl, sizeof *map);      /* layer -> the op giving its value */
    char *absorb = qat_calloc((size_t)nl, 1);            /* layer folded / fused into an earlier op */
    int st = d && map && absorb ? QAT_OK : qat_error(QAT_ERR_NOMEM, "out of memory");
    if (!st) snprintf(d->arch, sizeof d->arch, "%s", qat_model_arch(m));
    for (int i = 0; i < nl && !st; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        if (absorb[i]) continue; /* a BN folded into its conv, a ReLU fused into its layer */
        if (l->type != QAT_LAYER_INPUT && l->type != QAT_LAYER_FLATTEN && l->type != QAT_LAYER_RELU &&
            l->type != QAT_LAYER_BATCHNORM2D && l->type != QAT_LAYER_CONV2D && l->type != QAT_LAYER_LINEAR &&
            l->type != QAT_LAYER_MAXPOOL2D && l->type != QAT_LAYER_AVGPOOL2D &&
            l->type != QAT_LAYER_GLOBAL_AVGPOOL && l->type != QAT_LAYER_ADD) {
            st = qat_error(QAT_ERR_UNSUPPORTED, "dynamic quantization: layer %s (%s) is not supported", l->name,
                           qat_layer_type_name(l->type));
            break;
        }
        if (l->type == QAT_LAYER_CONV2D && l->groups > 1) {
            st = qat_error(QAT_ERR_UNSUPPORTED, "dynamic quantization: conv2d %s has %d groups (only dense convs)", l->name,
                           l->groups);
            break;
        }
        if (l->type == QAT_LAYER_BATCHNORM2D) { /* folded into its conv, which set map[i] */
            st = qat_error(QAT_ERR_UNSUPPORTED,
                           "dynamic quantization: %s: a batchnorm2d that is not the only reader of a conv2d "
                           "cannot be folded", l->name);
            break;
        }
        dg_op *op = &d->ops[d->n++]; /* counted now: freed on failure */
        snprintf(op->name, sizeof op->name, "%s", l->name);
        op->n_in = l->n_inputs;
        for (int k = 0; k < l->n_inputs; k++) op->in[k] = map[l->inputs[k]];
        qat_dg_set_shape(op, l);
        int last = i; /* the last layer this op stands for */
        switch (l->type) {
        case QAT_LAYER_INPUT:
            op->kind = DG_INPUT;
            op->mean = mean;
            op->std = std;
            break;
        case QAT_LAYER_CONV2D:
        case QAT_LAYER_LINEAR: {
            const int conv = l->type == QAT_LAYER_CONV2D;
            op->kind = conv ? DG_CONV2D : DG_LINEAR;
            const qat_layer *bn = NULL;
            int c = sole_consumer(m, i);
            if (conv && c >= 0 && qat_model_layer_c(m, c)->type == QAT_LAYER_BATCHNORM2D) {
                bn = qat_model_layer_c(m, c);
                last = c;
                qat_dg_set_shape(op, bn);
            }
            op->oc = l->out_ch;
            op->ic = conv ? l->in_ch : (int)(l->weight->numel / (size_t)l->out_ch);
            op->kh = op->kw = conv ? l->kernel : 1;
            op->stride = conv ? l->stride : 1;
            op->pad = conv ? l->pad : 0;
            if ((st = take_weights(op, l, bn))) break;
            if (!conv || o->all_layers)
                st = o->weights == QAT_DYN_W8 ? qat_dg_quantize_weights(op) : qat_dg_half_weights(op);
            op->act_row = o->act_row;
            break;
        }
        case QAT_LAYER_ADD: op->kind = DG_ADD; break;
        case QAT_LAYER_RELU: op->kind = DG_RELU; break;
        case QAT_LAYER_FLATTEN: op->kind = DG_FLATTEN; break;
        case QAT_LAYER_GLOBAL_AVGPOOL: op->kind = DG_GLOBAL_AVGPOOL; break;
        case QAT_LAYER_MAXPOOL2D:
        case QAT_LAYER_AVGPOOL2D:
            op->kind = l->type == QAT_LAYER_MAXPOOL2D ? DG_MAXPOOL2D : DG_AVGPOOL2D;
            op->kernel = l->kernel;
            op->stride = l->stride;
            break;
        default: break;
        }
        if (st) break;
        /* a ReLU that alone reads a conv / linear / add becomes its fused ReLU */
        if (op->kind == DG_CONV2D || op->kind == DG_LINEAR || op->kind == DG_ADD) {
            int c = sole_consumer(m, last);
            if (c >= 0 && qat_model_layer_c(m, c)->type == QAT_LAYER_RELU) {
                op->relu = 1;
                absorb[c] = 1;
                map[c] = d->n - 1;
            }
        }
        if (last != i) absorb[last] = 1;
        map[i] = map[last] = d->n - 1;
    }
    free(map);
    free(absorb);
    if (!st) st = qat_dg_finish(d);
    if (st) {
        qat_dynmodel_free(d);
        return st;
    }
    *out = d;
    return QAT_OK;
}

/* ---- evaluation ---- */

static float rnd(const dg_op *op, double v)
{
    return op->f16 ? qat_f16_round(v) : op->bf16 ? qat_bf16_round(v) : (float)v;
}

static float relu0(float y)
{
    return y > 0 ? y : 0.0f;
}

/* run-time activation quantization: scale and zero point of [lo, hi] */
static void act_params(const float *x, size_t n, float *scale, int32_t *zp)
{
    float lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    float s = (float)(((double)hi - (double)lo) / 255.0);
    if (!(s > 0) || isinf(1.0f / s)) s = 1.0f;
    double z = -128.0 - nearbyint((double)lo / (double)s);
    *scale = s;
    *zp = (int32_t)(z < -128 ? -128 : z > 127 ? 127 : z);
}

static int32_t act_q(float x, float inv, int32_t zp)
{
    float t = x * inv;
    if (t != t) t = 0;
    t = t < -512.0f ? -512.0f : t > 512.0f ? 512.0f : t;
    int32_t v = (int32_t)nearbyintf(t) + zp;
    return v < -128 ? -128 : v > 127 ? 127 : v;
}

/* conv / linear of one sample (linear: H = W = 1, K = 1) */
static void conv_sample(const dg_op *op, const float *x, const int32_t *xq, float s, int32_t z, float *y)
{
    const int IC = op->ic, H = op->in_h, W = op->in_w, KH = op->kh, KW = op->kw, S = op->stride, P = op->pad;
    const int OH = op->out_ndim == 3 ? op->out_shape[1] : 1, OW = op->out_ndim == 3 ? op->out_shape[2] : 1;
    const size_t K = (size_t)IC * KH * KW;
    for (int oc = 0; oc < op->oc; oc++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double acc = 0.0;
                int32_t iacc = 0;
                for (int ic = 0; ic < IC; ic++)
                    for (int kh = 0; kh < KH; kh++) {
                        const int ih = oh * S - P + kh;
                        if (ih < 0 || ih >= H) continue;
                        for (int kw = 0; kw < KW; kw++) {
                            const int iw = ow * S - P + kw;
                            if (iw < 0 || iw >= W) continue;
                            const size_t wi = (size_t)oc * K + ((size_t)ic * KH + kh) * KW + kw;
                            const size_t xi = ((size_t)ic * H + ih) * W + iw;
                            if (op->wdt == DG_W_I8) iacc += (int32_t)op->w8[wi] * (xq[xi] - z);
                            else acc += (double)x[xi] * (double)op->w[wi];
                        }
                    }
                float v;
                if (op->wdt == DG_W_I8) {
                    const float ms = s * op->wscale[oc];
                    const float t = (float)iacc * ms;
                    v = t + op->bias[oc];
                } else {
                    v = rnd(op, acc + (double)op->bias[oc]);
                }
                y[((size_t)oc * OH + oh) * OW + ow] = op->relu ? relu0(v) : v;
            }
}

static void pool_sample(const dg_op *op, const float *x, float *y)
{
    const int C = op->in_c, H = op->in_h, W = op->in_w;
    if (op->kind == DG_GLOBAL_AVGPOOL) {
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) s += x[((size_t)c * H + h) * W + w];
            y[c] = rnd(op, s / (double)(H * W));
        }
        return;
    }
    const int K = op->kernel, S = op->stride, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double s = 0;
                float mx = -INFINITY;
                for (int i = 0; i < K; i++)
                    for (int j = 0; j < K; j++) {
                        const float v = x[((size_t)c * H + oh * S + i) * W + ow * S + j];
                        s += v;
                        if (v > mx || (i == 0 && j == 0)) mx = v;
                    }
                y[((size_t)c * OH + oh) * OW + ow] = op->kind == DG_MAXPOOL2D ? mx : rnd(op, s / (double)(K * K));
            }
}

int qat_dynmodel_forward_u8(const qat_dynmodel *d, const uint8_t *pixels, int n, float *logits)
{
    if (!d || !pixels || !logits || n < 1)
        return qat_error(QAT_ERR_ARG, "qat_dynmodel_forward_u8: NULL argument or n = %d < 1", n);
    float **out = qat_calloc((size_t)d->n, sizeof *out);
    int st = out ? QAT_OK : qat_error(QAT_ERR_NOMEM, "out of memory");
    int32_t *xq = NULL;
    float *sc = NULL;
    int32_t *zp = NULL;
    size_t maxin = 1;
    for (int i = 0; i < d->n; i++)
        if (d->ops[i].out_size > maxin) maxin = d->ops[i].out_size;
    if (!st) {
        xq = qat_malloc((size_t)n * maxin * sizeof *xq);
        sc = qat_malloc((size_t)n * sizeof *sc);
        zp = qat_malloc((size_t)n * sizeof *zp);
        if (!xq || !sc || !zp) st = qat_error(QAT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < d->n && !st; i++) {
        const dg_op *op = &d->ops[i];
        if (op->kind == DG_FLATTEN) {
            out[i] = out[op->in[0]];
            continue;
        }
        float *y = out[i] = qat_malloc((size_t)n * op->out_size * sizeof *y + 1);
        if (!y) {
            st = qat_error(QAT_ERR_NOMEM, "out of memory");
            break;
        }
        const size_t osz = op->out_size, isz = i ? d->ops[op->in[0]].out_size : osz;
        const float *x = i ? out[op->in[0]] : NULL;
        switch (op->kind) {
        case DG_INPUT:
            for (size_t e = 0; e < (size_t)n * osz; e++) {
                const float v = ((float)pixels[e] / 255.0f - op->mean) / op->std;
                y[e] = op->f16 || op->bf16 ? rnd(op, v) : v;
            }
            break;
        case DG_CONV2D:
        case DG_LINEAR:
            if (op->wdt == DG_W_I8) {
                /* activations: one range for the call, or one per sample */
                if (!op->act_row) act_params(x, (size_t)n * isz, &sc[0], &zp[0]);
                for (int b = 0; b < n; b++) {
                    if (op->act_row) act_params(x + (size_t)b * isz, isz, &sc[b], &zp[b]);
                    const int g = op->act_row ? b : 0;
                    const float inv = 1.0f / sc[g];
                    for (size_t e = 0; e < isz; e++) xq[(size_t)b * isz + e] = act_q(x[(size_t)b * isz + e], inv, zp[g]);
                }
            }
#pragma omp parallel for schedule(dynamic, 1)
            for (int b = 0; b < n; b++) {
                const int g = op->act_row ? b : 0;
                conv_sample(op, x + (size_t)b * isz, xq + (size_t)b * isz, sc[g], zp[g], y + (size_t)b * osz);
            }
            break;
        case DG_ADD: {
            const float *x2 = out[op->in[1]];
            for (size_t e = 0; e < (size_t)n * osz; e++) {
                float v = op->f16 || op->bf16 ? rnd(op, (double)x[e] + (double)x2[e]) : x[e] + x2[e];
                y[e] = op->relu ? relu0(v) : v;
            }
            break;
        }
        case DG_RELU:
            for (size_t e = 0; e < (size_t)n * osz; e++) y[e] = relu0(x[e]);
            break;
        case DG_GLOBAL_AVGPOOL:
        case DG_AVGPOOL2D:
        case DG_MAXPOOL2D:
            for (int b = 0; b < n; b++) pool_sample(op, x + (size_t)b * isz, y + (size_t)b * osz);
            break;
        default: break;
        }
    }
    if (!st) memcpy(logits, out[d->n - 1], (size_t)n * d->ops[d->n - 1].out_size * sizeof *logits);
    for (int i = 0; out && i < d->n; i++)
        if (d->ops[i].kind != DG_FLATTEN) free(out[i]);
    free(out);
    free(xq);
    free(sc);
    free(zp);
    return st;
}
