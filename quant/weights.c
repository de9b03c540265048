/* quant/weights.c: the quantizers beyond the uniform grid (docs/QUANT.md,
 * "Binary, clustered and hashed weights", "fp16 and bf16"):
 *
 * - binary (w1): w_q = alpha_c * sign(w), sign(0) = +1, alpha_c = mean |w|
 *   of output channel c when observed (the least-squares optimum), then
 *   learnable (LSQ): d alpha_c = g * sum dy * sign(w) (the exact
 *   derivative), dw = dy where |w| <= alpha_c (the scaled clip), else 0;
 * - codebook (wc<K>): K shared values (centroids) a layer, initialised by
 *   k-means on the first weights observed (linear initialisation between
 *   min and max, Lloyd's iterations until no assignment changes, at most
 *   QAT_KMEANS_ITERS); each forward assigns every weight to its nearest
 *   centroid (ties to the lower one); the centroids are learnable (d c_k =
 *   the sum of dy over its members, scaled by 1 / members: see below) and
 *   the latent weights receive the straight-through gradient, so a weight
 *   can move to another cluster;
 * - hashed (wh<K>): weight i of the layer takes bucket
 *   qat_i8_hash_bucket(seed, i, K); the K bucket values start as the mean
 *   of their members and are the only trained part (d v_k = sum of dy over
 *   its members, HashedNets' true gradient; the latent weights get no
 *   gradient);
 * - the 1 / members scale of codebook centroids is LSQ's idea (a shared
 *   parameter's gradient scaled down by how many elements it serves): with
 *   the plain sum a centroid of 3,000 weights steps 3,000 times as far as
 *   one weight, and lenet5 wc16a8 QAT diverged to NaN within 120 steps at
 *   the recipe's learning rate. A hash bucket's members are spread at
 *   random over the layer and their gradients mostly cancel: the plain sum;
 * - codebook and hashed values are used on a per-tensor int8 grid,
 *   s = max_k |v_k| / 127, v_q = clamp(round(v / s), -127, 127) * s, so the
 *   int8 runtime stores K int8 values;
 * - fp16 / bf16: x rounded to the format (qat/half.h: nearest-even,
 *   saturating), straight-through inside the finite range. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "qat/format_int8.h"
#include "qat/half.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

#define QAT_KMEANS_ITERS 100

float qat_values_scale(const qat_quantizer *q)
{
    float m = 0;
    for (int k = 0; k < q->k; k++) {
        float a = fabsf(q->values->data[k]);
        if (a > m) m = a;
    }
    float s = m / 127.0f;
    return s >= QAT_SCALE_EPS ? s : QAT_SCALE_EPS;
}

int qat_quantizer_is_special(const qat_quantizer *q)
{
    return q->float_format || q->kind != QAT_WEIGHT_UNIFORM || q->scheme.bits == 1;
}

/* ---- codebook assignment ---- */

typedef struct {
    float v;
    int k;
} centroid;

static int centroid_cmp(const void *a, const void *b)
{
    const centroid *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->k - y->k;
}

/* a[i] = index of the centroid nearest x[i] (ties: the smaller value, then
 * the lower index), by binary search over the sorted centroids' midpoints. */
static void assign(const float *v, int K, const float *x, size_t n, uint8_t *a)
{
    centroid c[256];
    for (int k = 0; k < K; k++) c[k] = (centroid){v[k], k};
    qsort(c, (size_t)K, sizeof *c, centroid_cmp);
    double mid[256];
    for (int k = 0; k + 1 < K; k++) mid[k] = 0.5 * ((double)c[k].v + (double)c[k + 1].v);
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        int lo = 0, hi = K - 1; /* the first sorted centroid whose upper midpoint is >= x */
        while (lo < hi) {
            int m = (lo + hi) / 2;
            if (xi <= mid[m]) hi = m;
            else lo = m + 1;
        }
        a[i] = (uint8_t)c[lo].k;
    }
}

/* k-means of x into v[K]: linear initialisation, Lloyd's iterations. */
static int kmeans(float *v, int K, const float *x, size_t n)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return qat_error(QAT_ERR_ARG, "codebook: weight %zu is %g", i, x[i]);
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (n == 0) lo = hi = 0;
    for (int k = 0; k < K; k++) v[k] = (float)(lo + ((double)hi - lo) * k / (K - 1));
    uint8_t *a = qat_malloc(n + 1), *prev = qat_malloc(n + 1);
    double *sum = qat_calloc((size_t)K, sizeof *sum);
    size_t *cnt = qat_calloc((size_t)K, sizeof *cnt);
    int rc = (!a || !prev || !sum || !cnt) ? qat_error(QAT_ERR_NOMEM, "codebook: out of memory") : QAT_OK;
    for (int it = 0; !rc && it < QAT_KMEANS_ITERS; it++) {
        assign(v, K, x, n, a);
        if (it > 0 && !memcmp(a, prev, n)) break;
        memcpy(prev, a, n);
        memset(sum, 0, (size_t)K * sizeof *sum);
        memset(cnt, 0, (size_t)K * sizeof *cnt);
        for (size_t i = 0; i < n; i++) {
            sum[a[i]] += x[i];
            cnt[a[i]]++;
        }
        for (int k = 0; k < K; k++)
            if (cnt[k]) v[k] = (float)(sum[k] / (double)cnt[k]);
    }
    free(a);
    free(prev);
    free(sum);
    free(cnt);
    return rc;
}

