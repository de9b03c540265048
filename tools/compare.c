/* qat compare: PTQ with every calibrator vs QAT at several bit widths, from
 * one float checkpoint; int8 export of each winner checked in the runtime;
 * per-layer error; sensitivity and mixed precision; a report. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qat/qio.h"
#include "tools/commands.h"
#include "tools/compare.h"
#include "tools/int8.h"
#include "tools/ptqmethods.h"
#include "tools/train.h"

typedef struct cmp_opts {
    const char *from, *out;
    char specs_buf[256];
    int calibs[QAT_CALIBRATOR_COUNT], n_calibs;
    int qat_epochs, calib_size, layer_images, skip_qat, sensitivity;
    long budget;
    /* --methods: rows per spec, in order ("ptq": the calibrator sweep, "qat", or PTQ methods) */
    int n_methods;
    char methods[8][24];
    int per_tensor;  /* --per-tensor-weights (PTQ rows) */
    ptq_methods pm;  /* --adaround-iters, --adaround-images, --bc-images */
} cmp_opts;

static int usage(void)
{
    fprintf(stderr,
            "usage: qat compare --from float.h5 [--quant w8a8,w4a8,w4a4] [--calib all|minmax,kl,...]\n"
            "                   [--qat-epochs 2] [--calib-size 1024] [--no-qat] [--sensitivity]\n"
            "                   [--budget BYTES] [--out DIR] [--data DIR] [--val N] [--seed S] [--threads T] [--json]\n"
            "                   [--methods ptq,cle,cle+bc,adaround,qat] [--per-tensor-weights]\n"
            "                   [--adaround-iters 1000] [--adaround-images 256] [--bc-images 256]\n"
            "PTQ with every calibrator and QAT at each spec; the PTQ calibrator is chosen on the validation\n"
            "split; every winner is exported to int8 and run in the integer runtime. --sensitivity quantizes one\n"
            "unit at a time (lowest-bit spec) and ranks them; --budget proposes a per-unit assignment (8 bits\n"
            "for the most sensitive units, the lowest spec elsewhere) under BYTES of weights and measures it.\n"
            "--methods picks the rows of each spec (default ptq,qat): ptq (every calibrator), qat, and PTQ with\n"
            "methods ('+' lists of cle, adaround, bc or bca), calibrated with the calibrator the ptq rows chose (else the\n"
            "first of --calib), each exported and run like the chosen PTQ row.\n");
    return 2;
}

static long weight_params(qat_qmodel *qm, const qat_qunit *un)
{
    if (un->kind != QAT_UNIT_CONV) return 0;
    return (long)qat_model_layer_c(qat_qmodel_float(qm), un->head)->weight->numel;
}

/* Weight bytes of a configuration: weights at their bits (packed when
 * packed, else one byte each as the int8 file stores them), plus int32
 * bias, multiplier and shift per output channel. */
static long estimate_bytes(qat_qmodel *qm, int packed)
{
    long b = 0;
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        if (un->kind != QAT_UNIT_CONV) continue;
        const qat_layer *l = qat_model_layer_c(qat_qmodel_float(qm), un->head);
        int bits = un->cfg.quantize ? (packed ? un->weight.scheme.bits : 8) : 32;
        long extra = 0;
        if (un->cfg.quantize && un->cfg.float_format) {
            bits = 16;
        } else if (un->cfg.quantize && un->cfg.weight_kind != QAT_WEIGHT_UNIFORM) {
            int ib = 1;
            while ((1 << ib) < un->cfg.weight_k) ib++;
            /* hashed: no indices, only the K values; codebook: indices + K values */
            bits = un->cfg.weight_kind == QAT_WEIGHT_HASHED ? 0 : packed ? ib : 8;
            extra = un->cfg.weight_k;
        }
        b += ((long)l->weight->numel * bits + 7) / 8 + extra + 12L * l->out_ch;
    }
    return b;
}

static void copy_layers(cmp_run *r, const qat_layer_error *e, int n)
{
    r->n_layers = n < CMP_MAX_LAYERS ? n : CMP_MAX_LAYERS;
    for (int k = 0; k < r->n_layers; k++) {
        snprintf(r->layers[k].name, sizeof r->layers[k].name, "%s", e[k].name);
        r->layers[k].cosine = e[k].cosine;
        r->layers[k].sqnr_db = e[k].sqnr_db;
        r->layers[k].mse = e[k].mse;
    }
}

