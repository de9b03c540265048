/* qat.h: quantization-aware training in C (umbrella header).
 *
 * A tour: a float model, fake-quant on a tensor, and one QAT step
 * (examples/train_qat.c is a complete script; each header documents its
 * part). Fallible calls return NULL or a negative status and
 * qat_last_error() says why; ops given a NULL input return NULL, so a step
 * can be checked once, at the loss.
 *
 *   #include <qat.h>
 *
 *   // 1. a float model: layers refer to earlier layers by index (0: input)
 *   qat_model *m = qat_model_create(1, 28, 28);            // input [1, 28, 28]
 *   int x = qat_model_conv2d(m, "conv", 0, 8, 3, 1, 1, 1); // 8 ch, 3x3, stride 1, pad 1, bias
 *   x = qat_model_batchnorm2d(m, "bn", x);
 *   x = qat_model_relu(m, "relu", x);
 *   x = qat_model_maxpool2d(m, "pool", x, 2, 2);
 *   x = qat_model_flatten(m, "flat", x);
 *   qat_model_linear(m, "fc", x, 10, 1);
 *   qat_model_init(m, 42);                                 // PyTorch's initialisation
 *
 *   // 2. ops on tensors: a step's tensors live in the context's arena
 *   qat_ctx *ctx = qat_ctx_create(0);
 *   qat_tensor *t = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, images);
 *   qat_tensor *q = qat_fake_quant_per_tensor(ctx, t, 0.02f, 0, -128, 127); // int8 grid
 *   qat_tensor *s = qat_tensor_create(1, (int[]){1}, 1);  // a learnable scale (LSQ)
 *   s->data[0] = 0.1f;
 *   q = qat_fake_quant_lsq(ctx, t, s, NULL, -7, 7, 0);    // 4 bits; backward fills s->grad
 *   qat_ctx_reset(ctx);                                    // the step ends: t and q are gone
 *
 *   // 3. the QAT model: BN folded, quantizers attached (w4a4: learnable
 *   //    scales), calibrated on a few batches xt (PTQ start point)
 *   qat_qconfig cfg;
 *   qat_qconfig_init(&cfg, "w4a4");
 *   qat_qmodel *qm = qat_qmodel_prepare(m, &cfg);         // borrows m
 *   qat_qmodel_set_fake_quant(qm, 0);
 *   for (each calibration batch xt) qat_qmodel_calibrate(ctx, qm, xt), qat_ctx_reset(ctx);
 *   qat_qmodel_finalize(qm);                               // scales fixed, fake-quant on
 *
 *   // 4. one optimizer over every trainable tensor: weights, BN, scales
 *   int n = qat_qmodel_parameters(qm, NULL, 0);
 *   qat_named_tensor *p = malloc(n * sizeof *p);
 *   qat_qmodel_parameters(qm, p, n);
 *   qat_optim_options o = qat_optim_options_defaults(QAT_OPTIM_SGD);
 *   o.lr = 0.01; o.momentum = 0.9; o.weight_decay = 5e-4; // not on BN, biases, scales
 *   qat_optim *opt = qat_optim_create(p, n, &o);          // copies the list
 *   free(p);
 *
 *   // 5. one QAT step (repeat per batch)
 *   qat_tensor *xt = qat_from(ctx, 4, (int[]){B, 1, 28, 28}, images);
 *   qat_tensor *loss = qat_cross_entropy(ctx, qat_qmodel_forward(ctx, qm, xt), labels);
 *   qat_optim_zero_grad(opt);
 *   if (qat_backward(ctx, loss) != QAT_OK) die(qat_last_error());
 *   qat_optim_step(opt);    // learnable scales keep themselves >= QAT_SCALE_EPS
 *   qat_ctx_reset(ctx);
 *
 *   // then: qat_export_int8(qm, "model.int8.h5", NULL) (qat/qio.h) and the
 *   // integer-only runtime (qat/runtime.h); free the optimizer, then the
 *   // qmodel before the model it borrows, the tensor s and the context.
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
#include "qat/half.h"
#include "qat/dynamic.h"
#include "qat/ptq.h"

#endif