/* ---- observing: the parameters from the tensor itself ---- */

int qat_quantizer_observe_special(qat_quantizer *q, const qat_tensor *x, size_t outer, size_t channels,
                                  size_t inner)
{
    if (q->float_format || !q->observe) return QAT_OK;
    if (q->kind == QAT_WEIGHT_UNIFORM) { /* binary */
        if (q->lsq_scale && q->initialized) return QAT_OK;
        for (size_t c = 0; c < channels; c++) {
            double s = 0;
            for (size_t o = 0; o < outer; o++)
                for (size_t i = 0; i < inner; i++) s += fabs((double)x->data[(o * channels + c) * inner + i]);
            float a = (float)(s / (double)(outer * inner));
            if (!isfinite(a)) return qat_error(QAT_ERR_ARG, "binary weights: channel %zu has a non-finite weight", c);
            q->scale[c] = a >= QAT_SCALE_EPS ? a : QAT_SCALE_EPS;
            if (q->lsq_scale) q->lsq_scale->data[c] = q->scale[c];
        }
        q->initialized = 1;
        return QAT_OK;
    }
    if (q->initialized) return QAT_OK; /* the shared values are learned from here on */
    int K = q->k, rc = QAT_OK;
    float *v = q->values->data;
    if (q->kind == QAT_WEIGHT_CODEBOOK) {
        rc = kmeans(v, K, x->data, x->numel);
    } else {
        double sum[256] = {0};
        size_t cnt[256] = {0};
        for (size_t i = 0; i < x->numel; i++) {
            unsigned b = qat_i8_hash_bucket(q->seed, (unsigned)i, (unsigned)K);
            sum[b] += x->data[i];
            cnt[b]++;
        }
        for (int k = 0; k < K; k++) v[k] = cnt[k] ? (float)(sum[k] / (double)cnt[k]) : 0.0f;
    }
    if (rc) return rc;
    q->scale[0] = qat_values_scale(q);
    q->initialized = 1;
    return QAT_OK;
}

/* ---- integer weights (the converter and the integer-grid evaluation) ---- */

/* The int8 value of shared value k on the grid of scale s. */
static int8_t value_int(const qat_quantizer *q, int k, float inv)
{
    return (int8_t)qat_quantize_val(q->values->data[k], inv, 0, -127, 127);
}

int qat_quantizer_value_ints(const qat_quantizer *q, int8_t *out)
{
    if (!q->values) return QAT_ERR_ARG;
    float inv = 1.0f / qat_values_scale(q);
    for (int k = 0; k < q->k; k++) out[k] = value_int(q, k, inv);
    return QAT_OK;
}

int qat_quantizer_weight_ints(const qat_quantizer *q, const float *w, size_t n, int8_t *out)
{
    if (q->float_format || (q->kind == QAT_WEIGHT_UNIFORM && q->scheme.bits != 1))
        return qat_error(QAT_ERR_ARG, "weight_ints: not a binary, codebook or hashed quantizer");
    if (q->kind == QAT_WEIGHT_UNIFORM) { /* binary */
        for (size_t i = 0; i < n; i++) out[i] = w[i] >= 0.0f ? 1 : -1;
        return QAT_OK;
    }
    int8_t vi[256];
    qat_quantizer_value_ints(q, vi);
    if (q->kind == QAT_WEIGHT_HASHED) {
        for (size_t i = 0; i < n; i++) out[i] = vi[qat_i8_hash_bucket(q->seed, (unsigned)i, (unsigned)q->k)];
        return QAT_OK;
    }
    uint8_t *a = qat_malloc(n + 1);
    if (!a) return qat_error(QAT_ERR_NOMEM, "codebook: out of memory");
    assign(q->values->data, q->k, w, n, a);
    for (size_t i = 0; i < n; i++) out[i] = vi[a[i]];
    free(a);
    return QAT_OK;
}

/* ---- the ops ---- */

typedef struct {
    uint8_t *idx;  /* shared values: each weight's value; binary: sign bit; floats: the STE mask */
    uint8_t *mask; /* binary: |w| <= alpha */
    size_t outer, channels, inner;
    int K, latent; /* shared values: the latent weights get the straight-through gradient */
    float gf;
} special_saved;

static void binary_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const special_saved *s = e->saved;
    const float *dy = e->out->grad;
    float *dx = qat_grad(ctx, e->in[0]), *ds = e->in[1] ? qat_grad(ctx, e->in[1]) : NULL;
    for (size_t c = 0; c < s->channels; c++) {
        double acc = 0;
        for (size_t o = 0; o < s->outer; o++)
            for (size_t i = 0; i < s->inner; i++) {
                size_t j = (o * s->channels + c) * s->inner + i;
                if (dx && s->mask[j]) dx[j] += dy[j];
                acc += s->idx[j] ? (double)dy[j] : -(double)dy[j];
            }
        if (ds) ds[c] += (float)(acc * s->gf);
    }
}

