/* Private pieces of quant/ shared between its files. */
#ifndef QAT_QUANT_INTERNAL_H
#define QAT_QUANT_INTERNAL_H

#include "qat/quant.h"

/* ---- the qmodel (quant/prepare.c builds it) ----
 * Two graph walkers exist on purpose: qat_model_forward_all (layers/)
 * runs the float model layer by layer; qat_qmodel_forward_all
 * (quant/forward.c) runs the same layers grouped into quantization units,
 * since a unit (conv + BN + ReLU, add + ReLU) is computed as one piece: BN
 * folded into the weights, the quantizer after the fused ReLU. The
 * converter (quant/convert.c) walks the units the same way, and
 * qat_qmodel_layer_errors runs both walkers on one batch to compare them. */
struct qat_qmodel {
    qat_model *m;
    qat_qconfig cfg;
    qat_qunit *units;
    int n_units;
    int *layer_owner; /* unit that computes layer i, or -1 */
    int *layer_unit;  /* unit whose activation grid layer i's output is on, or -1 */
    qat_named_tensor *params;
    int n_params;
    int calibrating;
    qat_eval_mode eval_mode; /* how evaluation runs (qat_qmodel_set_eval_mode) */
};

/* The activation observer a calibrator needs (quant/config.c). */
qat_observer_opts qat_act_observer_opts(qat_calibrator cal);
/* The per-channel weight scales of wq expanded to C entries (arena). */
const float *qat_channel_weight_scales(qat_ctx *ctx, const qat_quantizer *wq, int C);
/* A unit evaluated on the integer grid (quant/grid.c): its output, or
 * NULL with *failed = 0 when the grid does not apply (mode, training,
 * gradients, an input off its grid: the caller runs the fake-quant graph),
 * or NULL with *failed = 1 on an error. */
qat_tensor *qat_qunit_forward_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed);

/* ---- the histogram observer's grid (quant/histogram.c, for observer.c) ---- */
int qat_hist_update_(double *counts, int64_t cap, int bins, double *inv, int64_t *g0,
                     int64_t *nb, uint64_t zeros_before, float bmin, float bmax, const float *x,
                     size_t n, double *tmp);
int qat_hist_range_(const double *counts, double inv, int64_t g0, int64_t nb, float dmin,
                    float dmax, const qat_qscheme *s, qat_calib_method m, double pct,
                    float *lo, float *hi);

/* Fake-quantizes x with q on the tape (per tensor, or per channel along
 * q->scheme.axis). Observes x first when q->observe and `observe` say so
 * (the observer then fixes the parameters, unless q is learnable and
 * already initialised). Returns x itself when fake-quant is off. */
qat_tensor *qat_fq(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe);
/* What qat_fq(ctx, x, q, 1) does before it fake-quantizes: q's observer
 * sees x and fixes q's parameters (when q observes). QAT_ERR_SHAPE, or the
 * observer's failure (also recorded on ctx). */
int qat_quantizer_observe(qat_ctx *ctx, qat_quantizer *q, const qat_tensor *x);
/* qat_fq(relu(x)) in one pass, the ReLU's gradient folded into the mask:
 * the same output, gradient and observer state as the composition, for a
 * per-tensor, non-learnable quantizer with a min/max observer (or none).
 * Other quantizers run the composition. *relu_out gets the ReLU's output
 * when the composition ran, else the fused output (the ReLU's own output
 * is not kept). */
qat_tensor *qat_fq_relu(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe, qat_tensor **relu_out);
/* The observer sees relu(x) without it being formed: min/max observers
 * only (QAT_ERR_UNSUPPORTED for histogram and per-channel ones). */
int qat_observer_observe_relu(qat_observer *obs, const float *x, size_t n);
/* b on the int32 grid s_in * s_w[c]; straight-through gradient to b. */
qat_tensor *qat_fq_bias(qat_ctx *ctx, qat_tensor *b, float s_in, const float *s_w);

/* ---- binary, codebook, hashed and float-format quantizers (quant/weights.c) ---- */

/* 1 for a quantizer quant/weights.c handles (not the uniform grid). */
int qat_quantizer_is_special(const qat_quantizer *q);
/* Its parameters from x itself when it observes (binary: alpha = mean |w|
 * per channel; codebook: k-means; hashed: bucket means; once, for learned
 * ones). */
