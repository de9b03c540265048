/* runtime/rounding.h: the quantize rounding, QuantizeMultiplier, single and
 * gemmlowp double rounding. Expectations are computed by hand (comments) or
 * with python3 (math.frexp). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "qat/quant.h" /* the public requantization helpers */
#include "runtime/rounding.h"
#include "testutil.h"

/* ---- quantize ---- */

START_TEST(test_quantize_ties)
{
    /* inv_scale 0.5 (scale 2): x * inv is exactly k + 0.5 */
    ck_assert_int_eq(qat_quantize_val(5.0f, 0.5f, 0, -128, 127), 2);   /* 2.5 -> 2 */
    ck_assert_int_eq(qat_quantize_val(7.0f, 0.5f, 0, -128, 127), 4);   /* 3.5 -> 4 */
    ck_assert_int_eq(qat_quantize_val(1.0f, 0.5f, 0, -128, 127), 0);   /* 0.5 -> 0 */
    ck_assert_int_eq(qat_quantize_val(3.0f, 0.5f, 0, -128, 127), 2);   /* 1.5 -> 2 */
    ck_assert_int_eq(qat_quantize_val(-5.0f, 0.5f, 0, -128, 127), -2); /* -2.5 -> -2 */
    ck_assert_int_eq(qat_quantize_val(-7.0f, 0.5f, 0, -128, 127), -4); /* -3.5 -> -4 */
    ck_assert_int_eq(qat_quantize_val(-1.0f, 0.5f, 0, -128, 127), 0);  /* -0.5 -> 0 */
    ck_assert_int_eq(qat_quantize_val(-3.0f, 0.5f, 0, -128, 127), -2); /* -1.5 -> -2 */
    /* the zero point is added after rounding: 1 + round(2.5) = 3, not round(3.5) = 4 */
    ck_assert_int_eq(qat_quantize_val(2.5f, 1.0f, 1, -128, 127), 3);
    ck_assert_int_eq(qat_quantize_val(-2.5f, 1.0f, -1, -128, 127), -3);
    ck_assert_int_eq(qat_quantize_val(126.5f, 1.0f, 0, -128, 127), 126);
    ck_assert_int_eq(qat_quantize_val(127.5f, 1.0f, 0, -128, 127), 127); /* 128 clamped */
    /* just off a tie */
    ck_assert_int_eq(qat_quantize_val(nextafterf(2.5f, 3.0f), 1.0f, 0, -128, 127), 3);
    ck_assert_int_eq(qat_quantize_val(nextafterf(-2.5f, -3.0f), 1.0f, 0, -128, 127), -3);
    /* the product is rounded to float first: fl32(1/0.1) = 10.0f;
     * fl32(0.3f * 10) = 3.0f; fl32(0.35f * 10) = 3.5f exactly (0.35f is
     * 0.34999999404) -> 4 by ties to even */
    ck_assert_int_eq(qat_quantize_val(0.3f, 1.0f / 0.1f, 0, -128, 127), 3);
    ck_assert_int_eq(qat_quantize_val(0.35f, 1.0f / 0.1f, 0, -128, 127), 4);
}
END_TEST

