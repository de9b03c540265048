/* qat train: the docs/MODELS.md float recipe, and with --quant the QAT recipe. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "qat/optim.h"
#include "qat/qio.h"
#include "qat/schedule.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/train.h"

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}


static int save_checkpoint(const char *path, qat_model *m, qat_qmodel *qm, qat_optim *opt,
                           const qat_train_state *st, const qat_qrecipe *qr)
{
    return qm ? qat_qcheckpoint_save(path, qm, opt, st, qr) : qat_checkpoint_save(path, m, opt, st);
}


static int usage(void)
{
    fprintf(stderr,
            "usage: qat train --model mlp|lenet5|convnet|resnet8|mobilenet|mobilenet-hs [--epochs N] [--out FILE]\n"
            "                 (float recipe)\n"
            "       qat train --from float.h5 --quant w8a8 [--override NAME=SPEC ...] [--epochs N] [--out FILE]\n"
            "                 [--freeze-bn-after E] [--freeze-observers-after E] [--calib-size N]   (QAT recipe)\n"
            "       qat train --from float.h5 [--quant SPEC] --schedule STAGE[,STAGE...] ...   (staged QAT)\n"
            "       qat train --resume FILE [--schedule S]   (continue an interrupted run exactly)\n"
            "schedule: STAGE = [ITEM+ITEM...]:EPOCHS, ITEM = SPEC (any --quant spec; default --quant) |\n"
            "          weights | acts (only that part fake-quantizes) | units=K (only the first K units, in\n"
            "          `qat inspect` order) | all (both parts, every unit: the default). The epochs add up to\n"
            "          --epochs. A new spec re-prepares and recalibrates the quantizers from the float weights;\n"
            "          the same spec keeps them (docs/QUANT.md, Staged QAT). Examples:\n"
            "          --schedule w8a8:1,w4a8:1,w2a8:1    --quant w4a4 --schedule weights:1,all:2\n"
            "          --quant w4a4 --schedule units=3:1,all:2\n"
            "options: --batch B --lr LR --wd WD --momentum M --data DIR --val N --seed S --threads T --json\n"
            "         --limit-train N --limit-test N\n"
            "         --stop-after E   stop once E epochs of the run are done (the checkpoint then continues\n"
            "                          with --resume, as after an interrupt)\n");
    return 2;
}

static int parse(int argc, char **argv, cli_common *c, train_opts *o)
{
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(c, argc, argv, &i);
        if (r < 0) return -1;
        if (r) continue;
        const char *a = argv[i], *v = NULL;
        const char **str = !strcmp(a, "--model")    ? &o->model
                           : !strcmp(a, "--out")    ? &o->out
                           : !strcmp(a, "--from")   ? &o->from
                           : !strcmp(a, "--quant")  ? &o->quant
                           : !strcmp(a, "--resume") ? &o->resume
                           : !strcmp(a, "--schedule") ? &o->schedule
                                                    : NULL;
        if (str) {
            if (!(*str = cli_value(argc, argv, &i))) return -1;
            continue;
        }
        if (!strcmp(a, "--override")) {
            if (!(v = cli_value(argc, argv, &i))) return -1;
            if (o->n_overrides == MAX_OVERRIDES) return cli_fail("too many --override"), -1;
            o->overrides[o->n_overrides++] = (char *)v;
            continue;
        }
        struct {
            const char *name;
            int *dst, min;
        } ints[] = {{"--epochs", &o->epochs, 1}, {"--batch", &o->batch, 1}, {"--calib-size", &o->calib_size, 1},
                    {"--freeze-bn-after", &o->freeze_bn_after, 0},
                    {"--freeze-observers-after", &o->freeze_observers_after, 0}, {"--stop-after", &o->stop_after, 1}};
        struct {
            const char *name;
            double *dst;
        } dbls[] = {{"--lr", &o->lr}, {"--wd", &o->wd}, {"--momentum", &o->momentum}};
        int done = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !done; k++)
            if (!strcmp(a, ints[k].name)) {
                if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, ints[k].dst)) return -1;
                if (*ints[k].dst < ints[k].min) return cli_fail("%s must be >= %d", a, ints[k].min), -1;
                done = 1;
            }
        for (size_t k = 0; k < sizeof dbls / sizeof dbls[0] && !done; k++)
            if (!strcmp(a, dbls[k].name)) {
                if (!(v = cli_value(argc, argv, &i)) || cli_double(a, v, dbls[k].dst)) return -1;
                if (*dbls[k].dst < 0) return cli_fail("%s must be >= 0", a), -1;
                done = 1;
            }
        if (!done && (!strcmp(a, "--help") || !strcmp(a, "-h"))) return -1; /* the usage, no complaint */
        if (!done) return cli_fail("train: unknown option '%s'", a), -1;
    }
    return 0;
}

