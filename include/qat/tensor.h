/* qat/tensor.h: tensors, the per-step context (arena + tape), and the
 * differentiable ops.
 *
 * A step tensor lives in the context's arena: ops allocate their output
 * there, nobody frees it, qat_ctx_reset() ends the step. Parameters are
 * persistent tensors (qat_tensor_create) that own their data and gradient.
 * Every op that runs with gradients enabled on an input that requires them
 * records one tape entry; qat_backward() walks the tape in reverse and
 * *adds* into gradients. Parameter gradients accumulate across backward
 * calls until the caller zeroes them (qat_tensor_zero_grad / the optimizer).
 *
 * Ops given a NULL input return NULL without a new error, so a training
 * script can check once, at the loss. Shape errors set qat_last_error() and
 * return NULL. Layout is NCHW, float32.
 *
 * Nothing fails silently: a failure the caller cannot see in a return value
 * (an allocation in the arena, the tape or a gradient buffer, forward or
 * backward, and every failure inside a backward function) is recorded on
 * the context as its sticky error. The first one sticks until the step
 * ends: qat_backward returns it (and stops), qat_ctx_reset returns it, and
 * both put its message back into qat_last_error(). A step that failed has
 * incomplete gradients: do not take the optimizer step. */
#ifndef QAT_TENSOR_H
#define QAT_TENSOR_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_MAX_DIMS 4

typedef struct qat_tensor {
    float *data;     /* numel values, row-major */
    float *grad;     /* numel values or NULL (step tensors: allocated in backward) */
    int ndim;        /* 0 (scalar) .. 4 */
    int shape[QAT_MAX_DIMS];
    size_t numel;
    int requires_grad;
    int persistent;  /* owned by qat_tensor_create, freed by qat_tensor_free */
} qat_tensor;

/* ---- persistent tensors (parameters, buffers) ---- */

/* Allocates a zero-filled tensor; with requires_grad also a zeroed gradient.
 * Returns NULL (QAT_ERR_ARG / QAT_ERR_NOMEM) on bad shape or no memory. */
QAT_API qat_tensor *qat_tensor_create(int ndim, const int *shape, int requires_grad);
QAT_API void qat_tensor_free(qat_tensor *t); /* NULL is a no-op */
QAT_API void qat_tensor_zero_grad(qat_tensor *t);

/* ---- the step context ---- */

typedef struct qat_ctx qat_ctx;

/* arena_bytes: initial arena size (0 = 64 MiB); it grows as needed and
 * settles after the first step, so the training loop does not allocate. */
QAT_API qat_ctx *qat_ctx_create(size_t arena_bytes);
QAT_API void qat_ctx_free(qat_ctx *ctx);
/* Ends the step: every step tensor and tape entry is gone. Returns the
 * step's sticky error (QAT_OK if nothing failed since the last reset; else
 * the first failure's status, with its message in qat_last_error()) and
 * clears it. */
QAT_API int qat_ctx_reset(qat_ctx *ctx);
/* The sticky error: QAT_OK, or the status of the step's first failure. */
QAT_API int qat_ctx_status(const qat_ctx *ctx);
/* Records a failure on the context: if none is recorded yet, status and
 * the message now in qat_last_error() (set it first, e.g.
 * qat_ctx_fail(ctx, qat_error(...)) inside the library) become the sticky
 * error. A custom op's backward calls it when it cannot complete; the
 * library's arena, tape and qat_grad call it themselves. status QAT_OK is
 * a no-op. Returns status. Not thread-safe (as the arena): call it outside
 * parallel regions. */
QAT_API int qat_ctx_fail(qat_ctx *ctx, int status);
/* Gradient recording on (default) or off (evaluation). */
QAT_API void qat_ctx_set_grad(qat_ctx *ctx, int enabled);
QAT_API int qat_ctx_grad_enabled(const qat_ctx *ctx);
/* Training mode (default on): BN uses batch statistics and updates its
 * running averages. Off: running statistics. */
QAT_API void qat_ctx_set_training(qat_ctx *ctx, int training);
QAT_API int qat_ctx_training(const qat_ctx *ctx);
/* Gradients of step tensors that are outputs of ops live only while
 * backward needs them: once the op that produced a tensor has run its
 * backward, the tensor's grad is set to NULL and its memory reused (a few
 * tensors' worth of gradient memory instead of one per op). Leaves
 * (qat_new_leaf) and parameters keep theirs. retain 1 keeps every
 * intermediate gradient until qat_ctx_reset (for inspection). */
