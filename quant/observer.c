/* Observers: running min/max, EMA, per-channel, histogram; checkpoint state.
 * The rules are documented in include/qat/observer.h and
 * docs/QUANT-calibration.md. The histogram grid and the calibration
 * searches live in histogram.c. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qat/observer.h"
#include "core/internal.h"
#include "quant/internal.h"


enum { CONFIG_N = 7, COUNTERS_N = 3 };

struct qat_observer {
    qat_observer_opts opts;
    int per_channel; /* kinds 2, 3 */
    int ema;         /* kinds 1, 3 */
    int channels;    /* 1 for per-tensor kinds */
    int enabled;
    int restored; /* set_state was called: check consistency before use */
    uint64_t batches; /* enabled observe calls with n > 0 */
    uint64_t count;   /* values observed */
    float *min, *max; /* [channels]; +inf/-inf before any data */
    /* histogram (kind HISTOGRAM) */
    int64_t cap;     /* capacity of counts: 2*bins + 2 */
    double inv;      /* 1 / bin width; 0 while no grid exists */
    int64_t g0, nb;  /* first bin index, number of bins */
    double *counts;  /* [cap] */
    double *tmp;     /* [cap] scratch for regridding */
    /* float64 views for qat_observer_state */
    double config[CONFIG_N];
    double counters[COUNTERS_N];
    double *min_d, *max_d; /* [channels] */
    double grid_d[2];
    /* batch scratch for per-channel kinds */
    float *bmin, *bmax; /* [channels] */
};

const char *qat_observer_kind_name(qat_observer_kind kind)
{
    static const char *const names[QAT_OBSERVER_KIND_COUNT] = {
        [QAT_OBSERVER_MINMAX] = "minmax",
        [QAT_OBSERVER_EMA] = "ema",
        [QAT_OBSERVER_PER_CHANNEL_MINMAX] = "per_channel_minmax",
        [QAT_OBSERVER_PER_CHANNEL_EMA] = "per_channel_ema",
        [QAT_OBSERVER_HISTOGRAM] = "histogram",
    };
    _Static_assert(QAT_OBSERVER_KIND_COUNT == 5, "observer kind names");
    return (unsigned)kind < QAT_OBSERVER_KIND_COUNT ? names[kind] : "?";
}

const char *qat_calib_method_name(qat_calib_method method)
{
    static const char *const names[QAT_CALIB_COUNT] = {
        [QAT_CALIB_MINMAX] = "minmax",
        [QAT_CALIB_KL] = "kl",
        [QAT_CALIB_PERCENTILE] = "percentile",
        [QAT_CALIB_MSE] = "mse",
    };
    _Static_assert(QAT_CALIB_COUNT == 4, "calibration method names");
    return (unsigned)method < QAT_CALIB_COUNT ? names[method] : "?";
}

qat_observer_opts qat_observer_opts_defaults(qat_observer_kind kind)
{
    qat_observer_opts o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.channels = 1;
    o.memoryless = 0;
    o.averaging_constant = 0.01f;
    o.bins = 2048;
    o.calib = QAT_CALIB_KL;
    o.percentile = 99.99;
    return o;
}

