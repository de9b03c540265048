/* tests/test_wenc.c: the weight encodings of the int8 model file
 * (docs/FORMAT-int8.md, "Weight encodings"; core/pack.c, io/export.c,
 * runtime/load.c).
 *
 * - Packing: round trips of codes and of signed weights at every width
 *   1..8 and 1, 7, 9, 31, 1001 elements (extremes included, guard bytes
 *   untouched); byte layouts worked out by hand (and with numpy's
 *   packbits(bitorder="little")); out-of-range weights refused.
 * - The hash bucket function against values computed independently (in
 *   python from the doc's definition).
 * - Writer -> loader round trips of the committed lenet5 model re-encoded
 *   (packed 1..8 bits, codebooks K = 2..200, hashed K = 16 / 256): the
 *   loaded dense weights equal the graph's, qat_rt_op reports encoding,
 *   bits, K, seed and stored bytes, and the runtime's logits equal those of
 *   the same weights stored dense int8.
 * - Writer errors name the op and the weight, and leave no file.
 * - Damaged files (short/long payloads, padding, index >= K, missing
 *   hash_seed / codebook, K out of range, bits out of range, ...) are
 *   rejected with the dataset or attribute named. */
#include <check.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/export_int8.h"
#include "qat/format_int8.h"
#include "qat/runtime.h"
#include "runtime/rt_internal.h"
#include "testutil.h"
#include "wenc_util.h"

/* ---- packing ---- */

static const size_t sizes[] = {1, 7, 9, 31, 1001};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])

/* loop index i: width 1 + i / NSIZES, size sizes[i % NSIZES] */
START_TEST(test_pack_roundtrip)
{
    int bits = 1 + _i / NSIZES;
    size_t n = sizes[_i % NSIZES], nb = qat_packed_bytes(n, bits);
    ck_assert_uint_eq(nb, (n * (size_t)bits + 7) / 8);
    qat_rng r;
    qat_rng_seed(&r, 100u + (unsigned)_i);
    uint8_t *codes = malloc(n), *back = malloc(n), *buf = malloc(nb + 2);
    int8_t *w = malloc(n), *wb = malloc(n);
    unsigned top = (1u << bits) - 1u;
    for (size_t i = 0; i < n; i++) codes[i] = (uint8_t)(qat_rng_u32(&r) & top);
    codes[0] = (uint8_t)top; /* extremes at both ends */
    codes[n - 1] = n > 1 ? 0 : (uint8_t)top;
    if (n > 2) codes[n / 2] = (uint8_t)top;
    /* guard bytes around the payload stay untouched */
    buf[0] = buf[nb + 1] = 0xA5;
    qat_pack_bits(buf + 1, codes, n, bits);
    ck_assert_uint_eq(buf[0], 0xA5);
    ck_assert_uint_eq(buf[nb + 1], 0xA5);
    ck_assert(qat_packed_padding_ok(buf + 1, n, bits));
    memset(back, 0xEE, n);
    qat_unpack_bits(back, buf + 1, n, bits);
    for (size_t i = 0; i < n; i++) ck_assert_msg(back[i] == codes[i], "bits %d n %zu: code %zu: %u != %u", bits, n, i, back[i], codes[i]);

    /* signed weights: the whole b-bit range, extremes included */
    int lo = bits == 1 ? -1 : -(1 << (bits - 1)), hi = bits == 1 ? 1 : (1 << (bits - 1)) - 1;
    for (size_t i = 0; i < n; i++) {
        int v = lo + (int)(qat_rng_u32(&r) % (unsigned)(hi - lo + 1));
        if (bits == 1 && v == 0) v = 1;
        w[i] = (int8_t)v;
    }
    w[0] = (int8_t)lo;
    w[n - 1] = (int8_t)hi;
    buf[0] = buf[nb + 1] = 0x5A;
    ck_assert_int_eq(qat_pack_weights(buf + 1, w, n, bits), -1);
    ck_assert_uint_eq(buf[0], 0x5A);
    ck_assert_uint_eq(buf[nb + 1], 0x5A);
    ck_assert(qat_packed_padding_ok(buf + 1, n, bits));
    qat_unpack_weights(wb, buf + 1, n, bits);
    for (size_t i = 0; i < n; i++) ck_assert_msg(wb[i] == w[i], "bits %d n %zu: weight %zu: %d != %d", bits, n, i, wb[i], w[i]);
    /* every padding bit set is seen */
    if ((n * (size_t)bits) % 8) {
        buf[nb] |= 0x80;
        ck_assert(!qat_packed_padding_ok(buf + 1, n, bits));
    }
    free(codes);
    free(back);
    free(buf);
    free(w);
    free(wb);
}
END_TEST

