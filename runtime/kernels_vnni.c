/* runtime/kernels_vnni.c: AVX-512 VNNI kernels (vpdpbusd), integer only.
 *
 * vpdpbusd multiplies unsigned bytes by signed bytes, four products summed
 * into each int32 lane, without saturation. Activations go in as
 * u8 = x + 128 (x ^ 0x80), so
 *     sum w * (x - zp) = sum w * u8 - (128 + zp) * rowsum(w),
 * and the second term is folded into an effective bias at prepare time
 * (qat_rti_epi_init; load.c proved |acc| < 2^31, so the wrapping int32 sums
 * are exact). Compiled with function-level target attributes only: the
 * rest of the library runs on any x86-64, and these run when cpu.c says so.
 *
 * conv2d: implicit GEMM over the packed image (prepare.c's geometry: cells
 * of 4 input channels, stride phases split out); lanes are 16 output
 * positions, rows are output channels whose 4 weights per k group are
 * broadcast from memory; requantization is fused in the epilogue and the
 * 16 bytes go straight into the NCHW output through precomputed masks.
 * linear: lanes are 16 output features (weights packed [IN/4][OUT][4]),
 * rows are samples whose 4 activation bytes are broadcast. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "runtime/rt_internal.h"

#pragma GCC poison float double

#define VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni"
#define VNNI __attribute__((target(VNNI_TARGET)))
#define VNNI_INLINE static inline __attribute__((always_inline, target(VNNI_TARGET)))

/* register tiles: conv 8 channels x 3 vectors of 16 positions, linear
 * 6 samples x 4 vectors of 16 features (24 accumulators of 32 registers) */
enum { CONV_MR = 8, CONV_NR = 3, LIN_MR = 6, LIN_NR = 4 };

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

/* ---- requantization epilogue (prepare.c proves it exact) ---- */

/* per-row (one output channel) parameters, broadcast. The odd lanes'
 * products are shifted so that r lands directly in their high dword:
 * right by t - 32, or left by 32 - t when t < 32 (the high dword of
 * u << (32 - t) is u >> t modulo 2^32). */
typedef struct {
    __m512i alo, ahi, m, rnd, cadd, lo, hi;
    __m128i te, to;
    int left, fin;
} epi_row;

VNNI_INLINE epi_row epi_row_load(const rt_epi *e, int c)
{
    epi_row p;
    const int t = e->t[c];
    p.alo = _mm512_set1_epi32(e->alo[c]);
    p.ahi = _mm512_set1_epi32(e->ahi[c]);
    p.m = _mm512_set1_epi32(e->m[c]);
    p.rnd = _mm512_set1_epi64((long long)e->rnd[c]);
    p.cadd = _mm512_set1_epi32(e->cadd[c]);
    p.lo = _mm512_set1_epi32(e->lo);
    p.hi = _mm512_set1_epi32(e->hi);
    p.te = _mm_cvtsi32_si128(t);
    p.left = t < 32;
    p.to = _mm_cvtsi32_si128(t < 32 ? 32 - t : t - 32);
    p.fin = e->fin[c];
    return p;
}

VNNI_INLINE __m128i epi_row_apply(__m512i a, const epi_row *p)
{
    a = _mm512_min_epi32(_mm512_max_epi32(a, p->alo), p->ahi);
    __m512i ev = _mm512_mul_epi32(a, p->m);
    __m512i od = _mm512_mul_epi32(_mm512_srli_epi64(a, 32), p->m);
    ev = _mm512_srl_epi64(_mm512_add_epi64(ev, p->rnd), p->te);
    od = _mm512_add_epi64(od, p->rnd);
    od = p->left ? _mm512_sll_epi64(od, p->to) : _mm512_srl_epi64(od, p->to);
    __m512i r = _mm512_mask_blend_epi32(0xAAAA, ev, od);
    r = _mm512_add_epi32(r, p->cadd);
    if (p->fin) r = _mm512_min_epi32(_mm512_max_epi32(r, p->lo), p->hi);
    return _mm512_cvtepi32_epi8(r);
}

/* per-lane (16 output features) parameters */
typedef struct {
    __m512i alo, ahi, m, m_odd, te, to, re, ro, cadd, lo, hi;
} epi_lane;