static void shared_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const special_saved *s = e->saved;
    const float *dy = e->out->grad;
    size_t n = e->out->numel;
    float *dx = s->latent ? qat_grad(ctx, e->in[0]) : NULL, *dv = qat_grad(ctx, e->in[1]);
    if (dx)
        for (size_t i = 0; i < n; i++) dx[i] += dy[i];
    if (dv) {
        double acc[256] = {0};
        size_t cnt[256] = {0};
        for (size_t i = 0; i < n; i++) {
            acc[s->idx[i]] += dy[i];
            cnt[s->idx[i]]++;
        }
        for (int k = 0; k < s->K; k++)
            if (cnt[k]) dv[k] += (float)(s->latent ? acc[k] / (double)cnt[k] : acc[k]);
    }
}

static void float_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const special_saved *s = e->saved;
    float *dx = qat_grad(ctx, e->in[0]);
    if (!dx) return;
    for (size_t i = 0; i < e->out->numel; i++)
        if (s->mask[i]) dx[i] += e->out->grad[i];
}

qat_tensor *qat_fq_special(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, size_t outer, size_t channels,
                           size_t inner, int relu)
{
    if (!q->initialized)
        return qat_error_null(QAT_ERR_STATE, "fake_quant: quantizer has no parameters yet (observe or calibrate first)");
    size_t n = x->numel;
    special_saved *s = qat_arena_alloc(ctx, sizeof *s);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    uint8_t *idx = qat_arena_alloc(ctx, n + 1);
    if (!s || !y || !idx) return NULL;
    memset(s, 0, sizeof *s);
    s->idx = idx;
    s->outer = outer, s->channels = channels, s->inner = inner;
    qat_tensor *in[2] = {x, NULL};
    qat_backward_fn fn;
    const char *name;
    if (q->float_format) {
        double maxv = q->float_format == QAT_FLOAT_FP16 ? QAT_F16_MAX : QAT_BF16_MAX;
        for (size_t i = 0; i < n; i++) {
            float v = relu && !(x->data[i] > 0.0f) ? 0.0f : x->data[i];
            y->data[i] = q->float_format == QAT_FLOAT_FP16 ? qat_f16_round(v) : qat_bf16_round(v);
            idx[i] = (!relu || x->data[i] > 0.0f) && fabs((double)v) <= maxv;
        }
        s->mask = idx;
        fn = float_backward;
        name = q->float_format == QAT_FLOAT_FP16 ? "round_fp16" : "round_bf16";
    } else if (q->kind == QAT_WEIGHT_UNIFORM) { /* binary */
        uint8_t *mask = qat_arena_alloc(ctx, n + 1);
        if (!mask) return NULL;
        const float *sc = qat_quantizer_scales(q);
        for (size_t c = 0; c < channels; c++)
            if (!(sc[c] > 0.0f) || !isfinite(sc[c]))
                return qat_error_null(QAT_ERR_STATE, "fake_quant: binary scale %g of channel %zu is not positive", sc[c], c);
        for (size_t o = 0; o < outer; o++)
            for (size_t c = 0; c < channels; c++)
                for (size_t i = 0; i < inner; i++) {
                    size_t j = (o * channels + c) * inner + i;
                    float w = x->data[j];
                    idx[j] = w >= 0.0f;
                    mask[j] = fabsf(w) <= sc[c];
                    y->data[j] = idx[j] ? sc[c] : -sc[c];
                }
        s->mask = mask;
        s->gf = (float)(1.0 / sqrt((double)(outer * inner)));
        in[1] = q->lsq_scale;
        fn = binary_backward;
        name = "fake_quant_binary";
    } else {
        int K = q->k;
        float sc = qat_values_scale(q), inv = 1.0f / sc, vq[256];
        for (int k = 0; k < K; k++) vq[k] = (float)value_int(q, k, inv) * sc;
        if (q->kind == QAT_WEIGHT_HASHED) {
            for (size_t i = 0; i < n; i++) idx[i] = (uint8_t)qat_i8_hash_bucket(q->seed, (unsigned)i, (unsigned)K);
        } else {
            for (size_t i = 0; i < n; i++)
                if (!isfinite(x->data[i]))
                    return qat_error_null(QAT_ERR_ARG, "fake_quant: codebook weight %zu is %g", i, x->data[i]);
            assign(q->values->data, K, x->data, n, idx);
        }
        for (size_t i = 0; i < n; i++) y->data[i] = vq[idx[i]];
        s->K = K;
        s->latent = q->kind == QAT_WEIGHT_CODEBOOK;
        in[1] = q->values;
        fn = shared_backward;
        name = q->kind == QAT_WEIGHT_CODEBOOK ? "fake_quant_codebook" : "fake_quant_hashed";
    }
    int nin = in[1] ? 2 : 1;
    if (qat_needs_grad(ctx, nin, in) && qat_tape_record(ctx, name, fn, y, nin, in, s) != QAT_OK) return NULL;
    return y;
}
