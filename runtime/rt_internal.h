/* runtime/rt_internal.h: the integer runtime's private structures.
 *
 * Nothing here (nor in any runtime/ source) includes anything from the
 * training side of qat: a deployment builds runtime/ alone (libqat_runtime)
 * and links HDF5. Functions with external linkage that are not public API
 * use the prefix qat_rti_. */
#ifndef QAT_RT_INTERNAL_H
#define QAT_RT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "qat/runtime.h"

#if defined(__GNUC__)
#define RT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RT_PRINTF(a, b)
#endif

/* Sets the runtime's thread-local last error (qat_rt_last_error) and
 * returns status. */
int qat_rti_error(int status, const char *fmt, ...) RT_PRINTF(2, 3);

/* Op types; the table of names in load.c is indexed by these. */
typedef enum {
    RT_OP_INPUT = 0,
    RT_OP_CONV2D,
    RT_OP_LINEAR,
    RT_OP_ADD,
    RT_OP_GLOBAL_AVGPOOL,
    RT_OP_AVGPOOL2D,
    RT_OP_MAXPOOL2D,
    RT_OP_RELU,
    RT_OP_FLATTEN,
    RT_OP_LUT,      /* format version 3 */
    RT_OP_CONCAT,
    RT_OP_UPSAMPLE,
    RT_OP_COUNT
} rt_op_type;

const char *qat_rti_op_type_name(rt_op_type t);

/* The payload of an open HDF5 file (int64_t hid_t): the sum over every
 * dataset of element count x element size (qat_rt_payload_bytes' definition,
 * also for files the runtime does not load). 0, or -1 if the walk failed. */
int qat_rti_h5_payload_bytes(int64_t file, size_t *bytes);

/* Per-channel requantization epilogue, precomputed at prepare time so the
 * SIMD kernels work in 32-bit lanes plus one 64-bit product:
 *   a  = clamp(acc, alo, ahi)           (does not change the final output,
 *                                        keeps r + zp inside int32)
 *   u  = (uint64)(a * m) + rnd          rnd = 2^(t-1) + 2^63 (mod 2^64)
 *   r' = (u >> t) mod 2^32              logical shift
 *   y  = clamp(r' + cadd, lo, hi)       cadd = zp - 2^(63-t) (mod 2^32)
 * which equals clamp(requant(acc, m, 31 - t) + zp, lo, hi) for every int32
 * acc (proof in prepare.c). SoA arrays of mpad entries (padding: m = 0). */
typedef struct rt_epi {
    int32_t *bias;  /* effective bias (VNNI: bias - (128 + in_zp) * rowsum) */
    int32_t *m;     /* multiplier */
    int32_t *t;     /* 31 - shift, in [1, 62] */
    int64_t *t64;   /* t as int64 (per-lane shift counts) */
    uint64_t *rnd;  /* 2^(t-1) + 2^63 */
    int32_t *alo, *ahi;
    int32_t *cadd;  /* zp - 2^(63-t), wrapped */
    int32_t *fin;   /* 1: the final clamp to [lo, hi] is needed (else the
                     * acc clamp already lands in [lo, hi]: m * 2^-t <= 1) */
    int32_t *hic;   /* the upper clamp bound of each channel: act_max, or
                     * act_max_channel[c] (padding channels: act_max) */
    int32_t lo, hi; /* act_min, act_max */
} rt_epi;

/* How a vector of 16 conv outputs (positions q = oh*ws + ow) goes into the
 * NCHW plane: its valid lanes (ow < OW) are consecutive outputs, so a byte
 * shuffle (perm) moves them to the front and one masked store of `mask`
 * writes them at plane + off. */
typedef struct rt_vstore {
    int32_t off;
    uint32_t mask;
    uint8_t perm[16];
} rt_vstore;

/* An ISA's fast-kernel format and SIMD hooks (kernels_common.h). */
typedef struct rt_fast_isa rt_fast_isa;

