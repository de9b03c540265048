/* runtime/kernels_avx2.c: AVX2 kernels, integer only.
 *
 * vpmaddubsw (u8 x s8, pairs summed into int16) saturates: 255*127*2 >
 * 32767, so it cannot give exact results here. These kernels use vpmaddwd
 * on int16 pairs instead: activations are widened to x - zp (in [-255, 255])
 * and weights to int16, so each pair sum is at most 2 * 255 * 128 = 65280 in
 * magnitude and lands exactly in an int32 lane, with no zero-point
 * correction needed. Otherwise the same structure as kernels_vnni.c: an
 * implicit GEMM over the packed image (cells of 2 channels = 4 bytes),
 * lanes of 8 output positions, the requantization fused in the epilogue
 * (prepare.c), output staged per image and copied into NCHW rows. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "runtime/rt_internal.h"

#pragma GCC poison float double

#define AVX2_TARGET "avx2"
#define AVX2 __attribute__((target(AVX2_TARGET)))
#define AVX2_INLINE static inline __attribute__((always_inline, target(AVX2_TARGET)))

/* register tiles (16 ymm registers): 4 rows x 2 vectors of 8 lanes */
enum { CONV_MR = 4, CONV_NR = 2, LIN_MR = 4, LIN_NR = 2 };

static inline int32_t ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline int imin(int a, int b)
{
    return a < b ? a : b;
}

/* 8 int32 in [-128, 127] -> 8 bytes in the low half */
AVX2_INLINE __m128i pack8(__m256i r)
{
    const __m256i p16 = _mm256_packs_epi32(r, r);   /* lane k: r[4k..4k+3] twice, int16 */
    const __m256i p8 = _mm256_packs_epi16(p16, p16); /* lane k: r[4k..4k+3] in bytes 0..3 */
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(p8), _mm256_extracti128_si256(p8, 1));
}

typedef struct {
    __m256i alo, ahi, m, rnd, cadd, lo, hi;
    __m128i t;
} epi_row;

AVX2_INLINE epi_row epi_row_load(const rt_epi *e, int c)
{
    epi_row p;
    p.alo = _mm256_set1_epi32(e->alo[c]);
    p.ahi = _mm256_set1_epi32(e->ahi[c]);
    p.m = _mm256_set1_epi32(e->m[c]);
    p.rnd = _mm256_set1_epi64x((long long)e->rnd[c]);
    p.cadd = _mm256_set1_epi32(e->cadd[c]);
    p.lo = _mm256_set1_epi32(e->lo);
    p.hi = _mm256_set1_epi32(e->hi);
    p.t = _mm_cvtsi32_si128(e->t[c]);
    return p;
}

AVX2_INLINE __m128i epi_row_apply(__m256i a, const epi_row *p)
{
    a = _mm256_min_epi32(_mm256_max_epi32(a, p->alo), p->ahi);
    __m256i ev = _mm256_mul_epi32(a, p->m);
    __m256i od = _mm256_mul_epi32(_mm256_srli_epi64(a, 32), p->m);
    ev = _mm256_srl_epi64(_mm256_add_epi64(ev, p->rnd), p->t);
    od = _mm256_srl_epi64(_mm256_add_epi64(od, p->rnd), p->t);
    __m256i r = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
    r = _mm256_add_epi32(r, p->cadd);
    r = _mm256_min_epi32(_mm256_max_epi32(r, p->lo), p->hi);
    return pack8(r);
}

typedef struct {
    __m256i alo, ahi, m, m_odd, te, to, re, ro, cadd, lo, hi;
} epi_lane;

