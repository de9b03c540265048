/* tests/test_runtime.c: the integer-only runtime (include/qat/runtime.h).
 *
 * The test writes its own int8 model files with the HDF5 C API, following
 * docs/FORMAT-int8.md, and carries its own scalar implementation of every op
 * of that page (tm_forward, int64 arithmetic straight from the formulas),
 * so nothing here trusts the runtime's code:
 * - a tiny model whose logits are worked out by hand in the comments;
 * - every op type, the reference kernels and every fast ISA this CPU has,
 *   against tm_forward;
 * - every ISA bit-exact against the reference on random models: odd sizes,
 *   tails, strides, extreme weights/inputs/zero points, batches below and
 *   above the thread count, several thread counts;
 * - loading from memory == loading from the file; the u8 and float inputs;
 * - malformed files, each with its own message; argument errors. */
#include <check.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/runtime.h"
#include "testutil.h"

/* ---- an int8 model described in memory ---- */

enum { TM_MAX_OPS = 24 };

typedef struct {
    const char *type;
    char name[32];
    int n_in, in[4];
    int ndim, shape[3];
    float scale;
    int32_t zp;
    /* input */
    float mean, std;
    int8_t lut[256];
    /* conv2d / linear */
    int stride, pad;
    int32_t in_zp, act_min, act_max;
    int oc, ic, kh, kw;
    int8_t *w;
    int32_t *bias, *mult, *shift;
    /* add */
    int32_t amult[2], ashift, azp[2];
    /* pools */
    int kernel;
    int32_t pmult, pshift;
    /* format version 3: conv2d groups (0: attribute absent), per-channel
     * act_max (NULL: none), lut table, concat's per-input requantization,
     * upsample factor */
    int groups;
    int32_t *amc;
    int8_t table[256];
    int32_t cmult[4], cshift[4], czp[4];
    int up;
} tm_op;

typedef struct {
    int n;
    int vlen; /* variable-length strings instead of fixed */
    int version; /* format_version written (0: 1) */
    tm_op op[TM_MAX_OPS];
} tm_model;

static void tm_free(tm_model *M)
{
    for (int i = 0; i < M->n; i++) {
        free(M->op[i].w);
        free(M->op[i].bias);
        free(M->op[i].mult);
        free(M->op[i].shift);
        free(M->op[i].amc);
    }
    memset(M, 0, sizeof *M);
}

static size_t tm_size(const tm_op *o)
{
    return (size_t)o->shape[0] * (o->ndim == 3 ? (size_t)o->shape[1] * o->shape[2] : 1);
}

static int32_t rnd_int(qat_rng *r, int32_t lo, int32_t hi) /* [lo, hi] */
{
    return lo + (int32_t)qat_rng_below(r, (uint32_t)(hi - lo + 1));
}

/* real multiplier -> (m in [2^30, 2^31), shift) as docs/FORMAT-int8.md */
static void to_mult(double real, int32_t *m, int32_t *s)
{
    int e;
    double f = frexp(real, &e);
    long long q = llround(f * 2147483648.0);
    if (q == (1LL << 31)) {
        q /= 2;
        e++;
    }
    if (e < -31) {
        q = 0;
        e = 0;
    }
    if (e > 30) {
        e = 30;
        q = (1LL << 31) - 1;
    }
    *m = (int32_t)q;
    *s = e;
}

static tm_op *tm_add_op(tm_model *M, const char *type, const char *name)
{
    ck_assert_int_lt(M->n, TM_MAX_OPS);
    tm_op *o = &M->op[M->n++];
    memset(o, 0, sizeof *o);
    o->type = type;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->scale = 0.05f;
    return o;
}

/* the input formula: x = (p/255 - mean)/std, q = clamp(zp + rne(x * 1/scale)) */
static void tm_input_lut(tm_op *o)
{
    const float inv = 1.0f / o->scale;
    for (int p = 0; p < 256; p++) {
        float x = ((float)p / 255.0f - o->mean) / o->std;
        float q = rintf(x * inv) + (float)o->zp;
        o->lut[p] = (int8_t)(q < (float)o->act_min ? o->act_min : q > (float)o->act_max ? o->act_max : q);
    }
}

static int tm_input(tm_model *M, int ndim, int c, int h, int w, int32_t zp)
{
    tm_op *o = tm_add_op(M, "input", "input");
    o->ndim = ndim;
    o->shape[0] = c;
    o->shape[1] = h;
    o->shape[2] = w;
    o->zp = zp;
    o->scale = 1.0f / 64;
    o->mean = 0.25f;
    o->std = 0.5f;
    o->act_min = -128;
    o->act_max = 127;
    tm_input_lut(o);
    return M->n - 1;
}

/* Random conv2d / linear parameters. mode 0: typical, 1: extreme (weights
 * -128/127 only, large biases, clamped multipliers), 2: real multipliers
 * around 1 (shifts -2..3, so 31 - shift crosses 32) with small weights. */
static void tm_params(tm_op *o, int K, int mode, qat_rng *r)
{
    const int OC = o->oc;
    o->w = malloc((size_t)OC * K);
    o->bias = malloc(OC * sizeof(int32_t));
    o->mult = malloc(OC * sizeof(int32_t));
    o->shift = malloc(OC * sizeof(int32_t));
    for (int i = 0; i < OC * K; i++)
        o->w[i] = mode == 1   ? (qat_rng_below(r, 2) ? 127 : -128)
                  : mode == 2 ? (int8_t)rnd_int(r, -2, 2)
                              : (int8_t)rnd_int(r, -127, 127);
    for (int c = 0; c < OC; c++) {
        o->bias[c] = mode == 1 ? rnd_int(r, -2000000, 2000000)
                     : mode == 2 ? rnd_int(r, -40, 40)
                                 : rnd_int(r, -20000, 20000);
        double target = 40.0 / (sqrt((double)K) * 73.0 * 75.0) * pow(2.0, 3.0 * qat_rng_uniform(r) - 1.5);
        if (mode == 2) target = pow(2.0, 5.0 * qat_rng_uniform(r) - 2.0) / (double)K;
        to_mult(target, &o->mult[c], &o->shift[c]);
        uint32_t pick = qat_rng_below(r, 16);
        if (pick == 0) o->mult[c] = 0, o->shift[c] = rnd_int(r, -31, 30);
        if (pick == 1) o->mult[c] = (int32_t)((1u << 31) - 1), o->shift[c] = 30;
        if (pick == 2) o->mult[c] = 1 << 30, o->shift[c] = -31;
        if (pick == 3) o->shift[c] = rnd_int(r, -31, 30);
    }
    o->zp = mode == 1 ? (qat_rng_below(r, 2) ? 127 : -128) : rnd_int(r, -128, 127);
    uint32_t act = qat_rng_below(r, 3);
    o->act_min = act == 1 ? o->zp : -128;
    o->act_max = 127;
    if (act == 2) {
        o->act_min = rnd_int(r, -128, 0);
        o->act_max = rnd_int(r, o->act_min, 127);
    }
}

static int tm_conv(tm_model *M, int in, int OC, int KH, int KW, int stride, int pad, int mode,
                   qat_rng *r)
{
    const tm_op *x = &M->op[in];
    char nm[32];
    snprintf(nm, sizeof nm, "conv%d", M->n);
    tm_op *o = tm_add_op(M, "conv2d", nm);
    o->n_in = 1;
    o->in[0] = in;
    o->oc = OC;
    o->ic = x->shape[0];
    o->kh = KH;
    o->kw = KW;
    o->stride = stride;
    o->pad = pad;
    o->in_zp = x->zp;
    o->ndim = 3;
    o->shape[0] = OC;
    o->shape[1] = (x->shape[1] + 2 * pad - KH) / stride + 1;
    o->shape[2] = (x->shape[2] + 2 * pad - KW) / stride + 1;
    tm_params(o, o->ic * KH * KW, mode, r);
    return M->n - 1;
}

/* a grouped conv (groups > 1: attribute groups), weight [OC, C/groups, KH, KW] */
static int tm_conv_g(tm_model *M, int in, int OC, int K, int stride, int pad, int groups, int mode,
                     qat_rng *r)
{
    const tm_op *x = &M->op[in];
    char nm[32];
    snprintf(nm, sizeof nm, "gconv%d", M->n);
    tm_op *o = tm_add_op(M, "conv2d", nm);
    o->n_in = 1;
    o->in[0] = in;
    o->oc = OC;
    o->ic = x->shape[0];
    o->kh = o->kw = K;
    o->stride = stride;
    o->pad = pad;
    o->groups = groups;
    o->in_zp = x->zp;
    o->ndim = 3;
    o->shape[0] = OC;
    o->shape[1] = (x->shape[1] + 2 * pad - K) / stride + 1;
    o->shape[2] = (x->shape[2] + 2 * pad - K) / stride + 1;
    tm_params(o, o->ic / groups * K * K, mode, r);
    M->version = 3;
    return M->n - 1;
}

static int tm_linear(tm_model *M, int in, int OUT, int mode, qat_rng *r)
{
    const tm_op *x = &M->op[in];
    char nm[32];
    snprintf(nm, sizeof nm, "fc%d", M->n);
    tm_op *o = tm_add_op(M, "linear", nm);
    o->n_in = 1;
    o->in[0] = in;
    o->oc = OUT;
    o->ic = (int)tm_size(x);
    o->kh = o->kw = 1;
    o->in_zp = x->zp;
    o->ndim = 1;
    o->shape[0] = OUT;
    tm_params(o, o->ic, mode, r);
    return M->n - 1;
}

static int tm_simple(tm_model *M, const char *type, int in)
{
    const tm_op *x = &M->op[in];
    char nm[32];
    snprintf(nm, sizeof nm, "%s%d", type, M->n);
    tm_op *o = tm_add_op(M, type, nm);
    o->n_in = 1;
    o->in[0] = in;
    o->zp = x->zp;
    o->scale = x->scale;
    o->in_zp = x->zp;
    o->ndim = x->ndim;
    memcpy(o->shape, x->shape, sizeof o->shape);
    return M->n - 1;
}

static int tm_relu(tm_model *M, int in)
{
    return tm_simple(M, "relu", in);
}

static int tm_flatten(tm_model *M, int in)
{
    int i = tm_simple(M, "flatten", in);
    tm_op *o = &M->op[i];
    o->shape[0] = (int)tm_size(&M->op[in]);
    o->shape[1] = o->shape[2] = 0;
    o->ndim = 1;
    return i;
}

/* per-channel act_max on conv / linear op i (a CLE clamp): bounds in
 * [act_min, 127], some at the extremes */
static void tm_set_amc(tm_model *M, int i, qat_rng *r)
{
    tm_op *o = &M->op[i];
    o->amc = malloc((size_t)o->oc * sizeof(int32_t));
    for (int c = 0; c < o->oc; c++) {
        uint32_t pick = qat_rng_below(r, 4);
        o->amc[c] = pick == 0 ? o->act_min : pick == 1 ? 127 : rnd_int(r, o->act_min, 127);
    }
    M->version = 3;
}

static int tm_lut(tm_model *M, int in, qat_rng *r)
{
    int i = tm_simple(M, "lut", in);
    tm_op *o = &M->op[i];
    for (int k = 0; k < 256; k++) o->table[k] = (int8_t)rnd_int(r, -128, 127);
    o->zp = rnd_int(r, -128, 127);
    M->version = 3;
    return i;
}

/* concat of k inputs: input j requantized with a ratio in [1/4, 2], or
 * (identity) on the output's grid */
static int tm_concat(tm_model *M, const int *ins, int k, qat_rng *r)
{
    int i = tm_simple(M, "concat", ins[0]);
    tm_op *o = &M->op[i];
    o->n_in = k;
    o->zp = rnd_int(r, -128, 127);
    o->shape[0] = 0;
    for (int j = 0; j < k; j++) {
        o->in[j] = ins[j];
        o->shape[0] += M->op[ins[j]].shape[0];
        o->czp[j] = M->op[ins[j]].zp;
        if (qat_rng_below(r, 3) == 0) {
            o->cmult[j] = 1 << 30, o->cshift[j] = 1;
            o->czp[j] = o->zp;
        } else {
            to_mult(pow(2.0, 3.0 * qat_rng_uniform(r) - 2.0), &o->cmult[j], &o->cshift[j]);
        }
    }
    o->act_min = qat_rng_below(r, 3) ? -128 : o->zp;
    o->act_max = 127;
    M->version = 3;
    return i;
}

