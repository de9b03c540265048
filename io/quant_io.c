/* QAT/PTQ checkpoints: a float checkpoint plus the /quant group. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"
#include "qat/qio.h"
#include "quant/internal.h"

#define QUANT_VERSION 1

/* ---- quantizer ---- */

/* The group of unit u, "units/003", created or opened. */
static hid_t unit_group(hid_t g, int u, int create)
{
    char name[32];
    snprintf(name, sizeof name, "units/%03d", u);
    return create ? qat_h5_group_create(g, name) : qat_h5_group_open(g, name);
}

static int write_quantizer(hid_t g, const char *name, qat_quantizer *q)
{
    hid_t h = qat_h5_group_create(g, name);
    if (h < 0) return (int)h;
    int rc = 0, n = q->n;
    qat_quantizer_project(q); /* an optimizer step may have left a learnable scale below its floor */
    int32_t sch[6] = {q->scheme.bits, q->scheme.symmetric, q->scheme.is_signed, q->scheme.narrow,
                      q->scheme.per_channel, q->scheme.axis};
    int32_t flags[3] = {q->observe, q->fake_quant, q->initialized};
    if (!rc) rc = qat_h5_attr_write(h, "scheme", QAT_H5_I32, 6, sch);
    if (!rc) rc = qat_h5_attr_write(h, "flags", QAT_H5_I32, 3, flags);
    if (!rc) rc = qat_h5_write(h, "scale", QAT_H5_F32, 1, &n, q->scale);
    if (!rc) rc = qat_h5_write(h, "zero_point", QAT_H5_I32, 1, &n, q->zero_point);
    if (!rc && q->lsq_scale) rc = qat_h5_write(h, "lsq_scale", QAT_H5_F32, 1, &n, q->lsq_scale->data);
    if (!rc && q->lsq_zp) rc = qat_h5_write(h, "lsq_zero_point", QAT_H5_F32, 1, &n, q->lsq_zp->data);
    if (!rc && q->values) rc = qat_h5_write(h, "values", QAT_H5_F32, 1, &q->k, q->values->data);
    if (!rc && q->obs) {
        const qat_observer_opts *o = qat_observer_options(q->obs);
        rc = qat_h5_attr_write_str(h, "observer", qat_observer_kind_name(o->kind));
        for (int i = 0; !rc && i < qat_observer_num_state(q->obs); i++) {
            const char *sn;
            const double *d;
            size_t len;
            if ((rc = qat_observer_state(q->obs, i, &sn, &d, &len))) break;
            char path[96];
            snprintf(path, sizeof path, "observer_state/%s", sn);
            int ln = (int)len;
            if (len == 0) continue;
            rc = qat_h5_write(h, path, QAT_H5_F64, 1, &ln, d);
        }
    }
    H5Gclose(h);
    return rc;
}

