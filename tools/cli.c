#include "tools/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_common_defaults(cli_common *c)
{
    memset(c, 0, sizeof *c);
    c->data_dir = QAT_FASHION_MNIST_DIR;
    c->seed = 42;
    c->val = 5000;
}

const char *cli_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        cli_fail("%s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_int(const char *opt, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -2147483647L || v > 2147483647L)
        return cli_fail("%s: '%s' is not an integer", opt, s), -1;
    *out = (int)v;
    return 0;
}

int cli_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v))
        return cli_fail("%s: '%s' is not a number", opt, s), -1;
    *out = v;
    return 0;
}

int cli_common_parse(cli_common *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    int n;
    if (!strcmp(a, "--json")) {
        c->json = 1;
        return 1;
    }
    if (!strcmp(a, "--data")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        c->data_dir = v;
        c->data_dir_given = 1;
        return 1;
    }
    if (!strcmp(a, "--seed")) {
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, &n) || n < 0) return -1;
        c->seed = (uint64_t)n;
        return 1;
    }
    struct {
        const char *name;
        int *dst;
        int min;
    } ints[] = {{"--threads", &c->threads, 0}, {"--val", &c->val, 0},
                {"--limit-train", &c->limit_train, 0}, {"--limit-test", &c->limit_test, 0}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        if (strcmp(a, ints[k].name)) continue;
        if (!(v = cli_value(argc, argv, i)) || cli_int(a, v, &n)) return -1;
        if (n < ints[k].min) return cli_fail("%s must be >= %d", a, ints[k].min), -1;
        *ints[k].dst = n;
        return 1;
    }
    return 0;
}

