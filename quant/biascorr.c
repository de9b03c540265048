/* quant/biascorr.c: empirical bias correction (Nagel et al. 2019, section
 * 4.2; docs/QUANT.md, section 19): the quantized model's mean
 * pre-activation error per output channel, measured on calibration images,
 * is taken out of each unit's bias, unit by unit in order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/ptq.h"
#include "quant/internal.h"

/* The layer holding a conv unit's pre-activation (BN folded). */
static int pre_layer(const qat_qunit *un) { return un->bn >= 0 ? un->bn : un->head; }

/* sum[c] += sum of y's channel c (y [N,C,H,W] or [N,C]); sq likewise of y^2. */
static void channel_sums(const qat_tensor *y, double *sum, double *sq)
{
    int N = y->shape[0], C = y->shape[1];
    size_t inner = y->numel / ((size_t)N * (size_t)C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *p = y->data + ((size_t)n * C + c) * inner;
            double s = 0, q = 0;
            for (size_t i = 0; i < inner; i++) {
                s += p[i];
                q += (double)p[i] * p[i];
            }
            sum[c] += s;
            if (sq) sq[c] += q;
        }
}

/* Rows [s, s + b) of x as a tensor of ctx. */
static qat_tensor *batch_of(qat_ctx *ctx, const qat_tensor *x, int s, int b)
{
    qat_tensor *t = qat_new(ctx, 4, (int[]){b, x->shape[1], x->shape[2], x->shape[3]});
    size_t per = x->numel / (size_t)x->shape[0];
    if (t) memcpy(t->data, x->data + (size_t)s * per, (size_t)b * per * sizeof(float));
    return t;
}

static int is_target(const qat_qunit *un) { return un->kind == QAT_UNIT_CONV && un->cfg.quantize; }

int qat_bias_correct(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_tensor *x, int batch,
                     qat_biascorr_report *rep)
{
    if (!qm || !x || x->ndim != 4 || x->shape[0] < 1) return qat_error(QAT_ERR_ARG, "bias correction: needs a qmodel and images [N,C,H,W]");
    if (batch < 1) batch = 64;
    qat_model *m = qat_qmodel_float(qm);
    int nu = qat_qmodel_num_units(qm), N = x->shape[0];
    size_t tot = 0;
    for (int u = 0; u < nu; u++)
        if (is_target(qat_qmodel_unit(qm, u))) tot += (size_t)qat_model_layer_c(m, qat_qmodel_unit(qm, u)->head)->out_ch;
    double *fmean = calloc(tot + 1, sizeof *fmean), *fsq = calloc(tot + 1, sizeof *fsq);
    double *qsum = calloc(tot + 1, sizeof *qsum);
    qat_ctx *ctx = qat_ctx_create(0);
    int rc = (!fmean || !fsq || !qsum || !ctx) ? qat_error(QAT_ERR_NOMEM, "bias correction: out of memory") : QAT_OK;
    if (rep) rep->n = 0;
    if (rc) goto done;
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    /* the reference float model's pre-activation means (and RMS) */
    if (ref && (rc = qat_model_snapshot_swap((qat_model_snapshot *)ref, m))) goto done;
    for (int s = 0; s < N && !rc; s += batch) {
        int b = N - s < batch ? N - s : batch;
        qat_tensor **out = qat_model_forward_all(ctx, m, batch_of(ctx, x, s, b));
        if (!out) {
            rc = qat_ctx_status(ctx) ? qat_ctx_status(ctx) : QAT_ERR_NOMEM;
            break;
        }
        size_t off = 0;
        for (int u = 0; u < nu; u++) {
            const qat_qunit *un = qat_qmodel_unit(qm, u);
            if (!is_target(un)) continue;
            channel_sums(out[pre_layer(un)], fmean + off, fsq + off);
            off += (size_t)qat_model_layer_c(m, un->head)->out_ch;
        }
        qat_ctx_reset(ctx);
    }
    if (ref) qat_model_snapshot_swap((qat_model_snapshot *)ref, m);
    if (rc) goto done;
    qat_eval_mode mode = qat_qmodel_eval_mode(qm);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH); /* every layer's output formed */
    size_t off = 0;
    for (int u = 0; u < nu && !rc; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        if (!is_target(un)) continue;
        qat_layer *l = qat_model_layer(m, un->head);
        int C = l->out_ch;
        size_t inner = 0;
        memset(qsum, 0, (size_t)C * sizeof *qsum);
        int fq = un->act.fake_quant;
        un->act.fake_quant = 0; /* the unit's own output before its activation quantizer */
        for (int s = 0; s < N && !rc; s += batch) {
            int b = N - s < batch ? N - s : batch;
            qat_tensor **out = qat_qmodel_forward_all(ctx, qm, batch_of(ctx, x, s, b));
            if (!out) {
                rc = qat_ctx_status(ctx) ? qat_ctx_status(ctx) : QAT_ERR_NOMEM;
                break;
            }
            qat_tensor *y = out[un->head];
            inner = y->numel / ((size_t)y->shape[0] * (size_t)C);
            channel_sums(y, qsum, NULL);
            qat_ctx_reset(ctx);
        }
        un->act.fake_quant = fq;
        if (rc) break;
        double cnt = (double)N * (double)inner, shift = 0, ms = 0;
        qat_tensor *bias = un->bn >= 0 ? qat_model_layer(m, un->bn)->bias : l->bias;
        /* the bias the unit applies is on the int32 grid s_in * s_w: the new
         * one is that rounded bias minus the error, so only the new
         * rounding is left (not the old one as well) */
        qat_tensor *wf = NULL, *bf = NULL, *bq = NULL;
        float s_in = qat_qunit_input_scale(qm, un);
        if (bias && (rc = qat_qunit_fold(ctx, qm, un, &wf, &bf))) break;
        if (bf && un->weight.fake_quant && !un->weight.float_format && s_in > 0) {
            const float *sw = qat_channel_weight_scales(ctx, &un->weight, C);
            if (!sw || !(bq = qat_fq_bias(ctx, bf, s_in, sw))) {
                rc = QAT_ERR_NOMEM;
                break;
            }
        }
        for (int c = 0; c < C; c++) {
            double d = (qsum[c] - fmean[off + c]) / cnt;
            shift += fabs(d);
            ms += fsq[off + c] / cnt;
            if (bias) bias->data[c] -= (float)(d - (bq ? (double)bq->data[c] - bf->data[c] : 0.0));
        }
        qat_ctx_reset(ctx);
        if (rep && rep->n < (int)(sizeof rep->layers / sizeof rep->layers[0])) {
            qat_biascorr_layer *e = &rep->layers[rep->n++];
            snprintf(e->name, sizeof e->name, "%s", un->name);
            e->mean_abs_shift = shift / C;
            e->rms = bias ? sqrt(ms / C) : -1;
        }
        off += (size_t)C;
    }
    qat_qmodel_set_eval_mode(qm, mode);
done:
    qat_ctx_free(ctx);
    free(fmean);
    free(fsq);
    free(qsum);
    return rc;
}
