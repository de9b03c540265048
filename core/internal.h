/* core/internal.h: private pieces of core/ that every other part of qat
 * uses (autograd, layers, optim, datasets, io, quant, runtime). Not
 * installed. core/ depends on nothing but libc, libm and OpenMP, so it is
 * linked into both libqat and libqat_runtime. */
#ifndef QAT_CORE_INTERNAL_H
#define QAT_CORE_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- sub-byte packing (core/pack.c) ----
 * The weight encodings of the int8 model file (docs/FORMAT-int8.md,
 * "Weight encodings"): n codes of `bits` bits (1..8) as one little-endian
 * bit stream (code i at stream bits i*bits.., least significant bit first;
 * stream bit p is bit p mod 8 of byte p / 8), the last byte zero-padded.
 * Used by the writer (io/export.c) and the runtime's reader alike. */

/* ceil(n * bits / 8), without overflow for any n. */
size_t qat_packed_bytes(size_t n, int bits);
/* dst[qat_packed_bytes(n, bits)] <- the low `bits` bits of codes[n]. */
void qat_pack_bits(uint8_t *dst, const uint8_t *codes, size_t n, int bits);
/* codes[n] (each < 2^bits) <- src[qat_packed_bytes(n, bits)]. */
void qat_unpack_bits(uint8_t *codes, const uint8_t *src, size_t n, int bits);
/* 1 if the padding bits after code n - 1 in the last byte of src are 0. */
int qat_packed_padding_ok(const uint8_t *src, size_t n, int bits);
/* 1 if int8 weight w has a `bits`-bit code: [-2^(bits-1), 2^(bits-1) - 1]
 * for bits 2..8, {-1, +1} for 1 bit (binary weights have no zero). */
int qat_weight_fits_bits(int w, int bits);
/* Packs weights w[n] as `bits`-bit codes into dst[qat_packed_bytes(n,
 * bits)]: two's complement for bits 2..8, 1 bit: 1 = +1, 0 = -1. Returns
 * -1, or the index of the first weight without a code (dst untouched). */
long long qat_pack_weights(uint8_t *dst, const int8_t *w, size_t n, int bits);
/* The inverse: w[n] <- the codes in src (every code decodes: b-bit two's
 * complement sign-extended, or +-1 for 1 bit). */
void qat_unpack_weights(int8_t *w, const uint8_t *src, size_t n, int bits);
/* Index bits of a K-entry codebook: ceil(log2 K), at least 1 (K in 2..256). */
int qat_index_bits(int k);

#endif
