/* Private HDF5 helpers (io/h5util.h): typed, shape-checked arrays and
 * attributes, nested groups, atomic file writes, and error messages that
 * name the file and the object. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/h5util.h"

/* ---- types ---- */

static const char *const type_names[QAT_H5_TYPE_COUNT] = {
    [QAT_H5_F32] = "float32", [QAT_H5_F64] = "float64", [QAT_H5_I8] = "int8",
    [QAT_H5_U8] = "uint8",    [QAT_H5_I16] = "int16",   [QAT_H5_I32] = "int32",
    [QAT_H5_U32] = "uint32",  [QAT_H5_I64] = "int64",   [QAT_H5_U64] = "uint64",
    [QAT_H5_STR] = "string",
};
_Static_assert(QAT_H5_TYPE_COUNT == 10, "type_names must name every qat_h5_type");

static const size_t type_sizes[QAT_H5_TYPE_COUNT] = {
    [QAT_H5_F32] = 4, [QAT_H5_F64] = 8, [QAT_H5_I8] = 1,  [QAT_H5_U8] = 1,  [QAT_H5_I16] = 2,
    [QAT_H5_I32] = 4, [QAT_H5_U32] = 4, [QAT_H5_I64] = 8, [QAT_H5_U64] = 8, [QAT_H5_STR] = 0,
};

const char *qat_h5_type_name(qat_h5_type t)
{
    return (unsigned)t < QAT_H5_TYPE_COUNT ? type_names[t] : "unknown";
}

size_t qat_h5_type_size(qat_h5_type t) { return (unsigned)t < QAT_H5_TYPE_COUNT ? type_sizes[t] : 0; }

/* The in-memory (native) type; the H5T_* constants are not compile-time
 * constants, hence switches rather than tables. */
static hid_t mem_type(qat_h5_type t)
{
    switch (t) {
    case QAT_H5_F32: return H5T_NATIVE_FLOAT;
    case QAT_H5_F64: return H5T_NATIVE_DOUBLE;
    case QAT_H5_I8: return H5T_NATIVE_INT8;
    case QAT_H5_U8: return H5T_NATIVE_UINT8;
    case QAT_H5_I16: return H5T_NATIVE_INT16;
    case QAT_H5_I32: return H5T_NATIVE_INT32;
    case QAT_H5_U32: return H5T_NATIVE_UINT32;
    case QAT_H5_I64: return H5T_NATIVE_INT64;
    case QAT_H5_U64: return H5T_NATIVE_UINT64;
    default: return -1;
    }
}

/* The stored type: little-endian, IEEE floats. */
static hid_t file_type(qat_h5_type t)
{
    switch (t) {
    case QAT_H5_F32: return H5T_IEEE_F32LE;
    case QAT_H5_F64: return H5T_IEEE_F64LE;
    case QAT_H5_I8: return H5T_STD_I8LE;
    case QAT_H5_U8: return H5T_STD_U8LE;
    case QAT_H5_I16: return H5T_STD_I16LE;
    case QAT_H5_I32: return H5T_STD_I32LE;
    case QAT_H5_U32: return H5T_STD_U32LE;
    case QAT_H5_I64: return H5T_STD_I64LE;
    case QAT_H5_U64: return H5T_STD_U64LE;
    default: return -1;
    }
}

static int is_unsigned(qat_h5_type t)
{
    return t == QAT_H5_U8 || t == QAT_H5_U32 || t == QAT_H5_U64;
}

/* Does the stored type ft hold exactly t (class, size, signedness)? */
static int type_matches(hid_t ft, qat_h5_type t)
{
    H5T_class_t c = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    if (t == QAT_H5_STR) return c == H5T_STRING;
    if (t == QAT_H5_F32 || t == QAT_H5_F64) return c == H5T_FLOAT && sz == type_sizes[t];
    if (c != H5T_INTEGER || sz != type_sizes[t]) return 0;
    return (H5Tget_sign(ft) == H5T_SGN_NONE) == is_unsigned(t);
}

/* "float64", "uint16", "string", "compound" ... of a stored type. */
static const char *describe_type(hid_t ft, char *buf, size_t n)
{
    size_t bits = H5Tget_size(ft) * 8;
    switch (H5Tget_class(ft)) {
    case H5T_FLOAT: snprintf(buf, n, "float%zu", bits); break;
    case H5T_INTEGER:
        snprintf(buf, n, "%sint%zu", H5Tget_sign(ft) == H5T_SGN_NONE ? "u" : "", bits);
        break;
    case H5T_STRING: snprintf(buf, n, "string"); break;
    case H5T_COMPOUND: snprintf(buf, n, "compound"); break;
    case H5T_ENUM: snprintf(buf, n, "enum"); break;
    case H5T_ARRAY: snprintf(buf, n, "array"); break;
    case H5T_VLEN: snprintf(buf, n, "vlen"); break;
    case H5T_OPAQUE: snprintf(buf, n, "opaque"); break;
    case H5T_REFERENCE: snprintf(buf, n, "reference"); break;
    default: snprintf(buf, n, "an unsupported type"); break;
    }
    return buf;
}

