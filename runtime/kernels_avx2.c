/* runtime/kernels_avx2.c: AVX2 kernels, integer only.
 *
 * vpmaddubsw (u8 x s8, pairs summed into int16) saturates: 255*127*2 >
 * 32767, so it cannot give exact results here. These kernels use vpmaddwd
 * on int16 pairs instead: activations are widened to x - zp (in [-255, 255])
 * and weights to int16, so each pair sum is at most 2 * 255 * 128 = 65280 in
 * magnitude and lands exactly in an int32 lane, with no zero-point
 * correction needed. (vpmaddubsw with split weights does not pay either:
 * QAT weights reach +-127 in every channel, so a residual pass for the
 * unsafe pairs would be dense.) With 2 vector ops per 16 multiply-adds
 * (vpmaddwd + vpaddd) against oneDNN's 3 per 32 (vpmaddubsw + vpmaddwd +
 * vpaddd), the direct kernels cannot match it on multiplies alone, so:
 *
 * - 3x3 stride-1 convs (most of convnet and resnet8) run as Winograd
 *   F(2x2, 3x3) in exact integer arithmetic (section "Winograd" below):
 *   2.25x fewer multiply-adds;
 * - everything else as in kernels_vnni.c: an implicit GEMM over the packed
 *   image (cells of 2 channels = 4 bytes), lanes of 8 output positions, a
 *   6 x 2 register tile, the requantization fused in the epilogue
 *   (prepare.c), output staged per image and copied into NCHW rows.
 *
 * The packing of weights and inputs and the split over the threads are
 * kernels_common.c's, shared with kernels_vnni.c; this file has the SIMD
 * (packed rows, register tiles, epilogue, Winograd) and avx2_fast, the
 * description the shared code works from. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "runtime/kernels_common.h"

#pragma GCC poison float double

#define AVX2_TARGET "avx2"
#define AVX2 __attribute__((target(AVX2_TARGET)))
#define AVX2_INLINE static inline __attribute__((always_inline, target(AVX2_TARGET)))

/* register tiles (16 ymm registers): conv 6 rows x 2 vectors of 8 lanes (12
 * accumulators, 2 activation vectors, 1 broadcast weight pair, 1 product;
 * 4 x 3 needs a 17th register and spills an accumulator), linear 4 rows x 2
 * vectors */
enum { CONV_MR = 6, CONV_NR = 2, LIN_MR = 4, LIN_NR = 2 };

static const rt_fast_isa avx2_fast;

/* 8 int32 in [-128, 127] -> 8 bytes in the low half */
AVX2_INLINE __m128i pack8(__m256i r)
{
    const __m256i p16 = _mm256_packs_epi32(r, r);   /* lane k: r[4k..4k+3] twice, int16 */
    const __m256i p8 = _mm256_packs_epi16(p16, p16); /* lane k: r[4k..4k+3] in bytes 0..3 */
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(p8), _mm256_extracti128_si256(p8, 1));
}

/* ---- requantization epilogue (prepare.c proves it exact) ----
 * The parameters of 8 int32 lanes: one output channel broadcast
 * (epi_chan_load, the conv rows) or 8 consecutive ones (epi_lanes_load,
 * the linear features). Qword k of the accumulator holds lanes 2k (low
 * dword: the even products) and 2k + 1 (high: the odd ones), each shifted
 * by its own count. */
typedef struct {
    __m256i alo, ahi, m, m_odd, te, to, re, ro, cadd, lo, hi;
} epi_par;

AVX2_INLINE epi_par epi_chan_load(const rt_epi *e, int c)
{
    epi_par p;
    p.alo = _mm256_set1_epi32(e->alo[c]);
    p.ahi = _mm256_set1_epi32(e->ahi[c]);
    p.m = p.m_odd = _mm256_set1_epi32(e->m[c]);
    p.te = p.to = _mm256_set1_epi64x(e->t64[c]);
    p.re = p.ro = _mm256_set1_epi64x((long long)e->rnd[c]);
    p.cadd = _mm256_set1_epi32(e->cadd[c]);
    p.lo = _mm256_set1_epi32(e->lo);
    p.hi = _mm256_set1_epi32(e->hic[c]);
    return p;
}

AVX2_INLINE epi_par epi_lanes_load(const rt_epi *e, int c0)
{
    epi_par p;
    p.alo = _mm256_loadu_si256((const __m256i *)(const void *)(e->alo + c0));
    p.ahi = _mm256_loadu_si256((const __m256i *)(const void *)(e->ahi + c0));
    p.m = _mm256_loadu_si256((const __m256i *)(const void *)(e->m + c0));
    p.m_odd = _mm256_srli_epi64(p.m, 32);
    const __m256i t0 = _mm256_loadu_si256((const __m256i *)(const void *)(e->t64 + c0));
    const __m256i t1 = _mm256_loadu_si256((const __m256i *)(const void *)(e->t64 + c0 + 4));
    const __m256i r0 = _mm256_loadu_si256((const __m256i *)(const void *)(e->rnd + c0));
    const __m256i r1 = _mm256_loadu_si256((const __m256i *)(const void *)(e->rnd + c0 + 4));
    p.te = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(t0, t1), 0xD8);
    p.to = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(t0, t1), 0xD8);
    p.re = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(r0, r1), 0xD8);
    p.ro = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(r0, r1), 0xD8);
    p.cadd = _mm256_loadu_si256((const __m256i *)(const void *)(e->cadd + c0));
    p.lo = _mm256_set1_epi32(e->lo);
    p.hi = _mm256_loadu_si256((const __m256i *)(const void *)(e->hic + c0));
    return p;
}

/* the requantized int32 lanes, before the final clamp to [lo, hi] */
AVX2_INLINE __m256i epi_r(__m256i a, const epi_par *p)
{
    a = _mm256_min_epi32(_mm256_max_epi32(a, p->alo), p->ahi);
    __m256i ev = _mm256_mul_epi32(a, p->m);
    __m256i od = _mm256_mul_epi32(_mm256_srli_epi64(a, 32), p->m_odd);
    ev = _mm256_srlv_epi64(_mm256_add_epi64(ev, p->re), p->te);
    od = _mm256_srlv_epi64(_mm256_add_epi64(od, p->ro), p->to);
    const __m256i r = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
    return _mm256_add_epi32(r, p->cadd);
}

AVX2_INLINE __m128i epi_apply(__m256i a, const epi_par *p)
{
    return pack8(_mm256_min_epi32(_mm256_max_epi32(epi_r(a, p), p->lo), p->hi));
}

/* ---- conv2d ---- */

static int wino_eligible(const rt_op *op);
static int avx2_prepare_wino(rt_op *op);

