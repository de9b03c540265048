/* qat ptq: post-training quantization of a float checkpoint. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qat/qio.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/int8.h"

static int usage(void)
{
    fprintf(stderr, "usage: qat ptq --from float.h5 --quant w8a8 [--calib minmax|ema|kl|percentile|mse]\n"
                    "               [--calib-size N] [--override NAME=SPEC ...] [--out ptq.h5]\n"
                    "               [--data DIR] [--val N] [--seed S] [--threads T] [--json]\n"
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
    int n_over = 0, calib_size = 1024, dynamic = 0;
    const char *dyn_layers = NULL, *dyn_act = NULL;
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
        return ptq_dynamic(&c, from, spec, dyn_layers, dyn_act, out);
    }
    int cal = qat_calibrator_from_name(calib);
    if (cal < 0) return cli_fail("--calib '%s': expected minmax, ema, kl, percentile or mse", calib), 2;
    qat_set_num_threads(c.threads);
    double t0 = cli_now();
    int rc = 0;
    cli_data d = {0};
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_ctx *ctx = NULL;
    char out_buf[256];
    qat_qconfig cfg;
    if (cli_load_data(&c, &d, 1, 1)) return 1;
    if (!(m = qat_model_load(from))) {
        rc = cli_fail_lib(from);
        goto done;
    }
    if ((rc = cli_qconfig(&cfg, spec, overrides, n_over))) goto done;
    qat_qconfig_set_calibrator(&cfg, (qat_calibrator)cal);
    {
        /* fp16 / bf16 everywhere: nothing is calibrated, and the output says so */
        int all_float = cfg.base.float_format != 0;
        for (int k = 0; k < cfg.n_overrides; k++) all_float &= cfg.overrides[k].cfg.float_format != 0;
        if (all_float) calib = "none";
    }
    if (!(qm = qat_qmodel_prepare(m, &cfg)) || !(ctx = qat_ctx_create(0))) {
        rc = cli_fail_lib("ptq");
        goto done;
    }
    double float_acc = cli_evaluate(ctx, m, NULL, d.test, CLI_EVAL_BATCH);
    if ((rc = cli_calibrate(ctx, qm, d.train, calib_size, c.seed + 777, CLI_EVAL_BATCH))) goto done;
    double val_acc = d.val ? cli_evaluate(ctx, m, qm, d.val, CLI_EVAL_BATCH) : 0;
    double test_acc = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
    if (!out) {
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
    if (c.json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "ptq");
        json_str(&j, "model", qat_model_arch(m));
        json_str(&j, "quant", spec);
        json_str(&j, "calibrator", calib);
        json_int(&j, "calib_size", calib_size);
        json_num(&j, "float_test_accuracy", float_acc);
        json_num(&j, "val_accuracy", val_acc);
        json_num(&j, "test_accuracy", test_acc);
        json_str(&j, "out", out);
        json_int(&j, "file_bytes", cli_file_bytes(out));
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s PTQ %s (%s, %d images): test accuracy %.4f (float %.4f), val %.4f -> %s\n", qat_model_arch(m),
               spec, calib, calib_size, test_acc, float_acc, val_acc, out);
    }
done:
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}
