/* quant/qparams.c: schemes, ranges, (scale, zero point) from min/max.
 * The table is PyTorch's MinMaxObserver output (tests/gen_fakequant_golden.py
 * --qparams); the other tests are computed by hand in the comments. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "qat/qparams.h"
#include "runtime/rounding.h"
#include "testutil.h"

static qat_qscheme scheme(int bits, int symmetric, int is_signed, int narrow)
{
    qat_qscheme s = {bits, symmetric, is_signed, narrow, 0, 0};
    return s;
}

START_TEST(test_presets)
{
    qat_qscheme w = qat_qscheme_weight(8), a = qat_qscheme_activation(4);
    ck_assert_int_eq(w.bits, 8);
    ck_assert(w.symmetric && w.is_signed && w.narrow && w.per_channel && w.axis == 0);
    ck_assert_int_eq(a.bits, 4);
    ck_assert(!a.symmetric && a.is_signed && !a.narrow && !a.per_channel);
    ck_assert_int_eq(qat_qscheme_check(&w), QAT_OK);
    ck_assert_int_eq(qat_qscheme_check(&a), QAT_OK);
}
END_TEST

static void check_range(qat_qscheme s, int32_t lo, int32_t hi)
{
    int32_t qmin = 12345, qmax = 12345;
    ck_assert_int_eq(qat_qscheme_check(&s), QAT_OK);
    qat_qscheme_range(&s, &qmin, &qmax);
    ck_assert_msg(qmin == lo && qmax == hi, "bits %d signed %d narrow %d: [%d, %d], want [%d, %d]",
                  s.bits, s.is_signed, s.narrow, qmin, qmax, lo, hi);
}

START_TEST(test_ranges)
{
    check_range(scheme(8, 1, 1, 0), -128, 127);
    check_range(scheme(8, 1, 1, 1), -127, 127);
    check_range(scheme(8, 0, 0, 0), 0, 255);
    check_range(scheme(4, 0, 1, 0), -8, 7);
    check_range(scheme(4, 1, 1, 1), -7, 7);
    check_range(scheme(4, 0, 0, 0), 0, 15);
    check_range(scheme(2, 0, 1, 0), -2, 1);
    check_range(scheme(2, 1, 1, 1), -1, 1); /* ternary weights */
    check_range(scheme(1, 1, 1, 1), -1, 1); /* binary weights (0 never produced) */
    check_range(scheme(2, 0, 0, 0), 0, 3);
    check_range(scheme(3, 0, 1, 0), -4, 3);
    check_range(scheme(16, 0, 1, 0), -32768, 32767);
    check_range(scheme(16, 1, 1, 1), -32767, 32767);
    check_range(scheme(16, 0, 0, 0), 0, 65535);
    qat_qscheme bad = scheme(40, 0, 1, 0);
    int32_t qmin = 5, qmax = 5;
    qat_qscheme_range(&bad, &qmin, &qmax);
    ck_assert(qmin == 0 && qmax == 0);
}
END_TEST

static void check_invalid(qat_qscheme s, const char *msg)
{
    qat_clear_error();
    ck_assert_int_eq(qat_qscheme_check(&s), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), msg) != NULL, "message '%s' lacks '%s'",
                  qat_last_error(), msg);
    float sc = -1.0f;
    int32_t zp = -1;
    ck_assert_int_eq(qat_qparams_from_minmax(&s, -1.0f, 1.0f, &sc, &zp), QAT_ERR_ARG);
    ck_assert(strstr(qat_last_error(), msg) != NULL);
}

