/* conv2d and pooling; forward and backward side by side.
 *
 * Every convolution is a GEMM over output pixels: C = (output channels) x
 * (pixels), reduction over (input channel, kh, kw). The avx512 engine never
 * builds the im2col matrix for strides up to 4: its kernels read each tap's
 * row straight from an image plane at an offset (autograd/kernels.h):
 *  - "same" (stride 1, 2*pad = kernel-1): x and dy are read in place, lane
 *    masks cover the padding (conv_*_same);
 *  - "valid" (stride 1, pad 0): x is read in place on a W-wide grid whose
 *    last columns are computed and not stored; dy is copied once onto the
 *    same grid (conv_*_valid);
 *  - other strides and paddings: the input is copied into zero-padded
 *    phase planes (stride s: s*s planes, a stride-s conv being a sum of
 *    stride-1 convs of the phases), the input gradient computed per phase
 *    and interleaved back (conv_*_implicit);
 * and in each the input gradient is a convolution of dy with the flipped,
 * transposed kernel, the weight gradient a dot product over pixels.
 * Larger strides use batch-wide im2col chunks with the same kernels; the
 * portable engine runs those chunks through OpenBLAS.
 *
 * Threads take whole images (or fixed groups of images, or chunks of
 * columns) as they come free; each group sums its weight gradient into its
 * own partial, added in group order, so results depend neither on which
 * thread ran what nor on the thread count. */
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

/* Threads for a forward: one below about a million multiply-adds (a
 * batch-1 LeNet layer), where starting a team costs more than it saves. */
static int conv_threads(const conv_dims *d)
{
    double macs = (double)d->N * d->OC * d->C * d->KH * d->KW * d->OH * d->OW;
    return macs < 1e6 ? 1 : qat_get_num_threads();
}

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

/* ---- implicit path: phase planes ----
 *
 * For stride s the zero-padded input splits into s*s phase planes,
 * X_ab[i][j] = xpad[s*i + a][s*j + b], each Hq x Wq. Output pixel (oh, ow)
 * is grid column q = oh*Wq + ow and tap (kh, kw) reads plane
 * X_{kh%s, kw%s} at q + (kh/s)*Wq + kw/s: a stride-s convolution is a sum
 * of stride-1 convolutions of the phases with the kernel's sub-grids. Only
 * the phases some tap reads are stored (a 1x1 stride-2 conv keeps one).
 * For stride 1 there is one phase: the padded plane itself. */

#define MAX_STRIDE 4 /* larger strides use the im2col path */

typedef struct {
    int s, pt, pl;      /* stride; padding at the top and the left */
    int H, W;           /* the source plane */
    int Hq, Wq;         /* each phase plane */
    int na, nb;         /* phases a < na, b < nb are stored */
    ptrdiff_t ps, cs;   /* floats per phase plane (with zeroed slack), per channel */
} ph_geom;

static ph_geom ph_geometry(int s, int pt, int pl, int H, int W, int Hq, int Wq, int na, int nb, int KW)
{
    ph_geom g = {s, pt, pl, H, W, Hq, Wq, na, nb, 0, 0};
    /* slack: reads of grid columns past the last valid one, and the dot
     * kernel's columns up to a multiple of 16 */
    g.ps = round16((ptrdiff_t)Hq * Wq + Wq + KW + 16);
    g.cs = (ptrdiff_t)na * nb * g.ps;
    return g;
}

/* n channels of src (H x W planes) into their phase planes */
static void build_phases(float *dst, const float *src, int n, const ph_geom *g)
{
    for (int c = 0; c < n; c++)
        qat_k_build_phases(dst + c * g->cs, g->ps, src + (size_t)c * g->H * g->W, g->H, g->W, g->s, g->pt,
                           g->pl, g->Hq, g->Wq, g->na, g->nb);
}

/* n planes of src (OH x OW each) laid on a Wq-wide grid (columns OW..Wq-1
 * zero), each plane P floats (zeros after OH*Wq): the one phase of an
 * unpadded plane */
static void grid_planes(float *dst, ptrdiff_t P, const float *src, int n, int OH, int OW, int Wq)
{
    for (int c = 0; c < n; c++)
        qat_k_build_phases(dst + c * P, P, src + (size_t)c * OH * OW, OH, OW, 1, 0, 0, OH, Wq, 1, 1);
}

/* The forward taps: tap (kh, kw) at phase plane (kh%s, kw%s), offset
 * (kh/s)*Wq + kw/s */
static void fwd_taps(ptrdiff_t *koff, const conv_dims *d, const ph_geom *g)
{
    const int s = d->stride;
    for (int kh = 0; kh < d->KH; kh++)
        for (int kw = 0; kw < d->KW; kw++)
            koff[kh * d->KW + kw] = (ptrdiff_t)((kh % s) * g->nb + kw % s) * g->ps +
                                    (ptrdiff_t)(kh / s) * g->Wq + kw / s;
}

/* The input phases of x (padded by pad) */
static ph_geom x_phases(const conv_dims *d)
{
    const int s = d->stride, Hp = d->H + 2 * d->pad, Wp = d->W + 2 * d->pad;
    return ph_geometry(s, d->pad, d->pad, d->H, d->W, (Hp + s - 1) / s, (Wp + s - 1) / s,
                       d->KH < s ? d->KH : s, d->KW < s ? d->KW : s, d->KW);
}

static int use_implicit(const conv_dims *d)
{
    return qat_simd_level() >= QAT_SIMD_AVX2 && d->stride <= MAX_STRIDE;
}

/* Samples of one dW group in the implicit backward: about 512 KB of planes,
 * at least one. */
static int dw_group(ptrdiff_t per_sample_floats)
{
    ptrdiff_t g = 131072 / (per_sample_floats > 0 ? per_sample_floats : 1);
    return g < 1 ? 1 : g > 16 ? 16 : (int)g;
}

/* The backward passes hand out fixed groups of samples to the threads as
 * they come free (a thread the OS has parked does not hold the others
 * back), and each group sums its weight gradient into its own partial;
 * the partials are added in group order, so the result depends neither on
 * which thread ran a group nor on the number of threads. */
static void dw_reduce(float *dw, const float *parts, int ngroups, size_t n)
{
    for (int g = 0; g < ngroups; g++)
        for (size_t i = 0; i < n; i++) dw[i] += parts[(size_t)g * n + i];
}

