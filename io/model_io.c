/* The model section of a checkpoint: the graph description, parameters
 * and BN buffers (layout in docs/FORMAT.md). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

/* Integer columns of <group>/graph, one int32 per layer. */
static const struct {
    const char *name;
    size_t off;
    int optional; /* absent in files written before it existed */
} int_cols[] = {
    {"n_inputs", offsetof(qat_io_layer, n_inputs), 0},
    {"out_ndim", offsetof(qat_io_layer, out_ndim), 0},
    {"in_ch", offsetof(qat_io_layer, in_ch), 0},
    {"out_ch", offsetof(qat_io_layer, out_ch), 0},
    {"kernel", offsetof(qat_io_layer, kernel), 0},
    {"stride", offsetof(qat_io_layer, stride), 0},
    {"pad", offsetof(qat_io_layer, pad), 0},
    {"has_bias", offsetof(qat_io_layer, has_bias), 0},
    {"groups", offsetof(qat_io_layer, groups), 1},
    {"clamp_channels", offsetof(qat_io_layer, clamp_channels), 1},
};
#define N_INT_COLS (sizeof int_cols / sizeof int_cols[0])

static int *col_int(qat_io_layer *l, size_t k) { return (int *)(void *)((char *)l + int_cols[k].off); }
static int col_int_c(const qat_io_layer *l, size_t k)
{
    return *(const int *)(const void *)((const char *)l + int_cols[k].off);
}

static void from_model(const qat_layer *l, qat_io_layer *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", l->name);
    const char *tn = qat_layer_type_name(l->type);
    snprintf(o->type_name, sizeof o->type_name, "%s", tn ? tn : "?");
    o->type = (int)l->type;
    o->n_inputs = l->n_inputs;
    for (int k = 0; k < 2; k++) o->inputs[k] = k < l->n_inputs ? l->inputs[k] : -1;
    o->out_ndim = l->out_ndim;
    for (int k = 0; k < 3; k++) o->out_shape[k] = k < l->out_ndim ? l->out_shape[k] : 0;
    o->in_ch = l->in_ch;
    o->out_ch = l->out_ch;
    o->kernel = l->kernel;
    o->stride = l->stride;
    o->pad = l->pad;
    o->has_bias = l->has_bias;
    o->bn_eps = l->bn_eps;
    o->bn_momentum = l->bn_momentum;
    o->groups = l->groups;
    o->clamp_channels = l->clamp_hi_c != NULL;
    o->clamp_lo = l->clamp_lo;
    o->clamp_hi = l->clamp_hi;
}

static void free_stage_arrays(float **a, int n)
{
    if (!a) return;
    for (int i = 0; i < n; i++) free(a[i]);
    free(a);
}

/* ---- writing ---- */

/* Refuses what HDF5 cannot hold or what a failed build left behind. */
static int check_writable(hid_t file, const qat_model *m)
{
    char fname[256];
    qat_h5_file_name(file, fname, sizeof fname);
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        if (strchr(l->name, '/'))
            return qat_error(QAT_ERR_ARG, "%s: layer %d name '%s' contains '/', which HDF5 names cannot hold",
                             fname, i, l->name);
        int needs_w = l->type == QAT_LAYER_CONV2D || l->type == QAT_LAYER_LINEAR ||
                      l->type == QAT_LAYER_BATCHNORM2D;
        if ((needs_w && !l->weight) || (l->has_bias && !l->bias) ||
            (l->type == QAT_LAYER_BATCHNORM2D && (!l->bias || !l->running_mean || !l->running_var)))
            return qat_error(QAT_ERR_ARG, "%s: layer %d '%s' is missing its tensors (did building the model fail?)",
                             fname, i, l->name);
        if (!qat_layer_type_name(l->type))
            return qat_error(QAT_ERR_ARG, "%s: layer %d '%s' has unknown type %d", fname, i, l->name, (int)l->type);
    }
    if (!qat_model_params(m) || !qat_model_buffers(m))
        return qat_error(QAT_ERR_NOMEM, "%s: out of memory listing the model's parameters", fname);
    return QAT_OK;
}

