/* core/internal.h: private pieces of core/ that every other part of qat
 * uses (autograd, layers, optim, datasets, io, quant, runtime). Not
 * installed. core/ depends on nothing but libc, libm and OpenMP, so it is
 * linked into both libqat and libqat_runtime. */
#ifndef QAT_CORE_INTERNAL_H
#define QAT_CORE_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "qat/core.h"

#if defined(__GNUC__)
#define QAT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define QAT_PRINTF(a, b)
#endif

/* ---- errors (core/error.c) ---- */

/* Sets the thread's last error to the formatted message and returns status
 * (so `return qat_error(QAT_ERR_ARG, "...")` reads naturally). */
int qat_error(int status, const char *fmt, ...) QAT_PRINTF(2, 3);
/* Same, returning NULL. */
void *qat_error_null(int status, const char *fmt, ...) QAT_PRINTF(2, 3);
/* qat_error with a va_list (for wrappers such as the runtime's). */
int qat_verror(int status, const char *fmt, va_list ap);

/* ---- allocation (core/alloc.c) ----
 * Every heap allocation of the library goes through these (never through
 * malloc directly), so that a test can make the N-th one fail
 * (qat_alloc_fail_at) and check that each failure is reported. Free with
 * free(); qat_aligned_alloc rounds size up to a multiple of align. */
void *qat_malloc(size_t size);
void *qat_calloc(size_t n, size_t size);
void *qat_realloc(void *p, size_t size);
void *qat_aligned_alloc(size_t align, size_t size);
char *qat_strdup(const char *s);

/* Test hook: the n-th allocation from now on (1-based, counting every call
 * above on every thread) fails as if memory ran out; n = 0 disables it.
 * Resets the counter qat_alloc_count() reads. */
void qat_alloc_fail_at(long n);
/* Allocations made since the last qat_alloc_fail_at call. */
long qat_alloc_count(void);

/* ---- threads (core/threads.c) ---- */

/* The thread count a run starts with: QAT_NUM_THREADS if it is a whole
 * number in [1, 4096], else the number of processors (at least 1). */
int qat_default_num_threads(void);
/* Set by the training library (autograd/gemm.c, which links OpenBLAS; the
 * runtime does not): qat_set_num_threads calls it with 1, so OpenBLAS runs
 * single-threaded inside qat's own thread split. */
extern void (*qat_blas_set_threads_hook)(int n);

/* The slice [*begin, *end) of n items that thread t of nt takes: equal
 * chunks of ceil(n / nt), the last ones shorter or empty (a fixed split:
 * the same thread count gives the same partial results). */
static inline void qat_thread_span(int t, int nt, size_t n, size_t *begin, size_t *end)
{
    size_t chunk = (n + (size_t)nt - 1) / (size_t)nt, b = (size_t)t * chunk, e = b + chunk;
    *begin = b > n ? n : b;
    *end = e > n ? n : e;
}

/* ---- CPU features (core/cpu.c) ---- */

typedef enum {
    QAT_CPU_AVX2 = 0,
    QAT_CPU_FMA,
    QAT_CPU_F16C,
    QAT_CPU_AVX512F,
    QAT_CPU_AVX512BW,
    QAT_CPU_AVX512VL,
    QAT_CPU_AVX512VNNI,
    QAT_CPU_FEATURE_COUNT
} qat_cpu_feature;

/* 1 if this CPU and OS support the feature (GCC's __builtin_cpu_supports
 * also checks that the OS saves the vector registers); 0 elsewhere and on
 * non-x86 targets. */
int qat_cpu_has(qat_cpu_feature f);

#endif
