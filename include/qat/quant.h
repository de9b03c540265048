/* qat/quant.h: quantization-aware models (QAT and PTQ).
 *
 * qat_qmodel_prepare() takes a float model and groups its layers into
 * quantization units, the places where the int8 graph requantizes:
 *
 *   | unit      | layers                                  | quantizers           |
 *   | input     | the network input                       | activation           |
 *   | conv      | conv2d (any groups) or linear           | weight, bias grid,   |
 *   |           | (+ batchnorm) (+ relu | clamp)          | activation (after    |
 *   |           |                                         | the relu / clamp)    |
 *   | add       | residual add (+ relu)                   | activation           |
 *   | pool      | global average pool, average pool       | activation           |
 *   | act       | hardswish, hardsigmoid, or a clamp that | activation (int8: a  |
 *   |           | is not fused into a conv                | 256-entry table)     |
 *   | concat    | concatenation of two tensors            | activation (or the   |
 *   |           |                                         | shared one, below)   |
 *
 * A relu or clamp (relu6) fuses into the conv unit whose conv (or BN) it is
 * the only reader of. Max-pool, upsample, flatten and a ReLU that follows
 * a unit's output keep their input's quantization parameters (they are
 * exact on the grid). The last unit's activation quantizer quantizes the
 * logits.
 *
 * The qmodel borrows the float model: its parameters are trained in place
 * (QAT) and must outlive the qmodel. Learnable scales (LSQ) are parameters
 * owned by the qmodel; qat_qmodel_parameters() lists them after the float
 * model's parameters, everything one optimizer needs.
 *
 * BN folding (PyTorch's scheme, docs/QUANT.md): while BN trains, the weight
 * is quantized as W*gamma/sigma_running, the conv output is divided back by
 * gamma/sigma_running and BN runs with batch statistics; once BN is frozen
 * (and always in evaluation mode) the forward is conv(x, fq(W_fold)) +
 * fq_bias(b_fold): the very computation the int8 export reproduces. */
#ifndef QAT_QUANT_H
#define QAT_QUANT_H

#include "model.h"
#include "observer.h"
#include "qparams.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How activation ranges are found. */
typedef enum {
    QAT_CALIBRATOR_MINMAX = 0, /* running min/max */
    QAT_CALIBRATOR_EMA,        /* moving-average min/max, constant 0.01 */
    QAT_CALIBRATOR_KL,         /* histogram + KL divergence (TensorRT entropy) */
    QAT_CALIBRATOR_PERCENTILE, /* histogram, 99.99th percentile */
    QAT_CALIBRATOR_MSE,        /* histogram, minimum quantization MSE */
    QAT_CALIBRATOR_COUNT
} qat_calibrator;

/* "minmax", "ema", "kl", "percentile", "mse" */
QAT_API const char *qat_calibrator_name(qat_calibrator c);
/* inverse; -1 if unknown */
QAT_API int qat_calibrator_from_name(const char *name);

/* How a unit's weights are represented (docs/QUANT.md). */
typedef enum {
    QAT_WEIGHT_UNIFORM = 0, /* w<b>: b-bit grid per channel (b = 1: binary, alpha * sign(w)) */
    QAT_WEIGHT_CODEBOOK,    /* wc<K>: K shared values per layer (k-means, trained centroids) */
    QAT_WEIGHT_HASHED,      /* wh<K>: K buckets per layer, bucket = hash(seed, index) */
    QAT_WEIGHT_KIND_COUNT
} qat_weight_kind;

/* Float formats a unit can be rounded to instead of an integer grid. */
typedef enum {
    QAT_FLOAT_NONE = 0, /* integer quantization (or float32 with quantize 0) */
    QAT_FLOAT_FP16,     /* IEEE binary16, weights and activations (qat/half.h) */
    QAT_FLOAT_BF16,     /* bfloat16, weights and activations */
    QAT_FLOAT_FORMAT_COUNT
} qat_float_format;

/* Quantization of one unit. */
typedef struct qat_unit_config {
    int quantize;       /* 0: the unit stays float (mixed precision "float") */
    qat_qscheme weight; /* default: per-channel symmetric narrow, qat_qscheme_weight(bits) */
    qat_qscheme act;    /* default: per-tensor affine, qat_qscheme_activation(bits) */
    int lsq_weight;     /* learnable weight scales (default: weight bits <= 4) */
    int lsq_act;        /* learnable activation scale and zero point (default: act bits <= 4) */
    qat_calibrator calib; /* activation observer (default EMA) */
    qat_weight_kind weight_kind; /* uniform, codebook or hashed */
    int weight_k;                /* K of a codebook / hashed unit (2..256), else 0 */
    qat_float_format float_format; /* fp16 / bf16: the unit is rounded to it (no integer grid) */
} qat_unit_config;