static int write_graph(hid_t gg, const qat_io_layer *ls, int n)
{
    int rc = QAT_OK;
    const char **names = qat_malloc((size_t)n * sizeof *names), **types = qat_malloc((size_t)n * sizeof *types);
    int32_t *col = qat_malloc((size_t)n * 3 * sizeof *col);
    float *fcol = qat_malloc((size_t)n * sizeof *fcol);
    if (!names || !types || !col || !fcol) {
        rc = qat_h5_fail(QAT_ERR_NOMEM, gg, "group", NULL, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        names[i] = ls[i].name;
        types[i] = ls[i].type_name;
    }
    rc = qat_h5_write_strings(gg, "name", n, names);
    if (!rc) rc = qat_h5_write_strings(gg, "type", n, types);
    for (size_t k = 0; k < N_INT_COLS && !rc; k++) {
        for (int i = 0; i < n; i++) col[i] = col_int_c(&ls[i], k);
        rc = qat_h5_write(gg, int_cols[k].name, QAT_H5_I32, 1, &n, col);
    }
    if (!rc) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 2; k++) col[2 * i + k] = ls[i].inputs[k];
        rc = qat_h5_write(gg, "inputs", QAT_H5_I32, 2, (int[]){n, 2}, col);
    }
    if (!rc) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 3; k++) col[3 * i + k] = ls[i].out_shape[k];
        rc = qat_h5_write(gg, "out_shape", QAT_H5_I32, 2, (int[]){n, 3}, col);
    }
    if (!rc) {
        for (int i = 0; i < n; i++) fcol[i] = ls[i].bn_eps;
        rc = qat_h5_write(gg, "bn_eps", QAT_H5_F32, 1, &n, fcol);
    }
    if (!rc) {
        for (int i = 0; i < n; i++) fcol[i] = ls[i].bn_momentum;
        rc = qat_h5_write(gg, "bn_momentum", QAT_H5_F32, 1, &n, fcol);
    }
    if (!rc) {
        for (int i = 0; i < n; i++) fcol[i] = ls[i].clamp_lo;
        rc = qat_h5_write(gg, "clamp_lo", QAT_H5_F32, 1, &n, fcol);
    }
    if (!rc) {
        for (int i = 0; i < n; i++) fcol[i] = ls[i].clamp_hi;
        rc = qat_h5_write(gg, "clamp_hi", QAT_H5_F32, 1, &n, fcol);
    }
done:
    free(names);
    free(types);
    free(col);
    free(fcol);
    return rc;
}

static void close_groups(hid_t *g, int n)
{
    for (int i = 0; i < n; i++)
        if (g[i] >= 0) H5Gclose(g[i]);
}

int qat_io_write_model(hid_t file, const char *group, const qat_model *m)
{
    int rc = check_writable(file, m);
    if (rc) return rc;
    int n = qat_model_num_layers(m);
    hid_t g[4] = {-1, -1, -1, -1}; /* group, graph, params, buffers */
    qat_io_layer *ls = qat_calloc((size_t)n, sizeof *ls);
    if (!ls) return qat_h5_fail(QAT_ERR_NOMEM, file, "group", group, "out of memory");
    for (int i = 0; i < n; i++) from_model(qat_model_layer_c(m, i), &ls[i]);

    if ((g[0] = qat_h5_group_create(file, group)) < 0 || (g[1] = qat_h5_group_create(g[0], "graph")) < 0 ||
        (g[2] = qat_h5_group_create(g[0], "params")) < 0 || (g[3] = qat_h5_group_create(g[0], "buffers")) < 0) {
        rc = QAT_ERR_IO;
        goto done;
    }
    rc = write_graph(g[1], ls, n);
    float norm[2];
    if (!rc && qat_model_input_norm(m, &norm[0], &norm[1])) { /* the training data's normalisation */
        rc = qat_h5_attr_write(g[0], "input_mean", QAT_H5_F32, 0, &norm[0]);
        if (!rc) rc = qat_h5_attr_write(g[0], "input_std", QAT_H5_F32, 0, &norm[1]);
    }
    const qat_named_tensor *p = qat_model_params(m);
    for (int i = 0; i < qat_model_num_params(m) && !rc; i++)
        rc = qat_h5_write(g[2], p[i].name, QAT_H5_F32, p[i].t->ndim, p[i].t->shape, p[i].t->data);
    const qat_named_tensor *b = qat_model_buffers(m);
    for (int i = 0; i < qat_model_num_buffers(m) && !rc; i++)
        rc = qat_h5_write(g[3], b[i].name, QAT_H5_F32, b[i].t->ndim, b[i].t->shape, b[i].t->data);
    for (int i = 0; i < n && !rc; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        if (l->type != QAT_LAYER_BATCHNORM2D) continue;
        char name[QAT_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s.num_batches_tracked", l->name);
        int64_t v = l->num_batches_tracked;
        rc = qat_h5_write(g[3], name, QAT_H5_I64, 0, NULL, &v);
    }
done:
    close_groups(g, 4);
    free(ls);
    return rc;
}

int qat_io_read_input_norm(hid_t file, const char *group, qat_model *m)
{
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, file, "group", group, "missing");
    int has_mean = qat_h5_attr_exists(g, "input_mean"), has_std = qat_h5_attr_exists(g, "input_std");
    int rc = has_mean < 0 ? has_mean : has_std < 0 ? has_std : QAT_OK;
    if (!rc && has_mean != has_std)
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "attribute", has_mean ? "input_std" : "input_mean",
                         "missing (the other normalisation attribute is present)");
    if (!rc && has_mean) { /* files written before qat stored it have neither */
        float mean = 0, std = 0;
        rc = qat_h5_attr_read(g, "input_mean", QAT_H5_F32, 0, &mean);
        if (!rc) rc = qat_h5_attr_read(g, "input_std", QAT_H5_F32, 0, &std);
        if (!rc && (!(std > 0) || !isfinite(mean) || !isfinite(std)))
            rc = qat_h5_fail(QAT_ERR_FORMAT, g, "attribute", "input_std",
                             "input_mean %g, input_std %g: std must be > 0 and both finite", (double)mean, (double)std);
        if (!rc) rc = qat_model_set_input_norm(m, mean, std);
    }
    H5Gclose(g);
    return rc;
}