/* Byte layouts by hand (little-endian bit stream, code LSB first); the
 * same bytes numpy gives with packbits(bits, bitorder="little"). */
START_TEST(test_pack_layout)
{
    static const struct {
        int bits, n;
        int8_t w[9];
        uint8_t bytes[3];
        int nb;
    } cases[] = {
        {4, 4, {1, -1, 7, -8}, {0xF1, 0x87}, 2},                 /* two a byte, element 0 low nibble */
        {2, 5, {1, -1, 0, 1, -2}, {0x4D, 0x02}, 2},              /* 01 11 00 01 | 10 */
        {1, 9, {1, -1, -1, 1, 1, 1, -1, -1, 1}, {0x39, 0x01}, 2}, /* +1 = 1, -1 = 0 */
        {3, 4, {1, 2, 3, -1}, {0xD1, 0x0E}, 2},                  /* code 2 spans bytes 0 and 1 */
        {5, 3, {-1, 1, -16}, {0x3F, 0x40}, 2},
        {7, 2, {-1, -64}, {0x7F, 0x20}, 2},
        {8, 2, {-128, 127}, {0x80, 0x7F}, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t out[4] = {0};
        int8_t back[9];
        ck_assert_uint_eq(qat_packed_bytes((size_t)cases[c].n, cases[c].bits), (size_t)cases[c].nb);
        ck_assert_int_eq(qat_pack_weights(out, cases[c].w, (size_t)cases[c].n, cases[c].bits), -1);
        for (int b = 0; b < cases[c].nb; b++)
            ck_assert_msg(out[b] == cases[c].bytes[b], "%d bits: byte %d = 0x%02x, expected 0x%02x", cases[c].bits, b,
                          out[b], cases[c].bytes[b]);
        qat_unpack_weights(back, out, (size_t)cases[c].n, cases[c].bits);
        ck_assert(!memcmp(back, cases[c].w, (size_t)cases[c].n));
    }
    ck_assert_int_eq(qat_index_bits(2), 1);
    ck_assert_int_eq(qat_index_bits(3), 2);
    ck_assert_int_eq(qat_index_bits(16), 4);
    ck_assert_int_eq(qat_index_bits(17), 5);
    ck_assert_int_eq(qat_index_bits(256), 8);
    ck_assert_uint_eq(qat_packed_bytes((size_t)1 << 40, 3), ((size_t)3 << 40) / 8);
}
END_TEST

START_TEST(test_pack_reject)
{
    int8_t w[5] = {1, -2, 7, 8, 0};
    uint8_t out[4] = {0xAA, 0xAA, 0xAA, 0xAA};
    ck_assert_int_eq(qat_pack_weights(out, w, 5, 4), 3); /* 8 > 7 */
    ck_assert_uint_eq(out[0], 0xAA);                    /* untouched */
    int8_t m[3] = {-8, 7, -9};
    ck_assert_int_eq(qat_pack_weights(out, m, 3, 4), 2);
    int8_t b[3] = {1, -1, 0}; /* binary weights have no zero */
    ck_assert_int_eq(qat_pack_weights(out, b, 3, 1), 2);
    int8_t t[2] = {1, 2};
    ck_assert_int_eq(qat_pack_weights(out, t, 2, 2), 1);
}
END_TEST

/* ---- the hash ---- */

START_TEST(test_hash_known)
{
    /* from python, with the definition of docs/FORMAT-int8.md:
     * x = (index + seed * 0x9E3779B9) mod 2^32; murmur3 fmix32; x % K */
    ck_assert_uint_eq(qat_i8_hash_bucket(0, 0, 16), 0);
    ck_assert_uint_eq(qat_i8_hash_bucket(0, 1, 16), 7);
    ck_assert_uint_eq(qat_i8_hash_bucket(1, 0, 64), 14);
    ck_assert_uint_eq(qat_i8_hash_bucket(12345, 7, 256), 217);
    ck_assert_uint_eq(qat_i8_hash_bucket(4000000000u, 4294967295u, 3), 0);
    ck_assert_uint_eq(qat_i8_hash_bucket(7, 1000, 64), 57);
    ck_assert_uint_eq(qat_i8_hash_bucket(0xFFFFFFFFu, 123456, 97), 10);
    /* the full 32-bit hash (K = 2^32 - 1 keeps every value below it) */
    ck_assert_uint_eq(qat_i8_hash_bucket(0, 1, 0xFFFFFFFFu), 1364076727u);
    ck_assert_uint_eq(qat_i8_hash_bucket(1, 0, 0xFFFFFFFFu), 2462723854u);
    ck_assert_uint_eq(qat_i8_hash_bucket(0xFFFFFFFFu, 123456, 0xFFFFFFFFu), 3453193705u);
}
END_TEST

/* ---- writer and loader on the committed lenet5 model ---- */

static qat_rt_model *load_ok(const char *path)
{
    qat_rt_model *m = NULL;
    int rc = qat_rt_load_file(path, &m);
    ck_assert_msg(rc == QAT_OK, "load %s: %s", path, qat_rt_last_error());
    return m;
}

static void lenet_graph(qat_i8graph *g)
{
    qat_rt_model *m = load_ok(tu_data_path("lenet5-small.int8.h5"));
    ck_assert_int_eq(wu_graph_from_rt(m, g), 0);
    g->arch = "lenet5";
    qat_rt_free(m);
}

#define NIMG 64
static void run_logits(const char *path, int8_t *logits)
{
    qat_rt_model *m = load_ok(path);
    uint8_t px[NIMG * 784];
    qat_rng r;
    qat_rng_seed(&r, 7);
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(qat_rng_u32(&r) >> 24);
    ck_assert_int_eq(qat_rt_prepare(m, NIMG), QAT_OK);
    ck_assert_int_eq(qat_rt_run_u8(m, px, NIMG, logits), QAT_OK);
    qat_rt_free(m);
}

static const struct {
    wu_mode mode;
    int bits, K;
    unsigned seed;
    const char *enc;
} encs[] = {
    {WU_PACKED, 1, 0, 0, "packed"},      {WU_PACKED, 2, 0, 0, "packed"},      {WU_PACKED, 3, 0, 0, "packed"},
    {WU_PACKED, 4, 0, 0, "packed"},      {WU_PACKED, 5, 0, 0, "packed"},      {WU_PACKED, 6, 0, 0, "packed"},
    {WU_PACKED, 7, 0, 0, "packed"},      {WU_PACKED, 8, 0, 0, "int8"},        {WU_CODEBOOK, 0, 2, 0, "codebook"},
    {WU_CODEBOOK, 0, 200, 0, "codebook"}, {WU_HASHED, 0, 16, 99, "hashed"}, {WU_HASHED, 0, 256, 4000000000u, "hashed"},
    {WU_HASHED, 0, 2, 1, "hashed"},
};

/* encoding _i: written, loaded (dense weights == the graph's), facts in
 * qat_rt_op, logits == the same weights written dense int8 */
START_TEST(test_roundtrip)
{
    qat_i8graph g;
    lenet_graph(&g);
    int K0 = encs[_i].K;
    if (encs[_i].mode == WU_CODEBOOK) { /* the model's weights are 8-bit: a codebook of few values needs few */
        ck_assert_int_eq(wu_encode(&g, WU_PACKED, K0 <= 2 ? 1 : 4, 0, 0), 0);
    }
    ck_assert_int_eq(wu_encode(&g, encs[_i].mode, encs[_i].bits, K0, encs[_i].seed), 0);
    char enc_path[64];
    snprintf(enc_path, sizeof enc_path, "wenc_rt_%d.int8.h5", (int)_i);
    char *ep = strdup(tu_tmp_path(enc_path));
    int rc = qat_export_int8_graph(&g, ep, "test");
    ck_assert_msg(rc == QAT_OK, "%s", qat_last_error());
    qat_rt_model *m = load_ok(ep);
    ck_assert_int_eq(qat_rt_num_ops(m), g.n);
    for (int i = 0; i < g.n; i++) {
        qat_i8op *o = &g.ops[i];
        qat_rt_op_info info;
        ck_assert_int_eq(qat_rt_op(m, i, &info), QAT_OK);
        if (!o->weight) {
            ck_assert_ptr_null(info.weight_encoding);
            ck_assert_int_eq(info.weight_bits, 0);
            continue;
        }
        size_t n = (size_t)o->oc * o->ic * (strcmp(o->type, "conv2d") ? 1 : o->k * o->k);
        ck_assert_uint_eq(info.weight_count, n);
        ck_assert(!memcmp(m->ops[i].weight, o->weight, n));
        ck_assert_str_eq(info.weight_encoding, encs[_i].enc);
        size_t stored;
        if (encs[_i].mode == WU_PACKED) {
            ck_assert_int_eq(info.weight_bits, encs[_i].bits);
            ck_assert_int_eq(info.codebook_k, 0);
            stored = qat_packed_bytes(n, encs[_i].bits);
        } else {
            ck_assert_int_eq(info.codebook_k, o->codebook_k);
            ck_assert_int_eq(info.weight_bits, qat_index_bits(o->codebook_k));
            ck_assert(!memcmp(m->ops[i].weight, o->weight, n));
            if (encs[_i].mode == WU_HASHED) {
                ck_assert_int_eq(o->codebook_k, K0);
                ck_assert_uint_eq(info.hash_seed, encs[_i].seed);
                stored = (size_t)K0;
            } else {
                ck_assert_int_ge(o->codebook_k, K0);
                stored = qat_packed_bytes(n, qat_index_bits(o->codebook_k)) + (size_t)o->codebook_k;
            }
        }
        ck_assert_uint_eq(info.weight_stored_bytes, stored);
    }
    qat_rt_free(m);
    /* the same weights dense */
    for (int i = 0; i < g.n; i++)
        if (g.ops[i].weight) {
            g.ops[i].wenc = QAT_I8W_DENSE;
            g.ops[i].wbits = 8;
        }
    char *dp = strdup(tu_tmp_path("wenc_rt_dense.int8.h5"));
    rc = qat_export_int8_graph(&g, dp, "test");
    ck_assert_msg(rc == QAT_OK, "%s", qat_last_error());
    int8_t a[NIMG * 10], b[NIMG * 10];
    run_logits(ep, a);
    run_logits(dp, b);
    ck_assert(!memcmp(a, b, sizeof a));
    /* the payloads differ by exactly the stored weight bytes against one
     * byte a weight */
    qat_rt_model *me = load_ok(ep), *md = load_ok(dp);
    long long diff = 0;
    for (int i = 0; i < qat_rt_num_ops(me); i++) {
        qat_rt_op_info info;
        ck_assert_int_eq(qat_rt_op(me, i, &info), QAT_OK);
        diff += (long long)info.weight_stored_bytes - (long long)info.weight_count;
    }
    ck_assert_int_eq((long long)qat_rt_payload_bytes(me), (long long)qat_rt_payload_bytes(md) + diff);
    if (encs[_i].mode == WU_PACKED && encs[_i].bits == 8) ck_assert_int_eq(diff, 0);
    else if (!(encs[_i].mode == WU_CODEBOOK && K0 > 128)) ck_assert_int_lt(diff, 0);
    qat_rt_free(me);
    qat_rt_free(md);
    qat_i8graph_free(&g);
    free(ep);
    free(dp);
}
END_TEST

/* A dense graph below 8 bits is written packed; the committed version-1
 * model reads as int8 at 8 bits. */
START_TEST(test_dense_autopack_and_v1)
{
    qat_i8graph g;
    lenet_graph(&g);
    ck_assert_int_eq(wu_encode(&g, WU_PACKED, 4, 0, 0), 0);
    for (int i = 0; i < g.n; i++) g.ops[i].wenc = QAT_I8W_DENSE; /* wbits stays 4 */
    const char *p = tu_tmp_path("wenc_auto.int8.h5");
    ck_assert_int_eq(qat_export_int8_graph(&g, p, NULL), QAT_OK);
    qat_rt_model *m = load_ok(p);
    qat_rt_op_info info;
    ck_assert_int_eq(qat_rt_op(m, 1, &info), QAT_OK);
    ck_assert_str_eq(info.weight_encoding, "packed");
    ck_assert_int_eq(info.weight_bits, 4);
    ck_assert_uint_eq(info.weight_stored_bytes, 75); /* 150 weights at 4 bits */
    qat_rt_free(m);
    qat_i8graph_free(&g);

    m = load_ok(tu_data_path("lenet5-small.int8.h5"));
    size_t total = 0;
    for (int i = 0; i < qat_rt_num_ops(m); i++) {
        ck_assert_int_eq(qat_rt_op(m, i, &info), QAT_OK);
        if (!info.weight_encoding) continue;
        ck_assert_str_eq(info.weight_encoding, "int8");
        ck_assert_int_eq(info.weight_bits, 8);
        ck_assert_uint_eq(info.weight_stored_bytes, info.weight_count);
        total += info.weight_count;
    }
    ck_assert_uint_eq(total, 150 + 2400 + 48000 + 10080 + 840);
    qat_rt_free(m);
}
END_TEST

/* ---- writer errors ---- */

static void expect_write_error(qat_i8graph *g, const char *name, const char *what)
{
    const char *p = tu_tmp_path(name);
    unlink(p);
    int rc = qat_export_int8_graph(g, p, NULL);
    ck_assert_int_eq(rc, QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), what), "'%s' does not say '%s'", qat_last_error(), what);
    ck_assert_msg(strstr(qat_last_error(), "op 3 (features.4)"), "'%s' does not name the op", qat_last_error());
    ck_assert_int_ne(access(p, F_OK), 0);
}

