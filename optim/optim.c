/* SGD (momentum, Nesterov, L2 or decoupled weight decay) and AdamW, with
 * per-parameter groups and checkpointable state (qat/optim.h).
 *
 * The element loops follow PyTorch's single-tensor implementations
 * (torch/optim/sgd.py, adam.py) operation by operation, in float32, with
 * the scalar factors rounded to float where ATen rounds its Scalar
 * arguments. (ATen's vectorised kernels may fuse a multiply-add, e.g. in
 * lerp; we never do, -ffp-contract=off, so agreement with PyTorch is to
 * the last bit of some elements, not bitwise.) */
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/optim.h"

/* Below this many elements a parameter is updated by one thread: the
 * fork/join would cost more than the loop. */
#define OPTIM_PAR_MIN 32768

/* "exp_avg_sq/" + a parameter name (terminated within its field) */
#define STATE_NAME_MAX (sizeof(((qat_named_tensor *)0)->name) + 16)

typedef struct optim_param {
    qat_named_tensor p;   /* copy of the caller's entry */
    double lr_scale;
    double wd;            /* effective weight decay */
    int wd_default;       /* wd follows the options' rule */
    float *buf[2];        /* SGD: momentum; AdamW: exp_avg, exp_avg_sq */
    char state_name[2][STATE_NAME_MAX];
} optim_param;

struct qat_optim {
    qat_optim_options opts;
    double lr;
    int64_t step;
    int has_schedule;
    qat_schedule schedule;
    int n, cap;
    optim_param *params;
    int64_t *steps; /* per-parameter step counters, the array the API exposes */
};

static const char *const kind_names[] = {
    [QAT_OPTIM_SGD] = "sgd",
    [QAT_OPTIM_ADAMW] = "adamw",
};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == QAT_OPTIM_COUNT,
               "kind_names must name every qat_optim_kind");

const char *qat_optim_kind_name(qat_optim_kind k)
{
    if ((int)k < 0 || k >= QAT_OPTIM_COUNT) return NULL;
    return kind_names[k];
}

int qat_optim_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < QAT_OPTIM_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

qat_optim_options qat_optim_options_defaults(qat_optim_kind kind)
{
    qat_optim_options o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.lr = 1e-3;
    o.weight_decay = 0.0;
    o.decoupled_wd = 0;
    o.decay_all = 0;
    o.momentum = 0.0;
    o.nesterov = 0;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    if (kind == QAT_OPTIM_ADAMW) {
        o.weight_decay = 1e-2;
        o.decoupled_wd = 1;
    }
    return o;
}

/* ---- validation ---- */

static int nonneg(double x) { return isfinite(x) && x >= 0.0; }

static int check_options(const qat_optim_options *o)
{
    if (!o) return qat_error(QAT_ERR_ARG, "optimizer: options are NULL");
    if ((int)o->kind < 0 || o->kind >= QAT_OPTIM_COUNT)
        return qat_error(QAT_ERR_ARG, "optimizer: unknown kind %d", (int)o->kind);
    const char *kn = kind_names[o->kind];
    if (!nonneg(o->lr))
        return qat_error(QAT_ERR_ARG, "%s: lr %g, expected finite and >= 0", kn, o->lr);
    if (!nonneg(o->weight_decay))
        return qat_error(QAT_ERR_ARG, "%s: weight_decay %g, expected finite and >= 0", kn,
                         o->weight_decay);
    if (o->kind == QAT_OPTIM_SGD) {
        if (!nonneg(o->momentum))
            return qat_error(QAT_ERR_ARG, "sgd: momentum %g, expected finite and >= 0",
                             o->momentum);
        if (o->nesterov && o->momentum <= 0.0)
            return qat_error(QAT_ERR_ARG, "sgd: nesterov requires momentum > 0 (got %g)",
                             o->momentum);
    } else {
        if (!(o->beta1 >= 0.0 && o->beta1 < 1.0))
            return qat_error(QAT_ERR_ARG, "adamw: beta1 %g, expected in [0, 1)", o->beta1);
        if (!(o->beta2 >= 0.0 && o->beta2 < 1.0))
            return qat_error(QAT_ERR_ARG, "adamw: beta2 %g, expected in [0, 1)", o->beta2);
        if (!nonneg(o->eps))
            return qat_error(QAT_ERR_ARG, "adamw: eps %g, expected finite and >= 0", o->eps);
    }
    return QAT_OK;
}

