/* runtime/load.c: reading and validating an int8 model file
 * (docs/FORMAT-int8.md) from a path or a memory image.
 *
 * Everything the kernels rely on is checked here, once, so that the run
 * path cannot fail: dataset types (class, size, sign) and shapes, every
 * attribute's presence, type and range, the graph (inputs of earlier ops,
 * shapes consistent along it), and that no int32 accumulator can overflow.
 * Where an op repeats a value of its input op (in_zero_point, a max-pool's
 * scale), its own attribute is used, as docs/FORMAT-int8.md specifies. Each problem is its own message
 * naming the op and the dataset or attribute. */
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/format_int8.h"
#include "runtime/rt_internal.h"

/* Largest accepted dimension and per-sample tensor size: far beyond any
 * model for 28x28 inputs, small enough that no size computation overflows. */
#define LD_MAX_DIM 65536
#define LD_MAX_ELEMS ((int64_t)1 << 28)
#define LD_MAX_OPS 100000

static const char *const op_type_names[] = {
    [RT_OP_INPUT] = QAT_I8_OP_INPUT,
    [RT_OP_CONV2D] = QAT_I8_OP_CONV2D,
    [RT_OP_LINEAR] = QAT_I8_OP_LINEAR,
    [RT_OP_ADD] = QAT_I8_OP_ADD,
    [RT_OP_GLOBAL_AVGPOOL] = QAT_I8_OP_GLOBAL_AVGPOOL,
    [RT_OP_AVGPOOL2D] = QAT_I8_OP_AVGPOOL2D,
    [RT_OP_MAXPOOL2D] = QAT_I8_OP_MAXPOOL2D,
    [RT_OP_RELU] = QAT_I8_OP_RELU,
    [RT_OP_FLATTEN] = QAT_I8_OP_FLATTEN,
    [RT_OP_LUT] = QAT_I8_OP_LUT,
    [RT_OP_CONCAT] = QAT_I8_OP_CONCAT,
    [RT_OP_UPSAMPLE] = QAT_I8_OP_UPSAMPLE,
};
_Static_assert(sizeof op_type_names / sizeof op_type_names[0] == RT_OP_COUNT,
               "one name per op type");

const char *qat_rti_op_type_name(rt_op_type t)
{
    return (unsigned)t < RT_OP_COUNT ? op_type_names[t] : "?";
}

typedef struct ld_ctx {
    const char *src;   /* the path, or "memory image" */
    char where[192];   /* "ops/003 (features.0)" or "" at the root */
} ld_ctx;

static int ld_err(const ld_ctx *c, int status, const char *fmt, ...) RT_PRINTF(3, 4);
static int ld_err(const ld_ctx *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->where[0]) return qat_rti_error(status, "%s: %s: %s", c->src, c->where, msg);
    return qat_rti_error(status, "%s: %s", c->src, msg);
}

/* "int8", "float32", "uint16", "string", ... for messages */
static const char *type_desc(hid_t t, char *buf, size_t n)
{
    H5T_class_t cl = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    switch (cl) {
    case H5T_INTEGER:
        snprintf(buf, n, "%s%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int", sz * 8);
        break;
    case H5T_FLOAT: snprintf(buf, n, "float%zu", sz * 8); break;
    case H5T_STRING: snprintf(buf, n, "string"); break;
    default: snprintf(buf, n, "a non-numeric type (class %d)", (int)cl); break;
    }
    return buf;
}

/* ---- attributes ---- */

/* Opens attribute `name` of obj; a missing one is an error. */
static hid_t ld_attr_open(const ld_ctx *c, hid_t obj, const char *name, int *st)
{
    htri_t ex = H5Aexists(obj, name);
    if (ex <= 0) {
        *st = ld_err(c, QAT_ERR_FORMAT, "missing attribute %s", name);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) *st = ld_err(c, QAT_ERR_FORMAT, "cannot open attribute %s", name);
    return a;
}

/* Reads an integer attribute of exactly n values (n = 1 also accepts a
 * scalar) as int64. Any integer size is accepted; the caller checks ranges. */
static int ld_attr_ints(const ld_ctx *c, hid_t obj, const char *name, int64_t *v, int n)
{
    int st = QAT_OK;
    hid_t a = ld_attr_open(c, obj, name, &st);
    if (a < 0) return st;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    char tb[64];
    if (t < 0 || s < 0)
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    else if (H5Tget_class(t) != H5T_INTEGER)
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s is %s, expected int32", name,
                    type_desc(t, tb, sizeof tb));
    else if (np != n)
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s has %lld values, expected %d", name,
                    (long long)np, n);
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return st;
}

/* One integer attribute in [lo, hi]. */
static int ld_attr_i32(const ld_ctx *c, hid_t obj, const char *name, int64_t lo, int64_t hi,
                       int32_t *out)
{
    int64_t v;
    int st = ld_attr_ints(c, obj, name, &v, 1);
    if (st) return st;
    if (v < lo || v > hi)
        return ld_err(c, QAT_ERR_FORMAT, "attribute %s = %lld, expected in [%lld, %lld]", name,
                      (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return QAT_OK;
}

/* One float attribute (float32 or float64, read as float32), finite;
 * positive if `positive`. */
static int ld_attr_f32(const ld_ctx *c, hid_t obj, const char *name, int positive, float *out)
{
    int st = QAT_OK;
    hid_t a = ld_attr_open(c, obj, name, &st);
    if (a < 0) return st;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    char tb[64];
    float v = 0.0f;
    if (t < 0 || s < 0)
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    else if (H5Tget_class(t) != H5T_FLOAT)
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s is %s, expected float32", name,
                    type_desc(t, tb, sizeof tb));
    else if (np != 1)
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s has %lld values, expected 1", name,
                    (long long)np);
    else if (H5Aread(a, H5T_NATIVE_FLOAT, &v) < 0)
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    else if (!isfinite(v) || (positive && !(v > 0.0f)))
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s = %g, expected a %s number", name,
                    (double)v, positive ? "positive finite" : "finite");
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    if (!st) *out = v;
    return st;
}

/* A string attribute (fixed or variable length) into a malloc'd copy. */
static int ld_attr_str(const ld_ctx *c, hid_t obj, const char *name, char **out)
{
    int st = QAT_OK;
    *out = NULL;
    hid_t a = ld_attr_open(c, obj, name, &st);
    if (a < 0) return st;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a), mt = -1;
    hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    char tb[64];
    if (t < 0 || s < 0) {
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
    } else if (H5Tget_class(t) != H5T_STRING) {
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s is %s, expected a string", name,
                    type_desc(t, tb, sizeof tb));
    } else if (np != 1) {
        st = ld_err(c, QAT_ERR_FORMAT, "attribute %s has %lld values, expected one string",
                    name, (long long)np);
    } else if (H5Tis_variable_str(t) > 0) {
        char *p = NULL;
        /* the memory type takes the file's character set (UTF-8 or ASCII):
         * HDF5 does not convert between the two */
        mt = H5Tcopy(H5T_C_S1);
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(t)) < 0 ||
            H5Aread(a, mt, &p) < 0 || !p) {
            st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
        } else {
            *out = qat_strdup(p);
            if (!*out) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory");
        }
        if (p) H5free_memory(p);
    } else {
        size_t sz = H5Tget_size(t);
        char *p = sz ? qat_calloc(sz + 1, 1) : NULL;
        mt = H5Tcopy(t);
        if (!p) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory");
        else if (mt < 0 || H5Aread(a, mt, p) < 0)
            st = ld_err(c, QAT_ERR_FORMAT, "cannot read attribute %s", name);
        if (st) free(p);
        else *out = p;
    }
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return st;
}

