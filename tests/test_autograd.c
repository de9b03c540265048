/* The step context, the tape and the forward values of the ops:
 * arena reuse, gradient accumulation, no-grad mode, NULL propagation, shape
 * errors, conv2d against a direct convolution, pooling/BN/cross-entropy
 * against hand-computed numbers, determinism. (Gradients: test_gradcheck.) */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/internal.h" /* qat_error */
#include "qat/tensor.h"
#include "testutil.h"

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

#define ASSERT_ERR_HAS(sub) \
    ck_assert_msg(has(qat_last_error(), sub), "last error '%s' lacks '%s'", qat_last_error(), sub)

/* ---- arena ---- */

/* One training-like step: conv -> BN -> relu -> pool -> linear -> CE. */
static float small_step(qat_ctx *ctx, qat_tensor *w, qat_tensor *g, qat_tensor *b, qat_tensor *rm,
                        qat_tensor *rv, qat_tensor *fw, const float *xd, const uint8_t *labels)
{
    qat_tensor *x = qat_from(ctx, 4, (int[]){4, 1, 8, 8}, xd);
    qat_tensor *y = qat_conv2d(ctx, x, w, NULL, 1, 1);
    y = qat_batchnorm2d(ctx, y, g, b, rm, rv, 0.1f, 1e-5f);
    y = qat_relu(ctx, y);
    y = qat_maxpool2d(ctx, y, 2, 2);
    y = qat_linear(ctx, qat_flatten(ctx, y), fw, NULL);
    qat_tensor *loss = qat_cross_entropy(ctx, y, labels);
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    return loss->data[0];
}

START_TEST(test_arena_settles)
{
    qat_rng r;
    qat_rng_seed(&r, 1);
    qat_tensor *w = qat_tensor_create(4, (int[]){3, 1, 3, 3}, 1);
    qat_tensor *g = qat_tensor_create(1, (int[]){3}, 1), *b = qat_tensor_create(1, (int[]){3}, 1);
    qat_tensor *rm = qat_tensor_create(1, (int[]){3}, 0), *rv = qat_tensor_create(1, (int[]){3}, 0);
    qat_tensor *fw = qat_tensor_create(2, (int[]){5, 48}, 1);
    tu_fill_uniform(w->data, w->numel, -0.5f, 0.5f, &r);
    tu_fill_uniform(fw->data, fw->numel, -0.5f, 0.5f, &r);
    for (int c = 0; c < 3; c++) g->data[c] = rv->data[c] = 1.0f;
    float xd[256];
    tu_fill_uniform(xd, 256, -1, 1, &r);
    const uint8_t labels[4] = {0, 1, 2, 4};

    qat_ctx *ctx = qat_ctx_create(1024); /* far too small: the first step grows it */
    ck_assert_ptr_nonnull(ctx);
    ck_assert_uint_eq(qat_ctx_arena_reserved(ctx), 1024);
    small_step(ctx, w, g, b, rm, rv, fw, xd, labels);
    size_t used1 = qat_ctx_arena_used(ctx);
    ck_assert_uint_gt(qat_ctx_arena_reserved(ctx), 1024);
    ck_assert_uint_gt(used1, 1024);
    qat_ctx_reset(ctx);
    ck_assert_uint_eq(qat_ctx_arena_used(ctx), 0);
    size_t settled = qat_ctx_arena_reserved(ctx);
    ck_assert_uint_ge(settled, used1);
    for (int step = 0; step < 5; step++) {
        small_step(ctx, w, g, b, rm, rv, fw, xd, labels);
        ck_assert_uint_eq(qat_ctx_arena_used(ctx), used1);      /* same allocations */
        ck_assert_uint_eq(qat_ctx_arena_reserved(ctx), settled); /* and no growth */
        qat_ctx_reset(ctx);
        ck_assert_uint_eq(qat_ctx_arena_reserved(ctx), settled);
    }
    /* the memory is reused: the first allocation lands at the same address */
    void *p1 = qat_arena_alloc(ctx, 100);
    qat_ctx_reset(ctx);
    void *p2 = qat_arena_alloc(ctx, 100);
    ck_assert_ptr_eq(p1, p2);
    ck_assert_uint_eq((uintptr_t)p1 % 64, 0);
    ck_assert_uint_eq((uintptr_t)qat_arena_alloc(ctx, 3) % 64, 0);
    qat_ctx_free(ctx);
    qat_tensor *all[] = {w, g, b, rm, rv, fw};
    for (int i = 0; i < 6; i++) qat_tensor_free(all[i]);
}
END_TEST

START_TEST(test_tensor_create)
{
    qat_tensor *t = qat_tensor_create(2, (int[]){2, 3}, 1);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_uint_eq(t->numel, 6);
    ck_assert_int_eq(t->persistent, 1);
    for (int i = 0; i < 6; i++) {
        ck_assert(t->data[i] == 0.0f);
        ck_assert(t->grad[i] == 0.0f);
    }
    t->grad[4] = 3;
    qat_tensor_zero_grad(t);
    ck_assert(t->grad[4] == 0.0f);
    qat_tensor_free(t);
    qat_tensor_free(NULL);
    qat_tensor_zero_grad(NULL);
    t = qat_tensor_create(1, (int[]){4}, 0);
    ck_assert_ptr_null(t->grad);
    qat_tensor_free(t);
    qat_clear_error();
    ck_assert_ptr_null(qat_tensor_create(2, (int[]){2, 0}, 0));
    ASSERT_ERR_HAS("invalid shape");
    ck_assert_ptr_null(qat_tensor_create(5, (int[]){1, 1, 1, 1, 1}, 0));
    qat_ctx *ctx = qat_ctx_create(0);
    ck_assert_ptr_null(qat_new(ctx, 1, (int[]){-3}));
    ASSERT_ERR_HAS("qat_new");
    qat_tensor *s = qat_new(ctx, 0, NULL); /* a scalar */
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->numel, 1);
    ck_assert_int_eq(s->requires_grad, 0);
    ck_assert_int_eq(qat_new_leaf(ctx, 0, NULL, NULL)->requires_grad, 1);
    qat_ctx_free(ctx);
    qat_ctx_free(NULL);
}
END_TEST

/* ---- tape ---- */

/* loss = sum(w * x), d loss / d w = x */
static qat_tensor *wx_loss(qat_ctx *ctx, qat_tensor *w, const float *x)
{
    qat_tensor *xt = qat_from(ctx, 1, (int[]){3}, x);
    return qat_sum(ctx, qat_mul(ctx, qat_relu(ctx, w), xt));
}

START_TEST(test_grad_accumulates)
{
    const float x[3] = {1.5f, -2.0f, 0.25f};
    qat_tensor *w = qat_tensor_create(1, (int[]){3}, 1);
    w->data[0] = 1;
    w->data[1] = 2;
    w->data[2] = 3;
    qat_ctx *ctx = qat_ctx_create(0);
    /* two steps, one backward each: gradients add up until zeroed */
    for (int step = 1; step <= 2; step++) {
        ck_assert_int_eq(qat_backward(ctx, wx_loss(ctx, w, x)), QAT_OK);
        qat_ctx_reset(ctx);
        for (int i = 0; i < 3; i++) ck_assert_float_eq(w->grad[i], step * x[i]);
    }
    qat_tensor_zero_grad(w);
    /* the same loss backward twice in one step: twice the gradient (the
     * step's intermediate gradients must not be counted again) */
    qat_tensor *loss = wx_loss(ctx, w, x);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    for (int i = 0; i < 3; i++) ck_assert_float_eq(w->grad[i], 2 * x[i]);
    qat_ctx_reset(ctx);
    qat_tensor_zero_grad(w);
    /* two losses in one step, one backward each: each counted once */
    const float x2[3] = {4, 5, 6};
    qat_tensor *l1 = wx_loss(ctx, w, x), *l2 = wx_loss(ctx, w, x2);
    ck_assert_int_eq(qat_backward(ctx, l1), QAT_OK);
    ck_assert_int_eq(qat_backward(ctx, l2), QAT_OK);
    for (int i = 0; i < 3; i++) ck_assert_float_eq(w->grad[i], x[i] + x2[i]);
    qat_ctx_reset(ctx);
    qat_ctx_free(ctx);
    qat_tensor_free(w);
}
END_TEST

/* Intermediate gradients are recycled once the op that produced the
 * tensor has run its backward: a deep chain needs a few tensors' worth of
 * gradient memory instead of one per op; parameter gradients are the same
 * bits as with every intermediate gradient kept (retain_grads), and only
 * retain_grads leaves them readable. */
static qat_tensor *chain(qat_ctx *ctx, qat_tensor *w, qat_tensor *x, qat_tensor **mid)
{
    qat_tensor *z = x;
    for (int i = 0; i < 40; i++) {
        z = qat_relu(ctx, qat_add(ctx, qat_mul(ctx, z, w), x));
        if (i == 20) *mid = z;
    }
    return qat_sum(ctx, z);
}

