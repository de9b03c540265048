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
 * Multiplier 1 (OC = C = groups), stride 1 or 2: each plane is first copied
 * into zero-padded column-phase rows (phase a holds the padded columns
 * j*s + a, so every tap reads a contiguous run), then the taps run as
 * straight loops over output columns that the compiler vectorises (the
 * functions are cloned for AVX-512, AVX2 and the baseline; each output
 * element's operations are the same in every lane and clone). The forward
 * and the input gradient add each element's products in the portable
 * kernels' order (kh, kw) and give their bits (up to the sign of a zero);
 * the weight gradient sums over pixels in 16 lanes, so it differs from the
 * portable kernel's serial sum by rounding. The portable kernels above
 * stay the path of QAT_SIMD=0 (qat_simd_level() == QAT_SIMD_PORTABLE). */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "vect-cost-model=dynamic")
#endif
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DW_CLONES
#endif

#define DW_LANES 16

typedef struct {
    int Hp;        /* padded rows */
    int Wq;        /* floats per phase row */
    int OWp;       /* output columns rounded up to DW_LANES */
    size_t plane;  /* floats of one plane's phase rows: s * Hp * Wq */
} dw_geom;

static int dw_fast(const gconv_dims *d)
{
    return qat_simd_level() >= QAT_SIMD_AVX2 && d->groups == d->C && d->OC == d->C && d->stride <= 2 &&
           d->K <= 7;
}

static dw_geom dw_geometry(const gconv_dims *d)
{
    dw_geom g;
    g.Hp = d->H + 2 * d->pad;
    g.OWp = (d->OW + DW_LANES - 1) / DW_LANES * DW_LANES;
    int need = g.OWp + (d->K - 1) / d->stride, wq = (d->W + 2 * d->pad + d->stride - 1) / d->stride;
    g.Wq = (need > wq ? need : wq + 0);
    g.Wq = (g.Wq + 15) / 16 * 16;
    g.plane = (size_t)d->stride * g.Hp * g.Wq;
    return g;
}

/* Output columns j of phase a whose padded column j*s + a lies on the
 * image: iw = j*s + a - pad in [0, W) for j in [*j0, *j1). */
static void phase_cols(int W, int s, int a, int pad, int limit, int *j0, int *j1)
{
    int lo = pad - a <= 0 ? 0 : (pad - a + s - 1) / s;
    int hi = W + pad - a <= 0 ? 0 : (W + pad - a + s - 1) / s;
    if (hi > limit) hi = limit;
    if (lo > hi) lo = hi;
    *j0 = lo;
    *j1 = hi;
}

/* phase rows of one H x W plane: ph[(a*Hp + r)*Wq + j] = xpad[r][j*s + a] */
DW_CLONES static void dw_phases(float *restrict ph, const float *restrict x, const gconv_dims *d, const dw_geom *g)
{
    const int s = d->stride, p = d->pad, Wq = g->Wq;
    for (int a = 0; a < s; a++) {
        int j0, j1;
        phase_cols(d->W, s, a, p, Wq, &j0, &j1);
        for (int r = 0; r < g->Hp; r++) {
            float *restrict o = ph + ((size_t)a * g->Hp + r) * Wq;
            int ih = r - p;
            if (ih < 0 || ih >= d->H) {
                memset(o, 0, (size_t)Wq * sizeof(float));
                continue;
            }
            const float *restrict xr = x + (size_t)ih * d->W + a - p; /* column j*s of xr is iw */
            for (int j = 0; j < j0; j++) o[j] = 0.0f;
            if (s == 1)
                memcpy(o + j0, xr + j0, (size_t)(j1 - j0) * sizeof(float));
            else
                for (int j = j0; j < j1; j++) o[j] = xr[j * s];
            for (int j = j1; j < Wq; j++) o[j] = 0.0f;
        }
    }
}

