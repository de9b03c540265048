/* conv2d and pooling; forward and backward side by side.
 *
 * Three ways to run a convolution, all GEMMs over output pixels:
 *  - implicit (avx512 engine, stride 1): the input is copied once into
 *    zero-padded planes Wp = W + 2*pad wide; output pixel (oh, ow) is grid
 *    column q = oh*Wp + ow, and row (c, kh, kw) of the im2col matrix is
 *    plane c read from offset kh*Wp + kw, so the GEMM reads the planes
 *    directly (no im2col). Columns ow >= OW of the grid are computed and
 *    not stored. The input gradient is the same kind of convolution of the
 *    padded output gradient with the flipped, transposed kernel, and the
 *    weight gradient a dot product over grid columns.
 *  - im2col (avx512 engine, other strides): columns are the pixels of the
 *    whole batch, built chunk by chunk in cache, GEMMs by the same kernels.
 *  - portable: the im2col chunks through OpenBLAS.
 * Threads take whole samples (col2im and the input gradient of a sample
 * stay in one thread) or contiguous column ranges; the split depends only
 * on the thread count, so the same thread count reproduces the same
 * numbers. */
#include <float.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

typedef struct {
    int N, C, H, W, OC, KH, KW, OH, OW, stride, pad;
} conv_dims;

/* ---- helpers shared by the paths ---- */

/* Columns per chunk: the chunk's im2col matrix (K x cols) about 256 KB. */
static int chunk_cols(int K)
{
    int n = (65536 / K) / QAT_NR * QAT_NR;
    return n < QAT_NR ? QAT_NR : n > 4096 ? 4096 : n;
}

static ptrdiff_t round16(ptrdiff_t n) { return (n + 15) / 16 * 16; }

/* Thread t's share of [0, L) when nt threads split it, in multiples of
 * `align` (the last share takes the rest). */
static void split_range(ptrdiff_t L, int nt, int t, ptrdiff_t align, ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t per = (L + nt - 1) / nt;
    per = (per + align - 1) / align * align;
    *lo = t * per < L ? t * per : L;
    *hi = (t + 1) * per < L ? (t + 1) * per : L;
}

/* im2col of columns [g0, g1) (the batch's output pixels, sample-major)
 * into col[k*ld + j], k = (c*KH + kh)*KW + kw; columns [g1 - g0, ld) of
 * every row are zeroed. */
static void im2col_range(float *col, ptrdiff_t ld, const float *x, const conv_dims *d,
                         ptrdiff_t g0, ptrdiff_t g1)
{
    const int ohw = d->OH * d->OW, K = d->C * d->KH * d->KW, st = d->stride;
    for (ptrdiff_t g = g0; g < g1;) {
        ptrdiff_t s = g / ohw;
        int p = (int)(g % ohw), oh = p / d->OW, ow0 = p % d->OW;
        int cnt = d->OW - ow0 < g1 - g ? d->OW - ow0 : (int)(g1 - g);
        ptrdiff_t j = g - g0;
        for (int c = 0, k = 0; c < d->C; c++)
            for (int kh = 0; kh < d->KH; kh++)
                for (int kw = 0; kw < d->KW; kw++, k++) {
                    float *o = col + k * ld + j;
                    int ih = oh * st - d->pad + kh;
                    if (ih < 0 || ih >= d->H) {
                        memset(o, 0, (size_t)cnt * sizeof(float));
                        continue;
                    }
                    const float *xr = x + (((size_t)s * d->C + c) * d->H + ih) * d->W;
                    /* valid iw = ow*st - pad + kw in [0, W) for ow in [a, b) */
                    int a = d->pad - kw <= 0 ? 0 : (d->pad - kw + st - 1) / st;
                    int b = d->W + d->pad - kw <= 0 ? 0 : (d->W + d->pad - kw + st - 1) / st;
                    a = a < ow0 ? ow0 : a > ow0 + cnt ? ow0 + cnt : a;
                    b = b < a ? a : b > ow0 + cnt ? ow0 + cnt : b;
                    int t = a - ow0;
                    if (t) memset(o, 0, (size_t)t * sizeof(float));
                    const float *xs = xr + a * st - d->pad + kw;
                    if (st == 1) {
                        memcpy(o + t, xs, (size_t)(b - a) * sizeof(float));
                    } else {
                        for (int u = 0; u < b - a; u++) o[t + u] = xs[u * st];
                    }
                    t += b - a;
                    if (cnt - t) memset(o + t, 0, (size_t)(cnt - t) * sizeof(float));
                }
        g += cnt;
    }
    if (ld > g1 - g0)
        for (int k = 0; k < K; k++) memset(col + k * ld + (g1 - g0), 0, (size_t)(ld - (g1 - g0)) * sizeof(float));
}

