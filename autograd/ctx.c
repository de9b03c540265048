/* The step context: a bump arena for step tensors, the tape, backward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h" /* qat_grad_fresh */

#define ARENA_ALIGN 64

/* A gradient buffer handed back to the context once the op that produced
 * its tensor has run its backward (no later op reads it). */
typedef struct {
    unsigned char *p;
    size_t bytes;
} free_block;

#define POOL_MAX 64 /* free blocks kept; past that the smallest is dropped */

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    unsigned char *mem;
} chunk;

struct qat_ctx {
    chunk *head;          /* current chunk (newest first) */
    size_t reserved;      /* bytes over all chunks */
    size_t peak;          /* bytes used in the largest step so far */
    qat_tape_entry *tape;
    int tape_len, tape_cap;
    int grad_enabled;
    int training;
    int retain_grads;     /* keep every intermediate gradient until reset */
    free_block pool[POOL_MAX];
    int pool_len;
    int status;           /* the step's first failure (sticky), QAT_OK if none */
    char status_msg[640]; /* qat_last_error() when it was recorded */
};

static chunk *chunk_new(size_t size)
{
    chunk *c = qat_malloc(sizeof *c);
    if (!c) return NULL;
    c->mem = qat_aligned_alloc(ARENA_ALIGN, (size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!c->mem) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = NULL;
    return c;
}

qat_ctx *qat_ctx_create(size_t arena_bytes)
{
    qat_ctx *ctx = qat_calloc(1, sizeof *ctx);
    if (!ctx) return qat_error_null(QAT_ERR_NOMEM, "qat_ctx_create: out of memory");
    if (arena_bytes == 0) arena_bytes = (size_t)64 << 20;
    ctx->head = chunk_new(arena_bytes);
    if (!ctx->head) {
        free(ctx);
        return qat_error_null(QAT_ERR_NOMEM, "qat_ctx_create: cannot reserve %zu bytes", arena_bytes);
    }
    ctx->reserved = arena_bytes;
    ctx->grad_enabled = 1;
    ctx->training = 1;
    qat_get_num_threads(); /* settle the thread configuration once */
    return ctx;
}

static void chunks_free(chunk *c)
{
    while (c) {
        chunk *n = c->next;
        free(c->mem);
        free(c);
        c = n;
    }
}

void qat_ctx_free(qat_ctx *ctx)
{
    if (!ctx) return;
    chunks_free(ctx->head);
    free(ctx->tape);
    free(ctx);
}

size_t qat_ctx_arena_used(const qat_ctx *ctx)
{
    size_t u = 0;
    for (const chunk *c = ctx->head; c; c = c->next) u += c->used;
    return u;
}

size_t qat_ctx_arena_reserved(const qat_ctx *ctx) { return ctx->reserved; }

/* ---- the sticky error ----
 * A backward function returns nothing, and a NULL from qat_grad or the
 * arena inside one cannot be told from "no gradient needed" by whoever
 * runs it: every failure of the step is recorded here instead, the first
 * one sticks, and qat_backward / qat_ctx_reset report it. */

int qat_ctx_fail(qat_ctx *ctx, int status)
{
    if (!ctx || status == QAT_OK) return status;
    if (ctx->status == QAT_OK) {
        const char *msg = qat_last_error();
        ctx->status = status;
        snprintf(ctx->status_msg, sizeof ctx->status_msg, "%s", msg[0] ? msg : qat_status_str(status));
    }
    return status;
}

int qat_ctx_status(const qat_ctx *ctx) { return ctx->status; }

/* The sticky status, its message back in qat_last_error() (later failures,
 * e.g. of ops that were handed a NULL, may have overwritten it). */
static int ctx_report(const qat_ctx *ctx)
{
    return qat_error(ctx->status, "%s", ctx->status_msg);
}

int qat_ctx_reset(qat_ctx *ctx)
{
    int status = ctx->status != QAT_OK ? ctx_report(ctx) : QAT_OK;
    ctx->status = QAT_OK;
    ctx->status_msg[0] = '\0';
    size_t used = qat_ctx_arena_used(ctx);
    if (used > ctx->peak) ctx->peak = used;
    if (ctx->head->next) {
        /* The step outgrew the first chunk: replace all chunks by one that
         * holds the whole step, so later steps never allocate. */
        size_t want = ctx->peak + ctx->peak / 8;
        chunk *c = chunk_new(want);
        if (c) {
            chunks_free(ctx->head);
            ctx->head = c;
            ctx->reserved = want;
        } else { /* keep the chunks we have; still correct, just chunked */
            for (chunk *k = ctx->head; k; k = k->next) k->used = 0;
        }
    }
    ctx->head->used = 0;
    ctx->tape_len = 0;
    ctx->pool_len = 0;
    return status;
}

void qat_ctx_set_grad(qat_ctx *ctx, int enabled) { ctx->grad_enabled = enabled != 0; }
int qat_ctx_grad_enabled(const qat_ctx *ctx) { return ctx->grad_enabled; }
void qat_ctx_set_training(qat_ctx *ctx, int training) { ctx->training = training != 0; }
int qat_ctx_training(const qat_ctx *ctx) { return ctx->training; }
void qat_ctx_set_retain_grads(qat_ctx *ctx, int retain) { ctx->retain_grads = retain != 0; }

/* what an arena allocation of n bytes occupies: whole aligned units, at
 * least one */
static size_t arena_size(size_t n)
{
    n = (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    return n ? n : ARENA_ALIGN;
}

void *qat_arena_alloc(qat_ctx *ctx, size_t bytes)
{
    bytes = arena_size(bytes);
    chunk *c = ctx->head;
    if (c->used + bytes > c->size) {
        size_t size = c->size > bytes ? c->size : bytes;
        chunk *n = chunk_new(size);
        if (!n) {
            qat_ctx_fail(ctx, qat_error(QAT_ERR_NOMEM, "arena: cannot allocate %zu bytes", bytes));
            return NULL;
        }
        n->next = c;
        ctx->head = n;
        ctx->reserved += size;
        c = n;
    }
    void *p = c->mem + c->used;
    c->used += bytes;
    return p;
}

/* ---- gradient buffers ----
 * Backward walks the tape in reverse, so when an op's backward has run, the
 * gradient of its output is complete and read by nobody else: the buffer
 * goes back to the context and the next gradient of a size that fits reuses
 * it (best fit; a block much larger than asked for is split, neighbours are
 * merged when freed). Live gradient memory is then a few tensors instead of
 * one per op output. */

static void pool_put(qat_ctx *ctx, unsigned char *p, size_t bytes)
{
    for (int i = 0; i < ctx->pool_len; i++) { /* merge with a neighbour */
        free_block *b = &ctx->pool[i];
        if (b->p + b->bytes == p || p + bytes == b->p) {
            if (p < b->p) b->p = p;
            bytes += b->bytes;
            p = b->p;
            ctx->pool[i] = ctx->pool[--ctx->pool_len];
            i = -1; /* the merged block may touch another */
        }
    }
    if (ctx->pool_len == POOL_MAX) { /* drop the smallest: still correct, only unused until reset */
        int s = 0;
        for (int i = 1; i < ctx->pool_len; i++)
            if (ctx->pool[i].bytes < ctx->pool[s].bytes) s = i;
        if (ctx->pool[s].bytes >= bytes) return;
        ctx->pool[s] = ctx->pool[--ctx->pool_len];
    }
    ctx->pool[ctx->pool_len++] = (free_block){p, bytes};
}

static void *grad_alloc(qat_ctx *ctx, size_t numel)
{
    size_t bytes = arena_size(numel * sizeof(float));
    int best = -1;
    for (int i = 0; i < ctx->pool_len; i++)
        if (ctx->pool[i].bytes >= bytes && (best < 0 || ctx->pool[i].bytes < ctx->pool[best].bytes)) best = i;
    if (best < 0) return qat_arena_alloc(ctx, bytes);
    free_block b = ctx->pool[best];
    ctx->pool[best] = ctx->pool[--ctx->pool_len];
    if (b.bytes - bytes >= bytes / 4 && b.bytes - bytes >= 4096) pool_put(ctx, b.p + bytes, b.bytes - bytes);
    return b.p;
}

/* The gradient of t (a step tensor whose producer's backward has run) is
 * dead: its buffer is reused. */
static void grad_release(qat_ctx *ctx, qat_tensor *t)
{
    if (ctx->retain_grads || !t->grad) return;
    pool_put(ctx, (unsigned char *)t->grad, arena_size(t->numel * sizeof(float)));
    t->grad = NULL;
}

float *qat_grad_fresh(qat_ctx *ctx, qat_tensor *t, int *fresh)
{
    *fresh = 0;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad && !t->persistent) {
        t->grad = grad_alloc(ctx, t->numel);
        *fresh = t->grad != NULL;
        return t->grad;
    }
    return qat_grad(ctx, t);
}

static int check_shape(int ndim, const int *shape)
{
    if (ndim < 0 || ndim > QAT_MAX_DIMS) return 0;
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0) return 0;
    return 1;
}