/* dx plane (fresh: stored, else added) from the phase-space gradient */
DW_CLONES static void dw_unphase(float *restrict dx, const float *restrict dph, int fresh, const gconv_dims *d,
                                 const dw_geom *g)
{
    const int s = d->stride, p = d->pad, Wq = g->Wq;
    for (int a = 0; a < s; a++) {
        int j0, j1;
        phase_cols(d->W, s, a, p, Wq, &j0, &j1);
        for (int ih = 0; ih < d->H; ih++) {
            const float *restrict src = dph + ((size_t)a * g->Hp + (size_t)(ih + p)) * Wq;
            float *restrict o = dx + (size_t)ih * d->W + a - p;
            if (fresh)
                for (int j = j0; j < j1; j++) o[j * s] = src[j];
            else
                for (int j = j0; j < j1; j++) o[j * s] += src[j];
        }
    }
}

/* y plane from the phase rows; 3x3 unrolled, other sizes tap by tap */
DW_CLONES static void dw_fwd_plane(float *restrict y, const float *restrict ph, const float *restrict w, float bias,
                                   int has_bias, const gconv_dims *d, const dw_geom *g)
{
    const int s = d->stride, K = d->K, OW = d->OW, Wq = g->Wq;
    for (int oh = 0; oh < d->OH; oh++) {
        float *restrict yr = y + (size_t)oh * OW;
        if (K == 3) {
            const float *r0 = ph + (size_t)(oh * s) * Wq, *r1 = r0 + Wq, *r2 = r1 + Wq;
            /* phase of column kw: kw % s, offset kw / s */
            const size_t P = (size_t)g->Hp * Wq;
            const float *c1 = s == 1 ? r0 + 1 : r0 + P, *d1 = s == 1 ? r1 + 1 : r1 + P, *e1 = s == 1 ? r2 + 1 : r2 + P;
            const float *c2 = s == 1 ? r0 + 2 : r0 + 1, *d2 = s == 1 ? r1 + 2 : r1 + 1, *e2 = s == 1 ? r2 + 2 : r2 + 1;
            const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7],
                        w8 = w[8];
            for (int ow = 0; ow < OW; ow++) {
                float a = 0.0f;
                a += w0 * r0[ow];
                a += w1 * c1[ow];
                a += w2 * c2[ow];
                a += w3 * r1[ow];
                a += w4 * d1[ow];
                a += w5 * d2[ow];
                a += w6 * r2[ow];
                a += w7 * e1[ow];
                a += w8 * e2[ow];
                yr[ow] = has_bias ? a + bias : a;
            }
            continue;
        }
        for (int ow = 0; ow < OW; ow++) yr[ow] = 0.0f;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float wv = w[kh * K + kw];
                const float *src = ph + ((size_t)(kw % s) * g->Hp + (size_t)(oh * s + kh)) * Wq + kw / s;
                for (int ow = 0; ow < OW; ow++) yr[ow] += wv * src[ow];
            }
        if (has_bias)
            for (int ow = 0; ow < OW; ow++) yr[ow] += bias;
    }
}

/* Input gradient in phase space: dph (zeroed, the layout of dw_phases)
 * += w[kh][kw] * dy, tap by tap (each element's products in (kh, kw)
 * order); dy rows are OWp wide, zero past OW. */
DW_CLONES static void dw_dx_phase(float *restrict dph, const float *restrict dy, const float *restrict w,
                                  const gconv_dims *d, const dw_geom *g)
{
    const int s = d->stride, K = d->K, OW = d->OW, Wq = g->Wq;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            const float wv = w[kh * K + kw];
            float *base = dph + ((size_t)(kw % s) * g->Hp + kh) * Wq + kw / s;
            for (int oh = 0; oh < d->OH; oh++) {
                float *restrict o = base + (size_t)oh * s * Wq;
                const float *restrict gr = dy + (size_t)oh * g->OWp;
                for (int ow = 0; ow < OW; ow++) o[ow] += wv * gr[ow];
            }
        }
}

/* Weight gradient lanes: acc[t][l] += dy[oh][ow] * x_t[oh][ow] over
 * columns ow = j*16 + l (dy zero past OW, so the lanes past OW add 0). */
