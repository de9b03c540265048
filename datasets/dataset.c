/* Dataset operations (split, subset, normalisation) and the batch iterator.
 *
 * Determinism: the order of epoch e is a Fisher-Yates shuffle of 0..n-1
 * driven by a generator seeded from (seed, e) alone, so an epoch can be
 * rebuilt from its number; augmentation draws from a second generator whose
 * state travels in qat_batch_iter_state. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/data.h"

/* MurmurHash3's 64-bit finaliser: spreads seed arithmetic over all bits. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void shuffle_rng(qat_rng *r, uint64_t seed, int epoch)
{
    qat_rng_seed(r, mix64(seed + 0x243f6a8885a308d3ull * ((uint64_t)epoch + 1)));
}

static void aug_rng(qat_rng *r, uint64_t seed) { qat_rng_seed(r, mix64(seed ^ 0x5851f42d4c957f2dull)); }

/* perm = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
static void permute(int *perm, int n, qat_rng *r)
{
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)qat_rng_below(r, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* lut[p] = (p/255 - mean) / std in float32. */
static int make_lut(const qat_dataset *ds, float *lut, const char *fn)
{
    if (!(ds->std > 0.0f) || !isfinite(ds->std) || !isfinite(ds->mean))
        return qat_error(QAT_ERR_ARG, "%s: dataset normalisation mean %g std %g: std must be finite and > 0",
                         fn, (double)ds->mean, (double)ds->std);
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - ds->mean) / ds->std;
    return QAT_OK;
}

static size_t image_size(const qat_dataset *ds) { return (size_t)ds->c * (size_t)ds->h * (size_t)ds->w; }

/* A new dataset with the images idx[0..count-1] of ds. */
static qat_dataset *gather(const qat_dataset *ds, const int *idx, int start, int count)
{
    size_t per = image_size(ds);
    qat_dataset *o = qat_calloc(1, sizeof *o);
    if (!o) return NULL;
    *o = *ds;
    o->n = count;
    o->images = qat_malloc(per * (size_t)count);
    o->labels = qat_malloc((size_t)count);
    if (!o->images || !o->labels) {
        free(o->images);
        free(o->labels);
        free(o);
        return NULL;
    }
    if (!idx) {
        memcpy(o->images, ds->images + per * (size_t)start, per * (size_t)count);
        memcpy(o->labels, ds->labels + start, (size_t)count);
    } else {
        for (int k = 0; k < count; k++) {
            memcpy(o->images + per * (size_t)k, ds->images + per * (size_t)idx[k], per);
            o->labels[k] = ds->labels[idx[k]];
        }
    }
    return o;
}

int qat_dataset_subset(const qat_dataset *ds, int start, int count, qat_dataset **out)
{
    if (!out) return qat_error(QAT_ERR_ARG, "qat_dataset_subset: out is NULL");
    *out = NULL;
    if (!ds) return qat_error(QAT_ERR_ARG, "qat_dataset_subset: dataset is NULL");
    if (start < 0 || count < 1 || start > ds->n - count)
        return qat_error(QAT_ERR_ARG,
                         "qat_dataset_subset: images [%d, %d + %d) outside the dataset's %d (count >= 1)",
                         start, start, count, ds->n);
    *out = gather(ds, NULL, start, count);
    if (!*out) return qat_error(QAT_ERR_NOMEM, "qat_dataset_subset: out of memory for %d images", count);
    return QAT_OK;
}

int qat_dataset_split(const qat_dataset *ds, int n_val, uint64_t seed, qat_dataset **train,
                      qat_dataset **val)
{
    if (!train || !val) return qat_error(QAT_ERR_ARG, "qat_dataset_split: NULL output");
    *train = *val = NULL;
    if (!ds) return qat_error(QAT_ERR_ARG, "qat_dataset_split: dataset is NULL");
    if (n_val < 0 || n_val >= ds->n)
        return qat_error(QAT_ERR_ARG,
                         "qat_dataset_split: n_val %d must be in [0, %d) (the dataset has %d images and "
                         "training needs at least one)", n_val, ds->n, ds->n);
    int n = ds->n;
    int *perm = qat_malloc((size_t)n * sizeof *perm);
    int *tidx = qat_malloc((size_t)n * sizeof *tidx);
    uint8_t *is_val = qat_calloc((size_t)n, 1);
    int st = QAT_OK;
    if (!perm || !tidx || !is_val) {
        st = qat_error(QAT_ERR_NOMEM, "qat_dataset_split: out of memory");
        goto done;
    }
    qat_rng r;
    qat_rng_seed(&r, mix64(seed ^ 0x9e3779b97f4a7c15ull));
    permute(perm, n, &r);
    for (int k = 0; k < n_val; k++) is_val[perm[k]] = 1;
    /* Both parts in original order: tidx = training indices, then (reusing
     * perm) the validation indices. */
    int nt = 0, nv = 0;
    for (int i = 0; i < n; i++) {
        if (is_val[i])
            perm[nv++] = i;
        else
            tidx[nt++] = i;
    }
    *train = gather(ds, tidx, 0, nt);
    if (*train && n_val > 0) *val = gather(ds, perm, 0, nv);
    if (!*train || (n_val > 0 && !*val)) {
        qat_dataset_free(*train);
        qat_dataset_free(*val);
        *train = *val = NULL;
        st = qat_error(QAT_ERR_NOMEM, "qat_dataset_split: out of memory for %d images", n);
    }
done:
    free(perm);
    free(tidx);
    free(is_val);
    return st;
}

