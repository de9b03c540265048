/* bench_train: training and inference speed of the reference models
 * (docs/MODELS.md) on synthetic data, printed as one JSON object on stdout.
 *
 *   train_images_per_s   images / seconds spent in forward + backward +
 *                        optimizer step (SGD momentum 0.9, wd 5e-4), the
 *                        definition `qat train` reports, batch 128
 *   infer_images_per_s   fp32 forward without tape, evaluation mode, batch 128
 *   latency_us           fp32 forward of one image, evaluation mode
 *
 * Each figure is the median of --reps repetitions. With --profile, a
 * per-layer breakdown of one training step (forward, backward and the
 * optimizer) is added to the JSON and printed as a table on stderr.
 *
 * usage: bench_train [--models mlp,lenet5,convnet,resnet8,mobilenet,mobilenet-hs] [--threads T]
 *                    [--batch B] [--steps S] [--reps R] [--profile] [--cpu-clock] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/kernels.h" /* qat_simd_level: the engine in use */
#include "qat/core.h"
#include "qat/model.h"
#include "qat/optim.h"
#include "qat/tensor.h"

/* --cpu-clock: the calling thread's CPU time instead of wall time, so a
 * one-thread profile on a shared machine does not count the time other
 * processes hold the core (with more threads it misses their work) */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int die(const char *what)
{
    fprintf(stderr, "bench_train: %s: %s\n", what, qat_last_error());
    return 1;
}

/* ---- per-layer profile ----
 * Forward runs layer by layer under a timer. For backward, an empty tape
 * entry ("mark") is recorded on each layer's output right after the layer:
 * the tape runs in reverse, so a layer's mark fires just before the
 * layer's own backward, and the time between consecutive marks is that
 * layer's backward. */
#define MAX_LAYERS 128

typedef struct {
    double t[MAX_LAYERS]; /* time each layer's mark fired */
} marks;

static marks *g_marks;

static void mark_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    (void)ctx;
    g_marks->t[(int)(size_t)e->saved] = now();
}

typedef struct {
    double fwd[MAX_LAYERS], bwd[MAX_LAYERS];
    double loss_fwd, loss_bwd, zero_grad, optim;
} profile;

static int profile_step(qat_ctx *ctx, qat_model *m, qat_optim *opt, const float *x, int B,
                        const uint8_t *y, profile *p)
{
    int L = qat_model_num_layers(m);
    if (L > MAX_LAYERS) return 0;
    marks mk;
    g_marks = &mk;
    qat_tensor **out = qat_arena_alloc(ctx, (size_t)L * sizeof *out);
    if (!out) return -1;
    out[0] = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, x);
    if (!out[0]) return -1;
    for (int i = 1; i < L; i++) {
        qat_layer *l = qat_model_layer(m, i);
        qat_tensor *in[2] = {out[l->inputs[0]], l->n_inputs > 1 ? out[l->inputs[1]] : NULL};
        double t0 = now();
        out[i] = qat_layer_forward(ctx, l, in);
        p->fwd[i] += now() - t0;
        if (!out[i]) return -1;
        if (out[i]->requires_grad &&
            qat_tape_record(ctx, "mark", mark_backward, out[i], 0, NULL, (void *)(size_t)i) != QAT_OK)
            return -1;
        mk.t[i] = 0;
    }
    double t0 = now();
    qat_tensor *loss = qat_cross_entropy(ctx, out[L - 1], y);
    p->loss_fwd += now() - t0;
    t0 = now();
    qat_optim_zero_grad(opt);
    p->zero_grad += now() - t0;
    t0 = now();
    if (qat_backward(ctx, loss) != QAT_OK) return -1;
    double t_end = now();
    p->loss_bwd += mk.t[L - 1] - t0;
    /* layer i's backward runs from its mark to the next earlier mark that
     * fired (views such as flatten have their own marks too) */
    for (int i = L - 1; i >= 1; i--) {
        if (mk.t[i] == 0) continue;
        double next = t_end;
        for (int j = i - 1; j >= 1; j--)
            if (mk.t[j] != 0) {
                next = mk.t[j];
                break;
            }
        p->bwd[i] += next - mk.t[i];
    }
    t0 = now();
    if (qat_optim_step(opt) != QAT_OK) return -1;
    p->optim += now() - t0;
    qat_ctx_reset(ctx);
    return 0;
}

