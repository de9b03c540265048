/* The reference models of docs/MODELS.md. */
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "qat/model.h"

static void mlp(qat_model *m)
{
    int x = qat_model_flatten(m, "flatten", 0);
    qat_model_set_prefix(m, "classifier");
    x = qat_model_linear(m, NULL, x, 256, 1);
    x = qat_model_relu(m, NULL, x);
    x = qat_model_linear(m, NULL, x, 128, 1);
    x = qat_model_relu(m, NULL, x);
    qat_model_linear(m, NULL, x, 10, 1);
}

static void lenet5(qat_model *m)
{
    qat_model_set_prefix(m, "features");
    int x = qat_model_conv2d(m, NULL, 0, 6, 5, 1, 2, 0);
    x = qat_model_batchnorm2d(m, NULL, x);
    x = qat_model_relu(m, NULL, x);
    x = qat_model_maxpool2d(m, NULL, x, 2, 2);
    x = qat_model_conv2d(m, NULL, x, 16, 5, 1, 0, 0);
    x = qat_model_batchnorm2d(m, NULL, x);
    x = qat_model_relu(m, NULL, x);
    x = qat_model_maxpool2d(m, NULL, x, 2, 2);
    x = qat_model_flatten(m, "flatten", x);
    qat_model_set_prefix(m, "classifier");
    x = qat_model_linear(m, NULL, x, 120, 1);
    x = qat_model_relu(m, NULL, x);
    x = qat_model_linear(m, NULL, x, 84, 1);
    x = qat_model_relu(m, NULL, x);
    qat_model_linear(m, NULL, x, 10, 1);
}

static void convnet(qat_model *m)
{
    qat_model_set_prefix(m, "features");
    int x = 0;
    const int widths[4] = {32, 32, 64, 64};
    for (int i = 0; i < 4; i++) {
        x = qat_model_conv2d(m, NULL, x, widths[i], 3, 1, 1, 0);
        x = qat_model_batchnorm2d(m, NULL, x);
        x = qat_model_relu(m, NULL, x);
        if (i % 2) x = qat_model_maxpool2d(m, NULL, x, 2, 2);
    }
    x = qat_model_flatten(m, "flatten", x);
    qat_model_set_prefix(m, "classifier");
    x = qat_model_linear(m, NULL, x, 128, 1);
    x = qat_model_relu(m, NULL, x);
    qat_model_linear(m, NULL, x, 10, 1);
}

static void resnet8(qat_model *m)
{
    int x = qat_model_conv2d(m, "stem.conv", 0, 16, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, "stem.bn", x);
    x = qat_model_relu(m, "stem.relu", x);
    x = qat_model_basic_block(m, "layer1", x, 16, 1);
    x = qat_model_basic_block(m, "layer2", x, 32, 2);
    x = qat_model_basic_block(m, "layer3", x, 64, 2);
    x = qat_model_global_avgpool(m, "gap", x);
    qat_model_linear(m, "fc", x, 10, 1);
}

/* MobileNetV2-style (docs/MODELS.md): inverted residual blocks IR(cin,
 * cout, t, s); hs: hard-swish instead of ReLU6 from block 3 on and in the
 * head. Names are the PyTorch peer's module names. */
static int act(qat_model *m, const char *name, int x, int hs)
{
    return hs ? qat_model_hardswish(m, name, x) : qat_model_relu6(m, name, x);
}

static int inverted_residual(qat_model *m, int i, int in, int cin, int cout, int t, int s, int hs)
{
    char n[QAT_NAME_MAX];
#define NM(part) (snprintf(n, sizeof n, "blocks.%d.%s", i, part), n)
    int h = cin * t, x = in;
    if (t != 1) {
        x = qat_model_conv2d(m, NM("expand.conv"), x, h, 1, 1, 0, 0);
        x = qat_model_batchnorm2d(m, NM("expand.bn"), x);
        x = act(m, NM("expand.act"), x, hs);
    }
    x = qat_model_conv2d_grouped(m, NM("dw.conv"), x, h, 3, s, 1, h, 0);
    x = qat_model_batchnorm2d(m, NM("dw.bn"), x);
    x = act(m, NM("dw.act"), x, hs);
    x = qat_model_conv2d(m, NM("project.conv"), x, cout, 1, 1, 0, 0);
    x = qat_model_batchnorm2d(m, NM("project.bn"), x);
    if (s == 1 && cin == cout) x = qat_model_add(m, NM("add"), x, in);
#undef NM
    return x;
}

static void mobilenet_any(qat_model *m, int hs)
{
    static const int blocks[7][4] = {{16, 16, 1, 1}, {16, 24, 4, 2}, {24, 24, 4, 1}, {24, 32, 4, 2},
                                     {32, 32, 4, 1}, {32, 64, 4, 1}, {64, 64, 4, 1}};
    int x = qat_model_conv2d(m, "stem.conv", 0, 16, 3, 1, 1, 0);
    x = qat_model_batchnorm2d(m, "stem.bn", x);
    x = qat_model_relu6(m, "stem.act", x);
    for (int i = 0; i < 7; i++)
        x = inverted_residual(m, i, x, blocks[i][0], blocks[i][1], blocks[i][2], blocks[i][3], hs && i >= 3);
    x = qat_model_conv2d(m, "head.conv", x, 256, 1, 1, 0, 0);
    x = qat_model_batchnorm2d(m, "head.bn", x);
    x = act(m, "head.act", x, hs);
    x = qat_model_global_avgpool(m, "gap", x);
    x = qat_model_flatten(m, "flatten", x);
    qat_model_linear(m, "fc", x, 10, 1);
}

static void mobilenet(qat_model *m) { mobilenet_any(m, 0); }
static void mobilenet_hs(qat_model *m) { mobilenet_any(m, 1); }

static const struct {
    const char *name;
    void (*build)(qat_model *);
} archs[] = {{"mlp", mlp}, {"lenet5", lenet5}, {"convnet", convnet}, {"resnet8", resnet8},
              {"mobilenet", mobilenet}, {"mobilenet-hs", mobilenet_hs}};

qat_model *qat_model_build(const char *arch, uint64_t seed)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        if (!arch || strcmp(arch, archs[i].name) != 0) continue;
        qat_model *m = qat_model_create(1, 28, 28);
        if (!m) return NULL;
        archs[i].build(m);
        qat_model_set_prefix(m, NULL);
        qat_model_set_arch(m, arch);
        if (qat_model_init(m, seed) != QAT_OK) {
            qat_model_free(m);
            return NULL;
        }
        return m;
    }
    return qat_error_null(QAT_ERR_ARG, "unknown model '%s' (expected mlp, lenet5, convnet, resnet8, mobilenet or mobilenet-hs)",
                          arch ? arch : "(null)");
}
