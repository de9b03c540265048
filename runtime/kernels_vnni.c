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
 * rows are samples whose 4 activation bytes are broadcast.
 * depthwise 3x3 (groups = channels): per channel, cells of the three input
 * rows of a tap column, 16 output positions a vector, one vpdpbusd per tap
 * column (kernels_common.c: qat_rti_prepare_dw).
 *
 * The packing of weights and inputs and the split over the threads are
 * kernels_common.c's, shared with kernels_avx2.c; this file has the SIMD
 * (packed rows, register tiles, epilogue) and vnni_fast, the description
 * the shared code works from. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "runtime/kernels_common.h"

#pragma GCC poison float double

#define VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni"
#define VNNI __attribute__((target(VNNI_TARGET)))
#define VNNI_INLINE static inline __attribute__((always_inline, target(VNNI_TARGET)))

/* register tiles: conv 8 channels x 3 vectors of 16 positions, linear
 * 6 samples x 4 vectors of 16 features (24 accumulators of 32 registers) */
enum { CONV_MR = 8, CONV_NR = 3, LIN_MR = 6, LIN_NR = 4 };

static const rt_fast_isa vnni_fast;

/* ---- requantization epilogue (prepare.c proves it exact) ----
 * The parameters of 16 int32 lanes: one output channel broadcast
 * (epi_chan_load, the conv rows) or 16 consecutive ones (epi_lanes_load,
 * the linear features); epi_apply with `chan` set for the first. Qword k of
 * the accumulator holds lanes 2k (low dword: the even products) and 2k + 1
 * (high: the odd ones). One channel: the odd lanes' products are shifted so
 * that r lands directly in their high dword, right by t - 32 or left by
 * 32 - t when t < 32 (the high dword of u << (32 - t) is u >> t modulo
 * 2^32), and the final clamp runs only where the acc clamp does not imply
 * it (fin). Per lane: each qword shifted right by its own t, the odd r
 * moved up. */
typedef struct {
    __m512i alo, ahi, m, m_odd, re, ro, cadd, lo, hi;
    __m512i te, to;  /* per lane */
    __m128i ts, tso; /* one channel: t, |t - 32| */
    int left, fin;   /* one channel: t < 32, e->fin */
} epi_par;

VNNI_INLINE epi_par epi_chan_load(const rt_epi *e, int c)
{
    epi_par p;
    const int t = e->t[c];
    p.alo = _mm512_set1_epi32(e->alo[c]);
    p.ahi = _mm512_set1_epi32(e->ahi[c]);
    p.m = p.m_odd = _mm512_set1_epi32(e->m[c]);
    p.re = p.ro = _mm512_set1_epi64((long long)e->rnd[c]);
    p.cadd = _mm512_set1_epi32(e->cadd[c]);
    p.ts = _mm_cvtsi32_si128(t);
    p.left = t < 32;
    p.tso = _mm_cvtsi32_si128(t < 32 ? 32 - t : t - 32);
    p.fin = e->fin[c];
    p.lo = _mm512_set1_epi32(e->lo);
    p.hi = _mm512_set1_epi32(e->hic[c]);
    p.te = p.to = _mm512_setzero_si512();
    return p;
}

VNNI_INLINE epi_par epi_lanes_load(const rt_epi *e, int c0)
{
    const __m512i ev_idx = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od_idx = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    epi_par p;
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
    p.hi = _mm512_loadu_si512(e->hic + c0);
    p.ts = p.tso = _mm_setzero_si128();
    p.left = 0;
    p.fin = 1;
    return p;
}

VNNI_INLINE __m128i epi_apply(__m512i a, const epi_par *p, const int chan)
{
    a = _mm512_min_epi32(_mm512_max_epi32(a, p->alo), p->ahi);
    __m512i ev = _mm512_add_epi64(_mm512_mul_epi32(a, p->m), p->re);
    __m512i od = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), p->m_odd), p->ro);
    if (chan) {
        ev = _mm512_srl_epi64(ev, p->ts);
        od = p->left ? _mm512_sll_epi64(od, p->tso) : _mm512_srl_epi64(od, p->tso);
    } else {
        ev = _mm512_srlv_epi64(ev, p->te);
        od = _mm512_slli_epi64(_mm512_srlv_epi64(od, p->to), 32);
    }
    __m512i r = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, ev, od), p->cadd);
    if (p->fin) r = _mm512_min_epi32(_mm512_max_epi32(r, p->lo), p->hi);
    return _mm512_cvtepi32_epi8(r);
}