static int check_opts(const qat_observer_opts *o)
{
    if (!o) return qat_error(QAT_ERR_ARG, "observer: options are NULL");
    if ((unsigned)o->kind >= QAT_OBSERVER_KIND_COUNT)
        return qat_error(QAT_ERR_ARG, "observer: kind is %d, expected 0..%d", (int)o->kind,
                         QAT_OBSERVER_KIND_COUNT - 1);
    if ((o->kind == QAT_OBSERVER_PER_CHANNEL_MINMAX || o->kind == QAT_OBSERVER_PER_CHANNEL_EMA) &&
        o->channels < 1)
        return qat_error(QAT_ERR_ARG, "observer: channels is %d, a per-channel observer needs >= 1",
                         o->channels);
    if (o->memoryless != 0 && o->memoryless != 1)
        return qat_error(QAT_ERR_ARG, "observer: memoryless is %d, expected 0 or 1", o->memoryless);
    if (!(o->averaging_constant > 0.0f && o->averaging_constant <= 1.0f))
        return qat_error(QAT_ERR_ARG, "observer: averaging_constant is %g, expected (0, 1]",
                         (double)o->averaging_constant);
    if (o->bins < 8 || o->bins > (1 << 20))
        return qat_error(QAT_ERR_ARG, "observer: bins is %d, expected 8..%d", o->bins, 1 << 20);
    if ((unsigned)o->calib >= QAT_CALIB_COUNT)
        return qat_error(QAT_ERR_ARG, "observer: calib is %d, expected 0..%d", (int)o->calib,
                         QAT_CALIB_COUNT - 1);
    if (!(o->percentile > 0.0 && o->percentile <= 100.0))
        return qat_error(QAT_ERR_ARG, "observer: percentile is %g, expected (0, 100]",
                         o->percentile);
    return QAT_OK;
}

static void fill_config(qat_observer *obs)
{
    const qat_observer_opts *o = &obs->opts;
    obs->config[0] = (double)o->kind;
    obs->config[1] = (double)obs->channels;
    obs->config[2] = (double)o->bins;
    obs->config[3] = (double)o->memoryless;
    obs->config[4] = (double)o->averaging_constant;
    obs->config[5] = (double)o->calib;
    obs->config[6] = o->percentile;
}

void qat_observer_reset(qat_observer *obs)
{
    if (!obs) return;
    obs->batches = 0;
    obs->count = 0;
    for (int c = 0; c < obs->channels; c++) {
        obs->min[c] = INFINITY;
        obs->max[c] = -INFINITY;
    }
    obs->inv = 0.0;
    obs->g0 = 0;
    obs->nb = 0;
    obs->restored = 0;
    if (obs->counts) memset(obs->counts, 0, (size_t)obs->cap * sizeof *obs->counts);
}

qat_observer *qat_observer_create(const qat_observer_opts *opts)
{
    int rc = check_opts(opts);
    if (rc) return NULL;
    qat_observer *obs = qat_calloc(1, sizeof *obs);
    if (!obs) return qat_error_null(QAT_ERR_NOMEM, "observer: out of memory");
    obs->opts = *opts;
    obs->per_channel = opts->kind == QAT_OBSERVER_PER_CHANNEL_MINMAX ||
                       opts->kind == QAT_OBSERVER_PER_CHANNEL_EMA;
    obs->ema = opts->kind == QAT_OBSERVER_EMA || opts->kind == QAT_OBSERVER_PER_CHANNEL_EMA;
    obs->channels = obs->per_channel ? opts->channels : 1;
    obs->opts.channels = obs->channels;
    obs->enabled = 1;
    size_t C = (size_t)obs->channels;
    obs->min = qat_malloc(C * sizeof *obs->min);
    obs->max = qat_malloc(C * sizeof *obs->max);
    obs->bmin = qat_malloc(C * sizeof *obs->bmin);
    obs->bmax = qat_malloc(C * sizeof *obs->bmax);
    obs->min_d = qat_malloc(C * sizeof *obs->min_d);
    obs->max_d = qat_malloc(C * sizeof *obs->max_d);
    int ok = obs->min && obs->max && obs->bmin && obs->bmax && obs->min_d && obs->max_d;
    if (ok && opts->kind == QAT_OBSERVER_HISTOGRAM) {
        obs->cap = 2 * (int64_t)opts->bins + 2;
        obs->counts = qat_calloc((size_t)obs->cap, sizeof *obs->counts);
        obs->tmp = qat_malloc((size_t)obs->cap * sizeof *obs->tmp);
        ok = obs->counts && obs->tmp;
    }
    if (!ok) {
        qat_observer_free(obs);
        return qat_error_null(QAT_ERR_NOMEM, "observer: out of memory (%d channels)",
                              opts->channels);
    }
    fill_config(obs);
    qat_observer_reset(obs);
    return obs;
}

