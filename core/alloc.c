/* core/alloc.c: the library's heap allocations, with a failure-injection
 * hook for tests (one relaxed atomic add per call: allocations are never in
 * an inner loop, the autograd arena recycles its chunks). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static atomic_long alloc_count;
static atomic_long fail_at; /* 0: never */

void qat_alloc_fail_at(long n)
{
    atomic_store(&alloc_count, 0);
    atomic_store(&fail_at, n > 0 ? n : 0);
}

long qat_alloc_count(void) { return atomic_load_explicit(&alloc_count, memory_order_relaxed); }

/* 1 if this allocation is the one to fail */
static int injected(void)
{
    long k = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    long f = atomic_load_explicit(&fail_at, memory_order_relaxed);
    return f && k == f;
}

void *qat_malloc(size_t size) { return injected() ? NULL : malloc(size); }

void *qat_calloc(size_t n, size_t size) { return injected() ? NULL : calloc(n, size); }

void *qat_realloc(void *p, size_t size) { return injected() ? NULL : realloc(p, size); }

void *qat_aligned_alloc(size_t align, size_t size)
{
    if (injected()) return NULL;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}

char *qat_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = qat_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
