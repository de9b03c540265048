/* Quantization units over a float model: prepare, forward, switches,
 * calibration and per-layer error metrics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

struct qat_qmodel {
    qat_model *m;
    qat_qconfig cfg;
    qat_qunit *units;
    int n_units;
    int *layer_owner; /* unit that computes layer i, or -1 */
    int *layer_unit;  /* unit whose activation grid layer i's output is on, or -1 */
    qat_named_tensor *params;
    int n_params;
    int calibrating;
    int float_eval; /* evaluate with the float32 fake-quant graph (see qat_qmodel_set_integer_eval) */
};

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

static qat_observer_opts act_observer(qat_calibrator cal)
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

/* ---- prepare ---- */

static void free_units(qat_qmodel *qm)
{
    for (int u = 0; u < qm->n_units; u++) {
        qat_quantizer_free(&qm->units[u].weight);
        qat_quantizer_free(&qm->units[u].act);
    }
}

void qat_qmodel_free(qat_qmodel *qm)
{
    if (!qm) return;
    free_units(qm);
    free(qm->units);
    free(qm->layer_owner);
    free(qm->layer_unit);
    free(qm->params);
    free(qm);
}

qat_model *qat_qmodel_float(qat_qmodel *qm) { return qm->m; }
const qat_qconfig *qat_qmodel_config(const qat_qmodel *qm) { return &qm->cfg; }
int qat_qmodel_num_units(const qat_qmodel *qm) { return qm->n_units; }
qat_qunit *qat_qmodel_unit(qat_qmodel *qm, int i) { return (i >= 0 && i < qm->n_units) ? &qm->units[i] : NULL; }
int qat_qmodel_layer_unit(const qat_qmodel *qm, int layer)
{
    return (layer >= 0 && layer < qat_model_num_layers(qm->m)) ? qm->layer_unit[layer] : -1;
}

int qat_qmodel_find_unit(const qat_qmodel *qm, const char *name)
{
    for (int u = 0; u < qm->n_units; u++)
        if (!strcmp(qm->units[u].name, name)) return u;
    return -1;
}

/* The single consumer of layer i if it has exactly one, else -1. */
static int sole_consumer(const qat_model *m, int i)
{
    int found = -1, n = qat_model_num_layers(m);
    for (int j = i + 1; j < n; j++) {
        const qat_layer *l = qat_model_layer_c(m, j);
        for (int k = 0; k < l->n_inputs; k++)
            if (l->inputs[k] == i) {
                if (found >= 0) return -1;
                found = j;
            }
    }
    return found;
}

static int absorb(qat_qmodel *qm, int u, int layer, qat_layer_type type)
{
    if (layer < 0 || qm->layer_owner[layer] >= 0) return -1;
    if (qat_model_layer(qm->m, layer)->type != type) return -1;
    qm->layer_owner[layer] = u;
    return layer;
}

static int setup_quantizers(qat_qmodel *qm, qat_qunit *un)
{
    int rc;
    if (!un->cfg.quantize) return QAT_OK;
    qat_observer_opts ao = act_observer(un->cfg.calib);
    qat_qscheme as = un->cfg.act;
    as.per_channel = 0;
    if ((rc = qat_quantizer_init(&un->act, &as, 1, un->cfg.lsq_act, &ao))) return rc;
    if (un->kind == QAT_UNIT_CONV) {
        const qat_layer *l = qat_model_layer_c(qm->m, un->head);
        qat_qscheme ws = un->cfg.weight;
        ws.axis = 0;
        int oc = l->out_ch;
        qat_observer_opts wo;
        if (ws.per_channel) {
            wo = qat_observer_opts_defaults(QAT_OBSERVER_PER_CHANNEL_MINMAX);
            wo.channels = oc;
        } else {
            wo = qat_observer_opts_defaults(QAT_OBSERVER_MINMAX);
        }
        wo.memoryless = 1;
        if ((rc = qat_quantizer_init(&un->weight, &ws, ws.per_channel ? oc : 1, un->cfg.lsq_weight, &wo)))
            return rc;
    }
    return QAT_OK;
}

static int build_params(qat_qmodel *qm)
{
    int n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        n += (un->weight.lsq_scale != NULL) + (un->act.lsq_scale != NULL) + (un->act.lsq_zp != NULL);
    }
    qm->params = calloc((size_t)n + 1, sizeof *qm->params);
    if (!qm->params) return qat_error(QAT_ERR_NOMEM, "qmodel: out of memory");
    n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        struct {
            qat_tensor *t;
            const char *suffix;
        } list[3] = {{un->weight.lsq_scale, "weight_scale"}, {un->act.lsq_scale, "act_scale"},
                     {un->act.lsq_zp, "act_zero_point"}};
        for (int k = 0; k < 3; k++) {
            if (!list[k].t) continue;
            qat_named_tensor *p = &qm->params[n++];
            p->t = list[k].t;
            p->no_decay = 1;
            p->layer = un->head;
            snprintf(p->name, sizeof p->name, "%.*s.%s", QAT_NAME_MAX - 1, un->name, list[k].suffix);
        }
    }
    qm->n_params = n;
    return QAT_OK;
}

