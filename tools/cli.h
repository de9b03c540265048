/* Shared pieces of the qat command: options, JSON output, progress. */
#ifndef QAT_TOOLS_CLI_H
#define QAT_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "qat.h"
#include "qat/data.h"
#include "qat/qio.h"
#include "qat/quant.h"

/* Batch of evaluation and calibration passes: the training batch, so the
 * step arena (which keeps every layer's output of a forward) does not grow
 * past what training needs. */
#define CLI_EVAL_BATCH 128

/* Options every command takes. */
typedef struct cli_common {
    const char *data_dir; /* --data */
    int data_dir_given;   /* --data was on the command line */
    int threads;          /* --threads (0: QAT_NUM_THREADS or all cores) */
    uint64_t seed;        /* --seed */
    int json;             /* --json: stdout holds exactly one JSON object */
    int val;              /* --val: validation images carved from train */
    int limit_train;      /* --limit-train N: first N training images (tests, quick runs) */
    int limit_test;       /* --limit-test N: first N test images */
} cli_common;

void cli_common_defaults(cli_common *c);
/* If argv[*i] is a common option, consumes it (and its value) and returns 1;
 * 0 if not one; -1 on a bad value (message printed). */
int cli_common_parse(cli_common *c, int argc, char **argv, int *i);

/* Value of option argv[*i] (advancing *i); prints an error and returns NULL
 * if missing. */
const char *cli_value(int argc, char **argv, int *i);
int cli_int(const char *opt, const char *s, int *out);
int cli_double(const char *opt, const char *s, double *out);

/* Messages to stderr; die() prints "qat: ..." and returns exit status 1. */
void cli_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "qat: <what>: <qat_last_error()>", returns 1. */
int cli_fail_lib(const char *what);
/* Sets o's normalisation to Fashion-MNIST's, with a note on stderr, when
 * the model (loaded from file) stores none (files of older qat versions);
 * otherwise leaves o to take the model's. */
void cli_export_norm(const qat_model *m, const char *file, qat_export_opts *o);

double cli_now(void); /* monotonic seconds */
double cli_median(double *v, int n); /* sorts v */

/* Loads train (split into train/val) and test sets per the options. */
typedef struct cli_data {
    qat_dataset *train, *val, *test;
} cli_data;
int cli_load_data(const cli_common *c, cli_data *d, int need_train, int need_test);
void cli_data_free(cli_data *d);

/* Accuracy (eval mode, no grad) on a dataset of the float model m, or of
 * the fake-quant model qm when qm is not NULL. -1 on error. */
double cli_evaluate(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, const qat_dataset *ds, int batch);
/* The forward of either. */
qat_tensor *cli_forward(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, qat_tensor *x);
/* Runs PTQ calibration of qm over the first n images of a seeded
 * permutation of ds (fake-quant off, observers on), then finalizes. */
int cli_calibrate(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, uint64_t seed, int batch);
/* Builds a qconfig from a spec ("w8a8") and "NAME=SPEC" overrides. */
int cli_qconfig(qat_qconfig *cfg, const char *spec, char **overrides, int n_overrides);

/* ---- JSON writer (to a FILE) ---- */
typedef struct json_w {
    FILE *f;
    int depth;
    int need_comma[32];
} json_w;
void json_begin(json_w *j, FILE *f);
void json_obj(json_w *j, const char *key);  /* key NULL inside arrays / at top */
void json_obj_end(json_w *j);
void json_arr(json_w *j, const char *key);
void json_arr_end(json_w *j);
void json_str(json_w *j, const char *key, const char *v);
void json_num(json_w *j, const char *key, double v);
void json_int(json_w *j, const char *key, long long v);
void json_bool(json_w *j, const char *key, int v);
void json_null(json_w *j, const char *key);
void json_end(json_w *j); /* newline */

/* ---- progress: a bar on a terminal, plain periodic lines otherwise ---- */
typedef struct progress {
    const char *label;
    long total;
    double start, last;
    int tty;
} progress;
void progress_start(progress *p, const char *label, long total);
void progress_update(progress *p, long done, const char *extra);
void progress_end(progress *p);

#endif
