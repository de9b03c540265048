/* Shared int8 pieces of the qat command: runtime evaluation, fake-quant
 * logits on the output grid, agreement, .npy files. */
#ifndef QAT_TOOLS_INT8_H
#define QAT_TOOLS_INT8_H

#include "qat/dynamic.h"
#include "qat/runtime.h"
#include "tools/cli.h"

/* Runs every image of ds through the runtime (uint8 pixels via the LUT);
 * logits [n * classes] malloc'd into *logits (may be NULL: not kept).
 * Fills accuracy and images/s (batch `batch`). */
int int8_evaluate(qat_rt_model *rt, const qat_dataset *ds, int batch, int8_t **logits, double *accuracy,
                  double *images_per_s);
/* The fake-quant model's logits on its output grid (int8 values), the
 * same images in the same order. */
int fq_logits(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int batch, int8_t **logits, double *accuracy);
/* The same for a model with float logits (fp16 units): the qmodel's float32 logits. */
int fq_float_logits(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int batch, float **logits, double *accuracy);

typedef struct agreement {
    double top1;          /* fraction of images with the same argmax */
    double logits;        /* fraction of identical int8 logits */
    int max_diff_steps;   /* largest |a - b| */
    long images, elements;
} agreement;
/* Per runtime op: how often its int8 output equals the fake-quant model's
 * output of the same layer (on that layer's grid), over the first n images
 * of ds. Errors accumulate along the graph, so the first op whose agreement
 * drops is where the two computations part. ops[] gets qat_rt_num_ops
 * entries; an op with no fake-quant counterpart has elements == 0. */
typedef struct op_agreement {
    const char *name, *type; /* the runtime's strings */
    double same;             /* fraction of identical int8 values */
    int max_diff_steps;
    long elements;
} op_agreement;
int int8_op_agreement(qat_rt_model *rt, qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, int batch,
                      op_agreement *ops);
void int8_agreement(const int8_t *a, const int8_t *b, long n, int classes, agreement *out);
int int8_argmax(const int8_t *v, int n);

/* .npy: reads uint8 [N,H,W] / [N,C,H,W] or float32 [N,C,H,W]; writes int8 [N,K]. */
typedef struct npy_array {
    int ndim, shape[4];
    int is_float; /* 0: uint8 */
    void *data;   /* malloc'd */
} npy_array;
int npy_read(const char *path, npy_array *out);
int npy_write_i8(const char *path, const int8_t *data, int rows, int cols);
int npy_write_f32(const char *path, const float *data, int rows, int cols);

/* ---- float logits: dynamic quantization and float ops ----
 * Both the library (qat_dynmodel_forward_u8) and the runtime run batches
 * of DYN_EVAL_BATCH images in file order, so per-tensor activation scales
 * (one per call) are the same on both sides. */
#define DYN_EVAL_BATCH 256
int float_argmax(const float *v, int n);
/* The runtime's float logits (qat_rt_run_u8_float) of every image of ds. */
int rt_float_evaluate(qat_rt_model *rt, const qat_dataset *ds, int batch, float **logits, double *accuracy,
                      double *images_per_s);
/* The library's (qat_dynmodel_forward_u8). */
int dyn_evaluate(const qat_dynmodel *d, const qat_dataset *ds, int batch, float **logits, double *accuracy);
/* top1: same argmax; logits: identical float32 bits. */
void float_agreement(const float *a, const float *b, long n, int classes, agreement *out);

#endif