START_TEST(test_quantize_clamp)
{
    ck_assert_int_eq(qat_quantize_val(1000.0f, 1.0f, 0, -128, 127), 127);
    ck_assert_int_eq(qat_quantize_val(-1000.0f, 1.0f, 0, -128, 127), -128);
    ck_assert_int_eq(qat_quantize_val(-1000.0f, 1.0f, 0, -127, 127), -127);
    ck_assert_int_eq(qat_quantize_val(300.0f, 1.0f, 0, 0, 255), 255);
    ck_assert_int_eq(qat_quantize_val(-3.0f, 1.0f, 0, 0, 255), 0);
    ck_assert_int_eq(qat_quantize_val(-3.0f, 1.0f, 10, 0, 255), 7);
    /* the edges: -128.5 -> -128 (even) inside; -129.5 -> -130 outside */
    ck_assert_int_eq(qat_quantize_val_unclamped(-128.5f, 1.0f, 0), -128);
    ck_assert_int_eq(qat_quantize_val_unclamped(127.5f, 1.0f, 0), 128);
    ck_assert_int_eq(qat_quantize_val_unclamped(-129.5f, 1.0f, 0), -130);
    /* huge, infinite and NaN inputs: saturated, ordered; NaN to the bottom */
    ck_assert_int_eq(qat_quantize_val(1e30f, 1.0f, 0, -128, 127), 127);
    ck_assert_int_eq(qat_quantize_val(INFINITY, 1.0f, 0, -128, 127), 127);
    ck_assert_int_eq(qat_quantize_val(-INFINITY, 1.0f, 0, -128, 127), -128);
    ck_assert_int_eq(qat_quantize_val(NAN, 1.0f, 5, -128, 127), -128);
    ck_assert_int_eq(qat_quantize_val_unclamped(1e30f, 1.0f, 0), 4194304);
    ck_assert_int_eq(qat_quantize_val_unclamped(-INFINITY, 1.0f, 3), 3 - 4194304);
    ck_assert_int_eq(qat_quantize_val_unclamped(NAN, 1.0f, 3), 3 - 4194304);
    /* just outside the exact range of the trick: still far out of range */
    ck_assert_int_eq(qat_quantize_val_unclamped(6000000.5f, 1.0f, 0), 4194304);
    ck_assert_int_eq(qat_quantize_val_unclamped(-6000000.5f, 1.0f, 0), -4194304);
    ck_assert_int_eq(qat_quantize_val_unclamped(4194303.5f, 1.0f, 0), 4194304);
    ck_assert_int_eq(qat_quantize_val_unclamped(4194302.5f, 1.0f, 0), 4194302);
}
END_TEST

/* The add-and-subtract trick and the truncating helper equal nearbyintf on
 * every tie k + 0.5 with |k| < 2^22 and on their neighbours. */
START_TEST(test_round_vs_nearbyint_ties)
{
    long bad = 0;
    for (int32_t k = -4194304; k < 4194304; k++) {
        float t = (float)k + 0.5f;
        float vals[3] = {t, nextafterf(t, -INFINITY), nextafterf(t, INFINITY)};
        for (int j = 0; j < 3; j++) {
            int32_t want = (int32_t)nearbyintf(vals[j]);
            bad += qat_quantize_val_unclamped(vals[j], 1.0f, 0) != want;
            bad += qat_round_half_even(vals[j]) != want;
        }
    }
    ck_assert_int_eq(bad, 0);
}
END_TEST

START_TEST(test_round_vs_nearbyint_random)
{
    qat_rng r;
    qat_rng_seed(&r, 1234);
    long bad = 0;
    for (int i = 0; i < 2000000; i++) {
        /* random sign, exponent 2^-30 .. 2^31, mantissa */
        float v = ldexpf(1.0f + qat_rng_uniform(&r), (int)qat_rng_below(&r, 61) - 30);
        if (qat_rng_u32(&r) & 1) v = -v;
        if (fabsf(v) >= 2147483648.0f) continue;
        float n = nearbyintf(v);
        bad += qat_round_half_even(v) != (int32_t)n;
        int32_t u = qat_quantize_val_unclamped(v, 1.0f, 0);
        int32_t want = fabsf(n) > 4194304.0f ? (n > 0 ? 4194304 : -4194304) : (int32_t)n;
        bad += u != want;
        /* with a scale: the product is what gets rounded */
        float inv = 1.0f / (0.001f + qat_rng_uniform(&r));
        float x = (qat_rng_uniform(&r) - 0.5f) * 300.0f;
        bad += qat_quantize_val(x, inv, 3, -128, 127) !=
               (int32_t)fminf(fmaxf(3.0f + nearbyintf(x * inv), -128.0f), 127.0f);
    }
    ck_assert_int_eq(bad, 0);
}
END_TEST