void qat_observer_free(qat_observer *obs)
{
    if (!obs) return;
    free(obs->min);
    free(obs->max);
    free(obs->bmin);
    free(obs->bmax);
    free(obs->min_d);
    free(obs->max_d);
    free(obs->counts);
    free(obs->tmp);
    free(obs);
}

void qat_observer_set_enabled(qat_observer *obs, int enabled)
{
    if (obs) obs->enabled = enabled != 0;
}

int qat_observer_enabled(const qat_observer *obs) { return obs ? obs->enabled : 0; }

const qat_observer_opts *qat_observer_options(const qat_observer *obs)
{
    return obs ? &obs->opts : NULL;
}

int qat_observer_channels(const qat_observer *obs) { return obs ? obs->channels : 0; }

uint64_t qat_observer_count(const qat_observer *obs) { return obs ? obs->count : 0; }

void qat_observer_minmax(const qat_observer *obs, float *mins, float *maxs)
{
    if (!obs) return;
    for (int c = 0; c < obs->channels; c++) {
        if (mins) mins[c] = obs->min[c];
        if (maxs) maxs[c] = obs->max[c];
    }
}

/* ---- batch statistics ---- */

#define LANES 64

/* min and max of x[0..n-1] in one pass; returns 1 if some value is NaN or
 * infinite (then *mn, *mx are meaningless). 64 independent lanes so the
 * compiler can use packed min/max/compare; the result does not depend on
 * the lane split (min/max are exact; -0 is normalized to +0 below). */
static int minmax_f32(const float *x, size_t n, float *mn, float *mx)
{
    float lmin[LANES], lmax[LANES];
    int bad[LANES];
    for (int l = 0; l < LANES; l++) {
        lmin[l] = FLT_MAX;
        lmax[l] = -FLT_MAX;
        bad[l] = 0;
    }
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++) {
            float v = x[i + l];
            lmin[l] = v < lmin[l] ? v : lmin[l];
            lmax[l] = v > lmax[l] ? v : lmax[l];
            bad[l] |= !(fabsf(v) <= FLT_MAX);
        }
    }
    for (; i < n; i++) {
        float v = x[i];
        lmin[0] = v < lmin[0] ? v : lmin[0];
        lmax[0] = v > lmax[0] ? v : lmax[0];
        bad[0] |= !(fabsf(v) <= FLT_MAX);
    }
    float a = lmin[0], b = lmax[0];
    int any = bad[0];
    for (int l = 1; l < LANES; l++) {
        a = lmin[l] < a ? lmin[l] : a;
        b = lmax[l] > b ? lmax[l] : b;
        any |= bad[l];
    }
    *mn = a + 0.0f; /* -0 -> +0 */
    *mx = b + 0.0f;
    return any;
}

/* Parallel over threads for large n: chunk results are combined with
 * min/max, which is exact, so the result does not depend on the split. */
static int minmax_batch(const float *x, size_t n, float *mn, float *mx)
{
    const size_t par_min = (size_t)1 << 16;
    int nt = qat_get_num_threads();
    if (n < par_min || nt <= 1) return minmax_f32(x, n, mn, mx);
    float tmin[64], tmax[64];
    int tbad[64];
    if (nt > 64) nt = 64;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        size_t b, e;
        qat_thread_span(t, nt, n, &b, &e);
        tmin[t] = FLT_MAX;
        tmax[t] = -FLT_MAX;
        tbad[t] = 0;
        if (e > b) tbad[t] = minmax_f32(x + b, e - b, &tmin[t], &tmax[t]);
    }
    float a = tmin[0], b = tmax[0];
    int any = tbad[0];
    for (int t = 1; t < nt; t++) {
        a = tmin[t] < a ? tmin[t] : a;
        b = tmax[t] > b ? tmax[t] : b;
        any |= tbad[t];
    }
    *mn = a;
    *mx = b;
    return any;
}

