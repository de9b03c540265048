/* Optimizers, schedules, parameter groups and optimizer state.
 *
 * The SGD cases use dyadic numbers (lr 0.5, momentum 0.5, ...) so every
 * intermediate is exact in float and the expected values, worked out by
 * hand in the comments, are asserted with ==. AdamW is checked against the
 * textbook formula in double. Tensors are built by hand here, so the suite
 * depends only on optim/ and the error helpers. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/optim.h"
#include "testutil.h"

/* ---- hand-built parameters ---- */

static qat_tensor *mk(size_t n, const float *vals)
{
    qat_tensor *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    t->data = calloc(n ? n : 1, sizeof(float));
    t->grad = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(t->data);
    ck_assert_ptr_nonnull(t->grad);
    t->ndim = 1;
    t->shape[0] = (int)n;
    t->numel = n;
    t->requires_grad = 1;
    if (vals) memcpy(t->data, vals, n * sizeof(float));
    return t;
}

static void rm(qat_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t->grad);
    free(t);
}

static qat_named_tensor named(const char *name, qat_tensor *t, int no_decay)
{
    qat_named_tensor p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.t = t;
    p.no_decay = no_decay;
    return p;
}


/* One parameter [1 value], n steps with the given gradients; returns the
 * parameter after each step in out. */
static void run1(const qat_optim_options *o, float p0, int no_decay, const float *grads,
                 int n, float *out)
{
    qat_tensor *t = mk(1, &p0);
    qat_named_tensor p = named("w", t, no_decay);
    qat_optim *opt = qat_optim_create(&p, 1, o);
    ck_assert_msg(opt != NULL, "%s", qat_last_error());
    for (int s = 0; s < n; s++) {
        t->grad[0] = grads[s];
        ck_assert_int_eq(qat_optim_step(opt), QAT_OK);
        out[s] = t->data[0];
    }
    ck_assert_int_eq(qat_optim_step_count(opt), n);
    qat_optim_free(opt);
    rm(t);
}

static qat_optim_options sgd(double lr, double momentum, int nesterov, double wd,
                             int decoupled)
{
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
    o.lr = lr;
    o.momentum = momentum;
    o.nesterov = nesterov;
    o.weight_decay = wd;
    o.decoupled_wd = decoupled;
    return o;
}

/* ---- SGD ---- */

START_TEST(test_sgd_plain)
{
    /* p -= 0.5 g: 1 - 0.5 = 0.5; 0.5 - 0.25 = 0.25; 0.25 + 0.5 = 0.75 */
    qat_optim_options o = sgd(0.5, 0, 0, 0, 0);
    const float g[3] = {1.0f, 0.5f, -1.0f};
    float out[3];
    run1(&o, 1.0f, 0, g, 3, out);
    ck_assert_float_eq(out[0], 0.5f);
    ck_assert_float_eq(out[1], 0.25f);
    ck_assert_float_eq(out[2], 0.75f);
}
END_TEST

START_TEST(test_sgd_momentum)
{
    /* lr 0.5, momentum 0.5, g = 1, 0.5, 0.25:
     * buf = 1 (first step: buf = g)      p = 1 - 0.5           = 0.5
     * buf = 0.5*1 + 0.5 = 1              p = 0.5 - 0.5         = 0
     * buf = 0.5*1 + 0.25 = 0.75          p = 0 - 0.375         = -0.375 */
    qat_optim_options o = sgd(0.5, 0.5, 0, 0, 0);
    const float g[3] = {1.0f, 0.5f, 0.25f};
    float out[3];
    run1(&o, 1.0f, 0, g, 3, out);
    ck_assert_float_eq(out[0], 0.5f);
    ck_assert_float_eq(out[1], 0.0f);
    ck_assert_float_eq(out[2], -0.375f);
}
END_TEST

START_TEST(test_sgd_first_step_rule)
{
    /* momentum 0.75, lr 0.5: buf = g = 2 on the first step, p = 1 - 1 = 0;
     * second step, g = 0: buf = 0.75*2 = 1.5, p = -0.75 (the momentum
     * alone moves p). That a resumed optimizer does not redo the first-step
     * rule is checked by test_state_resume. */
    qat_optim_options o = sgd(0.5, 0.75, 0, 0, 0);
    const float g[2] = {2.0f, 0.0f};
    float out[2];
    run1(&o, 1.0f, 0, g, 2, out);
    ck_assert_float_eq(out[0], 0.0f);
    ck_assert_float_eq(out[1], -0.75f);
}
END_TEST

