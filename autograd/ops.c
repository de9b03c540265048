/* Elementwise, linear, shape and loss ops; forward and backward side by side. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

#define PAR_MIN 32768 /* elements below which a loop stays serial */
/* Large elementwise loops run in blocks of BLK elements handed out to the
 * threads as they come free: on a shared machine a thread the OS has
 * parked does not hold the others back (results do not depend on the
 * split). */
#define BLK 4096
#define NBLK(n) ((ptrdiff_t)(((n) + BLK - 1) / BLK))

static int same_shape(const qat_tensor *a, const qat_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

static qat_tensor *shape_error(const char *op, const char *what, const qat_tensor *a,
                               const qat_tensor *b)
{
    char sa[64], sb[64];
    return qat_error_null(QAT_ERR_SHAPE, "%s: %s (%s vs %s)", op, what, qat_shape_str(a, sa, sizeof sa),
                          qat_shape_str(b, sb, sizeof sb));
}


/* ---- linear / matmul ----
 * The avx512 engine runs the three products of a linear layer through the
 * kernels of autograd/kernels.h (OpenBLAS is kept to its AVX2 kernels on
 * this machine): y = x W^T as dot products over K (x and W are both
 * K-contiguous, nothing is packed), dx = dy W and dW = dy^T x through the
 * broadcast kernel with the small dy packed. Every output element is
 * computed by one thread, so the results do not depend on the thread
 * count. */

/* 16-bit masks of the dot kernel for a reduction of length K (B's tap and
 * A's rows alike: the first K lanes); NULL when K is a multiple of 16 */
static uint16_t *tail_masks(qat_ctx *ctx, int K)
{
    if (K % 16 == 0) return NULL;
    int nv = (K + 15) / 16;
    uint16_t *m = qat_arena_alloc(ctx, (size_t)nv * 2 * sizeof(uint16_t));
    if (!m) return NULL;
    for (int v = 0; v < nv; v++) {
        int n = K - 16 * v < 16 ? K - 16 * v : 16;
        m[2 * v] = m[2 * v + 1] = (uint16_t)(n == 16 ? 0xffffu : (1u << n) - 1u);
    }
    return m;
}

/* Threads for a product of about `macs` multiply-adds */
static int gemm_threads(double macs) { return macs < 1e6 ? 1 : qat_get_num_threads(); }

/* y (N,M) += x (N,K) W (M,K)^T, rows of y in blocks over the threads */
static int linear_fwd_simd(qat_ctx *ctx, const float *x, const float *w, float *y, int N, int K, int M)
{
    static const ptrdiff_t zero_off[1] = {0};
    uint16_t *mask = tail_masks(ctx, K);
    if (K % 16 && !mask) return -1;
    const int RB = 12, nb = (N + RB - 1) / RB;
    qat_brows br = {M, 1, K, zero_off, NULL, QAT_OUT_UNREADABLE};
#pragma omp parallel for num_threads(gemm_threads((double)N * K * M)) schedule(dynamic, 1)
    for (int bi = 0; bi < nb; bi++) {
        int n0 = bi * RB, rows = N - n0 < RB ? N - n0 : RB;
        qat_gemm_dot(rows, K, 1, x + (size_t)n0 * K, K, 0, w, &br, 0, mask, y + (size_t)n0 * M, M);
    }
    return 0;
}

/* C (R, Ncol) (+)= A (R, Kr) B (Kr, Ncol), A packed (ap), B row-major (ldb),
 * C row-major (ldc); columns in 32-wide strips over the threads */
static void bcast_cols(const float *ap, const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int R, int Kr,
                       int Ncol, int mode)
{
    static const ptrdiff_t zero_off[1] = {0};
    const int CB = 4 * QAT_NR, nb = (Ncol + CB - 1) / CB;
    qat_brows br = {Kr, 1, ldb, zero_off, NULL, QAT_OUT_UNREADABLE};
#pragma omp parallel for num_threads(gemm_threads((double)R * Kr * Ncol)) schedule(dynamic, 1)
    for (int bi = 0; bi < nb; bi++) {
        int c0 = bi * CB, n = Ncol - c0 < CB ? Ncol - c0 : CB;
        qat_cmat cm = {c, ldc, PTRDIFF_MAX, PTRDIFF_MAX, 0};
        qat_gemm_bcast(R, n, ap, b + c0, &br, mode, NULL, &cm, c0);
    }
}

/* saved: nothing; in = {x, w, b} */
static void linear_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    int N = x->shape[0], K = x->shape[1], M = w->shape[0];
    const float *dy = y->grad; /* dy is (N,M) */
    int fresh = 0;
    const int simd = qat_simd_level() >= QAT_SIMD_AVX2;
    float *dx = simd ? qat_grad_fresh(ctx, x, &fresh) : qat_grad(ctx, x);
    float *dw = qat_grad(ctx, w), *db = b ? qat_grad(ctx, b) : NULL;
    float *ap = simd && (dx || dw) ? qat_arena_alloc(ctx, (size_t)N * M * sizeof(float)) : NULL;
    if (simd && (dx || dw) && !ap) return; /* out of memory: error is set */
    if (dx) {
        if (simd) { /* dx (N,K) (+)= dy (N,M) W (M,K) */
            qat_pack_a(ap, dy, M, 1, N, M);
            bcast_cols(ap, w->data, K, dx, K, N, M, K, fresh ? QAT_C_ZERO : QAT_C_ADD);
        } else {
            qat_sgemm(0, 0, N, K, M, 1.0f, dy, M, w->data, K, 1.0f, dx, K); /* dx += dy W */
        }
    }
    if (dw) {
        if (simd) { /* dW (M,K) += dy^T (M,N) x (N,K) */
            qat_pack_a(ap, dy, 1, M, M, N);
            bcast_cols(ap, x->data, K, dw, K, M, N, K, QAT_C_ADD);
        } else {
            qat_sgemm(1, 0, M, K, N, 1.0f, dy, M, x->data, K, 1.0f, dw, K); /* dW += dy^T x */
        }
    }
    if (db)
        for (int n = 0; n < N; n++)
            for (int m = 0; m < M; m++) db[m] += dy[(size_t)n * M + m];
}