static int tm_upsample(tm_model *M, int in, int f)
{
    int i = tm_simple(M, "upsample", in);
    tm_op *o = &M->op[i];
    o->up = f;
    o->shape[1] *= f;
    o->shape[2] *= f;
    M->version = 3;
    return i;
}

static int tm_pool(tm_model *M, const char *type, int in, int k, int s, qat_rng *r)
{
    int i = tm_simple(M, type, in);
    tm_op *o = &M->op[i];
    const tm_op *x = &M->op[in];
    o->kernel = k;
    o->stride = s;
    if (!strcmp(type, "global_avgpool")) {
        o->ndim = 1;
        o->shape[1] = o->shape[2] = 0;
        k = x->shape[1];
        s = 1;
        to_mult(1.0 / (x->shape[1] * x->shape[2]) * pow(2.0, 2.0 * qat_rng_uniform(r) - 1.0),
                &o->pmult, &o->pshift);
    } else {
        o->shape[1] = (x->shape[1] - k) / s + 1;
        o->shape[2] = (x->shape[2] - k) / s + 1;
        to_mult(1.0 / (k * k) * pow(2.0, 2.0 * qat_rng_uniform(r) - 1.0), &o->pmult, &o->pshift);
    }
    if (strcmp(type, "maxpool2d")) {
        o->zp = rnd_int(r, -128, 127);
        o->scale = 0.07f;
        o->act_min = -128; /* the output quantizer's range (8 bits) */
        o->act_max = 127;
    }
    return i;
}

static int tm_addop(tm_model *M, int a, int b, qat_rng *r)
{
    int i = tm_simple(M, "add", a);
    tm_op *o = &M->op[i];
    o->n_in = 2;
    o->in[1] = b;
    o->azp[0] = M->op[a].zp;
    o->azp[1] = M->op[b].zp;
    /* shifts across the fast kernels' cases (<= 16, 17..40, >= 41), ratios
     * m * 2^-t mostly in [1/4, 1], sometimes 2^31 - 1 (the split's edge) */
    o->ashift = rnd_int(r, 20, 31);
    for (int k = 0; k < 2; k++) {
        const int64_t top = (1LL << o->ashift) - 1 > INT32_MAX ? INT32_MAX : (1LL << o->ashift) - 1;
        o->amult[k] = rnd_int(r, (int32_t)(top / 4), (int32_t)top);
        if (qat_rng_below(r, 8) == 0) o->amult[k] = INT32_MAX;
    }
    uint32_t pick = qat_rng_below(r, 6);
    if (pick == 0) o->ashift = rnd_int(r, 1, 16);
    if (pick == 1) o->ashift = rnd_int(r, 32, 62);
    o->zp = rnd_int(r, -128, 127);
    o->scale = 0.09f;
    o->act_min = qat_rng_below(r, 2) ? o->zp : -128;
    o->act_max = 127;
    return i;
}

/* ---- the test's own implementation of docs/FORMAT-int8.md ---- */

static int64_t t_requant(int64_t acc, int32_t m, int32_t s)
{
    if (m == 0) return 0;
    const int t = 31 - s;
    return (acc * m + ((int64_t)1 << (t - 1))) >> t;
}

static int8_t t_clamp(int64_t v, int64_t lo, int64_t hi)
{
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* outs[i]: op i's output [n, size] (malloc'd); x: op 0's output */
static void tm_forward(const tm_model *M, const int8_t *x, int n, int8_t **outs)
{
    for (int i = 0; i < M->n; i++) {
        const tm_op *o = &M->op[i];
        const size_t osz = tm_size(o);
        int8_t *y = outs[i] = malloc((size_t)n * osz + 1);
        if (i == 0) {
            memcpy(y, x, (size_t)n * osz);
            continue;
        }
        const tm_op *a = &M->op[o->in[0]];
        const size_t isz = tm_size(a);
        const int8_t *xa = outs[o->in[0]];
        for (int b = 0; b < n; b++) {
            const int8_t *xi = xa + (size_t)b * isz;
            int8_t *yi = y + (size_t)b * osz;
            if (!strcmp(o->type, "conv2d")) {
                const int C = a->shape[0], H = a->shape[1], W = a->shape[2];
                const int G = o->groups > 1 ? o->groups : 1, CG = C / G, OCG = o->oc / G;
                for (int oc = 0; oc < o->oc; oc++)
                    for (int oh = 0; oh < o->shape[1]; oh++)
                        for (int ow = 0; ow < o->shape[2]; ow++) {
                            int64_t acc = o->bias[oc];
                            for (int icg = 0; icg < CG; icg++)
                                for (int kh = 0; kh < o->kh; kh++)
                                    for (int kw = 0; kw < o->kw; kw++) {
                                        int ih = oh * o->stride - o->pad + kh;
                                        int iw = ow * o->stride - o->pad + kw;
                                        int ic = oc / OCG * CG + icg;
                                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                        acc += (int64_t)o->w[((oc * CG + icg) * o->kh + kh) * o->kw + kw] *
                                               (xi[(ic * H + ih) * W + iw] - o->in_zp);
                                    }
                            yi[(oc * o->shape[1] + oh) * o->shape[2] + ow] =
                                t_clamp(t_requant(acc, o->mult[oc], o->shift[oc]) + o->zp,
                                        o->act_min, o->amc ? o->amc[oc] : o->act_max);
                        }
            } else if (!strcmp(o->type, "linear")) {
                for (int j = 0; j < o->oc; j++) {
                    int64_t acc = o->bias[j];
                    for (int k = 0; k < o->ic; k++)
                        acc += (int64_t)o->w[j * o->ic + k] * (xi[k] - o->in_zp);
                    yi[j] = t_clamp(t_requant(acc, o->mult[j], o->shift[j]) + o->zp, o->act_min,
                                    o->amc ? o->amc[j] : o->act_max);
                }
            } else if (!strcmp(o->type, "add")) {
                const int8_t *xb = outs[o->in[1]] + (size_t)b * isz;
                for (size_t k = 0; k < osz; k++) {
                    int64_t v = (int64_t)(xi[k] - o->azp[0]) * o->amult[0] +
                                (int64_t)(xb[k] - o->azp[1]) * o->amult[1];
                    yi[k] = t_clamp(((v + ((int64_t)1 << (o->ashift - 1))) >> o->ashift) + o->zp,
                                    o->act_min, o->act_max);
                }
            } else if (!strcmp(o->type, "global_avgpool")) {
                const int hw = a->shape[1] * a->shape[2];
                for (int c = 0; c < a->shape[0]; c++) {
                    int64_t acc = 0;
                    for (int p = 0; p < hw; p++) acc += xi[c * hw + p] - o->in_zp;
                    yi[c] = t_clamp(t_requant(acc, o->pmult, o->pshift) + o->zp, o->act_min, o->act_max);
                }
            } else if (!strcmp(o->type, "avgpool2d") || !strcmp(o->type, "maxpool2d")) {
                const int mx = !strcmp(o->type, "maxpool2d");
                const int H = a->shape[1], W = a->shape[2], OH = o->shape[1], OW = o->shape[2];
                for (int c = 0; c < a->shape[0]; c++)
                    for (int oh = 0; oh < OH; oh++)
                        for (int ow = 0; ow < OW; ow++) {
                            int64_t acc = 0, best = -1000;
                            for (int kh = 0; kh < o->kernel; kh++)
                                for (int kw = 0; kw < o->kernel; kw++) {
                                    int v = xi[(c * H + oh * o->stride + kh) * W + ow * o->stride + kw];
                                    acc += v - o->in_zp;
                                    if (v > best) best = v;
                                }
                            yi[(c * OH + oh) * OW + ow] =
                                mx ? (int8_t)best
                                   : t_clamp(t_requant(acc, o->pmult, o->pshift) + o->zp, o->act_min,
                                             o->act_max);
                        }
            } else if (!strcmp(o->type, "relu")) {
                for (size_t k = 0; k < osz; k++) yi[k] = xi[k] > o->zp ? xi[k] : (int8_t)o->zp;
            } else if (!strcmp(o->type, "flatten")) {
                memcpy(yi, xi, osz);
            } else if (!strcmp(o->type, "lut")) {
                for (size_t k = 0; k < osz; k++) yi[k] = o->table[xi[k] + 128];
            } else if (!strcmp(o->type, "upsample")) {
                const int H = a->shape[1], W = a->shape[2], f = o->up;
                for (int c = 0; c < a->shape[0]; c++)
                    for (int h = 0; h < H * f; h++)
                        for (int w = 0; w < W * f; w++)
                            yi[((size_t)c * H * f + h) * W * f + w] = xi[((size_t)c * H + h / f) * W + w / f];
            } else if (!strcmp(o->type, "concat")) {
                size_t off = 0;
                for (int j = 0; j < o->n_in; j++) {
                    const size_t nj = tm_size(&M->op[o->in[j]]);
                    const int8_t *xj = outs[o->in[j]] + (size_t)b * nj;
                    for (size_t k = 0; k < nj; k++)
                        yi[off + k] = t_clamp(t_requant(xj[k] - o->czp[j], o->cmult[j], o->cshift[j]) + o->zp,
                                              o->act_min, o->act_max);
                    off += nj;
                }
            } else {
                ck_abort_msg("tm_forward: unknown op %s", o->type);
            }
        }
    }
}

static void tm_forward_free(const tm_model *M, int8_t **outs)
{
    for (int i = 0; i < M->n; i++) free(outs[i]);
}

/* ---- writing the file (HDF5 C API) ---- */

