/* runtime/model.c: the public runtime API (include/qat/runtime.h): loading,
 * planning buffers, running, inspection, kernel and thread selection. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "runtime/rt_internal.h"

/* ---- threads and kernels ---- */

qat_rt_isa qat_rt_best_isa(void)
{
    if (qat_rti_cpu_has(QAT_RT_ISA_AVX512_VNNI)) return QAT_RT_ISA_AVX512_VNNI;
    if (qat_rti_cpu_has(QAT_RT_ISA_AVX2)) return QAT_RT_ISA_AVX2;
    return QAT_RT_ISA_REF;
}

const char *qat_rt_isa_name(qat_rt_isa isa)
{
    static const char *const names[] = {
        [QAT_RT_ISA_AUTO] = "auto",
        [QAT_RT_ISA_REF] = "ref",
        [QAT_RT_ISA_AVX2] = "avx2",
        [QAT_RT_ISA_AVX512_VNNI] = "avx512_vnni",
    };
    _Static_assert(sizeof names / sizeof names[0] == QAT_RT_ISA_COUNT, "one name per ISA");
    return (unsigned)isa < QAT_RT_ISA_COUNT ? names[isa] : "unknown";
}

static const rt_isa_kernels *isa_kernels(qat_rt_isa isa)
{
    switch (isa) {
    case QAT_RT_ISA_AVX2: return &qat_rti_avx2;
    case QAT_RT_ISA_AVX512_VNNI: return &qat_rti_vnni;
    default: return NULL;
    }
}

/* ---- load / free ---- */

static int finish_load(int st, qat_rt_model **out)
{
    if (st) return st;
    (*out)->isa = qat_rt_best_isa();
    (*out)->threads = qat_default_num_threads();
    return QAT_OK;
}

int qat_rt_load_file(const char *path, qat_rt_model **out)
{
    if (!out) return qat_rti_error(QAT_ERR_ARG, "qat_rt_load_file: out is NULL");
    *out = NULL;
    if (!path) return qat_rti_error(QAT_ERR_ARG, "qat_rt_load_file: path is NULL");
    return finish_load(qat_rti_load(NULL, 0, path, out), out);
}

int qat_rt_load_memory(const void *data, size_t size, qat_rt_model **out)
{
    if (!out) return qat_rti_error(QAT_ERR_ARG, "qat_rt_load_memory: out is NULL");
    *out = NULL;
    if (!data || size == 0)
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_load_memory: empty buffer (data %s, size %zu)",
                             data ? "set" : "NULL", size);
    return finish_load(qat_rti_load(data, size, NULL, out), out);
}

static void unplan(qat_rt_model *m)
{
    if (m->out) {
        for (int i = 0; i < m->n_ops; i++)
            if (m->ops[i].type != RT_OP_FLATTEN) qat_rti_dealloc(m->out[i]);
        free(m->out);
        m->out = NULL;
    }
    for (int i = 0; i < m->n_ops; i++) {
        qat_rti_gemm_free(&m->ops[i].g);
        m->ops[i].dw_fast = 0;
    }
    if (m->has_float) qat_rti_float_unplan(m);
    qat_rti_dealloc(m->scratch);
    qat_rti_dealloc(m->shared);
    m->scratch = m->shared = NULL;
    m->slot_bytes = m->shared_bytes = 0;
    m->slots = 0;
    m->max_batch = 0;
}

void qat_rt_free(qat_rt_model *m)
{
    if (!m) return;
    unplan(m);
    qat_rti_free_ops(m);
    free(m);
}

/* ---- planning ---- */

