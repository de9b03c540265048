/* qat eval: accuracy of a float or QAT/PTQ checkpoint; per-layer error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qat/qio.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/int8.h"

static int usage(void)
{
    fprintf(stderr, "usage: qat eval FILE [REFERENCE] [--layers] [--layers-images N] [--eval-mode MODE] [--data DIR]\n"
                    "                [--limit-test N] [--threads T] [--json]\n"
                    "FILE: a float checkpoint (float accuracy), a QAT/PTQ checkpoint (fake-quant accuracy) or an\n"
                    "int8 model (accuracy in the integer runtime). With REFERENCE (the QAT/PTQ checkpoint an int8\n"
                    "model came from): the agreement between the two on the test set.\n"
                    "--layers: per-layer cosine / SQNR / MSE between the float and the quantized activations; for an\n"
                    "int8 model with its REFERENCE, per op the share of int8 outputs identical to the fake-quant\n"
                    "model's (over --layers-images N images, default 256).\n"
                    "--eval-mode integer-grid|float32-graph: how a QAT/PTQ checkpoint is evaluated: on the integer\n"
                    "grid (the default: the arithmetic of its int8 export) or with the float32 graph training uses\n"
                    "(as PyTorch does); docs/QUANT.md, section 13. --float-graph = --eval-mode float32-graph.\n");
    return 2;
}

/* qat eval model.int8.h5 [qat.h5] */
static int eval_int8(const cli_common *c, const char *file, const char *ref, int layers, int layer_images,
                     qat_eval_mode mode)
{
    const int float_graph = mode == QAT_EVAL_FLOAT32_GRAPH;
    double t0 = cli_now();
    qat_rt_model *rt = NULL;
    if (qat_rt_load_file(file, &rt)) return cli_fail("%s", qat_rt_last_error());
    qat_rt_set_threads(rt, c->threads);
    cli_data d = {0};
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_ctx *ctx = NULL;
    int8_t *lq = NULL, *lf = NULL;
    double acc = 0, ips = 0, fq_acc = 0;
    agreement ag = {0}, ag_f32 = {0};
    double fg_acc = 0;
    op_agreement *ops = NULL;
    if (layers && !ref) cli_log("--layers: give the QAT/PTQ checkpoint the model came from as REFERENCE");
    int rc = cli_load_data(c, &d, 0, 1);
    if (!rc) rc = int8_evaluate(rt, d.test, 256, &lq, &acc, &ips);
    if (!rc && ref) {
        if (!(qm = qat_qmodel_load(ref, &m, NULL, NULL)) || !(ctx = qat_ctx_create(0)))
            rc = cli_fail_lib(ref);
        if (!rc) qat_qmodel_set_eval_mode(qm, mode);
        if (!rc) rc = fq_logits(ctx, qm, d.test, CLI_EVAL_BATCH, &lf, &fq_acc);
        if (!rc && qat_model_layer_c(m, qat_model_num_layers(m) - 1)->out_shape[0] != qat_rt_num_classes(rt))
            rc = cli_fail("%s and %s have different numbers of classes", file, ref);
        if (!rc) int8_agreement(lq, lf, d.test->n, qat_rt_num_classes(rt), &ag);
        if (!rc && !float_graph) {
            /* and against the float32 graph (how PyTorch evaluates a fake-quant model) */
            int8_t *lg = NULL;
            qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
            rc = fq_logits(ctx, qm, d.test, CLI_EVAL_BATCH, &lg, &fg_acc);
            qat_qmodel_set_eval_mode(qm, QAT_EVAL_INTEGER_GRID);
            if (!rc) int8_agreement(lq, lg, d.test->n, qat_rt_num_classes(rt), &ag_f32);
            free(lg);
        }
        if (!rc && layers) {
            int n = layer_images < d.test->n ? layer_images : d.test->n;
            if (!(ops = calloc((size_t)qat_rt_num_ops(rt), sizeof *ops)))
                rc = cli_fail("out of memory");
            else
                rc = int8_op_agreement(rt, ctx, qm, d.test, n, CLI_EVAL_BATCH, ops);
        }
    }
    if (!rc && c->json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "eval");
        json_str(&j, "file", file);
        json_str(&j, "format", QAT_FORMAT_INT8_MODEL);
        json_num(&j, "test_accuracy", acc);
        json_int(&j, "test_images", d.test->n);
        json_num(&j, "int8_images_per_s", ips);
        json_str(&j, "isa", qat_rt_isa_name(qat_rt_get_isa(rt)));
        json_int(&j, "file_bytes", cli_file_bytes(file));
        json_int(&j, "payload_bytes", (long long)qat_rt_payload_bytes(rt));
        if (ref) {
            json_str(&j, "reference", ref);
            json_num(&j, "reference_test_accuracy", fq_acc);
            json_num(&j, "top1_agreement", ag.top1);
            json_num(&j, "logit_agreement", ag.logits);
            json_int(&j, "max_logit_diff_steps", ag.max_diff_steps);
            json_str(&j, "reference_eval", qat_eval_mode_name(mode));
            if (!float_graph) {
                json_num(&j, "float32_graph_test_accuracy", fg_acc);
                json_num(&j, "float32_graph_top1_agreement", ag_f32.top1);
                json_num(&j, "float32_graph_logit_agreement", ag_f32.logits);
                json_int(&j, "float32_graph_max_logit_diff_steps", ag_f32.max_diff_steps);
            }
            if (ops) {
                json_arr(&j, "ops");
                for (int k = 0; k < qat_rt_num_ops(rt); k++) {
                    if (!ops[k].elements) continue;
                    json_obj(&j, NULL);
                    json_str(&j, "name", ops[k].name);
                    json_str(&j, "type", ops[k].type);
                    json_num(&j, "agreement", ops[k].same);
                    json_int(&j, "max_diff_steps", ops[k].max_diff_steps);
                    json_obj_end(&j);
                }
                json_arr_end(&j);
            }
        }
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else if (!rc) {
        printf("%s (int8, %s kernels): test accuracy %.4f on %d images, %.0f images/s\n", file,
               qat_rt_isa_name(qat_rt_get_isa(rt)), acc, d.test->n, ips);
        if (ref)
            printf("vs %s (fake-quant accuracy %.4f, evaluated as %s): top-1 agreement %.4f, identical int8 logits "
                   "%.4f, max difference %d steps\n",
                   ref, fq_acc, qat_eval_mode_name(mode), ag.top1, ag.logits, ag.max_diff_steps);
        if (ref && !float_graph)
            printf("vs its float32 graph (fake-quant accuracy %.4f): top-1 agreement %.4f, identical int8 logits %.4f, "
                   "max difference %d steps\n",
                   fg_acc, ag_f32.top1, ag_f32.logits, ag_f32.max_diff_steps);
        if (ops) {
            printf("%-24s %-16s %12s %10s\n", "op", "type", "identical", "max diff");
            for (int k = 0; k < qat_rt_num_ops(rt); k++)
                if (ops[k].elements)
                    printf("%-24s %-16s %12.6f %10d\n", ops[k].name, ops[k].type, ops[k].same,
                           ops[k].max_diff_steps);
        }
    }
    free(ops);
    free(lq);
    free(lf);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
    cli_data_free(&d);
    qat_rt_free(rt);
    return rc;
}