/* vlen: variable-length UTF-8 (what the exporter writes), else fixed ASCII */
static void wr_str(hid_t o, const char *name, const char *v, int vlen)
{
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    if (vlen) {
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
    } else {
        H5Tset_size(t, strlen(v) + 1);
    }
    hid_t a = H5Acreate2(o, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    if (vlen) H5Awrite(a, t, &v);
    else H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void wr_i32s(hid_t o, const char *name, const int32_t *v, int n, int scalar)
{
    if (H5Aexists(o, name) > 0) H5Adelete(o, name);
    hsize_t d = (hsize_t)n;
    hid_t s = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(o, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    if (n) H5Awrite(a, H5T_NATIVE_INT32, v);
    H5Aclose(a);
    H5Sclose(s);
}

static void wr_i32(hid_t o, const char *name, int32_t v)
{
    wr_i32s(o, name, &v, 1, 1);
}

static void wr_f32(hid_t o, const char *name, float v)
{
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_FLOAT, &v);
    H5Aclose(a);
    H5Sclose(s);
}

static void wr_dset(hid_t g, const char *name, hid_t ftype, hid_t mtype, int rank,
                    const hsize_t *dims, const void *data)
{
    if (H5Lexists(g, name, H5P_DEFAULT) > 0) H5Ldelete(g, name, H5P_DEFAULT);
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(g, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(s);
}

static void tm_write(const tm_model *M, const char *path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    wr_str(f, "qat_format", "int8-model", M->vlen);
    wr_i32(f, "format_version", M->version ? M->version : 1);
    wr_str(f, "arch", "custom", M->vlen);
    wr_i32(f, "num_ops", M->n);
    wr_str(f, "source", "test_runtime.c", M->vlen);
    hid_t ops = H5Gcreate2(f, "ops", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < M->n; i++) {
        const tm_op *o = &M->op[i];
        char nm[16];
        snprintf(nm, sizeof nm, "%03d", i);
        hid_t g = H5Gcreate2(ops, nm, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        wr_str(g, "type", o->type, M->vlen);
        wr_str(g, "name", o->name, M->vlen);
        wr_i32s(g, "inputs", o->in, o->n_in, 0);
        wr_i32s(g, "out_shape", o->shape, o->ndim, 0);
        wr_f32(g, "out_scale", o->scale);
        wr_i32(g, "out_zero_point", o->zp);
        if (!strcmp(o->type, "input")) {
            wr_f32(g, "mean", o->mean);
            wr_f32(g, "std", o->std);
            wr_i32(g, "act_min", o->act_min);
            wr_i32(g, "act_max", o->act_max);
            hsize_t d = 256;
            wr_dset(g, "lut", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d, o->lut);
        } else if (!strcmp(o->type, "conv2d") || !strcmp(o->type, "linear")) {
            const int conv = !strcmp(o->type, "conv2d");
            if (conv) {
                wr_i32(g, "stride", o->stride);
                wr_i32(g, "pad", o->pad);
            }
            wr_i32(g, "in_zero_point", o->in_zp);
            wr_i32(g, "act_min", o->act_min);
            wr_i32(g, "act_max", o->act_max);
            if (o->groups) wr_i32(g, "groups", o->groups);
            const int G = o->groups > 1 ? o->groups : 1;
            hsize_t wd[4] = {(hsize_t)o->oc, (hsize_t)(o->ic / G), (hsize_t)o->kh, (hsize_t)o->kw};
            wr_dset(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, conv ? 4 : 2, wd, o->w);
            hsize_t od = (hsize_t)o->oc;
            wr_dset(g, "bias", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, o->bias);
            wr_dset(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, o->mult);
            wr_dset(g, "shift", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, o->shift);
            float *ws = malloc(o->oc * sizeof(float));
            for (int c = 0; c < o->oc; c++) ws[c] = 0.01f;
            wr_dset(g, "weight_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &od, ws);
            free(ws);
            if (o->amc) wr_dset(g, "act_max_channel", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, o->amc);
        } else if (!strcmp(o->type, "add")) {
            wr_i32s(g, "multiplier", o->amult, 2, 0);
            wr_i32(g, "add_shift", o->ashift);
            wr_i32s(g, "in_zero_point", o->azp, 2, 0);
            wr_i32(g, "act_min", o->act_min);
            wr_i32(g, "act_max", o->act_max);
        } else if (!strcmp(o->type, "global_avgpool") || !strcmp(o->type, "avgpool2d")) {
            if (o->type[0] == 'a') {
                wr_i32(g, "kernel", o->kernel);
                wr_i32(g, "stride", o->stride);
            }
            wr_i32(g, "in_zero_point", o->in_zp);
            wr_i32(g, "multiplier", o->pmult);
            wr_i32(g, "shift", o->pshift);
            wr_i32(g, "act_min", o->act_min);
            wr_i32(g, "act_max", o->act_max);
        } else if (!strcmp(o->type, "maxpool2d")) {
            wr_i32(g, "kernel", o->kernel);
            wr_i32(g, "stride", o->stride);
        } else if (!strcmp(o->type, "lut")) {
            hsize_t d = 256;
            wr_dset(g, "table", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d, o->table);
        } else if (!strcmp(o->type, "upsample")) {
            wr_i32(g, "scale", o->up);
        } else if (!strcmp(o->type, "concat")) {
            wr_i32s(g, "multiplier", o->cmult, o->n_in, 0);
            wr_i32s(g, "shift", o->cshift, o->n_in, 0);
            wr_i32s(g, "in_zero_point", o->czp, o->n_in, 0);
            wr_i32(g, "act_min", o->act_min);
            wr_i32(g, "act_max", o->act_max);
        }
        H5Gclose(g);
    }
    H5Gclose(ops);
    ck_assert_int_ge(H5Fclose(f), 0);
}

/* load the model from a fresh file (expects success) */
static qat_rt_model *tm_load(const tm_model *M, const char *fname)
{
    const char *path = tu_tmp_path(fname);
    tm_write(M, path);
    qat_rt_model *m = NULL;
    int st = qat_rt_load_file(path, &m);
    ck_assert_msg(st == QAT_OK, "load %s: %s", fname, qat_rt_last_error());
    return m;
}

static void rand_input(int8_t *x, size_t n, int extreme, qat_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = extreme ? (qat_rng_below(r, 2) ? 127 : -128) : (int8_t)rnd_int(r, -128, 127);
}

/* Runs m on x and checks every op's output against tm_forward. */
static void check_against_forward(qat_rt_model *m, const tm_model *M, const int8_t *x, int n,
                                  const char *what)
{
    int8_t *outs[TM_MAX_OPS];
    tm_forward(M, x, n, outs);
    const size_t nl = tm_size(&M->op[M->n - 1]);
    int8_t *logits = malloc((size_t)n * nl);
    ck_assert_msg(qat_rt_run_s8(m, x, n, logits) == QAT_OK, "%s: %s", what, qat_rt_last_error());
    for (int i = 0; i < M->n; i++) {
        const int8_t *got = qat_rt_op_output(m, i);
        ck_assert_ptr_nonnull(got);
        const size_t sz = (size_t)n * tm_size(&M->op[i]);
        for (size_t k = 0; k < sz; k++)
            if (got[k] != outs[i][k])
                ck_abort_msg("%s (%s): op %d (%s) element %zu: runtime %d, formula %d", what,
                             qat_rt_isa_name(qat_rt_get_isa(m)), i, M->op[i].type, k, got[k],
                             outs[i][k]);
    }
    ck_assert_mem_eq(logits, outs[M->n - 1], (size_t)n * nl);
    free(logits);
    tm_forward_free(M, outs);
}

/* Every ISA this CPU has (REF included), several batch sizes and thread
 * counts, against tm_forward. */
static void check_all_isas(const tm_model *M, int max_batch, int extreme, qat_rng *r,
                           const char *what)
{
    qat_rt_model *m = tm_load(M, "rand.h5");
    ck_assert_int_eq(qat_rt_prepare(m, max_batch), QAT_OK);
    const size_t isz = tm_size(&M->op[0]);
    int8_t *x = malloc((size_t)max_batch * isz);
    const int batches[3] = {1, 2, max_batch};
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) {
            ck_assert_int_eq(qat_rt_set_isa(m, (qat_rt_isa)isa), QAT_ERR_UNSUPPORTED);
            continue;
        }
        ck_assert_int_eq(qat_rt_get_isa(m), isa);
        for (int b = 0; b < 3; b++)
            for (int th = 1; th <= 3; th += 2) {
                qat_rt_set_threads(m, th);
                rand_input(x, (size_t)batches[b] * isz, extreme, r);
                check_against_forward(m, M, x, batches[b], what);
            }
    }
    free(x);
    qat_rt_free(m);
}

/* ---- the hand-worked model ---- */

/* input (2,2,2) zp 3 -> conv2d 1x1 2->2 with fused ReLU (out zp -5)
 *   -> global_avgpool (out zp 2) -> linear 2->3 (out zp -10).
 * x (n = 1), channels [13 3 -7 23], [3 8 -2 3]; x - 3 = c0 [10 0 -10 20],
 * c1 [0 5 -5 0].
 * conv: weight [[1 2] [-3 4]], bias [11 60], m = 2^30 both, shifts [0 -1]
 *   (reals 0.5 and 0.25; requant rounds ties toward +inf):
 *   ch0 acc = 11 + c0 + 2 c1 = [21 21 -9 31] -> * 0.5 = 10.5 11 -4.5 15.5
 *       -> [11 11 -4 16] -> + (-5) = [6 6 -9 11] -> ReLU clamp at -5: [6 6 -5 11]
 *   ch1 acc = 60 - 3 c0 + 4 c1 = [30 80 70 0] -> * 0.25 = 7.5 20 17.5 0
 *       -> [8 20 18 0] -> + (-5) = [3 15 13 -5]
 * global_avgpool: in zp -5, m = 2^30, shift -1 (0.25 = 1/4 pixels):
 *   ch0 sum(y + 5) = 11 + 11 + 0 + 16 = 38 -> 9.5 -> 10 -> + 2 = 12
 *   ch1 sum(y + 5) = 8 + 20 + 18 + 0 = 46 -> 11.5 -> 12 -> + 2 = 14
 * linear: in zp 2, x - 2 = [10 12], weight [[1 -1] [2 3] [-4 0]],
 *   bias [5 -100 7], m [2^30, 1518500250, 0], shift [2 0 0]:
 *   o0 acc = 5 + 10 - 12 = 3, real 2^30 * 2^(2-31) = 2: 6 -> + (-10) = -4
 *   o1 acc = -100 + 20 + 36 = -44, real 1518500250 / 2^31 = 0.70710678:
 *       -31.11 -> -31 -> -41
 *   o2 m = 0: 0 -> -10
 * logits [-4 -41 -10]. */
static void hand_model(tm_model *M)
{
    memset(M, 0, sizeof *M);
    tm_input(M, 3, 2, 2, 2, 3);
    tm_op *c = tm_add_op(M, "conv2d", "conv");
    c->n_in = 1;
    c->ndim = 3;
    c->shape[0] = c->shape[1] = c->shape[2] = 2;
    c->oc = c->ic = 2;
    c->kh = c->kw = 1;
    c->stride = 1;
    c->in_zp = 3;
    c->zp = -5;
    c->scale = 0.2f;
    c->act_min = -5;
    c->act_max = 127;
    c->w = malloc(4);
    c->bias = malloc(8);
    c->mult = malloc(8);
    c->shift = malloc(8);
    const int8_t cw[4] = {1, 2, -3, 4};
    memcpy(c->w, cw, 4);
    c->bias[0] = 11, c->bias[1] = 60;
    c->mult[0] = c->mult[1] = 1 << 30;
    c->shift[0] = 0, c->shift[1] = -1;

    tm_op *g = tm_add_op(M, "global_avgpool", "gap");
    g->n_in = 1;
    g->in[0] = 1;
    g->ndim = 1;
    g->shape[0] = 2;
    g->in_zp = -5;
    g->zp = 2;
    g->scale = 0.3f;
    g->pmult = 1 << 30;
    g->pshift = -1;
    g->act_min = -128;
    g->act_max = 127;

    tm_op *l = tm_add_op(M, "linear", "fc");
    l->n_in = 1;
    l->in[0] = 2;
    l->ndim = 1;
    l->shape[0] = 3;
    l->oc = 3;
    l->ic = 2;
    l->kh = l->kw = 1;
    l->in_zp = 2;
    l->zp = -10;
    l->scale = 0.4f;
    l->act_min = -128;
    l->act_max = 127;
    l->w = malloc(6);
    l->bias = malloc(12);
    l->mult = malloc(12);
    l->shift = malloc(12);
    const int8_t lw[6] = {1, -1, 2, 3, -4, 0};
    memcpy(l->w, lw, 6);
    l->bias[0] = 5, l->bias[1] = -100, l->bias[2] = 7;
    l->mult[0] = 1 << 30, l->mult[1] = 1518500250, l->mult[2] = 0;
    l->shift[0] = 2, l->shift[1] = 0, l->shift[2] = 0;
}

static const int8_t hand_x[8] = {13, 3, -7, 23, 3, 8, -2, 3};
static const int8_t hand_conv[8] = {6, 6, -5, 11, 3, 15, 13, -5};
static const int8_t hand_gap[2] = {12, 14};
static const int8_t hand_logits[3] = {-4, -41, -10};

START_TEST(test_hand_model)
{
    tm_model M;
    hand_model(&M);
    qat_rt_model *m = tm_load(&M, "hand.h5");
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue;
        ck_assert_int_eq(qat_rt_prepare(m, 3), QAT_OK);
        int8_t y[3] = {0, 0, 0};
        ck_assert_int_eq(qat_rt_run_s8(m, hand_x, 1, y), QAT_OK);
        ck_assert_mem_eq(qat_rt_op_output(m, 0), hand_x, 8);
        ck_assert_mem_eq(qat_rt_op_output(m, 1), hand_conv, 8);
        ck_assert_mem_eq(qat_rt_op_output(m, 2), hand_gap, 2);
        ck_assert_mem_eq(y, hand_logits, 3);
        /* the same image three times in a batch */
        int8_t x3[24], y3[9];
        for (int i = 0; i < 3; i++) memcpy(x3 + 8 * i, hand_x, 8);
        ck_assert_int_eq(qat_rt_run_s8(m, x3, 3, y3), QAT_OK);
        for (int i = 0; i < 3; i++) ck_assert_mem_eq(y3 + 3 * i, hand_logits, 3);
    }
    /* the test's own implementation agrees with the hand derivation */
    int8_t *outs[TM_MAX_OPS];
    tm_forward(&M, hand_x, 1, outs);
    ck_assert_mem_eq(outs[1], hand_conv, 8);
    ck_assert_mem_eq(outs[3], hand_logits, 3);
    tm_forward_free(&M, outs);
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

START_TEST(test_inspect)
{
    tm_model M;
    hand_model(&M);
    M.vlen = 1; /* variable-length strings read too */
    qat_rt_model *m = tm_load(&M, "hand_vlen.h5");
    ck_assert_int_eq(qat_rt_num_ops(m), 4);
    int shape[3];
    qat_rt_input_shape(m, shape);
    ck_assert_int_eq(shape[0], 2);
    ck_assert_int_eq(shape[1], 2);
    ck_assert_int_eq(shape[2], 2);
    ck_assert_int_eq(qat_rt_num_classes(m), 3);
    ck_assert_float_eq(qat_rt_output_scale(m), 0.4f);
    ck_assert_int_eq(qat_rt_output_zero_point(m), -10);
    qat_rt_op_info info;
    ck_assert_int_eq(qat_rt_op(m, 1, &info), QAT_OK);
    ck_assert_str_eq(info.type, "conv2d");
    ck_assert_str_eq(info.name, "conv");
    ck_assert_int_eq(info.n_inputs, 1);
    ck_assert_int_eq(info.inputs[0], 0);
    ck_assert_int_eq(info.out_ndim, 3);
    ck_assert_int_eq(info.out_shape[0], 2);
    ck_assert_float_eq(info.out_scale, 0.2f);
    ck_assert_int_eq(info.out_zero_point, -5);
    ck_assert_uint_eq(info.weight_bytes, 4 + 3 * 2 * 4); /* int8 weight + bias/mult/shift */
    ck_assert_int_eq(qat_rt_op(m, 3, &info), QAT_OK);
    ck_assert_str_eq(info.type, "linear");
    ck_assert_uint_eq(info.weight_bytes, 6 + 3 * 3 * 4);
    ck_assert_int_eq(qat_rt_op(m, 2, &info), QAT_OK);
    ck_assert_str_eq(info.type, "global_avgpool");
    ck_assert_int_eq(info.out_ndim, 1);
    ck_assert_int_eq(qat_rt_op(m, 0, &info), QAT_OK);
    ck_assert_str_eq(info.type, "input");
    ck_assert_int_eq(info.n_inputs, 0);
    ck_assert_int_eq(qat_rt_op(m, 4, &info), QAT_ERR_ARG);
    /* payload: lut 256 + conv (4 + 3*8 + weight_scale 8) + fc (6 + 3*12 + 12) */
    ck_assert_uint_eq(qat_rt_payload_bytes(m), 256 + 36 + 54);
    ck_assert_ptr_null(qat_rt_op_output(m, 1)); /* not prepared */
    /* dequantize: (q - (-10)) * 0.4 */
    const int8_t q[3] = {-4, -41, -10};
    float out[3];
    qat_rt_dequantize(m, q, 3, out);
    ck_assert_float_eq(out[0], 6.0f * 0.4f);
    ck_assert_float_eq(out[1], -31.0f * 0.4f);
    ck_assert_float_eq(out[2], 0.0f);
    ck_assert_str_eq(qat_rt_isa_name(QAT_RT_ISA_REF), "ref");
    ck_assert_str_eq(qat_rt_isa_name(QAT_RT_ISA_AVX512_VNNI), "avx512_vnni");
    ck_assert_int_eq(qat_rt_get_isa(m), qat_rt_best_isa());
    ck_assert_int_ne(qat_rt_best_isa(), QAT_RT_ISA_AUTO);
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

/* raw pixels through the LUT, float inputs through the input formula */
START_TEST(test_input_paths)
{
    tm_model M;
    hand_model(&M);
    /* input scale 1/64, zp 3 */
    qat_rt_model *m = tm_load(&M, "hand_in.h5");
    ck_assert_int_eq(qat_rt_prepare(m, 2), QAT_OK);
    uint8_t px[16];
    for (int i = 0; i < 16; i++) px[i] = (uint8_t)(i * 17);
    int8_t y[6];
    ck_assert_int_eq(qat_rt_run_u8(m, px, 2, y), QAT_OK);
    const int8_t *in = qat_rt_op_output(m, 0);
    for (int i = 0; i < 16; i++) ck_assert_int_eq(in[i], M.op[0].lut[px[i]]);
    /* x * 64 rounded half to even, + 3, clamped */
    const float xf[8] = {1.0f / 128,  3.0f / 128,  -1.0f / 128, -3.0f / 128,
                         100.0f,      -100.0f,      0.3f,         -0.6f};
    const int8_t want[8] = {3 + 0, 3 + 2, 3 + 0, 3 - 2, 127, -128, 3 + 19, 3 - 38};
    ck_assert_int_eq(qat_rt_run_f32(m, xf, 1, y), QAT_OK);
    ck_assert_mem_eq(qat_rt_op_output(m, 0), want, 8);
    /* a NaN is an error of the input */
    float xn[16];
    for (int i = 0; i < 16; i++) xn[i] = 0.0f;
    xn[13] = NAN;
    ck_assert_int_eq(qat_rt_run_f32(m, xn, 2, y), QAT_ERR_ARG);
    ck_assert_str_eq(qat_rt_last_error(), "qat_rt_run_f32: x[13] (image 1) is NaN");
    /* infinities clamp */
    xn[13] = INFINITY;
    xn[2] = -INFINITY;
    ck_assert_int_eq(qat_rt_run_f32(m, xn, 2, y), QAT_OK);
    ck_assert_int_eq(qat_rt_op_output(m, 0)[13], 127);
    ck_assert_int_eq(qat_rt_op_output(m, 0)[2], -128);
    /* a 4-bit input quantizer (act [-8, 7]): float inputs clamp to it */
    {
        tm_model N;
        hand_model(&N);
        N.op[0].act_min = -8;
        N.op[0].act_max = 7;
        tm_input_lut(&N.op[0]);
        qat_rt_model *m4 = tm_load(&N, "hand_a4.h5");
        ck_assert_int_eq(qat_rt_prepare(m4, 1), QAT_OK);
        ck_assert_int_eq(qat_rt_run_f32(m4, xf, 1, y), QAT_OK);
        const int8_t want4[8] = {3, 5, 3, 1, 7, -8, 7, -8};
        ck_assert_mem_eq(qat_rt_op_output(m4, 0), want4, 8);
        qat_rt_free(m4);
        tm_free(&N);
    }
    /* the hand input through the float path: (q - 3) / 64 is exact */
    float xh[8];
    for (int i = 0; i < 8; i++) xh[i] = (float)(hand_x[i] - 3) / 64.0f;
    ck_assert_int_eq(qat_rt_run_f32(m, xh, 1, y), QAT_OK);
    ck_assert_mem_eq(y, hand_logits, 3);
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

START_TEST(test_load_memory)
{
    qat_rng r;
    qat_rng_seed(&r, 77);
    tm_model M = {0};
    int x = tm_input(&M, 3, 3, 9, 9, -7);
    x = tm_conv(&M, x, 5, 3, 3, 1, 1, 0, &r);
    x = tm_pool(&M, "maxpool2d", x, 2, 2, &r);
    x = tm_flatten(&M, x);
    tm_linear(&M, x, 10, 0, &r);
    const char *path = tu_tmp_path("mem.h5");
    tm_write(&M, path);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    ck_assert_int_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    qat_rt_model *mf = NULL, *mm = NULL;
    ck_assert_int_eq(qat_rt_load_file(path, &mf), QAT_OK);
    ck_assert_int_eq(qat_rt_load_memory(buf, (size_t)size, &mm), QAT_OK);
    free(buf); /* the model no longer needs it */
    ck_assert_uint_eq(qat_rt_payload_bytes(mf), qat_rt_payload_bytes(mm));
    ck_assert_int_eq(qat_rt_num_ops(mf), qat_rt_num_ops(mm));
    ck_assert_int_eq(qat_rt_prepare(mf, 4), QAT_OK);
    ck_assert_int_eq(qat_rt_prepare(mm, 4), QAT_OK);
    int8_t in[4 * 243], yf[40], ym[40];
    rand_input(in, sizeof in, 0, &r);
    ck_assert_int_eq(qat_rt_run_s8(mf, in, 4, yf), QAT_OK);
    ck_assert_int_eq(qat_rt_run_s8(mm, in, 4, ym), QAT_OK);
    ck_assert_mem_eq(yf, ym, 40);
    for (int i = 0; i < qat_rt_num_ops(mf); i++) {
        qat_rt_op_info a, b;
        qat_rt_op(mf, i, &a);
        qat_rt_op(mm, i, &b);
        ck_assert_str_eq(a.name, b.name);
        ck_assert_uint_eq(a.weight_bytes, b.weight_bytes);
    }
    /* and both equal the formulas */
    check_against_forward(mm, &M, in, 4, "memory");
    qat_rt_free(mf);
    qat_rt_free(mm);
    tm_free(&M);
}
END_TEST

/* ---- every op type against the formulas, on every ISA ---- */

static void build_op_model(tm_model *M, int kind, int seed, qat_rng *r)
{
    memset(M, 0, sizeof *M);
    const int C = 1 + (int)qat_rng_below(r, 6), H = 4 + (int)qat_rng_below(r, 9);
    /* maxpool 2x2: rows wide enough for the vector loops (32 outputs) */
    const int W = kind == 6 ? 60 + (int)qat_rng_below(r, 40) : 4 + (int)qat_rng_below(r, 9);
    int x = tm_input(M, 3, C, H, W, rnd_int(r, -128, 127));
    switch (kind) {
    case 0: /* conv2d: kernel, stride, pad vary with the seed */
        x = tm_conv(M, x, 1 + (int)qat_rng_below(r, 20), 1 + seed % 4, 1 + (seed / 4) % 3,
                    1 + (seed % 3), seed % 3, seed % 5 == 4, r);
        break;
    case 1: /* linear on a flattened image, then a second one */
        x = tm_flatten(M, x);
        x = tm_linear(M, x, 1 + (int)qat_rng_below(r, 40), seed % 5 == 4, r);
        tm_linear(M, x, 1 + (int)qat_rng_below(r, 20), 0, r);
        break;
    case 2: { /* add of two convs of the same input, then relu */
        int a = tm_conv(M, x, 3, 3, 3, 1, 1, 0, r);
        int b = tm_conv(M, x, 3, 1, 1, 1, 0, 0, r);
        x = tm_addop(M, a, b, r);
        tm_relu(M, x);
        break;
    }
    case 3:
    case 4: {
        x = kind == 3 ? tm_pool(M, "global_avgpool", x, 0, 0, r)
                      : tm_pool(M, "avgpool2d", x, 1 + seed % 3, 1 + seed % 2, r);
        if (seed % 2 == 0) { /* a 4-bit output quantizer */
            M->op[x].act_min = -8;
            M->op[x].act_max = 7;
            M->op[x].zp = rnd_int(r, -8, 7);
        }
        break;
    }
    case 5: tm_pool(M, "maxpool2d", x, 1 + seed % 3, 1 + (seed / 3) % 3, r); break;
    case 6: /* maxpool 2x2 stride 2 (a fast path) on odd and even sizes */
        tm_pool(M, "maxpool2d", x, 2, 2, r);
        break;
    case 7: tm_relu(M, x); break;
    case 8: tm_flatten(M, x); break;
    default: ck_abort();
    }
}

START_TEST(test_each_op)
{
    static const char *const kinds[] = {"conv2d",    "linear",    "add+relu", "global_avgpool",
                                        "avgpool2d", "maxpool2d", "maxpool2", "relu",
                                        "flatten"};
    qat_rng r;
    for (int seed = 0; seed < 12; seed++) {
        qat_rng_seed(&r, 1000 * (uint64_t)_i + (uint64_t)seed);
        tm_model M;
        build_op_model(&M, _i, seed, &r);
        char what[64];
        snprintf(what, sizeof what, "%s seed %d", kinds[_i], seed);
        check_all_isas(&M, 5, 0, &r, what);
        tm_free(&M);
    }
}
END_TEST

/* ---- every ISA against the reference on random networks ---- */

static void build_random_net(tm_model *M, int extreme, qat_rng *r)
{
    memset(M, 0, sizeof *M);
    const int C = 1 + (int)qat_rng_below(r, 9);
    const int H = 1 + (int)qat_rng_below(r, 20), W = 1 + (int)qat_rng_below(r, 20);
    int32_t zp = extreme ? (qat_rng_below(r, 2) ? 127 : -128) : rnd_int(r, -128, 127);
    int x = tm_input(M, 3, C, H, W, zp);
    int convs = 1 + (int)qat_rng_below(r, 3);
    for (int i = 0; i < convs; i++) {
        const tm_op *in = &M->op[x];
        int k = 1 + (int)qat_rng_below(r, 5), s = 1 + (int)qat_rng_below(r, 3),
            p = (int)qat_rng_below(r, 3);
        if (qat_rng_below(r, 2)) s = 1;
        if (in->shape[1] + 2 * p < k || in->shape[2] + 2 * p < k) k = 1;
        x = tm_conv(M, x, 1 + (int)qat_rng_below(r, 37), k, k, s, p, extreme, r);
        if (qat_rng_below(r, 4) == 0) M->op[x].in_zp = rnd_int(r, -128, 127);
    }
    if (qat_rng_below(r, 2) && M->op[x].shape[1] >= 2 && M->op[x].shape[2] >= 2)
        x = tm_pool(M, "maxpool2d", x, 2, 2, r);
    x = tm_flatten(M, x);
    x = tm_linear(M, x, 1 + (int)qat_rng_below(r, 70), extreme, r);
    if (qat_rng_below(r, 4) == 0) M->op[x].in_zp = rnd_int(r, -128, 127);
    tm_linear(M, x, 1 + (int)qat_rng_below(r, 12), extreme, r);
}

START_TEST(test_isa_random)
{
    qat_rng r;
    for (int t = 0; t < 10; t++) {
        qat_rng_seed(&r, 5000 + 100 * (uint64_t)_i + (uint64_t)t);
        const int extreme = _i % 2;
        tm_model M;
        build_random_net(&M, extreme, &r);
        M.vlen = t % 2;
        qat_rt_model *m = tm_load(&M, "isa.h5");
        const int maxb = 1 + (int)qat_rng_below(&r, 9);
        ck_assert_int_eq(qat_rt_prepare(m, maxb), QAT_OK);
        const size_t isz = tm_size(&M.op[0]);
        int8_t *x = malloc((size_t)maxb * isz);
        rand_input(x, (size_t)maxb * isz, extreme, &r);
        int8_t *ref[TM_MAX_OPS];
        ck_assert_int_eq(qat_rt_set_isa(m, QAT_RT_ISA_REF), QAT_OK);
        const size_t nl = tm_size(&M.op[M.n - 1]);
        int8_t *y = malloc((size_t)maxb * nl);
        ck_assert_int_eq(qat_rt_run_s8(m, x, maxb, y), QAT_OK);
        for (int i = 0; i < M.n; i++) {
            const size_t sz = (size_t)maxb * tm_size(&M.op[i]);
            ref[i] = malloc(sz);
            memcpy(ref[i], qat_rt_op_output(m, i), sz);
        }
        for (int isa = QAT_RT_ISA_AVX2; isa < QAT_RT_ISA_COUNT; isa++) {
            if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue;
            for (int th = 1; th <= 4; th++) {
                qat_rt_set_threads(m, th);
                ck_assert_int_eq(qat_rt_run_s8(m, x, maxb, y), QAT_OK);
                for (int i = 0; i < M.n; i++) {
                    const int8_t *got = qat_rt_op_output(m, i);
                    const size_t sz = (size_t)maxb * tm_size(&M.op[i]);
                    for (size_t k = 0; k < sz; k++)
                        if (got[k] != ref[i][k])
                            ck_abort_msg("net %d/%d (%s, %d threads, batch %d): op %d %s element "
                                         "%zu: %d, ref %d",
                                         _i, t, qat_rt_isa_name((qat_rt_isa)isa), th, maxb, i,
                                         M.op[i].type, k, got[k], ref[i][k]);
                }
            }
        }
        /* and the reference equals the formulas */
        qat_rt_set_isa(m, QAT_RT_ISA_REF);
        check_against_forward(m, &M, x, maxb, "ref");
        for (int i = 0; i < M.n; i++) free(ref[i]);
        free(x);
        free(y);
        qat_rt_free(m);
        tm_free(&M);
    }
}
END_TEST

/* a wide conv (many output channels and positions: full tiles plus tails)
 * with zero points at both ends of the range and all-extreme data */
START_TEST(test_isa_extreme_conv)
{
    qat_rng r;
    qat_rng_seed(&r, 99 + (uint64_t)_i);
    tm_model M = {0};
    const int32_t zp = _i % 2 ? 127 : -128;
    int x = tm_input(&M, 3, 5 + _i, 17, 23, zp);
    x = tm_conv(&M, x, 19 + 8 * _i, 3, 3, 1, 1, 1, &r);
    x = tm_conv(&M, x, 33, 3, 3, 1 + _i % 2, 1, 1, &r);
    x = tm_flatten(&M, x);
    tm_linear(&M, x, 17, 1, &r);
    check_all_isas(&M, 6, 1, &r, "extreme conv");
    tm_free(&M);
}
END_TEST

/* 3x3 stride-1 convs (the AVX2 Winograd path): channel counts odd and even,
 * output channels not a multiple of the register tile, odd and even maps
 * from 1x1 up (partial tiles, rows of tiles spilling across vectors), pads
 * 0 to 2, zero points anywhere */
START_TEST(test_isa_wino_shapes)
{
    static const int Cs[] = {4, 5, 7, 8, 16, 17, 33};
    static const int OCs[] = {1, 5, 6, 7, 12, 13, 64};
    static const int HWs[] = {1, 2, 3, 4, 5, 7, 8, 14, 15, 17, 28, 33};
    qat_rng r;
    qat_rng_seed(&r, 777 + (uint64_t)_i);
    for (int t = 0; t < 6; t++) {
        tm_model M = {0};
        const int C = Cs[qat_rng_below(&r, 7)], OC = OCs[qat_rng_below(&r, 7)];
        const int pad = (int)qat_rng_below(&r, 3);
        int H = HWs[qat_rng_below(&r, 12)], W = HWs[qat_rng_below(&r, 12)];
        if (H + 2 * pad < 3) H = 3 - 2 * pad;
        if (W + 2 * pad < 3) W = 3 - 2 * pad;
        const int extreme = (_i + t) % 3 == 0;
        int x = tm_input(&M, 3, C, H, W, extreme ? (t % 2 ? 127 : -128) : rnd_int(&r, -128, 127));
        x = tm_conv(&M, x, OC, 3, 3, 1, pad, extreme, &r);
        if (t % 2) x = tm_conv(&M, x, 1 + (int)qat_rng_below(&r, 9), 3, 3, 1, 1, extreme, &r);
        char what[96];
        snprintf(what, sizeof what, "wino %d/%d: C %d OC %d %dx%d pad %d", _i, t, C, OC, H, W, pad);
        check_all_isas(&M, 5, extreme, &r, what);
        tm_free(&M);
    }
}
END_TEST

/* strided convs on wide rows (the stride-2 packers take 32 input columns
 * per step: rows of one, two and three steps and the ragged ends between),
 * square and non-square kernels (a 1x1 or 1xk kernel reads only some
 * phases), pads 0 to 2, channel counts off the 4-channel cells */
START_TEST(test_isa_strided_shapes)
{
    static const int Ws[] = {2, 15, 16, 31, 32, 33, 34, 63, 64, 65, 66, 97};
    qat_rng r;
    qat_rng_seed(&r, 919 + (uint64_t)_i);
    for (int t = 0; t < 6; t++) {
        tm_model M = {0};
        const int C = 1 + (int)qat_rng_below(&r, 13), OC = 1 + (int)qat_rng_below(&r, 20);
        const int s = 2 + (t == 5), KH = 1 + (int)qat_rng_below(&r, 3), KW = t % 3 ? 1 + (int)qat_rng_below(&r, 4) : 1;
        const int pad = (int)qat_rng_below(&r, 3);
        int H = 1 + (int)qat_rng_below(&r, 9), W = Ws[qat_rng_below(&r, 12)];
        if (H + 2 * pad < KH) H = KH;
        if (W + 2 * pad < KW) W = KW;
        const int extreme = (_i + t) % 3 == 0;
        int x = tm_input(&M, 3, C, H, W, extreme ? (t % 2 ? 127 : -128) : rnd_int(&r, -128, 127));
        x = tm_conv(&M, x, OC, KH, KW, s, pad, extreme, &r);
        char what[112];
        snprintf(what, sizeof what, "strided %d/%d: C %d OC %d %dx%d k %dx%d s %d pad %d", _i, t, C, OC, H,
                 W, KH, KW, s, pad);
        check_all_isas(&M, 5, extreme, &r, what);
        tm_free(&M);
    }
    if (_i < 2) {
        /* big enough (>= 2^21 multiply-adds) that batches 1 and 2 on 3
         * threads split each image's tiles over the threads (conv2d_split:
         * threaded packing, channels unstaged on different threads) */
        tm_model M = {0};
        const int C = _i ? 64 : 32, OC = _i ? 128 : 64, K = _i ? 1 : 3;
        int x = tm_input(&M, 3, C, _i ? 40 : 20, 97, rnd_int(&r, -128, 127));
        x = tm_conv(&M, x, OC, K, K, 2, _i ? 0 : 1, 0, &r);
        check_all_isas(&M, 3, 0, &r, _i ? "strided split 1x1" : "strided split 3x3");
        tm_free(&M);
    }
}
END_TEST

/* 1x1 stride-1 convs without padding: the VNNI packer takes each group of
 * 4 channels' H*W pixels as one run, 64 at a time (vnni_rows_flat): runs
 * shorter than, equal to and longer than 64 with ragged ends, channel
 * counts off the 4-channel cells, a 3x3 valid conv (pad 0: the same
 * packer), then a global average pool of every size (the VNNI pool sums
 * with vpsadbw, 64 pixels a step) */
START_TEST(test_isa_flat_runs)
{
    static const int HW[][2] = {{1, 1}, {1, 63}, {8, 8}, {5, 13}, {7, 7}, {13, 5}, {3, 43}, {14, 14}, {11, 12}, {28, 28}};
    qat_rng r;
    qat_rng_seed(&r, 4711 + (uint64_t)_i);
    for (int t = 0; t < 5; t++) {
        tm_model M = {0};
        const int C = 1 + (int)qat_rng_below(&r, 70), OC = 1 + (int)qat_rng_below(&r, 40);
        const int *hw = HW[(2 * _i + t) % 10];
        const int extreme = (_i + t) % 3 == 0;
        int x = tm_input(&M, 3, C, hw[0], hw[1], extreme ? (t % 2 ? 127 : -128) : rnd_int(&r, -128, 127));
        x = tm_conv(&M, x, OC, 1, 1, 1, 0, extreme, &r);
        if (hw[0] >= 3 && hw[1] >= 3 && t % 2) x = tm_conv(&M, x, 1 + (int)qat_rng_below(&r, 9), 3, 3, 1, 0, extreme, &r);
        x = tm_pool(&M, "global_avgpool", x, 0, 0, &r);
        char what[112];
        snprintf(what, sizeof what, "flat %d/%d: C %d OC %d %dx%d", _i, t, C, OC, hw[0], hw[1]);
        check_all_isas(&M, 5, extreme, &r, what);
        tm_free(&M);
    }
}
END_TEST

/* conv2d_split (batches 1 and 2 on 3 threads, >= 2^21 multiply-adds) on
 * every input packer of kernels_common.c, not only the channel cells at
 * stride 1 and 2 above: tap cells (fewer channels than a cell holds: 1 for
 * both ISAs, 3 for VNNI) with shared pad columns and at stride 2, the
 * scalar rows at stride 3 and at stride 1 with the pad as wide as the
 * kernel (no shared pad columns) */
START_TEST(test_isa_split_packers)
{
    static const struct {
        int C, H, W, OC, K, s, pad;
        const char *what;
    } cs[] = {
        {1, 50, 53, 100, 3, 1, 1, "split, tap cells, shared pad"},
        {3, 30, 31, 40, 5, 1, 2, "split, 3 channels (VNNI tap cells)"},
        {1, 100, 99, 96, 3, 2, 1, "split, tap cells, stride 2"},
        {8, 90, 91, 40, 3, 3, 1, "split, stride 3"},
        {5, 24, 25, 64, 3, 1, 3, "split, pad 3 on a 3x3 kernel"},
    };
    qat_rng r;
    qat_rng_seed(&r, 3131 + (uint64_t)_i);
    tm_model M = {0};
    int x = tm_input(&M, 3, cs[_i].C, cs[_i].H, cs[_i].W, rnd_int(&r, -128, 127));
    x = tm_conv(&M, x, cs[_i].OC, cs[_i].K, cs[_i].K, cs[_i].s, cs[_i].pad, 0, &r);
    const tm_op *o = &M.op[x];
    ck_assert_msg((double)o->oc * o->shape[1] * o->shape[2] * o->ic * o->kh * o->kw >= (double)(1 << 21),
                  "%s: too small to split", cs[_i].what);
    check_all_isas(&M, 3, 0, &r, cs[_i].what);
    tm_free(&M);
}
END_TEST

/* the Winograd path at its bound, 4 * 255 * sum|w| < 2^31: 1827 channels of
 * weights -128 (output channel 0) and 127 (channel 1) is just below it,
 * 1828 just above (the direct kernels); inputs at x - zp in {0, 255} */
START_TEST(test_isa_wino_bound)
{
    qat_rng r;
    qat_rng_seed(&r, 4242 + (uint64_t)_i);
    const int C = 1827 + _i;
    tm_model M = {0};
    int x = tm_input(&M, 3, C, 4, 5, -128);
    x = tm_conv(&M, x, 3, 3, 3, 1, 1, 1, &r);
    tm_op *o = &M.op[x];
    const size_t K = (size_t)C * 9;
    for (size_t k = 0; k < K; k++) {
        o->w[k] = -128;
        o->w[K + k] = 127;
    }
    for (int c = 0; c < 3; c++) {
        o->bias[c] = 0;
        to_mult(100.0 / (255.0 * 128.0 * (double)K), &o->mult[c], &o->shift[c]);
    }
    o->zp = 0;
    o->act_min = -128;
    o->act_max = 127;
    check_all_isas(&M, 3, 1, &r, "wino bound");
    /* every input at 127: the interior sums reach 255 * sum|w| */
    qat_rt_model *m = tm_load(&M, "wbound.h5");
    ck_assert_int_eq(qat_rt_prepare(m, 2), QAT_OK);
    int8_t *in = malloc((size_t)2 * C * 20);
    memset(in, 127, (size_t)2 * C * 20);
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue;
        for (int th = 1; th <= 2; th++) {
            qat_rt_set_threads(m, th);
            check_against_forward(m, &M, in, 2, "wino bound, inputs 127");
        }
    }
    free(in);
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

/* real multipliers around 1 (the kernels' shift paths for 31 - shift on
 * both sides of 32) on inputs close to the zero point */
START_TEST(test_isa_multipliers)
{
    qat_rng r;
    qat_rng_seed(&r, 31 + (uint64_t)_i);
    tm_model M = {0};
    int x = tm_input(&M, 3, 1 + _i, 9, 21, 0);
    x = tm_conv(&M, x, 13, 1, 1, 1, 0, 2, &r);
    x = tm_conv(&M, x, 17, 3, 3, 1, 1, 2, &r);
    x = tm_flatten(&M, x);
    tm_linear(&M, x, 19, 2, &r);
    qat_rt_model *m = tm_load(&M, "mult.h5");
    ck_assert_int_eq(qat_rt_prepare(m, 3), QAT_OK);
    int8_t in[3 * 4 * 9 * 21];
    for (size_t i = 0; i < sizeof in; i++) in[i] = (int8_t)rnd_int(&r, -6, 6);
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue;
        check_against_forward(m, &M, in, 3, "multipliers");
    }
    /* the outputs are not all saturated: the test sees the rounding */
    int inner = 0;
    const int8_t *y = qat_rt_op_output(m, 2);
    for (int i = 0; i < 3 * 17 * 9 * 21; i++) inner += y[i] > -128 && y[i] < 127;
    ck_assert_int_gt(inner, 3 * 17 * 9 * 21 / 4);
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

/* ---- malformed files ---- */

/* the base model of the malformed tests: input (2,5,5) -> conv 3x3 pad 1
 * (6 channels, "conv") -> global_avgpool ("gap") -> linear 6->4 ("fc") */
/* ---- format version 3 ---- */

/* Depthwise 3x3 convs (groups = C = OC: the fast depthwise kernels of both
 * ISAs, against the formula on every ISA): channel counts around the
 * vector widths, maps from 1x1 up (odd, even, rows shorter and longer than
 * a vector), stride 1 and 2, pad 0 to 2, extreme values and zero points,
 * per-channel act_max, and the MobileNet chain (1x1 expand, depthwise,
 * 1x1 project with a per-channel clamp). */
START_TEST(test_depthwise_shapes)
{
    static const int Cs[] = {1, 2, 3, 5, 8, 15, 16, 17, 33};
    static const int HWs[] = {1, 2, 3, 4, 5, 7, 8, 9, 14, 15, 16, 17, 28, 31};
    qat_rng r;
    qat_rng_seed(&r, 5150 + (uint64_t)_i);
    for (int t = 0; t < 6; t++) {
        tm_model M = {0};
        const int C = Cs[qat_rng_below(&r, 9)], s = 1 + (int)qat_rng_below(&r, 2);
        const int pad = (t + _i) % 3 == 2 ? 2 : (int)qat_rng_below(&r, 2);
        int H = HWs[qat_rng_below(&r, 14)], W = HWs[qat_rng_below(&r, 14)];
        if (H + 2 * pad < 3) H = 3 - 2 * pad;
        if (W + 2 * pad < 3) W = 3 - 2 * pad;
        const int extreme = (_i + t) % 3 == 0;
        int x = tm_input(&M, 3, C, H, W, extreme ? (t % 2 ? 127 : -128) : rnd_int(&r, -128, 127));
        x = tm_conv_g(&M, x, C, 3, s, pad, C, extreme, &r);
        if (t % 2) tm_set_amc(&M, x, &r);
        if (t % 3 == 1) {
            /* a second depthwise conv on its output, the other stride */
            const int s2 = M.op[x].shape[1] + 2 >= 3 && M.op[x].shape[2] + 2 >= 3 ? 3 - s : 1;
            x = tm_conv_g(&M, x, C, 3, s2, 1, C, extreme, &r);
        }
        char what[112];
        snprintf(what, sizeof what, "depthwise %d/%d: C %d %dx%d s %d pad %d", _i, t, C, H, W, s, pad);
        check_all_isas(&M, 5, extreme, &r, what);
        tm_free(&M);
    }
    /* an inverted residual block: 1x1 expand (groups written as 1), ReLU6
     * as a per-channel clamp, depthwise, 1x1 project */
    tm_model M = {0};
    const int C = 8 + _i, E = 6 * C;
    int x = tm_input(&M, 3, C, 9 + _i, 14, rnd_int(&r, -128, 127));
    x = tm_conv(&M, x, E, 1, 1, 1, 0, 0, &r);
    M.op[x].groups = 1;
    tm_set_amc(&M, x, &r);
    x = tm_conv_g(&M, x, E, 3, 1 + _i % 2, 1, E, 0, &r);
    tm_set_amc(&M, x, &r);
    x = tm_conv(&M, x, C + 3, 1, 1, 1, 0, 0, &r);
    check_all_isas(&M, 4, 0, &r, "inverted residual");
    tm_free(&M);
}
END_TEST

/* Grouped convs that are not the fast depthwise case (the reference on
 * every ISA): several channels a group, channel multipliers 2 and 3, 1x1,
 * 5x5 and 3x3 kernels at stride 3, extreme values */
START_TEST(test_grouped_conv)
{
    qat_rng r;
    qat_rng_seed(&r, 6160 + (uint64_t)_i);
    static const int cfg[][6] = {
        /* C, OC, K, stride, pad, groups */
        {4, 8, 3, 1, 1, 2}, {6, 9, 1, 1, 0, 3}, {5, 10, 3, 2, 1, 5}, {3, 9, 3, 1, 0, 3},
        {8, 8, 5, 1, 2, 4}, {7, 7, 3, 3, 1, 7}, {12, 6, 3, 2, 0, 6}, {2, 4, 2, 1, 1, 2},
    };
    const int *c = cfg[_i];
    for (int t = 0; t < 2; t++) {
        tm_model M = {0};
        int x = tm_input(&M, 3, c[0], 7 + t, 9 - t, t ? 127 : rnd_int(&r, -128, 127));
        x = tm_conv_g(&M, x, c[1], c[2], c[3], c[4], c[5], t, &r);
        if (_i % 2) tm_set_amc(&M, x, &r);
        x = tm_flatten(&M, x);
        tm_linear(&M, x, 5, t, &r);
        char what[96];
        snprintf(what, sizeof what, "grouped %d/%d: C %d OC %d k %d s %d p %d g %d", _i, t, c[0], c[1], c[2],
                 c[3], c[4], c[5]);
        check_all_isas(&M, 4, t, &r, what);
        tm_free(&M);
    }
}
END_TEST

/* act_max_channel on the groups-1 paths: 3x3 stride 1 (AVX2 Winograd),
 * stride 2, 1x1, a tap-cell conv (1 input channel), linear */
START_TEST(test_act_max_channel)
{
    qat_rng r;
    qat_rng_seed(&r, 7170 + (uint64_t)_i);
    const int extreme = _i % 2;
    tm_model M = {0};
    int x = tm_input(&M, 3, 1 + 2 * _i, 11, 13, extreme ? 127 : rnd_int(&r, -128, 127));
    x = tm_conv(&M, x, 13, 3, 3, 1, 1, extreme, &r);
    tm_set_amc(&M, x, &r);
    x = tm_conv(&M, x, 17, 3, 3, 1, 0, extreme, &r);
    tm_set_amc(&M, x, &r);
    x = tm_conv(&M, x, 9, 3, 3, 2, 1, extreme, &r);
    tm_set_amc(&M, x, &r);
    x = tm_conv(&M, x, 19, 1, 1, 1, 0, extreme, &r);
    tm_set_amc(&M, x, &r);
    x = tm_flatten(&M, x);
    x = tm_linear(&M, x, 21, extreme, &r);
    tm_set_amc(&M, x, &r);
    check_all_isas(&M, 5, extreme, &r, "act_max_channel");
    tm_free(&M);
}
END_TEST

/* lut, concat (2 and 3 inputs, spatial and flat, identity inputs),
 * upsample (factors 1 to 3), in a graph with a depthwise conv */
START_TEST(test_v3_ops)
{
    qat_rng r;
    qat_rng_seed(&r, 8180 + (uint64_t)_i);
    const int extreme = _i % 2;
    tm_model M = {0};
    int x = tm_input(&M, 3, 3 + _i, 4, 6, rnd_int(&r, -128, 127));
    int a = tm_conv(&M, x, 4, 3, 3, 1, 1, extreme, &r);
    int h = tm_lut(&M, a, &r);
    int u = tm_upsample(&M, tm_conv(&M, x, 2, 3, 3, 2, 1, extreme, &r), 2);
    int b = tm_conv(&M, u, 3, 1, 1, 1, 0, extreme, &r);
    int cc = tm_upsample(&M, h, 1 + _i % 3);
    if (_i % 3 == 0) {
        int ins[3] = {h, b, a};
        cc = tm_concat(&M, ins, 3, &r);
    } else if (_i % 3 == 1) {
        /* h upsampled by 2 is 8x12, and so is b upsampled by 2 */
        int ins[2] = {cc, tm_upsample(&M, b, 2)};
        cc = tm_concat(&M, ins, 2, &r);
    } else {
        int ins[2] = {cc, tm_lut(&M, cc, &r)};
        cc = tm_concat(&M, ins, 2, &r);
    }
    int d = tm_conv_g(&M, cc, M.op[cc].shape[0], 3, 1, 1, M.op[cc].shape[0], extreme, &r);
    int f1 = tm_flatten(&M, d);
    int f2 = tm_flatten(&M, h);
    int ins[2] = {f1, f2};
    int fc = tm_concat(&M, ins, 2, &r);
    fc = tm_lut(&M, fc, &r);
    tm_linear(&M, fc, 7, extreme, &r);
    check_all_isas(&M, 4, extreme, &r, "v3 ops");
    tm_free(&M);
}
END_TEST

static void base_model(tm_model *M)
{
    qat_rng r;
    qat_rng_seed(&r, 4);
    memset(M, 0, sizeof *M);
    int x = tm_input(M, 3, 2, 5, 5, 0);
    x = tm_conv(M, x, 6, 3, 3, 1, 1, 0, &r);
    snprintf(M->op[x].name, sizeof M->op[x].name, "conv");
    x = tm_pool(M, "global_avgpool", x, 0, 0, &r);
    snprintf(M->op[x].name, sizeof M->op[x].name, "gap");
    x = tm_linear(M, x, 4, 0, &r);
    snprintf(M->op[x].name, sizeof M->op[x].name, "fc");
}

static hid_t bad_open(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

/* Loads path (expects failure with status st and a message containing msg),
 * from the file and from memory. */
static void expect_load_error(const char *path, int st, const char *msg)
{
    qat_rt_model *m = (qat_rt_model *)1;
    int got = qat_rt_load_file(path, &m);
    ck_assert_msg(got == st, "status %d, expected %d (%s)", got, st, qat_rt_last_error());
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(qat_rt_last_error(), msg), "message '%s' lacks '%s'",
                  qat_rt_last_error(), msg);
    ck_assert_msg(strstr(qat_rt_last_error(), path), "message '%s' lacks the path",
                  qat_rt_last_error());
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    m = (qat_rt_model *)1;
    got = qat_rt_load_memory(buf, (size_t)size, &m);
    free(buf);
    ck_assert_msg(got == st, "memory: status %d, expected %d (%s)", got, st, qat_rt_last_error());
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(qat_rt_last_error(), msg), "memory: message '%s' lacks '%s'",
                  qat_rt_last_error(), msg);
}

static const char *bad_file(const char *name)
{
    tm_model M;
    base_model(&M);
    static char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path(name));
    tm_write(&M, path);
    tm_free(&M);
    return path;
}

START_TEST(test_bad_float_weights)
{
    const char *path = bad_file("bad_dtype.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/001", H5P_DEFAULT);
    float w[6 * 2 * 9];
    for (int i = 0; i < 6 * 2 * 9; i++) w[i] = 0.5f;
    hsize_t d[4] = {6, 2, 3, 3};
    wr_dset(g, "weight", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d, w);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/001 (conv): dataset weight is float32, expected int8");
}
END_TEST

START_TEST(test_bad_shape)
{
    const char *path = bad_file("bad_shape.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/001", H5P_DEFAULT);
    int32_t m5[5] = {1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30};
    hsize_t d = 5;
    wr_dset(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d, m5);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT,
                      "ops/001 (conv): dataset multiplier has 5 elements, expected 6");
}
END_TEST

START_TEST(test_bad_weight_shape)
{
    const char *path = bad_file("bad_wshape.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/003", H5P_DEFAULT);
    int8_t w[4 * 5] = {0};
    hsize_t d[2] = {4, 5};
    wr_dset(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, 2, d, w);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT,
                      "ops/003 (fc): dataset weight has shape [4,5], expected [4,6]");
}
END_TEST

START_TEST(test_bad_missing_dataset)
{
    const char *path = bad_file("bad_missing.h5");
    hid_t f = bad_open(path);
    ck_assert_int_ge(H5Ldelete(f, "ops/001/bias", H5P_DEFAULT), 0);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/001 (conv): missing dataset bias");
}
END_TEST

START_TEST(test_bad_missing_attribute)
{
    const char *path = bad_file("bad_attr.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/001", H5P_DEFAULT);
    ck_assert_int_ge(H5Adelete(g, "stride"), 0);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/001 (conv): missing attribute stride");
}
END_TEST

START_TEST(test_bad_truncated)
{
    const char *path = bad_file("bad_trunc_src.h5");
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    ck_assert_int_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    /* cut at several points: each is an error with a message, never a crash */
    const long cuts[4] = {size / 2, size - 1, 100, 8};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad_trunc_%d.h5", i);
        char tpath[4096];
        snprintf(tpath, sizeof tpath, "%s", tu_tmp_path(name));
        ck_assert_int_eq(tu_write_file(tpath, buf, (size_t)cuts[i]), 0);
        expect_load_error(tpath, QAT_ERR_FORMAT, "not a readable HDF5 file");
    }
    free(buf);
}
END_TEST

