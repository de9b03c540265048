/* Allocation-failure injection (core/alloc.c's qat_alloc_fail_at): every
 * heap allocation of a whole run is made to fail in turn, and each time the
 * run must report it (QAT_ERR_NOMEM, or NULL from a call without a status,
 * and a message in qat_last_error()), must not crash, must free everything
 * (LeakSanitizer when built with -Db_sanitize=address, as
 * `scripts/test.sh --sanitize` does; open HDF5 objects and temporary
 * checkpoint files always), and must leave nothing behind that changes the
 * next run: a clean run afterwards gives the reference results bit for
 * bit.
 *
 * The runs:
 *   - a QAT step, end to end: load a dataset, split it, iterate batches,
 *     build a small conv+bn+relu+pool+residual add+linear model with the
 *     public builders, prepare it (W8A8 with EMA observers and SGD; W4A4
 *     with LSQ scales, percentile histograms and AdamW), calibrate a batch,
 *     two training steps (forward, backward, optimizer step; the arena
 *     starts small so it grows, then settles at the reset), write a float
 *     and a QAT checkpoint and read them back (the float model rebuilt
 *     from its file and loaded with its training state; the QAT model, its
 *     float model and the optimizer), export the int8 model and run it;
 *   - PTQ (percentile histograms, min/max recalibration), the KL and MSE
 *     searches on a histogram observer, per-layer errors, a float training
 *     step with its checkpoint and an exact resume (model and optimizer);
 *   - the int8 runtime: load tests/data/lenet5-small.int8.h5 (from the file
 *     and from memory), prepare, repack for each kernel family the CPU has,
 *     run a batch.
 *
 * An allocation a run may lose without failing (an optional fast path)
 * must then give the same results bit for bit: the one such place is the
 * arena's consolidation in qat_ctx_reset (its chunks are kept). */
#include <check.h>
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "core/internal.h" /* qat_alloc_fail_at, qat_alloc_count */
#include "qat/data.h"
#include "qat/io.h"
#include "qat/optim.h"
#include "qat/qio.h"
#include "qat/quant.h"
#include "qat/runtime.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* ---- results of a run, compared bit for bit ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} digest;

static void dg_add(digest *d, const void *p, size_t n)
{
    if (d->n + n > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->n + n) cap *= 2;
        unsigned char *q = realloc(d->p, cap); /* the test's own memory: not counted */
        ck_assert_ptr_nonnull(q);
        d->p = q;
        d->cap = cap;
    }
    memcpy(d->p + d->n, p, n);
    d->n += n;
}

static void dg_tensor(digest *d, const qat_tensor *t)
{
    if (t) dg_add(d, t->data, t->numel * sizeof(float));
}

static void dg_model(digest *d, const qat_model *m)
{
    for (int i = 0; i < qat_model_num_params(m); i++) dg_tensor(d, qat_model_params(m)[i].t);
    for (int i = 0; i < qat_model_num_buffers(m); i++) dg_tensor(d, qat_model_buffers(m)[i].t);
}

static void dg_quantizer(digest *d, const qat_quantizer *q)
{
    if (!q->scale) return;
    dg_add(d, q->scale, (size_t)q->n * sizeof(float));
    dg_add(d, q->zero_point, (size_t)q->n * sizeof(int32_t));
    dg_tensor(d, q->lsq_scale);
    dg_tensor(d, q->lsq_zp);
}

static void dg_qmodel(digest *d, qat_qmodel *qm)
{
    dg_model(d, qat_qmodel_float(qm));
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        dg_quantizer(d, &un->weight);
        dg_quantizer(d, &un->act);
    }
}

static void dg_reset(digest *d) { d->n = 0; }

/* ---- what every run leaves behind ---- */

/* The runs' files: in memory when /dev/shm is there (a checkpoint is
 * fsync'ed, a thousand of them on a disk take many seconds), else in the
 * tests' temporary directory. */
static char g_run_dir[256];

static void remove_run_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_run_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_run_dir);
}

static const char *run_dir(void)
{
    if (!g_run_dir[0]) {
        snprintf(g_run_dir, sizeof g_run_dir, "/dev/shm/qat-alloc-XXXXXX");
        if (mkdtemp(g_run_dir))
            atexit(remove_run_dir);
        else
            snprintf(g_run_dir, sizeof g_run_dir, "%s", tu_tmp_dir());
    }
    return g_run_dir;
}

static const char *run_path(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", run_dir(), name);
    return buf;
}

