/* qat/model.h: models as graphs of layers.
 *
 * A model is a directed acyclic graph of layers kept in topological order:
 * layer 0 is the input, each builder call appends a layer that reads earlier
 * layers, and the last layer added is the output. This one representation is
 * what training runs, what checkpoints store, and what quantization and
 * export walk, so any model built with this API can be quantized, saved and
 * converted, not only the reference models.
 *
 *   qat_model *m = qat_model_create(1, 28, 28);
 *   qat_model_set_prefix(m, "features");          // names "features.0", ...
 *   int x = qat_model_conv2d(m, NULL, 0, 6, 5, 1, 2, 0);
 *   x = qat_model_batchnorm2d(m, NULL, x);
 *   x = qat_model_relu(m, NULL, x);
 *   ...
 *   qat_model_init(m, seed);                       // PyTorch default init
 *
 * Builders return the new layer's index (>= 0) or a negative status (a
 * previous failure is passed through, so the chain can be checked once). */
#ifndef QAT_MODEL_H
#define QAT_MODEL_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QAT_LAYER_INPUT = 0,
    QAT_LAYER_CONV2D,
    QAT_LAYER_LINEAR,
    QAT_LAYER_BATCHNORM2D,
    QAT_LAYER_RELU,
    QAT_LAYER_MAXPOOL2D,
    QAT_LAYER_AVGPOOL2D,
    QAT_LAYER_GLOBAL_AVGPOOL,
    QAT_LAYER_FLATTEN,
    QAT_LAYER_ADD,
    QAT_LAYER_CLAMP,       /* "clamp": min(max(x, lo), hi) (relu6: [0, 6]) */
    QAT_LAYER_HARDSWISH,   /* "hardswish": x * relu6(x + 3) / 6 */
    QAT_LAYER_HARDSIGMOID, /* "hardsigmoid": relu6(x + 3) / 6 */
    QAT_LAYER_CONCAT,      /* "concat": two inputs along channels (features) */
    QAT_LAYER_UPSAMPLE,    /* "upsample": nearest neighbour, factor in `kernel` */
    QAT_LAYER_COUNT
} qat_layer_type;

/* "conv2d", "linear", ... (the names stored in files); NULL if out of range */
QAT_API const char *qat_layer_type_name(qat_layer_type t);
/* inverse of qat_layer_type_name; -1 if unknown */
QAT_API int qat_layer_type_from_name(const char *name);

typedef struct qat_layer {
    qat_layer_type type;
    char name[QAT_NAME_MAX];
    int n_inputs;       /* 0 (input), 1, or 2 (add, concat) */
    int inputs[2];      /* indices of earlier layers */
    int out_ndim;       /* per-sample output shape: 3 (C,H,W) or 1 (F) */
    int out_shape[3];
    /* hyperparameters */
    int in_ch, out_ch;  /* conv: channels; linear: features */
    int kernel, stride, pad; /* conv, pools; upsample: kernel = factor */
    int groups;         /* conv: channel groups (1: dense; in_ch: depthwise) */
    int has_bias;
    float clamp_lo, clamp_hi; /* clamp bounds */
    float bn_eps, bn_momentum;
    /* parameters (NULL where the layer has none) */
    qat_tensor *weight; /* conv [OC,C/groups,K,K]; linear [OUT,IN]; bn gamma [C] */
    qat_tensor *bias;   /* conv/linear [OC]; bn beta [C] */
    qat_tensor *running_mean, *running_var; /* bn buffers [C], no grad */
    int64_t num_batches_tracked;            /* bn */
    /* clamp: per-channel upper bounds [C] (a buffer "<layer>.clamp_hi", no
     * grad) or NULL; channel c then clamps to [clamp_lo, clamp_hi_c[c]] */
    qat_tensor *clamp_hi_c;
} qat_layer;

typedef struct qat_model qat_model;

/* A model whose input is one image of (c, h, w) (layer 0). */
QAT_API qat_model *qat_model_create(int c, int h, int w);
QAT_API void qat_model_free(qat_model *m);

/* Automatic names: a layer added with name NULL is called "<prefix>.<k>"
 * (k counts the layers added under that prefix, as in nn.Sequential), or
 * "<k>" with no prefix. */
QAT_API void qat_model_set_prefix(qat_model *m, const char *prefix);

QAT_API int qat_model_conv2d(qat_model *m, const char *name, int in, int out_ch,
                             int kernel, int stride, int pad, int bias);
QAT_API int qat_model_linear(qat_model *m, const char *name, int in, int out_features,
                             int bias);
QAT_API int qat_model_batchnorm2d(qat_model *m, const char *name, int in);
QAT_API int qat_model_relu(qat_model *m, const char *name, int in);
QAT_API int qat_model_maxpool2d(qat_model *m, const char *name, int in, int kernel,
                                int stride);
QAT_API int qat_model_avgpool2d(qat_model *m, const char *name, int in, int kernel,
                                int stride);
QAT_API int qat_model_global_avgpool(qat_model *m, const char *name, int in);
QAT_API int qat_model_flatten(qat_model *m, const char *name, int in);
QAT_API int qat_model_add(qat_model *m, const char *name, int a, int b);
/* Convolution with channel groups: weight [out_ch, C/groups, k, k], C and
 * out_ch divisible by groups (depthwise: groups = C, out_ch a multiple of
 * C). qat_model_conv2d is groups 1. */