/* ---- datasets ---- */

typedef enum { LD_I8, LD_I32, LD_F32, LD_U8 } ld_kind;

static const char *kind_name(ld_kind k)
{
    return k == LD_I8 ? "int8" : k == LD_I32 ? "int32" : k == LD_U8 ? "uint8" : "float32";
}

static void shape_str(char *buf, size_t n, int rank, const hsize_t *d)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < rank && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", i ? "," : "", (unsigned long long)d[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Reads dataset `name` of grp, which must have exactly type `kind` (class,
 * size and sign) and shape dims[rank], into a fresh malloc'd array. */
static int ld_dset(const ld_ctx *c, hid_t grp, const char *name, ld_kind kind, int rank,
                   const int64_t *dims, void **out)
{
    *out = NULL;
    htri_t ex = H5Lexists(grp, name, H5P_DEFAULT);
    if (ex <= 0) return ld_err(c, QAT_ERR_FORMAT, "missing dataset %s", name);
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    if (d < 0) return ld_err(c, QAT_ERR_FORMAT, "%s is not a readable dataset", name);
    int st = QAT_OK;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    char tb[64];
    if (t < 0 || s < 0) {
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read dataset %s", name);
        goto done;
    }
    H5T_class_t cl = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    int ok;
    if (kind == LD_F32) ok = cl == H5T_FLOAT && sz == 4;
    else if (kind == LD_U8) ok = cl == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE && sz == 1;
    else ok = cl == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2 && sz == (kind == LD_I8 ? 1u : 4u);
    if (!ok) {
        st = ld_err(c, QAT_ERR_FORMAT, "dataset %s is %s, expected %s", name,
                    type_desc(t, tb, sizeof tb), kind_name(kind));
        goto done;
    }
    int r = H5Sget_simple_extent_ndims(s);
    hsize_t fd[H5S_MAX_RANK];
    if (r < 0 || H5Sget_simple_extent_dims(s, fd, NULL) < 0) {
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read the shape of dataset %s", name);
        goto done;
    }
    int same = r == rank;
    for (int i = 0; same && i < rank; i++) same = fd[i] == (hsize_t)dims[i];
    if (!same) {
        hsize_t ed[8];
        char got[128], exp[128];
        for (int i = 0; i < rank; i++) ed[i] = (hsize_t)dims[i];
        if (rank == 1 && r == 1)
            st = ld_err(c, QAT_ERR_FORMAT, "dataset %s has %llu elements, expected %llu", name,
                        (unsigned long long)fd[0], (unsigned long long)ed[0]);
        else {
            shape_str(got, sizeof got, r, fd);
            shape_str(exp, sizeof exp, rank, ed);
            st = ld_err(c, QAT_ERR_FORMAT, "dataset %s has shape %s, expected %s", name, got,
                        exp);
        }
        goto done;
    }
    size_t count = 1;
    for (int i = 0; i < rank; i++) count *= (size_t)dims[i];
    void *buf = qat_malloc(count * sz + 1);
    if (!buf) {
        st = qat_rti_error(QAT_ERR_NOMEM, "out of memory reading %s", name);
        goto done;
    }
    hid_t mt = kind == LD_I8 ? H5T_NATIVE_INT8 : kind == LD_I32 ? H5T_NATIVE_INT32
                                               : kind == LD_U8  ? H5T_NATIVE_UINT8
                                                                 : H5T_NATIVE_FLOAT;
    if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        st = ld_err(c, QAT_ERR_FORMAT, "cannot read dataset %s (truncated file?)", name);
        goto done;
    }
    *out = buf;
done:
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return st;
}

/* ---- per-op checks ---- */

static const char *shape_of(const rt_op *op, char *buf, size_t n)
{
    if (op->out_ndim == 1) snprintf(buf, n, "(%d,)", op->out_shape[0]);
    else snprintf(buf, n, "(%d, %d, %d)", op->out_shape[0], op->out_shape[1], op->out_shape[2]);
    return buf;
}

static int ld_expect_shape(const ld_ctx *c, const rt_op *op, int ndim, int a, int b, int d)
{
    int same = op->out_ndim == ndim && op->out_shape[0] == a &&
               (ndim == 1 || (op->out_shape[1] == b && op->out_shape[2] == d));
    if (same) return QAT_OK;
    char got[64], exp[64];
    if (ndim == 1) snprintf(exp, sizeof exp, "(%d,)", a);
    else snprintf(exp, sizeof exp, "(%d, %d, %d)", a, b, d);
    return ld_err(c, QAT_ERR_FORMAT, "out_shape is %s, expected %s", shape_of(op, got, sizeof got),
                  exp);
}

/* The op's in_zero_point. It repeats the input op's out_zero_point; as
 * docs/FORMAT-int8.md says, the op's own attribute is the one to use. */
static int ld_in_zp(const ld_ctx *c, hid_t g, const char *attr, const rt_op *in, int32_t *out)
{
    (void)in;
    return ld_attr_i32(c, g, attr, -128, 127, out);
}

static int ld_act(const ld_ctx *c, hid_t g, rt_op *op)
{
    int st = ld_attr_i32(c, g, QAT_I8_ATTR_ACT_MIN, -128, 127, &op->act_min);
    if (!st) st = ld_attr_i32(c, g, QAT_I8_ATTR_ACT_MAX, -128, 127, &op->act_max);
    if (!st && op->act_min > op->act_max)
        st = ld_err(c, QAT_ERR_FORMAT, "act_min = %d is above act_max = %d", (int)op->act_min,
                    (int)op->act_max);
    return st;
}

static int ld_requant_params(const ld_ctx *c, const char *what, int64_t m, int64_t s, int ch)
{
    char chs[32] = "";
    if (ch >= 0) snprintf(chs, sizeof chs, " (channel %d)", ch);
    if (m != 0 && (m < ((int64_t)1 << 30) || m >= ((int64_t)1 << 31)))
        return ld_err(c, QAT_ERR_FORMAT, "%s %lld%s outside [2^30, 2^31) and not 0", what,
                      (long long)m, chs);
    if (s < -31 || s > 30)
        return ld_err(c, QAT_ERR_FORMAT, "shift %lld%s outside [-31, 30]", (long long)s, chs);
    return QAT_OK;
}

/* ---- weight encodings (format version 2; docs/FORMAT-int8.md) ----
 * Every encoding is decoded here to the dense int8 weight the kernels use;
 * the file's stored form is only recorded (op->wenc, wbits, codebook_k,
 * hash_seed, weight_stored). */

