/* The training state of a checkpoint: /train (counters, seeds, iterator
 * position, recipe) and /history (one entry per epoch); layout in
 * docs/FORMAT.md. Also the qat_train_state value functions. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

void qat_train_state_init(qat_train_state *st)
{
    if (st) memset(st, 0, sizeof *st);
}

void qat_train_state_free(qat_train_state *st)
{
    if (!st) return;
    free(st->history);
    memset(st, 0, sizeof *st);
}

int qat_train_state_add_epoch(qat_train_state *st, const qat_epoch_record *r)
{
    if (!st || !r) return qat_error(QAT_ERR_ARG, "qat_train_state_add_epoch: NULL argument");
    if (st->n_history < 0 || st->n_history > st->cap_history || (st->cap_history && !st->history))
        return qat_error(QAT_ERR_ARG, "qat_train_state_add_epoch: history counts invalid (state not initialised?)");
    if (st->n_history == st->cap_history) {
        int cap = st->cap_history ? 2 * st->cap_history : 16;
        qat_epoch_record *h = qat_realloc(st->history, (size_t)cap * sizeof *h);
        if (!h) return qat_error(QAT_ERR_NOMEM, "qat_train_state_add_epoch: out of memory");
        st->history = h;
        st->cap_history = cap;
    }
    st->history[st->n_history++] = *r;
    return QAT_OK;
}

/* float64 columns of /history, from qat_epoch_record. */
static const struct {
    const char *name;
    size_t off;
} hist_cols[] = {
    {"train_loss", offsetof(qat_epoch_record, train_loss)},
    {"train_accuracy", offsetof(qat_epoch_record, train_accuracy)},
    {"val_accuracy", offsetof(qat_epoch_record, val_accuracy)},
    {"test_accuracy", offsetof(qat_epoch_record, test_accuracy)},
    {"lr", offsetof(qat_epoch_record, lr)},
    {"train_images_per_s", offsetof(qat_epoch_record, train_images_per_s)},
    {"train_images_per_s_wall", offsetof(qat_epoch_record, train_images_per_s_wall)},
    {"seconds", offsetof(qat_epoch_record, seconds)},
};
#define N_HIST_COLS (sizeof hist_cols / sizeof hist_cols[0])

static double *hist_col(qat_epoch_record *r, size_t k) { return (double *)(void *)((char *)r + hist_cols[k].off); }

static int write_history(hid_t file, const qat_train_state *st)
{
    int n = st->n_history, rc = QAT_OK;
    if (n < 0 || (n > 0 && !st->history))
        return qat_error(QAT_ERR_ARG, "train state: history of %d lines without an array", n);
    hid_t g = qat_h5_group_create(file, "/history");
    if (g < 0) return (int)g;
    double *col = qat_calloc((size_t)n + 1, sizeof *col);
    int32_t *ep = qat_calloc((size_t)n + 1, sizeof *ep);
    if (!col || !ep) rc = qat_h5_fail(QAT_ERR_NOMEM, g, "group", NULL, "out of memory");
    for (int i = 0; i < n && !rc; i++) ep[i] = st->history[i].epoch;
    if (!rc) rc = qat_h5_write(g, "epoch", QAT_H5_I32, 1, &n, ep);
    for (size_t k = 0; k < N_HIST_COLS && !rc; k++) {
        for (int i = 0; i < n; i++) col[i] = *hist_col(&st->history[i], k);
        rc = qat_h5_write(g, hist_cols[k].name, QAT_H5_F64, 1, &n, col);
    }
    free(col);
    free(ep);
    H5Gclose(g);
    return rc;
}