/* ---- conv2d ---- */

/* output stores: the valid lanes of vector v (ow < OW) of positions
 * q = oh * ws + ow */
static int vnni_make_vst(rt_op *op)
{
    rt_gemm *g = &op->g;
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
    g->vst_ident = 1;
    for (int v = 0; v < g->q_vecs; v++)
        for (int l = 0; l < 16; l++)
            if ((g->vst[v].mask >> l & 1) && g->vst[v].perm[l] != l) g->vst_ident = 0;
    return QAT_OK;
}

static int vnni_prepare_conv(rt_op *op)
{
    int st = qat_rti_prepare_conv(op, &vnni_fast);
    return st ? st : vnni_make_vst(op);
}

/* input packing (kernels_common.c: qat_rti_conv_pack): u8 cells x ^ 0x80,
 * padding zp + 128 */

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

/* stride 2, channel cells: each row of 4 channels splits into its even and
 * odd columns, the rows of phase planes (ph, 0) and (ph, 1). Each
 * 32-column stretch of a channel row is one masked load: lanes outside the
 * image take the padding value. Only the phases some tap reads (a 1x1
 * stride-2 conv reads phase (0, 0) alone). */
VNNI static void vnni_rows_s2(const rt_op *op, const rt_span *sp)
{
    const int W = op->in_w, P = op->pad, ws = op->g.ws, n = sp->n;
    const size_t pb = op->g.plane_bytes;
    const __m256i pvv = _mm256_set1_epi8((char)(op->in_zp + 128)), flip = _mm256_set1_epi8((char)0x80);
    const int need_odd_w = op->kw > 1;
    for (int r = 0; r < n; r++) {
        const int8_t *src[4];
        uint8_t *r0 = rt_span_row(sp, r, 4, src), *r1 = r0 + pb;
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
            const int cnt = rt_imin(16, ws - j0);
            const __mmask16 sk = (__mmask16)(cnt == 16 ? 0xFFFF : (1u << cnt) - 1);
            _mm512_mask_storeu_epi32(r0 + (size_t)j0 * 4, sk, interleave4_v(ev[0], ev[1], ev[2], ev[3]));
            if (need_odd_w)
                _mm512_mask_storeu_epi32(r1 + (size_t)j0 * 4, sk, interleave4_v(od[0], od[1], od[2], od[3]));
        }
    }
}

/* P = 0 (1x1 convs): a span's rows are contiguous in the input and in the
 * packed plane, so its n * W pixels are one run, 64 at a time: 4 channel
 * loads, 8 in-lane unpacks, a 4 x 4 transpose of 128-bit blocks (8
 * shuffles), 4 stores of 16 cells (masked at the end of the run). */
VNNI static void vnni_rows_flat(const rt_op *op, const rt_span *sp)
{
    const size_t N = (size_t)sp->n * (size_t)op->in_w;
    const __m512i pvv = _mm512_set1_epi8((char)(op->in_zp + 128)), flip = _mm512_set1_epi8((char)0x80);
    for (size_t i = 0; i < N; i += 64) {
        const size_t left = N - i;
        const __mmask64 lm = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
#define PK_LD(e) sp->src[e] ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, sp->src[e] + i), flip) : pvv
        const __m512i r0 = PK_LD(0), r1 = PK_LD(1), r2 = PK_LD(2), r3 = PK_LD(3);
#undef PK_LD
        const __m512i t0 = _mm512_unpacklo_epi8(r0, r1), t1 = _mm512_unpackhi_epi8(r0, r1);
        const __m512i t2 = _mm512_unpacklo_epi8(r2, r3), t3 = _mm512_unpackhi_epi8(r2, r3);
        /* block k of u0..u3: pixels 16k + 0-3, 4-7, 8-11, 12-15 */
        const __m512i u0 = _mm512_unpacklo_epi16(t0, t2), u1 = _mm512_unpackhi_epi16(t0, t2);
        const __m512i u2 = _mm512_unpacklo_epi16(t1, t3), u3 = _mm512_unpackhi_epi16(t1, t3);
        const __m512i a = _mm512_shuffle_i32x4(u0, u1, 0x44), b = _mm512_shuffle_i32x4(u2, u3, 0x44);
        const __m512i c = _mm512_shuffle_i32x4(u0, u1, 0xEE), d = _mm512_shuffle_i32x4(u2, u3, 0xEE);
        const __m512i o[4] = {_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD),
                              _mm512_shuffle_i32x4(c, d, 0x88), _mm512_shuffle_i32x4(c, d, 0xDD)};
        uint8_t *dst = sp->d + i * 4;
        if (left >= 64) {
            for (int k = 0; k < 4; k++) _mm512_storeu_si512(dst + 64 * k, o[k]);
        } else {
            for (int k = 0; k < 4 && (size_t)16 * k < left; k++) {
                const size_t cnt = left - (size_t)16 * k;
                const __mmask16 sk = (__mmask16)(cnt >= 16 ? 0xFFFF : (1u << cnt) - 1);
                _mm512_mask_storeu_epi32(dst + 64 * k, sk, o[k]);
            }
        }
    }
}