VNNI_INLINE epi_lane epi_lane_load(const rt_epi *e, int c0)
{
    const __m512i ev_idx = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od_idx = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    epi_lane p;
    p.alo = _mm512_loadu_si512(e->alo + c0);
    p.ahi = _mm512_loadu_si512(e->ahi + c0);
    p.m = _mm512_loadu_si512(e->m + c0);
    p.m_odd = _mm512_srli_epi64(p.m, 32);
    __m512i t0 = _mm512_loadu_si512(e->t64 + c0), t1 = _mm512_loadu_si512(e->t64 + c0 + 8);
    __m512i r0 = _mm512_loadu_si512(e->rnd + c0), r1 = _mm512_loadu_si512(e->rnd + c0 + 8);
    p.te = _mm512_permutex2var_epi64(t0, ev_idx, t1);
    p.to = _mm512_permutex2var_epi64(t0, od_idx, t1);
    p.re = _mm512_permutex2var_epi64(r0, ev_idx, r1);
    p.ro = _mm512_permutex2var_epi64(r0, od_idx, r1);
    p.cadd = _mm512_loadu_si512(e->cadd + c0);
    p.lo = _mm512_set1_epi32(e->lo);
    p.hi = _mm512_set1_epi32(e->hi);
    return p;
}

VNNI_INLINE __m128i epi_lane_apply(__m512i a, const epi_lane *p)
{
    a = _mm512_min_epi32(_mm512_max_epi32(a, p->alo), p->ahi);
    __m512i ev = _mm512_mul_epi32(a, p->m);
    __m512i od = _mm512_mul_epi32(_mm512_srli_epi64(a, 32), p->m_odd);
    ev = _mm512_srlv_epi64(_mm512_add_epi64(ev, p->re), p->te);
    od = _mm512_srlv_epi64(_mm512_add_epi64(od, p->ro), p->to);
    __m512i r = _mm512_mask_blend_epi32(0xAAAA, ev, _mm512_slli_epi64(od, 32));
    r = _mm512_add_epi32(r, p->cadd);
    r = _mm512_min_epi32(_mm512_max_epi32(r, p->lo), p->hi);
    return _mm512_cvtepi32_epi8(r);
}

/* ---- conv2d ---- */

static int vnni_prepare_conv(rt_op *op)
{
    rt_gemm *g = &op->g;
    qat_rti_gemm_free(g);
    g->isa = QAT_RT_ISA_AVX512_VNNI;
    int st = qat_rti_conv_geometry(op, g, 4, 16, 1);
    if (!st) st = qat_rti_epi_init(op, g, op->oc, 1);
    if (st) return st;
    const int OC = op->oc, kg = g->kg;
    const size_t K = (size_t)op->ic * op->kh * op->kw;
    int8_t *w = qat_rti_alloc((size_t)OC * kg * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    /* tile m0 (mr rows): [kg][mr][4] at byte m0 * kg * 4 */
    for (int m0 = 0; m0 < OC; m0 += CONV_MR) {
        const int mr = imin(CONV_MR, OC - m0);
        int8_t *wt = w + (size_t)m0 * kg * 4;
        for (int j = 0; j < kg; j++)
            for (int r = 0; r < mr; r++)
                for (int e = 0; e < 4; e++) {
                    const long k = qat_rti_conv_k(op, g, 4, j, e);
                    wt[((size_t)j * mr + r) * 4 + e] = k < 0 ? 0 : op->weight[(size_t)(m0 + r) * K + (size_t)k];
                }
    }
    /* output stores: the valid lanes of vector v (ow < OW) */
    const int OH = op->out_shape[1], OW = op->out_shape[2], ws = g->ws;
    g->vst = qat_rti_alloc((size_t)g->q_vecs * sizeof(rt_vstore));
    if (!g->vst) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    for (int v = 0; v < g->q_vecs; v++) {
        rt_vstore *d = &g->vst[v];
        int cnt = 0;
        memset(d->perm, 0x80, sizeof d->perm);
        for (int l = 0; l < 16; l++) {
            const int q = v * 16 + l, oh = q / ws, ow = q % ws;
            if (q >= g->q_count || oh >= OH || ow >= OW) continue;
            if (!cnt) d->off = oh * OW + ow;
            d->perm[cnt++] = (uint8_t)l;
        }
        d->mask = (1u << cnt) - 1;
    }
    return QAT_OK;
}

static size_t vnni_conv_slot_bytes(const rt_op *op)
{
    return (op->g.img_bytes + 63) / 64 * 64;
}

/* 4 rows of 16 bytes -> 16 cells of 4 bytes (64 bytes at d) */
VNNI_INLINE void interleave4(uint8_t *d, __m128i r0, __m128i r1, __m128i r2, __m128i r3)
{
    const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    _mm_storeu_si128((__m128i *)(void *)d, _mm_unpacklo_epi16(t0, t2));
    _mm_storeu_si128((__m128i *)(void *)(d + 16), _mm_unpackhi_epi16(t0, t2));
    _mm_storeu_si128((__m128i *)(void *)(d + 32), _mm_unpacklo_epi16(t1, t3));
    _mm_storeu_si128((__m128i *)(void *)(d + 48), _mm_unpackhi_epi16(t1, t3));
}

/* the same, as one vector (for masked stores) */
VNNI_INLINE __m512i interleave4_v(__m128i r0, __m128i r1, __m128i r2, __m128i r3)
{
    const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    __m512i v = _mm512_castsi128_si512(_mm_unpacklo_epi16(t0, t2));
    v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(t0, t2), 1);
    v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(t1, t3), 2);
    return _mm512_inserti32x4(v, _mm_unpackhi_epi16(t1, t3), 3);
}

