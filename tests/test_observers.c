/* Observers and calibrators: MinMax, EMA, per-channel, histogram growth,
 * KL / percentile / MSE searches, degenerate inputs, non-finite input,
 * checkpoint state and freezing. Expected values are worked out by hand in
 * the comments, or recomputed here by a naive reference written the way
 * TensorRT's Python does it. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qat/observer.h"
#include "testutil.h"

#define ck_assert_err(st, code, sub)                                                       \
    do {                                                                                   \
        int st_ = (st);                                                                    \
        ck_assert_msg(st_ == (code), "status %d (%s), expected %d; message: %s", st_,     \
                      qat_status_str(st_), (int)(code), qat_last_error());                 \
        ck_assert_msg(strstr(qat_last_error(), (sub)) != NULL, "message '%s' lacks '%s'", \
                      qat_last_error(), (sub));                                            \
    } while (0)

#define ck_ok(st)                                                                          \
    do {                                                                                   \
        int st_ = (st);                                                                    \
        ck_assert_msg(st_ == QAT_OK, "status %d (%s): %s", st_, qat_status_str(st_),       \
                      qat_last_error());                                                   \
    } while (0)

/* ---- helpers ---- */

static qat_observer *make(qat_observer_kind kind)
{
    qat_observer_opts o = qat_observer_opts_defaults(kind);
    qat_observer *obs = qat_observer_create(&o);
    ck_assert_msg(obs != NULL, "create: %s", qat_last_error());
    return obs;
}

static qat_observer *make_hist(int bins)
{
    qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_HISTOGRAM);
    o.bins = bins;
    qat_observer *obs = qat_observer_create(&o);
    ck_assert_msg(obs != NULL, "create: %s", qat_last_error());
    return obs;
}

static const double *get_state(qat_observer *obs, const char *want, size_t *n)
{
    for (int i = 0; i < qat_observer_num_state(obs); i++) {
        const char *name;
        const double *d;
        ck_ok(qat_observer_state(obs, i, &name, &d, n));
        if (!strcmp(name, want)) return d;
    }
    ck_abort_msg("no state array %s", want);
    return NULL;
}

static void copy_state(qat_observer *dst, qat_observer *src)
{
    for (int i = 0; i < qat_observer_num_state(src); i++) {
        const char *name;
        const double *d;
        size_t n;
        ck_ok(qat_observer_state(src, i, &name, &d, &n));
        ck_ok(qat_observer_set_state(dst, name, d, n));
    }
}

static void assert_same_state(qat_observer *a, qat_observer *b)
{
    ck_assert_int_eq(qat_observer_num_state(a), qat_observer_num_state(b));
    for (int i = 0; i < qat_observer_num_state(a); i++) {
        const char *na, *nb;
        const double *da, *db;
        size_t la, lb;
        ck_ok(qat_observer_state(a, i, &na, &da, &la));
        ck_ok(qat_observer_state(b, i, &nb, &db, &lb));
        ck_assert_str_eq(na, nb);
        ck_assert_uint_eq(la, lb);
        ck_assert_msg(la == 0 || memcmp(da, db, la * sizeof *da) == 0, "state %s differs", na);
    }
}

static float laplace(qat_rng *r)
{
    float u = qat_rng_uniform(r) - 0.5f; /* [-0.5, 0.5) */
    float a = fabsf(u);
    if (a >= 0.5f) a = 0.4999999f;
    float m = -logf(1.0f - 2.0f * a);
    return u < 0 ? -m : m;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Observes x in batches of `batch` values. */
static void observe_batches(qat_observer *obs, const float *x, size_t n, size_t batch)
{
    for (size_t i = 0; i < n; i += batch) ck_ok(qat_observer_observe(obs, x + i, n - i < batch ? n - i : batch));
}

static double bin_width(qat_observer *obs)
{
    size_t n;
    const double *g = get_state(obs, "hist_grid", &n);
    ck_assert_uint_eq(n, 2);
    ck_assert(g[0] > 0.0);
    return 1.0 / g[0];
}

static const qat_qscheme ACT8 = {8, 0, 1, 0, 0, 0};  /* affine int8 [-128, 127] */
static const qat_qscheme SYM8 = {8, 1, 1, 0, 0, 0};  /* symmetric int8 [-128, 127] */
static const qat_qscheme SYMN8 = {8, 1, 1, 1, 0, 0}; /* symmetric narrow [-127, 127] */

/* ---- MinMax / EMA ---- */

START_TEST(test_minmax_batches)
{
    qat_observer *obs = make(QAT_OBSERVER_MINMAX);
    const float b1[] = {1.0f, -2.0f, 3.0f}, b2[] = {0.5f, 4.0f}, b3[] = {-5.0f, 0.0f};
    ck_ok(qat_observer_observe(obs, b1, 3));
    ck_ok(qat_observer_observe(obs, b2, 2));
    ck_ok(qat_observer_observe(obs, b3, 2));
    float mn, mx;
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert_float_eq(mn, -5.0f);
    ck_assert_float_eq(mx, 4.0f);
    ck_assert_uint_eq(qat_observer_count(obs), 7);
    /* affine [-128,127] on [-5, 4]: s = 9/255, z = -128 - round(-5/s) =
     * -128 - round(-141.67) = 14 */
    float s;
    int32_t z;
    ck_ok(qat_observer_qparams(obs, &ACT8, &s, &z));
    ck_assert_float_eq_tol(s, 9.0f / 255.0f, 1e-9f);
    ck_assert_int_eq(z, 14);
    /* symmetric narrow: s = 5/127, z = 0 */
    ck_ok(qat_observer_qparams(obs, &SYMN8, &s, &z));
    ck_assert_float_eq_tol(s, 5.0f / 127.0f, 1e-9f);
    ck_assert_int_eq(z, 0);
    /* only a histogram observer can run a search */
    float lo, hi;
    ck_assert_err(qat_observer_range(obs, &ACT8, QAT_CALIB_KL, 99.99, &lo, &hi),
                  QAT_ERR_UNSUPPORTED, "histogram");
    qat_observer_free(obs);

    /* memoryless keeps the latest batch */
    qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_MINMAX);
    o.memoryless = 1;
    obs = qat_observer_create(&o);
    ck_ok(qat_observer_observe(obs, b1, 3));
    ck_ok(qat_observer_observe(obs, b3, 2));
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert_float_eq(mn, -5.0f);
    ck_assert_float_eq(mx, 0.0f);
    qat_observer_free(obs);
}
END_TEST

