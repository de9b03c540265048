/* Float checkpoints (qat/io.h): save, load, rebuild, inspect. The sections
 * are in model_io.c, optim_io.c and train_io.c; layout in docs/FORMAT.md. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

static const char *const float_kinds[] = {QAT_FORMAT_FLOAT_CHECKPOINT, NULL};
/* Kinds whose /optim section is the float checkpoint's: QAT/PTQ
 * checkpoints (qat/qio.h) store their optimizer the same way. */
static const char *const optim_kinds[] = {QAT_FORMAT_FLOAT_CHECKPOINT, "qat-checkpoint", NULL};

typedef struct save_ctx {
    const qat_model *m;
    qat_optim *o;
    const qat_train_state *st;
} save_ctx;

static int write_checkpoint(hid_t f, void *p)
{
    const save_ctx *c = p;
    int rc = qat_h5_write_format(f, QAT_FORMAT_FLOAT_CHECKPOINT, QAT_FORMAT_VERSION);
    if (!rc) rc = qat_h5_attr_write_str(f, "arch", qat_model_arch(c->m));
    if (!rc) rc = qat_io_write_model(f, "/model", c->m);
    if (!rc && c->o) rc = qat_io_write_optim(f, "/optim", c->o);
    if (!rc && c->st) rc = qat_io_write_train(f, c->st);
    return rc;
}

int qat_checkpoint_save(const char *path, const qat_model *m, qat_optim *o, const qat_train_state *st)
{
    if (!path || !m) return qat_error(QAT_ERR_ARG, "qat_checkpoint_save: %s is NULL", path ? "model" : "path");
    save_ctx c = {m, o, st};
    return qat_h5_save_atomic(path, write_checkpoint, &c);
}

/* Opens a checkpoint and checks its kind (one of kinds) and version. */
static hid_t open_checkpoint(const char *path, const char *const *kinds)
{
    hid_t f = qat_h5_open_read(path);
    if (f < 0) return f;
    int rc = qat_h5_read_format(f, kinds, QAT_FORMAT_VERSION, NULL, 0, NULL);
    if (rc) {
        H5Fclose(f);
        return rc;
    }
    return f;
}

/* A section the caller asked for must be present. */
static int need_section(hid_t f, const char *path, const char *group, const char *what)
{
    if (qat_h5_exists(f, group)) return QAT_OK;
    return qat_error(QAT_ERR_FORMAT, "%s: holds no %s (group %s missing)", path, what, group);
}

/* When the graph check fails between different architectures, say so. */
static void mention_arch(hid_t f, const qat_model *m)
{
    char arch[QAT_NAME_MAX], msg[512];
    if (qat_h5_attr_exists(f, "arch") != 1) return;
    snprintf(msg, sizeof msg, "%s", qat_last_error());
    if (qat_h5_attr_read_str(f, "arch", arch, sizeof arch) == QAT_OK && strcmp(arch, qat_model_arch(m)) != 0)
        qat_error(QAT_ERR_FORMAT, "%s (checkpoint arch '%s', model arch '%s')", msg, arch, qat_model_arch(m));
    else
        qat_error(QAT_ERR_FORMAT, "%s", msg);
}

int qat_checkpoint_load(const char *path, qat_model *m, qat_optim *o, qat_train_state *st)
{
    if (!path || !m) return qat_error(QAT_ERR_ARG, "qat_checkpoint_load: %s is NULL", path ? "model" : "path");
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    qat_io_model_stage ms;
    qat_io_optim_stage os;
    qat_train_state ts;
    memset(&ms, 0, sizeof ms);
    memset(&os, 0, sizeof os);
    qat_train_state_init(&ts);
    int rc;
    hid_t f = open_checkpoint(path, float_kinds);
    if (f < 0) {
        rc = (int)f;
        goto done;
    }
    rc = qat_io_model_stage_read(f, "/model", m, &ms);
    if (rc == QAT_ERR_FORMAT) mention_arch(f, m);
    if (!rc && o) rc = need_section(f, path, "/optim", "optimizer state");
    if (!rc && o) rc = qat_io_optim_stage_read(f, "/optim", o, &os);
    if (!rc && st) rc = need_section(f, path, "/train", "training state");
    if (!rc && st) rc = qat_io_read_train(f, &ts);
    if (!rc) {
        qat_io_model_commit(&ms, m);
        if (o) qat_io_optim_commit(&os, o);
        if (st) {
            qat_train_state_free(st);
            *st = ts;
            qat_train_state_init(&ts);
        }
    }
    int crc = qat_h5_close(f, path);
    if (!rc) rc = crc;
done:
    qat_io_model_stage_free(&ms);
    qat_io_optim_stage_free(&os);
    qat_train_state_free(&ts);
    qat_h5_quiet_end(&q);
    return rc;
}

qat_model *qat_model_load(const char *path)
{
    if (!path) return qat_error_null(QAT_ERR_ARG, "qat_model_load: path is NULL");
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    qat_model *m = NULL;
    qat_io_graph g = {0, NULL};
    qat_io_model_stage ms;
    memset(&ms, 0, sizeof ms);
    char arch[QAT_NAME_MAX] = "custom";
    hid_t f = open_checkpoint(path, float_kinds);
    int rc = f < 0 ? (int)f : QAT_OK;
    if (!rc && qat_h5_attr_exists(f, "arch") == 1) rc = qat_h5_attr_read_str(f, "arch", arch, sizeof arch);
    if (!rc) rc = qat_io_read_graph(f, "/model", &g);
    if (!rc && !(m = qat_io_build_graph(f, &g))) rc = QAT_ERR_FORMAT;
    if (!rc) rc = qat_io_model_stage_read(f, "/model", m, &ms);
    if (!rc) rc = qat_io_read_input_norm(f, "/model", m);
    if (!rc) {
        qat_io_model_commit(&ms, m);
        qat_model_set_arch(m, arch);
    }
    if (f >= 0) {
        int crc = qat_h5_close(f, path);
        if (!rc) rc = crc;
    }
    qat_io_model_stage_free(&ms);
    qat_io_graph_free(&g);
    qat_h5_quiet_end(&q);
    if (rc) {
        qat_model_free(m);
        return NULL;
    }
    return m;
}

