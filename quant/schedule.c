/* quant/schedule.c: staged QAT (qat/schedule.h): the --schedule grammar,
 * the per-stage fake-quant switches, and an optimizer that continues
 * another one over a changed parameter list. Built on public accessors
 * only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "qat/schedule.h"

#define GRAMMAR                                                                                                \
    "a schedule is STAGE[,STAGE...], STAGE = [ITEM+ITEM...]:EPOCHS, ITEM = a unit spec (w8a8, ..., default "  \
    "--quant) | weights | acts | all | units=K (e.g. w8a8:1,w4a4:2 or weights:1,all:2 or w4a4+units=3:1,w4a4:2)"

static const char *const part_names[QAT_STAGE_PART_COUNT] = {
    [QAT_STAGE_ALL] = "all", [QAT_STAGE_WEIGHTS] = "weights", [QAT_STAGE_ACTS] = "acts"};
_Static_assert(QAT_STAGE_PART_COUNT == 3, "part_names must list every part");

const char *qat_stage_part_name(qat_stage_part p)
{
    return (unsigned)p < QAT_STAGE_PART_COUNT ? part_names[p] : NULL;
}

/* A positive decimal integer filling all of s, or -1. */
static long positive(const char *s)
{
    if (*s < '0' || *s > '9') return -1;
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    return (*e || errno || v < 1 || v > 1000000) ? -1 : v;
}

/* One item of stage k (text item, NUL-terminated) into *st; seen[] marks
 * the kinds given so far: 0 spec, 1 part, 2 units. */
static int parse_item(const char *item, int k, const char *stage_text, qat_stage *st, int seen[3])
{
    int kind = !strcmp(item, "weights") || !strcmp(item, "acts") || !strcmp(item, "all") ? 1
               : !strncmp(item, "units=", 6)                                            ? 2
                                                                                        : 0;
    if (!*item) return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': empty item; " GRAMMAR, k + 1, stage_text);
    if (seen[kind] || (!strcmp(item, "all") && (seen[1] || seen[2])))
        return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': '%s' repeats what the stage already says; " GRAMMAR,
                         k + 1, stage_text, item);
    if (!strcmp(item, "all")) { /* says both part and units */
        seen[1] = seen[2] = 1;
        st->part = QAT_STAGE_ALL;
        st->units = 0;
        return QAT_OK;
    }
    seen[kind] = 1;
    if (kind == 1) {
        st->part = !strcmp(item, "weights") ? QAT_STAGE_WEIGHTS : QAT_STAGE_ACTS;
        return QAT_OK;
    }
    if (kind == 2) {
        long v = positive(item + 6);
        if (v < 0)
            return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': '%s': K in units=K must be a whole number >= 1",
                             k + 1, stage_text, item);
        st->units = (int)v;
        return QAT_OK;
    }
    if (strlen(item) >= sizeof st->spec)
        return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': spec '%s' is too long", k + 1, stage_text, item);
    qat_unit_config u;
    if (qat_unit_config_parse(item, &u))
        return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': %s", k + 1, stage_text, qat_last_error());
    snprintf(st->spec, sizeof st->spec, "%s", item);
    return QAT_OK;
}

/* Stage k from its text "ITEMS:EPOCHS" (modified in place). */
static int parse_stage(char *text, int k, const char *default_spec, qat_stage *st)
{
    char shown[96];
    snprintf(shown, sizeof shown, "%s", text);
    memset(st, 0, sizeof *st);
    char *colon = strrchr(text, ':');
    if (!colon)
        return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': no ':EPOCHS'; " GRAMMAR, k + 1, shown);
    long ep = positive(colon + 1);
    if (ep < 0)
        return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': epochs '%s' must be a whole number >= 1", k + 1,
                         shown, colon + 1);
    st->epochs = (int)ep;
    *colon = '\0';
    int seen[3] = {0, 0, 0};
    if (*text) {
        for (char *item = text;;) {
            char *plus = strchr(item, '+');
            if (plus) *plus = '\0';
            int rc = parse_item(item, k, shown, st, seen);
            if (rc) return rc;
            if (!plus) break;
            item = plus + 1;
        }
    }
    if (!seen[0]) {
        if (!default_spec || !*default_spec)
            return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s' names no spec and there is no --quant to default to",
                             k + 1, shown);
        qat_unit_config u;
        if (strlen(default_spec) >= sizeof st->spec || qat_unit_config_parse(default_spec, &u))
            return qat_error(QAT_ERR_ARG, "--schedule stage %d '%s': default spec '%s' is not a valid spec", k + 1,
                             shown, default_spec);
        snprintf(st->spec, sizeof st->spec, "%s", default_spec);
    }
    return QAT_OK;
}

int qat_quant_schedule_parse(const char *text, const char *default_spec, qat_quant_schedule *out)
{
    if (!text || !out) return qat_error(QAT_ERR_ARG, "qat_quant_schedule_parse: NULL argument");
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    if (!len) return qat_error(QAT_ERR_ARG, "--schedule is empty; " GRAMMAR);
    char *copy = qat_strdup(text);
    if (!copy) return qat_error(QAT_ERR_NOMEM, "--schedule: out of memory");
    int rc = QAT_OK, k = 0;
    for (char *s = copy; !rc;) {
        char *comma = strchr(s, ',');
        if (comma) *comma = '\0';
        if (k == QAT_MAX_STAGES)
            rc = qat_error(QAT_ERR_ARG, "--schedule '%s': more than %d stages", text, QAT_MAX_STAGES);
        else if (!*s)
            rc = qat_error(QAT_ERR_ARG, "--schedule '%s': stage %d is empty; " GRAMMAR, text, k + 1);
        else
            rc = parse_stage(s, k, default_spec, &out->stage[k]);
        if (!rc) k++;
        if (!comma) break;
        s = comma + 1;
    }
    free(copy);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->n = k;
    return QAT_OK;
}

