/* runtime/boundary.c: the only runtime code that touches float, at the
 * model's edges: quantizing float inputs onto the input op's grid and
 * dequantizing int8 logits. Everything between is integer
 * (kernels_*.c poison float and double). */
#include <omp.h>

#include "runtime/rounding.h"
#include "runtime/rt_internal.h"

/* q = clamp(out_zero_point + round_half_even(fl32(x * fl32(1 / out_scale))),
 * act_min, act_max) (docs/FORMAT-int8.md, input op), x and y [n, size]. A
 * NaN is an error of the input: returns the index of the first NaN, or -1. */
long long qat_rti_input_f32(const rt_op *op, const float *x, int8_t *y, int n, int threads)
{
    const size_t sz = op->out_size;
    const float inv = 1.0f / op->out_scale;
    const int32_t zp = op->out_zp, lo = op->act_min, hi = op->act_max;
    long long nans = 0;
    /* a thread per image at most, none below 64 Ki values */
    const int T = (size_t)n * sz < ((size_t)1 << 16) ? 1 : threads < n ? threads : n;
#pragma omp parallel for num_threads(T) if (T > 1) schedule(static) reduction(+ : nans)
    for (int i = 0; i < n; i++)
        for (size_t j = (size_t)i * sz; j < (size_t)(i + 1) * sz; j++) {
            nans += x[j] != x[j];
            y[j] = (int8_t)qat_quantize_val(x[j], inv, zp, lo, hi);
        }
    if (!nans) return -1;
    for (size_t j = 0;; j++)
        if (x[j] != x[j]) return (long long)j;
}

void qat_rt_dequantize(const qat_rt_model *m, const int8_t *q, size_t n, float *out)
{
    if (!m || !q || !out) return;
    const rt_op *last = &m->ops[m->n_ops - 1];
    const float s = last->out_scale;
    const int32_t zp = last->out_zp;
    for (size_t i = 0; i < n; i++) out[i] = (float)((int32_t)q[i] - zp) * s;
}