qat_qmodel *qat_qmodel_prepare(qat_model *m, const qat_qconfig *cfg)
{
    if (!m || !cfg) return qat_error_null(QAT_ERR_ARG, "qmodel_prepare: NULL model or config");
    int nl = qat_model_num_layers(m);
    qat_qmodel *qm = calloc(1, sizeof *qm);
    if (!qm) return qat_error_null(QAT_ERR_NOMEM, "qmodel_prepare: out of memory");
    qm->m = m;
    qm->cfg = *cfg;
    qm->units = calloc((size_t)nl, sizeof *qm->units);
    qm->layer_owner = malloc((size_t)nl * sizeof(int));
    qm->layer_unit = malloc((size_t)nl * sizeof(int));
    if (!qm->units || !qm->layer_owner || !qm->layer_unit) {
        qat_qmodel_free(qm);
        return qat_error_null(QAT_ERR_NOMEM, "qmodel_prepare: out of memory");
    }
    for (int i = 0; i < nl; i++) qm->layer_owner[i] = qm->layer_unit[i] = -1;

    for (int i = 0; i < nl; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        if (qm->layer_owner[i] >= 0) continue;
        qat_unit_kind kind;
        switch (l->type) {
        case QAT_LAYER_INPUT:
            kind = QAT_UNIT_INPUT;
            break;
        case QAT_LAYER_CONV2D:
        case QAT_LAYER_LINEAR:
            kind = QAT_UNIT_CONV;
            break;
        case QAT_LAYER_ADD:
            kind = QAT_UNIT_ADD;
            break;
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_AVGPOOL2D:
            kind = QAT_UNIT_POOL;
            break;
        case QAT_LAYER_BATCHNORM2D:
            qat_qmodel_free(qm);
            return qat_error_null(QAT_ERR_UNSUPPORTED,
                                  "qmodel_prepare: batchnorm '%s' does not directly follow a conv2d whose only "
                                  "consumer it is, so it cannot be folded",
                                  l->name);
        default: /* relu, max-pool, flatten: on their input's grid */
            qm->layer_unit[i] = qm->layer_unit[l->inputs[0]];
            continue;
        }
        int u = qm->n_units++;
        qat_qunit *un = &qm->units[u];
        un->kind = kind;
        memcpy(un->name, l->name, sizeof un->name);
        un->head = i;
        un->bn = un->relu = -1;
        qm->layer_owner[i] = u;
        int cur = i;
        if (kind == QAT_UNIT_CONV && l->type == QAT_LAYER_CONV2D) {
            int b = absorb(qm, u, sole_consumer(m, cur), QAT_LAYER_BATCHNORM2D);
            if (b >= 0) un->bn = cur = b;
        }
        if (kind == QAT_UNIT_CONV || kind == QAT_UNIT_ADD) {
            int r = absorb(qm, u, sole_consumer(m, cur), QAT_LAYER_RELU);
            if (r >= 0) un->relu = cur = r;
        }
        un->last = cur;
        for (int k = 0; k < 2; k++)
            un->in_unit[k] = k < l->n_inputs ? qm->layer_unit[l->inputs[k]] : -1;
        /* configuration: an override by name, else the base */
        un->cfg = cfg->base;
        for (int k = 0; k < cfg->n_overrides; k++)
            if (!strcmp(cfg->overrides[k].name, un->name)) un->cfg = cfg->overrides[k].cfg;
        if (setup_quantizers(qm, un)) {
            qat_qmodel_free(qm);
            return NULL;
        }
        if (un->cfg.quantize) qm->layer_unit[cur] = u;
    }
    for (int k = 0; k < cfg->n_overrides; k++)
        if (qat_qmodel_find_unit(qm, cfg->overrides[k].name) < 0) {
            char names[512] = "";
            size_t off = 0;
            for (int u = 0; u < qm->n_units && off < sizeof names - 70; u++)
                off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", u ? ", " : "", qm->units[u].name);
            qat_error(QAT_ERR_ARG, "override '%s': no such unit (units: %s)", cfg->overrides[k].name, names);
            qat_qmodel_free(qm);
            return NULL;
        }
    if (build_params(qm)) {
        qat_qmodel_free(qm);
        return NULL;
    }
    return qm;
}

int qat_qmodel_num_params(const qat_qmodel *qm) { return qm->n_params; }
const qat_named_tensor *qat_qmodel_params(const qat_qmodel *qm) { return qm->params; }

