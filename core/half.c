/* core/half.c: binary16 and bfloat16 rounding (qat/half.h). Portable C:
 * one rounding from double with nearbyint (ties to even under the default
 * rounding mode), saturating at the largest finite value. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "qat/half.h"

/* x rounded to a binary format with mbits fraction bits, minimum normal
 * exponent emin and largest finite value maxv; saturating, NaN kept. */
static double round_fmt(double x, int mbits, int emin, double maxv)
{
    if (isnan(x)) return x;
    if (isinf(x)) return x > 0 ? maxv : -maxv;
    if (x == 0) return x;
    int e;
    frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
    int E = e - 1;
    if (E < emin) E = emin; /* subnormal: fixed quantum */
    double q = ldexp(1.0, E - mbits);
    double r = nearbyint(x / q) * q;
    if (r > maxv) return maxv;
    if (r < -maxv) return -maxv;
    return r;
}

/* bits of a value already representable in the format (after round_fmt) */
static uint16_t encode(double r, int mbits, int emin, int bias, uint16_t qnan)
{
    if (isnan(r)) return qnan;
    uint16_t s = signbit(r) ? 0x8000u : 0;
    double a = fabs(r);
    if (a == 0) return s;
    int e;
    frexp(a, &e);
    int E = e - 1;
    if (E < emin) /* subnormal */
        return (uint16_t)(s | (uint16_t)(a / ldexp(1.0, emin - mbits)));
    uint32_t mant = (uint32_t)(a / ldexp(1.0, E - mbits)) - (1u << mbits);
    return (uint16_t)(s | (uint16_t)((uint32_t)(E + bias) << mbits) | mant);
}

static double decode(uint16_t h, int mbits, int ebits, int bias)
{
    int sign = h >> 15;
    int ex = (h >> mbits) & ((1 << ebits) - 1);
    uint32_t mant = h & ((1u << mbits) - 1);
    double v;
    if (ex == 0)
        v = ldexp((double)mant, 1 - bias - mbits);
    else if (ex == (1 << ebits) - 1)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp((double)(mant | (1u << mbits)), ex - bias - mbits);
    return sign ? -v : v;
}

uint16_t qat_f16_from_double(double x)
{
    return encode(round_fmt(x, 10, -14, QAT_F16_MAX), 10, -14, 15, 0x7e00);
}
uint16_t qat_f16_from_float(float x) { return qat_f16_from_double(x); }
float qat_f16_to_float(uint16_t h) { return (float)decode(h, 10, 5, 15); }
float qat_f16_round(double x) { return (float)round_fmt(x, 10, -14, QAT_F16_MAX); }

uint16_t qat_bf16_from_double(double x)
{
    return encode(round_fmt(x, 7, -126, QAT_BF16_MAX), 7, -126, 127, 0x7fc0);
}
float qat_bf16_to_float(uint16_t h) { return (float)decode(h, 7, 8, 127); }
float qat_bf16_round(double x) { return (float)round_fmt(x, 7, -126, QAT_BF16_MAX); }

void qat_f16_round_array(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = qat_f16_round(x[i]);
}
void qat_bf16_round_array(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = qat_bf16_round(x[i]);
}
