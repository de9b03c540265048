/* Private HDF5 helpers shared by every file qat writes (float checkpoints,
 * QAT/PTQ checkpoints, int8 models). Not installed.
 *
 * Every helper:
 *   - returns QAT_OK / a negative status (or a negative hid_t / NULL), and on
 *     failure sets qat_last_error() to a message naming the file, the object
 *     path and the problem, with HDF5's own innermost message appended when
 *     HDF5 failed: "ckpt.h5: dataset /model/params/fc.weight: shape [10,84],
 *     expected [10,120]";
 *   - closes every handle it opened, on every path;
 *   - validates the dtype class, size and signedness and the exact shape of
 *     what it reads (HDF5 converts the byte order).
 * Callers wrap their work in qat_h5_quiet_begin/end so that HDF5 prints
 * nothing. Paths are relative to loc, or absolute ("/model/params"). */
#ifndef QAT_IO_H5UTIL_H
#define QAT_IO_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* Element types of datasets and attributes. Stored little-endian, IEEE for
 * floats; QAT_H5_STR is only used to check string datasets' shapes. */
typedef enum {
    QAT_H5_F32 = 0,
    QAT_H5_F64,
    QAT_H5_I8,
    QAT_H5_U8,
    QAT_H5_I16,
    QAT_H5_I32,
    QAT_H5_U32,
    QAT_H5_I64,
    QAT_H5_U64,
    QAT_H5_STR,
    QAT_H5_TYPE_COUNT
} qat_h5_type;

/* Most dimensions a dataset read by these helpers may have. */
#define QAT_H5_MAX_DIMS 8

/* "float32", "int64", "string", ... */
const char *qat_h5_type_name(qat_h5_type t);
/* Bytes per element in memory (0 for QAT_H5_STR). */
size_t qat_h5_type_size(qat_h5_type t);

/* ---- silencing HDF5 ---- */

/* Saves HDF5's automatic error printer and turns it off; _end restores it.
 * May nest. */
typedef struct qat_h5_quiet {
    H5E_auto2_t func;
    void *data;
} qat_h5_quiet;
void qat_h5_quiet_begin(qat_h5_quiet *q);
void qat_h5_quiet_end(const qat_h5_quiet *q);

/* ---- errors ---- */

/* Sets the last error to "<file>: <what> <path of loc>/<name>: <message>"
 * (what e.g. "dataset"; name may be NULL for loc itself) and returns
 * status. */
int qat_h5_fail(int status, hid_t loc, const char *what, const char *name, const char *fmt, ...)
    QAT_PRINTF(5, 6);
/* Same with " (HDF5: <innermost HDF5 error>)" appended; clears HDF5's
 * error stack. */
int qat_h5_fail_hdf5(int status, hid_t loc, const char *what, const char *name, const char *fmt,
                     ...) QAT_PRINTF(5, 6);
/* The full path of loc/name ("/model/params/fc.weight") into buf. */
const char *qat_h5_path(hid_t loc, const char *name, char *buf, size_t size);
/* The name of the file holding loc into buf. */
const char *qat_h5_file_name(hid_t loc, char *buf, size_t size);

/* ---- files ---- */

/* Opens an existing file read-only. Distinguishes a missing/unreadable file
 * (QAT_ERR_IO with strerror), a file that is not HDF5 (QAT_ERR_FORMAT) and a
 * damaged HDF5 file (QAT_ERR_FORMAT with HDF5's reason, e.g. truncation).
 * Returns the file id or a negative status. */
hid_t qat_h5_open_read(const char *path);
/* Closes a file opened by these helpers; QAT_ERR_IO if HDF5 fails (data may
 * not have reached the disk). */
int qat_h5_close(hid_t file, const char *path);

/* Writes a file atomically: fn(file, ctx) fills a new file
 * "<path>.tmp.<pid>", which is flushed, closed, fsync'ed and renamed over
 * path. If anything fails the temporary file is removed and an existing file
 * at path is left untouched. fn reports errors through qat_error/the
 * helpers and returns a negative status. Also fails (QAT_ERR_STATE) if fn
 * leaves an HDF5 object of the file open. */