/* dx += col2im(dcol) for columns [g0, g1); dcol is [K][ld]. */
static void col2im_range(float *dx, const float *dcol, ptrdiff_t ld, const conv_dims *d,
                         ptrdiff_t g0, ptrdiff_t g1)
{
    const int ohw = d->OH * d->OW, st = d->stride;
    for (ptrdiff_t g = g0; g < g1;) {
        ptrdiff_t s = g / ohw;
        int p = (int)(g % ohw), oh = p / d->OW, ow0 = p % d->OW;
        int cnt = d->OW - ow0 < g1 - g ? d->OW - ow0 : (int)(g1 - g);
        ptrdiff_t j = g - g0;
        for (int c = 0, k = 0; c < d->C; c++)
            for (int kh = 0; kh < d->KH; kh++)
                for (int kw = 0; kw < d->KW; kw++, k++) {
                    int ih = oh * st - d->pad + kh;
                    if (ih < 0 || ih >= d->H) continue;
                    const float *r = dcol + k * ld + j;
                    float *xr = dx + (((size_t)s * d->C + c) * d->H + ih) * d->W;
                    int a = d->pad - kw <= 0 ? 0 : (d->pad - kw + st - 1) / st;
                    int b = d->W + d->pad - kw <= 0 ? 0 : (d->W + d->pad - kw + st - 1) / st;
                    a = a < ow0 ? ow0 : a > ow0 + cnt ? ow0 + cnt : a;
                    b = b < a ? a : b > ow0 + cnt ? ow0 + cnt : b;
                    float *xs = xr + a * st - d->pad + kw;
                    const float *rs = r + (a - ow0);
                    if (st == 1)
                        for (int u = 0; u < b - a; u++) xs[u] += rs[u];
                    else
                        for (int u = 0; u < b - a; u++) xs[u * st] += rs[u];
                }
        g += cnt;
    }
}

/* Copies columns [g0, g0+n) of the NCHW tensor t (OC channels) into
 * dst[oc*ld + j], zeroing columns [n, ld). */
static void gather_cols(float *dst, ptrdiff_t ld, const float *t, int OC, int ohw, ptrdiff_t g0,
                        ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n;) {
        ptrdiff_t g = g0 + j, s = g / ohw;
        int p = (int)(g % ohw), cnt = ohw - p < n - j ? ohw - p : (int)(n - j);
        const float *src = t + (size_t)s * OC * ohw + p;
        for (int o = 0; o < OC; o++)
            memcpy(dst + o * ld + j, src + (size_t)o * ohw, (size_t)cnt * sizeof(float));
        j += cnt;
    }
    if (ld > n)
        for (int o = 0; o < OC; o++) memset(dst + o * ld + n, 0, (size_t)(ld - n) * sizeof(float));
}

/* The inverse of gather_cols, adding bias[oc] if given. */
static void scatter_cols(float *t, const float *src, ptrdiff_t ld, const float *bias, int OC, int ohw,
                         ptrdiff_t g0, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n;) {
        ptrdiff_t g = g0 + j, s = g / ohw;
        int p = (int)(g % ohw), cnt = ohw - p < n - j ? ohw - p : (int)(n - j);
        float *dst = t + (size_t)s * OC * ohw + p;
        for (int o = 0; o < OC; o++) {
            const float *so = src + o * ld + j;
            float *d = dst + (size_t)o * ohw;
            if (bias)
                for (int u = 0; u < cnt; u++) d[u] = so[u] + bias[o];
            else
                memcpy(d, so, (size_t)cnt * sizeof(float));
        }
        j += cnt;
    }
}

/* ---- implicit path: padded planes ---- */

/* A plane of H x W values padded by ph rows and pw columns on each side:
 * Hp x Wp, stored with `stride` floats per plane (Hp*Wp plus zeroed slack
 * for reads past the last row). */
