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
    [QAT_UNIT_INPUT] = "input", [QAT_UNIT_CONV] = "conv", [QAT_UNIT_ADD] = "add", [QAT_UNIT_POOL] = "pool"};

const char *qat_unit_kind_name(qat_unit_kind k)
{
    return (unsigned)k < QAT_UNIT_KIND_COUNT ? unit_names[k] : NULL;
}

/* ---- configuration ---- */

static int parse_bits(const char *s, int *bits, const char **end)
{
    char *e;
    long v = strtol(s, &e, 10);
    if (e == s) return -1;
    *bits = (int)v;
    *end = e;
    return ((v >= 2 && v <= 8) || v == 16) ? 0 : -1;
}

int qat_unit_config_parse(const char *spec, qat_unit_config *out)
{
    memset(out, 0, sizeof *out);
    out->calib = QAT_CALIBRATOR_EMA;
    if (!spec) return qat_error(QAT_ERR_ARG, "quantization spec is NULL");
    if (!strcmp(spec, "float")) return QAT_OK;
    int wb, ab;
    const char *p = spec;
    if (*p != 'w' || parse_bits(p + 1, &wb, &p) || *p != 'a' || parse_bits(p + 1, &ab, &p) || *p)
        return qat_error(QAT_ERR_ARG,
                         "quantization spec '%s': expected wXaY (X, Y bits in 2..8 or 16, e.g. w8a8) or 'float'", spec);
    out->quantize = 1;
    out->weight = qat_qscheme_weight(wb);
    out->act = qat_qscheme_activation(ab);
    out->lsq_weight = wb <= 4;
    out->lsq_act = ab <= 4;
    return QAT_OK;
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