/* stride 1, shared pad columns: rows of ws = W + P cells, P pad cells (the
 * previous row's right pad is this row's left pad) then W pixels */
VNNI static void vnni_rows_shared(const rt_op *op, const rt_span *sp)
{
    const int W = op->in_w, P = op->pad, n = sp->n;
    if (P == 0 && sp->step == (size_t)W && sp->rowb == (size_t)W * 4) {
        vnni_rows_flat(op, sp);
        return;
    }
    const uint8_t pv = (uint8_t)(op->in_zp + 128);
    const __m128i pvv = _mm_set1_epi8((char)pv), flip = _mm_set1_epi8((char)0x80);
    for (int r = 0; r < n; r++) {
        const int8_t *src[4];
        uint8_t *row = rt_span_row(sp, r, 4, src);
        if (P <= 4)
            _mm_mask_storeu_epi8(row, (__mmask16)((1u << (P * 4)) - 1), pvv);
        else
            memset(row, pv, (size_t)P * 4);
        for (int c0 = 0; c0 < W; c0 += 16) {
            const __mmask16 mk = (__mmask16)(W - c0 >= 16 ? 0xFFFF : (1u << (W - c0)) - 1);
            /* named, not an array: GCC kept an array on the stack */
#define PK_LD(e) src[e] ? _mm_xor_si128(_mm_maskz_loadu_epi8(mk, src[e] + c0), flip) : pvv
            const __m128i r0 = PK_LD(0), r1 = PK_LD(1), r2 = PK_LD(2), r3 = PK_LD(3);
#undef PK_LD
            /* full 64-byte stores: a tail spills into cells written next */
            _mm512_storeu_si512(row + (size_t)(P + c0) * 4, interleave4_v(r0, r1, r2, r3));
        }
    }
}

/* tap cells, shared pad columns: staging rows of one channel, one u8 per
 * element (P pad elements then W pixels) */
VNNI static void vnni_stage_shared(const rt_op *op, const rt_span *sp)
{
    const int W = op->in_w, P = op->pad, n = sp->n;
    const uint8_t pv = (uint8_t)(op->in_zp + 128);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int r = 0; r < n; r++) {
        const int8_t *src[1];
        uint8_t *row = rt_span_row(sp, r, 1, src);
        memset(row, pv, (size_t)P);
        for (int c0 = 0; c0 < W; c0 += 64) {
            const int len = rt_imin(64, W - c0);
            const __mmask64 mk = len == 64 ? ~(__mmask64)0 : (((__mmask64)1 << len) - 1);
            _mm512_mask_storeu_epi8(row + P + c0, mk, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, src[0] + c0), flip));
        }
    }
}

/* tap cells: the 4 staged u8 streams of a k group interleaved */
VNNI static void vnni_interleave(const rt_op *op, const uint8_t *const *src, uint8_t *d)
{
    for (int v = 0; v < op->g.q_vecs; v++)
        interleave4(d + (size_t)v * 64, _mm_loadu_si128((const __m128i *)(const void *)(src[0] + 16 * v)),
                    _mm_loadu_si128((const __m128i *)(const void *)(src[1] + 16 * v)),
                    _mm_loadu_si128((const __m128i *)(const void *)(src[2] + 16 * v)),
                    _mm_loadu_si128((const __m128i *)(const void *)(src[3] + 16 * v)));
}