START_TEST(test_ema_by_hand)
{
    qat_observer *obs = make(QAT_OBSERVER_EMA);
    const float b1[] = {-1.0f, 2.0f, 0.5f}, b2[] = {-3.0f, 4.0f}, b3[] = {0.0f, 1.0f};
    float mn, mx;
    ck_ok(qat_observer_observe(obs, b1, 3)); /* first batch initializes */
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert_float_eq(mn, -1.0f);
    ck_assert_float_eq(mx, 2.0f);
    ck_ok(qat_observer_observe(obs, b2, 2)); /* -1 + 0.01*(-3+1), 2 + 0.01*(4-2) */
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert_float_eq_tol(mn, -1.02f, 1e-6f);
    ck_assert_float_eq_tol(mx, 2.02f, 1e-6f);
    ck_ok(qat_observer_observe(obs, b3, 2)); /* -1.02 + 0.01*1.02, 2.02 + 0.01*(1-2.02) */
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert_float_eq_tol(mn, -1.0098f, 1e-6f);
    ck_assert_float_eq_tol(mx, 2.0098f, 1e-6f);
    /* float32 arithmetic in PyTorch's order, exactly */
    volatile float c = 0.01f, m = -1.0f, M = 2.0f;
    m = m + c * (-3.0f - m);
    M = M + c * (4.0f - M);
    m = m + c * (0.0f - m);
    M = M + c * (1.0f - M);
    ck_assert(mn == m && mx == M);
    qat_observer_free(obs);

    qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_EMA);
    o.averaging_constant = 0.0f;
    ck_assert_ptr_null(qat_observer_create(&o));
    ck_assert(strstr(qat_last_error(), "averaging_constant") != NULL);
}
END_TEST

START_TEST(test_per_channel)
{
    /* x [outer=2, C=3, inner=2] */
    const float x[12] = {1, -1, 2, 5, -3, 0, /* o = 0: c0 {1,-1} c1 {2,5} c2 {-3,0} */
                         4, 0, -2, 2, 7, 8}; /* o = 1: c0 {4,0} c1 {-2,2} c2 {7,8} */
    qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_PER_CHANNEL_MINMAX);
    o.channels = 3;
    qat_observer *obs = qat_observer_create(&o);
    ck_assert_ptr_nonnull(obs);
    ck_assert_int_eq(qat_observer_channels(obs), 3);
    ck_ok(qat_observer_observe_channels(obs, x, 2, 3, 2));
    float mn[3], mx[3];
    qat_observer_minmax(obs, mn, mx);
    ck_assert(mn[0] == -1 && mx[0] == 4 && mn[1] == -2 && mx[1] == 5 && mn[2] == -3 && mx[2] == 8);
    /* channels last: x2 [outer=2, C=3, inner=1] */
    const float x2[6] = {-6, 1, 1, 0, 9, 2};
    ck_ok(qat_observer_observe_channels(obs, x2, 2, 3, 1));
    qat_observer_minmax(obs, mn, mx);
    ck_assert(mn[0] == -6 && mx[0] == 4 && mn[1] == -2 && mx[1] == 9 && mn[2] == -3 && mx[2] == 8);
    qat_qscheme w = qat_qscheme_weight(8); /* per-channel symmetric narrow: s = amax/127 */
    float s[3];
    int32_t z[3];
    ck_ok(qat_observer_qparams(obs, &w, s, z));
    ck_assert_float_eq_tol(s[0], 6.0f / 127.0f, 1e-9f);
    ck_assert_float_eq_tol(s[1], 9.0f / 127.0f, 1e-9f);
    ck_assert_float_eq_tol(s[2], 8.0f / 127.0f, 1e-9f);
    ck_assert(z[0] == 0 && z[1] == 0 && z[2] == 0);
    /* errors: channel count, per-tensor call, per-tensor scheme */
    ck_assert_err(qat_observer_observe_channels(obs, x, 3, 2, 2), QAT_ERR_SHAPE,
                  "2 channels, the observer has 3");
    ck_assert_err(qat_observer_observe(obs, x, 12), QAT_ERR_ARG, "observe_channels");
    ck_assert_err(qat_observer_qparams(obs, &ACT8, s, z), QAT_ERR_ARG, "per-tensor");
    qat_observer_free(obs);

    /* memoryless: only the latest batch (weights) */
    o.memoryless = 1;
    obs = qat_observer_create(&o);
    ck_ok(qat_observer_observe_channels(obs, x, 2, 3, 2));
    ck_ok(qat_observer_observe_channels(obs, x2, 2, 3, 1));
    qat_observer_minmax(obs, mn, mx);
    ck_assert(mn[0] == -6 && mx[0] == 0 && mn[1] == 1 && mx[1] == 9 && mn[2] == 1 && mx[2] == 2);
    qat_observer_free(obs);

    /* per-channel EMA: c0 (-1, 4) -> (-1 + 0.01*(-6+1), 4 + 0.01*(0-4)) */
    o = qat_observer_opts_defaults(QAT_OBSERVER_PER_CHANNEL_EMA);
    o.channels = 3;
    obs = qat_observer_create(&o);
    ck_ok(qat_observer_observe_channels(obs, x, 2, 3, 2));
    ck_ok(qat_observer_observe_channels(obs, x2, 2, 3, 1));
    qat_observer_minmax(obs, mn, mx);
    ck_assert_float_eq_tol(mn[0], -1.05f, 1e-6f);
    ck_assert_float_eq_tol(mx[0], 3.96f, 1e-6f);
    ck_assert_float_eq_tol(mn[1], -1.97f, 1e-6f); /* -2 + 0.01*(1+2) */
    ck_assert_float_eq_tol(mx[1], 5.04f, 1e-6f);  /* 5 + 0.01*(9-5) */
    qat_observer_free(obs);

    /* the same through a shape and an axis: [2, 3, 2] on axis 1, and
     * channels last [2, 3] on axis 1 */
    obs = qat_observer_create(&o);
    const int shape[3] = {2, 3, 2}, shape2[2] = {2, 3};
    ck_ok(qat_observer_observe_axis(obs, x, 3, shape, 1));
    ck_ok(qat_observer_observe_axis(obs, x2, 2, shape2, 1));
    qat_observer_minmax(obs, mn, mx);
    ck_assert_float_eq_tol(mn[0], -1.05f, 1e-6f);
    ck_assert_float_eq_tol(mx[1], 5.04f, 1e-6f);
    ck_assert_err(qat_observer_observe_axis(obs, x, 3, shape, 3), QAT_ERR_ARG, "axis 3");
    ck_assert_err(qat_observer_observe_axis(obs, x, 3, shape, 0), QAT_ERR_SHAPE, "2 channels");
    qat_observer_free(obs);

    /* a per-tensor observer given (outer, C, inner) sees all the values */
    obs = make(QAT_OBSERVER_MINMAX);
    ck_ok(qat_observer_observe_channels(obs, x, 2, 3, 2));
    qat_observer_minmax(obs, mn, mx);
    ck_assert(mn[0] == -3 && mx[0] == 8);
    ck_assert_err(qat_observer_qparams(obs, &w, s, z), QAT_ERR_ARG, "per-channel");
    qat_observer_free(obs);
}
END_TEST

