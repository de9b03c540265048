/* The optimizer section of a checkpoint: kind, hyperparameters, groups,
 * schedule, step counters and state buffers (layout in docs/FORMAT.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

/* Floating hyperparameters of qat_optim_options, stored as float64
 * attributes of <group>/options. */
static const struct {
    const char *name;
    size_t off;
} dbl_opts[] = {
    {"lr", offsetof(qat_optim_options, lr)},
    {"weight_decay", offsetof(qat_optim_options, weight_decay)},
    {"momentum", offsetof(qat_optim_options, momentum)},
    {"beta1", offsetof(qat_optim_options, beta1)},
    {"beta2", offsetof(qat_optim_options, beta2)},
    {"eps", offsetof(qat_optim_options, eps)},
};
/* Integer flags, stored as int32 attributes. */
static const struct {
    const char *name;
    size_t off;
} int_opts[] = {
    {"decoupled_wd", offsetof(qat_optim_options, decoupled_wd)},
    {"decay_all", offsetof(qat_optim_options, decay_all)},
    {"nesterov", offsetof(qat_optim_options, nesterov)},
};
#define N_DBL_OPTS (sizeof dbl_opts / sizeof dbl_opts[0])
#define N_INT_OPTS (sizeof int_opts / sizeof int_opts[0])

static double *opt_dbl(qat_optim_options *o, size_t k) { return (double *)(void *)((char *)o + dbl_opts[k].off); }
static int *opt_int(qat_optim_options *o, size_t k) { return (int *)(void *)((char *)o + int_opts[k].off); }

/* Shortest decimal that reads back as v. */
static const char *fmt_double(double v, char *buf, size_t n)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

/* The shape a state buffer is stored with: its parameter's shape (state
 * name "<kind>/<param name>") when the sizes agree, else [n]. */
static void state_shape(const qat_optim *o, const char *name, size_t n, int *ndim, int *shape)
{
    const char *slash = strchr(name, '/');
    int i = slash ? qat_optim_find(o, slash + 1) : -1;
    const qat_named_tensor *p = i >= 0 ? qat_optim_param(o, i) : NULL;
    if (p && p->t && p->t->numel == n) {
        *ndim = p->t->ndim;
        memcpy(shape, p->t->shape, sizeof(int) * (size_t)p->t->ndim);
    } else {
        *ndim = 1;
        shape[0] = (int)n;
    }
}

/* ---- writing ---- */