/* The spec grammar, one line per form, for messages and --help. */
#define QAT_SPEC_GRAMMAR                                                                                    \
    "w<B>a<A> (uniform: B weight bits 1..8, 1 = binary; A activation bits 2..8, or 16), "               \
    "wc<K>a<A> (clustered: K = 2..256 shared weight values a layer), "                                  \
    "wh<K>a<A> (hashed: K = 2..256 buckets a layer), fp16, bf16, float"

/* Parses a spec of QAT_SPEC_GRAMMAR into *out with the default schemes.
 * QAT_ERR_ARG with a message listing the grammar for anything else. */
QAT_API int qat_unit_config_parse(const char *spec, qat_unit_config *out);
/* The spec string of a configuration ("w4a8", "wc16a8", "fp16", "float"),
 * into buf; "custom" when the schemes are not the defaults of a spec. */
QAT_API const char *qat_unit_config_spec(const qat_unit_config *c, char *buf, size_t n);

#define QAT_MAX_OVERRIDES 64

/* A whole-model configuration: one default and per-unit overrides. */
typedef struct qat_qconfig {
    qat_unit_config base;
    int n_overrides;
    struct {
        char name[QAT_NAME_MAX]; /* a unit name as qat_qmodel_unit lists it */
        qat_unit_config cfg;
    } overrides[QAT_MAX_OVERRIDES];
    /* How a concat unit quantizes (docs/QUANT.md, section 18):
     * 0 (QAT_CONCAT_REQUANTIZE, the default): its own activation quantizer,
     *   the int8 concat requantizes each input (PyTorch's quantized cat);
     * 1 (QAT_CONCAT_SHARED): the concat's quantizer is imposed on the units
     *   producing its inputs (TFLite's rule), so the int8 concat is a copy. */
    int concat_mode;
} qat_qconfig;

enum { QAT_CONCAT_REQUANTIZE = 0, QAT_CONCAT_SHARED = 1 };

/* c = spec for every unit, no overrides. */
QAT_API int qat_qconfig_init(qat_qconfig *c, const char *spec);
/* Adds "NAME=SPEC" (SPEC as qat_unit_config_parse). */
QAT_API int qat_qconfig_add_override(qat_qconfig *c, const char *name_eq_spec);
/* Sets every unit's activation calibrator (base and overrides). */
QAT_API void qat_qconfig_set_calibrator(qat_qconfig *c, qat_calibrator cal);

/* One quantizer: a scheme, its current parameters, how they are found. */
typedef struct qat_quantizer {
    qat_qscheme scheme;
    int32_t qmin, qmax;
    int n;                 /* parameters: 1 per tensor, or channels */
    float *scale;          /* [n] current scale */
    int32_t *zero_point;   /* [n] current zero point */
    qat_observer *obs;     /* NULL for learnable-only */
    qat_tensor *lsq_scale; /* [n] learnable scale, or NULL */
    qat_tensor *lsq_zp;    /* [n] learnable float zero point (affine LSQ), or NULL */
    int observe;           /* observer updates enabled */
    int fake_quant;        /* fake-quantization enabled */
    int initialized;       /* parameters have been set at least once */
    /* weights beyond the uniform grid (docs/QUANT.md): */
    qat_weight_kind kind;  /* uniform (scheme.bits 1 = binary), codebook, hashed */
    int k;                 /* codebook / hashed: number of shared values */
    qat_tensor *values;    /* codebook / hashed: [k] learnable shared values (centroids, bucket values) */
    unsigned seed;         /* hashed: the bucket hash's seed */
    qat_float_format float_format; /* fp16 / bf16: rounds to that format, no integer grid */
} qat_quantizer;

typedef enum {
    QAT_UNIT_INPUT = 0,
    QAT_UNIT_CONV, /* conv2d or linear head */
    QAT_UNIT_ADD,
    QAT_UNIT_POOL, /* global or plain average pool */
    QAT_UNIT_ACT,  /* hardswish, hardsigmoid, unfused clamp: a table in int8 */
    QAT_UNIT_CONCAT,
    QAT_UNIT_KIND_COUNT
} qat_unit_kind;

