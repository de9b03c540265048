/* qat/optim.h: optimizers (SGD, AdamW), parameter groups, learning-rate
 * schedules, and the optimizer state a checkpoint saves.
 *
 *   qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
 *   o.lr = 0.05; o.momentum = 0.9; o.weight_decay = 5e-4;
 *   qat_optim *opt = qat_optim_create(qat_model_params(m),
 *                                     qat_model_num_params(m), &o);
 *   qat_schedule s = qat_schedule_cosine(0.05, 0.0, total_steps);
 *   qat_optim_set_schedule(opt, &s);      // lr = s(step) at every step
 *   for (...) {
 *       qat_optim_zero_grad(opt);
 *       ... forward, qat_backward ...
 *       qat_optim_step(opt);
 *   }
 *   qat_optim_free(opt);
 *
 * The update rules are PyTorch's (torch.optim.SGD with dampening 0, and
 * torch.optim.AdamW), element by element in float32 in the same order of
 * operations; scalar factors (bias corrections, 1 - lr*wd) are computed in
 * double from the double hyperparameters and rounded to float where PyTorch
 * rounds its Python floats (ATen's vectorised kernels may fuse a
 * multiply-add where we round twice, so agreement with PyTorch is to the
 * last bit, not bitwise). Every element is updated independently, so the
 * result does not depend on the thread count.
 *
 * The optimizer does not own the parameters: the tensors must outlive it. It
 * copies their names. A parameter is skipped by qat_optim_step (no update, no
 * state change, its step counter does not advance) when its tensor has
 * requires_grad == 0 or grad == NULL (PyTorch skips a parameter whose grad
 * is None). Note that a parameter that took no part in the forward pass has
 * a zero gradient here, not None, so weight decay and momentum still move it.
 */
#ifndef QAT_OPTIM_H
#define QAT_OPTIM_H

#include "core.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- learning-rate schedules ----
 *
 * A schedule is a plain value: copy it to save it. qat_schedule_lr(s, step)
 * gives the learning rate of optimizer step `step` (0-based: the first call
 * to qat_optim_step is step 0). With W = warmup_steps:
 *
 *   step < W:   lr = base_lr * (step + 1) / W
 *               (linear ramp: base/W at step 0, exactly base_lr at W-1)
 *   step >= W:  t = step - W, and the schedule proper runs on t:
 *     CONSTANT: lr = base_lr
 *     STEP:     lr = base_lr * gamma^floor(t / step_size)   (StepLR)
 *     COSINE:   T = total_steps - W (the steps left after the warm-up),
 *               lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * t / T))
 *               for t < T, and min_lr for t >= T (CosineAnnealingLR; it
 *               stays at min_lr instead of rising again). total_steps
 *               counts the warm-up steps too. If T <= 0, lr = min_lr.
 *
 * With W = 0 and min_lr = 0, COSINE is bitwise the peer's
 * 0.5 * base * (1 + cos(pi * step / total)). Everything is computed in
 * double; a negative step counts as 0. */
typedef enum {
    QAT_SCHED_CONSTANT = 0,
    QAT_SCHED_STEP = 1,
    QAT_SCHED_COSINE = 2,
    QAT_SCHED_COUNT
} qat_schedule_kind;

typedef struct qat_schedule {
    qat_schedule_kind kind;
    double base_lr;       /* the lr after the warm-up (>= 0) */
    double min_lr;        /* COSINE: the final lr (default 0) */
    int64_t total_steps;  /* COSINE: steps of the whole run, warm-up included */
    int64_t step_size;    /* STEP: multiply by gamma every step_size steps (> 0) */
    double gamma;         /* STEP: factor (default 0.1) */
    int64_t warmup_steps; /* W >= 0; 0 = no warm-up */
} qat_schedule;

/* Constructors (warmup_steps 0: set .warmup_steps afterwards to add one). */
QAT_API qat_schedule qat_schedule_constant(double lr);
QAT_API qat_schedule qat_schedule_step(double base_lr, int64_t step_size, double gamma);
QAT_API qat_schedule qat_schedule_cosine(double base_lr, double min_lr, int64_t total_steps);

/* QAT_OK, or QAT_ERR_ARG with a message naming the bad field (unknown kind,
 * negative or non-finite lr, step_size <= 0 for STEP, total_steps <= 0 for
 * COSINE, negative warmup_steps). */
QAT_API int qat_schedule_check(const qat_schedule *s);