typedef struct {
    int H, W, ph, pw, Hp, Wp;
    ptrdiff_t stride;
} pad_geom;

static pad_geom pad_geometry(int H, int W, int ph, int pw, int KW)
{
    pad_geom g = {H, W, ph, pw, H + 2 * ph, W + 2 * pw, 0};
    g.stride = round16((ptrdiff_t)g.Hp * g.Wp + KW + 16);
    return g;
}

/* n planes of src (H x W each, contiguous) into dst, padded. */
static void pad_planes(float *dst, const float *src, int n, const pad_geom *g)
{
    for (int c = 0; c < n; c++) {
        float *o = dst + c * g->stride;
        const float *s = src + (size_t)c * g->H * g->W;
        size_t top = (size_t)g->ph * g->Wp + g->pw;
        memset(o, 0, top * sizeof(float));
        o += top;
        for (int h = 0; h < g->H; h++) {
            memcpy(o, s + (size_t)h * g->W, (size_t)g->W * sizeof(float));
            if (h + 1 < g->H) memset(o + g->W, 0, (size_t)2 * g->pw * sizeof(float));
            o += g->Wp;
        }
        /* the last row's right padding, the bottom rows and the slack */
        o -= g->Wp - g->W;
        memset(o, 0, (size_t)(dst + (c + 1) * g->stride - o) * sizeof(float));
    }
}

/* n planes of src (OH x OW each) laid on a Wp-wide grid (columns OW..Wp-1
 * zero), each plane P floats (zeros after OH*Wp). */
static void grid_planes(float *dst, ptrdiff_t P, const float *src, int n, int OH, int OW, int Wp)
{
    for (int c = 0; c < n; c++) {
        float *o = dst + c * P;
        const float *s = src + (size_t)c * OH * OW;
        for (int h = 0; h < OH; h++) {
            memcpy(o + (size_t)h * Wp, s + (size_t)h * OW, (size_t)OW * sizeof(float));
            memset(o + (size_t)h * Wp + OW, 0, (size_t)(Wp - OW) * sizeof(float));
        }
        memset(o + (size_t)OH * Wp, 0, (size_t)(P - (ptrdiff_t)OH * Wp) * sizeof(float));
    }
}

/* Offsets of the KH*KW taps in a Wp-wide plane */
static void tap_offsets(ptrdiff_t *koff, int KH, int KW, int Wp)
{
    for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++) koff[kh * KW + kw] = (ptrdiff_t)kh * Wp + kw;
}

/* The input gradient is a convolution with padding KH-1-pad: implicit
 * needs stride 1 and pad < kernel. */
static int use_implicit(const conv_dims *d)
{
    return qat_simd_level() == QAT_SIMD_AVX512 && d->stride == 1 && d->pad < d->KH &&
           d->pad < d->KW;
}

/* Samples of one dW group in the implicit backward: about 512 KB of padded
 * planes, at least one. */
static int dw_group(ptrdiff_t per_sample_floats)
{
    ptrdiff_t g = 131072 / (per_sample_floats > 0 ? per_sample_floats : 1);
    return g < 1 ? 1 : g > 16 ? 16 : (int)g;
}