/* stride 2, channel cells: padded row hp of 4 channels splits into its
 * even and odd columns, the rows of phase planes (hp % 2, 0) and (hp % 2, 1).
 * Each 32-column stretch of a channel row is one masked load: lanes
 * outside the image take the padding value. Only the phases some tap reads
 * are written (a 1x1 stride-2 conv reads phase (0, 0) alone). */
VNNI static void conv_pack_s2(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, ws = g->ws;
    const __m256i pvv = _mm256_set1_epi8((char)(op->in_zp + 128)), flip = _mm256_set1_epi8((char)0x80);
    const int need_odd_w = op->kw > 1;
    for (int grp = 0; grp < g->groups; grp++)
        for (int hp = 0; hp < 2 * g->hs; hp++) {
            const int ph = hp & 1, i = hp >> 1, ih = hp - P;
            if (ph >= op->kh) continue;
            const int8_t *src[4];
            for (int e = 0; e < 4; e++) {
                const int c = grp * 4 + e;
                src[e] = c < C && ih >= 0 && ih < H ? x + ((size_t)c * H + ih) * W : NULL;
            }
            uint8_t *r0 = xp + ((size_t)(grp * 2 + ph) * 2 + 0) * g->plane_bytes + (size_t)i * ws * 4;
            uint8_t *r1 = xp + ((size_t)(grp * 2 + ph) * 2 + 1) * g->plane_bytes + (size_t)i * ws * 4;
            for (int j0 = 0; j0 < ws; j0 += 16) {
                /* lane l is input column off + l */
                const int off = 2 * j0 - P, lo = off < 0 ? -off : 0, hi = W - off < 32 ? W - off : 32;
                const __mmask32 mk = hi <= lo ? 0 : (__mmask32)(((1ull << hi) - 1) & ~((1ull << lo) - 1));
                __m128i ev[4], od[4];
                for (int e = 0; e < 4; e++) {
                    __m256i v = pvv;
                    if (src[e]) {
                        /* masked-off lanes are not read (nor can they fault) */
                        const void *a = (const void *)((uintptr_t)src[e] + (uintptr_t)(intptr_t)off);
                        v = _mm256_mask_blend_epi8(mk, pvv, _mm256_xor_si256(_mm256_maskz_loadu_epi8(mk, a), flip));
                    }
                    ev[e] = _mm256_cvtepi16_epi8(v);
                    od[e] = _mm256_cvtepi16_epi8(_mm256_srli_epi16(v, 8));
                }
                const int cnt = imin(16, ws - j0);
                const __mmask16 sk = (__mmask16)(cnt == 16 ? 0xFFFF : (1u << cnt) - 1);
                _mm512_mask_storeu_epi32(r0 + (size_t)j0 * 4, sk, interleave4_v(ev[0], ev[1], ev[2], ev[3]));
                if (need_odd_w)
                    _mm512_mask_storeu_epi32(r1 + (size_t)j0 * 4, sk, interleave4_v(od[0], od[1], od[2], od[3]));
            }
        }
}

/* tap cells: each input channel staged as u8 planes (x ^ 0x80, padding
 * zp + 128; prepare.c's layout with one byte per element), then every group
 * of 4 taps interleaved from its 4 shifted streams */
