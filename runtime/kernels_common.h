/* runtime/kernels_common.h: what the fast int8 kernels share.
 *
 * kernels_avx2.c (vpmaddwd on cells of 2 int16 values) and kernels_vnni.c
 * (vpdpbusd on cells of 4 u8 values) pack weights and inputs into the same
 * layouts (prepare.c: qat_rti_conv_geometry) and split an op over the
 * threads the same way; only the cell (values per cell, bytes per value),
 * the vector width, the register tiles and the SIMD differ. An ISA file
 * describes itself with an rt_fast_isa (its format plus hooks for the SIMD
 * parts); kernels_common.c packs and schedules from that description, and
 * prepare stores it in op->g.fast.
 *
 * A packed value is x - off in esize bytes: esize 2, int16 x - zp (the
 * AVX2 cells); esize 1, u8 x + 128 (the VNNI cells, the zero point folded
 * into the bias). Either way padding (pixels outside the image, channels
 * past the last) is the encoding of x = zp, which contributes nothing:
 * 0 for esize 2, zp + 128 for esize 1. */
#ifndef QAT_KERNELS_COMMON_H
#define QAT_KERNELS_COMMON_H

#include <string.h>

#include "runtime/rt_internal.h"

static inline int32_t rt_ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline int rt_imin(int a, int b)
{
    return a < b ? a : b;
}

/* Register tiles. The accumulators are named variables, not an array (GCC
 * keeps arrays of vectors in memory across the loop): X(r) for every row r;
 * MR and NR are constants after inlining, so the `if (r < MR)`s vanish. */
#define RT_R4(X) X(0) X(1) X(2) X(3)
#define RT_R6(X) RT_R4(X) X(4) X(5)
#define RT_R8(X) RT_R6(X) X(6) X(7)
/* the accumulators a<r><v> of rows r < MR, vectors v < NR (2, 3 or 4 at
 * most) into acc[r][v], for the epilogue after the loop */
#define RT_SAVE_V(r, v) if (NR > v) acc[r][v] = a##r##v;
#define RT_SAVE2(r) if (r < MR) { RT_SAVE_V(r, 0) RT_SAVE_V(r, 1) }
#define RT_SAVE3(r) if (r < MR) { RT_SAVE_V(r, 0) RT_SAVE_V(r, 1) RT_SAVE_V(r, 2) }
#define RT_SAVE4(r) if (r < MR) { RT_SAVE_V(r, 0) RT_SAVE_V(r, 1) RT_SAVE_V(r, 2) RT_SAVE_V(r, 3) }

/* A tile of run-time mr x nr as the call TILE(MR, NR) with compile-time
 * sizes: RT_TILES(mr, nr, RT_MR6(RT_NR2)) for mr <= 6, nr <= 2. */
#define RT_TILE_CASE(MR_, NR_) \
    case (MR_) * 8 + (NR_): TILE(MR_, NR_); break;
#define RT_NR2(MR_) RT_TILE_CASE(MR_, 1) RT_TILE_CASE(MR_, 2)
#define RT_NR3(MR_) RT_NR2(MR_) RT_TILE_CASE(MR_, 3)
#define RT_NR4(MR_) RT_NR3(MR_) RT_TILE_CASE(MR_, 4)
#define RT_MR4(NRS) NRS(1) NRS(2) NRS(3) NRS(4)
#define RT_MR6(NRS) RT_MR4(NRS) NRS(5) NRS(6)
#define RT_MR8(NRS) RT_MR6(NRS) NRS(7) NRS(8)
#define RT_TILES(mr, nr, CASES)      \
    switch ((mr) * 8 + (nr)) {       \
        CASES default : break;       \
    }

/* the byte every padding byte of an op's packed input holds (see above) */
static inline uint8_t rt_pad_byte(const rt_op *op, int esize)
{
    return esize == 2 ? 0 : (uint8_t)(op->in_zp + 128);
}

/* The rows of one phase plane of a group of channels that lie inside the
 * image: row k (k < n) of channel e is at src[e] + k * step (src[e] NULL
 * past the last channel), packed at d + k * rowb. */
typedef struct rt_span {
    const int8_t *src[4];
    size_t step;
    int n;
    uint8_t *d;
    size_t rowb;
} rt_span;
/* Packs a span's rows, in order (a row's stores may spill into the rows
 * after it). */
typedef void (*rt_rows_fn)(const rt_op *op, const rt_span *sp);

/* row k of a span: the input rows of its first nch channels into src
 * (NULL past the last channel); returns its packed row */
static inline uint8_t *rt_span_row(const rt_span *sp, int k, int nch, const int8_t **src)
{
    const size_t o = (size_t)k * sp->step;
    for (int e = 0; e < nch; e++) src[e] = sp->src[e] ? sp->src[e] + o : NULL;
    return sp->d + (size_t)k * sp->rowb;
}

/* How a conv runs on one packed image (slot): pack, then every vector
 * block t = [v0, v0 + nr) of output positions (nr <= conv_nr, v0 = t *
 * conv_nr, nvec vectors in all) for all output channels (block: the
 * register tiles of its row blocks), then (unstage non-NULL) the output
 * channels [c0, c1) copied from the slot into the NCHW output y. */
typedef struct rt_conv_plan {
    void (*pack)(const rt_op *op, const int8_t *x, uint8_t *slot);
    void (*block)(const rt_op *op, uint8_t *slot, int8_t *y, int v0, int nr);
    void (*unstage)(const rt_op *op, const uint8_t *slot, int8_t *y, int c0, int c1);
    int nvec;
} rt_conv_plan;