static void mark_backward(qat_ctx *ctx, const qat_tape_entry *e) { (void)ctx, (void)e; }

START_TEST(test_grad_buffers_recycled)
{
    enum { N = 1 << 16 }; /* 256 KiB a tensor */
    qat_tensor *w = qat_tensor_create(1, (int[]){N}, 1);
    float *xd = malloc(N * sizeof(float)), *g0 = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) {
        w->data[i] = 0.9f + 0.2f * (float)((i * 7919) % 101) / 101.0f;
        xd[i] = (float)((i * 31) % 17) / 8.0f - 1.0f;
    }
    size_t used[2];
    for (int retain = 1; retain >= 0; retain--) {
        qat_ctx *ctx = qat_ctx_create(0);
        qat_ctx_set_retain_grads(ctx, retain);
        qat_tensor_zero_grad(w);
        qat_tensor *x = qat_from(ctx, 1, (int[]){N}, xd), *mid = NULL;
        qat_tensor *loss = chain(ctx, w, x, &mid);
        size_t fwd = qat_ctx_arena_used(ctx);
        ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
        used[retain] = qat_ctx_arena_used(ctx) - fwd;
        if (retain) {
            ck_assert_ptr_nonnull(mid->grad);
            memcpy(g0, w->grad, N * sizeof(float));
        } else {
            ck_assert_ptr_null(mid->grad);
            ck_assert_ptr_null(loss->grad);
            ck_assert_int_eq(memcmp(g0, w->grad, N * sizeof(float)), 0);
        }
        qat_ctx_free(ctx);
    }
    /* a second entry recorded on an op's output (a profiler's marker) must
     * not end the gradient before the op itself has used it */
    {
        qat_ctx *ctx = qat_ctx_create(0);
        qat_tensor_zero_grad(w);
        qat_tensor *x = qat_from(ctx, 1, (int[]){N}, xd), *mid = NULL;
        qat_tensor *z = x;
        for (int i = 0; i < 40; i++) {
            z = qat_relu(ctx, qat_add(ctx, qat_mul(ctx, z, w), x));
            ck_assert_int_eq(qat_tape_record(ctx, "mark", mark_backward, z, 0, NULL, NULL), QAT_OK);
        }
        (void)mid;
        ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, z)), QAT_OK);
        ck_assert_int_eq(memcmp(g0, w->grad, N * sizeof(float)), 0);
        qat_ctx_free(ctx);
    }
    /* 121 intermediate tensors: kept, about 121 gradients; recycled, a few */
    ck_assert_uint_ge(used[1], (size_t)120 * N * sizeof(float));
    ck_assert_uint_le(used[0], (size_t)4 * N * sizeof(float));
    free(xd);
    free(g0);
    qat_tensor_free(w);
}
END_TEST

/* A persistent tensor created without a gradient and switched to
 * requires_grad later (unfreezing) must get a gradient it owns, not arena
 * memory that dies at reset. */
START_TEST(test_unfrozen_param_grad)
{
    const float x[3] = {1, 2, 3};
    qat_tensor *w = qat_tensor_create(1, (int[]){3}, 0);
    for (int i = 0; i < 3; i++) w->data[i] = 1;
    w->requires_grad = 1;
    qat_ctx *ctx = qat_ctx_create(4096);
    for (int step = 1; step <= 3; step++) {
        ck_assert_int_eq(qat_backward(ctx, wx_loss(ctx, w, x)), QAT_OK);
        ck_assert_ptr_nonnull(w->grad);
        qat_ctx_reset(ctx);
        float pad[4096];
        memset(qat_arena_alloc(ctx, sizeof pad), 0x7f, sizeof pad); /* reuse the arena */
        qat_ctx_reset(ctx);
        for (int i = 0; i < 3; i++) ck_assert_float_eq(w->grad[i], step * x[i]);
    }
    qat_ctx_free(ctx);
    qat_tensor_free(w); /* frees its gradient */
}
END_TEST

START_TEST(test_no_grad)
{
    qat_tensor *w = qat_tensor_create(1, (int[]){3}, 1);
    const float x[3] = {1, 2, 3};
    qat_ctx *ctx = qat_ctx_create(0);
    ck_assert_int_eq(qat_ctx_grad_enabled(ctx), 1);
    qat_ctx_set_grad(ctx, 0);
    ck_assert_int_eq(qat_ctx_grad_enabled(ctx), 0);
    qat_tensor *loss = wx_loss(ctx, w, x);
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(loss->requires_grad, 0); /* nothing recorded */
    qat_clear_error();
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_ERR_STATE);
    ASSERT_ERR_HAS("does not depend on anything that requires a gradient");
    for (int i = 0; i < 3; i++) ck_assert(w->grad[i] == 0.0f);
    qat_ctx_set_grad(ctx, 1);
    loss = wx_loss(ctx, w, x);
    ck_assert_int_eq(loss->requires_grad, 1);
    /* backward from a non-scalar */
    qat_tensor *v = qat_relu(ctx, w);
    ck_assert_int_eq(qat_backward(ctx, v), QAT_ERR_SHAPE);
    ASSERT_ERR_HAS("scalar");
    qat_ctx_free(ctx);
    qat_tensor_free(w);
}
END_TEST