/* The register tile: rows m0..m0+MR-1 of the packed weights wt ([kg][MR][4]
 * bytes) times NR vectors of 16 positions of the packed input (k group j at
 * xq + koff[j]) onto the bias, requantized, stored into the NCHW output
 * through the vector stores vst[v0..]. */
VNNI_INLINE void conv_tile(const int ID, const int MR, const int NR, const uint8_t *xq, const int32_t *koff,
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
        const __m512i w = _mm512_set1_epi32(rt_ld32(wt + 4 * r));            \
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
    RT_R8(RT_SAVE3)
    for (int r = 0; r < MR; r++) {
        const epi_par p = epi_chan_load(e, m0 + r);
        int8_t *yrow = yimg + (size_t)(m0 + r) * plane;
        for (int v = 0; v < NR; v++) {
            const rt_vstore *d = &vst[v0 + v];
            __m128i y8 = epi_apply(acc[r][v], &p, 1);
            if (!ID) y8 = _mm_shuffle_epi8(y8, _mm_loadu_si128((const __m128i *)(const void *)d->perm));
            _mm_mask_storeu_epi8(yrow + d->off, (__mmask16)d->mask, y8);
        }
    }
}

_Static_assert(CONV_MR == 8 && CONV_NR == 3 && LIN_MR == 6 && LIN_NR == 4,
               "the RT_TILES calls list the register tiles' sizes");

/* the vector block (rt_conv_plan), every output channel: straight into
 * the output image y */
VNNI static void vnni_conv_block(const rt_op *op, uint8_t *slot, int8_t *y, int v0, int nr)
{
    const rt_gemm *g = &op->g;
    const uint8_t *xq = slot + (size_t)v0 * 64;
    const size_t plane = (size_t)op->out_shape[1] * op->out_shape[2];
    for (int m0 = 0; m0 < op->oc; m0 += CONV_MR) {
        const int8_t *wt = (const int8_t *)g->w + (size_t)m0 * g->kg * 4;
        /* ID: the output lanes need no shuffle (1x1 convs without padding) */
        if (g->vst_ident) {
#define TILE(MR_, NR_) conv_tile(1, MR_, NR_, xq, g->koff, g->kg, wt, &g->epi, m0, y, plane, g->vst, v0)
            RT_TILES(rt_imin(CONV_MR, op->oc - m0), nr, RT_MR8(RT_NR3))
#undef TILE
        } else {
#define TILE(MR_, NR_) conv_tile(0, MR_, NR_, xq, g->koff, g->kg, wt, &g->epi, m0, y, plane, g->vst, v0)
            RT_TILES(rt_imin(CONV_MR, op->oc - m0), nr, RT_MR8(RT_NR3))
#undef TILE
        }
    }
}

static void vnni_conv_plan(const rt_op *op, rt_conv_plan *p)
{
    *p = (rt_conv_plan){qat_rti_conv_pack, vnni_conv_block, NULL, op->g.q_vecs};
}

/* ---- linear ---- */

static int vnni_prepare_linear(rt_op *op)
{
    return qat_rti_prepare_linear(op, &vnni_fast);
}

/* one sample: u8 x ^ 0x80, 0 past IN to the row's end (xrow_bytes) */
VNNI static void vnni_lin_pack(const rt_op *op, const int8_t *x, uint8_t *xu)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const size_t in = (size_t)op->ic, row = op->g.xrow_bytes;
    for (size_t k = 0; k < row; k += 64) {
        const size_t left = in > k ? in - k : 0;
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
        const __m512i xb = _mm512_set1_epi32(rt_ld32(xu + (size_t)r * xrow + 4 * (size_t)j)); \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, xb, w0);                                  \
        if (NR > 1) a##r##1 = _mm512_dpbusd_epi32(a##r##1, xb, w1);                      \
        if (NR > 2) a##r##2 = _mm512_dpbusd_epi32(a##r##2, xb, w2);                      \
        if (NR > 3) a##r##3 = _mm512_dpbusd_epi32(a##r##3, xb, w3);                      \
    }
        RT_R6(LT_STEP)