/* No HDF5 object of any kind open, no temporary checkpoint file left;
 * with check_leaks (and LeakSanitizer), no memory unreachable: a leak check
 * scans the whole heap, so it runs once per LEAK_EVERY runs and names the
 * range (its report shows where the leaked blocks were allocated). */
#define LEAK_EVERY 32

static void assert_clean(const char *what, long n, int check_leaks)
{
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    ck_assert_msg(open_ids == 0, "%s, allocation %ld failed: %zd HDF5 objects left open", what, n, open_ids);
    DIR *dir = opendir(run_dir());
    ck_assert_ptr_nonnull(dir);
    struct dirent *e;
    while ((e = readdir(dir)))
        ck_assert_msg(!strstr(e->d_name, ".tmp"), "%s, allocation %ld failed: temporary file %s left", what, n,
                      e->d_name);
    closedir(dir);
#ifdef HAVE_LSAN
    if (check_leaks)
        ck_assert_msg(!__lsan_do_recoverable_leak_check(),
                      "%s: a run failing one of the allocations %ld..%ld leaked memory (report above)", what,
                      n ? (n - 1) / LEAK_EVERY * LEAK_EVERY + 1 : 0, n);
#else
    (void)check_leaks;
#endif
}

/* A run: returns QAT_OK or the first failure's status, *where names the
 * call that reported it; everything it made is freed either way. */
typedef int (*run_fn)(const void *arg, digest *d, const char **where);

/* A NULL where the API gives no status: the run's own code for it. */
#define RUN_NULL (-1000)
/* A caller that maps the failure to its own status, the cause (out of
 * memory) checked where it is kept (the context's sticky error). */
#define RUN_MAPPED (-1001)

