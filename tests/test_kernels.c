/* The AVX2 and AVX-512 engines of autograd/kernels.h against the portable
 * one and against plain double-precision references:
 *  - the GEMM kernels (every store mode, column mapping and tile shape);
 *  - conv2d forward and backward on the reference models' layer shapes and
 *    on odd ones (stride 2/3, padding wider than the kernel, 1x1, images
 *    smaller than a tile, batch 1 with 2 threads), and linear layers;
 *  - the elementwise kernels (ReLU, 2x2 max pool, BN) and the copies of
 *    the strided convolutions, which must give the same bits on both
 *    engines, -0.0, ties and NaN included.
 * Every engine the CPU runs is tested (AVX-512F: all three; AVX2 + FMA:
 * two); on a CPU with neither the engine comparisons are skipped. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kernels.h"
#include "qat/core.h"
#include "qat/tensor.h"
#include "runtime/kernels_common.h"

#define MAXLV (QAT_SIMD_AVX512 + 1)

/* engines this CPU runs: levels 0 .. n_levels() - 1 */
static int n_levels(void)
{
    int n = qat_simd_set_level(QAT_SIMD_AVX512) + 1;
    qat_simd_set_level(-1);
    return n;
}

static int have_simd(void)
{
    int ok = n_levels() > 1;
    if (!ok) fprintf(stderr, "test_kernels: neither AVX2+FMA nor AVX-512F here, engine comparisons skipped\n");
    return ok;
}

static void fill(float *x, size_t n, qat_rng *r, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * qat_rng_uniform(r);
}

/* max |a - b| / max(1, max |ref|) */
static double rel_err(const float *a, const double *ref, size_t n)
{
    double m = 1, e = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - ref[i]));
    return e / m;
}

/* ---- GEMM kernels ---- */

/* C(i, g0 + j) for the three column mappings of a qat_cmat */
typedef struct {
    const char *name;
    ptrdiff_t group, valid, gstride, ldc;
} cmap_case;

static ptrdiff_t cmap_offset(const cmap_case *m, ptrdiff_t g)
{
    ptrdiff_t r = g % m->group;
    return r < m->valid ? (g / m->group) * m->gstride + r : -1;
}

START_TEST(test_gemm_bcast)
{
    if (!have_simd()) return;
    qat_rng r;
    qat_rng_seed(&r, 11);
    const int shapes[][3] = {{1, 1, 1}, {6, 70, 25}, {16, 100, 150}, {13, 37, 33}, {32, 64, 9}, {25, 200, 7}};
    const cmap_case maps[] = {
        {"plain", PTRDIFF_MAX, PTRDIFF_MAX, 0, 0},
        {"batch NCHW (49 px)", 49, 49, 49 * 40, 49},
        {"grid 9 wide, 7 valid", 9, 7, 7, 0},
        {"grid 4 wide, 3 valid (too many pieces)", 4, 3, 3, 0},
    };
    for (int lv = 1; lv < n_levels(); lv++)
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t mi = 0; mi < sizeof maps / sizeof maps[0]; mi++)
            for (int mode = 0; mode < 3; mode++) {
                int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                const cmap_case *cm = &maps[mi];
                ptrdiff_t g0 = mi ? 5 : 0;
                size_t csz = 200000;
                float *a = malloc((size_t)M * K * 4), *ap = malloc((size_t)M * K * 4);
                float *b = malloc((size_t)K * N * 4), *bias = malloc((size_t)M * 4);
                float *c = malloc(csz * 4), *c0 = malloc(csz * 4);
                fill(a, (size_t)M * K, &r, -1, 1);
                fill(b, (size_t)K * N, &r, -1, 1);
                fill(bias, (size_t)M, &r, -1, 1);
                fill(c0, csz, &r, -1, 1);
                memcpy(c, c0, csz * 4);
                qat_simd_set_level(lv); /* the panel height is the engine's */
                qat_pack_a(ap, a, K, 1, M, K);
                static const ptrdiff_t zero[1] = {0};
                qat_brows br = {K, 1, N, zero, NULL, 0};
                /* rows must not overlap: for the maps with ldc 0, the row
                 * stride is one past the largest column offset */
                ptrdiff_t ldc = cm->ldc;
                if (!ldc)
                    for (int j = 0; j < N; j++) ldc = cmap_offset(cm, g0 + j) + 1 > ldc ? cmap_offset(cm, g0 + j) + 1 : ldc;
                qat_cmat cmat = {c, ldc, cm->group, cm->valid, cm->gstride};
                qat_gemm_bcast(M, N, ap, b, &br, mode, bias, &cmat, g0);
                qat_simd_set_level(-1);
                /* every element: the expected value where a column exists,
                 * untouched elsewhere */
                char *hit = calloc(csz, 1);
                double worst = 0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        ptrdiff_t o = cmap_offset(cm, g0 + j);
                        if (o < 0) continue;
                        size_t idx = (size_t)(i * ldc + o);
                        ck_assert_uint_lt(idx, csz);
                        double s = mode == QAT_C_ADD ? c0[idx] : mode == QAT_C_BIAS ? bias[i] : 0;
                        for (int k = 0; k < K; k++) s += (double)a[i * K + k] * b[(size_t)k * N + j];
                        worst = fmax(worst, fabs(c[idx] - s) / fmax(1, fabs(s)));
                        hit[idx] = 1;
                    }
                for (size_t i = 0; i < csz; i++)
                    if (!hit[i]) ck_assert_msg(c[i] == c0[i], "engine %d %s M%d N%d K%d mode %d: stray write at %zu",
                                               lv, cm->name, M, N, K, mode, i);
                ck_assert_msg(worst < 1e-5, "engine %d %s M%d N%d K%d mode %d: error %g", lv, cm->name, M, N, K, mode,
                              worst);
                free(hit);
                free(a), free(ap), free(b), free(bias), free(c), free(c0);
            }
}
END_TEST

