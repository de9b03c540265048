/* qat inspect: what a float checkpoint, QAT/PTQ checkpoint or int8 model
 * holds, as tables or (--json) one JSON object. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "qat/qio.h"
#include "qat/runtime.h"
#include "runtime/rt_internal.h"
#include "tools/cli.h"
#include "tools/commands.h"

static int usage(void)
{
    fprintf(stderr, "usage: qat inspect FILE [--json]   (float checkpoint, QAT/PTQ checkpoint or int8 model)\n"
                    "--json: one JSON object on stdout (layers, units or ops with shapes, bits, scale ranges,\n"
                    "multipliers; payload_bytes, file_bytes). An int8 model shows how each conv/linear stores its weights\n"
                    "(int8, packed, codebook, hashed: bits, K, seed, stored bytes) and the payload dense int8 weights\n"
                    "would take. A version-1 int8 model does not record its weight bits: they are the narrowest\n"
                    "signed width holding its int8 weights.\n");
    return 2;
}

static void range_f(const float *v, int n, float *lo, float *hi)
{
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) {
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
}

static void json_shape(json_w *j, const char *key, int ndim, const int *shape)
{
    json_arr(j, key);
    for (int d = 0; d < ndim; d++) json_int(j, NULL, shape[d]);
    json_arr_end(j);
}

static void json_range(json_w *j, const char *key, double lo, double hi)
{
    json_obj(j, key);
    json_num(j, "min", lo);
    json_num(j, "max", hi);
    json_obj_end(j);
}

static void json_range_int(json_w *j, const char *key, long long lo, long long hi)
{
    json_obj(j, key);
    json_int(j, "min", lo);
    json_int(j, "max", hi);
    json_obj_end(j);
}

/* Opens the JSON object every inspect prints and writes its first keys. */
static void json_head(json_w *j, const char *path, const qat_file_info *info, const char *model)
{
    json_begin(j, stdout);
    json_obj(j, NULL);
    json_str(j, "command", "inspect");
    json_str(j, "file", path);
    json_str(j, "format", info->format);
    json_int(j, "format_version", info->format_version);
    json_str(j, "model", model);
}

static long long file_payload_bytes(const char *path)
{
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    size_t bytes = 0;
    hid_t f = qat_h5_open_read(path);
    long long sum = (f < 0 || qat_rti_h5_payload_bytes(f, &bytes) < 0) ? -1 : (long long)bytes;
    if (f >= 0) qat_h5_close(f, path);
    qat_h5_quiet_end(&q);
    return sum;
}

/* ---- checkpoints (float, QAT/PTQ) ---- */

static void layer_shape_str(const qat_layer *l, char *buf, size_t n)
{
    if (l->out_ndim == 3)
        snprintf(buf, n, "%dx%dx%d", l->out_shape[0], l->out_shape[1], l->out_shape[2]);
    else
        snprintf(buf, n, "%d", l->out_shape[0]);
}

static void print_model(const qat_model *m)
{
    printf("%-4s %-22s %-15s %-8s %-14s %10s\n", "#", "layer", "type", "inputs", "output", "params");
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        char shape[48], in[24] = "-";
        layer_shape_str(l, shape, sizeof shape);
        if (l->n_inputs == 1) snprintf(in, sizeof in, "%d", l->inputs[0]);
        if (l->n_inputs == 2) snprintf(in, sizeof in, "%d,%d", l->inputs[0], l->inputs[1]);
        size_t np = (l->weight ? l->weight->numel : 0) + (l->bias ? l->bias->numel : 0);
        printf("%-4d %-22s %-15s %-8s %-14s %10zu\n", i, l->name, qat_layer_type_name(l->type), in, shape, np);
    }
    printf("parameters: %zu (%zu bytes as float32)\n", qat_model_param_count(m), 4 * qat_model_param_count(m));
}

/* The current scale of a quantizer (the learnable one under LSQ). */
static const float *quantizer_scale(const qat_quantizer *q)
{
    return q->lsq_scale ? q->lsq_scale->data : q->scale;
}

