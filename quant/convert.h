/* quant/convert.h: a qmodel's int8 graph, built in memory by
 * quant/convert.c and written by io/export.c (docs/FORMAT-int8.md). Not
 * installed. */
#ifndef QAT_QUANT_CONVERT_H
#define QAT_QUANT_CONVERT_H

#include <stdint.h>

#include "qat/quant.h"

/* One op of the int8 graph. type is one of qat/format_int8.h's
 * QAT_I8_OP_* names. */
enum { QAT_I8W_DENSE = 0, QAT_I8W_PACKED, QAT_I8W_CODEBOOK, QAT_I8W_HASHED };

typedef struct qat_i8op {
    const char *type;
    char name[QAT_NAME_MAX];
    int n_inputs, inputs[2];
    int out_ndim, out_shape[3];
    float out_scale;
    int32_t out_zp;
    int32_t act_min, act_max;
    /* conv2d / linear (ic: all input channels; the weight has ic / groups);
     * maxpool2d / avgpool2d: k, stride; upsample: k = the factor */
    int oc, ic, k, stride, pad, groups;
    int32_t *act_max_channel; /* [oc] per-channel upper bounds (a clamp with per-channel bounds), or NULL */
    int8_t *weight; /* [oc, ...] int8, always expanded (every encoding below decodes to it) */
    /* how the weights are stored (format version 2):
     * wbits: 1..8; the int8 weights lie in [-(2^(b-1) - 1), 2^(b-1) - 1]
     *   (narrow), and for 1 bit in {-1, +1} (binary, sign(0) = +1);
     * wenc: QAT_I8W_DENSE (int8, one a byte: what version 1 wrote),
     *   QAT_I8W_PACKED (wbits-bit two's complement codes, 1 bit: 1 = +1,
     *   0 = -1), QAT_I8W_CODEBOOK (indices into codebook[codebook_k]),
     *   QAT_I8W_HASHED (weight[i] = codebook[qat_i8_hash_bucket(hash_seed,
     *   i, codebook_k)], no indices stored). */
    int wbits, wenc, codebook_k;
    int8_t *codebook; /* [codebook_k], codebook and hashed only */
    unsigned hash_seed;
    int32_t *bias, *mult, *shift;
    float *wscale;
    int32_t in_zp;
    /* add */
    int32_t add_m[2], add_zp[2], add_t;
    /* pools */
    int32_t pool_m, pool_shift;
    /* concat: per input, requant(x - cat_zp[k], cat_m[k], cat_shift[k]) */
    int32_t cat_m[2], cat_shift[2], cat_zp[2];
    /* input */
    float mean, std;
    int8_t lut[256]; /* input: the pixel LUT; lut (act units): the table, y = lut[x + 128] */
} qat_i8op;

typedef struct qat_i8graph {
    qat_i8op *ops;
    int n;   /* ops built */
    int cap; /* ops allocated (zeroed: an op that failed half-built is freed too) */
    const char *arch; /* borrowed from the float model */
} qat_i8graph;

/* Converts qm (calibrated or trained; every unit quantized, <= 8 bits) to
 * its int8 graph; mean/std: the input normalisation the LUT applies.
 * QAT_ERR_UNSUPPORTED / QAT_ERR_STATE naming the unit, QAT_ERR_NOMEM. On
 * failure *g is freed and zeroed. */
int qat_convert_int8(qat_qmodel *qm, float mean, float std, qat_i8graph *g);
void qat_i8graph_free(qat_i8graph *g);

/* A qmodel whose units are all fp16 (or all bf16) to its graph of float16
 * (bfloat16) ops (quant/convert_float.c; written by qat_dg_write).
 * QAT_ERR_UNSUPPORTED naming the unit for a mix, QAT_ERR_NOMEM. */
struct qat_dynmodel;
int qat_convert_float16(qat_qmodel *qm, float mean, float std, struct qat_dynmodel **out);

/* The integer arithmetic of a conv/linear unit, shared by the converter
 * and the integer-grid evaluation (quant/grid.c), from the folded weight
 * wf [C, per] and bias bf [C] (NULL: none), the input scale s_in, the
 * weight scales sw [C] and the output scale s_out. Per channel c:
 *   w_q[c, k]  = clamp(round(wf[c, k] / sw[c]), qmin, qmax)  (int8)
 *   b_scale[c] = s_in * sw[c]                                 (float32)
 *   b_q[c]     = round(bf[c] / b_scale[c]), saturated          (0 without bias)
 *   mult[c]    = s_in * sw[c] / s_out                         (double)
 * (binary, codebook and hashed weights: w_q from qat_quantizer_weight_ints).
 * Any output array may be NULL. QAT_ERR_NOMEM. */
int qat_conv_integer_form(const qat_quantizer *wq, const float *wf, const float *bf, int C, size_t per, float s_in,
                           const float *sw, float s_out, int8_t *w_q, int32_t *b_q, float *b_scale, double *mult);

#endif