#define TRY(call)                                                                                                  \
    do {                                                                                                           \
        if ((rc = (call)) < 0) {                                                                                   \
            *where = #call;                                                                                        \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)
#define TRYP(var, call)                                                                                            \
    do {                                                                                                           \
        if (!((var) = (call))) {                                                                                   \
            rc = RUN_NULL;                                                                                         \
            *where = #call;                                                                                        \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

/* The status a failed allocation may surface as: out of memory; a NULL
 * from a call without a status (its message is checked); a caller's own
 * code where the run checked the cause (RUN_MAPPED). */
static int status_ok_for_nomem(int rc) { return rc == QAT_ERR_NOMEM || rc == RUN_NULL || rc == RUN_MAPPED; }

/* Counts the allocations of a clean run (twice: the count must not
 * depend on the run), then fails each in turn. */
static void sweep(const char *what, run_fn run, const void *arg)
{
    digest ref = {0}, got = {0};
    const char *where = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    qat_clear_error();
    qat_alloc_fail_at(0);
    int rc = run(arg, &ref, &where);
    ck_assert_msg(rc == QAT_OK, "%s: clean run failed at %s: %d %s", what, where, rc, qat_last_error());
    long count = qat_alloc_count();
    assert_clean(what, 0, 1);
    qat_alloc_fail_at(0);
    rc = run(arg, &got, &where);
    ck_assert_msg(rc == QAT_OK, "%s: second clean run failed at %s: %d %s", what, where, rc, qat_last_error());
    ck_assert_msg(qat_alloc_count() == count, "%s: %ld allocations, then %ld", what, count, qat_alloc_count());
    ck_assert_msg(got.n == ref.n && !memcmp(got.p, ref.p, ref.n), "%s: two clean runs differ", what);
    ck_assert_int_gt(count, 0);
    int tolerated = 0;
    char tol_list[256] = "";
    for (long n = 1; n <= count; n++) {
        dg_reset(&got);
        where = "";
        qat_clear_error();
        qat_alloc_fail_at(n);
        rc = run(arg, &got, &where);
        long made = qat_alloc_count();
        qat_alloc_fail_at(0);
        ck_assert_msg(made >= n, "%s: allocation %ld: the run made only %ld allocations", what, n, made);
        if (rc == QAT_OK) {
            /* the run went on without that allocation: only an optional
             * path may do so, and the results must not change */
            ck_assert_msg(got.n == ref.n && !memcmp(got.p, ref.p, ref.n),
                          "%s: allocation %ld failed, the run reported success with different results", what, n);
            tolerated++;
            size_t k = strlen(tol_list);
            snprintf(tol_list + k, sizeof tol_list - k, " %ld", n);
        } else {
            ck_assert_msg(status_ok_for_nomem(rc), "%s: allocation %ld failed, %s returned %d (%s): %s", what, n,
                          where, rc, qat_status_str(rc), qat_last_error());
            ck_assert_msg(qat_last_error()[0], "%s: allocation %ld failed, %s returned %d with no message", what, n,
                          where, rc);
        }
        assert_clean(what, n, n % LEAK_EVERY == 0 || n == count);
    }
    /* nothing left behind that changes a run */
    dg_reset(&got);
    qat_clear_error();
    rc = run(arg, &got, &where);
    ck_assert_msg(rc == QAT_OK, "%s: clean run after the sweep failed at %s: %d %s", what, where, rc,
                  qat_last_error());
    ck_assert_msg(got.n == ref.n && !memcmp(got.p, ref.p, ref.n), "%s: clean run after the sweep differs", what);
    assert_clean(what, 0, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "%s: %ld allocations, each failed in turn (%d tolerated with identical results:%s), %.1f s\n",
            what, count, tolerated, tolerated ? tol_list : " none",
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(ref.p);
    free(got.p);
}

/* ---- (a) a QAT step ---- */

typedef struct {
    const char *spec;   /* "w8a8", "w4a4", "wc16a8" */
    int calib;          /* calibrator of every unit */
    qat_optim_kind opt; /* SGD with momentum, or AdamW */
} qat_case;

#define BATCH 8
#define DATA_N 64 /* images of the run's data set */

static char g_data_dir[512];

/* The run's data: the first DATA_N test images of the small Fashion-MNIST
 * copy as an IDX pair in a directory of their own, the images gzipped (the
 * loader's inflate path) and the labels raw. */
static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

static void data_setup(void)
{
    qat_dataset *ds = NULL;
    ck_assert_int_eq(qat_dataset_load_fashion_mnist(tu_data_path("fashion-mnist-small"), 0, &ds), QAT_OK);
    snprintf(g_data_dir, sizeof g_data_dir, "%s", run_path("data"));
    ck_assert_int_eq(mkdir(g_data_dir, 0700), 0);
    char path[600];
    unsigned char h[16];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", g_data_dir);
    gzFile gz = gzopen(path, "wb");
    ck_assert_ptr_nonnull(gz);
    put_be32(h, 0x803), put_be32(h + 4, DATA_N), put_be32(h + 8, 28), put_be32(h + 12, 28);
    ck_assert_int_eq(gzwrite(gz, h, 16), 16);
    ck_assert_int_eq(gzwrite(gz, ds->images, DATA_N * 28 * 28), DATA_N * 28 * 28);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    put_be32(h, 0x801), put_be32(h + 4, DATA_N);
    unsigned char lab[8 + DATA_N];
    memcpy(lab, h, 8);
    memcpy(lab + 8, ds->labels, DATA_N);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", g_data_dir);
    ck_assert_int_eq(tu_write_file(path, lab, sizeof lab), 0);
    qat_dataset_free(ds);
}

/* input 1x28x28 -> c1 conv(4, k3, s2, p1) b1 r1 -> pool max 2 -> c2 conv(4,
 * k3, p1, no bias) b2 -> add (+ pool) r2 -> gap -> flat -> fc linear(10) */
static int build_model(qat_model **out, const char **where)
{
    int rc = QAT_OK, x;
    qat_model *m = NULL;
    *out = NULL;
    TRYP(m, qat_model_create(1, 28, 28));
    TRY(qat_model_set_input_norm(m, QAT_FASHION_MNIST_MEAN, QAT_FASHION_MNIST_STD)); /* stored, used by the export */
    TRY(x = qat_model_conv2d(m, "c1", 0, 4, 3, 2, 1, 1));
    TRY(x = qat_model_batchnorm2d(m, "b1", x));
    TRY(x = qat_model_relu(m, "r1", x));
    int pool;
    TRY(pool = qat_model_maxpool2d(m, "pool", x, 2, 2));
    TRY(x = qat_model_conv2d(m, "c2", pool, 4, 3, 1, 1, 0));
    TRY(x = qat_model_batchnorm2d(m, "b2", x));
    TRY(x = qat_model_add(m, "add", x, pool));
    TRY(x = qat_model_relu(m, "r2", x));
    TRY(x = qat_model_global_avgpool(m, "gap", x));
    TRY(x = qat_model_flatten(m, "flat", x));
    TRY(x = qat_model_linear(m, "fc", x, 10, 1));
    TRY(qat_model_init(m, 7));
    qat_model_set_arch(m, "alloc-test");
    *out = m;
    return QAT_OK;
done:
    qat_model_free(m);
    return rc;
}

/* the model's parameters, then the qmodel's, *n of them (the test's own
 * memory) */
static qat_named_tensor *param_list(const qat_model *m, const qat_qmodel *qm, qat_named_tensor *old, int *n)
{
    int np = qat_model_num_params(m), nq = qat_qmodel_num_params(qm);
    const qat_named_tensor *mp = qat_model_params(m), *qp = qat_qmodel_params(qm);
    qat_named_tensor *all = realloc(old, (size_t)(np + nq + 1) * sizeof *all);
    ck_assert_ptr_nonnull(all);
    if (np) memcpy(all, mp, (size_t)np * sizeof *all);
    if (nq) memcpy(all + np, qp, (size_t)nq * sizeof *all);
    *n = np + nq;
    return all;
}

static int run_qat(const void *arg, digest *d, const char **where)
{
    const qat_case *c = arg;
    int rc = QAT_OK;
    qat_dataset *ds = NULL, *train = NULL, *val = NULL;
    qat_batch_iter *it = NULL;
    qat_model *m = NULL, *m2 = NULL, *m3 = NULL;
    qat_qmodel *qm = NULL, *qm2 = NULL;
    qat_ctx *ctx = NULL;
    qat_optim *opt = NULL, *opt2 = NULL;
    qat_named_tensor *all = NULL;
    qat_train_state st, st2, st3;
    qat_train_state_init(&st);
    qat_train_state_init(&st2);
    qat_train_state_init(&st3);
    float xb[BATCH * 28 * 28];
    uint8_t yb[BATCH];
    int n;
    char path[512], fpath[512], epath[512];
    qat_rt_model *rt = NULL;
    snprintf(path, sizeof path, "%s", run_path("qat.h5"));
    snprintf(fpath, sizeof fpath, "%s", run_path("float.h5"));
    snprintf(epath, sizeof epath, "%s", run_path("int8.h5"));

    /* data */
    TRY(qat_dataset_load_fashion_mnist(g_data_dir, 0, &ds));
    TRY(qat_dataset_split(ds, 16, 3, &train, &val));
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = BATCH;
    bo.seed = 5;
    bo.crop_padding = 2;
    bo.hflip_prob = 0.5f;
    TRY(qat_batch_iter_create(train, &bo, &it));

    /* model, context (a small arena: it grows, then settles) */
    TRY(build_model(&m, where));
    TRYP(ctx, qat_ctx_create(16 << 10));

    /* prepare and calibrate */
    qat_qconfig cfg;
    TRY(qat_qconfig_init(&cfg, c->spec));
    qat_qconfig_set_calibrator(&cfg, (qat_calibrator)c->calib);
    TRYP(qm, qat_qmodel_prepare(m, &cfg));
    qat_qmodel_set_fake_quant(qm, 0);
    qat_qmodel_set_observers(qm, 1);
    TRY(qat_batch_iter_next(it, xb, yb, &n));
    qat_tensor *x;
    TRYP(x, qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb));
    TRY(qat_qmodel_calibrate(ctx, qm, x)); /* a failed forward: the context's status */
    TRY(qat_ctx_reset(ctx));
    TRY(qat_qmodel_finalize(qm));
    qat_qmodel_set_observers(qm, 1);

    /* the optimizer over the weights and the learnable scales */
    int np;
    all = param_list(m, qm, all, &np);
    qat_optim_options oo = qat_optim_options_defaults(c->opt);
    oo.lr = 0.05;
    oo.weight_decay = 1e-4;
    if (c->opt == QAT_OPTIM_SGD) oo.momentum = 0.9;
    TRYP(opt, qat_optim_create(all, np, &oo));
    qat_schedule sc = qat_schedule_cosine(0.05, 0.001, 10);
    TRY(qat_optim_set_schedule(opt, &sc));

    /* two steps: the first grows the arena, the reset settles it */
    qat_ctx_set_training(ctx, 1);
    for (int s = 0; s < 2; s++) {
        TRY(qat_batch_iter_next(it, xb, yb, &n));
        TRYP(x, qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb));
        qat_tensor *logits = qat_qmodel_forward(ctx, qm, x);
        qat_tensor *loss = qat_cross_entropy(ctx, logits, yb);
        qat_optim_zero_grad(opt);
        TRY(qat_backward(ctx, loss));
        TRY(qat_optim_step(opt));
        qat_qmodel_clamp_params(qm);
        dg_tensor(d, loss);
        TRY(qat_ctx_reset(ctx));
    }
    dg_qmodel(d, qm);

    /* checkpoints: the float model, then the whole QAT state, read back */
    qat_epoch_record er = {.epoch = 0, .train_loss = 1.5, .lr = 0.05};
    TRY(qat_train_state_add_epoch(&st, &er));
    er.epoch = 1;
    TRY(qat_train_state_add_epoch(&st, &er));
    st.epoch = 2;
    st.global_step = qat_optim_step_count(opt);
    st.seed = 5;
    qat_batch_iter_get_state(it, &st.iter);
    snprintf(st.recipe.arch, sizeof st.recipe.arch, "alloc-test");
    TRY(qat_checkpoint_save(fpath, m, opt, &st));
    TRYP(m3, qat_model_load(fpath));
    TRY(qat_checkpoint_load(fpath, m3, NULL, &st3));
    dg_model(d, m3);
    dg_add(d, &st3.n_history, sizeof st3.n_history);
    qat_qrecipe rec = {.method = "qat", .calib_size = BATCH, .freeze_bn_after = 1, .freeze_observers_after = 2};
    snprintf(rec.spec, sizeof rec.spec, "%s", c->spec);
    snprintf(rec.calib, sizeof rec.calib, "%s", qat_calibrator_name((qat_calibrator)c->calib));
    TRY(qat_qcheckpoint_save(path, qm, opt, &st, &rec));
    qat_export_opts eo = qat_export_opts_defaults();
    TRY(qat_export_int8(qm, epath, &eo));
    TRY(qat_rt_load_file(epath, &rt));
    TRY(qat_rt_prepare(rt, 1));
    int8_t logits[16];
    ck_assert_int_le(qat_rt_num_classes(rt), 16);
    TRY(qat_rt_run_f32(rt, xb, 1, logits));
    dg_add(d, logits, (size_t)qat_rt_num_classes(rt));
    qat_qrecipe rec2;
    TRYP(qm2, qat_qmodel_load(path, &m2, &st2, &rec2));
    all = param_list(m2, qm2, all, &np);
    TRYP(opt2, qat_optim_load(path, all, np));
    dg_qmodel(d, qm2);
    int64_t steps = qat_optim_step_count(opt2);
    dg_add(d, &steps, sizeof steps);
    dg_add(d, &st2.n_history, sizeof st2.n_history);
    rc = QAT_OK;
done:
    free(all);
    qat_optim_free(opt);
    qat_optim_free(opt2);
    qat_train_state_free(&st);
    qat_train_state_free(&st2);
    qat_train_state_free(&st3);
    qat_qmodel_free(qm);
    qat_qmodel_free(qm2);
    qat_model_free(m);
    qat_model_free(m2);
    qat_model_free(m3);
    qat_ctx_free(ctx);
    qat_batch_iter_free(it);
    qat_dataset_free(ds);
    qat_dataset_free(train);
    qat_dataset_free(val);
    qat_rt_free(rt);
    remove(path);
    remove(fpath);
    remove(epath);
    return rc;
}

START_TEST(test_qat_w8a8)
{
    const qat_case c = {"w8a8", QAT_CALIBRATOR_EMA, QAT_OPTIM_SGD};
    sweep("QAT step w8a8 (EMA, SGD)", run_qat, &c);
}
END_TEST

START_TEST(test_qat_w4a4_lsq)
{
    const qat_case c = {"w4a4", QAT_CALIBRATOR_PERCENTILE, QAT_OPTIM_ADAMW};
    sweep("QAT step w4a4 (LSQ, percentile, AdamW)", run_qat, &c);
}
END_TEST

START_TEST(test_qat_codebook)
{
    /* k-means at the first observation, centroid gradients, assignment */
    const qat_case c = {"wc16a8", QAT_CALIBRATOR_MINMAX, QAT_OPTIM_SGD};
    sweep("QAT step wc16a8 (k-means, MinMax, SGD)", run_qat, &c);
}
END_TEST

/* ---- PTQ with the histogram calibrators, float training, resume ---- */

#define PTQ_N 16

/* input 2x6x6 -> conv(3, k3, p1) bn relu -> avgpool 2 -> flat -> fc(4) */
static int build_small(qat_model **out, const char **where)
{
    int rc = QAT_OK, x;
    qat_model *m = NULL;
    *out = NULL;
    TRYP(m, qat_model_create(2, 6, 6));
    TRY(x = qat_model_conv2d(m, NULL, 0, 3, 3, 1, 1, 1));
    TRY(x = qat_model_batchnorm2d(m, NULL, x));
    TRY(x = qat_model_relu(m, NULL, x));
    TRY(x = qat_model_avgpool2d(m, NULL, x, 2, 2));
    TRY(x = qat_model_flatten(m, NULL, x));
    TRY(x = qat_model_linear(m, NULL, x, 4, 1));
    TRY(qat_model_init(m, 9));
    *out = m;
    return QAT_OK;
done:
    qat_model_free(m);
    return rc;
}

static int run_ptq(const void *arg, digest *d, const char **where)
{
    (void)arg;
    int rc = QAT_OK;
    qat_dataset *ds = NULL, *sub = NULL;
    qat_model *m = NULL, *m2 = NULL;
    qat_qmodel *qm = NULL;
    qat_ctx *ctx = NULL;
    qat_optim *opt = NULL, *opt2 = NULL;
    qat_observer *obs = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s", run_path("float-resume.h5"));
    uint8_t img[PTQ_N * 2 * 6 * 6], lab[PTQ_N];
    qat_rng r;
    qat_rng_seed(&r, 21);
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)qat_rng_below(&r, 256);
    for (int i = 0; i < PTQ_N; i++) lab[i] = (uint8_t)(i % 4);
    TRYP(ds, qat_dataset_from_memory(img, lab, PTQ_N, 2, 6, 6, 4));
    TRY(qat_dataset_subset(ds, 4, 8, &sub));
    TRY(build_small(&m, where));
    TRYP(ctx, qat_ctx_create(64 << 10));
    qat_tensor *x;
    TRYP(x, qat_new(ctx, 4, (int[]){8, 2, 6, 6}));
    TRY(qat_dataset_normalize_into(sub, NULL, 8, x->data));

    /* PTQ: percentile histograms (2048 bins), then min/max without
     * observing again */
    qat_qconfig cfg;
    TRY(qat_qconfig_init(&cfg, "w8a8"));
    qat_qconfig_set_calibrator(&cfg, QAT_CALIBRATOR_PERCENTILE);
    TRYP(qm, qat_qmodel_prepare(m, &cfg));
    qat_qmodel_set_fake_quant(qm, 0);
    qat_qmodel_set_observers(qm, 1);
    TRY(qat_qmodel_calibrate(ctx, qm, x));
    TRY(qat_qmodel_finalize(qm));
    dg_qmodel(d, qm);
    TRY(qat_qmodel_recalibrate(qm, QAT_CALIBRATOR_MINMAX));
    dg_qmodel(d, qm);
    qat_layer_error errs[8];
    int nu = qat_qmodel_num_units(qm);
    ck_assert_int_le(nu, 8);
    TRY(qat_qmodel_layer_errors(ctx, qm, x, errs));
    for (int u = 0; u < nu; u++) dg_add(d, &errs[u].mse, sizeof errs[u].mse);
    TRY(qat_ctx_reset(ctx));
    qat_qmodel_free(qm);
    qm = NULL;

    /* the searching calibrators (KL, MSE) on a histogram observer of few
     * bins (their cost grows with the bins, their allocations do not) */
    qat_observer_opts oopt = qat_observer_opts_defaults(QAT_OBSERVER_HISTOGRAM);
    oopt.bins = 64;
    TRYP(obs, qat_observer_create(&oopt));
    TRY(qat_observer_observe(obs, x->data, x->numel));
    const qat_qscheme sch = qat_qscheme_activation(8);
    for (int k = 0; k < 3; k++) {
        static const qat_calib_method how[3] = {QAT_CALIB_KL, QAT_CALIB_MSE, QAT_CALIB_PERCENTILE};
        float sc;
        int32_t zp;
        TRY(qat_observer_qparams_with(obs, &sch, how[k], 99.9, &sc, &zp));
        dg_add(d, &sc, sizeof sc);
        dg_add(d, &zp, sizeof zp);
    }

    /* a float training step, a checkpoint with the optimizer, a resume */
    qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
    oo.momentum = 0.9;
    TRYP(opt, qat_optim_create(qat_model_params(m), qat_model_num_params(m), &oo));
    qat_ctx_set_training(ctx, 1);
    TRYP(x, qat_new(ctx, 4, (int[]){8, 2, 6, 6}));
    TRY(qat_dataset_normalize_into(sub, NULL, 8, x->data));
    qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, x), sub->labels);
    TRY(qat_backward(ctx, loss));
    TRY(qat_optim_step(opt));
    TRY(qat_ctx_reset(ctx));
    dg_model(d, m);
    TRY(qat_checkpoint_save(path, m, opt, NULL));
    qat_file_info fi;
    TRY(qat_checkpoint_info(path, &fi));
    TRY(build_small(&m2, where));
    TRYP(opt2, qat_optim_create(qat_model_params(m2), qat_model_num_params(m2), &oo));
    TRY(qat_checkpoint_load(path, m2, opt2, NULL));
    dg_model(d, m2);
    int64_t steps = qat_optim_step_count(opt2);
    dg_add(d, &steps, sizeof steps);
    rc = QAT_OK;
done:
    qat_optim_free(opt);
    qat_optim_free(opt2);
    qat_qmodel_free(qm);
    qat_observer_free(obs);
    qat_model_free(m);
    qat_model_free(m2);
    qat_ctx_free(ctx);
    qat_dataset_free(ds);
    qat_dataset_free(sub);
    remove(path);
    return rc;
}