qat_optim *qat_optim_load(const char *path, const qat_named_tensor *params, int n)
{
    if (!path) return qat_error_null(QAT_ERR_ARG, "qat_optim_load: path is NULL");
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    qat_optim *o = NULL;
    qat_io_optim_stage os;
    memset(&os, 0, sizeof os);
    qat_optim_options opts;
    hid_t f = open_checkpoint(path, optim_kinds);
    int rc = f < 0 ? (int)f : QAT_OK;
    if (!rc) rc = need_section(f, path, "/optim", "optimizer state");
    if (!rc) rc = qat_io_read_optim_options(f, "/optim", &opts);
    if (!rc && !(o = qat_optim_create(params, n, &opts))) {
        char why[400];
        snprintf(why, sizeof why, "%s", qat_last_error());
        rc = qat_error(QAT_ERR_FORMAT, "%s: cannot create the stored optimizer: %s", path, why);
    }
    if (!rc) rc = qat_io_optim_stage_read(f, "/optim", o, &os);
    if (!rc) qat_io_optim_commit(&os, o);
    if (f >= 0) {
        int crc = qat_h5_close(f, path);
        if (!rc) rc = crc;
    }
    qat_io_optim_stage_free(&os);
    qat_h5_quiet_end(&q);
    if (rc) {
        qat_optim_free(o);
        return NULL;
    }
    return o;
}

/* Fills the parts of *info that come from the model graph. */
static int info_graph(hid_t f, qat_file_info *info)
{
    int nd = 0, n = 0;
    if (!qat_h5_exists(f, "/model/graph/name")) return QAT_OK;
    int rc = qat_h5_shape(f, "/model/graph/name", QAT_H5_STR, 1, &nd, &n);
    if (rc) return rc;
    if (nd != 1 || n < 1) return qat_h5_fail(QAT_ERR_FORMAT, f, "dataset", "/model/graph/name", "malformed");
    int32_t first[3];
    hid_t ds = H5Dopen2(f, "/model/graph/out_shape", H5P_DEFAULT);
    if (ds < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, f, "dataset", "/model/graph/out_shape", "cannot open");
    /* read row 0 only: the input's (C,H,W) */
    hid_t space = H5Dget_space(ds), ft = H5Dget_type(ds);
    hsize_t dims[2] = {0, 0}, start[2] = {0, 0}, count[2] = {1, 3};
    int ok = space >= 0 && ft >= 0 && H5Tget_class(ft) == H5T_INTEGER && H5Sget_simple_extent_ndims(space) == 2 &&
             H5Sget_simple_extent_dims(space, dims, NULL) == 2 && dims[0] == (hsize_t)n && dims[1] == 3;
    hid_t mem = -1;
    if (ok) {
        mem = H5Screate_simple(2, count, NULL);
        ok = mem >= 0 && H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dread(ds, H5T_NATIVE_INT32, mem, space, H5P_DEFAULT, first) >= 0;
    }
    if (mem >= 0) H5Sclose(mem);
    if (ft >= 0) H5Tclose(ft);
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    if (!ok)
        return qat_h5_fail_hdf5(QAT_ERR_FORMAT, f, "dataset", "/model/graph/out_shape",
                                "not an int32 [%d,3] array or unreadable", n);
    info->num_layers = n;
    for (int k = 0; k < 3; k++) info->input_shape[k] = first[k];
    return QAT_OK;
}

int qat_checkpoint_info(const char *path, qat_file_info *info)
{
    if (!path || !info) return qat_error(QAT_ERR_ARG, "qat_checkpoint_info: NULL argument");
    memset(info, 0, sizeof *info);
    info->epoch = -1;
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    hid_t f = qat_h5_open_read(path);
    int rc = f < 0 ? (int)f : QAT_OK;
    if (!rc)
        rc = qat_h5_read_format(f, NULL, INT_MAX, info->format, sizeof info->format, &info->format_version);
    if (!rc && qat_h5_attr_exists(f, "arch") == 1) rc = qat_h5_attr_read_str(f, "arch", info->arch, sizeof info->arch);
    if (!rc) rc = info_graph(f, info);
    if (!rc && qat_h5_exists(f, "/model/params")) {
        int n = qat_h5_group_count(f, "/model/params");
        if (n < 0) rc = n;
        else info->num_params = n;
    }
    if (!rc) info->has_optim = qat_h5_exists(f, "/optim");
    if (!rc) info->has_train = qat_h5_exists(f, "/train");
    if (!rc && info->has_train) {
        hid_t g = qat_h5_group_open(f, "/train");
        rc = g < 0 ? (int)g : qat_h5_attr_read_i32(g, "epoch", &info->epoch);
        if (g >= 0) H5Gclose(g);
    }
    if (!rc && qat_h5_exists(f, "/history/epoch")) {
        int nd = 0, n = 0;
        rc = qat_h5_shape(f, "/history/epoch", QAT_H5_I32, 1, &nd, &n);
        if (!rc) info->num_history = nd == 1 ? n : 0;
    }
    if (f >= 0) {
        int crc = qat_h5_close(f, path);
        if (!rc) rc = crc;
    }
    qat_h5_quiet_end(&q);
    return rc;
}