QAT_API void qat_ctx_set_retain_grads(qat_ctx *ctx, int retain);
/* Bytes of arena in use now / reserved. */
QAT_API size_t qat_ctx_arena_used(const qat_ctx *ctx);
QAT_API size_t qat_ctx_arena_reserved(const qat_ctx *ctx);

/* Uninitialised step tensor of the given shape. */
QAT_API qat_tensor *qat_new(qat_ctx *ctx, int ndim, const int *shape);
/* Step tensor holding a copy of data (numel floats). */
QAT_API qat_tensor *qat_from(qat_ctx *ctx, int ndim, const int *shape, const float *data);
/* Step tensor that must receive a gradient (for tests and input gradients). */
QAT_API qat_tensor *qat_new_leaf(qat_ctx *ctx, int ndim, const int *shape, const float *data);
/* Raw arena memory, 64-byte aligned, valid until reset. NULL when memory
 * runs out (QAT_ERR_NOMEM, recorded on the context). */
QAT_API void *qat_arena_alloc(qat_ctx *ctx, size_t bytes);

/* Backward from a scalar (numel 1) loss: d loss / d loss = 1.
 * Returns QAT_OK, or an error if loss is NULL / not scalar / an op on the
 * tape has no backward, or the context's sticky error: an op of the step
 * (before or during this backward) failed, e.g. QAT_ERR_NOMEM; backward
 * stops at the first failing backward function, gradients are then
 * incomplete. */
QAT_API int qat_backward(qat_ctx *ctx, qat_tensor *loss);

/* ---- ops ---- */

/* y[N,M] = x[N,K] w[M,K]^T + b[M] (b may be NULL) */
QAT_API qat_tensor *qat_linear(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b);
/* y[N,M] = a[N,K] b[K,M] */
QAT_API qat_tensor *qat_matmul(qat_ctx *ctx, qat_tensor *a, qat_tensor *b);
/* y = x + b broadcast along dim 1: x is [N,C] or [N,C,H,W], b is [C] */
QAT_API qat_tensor *qat_bias_add(qat_ctx *ctx, qat_tensor *x, qat_tensor *b);
/* elementwise, same shapes (residual add is qat_add) */
QAT_API qat_tensor *qat_add(qat_ctx *ctx, qat_tensor *a, qat_tensor *b);
QAT_API qat_tensor *qat_mul(qat_ctx *ctx, qat_tensor *a, qat_tensor *b);
QAT_API qat_tensor *qat_relu(qat_ctx *ctx, qat_tensor *x);
/* relu(a + b) in one op: the same values and gradients, bit for bit, as
 * qat_add then qat_relu, without the sum's tensor or the ReLU's passes
 * (qat_model_forward uses it where a ReLU is a residual add's only reader) */
QAT_API qat_tensor *qat_add_relu(qat_ctx *ctx, qat_tensor *a, qat_tensor *b);
/* x[N,C,H,W], w[OC,C,KH,KW], b[OC] or NULL -> [N,OC,OH,OW],
 * OH = (H + 2 pad - KH) / stride + 1 */
QAT_API qat_tensor *qat_conv2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b,
                               int stride, int pad);
/* Grouped convolution: x[N,C,H,W], w[OC,C/groups,KH,KW], b[OC] or NULL;
 * output channel o reads the input channels of its group g = o / (OC/groups),
 * [g*C/groups, (g+1)*C/groups). groups 1 is qat_conv2d; groups = C is a
 * depthwise convolution (a direct kernel, no im2col). */
QAT_API qat_tensor *qat_conv2d_grouped(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b,
                                       int stride, int pad, int groups);
/* y = min(max(x, lo), hi) (NaN stays NaN); gradient where lo < x < hi
 * (PyTorch's hardtanh; relu6 is clamp(0, 6)). */
QAT_API qat_tensor *qat_clamp(qat_ctx *ctx, qat_tensor *x, float lo, float hi);
/* The same with a per-channel upper bound: channel c (dim 1 of x) clamps
 * to [lo, hi_c[c]] (hi_c is copied). */