void qat_qmodel_clamp_params(qat_qmodel *qm)
{
    for (int u = 0; u < qm->n_units; u++) {
        qat_quantizer *qs[2] = {&qm->units[u].weight, &qm->units[u].act};
        for (int k = 0; k < 2; k++) {
            qat_quantizer *q = qs[k];
            if (q->lsq_scale)
                for (int c = 0; c < q->n; c++) {
                    float *s = &q->lsq_scale->data[c];
                    if (!(*s >= QAT_SCALE_EPS)) *s = QAT_SCALE_EPS;
                    q->scale[c] = *s;
                }
            if (q->lsq_zp)
                for (int c = 0; c < q->n; c++) {
                    float *z = &q->lsq_zp->data[c];
                    if (!(*z >= (float)q->qmin)) *z = (float)q->qmin;
                    if (*z > (float)q->qmax) *z = (float)q->qmax;
                }
            if (q->lsq_scale) qat_quantizer_zero_points(q, q->zero_point);
        }
    }
}

static float qat_clamp_q(float v, int32_t lo, int32_t hi)
{
    return v < (float)lo ? (float)lo : v > (float)hi ? (float)hi : v;
}

/* ---- switches ---- */

void qat_qmodel_freeze_bn(qat_qmodel *qm, int frozen)
{
    for (int u = 0; u < qm->n_units; u++) qm->units[u].bn_frozen = frozen != 0;
}

void qat_qmodel_set_observers(qat_qmodel *qm, int enabled)
{
    for (int u = 0; u < qm->n_units; u++) {
        qm->units[u].weight.observe = enabled != 0;
        qm->units[u].act.observe = enabled != 0;
    }
}

void qat_qmodel_set_fake_quant(qat_qmodel *qm, int enabled)
{
    for (int u = 0; u < qm->n_units; u++) {
        qm->units[u].weight.fake_quant = enabled != 0;
        qm->units[u].act.fake_quant = enabled != 0;
    }
}

int qat_qmodel_set_unit_fake_quant(qat_qmodel *qm, const char *unit, int enabled)
{
    int u = qat_qmodel_find_unit(qm, unit);
    if (u < 0) return qat_error(QAT_ERR_ARG, "no quantization unit named '%s'", unit);
    qm->units[u].weight.fake_quant = enabled != 0;
    qm->units[u].act.fake_quant = enabled != 0;
    return QAT_OK;
}

/* Learnable weight scales start where the quantization error of the
 * folded weights is smallest: per channel, the clipping ratio r in
 * [0.30, 1.00] (steps of 0.01) of s = r * max|w| / qmax minimising
 * sum (w - fq(w))^2. MinMax (r = 1) wastes most levels of a 4- or 2-bit
 * grid on the few largest weights. */
static int lsq_weight_init(qat_qmodel *qm, qat_qunit *un)
{
    qat_quantizer *q = &un->weight;
    qat_ctx *ctx = qat_ctx_create((size_t)1 << 20);
    if (!ctx) return QAT_ERR_NOMEM;
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *w, *b;
    int rc = qat_qunit_fold(ctx, qm, un, &w, &b);
    if (!rc) {
        size_t per = w->numel / (size_t)q->n;
        for (int c = 0; c < q->n; c++) {
            const float *wc = w->data + (q->n > 1 ? (size_t)c * per : 0);
            size_t n = q->n > 1 ? per : w->numel;
            float amax = 0;
            for (size_t i = 0; i < n; i++) amax = fabsf(wc[i]) > amax ? fabsf(wc[i]) : amax;
            if (!(amax > 0)) continue;
            double best = INFINITY;
            float best_s = q->scale[c];
            for (int k = 30; k <= 100; k++) {
                float sc = (float)k / 100.0f * amax / (float)q->qmax, inv = 1.0f / sc;
                double err = 0;
                for (size_t i = 0; i < n; i++) {
                    float v = (float)qat_clamp_q(nearbyintf(wc[i] * inv), q->qmin, q->qmax) * sc - wc[i];
                    err += (double)v * v;
                }
                if (err < best) {
                    best = err;
                    best_s = sc;
                }
            }
            q->scale[c] = best_s > QAT_SCALE_EPS ? best_s : QAT_SCALE_EPS;
            q->lsq_scale->data[c] = q->scale[c];
        }
    }
    qat_ctx_free(ctx);
    return rc;
}

static int finalize_with(qat_qmodel *qm, int cal)
{
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        if (!un->cfg.quantize) continue;
        int rc;
        if (un->weight.n) {
            if ((rc = qat_quantizer_from_observer(&un->weight, -1))) return rc;
            if (un->weight.lsq_scale && (rc = lsq_weight_init(qm, un))) return rc;
        }
        if (cal >= 0 && qat_observer_options(un->act.obs)->kind != QAT_OBSERVER_HISTOGRAM) continue;
        un->act.initialized = 0; /* recompute even if set during calibration */
        if ((rc = qat_quantizer_from_observer(&un->act, cal))) return rc;
        if (!un->act.initialized)
            return qat_error(QAT_ERR_STATE, "unit '%s': its activation observer saw no data", un->name);
    }
    return QAT_OK;
}

