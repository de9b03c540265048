/* quant/prepare.c: a qmodel over a float model: units (Conv+BN+ReLU
 * fusion), quantizer placement, the learnable parameters, the switches
 * (BN freeze, observers, fake-quant), and finalising calibration. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"


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

/* A layer's name, type and per-sample shape for messages:
 * "clamp 'blocks.0.act' [16,28,28]". */
static const char *layer_desc(const qat_layer *l, char *buf, size_t n)
{
    int k = snprintf(buf, n, "%s '%s' [", qat_layer_type_name(l->type), l->name);
    for (int d = 0; d < l->out_ndim && k > 0 && (size_t)k < n; d++)
        k += snprintf(buf + k, n - (size_t)k, "%s%d", d ? "," : "", l->out_shape[d]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "]");
    return buf;
}

/* The unit at the end of layer u's chain of shared quantizers. */
static int share_root(const qat_qmodel *qm, int u)
{
    while (qm->units[u].act_share >= 0) u = qm->units[u].act_share;
    return u;
}

/* QAT_CONCAT_SHARED: every concat imposes its activation quantizer on the
 * units whose grids its inputs are on (and, through them, on every concat
 * those units feed): one quantizer per group, the group's last concat's.
 * Members lose their learnable activation parameters (the group's are
 * the root's). */
static int share_concats(qat_qmodel *qm)
{
    char d[160];
    for (int c = 0; c < qm->n_units; c++) {
        qat_qunit *cu = &qm->units[c];
        if (cu->kind != QAT_UNIT_CONCAT || !cu->cfg.quantize) continue;
        const qat_layer *l = qat_model_layer_c(qm->m, cu->head);
        if (cu->cfg.float_format)
            return qat_error(QAT_ERR_UNSUPPORTED, "qmodel_prepare: %s: a shared concat scale needs an integer grid, the unit is %s",
                             layer_desc(l, d, sizeof d), cu->cfg.float_format == QAT_FLOAT_FP16 ? "fp16" : "bf16");
        for (int k = 0; k < 2; k++) {
            int p = cu->in_unit[k];
            if (p < 0)
                return qat_error(QAT_ERR_UNSUPPORTED, "qmodel_prepare: %s: input %d ('%s') is not on a quantization grid, so no "
                                 "scale can be shared with it", layer_desc(l, d, sizeof d), k,
                                 qat_model_layer_c(qm->m, l->inputs[k])->name);
            int r = share_root(qm, p);
            if (r == c) continue;
            const qat_qunit *pu = &qm->units[r];
            if (!pu->cfg.quantize || pu->cfg.float_format || memcmp(&pu->cfg.act, &cu->cfg.act, sizeof cu->cfg.act))
                return qat_error(QAT_ERR_UNSUPPORTED, "qmodel_prepare: %s: a shared scale needs unit '%s' (its input %d's grid) "
                                 "quantized with the concat's activation scheme (%d-bit)", layer_desc(l, d, sizeof d),
                                 pu->name, k, cu->cfg.act.bits);
            qm->units[r].act_share = c;
        }
    }
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        if (un->act_share < 0) continue;
        un->act_share = share_root(qm, u);
        qat_tensor_free(un->act.lsq_scale);
        qat_tensor_free(un->act.lsq_zp);
        un->act.lsq_scale = un->act.lsq_zp = NULL;
    }
    return QAT_OK;
}

qat_quantizer *qat_qunit_actq(qat_qmodel *qm, const qat_qunit *un)
{
    return un->act_share >= 0 ? &qm->units[un->act_share].act : (qat_quantizer *)&un->act;
}

void qat_qmodel_sync_shared(qat_qmodel *qm)
{
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        if (un->act_share < 0) continue;
        const qat_quantizer *r = &qm->units[un->act_share].act;
        un->act.scale[0] = qat_quantizer_scales(r)[0];
        qat_quantizer_zero_points(r, un->act.zero_point);
        un->act.initialized = r->initialized;
    }
}

/* FNV-1a of a unit's name: the seed of its weight hash (stored in the
 * int8 file, so a reader needs no rule for it). */
static unsigned name_seed(const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
    return h;
}

/* A quantizer that rounds to a float format: no parameters to find. */
static int float_quantizer(qat_quantizer *q, const qat_qscheme *s, qat_float_format f)
{
    int rc = qat_quantizer_init(q, s, 1, 0, NULL);
    if (rc) return rc;
    q->float_format = f;
    q->initialized = 1;
    return QAT_OK;
}

static int setup_quantizers(qat_qmodel *qm, qat_qunit *un)
{
    int rc;
    if (!un->cfg.quantize) return QAT_OK;
    if (un->cfg.float_format) {
        if ((rc = float_quantizer(&un->act, &un->cfg.act, un->cfg.float_format))) return rc;
        if (un->kind == QAT_UNIT_CONV && (rc = float_quantizer(&un->weight, &un->cfg.weight, un->cfg.float_format)))
            return rc;
        return QAT_OK;
    }
    qat_observer_opts ao = qat_act_observer_opts(un->cfg.calib);
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
        qat_quantizer *q = &un->weight;
        q->kind = un->cfg.weight_kind;
        if (q->kind != QAT_WEIGHT_UNIFORM) {
            int K = un->cfg.weight_k;
            if (K < 2 || K > 256 || ws.bits != 8 || ws.per_channel)
                return qat_error(QAT_ERR_ARG, "unit '%s': %s weights need K in 2..256 and a per-tensor 8-bit grid",
                                 un->name, q->kind == QAT_WEIGHT_CODEBOOK ? "codebook" : "hashed");
            q->k = K;
            if (!(q->values = qat_tensor_create(1, &K, 1))) return QAT_ERR_NOMEM;
            q->seed = name_seed(un->name);
        }
    }
    return QAT_OK;
}

