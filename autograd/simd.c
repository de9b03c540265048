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

/* ---- AVX2 micro-kernels (CPUs without AVX-512) ----
 * The same tiles, masks and column mappings as above, with 8-float
 * vectors: a tile of mr <= 12 rows x 32 columns is computed as row groups
 * of at most 6 rows x 16 columns (12 accumulators, two B vectors, one
 * broadcast: 15 of the 16 ymm registers). Every element of C gets the
 * same fused multiply-adds in the same order as in the AVX-512 kernel, so
 * both engines give the same bits. Lane masks become vectors through a
 * table (vmaskmovps takes a vector mask; masked-off lanes are not read, so
 * they may lie outside any allocation, as with AVX-512 masks). */
#define AVX2 __attribute__((target("avx2,fma")))
#define RG2 6 /* rows per AVX2 row group */

/* lane_mask8[m]: lane j all ones where bit j of m is set */
#define L8(m) {-((m) & 1), -((m) >> 1 & 1), -((m) >> 2 & 1), -((m) >> 3 & 1), \
               -((m) >> 4 & 1), -((m) >> 5 & 1), -((m) >> 6 & 1), -((m) >> 7 & 1)}
#define L8x4(m) L8(m), L8((m) + 1), L8((m) + 2), L8((m) + 3)
#define L8x16(m) L8x4(m), L8x4((m) + 4), L8x4((m) + 8), L8x4((m) + 12)
#define L8x64(m) L8x16(m), L8x16((m) + 16), L8x16((m) + 32), L8x16((m) + 48)
static const int32_t lane_mask8[256][8] __attribute__((aligned(32))) = {L8x64(0), L8x64(64), L8x64(128),
                                                                        L8x64(192)};

static INLINE AVX2 __m256i vmask8(unsigned m) { return _mm256_load_si256((const __m256i *)(const void *)lane_mask8[m & 0xff]); }

/* the 16 lanes of m as two vectors: lanes 0-7 in lo, 8-15 in hi */
static INLINE AVX2 void load16(const float *p, unsigned m, __m256 *lo, __m256 *hi)
{
    if (m == 0xffff) {
        *lo = _mm256_loadu_ps(p);
        *hi = _mm256_loadu_ps(p + 8);
    } else {
        *lo = _mm256_maskload_ps(p, vmask8(m));
        *hi = _mm256_maskload_ps(p + 8, vmask8(m >> 8));
    }
}

static INLINE AVX2 void store16(float *p, unsigned m, __m256 lo, __m256 hi)
{
    if (m == 0xffff) {
        _mm256_storeu_ps(p, lo);
        _mm256_storeu_ps(p + 8, hi);
    } else {
        if (m & 0xff) _mm256_maskstore_ps(p, vmask8(m), lo);
        if (m >> 8) _mm256_maskstore_ps(p + 8, vmask8(m >> 8), hi);
    }
}

/* RG rows (a: the panel's first row of the group, mr floats per k) x the
 * 16 columns of half h (0: tile columns 0-15, 1: 16-31) of a tile. */