QAT_API qat_tensor *qat_clamp_channels(qat_ctx *ctx, qat_tensor *x, float lo, const float *hi_c);
/* PyTorch's hardswish: x * min(max(x + 3, 0), 6) / 6; gradient 0 for
 * x < -3, x / 3 + 0.5 for -3 <= x <= 3, 1 above. */
QAT_API qat_tensor *qat_hardswish(qat_ctx *ctx, qat_tensor *x);
/* PyTorch's hardsigmoid: min(max(x + 3, 0), 6) / 6; gradient 1/6 for
 * -3 < x < 3, else 0. */
QAT_API qat_tensor *qat_hardsigmoid(qat_ctx *ctx, qat_tensor *x);
/* Concatenation along dim 1: [N,Ca,H,W] + [N,Cb,H,W] -> [N,Ca+Cb,H,W]
 * (or [N,Fa] + [N,Fb] -> [N,Fa+Fb]). */
QAT_API qat_tensor *qat_concat(qat_ctx *ctx, qat_tensor *a, qat_tensor *b);
/* Nearest neighbour: [N,C,H,W] -> [N,C,H*f,W*f], y[.,.,h,w] = x[.,.,h/f,w/f]. */
QAT_API qat_tensor *qat_upsample_nearest(qat_ctx *ctx, qat_tensor *x, int factor);
/* k x k windows, given stride, no padding -> [N,C,(H-k)/s+1,(W-k)/s+1] */
QAT_API qat_tensor *qat_maxpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride);
/* PyTorch's max_pool2d(x, k, stride, padding=pad, return_indices=True):
 * x padded by pad (0 <= pad <= k/2) on each side with -inf, so the padding
 * never wins -> [N,C,(H+2pad-k)/s+1,(W+2pad-k)/s+1]. If indices is not NULL
 * it gets an arena array (valid until qat_ctx_reset; do not modify) of one
 * int32 per output element: the flat index h*W + w of the maximum within
 * its input plane (PyTorch's indices). Ties go to the first maximum in
 * row-major window order, as PyTorch; a NaN is selected only when it is
 * the first element of its window (PyTorch propagates every NaN). The
 * gradient goes to the selected element. With pad 0 the values and
 * gradients are qat_maxpool2d's, bit for bit. */
QAT_API qat_tensor *qat_maxpool2d_ex(qat_ctx *ctx, qat_tensor *x, int k, int stride, int pad,
                                     const int32_t **indices);
QAT_API qat_tensor *qat_avgpool2d(qat_ctx *ctx, qat_tensor *x, int k, int stride);
/* [N,C,H,W] -> [N,C] */
QAT_API qat_tensor *qat_global_avgpool(qat_ctx *ctx, qat_tensor *x);
/* Batch norm over (N,H,W) per channel. Training mode: batch statistics
 * (biased variance for normalising), running_mean/var updated with the
 * unbiased variance: r = (1-momentum) r + momentum batch (PyTorch).
 * Evaluation mode: running statistics. running_* are [C] buffers. */
QAT_API qat_tensor *qat_batchnorm2d(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma,
                                    qat_tensor *beta, qat_tensor *running_mean,
                                    qat_tensor *running_var, float momentum, float eps);
/* relu(batchnorm2d(x)) in one op: the same values, running statistics and
 * gradients, bit for bit, as the two ops, without BN's output tensor or
 * the ReLU's passes over memory (qat_model_forward uses it where a ReLU is
 * a BN's only reader). */
QAT_API qat_tensor *qat_batchnorm2d_relu(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma,
                                         qat_tensor *beta, qat_tensor *running_mean,
                                         qat_tensor *running_var, float momentum, float eps);
/* clamp(batchnorm2d(x), lo, hi) (hi_c NULL) or qat_clamp_channels(
 * batchnorm2d(x), lo, hi_c), and hardswish(batchnorm2d(x)), each in one
 * op: the same values, running statistics and gradients, bit for bit, as
 * the two ops (qat_model_forward uses them where the activation is the
 * BN's only reader). */
QAT_API qat_tensor *qat_batchnorm2d_clamp(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma,
                                          qat_tensor *beta, qat_tensor *running_mean,
                                          qat_tensor *running_var, float momentum, float eps,
                                          float lo, float hi, const float *hi_c);