/* ---- one model ---- */

typedef struct {
    double train_ips, infer_ips, latency_us;
} result;

static int bench_model(const char *arch, int B, int steps, int reps, int do_profile, FILE *js,
                       result *r)
{
    qat_model *m = qat_model_build(arch, 1);
    if (!m) return die(arch);
    qat_optim_options oo = qat_optim_options_defaults(QAT_OPTIM_SGD);
    oo.lr = 0.05;
    oo.momentum = 0.9;
    oo.weight_decay = 5e-4;
    qat_optim *opt = qat_optim_create(qat_model_params(m), qat_model_num_params(m), &oo);
    qat_ctx *ctx = qat_ctx_create(0);
    float *x = malloc((size_t)B * 784 * sizeof *x);
    uint8_t *y = malloc((size_t)B);
    double *ts = malloc((size_t)(reps > 200 ? reps : 200) * sizeof *ts);
    if (!opt || !ctx || !x || !y || !ts) return die(arch);
    qat_rng rng;
    qat_rng_seed(&rng, 7);
    /* roughly the normalised pixel range of Fashion-MNIST */
    for (int i = 0; i < B * 784; i++) x[i] = (qat_rng_uniform(&rng) - 0.286f) / 0.353f;
    for (int i = 0; i < B; i++) y[i] = (uint8_t)qat_rng_below(&rng, 10);

    /* training: reps repetitions of `steps` steps, after 2 warm-up steps */
    qat_ctx_set_training(ctx, 1);
    for (int rep = -1; rep < reps; rep++) {
        int n = rep < 0 ? 2 : steps;
        double t = 0;
        for (int s = 0; s < n; s++) {
            double t0 = now();
            qat_tensor *xt = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, x);
            qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, xt), y);
            qat_optim_zero_grad(opt);
            if (qat_backward(ctx, loss) != QAT_OK || qat_optim_step(opt) != QAT_OK)
                return die(arch);
            t += now() - t0;
            qat_ctx_reset(ctx);
        }
        if (rep >= 0) ts[rep] = (double)B * n / t;
    }
    r->train_ips = median(ts, reps);

    if (do_profile) {
        profile p;
        memset(&p, 0, sizeof p);
        int L = qat_model_num_layers(m);
        for (int s = 0; s < steps; s++)
            if (profile_step(ctx, m, opt, x, B, y, &p)) return die(arch);
        double tot = p.loss_fwd + p.loss_bwd + p.zero_grad + p.optim;
        for (int i = 1; i < L; i++) tot += p.fwd[i] + p.bwd[i];
        double k = 1e3 / steps;
        fprintf(stderr, "%s: per-step ms (batch %d, %d steps), total %.2f ms\n", arch, B, steps, tot * k);
        fprintf(stderr, "  %-22s %-15s %9s %9s %6s\n", "layer", "type", "fwd", "bwd", "%");
        fprintf(js, ",\"profile_ms\":{");
        for (int i = 1; i < L; i++) {
            const qat_layer *l = qat_model_layer_c(m, i);
            fprintf(stderr, "  %-22s %-15s %9.3f %9.3f %6.1f\n", l->name, qat_layer_type_name(l->type),
                    p.fwd[i] * k, p.bwd[i] * k, 100 * (p.fwd[i] + p.bwd[i]) / tot);
            fprintf(js, "%s\"%s\":[%.4f,%.4f]", i > 1 ? "," : "", l->name, p.fwd[i] * k, p.bwd[i] * k);
        }
        fprintf(stderr, "  %-22s %-15s %9.3f %9.3f %6.1f\n", "loss", "cross_entropy", p.loss_fwd * k,
                p.loss_bwd * k, 100 * (p.loss_fwd + p.loss_bwd) / tot);
        fprintf(stderr, "  %-22s %-15s %9.3f %9s %6.1f\n", "zero_grad+optim", "sgd", (p.zero_grad + p.optim) * k,
                "", 100 * (p.zero_grad + p.optim) / tot);
        fprintf(js, ",\"loss\":[%.4f,%.4f],\"zero_grad_optim\":%.4f}", p.loss_fwd * k, p.loss_bwd * k,
                (p.zero_grad + p.optim) * k);
    }

    /* inference, batch B and batch 1 */
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    for (int rep = -1; rep < reps; rep++) {
        int n = rep < 0 ? 2 : steps;
        double t0 = now();
        for (int s = 0; s < n; s++) {
            qat_tensor *xt = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, x);
            if (!qat_model_forward(ctx, m, xt)) return die(arch);
            qat_ctx_reset(ctx);
        }
        if (rep >= 0) ts[rep] = (double)B * n / (now() - t0);
    }
    r->infer_ips = median(ts, reps);
    int nlat = 200;
    for (int i = -20; i < nlat; i++) {
        double t0 = now();
        qat_tensor *xt = qat_from(ctx, 4, (int[]){1, 1, 28, 28}, x);
        if (!qat_model_forward(ctx, m, xt)) return die(arch);
        qat_ctx_reset(ctx);
        if (i >= 0) ts[i] = (now() - t0) * 1e6;
    }
    r->latency_us = median(ts, nlat);

    free(ts);
    free(y);
    free(x);
    qat_ctx_free(ctx);
    qat_optim_free(opt);
    qat_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    const char *models = "mlp,lenet5,convnet,resnet8,mobilenet,mobilenet-hs";
    int threads = 2, B = 128, steps = 0, reps = 3, do_profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--profile")) {
            do_profile = 1;
        } else if (!strcmp(a, "--cpu-clock")) {
            bench_clock = CLOCK_THREAD_CPUTIME_ID;
        } else if (i + 1 < argc && !strcmp(a, "--models")) {
            models = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            threads = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--batch")) {
            B = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--steps")) {
            steps = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--reps")) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_train [--models mlp,lenet5,convnet,resnet8,mobilenet,mobilenet-hs] [--threads T]\n"
                            "                   [--batch B] [--steps S] [--reps R] [--profile] [--cpu-clock]\n");
            return 2;
        }
    }
    if (B < 1 || reps < 1 || threads < 0 || steps < 0) {
        fprintf(stderr, "bench_train: batch, reps must be >= 1; threads, steps >= 0\n");
        return 2;
    }
    qat_set_num_threads(threads);
    /* openblas_get_config is declared by Debian's cblas.h (OpenBLAS) */
    printf("{\"bench\":\"train\",\"threads\":%d,\"batch\":%d,\"reps\":%d,\"clock\":\"%s\",\"openblas\":\"%s\"",
           qat_get_num_threads(), B, reps, bench_clock == CLOCK_MONOTONIC ? "wall" : "thread-cpu",
           openblas_get_config());
    const char *env = getenv("OPENBLAS_CORETYPE");
    static const char *const engines[] = {"portable", "avx2", "avx512"};
    printf(",\"OPENBLAS_CORETYPE\":\"%s\",\"engine\":\"%s\",\"models\":{", env ? env : "",
           engines[qat_simd_level()]);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", models);
    int first = 1;
    for (char *save = NULL, *arch = strtok_r(buf, ",", &save); arch; arch = strtok_r(NULL, ",", &save)) {
        /* about 2 s of training per repetition at the current speeds */
        int s = steps ? steps
                      : !strcmp(arch, "mlp") ? 200 : !strcmp(arch, "lenet5") ? 60 : 10;
        printf("%s\"%s\":{\"steps\":%d", first ? "" : ",", arch, s);
        fflush(stdout);
        result r;
        if (bench_model(arch, B, s, reps, do_profile, stdout, &r)) return 1;
        printf(",\"train_images_per_s\":%.1f,\"infer_images_per_s\":%.1f,\"latency_us\":%.1f}", r.train_ips,
               r.infer_ips, r.latency_us);
        first = 0;
    }
    printf("}}\n");
    return 0;
}
