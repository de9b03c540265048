/* Status strings, the last-error slot, the seeded RNG, the thread knob. */
#include <cblas.h>
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h" /* qat_error, qat_error_null */
#include "qat/core.h"
#include "testutil.h"

/* ---- status ---- */

START_TEST(test_status_str)
{
    ck_assert_str_eq(qat_status_str(QAT_OK), "ok");
    ck_assert_str_eq(qat_status_str(QAT_ERR_NOMEM), "out of memory");
    ck_assert_str_eq(qat_status_str(QAT_ERR_ARG), "invalid argument");
    ck_assert_str_eq(qat_status_str(QAT_ERR_SHAPE), "shape mismatch");
    ck_assert_str_eq(qat_status_str(QAT_ERR_IO), "input/output error");
    ck_assert_str_eq(qat_status_str(QAT_ERR_FORMAT), "malformed or mismatched file");
    ck_assert_str_eq(qat_status_str(QAT_ERR_UNSUPPORTED), "unsupported operation");
    ck_assert_str_eq(qat_status_str(QAT_ERR_STATE), "operation not valid in the current state");
    ck_assert_str_eq(qat_status_str(QAT_ERR_INTERRUPTED), "interrupted");
    ck_assert_str_eq(qat_status_str(1), "unknown status");
    ck_assert_str_eq(qat_status_str(-1000), "unknown status");
    /* every listed code: negative (except ok), distinct, described */
    static const int codes[] = {
#define X(name, value, desc) name,
        QAT_STATUS_LIST(X)
#undef X
    };
    size_t n = sizeof codes / sizeof codes[0];
    ck_assert_int_eq(codes[0], 0);
    for (size_t i = 0; i < n; i++) {
        if (i) ck_assert_int_lt(codes[i], 0);
        ck_assert_str_ne(qat_status_str(codes[i]), "unknown status");
        for (size_t j = 0; j < i; j++) ck_assert_int_ne(codes[i], codes[j]);
    }
}
END_TEST

/* ---- last error ---- */

START_TEST(test_last_error)
{
    qat_clear_error();
    ck_assert_str_eq(qat_last_error(), "");
    ck_assert_int_eq(qat_error(QAT_ERR_IO, "%s: cannot open (%d)", "a.bin", 2), QAT_ERR_IO);
    ck_assert_str_eq(qat_last_error(), "a.bin: cannot open (2)");
    ck_assert_ptr_null(qat_error_null(QAT_ERR_ARG, "second %s", "failure"));
    ck_assert_str_eq(qat_last_error(), "second failure");
    /* a message may quote the previous one */
    qat_error(QAT_ERR_ARG, "outer (%s)", qat_last_error());
    ck_assert_str_eq(qat_last_error(), "outer (second failure)");
    qat_clear_error();
    ck_assert_str_eq(qat_last_error(), "");
    /* long messages are truncated, never overflow */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    qat_error(QAT_ERR_ARG, "%s", big);
    size_t len = strlen(qat_last_error());
    ck_assert_uint_gt(len, 200);
    ck_assert_uint_lt(len, sizeof big - 1);
    /* the slot is per thread */
    qat_error(QAT_ERR_ARG, "main thread");
    int other_empty = 0, other_own = 0;
#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 1) {
            other_empty = qat_last_error()[0] == 0;
            qat_error(QAT_ERR_IO, "worker");
            other_own = strcmp(qat_last_error(), "worker") == 0;
        }
    }
    ck_assert_int_eq(other_empty, 1);
    ck_assert_int_eq(other_own, 1);
    ck_assert_str_eq(qat_last_error(), "main thread");
    qat_clear_error();
}
END_TEST

/* ---- RNG ---- */

START_TEST(test_rng_reference)
{
    /* xoshiro128++ seeded by splitmix64, values from an independent
     * implementation of the published algorithms */
    qat_rng r;
    qat_rng_seed(&r, 0);
    ck_assert_uint_eq(r.s[0], 0x7b1dcdafu);
    ck_assert_uint_eq(r.s[3], 0x6e789e6au);
    const uint32_t want0[4] = {0x4653daa3u, 0x73922b58u, 0xb82b4addu, 0xd9fabd3bu};
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(qat_rng_u32(&r), want0[i]);
    qat_rng_seed(&r, 42);
    const uint32_t want42[4] = {0x9d9452c1u, 0x6909d440u, 0x6148a68fu, 0x54829a5bu};
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(qat_rng_u32(&r), want42[i]);
}
END_TEST

START_TEST(test_rng_determinism)
{
    qat_rng a, b, c;
    qat_rng_seed(&a, 1234);
    qat_rng_seed(&b, 1234);
    qat_rng_seed(&c, 1235);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = qat_rng_u32(&a);
        ck_assert_uint_eq(x, qat_rng_u32(&b));
        differ += x != qat_rng_u32(&c);
    }
    ck_assert_int_gt(differ, 990);
    /* the state is a value: a copy continues exactly */
    qat_rng saved = a;
    float u[5], n[5];
    uint32_t k[5];
    for (int i = 0; i < 5; i++) {
        u[i] = qat_rng_uniform(&a);
        n[i] = qat_rng_normal(&a);
        k[i] = qat_rng_below(&a, 17);
    }
    for (int i = 0; i < 5; i++) {
        ck_assert(u[i] == qat_rng_uniform(&saved));
        ck_assert(n[i] == qat_rng_normal(&saved));
        ck_assert_uint_eq(k[i], qat_rng_below(&saved, 17));
    }
    /* uniform is the top 24 bits */
    qat_rng_seed(&a, 42);
    ck_assert(qat_rng_uniform(&a) == (float)(0x9d9452c1u >> 8) / 16777216.0f);
}
END_TEST

