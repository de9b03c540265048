/* Grouped convolution (groups > 1; depthwise when groups = C): a direct
 * kernel, no im2col. Forward and input gradient go plane by plane (one
 * output or input channel of one sample), the weight gradient output
 * channel by output channel, each plane or channel computed by one thread
 * in a fixed order, so results depend neither on the thread count nor on
 * the schedule. groups 1 goes to qat_conv2d (the GEMM paths of conv.c). */
#include <omp.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

typedef struct {
    int N, C, H, W, OC, K, OH, OW, stride, pad, groups;
} gconv_dims;

/* Output columns ow whose tap kw lands inside the row: ow*s - pad + kw in
 * [0, W) for ow in [*a, *b). */
static void valid_cols(const gconv_dims *d, int kw, int *a, int *b)
{
    const int s = d->stride;
    int lo = d->pad - kw <= 0 ? 0 : (d->pad - kw + s - 1) / s;
    int hi = d->W + d->pad - kw <= 0 ? 0 : (d->W + d->pad - kw + s - 1) / s;
    if (hi > d->OW) hi = d->OW;
    if (lo > hi) lo = hi;
    *a = lo;
    *b = hi;
}

static int gconv_threads(const gconv_dims *d)
{
    double macs = (double)d->N * d->OC * (d->C / d->groups) * d->K * d->K * d->OH * d->OW;
    return macs < 1e6 ? 1 : qat_get_num_threads();
}

/* ---- portable kernels: one plane / one channel ---- */

/* y plane (OH x OW) = bias + sum over the group's Cg input planes */
static void fwd_plane(float *restrict y, const float *restrict x, const float *restrict w, float bias,
                      int Cg, const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int i = 0; i < OH * OW; i++) y[i] = 0.0f;
    for (int ci = 0; ci < Cg; ci++) {
        const float *xp = x + (size_t)ci * H * W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float wv = w[(ci * K + kh) * K + kw];
                int a, b;
                valid_cols(d, kw, &a, &b);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *xr = xp + (size_t)ih * W - d->pad + kw;
                    float *yr = y + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) yr[ow] += wv * xr[ow];
                    else
                        for (int ow = a; ow < b; ow++) yr[ow] += wv * xr[ow * s];
                }
            }
    }
    if (bias != 0.0f)
        for (int i = 0; i < OH * OW; i++) y[i] += bias;
}

/* dx plane (H x W) += sum over the OCg output planes of the group that
 * read it (dy planes at dy, stride OH*OW; w rows at w, stride Cg*K*K) */
static void dx_plane(float *restrict dx, const float *restrict dy, const float *restrict w, int OCg,
                     ptrdiff_t wstride, const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int o = 0; o < OCg; o++) {
        const float *g = dy + (size_t)o * OH * OW, *wo = w + o * wstride;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float wv = wo[kh * K + kw];
                int a, b;
                valid_cols(d, kw, &a, &b);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    float *xr = dx + (size_t)ih * W - d->pad + kw;
                    const float *gr = g + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) xr[ow] += wv * gr[ow];
                    else
                        for (int ow = a; ow < b; ow++) xr[ow * s] += wv * gr[ow];
                }
            }
    }
}

/* dw[ci][kh][kw] of one output channel += sum over pixels of dy plane *
 * the Cg input planes */
static void dw_plane(float *restrict dw, const float *restrict dy, const float *restrict x, int Cg,
                     const gconv_dims *d)
{
    const int K = d->K, s = d->stride, OH = d->OH, OW = d->OW, H = d->H, W = d->W;
    for (int ci = 0; ci < Cg; ci++) {
        const float *xp = x + (size_t)ci * H * W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                int a, b;
                valid_cols(d, kw, &a, &b);
                float acc = 0.0f;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - d->pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *xr = xp + (size_t)ih * W - d->pad + kw, *gr = dy + (size_t)oh * OW;
                    if (s == 1)
                        for (int ow = a; ow < b; ow++) acc += gr[ow] * xr[ow];
                    else
                        for (int ow = a; ow < b; ow++) acc += gr[ow] * xr[ow * s];
                }
                dw[(ci * K + kh) * K + kw] += acc;
            }
    }
}