START_TEST(test_round_half_even_large)
{
    ck_assert_int_eq(qat_round_half_even(2147483520.0f), 2147483520); /* 2^31 - 128 */
    ck_assert_int_eq(qat_round_half_even(-2147483648.0f), INT32_MIN);
    ck_assert_int_eq(qat_round_half_even(8388607.5f), 8388608); /* odd k: up */
    ck_assert_int_eq(qat_round_half_even(8388606.5f), 8388606);
    ck_assert_int_eq(qat_round_half_even(-8388607.5f), -8388608);
    ck_assert_int_eq(qat_round_half_even(0.49999997f), 0);
    ck_assert_int_eq(qat_round_half_even(-0.0f), 0);
}
END_TEST

/* ---- bias ---- */

START_TEST(test_bias_val)
{
    /* s_b = 0.5: b / s_b = 2b */
    ck_assert_int_eq(qat_quantize_bias_val(1.25f, 0.5f), 2);   /* 2.5 -> 2 */
    ck_assert_int_eq(qat_quantize_bias_val(1.75f, 0.5f), 4);   /* 3.5 -> 4 */
    ck_assert_int_eq(qat_quantize_bias_val(-1.25f, 0.5f), -2); /* -2.5 -> -2 */
    ck_assert_int_eq(qat_quantize_bias_val(0.0f, 0.5f), 0);
    /* s_b = 2^-46 (both scales at eps = 2^-23): 0.5 / 2^-46 = 2^45 -> saturated */
    float tiny = ldexpf(1.0f, -46);
    ck_assert_int_eq(qat_quantize_bias_val(0.5f, tiny), QAT_BIAS_QMAX);
    ck_assert_int_eq(qat_quantize_bias_val(-0.5f, tiny), QAT_BIAS_QMIN);
    ck_assert_int_eq(qat_quantize_bias_val(ldexpf(1.0f, -17), tiny), 1 << 29); /* fits */
    ck_assert_int_eq(qat_quantize_bias_val(ldexpf(1.0f, -16), tiny), 1 << 30); /* edge */
    ck_assert_int_eq(qat_quantize_bias_val(ldexpf(1.5f, -16), tiny), QAT_BIAS_QMAX);
    ck_assert_int_eq(qat_quantize_bias_val(INFINITY, 0.5f), QAT_BIAS_QMAX);
    ck_assert_int_eq(qat_quantize_bias_val(-INFINITY, 0.5f), QAT_BIAS_QMIN);
    ck_assert_int_eq(qat_quantize_bias_val(NAN, 0.5f), 0);
    /* a value needing more than 24 bits: 2^25 + 4 is exact in float */
    ck_assert_int_eq(qat_quantize_bias_val(33554436.0f, 1.0f), 33554436);
    /* the float32 product s_in * s_w */
    ck_assert(qat_bias_scale(0.1f, 0.3f) == 0.1f * 0.3f);
}
END_TEST

/* ---- QuantizeMultiplier ---- */

static void check_qm(double M, int32_t want_m0, int want_shift)
{
    int32_t m0 = -7;
    int shift = -7;
    ck_assert_int_eq(qat_quantize_multiplier(M, &m0, &shift), 0);
    ck_assert_msg(m0 == want_m0 && shift == want_shift, "M=%.17g: got (%d, %d), want (%d, %d)",
                  M, m0, shift, want_m0, want_shift);
    /* the public helper is the same function */
    m0 = shift = -7;
    ck_assert_int_eq(qat_requant_multiplier(M, &m0, &shift), QAT_OK);
    ck_assert(m0 == want_m0 && shift == want_shift);
}

