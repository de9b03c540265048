/* Learning-rate schedules: plain values evaluated per step (qat/optim.h). */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "qat/optim.h"

/* math.pi; M_PI is not C11 */
#define QAT_PI 3.141592653589793

static const char *const schedule_names[] = {
    [QAT_SCHED_CONSTANT] = "constant",
    [QAT_SCHED_STEP] = "step",
    [QAT_SCHED_COSINE] = "cosine",
};
_Static_assert(sizeof schedule_names / sizeof schedule_names[0] == QAT_SCHED_COUNT,
               "schedule_names must name every qat_schedule_kind");

const char *qat_schedule_kind_name(qat_schedule_kind k)
{
    if ((int)k < 0 || k >= QAT_SCHED_COUNT) return NULL;
    return schedule_names[k];
}

int qat_schedule_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < QAT_SCHED_COUNT; k++)
        if (strcmp(name, schedule_names[k]) == 0) return k;
    return -1;
}

static qat_schedule schedule_base(qat_schedule_kind kind, double lr)
{
    qat_schedule s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.base_lr = lr;
    s.min_lr = 0.0;
    s.total_steps = 0;
    s.step_size = 0;
    s.gamma = 0.1;
    s.warmup_steps = 0;
    return s;
}

qat_schedule qat_schedule_constant(double lr) { return schedule_base(QAT_SCHED_CONSTANT, lr); }

qat_schedule qat_schedule_step(double base_lr, int64_t step_size, double gamma)
{
    qat_schedule s = schedule_base(QAT_SCHED_STEP, base_lr);
    s.step_size = step_size;
    s.gamma = gamma;
    return s;
}

qat_schedule qat_schedule_cosine(double base_lr, double min_lr, int64_t total_steps)
{
    qat_schedule s = schedule_base(QAT_SCHED_COSINE, base_lr);
    s.min_lr = min_lr;
    s.total_steps = total_steps;
    return s;
}

static int bad_lr(double x) { return !isfinite(x) || x < 0.0; }

int qat_schedule_check(const qat_schedule *s)
{
    if (!s) return qat_error(QAT_ERR_ARG, "schedule: NULL");
    if ((int)s->kind < 0 || s->kind >= QAT_SCHED_COUNT)
        return qat_error(QAT_ERR_ARG, "schedule: unknown kind %d", (int)s->kind);
    const char *kn = schedule_names[s->kind];
    if (bad_lr(s->base_lr))
        return qat_error(QAT_ERR_ARG, "%s schedule: base_lr %g, expected finite and >= 0",
                         kn, s->base_lr);
    if (s->warmup_steps < 0)
        return qat_error(QAT_ERR_ARG, "%s schedule: warmup_steps %lld, expected >= 0", kn,
                         (long long)s->warmup_steps);
    if (s->kind == QAT_SCHED_STEP) {
        if (s->step_size <= 0)
            return qat_error(QAT_ERR_ARG, "step schedule: step_size %lld, expected > 0",
                             (long long)s->step_size);
        if (bad_lr(s->gamma))
            return qat_error(QAT_ERR_ARG, "step schedule: gamma %g, expected finite and >= 0",
                             s->gamma);
    }
    if (s->kind == QAT_SCHED_COSINE) {
        if (s->total_steps <= 0)
            return qat_error(QAT_ERR_ARG, "cosine schedule: total_steps %lld, expected > 0",
                             (long long)s->total_steps);
        if (bad_lr(s->min_lr))
            return qat_error(QAT_ERR_ARG, "cosine schedule: min_lr %g, expected finite and >= 0",
                             s->min_lr);
    }
    return QAT_OK;
}

double qat_schedule_lr(const qat_schedule *s, int64_t step)
{
    if (!s) return 0.0;
    if (step < 0) step = 0;
    int64_t w = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (step < w) return s->base_lr * (double)(step + 1) / (double)w;
    int64_t t = step - w;
    switch (s->kind) {
    case QAT_SCHED_STEP:
        if (s->step_size <= 0) return s->base_lr;
        return s->base_lr * pow(s->gamma, (double)(t / s->step_size));
    case QAT_SCHED_COSINE: {
        int64_t T = s->total_steps - w;
        if (T <= 0 || t >= T) return s->min_lr;
        /* the peer's order: 0.5 * base * (1 + cos(pi * step / total)) */
        return s->min_lr +
               0.5 * (s->base_lr - s->min_lr) * (1.0 + cos(QAT_PI * (double)t / (double)T));
    }
    case QAT_SCHED_CONSTANT:
    default:
        return s->base_lr;
    }
}