VNNI static void conv_pack_taps(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, s = g->s, ws = g->ws;
    const uint8_t pv = (uint8_t)(op->in_zp + 128);
    const size_t cells = g->splane;
    uint8_t *st = xp + g->stage_off;
    if (g->shared_pad) {
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int c = 0; c < C; c++) {
            uint8_t *pl = st + (size_t)c * cells;
            for (int hp = 0; hp < g->hp; hp++) {
                uint8_t *row = pl + (size_t)hp * ws;
                const int ih = hp - P;
                if (ih < 0 || ih >= H) {
                    memset(row, pv, (size_t)ws);
                    continue;
                }
                memset(row, pv, (size_t)P);
                const int8_t *src = x + ((size_t)c * H + ih) * W;
                for (int c0 = 0; c0 < W; c0 += 64) {
                    const int len = imin(64, W - c0);
                    const __mmask64 mk = len == 64 ? ~(__mmask64)0 : (((__mmask64)1 << len) - 1);
                    _mm512_mask_storeu_epi8(row + P + c0, mk,
                                            _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, src + c0), flip));
                }
            }
            memset(pl + (size_t)g->hp * ws, pv, (size_t)P);
        }
    } else {
        for (int c = 0; c < C; c++)
            for (int ph = 0; ph < s; ph++)
                for (int pw = 0; pw < s; pw++) {
                    uint8_t *pl = st + ((size_t)(c * s + ph) * s + pw) * cells;
                    for (int i = 0; i < g->hs; i++) {
                        const int ih = i * s + ph - P;
                        for (int j = 0; j < ws; j++) {
                            const int iw = j * s + pw - P;
                            pl[(size_t)i * ws + j] = ih >= 0 && ih < H && iw >= 0 && iw < W
                                                         ? (uint8_t)(x[((size_t)c * H + ih) * W + iw] ^ 0x80)
                                                         : pv;
                        }
                    }
                }
    }
    const long K = (long)C * op->kh * op->kw;
    for (int j = 0; j < g->kg; j++) {
        const uint8_t *src[4];
        for (int e = 0; e < 4; e++) src[e] = st + (4L * j + e < K ? g->soff[4 * j + e] : 0);
        uint8_t *d = xp + (size_t)j * g->plane_bytes;
        for (int v = 0; v < g->q_vecs; v++)
            interleave4(d + (size_t)v * 64, _mm_loadu_si128((const __m128i *)(const void *)(src[0] + 16 * v)),
                        _mm_loadu_si128((const __m128i *)(const void *)(src[1] + 16 * v)),
                        _mm_loadu_si128((const __m128i *)(const void *)(src[2] + 16 * v)),
                        _mm_loadu_si128((const __m128i *)(const void *)(src[3] + 16 * v)));
    }
}

/* x [C][H][W] int8 -> packed u8 cells (x ^ 0x80; padding zp + 128) */
VNNI static void conv_pack(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    if (op->g.tap_mode) {
        conv_pack_taps(op, x, xp);
        return;
    }
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, s = g->s;
    const uint8_t pv = (uint8_t)(op->in_zp + 128);
    if (g->shared_pad) {
        /* rows of ws = W + P cells: P pad cells (the previous row's right
         * pad is this row's left pad) then W pixels; P more pad cells end
         * the plane */
        const __m128i pvv = _mm_set1_epi8((char)pv), flip = _mm_set1_epi8((char)0x80);
        const int ws = g->ws;
        for (int grp = 0; grp < g->groups; grp++) {
            uint8_t *pl = xp + (size_t)grp * g->plane_bytes;
            const int8_t *src[4];
            for (int e = 0; e < 4; e++)
                src[e] = grp * 4 + e < C ? x + (size_t)(grp * 4 + e) * H * W : NULL;
            for (int hp = 0; hp < g->hp; hp++) {
                uint8_t *row = pl + (size_t)hp * ws * 4;
                const int ih = hp - P;
                if (ih < 0 || ih >= H) {
                    memset(row, pv, (size_t)ws * 4);
                    continue;
                }
                if (P <= 4)
                    _mm_mask_storeu_epi8(row, (__mmask16)((1u << (P * 4)) - 1), pvv);
                else
                    memset(row, pv, (size_t)P * 4);
                const size_t o = (size_t)ih * W;
                for (int c0 = 0; c0 < W; c0 += 16) {
                    const __mmask16 mk = (__mmask16)(W - c0 >= 16 ? 0xFFFF : (1u << (W - c0)) - 1);
                    /* named, not an array: GCC kept an array on the stack */
#define PK_LD(e) src[e] ? _mm_xor_si128(_mm_maskz_loadu_epi8(mk, src[e] + o + c0), flip) : pvv
                    const __m128i r0 = PK_LD(0), r1 = PK_LD(1), r2 = PK_LD(2), r3 = PK_LD(3);
#undef PK_LD
                    /* full 64-byte stores: a tail spills into cells written next */
                    _mm512_storeu_si512(row + (size_t)(P + c0) * 4, interleave4_v(r0, r1, r2, r3));
                }
            }
            memset(pl + (size_t)g->hp * ws * 4, pv, (size_t)P * 4);
        }
        return;
    }
    if (s == 2) {
        conv_pack_s2(op, x, xp);
        return;
    }
    for (int grp = 0; grp < g->groups; grp++)
        for (int ph = 0; ph < s; ph++)
            for (int pw = 0; pw < s; pw++) {
                uint8_t *pl = xp + ((size_t)(grp * s + ph) * s + pw) * g->plane_bytes;
                for (int i = 0; i < g->hs; i++) {
                    const int ih = i * s + ph - P;
                    for (int j = 0; j < g->ws; j++) {
                        const int iw = j * s + pw - P;
                        const int in = ih >= 0 && ih < H && iw >= 0 && iw < W;
                        uint8_t *cell = pl + ((size_t)i * g->ws + j) * 4;
                        for (int e = 0; e < 4; e++) {
                            const int c = grp * 4 + e;
                            cell[e] = in && c < C ? (uint8_t)(x[((size_t)c * H + ih) * W + iw] ^ 0x80)
                                                  : pv;
                        }
                    }
                }
            }
}