/* ---- depthwise fast path ----
 * Multiplier 1 (OC = C = groups), stride 1 or 2. Each plane is copied into
 * zero-padded phase planes (stride s: s*s planes, plane (b, a) holding the
 * padded pixels (s*i + b, s*j + a), Hq x Wq each), so that every tap of
 * the convolution reads one contiguous run: output pixel (oh, ow) is grid
 * position q = oh*Wq + ow, and tap (kh, kw) reads plane (kh%s, kw%s) at q +
 * (kh/s)*Wq + kw/s. The loops then run over the whole grid (the Wq - OW
 * columns past each row are computed and dropped), long enough to
 * vectorise even for 7x7 planes; the functions are cloned for AVX-512,
 * AVX2 and the baseline, each element's operations the same in every lane
 * and clone. Forward and input gradient add each element's products in the
 * portable kernels' order (kh, kw) and give their values (the padding adds
 * zeros, so at most the sign of a zero differs); the weight gradient sums
 * over the grid in 16 lanes, so it differs from the portable kernel's
 * serial sum by rounding. The portable kernels above stay the path of
 * QAT_SIMD=0 (qat_simd_level() == QAT_SIMD_PORTABLE); tests hold the two
 * against each other. */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "vect-cost-model=dynamic")
#endif
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DW_CLONES
#endif

#define DW_LANES 16
#define DW_MAX_K 7

typedef struct {
    int s, Hq, Wq;   /* stride; each phase plane Hq x Wq */
    size_t L, Lp;    /* grid positions OH*Wq; rounded up to DW_LANES */
    size_t PS;       /* floats per phase plane, with the slack the taps read */
    size_t plane;    /* s*s*PS: one image's phase planes */
    size_t G;        /* floats of the grid buffers (dy on the grid, with its margins) */
    ptrdiff_t off[DW_MAX_K * DW_MAX_K]; /* tap (kh, kw): plane and offset */
} dw_geom;

static int dw_fast(const gconv_dims *d)
{
    return qat_simd_level() >= QAT_SIMD_AVX2 && d->groups == d->C && d->OC == d->C && d->stride <= 2 &&
           d->K <= DW_MAX_K;
}

/* stride 1, 3x3, pad 1: the input gradient is a gather from dy on the
 * grid (which then needs a margin of Wq + 1 zeros on each side) */
static int dw3_s1(const gconv_dims *d) { return d->K == 3 && d->stride == 1 && d->pad == 1; }

static dw_geom dw_geometry(const gconv_dims *d)
{
    dw_geom g;
    const int s = d->stride, e = (d->K - 1) / s;
    g.s = s;
    g.Hq = (d->H + 2 * d->pad + s - 1) / s;
    g.Wq = (d->W + 2 * d->pad + s - 1) / s;
    g.L = (size_t)d->OH * g.Wq;
    g.Lp = (g.L + DW_LANES - 1) / DW_LANES * DW_LANES;
    size_t need = g.Lp + (size_t)e * (g.Wq + 1), hw = (size_t)g.Hq * g.Wq;
    g.PS = ((need > hw ? need : hw) + 15) / 16 * 16;
    g.plane = (size_t)s * s * g.PS;
    g.G = g.Lp + 2 * ((size_t)g.Wq + 1) + (size_t)d->H * g.Wq + 16;
    for (int kh = 0; kh < d->K; kh++)
        for (int kw = 0; kw < d->K; kw++)
            g.off[kh * d->K + kw] =
                (ptrdiff_t)(((kh % s) * s + kw % s) * g.PS) + (ptrdiff_t)(kh / s) * g.Wq + kw / s;
    return g;
}

/* One H x W plane into its phase planes. Only the pixels on the image are
 * written: the padding is zero already (the scratch is zeroed once per
 * op and nothing else is ever written there). */
DW_CLONES static void dw_phases(float *restrict ph, const float *restrict x, const gconv_dims *d, const dw_geom *g)
{
    const int s = d->stride, p = d->pad;
    for (int ih = 0; ih < d->H; ih++) {
        const int r = ih + p;
        const float *restrict xr = x + (size_t)ih * d->W;
        float *restrict o0 = ph + (size_t)((r % s) * s) * g->PS + (size_t)(r / s) * g->Wq;
        if (s == 1) {
            for (int iw = 0; iw < d->W; iw++) o0[iw + p] = xr[iw];
            continue;
        }
        /* stride 2: padded column c = iw + p goes to phase c % 2, position
         * c / 2; pairs (even c, odd c) in one loop (interleaved loads) */
        float *restrict o1 = o0 + g->PS;
        int iw = 0;
        if (p & 1) { /* iw 0: c = p odd */
            o1[p / 2] = xr[0];
            iw = 1;
        }
        const int jb = (iw + p) / 2, npair = (d->W - iw) / 2;
        const float *restrict xs = xr + iw;
        for (int m = 0; m < npair; m++) {
            o0[jb + m] = xs[2 * m];
            o1[jb + m] = xs[2 * m + 1];
        }
        if (iw + 2 * npair < d->W) o0[jb + npair] = xs[2 * npair];
    }
}

