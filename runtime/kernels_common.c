/* runtime/kernels_common.c: the packers and the scheduler of the fast int8
 * kernels, one copy for both ISA files (kernels_common.h says how an ISA
 * describes itself). Integer only; no SIMD here: the SIMD parts are the
 * ISA's hooks. */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "runtime/kernels_common.h"

#pragma GCC poison float double

/* ---- prepare ---- */

void qat_rti_gemm_start(rt_op *op, const rt_fast_isa *f)
{
    qat_rti_gemm_free(&op->g);
    op->g.isa = f->isa;
    op->g.fast = f;
}

/* value i of an array of esize-byte values */
static void put_value(void *w, size_t i, int esize, int8_t v)
{
    if (esize == 2) ((int16_t *)w)[i] = v;
    else ((int8_t *)w)[i] = v;
}

int qat_rti_prepare_conv(rt_op *op, const rt_fast_isa *f)
{
    qat_rti_gemm_start(op, f);
    rt_gemm *g = &op->g;
    int st = qat_rti_conv_geometry(op, g, f->cpg, f->lanes, f->esize);
    if (!st) st = qat_rti_epi_init(op, g, op->oc, f->rowsum_corr);
    if (st) return st;
    const int OC = op->oc, kg = g->kg, cpg = f->cpg;
    const size_t K = (size_t)op->ic * op->kh * op->kw;
    void *w = qat_rti_alloc((size_t)OC * kg * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    for (int m0 = 0; m0 < OC; m0 += f->conv_mr) {
        const int mr = rt_imin(f->conv_mr, OC - m0);
        const size_t tile = (size_t)m0 * kg * cpg;
        for (int j = 0; j < kg; j++)
            for (int r = 0; r < mr; r++)
                for (int e = 0; e < cpg; e++) {
                    const long k = qat_rti_conv_k(op, g, cpg, j, e);
                    put_value(w, tile + ((size_t)j * mr + r) * cpg + e, f->esize,
                              k < 0 ? 0 : op->weight[(size_t)(m0 + r) * K + (size_t)k]);
                }
    }
    return QAT_OK;
}

int qat_rti_prepare_linear(rt_op *op, const rt_fast_isa *f)
{
    qat_rti_gemm_start(op, f);
    rt_gemm *g = &op->g;
    const int IN = op->ic, OUT = op->oc, cpg = f->cpg;
    const int opad = (OUT + f->lanes - 1) / f->lanes * f->lanes;
    int st = qat_rti_epi_init(op, g, opad, f->rowsum_corr);
    if (st) return st;
    g->kg = (IN + cpg - 1) / cpg;
    g->xrow_bytes = (size_t)g->kg * 4;
    void *w = qat_rti_alloc((size_t)g->kg * opad * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    for (int o = 0; o < OUT; o++)
        for (int k = 0; k < IN; k++)
            put_value(w, ((size_t)(k / cpg) * opad + o) * cpg + (size_t)(k % cpg), f->esize,
                      op->weight[(size_t)o * IN + k]);
    return QAT_OK;
}

size_t qat_rti_conv_slot_bytes(const rt_op *op)
{
    const rt_gemm *g = &op->g;
    if (g->wino) return g->wslot_bytes;
    return (g->img_bytes + 63) / 64 * 64 + g->tmp_bytes;
}

size_t qat_rti_linear_sample_bytes(const rt_op *op)
{
    return op->g.xrow_bytes;
}

/* ---- input packing ---- */

/* Planes of packed values (prepare.c's geometry): groups of cpg channels,
 * each s * s stride-phase planes of `plane` bytes, cells of cpg values of
 * esize bytes. The channel cells (cpg of the ISA) and the tap mode's
 * staging (cpg 1) are both such planes. */
typedef struct {
    int cpg, esize, groups;
    size_t plane;
} rt_planes;

/* The scalar rows, any layout: cell j of phase plane pw holds input column
 * j * s + pw - P (shared pad: s = 1, the row's P left pad cells then its W
 * pixels). */
static void rows_scalar(const rt_op *op, const rt_planes *L, const rt_span *sp)
{
    const rt_gemm *g = &op->g;
    const int s = g->s, ws = g->ws, W = op->in_w, P = op->pad, cpg = L->cpg;
    const int32_t zp = op->in_zp;
    for (int k = 0; k < sp->n; k++) {
        const int8_t *src[4];
        uint8_t *d = rt_span_row(sp, k, cpg, src);
        for (int pw = 0; pw < s; pw++) {
            uint8_t *row = d + (size_t)pw * L->plane;
            for (int j = 0; j < ws; j++) {
                const int iw = j * s + pw - P, in = iw >= 0 && iw < W;
                for (int e = 0; e < cpg; e++) {
                    const int v = in && src[e] ? src[e][iw] : zp;
                    const size_t i = (size_t)j * cpg + (size_t)e;
                    if (L->esize == 2) ((int16_t *)(void *)row)[i] = (int16_t)(v - zp);
                    else row[i] = (uint8_t)(v + 128);
                }
            }
        }
    }
}

/* x [C][H][W] -> the planes L at dst: per phase row ph and group, in that
 * order, the rows above the image (padding), the span inside it (fn, NULL:
 * rows_scalar), the rows below it (padding). Phases no tap reads (ph >= KH)
 * are not written. (With shared pad columns, s = 1: one phase, the groups'
 * planes in memory order, as a span's spill into the next rows needs.) */
static void pack_planes(const rt_op *op, const int8_t *x, uint8_t *dst, const rt_planes *L,
                        rt_rows_fn fn)
{
    const rt_gemm *g = &op->g;
    const int C = op->ic, H = op->in_h, W = op->in_w, P = op->pad, s = g->s, cpg = L->cpg;
    const int hs = g->hs; /* rows per phase plane (shared pad: g->hp, s = 1) */
    const size_t rowb = (size_t)g->ws * cpg * L->esize;
    const uint8_t pad = rt_pad_byte(op, L->esize);
    rt_span sp;
    sp.step = (size_t)s * W;
    sp.rowb = rowb;
    for (int ph = 0; ph < s && ph < op->kh; ph++) {
        /* row i of the phase is input row i * s + ph - P: inside the image
         * for i in [i0, i1) */
        const int i0 = P > ph ? (P - ph + s - 1) / s : 0;
        int i1 = H - 1 + P - ph < 0 ? 0 : (H - 1 + P - ph) / s + 1;
        if (i1 < i0) i1 = i0;
        for (int grp = 0; grp < L->groups; grp++) {
            uint8_t *gp = dst + (size_t)grp * s * s * L->plane;
            uint8_t *pl = gp + (size_t)ph * s * L->plane;
            if (i0)
                for (int pw = 0; pw < s; pw++) memset(pl + (size_t)pw * L->plane, pad, (size_t)i0 * rowb);
            sp.n = i1 - i0;
            if (sp.n) {
                const int ih0 = i0 * s + ph - P;
                for (int e = 0; e < 4; e++) {
                    const int c = grp * cpg + e;
                    sp.src[e] = e < cpg && c < C ? x + ((size_t)c * H + ih0) * W : NULL;
                }
                sp.d = pl + (size_t)i0 * rowb;
                if (fn) fn(op, &sp);
                else rows_scalar(op, L, &sp);
            }
            if (i1 < hs)
                for (int pw = 0; pw < s; pw++)
                    memset(pl + (size_t)pw * L->plane + (size_t)i1 * rowb, pad, (size_t)(hs - i1) * rowb);
            /* shared pad: the plane ends with P more pad cells */
            if (g->shared_pad && P) memset(gp + (size_t)hs * rowb, pad, (size_t)P * cpg * L->esize);
        }
    }
}

void qat_rti_conv_pack(const rt_op *op, const int8_t *x, uint8_t *xp)
{
    const rt_gemm *g = &op->g;
    const rt_fast_isa *f = g->fast;
    if (!g->tap_mode) {
        const rt_planes L = {f->cpg, f->esize, g->groups, g->plane_bytes};
        pack_planes(op, x, xp, &L, g->shared_pad ? f->rows_shared : g->s == 2 ? f->rows_s2 : NULL);
        return;
    }
    /* tap cells: every input channel staged with one value per element,
     * then each k group's cpg streams interleaved */
    const rt_planes S = {1, f->esize, op->ic, g->splane * (size_t)f->esize};
    uint8_t *st = xp + g->stage_off;
    pack_planes(op, x, st, &S, g->shared_pad ? f->stage_shared : NULL);
    const long K = (long)op->ic * op->kh * op->kw;
    for (int j = 0; j < g->kg; j++) {
        const uint8_t *src[4] = {st, st, st, st};
        for (int e = 0; e < f->cpg; e++) {
            const long k = (long)j * f->cpg + e;
            if (k < K) src[e] = st + (size_t)g->soff[k] * (size_t)f->esize;
        }
        f->interleave(op, src, xp + (size_t)j * g->plane_bytes);
    }
}

/* ---- scheduling ---- */

/* vector blocks [t0, t1) of one packed image */
static void run_blocks(const rt_op *op, const rt_conv_plan *p, uint8_t *slot, int8_t *y, int t0,
                       int t1)
{
    const int NR = op->g.fast->conv_nr;
    for (int t = t0; t < t1; t++) p->block(op, slot, y, t * NR, rt_imin(NR, p->nvec - t * NR));
}

static int block_count(const rt_op *op, const rt_conv_plan *p)
{
    return (p->nvec + op->g.fast->conv_nr - 1) / op->g.fast->conv_nr;
}

void qat_rti_conv_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot)
{
    rt_conv_plan p;
    op->g.fast->conv_plan(op, &p);
    p.pack(op, x, slot);
    run_blocks(op, &p, slot, y, 0, block_count(op, &p));
    if (p.unstage) p.unstage(op, slot, y, 0, op->oc);
}

/* fewer images than threads: one slot per image; the images packed, their
 * vector blocks and then their output channels split over the threads */
void qat_rti_conv2d_split(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                          uint8_t *scratch, size_t slot_bytes)
{
    rt_conv_plan p;
    op->g.fast->conv_plan(op, &p);
    const size_t in_sz = (size_t)op->ic * op->in_h * op->in_w;
    const size_t out_sz = (size_t)op->oc * op->out_shape[1] * op->out_shape[2];
    const int nb = block_count(op, &p), OC = op->oc;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) p.pack(op, x + (size_t)i * in_sz, scratch + (size_t)i * slot_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < n * nb; w++) {
            const int i = w / nb, t = w % nb;
            run_blocks(op, &p, scratch + (size_t)i * slot_bytes, y + (size_t)i * out_sz, t, t + 1);
        }
        if (p.unstage) {
#pragma omp for schedule(static)
            for (int w = 0; w < n * OC; w++) {
                const int i = w / OC, c = w % OC;
                p.unstage(op, scratch + (size_t)i * slot_bytes, y + (size_t)i * out_sz, c, c + 1);
            }
        }
    }
}

