/* Staged QAT (qat/schedule.h, `qat train --schedule`): the grammar and its
 * errors, the stage switches, the optimizer that continues over a new
 * parameter list, a stage change after a checkpoint reload on a tiny
 * synthetic model, and `qat train` itself (QAT_EXE): an uninterrupted staged
 * run and one resumed after epoch 1 and after epoch 2 end with the same
 * bits; a one-stage schedule is the unstaged run; mismatches are errors. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "qat/io.h"
#include "qat/optim.h"
#include "qat/qio.h"
#include "qat/quant.h"
#include "qat/schedule.h"
#include "testutil.h"

#define OK(e)                                                                                  \
    do {                                                                                       \
        int rc_ = (e);                                                                         \
        ck_assert_msg(rc_ == QAT_OK, "%s -> %d: %s", #e, rc_, qat_last_error());               \
    } while (0)
#define NN(p) ck_assert_msg((p) != NULL, "%s is NULL: %s", #p, qat_last_error())

/* ---- grammar ---- */

START_TEST(test_parse_stages)
{
    qat_quant_schedule s;
    OK(qat_quant_schedule_parse("w8a8:1,w4a4:2,w2a8:3", NULL, &s));
    ck_assert_int_eq(s.n, 3);
    ck_assert_str_eq(s.stage[0].spec, "w8a8");
    ck_assert_str_eq(s.stage[2].spec, "w2a8");
    ck_assert_int_eq(s.stage[1].epochs, 2);
    ck_assert_int_eq(s.stage[2].part, QAT_STAGE_ALL);
    ck_assert_int_eq(s.stage[2].units, 0);
    ck_assert_int_eq(qat_quant_schedule_epochs(&s), 6);
    /* epoch -> stage: 0 | 1 2 | 3 4 5, past the end the last */
    const int want[8] = {0, 1, 1, 2, 2, 2, 2, 2};
    for (int ep = 0; ep < 8; ep++) ck_assert_int_eq(qat_quant_schedule_stage_at(&s, ep), want[ep]);

    /* defaults from the run's spec; parts, units, all */
    OK(qat_quant_schedule_parse("weights:1,units=3+acts:2,w8a8+all:1,:1", "w4a4", &s));
    ck_assert_int_eq(s.n, 4);
    ck_assert_str_eq(s.stage[0].spec, "w4a4");
    ck_assert_int_eq(s.stage[0].part, QAT_STAGE_WEIGHTS);
    ck_assert_int_eq(s.stage[1].part, QAT_STAGE_ACTS);
    ck_assert_int_eq(s.stage[1].units, 3);
    ck_assert_str_eq(s.stage[2].spec, "w8a8");
    ck_assert_int_eq(s.stage[2].part, QAT_STAGE_ALL);
    ck_assert_str_eq(s.stage[3].spec, "w4a4");

    /* the canonical form parses back to the same schedule */
    char buf[QAT_SCHEDULE_TEXT_MAX];
    OK(qat_quant_schedule_format(&s, buf, sizeof buf));
    ck_assert_str_eq(buf, "w4a4+weights:1,w4a4+acts+units=3:2,w8a8:1,w4a4:1");
    qat_quant_schedule t;
    OK(qat_quant_schedule_parse(buf, NULL, &t));
    ck_assert(!memcmp(&s, &t, sizeof s));
    ck_assert_int_eq(qat_quant_schedule_format(&s, buf, 10), QAT_ERR_ARG);
}
END_TEST

/* Each bad schedule fails with QAT_ERR_ARG and a message holding `says`. */
static const struct {
    const char *text, *dflt, *says;
} bad[] = {
    {"", "w8a8", "empty"},
    {"w8a8", NULL, "stage 1 'w8a8': no ':EPOCHS'"},
    {"w8a8:0", NULL, "epochs '0'"},
    {"w8a8:1,w4a4:x", NULL, "stage 2 'w4a4:x': epochs 'x'"},
    {"w8a8:1,,w4a4:1", NULL, "stage 2 is empty"},
    {"w9a8:1", NULL, "stage 1 'w9a8:1': quantization spec 'w9a8'"},
    {"weights:1", NULL, "names no spec"},
    {"w8a8+w4a4:1", NULL, "repeats"},
    {"weights+acts:1", "w8a8", "repeats"},
    {"all+units=2:1", "w8a8", "repeats"},
    {"units=0:1", "w8a8", "units=K"},
    {"units=2x:1", "w8a8", "units=K"},
    {"w8a8+:1", NULL, "empty item"},
    {"w8a8:1:2", NULL, "stage 1 'w8a8:1:2'"},
    {"weights:1", "w1a9", "default spec 'w1a9'"},
};