static int avx2_prepare_linear(rt_op *op)
{
    return qat_rti_prepare_linear(op, &avx2_fast);
}

static int avx2_prepare_conv(rt_op *op)
{
    if (wino_eligible(op)) {
        qat_rti_gemm_start(op, &avx2_fast);
        int st = qat_rti_epi_init(op, &op->g, op->oc, 0);
        return st ? st : avx2_prepare_wino(op);
    }
    int st = qat_rti_prepare_conv(op, &avx2_fast);
    /* + conv_unstage's read slack */
    if (!st) op->g.tmp_bytes = (size_t)op->oc * op->g.q_vecs * 8 + 16;
    return st;
}

/* Vector k of a row pair (channels c0 and c0 + 1 at s0, s1; s1 unread
 * unless has1) as cells of 2 int16 x - zp: ev the even columns 16k, 16k+2,
 * ..., od the odd ones, 0 past the row's W. Reads up to 15 bytes past the
 * row: the next row, or the 64 bytes of slack after every activation
 * buffer. */
AVX2_INLINE void even_odd_cells(const int8_t *s0, const int8_t *s1, int has1, int k, int W, int32_t zp, __m256i *ev,
                                __m256i *od)
{
    const __m256i zpv = _mm256_set1_epi16((short)zp), Wv = _mm256_set1_epi32(W);
    const __m256i iev = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), one = _mm256_set1_epi32(1);
    const __m256i a =
        _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(s0 + 16 * k))), zpv);
    const __m256i b =
        has1 ? _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(s1 + 16 * k))),
                                zpv)
             : _mm256_setzero_si256();
    const __m256i lo = _mm256_shuffle_epi32(_mm256_unpacklo_epi16(a, b), 0xD8); /* 0 2 1 3 | 8 10 9 11 */
    const __m256i hi = _mm256_shuffle_epi32(_mm256_unpackhi_epi16(a, b), 0xD8); /* 4 6 5 7 | 12 14 13 15 */
    const __m256i ie = _mm256_add_epi32(_mm256_set1_epi32(16 * k), iev);
    *ev = _mm256_and_si256(_mm256_unpacklo_epi64(lo, hi), _mm256_cmpgt_epi32(Wv, ie));
    *od = _mm256_and_si256(_mm256_unpackhi_epi64(lo, hi), _mm256_cmpgt_epi32(Wv, _mm256_add_epi32(ie, one)));
}

/* input packing (kernels_common.c: qat_rti_conv_pack): cells of two int16
 * x - zp, padding 0 */

/* stride 1, shared pad columns: rows of ws = W + P cells, P pad cells then
 * W pixels, int16 x - zp: cells of the channel pair (cpg 2), or one value
 * per element (cpg 1, the tap-mode staging) */
AVX2_INLINE void rows_shared_i16(const rt_op *op, const rt_span *sp, const int cpg)
{
    const int W = op->in_w, P = op->pad, n = sp->n;
    const int32_t zp = op->in_zp;
    const __m256i zpv = _mm256_set1_epi16((short)zp);
    for (int r = 0; r < n; r++) {
        const int8_t *src[2] = {NULL, NULL};
        int16_t *row = (int16_t *)(void *)rt_span_row(sp, r, cpg, src);
        const int8_t *a = src[0], *b = src[1];
        memset(row, 0, (size_t)P * cpg * 2);
        int c0 = 0;
        for (; c0 + 16 <= W; c0 += 16) {
            const __m256i va =
                _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + c0))), zpv);
            if (cpg == 1) {
                _mm256_storeu_si256((__m256i *)(void *)(row + P + c0), va);
                continue;
            }
            const __m256i vb =
                b ? _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(b + c0))), zpv)
                  : _mm256_setzero_si256();
            const __m256i lo = _mm256_unpacklo_epi16(va, vb); /* cols 0-3 | 8-11 */
            const __m256i hi = _mm256_unpackhi_epi16(va, vb); /* cols 4-7 | 12-15 */
            int16_t *q = row + (size_t)(P + c0) * 2;
            _mm256_storeu_si256((__m256i *)(void *)q, _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(void *)(q + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        for (; c0 < W; c0++) {
            row[(size_t)(P + c0) * cpg] = (int16_t)(a[c0] - zp);
            if (cpg == 2) row[(size_t)(P + c0) * 2 + 1] = (int16_t)(b ? b[c0] - zp : 0);
        }
    }
}

AVX2 static void avx2_rows_shared(const rt_op *op, const rt_span *sp)
{
    rows_shared_i16(op, sp, 2);
}

AVX2 static void avx2_stage_shared(const rt_op *op, const rt_span *sp)
{
    rows_shared_i16(op, sp, 1);
}

/* cells [j0, j1) of a packed row to 0 (masked stores: nothing past j1) */
AVX2_INLINE void zero_cells(int32_t *r, int j0, int j1, __m256i lane)
{
    for (int j = j0; j < j1; j += 8)
        _mm256_maskstore_epi32((int *)(r + j), _mm256_cmpgt_epi32(_mm256_set1_epi32(j1 - j), lane),
                               _mm256_setzero_si256());
}

/* stride 2: each row splits into its even and odd columns: cells of input
 * column iw go to phase plane pw = (iw + P) % 2, cell (iw + P) / 2; masked
 * stores keep to the ws cells of a row. The vectors of 8 cells from offA
 * (offB) cover the row but for its first cells and any past the last
 * vector: those are zeroed apart. Only the phases some tap reads (a 1x1
 * kernel reads (0, 0) alone). */
AVX2 static void avx2_rows_s2(const rt_op *op, const rt_span *sp)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int W = op->in_w, P = op->pad, ws = op->g.ws, n = sp->n;
    const int32_t zp = op->in_zp;
    const int pwA = P % 2, offA = P / 2, offB = (P + 1) / 2;
    const int need_a = pwA < op->kw, need_b = 1 - pwA < op->kw;
    const size_t pa = pwA ? op->g.plane_bytes : 0, pb = pwA ? 0 : op->g.plane_bytes;
    const int nk = (W + 15) / 16, endA = rt_imin(ws, offA + 8 * nk), endB = rt_imin(ws, offB + 8 * nk);
    for (int r = 0; r < n; r++) {
        const int8_t *src[2];
        uint8_t *d = rt_span_row(sp, r, 2, src);
        int32_t *ra = (int32_t *)(void *)(d + pa), *rb = (int32_t *)(void *)(d + pb);
        if (need_a) {
            zero_cells(ra, 0, rt_imin(offA, ws), lane);
            zero_cells(ra, endA, ws, lane);
        }
        if (need_b) {
            zero_cells(rb, 0, rt_imin(offB, ws), lane);
            zero_cells(rb, endB, ws, lane);
        }
        for (int k = 0; 16 * k < W; k++) {
            __m256i ev, od;
            even_odd_cells(src[0], src[1], src[1] != NULL, k, W, zp, &ev, &od);
            const int ja = offA + 8 * k, jb = offB + 8 * k;
            if (need_a && ja < ws)
                _mm256_maskstore_epi32((int *)(ra + ja), _mm256_cmpgt_epi32(_mm256_set1_epi32(ws - ja), lane), ev);
            if (need_b && jb < ws)
                _mm256_maskstore_epi32((int *)(rb + jb), _mm256_cmpgt_epi32(_mm256_set1_epi32(ws - jb), lane), od);
        }
    }
}