START_TEST(test_sgd_nesterov)
{
    /* lr 0.5, momentum 0.5, nesterov, g = 1, 0.5, 0.25:
     * buf = 1,    d = 1 + 0.5*1 = 1.5          p = 1 - 0.75      = 0.25
     * buf = 1,    d = 0.5 + 0.5*1 = 1          p = 0.25 - 0.5    = -0.25
     * buf = 0.75, d = 0.25 + 0.5*0.75 = 0.625  p = -0.25 - 0.3125 = -0.5625 */
    qat_optim_options o = sgd(0.5, 0.5, 1, 0, 0);
    const float g[3] = {1.0f, 0.5f, 0.25f};
    float out[3];
    run1(&o, 1.0f, 0, g, 3, out);
    ck_assert_float_eq(out[0], 0.25f);
    ck_assert_float_eq(out[1], -0.25f);
    ck_assert_float_eq(out[2], -0.5625f);
}
END_TEST

START_TEST(test_sgd_l2_vs_decoupled)
{
    /* lr 0.5, momentum 0.5, wd 0.5, g = 1, 1, p0 = 1.
     * L2 (g += wd p, then momentum):
     *   d = 1 + 0.5*1 = 1.5,       buf = 1.5                 p = 1 - 0.75      = 0.25
     *   d = 1 + 0.5*0.25 = 1.125,  buf = 0.75 + 1.125 = 1.875 p = 0.25 - 0.9375 = -0.6875
     * decoupled (p *= 1 - lr wd = 0.75, then plain momentum on g):
     *   p = 0.75,   buf = 1                                  p = 0.75 - 0.5    = 0.25
     *   p = 0.1875, buf = 0.5 + 1 = 1.5                      p = 0.1875 - 0.75 = -0.5625 */
    const float g[2] = {1.0f, 1.0f};
    float out[2];
    qat_optim_options o = sgd(0.5, 0.5, 0, 0.5, 0);
    run1(&o, 1.0f, 0, g, 2, out);
    ck_assert_float_eq(out[0], 0.25f);
    ck_assert_float_eq(out[1], -0.6875f);
    o = sgd(0.5, 0.5, 0, 0.5, 1);
    run1(&o, 1.0f, 0, g, 2, out);
    ck_assert_float_eq(out[0], 0.25f);
    ck_assert_float_eq(out[1], -0.5625f);
    /* without momentum, L2: d = 1 + 0.5*(-2) = 0, p stays -2 */
    o = sgd(0.5, 0, 0, 0.5, 0);
    const float g1[1] = {1.0f};
    run1(&o, -2.0f, 0, g1, 1, out);
    ck_assert_float_eq(out[0], -2.0f);
}
END_TEST

START_TEST(test_sgd_no_decay)
{
    /* lr 0.5, wd 0.5, L2, no momentum, g = 1, p0 = 1:
     * decayed: p = 1 - 0.5*(1 + 0.5) = 0.25; no_decay: p = 1 - 0.5 = 0.5 */
    qat_tensor *a = mk(1, (const float[]){1.0f});
    qat_tensor *b = mk(1, (const float[]){1.0f});
    qat_named_tensor p[2] = {named("fc.weight", a, 0), named("fc.bias", b, 1)};
    for (int decay_all = 0; decay_all < 2; decay_all++) {
        for (int decoupled = 0; decoupled < 2; decoupled++) {
            a->data[0] = b->data[0] = 1.0f;
            qat_optim_options o = sgd(0.5, 0, 0, 0.5, decoupled);
            o.decay_all = decay_all;
            qat_optim *opt = qat_optim_create(p, 2, &o);
            ck_assert_ptr_nonnull(opt);
            ck_assert(qat_optim_param_weight_decay(opt, 0) == 0.5);
            ck_assert(qat_optim_param_weight_decay(opt, 1) == (decay_all ? 0.5 : 0.0));
            a->grad[0] = b->grad[0] = 1.0f;
            qat_optim_step(opt);
            ck_assert_float_eq(a->data[0], 0.25f);
            ck_assert_float_eq(b->data[0], decay_all ? 0.25f : 0.5f);
            qat_optim_free(opt);
        }
    }
    rm(a);
    rm(b);
}
END_TEST

START_TEST(test_sgd_vector_and_threads)
{
    /* a tensor big enough for the OpenMP path: p = i/8, g = (i%5)/4,
     * lr 0.5: p - g/2 is exact */
    const size_t n = 100003;
    qat_tensor *t = mk(n, NULL);
    for (size_t i = 0; i < n; i++) {
        t->data[i] = (float)i / 8.0f;
        t->grad[i] = (float)(i % 5) / 4.0f;
    }
    qat_named_tensor p = named("big", t, 0);
    qat_optim_options o = sgd(0.5, 0.5, 0, 0, 0);
    qat_optim *opt = qat_optim_create(&p, 1, &o);
    ck_assert_ptr_nonnull(opt);
    qat_optim_step(opt);
    qat_optim_step(opt); /* buf = 1.5 g: p0 - 0.5 g - 0.75 g */
    for (size_t i = 0; i < n; i++) {
        float g = (float)(i % 5) / 4.0f;
        float want = ((float)i / 8.0f - 0.5f * g) - 0.75f * g;
        if (t->data[i] != want)
            ck_abort_msg("element %zu: %.9g, expected %.9g", i, t->data[i], want);
    }
    qat_optim_zero_grad(opt);
    for (size_t i = 0; i < n; i++)
        if (t->grad[i] != 0.0f) ck_abort_msg("grad %zu not zeroed", i);
    qat_optim_free(opt);
    rm(t);
}
END_TEST