static void conv_backward_implicit(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK;
    const int ohw = d->OH * d->OW, hw = d->H * d->W;
    /* dx is written in full (every pixel is one grid column): a fresh
     * gradient is overwritten, an existing one added into */
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh), *dw = qat_grad(ctx, w);
    const int dx_mode = fresh ? QAT_C_ZERO : QAT_C_ADD;
    /* dW: x padded as in forward, dy on the same Wp-wide grid */
    const pad_geom xg = pad_geometry(d->H, d->W, d->pad, d->pad, d->KW);
    const ptrdiff_t P = round16((ptrdiff_t)d->OH * xg.Wp);
    /* dX: dy padded by kernel-1-pad, convolved with the flipped kernel */
    const pad_geom qg = pad_geometry(d->OH, d->OW, d->KH - 1 - d->pad, d->KW - 1 - d->pad, d->KW);
    const ptrdiff_t xs = (ptrdiff_t)C * xg.stride, ys = (ptrdiff_t)OC * P;
    const int G = dw ? dw_group(xs + ys) : 1;
    int nt = qat_get_num_threads();
    if (nt > d->N) nt = d->N;
    const size_t per = (dw ? (size_t)G * (xs + ys) + (size_t)OC * K : 0) +
                       (dx ? (size_t)OC * qg.stride : 0);
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *w2p = dx ? qat_arena_alloc(ctx, 2 * (size_t)C * OC * KK * sizeof(float)) : NULL;
    ptrdiff_t *koff = qat_arena_alloc(ctx, 2 * (size_t)KK * sizeof(ptrdiff_t));
    if (!scratch || !koff || (dx && !w2p)) return; /* out of memory: error is set */
    tap_offsets(koff, d->KH, d->KW, xg.Wp);
    tap_offsets(koff + KK, d->KH, d->KW, qg.Wp);
    if (dx) {
        /* W2(c, (oc, kh, kw)) = W(oc, c, KH-1-kh, KW-1-kw), packed */
        float *w2 = w2p + (size_t)C * OC * KK;
        for (int c = 0; c < C; c++)
            for (int o = 0; o < OC; o++)
                for (int q = 0; q < KK; q++)
                    w2[((size_t)c * OC + o) * KK + q] = w->data[((size_t)o * C + c) * KK + (KK - 1 - q)];
        qat_pack_a(w2p, w2, (ptrdiff_t)OC * KK, 1, C, OC * KK);
    }
    /* every partial is zeroed: a nested region may run fewer threads */
    if (dw)
        for (int t = 0; t < nt; t++) memset(scratch + (size_t)t * per, 0, (size_t)OC * K * sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *dwp = scratch + (size_t)t * per; /* [OC][K] */
        float *xp = dwp + (dw ? (size_t)OC * K : 0), *yg = xp + (dw ? (size_t)G * xs : 0);
        float *yq = yg + (dw ? (size_t)G * ys : 0);
        ptrdiff_t lo, hi;
        split_range(d->N, nth, t, 1, &lo, &hi);
        for (ptrdiff_t s0 = lo; s0 < hi; s0 += G) {
            int ns = hi - s0 < G ? (int)(hi - s0) : G;
            if (dw) {
                for (int s = 0; s < ns; s++) {
                    pad_planes(xp + s * xs, x->data + (size_t)(s0 + s) * C * hw, C, &xg);
                    grid_planes(yg + s * ys, P, y->grad + (size_t)(s0 + s) * OC * ohw, OC, d->OH,
                                d->OW, xg.Wp);
                }
                /* dW (OC, K) += dy-grid (OC, P) . x taps (K, P) */
                qat_brows br = {C, KK, xg.stride, koff};
                qat_gemm_dot(OC, (int)P, ns, yg, P, ys, xp, &br, xs, dwp, K);
            }
            if (dx)
                for (int s = 0; s < ns; s++) {
                    pad_planes(yq, y->grad + (size_t)(s0 + s) * OC * ohw, OC, &qg);
                    /* dx (C, H x Wq grid) (+)= W2 (C, OC*KK) . dy taps */
                    qat_brows br = {OC, KK, qg.stride, koff + KK};
                    qat_cmat cm = {dx + (size_t)(s0 + s) * C * hw, hw, qg.Wp, d->W, d->W};
                    qat_gemm_bcast(C, d->H * qg.Wp, w2p, yq, &br, dx_mode, NULL, &cm, 0);
                }
        }
    }
    if (dw)
        for (int t = 0; t < nt; t++) {
            const float *p = scratch + (size_t)t * per;
            for (size_t i = 0; i < (size_t)OC * K; i++) dw[i] += p[i];
        }
}