static int layer_errors(qat_ctx *ctx, qat_qmodel *qm, const qat_dataset *ds, int n, cmp_run *r)
{
    if (n > ds->n) n = ds->n;
    qat_tensor *x = qat_new(ctx, 4, (int[]){n, ds->c, ds->h, ds->w});
    qat_layer_error *e = calloc((size_t)qat_qmodel_num_units(qm), sizeof *e);
    int k = -1;
    if (x && e && !qat_dataset_normalize_into(ds, NULL, n, x->data)) k = qat_qmodel_layer_errors(ctx, qm, x, e);
    if (k >= 0) copy_layers(r, e, k);
    free(e);
    qat_ctx_reset(ctx);
    return k < 0 ? cli_fail_lib("per-layer errors") : 0;
}

/* Exports qm, runs it in the runtime on the test set, agreement vs qm. */
static int export_and_check(qat_ctx *ctx, qat_qmodel *qm, const char *ckpt, const char *path, const qat_dataset *test,
                            cmp_run *r)
{
    qat_export_opts eo = qat_export_opts_defaults();
    eo.source = ckpt;
    cli_export_norm(qat_qmodel_float(qm), ckpt, &eo);
    if (qat_export_int8(qm, path, &eo)) return cli_fail_lib(path);
    qat_rt_model *rt = NULL;
    if (qat_rt_load_file(path, &rt)) return cli_fail("%s", qat_rt_last_error());
    if (qat_rt_output_dtype(rt) == QAT_RT_DTYPE_FLOAT32) { /* fp16 units: float ops, float logits */
        float *fr = NULL, *ff = NULL;
        int rc = rt_float_evaluate(rt, test, 256, &fr, &r->int8_test_accuracy, &r->int8_images_per_s);
        if (!rc) rc = fq_float_logits(ctx, qm, test, 256, &ff, NULL);
        if (!rc) {
            agreement ag;
            float_agreement(fr, ff, test->n, qat_rt_num_classes(rt), &ag);
            r->top1_agreement = ag.top1;
            r->logit_agreement = ag.logits;
            r->max_logit_diff_steps = 0; /* float logits: no grid steps */
            /* the float32 training graph */
            float *fg = NULL;
            qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
            rc = fq_float_logits(ctx, qm, test, 256, &fg, NULL);
            qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
            if (!rc) {
                float_agreement(fr, fg, test->n, qat_rt_num_classes(rt), &ag);
                r->f32_top1_agreement = ag.top1;
                r->f32_logit_agreement = ag.logits;
            }
            free(fg);
        }
        if (!rc) {
            r->exported = 1;
            r->model_bytes = (long)qat_rt_payload_bytes(rt);
            r->file_bytes = cli_file_bytes(path);
            snprintf(r->int8_file, sizeof r->int8_file, "%s", path);
        }
        free(fr);
        free(ff);
        qat_rt_free(rt);
        return rc;
    }
    int8_t *lq = NULL, *lf = NULL;
    int rc = int8_evaluate(rt, test, 256, &lq, &r->int8_test_accuracy, &r->int8_images_per_s);
    if (!rc) rc = fq_logits(ctx, qm, test, CLI_EVAL_BATCH, &lf, NULL);
    if (!rc) {
        agreement ag;
        int8_agreement(lq, lf, test->n, qat_rt_num_classes(rt), &ag);
        r->top1_agreement = ag.top1;
        r->logit_agreement = ag.logits;
        r->max_logit_diff_steps = ag.max_diff_steps;
        /* and vs the float32 graph (how PyTorch evaluates fake-quant) */
        int8_t *lg = NULL;
        qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
        rc = fq_logits(ctx, qm, test, CLI_EVAL_BATCH, &lg, NULL);
        qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
        if (!rc) {
            int8_agreement(lq, lg, test->n, qat_rt_num_classes(rt), &ag);
            r->f32_top1_agreement = ag.top1;
            r->f32_logit_agreement = ag.logits;
        }
        free(lg);
    }
    if (!rc) {
        r->exported = 1;
        r->model_bytes = (long)qat_rt_payload_bytes(rt);
        r->file_bytes = cli_file_bytes(path);
        snprintf(r->int8_file, sizeof r->int8_file, "%s", path);
    }
    free(lq);
    free(lf);
    qat_rt_free(rt);
    return rc;
}