int qat_quant_schedule_format(const qat_quant_schedule *s, char *buf, size_t n)
{
    if (!s || !buf || n == 0) return qat_error(QAT_ERR_ARG, "qat_quant_schedule_format: NULL argument");
    size_t off = 0;
    buf[0] = '\0';
    for (int k = 0; k < s->n; k++) {
        const qat_stage *st = &s->stage[k];
        char units[32] = "";
        if (st->units > 0) snprintf(units, sizeof units, "+units=%d", st->units);
        int w = snprintf(buf + off, n - off, "%s%s%s%s%s:%d", k ? "," : "", st->spec,
                         st->part != QAT_STAGE_ALL ? "+" : "",
                         st->part != QAT_STAGE_ALL ? qat_stage_part_name(st->part) : "", units, st->epochs);
        if (w < 0 || (size_t)w >= n - off) {
            buf[0] = '\0';
            return qat_error(QAT_ERR_ARG, "schedule of %d stages does not fit in %zu characters", s->n, n - 1);
        }
        off += (size_t)w;
    }
    return QAT_OK;
}

int qat_quant_schedule_epochs(const qat_quant_schedule *s)
{
    int e = 0;
    for (int k = 0; k < s->n; k++) e += s->stage[k].epochs;
    return e;
}

int qat_quant_schedule_stage_at(const qat_quant_schedule *s, int ep)
{
    int end = 0;
    for (int k = 0; k < s->n; k++) {
        end += s->stage[k].epochs;
        if (ep < end) return k;
    }
    return s->n > 0 ? s->n - 1 : 0;
}

int qat_qmodel_set_stage_fake_quant(qat_qmodel *qm, const qat_stage *st)
{
    if (!qm || !st) return qat_error(QAT_ERR_ARG, "qat_qmodel_set_stage_fake_quant: NULL argument");
    int nu = qat_qmodel_num_units(qm);
    if (st->units < 0 || st->units > nu)
        return qat_error(QAT_ERR_ARG, "schedule stage '%s': units=%d, but the model has %d quantization units", st->spec,
                         st->units, nu);
    if ((unsigned)st->part >= QAT_STAGE_PART_COUNT)
        return qat_error(QAT_ERR_ARG, "schedule stage '%s': part %d unknown", st->spec, (int)st->part);
    int k = st->units ? st->units : nu;
    for (int u = 0; u < nu; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        un->weight.fake_quant = u < k && st->part != QAT_STAGE_ACTS;
        un->act.fake_quant = u < k && st->part != QAT_STAGE_WEIGHTS;
    }
    return QAT_OK;
}

/* The parameter of old named like p, if it is the same tensor; else -1. */
static int carried(const qat_optim *old, const qat_named_tensor *p)
{
    int i = qat_optim_find(old, p->name);
    return (i >= 0 && qat_optim_param(old, i)->t == p->t) ? i : -1;
}

qat_optim *qat_optim_continue(qat_optim *old, const qat_named_tensor *params, int n)
{
    if (!old) return qat_error_null(QAT_ERR_ARG, "qat_optim_continue: NULL optimizer");
    qat_optim *o = qat_optim_create(params, n, qat_optim_get_options(old));
    if (!o) return NULL;
    int rc = QAT_OK;
    const qat_schedule *sched = qat_optim_schedule(old);
    if (sched) rc = qat_optim_set_schedule(o, sched);
    if (!rc) rc = qat_optim_set_step_count(o, qat_optim_step_count(old));
    if (!rc) rc = qat_optim_set_lr(o, qat_optim_lr(old));
    size_t n_old = 0, n_new = 0;
    int64_t *steps_old = qat_optim_param_steps(old, &n_old);
    int64_t *steps_new = qat_optim_param_steps(o, &n_new);
    for (int i = 0; i < n && !rc; i++) {
        int j = carried(old, &params[i]);
        if (j < 0) continue;
        if (steps_old && steps_new) steps_new[i] = steps_old[j];
        rc = qat_optim_set_group(o, i, 1, qat_optim_param_lr_scale(old, j), qat_optim_param_weight_decay(old, j));
    }
    /* state buffers by name ("momentum/<param>", ...): a carried parameter's
     * buffer has the same name in both */
    for (int b = 0; b < qat_optim_num_state(o) && !rc; b++) {
        const char *name;
        float *dst, *src;
        size_t len, len_old;
        if ((rc = qat_optim_state(o, b, &name, &dst, &len))) break;
        const char *slash = strchr(name, '/');
        int p = slash ? qat_optim_find(o, slash + 1) : -1;
        if (p < 0 || carried(old, qat_optim_param(o, p)) < 0) continue;
        int bo = qat_optim_find_state(old, name);
        if (bo < 0) continue;
        if ((rc = qat_optim_state(old, bo, &name, &src, &len_old))) break;
        if (len != len_old) {
            rc = qat_error(QAT_ERR_STATE, "qat_optim_continue: state '%s' has %zu values, was %zu", name, len, len_old);
            break;
        }
        memcpy(dst, src, len * sizeof *dst);
    }
    if (rc) {
        qat_optim_free(o);
        return NULL;
    }
    return o;
}
