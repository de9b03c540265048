/* runtime/prepare.c: per-channel requantization epilogues for the fast
 * kernels and aligned allocation helpers.
 *
 * The fast kernels requantize 16 (or 8) int32 accumulators at once with one
 * 32x32->64 multiply per lane and 32-bit lanes elsewhere (AVX2 has no 64-bit
 * arithmetic shift or min/max). rt_internal.h lists the steps; why they equal
 * y = clamp(requant(acc, m, s) + zp, lo, hi) (docs/FORMAT-int8.md):
 *
 * 1. f(a) = requant(a, m, s) + zp is nondecreasing in a (m >= 0). With
 *    ahi = min{a : f(a) >= hi} and alo = max{a : f(a) <= lo} (or the int32
 *    ends when no such a exists), clamping a to [alo, ahi] first leaves
 *    clamp(f(a), lo, hi) unchanged: above ahi the output is hi either way,
 *    below alo it is lo. (If alo > ahi, which needs lo == hi, the clamp
 *    gives ahi and f(ahi) >= hi = lo: still right.)
 * 2. After that clamp, f(a) lies within int32: f(ahi - 1) < hi and one step
 *    of a moves f by at most m * 2^-t + 1 < 2^30 + 1 (t >= 1); at the int32
 *    ends f stays between zp and lo/hi. So r + zp may be computed modulo 2^32.
 * 3. p = a * m lies in (-2^62, 2^62), so p + 2^(t-1) + 2^63 lies in
 *    [0, 2^64) and its logical shift by t is floor((p + 2^(t-1)) / 2^t) +
 *    2^(63-t) = r + 2^(63-t) exactly (2^t divides 2^63 for t <= 62).
 *    Adding cadd = zp - 2^(63-t) modulo 2^32 leaves r + zp. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "runtime/rounding.h"
#include "runtime/rt_internal.h"

#pragma GCC poison float double

void *qat_rti_alloc(size_t bytes)
{
    size_t n = (bytes + 63) / 64 * 64;
    if (n == 0) n = 64;
    void *p = qat_aligned_alloc(64, n);
    if (!p) return NULL;
    memset(p, 0, n);
    return p;
}

void qat_rti_dealloc(void *p)
{
    free(p);
}

static int64_t f_requant(int32_t a, int32_t m, int32_t s, int32_t zp)
{
    return (int64_t)qat_requant_single(a, m, s) + zp;
}

/* min{a : f(a) >= v}, or INT32_MAX if f(INT32_MAX) < v */
static int32_t first_at_least(int32_t m, int32_t s, int32_t zp, int64_t v)
{
    if (f_requant(INT32_MAX, m, s, zp) < v) return INT32_MAX;
    int64_t lo = INT32_MIN, hi = INT32_MAX; /* f(hi) >= v */
    if (f_requant(INT32_MIN, m, s, zp) >= v) return INT32_MIN;
    while (hi - lo > 1) { /* f(lo) < v <= f(hi) */
        int64_t mid = lo + (hi - lo) / 2;
        if (f_requant((int32_t)mid, m, s, zp) >= v) hi = mid;
        else lo = mid;
    }
    return (int32_t)hi;
}

/* max{a : f(a) <= v}, or INT32_MIN if f(INT32_MIN) > v */
static int32_t last_at_most(int32_t m, int32_t s, int32_t zp, int64_t v)
{
    if (f_requant(INT32_MIN, m, s, zp) > v) return INT32_MIN;
    if (f_requant(INT32_MAX, m, s, zp) <= v) return INT32_MAX;
    int64_t lo = INT32_MIN, hi = INT32_MAX; /* f(lo) <= v < f(hi) */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (f_requant((int32_t)mid, m, s, zp) <= v) lo = mid;
        else hi = mid;
    }
    return (int32_t)lo;
}

void qat_rti_gemm_free(rt_gemm *g)
{
    qat_rti_dealloc(g->w);
    qat_rti_dealloc(g->koff);
    qat_rti_dealloc(g->soff);
    qat_rti_dealloc(g->vst);
    rt_epi *e = &g->epi;
    qat_rti_dealloc(e->bias);
    qat_rti_dealloc(e->m);
    qat_rti_dealloc(e->t);
    qat_rti_dealloc(e->t64);
    qat_rti_dealloc(e->rnd);
    qat_rti_dealloc(e->alo);
    qat_rti_dealloc(e->ahi);
    qat_rti_dealloc(e->cadd);
    qat_rti_dealloc(e->fin);
    qat_rti_dealloc(e->hic);
    memset(g, 0, sizeof *g);
}

