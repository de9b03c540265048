/* Datasets: IDX reading (raw, gzip, broken files), dataset operations and
 * the batch iterator. Expected values of the shipped subset were read with
 * python3 (gzip + struct), independently of this reader. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "autograd/internal.h"
#include "qat/data.h"
#include "testutil.h"

#define SMALL "fashion-mnist-small"

/* (p/255 - 0.2860) / 0.3530 in float32, computed in python with every step
 * rounded to float32. */
#define NORM_0 (-0x1.9ed252p-1f)
#define NORM_1 (-0x1.992236p-1f)
#define NORM_77 (0x1.72661p-5f)
#define NORM_128 (0x1.393c26p-1f)
#define NORM_237 (0x1.d29c38p+0f)
#define NORM_255 (0x1.02e69ep+1f)

#define ck_assert_err(st, code, sub)                                                       \
    do {                                                                                   \
        int st_ = (st);                                                                    \
        ck_assert_msg(st_ == (code), "status %d (%s), expected %d; message: %s", st_,     \
                      qat_status_str(st_), (int)(code), qat_last_error());                 \
        ck_assert_msg(strstr(qat_last_error(), (sub)) != NULL, "message '%s' lacks '%s'", \
                      qat_last_error(), (sub));                                            \
    } while (0)

/* ---- helpers ---- */

static char small_dir[4096];

/* "<data dir>/fashion-mnist-small/<name>"; four rotating buffers, so a
 * call may pass two of these paths. */
static const char *small_path(const char *name)
{
    static char buf[4][4096];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s/%s", tu_data_dir(), SMALL, name);
    return b;
}

/* tu_tmp_path with four rotating buffers. */
static const char *tmp_path(const char *name)
{
    static char buf[4][4096];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", tu_tmp_dir(), name);
    return b;
}

/* Reads a whole file through zlib's gzread (raw files pass through). */
static unsigned char *gz_slurp(const char *path, size_t *len)
{
    gzFile g = gzopen(path, "rb");
    ck_assert_ptr_nonnull(g);
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        int r = gzread(g, buf + n, (unsigned)(cap - n));
        ck_assert_int_ge(r, 0);
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(g);
    *len = n;
    return buf;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX file in buf: magic, ndim dims, then payload bytes of value
 * (i % 7) (labels < 10). Returns its length. */
static size_t make_idx(unsigned char *buf, uint32_t magic, int ndim, const uint32_t *dims,
                       size_t payload)
{
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++) put_be32(buf + 4 + 4 * i, dims[i]);
    size_t off = 4 + 4 * (size_t)ndim;
    for (size_t i = 0; i < payload; i++) buf[off + i] = (unsigned char)(i % 7);
    return off + payload;
}

/* Writes a valid labels file with n labels (values i % 7) and returns its
 * path in a static buffer. */
static const char *good_labels(const char *name, uint32_t n)
{
    static unsigned char buf[64 + 4096];
    size_t len = make_idx(buf, 0x801, 1, &n, n);
    ck_assert_int_eq(tu_write_file(tmp_path(name), buf, len), 0);
    return tmp_path(name);
}

/* Writes bytes to tmp/name (gzip if gz) and tries to load it as images with
 * `labels` valid labels; checks the failure status and message. */
static void expect_images_error(const char *name, const unsigned char *bytes, size_t len, int gz,
                                uint32_t labels, int code, const char *sub)
{
    char ipath[4096], lpath[4096];
    snprintf(lpath, sizeof lpath, "%s", good_labels("lbl_for_images", labels));
    snprintf(ipath, sizeof ipath, "%s", tmp_path(name));
    if (gz)
        write_gz(ipath, bytes, len);
    else
        ck_assert_int_eq(tu_write_file(ipath, bytes, len), 0);
    qat_dataset *ds = (qat_dataset *)&ds; /* must be reset to NULL */
    ck_assert_err(qat_dataset_load_idx(ipath, lpath, &ds), code, sub);
    ck_assert_ptr_null(ds);
    ck_assert_msg(strstr(qat_last_error(), name) != NULL, "message '%s' does not name %s",
                  qat_last_error(), name);
}

/* ---- loading the shipped subset ---- */

START_TEST(test_load_small_train)
{
    qat_dataset *ds = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(small_dir, 1, &ds), 0);
    ck_assert_int_eq(ds->n, 2000);
    ck_assert_int_eq(ds->c, 1);
    ck_assert_int_eq(ds->h, 28);
    ck_assert_int_eq(ds->w, 28);
    ck_assert_int_eq(ds->num_classes, 10);
    ck_assert_float_eq(ds->mean, 0.2860f);
    ck_assert_float_eq(ds->std, 0.3530f);
    static const int first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    for (int i = 0; i < 10; i++) ck_assert_int_eq(ds->labels[i], first[i]);
    ck_assert_int_eq(ds->labels[1999], 8);
    static const int hist[10] = {194, 216, 202, 195, 186, 200, 194, 215, 198, 200};
    int h[10] = {0};
    for (int i = 0; i < ds->n; i++) h[ds->labels[i]]++;
    for (int c = 0; c < 10; c++) ck_assert_int_eq(h[c], hist[c]);
    static const int row14[28] = {0,   0,   1,   4,   6,   7,   2,   0,   0,   0,
                                  0,   0,   237, 226, 217, 223, 222, 219, 222, 221,
                                  216, 223, 229, 215, 218, 255, 77,  0};
    for (int x = 0; x < 28; x++) ck_assert_int_eq(ds->images[14 * 28 + x], row14[x]);
    long s0 = 0, slast = 0, total = 0;
    for (int j = 0; j < 784; j++) {
        s0 += ds->images[j];
        slast += ds->images[1999 * 784 + j];
    }
    for (int j = 0; j < 2000 * 784; j++) total += ds->images[j];
    ck_assert_int_eq(s0, 76247);
    ck_assert_int_eq(slast, 49119);
    ck_assert_int_eq(total, 113529887);
    qat_dataset_free(ds);
}
END_TEST

START_TEST(test_load_small_test)
{
    qat_dataset *ds = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(small_dir, 0, &ds), 0);
    ck_assert_int_eq(ds->n, 1000);
    static const int first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    for (int i = 0; i < 10; i++) ck_assert_int_eq(ds->labels[i], first[i]);
    ck_assert_int_eq(ds->labels[999], 7);
    long s0 = 0, total = 0, lsum = 0;
    for (int j = 0; j < 784; j++) s0 += ds->images[j];
    for (int j = 0; j < 1000 * 784; j++) total += ds->images[j];
    for (int i = 0; i < 1000; i++) lsum += ds->labels[i];
    ck_assert_int_eq(s0, 33456);
    ck_assert_int_eq(total, 58034149);
    ck_assert_int_eq(lsum, 4363);
    qat_dataset_free(ds);
}
END_TEST

