/* qat run: an int8 model on a user's inputs (IDX or .npy). */
#include <stdlib.h>
#include <string.h>

#include "qat/data.h"
#include "tools/commands.h"
#include "tools/int8.h"

int cmd_run(int argc, char **argv)
{
    const char *model = NULL, *input = NULL, *save = NULL;
    int threads = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--save-logits")) {
            if (!(save = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--threads")) {
            if (!(v = cli_value(argc, argv, &i)) || cli_int("--threads", v, &threads)) return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (argv[i][0] == '-') {
            cli_fail("run: unknown option '%s'", argv[i]);
            model = NULL;
            break;
        } else if (!model) {
            model = argv[i];
        } else if (!input) {
            input = argv[i];
        } else {
            model = NULL;
            break;
        }
    }
    if (!model || !input) {
        fprintf(stderr, "usage: qat run MODEL.int8.h5 INPUT [--save-logits OUT.npy] [--threads T] [--json]\n"
                        "INPUT: an IDX image file (raw or .gz, uint8 [N,H,W]) or .npy (uint8 pixels [N,H,W] or\n"
                        "[N,C,H,W], or float32 normalised inputs [N,C,H,W]). Prints one predicted class per line.\n");
        return 2;
    }
    qat_rt_model *rt = NULL;
    if (qat_rt_load_file(model, &rt)) return cli_fail("%s", qat_rt_last_error());
    qat_rt_set_threads(rt, threads);
    int shape[3];
    qat_rt_input_shape(rt, shape);
    size_t img = (size_t)shape[0] * shape[1] * shape[2];
    int rc = 0, n = 0, is_float = 0;
    void *data = NULL;
    qat_idx idx = {0};
    npy_array npy = {0};
    size_t len = strlen(input);
    if (len > 4 && !strcmp(input + len - 4, ".npy")) {
        if (npy_read(input, &npy)) {
            qat_rt_free(rt);
            return 1;
        }
        n = npy.shape[0];
        size_t per = 1;
        for (int k = 1; k < npy.ndim; k++) per *= (size_t)npy.shape[k];
        if (per != img) rc = cli_fail("%s: images of %zu values, the model takes %zu", input, per, img);
        data = npy.data;
        is_float = npy.is_float;
    } else {
        if (qat_idx_load(input, 0, &idx)) {
            qat_rt_free(rt);
            return cli_fail_lib(input);
        }
        n = idx.dims[0];
        if (idx.ndim < 2 || idx.size / (size_t)n != img)
            rc = cli_fail("%s: images of %zu pixels, the model takes %zu", input, idx.size / (size_t)(n ? n : 1), img);
        data = idx.data;
    }
    int K = qat_rt_num_classes(rt), batch = DYN_EVAL_BATCH;
    /* float logits (dynamic / float ops): saved as float32 */
    const int flog = qat_rt_output_dtype(rt) == QAT_RT_DTYPE_FLOAT32;
    int8_t *logits = rc ? NULL : malloc((size_t)n * K * (flog ? sizeof(float) : 1));
    float *flogits = (float *)(void *)logits;
    if (!rc && (!logits || qat_rt_prepare(rt, batch))) rc = cli_fail("run: %s", qat_rt_last_error());
    double t0 = cli_now();
    for (int s = 0; !rc && s < n; s += batch) {
        int b = n - s < batch ? n - s : batch;
        const float *xf = (const float *)data + (size_t)s * img;
        const uint8_t *xu = (const uint8_t *)data + (size_t)s * img;
        int r;
        if (flog)
            r = is_float ? qat_rt_run_f32_float(rt, xf, b, flogits + (size_t)s * K)
                         : qat_rt_run_u8_float(rt, xu, b, flogits + (size_t)s * K);
        else
            r = is_float ? qat_rt_run_f32(rt, xf, b, logits + (size_t)s * K)
                         : qat_rt_run_u8(rt, xu, b, logits + (size_t)s * K);
        if (r) rc = cli_fail("run: %s", qat_rt_last_error());
    }
    double dt = cli_now() - t0;
    if (!rc && save) rc = flog ? npy_write_f32(save, flogits, n, K) : npy_write_i8(save, logits, n, K);
    if (!rc) {
        if (json) {
            json_w j;
            json_begin(&j, stdout);
            json_obj(&j, NULL);
            json_str(&j, "command", "run");
            json_int(&j, "images", n);
            json_num(&j, "images_per_s", n / dt);
            json_arr(&j, "predictions");
            for (int i = 0; i < n; i++)
                json_int(&j, NULL, flog ? float_argmax(flogits + (size_t)i * K, K) : int8_argmax(logits + (size_t)i * K, K));
            json_arr_end(&j);
            json_obj_end(&j);
            json_end(&j);
        } else {
            for (int i = 0; i < n; i++)
                printf("%d\n", flog ? float_argmax(flogits + (size_t)i * K, K) : int8_argmax(logits + (size_t)i * K, K));
        }
    }
    free(logits);
    free(npy.data);
    qat_idx_free(&idx);
    qat_rt_free(rt);
    return rc;
}