void train_opts_defaults(train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 128;
    o->lr = -1;
    o->wd = 5e-4;
    o->momentum = 0.9;
    o->calib_size = 1024;
    o->freeze_bn_after = -1;
    o->freeze_observers_after = -1;
}

int cmd_train(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    train_opts o;
    train_opts_defaults(&o);
    if (parse(argc, argv, &c, &o)) return usage();
    if (!o.model && !o.from && !o.resume) {
        cli_fail("train: --model (float), --from (QAT) or --resume is required");
        return usage();
    }
    if (o.from && !o.quant && !o.schedule) {
        cli_fail("train: --from loads a float checkpoint to quantize: give --quant SPEC (e.g. w8a8) or --schedule");
        return usage();
    }
    train_result res;
    int rc = train_main(&c, &o, &res);
    if (rc) return rc;
    if (c.json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "train");
        json_str(&j, "model", res.model);
        json_str(&j, "quant", res.quant);
        json_str(&j, "schedule", res.schedule);
        json_int(&j, "epochs", res.epochs);
        json_num(&j, "test_accuracy", res.test_accuracy);
        json_num(&j, "val_accuracy", res.val_accuracy);
        json_num(&j, "train_images_per_s", res.train_images_per_s);
        json_num(&j, "train_images_per_s_wall", res.train_images_per_s_wall);
        json_num(&j, "seconds", res.seconds);
        json_int(&j, "threads", qat_get_num_threads());
        json_str(&j, "out", res.out);
        json_int(&j, "file_bytes", cli_file_bytes(res.out));
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s %s: test accuracy %.4f, %.0f train images/s (median over epochs), %.1f s -> %s\n", res.model,
               res.quant, res.test_accuracy, res.train_images_per_s, res.seconds, res.out);
    }
    return 0;
}

/* ---- train_main, in parts ----
 *
 *   train_setup      options, resume, data, model, QAT start point,
 *                    optimizer, batches (train_run ready to step)
 *   train_epochs     the epoch loop: epoch_schedule (QAT switches),
 *                    train_epoch (the steps; train_step is one of them),
 *                    end_epoch (evaluation, history, checkpoint)
 *   save_interrupted / final_report   how the run ends
 *
 * Each part works on one train_run and returns 0 or an exit status (its
 * message printed); train_run_free releases whatever setup got to. */

typedef struct train_run {
    cli_common c;         /* effective options: a resume takes them from the file */
    train_opts o;
    int qat;              /* fake-quant training (qm != NULL once set up) */
    cli_data d;
    int in_c, in_h, in_w; /* per-image shape of the training set: the model's input */
    qat_model *m;
    qat_qmodel *qm;       /* NULL in float training */
    qat_named_tensor *all_params; /* m's parameters, then qm's: what opt updates */
    qat_optim *opt;
    qat_batch_iter *it;
    int steps_per_epoch;
    qat_ctx *ctx;
    float *xb;            /* one batch of images [batch, in_c, in_h, in_w] */
    uint8_t *yb;          /* and its labels */
    qat_train_state st;   /* what a checkpoint keeps: epoch, step, iterator, recipe, history */
    qat_qrecipe qr;       /* the QAT recipe QAT checkpoints keep */
    int staged;           /* --schedule given (or resumed): sched holds it */
    qat_quant_schedule sched;
    int stage;            /* the stage r->qm's quantizers are in */
    char ovr_buf[1024];   /* a resumed staged run's overrides (o.overrides point into it) */
    double *ips, *ipsw;   /* per epoch finished here: images/s of compute, of wall time */
    int n_timed;          /* epochs finished by this process */
    double test_acc;      /* after the last finished epoch */
    double t_start;
    char out_buf[256];
} train_run;

/* What one epoch's steps measured (the part of it run by this process). */
typedef struct epoch_stats {
    double loss_sum;  /* sum over images of the batch loss */
    long seen, correct;
    double t_compute; /* seconds in the steps */
    double t_wall;    /* seconds of the whole step loop */
} epoch_stats;

static void train_run_free(train_run *r)
{
    free(r->ips);
    free(r->ipsw);
    free(r->all_params);
    qat_train_state_free(&r->st);
    free(r->xb);
    free(r->yb);
    qat_batch_iter_free(r->it);
    qat_ctx_free(r->ctx);
    qat_optim_free(r->opt);
    qat_qmodel_free(r->qm);
    qat_model_free(r->m);
    cli_data_free(&r->d);
}

/* The recipe's defaults for what the options left open: QAT from a float
 * checkpoint fine-tunes (2 epochs, lr 0.005); --quant without --from trains
 * quantized from scratch with the float recipe. */
