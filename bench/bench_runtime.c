/* bench/bench_runtime.c: throughput and latency of the integer runtime.
 *
 * Writes convnet- and lenet5-shaped int8 models (docs/MODELS.md shapes,
 * random weights, fused ReLUs) with the HDF5 C API, loads them with the
 * runtime and prints one JSON object: images/s at batch 128 and batch-1
 * latency for every kernel family this CPU runs. Links only libqat_runtime
 * and HDF5.
 *
 * Usage: bench_runtime [--threads N] [--model convnet|lenet5|dw|all] [--seconds S]
 *                      [--keep DIR]   (also leave the model files in DIR)
 *                      [--file MODEL.int8.h5]  (bench this file instead)
 *                      [--isa ref|avx2|avx512_vnni]  (only that kernel family)
 * Time: median and best of 7 repeats (S seconds per ISA in all, default 2).
 *
 * Each model also reports its int8 multiply-adds per image (conv and
 * linear ops, from the op shapes and weight bytes), the rate reached at
 * batch 128 and its share of the machine's VNNI peak: `vnni_peak_gmacs` is
 * measured here, one thread running independent vpdpbusd chains on
 * registers (64 multiply-adds each) times the thread count.
 *
 * `--model dw` (also in `all`): single depthwise 3x3 convs (format version
 * 3, groups = channels, pad 1) of MobileNet shapes, timed op alone
 * (qat_rt_run_s8, int8 input already on the grid): microseconds an image at
 * batch 128 and batch 1, GB/s moved (input + output + weights and
 * per-channel parameters, once per image) and the share of the VNNI peak
 * (9 multiply-adds an output). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qat/runtime.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_VNNI_PEAK 1
#else
#define HAVE_VNNI_PEAK 0
#endif

/* ---- a tiny seeded generator (splitmix64) ---- */
static uint64_t rng_state = 12345;
static uint32_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* ---- writing ---- */