/* ---- histogram grid ---- */

static void assert_hist(qat_observer *obs, double inv, double g0, const double *want, size_t nw)
{
    size_t n;
    const double *g = get_state(obs, "hist_grid", &n);
    ck_assert_msg(g[0] == inv && g[1] == g0, "grid (%g, %g), expected (%g, %g)", g[0], g[1], inv,
                  g0);
    const double *h = get_state(obs, "hist", &n);
    ck_assert_uint_eq(n, nw);
    for (size_t i = 0; i < n; i++) ck_assert_msg(h[i] == want[i], "bin %zu: %g, expected %g", i, h[i], want[i]);
}

START_TEST(test_hist_by_hand)
{
    /* bins = 8, capacity 2*8+2 = 18 bins. {0.5, 1, 2, 4}: range [0, 4], inv_w
     * = 8/4 = 2, bins floor(2x) = 1, 2, 4, 8 -> g0 = 0, 9 bins. */
    qat_observer *obs = make_hist(8);
    const float b1[] = {0.5f, 1.0f, 2.0f, 4.0f};
    ck_ok(qat_observer_observe(obs, b1, 4));
    const double h1[] = {0, 1, 1, 0, 1, 0, 0, 0, 1};
    assert_hist(obs, 2.0, 0.0, h1, 9);
    /* {-4}: bin -8; bins -8..8 = 17 fit at the same width (shift) */
    const float b2[] = {-4.0f};
    ck_ok(qat_observer_observe(obs, b2, 1));
    const double h2[17] = {[0] = 1, [9] = 1, [10] = 1, [12] = 1, [16] = 1};
    assert_hist(obs, 2.0, -8.0, h2, 17);
    /* {-10}: bins -20..8 = 29 > 18: width doubled once (inv 1), old bins
     * g -> floor(g/2): -8->-4, 1->0, 2->1, 4->2, 8->4; new -10; g0 = -10 */
    const float b3[] = {-10.0f};
    ck_ok(qat_observer_observe(obs, b3, 1));
    const double h3[15] = {[0] = 1, [6] = 1, [10] = 1, [11] = 1, [12] = 1, [14] = 1};
    assert_hist(obs, 1.0, -10.0, h3, 15);
    float mn, mx;
    qat_observer_minmax(obs, &mn, &mx);
    ck_assert(mn == -10.0f && mx == 4.0f);
    qat_observer_free(obs);

    /* zeros first: counted into bin 0 once a grid exists */
    obs = make_hist(8);
    const float z3[] = {0.0f, -0.0f, 0.0f}, one[] = {1.0f};
    ck_ok(qat_observer_observe(obs, z3, 3));
    size_t n;
    const double *g = get_state(obs, "hist_grid", &n);
    ck_assert(g[0] == 0.0);
    float s;
    int32_t z;
    ck_ok(qat_observer_qparams(obs, &ACT8, &s, &z)); /* all zeros: valid params */
    ck_assert_float_eq(s, QAT_SCALE_EPS);
    ck_assert_int_eq(z, -128);
    ck_ok(qat_observer_observe(obs, one, 1));
    const double h4[9] = {[0] = 3, [8] = 1}; /* inv_w = 8 */
    assert_hist(obs, 8.0, 0.0, h4, 9);
    qat_observer_free(obs);
}
END_TEST

START_TEST(test_hist_growth_exact)
{
    /* batches whose range keeps growing (both sides, a 1000x jump, tiny
     * values): every value must stay in bin floor(x * inv_w) of the final
     * grid and the total must equal the number of values */
    enum { NB = 7, PER = 5000 };
    const float scale[NB] = {0.01f, 1.0f, 0.5f, 3.0f, 1000.0f, 1e-6f, 1500.0f};
    const float shift[NB] = {0.5f, 0.0f, -1.0f, 2.0f, -100.0f, 0.0f, 0.0f};
    float *all = malloc(NB * PER * sizeof *all);
    qat_rng r;
    qat_rng_seed(&r, 7);
    qat_observer *obs = make_hist(2048);
    for (int b = 0; b < NB; b++) {
        float *x = all + b * PER;
        for (int i = 0; i < PER; i++) x[i] = shift[b] + scale[b] * (2.0f * qat_rng_uniform(&r) - 1.0f);
        x[0] = 0.0f;
        ck_ok(qat_observer_observe(obs, x, PER));
        size_t n;
        const double *h = get_state(obs, "hist", &n);
        double total = 0;
        for (size_t i = 0; i < n; i++) total += h[i];
        ck_assert_msg(total == (double)(b + 1) * PER, "batch %d: total %g", b, total);
        ck_assert_msg(n <= 2 * 2048 + 2, "batch %d: %zu bins", b, n);
        ck_assert_msg(b == 0 || n >= 1024, "batch %d: only %zu bins", b, n);
    }
    size_t n, ng;
    const double *g = get_state(obs, "hist_grid", &ng);
    double inv = g[0];
    int64_t g0 = (int64_t)g[1];
    const double *h = get_state(obs, "hist", &n);
    double *want = calloc(n, sizeof *want);
    float mn = all[0], mx = all[0];
    for (int i = 0; i < NB * PER; i++) {
        int64_t k = (int64_t)floor((double)all[i] * inv) - g0;
        ck_assert_msg(k >= 0 && k < (int64_t)n, "value %g outside the bins", (double)all[i]);
        want[k] += 1.0;
        mn = fminf(mn, all[i]);
        mx = fmaxf(mx, all[i]);
    }
    for (size_t i = 0; i < n; i++) ck_assert_msg(h[i] == want[i], "bin %zu: %g, expected %g", i, h[i], want[i]);
    float omn, omx;
    qat_observer_minmax(obs, &omn, &omx);
    ck_assert(omn == mn && omx == mx);
    free(want);
    free(all);
    qat_observer_free(obs);
}
END_TEST

