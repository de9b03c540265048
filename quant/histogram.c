/* The histogram observer's grid, binning and calibration searches
 * (KL / percentile / MSE). The design and the rules are documented in
 * include/qat/observer.h and docs/QUANT-calibration.md; the searches follow
 * TensorRT's pytorch-quantization calibrators (docs/QUANT.md, section 11).
 *
 * Grid: bin g holds the values with floor(x * inv) == g (double product);
 * the array holds bins g0 .. g0+nb-1, counts beyond nb are kept at zero. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "qat/observer.h"
#include "core/internal.h"
#include "quant/internal.h"
#include "runtime/rounding.h"


/* floor(g / 2^k) for an integer g, any k >= 0 (arithmetic shift). */
static int64_t shift_floor(int64_t g, int k)
{
    if (k >= 63) return g < 0 ? -1 : 0;
    return g >> k;
}

/* ---- binning ---- */

enum { BLOCK = 1024 };

/* Adds x[0..n-1] (all within the grid) to counts, bin floor(x*inv) - g0.
 * The index computation is branch-free so it vectorizes; (int32)d truncates
 * and the compare turns it into floor. */
static void bin_values(double *counts, double inv, int64_t g0, const float *x, size_t n)
{
    int32_t idx[BLOCK];
    int32_t base = (int32_t)g0;
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t m = n - i0 < BLOCK ? n - i0 : BLOCK;
        const float *xb = x + i0;
        for (size_t i = 0; i < m; i++) {
            double d = (double)xb[i] * inv;
            int32_t t = (int32_t)d;
            t -= (d < (double)t);
            idx[i] = t - base;
        }
        for (size_t i = 0; i < m; i++) counts[idx[i]] += 1.0;
    }
}

/* Per-thread partial histograms (integer-valued doubles: the merged sums are
 * exact, so the result does not depend on the number of threads). */
static int bin_batch(double *counts, int64_t nb, double inv, int64_t g0, const float *x, size_t n)
{
    const size_t par_min = (size_t)1 << 16;
    int nt = qat_get_num_threads();
    if (n < par_min || nt <= 1) {
        bin_values(counts, inv, g0, x, n);
        return QAT_OK;
    }
    double *part = qat_calloc((size_t)nt * (size_t)nb, sizeof *part);
    if (!part) {
        bin_values(counts, inv, g0, x, n); /* no memory for partials: serial */
        return QAT_OK;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        size_t b, e;
        qat_thread_span(t, nt, n, &b, &e);
        bin_values(part + (size_t)t * (size_t)nb, inv, g0, x + b, e - b);
    }
    for (int t = 0; t < nt; t++) {
        const double *p = part + (size_t)t * (size_t)nb;
        for (int64_t i = 0; i < nb; i++) counts[i] += p[i];
    }
    free(part);
    return QAT_OK;
}

int qat_hist_update_(double *counts, int64_t cap, int bins, double *inv, int64_t *g0,
                     int64_t *nb, uint64_t zeros_before, float bmin, float bmax, const float *x,
                     size_t n, double *tmp)
{
    double lo = bmin < 0.0f ? (double)bmin : 0.0; /* the grid always contains 0 */
    double hi = bmax > 0.0f ? (double)bmax : 0.0;
    if (*inv == 0.0) {
        if (lo == hi) return QAT_OK; /* only zeros so far: the caller counts them */
        double iv = (double)bins / (hi - lo);
        while (floor(hi * iv) - floor(lo * iv) + 1.0 > (double)cap) iv *= 0.5;
        int64_t G0 = (int64_t)floor(lo * iv), G1 = (int64_t)floor(hi * iv);
        *inv = iv;
        *g0 = G0;
        *nb = G1 - G0 + 1;
        memset(counts, 0, (size_t)cap * sizeof *counts);
        counts[-G0] += (double)zeros_before; /* earlier batches: exact zeros, bin 0 */
    } else {
        /* smallest k such that old bins and the batch fit in cap bins of
         * width w * 2^k */
        double iv = *inv;
        double o0 = (double)*g0, o1 = (double)(*g0 + *nb - 1);
        double D0 = fmin(o0, floor(lo * iv)), D1 = fmax(o1, floor(hi * iv));
        int k = 0;
        while (D1 - D0 + 1.0 > (double)cap) {
            k++;
            double ivk = ldexp(iv, -k);
            D0 = fmin(floor(ldexp(o0, -k)), floor(lo * ivk));
            D1 = fmax(floor(ldexp(o1, -k)), floor(hi * ivk));
        }
        int64_t G0 = (int64_t)D0, G1 = (int64_t)D1;
        if (k > 0) {
            memset(tmp, 0, (size_t)cap * sizeof *tmp);
            for (int64_t i = 0; i < *nb; i++)
                if (counts[i] != 0.0) tmp[shift_floor(*g0 + i, k) - G0] += counts[i];
            memcpy(counts, tmp, (size_t)cap * sizeof *counts);
            *inv = ldexp(iv, -k);
        } else if (G0 < *g0) {
            int64_t s = *g0 - G0;
            memmove(counts + s, counts, (size_t)*nb * sizeof *counts);
            memset(counts, 0, (size_t)s * sizeof *counts);
        }
        *g0 = G0;
        *nb = G1 - G0 + 1;
    }
    return bin_batch(counts, *nb, *inv, *g0, x, n);
}