AVX2_INLINE epi_lane epi_lane_load(const rt_epi *e, int c0)
{
    epi_lane p;
    p.alo = _mm256_loadu_si256((const __m256i *)(const void *)(e->alo + c0));
    p.ahi = _mm256_loadu_si256((const __m256i *)(const void *)(e->ahi + c0));
    p.m = _mm256_loadu_si256((const __m256i *)(const void *)(e->m + c0));
    p.m_odd = _mm256_srli_epi64(p.m, 32);
    const __m256i t0 = _mm256_loadu_si256((const __m256i *)(const void *)(e->t64 + c0));
    const __m256i t1 = _mm256_loadu_si256((const __m256i *)(const void *)(e->t64 + c0 + 4));
    const __m256i r0 = _mm256_loadu_si256((const __m256i *)(const void *)(e->rnd + c0));
    const __m256i r1 = _mm256_loadu_si256((const __m256i *)(const void *)(e->rnd + c0 + 4));
    /* qword k of the accumulator holds channels c0 + 2k (low) and c0 + 2k + 1 */
    p.te = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(t0, t1), 0xD8);
    p.to = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(t0, t1), 0xD8);
    p.re = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(r0, r1), 0xD8);
    p.ro = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(r0, r1), 0xD8);
    p.cadd = _mm256_loadu_si256((const __m256i *)(const void *)(e->cadd + c0));
    p.lo = _mm256_set1_epi32(e->lo);
    p.hi = _mm256_set1_epi32(e->hi);
    return p;
}

AVX2_INLINE __m128i epi_lane_apply(__m256i a, const epi_lane *p)
{
    a = _mm256_min_epi32(_mm256_max_epi32(a, p->alo), p->ahi);
    __m256i ev = _mm256_mul_epi32(a, p->m);
    __m256i od = _mm256_mul_epi32(_mm256_srli_epi64(a, 32), p->m_odd);
    ev = _mm256_srlv_epi64(_mm256_add_epi64(ev, p->re), p->te);
    od = _mm256_srlv_epi64(_mm256_add_epi64(od, p->ro), p->to);
    __m256i r = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
    r = _mm256_add_epi32(r, p->cadd);
    r = _mm256_min_epi32(_mm256_max_epi32(r, p->lo), p->hi);
    return pack8(r);
}

/* ---- conv2d ---- */

static int avx2_prepare_conv(rt_op *op)
{
    rt_gemm *g = &op->g;
    qat_rti_gemm_free(g);
    g->isa = QAT_RT_ISA_AVX2;
    int st = qat_rti_conv_geometry(op, g, 2, 8, 2);
    if (!st) st = qat_rti_epi_init(op, g, op->oc, 0);
    if (st) return st;
    const int OC = op->oc, kg = g->kg;
    const size_t K = (size_t)op->ic * op->kh * op->kw;
    int16_t *w = qat_rti_alloc((size_t)OC * kg * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    /* tile m0 (mr rows): [kg][mr][2] int16 at element m0 * kg * 2 */
    for (int m0 = 0; m0 < OC; m0 += CONV_MR) {
        const int mr = imin(CONV_MR, OC - m0);
        int16_t *wt = w + (size_t)m0 * kg * 2;
        for (int j = 0; j < kg; j++)
            for (int r = 0; r < mr; r++)
                for (int e = 0; e < 2; e++) {
                    const long k = qat_rti_conv_k(op, g, 2, j, e);
                    wt[((size_t)j * mr + r) * 2 + e] = k < 0 ? 0 : op->weight[(size_t)(m0 + r) * K + (size_t)k];
                }
    }
    g->tmp_bytes = (size_t)OC * g->q_vecs * 8;
    return QAT_OK;
}

static size_t avx2_conv_slot_bytes(const rt_op *op)
{
    return (op->g.img_bytes + 63) / 64 * 64 + op->g.tmp_bytes;
}

/* tap cells: each input channel staged as int16 planes (x - zp, padding 0),
 * then every pair of taps interleaved from its 2 shifted streams */
AVX2 static void conv_pack_taps(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, s = g->s, ws = g->ws;
    const int32_t zp = op->in_zp;
    const size_t cells = g->splane;
    int16_t *st = (int16_t *)(void *)(xp + g->stage_off);
    for (int c = 0; c < C; c++)
        for (int ph = 0; ph < s; ph++)
            for (int pw = 0; pw < s; pw++) {
                int16_t *pl = st + ((size_t)(c * s + ph) * s + pw) * cells;
                if (g->shared_pad) { /* rows of W + P, P more at the end */
                    memset(pl, 0, cells * 2);
                    for (int ih = 0; ih < H; ih++) {
                        int16_t *row = pl + (size_t)(ih + P) * ws + P;
                        const int8_t *src = x + ((size_t)c * H + ih) * W;
                        for (int iw = 0; iw < W; iw++) row[iw] = (int16_t)(src[iw] - zp);
                    }
                    continue;
                }
                for (int i = 0; i < g->hs; i++) {
                    const int ih = i * s + ph - P;
                    for (int j = 0; j < ws; j++) {
                        const int iw = j * s + pw - P;
                        pl[(size_t)i * ws + j] = (int16_t)(ih >= 0 && ih < H && iw >= 0 && iw < W
                                                               ? x[((size_t)c * H + ih) * W + iw] - zp
                                                               : 0);
                    }
                }
            }
    const long K = (long)C * op->kh * op->kw;
    for (int j = 0; j < g->kg; j++) {
        const int16_t *a = st + g->soff[2 * j];
        const int16_t *b = st + (2L * j + 1 < K ? g->soff[2 * j + 1] : 0);
        uint8_t *d = xp + (size_t)j * g->plane_bytes;
        for (int v = 0; v < g->q_vecs; v++) {
            const __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(a + 8 * v));
            const __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(b + 8 * v));
            _mm_storeu_si128((__m128i *)(void *)(d + (size_t)v * 32), _mm_unpacklo_epi16(va, vb));
            _mm_storeu_si128((__m128i *)(void *)(d + (size_t)v * 32 + 16), _mm_unpackhi_epi16(va, vb));
        }
    }
}