/* The learning rate of step `step` (see above). Never fails: s should have
 * passed qat_schedule_check; a NULL s gives 0. Returned as a double (the
 * number PyTorch would hold as a Python float); SGD applies it rounded to
 * float32. */
QAT_API double qat_schedule_lr(const qat_schedule *s, int64_t step);

/* "constant", "step", "cosine" (the names stored in files); NULL if out of
 * range. */
QAT_API const char *qat_schedule_kind_name(qat_schedule_kind k);
/* Inverse of qat_schedule_kind_name; -1 if unknown. */
QAT_API int qat_schedule_kind_from_name(const char *name);

/* ---- optimizers ---- */

typedef enum {
    QAT_OPTIM_SGD = 0,
    QAT_OPTIM_ADAMW = 1,
    QAT_OPTIM_COUNT
} qat_optim_kind;

/* "sgd", "adamw"; NULL if out of range. */
QAT_API const char *qat_optim_kind_name(qat_optim_kind k);
/* Inverse of qat_optim_kind_name; -1 if unknown. */
QAT_API int qat_optim_kind_from_name(const char *name);

/* Hyperparameters. Doubles, like PyTorch's Python floats.
 *
 * SGD (dampening 0), per parameter p with gradient g, lr' = lr * lr_scale:
 *   decoupled:       p = p * (1 - lr'*wd)              (before the update)
 *   L2 (default):    g = g + wd * p
 *   momentum > 0:    buf = g on the parameter's first step, else
 *                    buf = momentum * buf + g
 *                    g = nesterov ? g + momentum * buf : buf
 *   p = p - lr' * g
 *
 * AdamW (t = the parameter's own step count, from 1):
 *   decoupled (default): p = p * (1 - lr'*wd)    L2: g = g + wd * p
 *   m = m + (1-beta1) (g - m)            (torch.lerp; = beta1 m + (1-beta1) g)
 *   v = beta2 v + (1-beta2) g^2
 *   p = p - (lr' / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 */
typedef struct qat_optim_options {
    qat_optim_kind kind;
    double lr;           /* >= 0; replaced at each step by an attached schedule */
    double weight_decay; /* >= 0; the default wd of params with no_decay == 0 */
    int decoupled_wd;    /* 1: decoupled (AdamW default), 0: L2 (SGD default) */
    int decay_all;       /* 1: also decay params marked no_decay (default 0) */
    /* SGD */
    double momentum;     /* >= 0; 0 = plain SGD, no state */
    int nesterov;        /* requires momentum > 0 */
    /* AdamW */
    double beta1, beta2; /* in [0, 1) */
    double eps;          /* >= 0 */
} qat_optim_options;

/* PyTorch's defaults for the kind:
 *   SGD:   lr 1e-3, momentum 0, nesterov 0, weight_decay 0, L2.
 *   AdamW: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2,
 *          decoupled.
 * decay_all 0. An unknown kind gives the SGD defaults with that kind (and
 * qat_optim_create then fails). */
QAT_API qat_optim_options qat_optim_options_defaults(qat_optim_kind kind);

typedef struct qat_optim qat_optim;

/* An optimizer over n parameters (n >= 0; params may be NULL when n == 0).
 * Every parameter starts in one group: lr_scale 1 and weight decay
 * opts->weight_decay, or 0 if its no_decay flag is set (unless decay_all).
 * State buffers (momentum, Adam moments) are allocated here, zero-filled, so
 * the state is enumerable before the first step. Fails with QAT_ERR_ARG
 * (bad hyperparameter, NULL tensor or data, empty or repeated name, the same
 * tensor twice) or QAT_ERR_NOMEM, returning NULL. */
QAT_API qat_optim *qat_optim_create(const qat_named_tensor *params, int n,
                                    const qat_optim_options *opts);
QAT_API void qat_optim_free(qat_optim *o); /* NULL is a no-op */

/* Appends n more parameters (e.g. LSQ scales added by quantization), in
 * one group: lr_scale, and weight decay wd (wd < 0: the default rule
 * above). Their state starts fresh (step 0), as torch's add_param_group.
 * Returns the index of the first added parameter (>= 0), or a negative
 * status (same checks as qat_optim_create; o is unchanged on failure). */
QAT_API int qat_optim_add_params(qat_optim *o, const qat_named_tensor *params, int n,
                                 double lr_scale, double wd);