START_TEST(test_gemm_dot)
{
    if (!have_simd()) return;
    qat_rng r;
    qat_rng_seed(&r, 12);
    /* M, P, ns, nc, kk: planes read through tap offsets, several samples */
    const int cases[][5] = {{1, 16, 1, 1, 1}, {6, 48, 3, 2, 9}, {16, 144, 2, 6, 25}, {7, 32, 1, 5, 3}, {13, 64, 4, 3, 4}};
    for (int lv = 1; lv < n_levels(); lv++)
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int M = cases[ci][0], P = cases[ci][1], ns = cases[ci][2], nc = cases[ci][3], kk = cases[ci][4];
        int K = nc * kk;
        ptrdiff_t koff[32], cstride = P + 40, sb = nc * cstride + 8, lda = P + 16, sa = M * lda;
        for (int q = 0; q < kk; q++) koff[q] = (q * 7) % 40;
        float *a = malloc((size_t)ns * sa * 4), *b = malloc((size_t)ns * sb * 4 + 4096);
        float *d = malloc((size_t)M * K * 4), *d0 = malloc((size_t)M * K * 4);
        fill(a, (size_t)ns * sa, &r, -1, 1);
        fill(b, (size_t)ns * sb + 1024, &r, -1, 1);
        fill(d0, (size_t)M * K, &r, -1, 1);
        memcpy(d, d0, (size_t)M * K * 4);
        qat_brows br = {nc, kk, cstride, koff, NULL, 0};
        qat_simd_set_level(lv);
        qat_gemm_dot(M, P, ns, a, lda, sa, b, &br, sb, NULL, d, K);
        qat_simd_set_level(-1);
        double worst = 0;
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++) {
                double s = d0[i * K + k];
                for (int sm = 0; sm < ns; sm++)
                    for (int p = 0; p < P; p++)
                        s += (double)a[sm * sa + i * lda + p] *
                             b[sm * sb + (k / kk) * cstride + koff[k % kk] + p];
                worst = fmax(worst, fabs(d[i * K + k] - s) / fmax(1, fabs(s)));
            }
        ck_assert_msg(worst < 1e-5, "engine %d dot case %zu: error %g", lv, ci, worst);
        free(a), free(b), free(d), free(d0);
    }
}
END_TEST

/* ---- conv2d on both engines against a double reference ---- */

typedef struct {
    int N, C, H, W, OC, K, stride, pad, bias;
} conv_case;

static const conv_case conv_cases[] = {
    {4, 1, 28, 28, 6, 5, 1, 2, 1},   /* lenet5 conv1 */
    {4, 6, 14, 14, 16, 5, 1, 0, 0},  /* lenet5 conv2 (valid) */
    {3, 1, 28, 28, 32, 3, 1, 1, 0},  /* convnet conv1 */
    {2, 32, 28, 28, 32, 3, 1, 1, 0}, /* convnet conv2 */
    {2, 64, 14, 14, 64, 3, 1, 1, 0}, /* convnet conv4 */
    {3, 16, 28, 28, 32, 3, 2, 1, 0}, /* resnet8 layer2.conv1 (stride 2) */
    {3, 16, 28, 28, 32, 1, 2, 0, 0}, /* resnet8 shortcut */
    {3, 64, 7, 7, 64, 3, 1, 1, 1},   /* resnet8 layer3.conv2 */
    {1, 3, 9, 11, 5, 3, 1, 1, 1},    /* batch 1 (columns split over threads) */
    {5, 3, 9, 9, 7, 3, 3, 1, 1},     /* stride 3 */
    {3, 2, 4, 3, 3, 3, 1, 2, 0},     /* pad wider than the kernel allows */
    {3, 4, 3, 3, 3, 1, 1, 0, 1},     /* 1x1, tiny image */
    {2, 3, 2, 2, 4, 3, 1, 1, 0},     /* image smaller than a store piece */
    {2, 3, 5, 6, 2, 1, 1, 1, 1},     /* 1x1 with padding: stride 1, pad >= kernel */
    {2, 4, 9, 8, 3, 2, 2, 0, 0},     /* 2x2 stride 2: one tap per phase */
    {2, 2, 11, 10, 3, 5, 2, 2, 1},   /* 5x5 stride 2 pad 2 */
    {1, 2, 13, 13, 3, 3, 5, 1, 0},   /* stride 5: the im2col path */
    {3, 3, 4, 5, 2, 3, 1, 0, 1},     /* valid 3x3 on a tiny image */
    {2, 5, 6, 40, 7, 2, 1, 0, 0},    /* valid 2x2, rows wider than a tile */
};