/* The accumulators are named variables, not an array: GCC keeps arrays of
 * vectors in memory when it unrolls the loops after scalar replacement.
 * MR and NR are constants after inlining, so the `if`s vanish. */
#define RT_R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define RT_R6(X) X(0) X(1) X(2) X(3) X(4) X(5)

VNNI_INLINE void conv_tile(const int MR, const int NR, const uint8_t *xq, const int32_t *koff,
                           int kg, const int8_t *wt, const rt_epi *e, int m0, int8_t *yimg,
                           size_t plane, const rt_vstore *vst, int v0)
{
    const __m512i z = _mm512_setzero_si512();
#define CT_DECL(r) __m512i a##r##0 = z, a##r##1 = z, a##r##2 = z;
    RT_R8(CT_DECL)
#undef CT_DECL
#define CT_INIT(r)                                               \
    if (r < MR) {                                                \
        const __m512i b = _mm512_set1_epi32(e->bias[m0 + r]); \
        a##r##0 = b;                                             \
        if (NR > 1) a##r##1 = b;                                 \
        if (NR > 2) a##r##2 = b;                                 \
    }
    RT_R8(CT_INIT)
#undef CT_INIT
    for (int j = 0; j < kg; j++) {
        const uint8_t *bp = xq + koff[j];
        const __m512i b0 = _mm512_loadu_si512(bp);
        const __m512i b1 = NR > 1 ? _mm512_loadu_si512(bp + 64) : z;
        const __m512i b2 = NR > 2 ? _mm512_loadu_si512(bp + 128) : z;
#define CT_STEP(r)                                                         \
    if (r < MR) {                                                          \
        const __m512i w = _mm512_set1_epi32(ld32(wt + 4 * r));            \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, b0, w);                    \
        if (NR > 1) a##r##1 = _mm512_dpbusd_epi32(a##r##1, b1, w);         \
        if (NR > 2) a##r##2 = _mm512_dpbusd_epi32(a##r##2, b2, w);         \
    }
        RT_R8(CT_STEP)
#undef CT_STEP
        wt += 4 * MR;
    }
    /* spill once, so the epilogue's registers do not compete with the loop's */
    __m512i acc[CONV_MR][CONV_NR];
#define CT_SAVE(r)                        \
    if (r < MR) {                         \
        acc[r][0] = a##r##0;              \
        if (NR > 1) acc[r][1] = a##r##1;  \
        if (NR > 2) acc[r][2] = a##r##2;  \
    }
    RT_R8(CT_SAVE)
#undef CT_SAVE
    for (int r = 0; r < MR; r++) {
        const epi_row p = epi_row_load(e, m0 + r);
        int8_t *yrow = yimg + (size_t)(m0 + r) * plane;
        for (int v = 0; v < NR; v++) {
            const rt_vstore *d = &vst[v0 + v];
            const __m128i y8 = _mm_shuffle_epi8(epi_row_apply(acc[r][v], &p),
                                                _mm_loadu_si128((const __m128i *)(const void *)d->perm));
            _mm_mask_storeu_epi8(yrow + d->off, (__mmask16)d->mask, y8);
        }
    }
}