QAT_API qat_tensor *qat_batchnorm2d_hardswish(qat_ctx *ctx, qat_tensor *x, qat_tensor *gamma,
                                              qat_tensor *beta, qat_tensor *running_mean,
                                              qat_tensor *running_var, float momentum, float eps);
/* y = x * s[c] (divide 0) or x / s[c] (divide 1), where c indexes axis
 * `axis` of x and s is [x->shape[axis]]. Gradients flow to x and s.
 * (BN folding: W * gamma/sigma per output channel, y / sf per channel.) */
QAT_API qat_tensor *qat_channel_mul(qat_ctx *ctx, qat_tensor *x, qat_tensor *s, int axis,
                                    int divide);
/* Same data, new shape (numel must match). */
QAT_API qat_tensor *qat_reshape(qat_ctx *ctx, qat_tensor *x, int ndim, const int *shape);
/* [N, ...] -> [N, rest] */
QAT_API qat_tensor *qat_flatten(qat_ctx *ctx, qat_tensor *x);
/* Sum of all elements -> scalar. */
QAT_API qat_tensor *qat_sum(qat_ctx *ctx, qat_tensor *x);
/* Mean over the batch of softmax cross-entropy; logits [N,C], labels in
 * [0,C). Numerically stable (log-sum-exp). -> scalar */
QAT_API qat_tensor *qat_cross_entropy(qat_ctx *ctx, qat_tensor *logits, const uint8_t *labels);
/* Number of rows whose argmax (first maximum) equals the label. No tape. */
QAT_API int qat_count_correct(const qat_tensor *logits, const uint8_t *labels);

/* ---- extending: custom ops ----
 * An op computes its output, then (if qat_needs_grad says so) records a
 * backward closure. backward reads out->grad and adds into the inputs'
 * gradients obtained with qat_grad(). A backward that cannot complete (no
 * memory for its scratch) records it with qat_ctx_fail; a NULL from
 * qat_grad or qat_arena_alloc is recorded already (qat_grad's NULL for a
 * tensor that needs no gradient is not a failure). */
typedef struct qat_tape_entry qat_tape_entry;
typedef void (*qat_backward_fn)(qat_ctx *ctx, const qat_tape_entry *e);
struct qat_tape_entry {
    const char *name;
    qat_backward_fn backward;
    qat_tensor *out;
    qat_tensor *in[4];
    void *saved; /* arena memory the op saved for backward */
    int release; /* out's gradient is dead after this backward: out was new
                  * here (not a leaf, parameter or an earlier entry's out) */
};

/* True when gradients are enabled and any of the n inputs requires them. */
QAT_API int qat_needs_grad(const qat_ctx *ctx, int n, qat_tensor *const *in);
/* Records a tape entry and marks out as requiring grad. saved may be NULL.
 * out is normally the op's new output; an entry recorded on a tensor that
 * already requires a gradient (a leaf, or another entry's out, e.g. a
 * marker) runs its backward without ending that gradient's life.
 * Returns QAT_OK or QAT_ERR_NOMEM / QAT_ERR_ARG (recorded on the context). */
QAT_API int qat_tape_record(qat_ctx *ctx, const char *name, qat_backward_fn fn,
                            qat_tensor *out, int n_in, qat_tensor *const *in,
                            void *saved);
/* The gradient buffer of t, allocated zero-filled in the arena on first use;
 * NULL if t does not require a gradient, or (recorded on the context) if
 * memory ran out. */
QAT_API float *qat_grad(qat_ctx *ctx, qat_tensor *t);

/* Longest layer or unit name, with its terminating zero. */
#define QAT_NAME_MAX 64

/* A tensor with a name: a model's parameters ("features.0.weight") and
 * buffers, a qmodel's learnable quantization parameters; what optimizers
 * and checkpoints take. no_decay excludes it from weight decay by default;
 * layer is the owning layer's index (-1 if none). */
typedef struct qat_named_tensor {
    char name[QAT_NAME_MAX + 16];
    qat_tensor *t;
    int no_decay;
    int layer; /* owning layer index */
} qat_named_tensor;

#ifdef __cplusplus
}
#endif
#endif