/* ---- calibration searches ---- */

/* A histogram viewed as an array h[0..n) with prefix sums; edge i of the
 * array is at (e0 + i) / inv (e0 = g0 for the signed view, 0 folded). */
typedef struct {
    double *h;   /* [n] */
    double *pre; /* [n+1], pre[i] = sum h[0..i) */
    int64_t n;
} hview;

static void prefix(hview *v)
{
    v->pre[0] = 0.0;
    for (int64_t i = 0; i < v->n; i++) v->pre[i + 1] = v->pre[i] + v->h[i];
}

/* KL(P || Q) of TensorRT's entropy calibration for the window [a, b) of h:
 * P = h[a..b) with the mass left of a added to P[0] and the mass right of
 * b added to P[n-1]; Q = h[a..b) merged into nlev groups (window bin j in
 * group floor(j*nlev/n)), each group's sum spread evenly over its nonzero
 * bins. Both normalized; infinite where Q = 0 < P.
 * gsum, gcnt: scratch [nlev]. */
static double kl_window(const hview *v, int64_t a, int64_t b, int nlev, double *gsum,
                        double *gcnt)
{
    int64_t n = b - a;
    const double *h = v->h + a;
    double left = v->pre[a], right = v->pre[v->n] - v->pre[b];
    double total = v->pre[v->n], inwin = v->pre[b] - v->pre[a];
    if (!(inwin > 0.0)) return INFINITY;
    for (int g = 0; g < nlev; g++) gsum[g] = gcnt[g] = 0.0;
    for (int64_t j = 0; j < n; j++) {
        if (h[j] > 0.0) {
            int64_t g = j * nlev / n;
            gsum[g] += h[j];
            gcnt[g] += 1.0;
        }
    }
    double kl = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double p = h[j];
        if (j == 0) p += left;
        if (j == n - 1) p += right;
        if (!(p > 0.0)) continue;
        if (!(h[j] > 0.0)) return INFINITY;
        int64_t g = j * nlev / n;
        double pn = p / total, qn = gsum[g] / gcnt[g] / inwin;
        kl += pn * log(pn / qn);
    }
    return kl;
}

/* Everything a search needs about the signed histogram and the scheme. */
typedef struct {
    const double *counts;
    double inv;
    int64_t g0, nb;
    float dmin, dmax;
    const qat_qscheme *s;
    int32_t qmin, qmax;
    float *centers; /* [nb] bin centers as float (MSE) */
} hctx;

/* Count-weighted squared error of fake-quantizing every bin center with
 * the scheme's parameters for [lo, hi]. */
static double mse_range(const hctx *c, float lo, float hi)
{
    float sc;
    int32_t z;
    if (qat_qparams_from_minmax(c->s, lo, hi, &sc, &z)) return INFINITY;
    float is = 1.0f / sc;
    double err = 0.0;
    for (int64_t i = 0; i < c->nb; i++) {
        double w = c->counts[i];
        if (w == 0.0) continue;
        float x = c->centers[i];
        int32_t q = qat_quantize_val(x, is, z, c->qmin, c->qmax);
        float xq = (float)(q - z) * sc;
        double e = (double)xq - (double)x;
        err += w * e * e;
    }
    return err;
}

static float clampd(float v, double lo, double hi)
{
    double d = (double)v;
    return (float)(d < lo ? lo : d > hi ? hi : d);
}

/* The clip range for a folded threshold index b (T = b / inv): the data
 * range [dmin, dmax] clamped to [-T, T]. */
static void folded_range(const hctx *c, int64_t b, float *lo, float *hi)
{
    double T = (double)b / c->inv;
    *lo = clampd(c->dmin, -T, T);
    *hi = clampd(c->dmax, -T, T);
}

/* The clip range for the signed window [a, b) (its edges enclose 0): the
 * data range clamped to the window. */