/* The extension API: qat_needs_grad, qat_tape_record, qat_grad. */
START_TEST(test_custom_op_api)
{
    qat_ctx *ctx = qat_ctx_create(0);
    float d[2] = {1, 2};
    qat_tensor *c = qat_from(ctx, 1, (int[]){2}, d), *l = qat_new_leaf(ctx, 1, (int[]){2}, d);
    qat_tensor *none[2] = {c, NULL}, *some[2] = {c, l};
    ck_assert_int_eq(qat_needs_grad(ctx, 2, none), 0);
    ck_assert_int_eq(qat_needs_grad(ctx, 2, some), 1);
    qat_ctx_set_grad(ctx, 0);
    ck_assert_int_eq(qat_needs_grad(ctx, 2, some), 0);
    qat_ctx_set_grad(ctx, 1);
    ck_assert_ptr_null(qat_grad(ctx, c));
    ck_assert_ptr_null(qat_grad(ctx, NULL));
    float *g = qat_grad(ctx, l);
    ck_assert_ptr_nonnull(g);
    ck_assert(g[0] == 0.0f && g[1] == 0.0f);
    ck_assert_ptr_eq(qat_grad(ctx, l), g); /* allocated once */
    /* an op recorded without a backward: a clear error, not a crash */
    qat_tensor *y = qat_new(ctx, 0, NULL);
    y->data[0] = 3;
    ck_assert_int_eq(qat_tape_record(ctx, "mystery", NULL, y, 1, &l, NULL), QAT_OK);
    ck_assert_int_eq(y->requires_grad, 1);
    ck_assert_int_eq(qat_backward(ctx, y), QAT_ERR_UNSUPPORTED);
    ASSERT_ERR_HAS("op 'mystery' has no backward");
    /* a long tape (grows past its first allocation) */
    qat_ctx_reset(ctx);
    l = qat_new_leaf(ctx, 1, (int[]){2}, d); /* {1, 2} */
    c = qat_from(ctx, 1, (int[]){2}, d);
    qat_tensor *m = qat_from(ctx, 1, (int[]){2}, (float[]){1, -1});
    qat_tensor *z = l;
    for (int i = 0; i < 1000; i++) z = qat_mul(ctx, qat_add(ctx, z, c), m); /* 2000 entries */
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, z)), QAT_OK);
    ck_assert_float_eq(z->data[0], 1001.0f);
    ck_assert_float_eq(z->data[1], 2.0f); /* -(z+2): 2, -4, 2, ... */
    ck_assert_float_eq(l->grad[0], 1.0f);
    ck_assert_float_eq(l->grad[1], 1.0f); /* (-1)^1000 */
    qat_tensor *five[5] = {l, l, l, l, l};
    ck_assert_int_eq(qat_tape_record(ctx, "wide", NULL, y, 5, five, NULL), QAT_ERR_ARG);
    ASSERT_ERR_HAS("wide: at most 4 inputs");
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_null_propagation)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *t2 = qat_from(ctx, 2, (int[]){2, 3}, NULL);
    qat_tensor *t4 = qat_from(ctx, 4, (int[]){1, 1, 4, 4}, NULL);
    qat_tensor *w4 = qat_from(ctx, 4, (int[]){1, 1, 3, 3}, NULL);
    qat_tensor *c1 = qat_from(ctx, 1, (int[]){1}, NULL);
    const uint8_t lab[2] = {0, 0};
    qat_error(QAT_ERR_SHAPE, "first failure");
    ck_assert_ptr_null(qat_linear(ctx, NULL, t2, NULL));
    ck_assert_ptr_null(qat_linear(ctx, t2, NULL, NULL));
    ck_assert_ptr_null(qat_matmul(ctx, NULL, t2));
    ck_assert_ptr_null(qat_matmul(ctx, t2, NULL));
    ck_assert_ptr_null(qat_bias_add(ctx, NULL, c1));
    ck_assert_ptr_null(qat_bias_add(ctx, t4, NULL));
    ck_assert_ptr_null(qat_add(ctx, NULL, t2));
    ck_assert_ptr_null(qat_add(ctx, t2, NULL));
    ck_assert_ptr_null(qat_mul(ctx, NULL, t2));
    ck_assert_ptr_null(qat_mul(ctx, t2, NULL));
    ck_assert_ptr_null(qat_relu(ctx, NULL));
    ck_assert_ptr_null(qat_conv2d(ctx, NULL, w4, NULL, 1, 0));
    ck_assert_ptr_null(qat_conv2d(ctx, t4, NULL, NULL, 1, 0));
    ck_assert_ptr_null(qat_maxpool2d(ctx, NULL, 2, 2));
    ck_assert_ptr_null(qat_avgpool2d(ctx, NULL, 2, 2));
    ck_assert_ptr_null(qat_global_avgpool(ctx, NULL));
    ck_assert_ptr_null(qat_batchnorm2d(ctx, NULL, c1, c1, c1, c1, 0.1f, 1e-5f));
    ck_assert_ptr_null(qat_batchnorm2d(ctx, t4, NULL, c1, c1, c1, 0.1f, 1e-5f));
    ck_assert_ptr_null(qat_reshape(ctx, NULL, 1, (int[]){6}));
    ck_assert_ptr_null(qat_flatten(ctx, NULL));
    ck_assert_ptr_null(qat_sum(ctx, NULL));
    ck_assert_ptr_null(qat_cross_entropy(ctx, NULL, lab));
    ck_assert_ptr_null(qat_channel_mul(ctx, NULL, c1, 0, 0));
    ck_assert_int_eq(qat_count_correct(NULL, lab), 0);
    /* none of them replaced the first error */
    ck_assert_str_eq(qat_last_error(), "first failure");
    ck_assert_int_eq(qat_backward(ctx, NULL), QAT_ERR_ARG);
    ASSERT_ERR_HAS("loss is NULL");
    ASSERT_ERR_HAS("first failure");
    /* a chain checked once, at the loss */
    qat_tensor *y = qat_relu(ctx, qat_add(ctx, t2, t4));
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, y)), QAT_ERR_ARG);
    ASSERT_ERR_HAS("add");
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_shape_errors)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_from(ctx, 4, (int[]){2, 3, 8, 8}, NULL);
    qat_tensor *w1 = qat_from(ctx, 4, (int[]){4, 1, 3, 3}, NULL);
    qat_tensor *w3 = qat_from(ctx, 4, (int[]){4, 3, 3, 3}, NULL);
    qat_clear_error();
    ck_assert_ptr_null(qat_conv2d(ctx, x, w1, NULL, 1, 0));
    ck_assert_str_eq(qat_last_error(), "conv2d: input has 3 channels, weight expects 1");
    ck_assert_ptr_null(qat_conv2d(ctx, x, w3, qat_from(ctx, 1, (int[]){3}, NULL), 1, 0));
    ASSERT_ERR_HAS("bias must have 4 elements");
    ck_assert_ptr_null(qat_conv2d(ctx, x, w3, NULL, 0, 0));
    ASSERT_ERR_HAS("stride 0");
    ck_assert_ptr_null(qat_conv2d(ctx, x, qat_from(ctx, 4, (int[]){4, 3, 11, 11}, NULL), NULL, 1, 1));
    ASSERT_ERR_HAS("larger than padded input 10x10");
    ck_assert_ptr_null(qat_conv2d(ctx, qat_from(ctx, 2, (int[]){2, 3}, NULL), w3, NULL, 1, 0));
    ASSERT_ERR_HAS("[2,3]");

    qat_tensor *a = qat_from(ctx, 2, (int[]){5, 7}, NULL);
    qat_tensor *lw = qat_from(ctx, 2, (int[]){4, 6}, NULL);
    ck_assert_ptr_null(qat_linear(ctx, a, lw, NULL));
    ASSERT_ERR_HAS("linear");
    ASSERT_ERR_HAS("[5,7]");
    ASSERT_ERR_HAS("[4,6]");
    ck_assert_ptr_null(qat_linear(ctx, a, qat_from(ctx, 2, (int[]){4, 7}, NULL), qat_from(ctx, 1, (int[]){5}, NULL)));
    ASSERT_ERR_HAS("bias");
    ck_assert_ptr_null(qat_matmul(ctx, a, lw));
    ASSERT_ERR_HAS("matmul: inner dimensions differ ([5,7] vs [4,6])");

    ck_assert_ptr_null(qat_add(ctx, a, qat_from(ctx, 2, (int[]){7, 5}, NULL)));
    ck_assert_str_eq(qat_last_error(), "add: shapes differ ([5,7] vs [7,5])");
    ck_assert_ptr_null(qat_mul(ctx, a, qat_from(ctx, 1, (int[]){35}, NULL)));
    ASSERT_ERR_HAS("mul: shapes differ");
    ck_assert_ptr_null(qat_bias_add(ctx, x, qat_from(ctx, 1, (int[]){2}, NULL)));
    ASSERT_ERR_HAS("bias_add");

    ck_assert_ptr_null(qat_maxpool2d(ctx, a, 2, 2));
    ASSERT_ERR_HAS("maxpool2d: input must be [N,C,H,W]");
    ck_assert_ptr_null(qat_avgpool2d(ctx, x, 9, 1));
    ASSERT_ERR_HAS("avgpool2d: kernel 9 larger than input 8x8");
    ck_assert_ptr_null(qat_maxpool2d(ctx, x, 2, 0));
    ASSERT_ERR_HAS("stride 0");
    ck_assert_ptr_null(qat_global_avgpool(ctx, a));
    ASSERT_ERR_HAS("global_avgpool");

    qat_tensor *c4 = qat_from(ctx, 1, (int[]){4}, NULL);
    ck_assert_ptr_null(qat_batchnorm2d(ctx, x, c4, c4, c4, c4, 0.1f, 1e-5f));
    ASSERT_ERR_HAS("batchnorm2d: input has 3 channels");
    qat_tensor *c1 = qat_from(ctx, 1, (int[]){1}, NULL);
    ck_assert_ptr_null(qat_batchnorm2d(ctx, qat_from(ctx, 4, (int[]){1, 1, 1, 1}, NULL), c1, c1, c1,
                                       c1, 0.1f, 1e-5f));
    ASSERT_ERR_HAS("more than one value per channel");

    ck_assert_ptr_null(qat_reshape(ctx, a, 2, (int[]){6, 6}));
    ASSERT_ERR_HAS("reshape: 35 elements cannot become 36");
    ck_assert_ptr_null(qat_reshape(ctx, qat_from(ctx, 1, (int[]){6}, NULL), 2, (int[]){-2, -3}));
    ASSERT_ERR_HAS("reshape");
    ck_assert_ptr_null(qat_reshape(ctx, a, 5, (int[]){35, 1, 1, 1, 1}));
    ASSERT_ERR_HAS("ndim 5");

    const uint8_t lab[5] = {0, 1, 7, 2, 3};
    ck_assert_ptr_null(qat_cross_entropy(ctx, a, lab));
    ASSERT_ERR_HAS("label 7 of row 2 is not below 7 classes");
    ck_assert_ptr_null(qat_cross_entropy(ctx, a, NULL));
    ASSERT_ERR_HAS("labels is NULL");
    ck_assert_ptr_null(qat_cross_entropy(ctx, x, lab));
    ASSERT_ERR_HAS("logits must be [N,C]");
    qat_ctx_free(ctx);
}
END_TEST

/* ---- conv2d against a direct convolution ---- */

static void conv_ref(double *y, const float *x, const float *w, const float *b, double *mag, int N,
                     int C, int H, int W, int OC, int KH, int KW, int s, int p, int OH, int OW)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b ? b[o] : 0, m = b ? fabs(b[o]) : 0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < KH; i++)
                            for (int j = 0; j < KW; j++) {
                                int ih = oh * s - p + i, iw = ow * s - p + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                double t = (double)x[((n * C + c) * H + ih) * W + iw] *
                                           w[((o * C + c) * KH + i) * KW + j];
                                acc += t;
                                m += fabs(t);
                            }
                    size_t k = (((size_t)n * OC + o) * OH + oh) * OW + ow;
                    y[k] = acc;
                    mag[k] = m;
                }
}