typedef struct {
    float *y, *dx, *dw, *db;
} conv_out;

static conv_out run_conv(const conv_case *c, const float *x, const float *w, const float *b,
                         const float *dy, int threads)
{
    qat_set_num_threads(threads);
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *xt = qat_new_leaf(ctx, 4, (int[]){c->N, c->C, c->H, c->W}, x);
    qat_tensor *wt = qat_tensor_create(4, (int[]){c->OC, c->C, c->K, c->K}, 1);
    qat_tensor *bt = c->bias ? qat_tensor_create(1, (int[]){c->OC}, 1) : NULL;
    memcpy(wt->data, w, wt->numel * 4);
    if (bt) memcpy(bt->data, b, (size_t)c->OC * 4);
    qat_tensor *y = qat_conv2d(ctx, xt, wt, bt, c->stride, c->pad);
    ck_assert_ptr_nonnull(y);
    /* loss = sum(y * dy): the gradient flowing into y is dy */
    qat_tensor *g = qat_from(ctx, y->ndim, y->shape, dy);
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, g))), QAT_OK);
    conv_out o;
    o.y = malloc(y->numel * 4);
    o.dx = malloc(xt->numel * 4);
    o.dw = malloc(wt->numel * 4);
    o.db = malloc((size_t)c->OC * 4);
    memcpy(o.y, y->data, y->numel * 4);
    memcpy(o.dx, xt->grad, xt->numel * 4);
    memcpy(o.dw, wt->grad, wt->numel * 4);
    if (bt) memcpy(o.db, bt->grad, (size_t)c->OC * 4);
    qat_tensor_free(wt);
    qat_tensor_free(bt);
    qat_ctx_free(ctx);
    return o;
}

static void free_out(conv_out *o)
{
    free(o->y), free(o->dx), free(o->dw), free(o->db);
}

START_TEST(test_conv_engines)
{
    const conv_case *c = &conv_cases[_i];
    int OH = (c->H + 2 * c->pad - c->K) / c->stride + 1, OW = (c->W + 2 * c->pad - c->K) / c->stride + 1;
    size_t nx = (size_t)c->N * c->C * c->H * c->W, nw = (size_t)c->OC * c->C * c->K * c->K;
    size_t ny = (size_t)c->N * c->OC * OH * OW;
    qat_rng r;
    qat_rng_seed(&r, 100 + (uint64_t)_i);
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc((size_t)c->OC * 4), *dy = malloc(ny * 4);
    fill(x, nx, &r, -1, 1);
    fill(w, nw, &r, -1, 1);
    fill(b, (size_t)c->OC, &r, -1, 1);
    fill(dy, ny, &r, -1, 1);
    /* double reference */
    double *ry = calloc(ny, 8), *rdx = calloc(nx, 8), *rdw = calloc(nw, 8), *rdb = calloc((size_t)c->OC, 8);
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    size_t yi = (((size_t)n * c->OC + o) * OH + oh) * OW + ow;
                    double s = c->bias ? b[o] : 0;
                    for (int ci = 0; ci < c->C; ci++)
                        for (int kh = 0; kh < c->K; kh++)
                            for (int kw = 0; kw < c->K; kw++) {
                                int ih = oh * c->stride - c->pad + kh, iw = ow * c->stride - c->pad + kw;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                size_t xi = (((size_t)n * c->C + ci) * c->H + ih) * c->W + iw;
                                size_t wi = (((size_t)o * c->C + ci) * c->K + kh) * c->K + kw;
                                s += (double)x[xi] * w[wi];
                                rdx[xi] += (double)dy[yi] * w[wi];
                                rdw[wi] += (double)dy[yi] * x[xi];
                            }
                    ry[yi] = s;
                    rdb[o] += dy[yi];
                }
    int levels = n_levels();
    for (int level = 0; level < levels; level++)
        for (int threads = 1; threads <= 2; threads++) {
            qat_simd_set_level(level);
            conv_out o = run_conv(c, x, w, b, dy, threads);
            qat_simd_set_level(-1);
            double e[4] = {rel_err(o.y, ry, ny), rel_err(o.dx, rdx, nx), rel_err(o.dw, rdw, nw),
                           c->bias ? rel_err(o.db, rdb, (size_t)c->OC) : 0};
            for (int k = 0; k < 4; k++)
                ck_assert_msg(e[k] < 2e-5, "case %d (N%d C%d %dx%d OC%d k%d s%d p%d) engine %d threads %d: "
                              "%s error %g", _i, c->N, c->C, c->H, c->W, c->OC, c->K, c->stride, c->pad, level,
                              threads, (const char *[]){"y", "dx", "dw", "db"}[k], e[k]);
            free_out(&o);
        }
    free(x), free(w), free(b), free(dy), free(ry), free(rdx), free(rdw), free(rdb);
}
END_TEST

