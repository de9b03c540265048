#include "tools/int8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A fake-quant value y = (q - z) * s back to its int8 grid index q. */
static int8_t grid_index(float y, float inv_s, int32_t z)
{
    long v = lrintf(y * inv_s) + z;
    return (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
}

int int8_argmax(const int8_t *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

int int8_evaluate(qat_rt_model *rt, const qat_dataset *ds, int batch, int8_t **logits, double *accuracy,
                  double *images_per_s)
{
    int K = qat_rt_num_classes(rt);
    int8_t *all = malloc((size_t)ds->n * K);
    if (!all) return cli_fail("out of memory");
    if (qat_rt_prepare(rt, batch)) {
        free(all);
        return cli_fail("runtime: %s", qat_rt_last_error());
    }
    size_t img = (size_t)ds->c * ds->h * ds->w;
    long correct = 0;
    double t0 = cli_now();
    for (int s = 0; s < ds->n; s += batch) {
        int n = ds->n - s < batch ? ds->n - s : batch;
        if (qat_rt_run_u8(rt, ds->images + (size_t)s * img, n, all + (size_t)s * K)) {
            free(all);
            return cli_fail("runtime: %s", qat_rt_last_error());
        }
    }
    double dt = cli_now() - t0;
    for (int i = 0; i < ds->n; i++) correct += int8_argmax(all + (size_t)i * K, K) == ds->labels[i];
    if (accuracy) *accuracy = (double)correct / ds->n;
    if (images_per_s) *images_per_s = ds->n / dt;
    if (logits)
        *logits = all;
    else
        free(all);
    return 0;
}

/* The fake-quant model over ds in batches (evaluation mode, no gradient):
 * the logits into all[] [ds->n, K], as int8 grid indices (grid: 1, with
 * the output quantizer's s and z) or as float32. */
static int fq_batches(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int batch, int grid, float s, int32_t z,
                      void *all, double *accuracy)
{
    qat_model *m = qat_qmodel_float(qm);
    int K = qat_model_layer_c(m, qat_model_num_layers(m) - 1)->out_shape[0];
    int *idx = malloc((size_t)batch * sizeof *idx);
    if (!idx) return cli_fail("out of memory");
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    long correct = 0;
    int rc = 0;
    float inv = 1.0f / s;
    for (int st = 0; st < ds->n && !rc; st += batch) {
        int n = ds->n - st < batch ? ds->n - st : batch;
        for (int k = 0; k < n; k++) idx[k] = st + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){n, ds->c, ds->h, ds->w});
        qat_tensor *y = x && !qat_dataset_normalize_into(ds, idx, n, x->data) ? qat_qmodel_forward(ctx, qm, x) : NULL;
        if (!y) {
            rc = cli_fail_lib("fake-quant forward");
            break;
        }
        correct += qat_count_correct(y, ds->labels + st);
        if (grid) /* the fake-quant logits are (q - z) * s exactly: recover q */
            for (size_t i = 0; i < y->numel; i++) ((int8_t *)all)[(size_t)st * K + i] = grid_index(y->data[i], inv, z);
        else
            memcpy((float *)all + (size_t)st * K, y->data, y->numel * sizeof(float));
        qat_ctx_reset(ctx);
    }
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    free(idx);
    if (!rc && accuracy) *accuracy = (double)correct / ds->n;
    return rc;
}

int fq_logits(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int batch, int8_t **logits, double *accuracy)
{
    qat_model *m = qat_qmodel_float(qm);
    int nl = qat_model_num_layers(m);
    int u = qat_qmodel_layer_unit(qm, nl - 1);
    if (u < 0) return cli_fail("the model's output is not quantized");
    const qat_quantizer *q = &qat_qmodel_unit(qm, u)->act;
    float s = q->lsq_scale ? q->lsq_scale->data[0] : q->scale[0];
    int K = qat_model_layer_c(m, nl - 1)->out_shape[0];
    int8_t *all = malloc((size_t)ds->n * K);
    if (!all) return cli_fail("out of memory");
    int rc = fq_batches(ctx, qm, ds, batch, 1, s, q->zero_point[0], all, accuracy);
    if (rc) free(all);
    else *logits = all;
    return rc;
}