/* The full dataset, when Debian's package is installed. */
START_TEST(test_load_full_if_installed)
{
    FILE *f = fopen(QAT_FASHION_MNIST_DIR "/train-labels-idx1-ubyte.gz", "rb");
    if (!f) return;
    fclose(f);
    qat_dataset *tr = NULL, *te = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(NULL, 1, &tr), 0);
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(NULL, 0, &te), 0);
    ck_assert_int_eq(tr->n, 60000);
    ck_assert_int_eq(te->n, 10000);
    /* The small subset is a prefix of the real files. */
    qat_dataset *small = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(small_dir, 1, &small), 0);
    ck_assert_int_eq(memcmp(small->images, tr->images, 2000 * 784), 0);
    ck_assert_int_eq(memcmp(small->labels, tr->labels, 2000), 0);
    int h[10] = {0};
    for (int i = 0; i < tr->n; i++) h[tr->labels[i]]++;
    for (int c = 0; c < 10; c++) ck_assert_int_eq(h[c], 6000);
    qat_dataset_free(small);
    qat_dataset_free(tr);
    qat_dataset_free(te);
}
END_TEST

/* Raw copies (decompressed by zlib's gzread) load to the same bytes; gzip is
 * detected by content, whatever the name says. */
START_TEST(test_raw_gz_equivalence)
{
    qat_dataset *gz = NULL, *raw = NULL, *mixed = NULL, *dir = NULL;
    ck_assert_int_eq(qat_dataset_load_idx(small_path("train-images-idx3-ubyte.gz"),
                                          small_path("train-labels-idx1-ubyte.gz"), &gz),
                     0);
    size_t li, ll;
    unsigned char *bi = gz_slurp(small_path("train-images-idx3-ubyte.gz"), &li);
    unsigned char *bl = gz_slurp(small_path("train-labels-idx1-ubyte.gz"), &ll);
    ck_assert_uint_eq(li, 16 + 2000 * 784);
    ck_assert_uint_eq(ll, 8 + 2000);
    /* Raw files under the names the directory loader looks for. */
    ck_assert_int_eq(tu_write_file(tmp_path("train-images-idx3-ubyte"), bi, li), 0);
    ck_assert_int_eq(tu_write_file(tmp_path("train-labels-idx1-ubyte"), bl, ll), 0);
    ck_assert_int_eq(qat_dataset_load_idx(tmp_path("train-images-idx3-ubyte"),
                                          tmp_path("train-labels-idx1-ubyte"), &raw),
                     0);
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(tu_tmp_dir(), 1, &dir), 0);
    /* A raw file named .gz and a gzip file with no suffix. */
    ck_assert_int_eq(tu_write_file(tmp_path("raw_named.gz"), bi, li), 0);
    size_t lg;
    unsigned char *bg = slurp(small_path("train-labels-idx1-ubyte.gz"), &lg);
    ck_assert_int_eq(tu_write_file(tmp_path("gz_named.idx"), bg, lg), 0);
    ck_assert_int_eq(qat_dataset_load_idx(tmp_path("raw_named.gz"), tmp_path("gz_named.idx"),
                                          &mixed),
                     0);
    qat_dataset *all[3] = {raw, dir, mixed};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(all[k]->n, 2000);
        ck_assert_int_eq(all[k]->h, 28);
        ck_assert_int_eq(memcmp(all[k]->images, gz->images, 2000 * 784), 0);
        ck_assert_int_eq(memcmp(all[k]->labels, gz->labels, 2000), 0);
        ck_assert_int_eq(memcmp(all[k]->images, bi + 16, 2000 * 784), 0);
    }
    free(bi);
    free(bl);
    free(bg);
    qat_dataset_free(gz);
    qat_dataset_free(raw);
    qat_dataset_free(dir);
    qat_dataset_free(mixed);
}
END_TEST

