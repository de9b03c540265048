/* qat/data.h: IDX files (MNIST, Fashion-MNIST), datasets kept as uint8,
 * train/validation splits, and a seeded, resumable batch iterator with
 * augmentation.
 *
 * A dataset keeps its images as bytes (60000 Fashion-MNIST images are 47 MB,
 * not 188 MB of floats); pixels become normalised floats only when a batch
 * is gathered: x = (pixel/255 - mean) / std, computed in float32 (as numpy
 * does on a float32 array), NCHW layout.
 *
 *     qat_dataset *train = NULL, *test = NULL, *tr = NULL, *val = NULL;
 *     if (qat_dataset_load_fashion_mnist(dir, 1, &train) ||
 *         qat_dataset_load_fashion_mnist(dir, 0, &test) ||
 *         qat_dataset_split(train, 5000, seed, &tr, &val))
 *         fprintf(stderr, "%s\n", qat_last_error());
 *     qat_batch_opts o = qat_batch_opts_defaults();   // 128, shuffled
 *     o.seed = seed;
 *     qat_batch_iter *it = NULL;
 *     qat_batch_iter_create(tr, &o, &it);
 *     float *x = malloc(qat_batch_iter_x_size(it) * sizeof *x);
 *     uint8_t y[128];
 *     int n;
 *     for (int epoch = 0; epoch < epochs; epoch++) {
 *         while (qat_batch_iter_next(it, x, y, &n) == 1) { ... n images ... }
 *         qat_batch_iter_reset_epoch(it);
 *     }
 *
 * Every fallible function returns 0 (or NULL on failure for constructors
 * returning pointers) and sets qat_last_error() to a message naming the file
 * or argument and the problem. */
#ifndef QAT_DATA_H
#define QAT_DATA_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Normalisation of docs/MODELS.md: (pixel/255 - 0.2860) / 0.3530. */
#define QAT_FASHION_MNIST_MEAN 0.2860f
#define QAT_FASHION_MNIST_STD 0.3530f
/* Where Debian's fashion-mnist package installs the files. */
#define QAT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
/* Classes assumed by the loaders unless told otherwise. */
#define QAT_DATASET_DEFAULT_CLASSES 10

/* ---- raw IDX files ---- */

/* Largest number of dimensions qat_idx_load accepts. */
#define QAT_IDX_MAX_DIMS 8

/* The contents of one unsigned-byte IDX file. */
typedef struct qat_idx {
    int ndim;                    /* 1 .. QAT_IDX_MAX_DIMS */
    int dims[QAT_IDX_MAX_DIMS];  /* each >= 1; dims[ndim..] are 0 */
    size_t size;                 /* product of dims = bytes in data */
    uint8_t *data;               /* row-major, owned: free with qat_idx_free */
} qat_idx;

/* Reads an IDX file of unsigned bytes (magic 0x000008NN, NN = number of
 * dimensions), raw or gzip-compressed; gzip is recognised by its magic bytes
 * 1f 8b, not by the file name. expected_ndim > 0 requires exactly that many
 * dimensions (0: any). Fails with QAT_ERR_IO (cannot open/read),
 * QAT_ERR_FORMAT (bad magic, wrong dimension count, a zero dimension, payload
 * shorter or longer than the product of the dimensions, corrupt or truncated
 * gzip stream), QAT_ERR_UNSUPPORTED (an IDX element type other than unsigned
 * byte), QAT_ERR_NOMEM. On failure *out is zeroed. */
QAT_API int qat_idx_load(const char *path, int expected_ndim, qat_idx *out);

/* Frees idx->data and zeroes *idx. NULL is a no-op. */
QAT_API void qat_idx_free(qat_idx *idx);

/* ---- datasets ---- */

/* A labelled image dataset, owned by whoever received it from a constructor
 * below; free with qat_dataset_free. The fields may be read freely; mean and
 * std may be changed (they are read each time images are normalised). */
typedef struct qat_dataset {
    int n, c, h, w;      /* n images of c x h x w, all >= 1 */
    int num_classes;     /* every label is in [0, num_classes) */
    uint8_t *images;     /* [n, c, h, w] row-major pixels 0..255 */
    uint8_t *labels;     /* [n] */
    float mean, std;     /* normalisation, in units of pixel/255; std > 0 */
} qat_dataset;

/* Loads an images file (magic 0x00000803: n, h, w) and a labels file (magic
 * 0x00000801: n), raw or gzip, checking both (see qat_idx_load), that the
 * counts agree and that every label is below QAT_DATASET_DEFAULT_CLASSES.
 * c = 1; mean/std are the Fashion-MNIST values. */
QAT_API int qat_dataset_load_idx(const char *images_path, const char *labels_path,
                                 qat_dataset **out);

/* Same with an explicit number of classes (1 .. 256). */
QAT_API int qat_dataset_load_idx_classes(const char *images_path, const char *labels_path,
                                         int num_classes, qat_dataset **out);

/* Loads the Fashion-MNIST (or MNIST) training set (train != 0:
 * train-images-idx3-ubyte, train-labels-idx1-ubyte) or test set (t10k-...)
 * from dir, each file raw or with a .gz suffix (the raw name is tried
 * first). dir NULL means QAT_FASHION_MNIST_DIR. A missing file is
 * QAT_ERR_IO naming the directory and the file. */
