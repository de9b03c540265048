/* quant/convert.c: a qmodel to its int8 graph (docs/FORMAT-int8.md) in
 * memory: integer weights, the int32 bias grid, requantization multipliers
 * and shifts, the input LUT, and the overflow checks. io/export.c writes
 * the graph; the integer-grid evaluation (quant/grid.c) shares the conv
 * arithmetic (qat_conv_integer_form). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/convert.h"
#include "quant/internal.h"
#include "qat/format_int8.h"
#include "runtime/rounding.h"

int qat_conv_integer_form(const qat_quantizer *wq, const float *wf, const float *bf, int C, size_t per, float s_in,
                          const float *sw, float s_out, int8_t *w_q, int32_t *b_q, float *b_scale, double *mult)
{
    int special = qat_quantizer_is_special(wq);
    if (w_q && special) {
        int rc = qat_quantizer_weight_ints(wq, wf, (size_t)C * per, w_q);
        if (rc) return rc;
    }
    for (int c = 0; c < C; c++) {
        float inv = 1.0f / sw[c];
        if (w_q && !special)
            for (size_t k = 0; k < per; k++)
                w_q[(size_t)c * per + k] =
                    (int8_t)qat_quantize_val(wf[(size_t)c * per + k], inv, 0, wq->qmin, wq->qmax);
        float bs = qat_bias_scale(s_in, sw[c]);
        if (b_scale) b_scale[c] = bs;
        if (b_q) b_q[c] = bf ? qat_quantize_bias_val(bf[c], bs) : 0;
        if (mult) mult[c] = qat_requant_real_multiplier(s_in, sw[c], s_out);
    }
    return QAT_OK;
}

void qat_i8graph_free(qat_i8graph *g)
{
    for (int i = 0; g->ops && i < g->cap; i++) {
        free(g->ops[i].weight);
        free(g->ops[i].bias);
        free(g->ops[i].mult);
        free(g->ops[i].shift);
        free(g->ops[i].wscale);
        free(g->ops[i].codebook);
        free(g->ops[i].act_max_channel);
    }
    free(g->ops);
    g->ops = NULL;
    g->n = g->cap = 0;
}

static int multiplier(double M, int32_t *m, int32_t *s, const char *unit)
{
    int sh;
    if (qat_quantize_multiplier(M, m, &sh))
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': multiplier %g cannot be represented", unit, M);
    *s = sh;
    return QAT_OK;
}

static void set_out(qat_i8op *o, const qat_layer *l, qat_quantizer *q)
{
    o->out_ndim = l->out_ndim;
    memcpy(o->out_shape, l->out_shape, sizeof o->out_shape);
    o->out_scale = qat_quantizer_scales(q)[0];
    int32_t zp;
    qat_quantizer_zero_points(q, &zp);
    o->out_zp = zp;
}

static int check_act(qat_qmodel *qm, const qat_qunit *un)
{
    const qat_quantizer *q = qat_qunit_actq(qm, un);
    if (!un->cfg.quantize)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' is float (an override): int8 export needs every unit quantized",
                         un->name);
    if (!q->initialized || !un->act.fake_quant)
        return qat_error(QAT_ERR_STATE, "export: unit '%s' has no activation parameters (calibrate or train first)",
                         un->name);
    if (q->qmin < -128 || q->qmax > 127)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': activations in [%d, %d] do not fit int8 (use signed, <= 8 bits)",
                         un->name, q->qmin, q->qmax);
    return QAT_OK;
}

/* the conv/linear op of a unit */
static int conv_op(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_i8op *o, const qat_i8op *in)
{
    qat_model *m = qat_qmodel_float(qm);
    const qat_layer *l = qat_model_layer_c(m, un->head);
    const qat_quantizer *wq = &un->weight;
    if (!wq->initialized || !wq->fake_quant)
        return qat_error(QAT_ERR_STATE, "export: unit '%s' has no weight parameters", un->name);
    if (wq->float_format)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' is %s: its float ops are not in this build's int8 export yet",
                         un->name, wq->float_format == QAT_FLOAT_FP16 ? "fp16" : "bf16");
    if (wq->qmin < -128 || wq->qmax > 127 || !wq->scheme.symmetric || !wq->scheme.is_signed)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': weights must be symmetric signed <= 8 bits", un->name);
    float s_in = qat_qunit_input_scale(qm, un);
    if (!(s_in > 0)) return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' has no quantized input", un->name);
    qat_tensor *wf, *bf;
    if (qat_qunit_fold(ctx, qm, un, &wf, &bf)) return QAT_ERR_NOMEM;
    int OC = l->out_ch;
    size_t per = wf->numel / (size_t)OC;
    o->type = l->type == QAT_LAYER_CONV2D ? "conv2d" : "linear";
    o->oc = OC;
    o->ic = l->in_ch;
    o->groups = l->type == QAT_LAYER_CONV2D && l->groups > 1 ? l->groups : 1;
    o->k = l->kernel;
    o->stride = l->stride;
    o->pad = l->pad;
    o->in_zp = in->out_zp;
    o->wbits = wq->scheme.bits;
    o->wenc = QAT_I8W_DENSE;
    o->weight = qat_malloc(wf->numel);
    o->bias = qat_calloc((size_t)OC, sizeof(int32_t));
    o->mult = qat_malloc((size_t)OC * sizeof(int32_t));
    o->shift = qat_malloc((size_t)OC * sizeof(int32_t));
    o->wscale = qat_malloc((size_t)OC * sizeof(float));
    if (!o->weight || !o->bias || !o->mult || !o->shift || !o->wscale)
        return qat_error(QAT_ERR_NOMEM, "export: out of memory");
    const float *s_all = qat_quantizer_scales(wq);
    int per_channel = wq->n > 1 || wq->scheme.per_channel;
    float *sw = qat_arena_alloc(ctx, (size_t)OC * sizeof *sw);
    double *M = qat_arena_alloc(ctx, (size_t)OC * sizeof *M);
    if (!sw || !M) return QAT_ERR_NOMEM;
    for (int c = 0; c < OC; c++) sw[c] = s_all[per_channel ? c : 0];
    int rc0 = qat_conv_integer_form(wq, wf->data, bf ? bf->data : NULL, OC, per, s_in, sw, o->out_scale, o->weight,
                                    o->bias, NULL, M);
    if (rc0) return rc0;
    /* the output range: a fused ReLU or clamp; per channel with a clamp's
     * per-channel bounds */
    int32_t lo, *hi = qat_arena_alloc(ctx, (size_t)OC * sizeof *hi);
    if (!hi) return QAT_ERR_NOMEM;
    qat_qunit_act_bounds(qm, un, o->out_scale, o->out_zp, OC, &lo, hi);
    o->act_min = lo;
    o->act_max = hi[0];
    const qat_layer *a = un->relu >= 0 ? qat_model_layer_c(m, un->relu) : NULL;
    if (a && a->type == QAT_LAYER_CLAMP && a->clamp_hi_c) {
        if (!(o->act_max_channel = qat_malloc((size_t)OC * sizeof(int32_t))))
            return qat_error(QAT_ERR_NOMEM, "export: out of memory");
        for (int c = 0; c < OC; c++) {
            o->act_max_channel[c] = hi[c];
            if (hi[c] > o->act_max) o->act_max = hi[c];
        }
    }
    if (wq->kind != QAT_WEIGHT_UNIFORM) {
        int K = wq->k, b = 1;
        while ((1 << b) < K) b++;
        o->wenc = wq->kind == QAT_WEIGHT_CODEBOOK ? QAT_I8W_CODEBOOK : QAT_I8W_HASHED;
        o->wbits = b; /* index bits; the values are int8 */
        o->codebook_k = K;
        o->hash_seed = wq->seed;
        if (!(o->codebook = qat_malloc((size_t)K))) return qat_error(QAT_ERR_NOMEM, "export: out of memory");
        qat_quantizer_value_ints(wq, o->codebook);
    }
    for (int c = 0; c < OC; c++) {
        int64_t rowabs = 0;
        for (size_t k = 0; k < per; k++) {
            int32_t q = o->weight[(size_t)c * per + k];
            rowabs += q < 0 ? -q : q;
        }
        o->wscale[c] = sw[c];
        /* acc = bias + sum w*(x - z_in), |x - z_in| <= 255 */
        if ((int64_t)llabs(o->bias[c]) + 255 * rowabs >= ((int64_t)1 << 31))
            return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' channel %d: the int32 accumulator could overflow",
                             un->name, c);
        int rc = multiplier(M[c], &o->mult[c], &o->shift[c], un->name);
        if (rc) return rc;
    }
    return QAT_OK;
}

