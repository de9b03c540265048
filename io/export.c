/* io/export.c: writes a qmodel's int8 graph (quant/convert.c builds it)
 * as the int8 model file of docs/FORMAT-int8.md, with the names of
 * qat/format_int8.h (the runtime's reader uses the same). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "io/export_int8.h"
#include "io/h5util.h"
#include "qat/qio.h"
#include "quant/convert.h"
#include "quant/dynamic_graph.h"
#include "qat/format_int8.h"

typedef struct {
    const qat_i8graph *g;
    const char *source;
} export_job;

/* ---- weight encodings (format version 2; docs/FORMAT-int8.md) ---- */

static const char *range_text(int bits, char *buf, size_t n)
{
    if (bits == 1) snprintf(buf, n, "{-1, +1}");
    else snprintf(buf, n, "[%d, %d]", -(1 << (bits - 1)), (1 << (bits - 1)) - 1);
    return buf;
}

/* Writes the packed payload p[nb] as dataset weight (uint8 [nb]) and the
 * logical shape as attribute weight_shape. */
static int write_payload(hid_t h, const uint8_t *p, size_t nb, int rank, const int *wshape)
{
    int len = (int)nb;
    int rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT, QAT_H5_U8, 1, &len, p);
    if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_WEIGHT_SHAPE, QAT_H5_I32, rank, wshape);
    return rc;
}

/* The weight of conv/linear op i (o->weight, int8 wshape[rank]) stored as
 * o->wbits / o->wenc say: dense at 8 bits as int8; dense below 8 bits or
 * packed as b-bit codes (every weight checked to have one); codebook as
 * indices into o->codebook (every weight must be in it); hashed as nothing
 * but the codebook and seed (every weight must equal its bucket's value).
 * Any mismatch is an error naming the op and the first bad weight. */