START_TEST(test_invalid_schemes)
{
    check_invalid(scheme(1, 0, 1, 0), "1 bit (binary, {-1, +1} x scale) needs a symmetric signed narrow scheme");
    check_invalid(scheme(0, 1, 1, 1), "bits is 0, expected 1..8 or 16");
    check_invalid(scheme(9, 0, 1, 0), "bits is 9, expected 1..8 or 16");
    check_invalid(scheme(12, 0, 1, 0), "bits is 12");
    check_invalid(scheme(32, 0, 1, 0), "bits is 32");
    check_invalid(scheme(0, 0, 1, 0), "bits is 0");
    check_invalid(scheme(8, 0, 0, 1), "narrow range needs a signed scheme");
    check_invalid(scheme(8, 2, 1, 0), "symmetric is 2, expected 0 or 1");
    check_invalid(scheme(8, 0, -1, 0), "is_signed is -1");
    check_invalid(scheme(8, 0, 1, 7), "narrow is 7");
    qat_qscheme s = qat_qscheme_weight(8);
    s.axis = -1;
    check_invalid(s, "per-channel axis is -1, expected 0..3");
    s.axis = 4;
    check_invalid(s, "per-channel axis is 4");
    s.per_channel = 3;
    check_invalid(s, "per_channel is 3");
    s = qat_qscheme_activation(8);
    s.axis = -1; /* ignored per tensor */
    ck_assert_int_eq(qat_qscheme_check(&s), QAT_OK);
    ck_assert_int_eq(qat_qscheme_check(NULL), QAT_ERR_ARG);
    ck_assert(strstr(qat_last_error(), "NULL") != NULL);
    float sc;
    int32_t zp;
    s = qat_qscheme_activation(8);
    ck_assert_int_eq(qat_qparams_from_minmax(&s, 0.0f, 1.0f, NULL, &zp), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qparams_from_minmax(&s, 0.0f, 1.0f, &sc, NULL), QAT_ERR_ARG);
}
END_TEST

/* Hand-computed. */
START_TEST(test_hand_values)
{
    float s;
    int32_t z;
    qat_qscheme aff = qat_qscheme_activation(8), w = qat_qscheme_weight(8);
    w.per_channel = 0;
    /* affine int8 [-1, 2]: s = 3/255, z = -128 - round(-1 / (3/255)) = -128 + 85 */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -1.0f, 2.0f, &s, &z), QAT_OK);
    ck_assert(s == 3.0f / 255.0f);
    ck_assert_int_eq(z, -43);
    /* [-0.3, 0.7]: s = 1/255; -0.3f / s is exactly -76.5 in float: ties to even
     * gives -76, z = -128 + 76 = -52 (ties away would give -51) */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -0.3f, 0.7f, &s, &z), QAT_OK);
    ck_assert(-0.3f / s == -76.5f);
    ck_assert_int_eq(z, -52);
    /* the range is widened to contain 0: [0.5, 4] acts as [0, 4] */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, 0.5f, 4.0f, &s, &z), QAT_OK);
    ck_assert(s == 4.0f / 255.0f);
    ck_assert_int_eq(z, -128);
    /* narrow symmetric int8: divisor (127 - -127)/2 = 127 exactly, so amax
     * lands on 127 */
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -1.0f, 2.0f, &s, &z), QAT_OK);
    ck_assert(s == 2.0f / 127.0f);
    ck_assert_int_eq(z, 0);
    ck_assert_int_eq(qat_quantize_val(2.0f, 1.0f / s, 0, -127, 127), 127);
    ck_assert_int_eq(qat_quantize_val(-2.0f, 1.0f / s, 0, -127, 127), -127);
    /* full-range symmetric int8 (PyTorch's quirk): divisor 127.5, so +amax
     * maps to 127.5 -> 128 -> clamped to 127 and -amax to -128. With amax 3:
     * s = fl(3/127.5) = 0.023529412, fl(1/s) = 42.5, 3 * 42.5 = 127.5 exactly.
     * (With amax 2 the float reciprocal gives 127.49999 -> 127 and -127.) */
    qat_qscheme sym = scheme(8, 1, 1, 0);
    ck_assert_int_eq(qat_qparams_from_minmax(&sym, -1.0f, 3.0f, &s, &z), QAT_OK);
    ck_assert(s == 3.0f / 127.5f);
    ck_assert(1.0f / s == 42.5f);
    ck_assert_int_eq(qat_quantize_val_unclamped(3.0f, 1.0f / s, 0), 128);
    ck_assert_int_eq(qat_quantize_val(3.0f, 1.0f / s, 0, -128, 127), 127);
    ck_assert_int_eq(qat_quantize_val(-3.0f, 1.0f / s, 0, -128, 127), -128);
    ck_assert_int_eq(qat_qparams_from_minmax(&sym, -1.0f, 2.0f, &s, &z), QAT_OK);
    ck_assert_int_eq(qat_quantize_val_unclamped(2.0f, 1.0f / s, 0), 127);
    ck_assert_int_eq(qat_quantize_val_unclamped(-2.0f, 1.0f / s, 0), -127);
    /* symmetric unsigned: z = (0 + 255 + 1) / 2 = 128; 4 bits: 8 */
    qat_qscheme su = scheme(8, 1, 0, 0);
    ck_assert_int_eq(qat_qparams_from_minmax(&su, -1.0f, 2.0f, &s, &z), QAT_OK);
    ck_assert(s == 2.0f / 127.5f);
    ck_assert_int_eq(z, 128);
    su.bits = 4;
    ck_assert_int_eq(qat_qparams_from_minmax(&su, -1.0f, 2.0f, &s, &z), QAT_OK);
    ck_assert(s == 2.0f / 7.5f);
    ck_assert_int_eq(z, 8);
    /* 2-bit narrow: ternary, s = amax / 1 */
    qat_qscheme w2 = qat_qscheme_weight(2);
    ck_assert_int_eq(qat_qparams_from_minmax(&w2, -0.3f, 0.7f, &s, &z), QAT_OK);
    ck_assert(s == 0.7f);
    ck_assert_int_eq(z, 0);
    /* 4-bit affine [-0.3, 0.7]: s = 1/15, -0.3 / s = -4.5 -> -4, z = -8 + 4 */
    qat_qscheme a4 = qat_qscheme_activation(4);
    ck_assert_int_eq(qat_qparams_from_minmax(&a4, -0.3f, 0.7f, &s, &z), QAT_OK);
    ck_assert(s == 1.0f / 15.0f);
    ck_assert_int_eq(z, -4);
}
END_TEST