static INLINE AVX2 void bcast2_body(const int RG, const int MASKED, int mr, int h, const float *restrict a,
                                   const float *restrict b, const qat_brows *br, const uint32_t *km,
                                   const tile_map *t, int mode, const float *bias, float *c, ptrdiff_t ldc)
{
    __m256 c0[RG2], c1[RG2];
    const int sh = 16 * h;
#pragma GCC unroll 6
    for (int i = 0; i < RG; i++) {
        if (mode == QAT_C_ADD) {
            /* the pieces' lanes are disjoint and masked loads give +0.0
             * bits elsewhere: OR merges them exactly */
            const float *ci = c + i * ldc;
            c0[i] = _mm256_setzero_ps();
            c1[i] = _mm256_setzero_ps();
            for (int p = 0; p < t->np; p++) {
                unsigned m = h ? t->hi[p] : t->lo[p];
                if (!m) continue;
                __m256 lo, hi;
                load16(ci + t->off[p] + sh, m, &lo, &hi);
                c0[i] = _mm256_or_ps(c0[i], lo);
                c1[i] = _mm256_or_ps(c1[i], hi);
            }
        } else {
            c0[i] = mode == QAT_C_BIAS ? _mm256_set1_ps(bias[i]) : _mm256_setzero_ps();
            c1[i] = c0[i];
        }
    }
    const unsigned bm = h ? t->bhi : t->blo; /* the half's columns that exist */
    const int plain = MASKED != 1 && bm == 0xffff;
    const __m256i blo = vmask8(bm), bhi = vmask8(bm >> 8);
    const int nc = br->nc, kk = br->kk;
    const ptrdiff_t cs = br->cstride, *koff = br->koff;
    b += sh;
    for (int ch = 0; ch < nc; ch++) {
        const float *bc = at_offset(b, ch * cs);
        for (int q = 0; q < kk; q++) {
            const float *bk = at_offset(bc, koff[q]);
            __m256i mlo = blo, mhi = bhi;
            if (MASKED) {
                unsigned m = (unsigned)(km[q] >> sh) & 0xffffu & bm;
                if (!m) { /* the tap reads only padding in these columns */
                    a += mr;
                    continue;
                }
                if (MASKED == 1) {
                    mlo = vmask8(m);
                    mhi = vmask8(m >> 8);
                }
            }
            __m256 b0, b1;
            if (plain) {
                b0 = _mm256_loadu_ps(bk);
                b1 = _mm256_loadu_ps(bk + 8);
            } else {
                b0 = _mm256_maskload_ps(bk, mlo);
                b1 = _mm256_maskload_ps(bk + 8, mhi);
            }
            if (MASKED) _mm_prefetch((const char *)at_offset(bk, 2 * QAT_NR), _MM_HINT_T0);
#pragma GCC unroll 6
            for (int i = 0; i < RG; i++) {
                __m256 av = _mm256_broadcast_ss(a + i);
                c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
            }
            a += mr;
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < RG; i++) {
        float *ci = c + i * ldc;
        for (int p = 0; p < t->np; p++) {
            unsigned m = h ? t->hi[p] : t->lo[p];
            if (m) store16(ci + t->off[p] + sh, m, c0[i], c1[i]);
        }
    }
}

typedef void (*bcast2_fn)(int mr, int h, const float *a, const float *b, const qat_brows *br, const uint32_t *km,
                          const tile_map *t, int mode, const float *bias, float *c, ptrdiff_t ldc);
#define BK2(RG, M)                                                                                         \
    static AVX2 void bk2_##RG##_##M(int mr, int h, const float *a, const float *b, const qat_brows *br,    \
                                    const uint32_t *km, const tile_map *t, int mode, const float *bias,    \
                                    float *c, ptrdiff_t ldc)                                               \
    {                                                                                                      \
        bcast2_body(RG, M, mr, h, a, b, br, km, t, mode, bias, c, ldc);                                     \
    }
#define BK2_M(RG) BK2(RG, 0) BK2(RG, 1) BK2(RG, 2)
BK2_M(1) BK2_M(2) BK2_M(3) BK2_M(4) BK2_M(5) BK2_M(6)
#define B2ROW(RG) {bk2_##RG##_0, bk2_##RG##_1, bk2_##RG##_2}
static const bcast2_fn bcast2_kernels[RG2 + 1][3] = {
    {NULL, NULL, NULL}, B2ROW(1), B2ROW(2), B2ROW(3), B2ROW(4), B2ROW(5), B2ROW(6),
};

/* A panel of mr rows x a tile of nv halves: row groups as even as
 * possible (12 = 6 + 6, 8 = 4 + 4) */
static void bcast2_tile(int mr, int nv, int masked, const float *a, const float *b, const qat_brows *br,
                        const uint32_t *km, const tile_map *t, int mode, const float *bias, float *c,
                        ptrdiff_t ldc)
{
    int ng = (mr + RG2 - 1) / RG2;
    for (int gi = 0, r = 0; gi < ng; gi++) {
        int rg = mr / ng + (gi < mr % ng);
        for (int h = 0; h < nv; h++)
            bcast2_kernels[rg][masked](mr, h, a + r, b, br, km, t, mode, bias ? bias + r : NULL, c + r * ldc, ldc);
        r += rg;
    }
}

