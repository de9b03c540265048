/* qat/half.h: IEEE binary16 (fp16) and bfloat16 rounding, the arithmetic of
 * the fp16/bf16 quantization specs (docs/QUANT.md) shared by the
 * fake-quant graph, the converter and the runtime.
 *
 * Rounding is to nearest, ties to even, from the exact value (a double is
 * rounded once, not through float32), with subnormals. Overflow SATURATES
 * at the largest finite value (+-65504 for fp16, +-(2 - 2^-7) * 2^127 for
 * bf16), and so do +-inf: like the integer quantizers, which clamp to
 * [qmin, qmax], a value out of range becomes the nearest representable
 * one, and an activation that overflowed cannot turn into NaN in the next
 * layer (inf * 0). NaN stays NaN (the canonical quiet NaN 0x7e00 / 0x7fc0). */
#ifndef QAT_HALF_H
#define QAT_HALF_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_F16_MAX 65504.0
#define QAT_BF16_MAX 3.3895313892515355e38 /* (2 - 2^-7) * 2^127 */

/* binary16 bits of x, rounded as above */
QAT_API uint16_t qat_f16_from_double(double x);
QAT_API uint16_t qat_f16_from_float(float x);
/* the value of binary16 bits (exact) */
QAT_API float qat_f16_to_float(uint16_t h);
/* x rounded to the nearest binary16 value, as a float (exact) */
QAT_API float qat_f16_round(double x);

QAT_API uint16_t qat_bf16_from_double(double x);
QAT_API float qat_bf16_to_float(uint16_t h);
QAT_API float qat_bf16_round(double x);

/* In place over n floats (the fake-quant and runtime inner loops). */
QAT_API void qat_f16_round_array(float *x, size_t n);
QAT_API void qat_bf16_round_array(float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