struct rt_fast_isa {
    qat_rt_isa isa;
    int cpg;         /* values per 4-byte cell: the k of one k group */
    int esize;       /* bytes per value (above) */
    int lanes;       /* int32 lanes per vector: conv positions, linear features */
    int rowsum_corr; /* u8 activations: the bias absorbs -(128 + zp) * rowsum */
    int conv_mr, conv_nr; /* conv register tile: channels x vectors of positions */
    int lin_mr, lin_nr;   /* linear register tile: samples x vectors of features */
    /* input packing (qat_rti_conv_pack), the rows with SIMD; NULL: scalar.
     * rows_shared: channel cells, stride 1, shared pad columns: the ws
     * cells of each row (its P left pad cells included). rows_s2: channel
     * cells, stride 2: each row's even and odd columns into the rows of
     * phase planes (ph, 0) at d and (ph, 1) at d + plane_bytes (only the
     * phases some tap reads). stage_shared: tap-mode staging rows of one
     * channel (shared pad columns, one value per element, src[0] only). */
    rt_rows_fn rows_shared, rows_s2, stage_shared;
    /* tap cells: the cpg staged streams src[e] of a k group interleaved
     * into the q_vecs vectors of cells at d */
    void (*interleave)(const rt_op *op, const uint8_t *const *src, uint8_t *d);
    /* the plan of a prepared conv */
    void (*conv_plan)(const rt_op *op, rt_conv_plan *p);
    /* linear: one sample's activations into its packed row (xrow_bytes);
     * the register tile of samples [0, mr) (xs, y at the first) and
     * feature vectors [o0, o0 + nr * lanes) */
    void (*lin_pack)(const rt_op *op, const int8_t *x, uint8_t *row);
    void (*lin_tile)(const rt_op *op, const uint8_t *xs, int8_t *y, int o0, int mr, int nr);
};

/* ---- prepare (kernels_common.c) ---- */
/* Frees op->g and starts it for f (isa, fast). */
void qat_rti_gemm_start(rt_op *op, const rt_fast_isa *f);
/* A direct conv: geometry, epilogue, weights packed per register tile
 * ([kg][mr][cpg] values of esize bytes for the mr <= conv_mr channels of
 * each tile, at value m0 * kg * cpg). */
int qat_rti_prepare_conv(rt_op *op, const rt_fast_isa *f);
/* A linear: epilogue over the features padded to lanes, weights packed
 * [kg][mpad][cpg], packed activation rows of kg cells. */
int qat_rti_prepare_linear(rt_op *op, const rt_fast_isa *f);
size_t qat_rti_conv_slot_bytes(const rt_op *op);
size_t qat_rti_linear_sample_bytes(const rt_op *op);

/* ---- input packing (kernels_common.c) ---- */
/* x [C][H][W] int8 -> the packed image of a direct conv (channel or tap
 * cells), with op->g.fast's row hooks where it has them */
void qat_rti_conv_pack(const rt_op *op, const int8_t *x, uint8_t *xp);

/* ---- scheduling (kernels_common.c): rt_isa_kernels entries of both ---- */
void qat_rti_conv_image(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot);
void qat_rti_conv2d_split(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                          uint8_t *scratch, size_t slot_bytes);
void qat_rti_linear(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                    uint8_t *shared);

/* ---- depthwise 3x3 (groups == C == OC, stride 1 or 2) ---- */
int qat_rti_dw_eligible(const rt_op *op);
/* geometry (rt_gemm's dw_* fields), epilogue, weights: per channel kg * 3
 * cells of cpg values (esize bytes each), cell kw * kg + grp holding
 * w[c][grp*cpg + e][kw] (0 past row 2); sets op->dw_fast */
int qat_rti_prepare_dw(rt_op *op, const rt_fast_isa *f);
size_t qat_rti_dw_slot_bytes(const rt_op *op);
/* D of one channel x [H][W] (the padded plane, s column phases, pad rows
 * up to dw_drows), encoded as esize values. With the hooks NULL: scalar.
 * Stride 1, row: a padded row's n = ws values converted (src readable and
 * dst writable 32 values past n) */
typedef void (*rt_dw_row_fn)(const rt_op *op, const int8_t *src, int n, uint8_t *dst);
/* stride 2 (NULL: scalar): a padded row (2 ws values, readable 32 past)
 * into its even columns d0 and odd ones d1, ws values each (may write 16
 * values past) */
typedef void (*rt_dw_row2_fn)(const rt_op *op, const int8_t *row, uint8_t *d0, uint8_t *d1);
void qat_rti_dw_pack_d(const rt_op *op, const int8_t *x, uint8_t *d, rt_dw_row_fn row, rt_dw_row2_fn row2);
/* the staged outputs (q = oh*ws + ow) of one channel into its plane y */
void qat_rti_dw_unstage(const rt_op *op, const uint8_t *t, int8_t *y);

/* ---- maxpool ---- */
/* One channel of a 2x2 stride-2 maxpool: x its input plane, y its output
 * plane, room the output bytes from y to the end of the image. */
typedef void (*rt_pool_plane_fn)(const rt_op *op, const int8_t *x, int8_t *y, size_t room);
/* One image: 2x2 stride 2 a channel at a time through plane, any other
 * maxpool the reference. */
void qat_rti_maxpool_planes(const rt_op *op, const int8_t *x, int8_t *y, rt_pool_plane_fn plane);

/* ---- add: the cases without SIMD work ---- */
/* add_fast 2 (a constant output) or 0 (the reference): does the add and
 * returns 1; add_fast 1: returns 0, the SIMD path's to do */
int qat_rti_add_other(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y);

#endif
