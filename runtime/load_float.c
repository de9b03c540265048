/* runtime/load_float.c: reading and validating the float ops of an int8
 * model file (docs/FORMAT-int8.md, "Float ops"): ops with a dtype
 * attribute, float32 / float16 / dynamically quantized int8 weights.
 *
 * load.c reads what every op has (type, name, inputs, out_shape) and hands
 * a float op to qat_rti_load_float_op; everything the float kernels rely
 * on is checked here, once, with messages naming the op and the field. */
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/format_int8.h"
#include "qat/half.h"
#include "runtime/rt_internal.h"

typedef struct lf_ctx {
    const char *src, *where;
} lf_ctx;

static int lf_err(const lf_ctx *c, int status, const char *fmt, ...) RT_PRINTF(3, 4);
static int lf_err(const lf_ctx *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qat_rti_error(status, "%s: %s: %s", c->src, c->where, msg);
}

/* One integer attribute in [lo, hi] (missing: *out = dflt if has_dflt). */
static int lf_int(const lf_ctx *c, hid_t g, const char *name, int64_t lo, int64_t hi, int has_dflt,
                  int dflt, int *out)
{
    if (H5Aexists(g, name) <= 0) {
        if (has_dflt) {
            *out = dflt;
            return QAT_OK;
        }
        return lf_err(c, QAT_ERR_FORMAT, "missing attribute %s", name);
    }
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, s = a >= 0 ? H5Aget_space(a) : -1;
    int64_t v = 0;
    int st = QAT_OK;
    if (a < 0 || t < 0 || s < 0)
        st = lf_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    else if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(s) != 1)
        st = lf_err(c, QAT_ERR_FORMAT, "attribute %s is not one integer", name);
    else if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
        st = lf_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    else if (v < lo || v > hi)
        st = lf_err(c, QAT_ERR_FORMAT, "attribute %s = %lld, expected in [%lld, %lld]", name, (long long)v,
                    (long long)lo, (long long)hi);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    if (a >= 0) H5Aclose(a);
    if (!st) *out = (int)v;
    return st;
}

static int lf_float(const lf_ctx *c, hid_t g, const char *name, int positive, float *out)
{
    if (H5Aexists(g, name) <= 0) return lf_err(c, QAT_ERR_FORMAT, "missing attribute %s", name);
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, s = a >= 0 ? H5Aget_space(a) : -1;
    float v = 0;
    int st = QAT_OK;
    if (a < 0 || t < 0 || s < 0 || H5Tget_class(t) != H5T_FLOAT || H5Sget_simple_extent_npoints(s) != 1 ||
        H5Aread(a, H5T_NATIVE_FLOAT, &v) < 0)
        st = lf_err(c, QAT_ERR_FORMAT, "attribute %s is not one float32", name);
    else if (!isfinite(v) || (positive && !(v > 0)))
        st = lf_err(c, QAT_ERR_FORMAT, "attribute %s = %g, expected a %s number", name, (double)v,
                    positive ? "positive finite" : "finite");
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    if (a >= 0) H5Aclose(a);
    if (!st) *out = v;
    return st;
}

/* A string attribute into buf (truncated to n - 1 bytes). */
static int lf_str(const lf_ctx *c, hid_t g, const char *name, char *buf, size_t n)
{
    if (H5Aexists(g, name) <= 0) return lf_err(c, QAT_ERR_FORMAT, "missing attribute %s", name);
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, mt = -1;
    int st = QAT_OK;
    buf[0] = 0;
    if (a < 0 || t < 0 || H5Tget_class(t) != H5T_STRING) {
        st = lf_err(c, QAT_ERR_FORMAT, "attribute %s is not a string", name);
    } else if (H5Tis_variable_str(t) > 0) {
        char *p = NULL;
        mt = H5Tcopy(H5T_C_S1);
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(t)) < 0 ||
            H5Aread(a, mt, &p) < 0 || !p)
            st = lf_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
        else
            snprintf(buf, n, "%s", p);
        if (p) H5free_memory(p);
    } else {
        size_t sz = H5Tget_size(t);
        char *p = qat_calloc(sz + 1, 1);
        mt = H5Tcopy(t);
        if (!p) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory");
        else if (mt < 0 || H5Aread(a, mt, p) < 0) st = lf_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
        else snprintf(buf, n, "%s", p);
        free(p);
    }
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return st;
}

