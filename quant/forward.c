/* quant/forward.c: the fake-quant forward of a qmodel (training,
 * calibration, and evaluation with the float32 graph), BN folding, and
 * calibration passes. Evaluation on the integer grid is quant/grid.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"


static qat_tensor *const_vec(qat_ctx *ctx, int n)
{
    return qat_new(ctx, 1, &n);
}

/* gamma / sigma_running of a unit's BN, on the tape. */
static qat_tensor *bn_factor(qat_ctx *ctx, const qat_layer *bn)
{
    int C = bn->out_ch;
    qat_tensor *invstd = const_vec(ctx, C);
    if (!invstd) return NULL;
    for (int c = 0; c < C; c++) invstd->data[c] = 1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps);
    return qat_channel_mul(ctx, bn->weight, invstd, 0, 0);
}

/* b_fold = beta + sf * (b - mean) */
static qat_tensor *fold_bias(qat_ctx *ctx, const qat_layer *l, const qat_layer *bn, qat_tensor *sf)
{
    int C = l->out_ch;
    qat_tensor *t = const_vec(ctx, C);
    if (!t || !sf) return NULL;
    for (int c = 0; c < C; c++) t->data[c] = -bn->running_mean->data[c];
    if (l->bias) t = qat_add(ctx, l->bias, t);
    return qat_add(ctx, bn->bias, qat_mul(ctx, sf, t));
}

int qat_qunit_fold(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, qat_tensor **w, qat_tensor **b)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    if (un->bn < 0) {
        *w = l->weight;
        *b = l->bias;
        return QAT_OK;
    }
    const qat_layer *bn = qat_model_layer_c(qm->m, un->bn);
    qat_tensor *sf = bn_factor(ctx, bn);
    *w = qat_channel_mul(ctx, l->weight, sf, 0, 0);
    *b = fold_bias(ctx, l, bn, sf);
    return (*w && *b) ? QAT_OK : QAT_ERR_NOMEM;
}

float qat_qunit_input_scale(qat_qmodel *qm, const qat_qunit *un)
{
    if (un->in_unit[0] < 0) return 0;
    const qat_qunit *iu = &qm->units[un->in_unit[0]];
    const qat_quantizer *iq = qat_qunit_actq(qm, iu);
    if (iq->float_format) return 0; /* fp16 / bf16: no grid */
    return (iu->act.fake_quant && iq->initialized) ? qat_quantizer_scales(iq)[0] : 0;
}

int qat_qunit_input_grid(qat_qmodel *qm, const qat_qunit *un, int k, float *s, int32_t *z)
{
    if (k < 0 || k > 1 || un->in_unit[k] < 0) return 0;
    const qat_qunit *iu = &qm->units[un->in_unit[k]];
    const qat_quantizer *iq = qat_qunit_actq(qm, iu);
    if (iq->float_format || !iu->cfg.quantize || !iu->act.fake_quant || !iq->initialized || iq->n != 1) return 0;
    *s = qat_quantizer_scales(iq)[0];
    qat_quantizer_zero_points(iq, z);
    return *s > 0;
}

void qat_qunit_act_bounds(qat_qmodel *qm, const qat_qunit *un, float s, int32_t z, int C, int32_t *lo, int32_t *hi_c)
{
    const qat_quantizer *q = qat_qunit_actq(qm, un);
    const qat_layer *a = un->relu >= 0 ? qat_model_layer_c(qm->m, un->relu) : NULL;
    float inv = 1.0f / s;
    *lo = q->qmin;
    for (int c = 0; c < C; c++) hi_c[c] = q->qmax;
    if (!a) return;
    if (a->type == QAT_LAYER_RELU) {
        *lo = q->qmin < z ? z : q->qmin;
        return;
    }
    /* a clamp: the index fake-quant gives each bound (rounding is
     * monotone, so clamping the index equals rounding the clamped value) */
    *lo = qat_quantize_val(a->clamp_lo, inv, z, q->qmin, q->qmax);
    for (int c = 0; c < C; c++)
        hi_c[c] = qat_quantize_val(a->clamp_hi_c ? a->clamp_hi_c->data[c] : a->clamp_hi, inv, z, q->qmin, q->qmax);
}

/* The weight scale of each of the C output channels, as the bias grid
 * needs it: a per-tensor weight quantizer has one scale for all of them
 * (export does the same). NULL if out of memory. */
const float *qat_channel_weight_scales(qat_ctx *ctx, const qat_quantizer *wq, int C)
{
    const float *s = qat_quantizer_scales(wq);
    if (wq->n == C) return s;
    float *e = qat_arena_alloc(ctx, (size_t)C * sizeof *e);
    if (e)
        for (int c = 0; c < C; c++) e[c] = s[0];
    return e;
}

/* conv/linear (+BN) (+ReLU) with fake-quant; sets out[] of every layer
 * of the unit. */