START_TEST(test_quantize_multiplier)
{
    check_qm(0.0, 0, 0);
    check_qm(1.0, 1073741824, 1);  /* 0.5 * 2^1 */
    check_qm(0.5, 1073741824, 0);
    check_qm(0.75, 1610612736, 0); /* 0.75 * 2^31 */
    check_qm(1.5, 1610612736, 1);
    check_qm(3.0, 1610612736, 2);
    check_qm(0.1, 1717986918, -3); /* 0.8 * 2^31 = 1717986918.4 */
    check_qm(1.0 / 3.0, 1431655765, -1);
    /* 0.0038 = 0.9728 * 2^-8; 0.9728 * 2^31 = 2089072092.77 */
    check_qm(0.0038, 2089072093, -8);
    /* tie m * 2^31 = 2^30 + 0.5: away from zero (TfLiteRound), not to even */
    check_qm(0.5 + ldexp(1.0, -32), 1073741825, 0);
    /* just under 1: m * 2^31 = 2^31 - 0.25 rounds to 2^31, carried */
    check_qm(1.0 - ldexp(1.0, -33), 1073741824, 1);
    check_qm(1.0 - ldexp(1.0, -32), 1073741824, 1); /* 2^31 - 0.5: a tie, away */
    check_qm(1.0 - ldexp(1.0, -30), 2147483646, 0);
    /* tiny */
    check_qm(ldexp(1.0, -31), 1073741824, -30);
    check_qm(ldexp(1.0, -32), 1073741824, -31);
    check_qm(ldexp(0.75, -31), 1610612736, -31);
    check_qm(ldexp(1.0, -33), 0, 0);                        /* shift -32: flushed */
    check_qm(ldexp(1.0, -32) * (1.0 - ldexp(1.0, -40)), 1073741824, -31); /* carried back in */
    check_qm(1e-20, 0, 0);
    /* large: shift capped at 30 */
    check_qm(1000.5, 2098200576, 10);
    check_qm(ldexp(1.0, 29), 1073741824, 30);
    check_qm(ldexp(1.0, 30), 2147483647, 30);
    check_qm(1e10, 2147483647, 30);
    /* invalid */
    int32_t m0;
    int shift;
    ck_assert_int_eq(qat_quantize_multiplier(-0.5, &m0, &shift), -1);
    ck_assert_int_eq(m0, 0);
    ck_assert_int_eq(shift, 0);
    ck_assert_int_eq(qat_quantize_multiplier(NAN, &m0, &shift), -1);
    ck_assert_int_eq(qat_quantize_multiplier(INFINITY, &m0, &shift), -1);
    /* M from float scales, in double */
    ck_assert(qat_requant_real_multiplier(0.5f, 0.25f, 2.0f) == 0.0625);
}
END_TEST

/* ---- single rounding ---- */