/* t[q] = sum over taps (in (kh, kw) order) of w * tap[q], q < L */
DW_CLONES static void dw_fwd_grid(float *restrict t, const float *restrict ph, const float *restrict w,
                                  const gconv_dims *d, const dw_geom *g)
{
    const size_t L = g->L;
    if (d->K == 3) {
        const float *p0 = ph + g->off[0], *p1 = ph + g->off[1], *p2 = ph + g->off[2], *p3 = ph + g->off[3];
        const float *p4 = ph + g->off[4], *p5 = ph + g->off[5], *p6 = ph + g->off[6], *p7 = ph + g->off[7];
        const float *p8 = ph + g->off[8];
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7],
                    w8 = w[8];
        for (size_t q = 0; q < L; q++) {
            float a = 0.0f;
            a += w0 * p0[q];
            a += w1 * p1[q];
            a += w2 * p2[q];
            a += w3 * p3[q];
            a += w4 * p4[q];
            a += w5 * p5[q];
            a += w6 * p6[q];
            a += w7 * p7[q];
            a += w8 * p8[q];
            t[q] = a;
        }
        return;
    }
    for (size_t q = 0; q < L; q++) t[q] = 0.0f;
    for (int k = 0; k < d->K * d->K; k++) {
        const float wv = w[k], *src = ph + g->off[k];
        for (size_t q = 0; q < L; q++) t[q] += wv * src[q];
    }
}

/* y (OH x OW) from the grid t (Wq-wide rows), + bias */
DW_CLONES static void dw_from_grid(float *restrict y, const float *restrict t, float bias, int has_bias,
                                   const gconv_dims *d, const dw_geom *g)
{
    for (int oh = 0; oh < d->OH; oh++) {
        const float *restrict tr = t + (size_t)oh * g->Wq;
        float *restrict yr = y + (size_t)oh * d->OW;
        if (has_bias)
            for (int ow = 0; ow < d->OW; ow++) yr[ow] = tr[ow] + bias;
        else
            for (int ow = 0; ow < d->OW; ow++) yr[ow] = tr[ow];
    }
}

/* dy (OH x OW) onto the grid gq: only columns < OW are written (the rest
 * stays zero) */
DW_CLONES static void dw_to_grid(float *restrict gq, const float *restrict dy, const gconv_dims *d,
                                 const dw_geom *g)
{
    for (int oh = 0; oh < d->OH; oh++) {
        float *restrict o = gq + (size_t)oh * g->Wq;
        const float *restrict r = dy + (size_t)oh * d->OW;
        for (int ow = 0; ow < d->OW; ow++) o[ow] = r[ow];
    }
}

/* Weight gradient lanes: acc[t][l] += gq[q] * tap_t[q] over q = j*16 + l
 * < Lp (gq is zero off the output pixels, so they add 0) */
DW_CLONES static void dw_dw_acc(float *restrict acc, const float *restrict ph, const float *restrict gq,
                                const gconv_dims *d, const dw_geom *g)
{
    const size_t Lp = g->Lp;
    for (int k = 0; k < d->K * d->K; k++) {
        float *restrict a = acc + (size_t)k * DW_LANES;
        const float *restrict src = ph + g->off[k];
        for (size_t j = 0; j < Lp; j += DW_LANES)
            for (int l = 0; l < DW_LANES; l++) a[l] += gq[j + l] * src[j + l];
    }
}

/* Stride 1, 3x3, pad 1: the input gradient at grid position q = ih*Wq + iw
 * is sum over (kh, kw) of w[kh][kw] dy[ih+1-kh][iw+1-kw], a gather from gq
 * at q + (1-kh)*Wq + (1-kw) (gq has Wq + 1 zeros before it; the columns
 * past W of the grid are zero, so the reads that wrap add 0); then dx
 * (fresh: stored, else added). */
