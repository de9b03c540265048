/* qat/qio.h: QAT and PTQ checkpoints (HDF5).
 *
 * A QAT/PTQ checkpoint is a float checkpoint (qat/io.h: graph, weights, BN
 * statistics, optimizer, training state, history) whose root attribute
 * qat_format is "qat-checkpoint", plus a /quant group holding every
 * quantization unit: its configuration, its quantizers' parameters
 * (scales, zero points, learnable scales), observer state, switches and
 * BN fold state. Layout: docs/FORMAT.md. */
#ifndef QAT_QIO_H
#define QAT_QIO_H

#include "format_int8.h"
#include "io.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_FORMAT_QAT_CHECKPOINT "qat-checkpoint"

/* How the quantized model was made (stored as /quant attributes). */
typedef struct qat_qrecipe {
    char method[8];      /* "qat" or "ptq" */
    char spec[32];       /* the --quant spec, e.g. "w8a8" */
    char calib[16];      /* calibrator name */
    int calib_size;      /* calibration images */
    int freeze_bn_after; /* epochs (QAT) */
    int freeze_observers_after;
} qat_qrecipe;

/* Writes qm (its float model, quantization state), o and st (may be NULL)
 * and the recipe (may be NULL) atomically to path. */
QAT_API int qat_qcheckpoint_save(const char *path, qat_qmodel *qm, qat_optim *o,
                                 const qat_train_state *st, const qat_qrecipe *r);

/* Rebuilds the float model and the quantized model stored in path; the
 * float model is returned in *float_model and must be freed after the
 * qmodel. st and r (may be NULL) receive the training state and recipe. */
QAT_API qat_qmodel *qat_qmodel_load(const char *path, qat_model **float_model,
                                    qat_train_state *st, qat_qrecipe *r);

/* ---- int8 export (docs/FORMAT-int8.md) ---- */

#define QAT_FORMAT_INT8_MODEL QAT_I8_FORMAT_NAME /* qat/format_int8.h */

typedef struct qat_export_opts {
    float mean, std;    /* input normalisation of pixels (for the input LUT); NaN: the model's */
    const char *source; /* recorded as the root attribute source (may be NULL) */
} qat_export_opts;

/* mean = std = NaN: the input normalisation stored with the model
 * (qat_model_input_norm: the training data's); no source. */
QAT_API qat_export_opts qat_export_opts_defaults(void);

/* Converts a calibrated/trained qmodel into an int8 model file: int8
 * weights per output channel, int32 biases on the s_in*s_w grid, fixed-point
 * multipliers and shifts, the parameters copied from the quantizers (never
 * recomputed), using the very folding the fake-quant forward uses. Every
 * unit must be quantized (no "float" override) with signed activations and
 * at most 8 bits. QAT_ERR_UNSUPPORTED names the first unit or layer that
 * cannot be converted; QAT_ERR_ARG when neither opts nor the model give the
 * input normalisation. Atomic write. */
QAT_API int qat_export_int8(qat_qmodel *qm, const char *path, const qat_export_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
