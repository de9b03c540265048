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

/* ---- analytic (data-free) bias correction, paper section 4.2 ---- */

static double npdf(double z) { return exp(-0.5 * z * z) * 0.39894228040143267794; /* 1 / sqrt(2 pi) */ }
static double ncdf(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }

double qat_clipped_normal_mean(double mu, double sigma, double lo, double hi)
{
    if (!(sigma > 0)) return mu < lo ? lo : mu > hi ? hi : mu;
    double a = isinf(lo) ? -INFINITY : (lo - mu) / sigma, b = isinf(hi) ? INFINITY : (hi - mu) / sigma;
    double pa = isinf(a) ? 0 : ncdf(a), pb = isinf(b) ? 1 : ncdf(b);
    double fa = isinf(a) ? 0 : npdf(a), fb = isinf(b) ? 0 : npdf(b);
    /* lo P(Z < lo) + hi P(Z > hi) + E[Z; lo < Z < hi] */
    double e = mu * (pb - pa) + sigma * (fa - fb);
    if (!isinf(lo)) e += lo * pa;
    if (!isinf(hi)) e += hi * (1 - pb);
    return e;
}

/* E[x_c] of a unit's input from the BN before it (through a ReLU or a
 * clamp): 0 and the means in ex, or -1 when the input is not such an
 * output (or the BN is CLE's pure bias: no statistics left). */
static int input_means(const qat_model *m, const qat_layer *l, double *ex)
{
    const qat_layer *j = qat_model_layer_c(m, l->inputs[0]), *bn = j;
    double lo = -INFINITY, hi = INFINITY;
    const float *hic = NULL;
    if (j->type == QAT_LAYER_RELU || j->type == QAT_LAYER_CLAMP) {
        if (j->type == QAT_LAYER_RELU) lo = 0;
        else {
            lo = j->clamp_lo;
            hi = j->clamp_hi;
            hic = j->clamp_hi_c ? j->clamp_hi_c->data : NULL;
        }
        bn = qat_model_layer_c(m, j->inputs[0]);
    }
    if (bn->type != QAT_LAYER_BATCHNORM2D) return -1;
    int stats = 0;
    for (int c = 0; c < bn->out_ch; c++)
        stats |= bn->weight->data[c] != 1.0f || bn->running_mean->data[c] != 0.0f ||
                 1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps) != 1.0f;
    if (!stats) return -1;
    for (int c = 0; c < bn->out_ch; c++)
        ex[c] = qat_clipped_normal_mean(bn->bias->data[c], fabs(bn->weight->data[c]), lo, hic ? hic[c] : hi);
    return 0;
}

int qat_bias_correct_analytic(qat_qmodel *qm)
{
    if (!qm) return qat_error(QAT_ERR_ARG, "bias correction: NULL qmodel");
    qat_model *m = qat_qmodel_float(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    if (!ctx) return qat_error(QAT_ERR_NOMEM, "bias correction: out of memory");
    qat_ctx_set_grad(ctx, 0);
    int n = 0, rc = QAT_OK;
    for (int u = 0; u < qat_qmodel_num_units(qm) && !rc; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        qat_layer *l = qat_model_layer(m, un->head);
        if (!is_target(un) || l->type != QAT_LAYER_CONV2D || !un->weight.fake_quant) continue;
        qat_tensor *bias = un->bn >= 0 ? qat_model_layer(m, un->bn)->bias : l->bias;
        int C = qat_model_layer_c(m, l->inputs[0])->out_shape[0];
        double *ex = malloc((size_t)C * sizeof *ex);
        if (!ex) {
            rc = qat_error(QAT_ERR_NOMEM, "bias correction: out of memory");
            break;
        }
        if (bias && !input_means(m, l, ex)) {
            qat_tensor *wf, *bf, *wq;
            if ((rc = qat_qunit_fold(ctx, qm, un, &wf, &bf)) || !(wq = qat_fq(ctx, wf, &un->weight, 0))) {
                if (!rc) rc = qat_ctx_status(ctx) ? qat_ctx_status(ctx) : QAT_ERR_NOMEM;
                free(ex);
                break;
            }
            int OC = l->out_ch, groups = l->groups > 0 ? l->groups : 1, cin = C / groups, kk = l->kernel * l->kernel;
            for (int c = 0; c < OC; c++) {
                int g = c / (OC / groups);
                double d = 0;
                for (int i = 0; i < cin; i++)
                    for (int k = 0; k < kk; k++) {
                        size_t o = ((size_t)c * cin + i) * kk + k;
                        d += ((double)wq->data[o] - wf->data[o]) * ex[g * cin + i];
                    }
                bias->data[c] -= (float)d; /* the expected output error (W_q - W) E[x] */
            }
            n++;
        }
        free(ex);
        qat_ctx_reset(ctx);
    }
    qat_ctx_free(ctx);
    return rc ? rc : n;
}