static int plan(qat_rt_model *m, int max_batch)
{
    unplan(m);
    const rt_isa_kernels *k = isa_kernels(m->isa);
    m->out = qat_calloc((size_t)m->n_ops, sizeof *m->out);
    if (!m->out) return qat_rti_error(QAT_ERR_NOMEM, "out of memory planning buffers");
    size_t slot = 64, shared = 64;
    int st = QAT_OK;
    for (int i = 0; i < m->n_ops && !st; i++) {
        rt_op *op = &m->ops[i];
        if (op->type == RT_OP_FLATTEN) {
            m->out[i] = m->out[op->inputs[0]];
        } else {
            const size_t ob = (size_t)max_batch * op->out_size * qat_rti_elem_bytes(op);
            m->out[i] = qat_rti_alloc(ob + 64);
            if (!m->out[i]) {
                st = qat_rti_error(QAT_ERR_NOMEM, "out of memory: %zu bytes for the output of %s",
                                   ob, op->name);
                break;
            }
        }
        if (op->fdt != RT_DT_INT8) continue; /* float ops: qat_rti_float_plan */
        if (op->type == RT_OP_CONV2D && op->groups > 1) {
            /* grouped: the fast depthwise kernels where they apply, else the reference */
            size_t b = qat_rti_conv2d_ref_scratch(op);
            if (k && k->prepare_dw) {
                if ((st = k->prepare_dw(op))) break;
                if (op->dw_fast) b = k->dw_slot_bytes(op);
            }
            if (b > slot) slot = b;
        } else if (op->type == RT_OP_CONV2D) {
            size_t b = qat_rti_conv2d_ref_scratch(op);
            if (k) {
                if ((st = k->prepare_conv(op))) break;
                b = k->conv_slot_bytes(op);
            }
            if (b > slot) slot = b;
        } else if (op->type == RT_OP_ADD) {
            qat_rti_add_prepare(op);
        } else if (op->type == RT_OP_LINEAR && k) {
            if ((st = k->prepare_linear(op))) break;
            size_t b = (size_t)max_batch * k->linear_sample_bytes(op);
            if (b > shared) shared = b;
        }
    }
    if (!st && m->has_float) st = qat_rti_float_plan(m, max_batch);
    if (!st) {
        int slots = omp_get_num_procs();
        if (m->threads > slots) slots = m->threads;
        if (slots < 1) slots = 1;
        m->slot_bytes = (slot + 63) / 64 * 64;
        m->slots = slots;
        m->scratch = qat_rti_alloc(m->slot_bytes * (size_t)slots);
        m->shared_bytes = shared;
        m->shared = qat_rti_alloc(shared);
        if (!m->scratch || !m->shared)
            st = qat_rti_error(QAT_ERR_NOMEM, "out of memory: %zu bytes of scratch",
                               m->slot_bytes * (size_t)slots + shared);
    }
    if (st) {
        unplan(m);
        return st;
    }
    m->max_batch = max_batch;
    return QAT_OK;
}

int qat_rt_prepare(qat_rt_model *m, int max_batch)
{
    if (!m) return qat_rti_error(QAT_ERR_ARG, "qat_rt_prepare: model is NULL");
    if (max_batch < 1 || max_batch > (1 << 20))
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_prepare: max_batch %d outside [1, 2^20]",
                             max_batch);
    return plan(m, max_batch);
}

/* ---- running ---- */

static int check_run(const qat_rt_model *m, const void *in, int n, const int8_t *logits,
                     const char *fn)
{
    if (!m) return qat_rti_error(QAT_ERR_ARG, "%s: model is NULL", fn);
    if (!in || !logits) return qat_rti_error(QAT_ERR_ARG, "%s: %s is NULL", fn, in ? "logits" : "input");
    if (!m->max_batch)
        return qat_rti_error(QAT_ERR_ARG, "%s: not prepared (call qat_rt_prepare first)", fn);
    if (n < 1 || n > m->max_batch)
        return qat_rti_error(QAT_ERR_ARG, "%s: n = %d outside [1, max_batch = %d]", fn, n,
                             m->max_batch);
    return QAT_OK;
}

static int run_threads(const qat_rt_model *m)
{
    return m->threads < m->slots ? m->threads : m->slots;
}