/* Concatenated gzip members are one stream (gzip(1) semantics). */
START_TEST(test_gzip_multi_member)
{
    unsigned char buf[64];
    uint32_t n = 6;
    size_t len = make_idx(buf, 0x801, 1, &n, 6);
    write_gz(tmp_path("m1.gz"), buf, 5);
    write_gz(tmp_path("m2.gz"), buf + 5, len - 5);
    size_t l1, l2;
    unsigned char *a = slurp(tmp_path("m1.gz"), &l1);
    unsigned char *b = slurp(tmp_path("m2.gz"), &l2);
    unsigned char *c = malloc(l1 + l2);
    memcpy(c, a, l1);
    memcpy(c + l1, b, l2);
    ck_assert_int_eq(tu_write_file(tmp_path("multi.gz"), c, l1 + l2), 0);
    qat_idx idx;
    ck_assert_int_eq(qat_idx_load(tmp_path("multi.gz"), 1, &idx), 0);
    ck_assert_int_eq(idx.ndim, 1);
    ck_assert_int_eq(idx.dims[0], 6);
    ck_assert_uint_eq(idx.size, 6);
    for (int i = 0; i < 6; i++) ck_assert_int_eq(idx.data[i], i % 7);
    qat_idx_free(&idx);
    ck_assert_ptr_null(idx.data);
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(test_idx_generic)
{
    unsigned char buf[64];
    uint32_t dims[4] = {2, 1, 3, 2};
    size_t len = make_idx(buf, 0x804, 4, dims, 12);
    ck_assert_int_eq(tu_write_file(tmp_path("four.idx"), buf, len), 0);
    qat_idx idx;
    ck_assert_int_eq(qat_idx_load(tmp_path("four.idx"), 0, &idx), 0);
    ck_assert_int_eq(idx.ndim, 4);
    ck_assert_int_eq(idx.dims[0], 2);
    ck_assert_int_eq(idx.dims[2], 3);
    ck_assert_int_eq(idx.dims[4], 0);
    ck_assert_uint_eq(idx.size, 12);
    ck_assert_int_eq(idx.data[11], 11 % 7);
    qat_idx_free(&idx);
    ck_assert_err(qat_idx_load(tmp_path("four.idx"), 3, &idx), QAT_ERR_FORMAT,
                  "announces 4 dimensions, expected 3");
    ck_assert_ptr_null(idx.data);
    qat_idx_free(NULL);
}
END_TEST

/* ---- broken files ---- */

START_TEST(test_bad_magic)
{
    unsigned char buf[8192];
    uint32_t d3[3] = {2, 28, 28};
    size_t len = make_idx(buf, 0x12345678, 3, d3, 2 * 784);
    expect_images_error("magic.idx", buf, len, 0, 2, QAT_ERR_FORMAT,
                        "bad magic 0x12345678, not an IDX file (expected 0x00000803)");
    /* A labels file where images belong. */
    uint32_t d1 = 2;
    len = make_idx(buf, 0x801, 1, &d1, 2);
    expect_images_error("labels_as_images.idx", buf, len, 0, 2, QAT_ERR_FORMAT,
                        "magic 0x00000801 announces 1 dimension, expected 3 (magic 0x00000803)");
    /* IDX of floats: valid IDX, unsupported element type. */
    len = make_idx(buf, 0x0D03, 3, d3, 4 * 2 * 784);
    expect_images_error("float.idx", buf, len, 1, 2, QAT_ERR_UNSUPPORTED,
                        "element type float32 (0x0d) is not supported");
    /* Unknown element type. */
    len = make_idx(buf, 0x0703, 3, d3, 2 * 784);
    expect_images_error("type7.idx", buf, len, 0, 2, QAT_ERR_FORMAT, "bad magic 0x00000703");
}
END_TEST

START_TEST(test_wrong_dims_count)
{
    unsigned char buf[4096];
    uint32_t d4[4] = {2, 1, 28, 28};
    size_t len = make_idx(buf, 0x804, 4, d4, 2 * 784);
    expect_images_error("dims4.idx", buf, len, 0, 2, QAT_ERR_FORMAT,
                        "announces 4 dimensions, expected 3");
    expect_images_error("dims4.idx.gz", buf, len, 1, 2, QAT_ERR_FORMAT,
                        "announces 4 dimensions, expected 3");
    /* Labels with two dimensions. */
    uint32_t d3[3] = {2, 28, 28};
    len = make_idx(buf, 0x803, 3, d3, 2 * 784);
    ck_assert_int_eq(tu_write_file(tmp_path("ok_images.idx"), buf, len), 0);
    uint32_t d2[2] = {2, 1};
    len = make_idx(buf, 0x802, 2, d2, 2);
    ck_assert_int_eq(tu_write_file(tmp_path("labels2d.idx"), buf, len), 0);
    qat_dataset *ds = NULL;
    ck_assert_err(qat_dataset_load_idx(tmp_path("ok_images.idx"), tmp_path("labels2d.idx"), &ds),
                  QAT_ERR_FORMAT, "labels2d.idx: magic 0x00000802 announces 2 dimensions, expected 1");
    ck_assert_ptr_null(ds);
}
END_TEST

START_TEST(test_zero_dimension)
{
    unsigned char buf[4096];
    uint32_t d[3] = {0, 28, 28};
    size_t len = make_idx(buf, 0x803, 3, d, 0);
    expect_images_error("zero_n.idx", buf, len, 0, 2, QAT_ERR_FORMAT, "dimension 0 of 3 is 0");
    uint32_t e[3] = {2, 28, 0};
    len = make_idx(buf, 0x803, 3, e, 0);
    expect_images_error("zero_w.idx.gz", buf, len, 1, 2, QAT_ERR_FORMAT, "dimension 2 of 3 is 0");
}
END_TEST

START_TEST(test_truncated)
{
    unsigned char buf[4096];
    uint32_t d[3] = {2, 28, 28};
    size_t len = make_idx(buf, 0x803, 3, d, 2 * 784);
    expect_images_error("trunc.idx", buf, len - 100, 0, 2, QAT_ERR_FORMAT,
                        "truncated: payload has 1468 bytes, the header (2 x 28 x 28) announces 1568");
    expect_images_error("trunc.idx.gz", buf, len - 100, 1, 2, QAT_ERR_FORMAT,
                        "truncated: payload has 1468 bytes");
    /* Inside the header. */
    expect_images_error("trunc_hdr.idx", buf, 10, 0, 2, QAT_ERR_FORMAT,
                        "truncated: file ends inside the IDX header");
    expect_images_error("trunc_magic.idx", buf, 3, 0, 2, QAT_ERR_FORMAT,
                        "file ends inside the IDX magic");
    expect_images_error("empty.idx", buf, 0, 0, 2, QAT_ERR_FORMAT, "file is empty");
    /* A header announcing a huge payload fails as truncated, without
     * allocating it. */
    uint32_t huge[3] = {2000000000u, 2000000000u, 2};
    len = make_idx(buf, 0x803, 3, huge, 10);
    expect_images_error("huge.idx", buf, len, 0, 2, QAT_ERR_FORMAT, "truncated: payload has 10 bytes");
    /* Dimensions whose product does not fit in memory's address range. */
    uint32_t over[3] = {2000000000u, 2000000000u, 2000000000u};
    len = make_idx(buf, 0x803, 3, over, 10);
    expect_images_error("over.idx", buf, len, 0, 2, QAT_ERR_FORMAT, "dimensions multiply to more than");
}
END_TEST

START_TEST(test_trailing_bytes)
{
    unsigned char buf[4096];
    uint32_t d[3] = {2, 28, 28};
    size_t len = make_idx(buf, 0x803, 3, d, 2 * 784 + 3);
    expect_images_error("trail.idx", buf, len, 0, 2, QAT_ERR_FORMAT,
                        "3 trailing bytes after the 1568-byte payload");
    expect_images_error("trail.idx.gz", buf, len, 1, 2, QAT_ERR_FORMAT,
                        "3 trailing bytes after the 1568-byte payload");
    /* Labels with one extra byte. */
    len = make_idx(buf, 0x803, 3, d, 2 * 784);
    ck_assert_int_eq(tu_write_file(tmp_path("ok_images.idx"), buf, len), 0);
    uint32_t n = 2;
    len = make_idx(buf, 0x801, 1, &n, 3);
    ck_assert_int_eq(tu_write_file(tmp_path("lbl_trail.idx"), buf, len), 0);
    qat_dataset *ds = NULL;
    ck_assert_err(qat_dataset_load_idx(tmp_path("ok_images.idx"), tmp_path("lbl_trail.idx"), &ds),
                  QAT_ERR_FORMAT, "lbl_trail.idx: 1 trailing byte after the 2-byte payload");
}
END_TEST

START_TEST(test_label_out_of_range)
{
    unsigned char buf[4096];
    uint32_t d[3] = {3, 2, 2};
    size_t len = make_idx(buf, 0x803, 3, d, 12);
    ck_assert_int_eq(tu_write_file(tmp_path("img3.idx"), buf, len), 0);
    uint32_t n = 3;
    len = make_idx(buf, 0x801, 1, &n, 3);
    buf[8 + 1] = 10;
    ck_assert_int_eq(tu_write_file(tmp_path("lbl10.idx"), buf, len), 0);
    qat_dataset *ds = NULL;
    ck_assert_err(qat_dataset_load_idx(tmp_path("img3.idx"), tmp_path("lbl10.idx"), &ds),
                  QAT_ERR_FORMAT, "lbl10.idx: label 10 of image 1 is out of range [0, 10)");
    ck_assert_ptr_null(ds);
    /* The real labels with fewer classes than they use. */
    ck_assert_err(qat_dataset_load_idx_classes(small_path("t10k-images-idx3-ubyte.gz"),
                                               small_path("t10k-labels-idx1-ubyte.gz"), 5, &ds),
                  QAT_ERR_FORMAT, "label 9 of image 0 is out of range [0, 5)");
    ck_assert_ptr_null(ds);
    /* With enough classes the same files load. */
    buf[8 + 1] = 11;
    ck_assert_int_eq(tu_write_file(tmp_path("lbl11.idx"), buf, len), 0);
    ck_assert_int_eq(qat_dataset_load_idx_classes(tmp_path("img3.idx"), tmp_path("lbl11.idx"), 12,
                                                  &ds),
                     0);
    ck_assert_int_eq(ds->num_classes, 12);
    ck_assert_int_eq(ds->labels[1], 11);
    qat_dataset_free(ds);
    ck_assert_err(qat_dataset_load_idx_classes(tmp_path("img3.idx"), tmp_path("lbl11.idx"), 0, &ds),
                  QAT_ERR_ARG, "num_classes 0");
}
END_TEST

START_TEST(test_count_mismatch)
{
    unsigned char buf[4096];
    uint32_t d[3] = {2, 28, 28};
    size_t len = make_idx(buf, 0x803, 3, d, 2 * 784);
    expect_images_error("two_images.idx", buf, len, 0, 3, QAT_ERR_FORMAT,
                        "two_images.idx has 2 images but");
    ck_assert_msg(strstr(qat_last_error(), "lbl_for_images has 3 labels: counts differ"), "%s",
                  qat_last_error());
    /* Real test images with real training labels. */
    qat_dataset *ds = NULL;
    ck_assert_err(qat_dataset_load_idx(small_path("t10k-images-idx3-ubyte.gz"),
                                       small_path("train-labels-idx1-ubyte.gz"), &ds),
                  QAT_ERR_FORMAT, "has 1000 images but");
    ck_assert_ptr_null(ds);
}
END_TEST

START_TEST(test_corrupt_gzip)
{
    size_t len;
    unsigned char *gz = slurp(small_path("t10k-labels-idx1-ubyte.gz"), &len);
    const char *lbl = small_path("t10k-labels-idx1-ubyte.gz");
    char lpath[4096];
    snprintf(lpath, sizeof lpath, "%s", lbl);
    unsigned char *bad = malloc(len + 16);
    qat_dataset *ds = NULL;

    /* A damaged deflate stream: invalid block type 3 in the first block
     * header (bits 1-2 of the byte after the 10-byte gzip header). */
    memcpy(bad, gz, len);
    bad[10] |= 0x06;
    ck_assert_int_eq(tu_write_file(tmp_path("t10k-labels-bad.gz"), bad, len), 0);
    ck_assert_err(qat_idx_load(tmp_path("t10k-labels-bad.gz"), 1, &(qat_idx){0}), QAT_ERR_FORMAT,
                  "t10k-labels-bad.gz: corrupt gzip stream: invalid block type");

    /* A wrong CRC in the trailer: the data decompresses but fails its check. */
    memcpy(bad, gz, len);
    bad[len - 8] ^= 0xff;
    ck_assert_int_eq(tu_write_file(tmp_path("crc.gz"), bad, len), 0);
    ck_assert_err(qat_idx_load(tmp_path("crc.gz"), 1, &(qat_idx){0}), QAT_ERR_FORMAT,
                  "crc.gz: corrupt gzip stream: incorrect data check");

    /* Cut short. */
    ck_assert_int_eq(tu_write_file(tmp_path("cut.gz"), gz, len / 2), 0);
    ck_assert_err(qat_idx_load(tmp_path("cut.gz"), 1, &(qat_idx){0}), QAT_ERR_FORMAT,
                  "cut.gz: truncated gzip stream");
    /* Only the trailer missing. */
    ck_assert_int_eq(tu_write_file(tmp_path("notrailer.gz"), gz, len - 8), 0);
    ck_assert_err(qat_idx_load(tmp_path("notrailer.gz"), 1, &(qat_idx){0}), QAT_ERR_FORMAT,
                  "notrailer.gz: truncated gzip stream");

    /* Garbage after a complete gzip stream. */
    memcpy(bad, gz, len);
    memcpy(bad + len, "garbage!", 8);
    ck_assert_int_eq(tu_write_file(tmp_path("garbage.gz"), bad, len + 8), 0);
    ck_assert_err(qat_idx_load(tmp_path("garbage.gz"), 1, &(qat_idx){0}), QAT_ERR_FORMAT,
                  "garbage.gz: trailing bytes after the gzip stream");

    /* Through the dataset loader too, and a bad gzip header. */
    memcpy(bad, gz, len);
    bad[2] = 7; /* compression method must be 8 (deflate) */
    ck_assert_int_eq(tu_write_file(tmp_path("method.gz"), bad, len), 0);
    ck_assert_err(qat_dataset_load_idx(small_path("t10k-images-idx3-ubyte.gz"), tmp_path("method.gz"),
                                       &ds),
                  QAT_ERR_FORMAT, "method.gz: corrupt gzip stream: unknown compression method");
    ck_assert_ptr_null(ds);
    free(bad);
    free(gz);
}
END_TEST

START_TEST(test_missing_file)
{
    qat_dataset *ds = NULL;
    ck_assert_err(qat_dataset_load_idx(tmp_path("nope-images"), small_path("t10k-labels-idx1-ubyte.gz"),
                                       &ds),
                  QAT_ERR_IO, "nope-images: cannot open: ");
    ck_assert_ptr_null(ds);
    ck_assert_err(qat_dataset_load_idx(small_path("t10k-images-idx3-ubyte.gz"), tmp_path("nope-labels"),
                                       &ds),
                  QAT_ERR_IO, "nope-labels: cannot open: ");
    /* A directory with the training files only. */
    ck_assert_err(qat_dataset_load_fashion_mnist("/nonexistent-qat-dir", 1, &ds), QAT_ERR_IO,
                  "/nonexistent-qat-dir: train-images-idx3-ubyte not found (neither "
                  "train-images-idx3-ubyte nor train-images-idx3-ubyte.gz)");
    size_t l;
    unsigned char *b = gz_slurp(small_path("t10k-images-idx3-ubyte.gz"), &l);
    ck_assert_int_eq(tu_write_file(tmp_path("t10k-images-idx3-ubyte"), b, l), 0);
    free(b);
    ck_assert_err(qat_dataset_load_fashion_mnist(tu_tmp_dir(), 0, &ds), QAT_ERR_IO,
                  "t10k-labels-idx1-ubyte not found");
    ck_assert_msg(strstr(qat_last_error(), tu_tmp_dir()) == qat_last_error(), "%s", qat_last_error());
    ck_assert_ptr_null(ds);
    ck_assert_err(qat_dataset_load_idx(NULL, NULL, &ds), QAT_ERR_ARG, "NULL path");
}
END_TEST

/* ---- datasets in memory ---- */

/* n images of 1 x 1 x 2 whose pixels encode the index (i & 255, i >> 8),
 * labels i % 10. */
static qat_dataset *id_dataset(int n)
{
    uint8_t *im = malloc(2 * (size_t)n), *lb = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        im[2 * i] = (uint8_t)(i & 255);
        im[2 * i + 1] = (uint8_t)(i >> 8);
        lb[i] = (uint8_t)(i % 10);
    }
    qat_dataset *ds = qat_dataset_from_memory(im, lb, n, 1, 1, 2, 10);
    free(im);
    free(lb);
    ck_assert_ptr_nonnull(ds);
    return ds;
}

