/* quant/cle.c: cross-layer equalization (Nagel et al. 2019, "Data-Free
 * Quantization Through Weight Equalization and Bias Correction") on the
 * float model, and parameter snapshots (docs/QUANT.md, section 19). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/ptq.h"

/* ---- snapshots ---- */

struct qat_model_snapshot {
    int n;
    float **data;
    size_t *numel;
};

static int snapshot_count(const qat_model *m) { return qat_model_num_params(m) + qat_model_num_buffers(m); }

static qat_tensor *snapshot_tensor(const qat_model *m, int k)
{
    int np = qat_model_num_params(m);
    return k < np ? qat_model_params(m)[k].t : qat_model_buffers(m)[k - np].t;
}

void qat_model_snapshot_free(qat_model_snapshot *s)
{
    if (!s) return;
    for (int k = 0; k < s->n; k++) free(s->data[k]);
    free(s->data);
    free(s->numel);
    free(s);
}

qat_model_snapshot *qat_model_snapshot_take(const qat_model *m)
{
    if (!m) return qat_error_null(QAT_ERR_ARG, "snapshot: NULL model");
    qat_model_snapshot *s = calloc(1, sizeof *s);
    int n = snapshot_count(m);
    if (!s || !(s->data = calloc((size_t)n + 1, sizeof *s->data)) || !(s->numel = calloc((size_t)n + 1, sizeof *s->numel))) {
        qat_model_snapshot_free(s);
        return qat_error_null(QAT_ERR_NOMEM, "snapshot: out of memory");
    }
    s->n = n;
    for (int k = 0; k < n; k++) {
        const qat_tensor *t = snapshot_tensor(m, k);
        s->numel[k] = t->numel;
        if (!(s->data[k] = malloc(t->numel * sizeof(float) + 1))) {
            qat_model_snapshot_free(s);
            return qat_error_null(QAT_ERR_NOMEM, "snapshot: out of memory");
        }
        memcpy(s->data[k], t->data, t->numel * sizeof(float));
    }
    return s;
}

int qat_model_snapshot_swap(qat_model_snapshot *s, qat_model *m)
{
    if (!s || !m || snapshot_count(m) != s->n) return qat_error(QAT_ERR_ARG, "snapshot: not taken from this model");
    for (int k = 0; k < s->n; k++)
        if (snapshot_tensor(m, k)->numel != s->numel[k])
            return qat_error(QAT_ERR_ARG, "snapshot: tensor %d has another size than the model's", k);
    for (int k = 0; k < s->n; k++) {
        float *d = snapshot_tensor(m, k)->data, *v = s->data[k];
        for (size_t i = 0; i < s->numel[k]; i++) {
            float t = d[i];
            d[i] = v[i];
            v[i] = t;
        }
    }
    return QAT_OK;
}

/* ---- graph helpers ---- */

/* The only reader of layer i, or -1 (none, several, or a two-input layer). */
static int only_reader(const qat_model *m, int i)
{
    int r = -1;
    for (int j = i + 1; j < qat_model_num_layers(m); j++) {
        const qat_layer *l = qat_model_layer_c(m, j);
        for (int k = 0; k < l->n_inputs; k++)
            if (l->inputs[k] == i) {
                if (r >= 0 || l->n_inputs != 1) return -1;
                r = j;
            }
    }
    return r;
}

static int is_weighted(const qat_layer *l) { return l->type == QAT_LAYER_CONV2D || l->type == QAT_LAYER_LINEAR; }

/* A BN that is a pure per-channel bias (qat_cle_fold_bn's result). */
static int bn_is_bias(const qat_layer *l)
{
    for (int c = 0; c < l->out_ch; c++)
        if (l->weight->data[c] != 1.0f || l->running_mean->data[c] != 0.0f ||
            1.0f / sqrtf(l->running_var->data[c] + l->bn_eps) != 1.0f)
            return 0;
    return 1;
}

static int conv_groups(const qat_layer *l) { return l->type == QAT_LAYER_CONV2D && l->groups > 0 ? l->groups : 1; }

/* Walks from first's output to the next weighted layer through layers a
 * positive per-channel scale commutes with; -1 if there is none. */
static int pair_second(const qat_model *m, int first)
{
    int i = first;
    for (;;) {
        int j = only_reader(m, i);
        if (j < 0) return -1;
        const qat_layer *l = qat_model_layer_c(m, j);
        switch (l->type) {
        case QAT_LAYER_CONV2D:
        case QAT_LAYER_LINEAR:
            return j;
        case QAT_LAYER_BATCHNORM2D:
            if (!bn_is_bias(l)) return -1;
            break;
        case QAT_LAYER_CLAMP:
            if (l->clamp_lo != 0.0f) return -1; /* clamp(x/s, lo, hi/s) needs lo 0 */
            break;
        case QAT_LAYER_RELU:
        case QAT_LAYER_MAXPOOL2D:
        case QAT_LAYER_AVGPOOL2D:
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_FLATTEN: /* channel c: the block of columns [c*HW, (c+1)*HW) */
            break;
        default:
            return -1;
        }
        i = j;
    }
}

