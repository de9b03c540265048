/* qat train: the MODELS.md float recipe, and with --quant the QAT recipe. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "qat/optim.h"
#include "qat/qio.h"
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
            "usage: qat train --model mlp|lenet5|convnet|resnet8 [--epochs N] [--out FILE]   (float recipe)\n"
            "       qat train --from float.h5 --quant w8a8 [--override NAME=SPEC ...] [--epochs N] [--out FILE]\n"
            "                 [--freeze-bn-after E] [--freeze-observers-after E] [--calib-size N]   (QAT recipe)\n"
            "       qat train --resume FILE   (continue an interrupted run exactly)\n"
            "options: --batch B --lr LR --wd WD --momentum M --data DIR --val N --seed S --threads T --json\n"
            "         --limit-train N --limit-test N\n");
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
                    {"--freeze-observers-after", &o->freeze_observers_after, 0}};
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
    if (o.from && !o.quant) {
        cli_fail("train: --from loads a float checkpoint to quantize: give --quant SPEC (e.g. w8a8)");
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

int train_main(cli_common *cp, train_opts *op, train_result *res)
{
    cli_common c = *cp;
    train_opts o = *op;
    memset(res, 0, sizeof *res);
    int qat = o.quant != NULL;
    /* QAT from a float checkpoint fine-tunes (2 epochs, lr 0.005); --quant
     * without --from trains quantized from scratch with the float recipe */
    int finetune = qat && o.from;
    if (!o.epochs) o.epochs = finetune ? 2 : 5;
    if (o.lr < 0) o.lr = finetune ? 0.005 : 0.05;
    if (o.freeze_bn_after < 0) o.freeze_bn_after = 1;
    if (o.freeze_observers_after < 0) o.freeze_observers_after = (o.epochs + 1) / 2;
    qat_set_num_threads(c.threads);

    int rc = 0;
    cli_data d = {0};
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_optim *opt = NULL;
    qat_batch_iter *it = NULL;
    qat_ctx *ctx = NULL;
    float *xb = NULL;
    uint8_t *yb = NULL;
    double *ips = NULL, *ipsw = NULL;
    qat_named_tensor *all_params = NULL;
    qat_train_state st;
    qat_train_state_init(&st);
    qat_qrecipe qr = {0};
    char out_buf[256];

    if (o.resume) { /* the recipe, seed and split come from the file */
        qat_file_info info;
        if (qat_checkpoint_info(o.resume, &info)) return cli_fail_lib(o.resume);
        if (!info.has_train || !info.has_optim)
            return cli_fail("%s: holds no training state to resume (was it written by qat train?)", o.resume);
        qat = !strcmp(info.format, QAT_FORMAT_QAT_CHECKPOINT);
        if (qat) {
            if (!(qm = qat_qmodel_load(o.resume, &m, &st, &qr))) return cli_fail_lib(o.resume);
            o.quant = qr.spec;
            o.freeze_bn_after = qr.freeze_bn_after;
            o.freeze_observers_after = qr.freeze_observers_after;
            o.calib_size = qr.calib_size;
        } else {
            if (!(m = qat_model_load(o.resume)) || qat_checkpoint_load(o.resume, m, NULL, &st)) {
                qat_model_free(m);
                return cli_fail_lib(o.resume);
            }
        }
        o.epochs = st.recipe.epochs;
        o.batch = st.recipe.batch_size;
        o.lr = st.recipe.lr;
        o.wd = st.recipe.weight_decay;
        o.momentum = st.recipe.momentum;
        c.val = st.recipe.val_size;
        c.seed = st.seed;
        /* the same images: a resumed run reads what the original read */
        c.limit_train = st.recipe.train_limit;
        if (st.recipe.data_dir[0] && !cp->data_dir_given) c.data_dir = st.recipe.data_dir;
        if (st.threads != qat_get_num_threads())
            cli_log("note: the run used %d threads, this one %d: numbers may differ in the last bits", st.threads,
                    qat_get_num_threads());
        if (!o.out) o.out = o.resume;
        if (st.epoch >= o.epochs && st.iter.position == 0) {
            cli_log("%s: all %d epochs are done already", o.resume, o.epochs);
        }
    }
    if (cli_load_data(&c, &d, 1, 1)) {
        rc = 1;
        goto done;
    }
    if (o.resume) {
        /* loaded above */
    } else if (o.from) {
        if (!(m = qat_model_load(o.from))) {
            rc = cli_fail_lib(o.from);
            goto done;
        }
    } else if (!(m = qat_model_build(o.model ? o.model : "?", c.seed))) {
        rc = cli_fail_lib("train");
        goto done;
    }
    /* the training data's normalisation goes with the model (the int8
     * export's input LUT applies it) */
    if (!qat_model_input_norm(m, NULL, NULL) && qat_model_set_input_norm(m, d.train->mean, d.train->std)) {
        rc = cli_fail_lib("train");
        goto done;
    }
    if (!o.model) o.model = qat_model_arch(m);
    if (!o.out) {
        snprintf(out_buf, sizeof out_buf, "%s-%s.h5", o.model, qat ? o.quant : "float");
        o.out = out_buf;
    }
    ctx = qat_ctx_create(0);
    yb = malloc((size_t)o.batch);
    if (!ctx || !yb) {
        rc = cli_fail_lib("train: setup");
        goto done;
    }
    if (qat && !o.resume) {
        qat_qconfig cfg;
        if ((rc = cli_qconfig(&cfg, o.quant, o.overrides, o.n_overrides))) goto done;
        /* learnable activation scales start from the MSE-optimal range;
         * the others follow the moving-average observer */
        if (cfg.base.lsq_act) cfg.base.calib = QAT_CALIBRATOR_MSE;
        for (int k = 0; k < cfg.n_overrides; k++)
            if (cfg.overrides[k].cfg.lsq_act) cfg.overrides[k].cfg.calib = QAT_CALIBRATOR_MSE;
        if (!(qm = qat_qmodel_prepare(m, &cfg))) {
            rc = cli_fail_lib("train: preparing QAT");
            goto done;
        }
        /* Start from PTQ: calibrate every quantizer on training images. */
        if ((rc = cli_calibrate(ctx, qm, d.train, o.calib_size, c.seed + 777, CLI_EVAL_BATCH))) goto done;
        double a0 = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
        cli_log("QAT %s from %s: PTQ start point (calibration on %d images): test_acc %.4f", o.quant,
                o.from ? o.from : "scratch", o.calib_size, a0);
        qat_qmodel_set_observers(qm, 1);
        snprintf(qr.method, sizeof qr.method, "qat");
        snprintf(qr.spec, sizeof qr.spec, "%s", o.quant);
        snprintf(qr.calib, sizeof qr.calib, "ema");
        qr.calib_size = o.calib_size;
        qr.freeze_bn_after = o.freeze_bn_after;
        qr.freeze_observers_after = o.freeze_observers_after;
    }
    /* one optimizer over the weights and the learnable quantization
     * parameters (LSQ scales: no weight decay, marked no_decay) */
    int np = qat_model_num_params(m), nq = qm ? qat_qmodel_num_params(qm) : 0;
    all_params = malloc((size_t)(np + nq + 1) * sizeof *all_params);
    if (!all_params) {
        rc = cli_fail("out of memory");
        goto done;
    }
    memcpy(all_params, qat_model_params(m), (size_t)np * sizeof *all_params);
    if (nq) memcpy(all_params + np, qat_qmodel_params(qm), (size_t)nq * sizeof *all_params);
    if (o.resume) {
        opt = qat_optim_load(o.resume, all_params, np + nq);
    } else {
        qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
        oo.lr = o.lr;
        oo.momentum = o.momentum;
        oo.weight_decay = o.wd;
        opt = qat_optim_create(all_params, np + nq, &oo);
    }
    if (!opt) {
        rc = cli_fail_lib("train: optimizer");
        goto done;
    }
    if (!o.resume) {
        st.seed = c.seed;
        st.threads = qat_get_num_threads();
        snprintf(st.recipe.arch, sizeof st.recipe.arch, "%s", o.model);
        st.recipe.epochs = o.epochs;
        st.recipe.batch_size = o.batch;
        st.recipe.lr = o.lr;
        st.recipe.weight_decay = o.wd;
        st.recipe.momentum = o.momentum;
        st.recipe.val_size = c.val;
        st.recipe.train_limit = c.limit_train;
        snprintf(st.recipe.data_dir, sizeof st.recipe.data_dir, "%s", c.data_dir);
    }
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = o.batch;
    bo.seed = c.seed;
    if (qat_batch_iter_create(d.train, &bo, &it)) {
        rc = cli_fail_lib("train: batches");
        goto done;
    }
    if (o.resume && qat_batch_iter_set_state(it, &st.iter)) {
        rc = cli_fail_lib(o.resume);
        goto done;
    }
    xb = malloc(qat_batch_iter_x_size(it) * sizeof *xb);
    int spe = qat_batch_iter_num_batches(it);
    if (!o.resume) {
        qat_schedule sched = qat_schedule_cosine(o.lr, 0.0, (int64_t)spe * o.epochs);
        qat_optim_set_schedule(opt, &sched);
    }
    signal(SIGINT, on_sigint);

    ips = calloc((size_t)o.epochs, sizeof *ips);
    ipsw = calloc((size_t)o.epochs, sizeof *ipsw);
    double t_start = cli_now(), test_acc = 0;
    cli_log("train %s%s%s: %d train / %d val / %d test images, %d threads, %zu parameters", o.model,
            qat ? " QAT " : "", qat ? o.quant : "", d.train->n, d.val ? d.val->n : 0, d.test->n,
            qat_get_num_threads(), qat_model_param_count(m));
    int n_timed = 0;
    for (int ep = st.epoch; ep < o.epochs && !interrupted; ep++) {
        if (qm) {
            qat_qmodel_freeze_bn(qm, ep >= o.freeze_bn_after);
            if (ep >= o.freeze_observers_after) qat_qmodel_set_observers(qm, 0);
        }
        progress pr;
        char label[32], extra[96];
        snprintf(label, sizeof label, "epoch %d/%d", ep + 1, o.epochs);
        progress_start(&pr, label, spe);
        double t_compute = 0, loss_sum = 0, w0 = cli_now();
        long seen = 0, correct = 0;
        int n, b = 0;
        qat_ctx_set_training(ctx, 1);
        while (qat_batch_iter_next(it, xb, yb, &n) == 1) {
            double t0 = cli_now();
            qat_tensor *x = qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb);
            qat_tensor *logits = cli_forward(ctx, m, qm, x);
            qat_tensor *loss = qat_cross_entropy(ctx, logits, yb);
            qat_optim_zero_grad(opt);
            if (qat_backward(ctx, loss) != QAT_OK || qat_optim_step(opt) != QAT_OK) {
                rc = cli_fail_lib("train step");
                goto done;
            }
            if (qm) qat_qmodel_clamp_params(qm);
            t_compute += cli_now() - t0;
            if (!isfinite(loss->data[0])) {
                rc = cli_fail("train: loss became %f at epoch %d batch %d", loss->data[0], ep + 1, b);
                goto done;
            }
            loss_sum += (double)loss->data[0] * n;
            correct += qat_count_correct(logits, yb);
            seen += n;
            qat_ctx_reset(ctx);
            b++;
            snprintf(extra, sizeof extra, "loss %.4f  %.0f img/s", loss_sum / seen, seen / t_compute);
            progress_update(&pr, b, extra);
            if (interrupted) break;
        }
        progress_end(&pr);
        if (interrupted) break;
        double wall = cli_now() - w0;
        ips[n_timed] = seen / t_compute;
        ipsw[n_timed] = seen / wall;
        double val_acc = d.val ? cli_evaluate(ctx, m, qm, d.val, CLI_EVAL_BATCH) : 0;
        test_acc = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
        cli_log("epoch %d/%d  loss %.4f  train_acc %.4f  val_acc %.4f  test_acc %.4f  %.0f img/s (wall %.0f)",
                ep + 1, o.epochs, loss_sum / seen, (double)correct / seen, val_acc, test_acc, ips[n_timed],
                ipsw[n_timed]);
        qat_epoch_record rec = {.epoch = ep, .train_loss = loss_sum / seen, .train_accuracy = (double)correct / seen,
                                .val_accuracy = val_acc, .test_accuracy = test_acc, .lr = qat_optim_lr(opt),
                                .train_images_per_s = ips[n_timed], .train_images_per_s_wall = ipsw[n_timed],
                                .seconds = wall};
        n_timed++;
        qat_train_state_add_epoch(&st, &rec);
        qat_batch_iter_reset_epoch(it);
        st.epoch = ep + 1;
        st.global_step = qat_optim_step_count(opt);
        qat_batch_iter_get_state(it, &st.iter);
        if (save_checkpoint(o.out, m, qm, opt, &st, &qr)) {
            rc = cli_fail_lib(o.out);
            goto done;
        }
    }
    if (interrupted) {
        /* mid-epoch: the iterator knows where it stopped; the epoch's
         * partial statistics are not kept */
        st.global_step = qat_optim_step_count(opt);
        qat_batch_iter_get_state(it, &st.iter);
        if (save_checkpoint(o.out, m, qm, opt, &st, &qr))
            rc = cli_fail_lib(o.out);
        else
            cli_log("interrupted: state saved to %s (continue with qat train --resume %s)", o.out, o.out);
        if (!rc) rc = 130;
        goto done;
    }
    if (n_timed == 0) test_acc = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
    res->train_images_per_s = cli_median(ips, n_timed);
    res->train_images_per_s_wall = cli_median(ipsw, n_timed);
    res->test_accuracy = test_acc;
    res->val_accuracy = st.n_history ? st.history[st.n_history - 1].val_accuracy : 0;
    res->seconds = cli_now() - t_start;
    res->epochs = o.epochs;
    snprintf(res->model, sizeof res->model, "%s", o.model);
    snprintf(res->quant, sizeof res->quant, "%s", qat ? o.quant : "float");
    snprintf(res->out, sizeof res->out, "%s", o.out);
    res->n_history = st.n_history < TRAIN_MAX_HISTORY ? st.n_history : TRAIN_MAX_HISTORY;
    for (int k = 0; k < res->n_history; k++) res->history[k] = st.history[k];
done:
    free(ips);
    free(ipsw);
    free(all_params);
    qat_train_state_free(&st);
    free(xb);
    free(yb);
    qat_batch_iter_free(it);
    qat_ctx_free(ctx);
    qat_optim_free(opt);
    qat_qmodel_free(qm);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}