/* x [C][H][W] int8 -> cells of two int16 x - zp (padding 0) */
AVX2 static void conv_pack(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    if (op->g.tap_mode) {
        conv_pack_taps(op, x, xp);
        return;
    }
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, s = g->s;
    const int32_t zp = op->in_zp;
    if (g->shared_pad) {
        /* rows of ws = W + P cells sharing their pad columns (prepare.c) */
        const __m256i zpv = _mm256_set1_epi16((short)zp);
        const int ws = g->ws;
        for (int grp = 0; grp < g->groups; grp++) {
            int16_t *pl = (int16_t *)(void *)(xp + (size_t)grp * g->plane_bytes);
            const int8_t *s0 = x + (size_t)(grp * 2) * H * W;
            const int8_t *s1 = grp * 2 + 1 < C ? s0 + (size_t)H * W : NULL;
            for (int hp = 0; hp < g->hp; hp++) {
                int16_t *row = pl + (size_t)hp * ws * 2;
                const int ih = hp - P;
                if (ih < 0 || ih >= H) {
                    memset(row, 0, (size_t)ws * 4);
                    continue;
                }
                memset(row, 0, (size_t)P * 4);
                const int8_t *a = s0 + (size_t)ih * W, *b = s1 ? s1 + (size_t)ih * W : NULL;
                int c0 = 0;
                for (; c0 + 16 <= W; c0 += 16) {
                    const __m256i va = _mm256_sub_epi16(
                        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + c0))), zpv);
                    const __m256i vb = b ? _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(
                                                                (const __m128i *)(const void *)(b + c0))),
                                                            zpv)
                                         : _mm256_setzero_si256();
                    const __m256i lo = _mm256_unpacklo_epi16(va, vb); /* cols 0-3 | 8-11 */
                    const __m256i hi = _mm256_unpackhi_epi16(va, vb); /* cols 4-7 | 12-15 */
                    int16_t *d = row + (size_t)(P + c0) * 2;
                    _mm256_storeu_si256((__m256i *)(void *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256((__m256i *)(void *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
                }
                for (; c0 < W; c0++) {
                    row[(size_t)(P + c0) * 2] = (int16_t)(a[c0] - zp);
                    row[(size_t)(P + c0) * 2 + 1] = (int16_t)(b ? b[c0] - zp : 0);
                }
            }
            memset(pl + (size_t)g->hp * ws * 2, 0, (size_t)P * 4);
        }
        return;
    }
    for (int grp = 0; grp < g->groups; grp++)
        for (int ph = 0; ph < s; ph++)
            for (int pw = 0; pw < s; pw++) {
                int16_t *pl = (int16_t *)(void *)(xp + ((size_t)(grp * s + ph) * s + pw) * g->plane_bytes);
                for (int i = 0; i < g->hs; i++) {
                    const int ih = i * s + ph - P;
                    for (int j = 0; j < g->ws; j++) {
                        const int iw = j * s + pw - P;
                        const int in = ih >= 0 && ih < H && iw >= 0 && iw < W;
                        int16_t *cell = pl + ((size_t)i * g->ws + j) * 2;
                        for (int e = 0; e < 2; e++) {
                            const int c = grp * 2 + e;
                            cell[e] = (int16_t)(in && c < C ? x[((size_t)c * H + ih) * W + iw] - zp : 0);
                        }
                    }
                }
            }
}