#undef LT_STEP
    }
    __m512i acc[LIN_MR][LIN_NR];
    RT_R6(RT_SAVE4)
    for (int v = 0; v < NR; v++) {
        const int c0 = o0 + 16 * v;
        const epi_par p = epi_lanes_load(e, c0);
        const int left = OUT - c0;
        const __mmask16 mk = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1);
        for (int r = 0; r < MR; r++)
            _mm_mask_storeu_epi8(y + (size_t)r * OUT + c0, mk, epi_apply(acc[r][v], &p, 0));
    }
}

VNNI static void vnni_lin_tile(const rt_op *op, const uint8_t *xu, int8_t *y, int o0, int mr, int nr)
{
    const rt_gemm *g = &op->g;
    const int8_t *w = (const int8_t *)g->w + (size_t)o0 * 4;
    const size_t wrow = (size_t)g->mpad * 4;
#define TILE(MR_, NR_) lin_tile(MR_, NR_, xu, g->xrow_bytes, g->kg, w, wrow, &g->epi, o0, y, op->oc)
    RT_TILES(mr, nr, RT_MR6(RT_NR4))
#undef TILE
}

/* ---- maxpool 2x2 stride 2 ---- */

VNNI static void vnni_maxpool_plane(const rt_op *op, const int8_t *x, int8_t *y, size_t room)
{
    (void)room;
    const int W = op->in_w, OH = op->out_shape[1], OW = op->out_shape[2];
    for (int oh = 0; oh < OH; oh++) {
        const int8_t *r0 = x + (size_t)(2 * oh) * W, *r1 = r0 + W;
        int8_t *yr = y + (size_t)oh * OW;
        for (int o = 0; o < OW; o += 32) {
            const int cnt = rt_imin(32, OW - o);
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

static void vnni_maxpool_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    qat_rti_maxpool_planes(op, x, y, vnni_maxpool_plane);
}

/* ---- add (prepare.c: qat_rti_add_prepare) ---- */

VNNI static void vnni_add_image(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
{
    if (qat_rti_add_other(op, a, b, y)) return;
    const size_t n = op->out_size;
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
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

/* ---- global average pool ----
 * Each channel's sum of x - zp as vpsadbw sums of u8 = x ^ 0x80 (x + 128;
 * lanes past the plane zeroed) less (128 + zp) * HW: integers, so the same
 * sums as the reference's loop; its epilogue (qat_rti_global_avgpool_fin). */
VNNI static void vnni_gap_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    enum { CH = 64 };
    const size_t hw = (size_t)op->in_h * op->in_w;
    const int32_t corr = (int32_t)((128 + op->in_zp) * (int64_t)hw); /* <= 255 * HW <= INT32_MAX (load.c) */
    const __m512i flip = _mm512_set1_epi8((char)0x80), z = _mm512_setzero_si512();
    int32_t sums[CH];
    for (int c0 = 0; c0 < op->in_c; c0 += CH) {
        const int n = rt_imin(CH, op->in_c - c0);
        for (int i = 0; i < n; i++) {
            const int8_t *xc = x + (size_t)(c0 + i) * hw;
            __m512i acc = z;
            for (size_t p = 0; p < hw; p += 64) {
                const size_t left = hw - p;
                const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
                const __m512i v = _mm512_maskz_mov_epi8(m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xc + p), flip));
                acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, z));
            }
            sums[i] = (int32_t)((int64_t)_mm512_reduce_add_epi64(acc) - corr);
        }
        qat_rti_global_avgpool_fin(op, sums, c0, n, y);
    }
}