/* ---- linear on both engines against a double reference ---- */

START_TEST(test_linear_engines)
{
    /* N, K, M: mlp's layers, lenet5's K = 400 -> 120 -> 84, odd sizes */
    const int cases[][3] = {{128, 784, 256}, {128, 256, 128}, {37, 400, 120}, {5, 120, 84}, {3, 7, 10}, {1, 33, 2}};
    int levels = n_levels();
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int N = cases[ci][0], K = cases[ci][1], M = cases[ci][2];
        qat_rng r;
        qat_rng_seed(&r, 200 + ci);
        float *x = malloc((size_t)N * K * 4), *w = malloc((size_t)M * K * 4), *b = malloc((size_t)M * 4);
        float *dy = malloc((size_t)N * M * 4);
        fill(x, (size_t)N * K, &r, -1, 1);
        fill(w, (size_t)M * K, &r, -1, 1);
        fill(b, (size_t)M, &r, -1, 1);
        fill(dy, (size_t)N * M, &r, -1, 1);
        double *ry = calloc((size_t)N * M, 8), *rdx = calloc((size_t)N * K, 8), *rdw = calloc((size_t)M * K, 8);
        for (int n = 0; n < N; n++)
            for (int m = 0; m < M; m++) {
                double acc = b[m];
                for (int k = 0; k < K; k++) {
                    acc += (double)x[n * K + k] * w[m * K + k];
                    rdx[n * K + k] += (double)dy[n * M + m] * w[m * K + k];
                    rdw[m * K + k] += (double)dy[n * M + m] * x[n * K + k];
                }
                ry[n * M + m] = acc;
            }
        for (int level = 0; level < levels; level++)
            for (int threads = 1; threads <= 2; threads++) {
                qat_simd_set_level(level);
                qat_set_num_threads(threads);
                qat_ctx *ctx = qat_ctx_create(0);
                qat_tensor *xt = qat_new_leaf(ctx, 2, (int[]){N, K}, x);
                qat_tensor *wt = qat_tensor_create(2, (int[]){M, K}, 1), *bt = qat_tensor_create(1, (int[]){M}, 1);
                memcpy(wt->data, w, (size_t)M * K * 4);
                memcpy(bt->data, b, (size_t)M * 4);
                qat_tensor *y = qat_linear(ctx, xt, wt, bt);
                ck_assert_ptr_nonnull(y);
                qat_tensor *g = qat_from(ctx, 2, (int[]){N, M}, dy);
                ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, g))), QAT_OK);
                double e[3] = {rel_err(y->data, ry, (size_t)N * M), rel_err(xt->grad, rdx, (size_t)N * K),
                               rel_err(wt->grad, rdw, (size_t)M * K)};
                for (int k = 0; k < 3; k++)
                    ck_assert_msg(e[k] < 2e-5, "linear N%d K%d M%d engine %d threads %d: %s error %g", N, K, M, level,
                                  threads, (const char *[]){"y", "dx", "dW"}[k], e[k]);
                qat_tensor_free(wt);
                qat_tensor_free(bt);
                qat_ctx_free(ctx);
                qat_simd_set_level(-1);
            }
        free(x), free(w), free(b), free(dy), free(ry), free(rdx), free(rdw);
    }
}
END_TEST

/* ---- elementwise kernels: the same bits on both engines ---- */

/* random values with exact zeros of both signs, ties and NaN mixed in */
static void fill_special(float *x, size_t n, qat_rng *r)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t k = qat_rng_below(r, 20);
        x[i] = k == 0 ? 0.0f : k == 1 ? -0.0f : k == 2 ? NAN : k == 3 ? 0.5f : qat_rng_uniform(r) * 4 - 2;
    }
}

static void assert_same_bits(const void *a, const void *b, size_t bytes, const char *what)
{
    ck_assert_msg(memcmp(a, b, bytes) == 0, "%s differs between engines", what);
}