/* The input gradient of one sample, stride 1 and pad < kernel: the
 * convolution of dy padded by (KH-1-pad, KW-1-pad) with the flipped,
 * transposed kernel, written straight into dx. */
typedef struct {
    ph_geom g;        /* dy padded */
    float *w2p;       /* packed W2 (C, OC*KH*KW) */
    ptrdiff_t *koff;  /* KH*KW taps */
} dx_direct;

/* The input gradient, other cases: phase (a, b) of the padded input
 * gradient is the correlation of dy with the sub-kernel W[.., s*u+a,
 * s*v+b], u < U_a, v < V_b; dy is padded by (Umax-1, Vmax-1) once. */
typedef struct {
    ph_geom g;           /* dy padded */
    int Hq, Wq;          /* the input gradient's phase planes */
    float *wp[MAX_STRIDE * MAX_STRIDE];
    ptrdiff_t *koff[MAX_STRIDE * MAX_STRIDE];
    int kk[MAX_STRIDE * MAX_STRIDE]; /* U_a * V_b taps (0: no tap reaches the phase) */
} dx_phased;

/* dx (fresh: stored, else added) from the s*s phase planes t[ph] (C x Hq
 * x Wq each; NULL: no tap reaches the phase, it contributes nothing) */
static void merge_phases(float *dx, float *const *t, int C, const conv_dims *d, int Hq, int Wq, int fresh)
{
    const int s = d->stride, p = d->pad;
    if (s == 2) {
        /* rows r with (r + p) % 2 == a come from phase row a, every other
         * row; their even columns from phase b = p % 2, odd ones from the
         * other */
        for (int c = 0; c < C; c++)
            for (int a = 0; a < 2; a++) {
                int r0 = (a - p % 2 + 2) % 2, i0 = (r0 + p) / 2, rows = (d->H - r0 + 1) / 2;
                const float *te = t[a * 2 + p % 2], *to = t[a * 2 + (p + 1) % 2];
                const size_t row = ((size_t)c * Hq + i0) * Wq;
                qat_k_interleave2(dx + ((size_t)c * d->H + r0) * d->W, 2 * (ptrdiff_t)d->W,
                                  te ? te + row + p / 2 : NULL, to ? to + row + (p + 1) / 2 : NULL, Wq,
                                  rows, d->W, fresh);
            }
        return;
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < d->H; r++) {
            int a = (r + p) % s, i = (r + p) / s;
            float *o = dx + ((size_t)c * d->H + r) * d->W;
            const size_t row = ((size_t)c * Hq + i) * Wq;
            for (int col = 0; col < d->W; col++) {
                const float *tb = t[a * s + (col + p) % s];
                float v = tb ? tb[row + (size_t)((col + p) / s)] : -0.0f;
                if (fresh)
                    o[col] = 0.0f + v;
                else
                    o[col] += v;
            }
        }
}