START_TEST(test_conv2d_direct)
{
    qat_rng r;
    qat_rng_seed(&r, 50 + (uint64_t)_i);
    qat_set_num_threads(2);
    int N = 1 + (int)qat_rng_below(&r, 5), C = 1 + (int)qat_rng_below(&r, 6);
    int OC = 1 + (int)qat_rng_below(&r, 9), KH = 1 + (int)qat_rng_below(&r, 5);
    int KW = _i % 3 ? KH : 1 + (int)qat_rng_below(&r, 5);
    int s = 1 + (int)qat_rng_below(&r, 3), p = (int)qat_rng_below(&r, 3);
    int H = KH + (int)qat_rng_below(&r, 9), W = KW + (int)qat_rng_below(&r, 12);
    int bias = (int)qat_rng_below(&r, 2);
    if (_i == 0) { /* the 1x1 fast path */
        KH = KW = 1;
        s = 1;
        p = 0;
    }
    int OH = (H + 2 * p - KH) / s + 1, OW = (W + 2 * p - KW) / s + 1;
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){N, C, H, W});
    qat_tensor *w = qat_new(ctx, 4, (int[]){OC, C, KH, KW});
    qat_tensor *b = bias ? qat_new(ctx, 1, &OC) : NULL;
    tu_fill_uniform(x->data, x->numel, -1, 1, &r);
    tu_fill_uniform(w->data, w->numel, -1, 1, &r);
    if (b) tu_fill_uniform(b->data, b->numel, -1, 1, &r);
    qat_tensor *y = qat_conv2d(ctx, x, w, b, s, p);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->ndim, 4);
    ck_assert_int_eq(y->shape[0], N);
    ck_assert_int_eq(y->shape[1], OC);
    ck_assert_int_eq(y->shape[2], OH);
    ck_assert_int_eq(y->shape[3], OW);
    double *ref = malloc(y->numel * sizeof(double)), *mag = malloc(y->numel * sizeof(double));
    conv_ref(ref, x->data, w->data, b ? b->data : NULL, mag, N, C, H, W, OC, KH, KW, s, p, OH, OW);
    for (size_t k = 0; k < y->numel; k++)
        ck_assert_msg(fabs(y->data[k] - ref[k]) <= 1e-5 * (mag[k] + 1e-30),
                      "conv [N%d C%d %dx%d OC%d k%dx%d s%d p%d] y[%zu] = %.8g, direct %.8g", N, C, H,
                      W, OC, KH, KW, s, p, k, y->data[k], ref[k]);
    free(ref);
    free(mag);
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_conv2d_hand)
{
    /* 1x1x3x3 input 1..9, 2x2 kernel of ones, pad 1, stride 2, bias 0.5 */
    qat_ctx *ctx = qat_ctx_create(0);
    float xd[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wd[4] = {1, 1, 1, 1}, bd[1] = {0.5f};
    qat_tensor *y = qat_conv2d(ctx, qat_from(ctx, 4, (int[]){1, 1, 3, 3}, xd),
                               qat_from(ctx, 4, (int[]){1, 1, 2, 2}, wd),
                               qat_from(ctx, 1, (int[]){1}, bd), 2, 1);
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 2);
    /* windows: {1}, {2,3}, {4,7}, {5,6,8,9} */
    const float want[4] = {1.5f, 5.5f, 11.5f, 28.5f};
    for (int i = 0; i < 4; i++) ck_assert_float_eq(y->data[i], want[i]);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- pooling ---- */

START_TEST(test_pool_hand)
{
    qat_ctx *ctx = qat_ctx_create(0);
    /* 1x1x4x5: 0..19 with a few swaps */
    float xd[20] = {0, 5, 2, 3, 4,  /* */
                    1, 6, 7, 19, 9, /* */
                    10, 11, 12, 13, 14, 15, -16, 17, 18, 8};
    qat_tensor *x = qat_from(ctx, 4, (int[]){1, 1, 4, 5}, xd);
    qat_tensor *y = qat_maxpool2d(ctx, x, 2, 2); /* 2x2; last column dropped */
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 2);
    const float mx[4] = {6, 19, 15, 18};
    for (int i = 0; i < 4; i++) ck_assert_float_eq(y->data[i], mx[i]);
    y = qat_maxpool2d(ctx, x, 3, 2); /* overlapping: 1x2 */
    ck_assert_int_eq(y->shape[2], 1);
    ck_assert_int_eq(y->shape[3], 2);
    ck_assert_float_eq(y->data[0], 12);
    ck_assert_float_eq(y->data[1], 19);
    y = qat_avgpool2d(ctx, x, 2, 2);
    const float av[4] = {3, 7.75f, 5, 15};
    for (int i = 0; i < 4; i++) ck_assert_float_eq(y->data[i], av[i]);
    y = qat_avgpool2d(ctx, x, 3, 1); /* 2x3 */
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 3);
    ck_assert_float_eq_tol(y->data[0], 54.0f / 9, 1e-6f);
    ck_assert_float_eq_tol(y->data[5], (7 + 19 + 9 + 12 + 13 + 14 + 17 + 18 + 8) / 9.0f, 1e-6f);
    y = qat_global_avgpool(ctx, x);
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_float_eq_tol(y->data[0], 158.0f / 20, 1e-6f);
    /* max-pool ties: the first maximum receives the gradient */
    float td[4] = {3, 3, 3, 3};
    qat_tensor *t = qat_new_leaf(ctx, 4, (int[]){1, 1, 2, 2}, td);
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_maxpool2d(ctx, t, 2, 2))), QAT_OK);
    ck_assert_float_eq(t->grad[0], 1);
    ck_assert_float_eq(t->grad[1] + t->grad[2] + t->grad[3], 0);
    qat_ctx_free(ctx);
}
END_TEST

/* qat_maxpool2d_ex: PyTorch's padding (-inf, never wins) and indices (h*W + w
 * within the plane), by hand. */
START_TEST(test_maxpool_ex_hand)
{
    qat_ctx *ctx = qat_ctx_create(0);
    float xd[20] = {0, 5, 2, 3, 4,  /* */
                    1, 6, 7, 19, 9, /* */
                    10, 11, 12, 13, 14, 15, -16, 17, 18, 8};
    qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){1, 1, 4, 5}, xd);
    const int32_t *ix = NULL;
    /* k 3, stride 2, pad 1: OH = (4+2-3)/2+1 = 2, OW = (5+2-3)/2+1 = 3;
     * rows {0,1}, {1,2,3} x cols {0,1}, {1,2,3}, {3,4} */
    qat_tensor *y = qat_maxpool2d_ex(ctx, x, 3, 2, 1, &ix);
    ck_assert_ptr_nonnull(y);
    ck_assert_ptr_nonnull(ix);
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 3);
    const float want[6] = {6, 19, 19, 15, 19, 19};
    const int32_t want_ix[6] = {6, 8, 8, 15, 8, 8};
    for (int i = 0; i < 6; i++) {
        ck_assert_float_eq(y->data[i], want[i]);
        ck_assert_int_eq(ix[i], want_ix[i]);
    }
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, y)), QAT_OK);
    for (int i = 0; i < 20; i++)
        ck_assert_float_eq(x->grad[i], i == 8 ? 4.0f : i == 6 || i == 15 ? 1.0f : 0.0f);

    /* all negative: the padding is -inf, not 0. k 2, stride 2, pad 1 on 2x2:
     * each window holds one element, so y = x, indices 0..3 */
    float nd[4] = {-4, -3, -2, -1};
    qat_tensor *xn = qat_from(ctx, 4, (int[]){1, 1, 2, 2}, nd);
    y = qat_maxpool2d_ex(ctx, xn, 2, 2, 1, &ix);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 2);
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(y->data[i], nd[i]);
        ck_assert_int_eq(ix[i], i);
    }
    /* k 3, stride 1, pad 1: every window is the whole 2x2 image */
    y = qat_maxpool2d_ex(ctx, xn, 3, 1, 1, &ix);
    ck_assert_int_eq(y->shape[2], 2);
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(y->data[i], -1);
        ck_assert_int_eq(ix[i], 3);
    }
    /* -inf everywhere: the first element of the clipped window (PyTorch) */
    float id[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    y = qat_maxpool2d_ex(ctx, qat_from(ctx, 4, (int[]){1, 1, 2, 2}, id), 3, 1, 1, &ix);
    for (int i = 0; i < 4; i++) {
        ck_assert(y->data[i] == -INFINITY);
        ck_assert_int_eq(ix[i], 0);
    }
    /* indices of the 2x2 stride 2 fast path, per plane (2 planes), odd size */
    float pd[2 * 9] = {1, 9, 2, 3, 4, 5, 6, 7, 8, /* */ 9, 1, 2, 3, 0, 5, 6, 7, 8};
    y = qat_maxpool2d_ex(ctx, qat_from(ctx, 4, (int[]){1, 2, 3, 3}, pd), 2, 2, 0, &ix);
    ck_assert_int_eq(y->numel, 2);
    ck_assert_float_eq(y->data[0], 9);
    ck_assert_int_eq(ix[0], 1);
    ck_assert_float_eq(y->data[1], 9);
    ck_assert_int_eq(ix[1], 0);
    /* without indices */
    ck_assert_ptr_nonnull(qat_maxpool2d_ex(ctx, x, 3, 2, 1, NULL));
    /* padding above half the kernel (PyTorch's bound) */
    ix = (const int32_t *)1;
    ck_assert_ptr_null(qat_maxpool2d_ex(ctx, x, 3, 2, 2, &ix));
    ck_assert_ptr_null(ix);
    ASSERT_ERR_HAS("maxpool2d: padding 2 outside [0, 1]");
    ck_assert_ptr_null(qat_maxpool2d_ex(ctx, x, 2, 2, -1, NULL));
    ck_assert_ptr_null(qat_maxpool2d_ex(ctx, NULL, 2, 2, 0, NULL));
    qat_ctx_free(ctx);
}
END_TEST