static int read_quantizer(hid_t g, const char *name, qat_quantizer *q)
{
    hid_t h = qat_h5_group_open(g, name);
    if (h < 0) return (int)h;
    int rc = 0, n = q->n;
    int32_t sch[6], flags[3];
    if (!rc) rc = qat_h5_attr_read(h, "scheme", QAT_H5_I32, 6, sch);
    if (!rc && (sch[0] != q->scheme.bits || sch[1] != q->scheme.symmetric || sch[2] != q->scheme.is_signed ||
                sch[3] != q->scheme.narrow || sch[4] != q->scheme.per_channel))
        rc = qat_h5_fail(QAT_ERR_FORMAT, h, "group", NULL, "stored scheme differs from the configured one");
    if (!rc) rc = qat_h5_attr_read(h, "flags", QAT_H5_I32, 3, flags);
    if (!rc) rc = qat_h5_read(h, "scale", QAT_H5_F32, 1, &n, q->scale);
    if (!rc) rc = qat_h5_read(h, "zero_point", QAT_H5_I32, 1, &n, q->zero_point);
    if (!rc && q->lsq_scale) rc = qat_h5_read(h, "lsq_scale", QAT_H5_F32, 1, &n, q->lsq_scale->data);
    if (!rc && q->lsq_zp) rc = qat_h5_read(h, "lsq_zero_point", QAT_H5_F32, 1, &n, q->lsq_zp->data);
    if (!rc && q->values) rc = qat_h5_read(h, "values", QAT_H5_F32, 1, &q->k, q->values->data);
    for (int k = 0; !rc && q->values && k < q->k; k++)
        if (!isfinite(q->values->data[k]))
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "dataset", "values", "shared value %d is %g", k, q->values->data[k]);
    for (int c = 0; !rc && c < n; c++)
        if (!(q->scale[c] > 0) || !isfinite(q->scale[c]) || q->zero_point[c] < q->qmin || q->zero_point[c] > q->qmax)
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "group", NULL, "channel %d: scale %g / zero point %d out of range", c,
                             q->scale[c], q->zero_point[c]);
    /* the learnable parameters are what the forward uses: the same checks
     * (a negative scale would otherwise only fail at the first forward) */
    for (int c = 0; !rc && q->lsq_scale && c < n; c++)
        if (!(q->lsq_scale->data[c] > 0) || !isfinite(q->lsq_scale->data[c]))
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "dataset", "lsq_scale",
                             "channel %d: learnable scale %g is not a positive finite number", c,
                             q->lsq_scale->data[c]);
    for (int c = 0; !rc && q->lsq_zp && c < n; c++)
        if (!(q->lsq_zp->data[c] >= (float)q->qmin && q->lsq_zp->data[c] <= (float)q->qmax))
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "dataset", "lsq_zero_point",
                             "channel %d: learnable zero point %g outside [%d, %d]", c, q->lsq_zp->data[c], q->qmin,
                             q->qmax);
    for (int k = 0; !rc && k < 3; k++)
        if (flags[k] != 0 && flags[k] != 1)
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "group", NULL,
                             "flags (observe, fake_quant, initialized) must be 0 or 1, got %d %d %d", flags[0], flags[1],
                             flags[2]);
    if (!rc && q->obs && qat_h5_exists(h, "observer_state")) {
        int cnt = qat_h5_group_count(h, "observer_state");
        for (int i = 0; !rc && i < cnt; i++) {
            char sn[64], path[96];
            int nd, shape[1];
            if ((rc = qat_h5_group_name(h, "observer_state", i, sn, sizeof sn))) break;
            snprintf(path, sizeof path, "observer_state/%s", sn);
            if ((rc = qat_h5_shape(h, path, QAT_H5_F64, 1, &nd, shape))) break;
            if (nd != 1) {
                rc = qat_h5_fail(QAT_ERR_FORMAT, h, "dataset", path, "expected 1-D");
                break;
            }
            double *d = qat_malloc((size_t)shape[0] * sizeof *d + 1);
            if (!d) {
                rc = qat_error(QAT_ERR_NOMEM, "out of memory");
                break;
            }
            rc = qat_h5_read(h, path, QAT_H5_F64, 1, shape, d);
            if (!rc) rc = qat_observer_set_state(q->obs, sn, d, (size_t)shape[0]);
            free(d);
        }
    }
    if (!rc) {
        q->observe = flags[0];
        q->fake_quant = flags[1];
        q->initialized = flags[2];
    }
    H5Gclose(h);
    return rc;
}

/* ---- /quant ---- */

static int write_unit_cfg(hid_t h, const qat_unit_config *c)
{
    int32_t v[16] = {c->quantize, c->weight.bits, c->weight.symmetric, c->weight.is_signed, c->weight.narrow,
                     c->weight.per_channel, c->act.bits, c->act.symmetric, c->act.is_signed, c->act.narrow,
                     c->act.per_channel, c->lsq_weight, c->lsq_act, (int32_t)c->calib, c->weight.axis, c->act.axis};
    int rc = qat_h5_attr_write(h, "config", QAT_H5_I32, 16, v);
    /* beyond the uniform grid (absent: uniform, integer) */
    int32_t x[3] = {(int32_t)c->weight_kind, c->weight_k, (int32_t)c->float_format};
    if (!rc && (x[0] || x[1] || x[2])) rc = qat_h5_attr_write(h, "config_weights", QAT_H5_I32, 3, x);
    return rc;
}