/* tap cells: the pair of staged int16 streams of a k group interleaved */
AVX2 static void avx2_interleave(const rt_op *op, const uint8_t *const *src, uint8_t *d)
{
    const int16_t *a = (const int16_t *)(const void *)src[0], *b = (const int16_t *)(const void *)src[1];
    for (int v = 0; v < op->g.q_vecs; v++) {
        const __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(a + 8 * v));
        const __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(b + 8 * v));
        _mm_storeu_si128((__m128i *)(void *)(d + (size_t)v * 32), _mm_unpacklo_epi16(va, vb));
        _mm_storeu_si128((__m128i *)(void *)(d + (size_t)v * 32 + 16), _mm_unpackhi_epi16(va, vb));
    }
}

/* The register tile: rows m0..m0+MR-1 of the packed weights wt ([kg][MR][2]
 * int16) times NR vectors of 8 positions of the packed input (k group j at
 * xq + koff[j], or xq + j * kstride when koff is NULL), accumulated over the kg k groups onto acc0 (NULL: the bias
 * e->bias[m0 + r]). raw: the int32 sums go to raw[r * ldr + 8 * v]; else
 * they are requantized and the bytes go to tmp[(m0 + r) * ldt + 8 * v]. */
AVX2_INLINE void conv_tile(const int MR, const int NR, const uint8_t *xq, const int32_t *koff,
                           int kg, const int16_t *wt, const rt_epi *e, int m0, int8_t *tmp,
                           size_t ldt, int32_t *raw, size_t ldr, size_t kstride)
{
    const __m256i z = _mm256_setzero_si256();
#define CT_DECL(r) __m256i a##r##0 = z, a##r##1 = z, a##r##2 = z;
    RT_R6(CT_DECL)
#undef CT_DECL
#define CT_INIT(r)                                            \
    if (r < MR && !raw) {                                     \
        a##r##0 = _mm256_set1_epi32(e->bias[m0 + r]);         \
        if (NR > 1) a##r##1 = a##r##0;                        \
        if (NR > 2) a##r##2 = a##r##0;                        \
    }
    RT_R6(CT_INIT)
#undef CT_INIT
    for (int j = 0; j < kg; j++) {
        const uint8_t *bp = koff ? xq + koff[j] : xq + (size_t)j * kstride;
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)bp);
        const __m256i b1 = NR > 1 ? _mm256_loadu_si256((const __m256i *)(const void *)(bp + 32)) : z;
        const __m256i b2 = NR > 2 ? _mm256_loadu_si256((const __m256i *)(const void *)(bp + 64)) : z;
#define CT_STEP(r)                                                                   \
    if (r < MR) {                                                                    \
        const __m256i w = _mm256_set1_epi32(rt_ld32(wt + 2 * r));                       \
        a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(b0, w));               \
        if (NR > 1) a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(b1, w));   \
        if (NR > 2) a##r##2 = _mm256_add_epi32(a##r##2, _mm256_madd_epi16(b2, w));   \
    }
        RT_R6(CT_STEP)
#undef CT_STEP
        wt += 2 * MR;
    }
    __m256i acc[CONV_MR][3];
    RT_R6(RT_SAVE3)
    if (raw) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NR; v++)
                _mm256_storeu_si256((__m256i *)(void *)(raw + (size_t)r * ldr + 8 * v), acc[r][v]);
        return;
    }
    for (int r = 0; r < MR; r++) {
        const epi_par p = epi_chan_load(e, m0 + r);
        for (int v = 0; v < NR; v++)
            _mm_storel_epi64((__m128i *)(void *)(tmp + (size_t)(m0 + r) * ldt + 8 * v),
                             epi_apply(acc[r][v], &p));
    }
}

_Static_assert(CONV_MR == 6 && CONV_NR == 2 && LIN_MR == 4 && LIN_NR == 2,
               "the RT_TILES calls list the register tiles' sizes");

/* the direct conv's vector block (rt_conv_plan), every output channel:
 * into the output staging rows tmp[OC][q_vecs * 8] after the packed image
 * in the slot */
AVX2 static void avx2_conv_block(const rt_op *op, uint8_t *slot, int8_t *y, int v0, int nr)
{
    (void)y;
    const rt_gemm *g = &op->g;
    const uint8_t *xq = slot + (size_t)v0 * 32;
    const size_t ldt = (size_t)g->q_vecs * 8;
    int8_t *tmp = (int8_t *)(slot + (g->img_bytes + 63) / 64 * 64) + (size_t)v0 * 8;
    for (int m0 = 0; m0 < op->oc; m0 += CONV_MR) {
        const int16_t *wt = (const int16_t *)g->w + (size_t)m0 * g->kg * 2;
#define TILE(MR_, NR_) conv_tile(MR_, NR_, xq, g->koff, g->kg, wt, &g->epi, m0, tmp, ldt, NULL, 0, 0)
        RT_TILES(rt_imin(CONV_MR, op->oc - m0), nr, RT_MR6(RT_NR2))
#undef TILE
    }
}