START_TEST(test_degenerate_ranges)
{
    float s;
    int32_t z;
    qat_qscheme aff = qat_qscheme_activation(8), w = qat_qscheme_weight(8);
    qat_qscheme uaff = scheme(8, 0, 0, 0);
    /* all zero: s = eps; affine z = qmin - round(0) = qmin; 0 stays exact */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, 0.0f, 0.0f, &s, &z), QAT_OK);
    ck_assert(s == QAT_SCALE_EPS);
    ck_assert_int_eq(z, -128);
    ck_assert_int_eq(qat_quantize_val(0.0f, 1.0f / s, z, -128, 127), -128);
    ck_assert_int_eq(qat_qparams_from_minmax(&w, 0.0f, 0.0f, &s, &z), QAT_OK);
    ck_assert(s == QAT_SCALE_EPS);
    ck_assert_int_eq(z, 0);
    ck_assert(1.0f / s == 8388608.0f); /* eps = 2^-23: the reciprocal is exact */
    /* constant positive 3: widened to [0, 3]; the constant is qmax exactly */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, 3.0f, 3.0f, &s, &z), QAT_OK);
    ck_assert(s == 3.0f / 255.0f);
    ck_assert_int_eq(z, -128);
    ck_assert_int_eq(qat_quantize_val(3.0f, 1.0f / s, z, -128, 127), 127);
    /* constant negative -3: [-3, 0]; z = -128 - round(-255) = 127 */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -3.0f, -3.0f, &s, &z), QAT_OK);
    ck_assert(s == 3.0f / 255.0f);
    ck_assert_int_eq(z, 127);
    ck_assert_int_eq(qat_quantize_val(-3.0f, 1.0f / s, z, -128, 127), -128);
    ck_assert_int_eq(qat_qparams_from_minmax(&uaff, -3.0f, -3.0f, &s, &z), QAT_OK);
    ck_assert_int_eq(z, 255);
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -3.0f, -3.0f, &s, &z), QAT_OK);
    ck_assert(s == 3.0f / 127.0f);
    ck_assert_int_eq(z, 0);
    /* one-sided */
    ck_assert_int_eq(qat_qparams_from_minmax(&uaff, 0.0f, 6.0f, &s, &z), QAT_OK);
    ck_assert(s == 6.0f / 255.0f);
    ck_assert_int_eq(z, 0);
    ck_assert_int_eq(qat_qparams_from_minmax(&uaff, -6.0f, 0.0f, &s, &z), QAT_OK);
    ck_assert_int_eq(z, 255);
    /* tiny: the scale stops at eps */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -1e-30f, 1e-30f, &s, &z), QAT_OK);
    ck_assert(s == QAT_SCALE_EPS);
    ck_assert_int_eq(z, -128);
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -1e-30f, 1e-30f, &s, &z), QAT_OK);
    ck_assert(s == QAT_SCALE_EPS);
    /* huge: finite scales */
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -1e30f, 1e30f, &s, &z), QAT_OK);
    ck_assert(s == 1e30f / 127.0f);
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -3e38f, 3e38f, &s, &z), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "too wide") != NULL, "%s", qat_last_error());
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -3e38f, 3e38f, &s, &z), QAT_OK);
    ck_assert(s == 3e38f / 127.0f);
    /* nothing observed: min > max, including the +inf/-inf initial state */
    s = 0.0f;
    z = 99;
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, 1.0f, -1.0f, &s, &z), QAT_OK);
    ck_assert(s == 1.0f);
    ck_assert_int_eq(z, 0);
    ck_assert_int_eq(qat_qparams_from_minmax(&w, INFINITY, -INFINITY, &s, &z), QAT_OK);
    ck_assert(s == 1.0f);
    ck_assert_int_eq(z, 0);
    qat_qscheme su = scheme(8, 1, 0, 0);
    ck_assert_int_eq(qat_qparams_from_minmax(&su, INFINITY, -INFINITY, &s, &z), QAT_OK);
    ck_assert_int_eq(z, 128);
    ck_assert_int_eq(qat_qparams_from_minmax(&uaff, INFINITY, -INFINITY, &s, &z), QAT_OK);
    ck_assert_int_eq(z, 0);
    /* NaN and infinite bounds */
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, NAN, 1.0f, &s, &z), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "is NaN") != NULL, "%s", qat_last_error());
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -1.0f, NAN, &s, &z), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qparams_from_minmax(&aff, -INFINITY, 1.0f, &s, &z), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "is infinite") != NULL, "%s", qat_last_error());
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -1.0f, INFINITY, &s, &z), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qparams_from_minmax(&w, -INFINITY, INFINITY, &s, &z), QAT_ERR_ARG);
}
END_TEST