static int ptq_run(cli_common *c, const cmp_opts *o, cli_data *d, qat_model *m, qat_ctx *ctx, const char *spec,
                   char **overrides, int n_over, int cal, cmp_run *r, qat_qmodel **keep)
{
    double t0 = cli_now();
    qat_qconfig cfg;
    if (cli_qconfig(&cfg, spec, overrides, n_over)) return 1;
    qat_qconfig_set_calibrator(&cfg, (qat_calibrator)cal);
    if (o->per_tensor) ptq_per_tensor_weights(&cfg);
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    if (!qm) return cli_fail_lib("ptq");
    int rc = cli_calibrate(ctx, qm, d->train, o->calib_size, c->seed + 777, CLI_EVAL_BATCH);
    snprintf(r->spec, sizeof r->spec, "%s", n_over ? "mixed" : spec);
    snprintf(r->method, sizeof r->method, "ptq");
    snprintf(r->calib, sizeof r->calib, "%s", cfg.base.float_format ? "none" : qat_calibrator_name((qat_calibrator)cal));
    if (!rc) {
        r->val_accuracy = cli_evaluate(ctx, m, qm, d->val, CLI_EVAL_BATCH);
        r->test_accuracy = cli_evaluate(ctx, m, qm, d->test, CLI_EVAL_BATCH);
        r->model_bytes = estimate_bytes(qm, 0);
        rc = layer_errors(ctx, qm, d->test, o->layer_images, r);
    }
    r->seconds = cli_now() - t0;
    if (!rc && keep)
        *keep = qm;
    else
        qat_qmodel_free(qm);
    return rc;
}

/* PTQ with methods (tools/ptqmethods.h) on a fresh copy of the float
 * model: evaluated, saved with its ptq_methods attribute, exported, run. */
static int method_run(cli_common *c, const cmp_opts *o, cli_data *d, qat_ctx *ctx, const char *spec, const char *method,
                      int cal, cmp_run *r)
{
    double t0 = cli_now();
    ptq_methods pm = o->pm;
    char name[32], calib[16], int8[300];
    if (ptq_methods_parse(method, &pm)) return 1; /* checked when the options were read */
    ptq_methods_name(&pm, name, sizeof name);
    qat_qconfig cfg;
    if (cli_qconfig(&cfg, spec, NULL, 0)) return 1;
    qat_qconfig_set_calibrator(&cfg, (qat_calibrator)cal);
    if (o->per_tensor) ptq_per_tensor_weights(&cfg);
    snprintf(calib, sizeof calib, "%s", cfg.base.float_format ? "none" : qat_calibrator_name((qat_calibrator)cal));
    qat_model *m = qat_model_load(o->from);
    qat_model_snapshot *ref = NULL;
    qat_qmodel *qm = NULL;
    int rc = m ? 0 : cli_fail_lib(o->from);
    if (!rc) rc = ptq_methods_float(m, &pm);
    if (!rc && (pm.adaround || pm.bc) && !(ref = qat_model_snapshot_take(m))) rc = cli_fail_lib("ptq");
    if (!rc && !(qm = qat_qmodel_prepare(m, &cfg))) rc = cli_fail_lib("ptq");
    if (!rc) rc = cli_calibrate(ctx, qm, d->train, o->calib_size, c->seed + 777, CLI_EVAL_BATCH);
    if (!rc) rc = ptq_methods_quant(qm, ref, d->train, o->calib_size, c->seed + 777, c->seed, &pm, NULL);
    if (!rc) {
        snprintf(r->spec, sizeof r->spec, "%s", spec);
        snprintf(r->calib, sizeof r->calib, "%s", calib);
        r->val_accuracy = cli_evaluate(ctx, m, qm, d->val, CLI_EVAL_BATCH);
        r->test_accuracy = cli_evaluate(ctx, m, qm, d->test, CLI_EVAL_BATCH);
        r->model_bytes = estimate_bytes(qm, 0);
        rc = layer_errors(ctx, qm, d->test, o->layer_images, r);
    }
    if (!rc) {
        snprintf(r->file, sizeof r->file, "%.200s/ptq-%.32s-%.15s-%.24s.h5", o->out, spec, calib, name);
        snprintf(int8, sizeof int8, "%.200s/ptq-%.32s-%.15s-%.24s.int8.h5", o->out, spec, calib, name);
        qat_qrecipe qr = {0};
        snprintf(qr.method, sizeof qr.method, "ptq");
        snprintf(qr.spec, sizeof qr.spec, "%s", spec);
        snprintf(qr.calib, sizeof qr.calib, "%s", calib);
        qr.calib_size = o->calib_size;
        if (qat_qcheckpoint_save(r->file, qm, NULL, NULL, &qr)) rc = cli_fail_lib(r->file);
        /* the row's method is what the checkpoint records */
        if (!rc) rc = ptq_methods_write(r->file, name);
        if (!rc) rc = ptq_methods_read(r->file, r->method, sizeof r->method);
        if (!rc) rc = export_and_check(ctx, qm, r->file, int8, d->test, r);
    }
    qat_qmodel_free(qm);
    qat_model_snapshot_free(ref);
    qat_model_free(m);
    r->seconds = cli_now() - t0;
    return rc;
}