static void print_units(qat_qmodel *qm)
{
    printf("\n%-22s %-6s %-8s %-8s %-22s %-24s %s\n", "unit (--override NAME)", "kind", "spec", "bits w/a",
           "weight scales", "act scale / zero point", "layers");
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        char w[40] = "-", a[40] = "-", bits[16] = "float";
        if (un->cfg.quantize) {
            snprintf(bits, sizeof bits, "%d/%d", un->kind == QAT_UNIT_CONV ? un->weight.scheme.bits : 0,
                     un->act.scheme.bits);
            if (un->weight.n) {
                float lo, hi;
                range_f(quantizer_scale(&un->weight), un->weight.n, &lo, &hi);
                snprintf(w, sizeof w, "%.3g..%.3g (%d)%s", lo, hi, un->weight.n, un->weight.lsq_scale ? " lsq" : "");
            }
            snprintf(a, sizeof a, "%.4g / %d%s", quantizer_scale(&un->act)[0], un->act.zero_point[0],
                     un->act.lsq_scale ? " lsq" : "");
        }
        char layers[96];
        const qat_layer *fa = un->relu >= 0 ? qat_model_layer_c(qat_qmodel_float(qm), un->relu) : NULL;
        snprintf(layers, sizeof layers, "%d..%d%s%s%s%s", un->head, un->last, un->bn >= 0 ? " +bn" : "",
                 !fa ? "" : fa->type == QAT_LAYER_RELU ? " +relu" : fa->clamp_hi_c ? " +clamp/channel" : " +clamp",
                 un->act_share >= 0 ? " act=" : "", un->act_share >= 0 ? qat_qmodel_unit(qm, un->act_share)->name : "");
        char spec[32];
        qat_unit_config_spec(&un->cfg, spec, sizeof spec);
        if (un->cfg.float_format) snprintf(bits, sizeof bits, "%s", "16/16");
        printf("%-22s %-6s %-8s %-8s %-22s %-24s %s\n", un->name, qat_unit_kind_name(un->kind), spec, bits, w, a,
               layers);
    }
}

static void json_params(json_w *j, const qat_named_tensor *p, int n, int layer, const char *unit)
{
    json_arr(j, "params");
    size_t ul = unit ? strlen(unit) : 0;
    for (int k = 0; k < n; k++) {
        if (unit ? strncmp(p[k].name, unit, ul) || p[k].name[ul] != '.' || strchr(p[k].name + ul + 1, '.')
                 : p[k].layer != layer)
            continue;
        json_obj(j, NULL);
        json_str(j, "name", p[k].name);
        json_shape(j, "shape", p[k].t->ndim, p[k].t->shape);
        json_obj_end(j);
    }
    json_arr_end(j);
}

static void json_model(json_w *j, const qat_model *m)
{
    const qat_named_tensor *p = qat_model_params(m);
    int np = qat_model_num_params(m);
    json_arr(j, "layers");
    for (int i = 0; i < qat_model_num_layers(m); i++) {
        const qat_layer *l = qat_model_layer_c(m, i);
        json_obj(j, NULL);
        json_int(j, "index", i);
        json_str(j, "name", l->name);
        json_str(j, "type", qat_layer_type_name(l->type));
        json_shape(j, "inputs", l->n_inputs, l->inputs);
        json_shape(j, "output_shape", l->out_ndim, l->out_shape);
        json_int(j, "param_count", (long long)((l->weight ? l->weight->numel : 0) + (l->bias ? l->bias->numel : 0)));
        json_params(j, p, np, i, NULL);
        json_obj_end(j);
    }
    json_arr_end(j);
    json_int(j, "parameters", (long long)qat_model_param_count(m));
    json_int(j, "float_bytes", 4 * (long long)qat_model_param_count(m));
}

static void json_quantizer(json_w *j, const char *key, const qat_quantizer *q)
{
    json_obj(j, key);
    json_int(j, "bits", q->scheme.bits);
    json_bool(j, "symmetric", q->scheme.symmetric);
    json_bool(j, "signed", q->scheme.is_signed);
    json_bool(j, "narrow", q->scheme.narrow);
    json_bool(j, "per_channel", q->scheme.per_channel);
    json_int(j, "qmin", q->qmin);
    json_int(j, "qmax", q->qmax);
    json_int(j, "channels", q->n);
    json_bool(j, "lsq", q->lsq_scale != NULL);
    if (q->n > 0) {
        float lo, hi;
        range_f(quantizer_scale(q), q->n, &lo, &hi);
        json_range(j, "scale", lo, hi);
        int32_t zlo = q->zero_point[0], zhi = q->zero_point[0];
        for (int c = 1; c < q->n; c++) {
            if (q->zero_point[c] < zlo) zlo = q->zero_point[c];
            if (q->zero_point[c] > zhi) zhi = q->zero_point[c];
        }
        json_range_int(j, "zero_point", zlo, zhi);
    } else {
        json_null(j, "scale");
        json_null(j, "zero_point");
    }
    json_obj_end(j);
}

