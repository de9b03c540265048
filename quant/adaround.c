/* quant/adaround.c: AdaRound (Nagel et al. 2020, "Up or Down? Adaptive
 * Rounding for Post-Training Quantization"; docs/QUANT.md, section 19).
 *
 * Per conv/linear unit, in order: the rounding of each folded weight is
 * learned (floor(W/s) + h, h in [0, 1] the rectified sigmoid of V) to
 * reconstruct the reference float output from the quantized input, with
 * Adam on V, a regulariser that drives h to 0 or 1 (beta annealed), then
 * h >= 0.5 rounds up. The scale stays what calibration set; the chosen
 * grid values are written back into the float weights so that the
 * quantizer's nearest rounding reproduces them (export, checkpoints and
 * every evaluation then use them without knowing about AdaRound). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "qat/ptq.h"
#include "quant/internal.h"

#define ZETA 1.1f
#define GAMMA (-0.1f)

qat_adaround_opts qat_adaround_opts_defaults(void)
{
    qat_adaround_opts o = {0};
    o.iters = 1000;
    o.batch_rows = 1024;
    o.max_rows = 16384;
    o.lr = 1e-3f;
    o.lambda = 0.01f;
    o.beta_start = 20;
    o.beta_end = 2;
    o.warmup = 0.2f;
    o.seed = 0;
    return o;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

static float rect_sigmoid(float v)
{
    float h = sigmoidf_(v) * (ZETA - GAMMA) + GAMMA;
    return h < 0 ? 0 : h > 1 ? 1 : h;
}

/* One layer's problem: rows of the im2col'd quantized input and the
 * reference outputs (bias taken out). */
typedef struct ar_layer {
    int is_conv, C, H, W, K, stride, pad, OH, OW, OC, groups, Kg, OCg, Kfull;
    int rows;     /* cached */
    float *A;     /* [rows, Kfull] */
    float *T;     /* [rows, OC] reference output minus bias */
    long *index;  /* [rows] pixel index n * OH*OW + p (sorted) */
} ar_layer;

static void im2col_row(const float *x, const ar_layer *g, int oh, int ow, float *row)
{
    /* x is one image [C, H, W]; row [C * K * K] in the weight's order */
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->K; i++)
            for (int j = 0; j < g->K; j++) {
                int h = oh * g->stride - g->pad + i, w = ow * g->stride - g->pad + j;
                *row++ = (h >= 0 && h < g->H && w >= 0 && w < g->W) ? x[((size_t)c * g->H + h) * g->W + w] : 0.0f;
            }
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static qat_tensor *images(qat_ctx *ctx, const qat_tensor *x, int s, int b)
{
    qat_tensor *t = qat_new(ctx, 4, (int[]){b, x->shape[1], x->shape[2], x->shape[3]});
    size_t per = x->numel / (size_t)x->shape[0];
    if (t) memcpy(t->data, x->data + (size_t)s * per, (size_t)b * per * sizeof(float));
    return t;
}

#define IMG_BATCH 64

/* Fills g->A (the unit's quantized input) and g->T (reference output minus
 * the folded bias bf) at the sampled rows. */
static int collect(qat_ctx *ctx, qat_qmodel *qm, const qat_qunit *un, const qat_model_snapshot *ref,
                   const qat_tensor *x, const float *bf, ar_layer *g)
{
    qat_model *m = qat_qmodel_float(qm);
    const qat_layer *l = qat_model_layer_c(m, un->head);
    int N = x->shape[0], per_img = g->OH * g->OW;
    int pre = un->bn >= 0 ? un->bn : un->head;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the quantized input; pass 1: the reference output */
        if (pass == 1 && ref && qat_model_snapshot_swap((qat_model_snapshot *)ref, m)) return QAT_ERR_ARG;
        int r = 0, rc = QAT_OK;
        for (int s = 0; s < N && !rc; s += IMG_BATCH) {
            int b = N - s < IMG_BATCH ? N - s : IMG_BATCH;
            qat_tensor *xb = images(ctx, x, s, b);
            qat_tensor **out = !xb ? NULL : pass == 0 ? qat_qmodel_forward_all(ctx, qm, xb) : qat_model_forward_all(ctx, m, xb);
            if (!out) {
                rc = qat_ctx_status(ctx) ? qat_ctx_status(ctx) : QAT_ERR_NOMEM;
                break;
            }
            const qat_tensor *t = pass == 0 ? out[l->inputs[0]] : out[pre];
            for (; r < g->rows && g->index[r] < (long)(s + b) * per_img; r++) {
                long n = g->index[r] / per_img, p = g->index[r] % per_img;
                const float *img = t->data + (size_t)(n - s) * (t->numel / (size_t)b);
                if (pass == 0) {
                    if (g->is_conv)
                        im2col_row(img, g, (int)(p / g->OW), (int)(p % g->OW), g->A + (size_t)r * g->Kfull);
                    else
                        memcpy(g->A + (size_t)r * g->Kfull, img, (size_t)g->Kfull * sizeof(float));
                } else {
                    for (int c = 0; c < g->OC; c++)
                        g->T[(size_t)r * g->OC + c] = img[(size_t)c * per_img + p] - (bf ? bf[c] : 0.0f);
                }
            }
            qat_ctx_reset(ctx);
        }
        if (pass == 1 && ref) qat_model_snapshot_swap((qat_model_snapshot *)ref, m);
        if (rc) return rc;
    }
    (void)l;
    return QAT_OK;
}

