/* Run-time SIMD selection and the packed GEMM of autograd/kernels.h.
 *
 * The AVX-512 micro-kernel keeps an mr x 32 tile of C (mr <= 12 rows, two
 * 16-float vectors per row: up to 24 accumulators) in registers; each step
 * of k loads one row of B (two vectors) and broadcasts mr values of the
 * packed A panel. The tile is then stored through the qat_cmat mapping
 * with masked stores, at most two pieces per row (a tile may straddle two
 * samples of an NCHW tensor). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX512_KERNELS 1
#include <immintrin.h>
#else
#define HAVE_AVX512_KERNELS 0
#endif

/* ---- engine selection ---- */

static int simd_cpu = -1;    /* best level the CPU supports */
static int simd_level = -1;  /* level in use */

static int detect(void)
{
#if HAVE_AVX512_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return QAT_SIMD_AVX512;
#endif
    return QAT_SIMD_PORTABLE;
}

int qat_simd_set_level(int level)
{
    if (simd_cpu < 0) simd_cpu = detect();
    if (level < 0) {
        const char *e = getenv("QAT_SIMD");
        level = (e && e[0] == '0' && e[1] == 0) ? QAT_SIMD_PORTABLE : simd_cpu;
    }
    simd_level = level < simd_cpu ? level : simd_cpu;
    return simd_level;
}

int qat_simd_level(void)
{
    if (simd_level < 0) qat_simd_set_level(-1);
    return simd_level;
}

/* ---- packing ---- */

void qat_pack_a(float *ap, const float *a, ptrdiff_t rs, ptrdiff_t cs, int M, int K)
{
    int np = qat_panel_count(M);
    for (int p = 0; p < np; p++) {
        int r0, mr;
        qat_panel(M, p, &r0, &mr);
        float *dst = ap + (size_t)r0 * K;
        for (int k = 0; k < K; k++)
            for (int i = 0; i < mr; i++) dst[(size_t)k * mr + i] = a[(r0 + i) * rs + k * cs];
    }
}

/* ---- AVX-512 micro-kernels ---- */

#if HAVE_AVX512_KERNELS
#define AVX512 __attribute__((target("avx512f")))
#define INLINE inline __attribute__((always_inline))
#define MAXP 6 /* pieces a 32-column tile may be stored in */

/* Where a tile's columns go in every row: lanes of piece p (masks lo/hi)
 * at row + off[p] + lane. blo/bhi: the columns that exist in B. */
typedef struct {
    int np;
    ptrdiff_t off[MAXP];
    __mmask16 lo[MAXP], hi[MAXP];
    __mmask16 blo, bhi;
} tile_map;

/* B rows are addressed through integers: with masks, a row may start
 * before its plane (the lanes there are never read). */
static INLINE const float *at_offset(const float *b, ptrdiff_t off)
{
    return (const float *)(uintptr_t)((uintptr_t)b + (uintptr_t)(off * (ptrdiff_t)sizeof(float)));
}

typedef void (*bcast_fn)(const float *a, const float *b, const qat_brows *br, const uint32_t *km,
                         const tile_map *t, int mode, const float *bias, float *c, ptrdiff_t ldc);

/* An MR x (16*NV) tile: a is the packed panel [K][MR], b column 0 of the
 * tile in B, c row 0 of C (piece offsets in t); km: the strip's tap masks
 * (MASKED) or unused. */