static void window_range(const hctx *c, int64_t a, int64_t b, float *lo, float *hi)
{
    double ea = (double)(c->g0 + a) / c->inv, eb = (double)(c->g0 + b) / c->inv;
    *lo = clampd(c->dmin, ea, eb);
    *hi = clampd(c->dmax, ea, eb);
}

enum { OBJ_KL, OBJ_MSE };

/* One search: candidates cand = c0 .. c1 (inclusive) of the moving end,
 * objective evaluated in parallel, argmin serial. For the folded view the
 * candidate is the threshold index b (window [0, b)); for the signed view
 * with move_hi the candidate is b (window [fixed, b)), else a ([a, fixed)).
 * Ties: KL keeps the widest window, MSE the narrowest (TensorRT's last
 * argmin / first argmin). Returns the chosen candidate or -1 (no memory). */
static int64_t search(const hctx *c, const hview *v, int folded, int move_hi, int64_t fixed,
                      int64_t c0, int64_t c1, int nlev, int obj)
{
    int64_t nc = c1 - c0 + 1;
    double *val = qat_malloc((size_t)nc * sizeof *val);
    int nt = qat_get_num_threads();
    double *scratch = obj == OBJ_KL ? qat_malloc((size_t)nt * 2 * (size_t)nlev * sizeof *scratch) : NULL;
    if (!val || (obj == OBJ_KL && !scratch)) {
        free(val);
        free(scratch);
        return -1;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16) if (nc * v->n > 100000)
    for (int64_t k = 0; k < nc; k++) {
        int64_t cand = c0 + k;
        int64_t a = folded ? 0 : move_hi ? fixed : cand;
        int64_t b = folded ? cand : move_hi ? cand : fixed;
        if (obj == OBJ_KL) {
            double *gs = scratch + (size_t)omp_get_thread_num() * 2 * (size_t)nlev;
            val[k] = kl_window(v, a, b, nlev, gs, gs + nlev);
        } else {
            float lo, hi;
            if (folded)
                folded_range(c, b, &lo, &hi);
            else
                window_range(c, a, b, &lo, &hi);
            val[k] = mse_range(c, lo, hi);
        }
    }
    /* The widest window is the last candidate when the upper end moves, the
     * first when the lower end moves; KL breaks ties toward it, MSE away. */
    int take_last = (obj == OBJ_KL) == (folded || move_hi);
    int64_t best = 0;
    for (int64_t k = 1; k < nc; k++)
        if (take_last ? val[k] <= val[best] : val[k] < val[best]) best = k;
    free(val);
    free(scratch);
    return c0 + best;
}

/* Smallest window a search tries: nlev bins (one source bin per level);
 * KL starts at TensorRT's start_bin 128 whatever the bit width: below 8
 * bits a window of nlev bins has Q == P and KL would clip to a sliver
 * (lenet5 W4A4 PTQ-KL fell to 10%). */
static int64_t min_window(qat_calib_method m, int nlev)
{
    return m == QAT_CALIB_KL && nlev < 128 ? 128 : nlev;
}

static int nomem(void) { return qat_error(QAT_ERR_NOMEM, "observer calibration: out of memory"); }

/* Folded |x| histogram: symmetric schemes, or affine with one-sided data. */
static int range_folded(const hctx *c, qat_calib_method m, double pct, int nlev, float *lo,
                        float *hi)
{
    int64_t g1 = c->g0 + c->nb - 1;
    int64_t nf = g1 + 1 > -c->g0 ? g1 + 1 : -c->g0;
    hview v;
    v.n = nf;
    v.h = qat_calloc((size_t)nf, sizeof *v.h);
    v.pre = qat_malloc((size_t)(nf + 1) * sizeof *v.pre);
    if (!v.h || !v.pre) {
        free(v.h);
        free(v.pre);
        return nomem();
    }
    for (int64_t i = 0; i < c->nb; i++) {
        int64_t g = c->g0 + i;
        v.h[g >= 0 ? g : -1 - g] += c->counts[i]; /* bin [-(k+1)w, -kw) -> |x| bin k */
    }
    int64_t b = nf; /* full range unless a search says otherwise */
    int rc = QAT_OK;
    if (m == QAT_CALIB_PERCENTILE) {
        prefix(&v);
        double target = pct / 100.0 * v.pre[nf];
        int64_t k = 0;
        while (k < nf - 1 && v.pre[k + 1] < target) k++;
        b = k + 1;
    } else if (nf >= min_window(m, nlev)) {
        if (m == QAT_CALIB_KL && nf >= 2) v.h[0] = v.h[1]; /* suppress the zero spike */
        prefix(&v);
        b = search(c, &v, 1, 1, 0, min_window(m, nlev), nf, nlev, m == QAT_CALIB_KL ? OBJ_KL : OBJ_MSE);
        if (b < 0) rc = nomem();
    }
    if (rc == QAT_OK) folded_range(c, b, lo, hi);
    free(v.h);
    free(v.pre);
    return rc;
}