/* pred [B, OC] = A_rows [B, Kfull] * Wq^T per group */
static void predict(const ar_layer *g, const float *A, int B, const float *Wq, float *pred)
{
    for (int gr = 0; gr < g->groups; gr++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, g->OCg, g->Kg, 1.0f, A + (size_t)gr * g->Kg, g->Kfull,
                    Wq + (size_t)gr * g->OCg * g->Kg, g->Kg, 0.0f, pred + (size_t)gr * g->OCg, g->OC);
}

static double mse_of(const ar_layer *g, const float *Wq, float *pred_buf, int chunk)
{
    double e = 0;
    for (int r0 = 0; r0 < g->rows; r0 += chunk) {
        int B = g->rows - r0 < chunk ? g->rows - r0 : chunk;
        predict(g, g->A + (size_t)r0 * g->Kfull, B, Wq, pred_buf);
        for (size_t i = 0; i < (size_t)B * g->OC; i++) {
            double d = (double)pred_buf[i] - g->T[(size_t)r0 * g->OC + i];
            e += d * d;
        }
    }
    return e / ((double)g->rows * g->OC);
}

/* The learned rounding of one unit; writes the chosen integers to q. */
static int optimize(const ar_layer *g, const float *wf, const float *sc, const int32_t *zp, int32_t qmin, int32_t qmax,
                    const qat_adaround_opts *o, uint64_t seed, int32_t *q, int32_t *qn, double *mse_n, double *mse_a,
                    int *kept)
{
    *kept = 0;
    size_t nw = (size_t)g->OC * g->Kg;
    int B = o->batch_rows < g->rows ? o->batch_rows : g->rows;
    float *V = malloc(nw * sizeof *V), *fl = malloc(nw * sizeof *fl), *Wq = malloc(nw * sizeof *Wq);
    float *G = malloc(nw * sizeof *G), *m1 = calloc(nw, sizeof *m1), *m2 = calloc(nw, sizeof *m2);
    float *Ab = malloc((size_t)B * g->Kfull * sizeof *Ab), *Tb = malloc((size_t)B * g->OC * sizeof *Tb);
    float *E = malloc((size_t)(B > 256 ? B : 256) * g->OC * sizeof *E);
    int rc = (!V || !fl || !Wq || !G || !m1 || !m2 || !Ab || !Tb || !E) ? qat_error(QAT_ERR_NOMEM, "adaround: out of memory") : QAT_OK;
    if (rc) goto done;
    for (int c = 0; c < g->OC; c++) {
        float inv = 1.0f / sc[c];
        for (int k = 0; k < g->Kg; k++) {
            size_t i = (size_t)c * g->Kg + k;
            float t = wf[i] * inv, f = floorf(t), rest = t - f;
            fl[i] = f;
            /* h(V) = rest */
            float p = (rest - GAMMA) / (ZETA - GAMMA);
            V[i] = -logf(1.0f / p - 1.0f);
            int32_t v = zp[c] + (int32_t)nearbyintf(t);
            qn[i] = v < qmin ? qmin : v > qmax ? qmax : v;
            Wq[i] = (float)(qn[i] - zp[c]) * sc[c];
        }
    }
    *mse_n = mse_of(g, Wq, E, 256);
    qat_rng rng;
    qat_rng_seed(&rng, seed);
    double per_img = g->is_conv ? (double)g->OH * g->OW : 1.0;
    float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    int warm = (int)(o->warmup * (float)o->iters);
    for (int it = 0; it < o->iters; it++) {
        for (int b = 0; b < B; b++) {
            int r = B == g->rows ? b : (int)qat_rng_below(&rng, (uint32_t)g->rows);
            memcpy(Ab + (size_t)b * g->Kfull, g->A + (size_t)r * g->Kfull, (size_t)g->Kfull * sizeof(float));
            memcpy(Tb + (size_t)b * g->OC, g->T + (size_t)r * g->OC, (size_t)g->OC * sizeof(float));
        }
        for (int c = 0; c < g->OC; c++)
            for (int k = 0; k < g->Kg; k++) {
                size_t i = (size_t)c * g->Kg + k;
                float v = fl[i] + rect_sigmoid(V[i]) + (float)zp[c];
                v = v < (float)qmin ? (float)qmin : v > (float)qmax ? (float)qmax : v;
                Wq[i] = (v - (float)zp[c]) * sc[c];
            }
        predict(g, Ab, B, Wq, E);
        for (size_t i = 0; i < (size_t)B * g->OC; i++) E[i] -= Tb[i];
        /* d/dWq of per_img * mean over rows of sum over outputs E^2 */
        float coef = (float)(2.0 * per_img / B);
        for (int gr = 0; gr < g->groups; gr++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->OCg, g->Kg, B, coef, E + (size_t)gr * g->OCg, g->OC,
                        Ab + (size_t)gr * g->Kg, g->Kfull, 0.0f, G + (size_t)gr * g->OCg * g->Kg, g->Kg);
        int reg = it >= warm;
        float beta = o->beta_start;
        if (reg) {
            float rel = (float)(it - warm) / (float)(o->iters - warm > 0 ? o->iters - warm : 1);
            beta = o->beta_end + (o->beta_start - o->beta_end) * fmaxf(0.0f, 1.0f - rel);
        }
        float bc1 = 1.0f - powf(b1, (float)(it + 1)), bc2 = 1.0f - powf(b2, (float)(it + 1));
        for (int c = 0; c < g->OC; c++)
            for (int k = 0; k < g->Kg; k++) {
                size_t i = (size_t)c * g->Kg + k;
                float sg = sigmoidf_(V[i]), hr = sg * (ZETA - GAMMA) + GAMMA;
                if (hr <= 0 || hr >= 1) {
                    G[i] = 0; /* the rectified sigmoid is flat there */
                } else {
                    float v = fl[i] + hr + (float)zp[c];
                    float dh = (v >= (float)qmin && v <= (float)qmax) ? G[i] * sc[c] : 0.0f;
                    if (reg) {
                        float u = 2 * hr - 1, a = fabsf(u);
                        dh += -o->lambda * beta * powf(a, beta - 1) * (u > 0 ? 2.0f : u < 0 ? -2.0f : 0.0f);
                    }
                    G[i] = dh * (ZETA - GAMMA) * sg * (1 - sg);
                }
                m1[i] = b1 * m1[i] + (1 - b1) * G[i];
                m2[i] = b2 * m2[i] + (1 - b2) * G[i] * G[i];
                V[i] -= o->lr * (m1[i] / bc1) / (sqrtf(m2[i] / bc2) + eps);
            }
    }
    for (int c = 0; c < g->OC; c++)
        for (int k = 0; k < g->Kg; k++) {
            size_t i = (size_t)c * g->Kg + k;
            int32_t v = zp[c] + (int32_t)fl[i] + (rect_sigmoid(V[i]) >= 0.5f ? 1 : 0);
            q[i] = v < qmin ? qmin : v > qmax ? qmax : v;
            Wq[i] = (float)(q[i] - zp[c]) * sc[c];
        }
    *mse_a = mse_of(g, Wq, E, 256);
    if (*mse_a > *mse_n) { /* the learned rounding lost to nearest on its own data: keep nearest */
        memcpy(q, qn, nw * sizeof *q);
        *mse_a = *mse_n;
        *kept = 1;
    }
done:
    free(V);
    free(fl);
    free(Wq);
    free(G);
    free(m1);
    free(m2);
    free(Ab);
    free(Tb);
    free(E);
    return rc;
}