static void convert(const uint8_t *src, size_t m, const float *lut, float *dst)
{
    for (size_t j = 0; j < m; j++) dst[j] = lut[src[j]];
}

int qat_dataset_normalize_into(const qat_dataset *ds, const int *idx, int count, float *out)
{
    if (!ds || !out || count < 0)
        return qat_error(QAT_ERR_ARG, "qat_dataset_normalize_into: NULL dataset/out or count < 0");
    if (!idx && count > ds->n)
        return qat_error(QAT_ERR_ARG, "qat_dataset_normalize_into: count %d > %d images", count, ds->n);
    if (idx)
        for (int k = 0; k < count; k++)
            if (idx[k] < 0 || idx[k] >= ds->n)
                return qat_error(QAT_ERR_ARG,
                                 "qat_dataset_normalize_into: idx[%d] = %d outside [0, %d)", k, idx[k],
                                 ds->n);
    float lut[256];
    int st = make_lut(ds, lut, "qat_dataset_normalize_into");
    if (st) return st;
    size_t per = image_size(ds);
    for (int k = 0; k < count; k++) {
        size_t i = idx ? (size_t)idx[k] : (size_t)k;
        convert(ds->images + per * i, per, lut, out + per * (size_t)k);
    }
    return QAT_OK;
}

/* ---- batch iterator ---- */

struct qat_batch_iter {
    const qat_dataset *ds;
    qat_batch_opts o;
    qat_batch_iter_state st;
    int limit; /* images per epoch: n, or whole batches only with drop_last */
    int *perm; /* [n] order of the current epoch; NULL when not shuffling */
};

qat_batch_opts qat_batch_opts_defaults(void)
{
    qat_batch_opts o;
    memset(&o, 0, sizeof o);
    o.batch_size = 128;
    o.shuffle = 1;
    o.seed = 0;
    o.drop_last = 0;
    o.crop_padding = 0;
    o.hflip_prob = 0.0f;
    return o;
}

static void build_epoch(qat_batch_iter *it)
{
    if (!it->perm) return;
    qat_rng r;
    shuffle_rng(&r, it->st.seed, it->st.epoch);
    permute(it->perm, it->ds->n, &r);
}

int qat_batch_iter_create(const qat_dataset *ds, const qat_batch_opts *opts, qat_batch_iter **out)
{
    if (!out) return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: out is NULL");
    *out = NULL;
    if (!ds || !opts) return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: NULL dataset or options");
    if (ds->n < 1 || !ds->images || !ds->labels)
        return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: empty dataset");
    if (opts->batch_size < 1)
        return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: batch_size %d must be >= 1",
                         opts->batch_size);
    if (opts->drop_last && opts->batch_size > ds->n)
        return qat_error(QAT_ERR_ARG,
                         "qat_batch_iter_create: drop_last with batch_size %d > %d images gives no batches",
                         opts->batch_size, ds->n);
    if (opts->crop_padding < 0 || opts->crop_padding > 65535)
        return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: crop_padding %d outside 0..65535",
                         opts->crop_padding);
    if (!(opts->hflip_prob >= 0.0f && opts->hflip_prob <= 1.0f))
        return qat_error(QAT_ERR_ARG, "qat_batch_iter_create: hflip_prob %g outside [0, 1]",
                         (double)opts->hflip_prob);
    qat_batch_iter *it = qat_calloc(1, sizeof *it);
    if (!it) return qat_error(QAT_ERR_NOMEM, "qat_batch_iter_create: out of memory");
    it->ds = ds;
    it->o = *opts;
    it->limit = opts->drop_last ? ds->n - ds->n % opts->batch_size : ds->n;
    if (opts->shuffle) {
        it->perm = qat_malloc((size_t)ds->n * sizeof *it->perm);
        if (!it->perm) {
            free(it);
            return qat_error(QAT_ERR_NOMEM, "qat_batch_iter_create: out of memory for %d indices", ds->n);
        }
    }
    it->st.seed = opts->seed;
    it->st.epoch = 0;
    it->st.position = 0;
    aug_rng(&it->st.aug_rng, opts->seed);
    build_epoch(it);
    *out = it;
    return QAT_OK;
}