static int read_unit_cfg(hid_t h, qat_unit_config *c)
{
    int32_t v[16];
    int rc = qat_h5_attr_read(h, "config", QAT_H5_I32, 16, v);
    if (rc) return rc;
    memset(c, 0, sizeof *c);
    c->quantize = v[0];
    c->weight = (qat_qscheme){v[1], v[2], v[3], v[4], v[5], v[14]};
    c->act = (qat_qscheme){v[6], v[7], v[8], v[9], v[10], v[15]};
    c->lsq_weight = v[11];
    c->lsq_act = v[12];
    c->calib = (qat_calibrator)v[13];
    if (qat_h5_attr_exists(h, "config_weights")) {
        int32_t x[3];
        if ((rc = qat_h5_attr_read(h, "config_weights", QAT_H5_I32, 3, x))) return rc;
        if (x[0] < 0 || x[0] >= QAT_WEIGHT_KIND_COUNT || x[2] < 0 || x[2] >= QAT_FLOAT_FORMAT_COUNT ||
            (x[0] != QAT_WEIGHT_UNIFORM && (x[1] < 2 || x[1] > 256)) || (x[0] == QAT_WEIGHT_UNIFORM && x[1] != 0))
            return qat_h5_fail(QAT_ERR_FORMAT, h, "attribute", "config_weights",
                               "weight kind %d, K %d, float format %d out of range", x[0], x[1], x[2]);
        c->weight_kind = (qat_weight_kind)x[0];
        c->weight_k = x[1];
        c->float_format = (qat_float_format)x[2];
    }
    if (v[13] < 0 || v[13] >= QAT_CALIBRATOR_COUNT)
        return qat_h5_fail(QAT_ERR_FORMAT, h, "group", NULL, "calibrator %d unknown", v[13]);
    return QAT_OK;
}

static int write_quant(hid_t file, qat_qmodel *qm, const qat_qrecipe *r)
{
    hid_t g = qat_h5_group_create(file, "/quant");
    if (g < 0) return (int)g;
    int rc = qat_h5_attr_write_i32(g, "version", QUANT_VERSION);
    int nu = qat_qmodel_num_units(qm);
    if (!rc) rc = qat_h5_attr_write_i32(g, "num_units", nu);
    /* QAT_CONCAT_SHARED (absent: requantize) */
    if (!rc && qat_qmodel_config(qm)->concat_mode)
        rc = qat_h5_attr_write_i32(g, "concat_mode", qat_qmodel_config(qm)->concat_mode);
    if (!rc && r) {
        rc = qat_h5_attr_write_str(g, "method", r->method);
        if (!rc) rc = qat_h5_attr_write_str(g, "spec", r->spec);
        if (!rc) rc = qat_h5_attr_write_str(g, "calibrator", r->calib);
        if (!rc) rc = qat_h5_attr_write_i32(g, "calib_size", r->calib_size);
        if (!rc) rc = qat_h5_attr_write_i32(g, "freeze_bn_after", r->freeze_bn_after);
        if (!rc) rc = qat_h5_attr_write_i32(g, "freeze_observers_after", r->freeze_observers_after);
    }
    for (int u = 0; !rc && u < nu; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        hid_t h = unit_group(g, u, 1);
        if (h < 0) {
            rc = (int)h;
            break;
        }
        int32_t layers[4] = {un->head, un->bn, un->relu, un->last};
        rc = qat_h5_attr_write_str(h, "name", un->name);
        if (!rc) rc = qat_h5_attr_write_str(h, "kind", qat_unit_kind_name(un->kind));
        if (!rc) rc = qat_h5_attr_write(h, "layers", QAT_H5_I32, 4, layers);
        if (!rc) rc = qat_h5_attr_write_i32(h, "bn_frozen", un->bn_frozen);
        if (!rc) rc = write_unit_cfg(h, &un->cfg);
        if (!rc && un->cfg.quantize && un->weight.n) rc = write_quantizer(h, "weight", &un->weight);
        if (!rc && un->cfg.quantize) rc = write_quantizer(h, "act", &un->act);
        H5Gclose(h);
    }
    H5Gclose(g);
    return rc;
}

typedef struct {
    qat_qmodel *qm;
    qat_optim *o;
    const qat_train_state *st;
    const qat_qrecipe *r;
} save_ctx;