DW_CLONES static void dw3_dx_s1(float *restrict dx, float *restrict t, const float *restrict gq,
                                const float *restrict w, int fresh, const gconv_dims *d, const dw_geom *g)
{
    const ptrdiff_t Wq = g->Wq;
    const size_t L = (size_t)d->H * Wq;
    const float *dn = gq + Wq + 1, *d0 = gq + 1, *dp = gq - Wq + 1; /* rows ih+1, ih, ih-1; column iw+1 */
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    for (size_t q = 0; q < L; q++) {
        float a = 0.0f;
        a += w0 * dn[q];
        a += w1 * dn[q - 1];
        a += w2 * dn[q - 2];
        a += w3 * d0[q];
        a += w4 * d0[q - 1];
        a += w5 * d0[q - 2];
        a += w6 * dp[q];
        a += w7 * dp[q - 1];
        a += w8 * dp[q - 2];
        t[q] = a;
    }
    for (int ih = 0; ih < d->H; ih++) {
        const float *restrict tr = t + (size_t)ih * Wq;
        float *restrict o = dx + (size_t)ih * d->W;
        if (fresh)
            for (int iw = 0; iw < d->W; iw++) o[iw] = tr[iw];
        else
            for (int iw = 0; iw < d->W; iw++) o[iw] += tr[iw];
    }
}

/* Other cases: the input gradient scattered into phase planes dph
 * (zeroed; the layout of dw_phases), tap by tap (each element's products
 * in (kh, kw) order), then gathered back into dx. */
DW_CLONES static void dw_dx_scatter(float *restrict dph, const float *restrict gq, const float *restrict w,
                                    const gconv_dims *d, const dw_geom *g)
{
    const size_t L = g->L;
    for (int k = 0; k < d->K * d->K; k++) {
        const float wv = w[k];
        float *restrict o = dph + g->off[k];
        for (size_t q = 0; q < L; q++) o[q] += wv * gq[q];
    }
}

DW_CLONES static void dw_unphase(float *restrict dx, const float *restrict dph, int fresh, const gconv_dims *d,
                                 const dw_geom *g)
{
    const int s = d->stride, p = d->pad;
    for (int ih = 0; ih < d->H; ih++) {
        const int r = ih + p;
        float *restrict o = dx + (size_t)ih * d->W;
        const float *restrict s0 = dph + (size_t)((r % s) * s) * g->PS + (size_t)(r / s) * g->Wq;
        if (s == 1) {
            if (fresh)
                for (int iw = 0; iw < d->W; iw++) o[iw] = s0[iw + p];
            else
                for (int iw = 0; iw < d->W; iw++) o[iw] += s0[iw + p];
            continue;
        }
        const float *restrict s1 = s0 + g->PS; /* the layout of dw_phases */
        int iw = 0;
        if (p & 1) {
            o[0] = fresh ? s1[p / 2] : o[0] + s1[p / 2];
            iw = 1;
        }
        const int jb = (iw + p) / 2, npair = (d->W - iw) / 2;
        float *restrict os = o + iw;
        if (fresh)
            for (int m = 0; m < npair; m++) {
                os[2 * m] = s0[jb + m];
                os[2 * m + 1] = s1[jb + m];
            }
        else
            for (int m = 0; m < npair; m++) {
                os[2 * m] += s0[jb + m];
                os[2 * m + 1] += s1[jb + m];
            }
        if (iw + 2 * npair < d->W) os[2 * npair] = fresh ? s0[jb + npair] : os[2 * npair] + s0[jb + npair];
    }
}

static void dw_forward_fast(const gconv_dims *d, const float *x, const float *w, const float *bias, float *y,
                            float *scratch)
{
    const dw_geom g = dw_geometry(d);
    const ptrdiff_t planes = (ptrdiff_t)d->N * d->C;
    const size_t hw = (size_t)d->H * d->W, ohw = (size_t)d->OH * d->OW, per = g.plane + g.Lp;
    const int KK = d->K * d->K;
#pragma omp parallel num_threads(gconv_threads(d))
    {
        float *ph = scratch + (size_t)omp_get_thread_num() * per, *t = ph + g.plane;
        memset(ph, 0, g.plane * sizeof(float)); /* the padding */
#pragma omp for schedule(dynamic, 8)
        for (ptrdiff_t p = 0; p < planes; p++) {
            int c = (int)(p % d->C);
            dw_phases(ph, x + (size_t)p * hw, d, &g);
            dw_fwd_grid(t, ph, w + (size_t)c * KK, d, &g);
            dw_from_grid(y + (size_t)p * ohw, t, bias ? bias[c] : 0.0f, bias != NULL, d, &g);
        }
    }
}