static void json_units(json_w *j, qat_qmodel *qm)
{
    const qat_named_tensor *p = qat_qmodel_params(qm);
    int np = qat_qmodel_num_params(qm);
    json_arr(j, "units");
    for (int u = 0; u < qat_qmodel_num_units(qm); u++) {
        const qat_qunit *un = qat_qmodel_unit(qm, u);
        int conv = un->kind == QAT_UNIT_CONV;
        json_obj(j, NULL);
        json_int(j, "index", u);
        json_str(j, "name", un->name);
        json_str(j, "kind", qat_unit_kind_name(un->kind));
        json_bool(j, "quantize", un->cfg.quantize);
        {
            char spec[32];
            json_str(j, "spec", qat_unit_config_spec(&un->cfg, spec, sizeof spec));
            static const char *const wk[] = {"uniform", "codebook", "hashed"};
            if (un->cfg.quantize && conv && !un->cfg.float_format)
                json_str(j, "weight_kind", un->cfg.weight.bits == 1 && un->cfg.weight_kind == QAT_WEIGHT_UNIFORM
                                               ? "binary"
                                               : wk[un->cfg.weight_kind]);
            else json_null(j, "weight_kind");
            if (un->cfg.weight_k) json_int(j, "weight_k", un->cfg.weight_k);
            if (un->weight.values) json_int(j, "hash_seed", (long long)un->weight.seed);
            json_str(j, "float_format", un->cfg.float_format == QAT_FLOAT_FP16   ? "fp16"
                                        : un->cfg.float_format == QAT_FLOAT_BF16 ? "bf16"
                                                                                 : "none");
        }
        json_obj(j, "layers");
        json_int(j, "head", un->head);
        json_int(j, "last", un->last);
        json_int(j, "bn", un->bn);
        json_int(j, "relu", un->relu);
        json_obj_end(j);
        if (un->act_share >= 0) json_int(j, "act_share", un->act_share); /* shared concat scale */
        json_arr(j, "in_units");
        for (int k = 0; k < 2; k++)
            if (un->in_unit[k] >= 0) json_int(j, NULL, un->in_unit[k]);
        json_arr_end(j);
        if (un->cfg.quantize && conv) json_int(j, "weight_bits", un->weight.scheme.bits);
        else json_null(j, "weight_bits");
        if (un->cfg.quantize) json_int(j, "act_bits", un->act.scheme.bits);
        else json_null(j, "act_bits");
        if (un->cfg.quantize && conv && un->weight.n) json_quantizer(j, "weight", &un->weight);
        else json_null(j, "weight");
        if (un->cfg.quantize && un->act.n) json_quantizer(j, "act", &un->act);
        else json_null(j, "act");
        json_bool(j, "bn_frozen", un->bn_frozen);
        json_params(j, p, np, -1, un->name);
        json_obj_end(j);
    }
    json_arr_end(j);
}

static int inspect_checkpoint(const char *path, const qat_file_info *info, int json)
{
    int qat = !strcmp(info->format, QAT_FORMAT_QAT_CHECKPOINT);
    qat_model *m = NULL;
    qat_qmodel *qm = NULL;
    qat_qrecipe r;
    memset(&r, 0, sizeof r);
    if (qat ? !(qm = qat_qmodel_load(path, &m, NULL, &r)) : !(m = qat_model_load(path))) return cli_fail_lib(path);
    long long payload = file_payload_bytes(path);
    if (json) {
        json_w j;
        json_head(&j, path, info, qat_model_arch(m));
        if (info->has_train) json_int(&j, "trained_epochs", info->epoch);
        else json_null(&j, "trained_epochs");
        json_int(&j, "history_lines", info->num_history);
        if (qat && r.method[0]) {
            json_obj(&j, "recipe");
            json_str(&j, "method", r.method);
            json_str(&j, "spec", r.spec);
            json_str(&j, "calibrator", r.calib);
            json_int(&j, "calib_size", r.calib_size);
            json_obj_end(&j);
        }
        json_model(&j, m);
        if (qm) json_units(&j, qm);
        json_int(&j, "payload_bytes", payload);
        json_int(&j, "file_bytes", cli_file_bytes(path));
        json_obj_end(&j);
        json_end(&j);
    } else {
        printf("%s: %s (format version %d), model %s\n", path, info->format, info->format_version, info->arch);
        if (info->has_train) printf("trained epochs: %d, history lines: %d\n", info->epoch, info->num_history);
        if (qat && r.method[0]) printf("method %s, spec %s, calibrator %s\n", r.method, r.spec, r.calib);
        print_model(m);
        if (qm) print_units(qm);
        printf("payload (sum of dataset bytes): %lld; file: %ld bytes\n", payload, cli_file_bytes(path));
    }
    qat_qmodel_free(qm);
    qat_model_free(m);
    return 0;
}