/* Writes the grid values (q - zp) * s into the float weights (through the
 * BN factor) and checks the quantizer's rounding gives q back. */
static int write_back(qat_qmodel *qm, const qat_qunit *un, const float *sc, const int32_t *zp, int32_t qmin,
                      int32_t qmax, const int32_t *q, int OC, int per)
{
    qat_model *m = qat_qmodel_float(qm);
    qat_layer *l = qat_model_layer(m, un->head);
    const qat_layer *bn = un->bn >= 0 ? qat_model_layer_c(m, un->bn) : NULL;
    long bad = 0;
    for (int c = 0; c < OC; c++) {
        float sf = bn ? bn->weight->data[c] * (1.0f / sqrtf(bn->running_var->data[c] + bn->bn_eps)) : 1.0f;
        float inv = 1.0f / sc[c];
        for (int k = 0; k < per; k++) {
            size_t i = (size_t)c * per + k;
            float target = (float)(q[i] - zp[c]) * sc[c];
            float w = bn ? target / sf : target;
            for (int tries = 0; tries < 16; tries++) {
                float wf = bn ? w * sf : w;
                int32_t v = zp[c] + (int32_t)nearbyintf(wf * inv);
                v = v < qmin ? qmin : v > qmax ? qmax : v;
                if (v == q[i]) break;
                w = nextafterf(w, (v < q[i]) == (sf > 0) ? INFINITY : -INFINITY);
                if (tries == 15) bad++;
            }
            l->weight->data[i] = w;
        }
    }
    if (bad) return qat_error(QAT_ERR_STATE, "adaround: unit '%s': %ld weights do not round back to their grid value", un->name, bad);
    return QAT_OK;
}