static int id_of(const qat_dataset *ds, int k) { return ds->images[2 * k] | (ds->images[2 * k + 1] << 8); }

START_TEST(test_from_memory)
{
    uint8_t im[2 * 3 * 2 * 2], lb[2] = {4, 1};
    for (int i = 0; i < 24; i++) im[i] = (uint8_t)(10 * i);
    qat_dataset *ds = qat_dataset_from_memory(im, lb, 2, 3, 2, 2, 5);
    ck_assert_ptr_nonnull(ds);
    im[5] = 0;
    lb[0] = 0;
    ck_assert_int_eq(ds->n, 2);
    ck_assert_int_eq(ds->c, 3);
    ck_assert_int_eq(ds->h, 2);
    ck_assert_int_eq(ds->w, 2);
    ck_assert_int_eq(ds->num_classes, 5);
    ck_assert_int_eq(ds->images[5], 50); /* a copy */
    ck_assert_int_eq(ds->images[23], 230);
    ck_assert_int_eq(ds->labels[0], 4);
    ck_assert_int_eq(ds->labels[1], 1);
    ck_assert_float_eq(ds->mean, QAT_FASHION_MNIST_MEAN);
    ck_assert_float_eq(ds->std, QAT_FASHION_MNIST_STD);
    qat_dataset_free(ds);
    qat_dataset_free(NULL);

    lb[1] = 5;
    ck_assert_ptr_null(qat_dataset_from_memory(im, lb, 2, 3, 2, 2, 5));
    ck_assert_str_eq(qat_last_error(), "qat_dataset_from_memory: label 5 of image 1 is outside [0, 5)");
    ck_assert_ptr_null(qat_dataset_from_memory(im, lb, 0, 3, 2, 2, 5));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "shape [0,3,2,2]"));
    ck_assert_ptr_null(qat_dataset_from_memory(im, lb, 2, 3, 2, 2, 257));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "num_classes 257"));
    ck_assert_ptr_null(qat_dataset_from_memory(NULL, lb, 2, 3, 2, 2, 10));
}
END_TEST