/* pad 0: qat_maxpool2d_ex is qat_maxpool2d (values and gradients bit for
 * bit, with 1 and 2 threads), and the indices point at the outputs. */
START_TEST(test_maxpool_ex_pad0)
{
    const int cfg[][6] = {{2, 3, 8, 8, 2, 2}, {3, 2, 7, 9, 2, 2}, {2, 4, 9, 7, 3, 2}, {1, 2, 6, 6, 3, 1},
                          {4, 8, 64, 40, 2, 2}, {4, 8, 40, 33, 3, 3}};
    qat_rng r;
    qat_rng_seed(&r, 77);
    for (int nt = 1; nt <= 2; nt++) {
        qat_set_num_threads(nt);
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            const int *d = cfg[c];
            size_t n = (size_t)d[0] * d[1] * d[2] * d[3];
            float *xd = malloc(n * sizeof *xd);
            ck_assert_ptr_nonnull(xd);
            tu_fill_uniform(xd, n, -1, 1, &r);
            for (size_t i = 0; i < n; i += 7) xd[i] = xd[i / 2]; /* ties */
            qat_ctx *ctx = qat_ctx_create(0);
            qat_tensor *x1 = qat_new_leaf(ctx, 4, d, xd), *x2 = qat_new_leaf(ctx, 4, d, xd);
            const int32_t *ix = NULL;
            qat_tensor *y1 = qat_maxpool2d(ctx, x1, d[4], d[5]);
            qat_tensor *y2 = qat_maxpool2d_ex(ctx, x2, d[4], d[5], 0, &ix);
            ck_assert(y1 && y2 && ix);
            ck_assert_int_eq(y1->numel, y2->numel);
            ck_assert(!memcmp(y1->data, y2->data, y1->numel * sizeof(float)));
            size_t plane = (size_t)y2->shape[2] * y2->shape[3], hw = (size_t)d[2] * d[3];
            for (size_t o = 0; o < y2->numel; o++) {
                ck_assert(ix[o] >= 0 && (size_t)ix[o] < hw);
                ck_assert(xd[o / plane * hw + (size_t)ix[o]] == y2->data[o]);
            }
            float *w = malloc(y1->numel * sizeof *w);
            tu_fill_uniform(w, y1->numel, -1, 1, &r);
            qat_tensor *wt = qat_from(ctx, 4, y1->shape, w);
            ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_add(ctx, qat_mul(ctx, y1, wt), qat_mul(ctx, y2, wt)))),
                             QAT_OK);
            ck_assert(!memcmp(x1->grad, x2->grad, n * sizeof(float)));
            free(w);
            free(xd);
            qat_ctx_free(ctx);
        }
    }
    qat_set_num_threads(0);
}
END_TEST

/* ---- batch norm ---- */

START_TEST(test_batchnorm_forward)
{
    qat_rng r;
    qat_rng_seed(&r, 77);
    const int N = 3, C = 2, H = 2, W = 3, HW = H * W;
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_new(ctx, 4, (int[]){N, C, H, W});
    tu_fill_uniform(x->data, x->numel, -1, 3, &r);
    qat_tensor *g = qat_tensor_create(1, &C, 1), *b = qat_tensor_create(1, &C, 1);
    qat_tensor *rm = qat_tensor_create(1, &C, 0), *rv = qat_tensor_create(1, &C, 0);
    const float rm0[2] = {0.5f, -1}, rv0[2] = {2, 0.25f};
    for (int c = 0; c < C; c++) {
        g->data[c] = 1;
        rm->data[c] = rm0[c];
        rv->data[c] = rv0[c];
    }
    const float mom = 0.1f, eps = 1e-5f;
    ck_assert_int_eq(qat_ctx_training(ctx), 1);
    qat_tensor *y = qat_batchnorm2d(ctx, x, g, b, rm, rv, mom, eps);
    ck_assert_ptr_nonnull(y);
    double mean[2], var[2];
    for (int c = 0; c < C; c++) {
        double s = 0, q = 0, ys = 0, yq = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) s += x->data[(n * C + c) * HW + i];
        mean[c] = s / (N * HW);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                double d = x->data[(n * C + c) * HW + i] - mean[c];
                q += d * d;
                ys += y->data[(n * C + c) * HW + i];
                yq += (double)y->data[(n * C + c) * HW + i] * y->data[(n * C + c) * HW + i];
            }
        var[c] = q / (N * HW);
        /* training output: mean 0, biased variance var/(var+eps) ~ 1 */
        ck_assert_double_le(fabs(ys / (N * HW)), 1e-6);
        ck_assert_double_eq_tol(yq / (N * HW), var[c] / (var[c] + eps), 1e-5);
        /* running stats: momentum and the unbiased variance */
        ck_assert_double_eq_tol(rm->data[c], (1 - mom) * rm0[c] + mom * mean[c], 1e-6);
        ck_assert_double_eq_tol(rv->data[c], (1 - mom) * rv0[c] + mom * q / (N * HW - 1), 1e-6);
    }
    /* gamma/beta scale and shift */
    g->data[1] = 2;
    b->data[1] = -3;
    float rm1[2] = {rm->data[0], rm->data[1]};
    y = qat_batchnorm2d(ctx, x, g, b, rm, rv, mom, eps);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            size_t k = (size_t)(n * C + 1) * HW + i;
            double want = 2 * (x->data[k] - mean[1]) / sqrt(var[1] + eps) - 3;
            ck_assert_double_eq_tol(y->data[k], want, 1e-5);
        }
    /* evaluation: running statistics, which stay unchanged */
    float rm2[2] = {rm->data[0], rm->data[1]}, rv2[2] = {rv->data[0], rv->data[1]};
    ck_assert(rm2[0] != rm1[0]); /* the second training call moved them */
    qat_ctx_set_training(ctx, 0);
    ck_assert_int_eq(qat_ctx_training(ctx), 0);
    y = qat_batchnorm2d(ctx, x, g, b, rm, rv, mom, eps);
    for (int c = 0; c < C; c++) {
        ck_assert(rm->data[c] == rm2[c] && rv->data[c] == rv2[c]);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t k = (size_t)(n * C + c) * HW + i;
                double want = g->data[c] * (x->data[k] - rm2[c]) / sqrt(rv2[c] + eps) + b->data[c];
                ck_assert_double_eq_tol(y->data[k], want, 1e-5);
            }
    }
    /* evaluation accepts a single value per channel */
    const float one[2] = {1, 2};
    ck_assert_ptr_nonnull(qat_batchnorm2d(ctx, qat_from(ctx, 4, (int[]){1, 2, 1, 1}, one), g, b,
                                          rm, rv, mom, eps));
    qat_ctx_free(ctx);
    qat_tensor_free(g);
    qat_tensor_free(b);
    qat_tensor_free(rm);
    qat_tensor_free(rv);
}
END_TEST

/* ---- cross-entropy, count_correct ---- */

START_TEST(test_cross_entropy_values)
{
    qat_ctx *ctx = qat_ctx_create(0);
    const float ld[6] = {1, 2, 3, 0, 0, 0};
    const uint8_t lab[2] = {2, 1};
    qat_tensor *l = qat_new_leaf(ctx, 2, (int[]){2, 3}, ld);
    qat_tensor *loss = qat_cross_entropy(ctx, l, lab);
    ck_assert_int_eq(loss->ndim, 0);
    double r0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3, r1 = log(3.0);
    ck_assert_double_eq_tol(loss->data[0], (r0 + r1) / 2, 1e-6);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    ck_assert_double_eq_tol(l->grad[0], exp(1.0) / z / 2, 1e-6);
    ck_assert_double_eq_tol(l->grad[2], (exp(3.0) / z - 1) / 2, 1e-6);
    ck_assert_double_eq_tol(l->grad[4], (1.0 / 3 - 1) / 2, 1e-6);

    /* large logits stay finite */
    const float big[6] = {1e4f, 0, -1e4f, -1e4f, 1e4f, 1e4f};
    const uint8_t lb[2] = {1, 1};
    l = qat_new_leaf(ctx, 2, (int[]){2, 3}, big);
    loss = qat_cross_entropy(ctx, l, lb);
    ck_assert(isfinite(loss->data[0]));
    ck_assert_double_eq_tol(loss->data[0], (1e4 + log(2.0)) / 2, 1e-2);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    for (int i = 0; i < 6; i++) ck_assert(isfinite(l->grad[i]));
    ck_assert_double_eq_tol(l->grad[0], 0.5, 1e-6);
    ck_assert_double_eq_tol(l->grad[1], -0.5, 1e-6);
    ck_assert_double_eq_tol(l->grad[4], -0.25, 1e-6);
    ck_assert_double_eq_tol(l->grad[5], 0.25, 1e-6);
    const uint8_t l0[1] = {0};
    loss = qat_cross_entropy(ctx, qat_from(ctx, 2, (int[]){1, 3}, big), l0);
    ck_assert_float_eq(loss->data[0], 0);
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_count_correct)
{
    qat_ctx *ctx = qat_ctx_create(0);
    const float d[12] = {0, 1, 2, /* argmax 2 */ 5, 5, 1, /* tie: first, 0 */
                         -1, -3, -2, /* 0 */ 1, 4, 4 /* tie: 1 */};
    qat_tensor *t = qat_from(ctx, 2, (int[]){4, 3}, d);
    const uint8_t a[4] = {2, 0, 0, 1}, b[4] = {2, 1, 0, 2}, c[4] = {0, 1, 1, 0};
    ck_assert_int_eq(qat_count_correct(t, a), 4);
    ck_assert_int_eq(qat_count_correct(t, b), 2);
    ck_assert_int_eq(qat_count_correct(t, c), 0);
    qat_ctx_free(ctx);
}
END_TEST