/* Prepared state of a conv2d / linear op for the fast kernels. */
typedef struct rt_gemm {
    qat_rt_isa isa;
    const rt_fast_isa *fast; /* the ISA that prepared it */
    void *w;            /* packed weights (layout owned by the ISA file) */
    int kg;             /* number of k groups (VNNI: 4 k each, AVX2: 2) */
    int mpad;           /* channels padded to the vector width */
    rt_epi epi;
    /* conv: the packed input of one image, stride s split into s*s phase
     * planes of hs x ws pixels, each pixel one k group of input channels */
    int32_t *koff;      /* [kg] byte offset of each k group in the packed image */
    int s, hp, wp, hs, ws, groups;
    int shared_pad;     /* stride 1, P < KW: rows of W + P cells (prepare.c) */
    int tap_mode;       /* cells of consecutive taps instead of channels */
    int32_t *soff;      /* tap mode: [K] element offset of each tap's stream */
    size_t splane;      /* tap mode: elements per staging plane */
    size_t stage_off;   /* tap mode: byte offset of the staging area */
    size_t plane_bytes, img_bytes; /* img_bytes includes read slack */
    int q_count, q_vecs; /* output positions q = oh*ws + ow, vectors of 16 or 8 */
    size_t tmp_bytes;   /* per-image output staging (AVX2) */
    rt_vstore *vst;     /* VNNI: [q_vecs] stores of the output vectors */
    int vst_ident;      /* VNNI: every vst perm keeps the lanes in place (no shuffle) */
    /* linear: packed activations row length in bytes */
    size_t xrow_bytes;
    /* AVX2 Winograd F(2x2, 3x3) (3x3 stride-1 convs, kernels_avx2.c): th x tw
     * tiles of 2x2 outputs, wtpad cells per transformed plane, staged input
     * rows of wle cells; byte offsets in the slot of the transformed input
     * (wv_off), the even/odd staged input (wst_off) and the int8 output
     * staging (wout_off) */
    int wino, wth, wtw, wle;
    size_t wtpad, wv_off, wst_off, wout_off, wslot_bytes;
    /* depthwise 3x3 (kernels_common.c, qat_rti_prepare_dw): per channel,
     * the padded plane split into s column phases of dw_drows rows of ws
     * values (D, at slot offset 0, dw_dplane bytes a phase), then cells of
     * cpg values from rows s*i + grp*cpg + e of D (i < dw_rows, at dw_coff,
     * dw_cplane bytes a phase), then the int8 outputs q = oh*ws + ow (at
     * dw_toff); kg row groups of cpg rows (VNNI 1, AVX2 2), group grp of
     * output row oh at cell row oh + grp*cpg/s */
    int dw_rows, dw_drows;
    size_t dw_dplane, dw_cplane, dw_coff, dw_toff, dw_rowoff, dw_slot;
} rt_gemm;