static INLINE AVX512 void bcast_body(const int MR, const int NV, const int MASKED,
                                     const float *restrict a, const float *restrict b,
                                     const qat_brows *br, const uint32_t *km, const tile_map *t,
                                     int mode, const float *bias, float *c, ptrdiff_t ldc)
{
    __m512 c0[QAT_MR], c1[QAT_MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        if (mode == QAT_C_ADD) {
            const float *ci = c + i * ldc;
            c0[i] = _mm512_setzero_ps();
            c1[i] = _mm512_setzero_ps();
            for (int p = 0; p < t->np; p++) {
                if (t->lo[p]) c0[i] = _mm512_mask_loadu_ps(c0[i], t->lo[p], ci + t->off[p]);
                if (NV > 1 && t->hi[p]) c1[i] = _mm512_mask_loadu_ps(c1[i], t->hi[p], ci + t->off[p] + 16);
            }
        } else {
            c0[i] = mode == QAT_C_BIAS ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
            c1[i] = c0[i];
        }
    }
    const __mmask16 blo = t->blo, bhi = t->bhi;
    const uint32_t all = (uint32_t)blo | (uint32_t)bhi << 16;
    /* masked loads cost about twice a plain one (Zen 5): a full tile whose
     * lanes need no masking loads plainly */
    const int plain = MASKED != 1 && blo == 0xffff && (NV == 1 || bhi == 0xffff);
    const int nc = br->nc, kk = br->kk;
    const ptrdiff_t cs = br->cstride, *koff = br->koff;
    for (int ch = 0; ch < nc; ch++) {
        const float *bc = at_offset(b, ch * cs);
        for (int q = 0; q < kk; q++) {
            const float *bk = at_offset(bc, koff[q]);
            __mmask16 mlo = blo, mhi = bhi;
            if (MASKED) {
                uint32_t m = km[q] & all;
                if (!m) { /* the tap reads only padding in this tile */
                    a += MR;
                    continue;
                }
                if (MASKED == 1) {
                    mlo = (__mmask16)m;
                    mhi = (__mmask16)(m >> 16);
                }
            }
            __m512 b0, b1;
            if (plain) {
                b0 = _mm512_loadu_ps(bk);
                b1 = NV > 1 ? _mm512_loadu_ps(bk + 16) : b0;
            } else {
                b0 = _mm512_maskz_loadu_ps(mlo, bk);
                b1 = NV > 1 ? _mm512_maskz_loadu_ps(mhi, bk + 16) : b0;
            }
            /* the same row two tiles on: read in place (not a copy in
             * cache), B streams in from L2 or memory */
            if (MASKED) _mm_prefetch((const char *)at_offset(bk, 2 * QAT_NR), _MM_HINT_T0);
#pragma GCC unroll 12
            for (int i = 0; i < MR; i++) {
                __m512 av = _mm512_set1_ps(a[i]);
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                if (NV > 1) c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
            a += MR;
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        for (int p = 0; p < t->np; p++) {
            if (t->lo[p] == 0xffff)
                _mm512_storeu_ps(ci + t->off[p], c0[i]);
            else if (t->lo[p])
                _mm512_mask_storeu_ps(ci + t->off[p], t->lo[p], c0[i]);
            if (NV > 1 && t->hi[p] == 0xffff)
                _mm512_storeu_ps(ci + t->off[p] + 16, c1[i]);
            else if (NV > 1 && t->hi[p])
                _mm512_mask_storeu_ps(ci + t->off[p] + 16, t->hi[p], c1[i]);
        }
    }
}

#define BK(MR, NV, M)                                                                           \
    static AVX512 void bk_##MR##_##NV##_##M(const float *a, const float *b, const qat_brows *br, \
                                            const uint32_t *km, const tile_map *t, int mode,     \
                                            const float *bias, float *c, ptrdiff_t ldc)          \
    {                                                                                             \
        bcast_body(MR, NV, M, a, b, br, km, t, mode, bias, c, ldc);                               \
    }
#define BK_NV(MR) BK(MR, 1, 0) BK(MR, 2, 0) BK(MR, 1, 1) BK(MR, 2, 1) BK(MR, 1, 2) BK(MR, 2, 2)
BK_NV(1) BK_NV(2) BK_NV(3) BK_NV(4) BK_NV(5) BK_NV(6)
BK_NV(7) BK_NV(8) BK_NV(9) BK_NV(10) BK_NV(11) BK_NV(12)

#define BROW(MR) {{bk_##MR##_1_0, bk_##MR##_2_0}, {bk_##MR##_1_1, bk_##MR##_2_1}, {bk_##MR##_1_2, bk_##MR##_2_2}}
static const bcast_fn bcast_kernels[QAT_MR + 1][3][2] = {
    {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}},
    BROW(1), BROW(2), BROW(3), BROW(4), BROW(5), BROW(6),
    BROW(7), BROW(8), BROW(9), BROW(10), BROW(11), BROW(12),
};
_Static_assert(QAT_MR == 12, "bcast_kernels lists 12 panel heights");