static void recipe_defaults(train_opts *o, int qat)
{
    int finetune = qat && o->from;
    if (!o->epochs) o->epochs = finetune ? 2 : 5;
    if (o->lr < 0) o->lr = finetune ? 0.005 : 0.05;
    if (o->freeze_bn_after < 0) o->freeze_bn_after = 1;
    if (o->freeze_observers_after < 0) o->freeze_observers_after = (o->epochs + 1) / 2;
}

/* --schedule of a new run: parsed (stages without a spec take --quant's),
 * its epochs are the run's (an explicit --epochs must agree). */
static int setup_schedule(train_run *r)
{
    train_opts *o = &r->o;
    if (!o->schedule) return 0;
    if (qat_quant_schedule_parse(o->schedule, o->quant, &r->sched)) return cli_fail_lib("train");
    int total = qat_quant_schedule_epochs(&r->sched);
    if (o->epochs && o->epochs != total)
        return cli_fail("train: --epochs %d, but --schedule '%s' adds up to %d epochs", o->epochs, o->schedule, total);
    o->epochs = total;
    r->staged = 1;
    const qat_stage *last = &r->sched.stage[r->sched.n - 1];
    if (last->part != QAT_STAGE_ALL || last->units)
        cli_log("note: the last stage of --schedule '%s' leaves some quantizers off; the int8 export "
                "quantizes every unit with the ranges they hold",
                o->schedule);
    return 0;
}

/* A resumed staged run: its schedule from the file (checked against the
 * recipe and the stored quantizers), the overrides its stages re-prepare
 * with, and a --schedule given now compared with it. quant_given is the
 * --quant of this command line (NULL if none). */
static int resume_schedule(train_run *r, const char *quant_given)
{
    train_opts *o = &r->o;
    const qat_recipe *rec = &r->st.recipe;
    if (!rec->schedule[0]) {
        if (o->schedule)
            return cli_fail("train: --schedule '%s', but %s was trained without a schedule", o->schedule, o->resume);
        return 0;
    }
    if (qat_quant_schedule_parse(rec->schedule, NULL, &r->sched)) return cli_fail_lib(o->resume);
    if (qat_quant_schedule_epochs(&r->sched) != rec->epochs || rec->stage >= r->sched.n ||
        strcmp(r->sched.stage[rec->stage].spec, r->qr.spec))
        return cli_fail("%s: schedule '%s' (stage %d) does not match the recipe (%d epochs) or the stored spec '%s'",
                        o->resume, rec->schedule, rec->stage + 1, rec->epochs, r->qr.spec);
    r->staged = 1;
    r->stage = rec->stage;
    if (o->schedule) {
        qat_quant_schedule given;
        char canon[QAT_SCHEDULE_TEXT_MAX];
        const char *dflt = quant_given ? quant_given : rec->quant;
        if (qat_quant_schedule_parse(o->schedule, dflt, &given) || qat_quant_schedule_format(&given, canon, sizeof canon))
            return cli_fail_lib("train --resume");
        if (strcmp(canon, rec->schedule))
            return cli_fail("train: --schedule '%s' (%s) differs from the schedule %s was started with, '%s'",
                            o->schedule, canon, o->resume, rec->schedule);
    }
    /* the overrides, which every stage's re-prepare applies */
    snprintf(r->ovr_buf, sizeof r->ovr_buf, "%s", rec->overrides);
    o->n_overrides = 0;
    for (char *t = r->ovr_buf; *t && o->n_overrides < MAX_OVERRIDES;) {
        o->overrides[o->n_overrides++] = t;
        char *comma = strchr(t, ',');
        if (!comma) break;
        *comma = '\0';
        t = comma + 1;
    }
    return 0;
}

/* --resume: loads the model (and for a QAT checkpoint the quantized model
 * and recipe) with its training state into r, and replaces the recipe,
 * seed, split and images by the ones the run started with (the data
 * directory too unless --data was given). The optimizer is loaded later
 * (setup_optimizer), once the parameter list exists. */