static int nonfinite_error(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            return qat_error(QAT_ERR_ARG, "observer: input has NaN at index %zu (of %zu values)",
                             i, n);
        if (isinf(x[i]))
            return qat_error(QAT_ERR_ARG,
                             "observer: input has %cinf at index %zu (of %zu values)",
                             x[i] < 0 ? '-' : '+', i, n);
    }
    return qat_error(QAT_ERR_ARG, "observer: input has a non-finite value"); /* unreachable */
}

/* EMA / running update of one (min, max) pair with a batch's extremes.
 * Float32 arithmetic as PyTorch: min + c * (bmin - min). */
static void update_pair(const qat_observer *obs, float *mn, float *mx, float bmn, float bmx)
{
    if (obs->batches == 0 || (obs->opts.memoryless && !obs->ema)) {
        *mn = bmn;
        *mx = bmx;
    } else if (obs->ema) {
        float c = obs->opts.averaging_constant;
        *mn = *mn + c * (bmn - *mn);
        *mx = *mx + c * (bmx - *mx);
    } else {
        *mn = bmn < *mn ? bmn : *mn;
        *mx = bmx > *mx ? bmx : *mx;
    }
}

static int hist_consistent(const qat_observer *obs)
{
    if (!obs->restored || obs->opts.kind != QAT_OBSERVER_HISTOGRAM) return QAT_OK;
    if (obs->inv == 0.0) {
        if (obs->nb != 0 || (obs->count > 0 && (obs->min[0] != 0.0f || obs->max[0] != 0.0f)))
            return qat_error(QAT_ERR_STATE,
                             "histogram observer: restored state has no grid (inv_w 0) but "
                             "%lld bins or a nonzero range [%g, %g]",
                             (long long)obs->nb, (double)obs->min[0], (double)obs->max[0]);
        return QAT_OK;
    }
    double total = 0.0;
    for (int64_t i = 0; i < obs->nb; i++) total += obs->counts[i];
    if (obs->nb < 1 || obs->g0 > 0 || obs->g0 + obs->nb < 0 || total != (double)obs->count)
        return qat_error(QAT_ERR_STATE,
                         "histogram observer: restored state is inconsistent: %lld bins from "
                         "bin %lld holding %.17g values, counters say %llu",
                         (long long)obs->nb, (long long)obs->g0, total,
                         (unsigned long long)obs->count);
    /* the data range must lie in the bins */
    double lo = floor((double)obs->min[0] * obs->inv), hi = floor((double)obs->max[0] * obs->inv);
    if (lo < (double)obs->g0 || hi > (double)(obs->g0 + obs->nb - 1))
        return qat_error(QAT_ERR_STATE,
                         "histogram observer: restored range [%g, %g] lies outside the bins",
                         (double)obs->min[0], (double)obs->max[0]);
    return QAT_OK;
}

static int observe_tensor(qat_observer *obs, const float *x, size_t n)
{
    float bmn, bmx;
    if (minmax_batch(x, n, &bmn, &bmx)) return nonfinite_error(x, n);
    if (obs->opts.kind == QAT_OBSERVER_HISTOGRAM) {
        int rc = hist_consistent(obs);
        if (rc) return rc;
        obs->restored = 0;
        uint64_t zeros = obs->count; /* meaningful only while no grid exists */
        rc = qat_hist_update_(obs->counts, obs->cap, obs->opts.bins, &obs->inv, &obs->g0,
                              &obs->nb, zeros, bmn, bmx, x, n, obs->tmp);
        if (rc) return rc;
        obs->min[0] = obs->batches == 0 || bmn < obs->min[0] ? bmn : obs->min[0];
        obs->max[0] = obs->batches == 0 || bmx > obs->max[0] ? bmx : obs->max[0];
    } else {
        update_pair(obs, &obs->min[0], &obs->max[0], bmn, bmx);
    }
    obs->batches++;
    obs->count += n;
    return QAT_OK;
}