static void set_shape(qat_tensor *t, int ndim, const int *shape)
{
    t->ndim = ndim;
    for (int i = 0; i < QAT_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = qat_shape_numel(ndim, shape);
}

qat_tensor *qat_new(qat_ctx *ctx, int ndim, const int *shape)
{
    if (!check_shape(ndim, shape))
        return qat_error_null(QAT_ERR_ARG, "qat_new: invalid shape (ndim %d)", ndim);
    qat_tensor *t = qat_arena_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = qat_arena_alloc(ctx, t->numel * sizeof(float));
    return t->data ? t : NULL;
}

qat_tensor *qat_from(qat_ctx *ctx, int ndim, const int *shape, const float *data)
{
    qat_tensor *t = qat_new(ctx, ndim, shape);
    if (t && data) memcpy(t->data, data, t->numel * sizeof(float));
    return t;
}

qat_tensor *qat_new_leaf(qat_ctx *ctx, int ndim, const int *shape, const float *data)
{
    qat_tensor *t = qat_from(ctx, ndim, shape, data);
    if (t) t->requires_grad = 1;
    return t;
}

qat_tensor *qat_tensor_create(int ndim, const int *shape, int requires_grad)
{
    if (!check_shape(ndim, shape))
        return qat_error_null(QAT_ERR_ARG, "qat_tensor_create: invalid shape (ndim %d)", ndim);
    qat_tensor *t = qat_calloc(1, sizeof *t);
    if (!t) return qat_error_null(QAT_ERR_NOMEM, "qat_tensor_create: out of memory");
    set_shape(t, ndim, shape);
    t->persistent = 1;
    t->requires_grad = requires_grad != 0;
    t->data = qat_calloc(t->numel, sizeof(float));
    if (requires_grad) t->grad = qat_calloc(t->numel, sizeof(float));
    if (!t->data || (requires_grad && !t->grad)) {
        qat_tensor_free(t);
        return qat_error_null(QAT_ERR_NOMEM, "qat_tensor_create: out of memory");
    }
    return t;
}

void qat_tensor_free(qat_tensor *t)
{
    if (!t) return;
    if (t->persistent) {
        free(t->data);
        free(t->grad);
        free(t);
    }
}

void qat_tensor_zero_grad(qat_tensor *t)
{
    if (t && t->grad) memset(t->grad, 0, t->numel * sizeof(float));
}

/* ---- tape ---- */

int qat_needs_grad(const qat_ctx *ctx, int n, qat_tensor *const *in)
{
    if (!ctx->grad_enabled) return 0;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return 1;
    return 0;
}

int qat_tape_record(qat_ctx *ctx, const char *name, qat_backward_fn fn, qat_tensor *out,
                    int n_in, qat_tensor *const *in, void *saved)
{
    if (n_in > 4) return qat_ctx_fail(ctx, qat_error(QAT_ERR_ARG, "%s: at most 4 inputs on the tape", name));
    if (ctx->tape_len == ctx->tape_cap) {
        int cap = ctx->tape_cap ? 2 * ctx->tape_cap : 256;
        qat_tape_entry *t = qat_realloc(ctx->tape, (size_t)cap * sizeof *t);
        if (!t) return qat_ctx_fail(ctx, qat_error(QAT_ERR_NOMEM, "%s: tape out of memory", name));
        ctx->tape = t;
        ctx->tape_cap = cap;
    }
    qat_tape_entry *e = &ctx->tape[ctx->tape_len++];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->backward = fn;
    e->out = out;
    for (int i = 0; i < n_in; i++) e->in[i] = in[i];
    e->saved = saved;
    /* an out that already requires a gradient is a leaf, a parameter or
     * the out of an earlier entry (a custom op may record on an existing
     * tensor): its gradient is released, if ever, at that earlier entry */
    e->release = !out->requires_grad && !out->persistent;
    out->requires_grad = 1;
    return QAT_OK;
}

float *qat_grad(qat_ctx *ctx, qat_tensor *t)
{
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad && t->persistent) {
        /* created without a gradient, requires_grad switched on later: the
         * gradient outlives the step, so the tensor owns it (freed by
         * qat_tensor_free) */
        t->grad = qat_calloc(t->numel, sizeof(float));
        if (!t->grad) qat_ctx_fail(ctx, qat_error(QAT_ERR_NOMEM, "gradient: out of memory"));
    } else if (!t->grad) {
        t->grad = grad_alloc(ctx, t->numel);
        if (t->grad) memset(t->grad, 0, t->numel * sizeof(float));
    }
    return t->grad;
}

