/* qat/ptq.h: post-training quantization methods beyond calibration
 * (docs/QUANT.md, section 19).
 *
 *   cross-layer equalization (CLE)   float model, before qat_qmodel_prepare
 *   AdaRound                         qmodel, after calibration
 *   bias correction                  qmodel, after calibration (and AdaRound)
 *
 * `qat ptq --cle --adaround --bias-correction` runs them in that order:
 *
 *   qat_cle_fold_bn(m); qat_cle_equalize(m, NULL, &rep);
 *   qat_model_snapshot *ref = qat_model_snapshot_take(m);   // the float reference
 *   qm = qat_qmodel_prepare(m, &cfg);  ... calibrate ...  qat_qmodel_finalize(qm);
 *   qat_adaround(qm, ref, x_calib, &opts, NULL);
 *   qat_bias_correct(qm, ref, x_calib, 64, NULL);
 *
 * AdaRound and bias correction change the float model's parameters in place
 * (the qmodel borrows them): the float reference they reconstruct is the
 * snapshot taken before. */
#ifndef QAT_PTQ_H
#define QAT_PTQ_H

#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- snapshot of a model's parameters and buffers ---- */

typedef struct qat_model_snapshot qat_model_snapshot;
/* A copy of every parameter and buffer of m (NULL when out of memory). */
QAT_API qat_model_snapshot *qat_model_snapshot_take(const qat_model *m);
/* Exchanges the snapshot's values with m's (twice restores both). m must
 * be the model (or one with the same tensors) it was taken from. */
QAT_API int qat_model_snapshot_swap(qat_model_snapshot *s, qat_model *m);
QAT_API void qat_model_snapshot_free(qat_model_snapshot *s);

/* ---- cross-layer equalization (Nagel et al. 2019) ---- */

/* Folds every batchnorm that is the only reader of a conv2d into it:
 * W *= gamma/sigma per output channel, and the BN becomes a pure bias:
 * gamma 1, mean 0, running_var with running_var + eps == 1 exactly (sigma
 * 1), beta = the folded bias beta + gamma/sigma * (b - mean) (the conv's
 * own bias, if any, is set to 0). Returns the number folded, or a
 * negative status. */
QAT_API int qat_cle_fold_bn(qat_model *m);

/* The equalizable pairs: conv/linear `first` whose output reaches conv/
 * linear `second` only through layers that commute with a positive
 * per-channel scale (a folded BN, relu, max/avg pool, flatten into a
 * linear), each the only reader of the one before. Writes up to max
 * (first, second) pairs, returns the count. */
QAT_API int qat_cle_pairs(const qat_model *m, int *first, int *second, int max);
/* Per channel c of the pair: r1[c] = max |W1[c, ...]| (output channel c of
 * first), r2[c] = max |W2[:, c, ...]| (its input channel c of second; a
 * flattened input: the columns of channel c). r1, r2 have
 * first's out_ch entries. */
QAT_API int qat_cle_ranges(const qat_model *m, int first, int second, float *r1, float *r2);

typedef struct qat_cle_opts {
    int max_sweeps; /* 0: 1000 */
    double tol;     /* stop when every |s_c - 1| <= tol (0: 1e-6) */
} qat_cle_opts;

typedef struct qat_cle_report {
    int pairs;      /* pairs equalized */
    int sweeps;     /* passes over all pairs */
    double max_dev; /* max |s_c - 1| of the last sweep */
} qat_cle_report;

/* Equalizes every pair: s_c = sqrt(r1_c * r2_c) / r2_c, W1[c] /= s_c (and
 * its bias, the folded BN's beta, a per-channel clamp bound), W2[:, c] *=
 * s_c, repeated over all pairs until converged. Call qat_cle_fold_bn
 * first (a pair through an unfolded BN is not formed). o may be NULL. */
QAT_API int qat_cle_equalize(qat_model *m, const qat_cle_opts *o, qat_cle_report *rep);

/* ---- AdaRound (Nagel et al. 2020) ---- */