START_TEST(test_subset)
{
    qat_dataset *ds = id_dataset(300), *s = NULL;
    ds->mean = 0.5f;
    ck_assert_int_eq(qat_dataset_subset(ds, 0, 100, &s), 0);
    ck_assert_int_eq(s->n, 100);
    ck_assert_float_eq(s->mean, 0.5f);
    for (int k = 0; k < 100; k++) ck_assert_int_eq(id_of(s, k), k);
    qat_dataset_free(s);
    ck_assert_int_eq(qat_dataset_subset(ds, 250, 50, &s), 0);
    ck_assert_int_eq(s->n, 50);
    for (int k = 0; k < 50; k++) {
        ck_assert_int_eq(id_of(s, k), 250 + k);
        ck_assert_int_eq(s->labels[k], (250 + k) % 10);
    }
    qat_dataset_free(s);
    ck_assert_err(qat_dataset_subset(ds, 250, 51, &s), QAT_ERR_ARG, "outside the dataset's 300");
    ck_assert_ptr_null(s);
    ck_assert_err(qat_dataset_subset(ds, 0, 0, &s), QAT_ERR_ARG, "count >= 1");
    ck_assert_err(qat_dataset_subset(ds, -1, 5, &s), QAT_ERR_ARG, "outside");
    qat_dataset_free(ds);
}
END_TEST

START_TEST(test_split)
{
    const int n = 1000, nv = 123;
    qat_dataset *ds = id_dataset(n), *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL;
    ck_assert_int_eq(qat_dataset_split(ds, nv, 42, &tr, &va), 0);
    ck_assert_int_eq(tr->n, n - nv);
    ck_assert_int_eq(va->n, nv);
    /* Disjoint, together everything, each part in original order, labels
     * travel with their images. */
    int *seen = calloc((size_t)n, sizeof *seen);
    for (int k = 0; k < tr->n; k++) {
        seen[id_of(tr, k)]++;
        ck_assert_int_eq(tr->labels[k], id_of(tr, k) % 10);
        if (k) ck_assert_int_lt(id_of(tr, k - 1), id_of(tr, k));
    }
    for (int k = 0; k < va->n; k++) {
        seen[id_of(va, k)] += 2;
        ck_assert_int_eq(va->labels[k], id_of(va, k) % 10);
        if (k) ck_assert_int_lt(id_of(va, k - 1), id_of(va, k));
    }
    for (int i = 0; i < n; i++) ck_assert_msg(seen[i] == 1 || seen[i] == 2, "image %d: %d", i, seen[i]);
    /* Random, not a block: validation images spread over the whole range. */
    ck_assert_int_lt(id_of(va, 0), 100);
    ck_assert_int_gt(id_of(va, nv - 1), 900);
    /* Same seed, same split. */
    ck_assert_int_eq(qat_dataset_split(ds, nv, 42, &tr2, &va2), 0);
    ck_assert_int_eq(memcmp(va->images, va2->images, 2 * (size_t)nv), 0);
    ck_assert_int_eq(memcmp(tr->images, tr2->images, 2 * (size_t)(n - nv)), 0);
    qat_dataset_free(tr2);
    qat_dataset_free(va2);
    /* Another seed, another split. */
    ck_assert_int_eq(qat_dataset_split(ds, nv, 43, &tr2, &va2), 0);
    ck_assert_int_ne(memcmp(va->images, va2->images, 2 * (size_t)nv), 0);
    qat_dataset_free(tr2);
    qat_dataset_free(va2);
    /* n_val = 0: everything trains. */
    ck_assert_int_eq(qat_dataset_split(ds, 0, 42, &tr2, &va2), 0);
    ck_assert_ptr_null(va2);
    ck_assert_int_eq(tr2->n, n);
    ck_assert_int_eq(memcmp(tr2->images, ds->images, 2 * (size_t)n), 0);
    qat_dataset_free(tr2);
    /* No training images left, or negative. */
    ck_assert_err(qat_dataset_split(ds, n, 42, &tr2, &va2), QAT_ERR_ARG, "n_val 1000 must be in [0, 1000)");
    ck_assert_ptr_null(tr2);
    ck_assert_ptr_null(va2);
    ck_assert_err(qat_dataset_split(ds, -1, 42, &tr2, &va2), QAT_ERR_ARG, "n_val -1");
    free(seen);
    qat_dataset_free(tr);
    qat_dataset_free(va);
    qat_dataset_free(ds);
}
END_TEST