enum { WENC_INT8 = 0, WENC_PACKED, WENC_CODEBOOK, WENC_HASHED, WENC_COUNT };
static const char *const wenc_names[] = {
    [WENC_INT8] = QAT_I8_WENC_INT8,
    [WENC_PACKED] = QAT_I8_WENC_PACKED,
    [WENC_CODEBOOK] = QAT_I8_WENC_CODEBOOK,
    [WENC_HASHED] = QAT_I8_WENC_HASHED,
};
_Static_assert(sizeof wenc_names / sizeof wenc_names[0] == WENC_COUNT, "one name per weight encoding");

typedef struct ld_wenc {
    int enc;  /* WENC_* */
    int bits; /* weight_bits */
} ld_wenc;

/* Rank and dimensions of dataset name (which must exist). */
static int ld_dset_dims(const ld_ctx *c, hid_t g, const char *name, int *rank, hsize_t *fd)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return ld_err(c, QAT_ERR_FORMAT, "missing dataset %s", name);
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return ld_err(c, QAT_ERR_FORMAT, "%s is not a readable dataset", name);
    hid_t s = H5Dget_space(d);
    int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    if (r >= 0 && r <= H5S_MAX_RANK) H5Sget_simple_extent_dims(s, fd, NULL);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    if (r < 0 || r > H5S_MAX_RANK) return ld_err(c, QAT_ERR_FORMAT, "cannot read the shape of dataset %s", name);
    *rank = r;
    return QAT_OK;
}

/* weight_encoding, weight_bits and the weight's logical shape wd[rank]:
 * the int8 dataset's shape, or attribute weight_shape for the others.
 * Without weight_encoding (a version-1 file) the weight is int8 at 8
 * bits. */
static int ld_weight_header(const ld_ctx *c, hid_t g, int rank, ld_wenc *we, int64_t *wd)
{
    int st;
    we->enc = WENC_INT8;
    we->bits = 8;
    if (H5Aexists(g, QAT_I8_ATTR_WEIGHT_ENCODING) > 0) {
        char *e = NULL;
        if ((st = ld_attr_str(c, g, QAT_I8_ATTR_WEIGHT_ENCODING, &e))) return st;
        int k = 0;
        while (k < WENC_COUNT && strcmp(e, wenc_names[k])) k++;
        if (k == WENC_COUNT)
            st = ld_err(c, QAT_ERR_UNSUPPORTED,
                        "attribute weight_encoding = '%s', expected int8, packed, codebook or hashed", e);
        free(e);
        if (st) return st;
        we->enc = k;
    }
    if (H5Aexists(g, QAT_I8_ATTR_WEIGHT_BITS) > 0 || we->enc != WENC_INT8) {
        int32_t b = 8;
        if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_WEIGHT_BITS, 1, 8, &b))) return st;
        we->bits = b;
    }
    if (we->enc == WENC_INT8) {
        int r = -1;
        hsize_t fd[H5S_MAX_RANK] = {0};
        if ((st = ld_dset_dims(c, g, QAT_I8_DSET_WEIGHT, &r, fd))) return st;
        if (r != rank)
            return ld_err(c, QAT_ERR_FORMAT, "dataset weight has rank %d, expected %d (%s)", r, rank,
                          rank == 4 ? "[OC, IC, KH, KW]" : "[OUT, IN]");
        for (int i = 0; i < r; i++) {
            if (fd[i] < 1 || fd[i] > LD_MAX_DIM)
                return ld_err(c, QAT_ERR_FORMAT, "dataset weight has dimension %d = %llu, expected 1..%d", i,
                              (unsigned long long)fd[i], LD_MAX_DIM);
            wd[i] = (int64_t)fd[i];
        }
        if (H5Aexists(g, QAT_I8_ATTR_WEIGHT_SHAPE) > 0) { /* optional here; must agree */
            int64_t ws[4];
            if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_WEIGHT_SHAPE, ws, rank))) return st;
            for (int i = 0; i < rank; i++)
                if (ws[i] != wd[i])
                    return ld_err(c, QAT_ERR_FORMAT, "attribute weight_shape[%d] = %lld, dataset weight has %lld",
                                  i, (long long)ws[i], (long long)wd[i]);
        }
        return QAT_OK;
    }
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_WEIGHT_SHAPE, wd, rank))) return st;
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (wd[i] < 1 || wd[i] > LD_MAX_DIM)
            return ld_err(c, QAT_ERR_FORMAT, "attribute weight_shape[%d] = %lld, expected 1..%d", i, (long long)wd[i],
                          LD_MAX_DIM);
        n *= wd[i];
        if (n > LD_MAX_ELEMS)
            return ld_err(c, QAT_ERR_FORMAT, "attribute weight_shape gives more than %lld weights",
                          (long long)LD_MAX_ELEMS);
    }
    return QAT_OK;
}

/* Dataset codebook: int8 [K], K in 2..256. */
static int ld_codebook(const ld_ctx *c, hid_t g, int8_t **cb, int *K)
{
    int r = -1, st;
    hsize_t fd[H5S_MAX_RANK] = {0};
    if ((st = ld_dset_dims(c, g, QAT_I8_DSET_CODEBOOK, &r, fd))) return st;
    if (r != 1 || fd[0] < QAT_I8_CODEBOOK_MIN || fd[0] > QAT_I8_CODEBOOK_MAX) {
        char sh[128];
        shape_str(sh, sizeof sh, r, fd);
        return ld_err(c, QAT_ERR_FORMAT, "dataset codebook has shape %s, expected [K] with K in %d..%d", sh,
                      QAT_I8_CODEBOOK_MIN, QAT_I8_CODEBOOK_MAX);
    }
    int64_t d1[1] = {(int64_t)fd[0]};
    if ((st = ld_dset(c, g, QAT_I8_DSET_CODEBOOK, LD_I8, 1, d1, (void **)cb))) return st;
    *K = (int)fd[0];
    return QAT_OK;
}

/* Dataset weight as a packed payload: uint8 [ceil(n * bits / 8)] exactly,
 * zero padding bits. */
static int ld_payload(const ld_ctx *c, hid_t g, size_t n, int bits, const char *what, uint8_t **out)
{
    int r = -1, st;
    hsize_t fd[H5S_MAX_RANK] = {0};
    *out = NULL;
    if ((st = ld_dset_dims(c, g, QAT_I8_DSET_WEIGHT, &r, fd))) return st;
    size_t nb = qat_packed_bytes(n, bits);
    if (r != 1)
        return ld_err(c, QAT_ERR_FORMAT, "dataset weight has rank %d, expected 1 (uint8 [%zu]: %s)", r, nb, what);
    if (fd[0] != (hsize_t)nb)
        return ld_err(c, QAT_ERR_FORMAT,
                      "dataset weight has %llu bytes, expected %zu = ceil(%zu x %d bits / 8) (%s; the payload is %s)",
                      (unsigned long long)fd[0], nb, n, bits, what, fd[0] < (hsize_t)nb ? "short" : "long");
    int64_t d1[1] = {(int64_t)nb};
    if ((st = ld_dset(c, g, QAT_I8_DSET_WEIGHT, LD_U8, 1, d1, (void **)out))) return st;
    if (!qat_packed_padding_ok(*out, n, bits)) {
        free(*out);
        *out = NULL;
        return ld_err(c, QAT_ERR_FORMAT, "dataset weight: the padding bits after the last code are not 0");
    }
    return QAT_OK;
}