int qat_qmodel_finalize(qat_qmodel *qm)
{
    int rc = finalize_with(qm, -1);
    if (rc) return rc;
    qat_qmodel_set_observers(qm, 0);
    qat_qmodel_set_fake_quant(qm, 1);
    return QAT_OK;
}

int qat_qmodel_recalibrate(qat_qmodel *qm, qat_calibrator cal)
{
    int method = cal == QAT_CALIBRATOR_KL           ? QAT_CALIB_KL
                 : cal == QAT_CALIBRATOR_PERCENTILE ? QAT_CALIB_PERCENTILE
                 : cal == QAT_CALIBRATOR_MSE        ? QAT_CALIB_MSE
                 : cal == QAT_CALIBRATOR_MINMAX     ? QAT_CALIB_MINMAX
                                                    : -1;
    if (method < 0) return qat_error(QAT_ERR_ARG, "recalibrate: '%s' needs its own observer", qat_calibrator_name(cal));
    return finalize_with(qm, method);
}

/* ---- forward ---- */

static qat_tensor *const_vec(qat_ctx *ctx, int n)
{
    return qat_new(ctx, 1, &n);
}

/* gamma / sigma_running of a unit's BN, on the tape. */
static qat_tensor *bn_factor(qat_ctx *ctx, const qat_layer *bn)
{
    int C = bn->out_ch;
    qat_tensor *invstd = const_vec(ctx, C);
    if (!invstd) return NULL;
    for (int c = 0; c < C; c++) invstd->data[c] = 1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps);
    return qat_channel_mul(ctx, bn->weight, invstd, 0, 0);
}

/* b_fold = beta + sf * (b - mean) */
static qat_tensor *fold_bias(qat_ctx *ctx, const qat_layer *l, const qat_layer *bn, qat_tensor *sf)
{
    int C = l->out_ch;
    qat_tensor *t = const_vec(ctx, C);
    if (!t || !sf) return NULL;
    for (int c = 0; c < C; c++) t->data[c] = -bn->running_mean->data[c];
    if (l->bias) t = qat_add(ctx, l->bias, t);
    return qat_add(ctx, bn->bias, qat_mul(ctx, sf, t));
}

int qat_qunit_fold(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, qat_tensor **w, qat_tensor **b)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    if (un->bn < 0) {
        *w = l->weight;
        *b = l->bias;
        return QAT_OK;
    }
    const qat_layer *bn = qat_model_layer_c(qm->m, un->bn);
    qat_tensor *sf = bn_factor(ctx, bn);
    *w = qat_channel_mul(ctx, l->weight, sf, 0, 0);
    *b = fold_bias(ctx, l, bn, sf);
    return (*w && *b) ? QAT_OK : QAT_ERR_NOMEM;
}

float qat_qunit_input_scale(qat_qmodel *qm, const qat_qunit *un)
{
    if (un->in_unit[0] < 0) return 0;
    const qat_quantizer *iq = &qm->units[un->in_unit[0]].act;
    return (iq->fake_quant && iq->initialized) ? qat_quantizer_scales(iq)[0] : 0;
}

/* The weight scale of each of the C output channels, as the bias grid
 * needs it: a per-tensor weight quantizer has one scale for all of them
 * (export does the same). NULL if out of memory. */
static const float *channel_weight_scales(qat_ctx *ctx, const qat_quantizer *wq, int C)
{
    const float *s = qat_quantizer_scales(wq);
    if (wq->n == C) return s;
    float *e = qat_arena_alloc(ctx, (size_t)C * sizeof *e);
    if (e)
        for (int c = 0; c < C; c++) e[c] = s[0];
    return e;
}

/* ---- evaluation on the integer grid ----
 *
 * In evaluation (no training, no gradient, not calibrating) a unit whose
 * inputs and output are on quantization grids computes the same function
 * as the float32 fake-quant graph, exactly: the conv/linear accumulator
 * sum (x - z_in) * w_q + b_q runs on integer-valued floats (exact while
 * partial sums stay below 2^24, which an int8 layer reaches only with
 * thousands of saturated terms), and the output grid index is
 * round(acc * s_in * s_w / s_out) with that ratio in double. The float32
 * graph rounds every product and partial sum, and where its result lands
 * within that error of a rounding boundary it picks the neighbouring grid
 * point: about 1 output in 10^3-10^4 per conv layer, and more after
 * several layers. Evaluated this way the fake-quant model is what the int8
 * export computes up to its 31-bit multipliers (docs/QUANT.md, section 13). */

void qat_qmodel_set_integer_eval(qat_qmodel *qm, int enabled)
{
    qm->float_eval = !enabled;
}

/* The output quantizer's parameters, for units evaluated on the grid:
 * 0 when it is not a per-tensor quantizer in use. */