int qat_rti_epi_init(const rt_op *op, rt_gemm *g, int mpad, int rowsum_corr)
{
    rt_epi *e = &g->epi;
    size_t n = (size_t)mpad;
    e->bias = qat_rti_alloc(n * 4);
    e->m = qat_rti_alloc(n * 4);
    e->t = qat_rti_alloc(n * 4);
    e->t64 = qat_rti_alloc(n * 8);
    e->rnd = qat_rti_alloc(n * 8);
    e->alo = qat_rti_alloc(n * 4);
    e->ahi = qat_rti_alloc(n * 4);
    e->cadd = qat_rti_alloc(n * 4);
    e->fin = qat_rti_alloc(n * 4);
    e->hic = qat_rti_alloc(n * 4);
    if (!e->bias || !e->m || !e->t || !e->t64 || !e->rnd || !e->alo || !e->ahi || !e->cadd ||
        !e->fin || !e->hic)
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    e->lo = op->act_min;
    e->hi = op->act_max;
    g->mpad = mpad;
    const int groups = op->groups > 1 ? op->groups : 1;
    size_t k = (size_t)(op->ic / groups) * (size_t)op->kh * (size_t)op->kw;
    for (int o = 0; o < mpad; o++) {
        int real = o < op->oc;
        const int32_t hi = real ? qat_rti_act_hi(op, o) : op->act_max;
        int32_t m = real ? op->mult[o] : 0, s = real ? op->shift[o] : 0;
        int64_t b = real ? op->bias[o] : 0;
        if (real && rowsum_corr) {
            int64_t rs = 0;
            const int8_t *w = op->weight + (size_t)o * k;
            for (size_t i = 0; i < k; i++) rs += w[i];
            b -= (int64_t)(128 + op->in_zp) * rs;
            if (b < INT32_MIN || b > INT32_MAX)
                return qat_rti_error(QAT_ERR_FORMAT,
                                     "%s: channel %d: effective bias %lld outside int32", op->name,
                                     o, (long long)b);
        }
        int t = 31 - s;
        e->bias[o] = (int32_t)b;
        e->m[o] = m;
        e->t[o] = t;
        e->t64[o] = t;
        e->rnd[o] = ((uint64_t)1 << (t - 1)) + ((uint64_t)1 << 63);
        e->cadd[o] = (int32_t)(uint32_t)((uint32_t)op->out_zp - (uint32_t)((uint64_t)1 << (63 - t)));
        e->hic[o] = hi;
        e->ahi[o] = first_at_least(m, s, op->out_zp, hi);
        e->alo[o] = last_at_most(m, s, op->out_zp, op->act_min);
        /* after the acc clamp f lies in [f(alo), f(ahi)] (f(ahi) if alo > ahi) */
        const int64_t fl = f_requant(e->alo[o] <= e->ahi[o] ? e->alo[o] : e->ahi[o], m, s, op->out_zp);
        const int64_t fh = f_requant(e->ahi[o], m, s, op->out_zp);
        e->fin[o] = !(fl >= op->act_min && fh <= hi);
    }
    /* hi: the lowest channel bound (wino_out: "is a final clamp needed") */
    for (int o = 0; o < op->oc && o < mpad; o++)
        if (e->hic[o] < e->hi) e->hi = e->hic[o];
    return QAT_OK;
}

/* Geometry of a conv's packed input (both fast ISAs). A cell is 4 bytes:
 * cpg input values (4 u8 for VNNI, 2 int16 for AVX2), one k group of the
 * GEMM; output position q = oh*ws + ow reads, for k group j, the cell at
 * byte koff[j] + 4q. Two layouts:
 *
 * Channel cells (cpg channels of one pixel): planes of cells per channel
 * group and stride phase,
 *   plane(grp, ph, pw)[i][j] = padded input at (i*s + ph, j*s + pw),
 * so tap (kh, kw) of output (oh, ow) is plane(grp, kh%s, kw%s) at
 * (oh + kh/s, ow + kw/s): consecutive q read consecutive cells. With
 * stride 1 and P < KW, rows share their pad columns (the right pad of row i
 * is the left pad of row i + 1, both the zero point): rows of W + P cells,
 * P more at the end of the plane, fewer garbage lanes. Output lanes with
 * ow >= OW read neighbouring cells and are never stored.
 *
 * Tap cells (inputs with fewer than cpg channels, where channel cells would
 * be mostly padding): an im2col in cells, one plane of q positions per
 * group of cpg consecutive taps k = (ic, kh, kw). The packer first lays each
 * input channel out in the same planes as above with one value per element
 * (the staging area, esize bytes per element), then interleaves the cpg
 * streams staging + soff[k] of each group. */