START_TEST(test_requant_single)
{
    const int32_t half = 1073741824; /* 2^30 */
    /* M = 0.5 (m0 2^30, shift 0): ties go to +inf */
    ck_assert_int_eq(qat_requant_single(3, half, 0), 2);   /* 1.5 */
    ck_assert_int_eq(qat_requant_single(-3, half, 0), -1); /* -1.5 */
    ck_assert_int_eq(qat_requant_single(5, half, 0), 3);   /* 2.5 */
    ck_assert_int_eq(qat_requant_single(-5, half, 0), -2); /* -2.5 */
    ck_assert_int_eq(qat_requant_single(1, half, 0), 1);   /* 0.5 */
    ck_assert_int_eq(qat_requant_single(-1, half, 0), 0);  /* -0.5 */
    ck_assert_int_eq(qat_requant_single(-7, half, 0), -3); /* -3.5 */
    ck_assert_int_eq(qat_requant_single(-8, half, 0), -4);
    /* M = 0.25 (shift -1): -1.25 -> -1, -1.75 -> -2 */
    ck_assert_int_eq(qat_requant_single(-5, half, -1), -1);
    ck_assert_int_eq(qat_requant_single(-7, half, -1), -2);
    ck_assert_int_eq(qat_requant_single(5, half, -1), 1);
    /* M = 1 (shift 1): identity, including the int32 extremes */
    ck_assert_int_eq(qat_requant_single(INT32_MAX, half, 1), INT32_MAX);
    ck_assert_int_eq(qat_requant_single(INT32_MIN, half, 1), INT32_MIN);
    ck_assert_int_eq(qat_requant_single(-12345, half, 1), -12345);
    /* M = 0.5 on the extremes: INT32_MIN/2 exact; INT32_MAX/2 = 2^30 - 0.5 -> 2^30 */
    ck_assert_int_eq(qat_requant_single(INT32_MIN, half, 0), -1073741824);
    ck_assert_int_eq(qat_requant_single(INT32_MAX, half, 0), 1073741824);
    /* m0 = 0 (flushed multiplier) */
    ck_assert_int_eq(qat_requant_single(INT32_MAX, 0, 0), 0);
    /* the deepest legal shift, -31 (t = 62) */
    ck_assert_int_eq(qat_requant_single(INT32_MAX, half, -31), 0);  /* 0.49999999977 */
    ck_assert_int_eq(qat_requant_single(INT32_MIN, half, -31), 0);  /* -0.5 -> 0 */
    ck_assert_int_eq(qat_requant_single(INT32_MAX, INT32_MAX, -31), 1); /* 0.99999999953 */
    ck_assert_int_eq(qat_requant_single(INT32_MIN, INT32_MAX, -31), -1); /* -0.99999999953 */
    /* below: exactly 0 */
    ck_assert_int_eq(qat_requant_single(INT32_MIN, INT32_MAX, -32), 0);
    ck_assert_int_eq(qat_requant_single(INT32_MAX, INT32_MAX, -1000), 0);
    /* the largest legal shift, 30 (t = 1): M = (2^31-1)/2 */
    ck_assert_int_eq(qat_requant_single(1, INT32_MAX, 30), 1073741824); /* 2^30 - 0.5 */
    ck_assert_int_eq(qat_requant_single(2, INT32_MAX, 30), INT32_MAX);
    ck_assert_int_eq(qat_requant_single(3, INT32_MAX, 30), INT32_MAX);  /* saturated */
    ck_assert_int_eq(qat_requant_single(-3, INT32_MAX, 30), INT32_MIN);
    ck_assert_int_eq(qat_requant_single(INT32_MIN, INT32_MAX, 30), INT32_MIN);
    /* t <= 0: exact left shifts, saturated */
    ck_assert_int_eq(qat_requant_single(1, half, 31), 1073741824); /* 2^30 * 2^0 */
    ck_assert_int_eq(qat_requant_single(-2, half, 31), INT32_MIN); /* -2^31 fits */
    ck_assert_int_eq(qat_requant_single(2, half, 31), INT32_MAX);  /* 2^31 does not */
    ck_assert_int_eq(qat_requant_single(1, 3, 33), 12);
    ck_assert_int_eq(qat_requant_single(-1, 3, 33), -12);
    ck_assert_int_eq(qat_requant_single(1, 1, 62), INT32_MAX);  /* 2^31 */
    ck_assert_int_eq(qat_requant_single(-1, 1, 62), INT32_MIN); /* -2^31 fits */
    ck_assert_int_eq(qat_requant_single(0, half, 100), 0);
    ck_assert_int_eq(qat_requant_single(1, 1, 100), INT32_MAX);
    ck_assert_int_eq(qat_requant_single(-1, 1, 100), INT32_MIN);
}
END_TEST

/* ---- gemmlowp ---- */

START_TEST(test_srdhm)
{
    const int32_t half = 1073741824;
    ck_assert_int_eq(qat_srdhm(INT32_MIN, INT32_MIN), INT32_MAX);
    ck_assert_int_eq(qat_srdhm(-3, half), -1); /* -1.5 -> -1 (toward +inf) */
    ck_assert_int_eq(qat_srdhm(3, half), 2);   /* 1.5 -> 2 */
    ck_assert_int_eq(qat_srdhm(1, half), 1);   /* 0.5 -> 1 */
    ck_assert_int_eq(qat_srdhm(-1, half), 0);  /* -0.5 -> 0 */
    ck_assert_int_eq(qat_srdhm(-5, half), -2); /* -2.5 -> -2 */
    ck_assert_int_eq(qat_srdhm(INT32_MAX, INT32_MAX), 2147483646); /* 2^31 - 2 + 2^-31 */
    ck_assert_int_eq(qat_srdhm(INT32_MIN, INT32_MAX), -2147483647);
    ck_assert_int_eq(qat_srdhm(INT32_MIN, half), -1073741824);
    ck_assert_int_eq(qat_srdhm(0, INT32_MIN), 0);
}
END_TEST