static int num_buffers(const qat_optim_options *o)
{
    if (o->kind == QAT_OPTIM_ADAMW) return 2;
    return o->momentum > 0.0 ? 1 : 0;
}

static double default_wd(const qat_optim *o, const qat_named_tensor *p)
{
    return (p->no_decay && !o->opts.decay_all) ? 0.0 : o->opts.weight_decay;
}

/* Checks the n new entries against each other and the existing ones. */
static int check_params(const qat_optim *o, const qat_named_tensor *params, int n)
{
    const char *kn = kind_names[o->opts.kind];
    if (n < 0) return qat_error(QAT_ERR_ARG, "%s: %d parameters, expected >= 0", kn, n);
    if (n > 0 && !params) return qat_error(QAT_ERR_ARG, "%s: params is NULL", kn);
    for (int i = 0; i < n; i++) {
        const qat_named_tensor *p = &params[i];
        size_t len = strnlen(p->name, sizeof p->name);
        if (len == 0) return qat_error(QAT_ERR_ARG, "%s: parameter %d has no name", kn, i);
        if (len == sizeof p->name)
            return qat_error(QAT_ERR_ARG, "%s: parameter %d: name not terminated", kn, i);
        if (!p->t || !p->t->data)
            return qat_error(QAT_ERR_ARG, "%s: parameter %s: %s is NULL", kn, p->name,
                             p->t ? "data" : "tensor");
        for (int j = 0; j < o->n + i; j++) {
            const qat_named_tensor *q = j < o->n ? &o->params[j].p : &params[j - o->n];
            if (strcmp(q->name, p->name) == 0)
                return qat_error(QAT_ERR_ARG, "%s: parameter name %s given twice", kn,
                                 p->name);
            if (q->t == p->t)
                return qat_error(QAT_ERR_ARG, "%s: parameters %s and %s are the same tensor",
                                 kn, q->name, p->name);
        }
    }
    return QAT_OK;
}

static int check_group(const qat_optim *o, double lr_scale, double wd)
{
    const char *kn = kind_names[o->opts.kind];
    if (!nonneg(lr_scale))
        return qat_error(QAT_ERR_ARG, "%s: lr_scale %g, expected finite and >= 0", kn,
                         lr_scale);
    if (!isfinite(wd))
        return qat_error(QAT_ERR_ARG, "%s: weight decay %g, expected finite", kn, wd);
    return QAT_OK;
}

/* ---- creation ---- */

static void free_param_state(optim_param *p)
{
    free(p->buf[0]);
    free(p->buf[1]);
    p->buf[0] = p->buf[1] = NULL;
}

/* dst = prefix "/" name; check_params guarantees name fits its field */
static void state_name(char *dst, const char *prefix, const char *name)
{
    size_t a = strlen(prefix), b = strlen(name);
    assert(a + 1 + b < STATE_NAME_MAX);
    memcpy(dst, prefix, a);
    dst[a] = '/';
    memcpy(dst + a + 1, name, b + 1);
}