typedef enum { LF_F32, LF_U16, LF_I8 } lf_kind;

/* Dataset `name` of exactly kind and shape dims[rank] into a malloc'd array. */
static int lf_dset(const lf_ctx *c, hid_t g, const char *name, lf_kind kind, int rank, const int64_t *dims,
                   void **out)
{
    static const char *const kn[] = {"float32", "uint16 (binary16 bits)", "int8"};
    *out = NULL;
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return lf_err(c, QAT_ERR_FORMAT, "missing dataset %s", name);
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return lf_err(c, QAT_ERR_FORMAT, "%s is not a readable dataset", name);
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    int st = QAT_OK;
    size_t count = 1;
    if (t < 0 || s < 0) {
        st = lf_err(c, QAT_ERR_FORMAT, "cannot read dataset %s", name);
        goto done;
    }
    H5T_class_t cl = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    int ok = kind == LF_F32 ? cl == H5T_FLOAT && sz == 4
           : kind == LF_U16 ? cl == H5T_INTEGER && sz == 2 && H5Tget_sign(t) == H5T_SGN_NONE
                            : cl == H5T_INTEGER && sz == 1 && H5Tget_sign(t) == H5T_SGN_2;
    if (!ok) {
        st = lf_err(c, QAT_ERR_FORMAT, "dataset %s is not %s", name, kn[kind]);
        goto done;
    }
    hsize_t fd[H5S_MAX_RANK];
    int r = H5Sget_simple_extent_ndims(s);
    if (r < 0 || r > H5S_MAX_RANK || H5Sget_simple_extent_dims(s, fd, NULL) < 0) {
        st = lf_err(c, QAT_ERR_FORMAT, "cannot read the shape of dataset %s", name);
        goto done;
    }
    size_t want = 1, got = 1;
    for (int k = 0; k < rank; k++) want *= (size_t)dims[k];
    for (int k = 0; k < r; k++) got *= (size_t)fd[k];
    int same = r == rank;
    for (int k = 0; same && k < rank; k++) same = fd[k] == (hsize_t)dims[k];
    if (!same) {
        st = lf_err(c, QAT_ERR_FORMAT, "dataset %s has %zu elements in %d dimensions, expected %zu in %d", name,
                    got, r, want, rank);
        goto done;
    }
    count = want;
    void *buf = qat_malloc(count * sz + 1);
    if (!buf) {
        st = qat_rti_error(QAT_ERR_NOMEM, "out of memory reading %s", name);
        goto done;
    }
    hid_t mt = kind == LF_F32 ? H5T_NATIVE_FLOAT : kind == LF_U16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_INT8;
    if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        st = lf_err(c, QAT_ERR_FORMAT, "cannot read dataset %s (truncated file?)", name);
        goto done;
    }
    *out = buf;
done:
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return st;
}

static int lf_finite(const lf_ctx *c, const char *name, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return lf_err(c, QAT_ERR_FORMAT, "%s[%zu] = %g is not finite", name, i, (double)v[i]);
    return QAT_OK;
}

static int lf_shape(const lf_ctx *c, const rt_op *op, int ndim, int a, int b, int d)
{
    if (op->out_ndim == ndim && op->out_shape[0] == a && (ndim == 1 || (op->out_shape[1] == b && op->out_shape[2] == d)))
        return QAT_OK;
    if (ndim == 1) return lf_err(c, QAT_ERR_FORMAT, "out_shape has %zu elements, expected (%d,)", op->out_size, a);
    return lf_err(c, QAT_ERR_FORMAT, "out_shape is not the expected (%d, %d, %d)", a, b, d);
}