START_TEST(test_ptq_float)
{
    sweep("PTQ, histogram calibrators, layer errors, float step and resume", run_ptq, NULL);
}
END_TEST

/* ---- (b) the int8 runtime ---- */

#define RT_BATCH 4

static unsigned char *g_rt_file;
static size_t g_rt_size;
static uint8_t g_rt_pixels[RT_BATCH * 28 * 28];

static void rt_setup(void)
{
    FILE *f = fopen(tu_data_path("lenet5-small.int8.h5"), "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    g_rt_size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    g_rt_file = malloc(g_rt_size);
    ck_assert_ptr_nonnull(g_rt_file);
    ck_assert_uint_eq(fread(g_rt_file, 1, g_rt_size, f), g_rt_size);
    fclose(f);
    qat_rng r;
    qat_rng_seed(&r, 11);
    for (size_t i = 0; i < sizeof g_rt_pixels; i++) g_rt_pixels[i] = (uint8_t)qat_rng_below(&r, 256);
}

static void rt_teardown(void)
{
    free(g_rt_file);
    g_rt_file = NULL;
}

static int run_rt(const void *arg, digest *d, const char **where)
{
    const qat_rt_isa isa = *(const qat_rt_isa *)arg;
    int rc = QAT_OK;
    qat_rt_model *a = NULL, *b = NULL;
    int8_t logits[RT_BATCH * 16];
    TRY(qat_rt_load_file(tu_data_path("lenet5-small.int8.h5"), &a));
    TRY(qat_rt_prepare(a, 2));
    TRY(qat_rt_set_isa(a, isa));  /* repacks the prepared weights */
    TRY(qat_rt_prepare(a, RT_BATCH)); /* re-plans */
    int nc = qat_rt_num_classes(a);
    ck_assert_int_le(nc, 16);
    TRY(qat_rt_run_u8(a, g_rt_pixels, RT_BATCH, logits));
    dg_add(d, logits, (size_t)RT_BATCH * nc);
    TRY(qat_rt_load_memory(g_rt_file, g_rt_size, &b));
    TRY(qat_rt_set_isa(b, isa));
    TRY(qat_rt_prepare(b, 1));
    TRY(qat_rt_run_u8(b, g_rt_pixels, 1, logits));
    dg_add(d, logits, (size_t)nc);
done:
    qat_rt_free(a);
    qat_rt_free(b);
    return rc;
}

START_TEST(test_runtime)
{
    static const qat_rt_isa isas[] = {QAT_RT_ISA_REF, QAT_RT_ISA_AVX2, QAT_RT_ISA_AVX512_VNNI};
    qat_rt_isa isa = isas[_i];
    if (isa != QAT_RT_ISA_REF && qat_rt_best_isa() < isa) {
        fprintf(stderr, "int8 runtime (%s): not on this CPU, skipped\n", qat_rt_isa_name(isa));
        return;
    }
    char what[64];
    snprintf(what, sizeof what, "int8 runtime (%s)", qat_rt_isa_name(isa));
    sweep(what, run_rt, &isa);
}
END_TEST

/* ---- the context's sticky error ---- */

static void failing_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    (void)e;
    qat_ctx_fail(ctx, qat_error(QAT_ERR_UNSUPPORTED, "custom op: cannot do it"));
}