/* A dynamic checkpoint (its library evaluation), or a runtime file with
 * float logits (dynamic / float ops) and optionally the dynamic checkpoint
 * it came from: the agreement is on identical float32 logits. */
static int eval_float_paths(const cli_common *c, const char *file, const char *ref, int is_rt)
{
    double t0 = cli_now();
    qat_rt_model *rt = NULL;
    qat_model *m = NULL;
    qat_dynmodel *dm = NULL;
    cli_data d = {0};
    float *lr = NULL, *ll = NULL;
    double acc = 0, ips = 0, ref_acc = 0;
    agreement ag = {0};
    qat_dynamic_opts o;
    const char *dyn_file = is_rt ? ref : file;
    int rc = cli_load_data(c, &d, 0, 1);
    if (!rc && is_rt) {
        if (qat_rt_load_file(file, &rt)) rc = cli_fail("%s", qat_rt_last_error());
        if (!rc) qat_rt_set_threads(rt, c->threads);
        if (!rc) rc = rt_float_evaluate(rt, d.test, DYN_EVAL_BATCH, &lr, &acc, &ips);
    }
    qat_file_info rinfo;
    int ref_is_q = is_rt && ref && !qat_checkpoint_info(ref, &rinfo) && !strcmp(rinfo.format, QAT_FORMAT_QAT_CHECKPOINT);
    if (!rc && ref_is_q) { /* an fp16 QAT / PTQ checkpoint: its fake-quant float logits */
        qat_qmodel *qm = qat_qmodel_load(ref, &m, NULL, NULL);
        qat_ctx *ctx = qm ? qat_ctx_create(0) : NULL;
        if (!qm || !ctx) rc = cli_fail_lib(ref);
        if (!rc) rc = fq_float_logits(ctx, qm, d.test, DYN_EVAL_BATCH, &ll, &ref_acc);
        if (!rc && qat_model_layer_c(m, qat_model_num_layers(m) - 1)->out_shape[0] != qat_rt_num_classes(rt))
            rc = cli_fail("%s and %s have different numbers of classes", file, ref);
        if (!rc) float_agreement(lr, ll, d.test->n, qat_rt_num_classes(rt), &ag);
        qat_ctx_free(ctx);
        qat_qmodel_free(qm);
        dyn_file = NULL;
    }
    if (!rc && dyn_file) {
        if (!(m = qat_dynamic_load(dyn_file, &o)) || !(dm = qat_dynmodel_build(m, &o)))
            rc = cli_fail_lib(dyn_file);
        if (!rc) rc = dyn_evaluate(dm, d.test, DYN_EVAL_BATCH, &ll, is_rt ? &ref_acc : &acc);
        if (!rc && rt && qat_dynmodel_num_classes(dm) != qat_rt_num_classes(rt))
            rc = cli_fail("%s and %s have different numbers of classes", file, ref);
        if (!rc && rt) float_agreement(lr, ll, d.test->n, qat_rt_num_classes(rt), &ag);
    }
    if (!rc && c->json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "eval");
        json_str(&j, "file", file);
        json_str(&j, "format", is_rt ? QAT_FORMAT_INT8_MODEL : QAT_FORMAT_DYNAMIC_CHECKPOINT);
        json_str(&j, "logits", "float32");
        if (!is_rt) {
            json_str(&j, "model", qat_model_arch(m));
            json_str(&j, "quant", qat_dynamic_weights_name(o.weights));
            json_str(&j, "dynamic_layers", o.all_layers ? "all" : "linear");
            json_str(&j, "dynamic_act", o.act_row ? "row" : "tensor");
        }
        json_num(&j, "test_accuracy", acc);
        json_int(&j, "test_images", d.test->n);
        json_int(&j, "eval_batch", DYN_EVAL_BATCH);
        if (rt) {
            json_num(&j, "images_per_s", ips);
            json_str(&j, "isa", qat_rt_isa_name(qat_rt_get_isa(rt)));
            json_int(&j, "payload_bytes", (long long)qat_rt_payload_bytes(rt));
        }
        json_int(&j, "file_bytes", cli_file_bytes(file));
        if (rt && ref) {
            json_str(&j, "reference", ref);
            json_num(&j, "reference_test_accuracy", ref_acc);
            json_num(&j, "top1_agreement", ag.top1);
            json_num(&j, "logit_agreement", ag.logits);
        }
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else if (!rc) {
        if (rt)
            printf("%s (float logits, %s kernels): test accuracy %.4f on %d images, %.0f images/s\n", file,
                   qat_rt_isa_name(qat_rt_get_isa(rt)), acc, d.test->n, ips);
        else
            printf("%s (%s, %s, dynamic %s, %s layers, per-%s activations): test accuracy %.4f on %d images\n", file,
                   QAT_FORMAT_DYNAMIC_CHECKPOINT, qat_model_arch(m), qat_dynamic_weights_name(o.weights),
                   o.all_layers ? "all" : "linear", o.act_row ? "row" : "tensor", acc, d.test->n);
        if (rt && ref)
            printf("vs %s (library evaluation, accuracy %.4f): top-1 agreement %.4f, identical float32 logits %.4f\n",
                   ref, ref_acc, ag.top1, ag.logits);
    }
    free(lr);
    free(ll);
    qat_dynmodel_free(dm);
    qat_model_free(m);
    qat_rt_free(rt);
    cli_data_free(&d);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    c.val = 0;
    const char *file = NULL, *ref = NULL;
    int layers = 0, layer_images = 256;
    qat_eval_mode mode = QAT_EVAL_INTEGER_GRID;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *v;
        if (!strcmp(argv[i], "--layers")) {
            layers = 1;
        } else if (!strcmp(argv[i], "--float-graph")) {
            mode = QAT_EVAL_FLOAT32_GRAPH;
        } else if (!strcmp(argv[i], "--eval-mode")) {
            int md;
            if (!(v = cli_value(argc, argv, &i))) return usage();
            if ((md = qat_eval_mode_from_name(v)) < 0) {
                cli_fail("eval: --eval-mode '%s': expected integer-grid or float32-graph", v);
                return usage();
            }
            mode = (qat_eval_mode)md;
        } else if (!strcmp(argv[i], "--layers-images")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int(argv[i], v, &layer_images) || layer_images < 1)
                return usage();
        } else if (argv[i][0] == '-') {
            cli_fail("eval: unknown option '%s'", argv[i]);
            return usage();
        } else if (!file) {
            file = argv[i];
        } else if (!ref) {
            ref = argv[i];
        } else {
            cli_fail("eval: one file expected ('%s' is extra)", argv[i]);
            return usage();
        }
    }
    if (!file) return usage();
    qat_set_num_threads(c.threads);
    double t0 = cli_now();
    qat_file_info info;
    if (qat_checkpoint_info(file, &info)) return cli_fail_lib(file);
    if (!strcmp(info.format, QAT_FORMAT_DYNAMIC_CHECKPOINT)) {
        if (ref) return cli_fail("eval: a REFERENCE is compared with a runtime file; %s is a %s", file, info.format);
        return eval_float_paths(&c, file, NULL, 0);
    }
    if (!strcmp(info.format, QAT_FORMAT_INT8_MODEL)) {
        qat_rt_model *probe = NULL;
        if (qat_rt_load_file(file, &probe)) return cli_fail("%s", qat_rt_last_error());
        int fl = qat_rt_output_dtype(probe) == QAT_RT_DTYPE_FLOAT32;
        qat_rt_free(probe);
        if (fl) return eval_float_paths(&c, file, ref, 1);
        return eval_int8(&c, file, ref, layers, layer_images, mode);
    }
    if (ref) return cli_fail("eval: a REFERENCE is compared with an int8 model; %s is a %s", file, info.format);
    int rc = 0;
    cli_data d = {0};
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_ctx *ctx = NULL;
    qat_layer_error *errs = NULL;
    int n_err = 0;
    int is_q = !strcmp(info.format, QAT_FORMAT_QAT_CHECKPOINT);
    if (is_q) {
        if (!(qm = qat_qmodel_load(file, &m, NULL, NULL))) return cli_fail_lib(file);
        qat_qmodel_set_eval_mode(qm, mode);
    } else if (!(m = qat_model_load(file))) {
        return cli_fail_lib(file);
    }
    if (cli_load_data(&c, &d, 0, 1) || !(ctx = qat_ctx_create(0))) {
        rc = 1;
        goto done;
    }
    double acc = cli_evaluate(ctx, m, qm, d.test, CLI_EVAL_BATCH);
    if (acc < 0) {
        rc = cli_fail_lib("eval");
        goto done;
    }
    if (layers && !qm) cli_log("--layers: %s is a float checkpoint; nothing is quantized", file);
    if (layers && qm) {
        int nb = layer_images < d.test->n ? layer_images : d.test->n;
        qat_tensor *x = qat_new(ctx, 4, (int[]){nb, d.test->c, d.test->h, d.test->w});
        errs = calloc((size_t)qat_qmodel_num_units(qm), sizeof *errs);
        if (!x || !errs || qat_dataset_normalize_into(d.test, NULL, nb, x->data) ||
            (n_err = qat_qmodel_layer_errors(ctx, qm, x, errs)) < 0) {
            rc = cli_fail_lib("eval --layers");
            goto done;
        }
        qat_ctx_reset(ctx);
    }
    if (c.json) {
        json_w j;
        json_begin(&j, stdout);
        json_obj(&j, NULL);
        json_str(&j, "command", "eval");
        json_str(&j, "file", file);
        json_str(&j, "format", info.format);
        json_str(&j, "model", qat_model_arch(m));
        json_num(&j, "test_accuracy", acc);
        json_int(&j, "test_images", d.test->n);
        json_int(&j, "file_bytes", cli_file_bytes(file));
        if (qm) json_str(&j, "eval_mode", qat_eval_mode_name(mode));
        if (layers && qm) {
            json_arr(&j, "layers");
            for (int k = 0; k < n_err; k++) {
                json_obj(&j, NULL);
                json_str(&j, "name", errs[k].name);
                json_num(&j, "cosine", errs[k].cosine);
                json_num(&j, "sqnr_db", errs[k].sqnr_db);
                json_num(&j, "mse", errs[k].mse);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        json_num(&j, "seconds", cli_now() - t0);
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s (%s, %s%s%s): test accuracy %.4f on %d images\n", file, info.format, qat_model_arch(m),
               qm ? ", evaluated as " : "", qm ? qat_eval_mode_name(mode) : "", acc, d.test->n);
        if (layers && qm) {
            printf("%-24s %10s %10s %12s\n", "layer", "cosine", "SQNR dB", "MSE");
            for (int k = 0; k < n_err; k++)
                printf("%-24s %10.6f %10.2f %12.4g\n", errs[k].name, errs[k].cosine, errs[k].sqnr_db, errs[k].mse);
        }
    }
done:
    free(errs);
    qat_ctx_free(ctx);
    qat_qmodel_free(qm);
    qat_model_free(m);
    cli_data_free(&d);
    return rc;
}