START_TEST(test_bad_shift)
{
    const char *path = bad_file("bad_shift.h5");
    hid_t f = bad_open(path);
    hid_t d = H5Dopen2(f, "ops/001/shift", H5P_DEFAULT);
    int32_t s[6];
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s);
    s[2] = 31;
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s);
    H5Dclose(d);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/001 (conv): shift 31 (channel 2) outside [-31, 30]");
}
END_TEST

START_TEST(test_bad_zero_point)
{
    const char *path = bad_file("bad_zp.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/001", H5P_DEFAULT);
    wr_i32(g, "out_zero_point", 128);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT,
                      "ops/001 (conv): attribute out_zero_point = 128, expected in [-128, 127]");
}
END_TEST

/* an in_zero_point (or relu's out_zero_point) that differs from what the
 * input op stores: the op's own attribute is the one used */
START_TEST(test_own_zero_points)
{
    qat_rng r;
    qat_rng_seed(&r, 12);
    tm_model M;
    base_model(&M);
    M.op[1].in_zp = 40;  /* the input op's zero point is 0 */
    M.op[2].in_zp = M.op[1].zp > 0 ? M.op[1].zp - 30 : M.op[1].zp + 30;
    M.op[3].in_zp = -M.op[2].zp / 2;
    int x = tm_relu(&M, 3);
    M.op[x].zp = M.op[3].zp + 3 > 127 ? 127 : M.op[3].zp + 3;
    check_all_isas(&M, 4, 0, &r, "own zero points");
    tm_free(&M);
}
END_TEST

