/* qat/io.h: HDF5 checkpoints of float training.
 *
 * A float checkpoint holds a model (its graph, its parameters and its BN
 * statistics), optionally the optimizer's state, and optionally the training
 * state (epoch, step, seeds, the batch iterator's position, the recipe and
 * the per-epoch history), so that an interrupted run resumes exactly. The
 * layout is plain HDF5 that h5py reads (docs/FORMAT.md):
 *
 *   /                  attrs qat_format = "float-checkpoint", format_version, arch
 *   /model/params/<name>    float32, the parameter's shape ("features.0.weight")
 *   /model/buffers/<name>   float32 running_mean / running_var, int64 num_batches_tracked
 *   /model/graph/...        one entry per layer: name, type, inputs, hyperparameters
 *   /optim/...              optimizer kind, hyperparameters, step counts, state buffers
 *   /train/..., /history/... training state and per-epoch history
 *
 *   // save after each epoch (atomic: a crash never leaves a half file)
 *   qat_checkpoint_save("run.h5", m, opt, &st);
 *   // resume: same arch, same optimizer options, then
 *   qat_checkpoint_load("run.h5", m, opt, &st);
 *   // or rebuild any model from the file alone
 *   qat_model *m2 = qat_model_load("run.h5");
 *
 * Every function returns QAT_OK / a negative status (or NULL) and sets
 * qat_last_error() to a message naming the file and the dataset or the
 * first difference found ("run.h5: checkpoint layer 1 'features.0' is conv2d
 * with 6 output channels, model has 32"). HDF5 prints nothing. */
#ifndef QAT_IO_H
#define QAT_IO_H

#include "core.h"
#include "data.h"
#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The root attribute qat_format of a float checkpoint. (QAT/PTQ
 * checkpoints and int8 models store their own kinds.) */
#define QAT_FORMAT_FLOAT_CHECKPOINT "float-checkpoint"
/* The format_version this build writes (and the newest it reads). */
#define QAT_FORMAT_VERSION 1

/* ---- training state ---- */

/* One line of training history. Accuracies are fractions in [0, 1]; a
 * value not measured (no validation split) is NaN. */
typedef struct qat_epoch_record {
    int epoch;                      /* 0-based epoch this line describes */
    double train_loss;              /* mean training loss over the epoch */
    double train_accuracy;
    double val_accuracy;
    double test_accuracy;
    double lr;                      /* lr of the epoch's last step */
    double train_images_per_s;      /* images / s in forward+backward+step */
    double train_images_per_s_wall; /* images / s of the whole epoch */
    double seconds;                 /* wall time of the epoch */
} qat_epoch_record;

/* The recipe the run was started with (what `qat train` was asked). */
typedef struct qat_recipe {
    char arch[QAT_NAME_MAX]; /* model architecture ("lenet5", "custom") */
    int epochs;              /* total epochs of the run */
    int batch_size;
    double lr;               /* base learning rate */
    double weight_decay;
    double momentum;
    int val_size;            /* images held out for validation */
    int train_limit;         /* the run used the first N training images (0: all) */
    int test_limit;          /* and the first N test images (0: all) */
    char data_dir[256];      /* where the data came from ("" if unknown) */
    /* staged QAT (qat/schedule.h); "" / 0 in runs without --schedule */
    char quant[32];          /* --quant as given ("" if none): the stages' default spec */
    char schedule[256];      /* canonical --schedule (qat_quant_schedule_format), "" if none */
    char overrides[1024];    /* the --override NAME=SPEC list, ','-joined (staged runs) */
    int stage;               /* 0-based stage the stored quantizers belong to */
} qat_recipe;

/* Everything besides the model and the optimizer that an exact resume
 * needs. A plain value except for the history array, which it owns:
 * initialise with qat_train_state_init, append with
 * qat_train_state_add_epoch, release with qat_train_state_free (also
 * whoever receives one from qat_checkpoint_load frees it; the load frees
 * the history the struct held before). */