QAT_API const char *qat_unit_kind_name(qat_unit_kind k);

typedef struct qat_qunit {
    qat_unit_kind kind;
    char name[QAT_NAME_MAX]; /* = the head layer's name ("input" for the input) */
    int head;                /* layer index: conv/linear, add, pool, act, concat, or 0 */
    int bn;                  /* folded batchnorm layer, or -1 */
    int relu;                /* fused relu or clamp layer (conv units; add: relu only), or -1 */
    int last;                /* layer whose output is the unit's output */
    int in_unit[2];          /* units whose activation quantizers feed this one (-1: none) */
    qat_unit_config cfg;
    qat_quantizer weight;    /* conv units with cfg.quantize */
    qat_quantizer act;       /* every unit with cfg.quantize */
    int bn_frozen;           /* folded form also in training */
    /* QAT_CONCAT_SHARED: the concat unit whose activation quantizer this
     * unit's output uses (the last concat of its group), or -1 (its own).
     * act then mirrors that quantizer's parameters (kept in step by the
     * qmodel; it is not trained or observed itself). */
    int act_share;
} qat_qunit;

typedef struct qat_qmodel qat_qmodel;

/* Groups m's layers into units and attaches quantizers per cfg. Fails with
 * QAT_ERR_UNSUPPORTED naming the layer for a graph it cannot quantize (a
 * batchnorm that does not follow a conv, ...). m must outlive the qmodel. */
QAT_API qat_qmodel *qat_qmodel_prepare(qat_model *m, const qat_qconfig *cfg);
QAT_API void qat_qmodel_free(qat_qmodel *qm);
QAT_API qat_model *qat_qmodel_float(qat_qmodel *qm);
QAT_API const qat_qconfig *qat_qmodel_config(const qat_qmodel *qm);

QAT_API int qat_qmodel_num_units(const qat_qmodel *qm);
QAT_API qat_qunit *qat_qmodel_unit(qat_qmodel *qm, int i);
/* Index of the unit named name, or -1. */
QAT_API int qat_qmodel_find_unit(const qat_qmodel *qm, const char *name);
/* The unit whose activation quantizer gives layer i's output its grid
 * (following max-pool/flatten/relu back to a unit), or -1 (float). */
QAT_API int qat_qmodel_layer_unit(const qat_qmodel *qm, int layer);

/* Learnable quantization parameters (LSQ scales and zero points), named
 * "<unit>.weight_scale", "<unit>.act_scale", "<unit>.act_zero_point",
 * marked no_decay. */
QAT_API int qat_qmodel_num_params(const qat_qmodel *qm);
QAT_API const qat_named_tensor *qat_qmodel_params(const qat_qmodel *qm);

/* Every trainable tensor of the QAT model, for one optimizer: the float
 * model's parameters (qat_model_params: weights, biases, BN gamma/beta,
 * with their no_decay flags) followed by the learnable quantization
 * parameters (qat_qmodel_params, no_decay), the list `qat train` trains.
 * Writes min(n, total) entries to out and returns the total (snprintf's
 * contract: out may be NULL with n 0 to ask for the count), or a negative
 * status. The optimizer copies the entries, so out may be freed once it
 * is created:
 *
 *   int n = qat_qmodel_parameters(qm, NULL, 0);
 *   qat_named_tensor *p = malloc(n * sizeof *p);
 *   qat_qmodel_parameters(qm, p, n);
 *   qat_optim *opt = qat_optim_create(p, n, &opts);
 *   free(p);
 */
QAT_API int qat_qmodel_parameters(const qat_qmodel *qm, qat_named_tensor *out, int n);

/* Keeps learnable scales >= QAT_SCALE_EPS and zero points in [qmin, qmax]
 * (and the quantizers' scale/zero_point copies in step). Optional: the
 * quantizers apply the same projection, in place, before they use their
 * learnable parameters (forward, integer evaluation, export), so a loop
 * that never calls it trains bit for bit like one that calls it after each
 * optimizer step (as `qat train` does). */
QAT_API void qat_qmodel_clamp_params(qat_qmodel *qm);

/* Forward with fake-quant, as the int8 model would compute. */
QAT_API qat_tensor *qat_qmodel_forward(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x);
/* Every layer's output (arena array of qat_model_num_layers tensors). */
QAT_API qat_tensor **qat_qmodel_forward_all(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x);