/* a batch of n: the samples packed, then the register tiles (sample
 * blocks x feature blocks) split over the threads */
void qat_rti_linear(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                    uint8_t *shared)
{
    const rt_gemm *g = &op->g;
    const rt_fast_isa *f = g->fast;
    const int MR = f->lin_mr, NR = f->lin_nr, L = f->lanes;
    const int ntiles = (n + MR - 1) / MR;
    const int otiles = (g->mpad / L + NR - 1) / NR;
    const int items = ntiles * otiles;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            f->lin_pack(op, x + (size_t)i * op->ic, shared + (size_t)i * g->xrow_bytes);
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < items; w++) {
            const int n0 = w % ntiles * MR, o0 = w / ntiles * NR * L;
            f->lin_tile(op, shared + (size_t)n0 * g->xrow_bytes, y + (size_t)n0 * op->oc, o0,
                        rt_imin(MR, n - n0), rt_imin(NR, (g->mpad - o0) / L));
        }
    }
}

/* ---- depthwise 3x3 ----
 * A depthwise conv has one input channel per output channel: 9
 * multiply-adds an output, too few for the GEMM layouts above (a cell of
 * cpg channels would mix channels). Each channel is its own small
 * problem: its padded plane D (column phases for stride 2), then cells of
 * cpg values from cpg consecutive rows of D at the same column, so that a
 * vector of consecutive output positions q = oh*ws + ow reads, for tap
 * column kw, consecutive cells: one vpdpbusd (VNNI: rows kh = 0, 1, 2 and
 * a zero weight in one cell) or two vpmaddwd (AVX2: rows 0-1 and 2-3)
 * per tap column. Lanes with ow >= OW are computed and thrown away. */