static int eligible(const qat_qunit *un)
{
    return un->kind == QAT_UNIT_CONV && un->cfg.quantize && !un->cfg.float_format &&
           un->weight.kind == QAT_WEIGHT_UNIFORM && un->weight.scheme.bits >= 2 && un->weight.scheme.bits <= 8;
}

static int setup(qat_qmodel *qm, const qat_qunit *un, const qat_tensor *x, ar_layer *g)
{
    const qat_model *m = qat_qmodel_float(qm);
    const qat_layer *l = qat_model_layer_c(m, un->head), *in = qat_model_layer_c(m, l->inputs[0]);
    memset(g, 0, sizeof *g);
    g->is_conv = l->type == QAT_LAYER_CONV2D;
    g->OC = l->out_ch;
    g->groups = 1;
    if (g->is_conv && l->groups > 1) g->groups = l->groups;
    if (g->is_conv) {
        g->C = in->out_shape[0];
        g->H = in->out_shape[1];
        g->W = in->out_shape[2];
        g->K = l->kernel;
        g->stride = l->stride;
        g->pad = l->pad;
        g->OH = l->out_shape[1];
        g->OW = l->out_shape[2];
        g->Kfull = g->C * g->K * g->K;
    } else {
        g->C = l->in_ch;
        g->OH = g->OW = 1;
        g->Kfull = l->in_ch;
    }
    g->Kg = g->Kfull / g->groups;
    g->OCg = g->OC / g->groups;
    (void)x;
    return QAT_OK;
}