static int grid_out(const qat_quantizer *q, float *s, int32_t *z)
{
    if (!q->fake_quant || !q->initialized || q->n != 1) return 0;
    *s = qat_quantizer_scales(q)[0];
    qat_quantizer_zero_points(q, z);
    return *s > 0;
}

static int integer_eval(const qat_ctx *ctx, const qat_qmodel *qm, const qat_qunit *un)
{
    return !qm->float_eval && !qm->calibrating && !qat_ctx_training(ctx) && !qat_ctx_grad_enabled(ctx) &&
           un->act.fake_quant && un->act.initialized && un->act.n == 1;
}

/* Row kernels, cloned for AVX-512 and AVX2 (chosen at load time; the
 * baseline build targets SSE2). Rounding is to nearest, ties to even, in
 * the default rounding mode, by adding and subtracting 1.5 * 2^23 (1.5 *
 * 2^52 in double): exact for |v| < 2^22 (2^51), and the callers keep v in
 * that range. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define ROW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROW_CLONES
#endif

/* t = round(x * inv); returns 1 if some x * inv is more than 1e-3 from an
 * integer (not on the grid, or too large to round this way). */
ROW_CLONES static int grid_row(float *t, const float *x, size_t n, float inv)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv, r = (v + 12582912.0f) - 12582912.0f;
        bad |= fabsf(v - r) > 1e-3f;
        t[i] = r;
    }
    return bad;
}

/* round(clamp(g, lo, hi)) * s: clamping to the integer bounds first gives
 * the same result as after rounding. */
static inline float grid_point(double g, double lo, double hi, float s)
{
    g = g < lo ? lo : g;
    g = g > hi ? hi : g;
    return (float)((g + 6755399441055744.0) - 6755399441055744.0) * s;
}

/* y = grid point of v * m */
ROW_CLONES static void requant_row(float *y, const float *v, size_t n, double m, double lo, double hi, float s)
{
    for (size_t i = 0; i < n; i++) y[i] = grid_point((double)v[i] * m, lo, hi, s);
}

/* y = grid point of a * ma + b * mb */
ROW_CLONES static void add_row(float *y, const float *a, const float *b, size_t n, double ma, double mb, double lo,
                               double hi, float s)
{
    for (size_t i = 0; i < n; i++) y[i] = grid_point((double)a[i] * ma + (double)b[i] * mb, lo, hi, s);
}

#define GRID_CHUNK 16384

/* The grid index q - z of each element of x, a tensor on the grid of scale s
 * (its values are (q - z) * s in float32, so the quotient is within an ulp
 * of an integer). *off is set when some element is not on the grid. */
static qat_tensor *grid_values(qat_ctx *ctx, const qat_tensor *x, float s, int *off)
{
    qat_tensor *t = qat_new(ctx, x->ndim, x->shape);
    if (!t) return NULL;
    int bad = 0;
    float inv = 1.0f / s;
    long chunks = (long)((x->numel + GRID_CHUNK - 1) / GRID_CHUNK);
#pragma omp parallel for schedule(static) reduction(| : bad) if (chunks > 4)
    for (long k = 0; k < chunks; k++) {
        size_t a = (size_t)k * GRID_CHUNK, len = x->numel - a < GRID_CHUNK ? x->numel - a : GRID_CHUNK;
        bad |= grid_row(t->data + a, x->data + a, len, inv);
    }
    *off = bad;
    return t;
}

/* The range of q - z an output quantizer allows: [qmin, qmax] - z, the
 * lower end raised to 0 by a fused ReLU. */
static void grid_bounds(const qat_quantizer *q, int32_t z, int relu, double *lo, double *hi)
{
    *lo = (double)(relu && q->qmin < z ? z : q->qmin) - z;
    *hi = (double)q->qmax - z;
}

/* y = the fake-quant output for the real value v * mult[channel] / s:
 * (clamp(nearbyint(v * m) [max 0 with relu] + z, qmin, qmax) - z) * s,
 * the float32 graph's value ((q - z) and its product with s are computed
 * the same way). v is [outer, C, inner]. */
static void requant_grid(float *y, const float *v, const double *mult, size_t outer, int C, size_t inner,
                         const qat_quantizer *q, float s, int32_t z, int relu)
{
    double lo, hi;
    grid_bounds(q, z, relu, &lo, &hi);
    long rows = (long)(outer * (size_t)C);
#pragma omp parallel for schedule(static) if (outer * (size_t)C * inner >= 65536)
    for (long r = 0; r < rows; r++)
        requant_row(y + (size_t)r * inner, v + (size_t)r * inner, inner, mult[r % C], lo, hi, s);
}

/* conv/linear unit on the grid; NULL with no error set when it does not
 * apply (the caller then runs the float32 graph). */
