/* quant/convert_float.c: a qmodel whose units are all fp16 to the graph of
 * float16 ops (docs/FORMAT-int8.md, "Float ops") that io/export_float.c
 * writes and the runtime's float path runs. The weights and biases are
 * the qmodel's own folded tensors (qat_qunit_fold, the computation the
 * fake-quant forward uses) rounded to binary16, so the runtime computes
 * what the qmodel's evaluation computes (quant/grid.c, float-format units):
 * double sums of exact fp16 products, one rounding per op. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "qat/half.h"
#include "quant/convert.h"
#include "quant/dynamic_graph.h"
#include "quant/internal.h"

static float fmt_round(qat_float_format f, double v)
{
    return f == QAT_FLOAT_BF16 ? qat_bf16_round(v) : qat_f16_round(v);
}

/* the conv / linear op of an fp16 / bf16 unit: folded weights and bias, rounded */
static int float_conv(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, dg_op *op)
{
    const qat_layer *l = qat_model_layer_c(qat_qmodel_float(qm), un->head);
    int conv = l->type == QAT_LAYER_CONV2D;
    qat_tensor *wf, *bf;
    if (qat_qunit_fold(ctx, qm, un, &wf, &bf)) return qat_error(QAT_ERR_NOMEM, "export: out of memory");
    op->kind = conv ? DG_CONV2D : DG_LINEAR;
    op->oc = l->out_ch;
    op->ic = (int)(wf->numel / (size_t)l->out_ch / (conv ? (size_t)l->kernel * l->kernel : 1));
    op->kh = op->kw = conv ? l->kernel : 1;
    op->stride = conv ? l->stride : 1;
    op->pad = conv ? l->pad : 0;
    op->w = qat_malloc(wf->numel * sizeof *op->w);
    op->bias = qat_calloc((size_t)l->out_ch, sizeof *op->bias);
    if (!op->w || !op->bias) return qat_error(QAT_ERR_NOMEM, "export: out of memory");
    qat_float_format f = un->cfg.float_format;
    double maxv = f == QAT_FLOAT_BF16 ? QAT_BF16_MAX : QAT_F16_MAX;
    for (size_t i = 0; i < wf->numel; i++) {
        if (!(wf->data[i] >= -maxv && wf->data[i] <= maxv))
            return qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s': weight %zu is %g, outside the format's range", un->name,
                             i, wf->data[i]);
        op->w[i] = wf->data[i];
    }
    for (int c = 0; bf && c < l->out_ch; c++) op->bias[c] = fmt_round(f, bf->data[c]);
    op->relu = un->relu >= 0;
    if (f == QAT_FLOAT_FP16) return qat_dg_half_weights(op);
    op->w16 = qat_malloc(wf->numel * sizeof *op->w16 + 1); /* bfloat16 bits */
    if (!op->w16) return qat_error(QAT_ERR_NOMEM, "export: out of memory");
    for (size_t i = 0; i < wf->numel; i++) {
        op->w16[i] = qat_bf16_from_double(op->w[i]);
        op->w[i] = qat_bf16_to_float(op->w16[i]);
    }
    op->wdt = DG_W_BF16;
    return QAT_OK;
}