static int append_params(qat_optim *o, const qat_named_tensor *params, int n,
                         double lr_scale, double wd)
{
    int rc = check_params(o, params, n);
    if (rc) return rc;
    rc = check_group(o, lr_scale, wd);
    if (rc) return rc;
    if (n == 0) return o->n;
    if (n > INT_MAX - o->n)
        return qat_error(QAT_ERR_ARG, "%s: too many parameters", kind_names[o->opts.kind]);
    int need = o->n + n;
    if (need > o->cap) {
        optim_param *np = qat_realloc(o->params, (size_t)need * sizeof *np);
        if (!np) return qat_error(QAT_ERR_NOMEM, "optimizer: out of memory for %d parameters", need);
        o->params = np;
        int64_t *ns = qat_realloc(o->steps, (size_t)need * sizeof *ns);
        if (!ns) return qat_error(QAT_ERR_NOMEM, "optimizer: out of memory for %d parameters", need);
        o->steps = ns;
        o->cap = need;
    }
    static const char *const buf_names[2][2] = {{"momentum", NULL}, {"exp_avg", "exp_avg_sq"}};
    int nb = num_buffers(&o->opts);
    int kind = o->opts.kind == QAT_OPTIM_ADAMW;
    for (int i = 0; i < n; i++) {
        optim_param *p = &o->params[o->n + i];
        memset(p, 0, sizeof *p);
        p->p = params[i];
        p->lr_scale = lr_scale;
        p->wd_default = wd < 0.0;
        p->wd = wd < 0.0 ? default_wd(o, &params[i]) : wd;
        for (int b = 0; b < nb; b++) {
            size_t numel = p->p.t->numel;
            p->buf[b] = qat_calloc(numel ? numel : 1, sizeof(float));
            if (!p->buf[b]) {
                for (int k = 0; k <= i; k++) free_param_state(&o->params[o->n + k]);
                return qat_error(QAT_ERR_NOMEM, "%s: out of memory for the state of %s",
                                 kind_names[o->opts.kind], p->p.name);
            }
            state_name(p->state_name[b], buf_names[kind][b], p->p.name);
        }
        o->steps[o->n + i] = 0;
    }
    int first = o->n;
    o->n = need;
    return first;
}

qat_optim *qat_optim_create(const qat_named_tensor *params, int n,
                            const qat_optim_options *opts)
{
    if (check_options(opts)) return NULL;
    qat_optim *o = qat_calloc(1, sizeof *o);
    if (!o) return qat_error_null(QAT_ERR_NOMEM, "optimizer: out of memory");
    o->opts = *opts;
    o->lr = opts->lr;
    int rc = append_params(o, params, n, 1.0, -1.0);
    if (rc < 0) {
        qat_optim_free(o);
        return NULL;
    }
    return o;
}

void qat_optim_free(qat_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->n; i++) free_param_state(&o->params[i]);
    free(o->params);
    free(o->steps);
    free(o);
}

int qat_optim_add_params(qat_optim *o, const qat_named_tensor *params, int n,
                         double lr_scale, double wd)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_add_params: optimizer is NULL");
    return append_params(o, params, n, lr_scale, wd);
}

int qat_optim_set_group(qat_optim *o, int first, int count, double lr_scale, double wd)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_set_group: optimizer is NULL");
    if (first < 0 || count < 0 || first > o->n || count > o->n - first)
        return qat_error(QAT_ERR_ARG,
                         "%s: group [%d, %d+%d) outside the %d parameters",
                         kind_names[o->opts.kind], first, first, count, o->n);
    int rc = check_group(o, lr_scale, wd);
    if (rc) return rc;
    for (int i = first; i < first + count; i++) {
        optim_param *p = &o->params[i];
        p->lr_scale = lr_scale;
        p->wd_default = wd < 0.0;
        p->wd = wd < 0.0 ? default_wd(o, &p->p) : wd;
    }
    return QAT_OK;
}

/* ---- update rules ---- */

/* torch.optim.SGD, dampening 0 (single-tensor path):
 *   grad = grad.add(param, alpha=wd)
 *   buf = clone(grad) | buf.mul_(momentum).add_(grad, alpha=1)
 *   grad = grad.add(buf, alpha=momentum) | buf
 *   param.add_(grad, alpha=-lr) */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define OPTIM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OPTIM_CLONES
#endif

/* One span of the SGD update. The recipe's case (momentum after the first
 * step, L2 weight decay or none, no Nesterov) has its own branch-free loop,
 * which vectorises; the same operations in the same order as the general
 * loop, element by element, so the results are identical. */