static const char *bits_range(int bits, char *buf, size_t n)
{
    if (bits == 1) snprintf(buf, n, "{-1, +1}");
    else snprintf(buf, n, "[%d, %d]", -(1 << (bits - 1)), (1 << (bits - 1)) - 1);
    return buf;
}

/* Reads the weight wd[rank] (wd[1] checked against the input) in its
 * encoding into op->weight (int8, dense) and records how it was stored. */
static int ld_weight(const ld_ctx *c, hid_t g, rt_op *op, const ld_wenc *we, int rank, const int64_t *wd)
{
    int st = QAT_OK;
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)wd[i];
    char rb[32], what[64];
    if (we->enc == WENC_INT8) {
        if ((st = ld_dset(c, g, QAT_I8_DSET_WEIGHT, LD_I8, rank, wd, (void **)&op->weight))) return st;
        if (we->bits < 8)
            for (size_t i = 0; i < n; i++)
                if (!qat_weight_fits_bits(op->weight[i], we->bits))
                    return ld_err(c, QAT_ERR_FORMAT, "dataset weight: weight %zu = %d outside the %d-bit range %s "
                                  "(attribute weight_bits)", i, op->weight[i], we->bits,
                                  bits_range(we->bits, rb, sizeof rb));
        op->weight_stored = n;
        return QAT_OK;
    }
    if (we->enc == WENC_PACKED) {
        uint8_t *p = NULL;
        snprintf(what, sizeof what, "packed %d-bit weights", we->bits);
        if ((st = ld_payload(c, g, n, we->bits, what, &p))) return st;
        op->weight = qat_malloc(n);
        if (!op->weight) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory decoding weight");
        else qat_unpack_weights(op->weight, p, n, we->bits);
        op->weight_stored = qat_packed_bytes(n, we->bits);
        free(p);
        return st;
    }
    /* codebook, hashed */
    int8_t *cb = NULL;
    int K = 0;
    if ((st = ld_codebook(c, g, &cb, &K))) return st;
    int ib = qat_index_bits(K);
    if (we->bits != ib)
        st = ld_err(c, QAT_ERR_FORMAT, "attribute weight_bits = %d, expected ceil(log2 K) = %d for K = %d (dataset "
                    "codebook)", we->bits, ib, K);
    op->codebook_k = K;
    if (!st && we->enc == WENC_CODEBOOK) {
        uint8_t *p = NULL, *idx = NULL;
        snprintf(what, sizeof what, "%d-bit indices into a codebook of %d", ib, K);
        if (!(st = ld_payload(c, g, n, ib, what, &p))) {
            idx = qat_malloc(n);
            op->weight = qat_malloc(n);
            if (!idx || !op->weight) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory decoding weight");
        }
        if (!st) {
            qat_unpack_bits(idx, p, n, ib);
            for (size_t i = 0; !st && i < n; i++) {
                if (idx[i] >= K)
                    st = ld_err(c, QAT_ERR_FORMAT, "dataset weight: index %d of weight %zu is outside the codebook "
                                "(dataset codebook has K = %d)", idx[i], i, K);
                else
                    op->weight[i] = cb[idx[i]];
            }
        }
        op->weight_stored = qat_packed_bytes(n, ib) + (size_t)K;
        free(p);
        free(idx);
    } else if (!st) {
        int64_t seed = 0;
        if (H5Lexists(g, QAT_I8_DSET_WEIGHT, H5P_DEFAULT) > 0)
            st = ld_err(c, QAT_ERR_FORMAT, "dataset weight present: a hashed op stores no weights, only dataset "
                        "codebook and attribute hash_seed");
        if (!st) st = ld_attr_ints(c, g, QAT_I8_ATTR_HASH_SEED, &seed, 1);
        if (!st && (seed < 0 || seed > (int64_t)UINT32_MAX))
            st = ld_err(c, QAT_ERR_FORMAT, "attribute hash_seed = %lld, expected in [0, 2^32)", (long long)seed);
        if (!st) {
            op->hash_seed = (uint32_t)seed;
            op->weight = qat_malloc(n);
            if (!op->weight) st = qat_rti_error(QAT_ERR_NOMEM, "out of memory decoding weight");
        }
        for (size_t i = 0; !st && i < n; i++)
            op->weight[i] = cb[qat_i8_hash_bucket(op->hash_seed, (unsigned)i, (unsigned)K)];
        op->weight_stored = (size_t)K;
    }
    free(cb);
    return st;
}