static int has_method(const cmp_opts *o, const char *name)
{
    for (int k = 0; k < o->n_methods; k++)
        if (!strcmp(o->methods[k], name)) return 1;
    return 0;
}

/* The QAT recipe through train_main, then export and checks. */
static int qat_run(cli_common *c, const cmp_opts *o, cli_data *d, qat_ctx *ctx, const char *spec, char **overrides,
                   int n_over, const char *tag, cmp_run *r)
{
    double t0 = cli_now();
    train_opts to;
    train_opts_defaults(&to);
    char out[300], int8[300];
    snprintf(out, sizeof out, "%.200s/qat-%.64s.h5", o->out, tag);
    snprintf(int8, sizeof int8, "%.200s/qat-%.64s.int8.h5", o->out, tag);
    to.from = o->from;
    to.quant = spec;
    to.out = out;
    to.epochs = o->qat_epochs;
    to.calib_size = o->calib_size;
    for (int k = 0; k < n_over; k++) to.overrides[to.n_overrides++] = overrides[k];
    train_result tr;
    cli_common cc = *c;
    int rc = train_main(&cc, &to, &tr);
    if (rc) return rc;
    qat_model *m = NULL;
    qat_qmodel *qm = qat_qmodel_load(out, &m, NULL, NULL);
    if (!qm) return cli_fail_lib(out);
    snprintf(r->spec, sizeof r->spec, "%s", n_over ? "mixed" : spec);
    snprintf(r->method, sizeof r->method, "qat");
    int lsq = 0;
    for (int u = 0; u < qat_qmodel_num_units(qm); u++)
        lsq |= qat_qmodel_unit(qm, u)->act.lsq_scale != NULL || qat_qmodel_unit(qm, u)->weight.lsq_scale != NULL;
    snprintf(r->calib, sizeof r->calib, "%s", lsq ? "lsq" : "ema");
    snprintf(r->file, sizeof r->file, "%s", out);
    r->val_accuracy = tr.val_accuracy;
    r->test_accuracy = tr.test_accuracy;
    r->model_bytes = estimate_bytes(qm, 0);
    r->n_epochs = tr.n_history < CMP_MAX_EPOCHS ? tr.n_history : CMP_MAX_EPOCHS;
    for (int k = 0; k < r->n_epochs; k++) {
        const qat_epoch_record *e = &tr.history[k];
        r->history[k] = (cmp_epoch){e->epoch + 1, e->train_loss, e->train_accuracy, e->val_accuracy, e->test_accuracy};
    }
    rc = layer_errors(ctx, qm, d->test, o->layer_images, r);
    if (!rc) rc = export_and_check(ctx, qm, out, int8, d->test, r);
    qat_qmodel_free(qm);
    qat_model_free(m);
    r->seconds = cli_now() - t0;
    return rc;
}

static int cmp_sens_drop(const void *a, const void *b)
{
    double x = ((const cmp_sens *)a)->drop, y = ((const cmp_sens *)b)->drop;
    return (x < y) - (x > y);
}

/* One unit at a time at spec (others float), on the validation split. */
static int sensitivity(cli_common *c, const cmp_opts *o, cli_data *d, qat_model *m, qat_ctx *ctx, const char *spec,
                       compare_results *res)
{
    qat_qconfig cfg;
    if (cli_qconfig(&cfg, spec, NULL, 0)) return 1;
    qat_qmodel *all = qat_qmodel_prepare(m, &cfg);
    if (!all) return cli_fail_lib("sensitivity");
    snprintf(res->sens_spec, sizeof res->sens_spec, "%s", spec);
    int rc = 0;
    for (int u = 0; u < qat_qmodel_num_units(all) && !rc && res->n_sens < CMP_MAX_SENS; u++) {
        const qat_qunit *un = qat_qmodel_unit(all, u);
        char ov[96];
        snprintf(ov, sizeof ov, "%s=%s", un->name, spec);
        qat_qconfig one;
        qat_qconfig_init(&one, "float");
        if (qat_qconfig_add_override(&one, ov)) {
            rc = cli_fail_lib("sensitivity");
            break;
        }
        qat_qmodel *qm = qat_qmodel_prepare(m, &one);
        if (!qm || cli_calibrate(ctx, qm, d->train, o->calib_size, c->seed + 777, CLI_EVAL_BATCH)) {
            qat_qmodel_free(qm);
            rc = cli_fail_lib("sensitivity");
            break;
        }
        cmp_sens *s = &res->sens[res->n_sens++];
        snprintf(s->unit, sizeof s->unit, "%s", un->name);
        s->val_accuracy = cli_evaluate(ctx, m, qm, d->val, CLI_EVAL_BATCH);
        s->drop = res->float_val_accuracy - s->val_accuracy;
        s->weight_params = weight_params(all, un);
        cmp_run tmp = {0};
        if (!layer_errors(ctx, qm, d->val, o->layer_images, &tmp) && tmp.n_layers > 0)
            s->sqnr_db = tmp.layers[0].sqnr_db;
        qat_qmodel_free(qm);
        cli_log("sensitivity %s at %s: val_acc %.4f (drop %.2f points), SQNR %.1f dB", s->unit, spec,
                s->val_accuracy, 100 * s->drop, s->sqnr_db);
    }
    qat_qmodel_free(all);
    qsort(res->sens, (size_t)res->n_sens, sizeof res->sens[0], cmp_sens_drop);
    return rc;
}

