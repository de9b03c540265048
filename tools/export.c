/* qat export: QAT/PTQ checkpoint -> int8 model file. */
#include <string.h>

#include "qat/dynamic.h"
#include "qat/qio.h"
#include "tools/cli.h"
#include "tools/commands.h"

int cmd_export(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    const char *from = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--from")) {
            if (!(from = cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--out")) {
            if (!(out = cli_value(argc, argv, &i))) return 2;
        } else {
            cli_fail("export: unknown option '%s'", argv[i]);
            from = NULL;
            break;
        }
    }
    if (!from || !out) {
        fprintf(stderr, "usage: qat export --from qat.h5 --out model.int8.h5 [--json]\n");
        return 2;
    }
    double t0 = cli_now();
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_file_info info;
    int rc = 0;
    if (qat_checkpoint_info(from, &info)) return cli_fail_lib(from);
    if (!strcmp(info.format, QAT_FORMAT_DYNAMIC_CHECKPOINT)) { /* qat ptq --dynamic */
        qat_dynamic_opts dyn;
        if (!(m = qat_dynamic_load(from, &dyn))) return cli_fail_lib(from);
        if (qat_export_dynamic(m, &dyn, out, from)) rc = cli_fail_lib("export");
    } else {
        if (!(qm = qat_qmodel_load(from, &m, NULL, NULL))) return cli_fail_lib(from);
        qat_export_opts o = qat_export_opts_defaults();
        o.source = from;
        cli_export_norm(m, from, &o);
        if (qat_export_int8(qm, out, &o)) rc = cli_fail_lib("export");
    }
    if (!rc) {
        long fb = cli_file_bytes(out);
        if (c.json) {
            json_w j;
            json_begin(&j, stdout);
            json_obj(&j, NULL);
            json_str(&j, "command", "export");
            json_str(&j, "from", from);
            json_str(&j, "out", out);
            json_str(&j, "model", qat_model_arch(m));
            json_int(&j, "file_bytes", fb);
            json_int(&j, "float_param_bytes", (long long)(4 * qat_model_param_count(m)));
            json_num(&j, "seconds", cli_now() - t0);
            json_obj_end(&j);
            json_end(&j);
        } else {
            printf("%s -> %s (%ld bytes; float parameters %zu bytes)\n", from, out, fb, 4 * qat_model_param_count(m));
        }
    }
    qat_qmodel_free(qm);
    qat_model_free(m);
    return rc;
}
