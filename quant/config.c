/* quant/config.c: what a quantized model is asked to be: calibrator and
 * unit-kind names, the spec grammar ("w8a8", "float"), per-unit overrides,
 * and the activation observer each calibrator needs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

static const char *const calib_names[QAT_CALIBRATOR_COUNT] = {
    [QAT_CALIBRATOR_MINMAX] = "minmax", [QAT_CALIBRATOR_EMA] = "ema", [QAT_CALIBRATOR_KL] = "kl",
    [QAT_CALIBRATOR_PERCENTILE] = "percentile", [QAT_CALIBRATOR_MSE] = "mse"};
_Static_assert(QAT_CALIBRATOR_COUNT == 5, "calib_names must list every calibrator");

const char *qat_calibrator_name(qat_calibrator c)
{
    return (unsigned)c < QAT_CALIBRATOR_COUNT ? calib_names[c] : NULL;
}

int qat_calibrator_from_name(const char *name)
{
    for (int i = 0; i < QAT_CALIBRATOR_COUNT; i++)
        if (name && !strcmp(name, calib_names[i])) return i;
    return -1;
}

static const char *const unit_names[QAT_UNIT_KIND_COUNT] = {
    [QAT_UNIT_INPUT] = "input", [QAT_UNIT_CONV] = "conv", [QAT_UNIT_ADD] = "add", [QAT_UNIT_POOL] = "pool",
    [QAT_UNIT_ACT] = "act", [QAT_UNIT_CONCAT] = "concat"};

const char *qat_unit_kind_name(qat_unit_kind k)
{
    return (unsigned)k < QAT_UNIT_KIND_COUNT ? unit_names[k] : NULL;
}

/* ---- configuration ---- */

/* A decimal number in [lo, hi] at s, *end after it; -1 if none or out of range. */
static int parse_num(const char *s, int lo, int hi, int *v, const char **end)
{
    char *e;
    if (*s < '0' || *s > '9') return -1;
    long x = strtol(s, &e, 10);
    *v = (int)x;
    *end = e;
    return (x >= lo && x <= hi) ? 0 : -1;
}

static int bad_spec(const char *spec)
{
    return qat_error(QAT_ERR_ARG, "quantization spec '%s' not understood; the grammar: " QAT_SPEC_GRAMMAR, spec);
}

int qat_unit_config_parse(const char *spec, qat_unit_config *out)
{
    memset(out, 0, sizeof *out);
    out->calib = QAT_CALIBRATOR_EMA;
    if (!spec) return qat_error(QAT_ERR_ARG, "quantization spec is NULL");
    if (!strcmp(spec, "float")) return QAT_OK;
    if (!strcmp(spec, "fp16") || !strcmp(spec, "bf16")) {
        out->quantize = 1;
        out->float_format = spec[0] == 'f' ? QAT_FLOAT_FP16 : QAT_FLOAT_BF16;
        /* no integer grid: the schemes are only recorded (16-bit) */
        out->weight = qat_qscheme_weight(16);
        out->weight.per_channel = 0;
        out->act = qat_qscheme_activation(16);
        return QAT_OK;
    }
    int wb = 8, ab, k = 0;
    const char *p = spec;
    qat_weight_kind kind = QAT_WEIGHT_UNIFORM;
    if (*p++ != 'w') return bad_spec(spec);
    if (*p == 'c' || *p == 'h') {
        kind = *p == 'c' ? QAT_WEIGHT_CODEBOOK : QAT_WEIGHT_HASHED;
        if (parse_num(p + 1, 2, 256, &k, &p)) return bad_spec(spec);
    } else if (parse_num(p, 1, 16, &wb, &p) || (wb > 8 && wb != 16)) {
        return bad_spec(spec);
    }
    if (*p != 'a' || parse_num(p + 1, 2, 16, &ab, &p) || (ab > 8 && ab != 16) || *p) return bad_spec(spec);
    out->quantize = 1;
    out->weight_kind = kind;
    out->weight_k = k;
    /* codebook / hashed values sit on a per-tensor int8 grid */
    out->weight = qat_qscheme_weight(wb);
    if (kind != QAT_WEIGHT_UNIFORM) out->weight.per_channel = 0;
    out->act = qat_qscheme_activation(ab);
    out->lsq_weight = kind == QAT_WEIGHT_UNIFORM && wb <= 4;
    out->lsq_act = ab <= 4;
    return QAT_OK;
}

