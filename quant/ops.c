/* Fake-quant ops on the tape: straight-through (mask) and learnable (LSQ). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/fakequant.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

const float *qat_quantizer_scales(const qat_quantizer *q)
{
    return q->lsq_scale ? q->lsq_scale->data : q->scale;
}

void qat_quantizer_zero_points(const qat_quantizer *q, int32_t *zp)
{
    for (int c = 0; c < q->n; c++)
        zp[c] = q->lsq_zp ? qat_zero_point_from_float(q->lsq_zp->data[c], q->qmin, q->qmax)
                          : q->zero_point[c];
}

int qat_quantizer_init(qat_quantizer *q, const qat_qscheme *s, int n, int lsq,
                       const qat_observer_opts *obs)
{
    memset(q, 0, sizeof *q);
    int rc = qat_qscheme_check(s);
    if (rc) return rc;
    q->scheme = *s;
    qat_qscheme_range(s, &q->qmin, &q->qmax);
    q->n = n;
    q->scale = qat_calloc((size_t)n, sizeof *q->scale);
    q->zero_point = qat_calloc((size_t)n, sizeof *q->zero_point);
    if (!q->scale || !q->zero_point) return qat_error(QAT_ERR_NOMEM, "quantizer: out of memory");
    for (int c = 0; c < n; c++) q->scale[c] = 1.0f;
    if (obs) {
        q->obs = qat_observer_create(obs);
        if (!q->obs) return QAT_ERR_ARG;
    }
    if (lsq) {
        q->lsq_scale = qat_tensor_create(1, &n, 1);
        if (!q->lsq_scale) return QAT_ERR_NOMEM;
        for (int c = 0; c < n; c++) q->lsq_scale->data[c] = 1.0f;
        if (!s->symmetric) {
            q->lsq_zp = qat_tensor_create(1, &n, 1);
            if (!q->lsq_zp) return QAT_ERR_NOMEM;
        }
    }
    q->observe = 1;
    q->fake_quant = 1;
    return QAT_OK;
}

void qat_quantizer_free(qat_quantizer *q)
{
    free(q->scale);
    free(q->zero_point);
    qat_observer_free(q->obs);
    qat_tensor_free(q->lsq_scale);
    qat_tensor_free(q->lsq_zp);
    memset(q, 0, sizeof *q);
}

int qat_quantizer_from_observer(qat_quantizer *q, int cal)
{
    if (!q->obs || qat_observer_count(q->obs) == 0) return QAT_OK; /* nothing seen: keep */
    int rc;
    if (cal >= 0) {
        const qat_observer_opts *o = qat_observer_options(q->obs);
        rc = qat_observer_qparams_with(q->obs, &q->scheme, (qat_calib_method)cal, o->percentile, q->scale,
                                       q->zero_point);
    } else {
        rc = qat_observer_qparams(q->obs, &q->scheme, q->scale, q->zero_point);
    }
    if (rc) return rc;
    if (!q->initialized || !q->lsq_scale) {
        if (q->lsq_scale) memcpy(q->lsq_scale->data, q->scale, (size_t)q->n * sizeof(float));
        if (q->lsq_zp)
            for (int c = 0; c < q->n; c++) q->lsq_zp->data[c] = (float)q->zero_point[c];
    }
    q->initialized = 1;
    return QAT_OK;
}

/* ---- the op ---- */

typedef struct {
    qat_quantizer *q;
    uint8_t *mask;      /* STE */
    float *scales;      /* LSQ: the parameters the forward used */
    int32_t *zps;
    size_t outer, channels, inner;
} fq_saved;

static void fq_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    float *dx = qat_grad(ctx, e->in[0]);
    if (dx) qat_fake_quant_backward(dx, e->out->grad, s->mask, e->out->numel);
}