int qat_observer_observe_relu(qat_observer *obs, const float *x, size_t n)
{
    if (!obs || obs->per_channel || obs->opts.kind == QAT_OBSERVER_HISTOGRAM)
        return qat_error(QAT_ERR_UNSUPPORTED, "observer_observe_relu: needs a per-tensor min/max observer");
    if (!obs->enabled || n == 0) return QAT_OK;
    float bmn, bmx;
    if (minmax_batch(x, n, &bmn, &bmx)) {
        /* NaN and -inf become 0 in relu(x); only +inf is an error there */
        bmn = FLT_MAX;
        bmx = 0.0f;
        for (size_t i = 0; i < n; i++) {
            float r = x[i] > 0.0f ? x[i] : 0.0f;
            if (isinf(r)) return qat_error(QAT_ERR_ARG, "observer: input has +inf at index %zu (of %zu values)", i, n);
            bmn = r < bmn ? r : bmn;
            bmx = r > bmx ? r : bmx;
        }
    }
    /* the extremes of relu(x) */
    update_pair(obs, &obs->min[0], &obs->max[0], bmn > 0.0f ? bmn : 0.0f, bmx > 0.0f ? bmx : 0.0f);
    obs->batches++;
    obs->count += n;
    return QAT_OK;
}

int qat_observer_observe(qat_observer *obs, const float *x, size_t n)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_observe: observer is NULL");
    if (obs->per_channel)
        return qat_error(QAT_ERR_ARG,
                         "observer_observe: a %s observer needs observe_channels "
                         "(outer, channels, inner)",
                         qat_observer_kind_name(obs->opts.kind));
    if (!obs->enabled || n == 0) return QAT_OK;
    if (!x) return qat_error(QAT_ERR_ARG, "observer_observe: x is NULL with n = %zu", n);
    return observe_tensor(obs, x, n);
}

/* Per-channel extremes of x [outer, C, inner] into bmin/bmax; 1 if some
 * value is not finite. */
static int minmax_channels(const float *x, size_t outer, size_t C, size_t inner, float *bmin,
                           float *bmax)
{
    int bad = 0;
    for (size_t c = 0; c < C; c++) {
        bmin[c] = FLT_MAX;
        bmax[c] = -FLT_MAX;
    }
    if (inner == 1) { /* channels last: vectorize across channels */
        for (size_t o = 0; o < outer; o++) {
            const float *row = x + o * C;
            for (size_t c = 0; c < C; c++) {
                float v = row[c];
                bmin[c] = v < bmin[c] ? v : bmin[c];
                bmax[c] = v > bmax[c] ? v : bmax[c];
                bad |= !(fabsf(v) <= FLT_MAX);
            }
        }
    } else {
        for (size_t o = 0; o < outer; o++)
            for (size_t c = 0; c < C; c++) {
                float a, b;
                bad |= minmax_f32(x + (o * C + c) * inner, inner, &a, &b);
                bmin[c] = a < bmin[c] ? a : bmin[c];
                bmax[c] = b > bmax[c] ? b : bmax[c];
            }
    }
    for (size_t c = 0; c < C; c++) {
        bmin[c] += 0.0f;
        bmax[c] += 0.0f;
    }
    return bad;
}