const char *qat_unit_config_spec(const qat_unit_config *c, char *buf, size_t n)
{
    qat_unit_config d;
    char tmp[32];
    if (!c->quantize) snprintf(tmp, sizeof tmp, "float");
    else if (c->float_format) snprintf(tmp, sizeof tmp, "%s", c->float_format == QAT_FLOAT_FP16 ? "fp16" : "bf16");
    else if (c->weight_kind != QAT_WEIGHT_UNIFORM)
        snprintf(tmp, sizeof tmp, "w%c%da%d", c->weight_kind == QAT_WEIGHT_CODEBOOK ? 'c' : 'h', c->weight_k,
                 c->act.bits);
    else snprintf(tmp, sizeof tmp, "w%da%d", c->weight.bits, c->act.bits);
    /* only a spec the parser turns back into these schemes is named */
    if (qat_unit_config_parse(tmp, &d) || memcmp(&d.weight, &c->weight, sizeof d.weight) ||
        memcmp(&d.act, &c->act, sizeof d.act) || d.weight_kind != c->weight_kind || d.weight_k != c->weight_k ||
        d.float_format != c->float_format)
        snprintf(tmp, sizeof tmp, "custom");
    snprintf(buf, n, "%s", tmp);
    return buf;
}

int qat_qconfig_init(qat_qconfig *c, const char *spec)
{
    memset(c, 0, sizeof *c);
    return qat_unit_config_parse(spec, &c->base);
}

int qat_qconfig_add_override(qat_qconfig *c, const char *name_eq_spec)
{
    const char *eq = name_eq_spec ? strchr(name_eq_spec, '=') : NULL;
    if (!eq || eq == name_eq_spec)
        return qat_error(QAT_ERR_ARG, "override '%s': expected NAME=SPEC (e.g. features.0=w8a8)",
                         name_eq_spec ? name_eq_spec : "(null)");
    size_t len = (size_t)(eq - name_eq_spec);
    if (len >= QAT_NAME_MAX) return qat_error(QAT_ERR_ARG, "override '%s': name too long", name_eq_spec);
    if (c->n_overrides == QAT_MAX_OVERRIDES)
        return qat_error(QAT_ERR_ARG, "override '%s': at most %d overrides", name_eq_spec, QAT_MAX_OVERRIDES);
    qat_unit_config u;
    int rc = qat_unit_config_parse(eq + 1, &u);
    if (rc) return rc;
    u.calib = c->base.calib;
    int k = c->n_overrides++;
    memcpy(c->overrides[k].name, name_eq_spec, len);
    c->overrides[k].name[len] = '\0';
    c->overrides[k].cfg = u;
    return QAT_OK;
}

void qat_qconfig_set_calibrator(qat_qconfig *c, qat_calibrator cal)
{
    c->base.calib = cal;
    for (int i = 0; i < c->n_overrides; i++) c->overrides[i].cfg.calib = cal;
}

qat_observer_opts qat_act_observer_opts(qat_calibrator cal)
{
    qat_observer_opts o;
    switch (cal) {
    case QAT_CALIBRATOR_MINMAX:
        return qat_observer_opts_defaults(QAT_OBSERVER_MINMAX);
    case QAT_CALIBRATOR_KL:
    case QAT_CALIBRATOR_PERCENTILE:
    case QAT_CALIBRATOR_MSE:
        o = qat_observer_opts_defaults(QAT_OBSERVER_HISTOGRAM);
        o.calib = cal == QAT_CALIBRATOR_KL ? QAT_CALIB_KL
                  : cal == QAT_CALIBRATOR_PERCENTILE ? QAT_CALIB_PERCENTILE : QAT_CALIB_MSE;
        return o;
    default:
        return qat_observer_opts_defaults(QAT_OBSERVER_EMA);
    }
}