/* Named accumulators (GCC keeps arrays of vectors in memory across the
 * loop); MR and NR are constants after inlining. */
#define RT_R4(X) X(0) X(1) X(2) X(3)

AVX2_INLINE void conv_tile(const int MR, const int NR, const uint8_t *xq, const int32_t *koff,
                           int kg, const int16_t *wt, const rt_epi *e, int m0, int8_t *tmp,
                           size_t ldt)
{
    const __m256i z = _mm256_setzero_si256();
#define CT_DECL(r) __m256i a##r##0 = z, a##r##1 = z;
    RT_R4(CT_DECL)
#undef CT_DECL
#define CT_INIT(r)                                            \
    if (r < MR) {                                             \
        a##r##0 = _mm256_set1_epi32(e->bias[m0 + r]);         \
        if (NR > 1) a##r##1 = a##r##0;                        \
    }
    RT_R4(CT_INIT)
#undef CT_INIT
    for (int j = 0; j < kg; j++) {
        const uint8_t *bp = xq + koff[j];
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)bp);
        const __m256i b1 = NR > 1 ? _mm256_loadu_si256((const __m256i *)(const void *)(bp + 32)) : z;
#define CT_STEP(r)                                                                   \
    if (r < MR) {                                                                    \
        const __m256i w = _mm256_set1_epi32(ld32(wt + 2 * r));                       \
        a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(b0, w));               \
        if (NR > 1) a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(b1, w));   \
    }
        RT_R4(CT_STEP)
#undef CT_STEP
        wt += 2 * MR;
    }
    __m256i acc[CONV_MR][CONV_NR];
#define CT_SAVE(r)                       \
    if (r < MR) {                        \
        acc[r][0] = a##r##0;             \
        if (NR > 1) acc[r][1] = a##r##1; \
    }
    RT_R4(CT_SAVE)
#undef CT_SAVE
    for (int r = 0; r < MR; r++) {
        const epi_row p = epi_row_load(e, m0 + r);
        for (int v = 0; v < NR; v++)
            _mm_storel_epi64((__m128i *)(void *)(tmp + (size_t)(m0 + r) * ldt + 8 * v),
                             epi_row_apply(acc[r][v], &p));
    }
}

AVX2 static void conv_tile_any(int mr, int nr, const uint8_t *xq, const int32_t *koff, int kg,
                               const int16_t *wt, const rt_epi *e, int m0, int8_t *tmp,
                               size_t ldt)
{
#define CT(MR_, NR_)                                                   \
    case MR_ * 4 + NR_: conv_tile(MR_, NR_, xq, koff, kg, wt, e, m0, tmp, ldt); break;
#define CT2(MR_) CT(MR_, 1) CT(MR_, 2)
    switch (mr * 4 + nr) {
        CT2(1) CT2(2) CT2(3) CT2(4)
    default: break;
    }
#undef CT2
#undef CT
}

/* q tiles [t0, t1) of one packed image into its staging rows tmp[OC][q_vecs * 8] */
AVX2 static void conv_image(const rt_op *op, const uint8_t *xp, int8_t *tmp, int t0, int t1)
{
    const rt_gemm *g = &op->g;
    const size_t ldt = (size_t)g->q_vecs * 8;
    for (int t = t0; t < t1; t++) {
        const int v0 = t * CONV_NR, nr = imin(CONV_NR, g->q_vecs - v0);
        for (int m0 = 0; m0 < op->oc; m0 += CONV_MR)
            conv_tile_any(imin(CONV_MR, op->oc - m0), nr, xp + (size_t)v0 * 32, g->koff, g->kg,
                          (const int16_t *)g->w + (size_t)m0 * g->kg * 2, &g->epi, m0,
                          tmp + (size_t)v0 * 8, ldt);
    }
}