static int resume_load(train_run *r, int data_dir_given)
{
    train_opts *o = &r->o;
    cli_common *c = &r->c;
    qat_train_state *st = &r->st;
    const char *quant_given = o->quant;
    qat_file_info info;
    if (qat_checkpoint_info(o->resume, &info)) return cli_fail_lib(o->resume);
    if (!info.has_train || !info.has_optim)
        return cli_fail("%s: holds no training state to resume (was it written by qat train?)", o->resume);
    r->qat = !strcmp(info.format, QAT_FORMAT_QAT_CHECKPOINT);
    if (r->qat) {
        if (!(r->qm = qat_qmodel_load(o->resume, &r->m, st, &r->qr))) return cli_fail_lib(o->resume);
        o->quant = r->qr.spec;
        o->freeze_bn_after = r->qr.freeze_bn_after;
        o->freeze_observers_after = r->qr.freeze_observers_after;
        o->calib_size = r->qr.calib_size;
    } else if (!(r->m = qat_model_load(o->resume)) || qat_checkpoint_load(o->resume, r->m, NULL, st)) {
        return cli_fail_lib(o->resume);
    }
    o->epochs = st->recipe.epochs;
    o->batch = st->recipe.batch_size;
    o->lr = st->recipe.lr;
    o->wd = st->recipe.weight_decay;
    o->momentum = st->recipe.momentum;
    c->val = st->recipe.val_size;
    c->seed = st->seed;
    /* the same images: a resumed run reads what the original read */
    c->limit_train = st->recipe.train_limit;
    if (!c->limit_test) c->limit_test = st->recipe.test_limit; /* what its accuracies were measured on */
    if (st->recipe.data_dir[0] && !data_dir_given) c->data_dir = st->recipe.data_dir;
    if (st->threads != qat_get_num_threads())
        cli_log("note: the run used %d threads, this one %d: numbers may differ in the last bits", st->threads,
                qat_get_num_threads());
    if (!o->out) o->out = o->resume;
    int rc = resume_schedule(r, quant_given);
    if (rc) return rc;
    if (st->epoch >= o->epochs && st->iter.position == 0)
        cli_log("%s: all %d epochs are done already", o->resume, o->epochs);
    return 0;
}

/* The float model (loaded with --from, built by name, or already loaded by
 * resume_load), checked against the data's image shape; the default
 * output name. */
static int setup_model(train_run *r)
{
    train_opts *o = &r->o;
    if (r->m) {
        /* resumed */
    } else if (o->from) {
        if (!(r->m = qat_model_load(o->from))) return cli_fail_lib(o->from);
    } else if (!(r->m = qat_model_build(o->model ? o->model : "?", r->c.seed))) {
        return cli_fail_lib("train");
    }
    /* qat_model_build makes the docs/MODELS.md models for Fashion-MNIST's images:
     * any model must take the images the data holds */
    const qat_layer *in = qat_model_layer_c(r->m, 0);
    if (in->out_shape[0] != r->in_c || in->out_shape[1] != r->in_h || in->out_shape[2] != r->in_w)
        return cli_fail("train: the model takes %dx%dx%d images, the data holds %dx%dx%d", in->out_shape[0],
                        in->out_shape[1], in->out_shape[2], r->in_c, r->in_h, r->in_w);
    if (!o->model) o->model = qat_model_arch(r->m);
    if (!o->out) {
        const char *tag = !r->qat ? "float" : r->staged ? r->sched.stage[r->sched.n - 1].spec : o->quant;
        snprintf(r->out_buf, sizeof r->out_buf, "%s-%s%s.h5", o->model, tag, r->staged ? "-staged" : "");
        o->out = r->out_buf;
    }
    /* the training data's normalisation goes with the model (the int8
     * export's input LUT applies it) */
    if (!qat_model_input_norm(r->m, NULL, NULL) && qat_model_set_input_norm(r->m, r->d.train->mean, r->d.train->std))
        return cli_fail_lib("train");
    return 0;
}

/* "w4a4, weights only, first 3 units" (a static buffer). */
static const char *stage_desc(const qat_stage *s)
{
    static char buf[96];
    char units[32] = ", all units";
    if (s->units) snprintf(units, sizeof units, ", first %d unit%s", s->units, s->units > 1 ? "s" : "");
    snprintf(buf, sizeof buf, "%s, %s%s, %d epoch%s", s->spec,
             s->part == QAT_STAGE_ALL ? "weights and activations" : s->part == QAT_STAGE_WEIGHTS ? "weights only"
                                                                                                : "activations only",
             units, s->epochs, s->epochs > 1 ? "s" : "");
    return buf;
}

/* A QAT start point (a new run's, or stage k's of a staged run): prepares
 * the quantized model per --quant (the stage's spec) and --override,
 * calibrates every quantizer on training images (PTQ; stage k draws them
 * with seed + 777 + k, so stage 0 is the unstaged run's), sets the stage's
 * fake-quant switches, turns the observers on for training and fills the
 * QAT recipe r->qr. */
