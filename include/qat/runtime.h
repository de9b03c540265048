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
 * [-31,30], inputs of earlier ops, shapes consistent along the graph, and
 * no int32 accumulator able to overflow). A malformed or truncated file is
 * an error with a message naming the op and the dataset or attribute
 * ("model.h5: ops/003 (features.0): dataset multiplier has 5 elements,
 * expected 6"), never a crash. Where an op repeats a value its input op
 * also stores (an in_zero_point), the op's own attribute is used, as the
 * format specifies. The run path never allocates (after qat_rt_prepare)
 * and never fails on a valid model and valid input. Errors go to qat's
 * thread-local last-error slot: qat_last_error() and qat_rt_last_error()
 * return the same message. Status codes, errors and the thread default
 * are qat/core.h's (core/, linked into libqat_runtime; the runtime links
 * nothing from training). A model runs one
 * call at a time (its buffers are shared): use one model per thread for
 * concurrent inference; each run is itself multi-threaded. Loading goes
 * through HDF5, which (in its usual, serial build) is not thread-safe: load
 * from one thread at a time. */
#ifndef QAT_RUNTIME_H
#define QAT_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the last failing call on this thread ("" if none); the
 * same as qat_last_error(). */
QAT_API const char *qat_rt_last_error(void);

typedef struct qat_rt_model qat_rt_model;

/* Loads and validates an int8 model file; *out is NULL on failure.
 * QAT_ERR_IO (cannot open), QAT_ERR_FORMAT (malformed, truncated, not an
 * int8 model), QAT_ERR_UNSUPPORTED (unknown op type, newer format_version),
 * QAT_ERR_NOMEM. The kernels start as qat_rt_best_isa(). */
QAT_API int qat_rt_load_file(const char *path, qat_rt_model **out);
/* From an in-memory copy of the file (targets without a file system). The
 * buffer may be freed after the call. Same errors as qat_rt_load_file. */
QAT_API int qat_rt_load_memory(const void *data, size_t size, qat_rt_model **out);
QAT_API void qat_rt_free(qat_rt_model *m); /* NULL is a no-op */

/* Plans activation buffers for batches of up to max_batch images (the
 * only allocation after load): one int8 buffer per op output of
 * [max_batch, per-sample shape], per-thread scratch, and the weights packed
 * for the chosen kernels. Run calls with n <= max_batch. May be called
 * again (re-plans). Range of max_batch: [1, 2^20]. */
QAT_API int qat_rt_prepare(qat_rt_model *m, int max_batch);

/* Inference on n images; logits [n, classes] int8. Inputs: raw uint8
 * pixels [n,C,H,W] (through the input LUT), float inputs (already
 * normalised, quantized with the input scale), or int8 already on the
 * input grid. Return QAT_OK, or QAT_ERR_ARG for n outside [1, max_batch]
 * / NULL pointers / not prepared / a NaN among the float inputs (the
 * format makes it an error; +-inf clamp to the input range). Results do not
 * depend on the kernels or the thread count. */
QAT_API int qat_rt_run_u8(qat_rt_model *m, const uint8_t *pixels, int n, int8_t *logits);
QAT_API int qat_rt_run_f32(qat_rt_model *m, const float *x, int n, int8_t *logits);
QAT_API int qat_rt_run_s8(qat_rt_model *m, const int8_t *xq, int n, int8_t *logits);

/* Model facts. */
/* Per-sample input shape (C, H, W); a flat input (F,) gives (F, 1, 1). */
QAT_API void qat_rt_input_shape(const qat_rt_model *m, int shape[3]);
/* Elements per sample of the last op's output (the logits). */
QAT_API int qat_rt_num_classes(const qat_rt_model *m);
/* Scale and zero point of the logits. */
QAT_API float qat_rt_output_scale(const qat_rt_model *m);
QAT_API int32_t qat_rt_output_zero_point(const qat_rt_model *m);
/* real logits = (q - zp) * scale in float32, n values */
QAT_API void qat_rt_dequantize(const qat_rt_model *m, const int8_t *q, size_t n, float *out);