static void conv_backward_implicit(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int C = d->C, OC = d->OC, KH = d->KH, KW = d->KW, KK = KH * KW, K = C * KK, s = d->stride;
    const int ohw = d->OH * d->OW, hw = d->H * d->W;
    /* dx is written in full: a fresh gradient is overwritten, an existing
     * one added into */
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh), *dw = qat_grad(ctx, w);
    /* dW: x phases as in forward, dy on the same Wq-wide grid */
    const ph_geom xg = x_phases(d);
    const ptrdiff_t P = round16((ptrdiff_t)d->OH * xg.Wq);
    const ptrdiff_t xs = (ptrdiff_t)C * xg.cs, ys = (ptrdiff_t)OC * P;
    const int direct = s == 1 && d->pad < KH && d->pad < KW;
    dx_direct dd;
    dx_phased dp;
    ptrdiff_t dy_floats = 0, t_floats = 0;
    if (dx && direct) {
        dd.g = ph_geometry(1, KH - 1 - d->pad, KW - 1 - d->pad, d->OH, d->OW, d->OH + 2 * (KH - 1 - d->pad),
                           d->OW + 2 * (KW - 1 - d->pad), 1, 1, KW);
        dy_floats = OC * dd.g.cs;
    } else if (dx) {
        const int Um = (KH + s - 1) / s, Vm = (KW + s - 1) / s;
        dp.Hq = xg.Hq;
        dp.Wq = xg.Wq;
        int Hd = dp.Hq + Um - 1 > d->OH + 2 * (Um - 1) ? dp.Hq + Um - 1 : d->OH + 2 * (Um - 1);
        int Wd = dp.Wq + Vm - 1 > d->OW + 2 * (Vm - 1) ? dp.Wq + Vm - 1 : d->OW + 2 * (Vm - 1);
        dp.g = ph_geometry(1, Um - 1, Vm - 1, d->OH, d->OW, Hd, Wd, 1, 1, KW);
        dy_floats = OC * dp.g.cs;
        t_floats = (ptrdiff_t)s * s * C * dp.Hq * dp.Wq;
    }
    /* A "same" convolution pads dy by pad for its input gradient, and that
     * plane, read from offset pad*Wq + pad, is dy on the Wq-wide grid of
     * the weight gradient (zero columns and rows included): one copy of dy
     * serves both. */
    const int shared = dw && dx && direct && KH - 1 - d->pad == d->pad && KW - 1 - d->pad == d->pad;
    const ptrdiff_t shift = shared ? (ptrdiff_t)d->pad * xg.Wq + d->pad : 0;
    const ptrdiff_t yst = shared ? dy_floats : ys; /* between the samples' dy planes */
    const int G = dw ? dw_group(xs + yst) : 1, ng = (d->N + G - 1) / G;
    int nt = qat_get_num_threads();
    if (nt > ng) nt = ng;
    const size_t per = (dw ? (size_t)G * xs : 0) + (dw && !shared ? (size_t)G * ys : 0) +
                       (size_t)(shared ? G : 1) * (size_t)dy_floats + (size_t)t_floats;
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float) + 64);
    float *parts = dw ? qat_arena_alloc(ctx, (size_t)ng * OC * K * sizeof(float)) : NULL;
    float *wpk = dx ? qat_arena_alloc(ctx, 2 * (size_t)K * OC * sizeof(float)) : NULL;
    ptrdiff_t *koff = qat_arena_alloc(ctx, 2 * (size_t)KK * sizeof(ptrdiff_t));
    if (!scratch || !koff || (dx && !wpk) || (dw && !parts)) return; /* out of memory: error is set */
    fwd_taps(koff, d, &xg);
    if (dx && direct) {
        /* W2(c, (oc, kh, kw)) = W(oc, c, KH-1-kh, KW-1-kw), packed */
        float *w2 = wpk + (size_t)K * OC;
        for (int c = 0; c < C; c++)
            for (int o = 0; o < OC; o++)
                for (int q = 0; q < KK; q++)
                    w2[((size_t)c * OC + o) * KK + q] = w->data[((size_t)o * C + c) * KK + (KK - 1 - q)];
        qat_pack_a(wpk, w2, (ptrdiff_t)OC * KK, 1, C, OC * KK);
        dd.w2p = wpk;
        dd.koff = koff + KK;
        for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) dd.koff[kh * KW + kw] = (ptrdiff_t)kh * dd.g.Wq + kw;
    } else if (dx) {
        float *wa = wpk + (size_t)K * OC, *wo = wpk;
        ptrdiff_t *ko = koff + KK;
        const int Pt = dp.g.pt, Pl = dp.g.pl;
        for (int a = 0; a < s; a++)
            for (int b = 0; b < s; b++) {
                int ph = a * s + b, U = a < KH ? (KH - a + s - 1) / s : 0, V = b < KW ? (KW - b + s - 1) / s : 0;
                dp.kk[ph] = U * V;
                dp.wp[ph] = wo;
                dp.koff[ph] = ko;
                if (!U || !V) continue;
                /* A(c, (oc, u, v)) = W(oc, c, s*u + a, s*v + b); tap (u, v)
                 * reads dy padded at (Pt - u, Pl - v) from the grid column */
                for (int c = 0; c < C; c++)
                    for (int o = 0; o < OC; o++)
                        for (int u = 0; u < U; u++)
                            for (int v = 0; v < V; v++)
                                wa[(((size_t)c * OC + o) * U + u) * V + v] =
                                    w->data[(((size_t)o * C + c) * KH + s * u + a) * KW + s * v + b];
                qat_pack_a(wo, wa, (ptrdiff_t)OC * U * V, 1, C, OC * U * V);
                for (int u = 0; u < U; u++)
                    for (int v = 0; v < V; v++) ko[u * V + v] = (ptrdiff_t)(Pt - u) * dp.g.Wq + (Pl - v);
                wo += (size_t)C * OC * U * V;
                ko += U * V;
            }
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *xp = scratch + (size_t)t * per, *yg = xp + (dw ? (size_t)G * xs : 0);
        float *yq = yg + (dw && !shared ? (size_t)G * ys : 0), *tq = yq + (size_t)(shared ? G : 1) * dy_floats;
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            const ptrdiff_t s0 = (ptrdiff_t)gi * G;
            const int ns = d->N - s0 < G ? (int)(d->N - s0) : G;
            float *dwp = dw ? parts + (size_t)gi * OC * K : NULL; /* [OC][K] */
            if (dwp) memset(dwp, 0, (size_t)OC * K * sizeof(float));
            if (shared)
                for (int k = 0; k < ns; k++)
                    build_phases(yq + k * yst, y->grad + (size_t)(s0 + k) * OC * ohw, OC, &dd.g);
            if (dw) {
                for (int k = 0; k < ns; k++) {
                    build_phases(xp + k * xs, x->data + (size_t)(s0 + k) * C * hw, C, &xg);
                    if (!shared)
                        grid_planes(yg + k * ys, P, y->grad + (size_t)(s0 + k) * OC * ohw, OC, d->OH, d->OW,
                                    xg.Wq);
                }
                /* dW (OC, K) += dy-grid (OC, P) . x taps (K, P) */
                qat_brows br = {C, KK, xg.cs, koff, NULL, 0};
                if (shared)
                    qat_gemm_dot(OC, (int)P, ns, yq + shift, dd.g.cs, yst, xp, &br, xs, NULL, dwp, K);
                else
                    qat_gemm_dot(OC, (int)P, ns, yg, P, ys, xp, &br, xs, NULL, dwp, K);
            }
            if (!dx) continue;
            for (int k = 0; k < ns; k++) {
                const float *dyk = y->grad + (size_t)(s0 + k) * OC * ohw;
                float *dxk = dx + (size_t)(s0 + k) * C * hw;
                if (direct) {
                    float *yk = shared ? yq + k * yst : yq;
                    if (!shared) build_phases(yq, dyk, OC, &dd.g);
                    /* dx (C, H x Wq grid) (+)= W2 (C, OC*KK) . dy taps */
                    qat_brows br = {OC, KK, dd.g.cs, dd.koff, NULL, 0};
                    qat_cmat cm = {dxk, hw, dd.g.Wq, d->W, d->W};
                    qat_gemm_bcast(C, d->H * dd.g.Wq, dd.w2p, yk, &br, fresh ? QAT_C_ZERO : QAT_C_ADD, NULL,
                                   &cm, 0);
                    continue;
                }
                build_phases(yq, dyk, OC, &dp.g);
                float *tp[MAX_STRIDE * MAX_STRIDE];
                for (int ph = 0; ph < s * s; ph++) {
                    tp[ph] = dp.kk[ph] ? tq + (size_t)ph * C * dp.Hq * dp.Wq : NULL;
                    if (!tp[ph]) continue; /* no tap reaches these pixels */
                    /* phase plane (C, Hq x Wd grid) = Wab (C, OC*U*V) . dy taps */
                    qat_brows br = {OC, dp.kk[ph], dp.g.cs, dp.koff[ph], NULL, 0};
                    qat_cmat cm = {tp[ph], (ptrdiff_t)dp.Hq * dp.Wq, dp.g.Wq, dp.Wq, dp.Wq};
                    qat_gemm_bcast(C, dp.Hq * dp.g.Wq, dp.wp[ph], yq, &br, QAT_C_ZERO, NULL, &cm, 0);
                }
                merge_phases(dxk, tp, C, d, dp.Hq, dp.Wq, fresh);
            }
        }
    }
    if (dw) dw_reduce(dw, parts, ng, (size_t)OC * K);
}