START_TEST(test_bad_multiplier)
{
    const char *path = bad_file("bad_mult.h5");
    hid_t f = bad_open(path);
    hid_t d = H5Dopen2(f, "ops/001/multiplier", H5P_DEFAULT);
    int32_t m[6];
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, m);
    m[0] = 12345;
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, m);
    H5Dclose(d);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT,
                      "ops/001 (conv): multiplier 12345 (channel 0) outside [2^30, 2^31) and not 0");
}
END_TEST

START_TEST(test_bad_input_index)
{
    const char *path = bad_file("bad_inputs.h5");
    hid_t f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/002", H5P_DEFAULT);
    const int32_t in = 3;
    wr_i32s(g, "inputs", &in, 1, 0);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/002 (gap): inputs[0] = 3 is not an earlier op (0..1)");
}
END_TEST

START_TEST(test_bad_misc)
{
    /* op count */
    const char *path = bad_file("bad_count.h5");
    hid_t f = bad_open(path);
    wr_i32(f, "num_ops", 5);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "group /ops has 4 members, num_ops is 5");
    /* out_shape inconsistent with the layer */
    path = bad_file("bad_outshape.h5");
    f = bad_open(path);
    hid_t g = H5Gopen2(f, "ops/001", H5P_DEFAULT);
    const int32_t sh[3] = {6, 4, 5};
    wr_i32s(g, "out_shape", sh, 3, 0);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/001 (conv): out_shape is (6, 4, 5), expected (6, 5, 5)");
    /* act_min > act_max */
    path = bad_file("bad_act.h5");
    f = bad_open(path);
    g = H5Gopen2(f, "ops/003", H5P_DEFAULT);
    wr_i32(g, "act_min", 10);
    wr_i32(g, "act_max", 9);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/003 (fc): act_min = 10 is above act_max = 9");
    /* unknown op type */
    path = bad_file("bad_type.h5");
    f = bad_open(path);
    g = H5Gopen2(f, "ops/002", H5P_DEFAULT);
    H5Adelete(g, "type");
    wr_str(g, "type", "softmax", 0);
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_UNSUPPORTED, "ops/002: unknown op type 'softmax'");
    /* not an int8 model / another version */
    path = bad_file("bad_format.h5");
    f = bad_open(path);
    H5Adelete(f, "qat_format");
    wr_str(f, "qat_format", "qat-checkpoint", 0);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "qat_format is 'qat-checkpoint', expected 'int8-model'");
    path = bad_file("bad_version.h5");
    f = bad_open(path);
    wr_i32(f, "format_version", 4);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_UNSUPPORTED, "format_version 4 is not supported (this runtime reads 1 to 3)");
    /* add_shift out of range */
    {
        qat_rng r;
        qat_rng_seed(&r, 3);
        tm_model M = {0};
        int x = tm_input(&M, 3, 2, 4, 4, 0);
        int a = tm_conv(&M, x, 2, 1, 1, 1, 0, 0, &r);
        tm_addop(&M, a, a, &r);
        snprintf(M.op[2].name, sizeof M.op[2].name, "res");
        M.op[2].ashift = 63;
        path = tu_tmp_path("bad_add.h5");
        tm_write(&M, path);
        tm_free(&M);
        expect_load_error(path, QAT_ERR_FORMAT, "ops/002 (res): add_shift = 63 outside [1, 62]");
    }
    /* an accumulator that could overflow int32 */
    path = bad_file("bad_overflow.h5");
    f = bad_open(path);
    hid_t d = H5Dopen2(f, "ops/003/bias", H5P_DEFAULT);
    int32_t b[4];
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    b[1] = INT32_MAX - 10;
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    H5Dclose(d);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/003 (fc): channel 1: |bias|");
    /* the input op's quantizer range is required */
    path = bad_file("bad_inact.h5");
    f = bad_open(path);
    g = H5Gopen2(f, "ops/000", H5P_DEFAULT);
    H5Adelete(g, "act_max");
    H5Gclose(g);
    H5Fclose(f);
    expect_load_error(path, QAT_ERR_FORMAT, "ops/000 (input): missing attribute act_max");
    /* a path that does not exist, a file that is not HDF5 */
    qat_rt_model *m = NULL;
    ck_assert_int_eq(qat_rt_load_file(tu_tmp_path("nonexistent.h5"), &m), QAT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(qat_rt_last_error(), "nonexistent.h5: cannot open"));
    const char *junk = tu_tmp_path("junk.h5");
    ck_assert_int_eq(tu_write_file(junk, "not an hdf5 file at all", 23), 0);
    expect_load_error(junk, QAT_ERR_FORMAT, "not a readable HDF5 file");
}
END_TEST

