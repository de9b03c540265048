/* quant/fakequant.h: fake-quantization kernels (private, not installed).
 *
 * Pure functions over arrays, qat_fqk_* ("fake-quant kernel"): no tape, no
 * allocation, no failure. The tensor ops built on them are quant/ops.c's:
 * the public qat_fake_quant_* (include/qat/quant.h) and the quantizers'
 * qat_fq*. Callers validate scales, zero points and ranges once:
 * scale > 0 and finite, qmin <= zp <= qmax, qmin < qmax within [-2^16, 2^16].
 * Argument order: outputs, inputs, quantization parameters, sizes.
 * Backward kernels ADD into their gradient outputs.
 *
 * Rules (docs/QUANT.md, PyTorch's fake_quantize_per_tensor_affine):
 *   q_u  = zp + nearbyint(x * fl32(1/s))            ties to even, unclamped
 *   y    = (clamp(q_u, qmin, qmax) - zp) * s
 *   mask = qmin <= q_u <= qmax                       straight-through
 * with runtime/rounding.h's qat_quantize_val_unclamped, the same function
 * convert and the runtime use. */
#ifndef QAT_QUANT_FAKEQUANT_H
#define QAT_QUANT_FAKEQUANT_H

#include <stddef.h>
#include <stdint.h>

/* Integer zero point of a learnable float one, as PyTorch's forward uses
 * it: clamp(nearbyint(z), qmin, qmax), ties to even (NaN gives qmin). */
int32_t qat_zero_point_from_float(float z, int32_t qmin, int32_t qmax);

/* ---- per tensor ---- */

/* y, mask, x are (n). mask may be NULL; else mask[i] = 1 where the
 * unclamped q lies in [qmin, qmax], 0 elsewhere. y may alias x. */
void qat_fqk_forward(float *y, uint8_t *mask, const float *x, float scale,
                     int32_t zp, int32_t qmin, int32_t qmax, size_t n);
/* Scalar reference (PyTorch's expression with libm nearbyintf), for tests. */
void qat_fqk_forward_ref(float *y, uint8_t *mask, const float *x, float scale,
                         int32_t zp, int32_t qmin, int32_t qmax, size_t n);

/* y = fake-quant of relu(x), mask = (x > 0) & (the unclamped q of relu(x)
 * lies in [qmin, qmax]): the composition's output and gradient mask, in
 * one pass. mask must not be NULL. */
void qat_fqk_relu_forward(float *y, uint8_t *mask, const float *x, float scale, int32_t zp, int32_t qmin,
                          int32_t qmax, size_t n);

/* dx += dy * mask; dx, dy, mask are (n). Also the per-channel backward. */
void qat_fqk_backward(float *dx, const float *dy, const uint8_t *mask, size_t n);

/* ---- per channel ---- */

/* Along one axis of a tensor viewed as (outer, channels, inner):
 * element (o, c, i) is at (o * channels + c) * inner + i and uses
 * scales[c], zps[c]. Axis 0 of a weight [OC, IC, KH, KW]: outer = 1,
 * channels = OC, inner = IC*KH*KW. Axis 1 of NCHW: outer = N, channels = C,
 * inner = H*W. y, mask, x are (outer, channels, inner); scales, zps are
 * (channels). mask may be NULL. */
void qat_fqk_channel_forward(float *y, uint8_t *mask, const float *x,
                             const float *scales, const int32_t *zps, int32_t qmin,
                             int32_t qmax, size_t outer, size_t channels, size_t inner);
void qat_fqk_channel_forward_ref(float *y, uint8_t *mask, const float *x,
                                 const float *scales, const int32_t *zps,
                                 int32_t qmin, int32_t qmax, size_t outer,
                                 size_t channels, size_t inner);

/* ---- learnable scale / zero point (LSQ) ----
 * PyTorch's fake_quantize_learnable_tensor_grad_kernel_cpu, per element,
 * with q_u as above (inv_s = fl32(1/s)):
 *   dx = dy * [qmin <= q_u <= qmax]
 *   inside:  ds = dy * ((clamp(q_u) - zp) * s - x) * inv_s * g   dzp = 0
 *   below:   ds = dy * (qmin - zp) * g                           dzp = -dy * s * g
 *   above:   ds = dy * (qmax - zp) * g                           dzp = -dy * s * g
 * and dscale += sum(ds), dzp += sum(dzp) (summed in double, in a fixed
 * order independent of the thread count). g = grad_factor, the caller's
 * 1/sqrt(N * qmax) (N elements per scale). zp is the same integer zero
 * point the forward used (qat_zero_point_from_float for a learnable one). */

/* dx, dy, x are (n); dscale, dzp point to one float. dx and dzp may be NULL
 * (input without gradient; symmetric scheme). */
void qat_fqk_lsq_backward(float *dx, float *dscale, float *dzp, const float *dy,
                          const float *x, float scale, int32_t zp, int32_t qmin,
                          int32_t qmax, float grad_factor, size_t n);
/* The same for fq(relu(x)) (qat_fqk_relu_forward): the gradients
 * of LSQ at relu(x), dx also masked by x > 0. */
void qat_fqk_lsq_relu_backward(float *dx, float *dscale, float *dzp, const float *dy, const float *x,
                               float scale, int32_t zp, int32_t qmin, int32_t qmax, float grad_factor,
                               size_t n);
void qat_fqk_lsq_backward_ref(float *dx, float *dscale, float *dzp, const float *dy,
                              const float *x, float scale, int32_t zp, int32_t qmin,
                              int32_t qmax, float grad_factor, size_t n);

/* Per channel: dx, dy, x are (outer, channels, inner); dscales, dzps,
 * scales, zps are (channels). dx and dzps may be NULL. */
void qat_fqk_lsq_channel_backward(float *dx, float *dscales, float *dzps,
                                  const float *dy, const float *x,
                                  const float *scales, const int32_t *zps,
                                  int32_t qmin, int32_t qmax, float grad_factor,
                                  size_t outer, size_t channels, size_t inner);

/* ---- bias on the int32 grid ---- */

/* out[c] = b_q * s_b with s_b = qat_bias_scale(s_in, s_w[c]) and
 * b_q = qat_quantize_bias_val(bias[c], s_b) (runtime/rounding.h: ties to
 * even, saturated to [-2^30, 2^30]), exactly the int32 bias convert writes.
 * out, bias, s_w are (n). The gradient is straight-through to the bias
 * (qat_fqk_bias_backward) and none flows to s_in or s_w. */
void qat_fqk_bias(float *out, const float *bias, const float *s_w, float s_in, int n);
/* dbias += dout; both (n). */
void qat_fqk_bias_backward(float *dbias, const float *dout, int n);

#endif