START_TEST(test_skip_without_grad)
{
    /* requires_grad 0 or grad NULL: untouched, its step counter stays 0 */
    qat_tensor *a = mk(1, (const float[]){1.0f});
    qat_tensor *b = mk(1, (const float[]){1.0f});
    qat_tensor *c = mk(1, (const float[]){1.0f});
    b->requires_grad = 0;
    free(c->grad);
    c->grad = NULL;
    a->grad[0] = b->grad[0] = 1.0f;
    qat_named_tensor p[3] = {named("a", a, 0), named("b", b, 0), named("c", c, 0)};
    qat_optim_options o = sgd(0.5, 0.5, 0, 0.5, 1);
    qat_optim *opt = qat_optim_create(p, 3, &o);
    ck_assert_ptr_nonnull(opt);
    qat_optim_step(opt);
    qat_optim_zero_grad(opt); /* must not touch the NULL grad */
    ck_assert_float_eq(a->data[0], 0.25f);
    ck_assert_float_eq(b->data[0], 1.0f);
    ck_assert_float_eq(c->data[0], 1.0f);
    size_t n;
    int64_t *steps = qat_optim_param_steps(opt, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(steps[0], 1);
    ck_assert_int_eq(steps[1], 0);
    ck_assert_int_eq(steps[2], 0);
    qat_optim_free(opt);
    rm(a);
    rm(b);
    rm(c);
}
END_TEST

/* ---- AdamW ---- */

/* Textbook AdamW in double for one scalar parameter. */
static void adamw_ref(double p, const double *g, int n, double lr, double b1, double b2,
                      double eps, double wd, int decoupled, double *out)
{
    double m = 0, v = 0;
    for (int t = 1; t <= n; t++) {
        double gt = g[t - 1];
        if (decoupled)
            p *= 1 - lr * wd;
        else
            gt += wd * p;
        m = b1 * m + (1 - b1) * gt;
        v = b2 * v + (1 - b2) * gt * gt;
        double mhat = m / (1 - pow(b1, t)), vhat = v / (1 - pow(b2, t));
        p -= lr * mhat / (sqrt(vhat) + eps);
        out[t - 1] = p;
    }
}

START_TEST(test_adamw_defaults)
{
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    ck_assert(o.lr == 1e-3);
    ck_assert(o.beta1 == 0.9);
    ck_assert(o.beta2 == 0.999);
    ck_assert(o.eps == 1e-8);
    ck_assert(o.weight_decay == 1e-2);
    ck_assert_int_eq(o.decoupled_wd, 1);
    qat_optim_options s = qat_optim_options_defaults(QAT_OPTIM_SGD);
    ck_assert(s.lr == 1e-3 && s.momentum == 0.0 && s.weight_decay == 0.0);
    ck_assert_int_eq(s.decoupled_wd, 0);
    ck_assert_int_eq(s.nesterov, 0);
}
END_TEST

START_TEST(test_adamw_bias_correction)
{
    /* A constant gradient: with bias correction mhat = g and vhat = g^2, so
     * each step moves by lr (minus a hair for eps): 1 -> 0.9 -> 0.8 -> 0.7.
     * Without correction step 1 would move by lr*0.1/sqrt(0.001) = 0.316. */
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    o.lr = 0.1;
    o.weight_decay = 0;
    const float g[3] = {0.5f, 0.5f, 0.5f};
    float out[3];
    run1(&o, 1.0f, 0, g, 3, out);
    ck_assert_float_eq_tol(out[0], 0.9f, 1e-6f);
    ck_assert_float_eq_tol(out[1], 0.8f, 1e-6f);
    ck_assert_float_eq_tol(out[2], 0.7f, 1e-6f);
    /* decoupled wd 0.1: p = 0.99 p - 0.1: 0.89, 0.7811, 0.673289 */
    o.weight_decay = 0.1;
    run1(&o, 1.0f, 0, g, 3, out);
    ck_assert_float_eq_tol(out[0], 0.89f, 1e-6f);
    ck_assert_float_eq_tol(out[1], 0.7811f, 1e-6f);
    ck_assert_float_eq_tol(out[2], 0.673289f, 1e-6f);
    /* no_decay: as without wd */
    run1(&o, 1.0f, 1, g, 3, out);
    ck_assert_float_eq_tol(out[2], 0.7f, 1e-6f);
}
END_TEST

START_TEST(test_adamw_vs_formula)
{
    const double gd[3] = {1.0, -0.5, 2.0};
    const float g[3] = {1.0f, -0.5f, 2.0f};
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
        o.lr = 0.01;
        o.beta1 = 0.8;
        o.beta2 = 0.99;
        o.eps = 1e-3;
        o.weight_decay = 0.5;
        o.decoupled_wd = decoupled;
        float out[3];
        double want[3];
        run1(&o, 0.75f, 0, g, 3, out);
        adamw_ref(0.75, gd, 3, 0.01, 0.8, 0.99, 1e-3, 0.5, decoupled, want);
        for (int s = 0; s < 3; s++)
            ck_assert_msg(fabs(out[s] - want[s]) < 2e-7, "decoupled %d step %d: %.9g vs %.9g",
                          decoupled, s, out[s], want[s]);
        /* the two modes really differ */
        if (decoupled == 0) {
            double other[3];
            adamw_ref(0.75, gd, 3, 0.01, 0.8, 0.99, 1e-3, 0.5, 1, other);
            ck_assert(fabs(other[2] - want[2]) > 1e-5);
        }
    }
}
END_TEST