DW_CLONES static void dw_dw_acc(float *restrict acc, const float *restrict ph, const float *restrict dy,
                                const gconv_dims *d, const dw_geom *g)
{
    const int s = d->stride, K = d->K, Wq = g->Wq, OWp = g->OWp;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            float *restrict a = acc + (size_t)(kh * K + kw) * DW_LANES;
            const float *src = ph + ((size_t)(kw % s) * g->Hp + kh) * Wq + kw / s;
            for (int oh = 0; oh < d->OH; oh++) {
                const float *restrict xr = src + (size_t)oh * s * Wq, *restrict gr = dy + (size_t)oh * OWp;
                for (int j = 0; j < OWp; j += DW_LANES)
                    for (int l = 0; l < DW_LANES; l++) a[l] += gr[j + l] * xr[j + l];
            }
        }
}

static void dw_forward_fast(const gconv_dims *d, const float *x, const float *w, const float *bias, float *y,
                            float *scratch)
{
    const dw_geom g = dw_geometry(d);
    const ptrdiff_t planes = (ptrdiff_t)d->N * d->C;
    const size_t hw = (size_t)d->H * d->W, ohw = (size_t)d->OH * d->OW;
    const int KK = d->K * d->K;
#pragma omp parallel num_threads(gconv_threads(d))
    {
        float *ph = scratch + (size_t)omp_get_thread_num() * g.plane;
#pragma omp for schedule(dynamic, 8)
        for (ptrdiff_t p = 0; p < planes; p++) {
            int c = (int)(p % d->C);
            dw_phases(ph, x + (size_t)p * hw, d, &g);
            dw_fwd_plane(y + (size_t)p * ohw, ph, w + (size_t)c * KK, bias ? bias[c] : 0.0f, bias != NULL, d, &g);
        }
    }
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
    const int KK = d->K * d->K, nt = gconv_threads(d);
    const size_t per = g.plane * 2 + (size_t)d->OH * g.OWp + (size_t)KK * DW_LANES;
    float *scratch = qat_arena_alloc(ctx, (size_t)nt * per * sizeof(float));
    if (!scratch) return;
#pragma omp parallel num_threads(nt)
    {
        float *ph = scratch + (size_t)omp_get_thread_num() * per, *dph = ph + g.plane, *gy = dph + g.plane;
        float *acc = gy + (size_t)d->OH * g.OWp;
        for (int r = 0; r < d->OH; r++) /* the columns past OW stay 0 */
            memset(gy + (size_t)r * g.OWp + d->OW, 0, (size_t)(g.OWp - d->OW) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < d->C; c++) {
            memset(acc, 0, (size_t)KK * DW_LANES * sizeof(float));
            float bs = 0.0f;
            for (int n = 0; n < d->N; n++) {
                const size_t p = (size_t)n * d->C + (size_t)c;
                const float *gp = dy + p * ohw;
                for (int r = 0; r < d->OH; r++) memcpy(gy + (size_t)r * g.OWp, gp + (size_t)r * d->OW, (size_t)d->OW * sizeof(float));
                if (db)
                    for (size_t i = 0; i < ohw; i++) bs += gp[i];
                if (dw) {
                    dw_phases(ph, x + p * hw, d, &g);
                    dw_dw_acc(acc, ph, gy, d, &g);
                }
                if (!dx) continue;
                memset(dph, 0, g.plane * sizeof(float));
                dw_dx_phase(dph, gy, w + (size_t)c * KK, d, &g);
                dw_unphase(dx + p * hw, dph, fresh, d, &g);
            }
            if (db) db[c] += bs;
            if (dw)
                for (int t = 0; t < KK; t++) {
                    float l[DW_LANES];
                    memcpy(l, acc + (size_t)t * DW_LANES, sizeof l);
                    for (int wd = DW_LANES / 2; wd >= 1; wd /= 2)
                        for (int j = 0; j < wd; j++) l[j] = l[j] + l[j + wd];
                    dw[(size_t)c * KK + t] += l[0];
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
        const dw_geom g = dw_geometry(d);
        float *scratch = qat_arena_alloc(ctx, (size_t)gconv_threads(d) * g.plane * sizeof(float));
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
