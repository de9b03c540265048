/* Private: the sections of a checkpoint file (model, optimizer, training
 * state), reusable by every file kind (float, QAT/PTQ checkpoints). Each
 * reader is two-phase: *_stage reads and checks everything into a stage
 * without touching the target, *_commit applies it and cannot fail, so a
 * load of several sections is all-or-nothing. Callers silence HDF5 with
 * qat_h5_quiet_begin/end. Layout: docs/FORMAT.md. */
#ifndef QAT_IO_INTERNAL_H
#define QAT_IO_INTERNAL_H

#include "io/h5util.h"
#include "qat/io.h"

/* ---- model section: <group>/graph, <group>/params, <group>/buffers ---- */

/* One layer as stored in <group>/graph. */
typedef struct qat_io_layer {
    char name[QAT_NAME_MAX];
    char type_name[32];
    int type; /* qat_layer_type */
    int n_inputs, inputs[2];
    int out_ndim, out_shape[3];
    int in_ch, out_ch, kernel, stride, pad, has_bias;
    float bn_eps, bn_momentum;
    int groups;         /* conv channel groups (absent in older files: 1) */
    int clamp_channels; /* 1: the clamp has a per-channel bound buffer */
    float clamp_lo, clamp_hi;
} qat_io_layer;

typedef struct qat_io_graph {
    int n;
    qat_io_layer *layers; /* malloc'd */
} qat_io_graph;

/* Writes m's graph, parameters and buffers under group ("/model"). */
int qat_io_write_model(hid_t file, const char *group, const qat_model *m);
/* Reads group's input_mean/input_std attributes (the training data's
 * normalisation) into m when present (older files have neither);
 * QAT_ERR_FORMAT naming the attribute when only one is there or they are
 * not finite with std > 0. */
int qat_io_read_input_norm(hid_t file, const char *group, qat_model *m);

/* Reads and validates <group>/graph (types known, inputs earlier layers,
 * consistent lengths). Free with qat_io_graph_free. */
int qat_io_read_graph(hid_t file, const char *group, qat_io_graph *g);
void qat_io_graph_free(qat_io_graph *g);

/* QAT_OK if m has graph g, else QAT_ERR_FORMAT naming the first difference
 * ("<file>: checkpoint layer 3 'x' is conv2d with 6 output channels, model
 * has 16"). */
int qat_io_check_graph(hid_t file, const qat_io_graph *g, const qat_model *m);

/* Builds a new model from g with the public builders (no weights loaded). */
qat_model *qat_io_build_graph(hid_t file, const qat_io_graph *g);

typedef struct qat_io_model_stage {
    int n_params, n_buffers, n_layers;
    float **params;  /* [n_params], each the parameter's numel floats */
    float **buffers; /* [n_buffers] */
    int64_t *nbt;    /* [n_layers] num_batches_tracked (BN layers) */
} qat_io_model_stage;

/* Checks the stored graph against m and reads every parameter and buffer
 * of m (shape-checked) into s. */
int qat_io_model_stage_read(hid_t file, const char *group, const qat_model *m, qat_io_model_stage *s);
void qat_io_model_commit(const qat_io_model_stage *s, qat_model *m);
void qat_io_model_stage_free(qat_io_model_stage *s);

/* ---- optimizer section ---- */

int qat_io_write_optim(hid_t file, const char *group, qat_optim *o);

/* Reads the stored kind and options. */
int qat_io_read_optim_options(hid_t file, const char *group, qat_optim_options *opts);

typedef struct qat_io_optim_stage {
    double lr;
    int64_t step_count;
    int has_schedule;
    qat_schedule schedule;
    int n;               /* parameters */
    int64_t *param_step; /* [n] */
    double *lr_scale;    /* [n] */
    double *wd;          /* [n] */
    int n_state;
    float **state;       /* [n_state], each numel floats */
} qat_io_optim_stage;

/* Checks that o matches the stored optimizer (kind, options, parameter
 * names) and reads its state into s. */
int qat_io_optim_stage_read(hid_t file, const char *group, qat_optim *o, qat_io_optim_stage *s);
void qat_io_optim_commit(const qat_io_optim_stage *s, qat_optim *o);
void qat_io_optim_stage_free(qat_io_optim_stage *s);

/* ---- training state: /train and /history ---- */

int qat_io_write_train(hid_t file, const qat_train_state *st);
/* Reads into *st (a fresh value the caller frees with
 * qat_train_state_free; on failure *st is empty). */
int qat_io_read_train(hid_t file, qat_train_state *st);

#endif