static int build_params(qat_qmodel *qm)
{
    int n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        n += (un->weight.lsq_scale != NULL) + (un->weight.values != NULL) + (un->act.lsq_scale != NULL) +
             (un->act.lsq_zp != NULL);
    }
    qm->params = qat_calloc((size_t)n + 1, sizeof *qm->params);
    if (!qm->params) return qat_error(QAT_ERR_NOMEM, "qmodel: out of memory");
    n = 0;
    for (int u = 0; u < qm->n_units; u++) {
        qat_qunit *un = &qm->units[u];
        struct {
            qat_tensor *t;
            const char *suffix;
        } list[4] = {{un->weight.lsq_scale, "weight_scale"}, {un->weight.values, "weight_values"},
                     {un->act.lsq_scale, "act_scale"}, {un->act.lsq_zp, "act_zero_point"}};
        for (int k = 0; k < 4; k++) {
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
    if (cfg->concat_mode != QAT_CONCAT_REQUANTIZE && cfg->concat_mode != QAT_CONCAT_SHARED)
        return qat_error_null(QAT_ERR_ARG, "qmodel_prepare: concat_mode %d unknown (0: requantize, 1: shared)",
                              cfg->concat_mode);
    int nl = qat_model_num_layers(m);
    qat_qmodel *qm = qat_calloc(1, sizeof *qm);
    if (qm) qm->eval_mode = QAT_EVAL_INTEGER_GRID;
    if (!qm) return qat_error_null(QAT_ERR_NOMEM, "qmodel_prepare: out of memory");
    qm->m = m;
    qm->cfg = *cfg;
    qm->units = qat_calloc((size_t)nl, sizeof *qm->units);
    qm->layer_owner = qat_malloc((size_t)nl * sizeof(int));
    qm->layer_unit = qat_malloc((size_t)nl * sizeof(int));
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
        case QAT_LAYER_HARDSWISH:
        case QAT_LAYER_HARDSIGMOID:
        case QAT_LAYER_CLAMP:
            kind = QAT_UNIT_ACT;
            if (l->clamp_hi_c) {
                char d[160];
                qat_qmodel_free(qm);
                return qat_error_null(QAT_ERR_UNSUPPORTED,
                                      "qmodel_prepare: %s has per-channel upper bounds but is not fused into a conv "
                                      "(the only reader of a conv or its BN): an unfused clamp is one int8 table",
                                      layer_desc(l, d, sizeof d));
            }
            break;
        case QAT_LAYER_CONCAT:
            kind = QAT_UNIT_CONCAT;
            break;
        case QAT_LAYER_BATCHNORM2D: {
            char d[160];
            qat_qmodel_free(qm);
            return qat_error_null(QAT_ERR_UNSUPPORTED,
                                  "qmodel_prepare: %s does not directly follow a conv2d whose only "
                                  "consumer it is, so it cannot be folded",
                                  layer_desc(l, d, sizeof d));
        }
        default: /* relu, max-pool, upsample, flatten: on their input's grid */
            qm->layer_unit[i] = qm->layer_unit[l->inputs[0]];
            continue;
        }
        int u = qm->n_units++;
        qat_qunit *un = &qm->units[u];
        un->kind = kind;
        memcpy(un->name, l->name, sizeof un->name);
        un->head = i;
        un->bn = un->relu = un->act_share = -1;
        qm->layer_owner[i] = u;
        int cur = i;
        if (kind == QAT_UNIT_CONV && l->type == QAT_LAYER_CONV2D) {
            int b = absorb(qm, u, sole_consumer(m, cur), QAT_LAYER_BATCHNORM2D);
            if (b >= 0) un->bn = cur = b;
        }
        if (kind == QAT_UNIT_CONV || kind == QAT_UNIT_ADD) {
            int nxt = sole_consumer(m, cur);
            int r = absorb(qm, u, nxt, QAT_LAYER_RELU);
            if (r < 0 && kind == QAT_UNIT_CONV) r = absorb(qm, u, nxt, QAT_LAYER_CLAMP); /* relu6, CLE's bounds */
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
    if ((cfg->concat_mode == QAT_CONCAT_SHARED && share_concats(qm)) || build_params(qm)) {
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
        qat_quantizer_project(&qm->units[u].weight);
        qat_quantizer_project(&qm->units[u].act);
    }
    qat_qmodel_sync_shared(qm);
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
            /* binary scales (mean |w|, already the least-squares optimum)
             * and shared values are set when the weights are observed */
            if (un->weight.lsq_scale && un->weight.scheme.bits > 1 && un->weight.kind == QAT_WEIGHT_UNIFORM &&
                (rc = lsq_weight_init(qm, un)))
                return rc;
        }
        if (un->cfg.float_format || un->act_share >= 0) continue; /* nothing to calibrate (or the concat's) */
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
    qat_qmodel_sync_shared(qm);
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
    int rc = finalize_with(qm, method);
    qat_qmodel_sync_shared(qm);
    return rc;
}