/* ---- schedules ---- */

START_TEST(test_schedule_cosine)
{
    qat_schedule s = qat_schedule_cosine(0.1, 0.0, 100);
    ck_assert_int_eq(qat_schedule_check(&s), QAT_OK);
    ck_assert(qat_schedule_lr(&s, 0) == 0.1);
    ck_assert(qat_schedule_lr(&s, 50) == 0.05);
    ck_assert(qat_schedule_lr(&s, 100) == 0.0);
    ck_assert(qat_schedule_lr(&s, 1000) == 0.0);
    ck_assert(qat_schedule_lr(&s, -5) == 0.1);
    /* bitwise the peer's formula, at every step */
    for (int k = 0; k < 100; k++) {
        double want = 0.5 * 0.1 * (1.0 + cos(3.141592653589793 * k / 100));
        ck_assert_msg(qat_schedule_lr(&s, k) == want, "step %d", k);
    }
    /* decreasing; step 25: (1 + cos(pi/4))/2 * 0.1 */
    ck_assert_double_eq_tol(qat_schedule_lr(&s, 25), 0.1 * (1 + sqrt(0.5)) / 2, 1e-15);
    ck_assert(qat_schedule_lr(&s, 99) < qat_schedule_lr(&s, 98));
    /* min_lr */
    s = qat_schedule_cosine(0.1, 0.02, 100);
    ck_assert_double_eq_tol(qat_schedule_lr(&s, 0), 0.1, 1e-15);
    ck_assert_double_eq_tol(qat_schedule_lr(&s, 50), 0.06, 1e-15);
    ck_assert(qat_schedule_lr(&s, 100) == 0.02);
}
END_TEST

START_TEST(test_schedule_step_constant)
{
    qat_schedule s = qat_schedule_step(1.0, 10, 0.5);
    ck_assert_int_eq(qat_schedule_check(&s), QAT_OK);
    ck_assert(qat_schedule_lr(&s, 0) == 1.0);
    ck_assert(qat_schedule_lr(&s, 9) == 1.0);
    ck_assert(qat_schedule_lr(&s, 10) == 0.5);
    ck_assert(qat_schedule_lr(&s, 19) == 0.5);
    ck_assert(qat_schedule_lr(&s, 25) == 0.25);
    ck_assert(qat_schedule_lr(&s, 30) == 0.125);
    qat_schedule c = qat_schedule_constant(0.25);
    ck_assert(qat_schedule_lr(&c, 0) == 0.25);
    ck_assert(qat_schedule_lr(&c, 123456789) == 0.25);
}
END_TEST

START_TEST(test_schedule_warmup)
{
    /* W = 4: 0.25, 0.5, 0.75, 1 (times base), then the schedule from t = 0 */
    qat_schedule c = qat_schedule_constant(2.0);
    c.warmup_steps = 4;
    ck_assert(qat_schedule_lr(&c, 0) == 0.5);
    ck_assert(qat_schedule_lr(&c, 1) == 1.0);
    ck_assert(qat_schedule_lr(&c, 2) == 1.5);
    ck_assert(qat_schedule_lr(&c, 3) == 2.0);
    ck_assert(qat_schedule_lr(&c, 4) == 2.0);
    ck_assert(qat_schedule_lr(&c, 100) == 2.0);
    /* cosine over total 14 with W 4: T = 10 remaining steps */
    qat_schedule s = qat_schedule_cosine(1.0, 0.0, 14);
    s.warmup_steps = 4;
    ck_assert(qat_schedule_lr(&s, 0) == 0.25);
    ck_assert(qat_schedule_lr(&s, 3) == 1.0);
    ck_assert(qat_schedule_lr(&s, 4) == 1.0);
    ck_assert(qat_schedule_lr(&s, 9) == 0.5);
    ck_assert(qat_schedule_lr(&s, 14) == 0.0);
    /* step schedule counts t from the end of the warm-up */
    qat_schedule st = qat_schedule_step(1.0, 3, 0.5);
    st.warmup_steps = 2;
    ck_assert(qat_schedule_lr(&st, 1) == 1.0);
    ck_assert(qat_schedule_lr(&st, 4) == 1.0);
    ck_assert(qat_schedule_lr(&st, 5) == 0.5);
}
END_TEST

