/* quant/metrics.c: per-layer error of a qmodel against its float model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"


void qat_error_metrics(const float *ref, const float *q, size_t n, double *cosine, double *sqnr_db, double *mse)
{
    double rr = 0, qq = 0, rq = 0, ee = 0;
    for (size_t i = 0; i < n; i++) {
        double a = ref[i], b = q[i], d = a - b;
        rr += a * a;
        qq += b * b;
        rq += a * b;
        ee += d * d;
    }
    if (cosine) *cosine = (rr > 0 && qq > 0) ? rq / sqrt(rr * qq) : (rr == qq ? 1.0 : 0.0);
    if (sqnr_db) *sqnr_db = ee > 0 ? 10.0 * log10(rr / ee) : INFINITY;
    if (mse) *mse = n ? ee / (double)n : 0;
}

int qat_qmodel_layer_errors(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x, qat_layer_error *out)
{
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor **f = qat_model_forward_all(ctx, qm->m, x);
    qat_tensor **q = f ? qat_qmodel_forward_all(ctx, qm, x) : NULL;
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    if (!q) return QAT_ERR_STATE;
    int n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        const qat_qunit *un = &qm->units[u];
        if (!un->cfg.quantize) continue;
        qat_layer_error *e = &out[n++];
        memcpy(e->name, un->name, sizeof e->name);
        e->layer = un->last;
        qat_error_metrics(f[un->last]->data, q[un->last]->data, f[un->last]->numel, &e->cosine, &e->sqnr_db, &e->mse);
    }
    return n;
}