/* ---- reading the graph ---- */

void qat_io_graph_free(qat_io_graph *g)
{
    if (!g) return;
    free(g->layers);
    g->layers = NULL;
    g->n = 0;
}

static int expected_inputs(int type)
{
    return type == QAT_LAYER_INPUT ? 0 : type == QAT_LAYER_ADD || type == QAT_LAYER_CONCAT ? 2 : 1;
}

/* Checks one stored layer on its own (and against earlier ones). */
static int validate_layer(hid_t gg, const qat_io_graph *g, int i)
{
    const qat_io_layer *l = &g->layers[i];
    if (!l->name[0]) return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "name", "layer %d has an empty name", i);
    if (l->type < 0)
        return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "type", "layer %d '%s' has unknown type '%s'", i, l->name,
                           l->type_name);
    if ((i == 0) != (l->type == QAT_LAYER_INPUT))
        return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "type", "layer %d '%s' is %s; %s", i, l->name,
                           l->type_name, i == 0 ? "layer 0 must be the input" : "only layer 0 may be the input");
    if (l->n_inputs != expected_inputs(l->type))
        return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "n_inputs", "layer %d '%s' (%s) has %d inputs, expected %d",
                           i, l->name, l->type_name, l->n_inputs, expected_inputs(l->type));
    for (int k = 0; k < l->n_inputs; k++)
        if (l->inputs[k] < 0 || l->inputs[k] >= i)
            return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "inputs",
                               "layer %d '%s' reads layer %d, not an earlier layer", i, l->name, l->inputs[k]);
    if (l->out_ndim != 1 && l->out_ndim != 3)
        return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "out_ndim", "layer %d '%s': output rank %d, expected 1 or 3",
                           i, l->name, l->out_ndim);
    for (int k = 0; k < l->out_ndim; k++)
        if (l->out_shape[k] <= 0)
            return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "out_shape", "layer %d '%s': output size %d invalid", i,
                               l->name, l->out_shape[k]);
    for (int j = 0; j < i; j++)
        if (strcmp(g->layers[j].name, l->name) == 0)
            return qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "name", "layers %d and %d are both named '%s'", j, i,
                               l->name);
    return QAT_OK;
}