/* staging rows (q = oh * ws + ow) -> NCHW, channels [c0, c1) */
static void conv_unstage(const rt_op *op, const int8_t *tmp, int8_t *yimg, int c0, int c1)
{
    const rt_gemm *g = &op->g;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const size_t ldt = (size_t)g->q_vecs * 8;
    for (int c = c0; c < c1; c++)
        for (int oh = 0; oh < OH; oh++)
            memcpy(yimg + ((size_t)c * OH + oh) * OW, tmp + c * ldt + (size_t)oh * g->ws, (size_t)OW);
}

AVX2 static void avx2_conv_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot)
{
    int8_t *tmp = (int8_t *)(slot + (op->g.img_bytes + 63) / 64 * 64);
    conv_pack(op, x, slot);
    conv_image(op, slot, tmp, 0, (op->g.q_vecs + CONV_NR - 1) / CONV_NR);
    conv_unstage(op, tmp, y, 0, op->oc);
}

/* fewer images than threads: one slot per image, the tiles split */
static void avx2_conv2d_split(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                              uint8_t *scratch, size_t slot_bytes)
{
    const size_t in_sz = (size_t)op->ic * op->in_h * op->in_w;
    const size_t out_sz = (size_t)op->oc * op->out_shape[1] * op->out_shape[2];
    const size_t tmp_off = (op->g.img_bytes + 63) / 64 * 64;
    const int qtiles = (op->g.q_vecs + CONV_NR - 1) / CONV_NR;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) conv_pack(op, x + (size_t)i * in_sz, scratch + (size_t)i * slot_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < n * qtiles; w++) {
            const int i = w / qtiles, t = w % qtiles;
            uint8_t *xp = scratch + (size_t)i * slot_bytes;
            conv_image(op, xp, (int8_t *)(xp + tmp_off), t, t + 1);
        }
#pragma omp for schedule(static)
        for (int w = 0; w < n * op->oc; w++) {
            const int i = w / op->oc, c = w % op->oc;
            uint8_t *xp = scratch + (size_t)i * slot_bytes;
            conv_unstage(op, (int8_t *)(xp + tmp_off), y + (size_t)i * out_sz, c, c + 1);
        }
    }
}

/* ---- linear ---- */

static int avx2_prepare_linear(rt_op *op)
{
    rt_gemm *g = &op->g;
    qat_rti_gemm_free(g);
    g->isa = QAT_RT_ISA_AVX2;
    const int IN = op->ic, OUT = op->oc;
    const int opad = (OUT + 7) / 8 * 8;
    int st = qat_rti_epi_init(op, g, opad, 0);
    if (st) return st;
    g->kg = (IN + 1) / 2;
    g->xrow_bytes = (size_t)g->kg * 4;
    int16_t *w = qat_rti_alloc((size_t)g->kg * opad * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    /* [kg][opad][2] */
    for (int o = 0; o < OUT; o++)
        for (int k = 0; k < IN; k++)
            w[((size_t)(k / 2) * opad + o) * 2 + k % 2] = op->weight[(size_t)o * IN + k];
    return QAT_OK;
}

static size_t avx2_linear_sample_bytes(const rt_op *op)
{
    return op->g.xrow_bytes;
}

AVX2 static void lin_pack(const int8_t *x, int16_t *xs, int in, int32_t zp, size_t row_elems)
{
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
        const __m256i xb = _mm256_set1_epi32(ld32(xs + (size_t)r * xrow + 4 * (size_t)j)); \
        a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(xb, w0));                   \
        if (NR > 1) a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(xb, w1));       \
    }
        RT_R4(LT_STEP)
#undef LT_STEP
    }
    __m256i acc[LIN_MR][LIN_NR];
#define LT_SAVE(r)                       \
    if (r < MR) {                        \
        acc[r][0] = a##r##0;             \
        if (NR > 1) acc[r][1] = a##r##1; \
    }
    RT_R4(LT_SAVE)
