/* io/export_int8.h: writing an int8 graph (quant/convert.h) as the int8
 * model file of docs/FORMAT-int8.md. Not installed; qat_export_int8
 * (qat/qio.h) converts a qmodel and calls it, tests write synthetic graphs
 * with it. */
#ifndef QAT_IO_EXPORT_INT8_H
#define QAT_IO_EXPORT_INT8_H

#include "quant/convert.h"

/* Writes g to path atomically (nothing at path on failure); source: the
 * root's source attribute (NULL: ""). The conv2d / linear weights are
 * stored as each op's wbits / wenc say (docs/FORMAT-int8.md, "Weight
 * encodings"): QAT_ERR_ARG naming the op and the first weight when a
 * weight does not fit the encoding (outside the b-bit range, not in the
 * codebook, not its hash bucket's value), or wbits / codebook_k are out of
 * range; QAT_ERR_IO, QAT_ERR_NOMEM. */
int qat_export_int8_graph(const qat_i8graph *g, const char *path, const char *source);

#endif