int qat_io_read_graph(hid_t file, const char *group, qat_io_graph *g)
{
    g->n = 0;
    g->layers = NULL;
    hid_t gm = qat_h5_group_open(file, group);
    if (gm < 0) return (int)gm;
    hid_t gg = qat_h5_group_open(gm, "graph");
    H5Gclose(gm);
    if (gg < 0) return (int)gg;
    int nd = 0, n = 0, rc;
    char *names = NULL, *types = NULL;
    int32_t *col = NULL;
    float *fcol = NULL;
    rc = qat_h5_shape(gg, "name", QAT_H5_STR, 1, &nd, &n);
    if (!rc && nd != 1) rc = qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "name", "is a scalar, expected a 1-D array");
    if (!rc && n < 1) rc = qat_h5_fail(QAT_ERR_FORMAT, gg, "dataset", "name", "is empty (a model has an input layer)");
    if (rc) goto done;
    g->layers = qat_calloc((size_t)n, sizeof *g->layers);
    names = qat_calloc((size_t)n, QAT_NAME_MAX);
    types = qat_calloc((size_t)n, 32);
    col = qat_calloc((size_t)n * 3, sizeof *col);
    fcol = qat_calloc((size_t)n, sizeof *fcol);
    if (!g->layers || !names || !types || !col || !fcol) {
        rc = qat_h5_fail(QAT_ERR_NOMEM, gg, "group", NULL, "out of memory for %d layers", n);
        goto done;
    }
    g->n = n;
    rc = qat_h5_read_strings(gg, "name", n, QAT_NAME_MAX, names);
    if (!rc) rc = qat_h5_read_strings(gg, "type", n, 32, types);
    for (int i = 0; i < n && !rc; i++) {
        qat_io_layer *l = &g->layers[i];
        memcpy(l->name, names + (size_t)i * QAT_NAME_MAX, QAT_NAME_MAX);
        memcpy(l->type_name, types + (size_t)i * 32, 32);
        l->type = qat_layer_type_from_name(l->type_name);
    }
    for (size_t k = 0; k < N_INT_COLS && !rc; k++) {
        if (int_cols[k].optional && qat_h5_exists(gg, int_cols[k].name) != 1) {
            /* older files: dense convolutions, no per-channel clamps */
            for (int i = 0; i < n; i++)
                *col_int(&g->layers[i], k) =
                    strcmp(int_cols[k].name, "groups") == 0 && g->layers[i].type == QAT_LAYER_CONV2D;
            continue;
        }
        rc = qat_h5_read(gg, int_cols[k].name, QAT_H5_I32, 1, &n, col);
        for (int i = 0; i < n && !rc; i++) *col_int(&g->layers[i], k) = col[i];
    }
    if (!rc) rc = qat_h5_read(gg, "inputs", QAT_H5_I32, 2, (int[]){n, 2}, col);
    for (int i = 0; i < n && !rc; i++)
        for (int k = 0; k < 2; k++) g->layers[i].inputs[k] = col[2 * i + k];
    if (!rc) rc = qat_h5_read(gg, "out_shape", QAT_H5_I32, 2, (int[]){n, 3}, col);
    for (int i = 0; i < n && !rc; i++)
        for (int k = 0; k < 3; k++) g->layers[i].out_shape[k] = col[3 * i + k];
    if (!rc) rc = qat_h5_read(gg, "bn_eps", QAT_H5_F32, 1, &n, fcol);
    for (int i = 0; i < n && !rc; i++) g->layers[i].bn_eps = fcol[i];
    if (!rc) rc = qat_h5_read(gg, "bn_momentum", QAT_H5_F32, 1, &n, fcol);
    for (int i = 0; i < n && !rc; i++) g->layers[i].bn_momentum = fcol[i];
    /* clamp bounds: absent in files written before clamp layers existed */
    if (!rc && qat_h5_exists(gg, "clamp_lo") == 1) {
        rc = qat_h5_read(gg, "clamp_lo", QAT_H5_F32, 1, &n, fcol);
        for (int i = 0; i < n && !rc; i++) g->layers[i].clamp_lo = fcol[i];
        if (!rc) rc = qat_h5_read(gg, "clamp_hi", QAT_H5_F32, 1, &n, fcol);
        for (int i = 0; i < n && !rc; i++) g->layers[i].clamp_hi = fcol[i];
    }
    for (int i = 0; i < n && !rc; i++) rc = validate_layer(gg, g, i);
done:
    free(names);
    free(types);
    free(col);
    free(fcol);
    H5Gclose(gg);
    if (rc) qat_io_graph_free(g);
    return rc;
}

/* ---- comparing ---- */

static void shape_str(char *buf, size_t n, int ndim, const int *s)
{
    if (ndim == 3)
        snprintf(buf, n, "(%d,%d,%d)", s[0], s[1], s[2]);
    else
        snprintf(buf, n, "(%d)", s[0]);
}

static void inputs_str(char *buf, size_t n, const qat_io_layer *l, const char *n0, const char *n1)
{
    if (l->n_inputs == 0)
        snprintf(buf, n, "nothing");
    else if (l->n_inputs == 1)
        snprintf(buf, n, "layer %d '%s'", l->inputs[0], n0);
    else
        snprintf(buf, n, "layers %d '%s' and %d '%s'", l->inputs[0], n0, l->inputs[1], n1);
}

/* Human name of an integer hyperparameter of a layer type, and whether it
 * reads as a count ("6 output channels") or a setting ("stride 2"). */
static const char *field_label(int type, size_t k, int *count)
{
    const char *c = int_cols[k].name;
    *count = 0;
    if (strcmp(c, "in_ch") == 0) {
        *count = 1;
        return type == QAT_LAYER_LINEAR ? "input features" : "input channels";
    }
    if (strcmp(c, "out_ch") == 0) {
        *count = 1;
        return type == QAT_LAYER_LINEAR ? "output features" : type == QAT_LAYER_CONV2D ? "output channels" : "channels";
    }
    if (strcmp(c, "kernel") == 0) return type == QAT_LAYER_UPSAMPLE ? "factor" : "kernel size";
    if (strcmp(c, "clamp_channels") == 0) return "per-channel bounds (0/1)";
    if (strcmp(c, "pad") == 0) return "padding";
    return c;
}