static int writer(hid_t file, void *p)
{
    save_ctx *s = p;
    int rc = qat_h5_write_format(file, QAT_FORMAT_QAT_CHECKPOINT, QAT_FORMAT_VERSION);
    qat_model *m = qat_qmodel_float(s->qm);
    if (!rc) rc = qat_h5_attr_write_str(file, "arch", qat_model_arch(m));
    if (!rc) rc = qat_io_write_model(file, "/model", m);
    if (!rc && s->o) rc = qat_io_write_optim(file, "/optim", s->o);
    if (!rc && s->st) rc = qat_io_write_train(file, s->st);
    if (!rc) rc = write_quant(file, s->qm, s->r);
    return rc;
}

int qat_qcheckpoint_save(const char *path, qat_qmodel *qm, qat_optim *o, const qat_train_state *st,
                         const qat_qrecipe *r)
{
    if (!path || !qm) return qat_error(QAT_ERR_ARG, "qcheckpoint_save: NULL path or model");
    save_ctx s = {qm, o, st, r};
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = qat_h5_save_atomic(path, writer, &s);
    qat_h5_quiet_end(&q);
    return rc;
}

static int load_quant(hid_t file, qat_model *m, qat_qmodel **out, qat_qrecipe *r)
{
    hid_t g = qat_h5_group_open(file, "/quant");
    if (g < 0) return (int)g;
    int nu = 0, rc = qat_h5_attr_read_i32(g, "num_units", &nu);
    qat_qconfig *cfg = qat_calloc(1, sizeof *cfg);
    qat_qmodel *qm = NULL;
    if (!cfg) rc = qat_error(QAT_ERR_NOMEM, "out of memory");
    int nl = qat_model_num_layers(m);
    if (!rc && (nu < 1 || nu > nl))
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "num_units %d out of range [1, %d]", nu, nl);
    /* the stored units' names and configurations */
    char(*names)[QAT_NAME_MAX] = NULL;
    qat_unit_config *ucfg = NULL;
    if (!rc) {
        names = qat_calloc((size_t)nu, sizeof *names);
        ucfg = qat_calloc((size_t)nu, sizeof *ucfg);
        if (!names || !ucfg) rc = qat_error(QAT_ERR_NOMEM, "out of memory");
    }
    if (!rc && r) {
        memset(r, 0, sizeof *r);
        if (qat_h5_attr_exists(g, "method") == 1) {
            rc = qat_h5_attr_read_str(g, "method", r->method, sizeof r->method);
            if (!rc) rc = qat_h5_attr_read_str(g, "spec", r->spec, sizeof r->spec);
            if (!rc) rc = qat_h5_attr_read_str(g, "calibrator", r->calib, sizeof r->calib);
            if (!rc) rc = qat_h5_attr_read_i32(g, "calib_size", &r->calib_size);
            if (!rc) rc = qat_h5_attr_read_i32(g, "freeze_bn_after", &r->freeze_bn_after);
            if (!rc) rc = qat_h5_attr_read_i32(g, "freeze_observers_after", &r->freeze_observers_after);
        }
    }
    for (int u = 0; !rc && u < nu; u++) {
        char name[32];
        snprintf(name, sizeof name, "units/%03d", u);
        hid_t h = qat_h5_group_open(g, name);
        if (h < 0) {
            rc = (int)h;
            break;
        }
        rc = qat_h5_attr_read_str(h, "name", names[u], QAT_NAME_MAX);
        if (!rc) rc = read_unit_cfg(h, &ucfg[u]);
        H5Gclose(h);
    }
    /* every unit's exact configuration: the most common one as the base,
     * the others as overrides (so that any number of units fits while at
     * most QAT_MAX_OVERRIDES differ from the base) */
    if (!rc) {
        int best = 0, best_n = 0;
        for (int u = 0; u < nu; u++) {
            int cnt = 0;
            for (int v = 0; v < nu; v++) cnt += !memcmp(&ucfg[u], &ucfg[v], sizeof *ucfg);
            if (cnt > best_n) best = u, best_n = cnt;
        }
        memset(cfg, 0, sizeof *cfg);
        cfg->base = ucfg[best];
        for (int u = 0; !rc && u < nu; u++) {
            if (!memcmp(&ucfg[u], &cfg->base, sizeof *ucfg)) continue;
            if (cfg->n_overrides == QAT_MAX_OVERRIDES) {
                rc = qat_h5_fail(QAT_ERR_UNSUPPORTED, g, "group", NULL,
                                 "more than %d units differ from the most common configuration", QAT_MAX_OVERRIDES);
                break;
            }
            memcpy(cfg->overrides[cfg->n_overrides].name, names[u], QAT_NAME_MAX);
            cfg->overrides[cfg->n_overrides++].cfg = ucfg[u];
        }
    }
    if (!rc && qat_h5_attr_exists(g, "concat_mode") == 1) {
        rc = qat_h5_attr_read_i32(g, "concat_mode", &cfg->concat_mode);
        if (!rc && cfg->concat_mode != QAT_CONCAT_REQUANTIZE && cfg->concat_mode != QAT_CONCAT_SHARED)
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "attribute", "concat_mode", "%d unknown (0 or 1)", cfg->concat_mode);
    }
    if (!rc && !(qm = qat_qmodel_prepare(m, cfg))) rc = QAT_ERR_FORMAT;
    if (!rc && qat_qmodel_num_units(qm) != nu)
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "%d units stored, the model has %d", nu,
                         qat_qmodel_num_units(qm));
    for (int u = 0; !rc && u < nu; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        hid_t h = unit_group(g, u, 0);
        if (h < 0) {
            rc = (int)h;
            break;
        }
        int32_t layers[4];
        rc = qat_h5_attr_read(h, "layers", QAT_H5_I32, 4, layers);
        if (!rc && (layers[0] != un->head || layers[1] != un->bn || layers[2] != un->relu || layers[3] != un->last))
            rc = qat_h5_fail(QAT_ERR_FORMAT, h, "group", NULL, "unit '%s' spans other layers than the model's",
                             un->name);
        if (!rc) rc = qat_h5_attr_read_i32(h, "bn_frozen", &un->bn_frozen);
        if (!rc && un->cfg.quantize && un->weight.n) rc = read_quantizer(h, "weight", &un->weight);
        if (!rc && un->cfg.quantize) rc = read_quantizer(h, "act", &un->act);
        H5Gclose(h);
    }
    free(cfg);
    free(names);
    free(ucfg);
    H5Gclose(g);
    if (!rc) qat_qmodel_sync_shared(qm);
    if (rc) {
        qat_qmodel_free(qm);
        return rc;
    }
    *out = qm;
    return QAT_OK;
}

