/* qat/observer.h: observers and calibrators (plain C objects, no autograd).
 *
 * An observer watches the float values a quantizer sees and turns them into
 * (scale, zero point) for a qat_qscheme. Every path ends in
 * qat_qparams_from_minmax() on a chosen range [lo, hi], so all observers and
 * calibrators share one parameter rule (docs/QUANT.md).
 *
 *   qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_EMA);
 *   qat_observer *obs = qat_observer_create(&o);
 *   qat_observer_observe(obs, act, n);                  (every batch)
 *   qat_qscheme a = qat_qscheme_activation(8);
 *   float s; int32_t z;
 *   qat_observer_qparams(obs, &a, &s, &z);
 *   qat_observer_free(obs);
 *
 * Kinds
 *   MINMAX               running min and max over all batches (or only the
 *                        latest batch with opts.memoryless).
 *   EMA                  PyTorch's MovingAverageMinMax: the first batch sets
 *                        (min, max), later batches move them by
 *                        min += c * (batch_min - min) (float32 arithmetic),
 *                        c = opts.averaging_constant (0.01).
 *   PER_CHANNEL_MINMAX   MINMAX per channel; memoryless is what weight
 *   PER_CHANNEL_EMA      quantizers use. EMA per channel. Data are given as
 *                        (outer, channels, inner) sizes, see
 *                        qat_observer_observe_channels().
 *   HISTOGRAM            per tensor: the exact running min/max plus a
 *                        histogram of the values (below); the range used for
 *                        qparams is chosen by a calibration method.
 *
 * Non-finite input: every kind rejects a batch holding a NaN or an infinity
 * with QAT_ERR_ARG and leaves its state untouched (a range with an infinity
 * has no valid scale, and a histogram that silently dropped values would
 * hide a diverged model). The message names the first offending index.
 *
 * Histogram
 *   Signed histogram on a grid anchored at 0: bin g (an integer, negative
 *   below zero) holds the values with floor(x * inv_w) == g (computed in
 *   double), i.e. x in [g*w, (g+1)*w) with w = 1/inv_w. The bins kept are the
 *   contiguous run g0 .. g0+nbins-1 covering [min(data, 0), max(data, 0)], so
 *   0 is always a bin edge. The first batch with a nonzero value sets
 *   inv_w = bins / (max(x,0) - min(x,0)) (opts.bins, default 2048). Later
 *   batches beyond the range add bins at the same width (TensorRT); when more
 *   than 2*bins would be needed the width is doubled as many times as needed,
 *   merging bin pairs (2g, 2g+1) -> g. Merging is exact: every value stays in
 *   bin floor(x * inv_w) of the current grid, counts are preserved and the
 *   histogram always has between about bins and 2*bins bins over the data.
 *   Counts are doubles (exact up to 2^53 values). Values observed while
 *   every value so far was exactly 0 are counted in bin 0 once a grid exists.
 *
 * Calibration methods (qat_calib_method), for the HISTOGRAM kind
 *   Let levels = qmax - qmin + 1 of the scheme. The search works on
 *   - the folded |x| histogram when the scheme is symmetric (threshold T,
 *     range [-T, T], nlev = levels/2 levels per side, TensorRT's setting),
 *     or when the scheme is affine and the data are one-sided (min >= 0:
 *     range [min, T]; max <= 0: range [-T, max]; nlev = levels, because an
 *     affine grid spends all its levels on the one side);
 *   - the signed histogram for an affine scheme with two-sided data: the
 *     window [lo, hi] (containing 0) is searched one end at a time with the
 *     other fixed (coordinate descent: upper end, lower end, repeated until
 *     neither moves, at most 4 rounds), nlev = levels across the window.
 *   Candidate thresholds are bin edges at least nlev bins from the window's
 *   other end (TensorRT's start_bin = 128 for 128 levels); results are
 *   clamped to the observed [min, max].
 *   MINMAX      the exact observed min and max (no histogram search).
 *   KL          TensorRT's entropy calibration: the count of bin [0, w) is
 *               replaced by that of [w, 2w) (ReLU zeros are exact in any
 *               grid); for each candidate window of n bins: P = the bins,
 *               with the mass outside added to the end bins; Q = the bins
 *               merged into nlev groups (bin j of the window in group
 *               floor(j*nlev/n)), each group's sum spread evenly over its
 *               nonzero bins; KL(P||Q) of the normalized P and Q (infinite
 *               where Q = 0 < P). The minimum wins; ties go to the widest
 *               window (TensorRT: last index of the minimum).
 *   PERCENTILE  smallest edge leaving at most (100-p)% of the values outside
 *               (of |x| when folded; (100-p)/2 % per tail for the two-sided
 *               affine case). TensorRT returns the left edge of the bin where
 *               the CDF reaches p; qat returns its right edge, so the range
 *               covers p% of the values. Default p = 99.99.
 *   MSE         for each candidate window, the range is turned into
 *               (scale, zp) by qat_qparams_from_minmax() and the bin centers
 *               are fake-quantized with the scheme's own rule
 *               (clamp(z + nearbyint(c * fl32(1/s))) - z) * s; the
 *               count-weighted squared error is summed over all bins
 *               (clipped ones included). The minimum wins; ties go to the
 *               narrowest window (TensorRT: first argmin).
 *   If the histogram has fewer than nlev bins on the searched side (e.g. 16
 *   bits), KL and MSE keep the full range.
 *   For the non-histogram kinds only MINMAX applies (their min/max).
 *
 * Enabled / frozen: a disabled observer ignores observe calls (the QAT
 *   layer's "freeze observers"); qparams still work.
 *
 * State (checkpoints): qat_observer_state() enumerates named float64 arrays
 *   "config"    kind, channels, bins, memoryless, averaging_constant, calib,
 *               percentile (checked on restore: must equal the observer's)
 *   "counters"  enabled, batches observed, values observed
 *   "min","max" one value per channel (+inf/-inf before any data)
 *   "hist_grid" (HISTOGRAM) inv_w (0 while no grid exists) and g0
 *   "hist"      (HISTOGRAM) the nbins counts, bin g0 first
 *   Restore: create an observer with the same options, then
 *   qat_observer_set_state() each array; the restored observer gives
 *   identical qparams and continues identically.
 *
 * Threads: observe() uses OpenMP (qat_get_num_threads()) for large batches,
 *   with per-thread integer partial histograms; results do not depend on the
 *   thread count. An observer is not safe to use from two threads at once. */
