#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_data_dir(void)
{
    const char *d = getenv("QAT_TEST_DATA");
    return d ? d : "tests/data";
}

const char *tu_data_path(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", tu_data_dir(), name);
    return buf;
}

static char tmp_dir[256];

static void remove_tmp_dir(void)
{
    if (!tmp_dir[0]) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}

const char *tu_tmp_dir(void)
{
    if (!tmp_dir[0]) {
        snprintf(tmp_dir, sizeof tmp_dir, "/tmp/qat-test-XXXXXX");
        if (!mkdtemp(tmp_dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmp_dir);
    }
    return tmp_dir;
}

const char *tu_tmp_path(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", tu_tmp_dir(), name);
    return buf;
}

void tu_fill_uniform(float *x, size_t n, float lo, float hi, qat_rng *r)
{
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * qat_rng_uniform(r);
}

int tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}