START_TEST(test_hist_threads_identical)
{
    enum { N = 300000 };
    float *x = malloc(N * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) x[i] = qat_rng_normal(&r) * (i < N / 2 ? 1.0f : 3.0f);
    qat_observer *a = make_hist(2048), *b = make_hist(2048);
    int saved = qat_get_num_threads();
    qat_set_num_threads(1);
    observe_batches(a, x, N, N / 2);
    qat_set_num_threads(4);
    observe_batches(b, x, N, N / 2);
    qat_set_num_threads(saved);
    assert_same_state(a, b);
    for (int m = 0; m < QAT_CALIB_COUNT; m++) {
        float s1, s2;
        int32_t z1, z2;
        ck_ok(qat_observer_qparams_with(a, &ACT8, (qat_calib_method)m, 99.9, &s1, &z1));
        qat_set_num_threads(4);
        ck_ok(qat_observer_qparams_with(b, &ACT8, (qat_calib_method)m, 99.9, &s2, &z2));
        qat_set_num_threads(saved);
        ck_assert_msg(s1 == s2 && z1 == z2, "method %d: (%g, %d) vs (%g, %d)", m, (double)s1, z1,
                      (double)s2, z2);
    }
    qat_observer_free(a);
    qat_observer_free(b);
    free(x);
}
END_TEST

/* ---- percentile ---- */

START_TEST(test_percentile_uniform)
{
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x), *srt = malloc(N * sizeof *srt);
    qat_rng r;
    qat_rng_seed(&r, 3);
    for (int i = 0; i < N; i++) x[i] = qat_rng_uniform(&r);
    qat_observer *obs = make_hist(2048);
    observe_batches(obs, x, N, 10000);
    double w = bin_width(obs);
    memcpy(srt, x, N * sizeof *x);
    qsort(srt, N, sizeof *srt, cmp_float);
    /* one-sided: T is the right edge of the bin holding the k-th smallest
     * value, k = ceil(0.99 N), so 0 < T - x_(k) <= w */
    float lo, hi;
    ck_ok(qat_observer_range(obs, &ACT8, QAT_CALIB_PERCENTILE, 99.0, &lo, &hi));
    double xk = srt[(int)ceil(0.99 * N) - 1];
    ck_assert_msg(hi > xk && hi - xk <= w * (1 + 1e-6), "hi %g, x_k %g, w %g", (double)hi, xk, w);
    ck_assert_float_eq(lo, srt[0]); /* one-sided: the observed min */
    ck_assert_float_eq_tol(hi, 0.99f, 3e-3f);
    /* 100: the full range */
    ck_ok(qat_observer_range(obs, &ACT8, QAT_CALIB_PERCENTILE, 100.0, &lo, &hi));
    ck_assert_float_eq(hi, srt[N - 1]);
    qat_observer_free(obs);

    /* two-sided affine, p = 98: 1% per tail */
    for (int i = 0; i < N; i++) x[i] = 2.0f * x[i] - 1.0f;
    obs = make_hist(2048);
    observe_batches(obs, x, N, 10000);
    w = bin_width(obs);
    memcpy(srt, x, N * sizeof *x);
    qsort(srt, N, sizeof *srt, cmp_float);
    ck_ok(qat_observer_range(obs, &ACT8, QAT_CALIB_PERCENTILE, 98.0, &lo, &hi));
    xk = srt[(int)ceil(0.99 * N) - 1];
    ck_assert_msg(hi > xk && hi - xk <= w * (1 + 1e-6), "hi %g, x_k %g, w %g", (double)hi, xk, w);
    double xl = srt[(int)floor(0.01 * N)]; /* edge <= x_(αN+1) < edge + w */
    ck_assert_msg(lo <= xl && xl - lo < w * (1 + 1e-6), "lo %g, x_l %g, w %g", (double)lo, xl, w);
    /* symmetric: |x| uniform on [0, 1], T ~ 0.99 */
    for (int i = 0; i < N; i++) srt[i] = fabsf(x[i]);
    qsort(srt, N, sizeof *srt, cmp_float);
    ck_ok(qat_observer_range(obs, &SYM8, QAT_CALIB_PERCENTILE, 99.0, &lo, &hi));
    xk = srt[(int)ceil(0.99 * N) - 1];
    ck_assert_msg(hi > xk && hi - xk <= w * (1 + 1e-6), "hi %g, |x|_k %g", (double)hi, xk);
    ck_assert_float_eq(lo, -hi);
    ck_assert_err(qat_observer_range(obs, &ACT8, QAT_CALIB_PERCENTILE, 0.0, &lo, &hi),
                  QAT_ERR_ARG, "percentile");
    qat_observer_free(obs);
    free(x);
    free(srt);
}
END_TEST

/* ---- KL and MSE ---- */