static int setup_qat(train_run *r, int stage)
{
    int k = stage;
    train_opts *o = &r->o;
    const char *spec = r->staged ? r->sched.stage[k].spec : o->quant;
    qat_qconfig cfg;
    int rc = cli_qconfig(&cfg, spec, o->overrides, o->n_overrides);
    if (rc) return rc;
    /* learnable activation scales start from the MSE-optimal range;
     * the others follow the moving-average observer */
    if (cfg.base.lsq_act) cfg.base.calib = QAT_CALIBRATOR_MSE;
    for (int j = 0; j < cfg.n_overrides; j++)
        if (cfg.overrides[j].cfg.lsq_act) cfg.overrides[j].cfg.calib = QAT_CALIBRATOR_MSE;
    if (!(r->qm = qat_qmodel_prepare(r->m, &cfg))) return cli_fail_lib("train: preparing QAT");
    if ((rc = cli_calibrate(r->ctx, r->qm, r->d.train, o->calib_size, r->c.seed + 777 + (uint64_t)k, CLI_EVAL_BATCH)))
        return rc;
    if (r->staged) {
        /* every stage's units=K must fit the model: checked before training */
        for (int j = 0; j < r->sched.n; j++)
            if (r->sched.stage[j].units > qat_qmodel_num_units(r->qm))
                return cli_fail("train: --schedule stage %d: units=%d, but the model has %d quantization units", j + 1,
                                r->sched.stage[j].units, qat_qmodel_num_units(r->qm));
        if (qat_qmodel_set_stage_fake_quant(r->qm, &r->sched.stage[k])) return cli_fail_lib("train");
    }
    double a0 = cli_evaluate(r->ctx, r->m, r->qm, r->d.test, CLI_EVAL_BATCH);
    if (r->staged)
        cli_log("QAT stage %d/%d %s: quantizers prepared afresh, calibrated on %d images: test_acc %.4f", k + 1,
                r->sched.n, stage_desc(&r->sched.stage[k]), o->calib_size, a0);
    else
        cli_log("QAT %s from %s: PTQ start point (calibration on %d images): test_acc %.4f", spec,
                o->from ? o->from : "scratch", o->calib_size, a0);
    qat_qmodel_set_observers(r->qm, 1);
    snprintf(r->qr.method, sizeof r->qr.method, "qat");
    snprintf(r->qr.spec, sizeof r->qr.spec, "%s", spec);
    snprintf(r->qr.calib, sizeof r->qr.calib, "ema");
    r->qr.calib_size = o->calib_size;
    r->qr.freeze_bn_after = o->freeze_bn_after;
    r->qr.freeze_observers_after = o->freeze_observers_after;
    return 0;
}

/* One SGD optimizer over the weights and the learnable quantization
 * parameters (LSQ scales: no weight decay, marked no_decay); a resumed run
 * loads its state (momentum, step count, schedule) from the file. */
static int setup_optimizer(train_run *r)
{
    /* the float model's parameters, then the qmodel's learnable ones */
    int n = r->qm ? qat_qmodel_parameters(r->qm, NULL, 0) : qat_model_num_params(r->m);
    r->all_params = malloc((size_t)(n + 1) * sizeof *r->all_params);
    if (!r->all_params) return cli_fail("out of memory");
    if (r->qm)
        qat_qmodel_parameters(r->qm, r->all_params, n);
    else
        memcpy(r->all_params, qat_model_params(r->m), (size_t)n * sizeof *r->all_params);
    if (r->o.resume) {
        r->opt = qat_optim_load(r->o.resume, r->all_params, n);
    } else {
        qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
        oo.lr = r->o.lr;
        oo.momentum = r->o.momentum;
        oo.weight_decay = r->o.wd;
        r->opt = qat_optim_create(r->all_params, n, &oo);
    }
    return r->opt ? 0 : cli_fail_lib("train: optimizer");
}

/* A new run's training state: seed, threads and the recipe it was asked
 * (what --resume restores), with a staged run's schedule (canonical),
 * overrides and stage. */
static int record_recipe(train_run *r)
{
    qat_train_state *st = &r->st;
    st->seed = r->c.seed;
    st->threads = qat_get_num_threads();
    snprintf(st->recipe.arch, sizeof st->recipe.arch, "%s", r->o.model);
    st->recipe.epochs = r->o.epochs;
    st->recipe.batch_size = r->o.batch;
    st->recipe.lr = r->o.lr;
    st->recipe.weight_decay = r->o.wd;
    st->recipe.momentum = r->o.momentum;
    st->recipe.val_size = r->c.val;
    st->recipe.train_limit = r->c.limit_train;
    st->recipe.test_limit = r->c.limit_test;
    snprintf(st->recipe.data_dir, sizeof st->recipe.data_dir, "%s", r->c.data_dir);
    snprintf(st->recipe.quant, sizeof st->recipe.quant, "%s", r->o.quant ? r->o.quant : "");
    if (!r->staged) return 0;
    if (qat_quant_schedule_format(&r->sched, st->recipe.schedule, sizeof st->recipe.schedule))
        return cli_fail_lib("train");
    size_t off = 0;
    for (int k = 0; k < r->o.n_overrides; k++) {
        size_t len = strlen(r->o.overrides[k]);
        if (off + len + 2 > sizeof st->recipe.overrides)
            return cli_fail("train: the --override list is too long to store with a schedule (%zu characters max)",
                            sizeof st->recipe.overrides - 1);
        off += (size_t)snprintf(st->recipe.overrides + off, sizeof st->recipe.overrides - off, "%s%s", k ? "," : "",
                                r->o.overrides[k]);
    }
    st->recipe.stage = r->stage;
    return 0;
}