static int conv_forward_implicit(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                                 const float *bias, float *y)
{
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK, ohw = d->OH * d->OW;
    const pad_geom xg = pad_geometry(d->H, d->W, d->pad, d->pad, d->KW);
    const ptrdiff_t xs = (ptrdiff_t)C * xg.stride, cols = (ptrdiff_t)d->OH * xg.Wp;
    int nt = qat_get_num_threads();
    /* fewer samples than threads (inference of one image): the threads
     * split each image's columns, the planes are padded first */
    const int by_cols = d->N < nt;
    if (!by_cols && nt > d->N) nt = d->N;
    float *scratch = qat_arena_alloc(ctx, (size_t)(by_cols ? d->N : nt) * xs * sizeof(float));
    float *wp = qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float));
    ptrdiff_t *koff = qat_arena_alloc(ctx, (size_t)KK * sizeof(ptrdiff_t));
    if (!scratch || !wp || !koff) return -1;
    qat_pack_a(wp, w, K, 1, OC, K);
    tap_offsets(koff, d->KH, d->KW, xg.Wp);
    qat_brows br = {C, KK, xg.stride, koff};
    const int mode = bias ? QAT_C_BIAS : QAT_C_ZERO;
    if (by_cols)
        for (int s = 0; s < d->N; s++)
            pad_planes(scratch + s * xs, x + (size_t)s * C * d->H * d->W, C, &xg);
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        if (by_cols) {
            ptrdiff_t lo, hi;
            split_range(cols, nth, t, QAT_NR, &lo, &hi);
            for (int s = 0; s < d->N && lo < hi; s++) {
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, xg.Wp, d->OW, d->OW};
                qat_gemm_bcast(OC, (int)(hi - lo), wp, scratch + s * xs + lo, &br, mode, bias, &cm, lo);
            }
        } else {
            float *xp = scratch + (size_t)t * xs;
            ptrdiff_t lo, hi;
            split_range(d->N, nth, t, 1, &lo, &hi);
            for (ptrdiff_t s = lo; s < hi; s++) {
                pad_planes(xp, x + (size_t)s * C * d->H * d->W, C, &xg);
                /* y (OC, OH x Wp grid) = W (OC, K) . x taps */
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, xg.Wp, d->OW, d->OW};
                qat_gemm_bcast(OC, (int)cols, wp, xp, &br, mode, bias, &cm, 0);
            }
        }
    }
    return 0;
}

/* ---- im2col paths (avx512 kernels or OpenBLAS) ---- */