START_TEST(test_eltwise_same_bits)
{
    if (!have_simd()) return;
    const int nl = n_levels();
    qat_rng r;
    qat_rng_seed(&r, 13);
    /* vector tails of 8 and 16 floats, BN blocks of 32 full, partial and one over */
    const size_t sizes[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 1000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *x = malloc(n * 4), *y = malloc(n * 4), *dy = malloc(n * 4), *o[MAXLV], *d[MAXLV], *f[MAXLV];
        fill_special(x, n, &r);
        fill_special(dy, n, &r);
        fill_special(y, n, &r); /* an existing gradient, -0.0 included */
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            o[lv] = malloc(n * 4);
            d[lv] = malloc(n * 4);
            f[lv] = malloc(n * 4);
            memcpy(d[lv], y, n * 4);
            qat_k_relu_fwd(o[lv], x, n);
            qat_k_relu_bwd(f[lv], x, dy, n, 1);
            qat_k_relu_bwd(d[lv], x, dy, n, 0);
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++) {
            assert_same_bits(o[0], o[lv], n * 4, "relu forward");
            assert_same_bits(f[0], f[lv], n * 4, "relu backward (fresh)");
            assert_same_bits(d[0], d[lv], n * 4, "relu backward (adding)");
        }
        for (size_t i = 0; i < n; i++) { /* where y <= 0 the existing gradient is kept bit for bit */
            ck_assert(x[i] > 0 || memcmp(&d[0][i], &y[i], 4) == 0);
            ck_assert(x[i] > 0 || (f[0][i] == 0 && !signbit(f[0][i])));
        }
        for (size_t i = 0; i < n; i++) /* and the values are right */
            ck_assert(x[i] > 0 ? o[0][i] == x[i] : (o[0][i] == 0 && !signbit(o[0][i])));
        /* BN kernels */
        double acc[MAXLV][4][QAT_BN_LANES];
        float ap[MAXLV][4][1000];
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            memset(acc[lv], 0, sizeof acc[lv]);
            float xs[1000], dys[1000];
            for (size_t i = 0; i < n; i++) { /* finite data for the statistics */
                xs[i] = isnan(x[i]) ? 1.25f : x[i];
                dys[i] = isnan(dy[i]) ? -0.75f : dy[i];
            }
            qat_k_acc_sum(acc[lv][0], xs, n);
            qat_k_acc_sum(acc[lv][0], dys, n); /* sums go on across calls */
            qat_k_acc_sqdev(acc[lv][1], xs, n, 0.1);
            qat_k_acc_dy(acc[lv][2], acc[lv][3], dys, xs, n, 0.2f, 1.7f);
            qat_k_bn_apply(ap[lv][0], x, n, 0.2f, 1.7f, 0.9f, -0.3f);
            qat_k_bn_bwd(ap[lv][1], dy, x, n, 0.2f, 1.7f, 0.8f, 0.01f, -0.02f, 1);
            memcpy(ap[lv][2], ap[lv][1], n * 4);
            qat_k_bn_bwd(ap[lv][2], dy, x, n, 0.2f, 1.7f, 0.8f, 0.01f, -0.02f, 0);
            /* mdy = mdyx = 0: -0.0 where dy = -0.0 and h > 0, stored fresh as +0.0 */
            qat_k_bn_bwd(ap[lv][3], dy, x, n, 0.2f, 1.7f, 0.8f, 0.0f, 0.0f, 1);
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++) {
            assert_same_bits(acc[0], acc[lv], sizeof acc[0], "BN sums");
            for (int k = 0; k < 4; k++) assert_same_bits(ap[0][k], ap[lv][k], n * 4, "BN apply/backward");
        }
        for (int lv = 0; lv < nl; lv++) free(o[lv]), free(d[lv]), free(f[lv]);
        free(x), free(y), free(dy);
    }
    /* max pool 2x2: odd and even sizes, rows wider than a vector */
    const int dims[][2] = {{2, 2}, {3, 5}, {28, 28}, {14, 14}, {7, 7}, {10, 40}, {5, 33}};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int H = dims[di][0], W = dims[di][1], OH = H / 2, OW = W / 2;
        size_t n = (size_t)H * W, m = (size_t)OH * OW;
        float *x = malloc(n * 4), *dy = malloc(m * 4), *y[MAXLV], *dx[MAXLV];
        unsigned char *win[MAXLV];
        fill_special(x, n, &r);
        fill_special(dy, m, &r);
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            y[lv] = malloc(m * 4);
            win[lv] = malloc(m);
            dx[lv] = malloc(n * 4);
            qat_k_maxpool2_fwd(y[lv], win[lv], x, H, W, OH, OW);
            qat_k_maxpool2_bwd_fresh(dx[lv], dy, win[lv], H, W, OH, OW);
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++) {
            assert_same_bits(y[0], y[lv], m * 4, "maxpool forward");
            assert_same_bits(win[0], win[lv], m, "maxpool window");
            assert_same_bits(dx[0], dx[lv], n * 4, "maxpool backward");
        }
        for (int lv = 0; lv < nl; lv++) free(y[lv]), free(win[lv]), free(dx[lv]);
        free(x), free(dy);
    }
}
END_TEST