/* ---- lut: y = table[x + 128] ----
 * With AVX-512 VBMI (not implied by VNNI: Cascade Lake has VNNI without
 * it), 64 bytes a step: index u8 = x ^ 0x80, two vpermi2b over the
 * table's halves (7 index bits each), the index's top bit picks the half.
 * Without VBMI: the reference loop. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void lut_vbmi(const rt_op *op, const int8_t *x,
                                                                            int8_t *y)
{
    const __m512i t0 = _mm512_loadu_si512(op->lut), t1 = _mm512_loadu_si512(op->lut + 64);
    const __m512i t2 = _mm512_loadu_si512(op->lut + 128), t3 = _mm512_loadu_si512(op->lut + 192);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const size_t n = op->out_size;
    for (size_t i = 0; i < n; i += 64) {
        const size_t left = n - i;
        const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + i), flip);
        const __m512i lo = _mm512_permutex2var_epi8(t0, u, t1), hi = _mm512_permutex2var_epi8(t2, u, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(u), lo, hi));
    }
}

static void vnni_lut_image(const rt_op *op, const int8_t *x, int8_t *y)
{
    if (__builtin_cpu_supports("avx512vbmi")) lut_vbmi(op, x, y);
    else qat_rti_lut_s8(op, x, y);
}

/* ---- depthwise 3x3 ----
 * qat_rti_prepare_dw gives the geometry (output positions q = oh*ws + ow,
 * ws = the padded width over the stride), the epilogue and the stores;
 * this file repacks the weights and lays out its own slot. The whole image
 * is first converted, channel after channel, into u8 padded rows (x ^ 0x80,
 * padding zp + 128), so that the compute pass reads rows written long
 * before (64-byte loads over freshly written 16-byte stores stall on store
 * forwarding): stride 1, the padded rows one after another (pitch ws);
 * stride 2, the even padded rows (0, 2, ...) in one plane and the odd ones
 * in another, pitch 2 ws. Then for each channel and vector of 16 positions,
 * one 64-byte load per kernel row kh, a vpermd and a vpshufb (no VBMI
 * needed) making lane l's cell the three bytes at s*l + 0, 1, 2 (tap columns kw = 0, 1, 2; the fourth byte's
 * weight is 0), one vpdpbusd with the row's weights (w[kh][0..2], 0). The
 * slot: per channel dw_dplane bytes (stride 2: the odd plane at
 * dw_cplane), loads never leave a channel's area. */

static int vnni_prepare_dw(rt_op *op)
{
    int st = qat_rti_prepare_dw(op, &vnni_fast);
    if (st || !op->dw_fast) return st;
    rt_gemm *g = &op->g;
    const int s = g->s, ws = g->ws, OH = op->out_shape[1];
    const size_t nv = (size_t)g->q_vecs;
    if (s == 1) {
        g->dw_drows = g->hp;
        size_t need = (size_t)g->hp * ws;
        if (nv * 16 + 2 * (size_t)ws > need) need = nv * 16 + 2 * (size_t)ws;
        g->dw_cplane = 0;
        g->dw_dplane = (need + 64 + 63) / 64 * 64;
    } else {
        const size_t wr = 2 * (size_t)ws;
        g->dw_drows = 2 * OH + 1;
        size_t need = (size_t)(OH + 1) * wr;
        if (wr + 32 * nv > need) need = wr + 32 * nv;
        g->dw_cplane = (need + 64 + 63) / 64 * 64;
        g->dw_dplane = 2 * g->dw_cplane;
    }
    g->dw_coff = g->dw_toff = g->dw_rowoff = 0;
    g->dw_slot = (size_t)op->oc * g->dw_dplane + 64;
    if (g->dw_slot > (size_t)INT32_MAX)
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "%s: input too large for the depthwise kernels", op->name);
    /* weights by kernel row: cell kh of channel c = (w[kh][0], w[kh][1], w[kh][2], 0) */
    int8_t *w = g->w;
    for (int c = 0; c < op->oc; c++)
        for (int kh = 0; kh < 3; kh++) {
            for (int kw = 0; kw < 3; kw++) w[((size_t)c * 3 + kh) * 4 + kw] = op->weight[(size_t)c * 9 + kh * 3 + kw];
            w[((size_t)c * 3 + kh) * 4 + 3] = 0;
        }
    return vnni_make_vst(op);
}

/* lanes l < n whose padded column c0 + l is inside the image [P, P + W) */
static inline uint64_t dw_mask(int c0, int P, int W, int n)
{
    const int lo = P - c0 > 0 ? P - c0 : 0, hi = P + W - c0 < n ? P + W - c0 : n;
    if (hi <= lo) return 0;
    const uint64_t top = hi >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << hi) - 1);
    return top & ~(((uint64_t)1 << lo) - 1);
}