START_TEST(test_writer_errors)
{
    qat_i8graph g;
    lenet_graph(&g);
    qat_i8op *o = &g.ops[3]; /* features.4 */
    ck_assert_int_eq(wu_encode(&g, WU_PACKED, 4, 0, 0), 0); /* every op valid at 4 bits */
    int8_t keep = o->weight[17];
    o->weight[17] = 8;
    expect_write_error(&g, "we1.h5", "weight 17 = 8 does not fit 4 bits [-8, 7]");
    o->wbits = 1;
    expect_write_error(&g, "we2.h5", "does not fit 1 bits {-1, +1}");
    o->wbits = 0;
    expect_write_error(&g, "we3.h5", "weight bits 0 outside 1..8");
    o->wbits = 9;
    expect_write_error(&g, "we4.h5", "weight bits 9 outside 1..8");
    o->wbits = 4;
    o->weight[17] = keep;
    o->wenc = 7;
    expect_write_error(&g, "we5.h5", "unknown weight encoding 7");
    /* codebook without one of the weights */
    ck_assert_int_eq(wu_encode(&g, WU_PACKED, 1, 0, 0), 0);
    ck_assert_int_eq(wu_encode(&g, WU_CODEBOOK, 0, 3, 0), 0); /* {-1, +1} and one unused value */
    ck_assert_int_eq(o->codebook_k, 3);
    o->weight[5] = 100;
    expect_write_error(&g, "we6.h5", "weight 5 = 100 is not in the codebook (K = 3)");
    o->weight[5] = o->codebook[0];
    o->codebook_k = 1;
    expect_write_error(&g, "we7.h5", "codebook of 1 values, expected 2..256");
    o->codebook_k = 257;
    expect_write_error(&g, "we8.h5", "codebook of 257 values");
    /* hashed: a weight that is not its bucket's value */
    ck_assert_int_eq(wu_encode(&g, WU_HASHED, 0, 16, 5), 0);
    unsigned b = qat_i8_hash_bucket(5, 40, 16);
    o->weight[40] = (int8_t)(o->codebook[b] + 1);
    expect_write_error(&g, "we9.h5", "weight 40 = ");
    ck_assert(strstr(qat_last_error(), "differs from its hash bucket"));
    o->weight[40] = o->codebook[b];
    free(o->codebook);
    o->codebook = NULL;
    expect_write_error(&g, "we10.h5", "(none)");
    qat_i8graph_free(&g);
}
END_TEST

