/* qat/dynamic.h: dynamic quantization (PyTorch's quantize_dynamic) and the
 * float path of the runtime.
 *
 * A float model's linear layers (and, optionally, its convolutions) get
 * int8 weights, quantized once per output channel, or binary16 weights;
 * their activations are quantized at run time, per call, from their own
 * range; no calibration data. Every other layer stays float32 (BN folded
 * into the conv before it, ReLU fused into the layer before it).
 *
 *   qat_dynamic_opts o = qat_dynamic_opts_defaults();     // w8, linear, per tensor
 *   qat_dynmodel *d = qat_dynmodel_build(m, &o);          // m: a trained float model
 *   qat_dynmodel_forward_u8(d, pixels, n, logits);        // float32 logits [n, classes]
 *   qat_export_dynamic(m, &o, "model.dyn.h5", NULL);      // the same graph for the runtime
 *
 * qat_dynmodel_forward_u8 and the runtime (qat_rt_run_u8_float on the
 * exported file) compute the same bits: both follow docs/FORMAT-int8.md,
 * "Float ops", to the rounding (sums in double in a fixed order, an exact
 * int32 GEMM, a float32 epilogue in a fixed order). The arithmetic and how
 * it differs from PyTorch's: docs/QUANT.md, "Dynamic quantization". */
#ifndef QAT_DYNAMIC_H
#define QAT_DYNAMIC_H

#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The root attribute qat_format of a checkpoint made by `qat ptq --dynamic`:
 * a float checkpoint's /model plus a /dynamic group of the options. */
#define QAT_FORMAT_DYNAMIC_CHECKPOINT "dynamic-checkpoint"

typedef enum { QAT_DYN_W8 = 0, QAT_DYN_FP16 } qat_dyn_weights;

typedef struct qat_dynamic_opts {
    qat_dyn_weights weights; /* int8 per output channel (narrow, symmetric) or binary16 */
    int all_layers;          /* 0: linear layers only (default); 1: convolutions too */
    int act_row;             /* 0: one activation scale per call (default, as PyTorch);
                              * 1: one per sample (results independent of the batch) */
} qat_dynamic_opts;

/* w8, linear layers, per tensor. */
QAT_API qat_dynamic_opts qat_dynamic_opts_defaults(void);
/* From the command-line words: quant "w8" | "fp16", layers "linear" |
 * "all", act "tensor" | "row" (NULL keeps the default). QAT_ERR_ARG with
 * a message listing the choices. */
QAT_API int qat_dynamic_opts_parse(qat_dynamic_opts *o, const char *quant, const char *layers,
                                   const char *act);
/* "w8" / "fp16", "linear" / "all", "tensor" / "row" */
QAT_API const char *qat_dynamic_weights_name(qat_dyn_weights w);

typedef struct qat_dynmodel qat_dynmodel;

/* The dynamically quantized graph of float model m (which must store its
 * input normalisation). NULL and QAT_ERR_UNSUPPORTED for a layer it cannot
 * take (a BN that does not follow a conv), QAT_ERR_ARG, QAT_ERR_NOMEM. */
QAT_API qat_dynmodel *qat_dynmodel_build(const qat_model *m, const qat_dynamic_opts *o);
QAT_API void qat_dynmodel_free(qat_dynmodel *d); /* NULL is a no-op */
/* Logits [n, classes] float32 of n images of raw uint8 pixels [n, C, H, W]
 * (normalised as the runtime's float input op does). One call is one
 * runtime call: with per-tensor activations the n images share a scale. */
QAT_API int qat_dynmodel_forward_u8(const qat_dynmodel *d, const uint8_t *pixels, int n, float *logits);
QAT_API int qat_dynmodel_num_classes(const qat_dynmodel *d);
QAT_API int qat_dynmodel_num_ops(const qat_dynmodel *d);

/* A dynamic checkpoint: m (as a float checkpoint stores it) and o. */
QAT_API int qat_dynamic_save(const char *path, const qat_model *m, const qat_dynamic_opts *o);
/* The model and options of a dynamic checkpoint; NULL on failure. */
QAT_API qat_model *qat_dynamic_load(const char *path, qat_dynamic_opts *o);
/* Writes the graph of qat_dynmodel_build(m, o) as an int8 model file with
 * float ops (format version 2); source recorded (may be NULL). Atomic. */
QAT_API int qat_export_dynamic(const qat_model *m, const qat_dynamic_opts *o, const char *path,
                               const char *source);

#ifdef __cplusplus
}
#endif
#endif