START_TEST(test_schedule_check_and_names)
{
    qat_schedule s = qat_schedule_cosine(0.1, 0.0, 0);
    ck_assert_int_eq(qat_schedule_check(&s), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "total_steps"));
    s = qat_schedule_step(0.1, 0, 0.1);
    ck_assert_int_eq(qat_schedule_check(&s), QAT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "step_size"));
    s = qat_schedule_constant(-1.0);
    ck_assert_int_eq(qat_schedule_check(&s), QAT_ERR_ARG);
    s = qat_schedule_constant(1.0);
    s.warmup_steps = -1;
    ck_assert_int_eq(qat_schedule_check(&s), QAT_ERR_ARG);
    ck_assert_str_eq(qat_schedule_kind_name(QAT_SCHED_COSINE), "cosine");
    ck_assert_int_eq(qat_schedule_kind_from_name("step"), QAT_SCHED_STEP);
    ck_assert_int_eq(qat_schedule_kind_from_name("nope"), -1);
    ck_assert_ptr_null(qat_schedule_kind_name(QAT_SCHED_COUNT));
}
END_TEST

START_TEST(test_optim_with_schedule)
{
    /* constant 1.0 with W 2: lr 0.5, 1, 1; plain SGD, g = 1:
     * p = 4 - 0.5 = 3.5, 2.5, 1.5 */
    qat_tensor *t = mk(1, (const float[]){4.0f});
    qat_named_tensor p = named("w", t, 0);
    qat_optim_options o = sgd(0.125, 0, 0, 0, 0);
    qat_optim *opt = qat_optim_create(&p, 1, &o);
    ck_assert_ptr_nonnull(opt);
    qat_schedule s = qat_schedule_constant(1.0);
    s.warmup_steps = 2;
    ck_assert_int_eq(qat_optim_set_schedule(opt, &s), QAT_OK);
    ck_assert_ptr_nonnull(qat_optim_schedule(opt));
    const float want[3] = {3.5f, 2.5f, 1.5f};
    const double lr[3] = {0.5, 1.0, 1.0};
    for (int k = 0; k < 3; k++) {
        t->grad[0] = 1.0f;
        qat_optim_step(opt);
        ck_assert_float_eq(t->data[0], want[k]);
        ck_assert(qat_optim_lr(opt) == lr[k]);
    }
    /* detached: the lr set by hand is used */
    qat_optim_set_schedule(opt, NULL);
    ck_assert_ptr_null(qat_optim_schedule(opt));
    ck_assert_int_eq(qat_optim_set_lr(opt, 0.25), QAT_OK);
    qat_optim_step(opt);
    ck_assert_float_eq(t->data[0], 1.25f);
    ck_assert_int_eq(qat_optim_set_lr(opt, -1.0), QAT_ERR_ARG);
    s.kind = QAT_SCHED_COSINE; /* total_steps 0: refused */
    ck_assert_int_eq(qat_optim_set_schedule(opt, &s), QAT_ERR_ARG);
    qat_optim_free(opt);
    rm(t);
}
END_TEST

/* ---- parameter groups ---- */