/* Which integer hyperparameters define a layer of this type. */
static int field_used(int type, const char *col)
{
    switch (type) {
    case QAT_LAYER_CONV2D:
        return !strcmp(col, "in_ch") || !strcmp(col, "out_ch") || !strcmp(col, "kernel") ||
               !strcmp(col, "stride") || !strcmp(col, "pad") || !strcmp(col, "has_bias") || !strcmp(col, "groups");
    case QAT_LAYER_LINEAR: return !strcmp(col, "in_ch") || !strcmp(col, "out_ch") || !strcmp(col, "has_bias");
    case QAT_LAYER_BATCHNORM2D: return !strcmp(col, "out_ch");
    case QAT_LAYER_MAXPOOL2D:
    case QAT_LAYER_AVGPOOL2D: return !strcmp(col, "kernel") || !strcmp(col, "stride");
    case QAT_LAYER_UPSAMPLE: return !strcmp(col, "kernel");
    case QAT_LAYER_CLAMP: return !strcmp(col, "clamp_channels");
    default: return 0;
    }
}

/* The first difference between stored layer f and model layer ml (both at
 * index i) into msg; 0 if they match. */
static int layer_diff(const qat_io_graph *g, const qat_model *m, int i, char *msg, size_t n)
{
    const qat_io_layer *f = &g->layers[i];
    qat_io_layer l;
    from_model(qat_model_layer_c(m, i), &l);
    if (f->type != l.type) {
        snprintf(msg, n, "checkpoint layer %d '%s' is %s, model layer %d '%s' is %s", i, f->name, f->type_name, i,
                 l.name, l.type_name);
        return 1;
    }
    if (strcmp(f->name, l.name) != 0) {
        snprintf(msg, n, "checkpoint layer %d is %s '%s', model layer %d is named '%s'", i, f->type_name, f->name, i,
                 l.name);
        return 1;
    }
    int same_in = f->n_inputs == l.n_inputs;
    for (int k = 0; same_in && k < f->n_inputs; k++) same_in = f->inputs[k] == l.inputs[k];
    if (!same_in) {
        char a[160], b[160];
        inputs_str(a, sizeof a, f, g->layers[f->inputs[0]].name,
                   f->n_inputs > 1 ? g->layers[f->inputs[1]].name : "");
        const qat_layer *ml = qat_model_layer_c(m, i);
        inputs_str(b, sizeof b, &l, l.n_inputs > 0 ? qat_model_layer_c(m, ml->inputs[0])->name : "",
                   l.n_inputs > 1 ? qat_model_layer_c(m, ml->inputs[1])->name : "");
        snprintf(msg, n, "checkpoint layer %d '%s' reads %s, model reads %s", i, f->name, a, b);
        return 1;
    }
    for (size_t k = 0; k < N_INT_COLS; k++) {
        if (!field_used(f->type, int_cols[k].name)) continue;
        int a = col_int_c(f, k), b = col_int_c(&l, k), count;
        if (a == b) continue;
        const char *label = field_label(f->type, k, &count);
        if (strcmp(int_cols[k].name, "has_bias") == 0)
            snprintf(msg, n, "checkpoint layer %d '%s' is %s %s bias, model's is %s", i, f->name, f->type_name,
                     a ? "with" : "without", b ? "with" : "without");
        else if (count)
            snprintf(msg, n, "checkpoint layer %d '%s' is %s with %d %s, model has %d", i, f->name, f->type_name, a,
                     label, b);
        else
            snprintf(msg, n, "checkpoint layer %d '%s' is %s with %s %d, model has %d", i, f->name, f->type_name,
                     label, a, b);
        return 1;
    }
    if (f->type == QAT_LAYER_BATCHNORM2D) {
        /* compare the bits: these are the values BN computes with */
        if (memcmp(&f->bn_eps, &l.bn_eps, sizeof(float)) != 0) {
            snprintf(msg, n, "checkpoint layer %d '%s' is batchnorm2d with eps %.9g, model has %.9g", i, f->name,
                     (double)f->bn_eps, (double)l.bn_eps);
            return 1;
        }
        if (memcmp(&f->bn_momentum, &l.bn_momentum, sizeof(float)) != 0) {
            snprintf(msg, n, "checkpoint layer %d '%s' is batchnorm2d with momentum %.9g, model has %.9g", i, f->name,
                     (double)f->bn_momentum, (double)l.bn_momentum);
            return 1;
        }
    }
    if (f->type == QAT_LAYER_CLAMP &&
        (memcmp(&f->clamp_lo, &l.clamp_lo, sizeof(float)) != 0 || memcmp(&f->clamp_hi, &l.clamp_hi, sizeof(float)) != 0)) {
        snprintf(msg, n, "checkpoint layer %d '%s' is clamp to [%.9g, %.9g], model's to [%.9g, %.9g]", i, f->name,
                 (double)f->clamp_lo, (double)f->clamp_hi, (double)l.clamp_lo, (double)l.clamp_hi);
        return 1;
    }
    int same_out = f->out_ndim == l.out_ndim;
    for (int k = 0; same_out && k < f->out_ndim; k++) same_out = f->out_shape[k] == l.out_shape[k];
    if (!same_out) {
        char a[64], b[64];
        shape_str(a, sizeof a, f->out_ndim, f->out_shape);
        shape_str(b, sizeof b, l.out_ndim, l.out_shape);
        if (i == 0)
            snprintf(msg, n, "checkpoint input is %s, model input is %s", a, b);
        else
            snprintf(msg, n, "checkpoint layer %d '%s' (%s) outputs %s, model's outputs %s", i, f->name, f->type_name,
                     a, b);
        return 1;
    }
    return 0;
}