int qat_io_write_train(hid_t file, const qat_train_state *st)
{
    hid_t g = -1, bg = -1, rg = -1;
    int rc = QAT_ERR_IO;
    if ((g = qat_h5_group_create(file, "/train")) < 0 || (bg = qat_h5_group_create(g, "batch_iter")) < 0 ||
        (rg = qat_h5_group_create(g, "recipe")) < 0)
        goto done;
    rc = qat_h5_attr_write_i32(g, "epoch", st->epoch);
    if (!rc) rc = qat_h5_attr_write_i64(g, "global_step", st->global_step);
    if (!rc) rc = qat_h5_attr_write_u64(g, "seed", st->seed);
    if (!rc) rc = qat_h5_attr_write_i32(g, "threads", st->threads);
    if (!rc) rc = qat_h5_attr_write(g, "rng", QAT_H5_U32, 4, st->rng.s);
    if (!rc) rc = qat_h5_attr_write_u64(bg, "seed", st->iter.seed);
    if (!rc) rc = qat_h5_attr_write_i32(bg, "epoch", st->iter.epoch);
    if (!rc) rc = qat_h5_attr_write_i32(bg, "position", st->iter.position);
    if (!rc) rc = qat_h5_attr_write(bg, "aug_rng", QAT_H5_U32, 4, st->iter.aug_rng.s);
    const qat_recipe *r = &st->recipe;
    if (!rc) rc = qat_h5_attr_write_str(rg, "arch", r->arch);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "epochs", r->epochs);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "batch_size", r->batch_size);
    if (!rc) rc = qat_h5_attr_write_f64(rg, "lr", r->lr);
    if (!rc) rc = qat_h5_attr_write_f64(rg, "weight_decay", r->weight_decay);
    if (!rc) rc = qat_h5_attr_write_f64(rg, "momentum", r->momentum);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "val_size", r->val_size);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "train_limit", r->train_limit);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "test_limit", r->test_limit);
    if (!rc) rc = qat_h5_attr_write_str(rg, "data_dir", r->data_dir);
    if (!rc) rc = qat_h5_attr_write_str(rg, "quant", r->quant);
    if (!rc) rc = qat_h5_attr_write_str(rg, "schedule", r->schedule);
    if (!rc) rc = qat_h5_attr_write_str(rg, "overrides", r->overrides);
    if (!rc) rc = qat_h5_attr_write_i32(rg, "stage", r->stage);
    if (!rc) rc = write_history(file, st);
done:
    if (rg >= 0) H5Gclose(rg);
    if (bg >= 0) H5Gclose(bg);
    if (g >= 0) H5Gclose(g);
    return rc;
}

static int read_history(hid_t file, qat_train_state *st)
{
    hid_t g = qat_h5_group_open(file, "/history");
    if (g < 0) return (int)g;
    int nd = 0, n = 0;
    int rc = qat_h5_shape(g, "epoch", QAT_H5_I32, 1, &nd, &n);
    if (!rc && nd != 1) rc = qat_h5_fail(QAT_ERR_FORMAT, g, "dataset", "epoch", "is a scalar, expected a 1-D array");
    double *col = NULL;
    int32_t *ep = NULL;
    if (!rc) {
        col = qat_calloc((size_t)n + 1, sizeof *col);
        ep = qat_calloc((size_t)n + 1, sizeof *ep);
        st->history = n ? qat_calloc((size_t)n, sizeof *st->history) : NULL;
        if (!col || !ep || (n && !st->history)) rc = qat_h5_fail(QAT_ERR_NOMEM, g, "group", NULL, "out of memory");
        else st->n_history = st->cap_history = n;
    }
    if (!rc) rc = qat_h5_read(g, "epoch", QAT_H5_I32, 1, &n, ep);
    for (int i = 0; i < n && !rc; i++) st->history[i].epoch = ep[i];
    for (size_t k = 0; k < N_HIST_COLS && !rc; k++) {
        rc = qat_h5_read(g, hist_cols[k].name, QAT_H5_F64, 1, &n, col);
        for (int i = 0; i < n && !rc; i++) *hist_col(&st->history[i], k) = col[i];
    }
    free(col);
    free(ep);
    H5Gclose(g);
    return rc;
}