static qat_tensor *conv_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    qat_quantizer *wq = &un->weight;
    float s_in = qat_qunit_input_scale(qm, un), s_out;
    int32_t z_out;
    if (!(s_in > 0) || !wq->fake_quant || !wq->initialized || !grid_out(&un->act, &s_out, &z_out)) return NULL;
    int off = 0;
    qat_tensor *xi = grid_values(ctx, out[l->inputs[0]], s_in, &off);
    *failed = 1;
    if (xi && off) {
        *failed = 0; /* the input is not on its grid: the float32 graph */
        return NULL;
    }
    int C = l->out_ch, is_conv = l->type == QAT_LAYER_CONV2D;
    qat_tensor *wf, *bf;
    if (!xi || qat_qunit_fold(ctx, qm, un, &wf, &bf)) return NULL;
    qat_tensor *w = qat_fq(ctx, wf, wq, 1);
    const float *sw = w ? channel_weight_scales(ctx, wq, C) : NULL;
    qat_tensor *wi = sw ? qat_new(ctx, w->ndim, w->shape) : NULL;
    qat_tensor *bi = bf && wi ? qat_new(ctx, 1, &C) : NULL;
    double *mult = xi ? qat_arena_alloc(ctx, (size_t)C * sizeof *mult) : NULL;
    qat_tensor *sb = mult ? qat_new(ctx, 1, &C) : NULL;
    if (!sb || (bf && !bi)) return NULL;
    size_t per = w->numel / (size_t)C;
    for (int c = 0; c < C; c++) {
        for (size_t k = 0; k < per; k++) wi->data[(size_t)c * per + k] = rintf(w->data[(size_t)c * per + k] / sw[c]);
        sb->data[c] = qat_bias_scale(s_in, sw[c]);
        if (bi) bi->data[c] = (float)qat_quantize_bias_val(bf->data[c], sb->data[c]);
        mult[c] = qat_requant_real_multiplier(s_in, sw[c], s_out);
    }
    qat_tensor *acc = is_conv ? qat_conv2d(ctx, xi, wi, bi, l->stride, l->pad) : qat_linear(ctx, xi, wi, bi);
    qat_tensor *y = acc ? qat_new(ctx, acc->ndim, acc->shape) : NULL;
    if (!y) return NULL;
    size_t outer = (size_t)acc->shape[0], inner = acc->numel / (outer * (size_t)C);
    requant_grid(y->data, acc->data, mult, outer, C, inner, &un->act, s_out, z_out, un->relu >= 0);
    /* the layers inside the unit (not its output, which the caller sets):
     * the real pre-activation acc * s_in * s_w, in place (acc is not needed
     * any more), and its ReLU */
    if (un->head != un->last) {
        qat_tensor *pre = acc;
        long rows = (long)(outer * (size_t)C);
#pragma omp parallel for schedule(static) if (acc->numel >= 65536)
        for (long r = 0; r < rows; r++)
            for (size_t i = 0; i < inner; i++) pre->data[(size_t)r * inner + i] *= sb->data[r % C];
        out[un->head] = pre;
        if (un->bn >= 0) out[un->bn] = pre;
    }
    *failed = 0;
    return y;
}

/* add unit on the grid: round(a' * s_a / s_out + b' * s_b / s_out). */
static qat_tensor *add_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    const qat_layer *l = qat_model_layer_c(qm->m, un->head);
    float s_out, sa = qat_qunit_input_scale(qm, un), sb = 0;
    int32_t z_out;
    if (un->in_unit[1] >= 0) {
        const qat_quantizer *bq = &qm->units[un->in_unit[1]].act;
        if (bq->fake_quant && bq->initialized) sb = qat_quantizer_scales(bq)[0];
    }
    if (!(sa > 0) || !(sb > 0) || !grid_out(&un->act, &s_out, &z_out)) return NULL;
    int offa = 0, offb = 0;
    qat_tensor *ai = grid_values(ctx, out[l->inputs[0]], sa, &offa);
    qat_tensor *bi = ai ? grid_values(ctx, out[l->inputs[1]], sb, &offb) : NULL;
    *failed = 1;
    if (bi && (offa || offb)) {
        *failed = 0;
        return NULL;
    }
    qat_tensor *y = bi ? qat_new(ctx, ai->ndim, ai->shape) : NULL;
    if (!y) return NULL;
    int relu = un->relu >= 0;
    double ma = (double)sa / s_out, mb = (double)sb / s_out, lo, hi;
    grid_bounds(&un->act, z_out, relu, &lo, &hi);
    long chunks = (long)((ai->numel + GRID_CHUNK - 1) / GRID_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (long k = 0; k < chunks; k++) {
        size_t a = (size_t)k * GRID_CHUNK, len = ai->numel - a < GRID_CHUNK ? ai->numel - a : GRID_CHUNK;
        add_row(y->data + a, ai->data + a, bi->data + a, len, ma, mb, lo, hi, s_out);
    }
    if (un->head != un->last && !(out[un->head] = qat_add(ctx, out[l->inputs[0]], out[l->inputs[1]])))
        return NULL; /* the sum before the fused ReLU */
    *failed = 0;
    return y;
}