/* ---- int8 models ---- */

/* What the runtime does not expose about an op, read from its group. */
typedef struct int8_op_facts {
    qat_rt_op_info rt;
    int has_act;              /* act_min/act_max attributes (ops that quantize) */
    int act_min, act_max;
    int act_bits;             /* signed width of [act_min .. 2^(b-1)-1]; 0 unknown */
    int weight_bits;          /* 0: no weights */
    int ws_n;                 /* weight_scale channels (0: none) */
    float ws_lo, ws_hi;
    int mult_n;               /* multiplier values (0: none) */
    int mult_dataset;         /* per channel (a dataset), else an attribute */
    int mult_attr[2];         /* an attribute's values, in order (add: m_a, m_b) */
    long long mult_lo, mult_hi;
    int shift_n;              /* requant shifts (0: none) */
    int shift_lo, shift_hi;
    int add_shift;            /* add: t; -1 otherwise */
} int8_op_facts;

/* Smallest b with -2^(b-1) <= lo and hi <= 2^(b-1) - 1 (b >= 2). */
static int signed_bits(int lo, int hi)
{
    int b = 2;
    while (b < 31 && (lo < -(1 << (b - 1)) || hi > (1 << (b - 1)) - 1)) b++;
    return b;
}

/* Range of an int8 or int32 dataset dn of g (any shape); 0 if absent. */
static int dataset_range(hid_t g, const char *dn, qat_h5_type t, long long *lo, long long *hi, int *count)
{
    int nd, shape[QAT_H5_MAX_DIMS];
    if (qat_h5_shape(g, dn, t, QAT_H5_MAX_DIMS, &nd, shape)) return 0;
    long e = 1;
    for (int d = 0; d < nd; d++) e *= shape[d];
    if (e <= 0) return 0;
    void *v = malloc((size_t)e * qat_h5_type_size(t));
    int ok = v && !qat_h5_read(g, dn, t, nd, shape, v);
    if (ok) {
        *lo = LLONG_MAX;
        *hi = LLONG_MIN;
        for (long z = 0; z < e; z++) {
            long long x = t == QAT_H5_I8 ? ((int8_t *)v)[z] : ((int32_t *)v)[z];
            if (x < *lo) *lo = x;
            if (x > *hi) *hi = x;
        }
        *count = (int)e;
    }
    free(v);
    return ok;
}

