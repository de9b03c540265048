/* Private helpers shared by the library's areas (not installed). */
#ifndef QAT_INTERNAL_H
#define QAT_INTERNAL_H

#include "core/internal.h" /* qat_error, qat_malloc, ... */
#include "qat/core.h"
#include "qat/tensor.h"

/* Shape helpers */
size_t qat_shape_numel(int ndim, const int *shape);
/* "[128,1,28,28]" into buf */
const char *qat_shape_str(const qat_tensor *t, char *buf, size_t n);

/* GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, via OpenBLAS
 * (single-threaded inside; split over OpenMP threads by rows of C when
 * called outside a parallel region and the product is large enough). */
void qat_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);

#endif
