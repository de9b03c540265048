/* Batch normalisation over (N, H, W) per channel; forward and backward.
 *
 * Statistics are summed in double over 32 interleaved lanes (fixed order,
 * so the result does not depend on the thread count and the loops
 * vectorise). The normalised input xhat = (x - mean) * invstd is not
 * stored: backward recomputes it from x with the same float operations,
 * which saves a tensor-sized write and read. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

typedef struct {
    float *mean;   /* (C) the mean used to normalise */
    float *invstd; /* (C) */
    int training;  /* batch statistics were used */
    int act;       /* a fused activation: y = act(bn(x)) */
    float lo, hi;  /* BN_CLAMP bounds */
    const float *hi_c; /* BN_CLAMP per-channel upper bounds (arena copy) or NULL */
} bn_saved;

enum { BN_NONE = 0, BN_RELU, BN_CLAMP, BN_HARDSWISH };

#define LANES QAT_BN_LANES /* the kernels' double accumulator lanes */

/* A channel's values are N runs of HW floats, one per sample, a sample
 * apart: the hardware prefetcher loses the stream at every jump, so the
 * next run is requested while this one is summed. */
static void prefetch_run(const float *p, size_t n)
{
#if defined(__GNUC__)
    for (size_t i = 0; i < n; i += 16) __builtin_prefetch(p + i);
#else
    (void)p, (void)n;
#endif
}

/* the lanes summed pairwise, in a fixed order */
static double lanes_total(const double *acc)
{
    double t[LANES];
    memcpy(t, acc, sizeof t);
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) t[j] = t[j] + t[j + w];
    return t[0];
}

/* the gradient at BN's output of one run, fresh into dz (see bn_backward) */
static void act_grad(float *dz, const bn_saved *s, const float *y, const float *x, const float *dy, size_t n,
                     float mean, float is, float g, float b, float hi)
{
    switch (s->act) {
    case BN_RELU: qat_k_relu_bwd(dz, y, dy, n, 1); break;
    case BN_CLAMP: qat_k_clamp_bwd(dz, y, dy, n, s->lo, hi, 1); break;
    case BN_HARDSWISH:
        qat_k_bn_apply(dz, x, n, mean, is, g, b);
        qat_k_hardswish_bwd(dz, dz, dy, n, 1);
        break;
    }
}

static void bn_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *gamma = e->in[1], *beta = e->in[2], *y = e->out;
    const bn_saved *s = e->saved;
    int N = x->shape[0], C = x->shape[1];
    size_t HW = x->numel / ((size_t)N * C);
    double M = (double)N * HW;
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh);
    float *dg = qat_grad(ctx, gamma), *db = qat_grad(ctx, beta);
    const float *dyall = y->grad, *xall = x->data;
    /* fused activation: a scratch run of HW floats per thread */
    float *scratch = s->act ? qat_arena_alloc(ctx, (size_t)omp_get_max_threads() * HW * sizeof(float)) : NULL;
    if (s->act && !scratch) return; /* out of memory: error is set */
/* channels handed out as threads come free (a parked thread does not hold
 * the others back); each channel is summed by one thread */
#pragma omp parallel for schedule(dynamic, 1) if (x->numel > 32768)
    for (int c = 0; c < C; c++) {
        const float mean = s->mean[c], is = s->invstd[c];
        /* with a fused activation, a run's gradient at BN's output is
         * formed in the thread's scratch run (the bits the activation's
         * own backward would have stored) each time it is read: ReLU and
         * clamp from BN's output y (y is inside (lo, hi) exactly where
         * BN's output is), hard-swish from BN's output recomputed with
         * the forward's operations */
        float *dz = scratch ? scratch + (size_t)omp_get_thread_num() * HW : NULL;
        const float chi = s->hi_c ? s->hi_c[c] : s->hi;
#define BN_DY(o) (dz ? (act_grad(dz, s, y->data + (o), xall + (o), dyall + (o), HW, mean, is, gamma->data[c], \
                                 beta->data[c], chi), dz)                                                   \
                     : dyall + (o))
        double as[LANES] = {0}, at[LANES] = {0};
        for (int n = 0; n < N; n++) {
            size_t o = ((size_t)n * C + c) * HW, next = o + (size_t)C * HW;
            if (n + 1 < N) {
                prefetch_run(dyall + next, HW);
                prefetch_run(xall + next, HW);
                if (dz) prefetch_run(y->data + next, HW);
            }
            qat_k_acc_dy(as, at, BN_DY(o), xall + o, HW, mean, is);
        }
        double sdy = lanes_total(as), sdyx = lanes_total(at);
        if (dg) dg[c] += (float)sdyx;
        if (db) db[c] += (float)sdy;
        if (!dx) continue;
        const float g = gamma->data[c] * is;
        /* training: dx = g * (dy - mean(dy) - xhat * mean(dy * xhat));
         * evaluation: dx = g * dy */
        const float mdy = s->training ? (float)(sdy / M) : 0.0f;
        const float mdyx = s->training ? (float)(sdyx / M) : 0.0f;
        for (int n = 0; n < N; n++) {
            size_t o = ((size_t)n * C + c) * HW;
            qat_k_bn_bwd(dx + o, BN_DY(o), xall + o, HW, mean, is, g, mdy, mdyx, fresh);
        }