/* ---- Winograd F(2x2, 3x3): 3x3 stride-1 convolutions ----
 *
 * Each 2x2 block of outputs (a tile) is Y = A^T [sum_c U_c (.) V_c] A with
 * V_c = B^T d_c B (d_c the 4x4 input patch of channel c, x - zp, padding 0),
 * U_c = G g_c G^T, the 1-D transforms
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1],
 *   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 * (F(2, 3): y0 = g0 d0 + g1 d1 + g2 d2, y1 = g0 d1 + g1 d2 + g2 d3, checked
 * by expanding). With G' = 2G (integer) the weights are U'_c = G' g_c G'^T =
 * 4 U_c and the same sums give exactly 4Y, an identity over the integers.
 * Every step is an integer add, subtract or multiply, so computing it modulo
 * 2^32 (the int32 lanes, which may wrap in between) gives 4Y modulo 2^32,
 * and 4Y itself when |4Y| < 2^31: prepare checks 4 * 255 * sum|w| < 2^31 per
 * output channel (|x - zp| <= 255), else the conv stays on the direct
 * kernels. Then 4Y >> 2 is the exact sum, plus the bias it is the
 * reference's accumulator. The int16 operands of vpmaddwd stay in range:
 * |V| <= 4 * 255 = 1020 (two adds in each direction), |U'| <= 9 * 128 = 1152.
 *
 * The GEMM: 16 (one per transformed position ij) of OC x (C/2 pairs) x tiles,
 * vpmaddwd on cells of 2 channels, the same register tile as the direct
 * kernel; 2.25x fewer multiplies than the direct 3x3 conv. Per block of
 * 8 * CONV_NR tiles and CONV_MR channels the 16 accumulator tiles go to a
 * stack buffer, then the output transform, bias and requantization run and
 * the bytes are staged as [oc][dy][dx][tile], interleaved into NCHW rows at
 * the end. Input side: each channel's padded rows are staged as int16 split
 * into even and odd columns, so the transform of tw consecutive tiles is
 * vertical adds of rows loaded at offsets 0 and 1. */

static int wino_eligible(const rt_op *op)
{
    if (op->kh != 3 || op->kw != 3 || op->stride != 1 || op->ic < 4) return 0;
    const size_t K = (size_t)op->ic * 9;
    for (int o = 0; o < op->oc; o++) {
        int64_t s = 0;
        for (size_t k = 0; k < K; k++) {
            const int w = op->weight[(size_t)o * K + k];
            s += w < 0 ? -w : w;
        }
        if (4 * 255 * s >= ((int64_t)1 << 31)) return 0;
    }
    return 1;
}

static size_t up64(size_t b)
{
    return (b + 63) / 64 * 64;
}

static int avx2_prepare_wino(rt_op *op)
{
    rt_gemm *g = &op->g;
    const int C = op->ic, OC = op->oc, OH = op->out_shape[1], OW = op->out_shape[2];
    const int G = (C + 1) / 2;
    g->wino = 1;
    g->kg = G;
    g->wth = (OH + 1) / 2;
    g->wtw = (OW + 1) / 2;
    const int TH = g->wth, TW = g->wtw;
    const size_t T = (size_t)TH * TW;
    const int tw8 = (TW + 7) / 8 * 8;
    /* cells the input transform writes (8 tiles at a time, a row's excess
     * spilling into the next row, written after it) and the GEMM reads;
     * unstaging reads 16 tiles from the start of a row */
    size_t tp = (size_t)(TH - 1) * TW + (size_t)(TW + 15) / 16 * 16;
    if ((T + 7) / 8 * 8 > tp) tp = (T + 7) / 8 * 8;
    g->wtpad = (tp + 15) / 16 * 16;
    /* staged E/O rows: the transform reads cells up to tw8; packing writes 8
     * cells per 16 input columns from cell (P + 1) / 2 */
    int le = tw8 + 8;
    const int lp = (op->pad + 1) / 2 + 8 * ((op->in_w + 15) / 16);
    if (lp > le) le = lp;
    g->wle = (le + 7) / 8 * 8;
    const int R = 2 * TH + 2;
    g->wv_off = 0;
    g->wst_off = up64((size_t)16 * G * g->wtpad * 4);
    g->wout_off = g->wst_off + up64((size_t)G * R * 2 * g->wle * 4);
    g->wslot_bytes = g->wout_off + up64((size_t)OC * 4 * g->wtpad);
    if (g->wslot_bytes > (size_t)INT32_MAX)
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "%s: input too large for the fast kernels",
                             op->name);
    int16_t *w = qat_rti_alloc((size_t)16 * OC * G * 4);
    g->w = w;
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    static const int Gp[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
    for (int o = 0; o < OC; o++) {
        const int m0 = o / CONV_MR * CONV_MR, mr = rt_imin(CONV_MR, OC - m0), r = o - m0;
        for (int c = 0; c < C; c++) {
            const int8_t *gw = op->weight + ((size_t)o * C + c) * 9;
            int t[4][3], u[4][4];
            for (int i = 0; i < 4; i++)
                for (int b = 0; b < 3; b++)
                    t[i][b] = Gp[i][0] * gw[b] + Gp[i][1] * gw[3 + b] + Gp[i][2] * gw[6 + b];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    u[i][j] = t[i][0] * Gp[j][0] + t[i][1] * Gp[j][1] + t[i][2] * Gp[j][2];
            for (int ij = 0; ij < 16; ij++)
                w[((size_t)ij * OC + m0) * G * 2 + ((size_t)(c / 2) * mr + r) * 2 + c % 2] =
                    (int16_t)u[ij / 4][ij % 4];
        }
    }
    return QAT_OK;
}

/* Row I of the input transform (V planes 4I .. 4I + 3) for every channel
 * pair, tile row th and 8 tiles tw0..: rows s_I of B^T d (s0 = d0 - d2,
 * s1 = d1 + d2, s2 = d2 - d1, s3 = d1 - d3) for columns 2tw .. 2tw + 3 (E and
 * O at tw and tw + 1), then the same combinations across the columns. */
AVX2_INLINE void wino_tx_rows(const int I, const rt_gemm *g, const int32_t *st, uint8_t *V, int R,
                              size_t LE, size_t tpad)
{
    const int G = g->kg, TH = g->wth, TW = g->wtw;
    const size_t ijs = (size_t)4 * G * tpad; /* bytes between the planes of ij and ij + 1 */
    const int ra = I == 0 ? 0 : I == 1 ? 1 : I == 2 ? 2 : 1; /* s_I = d_ra (+/-) d_rb */
    const int rb = I == 0 ? 2 : I == 1 ? 2 : I == 2 ? 1 : 3;
    for (int gp = 0; gp < G; gp++)
        for (int th = 0; th < TH; th++) {
            const int32_t *pa = st + (size_t)(gp * R + 2 * th + ra) * 2 * LE;
            const int32_t *pb = st + (size_t)(gp * R + 2 * th + rb) * 2 * LE;
            uint8_t *d = V + (size_t)4 * I * ijs + ((size_t)gp * tpad + (size_t)th * TW) * 4;
            for (int t0 = 0; t0 < TW; t0 += 8) {
#define LD(p, off) _mm256_loadu_si256((const __m256i *)(const void *)((p) + t0 + (off)))
#define SR(off) (I == 1 ? _mm256_add_epi16(LD(pa, off), LD(pb, off)) : _mm256_sub_epi16(LD(pa, off), LD(pb, off)))
                const __m256i e = SR(0), o = SR(LE), e1 = SR(1), o1 = SR(LE + 1);
#undef SR
#undef LD
                /* columns 2tw .. 2tw + 3 are e, o, e1, o1 */
                uint8_t *q = d + (size_t)t0 * 4;
                _mm256_storeu_si256((__m256i *)(void *)q, _mm256_sub_epi16(e, e1));
                _mm256_storeu_si256((__m256i *)(void *)(q + ijs), _mm256_add_epi16(o, e1));
                _mm256_storeu_si256((__m256i *)(void *)(q + 2 * ijs), _mm256_sub_epi16(e1, o));
                _mm256_storeu_si256((__m256i *)(void *)(q + 3 * ijs), _mm256_sub_epi16(o, o1));
            }
        }
}