typedef struct qat_train_state {
    int epoch;                  /* epochs completed */
    int64_t global_step;        /* optimizer steps taken */
    uint64_t seed;              /* the run's seed */
    int threads;                /* thread count of the run (results depend on it) */
    qat_batch_iter_state iter;  /* the training batch iterator's position */
    qat_rng rng;                /* a generator for anything else (e.g. dropout) */
    qat_recipe recipe;
    int n_history;              /* lines in history */
    int cap_history;            /* allocated lines */
    qat_epoch_record *history;  /* malloc'd, owned by the struct; NULL when empty */
} qat_train_state;

/* Zeroes *st (empty history). */
QAT_API void qat_train_state_init(qat_train_state *st);
/* Frees the history and zeroes *st. NULL is a no-op. */
QAT_API void qat_train_state_free(qat_train_state *st);
/* Appends a copy of *r to the history (grows it). QAT_ERR_NOMEM / ARG. */
QAT_API int qat_train_state_add_epoch(qat_train_state *st, const qat_epoch_record *r);

/* ---- checkpoints ---- */

/* Writes a float checkpoint of m, and of o and st when not NULL, to path.
 * Atomic: the file is written as "<path>.tmp.<pid>" and renamed into
 * place; on any failure the temporary file is removed and an existing file
 * at path is untouched. o is not const because reading its state buffers
 * goes through qat_optim_state; it is not modified. Layer and parameter
 * names must not contain '/'. */
QAT_API int qat_checkpoint_save(const char *path, const qat_model *m, qat_optim *o,
                                const qat_train_state *st);

/* Loads a float checkpoint into an existing model m built the same way
 * (same graph: layer names, types, inputs, hyperparameters and shapes;
 * the first difference is the error), and into o / st when not NULL (the
 * file must then hold optimizer / training state).
 *
 * o must have been created with the same kind and options over the same
 * parameters (same names, same order); the first difference is the error.
 * The load then sets its step count, lr, per-parameter step counters,
 * per-parameter group settings (lr scale, weight decay), schedule (the
 * file's, or none) and state buffers, so that the next step is bitwise the
 * one the saved run would have made.
 *
 * All or nothing: everything is read and checked before m, o or st is
 * changed, so on failure they are as they were. */
QAT_API int qat_checkpoint_load(const char *path, qat_model *m, qat_optim *o,
                                qat_train_state *st);

/* Rebuilds the model stored in a float checkpoint from its graph with the
 * public builders (any model, not only the reference ones), sets its arch
 * name, and loads its parameters and BN statistics. NULL on failure. */
QAT_API qat_model *qat_model_load(const char *path);

/* Creates the optimizer stored in a checkpoint (kind, options, groups,
 * schedule, state) over params[0..n-1], which must be the stored
 * parameters (same names and order, same sizes; e.g. qat_model_params of
 * the loaded model, followed by any parameters added later such as
 * learnable quantizer scales). Reads float and QAT/PTQ checkpoints (they
 * store the optimizer alike). NULL on failure. */
QAT_API qat_optim *qat_optim_load(const char *path, const qat_named_tensor *params, int n);

/* What a qat file is, without loading it (for `qat eval FILE`,
 * `qat inspect`). Works on every qat file kind. */
typedef struct qat_file_info {
    char format[32];         /* qat_format: "float-checkpoint", ... */
    int format_version;
    char arch[QAT_NAME_MAX]; /* root attribute arch; "" if absent */
    int num_layers;          /* layers in /model/graph; 0 if absent */
    int input_shape[3];      /* per-sample input (C,H,W); zeros if no graph */
    int num_params;          /* datasets in /model/params; 0 if absent */
    int has_optim;           /* /optim present */
    int has_train;           /* /train present */
    int epoch;               /* epochs completed (/train), -1 if absent */
    int num_history;         /* lines of /history, 0 if absent */
} qat_file_info;

/* Fills *info. QAT_ERR_IO for a missing/unreadable file, QAT_ERR_FORMAT
 * for a file that is not HDF5, is damaged, or has no qat_format. */
QAT_API int qat_checkpoint_info(const char *path, qat_file_info *info);

#ifdef __cplusplus
}
#endif
#endif