VNNI static void conv_tile_any(int mr, int nr, const uint8_t *xq, const int32_t *koff, int kg,
                               const int8_t *wt, const rt_epi *e, int m0, int8_t *yimg,
                               size_t plane, const rt_vstore *vst, int v0)
{
#define CT(MR_, NR_)                                                        \
    case MR_ * 4 + NR_:                                                     \
        conv_tile(MR_, NR_, xq, koff, kg, wt, e, m0, yimg, plane, vst, v0); \
        break;
#define CT3(MR_) CT(MR_, 1) CT(MR_, 2) CT(MR_, 3)
    switch (mr * 4 + nr) {
        CT3(1) CT3(2) CT3(3) CT3(4) CT3(5) CT3(6) CT3(7) CT3(8)
    default: break;
    }
#undef CT3
#undef CT
}

/* q tiles [t0, t1) of one packed image, all output channels */
VNNI static void conv_image(const rt_op *op, const uint8_t *xp, int8_t *yimg, int t0, int t1)
{
    const rt_gemm *g = &op->g;
    const size_t plane = (size_t)op->out_shape[1] * op->out_shape[2];
    for (int t = t0; t < t1; t++) {
        const int v0 = t * CONV_NR, nr = imin(CONV_NR, g->q_vecs - v0);
        const uint8_t *xq = xp + (size_t)v0 * 64;
        for (int m0 = 0; m0 < op->oc; m0 += CONV_MR)
            conv_tile_any(imin(CONV_MR, op->oc - m0), nr, xq, g->koff, g->kg,
                          (const int8_t *)g->w + (size_t)m0 * g->kg * 4, &g->epi, m0, yimg,
                          plane, g->vst, v0);
    }
}

VNNI static void vnni_conv_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot)
{
    conv_pack(op, x, slot);
    conv_image(op, slot, y, 0, (op->g.q_vecs + CONV_NR - 1) / CONV_NR);
}

/* fewer images than threads: one slot per image, the tiles split */
static void vnni_conv2d_split(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                              uint8_t *scratch, size_t slot_bytes)
{
    const size_t in_sz = (size_t)op->ic * op->in_h * op->in_w;
    const size_t out_sz = (size_t)op->oc * op->out_shape[1] * op->out_shape[2];
    const int qtiles = (op->g.q_vecs + CONV_NR - 1) / CONV_NR;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) conv_pack(op, x + (size_t)i * in_sz, scratch + (size_t)i * slot_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < n * qtiles; w++) {
            const int i = w / qtiles, t = w % qtiles;
            conv_image(op, scratch + (size_t)i * slot_bytes, y + (size_t)i * out_sz, t, t + 1);
        }
    }
}

/* ---- linear ---- */

static int vnni_prepare_linear(rt_op *op)
{
    rt_gemm *g = &op->g;
    qat_rti_gemm_free(g);
    g->isa = QAT_RT_ISA_AVX512_VNNI;
    const int IN = op->ic, OUT = op->oc;
    const int opad = (OUT + 15) / 16 * 16;
    int st = qat_rti_epi_init(op, g, opad, 1);
    if (st) return st;
    g->kg = (IN + 3) / 4;
    g->xrow_bytes = (size_t)g->kg * 4;
    int8_t *w = qat_rti_alloc((size_t)g->kg * opad * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    /* [kg][opad][4] */
    for (int o = 0; o < OUT; o++)
        for (int k = 0; k < IN; k++)
            w[((size_t)(k / 4) * opad + o) * 4 + k % 4] = op->weight[(size_t)o * IN + k];
    return QAT_OK;
}

static size_t vnni_linear_sample_bytes(const rt_op *op)
{
    return op->g.xrow_bytes;
}

VNNI static void lin_pack(const int8_t *x, uint8_t *xu, int in, size_t row)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (size_t k = 0; k < row; k += 64) {
        const size_t left = (size_t)in > k ? (size_t)in - k : 0;
        const __mmask64 lm = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        const size_t rl = row - k;
        const __mmask64 sm = rl >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << rl) - 1);
        __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, x + k), flip);
        _mm512_mask_storeu_epi8(xu + k, sm, v);
    }
}