int qat_rti_dw_eligible(const rt_op *op)
{
    return op->type == RT_OP_CONV2D && op->groups > 1 && op->groups == op->in_c && op->oc == op->in_c &&
           op->kh == 3 && op->kw == 3 && (op->stride == 1 || op->stride == 2);
}

int qat_rti_prepare_dw(rt_op *op, const rt_fast_isa *f)
{
    qat_rti_gemm_start(op, f);
    op->dw_fast = 0;
    if (!qat_rti_dw_eligible(op)) return QAT_OK;
    rt_gemm *g = &op->g;
    const int s = op->stride, cpg = f->cpg, L = f->lanes, es = f->esize;
    const int OH = op->out_shape[1], OW = op->out_shape[2];
    g->s = s;
    g->hp = op->in_h + 2 * op->pad;
    g->wp = op->in_w + 2 * op->pad;
    g->ws = (g->wp + s - 1) / s;
    g->kg = (3 + cpg - 1) / cpg;
    const int gstep = cpg / s; /* cell rows between row groups */
    g->dw_rows = OH + (g->kg - 1) * gstep;
    g->dw_drows = s * (g->dw_rows - 1) + cpg;
    if (g->dw_drows < g->hp) g->dw_drows = g->hp;
    g->q_count = (OH - 1) * g->ws + OW;
    g->q_vecs = (g->q_count + L - 1) / L;
    /* cells read: up to q_vecs * L - 1 plus the largest tap offset */
    size_t cells = (size_t)g->q_vecs * L + (size_t)(g->kg - 1) * gstep * g->ws + 2 / s;
    if ((size_t)g->dw_rows * g->ws > cells) cells = (size_t)g->dw_rows * g->ws;
    cells += 16; /* the interleave's vector stores past the last row */
    g->dw_dplane = (((size_t)g->dw_drows * g->ws + 32) * es + 63) / 64 * 64;
    g->dw_cplane = (cells * 4 + 63) / 64 * 64;
    g->dw_coff = (size_t)s * g->dw_dplane;
    g->dw_toff = g->dw_coff + (size_t)s * g->dw_cplane;
    g->dw_slot = g->dw_toff + ((size_t)g->q_vecs * L + 63) / 64 * 64 + 64;
    g->dw_rowoff = g->dw_slot;                   /* a padded int8 input row (stride 2) */
    g->dw_slot += ((size_t)2 * g->ws + 64 + 63) / 64 * 64;
    if (g->dw_slot > (size_t)INT32_MAX)
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "%s: input too large for the depthwise kernels", op->name);
    int st = qat_rti_epi_init(op, g, op->oc, f->rowsum_corr);
    if (st) return st;
    const int nw = 3 * g->kg;
    void *w = qat_rti_alloc((size_t)op->oc * nw * 4);
    if (!w) return qat_rti_error(QAT_ERR_NOMEM, "out of memory preparing %s", op->name);
    g->w = w;
    for (int c = 0; c < op->oc; c++)
        for (int kw = 0; kw < 3; kw++)
            for (int grp = 0; grp < g->kg; grp++)
                for (int e = 0; e < cpg; e++) {
                    const int kh = grp * cpg + e;
                    put_value(w, ((size_t)c * nw + (size_t)kw * g->kg + grp) * cpg + e, es,
                              kh < 3 ? op->weight[(size_t)c * 9 + kh * 3 + kw] : 0);
                }
    op->dw_fast = 1;
    return QAT_OK;
}

