/* tests/wenc_util.c: see wenc_util.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "qat/format_int8.h"
#include "runtime/rt_internal.h"
#include "wenc_util.h"

static void *dup(const void *p, size_t n)
{
    if (!p) return NULL;
    void *q = malloc(n ? n : 1);
    if (q) memcpy(q, p, n);
    return q;
}

int wu_graph_from_rt(const qat_rt_model *m, qat_i8graph *g)
{
    memset(g, 0, sizeof *g);
    g->ops = calloc((size_t)m->n_ops, sizeof *g->ops);
    if (!g->ops) return -1;
    g->cap = m->n_ops;
    g->arch = m->arch;
    for (int i = 0; i < m->n_ops; i++, g->n++) {
        const rt_op *r = &m->ops[i];
        qat_i8op *o = &g->ops[i];
        o->type = qat_rti_op_type_name(r->type);
        snprintf(o->name, sizeof o->name, "%s", r->name);
        o->n_inputs = r->n_inputs;
        o->inputs[0] = r->inputs[0];
        o->inputs[1] = r->inputs[1];
        o->out_ndim = r->out_ndim;
        memcpy(o->out_shape, r->out_shape, sizeof o->out_shape);
        o->out_scale = r->out_scale;
        o->out_zp = r->out_zp;
        o->act_min = r->act_min;
        o->act_max = r->act_max;
        o->in_zp = r->in_zp;
        o->mean = r->mean;
        o->std = r->std;
        memcpy(o->lut, r->lut, 256);
        o->stride = r->stride;
        o->pad = r->pad;
        o->k = r->type == RT_OP_CONV2D ? r->kh : r->kernel;
        memcpy(o->add_m, r->add_mult, sizeof o->add_m);
        memcpy(o->add_zp, r->add_zp, sizeof o->add_zp);
        o->add_t = r->add_shift;
        o->pool_m = r->pool_mult;
        o->pool_shift = r->pool_shift;
        if (r->type == RT_OP_CONV2D || r->type == RT_OP_LINEAR) {
            if (r->kh != r->kw) return -1;
            size_t n = (size_t)r->oc * r->ic * r->kh * r->kw, oc = (size_t)r->oc;
            o->oc = r->oc;
            o->ic = r->ic;
            o->wbits = 8;
            o->wenc = QAT_I8W_DENSE;
            o->weight = dup(r->weight, n);
            o->bias = dup(r->bias, oc * 4);
            o->mult = dup(r->mult, oc * 4);
            o->shift = dup(r->shift, oc * 4);
            o->wscale = malloc(oc * sizeof(float));
            if (!o->weight || !o->bias || !o->mult || !o->shift || !o->wscale) return -1;
            for (size_t c = 0; c < oc; c++) o->wscale[c] = r->weight_scale ? r->weight_scale[c] : 1.0f;
        }
    }
    return 0;
}

static size_t op_weights(const qat_i8op *o)
{
    return (size_t)o->oc * o->ic * (strcmp(o->type, QAT_I8_OP_CONV2D) ? 1 : o->k * o->k);
}

int wu_encode(qat_i8graph *g, wu_mode mode, int bits, int K, unsigned seed)
{
    for (int i = 0; i < g->n; i++) {
        qat_i8op *o = &g->ops[i];
        if (!o->weight) continue;
        size_t n = op_weights(o);
        free(o->codebook);
        o->codebook = NULL;
        o->codebook_k = 0;
        if (mode == WU_PACKED) {
            int lo = bits == 1 ? -1 : -(1 << (bits - 1)), hi = bits == 1 ? 1 : (1 << (bits - 1)) - 1;
            for (size_t z = 0; z < n; z++) {
                int w = o->weight[z];
                if (bits == 1) w = w >= 0 ? 1 : -1;
                o->weight[z] = (int8_t)(w < lo ? lo : w > hi ? hi : w);
            }
            o->wbits = bits;
            o->wenc = QAT_I8W_PACKED;
        } else if (mode == WU_CODEBOOK) {
            int seen[256] = {0}, k = 0;
            for (size_t z = 0; z < n; z++) seen[o->weight[z] + 128] = 1;
            for (int v = 0; v < 256; v++) k += seen[v];
            for (int v = 255; v >= 0 && (k < K || k < 2); v--) /* unused values, largest first */
                if (!seen[v]) seen[v] = 2, k++;
            o->codebook = malloc((size_t)k);
            if (!o->codebook) return -1;
            /* the weights' own values first (descending), then the padding */
            int j = 0;
            for (int pass = 1; pass <= 2; pass++)
                for (int v = 255; v >= 0; v--)
                    if (seen[v] == pass) o->codebook[j++] = (int8_t)(v - 128);
            o->codebook_k = k;
            o->wbits = qat_index_bits(k);
            o->wenc = QAT_I8W_CODEBOOK;
        } else {
            o->codebook = calloc((size_t)K, 1);
            char *set = calloc((size_t)K, 1);
            if (!o->codebook || !set) {
                free(set);
                return -1;
            }
            for (size_t z = 0; z < n; z++) {
                unsigned b = qat_i8_hash_bucket(seed, (unsigned)z, (unsigned)K);
                if (!set[b]) o->codebook[b] = o->weight[z], set[b] = 1;
                o->weight[z] = o->codebook[b];
            }
            free(set);
            o->codebook_k = K;
            o->hash_seed = seed;
            o->wbits = qat_index_bits(K);
            o->wenc = QAT_I8W_HASHED;
        }
    }
    return 0;
}