#ifndef QAT_OBSERVER_H
#define QAT_OBSERVER_H

#include "core.h"
#include "qparams.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QAT_OBSERVER_MINMAX = 0,
    QAT_OBSERVER_EMA = 1,
    QAT_OBSERVER_PER_CHANNEL_MINMAX = 2,
    QAT_OBSERVER_PER_CHANNEL_EMA = 3,
    QAT_OBSERVER_HISTOGRAM = 4,
    QAT_OBSERVER_KIND_COUNT = 5
} qat_observer_kind;

typedef enum {
    QAT_CALIB_MINMAX = 0,
    QAT_CALIB_KL = 1,
    QAT_CALIB_PERCENTILE = 2,
    QAT_CALIB_MSE = 3,
    QAT_CALIB_COUNT = 4
} qat_calib_method;

typedef struct qat_observer_opts {
    qat_observer_kind kind;
    int channels;             /* per-channel kinds: number of channels, >= 1 */
    int memoryless;           /* MINMAX kinds: keep only the latest batch */
    float averaging_constant; /* EMA kinds: in (0, 1], default 0.01 */
    int bins;                 /* HISTOGRAM: in [8, 2^20], default 2048 */
    qat_calib_method calib;   /* HISTOGRAM: method of qat_observer_qparams(), default KL */
    double percentile;        /* PERCENTILE: in (0, 100], default 99.99 */
} qat_observer_opts;

typedef struct qat_observer qat_observer;

/* Defaults for a kind (channels = 1; set it for the per-channel kinds). */
QAT_API qat_observer_opts qat_observer_opts_defaults(qat_observer_kind kind);

/* Validates opts (QAT_ERR_ARG naming the field) and returns a new observer,
 * enabled and empty, or NULL with qat_last_error() set. */
QAT_API qat_observer *qat_observer_create(const qat_observer_opts *opts);
/* Frees the observer; NULL is a no-op. */
QAT_API void qat_observer_free(qat_observer *obs);

/* Observes n values x[0..n-1] (a per-tensor kind). Per-channel kinds need
 * qat_observer_observe_channels(). n == 0 is a no-op. Returns QAT_OK, or
 * QAT_ERR_ARG for NaN/infinite input (state unchanged), QAT_ERR_STATE for
 * an inconsistently restored state, QAT_ERR_NOMEM. A disabled observer
 * returns QAT_OK without looking at x. */
QAT_API int qat_observer_observe(qat_observer *obs, const float *x, size_t n);

/* Observes x laid out as [outer, channels, inner] (row-major); the channel
 * axis is the middle one: a conv weight [OC, IC, KH, KW] on axis 0 is
 * (1, OC, IC*KH*KW); channels-last data [N, H, W, C] is (N*H*W, C, 1).
 * Per-channel kinds need channels == opts.channels (else QAT_ERR_SHAPE);
 * per-tensor kinds treat x as outer*channels*inner values. */