static int int8_op_read(hid_t f, const qat_rt_model *rt, int n_ops, int i, int8_op_facts *o)
{
    memset(o, 0, sizeof *o);
    o->add_shift = -1;
    if (qat_rt_op(rt, i, &o->rt)) return cli_fail("op %d: %s", i, qat_rt_last_error());
    char gn[24];
    snprintf(gn, sizeof gn, "/ops/%0*d", n_ops > 1000 ? 4 : 3, i);
    hid_t g = qat_h5_group_open(f, gn);
    if (g < 0) return cli_fail_lib(gn);
    o->has_act = qat_h5_attr_exists(g, "act_min") == 1 && !qat_h5_attr_read_i32(g, "act_min", &o->act_min) &&
                 !qat_h5_attr_read_i32(g, "act_max", &o->act_max);
    /* activations are signed, [-2^(b-1), 2^(b-1)-1] (a fused ReLU raises
     * act_min only) */
    if (o->has_act && o->act_max > 0 && !((o->act_max + 1) & o->act_max)) o->act_bits = signed_bits(0, o->act_max);
    long long lo, hi;
    int cnt;
    /* version 2 records the weight bits (the runtime read them); a
     * version-1 file does not: the narrowest signed width holding the
     * stored (symmetric) weights */
    if (qat_h5_attr_exists(g, "weight_bits") == 1) {
        o->weight_bits = o->rt.weight_bits;
    } else if (dataset_range(g, "weight", QAT_H5_I8, &lo, &hi, &cnt)) {
        long long a = -lo > hi ? -lo : hi;
        o->weight_bits = signed_bits((int)-a, (int)a);
    }
    int nd, shape[QAT_H5_MAX_DIMS];
    if (!qat_h5_shape(g, "weight_scale", QAT_H5_F32, 1, &nd, shape) && nd == 1 && shape[0] > 0) {
        float *ws = malloc((size_t)shape[0] * sizeof *ws);
        if (ws && !qat_h5_read(g, "weight_scale", QAT_H5_F32, 1, shape, ws)) {
            range_f(ws, shape[0], &o->ws_lo, &o->ws_hi);
            o->ws_n = shape[0];
        }
        free(ws);
    }
    if (dataset_range(g, "multiplier", QAT_H5_I32, &o->mult_lo, &o->mult_hi, &o->mult_n)) {
        o->mult_dataset = 1;
        if (dataset_range(g, "shift", QAT_H5_I32, &lo, &hi, &o->shift_n)) {
            o->shift_lo = (int)lo;
            o->shift_hi = (int)hi;
        }
    } else if (qat_h5_attr_exists(g, "multiplier") == 1) {
        if (!qat_h5_attr_read(g, "multiplier", QAT_H5_I32, 2, o->mult_attr))
            o->mult_n = 2;
        else if (!qat_h5_attr_read_i32(g, "multiplier", &o->mult_attr[0]))
            o->mult_n = 1;
        o->mult_lo = o->mult_attr[0];
        o->mult_hi = o->mult_attr[o->mult_n > 1];
        if (o->mult_hi < o->mult_lo) {
            long long t = o->mult_lo;
            o->mult_lo = o->mult_hi;
            o->mult_hi = t;
        }
        if (!qat_h5_attr_read_i32(g, "shift", &o->shift_lo)) {
            o->shift_hi = o->shift_lo;
            o->shift_n = 1;
        }
        if (qat_h5_attr_read_i32(g, "add_shift", &o->add_shift)) o->add_shift = -1;
    }
    H5Gclose(g);
    return 0;
}

/* ---- weight encodings (format version 2) ---- */

/* The keys of how an op stores its weights (nulls for ops without). */
static void json_int8_weight_encoding(json_w *j, const qat_rt_op_info *r)
{
    if (!r->weight_encoding) {
        json_null(j, "weight_encoding");
        json_null(j, "stored_weight_bits");
        json_null(j, "codebook_k");
        json_null(j, "hash_seed");
        json_int(j, "weight_count", 0);
        json_int(j, "weight_stored_bytes", 0);
        return;
    }
    int cb = r->codebook_k > 0, hashed = !strcmp(r->weight_encoding, "hashed");
    json_str(j, "weight_encoding", r->weight_encoding);
    json_int(j, "stored_weight_bits", r->weight_bits);
    if (cb) json_int(j, "codebook_k", r->codebook_k);
    else json_null(j, "codebook_k");
    if (hashed) json_int(j, "hash_seed", (long long)r->hash_seed);
    else json_null(j, "hash_seed");
    json_int(j, "weight_count", (long long)r->weight_count);
    json_int(j, "weight_stored_bytes", (long long)r->weight_stored_bytes);
}

/* "packed w4", "codebook K=16", "hashed K=64 s=7" */
static void weight_encoding_str(const qat_rt_op_info *r, char *buf, size_t n)
{
    if (!r->weight_encoding) snprintf(buf, n, "-");
    else if (!strcmp(r->weight_encoding, "hashed"))
        snprintf(buf, n, "hashed K=%d s=%u", r->codebook_k, (unsigned)r->hash_seed);
    else if (r->codebook_k)
        snprintf(buf, n, "codebook K=%d", r->codebook_k);
    else
        snprintf(buf, n, "%s w%d", r->weight_encoding, r->weight_bits);
}

/* Stored weight bytes and weight count over every op. */
static void weight_totals(const int8_op_facts *ops, int n, long long *stored, long long *count)
{
    *stored = *count = 0;
    for (int i = 0; i < n; i++) {
        *stored += (long long)ops[i].rt.weight_stored_bytes;
        *count += (long long)ops[i].rt.weight_count;
    }
}