int qat_convert_float16(qat_qmodel *qm, float mean, float std, qat_dynmodel **out)
{
    *out = NULL;
    qat_model *m = qat_qmodel_float(qm);
    qat_float_format f0 = qat_qmodel_unit(qm, 0)->cfg.float_format;
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        if (!un->cfg.float_format || un->cfg.float_format != f0) {
            char spec[32], spec0[32];
            return qat_error(QAT_ERR_UNSUPPORTED,
                             "export: unit '%s' is %s and unit '%s' is %s: a model with fp16 / bf16 units is exported "
                             "only when every unit has the same float format (int8 ops may not read float ones)",
                             un->name, qat_unit_config_spec(&un->cfg, spec, sizeof spec),
                             qat_qmodel_unit(qm, 0)->name,
                             qat_unit_config_spec(&qat_qmodel_unit(qm, 0)->cfg, spec0, sizeof spec0));
        }
    }
    int nl = qat_model_num_layers(m);
    qat_dynmodel *d = qat_dg_create(nl);
    int *map = qat_malloc((size_t)nl * sizeof *map);
    qat_ctx *ctx = qat_ctx_create(1 << 20);
    int rc = d && map && ctx ? QAT_OK : qat_error(QAT_ERR_NOMEM, "export: out of memory");
    if (!rc) {
        snprintf(d->arch, sizeof d->arch, "%s", qat_model_arch(m));
        qat_ctx_set_grad(ctx, 0);
        qat_ctx_set_training(ctx, 0);
    }
    for (int i = 0; !rc && i < nl; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        int u = -1;
        for (int k = 0; k < qat_qmodel_num_units(qm); k++) {
            const qat_qunit *un = qat_qmodel_unit(qm, k);
            if (un->head == i || un->bn == i || un->relu == i) u = k;
        }
        if (u >= 0 && qat_qmodel_unit(qm, u)->head != i) continue; /* folded into its unit */
        dg_op *op = &d->ops[d->n++];
        snprintf(op->name, sizeof op->name, "%s", l->name);
        op->f16 = f0 == QAT_FLOAT_FP16;
        op->bf16 = f0 == QAT_FLOAT_BF16;
        op->n_in = l->n_inputs;
        for (int k = 0; k < l->n_inputs; k++) op->in[k] = map[l->inputs[k]];
        qat_qunit *un = u >= 0 ? qat_qmodel_unit(qm, u) : NULL;
        qat_dg_set_shape(op, un ? qat_model_layer_c(m, un->last) : l);
        if (un && un->relu >= 0 && qat_model_layer_c(m, un->relu)->type != QAT_LAYER_RELU) {
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: unit '%s' with a fused clamp ('%s') has no float16 op", un->name,
                           qat_model_layer_c(m, un->relu)->name);
            break;
        }
        if (l->type == QAT_LAYER_CONV2D && l->groups > 1) {
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: conv2d '%s' has %d groups: no float16 op (only dense convs)",
                           l->name, l->groups);
            break;
        }
        switch (l->type) {
        case QAT_LAYER_INPUT:
            op->kind = DG_INPUT;
            op->mean = mean;
            op->std = std;
            break;
        case QAT_LAYER_CONV2D:
        case QAT_LAYER_LINEAR:
            rc = float_conv(ctx, qm, un, op);
            qat_ctx_reset(ctx);
            break;
        case QAT_LAYER_ADD:
            op->kind = DG_ADD;
            op->relu = un && un->relu >= 0;
            break;
        case QAT_LAYER_GLOBAL_AVGPOOL: op->kind = DG_GLOBAL_AVGPOOL; break;
        case QAT_LAYER_AVGPOOL2D:
        case QAT_LAYER_MAXPOOL2D:
            op->kind = l->type == QAT_LAYER_MAXPOOL2D ? DG_MAXPOOL2D : DG_AVGPOOL2D;
            op->kernel = l->kernel;
            op->stride = l->stride;
            break;
        case QAT_LAYER_RELU: op->kind = DG_RELU; break;
        case QAT_LAYER_FLATTEN: op->kind = DG_FLATTEN; break;
        default:
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: layer '%s' (%s) has no float16 op", l->name,
                           qat_layer_type_name(l->type));
        }
        if (un && un->kind == QAT_UNIT_POOL && un->relu >= 0)
            rc = qat_error(QAT_ERR_UNSUPPORTED, "export: pool '%s' with a fused ReLU has no float op", l->name);
        map[i] = d->n - 1;
        if (un) map[un->last] = d->n - 1;
    }
    if (!rc && map[nl - 1] != d->n - 1)
        rc = qat_error(QAT_ERR_UNSUPPORTED, "export: the model's output layer is not its last op");
    if (!rc) rc = qat_dg_finish(d);
    free(map);
    qat_ctx_free(ctx);
    if (rc) {
        qat_dynmodel_free(d);
        return rc;
    }
    *out = d;
    return QAT_OK;
}