size_t qat_rti_dw_slot_bytes(const rt_op *op)
{
    return op->g.dw_slot;
}

static void dw_put(uint8_t *d, size_t i, int esize, int v, int32_t zp)
{
    if (esize == 2) ((int16_t *)(void *)d)[i] = (int16_t)(v - zp);
    else d[i] = (uint8_t)(v + 128);
}

void qat_rti_dw_pack_d(const rt_op *op, const int8_t *x, uint8_t *d, rt_dw_row_fn row, rt_dw_row2_fn row2)
{
    const rt_gemm *g = &op->g;
    const int s = g->s, ws = g->ws, H = op->in_h, W = op->in_w, P = op->pad, es = g->fast->esize;
    const int32_t zp = op->in_zp;
    if ((s == 2 && row2) || (s == 1 && row)) {
        /* each row padded into the slot's row buffer (2 ws values and
         * slack, all zp outside the image), then converted (stride 1, row:
         * its ws values) or split into the two column phases (row2) */
        int8_t *rb = (int8_t *)(d + g->dw_rowoff);
        memset(rb, (int8_t)zp, (size_t)2 * ws + 64);
        for (int r = 0; r < g->dw_drows; r++) {
            const int ih = r - P;
            if (ih >= 0 && ih < H) memcpy(rb + P, x + (size_t)ih * W, (size_t)W);
            else memset(rb + P, (int8_t)zp, (size_t)W);
            if (s == 1) row(op, rb, ws, d + (size_t)r * ws * es);
            else row2(op, rb, d + (size_t)r * ws * es, d + g->dw_dplane + (size_t)r * ws * es);
        }
        return;
    }
    for (int ph = 0; ph < s; ph++) {
        uint8_t *pl = d + (size_t)ph * g->dw_dplane;
        for (int r = 0; r < g->dw_drows; r++) {
            uint8_t *dr = pl + (size_t)r * ws * es;
            const int ih = r - P;
            if (ih < 0 || ih >= H) {
                for (int j = 0; j < ws; j++) dw_put(dr, (size_t)j, es, zp, zp);
                continue;
            }
            const int8_t *xr = x + (size_t)ih * W;
            for (int j = 0; j < ws; j++) {
                const int iw = j * s + ph - P;
                dw_put(dr, (size_t)j, es, iw >= 0 && iw < W ? xr[iw] : zp, zp);
            }
        }
    }
}