int qat_backward(qat_ctx *ctx, qat_tensor *loss)
{
    /* an op of the step failed (a NULL loss is its usual sign, but an op
     * whose failure was absorbed downstream leaves only this) */
    if (ctx->status != QAT_OK) return ctx_report(ctx);
    if (!loss) return qat_error(QAT_ERR_ARG, "backward: loss is NULL (an op before it failed: %s)",
                                qat_last_error());
    if (loss->numel != 1) return qat_error(QAT_ERR_SHAPE, "backward: loss must be a scalar, has %zu elements", loss->numel);
    if (!loss->requires_grad) return qat_error(QAT_ERR_STATE, "backward: loss does not depend on anything that requires a gradient");
    /* Intermediate gradients belong to one pass: a second backward in the
     * same step (another loss, or the same one again) must not push the
     * first pass's gradients through the graph again. Parameters and leaves
     * keep accumulating. */
    for (int i = 0; i < ctx->tape_len; i++)
        if (!ctx->tape[i].out->persistent) ctx->tape[i].out->grad = NULL;
    float *g = qat_grad(ctx, loss);
    if (!g) return ctx_report(ctx);
    g[0] += 1.0f;
    for (int i = ctx->tape_len - 1; i >= 0; i--) {
        qat_tape_entry *e = &ctx->tape[i];
        if (!e->out->grad) continue; /* nothing flows back through this op */
        if (!e->backward)
            return qat_ctx_fail(ctx, qat_error(QAT_ERR_UNSUPPORTED, "backward: op '%s' has no backward", e->name));
        e->backward(ctx, e);
        /* a backward that failed (out of memory for a gradient or its
         * scratch) recorded it: the gradients are incomplete, stop */
        if (ctx->status != QAT_OK) return ctx_report(ctx);
        if (e->release) grad_release(ctx, e->out);
    }
    return QAT_OK;
}