/* x [C][H][W] -> staged rows -> V [16][G][wtpad] cells of 2 channels.
 * Staging: for each channel pair and padded row, the cells of the even
 * columns (E, wle cells) then the odd ones (O); the transform of the 8 tiles
 * tw0.. reads columns 2tw .. 2tw + 3 as E and O at tw0 and tw0 + 1. */
AVX2 static void wino_pack(const rt_op *op, const int8_t *x, uint8_t *slot)
{
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, TH = g->wth;
    const int R = 2 * TH + 2, G = g->kg;
    const size_t LE = (size_t)g->wle, tpad = g->wtpad;
    const int32_t zp = op->in_zp;
    int32_t *st = (int32_t *)(void *)(slot + g->wst_off);
    /* cells of input column iw: padded column iw + P, E or O at (iw + P) / 2 */
    const size_t offA = P % 2 ? LE + (size_t)(P - 1) / 2 : (size_t)P / 2; /* even iw */
    const size_t offB = P % 2 ? (size_t)(P + 1) / 2 : LE + (size_t)P / 2; /* odd iw */
    for (int gp = 0; gp < G; gp++) {
        const int c0 = 2 * gp, has1 = c0 + 1 < C;
        for (int pr = 0; pr < R; pr++) {
            const int ih = pr - P;
            int32_t *E = st + (size_t)(gp * R + pr) * 2 * LE;
            memset(E, 0, 2 * LE * 4);
            if (ih < 0 || ih >= H) continue;
            const int8_t *s0 = x + ((size_t)c0 * H + ih) * W, *s1 = s0 + (size_t)H * W;
            for (int k = 0; 16 * k < W; k++) {
                __m256i ev, od;
                even_odd_cells(s0, s1, has1, k, W, zp, &ev, &od);
                _mm256_storeu_si256((__m256i *)(void *)(E + offA + 8 * (size_t)k), ev);
                _mm256_storeu_si256((__m256i *)(void *)(E + offB + 8 * (size_t)k), od);
            }
        }
    }
    uint8_t *V = slot + g->wv_off;
    wino_tx_rows(0, g, st, V, R, LE, tpad);
    wino_tx_rows(1, g, st, V, R, LE, tpad);
    wino_tx_rows(2, g, st, V, R, LE, tpad);
    wino_tx_rows(3, g, st, V, R, LE, tpad);
}

AVX2_INLINE void wino_tile16(const int MR, const int NR, const uint8_t *xq, size_t vstride,
                             size_t kstride, int kg, const int16_t *wt, size_t wstride,
                             int32_t *raw, size_t rstride, size_t ldr)
{
    for (int ij = 0; ij < 16; ij++)
        conv_tile(MR, NR, xq + ij * vstride, NULL, kg, wt + ij * wstride, NULL, 0, NULL, 0,
                  raw + ij * rstride, ldr, kstride);
}

AVX2 static void wino_tile_any(int mr, int nr, const uint8_t *xq, size_t vstride, size_t kstride,
                               int kg, const int16_t *wt, size_t wstride, int32_t *raw,
                               size_t rstride, size_t ldr)
{
#define TILE(MR_, NR_) wino_tile16(MR_, NR_, xq, vstride, kstride, kg, wt, wstride, raw, rstride, ldr)
    RT_TILES(mr, nr, RT_MR6(RT_NR2))
#undef TILE
}

enum { WB_LD = 8 * CONV_NR, WB_IJ = CONV_MR * WB_LD }; /* raw buffer [16][MR][8 NR] */

/* output transform, bias, requantization of rows m0.. m0+mr-1, vectors v0.. */
AVX2 static void wino_out(const rt_op *op, const int32_t *buf, int m0, int mr, int v0, int nr,
                          int8_t *out)
{
    const rt_epi *e = &op->g.epi;
    const size_t tpad = op->g.wtpad;
    const int clamp = e->lo > -128 || e->hi < 127;
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int r = 0; r < mr; r++) {
        const epi_par p = epi_chan_load(e, m0 + r);
        const __m256i bias = _mm256_set1_epi32(e->bias[m0 + r]);
        int8_t *o = out + (size_t)(m0 + r) * 4 * tpad + (size_t)v0 * 8;
        for (int v = 0; v < nr; v++) {
            const int32_t *mb = buf + r * WB_LD + 8 * v;
#define M(ij) _mm256_loadu_si256((const __m256i *)(const void *)(mb + (ij) * WB_IJ))
            __m256i t0[4], t1[4];
            for (int j = 0; j < 4; j++) {
                const __m256i m1 = M(4 + j), m2 = M(8 + j);
                t0[j] = _mm256_add_epi32(_mm256_add_epi32(M(j), m1), m2);
                t1[j] = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), M(12 + j));
            }
#undef M
            __m256i y[4];
            y[0] = _mm256_add_epi32(_mm256_add_epi32(t0[0], t0[1]), t0[2]);
            y[1] = _mm256_sub_epi32(_mm256_sub_epi32(t0[1], t0[2]), t0[3]);
            y[2] = _mm256_add_epi32(_mm256_add_epi32(t1[0], t1[1]), t1[2]);
            y[3] = _mm256_sub_epi32(_mm256_sub_epi32(t1[1], t1[2]), t1[3]);
            for (int k = 0; k < 4; k++) { /* k = 2 dy + dx; 4Y exact, so >> 2 is too */
                y[k] = epi_r(_mm256_add_epi32(_mm256_srai_epi32(y[k], 2), bias), &p);
                /* the packs saturate to [-128, 127]: the clamp only for a
                 * narrower range */
                if (clamp) y[k] = _mm256_min_epi32(_mm256_max_epi32(y[k], p.lo), p.hi);
            }
            /* bytes of y0 y1 y2 y3 (8 each) in qwords 0..3 */
            const __m256i b = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(_mm256_packs_epi32(y[0], y[1]), _mm256_packs_epi32(y[2], y[3])), perm);
            const __m128i b01 = _mm256_castsi256_si128(b), b23 = _mm256_extracti128_si256(b, 1);
            int8_t *q = o + 8 * v;
            _mm_storel_epi64((__m128i *)(void *)q, b01);
            _mm_storel_epi64((__m128i *)(void *)(q + tpad), _mm_unpackhi_epi64(b01, b01));
            _mm_storel_epi64((__m128i *)(void *)(q + 2 * tpad), b23);
            _mm_storel_epi64((__m128i *)(void *)(q + 3 * tpad), _mm_unpackhi_epi64(b23, b23));
        }
    }
}

