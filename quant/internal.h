/* Private pieces of quant/ shared between its files. */
#ifndef QAT_QUANT_INTERNAL_H
#define QAT_QUANT_INTERNAL_H

#include "qat/quant.h"

/* Fake-quantizes x with q on the tape (per tensor, or per channel along
 * q->scheme.axis). Observes x first when q->observe and `observe` say so
 * (the observer then fixes the parameters, unless q is learnable and
 * already initialised). Returns x itself when fake-quant is off. */
qat_tensor *qat_fq(qat_ctx *ctx, qat_tensor *x, qat_quantizer *q, int observe);
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

#endif