int qat_io_read_train(hid_t file, qat_train_state *st)
{
    qat_train_state_init(st);
    hid_t g = -1, bg = -1, rg = -1;
    int rc;
    if ((g = qat_h5_group_open(file, "/train")) < 0) {
        rc = (int)g;
        goto done;
    }
    if ((bg = qat_h5_group_open(g, "batch_iter")) < 0) {
        rc = (int)bg;
        goto done;
    }
    if ((rg = qat_h5_group_open(g, "recipe")) < 0) {
        rc = (int)rg;
        goto done;
    }
    rc = qat_h5_attr_read_i32(g, "epoch", &st->epoch);
    if (!rc && st->epoch < 0) rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "negative epoch %d", st->epoch);
    if (!rc) rc = qat_h5_attr_read_i64(g, "global_step", &st->global_step);
    if (!rc && st->global_step < 0)
        rc = qat_h5_fail(QAT_ERR_FORMAT, g, "group", NULL, "negative global_step %lld", (long long)st->global_step);
    if (!rc) rc = qat_h5_attr_read_u64(g, "seed", &st->seed);
    if (!rc) rc = qat_h5_attr_read_i32(g, "threads", &st->threads);
    if (!rc) rc = qat_h5_attr_read(g, "rng", QAT_H5_U32, 4, st->rng.s);
    if (!rc) rc = qat_h5_attr_read_u64(bg, "seed", &st->iter.seed);
    if (!rc) rc = qat_h5_attr_read_i32(bg, "epoch", &st->iter.epoch);
    if (!rc) rc = qat_h5_attr_read_i32(bg, "position", &st->iter.position);
    if (!rc && (st->iter.epoch < 0 || st->iter.position < 0))
        rc = qat_h5_fail(QAT_ERR_FORMAT, bg, "group", NULL, "negative epoch %d or position %d", st->iter.epoch,
                         st->iter.position);
    if (!rc) rc = qat_h5_attr_read(bg, "aug_rng", QAT_H5_U32, 4, st->iter.aug_rng.s);
    qat_recipe *r = &st->recipe;
    if (!rc) rc = qat_h5_attr_read_str(rg, "arch", r->arch, sizeof r->arch);
    if (!rc) rc = qat_h5_attr_read_i32(rg, "epochs", &r->epochs);
    if (!rc) rc = qat_h5_attr_read_i32(rg, "batch_size", &r->batch_size);
    if (!rc) rc = qat_h5_attr_read_f64(rg, "lr", &r->lr);
    if (!rc) rc = qat_h5_attr_read_f64(rg, "weight_decay", &r->weight_decay);
    if (!rc) rc = qat_h5_attr_read_f64(rg, "momentum", &r->momentum);
    if (!rc) rc = qat_h5_attr_read_i32(rg, "val_size", &r->val_size);
    /* optional: files written before these existed */
    if (!rc && qat_h5_attr_exists(rg, "train_limit") == 1) rc = qat_h5_attr_read_i32(rg, "train_limit", &r->train_limit);
    if (!rc && qat_h5_attr_exists(rg, "test_limit") == 1) rc = qat_h5_attr_read_i32(rg, "test_limit", &r->test_limit);
    if (!rc && qat_h5_attr_exists(rg, "data_dir") == 1)
        rc = qat_h5_attr_read_str(rg, "data_dir", r->data_dir, sizeof r->data_dir);
    if (!rc && qat_h5_attr_exists(rg, "quant") == 1) rc = qat_h5_attr_read_str(rg, "quant", r->quant, sizeof r->quant);
    if (!rc && qat_h5_attr_exists(rg, "schedule") == 1)
        rc = qat_h5_attr_read_str(rg, "schedule", r->schedule, sizeof r->schedule);
    if (!rc && qat_h5_attr_exists(rg, "overrides") == 1)
        rc = qat_h5_attr_read_str(rg, "overrides", r->overrides, sizeof r->overrides);
    if (!rc && qat_h5_attr_exists(rg, "stage") == 1) rc = qat_h5_attr_read_i32(rg, "stage", &r->stage);
    if (!rc && (r->stage < 0 || (!r->schedule[0] && r->stage != 0)))
        rc = qat_h5_fail(QAT_ERR_FORMAT, rg, "attribute", "stage", "stage %d without a schedule or negative",
                         r->stage);
    if (!rc) rc = read_history(file, st);
done:
    if (rg >= 0) H5Gclose(rg);
    if (bg >= 0) H5Gclose(bg);
    if (g >= 0) H5Gclose(g);
    if (rc) qat_train_state_free(st);
    return rc;
}