static void conv_backward_im2col(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int K = d->C * d->KH * d->KW, OC = d->OC, ohw = d->OH * d->OW;
    const ptrdiff_t L = (ptrdiff_t)d->N * ohw;
    float *dx = qat_grad(ctx, x), *dw = qat_grad(ctx, w);
    const int simd = qat_simd_level() == QAT_SIMD_AVX512;
    /* With dx, threads take whole samples (col2im of a sample stays in one
     * thread); without, any columns. */
    int nt = qat_get_num_threads();
    ptrdiff_t units = dx ? d->N : (L + QAT_NR - 1) / QAT_NR;
    if (nt > units) nt = (int)units;
    const int Lc = chunk_cols(K);
    const size_t kc = (size_t)K * Lc, oc = (size_t)OC * Lc, kw = (size_t)K * OC;
    /* per thread: dW partial, im2col, dy gathered, dcol */
    const size_t per = (dw ? kw + kc : 0) + oc + (dx ? kc : 0);
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *wtp = dx && simd ? qat_arena_alloc(ctx, kw * sizeof(float)) : NULL;
    if (!scratch || (dx && simd && !wtp)) return; /* out of memory: error is set */
    if (wtp) qat_pack_a(wtp, w->data, 1, K, K, OC); /* A(k, oc) = W[oc][k] */
    /* every partial is zeroed: a nested region may run fewer threads */
    if (dw)
        for (int t = 0; t < nt; t++) memset(scratch + (size_t)t * per, 0, kw * sizeof(float));
    static const ptrdiff_t zero_off[1] = {0};
#pragma omp parallel num_threads(nt)
    {
        /* split over the threads actually running: a nested region (the
         * caller's own parallel loop) may get fewer than nt */
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *dwp = scratch + (size_t)t * per; /* [OC][K] */
        float *col = dwp + (dw ? kw : 0), *dyc = col + (dw ? kc : 0), *dcol = dyc + oc;
        ptrdiff_t lo, hi;
        if (dx) {
            split_range(d->N, nth, t, 1, &lo, &hi);
            lo *= ohw;
            hi *= ohw;
        } else {
            split_range(L, nth, t, QAT_NR, &lo, &hi);
        }
        for (ptrdiff_t g = lo; g < hi; g += Lc) {
            ptrdiff_t n = hi - g < Lc ? hi - g : Lc;
            /* simd: rows padded to 16 columns with zeros for the dot kernel */
            ptrdiff_t ld = simd ? round16(n) : n;
            if (ld > Lc) ld = n; /* Lc is a multiple of 32: cannot happen */
            gather_cols(dyc, ld, y->grad, OC, ohw, g, n);
            if (dw) {
                im2col_range(col, ld, x->data, d, g, g + n);
                /* dW (OC,K) += dy (OC,n) col^T (n,K) */
                if (simd) {
                    qat_brows br = {K, 1, ld, zero_off};
                    qat_gemm_dot(OC, (int)ld, 1, dyc, ld, 0, col, &br, 0, dwp, K);
                } else {
                    qat_sgemm(0, 1, OC, K, (int)n, 1.0f, dyc, (int)ld, col, (int)ld, 1.0f, dwp, K);
                }
            }
            if (dx) {
                /* dcol (K,n) = W^T (K,OC) dy (OC,n) */
                if (simd) {
                    qat_brows br = {OC, 1, ld, zero_off};
                    qat_cmat cm = {dcol, ld, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                    qat_gemm_bcast(K, (int)n, wtp, dyc, &br, QAT_C_ZERO, NULL, &cm, 0);
                } else {
                    qat_sgemm(1, 0, K, (int)n, OC, 1.0f, w->data, K, dyc, (int)ld, 0.0f, dcol, (int)ld);
                }
                col2im_range(dx, dcol, ld, d, g, g + n);
            }
        }
    }
    if (dw)
        for (int t = 0; t < nt; t++) {
            const float *p = scratch + (size_t)t * per;
            for (size_t i = 0; i < kw; i++) dw[i] += p[i];
        }
}

static int conv_forward_im2col(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                               const float *bias, float *y)
{
    const int K = d->C * d->KH * d->KW, OC = d->OC, ohw = d->OH * d->OW;
    const ptrdiff_t L = (ptrdiff_t)d->N * ohw;
    const int simd = qat_simd_level() == QAT_SIMD_AVX512;
    int nt = qat_get_num_threads();
    if (nt > (L + QAT_NR - 1) / QAT_NR) nt = (int)((L + QAT_NR - 1) / QAT_NR);
    const int Lc = chunk_cols(K);
    size_t per = (size_t)K * Lc + (simd ? 0 : (size_t)OC * Lc);
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *wp = simd ? qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float)) : NULL;
    if (!scratch || (simd && !wp)) return -1;
    if (wp) qat_pack_a(wp, w, K, 1, OC, K);
    static const ptrdiff_t zero_off[1] = {0};
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *col = scratch + (size_t)t * per, *tmp = col + (size_t)K * Lc;
        ptrdiff_t lo, hi;
        split_range(L, nth, t, QAT_NR, &lo, &hi);
        for (ptrdiff_t g = lo; g < hi; g += Lc) {
            ptrdiff_t n = hi - g < Lc ? hi - g : Lc;
            im2col_range(col, n, x, d, g, g + n);
            /* y (OC, n) = W (OC,K) col (K,n) [+ b] */
            if (simd) {
                qat_brows br = {K, 1, n, zero_off};
                qat_cmat cm = {y, ohw, ohw, ohw, (ptrdiff_t)OC * ohw};
                qat_gemm_bcast(OC, (int)n, wp, col, &br, bias ? QAT_C_BIAS : QAT_C_ZERO, bias, &cm, g);
            } else {
                qat_sgemm(0, 0, OC, (int)n, K, 1.0f, w, K, col, (int)n, 0.0f, tmp, (int)n);
                scatter_cols(y, tmp, n, bias, OC, ohw, g, n);
            }
        }
    }
    return 0;
}

static void conv_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *b = e->in[2], *y = e->out;
    const conv_dims *d = e->saved;
    if (e->in[0]->requires_grad || e->in[1]->requires_grad) {
        if (use_implicit(d))
            conv_backward_implicit(ctx, e);
        else
            conv_backward_im2col(ctx, e);
    }
    float *db = b ? qat_grad(ctx, b) : NULL;
    const int ohw = d->OH * d->OW;
    if (db)
        for (int n = 0; n < d->N; n++)
            for (int o = 0; o < d->OC; o++) {
                const float *g = y->grad + ((size_t)n * d->OC + o) * ohw;
                float s = 0;
                for (int i = 0; i < ohw; i++) s += g[i];
                db[o] += s;
            }
}

