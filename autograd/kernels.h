/* Private compute kernels of the autograd ops: run-time SIMD selection and
 * the GEMM kernels the convolutions use (autograd/simd.c). Not installed.
 *
 * Two engines compute the same products:
 *  - portable: OpenBLAS sgemm (single-threaded inside) and plain C loops;
 *  - avx512:   micro-kernels written with AVX-512F intrinsics, compiled
 *              with a target attribute (the library itself is built for
 *              the baseline ISA) and chosen at run time when the CPU has
 *              AVX-512F.
 * They differ only in the order of the additions inside a dot product
 * (both use fused multiply-add, as OpenBLAS does), so results agree to
 * rounding; with a given engine and thread count every result is
 * reproducible. QAT_SIMD=0 in the environment (read once) or
 * qat_simd_set_level(0) selects the portable engine, QAT_SIMD=1 caps it
 * at the AVX2 one (which also runs the avx512 engine's algorithms, with
 * AVX2 + FMA kernels, on CPUs without AVX-512). */
#ifndef QAT_KERNELS_H
#define QAT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "qat/tensor.h"

/* Engines, in order (qat/core.h: QAT_SIMD_*, qat_simd_level, selected in
 * core/cpu.c): each level's kernels need its ISA (AVX2 with FMA;
 * AVX-512F). AVX2 and AVX-512 run the same GEMM and elementwise kernels'
 * interface below (the avx512 engine's interface, with 8-lane vectors
 * underneath on AVX2); everything else only asks for `>= QAT_SIMD_AVX2`. */

/* ---- GEMM kernels of the avx2 and avx512 engines ----
 * Both read the reduction operand B through a qat_brows: row k = c*kk + q
 * of B starts at b + c*cstride + koff[q]. A plain row-major B is
 * {nc = K, kk = 1, cstride = ldb, koff = {0}}; a convolution reads its
 * input directly: c the input channel, q = (kh, kw), koff[q] the tap's
 * offset, columns the output pixels (implicit im2col). With `mask`, the
 * lanes of tap q that fall outside the image (padding) are not read:
 * bit j of mask[t*kk + q] says whether column 32*t + j of the rows of tap
 * q exists; those rows may then start before their plane. */
typedef struct {
    int nc, kk;
    ptrdiff_t cstride;
    const ptrdiff_t *koff;
    const uint32_t *mask; /* qat_gemm_bcast: NULL or [strip][kk] */
    int outside;          /* what B holds in the lanes off the mask: */
} qat_brows;

/* qat_brows.outside, with a mask (masked FMAs instead of masked loads
 * were measured slower: 173 vs 217 GFLOP/s on a 16x16 3x3 conv, Zen 5) */
enum {
    QAT_OUT_UNREADABLE = 0, /* maybe not readable memory: masked loads */
    QAT_OUT_ZERO = 1        /* zeros: plain loads; the mask only skips the
                             * taps with no lane in a tile (qat_gemm_bcast) */
};

#define QAT_MR 12 /* rows per packed A panel, at most */
#define QAT_NR 32 /* columns per micro-tile (two 16-float vectors) */

/* Rows per panel on the engine in use: 12 with AVX-512 (32 zmm
 * registers), 6 with AVX2 (16 ymm). Packing and the kernels agree as long
 * as the engine does not change in between (qat_simd_set_level is called
 * between steps). */
static inline int qat_panel_rows(void) { return qat_simd_level() == QAT_SIMD_AVX512 ? QAT_MR : QAT_MR / 2; }

/* Panel p of an M-row matrix: rows [*r0, *r0 + *mr), sizes as even as
 * possible (M = 16 gives 8 + 8, not 12 + 4). Panel p's packed data starts
 * at (*r0) * K floats. */
static inline int qat_panel_count(int M) { return (M + qat_panel_rows() - 1) / qat_panel_rows(); }
static inline void qat_panel(int M, int p, int *r0, int *mr)
{
    int np = qat_panel_count(M), base = M / np, extra = M % np;
    *mr = base + (p < extra);
    *r0 = p * base + (p < extra ? p : extra);
}

/* Packs A(i, k) = a[i*rs + k*cs], i < M, k < K, into ap (M*K floats):
 * panels of qat_panel, each [K][mr] (k-major). */
void qat_pack_a(float *ap, const float *a, ptrdiff_t rs, ptrdiff_t cs, int M, int K);

/* Where column g of C goes: block g / group, offset r = g % group; the
 * column exists only if r < valid; row i of it is at
 * c + i*ldc + (g / group) * gstride + r. Examples: a plain matrix
 * {group = valid = PTRDIFF_MAX}; the pixels of a batch in an NCHW tensor
 * with OC channels {group = valid = OH*OW, gstride = OC*OH*OW, ldc =
 * OH*OW}; a Wp-wide pixel grid of one image {group = Wp, valid = OW,
 * gstride = OW}. */
typedef struct {
    float *c;
    ptrdiff_t ldc, group, valid, gstride;
} qat_cmat;

enum { QAT_C_ZERO = 0, QAT_C_BIAS = 1, QAT_C_ADD = 2 };

/* C(i, g0 + j) = [C | bias[i] | 0] + sum_k A(i, k) B(k, j), i < M, j < N,
 * K = nc*kk. A packed by qat_pack_a; B rows from b (column 0) through br,
 * every row readable for N columns. mode QAT_C_ZERO overwrites C,
 * QAT_C_BIAS overwrites with the bias added, QAT_C_ADD adds into C.
 * Single-threaded; needs qat_simd_level() >= QAT_SIMD_AVX2. */