qat_tensor *qat_linear(qat_ctx *ctx, qat_tensor *x, qat_tensor *w, qat_tensor *b)
{
    if (!x || !w) return NULL;
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1])
        return shape_error("linear", "x must be [N,K] and weight [M,K]", x, w);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return shape_error("linear", "bias must be [M]", b, w);
    int N = x->shape[0], K = x->shape[1], M = w->shape[0];
    qat_tensor *y = qat_new(ctx, 2, (int[]){N, M});
    if (!y) return NULL;
    if (b)
        for (int n = 0; n < N; n++) memcpy(y->data + (size_t)n * M, b->data, (size_t)M * sizeof(float));
    if (qat_simd_level() >= QAT_SIMD_AVX2) {
        if (!b) memset(y->data, 0, y->numel * sizeof(float));
        if (linear_fwd_simd(ctx, x->data, w->data, y->data, N, K, M)) return NULL;
    } else {
        qat_sgemm(0, 1, N, M, K, 1.0f, x->data, K, w->data, K, b ? 1.0f : 0.0f, y->data, M);
    }
    qat_tensor *in[3] = {x, w, b};
    if (qat_needs_grad(ctx, 3, in) &&
        qat_tape_record(ctx, "linear", linear_backward, y, 3, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

static void matmul_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *a = e->in[0], *b = e->in[1], *y = e->out;
    int N = a->shape[0], K = a->shape[1], M = b->shape[1];
    float *da = qat_grad(ctx, a), *db = qat_grad(ctx, b);
    if (da) qat_sgemm(0, 1, N, K, M, 1.0f, y->grad, M, b->data, M, 1.0f, da, K); /* dA += dY B^T */
    if (db) qat_sgemm(1, 0, K, M, N, 1.0f, a->data, K, y->grad, M, 1.0f, db, M); /* dB += A^T dY */
}

qat_tensor *qat_matmul(qat_ctx *ctx, qat_tensor *a, qat_tensor *b)
{
    if (!a || !b) return NULL;
    if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[0])
        return shape_error("matmul", "inner dimensions differ", a, b);
    int N = a->shape[0], K = a->shape[1], M = b->shape[1];
    qat_tensor *y = qat_new(ctx, 2, (int[]){N, M});
    if (!y) return NULL;
    qat_sgemm(0, 0, N, M, K, 1.0f, a->data, K, b->data, M, 0.0f, y->data, M);
    qat_tensor *in[2] = {a, b};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "matmul", matmul_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- bias add (broadcast along dim 1) ---- */

static void bias_add_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0], *b = e->in[1], *y = e->out;
    int N = x->shape[0], C = x->shape[1];
    size_t inner = x->numel / ((size_t)N * C);
    float *dx = qat_grad(ctx, x), *db = qat_grad(ctx, b);
    if (dx)
        for (size_t i = 0; i < x->numel; i++) dx[i] += y->grad[i];
    if (db)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                const float *g = y->grad + ((size_t)n * C + c) * inner;
                float s = 0;
                for (size_t i = 0; i < inner; i++) s += g[i];
                db[c] += s;
            }
}