int qat_observer_observe_channels(qat_observer *obs, const float *x, size_t outer,
                                  size_t channels, size_t inner)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_observe_channels: observer is NULL");
    if (outer != 0 && channels != 0 && inner != 0 &&
        (channels > SIZE_MAX / outer || inner > SIZE_MAX / (outer * channels)))
        return qat_error(QAT_ERR_ARG, "observer_observe_channels: size (%zu, %zu, %zu) overflows",
                         outer, channels, inner);
    size_t n = outer * channels * inner;
    if (obs->per_channel && channels != (size_t)obs->channels)
        return qat_error(QAT_ERR_SHAPE,
                         "observer_observe_channels: %zu channels, the observer has %d", channels,
                         obs->channels);
    if (!obs->enabled || n == 0) return QAT_OK;
    if (!x) return qat_error(QAT_ERR_ARG, "observer_observe_channels: x is NULL with %zu values", n);
    if (!obs->per_channel) return observe_tensor(obs, x, n);
    if (minmax_channels(x, outer, channels, inner, obs->bmin, obs->bmax))
        return nonfinite_error(x, n);
    for (int c = 0; c < obs->channels; c++)
        update_pair(obs, &obs->min[c], &obs->max[c], obs->bmin[c], obs->bmax[c]);
    obs->batches++;
    obs->count += n;
    return QAT_OK;
}

int qat_observer_observe_axis(qat_observer *obs, const float *x, int ndim, const int *shape,
                              int axis)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_observe_axis: observer is NULL");
    if (ndim < 1 || !shape)
        return qat_error(QAT_ERR_ARG, "observer_observe_axis: ndim is %d (shape %s)", ndim,
                         shape ? "given" : "NULL");
    if (axis < 0 || axis >= ndim)
        return qat_error(QAT_ERR_ARG, "observer_observe_axis: axis %d, expected 0..%d", axis,
                         ndim - 1);
    size_t outer = 1, inner = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return qat_error(QAT_ERR_ARG, "observer_observe_axis: shape[%d] is %d", d, shape[d]);
        size_t *p = d < axis ? &outer : &inner;
        if (d == axis) continue;
        if (shape[d] != 0 && *p > SIZE_MAX / (size_t)shape[d])
            return qat_error(QAT_ERR_ARG, "observer_observe_axis: size overflows");
        *p *= (size_t)shape[d];
    }
    return qat_observer_observe_channels(obs, x, outer, (size_t)shape[axis], inner);
}

/* ---- ranges and qparams ---- */

int qat_observer_range(const qat_observer *obs, const qat_qscheme *scheme,
                       qat_calib_method method, double percentile, float *lo, float *hi)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_range: observer is NULL");
    if (!lo || !hi) return qat_error(QAT_ERR_ARG, "observer_range: lo or hi is NULL");
    int rc = qat_qscheme_check(scheme);
    if (rc) return rc;
    if (scheme->per_channel != obs->per_channel)
        return qat_error(QAT_ERR_ARG, "observer_range: the scheme is %s but the %s observer is %s",
                         scheme->per_channel ? "per-channel" : "per-tensor",
                         qat_observer_kind_name(obs->opts.kind),
                         obs->per_channel ? "per-channel" : "per-tensor");
    if ((unsigned)method >= QAT_CALIB_COUNT)
        return qat_error(QAT_ERR_ARG, "observer_range: calibration method is %d, expected 0..%d",
                         (int)method, QAT_CALIB_COUNT - 1);
    if (method != QAT_CALIB_MINMAX && obs->opts.kind != QAT_OBSERVER_HISTOGRAM)
        return qat_error(QAT_ERR_UNSUPPORTED,
                         "observer_range: calibration method %s needs a histogram observer, "
                         "this one is %s",
                         qat_calib_method_name(method), qat_observer_kind_name(obs->opts.kind));
    if (method == QAT_CALIB_PERCENTILE && !(percentile > 0.0 && percentile <= 100.0))
        return qat_error(QAT_ERR_ARG, "observer_range: percentile is %g, expected (0, 100]",
                         percentile);
    if ((rc = hist_consistent(obs))) return rc;
    if (method == QAT_CALIB_MINMAX || obs->batches == 0 || obs->inv == 0.0) {
        /* nothing observed (+inf, -inf), all zeros (0, 0), or plain min/max */
        for (int c = 0; c < obs->channels; c++) {
            lo[c] = obs->min[c];
            hi[c] = obs->max[c];
        }
        return QAT_OK;
    }
    return qat_hist_range_(obs->counts, obs->inv, obs->g0, obs->nb, obs->min[0], obs->max[0],
                           scheme, method, percentile, lo, hi);
}