#undef LT_SAVE
    for (int v = 0; v < NR; v++) {
        const int c0 = o0 + 8 * v;
        const epi_lane p = epi_lane_load(e, c0);
        const int cnt = imin(8, OUT - c0);
        for (int r = 0; r < MR; r++) {
            const __m128i b = epi_lane_apply(acc[r][v], &p);
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

AVX2 static void lin_tile_any(int mr, int nr, const uint8_t *xs, size_t xrow, int kg,
                              const int16_t *w, size_t wrow, const rt_epi *e, int o0, int8_t *y,
                              int OUT)
{
#define LT(MR_, NR_)                                                           \
    case MR_ * 4 + NR_: lin_tile(MR_, NR_, xs, xrow, kg, w, wrow, e, o0, y, OUT); break;
#define LT2(MR_) LT(MR_, 1) LT(MR_, 2)
    switch (mr * 4 + nr) {
        LT2(1) LT2(2) LT2(3) LT2(4)
    default: break;
    }
#undef LT2
#undef LT
}

AVX2 static void lin_tiles(const rt_op *op, const uint8_t *xs, int8_t *y, int n, int w0, int w1)
{
    const rt_gemm *g = &op->g;
    const int ntiles = (n + LIN_MR - 1) / LIN_MR;
    const size_t wrow = (size_t)g->mpad * 2; /* int16 elements per k pair row */
    for (int w = w0; w < w1; w++) {
        const int ot = w / ntiles, nt = w % ntiles;
        const int n0 = nt * LIN_MR, o0 = ot * LIN_NR * 8;
        const int mr = imin(LIN_MR, n - n0), nr = imin(LIN_NR, (g->mpad - o0) / 8);
        lin_tile_any(mr, nr, xs + (size_t)n0 * g->xrow_bytes, g->xrow_bytes, g->kg,
                     (const int16_t *)g->w + (size_t)o0 * 2, wrow, &g->epi, o0,
                     y + (size_t)n0 * op->oc, op->oc);
    }
}

static void avx2_linear(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                        uint8_t *shared)
{
    const rt_gemm *g = &op->g;
    const int ntiles = (n + LIN_MR - 1) / LIN_MR;
    const int otiles = (g->mpad / 8 + LIN_NR - 1) / LIN_NR;
    const int items = ntiles * otiles;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            lin_pack(x + (size_t)i * op->ic, (int16_t *)(void *)(shared + (size_t)i * g->xrow_bytes),
                     op->ic, op->in_zp, g->xrow_bytes / 2);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < items; w++) lin_tiles(op, shared, y, n, w, w + 1);
    }
}

/* ---- maxpool 2x2 stride 2 ---- */

AVX2 static void avx2_maxpool_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    if (op->kernel != 2 || op->stride != 2) {
        qat_rti_maxpool2d_s8(op, x, y);
        return;
    }
    const int H = op->in_h, W = op->in_w, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int c = 0; c < op->in_c; c++)
        for (int oh = 0; oh < OH; oh++) {
            const int8_t *r0 = x + ((size_t)c * H + 2 * oh) * W, *r1 = r0 + W;
            int8_t *yr = y + ((size_t)c * OH + oh) * OW;
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
            for (; o < OW; o++) {
                int8_t m0 = r0[2 * o] > r0[2 * o + 1] ? r0[2 * o] : r0[2 * o + 1];
                int8_t m1 = r1[2 * o] > r1[2 * o + 1] ? r1[2 * o] : r1[2 * o + 1];
                yr[o] = m0 > m1 ? m0 : m1;
            }
        }
}

/* ---- add (prepare.c: qat_rti_add_prepare) ---- */

AVX2 static void avx2_add_image(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
{
    const size_t n = op->out_size;
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
    if (op->add_fast == 2) {
        memset(y, (int8_t)(zp < lo ? lo : zp > hi ? hi : zp), n);
        return;
    }
    if (op->add_fast != 1) {
        qat_rti_add_s8(op, a, b, y);
        return;
    }
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

const rt_isa_kernels qat_rti_avx2 = {
    .prepare_conv = avx2_prepare_conv,
    .prepare_linear = avx2_prepare_linear,
    .conv_slot_bytes = avx2_conv_slot_bytes,
    .linear_sample_bytes = avx2_linear_sample_bytes,
    .conv_image = avx2_conv_image,
    .conv2d_split = avx2_conv2d_split,
    .linear = avx2_linear,
    .maxpool_image = avx2_maxpool_image,
    .add_image = avx2_add_image,
};
