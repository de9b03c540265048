/* qat.h: quantization-aware training in C (umbrella header).
 *
 * A tour: a 2-layer model trained with fake-quant (see examples/ for the
 * full scripts).
 *
 *   #include <qat.h>
 *
 *   qat_model *m = qat_model_create(1, 28, 28);
 *   int x = qat_model_flatten(m, "flatten", 0);
 *   x = qat_model_linear(m, "fc1", x, 128, 1);
 *   x = qat_model_relu(m, "relu", x);
 *   qat_model_linear(m, "fc2", x, 10, 1);
 *   qat_model_init(m, 42);
 *
 *   qat_ctx *ctx = qat_ctx_create(0);
 *   for (each batch of images xb [B,1,28,28] and labels yb) {
 *       qat_tensor *xt = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, xb);
 *       qat_tensor *loss = qat_cross_entropy(ctx, qat_model_forward(ctx, m, xt), yb);
 *       if (qat_backward(ctx, loss) != QAT_OK) die(qat_last_error());
 *       qat_optim_step(opt);          // see qat/optim.h
 *       qat_optim_zero_grad(opt);
 *       qat_ctx_reset(ctx);
 *   }
 */
#ifndef QAT_H
#define QAT_H

#include "qat/core.h"
#include "qat/tensor.h"
#include "qat/model.h"
#include "qat/data.h"
#include "qat/optim.h"
#include "qat/qparams.h"
#include "qat/observer.h"
#include "qat/quant.h"

#endif