/* conv2d / linear */
static int lf_conv_linear(const lf_ctx *c, hid_t g, rt_op *op, const rt_op *in)
{
    int st, conv = op->type == RT_OP_CONV2D;
    char wd[32];
    if ((st = lf_str(c, g, QAT_I8_ATTR_WEIGHT_DTYPE, wd, sizeof wd))) return st;
    if (!strcmp(wd, QAT_I8_DTYPE_FLOAT32)) op->wdt = RT_W_F32;
    else if (!strcmp(wd, QAT_I8_DTYPE_FLOAT16)) op->wdt = RT_W_F16;
    else if (!strcmp(wd, QAT_I8_DTYPE_BFLOAT16)) op->wdt = RT_W_BF16;
    else if (!strcmp(wd, QAT_I8_WDTYPE_INT8)) op->wdt = RT_W_I8;
    else
        return lf_err(c, QAT_ERR_UNSUPPORTED, "attribute weight_dtype = '%s', expected float32, float16 or int8", wd);
    if (op->wdt == RT_W_I8 && op->fdt != RT_DT_F32)
        return lf_err(c, QAT_ERR_UNSUPPORTED, "weight_dtype int8 (dynamic quantization) needs dtype float32");
    if ((st = lf_int(c, g, QAT_I8_ATTR_RELU, 0, 1, 1, 0, &op->relu))) return st;
    int oc = op->out_shape[0], kh = 1, kw = 1;
    if (conv) {
        if (in->out_ndim != 3) return lf_err(c, QAT_ERR_FORMAT, "conv2d needs a (C, H, W) input");
        if ((st = lf_int(c, g, QAT_I8_ATTR_STRIDE, 1, 1024, 0, 0, &op->stride))) return st;
        if ((st = lf_int(c, g, QAT_I8_ATTR_PAD, 0, 1024, 0, 0, &op->pad))) return st;
        op->in_c = in->out_shape[0];
        op->in_h = in->out_shape[1];
        op->in_w = in->out_shape[2];
        /* the kernel from the weight's shape */
        if (H5Lexists(g, QAT_I8_DSET_WEIGHT, H5P_DEFAULT) <= 0)
            return lf_err(c, QAT_ERR_FORMAT, "missing dataset weight");
        hid_t d = H5Dopen2(g, QAT_I8_DSET_WEIGHT, H5P_DEFAULT);
        hid_t s = d >= 0 ? H5Dget_space(d) : -1;
        hsize_t wd4[H5S_MAX_RANK] = {0};
        int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
        if (r == 4) H5Sget_simple_extent_dims(s, wd4, NULL);
        if (s >= 0) H5Sclose(s);
        if (d >= 0) H5Dclose(d);
        if (r != 4) return lf_err(c, QAT_ERR_FORMAT, "dataset weight has rank %d, expected 4 [OC, IC, KH, KW]", r);
        if (wd4[2] < 1 || wd4[3] < 1 || wd4[2] > 1024 || wd4[3] > 1024)
            return lf_err(c, QAT_ERR_FORMAT, "dataset weight has a kernel of %llux%llu", (unsigned long long)wd4[2],
                          (unsigned long long)wd4[3]);
        kh = (int)wd4[2];
        kw = (int)wd4[3];
        int hp = op->in_h + 2 * op->pad, wp = op->in_w + 2 * op->pad;
        if (kh > hp || kw > wp)
            return lf_err(c, QAT_ERR_FORMAT, "kernel %dx%d is larger than the padded %dx%d input", kh, kw, hp, wp);
        if ((st = lf_shape(c, op, 3, oc, (hp - kh) / op->stride + 1, (wp - kw) / op->stride + 1))) return st;
    } else {
        op->stride = 1;
        op->pad = 0;
        op->in_c = (int)in->out_size;
        op->in_h = op->in_w = 1;
        if (op->out_ndim != 1) return lf_err(c, QAT_ERR_FORMAT, "linear out_shape must be (F,)");
    }
    op->oc = oc;
    op->ic = conv ? op->in_c : (int)in->out_size;
    op->kh = kh;
    op->kw = kw;
    const size_t k = (size_t)op->ic * kh * kw, n = (size_t)oc * k;
    int64_t dims[4] = {oc, op->ic, kh, kw};
    int rank = conv ? 4 : 2;
    if (op->wdt == RT_W_F32) {
        if ((st = lf_dset(c, g, QAT_I8_DSET_WEIGHT, LF_F32, rank, dims, (void **)&op->fweight))) return st;
        if ((st = lf_finite(c, QAT_I8_DSET_WEIGHT, op->fweight, n))) return st;
        op->weight_bytes = n * 4;
    } else if (op->wdt == RT_W_F16 || op->wdt == RT_W_BF16) {
        int bf = op->wdt == RT_W_BF16;
        uint16_t expo = bf ? 0x7f80u : 0x7c00u;
        if ((st = lf_dset(c, g, QAT_I8_DSET_WEIGHT, LF_U16, rank, dims, (void **)&op->hweight))) return st;
        op->fweight = qat_malloc(n * sizeof *op->fweight + 1);
        if (!op->fweight) return qat_rti_error(QAT_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            if ((op->hweight[i] & expo) == expo)
                return lf_err(c, QAT_ERR_FORMAT, "weight[%zu] = 0x%04x is not a finite %s value", i,
                              (unsigned)op->hweight[i], bf ? "bfloat16" : "binary16");
            op->fweight[i] = bf ? qat_bf16_to_float(op->hweight[i]) : qat_f16_to_float(op->hweight[i]);
        }
        op->weight_bytes = n * 2;
    } else {
        if ((st = lf_dset(c, g, QAT_I8_DSET_WEIGHT, LF_I8, rank, dims, (void **)&op->weight))) return st;
        int64_t d1[1] = {oc};
        if ((st = lf_dset(c, g, QAT_I8_DSET_WEIGHT_SCALE, LF_F32, 1, d1, (void **)&op->weight_scale))) return st;
        for (int o = 0; o < oc; o++)
            if (!isfinite(op->weight_scale[o]) || !(op->weight_scale[o] > 0))
                return lf_err(c, QAT_ERR_FORMAT, "weight_scale[%d] = %g, expected a positive finite number", o,
                              (double)op->weight_scale[o]);
        /* |sum w * (q - zp)| <= 127 * 255 * k must fit int32 */
        if ((double)k * 127 * 255 > 2147483647.0)
            return lf_err(c, QAT_ERR_FORMAT, "%zu inputs per output overflow the int32 accumulator", k);
        char aq[16];
        if ((st = lf_str(c, g, QAT_I8_ATTR_ACT_QUANT, aq, sizeof aq))) return st;
        if (!strcmp(aq, QAT_I8_ACT_QUANT_TENSOR)) op->act_row = 0;
        else if (!strcmp(aq, QAT_I8_ACT_QUANT_ROW)) op->act_row = 1;
        else return lf_err(c, QAT_ERR_UNSUPPORTED, "attribute act_quant = '%s', expected tensor or row", aq);
        op->rowsum = qat_calloc((size_t)oc, sizeof *op->rowsum);
        if (!op->rowsum) return qat_rti_error(QAT_ERR_NOMEM, "out of memory");
        for (int o = 0; o < oc; o++)
            for (size_t j = 0; j < k; j++) op->rowsum[o] += op->weight[(size_t)o * k + j];
        op->weight_bytes = n + (size_t)oc * 4;
    }
    int64_t d1[1] = {oc};
    if ((st = lf_dset(c, g, QAT_I8_DSET_BIAS, LF_F32, 1, d1, (void **)&op->fbias))) return st;
    if ((st = lf_finite(c, QAT_I8_DSET_BIAS, op->fbias, (size_t)oc))) return st;
    op->weight_bytes += (size_t)oc * 4;
    return QAT_OK;
}