static __mmask16 lo16(uint32_t m) { return (__mmask16)(m & 0xffffu); }
static __mmask16 hi16(uint32_t m) { return (__mmask16)(m >> 16); }
static uint32_t lanes(int from, int to) /* bits [from, to) */
{
    uint32_t below_to = to >= 32 ? 0xffffffffu : (1u << to) - 1u;
    uint32_t below_from = from >= 32 ? 0xffffffffu : (1u << from) - 1u;
    return below_to & ~below_from;
}

/* The pieces of the n columns starting at global column g; 0 if more
 * than MAXP. */
static int map_tile(tile_map *t, const qat_cmat *cm, ptrdiff_t g, int n)
{
    t->np = 0;
    for (int j = 0; j < n;) {
        ptrdiff_t gj = g + j, blk = gj / cm->group, r = gj % cm->group;
        if (r >= cm->valid) { /* skip the block's missing columns */
            ptrdiff_t skip = cm->group - r;
            j = skip > n - j ? n : j + (int)skip;
            continue;
        }
        int len = cm->valid - r < n - j ? (int)(cm->valid - r) : n - j;
        if (t->np == MAXP) return 0;
        uint32_t m = lanes(j, j + len);
        t->off[t->np] = blk * cm->gstride + r - j;
        t->lo[t->np] = lo16(m);
        t->hi[t->np] = hi16(m);
        t->np++;
        j += len;
    }
    return 1;
}

/* Column j of a tile at global column g: its offset from row 0, or -1 */
static ptrdiff_t col_offset(const qat_cmat *cm, ptrdiff_t g)
{
    ptrdiff_t r = g % cm->group;
    return r < cm->valid ? (g / cm->group) * cm->gstride + r : -1;
}

void qat_gemm_bcast(int M, int N, const float *ap, const float *b, const qat_brows *br, int mode,
                    const float *bias, const qat_cmat *cm, ptrdiff_t g0)
{
    const int np = qat_panel_count(M), K = br->nc * br->kk;
    /* kernel variants: 0 no mask, 1 masked loads, 2 skip empty taps (zeros
     * outside) */
    const int masked = br->mask == NULL ? 0 : br->outside == QAT_OUT_ZERO ? 2 : 1;
    for (int j0 = 0; j0 < N; j0 += QAT_NR) {
        int n = N - j0 < QAT_NR ? N - j0 : QAT_NR;
        int nv = n > 16 ? 2 : 1;
        uint32_t all = lanes(0, n);
        const uint32_t *km = masked ? br->mask + (size_t)(j0 / QAT_NR) * br->kk : NULL;
        tile_map t;
        int direct = map_tile(&t, cm, g0 + j0, n);
        if (direct && t.np == 0) continue; /* no column of the tile exists */
        t.blo = lo16(all);
        t.bhi = hi16(all);
        const bcast_fn *row = NULL;
        for (int pi = 0; pi < np; pi++) {
            int r0, mr;
            qat_panel(M, pi, &r0, &mr);
            row = bcast_kernels[mr][masked];
            const float *a = ap + (size_t)r0 * K, *bi = bias ? bias + r0 : NULL;
            float *c = cm->c + r0 * cm->ldc;
            if (direct) {
                row[nv - 1](a, b + j0, br, km, &t, mode, bi, c, cm->ldc);
                continue;
            }
            /* too many pieces: through a plain tile */
            float tmp[QAT_MR * QAT_NR];
            tile_map tt = {.np = 1, .off = {0}, .lo = {lo16(all)}, .hi = {hi16(all)},
                           .blo = lo16(all), .bhi = hi16(all)};
            for (int j = 0; j < n && mode == QAT_C_ADD; j++) {
                ptrdiff_t o = col_offset(cm, g0 + j0 + j);
                for (int i = 0; i < mr; i++) tmp[i * QAT_NR + j] = o < 0 ? 0.0f : c[i * cm->ldc + o];
            }
            row[nv - 1](a, b + j0, br, km, &tt, mode, bi, tmp, QAT_NR);
            for (int j = 0; j < n; j++) {
                ptrdiff_t o = col_offset(cm, g0 + j0 + j);
                if (o >= 0)
                    for (int i = 0; i < mr; i++) c[i * cm->ldc + o] = tmp[i * QAT_NR + j];
            }
        }
    }
}

