/* Convert a qmodel into the int8 model file of docs/FORMAT-int8.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "qat/data.h"
#include "qat/qio.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

/* One op of the int8 graph, before it is written. */
typedef struct xop {
    const char *type;
    char name[QAT_NAME_MAX];
    int n_inputs, inputs[2];
    int out_ndim, out_shape[3];
    float out_scale;
    int32_t out_zp;
    /* conv2d / linear */
    int oc, ic, k, stride, pad;
    int8_t *weight;
    int32_t *bias, *mult, *shift;
    float *wscale;
    int32_t in_zp, act_min, act_max;
    /* add */
    int32_t add_m[2], add_zp[2], add_t;
    /* pools */
    int32_t pool_m, pool_shift;
    /* input */
    float mean, std;
    int8_t lut[256];
} xop;

typedef struct graph {
    xop *ops;
    int n;
    const char *arch, *source;
} graph;

static void graph_free(graph *g)
{
    for (int i = 0; i < g->n; i++) {
        free(g->ops[i].weight);
        free(g->ops[i].bias);
        free(g->ops[i].mult);
        free(g->ops[i].shift);
        free(g->ops[i].wscale);
    }
    free(g->ops);
}

qat_export_opts qat_export_opts_defaults(void)
{
    qat_export_opts o = {QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD, NULL};
    return o;
}

static int multiplier(double M, int32_t *m, int32_t *s, const char *unit)
{
    int sh;
    if (qat_quantize_multiplier(M, m, &sh))
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': multiplier %g cannot be represented", unit, M);
    *s = sh;
    return QAT_OK;
}

static void set_out(xop *o, const qat_layer *l, const qat_quantizer *q)
{
    o->out_ndim = l->out_ndim;
    memcpy(o->out_shape, l->out_shape, sizeof o->out_shape);
    o->out_scale = qat_quantizer_scales(q)[0];
    int32_t zp;
    qat_quantizer_zero_points(q, &zp);
    o->out_zp = zp;
}

static int check_act(const qat_qunit *un)
{
    const qat_quantizer *q = &un->act;
    if (!un->cfg.quantize)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' is float (an override): int8 export needs every unit quantized",
                         un->name);
    if (!q->initialized || !q->fake_quant)
        return qat_error(QAT_ERR_STATE, "export: unit '%s' has no activation parameters (calibrate or train first)",
                         un->name);
    if (q->qmin < -128 || q->qmax > 127)
        return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': activations in [%d, %d] do not fit int8 (use signed, <= 8 bits)",
                         un->name, q->qmin, q->qmax);
    return QAT_OK;
}

/* the conv/linear op of a unit */
static int conv_op(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, xop *o, const xop *in)
{
    qat_model *m = qat_qmodel_float(qm);
    const qat_layer *l = qat_model_layer_c(m, un->head);
    const qat_quantizer *wq = &un->weight;
    if (!wq->initialized || !wq->fake_quant)
        return qat_error(QAT_ERR_STATE, "export: unit '%s' has no weight parameters", un->name);
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
    o->k = l->kernel;
    o->stride = l->stride;
    o->pad = l->pad;
    o->in_zp = in->out_zp;
    o->weight = malloc(wf->numel);
    o->bias = calloc((size_t)OC, sizeof(int32_t));
    o->mult = malloc((size_t)OC * sizeof(int32_t));
    o->shift = malloc((size_t)OC * sizeof(int32_t));
    o->wscale = malloc((size_t)OC * sizeof(float));
    if (!o->weight || !o->bias || !o->mult || !o->shift || !o->wscale)
        return qat_error(QAT_ERR_NOMEM, "export: out of memory");
    const float *sw = qat_quantizer_scales(wq);
    int per_channel = wq->n > 1 || wq->scheme.per_channel;
    for (int c = 0; c < OC; c++) {
        float s = sw[per_channel ? c : 0];
        float inv = 1.0f / s;
        int64_t rowabs = 0;
        for (size_t k = 0; k < per; k++) {
            int32_t q = qat_quantize_val(wf->data[(size_t)c * per + k], inv, 0, wq->qmin, wq->qmax);
            o->weight[(size_t)c * per + k] = (int8_t)q;
            rowabs += q < 0 ? -q : q;
        }
        if (bf) o->bias[c] = qat_quantize_bias_val(bf->data[c], qat_bias_scale(s_in, s));
        o->wscale[c] = s;
        /* acc = bias + sum w*(x - z_in), |x - z_in| <= 255 */
        if ((int64_t)llabs(o->bias[c]) + 255 * rowabs >= ((int64_t)1 << 31))
            return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' channel %d: the int32 accumulator could overflow",
                             un->name, c);
        double M = qat_requant_real_multiplier(s_in, s, qat_quantizer_scales(&un->act)[0]);
        int rc = multiplier(M, &o->mult[c], &o->shift[c], un->name);
        if (rc) return rc;
    }
    return QAT_OK;
}

