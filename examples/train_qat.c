/* A complete quantization-aware training script with qat's public C API:
 *
 *   1. load Fashion-MNIST and build LeNet-5,
 *   2. train it in float for a couple of epochs,
 *   3. turn it into a QAT model (BN folded, fake-quant; W8A8 by default),
 *      calibrate,
 *   4. fine-tune under simulated quantization: one optimizer over the
 *      weights and, at 4 bits or fewer, the learnable scales (LSQ),
 *   5. export true int8 weights and run them in the integer-only runtime.
 *
 * Build (after `meson install`, or from the build tree, which links it to
 * the shared libqat with only include/ on the include path):
 *   cc train_qat.c $(pkg-config --cflags --libs qat) -o train_qat
 * Run: ./train_qat [--quant w4a4] [--limit N] [/usr/share/datasets/fashion-mnist]
 *   --quant SPEC  wXaY (X, Y in 2..8) as `qat train --quant`; default w8a8
 *   --limit N     the first N training and test images only (a quick run)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qat.h>
#include <qat/qio.h>
#include <qat/runtime.h>

#define CHECK(cond, what)                                                  \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s failed: %s\n", what, qat_last_error());     \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

/* One epoch over `it`; qm == NULL trains the float model. */
static double train_epoch(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, qat_optim *opt, qat_batch_iter *it)
{
    float *x = malloc(qat_batch_iter_x_size(it) * sizeof *x);
    uint8_t y[128];
    int n;
    double loss_sum = 0;
    long seen = 0;
    qat_ctx_set_training(ctx, 1);
    while (qat_batch_iter_next(it, x, y, &n) == 1) {
        qat_tensor *xt = qat_from(ctx, 4, (int[]){n, 1, 28, 28}, x);
        qat_tensor *logits = qm ? qat_qmodel_forward(ctx, qm, xt) : qat_model_forward(ctx, m, xt);
        qat_tensor *loss = qat_cross_entropy(ctx, logits, y); /* NULL if anything failed */
        qat_optim_zero_grad(opt);
        CHECK(qat_backward(ctx, loss) == QAT_OK, "backward");
        qat_optim_step(opt); /* learnable scales keep themselves >= QAT_SCALE_EPS */
        loss_sum += loss->data[0] * n;
        seen += n;
        qat_ctx_reset(ctx); /* every step tensor is gone; nothing to free */
    }
    qat_batch_iter_reset_epoch(it);
    free(x);
    return loss_sum / seen;
}

/* Test accuracy in evaluation mode (BN running statistics, no tape). */
static double accuracy(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, const qat_dataset *test)
{
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    int correct = 0, idx[500];
    for (int s = 0; s < test->n; s += 500) {
        int n = test->n - s < 500 ? test->n - s : 500;
        for (int k = 0; k < n; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, 1, 28, 28});
        qat_dataset_normalize_into(test, idx, n, x->data);
        qat_tensor *logits = qm ? qat_qmodel_forward(ctx, qm, x) : qat_model_forward(ctx, m, x);
        CHECK(logits, "forward");
        correct += qat_count_correct(logits, test->labels + s);
        qat_ctx_reset(ctx);
    }
    qat_ctx_set_grad(ctx, 1);
    return (double)correct / test->n;
}

/* The first `limit` images of *ds (if it has more). */
static void limit_to(qat_dataset **ds, int limit)
{
    if (limit <= 0 || limit >= (*ds)->n) return;
    qat_dataset *sub = NULL;
    CHECK(qat_dataset_subset(*ds, 0, limit, &sub) == 0, "subset");
    qat_dataset_free(*ds);
    *ds = sub;
}

