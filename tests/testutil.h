/* Shared helpers for the Check suites. */
#ifndef QAT_TESTUTIL_H
#define QAT_TESTUTIL_H

#include <stddef.h>
#include "qat/core.h"

/* Directory of the small data files shipped in tests/data
 * (QAT_TEST_DATA from the meson test environment, else "tests/data"). */
const char *tu_data_dir(void);
/* Path "<data dir>/<name>" in a static buffer (valid until the next call). */
const char *tu_data_path(const char *name);
/* A fresh private temporary directory, created once per process and removed
 * (with its files) at exit. */
const char *tu_tmp_dir(void);
/* Path "<tmp dir>/<name>" in a static buffer (valid until the next call). */
const char *tu_tmp_path(const char *name);
/* Fill with U(lo, hi) from a seeded generator. */
void tu_fill_uniform(float *x, size_t n, float lo, float hi, qat_rng *r);
/* Writes n bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t n);

#endif