static void json_int8_op(json_w *j, int i, const int8_op_facts *o)
{
    json_obj(j, NULL);
    json_int(j, "index", i);
    json_str(j, "type", o->rt.type);
    json_str(j, "name", o->rt.name);
    json_shape(j, "inputs", o->rt.n_inputs, o->rt.inputs);
    json_shape(j, "output_shape", o->rt.out_ndim, o->rt.out_shape);
    if (o->weight_bits) json_int(j, "weight_bits", o->weight_bits);
    else json_null(j, "weight_bits");
    if (o->act_bits) json_int(j, "act_bits", o->act_bits);
    else json_null(j, "act_bits");
    if (o->has_act) json_range_int(j, "act_range", o->act_min, o->act_max);
    else json_null(j, "act_range");
    if (o->ws_n) json_range(j, "weight_scale", o->ws_lo, o->ws_hi);
    else json_null(j, "weight_scale");
    json_num(j, "out_scale", o->rt.out_scale);
    json_int(j, "out_zero_point", o->rt.out_zero_point);
    if (o->mult_n) json_range_int(j, "multiplier", o->mult_lo, o->mult_hi);
    else json_null(j, "multiplier");
    if (o->shift_n) json_range_int(j, "shift", o->shift_lo, o->shift_hi);
    else json_null(j, "shift");
    if (o->add_shift >= 0) json_int(j, "add_shift", o->add_shift);
    else json_null(j, "add_shift");
    json_int(j, "weight_bytes", (long long)o->rt.weight_bytes);
    json_int8_weight_encoding(j, &o->rt);
    json_str(j, "dtype", o->rt.dtype);
    if (o->rt.weight_dtype) json_str(j, "weight_dtype", o->rt.weight_dtype);
    else json_null(j, "weight_dtype");
    json_bool(j, "float_path", strcmp(o->rt.dtype, "int8") != 0);
    json_bool(j, "dynamic", o->rt.dynamic);
    if (o->rt.act_quant) json_str(j, "act_quant", o->rt.act_quant);
    else json_null(j, "act_quant");
    json_obj_end(j);
}

static void print_int8_op(int i, const int8_op_facts *o)
{
    char in[24] = "-", out[32] = "", bits[16] = "-", mult[40] = "", shift[24] = "";
    if (o->rt.n_inputs == 1) snprintf(in, sizeof in, "%d", o->rt.inputs[0]);
    if (o->rt.n_inputs == 2) snprintf(in, sizeof in, "%d,%d", o->rt.inputs[0], o->rt.inputs[1]);
    if (o->rt.out_ndim == 3)
        snprintf(out, sizeof out, "%dx%dx%d", o->rt.out_shape[0], o->rt.out_shape[1], o->rt.out_shape[2]);
    else
        snprintf(out, sizeof out, "%d", o->rt.out_shape[0]);
    if (o->weight_bits && o->act_bits)
        snprintf(bits, sizeof bits, "%d/%d", o->weight_bits, o->act_bits);
    else if (o->act_bits)
        snprintf(bits, sizeof bits, "-/%d", o->act_bits);
    if (strcmp(o->rt.dtype, "int8")) { /* float ops: weights / activations */
        const char *w = o->rt.weight_dtype ? (!strcmp(o->rt.weight_dtype, "int8") ? "8" : o->rt.weight_dtype + 5) : "-";
        snprintf(bits, sizeof bits, "%s%s/%s", o->rt.weight_dtype && strcmp(o->rt.weight_dtype, "int8") ? "f" : "",
                 w, o->rt.dynamic ? (o->rt.act_quant[0] == 'r' ? "dyn-row" : "dyn") : !strcmp(o->rt.dtype, "float16") ? "f16" : "f32");
    }
    if (o->mult_dataset)
        snprintf(mult, sizeof mult, "%lld..%lld", o->mult_lo, o->mult_hi);
    else if (o->mult_n == 2)
        snprintf(mult, sizeof mult, "%d, %d", o->mult_attr[0], o->mult_attr[1]);
    else if (o->mult_n == 1)
        snprintf(mult, sizeof mult, "%d", o->mult_attr[0]);
    if (o->shift_n > 1)
        snprintf(shift, sizeof shift, "%d..%d", o->shift_lo, o->shift_hi);
    else if (o->shift_n == 1)
        snprintf(shift, sizeof shift, "%d", o->shift_lo);
    else if (o->add_shift >= 0)
        snprintf(shift, sizeof shift, "%d", o->add_shift);
    char enc[40], stored[24] = "";
    weight_encoding_str(&o->rt, enc, sizeof enc);
    if (o->rt.weight_encoding) snprintf(stored, sizeof stored, "%zu", o->rt.weight_stored_bytes);
    printf("%-4d %-18s %-15s %-7s %-13s %-8s %-11.4g %-5d %-24s %-10s %-18s %s\n", i, o->rt.name, o->rt.type, in, out,
           bits, o->rt.out_scale, (int)o->rt.out_zero_point, mult, shift, enc, stored);
}