typedef struct qat_adaround_opts {
    int iters;        /* Adam steps per layer (default 1000) */
    int batch_rows;   /* output rows (pixels or samples) a step (default 1024) */
    int max_rows;     /* rows cached per layer, sampled from the calibration images (default 16384) */
    float lr;         /* Adam learning rate (1e-3) */
    float lambda;     /* regulariser weight (0.01) */
    float beta_start, beta_end; /* annealed 20 -> 2 */
    float warmup;     /* fraction of steps without regulariser (0.2) */
    uint64_t seed;
    int verbose;      /* a progress line per layer on stderr */
} qat_adaround_opts;

QAT_API qat_adaround_opts qat_adaround_opts_defaults(void);

typedef struct qat_adaround_layer {
    char name[QAT_NAME_MAX]; /* unit */
    double mse_nearest;      /* mean squared output error on the cached rows, nearest rounding */
    double mse_adaround;     /* the same with AdaRound's rounding */
    long flipped;            /* weights rounded the other way than nearest */
    int kept_nearest;        /* 1: the learned rounding had the larger MSE, nearest was kept */
    long weights;
    double seconds;
} qat_adaround_layer;

typedef struct qat_adaround_report {
    int n;
    qat_adaround_layer layers[64];
} qat_adaround_report;

/* For every quantized conv/linear unit in order (uniform integer weights,
 * 2..8 bits): learns the rounding of its folded weights W/s (up or down,
 * the scale fixed) minimising || W_ref x_ref - W_q x_q ||^2 over the
 * calibration images x [N,C,H,W] (x_q: the unit's input from the qmodel,
 * the earlier units already rounded; W_ref x_ref: the reference float
 * model's output), then writes W = s * q (divided by the BN factor when a
 * BN is folded) into the float model, so the quantizer's nearest rounding
 * gives q. A layer whose learned rounding reconstructs its cached rows
 * worse than nearest rounding keeps nearest (kept_nearest). ref: the float parameters (NULL: the model as it is now).
 * The qmodel must be calibrated (qat_qmodel_finalize). */
QAT_API int qat_adaround(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_tensor *x,
                         const qat_adaround_opts *o, qat_adaround_report *rep);

/* ---- bias correction (Nagel et al. 2019, section 4.2) ---- */

typedef struct qat_biascorr_layer {
    char name[QAT_NAME_MAX];
    double mean_abs_shift; /* mean over channels of |E[y_q] - E[y]| before the correction */
    double rms;            /* RMS of the float output (for relative errors) */
} qat_biascorr_layer;

typedef struct qat_biascorr_report {
    int n;
    qat_biascorr_layer layers[64];
} qat_biascorr_report;

/* Empirical: for every quantized conv/linear unit in order, the mean per
 * output channel of (quantized pre-activation - reference float
 * pre-activation) over x [N,C,H,W] (the quantized model with the earlier
 * units already corrected) is subtracted from the unit's bias (the folded
 * BN's beta, or the layer's bias; a unit with neither is skipped with a
 * note in the report's rms = -1). */
QAT_API int qat_bias_correct(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_tensor *x, int batch,
                             qat_biascorr_report *rep);
/* Analytic (data-free, paper section 4.2): for every quantized conv unit
 * whose input is a batchnorm's output (through a ReLU or a clamp), E[x_c]
 * from that BN's beta and gamma (the pre-activation ~ N(beta, gamma^2),
 * clipped: qat_clipped_normal_mean), and the unit's bias -= (W_q - W) E[x]
 * per output channel. Other units (the first, one after a pool, an add,
 * a CLE-folded BN without statistics) are left alone. Returns the number
 * corrected or a negative status. */
QAT_API int qat_bias_correct_analytic(qat_qmodel *qm);
/* E[clamp(z, lo, hi)] for z ~ N(mu, sigma^2); lo / hi may be -/+INFINITY. */
QAT_API double qat_clipped_normal_mean(double mu, double sigma, double lo, double hi);

#ifdef __cplusplus
}
#endif
#endif