int qat_io_check_graph(hid_t file, const qat_io_graph *g, const qat_model *m)
{
    char fname[256], msg[640];
    qat_h5_file_name(file, fname, sizeof fname);
    int nm = qat_model_num_layers(m);
    int common = g->n < nm ? g->n : nm;
    for (int i = 0; i < common; i++)
        if (layer_diff(g, m, i, msg, sizeof msg)) return qat_error(QAT_ERR_FORMAT, "%s: %s", fname, msg);
    if (g->n > nm)
        return qat_error(QAT_ERR_FORMAT, "%s: checkpoint has %d layers, model has %d: checkpoint layer %d '%s' is extra",
                         fname, g->n, nm, nm, g->layers[nm].name);
    if (nm > g->n)
        return qat_error(QAT_ERR_FORMAT, "%s: checkpoint has %d layers, model has %d: model layer %d '%s' is not in the checkpoint",
                         fname, g->n, nm, g->n, qat_model_layer_c(m, g->n)->name);
    return QAT_OK;
}

/* ---- rebuilding ---- */

/* Sizes a stored graph may ask for before anything is allocated. */
#define MAX_DIM (1 << 16)      /* input H, W, C */
#define MAX_FEATURES (1 << 24) /* channels / features */
#define MAX_KERNEL (1 << 12)   /* kernel, stride, pad */
#define MAX_PARAM_NUMEL 2147483647.0

static int plausible(hid_t file, const qat_io_graph *g, int i)
{
    char fname[256];
    const qat_io_layer *l = &g->layers[i];
    const char *bad = NULL;
    double numel = 0.0;
    if (l->type == QAT_LAYER_INPUT) {
        for (int k = 0; k < 3; k++)
            if (l->out_ndim != 3 || l->out_shape[k] > MAX_DIM) bad = "input shape";
    } else if (l->type == QAT_LAYER_CONV2D || l->type == QAT_LAYER_LINEAR) {
        if (l->out_ch <= 0 || l->out_ch > MAX_FEATURES) bad = "out_ch";
        else if (l->in_ch <= 0 || l->in_ch > MAX_FEATURES) bad = "in_ch";
        else if (l->type == QAT_LAYER_CONV2D && (l->kernel <= 0 || l->kernel > MAX_KERNEL)) bad = "kernel";
        else if (l->type == QAT_LAYER_CONV2D && (l->stride <= 0 || l->stride > MAX_KERNEL)) bad = "stride";
        else if (l->type == QAT_LAYER_CONV2D && (l->pad < 0 || l->pad > MAX_KERNEL)) bad = "pad";
        else if (l->type == QAT_LAYER_CONV2D && (l->groups <= 0 || l->groups > l->in_ch)) bad = "groups";
        numel = (double)l->out_ch * l->in_ch * (l->type == QAT_LAYER_CONV2D ? (double)l->kernel * l->kernel / l->groups : 1.0);
        if (!bad && numel > MAX_PARAM_NUMEL) bad = "weight size";
    } else if (l->type == QAT_LAYER_MAXPOOL2D || l->type == QAT_LAYER_AVGPOOL2D) {
        if (l->kernel <= 0 || l->kernel > MAX_KERNEL) bad = "kernel";
        else if (l->stride <= 0 || l->stride > MAX_KERNEL) bad = "stride";
    } else if (l->type == QAT_LAYER_UPSAMPLE) {
        if (l->kernel <= 0 || l->kernel > 4096) bad = "factor";
    } else if (l->type == QAT_LAYER_CLAMP) {
        if (isnan(l->clamp_lo) || isnan(l->clamp_hi) || l->clamp_lo > l->clamp_hi) bad = "clamp bounds";
    }
    if (!bad) return QAT_OK;
    qat_h5_file_name(file, fname, sizeof fname);
    return qat_error(QAT_ERR_FORMAT, "%s: graph layer %d '%s' (%s) has an implausible %s", fname, i, l->name,
                     l->type_name, bad);
}