qat_qmodel *qat_qmodel_load(const char *path, qat_model **float_model, qat_train_state *st, qat_qrecipe *r)
{
    if (!path || !float_model) return qat_error_null(QAT_ERR_ARG, "qmodel_load: NULL argument");
    *float_model = NULL;
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    hid_t f = qat_h5_open_read(path);
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_io_graph gr = {0};
    qat_io_model_stage ms = {0};
    int rc = f < 0 ? (int)f : 0;
    static const char *const kinds[] = {QAT_FORMAT_QAT_CHECKPOINT, NULL};
    if (!rc) rc = qat_h5_read_format(f, kinds, QAT_FORMAT_VERSION, NULL, 0, NULL);
    if (!rc) rc = qat_io_read_graph(f, "/model", &gr);
    if (!rc && !(m = qat_io_build_graph(f, &gr))) rc = QAT_ERR_FORMAT;
    if (!rc) {
        char arch[QAT_NAME_MAX];
        if (qat_h5_attr_exists(f, "arch") == 1 && !qat_h5_attr_read_str(f, "arch", arch, sizeof arch))
            qat_model_set_arch(m, arch);
        rc = qat_io_model_stage_read(f, "/model", m, &ms);
    }
    if (!rc) rc = qat_io_read_input_norm(f, "/model", m);
    if (!rc) qat_io_model_commit(&ms, m);
    if (!rc) rc = load_quant(f, m, &qm, r);
    if (!rc && st) rc = qat_io_read_train(f, st);
    qat_io_model_stage_free(&ms);
    qat_io_graph_free(&gr);
    if (f >= 0) {
        int crc = qat_h5_close(f, path);
        if (!rc) rc = crc;
    }
    qat_h5_quiet_end(&q);
    if (rc) {
        qat_qmodel_free(qm);
        qat_model_free(m);
        return NULL;
    }
    *float_model = m;
    return qm;
}
