/* io/export.c: writes a qmodel's int8 graph (quant/convert.c builds it)
 * as the int8 model file of docs/FORMAT-int8.md, with the names of
 * qat/format_int8.h (the runtime's reader uses the same). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "qat/qio.h"
#include "quant/convert.h"
#include "qat/format_int8.h"

typedef struct {
    const qat_i8graph *g;
    const char *source;
} export_job;

/* ---- writing ---- */

static int write_op(hid_t ops, int i, const qat_i8op *o, int digits)
{
    char name[16];
    snprintf(name, sizeof name, "%0*d", digits, i);
    hid_t h = qat_h5_group_create(ops, name);
    if (h < 0) return (int)h;
    int rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_TYPE, o->type);
    if (!rc) rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_NAME, o->name);
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_INPUTS, QAT_H5_I32, o->n_inputs ? o->n_inputs : 0, o->inputs);
    if (!rc && o->n_inputs == 0) { /* an empty inputs attribute: write a zero-length marker */
        H5Adelete(h, QAT_I8_ATTR_INPUTS);
        hsize_t zero = 0;
        hid_t sp = H5Screate_simple(1, &zero, NULL);
        hid_t a = H5Acreate2(h, QAT_I8_ATTR_INPUTS, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) rc = qat_h5_fail_hdf5(QAT_ERR_IO, h, "attribute", QAT_I8_ATTR_INPUTS, "cannot create");
        if (a >= 0) H5Aclose(a);
        H5Sclose(sp);
    }
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_OUT_SHAPE, QAT_H5_I32, o->out_ndim, o->out_shape);
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_OUT_SCALE, QAT_H5_F32, 0, &o->out_scale);
    if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_OUT_ZP, o->out_zp);
    const char *t = o->type;
    if (!rc && !strcmp(t, QAT_I8_OP_INPUT)) {
        rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_MEAN, QAT_H5_F32, 0, &o->mean);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_STD, QAT_H5_F32, 0, &o->std);
        int n = 256;
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_LUT, QAT_H5_I8, 1, &n, o->lut);
    } else if (!rc && (!strcmp(t, QAT_I8_OP_CONV2D) || !strcmp(t, QAT_I8_OP_LINEAR))) {
        int conv = !strcmp(t, QAT_I8_OP_CONV2D);
        int wshape[4] = {o->oc, o->ic, o->k, o->k};
        if (conv) {
            rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
            if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_PAD, o->pad);
        } else {
            wshape[1] = o->ic;
        }
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_IN_ZP, o->in_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT, QAT_H5_I8, conv ? 4 : 2, wshape, o->weight);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_BIAS, QAT_H5_I32, 1, &o->oc, o->bias);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_MULTIPLIER, QAT_H5_I32, 1, &o->oc, o->mult);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_SHIFT, QAT_H5_I32, 1, &o->oc, o->shift);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT_SCALE, QAT_H5_F32, 1, &o->oc, o->wscale);
    } else if (!rc && !strcmp(t, QAT_I8_OP_ADD)) {
        rc = qat_h5_attr_write(h, QAT_I8_ATTR_MULTIPLIER, QAT_H5_I32, 2, o->add_m);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ADD_SHIFT, o->add_t);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_IN_ZP, QAT_H5_I32, 2, o->add_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
    } else if (!rc && (!strcmp(t, QAT_I8_OP_GLOBAL_AVGPOOL) || !strcmp(t, QAT_I8_OP_AVGPOOL2D))) {
        rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_IN_ZP, o->in_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_MULTIPLIER, o->pool_m);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_SHIFT, o->pool_shift);
        if (!rc && !strcmp(t, QAT_I8_OP_AVGPOOL2D)) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_KERNEL, o->k);
        if (!rc && !strcmp(t, QAT_I8_OP_AVGPOOL2D)) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
    } else if (!rc && !strcmp(t, QAT_I8_OP_MAXPOOL2D)) {
        rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_KERNEL, o->k);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
    }
    H5Gclose(h);
    return rc;
}

static int writer(hid_t file, void *p)
{
    const export_job *job = p;
    const qat_i8graph *g = job->g;
    int rc = qat_h5_write_format(file, QAT_I8_FORMAT_NAME, QAT_I8_FORMAT_VERSION);
    if (!rc) rc = qat_h5_attr_write_str(file, QAT_I8_ATTR_ARCH, g->arch);
    if (!rc) rc = qat_h5_attr_write_i32(file, QAT_I8_ATTR_NUM_OPS, g->n);
    if (!rc) rc = qat_h5_attr_write_str(file, QAT_I8_ATTR_SOURCE, job->source ? job->source : "");
    hid_t ops = rc ? -1 : qat_h5_group_create(file, "/" QAT_I8_GROUP_OPS);
    if (!rc && ops < 0) rc = (int)ops;
    int digits = g->n > 1000 ? 4 : 3;
    for (int i = 0; !rc && i < g->n; i++) rc = write_op(ops, i, &g->ops[i], digits);
    if (ops >= 0) H5Gclose(ops);
    return rc;
}

qat_export_opts qat_export_opts_defaults(void)
{
    qat_export_opts o = {NAN, NAN, NULL};
    return o;
}

int qat_export_int8(qat_qmodel *qm, const char *path, const qat_export_opts *opts)
{
    if (!qm || !path) return qat_error(QAT_ERR_ARG, "export: NULL model or path");
    qat_export_opts d = qat_export_opts_defaults();
    if (!opts) opts = &d;
    float mean = opts->mean, std = opts->std;
    if (isnan(mean) || isnan(std)) { /* not given: the model's (the training data's) */
        float mm, ms;
        if (!qat_model_input_norm(qat_qmodel_float(qm), &mm, &ms))
            return qat_error(QAT_ERR_ARG,
                             "export: %s: the model stores no input normalisation (mean/std of its training data): "
                             "set qat_export_opts.mean/std or qat_model_set_input_norm",
                             path);
        if (isnan(mean)) mean = mm;
        if (isnan(std)) std = ms;
    }
    qat_i8graph g;
    int rc = qat_convert_int8(qm, mean, std, &g);
    if (!rc) {
        export_job job = {&g, opts->source};
        qat_h5_quiet q;
        qat_h5_quiet_begin(&q);
        rc = qat_h5_save_atomic(path, writer, &job);
        qat_h5_quiet_end(&q);
    }
    qat_i8graph_free(&g);
    return rc;
}