START_TEST(test_param_groups)
{
    /* lr 0.5, wd 0.5 (L2), no momentum, g = 1, all p0 = 1.
     * a: default: 1 - 0.5*1.5 = 0.25
     * b: lr_scale 0.5, wd 0: 1 - 0.25 = 0.75
     * c: lr_scale 2, wd 0.25: 1 - 1*(1 + 0.25) = -0.25
     * d: no_decay, then group wd < 0 (default rule) -> 0.5 */
    qat_tensor *t[4];
    for (int i = 0; i < 4; i++) t[i] = mk(1, (const float[]){1.0f});
    qat_named_tensor p[4] = {named("a", t[0], 0), named("b", t[1], 0), named("c", t[2], 0),
                             named("d", t[3], 1)};
    qat_optim_options o = sgd(0.5, 0, 0, 0.5, 0);
    qat_optim *opt = qat_optim_create(p, 4, &o);
    ck_assert_ptr_nonnull(opt);
    ck_assert_int_eq(qat_optim_set_group(opt, 1, 1, 0.5, 0.0), QAT_OK);
    ck_assert_int_eq(qat_optim_set_group(opt, 2, 1, 2.0, 0.25), QAT_OK);
    ck_assert_int_eq(qat_optim_set_group(opt, 3, 1, 1.0, 0.5), QAT_OK);
    ck_assert(qat_optim_param_weight_decay(opt, 3) == 0.5);
    ck_assert_int_eq(qat_optim_set_group(opt, 3, 1, 1.0, -1.0), QAT_OK);
    ck_assert(qat_optim_param_weight_decay(opt, 3) == 0.0);
    ck_assert(qat_optim_param_lr_scale(opt, 2) == 2.0);
    ck_assert_int_eq(qat_optim_set_group(opt, 3, 2, 1.0, 0.0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_set_group(opt, -1, 1, 1.0, 0.0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_set_group(opt, 0, 1, -1.0, 0.0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_set_group(opt, 4, 0, 1.0, 0.0), QAT_OK);
    for (int i = 0; i < 4; i++) t[i]->grad[0] = 1.0f;
    qat_optim_step(opt);
    ck_assert_float_eq(t[0]->data[0], 0.25f);
    ck_assert_float_eq(t[1]->data[0], 0.75f);
    ck_assert_float_eq(t[2]->data[0], -0.25f);
    ck_assert_float_eq(t[3]->data[0], 0.5f);
    ck_assert_int_eq(qat_optim_find(opt, "c"), 2);
    ck_assert_int_eq(qat_optim_find(opt, "e"), -1);
    qat_optim_free(opt);
    for (int i = 0; i < 4; i++) rm(t[i]);
}
END_TEST

START_TEST(test_add_params)
{
    /* An LSQ-like scale added after two AdamW steps gets its own step
     * counter: its first update is lr * sign(g) (bias correction at t = 1),
     * and its group has no decay and a tenth of the lr. */
    qat_tensor *w = mk(1, (const float[]){1.0f});
    qat_tensor *s = mk(1, (const float[]){1.0f});
    qat_named_tensor pw = named("fc.weight", w, 0);
    qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    o.lr = 0.1;
    o.weight_decay = 0.1;
    qat_optim *opt = qat_optim_create(&pw, 1, &o);
    ck_assert_ptr_nonnull(opt);
    w->grad[0] = 0.5f;
    qat_optim_step(opt);
    qat_optim_step(opt);
    qat_named_tensor ps = named("fc.weight_fq.scale", s, 0);
    ck_assert_int_eq(qat_optim_add_params(opt, &ps, 1, 0.1, 0.0), 1);
    ck_assert_int_eq(qat_optim_num_params(opt), 2);
    ck_assert_int_eq(qat_optim_num_state(opt), 4);
    ck_assert_int_eq(qat_optim_find_state(opt, "exp_avg_sq/fc.weight_fq.scale"), 3);
    /* adding a name or tensor twice is refused and changes nothing */
    ck_assert_int_eq(qat_optim_add_params(opt, &ps, 1, 1.0, -1.0), QAT_ERR_ARG);
    qat_named_tensor dup = named("other", w, 0);
    ck_assert_int_eq(qat_optim_add_params(opt, &dup, 1, 1.0, -1.0), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_num_params(opt), 2);
    s->grad[0] = -2.0f;
    qat_optim_step(opt);
    ck_assert_float_eq_tol(s->data[0], 1.01f, 1e-6f);
    ck_assert_float_eq_tol(w->data[0], 0.673289f, 1e-6f);
    size_t n;
    int64_t *steps = qat_optim_param_steps(opt, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(steps[0], 3);
    ck_assert_int_eq(steps[1], 1);
    qat_optim_free(opt);
    rm(w);
    rm(s);
}
END_TEST

/* ---- state ---- */

#define NP 3
static const int sizes[NP] = {7, 40000, 3}; /* the middle one takes the OpenMP path */

static void make_params(qat_tensor **t, qat_named_tensor *p, uint64_t seed)
{
    static const char *names[NP] = {"features.0.weight", "features.0.bias", "fc.weight"};
    qat_rng r;
    qat_rng_seed(&r, seed);
    for (int i = 0; i < NP; i++) {
        t[i] = mk((size_t)sizes[i], NULL);
        tu_fill_uniform(t[i]->data, t[i]->numel, -1.0f, 1.0f, &r);
        p[i] = named(names[i], t[i], i == 1);
    }
}

static void random_grads(qat_tensor **t, qat_rng *r)
{
    for (int i = 0; i < NP; i++) tu_fill_uniform(t[i]->grad, t[i]->numel, -1.0f, 1.0f, r);
}

/* Runs 3 steps on A, copies A's state into a fresh B over a copy of the
 * parameters, runs 2 more steps on both with the same gradients, and
 * compares. copy_steps 0 leaves B's per-parameter step counters at 0.
 * Returns 1 if all parameters are bitwise identical. */
static int resume_identical(const qat_optim_options *o, const qat_schedule *sched,
                            int copy_steps)
{
    qat_tensor *ta[NP], *tb[NP];
    qat_named_tensor pa[NP], pb[NP];
    make_params(ta, pa, 11);
    make_params(tb, pb, 99); /* different values: overwritten below */
    qat_optim *a = qat_optim_create(pa, NP, o);
    ck_assert_ptr_nonnull(a);
    if (sched) qat_optim_set_schedule(a, sched);
    qat_rng r;
    qat_rng_seed(&r, 5);
    for (int s = 0; s < 3; s++) {
        random_grads(ta, &r);
        ck_assert_int_eq(qat_optim_step(a), QAT_OK);
    }
    /* "checkpoint": params, scalars, per-param steps, buffers by name */
    for (int i = 0; i < NP; i++) memcpy(tb[i]->data, ta[i]->data, ta[i]->numel * sizeof(float));
    qat_optim *b = qat_optim_create(pb, NP, qat_optim_get_options(a));
    ck_assert_ptr_nonnull(b);
    if (sched) qat_optim_set_schedule(b, qat_optim_schedule(a));
    ck_assert_int_eq(qat_optim_set_step_count(b, qat_optim_step_count(a)), QAT_OK);
    ck_assert_int_eq(qat_optim_set_lr(b, qat_optim_lr(a)), QAT_OK);
    if (copy_steps) {
        size_t na, nb;
        int64_t *sa = qat_optim_param_steps(a, &na), *sb = qat_optim_param_steps(b, &nb);
        ck_assert_uint_eq(na, nb);
        memcpy(sb, sa, na * sizeof *sa);
    }
    ck_assert_int_eq(qat_optim_num_state(a), qat_optim_num_state(b));
    for (int i = 0; i < qat_optim_num_state(a); i++) {
        const char *name;
        float *da, *db;
        size_t na, nb;
        ck_assert_int_eq(qat_optim_state(a, i, &name, &da, &na), QAT_OK);
        int j = qat_optim_find_state(b, name);
        ck_assert_int_ge(j, 0);
        ck_assert_int_eq(qat_optim_state(b, j, NULL, &db, &nb), QAT_OK);
        ck_assert_uint_eq(na, nb);
        memcpy(db, da, na * sizeof(float));
    }
    for (int s = 0; s < 2; s++) {
        random_grads(ta, &r);
        for (int i = 0; i < NP; i++)
            memcpy(tb[i]->grad, ta[i]->grad, ta[i]->numel * sizeof(float));
        qat_optim_step(a);
        qat_optim_step(b);
    }
    int same = 1;
    for (int i = 0; i < NP; i++)
        if (memcmp(ta[i]->data, tb[i]->data, ta[i]->numel * sizeof(float)) != 0) same = 0;
    ck_assert_int_eq(qat_optim_step_count(b), 5);
    qat_optim_free(a);
    qat_optim_free(b);
    for (int i = 0; i < NP; i++) {
        rm(ta[i]);
        rm(tb[i]);
    }
    return same;
}

START_TEST(test_state_resume)
{
    qat_schedule cos = qat_schedule_cosine(0.05, 0.0, 10);
    cos.warmup_steps = 2;
    qat_optim_options s = sgd(0.05, 0.9, 0, 5e-4, 0);
    ck_assert(resume_identical(&s, NULL, 1));
    ck_assert(resume_identical(&s, &cos, 1));
    s.nesterov = 1;
    s.decoupled_wd = 1;
    ck_assert(resume_identical(&s, &cos, 1));
    qat_optim_options ad = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    ck_assert(resume_identical(&ad, NULL, 1));
    ck_assert(resume_identical(&ad, &cos, 1));
    /* the test can fail: AdamW without its step counters restarts the
     * bias correction, and SGD would re-initialise its momentum */
    ck_assert(!resume_identical(&ad, NULL, 0));
    s = sgd(0.05, 0.9, 0, 0, 0);
    ck_assert(!resume_identical(&s, NULL, 0));
}
END_TEST

START_TEST(test_state_enumeration)
{
    qat_tensor *t[NP];
    qat_named_tensor p[NP];
    make_params(t, p, 1);
    qat_optim_options o = sgd(0.1, 0, 0, 0, 0);
    qat_optim *opt = qat_optim_create(p, NP, &o);
    ck_assert_int_eq(qat_optim_num_state(opt), 0);
    ck_assert_int_eq(qat_optim_state(opt, 0, NULL, NULL, NULL), QAT_ERR_ARG);
    ck_assert_str_eq(qat_optim_name(opt), "sgd");
    qat_optim_free(opt);

    o.momentum = 0.9;
    opt = qat_optim_create(p, NP, &o);
    ck_assert_int_eq(qat_optim_num_state(opt), NP);
    const char *name;
    float *data;
    size_t n;
    ck_assert_int_eq(qat_optim_state(opt, 1, &name, &data, &n), QAT_OK);
    ck_assert_str_eq(name, "momentum/features.0.bias");
    ck_assert_uint_eq(n, (size_t)sizes[1]);
    ck_assert_float_eq(data[0], 0.0f); /* zero-filled at creation */
    ck_assert_int_eq(qat_optim_state(opt, NP, &name, &data, &n), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_find_state(opt, "momentum/fc.weight"), 2);
    ck_assert_int_eq(qat_optim_set_step_count(opt, -1), QAT_ERR_ARG);
    ck_assert_int_eq(qat_optim_set_step_count(opt, 7), QAT_OK);
    ck_assert_int_eq(qat_optim_step_count(opt), 7);
    qat_optim_free(opt);

    qat_optim_options ad = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    opt = qat_optim_create(p, NP, &ad);
    ck_assert_int_eq(qat_optim_num_state(opt), 2 * NP);
    ck_assert_str_eq(qat_optim_name(opt), "adamw");
    ck_assert_int_eq(qat_optim_get_kind(opt), QAT_OPTIM_ADAMW);
    ck_assert(qat_optim_get_options(opt)->beta2 == 0.999);
    ck_assert_int_eq(qat_optim_state(opt, 0, &name, NULL, NULL), QAT_OK);
    ck_assert_str_eq(name, "exp_avg/features.0.weight");
    ck_assert_int_eq(qat_optim_state(opt, 5, &name, NULL, &n), QAT_OK);
    ck_assert_str_eq(name, "exp_avg_sq/fc.weight");
    ck_assert_uint_eq(n, (size_t)sizes[2]);
    ck_assert_str_eq(qat_optim_param(opt, 2)->name, "fc.weight");
    ck_assert_ptr_null(qat_optim_param(opt, NP));
    qat_optim_free(opt);
    for (int i = 0; i < NP; i++) rm(t[i]);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_errors)
{
    qat_optim_free(NULL);
    qat_tensor *a = mk(2, NULL);
    qat_named_tensor p[2] = {named("x", a, 0), named("x", a, 0)};
    qat_optim_options o = sgd(0.1, 0.9, 0, 0, 0);
    qat_clear_error();
    ck_assert_ptr_null(qat_optim_create(p, 2, &o));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "x"));
    snprintf(p[1].name, sizeof p[1].name, "y");
    ck_assert_ptr_null(qat_optim_create(p, 2, &o)); /* same tensor twice */
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "same tensor"));
    p[1].t = NULL;
    ck_assert_ptr_null(qat_optim_create(p, 2, &o));
    p[1].name[0] = '\0';
    ck_assert_ptr_null(qat_optim_create(p, 2, &o));
    ck_assert_ptr_null(qat_optim_create(NULL, 1, &o));
    ck_assert_ptr_null(qat_optim_create(p, 1, NULL));

    o.nesterov = 1;
    o.momentum = 0;
    ck_assert_ptr_null(qat_optim_create(p, 1, &o));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "nesterov"));
    o = sgd(-0.1, 0, 0, 0, 0);
    ck_assert_ptr_null(qat_optim_create(p, 1, &o));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "lr"));
    o = sgd(0.1, 0, 0, NAN, 0);
    ck_assert_ptr_null(qat_optim_create(p, 1, &o));
    qat_optim_options ad = qat_optim_options_defaults(QAT_OPTIM_ADAMW);
    ad.beta1 = 1.0;
    ck_assert_ptr_null(qat_optim_create(p, 1, &ad));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "beta1"));
    ad = qat_optim_options_defaults((qat_optim_kind)7);
    ck_assert_ptr_null(qat_optim_create(p, 1, &ad));

    /* an empty optimizer is fine */
    o = sgd(0.1, 0, 0, 0, 0);
    qat_optim *e = qat_optim_create(NULL, 0, &o);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(qat_optim_step(e), QAT_OK);
    size_t n = 5;
    ck_assert_ptr_null(qat_optim_param_steps(e, &n));
    ck_assert_uint_eq(n, 0);
    qat_optim_free(e);
    ck_assert_int_eq(qat_optim_step(NULL), QAT_ERR_ARG);

    ck_assert_str_eq(qat_optim_kind_name(QAT_OPTIM_SGD), "sgd");
    ck_assert_int_eq(qat_optim_kind_from_name("adamw"), QAT_OPTIM_ADAMW);
    ck_assert_int_eq(qat_optim_kind_from_name("adam"), -1);
    rm(a);
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("sgd");
    tcase_add_test(tc, test_sgd_plain);
    tcase_add_test(tc, test_sgd_momentum);
    tcase_add_test(tc, test_sgd_first_step_rule);
    tcase_add_test(tc, test_sgd_nesterov);
    tcase_add_test(tc, test_sgd_l2_vs_decoupled);
    tcase_add_test(tc, test_sgd_no_decay);
    tcase_add_test(tc, test_sgd_vector_and_threads);
    tcase_add_test(tc, test_skip_without_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("adamw");
    tcase_add_test(tc, test_adamw_defaults);
    tcase_add_test(tc, test_adamw_bias_correction);
    tcase_add_test(tc, test_adamw_vs_formula);
    suite_add_tcase(s, tc);
    tc = tcase_create("schedule");
    tcase_add_test(tc, test_schedule_cosine);
    tcase_add_test(tc, test_schedule_step_constant);
    tcase_add_test(tc, test_schedule_warmup);
    tcase_add_test(tc, test_schedule_check_and_names);
    tcase_add_test(tc, test_optim_with_schedule);
    suite_add_tcase(s, tc);
    tc = tcase_create("groups");
    tcase_add_test(tc, test_param_groups);
    tcase_add_test(tc, test_add_params);
    suite_add_tcase(s, tc);
    tc = tcase_create("state");
    tcase_add_test(tc, test_state_resume);
    tcase_add_test(tc, test_state_enumeration);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(optim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