static int write_weight(hid_t h, int i, const qat_i8op *o, int rank, const int *wshape)
{
    size_t n = 1;
    for (int d = 0; d < rank; d++) n *= (size_t)wshape[d];
    int bits = o->wbits, enc = o->wenc, K = o->codebook_k, rc = QAT_OK;
    char rt[32];
    if (enc != QAT_I8W_DENSE && enc != QAT_I8W_PACKED && enc != QAT_I8W_CODEBOOK && enc != QAT_I8W_HASHED)
        return qat_error(QAT_ERR_ARG, "export: op %d (%s): unknown weight encoding %d", i, o->name, enc);
    if (enc == QAT_I8W_DENSE || enc == QAT_I8W_PACKED) {
        if (bits < 1 || bits > 8)
            return qat_error(QAT_ERR_ARG, "export: op %d (%s): weight bits %d outside 1..8", i, o->name, bits);
        if (bits == 8) { /* one byte each: the version-1 layout */
            for (size_t z = 0; z < n; z++)
                if (!qat_weight_fits_bits(o->weight[z], 8))
                    return qat_error(QAT_ERR_ARG, "export: op %d (%s): weight %zu = %d outside %s", i, o->name, z,
                                     o->weight[z], range_text(8, rt, sizeof rt));
            rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT, QAT_H5_I8, rank, wshape, o->weight);
            if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_WEIGHT_BITS, 8);
            if (!rc) rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_WEIGHT_ENCODING, QAT_I8_WENC_INT8);
            return rc;
        }
        size_t nb = qat_packed_bytes(n, bits);
        uint8_t *p = qat_malloc(nb);
        if (!p) return qat_error(QAT_ERR_NOMEM, "export: op %d (%s): out of memory packing the weight", i, o->name);
        long long bad = qat_pack_weights(p, o->weight, n, bits);
        if (bad >= 0)
            rc = qat_error(QAT_ERR_ARG, "export: op %d (%s): weight %lld = %d does not fit %d bits %s", i, o->name,
                           bad, o->weight[bad], bits, range_text(bits, rt, sizeof rt));
        if (!rc) rc = write_payload(h, p, nb, rank, wshape);
        free(p);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_WEIGHT_BITS, bits);
        if (!rc) rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_WEIGHT_ENCODING, QAT_I8_WENC_PACKED);
        return rc;
    }
    /* codebook, hashed */
    if (K < QAT_I8_CODEBOOK_MIN || K > QAT_I8_CODEBOOK_MAX || !o->codebook)
        return qat_error(QAT_ERR_ARG, "export: op %d (%s): codebook of %d values%s, expected %d..%d", i, o->name, K,
                         o->codebook ? "" : " (none)", QAT_I8_CODEBOOK_MIN, QAT_I8_CODEBOOK_MAX);
    int ib = qat_index_bits(K);
    if (enc == QAT_I8W_CODEBOOK) {
        int slot[256]; /* int8 value + 128 -> its first index in the codebook */
        for (int v = 0; v < 256; v++) slot[v] = -1;
        for (int j = K - 1; j >= 0; j--) slot[o->codebook[j] + 128] = j;
        uint8_t *idx = qat_malloc(n);
        uint8_t *p = idx ? qat_malloc(qat_packed_bytes(n, ib)) : NULL;
        if (!p) rc = qat_error(QAT_ERR_NOMEM, "export: op %d (%s): out of memory packing the weight", i, o->name);
        for (size_t z = 0; !rc && z < n; z++) {
            int j = slot[o->weight[z] + 128];
            if (j < 0)
                rc = qat_error(QAT_ERR_ARG, "export: op %d (%s): weight %zu = %d is not in the codebook (K = %d)", i,
                               o->name, z, o->weight[z], K);
            else
                idx[z] = (uint8_t)j;
        }
        if (!rc) {
            qat_pack_bits(p, idx, n, ib);
            rc = write_payload(h, p, qat_packed_bytes(n, ib), rank, wshape);
        }
        free(idx);
        free(p);
    } else {
        for (size_t z = 0; z < n; z++) {
            unsigned b = qat_i8_hash_bucket(o->hash_seed, (unsigned)z, (unsigned)K);
            if (o->weight[z] != o->codebook[b])
                return qat_error(QAT_ERR_ARG,
                                 "export: op %d (%s): weight %zu = %d differs from its hash bucket %u's value %d "
                                 "(seed %u, K = %d)",
                                 i, o->name, z, o->weight[z], b, o->codebook[b], o->hash_seed, K);
        }
        uint32_t seed = o->hash_seed;
        rc = qat_h5_attr_write(h, QAT_I8_ATTR_HASH_SEED, QAT_H5_U32, 0, &seed);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_WEIGHT_SHAPE, QAT_H5_I32, rank, wshape);
    }
    if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_CODEBOOK, QAT_H5_I8, 1, &K, o->codebook);
    if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_WEIGHT_BITS, ib);
    if (!rc)
        rc = qat_h5_attr_write_str(h, QAT_I8_ATTR_WEIGHT_ENCODING,
                                   enc == QAT_I8W_CODEBOOK ? QAT_I8_WENC_CODEBOOK : QAT_I8_WENC_HASHED);
    return rc;
}

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
        int conv = !strcmp(t, QAT_I8_OP_CONV2D), groups = o->groups > 1 ? o->groups : 1;
        int wshape[4] = {o->oc, o->ic / groups, o->k, o->k};
        if (conv) {
            rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_STRIDE, o->stride);
            if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_PAD, o->pad);
            if (!rc && groups > 1) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_GROUPS, groups); /* absent: 1 */
        } else {
            wshape[1] = o->ic;
        }
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_IN_ZP, o->in_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
        if (!rc) rc = write_weight(h, i, o, conv ? 4 : 2, wshape);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_BIAS, QAT_H5_I32, 1, &o->oc, o->bias);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_MULTIPLIER, QAT_H5_I32, 1, &o->oc, o->mult);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_SHIFT, QAT_H5_I32, 1, &o->oc, o->shift);
        if (!rc) rc = qat_h5_write(h, QAT_I8_DSET_WEIGHT_SCALE, QAT_H5_F32, 1, &o->oc, o->wscale);
        if (!rc && o->act_max_channel)
            rc = qat_h5_write(h, QAT_I8_DSET_ACT_MAX_CHANNEL, QAT_H5_I32, 1, &o->oc, o->act_max_channel);
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
    } else if (!rc && !strcmp(t, QAT_I8_OP_LUT)) {
        int n = QAT_I8_TABLE_LEN;
        rc = qat_h5_write(h, QAT_I8_DSET_TABLE, QAT_H5_I8, 1, &n, o->lut);
    } else if (!rc && !strcmp(t, QAT_I8_OP_CONCAT)) {
        rc = qat_h5_attr_write(h, QAT_I8_ATTR_MULTIPLIER, QAT_H5_I32, o->n_inputs, o->cat_m);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_SHIFT, QAT_H5_I32, o->n_inputs, o->cat_shift);
        if (!rc) rc = qat_h5_attr_write(h, QAT_I8_ATTR_IN_ZP, QAT_H5_I32, o->n_inputs, o->cat_zp);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MIN, o->act_min);
        if (!rc) rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_ACT_MAX, o->act_max);
    } else if (!rc && !strcmp(t, QAT_I8_OP_UPSAMPLE)) {
        rc = qat_h5_attr_write_i32(h, QAT_I8_ATTR_SCALE, o->k);
    }
    H5Gclose(h);
    return rc;
}

static int writer(hid_t file, void *p)
{
    const export_job *job = p;
    const qat_i8graph *g = job->g;
    int rc = qat_h5_write_format(file, QAT_I8_FORMAT_NAME, QAT_I8_FORMAT_VERSION);
    if (!rc) rc = qat_h5_attr_write_str(file, QAT_I8_ATTR_ARCH, g->arch ? g->arch : "custom");
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
    for (int u = 0; u < qat_qmodel_num_units(qm); u++)
        if (qat_qmodel_unit(qm, u)->cfg.float_format) { /* fp16 units: float ops */
            qat_dynmodel *fd = NULL;
            int rc = qat_convert_float16(qm, mean, std, &fd);
            if (!rc) rc = qat_dg_write(fd, path, opts->source);
            qat_dynmodel_free(fd);
            return rc;
        }
    qat_i8graph g;
    int rc = qat_convert_int8(qm, mean, std, &g);
    if (!rc) rc = qat_export_int8_graph(&g, path, opts->source);
    qat_i8graph_free(&g);
    return rc;
}

int qat_export_int8_graph(const qat_i8graph *g, const char *path, const char *source)
{
    if (!g || !path || !g->ops || g->n < 1) return qat_error(QAT_ERR_ARG, "export: NULL or empty graph, or NULL path");
    export_job job = {g, source};
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = qat_h5_save_atomic(path, writer, &job);
    qat_h5_quiet_end(&q);
    return rc;
}