/* The padded rows of one channel xc into its area d (layout above). */
VNNI static void vnni_dw_rows(const rt_op *op, const int8_t *xc, uint8_t *d)
{
    const rt_gemm *g = &op->g;
    const int s = g->s, H = op->in_h, W = op->in_w, P = op->pad, R = g->dw_drows;
    const int L = s == 1 ? g->ws : 2 * g->ws; /* values written a row (the pitch) */
    const __m512i zpv = _mm512_set1_epi8((char)op->in_zp), flip = _mm512_set1_epi8((char)0x80);
    const __m512i pad = _mm512_xor_si512(zpv, flip);
    /* rows r of the padded plane: r < P and r >= P + H all padding */
    const int r1 = P + H < R ? P + H : R;
    if (L <= 64) {
        /* one masked load and store a row (every MobileNet shape) */
        const __mmask64 sm = L == 64 ? ~(__mmask64)0 : (((__mmask64)1 << L) - 1);
        const __mmask64 lm = (__mmask64)dw_mask(0, P, W, 64);
        const uintptr_t x0 = (uintptr_t)xc - (uintptr_t)(intptr_t)P;
        if (s == 1) {
            for (int r = 0; r < P && r < R; r++) _mm512_mask_storeu_epi8(d + (size_t)r * L, sm, pad);
            for (int r = P; r < r1; r++)
                _mm512_mask_storeu_epi8(d + (size_t)r * L, sm,
                                        _mm512_xor_si512(_mm512_mask_loadu_epi8(zpv, lm, (const void *)(x0 + (size_t)(r - P) * W)), flip));
            for (int r = r1; r < R; r++) _mm512_mask_storeu_epi8(d + (size_t)r * L, sm, pad);
            return;
        }
        for (int r = 0; r < R; r++) {
            uint8_t *dr = d + (size_t)(r & 1) * g->dw_cplane + (size_t)(r >> 1) * L;
            __m512i v = pad;
            if (r >= P && r < r1)
                v = _mm512_xor_si512(_mm512_mask_loadu_epi8(zpv, lm, (const void *)(x0 + (size_t)(r - P) * W)), flip);
            _mm512_mask_storeu_epi8(dr, sm, v);
        }
        return;
    }
    for (int r = 0; r < R; r++) {
        uint8_t *dr = s == 1 ? d + (size_t)r * L : d + (size_t)(r & 1) * g->dw_cplane + (size_t)(r >> 1) * L;
        const int ih = r - P;
        const int8_t *xr = ih >= 0 && ih < H ? xc + (size_t)ih * W : NULL;
        for (int c0 = 0; c0 < L; c0 += 64) {
            const int left = L - c0;
            const __mmask64 sm = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
            __m512i v = pad;
            if (xr) {
                const __mmask64 lm = (__mmask64)dw_mask(c0, P, W, 64);
                /* masked-off lanes are not read (nor can they fault) */
                const void *a = (const void *)((uintptr_t)xr + (uintptr_t)(intptr_t)(c0 - P));
                v = _mm512_xor_si512(_mm512_mask_loadu_epi8(zpv, lm, a), flip);
            }
            _mm512_mask_storeu_epi8(dr + c0, sm, v);
        }
    }
}

VNNI_INLINE __m512i dw_cells(__m512i didx, __m512i bidx, const uint8_t *p)
{
    return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(didx, _mm512_loadu_si512(p)), bidx);
}

/* one image: every channel's padded rows, then per channel and vector of
 * 16 positions three (load, vpermd + vpshufb, vpdpbusd), the epilogue, masked stores
 * of the valid lanes */