/* ---- determinism and threads ---- */

typedef struct {
    float *out, *gx, *gw, *gfw;
    size_t nout, nx;
} det_run;

static det_run det_forward_backward(int threads)
{
    qat_set_num_threads(threads);
    qat_rng r;
    qat_rng_seed(&r, 99);
    const int N = 9;
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *w = qat_tensor_create(4, (int[]){6, 3, 3, 3}, 1);
    qat_tensor *g = qat_tensor_create(1, (int[]){6}, 1), *b = qat_tensor_create(1, (int[]){6}, 1);
    qat_tensor *rm = qat_tensor_create(1, (int[]){6}, 0), *rv = qat_tensor_create(1, (int[]){6}, 0);
    qat_tensor *fw = qat_tensor_create(2, (int[]){250, 6 * 15 * 15}, 1);
    tu_fill_uniform(w->data, w->numel, -0.3f, 0.3f, &r);
    tu_fill_uniform(fw->data, fw->numel, -0.1f, 0.1f, &r);
    for (int c = 0; c < 6; c++) g->data[c] = rv->data[c] = 1;
    qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){N, 3, 16, 16}, NULL);
    tu_fill_uniform(x->data, x->numel, -1, 1, &r);
    uint8_t lab[9];
    for (int n = 0; n < N; n++) lab[n] = (uint8_t)qat_rng_below(&r, 250);
    qat_tensor *y = qat_conv2d(ctx, x, w, NULL, 1, 1);
    y = qat_relu(ctx, qat_batchnorm2d(ctx, y, g, b, rm, rv, 0.1f, 1e-5f));
    y = qat_linear(ctx, qat_flatten(ctx, qat_avgpool2d(ctx, y, 2, 1)), fw, NULL);
    qat_tensor *loss = qat_cross_entropy(ctx, y, lab);
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    det_run d;
    d.nout = y->numel;
    d.nx = x->numel;
    d.out = malloc(d.nout * sizeof(float));
    d.gx = malloc(d.nx * sizeof(float));
    d.gw = malloc(w->numel * sizeof(float));
    d.gfw = malloc(fw->numel * sizeof(float));
    memcpy(d.out, y->data, d.nout * sizeof(float));
    memcpy(d.gx, x->grad, d.nx * sizeof(float));
    memcpy(d.gw, w->grad, w->numel * sizeof(float));
    memcpy(d.gfw, fw->grad, fw->numel * sizeof(float));
    qat_ctx_free(ctx);
    qat_tensor *all[] = {w, g, b, rm, rv, fw};
    for (int i = 0; i < 6; i++) qat_tensor_free(all[i]);
    return d;
}

static void det_free(det_run *d)
{
    free(d->out);
    free(d->gx);
    free(d->gw);
    free(d->gfw);
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1e-3, fabs((double)a[i]));
        if (d > m) m = d;
    }
    return m;
}

START_TEST(test_deterministic)
{
    det_run a = det_forward_backward(2), b = det_forward_backward(2);
    ck_assert_int_eq(memcmp(a.out, b.out, a.nout * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(a.gx, b.gx, a.nx * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(a.gw, b.gw, 6 * 27 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(a.gfw, b.gfw, 250 * 1350 * sizeof(float)), 0);
    /* one thread: the same numbers up to summation order */
    det_run c = det_forward_backward(1);
    ck_assert_double_le(max_rel_diff(a.out, c.out, a.nout), 1e-4);
    ck_assert_double_le(max_rel_diff(a.gw, c.gw, 6 * 27), 1e-3);
    ck_assert_double_le(max_rel_diff(a.gx, c.gx, a.nx), 1e-3);
    det_free(&a);
    det_free(&b);
    det_free(&c);
}
END_TEST

/* Backward called from inside a parallel region (a caller's own OpenMP
 * loop): the library's nested regions get one thread and must still cover
 * the whole batch. */
START_TEST(test_backward_in_parallel_region)
{
    det_run a = det_forward_backward(2);
    det_run b;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        b = det_forward_backward(2);
    }
    ck_assert_double_le(max_rel_diff(a.out, b.out, a.nout), 1e-4);
    ck_assert_double_le(max_rel_diff(a.gw, b.gw, 6 * 27), 1e-3);
    ck_assert_double_le(max_rel_diff(a.gx, b.gx, a.nx), 1e-3);
    det_free(&a);
    det_free(&b);
}
END_TEST

/* ---- grouped convolution against a direct one ---- */

static void gconv_ref(double *y, const float *x, const float *w, const float *b, double *mag, int N, int C,
                      int H, int W, int OC, int K, int s, int p, int G, int OH, int OW)
{
    const int Cg = C / G, OCg = OC / G;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b ? b[o] : 0, m = b ? fabs(b[o]) : 0;
                    for (int ci = 0; ci < Cg; ci++)
                        for (int i = 0; i < K; i++)
                            for (int j = 0; j < K; j++) {
                                int ih = oh * s - p + i, iw = ow * s - p + j, c = (o / OCg) * Cg + ci;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                double t = (double)x[((n * C + c) * H + ih) * W + iw] * w[((o * Cg + ci) * K + i) * K + j];
                                acc += t;
                                m += fabs(t);
                            }
                    size_t k = (((size_t)n * OC + o) * OH + oh) * OW + ow;
                    y[k] = acc;
                    mag[k] = m;
                }
}

/* Random grouped / depthwise shapes: forward against gconv_ref; forward and
 * gradients bitwise the same with 1 and 2 threads. */
START_TEST(test_conv_grouped_direct)
{
    qat_rng r;
    qat_rng_seed(&r, 4000 + (uint64_t)_i);
    int G = 1 + (int)qat_rng_below(&r, 8), dw = _i % 2;
    int C = dw ? G : G * (1 + (int)qat_rng_below(&r, 3));
    int OC = G * (1 + (int)qat_rng_below(&r, dw ? 2 : 3));
    int K = _i % 5 == 0 ? 1 + 2 * (int)qat_rng_below(&r, 3) : 3, s = 1 + (int)qat_rng_below(&r, 2);
    int p = (int)qat_rng_below(&r, (uint32_t)(K / 2 + 1));
    int N = 1 + (int)qat_rng_below(&r, 3), H = K + (int)qat_rng_below(&r, 14), W = K + (int)qat_rng_below(&r, 20);
    int bias = (int)qat_rng_below(&r, 2);
    int OH = (H + 2 * p - K) / s + 1, OW = (W + 2 * p - K) / s + 1;
    size_t nx = (size_t)N * C * H * W, nw = (size_t)OC * (C / G) * K * K, ny = (size_t)N * OC * OH * OW;
    float *xd = malloc(nx * sizeof(float)), *gy = malloc(ny * sizeof(float));
    qat_tensor *w = qat_tensor_create(4, (int[]){OC, C / G, K, K}, 1), *b = qat_tensor_create(1, &OC, 1);
    tu_fill_uniform(xd, nx, -1, 1, &r);
    tu_fill_uniform(w->data, nw, -1, 1, &r);
    tu_fill_uniform(b->data, (size_t)OC, -1, 1, &r);
    tu_fill_uniform(gy, ny, -1, 1, &r);
    double *ref = malloc(ny * sizeof(double)), *mag = malloc(ny * sizeof(double));
    gconv_ref(ref, xd, w->data, bias ? b->data : NULL, mag, N, C, H, W, OC, K, s, p, G, OH, OW);
    float *out[2], *gx[2], *gw[2], *gb[2];
    for (int t = 0; t < 2; t++) {
        qat_set_num_threads(t + 1);
        qat_tensor_zero_grad(w);
        qat_tensor_zero_grad(b);
        qat_ctx *ctx = qat_ctx_create(0);
        qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){N, C, H, W}, xd);
        qat_tensor *y = qat_conv2d_grouped(ctx, x, w, bias ? b : NULL, s, p, G);
        ck_assert_msg(y != NULL, "%s", qat_last_error());
        ck_assert_int_eq(y->shape[1], OC);
        ck_assert_int_eq(y->shape[2], OH);
        ck_assert_int_eq(y->shape[3], OW);
        qat_tensor *loss = qat_sum(ctx, qat_mul(ctx, y, qat_from(ctx, 4, y->shape, gy)));
        ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
        out[t] = malloc(ny * sizeof(float));
        gx[t] = malloc(nx * sizeof(float));
        gw[t] = malloc(nw * sizeof(float));
        gb[t] = malloc((size_t)OC * sizeof(float));
        memcpy(out[t], y->data, ny * sizeof(float));
        memcpy(gx[t], x->grad, nx * sizeof(float));
        memcpy(gw[t], w->grad, nw * sizeof(float));
        memcpy(gb[t], b->grad, (size_t)OC * sizeof(float));
        qat_ctx_free(ctx);
    }
    qat_set_num_threads(2);
    for (size_t k = 0; k < ny; k++)
        ck_assert_msg(fabs(out[0][k] - ref[k]) <= 1e-5 * (mag[k] + 1e-3), "case %d (G %d C %d OC %d K %d s %d p %d): y[%zu] %g vs %g",
                      _i, G, C, OC, K, s, p, k, (double)out[0][k], ref[k]);
    ck_assert(memcmp(out[0], out[1], ny * sizeof(float)) == 0);
    ck_assert(memcmp(gx[0], gx[1], nx * sizeof(float)) == 0);
    ck_assert(memcmp(gw[0], gw[1], nw * sizeof(float)) == 0);
    ck_assert(memcmp(gb[0], gb[1], (size_t)OC * sizeof(float)) == 0);
    if (!bias)
        for (int o = 0; o < OC; o++) ck_assert_float_eq(gb[0][o], 0.0f);
    for (int t = 0; t < 2; t++) {
        free(out[t]);
        free(gx[t]);
        free(gw[t]);
        free(gb[t]);
    }
    free(ref);
    free(mag);
    free(xd);
    free(gy);
    qat_tensor_free(w);
    qat_tensor_free(b);
}
END_TEST