QAT_API int qat_dataset_load_fashion_mnist(const char *dir, int train, qat_dataset **out);

/* A dataset holding copies of images [n, c, h, w] and labels [n]; n, c, h, w
 * >= 1, num_classes 1 .. 256 and every label below it. mean/std are the
 * Fashion-MNIST values. NULL (QAT_ERR_ARG / QAT_ERR_NOMEM) on failure. */
QAT_API qat_dataset *qat_dataset_from_memory(const uint8_t *images, const uint8_t *labels,
                                             int n, int c, int h, int w, int num_classes);

/* Frees the dataset and its arrays. NULL is a no-op. */
QAT_API void qat_dataset_free(qat_dataset *ds);

/* Carves a validation set out of ds: a permutation of 0..n-1 drawn from
 * seed picks n_val images for *val and leaves the rest for *train; both keep
 * the images in their original relative order. The split depends only on
 * (n, n_val, seed). 0 <= n_val < n; n_val = 0 gives *val = NULL and *train a
 * copy of ds. New datasets (copies, mean/std/num_classes inherited); on
 * failure both outputs are NULL. */
QAT_API int qat_dataset_split(const qat_dataset *ds, int n_val, uint64_t seed,
                              qat_dataset **train, qat_dataset **val);

/* A copy of images start .. start+count-1 (count >= 1, within ds). */
QAT_API int qat_dataset_subset(const qat_dataset *ds, int start, int count, qat_dataset **out);

/* Writes the normalised images idx[0..count-1] (idx NULL: images
 * 0..count-1) to out [count, c, h, w] as floats. QAT_ERR_ARG for an index
 * outside [0, n) or std <= 0 (out is then left unspecified). */
QAT_API int qat_dataset_normalize_into(const qat_dataset *ds, const int *idx, int count,
                                       float *out);

/* ---- batch iterator ---- */

/* Options of a batch iterator; start from qat_batch_opts_defaults(). */
typedef struct qat_batch_opts {
    int batch_size;     /* >= 1; default 128 */
    int shuffle;        /* reshuffle every epoch (default 1); 0: in order */
    uint64_t seed;      /* fixes shuffling and augmentation (default 0) */
    int drop_last;      /* 1: skip the last, incomplete batch (default 0) */
    /* Augmentation (training only; default off). */
    int crop_padding;   /* P > 0: pad each side with P pixels of value 0 (the
                           normalised value of pixel 0), then crop h x w at a
                           random offset in [0, 2P] x [0, 2P]; range 0..65535 */
    float hflip_prob;   /* probability of a horizontal flip, in [0, 1] (0.5 is
                           the usual choice; 0 = off) */
} qat_batch_opts;

/* batch 128, shuffle on, seed 0, keep the last batch, no augmentation. */
QAT_API qat_batch_opts qat_batch_opts_defaults(void);

/* Everything needed to continue an epoch exactly where it stopped: save it
 * with a checkpoint, restore it into an iterator made with the same options
 * over the same dataset, and the following batches are identical. */
typedef struct qat_batch_iter_state {
    uint64_t seed;      /* the shuffling/augmentation seed */
    int epoch;          /* 0-based; the epoch's order derives from (seed, epoch) */
    int position;       /* images already returned in this epoch, 0 .. n */
    qat_rng aug_rng;    /* the augmentation generator */
} qat_batch_iter_state;

typedef struct qat_batch_iter qat_batch_iter;

/* Creates an iterator over ds at epoch 0, position 0. ds must outlive the
 * iterator and its images must not change meanwhile (mean/std may). */
QAT_API int qat_batch_iter_create(const qat_dataset *ds, const qat_batch_opts *opts,
                                  qat_batch_iter **out);

/* NULL is a no-op. */
QAT_API void qat_batch_iter_free(qat_batch_iter *it);

/* The next batch of the epoch: x_out [count, c, h, w] normalised (and
 * augmented) floats, y_out [count] labels, count <= batch_size (smaller only
 * for the last batch when drop_last is off). Returns 1 with a batch, 0 when
 * the epoch is over (until qat_batch_iter_reset_epoch), negative on error
 * (NULL arguments, std <= 0). */
QAT_API int qat_batch_iter_next(qat_batch_iter *it, float *x_out, uint8_t *y_out,
                                int *count_out);

/* Starts the next epoch (epoch + 1, position 0, a new order if shuffled),
 * whether or not the current one was finished. */
QAT_API void qat_batch_iter_reset_epoch(qat_batch_iter *it);

/* Floats needed for x_out: batch_size * c * h * w. */
QAT_API size_t qat_batch_iter_x_size(const qat_batch_iter *it);

/* Batches per epoch: ceil(n / batch) (floor with drop_last). */
QAT_API int qat_batch_iter_num_batches(const qat_batch_iter *it);

/* The current epoch (0-based). */
QAT_API int qat_batch_iter_epoch(const qat_batch_iter *it);

/* Copies the iterator's position into *state. */
QAT_API void qat_batch_iter_get_state(const qat_batch_iter *it, qat_batch_iter_state *state);

/* Moves the iterator to *state (as saved by qat_batch_iter_get_state).
 * QAT_ERR_ARG if epoch < 0 or position is outside [0, n]; the iterator is
 * then unchanged. */
QAT_API int qat_batch_iter_set_state(qat_batch_iter *it, const qat_batch_iter_state *state);

#ifdef __cplusplus
}
#endif
#endif