qat_tensor *qat_conv2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b, int stride,
                       int pad)
{
    if (!x || !w) return NULL;
    char sa[64], sb[64];
    if (x->ndim != 4 || w->ndim != 4)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input %s must be [N,C,H,W] and weight %s [OC,C,KH,KW]",
                              qat_shape_str(x, sa, sizeof sa), qat_shape_str(w, sb, sizeof sb));
    if (x->shape[1] != w->shape[1])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input has %d channels, weight expects %d",
                              x->shape[1], w->shape[1]);
    if (stride < 1 || pad < 0)
        return qat_error_null(QAT_ERR_ARG, "conv2d: stride %d / padding %d invalid", stride, pad);
    conv_dims *d = qat_arena_alloc(ctx, sizeof *d);
    if (!d) return NULL;
    *d = (conv_dims){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                     .OC = w->shape[0], .KH = w->shape[2], .KW = w->shape[3],
                     .stride = stride, .pad = pad};
    if (d->H + 2 * pad < d->KH || d->W + 2 * pad < d->KW)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: kernel %dx%d larger than padded input %dx%d",
                              d->KH, d->KW, d->H + 2 * pad, d->W + 2 * pad);
    if (b && (b->ndim != 1 || b->shape[0] != d->OC))
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: bias must have %d elements", d->OC);
    d->OH = (d->H + 2 * pad - d->KH) / stride + 1;
    d->OW = (d->W + 2 * pad - d->KW) / stride + 1;
    qat_tensor *y = qat_new(ctx, 4, (int[]){d->N, d->OC, d->OH, d->OW});
    if (!y) return NULL;
    const float *bias = b ? b->data : NULL;
    int rc = use_implicit(d) ? conv_forward_implicit(ctx, d, x->data, w->data, bias, y->data)
                             : conv_forward_im2col(ctx, d, x->data, w->data, bias, y->data);
    if (rc) return NULL;
    qat_tensor *in[3] = {x, w, b};
    if (qat_needs_grad(ctx, 3, in) &&
        qat_tape_record(ctx, "conv2d", conv_backward, y, 3, in, d) != QAT_OK)
        return NULL;
    return y;
}

/* ---- pooling ---- */

typedef struct {
    int k, stride;
    int32_t *argmax; /* max pool: flat input index per output element */
    uint8_t *win;    /* max pool 2x2 stride 2: position of the max in its window */
} pool_saved;

static qat_tensor *pool_out(qat_ctx *ctx, const char *op, qat_tensor *x, int k, int stride)
{
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "%s: input must be [N,C,H,W]", op);
    if (k < 1 || stride < 1) return qat_error_null(QAT_ERR_ARG, "%s: kernel %d / stride %d invalid", op, k, stride);
    if (x->shape[2] < k || x->shape[3] < k)
        return qat_error_null(QAT_ERR_SHAPE, "%s: kernel %d larger than input %dx%d", op, k, x->shape[2], x->shape[3]);
    int OH = (x->shape[2] - k) / stride + 1, OW = (x->shape[3] - k) / stride + 1;
    return qat_new(ctx, 4, (int[]){x->shape[0], x->shape[1], OH, OW});
}

static void maxpool_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const pool_saved *s = e->saved;
    const float *dy = e->out->grad;
    if (!s->win) {
        float *dx = qat_grad(ctx, e->in[0]);
        if (!dx) return;
        for (size_t i = 0; i < e->out->numel; i++) dx[s->argmax[i]] += dy[i];
        return;
    }
    /* 2x2 stride 2: the windows do not overlap; with a fresh gradient every
     * element is written (0 outside the max, rows/columns no window covers) */
    qat_tensor *x = e->in[0], *y = e->out;
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh);
    if (!dx) return;
    const int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OH = y->shape[2], OW = y->shape[3];
#pragma omp parallel for if (x->numel > 32768) schedule(static)
    for (int p = 0; p < NC; p++) {
        float *d = dx + (size_t)p * H * W;
        const float *g = dy + (size_t)p * OH * OW;
        const uint8_t *wn = s->win + (size_t)p * OH * OW;
        if (fresh) {
            qat_k_maxpool2_bwd_fresh(d, g, wn, H, W, OH, OW);
            continue;
        }
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int j = wn[(size_t)oh * OW + ow];
                d[(size_t)(2 * oh + (j >> 1)) * W + 2 * ow + (j & 1)] += g[(size_t)oh * OW + ow];
            }
    }
}

