/* qat train: the MODELS.md float recipe (and, with --quant, QAT). */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "qat/optim.h"
#include "tools/cli.h"
#include "tools/commands.h"

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct train_opts {
    const char *model, *out;
    int epochs, batch;
    double lr, wd, momentum;
} train_opts;

static int usage(void)
{
    fprintf(stderr,
            "usage: qat train --model mlp|lenet5|convnet|resnet8 [--epochs N] [--batch B] [--lr LR]\n"
            "                 [--wd WD] [--momentum M] [--out FILE] [--data DIR] [--val N] [--seed S]\n"
            "                 [--threads T] [--json]\n");
    return 2;
}

int cmd_train(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    train_opts o = {.model = NULL, .out = NULL, .epochs = 5, .batch = 128, .lr = 0.05, .wd = 5e-4, .momentum = 0.9};
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--model")) {
            if (!(o.model = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out")) {
            if (!(o.out = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--epochs")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o.epochs) || o.epochs < 1) return usage();
        } else if (!strcmp(a, "--batch")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o.batch) || o.batch < 1) return usage();
        } else if (!strcmp(a, "--lr")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_double(a, v, &o.lr) || o.lr < 0) return usage();
        } else if (!strcmp(a, "--wd")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_double(a, v, &o.wd) || o.wd < 0) return usage();
        } else if (!strcmp(a, "--momentum")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_double(a, v, &o.momentum) || o.momentum < 0) return usage();
        } else {
            cli_fail("train: unknown option '%s'", a);
            return usage();
        }
    }
    if (!o.model) {
        cli_fail("train: --model is required");
        return usage();
    }
    qat_set_num_threads(c.threads);
    cli_data d;
    if (cli_load_data(&c, &d, 1, 1)) return 1;
    qat_model *m = qat_model_build(o.model, c.seed);
    if (!m) {
        cli_data_free(&d);
        return cli_fail_lib("train");
    }
    qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
    oo.lr = o.lr;
    oo.momentum = o.momentum;
    oo.weight_decay = o.wd;
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &oo);
    qat_batch_opts bo = qat_batch_opts_defaults();
    bo.batch_size = o.batch;
    bo.seed = c.seed;
    qat_batch_iter *it = NULL;
    qat_ctx *ctx = qat_ctx_create(0);
    float *xb = NULL;
    uint8_t *yb = malloc((size_t)o.batch);
    int rc = 0;
    if (!opt || qat_batch_iter_create(d.train, &bo, &it) || !ctx || !yb) {
        rc = cli_fail_lib("train: setup");
        goto done;
    }
    xb = malloc(qat_batch_iter_x_size(it) * sizeof *xb);
    int spe = qat_batch_iter_num_batches(it);
    qat_schedule sched = qat_schedule_cosine(o.lr, 0.0, (int64_t)spe * o.epochs);
    qat_optim_set_schedule(opt, &sched);
    signal(SIGINT, on_sigint);

    double *ips = calloc((size_t)o.epochs, sizeof *ips), *ipsw = calloc((size_t)o.epochs, sizeof *ipsw);
    double t_start = cli_now(), test_acc = 0;
    cli_log("train %s: %d train / %d val / %d test images, %d threads, %zu parameters", o.model, d.train->n,
            d.val ? d.val->n : 0, d.test->n, qat_get_num_threads(), qat_model_param_count(m));
    for (int ep = 0; ep < o.epochs && !interrupted; ep++) {
        progress pr;
        char label[32], extra[96];
        snprintf(label, sizeof label, "epoch %d/%d", ep + 1, o.epochs);
        progress_start(&pr, label, spe);
        double t_compute = 0, loss_sum = 0, w0 = cli_now();
        long seen = 0, correct = 0;
        int n, b = 0;
        qat_ctx_set_training(ctx, 1);
        while (!interrupted && qat_batch_iter_next(it, xb, yb, &n) == 1) {
            double t0 = cli_now();
            qat_tensor *x = qat_from(ctx, 4, (int[]){n, 1, 28, 28}, xb);
            qat_tensor *logits = qat_model_forward(ctx, m, x);
            qat_tensor *loss = qat_cross_entropy(ctx, logits, yb);
            qat_optim_zero_grad(opt);
            if (qat_backward(ctx, loss) != QAT_OK || qat_optim_step(opt) != QAT_OK) {
                rc = cli_fail_lib("train step");
                goto done;
            }
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
        }
        progress_end(&pr);
        if (interrupted) break;
        double wall = cli_now() - w0;
        ips[ep] = seen / t_compute;
        ipsw[ep] = seen / wall;
        double val_acc = d.val ? cli_evaluate(ctx, m, d.val, 500) : 0;
        test_acc = cli_evaluate(ctx, m, d.test, 500);
        cli_log("epoch %d/%d  loss %.4f  train_acc %.4f  val_acc %.4f  test_acc %.4f  %.0f img/s (wall %.0f)",
                ep + 1, o.epochs, loss_sum / seen, (double)correct / seen, val_acc, test_acc, ips[ep], ipsw[ep]);
        qat_batch_iter_reset_epoch(it);
    }
    if (interrupted) {
        cli_log("interrupted");
        rc = 130;
        goto done;
    }
    double med = cli_median(ips, o.epochs), medw = cli_median(ipsw, o.epochs);
    if (c.json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "train");
        json_str(&j, "model", o.model);
        json_int(&j, "epochs", o.epochs);
        json_num(&j, "test_accuracy", test_acc);
        json_num(&j, "train_images_per_s", med);
        json_num(&j, "train_images_per_s_wall", medw);
        json_num(&j, "seconds", cli_now() - t_start);
        json_int(&j, "threads", qat_get_num_threads());
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s: test accuracy %.4f, %.0f train images/s (median over epochs), %.1f s\n", o.model, test_acc,
               med, cli_now() - t_start);
    }
    free(ips);
    free(ipsw);
done:
    free(xb);
    free(yb);
    qat_batch_iter_free(it);
    qat_ctx_free(ctx);
    qat_optim_free(opt);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}