int qat_io_write_optim(hid_t file, const char *group, qat_optim *o)
{
    char fname[256];
    int P = qat_optim_num_params(o), rc = QAT_OK;
    for (int i = 0; i < P; i++)
        if (strchr(qat_optim_param(o, i)->name, '/'))
            return qat_error(QAT_ERR_ARG, "%s: optimizer parameter '%s' contains '/', which HDF5 names cannot hold",
                             qat_h5_file_name(file, fname, sizeof fname), qat_optim_param(o, i)->name);
    const char **names = qat_calloc((size_t)P + 1, sizeof *names);
    double *col = qat_calloc((size_t)P + 1, sizeof *col);
    hid_t g = -1, og = -1, sg = -1, stg = -1;
    if (!names || !col) {
        rc = qat_h5_fail(QAT_ERR_NOMEM, file, "group", group, "out of memory");
        goto done;
    }
    if ((g = qat_h5_group_create(file, group)) < 0 || (og = qat_h5_group_create(g, "options")) < 0 ||
        (stg = qat_h5_group_create(g, "state")) < 0) {
        rc = QAT_ERR_IO;
        goto done;
    }
    rc = qat_h5_attr_write_str(g, "kind", qat_optim_name(o));
    if (!rc) rc = qat_h5_attr_write_f64(g, "lr", qat_optim_lr(o));
    if (!rc) rc = qat_h5_attr_write_i64(g, "step_count", qat_optim_step_count(o));
    qat_optim_options opts = *qat_optim_get_options(o);
    for (size_t k = 0; k < N_DBL_OPTS && !rc; k++) rc = qat_h5_attr_write_f64(og, dbl_opts[k].name, *opt_dbl(&opts, k));
    for (size_t k = 0; k < N_INT_OPTS && !rc; k++) rc = qat_h5_attr_write_i32(og, int_opts[k].name, *opt_int(&opts, k));
    for (int i = 0; i < P; i++) names[i] = qat_optim_param(o, i)->name;
    if (!rc) rc = qat_h5_write_strings(g, "param_names", P, names);
    if (!rc) {
        size_t n = 0;
        const int64_t *steps = qat_optim_param_steps(o, &n);
        rc = qat_h5_write(g, "param_step", QAT_H5_I64, 1, &P, steps);
    }
    if (!rc) {
        for (int i = 0; i < P; i++) col[i] = qat_optim_param_lr_scale(o, i);
        rc = qat_h5_write(g, "lr_scale", QAT_H5_F64, 1, &P, col);
    }
    if (!rc) {
        for (int i = 0; i < P; i++) col[i] = qat_optim_param_weight_decay(o, i);
        rc = qat_h5_write(g, "weight_decay", QAT_H5_F64, 1, &P, col);
    }
    for (int i = 0; i < qat_optim_num_state(o) && !rc; i++) {
        const char *name = NULL;
        float *data = NULL;
        size_t n = 0;
        int shape[QAT_MAX_DIMS], nd = 0;
        rc = qat_optim_state(o, i, &name, &data, &n);
        if (rc) break;
        state_shape(o, name, n, &nd, shape);
        rc = qat_h5_write(stg, name, QAT_H5_F32, nd, shape, data);
    }
    const qat_schedule *s = qat_optim_schedule(o);
    if (!rc && s) {
        if ((sg = qat_h5_group_create(g, "schedule")) < 0) {
            rc = (int)sg;
            goto done;
        }
        const char *kn = qat_schedule_kind_name(s->kind);
        rc = qat_h5_attr_write_str(sg, "kind", kn ? kn : "?");
        if (!rc) rc = qat_h5_attr_write_f64(sg, "base_lr", s->base_lr);
        if (!rc) rc = qat_h5_attr_write_f64(sg, "min_lr", s->min_lr);
        if (!rc) rc = qat_h5_attr_write_i64(sg, "total_steps", s->total_steps);
        if (!rc) rc = qat_h5_attr_write_i64(sg, "step_size", s->step_size);
        if (!rc) rc = qat_h5_attr_write_f64(sg, "gamma", s->gamma);
        if (!rc) rc = qat_h5_attr_write_i64(sg, "warmup_steps", s->warmup_steps);
    }
done:
    if (sg >= 0) H5Gclose(sg);
    if (stg >= 0) H5Gclose(stg);
    if (og >= 0) H5Gclose(og);
    if (g >= 0) H5Gclose(g);
    free(names);
    free(col);
    return rc;
}

/* ---- reading ---- */

int qat_io_read_optim_options(hid_t file, const char *group, qat_optim_options *opts)
{
    char kind[32];
    hid_t g = qat_h5_group_open(file, group);
    if (g < 0) return (int)g;
    int rc = qat_h5_attr_read_str(g, "kind", kind, sizeof kind);
    int k = rc ? -1 : qat_optim_kind_from_name(kind);
    if (!rc && k < 0) rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "unknown optimizer kind '%s'", kind);
    hid_t og = rc ? -1 : qat_h5_group_open(g, "options");
    if (!rc && og < 0) rc = (int)og;
    if (!rc) {
        *opts = qat_optim_options_defaults((qat_optim_kind)k);
        for (size_t j = 0; j < N_DBL_OPTS && !rc; j++) rc = qat_h5_attr_read_f64(og, dbl_opts[j].name, opt_dbl(opts, j));
        for (size_t j = 0; j < N_INT_OPTS && !rc; j++) rc = qat_h5_attr_read_i32(og, int_opts[j].name, opt_int(opts, j));
    }
    if (og >= 0) H5Gclose(og);
    H5Gclose(g);
    return rc;
}

void qat_io_optim_stage_free(qat_io_optim_stage *s)
{
    if (!s) return;
    free(s->param_step);
    free(s->lr_scale);
    free(s->wd);
    if (s->state)
        for (int i = 0; i < s->n_state; i++) free(s->state[i]);
    free(s->state);
    memset(s, 0, sizeof *s);
}