/* The depthwise fast path (SIMD engines) against the portable kernels
 * (QAT_SIMD=0): forward and input gradient the same values (each element's
 * products added in the same order), weight and bias gradients equal up
 * to the order of the pixel sums. */
START_TEST(test_depthwise_fast_vs_portable)
{
    /* N, C, H, W, K, stride, pad */
    static const int cfg[][7] = {{3, 5, 28, 28, 3, 1, 1}, {2, 7, 14, 14, 3, 2, 1}, {2, 4, 7, 7, 3, 1, 1},
                                 {2, 3, 9, 13, 3, 2, 0}, {1, 6, 5, 17, 5, 1, 2}, {2, 3, 11, 6, 3, 1, 0},
                                 {2, 16, 33, 35, 3, 2, 1}, {1, 2, 3, 3, 3, 2, 1}, {2, 3, 8, 8, 1, 1, 0}};
    const int *c = cfg[_i];
    const int N = c[0], C = c[1], H = c[2], W = c[3], K = c[4], s = c[5], p = c[6];
    qat_rng r;
    qat_rng_seed(&r, 4100 + (uint64_t)_i);
    size_t nx = (size_t)N * C * H * W;
    float *xd = malloc(nx * sizeof(float));
    tu_fill_uniform(xd, nx, -2, 2, &r);
    qat_tensor *w = qat_tensor_create(4, (int[]){C, 1, K, K}, 1), *b = qat_tensor_create(1, &C, 1);
    tu_fill_uniform(w->data, w->numel, -1, 1, &r);
    tu_fill_uniform(b->data, b->numel, -1, 1, &r);
    float *out[2] = {0}, *gx[2] = {0}, *gw[2] = {0}, *gb[2] = {0};
    size_t ny = 0;
    for (int e = 0; e < 2; e++) {
        qat_simd_set_level(e == 0 ? QAT_SIMD_PORTABLE : -1);
        qat_tensor_zero_grad(w);
        qat_tensor_zero_grad(b);
        qat_ctx *ctx = qat_ctx_create(0);
        qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){N, C, H, W}, xd);
        qat_tensor *y = qat_conv2d_grouped(ctx, x, w, b, s, p, C);
        ck_assert_msg(y != NULL, "%s", qat_last_error());
        ny = y->numel;
        float *gy = malloc(ny * sizeof(float));
        qat_rng r2;
        qat_rng_seed(&r2, 9);
        tu_fill_uniform(gy, ny, -1, 1, &r2);
        ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, qat_from(ctx, 4, y->shape, gy)))), QAT_OK);
        out[e] = malloc(ny * sizeof(float));
        gx[e] = malloc(nx * sizeof(float));
        gw[e] = malloc(w->numel * sizeof(float));
        gb[e] = malloc((size_t)C * sizeof(float));
        memcpy(out[e], y->data, ny * sizeof(float));
        memcpy(gx[e], x->grad, nx * sizeof(float));
        memcpy(gw[e], w->grad, w->numel * sizeof(float));
        memcpy(gb[e], b->grad, (size_t)C * sizeof(float));
        free(gy);
        qat_ctx_free(ctx);
    }
    qat_simd_set_level(-1);
    for (size_t k = 0; k < ny; k++)
        ck_assert_msg(out[0][k] == out[1][k], "case %d: y[%zu] portable %.9g, fast %.9g", _i, k, (double)out[0][k],
                      (double)out[1][k]);
    for (size_t k = 0; k < nx; k++)
        ck_assert_msg(gx[0][k] == gx[1][k], "case %d: dx[%zu] portable %.9g, fast %.9g", _i, k, (double)gx[0][k],
                      (double)gx[1][k]);
    for (size_t k = 0; k < w->numel; k++)
        ck_assert_msg(fabsf(gw[0][k] - gw[1][k]) <= 1e-4f * (1.0f + fabsf(gw[0][k])), "case %d: dw[%zu] %.9g vs %.9g",
                      _i, k, (double)gw[0][k], (double)gw[1][k]);
    for (int k = 0; k < C; k++)
        ck_assert_msg(fabsf(gb[0][k] - gb[1][k]) <= 1e-4f * (1.0f + fabsf(gb[0][k])), "case %d: db[%d]", _i, k);
    for (int e = 0; e < 2; e++) {
        free(out[e]);
        free(gx[e]);
        free(gw[e]);
        free(gb[e]);
    }
    free(xd);
    qat_tensor_free(w);
    qat_tensor_free(b);
}
END_TEST

/* ---- clamp, hard activations, concat, upsample: hand-computed ---- */

static qat_tensor *grad_of(qat_ctx *ctx, qat_tensor *x, qat_tensor *y, const float *dy)
{
    qat_tensor *loss = qat_sum(ctx, qat_mul(ctx, y, qat_from(ctx, y->ndim, y->shape, dy)));
    ck_assert_int_eq(qat_backward(ctx, loss), QAT_OK);
    return x;
}