VNNI_INLINE void lin_tile(const int MR, const int NR, const uint8_t *xu, size_t xrow, int kg,
                          const int8_t *w, size_t wrow, const rt_epi *e, int o0, int8_t *y,
                          int OUT)
{
    const __m512i z = _mm512_setzero_si512();
    const __m512i bias0 = _mm512_loadu_si512(e->bias + o0);
    const __m512i bias1 = NR > 1 ? _mm512_loadu_si512(e->bias + o0 + 16) : z;
    const __m512i bias2 = NR > 2 ? _mm512_loadu_si512(e->bias + o0 + 32) : z;
    const __m512i bias3 = NR > 3 ? _mm512_loadu_si512(e->bias + o0 + 48) : z;
#define LT_DECL(r) __m512i a##r##0 = bias0, a##r##1 = bias1, a##r##2 = bias2, a##r##3 = bias3;
    RT_R6(LT_DECL)
#undef LT_DECL
    for (int j = 0; j < kg; j++) {
        const int8_t *wj = w + (size_t)j * wrow;
        const __m512i w0 = _mm512_loadu_si512(wj);
        const __m512i w1 = NR > 1 ? _mm512_loadu_si512(wj + 64) : z;
        const __m512i w2 = NR > 2 ? _mm512_loadu_si512(wj + 128) : z;
        const __m512i w3 = NR > 3 ? _mm512_loadu_si512(wj + 192) : z;
#define LT_STEP(r)                                                                       \
    if (r < MR) {                                                                        \
        const __m512i xb = _mm512_set1_epi32(ld32(xu + (size_t)r * xrow + 4 * (size_t)j)); \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, xb, w0);                                  \
        if (NR > 1) a##r##1 = _mm512_dpbusd_epi32(a##r##1, xb, w1);                      \
        if (NR > 2) a##r##2 = _mm512_dpbusd_epi32(a##r##2, xb, w2);                      \
        if (NR > 3) a##r##3 = _mm512_dpbusd_epi32(a##r##3, xb, w3);                      \
    }
        RT_R6(LT_STEP)
#undef LT_STEP
    }
    __m512i acc[LIN_MR][LIN_NR];
#define LT_SAVE(r)                       \
    if (r < MR) {                        \
        acc[r][0] = a##r##0;             \
        if (NR > 1) acc[r][1] = a##r##1; \
        if (NR > 2) acc[r][2] = a##r##2; \
        if (NR > 3) acc[r][3] = a##r##3; \
    }
    RT_R6(LT_SAVE)
#undef LT_SAVE
    for (int v = 0; v < NR; v++) {
        const int c0 = o0 + 16 * v;
        const epi_lane p = epi_lane_load(e, c0);
        const int left = OUT - c0;
        const __mmask16 mk = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1);
        for (int r = 0; r < MR; r++)
            _mm_mask_storeu_epi8(y + (size_t)r * OUT + c0, mk, epi_lane_apply(acc[r][v], &p));
    }
}

VNNI static void lin_tile_any(int mr, int nr, const uint8_t *xu, size_t xrow, int kg,
                              const int8_t *w, size_t wrow, const rt_epi *e, int o0, int8_t *y,
                              int OUT)
{
#define LT(MR_, NR_)                                                       \
    case MR_ * 8 + NR_:                                                    \
        lin_tile(MR_, NR_, xu, xrow, kg, w, wrow, e, o0, y, OUT); \
        break;
#define LT4(MR_) LT(MR_, 1) LT(MR_, 2) LT(MR_, 3) LT(MR_, 4)
    switch (mr * 8 + nr) {
        LT4(1) LT4(2) LT4(3) LT4(4) LT4(5) LT4(6)
    default: break;
    }
#undef LT4
#undef LT
}

VNNI static void lin_tiles(const rt_op *op, const uint8_t *xu, int8_t *y, int n, int w0, int w1)
{
    const rt_gemm *g = &op->g;
    const int ntiles = (n + LIN_MR - 1) / LIN_MR;
    const size_t wrow = (size_t)g->mpad * 4;
    for (int w = w0; w < w1; w++) {
        const int ot = w / ntiles, nt = w % ntiles;
        const int n0 = nt * LIN_MR, o0 = ot * LIN_NR * 16;
        const int mr = imin(LIN_MR, n - n0), nr = imin(LIN_NR, (g->mpad - o0) / 16);
        lin_tile_any(mr, nr, xu + (size_t)n0 * g->xrow_bytes, g->xrow_bytes, g->kg,
                     (const int8_t *)g->w + (size_t)o0 * 4, wrow, &g->epi, o0,
                     y + (size_t)n0 * op->oc, op->oc);
    }
}