/* The optimizer o must be the one stored: kind, options, parameters. */
static int check_same_optim(hid_t g, const qat_optim_options *fo, qat_optim *o)
{
    char a[40], b[40];
    const qat_optim_options *mo = qat_optim_get_options(o);
    if (fo->kind != mo->kind)
        return qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "checkpoint optimizer is %s, the optimizer is %s",
                           qat_optim_kind_name(fo->kind), qat_optim_kind_name(mo->kind));
    qat_optim_options x = *fo, y = *mo;
    for (size_t k = 0; k < N_DBL_OPTS; k++)
        if (*opt_dbl(&x, k) != *opt_dbl(&y, k))
            return qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "checkpoint optimizer has %s %s, the optimizer has %s",
                               dbl_opts[k].name, fmt_double(*opt_dbl(&x, k), a, sizeof a),
                               fmt_double(*opt_dbl(&y, k), b, sizeof b));
    for (size_t k = 0; k < N_INT_OPTS; k++)
        if (*opt_int(&x, k) != *opt_int(&y, k))
            return qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "checkpoint optimizer has %s %d, the optimizer has %d",
                               int_opts[k].name, *opt_int(&x, k), *opt_int(&y, k));
    return QAT_OK;
}

static int check_param_names(hid_t g, qat_optim *o, int *P_out)
{
    int nd = 0, n = 0, P = qat_optim_num_params(o);
    int rc = qat_h5_shape(g, "param_names", QAT_H5_STR, 1, &nd, &n);
    if (rc) return rc;
    if (nd != 1) return qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "param_names", "is a scalar, expected a 1-D array");
    size_t width = QAT_NAME_MAX + 16;
    char *names = qat_calloc((size_t)n + 1, width);
    if (!names) return qat_h5_fail(QAT_ERR_NOMEM, g, "dataset", "param_names", "out of memory");
    rc = qat_h5_read_strings(g, "param_names", n, width, names);
    int common = n < P ? n : P;
    for (int i = 0; i < common && !rc; i++) {
        const char *f = names + (size_t)i * width, *mine = qat_optim_param(o, i)->name;
        if (strcmp(f, mine) != 0)
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "param_names",
                             "checkpoint optimizer parameter %d is '%s', the optimizer's is '%s'", i, f, mine);
    }
    if (!rc && n != P)
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "param_names",
                         "checkpoint optimizer has %d parameters, the optimizer has %d (first unmatched: '%s')", n, P,
                         n > P ? names + (size_t)P * width : qat_optim_param(o, n)->name);
    free(names);
    *P_out = n;
    return rc;
}

static int read_schedule(hid_t g, qat_schedule *s)
{
    char kind[32];
    hid_t sg = qat_h5_group_open(g, "schedule");
    if (sg < 0) return (int)sg;
    memset(s, 0, sizeof *s);
    int rc = qat_h5_attr_read_str(sg, "kind", kind, sizeof kind);
    int k = rc ? -1 : qat_schedule_kind_from_name(kind);
    if (!rc && k < 0) rc = qat_h5_fail(QAT_ERR_FORMAT, sg, "group", NULL, "unknown schedule kind '%s'", kind);
    s->kind = (qat_schedule_kind)(k < 0 ? 0 : k);
    if (!rc) rc = qat_h5_attr_read_f64(sg, "base_lr", &s->base_lr);
    if (!rc) rc = qat_h5_attr_read_f64(sg, "min_lr", &s->min_lr);
    if (!rc) rc = qat_h5_attr_read_i64(sg, "total_steps", &s->total_steps);
    if (!rc) rc = qat_h5_attr_read_i64(sg, "step_size", &s->step_size);
    if (!rc) rc = qat_h5_attr_read_f64(sg, "gamma", &s->gamma);
    if (!rc) rc = qat_h5_attr_read_i64(sg, "warmup_steps", &s->warmup_steps);
    if (!rc && qat_schedule_check(s) != QAT_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", qat_last_error());
        rc = qat_h5_fail(QAT_ERR_FORMAT, sg, "group", NULL, "invalid schedule: %s", why);
    }
    H5Gclose(sg);
    return rc;
}

static int finite_nonneg(double v) { return isfinite(v) && v >= 0.0; }

