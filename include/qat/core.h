/* qat/core.h: status codes, errors, threads, the SIMD level, the seeded RNG.
 * (core/: linked into both libqat and libqat_runtime.)
 *
 * Every fallible function in qat returns a status (0 ok, negative error) or
 * NULL; qat_last_error() then says what went wrong and where. The message is
 * thread-local and stays valid until the next failing call on that thread
 * (sqlite's errmsg contract). The library never prints and never exits. */
#ifndef QAT_CORE_H
#define QAT_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(QAT_BUILDING) && defined(__GNUC__)
#define QAT_API __attribute__((visibility("default")))
#else
#define QAT_API
#endif

/* X(name, value, description) */
#define QAT_STATUS_LIST(X)                                           \
    X(QAT_OK, 0, "ok")                                               \
    X(QAT_ERR_NOMEM, -1, "out of memory")                            \
    X(QAT_ERR_ARG, -2, "invalid argument")                           \
    X(QAT_ERR_SHAPE, -3, "shape mismatch")                           \
    X(QAT_ERR_IO, -4, "input/output error")                          \
    X(QAT_ERR_FORMAT, -5, "malformed or mismatched file")            \
    X(QAT_ERR_UNSUPPORTED, -6, "unsupported operation")              \
    X(QAT_ERR_STATE, -7, "operation not valid in the current state") \
    X(QAT_ERR_INTERRUPTED, -8, "interrupted")

typedef enum {
#define QAT_X_ENUM(name, value, desc) name = value,
    QAT_STATUS_LIST(QAT_X_ENUM)
#undef QAT_X_ENUM
} qat_status;

/* Short description of a status code ("shape mismatch"); never NULL. */
QAT_API const char *qat_status_str(int status);

/* The message of the last failing call on this thread, e.g.
 * "conv2d: input has 3 channels, weight expects 1". "" if none. */
QAT_API const char *qat_last_error(void);

/* Clears the last-error slot. */
QAT_API void qat_clear_error(void);

/* Threads: one knob for everything qat runs in parallel (OpenMP loops and
 * GEMM slices). n <= 0 means: the QAT_NUM_THREADS environment variable if
 * set, else the number of processors. OpenBLAS itself is kept at one thread
 * so that the cores have one owner. */
QAT_API void qat_set_num_threads(int n);
QAT_API int qat_get_num_threads(void);

/* The SIMD level of the float training kernels (autograd/): the best the
 * CPU supports unless lowered by the QAT_SIMD environment variable (read
 * once: 0 = portable C and OpenBLAS, 1 = at most AVX2+FMA, 2 = AVX-512F) or
 * by qat_simd_set_level (-1 restores the default; capped at what the CPU
 * supports; not thread-safe: call between steps; returns the level set).
 * The engines differ only in the order of additions inside dot products;
 * with a given level and thread count every result is reproducible. The
 * int8 runtime picks its kernels separately (qat_rt_set_isa). */
enum { QAT_SIMD_PORTABLE = 0, QAT_SIMD_AVX2 = 1, QAT_SIMD_AVX512 = 2 };
QAT_API int qat_simd_level(void);
QAT_API int qat_simd_set_level(int level);

/* Seeded random numbers (xoshiro128++ seeded by splitmix64). The state is a
 * plain value: copy it to save it, so a resumed run continues exactly. */
typedef struct qat_rng {
    uint32_t s[4];
} qat_rng;

QAT_API void qat_rng_seed(qat_rng *r, uint64_t seed);
QAT_API uint32_t qat_rng_u32(qat_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
QAT_API float qat_rng_uniform(qat_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
QAT_API uint32_t qat_rng_below(qat_rng *r, uint32_t n);
/* Standard normal (Box-Muller). */
QAT_API float qat_rng_normal(qat_rng *r);

#ifdef __cplusplus
}
#endif
#endif
