/* tests/runtime_standalone.c: a deployment's view of the runtime.
 *
 * Linked against libqat_runtime and HDF5 only (runtime/meson.build): if the
 * runtime needed anything from training this would not link. Writes a tiny
 * int8 model with the HDF5 C API (docs/FORMAT-int8.md), loads it from the
 * file and from memory, runs it and checks the logits worked out by hand
 * (the same model as test_runtime.c's hand test). Exit status 0 = pass. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qat/runtime.h"

static void attr_str(hid_t o, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(o, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void attr_i32(hid_t o, const char *name, const int32_t *v, int n)
{
    hsize_t d = (hsize_t)n;
    hid_t s = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(o, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    if (n) H5Awrite(a, H5T_NATIVE_INT32, v);
    H5Aclose(a);
    H5Sclose(s);
}

static void attr_int(hid_t o, const char *name, int32_t v)
{
    attr_i32(o, name, &v, 1);
}

static void attr_f32(hid_t o, const char *name, float v)
{
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_FLOAT, &v);
    H5Aclose(a);
    H5Sclose(s);
}

static void dset(hid_t g, const char *name, hid_t ftype, hid_t mtype, int rank,
                 const hsize_t *dims, const void *data)
{
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(g, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(s);
}

static hid_t op_group(hid_t ops, int i, const char *type, const char *name, const int32_t *in,
                      int n_in, const int32_t *shape, int ndim, float scale, int32_t zp)
{
    char nm[16];
    snprintf(nm, sizeof nm, "%03d", i);
    hid_t g = H5Gcreate2(ops, nm, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    attr_str(g, "type", type);
    attr_str(g, "name", name);
    hsize_t d = (hsize_t)n_in;
    hid_t s = H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(g, "inputs", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    if (n_in) H5Awrite(a, H5T_NATIVE_INT32, in);
    H5Aclose(a);
    H5Sclose(s);
    attr_i32(g, "out_shape", shape, ndim);
    attr_f32(g, "out_scale", scale);
    attr_int(g, "out_zero_point", zp);
    return g;
}

/* input (2,2,2) zp 3 -> conv 1x1 (2->2, fused ReLU) -> global_avgpool -> linear 2->3 */
static int write_model(const char *path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    attr_str(f, "qat_format", "int8-model");
    attr_int(f, "format_version", 1);
    attr_str(f, "arch", "custom");
    attr_int(f, "num_ops", 4);
    attr_str(f, "source", "runtime_standalone.c");
    hid_t ops = H5Gcreate2(f, "ops", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);

    const int32_t s222[3] = {2, 2, 2}, s2[1] = {2}, s3[1] = {3}, in0[1] = {0}, in1[1] = {1},
                  in2[1] = {2};
    hid_t g = op_group(ops, 0, "input", "input", NULL, 0, s222, 3, 0.1f, 3);
    attr_f32(g, "mean", 0.0f);
    attr_f32(g, "std", 1.0f);
    attr_int(g, "act_min", -128);
    attr_int(g, "act_max", 127);
    int8_t lut[256];
    for (int p = 0; p < 256; p++) lut[p] = (int8_t)(p / 2 - 128);
    hsize_t d256 = 256;
    dset(g, "lut", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d256, lut);
    H5Gclose(g);

    g = op_group(ops, 1, "conv2d", "conv", in0, 1, s222, 3, 0.2f, -5);
    attr_int(g, "stride", 1);
    attr_int(g, "pad", 0);
    attr_int(g, "in_zero_point", 3);
    attr_int(g, "act_min", -5);
    attr_int(g, "act_max", 127);
    const int8_t cw[4] = {1, 2, -3, 4};
    const int32_t cb[2] = {11, 60}, cm[2] = {1 << 30, 1 << 30}, cs[2] = {0, -1};
    const float cws[2] = {1.0f, 1.0f};
    hsize_t dw[4] = {2, 2, 1, 1}, d2 = 2;
    dset(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, 4, dw, cw);
    dset(g, "bias", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d2, cb);
    dset(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d2, cm);
    dset(g, "shift", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d2, cs);
    dset(g, "weight_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &d2, cws);
    H5Gclose(g);

    g = op_group(ops, 2, "global_avgpool", "gap", in1, 1, s2, 1, 0.3f, 2);
    attr_int(g, "in_zero_point", -5);
    attr_int(g, "multiplier", 1 << 30);
    attr_int(g, "shift", -1);
    attr_int(g, "act_min", -128);
    attr_int(g, "act_max", 127);
    H5Gclose(g);

    g = op_group(ops, 3, "linear", "fc", in2, 1, s3, 1, 0.4f, -10);
    attr_int(g, "in_zero_point", 2);
    attr_int(g, "act_min", -128);
    attr_int(g, "act_max", 127);
    const int8_t lw[6] = {1, -1, 2, 3, -4, 0};
    const int32_t lb[3] = {5, -100, 7}, lm[3] = {1 << 30, 1518500250, 0}, ls[3] = {2, 0, 0};
    const float lws[3] = {1.0f, 1.0f, 1.0f};
    hsize_t dl[2] = {3, 2}, d3 = 3;
    dset(g, "weight", H5T_STD_I8LE, H5T_NATIVE_INT8, 2, dl, lw);
    dset(g, "bias", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d3, lb);
    dset(g, "multiplier", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d3, lm);
    dset(g, "shift", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d3, ls);
    dset(g, "weight_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &d3, lws);
    H5Gclose(g);
    H5Gclose(ops);
    return H5Fclose(f) < 0 ? -1 : 0;
}

static int check(qat_rt_model *m, const char *how)
{
    /* x - 3 = channel 0 [10, 0, -10, 20], channel 1 [0, 5, -5, 0];
     * expected logits [-4, -41, -10] (derivation in tests/test_runtime.c) */
    const int8_t x[8] = {13, 3, -7, 23, 3, 8, -2, 3};
    const int8_t want[3] = {-4, -41, -10};
    int8_t y[3] = {0, 0, 0};
    int fails = 0;
    for (int isa = QAT_RT_ISA_REF; isa < QAT_RT_ISA_COUNT; isa++) {
        if (qat_rt_set_isa(m, (qat_rt_isa)isa) != QAT_OK) continue; /* CPU lacks it */
        if (qat_rt_prepare(m, 4) || qat_rt_run_s8(m, x, 1, y)) {
            fprintf(stderr, "%s: %s\n", how, qat_rt_last_error());
            return 1;
        }
        if (memcmp(y, want, 3)) {
            fprintf(stderr, "%s/%s: logits %d %d %d, expected -4 -41 -10\n", how,
                    qat_rt_isa_name((qat_rt_isa)isa), y[0], y[1], y[2]);
            fails++;
        }
    }
    return fails;
}

int main(void)
{
    char path[] = "/tmp/qat-rt-standalone-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    close(fd);
    if (write_model(path)) {
        fprintf(stderr, "cannot write %s\n", path);
        remove(path);
        return 1;
    }
    int fails = 0;
    qat_rt_model *m = NULL;
    if (qat_rt_load_file(path, &m)) {
        fprintf(stderr, "load: %s\n", qat_rt_last_error());
        fails++;
    } else {
        fails += check(m, "file");
        qat_rt_free(m);
    }
    FILE *fp = fopen(path, "rb");
    static unsigned char buf[1 << 16];
    size_t n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    if (qat_rt_load_memory(buf, n, &m)) {
        fprintf(stderr, "load_memory: %s\n", qat_rt_last_error());
        fails++;
    } else {
        fails += check(m, "memory");
        qat_rt_free(m);
    }
    remove(path);
    printf("runtime_standalone: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