int qat_io_optim_stage_read(hid_t file, const char *group, qat_optim *o, qat_io_optim_stage *s)
{
    memset(s, 0, sizeof *s);
    qat_optim_options fo;
    int rc = qat_io_read_optim_options(file, group, &fo);
    if (rc) return rc;
    hid_t g = qat_h5_group_open(file, group);
    if (g < 0) return (int)g;
    int P = 0;
    rc = check_same_optim(g, &fo, o);
    if (!rc) rc = check_param_names(g, o, &P);
    if (rc) goto done;
    s->n = P;
    s->param_step = qat_calloc((size_t)P + 1, sizeof *s->param_step);
    s->lr_scale = qat_calloc((size_t)P + 1, sizeof *s->lr_scale);
    s->wd = qat_calloc((size_t)P + 1, sizeof *s->wd);
    s->n_state = qat_optim_num_state(o);
    s->state = qat_calloc((size_t)s->n_state + 1, sizeof *s->state);
    if (!s->param_step || !s->lr_scale || !s->wd || !s->state) {
        rc = qat_h5_fail(QAT_ERR_NOMEM, g, "group", NULL, "out of memory");
        goto done;
    }
    rc = qat_h5_attr_read_f64(g, "lr", &s->lr);
    if (!rc && !finite_nonneg(s->lr)) rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "lr %g invalid", s->lr);
    if (!rc) rc = qat_h5_attr_read_i64(g, "step_count", &s->step_count);
    if (!rc && s->step_count < 0)
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "negative step_count %lld", (long long)s->step_count);
    if (!rc) rc = qat_h5_read(g, "param_step", QAT_H5_I64, 1, &P, s->param_step);
    for (int i = 0; i < P && !rc; i++)
        if (s->param_step[i] < 0)
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "param_step", "entry %d is negative", i);
    if (!rc) rc = qat_h5_read(g, "lr_scale", QAT_H5_F64, 1, &P, s->lr_scale);
    for (int i = 0; i < P && !rc; i++)
        if (!finite_nonneg(s->lr_scale[i]))
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "lr_scale", "entry %d (%g) invalid", i, s->lr_scale[i]);
    if (!rc) rc = qat_h5_read(g, "weight_decay", QAT_H5_F64, 1, &P, s->wd);
    for (int i = 0; i < P && !rc; i++)
        if (!finite_nonneg(s->wd[i]))
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "weight_decay", "entry %d (%g) invalid", i, s->wd[i]);
    hid_t stg = rc ? -1 : qat_h5_group_open(g, "state");
    if (!rc && stg < 0) rc = (int)stg;
    for (int i = 0; i < s->n_state && !rc; i++) {
        const char *name = NULL;
        float *data = NULL;
        size_t n = 0;
        int shape[QAT_MAX_DIMS], nd = 0;
        rc = qat_optim_state(o, i, &name, &data, &n);
        if (rc) break;
        state_shape(o, name, n, &nd, shape);
        if (!(s->state[i] = qat_malloc((n ? n : 1) * sizeof(float))))
            rc = qat_h5_fail(QAT_ERR_NOMEM, stg, "dataset", name, "out of memory");
        else
            rc = qat_h5_read(stg, name, QAT_H5_F32, nd, shape, s->state[i]);
    }
    if (stg >= 0) H5Gclose(stg);
    if (!rc) {
        s->has_schedule = qat_h5_exists(g, "schedule");
        if (s->has_schedule) rc = read_schedule(g, &s->schedule);
    }
done:
    H5Gclose(g);
    if (rc) qat_io_optim_stage_free(s);
    return rc;
}

void qat_io_optim_commit(const qat_io_optim_stage *s, qat_optim *o)
{
    /* every value was checked while staging, so these cannot fail */
    qat_optim_set_step_count(o, s->step_count);
    qat_optim_set_lr(o, s->lr);
    size_t n = 0;
    int64_t *steps = qat_optim_param_steps(o, &n);
    if (steps && n == (size_t)s->n) memcpy(steps, s->param_step, n * sizeof *steps);
    for (int i = 0; i < s->n; i++) qat_optim_set_group(o, i, 1, s->lr_scale[i], s->wd[i]);
    for (int i = 0; i < s->n_state; i++) {
        const char *name = NULL;
        float *data = NULL;
        size_t len = 0;
        if (qat_optim_state(o, i, &name, &data, &len) == QAT_OK) memcpy(data, s->state[i], len * sizeof(float));
    }
    qat_optim_set_schedule(o, s->has_schedule ? &s->schedule : NULL);
}