/* the vector block (rt_conv_plan): tile vectors v0.. of the transformed
 * input in the slot, every output channel, into the output staging */
AVX2 static void wino_block(const rt_op *op, uint8_t *slot, int8_t *y, int v0, int nr)
{
    (void)y;
    const rt_gemm *g = &op->g;
    const size_t tpad = g->wtpad;
    const int G = g->kg, OC = op->oc;
    _Alignas(32) int32_t buf[16 * WB_IJ];
    for (int m0 = 0; m0 < OC; m0 += CONV_MR) {
        const int mr = rt_imin(CONV_MR, OC - m0);
        wino_tile_any(mr, nr, slot + g->wv_off + (size_t)v0 * 32, (size_t)G * tpad * 4, tpad * 4, G,
                      (const int16_t *)g->w + (size_t)m0 * G * 2, (size_t)OC * G * 2, buf, WB_IJ, WB_LD);
        wino_out(op, buf, m0, mr, v0, nr, (int8_t *)(slot + g->wout_off));
    }
}

/* output staging [oc][dy][dx][tile] -> NCHW, channels [c0, c1) */
AVX2 static void wino_unstage(const rt_op *op, const uint8_t *slot, int8_t *yimg, int c0, int c1)
{
    const rt_gemm *g = &op->g;
    const int OH = op->out_shape[1], OW = op->out_shape[2], TW = g->wtw;
    const size_t tpad = g->wtpad;
    const int8_t *out = (const int8_t *)(slot + g->wout_off);
    for (int c = c0; c < c1; c++)
        for (int oh = 0; oh < OH; oh++) {
            const int8_t *a = out + ((size_t)c * 4 + (size_t)(oh & 1) * 2) * tpad + (size_t)(oh >> 1) * TW;
            const int8_t *b = a + tpad;
            int8_t *yr = yimg + ((size_t)c * OH + oh) * OW;
            for (int k = 0; 2 * k < OW; k += 16) {
                const __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(a + k));
                const __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(b + k));
                const __m128i lo = _mm_unpacklo_epi8(va, vb), hi = _mm_unpackhi_epi8(va, vb);
                const int n = OW - 2 * k;
                /* a row may spill into the next rows of its channel, which
                 * are written after it, not past the channel (conv2d_split
                 * unstages the channels on different threads) */
                if (n >= 32 || (size_t)oh * OW + 2 * (size_t)k + 32 <= (size_t)OH * OW) {
                    _mm_storeu_si128((__m128i *)(void *)(yr + 2 * k), lo);
                    _mm_storeu_si128((__m128i *)(void *)(yr + 2 * k + 16), hi);
                } else {
                    /* the copy reads one 16-byte store (loads spanning two
                     * stores do not forward: that stalled) */
                    int8_t t[16];
                    int8_t *d = yr + 2 * k;
                    if (n >= 16) {
                        _mm_storeu_si128((__m128i *)(void *)d, lo);
                        _mm_storeu_si128((__m128i *)(void *)t, hi);
                        memcpy(d + 16, t, (size_t)n - 16);
                    } else {
                        _mm_storeu_si128((__m128i *)(void *)t, lo);
                        memcpy(d, t, (size_t)n);
                    }
                }
            }
        }
}

/* staging rows (q = oh * ws + ow) -> NCHW, channels [c0, c1). 16-byte
 * copies (a library memcpy per short row cost more than the conv): a row
 * may spill into the next rows of its channel, which are written after it,
 * never past the channel (conv2d_split unstages channels on different
 * threads); the loads read at most 15 bytes past the staging rows (the
 * slack in tmp_bytes). */
AVX2 static void conv_unstage(const rt_op *op, const uint8_t *slot, int8_t *yimg, int c0, int c1)
{
    const rt_gemm *g = &op->g;
    const int8_t *tmp = (const int8_t *)(slot + (g->img_bytes + 63) / 64 * 64);
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const size_t ldt = (size_t)g->q_vecs * 8, plane = (size_t)OH * OW;
    for (int c = c0; c < c1; c++)
        for (int oh = 0; oh < OH; oh++) {
            const int8_t *s = tmp + c * ldt + (size_t)oh * g->ws;
            int8_t *d = yimg + ((size_t)c * OH + oh) * OW;
            const size_t room = plane - (size_t)oh * OW;
            int k = 0;
            for (; k < OW && (size_t)k + 16 <= room; k += 16)
                _mm_storeu_si128((__m128i *)(void *)(d + k), _mm_loadu_si128((const __m128i *)(const void *)(s + k)));
            const int n = OW - k; /* < 16, the channel's last bytes */
            if (n <= 0) continue;
            if (n & 8) memcpy(d + k, s + k, 8), k += 8;
            if (n & 4) memcpy(d + k, s + k, 4), k += 4;
            if (n & 2) memcpy(d + k, s + k, 2), k += 2;
            if (n & 1) d[k] = s[k];
        }
}

static void avx2_conv_plan(const rt_op *op, rt_conv_plan *p)
{
    const rt_gemm *g = &op->g;
    if (g->wino) {
        *p = (rt_conv_plan){wino_pack, wino_block, wino_unstage, (g->wth * g->wtw + 7) / 8};
        return;
    }
    *p = (rt_conv_plan){qat_rti_conv_pack, avx2_conv_block, conv_unstage, g->q_vecs};
}

/* ---- linear ---- */

/* one sample: int16 x - zp, 0 past IN to the row's end (xrow_bytes) */
AVX2 static void avx2_lin_pack(const rt_op *op, const int8_t *x, uint8_t *row)
{
    const int in = op->ic;
    const int32_t zp = op->in_zp;
    const size_t row_elems = op->g.xrow_bytes / 2;
    int16_t *xs = (int16_t *)(void *)row;
    const __m256i zpv = _mm256_set1_epi16((short)zp);
    int k = 0;
    for (; k + 16 <= in; k += 16)
        _mm256_storeu_si256((__m256i *)(void *)(xs + k),
                            _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(x + k))), zpv));
    for (; k < in; k++) xs[k] = (int16_t)(x[k] - zp);
    for (; (size_t)k < row_elems; k++) xs[k] = 0;
}