/* the copies of the strided convolutions: phase planes and their merge */
START_TEST(test_phase_copies_same_bits)
{
    if (!have_simd()) return;
    const int nl = n_levels();
    qat_rng r;
    qat_rng_seed(&r, 14);
    /* H, W, s, pt, pl, na, nb */
    const int cases[][7] = {{28, 28, 1, 1, 1, 1, 1}, {28, 28, 2, 1, 1, 2, 2}, {14, 14, 2, 0, 0, 1, 1},
                            {7, 9, 2, 2, 1, 2, 2}, {5, 40, 1, 4, 4, 1, 1}, {9, 9, 3, 1, 1, 3, 3},
                            {3, 70, 2, 1, 0, 2, 1}, {5, 20, 1, 9, 9, 1, 1}, {6, 30, 2, 9, 9, 2, 2},
                            {4, 16, 1, 1, 1, 1, 1}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int *c = cases[ci];
        int H = c[0], W = c[1], s = c[2], pt = c[3], pl = c[4], na = c[5], nb = c[6];
        int Hq = (H + 2 * pt + s - 1) / s, Wq = (W + 2 * pl + s - 1) / s;
        ptrdiff_t ps = (ptrdiff_t)Hq * Wq + 37;
        float *x = malloc((size_t)H * W * 4), *p[MAXLV];
        fill_special(x, (size_t)H * W, &r);
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            p[lv] = malloc((size_t)na * nb * ps * 4);
            qat_k_build_phases(p[lv], ps, x, H, W, s, pt, pl, Hq, Wq, na, nb);
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++) assert_same_bits(p[0], p[lv], (size_t)na * nb * ps * 4, "phase planes");
        /* spot check against the definition */
        for (int a = 0; a < na; a++)
            for (int b = 0; b < nb; b++)
                for (int i = 0; i < Hq; i++)
                    for (int j = 0; j < Wq; j++) {
                        int rr = s * i + a - pt, cc = s * j + b - pl;
                        float want = rr >= 0 && rr < H && cc >= 0 && cc < W ? x[rr * W + cc] : 0.0f;
                        float got = p[0][(a * nb + b) * ps + i * Wq + j];
                        ck_assert(memcmp(&want, &got, 4) == 0 || (isnan(want) && isnan(got)));
                    }
        free(x);
        for (int lv = 0; lv < nl; lv++) free(p[lv]);
    }
    const int lens[] = {1, 2, 15, 28, 31, 32, 33, 100};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        float *e = malloc(64 * 4), *o = malloc(64 * 4), *base = malloc((size_t)n * 4), *d[MAXLV][4];
        fill_special(e, 64, &r);
        fill_special(o, 64, &r);
        fill_special(base, (size_t)n, &r);
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            for (int k = 0; k < 4; k++) { /* fresh/adding x with/without the odd source */
                d[lv][k] = malloc((size_t)n * 4);
                memcpy(d[lv][k], base, (size_t)n * 4);
                qat_k_interleave2(d[lv][k], 0, e, k & 2 ? NULL : o, 0, 1, n, k & 1);
            }
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++)
            for (int k = 0; k < 4; k++) assert_same_bits(d[0][k], d[lv][k], (size_t)n * 4, "interleave");
        for (int m = 0; m < n; m++) { /* adding from NULL keeps the bits */
            float want = m & 1 ? base[m] : base[m] + e[m / 2];
            ck_assert(memcmp(&d[0][2][m], &want, 4) == 0 || (isnan(want) && isnan(d[0][2][m])));
        }
        for (int lv = 0; lv < nl; lv++)
            for (int k = 0; k < 4; k++) free(d[lv][k]);
        free(e), free(o), free(base);
    }
    /* several rows: every other row of a 40-wide plane from 20-wide rows */
    {
        float e[5 * 20], o[5 * 20], d[MAXLV][10 * 40];
        fill_special(e, 100, &r);
        fill_special(o, 100, &r);
        fill_special(d[0], 400, &r);
        for (int lv = 1; lv < nl; lv++) memcpy(d[lv], d[0], sizeof d[0]);
        for (int lv = 0; lv < nl; lv++) {
            qat_simd_set_level(lv);
            qat_k_interleave2(d[lv] + 40, 80, e, o, 20, 5, 39, 0);
        }
        qat_simd_set_level(-1);
        for (int lv = 1; lv < nl; lv++) assert_same_bits(d[0], d[lv], sizeof d[0], "interleave rows");
    }
}
END_TEST

