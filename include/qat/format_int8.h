/* qat/format_int8.h: the names of the int8 model file
 * (docs/FORMAT-int8.md), shared by the writer (io/export.c) and the
 * runtime's reader (runtime/load.c), so the two cannot drift apart. Plain
 * macros: the runtime includes nothing from training, the writer nothing
 * from the runtime but this. */
#ifndef QAT_FORMAT_INT8_H
#define QAT_FORMAT_INT8_H

/* root group */
#define QAT_I8_FORMAT_NAME "int8-model" /* value of the qat_format attribute */
#define QAT_I8_FORMAT_VERSION 3         /* the version written (3: grouped conv, lut, concat, upsample) */
#define QAT_I8_FORMAT_VERSION_MIN 1     /* the oldest version read (1: no weight encodings, no float ops) */
#define QAT_I8_ATTR_FORMAT "qat_format"
#define QAT_I8_ATTR_VERSION "format_version"
#define QAT_I8_ATTR_ARCH "arch"
#define QAT_I8_ATTR_SOURCE "source"
#define QAT_I8_ATTR_NUM_OPS "num_ops"
#define QAT_I8_GROUP_OPS "ops" /* one subgroup an op, "000", "001", ... */

/* op types (the type attribute) */
#define QAT_I8_OP_INPUT "input"
#define QAT_I8_OP_CONV2D "conv2d"
#define QAT_I8_OP_LINEAR "linear"
#define QAT_I8_OP_ADD "add"
#define QAT_I8_OP_GLOBAL_AVGPOOL "global_avgpool"
#define QAT_I8_OP_AVGPOOL2D "avgpool2d"
#define QAT_I8_OP_MAXPOOL2D "maxpool2d"
#define QAT_I8_OP_RELU "relu"
#define QAT_I8_OP_FLATTEN "flatten"
/* format version 3 */
#define QAT_I8_OP_LUT "lut"           /* y = table[x + 128] */
#define QAT_I8_OP_CONCAT "concat"     /* k >= 2 inputs along channels / features */
#define QAT_I8_OP_UPSAMPLE "upsample" /* nearest neighbour, integer factor */

/* attributes of every op */
#define QAT_I8_ATTR_TYPE "type"
#define QAT_I8_ATTR_NAME "name"
#define QAT_I8_ATTR_INPUTS "inputs"
#define QAT_I8_ATTR_OUT_SHAPE "out_shape"
#define QAT_I8_ATTR_OUT_SCALE "out_scale"
#define QAT_I8_ATTR_OUT_ZP "out_zero_point"

/* attributes of some ops */
#define QAT_I8_ATTR_ACT_MIN "act_min"
#define QAT_I8_ATTR_ACT_MAX "act_max"
#define QAT_I8_ATTR_IN_ZP "in_zero_point"
#define QAT_I8_ATTR_STRIDE "stride"
#define QAT_I8_ATTR_PAD "pad"
#define QAT_I8_ATTR_KERNEL "kernel"
#define QAT_I8_ATTR_MEAN "mean"
#define QAT_I8_ATTR_STD "std"
#define QAT_I8_ATTR_MULTIPLIER "multiplier" /* add, pools (attribute); conv/linear: dataset */
#define QAT_I8_ATTR_SHIFT "shift"           /* pools (attribute); conv/linear: dataset */
#define QAT_I8_ATTR_ADD_SHIFT "add_shift"
/* format version 3 */
#define QAT_I8_ATTR_GROUPS "groups" /* conv2d: int32, absent = 1; weight [OC, IC/groups, KH, KW] */
#define QAT_I8_ATTR_SCALE "scale"   /* upsample: int32 factor */

/* datasets */
#define QAT_I8_DSET_LUT "lut"
#define QAT_I8_DSET_WEIGHT "weight"
#define QAT_I8_DSET_BIAS "bias"
#define QAT_I8_DSET_MULTIPLIER "multiplier"
#define QAT_I8_DSET_SHIFT "shift"
#define QAT_I8_DSET_WEIGHT_SCALE "weight_scale"
/* format version 3 */
#define QAT_I8_DSET_ACT_MAX_CHANNEL "act_max_channel" /* conv2d / linear: int32[OC], per-channel act_max */
#define QAT_I8_DSET_TABLE "table"                     /* lut: int8[256], y = table[x + 128] */
#define QAT_I8_TABLE_LEN 256