START_TEST(test_per_channel)
{
    qat_qscheme w = qat_qscheme_weight(8);
    float mins[4] = {-1.0f, 0.0f, -3.0f, 0.25f}, maxs[4] = {2.0f, 0.0f, 1.0f, 1.0f};
    float s[4];
    int32_t z[4];
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, mins, maxs, 4, s, z), QAT_OK);
    ck_assert(s[0] == 2.0f / 127.0f && s[1] == QAT_SCALE_EPS && s[2] == 3.0f / 127.0f &&
              s[3] == 1.0f / 127.0f);
    ck_assert(z[0] == 0 && z[1] == 0 && z[2] == 0 && z[3] == 0);
    /* the same per channel as per tensor, affine too */
    qat_qscheme a = qat_qscheme_activation(4);
    ck_assert_int_eq(qat_qparams_from_minmax_n(&a, mins, maxs, 4, s, z), QAT_OK);
    for (int c = 0; c < 4; c++) {
        float s1;
        int32_t z1;
        ck_assert_int_eq(qat_qparams_from_minmax(&a, mins[c], maxs[c], &s1, &z1), QAT_OK);
        ck_assert(s1 == s[c] && z1 == z[c]);
    }
    /* a bad channel is named */
    maxs[2] = NAN;
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, mins, maxs, 4, s, z), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "channel 2: observed range [-3, nan] is NaN") != NULL,
                  "%s", qat_last_error());
    maxs[2] = 1.0f;
    mins[0] = -INFINITY;
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, mins, maxs, 4, s, z), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "channel 0:") != NULL, "%s", qat_last_error());
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, mins, maxs, -1, s, z), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, NULL, maxs, 4, s, z), QAT_ERR_ARG);
    ck_assert_int_eq(qat_qparams_from_minmax_n(&w, NULL, NULL, 0, NULL, NULL), QAT_OK);
}
END_TEST