START_TEST(test_args)
{
    tm_model M;
    hand_model(&M);
    qat_rt_model *m = tm_load(&M, "args.h5");
    int8_t y[3 * 4];
    int8_t x[8 * 4] = {0};
    ck_assert_int_eq(qat_rt_run_s8(m, x, 1, y), QAT_ERR_ARG); /* not prepared */
    ck_assert_ptr_nonnull(strstr(qat_rt_last_error(), "qat_rt_prepare"));
    ck_assert_int_eq(qat_rt_prepare(m, 0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_prepare(m, 3), QAT_OK);
    ck_assert_int_eq(qat_rt_run_s8(m, x, 0, y), QAT_ERR_ARG);
    ck_assert_str_eq(qat_rt_last_error(), "qat_rt_run_s8: n = 0 outside [1, max_batch = 3]");
    ck_assert_int_eq(qat_rt_run_s8(m, x, 4, y), QAT_ERR_ARG);
    ck_assert_str_eq(qat_rt_last_error(), "qat_rt_run_s8: n = 4 outside [1, max_batch = 3]");
    ck_assert_int_eq(qat_rt_run_u8(m, (const uint8_t *)x, -1, y), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_run_f32(m, (const float *)x, 4, y), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_run_s8(m, NULL, 1, y), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_run_s8(m, x, 1, NULL), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_run_s8(NULL, x, 1, y), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_run_s8(m, x, 3, y), QAT_OK);
    ck_assert_int_eq(qat_rt_set_isa(m, (qat_rt_isa)17), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_set_isa(m, QAT_RT_ISA_AUTO), QAT_OK);
    ck_assert_int_eq(qat_rt_get_isa(m), qat_rt_best_isa());
    qat_rt_free(m);
    ck_assert_int_eq(qat_rt_load_file(NULL, &m), QAT_ERR_ARG);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(qat_rt_load_memory(NULL, 10, &m), QAT_ERR_ARG);
    ck_assert_int_eq(qat_rt_load_memory(x, 0, &m), QAT_ERR_ARG);
    ck_assert_ptr_null(m);
    qat_rt_free(NULL);
    tm_free(&M);
}
END_TEST

/* re-preparing, switching ISA after prepare, threads beyond the CPUs */
START_TEST(test_replan)
{
    qat_rng r;
    qat_rng_seed(&r, 8);
    tm_model M = {0};
    int x = tm_input(&M, 3, 4, 12, 12, 11);
    x = tm_conv(&M, x, 16, 3, 3, 1, 1, 0, &r);
    x = tm_conv(&M, x, 8, 3, 3, 2, 1, 0, &r);
    x = tm_pool(&M, "global_avgpool", x, 0, 0, &r);
    tm_linear(&M, x, 10, 0, &r);
    qat_rt_model *m = tm_load(&M, "replan.h5");
    int8_t in[7 * 576];
    rand_input(in, sizeof in, 0, &r);
    ck_assert_int_eq(qat_rt_prepare(m, 2), QAT_OK);
    ck_assert_int_eq(qat_rt_prepare(m, 7), QAT_OK);
    qat_rt_set_threads(m, 64);
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue;
        check_against_forward(m, &M, in, 7, "replan");
        check_against_forward(m, &M, in, 1, "replan n=1");
    }
    qat_rt_set_threads(m, 0);
    check_against_forward(m, &M, in, 5, "default threads");
    qat_rt_free(m);
    tm_free(&M);
}
END_TEST

