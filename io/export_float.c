/* io/export_float.c: the files of dynamic quantization (qat/dynamic.h):
 * dynamic checkpoints (`qat ptq --dynamic`: a float checkpoint's /model and
 * the options in /dynamic) and int8 model files with float ops
 * (docs/FORMAT-int8.md, "Float ops"), written with the names of
 * qat/format_int8.h that the runtime reads. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "io/io_internal.h"
#include "qat/format_int8.h"
#include "quant/dynamic_graph.h"

static const char *const dg_type_names[] = {
    [DG_INPUT] = QAT_I8_OP_INPUT,
    [DG_CONV2D] = QAT_I8_OP_CONV2D,
    [DG_LINEAR] = QAT_I8_OP_LINEAR,
    [DG_ADD] = QAT_I8_OP_ADD,
    [DG_GLOBAL_AVGPOOL] = QAT_I8_OP_GLOBAL_AVGPOOL,
    [DG_AVGPOOL2D] = QAT_I8_OP_AVGPOOL2D,
    [DG_MAXPOOL2D] = QAT_I8_OP_MAXPOOL2D,
    [DG_RELU] = QAT_I8_OP_RELU,
    [DG_FLATTEN] = QAT_I8_OP_FLATTEN,
};
_Static_assert(sizeof dg_type_names / sizeof dg_type_names[0] == DG_COUNT, "one name per op kind");

/* a uint16 dataset (binary16 bits): h5util has no uint16 type */
static int write_u16(hid_t g, const char *name, int ndim, const int *shape, const uint16_t *v)
{
    hsize_t d[4];
    for (int k = 0; k < ndim; k++) d[k] = (hsize_t)shape[k];
    hid_t sp = H5Screate_simple(ndim, d, NULL);
    hid_t ds = sp >= 0 ? H5Dcreate2(g, name, H5T_STD_U16LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int rc = QAT_OK;
    if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_IO, g, "dataset", name, "cannot write");
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int write_op(hid_t ops, int i, const dg_op *o, int digits)
{
    char name[16];
    snprintf(name, sizeof name, "%0*d", digits, i);
    hid_t h = qat_h5_group_create(ops, name);
    if (h < 0) return (int)h;
    const float one = 1.0f;
    int rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_TYPE, dg_type_names[o->kind]);
    if (!rc) rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_NAME, o->name);
    if (!rc && o->n_in) rc = qat_h5_attr_write(h, QAT_I8_ATTR_INPUTS, QAT_H5_I32, o->n_in, o->in);
    if (!rc && !o->n_in) { /* an empty inputs attribute, as io/export.c writes it */
        hsize_t zero = 0;
        hid_t sp = H5Screate_simple(1, &zero, NULL);
        hid_t a = H5Acreate2(h, QAT_I8_ATTR_INPUTS, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) rc = qat_h5_fail_hdf5(QAT_ERR_IO, h, "attribute", QAT_I8_ATTR_INPUTS, "cannot create");
        if (a >= 0) H5Aclose(a);
        H5Sclose(sp);
    }
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_OUT_SHAPE, QAT_H5_I32, o->out_ndim, o->out_shape);
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_OUT_SCALE, QAT_H5_F32, 0, &one); /* ignored by float ops */
    if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_OUT_ZP, 0);
    if (!rc)
        rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_DTYPE, o->f16    ? QAT_I8_DTYPE_FLOAT16
                                                         : o->bf16 ? QAT_I8_DTYPE_BFLOAT16
                                                                   : QAT_I8_DTYPE_FLOAT32);
    if (rc) goto done;
    switch (o->kind) {
    case DG_INPUT:
        rc = qat_h5_attr_write(h, QAT_I8_ATTR_MEAN, QAT_H5_F32, 0, &o->mean);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_STD, QAT_H5_F32, 0, &o->std);
        break;
    case DG_CONV2D:
    case DG_LINEAR: {
        const int conv = o->kind == DG_CONV2D;
        int wshape[4] = {o->oc, o->ic, o->kh, o->kw};
        if (conv) {
            rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
            if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_PAD, o->pad);
        }
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_RELU, o->relu);
        const char *wd = o->wdt == DG_W_I8    ? QAT_I8_WDTYPE_INT8
                         : o->wdt == DG_W_F16  ? QAT_I8_DTYPE_FLOAT16
                         : o->wdt == DG_W_BF16 ? QAT_I8_DTYPE_BFLOAT16
                                               : QAT_I8_DTYPE_FLOAT32;
        if (!rc) rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_WEIGHT_DTYPE, wd);
        if (rc) break;
        if (o->wdt == DG_W_I8) {
            rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT, QAT_H5_I8, conv ? 4 : 2, wshape, o->w8);
            if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT_SCALE, QAT_H5_F32, 1, &o->oc, o->wscale);
            if (!rc)
                rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_ACT_QUANT,
                                           o->act_row ? QAT_I8_ACT_QUANT_ROW : QAT_I8_ACT_QUANT_TENSOR);
        } else if (o->wdt == DG_W_F16 || o->wdt == DG_W_BF16) {
            rc = write_u16(h, QAT_I8_DSET_WEIGHT, conv ? 4 : 2, wshape, o->w16);
        } else {
            rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT, QAT_H5_F32, conv ? 4 : 2, wshape, o->w);
        }
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_BIAS, QAT_H5_F32, 1, &o->oc, o->bias);
        break;
    }
    case DG_ADD: rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_RELU, o->relu); break;
    case DG_AVGPOOL2D:
    case DG_MAXPOOL2D:
        rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_KERNEL, o->kernel);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
        break;
    default: break;
    }
done:
    H5Gclose(h);
    return rc;
}