qat_tensor *qat_bias_add(qat_ctx *ctx, qat_tensor *x, qat_tensor *b)
{
    if (!x || !b) return NULL;
    if (x->ndim < 2 || b->ndim != 1 || b->shape[0] != x->shape[1])
        return shape_error("bias_add", "bias must be [C] for x [N,C,...]", x, b);
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    int N = x->shape[0], C = x->shape[1];
    size_t inner = x->numel / ((size_t)N * C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            size_t o = ((size_t)n * C + c) * inner;
            for (size_t i = 0; i < inner; i++) y->data[o + i] = x->data[o + i] + b->data[c];
        }
    qat_tensor *in[2] = {x, b};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "bias_add", bias_add_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- add, mul, relu ---- */

static void add_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const float *restrict dy = e->out->grad;
    size_t n = e->out->numel;
    for (int k = 0; k < 2; k++) {
        int fresh;
        float *restrict d = qat_grad_fresh(ctx, e->in[k], &fresh);
        if (!d) continue;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
        for (ptrdiff_t b = 0; b < NBLK(n); b++) {
            size_t i0 = (size_t)b * BLK, i1 = n - i0 < BLK ? n : i0 + BLK;
            if (fresh)
                for (size_t i = i0; i < i1; i++) d[i] = 0.0f + dy[i];
            else
                for (size_t i = i0; i < i1; i++) d[i] += dy[i];
        }
    }
}

qat_tensor *qat_add(qat_ctx *ctx, qat_tensor *a, qat_tensor *b)
{
    if (!a || !b) return NULL;
    if (!same_shape(a, b)) return shape_error("add", "shapes differ", a, b);
    qat_tensor *y = qat_new(ctx, a->ndim, a->shape);
    if (!y) return NULL;
    size_t n = a->numel;
    const float *restrict ad = a->data, *restrict bd = b->data;
    float *restrict yd = y->data;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t k = 0; k < NBLK(n); k++) {
        size_t i0 = (size_t)k * BLK, i1 = n - i0 < BLK ? n : i0 + BLK;
        for (size_t i = i0; i < i1; i++) yd[i] = ad[i] + bd[i];
    }
    qat_tensor *in[2] = {a, b};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "add", add_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

static void mul_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *a = e->in[0], *b = e->in[1];
    const float *dy = e->out->grad;
    float *da = qat_grad(ctx, a), *db = qat_grad(ctx, b);
    size_t n = a->numel;
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dy[i] * b->data[i];
        if (db) db[i] += dy[i] * a->data[i];
    }
}

qat_tensor *qat_mul(qat_ctx *ctx, qat_tensor *a, qat_tensor *b)
{
    if (!a || !b) return NULL;
    if (!same_shape(a, b)) return shape_error("mul", "shapes differ", a, b);
    qat_tensor *y = qat_new(ctx, a->ndim, a->shape);
    if (!y) return NULL;
    for (size_t i = 0; i < a->numel; i++) y->data[i] = a->data[i] * b->data[i];
    qat_tensor *in[2] = {a, b};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "mul", mul_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

static void relu_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    int fresh;
    float *dx = qat_grad_fresh(ctx, e->in[0], &fresh);
    if (!dx) return;
    const float *y = e->out->data, *dy = e->out->grad;
    size_t n = e->out->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        qat_k_relu_bwd(dx + i, y + i, dy + i, m, fresh);
    }
}

