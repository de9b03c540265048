/* qat inspect: what a float checkpoint, QAT/PTQ checkpoint or int8 model holds. */
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "qat/qio.h"
#include "tools/cli.h"
#include "tools/commands.h"

static void print_model(const qat_model *m)
{
    printf("%-4s %-22s %-15s %-14s %10s\n", "#", "layer", "type", "output", "params");
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        char shape[48];
        if (l->out_ndim == 3)
            snprintf(shape, sizeof shape, "%dx%dx%d", l->out_shape[0], l->out_shape[1], l->out_shape[2]);
        else
            snprintf(shape, sizeof shape, "%d", l->out_shape[0]);
        size_t np = (l->weight ? l->weight->numel : 0) + (l->bias ? l->bias->numel : 0);
        printf("%-4d %-22s %-15s %-14s %10zu\n", i, l->name, qat_layer_type_name(l->type), shape, np);
    }
    printf("parameters: %zu (%zu bytes as float32)\n", qat_model_param_count(m), 4 * qat_model_param_count(m));
}

static void range_f(const float *v, int n, float *lo, float *hi)
{
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) {
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
}

static void print_units(qat_qmodel *qm)
{
    printf("\n%-22s %-6s %-8s %-22s %-24s %s\n", "unit (--override NAME)", "kind", "bits w/a", "weight scales",
           "act scale / zero point", "layers");
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        char w[40] = "-", a[40] = "-", bits[16] = "float";
        if (un->cfg.quantize) {
            snprintf(bits, sizeof bits, "%d/%d", un->kind == QAT_UNIT_CONV ? un->weight.scheme.bits : 0,
                     un->act.scheme.bits);
            if (un->weight.n) {
                float lo, hi;
                const float *s = un->weight.lsq_scale ? un->weight.lsq_scale->data : un->weight.scale;
                range_f(s, un->weight.n, &lo, &hi);
                snprintf(w, sizeof w, "%.3g..%.3g (%d)%s", lo, hi, un->weight.n, un->weight.lsq_scale ? " lsq" : "");
            }
            snprintf(a, sizeof a, "%.4g / %d%s", un->act.lsq_scale ? un->act.lsq_scale->data[0] : un->act.scale[0],
                     un->act.zero_point[0], un->act.lsq_scale ? " lsq" : "");
        }
        char layers[64];
        snprintf(layers, sizeof layers, "%d..%d%s%s", un->head, un->last, un->bn >= 0 ? " +bn" : "",
                 un->relu >= 0 ? " +relu" : "");
        printf("%-22s %-6s %-8s %-22s %-24s %s\n", un->name, qat_unit_kind_name(un->kind), bits, w, a, layers);
    }
}