static qat_tensor *conv_unit(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    qat_tensor *x = out[l->inputs[0]], *y;
    int is_conv = l->type == QAT_LAYER_CONV2D;
    qat_quantizer *wq = &un->weight;
    float s_in = qat_qunit_input_scale(qm, un); /* the input's grid, for the bias */
#define CONV(w, b)                                                                                              \
    (!is_conv ? qat_linear(ctx, x, w, b)                                                                        \
     : l->groups > 1 ? qat_conv2d_grouped(ctx, x, w, b, l->stride, l->pad, l->groups)                          \
                     : qat_conv2d(ctx, x, w, b, l->stride, l->pad))
    if (un->bn >= 0 && qat_ctx_training(ctx) && !un->bn_frozen) {
        /* PyTorch's _forward_approximate: batch statistics correct the
         * output while BN trains */
        qat_layer *bn = qat_model_layer(qm->m, un->bn);
        qat_tensor *sf = bn_factor(ctx, bn);
        qat_tensor *w = qat_fq(ctx, qat_channel_mul(ctx, l->weight, sf, 0, 0), wq, 1);
        y = CONV(w, NULL);
        y = qat_channel_mul(ctx, y, sf, 1, 1);
        if (l->bias) y = qat_bias_add(ctx, y, l->bias);
        out[un->head] = y;
        if (y) bn->num_batches_tracked++;
        y = qat_batchnorm2d(ctx, y, bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->bn_momentum,
                            bn->bn_eps);
        out[un->bn] = y;
    } else {
        /* the folded form: exactly what the int8 export computes */
        qat_tensor *wf, *bf;
        if (qat_qunit_fold(ctx, qm, un, &wf, &bf)) return NULL;
        qat_tensor *w = qat_fq(ctx, wf, wq, 1);
        if (bf && w && wq->fake_quant && wq->float_format) {
            bf = qat_fq_special(ctx, bf, wq, 1, 1, bf->numel, 0); /* the bias in the format too */
        } else if (bf && w && wq->fake_quant && s_in > 0) {
            const float *sw = qat_channel_weight_scales(ctx, wq, l->out_ch);
            bf = sw ? qat_fq_bias(ctx, bf, s_in, sw) : NULL;
        }
        y = out[un->head] = CONV(w, bf);
        if (un->bn >= 0) out[un->bn] = y;
    }
#undef CONV
    return y;
}

/* The fake-quant of a member of a shared concat group (QAT_CONCAT_SHARED)
 * with the group's quantizer, under the member's own fake-quant switch;
 * x itself while the group's quantizer has not observed yet (the first
 * observing batch: the concat observes after its members ran). */
static qat_tensor *fq_shared(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, qat_tensor *x, int observe)
{
    qat_quantizer q = *qat_qunit_actq(qm, un);
    q.fake_quant = un->act.fake_quant;
    if (!q.initialized && observe) return x;
    return qat_fq(ctx, x, &q, 0);
}

/* A shared group's concat observes every member's unquantized output,
 * once per forward, as one batch (flattened together). */
static int observe_group(qat_ctx *ctx, qat_qmodel *qm, int root, qat_tensor **pre)
{
    size_t n = 0;
    for (int u = 0; u < root; u++)
        if (qm->units[u].act_share == root && pre[u]) n += pre[u]->numel;
    if (!n) return QAT_OK;
    int len = (int)n;
    qat_tensor *all = qat_new(ctx, 1, &len);
    if (!all) return QAT_ERR_NOMEM;
    n = 0;
    for (int u = 0; u < root; u++)
        if (qm->units[u].act_share == root && pre[u]) {
            memcpy(all->data + n, pre[u]->data, pre[u]->numel * sizeof(float));
            n += pre[u]->numel;
        }
    return qat_quantizer_observe(ctx, &qm->units[root].act, all);
}

/* The unit's output from its pre-activation y: the fused ReLU or clamp,
 * then its activation quantizer (its own, or the shared one). */
