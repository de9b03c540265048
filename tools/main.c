/* qat: train, quantize, compare and export models (see `qat help`). */
#include <stdio.h>
#include <string.h>

#include "tools/commands.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model (float recipe; --from F --quant Q for QAT)"},
    {"ptq", cmd_ptq, "post-training quantization of a float checkpoint"},
    {"export", cmd_export, "write the int8 model of a QAT/PTQ checkpoint"},
    {"run", cmd_run, "run an int8 model on IDX or .npy inputs"},
    {"compare", cmd_compare, "PTQ (every calibrator) vs QAT, int8 export, per-layer error, report"},
    {"inspect", cmd_inspect, "layers, bit widths, scales, multipliers, sizes of any qat file"},
    {"eval", cmd_eval, "accuracy of a checkpoint (float or fake-quant); --layers for per-layer error"},
};

static int help(FILE *f)
{
    fprintf(f, "usage: qat COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nEvery command takes --data DIR --threads N --seed S --json; `qat COMMAND --help` for more.\n");
    fprintf(f,
            "\nEnvironment:\n"
            "  QAT_NUM_THREADS=N  threads when --threads is not given or 0 (default: every processor),\n"
            "                     for float training and evaluation and for the int8 runtime\n"
            "  QAT_SIMD=0|1|2     caps the float engine (training, fake-quant evaluation, calibration):\n"
            "                     0 portable C + OpenBLAS, 1 AVX2 + FMA, 2 AVX-512 (default: the best the\n"
            "                     CPU has; never above it; other values are ignored). Levels agree to\n"
            "                     rounding, not bit for bit.\n"
            "                     The int8 runtime chooses its kernels from the CPU, same results on each.\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) return help(stderr);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return help(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qat: unknown command '%s'\n", argv[1]);
    return help(stderr);
}