int fq_float_logits(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int batch, float **logits, double *accuracy)
{
    qat_model *m = qat_qmodel_float(qm);
    int K = qat_model_layer_c(m, qat_model_num_layers(m) - 1)->out_shape[0];
    float *all = malloc((size_t)ds->n * K * sizeof *all);
    if (!all) return cli_fail("out of memory");
    int rc = fq_batches(ctx, qm, ds, batch, 0, 1.0f, 0, all, accuracy);
    if (rc) free(all);
    else *logits = all;
    return rc;
}

int int8_op_agreement(qat_rt_model *rt, qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, int batch,
                      op_agreement *ops)
{
    qat_model *m = qat_qmodel_float(qm);
    int nops = qat_rt_num_ops(rt);
    int *layer = malloc((size_t)nops * sizeof *layer), *idx = malloc((size_t)batch * sizeof *idx);
    long *same = calloc((size_t)nops, sizeof *same);
    if (!layer || !idx || !same) {
        free(layer);
        free(idx);
        free(same);
        return cli_fail("out of memory");
    }
    /* op i reads the output of its layer's unit (after ReLU and the
     * activation quantizer) */
    for (int i = 0; i < nops; i++) {
        qat_rt_op_info info;
        qat_rt_op(rt, i, &info);
        ops[i] = (op_agreement){.name = info.name, .type = info.type};
        int l = qat_model_find(m, info.name), u = qat_qmodel_find_unit(qm, info.name);
        if (u < 0 && l >= 0) u = qat_qmodel_layer_unit(qm, l);
        layer[i] = u >= 0 ? qat_qmodel_unit(qm, u)->last : -1;
        if (!strcmp(info.type, "input")) layer[i] = 0;
        if (!strcmp(info.type, "flatten")) layer[i] = -1;
    }
    int tr = qat_ctx_training(ctx), gr = qat_ctx_grad_enabled(ctx);
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    int rc = qat_rt_prepare(rt, batch) ? cli_fail("runtime: %s", qat_rt_last_error()) : 0;
    size_t img = (size_t)ds->c * ds->h * ds->w;
    int8_t *scratch = malloc((size_t)batch * qat_rt_num_classes(rt));
    if (!rc && !scratch) rc = cli_fail("out of memory");
    for (int st = 0; st < n && !rc; st += batch) {
        int b = n - st < batch ? n - st : batch;
        for (int k = 0; k < b; k++) idx[k] = st + k;
        qat_tensor *x = qat_new(ctx, 4, (int[]){b, ds->c, ds->h, ds->w});
        qat_tensor **all = x && !qat_dataset_normalize_into(ds, idx, b, x->data) ? qat_qmodel_forward_all(ctx, qm, x)
                                                                                 : NULL;
        if (!all) {
            rc = cli_fail_lib("fake-quant forward");
            break;
        }
        if (qat_rt_run_u8(rt, ds->images + (size_t)st * img, b, scratch)) {
            rc = cli_fail("runtime: %s", qat_rt_last_error());
            break;
        }
        for (int i = 0; i < nops; i++) {
            if (layer[i] < 0) continue;
            qat_rt_op_info info;
            qat_rt_op(rt, i, &info);
            const qat_tensor *y = all[layer[i]];
            const int8_t *q = qat_rt_op_output(rt, i);
            size_t per = 1;
            for (int k = 0; k < info.out_ndim; k++) per *= (size_t)info.out_shape[k];
            if (y->numel != per * (size_t)b) continue; /* not the same tensor */
            float inv = 1.0f / info.out_scale;
            for (size_t e = 0; e < y->numel; e++) {
                int d = abs((int)grid_index(y->data[e], inv, info.out_zero_point) - (int)q[e]);
                same[i] += d == 0;
                if (d > ops[i].max_diff_steps) ops[i].max_diff_steps = d;
            }
            ops[i].elements += (long)y->numel;
        }
        qat_ctx_reset(ctx);
    }
    for (int i = 0; i < nops; i++) ops[i].same = ops[i].elements ? (double)same[i] / ops[i].elements : 0;
    qat_ctx_set_training(ctx, tr);
    qat_ctx_set_grad(ctx, gr);
    free(scratch);
    free(layer);
    free(idx);
    free(same);
    return rc;
}