START_TEST(test_rdbpot)
{
    ck_assert_int_eq(qat_rounding_divide_by_pot(5, 1), 3);   /* 2.5 -> 3 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(-5, 1), -3); /* -2.5 -> -3 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(3, 1), 2);
    ck_assert_int_eq(qat_rounding_divide_by_pot(-3, 1), -2);
    ck_assert_int_eq(qat_rounding_divide_by_pot(7, 2), 2);   /* 1.75 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(-7, 2), -2);
    ck_assert_int_eq(qat_rounding_divide_by_pot(6, 2), 2);   /* 1.5 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(-6, 2), -2);
    ck_assert_int_eq(qat_rounding_divide_by_pot(5, 2), 1);   /* 1.25 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(-5, 2), -1);
    ck_assert_int_eq(qat_rounding_divide_by_pot(-1234, 0), -1234);
    ck_assert_int_eq(qat_rounding_divide_by_pot(INT32_MIN, 31), -1);
    ck_assert_int_eq(qat_rounding_divide_by_pot(INT32_MAX, 31), 1);
    ck_assert_int_eq(qat_rounding_divide_by_pot(1073741824, 31), 1);   /* 0.5 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(-1073741824, 31), -1); /* -0.5 */
    ck_assert_int_eq(qat_rounding_divide_by_pot(1073741823, 31), 0);
    ck_assert_int_eq(qat_rounding_divide_by_pot(INT32_MIN, 1), -1073741824);
}
END_TEST

START_TEST(test_requant_gemmlowp)
{
    const int32_t half = 1073741824;
    ck_assert_int_eq(qat_requant_gemmlowp(3, half, 0), 2);
    ck_assert_int_eq(qat_requant_gemmlowp(-3, half, 0), -1);
    /* M = 0.25, acc 5: exact 1.25. SRDHM(5, 2^30) = round(2.5) = 3, then
     * RDBPOT(3, 1) = round(1.5) = 2: double rounding is one step off the
     * single rounding's 1. */
    ck_assert_int_eq(qat_requant_gemmlowp(5, half, -1), 2);
    ck_assert_int_eq(qat_requant_single(5, half, -1), 1);
    /* M = 1, 2, 3 (left shifts) */
    ck_assert_int_eq(qat_requant_gemmlowp(-12345, half, 1), -12345);
    ck_assert_int_eq(qat_requant_gemmlowp(100, half, 2), 200);
    ck_assert_int_eq(qat_requant_gemmlowp(100, 1610612736, 2), 300);
    /* acc * 2^left overflowing wraps as TFLite does: 2^30 * 2 = -2^31 */
    ck_assert_int_eq(qat_requant_gemmlowp(1073741824, half, 1), -1073741824);
    ck_assert_int_eq(qat_requant_gemmlowp(INT32_MIN, INT32_MAX, -31), -1);
}
END_TEST

#if LDBL_MANT_DIG >= 64
/* round_half_up(acc * m0 / 2^t) in long double: |acc * m0| < 2^62 and the
 * sum with 0.5 needs at most 63 significant bits, so it is exact. */
static int32_t exact_single(int32_t acc, int32_t m0, int shift)
{
    long double v = ldexpl((long double)acc * (long double)m0, shift - 31) + 0.5L;
    long double f = floorl(v);
    if (f > INT32_MAX) return INT32_MAX;
    if (f < INT32_MIN) return INT32_MIN;
    return (int32_t)f;
}
#endif

/* Random (acc, M): single rounding equals the exact rounding; double
 * rounding is never more than one step away from it. */
START_TEST(test_requant_random)
{
    qat_rng r;
    qat_rng_seed(&r, 99);
    long differ = 0, bad = 0;
    const int n = 1000000;
    for (int i = 0; i < n; i++) {
        double M = ldexp(0.5 + 0.5 * qat_rng_uniform(&r), -(int)qat_rng_below(&r, 30));
        int32_t m0;
        int shift;
        ck_assert_int_eq(qat_quantize_multiplier(M, &m0, &shift), 0);
        int32_t acc = (int32_t)qat_rng_u32(&r);
        if (i % 2) acc >>= qat_rng_below(&r, 31); /* small accumulators too */
        int32_t s = qat_requant_single(acc, m0, shift);
        int32_t g = qat_requant_gemmlowp(acc, m0, shift);
        int64_t d = (int64_t)s - g;
        bad += d > 1 || d < -1;
        differ += d != 0;
#if LDBL_MANT_DIG >= 64
        bad += s != exact_single(acc, m0, shift);
#endif
    }
    ck_assert_int_eq(bad, 0);
    ck_assert_msg(differ > 0, "double rounding never differed: the test is too weak");
}
END_TEST

