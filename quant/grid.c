/* quant/grid.c: evaluation on the integer grid (QAT_EVAL_INTEGER_GRID). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "quant/convert.h"
#include "qat/half.h"
#include "quant/internal.h"
#include "runtime/rounding.h"

/* ---- evaluation on the integer grid ----
 *
 * In evaluation (no training, no gradient, not calibrating) a unit whose
 * inputs and output are on quantization grids computes the same function
 * as the float32 fake-quant graph, exactly: the conv/linear accumulator
 * sum (x - z_in) * w_q + b_q runs on integer-valued floats (exact while
 * partial sums stay below 2^24, which an int8 layer reaches only with
 * thousands of saturated terms), and the output grid index is
 * round(acc * s_in * s_w / s_out) with that ratio in double. The float32
 * graph rounds every product and partial sum, and where its result lands
 * within that error of a rounding boundary it picks the neighbouring grid
 * point: about 1 output in 10^3-10^4 per conv layer, and more after
 * several layers. Evaluated this way the fake-quant model is what the int8
 * export computes up to its 31-bit multipliers (docs/QUANT.md, section 13). */

const char *qat_eval_mode_name(qat_eval_mode mode)
{
    switch (mode) {
    case QAT_EVAL_INTEGER_GRID: return "integer-grid";
    case QAT_EVAL_FLOAT32_GRAPH: return "float32-graph";
    default: return NULL;
    }
}

int qat_eval_mode_from_name(const char *name)
{
    for (int m = 0; m < QAT_EVAL_MODE_COUNT; m++)
        if (name && !strcmp(name, qat_eval_mode_name((qat_eval_mode)m))) return m;
    return -1;
}

int qat_qmodel_set_eval_mode(qat_qmodel *qm, qat_eval_mode mode)
{
    if (!qm) return qat_error(QAT_ERR_ARG, "qat_qmodel_set_eval_mode: qmodel is NULL");
    if ((unsigned)mode >= QAT_EVAL_MODE_COUNT)
        return qat_error(QAT_ERR_ARG, "qat_qmodel_set_eval_mode: unknown mode %d", (int)mode);
    qm->eval_mode = mode;
    return QAT_OK;
}

qat_eval_mode qat_qmodel_eval_mode(const qat_qmodel *qm) { return qm->eval_mode; }

/* The output quantizer's parameters, for units evaluated on the grid:
 * 0 when it is not a per-tensor quantizer in use. */
static int grid_out(const qat_quantizer *q, float *s, int32_t *z)
{
    if (!q->fake_quant || !q->initialized || q->n != 1) return 0;
    *s = qat_quantizer_scales(q)[0];
    qat_quantizer_zero_points(q, z);
    return *s > 0;
}

static int integer_eval(const qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un)
{
    const qat_quantizer *q = qat_qunit_actq(qm, un);
    return qm->eval_mode == QAT_EVAL_INTEGER_GRID && !qm->calibrating && !qat_ctx_training(ctx) && !qat_ctx_grad_enabled(ctx) &&
           un->act.fake_quant && q->initialized && q->n == 1 && !q->float_format;
}

/* The output grid of a unit evaluated on the grid (its own or the shared
 * quantizer; the unit's fake-quant switch). */
static int unit_grid_out(qat_qmodel *qm, const qat_qunit *un, float *s, int32_t *z)
{
    qat_quantizer q = *qat_qunit_actq(qm, un);
    q.fake_quant = un->act.fake_quant;
    return grid_out(&q, s, z);
}

/* Row kernels, cloned for AVX-512 and AVX2 (chosen at load time; the
 * baseline build targets SSE2). Rounding is to nearest, ties to even, in
 * the default rounding mode, by adding and subtracting 1.5 * 2^23 (1.5 *
 * 2^52 in double): exact for |v| < 2^22 (2^51), and the callers keep v in
 * that range. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define ROW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROW_CLONES
#endif

/* t = round(x * inv); returns 1 if some x * inv is more than 1e-3 from an
 * integer (not on the grid, or too large to round this way). */
ROW_CLONES static int grid_row(float *t, const float *x, size_t n, float inv)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * inv, r = (v + 12582912.0f) - 12582912.0f;
        bad |= fabsf(v - r) > 1e-3f;
        t[i] = r;
    }
    return bad;
}