START_TEST(test_normalize)
{
    uint8_t im[6] = {0, 1, 77, 128, 237, 255}, lb[3] = {0, 1, 2};
    qat_dataset *ds = qat_dataset_from_memory(im, lb, 3, 1, 1, 2, 3);
    float out[6];
    ck_assert_int_eq(qat_dataset_normalize_into(ds, NULL, 3, out), 0);
    const float want[6] = {NORM_0, NORM_1, NORM_77, NORM_128, NORM_237, NORM_255};
    for (int i = 0; i < 6; i++) ck_assert_msg(out[i] == want[i], "%d: %a != %a", i, out[i], want[i]);
    int idx[2] = {2, 0};
    ck_assert_int_eq(qat_dataset_normalize_into(ds, idx, 2, out), 0);
    ck_assert(out[0] == NORM_237 && out[1] == NORM_255 && out[2] == NORM_0 && out[3] == NORM_1);
    /* Other statistics: (p/255 - 0.5) / 0.25 is exact for these pixels. */
    ds->mean = 0.5f;
    ds->std = 0.25f;
    ck_assert_int_eq(qat_dataset_normalize_into(ds, idx + 1, 1, out), 0);
    ck_assert_float_eq(out[0], -2.0f);
    ck_assert_float_eq(out[1], (1.0f / 255.0f - 0.5f) / 0.25f);
    idx[1] = 3;
    ck_assert_err(qat_dataset_normalize_into(ds, idx, 2, out), QAT_ERR_ARG, "idx[1] = 3 outside [0, 3)");
    ck_assert_err(qat_dataset_normalize_into(ds, NULL, 4, out), QAT_ERR_ARG, "count 4 > 3");
    ds->std = 0.0f;
    ck_assert_err(qat_dataset_normalize_into(ds, NULL, 1, out), QAT_ERR_ARG, "std must be finite and > 0");
    qat_dataset_free(ds);
}
END_TEST

/* ---- batch iterator ---- */

/* Runs one epoch; ids receives the image ids in order (decoded from the
 * normalised floats of an id_dataset), returns the number of images. */
static int run_epoch(qat_batch_iter *it, const qat_dataset *ds, int *ids, int *nbatches, int *last)
{
    float x[2 * 128];
    uint8_t y[128];
    int cnt, total = 0, r;
    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - ds->mean) / ds->std;
    *nbatches = 0;
    while ((r = qat_batch_iter_next(it, x, y, &cnt)) == 1) {
        (*nbatches)++;
        *last = cnt;
        for (int k = 0; k < cnt; k++) {
            int lo = -1, hi = -1;
            for (int p = 0; p < 256; p++) {
                if (x[2 * k] == lut[p]) lo = p;
                if (x[2 * k + 1] == lut[p]) hi = p;
            }
            ck_assert(lo >= 0 && hi >= 0);
            int id = lo | (hi << 8);
            ck_assert_int_eq(y[k], id % 10);
            ids[total++] = id;
        }
    }
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 0); /* stays at the end */
    return total;
}

START_TEST(test_iter_covers_epoch)
{
    const int n = 1000;
    qat_dataset *ds = id_dataset(n);
    qat_batch_opts o = qat_batch_opts_defaults();
    ck_assert_int_eq(o.batch_size, 128);
    ck_assert_int_eq(o.shuffle, 1);
    o.batch_size = 64;
    o.seed = 7;
    qat_batch_iter *it = NULL;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_num_batches(it), 16);
    ck_assert_uint_eq(qat_batch_iter_x_size(it), 128);
    int *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *seen = calloc(n, sizeof *seen);
    int nb, last;
    for (int e = 0; e < 3; e++) {
        ck_assert_int_eq(qat_batch_iter_epoch(it), e);
        int *ids = e % 2 ? b : a;
        ck_assert_int_eq(run_epoch(it, ds, ids, &nb, &last), n);
        ck_assert_int_eq(nb, 16);
        ck_assert_int_eq(last, 1000 - 15 * 64);
        memset(seen, 0, n * sizeof *seen);
        for (int i = 0; i < n; i++) seen[ids[i]]++;
        for (int i = 0; i < n; i++) ck_assert_int_eq(seen[i], 1);
        int inorder = 0;
        for (int i = 0; i < n; i++) inorder += ids[i] == i;
        ck_assert_int_lt(inorder, 20); /* shuffled */
        if (e == 1) ck_assert_int_ne(memcmp(a, b, n * sizeof *a), 0); /* epochs differ */
        qat_batch_iter_reset_epoch(it);
    }
    /* Same seed: same orders, epoch by epoch, from a fresh iterator. */
    qat_batch_iter *it2 = NULL;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it2), 0);
    ck_assert_int_eq(run_epoch(it2, ds, b, &nb, &last), n);
    qat_batch_iter_reset_epoch(it2);
    qat_batch_iter_reset_epoch(it2);
    ck_assert_int_eq(run_epoch(it2, ds, seen, &nb, &last), n);
    ck_assert_int_eq(memcmp(a, seen, n * sizeof *a), 0); /* epoch 2 of it == epoch 2 of it2 */
    qat_batch_iter_free(it2);
    /* Another seed: another order. */
    o.seed = 8;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it2), 0);
    ck_assert_int_eq(run_epoch(it2, ds, seen, &nb, &last), n);
    ck_assert_int_ne(memcmp(b, seen, n * sizeof *a), 0);
    qat_batch_iter_free(it2);
    free(a);
    free(b);
    free(seen);
    qat_batch_iter_free(it);
    qat_batch_iter_free(NULL);
    qat_dataset_free(ds);
}
END_TEST

START_TEST(test_iter_in_order_and_drop_last)
{
    const int n = 300;
    qat_dataset *ds = id_dataset(n);
    qat_batch_opts o = qat_batch_opts_defaults();
    o.shuffle = 0;
    o.batch_size = 128;
    qat_batch_iter *it = NULL;
    int ids[300], nb, last;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    for (int e = 0; e < 2; e++) {
        ck_assert_int_eq(run_epoch(it, ds, ids, &nb, &last), n);
        ck_assert_int_eq(nb, 3);
        ck_assert_int_eq(last, 44);
        for (int i = 0; i < n; i++) ck_assert_int_eq(ids[i], i);
        qat_batch_iter_reset_epoch(it);
    }
    qat_batch_iter_free(it);
    o.drop_last = 1;
    o.shuffle = 1;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_num_batches(it), 2);
    ck_assert_int_eq(run_epoch(it, ds, ids, &nb, &last), 256);
    ck_assert_int_eq(nb, 2);
    ck_assert_int_eq(last, 128);
    int seen[300] = {0};
    for (int i = 0; i < 256; i++) ck_assert_int_eq(seen[ids[i]]++, 0);
    qat_batch_iter_free(it);
    /* Bad options. */
    o.batch_size = 301;
    ck_assert_err(qat_batch_iter_create(ds, &o, &it), QAT_ERR_ARG, "drop_last with batch_size 301 > 300");
    ck_assert_ptr_null(it);
    o.batch_size = 0;
    ck_assert_err(qat_batch_iter_create(ds, &o, &it), QAT_ERR_ARG, "batch_size 0");
    o.batch_size = 8;
    o.hflip_prob = 1.5f;
    ck_assert_err(qat_batch_iter_create(ds, &o, &it), QAT_ERR_ARG, "hflip_prob 1.5");
    o.hflip_prob = 0.0f;
    o.crop_padding = -1;
    ck_assert_err(qat_batch_iter_create(ds, &o, &it), QAT_ERR_ARG, "crop_padding -1");
    qat_dataset_free(ds);
}
END_TEST