/* one panel x one tile on the engine in use */
static void bcast_tile(int mr, int nv, int masked, const float *a, const float *b, const qat_brows *br,
                       const uint32_t *km, const tile_map *t, int mode, const float *bias, float *c, ptrdiff_t ldc)
{
    if (qat_simd_level() == QAT_SIMD_AVX512)
        bcast_kernels[mr][masked][nv - 1](a, b, br, km, t, mode, bias, c, ldc);
    else
        bcast2_tile(mr, nv, masked, a, b, br, km, t, mode, bias, c, ldc);
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
        for (int pi = 0; pi < np; pi++) {
            int r0, mr;
            qat_panel(M, pi, &r0, &mr);
            const float *a = ap + (size_t)r0 * K, *bi = bias ? bias + r0 : NULL;
            float *c = cm->c + r0 * cm->ldc;
            if (direct) {
                bcast_tile(mr, nv, masked, a, b + j0, br, km, &t, mode, bi, c, cm->ldc);
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
            bcast_tile(mr, nv, masked, a, b + j0, br, km, &tt, mode, bi, tmp, QAT_NR);
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

/* AVX2 dot-product tiles: 3 x 4 (12 accumulators, three A vectors, one B:
 * the 16 ymm registers), 8 lanes a step; each 16-column vector of the
 * interface (and its 16-bit masks) is two steps. The sums over p run in
 * another order than on AVX-512 (8 lanes, not 16), so the two engines
 * agree to rounding here, not bit for bit. */
#define DOT2_MI 3

static INLINE AVX2 float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* vm (MASKED): the tile's masks as vectors, [vector][1 + NJ][2][8]: entry
 * 0 the lanes of the A rows, 1 + j those of B row j, in two halves of 8
 * (gathered per tile: one load a mask, no bit arithmetic in the loop) */
static INLINE AVX2 void dot2_body(const int MI, const int NJ, const int MASKED, int P, int ns, const float *a,
                                 ptrdiff_t lda, ptrdiff_t sa, const float *const *bj, const int32_t *vm,
                                 ptrdiff_t sb, float *d, ptrdiff_t ldd)
{
    __m256 acc[DOT2_MI][DOT_NJ];
    const float *bp[DOT_NJ];
#pragma GCC unroll 4
    for (int j = 0; j < NJ; j++) bp[j] = bj[j];
#pragma GCC unroll 4
    for (int i = 0; i < MI; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) acc[i][j] = _mm256_setzero_ps();
    for (int s = 0; s < ns; s++) {
        const float *as = a + s * sa;
        const ptrdiff_t bo = s * sb;
        const int32_t *mv = vm;
        for (int p = 0; p < P; p += 16, mv += (1 + NJ) * 16) {
            const int tail = MASKED && p + 16 > P;
            if (MASKED) _mm_prefetch((const char *)at_offset(bp[NJ - 1], bo + p + 64), _MM_HINT_T0);
#pragma GCC unroll 2
            for (int hh = 0; hh < 2; hh++) {
                const int o = p + 8 * hh;
                __m256 av[DOT2_MI];
#pragma GCC unroll 4
                for (int i = 0; i < MI; i++)
                    av[i] = tail ? _mm256_maskload_ps(as + i * lda + o,
                                                      _mm256_load_si256((const __m256i *)(const void *)(mv + 8 * hh)))
                                 : _mm256_loadu_ps(as + i * lda + o);
#pragma GCC unroll 4
                for (int j = 0; j < NJ; j++) {
                    const float *bq = at_offset(bp[j], bo + o);
                    __m256 bv = MASKED ? _mm256_maskload_ps(bq, _mm256_load_si256((const __m256i *)(const void *)(
                                                                    mv + (1 + j) * 16 + 8 * hh)))
                                       : _mm256_loadu_ps(bq);
#pragma GCC unroll 4
                    for (int i = 0; i < MI; i++) acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MI; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) d[i * ldd + j] += hsum8(acc[i][j]);
}

typedef void (*dot2_fn)(int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa, const float *const *bj,
                        const int32_t *vm, ptrdiff_t sb, float *d, ptrdiff_t ldd);
#define DK2(MI, NJ, M)                                                                                     \
    static AVX2 void dk2_##MI##_##NJ##_##M(int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,    \
                                           const float *const *bj, const int32_t *vm, ptrdiff_t sb,       \
                                           float *d, ptrdiff_t ldd)                                       \
    {                                                                                                      \
        dot2_body(MI, NJ, M, P, ns, a, lda, sa, bj, vm, sb, d, ldd);                                       \
    }
#define DK2_NJ(MI, M) DK2(MI, 1, M) DK2(MI, 2, M) DK2(MI, 3, M) DK2(MI, 4, M)
#define DK2_M(MI) DK2_NJ(MI, 0) DK2_NJ(MI, 1)
DK2_M(1) DK2_M(2) DK2_M(3)
#define D2ROW(MI, M) {NULL, dk2_##MI##_1_##M, dk2_##MI##_2_##M, dk2_##MI##_3_##M, dk2_##MI##_4_##M}
static const dot2_fn dot2_kernels[2][DOT2_MI + 1][DOT_NJ + 1] = {
    {{NULL}, D2ROW(1, 0), D2ROW(2, 0), D2ROW(3, 0)},
    {{NULL}, D2ROW(1, 1), D2ROW(2, 1), D2ROW(3, 1)},
};

/* block b of n items cut into blocks of at most max, sizes as even as
 * possible */
static void even_block(int n, int max, int b, int *start, int *len)
{
    int nb = (n + max - 1) / max, base = n / nb, extra = n % nb;
    *len = base + (b < extra);
    *start = b * base + (b < extra ? b : extra);
}

#define DOT_CHUNK 512 /* vectors of P per pass with gathered masks */
#define DOT2_CHUNK 64 /* the same with AVX2 (vector masks: 20 KB) */

void qat_gemm_dot(int M, int P, int ns, const float *a, ptrdiff_t lda, ptrdiff_t sa,
                  const float *b, const qat_brows *br, ptrdiff_t sb, const uint16_t *mask, float *d,
                  ptrdiff_t ldd)
{
    const int K = br->nc * br->kk, kk = br->kk;
    const int avx512 = qat_simd_level() == QAT_SIMD_AVX512, dot_mi = avx512 ? DOT_MI : DOT2_MI;
    const int nbk = (K + DOT_NJ - 1) / DOT_NJ, nbi = (M + dot_mi - 1) / dot_mi;
    const int masked = mask != NULL;
    uint16_t tm[DOT_CHUNK * (1 + DOT_NJ)];
    int32_t vm[DOT2_CHUNK * (1 + DOT_NJ) * 16] __attribute__((aligned(32)));
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
        const int nvec = (P + 15) / 16, chunk = masked ? (avx512 ? DOT_CHUNK : DOT2_CHUNK) : nvec;
        for (int v0 = 0; v0 < nvec; v0 += chunk) {
            int nv = nvec - v0 < chunk ? nvec - v0 : chunk;
            int pc = masked ? (nv * 16 < P - v0 * 16 ? nv * 16 : P - v0 * 16) : P;
            if (masked && avx512)
                for (int v = 0; v < nv; v++) {
                    const uint16_t *m = mask + (size_t)(v0 + v) * (kk + 1);
                    tm[v * (1 + nj)] = m[kk];
                    for (int j = 0; j < nj; j++) tm[v * (1 + nj) + 1 + j] = m[qj[j]];
                }
            else if (masked)
                for (int v = 0; v < nv; v++) {
                    const uint16_t *m = mask + (size_t)(v0 + v) * (kk + 1);
                    for (int e = 0; e <= nj; e++) {
                        unsigned bits = e == 0 ? m[kk] : m[qj[e - 1]];
                        int32_t *o = vm + ((size_t)v * (1 + nj) + e) * 16;
                        memcpy(o, lane_mask8[bits & 0xff], 8 * sizeof(int32_t));
                        memcpy(o + 8, lane_mask8[bits >> 8], 8 * sizeof(int32_t));
                    }
                }
            const float *bjc[DOT_NJ];
            for (int j = 0; j < nj; j++) bjc[j] = at_offset(bj[j], (ptrdiff_t)v0 * 16);
            for (int bi = 0; bi < nbi; bi++) {
                int i0, mi;
                even_block(M, dot_mi, bi, &i0, &mi);
                const float *ai = a + i0 * lda + (ptrdiff_t)v0 * 16;
                if (avx512)
                    dot_kernels[masked][mi][nj](pc, ns, ai, lda, sa, bjc, tm, sb, d + i0 * ldd + k0, ldd);
                else
                    dot2_kernels[masked][mi][nj](pc, ns, ai, lda, sa, bjc, vm, sb, d + i0 * ldd + k0, ldd);
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