static int conv_forward_implicit(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                                 const float *bias, float *y)
{
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK, ohw = d->OH * d->OW;
    const ph_geom xg = x_phases(d);
    const ptrdiff_t xs = (ptrdiff_t)C * xg.cs, cols = (ptrdiff_t)d->OH * xg.Wq;
    int nt = conv_threads(d);
    /* fewer samples than threads (inference of one image): the threads
     * split each image's columns, the phases are built first */
    const int by_cols = d->N < nt;
    if (!by_cols && nt > d->N) nt = d->N;
    float *scratch = qat_arena_alloc(ctx, (size_t)(by_cols ? d->N : nt) * xs * sizeof(float));
    float *wp = qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float));
    ptrdiff_t *koff = qat_arena_alloc(ctx, (size_t)KK * sizeof(ptrdiff_t));
    if (!scratch || !wp || !koff) return -1;
    qat_pack_a(wp, w, K, 1, OC, K);
    fwd_taps(koff, d, &xg);
    qat_brows br = {C, KK, xg.cs, koff, NULL, 0};
    const int mode = bias ? QAT_C_BIAS : QAT_C_ZERO;
    if (by_cols)
        for (int s = 0; s < d->N; s++) build_phases(scratch + s * xs, x + (size_t)s * C * d->H * d->W, C, &xg);
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        if (by_cols) {
            ptrdiff_t lo, hi;
            split_range(cols, nth, t, QAT_NR, &lo, &hi);
            for (int s = 0; s < d->N && lo < hi; s++) {
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, xg.Wq, d->OW, d->OW};
                qat_gemm_bcast(OC, (int)(hi - lo), wp, scratch + s * xs + lo, &br, mode, bias, &cm, lo);
            }
        } else {
            float *xp = scratch + (size_t)t * xs;
#pragma omp for schedule(dynamic, 1)
            for (int s = 0; s < d->N; s++) {
                build_phases(xp, x + (size_t)s * C * d->H * d->W, C, &xg);
                /* y (OC, OH x Wq grid) = W (OC, K) . x taps */
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, xg.Wq, d->OW, d->OW};
                qat_gemm_bcast(OC, (int)cols, wp, xp, &br, mode, bias, &cm, 0);
            }
        }
    }
    return 0;
}

/* ---- "same" convolutions: no copies at all ----
 *
 * Stride 1 with 2*pad = KH-1 = KW-1 keeps the image size, so output pixel q
 * (0 <= q < H*W) reads tap (kh, kw) at q + (kh-pad)*W + (kw-pad) of the
 * unpadded input plane: the GEMMs read x and dy in place, with lane masks
 * for the taps that fall into the padding (the same masks for the forward,
 * whose taps they are, and the input gradient, a "same" convolution of dy
 * with the flipped kernel). */

static int is_same(const conv_dims *d)
{
    return qat_simd_level() >= QAT_SIMD_AVX2 && d->stride == 1 && 2 * d->pad == d->KH - 1 &&
           2 * d->pad == d->KW - 1;
}

typedef struct {
    ptrdiff_t *koff; /* KH*KW tap offsets */
    uint32_t *m32;   /* [strip][KK]: the bcast kernel's masks of 32-column strips */
    uint16_t *m16;   /* [vector][KK + 1]: the dot kernel's, entry KK the image's own pixels */
} same_taps;

/* Sets bits [q0, q1) of tap q in a table of 32-bit strip masks ([strip][kk],
 * may be NULL) and one of 16-bit vector masks ([vector][kk16], may be
 * NULL): a run at a time, so building the tables costs little next to a
 * batch-1 forward. */
static void mask_run(uint32_t *m32, int kk, uint16_t *m16, int kk16, int q, int q0, int q1)
{
    for (int px = q0; px < q1;) {
        int w = px / 32, b1 = q1 - w * 32 < 32 ? q1 - w * 32 : 32;
        uint32_t bits = (b1 == 32 ? 0xffffffffu : (1u << b1) - 1u) & ~((1u << (px % 32)) - 1u);
        if (m32) m32[(size_t)w * kk + q] |= bits;
        if (m16) {
            m16[(size_t)(2 * w) * kk16 + q] |= (uint16_t)(bits & 0xffffu);
            if (bits >> 16) m16[(size_t)(2 * w + 1) * kk16 + q] |= (uint16_t)(bits >> 16);
        }
        px = w * 32 + b1;
    }
}

static int same_taps_make(qat_ctx *ctx, const conv_dims *d, same_taps *t)
{
    const int H = d->H, W = d->W, HW = H * W, KK = d->KH * d->KW, p = d->pad;
    const int ns = (HW + 31) / 32, nv = 2 * ns;
    t->koff = qat_arena_alloc(ctx, (size_t)KK * sizeof(ptrdiff_t));
    t->m32 = qat_arena_alloc(ctx, (size_t)ns * KK * sizeof(uint32_t));
    t->m16 = qat_arena_alloc(ctx, (size_t)nv * (KK + 1) * sizeof(uint16_t));
    if (!t->koff || !t->m32 || !t->m16) return -1;
    memset(t->m32, 0, (size_t)ns * KK * sizeof(uint32_t));
    memset(t->m16, 0, (size_t)nv * (KK + 1) * sizeof(uint16_t));
    for (int kh = 0; kh < d->KH; kh++)
        for (int kw = 0; kw < d->KW; kw++) {
            int q = kh * d->KW + kw;
            t->koff[q] = (ptrdiff_t)(kh - p) * W + (kw - p);
            /* output pixel (oh, ow) reads (oh + kh - p, ow + kw - p) */
            int c0 = p - kw > 0 ? p - kw : 0, c1 = W + p - kw < W ? W + p - kw : W;
            for (int oh = 0; oh < H; oh++)
                if (oh + kh - p >= 0 && oh + kh - p < H && c0 < c1)
                    mask_run(t->m32, KK, t->m16, KK + 1, q, oh * W + c0, oh * W + c1);
        }
    mask_run(NULL, 0, t->m16, KK + 1, KK, 0, HW);
    return 0;
}

static int conv_forward_same(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                             const float *bias, float *y)
{
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK, HW = d->H * d->W;
    same_taps tp;
    float *wp = qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float));
    if (!wp || same_taps_make(ctx, d, &tp)) return -1;
    qat_pack_a(wp, w, K, 1, OC, K);
    const int mode = bias ? QAT_C_BIAS : QAT_C_ZERO;
    int nt = conv_threads(d);
    /* fewer samples than threads (inference of one image): the threads
     * split each image's columns */
    const int by_cols = d->N < nt;
    if (!by_cols && nt > d->N) nt = d->N;