/* conv2d and linear: weight, bias, multiplier, shift (+ weight_scale). */
static int ld_conv_linear(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *in)
{
    int st;
    int conv = op->type == RT_OP_CONV2D;
    if (conv) {
        if (in->out_ndim != 3)
            return ld_err(c, QAT_ERR_FORMAT, "conv2d needs a (C, H, W) input, op %d gives (%d,)",
                          op->inputs[0], in->out_shape[0]);
        int32_t stride = 1, pad = 0;
        if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_STRIDE, 1, 1024, &stride))) return st;
        if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_PAD, 0, 1024, &pad))) return st;
        op->stride = stride;
        op->pad = pad;
        op->in_c = in->out_shape[0];
        op->in_h = in->out_shape[1];
        op->in_w = in->out_shape[2];
        int32_t groups = 1;
        if (H5Aexists(g, QAT_I8_ATTR_GROUPS) > 0 &&
            (st = ld_attr_i32(c, g, QAT_I8_ATTR_GROUPS, 1, LD_MAX_DIM, &groups)))
            return st;
        if (op->in_c % groups)
            return ld_err(c, QAT_ERR_FORMAT, "attribute groups = %d does not divide the input's %d channels",
                          (int)groups, op->in_c);
        op->groups = groups;
    } else {
        op->stride = 1;
        op->pad = 0;
        op->in_c = (int)in->out_size;
        op->in_h = op->in_w = 1;
    }
    if ((st = ld_in_zp(c, g, QAT_I8_ATTR_IN_ZP, in, &op->in_zp))) return st;
    if ((st = ld_act(c, g, op))) return st;

    /* the weight's logical shape gives oc (checked against out_shape) and
     * the kernel; its encoding how to read it (ld_weight_header) */
    int want_rank = conv ? 4 : 2;
    int64_t wd[4] = {0, 0, 1, 1};
    ld_wenc we;
    if ((st = ld_weight_header(c, g, want_rank, &we, wd))) return st;
    int oc = (int)wd[0];
    int kh = conv ? (int)wd[2] : 1, kw = conv ? (int)wd[3] : 1;
    if (conv) {
        int ho = op->in_h + 2 * op->pad - kh, wo = op->in_w + 2 * op->pad - kw;
        if (ho < 0 || wo < 0)
            return ld_err(c, QAT_ERR_FORMAT,
                          "kernel %dx%d is larger than the padded input %dx%d", kh, kw,
                          op->in_h + 2 * op->pad, op->in_w + 2 * op->pad);
        ho = ho / op->stride + 1;
        wo = wo / op->stride + 1;
        if ((st = ld_expect_shape(c, op, 3, oc, ho, wo))) return st;
    } else if ((st = ld_expect_shape(c, op, 1, oc, 0, 0))) {
        return st;
    }
    op->oc = oc;
    op->ic = op->in_c;
    op->kh = kh;
    op->kw = kw;
    const int G = op->groups, icg = op->ic / G;
    if (oc % G)
        return ld_err(c, QAT_ERR_FORMAT, "attribute groups = %d does not divide the %d output channels "
                      "(dataset weight [OC, IC/groups, KH, KW])", G, oc);
    if (G > 1 && wd[1] != icg)
        return ld_err(c, QAT_ERR_FORMAT, "%s has %lld input channels per group, expected IC/groups = %d/%d = %d "
                      "(shape [OC, IC/groups, KH, KW])", we.enc == WENC_INT8 ? "dataset weight" : "attribute weight_shape",
                      (long long)wd[1], op->ic, G, icg);
    if (we.enc != WENC_INT8 && wd[1] != icg)
        return ld_err(c, QAT_ERR_FORMAT, "attribute weight_shape[1] = %lld, expected the input's %d %s",
                      (long long)wd[1], op->ic, conv ? "channels" : "features");
    wd[1] = icg;
    if ((st = ld_weight(c, g, op, &we, want_rank, wd))) return st;
    int64_t od[1] = {oc};
    if ((st = ld_dset(c, g, QAT_I8_DSET_BIAS, LD_I32, 1, od, (void **)&op->bias))) return st;
    if ((st = ld_dset(c, g, QAT_I8_DSET_MULTIPLIER, LD_I32, 1, od, (void **)&op->mult))) return st;
    if ((st = ld_dset(c, g, QAT_I8_DSET_SHIFT, LD_I32, 1, od, (void **)&op->shift))) return st;
    if (H5Lexists(g, QAT_I8_DSET_WEIGHT_SCALE, H5P_DEFAULT) > 0 &&
        (st = ld_dset(c, g, QAT_I8_DSET_WEIGHT_SCALE, LD_F32, 1, od, (void **)&op->weight_scale)))
        return st;
    for (int o = 0; o < oc; o++)
        if ((st = ld_requant_params(c, QAT_I8_ATTR_MULTIPLIER, op->mult[o], op->shift[o], o))) return st;
    if (H5Lexists(g, QAT_I8_DSET_ACT_MAX_CHANNEL, H5P_DEFAULT) > 0) {
        if ((st = ld_dset(c, g, QAT_I8_DSET_ACT_MAX_CHANNEL, LD_I32, 1, od, (void **)&op->act_max_c))) return st;
        for (int o = 0; o < oc; o++)
            if (op->act_max_c[o] < op->act_min || op->act_max_c[o] > 127)
                return ld_err(c, QAT_ERR_FORMAT, "dataset act_max_channel[%d] = %d, expected in [act_min = %d, 127]",
                              o, (int)op->act_max_c[o], (int)op->act_min);
    }

    /* every accumulator must fit int32: |bias| + max|x - zp| * sum|w| */
    int64_t dev = op->in_zp + 128 > 127 - op->in_zp ? op->in_zp + 128 : 127 - op->in_zp;
    size_t k = (size_t)icg * (size_t)kh * (size_t)kw;
    for (int o = 0; o < oc; o++) {
        const int8_t *w = op->weight + (size_t)o * k;
        int64_t sa = 0;
        for (size_t i = 0; i < k; i++) sa += w[i] < 0 ? -(int64_t)w[i] : w[i];
        int64_t b = op->bias[o] < 0 ? -(int64_t)op->bias[o] : op->bias[o];
        if (b + dev * sa > INT32_MAX)
            return ld_err(c, QAT_ERR_FORMAT,
                          "channel %d: |bias| + %lld * sum|weight| = %lld overflows the int32 "
                          "accumulator",
                          o, (long long)dev, (long long)(b + dev * sa));
    }
    op->weight_bytes = (size_t)oc * k + (size_t)oc * (op->act_max_c ? 16 : 12);
    op->wenc = wenc_names[we.enc];
    op->wbits = we.bits;
    return QAT_OK;
}

static int ld_pool(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *in)
{
    int st;
    if (in->out_ndim != 3)
        return ld_err(c, QAT_ERR_FORMAT, "%s needs a (C, H, W) input, op %d gives (%d,)",
                      op_type_names[op->type], op->inputs[0], in->out_shape[0]);
    int C = in->out_shape[0], H = in->out_shape[1], W = in->out_shape[2];
    op->in_c = C;
    op->in_h = H;
    op->in_w = W;
    if (op->type == RT_OP_GLOBAL_AVGPOOL) {
        if ((st = ld_expect_shape(c, op, 1, C, 0, 0))) return st;
        op->kernel = 0;
        if ((int64_t)H * W * 255 > INT32_MAX)
            return ld_err(c, QAT_ERR_FORMAT, "input of %dx%d pixels overflows the accumulator", H,
                          W);
    } else {
        int32_t k = 1, s = 1;
        if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_KERNEL, 1, 1024, &k))) return st;
        if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_STRIDE, 1, 1024, &s))) return st;
        if (k > H || k > W)
            return ld_err(c, QAT_ERR_FORMAT, "kernel %d is larger than the %dx%d input", (int)k, H,
                          W);
        op->kernel = k;
        op->stride = s;
        if ((st = ld_expect_shape(c, op, 3, C, (H - k) / s + 1, (W - k) / s + 1))) return st;
    }
    if (op->type == RT_OP_MAXPOOL2D) return QAT_OK; /* no requantization */
    if ((st = ld_in_zp(c, g, QAT_I8_ATTR_IN_ZP, in, &op->in_zp))) return st;
    int64_t m, sh;
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_MULTIPLIER, &m, 1))) return st;
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_SHIFT, &sh, 1))) return st;
    if ((st = ld_requant_params(c, QAT_I8_ATTR_MULTIPLIER, m, sh, -1))) return st;
    op->pool_mult = (int32_t)m;
    op->pool_shift = (int32_t)sh;
    return ld_act(c, g, op); /* the output quantizer's range */
}

