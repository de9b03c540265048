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

#include "runtime/rounding.h"
#include "runtime/rt_internal.h"

void *qat_rti_alloc(size_t bytes)
{
    size_t n = (bytes + 63) / 64 * 64;
    if (n == 0) n = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, n)) return NULL;
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
    qat_rti_dealloc(g->segs);
    qat_rti_dealloc(g->seg_start);
    rt_epi *e = &g->epi;
    qat_rti_dealloc(e->bias);
    qat_rti_dealloc(e->m);
    qat_rti_dealloc(e->t);
    qat_rti_dealloc(e->t64);
    qat_rti_dealloc(e->rnd);
    qat_rti_dealloc(e->alo);
    qat_rti_dealloc(e->ahi);
    qat_rti_dealloc(e->cadd);
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
    if (!e->bias || !e->m || !e->t || !e->t64 || !e->rnd || !e->alo || !e->ahi || !e->cadd)
        return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    e->lo = op->act_min;
    e->hi = op->act_max;
    g->mpad = mpad;
    size_t k = (size_t)op->ic * (size_t)op->kh * (size_t)op->kw;
    for (int o = 0; o < mpad; o++) {
        int real = o < op->oc;
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
        e->ahi[o] = first_at_least(m, s, op->out_zp, op->act_max);
        e->alo[o] = last_at_most(m, s, op->out_zp, op->act_min);
    }
    return QAT_OK;
}

/* Geometry of a conv's packed input (both fast ISAs): channels in groups of
 * cpg (4 for VNNI u8 quadruples, 2 for AVX2 int16 pairs), so one pixel of one
 * group is 4 bytes; stride s split into s*s phase planes
 *   plane(grp, ph, pw)[i][j] = padded input at (i*s + ph, j*s + pw),
 * so tap (kh, kw) of output (oh, ow) is plane(grp, kh%s, kw%s) at
 * (oh + kh/s, ow + kw/s): for consecutive q = oh*ws + ow the operands are
 * consecutive 4-byte cells at byte offset koff[k group] + 4q. Output lanes
 * with ow >= OW read neighbouring cells and are never stored. */
int qat_rti_conv_geometry(const rt_op *op, rt_gemm *g, int cpg, int lanes)
{
    const int s = op->stride;
    g->s = s;
    g->groups = (op->ic + cpg - 1) / cpg;
    g->hp = op->in_h + 2 * op->pad;
    g->wp = op->in_w + 2 * op->pad;
    g->hs = (g->hp + s - 1) / s;
    g->ws = (g->wp + s - 1) / s;
    g->plane_bytes = ((size_t)g->hs * g->ws * 4 + 63) / 64 * 64;
    /* the last vector reads at most lanes - 1 cells past the end of a plane:
     * the last valid q plus the largest tap offset is cell hs*ws - 1 */
    g->img_bytes = (size_t)g->groups * s * s * g->plane_bytes + (size_t)lanes * 4 + 128;
    g->kg = g->groups * op->kh * op->kw;
    if (g->img_bytes > (size_t)INT32_MAX)
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "%s: input too large for the fast kernels",
                             op->name);
    g->koff = qat_rti_alloc((size_t)g->kg * sizeof(int32_t));
    if (!g->koff) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    int j = 0;
    for (int grp = 0; grp < g->groups; grp++)
        for (int kh = 0; kh < op->kh; kh++)
            for (int kw = 0; kw < op->kw; kw++)
                g->koff[j++] = (int32_t)(((size_t)grp * s * s + (size_t)(kh % s) * s + kw % s) *
                                             g->plane_bytes +
                                         ((size_t)(kh / s) * g->ws + kw / s) * 4);
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    g->q_count = (OH - 1) * g->ws + OW;
    g->q_vecs = (g->q_count + lanes - 1) / lanes;
    return QAT_OK;
}