typedef struct rt_op {
    rt_op_type type;
    char *name;
    int n_inputs, inputs[QAT_RT_MAX_INPUTS];
    int out_ndim, out_shape[3];
    size_t out_size;    /* per-sample elements */
    float out_scale;
    int32_t out_zp;
    /* input */
    float mean, std;
    int8_t lut[256];
    /* conv2d / linear: weight [oc, ic, kh, kw] (linear: [out, in], kh = kw = 1) */
    int oc, ic, kh, kw, stride, pad;
    int in_c, in_h, in_w; /* input geometry (linear: in_c = in features) */
    int32_t in_zp, act_min, act_max;
    int8_t *weight;     /* [oc, ic / groups, kh, kw] */
    int32_t *bias, *mult, *shift;
    float *weight_scale; /* optional, informational */
    int groups;         /* conv2d: >= 1 (1 for every other op) */
    int32_t *act_max_c; /* conv2d / linear: per-channel act_max [oc], or NULL */
    /* conv2d with groups > 1 that a fast depthwise kernel runs (3x3,
     * stride 1 or 2, one output channel per group): set by prepare */
    int dw_fast;
    /* how the file stored the weight (load.c decodes every encoding to
     * `weight` above): wenc a QAT_I8_WENC_* name (static), wbits 1..8
     * (codebook / hashed: index bits ceil(log2 K)), codebook_k K (0:
     * none), hash_seed (hashed), weight_stored bytes of the weight and
     * codebook datasets */
    const char *wenc;
    int wbits, codebook_k;
    uint32_t hash_seed;
    size_t weight_stored;
    /* add */
    int32_t add_mult[2], add_shift, add_zp[2];
    /* add, for the fast kernels (qat_rti_add_prepare): 0 use the reference,
     * 1 the 16-bit split (add_h/add_l: int16 pairs (m_a, m_b) high and low
     * parts, add_c = 2^(t-17), shift t - 16), 2 every output is
     * clamp(out_zp) (t >= 41) */
    int add_fast;
    int32_t add_h, add_l, add_c, add_sh;
    /* concat: per input (n_inputs of them) multiplier, shift, zero point,
     * and its channels (features of a flat input) */
    int32_t cat_mult[QAT_RT_MAX_INPUTS], cat_shift[QAT_RT_MAX_INPUTS], cat_zp[QAT_RT_MAX_INPUTS];
    int cat_c[QAT_RT_MAX_INPUTS];
    /* lut: the table in lut[] above (y = lut[x + 128]); upsample: the
     * factor in kernel */
    /* global_avgpool / avgpool2d / maxpool2d (stride in stride) */
    int kernel;
    int32_t pool_mult, pool_shift;
    size_t weight_bytes;
    /* prepared */
    rt_gemm g;
    /* float ops (load_float.c, float_ops.c; docs/FORMAT-int8.md "Float
     * ops"): fdt RT_DT_INT8 for the int8 ops above */
    int fdt;            /* output dtype (rt_dtype) */
    int wdt;            /* conv2d / linear: weight storage (rt_wdtype) */
    int relu;           /* conv2d / linear / add: fused ReLU */
    int act_row;        /* weight int8: per-sample activation quantization */
    float *fweight;     /* float32 / float16 weights as float32 [oc, ic*kh*kw] */
    uint16_t *hweight;  /* float16: the stored binary16 bits */
    float *fbias;       /* [oc] */
    int32_t *rowsum;    /* weight int8: sum over k of weight[o, k] */
    void *dpack;        /* weight int8, VNNI: packed weights (prepare) */
    int dpack_opad;     /* their output channels padded to 16 */
    float *fin[2];      /* prepared: an int8 input dequantized [max_batch, in size] */
    uint8_t *dq;        /* prepared, weight int8: quantized activations */
    float *dscale;      /* prepared, weight int8: [max_batch] scale of each row */
    int32_t *dzp;       /* and zero point */
    /* prepared, float32 / float16 weights, for the SIMD kernels
     * (float_ops_simd.c): fw the weights as double (conv [oc][K], linear
     * [ic][fopad], outputs padded with zeros to fopad, a multiple of 32),
     * fbd the bias as double ([oc] / [fopad]); conv: the input image
     * zero-padded and split into stride^2 phase planes of fhs x fws
     * doubles, fkoff[k] the offset of tap k = (ic, kh, kw) in it, output
     * q = oh * fws + ow at q + fkoff[k] (ow >= OW: lanes thrown away),
     * fqn = OH * fws positions, fimg doubles an image (with the slack the
     * last vectors read), fpad one image per slot */
    double *fw, *fbd, *fpad;
    int32_t *fkoff;
    int fopad, fhs, fws, fqn, fslots;
    size_t fimg;
} rt_op;

/* Output dtypes of ops, weight storage of float conv2d / linear. */
typedef enum { RT_DT_INT8 = 0, RT_DT_F32, RT_DT_F16, RT_DT_BF16 } rt_dtype;
typedef enum { RT_W_F32 = 0, RT_W_F16, RT_W_I8, RT_W_BF16 } rt_wdtype;

struct qat_rt_model {
    int n_ops;
    rt_op *ops;
    size_t payload_bytes;
    char *arch, *source;
    qat_rt_isa isa;     /* resolved: never AUTO */
    int threads;        /* resolved: >= 1 */
    /* prepared state */
    int max_batch;      /* 0: not prepared */
    int8_t **out;       /* [n_ops] per-op output buffers (flatten aliases) */
    uint8_t *scratch;   /* per-slot scratch, slots * slot_bytes */
    size_t slot_bytes;
    int slots;
    uint8_t *shared;    /* batch-wide scratch (linear: packed activations) */
    size_t shared_bytes;
    int has_float;      /* some op is a float op: float_ops.c runs the graph */
};

/* ---- loading (load.c) ---- */
int qat_rti_load(const void *image, size_t size, const char *path, qat_rt_model **out);
void qat_rti_free_ops(qat_rt_model *m);

/* ---- reference kernels (kernels_ref.c), integer only ----
 * Layouts as in docs/FORMAT-int8.md. All but linear and the input take one
 * sample (no threads inside); linear takes a batch of n and splits it over
 * `threads` OpenMP threads. conv2d (any groups) needs qat_rti_conv2d_ref_scratch bytes. */