/* format version 3: malformed grouped convs, per-channel bounds, lut,
 * concat, upsample, and the additions on float ops */
static const char *v3_file(const char *name)
{
    qat_rng r;
    qat_rng_seed(&r, 21);
    tm_model M = {0};
    int x = tm_input(&M, 3, 4, 6, 6, 3);
    int a = tm_conv_g(&M, x, 8, 3, 1, 1, 2, 0, &r);  /* op 1: groups 2, weight [8, 2, 3, 3] */
    snprintf(M.op[a].name, sizeof M.op[a].name, "gconv");
    tm_set_amc(&M, a, &r);
    int h = tm_lut(&M, a, &r);                       /* op 2 */
    snprintf(M.op[h].name, sizeof M.op[h].name, "hs");
    int u = tm_upsample(&M, tm_conv(&M, a, 3, 3, 3, 2, 1, 0, &r), 2); /* op 3 conv 3x3x3, op 4 upsample 6x6 */
    snprintf(M.op[u].name, sizeof M.op[u].name, "up");
    int ins[2] = {h, u};
    int c = tm_concat(&M, ins, 2, &r);               /* op 5: 11 x 6 x 6 */
    snprintf(M.op[c].name, sizeof M.op[c].name, "cat");
    x = tm_flatten(&M, c);
    tm_linear(&M, x, 4, 0, &r);
    static char path[4096];
    snprintf(path, sizeof path, "%s", tu_tmp_path(name));
    tm_write(&M, path);
    tm_free(&M);
    return path;
}