static int ld_add(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *a, const rt_op *b)
{
    int st;
    int same = a->out_ndim == b->out_ndim;
    for (int i = 0; same && i < a->out_ndim; i++) same = a->out_shape[i] == b->out_shape[i];
    char sa[64], sb[64];
    if (!same)
        return ld_err(c, QAT_ERR_FORMAT, "inputs have different shapes: op %d %s, op %d %s",
                      op->inputs[0], shape_of(a, sa, sizeof sa), op->inputs[1],
                      shape_of(b, sb, sizeof sb));
    if ((st = ld_expect_shape(c, op, a->out_ndim, a->out_shape[0], a->out_shape[1],
                              a->out_shape[2])))
        return st;
    int64_t m[2], z[2], t;
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_MULTIPLIER, m, 2))) return st;
    for (int i = 0; i < 2; i++)
        if (m[i] < 0 || m[i] >= ((int64_t)1 << 31))
            return ld_err(c, QAT_ERR_FORMAT, "multiplier[%d] = %lld outside [0, 2^31)", i,
                          (long long)m[i]);
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_ADD_SHIFT, &t, 1))) return st;
    if (t < 1 || t > 62)
        return ld_err(c, QAT_ERR_FORMAT, "add_shift = %lld outside [1, 62]", (long long)t);
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_IN_ZP, z, 2))) return st;
    for (int i = 0; i < 2; i++) {
        if (z[i] < -128 || z[i] > 127)
            return ld_err(c, QAT_ERR_FORMAT, "in_zero_point[%d] = %lld outside [-128, 127]", i,
                          (long long)z[i]);
        op->add_mult[i] = (int32_t)m[i];
        op->add_zp[i] = (int32_t)z[i];
    }
    op->add_shift = (int32_t)t;
    return ld_act(c, g, op);
}

/* ---- format version 3: lut, concat, upsample ---- */

static int ld_same_shape(const ld_ctx *c, const rt_op *op, const rt_op *in)
{
    int same = op->out_ndim == in->out_ndim;
    for (int k = 0; same && k < in->out_ndim; k++) same = op->out_shape[k] == in->out_shape[k];
    char s1[64], s2[64];
    if (!same)
        return ld_err(c, QAT_ERR_FORMAT, "out_shape is %s, expected the input's %s", shape_of(op, s1, sizeof s1),
                      shape_of(in, s2, sizeof s2));
    return QAT_OK;
}

/* lut: dataset table int8[256], y = table[x + 128] */
static int ld_lut(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *in)
{
    int st = ld_same_shape(c, op, in);
    if (st) return st;
    int r = -1;
    hsize_t fd[H5S_MAX_RANK] = {0};
    if ((st = ld_dset_dims(c, g, QAT_I8_DSET_TABLE, &r, fd))) return st;
    if (r != 1 || fd[0] != QAT_I8_TABLE_LEN)
        return ld_err(c, QAT_ERR_FORMAT, "dataset table has %s%llu elements, expected %d (one per int8 value)",
                      r == 1 ? "" : "rank != 1, ", r == 1 ? (unsigned long long)fd[0] : 0ULL, QAT_I8_TABLE_LEN);
    int8_t *t = NULL;
    int64_t d256[1] = {QAT_I8_TABLE_LEN};
    if ((st = ld_dset(c, g, QAT_I8_DSET_TABLE, LD_I8, 1, d256, (void **)&t))) return st;
    memcpy(op->lut, t, 256);
    free(t);
    op->weight_bytes = 256;
    return QAT_OK;
}

/* concat: k inputs of the same (H, W) (or all flat), channels (features)
 * summed; per input multiplier, shift, in_zero_point (int32[k]) */
static int ld_concat(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *ops)
{
    int st;
    const int k = op->n_inputs;
    const rt_op *a = &ops[op->inputs[0]];
    char s1[64], s2[64];
    int total = 0;
    for (int i = 0; i < k; i++) {
        const rt_op *b = &ops[op->inputs[i]];
        int same = b->out_ndim == a->out_ndim && (a->out_ndim == 1 || (b->out_shape[1] == a->out_shape[1] &&
                                                                    b->out_shape[2] == a->out_shape[2]));
        if (!same)
            return ld_err(c, QAT_ERR_FORMAT, "inputs[%d] (op %d) has shape %s, not concatenable with inputs[0] "
                          "(op %d) %s: every input needs the same H, W (or all flat)", i, op->inputs[i],
                          shape_of(b, s1, sizeof s1), op->inputs[0], shape_of(a, s2, sizeof s2));
        op->cat_c[i] = b->out_shape[0];
        total += b->out_shape[0];
    }
    if ((st = ld_expect_shape(c, op, a->out_ndim, total, a->out_shape[1], a->out_shape[2]))) return st;
    int64_t m[QAT_RT_MAX_INPUTS], sh[QAT_RT_MAX_INPUTS], z[QAT_RT_MAX_INPUTS];
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_MULTIPLIER, m, k))) return st;
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_SHIFT, sh, k))) return st;
    if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_IN_ZP, z, k))) return st;
    for (int i = 0; i < k; i++) {
        char what[48];
        snprintf(what, sizeof what, "multiplier[%d] =", i);
        if ((st = ld_requant_params(c, what, m[i], sh[i], -1))) return st;
        if (z[i] < -128 || z[i] > 127)
            return ld_err(c, QAT_ERR_FORMAT, "in_zero_point[%d] = %lld outside [-128, 127]", i, (long long)z[i]);
        op->cat_mult[i] = (int32_t)m[i];
        op->cat_shift[i] = (int32_t)sh[i];
        op->cat_zp[i] = (int32_t)z[i];
    }
    return ld_act(c, g, op);
}

/* upsample: attribute scale (the factor), nearest neighbour */
static int ld_upsample(const ld_ctx *c, hid_t g, rt_op *op, const rt_op *in)
{
    int st;
    if (in->out_ndim != 3)
        return ld_err(c, QAT_ERR_FORMAT, "upsample needs a (C, H, W) input, op %d gives (%d,)", op->inputs[0],
                      in->out_shape[0]);
    int32_t f = 1;
    if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_SCALE, 1, 1024, &f))) return st;
    if ((int64_t)in->out_shape[1] * f > LD_MAX_DIM || (int64_t)in->out_shape[2] * f > LD_MAX_DIM)
        return ld_err(c, QAT_ERR_FORMAT, "attribute scale = %d makes the output larger than %d", (int)f, LD_MAX_DIM);
    if ((st = ld_expect_shape(c, op, 3, in->out_shape[0], in->out_shape[1] * f, in->out_shape[2] * f))) return st;
    op->kernel = f;
    op->in_c = in->out_shape[0];
    op->in_h = in->out_shape[1];
    op->in_w = in->out_shape[2];
    return QAT_OK;
}