static int build(qat_qmodel *qm, float mean, float std, qat_i8graph *g)
{
    qat_model *m = qat_qmodel_float(qm);
    int nl = qat_model_num_layers(m);
    int *op_of = qat_malloc((size_t)nl * sizeof *op_of);
    g->ops = qat_calloc((size_t)nl, sizeof *g->ops);
    g->cap = g->ops ? nl : 0;
    qat_ctx *ctx = qat_ctx_create(1 << 20);
    int rc = (!op_of || !g->ops || !ctx) ? qat_error(QAT_ERR_NOMEM, "export: out of memory") : 0;
    for (int i = 0; op_of && i < nl; i++) op_of[i] = -1;
    if (ctx) {
        qat_ctx_set_grad(ctx, 0);
        qat_ctx_set_training(ctx, 0);
    }
    for (int i = 0; !rc && i < nl; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        int u = -1;
        for (int k = 0; k < qat_qmodel_num_units(qm); k++)
            if (qat_qmodel_unit(qm, k)->head == i || qat_qmodel_unit(qm, k)->bn == i ||
                qat_qmodel_unit(qm, k)->relu == i)
                u = k;
        if (u >= 0 && qat_qmodel_unit(qm, u)->head != i) continue; /* folded into its unit */
        qat_i8op *o = &g->ops[g->n];
        memcpy(o->name, l->name, sizeof o->name);
        const qat_i8op *in = i > 0 ? &g->ops[op_of[l->inputs[0]]] : NULL;
        if (i > 0 && op_of[l->inputs[0]] < 0) {
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: layer '%s' reads an unquantized tensor", l->name);
            break;
        }
        if (u >= 0) {
            qat_qunit *un = qat_qmodel_unit(qm, u);
            if ((rc = check_act(qm, un))) break;
            set_out(o, qat_model_layer_c(m, un->last), qat_qunit_actq(qm, un));
            if (un->kind != QAT_UNIT_CONV) /* (a conv's: per channel, conv_op) */
                qat_qunit_act_bounds(qm, un, o->out_scale, o->out_zp, 1, &o->act_min, &o->act_max);
            switch (un->kind) {
            case QAT_UNIT_INPUT:
                o->type = QAT_I8_OP_INPUT;
                o->mean = mean;
                o->std = std;
                for (int p = 0; p < 256; p++) {
                    float x = ((float)p / 255.0f - mean) / std; /* as the datasets normalise */
                    o->lut[p] = (int8_t)qat_quantize_val(x, 1.0f / o->out_scale, o->out_zp, un->act.qmin,
                                                         un->act.qmax);
                }
                break;
            case QAT_UNIT_CONV:
                o->n_inputs = 1;
                o->inputs[0] = op_of[l->inputs[0]];
                rc = conv_op(ctx, qm, un, o, in);
                qat_ctx_reset(ctx);
                break;
            case QAT_UNIT_ADD: {
                const qat_i8op *b = &g->ops[op_of[l->inputs[1]]];
                if (op_of[l->inputs[1]] < 0) {
                    rc = qat_error(QAT_ERR_UNSUPPORTED, "export: add '%s' reads an unquantized tensor", l->name);
                    break;
                }
                o->type = QAT_I8_OP_ADD;
                o->n_inputs = 2;
                o->inputs[0] = op_of[l->inputs[0]];
                o->inputs[1] = op_of[l->inputs[1]];
                double Ma = (double)in->out_scale / o->out_scale, Mb = (double)b->out_scale / o->out_scale;
                double mx = Ma > Mb ? Ma : Mb;
                int t = (int)floor(log2(2147483647.0 / mx));
                if (t > 62) t = 62;
                if (t < 1) {
                    rc = qat_error(QAT_ERR_UNSUPPORTED, "export: add '%s': input/output scale ratio %g too large", l->name, mx);
                    break;
                }
                o->add_t = t;
                o->add_m[0] = (int32_t)llround(Ma * ldexp(1.0, t));
                o->add_m[1] = (int32_t)llround(Mb * ldexp(1.0, t));
                o->add_zp[0] = in->out_zp;
                o->add_zp[1] = b->out_zp;
                break;
            }
            case QAT_UNIT_POOL: {
                o->n_inputs = 1;
                o->inputs[0] = op_of[l->inputs[0]];
                o->in_zp = in->out_zp;
                int win;
                if (l->type == QAT_LAYER_GLOBAL_AVGPOOL) {
                    o->type = QAT_I8_OP_GLOBAL_AVGPOOL;
                    win = in->out_shape[1] * in->out_shape[2];
                } else {
                    o->type = QAT_I8_OP_AVGPOOL2D;
                    o->k = l->kernel;
                    o->stride = l->stride;
                    win = l->kernel * l->kernel;
                }
                rc = multiplier((double)in->out_scale / ((double)win * o->out_scale), &o->pool_m, &o->pool_shift, un->name);
                break;
            }
            case QAT_UNIT_ACT:
                o->type = QAT_I8_OP_LUT;
                o->n_inputs = 1;
                o->inputs[0] = op_of[l->inputs[0]];
                rc = qat_act_table(qm, un, o->lut);
                break;
            case QAT_UNIT_CONCAT:
                o->type = QAT_I8_OP_CONCAT;
                o->n_inputs = 2;
                for (int k = 0; !rc && k < 2; k++) {
                    if (op_of[l->inputs[k]] < 0) {
                        rc = qat_error(QAT_ERR_UNSUPPORTED, "export: concat '%s' reads an unquantized tensor", l->name);
                        break;
                    }
                    const qat_i8op *ik = &g->ops[op_of[l->inputs[k]]];
                    o->inputs[k] = op_of[l->inputs[k]];
                    o->cat_zp[k] = ik->out_zp;
                    /* an input on the output's grid: 2^30 * 2^(1-31) = 1 exactly */
                    rc = multiplier((double)ik->out_scale / o->out_scale, &o->cat_m[k], &o->cat_shift[k], un->name);
                }
                break;
            default:
                rc = qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' of unknown kind", un->name);
            }
        } else {
            /* layers on their input's grid */
            o->n_inputs = 1;
            o->inputs[0] = op_of[l->inputs[0]];
            o->out_ndim = l->out_ndim;
            memcpy(o->out_shape, l->out_shape, sizeof o->out_shape);
            o->out_scale = in->out_scale;
            o->out_zp = in->out_zp;
            switch (l->type) {
            case QAT_LAYER_MAXPOOL2D:
                o->type = QAT_I8_OP_MAXPOOL2D;
                o->k = l->kernel;
                o->stride = l->stride;
                break;
            case QAT_LAYER_FLATTEN:
                o->type = QAT_I8_OP_FLATTEN;
                break;
            case QAT_LAYER_RELU:
                o->type = QAT_I8_OP_RELU;
                break;
            case QAT_LAYER_UPSAMPLE:
                o->type = QAT_I8_OP_UPSAMPLE;
                o->k = l->kernel;
                break;
            default:
                rc = qat_error(QAT_ERR_UNSUPPORTED, "export: layer '%s' (%s) has no int8 form", l->name,
                               qat_layer_type_name(l->type));
            }
        }
        if (!rc) {
            op_of[i] = g->n;
            if (u >= 0) op_of[qat_qmodel_unit(qm, u)->last] = g->n;
            g->n++;
        }
    }
    if (!rc && op_of[nl - 1] != g->n - 1)
        rc = qat_error(QAT_ERR_UNSUPPORTED, "export: the model's output layer is not its last op");
    free(op_of);
    qat_ctx_free(ctx);
    return rc;
}

int qat_convert_int8(qat_qmodel *qm, float mean, float std, qat_i8graph *g)
{
    memset(g, 0, sizeof *g);
    if (!qm) return qat_error(QAT_ERR_ARG, "convert: NULL qmodel");
    if (!(std > 0) || !isfinite(mean) || !isfinite(std))
        return qat_error(QAT_ERR_ARG, "convert: input normalisation mean %g, std %g (std must be > 0, both finite)",
                         (double)mean, (double)std);
    g->arch = qat_model_arch(qat_qmodel_float(qm));
    int rc = build(qm, mean, std, g);
    if (rc) qat_i8graph_free(g);
    return rc;
}
