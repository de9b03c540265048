/* qat train as a function (compare runs the QAT recipe through it). */
#ifndef QAT_TOOLS_TRAIN_H
#define QAT_TOOLS_TRAIN_H

#include "qat/io.h"
#include "tools/cli.h"

#define MAX_OVERRIDES 64
#define TRAIN_MAX_HISTORY 32

typedef struct train_opts {
    const char *model, *out, *from, *quant, *resume;
    const char *schedule; /* --schedule (staged QAT, qat/schedule.h), or NULL */
    int epochs, batch, calib_size;
    double lr, wd, momentum;
    int freeze_bn_after, freeze_observers_after; /* epochs; -1: recipe default */
    int stop_after; /* --stop-after E: end the run once E epochs are done (0: no) */
    char *overrides[MAX_OVERRIDES];
    int n_overrides;
} train_opts;

void train_opts_defaults(train_opts *o);

typedef struct train_result {
    char model[32], quant[32], out[256];
    char schedule[256]; /* canonical --schedule, "" without one */
    int epochs;
    double test_accuracy, val_accuracy;
    double train_images_per_s, train_images_per_s_wall, seconds;
    int n_history;
    qat_epoch_record history[TRAIN_MAX_HISTORY];
} train_result;

/* Runs the float or QAT recipe per o (as `qat train`), writing o->out. */
int train_main(cli_common *c, train_opts *o, train_result *res);

#endif