static void fq_lsq_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    const qat_quantizer *q = s->q;
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x), *ds = qat_grad(ctx, e->in[1]), *dz = e->in[2] ? qat_grad(ctx, e->in[2]) : NULL;
    size_t per = s->outer * s->inner;
    float gf = (float)(1.0 / sqrt((double)per * (double)q->qmax));
    float *dsum = qat_arena_alloc(ctx, s->channels * sizeof(float) * 2);
    if (!dsum) return;
    memset(dsum, 0, s->channels * sizeof(float) * 2);
    float *dzsum = dsum + s->channels;
    if (q->n == 1)
        qat_fake_quant_lsq_backward(dx, dsum, dz ? dzsum : NULL, e->out->grad, x->data, s->scales[0], s->zps[0],
                                    q->qmin, q->qmax, gf, x->numel);
    else
        qat_fake_quant_lsq_channel_backward(dx, dsum, dz ? dzsum : NULL, e->out->grad, x->data, s->scales,
                                            s->zps, q->qmin, q->qmax, gf, s->outer, s->channels, s->inner);
    for (size_t c = 0; c < s->channels; c++) {
        if (ds) ds[c] += dsum[c];
        if (dz) dz[c] += dzsum[c];
    }
}

static void fq_lsq_relu_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    const qat_quantizer *q = s->q;
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x), *ds = qat_grad(ctx, e->in[1]), *dz = e->in[2] ? qat_grad(ctx, e->in[2]) : NULL;
    float gf = (float)(1.0 / sqrt((double)x->numel * (double)q->qmax));
    float dsum = 0.0f, dzsum = 0.0f;
    qat_fake_quant_lsq_relu_backward(dx, &dsum, dz ? &dzsum : NULL, e->out->grad, x->data, s->scales[0], s->zps[0],
                                     q->qmin, q->qmax, gf, x->numel);
    if (ds) ds[0] += dsum;
    if (dz) dz[0] += dzsum;
}

/* The fake-quant of x (of relu(x) with relu; per tensor only) with q's
 * current parameters, recorded on the tape. */
static qat_tensor *fq_apply(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, size_t outer, size_t channels,
                            size_t inner, int relu)
{
    if (!q->initialized)
        return qat_error_null(QAT_ERR_STATE, "fake_quant: quantizer has no parameters yet (observe or calibrate first)");
    fq_saved *s = qat_arena_alloc(ctx, sizeof *s);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    uint8_t *mask = qat_arena_alloc(ctx, x->numel);
    float *scales = qat_arena_alloc(ctx, channels * sizeof(float));
    int32_t *zps = qat_arena_alloc(ctx, channels * sizeof(int32_t));
    if (!s || !y || !mask || !scales || !zps) return NULL;
    memcpy(scales, qat_quantizer_scales(q), channels * sizeof(float));
    qat_quantizer_zero_points(q, zps);
    for (size_t c = 0; c < channels; c++)
        if (!(scales[c] > 0.0f) || !isfinite(scales[c]))
            return qat_error_null(QAT_ERR_STATE, "fake_quant: scale %g of channel %zu is not positive", scales[c], c);
    if (relu)
        qat_fake_quant_relu_forward(y->data, mask, x->data, scales[0], zps[0], q->qmin, q->qmax, x->numel);
    else if (channels == 1)
        qat_fake_quant_forward(y->data, mask, x->data, scales[0], zps[0], q->qmin, q->qmax, x->numel);
    else
        qat_fake_quant_channel_forward(y->data, mask, x->data, scales, zps, q->qmin, q->qmax, outer, channels,
                                       inner);
    *s = (fq_saved){.q = q, .mask = mask, .scales = scales, .zps = zps, .outer = outer, .channels = channels,
                    .inner = inner};
    if (q->lsq_scale) {
        qat_tensor *in[3] = {x, q->lsq_scale, q->lsq_zp};
        if (qat_needs_grad(ctx, 3, in) &&
            qat_tape_record(ctx, relu ? "fake_quant_lsq_relu" : "fake_quant_lsq",
                            relu ? fq_lsq_relu_backward : fq_lsq_backward, y, q->lsq_zp ? 3 : 2, in, s) != QAT_OK)
            return NULL;
    } else if (qat_needs_grad(ctx, 1, &x) &&
               qat_tape_record(ctx, relu ? "fake_quant_relu" : "fake_quant", fq_backward, y, 1, &x, s) != QAT_OK) {
        return NULL;
    }
    return y;
}