int main(int argc, char **argv)
{
    const char *dir = QAT_FASHION_MNIST_DIR, *spec = "w8a8";
    int limit = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            limit = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--quant") && i + 1 < argc) {
            spec = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--quant wXaY] [--limit N] [DATA_DIR]\n", argv[0]);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    qat_set_num_threads(0); /* QAT_NUM_THREADS or every core */

    /* 1. data (kept as bytes, normalised per batch) and the model */
    qat_dataset *train = NULL, *test = NULL;
    CHECK(qat_dataset_load_fashion_mnist(dir, 1, &train) == 0, "loading training images");
    CHECK(qat_dataset_load_fashion_mnist(dir, 0, &test) == 0, "loading test images");
    limit_to(&train, limit);
    limit_to(&test, limit);
    qat_model *m = qat_model_build("lenet5", 42);
    CHECK(m, "building lenet5");
    /* the training data's normalisation travels with the model (checkpoints,
     * and the int8 export's input lookup table) */
    CHECK(qat_model_set_input_norm(m, train->mean, train->std) == 0, "normalisation");
    qat_ctx *ctx = qat_ctx_create(0);

    qat_batch_opts bo = qat_batch_opts_defaults(); /* batch 128, shuffled */
    bo.seed = 42;
    qat_batch_iter *it = NULL;
    CHECK(qat_batch_iter_create(train, &bo, &it) == 0, "batches");
    int steps = qat_batch_iter_num_batches(it);

    /* 2. float training: SGD momentum 0.9, wd 5e-4 (not on BN/bias), cosine lr */
    qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
    oo.lr = 0.05;
    oo.momentum = 0.9;
    oo.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &oo);
    CHECK(opt, "optimizer");
    qat_schedule cos = qat_schedule_cosine(0.05, 0.0, 2 * steps);
    qat_optim_set_schedule(opt, &cos);
    for (int e = 0; e < 2; e++) printf("float epoch %d: loss %.4f\n", e + 1, train_epoch(ctx, m, NULL, opt, it));
    printf("float test accuracy: %.4f\n", accuracy(ctx, m, NULL, test));
    qat_optim_free(opt);

    /* 3. QAT model: every conv/linear (+BN+ReLU) gets per-channel weights
     * and a quantized output at the spec's bits (learnable scales at 4 bits
     * or fewer, which start from the MSE-optimal range as in `qat train`);
     * then calibrate on up to 1024 training images */
    qat_qconfig cfg;
    CHECK(qat_qconfig_init(&cfg, spec) == 0, "qconfig");
    if (cfg.base.lsq_act) cfg.base.calib = QAT_CALIBRATOR_MSE;
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    CHECK(qm, "prepare");
    qat_qmodel_set_fake_quant(qm, 0);
    int n_cal = train->n < 1024 ? train->n : 1024;
    for (int s = 0; s < n_cal; s += 256) {
        int idx[256], n = n_cal - s < 256 ? n_cal - s : 256;
        for (int k = 0; k < n; k++) idx[k] = s + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, 1, 28, 28});
        qat_dataset_normalize_into(train, idx, n, x->data);
        CHECK(qat_qmodel_calibrate(ctx, qm, x) == 0, "calibrate");
        qat_ctx_reset(ctx);
    }
    CHECK(qat_qmodel_finalize(qm) == 0, "finalize"); /* fixes scales, fake-quant on */
    printf("PTQ %s (calibrated) accuracy: %.4f\n", spec, accuracy(ctx, m, qm, test));

    /* 4. fine-tune under fake-quant: lr 0.005, BN and observers frozen after
     * the epoch. The optimizer gets every trainable tensor: the float
     * model's weights and BN parameters and the learnable scales and zero
     * points (no weight decay on those). */
    qat_qmodel_set_observers(qm, 1);
    oo.lr = 0.005;
    int np = qat_qmodel_parameters(qm, NULL, 0);
    CHECK(np >= 0, "parameters");
    qat_named_tensor *params = malloc((size_t)np * sizeof *params);
    CHECK(params, "out of memory");
    qat_qmodel_parameters(qm, params, np);
    opt = qat_optim_create(params, np, &oo);
    free(params); /* the optimizer keeps its own copy of the list */
    CHECK(opt, "optimizer");
    printf("QAT: %d tensors to train (%d learnable quantization parameters)\n", np, qat_qmodel_num_params(qm));
    qat_schedule cos2 = qat_schedule_cosine(0.005, 0.0, steps);
    qat_optim_set_schedule(opt, &cos2);
    printf("QAT epoch: loss %.4f\n", train_epoch(ctx, m, qm, opt, it));
    qat_qmodel_freeze_bn(qm, 1);
    qat_qmodel_set_observers(qm, 0);
    printf("QAT (fake-quant) accuracy: %.4f\n", accuracy(ctx, m, qm, test));

    /* 5. true int8: export (the input lookup table applies the model's
     * normalisation to raw pixels), then run in the integer-only runtime */
    CHECK(qat_export_int8(qm, "lenet5.int8.h5", NULL) == 0, "export");
    qat_rt_model *rt = NULL;
    if (qat_rt_load_file("lenet5.int8.h5", &rt) || qat_rt_prepare(rt, 256)) {
        fprintf(stderr, "runtime: %s\n", qat_rt_last_error());
        return 1;
    }
    int8_t logits[256 * 10];
    int correct = 0;
    for (int s = 0; s < test->n; s += 256) {
        int n = test->n - s < 256 ? test->n - s : 256;
        qat_rt_run_u8(rt, test->images + (size_t)s * 784, n, logits); /* raw pixels in */
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int k = 1; k < 10; k++)
                if (logits[i * 10 + k] > logits[i * 10 + best]) best = k;
            correct += best == test->labels[s + i];
        }
    }
    printf("int8 runtime accuracy: %.4f (lenet5.int8.h5)\n", (double)correct / test->n);

    qat_rt_free(rt);
    qat_optim_free(opt);
    qat_qmodel_free(qm); /* before the float model it borrows */
    qat_batch_iter_free(it);
    qat_ctx_free(ctx);
    qat_model_free(m);
    qat_dataset_free(train);
    qat_dataset_free(test);
    return 0;
}