#pragma omp parallel num_threads(nt)
    {
        if (by_cols) { /* a share of each image's columns */
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            ptrdiff_t lo, hi;
            split_range(HW, nth, t, QAT_NR, &lo, &hi);
            qat_brows br = {C, KK, HW, tp.koff, tp.m32 + (lo / QAT_NR) * KK, 0};
            for (int s = 0; s < d->N && lo < hi; s++) {
                qat_cmat cm = {y + (size_t)s * OC * HW, HW, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                qat_gemm_bcast(OC, (int)(hi - lo), wp, x + (size_t)s * C * HW + lo, &br, mode, bias, &cm, lo);
            }
        } else { /* whole images, handed out as threads come free */
#pragma omp for schedule(dynamic, 1)
            for (int s = 0; s < d->N; s++) {
                /* y (OC, HW) = W (OC, K) . x taps */
                qat_brows br = {C, KK, HW, tp.koff, tp.m32, QAT_OUT_UNREADABLE};
                qat_cmat cm = {y + (size_t)s * OC * HW, HW, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                qat_gemm_bcast(OC, HW, wp, x + (size_t)s * C * HW, &br, mode, bias, &cm, 0);
            }
        }
    }
    return 0;
}

static void conv_backward_same(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK, HW = d->H * d->W;
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh), *dw = qat_grad(ctx, w);
    /* dW samples in groups whose x and dy stay in cache while every tile of
     * dW passes over them */
    const int G = dw_group((ptrdiff_t)(C + OC) * HW), ng = (d->N + G - 1) / G;
    int nt = qat_get_num_threads();
    if (nt > ng) nt = ng;
    same_taps tp;
    float *parts = dw ? qat_arena_alloc(ctx, (size_t)ng * OC * K * sizeof(float)) : NULL;
    float *w2p = dx ? qat_arena_alloc(ctx, 2 * (size_t)K * OC * sizeof(float)) : NULL;
    if ((dw && !parts) || (dx && !w2p) || same_taps_make(ctx, d, &tp)) return; /* error is set */
    if (dx) {
        /* W2(c, (oc, kh, kw)) = W(oc, c, KH-1-kh, KW-1-kw), packed */
        float *w2 = w2p + (size_t)K * OC;
        for (int c = 0; c < C; c++)
            for (int o = 0; o < OC; o++)
                for (int q = 0; q < KK; q++)
                    w2[((size_t)c * OC + o) * KK + q] = w->data[((size_t)o * C + c) * KK + (KK - 1 - q)];
        qat_pack_a(w2p, w2, (ptrdiff_t)OC * KK, 1, C, OC * KK);
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int gi = 0; gi < ng; gi++) {
        const ptrdiff_t s0 = (ptrdiff_t)gi * G;
        const int ns = d->N - s0 < G ? (int)(d->N - s0) : G;
        {
            if (dw) {
                float *dwp = parts + (size_t)gi * OC * K;
                memset(dwp, 0, (size_t)OC * K * sizeof(float));
                /* dW (OC, K) += dy (OC, HW) . x taps (K, HW); away from the
                 * batch's first and last sample, the taps' reads past a plane
                 * land in x itself */
                qat_brows br = {C, KK, HW, tp.koff, NULL, QAT_OUT_UNREADABLE};
                qat_gemm_dot(OC, HW, ns, y->grad + (size_t)s0 * OC * HW, HW, (ptrdiff_t)OC * HW,
                             x->data + (size_t)s0 * C * HW, &br, (ptrdiff_t)C * HW, tp.m16, dwp, K);
            }
            if (dx)
                for (ptrdiff_t s = s0; s < s0 + ns; s++) {
                    /* dx (C, HW) (+)= W2 (C, OC*KK) . dy taps */
                    qat_brows br = {OC, KK, HW, tp.koff, tp.m32, QAT_OUT_UNREADABLE};
                    qat_cmat cm = {dx + (size_t)s * C * HW, HW, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                    qat_gemm_bcast(C, HW, w2p, y->grad + (size_t)s * OC * HW, &br, fresh ? QAT_C_ZERO : QAT_C_ADD,
                                   NULL, &cm, 0);
                }
        }
    }
    if (dw) dw_reduce(dw, parts, ng, (size_t)OC * K);
}

/* ---- stride 1, no padding ("valid"): x read in place ----
 *
 * Output pixel (oh, ow) is column q = oh*W + ow of a W-wide grid (columns
 * OW..W-1 are computed and not stored) and tap (kh, kw) reads x at
 * q + kh*W + kw: the input planes are read in place, the masks only keep
 * the reads inside the tensor. dy is copied once per sample onto the same
 * grid (zero columns OW..W-1) between KH zero rows above and below: the
 * weight gradient is a dot product over that grid, and the input gradient
 * a convolution of it with the flipped kernel whose output is dx itself. */

static int is_valid_conv(const conv_dims *d)
{
    return qat_simd_level() >= QAT_SIMD_AVX2 && d->stride == 1 && d->pad == 0;
}

typedef struct {
    ptrdiff_t *koff; /* KH*KW: kh*W + kw */
    uint32_t *m32;   /* [strip][KK] over the OH*W grid columns */
    uint16_t *m16;   /* [vector][KK + 1] */
    uint32_t *mdx;   /* [strip][KK] over dx's H*W pixels: the flipped kernel's
                      * taps that read dy, not its zero border (only to skip
                      * the taps that read nothing in a tile) */
} valid_taps;

static int valid_taps_make(qat_ctx *ctx, const conv_dims *d, valid_taps *t)
{
    const int W = d->W, HW = d->H * W, KK = d->KH * d->KW, G = d->OH * W;
    const int ns = (G + 31) / 32, nv = 2 * ns, nsx = (HW + 31) / 32;
    t->koff = qat_arena_alloc(ctx, (size_t)KK * sizeof(ptrdiff_t));
    t->m32 = qat_arena_alloc(ctx, (size_t)ns * KK * sizeof(uint32_t));
    t->m16 = qat_arena_alloc(ctx, (size_t)nv * (KK + 1) * sizeof(uint16_t));
    t->mdx = qat_arena_alloc(ctx, (size_t)nsx * KK * sizeof(uint32_t));
    if (!t->koff || !t->m32 || !t->m16 || !t->mdx) return -1;
    memset(t->m32, 0, (size_t)ns * KK * sizeof(uint32_t));
    memset(t->m16, 0, (size_t)nv * (KK + 1) * sizeof(uint16_t));
    memset(t->mdx, 0, (size_t)nsx * KK * sizeof(uint32_t));
    for (int q = 0; q < KK; q++) {
        int kh = q / d->KW, kw = q % d->KW;
        t->koff[q] = (ptrdiff_t)kh * W + kw;
        /* grid column px reads x at px + koff: inside the plane below HW */
        mask_run(t->m32, KK, t->m16, KK + 1, q, 0, G < HW - (int)t->koff[q] ? G : HW - (int)t->koff[q]);
        /* dx pixel (r, c) reads dy at (r + kh - KH + 1, c + kw - KW + 1) */
        int c0 = d->KW - 1 - kw, c1 = c0 + d->OW;
        for (int r = 0; r < d->H; r++)
            if (r + kh - (d->KH - 1) >= 0 && r + kh - (d->KH - 1) < d->OH)
                mask_run(t->mdx, KK, NULL, 0, q, r * W + c0, r * W + c1);
    }
    mask_run(NULL, 0, t->m16, KK + 1, KK, 0, G);
    return 0;
}

static int conv_forward_valid(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                              const float *bias, float *y)
{
    const int C = d->C, OC = d->OC, KK = d->KH * d->KW, K = C * KK, HW = d->H * d->W;
    const int ohw = d->OH * d->OW, cols = d->OH * d->W;
    valid_taps tp;
    float *wp = qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float));
    if (!wp || valid_taps_make(ctx, d, &tp)) return -1;
    qat_pack_a(wp, w, K, 1, OC, K);
    const int mode = bias ? QAT_C_BIAS : QAT_C_ZERO;
    int nt = conv_threads(d);
    const int by_cols = d->N < nt;
    if (!by_cols && nt > d->N) nt = d->N;