/* The shuffled batches of the training set (where a resumed run stopped),
 * the batch buffer, and a new run's cosine learning-rate schedule over all
 * its steps. */
static int setup_batches(train_run *r)
{
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = r->o.batch;
    bo.seed = r->c.seed;
    if (qat_batch_iter_create(r->d.train, &bo, &r->it)) return cli_fail_lib("train: batches");
    if (r->o.resume && qat_batch_iter_set_state(r->it, &r->st.iter)) return cli_fail_lib(r->o.resume);
    if (!(r->xb = malloc(qat_batch_iter_x_size(r->it) * sizeof *r->xb))) return cli_fail("out of memory");
    r->steps_per_epoch = qat_batch_iter_num_batches(r->it);
    if (!r->o.resume) {
        qat_schedule sched = qat_schedule_cosine(r->o.lr, 0.0, (int64_t)r->steps_per_epoch * r->o.epochs);
        qat_optim_set_schedule(r->opt, &sched);
    }
    return 0;
}

/* Everything before the first step, in this order (the random streams
 * depend on it): options (recipe defaults, or the resumed run's), data,
 * model, QAT start point, optimizer, recorded recipe, batches. r must be
 * zeroed; on error r holds what was set up (train_run_free). */
static int train_setup(train_run *r, const cli_common *c, const train_opts *o)
{
    r->c = *c;
    r->o = *o;
    qat_train_state_init(&r->st);
    r->qat = o->quant != NULL || o->schedule != NULL;
    int rc;
    if (!o->resume && (rc = setup_schedule(r))) return rc;
    recipe_defaults(&r->o, r->qat);
    qat_set_num_threads(r->c.threads);
    if (r->o.resume && (rc = resume_load(r, c->data_dir_given))) return rc;
    if (cli_load_data(&r->c, &r->d, 1, 1)) return 1;
    r->in_c = r->d.train->c;
    r->in_h = r->d.train->h;
    r->in_w = r->d.train->w;
    if ((rc = setup_model(r))) return rc;
    r->ctx = qat_ctx_create(0);
    r->yb = malloc((size_t)r->o.batch);
    if (!r->ctx || !r->yb) return cli_fail_lib("train: setup");
    if (r->qat && !r->o.resume && (rc = setup_qat(r, 0))) return rc;
    if ((rc = setup_optimizer(r))) return rc;
    if (!r->o.resume && (rc = record_recipe(r))) return rc;
    if ((rc = setup_batches(r))) return rc;
    r->ips = calloc((size_t)r->o.epochs, sizeof *r->ips);
    r->ipsw = calloc((size_t)r->o.epochs, sizeof *r->ipsw);
    if (!r->ips || !r->ipsw) return cli_fail("out of memory");
    return 0;
}

/* Stage k of a staged run begins (at the start of its first epoch, after
 * the previous epoch's checkpoint, so a run resumed from that checkpoint
 * makes the same move). A new spec: the qmodel is prepared afresh from the
 * float model (whose weights and BN statistics go on training) and
 * calibrated (setup_qat), and the optimizer continues over the new
 * parameter list: the float parameters keep their momentum and step
 * counts, the new LSQ parameters start fresh. The same spec: the
 * quantizers (their ranges, learned scales) carry over and only the
 * stage's fake-quant switches change. */
static int enter_stage(train_run *r, int k)
{
    const qat_stage *s = &r->sched.stage[k];
    if (!strcmp(s->spec, r->qr.spec)) {
        if (qat_qmodel_set_stage_fake_quant(r->qm, s)) return cli_fail_lib("train");
        cli_log("QAT stage %d/%d %s: quantizers carried over", k + 1, r->sched.n, stage_desc(s));
    } else {
        qat_qmodel *old_qm = r->qm;
        qat_optim *old_opt = r->opt;
        r->qm = NULL;
        int rc = setup_qat(r, k), n = 0;
        qat_named_tensor *p = NULL;
        if (!rc) {
            n = qat_qmodel_parameters(r->qm, NULL, 0);
            p = malloc((size_t)(n + 1) * sizeof *p);
            if (!p) rc = cli_fail("out of memory");
        }
        if (!rc) {
            qat_qmodel_parameters(r->qm, p, n);
            if (!(r->opt = qat_optim_continue(old_opt, p, n))) rc = cli_fail_lib("train: optimizer of the new stage");
        }
        if (rc) {
            free(p);
            qat_qmodel_free(r->qm);
            r->qm = old_qm;
            r->opt = old_opt;
            return rc;
        }
        free(r->all_params);
        r->all_params = p;
        qat_optim_free(old_opt);
        qat_qmodel_free(old_qm);
    }
    r->stage = r->st.recipe.stage = k;
    return 0;
}