typedef struct {
    const qat_dynmodel *d;
    const char *source;
} dg_job;

static int dg_writer(hid_t file, void *p)
{
    const dg_job *job = p;
    const qat_dynmodel *d = job->d;
    int rc = qat_h5_write_format(file, QAT_I8_FORMAT_NAME, QAT_I8_FORMAT_VERSION);
    if (!rc) rc = qat_h5_attr_write_str(file, QAT_I8_ATTR_ARCH, d->arch);
    if (!rc) rc = qat_h5_attr_write_i32(file, QAT_I8_ATTR_NUM_OPS, d->n);
    if (!rc) rc = qat_h5_attr_write_str(file, QAT_I8_ATTR_SOURCE, job->source ? job->source : "");
    hid_t ops = rc ? -1 : qat_h5_group_create(file, "/" QAT_I8_GROUP_OPS);
    if (!rc && ops < 0) rc = (int)ops;
    int digits = d->n > 1000 ? 4 : 3;
    for (int i = 0; !rc && i < d->n; i++) rc = write_op(ops, i, &d->ops[i], digits);
    if (ops >= 0) H5Gclose(ops);
    return rc;
}

int qat_dg_write(const qat_dynmodel *d, const char *path, const char *source)
{
    if (!d || !path || d->n < 1) return qat_error(QAT_ERR_ARG, "export: empty graph or NULL path");
    dg_job job = {d, source};
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = qat_h5_save_atomic(path, dg_writer, &job);
    qat_h5_quiet_end(&q);
    return rc;
}

int qat_export_dynamic(const qat_model *m, const qat_dynamic_opts *o, const char *path, const char *source)
{
    if (!m || !path) return qat_error(QAT_ERR_ARG, "qat_export_dynamic: NULL model or path");
    qat_dynmodel *d = NULL;
    int rc = qat_dg_build(m, o, &d);
    if (rc) return rc;
    rc = qat_dg_write(d, path, source);
    qat_dynmodel_free(d);
    return rc;
}

/* ---- dynamic checkpoints ---- */

#define DYN_GROUP "/dynamic"

typedef struct {
    const qat_model *m;
    const qat_dynamic_opts *o;
} dyn_save_job;

static int dyn_writer(hid_t f, void *p)
{
    const dyn_save_job *j = p;
    int rc = qat_h5_write_format(f, QAT_FORMAT_DYNAMIC_CHECKPOINT, QAT_FORMAT_VERSION);
    if (!rc) rc = qat_h5_attr_write_str(f, "arch", qat_model_arch(j->m));
    if (!rc) rc = qat_io_write_model(f, "/model", j->m);
    hid_t g = rc ? -1 : qat_h5_group_create(f, DYN_GROUP);
    if (!rc && g < 0) rc = (int)g;
    if (!rc) rc = qat_h5_attr_write_str(g, "quant", qat_dynamic_weights_name(j->o->weights));
    if (!rc) rc = qat_h5_attr_write_str(g, "layers", j->o->all_layers ? "all" : "linear");
    if (!rc) rc = qat_h5_attr_write_str(g, "act", j->o->act_row ? "row" : "tensor");
    if (g >= 0) H5Gclose(g);
    return rc;
}

int qat_dynamic_save(const char *path, const qat_model *m, const qat_dynamic_opts *o)
{
    if (!path || !m || !o) return qat_error(QAT_ERR_ARG, "qat_dynamic_save: NULL argument");
    dyn_save_job j = {m, o};
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = qat_h5_save_atomic(path, dyn_writer, &j);
    qat_h5_quiet_end(&q);
    return rc;
}

qat_model *qat_dynamic_load(const char *path, qat_dynamic_opts *o)
{
    static const char *const kinds[] = {QAT_FORMAT_DYNAMIC_CHECKPOINT, NULL};
    if (!path || !o) return qat_error_null(QAT_ERR_ARG, "qat_dynamic_load: NULL argument");
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    qat_model *m = NULL;
    qat_io_graph g = {0, NULL};
    qat_io_model_stage ms;
    memset(&ms, 0, sizeof ms);
    char arch[QAT_NAME_MAX] = "custom", wq[16] = "", ly[16] = "", act[16] = "";
    hid_t f = qat_h5_open_read(path);
    int rc = f < 0 ? (int)f : qat_h5_read_format(f, kinds, QAT_FORMAT_VERSION, NULL, 0, NULL);
    if (!rc && qat_h5_attr_exists(f, "arch") == 1) rc = qat_h5_attr_read_str(f, "arch", arch, sizeof arch);
    if (!rc) rc = qat_io_read_graph(f, "/model", &g);
    if (!rc && !(m = qat_io_build_graph(f, &g))) rc = QAT_ERR_FORMAT;
    if (!rc) rc = qat_io_model_stage_read(f, "/model", m, &ms);
    if (!rc) rc = qat_io_read_input_norm(f, "/model", m);
    if (!rc) {
        hid_t d = qat_h5_group_open(f, DYN_GROUP);
        if (d < 0) rc = (int)d;
        if (!rc) rc = qat_h5_attr_read_str(d, "quant", wq, sizeof wq);
        if (!rc) rc = qat_h5_attr_read_str(d, "layers", ly, sizeof ly);
        if (!rc) rc = qat_h5_attr_read_str(d, "act", act, sizeof act);
        if (d >= 0) H5Gclose(d);
    }
    if (!rc) {
        *o = qat_dynamic_opts_defaults();
        rc = qat_dynamic_opts_parse(o, wq, ly, act);
        if (rc) rc = qat_error(QAT_ERR_FORMAT, "%s: /dynamic: %s", path, qat_last_error());
    }
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