/* ---- dot-product kernel (weight gradients) ---- */

/* An MI x NJ tile of D: MI rows of A, NJ rows of B (unaligned: the taps of
 * a plane). 6 x 4 measured fastest on Zen 5 (4 x 6 and 3 x 8, with more
 * unaligned loads, were 10-50% slower). */
#define DOT_MI 6
#define DOT_NJ 4

typedef void (*dot_fn)(int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,
                       const float *const *bj, const uint16_t *tm, ptrdiff_t sb, float *d,
                       ptrdiff_t ldd);

/* tm (MASKED): the tile's masks, [vector][1 + NJ]: entry 0 the lanes of
 * the A rows, entry 1 + j those of B row j (gathered per tile, so the loop
 * keeps one mask pointer) */
static INLINE AVX512 void dot_body(const int MI, const int NJ, const int MASKED, int P, int ns,
                                   const float *a, ptrdiff_t lda, ptrdiff_t sa,
                                   const float *const *bj, const uint16_t *tm, ptrdiff_t sb,
                                   float *d, ptrdiff_t ldd)
{
    __m512 acc[DOT_MI][DOT_NJ];
    const float *bp[DOT_NJ];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; j++) bp[j] = bj[j];
#pragma GCC unroll 8
    for (int i = 0; i < MI; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NJ; j++) acc[i][j] = _mm512_setzero_ps();
    for (int s = 0; s < ns; s++) {
        const float *as = a + s * sa;
        const ptrdiff_t bo = s * sb;
        const uint16_t *mv = tm;
        for (int p = 0; p < P; p += 16, mv += 1 + NJ) {
            __m512 av[DOT_MI];
            /* masked loads cost about twice a plain one here (Zen 5): the
             * A rows are masked only in the last, partial vector */
            const int tail = MASKED && p + 16 > P;
#pragma GCC unroll 8
            for (int i = 0; i < MI; i++)
                av[i] = tail ? _mm512_maskz_loadu_ps(mv[0], as + i * lda + p) : _mm512_loadu_ps(as + i * lda + p);
            /* in place, B streams in: one prefetch ahead for the tile's last
             * (furthest) row covers the others a few steps later */
            if (MASKED) _mm_prefetch((const char *)at_offset(bp[NJ - 1], bo + p + 64), _MM_HINT_T0);
#pragma GCC unroll 8
            for (int j = 0; j < NJ; j++) {
                const float *bq = at_offset(bp[j], bo + p);
                __m512 bv = MASKED ? _mm512_maskz_loadu_ps(mv[1 + j], bq) : _mm512_loadu_ps(bq);
#pragma GCC unroll 8
                for (int i = 0; i < MI; i++) acc[i][j] = _mm512_fmadd_ps(av[i], bv, acc[i][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MI; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NJ; j++) d[i * ldd + j] += _mm512_reduce_add_ps(acc[i][j]);
}

#define DK(MI, NJ, M)                                                                           \
    static AVX512 void dk_##MI##_##NJ##_##M(int P, int ns, const float *a, ptrdiff_t lda,        \
                                            ptrdiff_t sa, const float *const *bj,                 \
                                            const uint16_t *tm, ptrdiff_t sb, float *d,           \
                                            ptrdiff_t ldd)                                        \
    {                                                                                             \
        dot_body(MI, NJ, M, P, ns, a, lda, sa, bj, tm, sb, d, ldd);                               \
    }
#define DK_NJ(MI, M) DK(MI, 1, M) DK(MI, 2, M) DK(MI, 3, M) DK(MI, 4, M)
#define DK_M(MI) DK_NJ(MI, 0) DK_NJ(MI, 1)
DK_M(1) DK_M(2) DK_M(3) DK_M(4) DK_M(5) DK_M(6)
#define DROW(MI, M) {NULL, dk_##MI##_1_##M, dk_##MI##_2_##M, dk_##MI##_3_##M, dk_##MI##_4_##M}
static const dot_fn dot_kernels[2][DOT_MI + 1][DOT_NJ + 1] = {
    {{NULL}, DROW(1, 0), DROW(2, 0), DROW(3, 0), DROW(4, 0), DROW(5, 0), DROW(6, 0)},
    {{NULL}, DROW(1, 1), DROW(2, 1), DROW(3, 1), DROW(4, 1), DROW(5, 1), DROW(6, 1)},
};
_Static_assert(DOT_MI == 6 && DOT_NJ == 4, "dot_kernels lists 6 x 4 tile shapes");

/* block b of n items cut into blocks of at most max, sizes as even as
 * possible */
static void even_block(int n, int max, int b, int *start, int *len)
{
    int nb = (n + max - 1) / max, base = n / nb, extra = n % nb;
    *len = base + (b < extra);
    *start = b * base + (b < extra ? b : extra);
}

#define DOT_CHUNK 512 /* vectors of P per pass with gathered masks */

void qat_gemm_dot(int M, int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,
                  const float *b, const qat_brows *br, ptrdiff_t sb, const uint16_t *mask, float *d,
                  ptrdiff_t ldd)
{
    const int K = br->nc * br->kk, kk = br->kk;
    const int nbk = (K + DOT_NJ - 1) / DOT_NJ, nbi = (M + DOT_MI - 1) / DOT_MI;
    const int masked = mask != NULL;
    uint16_t tm[DOT_CHUNK * (1 + DOT_NJ)];
    for (int bk = 0; bk < nbk; bk++) {
        int k0, nj;
        even_block(K, DOT_NJ, bk, &k0, &nj);
        const float *bj[DOT_NJ];
        int qj[DOT_NJ];
        for (int j = 0; j < nj; j++) {
            int k = k0 + j;
            qj[j] = k % kk;
            bj[j] = at_offset(b, (k / kk) * br->cstride + br->koff[qj[j]]);
        }
        /* without masks, one pass; with, passes of DOT_CHUNK vectors */
        const int nvec = (P + 15) / 16, chunk = masked ? DOT_CHUNK : nvec;
        for (int v0 = 0; v0 < nvec; v0 += chunk) {
            int nv = nvec - v0 < chunk ? nvec - v0 : chunk;
            int pc = masked ? (nv * 16 < P - v0 * 16 ? nv * 16 : P - v0 * 16) : P;
            if (masked)
                for (int v = 0; v < nv; v++) {
                    const uint16_t *m = mask + (size_t)(v0 + v) * (kk + 1);
                    tm[v * (1 + nj)] = m[kk];
                    for (int j = 0; j < nj; j++) tm[v * (1 + nj) + 1 + j] = m[qj[j]];
                }
            const float *bjc[DOT_NJ];
            for (int j = 0; j < nj; j++) bjc[j] = at_offset(bj[j], (ptrdiff_t)v0 * 16);
            for (int bi = 0; bi < nbi; bi++) {
                int i0, mi;
                even_block(M, DOT_MI, bi, &i0, &mi);
                dot_kernels[masked][mi][nj](pc, ns, a + i0 * lda + (ptrdiff_t)v0 * 16, lda, sa, bjc, tm, sb,
                                            d + i0 * ldd + k0, ldd);
            }
        }
    }
}
#else
void qat_gemm_bcast(int M, int N, const float *ap, const float *b, const qat_brows *br, int mode,
                    const float *bias, const qat_cmat *cm, ptrdiff_t g0)
{
    (void)M, (void)N, (void)ap, (void)b, (void)br, (void)mode, (void)bias, (void)cm, (void)g0;
    abort(); /* qat_simd_level() never selects this engine here */
}

void qat_gemm_dot(int M, int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,
                  const float *b, const qat_brows *br, ptrdiff_t sb, const uint16_t *mask, float *d,
                  ptrdiff_t ldd)
{
    (void)M, (void)P, (void)ns, (void)a, (void)lda, (void)sa, (void)b, (void)br, (void)sb, (void)mask,
        (void)d, (void)ldd;
    abort();
}
#endif