int qat_cle_pairs(const qat_model *m, int *first, int *second, int max)
{
    int n = 0;
    for (int i = 1; i < qat_model_num_layers(m); i++) {
        if (!is_weighted(qat_model_layer_c(m, i))) continue;
        int j = pair_second(m, i);
        if (j < 0) continue;
        const qat_layer *a = qat_model_layer_c(m, i), *b = qat_model_layer_c(m, j);
        if (b->type == QAT_LAYER_CONV2D ? b->in_ch != a->out_ch : b->in_ch % a->out_ch != 0) continue;
        if (n < max) {
            first[n] = i;
            second[n] = j;
        }
        n++;
    }
    return n;
}

/* How second's weight reads first's channels. */
typedef struct pair_geom {
    int C;       /* channels of the pair */
    int rows;    /* second's output rows */
    int row_len; /* second's weight elements per output row */
    int cols;    /* columns per channel in a row */
    int groups;  /* second's groups (conv) */
} pair_geom;

static int geometry(const qat_model *m, int first, int second, pair_geom *g)
{
    const qat_layer *a = qat_model_layer_c(m, first), *b = qat_model_layer_c(m, second);
    g->C = a->out_ch;
    g->rows = b->out_ch;
    g->row_len = (int)(b->weight->numel / (size_t)b->out_ch);
    g->groups = conv_groups(b);
    if (b->type == QAT_LAYER_LINEAR) {
        if (b->in_ch % g->C) return qat_error(QAT_ERR_SHAPE, "cle: '%s' has %d inputs, not a multiple of '%s''s %d channels", b->name, b->in_ch, a->name, g->C);
        g->cols = b->in_ch / g->C;
        g->groups = 1;
    } else {
        if (b->in_ch != g->C) return qat_error(QAT_ERR_SHAPE, "cle: '%s' reads %d channels, '%s' makes %d", b->name, b->in_ch, a->name, g->C);
        g->cols = b->kernel * b->kernel;
    }
    return QAT_OK;
}

/* The weights of second that read channel c: rows [r0, r1) and, in each,
 * the elements [off, off + cols). */
static void channel_span(const pair_geom *g, int c, int *r0, int *r1, int *off)
{
    int per_in = g->C / g->groups, per_out = g->rows / g->groups, grp = c / per_in;
    *r0 = grp * per_out;
    *r1 = *r0 + per_out;
    *off = (c - grp * per_in) * g->cols;
}

int qat_cle_ranges(const qat_model *m, int first, int second, float *r1, float *r2)
{
    pair_geom g;
    int rc = geometry(m, first, second, &g);
    if (rc) return rc;
    const qat_layer *a = qat_model_layer_c(m, first), *b = qat_model_layer_c(m, second);
    size_t per = a->weight->numel / (size_t)a->out_ch;
    for (int c = 0; c < g.C; c++) {
        float mx = 0;
        for (size_t i = 0; i < per; i++) mx = fmaxf(mx, fabsf(a->weight->data[(size_t)c * per + i]));
        r1[c] = mx;
        int q0, q1, off;
        channel_span(&g, c, &q0, &q1, &off);
        mx = 0;
        for (int r = q0; r < q1; r++)
            for (int k = 0; k < g.cols; k++) mx = fmaxf(mx, fabsf(b->weight->data[(size_t)r * g.row_len + off + k]));
        r2[c] = mx;
    }
    return QAT_OK;
}

/* Divides channel c of everything between first and second by s[c]
 * (hi: room for the channels' clamp bounds). */
static int scale_path(qat_model *m, int first, int second, const float *s, float *hi)
{
    qat_layer *a = qat_model_layer(m, first);
    size_t per = a->weight->numel / (size_t)a->out_ch;
    for (int c = 0; c < a->out_ch; c++) {
        for (size_t i = 0; i < per; i++) a->weight->data[(size_t)c * per + i] /= s[c];
        if (a->bias) a->bias->data[c] /= s[c];
    }
    for (int i = only_reader(m, first); i >= 0 && i != second; i = only_reader(m, i)) {
        qat_layer *l = qat_model_layer(m, i);
        if (l->type == QAT_LAYER_BATCHNORM2D)
            for (int c = 0; c < l->out_ch; c++) l->bias->data[c] /= s[c];
        if (l->type == QAT_LAYER_CLAMP) {
            /* clamp(x / s, 0, hi / s) = clamp(x, 0, hi) / s: the bound per channel */
            for (int c = 0; c < a->out_ch; c++) hi[c] = (l->clamp_hi_c ? l->clamp_hi_c->data[c] : l->clamp_hi) / s[c];
            int rc = qat_layer_set_clamp_channels(m, i, hi);
            if (rc) return rc;
        }
    }
    return QAT_OK;
}