OPTIM_CLONES static void sgd_span(float *restrict w, const float *restrict g, float *restrict buf, size_t n,
                                  int first, float neg_lr, float wd, float decay, int l2, int decoupled, float mom,
                                  int nesterov)
{
    if (buf && !first && !decoupled && !nesterov) {
        const float wdl = l2 ? wd : 0.0f;
        if (l2) {
            for (size_t i = 0; i < n; i++) {
                float p = w[i], d = g[i] + wdl * p, b = buf[i] * mom + d;
                buf[i] = b;
                w[i] = p + neg_lr * b;
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                float p = w[i], b = buf[i] * mom + g[i];
                buf[i] = b;
                w[i] = p + neg_lr * b;
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float p = w[i];
        if (decoupled) p = p * decay;
        float d = g[i];
        if (l2) d = d + wd * p;
        if (buf) {
            float b = first ? d : buf[i] * mom + d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        w[i] = p + neg_lr * d;
    }
}

#define OPTIM_CHUNK 16384

static void sgd_update(float *restrict w, const float *restrict g, float *restrict buf,
                       size_t n, int first, float neg_lr, float wd, float decay, int l2,
                       int decoupled, float mom, int nesterov)
{
    const long long chunks = (long long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
    for (long long k = 0; k < chunks; k++) {
        size_t a = (size_t)k * OPTIM_CHUNK, len = n - a < OPTIM_CHUNK ? n - a : OPTIM_CHUNK;
        sgd_span(w + a, g + a, buf ? buf + a : NULL, len, first, neg_lr, wd, decay, l2, decoupled, mom, nesterov);
    }
}

/* torch.optim.AdamW (single-tensor path of adam.py):
 *   param.mul_(1 - lr*wd)                      (decoupled) | grad += wd*param
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-lr/bc1) */
static void adamw_update(float *restrict w, const float *restrict g, float *restrict m,
                         float *restrict v, size_t n, float decay, int decoupled, float wd,
                         int l2, float lerp_w, float beta2, float one_m_beta2, float bc2s,
                         float eps, float neg_step)
{
    const long long nn = (long long)n;
    const float one_m_lerp = 1.0f - lerp_w;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        float p = w[i];
        if (decoupled) p = p * decay;
        float d = g[i];
        if (l2) d = d + wd * p;
        /* ATen lerp: self + w (end - self) for |w| < 0.5, else
         * end - (end - self)(1 - w) */
        float mi = m[i];
        mi = lerp_w < 0.5f ? mi + lerp_w * (d - mi) : d - (d - mi) * one_m_lerp;
        m[i] = mi;
        float vi = v[i] * beta2;
        vi = vi + one_m_beta2 * d * d;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2s + eps;
        w[i] = p + neg_step * mi / denom;
    }
}

static void step_param(qat_optim *o, int idx)
{
    optim_param *p = &o->params[idx];
    qat_tensor *t = p->p.t;
    if (!t->requires_grad || !t->grad) return;
    const qat_optim_options *op = &o->opts;
    double lr = o->lr * p->lr_scale;
    double wd = p->wd;
    int decoupled = wd != 0.0 && op->decoupled_wd;
    int l2 = wd != 0.0 && !op->decoupled_wd;
    float decay = (float)(1.0 - lr * wd);
    int64_t step = o->steps[idx] + 1;
    if (op->kind == QAT_OPTIM_SGD) {
        sgd_update(t->data, t->grad, p->buf[0], t->numel, step == 1, (float)-lr, (float)wd,
                   decay, l2, decoupled, (float)op->momentum, op->nesterov);
    } else {
        double bc1 = 1.0 - pow(op->beta1, (double)step);
        double bc2 = 1.0 - pow(op->beta2, (double)step);
        double step_size = lr / bc1;
        adamw_update(t->data, t->grad, p->buf[0], p->buf[1], t->numel, decay, decoupled,
                     (float)wd, l2, (float)(1.0 - op->beta1), (float)op->beta2,
                     (float)(1.0 - op->beta2), (float)sqrt(bc2), (float)op->eps,
                     (float)-step_size);
    }
    o->steps[idx] = step;
}

int qat_optim_step(qat_optim *o)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_step: optimizer is NULL");
    if (o->has_schedule) o->lr = qat_schedule_lr(&o->schedule, o->step);
    for (int i = 0; i < o->n; i++) step_param(o, i);
    o->step++;
    return QAT_OK;
}

void qat_optim_zero_grad(qat_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        qat_tensor *t = o->params[i].p.t;
        if (t->grad) memset(t->grad, 0, t->numel * sizeof(float));
    }
}

/* ---- learning rate and schedule ---- */

int qat_optim_set_lr(qat_optim *o, double lr)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_set_lr: optimizer is NULL");
    if (!nonneg(lr))
        return qat_error(QAT_ERR_ARG, "%s: lr %g, expected finite and >= 0",
                         kind_names[o->opts.kind], lr);
    o->lr = lr;
    return QAT_OK;
}