/* ---- int8 depthwise conv (runtime/): the fast kernels of each ISA against
 * the portable reference kernel, bit for bit ---- */

static int32_t rnd_i(qat_rng *r, int32_t lo, int32_t hi)
{
    return lo + (int32_t)qat_rng_below(r, (uint32_t)(hi - lo + 1));
}

/* a random depthwise 3x3 conv2d op (C channels, H x W, stride s, pad P);
 * extreme: weights and inputs only -128 / 127, zero points at the ends */
static void dw_op(rt_op *op, int C, int H, int W, int s, int P, int extreme, int amc, qat_rng *r)
{
    memset(op, 0, sizeof *op);
    op->type = RT_OP_CONV2D;
    op->name = "dw";
    op->groups = op->in_c = op->ic = op->oc = C;
    op->in_h = H;
    op->in_w = W;
    op->kh = op->kw = 3;
    op->stride = s;
    op->pad = P;
    op->out_ndim = 3;
    op->out_shape[0] = C;
    op->out_shape[1] = (H + 2 * P - 3) / s + 1;
    op->out_shape[2] = (W + 2 * P - 3) / s + 1;
    op->out_size = (size_t)C * op->out_shape[1] * op->out_shape[2];
    op->in_zp = extreme ? (qat_rng_below(r, 2) ? 127 : -128) : rnd_i(r, -128, 127);
    op->out_zp = extreme ? (qat_rng_below(r, 2) ? 127 : -128) : rnd_i(r, -128, 127);
    op->act_min = qat_rng_below(r, 3) == 0 ? op->out_zp : -128;
    op->act_max = qat_rng_below(r, 3) == 0 ? rnd_i(r, op->act_min, 127) : 127;
    op->weight = malloc((size_t)C * 9);
    op->bias = malloc((size_t)C * 4);
    op->mult = malloc((size_t)C * 4);
    op->shift = malloc((size_t)C * 4);
    op->act_max_c = amc ? malloc((size_t)C * 4) : NULL;
    for (int i = 0; i < C * 9; i++)
        op->weight[i] = (int8_t)(extreme ? (qat_rng_below(r, 2) ? 127 : -128) : rnd_i(r, -128, 127));
    for (int c = 0; c < C; c++) {
        op->bias[c] = extreme ? rnd_i(r, -1000000, 1000000) : rnd_i(r, -3000, 3000);
        /* real multipliers 2^-14 .. 2^2 (shift -13 .. 3, across t = 32), sometimes 0 */
        op->mult[c] = qat_rng_below(r, 12) == 0 ? 0 : rnd_i(r, 1 << 30, INT32_MAX);
        op->shift[c] = rnd_i(r, -13, 3);
        if (amc) op->act_max_c[c] = qat_rng_below(r, 4) == 0 ? op->act_min : rnd_i(r, op->act_min, 127);
    }
}

static void dw_free(rt_op *op)
{
    qat_rti_gemm_free(&op->g);
    free(op->weight);
    free(op->bias);
    free(op->mult);
    free(op->shift);
    free(op->act_max_c);
}