void qat_rti_dw_unstage(const rt_op *op, const uint8_t *t, int8_t *y)
{
    const int OH = op->out_shape[1], OW = op->out_shape[2], ws = op->g.ws;
    for (int oh = 0; oh < OH; oh++) memcpy(y + (size_t)oh * OW, t + (size_t)oh * ws, (size_t)OW);
}

/* ---- maxpool ---- */

void qat_rti_maxpool_planes(const rt_op *op, const int8_t *x, int8_t *y, rt_pool_plane_fn plane)
{
    if (op->kernel != 2 || op->stride != 2) {
        qat_rti_maxpool2d_s8(op, x, y);
        return;
    }
    const size_t ip = (size_t)op->in_h * op->in_w, opl = (size_t)op->out_shape[1] * op->out_shape[2];
    for (int c = 0; c < op->in_c; c++)
        plane(op, x + (size_t)c * ip, y + (size_t)c * opl, (size_t)(op->in_c - c) * opl);
}

/* ---- add ---- */

int qat_rti_add_other(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y)
{
    if (op->add_fast == 1) return 0;
    if (op->add_fast == 2) {
        const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
        memset(y, (int8_t)(zp < lo ? lo : zp > hi ? hi : zp), op->out_size);
    } else {
        qat_rti_add_s8(op, a, b, y);
    }
    return 1;
}