static void a_str(hid_t o, const char *n, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t a = H5Acreate2(o, n, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void a_i32s(hid_t o, const char *n, const int32_t *v, int k, int scalar)
{
    hsize_t d = (hsize_t)k;
    hid_t s = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(o, n, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    if (k) H5Awrite(a, H5T_NATIVE_INT32, v);
    H5Aclose(a);
    H5Sclose(s);
}

static void a_i32(hid_t o, const char *n, int32_t v)
{
    a_i32s(o, n, &v, 1, 1);
}

static void a_f32(hid_t o, const char *n, float v)
{
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, n, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_FLOAT, &v);
    H5Aclose(a);
    H5Sclose(s);
}

static void d_write(hid_t g, const char *n, hid_t ft, hid_t mt, int rank, const hsize_t *d,
                    const void *p)
{
    hid_t s = H5Screate_simple(rank, d, NULL);
    hid_t ds = H5Dcreate2(g, n, ft, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, p);
    H5Dclose(ds);
    H5Sclose(s);
}

typedef struct {
    hid_t ops;
    int n;
    int c, h, w, ndim; /* shape of the last op */
    int32_t zp;
} net;

static hid_t op_begin(net *t, const char *type, int n_in, int32_t in, int ndim, int c, int h,
                      int w, int32_t zp)
{
    char nm[16], name[32];
    snprintf(nm, sizeof nm, "%03d", t->n);
    snprintf(name, sizeof name, "%s%d", type, t->n);
    hid_t g = H5Gcreate2(t->ops, nm, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    a_str(g, "type", type);
    a_str(g, "name", name);
    a_i32s(g, "inputs", &in, n_in, 0);
    int32_t sh[3] = {c, h, w};
    a_i32s(g, "out_shape", sh, ndim, 0);
    a_f32(g, "out_scale", 0.05f);
    a_i32(g, "out_zero_point", zp);
    t->n++;
    t->ndim = ndim;
    t->c = c;
    t->h = h;
    t->w = w;
    t->zp = zp;
    return g;
}

/* conv2d (kh = kw = k) or linear (k = 0) with a fused ReLU */
static void gemm_op(net *t, int oc, int k, int pad)
{
    const int conv = k > 0;
    const int ic = conv ? t->c : t->c * (t->ndim == 3 ? t->h * t->w : 1);
    const int K = conv ? ic * k * k : ic;
    const int oh = conv ? t->h + 2 * pad - k + 1 : 1, ow = conv ? t->w + 2 * pad - k + 1 : 1;
    const int32_t in_zp = t->zp, zp = (int32_t)(rnd() % 64) - 100;
    hid_t g = op_begin(t, conv ? "conv2d" : "linear", 1, t->n - 1, conv ? 3 : 1, oc, oh, ow, zp);
    if (conv) {
        a_i32(g, "stride", 1);
        a_i32(g, "pad", pad);
    }
    a_i32(g, "in_zero_point", in_zp);
    a_i32(g, "act_min", zp);
    a_i32(g, "act_max", 127);
    int8_t *w = malloc((size_t)oc * K);
    int32_t *b = malloc(oc * 4), *m = malloc(oc * 4), *s = malloc(oc * 4);
    float *ws = malloc(oc * 4);
    for (size_t i = 0; i < (size_t)oc * K; i++) w[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (int o = 0; o < oc; o++) {
        b[o] = (int32_t)(rnd() % 20001) - 10000;
        int e;
        double f = frexp(40.0 / (sqrt((double)K) * 73.0 * 75.0), &e);
        m[o] = (int32_t)llround(f * 2147483648.0);
        s[o] = e;
        ws[o] = 0.01f;
    }
    hsize_t wd[4] = {(hsize_t)oc, (hsize_t)ic, (hsize_t)k, (hsize_t)k}, od = (hsize_t)oc;
    d_write(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, conv ? 4 : 2, wd, w);
    d_write(g, "bias", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, b);
    d_write(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, m);
    d_write(g, "shift", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, s);
    d_write(g, "weight_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &od, ws);
    free(w);
    free(b);
    free(m);
    free(s);
    free(ws);
    H5Gclose(g);
}

static void maxpool2(net *t)
{
    hid_t g = op_begin(t, "maxpool2d", 1, t->n - 1, 3, t->c, t->h / 2, t->w / 2, t->zp);
    a_i32(g, "kernel", 2);
    a_i32(g, "stride", 2);
    H5Gclose(g);
}

static void flatten(net *t)
{
    H5Gclose(op_begin(t, "flatten", 1, t->n - 1, 1, t->c * t->h * t->w, 1, 1, t->zp));
}

/* input (C, H, W) -> one depthwise 3x3 conv, stride s, pad 1 */
static int write_dw_model(const char *path, int C, int H, int W, int s)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    net t = {H5Gcreate2(f, "ops", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), 0, 0, 0, 0, 0, 0};
    hid_t g = op_begin(&t, "input", 0, 0, 3, C, H, W, -3);
    a_f32(g, "mean", 0.0f);
    a_f32(g, "std", 1.0f);
    a_i32(g, "act_min", -128);
    a_i32(g, "act_max", 127);
    int8_t lut[256];
    for (int p = 0; p < 256; p++) lut[p] = (int8_t)(p - 128);
    hsize_t d = 256;
    d_write(g, "lut", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d, lut);
    H5Gclose(g);
    const int OH = (H + 2 - 3) / s + 1, OW = (W + 2 - 3) / s + 1;
    const int32_t zp = -20;
    g = op_begin(&t, "conv2d", 1, 0, 3, C, OH, OW, zp);
    a_i32(g, "stride", s);
    a_i32(g, "pad", 1);
    a_i32(g, "groups", C);
    a_i32(g, "in_zero_point", -3);
    a_i32(g, "act_min", zp);
    a_i32(g, "act_max", 100);
    int8_t *w = malloc((size_t)C * 9);
    int32_t *b = malloc(C * 4), *m = malloc(C * 4), *sh = malloc(C * 4);
    for (int i = 0; i < C * 9; i++) w[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (int o = 0; o < C; o++) {
        b[o] = (int32_t)(rnd() % 2001) - 1000;
        int e;
        double fr = frexp(40.0 / (3.0 * 73.0 * 75.0), &e);
        m[o] = (int32_t)llround(fr * 2147483648.0);
        sh[o] = e;
    }
    hsize_t wd[4] = {(hsize_t)C, 1, 3, 3}, od = (hsize_t)C;
    d_write(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, 4, wd, w);
    d_write(g, "bias", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, b);
    d_write(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, m);
    d_write(g, "shift", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &od, sh);
    free(w);
    free(b);
    free(m);
    free(sh);
    H5Gclose(g);
    H5Gclose(t.ops);
    a_str(f, "qat_format", "int8-model");
    a_i32(f, "format_version", 3);
    a_str(f, "arch", "depthwise");
    a_i32(f, "num_ops", t.n);
    a_str(f, "source", "bench_runtime.c");
    return H5Fclose(f) < 0 ? -1 : 0;
}

static int write_model(const char *path, const char *arch)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    net t = {H5Gcreate2(f, "ops", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), 0, 0, 0, 0, 0, 0};
    hid_t g = op_begin(&t, "input", 0, 0, 3, 1, 28, 28, -128);
    a_f32(g, "mean", 0.2860f);
    a_f32(g, "std", 0.3530f);
    a_i32(g, "act_min", -128);
    a_i32(g, "act_max", 127);
    int8_t lut[256];
    for (int p = 0; p < 256; p++) lut[p] = (int8_t)(p - 128);
    hsize_t d = 256;
    d_write(g, "lut", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d, lut);
    H5Gclose(g);
    if (!strcmp(arch, "convnet")) {
        gemm_op(&t, 32, 3, 1);
        gemm_op(&t, 32, 3, 1);
        maxpool2(&t);
        gemm_op(&t, 64, 3, 1);
        gemm_op(&t, 64, 3, 1);
        maxpool2(&t);
        flatten(&t);
        gemm_op(&t, 128, 0, 0);
        gemm_op(&t, 10, 0, 0);
    } else {
        gemm_op(&t, 6, 5, 2);
        maxpool2(&t);
        gemm_op(&t, 16, 5, 0);
        maxpool2(&t);
        flatten(&t);
        gemm_op(&t, 120, 0, 0);
        gemm_op(&t, 84, 0, 0);
        gemm_op(&t, 10, 0, 0);
    }
    H5Gclose(t.ops);
    a_str(f, "qat_format", "int8-model");
    a_i32(f, "format_version", 1);
    a_str(f, "arch", arch);
    a_i32(f, "num_ops", t.n);
    a_str(f, "source", "bench_runtime.c");
    return H5Fclose(f) < 0 ? -1 : 0;
}

/* ---- timing ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* int8 logits, or float32 logits for models with float ops (dynamic
 * quantization: qat_rt_run_u8_float) */
static void run_any(qat_rt_model *m, const uint8_t *px, int n, int8_t *y)
{
    static float fy[128 * 1024];
    if (qat_rt_output_dtype(m) == QAT_RT_DTYPE_FLOAT32 && (size_t)n * qat_rt_num_classes(m) <= 128 * 1024)
        qat_rt_run_u8_float(m, px, n, fy);
    else
        qat_rt_run_u8(m, px, n, y);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* median (and in *best the minimum) seconds per call of run(n) over 7
 * repeats of ~budget/7 seconds: on a shared machine the minimum is the
 * better estimate of the uncontended speed. *cpu: the median process CPU
 * seconds per call (all threads; with one thread it does not count the
 * time the thread waits for a core, with more it counts OpenMP's
 * spinning) */
static double time_runs(qat_rt_model *m, const uint8_t *px, int n, int8_t *y, double budget,
                        double *best, double *cpu)
{
    enum { REPS = 7 };
    double t[REPS], c[REPS];
    int iters = 1;
    double t0 = now();
    run_any(m, px, n, y);
    double one = now() - t0;
    if (one > 0) iters = (int)(budget / REPS / one) + 1;
    for (int r = 0; r < REPS; r++) {
        const double c0 = cpu_now();
        t0 = now();
        for (int i = 0; i < iters; i++) run_any(m, px, n, y);
        t[r] = (now() - t0) / iters;
        c[r] = (cpu_now() - c0) / iters;
    }
    qsort(t, REPS, sizeof t[0], cmp_d);
    qsort(c, REPS, sizeof c[0], cmp_d);
    *best = t[0];
    *cpu = c[REPS / 2];
    return t[REPS / 2];
}

/* int8 multiply-adds of one image: for conv2d/linear, outputs x weights per
 * output channel. */
static double macs_per_image(const qat_rt_model *m)
{
    double macs = 0;
    for (int i = 0; i < qat_rt_num_ops(m); i++) {
        qat_rt_op_info o;
        qat_rt_op(m, i, &o);
        if (strcmp(o.type, "conv2d") && strcmp(o.type, "linear")) continue;
        double outs = 1;
        for (int d = 0; d < o.out_ndim; d++) outs *= o.out_shape[d];
        int oc = o.out_shape[0];
        macs += outs * ((double)o.weight_count / oc); /* weights per output channel (IC/groups * KH * KW) */
    }
    return macs;
}

#if HAVE_VNNI_PEAK
__attribute__((target("avx512f,avx512vnni"))) static double vnni_peak_one_thread(void)
{
    /* 12 independent accumulators hide vpdpbusd's latency */
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0,
            c9 = c0, c10 = c0, c11 = c0;
    const long iters = 20000000;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        for (long i = 0; i < iters; i++) {
            c0 = _mm512_dpbusd_epi32(c0, a, b);
            c1 = _mm512_dpbusd_epi32(c1, a, b);
            c2 = _mm512_dpbusd_epi32(c2, a, b);
            c3 = _mm512_dpbusd_epi32(c3, a, b);
            c4 = _mm512_dpbusd_epi32(c4, a, b);
            c5 = _mm512_dpbusd_epi32(c5, a, b);
            c6 = _mm512_dpbusd_epi32(c6, a, b);
            c7 = _mm512_dpbusd_epi32(c7, a, b);
            c8 = _mm512_dpbusd_epi32(c8, a, b);
            c9 = _mm512_dpbusd_epi32(c9, a, b);
            c10 = _mm512_dpbusd_epi32(c10, a, b);
            c11 = _mm512_dpbusd_epi32(c11, a, b);
            __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5));
            __asm__ volatile("" : "+v"(c6), "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11));
        }
        double g = 12.0 * 64.0 * (double)iters / (now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
    volatile int sink = _mm512_reduce_add_epi32(s);
    (void)sink;
    return best;
}
#endif

/* GMAC/s of one thread's vpdpbusd (0 without AVX-512 VNNI) */
static double vnni_peak_gmacs(void)
{
#if HAVE_VNNI_PEAK
    if (__builtin_cpu_supports("avx512vnni")) return vnni_peak_one_thread();
#endif
    return 0;
}

static const char *only_isa; /* --isa NAME: only that kernel family */

static void bench_model(qat_rt_model *m, const char *name, int threads, double seconds, const uint8_t *px, int B,
                        int8_t *y, double peak1, int first_model)
{
    int nt = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    double macs = macs_per_image(m), peak = peak1 * nt;
    qat_rt_set_threads(m, threads);
    printf("%s{\"model\": \"%s\", \"payload_bytes\": %zu, \"threads\": %d, \"macs_per_image\": %.0f, "
           "\"vnni_peak_gmacs\": %.1f, \"isas\": [",
           first_model ? "" : ", ", name, qat_rt_payload_bytes(m), nt, macs, peak);
    int first = 1;
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (only_isa && strcmp(only_isa, qat_rt_isa_name((qat_rt_isa)isa))) continue;
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) || qat_rt_prepare(m, B)) continue;
        double bb, b1, cb, c1;
        double tb = time_runs(m, px, B, y, seconds * 0.7, &bb, &cb);
        double t1 = time_runs(m, px, 1, y, seconds * 0.3, &b1, &c1);
        double g = macs * B / tb / 1e9;
        printf("%s{\"isa\": \"%s\", \"images_per_s\": %.0f, \"images_per_s_best\": %.0f, "
               "\"batch1_latency_us\": %.1f, \"batch1_latency_us_best\": %.1f, \"gmacs_per_s\": %.1f, "
               "\"vnni_peak_share\": %.3f, \"images_per_cpu_s\": %.0f, \"batch1_cpu_us\": %.1f}",
               first ? "" : ", ", qat_rt_isa_name((qat_rt_isa)isa), B / tb, B / bb, t1 * 1e6, b1 * 1e6, g,
               peak > 0 ? g / peak : 0.0, B / cb, c1 * 1e6);
        fflush(stdout);
        first = 0;
    }
    printf("]}");
}

/* median (and best) seconds per call of qat_rt_run_s8(n), as time_runs */
static double time_s8(qat_rt_model *m, const int8_t *x, int n, int8_t *y, double budget, double *best)
{
    enum { REPS = 7 };
    double t[REPS];
    double t0 = now();
    qat_rt_run_s8(m, x, n, y);
    double one = now() - t0;
    int iters = one > 0 ? (int)(budget / REPS / one) + 1 : 1;
    for (int r = 0; r < REPS; r++) {
        t0 = now();
        for (int i = 0; i < iters; i++) qat_rt_run_s8(m, x, n, y);
        t[r] = (now() - t0) / iters;
    }
    qsort(t, REPS, sizeof t[0], cmp_d);
    *best = t[0];
    return t[REPS / 2];
}

/* CPU seconds of this thread per qat_rt_run_s8(1) (a batch of 1 runs on
 * the calling thread): the minimum over 7 repeats; unlike wall time it
 * does not count the time the thread waits for a core on a busy machine */
static double cpu_s8(qat_rt_model *m, const int8_t *x, int8_t *y, double budget)
{
    struct timespec a, b;
    double best = 1e30;
    double t0 = now();
    qat_rt_run_s8(m, x, 1, y);
    double one = now() - t0;
    int iters = one > 0 ? (int)(budget / 7 / one) + 1 : 1;
    for (int r = 0; r < 7; r++) {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        for (int i = 0; i < iters; i++) qat_rt_run_s8(m, x, 1, y);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double t = ((double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec)) / iters;
        best = t < best ? t : best;
    }
    return best;
}

/* one depthwise conv row: every ISA, batch B and 1 */
static int bench_dw(int C, int H, int W, int s, int threads, double seconds, int B, double peak1, int first)
{
    char path[] = "/tmp/qat-bench-dw-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write_dw_model(path, C, H, W, s)) {
        fprintf(stderr, "cannot write a model file\n");
        return -1;
    }
    close(fd);
    qat_rt_model *m = NULL;
    int st = qat_rt_load_file(path, &m);
    remove(path);
    if (st) {
        fprintf(stderr, "%s\n", qat_rt_last_error());
        return -1;
    }
    const int OH = (H - 1) / s + 1, OW = (W - 1) / s + 1;
    const size_t in = (size_t)C * H * W, out = (size_t)C * OH * OW;
    const double macs = 9.0 * (double)out, bytes = (double)in + (double)out + 9.0 * C + 12.0 * C;
    int8_t *x = malloc((size_t)B * in), *y = malloc((size_t)B * out);
    for (size_t i = 0; i < (size_t)B * in; i++) x[i] = (int8_t)rnd();
    int nt = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    qat_rt_set_threads(m, threads);
    printf("%s{\"depthwise\": \"%dx%dx%d s%d\", \"channels\": %d, \"in_hw\": [%d, %d], \"out_hw\": [%d, %d], "
           "\"stride\": %d, \"threads\": %d, \"macs_per_image\": %.0f, \"bytes_per_image\": %.0f, "
           "\"vnni_peak_gmacs\": %.1f, \"isas\": [",
           first ? "" : ", ", C, H, W, s, C, H, W, OH, OW, s, nt, macs, bytes, peak1 * nt);
    int f1 = 1;
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (only_isa && strcmp(only_isa, qat_rt_isa_name((qat_rt_isa)isa))) continue;
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) || qat_rt_prepare(m, B)) continue;
        double bb, b1;
        const double tb = time_s8(m, x, B, y, seconds * 0.7, &bb) / B;
        const double t1 = time_s8(m, x, 1, y, seconds * 0.2, &b1);
        const double c1 = cpu_s8(m, x, y, seconds * 0.1);
        bb /= B;
        printf("%s{\"isa\": \"%s\", \"us_per_image_b%d\": %.2f, \"us_per_image_b%d_best\": %.2f, "
               "\"batch1_us\": %.2f, \"batch1_us_best\": %.2f, \"batch1_cpu_us\": %.2f, \"gb_per_s\": %.2f, "
               "\"gmacs_per_s\": %.2f, \"vnni_peak_share\": %.4f, \"vnni_peak_share_best\": %.4f, "
               "\"batch1_cpu_gb_per_s\": %.2f, \"batch1_cpu_peak_share_1thread\": %.4f}",
               f1 ? "" : ", ", qat_rt_isa_name((qat_rt_isa)isa), B, tb * 1e6, B, bb * 1e6, t1 * 1e6, b1 * 1e6,
               c1 * 1e6, bytes / tb / 1e9, macs / tb / 1e9, peak1 > 0 ? macs / tb / 1e9 / (peak1 * nt) : 0.0,
               peak1 > 0 ? macs / bb / 1e9 / (peak1 * nt) : 0.0, bytes / c1 / 1e9,
               peak1 > 0 ? macs / c1 / 1e9 / peak1 : 0.0);
        fflush(stdout);
        f1 = 0;
    }
    printf("]}");
    free(x);
    free(y);
    qat_rt_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 0;
    double seconds = 2.0;
    const char *which = "all", *keep = NULL, *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else if (!strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) only_isa = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--threads N] [--model convnet|lenet5|dw|all] [--seconds S] [--keep DIR] "
                            "[--file MODEL.int8.h5] [--isa NAME]\n",
                    argv[0]);
            return 2;
        }
    }
    const char *archs[2] = {"convnet", "lenet5"};
    enum { B = 128 };
    uint8_t *px = malloc((size_t)B * 784);
    for (int i = 0; i < B * 784; i++) px[i] = (uint8_t)rnd();
    int8_t y[B * 10];
    double peak1 = vnni_peak_gmacs();
    printf("{\"bench\": \"runtime\", \"batch\": %d, \"vnni_peak_gmacs_per_thread\": %.1f, \"models\": [", B,
           peak1);
    int first_model = 1;
    if (file) {
        qat_rt_model *m = NULL;
        if (qat_rt_load_file(file, &m)) {
            fprintf(stderr, "%s\n", qat_rt_last_error());
            return 1;
        }
        int sh[3];
        qat_rt_input_shape(m, sh);
        if ((size_t)sh[0] * sh[1] * sh[2] > 784) {
            fprintf(stderr, "%s: inputs larger than 784 pixels are not benchmarked\n", file);
            return 1;
        }
        bench_model(m, file, threads, seconds, px, B, y, peak1, 1);
        qat_rt_free(m);
        printf("]}\n");
        free(px);
        return 0;
    }
    for (int a = 0; a < 2; a++) {
        if (strcmp(which, "all") && strcmp(which, archs[a])) continue;
        char path[] = "/tmp/qat-bench-runtime-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0 || write_model(path, archs[a])) {
            fprintf(stderr, "cannot write a model file\n");
            return 1;
        }
        close(fd);
        qat_rt_model *m = NULL;
        if (qat_rt_load_file(path, &m)) {
            fprintf(stderr, "%s\n", qat_rt_last_error());
            return 1;
        }
        if (keep) {
            char dst[4096];
            snprintf(dst, sizeof dst, "%s/%s.int8.h5", keep, archs[a]);
            if (rename(path, dst)) write_model(dst, archs[a]);
        }
        remove(path);
        bench_model(m, archs[a], threads, seconds, px, B, y, peak1, first_model);
        first_model = 0;
        qat_rt_free(m);
    }
    printf("]");
    if (!strcmp(which, "all") || !strcmp(which, "dw")) {
        /* MobileNet depthwise layers: the reference model's (docs/MODELS.md,
         * 28x28 input) and the brief's 144-channel stride-2 row */
        static const int dws[][4] = {{96, 14, 14, 1}, {144, 14, 14, 2}, {64, 28, 28, 2}, {96, 14, 14, 2},
                                     {128, 7, 7, 1}, {256, 7, 7, 1}};
        printf(", \"depthwise\": [");
        for (size_t i = 0; i < sizeof dws / sizeof dws[0]; i++)
            if (bench_dw(dws[i][0], dws[i][1], dws[i][2], dws[i][3], threads, seconds, B, peak1, i == 0)) return 1;
        printf("]");
    }
    printf("}\n");
    free(px);
    return 0;
}