/* ---- weight encodings (format version 2; conv2d / linear) ----
 * Section owned by the weight-encoding work (packed sub-byte, codebook,
 * hashed weights). Every conv2d / linear op of a version-2 file carries
 * weight_bits (int32, 1..8) and weight_encoding (string); a version-1 file
 * or a missing attribute means "int8" at 8 bits. "int8": dataset weight is
 * int8 [OC, IC, KH, KW] / [OUT, IN] as in version 1. "packed": weight is
 * uint8 [ceil(n * weight_bits / 8)], the codes as one little-endian bit
 * stream (core/pack.c). "codebook": weight is uint8 [ceil(n * ib / 8)]
 * indices of ib = ceil(log2 K) bits into dataset codebook int8 [K].
 * "hashed": no weight dataset; codebook int8 [K] and hash_seed (uint32).
 * Every encoding but "int8" gives the logical shape in weight_shape
 * (int32 [4] or [2]). */
#define QAT_I8_ATTR_WEIGHT_BITS "weight_bits"
#define QAT_I8_ATTR_WEIGHT_ENCODING "weight_encoding"
#define QAT_I8_ATTR_WEIGHT_SHAPE "weight_shape"
#define QAT_I8_ATTR_HASH_SEED "hash_seed"
#define QAT_I8_DSET_CODEBOOK "codebook"
#define QAT_I8_WENC_INT8 "int8"
#define QAT_I8_WENC_PACKED "packed"
#define QAT_I8_WENC_CODEBOOK "codebook"
#define QAT_I8_WENC_HASHED "hashed"
#define QAT_I8_CODEBOOK_MIN 2
#define QAT_I8_CODEBOOK_MAX 256

/* The bucket of weight `index` (flat, row-major over the weight) of a
 * hashed layer with seed `seed` and K buckets: murmur3's 32-bit finaliser
 * of index + seed * 0x9E3779B9 (mod 2^32), modulo K. Part of the format:
 * docs/FORMAT-int8.md repeats it for other readers. */
static inline unsigned qat_i8_hash_bucket(unsigned seed, unsigned index, unsigned K)
{
    unsigned x = (index + seed * 0x9E3779B9u) & 0xFFFFFFFFu;
    x ^= x >> 16;
    x = (x * 0x85EBCA6Bu) & 0xFFFFFFFFu;
    x ^= x >> 13;
    x = (x * 0xC2B2AE35u) & 0xFFFFFFFFu;
    x ^= x >> 16;
    return x % K;
}

/* ---- float ops (format version 2: fp16 layers, dynamic quantization) ----
 * Section owned by the float-path / dynamic-quantization work. */

/* The attribute dtype marks a float op (absent: the int8 op above): its
 * output is float32 values ("float32"), or float32 values every one of
 * which is a binary16 value ("float16"). out_scale / out_zero_point are
 * still written (1, 0) and ignored. Every op type above has a float form;
 * docs/FORMAT-int8.md, "Float ops", gives the arithmetic. */
#define QAT_I8_ATTR_DTYPE "dtype"
#define QAT_I8_DTYPE_FLOAT32 "float32"
#define QAT_I8_DTYPE_FLOAT16 "float16"
#define QAT_I8_DTYPE_BFLOAT16 "bfloat16" /* as float16, rounded to bfloat16 (weights: uint16 bfloat16 bits) */
/* conv2d / linear of a float op: how the weight dataset is stored:
 * "float32" (float32), "float16" (uint16 binary16 bits), or "int8" (int8
 * per output channel with weight_scale: dynamic quantization) */
#define QAT_I8_ATTR_WEIGHT_DTYPE "weight_dtype"
#define QAT_I8_WDTYPE_INT8 "int8"
/* conv2d / linear / add of a float op: int32 0/1, ReLU fused after */
#define QAT_I8_ATTR_RELU "relu"
/* weight_dtype "int8": the run-time activation quantization's granularity,
 * "tensor" (one scale and zero point for the whole input of a run call)
 * or "row" (one per sample) */
#define QAT_I8_ATTR_ACT_QUANT "act_quant"
#define QAT_I8_ACT_QUANT_TENSOR "tensor"
#define QAT_I8_ACT_QUANT_ROW "row"

#endif