/* Iterator batches are the normalised pixels of the right images. */
START_TEST(test_iter_values)
{
    qat_dataset *ds = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(small_dir, 0, &ds), 0);
    qat_batch_opts o = qat_batch_opts_defaults();
    o.shuffle = 0;
    o.batch_size = 16;
    qat_batch_iter *it = NULL;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    float *x = malloc(qat_batch_iter_x_size(it) * sizeof *x);
    uint8_t y[16];
    int cnt;
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    ck_assert_int_eq(cnt, 16);
    ck_assert_int_eq(y[0], 9);
    ck_assert_int_eq(y[1], 2);
    /* Test image 0 (python): pixel (0, 0) is 0, (14, 0) is 0. */
    ck_assert(x[14 * 28 + 0] == NORM_0);
    ck_assert(x[0] == NORM_0);
    float ref[16 * 784];
    ck_assert_int_eq(qat_dataset_normalize_into(ds, NULL, 16, ref), 0);
    ck_assert_int_eq(memcmp(ref, x, sizeof ref), 0);
    /* The next batch starts at image 16. */
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    ck_assert_int_eq(qat_dataset_normalize_into(ds, (int[]){16}, 1, ref), 0);
    ck_assert_int_eq(memcmp(ref, x, 784 * sizeof *x), 0);
    ck_assert_int_eq(qat_batch_iter_next(NULL, x, y, &cnt), QAT_ERR_ARG);
    ck_assert_int_eq(qat_batch_iter_next(it, NULL, y, &cnt), QAT_ERR_ARG);
    ds->std = -1.0f;
    ck_assert_err(qat_batch_iter_next(it, x, y, &cnt), QAT_ERR_ARG, "std must be finite and > 0");
    free(x);
    qat_batch_iter_free(it);
    qat_dataset_free(ds);
}
END_TEST

/* Collects nb batches (x and y) into xs/ys; returns images collected. */
static int collect(qat_batch_iter *it, int nb, float *xs, uint8_t *ys, size_t per)
{
    int total = 0, cnt;
    for (int b = 0; b < nb; b++) {
        int r = qat_batch_iter_next(it, xs + (size_t)total * per, ys + total, &cnt);
        if (r == 0) {
            qat_batch_iter_reset_epoch(it);
            r = qat_batch_iter_next(it, xs + (size_t)total * per, ys + total, &cnt);
        }
        ck_assert_int_eq(r, 1);
        total += cnt;
    }
    return total;
}

START_TEST(test_iter_state_resume)
{
    qat_dataset *ds = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(small_dir, 0, &ds), 0); /* 1000 images */
    qat_batch_opts o = qat_batch_opts_defaults();
    o.batch_size = 96; /* 11 batches, the last of 40 */
    o.seed = 1234;
    o.crop_padding = 2;
    o.hflip_prob = 0.5f;
    const size_t per = 784;
    const int nb = 30; /* crosses two epoch ends */
    float *xa = malloc((size_t)nb * 96 * per * sizeof *xa), *xb = malloc((size_t)nb * 96 * per * sizeof *xb);
    uint8_t *ya = malloc((size_t)nb * 96), *yb = malloc((size_t)nb * 96);
    for (int cut = 0; cut < 3; cut++) {
        /* Reference run: skip `skip` batches, save, then record nb. */
        /* After 11 batches epoch 0 is exhausted but not yet reset. */
        const int skips[3] = {5, 11, 17}, epochs[3] = {0, 0, 1}, positions[3] = {480, 1000, 576};
        int skip = skips[cut];
        qat_batch_iter *a = NULL, *b = NULL;
        ck_assert_int_eq(qat_batch_iter_create(ds, &o, &a), 0);
        collect(a, skip, xa, ya, per);
        qat_batch_iter_state s;
        qat_batch_iter_get_state(a, &s);
        ck_assert_int_eq(s.seed, 1234);
        ck_assert_int_eq(s.epoch, epochs[cut]);
        ck_assert_int_eq(s.position, positions[cut]);
        int na = collect(a, nb, xa, ya, per);
        /* A fresh iterator restored from the plain-value state. */
        qat_batch_iter_state copy;
        memcpy(&copy, &s, sizeof copy);
        ck_assert_int_eq(qat_batch_iter_create(ds, &o, &b), 0);
        ck_assert_int_eq(qat_batch_iter_set_state(b, &copy), 0);
        int nb2 = collect(b, nb, xb, yb, per);
        ck_assert_int_eq(na, nb2);
        ck_assert_int_eq(memcmp(ya, yb, (size_t)na), 0);
        ck_assert_int_eq(memcmp(xa, xb, (size_t)na * per * sizeof *xa), 0);
        /* Without restoring, the batches differ. */
        qat_batch_iter_free(b);
        ck_assert_int_eq(qat_batch_iter_create(ds, &o, &b), 0);
        collect(b, nb, xb, yb, per);
        ck_assert_int_ne(memcmp(xa, xb, 96 * per * sizeof *xa), 0);
        qat_batch_iter_free(a);
        qat_batch_iter_free(b);
    }
    /* A state from another seed carries its seed along. */
    qat_batch_iter *a = NULL, *b = NULL;
    qat_batch_opts o2 = o;
    o2.seed = 99;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &a), 0);
    ck_assert_int_eq(qat_batch_iter_create(ds, &o2, &b), 0);
    qat_batch_iter_state s;
    qat_batch_iter_get_state(a, &s);
    ck_assert_int_eq(qat_batch_iter_set_state(b, &s), 0);
    int na = collect(a, 3, xa, ya, per);
    ck_assert_int_eq(collect(b, 3, xb, yb, per), na);
    ck_assert_int_eq(memcmp(xa, xb, (size_t)na * per * sizeof *xa), 0);
    /* Invalid states are refused and leave the iterator alone. */
    s.position = 1001;
    ck_assert_err(qat_batch_iter_set_state(b, &s), QAT_ERR_ARG, "position 1001");
    s.position = 0;
    s.epoch = -1;
    ck_assert_err(qat_batch_iter_set_state(b, &s), QAT_ERR_ARG, "epoch -1");
    qat_batch_iter_state t;
    qat_batch_iter_get_state(b, &t);
    ck_assert_int_eq(t.position, 3 * 96);
    qat_batch_iter_free(a);
    qat_batch_iter_free(b);
    free(xa);
    free(xb);
    free(ya);
    free(yb);
    qat_dataset_free(ds);
}
END_TEST