static int ld_op(ld_ctx *c, hid_t g, rt_op *ops, int i)
{
    rt_op *op = &ops[i];
    char *type = NULL;
    int st = ld_attr_str(c, g, QAT_I8_ATTR_TYPE, &type);
    if (st) return st;
    int ty = -1;
    for (int k = 0; k < RT_OP_COUNT; k++)
        if (!strcmp(type, op_type_names[k])) ty = k;
    if (ty < 0) {
        st = ld_err(c, QAT_ERR_UNSUPPORTED, "unknown op type '%s'", type);
        free(type);
        return st;
    }
    free(type);
    op->type = (rt_op_type)ty;
    if ((st = ld_attr_str(c, g, QAT_I8_ATTR_NAME, &op->name))) return st;
    size_t wl = strlen(c->where);
    snprintf(c->where + wl, sizeof c->where - wl, " (%s)", op->name);

    if (i == 0 && op->type != RT_OP_INPUT)
        return ld_err(c, QAT_ERR_FORMAT, "op 0 is %s, expected input", op_type_names[op->type]);
    if (i > 0 && op->type == RT_OP_INPUT)
        return ld_err(c, QAT_ERR_FORMAT, "only op 0 may be an input op");

    op->groups = 1;
    int nin = op->type == RT_OP_INPUT ? 0 : op->type == RT_OP_ADD ? 2 : 1;
    int64_t in64[QAT_RT_MAX_INPUTS] = {0};
    {
        /* inputs: int32[k]; k = 0 may also be stored as an empty attribute */
        hid_t a = -1;
        if (H5Aexists(g, QAT_I8_ATTR_INPUTS) <= 0)
            return ld_err(c, QAT_ERR_FORMAT, "missing attribute inputs");
        a = H5Aopen(g, QAT_I8_ATTR_INPUTS, H5P_DEFAULT);
        hid_t s = a >= 0 ? H5Aget_space(a) : -1;
        hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
        H5S_class_t scl = s >= 0 ? H5Sget_simple_extent_type(s) : H5S_NO_CLASS;
        if (s >= 0) H5Sclose(s);
        if (a >= 0) H5Aclose(a);
        if (scl == H5S_NULL) np = 0;
        if (op->type == RT_OP_CONCAT) {
            if (np < 2 || np > QAT_RT_MAX_INPUTS)
                return ld_err(c, QAT_ERR_FORMAT, "attribute inputs has %lld values, expected 2 to %d for concat",
                              (long long)np, QAT_RT_MAX_INPUTS);
            nin = (int)np;
        }
        if (np != nin)
            return ld_err(c, QAT_ERR_FORMAT, "attribute inputs has %lld values, expected %d for %s",
                          (long long)np, nin, op_type_names[op->type]);
        if (nin && (st = ld_attr_ints(c, g, QAT_I8_ATTR_INPUTS, in64, nin))) return st;
    }
    op->n_inputs = nin;
    for (int k = 0; k < nin; k++) {
        if (in64[k] < 0 || in64[k] >= i)
            return ld_err(c, QAT_ERR_FORMAT, "inputs[%d] = %lld is not an earlier op (0..%d)", k,
                          (long long)in64[k], i - 1);
        op->inputs[k] = (int)in64[k];
    }

    /* out_shape: int32[3] or int32[1] */
    {
        int64_t sh[3] = {0, 0, 0};
        int nd = 0;
        hid_t a = H5Aexists(g, QAT_I8_ATTR_OUT_SHAPE) > 0 ? H5Aopen(g, QAT_I8_ATTR_OUT_SHAPE, H5P_DEFAULT) : -1;
        if (a < 0) return ld_err(c, QAT_ERR_FORMAT, "missing attribute out_shape");
        hid_t s = H5Aget_space(a);
        hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
        if (s >= 0) H5Sclose(s);
        H5Aclose(a);
        if (np != 1 && np != 3)
            return ld_err(c, QAT_ERR_FORMAT, "attribute out_shape has %lld values, expected 3 or 1",
                          (long long)np);
        nd = (int)np;
        if ((st = ld_attr_ints(c, g, QAT_I8_ATTR_OUT_SHAPE, sh, nd))) return st;
        int64_t total = 1;
        for (int k = 0; k < nd; k++) {
            if (sh[k] < 1 || sh[k] > LD_MAX_DIM)
                return ld_err(c, QAT_ERR_FORMAT, "out_shape[%d] = %lld outside [1, %d]", k,
                              (long long)sh[k], LD_MAX_DIM);
            total *= sh[k];
            op->out_shape[k] = (int)sh[k];
        }
        if (total > LD_MAX_ELEMS)
            return ld_err(c, QAT_ERR_FORMAT, "out_shape has %lld elements per sample, at most %lld",
                          (long long)total, (long long)LD_MAX_ELEMS);
        for (int k = nd; k < 3; k++) op->out_shape[k] = 1;
        op->out_ndim = nd;
        op->out_size = (size_t)total;
    }
    if ((st = ld_attr_f32(c, g, QAT_I8_ATTR_OUT_SCALE, 1, &op->out_scale))) return st;
    if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_OUT_ZP, -128, 127, &op->out_zp))) return st;

    /* float ops (dtype attribute): load_float.c; the format version 3
     * additions have no float form */
    if (H5Aexists(g, QAT_I8_ATTR_DTYPE) > 0) {
        if (op->type == RT_OP_LUT || op->type == RT_OP_CONCAT || op->type == RT_OP_UPSAMPLE)
            return ld_err(c, QAT_ERR_UNSUPPORTED, "a float %s op (attribute dtype) is not supported: %s is int8 only",
                          op_type_names[op->type], op_type_names[op->type]);
        if (op->type == RT_OP_CONV2D && H5Aexists(g, QAT_I8_ATTR_GROUPS) > 0) {
            int32_t gr = 1;
            if ((st = ld_attr_i32(c, g, QAT_I8_ATTR_GROUPS, 1, LD_MAX_DIM, &gr))) return st;
            if (gr != 1)
                return ld_err(c, QAT_ERR_UNSUPPORTED, "a float conv2d (attribute dtype) with groups = %d is not "
                              "supported: grouped convolutions are int8 only", (int)gr);
        }
        return qat_rti_load_float_op(c->src, c->where, g, ops, i);
    }
    for (int k = 0; k < nin; k++)
        if (ops[op->inputs[k]].fdt != RT_DT_INT8)
            return ld_err(c, QAT_ERR_FORMAT, "an int8 %s cannot read the float output of op %d",
                          op_type_names[op->type], op->inputs[k]);

    const rt_op *in = nin ? &ops[op->inputs[0]] : NULL;
    char s1[64], s2[64];
    switch (op->type) {
    case RT_OP_INPUT: {
        if ((st = ld_attr_f32(c, g, QAT_I8_ATTR_MEAN, 0, &op->mean))) return st;
        if ((st = ld_attr_f32(c, g, QAT_I8_ATTR_STD, 1, &op->std))) return st;
        if ((st = ld_act(c, g, op))) return st; /* the quantizer's range */
        int8_t *lut = NULL;
        int64_t d256[1] = {256};
        if ((st = ld_dset(c, g, QAT_I8_DSET_LUT, LD_I8, 1, d256, (void **)&lut))) return st;
        memcpy(op->lut, lut, 256);
        free(lut);
        return QAT_OK;
    }
    case RT_OP_CONV2D:
    case RT_OP_LINEAR: return ld_conv_linear(c, g, op, in);
    case RT_OP_ADD: return ld_add(c, g, op, in, &ops[op->inputs[1]]);
    case RT_OP_GLOBAL_AVGPOOL:
    case RT_OP_AVGPOOL2D:
    case RT_OP_MAXPOOL2D: return ld_pool(c, g, op, in);
    case RT_OP_LUT: return ld_lut(c, g, op, in);
    case RT_OP_CONCAT: return ld_concat(c, g, op, ops);
    case RT_OP_UPSAMPLE: return ld_upsample(c, g, op, in);
    case RT_OP_RELU:
    case RT_OP_FLATTEN:
        if (op->type == RT_OP_RELU) {
            int same = op->out_ndim == in->out_ndim;
            for (int k = 0; same && k < in->out_ndim; k++)
                same = op->out_shape[k] == in->out_shape[k];
            if (!same)
                return ld_err(c, QAT_ERR_FORMAT, "out_shape is %s, expected the input's %s",
                              shape_of(op, s1, sizeof s1), shape_of(in, s2, sizeof s2));
        } else if ((st = ld_expect_shape(c, op, 1, (int)in->out_size, 0, 0))) {
            return st;
        }
        /* the own out_zero_point (relu's threshold) is the one to use, even
         * if it differs from the input's */
        return QAT_OK;
    default: break;
    }
    return ld_err(c, QAT_ERR_UNSUPPORTED, "op type not handled");
}

