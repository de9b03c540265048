/* qat_qmodel_parameters(): every trainable tensor of a QAT model, built
 * only on the accessors (the float model's list, then the qmodel's). */
#include <string.h>

#include "autograd/internal.h"
#include "qat/quant.h"

int qat_qmodel_parameters(const qat_qmodel *qm, qat_named_tensor *out, int n)
{
    if (!qm) return qat_error(QAT_ERR_ARG, "qmodel_parameters: NULL qmodel");
    if (n < 0 || (n > 0 && !out))
        return qat_error(QAT_ERR_ARG, "qmodel_parameters: room for %d entries at %p", n, (void *)out);
    const qat_model *m = qat_qmodel_float((qat_qmodel *)qm);
    int nf = qat_model_num_params(m), nq = qat_qmodel_num_params(qm);
    const qat_named_tensor *lists[2] = {qat_model_params(m), qat_qmodel_params(qm)};
    int counts[2] = {nf, nq}, k = 0;
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < counts[l]; i++, k++)
            if (k < n) out[k] = lists[l][i];
    return nf + nq;
}
