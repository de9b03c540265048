/* Status strings, the thread-local last error, threads, the seeded RNG. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <cblas.h>

#include "autograd/internal.h"

const char *qat_status_str(int status)
{
    switch (status) {
#define QAT_X_CASE(name, value, desc) \
    case value:                       \
        return desc;
        QAT_STATUS_LIST(QAT_X_CASE)
#undef QAT_X_CASE
    }
    return "unknown status";
}

static _Thread_local char last_error[512];

const char *qat_last_error(void) { return last_error; }
void qat_clear_error(void) { last_error[0] = '\0'; }

static void set_error(const char *fmt, va_list ap)
{
    /* Format into a scratch buffer first: the arguments may point into
     * last_error itself (a message that quotes the previous error). */
    char buf[sizeof last_error];
    vsnprintf(buf, sizeof buf, fmt, ap);
    memcpy(last_error, buf, sizeof buf);
}

int qat_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return status;
}

void *qat_error_null(int status, const char *fmt, ...)
{
    va_list ap;
    (void)status;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return NULL;
}

size_t qat_shape_numel(int ndim, const int *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

const char *qat_shape_str(const qat_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%d" : "%d", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

/* ---- threads ---- */

static int num_threads = 0;

void qat_set_num_threads(int n)
{
    if (n <= 0) {
        const char *e = getenv("QAT_NUM_THREADS");
        n = e ? atoi(e) : 0;
        if (n <= 0) n = omp_get_num_procs();
    }
    num_threads = n;
    omp_set_num_threads(n);
    /* One owner of the cores: GEMMs are split over our OpenMP threads and
     * OpenBLAS runs single-threaded inside each slice. */
    openblas_set_num_threads(1);
}

int qat_get_num_threads(void)
{
    if (num_threads <= 0) qat_set_num_threads(0);
    return num_threads;
}

/* ---- RNG: xoshiro128++ seeded by splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void qat_rng_seed(qat_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    r->s[0] = (uint32_t)a;
    r->s[1] = (uint32_t)(a >> 32);
    r->s[2] = (uint32_t)b;
    r->s[3] = (uint32_t)(b >> 32);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1;
}

static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t qat_rng_u32(qat_rng *r)
{
    uint32_t *s = r->s;
    uint32_t result = rotl(s[0] + s[3], 7) + s[0];
    uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float qat_rng_uniform(qat_rng *r) { return (float)(qat_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

uint32_t qat_rng_below(qat_rng *r, uint32_t n)
{
    /* Lemire's nearly-divisionless method with rejection: unbiased. */
    uint64_t m = (uint64_t)qat_rng_u32(r) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)qat_rng_u32(r) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float qat_rng_normal(qat_rng *r)
{
    float u1 = qat_rng_uniform(r), u2 = qat_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}
