/* tests/wenc_make.c: writes synthetic weight encodings of an int8 model
 * for tests/test_int8_runner.sh (qat run against the numpy runner on
 * files written by qat's own writer, io/export.c):
 *   wenc_make IN.int8.h5 OUTDIR
 * writes OUTDIR/{bin1,p3,p5,p6,p7,cb,cb5,cb200,hashed,hashed256}.int8.h5
 * (1-, 3-, 5-, 6-, 7-bit packed; codebooks of the layers' own values:
 * K = 2 of binary weights, K = 5 of 2-bit weights (3-bit indices), K >= 200
 * of the 8-bit weights; hashed with K = 16 / 256) and prints their paths. */
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"
#include "wenc_util.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN.int8.h5 OUTDIR\n", argv[0]);
        return 2;
    }
    /* pre: the weights first clamped to that many bits (0: kept), so the
     * codebooks are small: cb K = 2 (1-bit indices), cb5 K = 5 (3-bit) */
    static const struct {
        const char *name;
        wu_mode mode;
        int bits, K;
        unsigned seed;
        int pre;
    } files[] = {
        {"bin1", WU_PACKED, 1, 0, 0, 0},        {"p3", WU_PACKED, 3, 0, 0, 0},
        {"p5", WU_PACKED, 5, 0, 0, 0},          {"p6", WU_PACKED, 6, 0, 0, 0},
        {"p7", WU_PACKED, 7, 0, 0, 0},          {"cb", WU_CODEBOOK, 0, 2, 0, 1},
        {"cb5", WU_CODEBOOK, 0, 5, 0, 2},       {"cb200", WU_CODEBOOK, 0, 200, 0, 0},
        {"hashed", WU_HASHED, 0, 16, 12345u, 0}, {"hashed256", WU_HASHED, 0, 256, 4000000000u, 0},
    };
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        qat_rt_model *m = NULL;
        if (qat_rt_load_file(argv[1], &m)) {
            fprintf(stderr, "wenc_make: %s\n", qat_rt_last_error());
            return 1;
        }
        qat_i8graph g;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.int8.h5", argv[2], files[f].name);
        int rc = wu_graph_from_rt(m, &g) || (files[f].pre && wu_encode(&g, WU_PACKED, files[f].pre, 0, 0)) ||
                 wu_encode(&g, files[f].mode, files[f].bits, files[f].K, files[f].seed);
        if (rc) fprintf(stderr, "wenc_make: %s: cannot build the graph\n", files[f].name);
        else if (qat_export_int8_graph(&g, path, argv[1])) {
            fprintf(stderr, "wenc_make: %s\n", qat_last_error());
            rc = 1;
        }
        qat_i8graph_free(&g);
        qat_rt_free(m);
        if (rc) return 1;
        printf("%s\n", path);
    }
    return 0;
}