START_TEST(test_activations_hand)
{
    qat_ctx *ctx = qat_ctx_create(0);
    const float xs[9] = {-4.0f, -3.0f, -1.5f, 0.0f, 1.0f, 3.0f, 4.5f, 6.0f, 7.0f};
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    /* relu6: the gradient is 0 at both bounds (hardtanh) */
    qat_tensor *x = qat_new_leaf(ctx, 2, (int[]){1, 9}, xs);
    qat_tensor *y = qat_clamp(ctx, x, 0.0f, 6.0f);
    const float r6[9] = {0, 0, 0, 0, 1, 3, 4.5f, 6, 6}, r6g[9] = {0, 0, 0, 0, 1, 1, 1, 0, 0};
    grad_of(ctx, x, y, ones);
    for (int i = 0; i < 9; i++) {
        ck_assert_float_eq(y->data[i], r6[i]);
        ck_assert_float_eq(x->grad[i], r6g[i]);
    }
    qat_ctx_reset(ctx);
    /* hardswish x * relu6(x + 3) / 6; gradient 0 below -3, x/3 + 0.5 on
     * [-3, 3], 1 above (PyTorch's boundaries) */
    x = qat_new_leaf(ctx, 2, (int[]){1, 9}, xs);
    y = qat_hardswish(ctx, x);
    const float hs[9] = {0, 0, -1.5f * 1.5f / 6.0f, 0, 4.0f / 6.0f, 3, 4.5f, 6, 7};
    const float hsg[9] = {0, -0.5f, 0.0f, 0.5f, 1.0f / 3.0f + 0.5f, 1.5f, 1, 1, 1};
    grad_of(ctx, x, y, ones);
    for (int i = 0; i < 9; i++) {
        ck_assert_msg(fabsf(y->data[i] - hs[i]) <= 1e-6f, "hardswish(%g) = %g, expected %g", (double)xs[i],
                      (double)y->data[i], (double)hs[i]);
        ck_assert_msg(fabsf(x->grad[i] - hsg[i]) <= 1e-6f, "hardswish'(%g) = %g, expected %g", (double)xs[i],
                      (double)x->grad[i], (double)hsg[i]);
    }
    qat_ctx_reset(ctx);
    /* hardsigmoid relu6(x + 3) / 6; gradient 1/6 strictly inside (-3, 3) */
    x = qat_new_leaf(ctx, 2, (int[]){1, 9}, xs);
    y = qat_hardsigmoid(ctx, x);
    const float hg[9] = {0, 0, 0.25f, 0.5f, 4.0f / 6.0f, 1, 1, 1, 1};
    const float hgg[9] = {0, 0, 1.0f / 6, 1.0f / 6, 1.0f / 6, 0, 0, 0, 0};
    grad_of(ctx, x, y, ones);
    for (int i = 0; i < 9; i++) {
        ck_assert_msg(fabsf(y->data[i] - hg[i]) <= 1e-6f, "hardsigmoid(%g) = %g", (double)xs[i], (double)y->data[i]);
        ck_assert_float_eq(x->grad[i], hgg[i]);
    }
    qat_ctx_reset(ctx);
    /* NaN stays NaN through clamp */
    x = qat_from(ctx, 1, (int[]){2}, (const float[]){NAN, -INFINITY});
    y = qat_clamp(ctx, x, -1.0f, 1.0f);
    ck_assert(isnan(y->data[0]));
    ck_assert_float_eq(y->data[1], -1.0f);
    /* per-channel upper bounds: [N=2, C=2, 1, 2] */
    const float xc[8] = {-1, 0.5f, 2.5f, 4, 1.5f, 0.2f, 3, -2};
    x = qat_new_leaf(ctx, 4, (int[]){2, 2, 1, 2}, xc);
    y = qat_clamp_channels(ctx, x, 0.0f, (const float[]){1.0f, 3.0f});
    const float yc[8] = {0, 0.5f, 2.5f, 3, 1, 0.2f, 3, 0}, gc[8] = {0, 1, 1, 0, 0, 1, 0, 0};
    grad_of(ctx, x, y, ones);
    for (int i = 0; i < 8; i++) {
        ck_assert_float_eq(y->data[i], yc[i]);
        ck_assert_float_eq(x->grad[i], gc[i]);
    }
    ck_assert_ptr_null(qat_clamp(ctx, x, 1.0f, 0.0f));
    ASSERT_ERR_HAS("clamp: bounds [1, 0] invalid");
    ck_assert_ptr_null(qat_clamp_channels(ctx, x, 0.0f, (const float[]){1.0f, -1.0f}));
    ASSERT_ERR_HAS("channel 1 bounds [0, -1] invalid");
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_concat_upsample_hand)
{
    qat_ctx *ctx = qat_ctx_create(0);
    /* a [2,1,1,2], b [2,2,1,2] -> [2,3,1,2] */
    qat_tensor *a = qat_new_leaf(ctx, 4, (int[]){2, 1, 1, 2}, (const float[]){1, 2, 3, 4});
    qat_tensor *b = qat_new_leaf(ctx, 4, (int[]){2, 2, 1, 2}, (const float[]){5, 6, 7, 8, 9, 10, 11, 12});
    qat_tensor *y = qat_concat(ctx, a, b);
    ck_assert_int_eq(y->shape[1], 3);
    const float ye[12] = {1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12};
    for (int i = 0; i < 12; i++) ck_assert_float_eq(y->data[i], ye[i]);
    float dy[12];
    for (int i = 0; i < 12; i++) dy[i] = (float)(i + 1);
    grad_of(ctx, a, y, dy);
    const float ga[4] = {1, 2, 7, 8}, gb[8] = {3, 4, 5, 6, 9, 10, 11, 12};
    for (int i = 0; i < 4; i++) ck_assert_float_eq(a->grad[i], ga[i]);
    for (int i = 0; i < 8; i++) ck_assert_float_eq(b->grad[i], gb[i]);
    qat_ctx_reset(ctx);
    /* the same tensor twice: its gradient gets both halves */
    a = qat_new_leaf(ctx, 2, (int[]){1, 2}, (const float[]){1, 2});
    y = qat_concat(ctx, a, a);
    grad_of(ctx, a, y, (const float[]){1, 10, 100, 1000});
    ck_assert_float_eq(a->grad[0], 101);
    ck_assert_float_eq(a->grad[1], 1010);
    ck_assert_ptr_null(qat_concat(ctx, a, qat_from(ctx, 2, (int[]){2, 2}, NULL)));
    ASSERT_ERR_HAS("concat:");
    qat_ctx_reset(ctx);
    /* upsample x2 of a 2x3 plane -> 4x6; each input gets its 4 copies' gradient */
    qat_tensor *x = qat_new_leaf(ctx, 4, (int[]){1, 1, 2, 3}, (const float[]){1, 2, 3, 4, 5, 6});
    y = qat_upsample_nearest(ctx, x, 2);
    ck_assert_int_eq(y->shape[2], 4);
    ck_assert_int_eq(y->shape[3], 6);
    const float ue[24] = {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
    for (int i = 0; i < 24; i++) ck_assert_float_eq(y->data[i], ue[i]);
    float du[24];
    for (int i = 0; i < 24; i++) du[i] = (float)i;
    grad_of(ctx, x, y, du);
    /* input (0,0): outputs (0,0) (0,1) (1,0) (1,1) = 0 + 1 + 6 + 7 */
    const float gu[6] = {14, 22, 30, 62, 70, 78};
    for (int i = 0; i < 6; i++) ck_assert_float_eq(x->grad[i], gu[i]);
    ck_assert_ptr_null(qat_upsample_nearest(ctx, x, 0));
    ASSERT_ERR_HAS("factor 0 invalid");
    qat_ctx_free(ctx);
}
END_TEST

START_TEST(test_conv_grouped_errors)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *x = qat_from(ctx, 4, (int[]){1, 6, 5, 5}, NULL);
    qat_tensor *w = qat_from(ctx, 4, (int[]){4, 3, 3, 3}, NULL);
    ck_assert_ptr_null(qat_conv2d_grouped(ctx, x, w, NULL, 1, 1, 4));
    ASSERT_ERR_HAS("4 groups do not divide 6 input");
    ck_assert_ptr_null(qat_conv2d_grouped(ctx, x, w, NULL, 1, 1, 1));
    ASSERT_ERR_HAS("input has 6 channels, weight expects 3");
    qat_tensor *w3 = qat_from(ctx, 4, (int[]){4, 2, 3, 3}, NULL);
    ck_assert_ptr_null(qat_conv2d_grouped(ctx, x, w3, NULL, 1, 1, 2));
    ASSERT_ERR_HAS("in 2 groups (3 each)");
    qat_tensor *w6 = qat_from(ctx, 4, (int[]){6, 1, 7, 7}, NULL);
    ck_assert_ptr_null(qat_conv2d_grouped(ctx, x, w6, NULL, 1, 0, 6));
    ASSERT_ERR_HAS("larger than padded input");
    qat_ctx_free(ctx);
}
END_TEST

static Suite *autograd_suite(void)
{
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("ctx");
    tcase_add_test(tc, test_arena_settles);
    tcase_add_test(tc, test_tensor_create);
    tcase_add_test(tc, test_grad_accumulates);
    tcase_add_test(tc, test_grad_buffers_recycled);
    tcase_add_test(tc, test_unfrozen_param_grad);
    tcase_add_test(tc, test_no_grad);
    tcase_add_test(tc, test_custom_op_api);
    tcase_add_test(tc, test_null_propagation);
    tcase_add_test(tc, test_shape_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("forward");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_conv2d_direct, 0, 40);
    tcase_add_test(tc, test_conv2d_hand);
    tcase_add_test(tc, test_pool_hand);
    tcase_add_test(tc, test_maxpool_ex_hand);
    tcase_add_test(tc, test_maxpool_ex_pad0);
    tcase_add_test(tc, test_batchnorm_forward);
    tcase_add_test(tc, test_cross_entropy_values);
    tcase_add_test(tc, test_count_correct);
    tcase_add_test(tc, test_deterministic);
    tcase_add_test(tc, test_backward_in_parallel_region);
    tcase_add_loop_test(tc, test_conv_grouped_direct, 0, 40);
    tcase_add_loop_test(tc, test_depthwise_fast_vs_portable, 0, 9);
    tcase_add_test(tc, test_activations_hand);
    tcase_add_test(tc, test_concat_upsample_hand);
    tcase_add_test(tc, test_conv_grouped_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(autograd_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
