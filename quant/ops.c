/* Fake-quant ops on the tape, straight-through (mask) and learnable (LSQ):
 * the quantizers' qat_fq* and the public qat_fake_quant_* share fq_core.
 * Also the public requantization helpers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/fakequant.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

/* LSQ's constraint, in place: scales >= QAT_SCALE_EPS (NaN too), float
 * zero points in [qmin, qmax] (NaN -> qmin). The expressions of
 * qat_qmodel_clamp_params, so projecting twice changes nothing. */
static void lsq_project(float *s, float *z, size_t n, int32_t qmin, int32_t qmax)
{
    for (size_t c = 0; c < n; c++) {
        if (!(s[c] >= QAT_SCALE_EPS)) s[c] = QAT_SCALE_EPS;
        if (z) {
            if (!(z[c] >= (float)qmin)) z[c] = (float)qmin;
            if (z[c] > (float)qmax) z[c] = (float)qmax;
        }
    }
}

/* A learnable quantizer projected as qat_qmodel_clamp_params does it after
 * an optimizer step, and its scale / zero_point copies synced: a no-op when
 * the caller clamped already (`qat train`), the same state when it did not
 * (a script that only gives qat_qmodel_parameters() to the optimizer).
 * Writes through q's pointers only (the tensors and arrays are not const). */
void qat_quantizer_project(const qat_quantizer *q)
{
    if (q->values) {
        for (int k = 0; k < q->k; k++)
            if (!isfinite(q->values->data[k])) q->values->data[k] = 0.0f; /* an overshooting step */
        q->scale[0] = qat_values_scale(q);
    }
    if (!q->lsq_scale) return;
    lsq_project(q->lsq_scale->data, q->lsq_zp ? q->lsq_zp->data : NULL, (size_t)q->n, q->qmin, q->qmax);
    for (int c = 0; c < q->n; c++) {
        q->scale[c] = q->lsq_scale->data[c];
        if (q->lsq_zp) q->zero_point[c] = qat_zero_point_from_float(q->lsq_zp->data[c], q->qmin, q->qmax);
    }
}

const float *qat_quantizer_scales(const qat_quantizer *q)
{
    qat_quantizer_project(q);
    return q->lsq_scale ? q->lsq_scale->data : q->scale;
}

void qat_quantizer_zero_points(const qat_quantizer *q, int32_t *zp)
{
    qat_quantizer_project(q);
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
    qat_tensor_free(q->values);
    memset(q, 0, sizeof *q);
}

int qat_quantizer_from_observer(qat_quantizer *q, int cal)
{
    if (!q->obs || qat_observer_count(q->obs) == 0) return QAT_OK; /* nothing seen: keep */
    if (qat_quantizer_is_special(q)) return QAT_OK; /* set from the tensor when it was observed */
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
    uint8_t *mask;      /* STE */
    float *scales;      /* the parameters the forward used */
    int32_t *zps;
    size_t outer, channels, inner;
    int32_t qmin, qmax;
    float grad_factor;  /* LSQ */
} fq_saved;

static void fq_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    float *dx = qat_grad(ctx, e->in[0]);
    if (dx) qat_fqk_backward(dx, e->out->grad, s->mask, e->out->numel);
}

static void fq_lsq_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x), *ds = qat_grad(ctx, e->in[1]), *dz = e->in[2] ? qat_grad(ctx, e->in[2]) : NULL;
    float *dsum = qat_arena_alloc(ctx, s->channels * sizeof(float) * 2);
    if (!dsum) return;
    memset(dsum, 0, s->channels * sizeof(float) * 2);
    float *dzsum = dsum + s->channels;
    if (s->channels == 1)
        qat_fqk_lsq_backward(dx, dsum, dz ? dzsum : NULL, e->out->grad, x->data, s->scales[0], s->zps[0], s->qmin,
                             s->qmax, s->grad_factor, x->numel);
    else
        qat_fqk_lsq_channel_backward(dx, dsum, dz ? dzsum : NULL, e->out->grad, x->data, s->scales, s->zps,
                                     s->qmin, s->qmax, s->grad_factor, s->outer, s->channels, s->inner);
    for (size_t c = 0; c < s->channels; c++) {
        if (ds) ds[c] += dsum[c];
        if (dz) dz[c] += dzsum[c];
    }
}