void qat_batch_iter_free(qat_batch_iter *it)
{
    if (!it) return;
    free(it->perm);
    free(it);
}

/* One image [c, h, w] of src into dst, shifted by (dy - P, dx - P) inside a
 * frame of pad pixels and mirrored left-right if flip:
 * dst[y][x] = src[y + dy - P][x' + dx - P], x' = flip ? w-1-x : x. */
static void augment(const uint8_t *src, int c, int h, int w, int P, int dy, int dx, int flip,
                    const float *lut, float *dst)
{
    float pad = lut[0];
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *s = src + (size_t)ch * h * w;
        float *d = dst + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            int sy = y + dy - P;
            float *drow = d + (size_t)y * w;
            if (sy < 0 || sy >= h) {
                for (int x = 0; x < w; x++) drow[x] = pad;
                continue;
            }
            const uint8_t *srow = s + (size_t)sy * w;
            for (int x = 0; x < w; x++) {
                int sx = (flip ? w - 1 - x : x) + dx - P;
                drow[x] = (sx >= 0 && sx < w) ? lut[srow[sx]] : pad;
            }
        }
    }
}

int qat_batch_iter_next(qat_batch_iter *it, float *x_out, uint8_t *y_out, int *count_out)
{
    if (count_out) *count_out = 0;
    if (!it || !x_out || !y_out || !count_out)
        return qat_error(QAT_ERR_ARG, "qat_batch_iter_next: NULL argument");
    const qat_dataset *ds = it->ds;
    int pos = it->st.position;
    if (pos >= it->limit) return 0;
    int cnt = it->limit - pos < it->o.batch_size ? it->limit - pos : it->o.batch_size;
    float lut[256];
    int st = make_lut(ds, lut, "qat_batch_iter_next");
    if (st) return st;
    size_t per = image_size(ds);
    int P = it->o.crop_padding;
    float pf = it->o.hflip_prob;
    int aug = P > 0 || pf > 0.0f;
    for (int k = 0; k < cnt; k++) {
        int i = it->perm ? it->perm[pos + k] : pos + k;
        const uint8_t *src = ds->images + per * (size_t)i;
        float *dst = x_out + per * (size_t)k;
        if (aug) {
            /* Fixed draw order per image: top offset, left offset, flip. */
            int dy = 0, dx = 0, flip = 0;
            if (P > 0) {
                dy = (int)qat_rng_below(&it->st.aug_rng, 2u * (uint32_t)P + 1u);
                dx = (int)qat_rng_below(&it->st.aug_rng, 2u * (uint32_t)P + 1u);
            }
            if (pf > 0.0f) flip = qat_rng_uniform(&it->st.aug_rng) < pf;
            augment(src, ds->c, ds->h, ds->w, P, dy, dx, flip, lut, dst);
        } else {
            convert(src, per, lut, dst);
        }
        y_out[k] = ds->labels[i];
    }
    it->st.position = pos + cnt;
    *count_out = cnt;
    return 1;
}

void qat_batch_iter_reset_epoch(qat_batch_iter *it)
{
    if (!it) return;
    if (it->st.epoch < INT_MAX) it->st.epoch++;
    it->st.position = 0;
    build_epoch(it);
}

size_t qat_batch_iter_x_size(const qat_batch_iter *it)
{
    return it ? (size_t)it->o.batch_size * image_size(it->ds) : 0;
}

int qat_batch_iter_num_batches(const qat_batch_iter *it)
{
    if (!it) return 0;
    return it->o.drop_last ? it->limit / it->o.batch_size
                           : (it->ds->n + it->o.batch_size - 1) / it->o.batch_size;
}

int qat_batch_iter_epoch(const qat_batch_iter *it) { return it ? it->st.epoch : 0; }

void qat_batch_iter_get_state(const qat_batch_iter *it, qat_batch_iter_state *state)
{
    if (!it || !state) return;
    *state = it->st;
}

int qat_batch_iter_set_state(qat_batch_iter *it, const qat_batch_iter_state *state)
{
    if (!it || !state) return qat_error(QAT_ERR_ARG, "qat_batch_iter_set_state: NULL argument");
    if (state->epoch < 0 || state->position < 0 || state->position > it->ds->n)
        return qat_error(QAT_ERR_ARG,
                         "qat_batch_iter_set_state: epoch %d / position %d invalid (epoch >= 0, "
                         "position in [0, %d])", state->epoch, state->position, it->ds->n);
    int rebuild = state->seed != it->st.seed || state->epoch != it->st.epoch;
    it->st = *state;
    if (rebuild) build_epoch(it);
    return QAT_OK;
}