/* average-pool unit on the grid: round(sum of x' over the window * s_in /
 * (window * s_out)). */
static qat_tensor *pool_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    const qat_tensor *x = out[l->inputs[0]];
    float s_in = qat_qunit_input_scale(qm, un), s_out;
    int32_t z_out;
    if (!(s_in > 0) || un->relu >= 0 || x->ndim != 4 || !grid_out(&un->act, &s_out, &z_out)) return NULL;
    int off = 0;
    qat_tensor *xi = grid_values(ctx, x, s_in, &off);
    *failed = 1;
    if (xi && off) {
        *failed = 0;
        return NULL;
    }
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int gap = l->type == QAT_LAYER_GLOBAL_AVGPOOL;
    int k = gap ? H : l->kernel, kw = gap ? W : l->kernel, st = gap ? 1 : l->stride;
    int OH = gap ? 1 : (H - k) / st + 1, OW = gap ? 1 : (W - kw) / st + 1;
    int shape[4] = {N, C, OH, OW};
    qat_tensor *sums = xi ? qat_new(ctx, gap ? 2 : 4, shape) : NULL; /* GAP gives [N, C] */
    qat_tensor *y = sums ? qat_new(ctx, sums->ndim, sums->shape) : NULL;
    if (!y) return NULL;
#pragma omp parallel for schedule(static) if ((size_t)N * C * H * W >= 65536)
    for (long r = 0; r < (long)N * C; r++) {
        const float *xr = xi->data + (size_t)r * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double acc = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < kw; j++) acc += xr[(oh * st + i) * W + ow * st + j];
                sums->data[((size_t)r * OH + oh) * OW + ow] = (float)acc;
            }
    }
    double mult = (double)s_in / ((double)k * kw * s_out);
    requant_grid(y->data, sums->data, &mult, sums->numel, 1, 1, &un->act, s_out, z_out, 0);
    *failed = 0;
    return y;
}

/* conv/linear (+BN) (+ReLU) with fake-quant; sets out[] of every layer
 * of the unit. */
static qat_tensor *conv_unit(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    qat_tensor *x = out[l->inputs[0]], *y;
    int is_conv = l->type == QAT_LAYER_CONV2D;
    qat_quantizer *wq = &un->weight;
    float s_in = qat_qunit_input_scale(qm, un); /* the input's grid, for the bias */
#define CONV(w, b) (is_conv ? qat_conv2d(ctx, x, w, b, l->stride, l->pad) : qat_linear(ctx, x, w, b))
    if (un->bn >= 0 && qat_ctx_training(ctx) && !un->bn_frozen) {
        /* PyTorch's _forward_approximate: batch statistics correct the
         * output while BN trains */
        qat_layer *bn = qat_model_layer(qm->m, un->bn);
        qat_tensor *sf = bn_factor(ctx, bn);
        qat_tensor *w = qat_fq(ctx, qat_channel_mul(ctx, l->weight, sf, 0, 0), wq, 1);
        y = CONV(w, NULL);
        y = qat_channel_mul(ctx, y, sf, 1, 1);
        if (l->bias) y = qat_bias_add(ctx, y, l->bias);
        out[un->head] = y;
        if (y) bn->num_batches_tracked++;
        y = qat_batchnorm2d(ctx, y, bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->bn_momentum,
                            bn->bn_eps);
        out[un->bn] = y;
    } else {
        /* the folded form: exactly what the int8 export computes */
        qat_tensor *wf, *bf;
        if (qat_qunit_fold(ctx, qm, un, &wf, &bf)) return NULL;
        qat_tensor *w = qat_fq(ctx, wf, wq, 1);
        if (bf && w && wq->fake_quant && s_in > 0) {
            const float *sw = channel_weight_scales(ctx, wq, l->out_ch);
            bf = sw ? qat_fq_bias(ctx, bf, s_in, sw) : NULL;
        }
        y = out[un->head] = CONV(w, bf);
        if (un->bn >= 0) out[un->bn] = y;
    }
#undef CONV
    return y;
}