/* q-quantile of x (sorted copy) */
static float quantile(const float *x, size_t n, double q)
{
    float *s = malloc(n * sizeof *s);
    memcpy(s, x, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    size_t k = (size_t)(q * (double)(n - 1));
    float v = s[k];
    free(s);
    return v;
}

/* Mean squared error of fake-quantizing x with (s, z) on [qmin, qmax]. */
static double data_mse(const float *x, size_t n, float s, int32_t z, const qat_qscheme *sch)
{
    int32_t qmin, qmax;
    qat_qscheme_range(sch, &qmin, &qmax);
    float is = 1.0f / s;
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        float q = nearbyintf(x[i] * is) + (float)z;
        q = q < (float)qmin ? (float)qmin : q > (float)qmax ? (float)qmax : q;
        double d = (double)((q - (float)z) * s) - (double)x[i];
        e += d * d;
    }
    return e / (double)n;
}

/* The MSE search must beat min/max on the data it was built from. */
static void assert_mse_beats_minmax(qat_observer *obs, const float *x, size_t n,
                                    const qat_qscheme *sch)
{
    float s0, s1;
    int32_t z0, z1;
    ck_ok(qat_observer_qparams_with(obs, sch, QAT_CALIB_MINMAX, 0, &s0, &z0));
    ck_ok(qat_observer_qparams_with(obs, sch, QAT_CALIB_MSE, 0, &s1, &z1));
    double e0 = data_mse(x, n, s0, z0, sch), e1 = data_mse(x, n, s1, z1, sch);
    ck_assert_msg(e1 < e0, "MSE search %g, min/max %g", e1, e0);
}

START_TEST(test_kl_heavy_tail_one_sided)
{
    /* post-ReLU-like: |N(0,1)| x 100k plus 20 outliers in [40, 59]. KL and
     * the 99.9 percentile clip them; MSE keeps most of the range (20 values
     * clipped by ~50 cost more than the rounding of 100k values saves) but
     * must still beat min/max. */
    enum { N = 100000, OUT = 20 };
    float *x = malloc((N + OUT) * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) x[i] = fabsf(qat_rng_normal(&r));
    for (int i = 0; i < OUT; i++) x[N + i] = 40.0f + (float)i;
    qat_observer *obs = make_hist(2048);
    observe_batches(obs, x, N + OUT, 20000);
    float p99 = quantile(x, N + OUT, 0.99), mn, mx;
    qat_observer_minmax(obs, &mn, &mx);
    const qat_qscheme *schemes[2] = {&ACT8, &SYMN8};
    for (int sc = 0; sc < 2; sc++) {
        for (int m = QAT_CALIB_KL; m <= QAT_CALIB_PERCENTILE; m++) {
            float lo, hi;
            ck_ok(qat_observer_range(obs, schemes[sc], (qat_calib_method)m, 99.9, &lo, &hi));
            ck_assert_msg(hi > p99 && hi < 0.25f * mx, "%s: hi %g, p99 %g, max %g",
                          qat_calib_method_name((qat_calib_method)m), (double)hi, (double)p99,
                          (double)mx);
            ck_assert_float_eq(lo, mn); /* one-sided: the lower end is the data's */
            float s;
            int32_t z;
            ck_ok(qat_observer_qparams_with(obs, schemes[sc], (qat_calib_method)m, 99.9, &s, &z));
            if (sc == 0) { /* affine one-sided: [0, hi] onto [-128, 127] */
                ck_assert_int_eq(z, -128);
                ck_assert_float_eq_tol(s, hi / 255.0f, 1e-6f * hi);
            } else {
                ck_assert_int_eq(z, 0);
                ck_assert_float_eq_tol(s, hi / 127.0f, 1e-6f * hi);
            }
        }
        assert_mse_beats_minmax(obs, x, N + OUT, schemes[sc]);
    }
    qat_observer_free(obs);
    free(x);
}
END_TEST

START_TEST(test_kl_heavy_tail_two_sided)
{
    /* N(0, 1) x 100k plus outliers at +60.. and -30..: KL clips both ends,
     * per end (affine, coordinate descent) and folded (symmetric) */
    enum { N = 100000, OUT = 10 };
    float *x = malloc((N + 2 * OUT) * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 9);
    for (int i = 0; i < N; i++) x[i] = qat_rng_normal(&r);
    for (int i = 0; i < OUT; i++) {
        x[N + i] = 60.0f + (float)i;
        x[N + OUT + i] = -30.0f - (float)i;
    }
    qat_observer *obs = make_hist(2048);
    observe_batches(obs, x, N + 2 * OUT, 25000);
    float q005 = quantile(x, N + 2 * OUT, 0.005), q995 = quantile(x, N + 2 * OUT, 0.995);
    float mn, mx, lo, hi;
    qat_observer_minmax(obs, &mn, &mx);
    ck_ok(qat_observer_range(obs, &ACT8, QAT_CALIB_KL, 0, &lo, &hi));
    ck_assert_msg(hi > q995 && hi < 0.25f * mx, "affine: hi %g (q995 %g, max %g)", (double)hi,
                  (double)q995, (double)mx);
    ck_assert_msg(lo < q005 && lo > 0.25f * mn, "affine: lo %g (q005 %g, min %g)", (double)lo,
                  (double)q005, (double)mn);
    ck_ok(qat_observer_range(obs, &SYMN8, QAT_CALIB_KL, 0, &lo, &hi));
    ck_assert_msg(hi > q995 && hi < 0.25f * -mn, "symmetric: T %g", (double)hi);
    ck_assert_float_eq(lo, -hi);
    assert_mse_beats_minmax(obs, x, N + 2 * OUT, &ACT8);
    assert_mse_beats_minmax(obs, x, N + 2 * OUT, &SYMN8);
    qat_observer_free(obs);
    free(x);
}
END_TEST