/* Greedy: every unit at the low spec, then the most sensitive weighted
 * units back to w8a8 while the weights fit the budget. */
static int mixed_assignment(qat_model *m, const char *low, long budget, compare_results *res)
{
    qat_qconfig cfg;
    if (cli_qconfig(&cfg, low, NULL, 0)) return 1;
    qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);
    if (!qm) return cli_fail_lib("--budget");
    long bytes = estimate_bytes(qm, 1);
    res->n_overrides = 0;
    for (int k = 0; k < res->n_sens; k++) {
        int u = qat_qmodel_find_unit(qm, res->sens[k].unit);
        qat_qunit *un = qat_qmodel_unit(qm, u);
        if (un->kind != QAT_UNIT_CONV || un->weight.scheme.bits >= 8) continue;
        long extra = (weight_params(qm, un) * (8 - un->weight.scheme.bits) + 7) / 8;
        if (bytes + extra > budget) continue;
        bytes += extra;
        snprintf(res->overrides[res->n_overrides++], sizeof res->overrides[0], "%s=w8a%d", un->name,
                 un->act.scheme.bits);
    }
    if (estimate_bytes(qm, 1) > budget)
        cli_log("--budget %ld: even %s everywhere needs %ld bytes of weights (bit-packed); nothing to raise", budget,
                low, estimate_bytes(qm, 1));
    qat_qmodel_free(qm);
    return 0;
}