void qat_rti_conv2d_ref(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *scratch);
size_t qat_rti_conv2d_ref_scratch(const rt_op *op);
void qat_rti_linear_ref(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads);
void qat_rti_add_s8(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y);
void qat_rti_global_avgpool_s8(const rt_op *op, const int8_t *x, int8_t *y);
/* global_avgpool's requantization of channels [c0, c0 + n) from sums[i],
 * the sum of x - zp over channel c0 + i's plane */
void qat_rti_global_avgpool_fin(const rt_op *op, const int32_t *sums, int c0, int n, int8_t *y);
void qat_rti_avgpool2d_s8(const rt_op *op, const int8_t *x, int8_t *y);
void qat_rti_maxpool2d_s8(const rt_op *op, const int8_t *x, int8_t *y);
void qat_rti_relu_s8(const rt_op *op, const int8_t *x, int8_t *y);
void qat_rti_input_u8(const rt_op *op, const uint8_t *p, int8_t *y, int n, int threads);
/* format version 3, one sample: y = table[x + 128], the concat of the
 * inputs xs[0 .. n_inputs), nearest-neighbour upsampling (grouped conv2d
 * is qat_rti_conv2d_ref with op->groups) */
void qat_rti_lut_s8(const rt_op *op, const int8_t *x, int8_t *y);
void qat_rti_concat_s8(const rt_op *op, const int8_t *const *xs, int8_t *y);
void qat_rti_upsample_s8(const rt_op *op, const int8_t *x, int8_t *y);
/* the upper clamp bound of output channel c of a conv2d / linear */
static inline int32_t qat_rti_act_hi(const rt_op *op, int c)
{
    return op->act_max_c ? op->act_max_c[c] : op->act_max;
}

/* Fills the add_* fields of an add op (prepare.c). */
void qat_rti_add_prepare(rt_op *op);

/* ---- float boundary (boundary.c) ---- */
/* returns the index of the first NaN in x (an error), or -1 */
long long qat_rti_input_f32(const rt_op *op, const float *x, int8_t *y, int n, int threads);

/* ---- epilogue helpers (prepare.c) ---- */
/* Fills g->epi for an op with `rows` channels padded to mpad; rowsum_corr
 * nonzero subtracts (128 + in_zp) * rowsum(weight) from the bias. Returns
 * QAT_OK or an error (effective bias outside int32, allocation). */
int qat_rti_epi_init(const rt_op *op, rt_gemm *g, int mpad, int rowsum_corr);
void qat_rti_gemm_free(rt_gemm *g);
/* Packed-input geometry and koff of a conv for the fast kernels: cpg
 * values per 4-byte cell, output vectors of `lanes` positions, esize bytes
 * per staged value (tap cells). */
int qat_rti_conv_geometry(const rt_op *op, rt_gemm *g, int cpg, int lanes, int esize);
/* weight index k within an output channel for element e of k group j, or -1 */
long qat_rti_conv_k(const rt_op *op, const rt_gemm *g, int cpg, int j, int e);
void *qat_rti_alloc(size_t bytes); /* 64-byte aligned, zeroed; NULL on failure */
void qat_rti_dealloc(void *p);

/* ---- float ops (load_float.c, float_ops.c) ---- */
/* Reads the rest of a float op (op->type, name, inputs, out_shape already
 * read; the group has the dtype attribute). src and where name the file
 * and the op in messages. */
int qat_rti_load_float_op(const char *src, const char *where, int64_t group, rt_op *ops, int i);
/* Frees what load_float.c allocated in op. */
void qat_rti_float_free_op(rt_op *op);
/* Bytes of one output element of op: 1 (int8) or 4 (float). */
size_t qat_rti_elem_bytes(const rt_op *op);
/* Plans / frees the float ops' prepared state (after the int8 ops'). */
int qat_rti_float_plan(qat_rt_model *m, int max_batch);
void qat_rti_float_unplan(qat_rt_model *m);
/* The input op into m->out[0] (float or int8 input op), then every op. */
void qat_rti_float_run_u8(qat_rt_model *m, const uint8_t *pixels, int n);
long long qat_rti_float_run_f32(qat_rt_model *m, const float *x, int n);
/* ops 1..N-1 over the input already in m->out[0] */
void qat_rti_float_run_ops(qat_rt_model *m, int n);
/* An int8 op (model.c) over the batch, for graphs float_ops.c runs. */
void qat_rti_run_int8_op(qat_rt_model *m, int i, int n);
/* Dynamic linear kernels (float_ops.c), exposed for the tests: the
 * portable one and the AVX-512 VNNI one (bit-identical). x [n, ic] float
 * quantized with the per-row scale/zp arrays (act_row) or scale[0]/zp[0]. */