VNNI static void vnni_dw_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot)
{
    const rt_gemm *g = &op->g;
    const int s = g->s, nv = g->q_vecs, ws = g->ws;
    const size_t ip = (size_t)op->in_h * op->in_w, opl = (size_t)op->out_shape[1] * op->out_shape[2];
    const size_t area = g->dw_dplane;
    for (int c = 0; c < op->oc; c++) vnni_dw_rows(op, x + (size_t)c * ip, slot + (size_t)c * area);
    /* the cells of lane l = 4k + j (128-bit lane k): bytes s*l + e, e < 3
     * (e = 3: weight 0, any byte), as vpermd putting dwords s*k ..
     * s*k + 3 into lane k, then vpshufb picking bytes s*j + e of those */
    const __m512i didx = _mm512_set_epi32(3 * s + 3, 3 * s + 2, 3 * s + 1, 3 * s, 2 * s + 3, 2 * s + 2, 2 * s + 1,
                                          2 * s, s + 3, s + 2, s + 1, s, 3, 2, 1, 0);
    __m512i bidx;
    {
        uint8_t ib[64];
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++)
                for (int e = 0; e < 4; e++) ib[16 * k + 4 * j + e] = (uint8_t)(s * j + (e < 3 ? e : 0));
        bidx = _mm512_loadu_si512(ib);
    }
    /* where kernel row kh starts (position 0), within a channel's area */
    size_t off[3];
    for (int kh = 0; kh < 3; kh++)
        off[kh] = s == 1 ? (size_t)kh * ws : (size_t)(kh & 1) * g->dw_cplane + (size_t)(kh >> 1) * 2 * ws;
    const size_t qstep = (size_t)16 * s;
    for (int c = 0; c < op->oc; c++) {
        const uint8_t *dc = slot + (size_t)c * area;
        const uint8_t *r0 = dc + off[0], *r1 = dc + off[1], *r2 = dc + off[2];
        const epi_par p = epi_chan_load(&g->epi, c);
        const __m512i bias = _mm512_set1_epi32(g->epi.bias[c]);
        const int32_t *wc = (const int32_t *)g->w + (size_t)c * 3;
        const __m512i w0 = _mm512_set1_epi32(wc[0]), w1 = _mm512_set1_epi32(wc[1]), w2 = _mm512_set1_epi32(wc[2]);
        int8_t *yc = y + (size_t)c * opl;
        for (int v = 0; v < nv; v++) {
            const size_t o = (size_t)v * qstep;
            __m512i acc = _mm512_dpbusd_epi32(bias, dw_cells(didx, bidx, r0 + o), w0);
            acc = _mm512_dpbusd_epi32(acc, dw_cells(didx, bidx, r1 + o), w1);
            acc = _mm512_dpbusd_epi32(acc, dw_cells(didx, bidx, r2 + o), w2);
            const rt_vstore *d = &g->vst[v];
            const __m128i y8 = _mm_shuffle_epi8(epi_apply(acc, &p, 1),
                                                _mm_loadu_si128((const __m128i *)(const void *)d->perm));
            _mm_mask_storeu_epi8(yc + d->off, (__mmask16)d->mask, y8);
        }
    }
}

static const rt_fast_isa vnni_fast = {
    .isa = QAT_RT_ISA_AVX512_VNNI,
    .cpg = 4,
    .esize = 1,
    .lanes = 16,
    .rowsum_corr = 1,
    .conv_mr = CONV_MR,
    .conv_nr = CONV_NR,
    .lin_mr = LIN_MR,
    .lin_nr = LIN_NR,
    .rows_shared = vnni_rows_shared,
    .rows_s2 = vnni_rows_s2,
    .stage_shared = vnni_stage_shared,
    .interleave = vnni_interleave,
    .conv_plan = vnni_conv_plan,
    .lin_pack = vnni_lin_pack,
    .lin_tile = vnni_lin_tile,
};

const rt_isa_kernels qat_rti_vnni = {
    .prepare_conv = vnni_prepare_conv,
    .prepare_linear = vnni_prepare_linear,
    .conv_slot_bytes = qat_rti_conv_slot_bytes,
    .linear_sample_bytes = qat_rti_linear_sample_bytes,
    .conv_image = qat_rti_conv_image,
    .conv2d_split = qat_rti_conv2d_split,
    .linear = qat_rti_linear,
    .prepare_dw = vnni_prepare_dw,
    .dw_slot_bytes = qat_rti_dw_slot_bytes,
    .dw_image = vnni_dw_image,
    .maxpool_image = vnni_maxpool_image,
    .add_image = vnni_add_image,
    .gap_image = vnni_gap_image,
    .lut_image = vnni_lut_image,
};