START_TEST(test_parse_errors)
{
    qat_quant_schedule s;
    int rc = qat_quant_schedule_parse(bad[_i].text, bad[_i].dflt, &s);
    ck_assert_msg(rc == QAT_ERR_ARG, "'%s' -> %d", bad[_i].text, rc);
    ck_assert_msg(strstr(qat_last_error(), bad[_i].says), "'%s': message '%s' lacks '%s'", bad[_i].text,
                  qat_last_error(), bad[_i].says);
    ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(test_too_many_stages)
{
    char text[512] = "";
    for (int k = 0; k <= QAT_MAX_STAGES; k++) strcat(text, k ? ",w8a8:1" : "w8a8:1");
    qat_quant_schedule s;
    ck_assert_int_eq(qat_quant_schedule_parse(text, NULL, &s), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "more than 16 stages"), "%s", qat_last_error());
    text[strlen(text) - 7] = '\0'; /* exactly QAT_MAX_STAGES */
    OK(qat_quant_schedule_parse(text, NULL, &s));
    ck_assert_int_eq(s.n, QAT_MAX_STAGES);
}
END_TEST

/* ---- a tiny model: input 1x8x8, conv(4)+BN+ReLU, max-pool, linear(4) ---- */

#define NIMG 64
#define BATCH 16

static qat_model *tiny_model(void)
{
    qat_model *m = qat_model_create(1, 8, 8);
    NN(m);
    int c = qat_model_conv2d(m, "conv", 0, 4, 3, 1, 1, 1);
    int b = qat_model_batchnorm2d(m, "bn", c);
    int r = qat_model_relu(m, "relu", b);
    int p = qat_model_maxpool2d(m, "pool", r, 2, 2);
    int f = qat_model_flatten(m, "flat", p);
    ck_assert_int_ge(qat_model_linear(m, "fc", f, 4, 1), 0);
    OK(qat_model_init(m, 3));
    return m;
}

/* Synthetic data: each class adds its own pattern to noise. */
static float g_x[NIMG * 64];
static uint8_t g_y[NIMG];

static void make_data(void)
{
    qat_rng r;
    qat_rng_seed(&r, 11);
    tu_fill_uniform(g_x, sizeof g_x / sizeof g_x[0], -1, 1, &r);
    for (int i = 0; i < NIMG; i++) {
        g_y[i] = (uint8_t)(i % 4);
        for (int k = 0; k < 16; k++) g_x[i * 64 + g_y[i] * 16 + k] += 1.5f;
    }
}

static qat_tensor *batch(qat_ctx *ctx, int s, uint8_t **y)
{
    int first = (s * BATCH) % NIMG;
    *y = g_y + first;
    return qat_from(ctx, 4, (int[]){BATCH, 1, 8, 8}, g_x + first * 64);
}

/* A stage's start as `qat train` makes it: prepare, calibrate (fake-quant
 * off), finalize, observers on, the stage's switches. */
static qat_qmodel *start_stage(qat_ctx *ctx, qat_model *m, const qat_stage *st)
{
    qat_qconfig cfg;
    OK(qat_qconfig_init(&cfg, st->spec));
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    NN(qm);
    qat_qmodel_set_fake_quant(qm, 0);
    for (int s = 0; s < 2; s++) {
        uint8_t *y;
        OK(qat_qmodel_calibrate(ctx, qm, batch(ctx, s, &y)));
        qat_ctx_reset(ctx);
    }
    OK(qat_qmodel_finalize(qm));
    qat_qmodel_set_observers(qm, 1);
    OK(qat_qmodel_set_stage_fake_quant(qm, st));
    return qm;
}

static qat_named_tensor *param_list(qat_qmodel *qm, int *n)
{
    *n = qat_qmodel_parameters(qm, NULL, 0);
    qat_named_tensor *p = malloc((size_t)(*n + 1) * sizeof *p);
    NN(p);
    ck_assert_int_eq(qat_qmodel_parameters(qm, p, *n), *n);
    return p;
}