double qat_optim_lr(const qat_optim *o) { return o ? o->lr : 0.0; }

int qat_optim_set_schedule(qat_optim *o, const qat_schedule *s)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_set_schedule: optimizer is NULL");
    if (!s) {
        o->has_schedule = 0;
        return QAT_OK;
    }
    int rc = qat_schedule_check(s);
    if (rc) return rc;
    o->schedule = *s;
    o->has_schedule = 1;
    return QAT_OK;
}

const qat_schedule *qat_optim_schedule(const qat_optim *o)
{
    return o && o->has_schedule ? &o->schedule : NULL;
}

/* ---- introspection ---- */

qat_optim_kind qat_optim_get_kind(const qat_optim *o) { return o ? o->opts.kind : QAT_OPTIM_SGD; }

const char *qat_optim_name(const qat_optim *o) { return o ? kind_names[o->opts.kind] : NULL; }

const qat_optim_options *qat_optim_get_options(const qat_optim *o)
{
    return o ? &o->opts : NULL;
}

int qat_optim_num_params(const qat_optim *o) { return o ? o->n : 0; }

const qat_named_tensor *qat_optim_param(const qat_optim *o, int i)
{
    if (!o || i < 0 || i >= o->n) return NULL;
    return &o->params[i].p;
}

int qat_optim_find(const qat_optim *o, const char *name)
{
    if (!o || !name) return -1;
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->params[i].p.name, name) == 0) return i;
    return -1;
}

double qat_optim_param_lr_scale(const qat_optim *o, int i)
{
    if (!o || i < 0 || i >= o->n) return 0.0;
    return o->params[i].lr_scale;
}

double qat_optim_param_weight_decay(const qat_optim *o, int i)
{
    if (!o || i < 0 || i >= o->n) return 0.0;
    return o->params[i].wd;
}

/* ---- state ---- */

int64_t qat_optim_step_count(const qat_optim *o) { return o ? o->step : 0; }

int qat_optim_set_step_count(qat_optim *o, int64_t step)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_set_step_count: optimizer is NULL");
    if (step < 0)
        return qat_error(QAT_ERR_ARG, "%s: step count %lld, expected >= 0",
                         kind_names[o->opts.kind], (long long)step);
    o->step = step;
    return QAT_OK;
}

int64_t *qat_optim_param_steps(qat_optim *o, size_t *n)
{
    if (n) *n = o ? (size_t)o->n : 0;
    if (!o || o->n == 0) return NULL;
    return o->steps;
}

int qat_optim_num_state(const qat_optim *o)
{
    return o ? o->n * num_buffers(&o->opts) : 0;
}

int qat_optim_state(qat_optim *o, int i, const char **name, float **data, size_t *n)
{
    if (!o) return qat_error(QAT_ERR_ARG, "qat_optim_state: optimizer is NULL");
    int nb = num_buffers(&o->opts);
    if (i < 0 || i >= o->n * nb)
        return qat_error(QAT_ERR_ARG, "%s: state buffer %d, expected 0..%d",
                         kind_names[o->opts.kind], i, o->n * nb - 1);
    optim_param *p = &o->params[i / nb];
    int b = i % nb;
    if (name) *name = p->state_name[b];
    if (data) *data = p->buf[b];
    if (n) *n = p->p.t->numel;
    return QAT_OK;
}

int qat_optim_find_state(const qat_optim *o, const char *name)
{
    if (!o || !name) return -1;
    int nb = num_buffers(&o->opts);
    for (int i = 0; i < o->n * nb; i++)
        if (strcmp(o->params[i / nb].state_name[i % nb], name) == 0) return i;
    return -1;
}