static int parse(int argc, char **argv, cli_common *c, cmp_opts *o)
{
    const char *specs = "w8a8,w4a8,w4a4", *calibs = "all", *methods = NULL;
    ptq_methods_defaults(&o->pm);
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(c, argc, argv, &i);
        if (r < 0) return -1;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--from")) {
            if (!(o->from = cli_value(argc, argv, &i))) return -1;
        } else if (!strcmp(a, "--out")) {
            if (!(o->out = cli_value(argc, argv, &i))) return -1;
        } else if (!strcmp(a, "--quant")) {
            if (!(specs = cli_value(argc, argv, &i))) return -1;
        } else if (!strcmp(a, "--calib")) {
            if (!(calibs = cli_value(argc, argv, &i))) return -1;
        } else if (!strcmp(a, "--qat-epochs")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->qat_epochs) || o->qat_epochs < 1) return -1;
        } else if (!strcmp(a, "--calib-size")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->calib_size) || o->calib_size < 1) return -1;
        } else if (!strcmp(a, "--layer-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->layer_images) || o->layer_images < 1) return -1;
        } else if (!strcmp(a, "--budget")) {
            double b;
            if (!(v = cli_value(argc, argv, &i)) || cli_double(a, v, &b) || b <= 0) return -1;
            o->budget = (long)b;
            o->sensitivity = 1;
        } else if (!strcmp(a, "--no-qat")) {
            o->skip_qat = 1;
        } else if (!strcmp(a, "--methods")) {
            if (!(methods = cli_value(argc, argv, &i))) return -1;
        } else if (!strcmp(a, "--per-tensor-weights")) {
            o->per_tensor = 1;
        } else if (!strcmp(a, "--adaround-iters")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->pm.ar_iters) || o->pm.ar_iters < 1) return -1;
        } else if (!strcmp(a, "--adaround-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->pm.ar_images) || o->pm.ar_images < 1) return -1;
        } else if (!strcmp(a, "--bc-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &o->pm.bc_images) || o->pm.bc_images < 1) return -1;
        } else if (!strcmp(a, "--sensitivity")) {
            o->sensitivity = 1;
        } else {
            return cli_fail("compare: unknown option '%s'", a), -1;
        }
    }
    if (methods && o->skip_qat) return cli_fail("compare: --no-qat with --methods: leave qat out of the list"), -1;
    {
        char buf[256], *save = NULL;
        if (strlen(methods ? methods : "") >= sizeof buf) return cli_fail("--methods: the list is too long"), -1;
        snprintf(buf, sizeof buf, "%s", methods ? methods : o->skip_qat ? "ptq" : "ptq,qat");
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            ptq_methods pm;
            char name[24];
            if (!strcmp(t, "qat")) snprintf(name, sizeof name, "qat");
            else if (ptq_methods_parse(t, &pm)) return -1;
            else ptq_methods_name(&pm, name, sizeof name);
            for (int k = 0; k < o->n_methods; k++)
                if (!strcmp(o->methods[k], name)) return cli_fail("--methods: '%s' twice", name), -1;
            if (o->n_methods == 8) return cli_fail("--methods: at most 8"), -1;
            snprintf(o->methods[o->n_methods++], sizeof o->methods[0], "%s", name);
        }
        if (!o->n_methods) return cli_fail("--methods: empty"), -1;
        o->skip_qat = !has_method(o, "qat");
        if (o->per_tensor && !o->skip_qat)
            return cli_fail("--per-tensor-weights applies to PTQ rows only: leave qat out of --methods (or add --no-qat)"), -1;
    }
    if (strlen(specs) >= sizeof o->specs_buf) return cli_fail("--quant: the list is too long"), -1;
    snprintf(o->specs_buf, sizeof o->specs_buf, "%s", specs);
    {
        /* every spec checked before any run starts */
        char buf[256], *save = NULL;
        int n = 0;
        snprintf(buf, sizeof buf, "%s", specs);
        for (char *sp = strtok_r(buf, ",", &save); sp; sp = strtok_r(NULL, ",", &save)) {
            qat_unit_config check;
            if (qat_unit_config_parse(sp, &check) || !check.quantize)
                return cli_fail("--quant '%s': expected quantized specs (%s)", sp,
                                check.quantize || !strcmp(sp, "float") ? QAT_SPEC_GRAMMAR : qat_last_error()),
                       -1;
            if (++n > CMP_MAX_SPECS) return cli_fail("--quant: at most %d specs", CMP_MAX_SPECS), -1;
        }
        if (!n) return cli_fail("--quant: no spec given"), -1;
    }
    if (!strcmp(calibs, "all")) {
        for (int k = 0; k < QAT_CALIBRATOR_COUNT; k++) o->calibs[o->n_calibs++] = k;
    } else {
        char buf[128], *save = NULL;
        snprintf(buf, sizeof buf, "%s", calibs);
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int k = qat_calibrator_from_name(t);
            if (k < 0 || o->n_calibs == QAT_CALIBRATOR_COUNT)
                return cli_fail("--calib '%s': expected all or a list of minmax, ema, kl, percentile, mse", t), -1;
            o->calibs[o->n_calibs++] = k;
        }
    }
    return 0;
}

