/* Per-channel scaling along one axis: y = x * s[c] or x / s[c]. */
#include "autograd/internal.h"

typedef struct {
    size_t outer, C, inner;
    int divide;
} chan_saved;

/* d(x*s)/ds sums dy * x over a channel in CM_LANES interleaved double
 * accumulators (element i of each span into lane i mod CM_LANES, the
 * span's tail into lane 0), added in lane order: a fixed order (the same
 * bits on any number of threads) whose chains do not wait on one add's
 * latency each. */
#define CM_LANES 8

static void channel_mul_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *s = e->in[1];
    const chan_saved *d = e->saved;
    const float *dy = e->out->grad;
    float *dx = qat_grad(ctx, x), *ds = qat_grad(ctx, s);
    /* channels are independent */
#pragma omp parallel for schedule(static) if (x->numel > 32768)
    for (size_t c = 0; c < d->C; c++) {
        float sc = s->data[c];
        float f = d->divide ? 1.0f / sc : sc;
        double acc[CM_LANES] = {0};
        for (size_t o = 0; o < d->outer; o++) {
            size_t base = (o * d->C + c) * d->inner;
            const float *g = dy + base, *xv = x->data + base;
            if (dx)
                for (size_t i = 0; i < d->inner; i++) dx[base + i] += g[i] * f;
            size_t i = 0;
            for (; i + CM_LANES <= d->inner; i += CM_LANES)
                for (int l = 0; l < CM_LANES; l++) acc[l] += (double)g[i + l] * xv[i + l];
            for (; i < d->inner; i++) acc[0] += (double)g[i] * xv[i];
        }
        double sum = acc[0];
        for (int l = 1; l < CM_LANES; l++) sum += acc[l];
        /* d(x*s)/ds = x ; d(x/s)/ds = -x/s^2 */
        if (ds) ds[c] += d->divide ? (float)(-sum / ((double)sc * sc)) : (float)sum;
    }
}

qat_tensor *qat_channel_mul(qat_ctx *ctx, qat_tensor *x, qat_tensor *s, int axis, int divide)
{
    if (!x || !s) return NULL;
    if (axis < 0 || axis >= x->ndim)
        return qat_error_null(QAT_ERR_ARG, "channel_mul: axis %d outside a %d-d tensor", axis, x->ndim);
    if (s->numel != (size_t)x->shape[axis])
        return qat_error_null(QAT_ERR_SHAPE, "channel_mul: %zu scales for %d channels", s->numel, x->shape[axis]);
    chan_saved *d = qat_arena_alloc(ctx, sizeof *d);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    if (!d || !y) return NULL;
    d->outer = qat_shape_numel(axis, x->shape);
    d->C = (size_t)x->shape[axis];
    d->inner = x->numel / (d->outer * d->C);
    d->divide = divide != 0;
#pragma omp parallel for schedule(static) if (x->numel > 32768)
    for (size_t o = 0; o < d->outer; o++)
        for (size_t c = 0; c < d->C; c++) {
            float sc = s->data[c];
            size_t base = (o * d->C + c) * d->inner;
            if (d->divide)
                for (size_t i = 0; i < d->inner; i++) y->data[base + i] = x->data[base + i] / sc;
            else
                for (size_t i = 0; i < d->inner; i++) y->data[base + i] = x->data[base + i] * sc;
        }
    qat_tensor *in[2] = {x, s};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "channel_mul", channel_mul_backward, y, 2, in, d) != QAT_OK)
        return NULL;
    return y;
}