/* an observer failed (no memory for its state, ...): the op returns NULL
 * and the step's context records why */
static qat_tensor *fq_fail(qat_ctx *ctx, int rc)
{
    qat_ctx_fail(ctx, rc);
    return NULL;
}

qat_tensor *qat_fq(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe)
{
    if (!x) return NULL;
    size_t outer = 1, channels = 1, inner = x->numel;
    if (q->n > 1 || q->scheme.per_channel) {
        int ax = q->scheme.axis;
        if (ax < 0 || ax >= x->ndim || x->shape[ax] != q->n)
            return qat_error_null(QAT_ERR_SHAPE, "fake_quant: %d channel parameters for axis %d of a %d-d tensor",
                                  q->n, ax, x->ndim);
        outer = qat_shape_numel(ax, x->shape);
        channels = (size_t)q->n;
        inner = x->numel / (outer * channels);
    }
    if (observe && q->observe && q->obs && !(q->lsq_scale && q->initialized)) {
        int rc = q->n > 1 || q->scheme.per_channel
                     ? qat_observer_observe_channels(q->obs, x->data, outer, channels, inner)
                     : qat_observer_observe(q->obs, x->data, x->numel);
        if (rc) return fq_fail(ctx, rc);
        /* histogram observers fix their parameters at finalize (costly) */
        if (qat_observer_options(q->obs)->kind != QAT_OBSERVER_HISTOGRAM || !q->initialized)
            if ((rc = qat_quantizer_from_observer(q, -1))) return fq_fail(ctx, rc);
    }
    if (!q->fake_quant) return x;
    return fq_apply(ctx, x, q, outer, channels, inner, 0);
}

qat_tensor *qat_fq_relu(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe, qat_tensor **relu_out)
{
    if (!x) return NULL;
    int kind = q->obs ? (int)qat_observer_options(q->obs)->kind : -1;
    int learned = q->lsq_scale && q->initialized; /* the observer no longer sets them */
    int fusable = q->fake_quant && q->n == 1 && !q->scheme.per_channel &&
                  (learned || kind < 0 || kind == QAT_OBSERVER_MINMAX || kind == QAT_OBSERVER_EMA);
    if (!fusable) {
        qat_tensor *r = qat_relu(ctx, x);
        *relu_out = r;
        return qat_fq(ctx, r, q, observe);
    }
    if (observe && q->observe && q->obs && !learned) {
        int rc;
        if ((rc = qat_observer_observe_relu(q->obs, x->data, x->numel)) || (rc = qat_quantizer_from_observer(q, -1)))
            return fq_fail(ctx, rc);
    }
    qat_tensor *y = fq_apply(ctx, x, q, 1, 1, x->numel, 1);
    *relu_out = y;
    return y;
}

static void fq_bias_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *db = qat_grad(ctx, e->in[0]);
    if (db) qat_fake_quant_bias_backward(db, e->out->grad, (int)e->out->numel);
}

qat_tensor *qat_fq_bias(qat_ctx *ctx, qat_tensor *b, float s_in, const float *s_w)
{
    if (!b) return NULL;
    qat_tensor *y = qat_new(ctx, b->ndim, b->shape);
    if (!y) return NULL;
    qat_fake_quant_bias(y->data, b->data, s_w, s_in, (int)b->numel);
    if (qat_needs_grad(ctx, 1, &b) &&
        qat_tape_record(ctx, "fake_quant_bias", fq_bias_backward, y, 1, &b, NULL) != QAT_OK)
        return NULL;
    return y;
}