int cmd_compare(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    cmp_opts o = {.qat_epochs = 2, .calib_size = 1024, .layer_images = 256, .out = "compare"};
    if (parse(argc, argv, &c, &o) || !o.from) return usage();
    qat_set_num_threads(c.threads);
    compare_results *res = calloc(1, sizeof *res);
    if (!res) return cli_fail("out of memory");
    double t0 = cli_now();
    int rc = 0;
    cli_data d = {0};
    qat_model *m = NULL;
    qat_ctx *ctx = NULL;
    mkdir(o.out, 0777);
    if ((rc = cli_load_data(&c, &d, 1, 1))) goto done;
    if (!d.val) {
        rc = cli_fail("compare: choices are made on a validation split: --val must be > 0");
        goto done;
    }
    if (!(m = qat_model_load(o.from)) || !(ctx = qat_ctx_create(0))) {
        rc = cli_fail_lib(o.from);
        goto done;
    }
    snprintf(res->model, sizeof res->model, "%s", qat_model_arch(m));
    snprintf(res->from, sizeof res->from, "%s", o.from);
    snprintf(res->out_dir, sizeof res->out_dir, "%s", o.out);
    res->threads = qat_get_num_threads();
    res->test_images = d.test->n;
    res->val_images = d.val->n;
    res->calib_images = o.calib_size;
    res->qat_epochs = o.skip_qat ? 0 : o.qat_epochs;
    for (int k = 0; k < o.n_methods; k++) {
        size_t len = strlen(res->methods);
        snprintf(res->methods + len, sizeof res->methods - len, "%s%s", k ? "," : "", o.methods[k]);
    }
    res->per_tensor_weights = o.per_tensor;
    res->adaround_iters = o.pm.ar_iters;
    res->adaround_images = o.pm.ar_images;
    res->bc_images = o.pm.bc_images;
    res->float_bytes = 4 * (long)qat_model_param_count(m);
    res->float_val_accuracy = cli_evaluate(ctx, m, NULL, d.val, CLI_EVAL_BATCH);
    res->float_test_accuracy = cli_evaluate(ctx, m, NULL, d.test, CLI_EVAL_BATCH);
    {
        qat_train_state st;
        qat_train_state_init(&st);
        qat_model *tmp = qat_model_load(o.from);
        if (tmp && !qat_checkpoint_load(o.from, tmp, NULL, &st)) {
            res->n_float_epochs = st.n_history < CMP_MAX_EPOCHS ? st.n_history : CMP_MAX_EPOCHS;
            for (int k = 0; k < res->n_float_epochs; k++) {
                const qat_epoch_record *e = &st.history[k];
                res->float_history[k] =
                    (cmp_epoch){e->epoch + 1, e->train_loss, e->train_accuracy, e->val_accuracy, e->test_accuracy};
            }
        }
        qat_model_free(tmp);
        qat_train_state_free(&st);
    }
    cli_log("compare %s: float test_acc %.4f val_acc %.4f; specs %s; %d calibrators; QAT %d epochs", res->model,
            res->float_test_accuracy, res->float_val_accuracy, o.specs_buf, o.n_calibs, res->qat_epochs);

    char specs[256], *save = NULL;
    snprintf(specs, sizeof specs, "%s", o.specs_buf);
    for (char *sp = strtok_r(specs, ",", &save); sp && !rc; sp = strtok_r(NULL, ",", &save)) {
        snprintf(res->specs[res->n_specs++], sizeof res->specs[0], "%s", sp);
        int best = -1;
        qat_qmodel *keep[QAT_CALIBRATOR_COUNT] = {0};
        int first = res->n_runs;
        qat_unit_config sc;
        qat_unit_config_parse(sp, &sc); /* checked when the options were read */
        /* fp16 / bf16 have no ranges to calibrate: one PTQ row */
        int n_calibs = !has_method(&o, "ptq") ? 0 : sc.float_format ? 1 : o.n_calibs;
        for (int k = 0; k < n_calibs && !rc; k++) {
            cmp_run *r = &res->runs[res->n_runs];
            memset(r, 0, sizeof *r);
            rc = ptq_run(&c, &o, &d, m, ctx, sp, NULL, 0, o.calibs[k], r, &keep[k]);
            if (rc) break;
            res->n_runs++;
            cli_log("PTQ %s %-10s val_acc %.4f test_acc %.4f (%.1f s)", sp, r->calib, r->val_accuracy,
                    r->test_accuracy, r->seconds);
            if (best < 0 || r->val_accuracy > res->runs[first + best].val_accuracy) best = k;
        }
        if (!rc && best >= 0) { /* the winner on the validation split: save, export, run */
            cmp_run *r = &res->runs[first + best];
            r->chosen = 1;
            double t1 = cli_now();
            char calib[16], int8[300];
            memcpy(calib, r->calib, sizeof calib);
            snprintf(r->file, sizeof r->file, "%.200s/ptq-%.32s-%.15s.h5", o.out, sp, calib);
            snprintf(int8, sizeof int8, "%.200s/ptq-%.32s-%.15s.int8.h5", o.out, sp, calib);
            qat_qrecipe qr = {0};
            snprintf(qr.method, sizeof qr.method, "ptq");
            snprintf(qr.spec, sizeof qr.spec, "%s", sp);
            snprintf(qr.calib, sizeof qr.calib, "%s", r->calib);
            qr.calib_size = o.calib_size;
            if (qat_qcheckpoint_save(r->file, keep[best], NULL, NULL, &qr)) rc = cli_fail_lib(r->file);
            if (!rc) rc = export_and_check(ctx, keep[best], r->file, int8, d.test, r);
            r->seconds += cli_now() - t1;
            if (!rc)
                cli_log("PTQ %s chosen %s: int8 test_acc %.4f, %.0f img/s, agreement top-1 %.4f logits %.4f", sp,
                        r->calib, r->int8_test_accuracy, r->int8_images_per_s, r->top1_agreement, r->logit_agreement);
        }
        for (int k = 0; k < QAT_CALIBRATOR_COUNT; k++) qat_qmodel_free(keep[k]);
        for (int k = 0; k < o.n_methods && !rc; k++) {
            if (!strcmp(o.methods[k], "ptq") || !strcmp(o.methods[k], "qat")) continue;
            if (res->n_runs >= CMP_MAX_RUNS - 2) {
                rc = cli_fail("compare: more than %d runs", CMP_MAX_RUNS);
                break;
            }
            cmp_run *r = &res->runs[res->n_runs];
            memset(r, 0, sizeof *r);
            int cal = best >= 0 ? o.calibs[best] : o.calibs[0];
            rc = method_run(&c, &o, &d, ctx, sp, o.methods[k], cal, r);
            if (!rc) {
                res->n_runs++;
                cli_log("PTQ %s %s %s: val_acc %.4f test_acc %.4f, int8 %.4f, agreement top-1 %.4f (%.1f s)", sp,
                        r->method, r->calib, r->val_accuracy, r->test_accuracy, r->int8_test_accuracy,
                        r->top1_agreement, r->seconds);
            }
        }
        if (!rc && !o.skip_qat) {
            cmp_run *r = &res->runs[res->n_runs];
            memset(r, 0, sizeof *r);
            rc = qat_run(&c, &o, &d, ctx, sp, NULL, 0, sp, r);
            if (!rc) {
                res->n_runs++;
                cli_log("QAT %s: test_acc %.4f, int8 %.4f, agreement top-1 %.4f logits %.4f (%.0f s)", sp,
                        r->test_accuracy, r->int8_test_accuracy, r->top1_agreement, r->logit_agreement, r->seconds);
            }
        }
    }
    if (!rc && o.sensitivity && res->n_specs) {
        const char *low = res->specs[res->n_specs - 1];
        rc = sensitivity(&c, &o, &d, m, ctx, low, res);
        if (!rc && o.budget > 0) {
            rc = mixed_assignment(m, low, o.budget, res);
            if (!rc && res->n_overrides == 0)
                cli_log("--budget %ld: no unit can be raised to 8 bits within it; no mixed-precision run", o.budget);
            if (!rc && res->n_overrides > 0) {
                res->budget_bytes = o.budget;
                snprintf(res->overrides_file, sizeof res->overrides_file, "%s/mixed-overrides.txt", o.out);
                FILE *f = fopen(res->overrides_file, "w");
                if (f) {
                    for (int k = 0; k < res->n_overrides; k++) fprintf(f, "--override %s\n", res->overrides[k]);
                    fclose(f);
                }
                char *ov[CMP_MAX_SENS];
                for (int k = 0; k < res->n_overrides; k++) ov[k] = res->overrides[k];
                cmp_run *r = &res->runs[res->n_runs];
                memset(r, 0, sizeof *r);
                rc = ptq_run(&c, &o, &d, m, ctx, low, ov, res->n_overrides, QAT_CALIBRATOR_MINMAX, r, NULL);
                if (!rc) res->n_runs++;
                if (!rc && !o.skip_qat) {
                    r = &res->runs[res->n_runs];
                    memset(r, 0, sizeof *r);
                    rc = qat_run(&c, &o, &d, ctx, low, ov, res->n_overrides, "mixed", r);
                    if (!rc) res->n_runs++;
                }
            }
        }
    }
    res->seconds = cli_now() - t0;
    if (!rc) rc = report_write(o.out, res);
    if (!rc) {
        if (c.json) {
            report_json(stdout, res);
            fputc('\n', stdout);
        } else {
            printf("%-7s %-4s %-10s %9s %9s %8s %10s %10s %9s\n", "spec", "", "calib", "fq acc", "int8 acc",
                   "drop", "bytes", "int8 img/s", "time s");
            printf("%-7s %-4s %-10s %8.2f%% %9s %8s %10ld %10s %9s\n", "float", "", "", 100 * res->float_test_accuracy,
                   "-", "-", res->float_bytes, "-", "-");
            for (int k = 0; k < res->n_runs; k++) {
                const cmp_run *r = &res->runs[k];
                char i8[16] = "-", ips[16] = "-";
                if (r->exported) {
                    snprintf(i8, sizeof i8, "%.2f%%", 100 * r->int8_test_accuracy);
                    snprintf(ips, sizeof ips, "%.0f", r->int8_images_per_s);
                }
                printf("%-7s %-4s %-10s %8.2f%% %9s %+7.2f %10ld %10s %9.1f%s\n", r->spec, r->method, r->calib,
                       100 * r->test_accuracy, i8, 100 * (r->test_accuracy - res->float_test_accuracy), r->model_bytes,
                       ips, r->seconds, r->chosen ? "  <- chosen on val" : "");
            }
            printf("report: %s/report.html\n", o.out);
        }
    }
done:
    qat_ctx_free(ctx);
    qat_model_free(m);
    cli_data_free(&d);
    free(res);
    return rc;
}