static int lf_same_shape(const rt_op *a, const rt_op *b)
{
    if (a->out_ndim != b->out_ndim) return 0;
    for (int k = 0; k < a->out_ndim; k++)
        if (a->out_shape[k] != b->out_shape[k]) return 0;
    return 1;
}

int qat_rti_load_float_op(const char *src, const char *where, int64_t group, rt_op *ops, int i)
{
    lf_ctx c = {src, where};
    hid_t g = (hid_t)group;
    rt_op *op = &ops[i];
    char dt[32];
    int st = lf_str(&c, g, QAT_I8_ATTR_DTYPE, dt, sizeof dt);
    if (st) return st;
    if (!strcmp(dt, QAT_I8_DTYPE_FLOAT32)) op->fdt = RT_DT_F32;
    else if (!strcmp(dt, QAT_I8_DTYPE_FLOAT16)) op->fdt = RT_DT_F16;
    else if (!strcmp(dt, QAT_I8_DTYPE_BFLOAT16)) op->fdt = RT_DT_BF16;
    else return lf_err(&c, QAT_ERR_UNSUPPORTED, "attribute dtype = '%s', expected float32, float16 or bfloat16", dt);
    const rt_op *in = op->n_inputs ? &ops[op->inputs[0]] : NULL;
    switch (op->type) {
    case RT_OP_INPUT:
        if ((st = lf_float(&c, g, QAT_I8_ATTR_MEAN, 0, &op->mean))) return st;
        return lf_float(&c, g, QAT_I8_ATTR_STD, 1, &op->std);
    case RT_OP_CONV2D:
    case RT_OP_LINEAR: return lf_conv_linear(&c, g, op, in);
    case RT_OP_ADD:
        if (!lf_same_shape(in, &ops[op->inputs[1]]) || !lf_same_shape(op, in))
            return lf_err(&c, QAT_ERR_FORMAT, "inputs and output of add have different shapes");
        return lf_int(&c, g, QAT_I8_ATTR_RELU, 0, 1, 1, 0, &op->relu);
    case RT_OP_GLOBAL_AVGPOOL:
    case RT_OP_AVGPOOL2D:
    case RT_OP_MAXPOOL2D: {
        if (in->out_ndim != 3) return lf_err(&c, QAT_ERR_FORMAT, "%s needs a (C, H, W) input", qat_rti_op_type_name(op->type));
        int C = in->out_shape[0], H = in->out_shape[1], W = in->out_shape[2];
        op->in_c = C;
        op->in_h = H;
        op->in_w = W;
        if (op->type == RT_OP_GLOBAL_AVGPOOL) return lf_shape(&c, op, 1, C, 0, 0);
        if ((st = lf_int(&c, g, QAT_I8_ATTR_KERNEL, 1, 1024, 0, 0, &op->kernel))) return st;
        if ((st = lf_int(&c, g, QAT_I8_ATTR_STRIDE, 1, 1024, 0, 0, &op->stride))) return st;
        if (op->kernel > H || op->kernel > W)
            return lf_err(&c, QAT_ERR_FORMAT, "kernel %d is larger than the %dx%d input", op->kernel, H, W);
        return lf_shape(&c, op, 3, C, (H - op->kernel) / op->stride + 1, (W - op->kernel) / op->stride + 1);
    }
    case RT_OP_RELU:
        if (!lf_same_shape(op, in)) return lf_err(&c, QAT_ERR_FORMAT, "out_shape differs from the input's");
        return QAT_OK;
    case RT_OP_FLATTEN:
        if (in->fdt == RT_DT_INT8)
            return lf_err(&c, QAT_ERR_FORMAT, "a float flatten of the int8 op %d (use an int8 flatten)", op->inputs[0]);
        return lf_shape(&c, op, 1, (int)in->out_size, 0, 0);
    default: break;
    }
    return lf_err(&c, QAT_ERR_UNSUPPORTED, "op type has no float form");
}

void qat_rti_float_free_op(rt_op *op)
{
    free(op->fweight);
    free(op->hweight);
    free(op->fbias);
    free(op->rowsum);
    op->fweight = op->fbias = NULL;
    op->hweight = NULL;
    op->rowsum = NULL;
}

size_t qat_rti_elem_bytes(const rt_op *op)
{
    return op->fdt == RT_DT_INT8 ? 1 : 4;
}
