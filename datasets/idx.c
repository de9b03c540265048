/* IDX files, raw or gzip, and the loaders built on them.
 *
 * IDX layout (big-endian): magic 00 00 TT NN (TT element type, 0x08 =
 * unsigned byte; NN number of dimensions), NN uint32 dimensions, then the
 * product of the dimensions in elements. The file is streamed: the header
 * is read first, then exactly the payload it announces, then one more read
 * must find the end, so a truncated file or trailing bytes are both errors. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/internal.h"
#include "qat/data.h"

/* ---- byte source: a FILE read raw or through inflate ---- */

#define SRC_CHUNK (1 << 16)

typedef struct {
    const char *path;
    FILE *f;
    int gzip;
    int zinit;          /* inflateInit2 done */
    int at_member_end;  /* a gzip member ended and nothing followed yet */
    int eof;            /* no more payload bytes */
    z_stream z;
    unsigned char in[SRC_CHUNK];
    size_t in_len, in_pos; /* raw mode: buffered bytes not yet consumed */
} src_t;

/* Fills s->in from the file; returns the number of bytes read, 0 at end of
 * file, -1 (error set) on a read error. */
static long src_fill(src_t *s)
{
    size_t got = fread(s->in, 1, SRC_CHUNK, s->f);
    if (got == 0 && ferror(s->f)) {
        qat_error(QAT_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
        return -1;
    }
    s->in_len = got;
    s->in_pos = 0;
    return (long)got;
}

static int src_open(src_t *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f) return qat_error(QAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (src_fill(s) < 0) return QAT_ERR_IO;
    if (s->in_len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
        s->gzip = 1;
        /* 16 + MAX_WBITS: gzip wrapper only, header and CRC checked. */
        if (inflateInit2(&s->z, 16 + MAX_WBITS) != Z_OK)
            return qat_error(QAT_ERR_NOMEM, "%s: cannot initialise zlib", path);
        s->zinit = 1;
        s->z.next_in = s->in;
        s->z.avail_in = (uInt)s->in_len;
    }
    return QAT_OK;
}

static void src_close(src_t *s)
{
    if (s->zinit) inflateEnd(&s->z);
    if (s->f) fclose(s->f);
    s->zinit = 0;
    s->f = NULL;
}

/* Reads up to n bytes into dst; *got receives how many (fewer than n only
 * at the end of the data). Returns 0 or a negative status (error set). */
static int src_read(src_t *s, unsigned char *dst, size_t n, size_t *got)
{
    *got = 0;
    if (!s->gzip) {
        while (*got < n) {
            if (s->in_pos == s->in_len) {
                long r = src_fill(s);
                if (r < 0) return QAT_ERR_IO;
                if (r == 0) break;
            }
            size_t k = s->in_len - s->in_pos;
            if (k > n - *got) k = n - *got;
            memcpy(dst + *got, s->in + s->in_pos, k);
            s->in_pos += k;
            *got += k;
        }
        return QAT_OK;
    }
    while (*got < n && !s->eof) {
        if (s->z.avail_in == 0) {
            long r = src_fill(s);
            if (r < 0) return QAT_ERR_IO;
            if (r == 0) {
                if (s->at_member_end) {
                    s->eof = 1;
                    break;
                }
                return qat_error(QAT_ERR_FORMAT,
                                 "%s: truncated gzip stream (file ends before the end of the "
                                 "compressed data)", s->path);
            }
            s->z.next_in = s->in;
            s->z.avail_in = (uInt)r;
        }
        if (s->at_member_end) {
            /* More bytes after a complete member: another gzip member
             * (concatenated gzip is legal) or garbage. */
            if (inflateReset(&s->z) != Z_OK)
                return qat_error(QAT_ERR_FORMAT, "%s: zlib reset failed", s->path);
        }
        size_t want = n - *got;
        if (want > UINT_MAX) want = UINT_MAX;
        s->z.next_out = dst + *got;
        s->z.avail_out = (uInt)want;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        size_t produced = want - s->z.avail_out;
        *got += produced;
        if (zr == Z_STREAM_END) {
            s->at_member_end = 1;
        } else if (zr == Z_OK || (zr == Z_BUF_ERROR && s->z.avail_in == 0)) {
            if (s->at_member_end && (produced > 0 || s->z.total_in > 0)) s->at_member_end = 0;
        } else if (s->at_member_end) {
            return qat_error(QAT_ERR_FORMAT, "%s: trailing bytes after the gzip stream (%s)",
                             s->path, s->z.msg ? s->z.msg : "not a gzip member");
        } else if (zr == Z_MEM_ERROR) {
            return qat_error(QAT_ERR_NOMEM, "%s: out of memory in zlib", s->path);
        } else {
            return qat_error(QAT_ERR_FORMAT, "%s: corrupt gzip stream: %s", s->path,
                             s->z.msg ? s->z.msg : zError(zr));
        }
    }
    return QAT_OK;
}

/* ---- IDX ---- */

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static const char *idx_type_name(int t)
{
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return NULL;
}

void qat_idx_free(qat_idx *idx)
{
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

/* Reads the rest of the stream to count the bytes beyond the payload. */
static int count_trailing(src_t *s, unsigned char *scratch, size_t cap, size_t *extra)
{
    *extra = 0;
    for (;;) {
        size_t got;
        int st = src_read(s, scratch, cap, &got);
        if (st) return st;
        if (got == 0) return QAT_OK;
        *extra += got;
    }
}

static int idx_read(src_t *s, int expected_ndim, qat_idx *out)
{
    const char *path = s->path;
    unsigned char hdr[4 + 4 * QAT_IDX_MAX_DIMS];
    size_t got;
    int st = src_read(s, hdr, 4, &got);
    if (st) return st;
    if (got == 0) return qat_error(QAT_ERR_FORMAT, "%s: file is empty, expected an IDX file", path);
    if (got < 4)
        return qat_error(QAT_ERR_FORMAT, "%s: truncated: file ends inside the IDX magic (%zu of 4 bytes)",
                         path, got);
    uint32_t magic = be32(hdr);
    int type = hdr[2], ndim = hdr[3];
    uint32_t want_magic = 0x00000800u | (uint32_t)(expected_ndim > 0 ? expected_ndim : 0);
    if (hdr[0] != 0 || hdr[1] != 0 || !idx_type_name(type)) {
        if (expected_ndim > 0)
            return qat_error(QAT_ERR_FORMAT, "%s: bad magic 0x%08x, not an IDX file (expected 0x%08x)",
                             path, (unsigned)magic, (unsigned)want_magic);
        return qat_error(QAT_ERR_FORMAT, "%s: bad magic 0x%08x, not an IDX file (expected 0x000008NN)",
                         path, (unsigned)magic);
    }
    if (type != 0x08)
        return qat_error(QAT_ERR_UNSUPPORTED,
                         "%s: magic 0x%08x: element type %s (0x%02x) is not supported, only "
                         "unsigned byte (0x08)", path, (unsigned)magic, idx_type_name(type), type);
    if (expected_ndim > 0 && ndim != expected_ndim)
        return qat_error(QAT_ERR_FORMAT,
                         "%s: magic 0x%08x announces %d dimension%s, expected %d (magic 0x%08x)", path,
                         (unsigned)magic, ndim, ndim == 1 ? "" : "s", expected_ndim,
                         (unsigned)want_magic);
    if (ndim < 1 || ndim > QAT_IDX_MAX_DIMS)
        return qat_error(QAT_ERR_FORMAT, "%s: magic 0x%08x announces %d dimensions, supported 1..%d",
                         path, (unsigned)magic, ndim, QAT_IDX_MAX_DIMS);
    st = src_read(s, hdr + 4, 4 * (size_t)ndim, &got);
    if (st) return st;
    if (got < 4 * (size_t)ndim)
        return qat_error(QAT_ERR_FORMAT,
                         "%s: truncated: file ends inside the IDX header (%zu of %d dimension bytes)",
                         path, got, 4 * ndim);
    size_t size = 1;
    char shape[16 * QAT_IDX_MAX_DIMS];
    size_t off = 0;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(hdr + 4 + 4 * i);
        if (d == 0) return qat_error(QAT_ERR_FORMAT, "%s: dimension %d of %d is 0", path, i, ndim);
        if (d > INT_MAX)
            return qat_error(QAT_ERR_FORMAT, "%s: dimension %d is %u, larger than supported (%d)", path,
                             i, (unsigned)d, INT_MAX);
        if (size > SIZE_MAX / d)
            return qat_error(QAT_ERR_FORMAT, "%s: dimensions multiply to more than %zu bytes", path,
                             (size_t)SIZE_MAX);
        size *= d;
        out->dims[i] = (int)d;
        off += (size_t)snprintf(shape + off, sizeof shape - off, i ? " x %u" : "%u", (unsigned)d);
    }
    out->ndim = ndim;
    out->size = size;

    /* Grow the buffer as data arrives (capped at the announced size) so a
     * corrupt header announcing terabytes fails as "truncated", not as a
     * huge allocation. */
    size_t cap = size < ((size_t)1 << 20) ? size : ((size_t)1 << 20);
    size_t have = 0;
    out->data = qat_malloc(cap);
    if (!out->data) return qat_error(QAT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    while (have < size) {
        if (have == cap) {
            size_t ncap = cap > size / 2 ? size : cap * 2;
            uint8_t *p = qat_realloc(out->data, ncap);
            if (!p) return qat_error(QAT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, ncap);
            out->data = p;
            cap = ncap;
        }
        st = src_read(s, out->data + have, cap - have, &got);
        if (st) return st;
        if (got == 0) break;
        have += got;
    }
    if (have < size)
        return qat_error(QAT_ERR_FORMAT,
                         "%s: truncated: payload has %zu bytes, the header (%s) announces %zu", path,
                         have, shape, size);
    size_t extra;
    unsigned char scratch[4096];
    st = count_trailing(s, scratch, sizeof scratch, &extra);
    if (st) return st;
    if (extra)
        return qat_error(QAT_ERR_FORMAT,
                         "%s: %zu trailing byte%s after the %zu-byte payload announced by the header (%s)",
                         path, extra, extra == 1 ? "" : "s", size, shape);
    return QAT_OK;
}

int qat_idx_load(const char *path, int expected_ndim, qat_idx *out)
{
    if (!out) return qat_error(QAT_ERR_ARG, "qat_idx_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return qat_error(QAT_ERR_ARG, "qat_idx_load: path is NULL");
    if (expected_ndim < 0 || expected_ndim > QAT_IDX_MAX_DIMS)
        return qat_error(QAT_ERR_ARG, "qat_idx_load: expected_ndim %d outside 0..%d", expected_ndim,
                         QAT_IDX_MAX_DIMS);
    src_t *s = qat_malloc(sizeof *s);
    if (!s) return qat_error(QAT_ERR_NOMEM, "%s: out of memory", path);
    int st = src_open(s, path);
    if (!st) st = idx_read(s, expected_ndim, out);
    src_close(s);
    free(s);
    if (st) qat_idx_free(out);
    return st;
}

/* ---- dataset loaders ---- */

qat_dataset *qat_dataset_from_memory(const uint8_t *images, const uint8_t *labels, int n, int c,
                                     int h, int w, int num_classes)
{
    if (!images || !labels) return qat_error_null(QAT_ERR_ARG, "qat_dataset_from_memory: NULL images or labels");
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return qat_error_null(QAT_ERR_ARG,
                              "qat_dataset_from_memory: shape [%d,%d,%d,%d] has a dimension < 1", n, c,
                              h, w);
    if (num_classes < 1 || num_classes > 256)
        return qat_error_null(QAT_ERR_ARG, "qat_dataset_from_memory: num_classes %d outside 1..256",
                              num_classes);
    size_t per = (size_t)c * (size_t)h * (size_t)w;
    if (per > SIZE_MAX / (size_t)n)
        return qat_error_null(QAT_ERR_ARG, "qat_dataset_from_memory: dataset too large");
    for (int i = 0; i < n; i++)
        if (labels[i] >= num_classes)
            return qat_error_null(QAT_ERR_ARG,
                                  "qat_dataset_from_memory: label %d of image %d is outside [0, %d)",
                                  labels[i], i, num_classes);
    qat_dataset *ds = qat_calloc(1, sizeof *ds);
    if (!ds) return qat_error_null(QAT_ERR_NOMEM, "qat_dataset_from_memory: out of memory");
    ds->images = qat_malloc(per * (size_t)n);
    ds->labels = qat_malloc((size_t)n);
    if (!ds->images || !ds->labels) {
        qat_dataset_free(ds);
        return qat_error_null(QAT_ERR_NOMEM, "qat_dataset_from_memory: out of memory for %d images", n);
    }
    memcpy(ds->images, images, per * (size_t)n);
    memcpy(ds->labels, labels, (size_t)n);
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->num_classes = num_classes;
    ds->mean = QAT_FASHION_MNIST_MEAN;
    ds->std = QAT_FASHION_MNIST_STD;
    return ds;
}

void qat_dataset_free(qat_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    free(ds);
}

int qat_dataset_load_idx_classes(const char *images_path, const char *labels_path, int num_classes,
                                 qat_dataset **out)
{
    if (!out) return qat_error(QAT_ERR_ARG, "qat_dataset_load_idx: out is NULL");
    *out = NULL;
    if (!images_path || !labels_path)
        return qat_error(QAT_ERR_ARG, "qat_dataset_load_idx: NULL path");
    if (num_classes < 1 || num_classes > 256)
        return qat_error(QAT_ERR_ARG, "qat_dataset_load_idx: num_classes %d outside 1..256",
                         num_classes);
    qat_idx im, lb;
    qat_dataset *ds = NULL;
    int st = qat_idx_load(images_path, 3, &im);
    if (st) return st;
    st = qat_idx_load(labels_path, 1, &lb);
    if (st) {
        qat_idx_free(&im);
        return st;
    }
    if (im.dims[0] != lb.dims[0]) {
        st = qat_error(QAT_ERR_FORMAT, "%s has %d images but %s has %d labels: counts differ",
                       images_path, im.dims[0], labels_path, lb.dims[0]);
        goto done;
    }
    for (int i = 0; i < lb.dims[0]; i++)
        if (lb.data[i] >= num_classes) {
            st = qat_error(QAT_ERR_FORMAT, "%s: label %d of image %d is out of range [0, %d)",
                           labels_path, lb.data[i], i, num_classes);
            goto done;
        }
    ds = qat_calloc(1, sizeof *ds);
    if (!ds) {
        st = qat_error(QAT_ERR_NOMEM, "qat_dataset_load_idx: out of memory");
        goto done;
    }
    /* Take the buffers over rather than copying 47 MB. */
    ds->n = im.dims[0];
    ds->c = 1;
    ds->h = im.dims[1];
    ds->w = im.dims[2];
    ds->num_classes = num_classes;
    ds->images = im.data;
    ds->labels = lb.data;
    ds->mean = QAT_FASHION_MNIST_MEAN;
    ds->std = QAT_FASHION_MNIST_STD;
    im.data = lb.data = NULL;
    *out = ds;
done:
    qat_idx_free(&im);
    qat_idx_free(&lb);
    return st;
}

int qat_dataset_load_idx(const char *images_path, const char *labels_path, qat_dataset **out)
{
    return qat_dataset_load_idx_classes(images_path, labels_path, QAT_DATASET_DEFAULT_CLASSES, out);
}

/* "<dir>/<name>" if it exists, else "<dir>/<name>.gz" if that exists. */
static int find_file(const char *dir, const char *name, char *buf, size_t n)
{
    const char *sfx[2] = {"", ".gz"};
    for (int i = 0; i < 2; i++) {
        int len = snprintf(buf, n, "%s/%s%s", dir, name, sfx[i]);
        if (len < 0 || (size_t)len >= n)
            return qat_error(QAT_ERR_ARG, "%s: directory name too long", dir);
        FILE *f = fopen(buf, "rb");
        if (f) {
            fclose(f);
            return QAT_OK;
        }
        if (errno != ENOENT) return qat_error(QAT_ERR_IO, "%s: cannot open: %s", buf, strerror(errno));
    }
    return qat_error(QAT_ERR_IO, "%s: %s not found (neither %s nor %s.gz)", dir, name, name, name);
}

int qat_dataset_load_fashion_mnist(const char *dir, int train, qat_dataset **out)
{
    if (!out) return qat_error(QAT_ERR_ARG, "qat_dataset_load_fashion_mnist: out is NULL");
    *out = NULL;
    if (!dir) dir = QAT_FASHION_MNIST_DIR;
    const char *pre = train ? "train" : "t10k";
    char iname[64], lname[64], ipath[4096], lpath[4096];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
    int st = find_file(dir, iname, ipath, sizeof ipath);
    if (!st) st = find_file(dir, lname, lpath, sizeof lpath);
    if (st) return st;
    return qat_dataset_load_idx(ipath, lpath, out);
}