/* round(clamp(g, lo, hi)) * s: clamping to the integer bounds first gives
 * the same result as after rounding. */
static inline float grid_point(double g, double lo, double hi, float s)
{
    g = g < lo ? lo : g;
    g = g > hi ? hi : g;
    return (float)((g + 6755399441055744.0) - 6755399441055744.0) * s;
}

/* y = grid point of v * m */
ROW_CLONES static void requant_row(float *y, const float *v, size_t n, double m, double lo, double hi, float s)
{
    for (size_t i = 0; i < n; i++) y[i] = grid_point((double)v[i] * m, lo, hi, s);
}

/* y = grid point of a * ma + b * mb */
ROW_CLONES static void add_row(float *y, const float *a, const float *b, size_t n, double ma, double mb, double lo,
                               double hi, float s)
{
    for (size_t i = 0; i < n; i++) y[i] = grid_point((double)a[i] * ma + (double)b[i] * mb, lo, hi, s);
}

#define GRID_CHUNK 16384

/* The grid index q - z of each element of x, a tensor on the grid of scale s
 * (its values are (q - z) * s in float32, so the quotient is within an ulp
 * of an integer). *off is set when some element is not on the grid. */
static qat_tensor *grid_values(qat_ctx *ctx, const qat_tensor *x, float s, int *off)
{
    qat_tensor *t = qat_new(ctx, x->ndim, x->shape);
    if (!t) return NULL;
    int bad = 0;
    float inv = 1.0f / s;
    long chunks = (long)((x->numel + GRID_CHUNK - 1) / GRID_CHUNK);
#pragma omp parallel for schedule(static) reduction(| : bad) if (chunks > 4)
    for (long k = 0; k < chunks; k++) {
        size_t a = (size_t)k * GRID_CHUNK, len = x->numel - a < GRID_CHUNK ? x->numel - a : GRID_CHUNK;
        bad |= grid_row(t->data + a, x->data + a, len, inv);
    }
    *off = bad;
    return t;
}

/* The range of q - z the unit's output allows, per output channel (C):
 * [qmin, qmax] - z, narrowed by a fused ReLU or clamp
 * (qat_qunit_act_bounds). hi: C entries (arena); NULL if out of memory. */
static double *grid_bounds(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, float s, int32_t z, int C, double *lo)
{
    int32_t *hq = qat_arena_alloc(ctx, (size_t)C * sizeof *hq), lq;
    double *hi = hq ? qat_arena_alloc(ctx, (size_t)C * sizeof *hi) : NULL;
    if (!hi) return NULL;
    qat_qunit_act_bounds(qm, un, s, z, C, &lq, hq);
    *lo = (double)lq - z;
    for (int c = 0; c < C; c++) hi[c] = (double)hq[c] - z;
    return hi;
}

/* y = the fake-quant output for the real value v * mult[channel] / s:
 * (clamp(nearbyint(v * m) + z, lo, hi[channel]) - z) * s, the float32
 * graph's value ((q - z) and its product with s are computed the same
 * way). v is [outer, C, inner]; lo, hi: bounds of q - z. */
static void requant_grid(float *y, const float *v, const double *mult, size_t outer, int C, size_t inner, double lo,
                         const double *hi, float s)
{
    long rows = (long)(outer * (size_t)C);
#pragma omp parallel for schedule(static) if (outer * (size_t)C * inner >= 65536)
    for (long r = 0; r < rows; r++)
        requant_row(y + (size_t)r * inner, v + (size_t)r * inner, inner, mult[r % C], lo, hi[r % C], s);
}

/* conv/linear unit on the grid; NULL with no error set when it does not
 * apply (the caller then runs the float32 graph). */