/* The QAT schedule: what changes at the start of epoch ep (0-based): a
 * staged run's next stage (enter_stage); BN statistics freeze (folded with
 * the running statistics) from freeze_bn_after on; observers stop from
 * freeze_observers_after on (epochs of the whole run, also when staged). A
 * function of ep and of the stage the checkpoint stores, so a resumed run
 * sets the same switches. */
static int epoch_schedule(train_run *r, int ep)
{
    if (!r->qm) return 0;
    if (r->staged) {
        int k = qat_quant_schedule_stage_at(&r->sched, ep), rc;
        if (k != r->stage && (rc = enter_stage(r, k))) return rc;
    }
    qat_qmodel_freeze_bn(r->qm, ep >= r->o.freeze_bn_after);
    if (ep >= r->o.freeze_observers_after) qat_qmodel_set_observers(r->qm, 0);
    return 0;
}

/* One optimizer step on the n images in r->xb / r->yb: forward (float or
 * fake-quant), cross-entropy, backward, update, LSQ scale clamp. *loss and
 * *correct get the batch's mean loss and correct predictions. The arena is
 * reset afterwards. */
static int train_step(train_run *r, int n, double *loss, long *correct)
{
    qat_tensor *x = qat_from(r->ctx, 4, (int[]){n, r->in_c, r->in_h, r->in_w}, r->xb);
    qat_tensor *logits = cli_forward(r->ctx, r->m, r->qm, x);
    qat_tensor *l = qat_cross_entropy(r->ctx, logits, r->yb);
    qat_optim_zero_grad(r->opt);
    if (qat_backward(r->ctx, l) != QAT_OK || qat_optim_step(r->opt) != QAT_OK) return cli_fail_lib("train step");
    if (r->qm) qat_qmodel_clamp_params(r->qm);
    *loss = l->data[0];
    *correct = qat_count_correct(logits, r->yb);
    if (qat_ctx_reset(r->ctx) != QAT_OK) return cli_fail_lib("train step"); /* the step's sticky error */
    return 0;
}

/* The steps of epoch ep from where the iterator stands to the end of the
 * epoch, or to a SIGINT (then it returns 0 with `interrupted` set, after
 * finishing the step under way). Fills *es; a progress bar on stderr. */
static int train_epoch(train_run *r, int ep, epoch_stats *es)
{
    progress pr;
    char label[32], extra[96];
    snprintf(label, sizeof label, "epoch %d/%d", ep + 1, r->o.epochs);
    progress_start(&pr, label, r->steps_per_epoch);
    memset(es, 0, sizeof *es);
    double w0 = cli_now();
    int n, b = 0;
    qat_ctx_set_training(r->ctx, 1);
    while (qat_batch_iter_next(r->it, r->xb, r->yb, &n) == 1) {
        double t0 = cli_now(), loss = 0;
        long correct = 0;
        int rc = train_step(r, n, &loss, &correct);
        if (rc) return rc;
        es->t_compute += cli_now() - t0;
        if (!isfinite(loss)) return cli_fail("train: loss became %f at epoch %d batch %d", loss, ep + 1, b);
        es->loss_sum += loss * n;
        es->correct += correct;
        es->seen += n;
        b++;
        snprintf(extra, sizeof extra, "loss %.4f  %.0f img/s", es->loss_sum / es->seen, es->seen / es->t_compute);
        progress_update(&pr, b, extra);
        if (interrupted) break;
    }
    progress_end(&pr);
    es->t_wall = cli_now() - w0;
    return 0;
}

/* After epoch ep's last step: validation and test accuracy, the history
 * line, the iterator moved to the next epoch, and the checkpoint (o.out)
 * that a later --resume continues from. */