/* Parameter groups: parameters [first, first+count) get learning rate
 * lr * lr_scale (lr_scale >= 0) and weight decay wd (wd < 0: back to the
 * default rule). Example, LSQ scales without decay at a tenth of the lr:
 *   qat_optim_set_group(o, first_scale, n_scales, 0.1, 0.0);
 * QAT_ERR_ARG for a bad range or value. */
QAT_API int qat_optim_set_group(qat_optim *o, int first, int count, double lr_scale,
                                double wd);

/* Applies one update to every parameter from its t->grad, then advances
 * the step count. With a schedule attached, the lr is first set to
 * qat_schedule_lr(schedule, step_count). QAT_ERR_ARG if o is NULL. */
QAT_API int qat_optim_step(qat_optim *o);
/* Zeroes every parameter's gradient (those with grad != NULL). */
QAT_API void qat_optim_zero_grad(qat_optim *o);

/* The learning rate: set by qat_optim_set_lr, or by qat_optim_step from the
 * schedule (then it is the lr the last step used). lr >= 0 and finite, else
 * QAT_ERR_ARG. */
QAT_API int qat_optim_set_lr(qat_optim *o, double lr);
QAT_API double qat_optim_lr(const qat_optim *o);

/* Attaches a copy of *s (checked with qat_schedule_check), or detaches with
 * NULL. The optimizer's step count is the schedule's step. */
QAT_API int qat_optim_set_schedule(qat_optim *o, const qat_schedule *s);
/* The attached schedule, or NULL. */
QAT_API const qat_schedule *qat_optim_schedule(const qat_optim *o);

/* ---- introspection ---- */

QAT_API qat_optim_kind qat_optim_get_kind(const qat_optim *o);
/* "sgd" or "adamw". */
QAT_API const char *qat_optim_name(const qat_optim *o);
/* The hyperparameters given at creation (lr as given, not the current lr). */
QAT_API const qat_optim_options *qat_optim_get_options(const qat_optim *o);
QAT_API int qat_optim_num_params(const qat_optim *o);
/* Parameter i (a copy of the entry given at creation), NULL if out of range. */
QAT_API const qat_named_tensor *qat_optim_param(const qat_optim *o, int i);
/* Index of the parameter with that name, or -1. */
QAT_API int qat_optim_find(const qat_optim *o, const char *name);
/* Parameter i's group settings (lr_scale, effective weight decay); 0 if out
 * of range. */
QAT_API double qat_optim_param_lr_scale(const qat_optim *o, int i);
QAT_API double qat_optim_param_weight_decay(const qat_optim *o, int i);

/* ---- state, for checkpoints (exact resume) ----
 *
 * To save: the kind name and options (hyperparameters), the step count,
 * the lr, the per-parameter step counters, and every state buffer by name.
 * To restore: create the optimizer with the same options over the same
 * parameters (same names, same order), attach the same schedule, then set
 * the step count, the lr, the per-parameter step counters, and copy each
 * buffer into the data pointer qat_optim_state gives. The next step is then
 * bitwise the step the original run would have made. */

/* Number of qat_optim_step calls made (the schedule's step). */
QAT_API int64_t qat_optim_step_count(const qat_optim *o);
/* QAT_ERR_ARG if step < 0. */
QAT_API int qat_optim_set_step_count(qat_optim *o, int64_t step);

/* The per-parameter step counters (how many updates each parameter has
 * received: AdamW's bias-correction t, and SGD's "momentum buffer exists"
 * when > 0), an array of qat_optim_num_params() int64 the caller may read
 * and write (store it as an int64 dataset, e.g. "param_step"). Sets *n to
 * the count; NULL when there are no parameters. */
QAT_API int64_t *qat_optim_param_steps(qat_optim *o, size_t *n);

/* Number of float state buffers: 0 for SGD without momentum, one per
 * parameter for SGD with momentum ("momentum/<param name>"), two per
 * parameter for AdamW ("exp_avg/<param name>", "exp_avg_sq/<param name>",
 * in that order, parameter by parameter). */
QAT_API int qat_optim_num_state(const qat_optim *o);
/* Buffer i: its name, its data (n floats, the parameter's numel; read and
 * write), owned by the optimizer. QAT_ERR_ARG if i is out of range. */
QAT_API int qat_optim_state(qat_optim *o, int i, const char **name, float **data,
                            size_t *n);
/* Index of the state buffer with that name, or -1. */
QAT_API int qat_optim_find_state(const qat_optim *o, const char *name);

#ifdef __cplusplus
}
#endif
#endif
