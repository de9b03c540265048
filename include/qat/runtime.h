/* qat/runtime.h: the integer-only inference runtime.
 *
 * Loads an int8 model file (docs/FORMAT-int8.md) from a path or from a
 * memory buffer and runs it with int8 activations, int8 weights and
 * int32/int64 arithmetic only; float appears only at the boundary
 * (quantizing float inputs, dequantizing logits). A deployment links only
 * runtime/ (and HDF5 to read the file): nothing from training.
 *
 *   qat_rt_model *rt;
 *   if (qat_rt_load_file("model.int8.h5", &rt)) die(qat_rt_last_error());
 *   qat_rt_prepare(rt, 128);                   // plans buffers for batches <= 128
 *   int8_t logits[128 * 10];
 *   qat_rt_run_u8(rt, pixels, 128, logits);    // raw uint8 pixels through the LUT
 *   qat_rt_free(rt);
 *
 * Validation happens once, at load: every dataset's type, shape and range
 * (zero points in [-128,127], multipliers in [2^30,2^31) or 0, shifts in
 * [-31,30], inputs of earlier ops, shapes consistent along the graph). A
 * malformed or truncated file is an error with a message, never a crash.
 * The run path never allocates (after qat_rt_prepare) and never fails on a
 * valid model. Status codes are qat/core.h's. */
#ifndef QAT_RUNTIME_H
#define QAT_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the runtime's last failing call on this thread ("" if none). */
QAT_API const char *qat_rt_last_error(void);

typedef struct qat_rt_model qat_rt_model;

QAT_API int qat_rt_load_file(const char *path, qat_rt_model **out);
/* From an in-memory copy of the file (targets without a file system). The
 * buffer may be freed after the call. */
QAT_API int qat_rt_load_memory(const void *data, size_t size, qat_rt_model **out);
QAT_API void qat_rt_free(qat_rt_model *m); /* NULL is a no-op */

/* Plans activation buffers for batches of up to max_batch images (the
 * only allocation after load). Run calls with n <= max_batch. */
QAT_API int qat_rt_prepare(qat_rt_model *m, int max_batch);

/* Inference on n images; logits [n, classes] int8. Inputs: raw uint8
 * pixels [n,C,H,W] (through the input LUT), float inputs (already
 * normalised, quantized with the input scale), or int8 already on the
 * input grid. Return QAT_OK, or QAT_ERR_ARG for n outside [1, max_batch]
 * / NULL pointers / not prepared. */
QAT_API int qat_rt_run_u8(qat_rt_model *m, const uint8_t *pixels, int n, int8_t *logits);
QAT_API int qat_rt_run_f32(qat_rt_model *m, const float *x, int n, int8_t *logits);
QAT_API int qat_rt_run_s8(qat_rt_model *m, const int8_t *xq, int n, int8_t *logits);

/* Model facts. */
QAT_API void qat_rt_input_shape(const qat_rt_model *m, int shape[3]);
QAT_API int qat_rt_num_classes(const qat_rt_model *m);
QAT_API float qat_rt_output_scale(const qat_rt_model *m);
QAT_API int32_t qat_rt_output_zero_point(const qat_rt_model *m);
/* real logits = (q - zp) * scale, n values */
QAT_API void qat_rt_dequantize(const qat_rt_model *m, const int8_t *q, size_t n, float *out);

/* Ops, for inspection and per-layer comparison. */
typedef struct qat_rt_op_info {
    const char *type;      /* "conv2d", ... */
    const char *name;      /* source layer name */
    int n_inputs, inputs[2];
    int out_ndim, out_shape[3];
    float out_scale;
    int32_t out_zero_point;
    size_t weight_bytes;   /* bytes of int8 weights + int32 bias/multiplier/shift */
} qat_rt_op_info;
QAT_API int qat_rt_num_ops(const qat_rt_model *m);
QAT_API int qat_rt_op(const qat_rt_model *m, int i, qat_rt_op_info *info);
/* The int8 output of op i from the last run ([n, per-sample shape]). */
QAT_API const int8_t *qat_rt_op_output(const qat_rt_model *m, int i);
/* Sum of the bytes of every dataset in the file (the payload). */
QAT_API size_t qat_rt_payload_bytes(const qat_rt_model *m);

/* Kernels: the portable C reference, or the fast paths chosen at run time
 * from the CPU (AVX2, AVX-512 VNNI). All give bit-identical results. */
typedef enum {
    QAT_RT_ISA_AUTO = 0,
    QAT_RT_ISA_REF,
    QAT_RT_ISA_AVX2,
    QAT_RT_ISA_AVX512_VNNI,
    QAT_RT_ISA_COUNT
} qat_rt_isa;
/* Forces a kernel family (QAT_ERR_UNSUPPORTED if the CPU lacks it). */
QAT_API int qat_rt_set_isa(qat_rt_model *m, qat_rt_isa isa);
QAT_API qat_rt_isa qat_rt_get_isa(const qat_rt_model *m);
QAT_API const char *qat_rt_isa_name(qat_rt_isa isa);
/* Best ISA this CPU supports. */
QAT_API qat_rt_isa qat_rt_best_isa(void);
/* Threads for runs (OpenMP); <= 0: all processors. */
QAT_API void qat_rt_set_threads(qat_rt_model *m, int n);

#ifdef __cplusplus
}
#endif
#endif
