/* The reference models of docs/MODELS.md. */
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

static const struct {
    const char *name;
    void (*build)(qat_model *);
} archs[] = {{"mlp", mlp}, {"lenet5", lenet5}, {"convnet", convnet}, {"resnet8", resnet8}};

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
    return qat_error_null(QAT_ERR_ARG, "unknown model '%s' (expected mlp, lenet5, convnet or resnet8)",
                          arch ? arch : "(null)");
}