qat_model *qat_io_build_graph(hid_t file, const qat_io_graph *g)
{
    char fname[256], why[512];
    qat_h5_file_name(file, fname, sizeof fname);
    for (int i = 0; i < g->n; i++)
        if (plausible(file, g, i)) return NULL;
    const qat_io_layer *in = &g->layers[0];
    qat_model *m = qat_model_create(in->out_shape[0], in->out_shape[1], in->out_shape[2]);
    if (!m) return NULL;
    snprintf(qat_model_layer(m, 0)->name, QAT_NAME_MAX, "%s", in->name);
    for (int i = 1; i < g->n; i++) {
        const qat_io_layer *l = &g->layers[i];
        int a = l->inputs[0], r = -1;
        switch ((qat_layer_type)l->type) {
        case QAT_LAYER_CONV2D:
            r = qat_model_conv2d_grouped(m, l->name, a, l->out_ch, l->kernel, l->stride, l->pad, l->groups,
                                         l->has_bias);
            break;
        case QAT_LAYER_LINEAR: r = qat_model_linear(m, l->name, a, l->out_ch, l->has_bias); break;
        case QAT_LAYER_BATCHNORM2D:
            r = qat_model_batchnorm2d(m, l->name, a);
            if (r >= 0) {
                qat_layer *ml = qat_model_layer(m, r);
                ml->bn_eps = l->bn_eps;
                ml->bn_momentum = l->bn_momentum;
            }
            break;
        case QAT_LAYER_RELU: r = qat_model_relu(m, l->name, a); break;
        case QAT_LAYER_MAXPOOL2D: r = qat_model_maxpool2d(m, l->name, a, l->kernel, l->stride); break;
        case QAT_LAYER_AVGPOOL2D: r = qat_model_avgpool2d(m, l->name, a, l->kernel, l->stride); break;
        case QAT_LAYER_GLOBAL_AVGPOOL: r = qat_model_global_avgpool(m, l->name, a); break;
        case QAT_LAYER_FLATTEN: r = qat_model_flatten(m, l->name, a); break;
        case QAT_LAYER_ADD: r = qat_model_add(m, l->name, a, l->inputs[1]); break;
        case QAT_LAYER_CLAMP:
            r = qat_model_clamp(m, l->name, a, l->clamp_lo, l->clamp_hi);
            if (r >= 0 && l->clamp_channels) { /* the buffer's values are read with the others */
                int C = qat_model_layer(m, r)->out_shape[0];
                float *hi = qat_malloc((size_t)C * sizeof *hi);
                if (!hi) {
                    qat_model_free(m);
                    return qat_error_null(QAT_ERR_NOMEM, "%s: out of memory", fname);
                }
                for (int c = 0; c < C; c++) hi[c] = l->clamp_hi;
                int rc = qat_layer_set_clamp_channels(m, r, hi);
                free(hi);
                if (rc) r = rc;
            }
            break;
        case QAT_LAYER_HARDSWISH: r = qat_model_hardswish(m, l->name, a); break;
        case QAT_LAYER_HARDSIGMOID: r = qat_model_hardsigmoid(m, l->name, a); break;
        case QAT_LAYER_CONCAT: r = qat_model_concat(m, l->name, a, l->inputs[1]); break;
        case QAT_LAYER_UPSAMPLE: r = qat_model_upsample(m, l->name, a, l->kernel); break;
        case QAT_LAYER_INPUT:
        case QAT_LAYER_COUNT: break;
        }
        if (r != i) {
            snprintf(why, sizeof why, "%s", r < 0 ? qat_last_error() : "unexpected layer index");
            qat_model_free(m);
            return qat_error_null(QAT_ERR_FORMAT, "%s: cannot rebuild layer %d '%s' (%s): %s", fname, i, l->name,
                                  l->type_name, why);
        }
    }
    /* the stored output shapes and channel counts must be what the
     * builders derived */
    if (qat_io_check_graph(file, g, m)) {
        snprintf(why, sizeof why, "%s", qat_last_error());
        qat_model_free(m);
        return qat_error_null(QAT_ERR_FORMAT, "%s (the stored graph is inconsistent)", why);
    }
    return m;
}

/* ---- parameters ---- */

void qat_io_model_stage_free(qat_io_model_stage *s)
{
    if (!s) return;
    free_stage_arrays(s->params, s->n_params);
    free_stage_arrays(s->buffers, s->n_buffers);
    free(s->nbt);
    memset(s, 0, sizeof *s);
}

static int is_listed(const qat_named_tensor *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return 1;
    return 0;
}