int qat_quantizer_observe_special(qat_quantizer *q, const qat_tensor *x, size_t outer, size_t channels,
                                  size_t inner);
/* Its fake-quant on the tape (relu: of relu(x); float formats only). */
qat_tensor *qat_fq_special(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, size_t outer, size_t channels,
                           size_t inner, int relu);
/* Codebook / hashed: the per-tensor grid scale of the shared values,
 * max |v| / 127 (>= QAT_SCALE_EPS), and their int8 values [k]. */
float qat_values_scale(const qat_quantizer *q);
int qat_quantizer_value_ints(const qat_quantizer *q, int8_t *out);
/* Binary / codebook / hashed: the int8 weights of w [n] (flat, as the
 * int8 file indexes them). */
int qat_quantizer_weight_ints(const qat_quantizer *q, const float *w, size_t n, int8_t *out);

/* LSQ's constraint on a learnable quantizer, in place (scales >=
 * QAT_SCALE_EPS, zero points in [qmin, qmax]) and its scale / zero_point
 * copies synced; a no-op for fixed quantizers and when already projected.
 * The accessors below call it, so every reader sees projected values. */
void qat_quantizer_project(const qat_quantizer *q);
/* The scales the quantizer applies now (learnable ones if any), [q->n]. */
const float *qat_quantizer_scales(const qat_quantizer *q);
/* The integer zero points it applies now, into zp [q->n]. */
void qat_quantizer_zero_points(const qat_quantizer *q, int32_t *zp);
/* Sets scale/zp from the observer (calibrator cal, or the observer's own
 * method when cal < 0), marks initialised, seeds learnable parameters. */
int qat_quantizer_from_observer(qat_quantizer *q, int cal);
int qat_quantizer_init(qat_quantizer *q, const qat_qscheme *s, int n, int lsq,
                       const qat_observer_opts *obs);
void qat_quantizer_free(qat_quantizer *q);

/* The unit's weight and bias with BN folded (running statistics), computed
 * on the tape by the same ops the fake-quant forward uses: W*gamma/sigma
 * and beta + gamma/sigma*(b - mean). Without BN: the layer's own tensors
 * (b may be NULL). */
int qat_qunit_fold(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, qat_tensor **w, qat_tensor **b);
/* Scale of the activation grid feeding a unit (0 if not quantized). */
float qat_qunit_input_scale(qat_qmodel *qm, const qat_qunit *un);
/* The grid of the unit's input k (0 or 1): 1 and its scale and zero point
 * when that input is on an integer per-tensor grid in use, else 0. */
int qat_qunit_input_grid(qat_qmodel *qm, const qat_qunit *un, int k, float *s, int32_t *z);
/* The quantizer that puts the unit's output on its grid: its own act, or
 * with QAT_CONCAT_SHARED the act of the concat unit it shares with. */
qat_quantizer *qat_qunit_actq(qat_qmodel *qm, const qat_qunit *un);
/* Copies each shared concat quantizer's parameters into its members' act
 * (scale, zero point, initialized): what the members' readers see. */
void qat_qmodel_sync_shared(qat_qmodel *qm);
/* The grid range [lo, hi_c[c]] of the unit's output indices q (not q - z)
 * with its output quantizer's scale s and zero point z: [qmin, qmax], the
 * lower end raised to z by a fused ReLU, both ends the grid index of the
 * bounds of a fused clamp (qat_quantize_val of lo, hi or clamp_hi_c[c]:
 * the index fake-quant gives the clamped value). hi_c has C entries (the
 * unit's output channels). */
void qat_qunit_act_bounds(qat_qmodel *qm, const qat_qunit *un, float s, int32_t z, int C, int32_t *lo, int32_t *hi_c);
/* The int8 table of an act unit (hardswish, hardsigmoid, clamp): entry
 * q + 128 = the output grid index fake-quant gives the input grid value
 * (q - z_in) * s_in, computed by the same autograd op and rounding as the
 * fake-quant forward. QAT_ERR_STATE / QAT_ERR_UNSUPPORTED naming the unit
 * when an input or output grid is missing or not per tensor, or a clamp
 * has per-channel bounds. */
int qat_act_table(qat_qmodel *qm, const qat_qunit *un, int8_t *table);

#endif
