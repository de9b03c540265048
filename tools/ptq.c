/* qat ptq: post-training quantization of a float checkpoint. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5util.h"
#include "qat/qio.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/int8.h"
#include "tools/ptqmethods.h"

static int usage(void)
{
    fprintf(stderr, "usage: qat ptq --from float.h5 --quant w8a8 [--calib minmax|ema|kl|percentile|mse]\n"
                    "               [--calib-size N] [--override NAME=SPEC ...] [--out ptq.h5]\n"
                    "               [--data DIR] [--val N] [--seed S] [--threads T] [--json]\n"
                    "               [--per-tensor-weights] (one weight scale a layer instead of one a channel)\n"
                    "               [--cle] [--adaround [--adaround-iters 1000] [--adaround-images 256]]\n"
                    "               [--bias-correction [--bc-images 256] | --bias-correction-analytic]\n"
                    "               order: CLE, calibrate, AdaRound, bias correction\n"
                    "       qat ptq --from float.h5 --dynamic --quant w8|fp16 [--dynamic-layers linear|all]\n"
                    "               [--dynamic-act tensor|row] [--out dyn.h5]   dynamic quantization (no calibration)\n");
    return 2;
}

long cli_file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) ? -1 : (long)sb.st_size;
}

/* qat ptq --dynamic: PyTorch quantize_dynamic semantics (qat/dynamic.h);
 * writes a dynamic checkpoint that `qat export` turns into the runtime's
 * file. */
static int ptq_dynamic(const cli_common *c, const char *from, const char *spec, const char *layers, const char *act,
                       const char *out)
{
    qat_dynamic_opts o = qat_dynamic_opts_defaults();
    if (qat_dynamic_opts_parse(&o, spec, layers, act)) return cli_fail_lib("ptq --dynamic"), 2;
    qat_set_num_threads(c->threads);
    double t0 = cli_now();
    cli_data d = {0};
    qat_model *m = NULL;
    qat_dynmodel *dm = NULL;
    qat_ctx *ctx = NULL;
    char out_buf[256];
    int rc = cli_load_data(c, &d, 0, 1);
    if (rc) return 1;
    if (!(m = qat_model_load(from)) || !(dm = qat_dynmodel_build(m, &o)) || !(ctx = qat_ctx_create(0))) {
        rc = cli_fail_lib(from);
        goto done;
    }
    double float_acc = cli_evaluate(ctx, m, NULL, d.test, CLI_EVAL_BATCH), acc = 0;
    cli_log("ptq --dynamic: evaluating %s (%s, %s layers, per %s activations) on %d images", qat_model_arch(m),
            qat_dynamic_weights_name(o.weights), o.all_layers ? "all" : "linear", o.act_row ? "row" : "tensor",
            d.test->n);
    if ((rc = dyn_evaluate(dm, d.test, DYN_EVAL_BATCH, NULL, &acc))) goto done;
    if (!out) {
        snprintf(out_buf, sizeof out_buf, "%s-dynamic-%s.h5", qat_model_arch(m), qat_dynamic_weights_name(o.weights));
        out = out_buf;
    }
    if (qat_dynamic_save(out, m, &o)) {
        rc = cli_fail_lib(out);
        goto done;
    }
    if (c->json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "ptq");
        json_str(&j, "model", qat_model_arch(m));
        json_bool(&j, "dynamic", 1);
        json_str(&j, "quant", qat_dynamic_weights_name(o.weights));
        json_str(&j, "dynamic_layers", o.all_layers ? "all" : "linear");
        json_str(&j, "dynamic_act", o.act_row ? "row" : "tensor");
        json_num(&j, "float_test_accuracy", float_acc);
        json_num(&j, "test_accuracy", acc);
        json_int(&j, "eval_batch", DYN_EVAL_BATCH);
        json_str(&j, "out", out);
        json_int(&j, "file_bytes", cli_file_bytes(out));
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s dynamic %s (%s layers, per-%s activations): test accuracy %.4f (float %.4f) -> %s\n",
               qat_model_arch(m), qat_dynamic_weights_name(o.weights), o.all_layers ? "all" : "linear",
               o.act_row ? "row" : "tensor", acc, float_acc, out);
    }