#undef BN_DY
    }
}

static qat_tensor *batchnorm(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                             qat_tensor *running_mean, qat_tensor *running_var, float momentum, float eps,
                             int act, float lo, float hi, const float *hi_c_in)
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
    if (act == BN_CLAMP) {
        for (int c = 0; c < (hi_c_in ? C : 1); c++) {
            float h = hi_c_in ? hi_c_in[c] : hi;
            if (isnan(lo) || isnan(h) || h < lo)
                return qat_error_null(QAT_ERR_ARG, "batchnorm2d_clamp: channel %d bounds [%g, %g] invalid", c,
                                      (double)lo, (double)h);
        }
    }
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    bn_saved *s = qat_arena_alloc(ctx, sizeof *s);
    float *stats = qat_arena_alloc(ctx, 2 * (size_t)C * sizeof(float));
    float *hi_c = hi_c_in ? qat_arena_alloc(ctx, (size_t)C * sizeof(float)) : NULL;
    if (!y || !s || !stats || (hi_c_in && !hi_c)) return NULL;
    if (hi_c) memcpy(hi_c, hi_c_in, (size_t)C * sizeof(float));
    float *means = stats, *invstd = stats + C;
    double M = (double)N * HW;
    const float *xall = x->data;
    float *yall = y->data;
/* channels handed out as threads come free (a parked thread does not hold
 * the others back); each channel is summed by one thread */
#pragma omp parallel for schedule(dynamic, 1) if (x->numel > 32768)
    for (int c = 0; c < C; c++) {
        float mean, var;
        if (training) {
            /* two passes: the mean, then the squared deviations from it */
            double acc[LANES] = {0};
            for (int n = 0; n < N; n++) {
                if (n + 1 < N) prefetch_run(xall + ((size_t)(n + 1) * C + c) * HW, HW);
                qat_k_acc_sum(acc, xall + ((size_t)n * C + c) * HW, HW);
            }
            double mu = lanes_total(acc) / M;
            memset(acc, 0, sizeof acc);
            for (int n = 0; n < N; n++) qat_k_acc_sqdev(acc, xall + ((size_t)n * C + c) * HW, HW, mu);
            double sq = lanes_total(acc);
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
        means[c] = mean;
        invstd[c] = is;
        const float g = gamma->data[c], b = beta->data[c];
        for (int n = 0; n < N; n++) {
            size_t o = ((size_t)n * C + c) * HW;
            qat_k_bn_apply(yall + o, xall + o, HW, mean, is, g, b);
            /* the run is still in L1 */
            if (act == BN_RELU) qat_k_relu_fwd(yall + o, yall + o, HW);
            else if (act == BN_CLAMP) qat_k_clamp_fwd(yall + o, yall + o, HW, lo, hi_c ? hi_c[c] : hi);
            else if (act == BN_HARDSWISH) qat_k_hardswish_fwd(yall + o, yall + o, HW);
        }
    }
    s->mean = means;
    s->invstd = invstd;
    s->training = training;
    s->act = act;
    s->lo = lo;
    s->hi = hi;
    s->hi_c = hi_c;
    static const char *const names[] = {"batchnorm2d", "batchnorm2d_relu", "batchnorm2d_clamp",
                                        "batchnorm2d_hardswish"};
    qat_tensor *in[3] = {x, gamma, beta};
    if (qat_needs_grad(ctx, 3, in) && qat_tape_record(ctx, names[act], bn_backward, y, 3, in, s) != QAT_OK)
        return NULL;
    return y;
}

qat_tensor *qat_batchnorm2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                            qat_tensor *running_mean, qat_tensor *running_var, float momentum, float eps)
{
    return batchnorm(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, BN_NONE, 0, 0, NULL);
}

qat_tensor *qat_batchnorm2d_relu(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                 qat_tensor *running_mean, qat_tensor *running_var, float momentum, float eps)
{
    return batchnorm(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, BN_RELU, 0, 0, NULL);
}

qat_tensor *qat_batchnorm2d_clamp(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                  qat_tensor *running_mean, qat_tensor *running_var, float momentum, float eps,
                                  float lo, float hi, const float *hi_c)
{
    return batchnorm(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, BN_CLAMP, lo, hi, hi_c);
}

qat_tensor *qat_batchnorm2d_hardswish(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                      qat_tensor *running_mean, qat_tensor *running_var, float momentum, float eps)
{
    return batchnorm(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, BN_HARDSWISH, 0, 0, NULL);
}