static qat_optim *make_optim(qat_qmodel *qm)
{
    int n;
    qat_named_tensor *p = param_list(qm, &n);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = 0.05;
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(p, n, &o);
    NN(opt);
    free(p);
    qat_schedule sc = qat_schedule_cosine(0.05, 0, 12);
    OK(qat_optim_set_schedule(opt, &sc));
    return opt;
}

static void train_steps(qat_ctx *ctx, qat_qmodel *qm, qat_optim *opt, int from, int to)
{
    for (int s = from; s < to; s++) {
        uint8_t *y;
        qat_ctx_set_training(ctx, 1);
        qat_tensor *x = batch(ctx, s, &y);
        qat_tensor *l = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, x), y);
        NN(l);
        qat_optim_zero_grad(opt);
        OK(qat_backward(ctx, l));
        OK(qat_optim_step(opt));
        qat_qmodel_clamp_params(qm);
        ck_assert(isfinite(l->data[0]));
        OK(qat_ctx_reset(ctx));
    }
}

/* ---- the stage switches ---- */

START_TEST(test_stage_switches)
{
    qat_ctx *ctx = qat_ctx_create(0);
    make_data();
    qat_model *m = tiny_model();
    qat_stage st = {.spec = "w8a8", .part = QAT_STAGE_ALL, .units = 0, .epochs = 1};
    qat_qmodel *qm = start_stage(ctx, m, &st);
    int nu = qat_qmodel_num_units(qm); /* input, conv, fc */
    ck_assert_int_eq(nu, 3);
    const struct {
        qat_stage_part part;
        int units;
        int w[3], a[3]; /* per unit: weight / act fake-quant */
    } cases[] = {
        {QAT_STAGE_ALL, 0, {1, 1, 1}, {1, 1, 1}},     {QAT_STAGE_WEIGHTS, 0, {1, 1, 1}, {0, 0, 0}},
        {QAT_STAGE_ACTS, 0, {0, 0, 0}, {1, 1, 1}},    {QAT_STAGE_ALL, 2, {1, 1, 0}, {1, 1, 0}},
        {QAT_STAGE_WEIGHTS, 1, {1, 0, 0}, {0, 0, 0}}, {QAT_STAGE_ALL, 3, {1, 1, 1}, {1, 1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        st.part = cases[c].part;
        st.units = cases[c].units;
        OK(qat_qmodel_set_stage_fake_quant(qm, &st));
        for (int u = 0; u < nu; u++) {
            ck_assert_msg(qat_qmodel_unit(qm, u)->weight.fake_quant == cases[c].w[u], "case %zu unit %d weight", c, u);
            ck_assert_msg(qat_qmodel_unit(qm, u)->act.fake_quant == cases[c].a[u], "case %zu unit %d act", c, u);
        }
    }
    /* weights only: the logits are the weight-quantized float graph's, so
     * they differ from both the float model's and the all-quantized one's */
    uint8_t *y;
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    float out[3][BATCH * 4];
    qat_stage_part parts[3] = {QAT_STAGE_ALL, QAT_STAGE_WEIGHTS, QAT_STAGE_ALL};
    for (int k = 0; k < 3; k++) {
        st.part = parts[k];
        st.units = 0;
        OK(qat_qmodel_set_stage_fake_quant(qm, &st));
        if (k == 2) qat_qmodel_set_fake_quant(qm, 0);
        qat_tensor *l = qat_qmodel_forward(ctx, qm, batch(ctx, 0, &y));
        NN(l);
        memcpy(out[k], l->data, sizeof out[k]);
        qat_ctx_reset(ctx);
    }
    ck_assert(memcmp(out[0], out[1], sizeof out[0]) && memcmp(out[1], out[2], sizeof out[0]));
    st.units = 4;
    ck_assert_int_eq(qat_qmodel_set_stage_fake_quant(qm, &st), QAT_ERR_ARG);
    ck_assert_msg(strstr(qat_last_error(), "units=4") && strstr(qat_last_error(), "3 quantization units"), "%s",
                  qat_last_error());
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- the optimizer across a re-prepare ---- */

START_TEST(test_optim_continue)
{
    qat_ctx *ctx = qat_ctx_create(0);
    make_data();
    qat_model *m = tiny_model();
    qat_stage st8 = {.spec = "w8a8", .epochs = 1}, st4 = {.spec = "w4a4", .epochs = 1};
    qat_qmodel *qm = start_stage(ctx, m, &st8);
    qat_optim *opt = make_optim(qm);
    train_steps(ctx, qm, opt, 0, 3);
    qat_qmodel *qm4 = start_stage(ctx, m, &st4);
    ck_assert_int_gt(qat_qmodel_num_params(qm4), 0); /* w4a4 has LSQ scales, w8a8 none */
    int n;
    qat_named_tensor *p = param_list(qm4, &n);
    qat_optim *o2 = qat_optim_continue(opt, p, n);
    NN(o2);
    free(p);
    ck_assert_int_eq(qat_optim_step_count(o2), 3);
    ck_assert(qat_optim_lr(o2) == qat_optim_lr(opt));
    NN(qat_optim_schedule(o2));
    ck_assert_int_eq(qat_optim_schedule(o2)->total_steps, 12);
    ck_assert_int_eq(qat_optim_num_params(o2), qat_model_num_params(m) + qat_qmodel_num_params(qm4));
    size_t ns;
    int64_t *steps = qat_optim_param_steps(o2, &ns);
    for (int i = 0; i < qat_optim_num_params(o2); i++) {
        const char *name = qat_optim_param(o2, i)->name;
        char bname[160];
        snprintf(bname, sizeof bname, "momentum/%s", name);
        const char *sn;
        float *d;
        size_t len;
        OK(qat_optim_state(o2, qat_optim_find_state(o2, bname), &sn, &d, &len));
        double sum = 0;
        for (size_t k = 0; k < len; k++) sum += fabs(d[k]);
        if (i < qat_model_num_params(m)) { /* a float parameter: its state bit for bit */
            float *d0;
            size_t len0;
            OK(qat_optim_state(opt, qat_optim_find_state(opt, bname), &sn, &d0, &len0));
            ck_assert_int_eq(len, len0);
            ck_assert_msg(!memcmp(d, d0, len * sizeof *d), "%s: momentum not carried", name);
            ck_assert_msg(sum > 0, "%s: momentum is zero after 3 steps", name);
            ck_assert_int_eq(steps[i], 3);
            ck_assert(qat_optim_param_weight_decay(o2, i) == qat_optim_param_weight_decay(opt, i));
        } else { /* a new LSQ parameter: fresh */
            ck_assert_msg(sum == 0, "%s: new parameter has momentum", name);
            ck_assert_int_eq(steps[i], 0);
            ck_assert(qat_optim_param_weight_decay(o2, i) == 0);
        }
    }
    /* the same-named parameter with another tensor is not carried */
    qat_qmodel *qm4b = start_stage(ctx, m, &st4);
    train_steps(ctx, qm4, o2, 3, 4);
    p = param_list(qm4b, &n);
    qat_optim *o3 = qat_optim_continue(o2, p, n);
    NN(o3);
    free(p);
    steps = qat_optim_param_steps(o3, &ns);
    ck_assert_int_eq(steps[0], 4);
    ck_assert_int_eq(steps[n - 1], 0);
    qat_optim_free(o3);
    qat_optim_free(o2);
    qat_optim_free(opt);
    qat_qmodel_free(qm4b);
    qat_qmodel_free(qm4);
    qat_qmodel_free(qm);
    qat_model_free(m);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- a stage change after a checkpoint reload ---- */

static void assert_same_tensors(const qat_named_tensor *a, const qat_named_tensor *b, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(a[i].name, b[i].name);
        ck_assert_int_eq(a[i].t->numel, b[i].t->numel);
        ck_assert_msg(!memcmp(a[i].t->data, b[i].t->data, a[i].t->numel * sizeof(float)), "%s %s differs", what,
                      a[i].name);
    }
}

/* w8a8 for 4 steps, then w4a4 (re-prepared) for 4: once in one process,
 * once saved after step 4 and reloaded before the stage change. */
START_TEST(test_stage_change_after_reload)
{
    const char *path = tu_tmp_path("staged.h5");
    qat_ctx *ctx = qat_ctx_create(0);
    make_data();
    qat_stage st8 = {.spec = "w8a8", .epochs = 1}, st4 = {.spec = "w4a4", .epochs = 1};
    qat_model *ma = tiny_model(), *mb = NULL;
    qat_qmodel *qa = start_stage(ctx, ma, &st8);
    qat_optim *oa = make_optim(qa);
    train_steps(ctx, qa, oa, 0, 4);
    OK(qat_qcheckpoint_save(path, qa, oa, NULL, NULL));
    int n;
    /* run A goes on */
    qat_qmodel *qa4 = start_stage(ctx, ma, &st4);
    qat_named_tensor *p = param_list(qa4, &n);
    qat_optim *oa4 = qat_optim_continue(oa, p, n);
    NN(oa4);
    free(p);
    train_steps(ctx, qa4, oa4, 4, 8);
    /* run B from the file */
    qat_qmodel *qb = qat_qmodel_load(path, &mb, NULL, NULL);
    NN(qb);
    p = param_list(qb, &n);
    qat_optim *ob = qat_optim_load(path, p, n);
    NN(ob);
    free(p);
    qat_qmodel *qb4 = start_stage(ctx, mb, &st4);
    p = param_list(qb4, &n);
    qat_optim *ob4 = qat_optim_continue(ob, p, n);
    NN(ob4);
    free(p);
    train_steps(ctx, qb4, ob4, 4, 8);

    assert_same_tensors(qat_model_params(ma), qat_model_params(mb), qat_model_num_params(ma), "parameter");
    assert_same_tensors(qat_model_buffers(ma), qat_model_buffers(mb), qat_model_num_buffers(ma), "buffer");
    ck_assert_int_eq(qat_qmodel_num_params(qa4), qat_qmodel_num_params(qb4));
    assert_same_tensors(qat_qmodel_params(qa4), qat_qmodel_params(qb4), qat_qmodel_num_params(qa4), "LSQ");
    for (int i = 0; i < qat_optim_num_state(oa4); i++) {
        const char *na, *nb;
        float *da, *db;
        size_t la, lb;
        OK(qat_optim_state(oa4, i, &na, &da, &la));
        OK(qat_optim_state(ob4, i, &nb, &db, &lb));
        ck_assert_str_eq(na, nb);
        ck_assert_msg(la == lb && !memcmp(da, db, la * sizeof *da), "optimizer state %s differs", na);
    }
    /* the weights did move in the second stage */
    qat_model *m0 = tiny_model();
    ck_assert(memcmp(qat_model_params(m0)[0].t->data, qat_model_params(ma)[0].t->data,
                     qat_model_params(m0)[0].t->numel * sizeof(float)));
    qat_model_free(m0);
    qat_optim_free(oa);
    qat_optim_free(oa4);
    qat_optim_free(ob);
    qat_optim_free(ob4);
    qat_qmodel_free(qa);
    qat_qmodel_free(qa4);
    qat_qmodel_free(qb);
    qat_qmodel_free(qb4);
    qat_model_free(ma);
    qat_model_free(mb);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- `qat train --schedule` (QAT_EXE) on 500 training images ---- */

static char g_cmd_out[256];

/* Runs `qat train ARGS` on the shipped subset; returns its exit status,
 * stderr in g_cmd_out's file. */
static int qat_train(const char *args)
{
    const char *exe = getenv("QAT_EXE");
    ck_assert_msg(exe && *exe, "QAT_EXE is not set (tests/meson.build sets it)");
    snprintf(g_cmd_out, sizeof g_cmd_out, "%s", tu_tmp_path("stderr.txt"));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' train --data '%s' --val 100 --limit-train 600 --limit-test 200 --threads 1 %s >/dev/null 2>'%s'",
             exe, tu_data_path("fashion-mnist-small"), args, g_cmd_out);
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static const char *cmd_stderr(void)
{
    static char buf[8192];
    FILE *f = fopen(g_cmd_out, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    return buf;
}

static char g_float[256];

static void float_checkpoint(void)
{
    if (g_float[0]) return;
    snprintf(g_float, sizeof g_float, "%s", tu_tmp_path("float.h5"));
    char args[512];
    snprintf(args, sizeof args, "--model lenet5 --epochs 2 --out '%s'", g_float);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
}

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s", tu_tmp_path(name)); }

/* The two QAT checkpoints hold the same bits: float parameters, BN
 * statistics, LSQ parameters, quantizer parameters and switches. */
static void assert_same_checkpoints(const char *a, const char *b, int same_recipe)
{
    qat_model *ma = NULL, *mb = NULL;
    qat_train_state sa, sb;
    qat_train_state_init(&sa);
    qat_train_state_init(&sb);
    qat_qrecipe ra, rb;
    qat_qmodel *qa = qat_qmodel_load(a, &ma, &sa, &ra), *qb = qat_qmodel_load(b, &mb, &sb, &rb);
    NN(qa);
    NN(qb);
    ck_assert_str_eq(ra.spec, rb.spec);
    ck_assert_int_eq(sa.epoch, sb.epoch);
    ck_assert_int_eq(sa.global_step, sb.global_step);
    if (same_recipe) {
        ck_assert_str_eq(sa.recipe.schedule, sb.recipe.schedule);
        ck_assert_int_eq(sa.recipe.stage, sb.recipe.stage);
    }
    assert_same_tensors(qat_model_params(ma), qat_model_params(mb), qat_model_num_params(ma), "parameter");
    assert_same_tensors(qat_model_buffers(ma), qat_model_buffers(mb), qat_model_num_buffers(ma), "buffer");
    ck_assert_int_eq(qat_qmodel_num_params(qa), qat_qmodel_num_params(qb));
    assert_same_tensors(qat_qmodel_params(qa), qat_qmodel_params(qb), qat_qmodel_num_params(qa), "LSQ");
    for (int u = 0; u < qat_qmodel_num_units(qa); u++) {
        qat_qunit *x = qat_qmodel_unit(qa, u), *y = qat_qmodel_unit(qb, u);
        ck_assert_int_eq(x->act.fake_quant, y->act.fake_quant);
        ck_assert_int_eq(x->weight.fake_quant, y->weight.fake_quant);
        ck_assert_int_eq(x->act.n, y->act.n);
        ck_assert_int_eq(x->weight.n, y->weight.n);
        if (x->act.n) /* units without a quantizer have no arrays */
            ck_assert_msg(!memcmp(x->act.scale, y->act.scale, (size_t)x->act.n * sizeof(float)), "unit %s act",
                          x->name);
        if (x->weight.n)
            ck_assert_msg(!memcmp(x->weight.scale, y->weight.scale, (size_t)x->weight.n * sizeof(float)),
                          "unit %s weight", x->name);
    }
    qat_train_state_free(&sa);
    qat_train_state_free(&sb);
    qat_qmodel_free(qa);
    qat_qmodel_free(qb);
    qat_model_free(ma);
    qat_model_free(mb);
}

/* Stages change at epoch 1 (w8a8 -> w4a4: re-prepared) and at epoch 2 (the
 * same spec, weights only -> both parts: carried over); the resumed run
 * stops after each of them. */
#define SCHED "w8a8:1,w4a4+weights:1,w4a4:1"

START_TEST(test_cli_resume_exact)
{
    float_checkpoint();
    char a[256], b[256], args[1024];
    path_in_tmp(a, sizeof a, "staged-a.h5");
    path_in_tmp(b, sizeof b, "staged-b.h5");
    snprintf(args, sizeof args, "--from '%s' --schedule " SCHED " --out '%s'", g_float, a);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    ck_assert_msg(strstr(cmd_stderr(), "QAT stage 2/3 w4a4, weights only") &&
                      strstr(cmd_stderr(), "QAT stage 3/3 w4a4, weights and activations, all units, 1 epoch: "
                                           "quantizers carried over"),
                  "%s", cmd_stderr());
    snprintf(args, sizeof args, "--from '%s' --schedule " SCHED " --out '%s' --stop-after 1", g_float, b);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    snprintf(args, sizeof args, "--resume '%s' --stop-after 2", b);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    {
        qat_model *m = NULL;
        qat_train_state st;
        qat_train_state_init(&st);
        qat_qrecipe r;
        qat_qmodel *qm = qat_qmodel_load(b, &m, &st, &r);
        NN(qm);
        ck_assert_int_eq(st.epoch, 2); /* stopped where asked, inside the w4a4 weights-only stage */
        ck_assert_int_eq(st.recipe.stage, 1);
        ck_assert_str_eq(r.spec, "w4a4");
        ck_assert_str_eq(st.recipe.schedule, "w8a8:1,w4a4+weights:1,w4a4:1");
        ck_assert_int_eq(st.recipe.test_limit, 200);
        ck_assert_int_eq(qat_qmodel_unit(qm, 1)->act.fake_quant, 0);
        ck_assert_int_eq(qat_qmodel_unit(qm, 1)->weight.fake_quant, 1);
        qat_train_state_free(&st);
        qat_qmodel_free(qm);
        qat_model_free(m);
    }
    snprintf(args, sizeof args, "--resume '%s' --schedule " SCHED, b); /* the same schedule may be given */
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    assert_same_checkpoints(a, b, 1);
}
END_TEST

/* One stage is the unstaged recipe, bit for bit. */
START_TEST(test_cli_one_stage_is_unstaged)
{
    float_checkpoint();
    char a[256], b[256], args[1024];
    path_in_tmp(a, sizeof a, "one-a.h5");
    path_in_tmp(b, sizeof b, "one-b.h5");
    snprintf(args, sizeof args, "--from '%s' --schedule w4a4:2 --out '%s'", g_float, a);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    snprintf(args, sizeof args, "--from '%s' --quant w4a4 --epochs 2 --out '%s'", g_float, b);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    assert_same_checkpoints(a, b, 0);
}
END_TEST

/* Mismatches are errors that name what differs. */
START_TEST(test_cli_errors)
{
    float_checkpoint();
    char b[256], args[1024];
    path_in_tmp(b, sizeof b, "err.h5");
    snprintf(args, sizeof args, "--from '%s' --schedule w8a8:1,w4a4:1 --epochs 3 --out '%s'", g_float, b);
    ck_assert_int_ne(qat_train(args), 0);
    ck_assert_msg(strstr(cmd_stderr(), "--epochs 3") && strstr(cmd_stderr(), "adds up to 2"), "%s", cmd_stderr());
    snprintf(args, sizeof args, "--from '%s' --schedule w8a8+units=9:1 --out '%s'", g_float, b);
    ck_assert_int_ne(qat_train(args), 0);
    ck_assert_msg(strstr(cmd_stderr(), "units=9") && strstr(cmd_stderr(), "6 quantization units"), "%s",
                  cmd_stderr());
    snprintf(args, sizeof args, "--from '%s' --schedule w8a8:1,w5a9:1 --out '%s'", g_float, b);
    ck_assert_int_ne(qat_train(args), 0);
    ck_assert_msg(strstr(cmd_stderr(), "stage 2 'w5a9:1'"), "%s", cmd_stderr());
    /* a resume with another schedule */
    snprintf(args, sizeof args, "--from '%s' --schedule w8a8:1,w4a4:1 --out '%s' --stop-after 1", g_float, b);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    snprintf(args, sizeof args, "--resume '%s' --schedule w8a8:1,w2a8:1", b);
    ck_assert_int_ne(qat_train(args), 0);
    ck_assert_msg(strstr(cmd_stderr(), "'w8a8:1,w2a8:1'") && strstr(cmd_stderr(), "'w8a8:1,w4a4:1'"), "%s",
                  cmd_stderr());
    /* and a schedule for a run that had none */
    snprintf(args, sizeof args, "--from '%s' --quant w8a8 --epochs 2 --out '%s' --stop-after 1", g_float, b);
    ck_assert_msg(qat_train(args) == 0, "%s", cmd_stderr());
    snprintf(args, sizeof args, "--resume '%s' --schedule w8a8:2", b);
    ck_assert_int_ne(qat_train(args), 0);
    ck_assert_msg(strstr(cmd_stderr(), "without a schedule"), "%s", cmd_stderr());
}
END_TEST

static Suite *schedule_suite(void)
{
    Suite *s = suite_create("schedule");
    TCase *t = tcase_create("grammar");
    tcase_add_test(t, test_parse_stages);
    tcase_add_loop_test(t, test_parse_errors, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(t, test_too_many_stages);
    suite_add_tcase(s, t);
    t = tcase_create("library");
    tcase_add_test(t, test_stage_switches);
    tcase_add_test(t, test_optim_continue);
    tcase_add_test(t, test_stage_change_after_reload);
    suite_add_tcase(s, t);
    t = tcase_create("cli");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_cli_resume_exact);
    tcase_add_test(t, test_cli_one_stage_is_unstaged);
    tcase_add_test(t, test_cli_errors);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schedule_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