static void dims_str(char *buf, size_t n, int ndim, const hsize_t *dims)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%llu" : "%llu", (unsigned long long)dims[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

/* ---- quiet ---- */

void qat_h5_quiet_begin(qat_h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void qat_h5_quiet_end(const qat_h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

/* ---- errors ---- */

typedef struct walk_buf {
    char *buf;
    size_t size;
} walk_buf;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    walk_buf *w = data;
    /* upward walk: entry 0 is where HDF5 detected the error */
    if (n == 0 && e->desc && e->desc[0]) snprintf(w->buf, w->size, "%s", e->desc);
    return 0;
}

/* HDF5's innermost error message, then clears the stack. */
static const char *hdf5_detail(char *buf, size_t size)
{
    walk_buf w = {buf, size};
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    if (!buf[0]) snprintf(buf, size, "unknown HDF5 error");
    return buf;
}

const char *qat_h5_file_name(hid_t loc, char *buf, size_t size)
{
    ssize_t n = H5Fget_name(loc, buf, size);
    if (n <= 0) snprintf(buf, size, "(unknown file)");
    return buf;
}

/* Appends s to buf (size bytes, NUL-terminated), truncating. */
static void append(char *buf, size_t size, const char *s)
{
    size_t off = strlen(buf), n = strlen(s);
    if (off + 1 >= size) return;
    if (n > size - 1 - off) n = size - 1 - off;
    memcpy(buf + off, s, n);
    buf[off + n] = '\0';
}

const char *qat_h5_path(hid_t loc, const char *name, char *buf, size_t size)
{
    buf[0] = '\0';
    if (!name || name[0] != '/') {
        if (H5Iget_name(loc, buf, size) <= 0) snprintf(buf, size, "?");
        if (name && strcmp(buf, "/") != 0) append(buf, size, "/");
    }
    if (name) append(buf, size, name);
    return buf;
}

/* "<file>: <target>: <message>[ (HDF5: <detail>)]". detail must have been
 * taken before any other HDF5 call: every API call clears the error stack. */
static int vfail(int status, const char *detail, hid_t loc, const char *target, const char *fmt, va_list ap)
{
    char msg[320], file[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    qat_h5_file_name(loc, file, sizeof file);
    if (detail) return qat_error(status, "%s: %s: %s (HDF5: %s)", file, target, msg, detail);
    return qat_error(status, "%s: %s: %s", file, target, msg);
}

static int fail_target(int status, int with_hdf5, hid_t loc, const char *what, const char *name,
                       const char *fmt, va_list ap)
{
    char detail[200], path[400], target[420];
    if (with_hdf5) hdf5_detail(detail, sizeof detail);
    qat_h5_path(loc, name, path, sizeof path);
    snprintf(target, sizeof target, "%s%s%s", what ? what : "", what ? " " : "", path);
    return vfail(status, with_hdf5 ? detail : NULL, loc, target, fmt, ap);
}

int qat_h5_fail(int status, hid_t loc, const char *what, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_target(status, 0, loc, what, name, fmt, ap);
    va_end(ap);
    return rc;
}

int qat_h5_fail_hdf5(int status, hid_t loc, const char *what, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_target(status, 1, loc, what, name, fmt, ap);
    va_end(ap);
    return rc;
}

/* "attribute 'lr' of /optim" */
static int attr_fail(int status, int with_hdf5, hid_t obj, const char *name, const char *fmt, ...)
    QAT_PRINTF(5, 6);
static int attr_fail(int status, int with_hdf5, hid_t obj, const char *name, const char *fmt, ...)
{
    char detail[200], path[400], target[480];
    if (with_hdf5) hdf5_detail(detail, sizeof detail);
    qat_h5_path(obj, NULL, path, sizeof path);
    snprintf(target, sizeof target, "attribute '%s' of %s", name, path);
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(status, with_hdf5 ? detail : NULL, obj, target, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- files ---- */

hid_t qat_h5_open_read(const char *path)
{
    char detail[200];
    if (!path || !path[0]) return qat_error(QAT_ERR_ARG, "open: file name is empty");
    struct stat sb;
    if (stat(path, &sb) != 0) return qat_error(QAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return qat_error(QAT_ERR_IO, "%s: cannot open: is a directory", path);
    if (access(path, R_OK) != 0) return qat_error(QAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
#if H5_VERSION_GE(1, 12, 0)
    htri_t is = H5Fis_accessible(path, H5P_DEFAULT);
#else
    htri_t is = H5Fis_hdf5(path);
#endif
    if (is == 0) {
        H5Eclear2(H5E_DEFAULT);
        return qat_error(QAT_ERR_FORMAT, "%s: not an HDF5 file", path);
    }
    hid_t f = is > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (f < 0)
        return qat_error(QAT_ERR_FORMAT, "%s: cannot open HDF5 file, damaged or truncated (HDF5: %s)", path,
                         hdf5_detail(detail, sizeof detail));
    return f;
}

int qat_h5_close(hid_t file, const char *path)
{
    char detail[200];
    if (file < 0) return QAT_OK;
    if (H5Fclose(file) < 0)
        return qat_error(QAT_ERR_IO, "%s: closing the file failed (HDF5: %s)", path,
                         hdf5_detail(detail, sizeof detail));
    return QAT_OK;
}

/* Closes every object of file f still open (a safety net: the writers close
 * what they open). Returns how many there were. */
static int close_open_objects(hid_t f)
{
    unsigned types = H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR;
    ssize_t n = H5Fget_obj_count(f, types);
    if (n <= 0) return 0;
    hid_t *ids = qat_malloc((size_t)n * sizeof *ids);
    if (!ids) return (int)n;
    n = H5Fget_obj_ids(f, types, (size_t)n, ids);
    for (ssize_t i = 0; i < n; i++) {
        switch (H5Iget_type(ids[i])) {
        case H5I_DATASET: H5Dclose(ids[i]); break;
        case H5I_GROUP: H5Gclose(ids[i]); break;
        case H5I_DATATYPE: H5Tclose(ids[i]); break;
        case H5I_ATTR: H5Aclose(ids[i]); break;
        default: break;
        }
    }
    free(ids);
    return (int)n;
}

int qat_h5_save_atomic(const char *path, qat_h5_writer fn, void *ctx)
{
    char tmp[4096], detail[200];
    if (!path || !path[0]) return qat_error(QAT_ERR_ARG, "save: file name is empty");
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return qat_error(QAT_ERR_ARG, "%s: file name too long", path);
    /* Creating the file ourselves gives the system's reason on failure
     * ("No such file or directory") rather than HDF5's stack. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return qat_error(QAT_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    close(fd);

    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = QAT_OK;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        rc = qat_error(QAT_ERR_IO, "%s: cannot create HDF5 file %s (HDF5: %s)", path, tmp,
                       hdf5_detail(detail, sizeof detail));
    } else {
        rc = fn(f, ctx);
        int left = close_open_objects(f);
        if (rc == QAT_OK && left)
            rc = qat_error(QAT_ERR_STATE, "%s: internal error: the writer left %d HDF5 objects open", path,
                           left);
        if (rc == QAT_OK && H5Fflush(f, H5F_SCOPE_LOCAL) < 0)
            rc = qat_error(QAT_ERR_IO, "%s: writing %s failed (HDF5: %s)", path, tmp,
                           hdf5_detail(detail, sizeof detail));
        if (H5Fclose(f) < 0 && rc == QAT_OK)
            rc = qat_error(QAT_ERR_IO, "%s: closing %s failed (HDF5: %s)", path, tmp,
                           hdf5_detail(detail, sizeof detail));
    }
    qat_h5_quiet_end(&q);

    if (rc == QAT_OK) {
        fd = open(tmp, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0)
            rc = qat_error(QAT_ERR_IO, "%s: cannot sync %s: %s", path, tmp, strerror(errno));
        if (fd >= 0) close(fd);
    }
    if (rc == QAT_OK && rename(tmp, path) != 0)
        rc = qat_error(QAT_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc != QAT_OK) {
        unlink(tmp);
        return rc;
    }
    /* Make the rename durable (best effort: not every file system can sync
     * a directory). */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    return QAT_OK;
}

int qat_h5_write_format(hid_t file, const char *format, int version)
{
    int rc = qat_h5_attr_write_str(file, "qat_format", format);
    return rc ? rc : qat_h5_attr_write_i32(file, "format_version", version);
}

int qat_h5_read_format(hid_t file, const char *const *kinds, int max_version, char *format,
                       size_t format_size, int *version)
{
    char file_name[256], kind[64];
    qat_h5_file_name(file, file_name, sizeof file_name);
    int ex = qat_h5_attr_exists(file, "qat_format");
    if (ex < 0) return ex;
    if (!ex)
        return qat_error(QAT_ERR_FORMAT, "%s: not a qat file (no qat_format attribute on the root group)",
                         file_name);
    int rc = qat_h5_attr_read_str(file, "qat_format", kind, sizeof kind);
    if (rc) return rc;
    if (kinds) {
        int ok = 0;
        char expected[256] = "";
        size_t off = 0;
        for (int i = 0; kinds[i]; i++) {
            if (strcmp(kinds[i], kind) == 0) ok = 1;
            off += (size_t)snprintf(expected + off, off < sizeof expected ? sizeof expected - off : 0,
                                    "%s'%s'", i ? " or " : "", kinds[i]);
            if (off >= sizeof expected) off = sizeof expected - 1;
        }
        if (!ok)
            return qat_error(QAT_ERR_FORMAT, "%s: is a '%s' file, expected %s", file_name, kind, expected);
    }
    int v = 0;
    rc = qat_h5_attr_read_i32(file, "format_version", &v);
    if (rc) return rc;
    if (v < 1)
        return qat_error(QAT_ERR_FORMAT, "%s: format_version %d is invalid", file_name, v);
    if (v > max_version)
        return qat_error(QAT_ERR_FORMAT,
                         "%s: format_version %d is newer than this build of qat reads (%d); upgrade qat",
                         file_name, v, max_version);
    if (format) snprintf(format, format_size, "%s", kind);
    if (version) *version = v;
    return QAT_OK;
}

/* ---- groups and links ---- */

int qat_h5_exists(hid_t loc, const char *path)
{
    char buf[1024];
    size_t len = strlen(path);
    if (len >= sizeof buf) return 0;
    memcpy(buf, path, len + 1);
    /* check each prefix: H5Lexists needs the intermediate groups to exist */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && buf[i] != '/') continue;
        char c = buf[i];
        buf[i] = '\0';
        htri_t e = (buf[0] == '/' && buf[1] == '\0') ? 1 : H5Lexists(loc, buf, H5P_DEFAULT);
        buf[i] = c;
        if (e <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return 0;
        }
        /* an intermediate component must be a group to go on */
        if (i < len) {
            H5O_type_t type = H5O_TYPE_UNKNOWN;
            buf[i] = '\0';
            hid_t o = H5Oopen(loc, buf, H5P_DEFAULT);
            buf[i] = c;
            if (o < 0) {
                H5Eclear2(H5E_DEFAULT);
                return 0;
            }
            type = H5Iget_type(o) == H5I_GROUP ? H5O_TYPE_GROUP : H5O_TYPE_DATASET;
            H5Oclose(o);
            if (type != H5O_TYPE_GROUP) return 0;
        }
    }
    return 1;
}

hid_t qat_h5_group_create(hid_t loc, const char *path)
{
    if (qat_h5_exists(loc, path)) {
        hid_t g = H5Gopen2(loc, path, H5P_DEFAULT);
        if (g < 0) return qat_h5_fail_hdf5(QAT_ERR_IO, loc, "group", path, "cannot open");
        return g;
    }
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        if (lcpl >= 0) H5Pclose(lcpl);
        return qat_h5_fail_hdf5(QAT_ERR_IO, loc, "group", path, "cannot create");
    }
    hid_t g = H5Gcreate2(loc, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    int rc = g < 0 ? qat_h5_fail_hdf5(QAT_ERR_IO, loc, "group", path, "cannot create") : QAT_OK;
    H5Pclose(lcpl);
    return rc ? rc : g;
}

hid_t qat_h5_group_open(hid_t loc, const char *path)
{
    if (!qat_h5_exists(loc, path)) return qat_h5_fail(QAT_ERR_FORMAT, loc, "group", path, "missing");
    hid_t o = H5Oopen(loc, path, H5P_DEFAULT);
    if (o < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "group", path, "cannot open");
    if (H5Iget_type(o) != H5I_GROUP) {
        H5Oclose(o);
        return qat_h5_fail(QAT_ERR_FORMAT, loc, "group", path, "is not a group");
    }
    return o;
}

int qat_h5_group_count(hid_t loc, const char *path)
{
    int self = strcmp(path, ".") == 0;
    hid_t g = self ? loc : qat_h5_group_open(loc, path);
    if (g < 0) return (int)g;
    H5G_info_t info;
    herr_t e = H5Gget_info(g, &info);
    int rc = e < 0 ? qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "group", path, "cannot list") : QAT_OK;
    if (!self) H5Gclose(g);
    if (rc) return rc;
    if (info.nlinks > (hsize_t)1 << 30) return qat_h5_fail(QAT_ERR_FORMAT, loc, "group", path, "too many links");
    return (int)info.nlinks;
}

int qat_h5_group_name(hid_t loc, const char *path, int i, char *buf, size_t size)
{
    ssize_t n = H5Lget_name_by_idx(loc, path, H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, buf, size,
                                   H5P_DEFAULT);
    if (n < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "group", path, "cannot read link %d", i);
    if ((size_t)n >= size) return qat_h5_fail(QAT_ERR_FORMAT, loc, "group", path, "link %d: name too long", i);
    return QAT_OK;
}

/* ---- datasets ---- */

static int to_dims(hid_t loc, const char *name, int ndim, const int *shape, hsize_t *dims)
{
    if (ndim < 0 || ndim > QAT_H5_MAX_DIMS)
        return qat_h5_fail(QAT_ERR_ARG, loc, "dataset", name, "%d dimensions (at most %d)", ndim, QAT_H5_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return qat_h5_fail(QAT_ERR_ARG, loc, "dataset", name, "negative dimension %d", shape[i]);
        dims[i] = (hsize_t)shape[i];
    }
    return QAT_OK;
}

static size_t dims_numel(int ndim, const hsize_t *dims)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    return n;
}

/* Removes loc/name if it exists (writes replace). */
static int unlink_existing(hid_t loc, const char *name, const char *what)
{
    if (qat_h5_exists(loc, name) && H5Ldelete(loc, name, H5P_DEFAULT) < 0)
        return qat_h5_fail_hdf5(QAT_ERR_IO, loc, what, name, "cannot replace");
    return QAT_OK;
}

/* Creates dataset loc/name of the stored type ft and writes buf (memory
 * type mt) unless empty. */
static int write_dataset(hid_t loc, const char *name, hid_t ft, hid_t mt, int ndim, const hsize_t *dims,
                         const void *buf)
{
    int rc = unlink_existing(loc, name, "dataset");
    if (rc) return rc;
    hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t ds = -1;
    if (space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        ds = H5Dcreate2(loc, name, ft, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_IO, loc, "dataset", name, "cannot create");
    else if (dims_numel(ndim, dims) > 0 && H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_IO, loc, "dataset", name, "cannot write");
    if (ds >= 0 && H5Dclose(ds) < 0 && rc == QAT_OK)
        rc = qat_h5_fail_hdf5(QAT_ERR_IO, loc, "dataset", name, "cannot close");
    if (lcpl >= 0) H5Pclose(lcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

int qat_h5_write(hid_t loc, const char *name, qat_h5_type t, int ndim, const int *shape, const void *data)
{
    hsize_t dims[QAT_H5_MAX_DIMS];
    if (t == QAT_H5_STR || (unsigned)t >= QAT_H5_TYPE_COUNT)
        return qat_h5_fail(QAT_ERR_ARG, loc, "dataset", name, "qat_h5_write: bad element type %d", (int)t);
    int rc = to_dims(loc, name, ndim, shape, dims);
    if (rc) return rc;
    return write_dataset(loc, name, file_type(t), mem_type(t), ndim, dims, data);
}

/* Opens dataset loc/name: missing, or not a dataset, is QAT_ERR_FORMAT. */
static hid_t open_dataset(hid_t loc, const char *name)
{
    if (!qat_h5_exists(loc, name)) return qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "missing");
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot open");
    if (H5Iget_type(o) != H5I_DATASET) {
        H5Oclose(o);
        return qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "is a group, expected a dataset");
    }
    return o;
}

/* Checks the stored type of ds; returns it (caller closes) or negative. */
static hid_t checked_type(hid_t ds, hid_t loc, const char *name, qat_h5_type t)
{
    char got[32];
    hid_t ft = H5Dget_type(ds);
    if (ft < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read its type");
    if (!type_matches(ft, t)) {
        describe_type(ft, got, sizeof got);
        H5Tclose(ft);
        return qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "is %s, expected %s", got, qat_h5_type_name(t));
    }
    return ft;
}

static int dataset_dims(hid_t ds, hid_t loc, const char *name, int max_ndim, int *ndim, hsize_t *dims)
{
    hid_t space = H5Dget_space(ds);
    if (space < 0) return qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read its shape");
    int rc = QAT_OK;
    H5S_class_t cls = H5Sget_simple_extent_type(space);
    int n = cls == H5S_SCALAR ? 0 : H5Sget_simple_extent_ndims(space);
    if (cls == H5S_NULL)
        rc = qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "holds no data (null dataspace)");
    else if (n < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read its shape");
    else if (n > max_ndim)
        rc = qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "has %d dimensions, expected at most %d", n,
                         max_ndim);
    else if (n > 0 && H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read its shape");
    H5Sclose(space);
    if (rc == QAT_OK) *ndim = n;
    return rc;
}

static int check_dims(hid_t loc, const char *name, int got_ndim, const hsize_t *got, int ndim,
                      const hsize_t *want)
{
    int same = got_ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = got[i] == want[i];
    if (same) return QAT_OK;
    char a[128], b[128];
    dims_str(a, sizeof a, got_ndim, got);
    dims_str(b, sizeof b, ndim, want);
    return qat_h5_fail(QAT_ERR_SHAPE, loc, "dataset", name, "shape %s, expected %s", a, b);
}

int qat_h5_read(hid_t loc, const char *name, qat_h5_type t, int ndim, const int *shape, void *out)
{
    hsize_t want[QAT_H5_MAX_DIMS], got[QAT_H5_MAX_DIMS];
    int got_ndim = 0;
    if (t == QAT_H5_STR || (unsigned)t >= QAT_H5_TYPE_COUNT)
        return qat_h5_fail(QAT_ERR_ARG, loc, "dataset", name, "qat_h5_read: bad element type %d", (int)t);
    int rc = to_dims(loc, name, ndim, shape, want);
    if (rc) return rc;
    hid_t ds = open_dataset(loc, name);
    if (ds < 0) return (int)ds;
    hid_t ft = checked_type(ds, loc, name, t);
    if (ft < 0) {
        H5Dclose(ds);
        return (int)ft;
    }
    H5Tclose(ft);
    rc = dataset_dims(ds, loc, name, QAT_H5_MAX_DIMS, &got_ndim, got);
    if (rc == QAT_OK) rc = check_dims(loc, name, got_ndim, got, ndim, want);
    if (rc == QAT_OK && dims_numel(ndim, want) > 0 &&
        H5Dread(ds, mem_type(t), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        rc = qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read (damaged file?)");
    H5Dclose(ds);
    return rc;
}

int qat_h5_shape(hid_t loc, const char *name, qat_h5_type t, int max_ndim, int *ndim, int *shape)
{
    hsize_t dims[QAT_H5_MAX_DIMS];
    int n = 0;
    if (max_ndim > QAT_H5_MAX_DIMS) max_ndim = QAT_H5_MAX_DIMS;
    hid_t ds = open_dataset(loc, name);
    if (ds < 0) return (int)ds;
    hid_t ft = checked_type(ds, loc, name, t);
    int rc = ft < 0 ? (int)ft : QAT_OK;
    if (ft >= 0) H5Tclose(ft);
    if (rc == QAT_OK) rc = dataset_dims(ds, loc, name, max_ndim, &n, dims);
    H5Dclose(ds);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        if (dims[i] > (hsize_t)INT32_MAX)
            return qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name, "dimension %d too large", i);
        shape[i] = (int)dims[i];
    }
    *ndim = n;
    return QAT_OK;
}

/* ---- strings ---- */

int qat_h5_write_strings(hid_t loc, const char *name, int n, const char *const *strs)
{
    size_t width = 1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(strs[i]) + 1;
        if (len > width) width = len;
    }
    char *buf = qat_calloc((size_t)(n > 0 ? n : 1), width);
    if (!buf) return qat_h5_fail(QAT_ERR_NOMEM, loc, "dataset", name, "out of memory");
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * width, strs[i], strlen(strs[i]));
    int rc;
    hid_t st = H5Tcopy(H5T_C_S1);
    if (st < 0 || H5Tset_size(st, width) < 0 || H5Tset_strpad(st, H5T_STR_NULLPAD) < 0) {
        rc = qat_h5_fail_hdf5(QAT_ERR_IO, loc, "dataset", name, "cannot make the string type");
    } else {
        hsize_t dims[1] = {(hsize_t)n};
        rc = write_dataset(loc, name, st, st, 1, dims, buf);
    }
    if (st >= 0) H5Tclose(st);
    free(buf);
    return rc;
}

/* A memory string type like the stored ft (same character set): variable
 * length if ft is, else fixed of `size` bytes, NUL-terminated. */
static hid_t string_mem_type(hid_t ft, int variable, size_t size)
{
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (mt < 0) return -1;
    if (H5Tset_size(mt, variable ? H5T_VARIABLE : size) < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
        (!variable && H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0)) {
        H5Tclose(mt);
        return -1;
    }
    return mt;
}

static herr_t reclaim_vlen(hid_t mt, hid_t space, void *buf)
{
#if H5_VERSION_GE(1, 12, 0)
    return H5Treclaim(mt, space, H5P_DEFAULT, buf);
#else
    return H5Dvlen_reclaim(mt, space, H5P_DEFAULT, buf);
#endif
}

int qat_h5_read_strings(hid_t loc, const char *name, int n, size_t width, char *out)
{
    hsize_t got[QAT_H5_MAX_DIMS], want[1] = {(hsize_t)n};
    int got_ndim = 0;
    hid_t ds = open_dataset(loc, name);
    if (ds < 0) return (int)ds;
    hid_t ft = checked_type(ds, loc, name, QAT_H5_STR);
    if (ft < 0) {
        H5Dclose(ds);
        return (int)ft;
    }
    int rc = dataset_dims(ds, loc, name, QAT_H5_MAX_DIMS, &got_ndim, got);
    if (rc == QAT_OK) rc = check_dims(loc, name, got_ndim, got, 1, want);
    if (rc || n == 0) goto done;
    int variable = H5Tis_variable_str(ft) > 0;
    size_t fsize = variable ? 0 : H5Tget_size(ft);
    hid_t mt = string_mem_type(ft, variable, fsize + 1);
    if (mt < 0) {
        rc = qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "unsupported string type");
        goto done;
    }
    size_t elem = variable ? sizeof(char *) : fsize + 1;
    char *buf = qat_calloc((size_t)n, elem);
    if (!buf) {
        rc = qat_h5_fail(QAT_ERR_NOMEM, loc, "dataset", name, "out of memory");
    } else if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        rc = qat_h5_fail_hdf5(QAT_ERR_FORMAT, loc, "dataset", name, "cannot read (damaged file?)");
    } else {
        for (int i = 0; i < n && rc == QAT_OK; i++) {
            const char *s = variable ? ((char **)(void *)buf)[i] : buf + (size_t)i * elem;
            if (!s) s = "";
            size_t len = strlen(s);
            if (len >= width)
                rc = qat_h5_fail(QAT_ERR_FORMAT, loc, "dataset", name,
                                 "string %d is %zu characters long, at most %zu allowed", i, len, width - 1);
            else
                memcpy(out + (size_t)i * width, s, len + 1);
        }
        if (variable) {
            hid_t space = H5Dget_space(ds);
            if (space >= 0) {
                reclaim_vlen(mt, space, buf);
                H5Sclose(space);
            }
        }
    }
    free(buf);
    H5Tclose(mt);