/* Ops, for inspection and per-layer comparison. */
/* The most inputs an op may have (a concat; docs/FORMAT-int8.md). */
#define QAT_RT_MAX_INPUTS 16
typedef struct qat_rt_op_info {
    const char *type;      /* "conv2d", ... (valid while the model lives) */
    const char *name;      /* source layer name */
    int n_inputs, inputs[QAT_RT_MAX_INPUTS]; /* unused entries are -1 */
    int out_ndim, out_shape[3]; /* unused dimensions are 0 */
    float out_scale;
    int32_t out_zero_point;
    size_t weight_bytes;   /* bytes of int8 weights + int32 bias/multiplier/shift (0 if none) */
    /* conv2d / linear: how the file stores the weights (docs/FORMAT-int8.md,
     * "Weight encodings"); the runtime expands every encoding to int8 */
    const char *weight_encoding; /* "int8", "packed", "codebook", "hashed"; NULL: no weights */
    int weight_bits;       /* 1..8 (codebook / hashed: index bits, ceil(log2 K)); 0: no weights */
    int codebook_k;        /* codebook / hashed: K values; else 0 */
    uint32_t hash_seed;    /* hashed: the seed; else 0 */
    size_t weight_count;   /* weights (OC * IC * KH * KW); 0: none */
    size_t weight_stored_bytes; /* bytes the file stores for them (weight + codebook datasets) */
    const char *dtype;     /* output: "int8", "float32" or "float16" (float ops) */
    const char *weight_dtype; /* conv2d / linear: "int8" (int8 op, or dynamic quantization
                               * of a float op), "float32", "float16"; NULL for other ops */
    int dynamic;           /* 1: a float op with int8 weights, activations quantized at run time */
    const char *act_quant; /* dynamic: "tensor" or "row"; else NULL */
    int groups;            /* conv2d: its groups (format version 3); 1 for other ops */
    int act_max_channel;   /* conv2d / linear: 1 if it clamps per channel (act_max_channel) */
} qat_rt_op_info;
QAT_API int qat_rt_num_ops(const qat_rt_model *m);
/* Facts of op i in [0, num_ops); QAT_ERR_ARG outside. */
QAT_API int qat_rt_op(const qat_rt_model *m, int i, qat_rt_op_info *info);
/* The int8 output of op i from the last run ([n, per-sample shape], valid
 * until the next run, prepare or free; a flatten shares its input's
 * buffer). NULL before qat_rt_prepare, for i out of range, or for a float
 * op (qat_rt_op_output_f32). */
QAT_API const int8_t *qat_rt_op_output(const qat_rt_model *m, int i);
/* Sum over every dataset in the file of element count x element size (the
 * payload). */
QAT_API size_t qat_rt_payload_bytes(const qat_rt_model *m);

/* ---- float ops (format version 2: fp16 layers, dynamic quantization) ----
 * A model may hold float ops (docs/FORMAT-int8.md, "Float ops"): float32
 * tensors between them, float conv2d / linear with float32 or float16
 * weights, and dynamically quantized conv2d / linear (int8 weights,
 * activations quantized per run call from their own range, integer GEMM,
 * float32 epilogue). Such a model's logits may be float32: the int8 run
 * calls above then fail with QAT_ERR_ARG and these are used. */
typedef enum { QAT_RT_DTYPE_INT8 = 0, QAT_RT_DTYPE_FLOAT32 } qat_rt_dtype;
/* The logits' type: QAT_RT_DTYPE_INT8 for int8 models. */
QAT_API qat_rt_dtype qat_rt_output_dtype(const qat_rt_model *m);
/* Inference with float32 logits [n, classes]: a float model's own, or an
 * int8 model's dequantized ((q - zp) * scale). Inputs as qat_rt_run_u8 /
 * qat_rt_run_f32 (a float input op takes float inputs as they are, and
 * rounds them to binary16 if its dtype is float16). With activations
 * quantized per tensor ("tensor"), an image's logits depend on the other
 * images of the call, as in PyTorch's dynamic quantization. */
QAT_API int qat_rt_run_u8_float(qat_rt_model *m, const uint8_t *pixels, int n, float *logits);
QAT_API int qat_rt_run_f32_float(qat_rt_model *m, const float *x, int n, float *logits);
/* The float32 output of float op i from the last run (NULL for int8 ops,
 * before qat_rt_prepare, or i out of range). */
QAT_API const float *qat_rt_op_output_f32(const qat_rt_model *m, int i);

/* Kernels: the portable C reference, or the fast paths chosen at run time
 * from the CPU (AVX2, AVX-512 VNNI). All give bit-identical results. */
typedef enum {
    QAT_RT_ISA_AUTO = 0,
    QAT_RT_ISA_REF,
    QAT_RT_ISA_AVX2,
    QAT_RT_ISA_AVX512_VNNI,
    QAT_RT_ISA_COUNT
} qat_rt_isa;
/* Forces a kernel family (QAT_ERR_UNSUPPORTED if the CPU lacks it;
 * QAT_RT_ISA_AUTO: the best one). On a prepared model the weights are
 * repacked for it (if that fails the model is left unprepared). */
QAT_API int qat_rt_set_isa(qat_rt_model *m, qat_rt_isa isa);
/* The kernel family in use (never QAT_RT_ISA_AUTO). */
QAT_API qat_rt_isa qat_rt_get_isa(const qat_rt_model *m);
/* "auto", "ref", "avx2", "avx512_vnni". */
QAT_API const char *qat_rt_isa_name(qat_rt_isa isa);
/* Best ISA this CPU supports. */
QAT_API qat_rt_isa qat_rt_best_isa(void);
/* Threads for runs (OpenMP); <= 0: the QAT_NUM_THREADS environment
 * variable if set, else all processors (the default). qat_rt_prepare plans
 * scratch for max(processors, threads): more threads than processors must
 * be set before it, or runs use at most the planned number. */
QAT_API void qat_rt_set_threads(qat_rt_model *m, int n);

#ifdef __cplusplus
}
#endif
#endif