START_TEST(test_mse_kl_laplace_4bit)
{
    /* Laplace(0, 1) x 100k at 4 bits: the L2-optimal clip is about 5
     * (Banner et al. 2019 give 5.03 for symmetric 4-bit), well inside the
     * observed range (about +-11) and beyond the 1% tails (ln 50 = 3.9). */
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 17);
    for (int i = 0; i < N; i++) x[i] = laplace(&r);
    qat_observer *obs = make_hist(2048);
    observe_batches(obs, x, N, 10000);
    float q01 = quantile(x, N, 0.01), q99 = quantile(x, N, 0.99), mn, mx;
    qat_observer_minmax(obs, &mn, &mx);
    const qat_qscheme A4 = {4, 0, 1, 0, 0, 0}, S4 = {4, 1, 1, 1, 0, 0};
    const qat_qscheme *schemes[2] = {&A4, &S4};
    for (int sc = 0; sc < 2; sc++)
        for (int m = QAT_CALIB_KL; m <= QAT_CALIB_MSE; m += 2) {
            float lo, hi;
            ck_ok(qat_observer_range(obs, schemes[sc], (qat_calib_method)m, 0, &lo, &hi));
            ck_assert_msg(hi > q99 && hi < 0.7f * mx && lo < q01 && lo > 0.7f * mn,
                          "%d-bit %s %s: [%g, %g], 1%% tails [%g, %g], data [%g, %g]",
                          schemes[sc]->bits, sc ? "symmetric" : "affine",
                          qat_calib_method_name((qat_calib_method)m), (double)lo, (double)hi,
                          (double)q01, (double)q99, (double)mn, (double)mx);
            if (sc == 1) ck_assert_float_eq(lo, -hi);
        }
    assert_mse_beats_minmax(obs, x, N, &A4);
    assert_mse_beats_minmax(obs, x, N, &S4);
    qat_observer_free(obs);
    free(x);
}
END_TEST

START_TEST(test_kl_mse_uniform_keep_range)
{
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 13);
    for (int i = 0; i < N; i++) x[i] = qat_rng_uniform(&r);
    qat_observer *obs = make_hist(2048);
    observe_batches(obs, x, N, 10000);
    float mn, mx;
    qat_observer_minmax(obs, &mn, &mx);
    for (int m = QAT_CALIB_KL; m <= QAT_CALIB_MSE; m++) {
        float lo, hi;
        ck_ok(qat_observer_range(obs, &ACT8, (qat_calib_method)m, 99.99, &lo, &hi));
        ck_assert_msg(hi >= 0.97f * mx, "%s: hi %g of max %g",
                      qat_calib_method_name((qat_calib_method)m), (double)hi, (double)mx);
        ck_ok(qat_observer_range(obs, &SYM8, (qat_calib_method)m, 99.99, &lo, &hi));
        ck_assert_msg(hi >= 0.97f * mx, "%s symmetric: T %g of max %g",
                      qat_calib_method_name((qat_calib_method)m), (double)hi, (double)mx);
    }
    qat_observer_free(obs);
    free(x);
}
END_TEST

/* TensorRT's _compute_amax_entropy, written out the way the Python does it
 * (linspace + digitize in double, Counter of nonzero bins, scipy entropy):
 * returns the chosen number of bins i (amax = edge i). */
static int64_t ref_entropy_bins(const double *calib_hist, int64_t len, int nbins, int start_bin)
{
    double *bins = malloc(len * sizeof *bins);
    memcpy(bins, calib_hist, len * sizeof *bins);
    bins[0] = bins[1];
    double *P = malloc(len * sizeof *P), *Q = malloc(len * sizeof *Q);
    double *dens = malloc(nbins * sizeof *dens), *cnt = malloc(nbins * sizeof *cnt);
    int *dig = malloc(len * sizeof *dig);
    double best = INFINITY;
    int64_t best_i = start_bin;
    for (int64_t i = start_bin; i <= len; i++) {
        double step = (double)i / nbins; /* numpy linspace(0, i, nbins+1) */
        for (int64_t j = 0; j < i; j++) {
            int k = 0; /* digitize: number of edges <= j, minus 1 */
            while (k + 1 <= nbins && (double)(k + 1) * step <= (double)j) k++;
            dig[j] = bins[j] == 0 ? -1 : k;
        }
        for (int k = 0; k < nbins; k++) dens[k] = cnt[k] = 0;
        for (int64_t j = 0; j < i; j++)
            if (dig[j] >= 0) {
                dens[dig[j]] += bins[j];
                cnt[dig[j]] += 1;
            }
        double sq = 0, sp = 0, outl = 0;
        for (int64_t j = 0; j < i; j++) {
            Q[j] = dig[j] >= 0 ? dens[dig[j]] / cnt[dig[j]] : 0;
            sq += Q[j];
        }
        for (int64_t j = i; j < len; j++) outl += bins[j];
        for (int64_t j = 0; j < i; j++) P[j] = bins[j];
        P[i - 1] += outl;
        for (int64_t j = 0; j < i; j++) sp += P[j];
        double ent = 0;
        for (int64_t j = 0; j < i; j++) {
            if (P[j] == 0) continue;
            if (Q[j] == 0) {
                ent = INFINITY;
                break;
            }
            ent += P[j] / sp * log((P[j] / sp) / (Q[j] / sq));
        }
        if (ent <= best) { /* last index of the minimum */
            best = ent;
            best_i = i;
        }
    }
    free(bins);
    free(P);
    free(Q);
    free(dens);
    free(cnt);
    free(dig);
    return best_i;
}

