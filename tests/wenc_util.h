/* tests/wenc_util.h: int8 graphs for the weight-encoding tests
 * (tests/test_wenc.c, tests/wenc_make.c): a loaded int8 model copied
 * back into a graph, and its conv/linear weights re-encoded. */
#ifndef QAT_TESTS_WENC_UTIL_H
#define QAT_TESTS_WENC_UTIL_H

#include "io/export_int8.h"
#include "qat/runtime.h"

/* Every op of m as a graph (dense int8 weights, wbits 8); square conv
 * kernels only. 0 or -1 (out of memory, a non-square kernel). Free with
 * qat_i8graph_free. */
int wu_graph_from_rt(const qat_rt_model *m, qat_i8graph *g);

typedef enum {
    WU_PACKED = 0, /* weights clamped to `bits` bits (1 bit: the sign, 0 -> +1), stored packed */
    WU_CODEBOOK,   /* a codebook of the layer's distinct weights, padded with unused values to at least K */
    WU_HASHED,     /* K buckets, seed: every weight replaced by its bucket's value (the layer's weight at
                    * the bucket's first member; the model changes) */
} wu_mode;

/* Re-encodes every conv/linear op of g. 0, or -1 (out of memory). */
int wu_encode(qat_i8graph *g, wu_mode mode, int bits, int K, unsigned seed);

#endif