static qat_tensor *conv_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    qat_quantizer *wq = &un->weight;
    float s_in = qat_qunit_input_scale(qm, un), s_out;
    int32_t z_out;
    if (!(s_in > 0) || !wq->fake_quant || !wq->initialized || !unit_grid_out(qm, un, &s_out, &z_out)) return NULL;
    int off = 0;
    qat_tensor *xi = grid_values(ctx, out[l->inputs[0]], s_in, &off);
    *failed = 1;
    if (xi && off) {
        *failed = 0; /* the input is not on its grid: the float32 graph */
        return NULL;
    }
    int C = l->out_ch, is_conv = l->type == QAT_LAYER_CONV2D;
    qat_tensor *wf, *bf;
    if (!xi || qat_qunit_fold(ctx, qm, un, &wf, &bf)) return NULL;
    /* the weight observer sees the folded weights as in the float32 graph
     * (a memoryless min/max: the scales follow the current weights) */
    if (qat_quantizer_observe(ctx, wq, wf)) return NULL;
    const float *sw = qat_channel_weight_scales(ctx, wq, C);
    qat_tensor *wi = sw ? qat_new(ctx, wf->ndim, wf->shape) : NULL;
    qat_tensor *bi = bf && wi ? qat_new(ctx, 1, &C) : NULL;
    double *mult = wi ? qat_arena_alloc(ctx, (size_t)C * sizeof *mult) : NULL;
    qat_tensor *sb = mult ? qat_new(ctx, 1, &C) : NULL;
    int8_t *wq8 = sb ? qat_arena_alloc(ctx, wf->numel) : NULL;
    int32_t *bq = wq8 ? qat_arena_alloc(ctx, (size_t)C * sizeof *bq) : NULL;
    if (!bq || (bf && !bi)) return NULL;
    size_t per = wf->numel / (size_t)C;
    /* the converter's integer weights, bias and multipliers */
    int rc = qat_conv_integer_form(wq, wf->data, bf ? bf->data : NULL, C, per, s_in, sw, s_out, wq8, bq, sb->data,
                                   mult);
    if (rc) {
        qat_ctx_fail(ctx, rc);
        return NULL;
    }
    for (size_t i = 0; i < wf->numel; i++) wi->data[i] = (float)wq8[i];
    if (bi)
        for (int c = 0; c < C; c++) bi->data[c] = (float)bq[c];
    qat_tensor *acc = !is_conv       ? qat_linear(ctx, xi, wi, bi)
                      : l->groups > 1 ? qat_conv2d_grouped(ctx, xi, wi, bi, l->stride, l->pad, l->groups)
                                      : qat_conv2d(ctx, xi, wi, bi, l->stride, l->pad);
    qat_tensor *y = acc ? qat_new(ctx, acc->ndim, acc->shape) : NULL;
    double lo, *hi = y ? grid_bounds(ctx, qm, un, s_out, z_out, C, &lo) : NULL;
    if (!hi) return NULL;
    size_t outer = (size_t)acc->shape[0], inner = acc->numel / (outer * (size_t)C);
    requant_grid(y->data, acc->data, mult, outer, C, inner, lo, hi, s_out);
    /* the layers inside the unit (not its output, which the caller sets):
     * the real pre-activation acc * s_in * s_w, in place (acc is not needed
     * any more), and its ReLU / clamp */
    if (un->head != un->last) {
        qat_tensor *pre = acc;
        long rows = (long)(outer * (size_t)C);
#pragma omp parallel for schedule(static) if (acc->numel >= 65536)
        for (long r = 0; r < rows; r++)
            for (size_t i = 0; i < inner; i++) pre->data[(size_t)r * inner + i] *= sb->data[r % C];
        out[un->head] = pre;
        if (un->bn >= 0) out[un->bn] = pre;
    }
    *failed = 0;
    return y;
}

/* add unit on the grid: round(a' * s_a / s_out + b' * s_b / s_out). */
static qat_tensor *add_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    const qat_layer *l = qat_model_layer_c(qm->m, un->head);
    float s_out, sa = qat_qunit_input_scale(qm, un), sb = 0;
    int32_t z_out, zb;
    if (!qat_qunit_input_grid(qm, un, 1, &sb, &zb)) sb = 0;
    if (!(sa > 0) || !(sb > 0) || !unit_grid_out(qm, un, &s_out, &z_out)) return NULL;
    int offa = 0, offb = 0;
    qat_tensor *ai = grid_values(ctx, out[l->inputs[0]], sa, &offa);
    qat_tensor *bi = ai ? grid_values(ctx, out[l->inputs[1]], sb, &offb) : NULL;
    *failed = 1;
    if (bi && (offa || offb)) {
        *failed = 0;
        return NULL;
    }
    qat_tensor *y = bi ? qat_new(ctx, ai->ndim, ai->shape) : NULL;
    if (!y) return NULL;
    double ma = (double)sa / s_out, mb = (double)sb / s_out, lo, *hip = grid_bounds(ctx, qm, un, s_out, z_out, 1, &lo);
    if (!hip) return NULL;
    double hi = hip[0];
    long chunks = (long)((ai->numel + GRID_CHUNK - 1) / GRID_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (long k = 0; k < chunks; k++) {
        size_t a = (size_t)k * GRID_CHUNK, len = ai->numel - a < GRID_CHUNK ? ai->numel - a : GRID_CHUNK;
        add_row(y->data + a, ai->data + a, bi->data + a, len, ma, mb, lo, hi, s_out);
    }
    if (un->head != un->last && !(out[un->head] = qat_add(ctx, out[l->inputs[0]], out[l->inputs[1]])))
        return NULL; /* the sum before the fused ReLU */
    *failed = 0;
    return y;
}