qat_tensor *qat_relu(qat_ctx *ctx, qat_tensor *x)
{
    if (!x) return NULL;
    qat_tensor *y = qat_new(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    size_t n = x->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t b = 0; b < NBLK(n); b++) {
        size_t i = (size_t)b * BLK, m = n - i < BLK ? n - i : BLK;
        qat_k_relu_fwd(y->data + i, x->data + i, m);
    }
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "relu", relu_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- add + relu (a residual block's end) ----
 * relu(a + b) in one pass, and one pass back per input: the same bits as
 * qat_add then qat_relu (the same expressions; the add's output gradient,
 * which only the ReLU writes, is fresh there, so it is 0.0f + (y > 0 ? dy :
 * -0.0f), and add's backward adds that into each input). */

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define ELT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ELT_CLONES
#endif

ELT_CLONES static void add_relu_span(float *restrict y, const float *restrict a, const float *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

ELT_CLONES static void add_relu_bwd_span(float *restrict d, const float *restrict y, const float *restrict dy,
                                         size_t n, int fresh)
{
    if (fresh)
        for (size_t i = 0; i < n; i++) d[i] = 0.0f + (0.0f + (y[i] > 0.0f ? dy[i] : -0.0f));
    else
        for (size_t i = 0; i < n; i++) d[i] += 0.0f + (y[i] > 0.0f ? dy[i] : -0.0f);
}

static void add_relu_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    const float *y = e->out->data, *dy = e->out->grad;
    size_t n = e->out->numel;
    for (int k = 0; k < 2; k++) { /* in order, as add's backward (a and b may be one tensor) */
        int fresh;
        float *d = qat_grad_fresh(ctx, e->in[k], &fresh);
        if (!d) continue;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
        for (ptrdiff_t bl = 0; bl < NBLK(n); bl++) {
            size_t i = (size_t)bl * BLK, m = n - i < BLK ? n - i : BLK;
            add_relu_bwd_span(d + i, y + i, dy + i, m, fresh);
        }
    }
}

qat_tensor *qat_add_relu(qat_ctx *ctx, qat_tensor *a, qat_tensor *b)
{
    if (!a || !b) return NULL;
    if (!same_shape(a, b)) return shape_error("add_relu", "shapes differ", a, b);
    qat_tensor *y = qat_new(ctx, a->ndim, a->shape);
    if (!y) return NULL;
    size_t n = a->numel;
#pragma omp parallel for if (n > PAR_MIN) schedule(dynamic, 4)
    for (ptrdiff_t bl = 0; bl < NBLK(n); bl++) {
        size_t i = (size_t)bl * BLK, m = n - i < BLK ? n - i : BLK;
        add_relu_span(y->data + i, a->data + i, b->data + i, m);
    }
    qat_tensor *in[2] = {a, b};
    if (qat_needs_grad(ctx, 2, in) &&
        qat_tape_record(ctx, "add_relu", add_relu_backward, y, 2, in, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- reshape, flatten, sum ---- */

static void reshape_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *dx = qat_grad(ctx, e->in[0]);
    if (!dx) return;
    const float *dy = e->out->grad;
    for (size_t i = 0; i < e->out->numel; i++) dx[i] += dy[i];
}

qat_tensor *qat_reshape(qat_ctx *ctx, qat_tensor *x, int ndim, const int *shape)
{
    if (!x) return NULL;
    if (ndim < 0 || ndim > QAT_MAX_DIMS)
        return qat_error_null(QAT_ERR_ARG, "reshape: ndim %d out of range", ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return qat_error_null(QAT_ERR_ARG, "reshape: dimension %d is %d, must be positive", i, shape[i]);
    if (qat_shape_numel(ndim, shape) != x->numel)
        return qat_error_null(QAT_ERR_SHAPE, "reshape: %zu elements cannot become %zu",
                              x->numel, qat_shape_numel(ndim, shape));
    qat_tensor *y = qat_arena_alloc(ctx, sizeof *y);
    if (!y) return NULL;
    memset(y, 0, sizeof *y);
    y->ndim = ndim;
    for (int i = 0; i < QAT_MAX_DIMS; i++) y->shape[i] = i < ndim ? shape[i] : 1;
    y->numel = x->numel;
    y->data = x->data; /* a view: same values, its own gradient */
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "reshape", reshape_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}

qat_tensor *qat_flatten(qat_ctx *ctx, qat_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim < 1) return qat_error_null(QAT_ERR_SHAPE, "flatten: scalar input");
    int n = x->shape[0];
    return qat_reshape(ctx, x, 2, (int[]){n, (int)(x->numel / (size_t)n)});
}

static void sum_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    float *dx = qat_grad(ctx, e->in[0]);
    if (!dx) return;
    float g = e->out->grad[0];
    for (size_t i = 0; i < e->in[0]->numel; i++) dx[i] += g;
}

qat_tensor *qat_sum(qat_ctx *ctx, qat_tensor *x)
{
    if (!x) return NULL;
    qat_tensor *y = qat_new(ctx, 0, NULL);
    if (!y) return NULL;
    double s = 0;
    for (size_t i = 0; i < x->numel; i++) s += x->data[i];
    y->data[0] = (float)s;
    if (qat_needs_grad(ctx, 1, &x) &&
        qat_tape_record(ctx, "sum", sum_backward, y, 1, &x, NULL) != QAT_OK)
        return NULL;
    return y;
}

/* ---- softmax cross-entropy ---- */

typedef struct {
    float *prob;            /* (N,C) softmax */
    const uint8_t *labels;  /* caller's array, copied into the arena */
} ce_saved;

static void ce_backward(qat_ctx *ctx, const qat_tape_entry *e)
{
    qat_tensor *x = e->in[0];
    const ce_saved *s = e->saved;
    float *dx = qat_grad(ctx, x);
    if (!dx) return;
    int N = x->shape[0], C = x->shape[1];
    float g = e->out->grad[0] / (float)N;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float p = s->prob[(size_t)n * C + c] - (c == s->labels[n] ? 1.0f : 0.0f);
            dx[(size_t)n * C + c] += g * p;
        }
}

qat_tensor *qat_cross_entropy(qat_ctx *ctx, qat_tensor *logits, const uint8_t *labels)
{
    if (!logits) return NULL;
    if (!labels) return qat_error_null(QAT_ERR_ARG, "cross_entropy: labels is NULL");
    if (logits->ndim != 2)
        return qat_error_null(QAT_ERR_SHAPE, "cross_entropy: logits must be [N,C], has %d dims", logits->ndim);
    int N = logits->shape[0], C = logits->shape[1];
    for (int n = 0; n < N; n++)
        if (labels[n] >= C)
            return qat_error_null(QAT_ERR_ARG, "cross_entropy: label %d of row %d is not below %d classes",
                                  labels[n], n, C);
    qat_tensor *y = qat_new(ctx, 0, NULL);
    ce_saved *s = qat_arena_alloc(ctx, sizeof *s);
    float *prob = qat_arena_alloc(ctx, logits->numel * sizeof(float));
    uint8_t *lab = qat_arena_alloc(ctx, (size_t)N);
    if (!y || !s || !prob || !lab) return NULL;
    memcpy(lab, labels, (size_t)N);
    double loss = 0;
    for (int n = 0; n < N; n++) {
        const float *x = logits->data + (size_t)n * C;
        float *p = prob + (size_t)n * C;
        float mx = x[0];
        for (int c = 1; c < C; c++) mx = x[c] > mx ? x[c] : mx;
        double z = 0;
        for (int c = 0; c < C; c++) z += exp((double)x[c] - mx);
        double lz = log(z) + mx;
        for (int c = 0; c < C; c++) p[c] = (float)exp((double)x[c] - lz);
        loss += lz - x[labels[n]];
    }
    y->data[0] = (float)(loss / N);
    s->prob = prob;
    s->labels = lab;
    if (qat_needs_grad(ctx, 1, &logits) &&
        qat_tape_record(ctx, "cross_entropy", ce_backward, y, 1, &logits, s) != QAT_OK)
        return NULL;
    return y;
}

int qat_count_correct(const qat_tensor *logits, const uint8_t *labels)
{
    if (!logits || !labels || logits->ndim != 2) return 0;
    int N = logits->shape[0], C = logits->shape[1], ok = 0;
    for (int n = 0; n < N; n++) {
        const float *x = logits->data + (size_t)n * C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (x[c] > x[best]) best = c;
        ok += best == labels[n];
    }
    return ok;
}