START_TEST(test_bad_v3)
{
    /* the file itself loads and runs */
    qat_rt_model *m = NULL;
    const char *path = v3_file("v3_ok.h5");
    ck_assert_msg(qat_rt_load_file(path, &m) == QAT_OK, "%s", qat_rt_last_error());
    qat_rt_op_info info;
    ck_assert_int_eq(qat_rt_op(m, 1, &info), QAT_OK);
    ck_assert_int_eq(info.groups, 2);
    ck_assert_int_eq(info.act_max_channel, 1);
    ck_assert_uint_eq(info.weight_count, 8 * 2 * 9);
    ck_assert_int_eq(qat_rt_op(m, 5, &info), QAT_OK);
    ck_assert_str_eq(info.type, "concat");
    ck_assert_int_eq(info.n_inputs, 2);
    ck_assert_int_eq(info.inputs[0], 2);
    ck_assert_int_eq(info.inputs[1], 4);
    ck_assert_int_eq(info.inputs[2], -1);
    qat_rt_free(m);

    struct {
        const char *op, *what;
        int kind;
        int st;
        const char *msg;
    } cases[] = {
        {"001", "groups 3", 0, QAT_ERR_FORMAT, "ops/001 (gconv): attribute groups = 3 does not divide the input's 4 channels"},
        {"001", "groups 0", 1, QAT_ERR_FORMAT, "ops/001 (gconv): attribute groups = 0, expected in [1, 65536]"},
        {"001", "weight [8,4,3,3]", 2, QAT_ERR_FORMAT,
         "ops/001 (gconv): dataset weight has 4 input channels per group, expected IC/groups = 4/2 = 2"},
        {"001", "amc above 127", 3, QAT_ERR_FORMAT, "ops/001 (gconv): dataset act_max_channel[2] = 128, expected in [act_min ="},
        {"001", "amc length", 4, QAT_ERR_FORMAT, "ops/001 (gconv): dataset act_max_channel has 7 elements, expected 8"},
        {"002", "table int16", 5, QAT_ERR_FORMAT, "ops/002 (hs): dataset table is int16, expected int8"},
        {"002", "no table", 6, QAT_ERR_FORMAT, "ops/002 (hs): missing dataset table"},
        {"005", "concat of 1", 7, QAT_ERR_FORMAT, "ops/005 (cat): attribute inputs has 1 values, expected 2 to 16 for concat"},
        {"005", "shift of 1", 8, QAT_ERR_FORMAT, "ops/005 (cat): attribute shift has 1 values, expected 2"},
        {"005", "zero point", 9, QAT_ERR_FORMAT, "ops/005 (cat): in_zero_point[1] = 200 outside [-128, 127]"},
        {"005", "out_shape", 10, QAT_ERR_FORMAT, "ops/005 (cat): out_shape is (12, 6, 6), expected (11, 6, 6)"},
        {"004", "scale 0", 11, QAT_ERR_FORMAT, "ops/004 (up): attribute scale = 0, expected in [1, 1024]"},
        {"002", "float lut", 12, QAT_ERR_UNSUPPORTED, "ops/002 (hs): a float lut op (attribute dtype) is not supported"},
        {"001", "float grouped", 12, QAT_ERR_UNSUPPORTED, "ops/001 (gconv): a float conv2d (attribute dtype) with groups = 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "bad_v3_%zu.h5", i);
        path = v3_file(nm);
        hid_t f = bad_open(path);
        char gp[32];
        snprintf(gp, sizeof gp, "ops/%s", cases[i].op);
        hid_t g = H5Gopen2(f, gp, H5P_DEFAULT);
        ck_assert_int_ge(g, 0);
        switch (cases[i].kind) {
        case 0: wr_i32(g, "groups", 3); break;
        case 1: wr_i32(g, "groups", 0); break;
        case 2: {
            int8_t w[8 * 4 * 9] = {0};
            hsize_t d[4] = {8, 4, 3, 3};
            wr_dset(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, 4, d, w);
            break;
        }
        case 3:
        case 4: {
            int32_t a[8] = {127, 127, 128, 127, 127, 127, 127, 127};
            hsize_t d = cases[i].kind == 3 ? 8 : 7;
            wr_dset(g, "act_max_channel", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d, a);
            break;
        }
        case 5: {
            int16_t t[256] = {0};
            hsize_t d = 256;
            wr_dset(g, "table", H5T_STD_I16LE, H5T_NATIVE_INT16, 1, &d, t);
            break;
        }
        case 6: H5Ldelete(g, "table", H5P_DEFAULT); break;
        case 7: {
            int32_t in[1] = {2};
            wr_i32s(g, "inputs", in, 1, 0);
            break;
        }
        case 8: {
            int32_t sh[1] = {1};
            wr_i32s(g, "shift", sh, 1, 0);
            break;
        }
        case 9: {
            int32_t z[2] = {0, 200};
            wr_i32s(g, "in_zero_point", z, 2, 0);
            break;
        }
        case 10: {
            int32_t sh[3] = {12, 6, 6};
            wr_i32s(g, "out_shape", sh, 3, 0);
            break;
        }
        case 11: wr_i32(g, "scale", 0); break;
        case 12: wr_str(g, "dtype", "float32", 0); break;
        }
        H5Gclose(g);
        H5Fclose(f);
        expect_load_error(path, cases[i].st, cases[i].msg);
    }
}
END_TEST

static Suite *runtime_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("hand");
    tcase_add_test(tc, test_hand_model);
    tcase_add_test(tc, test_inspect);
    tcase_add_test(tc, test_input_paths);
    tcase_add_test(tc, test_load_memory);
    tcase_add_test(tc, test_args);
    tcase_add_test(tc, test_replan);
    suite_add_tcase(s, tc);
    tc = tcase_create("ops");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_each_op, 0, 9);
    tcase_add_loop_test(tc, test_isa_random, 0, 8);
    tcase_add_loop_test(tc, test_isa_extreme_conv, 0, 4);
    tcase_add_loop_test(tc, test_isa_wino_shapes, 0, 6);
    tcase_add_loop_test(tc, test_isa_wino_bound, 0, 2);
    tcase_add_loop_test(tc, test_isa_strided_shapes, 0, 6);
    tcase_add_loop_test(tc, test_isa_flat_runs, 0, 5);
    tcase_add_loop_test(tc, test_isa_split_packers, 0, 5);
    tcase_add_loop_test(tc, test_isa_multipliers, 0, 4);
    tcase_add_loop_test(tc, test_depthwise_shapes, 0, 6);
    tcase_add_loop_test(tc, test_grouped_conv, 0, 8);
    tcase_add_loop_test(tc, test_act_max_channel, 0, 4);
    tcase_add_loop_test(tc, test_v3_ops, 0, 6);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, test_bad_float_weights);
    tcase_add_test(tc, test_bad_shape);
    tcase_add_test(tc, test_bad_weight_shape);
    tcase_add_test(tc, test_bad_missing_dataset);
    tcase_add_test(tc, test_bad_missing_attribute);
    tcase_add_test(tc, test_bad_truncated);
    tcase_add_test(tc, test_bad_shift);
    tcase_add_test(tc, test_bad_zero_point);
    tcase_add_test(tc, test_own_zero_points);
    tcase_add_test(tc, test_bad_multiplier);
    tcase_add_test(tc, test_bad_input_index);
    tcase_add_test(tc, test_bad_misc);
    tcase_add_test(tc, test_bad_v3);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the malformed tests poke at files */
    SRunner *sr = srunner_create(runtime_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
