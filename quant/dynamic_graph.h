/* quant/dynamic_graph.h: the graph of float ops that quant/dynamic.c builds
 * and evaluates and io/export_float.c writes (docs/FORMAT-int8.md, "Float
 * ops"). Private; tests build synthetic graphs with it. */
#ifndef QAT_QUANT_DYNAMIC_GRAPH_H
#define QAT_QUANT_DYNAMIC_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "qat/dynamic.h"

typedef enum {
    DG_INPUT = 0,
    DG_CONV2D,
    DG_LINEAR,
    DG_ADD,
    DG_GLOBAL_AVGPOOL,
    DG_AVGPOOL2D,
    DG_MAXPOOL2D,
    DG_RELU,
    DG_FLATTEN,
    DG_COUNT
} dg_kind;

typedef enum { DG_W_F32 = 0, DG_W_F16, DG_W_I8, DG_W_BF16 } dg_wdtype;

typedef struct dg_op {
    dg_kind kind;
    char name[QAT_NAME_MAX];
    int n_in, in[2];
    int out_ndim, out_shape[3];
    size_t out_size;     /* per sample */
    int f16;             /* output dtype float16 (else float32) */
    int bf16;            /* output dtype bfloat16 (f16 then 0) */
    int relu;            /* conv2d / linear / add */
    /* conv2d / linear: weight [oc, ic, kh, kw] (linear kh = kw = 1) */
    dg_wdtype wdt;
    int act_row;         /* DG_W_I8 */
    int oc, ic, kh, kw, stride, pad;
    int kernel;          /* pools (stride in stride) */
    int in_c, in_h, in_w;
    float *w;            /* F32: the weights; F16: their binary16 values */
    uint16_t *w16;       /* F16: the bits */
    int8_t *w8;          /* I8 */
    float *wscale;       /* I8: [oc] */
    int32_t *rowsum;     /* I8: [oc] */
    float *bias;         /* [oc] float32 */
    float mean, std;     /* input */
} dg_op;

struct qat_dynmodel {
    char arch[QAT_NAME_MAX];
    int n;
    dg_op *ops;
};

/* op's out_ndim / out_shape from layer l's output. */
void qat_dg_set_shape(dg_op *op, const qat_layer *l);
/* qat_dynmodel_build with a status. */
int qat_dg_build(const qat_model *m, const qat_dynamic_opts *o, qat_dynmodel **out);
/* An empty graph of capacity n ops (ops zeroed); NULL on failure. */
qat_dynmodel *qat_dg_create(int n);
/* Fills the shape-derived fields (out_size, in_c/h/w, ic of linear,
 * rowsum of int8 weights) after the caller set kind, inputs, out_shape
 * and weights; QAT_ERR_ARG on an inconsistent op. */
int qat_dg_finish(qat_dynmodel *d);
/* Per-channel symmetric narrow int8 of w [oc, k] (dynamic.c). */
int qat_dg_quantize_weights(dg_op *op);
/* binary16 of w in place, bits into w16 */
int qat_dg_half_weights(dg_op *op);
/* Writes d as an int8 model file with float ops (io/export_float.c). */
int qat_dg_write(const qat_dynmodel *d, const char *path, const char *source);

#endif