#pragma omp parallel num_threads(nt)
    {
        if (by_cols) { /* a share of each image's columns */
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            ptrdiff_t lo, hi;
            split_range(cols, nth, t, QAT_NR, &lo, &hi);
            qat_brows br = {C, KK, HW, tp.koff, tp.m32 + (lo / QAT_NR) * KK, 0};
            for (int s = 0; s < d->N && lo < hi; s++) {
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, d->W, d->OW, d->OW};
                qat_gemm_bcast(OC, (int)(hi - lo), wp, x + (size_t)s * C * HW + lo, &br, mode, bias, &cm, lo);
            }
        } else { /* whole images, handed out as threads come free */
#pragma omp for schedule(dynamic, 1)
            for (int s = 0; s < d->N; s++) {
                /* y (OC, OH x W grid) = W (OC, K) . x taps; only the last
                 * image's reads can leave x (the lanes past a plane are
                 * grid columns that are not stored) */
                qat_brows br = {C, KK, HW, tp.koff, s < d->N - 1 ? NULL : tp.m32, 0};
                qat_cmat cm = {y + (size_t)s * OC * ohw, ohw, d->W, d->OW, d->OW};
                qat_gemm_bcast(OC, cols, wp, x + (size_t)s * C * HW, &br, mode, bias, &cm, 0);
            }
        }
    }
    return 0;
}

static void conv_backward_valid(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int C = d->C, OC = d->OC, KH = d->KH, KW = d->KW, KK = KH * KW, K = C * KK;
    const int W = d->W, HW = d->H * W, ohw = d->OH * d->OW, cols = d->OH * W;
    int fresh;
    float *dx = qat_grad_fresh(ctx, x, &fresh), *dw = qat_grad(ctx, w);
    /* dy grid plane: KH zero rows, OH rows of W (OW values, then zeros),
     * KH zero rows, and slack for the dot kernel's last vector */
    const ptrdiff_t top = (ptrdiff_t)KH * W, ps = round16(top + cols + top + 16);
    const ptrdiff_t ys = (ptrdiff_t)OC * ps;
    const int G = dw ? dw_group((ptrdiff_t)C * HW + ys) : 1, ng = (d->N + G - 1) / G;
    int nt = qat_get_num_threads();
    if (nt > ng) nt = ng;
    const size_t per = (size_t)G * ys;
    valid_taps tp;
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *parts = dw ? qat_arena_alloc(ctx, (size_t)ng * OC * K * sizeof(float)) : NULL;
    if (dw && !parts) return;
    float *w2p = dx ? qat_arena_alloc(ctx, 2 * (size_t)K * OC * sizeof(float)) : NULL;
    ptrdiff_t *koff2 = qat_arena_alloc(ctx, (size_t)KK * sizeof(ptrdiff_t));
    if (!scratch || !koff2 || (dx && !w2p) || valid_taps_make(ctx, d, &tp)) return; /* error is set */
    if (dx) {
        /* W2(c, (oc, kh, kw)) = W(oc, c, KH-1-kh, KW-1-kw), packed; its tap
         * (kh, kw) reads dy at (kh - KH + 1)*W + kw - KW + 1 from the pixel */
        float *w2 = w2p + (size_t)K * OC;
        for (int c = 0; c < C; c++)
            for (int o = 0; o < OC; o++)
                for (int q = 0; q < KK; q++)
                    w2[((size_t)c * OC + o) * KK + q] = w->data[((size_t)o * C + c) * KK + (KK - 1 - q)];
        qat_pack_a(w2p, w2, (ptrdiff_t)OC * KK, 1, C, OC * KK);
        for (int q = 0; q < KK; q++) koff2[q] = (ptrdiff_t)(q / KW - KH + 1) * W + (q % KW - KW + 1);
    }
#pragma omp parallel num_threads(nt)
    {
        float *yg = scratch + (size_t)omp_get_thread_num() * per;
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            const ptrdiff_t s0 = (ptrdiff_t)gi * G;
            const int ns = d->N - s0 < G ? (int)(d->N - s0) : G;
            float *dwp = dw ? parts + (size_t)gi * OC * K : NULL;
            if (dwp) memset(dwp, 0, (size_t)OC * K * sizeof(float));
            for (int k = 0; k < ns; k++) {
                const float *dyk = y->grad + (size_t)(s0 + k) * OC * ohw;
                for (int o = 0; o < OC; o++) {
                    float *pl = yg + k * ys + o * ps;
                    memset(pl, 0, (size_t)top * sizeof(float));
                    grid_planes(pl + top, ps - top, dyk + (size_t)o * ohw, 1, d->OH, d->OW, W);
                }
            }
            if (dw) {
                /* dW (OC, K) += dy grid (OC, OH*W) . x taps (reads past the
                 * last plane of a sample land in x unless it is the last) */
                qat_brows br = {C, KK, HW, tp.koff, NULL, QAT_OUT_UNREADABLE};
                qat_gemm_dot(OC, cols, ns, yg + top, ps, ys, x->data + (size_t)s0 * C * HW, &br,
                             (ptrdiff_t)C * HW, tp.m16, dwp, K);
            }
            if (dx)
                for (int k = 0; k < ns; k++) {
                    /* dx (C, HW) (+)= W2 (C, OC*KK) . dy grid taps */
                    qat_brows br = {OC, KK, ps, koff2, tp.mdx, QAT_OUT_ZERO};
                    qat_cmat cm = {dx + (size_t)(s0 + k) * C * HW, HW, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                    qat_gemm_bcast(C, HW, w2p, yg + k * ys + top, &br, fresh ? QAT_C_ZERO : QAT_C_ADD, NULL,
                                   &cm, 0);
                }
        }
    }
    if (dw) dw_reduce(dw, parts, ng, (size_t)OC * K);
}