/* int8 models are read directly from the file (the runtime is for running). */
static int inspect_int8(const char *path)
{
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    hid_t f = qat_h5_open_read(path);
    int rc = f < 0 ? (int)f : 0, n = 0;
    long payload = 0;
    if (!rc) rc = qat_h5_attr_read_i32(f, "num_ops", &n);
    if (!rc) printf("%-4s %-16s %-15s %-13s %-11s %-5s %-24s %-16s\n", "op", "name", "type", "output", "scale", "zp",
                    "multiplier", "shift");
    for (int i = 0; !rc && i < n; i++) {
        char name[16], type[32] = "", lname[QAT_NAME_MAX] = "";
        snprintf(name, sizeof name, "/ops/%0*d", n > 1000 ? 4 : 3, i);
        hid_t g = qat_h5_group_open(f, name);
        if (g < 0) {
            rc = (int)g;
            break;
        }
        float scale = 0;
        int zp = 0, nd = 0, shape[8] = {0}, osh[3] = {0};
        qat_h5_attr_read_str(g, "type", type, sizeof type);
        qat_h5_attr_read_str(g, "name", lname, sizeof lname);
        qat_h5_attr_read(g, "out_scale", QAT_H5_F32, 0, &scale);
        qat_h5_attr_read_i32(g, "out_zero_point", &zp);
        char out[32] = "";
        if (!qat_h5_attr_read(g, "out_shape", QAT_H5_I32, 3, osh))
            snprintf(out, sizeof out, "%dx%dx%d", osh[0], osh[1], osh[2]);
        else if (!qat_h5_attr_read(g, "out_shape", QAT_H5_I32, 1, osh))
            snprintf(out, sizeof out, "%d", osh[0]);
        char mult[40] = "", shift[24] = "";
        int cnt = qat_h5_group_count(g, ".");
        for (int k = 0; k < cnt; k++) {
            char dn[64];
            if (qat_h5_group_name(g, ".", k, dn, sizeof dn)) continue;
            static const qat_h5_type types[] = {QAT_H5_I8, QAT_H5_I32, QAT_H5_F32};
            for (size_t t = 0; t < 3; t++)
                if (!qat_h5_shape(g, dn, types[t], 8, &nd, shape)) {
                    long e = 1;
                    for (int d = 0; d < nd; d++) e *= shape[d];
                    payload += e * (long)qat_h5_type_size(types[t]);
                    if ((!strcmp(dn, "multiplier") || !strcmp(dn, "shift")) && types[t] == QAT_H5_I32) {
                        int32_t *v = malloc((size_t)e * sizeof *v);
                        if (v && !qat_h5_read(g, dn, QAT_H5_I32, nd, shape, v)) {
                            int32_t lo = v[0], hi = v[0];
                            for (long z = 1; z < e; z++) {
                                if (v[z] < lo) lo = v[z];
                                if (v[z] > hi) hi = v[z];
                            }
                            snprintf(dn[0] == 'm' ? mult : shift, dn[0] == 'm' ? sizeof mult : sizeof shift,
                                     "%d..%d", lo, hi);
                        }
                        free(v);
                    }
                    break;
                }
        }
        if (!mult[0] && qat_h5_attr_exists(g, "multiplier") == 1) {
            int32_t mv[2] = {0, 0};
            if (!qat_h5_attr_read(g, "multiplier", QAT_H5_I32, 2, mv))
                snprintf(mult, sizeof mult, "%d, %d", mv[0], mv[1]);
            else if (!qat_h5_attr_read_i32(g, "multiplier", &mv[0]))
                snprintf(mult, sizeof mult, "%d", mv[0]);
            int s;
            if (!qat_h5_attr_read_i32(g, "shift", &s) || !qat_h5_attr_read_i32(g, "add_shift", &s))
                snprintf(shift, sizeof shift, "%d", s);
        }
        printf("%-4d %-16s %-15s %-13s %-11.4g %-5d %-24s %-16s\n", i, lname, type, out, scale, zp, mult, shift);
        H5Gclose(g);
    }
    if (f >= 0) qat_h5_close(f, path);
    qat_h5_quiet_end(&q);
    if (rc) return cli_fail_lib(path);
    printf("payload (sum of dataset bytes): %ld; file: %ld bytes\n", payload, cli_file_bytes(path));
    return 0;
}

int cmd_inspect(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: qat inspect FILE   (float checkpoint, QAT/PTQ checkpoint or int8 model)\n");
        return 2;
    }
    const char *path = argv[1];
    qat_file_info info;
    if (qat_checkpoint_info(path, &info)) return cli_fail_lib(path);
    printf("%s: %s (format version %d), model %s\n", path, info.format, info.format_version, info.arch);
    if (!strcmp(info.format, QAT_FORMAT_INT8_MODEL)) return inspect_int8(path);
    if (info.has_train) printf("trained epochs: %d, history lines: %d\n", info.epoch, info.num_history);
    if (!strcmp(info.format, QAT_FORMAT_QAT_CHECKPOINT)) {
        qat_model *m = NULL;
        qat_qrecipe r;
        qat_qmodel *qm = qat_qmodel_load(path, &m, NULL, &r);
        if (!qm) return cli_fail_lib(path);
        if (r.method[0]) printf("method %s, spec %s, calibrator %s\n", r.method, r.spec, r.calib);
        print_model(m);
        print_units(qm);
        qat_qmodel_free(qm);
        qat_model_free(m);
    } else {
        qat_model *m = qat_model_load(path);
        if (!m) return cli_fail_lib(path);
        print_model(m);
        qat_model_free(m);
    }
    printf("file: %ld bytes\n", cli_file_bytes(path));
    return 0;
}