qat_tensor **qat_qmodel_forward_all(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    if (!x) return NULL;
    qat_model *m = qm->m;
    int nl = qat_model_num_layers(m);
    const qat_layer *in = qat_model_layer_c(m, 0);
    if (x->ndim != 4 || x->shape[1] != in->out_shape[0] || x->shape[2] != in->out_shape[1] ||
        x->shape[3] != in->out_shape[2]) {
        char s[64];
        return qat_error_null(QAT_ERR_SHAPE, "qmodel: input %s, expected [N,%d,%d,%d]", qat_shape_str(x, s, sizeof s),
                              in->out_shape[0], in->out_shape[1], in->out_shape[2]);
    }
    int observe_act = qat_ctx_training(ctx) || qm->calibrating;
    qat_tensor **out = qat_arena_alloc(ctx, (size_t)nl * sizeof *out);
    if (!out) return NULL;
    memset(out, 0, (size_t)nl * sizeof *out);
    out[0] = x;
    for (int i = 0; i < nl; i++) {
        int u = qm->layer_owner[i];
        qat_layer *l = qat_model_layer(m, i);
        if (u < 0) { /* a float layer that keeps its input's grid */
            qat_tensor *ins[2] = {out[l->inputs[0]], l->n_inputs > 1 ? out[l->inputs[1]] : NULL};
            if (!(out[i] = qat_layer_forward(ctx, l, ins))) return NULL;
            continue;
        }
        qat_qunit *un = &qm->units[u];
        if (un->head != i) continue; /* computed with its unit */
        qat_tensor *y;
        if (un->cfg.quantize && un->kind != QAT_UNIT_INPUT && integer_eval(ctx, qm, un)) {
            int failed = 0;
            y = un->kind == QAT_UNIT_CONV  ? conv_unit_grid(ctx, qm, un, out, &failed)
                : un->kind == QAT_UNIT_ADD ? add_unit_grid(ctx, qm, un, out, &failed)
                                           : pool_unit_grid(ctx, qm, un, out, &failed);
            if (failed) return NULL;
            if (y) {
                out[un->last] = y;
                continue;
            }
        }
        if (!un->cfg.quantize) {
            for (int k = un->head; k <= un->last; k++) {
                if (qm->layer_owner[k] != u) continue;
                qat_layer *lk = qat_model_layer(m, k);
                qat_tensor *ins[2] = {out[lk->inputs[0]], lk->n_inputs > 1 ? out[lk->inputs[1]] : NULL};
                if (!(out[k] = qat_layer_forward(ctx, lk, ins))) return NULL;
            }
            continue;
        }
        switch (un->kind) {
        case QAT_UNIT_INPUT:
            y = x;
            break;
        case QAT_UNIT_CONV:
            y = conv_unit(ctx, qm, un, out);
            break;
        case QAT_UNIT_ADD:
            y = out[i] = qat_add(ctx, out[l->inputs[0]], out[l->inputs[1]]);
            break;
        default: {
            qat_tensor *ins[1] = {out[l->inputs[0]]};
            y = out[i] = qat_layer_forward(ctx, l, ins);
            break;
        }
        }
        if (!y) return NULL;
        if ((un->kind == QAT_UNIT_CONV || un->kind == QAT_UNIT_ADD) && un->relu >= 0) {
            /* ReLU and the activation quantizer in one pass (the ReLU's own
             * output is then the quantized one) */
            qat_tensor *r = NULL;
            if (!(y = qat_fq_relu(ctx, y, &un->act, observe_act, &r))) return NULL;
            out[un->relu] = r;
            out[un->last] = y;
        } else if (!(out[un->last] = qat_fq(ctx, y, &un->act, observe_act))) {
            return NULL;
        }
    }
    return out;
}

qat_tensor *qat_qmodel_forward(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    qat_tensor **all = qat_qmodel_forward_all(ctx, qm, x);
    return all ? all[qat_model_num_layers(qm->m) - 1] : NULL;
}

int qat_qmodel_calibrate(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x)
{
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qm->calibrating = 1;
    qat_tensor *y = qat_qmodel_forward(ctx, qm, x);
    qm->calibrating = 0;
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    return y ? QAT_OK : (x ? QAT_ERR_STATE : QAT_ERR_ARG);
}

/* ---- metrics ---- */

void qat_error_metrics(const float *ref, const float *q, size_t n, double *cosine, double *sqnr_db, double *mse)
{
    double rr = 0, qq = 0, rq = 0, ee = 0;
    for (size_t i = 0; i < n; i++) {
        double a = ref[i], b = q[i], d = a - b;
        rr += a * a;
        qq += b * b;
        rq += a * b;
        ee += d * d;
    }
    if (cosine) *cosine = (rr > 0 && qq > 0) ? rq / sqrt(rr * qq) : (rr == qq ? 1.0 : 0.0);
    if (sqnr_db) *sqnr_db = ee > 0 ? 10.0 * log10(rr / ee) : INFINITY;
    if (mse) *mse = n ? ee / (double)n : 0;
}

int qat_qmodel_layer_errors(qat_ctx *ctx, qat_qmodel *qm, qat_tensor *x, qat_layer_error *out)
{
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_tensor **f = qat_model_forward_all(ctx, qm->m, x);
    qat_tensor **q = f ? qat_qmodel_forward_all(ctx, qm, x) : NULL;
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    if (!q) return QAT_ERR_STATE;
    int n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        const qat_qunit *un = &qm->units[u];
        if (!un->cfg.quantize) continue;
        qat_layer_error *e = &out[n++];
        memcpy(e->name, un->name, sizeof e->name);
        e->layer = un->last;
        qat_error_metrics(f[un->last]->data, q[un->last]->data, f[un->last]->numel, &e->cosine, &e->sqnr_db, &e->mse);
    }
    return n;
}