static void fq_lsq_relu_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const fq_saved *s = e->saved;
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x), *ds = qat_grad(ctx, e->in[1]), *dz = e->in[2] ? qat_grad(ctx, e->in[2]) : NULL;
    float dsum = 0.0f, dzsum = 0.0f;
    qat_fqk_lsq_relu_backward(dx, &dsum, dz ? &dzsum : NULL, e->out->grad, x->data, s->scales[0], s->zps[0],
                              s->qmin, s->qmax, s->grad_factor, x->numel);
    if (ds) ds[0] += dsum;
    if (dz) dz[0] += dzsum;
}

/* LSQ's gradient scale 1/sqrt(N * qmax), N elements per scale. */
static float lsq_grad_factor(size_t per, int32_t qmax)
{
    return (float)(1.0 / sqrt((double)per * (double)qmax));
}

/* The fake-quant of x viewed as (outer, channels, inner), channel c with
 * (scales[c], zps[c]) (of relu(x) with relu; per tensor only), recorded on
 * the tape: straight-through to x, or with lsq_s (the learnable scale
 * tensor, [channels]) LSQ's gradients to x, lsq_s and lsq_z (NULL: no
 * learnable zero point) scaled by gf. */
static qat_tensor *fq_core(qat_ctx *ctx, qat_tensor *x, const float *scales_in, const int32_t *zps_in, int32_t qmin,
                           int32_t qmax, size_t outer, size_t channels, size_t inner, int relu, qat_tensor *lsq_s,
                           qat_tensor *lsq_z, float gf)
{
    fq_saved *s = qat_arena_alloc(ctx, sizeof *s);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    uint8_t *mask = qat_arena_alloc(ctx, x->numel);
    float *scales = qat_arena_alloc(ctx, channels * sizeof(float));
    int32_t *zps = qat_arena_alloc(ctx, channels * sizeof(int32_t));
    if (!s || !y || !mask || !scales || !zps) return NULL;
    memcpy(scales, scales_in, channels * sizeof(float));
    memcpy(zps, zps_in, channels * sizeof(int32_t));
    for (size_t c = 0; c < channels; c++)
        if (!(scales[c] > 0.0f) || !isfinite(scales[c]))
            return qat_error_null(QAT_ERR_STATE, "fake_quant: scale %g of channel %zu is not positive", scales[c], c);
    if (relu)
        qat_fqk_relu_forward(y->data, mask, x->data, scales[0], zps[0], qmin, qmax, x->numel);
    else if (channels == 1)
        qat_fqk_forward(y->data, mask, x->data, scales[0], zps[0], qmin, qmax, x->numel);
    else
        qat_fqk_channel_forward(y->data, mask, x->data, scales, zps, qmin, qmax, outer, channels, inner);
    *s = (fq_saved){.mask = mask, .scales = scales, .zps = zps, .outer = outer, .channels = channels,
                    .inner = inner, .qmin = qmin, .qmax = qmax, .grad_factor = gf};
    if (lsq_s) {
        qat_tensor *in[3] = {x, lsq_s, lsq_z};
        if (qat_needs_grad(ctx, 3, in) &&
            qat_tape_record(ctx, relu ? "fake_quant_lsq_relu" : "fake_quant_lsq",
                            relu ? fq_lsq_relu_backward : fq_lsq_backward, y, lsq_z ? 3 : 2, in, s) != QAT_OK)
            return NULL;
    } else if (qat_needs_grad(ctx, 1, &x) &&
               qat_tape_record(ctx, relu ? "fake_quant_relu" : "fake_quant", fq_backward, y, 1, &x, s) != QAT_OK) {
        return NULL;
    }
    return y;
}

/* The fake-quant of x (of relu(x) with relu; per tensor only) with q's
 * current parameters (learnable ones projected first). */