void int8_agreement(const int8_t *a, const int8_t *b, long n, int classes, agreement *out)
{
    long same_top = 0, same = 0;
    int md = 0;
    for (long i = 0; i < n; i++) {
        const int8_t *x = a + i * classes, *y = b + i * classes;
        same_top += int8_argmax(x, classes) == int8_argmax(y, classes);
        for (int k = 0; k < classes; k++) {
            int d = abs((int)x[k] - (int)y[k]);
            same += d == 0;
            if (d > md) md = d;
        }
    }
    out->images = n;
    out->elements = n * classes;
    out->top1 = n ? (double)same_top / n : 1;
    out->logits = n ? (double)same / (n * classes) : 1;
    out->max_diff_steps = md;
}

/* ---- .npy ---- */

int npy_read(const char *path, npy_array *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return cli_fail("%s: cannot open", path);
    unsigned char h[10];
    int rc = 0;
    char *hdr = NULL;
    if (fread(h, 1, 10, f) != 10 || memcmp(h, "\x93NUMPY", 6)) {
        rc = cli_fail("%s: not a .npy file", path);
        goto done;
    }
    size_t hl = h[8] | (size_t)h[9] << 8;
    if (h[6] >= 2) { /* version 2: 4-byte header length */
        unsigned char e[2];
        if (fread(e, 1, 2, f) != 2) {
            rc = cli_fail("%s: truncated header", path);
            goto done;
        }
        hl |= (size_t)e[0] << 16 | (size_t)e[1] << 24;
    }
    hdr = calloc(hl + 1, 1);
    if (!hdr || fread(hdr, 1, hl, f) != hl) {
        rc = cli_fail("%s: truncated header", path);
        goto done;
    }
    if (strstr(hdr, "'fortran_order': True")) {
        rc = cli_fail("%s: Fortran order is not supported", path);
        goto done;
    }
    if (strstr(hdr, "'|u1'") || strstr(hdr, "'u1'"))
        out->is_float = 0;
    else if (strstr(hdr, "'<f4'"))
        out->is_float = 1;
    else {
        rc = cli_fail("%s: dtype must be uint8 pixels or little-endian float32", path);
        goto done;
    }
    char *sh = strstr(hdr, "'shape': (");
    if (!sh) {
        rc = cli_fail("%s: no shape in header", path);
        goto done;
    }
    sh += 10;
    size_t total = 1;
    while (*sh && *sh != ')') {
        char *e;
        long v = strtol(sh, &e, 10);
        if (e == sh) break;
        if (out->ndim == 4 || v <= 0) {
            rc = cli_fail("%s: shape must have 3 or 4 positive dimensions", path);
            goto done;
        }
        out->shape[out->ndim++] = (int)v;
        total *= (size_t)v;
        sh = e;
        while (*sh == ',' || *sh == ' ') sh++;
    }
    if (out->ndim < 3) {
        rc = cli_fail("%s: shape must be [N,H,W] or [N,C,H,W]", path);
        goto done;
    }
    size_t es = out->is_float ? 4 : 1;
    out->data = malloc(total * es);
    if (!out->data || fread(out->data, es, total, f) != total) {
        rc = cli_fail("%s: data shorter than its shape", path);
        goto done;
    }
    if (fgetc(f) != EOF) rc = cli_fail("%s: data longer than its shape", path);
done:
    free(hdr);
    fclose(f);
    if (rc) {
        free(out->data);
        out->data = NULL;
    }
    return rc;
}