/* A 1 x 4 x 5 image with distinct nonzero pixels and its normalised LUT. */
static qat_dataset *asym_dataset(int n)
{
    uint8_t *im = malloc((size_t)n * 20), *lb = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 20; j++) im[i * 20 + j] = (uint8_t)(1 + j);
    qat_dataset *ds = qat_dataset_from_memory(im, lb, n, 1, 4, 5, 10);
    free(im);
    free(lb);
    return ds;
}

START_TEST(test_augment_flip)
{
    const int n = 200;
    qat_dataset *ds = asym_dataset(n);
    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - ds->mean) / ds->std;
    qat_batch_opts o = qat_batch_opts_defaults();
    o.batch_size = n;
    o.hflip_prob = 1.0f;
    qat_batch_iter *it = NULL;
    float *x = malloc((size_t)n * 20 * sizeof *x);
    uint8_t y[200];
    int cnt;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    ck_assert_int_eq(cnt, n);
    /* Always flipped: x[r][c] = pixel (r, 4-c) = 1 + 5r + 4 - c. */
    for (int k = 0; k < n; k++)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 5; c++) ck_assert(x[k * 20 + r * 5 + c] == lut[1 + 5 * r + 4 - c]);
    qat_batch_iter_free(it);
    /* p = 0.5: each image either untouched or mirrored, both happen. */
    o.hflip_prob = 0.5f;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    int flipped = 0;
    for (int k = 0; k < n; k++) {
        int f = x[k * 20] == lut[5];
        flipped += f;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 5; c++)
                ck_assert(x[k * 20 + r * 5 + c] == lut[1 + 5 * r + (f ? 4 - c : c)]);
    }
    ck_assert_int_gt(flipped, 70);
    ck_assert_int_lt(flipped, 130);
    /* Deterministic: the same seed flips the same images. */
    qat_batch_iter *it2 = NULL;
    float *x2 = malloc((size_t)n * 20 * sizeof *x2);
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it2), 0);
    ck_assert_int_eq(qat_batch_iter_next(it2, x2, y, &cnt), 1);
    ck_assert_int_eq(memcmp(x, x2, (size_t)n * 20 * sizeof *x), 0);
    qat_batch_iter_free(it2);
    o.seed = 5;
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it2), 0);
    ck_assert_int_eq(qat_batch_iter_next(it2, x2, y, &cnt), 1);
    ck_assert_int_ne(memcmp(x, x2, (size_t)n * 20 * sizeof *x), 0);
    qat_batch_iter_free(it2);
    free(x2);
    free(x);
    qat_batch_iter_free(it);
    qat_dataset_free(ds);
}
END_TEST

START_TEST(test_augment_crop)
{
    const int n = 500, P = 2;
    qat_dataset *ds = asym_dataset(n);
    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - ds->mean) / ds->std;
    ck_assert(lut[0] == NORM_0);
    qat_batch_opts o = qat_batch_opts_defaults();
    o.batch_size = n;
    o.crop_padding = P;
    o.seed = 3;
    qat_batch_iter *it = NULL;
    float *x = malloc((size_t)n * 20 * sizeof *x);
    uint8_t y[500];
    int cnt, hits[5][5] = {{0}};
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    /* Each output is the image shifted by (sy, sx) in [-P, P]^2 with the
     * uncovered border at the normalised value of pixel 0. */
    for (int k = 0; k < n; k++) {
        int found = 0;
        for (int sy = -P; sy <= P && !found; sy++)
            for (int sx = -P; sx <= P && !found; sx++) {
                int ok = 1;
                for (int r = 0; r < 4 && ok; r++)
                    for (int c = 0; c < 5 && ok; c++) {
                        int rr = r + sy, cc = c + sx;
                        float want = (rr >= 0 && rr < 4 && cc >= 0 && cc < 5) ? lut[1 + 5 * rr + cc] : NORM_0;
                        ok = x[k * 20 + r * 5 + c] == want;
                    }
                if (ok) {
                    found = 1;
                    hits[sy + P][sx + P]++;
                }
            }
        ck_assert_msg(found, "image %d is no shift of the input", k);
    }
    /* Every one of the 25 offsets occurs (500 draws, expected 20 each). */
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) ck_assert_int_gt(hits[a][b], 3);
    qat_batch_iter_free(it);
    /* Crop + flip with the same seed twice: identical. */
    o.hflip_prob = 0.5f;
    float *x2 = malloc((size_t)n * 20 * sizeof *x2);
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x, y, &cnt), 1);
    qat_batch_iter_free(it);
    ck_assert_int_eq(qat_batch_iter_create(ds, &o, &it), 0);
    ck_assert_int_eq(qat_batch_iter_next(it, x2, y, &cnt), 1);
    ck_assert_int_eq(memcmp(x, x2, (size_t)n * 20 * sizeof *x), 0);
    free(x2);
    free(x);
    qat_batch_iter_free(it);
    qat_dataset_free(ds);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("idx");
    tcase_add_test(tc, test_load_small_train);
    tcase_add_test(tc, test_load_small_test);
    tcase_add_test(tc, test_load_full_if_installed);
    tcase_add_test(tc, test_raw_gz_equivalence);
    tcase_add_test(tc, test_gzip_multi_member);
    tcase_add_test(tc, test_idx_generic);
    tcase_add_test(tc, test_bad_magic);
    tcase_add_test(tc, test_wrong_dims_count);
    tcase_add_test(tc, test_zero_dimension);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_trailing_bytes);
    tcase_add_test(tc, test_label_out_of_range);
    tcase_add_test(tc, test_count_mismatch);
    tcase_add_test(tc, test_corrupt_gzip);
    tcase_add_test(tc, test_missing_file);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    TCase *td = tcase_create("dataset");
    tcase_add_test(td, test_from_memory);
    tcase_add_test(td, test_subset);
    tcase_add_test(td, test_split);
    tcase_add_test(td, test_normalize);
    tcase_add_test(td, test_iter_covers_epoch);
    tcase_add_test(td, test_iter_in_order_and_drop_last);
    tcase_add_test(td, test_iter_values);
    tcase_add_test(td, test_iter_state_resume);
    tcase_add_test(td, test_augment_flip);
    tcase_add_test(td, test_augment_crop);
    tcase_set_timeout(td, 60);
    suite_add_tcase(s, td);
    return s;
}

int main(void)
{
    snprintf(small_dir, sizeof small_dir, "%s/%s", tu_data_dir(), SMALL);
    SRunner *sr = srunner_create(data_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