/* The ops through the runtime (which validates the file), plus what only
 * the file holds (bits, weight scales, multipliers) read from it directly. */
static int inspect_int8(const char *path, const qat_file_info *info, int json)
{
    qat_rt_model *rt = NULL;
    if (qat_rt_load_file(path, &rt)) return cli_fail("%s", qat_rt_last_error());
    int n = qat_rt_num_ops(rt), rc = 0;
    int8_op_facts *ops = calloc((size_t)n, sizeof *ops);
    if (!ops) rc = cli_fail("out of memory");
    qat_h5_quiet q;
    qat_h5_quiet_begin(&q);
    hid_t f = rc ? -1 : qat_h5_open_read(path);
    if (!rc && f < 0) rc = cli_fail_lib(path);
    for (int i = 0; !rc && i < n; i++) {
        rc = int8_op_read(f, rt, n, i, &ops[i]);
        /* max-pool, relu, flatten: their input's grid */
        if (!rc && !ops[i].has_act && ops[i].rt.n_inputs == 1) ops[i].act_bits = ops[ops[i].rt.inputs[0]].act_bits;
    }
    if (f >= 0) qat_h5_close(f, path);
    qat_h5_quiet_end(&q);
    long long wstored = 0, wcount = 0, payload = (long long)qat_rt_payload_bytes(rt);
    if (!rc) weight_totals(ops, n, &wstored, &wcount);
    if (!rc && json) {
        json_w j;
        json_head(&j, path, info, info->arch);
        json_int(&j, "num_ops", n);
        json_arr(&j, "ops");
        for (int i = 0; i < n; i++) json_int8_op(&j, i, &ops[i]);
        json_arr_end(&j);
        json_int(&j, "payload_bytes", payload);
        json_int(&j, "weight_stored_bytes", wstored);
        json_int(&j, "weight_count", wcount);
        /* the same file with every weight dense int8 (one byte each) */
        json_int(&j, "payload_dense_int8_bytes", payload - wstored + wcount);
        json_int(&j, "file_bytes", cli_file_bytes(path));
        json_obj_end(&j);
        json_end(&j);
    } else if (!rc) {
        printf("%s: %s (format version %d), model %s\n", path, info->format, info->format_version, info->arch);
        printf("%-4s %-18s %-15s %-7s %-13s %-8s %-11s %-5s %-24s %-10s %-18s %s\n", "op", "name", "type", "inputs",
               "output", "bits w/a", "scale", "zp", "multiplier", "shift", "weights", "stored");
        for (int i = 0; i < n; i++) print_int8_op(i, &ops[i]);
        printf("weights: %lld stored bytes for %lld weights (dense int8: %lld)\n", wstored, wcount, wcount);
        printf("payload (sum of dataset bytes): %lld (with dense int8 weights: %lld = %.1f%%); file: %ld bytes\n",
               payload, payload - wstored + wcount,
               payload > 0 ? 100.0 * (double)payload / (double)(payload - wstored + wcount) : 0.0,
               cli_file_bytes(path));
    }
    free(ops);
    qat_rt_free(rt);
    return rc;
}

int cmd_inspect(int argc, char **argv)
{
    cli_common c;
    cli_common_defaults(&c);
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, argc, argv, &i);
        if (r < 0) return usage();
        if (r) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage();
        if (argv[i][0] == '-' || path) {
            if (argv[i][0] == '-') cli_fail("inspect: unknown option '%s'", argv[i]);
            return usage();
        }
        path = argv[i];
    }
    if (!path) return usage();
    qat_file_info info;
    if (qat_checkpoint_info(path, &info)) return cli_fail_lib(path);
    if (!strcmp(info.format, QAT_FORMAT_INT8_MODEL)) return inspect_int8(path, &info, c.json);
    return inspect_checkpoint(path, &info, c.json);
}