/* average-pool unit on the grid: round(sum of x' over the window * s_in /
 * (window * s_out)). */
static qat_tensor *pool_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    const qat_tensor *x = out[l->inputs[0]];
    float s_in = qat_qunit_input_scale(qm, un), s_out;
    int32_t z_out;
    if (!(s_in > 0) || un->relu >= 0 || x->ndim != 4 || !unit_grid_out(qm, un, &s_out, &z_out)) return NULL;
    int off = 0;
    qat_tensor *xi = grid_values(ctx, x, s_in, &off);
    *failed = 1;
    if (xi && off) {
        *failed = 0;
        return NULL;
    }
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int gap = l->type == QAT_LAYER_GLOBAL_AVGPOOL;
    int k = gap ? H : l->kernel, kw = gap ? W : l->kernel, st = gap ? 1 : l->stride;
    int OH = gap ? 1 : (H - k) / st + 1, OW = gap ? 1 : (W - kw) / st + 1;
    int shape[4] = {N, C, OH, OW};
    qat_tensor *sums = xi ? qat_new(ctx, gap ? 2 : 4, shape) : NULL; /* GAP gives [N, C] */
    qat_tensor *y = sums ? qat_new(ctx, sums->ndim, sums->shape) : NULL;
    if (!y) return NULL;
#pragma omp parallel for schedule(static) if ((size_t)N * C * H * W >= 65536)
    for (long r = 0; r < (long)N * C; r++) {
        const float *xr = xi->data + (size_t)r * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double acc = 0;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < kw; j++) acc += xr[(oh * st + i) * W + ow * st + j];
                sums->data[((size_t)r * OH + oh) * OW + ow] = (float)acc;
            }
    }
    double mult = (double)s_in / ((double)k * kw * s_out), lo, *hi = grid_bounds(ctx, qm, un, s_out, z_out, 1, &lo);
    if (!hi) return NULL;
    requant_grid(y->data, sums->data, &mult, sums->numel, 1, 1, lo, hi, s_out);
    *failed = 0;
    return y;
}

/* ---- act and concat units ---- */

/* The per-tensor int8 grid of the unit's output: 0 if there is none. */
static int int8_grid(const qat_quantizer *q)
{
    return q->initialized && q->n == 1 && !q->float_format && !qat_quantizer_is_special(q) && q->qmin >= -128 &&
           q->qmax <= 127;
}