qat_tensor *qat_maxpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride)
{
    if (!x) return NULL;
    qat_tensor *y = pool_out(ctx, "maxpool2d", x, k, stride);
    if (!y) return NULL;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    int need = qat_needs_grad(ctx, 1, &x);
    int fast = k == 2 && stride == 2;
    pool_saved *s = need ? qat_arena_alloc(ctx, sizeof *s) : NULL;
    int32_t *am = need && !fast ? qat_arena_alloc(ctx, y->numel * sizeof(int32_t)) : NULL;
    uint8_t *win = need && fast ? qat_arena_alloc(ctx, y->numel) : NULL;
    if (need && (!s || (!am && !win))) return NULL;
    if (fast) {
        /* first maximum in the order (0,0) (0,1) (1,0) (1,1); NaN is never
         * selected unless it is first, as in the general loop below */
#pragma omp parallel for if (y->numel > 32768) schedule(static)
        for (int p = 0; p < NC; p++)
            qat_k_maxpool2_fwd(y->data + (size_t)p * OH * OW, win ? win + (size_t)p * OH * OW : NULL,
                               x->data + (size_t)p * H * W, H, W, OH, OW);
    } else {
#pragma omp parallel for if (y->numel > 32768) schedule(static)
        for (int p = 0; p < NC; p++) {
            const float *xp = x->data + (size_t)p * H * W;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    int best = (oh * stride) * W + ow * stride;
                    float m = xp[best];
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int idx = (oh * stride + i) * W + ow * stride + j;
                            if (xp[idx] > m) { /* first maximum wins; NaN never selected */
                                m = xp[idx];
                                best = idx;
                            }
                        }
                    size_t o = ((size_t)p * OH + oh) * OW + ow;
                    y->data[o] = m;
                    if (am) am[o] = (int32_t)((size_t)p * H * W + (size_t)best);
                }
        }
    }
    if (need) {
        s->k = k;
        s->stride = stride;
        s->argmax = am;
        s->win = win;
        if (qat_tape_record(ctx, "maxpool2d", maxpool_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

static void avgpool_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *y = e->out;
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    const pool_saved *s = e->saved;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3], k = s->k, st = s->stride;
    float inv = 1.0f / (float)(k * k);
    for (int p = 0; p < NC; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float g = y->grad[((size_t)p * OH + oh) * OW + ow] * inv;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        dx[(size_t)p * H * W + (size_t)(oh * st + i) * W + ow * st + j] += g;
            }
}

qat_tensor *qat_avgpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride)
{
    if (!x) return NULL;
    qat_tensor *y = pool_out(ctx, "avgpool2d", x, k, stride);
    if (!y) return NULL;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    float inv = 1.0f / (float)(k * k);
    for (int p = 0; p < NC; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float s = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++)
                        s += x->data[(size_t)p * H * W + (size_t)(oh * stride + i) * W + ow * stride + j];
                y->data[((size_t)p * OH + oh) * OW + ow] = s * inv;
            }
    if (qat_needs_grad(ctx, 1, &x)) {
        pool_saved *s = qat_arena_alloc(ctx, sizeof *s);
        if (!s) return NULL;
        s->k = k;
        s->stride = stride;
        s->argmax = NULL;
        s->win = NULL;
        if (qat_tape_record(ctx, "avgpool2d", avgpool_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

static void gap_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0];
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    size_t NC = (size_t)x->shape[0] * x->shape[1], HW = (size_t)x->shape[2] * x->shape[3];
    float inv = 1.0f / (float)HW;
    for (size_t p = 0; p < NC; p++) {
        float g = e->out->grad[p] * inv;
        for (size_t i = 0; i < HW; i++) dx[p * HW + i] += g;
    }
}

qat_tensor *qat_global_avgpool(qat_ctx *ctx, qat_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "global_avgpool: input must be [N,C,H,W]");
    qat_tensor *y = qat_new(ctx, 2, (int[]){x->shape[0], x->shape[1]});
    if (!y) return NULL;
    size_t NC = (size_t)x->shape[0] * x->shape[1], HW = (size_t)x->shape[2] * x->shape[3];
    float inv = 1.0f / (float)HW;
    for (size_t p = 0; p < NC; p++) {
        float s = 0;
        for (size_t i = 0; i < HW; i++) s += x->data[p * HW + i];
        y->data[p] = s * inv;
    }
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "global_avgpool", gap_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}