/* One op on sample b (every op but linear), on the calling thread. */
static void sample_op(const qat_rt_model *m, const rt_isa_kernels *k, int i, int b, uint8_t *slot)
{
    const rt_op *op = &m->ops[i];
    const int8_t *x = m->out[op->inputs[0]] + (size_t)b * m->ops[op->inputs[0]].out_size;
    int8_t *y = m->out[i] + (size_t)b * op->out_size;
    switch (op->type) {
    case RT_OP_CONV2D:
        if (op->groups > 1) {
            if (k && op->dw_fast) k->dw_image(op, x, y, slot);
            else qat_rti_conv2d_ref(op, x, y, slot);
        } else if (k) {
            k->conv_image(op, x, y, slot);
        } else {
            qat_rti_conv2d_ref(op, x, y, slot);
        }
        break;
    case RT_OP_LUT:
        if (k && k->lut_image) k->lut_image(op, x, y);
        else qat_rti_lut_s8(op, x, y);
        break;
    case RT_OP_UPSAMPLE: qat_rti_upsample_s8(op, x, y); break;
    case RT_OP_CONCAT: {
        const int8_t *xs[QAT_RT_MAX_INPUTS];
        for (int j = 0; j < op->n_inputs; j++)
            xs[j] = m->out[op->inputs[j]] + (size_t)b * m->ops[op->inputs[j]].out_size;
        qat_rti_concat_s8(op, xs, y);
        break;
    }
    case RT_OP_ADD:
        if (k && k->add_image) k->add_image(op, x, m->out[op->inputs[1]] + (size_t)b * op->out_size, y);
        else qat_rti_add_s8(op, x, m->out[op->inputs[1]] + (size_t)b * op->out_size, y);
        break;
    case RT_OP_GLOBAL_AVGPOOL:
        if (k && k->gap_image) k->gap_image(op, x, y);
        else qat_rti_global_avgpool_s8(op, x, y);
        break;
    case RT_OP_AVGPOOL2D: qat_rti_avgpool2d_s8(op, x, y); break;
    case RT_OP_MAXPOOL2D:
        if (k && k->maxpool_image) k->maxpool_image(op, x, y);
        else qat_rti_maxpool2d_s8(op, x, y);
        break;
    case RT_OP_RELU: qat_rti_relu_s8(op, x, y); break;
    default: break; /* flatten aliases its input; linear runs batched */
    }
}

/* Ops 1..N-1 over the input already in out[0]; copies the logits.
 *
 * Runs of per-sample ops (everything but linear) go image by image: with at
 * least as many images as threads, each thread takes its images through the
 * whole run, so an image's activations stay in its core's cache from one op
 * to the next. Linear layers run batched (weights reused across samples).
 * With fewer images than threads, conv2d splits each image's tiles over the
 * threads instead. */
static void run_graph(qat_rt_model *m, int n, int8_t *logits, const uint8_t *px)
{
    const rt_isa_kernels *k = isa_kernels(m->isa);
    const int T = run_threads(m);
    /* px: u8 pixels for the input op, converted image by image inside the
     * first run's per-image loop when there is one (no parallel region of
     * its own), else here */
    const size_t isz = m->ops[0].out_size;
    const int px_inside = px && m->n_ops > 1 && m->ops[1].type != RT_OP_LINEAR && n >= T;
    if (px && !px_inside) qat_rti_input_u8(&m->ops[0], px, m->out[0], n, T);
    for (int i = 1; i < m->n_ops;) {
        const rt_op *op = &m->ops[i];
        if (op->type == RT_OP_LINEAR) {
            /* below ~1M multiply-adds a second thread costs more than it saves */
            const int TL = (double)n * op->ic * op->oc >= (double)(1 << 20) ? T : 1;
            const int8_t *x = m->out[op->inputs[0]];
            if (k) k->linear(op, x, m->out[i], n, TL, m->shared);
            else qat_rti_linear_ref(op, x, m->out[i], n, TL);
            i++;
            continue;
        }
        int j = i;
        while (j < m->n_ops && m->ops[j].type != RT_OP_LINEAR) j++;
        if (n >= T) {
            /* dynamic: a thread that loses its core (a busy machine) does
             * not hold back the batch */
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
            for (int b = 0; b < n; b++) {
                uint8_t *slot = m->scratch + (size_t)omp_get_thread_num() * m->slot_bytes;
                if (px_inside && i == 1)
                    qat_rti_input_u8(&m->ops[0], px + (size_t)b * isz, m->out[0] + (size_t)b * isz, 1, 1);
                for (int o = i; o < j; o++) sample_op(m, k, o, b, slot);
            }
        } else {
            for (int o = i; o < j; o++) {
                const rt_op *c = &m->ops[o];
                /* split a conv's tiles over the threads when it has enough
                 * work per image (~2M multiply-adds) */
                if (c->type == RT_OP_CONV2D && c->groups == 1 && k &&
                    (double)c->oc * c->out_shape[1] * c->out_shape[2] * c->ic * c->kh * c->kw >=
                        (double)(1 << 21)) {
                    k->conv2d_split(c, m->out[c->inputs[0]], m->out[o], n, T, m->scratch,
                                    m->slot_bytes);
                    continue;
                }
                if (n == 1) {
                    sample_op(m, k, o, 0, m->scratch);
                    continue;
                }
#pragma omp parallel for num_threads(n) schedule(static)
                for (int b = 0; b < n; b++)
                    sample_op(m, k, o, b, m->scratch + (size_t)omp_get_thread_num() * m->slot_bytes);
            }
        }
        i = j;
    }
    const rt_op *last = &m->ops[m->n_ops - 1];
    if (logits != m->out[m->n_ops - 1]) memcpy(logits, m->out[m->n_ops - 1], (size_t)n * last->out_size);
}