AVX2_INLINE void lin_tile(const int MR, const int NR, const uint8_t *xs, size_t xrow, int kg,
                          const int16_t *w, size_t wrow, const rt_epi *e, int o0, int8_t *y,
                          int OUT)
{
    const __m256i z = _mm256_setzero_si256();
    const __m256i bias0 = _mm256_loadu_si256((const __m256i *)(const void *)(e->bias + o0));
    const __m256i bias1 =
        NR > 1 ? _mm256_loadu_si256((const __m256i *)(const void *)(e->bias + o0 + 8)) : z;
#define LT_DECL(r) __m256i a##r##0 = bias0, a##r##1 = bias1;
    RT_R4(LT_DECL)
#undef LT_DECL
    for (int j = 0; j < kg; j++) {
        const int16_t *wj = w + (size_t)j * wrow;
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)wj);
        const __m256i w1 = NR > 1 ? _mm256_loadu_si256((const __m256i *)(const void *)(wj + 16)) : z;
#define LT_STEP(r)                                                                        \
    if (r < MR) {                                                                         \
        const __m256i xb = _mm256_set1_epi32(rt_ld32(xs + (size_t)r * xrow + 4 * (size_t)j)); \
        a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(xb, w0));                   \
        if (NR > 1) a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(xb, w1));       \
    }
        RT_R4(LT_STEP)
#undef LT_STEP
    }
    __m256i acc[LIN_MR][LIN_NR];
    RT_R4(RT_SAVE2)
    for (int v = 0; v < NR; v++) {
        const int c0 = o0 + 8 * v;
        const epi_par p = epi_lanes_load(e, c0);
        const int cnt = rt_imin(8, OUT - c0);
        for (int r = 0; r < MR; r++) {
            const __m128i b = epi_apply(acc[r][v], &p);
            int8_t *d = y + (size_t)r * OUT + c0;
            if (cnt == 8) {
                _mm_storel_epi64((__m128i *)(void *)d, b);
            } else {
                int8_t t[16];
                _mm_storeu_si128((__m128i *)(void *)t, b);
                memcpy(d, t, (size_t)cnt);
            }
        }
    }
}

AVX2 static void avx2_lin_tile(const rt_op *op, const uint8_t *xs, int8_t *y, int o0, int mr, int nr)
{
    const rt_gemm *g = &op->g;
    const int16_t *w = (const int16_t *)g->w + (size_t)o0 * 2;
    const size_t wrow = (size_t)g->mpad * 2; /* int16 elements per k pair row */
#define TILE(MR_, NR_) lin_tile(MR_, NR_, xs, g->xrow_bytes, g->kg, w, wrow, &g->epi, o0, y, op->oc)
    RT_TILES(mr, nr, RT_MR4(RT_NR2))
#undef TILE
}

/* ---- maxpool 2x2 stride 2 ---- */

AVX2 static void avx2_maxpool_plane(const rt_op *op, const int8_t *x, int8_t *y, size_t room)
{
    const int W = op->in_w, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int oh = 0; oh < OH; oh++) {
        const int8_t *r0 = x + (size_t)(2 * oh) * W, *r1 = r0 + W;
        int8_t *yr = y + (size_t)oh * OW;
        int o = 0;
        for (; o + 32 <= OW; o += 32) { /* 64 input columns -> 32 outputs */
            __m256i a = _mm256_max_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(r0 + 2 * o)),
                                        _mm256_loadu_si256((const __m256i *)(const void *)(r1 + 2 * o)));
            __m256i b = _mm256_max_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(r0 + 2 * o + 32)),
                                        _mm256_loadu_si256((const __m256i *)(const void *)(r1 + 2 * o + 32)));
            /* low byte of each 16-bit lane: the pair's maximum, sign-extended */
            a = _mm256_srai_epi16(_mm256_slli_epi16(_mm256_max_epi8(a, _mm256_srli_epi16(a, 8)), 8), 8);
            b = _mm256_srai_epi16(_mm256_slli_epi16(_mm256_max_epi8(b, _mm256_srli_epi16(b, 8)), 8), 8);
            _mm256_storeu_si256((__m256i *)(void *)(yr + o),
                                _mm256_permute4x64_epi64(_mm256_packs_epi16(a, b), 0xD8));
        }
        /* 16 outputs at a time: reads up to 31 bytes past the row pair
         * (the next rows, or the 64 bytes of slack after every activation
         * buffer); the stores may spill into the next output rows, written
         * after them, not past the image */
        const size_t left = room - (size_t)oh * OW;
        for (; o < OW && (size_t)o + 16 <= left; o += 16) {
            __m256i a = _mm256_max_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(r0 + 2 * o)),
                                        _mm256_loadu_si256((const __m256i *)(const void *)(r1 + 2 * o)));
            a = _mm256_srai_epi16(_mm256_slli_epi16(_mm256_max_epi8(a, _mm256_srli_epi16(a, 8)), 8), 8);
            const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(a, a), 0xD8);
            _mm_storeu_si128((__m128i *)(void *)(yr + o), _mm256_castsi256_si128(p));
        }
        for (; o < OW; o++) {
            int8_t m0 = r0[2 * o] > r0[2 * o + 1] ? r0[2 * o] : r0[2 * o + 1];
            int8_t m1 = r1[2 * o] > r1[2 * o + 1] ? r1[2 * o] : r1[2 * o + 1];
            yr[o] = m0 > m1 ? m0 : m1;
        }
    }
}

static void avx2_maxpool_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    qat_rti_maxpool_planes(op, x, y, avx2_maxpool_plane);
}

/* ---- add (prepare.c: qat_rti_add_prepare) ---- */

AVX2 static void avx2_add_image(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
{
    if (qat_rti_add_other(op, a, b, y)) return;
    const size_t n = op->out_size;
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
    const __m256i za = _mm256_set1_epi16((short)op->add_zp[0]), zb = _mm256_set1_epi16((short)op->add_zp[1]);
    const __m256i hm = _mm256_set1_epi32(op->add_h), lm = _mm256_set1_epi32(op->add_l);
    const __m256i c = _mm256_set1_epi32(op->add_c), z = _mm256_set1_epi32(zp);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    const __m128i sh = _mm_cvtsi32_si128(op->add_sh);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i da = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + i))), za);
        const __m256i db = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(b + i))), zb);
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            const __m256i pr = k ? _mm256_unpackhi_epi16(da, db) : _mm256_unpacklo_epi16(da, db);
            const __m256i hv = _mm256_madd_epi16(pr, hm), lv = _mm256_madd_epi16(pr, lm);
            __m256i v = _mm256_add_epi32(_mm256_add_epi32(hv, c), _mm256_srai_epi32(lv, 16));
            v = _mm256_add_epi32(_mm256_sra_epi32(v, sh), z);
            r[k] = _mm256_min_epi32(_mm256_max_epi32(v, vlo), vhi);
        }
        const __m256i p16 = _mm256_packs_epi32(r[0], r[1]); /* original order */
        const __m256i p8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(p16, p16), 0xD8);
        _mm_storeu_si128((__m128i *)(void *)(y + i), _mm256_castsi256_si128(p8));
    }
    if (i < n) { /* tail: the reference on the last elements */
        rt_op tail = *op;
        tail.out_size = n - i;
        qat_rti_add_s8(&tail, a + i, b + i, y + i);
    }
}