int qat_act_table(qat_qmodel *qm, const qat_qunit *un, int8_t *table)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    const qat_quantizer *oq = qat_qunit_actq(qm, un);
    float s_in, s_out;
    int32_t z_in, z_out;
    if (un->kind != QAT_UNIT_ACT) return qat_error(QAT_ERR_ARG, "unit '%s' is not an act unit", un->name);
    if (l->type == QAT_LAYER_CLAMP && l->clamp_hi_c)
        return qat_error(QAT_ERR_UNSUPPORTED,
                         "unit '%s': clamp with per-channel upper bounds outside a conv unit has no int8 table", un->name);
    if (!qat_qunit_input_grid(qm, un, 0, &s_in, &z_in) || !int8_grid(qat_qunit_actq(qm, &qm->units[un->in_unit[0]])))
        return qat_error(QAT_ERR_STATE, "unit '%s' (%s): its input is not on a per-tensor int8 grid", un->name,
                         qat_layer_type_name(l->type));
    if (!int8_grid(oq))
        return qat_error(QAT_ERR_STATE, "unit '%s' (%s): its output quantizer is not a calibrated per-tensor int8 grid",
                         un->name, qat_layer_type_name(l->type));
    s_out = qat_quantizer_scales(oq)[0];
    qat_quantizer_zero_points(oq, &z_out);
    qat_ctx *ctx = qat_ctx_create((size_t)1 << 16);
    if (!ctx) return qat_error(QAT_ERR_NOMEM, "act table: out of memory");
    qat_ctx_set_grad(ctx, 0);
    qat_ctx_set_training(ctx, 0);
    int rc = QAT_OK;
    qat_tensor *x = qat_new(ctx, 4, (int[]){1, 1, 1, 256}), *y = NULL;
    if (x) {
        /* the input grid's values as the fake-quant graph forms them,
         * (q - z) * s in float32, through the layer's own op */
        for (int q = -128; q < 128; q++) x->data[q + 128] = (float)(q - z_in) * s_in;
        qat_tensor *ins[1] = {x};
        y = qat_layer_forward(ctx, l, ins);
    }
    if (!y) {
        rc = qat_ctx_status(ctx) ? qat_ctx_status(ctx) : QAT_ERR_NOMEM;
    } else {
        float inv = 1.0f / s_out; /* fake-quant's reciprocal */
        for (int k = 0; k < 256; k++) table[k] = (int8_t)qat_quantize_val(y->data[k], inv, z_out, oq->qmin, oq->qmax);
    }
    qat_ctx_free(ctx);
    return rc;
}

/* act unit on the grid: its table applied to the input's grid indices. */
static qat_tensor *act_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    const qat_layer *l = qat_model_layer_c(qm->m, un->head);
    float s_in, s_out;
    int32_t z_in, z_out;
    if (!qat_qunit_input_grid(qm, un, 0, &s_in, &z_in) || !int8_grid(qat_qunit_actq(qm, &qm->units[un->in_unit[0]])) ||
        !unit_grid_out(qm, un, &s_out, &z_out) || !int8_grid(qat_qunit_actq(qm, un)) ||
        (l->type == QAT_LAYER_CLAMP && l->clamp_hi_c))
        return NULL;
    int off = 0;
    qat_tensor *xi = grid_values(ctx, out[l->inputs[0]], s_in, &off);
    *failed = 1;
    if (xi && off) {
        *failed = 0;
        return NULL;
    }
    int8_t table[256];
    qat_tensor *y = xi ? qat_new(ctx, xi->ndim, xi->shape) : NULL;
    if (!y) return NULL;
    int rc = qat_act_table(qm, un, table);
    if (rc) {
        qat_ctx_fail(ctx, rc);
        return NULL;
    }
    for (size_t i = 0; i < xi->numel; i++) {
        int q = (int)xi->data[i] + z_in;
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        y->data[i] = (float)(table[q + 128] - z_out) * s_out;
    }
    *failed = 0;
    return y;
}

/* concat unit on the grid: each input's grid value requantized,
 * round((q_i - z_i) * s_i / s_out), in double (an exact copy when the
 * scales are equal: QAT_CONCAT_SHARED). */
static qat_tensor *concat_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    const qat_layer *l = qat_model_layer_c(qm->m, un->head);
    float s[2], s_out;
    int32_t z[2], z_out;
    if (!qat_qunit_input_grid(qm, un, 0, &s[0], &z[0]) || !qat_qunit_input_grid(qm, un, 1, &s[1], &z[1]) ||
        !unit_grid_out(qm, un, &s_out, &z_out))
        return NULL;
    int off[2] = {0, 0};
    qat_tensor *gi[2];
    *failed = 1;
    for (int k = 0; k < 2; k++)
        if (!(gi[k] = grid_values(ctx, out[l->inputs[k]], s[k], &off[k]))) return NULL;
    if (off[0] || off[1]) {
        *failed = 0;
        return NULL;
    }
    qat_tensor *cat = qat_concat(ctx, gi[0], gi[1]);
    qat_tensor *y = cat ? qat_new(ctx, cat->ndim, cat->shape) : NULL;
    double lo, *hi = y ? grid_bounds(ctx, qm, un, s_out, z_out, 1, &lo) : NULL;
    if (!hi) return NULL;
    /* [N, Ca + Cb, ...]: rows of inner elements, the first Ca of each
     * sample from a */
    size_t N = (size_t)cat->shape[0], per_a = gi[0]->numel / N, per = cat->numel / N;
    double m[2] = {(double)s[0] / s_out, (double)s[1] / s_out};
    for (size_t n = 0; n < N; n++) {
        requant_row(y->data + n * per, cat->data + n * per, per_a, m[0], lo, hi[0], s_out);
        requant_row(y->data + n * per + per_a, cat->data + n * per + per_a, per - per_a, m[1], lo, hi[0], s_out);
    }
    *failed = 0;
    return y;
}