void qat_rti_free_ops(qat_rt_model *m)
{
    if (!m) return;
    for (int i = 0; m->ops && i < m->n_ops; i++) {
        rt_op *op = &m->ops[i];
        free(op->name);
        free(op->weight);
        free(op->bias);
        free(op->mult);
        free(op->shift);
        free(op->weight_scale);
        free(op->act_max_c);
        qat_rti_float_free_op(op);
        qat_rti_gemm_free(&op->g);
    }
    free(m->ops);
    m->ops = NULL;
    free(m->arch);
    free(m->source);
    m->arch = m->source = NULL;
}

static herr_t payload_cb(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    size_t sz = t >= 0 ? H5Tget_size(t) : 0;
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    if (np < 0) return -1;
    *(size_t *)data += (size_t)np * sz;
    return 0;
}

int qat_rti_h5_payload_bytes(hid_t file, size_t *bytes)
{
    *bytes = 0;
    return H5Ovisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, payload_cb, bytes) < 0 ? -1 : 0;
}

static int ld_file(ld_ctx *c, hid_t f, qat_rt_model *m)
{
    int st;
    char *fmt = NULL;
    if ((st = ld_attr_str(c, f, QAT_I8_ATTR_FORMAT, &fmt))) return st;
    if (strcmp(fmt, QAT_I8_FORMAT_NAME)) {
        st = ld_err(c, QAT_ERR_FORMAT, "qat_format is '%s', expected '" QAT_I8_FORMAT_NAME "'", fmt);
        free(fmt);
        return st;
    }
    free(fmt);
    int64_t ver;
    if ((st = ld_attr_ints(c, f, QAT_I8_ATTR_VERSION, &ver, 1))) return st;
    if (ver < QAT_I8_FORMAT_VERSION_MIN || ver > QAT_I8_FORMAT_VERSION)
        return ld_err(c, QAT_ERR_UNSUPPORTED, "format_version %lld is not supported (this runtime reads %d to %d)",
                      (long long)ver, QAT_I8_FORMAT_VERSION_MIN, QAT_I8_FORMAT_VERSION);
    if ((st = ld_attr_str(c, f, QAT_I8_ATTR_ARCH, &m->arch))) return st;
    if (H5Aexists(f, QAT_I8_ATTR_SOURCE) > 0 && (st = ld_attr_str(c, f, QAT_I8_ATTR_SOURCE, &m->source))) return st;
    int32_t n = 0;
    if ((st = ld_attr_i32(c, f, QAT_I8_ATTR_NUM_OPS, 1, LD_MAX_OPS, &n))) return st;
    if (H5Lexists(f, QAT_I8_GROUP_OPS, H5P_DEFAULT) <= 0)
        return ld_err(c, QAT_ERR_FORMAT, "missing group /ops");
    hid_t ops = H5Gopen2(f, QAT_I8_GROUP_OPS, H5P_DEFAULT);
    if (ops < 0) return ld_err(c, QAT_ERR_FORMAT, "/ops is not a group");
    H5G_info_t gi;
    if (H5Gget_info(ops, &gi) < 0) {
        H5Gclose(ops);
        return ld_err(c, QAT_ERR_FORMAT, "cannot list group /ops");
    }
    if (gi.nlinks != (hsize_t)n) {
        H5Gclose(ops);
        return ld_err(c, QAT_ERR_FORMAT, "group /ops has %llu members, num_ops is %d",
                      (unsigned long long)gi.nlinks, (int)n);
    }
    m->ops = qat_calloc((size_t)n, sizeof *m->ops);
    if (!m->ops) {
        H5Gclose(ops);
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory");
    }
    m->n_ops = n;
    int width = 3;
    for (int v = n - 1; v >= 1000; v /= 10) width++;
    for (int i = 0; i < n && !st; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "%0*d", width < 9 ? width : 9, i);
        if (H5Lexists(ops, nm, H5P_DEFAULT) <= 0) snprintf(nm, sizeof nm, "%03d", i);
        snprintf(c->where, sizeof c->where, "ops/%s", nm);
        hid_t g = H5Lexists(ops, nm, H5P_DEFAULT) > 0 ? H5Gopen2(ops, nm, H5P_DEFAULT) : -1;
        if (g < 0) {
            st = ld_err(c, QAT_ERR_FORMAT, "missing op group");
            break;
        }
        st = ld_op(c, g, m->ops, i);
        H5Gclose(g);
    }
    H5Gclose(ops);
    c->where[0] = 0;
    if (st) return st;
    for (int i = 0; i < n; i++) m->has_float |= m->ops[i].fdt != RT_DT_INT8;
    size_t payload = 0;
    if (qat_rti_h5_payload_bytes(f, &payload) < 0)
        return ld_err(c, QAT_ERR_FORMAT, "cannot list the datasets");
    m->payload_bytes = payload;
    return QAT_OK;
}

int qat_rti_load(const void *image, size_t size, const char *path, qat_rt_model **out)
{
    *out = NULL;
    ld_ctx c = {path ? path : "memory image", ""};
    H5E_auto2_t old_fn = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f;
    if (image) {
        /* the core (memory) driver over a copy of the image; the caller's
         * buffer may go away after this call */
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        f = -1;
        if (fapl >= 0 && H5Pset_fapl_core(fapl, 1 << 16, 0) >= 0 &&
            H5Pset_file_image(fapl, (void *)(uintptr_t)image, size) >= 0)
            f = H5Fopen("qat-int8-model-image", H5F_ACC_RDONLY, fapl);
        if (fapl >= 0) H5Pclose(fapl);
    } else {
        htri_t is = H5Fis_hdf5(path);
        f = is > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    }
    int st;
    if (f < 0) {
        FILE *probe = image ? NULL : fopen(path, "rb");
        if (!image && !probe)
            st = qat_rti_error(QAT_ERR_IO, "%s: cannot open the file", c.src);
        else
            st = qat_rti_error(QAT_ERR_FORMAT, "%s: not a readable HDF5 file (truncated or another format)",
                               c.src);
        if (probe) fclose(probe);
        H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
        return st;
    }
    qat_rt_model *m = qat_calloc(1, sizeof *m);
    if (!m) {
        H5Fclose(f);
        H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory");
    }
    st = ld_file(&c, f, m);
    H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    if (st) {
        qat_rti_free_ops(m);
        free(m);
        return st;
    }
    *out = m;
    return QAT_OK;
}