done:
    H5Tclose(ft);
    H5Dclose(ds);
    return rc;
}

/* ---- attributes ---- */

int qat_h5_attr_exists(hid_t obj, const char *name)
{
    htri_t e = H5Aexists(obj, name);
    if (e < 0) return attr_fail(QAT_ERR_FORMAT, 1, obj, name, "cannot check");
    return e > 0;
}

/* Creates attribute obj@name (replacing one) and writes v. */
static int write_attr(hid_t obj, const char *name, hid_t ft, hid_t mt, int n, const void *v)
{
    int ex = qat_h5_attr_exists(obj, name);
    if (ex < 0) return ex;
    if (ex && H5Adelete(obj, name) < 0) return attr_fail(QAT_ERR_IO, 1, obj, name, "cannot replace");
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = space >= 0 ? H5Acreate2(obj, name, ft, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int rc = QAT_OK;
    if (a < 0 || H5Awrite(a, mt, v) < 0) rc = attr_fail(QAT_ERR_IO, 1, obj, name, "cannot write");
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    return rc;
}

int qat_h5_attr_write(hid_t obj, const char *name, qat_h5_type t, int n, const void *v)
{
    if (t == QAT_H5_STR || (unsigned)t >= QAT_H5_TYPE_COUNT || n < 0)
        return attr_fail(QAT_ERR_ARG, 0, obj, name, "qat_h5_attr_write: bad type %d or count %d", (int)t, n);
    return write_attr(obj, name, file_type(t), mem_type(t), n, v);
}

/* Opens obj@name, checks its type (t) and returns its element count via
 * *count (-1 for a scalar). */
static hid_t open_attr(hid_t obj, const char *name, qat_h5_type t, hid_t *ft_out, int *count)
{
    char got[32];
    int ex = qat_h5_attr_exists(obj, name);
    if (ex < 0) return ex;
    if (!ex) return attr_fail(QAT_ERR_FORMAT, 0, obj, name, "missing");
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return attr_fail(QAT_ERR_FORMAT, 1, obj, name, "cannot open");
    hid_t ft = H5Aget_type(a);
    hid_t space = H5Aget_space(a);
    int rc = QAT_OK;
    if (ft < 0 || space < 0) {
        rc = attr_fail(QAT_ERR_FORMAT, 0, obj, name, "cannot read its type or shape");
    } else if (!type_matches(ft, t)) {
        rc = attr_fail(QAT_ERR_FORMAT, 0, obj, name, "is %s, expected %s", describe_type(ft, got, sizeof got),
                       qat_h5_type_name(t));
    } else {
        H5S_class_t cls = H5Sget_simple_extent_type(space);
        hssize_t np = H5Sget_simple_extent_npoints(space);
        if (cls == H5S_SCALAR)
            *count = -1;
        else if (cls == H5S_SIMPLE && H5Sget_simple_extent_ndims(space) == 1 && np >= 0 && np <= INT32_MAX)
            *count = (int)np;
        else
            rc = attr_fail(QAT_ERR_FORMAT, 0, obj, name, "is not a scalar or a 1-D array");
    }
    if (space >= 0) H5Sclose(space);
    if (rc == QAT_OK && ft_out) {
        *ft_out = ft;
        return a;
    }
    if (ft >= 0) H5Tclose(ft);
    if (rc) {
        H5Aclose(a);
        return rc;
    }
    return a;
}

int qat_h5_attr_read(hid_t obj, const char *name, qat_h5_type t, int n, void *out)
{
    int count = 0;
    if (t == QAT_H5_STR || (unsigned)t >= QAT_H5_TYPE_COUNT || n < 0)
        return attr_fail(QAT_ERR_ARG, 0, obj, name, "qat_h5_attr_read: bad type %d or count %d", (int)t, n);
    hid_t a = open_attr(obj, name, t, NULL, &count);
    if (a < 0) return (int)a;
    int rc = QAT_OK;
    int ok = n == 0 ? (count == -1 || count == 1) : (count == n || (n == 1 && count == -1));
    if (!ok) {
        if (count < 0)
            rc = attr_fail(QAT_ERR_SHAPE, 0, obj, name, "is a scalar, expected %d values", n);
        else if (n == 0)
            rc = attr_fail(QAT_ERR_SHAPE, 0, obj, name, "has %d values, expected a scalar", count);
        else
            rc = attr_fail(QAT_ERR_SHAPE, 0, obj, name, "has %d values, expected %d", count, n);
    } else if (H5Aread(a, mem_type(t), out) < 0) {
        rc = attr_fail(QAT_ERR_FORMAT, 1, obj, name, "cannot read");
    }
    H5Aclose(a);
    return rc;
}

int qat_h5_attr_write_str(hid_t obj, const char *name, const char *s)
{
    hid_t st = H5Tcopy(H5T_C_S1);
    int rc;
    if (st < 0 || H5Tset_size(st, H5T_VARIABLE) < 0 || H5Tset_cset(st, H5T_CSET_UTF8) < 0)
        rc = attr_fail(QAT_ERR_IO, 1, obj, name, "cannot make the string type");
    else
        rc = write_attr(obj, name, st, st, 0, &s);
    if (st >= 0) H5Tclose(st);
    return rc;
}

int qat_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t size)
{
    hid_t ft = -1;
    int count = 0;
    hid_t a = open_attr(obj, name, QAT_H5_STR, &ft, &count);
    if (a < 0) return (int)a;
    int rc = QAT_OK;
    int variable = H5Tis_variable_str(ft) > 0;
    size_t fsize = variable ? 0 : H5Tget_size(ft);
    hid_t mt = -1;
    char *tmp = NULL, *vs = NULL;
    if (count > 1 || count == 0) {
        rc = attr_fail(QAT_ERR_SHAPE, 0, obj, name, "has %d strings, expected one", count);
    } else if ((mt = string_mem_type(ft, variable, fsize + 1)) < 0) {
        rc = attr_fail(QAT_ERR_FORMAT, 1, obj, name, "unsupported string type");
    } else if (!variable && !(tmp = qat_calloc(1, fsize + 1))) {
        rc = attr_fail(QAT_ERR_NOMEM, 0, obj, name, "out of memory");
    } else if (H5Aread(a, mt, variable ? (void *)&vs : (void *)tmp) < 0) {
        rc = attr_fail(QAT_ERR_FORMAT, 1, obj, name, "cannot read");
    } else {
        const char *s = variable ? (vs ? vs : "") : tmp;
        size_t len = strlen(s);
        if (len >= size)
            rc = attr_fail(QAT_ERR_FORMAT, 0, obj, name, "'%.40s...' is %zu characters long, at most %zu allowed", s,
                           len, size - 1);
        else
            memcpy(buf, s, len + 1);
    }
    if (vs) H5free_memory(vs);
    free(tmp);
    if (mt >= 0) H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int qat_h5_attr_write_i32(hid_t obj, const char *name, int v)
{
    int32_t x = (int32_t)v;
    return qat_h5_attr_write(obj, name, QAT_H5_I32, 0, &x);
}

int qat_h5_attr_write_i64(hid_t obj, const char *name, int64_t v)
{
    return qat_h5_attr_write(obj, name, QAT_H5_I64, 0, &v);
}

int qat_h5_attr_write_u64(hid_t obj, const char *name, uint64_t v)
{
    return qat_h5_attr_write(obj, name, QAT_H5_U64, 0, &v);
}

int qat_h5_attr_write_f64(hid_t obj, const char *name, double v)
{
    return qat_h5_attr_write(obj, name, QAT_H5_F64, 0, &v);
}

int qat_h5_attr_read_i32(hid_t obj, const char *name, int *v)
{
    int32_t x = 0;
    int rc = qat_h5_attr_read(obj, name, QAT_H5_I32, 0, &x);
    if (rc == QAT_OK) *v = (int)x;
    return rc;
}

int qat_h5_attr_read_i64(hid_t obj, const char *name, int64_t *v)
{
    return qat_h5_attr_read(obj, name, QAT_H5_I64, 0, v);
}

int qat_h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v)
{
    return qat_h5_attr_read(obj, name, QAT_H5_U64, 0, v);
}

int qat_h5_attr_read_f64(hid_t obj, const char *name, double *v)
{
    return qat_h5_attr_read(obj, name, QAT_H5_F64, 0, v);
}
