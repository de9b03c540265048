/* core/threads.c: one knob for everything qat runs in parallel. */
#include <omp.h>
#include <stdlib.h>

#include "core/internal.h"

void (*qat_blas_set_threads_hook)(int n);

int qat_default_num_threads(void)
{
    const char *e = getenv("QAT_NUM_THREADS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v > 0 && v <= 4096) return (int)v;
    }
    int p = omp_get_num_procs();
    return p > 0 ? p : 1;
}

static int num_threads = 0;

void qat_set_num_threads(int n)
{
    if (n <= 0) n = qat_default_num_threads();
    num_threads = n;
    omp_set_num_threads(n);
    /* One owner of the cores: GEMMs are split over our OpenMP threads and
     * OpenBLAS runs single-threaded inside each slice. */
    if (qat_blas_set_threads_hook) qat_blas_set_threads_hook(1);
}

int qat_get_num_threads(void)
{
    if (num_threads <= 0) qat_set_num_threads(0);
    return num_threads;
}