enum { NARROW_SYM, SYM_SIGNED, AFF_SIGNED, AFF_UNSIGNED, SYM_UNSIGNED };

static const struct {
    int bits, kind;
    float min, max, scale;
    int32_t zp;
} golden[] = {
    {8, NARROW_SYM, -1.0f, 2.0f, 0.015748031f, 0},
    {8, NARROW_SYM, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {8, NARROW_SYM, 3.0f, 3.0f, 0.023622047f, 0},
    {8, NARROW_SYM, -3.0f, -3.0f, 0.023622047f, 0},
    {8, NARROW_SYM, 0.5f, 4.0f, 0.031496063f, 0},
    {8, NARROW_SYM, -4.0f, -0.5f, 0.031496063f, 0},
    {8, NARROW_SYM, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {8, NARROW_SYM, -1.0e30f, 1.0e30f, 7.874016e27f, 0},
    {8, NARROW_SYM, -2.0f, 1.0e30f, 7.874016e27f, 0},
    {8, NARROW_SYM, -0.3f, 0.7f, 0.005511811f, 0},
    {8, SYM_SIGNED, -1.0f, 2.0f, 0.015686275f, 0},
    {8, SYM_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {8, SYM_SIGNED, 3.0f, 3.0f, 0.023529412f, 0},
    {8, SYM_SIGNED, -3.0f, -3.0f, 0.023529412f, 0},
    {8, SYM_SIGNED, 0.5f, 4.0f, 0.03137255f, 0},
    {8, SYM_SIGNED, -4.0f, -0.5f, 0.03137255f, 0},
    {8, SYM_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {8, SYM_SIGNED, -1.0e30f, 1.0e30f, 7.8431377e27f, 0},
    {8, SYM_SIGNED, -2.0f, 1.0e30f, 7.8431377e27f, 0},
    {8, SYM_SIGNED, -0.3f, 0.7f, 0.005490196f, 0},
    {8, AFF_SIGNED, -1.0f, 2.0f, 0.011764706f, -43},
    {8, AFF_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, -128},
    {8, AFF_SIGNED, 3.0f, 3.0f, 0.011764706f, -128},
    {8, AFF_SIGNED, -3.0f, -3.0f, 0.011764706f, 127},
    {8, AFF_SIGNED, 0.5f, 4.0f, 0.015686275f, -128},
    {8, AFF_SIGNED, -4.0f, -0.5f, 0.015686275f, 127},
    {8, AFF_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, -128},
    {8, AFF_SIGNED, -1.0e30f, 1.0e30f, 7.8431377e27f, -1},
    {8, AFF_SIGNED, -2.0f, 1.0e30f, 3.9215688e27f, -128},
    {8, AFF_SIGNED, -0.3f, 0.7f, 0.003921569f, -52},
    {8, AFF_UNSIGNED, -1.0f, 2.0f, 0.011764706f, 85},
    {8, AFF_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {8, AFF_UNSIGNED, 3.0f, 3.0f, 0.011764706f, 0},
    {8, AFF_UNSIGNED, -3.0f, -3.0f, 0.011764706f, 255},
    {8, AFF_UNSIGNED, 0.5f, 4.0f, 0.015686275f, 0},
    {8, AFF_UNSIGNED, -4.0f, -0.5f, 0.015686275f, 255},
    {8, AFF_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {8, AFF_UNSIGNED, -1.0e30f, 1.0e30f, 7.8431377e27f, 127},
    {8, AFF_UNSIGNED, -2.0f, 1.0e30f, 3.9215688e27f, 0},
    {8, AFF_UNSIGNED, -0.3f, 0.7f, 0.003921569f, 76},
    {8, SYM_UNSIGNED, -1.0f, 2.0f, 0.015686275f, 128},
    {8, SYM_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 128},
    {8, SYM_UNSIGNED, 3.0f, 3.0f, 0.023529412f, 128},
    {8, SYM_UNSIGNED, -3.0f, -3.0f, 0.023529412f, 128},
    {8, SYM_UNSIGNED, 0.5f, 4.0f, 0.03137255f, 128},
    {8, SYM_UNSIGNED, -4.0f, -0.5f, 0.03137255f, 128},
    {8, SYM_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 128},
    {8, SYM_UNSIGNED, -1.0e30f, 1.0e30f, 7.8431377e27f, 128},
    {8, SYM_UNSIGNED, -2.0f, 1.0e30f, 7.8431377e27f, 128},
    {8, SYM_UNSIGNED, -0.3f, 0.7f, 0.005490196f, 128},
    {4, NARROW_SYM, -1.0f, 2.0f, 0.2857143f, 0},
    {4, NARROW_SYM, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {4, NARROW_SYM, 3.0f, 3.0f, 0.42857143f, 0},
    {4, NARROW_SYM, -3.0f, -3.0f, 0.42857143f, 0},
    {4, NARROW_SYM, 0.5f, 4.0f, 0.5714286f, 0},
    {4, NARROW_SYM, -4.0f, -0.5f, 0.5714286f, 0},
    {4, NARROW_SYM, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {4, NARROW_SYM, -1.0e30f, 1.0e30f, 1.4285715e29f, 0},
    {4, NARROW_SYM, -2.0f, 1.0e30f, 1.4285715e29f, 0},
    {4, NARROW_SYM, -0.3f, 0.7f, 0.1f, 0},
    {4, SYM_SIGNED, -1.0f, 2.0f, 0.26666668f, 0},
    {4, SYM_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {4, SYM_SIGNED, 3.0f, 3.0f, 0.4f, 0},
    {4, SYM_SIGNED, -3.0f, -3.0f, 0.4f, 0},
    {4, SYM_SIGNED, 0.5f, 4.0f, 0.53333336f, 0},
    {4, SYM_SIGNED, -4.0f, -0.5f, 0.53333336f, 0},
    {4, SYM_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {4, SYM_SIGNED, -1.0e30f, 1.0e30f, 1.3333334e29f, 0},
    {4, SYM_SIGNED, -2.0f, 1.0e30f, 1.3333334e29f, 0},
    {4, SYM_SIGNED, -0.3f, 0.7f, 0.093333334f, 0},
    {4, AFF_SIGNED, -1.0f, 2.0f, 0.2f, -3},
    {4, AFF_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, -8},
    {4, AFF_SIGNED, 3.0f, 3.0f, 0.2f, -8},
    {4, AFF_SIGNED, -3.0f, -3.0f, 0.2f, 7},
    {4, AFF_SIGNED, 0.5f, 4.0f, 0.26666668f, -8},
    {4, AFF_SIGNED, -4.0f, -0.5f, 0.26666668f, 7},
    {4, AFF_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, -8},
    {4, AFF_SIGNED, -1.0e30f, 1.0e30f, 1.3333334e29f, 0},
    {4, AFF_SIGNED, -2.0f, 1.0e30f, 6.666667e28f, -8},
    {4, AFF_SIGNED, -0.3f, 0.7f, 0.06666667f, -4},
    {4, AFF_UNSIGNED, -1.0f, 2.0f, 0.2f, 5},
    {4, AFF_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {4, AFF_UNSIGNED, 3.0f, 3.0f, 0.2f, 0},
    {4, AFF_UNSIGNED, -3.0f, -3.0f, 0.2f, 15},
    {4, AFF_UNSIGNED, 0.5f, 4.0f, 0.26666668f, 0},
    {4, AFF_UNSIGNED, -4.0f, -0.5f, 0.26666668f, 15},
    {4, AFF_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {4, AFF_UNSIGNED, -1.0e30f, 1.0e30f, 1.3333334e29f, 8},
    {4, AFF_UNSIGNED, -2.0f, 1.0e30f, 6.666667e28f, 0},
    {4, AFF_UNSIGNED, -0.3f, 0.7f, 0.06666667f, 4},
    {4, SYM_UNSIGNED, -1.0f, 2.0f, 0.26666668f, 8},
    {4, SYM_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 8},
    {4, SYM_UNSIGNED, 3.0f, 3.0f, 0.4f, 8},
    {4, SYM_UNSIGNED, -3.0f, -3.0f, 0.4f, 8},
    {4, SYM_UNSIGNED, 0.5f, 4.0f, 0.53333336f, 8},
    {4, SYM_UNSIGNED, -4.0f, -0.5f, 0.53333336f, 8},
    {4, SYM_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 8},
    {4, SYM_UNSIGNED, -1.0e30f, 1.0e30f, 1.3333334e29f, 8},
    {4, SYM_UNSIGNED, -2.0f, 1.0e30f, 1.3333334e29f, 8},
    {4, SYM_UNSIGNED, -0.3f, 0.7f, 0.093333334f, 8},
    {2, NARROW_SYM, -1.0f, 2.0f, 2.0f, 0},
    {2, NARROW_SYM, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {2, NARROW_SYM, 3.0f, 3.0f, 3.0f, 0},
    {2, NARROW_SYM, -3.0f, -3.0f, 3.0f, 0},
    {2, NARROW_SYM, 0.5f, 4.0f, 4.0f, 0},
    {2, NARROW_SYM, -4.0f, -0.5f, 4.0f, 0},
    {2, NARROW_SYM, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {2, NARROW_SYM, -1.0e30f, 1.0e30f, 1.0e30f, 0},
    {2, NARROW_SYM, -2.0f, 1.0e30f, 1.0e30f, 0},
    {2, NARROW_SYM, -0.3f, 0.7f, 0.7f, 0},
    {2, SYM_SIGNED, -1.0f, 2.0f, 1.3333334f, 0},
    {2, SYM_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {2, SYM_SIGNED, 3.0f, 3.0f, 2.0f, 0},
    {2, SYM_SIGNED, -3.0f, -3.0f, 2.0f, 0},
    {2, SYM_SIGNED, 0.5f, 4.0f, 2.6666667f, 0},
    {2, SYM_SIGNED, -4.0f, -0.5f, 2.6666667f, 0},
    {2, SYM_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {2, SYM_SIGNED, -1.0e30f, 1.0e30f, 6.666667e29f, 0},
    {2, SYM_SIGNED, -2.0f, 1.0e30f, 6.666667e29f, 0},
    {2, SYM_SIGNED, -0.3f, 0.7f, 0.46666667f, 0},
    {2, AFF_SIGNED, -1.0f, 2.0f, 1.0f, -1},
    {2, AFF_SIGNED, 0.0f, 0.0f, 1.1920929e-7f, -2},
    {2, AFF_SIGNED, 3.0f, 3.0f, 1.0f, -2},
    {2, AFF_SIGNED, -3.0f, -3.0f, 1.0f, 1},
    {2, AFF_SIGNED, 0.5f, 4.0f, 1.3333334f, -2},
    {2, AFF_SIGNED, -4.0f, -0.5f, 1.3333334f, 1},
    {2, AFF_SIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, -2},
    {2, AFF_SIGNED, -1.0e30f, 1.0e30f, 6.666667e29f, 0},
    {2, AFF_SIGNED, -2.0f, 1.0e30f, 3.3333334e29f, -2},
    {2, AFF_SIGNED, -0.3f, 0.7f, 0.33333334f, -1},
    {2, AFF_UNSIGNED, -1.0f, 2.0f, 1.0f, 1},
    {2, AFF_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 0},
    {2, AFF_UNSIGNED, 3.0f, 3.0f, 1.0f, 0},
    {2, AFF_UNSIGNED, -3.0f, -3.0f, 1.0f, 3},
    {2, AFF_UNSIGNED, 0.5f, 4.0f, 1.3333334f, 0},
    {2, AFF_UNSIGNED, -4.0f, -0.5f, 1.3333334f, 3},
    {2, AFF_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 0},
    {2, AFF_UNSIGNED, -1.0e30f, 1.0e30f, 6.666667e29f, 2},
    {2, AFF_UNSIGNED, -2.0f, 1.0e30f, 3.3333334e29f, 0},
    {2, AFF_UNSIGNED, -0.3f, 0.7f, 0.33333334f, 1},
    {2, SYM_UNSIGNED, -1.0f, 2.0f, 1.3333334f, 2},
    {2, SYM_UNSIGNED, 0.0f, 0.0f, 1.1920929e-7f, 2},
    {2, SYM_UNSIGNED, 3.0f, 3.0f, 2.0f, 2},
    {2, SYM_UNSIGNED, -3.0f, -3.0f, 2.0f, 2},
    {2, SYM_UNSIGNED, 0.5f, 4.0f, 2.6666667f, 2},
    {2, SYM_UNSIGNED, -4.0f, -0.5f, 2.6666667f, 2},
    {2, SYM_UNSIGNED, -1.0e-30f, 1.0e-30f, 1.1920929e-7f, 2},
    {2, SYM_UNSIGNED, -1.0e30f, 1.0e30f, 6.666667e29f, 2},
    {2, SYM_UNSIGNED, -2.0f, 1.0e30f, 6.666667e29f, 2},
    {2, SYM_UNSIGNED, -0.3f, 0.7f, 0.46666667f, 2},
};

START_TEST(test_golden_table)
{
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        int k = golden[i].kind;
        qat_qscheme s = scheme(golden[i].bits, k == NARROW_SYM || k == SYM_SIGNED || k == SYM_UNSIGNED,
                               k != AFF_UNSIGNED && k != SYM_UNSIGNED, k == NARROW_SYM);
        float sc = -1.0f;
        int32_t zp = -999;
        ck_assert_int_eq(qat_qparams_from_minmax(&s, golden[i].min, golden[i].max, &sc, &zp),
                         QAT_OK);
        ck_assert_msg(sc == golden[i].scale && zp == golden[i].zp,
                      "row %zu (%d bits, kind %d, [%g, %g]): (%.9g, %d), want (%.9g, %d)", i,
                      golden[i].bits, k, (double)golden[i].min, (double)golden[i].max,
                      (double)sc, zp, (double)golden[i].scale, golden[i].zp);
        /* zero is exactly representable: it quantizes to zp and back to 0 */
        int32_t qmin, qmax;
        qat_qscheme_range(&s, &qmin, &qmax);
        ck_assert_int_eq(qat_quantize_val(0.0f, 1.0f / sc, zp, qmin, qmax), zp);
    }
}
END_TEST

static Suite *qparams_suite(void)
{
    Suite *s = suite_create("qparams");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_presets);
    tcase_add_test(tc, test_ranges);
    tcase_add_test(tc, test_invalid_schemes);
    tcase_add_test(tc, test_hand_values);
    tcase_add_test(tc, test_degenerate_ranges);
    tcase_add_test(tc, test_per_channel);
    tcase_add_test(tc, test_golden_table);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(qparams_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