static qat_tensor *unit_output(qat_ctx *ctx, qat_qmodel *qm, int u, qat_tensor *y, qat_tensor **out, int observe,
                               qat_tensor ***pre)
{
    qat_qunit *un = &qm->units[u];
    const qat_layer *a = un->relu >= 0 ? qat_model_layer_c(qm->m, un->relu) : NULL;
    int member = un->act_share >= 0;
    int root = !member && un->kind == QAT_UNIT_CONCAT && qm->cfg.concat_mode == QAT_CONCAT_SHARED;
    if (a && a->type == QAT_LAYER_RELU && !member) {
        /* ReLU and the activation quantizer in one pass (the ReLU's own
         * output is then the quantized one) */
        qat_tensor *r = NULL;
        y = qat_fq_relu(ctx, y, &un->act, observe, &r);
        out[un->relu] = r;
        return y;
    }
    if (a) {
        y = a->type == QAT_LAYER_RELU ? qat_relu(ctx, y)
            : a->clamp_hi_c          ? qat_clamp_channels(ctx, y, a->clamp_lo, a->clamp_hi_c->data)
                                     : qat_clamp(ctx, y, a->clamp_lo, a->clamp_hi);
        if (!y) return NULL;
        out[un->relu] = y;
    }
    if (member) {
        if (observe) {
            if (!*pre) {
                *pre = qat_arena_alloc(ctx, (size_t)qm->n_units * sizeof **pre);
                if (!*pre) return NULL;
                memset(*pre, 0, (size_t)qm->n_units * sizeof **pre);
            }
            (*pre)[u] = y;
        }
        return fq_shared(ctx, qm, un, y, observe);
    }
    if (root && observe && *pre) {
        int rc = observe_group(ctx, qm, u, *pre);
        if (rc) {
            qat_ctx_fail(ctx, rc);
            return NULL;
        }
    }
    return qat_fq(ctx, y, &un->act, observe && !root);
}

qat_tensor **qat_qmodel_forward_all(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    qat_tensor **pre = NULL; /* shared concat groups: the members' outputs before quantization */
    if (!x) return NULL;
    qat_model *m = qm->m;
    int nl = qat_model_num_layers(m);
    const qat_layer *in = qat_model_layer_c(m, 0);
    if (x->ndim != 4 || x->shape[1] != in->out_shape[0] || x->shape[2] != in->out_shape[1] ||
        x->shape[3] != in->out_shape[2]) {
        char s[64];
        return qat_error_null(QAT_ERR_SHAPE, "qmodel: input %s, expected [N,%d,%d,%d]", qat_shape_str(x, s, sizeof s),
                              in->out_shape[0], in->out_shape[1], in->out_shape[2]);
    }
    int observe_act = qat_ctx_training(ctx) || qm->calibrating;
    qat_tensor **out = qat_arena_alloc(ctx, (size_t)nl * sizeof *out);
    if (!out) return NULL;
    memset(out, 0, (size_t)nl * sizeof *out);
    out[0] = x;
    for (int i = 0; i < nl; i++) {
        int u = qm->layer_owner[i];
        qat_layer *l = qat_model_layer(m, i);
        if (u < 0) { /* a float layer that keeps its input's grid */
            qat_tensor *ins[2] = {out[l->inputs[0]], l->n_inputs > 1 ? out[l->inputs[1]] : NULL};
            if (!(out[i] = qat_layer_forward(ctx, l, ins))) return NULL;
            continue;
        }
        qat_qunit *un = &qm->units[u];
        if (un->head != i) continue; /* computed with its unit */
        qat_tensor *y;
        if (un->cfg.quantize && un->kind != QAT_UNIT_INPUT) {
            int failed = 0;
            y = qat_qunit_forward_grid(ctx, qm, un, out, &failed);
            if (failed) return NULL;
            if (y) {
                out[un->last] = y;
                continue;
            }
        }
        if (!un->cfg.quantize) {
            for (int k = un->head; k <= un->last; k++) {
                if (qm->layer_owner[k] != u) continue;
                qat_layer *lk = qat_model_layer(m, k);
                qat_tensor *ins[2] = {out[lk->inputs[0]], lk->n_inputs > 1 ? out[lk->inputs[1]] : NULL};
                if (!(out[k] = qat_layer_forward(ctx, lk, ins))) return NULL;
            }
            continue;
        }
        switch (un->kind) {
        case QAT_UNIT_INPUT:
            y = x;
            break;
        case QAT_UNIT_CONV:
            y = conv_unit(ctx, qm, un, out);
            break;
        case QAT_UNIT_ADD:
            y = out[i] = qat_add(ctx, out[l->inputs[0]], out[l->inputs[1]]);
            break;
        default: { /* pools, act (hardswish, hardsigmoid, clamp), concat */
            qat_tensor *ins[2] = {out[l->inputs[0]], l->n_inputs > 1 ? out[l->inputs[1]] : NULL};
            y = out[i] = qat_layer_forward(ctx, l, ins);
            break;
        }
        }
        if (!y) return NULL;
        if (!(out[un->last] = unit_output(ctx, qm, u, y, out, observe_act, &pre))) return NULL;
    }
    qat_qmodel_sync_shared(qm);
    return out;
}

qat_tensor *qat_qmodel_forward(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, x);
    return all ? all[qat_model_num_layers(qm->m) - 1] : NULL;
}

int qat_qmodel_calibrate(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qm->calibrating = 1;
    qat_tensor *y = qat_qmodel_forward(ctx, qm, x);
    qm->calibrating = 0;
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    if (y) return QAT_OK;
    int st = qat_ctx_status(ctx); /* the step's first failure (out of memory, ...) */
    return st ? st : x ? QAT_ERR_STATE : QAT_ERR_ARG;
}