START_TEST(test_rng_uniform_range)
{
    qat_rng r;
    qat_rng_seed(&r, 7);
    const int n = 1000000;
    double s = 0, q = 0, mn = 1, mx = 0;
    int bins[10] = {0};
    for (int i = 0; i < n; i++) {
        float u = qat_rng_uniform(&r);
        ck_assert(u >= 0.0f && u < 1.0f);
        s += u;
        q += (double)u * u;
        mn = fmin(mn, u);
        mx = fmax(mx, u);
        bins[(int)(u * 10)]++;
    }
    double mean = s / n, var = q / n - mean * mean;
    ck_assert_double_eq_tol(mean, 0.5, 2e-3);
    ck_assert_double_eq_tol(var, 1.0 / 12, 1e-3);
    ck_assert_double_lt(mn, 1e-5);
    ck_assert_double_gt(mx, 1 - 1e-5);
    for (int b = 0; b < 10; b++) ck_assert_int_lt(abs(bins[b] - n / 10), 1500); /* ~5 sigma */
    /* the largest value the generator can return is below 1 */
    ck_assert((float)(0xffffffffu >> 8) * (1.0f / 16777216.0f) < 1.0f);
}
END_TEST

START_TEST(test_rng_below)
{
    qat_rng r;
    qat_rng_seed(&r, 9);
    const uint32_t ns[] = {1, 2, 3, 7, 10, 1000, 0x80000001u, 0xfffffffeu, 0xffffffffu};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int k = 0; k < 20000; k++) {
            uint32_t v = qat_rng_below(&r, ns[i]);
            ck_assert_msg(v < ns[i], "below(%u) gave %u", ns[i], v);
        }
    /* n = 10: chi-square over 100000 draws (9 dof; 27.9 is p = 0.001) */
    int cnt[10] = {0};
    const int draws = 100000;
    for (int k = 0; k < draws; k++) cnt[qat_rng_below(&r, 10)]++;
    double chi = 0;
    for (int b = 0; b < 10; b++) chi += (cnt[b] - draws / 10.0) * (cnt[b] - draws / 10.0) / (draws / 10.0);
    ck_assert_double_lt(chi, 27.9);
    /* n = 3 * 2^30: a modulo reduction would give values below 2^30 half the
     * time; unbiased gives a third */
    int low = 0;
    for (int k = 0; k < draws; k++) low += qat_rng_below(&r, 0xC0000000u) < 0x40000000u;
    ck_assert_double_eq_tol((double)low / draws, 1.0 / 3, 0.01);
    /* every value of a small range appears */
    int seen[7] = {0};
    for (int k = 0; k < 200; k++) seen[qat_rng_below(&r, 7)] = 1;
    for (int b = 0; b < 7; b++) ck_assert_int_eq(seen[b], 1);
}
END_TEST

START_TEST(test_rng_normal)
{
    qat_rng r;
    qat_rng_seed(&r, 11);
    const int n = 200000;
    double s = 0, q = 0;
    int tail = 0;
    for (int i = 0; i < n; i++) {
        float x = qat_rng_normal(&r);
        ck_assert(isfinite(x));
        s += x;
        q += (double)x * x;
        tail += fabsf(x) > 1.959964f;
    }
    ck_assert_double_eq_tol(s / n, 0, 0.01);
    ck_assert_double_eq_tol(q / n, 1, 0.015);
    ck_assert_double_eq_tol((double)tail / n, 0.05, 0.003);
}
END_TEST

/* ---- threads ---- */

START_TEST(test_threads)
{
    qat_set_num_threads(3);
    ck_assert_int_eq(qat_get_num_threads(), 3);
    ck_assert_int_eq(omp_get_max_threads(), 3);
    ck_assert_int_eq(openblas_get_num_threads(), 1); /* one owner of the cores */
    qat_set_num_threads(1);
    ck_assert_int_eq(qat_get_num_threads(), 1);
    ck_assert_int_eq(omp_get_max_threads(), 1);
    /* n <= 0: QAT_NUM_THREADS, else the processors */
    setenv("QAT_NUM_THREADS", "2", 1);
    qat_set_num_threads(0);
    ck_assert_int_eq(qat_get_num_threads(), 2);
    qat_set_num_threads(-5);
    ck_assert_int_eq(qat_get_num_threads(), 2);
    setenv("QAT_NUM_THREADS", "junk", 1);
    qat_set_num_threads(0);
    ck_assert_int_eq(qat_get_num_threads(), omp_get_num_procs());
    unsetenv("QAT_NUM_THREADS");
    qat_set_num_threads(0);
    ck_assert_int_eq(qat_get_num_threads(), omp_get_num_procs());
    ck_assert_int_ge(qat_get_num_threads(), 1);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_status_str);
    tcase_add_test(tc, test_last_error);
    tcase_add_test(tc, test_rng_reference);
    tcase_add_test(tc, test_rng_determinism);
    tcase_add_test(tc, test_rng_uniform_range);
    tcase_add_test(tc, test_rng_below);
    tcase_add_test(tc, test_rng_normal);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