/* How a qmodel evaluates (forward with training and gradients off; with
 * either on, and while calibrating, the fake-quant graph always runs):
 *
 * QAT_EVAL_INTEGER_GRID (the default after qat_qmodel_prepare): each
 *   quantized unit is computed on the integer grid: the conv/linear
 *   accumulator sum (x - z_in) * w_q + b_q exactly, the output grid index
 *   round(acc * s_in * s_w / s_out) in double, from the same integer
 *   weights, bias and multipliers the int8 converter makes
 *   (quant/convert.c). It is the function the int8 export computes
 *   (docs/QUANT.md, section 13).
 * QAT_EVAL_FLOAT32_GRAPH: the float32 fake-quant graph training uses (as
 *   PyTorch evaluates); it differs from the grid only where float32
 *   rounding lands next to a rounding boundary (about 1 output in 10^3-10^4
 *   per layer).
 *
 * `qat eval --eval-mode` selects it and every tool prints the one used. */
typedef enum {
    QAT_EVAL_INTEGER_GRID = 0,
    QAT_EVAL_FLOAT32_GRAPH,
    QAT_EVAL_MODE_COUNT
} qat_eval_mode;
/* "integer-grid", "float32-graph"; NULL for an unknown value */
QAT_API const char *qat_eval_mode_name(qat_eval_mode mode);
/* inverse; -1 if unknown */
QAT_API int qat_eval_mode_from_name(const char *name);
/* QAT_ERR_ARG for a NULL qmodel or an unknown mode. */
QAT_API int qat_qmodel_set_eval_mode(qat_qmodel *qm, qat_eval_mode mode);
QAT_API qat_eval_mode qat_qmodel_eval_mode(const qat_qmodel *qm);

/* Switches (apply to every unit). */
QAT_API void qat_qmodel_freeze_bn(qat_qmodel *qm, int frozen);
QAT_API void qat_qmodel_set_observers(qat_qmodel *qm, int enabled);
QAT_API void qat_qmodel_set_fake_quant(qat_qmodel *qm, int enabled);
/* Per unit: fake-quant on/off (the unit then runs float). */
QAT_API int qat_qmodel_set_unit_fake_quant(qat_qmodel *qm, const char *unit, int enabled);

/* One calibration batch: evaluation mode (BN running statistics), no
 * gradient, activation observers updating. Fake-quant stays as set (PTQ
 * calibrates with it off, qat_qmodel_set_fake_quant(qm, 0)). */
QAT_API int qat_qmodel_calibrate(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x);
/* PTQ: after running calibration batches with observers on and fake-quant
 * off, fixes every quantizer's parameters from its observer (the
 * configured calibrator), then turns observers off and fake-quant on. */
QAT_API int qat_qmodel_finalize(qat_qmodel *qm);
/* Recomputes parameters of activation quantizers from their observers
 * with another calibrator (histogram observers only: kl, percentile, mse,
 * minmax), without observing again. */
QAT_API int qat_qmodel_recalibrate(qat_qmodel *qm, qat_calibrator cal);

/* ---- per-layer error metrics ---- */

typedef struct qat_layer_error {
    char name[QAT_NAME_MAX]; /* unit name */
    int layer;               /* the unit's output layer */
    double cosine;           /* cosine similarity float vs quantized */
    double sqnr_db;          /* 10 log10(sum f^2 / sum (f-q)^2); inf if equal */
    double mse;
} qat_layer_error;

/* Float model vs quantized model on the same batch x [N,C,H,W]: one entry
 * per unit with quantization, in order. out has room for
 * qat_qmodel_num_units(qm) entries; returns the count or a negative
 * status. Evaluation mode, no gradient. */
QAT_API int qat_qmodel_layer_errors(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x,
                                    qat_layer_error *out);
/* The three metrics for two arrays. */
QAT_API void qat_error_metrics(const float *ref, const float *q, size_t n, double *cosine,
                               double *sqnr_db, double *mse);