QAT_API int qat_model_conv2d_grouped(qat_model *m, const char *name, int in, int out_ch,
                                     int kernel, int stride, int pad, int groups, int bias);
/* y = min(max(x, lo), hi), lo <= hi (either may be infinite, not NaN). */
QAT_API int qat_model_clamp(qat_model *m, const char *name, int in, float lo, float hi);
/* clamp(0, 6) */
QAT_API int qat_model_relu6(qat_model *m, const char *name, int in);
/* Per-channel upper bounds of clamp layer `layer` (hi_c[c] >= clamp_lo for
 * each of its C channels, C = out_shape[0]): allocates the buffer
 * "<layer>.clamp_hi" (or overwrites it); NULL removes it. */
QAT_API int qat_layer_set_clamp_channels(qat_model *m, int layer, const float *hi_c);
QAT_API int qat_model_hardswish(qat_model *m, const char *name, int in);
QAT_API int qat_model_hardsigmoid(qat_model *m, const char *name, int in);
/* Concatenates a and b along channels (images of equal H, W) or features
 * (flat inputs): a's first. */
QAT_API int qat_model_concat(qat_model *m, const char *name, int a, int b);
/* Nearest-neighbour upsampling by an integer factor >= 1:
 * y[c, h, w] = x[c, h / factor, w / factor]. */
QAT_API int qat_model_upsample(qat_model *m, const char *name, int in, int factor);
/* Residual basic block (docs/MODELS.md): conv3x3(stride) BN ReLU conv3x3 BN,
 * plus shortcut (identity, or conv1x1(stride)+BN when the shape changes),
 * add, ReLU. Layers are named "<prefix>.conv1", ".bn1", ".relu1", ".conv2",
 * ".bn2", ".shortcut.0", ".shortcut.1", ".add", ".relu2". */
QAT_API int qat_model_basic_block(qat_model *m, const char *prefix, int in, int out_ch,
                                  int stride);

/* PyTorch default initialisation from a seed: conv/linear weights and
 * biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5);
 * fan_in = C/groups * K*K for a conv),
 * BN gamma 1, beta 0, running mean 0, var 1. */
QAT_API int qat_model_init(qat_model *m, uint64_t seed);

/* Reference models of docs/MODELS.md: "mlp", "lenet5", "convnet", "resnet8",
 * "mobilenet", "mobilenet-hs", initialised from seed. NULL + QAT_ERR_ARG for an unknown name. */
QAT_API qat_model *qat_model_build(const char *arch, uint64_t seed);
/* The arch name given to qat_model_build, or "custom". */
QAT_API const char *qat_model_arch(const qat_model *m);
QAT_API void qat_model_set_arch(qat_model *m, const char *arch);
/* The input normalisation of the data the model is trained on, x =
 * (pixel/255 - mean) / std: stored in checkpoints, and what the int8
 * export's input LUT applies. A new model has none (returns 0); training
 * sets it from its dataset. QAT_ERR_ARG unless std > 0 and both finite. */
QAT_API int qat_model_set_input_norm(qat_model *m, float mean, float std);
/* 1 and *mean, *std if the model has one, else 0. */
QAT_API int qat_model_input_norm(const qat_model *m, float *mean, float *std);

QAT_API int qat_model_num_layers(const qat_model *m);
QAT_API qat_layer *qat_model_layer(qat_model *m, int i);
QAT_API const qat_layer *qat_model_layer_c(const qat_model *m, int i);
/* index of the layer with that name, or -1 */
QAT_API int qat_model_find(const qat_model *m, const char *name);

/* Named tensors, in a fixed order. Parameters are trainable
 * ("features.0.weight"); buffers are BN running statistics
 * ("features.1.running_mean"). no_decay is set for biases and BN
 * parameters (excluded from weight decay by default). The lists are
 * rebuilt when a layer with parameters is added (a failure to do so is that
 * builder's QAT_ERR_NOMEM); the getters below never allocate. */

QAT_API int qat_model_num_params(const qat_model *m);
QAT_API const qat_named_tensor *qat_model_params(const qat_model *m);
QAT_API int qat_model_num_buffers(const qat_model *m);
QAT_API const qat_named_tensor *qat_model_buffers(const qat_model *m);
/* Total number of trainable scalars. */
QAT_API size_t qat_model_param_count(const qat_model *m);
QAT_API void qat_model_zero_grad(qat_model *m);

/* Runs the model on x [N,C,H,W] and returns the output ([N,classes]).
 * Training vs evaluation follows qat_ctx_training(). */
QAT_API qat_tensor *qat_model_forward(qat_ctx *ctx, qat_model *m, qat_tensor *x);
/* Same, returning every layer's output: an arena array of
 * qat_model_num_layers() tensors (index 0 is x). NULL on error. */
QAT_API qat_tensor **qat_model_forward_all(qat_ctx *ctx, qat_model *m, qat_tensor *x);

/* Runs one layer given its inputs' outputs (used by forward and by
 * quantization, which wraps it). */
QAT_API qat_tensor *qat_layer_forward(qat_ctx *ctx, qat_layer *l, qat_tensor *const *in);

#ifdef __cplusplus
}
#endif
#endif