void qat_gemm_bcast(int M, int N, const float *ap, const float *b, const qat_brows *br, int mode,
                    const float *bias, const qat_cmat *cm, ptrdiff_t g0);

/* D(i, k) += sum_{s < ns} sum_{p < P} A_s(i, p) B_s(k, p), i < M, k < K =
 * nc*kk, with A_s(i, p) = a[s*sa + i*lda + p] and row k of B_s at
 * b + s*sb (through br; br->mask unused). Without mask, P is a multiple of
 * 16: callers pad A's rows with zeros and keep B's padding finite. With
 * mask ([ceil(P/16)][kk + 1], 16-bit): entry q < kk holds the lanes of
 * tap q's rows that exist in each 16-column vector, entry kk those of A's
 * rows. Single-threaded; needs qat_simd_level() >= QAT_SIMD_AVX2. */
void qat_gemm_dot(int M, int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,
                  const float *b, const qat_brows *br, ptrdiff_t sb, const uint16_t *mask, float *d,
                  ptrdiff_t ldd);

#endif

/* ---- gradients written in full ----
 * qat_grad() returns a zero-filled buffer, so a backward that adds into
 * it reads and writes every element twice. A backward that writes every
 * element of its input's gradient can instead ask for the buffer with
 * qat_grad_fresh: *fresh is 1 when the buffer was just allocated and is
 * uninitialised, so the caller stores `0.0f + v` (the same value, -0.0
 * included, as adding v to a zeroed buffer) instead of adding. Otherwise
 * it behaves as qat_grad (*fresh = 0). */
float *qat_grad_fresh(qat_ctx *ctx, qat_tensor *t, int *fresh);

/* ---- elementwise kernels (autograd/eltwise.c) ----
 * Each has a portable version and AVX-512 and AVX2 ones that perform the
 * same float/double operations in the same order (the double sums keep
 * QAT_BN_LANES lanes, lane j taking elements i = j mod QAT_BN_LANES), so
 * all give the same bits.
 * `fresh`: the destination is uninitialised and is stored (0.0f + v),
 * else v is added into it. */

#define QAT_BN_LANES 32

/* y = x > 0 ? x : 0 (y may be x: in place) */
void qat_k_relu_fwd(float *y, const float *x, size_t n);
/* dx (+)= y > 0 ? dy : -0.0f */
void qat_k_relu_bwd(float *dx, const float *y, const float *dy, size_t n, int fresh);
/* 2x2 stride 2 max pool of one H x W plane into OH x OW (OH = H/2,
 * OW = W/2): the first maximum in the order (0,0) (0,1) (1,0) (1,1) and
 * its position in win (may be NULL). */
void qat_k_maxpool2_fwd(float *y, unsigned char *win, const float *x, int H, int W, int OH, int OW);
/* Its backward into a fresh plane: dx = dy at each window's max, 0
 * elsewhere (rows and columns no window covers included). */
void qat_k_maxpool2_bwd_fresh(float *dx, const float *dy, const unsigned char *win, int H, int W,
                              int OH, int OW);
/* Bounded activations (autograd/act.c; portable C the compiler vectorises,
 * the same bits in every clone):
 * y = min(max(x, lo), hi) (y may be x; NaN stays) */
void qat_k_clamp_fwd(float *y, const float *x, size_t n, float lo, float hi);
/* dx (+)= lo < x < hi ? dy : -0.0f */
void qat_k_clamp_bwd(float *dx, const float *x, const float *dy, size_t n, float lo, float hi, int fresh);
/* y = x * min(max(x + 3, 0), 6) / 6 (y may be x) */
void qat_k_hardswish_fwd(float *y, const float *x, size_t n);
/* dx (+)= x < -3 ? 0 : x <= 3 ? dy * (x / 3 + 0.5) : dy (dx may be x) */
void qat_k_hardswish_bwd(float *dx, const float *x, const float *dy, size_t n, int fresh);
/* acc[j] += p[i] (double) */
void qat_k_acc_sum(double *acc, const float *p, size_t n);
/* acc[j] += ((double)p[i] - mu)^2 */
void qat_k_acc_sqdev(double *acc, const float *p, size_t n, double mu);
/* s[j] += dy[i]; t[j] += dy[i] * h, h = (x[i] - mean) * is (float) */
void qat_k_acc_dy(double *s, double *t, const float *dy, const float *x, size_t n, float mean,
                  float is);
/* y = g * ((x - mean) * is) + b */
void qat_k_bn_apply(float *y, const float *x, size_t n, float mean, float is, float g, float b);
/* dx (+)= gi * (dy - mdy - ((x - mean) * is) * mdyx) */
void qat_k_bn_bwd(float *dx, const float *dy, const float *x, size_t n, float mean, float is,
                  float gi, float mdy, float mdyx, int fresh);
/* For each of `rows` rows r: dst[r*ds + 2m] (+)= e[r*ss + m] and
 * dst[r*ds + 2m+1] (+)= o[r*ss + m] for the n elements of the dst row; e or
 * o NULL adds nothing (stores +0.0 when fresh). */
void qat_k_interleave2(float *dst, ptrdiff_t ds, const float *e, const float *o, ptrdiff_t ss, int rows,
                       int n, int fresh);
/* The phase planes (a, b), a < na, b < nb, of one zero-padded H x W plane
 * for stride s: plane (a, b) at dst + (a*nb + b)*ps holds
 * x[s*i + a - pt][s*j + b - pl] (0 outside x) for i < Hq, j < Wq, then
 * zeros up to ps. */
void qat_k_build_phases(float *dst, ptrdiff_t ps, const float *x, int H, int W, int s, int pt, int pl,
                        int Hq, int Wq, int na, int nb);