START_TEST(test_int8_depthwise)
{
    static const rt_isa_kernels *const fast[] = {&qat_rti_avx2, &qat_rti_vnni};
    static const qat_rt_isa isas[] = {QAT_RT_ISA_AVX2, QAT_RT_ISA_AVX512_VNNI};
    qat_rng r;
    qat_rng_seed(&r, 4242);
    int ran = 0;
    for (int f = 0; f < 2; f++) {
        if (!qat_rti_cpu_has(isas[f])) {
            fprintf(stderr, "test_kernels: no %s, its depthwise kernel is not tested\n", qat_rt_isa_name(isas[f]));
            continue;
        }
        for (int t = 0; t < 400; t++) {
            const int s = 1 + (int)qat_rng_below(&r, 2);
            const int P = t % 11 == 0 ? 3 + (int)qat_rng_below(&r, 3) : t % 7 == 0 ? 2 : (int)qat_rng_below(&r, 2);
            const int C = t < 40 ? 2 + t : 2 + (int)qat_rng_below(&r, 70); /* C = 1 is groups 1: an ordinary conv */
            int H = 1 + (int)qat_rng_below(&r, t % 5 == 0 ? 60 : 20), W = 1 + (int)qat_rng_below(&r, t % 4 == 0 ? 70 : 20);
            if (H + 2 * P < 3) H = 3 - 2 * P;
            if (W + 2 * P < 3) W = 3 - 2 * P;
            const int extreme = t % 3 == 0;
            rt_op op;
            dw_op(&op, C, H, W, s, P, extreme, t % 2, &r);
            ck_assert_int_eq(fast[f]->prepare_dw(&op), QAT_OK);
            ck_assert_msg(op.dw_fast, "%s: C %d %dx%d s %d pad %d not taken by the fast kernel",
                          qat_rt_isa_name(isas[f]), C, H, W, s, P);
            const size_t in = (size_t)C * H * W;
            int8_t *x = malloc(in), *y0 = malloc(op.out_size + 64), *y1 = malloc(op.out_size + 64);
            for (size_t i = 0; i < in; i++)
                x[i] = (int8_t)(extreme ? (qat_rng_below(&r, 2) ? 127 : -128) : rnd_i(&r, -128, 127));
            uint8_t *ref_scratch = malloc(qat_rti_conv2d_ref_scratch(&op));
            uint8_t *slot = qat_rti_alloc(fast[f]->dw_slot_bytes(&op));
            memset(y0, 0x55, op.out_size + 64);
            memset(y1, 0x55, op.out_size + 64);
            qat_rti_conv2d_ref(&op, x, y0, ref_scratch);
            fast[f]->dw_image(&op, x, y1, slot);
            for (size_t i = 0; i < op.out_size + 64; i++)
                if (y0[i] != y1[i])
                    ck_abort_msg("%s depthwise case %d: C %d %dx%d s %d pad %d%s: byte %zu of %zu: ref %d, fast %d",
                                 qat_rt_isa_name(isas[f]), t, C, H, W, s, P, extreme ? " extreme" : "", i,
                                 op.out_size, y0[i], y1[i]);
            free(x), free(y0), free(y1), free(ref_scratch);
            qat_rti_dealloc(slot);
            dw_free(&op);
            ran++;
        }
        /* not a depthwise 3x3: the fast kernels decline (the reference runs it) */
        rt_op op;
        dw_op(&op, 4, 6, 6, 1, 1, 0, 0, &r);
        op.oc = 8; /* channel multiplier 2 */
        ck_assert_int_eq(fast[f]->prepare_dw(&op), QAT_OK);
        ck_assert_int_eq(op.dw_fast, 0);
        op.oc = 4;
        op.stride = 3;
        ck_assert_int_eq(fast[f]->prepare_dw(&op), QAT_OK);
        ck_assert_int_eq(op.dw_fast, 0);
        dw_free(&op);
    }
    if (!ran) fprintf(stderr, "test_kernels: no fast int8 kernels on this CPU\n");
}
END_TEST

/* int8 lut (y = table[x + 128]): the VNNI family's kernel (vpermi2b when
 * the CPU has AVX-512 VBMI) against the reference on every byte value,
 * lengths around the 64-byte steps, no writes past the end */
START_TEST(test_int8_lut)
{
    if (!qat_rti_cpu_has(QAT_RT_ISA_AVX512_VNNI)) {
        fprintf(stderr, "test_kernels: no avx512_vnni, its lut kernel is not tested\n");
        return;
    }
    static const size_t lens[] = {1, 2, 63, 64, 65, 127, 128, 129, 256, 300, 1000, 12544};
    qat_rng r;
    qat_rng_seed(&r, 777);
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        rt_op op;
        memset(&op, 0, sizeof op);
        op.type = RT_OP_LUT;
        op.name = "lut";
        op.out_size = lens[t];
        for (int i = 0; i < 256; i++) op.lut[i] = (int8_t)rnd_i(&r, -128, 127);
        const size_t n = lens[t];
        int8_t *x = malloc(n + 64), *y0 = malloc(n + 64), *y1 = malloc(n + 64);
        for (size_t i = 0; i < n; i++) x[i] = (int8_t)(n >= 256 && i < 256 ? (int)i - 128 : rnd_i(&r, -128, 127));
        memset(y0, 0x55, n + 64);
        memset(y1, 0x55, n + 64);
        qat_rti_lut_s8(&op, x, y0);
        for (size_t i = 0; i < n; i++) ck_assert_int_eq(y0[i], op.lut[(uint8_t)(x[i] + 128)]);
        qat_rti_vnni.lut_image(&op, x, y1);
        for (size_t i = 0; i < n + 64; i++)
            if (y0[i] != y1[i])
                ck_abort_msg("lut length %zu: byte %zu: ref %d, vnni %d", n, i, y0[i], y1[i]);
        free(x), free(y0), free(y1);
    }
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gemm_bcast);
    tcase_add_test(tc, test_gemm_dot);
    tcase_add_loop_test(tc, test_conv_engines, 0, (int)(sizeof conv_cases / sizeof conv_cases[0]));
    tcase_add_test(tc, test_linear_engines);
    tcase_add_test(tc, test_eltwise_same_bits);
    tcase_add_test(tc, test_phase_copies_same_bits);
    tcase_add_test(tc, test_int8_depthwise);
    tcase_add_test(tc, test_int8_lut);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kernels_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