static int build(qat_qmodel *qm, const qat_export_opts *opts, graph *g)
{
    qat_model *m = qat_qmodel_float(qm);
    int nl = qat_model_num_layers(m);
    int *op_of = malloc((size_t)nl * sizeof *op_of);
    g->ops = calloc((size_t)nl, sizeof *g->ops);
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
        xop *o = &g->ops[g->n];
        memcpy(o->name, l->name, sizeof o->name);
        const xop *in = i > 0 ? &g->ops[op_of[l->inputs[0]]] : NULL;
        if (i > 0 && op_of[l->inputs[0]] < 0) {
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: layer '%s' reads an unquantized tensor", l->name);
            break;
        }
        if (u >= 0) {
            qat_qunit *un = qat_qmodel_unit(qm, u);
            if ((rc = check_act(un))) break;
            set_out(o, qat_model_layer_c(m, un->last), &un->act);
            o->act_min = un->act.qmin;
            o->act_max = un->act.qmax;
            if (un->relu >= 0 && o->out_zp > o->act_min) o->act_min = o->out_zp;
            switch (un->kind) {
            case QAT_UNIT_INPUT:
                o->type = "input";
                o->mean = opts->mean;
                o->std = opts->std;
                for (int p = 0; p < 256; p++) {
                    float x = ((float)p / 255.0f - opts->mean) / opts->std; /* as the datasets normalise */
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
                const xop *b = &g->ops[op_of[l->inputs[1]]];
                if (op_of[l->inputs[1]] < 0) {
                    rc = qat_error(QAT_ERR_UNSUPPORTED, "export: add '%s' reads an unquantized tensor", l->name);
                    break;
                }
                o->type = "add";
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
                    o->type = "global_avgpool";
                    win = in->out_shape[1] * in->out_shape[2];
                } else {
                    o->type = "avgpool2d";
                    o->k = l->kernel;
                    o->stride = l->stride;
                    win = l->kernel * l->kernel;
                }
                rc = multiplier((double)in->out_scale / ((double)win * o->out_scale), &o->pool_m, &o->pool_shift, un->name);
                break;
            }
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
                o->type = "maxpool2d";
                o->k = l->kernel;
                o->stride = l->stride;
                break;
            case QAT_LAYER_FLATTEN:
                o->type = "flatten";
                break;
            case QAT_LAYER_RELU:
                o->type = "relu";
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

/* ---- writing ---- */

static int write_op(hid_t ops, int i, const xop *o, int digits)
{
    char name[16];
    snprintf(name, sizeof name, "%0*d", digits, i);
    hid_t h = qat_h5_group_create(ops, name);
    if (h < 0) return (int)h;
    int rc = qat_h5_attr_write_str(h, "type", o->type);
    if (!rc) rc = qat_h5_attr_write_str(h, "name", o->name);
    if (!rc) rc = qat_h5_attr_write(h, "inputs", QAT_H5_I32, o->n_inputs ? o->n_inputs : 0, o->inputs);
    if (!rc && o->n_inputs == 0) { /* an empty inputs attribute: write a zero-length marker */
        H5Adelete(h, "inputs");
        hsize_t zero = 0;
        hid_t sp = H5Screate_simple(1, &zero, NULL);
        hid_t a = H5Acreate2(h, "inputs", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) rc = qat_h5_fail_hdf5(QAT_ERR_IO, h, "attribute", "inputs", "cannot create");
        if (a >= 0) H5Aclose(a);
        H5Sclose(sp);
    }
    if (!rc) rc = qat_h5_attr_write(h, "out_shape", QAT_H5_I32, o->out_ndim, o->out_shape);
    if (!rc) rc = qat_h5_attr_write(h, "out_scale", QAT_H5_F32, 0, &o->out_scale);
    if (!rc) rc = qat_h5_attr_write_i32(h, "out_zero_point", o->out_zp);
    const char *t = o->type;
    if (!rc && !strcmp(t, "input")) {
        rc = qat_h5_attr_write_i32(h, "act_min", o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_max", o->act_max);
        if (!rc) rc = qat_h5_attr_write(h, "mean", QAT_H5_F32, 0, &o->mean);
        if (!rc) rc = qat_h5_attr_write(h, "std", QAT_H5_F32, 0, &o->std);
        int n = 256;
        if (!rc) rc = qat_h5_write(h, "lut", QAT_H5_I8, 1, &n, o->lut);
    } else if (!rc && (!strcmp(t, "conv2d") || !strcmp(t, "linear"))) {
        int conv = !strcmp(t, "conv2d");
        int wshape[4] = {o->oc, o->ic, o->k, o->k};
        if (conv) {
            rc = qat_h5_attr_write_i32(h, "stride", o->stride);
            if (!rc) rc = qat_h5_attr_write_i32(h, "pad", o->pad);
        } else {
            wshape[1] = o->ic;
        }
        if (!rc) rc = qat_h5_attr_write_i32(h, "in_zero_point", o->in_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_min", o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_max", o->act_max);
        if (!rc) rc = qat_h5_write(h, "weight", QAT_H5_I8, conv ? 4 : 2, wshape, o->weight);
        if (!rc) rc = qat_h5_write(h, "bias", QAT_H5_I32, 1, &o->oc, o->bias);
        if (!rc) rc = qat_h5_write(h, "multiplier", QAT_H5_I32, 1, &o->oc, o->mult);
        if (!rc) rc = qat_h5_write(h, "shift", QAT_H5_I32, 1, &o->oc, o->shift);
        if (!rc) rc = qat_h5_write(h, "weight_scale", QAT_H5_F32, 1, &o->oc, o->wscale);
    } else if (!rc && !strcmp(t, "add")) {
        rc = qat_h5_attr_write(h, "multiplier", QAT_H5_I32, 2, o->add_m);
        if (!rc) rc = qat_h5_attr_write_i32(h, "add_shift", o->add_t);
        if (!rc) rc = qat_h5_attr_write(h, "in_zero_point", QAT_H5_I32, 2, o->add_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_min", o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_max", o->act_max);
    } else if (!rc && (!strcmp(t, "global_avgpool") || !strcmp(t, "avgpool2d"))) {
        rc = qat_h5_attr_write_i32(h, "in_zero_point", o->in_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_min", o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, "act_max", o->act_max);
        if (!rc) rc = qat_h5_attr_write_i32(h, "multiplier", o->pool_m);
        if (!rc) rc = qat_h5_attr_write_i32(h, "shift", o->pool_shift);
        if (!rc && t[0] == 'a') rc = qat_h5_attr_write_i32(h, "kernel", o->k);
        if (!rc && t[0] == 'a') rc = qat_h5_attr_write_i32(h, "stride", o->stride);
    } else if (!rc && !strcmp(t, "maxpool2d")) {
        rc = qat_h5_attr_write_i32(h, "kernel", o->k);
        if (!rc) rc = qat_h5_attr_write_i32(h, "stride", o->stride);
    }
    H5Gclose(h);
    return rc;
}

static int writer(hid_t file, void *p)
{
    const graph *g = p;
    int rc = qat_h5_write_format(file, QAT_FORMAT_INT8_MODEL, 1);
    if (!rc) rc = qat_h5_attr_write_str(file, "arch", g->arch);
    if (!rc) rc = qat_h5_attr_write_i32(file, "num_ops", g->n);
    if (!rc) rc = qat_h5_attr_write_str(file, "source", g->source ? g->source : "");
    hid_t ops = rc ? -1 : qat_h5_group_create(file, "/ops");
    if (!rc && ops < 0) rc = (int)ops;
    int digits = g->n > 1000 ? 4 : 3;
    for (int i = 0; !rc && i < g->n; i++) rc = write_op(ops, i, &g->ops[i], digits);
    if (ops >= 0) H5Gclose(ops);
    return rc;
}

int qat_export_int8(qat_qmodel *qm, const char *path, const qat_export_opts *opts)
{
    if (!qm || !path) return qat_error(QAT_ERR_ARG, "export: NULL model or path");
    qat_export_opts d = qat_export_opts_defaults();
    if (!opts) opts = &d;
    if (!(opts->std > 0)) return qat_error(QAT_ERR_ARG, "export: std must be > 0");
    graph g = {0};
    g.arch = qat_model_arch(qat_qmodel_float(qm));
    g.source = opts->source;
    int rc = build(qm, opts, &g);
    if (!rc) {
        qat_h5_quiet q;
        qat_h5_quiet_begin(&q);
        rc = qat_h5_save_atomic(path, writer, &g);
        qat_h5_quiet_end(&q);
    }
    graph_free(&g);
    return rc;
}