int qat_observer_qparams_with(const qat_observer *obs, const qat_qscheme *scheme,
                              qat_calib_method method, double percentile, float *scales,
                              int32_t *zero_points)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_qparams: observer is NULL");
    if (!scales || !zero_points)
        return qat_error(QAT_ERR_ARG, "observer_qparams: scales or zero_points is NULL");
    int C = obs->channels;
    float one_lo, one_hi;
    float *lo = C == 1 ? &one_lo : qat_malloc((size_t)C * sizeof *lo);
    float *hi = C == 1 ? &one_hi : qat_malloc((size_t)C * sizeof *hi);
    int rc = QAT_OK;
    if (!lo || !hi) {
        rc = qat_error(QAT_ERR_NOMEM, "observer_qparams: out of memory (%d channels)", C);
        goto done;
    }
    rc = qat_observer_range(obs, scheme, method, percentile, lo, hi);
    for (int c = 0; c < C && rc == QAT_OK; c++)
        rc = qat_qparams_from_minmax(scheme, lo[c], hi[c], &scales[c], &zero_points[c]);
done:
    if (C != 1) {
        free(lo);
        free(hi);
    }
    return rc;
}

int qat_observer_qparams(const qat_observer *obs, const qat_qscheme *scheme, float *scales,
                         int32_t *zero_points)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_qparams: observer is NULL");
    qat_calib_method m =
        obs->opts.kind == QAT_OBSERVER_HISTOGRAM ? obs->opts.calib : QAT_CALIB_MINMAX;
    return qat_observer_qparams_with(obs, scheme, m, obs->opts.percentile, scales, zero_points);
}

/* ---- checkpoint state ---- */

static const char *const state_names[6] = {"config", "counters", "min", "max", "hist_grid",
                                           "hist"};

int qat_observer_num_state(const qat_observer *obs)
{
    if (!obs) return 0;
    return obs->opts.kind == QAT_OBSERVER_HISTOGRAM ? 6 : 4;
}

int qat_observer_state(qat_observer *obs, int i, const char **name, const double **data,
                       size_t *n)
{
    if (!obs) return qat_error(QAT_ERR_ARG, "observer_state: observer is NULL");
    int ns = qat_observer_num_state(obs);
    if (i < 0 || i >= ns)
        return qat_error(QAT_ERR_ARG, "observer_state: index %d, expected 0..%d", i, ns - 1);
    const double *d = NULL;
    size_t len = 0;
    switch (i) {
    case 0:
        d = obs->config;
        len = CONFIG_N;
        break;
    case 1:
        obs->counters[0] = (double)obs->enabled;
        obs->counters[1] = (double)obs->batches;
        obs->counters[2] = (double)obs->count;
        d = obs->counters;
        len = COUNTERS_N;
        break;
    case 2:
    case 3: {
        const float *src = i == 2 ? obs->min : obs->max;
        double *dst = i == 2 ? obs->min_d : obs->max_d;
        for (int c = 0; c < obs->channels; c++) dst[c] = (double)src[c];
        d = dst;
        len = (size_t)obs->channels;
        break;
    }
    case 4:
        obs->grid_d[0] = obs->inv;
        obs->grid_d[1] = (double)obs->g0;
        d = obs->grid_d;
        len = 2;
        break;
    default:
        d = obs->counts;
        len = (size_t)obs->nb;
        break;
    }
    if (name) *name = state_names[i];
    if (data) *data = d;
    if (n) *n = len;
    return QAT_OK;
}

static int is_count(double v) { return v >= 0.0 && v <= 9007199254740992.0 && v == floor(v); }

static int state_len(const char *name, size_t n, size_t want)
{
    if (n == want) return QAT_OK;
    return qat_error(QAT_ERR_FORMAT, "observer state \"%s\": %zu values, expected %zu", name, n,
                     want);
}

