/* Quantization schemes and (scale, zero point) from an observed range.
 * The rules and where they come from: docs/QUANT.md. */
#include <math.h>
#include <stdio.h>

#include "qat/qparams.h"
#include "qat/tensor.h"
#include "core/internal.h"
#include "runtime/rounding.h"

qat_qscheme qat_qscheme_weight(int bits)
{
    qat_qscheme s = {bits, 1, 1, 1, 1, 0};
    return s;
}

qat_qscheme qat_qscheme_activation(int bits)
{
    qat_qscheme s = {bits, 0, 1, 0, 0, 0};
    return s;
}

static int check_flag(const char *name, int v)
{
    if (v == 0 || v == 1) return QAT_OK;
    return qat_error(QAT_ERR_ARG, "qscheme: %s is %d, expected 0 or 1", name, v);
}

int qat_qscheme_check(const qat_qscheme *s)
{
    int rc;
    if (!s) return qat_error(QAT_ERR_ARG, "qscheme: scheme is NULL");
    if (!((s->bits >= 1 && s->bits <= 8) || s->bits == 16))
        return qat_error(QAT_ERR_ARG, "qscheme: bits is %d, expected 1..8 or 16", s->bits);
    if ((rc = check_flag("symmetric", s->symmetric)) ||
        (rc = check_flag("is_signed", s->is_signed)) ||
        (rc = check_flag("narrow", s->narrow)) ||
        (rc = check_flag("per_channel", s->per_channel)))
        return rc;
    if (s->bits == 1 && !(s->symmetric && s->is_signed && s->narrow))
        return qat_error(QAT_ERR_ARG, "qscheme: 1 bit (binary, {-1, +1} x scale) needs a symmetric signed narrow scheme");
    if (s->narrow && !s->is_signed)
        return qat_error(QAT_ERR_ARG,
                         "qscheme: narrow range needs a signed scheme (is_signed is 0)");
    if (s->per_channel && (s->axis < 0 || s->axis >= QAT_MAX_DIMS))
        return qat_error(QAT_ERR_ARG, "qscheme: per-channel axis is %d, expected 0..%d",
                         s->axis, QAT_MAX_DIMS - 1);
    return QAT_OK;
}

void qat_qscheme_range(const qat_qscheme *s, int32_t *qmin, int32_t *qmax)
{
    if (!s || s->bits < 1 || s->bits > 16) { /* invalid: see qat_qscheme_check */
        *qmin = 0;
        *qmax = 0;
        return;
    }
    if (s->bits == 1) { /* binary: the levels are -1 and +1 (0 is never produced) */
        *qmin = -1;
        *qmax = 1;
        return;
    }
    if (s->is_signed) {
        int32_t half = (int32_t)1 << (s->bits - 1);
        *qmin = s->narrow ? -(half - 1) : -half;
        *qmax = half - 1;
    } else {
        *qmin = 0;
        *qmax = ((int32_t)1 << s->bits) - 1;
    }
}

enum { RANGE_OK, RANGE_NAN, RANGE_INF, RANGE_WIDE };

/* The math of qat_qparams_from_minmax for one (min, max) of a valid scheme.
 * Returns RANGE_OK or why the range is unusable (range_error words it). */
static int from_minmax(const qat_qscheme *s, int32_t qmin, int32_t qmax, float min,
                       float max, float *scale, int32_t *zero_point)
{
    /* Symmetric unsigned grids centre on (qmin+qmax+1)/2: 128 for [0,255]. */
    int32_t zsym = s->is_signed ? 0 : (qmin + qmax + 1) / 2;
    if (isnan(min) || isnan(max)) return RANGE_NAN;
    if (min > max) { /* nothing observed (the +inf/-inf initial state) */
        *scale = 1.0f;
        *zero_point = s->symmetric ? zsym : 0;
        return RANGE_OK;
    }
    if (isinf(min) || isinf(max)) return RANGE_INF;

    /* Float32 arithmetic in PyTorch's order (observer.py _calculate_qparams). */
    float min_neg = min < 0.0f ? min : 0.0f;
    float max_pos = max > 0.0f ? max : 0.0f;
    float sc;
    if (s->symmetric) {
        float amax = -min_neg > max_pos ? -min_neg : max_pos;
        sc = amax / ((float)(qmax - qmin) / 2.0f);
    } else {
        sc = (max_pos - min_neg) / (float)(qmax - qmin);
    }
    if (isinf(sc)) return RANGE_WIDE;
    if (!(sc >= QAT_SCALE_EPS)) sc = QAT_SCALE_EPS;
    *scale = sc;
    if (s->symmetric) {
        *zero_point = zsym;
    } else {
        /* |min_neg / sc| <= qmax - qmin (+ rounding): no saturation needed */
        int32_t z = qmin - qat_round_half_even(min_neg / sc);
        *zero_point = qat_clamp_i32(z, qmin, qmax);
    }
    return RANGE_OK;
}

/* channel >= 0 is named in the message, -1 (per tensor) is not. */
static int range_error(int why, int channel, float min, float max)
{
    static const char *const reason[] = {
        [RANGE_NAN] = "is NaN",
        [RANGE_INF] = "is infinite",
        [RANGE_WIDE] = "is too wide for a float32 scale",
    };
    char what[32] = "";
    if (channel >= 0) snprintf(what, sizeof what, "channel %d: ", channel);
    return qat_error(QAT_ERR_ARG, "qparams: %sobserved range [%g, %g] %s", what,
                     (double)min, (double)max, reason[why]);
}

int qat_qparams_from_minmax(const qat_qscheme *s, float min, float max, float *scale,
                            int32_t *zero_point)
{
    int rc = qat_qscheme_check(s);
    if (rc) return rc;
    if (!scale || !zero_point)
        return qat_error(QAT_ERR_ARG, "qparams: scale or zero_point output is NULL");
    int32_t qmin, qmax;
    qat_qscheme_range(s, &qmin, &qmax);
    int why = from_minmax(s, qmin, qmax, min, max, scale, zero_point);
    return why ? range_error(why, -1, min, max) : QAT_OK;
}

int qat_qparams_from_minmax_n(const qat_qscheme *s, const float *mins, const float *maxs,
                              int n, float *scales, int32_t *zero_points)
{
    int rc = qat_qscheme_check(s);
    if (rc) return rc;
    if (n < 0) return qat_error(QAT_ERR_ARG, "qparams: channel count is %d", n);
    if (n > 0 && (!mins || !maxs || !scales || !zero_points))
        return qat_error(QAT_ERR_ARG, "qparams: mins, maxs, scales or zero_points is NULL");
    int32_t qmin, qmax;
    qat_qscheme_range(s, &qmin, &qmax);
    for (int c = 0; c < n; c++) {
        int why = from_minmax(s, qmin, qmax, mins[c], maxs[c], &scales[c], &zero_points[c]);
        if (why) return range_error(why, c, mins[c], maxs[c]);
    }
    return QAT_OK;
}