int qat_adaround(qat_qmodel *qm, const qat_model_snapshot *ref, const qat_tensor *x, const qat_adaround_opts *opts,
                 qat_adaround_report *rep)
{
    if (!qm || !x || x->ndim != 4 || x->shape[0] < 1) return qat_error(QAT_ERR_ARG, "adaround: needs a qmodel and images [N,C,H,W]");
    qat_adaround_opts o = opts ? *opts : qat_adaround_opts_defaults();
    if (o.iters < 1 || o.batch_rows < 1 || o.max_rows < 1 || !(o.lr > 0) || o.beta_start < o.beta_end || o.warmup < 0 ||
        o.warmup > 1)
        return qat_error(QAT_ERR_ARG, "adaround: bad options (iters, batch_rows, max_rows >= 1, lr > 0, beta_start >= beta_end, warmup in [0,1])");
    if (rep) rep->n = 0;
    qat_model *m = qat_qmodel_float(qm);
    qat_ctx *ctx = qat_ctx_create(0);
    if (!ctx) return qat_error(QAT_ERR_NOMEM, "adaround: out of memory");
    qat_ctx_set_training(ctx, 0);
    qat_ctx_set_grad(ctx, 0);
    qat_eval_mode mode = qat_qmodel_eval_mode(qm);
    qat_qmodel_set_eval_mode(qm, QAT_EVAL_FLOAT32_GRAPH);
    int rc = QAT_OK, N = x->shape[0];
    for (int u = 0; u < qat_qmodel_num_units(qm) && !rc; u++) {
        qat_qunit *un = qat_qmodel_unit(qm, u);
        if (!eligible(un)) continue;
        if (!un->weight.initialized) {
            rc = qat_error(QAT_ERR_STATE, "adaround: unit '%s' is not calibrated (qat_qmodel_finalize first)", un->name);
            break;
        }
        double t0 = now_s();
        ar_layer g;
        setup(qm, un, x, &g);
        long P = (long)N * g.OH * g.OW;
        g.rows = P < o.max_rows ? (int)P : o.max_rows;
        g.index = malloc((size_t)P * sizeof *g.index);
        g.A = malloc((size_t)g.rows * g.Kfull * sizeof *g.A);
        g.T = malloc((size_t)g.rows * g.OC * sizeof *g.T);
        size_t nw = (size_t)g.OC * g.Kg;
        int32_t *q = malloc(nw * sizeof *q), *qn = malloc(nw * sizeof *qn), *zp = malloc((size_t)g.OC * sizeof *zp);
        float *sc = malloc((size_t)g.OC * sizeof *sc), *wf = malloc(nw * sizeof *wf), *bf = calloc((size_t)g.OC, sizeof *bf);
        if (!g.index || !g.A || !g.T || !q || !qn || !zp || !sc || !wf || !bf) rc = qat_error(QAT_ERR_NOMEM, "adaround: out of memory");
        if (!rc) {
            /* the rows: a seeded sample of the output pixels */
            qat_rng r;
            qat_rng_seed(&r, o.seed * 1000003u + (uint64_t)u);
            for (long i = 0; i < P; i++) g.index[i] = i;
            for (long i = 0; i < g.rows && g.rows < P; i++) {
                long j = i + (long)qat_rng_below(&r, (uint32_t)(P - i));
                long t = g.index[i];
                g.index[i] = g.index[j];
                g.index[j] = t;
            }
            qsort(g.index, (size_t)g.rows, sizeof *g.index, cmp_long);
            /* folded weights, bias and the quantizer's scales (per output channel) */
            qat_tensor *w = NULL, *b = NULL;
            const float *s = NULL;
            int32_t *z = malloc((size_t)un->weight.n * sizeof *z);
            if (!z) rc = qat_error(QAT_ERR_NOMEM, "adaround: out of memory");
            if (!rc) rc = qat_qunit_fold(ctx, qm, un, &w, &b);
            if (!rc && !(s = qat_channel_weight_scales(ctx, &un->weight, g.OC))) rc = QAT_ERR_NOMEM;
            if (!rc) {
                memcpy(wf, w->data, nw * sizeof *wf);
                if (b) memcpy(bf, b->data, (size_t)g.OC * sizeof *bf);
                qat_quantizer_zero_points(&un->weight, z);
                for (int c = 0; c < g.OC; c++) {
                    sc[c] = s[c];
                    zp[c] = un->weight.n == g.OC ? z[c] : z[0];
                }
            }
            free(z);
            qat_ctx_reset(ctx);
            if (!rc) rc = collect(ctx, qm, un, ref, x, bf, &g);
        }
        double mn = 0, ma = 0;
        int kept = 0;
        if (!rc)
            rc = optimize(&g, wf, sc, zp, un->weight.qmin, un->weight.qmax, &o, o.seed * 7919u + (uint64_t)u + 1, q, qn,
                          &mn, &ma, &kept);
        long flipped = 0;
        if (!rc) {
            for (size_t i = 0; i < nw; i++) flipped += q[i] != qn[i];
            rc = write_back(qm, un, sc, zp, un->weight.qmin, un->weight.qmax, q, g.OC, g.Kg);
        }
        double dt = now_s() - t0;
        if (!rc && o.verbose)
            fprintf(stderr, "adaround %-24s %7zu weights, %5d rows: output MSE nearest %.4g -> %.4g, %ld flipped%s (%.1f s)\n",
                    un->name, nw, g.rows, mn, ma, flipped, kept ? " (learned rounding was worse: nearest kept)" : "", dt);
        if (!rc && rep && rep->n < (int)(sizeof rep->layers / sizeof rep->layers[0])) {
            qat_adaround_layer *e = &rep->layers[rep->n++];
            snprintf(e->name, sizeof e->name, "%s", un->name);
            e->mse_nearest = mn;
            e->mse_adaround = ma;
            e->flipped = flipped;
            e->kept_nearest = kept;
            e->weights = (long)nw;
            e->seconds = dt;
        }
        free(g.index);
        free(g.A);
        free(g.T);
        free(q);
        free(qn);
        free(zp);
        free(sc);
        free(wf);
        free(bf);
        qat_ctx_reset(ctx);
    }
    qat_qmodel_set_eval_mode(qm, mode);
    qat_ctx_free(ctx);
    (void)m;
    return rc;
}