int qat_observer_set_state(qat_observer *obs, const char *name, const double *data, size_t n)
{
    static const char *const config_fields[CONFIG_N] = {
        "kind", "channels", "bins", "memoryless", "averaging_constant", "calib", "percentile"};
    if (!obs || !name) return qat_error(QAT_ERR_ARG, "observer_set_state: observer or name is NULL");
    if (n > 0 && !data)
        return qat_error(QAT_ERR_ARG, "observer_set_state: \"%s\": data is NULL", name);
    int hist = obs->opts.kind == QAT_OBSERVER_HISTOGRAM;
    int rc;
    obs->restored = 1;
    if (!strcmp(name, "config")) {
        if ((rc = state_len(name, n, CONFIG_N))) return rc;
        for (int k = 0; k < CONFIG_N; k++)
            if (data[k] != obs->config[k])
                return qat_error(QAT_ERR_FORMAT,
                                 "observer state \"config\": %s is %.9g in the state, %.9g in "
                                 "this observer",
                                 config_fields[k], data[k], obs->config[k]);
        return QAT_OK;
    }
    if (!strcmp(name, "counters")) {
        if ((rc = state_len(name, n, COUNTERS_N))) return rc;
        if ((data[0] != 0.0 && data[0] != 1.0) || !is_count(data[1]) || !is_count(data[2]))
            return qat_error(QAT_ERR_FORMAT,
                             "observer state \"counters\": (%g, %g, %g) is not (0|1, count, count)",
                             data[0], data[1], data[2]);
        obs->enabled = (int)data[0];
        obs->batches = (uint64_t)data[1];
        obs->count = (uint64_t)data[2];
        return QAT_OK;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        int is_min = name[1] == 'i';
        if ((rc = state_len(name, n, (size_t)obs->channels))) return rc;
        for (size_t c = 0; c < n; c++) {
            double v = data[c];
            double empty = is_min ? INFINITY : -INFINITY;
            if (v != empty && !(fabs(v) <= FLT_MAX && (double)(float)v == v))
                return qat_error(QAT_ERR_FORMAT,
                                 "observer state \"%s\"[%zu] = %g is not a finite float32 value",
                                 name, c, v);
        }
        float *dst = is_min ? obs->min : obs->max;
        for (size_t c = 0; c < n; c++) dst[c] = (float)data[c] + 0.0f;
        return QAT_OK;
    }
    if (hist && !strcmp(name, "hist_grid")) {
        if ((rc = state_len(name, n, 2))) return rc;
        if (!(data[0] >= 0.0 && data[0] < INFINITY) || data[1] != floor(data[1]) ||
            data[1] > 0.0 || data[1] < -(double)obs->cap)
            return qat_error(QAT_ERR_FORMAT,
                             "observer state \"hist_grid\": (inv_w %g, g0 %g) out of range", data[0],
                             data[1]);
        obs->inv = data[0];
        obs->g0 = (int64_t)data[1];
        return QAT_OK;
    }
    if (hist && !strcmp(name, "hist")) {
        if (n > (size_t)obs->cap)
            return qat_error(QAT_ERR_FORMAT, "observer state \"hist\": %zu bins, at most %lld", n,
                             (long long)obs->cap);
        for (size_t i = 0; i < n; i++)
            if (!is_count(data[i]))
                return qat_error(QAT_ERR_FORMAT,
                                 "observer state \"hist\"[%zu] = %g is not a count", i, data[i]);
        memset(obs->counts, 0, (size_t)obs->cap * sizeof *obs->counts);
        if (n) memcpy(obs->counts, data, n * sizeof *data);
        obs->nb = (int64_t)n;
        return QAT_OK;
    }
    return qat_error(QAT_ERR_FORMAT, "observer state: unknown array \"%s\" for a %s observer", name,
                     qat_observer_kind_name(obs->opts.kind));
}