QAT_API int qat_observer_observe_channels(qat_observer *obs, const float *x, size_t outer,
                                          size_t channels, size_t inner);

/* observe_channels for a row-major array of ndim dimensions with the
 * channel axis `axis` (0 <= axis < ndim): outer = prod(shape[0..axis)),
 * channels = shape[axis], inner = prod(shape[axis+1..ndim)). Per-tensor
 * kinds accept any axis. QAT_ERR_ARG for a bad ndim/axis/negative size. */
QAT_API int qat_observer_observe_axis(qat_observer *obs, const float *x, int ndim,
                                      const int *shape, int axis);

/* Enables (1) or freezes (0) the observer: a frozen observer keeps its
 * state and ignores observe calls. */
QAT_API void qat_observer_set_enabled(qat_observer *obs, int enabled);
/* 1 if the observer updates on observe calls, 0 if frozen. */
QAT_API int qat_observer_enabled(const qat_observer *obs);

/* Forgets everything observed (the enabled flag and options stay). */
QAT_API void qat_observer_reset(qat_observer *obs);

/* The options the observer was created with. */
QAT_API const qat_observer_opts *qat_observer_options(const qat_observer *obs);
/* Number of (scale, zero point) pairs qparams produce: opts.channels for
 * per-channel kinds, else 1. */
QAT_API int qat_observer_channels(const qat_observer *obs);
/* Number of values observed so far (sum of n over enabled calls). */
QAT_API uint64_t qat_observer_count(const qat_observer *obs);

/* Copies the tracked min and max (channels entries each; +inf/-inf if
 * nothing was observed). For HISTOGRAM these are the exact data extremes. */
QAT_API void qat_observer_minmax(const qat_observer *obs, float *mins, float *maxs);

/* The range [lo, hi] (channels entries each) that qparams would use with
 * the given method and percentile (ignored unless PERCENTILE). Methods other
 * than MINMAX need a HISTOGRAM observer (else QAT_ERR_UNSUPPORTED). The
 * scheme fixes the number of levels and symmetric/affine; it must be
 * per-channel exactly when the observer is (else QAT_ERR_ARG); its axis is
 * not used (the layout was given to observe_channels/observe_axis). Nothing
 * observed gives lo = +inf, hi = -inf. */
QAT_API int qat_observer_range(const qat_observer *obs, const qat_qscheme *scheme,
                               qat_calib_method method, double percentile, float *lo,
                               float *hi);

/* (scale, zero point) per channel from qat_observer_range() and
 * qat_qparams_from_minmax(). Nothing observed gives what
 * qat_qparams_from_minmax() gives for min > max (scale 1). */
QAT_API int qat_observer_qparams_with(const qat_observer *obs, const qat_qscheme *scheme,
                                      qat_calib_method method, double percentile,
                                      float *scales, int32_t *zero_points);

/* qat_observer_qparams_with() with the observer's own opts.calib and
 * opts.percentile (HISTOGRAM) or MINMAX (other kinds). */
QAT_API int qat_observer_qparams(const qat_observer *obs, const qat_qscheme *scheme,
                                 float *scales, int32_t *zero_points);

/* Checkpoint state: the number of named arrays (4, or 6 for HISTOGRAM). */
QAT_API int qat_observer_num_state(const qat_observer *obs);

/* Array i (0 <= i < num_state): its name, a pointer to its values (owned by
 * the observer, valid until the next call that changes it) and its length.
 * Returns QAT_ERR_ARG for an index out of range. */
QAT_API int qat_observer_state(qat_observer *obs, int i, const char **name,
                               const double **data, size_t *n);

/* Restores the named array (copied). Returns QAT_ERR_FORMAT with a message
 * for an unknown name, a wrong length, a value out of range, or a "config"
 * differing from this observer's options. Arrays may be set in any order;
 * their consistency (e.g. the histogram's total equal to the value count)
 * is checked by the next observe/qparams call (QAT_ERR_STATE). */
QAT_API int qat_observer_set_state(qat_observer *obs, const char *name, const double *data,
                                   size_t n);

/* "minmax", "ema", "per_channel_minmax", "per_channel_ema", "histogram"
 * and "minmax", "kl", "percentile", "mse"; "?" when out of range. */
QAT_API const char *qat_observer_kind_name(qat_observer_kind kind);
QAT_API const char *qat_calib_method_name(qat_calib_method method);

#ifdef __cplusplus
}
#endif
#endif
