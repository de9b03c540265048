/* tests/runtime_only.c: a deployment that includes only qat/runtime.h and
 * links only libqat_runtime (runtime/meson.build): the status strings, the
 * last error and the thread default come from core/, linked into the
 * runtime library. Loads a model (argv[1]) and runs it; loads a file that
 * is not a model (written here) and prints qat_last_error() for it.
 * Exit status 0 = pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/runtime.h"

static int fails;

#define EXPECT(cond, ...)                                 \
    do {                                                  \
        if (!(cond)) {                                    \
            fprintf(stderr, "runtime_only: FAIL: " __VA_ARGS__); \
            fprintf(stderr, "\n");                        \
            fails++;                                      \
        }                                                 \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: runtime_only MODEL.int8.h5 SCRATCH_PATH\n");
        return 2;
    }
    qat_rt_model *m = NULL;
    int st = qat_rt_load_file(argv[1], &m);
    EXPECT(st == QAT_OK && m, "loading %s: %s", argv[1], qat_last_error());
    if (m) {
        int shape[3];
        qat_rt_input_shape(m, shape);
        int classes = qat_rt_num_classes(m), n = 2;
        size_t px = (size_t)shape[0] * shape[1] * shape[2];
        unsigned char *pixels = calloc(px * n, 1);
        signed char *logits = calloc((size_t)classes * n, 1);
        for (size_t i = 0; i < px; i++) pixels[px + i] = (unsigned char)(i * 7);
        EXPECT(qat_rt_prepare(m, n) == QAT_OK, "prepare: %s", qat_last_error());
        EXPECT(qat_rt_run_u8(m, pixels, n, (int8_t *)logits) == QAT_OK, "run: %s", qat_last_error());
        /* the two images differ, so must their logits (a model that ran) */
        EXPECT(memcmp(logits, logits + classes, (size_t)classes) != 0, "both images gave the same logits");
        /* a failing call through the runtime sets the shared slot */
        EXPECT(qat_rt_run_u8(m, pixels, n + 1, (int8_t *)logits) == QAT_ERR_ARG, "n > max_batch accepted");
        EXPECT(strstr(qat_last_error(), "max_batch") != NULL, "last error '%s' does not name max_batch",
               qat_last_error());
        free(pixels);
        free(logits);
        qat_rt_free(m);
    }

    /* a file that is not a model */
    FILE *f = fopen(argv[2], "wb");
    EXPECT(f != NULL, "cannot write %s", argv[2]);
    if (f) {
        fputs("this is not an HDF5 file\n", f);
        fclose(f);
    }
    m = NULL;
    st = qat_rt_load_file(argv[2], &m);
    printf("qat_rt_load_file(%s): %s: %s\n", argv[2], qat_status_str(st), qat_last_error());
    EXPECT(st == QAT_ERR_IO || st == QAT_ERR_FORMAT, "bad file gave status %d (%s)", st, qat_status_str(st));
    EXPECT(m == NULL, "bad file gave a model");
    EXPECT(strstr(qat_last_error(), argv[2]) != NULL, "last error '%s' does not name the file", qat_last_error());
    EXPECT(strcmp(qat_last_error(), qat_rt_last_error()) == 0, "qat_last_error and qat_rt_last_error differ");
    remove(argv[2]);
    qat_clear_error();
    EXPECT(qat_last_error()[0] == 0, "qat_clear_error did not clear");
    EXPECT(strcmp(qat_status_str(QAT_ERR_NOMEM), "out of memory") == 0, "status string");
    printf("runtime_only: %s\n", fails ? "FAIL" : "ok");
    return fails ? 1 : 0;
}
