/* Batch normalisation over (N, H, W) per channel; forward and backward. */
#include <math.h>
#include <string.h>

#include "autograd/internal.h"

typedef struct {
    float *xhat;   /* (N,C,HW) normalised input */
    float *invstd; /* (C) */
    int training;  /* batch statistics were used */
} bn_saved;

static void bn_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *gamma = e->in[1], *beta = e->in[2], *y = e->out;
    const bn_saved *s = e->saved;
    int N = x->shape[0], C = x->shape[1];
    size_t HW = x->numel / ((size_t)N * C);
    double M = (double)N * HW;
    float *dx = qat_grad(ctx, x), *dg = qat_grad(ctx, gamma), *db = qat_grad(ctx, beta);
#pragma omp parallel for schedule(static) if (x->numel > 32768)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (int n = 0; n < N; n++) {
            size_t o = ((size_t)n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                sdy += y->grad[o + i];
                sdyx += (double)y->grad[o + i] * s->xhat[o + i];
            }
        }
        if (dg) dg[c] += (float)sdyx;
        if (db) db[c] += (float)sdy;
        if (!dx) continue;
        float g = gamma->data[c] * s->invstd[c];
        if (s->training) {
            /* dx = g * (dy - mean(dy) - xhat * mean(dy * xhat)) */
            float mdy = (float)(sdy / M), mdyx = (float)(sdyx / M);
            for (int n = 0; n < N; n++) {
                size_t o = ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++)
                    dx[o + i] += g * (y->grad[o + i] - mdy - s->xhat[o + i] * mdyx);
            }
        } else {
            for (int n = 0; n < N; n++) {
                size_t o = ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) dx[o + i] += g * y->grad[o + i];
            }
        }
    }
}

qat_tensor *qat_batchnorm2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                            qat_tensor *running_mean, qat_tensor *running_var, float momentum,
                            float eps)
{
    if (!x || !gamma || !beta || !running_mean || !running_var) return NULL;
    if (x->ndim != 4 && x->ndim != 2)
        return qat_error_null(QAT_ERR_SHAPE, "batchnorm2d: input must be [N,C,H,W] or [N,C]");
    int N = x->shape[0], C = x->shape[1];
    if (gamma->numel != (size_t)C || beta->numel != (size_t)C || running_mean->numel != (size_t)C ||
        running_var->numel != (size_t)C)
        return qat_error_null(QAT_ERR_SHAPE, "batchnorm2d: input has %d channels, parameters do not", C);
    size_t HW = x->numel / ((size_t)N * C);
    int training = qat_ctx_training(ctx);
    if (training && (size_t)N * HW < 2)
        return qat_error_null(QAT_ERR_SHAPE, "batchnorm2d: training needs more than one value per channel");
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    bn_saved *s = qat_arena_alloc(ctx, sizeof *s);
    float *xhat = qat_arena_alloc(ctx, x->numel * sizeof(float));
    float *invstd = qat_arena_alloc(ctx, (size_t)C * sizeof(float));
    if (!y || !s || !xhat || !invstd) return NULL;
    double M = (double)N * HW;
#pragma omp parallel for schedule(static) if (x->numel > 32768)
    for (int c = 0; c < C; c++) {
        float mean, var;
        if (training) {
            double sum = 0, sq = 0;
            for (int n = 0; n < N; n++) {
                const float *p = x->data + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) sum += p[i];
            }
            double mu = sum / M;
            for (int n = 0; n < N; n++) {
                const float *p = x->data + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) sq += (p[i] - mu) * (p[i] - mu);
            }
            mean = (float)mu;
            var = (float)(sq / M);
            running_mean->data[c] = (1.0f - momentum) * running_mean->data[c] + momentum * mean;
            running_var->data[c] = (1.0f - momentum) * running_var->data[c] +
                                   momentum * (float)(sq / (M - 1.0));
        } else {
            mean = running_mean->data[c];
            var = running_var->data[c];
        }
        float is = 1.0f / sqrtf(var + eps);
        invstd[c] = is;
        float g = gamma->data[c], b = beta->data[c];
        for (int n = 0; n < N; n++) {
            size_t o = ((size_t)n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                float h = (x->data[o + i] - mean) * is;
                xhat[o + i] = h;
                y->data[o + i] = g * h + b;
            }
        }
    }
    s->xhat = xhat;
    s->invstd = invstd;
    s->training = training;
    qat_tensor *in[3] = {x, gamma, beta};
    if (qat_needs_grad(ctx, 3, in) &&
        qat_tape_record(ctx, "batchnorm2d", bn_backward, y, 3, in, s) != QAT_OK)
        return NULL;
    return y;
}