/* One int8 op over the batch, for the graphs with float ops that
 * float_ops.c runs op by op. */
void qat_rti_run_int8_op(qat_rt_model *m, int i, int n)
{
    const rt_isa_kernels *k = isa_kernels(m->isa);
    const int T = run_threads(m);
    const rt_op *op = &m->ops[i];
    if (op->type == RT_OP_FLATTEN) return;
    if (op->type == RT_OP_LINEAR) {
        const int TL = (double)n * op->ic * op->oc >= (double)(1 << 20) ? T : 1;
        if (k) k->linear(op, m->out[op->inputs[0]], m->out[i], n, TL, m->shared);
        else qat_rti_linear_ref(op, m->out[op->inputs[0]], m->out[i], n, TL);
        return;
    }
    const int TS = n < T ? n : T;
#pragma omp parallel for num_threads(TS) schedule(dynamic, 1)
    for (int b = 0; b < n; b++)
        sample_op(m, k, i, b, m->scratch + (size_t)omp_get_thread_num() * m->slot_bytes);
}

/* A model whose logits are float: the int8 run calls refuse it. */
static int check_int8_out(const qat_rt_model *m, const char *fn)
{
    if (m->ops[m->n_ops - 1].fdt != RT_DT_INT8)
        return qat_rti_error(QAT_ERR_ARG, "%s: the model's logits are float32 (a float or dynamically quantized "
                                          "model): use qat_rt_run_u8_float / qat_rt_run_f32_float", fn);
    return QAT_OK;
}

int qat_rt_run_u8(qat_rt_model *m, const uint8_t *pixels, int n, int8_t *logits)
{
    int st = check_run(m, pixels, n, logits, "qat_rt_run_u8");
    if (!st) st = check_int8_out(m, "qat_rt_run_u8");
    if (st) return st;
    if (m->has_float) {
        qat_rti_float_run_u8(m, pixels, n);
        memcpy(logits, m->out[m->n_ops - 1], (size_t)n * m->ops[m->n_ops - 1].out_size);
        return QAT_OK;
    }
    run_graph(m, n, logits, pixels);
    return QAT_OK;
}

int qat_rt_run_f32(qat_rt_model *m, const float *x, int n, int8_t *logits)
{
    int st = check_run(m, x, n, logits, "qat_rt_run_f32");
    if (!st) st = check_int8_out(m, "qat_rt_run_f32");
    if (st) return st;
    if (m->has_float) {
        long long bad = qat_rti_float_run_f32(m, x, n);
        if (bad >= 0)
            return qat_rti_error(QAT_ERR_ARG, "qat_rt_run_f32: x[%lld] (image %lld) is NaN", bad,
                                 bad / (long long)m->ops[0].out_size);
        memcpy(logits, m->out[m->n_ops - 1], (size_t)n * m->ops[m->n_ops - 1].out_size);
        return QAT_OK;
    }
    long long nan = qat_rti_input_f32(&m->ops[0], x, m->out[0], n, run_threads(m));
    if (nan >= 0)
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_run_f32: x[%lld] (image %lld) is NaN", nan,
                             nan / (long long)m->ops[0].out_size);
    run_graph(m, n, logits, NULL);
    return QAT_OK;
}