static qat_tensor *fq_apply(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, size_t outer, size_t channels,
                            size_t inner, int relu)
{
    if (!q->initialized)
        return qat_error_null(QAT_ERR_STATE, "fake_quant: quantizer has no parameters yet (observe or calibrate first)");
    int32_t zp1, *zps = channels == 1 ? &zp1 : qat_arena_alloc(ctx, channels * sizeof(int32_t));
    if (!zps) return NULL;
    const float *scales = qat_quantizer_scales(q);
    qat_quantizer_zero_points(q, zps);
    return fq_core(ctx, x, scales, zps, q->qmin, q->qmax, outer, channels, inner, relu, q->lsq_scale, q->lsq_zp,
                   q->lsq_scale ? lsq_grad_factor(outer * inner, q->qmax) : 0.0f);
}

/* an observer failed (no memory for its state, ...): the op returns NULL
 * and the step's context records why */
static qat_tensor *fq_fail(qat_ctx *ctx, int rc)
{
    qat_ctx_fail(ctx, rc);
    return NULL;
}

/* How x splits for q: [outer, channels, inner] along q's axis (per
 * tensor: channels 1). QAT_ERR_SHAPE when the channels do not match. */
static int fq_layout(const qat_tensor *x, const qat_quantizer *q, size_t *outer, size_t *channels, size_t *inner)
{
    *outer = 1, *channels = 1, *inner = x->numel;
    if (q->n > 1 || q->scheme.per_channel) {
        int ax = q->scheme.axis;
        if (ax < 0 || ax >= x->ndim || x->shape[ax] != q->n)
            return qat_error(QAT_ERR_SHAPE, "fake_quant: %d channel parameters for axis %d of a %d-d tensor", q->n,
                             ax, x->ndim);
        *outer = qat_shape_numel(ax, x->shape);
        *channels = (size_t)q->n;
        *inner = x->numel / (*outer * *channels);
    }
    return QAT_OK;
}

/* q's observer sees x (when q observes and is not a trained LSQ
 * quantizer) and fixes q's parameters; a failure is recorded on ctx. */
static int fq_observe(qat_ctx *ctx, const qat_tensor *x, qat_quantizer *q, size_t outer, size_t channels,
                      size_t inner)
{
    if (qat_quantizer_is_special(q)) {
        int rc = qat_quantizer_observe_special(q, x, outer, channels, inner);
        if (rc) qat_ctx_fail(ctx, rc);
        return rc;
    }
    if (!(q->observe && q->obs && !(q->lsq_scale && q->initialized))) return QAT_OK;
    int rc = q->n > 1 || q->scheme.per_channel ? qat_observer_observe_channels(q->obs, x->data, outer, channels, inner)
                                               : qat_observer_observe(q->obs, x->data, x->numel);
    /* histogram observers fix their parameters at finalize (costly) */
    if (!rc && (qat_observer_options(q->obs)->kind != QAT_OBSERVER_HISTOGRAM || !q->initialized))
        rc = qat_quantizer_from_observer(q, -1);
    if (rc) qat_ctx_fail(ctx, rc);
    return rc;
}

int qat_quantizer_observe(qat_ctx *ctx, qat_quantizer *q, const qat_tensor *x)
{
    size_t outer, channels, inner;
    int rc = fq_layout(x, q, &outer, &channels, &inner);
    return rc ? rc : fq_observe(ctx, x, q, outer, channels, inner);
}

qat_tensor *qat_fq(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe)
{
    if (!x) return NULL;
    size_t outer, channels, inner;
    if (fq_layout(x, q, &outer, &channels, &inner)) return NULL;
    if (observe && fq_observe(ctx, x, q, outer, channels, inner)) return NULL;
    if (!q->fake_quant) return x;
    if (qat_quantizer_is_special(q)) return qat_fq_special(ctx, x, q, outer, channels, inner, 0);
    return fq_apply(ctx, x, q, outer, channels, inner, 0);
}

qat_tensor *qat_fq_relu(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe, qat_tensor **relu_out)
{
    if (!x) return NULL;
    if (q->float_format && q->fake_quant) {
        qat_tensor *y = qat_fq_special(ctx, x, q, 1, 1, x->numel, 1);
        *relu_out = y;
        return y;
    }
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
    if (db) qat_fqk_bias_backward(db, e->out->grad, (int)e->out->numel);
}