/* ---- im2col paths (avx512 kernels or OpenBLAS) ---- */

static void conv_backward_im2col(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *y = e->out;
    const conv_dims *d = e->saved;
    const int K = d->C * d->KH * d->KW, OC = d->OC, ohw = d->OH * d->OW;
    const ptrdiff_t L = (ptrdiff_t)d->N * ohw;
    float *dx = qat_grad(ctx, x), *dw = qat_grad(ctx, w);
    const int simd = qat_simd_level() >= QAT_SIMD_AVX2;
    const int Lc = chunk_cols(K);
    /* groups of whole samples (col2im of a sample stays in one thread),
     * about a chunk of columns each */
    const int G = ohw >= Lc ? 1 : Lc / ohw, ng = (d->N + G - 1) / G;
    int nt = qat_get_num_threads();
    if (nt > ng) nt = ng;
    const size_t kc = (size_t)K * Lc, oc = (size_t)OC * Lc, kw = (size_t)K * OC;
    /* per thread: im2col, dy gathered, dcol */
    const size_t per = (dw ? kc : 0) + oc + (dx ? kc : 0);
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *parts = dw ? qat_arena_alloc(ctx, (size_t)ng * kw * sizeof(float)) : NULL;
    float *wtp = dx && simd ? qat_arena_alloc(ctx, kw * sizeof(float)) : NULL;
    if (!scratch || (dx && simd && !wtp) || (dw && !parts)) return; /* out of memory: error is set */
    if (wtp) qat_pack_a(wtp, w->data, 1, K, K, OC); /* A(k, oc) = W[oc][k] */
    static const ptrdiff_t zero_off[1] = {0};
#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + (size_t)omp_get_thread_num() * per;
        float *dyc = col + (dw ? kc : 0), *dcol = dyc + oc;
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            const ptrdiff_t lo = (ptrdiff_t)gi * G * ohw, hi = lo + (ptrdiff_t)G * ohw < L ? lo + (ptrdiff_t)G * ohw : L;
            float *dwp = dw ? parts + (size_t)gi * kw : NULL; /* [OC][K] */
            if (dwp) memset(dwp, 0, kw * sizeof(float));
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
                        qat_brows br = {K, 1, ld, zero_off, NULL, 0};
                        qat_gemm_dot(OC, (int)ld, 1, dyc, ld, 0, col, &br, 0, NULL, dwp, K);
                    } else {
                        qat_sgemm(0, 1, OC, K, (int)n, 1.0f, dyc, (int)ld, col, (int)ld, 1.0f, dwp, K);
                    }
                }
                if (dx) {
                    /* dcol (K,n) = W^T (K,OC) dy (OC,n) */
                    if (simd) {
                        qat_brows br = {OC, 1, ld, zero_off, NULL, 0};
                        qat_cmat cm = {dcol, ld, PTRDIFF_MAX, PTRDIFF_MAX, 0};
                        qat_gemm_bcast(K, (int)n, wtp, dyc, &br, QAT_C_ZERO, NULL, &cm, 0);
                    } else {
                        qat_sgemm(1, 0, K, (int)n, OC, 1.0f, w->data, K, dyc, (int)ld, 0.0f, dcol, (int)ld);
                    }
                    col2im_range(dx, dcol, ld, d, g, g + n);
                }
            }
        }
    }
    if (dw) dw_reduce(dw, parts, ng, kw);
}