static void scale_inputs(qat_model *m, int first, int second, const float *s)
{
    pair_geom g;
    if (geometry(m, first, second, &g)) return;
    qat_layer *b = qat_model_layer(m, second);
    for (int c = 0; c < g.C; c++) {
        int q0, q1, off;
        channel_span(&g, c, &q0, &q1, &off);
        for (int r = q0; r < q1; r++)
            for (int k = 0; k < g.cols; k++) b->weight->data[(size_t)r * g.row_len + off + k] *= s[c];
    }
}

int qat_cle_equalize(qat_model *m, const qat_cle_opts *o, qat_cle_report *rep)
{
    if (!m) return qat_error(QAT_ERR_ARG, "cle: NULL model");
    int max_sweeps = o && o->max_sweeps > 0 ? o->max_sweeps : 1000;
    double tol = o && o->tol > 0 ? o->tol : 1e-6;
    int np = qat_cle_pairs(m, NULL, NULL, 0);
    int *first = malloc((size_t)(np + 1) * sizeof *first), *second = malloc((size_t)(np + 1) * sizeof *second);
    int maxc = 1;
    for (int i = 0; i < qat_model_num_layers(m); i++)
        if (qat_model_layer_c(m, i)->out_ch > maxc) maxc = qat_model_layer_c(m, i)->out_ch;
    float *r1 = malloc((size_t)maxc * sizeof *r1), *r2 = malloc((size_t)maxc * sizeof *r2),
          *s = malloc((size_t)maxc * sizeof *s), *hi = malloc((size_t)maxc * sizeof *hi);
    int rc = (!first || !second || !r1 || !r2 || !s || !hi) ? qat_error(QAT_ERR_NOMEM, "cle: out of memory") : QAT_OK;
    if (!rc) qat_cle_pairs(m, first, second, np);
    int sweep = 0;
    double dev = 0;
    for (; !rc && sweep < max_sweeps && np > 0; sweep++) {
        dev = 0;
        for (int p = 0; p < np && !rc; p++) {
            int C = qat_model_layer_c(m, first[p])->out_ch;
            if ((rc = qat_cle_ranges(m, first[p], second[p], r1, r2))) break;
            for (int c = 0; c < C; c++) {
                /* a dead channel (either range 0) is left alone */
                s[c] = (r1[c] > 0 && r2[c] > 0) ? (float)(sqrt((double)r1[c] * r2[c]) / r2[c]) : 1.0f;
                if (!isfinite(s[c]) || !(s[c] > 0)) s[c] = 1.0f;
                dev = fmax(dev, fabs((double)s[c] - 1.0));
            }
            if ((rc = scale_path(m, first[p], second[p], s, hi))) break;
            scale_inputs(m, first[p], second[p], s);
        }
        if (dev <= tol) {
            sweep++;
            break;
        }
    }
    if (rep) {
        rep->pairs = np;
        rep->sweeps = sweep;
        rep->max_dev = dev;
    }
    free(first);
    free(second);
    free(r1);
    free(r2);
    free(s);
    free(hi);
    return rc;
}

/* ---- BN folding ---- */

int qat_cle_fold_bn(qat_model *m)
{
    if (!m) return qat_error(QAT_ERR_ARG, "cle: NULL model");
    int n = 0;
    for (int i = 1; i < qat_model_num_layers(m); i++) {
        qat_layer *bn = qat_model_layer(m, i);
        if (bn->type != QAT_LAYER_BATCHNORM2D) continue;
        int ci = bn->inputs[0];
        qat_layer *conv = qat_model_layer(m, ci);
        if (conv->type != QAT_LAYER_CONV2D || only_reader(m, ci) != i || bn_is_bias(bn)) continue;
        size_t per = conv->weight->numel / (size_t)conv->out_ch;
        /* running_var such that var + eps is exactly 1 in float */
        float v1 = 1.0f - bn->bn_eps;
        for (int k = 0; k < 8 && v1 + bn->bn_eps != 1.0f; k++) v1 = nextafterf(v1, v1 + bn->bn_eps < 1.0f ? 2.0f : 0.0f);
        if (v1 + bn->bn_eps != 1.0f) return qat_error(QAT_ERR_STATE, "cle: BN '%s': no running_var gives sigma 1 with eps %g", bn->name, (double)bn->bn_eps);
        for (int c = 0; c < conv->out_ch; c++) {
            /* the quantizer's fold (quant/forward.c): gamma * (1/sqrt(var + eps)) */
            float sf = bn->weight->data[c] * (1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps));
            float b = conv->bias ? conv->bias->data[c] : 0.0f;
            for (size_t k = 0; k < per; k++) conv->weight->data[(size_t)c * per + k] *= sf;
            bn->bias->data[c] = bn->bias->data[c] + sf * (b - bn->running_mean->data[c]);
            if (conv->bias) conv->bias->data[c] = 0.0f;
            bn->weight->data[c] = 1.0f;
            bn->running_mean->data[c] = 0.0f;
            bn->running_var->data[c] = v1;
        }
        n++;
    }
    return n;
}