/* ---- depthwise 3x3 (kernels_common.c: qat_rti_prepare_dw) ---- */

static int avx2_prepare_dw(rt_op *op)
{
    return qat_rti_prepare_dw(op, &avx2_fast);
}

/* n padded input values -> int16 x - zp (16 at a time: up to 15 past n) */
AVX2 static void avx2_dw_row(const rt_op *op, const int8_t *src, int n, uint8_t *dst)
{
    const __m256i zp = _mm256_set1_epi16((short)op->in_zp);
    int16_t *d = (int16_t *)(void *)dst;
    for (int k = 0; k < n; k += 16)
        _mm256_storeu_si256((__m256i *)(void *)(d + k),
                            _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(src + k))), zp));
}

/* stride 2: a padded int8 row -> int16 x - zp of its even and odd columns */
AVX2 static void avx2_dw_row2(const rt_op *op, const int8_t *row, uint8_t *d0, uint8_t *d1)
{
    const __m256i zp = _mm256_set1_epi16((short)op->in_zp);
    /* per 128-bit lane: the even words to bytes 0-7, the odd to 8-15 */
    const __m256i sh = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const int ws = op->g.ws;
    int16_t *e = (int16_t *)(void *)d0, *o = (int16_t *)(void *)d1;
    for (int j = 0; j < ws; j += 8) {
        __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(row + 2 * j)));
        v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_sub_epi16(v, zp), sh), 0xD8);
        _mm_storeu_si128((__m128i *)(void *)(e + j), _mm256_castsi256_si128(v));
        _mm_storeu_si128((__m128i *)(void *)(o + j), _mm256_extracti128_si256(v, 1));
    }
}

/* one image, channel by channel: D, cells of row pairs (kh 0-1, 2-3), six
 * vpmaddwd a vector of 8 positions, the epilogue, the rows out */
AVX2 static void avx2_dw_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot)
{
    const rt_gemm *g = &op->g;
    const int s = g->s, ws = g->ws, R = g->dw_rows, nv = g->q_vecs;
    const size_t ip = (size_t)op->in_h * op->in_w, opl = (size_t)op->out_shape[1] * op->out_shape[2];
    uint8_t *cells = slot + g->dw_coff, *t = slot + g->dw_toff;
    /* tap column kw, row group grp: phase kw % s, kw / s + grp * (2 / s) * ws cells on */
    const uint8_t *b[6];
    for (int kw = 0; kw < 3; kw++)
        for (int grp = 0; grp < 2; grp++)
            b[kw * 2 + grp] = cells + (size_t)(kw % s) * g->dw_cplane + ((size_t)(kw / s) + (size_t)grp * (2 / s) * ws) * 4;
    for (int c = 0; c < op->oc; c++) {
        qat_rti_dw_pack_d(op, x + (size_t)c * ip, slot, avx2_dw_row, avx2_dw_row2);
        for (int ph = 0; ph < s; ph++) {
            const uint8_t *dp = slot + (size_t)ph * g->dw_dplane;
            uint8_t *cp = cells + (size_t)ph * g->dw_cplane;
            for (int i = 0; i < R; i++) {
                const uint8_t *r0 = dp + (size_t)s * i * ws * 2, *r1 = r0 + (size_t)ws * 2;
                uint8_t *o = cp + (size_t)i * ws * 4;
                for (int j = 0; j < ws; j += 8) {
                    const __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(r0 + 2 * j));
                    const __m128i bb = _mm_loadu_si128((const __m128i *)(const void *)(r1 + 2 * j));
                    _mm_storeu_si128((__m128i *)(void *)(o + 4 * j), _mm_unpacklo_epi16(a, bb));
                    _mm_storeu_si128((__m128i *)(void *)(o + 4 * j + 16), _mm_unpackhi_epi16(a, bb));
                }
            }
        }
        const epi_par p = epi_chan_load(&g->epi, c);
        const __m256i bias = _mm256_set1_epi32(g->epi.bias[c]);
        const int32_t *wc = (const int32_t *)g->w + (size_t)c * 6;
        __m256i w[6];
        for (int k = 0; k < 6; k++) w[k] = _mm256_set1_epi32(wc[k]);
        for (int v = 0; v < nv; v++) {
            const size_t o = 32 * (size_t)v;
#define DWL(k) _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(b[k] + o)), w[k])
            const __m256i acc = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(bias, DWL(0)), _mm256_add_epi32(DWL(1), DWL(2))),
                                                 _mm256_add_epi32(_mm256_add_epi32(DWL(3), DWL(4)), DWL(5)));
#undef DWL
            _mm_storel_epi64((__m128i *)(void *)(t + 8 * (size_t)v), epi_apply(acc, &p));
        }
        qat_rti_dw_unstage(op, t, y + (size_t)c * opl);
    }
}

static const rt_fast_isa avx2_fast = {
    .isa = QAT_RT_ISA_AVX2,
    .cpg = 2,
    .esize = 2,
    .lanes = 8,
    .rowsum_corr = 0,
    .conv_mr = CONV_MR,
    .conv_nr = CONV_NR,
    .lin_mr = LIN_MR,
    .lin_nr = LIN_NR,
    .rows_shared = avx2_rows_shared,
    .rows_s2 = avx2_rows_s2,
    .stage_shared = avx2_stage_shared,
    .interleave = avx2_interleave,
    .conv_plan = avx2_conv_plan,
    .lin_pack = avx2_lin_pack,
    .lin_tile = avx2_lin_tile,
};

const rt_isa_kernels qat_rti_avx2 = {
    .prepare_conv = avx2_prepare_conv,
    .prepare_linear = avx2_prepare_linear,
    .conv_slot_bytes = qat_rti_conv_slot_bytes,
    .linear_sample_bytes = qat_rti_linear_sample_bytes,
    .conv_image = qat_rti_conv_image,
    .conv2d_split = qat_rti_conv2d_split,
    .linear = qat_rti_linear,
    .prepare_dw = avx2_prepare_dw,
    .dw_slot_bytes = qat_rti_dw_slot_bytes,
    .dw_image = avx2_dw_image,
    .maxpool_image = avx2_maxpool_image,
    .add_image = avx2_add_image,
};