static int conv_forward_im2col(qat_ctx *ctx, const conv_dims *d, const float *x, const float *w,
                               const float *bias, float *y)
{
    const int K = d->C * d->KH * d->KW, OC = d->OC, ohw = d->OH * d->OW;
    const ptrdiff_t L = (ptrdiff_t)d->N * ohw;
    const int simd = qat_simd_level() >= QAT_SIMD_AVX2;
    /* chunks of Lc columns (of the batch's pixels), handed out as threads
     * come free */
    const int Lc = chunk_cols(K);
    const ptrdiff_t nchunks = (L + Lc - 1) / Lc;
    int nt = conv_threads(d);
    if (nt > nchunks) nt = (int)nchunks;
    size_t per = (size_t)K * Lc + (simd ? 0 : (size_t)OC * Lc);
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    float *wp = simd ? qat_arena_alloc(ctx, (size_t)OC * K * sizeof(float)) : NULL;
    if (!scratch || (simd && !wp)) return -1;
    if (wp) qat_pack_a(wp, w, K, 1, OC, K);
    static const ptrdiff_t zero_off[1] = {0};
#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + (size_t)omp_get_thread_num() * per, *tmp = col + (size_t)K * Lc;
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t ci = 0; ci < nchunks; ci++) {
            ptrdiff_t g = ci * Lc, n = L - g < Lc ? L - g : Lc;
            im2col_range(col, n, x, d, g, g + n);
            /* y (OC, n) = W (OC,K) col (K,n) [+ b] */
            if (simd) {
                qat_brows br = {K, 1, n, zero_off, NULL, 0};
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
        if (is_same(d))
            conv_backward_same(ctx, e);
        else if (is_valid_conv(d))
            conv_backward_valid(ctx, e);
        else if (use_implicit(d))
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
    int rc = is_same(d)         ? conv_forward_same(ctx, d, x->data, w->data, bias, y->data)
             : is_valid_conv(d) ? conv_forward_valid(ctx, d, x->data, w->data, bias, y->data)
             : use_implicit(d)  ? conv_forward_implicit(ctx, d, x->data, w->data, bias, y->data)
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

/* [N,C,(H+2pad-k)/stride+1,(W+2pad-k)/stride+1]; pad in [0, k/2] (PyTorch's
 * bound: every window then holds an input element). */
static qat_tensor *pool_out(qat_ctx *ctx, const char *op, qat_tensor *x, int k, int stride, int pad)
{
    if (x->ndim != 4) return qat_error_null(QAT_ERR_SHAPE, "%s: input must be [N,C,H,W]", op);
    if (k < 1 || stride < 1) return qat_error_null(QAT_ERR_ARG, "%s: kernel %d / stride %d invalid", op, k, stride);
    if (pad < 0 || pad > k / 2)
        return qat_error_null(QAT_ERR_ARG, "%s: padding %d outside [0, %d] (at most half the kernel %d)", op, pad,
                              k / 2, k);
    if (x->shape[2] + 2 * pad < k || x->shape[3] + 2 * pad < k)
        return qat_error_null(QAT_ERR_SHAPE, "%s: kernel %d larger than input %dx%d", op, k, x->shape[2] + 2 * pad,
                              x->shape[3] + 2 * pad);
    int OH = (x->shape[2] + 2 * pad - k) / stride + 1, OW = (x->shape[3] + 2 * pad - k) / stride + 1;
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
#pragma omp parallel for if (x->numel > 32768) schedule(dynamic, 16)
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

/* Max pool with padding (windows clipped to the input: the padding is
 * -inf and never wins); per-plane argmax indices into *indices if asked. */
static qat_tensor *maxpool(qat_ctx *ctx, const char *op, qat_tensor *x, int k, int stride, int pad,
                           const int32_t **indices)
{
    if (!x) return NULL;
    qat_tensor *y = pool_out(ctx, op, x, k, stride, pad);
    if (!y) return NULL;
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    int need = qat_needs_grad(ctx, 1, &x);
    int fast = k == 2 && stride == 2 && pad == 0;
    pool_saved *s = need ? qat_arena_alloc(ctx, sizeof *s) : NULL;
    int32_t *am = need && !fast ? qat_arena_alloc(ctx, y->numel * sizeof(int32_t)) : NULL;
    uint8_t *win = (need || indices) && fast ? qat_arena_alloc(ctx, y->numel) : NULL;
    int32_t *ix = indices ? qat_arena_alloc(ctx, y->numel * sizeof(int32_t)) : NULL;
    if (need && (!s || (!am && !win))) return NULL;
    if (indices && (!ix || (fast && !win))) return NULL;
    if (fast) {
        /* first maximum in the order (0,0) (0,1) (1,0) (1,1); NaN is never
         * selected unless it is first, as in the general loop below */
#pragma omp parallel for if (y->numel > 32768) schedule(dynamic, 16)
        for (int p = 0; p < NC; p++)
            qat_k_maxpool2_fwd(y->data + (size_t)p * OH * OW, win ? win + (size_t)p * OH * OW : NULL,
                               x->data + (size_t)p * H * W, H, W, OH, OW);
        if (ix)
            for (size_t o = 0; o < y->numel; o++) {
                int ow = (int)(o % (size_t)OW), oh = (int)(o / (size_t)OW % (size_t)OH), j = win[o];
                ix[o] = (2 * oh + (j >> 1)) * W + 2 * ow + (j & 1);
            }
    } else if (pad == 0) {
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
                    if (ix) ix[o] = best;
                }
        }
    } else {
        /* the same loop over the window clipped to the image (constant
         * bounds above keep the unpadded pool as fast as it was) */
#pragma omp parallel for if (y->numel > 32768) schedule(static)
        for (int p = 0; p < NC; p++) {
            const float *xp = x->data + (size_t)p * H * W;
            for (int oh = 0; oh < OH; oh++) {
                int h0 = oh * stride - pad, h1 = h0 + k < H ? h0 + k : H;
                h0 = h0 > 0 ? h0 : 0;
                for (int ow = 0; ow < OW; ow++) {
                    int w0 = ow * stride - pad, w1 = w0 + k < W ? w0 + k : W;
                    w0 = w0 > 0 ? w0 : 0;
                    int best = h0 * W + w0;
                    float m = xp[best];
                    for (int i = h0; i < h1; i++)
                        for (int j = w0; j < w1; j++) {
                            int idx = i * W + j;
                            if (xp[idx] > m) {
                                m = xp[idx];
                                best = idx;
                            }
                        }
                    size_t o = ((size_t)p * OH + oh) * OW + ow;
                    y->data[o] = m;
                    if (am) am[o] = (int32_t)((size_t)p * H * W + (size_t)best);
                    if (ix) ix[o] = best;
                }
            }
        }
    }
    if (indices) *indices = ix;
    if (need) {
        s->k = k;
        s->stride = stride;
        s->argmax = am;
        s->win = win;
        if (qat_tape_record(ctx, "maxpool2d", maxpool_backward, y, 1, &x, s) != QAT_OK) return NULL;
    }
    return y;
}

qat_tensor *qat_maxpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride)
{
    return maxpool(ctx, "maxpool2d", x, k, stride, 0, NULL);
}

qat_tensor *qat_maxpool2d_ex(qat_ctx *ctx, qat_tensor *x, int k, int stride, int pad, const int32_t **indices)
{
    if (indices) *indices = NULL;
    return maxpool(ctx, "maxpool2d", x, k, stride, pad, indices);
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
    qat_tensor *y = pool_out(ctx, "avgpool2d", x, k, stride, 0);
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