START_TEST(test_kl_matches_tensorrt_reference)
{
    /* a histogram restored through the state interface: w = 1, bins 0..599
     * (data in [0, 599.5]); symmetric int8 = TensorRT's signed 8-bit case
     * (128 levels, start_bin 128) */
    enum { NBIN = 600 };
    for (int trial = 0; trial < 3; trial++) {
        double hist[NBIN];
        qat_rng r;
        qat_rng_seed(&r, 100 + (uint64_t)trial);
        double total = 0;
        for (int j = 0; j < NBIN; j++) {
            double dens = 1000.0 * exp(-(double)j / (60.0 + 40.0 * trial));
            hist[j] = floor(dens * qat_rng_uniform(&r));
            if (qat_rng_below(&r, 10) == 0) hist[j] = 0;
        }
        hist[NBIN - 1] = 3; /* an outlier at the top */
        hist[0] = 5000;     /* the ReLU zero spike */
        for (int j = 0; j < NBIN; j++) total += hist[j];
        int64_t want = ref_entropy_bins(hist, NBIN, 128, 128);

        qat_observer *obs = make_hist(2048);
        const double grid[2] = {1.0, 0.0}, mn[1] = {0.0}, mx[1] = {NBIN - 0.5};
        const double counters[3] = {1, 1, total};
        ck_ok(qat_observer_set_state(obs, "counters", counters, 3));
        ck_ok(qat_observer_set_state(obs, "min", mn, 1));
        ck_ok(qat_observer_set_state(obs, "max", mx, 1));
        ck_ok(qat_observer_set_state(obs, "hist_grid", grid, 2));
        ck_ok(qat_observer_set_state(obs, "hist", hist, NBIN));
        float lo, hi;
        ck_ok(qat_observer_range(obs, &SYM8, QAT_CALIB_KL, 0, &lo, &hi));
        float expect = want == NBIN ? (float)(NBIN - 0.5) : (float)want;
        ck_assert_msg(hi == expect, "trial %d: T %g, TensorRT's reference %g", trial, (double)hi,
                      (double)expect);
        ck_assert_msg(want > 128 && want < NBIN, "trial %d: reference chose %lld", trial,
                      (long long)want);
        qat_observer_free(obs);
    }
}
END_TEST

/* ---- degenerate and bad input ---- */

static void assert_valid_qparams(qat_observer *obs, const qat_qscheme *sch, int method)
{
    float s;
    int32_t z, qmin, qmax;
    qat_qscheme_range(sch, &qmin, &qmax);
    ck_ok(qat_observer_qparams_with(obs, sch, (qat_calib_method)method, 99.99, &s, &z));
    ck_assert_msg(isfinite(s) && s >= QAT_SCALE_EPS && z >= qmin && z <= qmax,
                  "method %d: (%g, %d)", method, (double)s, z);
}

START_TEST(test_constant_and_zero)
{
    float zeros[100], c3[100], cm2[100];
    for (int i = 0; i < 100; i++) {
        zeros[i] = 0.0f;
        c3[i] = 3.0f;
        cm2[i] = -2.0f;
    }
    const qat_qscheme *schemes[3] = {&ACT8, &SYM8, &SYMN8};
    for (int k = 0; k < QAT_OBSERVER_KIND_COUNT; k++) {
        if (k == QAT_OBSERVER_PER_CHANNEL_MINMAX || k == QAT_OBSERVER_PER_CHANNEL_EMA) continue;
        const float *data[3] = {zeros, c3, cm2};
        for (int d = 0; d < 3; d++) {
            qat_observer *obs = make((qat_observer_kind)k);
            /* nothing observed: scale 1 */
            float s;
            int32_t z;
            ck_ok(qat_observer_qparams(obs, &ACT8, &s, &z));
            ck_assert(s == 1.0f && z == 0);
            ck_ok(qat_observer_observe(obs, data[d], 100));
            ck_ok(qat_observer_observe(obs, data[d], 50));
            int nm = k == QAT_OBSERVER_HISTOGRAM ? QAT_CALIB_COUNT : 1;
            for (int sc = 0; sc < 3; sc++)
                for (int m = 0; m < nm; m++) assert_valid_qparams(obs, schemes[sc], m);
            for (int m = 0; m < nm; m++) {
                float lo, hi;
                ck_ok(qat_observer_range(obs, &ACT8, (qat_calib_method)m, 99.99, &lo, &hi));
                /* a constant is kept whole: [c, c] (0 widening is qparams' job) */
                ck_assert_msg(lo == data[d][0] && hi == data[d][0], "kind %d data %d method %d: [%g, %g]",
                              k, d, m, (double)lo, (double)hi);
            }
            ck_ok(qat_observer_qparams(obs, &ACT8, &s, &z));
            if (d == 0) ck_assert(s == QAT_SCALE_EPS && z == -128);
            if (d == 1) ck_assert(s == 3.0f / 255.0f && z == -128);
            if (d == 2) ck_assert(s == 2.0f / 255.0f && z == 127);
            qat_observer_free(obs);
        }
    }
}
END_TEST