static size_t dw_forward_scratch(const gconv_dims *d)
{
    const dw_geom g = dw_geometry(d);
    return (size_t)gconv_threads(d) * (g.plane + g.Lp);
}

/* One thread per channel: for every sample, the input gradient plane and
 * the channel's weight-gradient lanes, reduced pairwise at the end (a
 * fixed order: the result depends neither on the thread count nor the
 * schedule). */
static void dw_backward_fast(qat_ctx *ctx, const gconv_dims *d, const float *x, const float *w, const float *dy,
                             float *dx, int fresh, float *dw, float *db)
{
    const dw_geom g = dw_geometry(d);
    const size_t hw = (size_t)d->H * d->W, ohw = (size_t)d->OH * d->OW;
    const int KK = d->K * d->K, nt = gconv_threads(d), s1 = dw3_s1(d);
    const size_t T = g.L > (size_t)d->H * g.Wq ? g.L : (size_t)d->H * g.Wq; /* the dx grid */
    const size_t per = g.plane * 2 + g.G + T + 16 + (size_t)KK * DW_LANES;
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    if (!scratch) return;
#pragma omp parallel num_threads(nt)
    {
        float *ph = scratch + (size_t)omp_get_thread_num() * per, *dph = ph + g.plane, *gbuf = dph + g.plane;
        float *t = gbuf + g.G, *acc = t + T + 16;
        float *gq = gbuf + g.Wq + 1; /* dy on the grid, Wq + 1 zeros before it */
        /* only the pixels on the image are ever written: the rest stays 0 */
        memset(ph, 0, g.plane * sizeof(float));
        memset(gbuf, 0, g.G * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < d->C; c++) {
            memset(acc, 0, (size_t)KK * DW_LANES * sizeof(float));
            float bs = 0.0f;
            for (int n = 0; n < d->N; n++) {
                const size_t p = (size_t)n * d->C + (size_t)c;
                const float *gp = dy + p * ohw;
                dw_to_grid(gq, gp, d, &g);
                if (db)
                    for (size_t i = 0; i < ohw; i++) bs += gp[i];
                if (dw) {
                    dw_phases(ph, x + p * hw, d, &g);
                    dw_dw_acc(acc, ph, gq, d, &g);
                }
                if (!dx) continue;
                if (s1) {
                    dw3_dx_s1(dx + p * hw, t, gq, w + (size_t)c * KK, fresh, d, &g);
                    continue;
                }
                memset(dph, 0, g.plane * sizeof(float));
                dw_dx_scatter(dph, gq, w + (size_t)c * KK, d, &g);
                dw_unphase(dx + p * hw, dph, fresh, d, &g);
            }
            if (db) db[c] += bs;
            if (dw)
                for (int k = 0; k < KK; k++) {
                    float l[DW_LANES];
                    memcpy(l, acc + (size_t)k * DW_LANES, sizeof l);
                    for (int wd = DW_LANES / 2; wd >= 1; wd /= 2)
                        for (int j = 0; j < wd; j++) l[j] = l[j] + l[j + wd];
                    dw[(size_t)c * KK + k] += l[0];
                }
        }
    }
}

/* ---- the op ---- */

static void gconv_forward(const gconv_dims *d, const float *x, const float *w, const float *bias, float *y)
{
    const int Cg = d->C / d->groups, OCg = d->OC / d->groups, KK = d->K * d->K;
    const ptrdiff_t planes = (ptrdiff_t)d->N * d->OC;
#pragma omp parallel for num_threads(gconv_threads(d)) schedule(dynamic, 8)
    for (ptrdiff_t p = 0; p < planes; p++) {
        int n = (int)(p / d->OC), o = (int)(p % d->OC), g = o / OCg;
        fwd_plane(y + (size_t)p * d->OH * d->OW, x + ((size_t)n * d->C + (size_t)g * Cg) * d->H * d->W,
                  w + (size_t)o * Cg * KK, bias ? bias[o] : 0.0f, Cg, d);
    }
}