void cli_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("qat: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail_lib(const char *what) { return cli_fail("%s: %s", what, qat_last_error()); }

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, int n)
{
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int cli_load_data(const cli_common *c, cli_data *d, int need_train, int need_test)
{
    memset(d, 0, sizeof *d);
    if (need_train) {
        qat_dataset *full = NULL;
        if (qat_dataset_load_fashion_mnist(c->data_dir, 1, &full)) return cli_fail_lib("loading training data");
        if (c->limit_train > 0 && c->limit_train < full->n) {
            qat_dataset *sub = NULL;
            if (qat_dataset_subset(full, 0, c->limit_train, &sub)) {
                qat_dataset_free(full);
                return cli_fail_lib("--limit-train");
            }
            qat_dataset_free(full);
            full = sub;
        }
        if (c->val >= full->n) {
            int n = full->n;
            qat_dataset_free(full);
            return cli_fail("--val %d leaves no training images (the training set has %d)", c->val, n);
        }
        /* The split depends on the seed only through a fixed offset, so the
         * same --seed gives the same validation images in every command. */
        if (qat_dataset_split(full, c->val, c->seed + 1000003u, &d->train, &d->val)) {
            qat_dataset_free(full);
            return cli_fail_lib("validation split");
        }
        qat_dataset_free(full);
    }
    if (need_test) {
        if (qat_dataset_load_fashion_mnist(c->data_dir, 0, &d->test)) {
            cli_data_free(d);
            return cli_fail_lib("loading test data");
        }
        if (c->limit_test > 0 && c->limit_test < d->test->n) {
            qat_dataset *sub = NULL;
            if (qat_dataset_subset(d->test, 0, c->limit_test, &sub)) {
                cli_data_free(d);
                return cli_fail_lib("--limit-test");
            }
            qat_dataset_free(d->test);
            d->test = sub;
        }
    }
    return 0;
}

void cli_data_free(cli_data *d)
{
    qat_dataset_free(d->train);
    qat_dataset_free(d->val);
    qat_dataset_free(d->test);
    memset(d, 0, sizeof *d);
}

qat_tensor *cli_forward(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, qat_tensor *x)
{
    return qm ? qat_qmodel_forward(ctx, qm, x) : qat_model_forward(ctx, m, x);
}

int cli_qconfig(qat_qconfig *cfg, const char *spec, char **overrides, int n_overrides)
{
    if (qat_qconfig_init(cfg, spec)) return cli_fail_lib("--quant");
    for (int i = 0; i < n_overrides; i++)
        if (qat_qconfig_add_override(cfg, overrides[i])) return cli_fail_lib("--override");
    return 0;
}

int cli_calibrate(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, uint64_t seed, int batch)
{
    if (n > ds->n) n = ds->n;
    qat_rng r;
    qat_rng_seed(&r, seed);
    int *perm = malloc((size_t)ds->n * sizeof *perm);
    if (!perm) return cli_fail("calibration: out of memory");
    for (int i = 0; i < ds->n; i++) perm[i] = i;
    for (int i = 0; i < n; i++) { /* partial Fisher-Yates: the first n of a permutation */
        int j = i + (int)qat_rng_below(&r, (uint32_t)(ds->n - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    qat_qmodel_set_fake_quant(qm, 0);
    qat_qmodel_set_observers(qm, 1);
    int rc = 0;
    for (int s = 0; s < n && !rc; s += batch) {
        int b = n - s < batch ? n - s : batch;
        qat_tensor *x = qat_new(ctx, 4, (int[]){b, ds->c, ds->h, ds->w});
        if (!x || qat_dataset_normalize_into(ds, perm + s, b, x->data) || qat_qmodel_calibrate(ctx, qm, x))
            rc = cli_fail_lib("calibration");
        if (qat_ctx_reset(ctx) != QAT_OK && !rc) rc = cli_fail_lib("calibration");
    }
    free(perm);
    if (!rc && qat_qmodel_finalize(qm)) rc = cli_fail_lib("calibration");
    return rc;
}

double cli_evaluate(qat_ctx *ctx, qat_model *m, qat_qmodel *qm, const qat_dataset *ds, int batch)
{
    if (!ds || ds->n == 0) return 0;
    int was_training = qat_ctx_training(ctx), had_grad = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    long correct = 0;
    for (int s = 0; s < ds->n; s += batch) {
        int n = ds->n - s < batch ? ds->n - s : batch;
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, ds->c, ds->h, ds->w});
        int *idx = qat_arena_alloc(ctx, (size_t)n * sizeof(int));
        if (!x || !idx) {
            correct = -1;
            break;
        }
        for (int k = 0; k < n; k++) idx[k] = s + k;
        qat_dataset_normalize_into(ds, idx, n, x->data);
        qat_tensor *y = cli_forward(ctx, m, qm, x);
        if (!y) {
            correct = -1;
            qat_ctx_reset(ctx);
            break;
        }
        correct += qat_count_correct(y, ds->labels + s);
        if (qat_ctx_reset(ctx) != QAT_OK) {
            correct = -1;
            break;
        }
    }
    qat_ctx_set_training(ctx, was_training);
    qat_ctx_set_grad(ctx, had_grad);
    return correct < 0 ? -1.0 : (double)correct / ds->n;
}

/* ---- JSON ---- */

static void json_sep(json_w *j, const char *key)
{
    if (j->need_comma[j->depth]) fputc(',', j->f);
    j->need_comma[j->depth] = 1;
    if (key) {
        fputc('"', j->f);
        for (const char *s = key; *s; s++) fputc(*s, j->f);
        fputs("\":", j->f);
    }
}

void json_begin(json_w *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
}

void json_obj(json_w *j, const char *key)
{
    json_sep(j, key);
    fputc('{', j->f);
    j->need_comma[++j->depth] = 0;
}

void json_obj_end(json_w *j)
{
    j->depth--;
    fputc('}', j->f);
}

void json_arr(json_w *j, const char *key)
{
    json_sep(j, key);
    fputc('[', j->f);
    j->need_comma[++j->depth] = 0;
}

void json_arr_end(json_w *j)
{
    j->depth--;
    fputc(']', j->f);
}

void json_str(json_w *j, const char *key, const char *v)
{
    json_sep(j, key);
    if (!v) {
        fputs("null", j->f);
        return;
    }
    fputc('"', j->f);
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(j->f, "\\%c", *s);
        else if (*s < 0x20)
            fprintf(j->f, "\\u%04x", *s);
        else
            fputc(*s, j->f);
    }
    fputc('"', j->f);
}

void json_num(json_w *j, const char *key, double v)
{
    json_sep(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.10g", v);
    else
        fputs("null", j->f);
}

void json_int(json_w *j, const char *key, long long v)
{
    json_sep(j, key);
    fprintf(j->f, "%lld", v);
}

void json_bool(json_w *j, const char *key, int v)
{
    json_sep(j, key);
    fputs(v ? "true" : "false", j->f);
}

void json_null(json_w *j, const char *key)
{
    json_sep(j, key);
    fputs("null", j->f);
}

void json_end(json_w *j)
{
    fputc('\n', j->f);
    fflush(j->f);
}

/* ---- progress ---- */

void progress_start(progress *p, const char *label, long total)
{
    p->label = label;
    p->total = total;
    p->start = p->last = cli_now();
    p->tty = isatty(STDERR_FILENO);
}

void progress_update(progress *p, long done, const char *extra)
{
    double now = cli_now();
    double interval = p->tty ? 0.1 : 10.0;
    if (now - p->last < interval && done < p->total) return;
    p->last = now;
    double el = now - p->start, frac = p->total ? (double)done / p->total : 1;
    double eta = frac > 0 ? el / frac - el : 0;
    if (p->tty) {
        int w = 30, fill = (int)(frac * w);
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r%s [%s] %3.0f%% %s ETA %.0fs  ", p->label, bar, 100 * frac, extra ? extra : "",
                eta);
    } else {
        fprintf(stderr, "%s %ld/%ld %s ETA %.0fs\n", p->label, done, p->total, extra ? extra : "", eta);
    }
    fflush(stderr);
}

void progress_end(progress *p)
{
    if (p->tty) fputs("\r\033[K", stderr);
}

void cli_export_norm(const qat_model *m, const char *file, qat_export_opts *o)
{
    if (qat_model_input_norm(m, NULL, NULL)) return; /* the export takes the model's */
    o->mean = QAT_FASHION_MNIST_MEAN;
    o->std = QAT_FASHION_MNIST_STD;
    cli_log("%s stores no input normalisation (written before qat kept the training data's): "
            "exporting with Fashion-MNIST's (mean %.4f, std %.4f)",
            file, (double)o->mean, (double)o->std);
}