/* ---- fp16 / bf16 units: the function the runtime's float ops compute ----
 *
 * In evaluation a float-format unit computes in double from its fp16
 * (bf16) inputs, weights and bias, and rounds once: conv/linear
 * y = r(sum x * w + b) (then the fused ReLU), add r(a + b), average pools
 * r(sum / window). Products of two fp16 (bf16) values are exact in double
 * and the sums are (nearly always) exact too, so the result does not
 * depend on the summation order: the runtime's float ops compute the same
 * (docs/FORMAT-int8.md, float ops). The float32 training graph rounds its
 * partial sums first and differs where that lands next to a rounding
 * boundary. */

static float fmt_round(qat_float_format f, double v)
{
    return f == QAT_FLOAT_FP16 ? qat_f16_round(v) : qat_bf16_round(v);
}

static qat_tensor *float_conv_unit(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out)
{
    qat_layer *l = qat_model_layer(qm->m, un->head);
    qat_float_format f = un->cfg.float_format;
    const qat_tensor *x = out[l->inputs[0]];
    qat_tensor *wf, *bf;
    if (qat_qunit_fold(ctx, qm, un, &wf, &bf)) return NULL;
    int C = l->out_ch, is_conv = l->type == QAT_LAYER_CONV2D, N = x->shape[0];
    size_t per = wf->numel / (size_t)C;
    double *w = qat_arena_alloc(ctx, wf->numel * sizeof *w), *b = qat_arena_alloc(ctx, (size_t)C * sizeof *b);
    if (!w || !b) return NULL;
    for (size_t i = 0; i < wf->numel; i++) w[i] = fmt_round(f, wf->data[i]);
    for (int c = 0; c < C; c++) b[c] = bf ? fmt_round(f, bf->data[c]) : 0.0;
    int relu = un->relu >= 0;
    qat_tensor *y;
    if (!is_conv) {
        int in = x->shape[1];
        double *xd = qat_arena_alloc(ctx, (size_t)N * in * sizeof *xd), *acc = qat_arena_alloc(ctx, (size_t)N * C * sizeof *acc);
        y = qat_new(ctx, 2, (int[]){N, C});
        if (!xd || !acc || !y) return NULL;
        for (size_t i = 0; i < (size_t)N * in; i++) xd[i] = x->data[i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, in, 1.0, xd, in, w, in, 0.0, acc, C);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                float v = fmt_round(f, acc[(size_t)n * C + c] + b[c]);
                y->data[(size_t)n * C + c] = relu && !(v > 0.0f) ? 0.0f : v;
            }
        out[un->head] = y;
        if (un->bn >= 0) out[un->bn] = y;
        return y;
    }
    int IC = x->shape[1], H = x->shape[2], W = x->shape[3], K = l->kernel, st = l->stride, pd = l->pad;
    int OH = (H + 2 * pd - K) / st + 1, OW = (W + 2 * pd - K) / st + 1;
    size_t P = (size_t)OH * OW;
    y = qat_new(ctx, 4, (int[]){N, C, OH, OW});
    double *col = qat_arena_alloc(ctx, per * P * sizeof *col), *acc = qat_arena_alloc(ctx, (size_t)C * P * sizeof *acc);
    if (!y || !col || !acc) return NULL;
    for (int n = 0; n < N; n++) {
        const float *xn = x->data + (size_t)n * IC * H * W;
        for (int ic = 0; ic < IC; ic++)
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    double *row = col + ((size_t)(ic * K + kh) * K + kw) * P;
                    for (int oh = 0; oh < OH; oh++)
                        for (int ow = 0; ow < OW; ow++) {
                            int ih = oh * st - pd + kh, iw = ow * st - pd + kw;
                            row[oh * OW + ow] =
                                (ih < 0 || ih >= H || iw < 0 || iw >= W) ? 0.0 : xn[((size_t)ic * H + ih) * W + iw];
                        }
                }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, (int)P, (int)per, 1.0, w, (int)per, col, (int)P, 0.0,
                    acc, (int)P);
        float *yn = y->data + (size_t)n * C * P;
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < P; p++) {
                float v = fmt_round(f, acc[(size_t)c * P + p] + b[c]);
                yn[(size_t)c * P + p] = relu && !(v > 0.0f) ? 0.0f : v;
            }
    }
    out[un->head] = y;
    if (un->bn >= 0) out[un->bn] = y;
    return y;
}