static int ran_after;
static void later_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    (void)ctx, (void)e;
    ran_after = 1;
}

START_TEST(test_ctx_sticky)
{
    qat_ctx *ctx = qat_ctx_create(0);
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(qat_ctx_status(ctx), QAT_OK);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);
    /* a backward function that fails: backward stops there and reports it */
    qat_tensor *p = qat_new_leaf(ctx, 1, (int[]){3}, (float[]){1, 2, 3});
    qat_tensor *q = qat_relu(ctx, p);
    ck_assert_int_eq(qat_tape_record(ctx, "custom", failing_backward, q, 1, &p, NULL), QAT_OK);
    qat_tensor *r = qat_relu(ctx, q);
    ck_assert_int_eq(qat_tape_record(ctx, "later", later_backward, r, 1, &q, NULL), QAT_OK);
    qat_tensor *loss = qat_sum(ctx, r);
    ran_after = 0;
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_ERR_UNSUPPORTED);
    ck_assert_str_eq(qat_last_error(), "custom op: cannot do it");
    ck_assert_int_eq(ran_after, 1); /* it ran before the failing one (reverse order) */
    ck_assert_int_eq(qat_ctx_status(ctx), QAT_ERR_UNSUPPORTED);
    /* the first failure sticks, its message comes back */
    qat_ctx_fail(ctx, qat_error(QAT_ERR_IO, "second"));
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_ERR_UNSUPPORTED);
    ck_assert_str_eq(qat_last_error(), "custom op: cannot do it");
    qat_clear_error();
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_ERR_UNSUPPORTED);
    ck_assert_str_eq(qat_last_error(), "custom op: cannot do it");
    ck_assert_int_eq(qat_ctx_status(ctx), QAT_OK);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);
    ck_assert_int_eq(qat_ctx_fail(ctx, QAT_OK), QAT_OK);
    ck_assert_int_eq(qat_ctx_status(ctx), QAT_OK);

    /* an allocation failure inside a backward function (the gradient of a
     * persistent tensor that did not have one) */
    qat_tensor *w = qat_tensor_create(1, (int[]){3}, 0);
    ck_assert_ptr_nonnull(w);
    w->requires_grad = 1;
    loss = qat_sum(ctx, qat_mul(ctx, w, w));
    ck_assert_ptr_nonnull(loss);
    qat_alloc_fail_at(1);
    qat_clear_error();
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_ERR_NOMEM);
    qat_alloc_fail_at(0);
    ck_assert_str_eq(qat_last_error(), "gradient: out of memory");
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_ERR_NOMEM);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);
    /* and with memory, the same step works */
    loss = qat_sum(ctx, qat_mul(ctx, w, w));
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    ck_assert_float_eq(w->grad[2], 0.0f); /* d/dw sum(w*w) = 2w, w = 0 */
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);

    qat_tensor_free(w);
    qat_ctx_free(ctx);

    /* an arena failure in a forward op: the op returns NULL, backward and
     * reset report the allocation, not the NULL loss */
    ctx = qat_ctx_create(4096);
    ck_assert_ptr_nonnull(ctx);
    qat_tensor *big = qat_new_leaf(ctx, 2, (int[]){16, 16}, NULL);
    ck_assert_ptr_nonnull(big);
    memset(big->data, 0, big->numel * sizeof(float));
    qat_tensor *y = qat_relu(ctx, big); /* the tape is allocated */
    ck_assert_ptr_nonnull(y);
    qat_alloc_fail_at(1);
    for (int k = 0; k < 64 && (y = qat_relu(ctx, big)); k++) {
    } /* until the arena needs a chunk, which fails */
    qat_alloc_fail_at(0);
    ck_assert_ptr_null(y);
    ck_assert_int_eq(qat_ctx_status(ctx), QAT_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "arena"));
    char msg[256];
    snprintf(msg, sizeof msg, "%s", qat_last_error());
    qat_clear_error();
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, y)), QAT_ERR_NOMEM);
    ck_assert_str_eq(qat_last_error(), msg);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_ERR_NOMEM);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);
    /* the context works on */
    y = qat_relu(ctx, qat_new_leaf(ctx, 2, (int[]){16, 16}, big->data));
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, y)), QAT_OK);
    ck_assert_int_eq(qat_ctx_reset(ctx), QAT_OK);
    qat_ctx_free(ctx);
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *t = tcase_create("ctx");
    tcase_add_test(t, test_ctx_sticky);
    suite_add_tcase(s, t);

    t = tcase_create("qat");
    tcase_set_timeout(t, 600);
    tcase_add_unchecked_fixture(t, data_setup, NULL);
    tcase_add_test(t, test_qat_w8a8);
    tcase_add_test(t, test_qat_w4a4_lsq);
    tcase_add_test(t, test_qat_codebook);
    tcase_add_test(t, test_ptq_float);
    suite_add_tcase(s, t);

    t = tcase_create("runtime");
    tcase_set_timeout(t, 600);
    tcase_add_unchecked_fixture(t, rt_setup, rt_teardown);
    tcase_add_loop_test(t, test_runtime, 0, 3);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