static int end_epoch(train_run *r, int ep, const epoch_stats *es)
{
    int k = r->n_timed;
    r->ips[k] = es->seen / es->t_compute;
    r->ipsw[k] = es->seen / es->t_wall;
    double val_acc = r->d.val ? cli_evaluate(r->ctx, r->m, r->qm, r->d.val, CLI_EVAL_BATCH) : 0;
    r->test_acc = cli_evaluate(r->ctx, r->m, r->qm, r->d.test, CLI_EVAL_BATCH);
    cli_log("epoch %d/%d  loss %.4f  train_acc %.4f  val_acc %.4f  test_acc %.4f  %.0f img/s (wall %.0f)", ep + 1,
            r->o.epochs, es->loss_sum / es->seen, (double)es->correct / es->seen, val_acc, r->test_acc, r->ips[k],
            r->ipsw[k]);
    qat_epoch_record rec = {.epoch = ep, .train_loss = es->loss_sum / es->seen,
                            .train_accuracy = (double)es->correct / es->seen, .val_accuracy = val_acc,
                            .test_accuracy = r->test_acc, .lr = qat_optim_lr(r->opt),
                            .train_images_per_s = r->ips[k], .train_images_per_s_wall = r->ipsw[k],
                            .seconds = es->t_wall};
    r->n_timed++;
    qat_train_state_add_epoch(&r->st, &rec);
    qat_batch_iter_reset_epoch(r->it);
    r->st.epoch = ep + 1;
    r->st.global_step = qat_optim_step_count(r->opt);
    qat_batch_iter_get_state(r->it, &r->st.iter);
    return save_checkpoint(r->o.out, r->m, r->qm, r->opt, &r->st, &r->qr) ? cli_fail_lib(r->o.out) : 0;
}

/* The epochs from st.epoch (a resumed run: from its position inside it)
 * to o.epochs, or until a SIGINT. */
static int train_epochs(train_run *r)
{
    signal(SIGINT, on_sigint);
    cli_log("train %s%s%s%s%s: %d train / %d val / %d test images, %d threads, %zu parameters", r->o.model,
            r->qat ? " QAT " : "", r->qat ? r->qr.spec : "", r->staged ? " schedule " : "",
            r->staged ? r->st.recipe.schedule : "", r->d.train->n, r->d.val ? r->d.val->n : 0,
            r->d.test->n, qat_get_num_threads(), qat_model_param_count(r->m));
    for (int ep = r->st.epoch; ep < r->o.epochs && !interrupted; ep++) {
        if (r->o.stop_after && ep >= r->o.stop_after) {
            cli_log("stopped after epoch %d of %d (--stop-after): continue with qat train --resume %s", ep,
                    r->o.epochs, r->o.out);
            break;
        }
        epoch_stats es;
        int rc = epoch_schedule(r, ep);
        if (rc) return rc;
        rc = train_epoch(r, ep, &es);
        if (rc) return rc;
        if (interrupted) break;
        if ((rc = end_epoch(r, ep, &es))) return rc;
    }
    return 0;
}

/* After a SIGINT: saves the state where the iterator stopped (mid-epoch;
 * the epoch's partial statistics are not kept) for --resume. Returns 130
 * (or 1 if the save failed). */
static int save_interrupted(train_run *r)
{
    r->st.global_step = qat_optim_step_count(r->opt);
    qat_batch_iter_get_state(r->it, &r->st.iter);
    if (save_checkpoint(r->o.out, r->m, r->qm, r->opt, &r->st, &r->qr)) return cli_fail_lib(r->o.out);
    cli_log("interrupted: state saved to %s (continue with qat train --resume %s)", r->o.out, r->o.out);
    return 130;
}

/* A finished run's result: median images/s over the epochs run here, last
 * accuracies (test evaluated now if no epoch ran), the history. */
static void final_report(train_run *r, train_result *res)
{
    if (r->n_timed == 0) r->test_acc = cli_evaluate(r->ctx, r->m, r->qm, r->d.test, CLI_EVAL_BATCH);
    res->train_images_per_s = cli_median(r->ips, r->n_timed);
    res->train_images_per_s_wall = cli_median(r->ipsw, r->n_timed);
    res->test_accuracy = r->test_acc;
    res->val_accuracy = r->st.n_history ? r->st.history[r->st.n_history - 1].val_accuracy : 0;
    res->seconds = cli_now() - r->t_start;
    res->epochs = r->o.epochs;
    snprintf(res->model, sizeof res->model, "%s", r->o.model);
    snprintf(res->quant, sizeof res->quant, "%s", r->qat ? r->qr.spec : "float");
    snprintf(res->schedule, sizeof res->schedule, "%s", r->staged ? r->st.recipe.schedule : "");
    snprintf(res->out, sizeof res->out, "%s", r->o.out);
    res->n_history = r->st.n_history < TRAIN_MAX_HISTORY ? r->st.n_history : TRAIN_MAX_HISTORY;
    for (int k = 0; k < res->n_history; k++) res->history[k] = r->st.history[k];
}

int train_main(cli_common *c, train_opts *o, train_result *res)
{
    memset(res, 0, sizeof *res);
    train_run r;
    memset(&r, 0, sizeof r);
    int rc = train_setup(&r, c, o);
    if (!rc) {
        r.t_start = cli_now();
        rc = train_epochs(&r);
    }
    if (!rc && interrupted) rc = save_interrupted(&r);
    if (!rc) final_report(&r, res);
    train_run_free(&r);
    return rc;
}