static void vnni_linear(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                        uint8_t *shared)
{
    const rt_gemm *g = &op->g;
    const int ntiles = (n + LIN_MR - 1) / LIN_MR;
    const int otiles = (g->mpad / 16 + LIN_NR - 1) / LIN_NR;
    const int items = ntiles * otiles;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            lin_pack(x + (size_t)i * op->ic, shared + (size_t)i * g->xrow_bytes, op->ic,
                     g->xrow_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < items; w++) lin_tiles(op, shared, y, n, w, w + 1);
    }
}

/* ---- maxpool 2x2 stride 2 ---- */

VNNI static void maxpool2_plane(const int8_t *x, int8_t *y, int H, int W, int OH, int OW)
{
    (void)H;
    for (int oh = 0; oh < OH; oh++) {
        const int8_t *r0 = x + (size_t)(2 * oh) * W, *r1 = r0 + W;
        int8_t *yr = y + (size_t)oh * OW;
        for (int o = 0; o < OW; o += 32) {
            const int cnt = imin(32, OW - o);
            const __mmask64 lm = cnt == 32 ? ~(__mmask64)0 : (((__mmask64)1 << (2 * cnt)) - 1);
            const __m512i a = _mm512_maskz_loadu_epi8(lm, r0 + 2 * o);
            const __m512i b = _mm512_maskz_loadu_epi8(lm, r1 + 2 * o);
            __m512i v = _mm512_max_epi8(a, b);
            v = _mm512_max_epi8(v, _mm512_srli_epi16(v, 8)); /* low byte: max of the pair */
            _mm256_mask_storeu_epi8(yr + o, (__mmask32)(cnt == 32 ? 0xFFFFFFFFu : (1u << cnt) - 1),
                                    _mm512_cvtepi16_epi8(v));
        }
    }
}

VNNI static void vnni_maxpool_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    if (op->kernel != 2 || op->stride != 2) {
        qat_rti_maxpool2d_s8(op, x, y);
        return;
    }
    const int H = op->in_h, W = op->in_w, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int c = 0; c < op->in_c; c++)
        maxpool2_plane(x + (size_t)c * H * W, y + (size_t)c * OH * OW, H, W, OH, OW);
}

/* ---- add (prepare.c: qat_rti_add_prepare) ---- */

VNNI static void vnni_add_image(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
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
    const __m512i za = _mm512_set1_epi16((short)op->add_zp[0]), zb = _mm512_set1_epi16((short)op->add_zp[1]);
    const __m512i hm = _mm512_set1_epi32(op->add_h), lm = _mm512_set1_epi32(op->add_l);
    const __m512i c = _mm512_set1_epi32(op->add_c), z = _mm512_set1_epi32(zp);
    const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    const __m128i sh = _mm_cvtsi32_si128(op->add_sh);
    for (size_t i = 0; i < n; i += 32) {
        const size_t left = n - i;
        const __mmask32 mk = left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
        const __m512i da = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mk, a + i)), za);
        const __m512i db = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mk, b + i)), zb);
        __m512i r[2];
        for (int k = 0; k < 2; k++) {
            /* (d_a, d_b) pairs: elements 0-3 (k = 0) / 4-7 (k = 1) of each 128-bit lane */
            const __m512i pr = k ? _mm512_unpackhi_epi16(da, db) : _mm512_unpacklo_epi16(da, db);
            const __m512i hv = _mm512_madd_epi16(pr, hm), lv = _mm512_madd_epi16(pr, lm);
            __m512i v = _mm512_add_epi32(_mm512_add_epi32(hv, c), _mm512_srai_epi32(lv, 16));
            v = _mm512_add_epi32(_mm512_sra_epi32(v, sh), z);
            r[k] = _mm512_min_epi32(_mm512_max_epi32(v, vlo), vhi);
        }
        /* packs puts each lane's elements 0-3 then 4-7: the original order */
        _mm256_mask_storeu_epi8(y + i, mk, _mm512_cvtepi16_epi8(_mm512_packs_epi32(r[0], r[1])));
    }
}

const rt_isa_kernels qat_rti_vnni = {
    .prepare_conv = vnni_prepare_conv,
    .prepare_linear = vnni_prepare_linear,
    .conv_slot_bytes = vnni_conv_slot_bytes,
    .linear_sample_bytes = vnni_linear_sample_bytes,
    .conv_image = vnni_conv_image,
    .conv2d_split = vnni_conv2d_split,
    .linear = vnni_linear,
    .maxpool_image = vnni_maxpool_image,
    .add_image = vnni_add_image,
};