/* The public helpers (include/qat/quant.h) against rounding.h: the same
 * multipliers, and qat_requantize = clamp(qat_requant_single + zp), the
 * runtime reference kernels' epilogue. */
START_TEST(test_public_requant)
{
    int32_t m0 = 5;
    int shift = 5;
    ck_assert_int_eq(qat_requant_multiplier(-0.5, &m0, &shift), QAT_ERR_ARG);
    ck_assert(m0 == 0 && shift == 0);
    ck_assert_int_eq(qat_requant_multiplier(NAN, &m0, &shift), QAT_ERR_ARG);
    ck_assert_int_eq(qat_requant_multiplier(INFINITY, NULL, NULL), QAT_ERR_ARG);
    /* by hand: 0.5 -> (2^30, 0): 0.5 * acc, ties toward +inf, + zp, clamped */
    const int32_t half = 1073741824;
    ck_assert_int_eq(qat_requantize(3, half, 0, 0, -128, 127), 2);    /* 1.5 -> 2 */
    ck_assert_int_eq(qat_requantize(-3, half, 0, 0, -128, 127), -1);  /* -1.5 -> -1 */
    ck_assert_int_eq(qat_requantize(-3, half, 0, -5, -128, 127), -6);
    ck_assert_int_eq(qat_requantize(1000, half, 0, 10, -128, 127), 127);
    ck_assert_int_eq(qat_requantize(-1000, half, 0, 10, -128, 127), -128);
    ck_assert_int_eq(qat_requantize(-1000, half, 0, 10, 10, 127), 10); /* fused ReLU: lo = zp */
    ck_assert_int_eq(qat_requantize(INT32_MAX, INT32_MAX, 30, INT32_MAX, INT32_MIN, INT32_MAX), INT32_MAX);
    qat_rng r;
    qat_rng_seed(&r, 7);
    for (int i = 0; i < 200000; i++) {
        double M = ldexp(0.5 + 0.5 * qat_rng_uniform(&r), 2 - (int)qat_rng_below(&r, 36));
        int32_t a0, b0;
        int as, bs;
        ck_assert_int_eq(qat_quantize_multiplier(M, &a0, &as), 0);
        ck_assert_int_eq(qat_requant_multiplier(M, &b0, &bs), QAT_OK);
        ck_assert(a0 == b0 && as == bs);
        int32_t acc = (int32_t)qat_rng_u32(&r);
        if (i % 2) acc >>= qat_rng_below(&r, 31);
        int32_t zp = (int32_t)qat_rng_below(&r, 256) - 128;
        int32_t lo = i % 3 ? -128 : zp;
        int64_t v = (int64_t)qat_requant_single(acc, a0, as) + zp;
        int32_t want = (int32_t)(v < lo ? lo : v > 127 ? 127 : v);
        ck_assert_int_eq(qat_requantize(acc, a0, as, zp, lo, 127), want);
        ck_assert_int_eq(qat_requant_clamp(acc, a0, as, zp, lo, 127), want);
    }
}
END_TEST

static Suite *round_suite(void)
{
    Suite *s = suite_create("round");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_quantize_ties);
    tcase_add_test(tc, test_quantize_clamp);
    tcase_add_test(tc, test_round_vs_nearbyint_ties);
    tcase_add_test(tc, test_round_vs_nearbyint_random);
    tcase_add_test(tc, test_round_half_even_large);
    tcase_add_test(tc, test_bias_val);
    tcase_add_test(tc, test_quantize_multiplier);
    tcase_add_test(tc, test_requant_single);
    tcase_add_test(tc, test_srdhm);
    tcase_add_test(tc, test_rdbpot);
    tcase_add_test(tc, test_requant_gemmlowp);
    tcase_add_test(tc, test_requant_random);
    tcase_add_test(tc, test_public_requant);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(round_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