static void gconv_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    const gconv_dims *d = e->saved;
    const int Cg = d->C / d->groups, OCg = d->OC / d->groups, KK = d->K * d->K;
    const size_t hw = (size_t)d->H * d->W, ohw = (size_t)d->OH * d->OW;
    const float *dy = y->grad;
    const int nt = gconv_threads(d);
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh);
    if (dw_fast(d)) {
        float *dwf = qat_grad(ctx, w), *dbf = b ? qat_grad(ctx, b) : NULL;
        dw_backward_fast(ctx, d, x->data, w->data, dy, dx, fresh, dwf, dbf);
        return;
    }
    if (dx) {
        const ptrdiff_t planes = (ptrdiff_t)d->N * d->C;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 8)
        for (ptrdiff_t p = 0; p < planes; p++) {
            int n = (int)(p / d->C), c = (int)(p % d->C), g = c / Cg, ci = c % Cg;
            float *dxp = dx + (size_t)p * hw;
            if (fresh) memset(dxp, 0, hw * sizeof(float));
            dx_plane(dxp, dy + ((size_t)n * d->OC + (size_t)g * OCg) * ohw,
                     w->data + ((size_t)g * OCg * Cg + (size_t)ci) * KK, OCg, (ptrdiff_t)Cg * KK, d);
        }
    }
    float *dw = qat_grad(ctx, w), *db = b ? qat_grad(ctx, b) : NULL;
    if (dw || db) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int o = 0; o < d->OC; o++) {
            int g = o / OCg;
            float bs = 0.0f;
            for (int n = 0; n < d->N; n++) {
                const float *g_ = dy + ((size_t)n * d->OC + o) * ohw;
                if (dw) dw_plane(dw + (size_t)o * Cg * KK, g_, x->data + ((size_t)n * d->C + (size_t)g * Cg) * hw, Cg, d);
                if (db)
                    for (size_t i = 0; i < ohw; i++) bs += g_[i];
            }
            if (db) db[o] += bs;
        }
    }
}

qat_tensor *qat_conv2d_grouped(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b, int stride, int pad,
                               int groups)
{
    if (!x || !w) return NULL;
    if (groups == 1) return qat_conv2d(ctx, x, w, b, stride, pad);
    char sa[64], sb[64];
    if (x->ndim != 4 || w->ndim != 4)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input %s must be [N,C,H,W] and weight %s [OC,C/groups,KH,KW]",
                              qat_shape_str(x, sa, sizeof sa), qat_shape_str(w, sb, sizeof sb));
    if (groups < 1 || x->shape[1] % groups || w->shape[0] % groups)
        return qat_error_null(QAT_ERR_ARG, "conv2d: %d groups do not divide %d input and %d output channels", groups,
                              x->shape[1], w->shape[0]);
    if (x->shape[1] / groups != w->shape[1])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: input has %d channels in %d groups (%d each), weight %s expects %d",
                              x->shape[1], groups, x->shape[1] / groups, qat_shape_str(w, sb, sizeof sb), w->shape[1]);
    if (w->shape[2] != w->shape[3])
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: grouped kernel %dx%d must be square", w->shape[2], w->shape[3]);
    if (stride < 1 || pad < 0)
        return qat_error_null(QAT_ERR_ARG, "conv2d: stride %d / padding %d invalid", stride, pad);
    gconv_dims *d = qat_arena_alloc(ctx, sizeof *d);
    if (!d) return NULL;
    *d = (gconv_dims){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .OC = w->shape[0],
                      .K = w->shape[2], .stride = stride, .pad = pad, .groups = groups};
    if (d->H + 2 * pad < d->K || d->W + 2 * pad < d->K)
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: kernel %dx%d larger than padded input %dx%d", d->K, d->K,
                              d->H + 2 * pad, d->W + 2 * pad);
    if (b && (b->ndim != 1 || b->shape[0] != d->OC))
        return qat_error_null(QAT_ERR_SHAPE, "conv2d: bias must have %d elements", d->OC);
    d->OH = (d->H + 2 * pad - d->K) / stride + 1;
    d->OW = (d->W + 2 * pad - d->K) / stride + 1;
    qat_tensor *y = qat_new(ctx, 4, (int[]){d->N, d->OC, d->OH, d->OW});
    if (!y) return NULL;
    if (dw_fast(d)) {
        float *scratch = qat_arena_alloc(ctx, dw_forward_scratch(d) * sizeof(float));
        if (!scratch) return NULL;
        dw_forward_fast(d, x->data, w->data, b ? b->data : NULL, y->data, scratch);
    } else {
        gconv_forward(d, x->data, w->data, b ? b->data : NULL, y->data);
    }
    qat_tensor *in[3] = {x, w, b};
    if (qat_needs_grad(ctx, 3, in) && qat_tape_record(ctx, "conv2d_grouped", gconv_backward, y, 3, in, d) != QAT_OK)
        return NULL;
    return y;
}