static int npy_write(const char *path, const void *data, size_t esize, const char *descr, int rows, int cols)
{
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, rows,
                     cols);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return cli_fail("%s: cannot create", path);
    unsigned short hl = (unsigned short)(n + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(hdr, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, esize, (size_t)rows * cols, f);
    return fclose(f) ? cli_fail("%s: write failed", path) : 0;
}

int npy_write_i8(const char *path, const int8_t *data, int rows, int cols)
{
    return npy_write(path, data, 1, "|i1", rows, cols);
}

int npy_write_f32(const char *path, const float *data, int rows, int cols)
{
    return npy_write(path, data, 4, "<f4", rows, cols);
}

/* ---- float logits (dynamic quantization, float ops) ---- */

int float_argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static double float_accuracy(const float *l, const qat_dataset *ds, int K)
{
    long correct = 0;
    for (int i = 0; i < ds->n; i++) correct += float_argmax(l + (size_t)i * K, K) == ds->labels[i];
    return ds->n ? (double)correct / ds->n : 0;
}

int rt_float_evaluate(qat_rt_model *rt, const qat_dataset *ds, int batch, float **logits, double *accuracy,
                      double *images_per_s)
{
    int K = qat_rt_num_classes(rt);
    float *all = malloc((size_t)ds->n * K * sizeof *all);
    if (!all) return cli_fail("out of memory");
    if (qat_rt_prepare(rt, batch)) {
        free(all);
        return cli_fail("runtime: %s", qat_rt_last_error());
    }
    size_t img = (size_t)ds->c * ds->h * ds->w;
    double t0 = cli_now();
    for (int s = 0; s < ds->n; s += batch) {
        int n = ds->n - s < batch ? ds->n - s : batch;
        if (qat_rt_run_u8_float(rt, ds->images + (size_t)s * img, n, all + (size_t)s * K)) {
            free(all);
            return cli_fail("runtime: %s", qat_rt_last_error());
        }
    }
    double dt = cli_now() - t0;
    if (accuracy) *accuracy = float_accuracy(all, ds, K);
    if (images_per_s) *images_per_s = ds->n / dt;
    if (logits) *logits = all;
    else free(all);
    return 0;
}

int dyn_evaluate(const qat_dynmodel *d, const qat_dataset *ds, int batch, float **logits, double *accuracy)
{
    int K = qat_dynmodel_num_classes(d);
    float *all = malloc((size_t)ds->n * K * sizeof *all);
    if (!all) return cli_fail("out of memory");
    size_t img = (size_t)ds->c * ds->h * ds->w;
    for (int s = 0; s < ds->n; s += batch) {
        int n = ds->n - s < batch ? ds->n - s : batch;
        if (qat_dynmodel_forward_u8(d, ds->images + (size_t)s * img, n, all + (size_t)s * K)) {
            free(all);
            return cli_fail_lib("dynamic evaluation");
        }
        if (ds->n > 4 * batch && (s / batch) % 10 == 0) cli_log("dynamic eval: %d / %d images", s + n, ds->n);
    }
    if (accuracy) *accuracy = float_accuracy(all, ds, K);
    if (logits) *logits = all;
    else free(all);
    return 0;
}

void float_agreement(const float *a, const float *b, long n, int classes, agreement *out)
{
    long same_top = 0, same = 0;
    for (long i = 0; i < n; i++) {
        const float *x = a + i * classes, *y = b + i * classes;
        same_top += float_argmax(x, classes) == float_argmax(y, classes);
        for (int k = 0; k < classes; k++) same += !memcmp(&x[k], &y[k], sizeof x[k]); /* identical bits */
    }
    out->images = n;
    out->elements = n * classes;
    out->top1 = n ? (double)same_top / n : 1;
    out->logits = n ? (double)same / (n * classes) : 1;
    out->max_diff_steps = 0;
}