qat_tensor *qat_fq_bias(qat_ctx *ctx, qat_tensor *b, float s_in, const float *s_w)
{
    if (!b) return NULL;
    qat_tensor *y = qat_new(ctx, b->ndim, b->shape);
    if (!y) return NULL;
    qat_fqk_bias(y->data, b->data, s_w, s_in, (int)b->numel);
    if (qat_needs_grad(ctx, 1, &b) &&
        qat_tape_record(ctx, "fake_quant_bias", fq_bias_backward, y, 1, &b, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- public tensor ops (include/qat/quant.h) ---- */

/* The kernels' preconditions (quant/fakequant.h). */
static int check_range(const char *op, int32_t qmin, int32_t qmax)
{
    if (!(qmin < qmax) || qmin < -65536 || qmax > 65536)
        return qat_error(QAT_ERR_ARG, "%s: range [%d, %d] invalid (need qmin < qmax within [-2^16, 2^16])", op,
                         qmin, qmax);
    return QAT_OK;
}

static int check_fixed(const char *op, const float *scales, const int32_t *zps, size_t n, int32_t qmin,
                       int32_t qmax)
{
    for (size_t c = 0; c < n; c++) {
        if (!(scales[c] > 0.0f) || !isfinite(scales[c]))
            return qat_error(QAT_ERR_ARG, "%s: scale %g of channel %zu is not a positive finite number", op,
                             scales[c], c);
        if (zps && (zps[c] < qmin || zps[c] > qmax))
            return qat_error(QAT_ERR_ARG, "%s: zero point %d of channel %zu outside [%d, %d]", op, zps[c], c, qmin,
                             qmax);
    }
    return QAT_OK;
}

/* x as (outer, channels, inner) around axis; QAT_ERR_ARG/SHAPE otherwise. */
static int split_axis(const char *op, const qat_tensor *x, int axis, size_t *outer, size_t *channels,
                      size_t *inner)
{
    if (axis < 0 || axis >= x->ndim)
        return qat_error(QAT_ERR_ARG, "%s: axis %d of a %d-d tensor", op, axis, x->ndim);
    *outer = qat_shape_numel(axis, x->shape);
    *channels = (size_t)x->shape[axis];
    *inner = *channels ? x->numel / (*outer * *channels) : 0;
    return QAT_OK;
}

qat_tensor *qat_fake_quant_per_tensor(qat_ctx *ctx, qat_tensor *x, float scale, int32_t zero_point, int32_t qmin,
                                      int32_t qmax)
{
    if (!x) return NULL;
    const char *op = "fake_quant_per_tensor";
    if (check_range(op, qmin, qmax) || check_fixed(op, &scale, &zero_point, 1, qmin, qmax)) return NULL;
    return fq_core(ctx, x, &scale, &zero_point, qmin, qmax, 1, 1, x->numel, 0, NULL, NULL, 0.0f);
}

qat_tensor *qat_fake_quant_per_channel(qat_ctx *ctx, qat_tensor *x, const float *scales,
                                       const int32_t *zero_points, int axis, int32_t qmin, int32_t qmax)
{
    if (!x) return NULL;
    const char *op = "fake_quant_per_channel";
    size_t outer = 1, channels = 1, inner = 1;
    if (!scales) return qat_error_null(QAT_ERR_ARG, "%s: NULL scales", op);
    if (check_range(op, qmin, qmax) || split_axis(op, x, axis, &outer, &channels, &inner) ||
        check_fixed(op, scales, zero_points, channels, qmin, qmax))
        return NULL;
    const int32_t *zps = zero_points;
    if (!zps && (0 < qmin || 0 > qmax))
        return qat_error_null(QAT_ERR_ARG, "%s: NULL zero points (0) but 0 is outside [%d, %d]", op, qmin, qmax);
    if (!zps) {
        int32_t *z = qat_arena_alloc(ctx, channels * sizeof(int32_t) + 1);
        if (!z) return NULL;
        memset(z, 0, channels * sizeof(int32_t));
        zps = z;
    }
    return fq_core(ctx, x, scales, zps, qmin, qmax, outer, channels, inner, 0, NULL, NULL, 0.0f);
}

/* The learnable ops: parameters checked, projected in place (lsq_project),
 * then used as integers / floats like a learnable quantizer's. */
static qat_tensor *fq_learnable(const char *op, qat_ctx *ctx, qat_tensor *x, qat_tensor *scale,
                                qat_tensor *zero_point, size_t outer, size_t channels, size_t inner, int32_t qmin,
                                int32_t qmax, float grad_factor)
{
    if (scale->numel != channels)
        return qat_error_null(QAT_ERR_SHAPE, "%s: scale has %zu elements, %zu expected", op, scale->numel, channels);
    if (zero_point && zero_point->numel != channels)
        return qat_error_null(QAT_ERR_SHAPE, "%s: zero point has %zu elements, %zu expected", op,
                              zero_point->numel, channels);
    if (!(grad_factor >= 0.0f) || !isfinite(grad_factor))
        return qat_error_null(QAT_ERR_ARG, "%s: grad_factor %g invalid", op, grad_factor);
    if (grad_factor == 0.0f) {
        if (qmax <= 0)
            return qat_error_null(QAT_ERR_ARG, "%s: the default grad_factor 1/sqrt(N*qmax) needs qmax > 0 (qmax %d)",
                                  op, qmax);
        grad_factor = lsq_grad_factor(outer * inner, qmax);
    }
    if (!zero_point && (0 < qmin || 0 > qmax))
        return qat_error_null(QAT_ERR_ARG, "%s: no zero point tensor (zero point 0) but 0 is outside [%d, %d]", op,
                              qmin, qmax);
    for (size_t c = 0; c < channels; c++)
        if (scale->data[c] == INFINITY)
            return qat_error_null(QAT_ERR_ARG, "%s: scale of channel %zu is infinite", op, c);
    int32_t *zps = qat_arena_alloc(ctx, channels * sizeof(int32_t) + 1);
    if (!zps) return NULL;
    lsq_project(scale->data, zero_point ? zero_point->data : NULL, channels, qmin, qmax);
    for (size_t c = 0; c < channels; c++)
        zps[c] = zero_point ? qat_zero_point_from_float(zero_point->data[c], qmin, qmax) : 0;
    return fq_core(ctx, x, scale->data, zps, qmin, qmax, outer, channels, inner, 0, scale, zero_point,
                   grad_factor);
}

qat_tensor *qat_fake_quant_lsq(qat_ctx *ctx, qat_tensor *x, qat_tensor *scale, qat_tensor *zero_point,
                               int32_t qmin, int32_t qmax, float grad_factor)
{
    if (!x || !scale) return NULL;
    const char *op = "fake_quant_lsq";
    if (check_range(op, qmin, qmax)) return NULL;
    return fq_learnable(op, ctx, x, scale, zero_point, 1, 1, x->numel, qmin, qmax, grad_factor);
}

qat_tensor *qat_fake_quant_lsq_per_channel(qat_ctx *ctx, qat_tensor *x, qat_tensor *scale, qat_tensor *zero_point,
                                           int axis, int32_t qmin, int32_t qmax, float grad_factor)
{
    if (!x || !scale) return NULL;
    const char *op = "fake_quant_lsq_per_channel";
    size_t outer = 1, channels = 1, inner = 1;
    if (check_range(op, qmin, qmax) || split_axis(op, x, axis, &outer, &channels, &inner)) return NULL;
    return fq_learnable(op, ctx, x, scale, zero_point, outer, channels, inner, qmin, qmax, grad_factor);
}

/* ---- requantization (include/qat/quant.h): runtime/rounding.h's code ---- */

int qat_requant_multiplier(double real_multiplier, int32_t *multiplier, int *shift)
{
    int32_t m0 = 0;
    int sh = 0;
    int rc = qat_quantize_multiplier(real_multiplier, &m0, &sh);
    if (multiplier) *multiplier = m0;
    if (shift) *shift = sh;
    if (rc) return qat_error(QAT_ERR_ARG, "requant_multiplier: %g is negative, NaN or infinite", real_multiplier);
    return QAT_OK;
}

int32_t qat_requantize(int32_t acc, int32_t multiplier, int shift, int32_t zero_point, int32_t qmin, int32_t qmax)
{
    return qat_requant_clamp(acc, multiplier, shift, zero_point, qmin, qmax);
}