static qat_tensor *float_unit_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    if (qm->eval_mode != QAT_EVAL_INTEGER_GRID || qm->calibrating || qat_ctx_training(ctx) || qat_ctx_grad_enabled(ctx) ||
        !un->act.fake_quant || (un->kind == QAT_UNIT_CONV && !un->weight.fake_quant))
        return NULL;
    const qat_layer *l = qat_model_layer_c(qm->m, un->head);
    qat_float_format f = un->cfg.float_format;
    qat_tensor *y = NULL;
    if (un->relu >= 0 && qat_model_layer_c(qm->m, un->relu)->type != QAT_LAYER_RELU)
        return NULL; /* a fused clamp: the float32 graph */
    if (un->kind == QAT_UNIT_CONV && l->type == QAT_LAYER_CONV2D && l->groups > 1) return NULL;
    *failed = 1;
    if (un->kind == QAT_UNIT_CONV) {
        y = float_conv_unit(ctx, qm, un, out);
    } else if (un->kind == QAT_UNIT_ADD) {
        const qat_tensor *a = out[l->inputs[0]], *b = out[l->inputs[1]];
        if (!(y = qat_new(ctx, a->ndim, a->shape))) return NULL;
        int relu = un->relu >= 0;
        for (size_t i = 0; i < a->numel; i++) {
            float v = fmt_round(f, (double)a->data[i] + (double)b->data[i]);
            y->data[i] = relu && !(v > 0.0f) ? 0.0f : v;
        }
        if (un->head != un->last && !(out[un->head] = qat_add(ctx, out[l->inputs[0]], out[l->inputs[1]]))) return NULL;
    } else if (un->kind == QAT_UNIT_POOL && un->relu < 0) {
        const qat_tensor *x = out[l->inputs[0]];
        int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
        int gap = l->type == QAT_LAYER_GLOBAL_AVGPOOL;
        int k = gap ? H : l->kernel, kw = gap ? W : l->kernel, st = gap ? 1 : l->stride;
        int OH = gap ? 1 : (H - k) / st + 1, OW = gap ? 1 : (W - kw) / st + 1;
        int shape[4] = {N, C, OH, OW};
        if (!(y = qat_new(ctx, gap ? 2 : 4, shape))) return NULL;
        for (long r = 0; r < (long)N * C; r++) {
            const float *xr = x->data + (size_t)r * H * W;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = 0;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < kw; j++) acc += xr[(oh * st + i) * W + ow * st + j];
                    y->data[((size_t)r * OH + oh) * OW + ow] = fmt_round(f, acc / ((double)k * kw));
                }
        }
    } else {
        *failed = 0;
        return NULL;
    }
    if (y) *failed = 0;
    return y;
}

qat_tensor *qat_qunit_forward_grid(qat_ctx *ctx, qat_qmodel *qm, qat_qunit *un, qat_tensor **out, int *failed)
{
    *failed = 0;
    if (un->cfg.float_format) return float_unit_grid(ctx, qm, un, out, failed);
    if (!integer_eval(ctx, qm, un)) return NULL;
    switch (un->kind) {
    case QAT_UNIT_CONV: return conv_unit_grid(ctx, qm, un, out, failed);
    case QAT_UNIT_ADD: return add_unit_grid(ctx, qm, un, out, failed);
    case QAT_UNIT_POOL: return pool_unit_grid(ctx, qm, un, out, failed);
    case QAT_UNIT_ACT: return act_unit_grid(ctx, qm, un, out, failed);
    case QAT_UNIT_CONCAT: return concat_unit_grid(ctx, qm, un, out, failed);
    default: return NULL;
    }
}