/* Signed histogram, affine scheme, two-sided data: coordinate descent on
 * the window [a, b) (a <= z0 <= b, b - a >= nlev). */
static int range_signed(const hctx *c, qat_calib_method m, double pct, int nlev, float *lo,
                        float *hi)
{
    int64_t n = c->nb, z0 = -c->g0;
    hview v;
    v.n = n;
    v.h = qat_malloc((size_t)n * sizeof *v.h);
    v.pre = qat_malloc((size_t)(n + 1) * sizeof *v.pre);
    if (!v.h || !v.pre) {
        free(v.h);
        free(v.pre);
        return nomem();
    }
    memcpy(v.h, c->counts, (size_t)n * sizeof *v.h);
    int64_t a = 0, b = n;
    int rc = QAT_OK;
    if (m == QAT_CALIB_PERCENTILE) {
        prefix(&v);
        double tail = (1.0 - pct / 100.0) / 2.0 * v.pre[n];
        double upper = v.pre[n] - tail;
        int64_t k = 0;
        while (k < n - 1 && v.pre[k + 1] < upper) k++;
        b = k + 1;
        a = 0;
        while (a + 1 < n && v.pre[a + 1] <= tail) a++;
        if (b < z0) b = z0;
        if (a > z0) a = z0;
    } else if (n >= min_window(m, nlev)) {
        if (m == QAT_CALIB_KL && z0 + 1 < n) v.h[z0] = v.h[z0 + 1]; /* zero spike */
        prefix(&v);
        int obj = m == QAT_CALIB_KL ? OBJ_KL : OBJ_MSE;
        int64_t w = min_window(m, nlev);
        for (int round = 0; round < 4; round++) {
            int64_t a_old = a, b_old = b;
            int64_t lo_b = a + w > z0 ? a + w : z0;
            if (lo_b <= n) b = search(c, &v, 0, 1, a, lo_b, n, nlev, obj);
            if (b < 0) break;
            int64_t hi_a = b - w < z0 ? b - w : z0;
            if (hi_a >= 0) a = search(c, &v, 0, 0, b, 0, hi_a, nlev, obj);
            if (a < 0) break;
            if (a == a_old && b == b_old) break;
        }
        if (a < 0 || b < 0) rc = nomem();
    }
    if (rc == QAT_OK) window_range(c, a, b, lo, hi);
    free(v.h);
    free(v.pre);
    return rc;
}

int qat_hist_range_(const double *counts, double inv, int64_t g0, int64_t nb, float dmin,
                    float dmax, const qat_qscheme *s, qat_calib_method m, double pct,
                    float *lo, float *hi)
{
    hctx c;
    c.counts = counts;
    c.inv = inv;
    c.g0 = g0;
    c.nb = nb;
    c.dmin = dmin;
    c.dmax = dmax;
    c.s = s;
    qat_qscheme_range(s, &c.qmin, &c.qmax);
    c.centers = NULL;
    int64_t levels = (int64_t)c.qmax - c.qmin + 1;
    if (m == QAT_CALIB_MSE) {
        c.centers = qat_malloc((size_t)nb * sizeof *c.centers);
        if (!c.centers) return nomem();
        for (int64_t i = 0; i < nb; i++)
            c.centers[i] = (float)(((double)(g0 + i) + 0.5) / inv);
    }
    int rc;
    if (s->symmetric)
        rc = range_folded(&c, m, pct, (int)(levels / 2), lo, hi);
    else if (dmin >= 0.0f || dmax <= 0.0f)
        /* One-sided data on an affine grid uses all the levels, but KL
         * searches with TensorRT's 2^(b-1) (128 at 8 bits): with 256 levels
         * Q equals P up to 512 bins and only clipping is penalised, which
         * clipped ~6% of a ReLU layer's nonzero outputs on lenet5 (PTQ
         * 88.4% vs 90.5% for minmax); with 128 it keeps 2x the range. */
        rc = range_folded(&c, m, pct, (int)(m == QAT_CALIB_KL ? levels / 2 : levels), lo, hi);
    else
        rc = range_signed(&c, m, pct, (int)levels, lo, hi);
    free(c.centers);
    return rc;
}