/* Reads every tensor of list t from group gp into a new array of buffers. */
static int read_tensors(hid_t gp, const qat_named_tensor *t, int n, float ***out)
{
    float **bufs = qat_calloc((size_t)n + 1, sizeof *bufs);
    if (!bufs) return qat_h5_fail(QAT_ERR_NOMEM, gp, "group", NULL, "out of memory");
    *out = bufs;
    for (int i = 0; i < n; i++) {
        bufs[i] = qat_malloc((t[i].t->numel ? t[i].t->numel : 1) * sizeof(float));
        if (!bufs[i]) return qat_h5_fail(QAT_ERR_NOMEM, gp, "dataset", t[i].name, "out of memory");
        int rc = qat_h5_read(gp, t[i].name, QAT_H5_F32, t[i].t->ndim, t[i].t->shape, bufs[i]);
        if (rc) return rc;
    }
    return QAT_OK;
}

/* An entry of group gp that the model does not have: an error. */
static int check_no_extra(hid_t gp, const qat_model *m, const qat_named_tensor *t, int n, int bn_counters)
{
    int count = qat_h5_group_count(gp, ".");
    if (count < 0) return count;
    for (int i = 0; i < count; i++) {
        char name[256];
        int rc = qat_h5_group_name(gp, ".", i, name, sizeof name);
        if (rc) return rc;
        if (is_listed(t, n, name)) continue;
        if (bn_counters) {
            const char *suffix = ".num_batches_tracked";
            size_t ln = strlen(name), ls = strlen(suffix);
            if (ln > ls && strcmp(name + ln - ls, suffix) == 0) {
                char layer[256];
                memcpy(layer, name, ln - ls);
                layer[ln - ls] = '\0';
                int li = qat_model_find(m, layer);
                if (li >= 0 && qat_model_layer_c(m, li)->type == QAT_LAYER_BATCHNORM2D) continue;
            }
        }
        return qat_h5_fail(QAT_ERR_FORMAT, gp, "dataset", name, "is not a %s of the model",
                           bn_counters ? "buffer" : "parameter");
    }
    return QAT_OK;
}

int qat_io_model_stage_read(hid_t file, const char *group, const qat_model *m, qat_io_model_stage *s)
{
    memset(s, 0, sizeof *s);
    qat_io_graph g;
    int rc = qat_io_read_graph(file, group, &g);
    if (rc) return rc;
    rc = qat_io_check_graph(file, &g, m);
    qat_io_graph_free(&g);
    if (rc) return rc;
    const qat_named_tensor *p = qat_model_params(m), *b = qat_model_buffers(m);
    if (!p || !b) return qat_error(QAT_ERR_NOMEM, "out of memory listing the model's parameters");
    int nl = qat_model_num_layers(m);
    hid_t gm = qat_h5_group_open(file, group);
    if (gm < 0) return (int)gm;
    hid_t gp = qat_h5_group_open(gm, "params");
    hid_t gb = gp < 0 ? -1 : qat_h5_group_open(gm, "buffers");
    H5Gclose(gm);
    if (gp < 0 || gb < 0) {
        rc = gp < 0 ? (int)gp : (int)gb;
        goto done;
    }
    s->n_params = qat_model_num_params(m);
    s->n_buffers = qat_model_num_buffers(m);
    s->n_layers = nl;
    rc = read_tensors(gp, p, s->n_params, &s->params);
    if (!rc) rc = read_tensors(gb, b, s->n_buffers, &s->buffers);
    if (!rc && !(s->nbt = qat_calloc((size_t)nl, sizeof *s->nbt)))
        rc = qat_h5_fail(QAT_ERR_NOMEM, gb, "group", NULL, "out of memory");
    for (int i = 0; i < nl && !rc; i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        if (l->type != QAT_LAYER_BATCHNORM2D) continue;
        char name[QAT_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s.num_batches_tracked", l->name);
        rc = qat_h5_read(gb, name, QAT_H5_I64, 0, NULL, &s->nbt[i]);
        if (!rc && s->nbt[i] < 0)
            rc = qat_h5_fail(QAT_ERR_FORMAT, gb, "dataset", name, "negative count %lld", (long long)s->nbt[i]);
    }
    if (!rc) rc = check_no_extra(gp, m, p, s->n_params, 0);
    if (!rc) rc = check_no_extra(gb, m, b, s->n_buffers, 1);
done:
    if (gp >= 0) H5Gclose(gp);
    if (gb >= 0) H5Gclose(gb);
    if (rc) qat_io_model_stage_free(s);
    return rc;
}

void qat_io_model_commit(const qat_io_model_stage *s, qat_model *m)
{
    const qat_named_tensor *p = qat_model_params(m), *b = qat_model_buffers(m);
    for (int i = 0; i < s->n_params; i++) memcpy(p[i].t->data, s->params[i], p[i].t->numel * sizeof(float));
    for (int i = 0; i < s->n_buffers; i++) memcpy(b[i].t->data, s->buffers[i], b[i].t->numel * sizeof(float));
    for (int i = 0; i < s->n_layers; i++) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type == QAT_LAYER_BATCHNORM2D) l->num_batches_tracked = s->nbt[i];
    }
}