START_TEST(test_nonfinite_rejected)
{
    float x[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    for (int k = 0; k < QAT_OBSERVER_KIND_COUNT; k++) {
        qat_observer_opts o = qat_observer_opts_defaults((qat_observer_kind)k);
        o.channels = 2;
        qat_observer *obs = qat_observer_create(&o);
        ck_assert_ptr_nonnull(obs);
        ck_ok(qat_observer_observe_channels(obs, x, 1, 2, 5));
        float mn[2], mx[2];
        qat_observer_minmax(obs, mn, mx);
        x[7] = NAN;
        ck_assert_err(qat_observer_observe_channels(obs, x, 1, 2, 5), QAT_ERR_ARG,
                      "NaN at index 7");
        x[7] = -INFINITY;
        ck_assert_err(qat_observer_observe_channels(obs, x, 1, 2, 5), QAT_ERR_ARG,
                      "-inf at index 7");
        x[7] = 8;
        ck_assert_uint_eq(qat_observer_count(obs), 10);
        float mn2[2], mx2[2];
        qat_observer_minmax(obs, mn2, mx2);
        ck_assert(mn2[0] == mn[0] && mx2[0] == mx[0]);
        qat_observer_free(obs);
    }
    /* a big batch (the parallel path) too */
    float *big = malloc(200000 * sizeof *big);
    for (int i = 0; i < 200000; i++) big[i] = (float)i;
    big[123456] = INFINITY;
    qat_observer *obs = make_hist(2048);
    ck_assert_err(qat_observer_observe(obs, big, 200000), QAT_ERR_ARG, "+inf at index 123456");
    ck_assert_uint_eq(qat_observer_count(obs), 0);
    free(big);
    qat_observer_free(obs);
}
END_TEST

/* ---- state and freezing ---- */

START_TEST(test_state_roundtrip)
{
    enum { N = 50000 };
    float *x = malloc(N * sizeof *x);
    qat_rng r;
    qat_rng_seed(&r, 21);
    for (int i = 0; i < N; i++) x[i] = laplace(&r) + (i % 1000 == 0 ? 20.0f : 0.0f);
    qat_observer *a = make_hist(2048), *b = make_hist(2048);
    observe_batches(a, x, N / 2, 5000);
    copy_state(b, a);
    const qat_qscheme *schemes[3] = {&ACT8, &SYM8, &SYMN8};
    for (int sc = 0; sc < 3; sc++)
        for (int m = 0; m < QAT_CALIB_COUNT; m++) {
            float s1, s2;
            int32_t z1, z2;
            ck_ok(qat_observer_qparams_with(a, schemes[sc], (qat_calib_method)m, 99.9, &s1, &z1));
            ck_ok(qat_observer_qparams_with(b, schemes[sc], (qat_calib_method)m, 99.9, &s2, &z2));
            ck_assert(s1 == s2 && z1 == z2);
        }
    /* both continue identically */
    observe_batches(a, x + N / 2, N / 2, 5000);
    observe_batches(b, x + N / 2, N / 2, 5000);
    assert_same_state(a, b);

    /* a different configuration is refused */
    qat_observer_opts o = qat_observer_opts_defaults(QAT_OBSERVER_HISTOGRAM);
    o.bins = 1024;
    qat_observer *c = qat_observer_create(&o);
    size_t n;
    const double *cfg = get_state(a, "config", &n);
    ck_assert_err(qat_observer_set_state(c, "config", cfg, n), QAT_ERR_FORMAT, "bins");
    const double bad[2] = {1.5, 2};
    ck_assert_err(qat_observer_set_state(c, "hist", bad, 2), QAT_ERR_FORMAT, "not a count");
    ck_assert_err(qat_observer_set_state(c, "nope", bad, 2), QAT_ERR_FORMAT, "unknown");
    qat_observer_free(c);
    /* counts that disagree with the counters are caught at use */
    c = make_hist(2048);
    const double *h = get_state(a, "hist_grid", &n);
    ck_ok(qat_observer_set_state(c, "hist_grid", h, n));
    h = get_state(a, "hist", &n);
    ck_ok(qat_observer_set_state(c, "hist", h, n));
    float s;
    int32_t z;
    ck_assert_err(qat_observer_qparams(c, &ACT8, &s, &z), QAT_ERR_STATE, "inconsistent");
    ck_assert_err(qat_observer_observe(c, x, 10), QAT_ERR_STATE, "inconsistent");
    qat_observer_free(c);

    /* per-channel EMA */
    o = qat_observer_opts_defaults(QAT_OBSERVER_PER_CHANNEL_EMA);
    o.channels = 5;
    qat_observer *p = qat_observer_create(&o), *q = qat_observer_create(&o);
    ck_ok(qat_observer_observe_channels(p, x, 10, 5, 100));
    ck_ok(qat_observer_observe_channels(p, x + 5000, 10, 5, 100));
    copy_state(q, p);
    ck_ok(qat_observer_observe_channels(p, x + 10000, 10, 5, 100));
    ck_ok(qat_observer_observe_channels(q, x + 10000, 10, 5, 100));
    assert_same_state(p, q);
    qat_qscheme w = qat_qscheme_weight(8);
    float s1[5], s2[5];
    int32_t z1[5], z2[5];
    ck_ok(qat_observer_qparams(p, &w, s1, z1));
    ck_ok(qat_observer_qparams(q, &w, s2, z2));
    ck_assert(memcmp(s1, s2, sizeof s1) == 0 && memcmp(z1, z2, sizeof z1) == 0);
    qat_observer_free(p);
    qat_observer_free(q);
    qat_observer_free(a);
    qat_observer_free(b);
    free(x);
}
END_TEST

START_TEST(test_frozen)
{
    const float b1[] = {-1.0f, 1.0f}, b2[] = {-10.0f, 10.0f};
    for (int k = 0; k < QAT_OBSERVER_KIND_COUNT; k++) {
        qat_observer_opts o = qat_observer_opts_defaults((qat_observer_kind)k);
        qat_observer *obs = qat_observer_create(&o), *ref = qat_observer_create(&o);
        ck_ok(qat_observer_observe_channels(obs, b1, 2, 1, 1));
        ck_ok(qat_observer_observe_channels(ref, b1, 2, 1, 1));
        qat_observer_set_enabled(obs, 0);
        ck_assert_int_eq(qat_observer_enabled(obs), 0);
        ck_ok(qat_observer_observe_channels(obs, b2, 2, 1, 1));
        qat_observer_set_enabled(ref, 0); /* the flag is part of the state */
        assert_same_state(obs, ref);
        qat_observer_set_enabled(obs, 1);
        ck_ok(qat_observer_observe_channels(obs, b2, 2, 1, 1));
        float mn, mx;
        qat_observer_minmax(obs, &mn, &mx);
        ck_assert_msg(mx > 1.0f && qat_observer_count(obs) == 4, "kind %d: max %g", k, (double)mx);
        qat_observer_free(obs);
        qat_observer_free(ref);
    }
}
END_TEST

static Suite *observers_suite(void)
{
    Suite *s = suite_create("observers");
    TCase *tc = tcase_create("minmax");
    tcase_add_test(tc, test_minmax_batches);
    tcase_add_test(tc, test_ema_by_hand);
    tcase_add_test(tc, test_per_channel);
    suite_add_tcase(s, tc);
    tc = tcase_create("histogram");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_hist_by_hand);
    tcase_add_test(tc, test_hist_growth_exact);
    tcase_add_test(tc, test_hist_threads_identical);
    suite_add_tcase(s, tc);
    tc = tcase_create("calibration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_percentile_uniform);
    tcase_add_test(tc, test_kl_heavy_tail_one_sided);
    tcase_add_test(tc, test_kl_heavy_tail_two_sided);
    tcase_add_test(tc, test_mse_kl_laplace_4bit);
    tcase_add_test(tc, test_kl_mse_uniform_keep_range);
    tcase_add_test(tc, test_kl_matches_tensorrt_reference);
    suite_add_tcase(s, tc);
    tc = tcase_create("robustness");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_constant_and_zero);
    tcase_add_test(tc, test_nonfinite_rejected);
    tcase_add_test(tc, test_state_roundtrip);
    tcase_add_test(tc, test_frozen);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(observers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