int qat_rt_run_s8(qat_rt_model *m, const int8_t *xq, int n, int8_t *logits)
{
    int st = check_run(m, xq, n, logits, "qat_rt_run_s8");
    if (!st) st = check_int8_out(m, "qat_rt_run_s8");
    if (!st && m->ops[0].fdt != RT_DT_INT8)
        st = qat_rti_error(QAT_ERR_ARG, "qat_rt_run_s8: the model's input is float (no int8 input grid)");
    if (st) return st;
    memcpy(m->out[0], xq, (size_t)n * m->ops[0].out_size);
    if (m->has_float) {
        qat_rti_float_run_ops(m, n);
        memcpy(logits, m->out[m->n_ops - 1], (size_t)n * m->ops[m->n_ops - 1].out_size);
        return QAT_OK;
    }
    run_graph(m, n, logits, NULL);
    return QAT_OK;
}

qat_rt_dtype qat_rt_output_dtype(const qat_rt_model *m)
{
    return m && m->ops[m->n_ops - 1].fdt != RT_DT_INT8 ? QAT_RT_DTYPE_FLOAT32 : QAT_RT_DTYPE_INT8;
}

/* The logits of the last run as float32 (an int8 model's dequantized). */
static void float_logits(const qat_rt_model *m, int n, float *logits)
{
    const rt_op *last = &m->ops[m->n_ops - 1];
    const size_t total = (size_t)n * last->out_size;
    if (last->fdt != RT_DT_INT8) memcpy(logits, m->out[m->n_ops - 1], total * sizeof *logits);
    else qat_rt_dequantize(m, m->out[m->n_ops - 1], total, logits);
}

int qat_rt_run_u8_float(qat_rt_model *m, const uint8_t *pixels, int n, float *logits)
{
    int st = check_run(m, pixels, n, (const int8_t *)(void *)logits, "qat_rt_run_u8_float");
    if (st) return st;
    if (m->has_float) {
        qat_rti_float_run_u8(m, pixels, n);
    } else {
        run_graph(m, n, m->out[m->n_ops - 1], pixels);
    }
    float_logits(m, n, logits);
    return QAT_OK;
}

int qat_rt_run_f32_float(qat_rt_model *m, const float *x, int n, float *logits)
{
    int st = check_run(m, x, n, (const int8_t *)(void *)logits, "qat_rt_run_f32_float");
    if (st) return st;
    long long bad;
    if (m->has_float) {
        bad = qat_rti_float_run_f32(m, x, n);
    } else {
        bad = qat_rti_input_f32(&m->ops[0], x, m->out[0], n, run_threads(m));
        if (bad < 0) run_graph(m, n, m->out[m->n_ops - 1], NULL);
    }
    if (bad >= 0)
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_run_f32_float: x[%lld] (image %lld) is NaN", bad,
                             bad / (long long)m->ops[0].out_size);
    float_logits(m, n, logits);
    return QAT_OK;
}

const float *qat_rt_op_output_f32(const qat_rt_model *m, int i)
{
    if (!m || !m->max_batch || i < 0 || i >= m->n_ops || m->ops[i].fdt == RT_DT_INT8) return NULL;
    return (const float *)(const void *)m->out[i];
}

/* ---- model facts ---- */

void qat_rt_input_shape(const qat_rt_model *m, int shape[3])
{
    if (!m || !shape) return;
    const rt_op *op = &m->ops[0];
    for (int i = 0; i < 3; i++) shape[i] = op->out_shape[i];
}

int qat_rt_num_classes(const qat_rt_model *m)
{
    return m ? (int)m->ops[m->n_ops - 1].out_size : 0;
}

float qat_rt_output_scale(const qat_rt_model *m)
{
    return m ? m->ops[m->n_ops - 1].out_scale : 0.0f;
}