/* ---- fake-quant tensor ops ----
 *
 * The ops the quantized model is built from, for scripts that quantize
 * their own tensors. Forward (PyTorch's fake_quantize_per_tensor_affine,
 * docs/QUANT.md), with inv_s = fl32(1 / scale):
 *   q_u = zp + nearbyint(x * inv_s)             ties to even, unclamped
 *   y   = (clamp(q_u, qmin, qmax) - zp) * scale
 * the rounding qat's convert and int8 runtime use. Ranges: qmin < qmax
 * within [-2^16, 2^16] (qat_qscheme_range gives a scheme's); bad arguments
 * fail with QAT_ERR_ARG / QAT_ERR_SHAPE and NULL.
 *
 * Straight-through gradient (fixed scale and zero point):
 *   dx = dy where qmin <= q_u <= qmax, 0 elsewhere.
 *
 * Learnable (LSQ, PyTorch's _fake_quantize_learnable_per_tensor_affine):
 * scale and zero_point are float tensors that receive gradients; the
 * forward uses the integer zero point clamp(nearbyint(zero_point), qmin,
 * qmax). Per element, with g = grad_factor:
 *   dx = dy where qmin <= q_u <= qmax, 0 elsewhere
 *   inside:        dscale += dy * (y - x) * inv_s * g     dzp += 0
 *   below / above: dscale += dy * (qmin|qmax - zp) * g    dzp += -dy * scale * g
 * (summed in double, in an order independent of the thread count).
 * grad_factor 0 means LSQ's 1/sqrt(N * qmax), N = elements per scale (what
 * the qmodel uses). zero_point may be NULL: zero point 0, not learned (the
 * symmetric schemes); a zero_point tensor with requires_grad 0 is used but
 * not learned.
 * Before use the op projects its parameters in place, as PyTorch's
 * _LearnableFakeQuantize clamps its scale in forward: a scale below
 * QAT_SCALE_EPS (or NaN) becomes QAT_SCALE_EPS, a zero point is clamped to
 * [qmin, qmax] (NaN: qmin), so an optimizer step that overshoots is
 * corrected at the next use; an infinite scale fails. */

/* One scale and zero point for all of x. scale > 0 and finite,
 * qmin <= zero_point <= qmax. */
QAT_API qat_tensor *qat_fake_quant_per_tensor(qat_ctx *ctx, qat_tensor *x, float scale,
                                              int32_t zero_point, int32_t qmin, int32_t qmax);
/* One (scales[c], zero_points[c]) per index c of dimension `axis` of x
 * (0 for a weight [OC, ...], 1 for activations [N, C, H, W]); both arrays
 * have x->shape[axis] entries and are copied. zero_points NULL: all 0. */
QAT_API qat_tensor *qat_fake_quant_per_channel(qat_ctx *ctx, qat_tensor *x, const float *scales,
                                               const int32_t *zero_points, int axis, int32_t qmin,
                                               int32_t qmax);
/* Learnable, per tensor: scale and zero_point (or NULL) have one element. */
QAT_API qat_tensor *qat_fake_quant_lsq(qat_ctx *ctx, qat_tensor *x, qat_tensor *scale,
                                       qat_tensor *zero_point, int32_t qmin, int32_t qmax,
                                       float grad_factor);
/* Learnable, per channel along axis: scale and zero_point (or NULL) have
 * x->shape[axis] elements. */
QAT_API qat_tensor *qat_fake_quant_lsq_per_channel(qat_ctx *ctx, qat_tensor *x, qat_tensor *scale,
                                                   qat_tensor *zero_point, int axis, int32_t qmin,
                                                   int32_t qmax, float grad_factor);

/* ---- requantization helpers (integer arithmetic of the int8 model) ----
 * The code the exporter and the int8 runtime use (runtime/rounding.h), for
 * scripts that check or reproduce the integer model. */

/* TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), with
 * multiplier in [2^30, 2^31) (0 for real 0), shift in [-31, 30]; reals
 * below 2^-32 flush to (0, 0), reals >= 2^30 saturate. The real multiplier
 * of a conv output channel is s_in * s_w[c] / s_out, computed in double.
 * QAT_ERR_ARG (and 0, 0) for a negative, NaN or infinite real. */
QAT_API int qat_requant_multiplier(double real_multiplier, int32_t *multiplier, int *shift);
/* clamp(round(acc * multiplier * 2^(shift - 31)) + zero_point, qmin, qmax):
 * one rounding, ties toward +inf (TFLite's single-rounding
 * MultiplyByQuantizedMultiplier), the sum in int64. With [qmin, qmax] =
 * [-128, 127] (a fused ReLU: [max(-128, zero_point), 127]) the int8 output the
 * runtime computes from an int32 accumulator. */
QAT_API int32_t qat_requantize(int32_t acc, int32_t multiplier, int shift, int32_t zero_point,
                               int32_t qmin, int32_t qmax);

#ifdef __cplusplus
}
#endif
#endif