int qat_rti_conv_geometry(const rt_op *op, rt_gemm *g, int cpg, int lanes, int esize)
{
    const int s = op->stride;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    const size_t K = (size_t)op->ic * op->kh * op->kw;
    g->s = s;
    g->hp = op->in_h + 2 * op->pad;
    g->wp = op->in_w + 2 * op->pad;
    g->hs = (g->hp + s - 1) / s;
    g->ws = (g->wp + s - 1) / s;
    size_t cells = (size_t)g->hs * g->ws;
    g->shared_pad = s == 1 && op->pad <= op->kw - 1;
    if (g->shared_pad) {
        g->ws = op->in_w + op->pad;
        cells = (size_t)g->hs * g->ws + (size_t)op->pad;
    }
    g->q_count = (OH - 1) * g->ws + OW;
    g->q_vecs = (g->q_count + lanes - 1) / lanes;
    g->tap_mode = op->ic < cpg;
    if (g->tap_mode) {
        g->groups = op->ic;
        g->kg = (int)((K + (size_t)cpg - 1) / (size_t)cpg);
        g->splane = cells;
        g->plane_bytes = ((size_t)g->q_vecs * lanes * 4 + 63) / 64 * 64;
        g->stage_off = (size_t)g->kg * g->plane_bytes;
        /* the streams read up to lanes * q_vecs - 1 elements past their
         * offset, at most the last plane's end plus lanes - 1 */
        g->img_bytes = g->stage_off +
                       ((size_t)op->ic * s * s * cells + (size_t)lanes * 2) * (size_t)esize + 128;
    } else {
        g->groups = (op->ic + cpg - 1) / cpg;
        g->kg = g->groups * op->kh * op->kw;
        g->plane_bytes = (cells * 4 + 63) / 64 * 64;
        /* the last vector reads at most lanes - 1 cells past the end of a
         * plane: the last valid q plus the largest tap offset is the
         * plane's last cell */
        g->img_bytes = (size_t)g->groups * s * s * g->plane_bytes + (size_t)lanes * 4 + 128;
    }
    if (g->img_bytes > (size_t)INT32_MAX)
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "%s: input too large for the fast kernels",
                             op->name);
    g->koff = qat_rti_alloc((size_t)g->kg * sizeof(int32_t));
    if (g->tap_mode) g->soff = qat_rti_alloc(K * sizeof(int32_t));
    if (!g->koff || (g->tap_mode && !g->soff))
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    if (g->tap_mode) {
        for (int j = 0; j < g->kg; j++) g->koff[j] = (int32_t)((size_t)j * g->plane_bytes);
        size_t k = 0;
        for (int ic = 0; ic < op->ic; ic++)
            for (int kh = 0; kh < op->kh; kh++)
                for (int kw = 0; kw < op->kw; kw++)
                    g->soff[k++] = (int32_t)(((size_t)ic * s * s + (size_t)(kh % s) * s + kw % s) * cells +
                                             (size_t)(kh / s) * g->ws + kw / s);
        return QAT_OK;
    }
    int j = 0;
    for (int grp = 0; grp < g->groups; grp++)
        for (int kh = 0; kh < op->kh; kh++)
            for (int kw = 0; kw < op->kw; kw++)
                g->koff[j++] = (int32_t)(((size_t)grp * s * s + (size_t)(kh % s) * s + kw % s) *
                                             g->plane_bytes +
                                         ((size_t)(kh / s) * g->ws + kw / s) * 4);
    return QAT_OK;
}

/* The weight index (oc, k) with k = (ic*KH + kh)*KW + kw that element e of
 * k group j multiplies, or -1 for padding. */
long qat_rti_conv_k(const rt_op *op, const rt_gemm *g, int cpg, int j, int e)
{
    const long K = (long)op->ic * op->kh * op->kw;
    if (g->tap_mode) {
        const long k = (long)j * cpg + e;
        return k < K ? k : -1;
    }
    const int grp = j / (op->kh * op->kw), kh = j / op->kw % op->kh, kw = j % op->kw;
    const int c = grp * cpg + e;
    return c < op->ic ? ((long)c * op->kh + kh) * op->kw + kw : -1;
}

/* The add without 64-bit lanes. With d_a = a - z_a, d_b = b - z_b (|d| <=
 * 255) and each multiplier split as m = h * 2^16 + l, l the low 16 bits
 * read as a signed int16 (so h <= 2^15; the split is used when h < 2^15):
 *   v = d_a m_a + d_b m_b = H * 2^16 + L,  H = d_a h_a + d_b h_b,
 *   L = d_a l_a + d_b l_b  (|H|, |L| < 2^24: two vpmaddwd of int16 pairs)
 *   (v + 2^(t-1)) >> t = (H + 2^(t-17) + (L >> 16)) >> (t - 16)
 * for 17 <= t <= 40 (nested floor divisions; the sum stays below 2^25).
 * For t >= 41, |v| < 2^40 <= 2^(t-1), so the shifted value is 0. */
void qat_rti_add_prepare(rt_op *op)
{
    const int t = op->add_shift;
    int16_t h[2], l[2];
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        const int32_t m = op->add_mult[i];
        l[i] = (int16_t)(uint16_t)(m & 0xFFFF);
        const int32_t hi = (int32_t)(((int64_t)m - l[i]) >> 16);
        ok &= hi <= INT16_MAX;
        h[i] = (int16_t)(hi <= INT16_MAX ? hi : 0);
    }
    op->add_h = (int32_t)((uint32_t)(uint16_t)h[0] | ((uint32_t)(uint16_t)h[1] << 16));
    op->add_l = (int32_t)((uint32_t)(uint16_t)l[0] | ((uint32_t)(uint16_t)l[1] << 16));
    op->add_fast = t >= 41 ? 2 : (t >= 17 && ok) ? 1 : 0;
    op->add_c = t >= 17 && t <= 40 ? (int32_t)1 << (t - 17) : 0;
    op->add_sh = t - 16;
}