/* ---- damaged files ---- */

static void h5_del_attr(hid_t g, const char *n)
{
    ck_assert(H5Adelete(g, n) >= 0);
}

static void h5_set_i32(hid_t g, const char *n, int v)
{
    if (H5Aexists(g, n) > 0) h5_del_attr(g, n);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, n, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

static void h5_set_i64(hid_t g, const char *n, long long v)
{
    if (H5Aexists(g, n) > 0) h5_del_attr(g, n);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, n, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_LLONG, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

static void h5_set_str(hid_t g, const char *n, const char *v)
{
    if (H5Aexists(g, n) > 0) h5_del_attr(g, n);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, n, t, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, t, v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void h5_set_ints(hid_t g, const char *n, const int *v, int k)
{
    if (H5Aexists(g, n) > 0) h5_del_attr(g, n);
    hsize_t d = (hsize_t)k;
    hid_t s = H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(g, n, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

/* The dataset's bytes (any 1-byte type) and count. */
static uint8_t *h5_get_bytes(hid_t g, const char *n, size_t *count)
{
    hid_t d = H5Dopen2(g, n, H5P_DEFAULT);
    ck_assert(d >= 0);
    hid_t s = H5Dget_space(d);
    *count = (size_t)H5Sget_simple_extent_npoints(s);
    uint8_t *v = malloc(*count + 1);
    ck_assert(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    return v;
}

/* Replaces dataset n by a 1-D array of k bytes of type t. */
static void h5_put_bytes(hid_t g, const char *n, hid_t t, const uint8_t *v, size_t k)
{
    if (H5Lexists(g, n, H5P_DEFAULT) > 0) ck_assert(H5Ldelete(g, n, H5P_DEFAULT) >= 0);
    hsize_t d = k;
    hid_t s = H5Screate_simple(1, &d, NULL);
    hid_t ds = H5Dcreate2(g, n, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(ds >= 0 && H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(ds);
    H5Sclose(s);
}

static void resize_weight(hid_t g, long delta)
{
    size_t n;
    uint8_t *v = h5_get_bytes(g, "weight", &n);
    uint8_t *w = calloc(n + 2, 1);
    memcpy(w, v, n);
    h5_put_bytes(g, "weight", H5T_STD_U8LE, w, (size_t)((long)n + delta));
    free(v);
    free(w);
}

enum { D_SHORT, D_LONG, D_PADDING, D_INDEX, D_NOSEED, D_NOCODEBOOK, D_K1, D_K257, D_BITS0, D_BITS9, D_CBBITS,
       D_ENC, D_HASHW, D_SEEDNEG, D_SHAPE_RANK, D_SHAPE_IC, D_INT8RANGE, D_WEIGHT_I8, D_NOBITS, D_NOSHAPE,
       D_COUNT };

static const struct {
    int base; /* index into encs */
    const char *op;
    const char *expect;
} damage[D_COUNT] = {
    [D_SHORT] = {2, "003", "dataset weight has 899 bytes, expected 900 = ceil(2400 x 3 bits / 8)"},
    [D_LONG] = {4, "003", "dataset weight has 1501 bytes, expected 1500"},
    [D_PADDING] = {2, "001", "dataset weight: the padding bits after the last code are not 0"},
    [D_INDEX] = {9, "003", "dataset weight: index 200 of weight 10 is outside the codebook"},
    [D_NOSEED] = {10, "003", "missing attribute hash_seed"},
    [D_NOCODEBOOK] = {9, "003", "missing dataset codebook"},
    [D_K1] = {10, "003", "dataset codebook has shape [1], expected [K] with K in 2..256"},
    [D_K257] = {10, "003", "dataset codebook has shape [257]"},
    [D_BITS0] = {3, "003", "attribute weight_bits = 0, expected in [1, 8]"},
    [D_BITS9] = {3, "003", "attribute weight_bits = 9, expected in [1, 8]"},
    [D_CBBITS] = {9, "003", "attribute weight_bits = 7, expected ceil(log2 K) = 8"},
    [D_ENC] = {3, "003", "attribute weight_encoding = 'zstd'"},
    [D_HASHW] = {10, "003", "dataset weight present"},
    [D_SEEDNEG] = {10, "003", "attribute hash_seed = -1, expected in [0, 2^32)"},
    [D_SHAPE_RANK] = {3, "003", "attribute weight_shape has 2 values, expected 4"},
    [D_SHAPE_IC] = {3, "003", "attribute weight_shape[1] = 7, expected the input's 6 channels"},
    [D_INT8RANGE] = {7, "003", "outside the 4-bit range [-8, 7] (attribute weight_bits)"},
    [D_WEIGHT_I8] = {3, "003", "dataset weight is int8, expected uint8"},
    [D_NOBITS] = {3, "003", "missing attribute weight_bits"},
    [D_NOSHAPE] = {9, "003", "missing attribute weight_shape"},
};

START_TEST(test_damaged)
{
    qat_i8graph g;
    lenet_graph(&g);
    int e = damage[_i].base;
    if (encs[e].mode == WU_CODEBOOK) ck_assert_int_eq(wu_encode(&g, WU_PACKED, 4, 0, 0), 0);
    ck_assert_int_eq(wu_encode(&g, encs[e].mode, encs[e].bits, encs[e].K, encs[e].seed), 0);
    char name[32];
    snprintf(name, sizeof name, "wenc_bad_%d.int8.h5", (int)_i);
    char *p = strdup(tu_tmp_path(name));
    ck_assert_int_eq(qat_export_int8_graph(&g, p, NULL), QAT_OK);
    qat_i8graph_free(&g);
    qat_rt_free(load_ok(p)); /* fine before the damage */

    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    char gp[32];
    snprintf(gp, sizeof gp, "/ops/%s", damage[_i].op);
    hid_t gr = H5Gopen2(f, gp, H5P_DEFAULT);
    ck_assert(gr >= 0);
    size_t n;
    uint8_t *v;
    switch (_i) {
    case D_SHORT: resize_weight(gr, -1); break;
    case D_LONG: resize_weight(gr, 1); break;
    case D_PADDING: /* features.0: 150 weights x 3 bits = 450 bits, 6 padding bits */
        v = h5_get_bytes(gr, "weight", &n);
        ck_assert_uint_eq(n, 57);
        v[n - 1] |= 0x80;
        h5_put_bytes(gr, "weight", H5T_STD_U8LE, v, n);
        free(v);
        break;
    case D_INDEX: { /* K = 200 (8-bit indices): index 255 */
        v = h5_get_bytes(gr, "weight", &n);
        v[10] = 200; /* == K: the first index outside */
        h5_put_bytes(gr, "weight", H5T_STD_U8LE, v, n);
        free(v);
        break;
    }
    case D_NOSEED: h5_del_attr(gr, "hash_seed"); break;
    case D_NOCODEBOOK: ck_assert(H5Ldelete(gr, "codebook", H5P_DEFAULT) >= 0); break;
    case D_K1:
    case D_K257: {
        uint8_t cb[257] = {0};
        h5_put_bytes(gr, "codebook", H5T_STD_I8LE, cb, _i == D_K1 ? 1 : 257);
        break;
    }
    case D_BITS0: h5_set_i32(gr, "weight_bits", 0); break;
    case D_BITS9: h5_set_i32(gr, "weight_bits", 9); break;
    case D_CBBITS: h5_set_i32(gr, "weight_bits", 7); break;
    case D_ENC: h5_set_str(gr, "weight_encoding", "zstd"); break;
    case D_HASHW: {
        uint8_t z[3] = {0};
        h5_put_bytes(gr, "weight", H5T_STD_U8LE, z, 3);
        break;
    }
    case D_SEEDNEG: h5_set_i64(gr, "hash_seed", -1); break;
    case D_SHAPE_RANK: {
        int s[2] = {16, 6};
        h5_set_ints(gr, "weight_shape", s, 2);
        break;
    }
    case D_SHAPE_IC: {
        int s[4] = {16, 7, 5, 5};
        h5_set_ints(gr, "weight_shape", s, 4);
        break;
    }
    case D_INT8RANGE: h5_set_i32(gr, "weight_bits", 4); break; /* int8 weights of the 8-bit model */
    case D_WEIGHT_I8:
        v = h5_get_bytes(gr, "weight", &n);
        h5_put_bytes(gr, "weight", H5T_STD_I8LE, v, n);
        free(v);
        break;
    case D_NOBITS: h5_del_attr(gr, "weight_bits"); break;
    case D_NOSHAPE: h5_del_attr(gr, "weight_shape"); break;
    default: ck_abort();
    }
    H5Gclose(gr);
    H5Fclose(f);
    qat_rt_model *m = NULL;
    int rc = qat_rt_load_file(p, &m);
    ck_assert_ptr_null(m);
    ck_assert_msg(rc == QAT_ERR_FORMAT || rc == QAT_ERR_UNSUPPORTED, "damage %d: rc %d", (int)_i, rc);
    const char *msg = qat_rt_last_error();
    ck_assert_msg(strstr(msg, damage[_i].expect), "damage %d: '%s' does not say '%s'", (int)_i, msg, damage[_i].expect);
    char where[32];
    snprintf(where, sizeof where, "ops/%s", damage[_i].op);
    ck_assert_msg(strstr(msg, where), "damage %d: '%s' does not name %s", (int)_i, msg, where);
    free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wenc");
    TCase *t = tcase_create("pack");
    tcase_add_loop_test(t, test_pack_roundtrip, 0, 8 * NSIZES);
    tcase_add_test(t, test_pack_layout);
    tcase_add_test(t, test_pack_reject);
    tcase_add_test(t, test_hash_known);
    suite_add_tcase(s, t);
    t = tcase_create("file");
    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, test_roundtrip, 0, (int)(sizeof encs / sizeof encs[0]));
    tcase_add_test(t, test_dense_autopack_and_v1);
    tcase_add_test(t, test_writer_errors);
    tcase_add_loop_test(t, test_damaged, 0, D_COUNT);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