int32_t qat_rt_output_zero_point(const qat_rt_model *m)
{
    return m ? m->ops[m->n_ops - 1].out_zp : 0;
}

int qat_rt_num_ops(const qat_rt_model *m)
{
    return m ? m->n_ops : 0;
}

int qat_rt_op(const qat_rt_model *m, int i, qat_rt_op_info *info)
{
    if (!m || !info) return qat_rti_error(QAT_ERR_ARG, "qat_rt_op: NULL argument");
    if (i < 0 || i >= m->n_ops)
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_op: op %d outside [0, %d)", i, m->n_ops);
    const rt_op *op = &m->ops[i];
    memset(info, 0, sizeof *info);
    info->type = qat_rti_op_type_name(op->type);
    info->name = op->name;
    info->n_inputs = op->n_inputs;
    for (int k = 0; k < QAT_RT_MAX_INPUTS; k++) info->inputs[k] = k < op->n_inputs ? op->inputs[k] : -1;
    info->groups = op->groups > 1 ? op->groups : 1;
    info->act_max_channel = op->act_max_c != NULL;
    info->out_ndim = op->out_ndim;
    for (int k = 0; k < 3; k++) info->out_shape[k] = k < op->out_ndim ? op->out_shape[k] : 0;
    info->out_scale = op->out_scale;
    info->out_zero_point = op->out_zp;
    info->weight_bytes = op->weight_bytes;
    if (op->wenc) {
        info->weight_encoding = op->wenc;
        info->weight_bits = op->wbits;
        info->codebook_k = op->codebook_k;
        info->hash_seed = op->hash_seed;
        info->weight_count = (size_t)op->oc * (size_t)(op->ic / (op->groups > 1 ? op->groups : 1)) *
                             (size_t)op->kh * (size_t)op->kw;
        info->weight_stored_bytes = op->weight_stored;
    }
    static const char *const dts[] = {"int8", "float32", "float16", "bfloat16"};
    static const char *const wdts[] = {"float32", "float16", "int8", "bfloat16"};
    info->dtype = dts[op->fdt];
    if (op->type == RT_OP_CONV2D || op->type == RT_OP_LINEAR)
        info->weight_dtype = op->fdt == RT_DT_INT8 ? "int8" : wdts[op->wdt];
    info->dynamic = op->fdt != RT_DT_INT8 && info->weight_dtype && op->wdt == RT_W_I8;
    if (info->dynamic) info->act_quant = op->act_row ? "row" : "tensor";
    return QAT_OK;
}

const int8_t *qat_rt_op_output(const qat_rt_model *m, int i)
{
    if (!m || !m->max_batch || i < 0 || i >= m->n_ops || m->ops[i].fdt != RT_DT_INT8) return NULL;
    return m->out[i];
}

size_t qat_rt_payload_bytes(const qat_rt_model *m)
{
    return m ? m->payload_bytes : 0;
}

/* ---- kernel and thread selection ---- */

int qat_rt_set_isa(qat_rt_model *m, qat_rt_isa isa)
{
    if (!m) return qat_rti_error(QAT_ERR_ARG, "qat_rt_set_isa: model is NULL");
    if ((unsigned)isa >= QAT_RT_ISA_COUNT)
        return qat_rti_error(QAT_ERR_ARG, "qat_rt_set_isa: unknown ISA %d", (int)isa);
    if (isa == QAT_RT_ISA_AUTO) isa = qat_rt_best_isa();
    if (!qat_rti_cpu_has(isa))
        return qat_rti_error(QAT_ERR_UNSUPPORTED, "qat_rt_set_isa: this CPU does not support %s",
                             qat_rt_isa_name(isa));
    if (isa == m->isa) return QAT_OK;
    m->isa = isa;
    if (m->max_batch) return plan(m, m->max_batch); /* repack the weights */
    return QAT_OK;
}

qat_rt_isa qat_rt_get_isa(const qat_rt_model *m)
{
    return m ? m->isa : QAT_RT_ISA_AUTO;
}

void qat_rt_set_threads(qat_rt_model *m, int n)
{
    if (!m) return;
    m->threads = n > 0 ? n : qat_default_num_threads();
}
