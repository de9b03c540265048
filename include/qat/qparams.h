/* qat/qparams.h: quantization schemes and parameters (scale, zero point).
 * The rules are docs/QUANT.md's; the rounding helpers they use live in
 * runtime/rounding.h so that fake-quant, convert and the runtime agree. */
#ifndef QAT_QPARAMS_H
#define QAT_QPARAMS_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_qscheme {
    int bits;        /* 1..8, or 16 for experiments; 1 = binary {-1, +1} (weights only:
                      * symmetric signed narrow, range [-1, 1], sign(0) = +1) */
    int symmetric;   /* 1: symmetric (zero point fixed), 0: affine */
    int is_signed;   /* 1: [-2^(b-1), 2^(b-1)-1], 0: [0, 2^b-1] */
    int narrow;      /* signed only: [-(2^(b-1)-1), 2^(b-1)-1] */
    int per_channel; /* 0: per tensor, 1: one (scale, zp) per index of axis */
    int axis;        /* channel axis for per_channel (0 for conv/linear weights) */
} qat_qscheme;

/* Presets of the int8 deployment spec, at b bits: weights per-channel
 * symmetric narrow signed; activations per-tensor affine signed. */
QAT_API qat_qscheme qat_qscheme_weight(int bits);
QAT_API qat_qscheme qat_qscheme_activation(int bits);

/* QAT_OK, or QAT_ERR_ARG with a message for an invalid scheme. */
QAT_API int qat_qscheme_check(const qat_qscheme *s);
/* Integer range of the scheme (qmin = qmax = 0 if bits is not 1..16; [-1, 1] for binary). */
QAT_API void qat_qscheme_range(const qat_qscheme *s, int32_t *qmin, int32_t *qmax);

/* Smallest scale ever produced (PyTorch's float32 eps). */
#define QAT_SCALE_EPS 1.1920928955078125e-07f

/* (scale, zero point) from an observed range, widened to contain 0 first:
 * symmetric signed z = 0, s = max(|min|,|max|) / ((qmax-qmin)/2);
 * symmetric unsigned z = (qmin+qmax+1)/2; affine s = (max-min)/(qmax-qmin),
 * z = clamp(qmin - round_half_even(min/s), qmin, qmax). s >= QAT_SCALE_EPS.
 * min > max (nothing observed, e.g. the +inf/-inf initial state) gives
 * s = 1, z = 0 (or the symmetric z). Returns QAT_ERR_ARG for an invalid
 * scheme, a NaN bound, an infinite bound (with min <= max) or a range too
 * wide for a float32 scale (max - min overflows). */
QAT_API int qat_qparams_from_minmax(const qat_qscheme *s, float min, float max,
                                    float *scale, int32_t *zero_point);

/* Per-channel form: qat_qparams_from_minmax for each of n channels with the
 * same scheme. mins, maxs, scales, zero_points have n entries. Stops at the
 * first bad channel and names it in qat_last_error() ("channel 3: ...");
 * channels before it are written. Returns QAT_OK or QAT_ERR_ARG. */
QAT_API int qat_qparams_from_minmax_n(const qat_qscheme *s, const float *mins,
                                      const float *maxs, int n, float *scales,
                                      int32_t *zero_points);

#ifdef __cplusplus
}
#endif
#endif