typedef int (*qat_h5_writer)(hid_t file, void *ctx);
int qat_h5_save_atomic(const char *path, qat_h5_writer fn, void *ctx);

/* Root attributes identifying a qat file: qat_format (string) and
 * format_version (int32). */
int qat_h5_write_format(hid_t file, const char *format, int version);
/* Reads them; fails with QAT_ERR_FORMAT naming the file when qat_format is
 * missing ("not a qat file"), when kinds (NULL-terminated; NULL = any) does
 * not contain it, or when format_version > max_version or < 1. format may be
 * NULL; version may be NULL. */
int qat_h5_read_format(hid_t file, const char *const *kinds, int max_version, char *format,
                       size_t format_size, int *version);

/* ---- groups and links ---- */

/* 1 if every component of path exists below loc (the intermediate ones
 * being groups), else 0. */
int qat_h5_exists(hid_t loc, const char *path);
/* Opens loc/path, creating every missing group along it. Negative on
 * failure. */
hid_t qat_h5_group_create(hid_t loc, const char *path);
/* Opens an existing group; a missing one is QAT_ERR_FORMAT "group ...
 * missing". */
hid_t qat_h5_group_open(hid_t loc, const char *path);
/* Number of links in group loc/path (".": loc itself), negative on failure. */
int qat_h5_group_count(hid_t loc, const char *path);
/* Name of link i (in name order) of group loc/path into buf. */
int qat_h5_group_name(hid_t loc, const char *path, int i, char *buf, size_t size);

/* ---- datasets ---- */

/* Writes an array of ndim (0 = scalar) dimensions, replacing an existing
 * dataset of that name and creating missing groups along name. */
int qat_h5_write(hid_t loc, const char *name, qat_h5_type t, int ndim, const int *shape,
                 const void *data);
/* Reads an array, checking that the dataset exists, has type t and exactly
 * the given shape. */
int qat_h5_read(hid_t loc, const char *name, qat_h5_type t, int ndim, const int *shape, void *out);
/* Checks the dataset's type (t; QAT_H5_STR for strings) and returns its
 * shape (ndim <= max_ndim; a scalar gives 0). */
int qat_h5_shape(hid_t loc, const char *name, qat_h5_type t, int max_ndim, int *ndim, int *shape);

/* 1-D array of n fixed-length, NUL-padded ASCII strings (width: the
 * longest + 1). */
int qat_h5_write_strings(hid_t loc, const char *name, int n, const char *const *strs);
/* Reads exactly n strings (fixed-length or variable-length) into
 * out[i * width] (NUL-terminated); a longer string is an error. */
int qat_h5_read_strings(hid_t loc, const char *name, int n, size_t width, char *out);

/* ---- attributes (on a group or dataset obj) ---- */

/* n == 0: a scalar (one value); n >= 1: a 1-D array of n values.
 * Replaces an existing attribute. */
int qat_h5_attr_write(hid_t obj, const char *name, qat_h5_type t, int n, const void *v);
/* Checks the type and count (a scalar or a [1] array both read as n == 0). */
int qat_h5_attr_read(hid_t obj, const char *name, qat_h5_type t, int n, void *out);
/* Scalar variable-length UTF-8 string (h5py reads it as str). */
int qat_h5_attr_write_str(hid_t obj, const char *name, const char *s);
/* Reads a string attribute (fixed- or variable-length) into buf; a longer
 * string is an error. */
int qat_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t size);
/* 1 if the attribute exists, 0 if not, negative on failure. */
int qat_h5_attr_exists(hid_t obj, const char *name);

/* Typed conveniences for scalars. */
int qat_h5_attr_write_i32(hid_t obj, const char *name, int v);
int qat_h5_attr_write_i64(hid_t obj, const char *name, int64_t v);
int qat_h5_attr_write_u64(hid_t obj, const char *name, uint64_t v);
int qat_h5_attr_write_f64(hid_t obj, const char *name, double v);
int qat_h5_attr_read_i32(hid_t obj, const char *name, int *v);
int qat_h5_attr_read_i64(hid_t obj, const char *name, int64_t *v);
int qat_h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v);
int qat_h5_attr_read_f64(hid_t obj, const char *name, double *v);

#endif