done:
    qat_ctx_free(ctx);
    qat_dynmodel_free(dm);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}

int cmd_ptq(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    const char *from = NULL, *spec = NULL, *out = NULL, *calib = "minmax";
    char *overrides[64];
    int n_over = 0, calib_size = 1024, dynamic = 0, per_tensor = 0;
    const char *dyn_layers = NULL, *dyn_act = NULL;
    ptq_methods pm;
    ptq_methods_defaults(&pm);
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--from")) {
            if (!(from = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--quant")) {
            if (!(spec = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out")) {
            if (!(out = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--calib")) {
            if (!(calib = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--calib-size")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &calib_size) || calib_size < 1) return usage();
        } else if (!strcmp(a, "--dynamic")) {
            dynamic = 1;
        } else if (!strcmp(a, "--per-tensor-weights")) {
            per_tensor = 1;
        } else if (!strcmp(a, "--cle")) {
            pm.cle = 1;
        } else if (!strcmp(a, "--adaround")) {
            pm.adaround = 1;
        } else if (!strcmp(a, "--bias-correction")) {
            pm.bc = 1;
        } else if (!strcmp(a, "--bias-correction-analytic")) {
            pm.bca = 1;
        } else if (!strcmp(a, "--adaround-iters")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &pm.ar_iters) || pm.ar_iters < 1) return usage();
        } else if (!strcmp(a, "--adaround-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &pm.ar_images) || pm.ar_images < 1) return usage();
        } else if (!strcmp(a, "--bc-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(a, v, &pm.bc_images) || pm.bc_images < 1) return usage();
        } else if (!strcmp(a, "--dynamic-layers")) {
            if (!(dyn_layers = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--dynamic-act")) {
            if (!(dyn_act = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--override")) {
            if (!(v = cli_value(argc, argv, &i)) || n_over == 64) return usage();
            overrides[n_over++] = (char *)v;
        } else {
            cli_fail("ptq: unknown option '%s'", a);
            return usage();
        }
    }
    if (!from || !spec) {
        cli_fail("ptq: --from and --quant are required");
        return usage();
    }
    if ((dyn_layers || dyn_act) && !dynamic) return cli_fail("ptq: --dynamic-layers / --dynamic-act need --dynamic"), 2;
    if (dynamic) {
        if (n_over) return cli_fail("ptq --dynamic: --override is not supported"), 2;
        if (ptq_methods_any(&pm)) return cli_fail("ptq --dynamic: --cle, --adaround, --bias-correction need static PTQ"), 2;
    }
    if (pm.bc && pm.bca) return cli_fail("ptq: --bias-correction or --bias-correction-analytic, not both"), 2;
    if (dynamic) return ptq_dynamic(&c, from, spec, dyn_layers, dyn_act, out);
    int cal = qat_calibrator_from_name(calib);
    if (cal < 0) return cli_fail("--calib '%s': expected minmax, ema, kl, percentile or mse", calib), 2;
    qat_set_num_threads(c.threads);
    double t0 = cli_now();
    int rc = 0;
    cli_data d = {0};
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_ctx *ctx = NULL;
    qat_model_snapshot *ref = NULL;
    ptq_methods_result pmr;
    memset(&pmr, 0, sizeof pmr);
    char out_buf[256], mname[32];
    qat_qconfig cfg;
    ptq_methods_name(&pm, mname, sizeof mname);
    if (cli_load_data(&c, &d, 1, 1)) return 1;
    if (!(m = qat_model_load(from))) {
        rc = cli_fail_lib(from);
        goto done;
    }
    if ((rc = cli_qconfig(&cfg, spec, overrides, n_over))) goto done;
    qat_qconfig_set_calibrator(&cfg, (qat_calibrator)cal);
    if (per_tensor) ptq_per_tensor_weights(&cfg);
    if (!(ctx = qat_ctx_create(0))) {
        rc = cli_fail_lib("ptq");
        goto done;
    }
    double float_acc = cli_evaluate(ctx, m, NULL, d.test, CLI_EVAL_BATCH), cle_acc = float_acc;
    if ((rc = ptq_methods_float(m, &pm))) goto done;
    if (pm.cle) cle_acc = cli_evaluate(ctx, m, NULL, d.test, CLI_EVAL_BATCH);
    if ((pm.adaround || pm.bc) && !(ref = qat_model_snapshot_take(m))) {
        rc = cli_fail_lib("ptq");
        goto done;
    }
    {
        /* fp16 / bf16 everywhere: nothing is calibrated, and the output says so */
        int all_float = cfg.base.float_format != 0;
        for (int k = 0; k < cfg.n_overrides; k++) all_float &= cfg.overrides[k].cfg.float_format != 0;
        if (all_float) calib = "none";
    }
    if (!(qm = qat_qmodel_prepare(m, &cfg))) {
        rc = cli_fail_lib("ptq");
        goto done;
    }
    if ((rc = cli_calibrate(ctx, qm, d.train, calib_size, c.seed + 777, CLI_EVAL_BATCH))) goto done;
    if ((rc = ptq_methods_quant(qm, ref, d.train, calib_size, c.seed + 777, c.seed, &pm, &pmr))) goto done;
    double val_acc = d.val ? cli_evaluate(ctx, m, qm, d.val, CLI_EVAL_BATCH) : 0;
    double test_acc = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
    if (!out) {
        if (ptq_methods_any(&pm))
            snprintf(out_buf, sizeof out_buf, "%s-ptq-%s-%s-%s.h5", qat_model_arch(m), spec, calib, mname);
        else
            snprintf(out_buf, sizeof out_buf, "%s-ptq-%s-%s.h5", qat_model_arch(m), spec, calib);
        out = out_buf;
    }
    qat_qrecipe qr = {0};
    snprintf(qr.method, sizeof qr.method, "ptq");
    snprintf(qr.spec, sizeof qr.spec, "%s", spec);
    snprintf(qr.calib, sizeof qr.calib, "%s", calib);
    qr.calib_size = calib_size;
    if (qat_qcheckpoint_save(out, qm, NULL, NULL, &qr)) {
        rc = cli_fail_lib(out);
        goto done;
    }
    {
        char back[32];
        if ((rc = ptq_methods_write(out, mname)) || (rc = ptq_methods_read(out, back, sizeof back))) goto done;
        if (strcmp(back, mname)) {
            rc = cli_fail("%s: ptq_methods reads back '%s', wrote '%s'", out, back, mname);
            goto done;
        }
    }
    if (c.json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "ptq");
        json_str(&j, "model", qat_model_arch(m));
        json_str(&j, "quant", spec);
        json_str(&j, "calibrator", calib);
        json_int(&j, "calib_size", calib_size);
        json_str(&j, "ptq_methods", mname);
        if (pm.adaround) json_int(&j, "adaround_iters", pm.ar_iters);
        if (pm.adaround) json_int(&j, "adaround_images", pm.ar_images);
        if (pm.bc) json_int(&j, "bc_images", pm.bc_images);
        if (pm.adaround) {
            json_num(&j, "adaround_seconds", pmr.ar_seconds);
            json_arr(&j, "adaround_units");
            for (int k = 0; k < pmr.ar.n; k++) {
                const qat_adaround_layer *e = &pmr.ar.layers[k];
                json_obj(&j, NULL);
                json_str(&j, "unit", e->name);
                json_int(&j, "weights", e->weights);
                json_int(&j, "flipped", e->flipped);
                json_bool(&j, "kept_nearest", e->kept_nearest);
                json_num(&j, "mse_nearest", e->mse_nearest);
                json_num(&j, "mse_adaround", e->mse_adaround);
                json_num(&j, "seconds", e->seconds);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        if (pm.bc) {
            json_num(&j, "bias_correction_seconds", pmr.bc_seconds);
            json_arr(&j, "bias_correction_units");
            for (int k = 0; k < pmr.bc.n; k++) {
                const qat_biascorr_layer *e = &pmr.bc.layers[k];
                json_obj(&j, NULL);
                json_str(&j, "unit", e->name);
                json_num(&j, "mean_abs_shift", e->mean_abs_shift);
                if (e->rms >= 0) json_num(&j, "output_rms", e->rms);
                else json_null(&j, "output_rms");
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        json_num(&j, "float_test_accuracy", float_acc);
        if (pm.cle) json_num(&j, "cle_float_test_accuracy", cle_acc);
        json_num(&j, "val_accuracy", val_acc);
        json_num(&j, "test_accuracy", test_acc);
        json_str(&j, "out", out);
        json_int(&j, "file_bytes", cli_file_bytes(out));
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s PTQ %s (%s, %d images%s%s): test accuracy %.4f (float %.4f), val %.4f -> %s\n", qat_model_arch(m),
               spec, calib, calib_size, ptq_methods_any(&pm) ? ", " : "", ptq_methods_any(&pm) ? mname : "", test_acc,
               float_acc, val_acc, out);
        if (pm.cle) printf("float test accuracy after CLE %.4f\n", cle_acc);
    }
done:
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_snapshot_free(ref);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}

/* ---- PTQ methods (tools/ptqmethods.h) ---- */

void ptq_methods_defaults(ptq_methods *pm)
{
    memset(pm, 0, sizeof *pm);
    pm->ar_iters = 1000;
    pm->ar_images = 256;
    pm->bc_images = 256;
}

int ptq_methods_parse(const char *s, ptq_methods *pm)
{
    pm->cle = pm->adaround = pm->bc = pm->bca = 0;
    if (!strcmp(s, "ptq")) return 0;
    char buf[64], *save = NULL;
    if (strlen(s) >= sizeof buf) return cli_fail("method '%s': too long", s), 1;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
        int *f = !strcmp(t, "cle")                                  ? &pm->cle
                 : !strcmp(t, "adaround") || !strcmp(t, "ar")       ? &pm->adaround
                 : !strcmp(t, "bc") || !strcmp(t, "bias-correction") ? &pm->bc
                 : !strcmp(t, "bca")                                ? &pm->bca
                                                                    : NULL;
        if (!f || *f)
            return cli_fail("method '%s': expected ptq or a '+' list of cle, adaround, bc or bca (each once)", s), 1;
        *f = 1;
    }
    if (pm->bc && pm->bca) return cli_fail("method '%s': bc (empirical) or bca (analytic), not both", s), 1;
    if (!ptq_methods_any(pm)) return cli_fail("method '%s': empty", s), 1;
    return 0;
}

const char *ptq_methods_name(const ptq_methods *pm, char *buf, size_t n)
{
    if (!ptq_methods_any(pm)) {
        snprintf(buf, n, "ptq");
        return buf;
    }
    int bc = pm->bc || pm->bca;
    snprintf(buf, n, "%s%s%s%s%s", pm->cle ? "cle" : "", pm->cle && (pm->adaround || bc) ? "+" : "",
             pm->adaround ? "adaround" : "", pm->adaround && bc ? "+" : "", pm->bc ? "bc" : pm->bca ? "bca" : "");
    return buf;
}

int ptq_methods_float(qat_model *m, const ptq_methods *pm)
{
    if (!pm->cle) return 0;
    double t0 = cli_now();
    int folded = qat_cle_fold_bn(m);
    if (folded < 0) return cli_fail_lib("cle");
    qat_cle_report rep;
    if (qat_cle_equalize(m, NULL, &rep)) return cli_fail_lib("cle");
    cli_log("cle: %d BN folded, %d layer pairs equalized in %d sweeps (last max |s-1| %.2g, %.2f s)", folded, rep.pairs,
            rep.sweeps, rep.max_dev, cli_now() - t0);
    return 0;
}

void ptq_per_tensor_weights(qat_qconfig *cfg)
{
    if (cfg->base.weight_kind == QAT_WEIGHT_UNIFORM && !cfg->base.float_format) cfg->base.weight.per_channel = 0;
    for (int k = 0; k < cfg->n_overrides; k++) {
        qat_unit_config *u = &cfg->overrides[k].cfg;
        if (u->weight_kind == QAT_WEIGHT_UNIFORM && !u->float_format) u->weight.per_channel = 0;
    }
}

/* The first n images of cli_calibrate's permutation, normalized. */
static qat_tensor *calib_images(const qat_dataset *ds, int n, uint64_t seed)
{
    if (n > ds->n) n = ds->n;
    qat_rng r;
    qat_rng_seed(&r, seed);
    int *perm = malloc((size_t)ds->n * sizeof *perm);
    qat_tensor *x = perm ? qat_tensor_create(4, (int[]){n, ds->c, ds->h, ds->w}, 0) : NULL;
    if (x) {
        for (int i = 0; i < ds->n; i++) perm[i] = i;
        for (int i = 0; i < n; i++) {
            int j = i + (int)qat_rng_below(&r, (uint32_t)(ds->n - i));
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        if (qat_dataset_normalize_into(ds, perm, n, x->data)) {
            qat_tensor_free(x);
            x = NULL;
        }
    }
    free(perm);
    return x;
}

int ptq_methods_quant(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_dataset *train, int calib_size,
                      uint64_t calib_seed, uint64_t seed, const ptq_methods *pm, ptq_methods_result *res)
{
    int rc = 0;
    ptq_methods_result tmp;
    if (!res) res = &tmp;
    memset(res, 0, sizeof *res);
    if (pm->adaround) {
        int n = pm->ar_images < calib_size ? pm->ar_images : calib_size;
        qat_tensor *x = calib_images(train, n, calib_seed);
        qat_adaround_opts o = qat_adaround_opts_defaults();
        o.iters = pm->ar_iters;
        o.seed = seed;
        o.verbose = 1;
        double t0 = cli_now();
        if (!x || qat_adaround(qm, ref, x, &o, &res->ar)) rc = cli_fail_lib("adaround");
        res->ar_seconds = cli_now() - t0;
        if (!rc) cli_log("adaround: %d images, %d steps a layer, %.1f s", x->shape[0], o.iters, res->ar_seconds);
        qat_tensor_free(x);
    }
    if (!rc && pm->bc) {
        int n = pm->bc_images < calib_size ? pm->bc_images : calib_size;
        qat_tensor *x = calib_images(train, n, calib_seed);
        qat_biascorr_report *rep = &res->bc;
        double t0 = cli_now();
        if (!x || qat_bias_correct(qm, ref, x, 64, rep)) {
            rc = cli_fail_lib("bias correction");
        } else {
            double s = 0;
            res->bc_seconds = cli_now() - t0;
            for (int k = 0; k < rep->n; k++) s += rep->layers[k].rms > 0 ? rep->layers[k].mean_abs_shift / rep->layers[k].rms : 0;
            cli_log("bias correction: %d units on %d images, mean |shift| %.3g of the output RMS (%.1f s)", rep->n,
                    x->shape[0], rep->n ? s / rep->n : 0, res->bc_seconds);
        }
        qat_tensor_free(x);
    }
    if (!rc && pm->bca) {
        double t0 = cli_now();
        int n = qat_bias_correct_analytic(qm);
        res->bc_seconds = cli_now() - t0;
        if (n < 0) rc = cli_fail_lib("analytic bias correction");
        else cli_log("analytic bias correction: %d units (those reading a BN output with its statistics)", n);
    }
    return rc;
}

int ptq_methods_write(const char *path, const char *name)
{
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f >= 0) {
        hid_t g = qat_h5_group_open(f, "/quant");
        if (g >= 0) {
            rc = qat_h5_attr_write_str(g, "ptq_methods", name);
            H5Gclose(g);
        }
        if (qat_h5_close(f, path) && !rc) rc = -1;
    }
    qat_h5_quiet_end(&q);
    return rc ? cli_fail("%s: cannot record ptq_methods (%s)", path, qat_last_error()) : 0;
}

int ptq_methods_read(const char *path, char *buf, size_t n)
{
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    int rc = -1;
    hid_t f = qat_h5_open_read(path);
    if (f >= 0) {
        hid_t g = qat_h5_group_open(f, "/quant");
        if (g >= 0) {
            int e = qat_h5_attr_exists(g, "ptq_methods");
            rc = e < 0 ? -1 : e == 0 ? (snprintf(buf, n, "ptq"), 0) : qat_h5_attr_read_str(g, "ptq_methods", buf, n);
            H5Gclose(g);
        }
        qat_h5_close(f, path);
    }
    qat_h5_quiet_end(&q);
    return rc ? cli_fail("%s: cannot read ptq_methods (%s)", path, qat_last_error()) : 0;
}