void qat_rti_dyn_quantize(const rt_op *op, const float *x, int n, uint8_t *q, float *scale,
                          int32_t *zp);
void qat_rti_dyn_gemm_ref(const rt_op *op, const uint8_t *q, const float *scale,
                          const int32_t *zp, int n, float *y);
/* Float conv2d / linear (float32 / float16 weights). The portable
 * kernels: one image x [IC, H, W] -> y [OC, OH, OW]; rows [n0, n1) of
 * x [n, IN] -> y [n, OUT] (needs op->dpack, planned). */
void qat_rti_conv_float_ref(const rt_op *op, const float *x, float *y);
void qat_rti_linear_float_ref(const rt_op *op, const float *x, float *y, int n0, int n1);
/* The SIMD ones (float_ops_simd.c), bit-identical to those, isa AVX2 or
 * AVX512_VNNI (its AVX-512F part), op planned (fw, ...): the padded image
 * of x into pad (fimg doubles, its padding already zero); output positions
 * [q0, q1) of one image from its padded image (q0 a multiple of 32);
 * linear rows [n0, n1). Return 0 when the isa has no such kernel here. */
void qat_rti_fconv_pad(const rt_op *op, const float *x, double *pad);
/* fills fw, fbd (and conv: fkoff, fpad for `slots` images) of a float
 * conv2d / linear with float32 / float16 weights (float_ops.c); the float
 * unplan frees them */
int qat_rti_float_simd_plan(rt_op *op, int slots);
int qat_rti_fconv_simd(qat_rt_isa isa, const rt_op *op, const double *pad, float *y, int q0, int q1);
int qat_rti_flinear_simd(qat_rt_isa isa, const rt_op *op, const float *x, float *y, int n0, int n1);
int qat_rti_dyn_gemm_vnni(const rt_op *op, const uint8_t *q, const float *scale,
                          const int32_t *zp, int n, float *y); /* 0: not available */

/* ---- CPU features (cpu.c) ---- */
int qat_rti_cpu_has(qat_rt_isa isa);

/* ---- fast kernels: one table per ISA ---- */
typedef struct rt_isa_kernels {
    /* pack weights, geometry; allocates into op->g */
    int (*prepare_conv)(rt_op *op);
    int (*prepare_linear)(rt_op *op);
    /* bytes of per-slot scratch (conv) and batch scratch per sample (linear) */
    size_t (*conv_slot_bytes)(const rt_op *op);
    size_t (*linear_sample_bytes)(const rt_op *op);
    /* one image, on the calling thread, slot: conv_slot_bytes of scratch */
    void (*conv_image)(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot);
    /* n < threads images: the tiles of each image split over the threads;
     * image i uses slot i (scratch + i * slot_bytes) */
    void (*conv2d_split)(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                         uint8_t *scratch, size_t slot_bytes);
    /* a batch of n, split over the threads */
    void (*linear)(const rt_op *op, const int8_t *x, int8_t *y, int n, int threads,
                   uint8_t *shared);
    /* depthwise 3x3 stride 1/2 (groups == C == OC): prepare (fills op->g,
     * sets op->dw_fast; QAT_OK and dw_fast 0 when the op is not such a
     * conv), bytes of per-slot scratch, one image */
    int (*prepare_dw)(rt_op *op);
    size_t (*dw_slot_bytes)(const rt_op *op);
    void (*dw_image)(const rt_op *op, const int8_t *x, int8_t *y, uint8_t *slot);
    /* optional (NULL: the reference), one image */
    void (*maxpool_image)(const rt_op *op, const int8_t *x, int8_t *y);
    void (*add_image)(const rt_op *op, const int8_t *a, const int8_t *b, int8_t *y);
    void (*gap_image)(const rt_op *op, const int8_t *x, int8_t *y);
    void (*lut_image)(const rt_op *op, const int8_t *x, int8_t *y);
} rt_isa_kernels;

extern const rt_isa_kernels qat_rti_avx2;
extern const rt_isa_kernels qat_rti_vnni;

#endif
