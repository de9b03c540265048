/* GEMM wrapper: row-major sgemm through OpenBLAS, split over OpenMP threads.
 *
 * OpenBLAS is kept single-threaded (qat_set_num_threads) so the cores have
 * one owner. A large product is cut into blocks of rows (or columns) of C,
 * one per thread; the split depends only on the thread count, so the same
 * thread count reproduces the same numbers. */
#include <cblas.h>
#include <omp.h>

#include "autograd/internal.h"

/* core/threads.c keeps OpenBLAS at one thread through this hook (core/ is
 * also linked into the runtime, which has no OpenBLAS). Registered when
 * the library is loaded, before any qat call. */
__attribute__((constructor)) static void register_blas_threads(void)
{
    qat_blas_set_threads_hook = openblas_set_num_threads;
}

void qat_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    /* inside an active parallel region (a conv's per-thread chunks) the
     * caller owns the cores; an inactive enclosing region (a team of one)
     * does not, so batch-1 products still split */
    int nt = omp_get_active_level() > 0 ? 1 : qat_get_num_threads();
    double flops = 2.0 * M * N * (K > 0 ? K : 1);
    if (nt > 1 && flops < 2e6) nt = 1;
    /* split the larger of M and N */
    if (nt <= 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M >= N) {
        int block = (M + nt - 1) / nt;
        block = (block + 7) / 8 * 8;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int t = 0; t < nt; t++) {
            int m0 = t * block;
            int mb = M - m0 < block ? M - m0 : block;
            if (mb <= 0) continue;
            const float *a = trans_a ? A + m0 : A + (size_t)m0 * lda;
            cblas_sgemm(CblasRowMajor, ta, tb, mb, N, K, alpha, a, lda, B, ldb, beta,
                        C + (size_t)m0 * ldc, ldc);
        }
    } else {
        int block = (N + nt - 1) / nt;
        block = (block + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int t = 0; t < nt; t++) {
            int n0 = t * block;
            int nb = N - n0 < block ? N - n0 : block;
            if (nb <= 0) continue;
            const float *b = trans_b ? B + (size_t)n0 * ldb : B + n0;
            cblas_sgemm(CblasRowMajor, ta, tb, M, nb, K, alpha, A, lda, b, ldb, beta, C + n0,
                        ldc);
        }
    }
}
