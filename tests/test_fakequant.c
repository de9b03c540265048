/* quant/fakequant.c: fake-quant forward/mask/backward, per channel, LSQ
 * gradients, the bias grid. Goldens from PyTorch's own kernels
 * (tests/gen_fakequant_golden.py), hand values, finite differences and the
 * scalar reference kernels. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qat/qparams.h"
#include "qat/quant.h"
#include "autograd/kernels.h"
#include "quant/fakequant.h"
#include "runtime/rounding.h"
#include "testutil.h"

/* ---- goldens: /usr/bin/python3 tests/gen_fakequant_golden.py ---- */
/* per-tensor fake-quant: (scale, zp, qmin, qmax), inputs, outputs, masks */
#define FQ_NCONFIG 5
#define FQ_N 68
static const struct { float scale; int32_t zp, qmin, qmax; } fq_cfg[FQ_NCONFIG] = {
    {0.25f, 0, -128, 127},
    {0.25f, 3, -128, 127},
    {0.1f, -7, -128, 127},
    {0.0625f, 5, 0, 15},
    {0.5f, 0, -7, 7},
};
static const float fq_x[340] = {
    -34.875f, -33.125f, -31.375f, -29.625f, -27.875f, -26.125f,
    -24.375f, -22.625f, -20.875f, -19.125f, -17.375f, -15.625f,
    -13.875f, -12.125f, -10.375f, -8.625f, -6.875f, -5.125f,
    -3.375f, -1.625f, 0.125f, 1.875f, 3.625f, 5.375f,
    7.125f, 8.875f, 10.625f, 12.375f, 14.125f, 15.875f,
    17.625f, 19.375f, 21.125f, 22.875f, 24.625f, 26.375f,
    28.125f, 29.875f, 31.625f, 33.375f, -21.813118f, -14.659333f,
    23.789236f, 14.100373f, -8.711236f, -13.374886f, 7.8647003f, -25.061266f,
    13.820483f, 35.34423f, -20.140343f, 35.910492f, 13.378996f, -32.328167f,
    -4.652827f, 30.918394f, 15.79628f, -13.882171f, 18.714252f, -22.389204f,
    -33.472435f, -27.208351f, -12.7919855f, -2.7845478f, 0.0f, -0.0f,
    1000000.0f, -1000000.0f, -34.875f, -33.125f, -31.375f, -29.625f,
    -27.875f, -26.125f, -24.375f, -22.625f, -20.875f, -19.125f,
    -17.375f, -15.625f, -13.875f, -12.125f, -10.375f, -8.625f,
    -6.875f, -5.125f, -3.375f, -1.625f, 0.125f, 1.875f,
    3.625f, 5.375f, 7.125f, 8.875f, 10.625f, 12.375f,
    14.125f, 15.875f, 17.625f, 19.375f, 21.125f, 22.875f,
    24.625f, 26.375f, 28.125f, 29.875f, 31.625f, 33.375f,
    -18.686317f, 25.262112f, -24.53645f, -29.642473f, -32.66682f, 7.8854413f,
    28.379353f, 8.1297f, 34.55907f, 17.98251f, 28.844105f, 34.347023f,
    3.6948807f, 35.013836f, -0.4009648f, -18.098145f, -3.8577034f, 13.203114f,
    -13.528726f, 32.27632f, -19.434067f, -12.813733f, -19.291729f, -11.564281f,
    0.0f, -0.0f, 1000000.0f, -1000000.0f, -13.95f, -13.25f,
    -12.55f, -11.85f, -11.15f, -10.45f, -9.75f, -9.05f,
    -8.35f, -7.65f, -6.95f, -6.25f, -5.55f, -4.85f,
    -4.15f, -3.45f, -2.75f, -2.05f, -1.35f, -0.65f,
    0.05f, 0.75f, 1.45f, 2.15f, 2.85f, 3.55f,
    4.25f, 4.95f, 5.65f, 6.35f, 7.05f, 7.75f,
    8.45f, 9.15f, 9.85f, 10.55f, 11.25f, 11.95f,
    12.65f, 13.35f, -15.839286f, 4.1153455f, -6.9637537f, -13.821195f,
    3.7385273f, -10.357558f, -6.2595716f, -1.891622f, -11.193525f, -9.026277f,
    -0.82134026f, -0.7561967f, -7.832565f, -6.4779115f, -7.0698524f, -7.6614656f,
    -0.551629f, -9.216671f, -0.13982092f, -8.1196375f, 10.831445f, -10.235821f,
    11.589002f, -10.294417f, 0.0f, -0.0f, 1000000.0f, -1000000.0f,
    -8.71875f, -8.28125f, -7.84375f, -7.40625f, -6.96875f, -6.53125f,
    -6.09375f, -5.65625f, -5.21875f, -4.78125f, -4.34375f, -3.90625f,
    -3.46875f, -3.03125f, -2.59375f, -2.15625f, -1.71875f, -1.28125f,
    -0.84375f, -0.40625f, 0.03125f, 0.46875f, 0.90625f, 1.34375f,
    1.78125f, 2.21875f, 2.65625f, 3.09375f, 3.53125f, 3.96875f,
    4.40625f, 4.84375f, 5.28125f, 5.71875f, 6.15625f, 6.59375f,
    7.03125f, 7.46875f, 7.90625f, 8.34375f, 5.010627f, 2.222408f,
    -5.8168993f, 5.1974483f, -5.0147886f, -8.288566f, 2.3611345f, 0.7393666f,
    2.690534f, -6.512518f, -5.0367103f, 3.6964598f, -8.382567f, 7.501472f,
    -1.4261124f, 2.367884f, -3.73789f, -6.420743f, -9.8057575f, -5.799141f,
    7.4000134f, 9.456596f, -1.1641531f, -2.4250102f, 0.0f, -0.0f,
    1000000.0f, -1000000.0f, -69.75f, -66.25f, -62.75f, -59.25f,
    -55.75f, -52.25f, -48.75f, -45.25f, -41.75f, -38.25f,
    -34.75f, -31.25f, -27.75f, -24.25f, -20.75f, -17.25f,
    -13.75f, -10.25f, -6.75f, -3.25f, 0.25f, 3.75f,
    7.25f, 10.75f, 14.25f, 17.75f, 21.25f, 24.75f,
    28.25f, 31.75f, 35.25f, 38.75f, 42.25f, 45.75f,
    49.25f, 52.75f, 56.25f, 59.75f, 63.25f, 66.75f,
    -35.84847f, 74.57666f, -70.687584f, -14.602576f, -53.019386f, -41.57695f,
    44.801258f, -47.397186f, 8.328153f, -21.280937f, 1.1650754f, -26.649952f,
    -34.764534f, -34.90715f, -66.339f, -2.909815f, 61.33486f, 71.55644f,
    -75.61861f, 66.84036f, -60.556076f, 39.655643f, 63.443317f, -53.131233f,
    0.0f, -0.0f, 1000000.0f, -1000000.0f,
};

static const float fq_y[340] = {
    -32.0f, -32.0f, -31.5f, -29.5f, -28.0f, -26.0f,
    -24.5f, -22.5f, -21.0f, -19.0f, -17.5f, -15.5f,
    -14.0f, -12.0f, -10.5f, -8.5f, -7.0f, -5.0f,
    -3.5f, -1.5f, 0.0f, 2.0f, 3.5f, 5.5f,
    7.0f, 9.0f, 10.5f, 12.5f, 14.0f, 16.0f,
    17.5f, 19.5f, 21.0f, 23.0f, 24.5f, 26.5f,
    28.0f, 30.0f, 31.5f, 31.75f, -21.75f, -14.75f,
    23.75f, 14.0f, -8.75f, -13.25f, 7.75f, -25.0f,
    13.75f, 31.75f, -20.25f, 31.75f, 13.5f, -32.0f,
    -4.75f, 31.0f, 15.75f, -14.0f, 18.75f, -22.5f,
    -32.0f, -27.25f, -12.75f, -2.75f, 0.0f, 0.0f,
    31.75f, -32.0f, -32.75f, -32.75f, -31.5f, -29.5f,
    -28.0f, -26.0f, -24.5f, -22.5f, -21.0f, -19.0f,
    -17.5f, -15.5f, -14.0f, -12.0f, -10.5f, -8.5f,
    -7.0f, -5.0f, -3.5f, -1.5f, 0.0f, 2.0f,
    3.5f, 5.5f, 7.0f, 9.0f, 10.5f, 12.5f,
    14.0f, 16.0f, 17.5f, 19.5f, 21.0f, 23.0f,
    24.5f, 26.5f, 28.0f, 30.0f, 31.0f, 31.0f,
    -18.75f, 25.25f, -24.5f, -29.75f, -32.75f, 8.0f,
    28.5f, 8.25f, 31.0f, 18.0f, 28.75f, 31.0f,
    3.75f, 31.0f, -0.5f, -18.0f, -3.75f, 13.25f,
    -13.5f, 31.0f, -19.5f, -12.75f, -19.25f, -11.5f,
    0.0f, 0.0f, 31.0f, -32.75f, -12.1f, -12.1f,
    -12.1f, -11.8f, -11.2f, -10.400001f, -9.8f, -9.0f,
    -8.400001f, -7.6f, -7.0f, -6.2000003f, -5.6f, -4.8f,
    -4.2000003f, -3.4f, -2.8f, -2.0f, -1.4f, -0.6f,
    0.0f, 0.8f, 1.4f, 2.2f, 2.8f, 3.6000001f,
    4.2000003f, 5.0f, 5.6f, 6.4f, 7.0f, 7.8f,
    8.400001f, 9.2f, 9.8f, 10.6f, 11.2f, 12.0f,
    12.6f, 13.400001f, -12.1f, 4.1f, -7.0f, -12.1f,
    3.7f, -10.400001f, -6.3f, -1.9f, -11.2f, -9.0f,
    -0.8f, -0.8f, -7.8f, -6.5f, -7.1f, -7.7000003f,
    -0.6f, -9.2f, -0.1f, -8.1f, 10.8f, -10.2f,
    11.6f, -10.3f, 0.0f, 0.0f, 13.400001f, -12.1f,
    -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f,
    -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f,
    -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f, -0.3125f,
    -0.3125f, -0.3125f, 0.0f, 0.5f, 0.625f, 0.625f,
    0.625f, 0.625f, 0.625f, 0.625f, 0.625f, 0.625f,
    0.625f, 0.625f, 0.625f, 0.625f, 0.625f, 0.625f,
    0.625f, 0.625f, 0.625f, 0.625f, 0.625f, 0.625f,
    -0.3125f, 0.625f, -0.3125f, -0.3125f, 0.625f, 0.625f,
    0.625f, -0.3125f, -0.3125f, 0.625f, -0.3125f, 0.625f,
    -0.3125f, 0.625f, -0.3125f, -0.3125f, -0.3125f, -0.3125f,
    0.625f, 0.625f, -0.3125f, -0.3125f, 0.0f, 0.0f,
    0.625f, -0.3125f, -3.5f, -3.5f, -3.5f, -3.5f,
    -3.5f, -3.5f, -3.5f, -3.5f, -3.5f, -3.5f,
    -3.5f, -3.5f, -3.5f, -3.5f, -3.5f, -3.5f,
    -3.5f, -3.5f, -3.5f, -3.0f, 0.0f, 3.5f,
    3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f,
    3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f,
    3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f,
    -3.5f, 3.5f, -3.5f, -3.5f, -3.5f, -3.5f,
    3.5f, -3.5f, 3.5f, -3.5f, 1.0f, -3.5f,
    -3.5f, -3.5f, -3.5f, -3.0f, 3.5f, 3.5f,
    -3.5f, 3.5f, -3.5f, 3.5f, 3.5f, -3.5f,
    0.0f, 0.0f, 3.5f, -3.5f,
};

static const uint8_t fq_mask[340] = {
    0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1,
    0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0,
    1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0,
};

/* per-channel fake-quant, axis 1 of (2, 3, 5), [-128, 127] */
static const float fqc_x[30] = {
    -1.0112207f, -0.73106027f, -0.9189063f, 0.09753421f, -2.9460359f, -0.4639308f,
    2.2659464f, -2.475569f, -0.0954911f, -0.11263364f, 1.695429f, 2.7873576f,
    1.2425786f, -1.3575797f, 1.0206798f, -0.91479117f, 1.608767f, 1.0546285f,
    2.8651922f, 2.2002587f, -2.723352f, -1.2580577f, 2.1743467f, 0.605087f,
    -0.93445224f, -2.6663845f, 1.577236f, -2.9908872f, -2.4429388f, 2.961025f,
};

static const float fqc_scale[3] = {
    0.05f, 0.01f, 0.1f,
};

static const int32_t fqc_zp[3] = {
    0, 10, -20,
};

static const float fqc_y[30] = {
    -1.0f, -0.75f, -0.90000004f, 0.1f, -2.95f, -0.45999998f,
    1.17f, -1.38f, -0.099999994f, -0.11f, 1.7f, 2.8f,
    1.2f, -1.4f, 1.0f, -0.90000004f, 1.6f, 1.0500001f,
    2.8500001f, 2.2f, -1.38f, -1.26f, 1.17f, 0.61f,
    -0.93f, -2.7f, 1.6f, -3.0f, -2.4f, 3.0f,
};

static const uint8_t fqc_mask[30] = {
    1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1,
};

/* learnable per tensor: (scale, zp, qmin, qmax, grad_factor), x, dy -> dx, dscale, dzp */
#define LSQ_NCONFIG 3
#define LSQ_N 40
static const struct { float scale; int32_t zp, qmin, qmax; float grad_factor, dscale, dzp; } lsq_cfg[LSQ_NCONFIG] = {
    {0.1f, 0, -8, 7, 0.05976143f, 3.0940516f, -0.012975316f},
    {0.05f, 3, 0, 15, 0.04082483f, -0.19780648f, 0.010476273f},
    {0.2f, 0, -1, 1, 0.15811388f, 0.118727595f, 0.012114361f},
};
static const float lsq_x[120] = {
    0.66243136f, 0.8838501f, -0.054820195f, -0.79476327f, 0.08154557f, -0.17800349f,
    -0.808729f, -0.80189383f, -0.58043957f, 1.0634198f, 1.1683366f, 0.4887994f,
    0.5355778f, 0.5579947f, 0.041749243f, -0.77417684f, 0.9063509f, 0.91293687f,
    0.5028829f, 1.0402291f, 1.1519955f, 0.008341877f, 0.6181668f, 0.27988446f,
    -0.9242662f, -0.44162765f, -1.0374386f, 0.9284908f, -1.1470311f, 0.08948809f,
    -0.77373093f, -0.8472122f, -0.8019732f, 0.90468955f, -0.013271699f, -0.3818388f,
    1.1981035f, 0.11033975f, -0.4720053f, -0.31043592f, -0.050423536f, 0.07498218f,
    0.76247233f, -0.83758473f, 0.24134135f, 0.9743755f, -0.6660864f, -0.5091282f,
    0.82131505f, 0.36448294f, 1.1171159f, 0.34100097f, 1.078399f, 0.7844361f,
    0.41920316f, -0.7440294f, -0.6875203f, 0.8712713f, -0.39858255f, 0.44744587f,
    -0.15509827f, -0.097562976f, -1.1746199f, 0.7735739f, -0.4525213f, -0.39087972f,
    -1.0281554f, 0.299105f, 0.66866916f, 0.02649903f, -0.05349628f, 0.6530571f,
    -0.9678648f, 0.09820401f, 0.5973208f, -0.3208615f, 0.9027131f, -0.103643574f,
    -0.92184865f, 1.1445367f, 0.3362745f, 0.945966f, 0.44926506f, 0.03674849f,
    0.9616422f, -0.4056185f, -0.31812844f, -0.35656205f, -0.02517144f, -1.1166494f,
    -0.11302379f, -0.44011784f, -0.6163559f, -0.60617536f, 0.71410596f, -0.27458143f,
    1.1537852f, -0.20939556f, 0.47449768f, -0.46710557f, 0.78359014f, -0.6886322f,
    -0.539551f, -0.49795595f, -0.8895453f, 0.6014292f, -0.1643622f, -0.8977315f,
    0.08691281f, -0.028026668f, 0.0126015f, 0.5099991f, -1.0403241f, -0.019339144f,
    -1.0761492f, 1.1426207f, 0.3837582f, -0.7939553f, 1.0069523f, -0.7800265f,
};

static const float lsq_dy[120] = {
    -1.1591258f, 2.15031f, -0.15027022f, -0.16116428f, -1.0794425f, 0.87796617f,
    0.22446741f, -0.59159344f, 0.22626281f, 0.6861825f, 1.2150046f, 0.21605945f,
    -0.96482354f, -0.5566078f, -2.2983875f, -0.7320821f, 0.7364691f, 0.46571672f,
    -0.10787605f, -0.3414363f, 1.5845338f, 0.2822412f, 0.9095464f, 0.39507157f,
    -0.6693765f, 1.555369f, -1.238139f, -1.1961734f, -0.4291495f, -0.7296599f,
    -0.5574689f, -0.59995306f, 0.9868272f, 0.054194674f, 0.35190743f, -1.5879695f,
    -0.84695137f, 1.0845703f, -1.2038267f, 1.1785309f, -1.042462f, -0.034258142f,
    -0.3551683f, -0.37842837f, 0.19064869f, 0.4843963f, 1.2302678f, 0.8329706f,
    -0.56494176f, 1.414696f, 1.2482812f, -1.558948f, 0.6652326f, 0.8255952f,
    0.96631885f, 0.5471753f, -1.2971833f, -0.26763433f, -2.0702066f, -0.15789255f,
    2.0289426f, 0.6815709f, 0.8362036f, -0.51348805f, -1.0157366f, -1.0702709f,
    0.123912655f, -0.8030159f, -0.63763577f, 1.1444956f, -1.6409019f, -1.3140036f,
    -0.5103525f, -0.099860884f, -0.12950677f, -1.396705f, 0.19380935f, -0.12929273f,
    0.3544791f, -1.0828726f, 0.5967524f, 0.43315306f, 1.886988f, -0.7433909f,
    -1.247949f, -0.7446183f, -0.31685698f, 0.3733513f, 1.0219604f, 0.40560973f,
    1.5233138f, -0.82750815f, 1.9054954f, -0.8120217f, 1.1707362f, -0.93784297f,
    0.343267f, 0.05089841f, 0.51755965f, 0.7514248f, -0.21319917f, -0.066823676f,
    0.23911172f, -1.3050082f, -0.73123646f, -1.6244068f, 0.00525051f, 2.222157f,
    0.7413092f, -0.8654297f, -0.7076847f, 0.97589874f, -0.47440937f, -1.608482f,
    -1.0229156f, -1.0542564f, -1.0213987f, 0.6759508f, 0.07070287f, -1.4886395f,
};

static const float lsq_dx[120] = {
    -1.1591258f, 0.0f, -0.15027022f, -0.16116428f, -1.0794425f, 0.87796617f,
    0.22446741f, -0.59159344f, 0.22626281f, 0.0f, 0.0f, 0.21605945f,
    -0.96482354f, -0.5566078f, -2.2983875f, -0.7320821f, 0.0f, 0.0f,
    -0.10787605f, -0.0f, 0.0f, 0.2822412f, 0.9095464f, 0.39507157f,
    -0.0f, 1.555369f, -0.0f, -0.0f, -0.0f, -0.7296599f,
    -0.5574689f, -0.59995306f, 0.9868272f, 0.0f, 0.35190743f, -1.5879695f,
    -0.0f, 1.0845703f, -1.2038267f, 1.1785309f, -1.042462f, -0.034258142f,
    -0.0f, -0.0f, 0.19064869f, 0.0f, 0.0f, 0.0f,
    -0.0f, 1.414696f, 0.0f, -1.558948f, 0.0f, 0.0f,
    0.96631885f, 0.0f, -0.0f, -0.0f, -0.0f, -0.15789255f,
    2.0289426f, 0.6815709f, 0.0f, -0.0f, -0.0f, -0.0f,
    0.0f, -0.8030159f, -0.0f, 1.1444956f, -1.6409019f, -0.0f,
    -0.0f, -0.099860884f, -0.12950677f, -0.0f, 0.0f, -0.12929273f,
    0.0f, -0.0f, 0.0f, 0.0f, 0.0f, -0.7433909f,
    -0.0f, -0.0f, -0.0f, 0.0f, 1.0219604f, 0.0f,
    1.5233138f, -0.0f, 0.0f, -0.0f, 0.0f, -0.93784297f,
    0.0f, 0.05089841f, 0.0f, 0.0f, -0.0f, -0.0f,
    0.0f, -0.0f, -0.0f, -0.0f, 0.00525051f, 0.0f,
    0.7413092f, -0.8654297f, -0.7076847f, 0.0f, -0.0f, -1.608482f,
    -0.0f, -0.0f, -0.0f, 0.0f, 0.0f, -0.0f,
};

/* learnable per channel, axis 0 of (3, 2, 4), [-8, 7], grad_factor 1/sqrt(8*7) */
#define LSQC_GRAD_FACTOR 0.13363062f
static const float lsqc_x[24] = {
    0.81322324f, 0.4591042f, -0.075553484f, -0.08422066f, 0.48457915f, -0.20429584f,
    -0.13499862f, 0.13542092f, 0.11949799f, -0.07912431f, 0.2089916f, -0.7002689f,
    0.47781327f, -0.6748914f, 0.6171881f, 0.14540966f, 0.8716399f, -0.16528769f,
    0.31674048f, -0.8530799f, -0.39313942f, -0.6755772f, 0.33697626f, -0.75781053f,
};

static const float lsqc_dy[24] = {
    -2.2699478f, -0.018668165f, -1.1050189f, 0.6828997f, 0.9145185f, -0.77835214f,
    -0.4494232f, -0.9516186f, 0.39107853f, -1.6099619f, -1.1255753f, -0.68462384f,
    1.226519f, 2.4024727f, 0.01995842f, -1.2315712f, 0.07418647f, -0.8690496f,
    0.45981956f, -1.1137046f, -0.36948735f, -0.014105528f, 0.5199438f, -0.076888494f,
};

static const float lsqc_scale[3] = {
    0.1f, 0.05f, 0.2f,
};

static const int32_t lsqc_zp[3] = {
    0, -3, 2,
};

static const float lsqc_dx[24] = {
    -0.0f, -0.018668165f, -1.1050189f, 0.6828997f, 0.9145185f, -0.77835214f,
    -0.4494232f, -0.9516186f, 0.39107853f, -1.6099619f, -1.1255753f, -0.0f,
    1.226519f, 0.0f, 0.0f, -1.2315712f, 0.07418647f, -0.8690496f,
    0.45981956f, -1.1137046f, -0.36948735f, -0.014105528f, 0.5199438f, -0.076888494f,
};

static const float lsqc_dscale[3] = {
    -2.064261f, -0.9670029f, 0.027730074f,
};

static const float lsqc_dzp[3] = {
    0.030333454f, -0.011611212f, 0.0f,
};

/* ---- end of goldens ---- */

static int close_enough(double got, double want, double abs_tol, double rel_tol)
{
    return fabs(got - want) <= abs_tol + rel_tol * fabs(want);
}

START_TEST(test_fq_golden)
{
    float y[FQ_N], yr[FQ_N];
    uint8_t m[FQ_N], mr[FQ_N];
    for (int k = 0; k < FQ_NCONFIG; k++) {
        const float *x = fq_x + k * FQ_N;
        qat_fqk_forward(y, m, x, fq_cfg[k].scale, fq_cfg[k].zp, fq_cfg[k].qmin,
                        fq_cfg[k].qmax, FQ_N);
        qat_fqk_forward_ref(yr, mr, x, fq_cfg[k].scale, fq_cfg[k].zp, fq_cfg[k].qmin,
                            fq_cfg[k].qmax, FQ_N);
        for (int i = 0; i < FQ_N; i++) {
            ck_assert_msg(y[i] == fq_y[k * FQ_N + i] && m[i] == fq_mask[k * FQ_N + i],
                          "config %d x=%.9g: y %.9g mask %d, torch %.9g %d", k, (double)x[i],
                          (double)y[i], m[i], (double)fq_y[k * FQ_N + i], fq_mask[k * FQ_N + i]);
            ck_assert(yr[i] == y[i] && mr[i] == m[i]);
        }
    }
}
END_TEST

/* Hand values: scale 0.5 (inv 2), zp 1, 3-bit signed [-4, 3]. */
START_TEST(test_fq_hand)
{
    const float x[] = {-3.0f, 0.25f, 0.75f, 1.25f, 1.75f, -2.25f, -2.75f, -2.5f,
                       NAN, INFINITY, -INFINITY, 0.0f};
    /* x*2 = -6: q = 1-6 = -5 -> -4, y = (-4-1)*0.5 = -2.5, out
     *  0.5 -> 0 (even): q 1, y 0      1.5 -> 2: q 3, y 1
     *  2.5 -> 2: q 3, y 1             3.5 -> 4: q 5 -> 3, y 1, out
     * -4.5 -> -4: q -3, y -2         -5.5 -> -6: q -5 -> -4, y -2.5, out
     * -5 : q -4, y -2.5, in           NaN: qmin, out; +-inf: qmax/qmin, out */
    const float want_y[] = {-2.5f, 0.0f, 1.0f, 1.0f, 1.0f, -2.0f, -2.5f, -2.5f,
                            -2.5f, 1.0f, -2.5f, 0.0f};
    const uint8_t want_m[] = {0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1};
    const int n = (int)(sizeof x / sizeof x[0]);
    float y[12], y2[12];
    uint8_t m[12];
    qat_fqk_forward(y, m, x, 0.5f, 1, -4, 3, (size_t)n);
    qat_fqk_forward(y2, NULL, x, 0.5f, 1, -4, 3, (size_t)n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(y[i] == want_y[i] && m[i] == want_m[i], "x=%g: y %g mask %d", (double)x[i],
                      (double)y[i], m[i]);
        ck_assert(y2[i] == y[i]);
    }
    /* in place */
    float z[12];
    memcpy(z, x, sizeof z);
    qat_fqk_forward(z, NULL, z, 0.5f, 1, -4, 3, (size_t)n);
    for (int i = 0; i < n; i++) ck_assert(z[i] == want_y[i]);
}
END_TEST

START_TEST(test_zero_point_from_float)
{
    ck_assert_int_eq(qat_zero_point_from_float(2.5f, -128, 127), 2);
    ck_assert_int_eq(qat_zero_point_from_float(3.5f, -128, 127), 4);
    ck_assert_int_eq(qat_zero_point_from_float(-2.5f, -128, 127), -2);
    ck_assert_int_eq(qat_zero_point_from_float(-3.4f, -128, 127), -3);
    ck_assert_int_eq(qat_zero_point_from_float(300.0f, -128, 127), 127);
    ck_assert_int_eq(qat_zero_point_from_float(-0.4f, 0, 255), 0);
    ck_assert_int_eq(qat_zero_point_from_float(NAN, -8, 7), -8);
}
END_TEST

/* Forward (parallel path included) against the scalar reference; backward is
 * exactly dx += dy * mask. */
START_TEST(test_fq_random_and_backward)
{
    qat_rng r;
    qat_rng_seed(&r, 7);
    const size_t n = 200003; /* above the parallel threshold, odd tail */
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
    float *dy = malloc(n * sizeof *dy), *dx = malloc(n * sizeof *dx), *d0 = malloc(n * sizeof *d0);
    uint8_t *m = malloc(n), *mr = malloc(n);
    ck_assert(x && y && yr && dy && dx && d0 && m && mr);
    tu_fill_uniform(x, n, -3.0f, 3.0f, &r);
    tu_fill_uniform(dy, n, -1.0f, 1.0f, &r);
    tu_fill_uniform(d0, n, -1.0f, 1.0f, &r);
    const float scales[3] = {0.02f, 0.0123f, 0.01f};
    const int32_t zps[3] = {0, -17, 100}, lo[3] = {-127, -128, 0}, hi[3] = {127, 127, 255};
    for (int k = 0; k < 3; k++) {
        qat_fqk_forward(y, m, x, scales[k], zps[k], lo[k], hi[k], n);
        qat_fqk_forward_ref(yr, mr, x, scales[k], zps[k], lo[k], hi[k], n);
        size_t in = 0;
        for (size_t i = 0; i < n; i++) {
            ck_assert(y[i] == yr[i] && m[i] == mr[i]);
            in += m[i];
        }
        ck_assert(in > n / 10 && in < n); /* both kinds present */
        memcpy(dx, d0, n * sizeof *dx);
        qat_fqk_backward(dx, dy, m, n);
        for (size_t i = 0; i < n; i++) ck_assert(dx[i] == d0[i] + dy[i] * (float)m[i]);
    }
    free(x), free(y), free(yr), free(dy), free(dx), free(d0), free(m), free(mr);
}
END_TEST

/* fq(relu(x)) in one pass = relu, then fake-quant, with the ReLU's
 * gradient in the mask; NaN, -inf and -0 behave as in relu (0). */
START_TEST(test_fq_relu_fused)
{
    qat_rng r;
    qat_rng_seed(&r, 9);
    const size_t n = 200003;
    float *x = malloc(n * sizeof *x), *rx = malloc(n * sizeof *rx), *y = malloc(n * sizeof *y),
          *yr = malloc(n * sizeof *yr);
    uint8_t *m = malloc(n), *mr = malloc(n);
    ck_assert(x && rx && y && yr && m && mr);
    tu_fill_uniform(x, n, -3.0f, 3.0f, &r);
    x[0] = NAN, x[1] = -INFINITY, x[2] = -0.0f, x[3] = 0.0f, x[4] = 1e30f, x[5] = FLT_MIN;
    const float scales[3] = {0.02f, 0.0123f, 0.01f};
    const int32_t zps[3] = {-128, -100, 0}, lo[3] = {-128, -128, 0}, hi[3] = {127, 127, 255};
    for (int k = 0; k < 3; k++) {
        qat_fqk_relu_forward(y, m, x, scales[k], zps[k], lo[k], hi[k], n);
        for (size_t i = 0; i < n; i++) rx[i] = x[i] > 0.0f ? x[i] : 0.0f;
        qat_fqk_forward_ref(yr, mr, rx, scales[k], zps[k], lo[k], hi[k], n);
        size_t pass = 0;
        for (size_t i = 0; i < n; i++) {
            ck_assert_msg(y[i] == yr[i], "config %d, x[%zu] = %g: %g vs %g", k, i, x[i], y[i], yr[i]);
            ck_assert_int_eq(m[i], mr[i] & (x[i] > 0.0f));
            pass += m[i];
        }
        ck_assert(pass > n / 10 && pass < n * 6 / 10); /* about half of x is > 0 */
        ck_assert(m[4] == 0 && y[4] == (float)(hi[k] - zps[k]) * scales[k]); /* clipped: no gradient */
    }
    free(x), free(rx), free(y), free(yr), free(m), free(mr);
}
END_TEST

START_TEST(test_fqc_golden)
{
    float y[30];
    uint8_t m[30];
    qat_fqk_channel_forward(y, m, fqc_x, fqc_scale, fqc_zp, -128, 127, 2, 3, 5);
    for (int i = 0; i < 30; i++)
        ck_assert_msg(y[i] == fqc_y[i] && m[i] == fqc_mask[i], "%d: %.9g %d, torch %.9g %d", i,
                      (double)y[i], m[i], (double)fqc_y[i], fqc_mask[i]);
}
END_TEST

/* Random (outer, channels, inner) shapes against a per-element scalar
 * computation with each element's own channel parameters. */
START_TEST(test_fqc_random_shapes)
{
    qat_rng r;
    qat_rng_seed(&r, 11);
    for (int trial = 0; trial < 40; trial++) {
        size_t outer = 1 + qat_rng_below(&r, 5), ch = 1 + qat_rng_below(&r, 9),
               inner = 1 + qat_rng_below(&r, 40);
        if (trial == 0) outer = 4, ch = 16, inner = 2048; /* parallel path */
        size_t n = outer * ch * inner;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *yr = malloc(n * sizeof *yr);
        uint8_t *m = malloc(n), *mr = malloc(n);
        float *s = malloc(ch * sizeof *s);
        int32_t *z = malloc(ch * sizeof *z);
        ck_assert(x && y && yr && m && mr && s && z);
        tu_fill_uniform(x, n, -2.0f, 2.0f, &r);
        for (size_t c = 0; c < ch; c++) {
            s[c] = 0.001f + 0.05f * qat_rng_uniform(&r);
            z[c] = (int32_t)qat_rng_below(&r, 41) - 20;
        }
        qat_fqk_channel_forward(y, m, x, s, z, -128, 127, outer, ch, inner);
        qat_fqk_channel_forward_ref(yr, mr, x, s, z, -128, 127, outer, ch, inner);
        for (size_t o = 0; o < outer; o++)
            for (size_t c = 0; c < ch; c++)
                for (size_t i = 0; i < inner; i++) {
                    size_t j = (o * ch + c) * inner + i;
                    float inv = 1.0f / s[c];
                    int32_t q = qat_quantize_val(x[j], inv, z[c], -128, 127);
                    int32_t u = qat_quantize_val_unclamped(x[j], inv, z[c]);
                    ck_assert(y[j] == (float)(q - z[c]) * s[c]);
                    ck_assert(m[j] == (u >= -128 && u <= 127));
                    ck_assert(yr[j] == y[j] && mr[j] == m[j]);
                }
        /* mask-less call gives the same values */
        qat_fqk_channel_forward(yr, NULL, x, s, z, -128, 127, outer, ch, inner);
        for (size_t j = 0; j < n; j++) ck_assert(yr[j] == y[j]);
        free(x), free(y), free(yr), free(m), free(mr), free(s), free(z);
    }
}
END_TEST

/* ---- LSQ ---- */

START_TEST(test_lsq_golden)
{
    for (int k = 0; k < LSQ_NCONFIG; k++) {
        float dx[LSQ_N], dxr[LSQ_N];
        float ds = 0.0f, dz = 0.0f, dsr = 0.0f, dzr = 0.0f;
        memset(dx, 0, sizeof dx);
        memset(dxr, 0, sizeof dxr);
        const float *x = lsq_x + k * LSQ_N, *dy = lsq_dy + k * LSQ_N;
        qat_fqk_lsq_backward(dx, &ds, &dz, dy, x, lsq_cfg[k].scale, lsq_cfg[k].zp,
                             lsq_cfg[k].qmin, lsq_cfg[k].qmax, lsq_cfg[k].grad_factor,
                             LSQ_N);
        qat_fqk_lsq_backward_ref(dxr, &dsr, &dzr, dy, x, lsq_cfg[k].scale, lsq_cfg[k].zp,
                                 lsq_cfg[k].qmin, lsq_cfg[k].qmax,
                                 lsq_cfg[k].grad_factor, LSQ_N);
        for (int i = 0; i < LSQ_N; i++) {
            ck_assert_msg(dx[i] == lsq_dx[k * LSQ_N + i], "config %d, %d: dx %.9g torch %.9g", k,
                          i, (double)dx[i], (double)lsq_dx[k * LSQ_N + i]);
            ck_assert(dxr[i] == dx[i]);
        }
        /* PyTorch sums float32 per-element terms in float; qat in double */
        ck_assert_msg(close_enough(ds, lsq_cfg[k].dscale, 1e-6, 1e-5), "config %d: dscale %.9g torch %.9g",
                      k, (double)ds, (double)lsq_cfg[k].dscale);
        ck_assert_msg(close_enough(dz, lsq_cfg[k].dzp, 1e-6, 1e-5), "config %d: dzp %.9g torch %.9g", k,
                      (double)dz, (double)lsq_cfg[k].dzp);
        ck_assert(close_enough(dsr, ds, 1e-7, 1e-6) && close_enough(dzr, dz, 1e-7, 1e-6));
    }
}
END_TEST

START_TEST(test_lsqc_golden)
{
    float dx[24] = {0}, ds[3] = {0}, dz[3] = {0};
    qat_fqk_lsq_channel_backward(dx, ds, dz, lsqc_dy, lsqc_x, lsqc_scale, lsqc_zp, -8, 7,
                                 LSQC_GRAD_FACTOR, 1, 3, 8);
    for (int i = 0; i < 24; i++) ck_assert(dx[i] == lsqc_dx[i]);
    for (int c = 0; c < 3; c++) {
        ck_assert_msg(close_enough(ds[c], lsqc_dscale[c], 1e-6, 1e-5), "c %d: %.9g torch %.9g", c,
                      (double)ds[c], (double)lsqc_dscale[c]);
        ck_assert_msg(close_enough(dz[c], lsqc_dzp[c], 1e-6, 1e-5), "c %d: %.9g torch %.9g", c,
                      (double)dz[c], (double)lsqc_dzp[c]);
    }
    /* per channel = per tensor on each channel's slice, and it accumulates */
    for (int c = 0; c < 3; c++) {
        float dxt[8] = {0}, dst = 0.0f, dzt = 0.0f;
        qat_fqk_lsq_backward(dxt, &dst, &dzt, lsqc_dy + 8 * c, lsqc_x + 8 * c,
                             lsqc_scale[c], lsqc_zp[c], -8, 7, LSQC_GRAD_FACTOR, 8);
        for (int i = 0; i < 8; i++) ck_assert(dxt[i] == dx[8 * c + i]);
        ck_assert(dst == ds[c] && dzt == dz[c]);
    }
    qat_fqk_lsq_channel_backward(dx, ds, NULL, lsqc_dy, lsqc_x, lsqc_scale, lsqc_zp, -8,
                                 7, LSQC_GRAD_FACTOR, 1, 3, 8);
    for (int i = 0; i < 24; i++) ck_assert(dx[i] == 2.0f * lsqc_dx[i]);
    for (int c = 0; c < 3; c++)
        ck_assert(close_enough(ds[c], 2.0 * lsqc_dscale[c], 2e-6, 1e-5));
}
END_TEST

/* Hand values: s = 0.5 (inv 2), z = 0, 2-bit signed [-2, 1], g = 1.
 *  x = 0.3,  dy = 1:  v 0.6 -> 1, inside: ds = 1*(0.5 - 0.3)*2 = 0.4, dx = 1
 *  x = -1.3, dy = 2:  v -2.6 -> -3, below: ds = 2*(-2 - 0) = -4, dz = -2*0.5 = -1
 *  x = 0.9,  dy = -1: v 1.8 -> 2, above: ds = -1*(1 - 0) = -1, dz = 1*0.5 = 0.5
 * dscale = 0.4 - 4 - 1 = -4.6, dzp = -0.5; with g = 0.5 both halve. */
START_TEST(test_lsq_hand)
{
    const float x[3] = {0.3f, -1.3f, 0.9f}, dy[3] = {1.0f, 2.0f, -1.0f};
    float dx[3] = {10.0f, 10.0f, 10.0f}, ds = 1.0f, dz = 1.0f;
    qat_fqk_lsq_backward(dx, &ds, &dz, dy, x, 0.5f, 0, -2, 1, 1.0f, 3);
    ck_assert(dx[0] == 11.0f && dx[1] == 10.0f && dx[2] == 10.0f);
    ck_assert(close_enough(ds, 1.0 - 4.6, 1e-6, 0));
    ck_assert(close_enough(dz, 1.0 - 0.5, 1e-7, 0));
    ds = dz = 0.0f;
    qat_fqk_lsq_backward(NULL, &ds, NULL, dy, x, 0.5f, 0, -2, 1, 0.5f, 3);
    ck_assert(close_enough(ds, -2.3, 1e-6, 0));
    /* affine: z = 1 shifts the grid; x = -1.3 -> 1 + round(-2.6) = -2: inside */
    ds = dz = 0.0f;
    qat_fqk_lsq_backward(NULL, &ds, &dz, dy + 1, x + 1, 0.5f, 1, -2, 1, 1.0f, 1);
    /* y = (-2 - 1) * 0.5 = -1.5: ds = 2 * (-1.5 - -1.3) * 2 = -0.8, dz = 0 */
    ck_assert(close_enough(ds, -0.8, 1e-6, 0));
    ck_assert(dz == 0.0f);
}
END_TEST

/* Finite differences in double. LSQ's gradient is the derivative of the
 * straight-through surrogate: each element's rounding residual
 * e = round(v0) - v0 (v0 = x/s0) is frozen at the evaluation point, so
 *   inside:  y(s, z) = x + s*e            (the zero point cancels)
 *   outside: y(s, z) = (bound - z) * s
 * and L = sum(w * y) with random w (= dy). Samples whose v is within 1e-3 of
 * a rounding or clamp boundary are skipped. */
START_TEST(test_lsq_finite_differences)
{
    qat_rng r;
    qat_rng_seed(&r, 5);
    const int n = 500;
    float x[500], w[500], dx[500];
    for (int trial = 0; trial < 6; trial++) {
        const float s = 0.03f + 0.1f * qat_rng_uniform(&r);
        const int32_t qmin = trial < 3 ? -8 : 0, qmax = trial < 3 ? 7 : 15;
        const int32_t z = trial < 3 ? (int32_t)qat_rng_below(&r, 5) - 2 : 3;
        int m = 0;
        while (m < n) {
            float xv = (qat_rng_uniform(&r) - 0.5f) * 2.5f * s * 16.0f;
            float v = xv * (1.0f / s); /* as the kernel sees it */
            double frac = v - floor(v);
            double lo_edge = qmin - z - 0.5, hi_edge = qmax - z + 0.5;
            if (fabs(frac - 0.5) < 1e-3 || fabs(v - lo_edge) < 1e-3 || fabs(v - hi_edge) < 1e-3)
                continue;
            x[m] = xv;
            w[m] = qat_rng_normal(&r);
            m++;
        }
        const float g = 1.0f / sqrtf((float)n * (float)qmax);
        float ds = 0.0f, dz = 0.0f;
        memset(dx, 0, sizeof dx);
        qat_fqk_lsq_backward(dx, &ds, &dz, w, x, s, z, qmin, qmax, g, (size_t)n);
        /* the surrogate loss in double around (s, z) */
        double e[500];
        int in[500], below[500];
        for (int i = 0; i < n; i++) {
            float v = x[i] * (1.0f / s);
            int32_t q = qat_quantize_val_unclamped(x[i], 1.0f / s, z);
            in[i] = q >= qmin && q <= qmax;
            below[i] = q < qmin;
            e[i] = (double)(q - z) - (double)v;
        }
        double h = 1e-6, Lp = 0, Lm = 0, Zp = 0, Zm = 0;
        for (int i = 0; i < n; i++) {
            double b = below[i] ? qmin : qmax;
            double sp = s + h, sm = s - h;
            Lp += w[i] * (in[i] ? x[i] + sp * e[i] : (b - z) * sp);
            Lm += w[i] * (in[i] ? x[i] + sm * e[i] : (b - z) * sm);
            Zp += w[i] * (in[i] ? x[i] + s * e[i] : (b - (z + h)) * s);
            Zm += w[i] * (in[i] ? x[i] + s * e[i] : (b - (z - h)) * s);
        }
        double fd_s = (Lp - Lm) / (2 * h) * g, fd_z = (Zp - Zm) / (2 * h) * g;
        ck_assert_msg(close_enough(ds, fd_s, 1e-4, 1e-4), "trial %d: dscale %.9g fd %.9g", trial,
                      (double)ds, fd_s);
        ck_assert_msg(close_enough(dz, fd_z, 1e-4, 1e-4), "trial %d: dzp %.9g fd %.9g", trial,
                      (double)dz, fd_z);
        /* dx: the surrogate in x is x + s*e inside (slope 1), constant outside */
        for (int i = 0; i < n; i++) ck_assert(dx[i] == (in[i] ? w[i] : 0.0f));
    }
}
END_TEST

/* The LSQ backward of engine lv (AVX2, AVX-512) gives the portable
 * kernel's dx, dscale and dzp bit for bit (plain and with the fused ReLU),
 * on odd sizes and special values; per channel too. */
static void lsq_engine_vs_portable(int lv)
{
    qat_rng r;
    qat_rng_seed(&r, 11);
    const size_t sizes[] = {1, 7, 8, 15, 16, 17, 31, 33, 1000, 100003};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy), *d0 = malloc(n * sizeof *d0);
        float *dxa = malloc(n * sizeof *dxa), *dxb = malloc(n * sizeof *dxb);
        ck_assert(x && dy && d0 && dxa && dxb);
        tu_fill_uniform(x, n, -1.0f, 1.0f, &r);
        tu_fill_uniform(dy, n, -1.0f, 1.0f, &r);
        tu_fill_uniform(d0, n, -1.0f, 1.0f, &r);
        if (n > 20) x[3] = NAN, x[5] = -INFINITY, x[7] = INFINITY, x[9] = -0.0f, x[11] = 1e30f, d0[13] = -0.0f, dy[13] = 0.0f;
        for (int relu = 0; relu < 2; relu++) {
            float dsa = 0.5f, dza = -0.25f, dsb = 0.5f, dzb = -0.25f;
            memcpy(dxa, d0, n * sizeof *dxa);
            memcpy(dxb, d0, n * sizeof *dxb);
            qat_simd_set_level(QAT_SIMD_PORTABLE);
            if (relu)
                qat_fqk_lsq_relu_backward(dxa, &dsa, &dza, dy, x, 0.05f, -3, -8, 7, 0.01f, n);
            else
                qat_fqk_lsq_backward(dxa, &dsa, &dza, dy, x, 0.05f, -3, -8, 7, 0.01f, n);
            qat_simd_set_level(lv);
            if (relu)
                qat_fqk_lsq_relu_backward(dxb, &dsb, &dzb, dy, x, 0.05f, -3, -8, 7, 0.01f, n);
            else
                qat_fqk_lsq_backward(dxb, &dsb, &dzb, dy, x, 0.05f, -3, -8, 7, 0.01f, n);
            ck_assert_msg(memcmp(dxa, dxb, n * sizeof *dxa) == 0, "engine %d n %zu relu %d: dx differs", lv, n, relu);
            ck_assert_msg(dsa == dsb && dza == dzb, "engine %d n %zu relu %d: ds %.9g vs %.9g, dz %.9g vs %.9g", lv, n,
                          relu, dsa, dsb, dza, dzb);
        }
        /* per channel: (outer 2, channels 3, inner n / 6) */
        if (n >= 6) {
            float sa[3] = {0}, za[3] = {0}, sb[3] = {0}, zb[3] = {0};
            const float scales[3] = {0.05f, 0.02f, 0.1f};
            const int32_t zps[3] = {0, 1, -2};
            memcpy(dxa, d0, n * sizeof *dxa);
            memcpy(dxb, d0, n * sizeof *dxb);
            qat_simd_set_level(QAT_SIMD_PORTABLE);
            qat_fqk_lsq_channel_backward(dxa, sa, za, dy, x, scales, zps, -8, 7, 0.01f, 2, 3, n / 6);
            qat_simd_set_level(lv);
            qat_fqk_lsq_channel_backward(dxb, sb, zb, dy, x, scales, zps, -8, 7, 0.01f, 2, 3, n / 6);
            ck_assert_msg(memcmp(dxa, dxb, n * sizeof *dxa) == 0, "engine %d n %zu: channel dx differs", lv, n);
            ck_assert_msg(memcmp(sa, sb, sizeof sa) == 0 && memcmp(za, zb, sizeof za) == 0,
                          "engine %d n %zu: channel sums differ", lv, n);
        }
        free(x), free(dy), free(d0), free(dxa), free(dxb);
    }
    /* the lanes: element l of each group of 8 goes to lane l, and the lanes
     * are added in order, so these cancelling terms give exactly 6 (+-2^60
     * absorb the 1s); any other lane order gives another sum. All out of
     * range at qmax - zp = 1 with g = 1: ds = dy. */
    float xl[16], dyl[16] = {0x1p60f, 1, 1, 1, -0x1p60f, 2, 2, 2}, dsl[2] = {0}, dzl[2] = {0};
    const float scl = 0.05f;
    const int32_t zpl = 6;
    for (int i = 0; i < 16; i++) xl[i] = 1e30f;
    for (int k = 0; k < 2; k++) {
        qat_simd_set_level(k ? lv : QAT_SIMD_PORTABLE);
        qat_fqk_lsq_channel_backward(NULL, &dsl[k], &dzl[k], dyl, xl, &scl, &zpl, -8, 7, 1.0f, 1, 1, 16);
    }
    ck_assert_msg(dsl[0] == 6.0f && dsl[1] == 6.0f, "engine %d: lane order: ds %.9g (portable %.9g)", lv, dsl[1],
                  dsl[0]);
    ck_assert(dzl[0] == dzl[1]);
    qat_simd_set_level(-1);
}

/* every engine the CPU runs against the portable one (none without SIMD) */
START_TEST(test_lsq_simd_vs_portable)
{
    const int levels = qat_simd_set_level(QAT_SIMD_AVX512) + 1; /* engines 0 .. levels - 1 */
    qat_simd_set_level(-1);
    for (int lv = QAT_SIMD_AVX2; lv < levels; lv++) lsq_engine_vs_portable(lv);
}
END_TEST

/* Large sizes: the blocked parallel sum equals the sequential reference. */
START_TEST(test_lsq_large)
{
    qat_rng r;
    qat_rng_seed(&r, 3);
    const size_t n = 300001;
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy);
    float *dx = calloc(n, sizeof *dx), *dxr = calloc(n, sizeof *dxr);
    ck_assert(x && dy && dx && dxr);
    tu_fill_uniform(x, n, -1.0f, 1.0f, &r);
    tu_fill_uniform(dy, n, -1.0f, 1.0f, &r);
    float ds = 0, dz = 0, dsr = 0, dzr = 0;
    qat_fqk_lsq_backward(dx, &ds, &dz, dy, x, 0.05f, 2, -8, 7, 0.01f, n);
    qat_fqk_lsq_backward_ref(dxr, &dsr, &dzr, dy, x, 0.05f, 2, -8, 7, 0.01f, n);
    for (size_t i = 0; i < n; i++) ck_assert(dx[i] == dxr[i]);
    ck_assert(close_enough(ds, dsr, 1e-5, 1e-6));
    ck_assert(close_enough(dz, dzr, 1e-5, 1e-6));
    /* per channel over the same data as (outer 3, channels 1, inner n/3) */
    float dsc = 0, dzc = 0;
    qat_fqk_lsq_channel_backward(NULL, &dsc, &dzc, dy, x, (const float[]){0.05f},
                                 (const int32_t[]){2}, -8, 7, 0.01f, 3, 1, n / 3);
    float dsp = 0, dzp = 0;
    qat_fqk_lsq_backward_ref(NULL, &dsp, &dzp, dy, x, 0.05f, 2, -8, 7, 0.01f, 3 * (n / 3));
    ck_assert(close_enough(dsc, dsp, 1e-5, 1e-6) && close_enough(dzc, dzp, 1e-5, 1e-6));
    free(x), free(dy), free(dx), free(dxr);
}
END_TEST

/* ---- bias ---- */

START_TEST(test_bias)
{
    const float s_in = 0.5f;
    const float s_w[6] = {0.25f, 0.25f, 0.25f, 0.25f, QAT_SCALE_EPS, 0.1f};
    const float bias[6] = {0.3f, 0.3125f, -0.3125f, 0.4375f, 100.0f, -0.07f};
    /* s_b = 0.125 (x8): 2.4 -> 2; 2.5 -> 2; -2.5 -> -2; 3.5 -> 4.
     * s_b = 0.5 * 2^-23 = 2^-24: 100 * 2^24 > 2^30 -> 2^30, out = 2^30 * 2^-24 = 64.
     * s_b = fl(0.5 * 0.1f) = 0.05f: -0.07 / 0.05 = -1.4 -> -1, out = -0.05f. */
    const float want[6] = {0.25f, 0.25f, -0.25f, 0.5f, 64.0f, -0.05f};
    float out[6];
    qat_fqk_bias(out, bias, s_w, s_in, 6);
    for (int c = 0; c < 6; c++)
        ck_assert_msg(out[c] == want[c], "c %d: %.9g want %.9g", c, (double)out[c],
                      (double)want[c]);
    /* the same integer the converter writes */
    for (int c = 0; c < 6; c++) {
        float s_b = qat_bias_scale(s_in, s_w[c]);
        ck_assert(out[c] == (float)qat_quantize_bias_val(bias[c], s_b) * s_b);
    }
    ck_assert_int_eq(qat_quantize_bias_val(100.0f, qat_bias_scale(s_in, QAT_SCALE_EPS)),
                     QAT_BIAS_QMAX);
    /* straight-through */
    float db[6] = {1, 2, 3, 4, 5, 6};
    const float dout[6] = {0.5f, -1.0f, 0.25f, 0.0f, 8.0f, -0.125f};
    qat_fqk_bias_backward(db, dout, 6);
    ck_assert(db[0] == 1.5f && db[1] == 1.0f && db[2] == 3.25f && db[3] == 4.0f &&
              db[4] == 13.0f && db[5] == 5.875f);
    /* random: within half a step (unsaturated), plus the float rounding of
     * b * fl(1/s_b) and of b_q * s_b (a few ulps of b) */
    qat_rng r;
    qat_rng_seed(&r, 17);
    for (int i = 0; i < 10000; i++) {
        float b = (qat_rng_uniform(&r) - 0.5f) * 4.0f;
        float sw = 1e-4f + 0.01f * qat_rng_uniform(&r), si = 0.001f + 0.1f * qat_rng_uniform(&r);
        float o;
        qat_fqk_bias(&o, &b, &sw, si, 1);
        float s_b = qat_bias_scale(si, sw);
        ck_assert(fabs((double)o - (double)b) <= 0.5 * s_b + 4.0 * FLT_EPSILON * fabs(b));
    }
}
END_TEST

/* ---- the public tensor ops (include/qat/quant.h) ----
 * The same bits as the kernels above (and so PyTorch's goldens), through
 * the tape: forward, straight-through and LSQ gradients, the in-place
 * projection of learnable parameters, argument errors. */

/* loss = sum(y * w); backward */
static void backward_weighted(qat_ctx *ctx, qat_tensor *y, const float *w)
{
    ck_assert_ptr_nonnull(y);
    qat_tensor *wt = qat_from(ctx, y->ndim, y->shape, w);
    ck_assert_int_eq(qat_backward(ctx, qat_sum(ctx, qat_mul(ctx, y, wt))), QAT_OK);
}

START_TEST(test_op_per_tensor_golden)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_rng r;
    qat_rng_seed(&r, 21);
    float w[FQ_N];
    for (int k = 0; k < FQ_NCONFIG; k++) {
        tu_fill_uniform(w, FQ_N, -1, 1, &r);
        qat_tensor *x = qat_new_leaf(ctx, 1, (int[]){FQ_N}, fq_x + k * FQ_N);
        qat_tensor *y = qat_fake_quant_per_tensor(ctx, x, fq_cfg[k].scale, fq_cfg[k].zp, fq_cfg[k].qmin,
                                                  fq_cfg[k].qmax);
        ck_assert_ptr_nonnull(y);
        backward_weighted(ctx, y, w);
        for (int i = 0; i < FQ_N; i++) {
            ck_assert_msg(y->data[i] == fq_y[k * FQ_N + i], "config %d, %d: %.9g torch %.9g", k, i,
                          (double)y->data[i], (double)fq_y[k * FQ_N + i]);
            ck_assert(x->grad[i] == w[i] * (float)fq_mask[k * FQ_N + i]);
        }
        qat_ctx_reset(ctx);
    }
    qat_ctx_free(ctx);
}
END_TEST

/* Per channel along axis 1 of (2, 3, 5) (the goldens), and along every axis
 * of a 4-d tensor against the kernel on the (outer, channels, inner) view. */
START_TEST(test_op_per_channel)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_rng r;
    qat_rng_seed(&r, 22);
    float w[30];
    tu_fill_uniform(w, 30, -1, 1, &r);
    qat_tensor *x = qat_new_leaf(ctx, 3, (int[]){2, 3, 5}, fqc_x);
    qat_tensor *y = qat_fake_quant_per_channel(ctx, x, fqc_scale, fqc_zp, 1, -128, 127);
    backward_weighted(ctx, y, w);
    for (int i = 0; i < 30; i++) {
        ck_assert_msg(y->data[i] == fqc_y[i], "%d: %.9g torch %.9g", i, (double)y->data[i], (double)fqc_y[i]);
        ck_assert(x->grad[i] == w[i] * (float)fqc_mask[i]);
    }
    const int shape[4] = {2, 3, 4, 5};
    float xd[120], yk[120], s[5];
    int32_t z[5];
    uint8_t m[120];
    tu_fill_uniform(xd, 120, -2, 2, &r);
    for (int axis = 0; axis < 4; axis++) {
        size_t outer = 1, inner = 1, ch = (size_t)shape[axis];
        for (int d = 0; d < axis; d++) outer *= (size_t)shape[d];
        for (int d = axis + 1; d < 4; d++) inner *= (size_t)shape[d];
        for (size_t c = 0; c < ch; c++) {
            s[c] = 0.01f + 0.1f * qat_rng_uniform(&r);
            z[c] = (int32_t)qat_rng_below(&r, 5) - 2;
        }
        qat_fqk_channel_forward(yk, m, xd, s, z, -8, 7, outer, ch, inner);
        qat_tensor *x4 = qat_new_leaf(ctx, 4, shape, xd);
        qat_tensor *y4 = qat_fake_quant_per_channel(ctx, x4, s, z, axis, -8, 7);
        float w4[120];
        tu_fill_uniform(w4, 120, -1, 1, &r);
        backward_weighted(ctx, y4, w4);
        ck_assert_msg(!memcmp(y4->data, yk, sizeof yk), "axis %d", axis);
        for (int i = 0; i < 120; i++) ck_assert(x4->grad[i] == w4[i] * (float)m[i]);
        /* NULL zero points: all 0 */
        int32_t z0[5] = {0};
        qat_fqk_channel_forward(yk, NULL, xd, s, z0, -8, 7, outer, ch, inner);
        y4 = qat_fake_quant_per_channel(ctx, x4, s, NULL, axis, -8, 7);
        ck_assert(y4 && !memcmp(y4->data, yk, sizeof yk));
    }
    qat_ctx_free(ctx);
}
END_TEST

/* LSQ per tensor: dx bitwise PyTorch's; dscale and dzp the kernel's bits
 * (and PyTorch's to float summation order). */
START_TEST(test_op_lsq_golden)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *s = qat_tensor_create(1, (int[]){1}, 1), *z = qat_tensor_create(1, (int[]){1}, 1);
    for (int k = 0; k < LSQ_NCONFIG; k++) {
        const float *xv = lsq_x + k * LSQ_N, *dy = lsq_dy + k * LSQ_N;
        s->data[0] = lsq_cfg[k].scale;
        z->data[0] = (float)lsq_cfg[k].zp;
        qat_tensor_zero_grad(s);
        qat_tensor_zero_grad(z);
        qat_tensor *x = qat_new_leaf(ctx, 2, (int[]){5, LSQ_N / 5}, xv);
        qat_tensor *y = qat_fake_quant_lsq(ctx, x, s, z, lsq_cfg[k].qmin, lsq_cfg[k].qmax, lsq_cfg[k].grad_factor);
        ck_assert_ptr_nonnull(y);
        float yk[LSQ_N], dxk[LSQ_N] = {0}, dsk = 0, dzk = 0;
        qat_fqk_forward(yk, NULL, xv, lsq_cfg[k].scale, lsq_cfg[k].zp, lsq_cfg[k].qmin, lsq_cfg[k].qmax, LSQ_N);
        qat_fqk_lsq_backward(dxk, &dsk, &dzk, dy, xv, lsq_cfg[k].scale, lsq_cfg[k].zp, lsq_cfg[k].qmin,
                             lsq_cfg[k].qmax, lsq_cfg[k].grad_factor, LSQ_N);
        backward_weighted(ctx, y, dy);
        ck_assert(!memcmp(y->data, yk, sizeof yk));
        for (int i = 0; i < LSQ_N; i++) ck_assert(x->grad[i] == lsq_dx[k * LSQ_N + i]);
        ck_assert_msg(s->grad[0] == dsk && z->grad[0] == dzk, "config %d: ds %.9g/%.9g dz %.9g/%.9g", k,
                      (double)s->grad[0], (double)dsk, (double)z->grad[0], (double)dzk);
        ck_assert(close_enough(s->grad[0], lsq_cfg[k].dscale, 1e-6, 1e-5));
        ck_assert(close_enough(z->grad[0], lsq_cfg[k].dzp, 1e-6, 1e-5));
        /* symmetric: no zero point tensor (0), no zero point gradient */
        if (lsq_cfg[k].zp == 0) {
            float ds0 = s->grad[0];
            qat_tensor *y0 = qat_fake_quant_lsq(ctx, x, s, NULL, lsq_cfg[k].qmin, lsq_cfg[k].qmax,
                                                lsq_cfg[k].grad_factor);
            backward_weighted(ctx, y0, dy);
            ck_assert(!memcmp(y0->data, yk, sizeof yk));
            ck_assert(s->grad[0] == ds0 + dsk); /* accumulates */
        }
        qat_ctx_reset(ctx);
    }
    qat_tensor_free(s);
    qat_tensor_free(z);
    qat_ctx_free(ctx);
}
END_TEST

/* LSQ per channel, axis 0 of (3, 2, 4) (the goldens); grad_factor 0 is
 * 1/sqrt(N * qmax) with N = 8 elements per channel. */
START_TEST(test_op_lsq_channel_golden)
{
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *s = qat_tensor_create(1, (int[]){3}, 1), *z = qat_tensor_create(1, (int[]){3}, 1);
    const float gfs[2] = {LSQC_GRAD_FACTOR, 0.0f};
    float ds_prev[3] = {0};
    for (int g = 0; g < 2; g++) {
        for (int c = 0; c < 3; c++) s->data[c] = lsqc_scale[c], z->data[c] = (float)lsqc_zp[c];
        qat_tensor_zero_grad(s);
        qat_tensor_zero_grad(z);
        qat_tensor *x = qat_new_leaf(ctx, 3, (int[]){3, 2, 4}, lsqc_x);
        qat_tensor *y = qat_fake_quant_lsq_per_channel(ctx, x, s, z, 0, -8, 7, gfs[g]);
        ck_assert_ptr_nonnull(y);
        backward_weighted(ctx, y, lsqc_dy);
        float dsk[3] = {0}, dzk[3] = {0};
        float gf = g ? (float)(1.0 / sqrt(8.0 * 7.0)) : LSQC_GRAD_FACTOR;
        qat_fqk_lsq_channel_backward(NULL, dsk, dzk, lsqc_dy, lsqc_x, lsqc_scale, lsqc_zp, -8, 7, gf, 1, 3, 8);
        for (int i = 0; i < 24; i++) ck_assert(x->grad[i] == lsqc_dx[i]);
        for (int c = 0; c < 3; c++) {
            ck_assert(s->grad[c] == dsk[c] && z->grad[c] == dzk[c]);
            ck_assert(close_enough(s->grad[c], lsqc_dscale[c], 1e-6, 1e-5));
            ck_assert(close_enough(z->grad[c], lsqc_dzp[c], 1e-6, 1e-5));
            if (g) ck_assert(s->grad[c] == ds_prev[c]); /* the default is 1/sqrt(56) */
            ds_prev[c] = s->grad[c];
        }
        qat_ctx_reset(ctx);
    }
    qat_tensor_free(s);
    qat_tensor_free(z);
    qat_ctx_free(ctx);
}
END_TEST

/* Gradient check of the learnable ops. Fake-quant is piecewise constant, so
 * its gradients are those of the straight-through surrogate (see
 * test_lsq_finite_differences): with e_i = (y_i - x_i) / s frozen at the
 * op's own forward output,
 *   inside:  y(s, z) = x + s * e          outside: y(s, z) = (bound - z) * s
 * Finite differences of L = sum(w * y) on that surrogate, times g, must
 * match the tape's dscale and dzp; dx must be w on the inside, 0 outside.
 * Elements whose x/s lies within 1e-3 of a rounding or clamp boundary are
 * avoided. Per tensor and per channel (axis 1 of [2, 3, 5, 7]). */
static void lsq_fd_case(int per_channel, int32_t qmin, int32_t qmax, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    const int shape[4] = {2, 3, 5, 7}, C = per_channel ? 3 : 1;
    const size_t n = 210, inner = 35;
    float x[210], w[210], sv[3], zv[3];
    for (int c = 0; c < C; c++) {
        sv[c] = 0.03f + 0.1f * qat_rng_uniform(&r);
        zv[c] = qmin < 0 ? (float)((int)qat_rng_below(&r, 5) - 2) : 3.0f;
    }
    for (size_t i = 0; i < n;) {
        int c = per_channel ? (int)(i / inner % 3) : 0;
        float xv = (qat_rng_uniform(&r) - 0.5f) * 2.5f * sv[c] * (float)(qmax - qmin + 1);
        float v = xv * (1.0f / sv[c]);
        double frac = v - floor(v);
        if (fabs(frac - 0.5) < 1e-3 || fabs(v - (qmin - zv[c] - 0.5)) < 1e-3 || fabs(v - (qmax - zv[c] + 0.5)) < 1e-3)
            continue;
        x[i] = xv;
        w[i] = qat_rng_normal(&r);
        i++;
    }
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *s = qat_tensor_create(1, &C, 1), *z = qat_tensor_create(1, &C, 1);
    memcpy(s->data, sv, (size_t)C * sizeof(float));
    memcpy(z->data, zv, (size_t)C * sizeof(float));
    qat_tensor *xt = qat_new_leaf(ctx, 4, shape, x);
    qat_tensor *y = per_channel ? qat_fake_quant_lsq_per_channel(ctx, xt, s, z, 1, qmin, qmax, 0.0f)
                                : qat_fake_quant_lsq(ctx, xt, s, z, qmin, qmax, 0.0f);
    ck_assert_ptr_nonnull(y);
    backward_weighted(ctx, y, w);
    const double per = per_channel ? 70.0 : 210.0;
    const double g = (float)(1.0 / sqrt(per * qmax));
    const double h = 1e-6;
    double fd_s[3] = {0}, fd_z[3] = {0};
    int n_in = 0, n_out = 0;
    for (size_t i = 0; i < n; i++) {
        int c = per_channel ? (int)(i / inner % 3) : 0;
        int32_t zi = (int32_t)zv[c];
        int32_t q = qat_quantize_val_unclamped(x[i], 1.0f / sv[c], zi);
        int in = q >= qmin && q <= qmax;
        double b = q < qmin ? qmin : qmax;
        if (in) {
            double e = ((double)y->data[i] - x[i]) / sv[c];
            fd_s[c] += w[i] * ((x[i] + (sv[c] + h) * e) - (x[i] + (sv[c] - h) * e)) / (2 * h);
            ck_assert(xt->grad[i] == w[i]);
            n_in++;
        } else {
            fd_s[c] += w[i] * ((b - zi) * (sv[c] + h) - (b - zi) * (sv[c] - h)) / (2 * h);
            fd_z[c] += w[i] * ((b - (zi + h)) * sv[c] - (b - (zi - h)) * sv[c]) / (2 * h);
            ck_assert(y->data[i] == (float)(b - zi) * sv[c]); /* the surrogate is the op here */
            ck_assert(xt->grad[i] == 0.0f);
            n_out++;
        }
    }
    ck_assert(n_in > 20 && n_out > 20);
    for (int c = 0; c < C; c++) {
        ck_assert_msg(close_enough(s->grad[c], fd_s[c] * g, 1e-4, 1e-4), "c %d: dscale %.9g fd %.9g", c,
                      (double)s->grad[c], fd_s[c] * g);
        ck_assert_msg(close_enough(z->grad[c], fd_z[c] * g, 1e-4, 1e-4), "c %d: dzp %.9g fd %.9g", c,
                      (double)z->grad[c], fd_z[c] * g);
    }
    qat_tensor_free(s);
    qat_tensor_free(z);
    qat_ctx_free(ctx);
}

/* Where every element is clamped the surrogate is the op itself,
 * y = (bound - z) * s: central differences of the op's own forward in the
 * scale. Scales and steps are powers of two and the elements stay clamped
 * (|x/s| beyond the range by >= 1), so every product is exact and the
 * difference quotient is the derivative; g = 1. */
static void lsq_fd_clamped(int per_channel, uint64_t seed)
{
    qat_rng r;
    qat_rng_seed(&r, seed);
    const int shape[2] = {3, 40}, C = per_channel ? 3 : 1;
    const int32_t qmin = -8, qmax = 7;
    float x[120], w[120], sv[3] = {0.0625f, 0.125f, 0.03125f}, zv[3] = {1, -2, 0};
    for (int i = 0; i < 120; i++) {
        int c = per_channel ? i / 40 : 0;
        float v = (float)(qmax - zv[c]) + 1.0f + 8.0f * qat_rng_uniform(&r); /* x/s above the range */
        if (i % 2) v = (float)(qmin - zv[c]) - 1.0f - 8.0f * qat_rng_uniform(&r);
        x[i] = v * sv[c];
        w[i] = qat_rng_normal(&r);
    }
    qat_ctx *ctx = qat_ctx_create(0);
    qat_tensor *s = qat_tensor_create(1, &C, 1), *z = qat_tensor_create(1, &C, 1);
    memcpy(s->data, sv, (size_t)C * sizeof(float));
    memcpy(z->data, zv, (size_t)C * sizeof(float));
    qat_tensor *y = per_channel ? qat_fake_quant_lsq_per_channel(ctx, qat_new_leaf(ctx, 2, shape, x), s, z, 0, qmin,
                                                                 qmax, 1.0f)
                                : qat_fake_quant_lsq(ctx, qat_new_leaf(ctx, 2, shape, x), s, z, qmin, qmax, 1.0f);
    backward_weighted(ctx, y, w);
    for (int c = 0; c < C; c++) {
        double L[2];
        float h = sv[c] / 256.0f;
        for (int k = 0; k < 2; k++) {
            s->data[c] = k ? sv[c] - h : sv[c] + h;
            qat_tensor *yy = per_channel ? qat_fake_quant_lsq_per_channel(ctx, qat_from(ctx, 2, shape, x), s, z, 0,
                                                                          qmin, qmax, 1.0f)
                                         : qat_fake_quant_lsq(ctx, qat_from(ctx, 2, shape, x), s, z, qmin, qmax, 1.0f);
            ck_assert_ptr_nonnull(yy);
            L[k] = 0;
            for (int i = 0; i < 120; i++) L[k] += (double)w[i] * yy->data[i];
        }
        s->data[c] = sv[c];
        double fd = (L[0] - L[1]) / (2.0 * h);
        ck_assert_msg(close_enough(s->grad[c], fd, 1e-5, 1e-5), "c %d: dscale %.9g, finite difference %.9g", c,
                      (double)s->grad[c], fd);
    }
    qat_tensor_free(s);
    qat_tensor_free(z);
    qat_ctx_free(ctx);
}

START_TEST(test_op_lsq_gradcheck)
{
    for (int nt = 1; nt <= 2; nt++) {
        qat_set_num_threads(nt);
        lsq_fd_case(0, -8, 7, 31);
        lsq_fd_case(0, 0, 15, 32);
        lsq_fd_case(1, -8, 7, 33);
        lsq_fd_case(1, -128, 127, 34);
        lsq_fd_clamped(0, 35);
        lsq_fd_clamped(1, 36);
    }
    qat_set_num_threads(0);
}
END_TEST

/* Learnable parameters are projected in place before use (scale >=
 * QAT_SCALE_EPS, zero point in [qmin, qmax]); bad arguments fail. */
START_TEST(test_op_projection_and_errors)
{
    qat_ctx *ctx = qat_ctx_create(0);
    float xv[6] = {-1, -0.5f, 0, 0.25f, 0.5f, 1};
    qat_tensor *x = qat_from(ctx, 2, (int[]){2, 3}, xv);
    qat_tensor *s = qat_tensor_create(1, (int[]){1}, 1), *z = qat_tensor_create(1, (int[]){1}, 1);
    s->data[0] = -0.5f;
    z->data[0] = 9.7f;
    qat_tensor *y = qat_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.0f);
    ck_assert_ptr_nonnull(y);
    ck_assert(s->data[0] == QAT_SCALE_EPS && z->data[0] == 7.0f);
    s->data[0] = NAN;
    z->data[0] = NAN;
    ck_assert_ptr_nonnull(qat_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.0f));
    ck_assert(s->data[0] == QAT_SCALE_EPS && z->data[0] == -8.0f);
    z->data[0] = -3.6f; /* in range: kept, used as nearbyint -> -4 */
    s->data[0] = 0.25f;
    y = qat_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.0f);
    ck_assert(z->data[0] == -3.6f && s->data[0] == 0.25f);
    for (int i = 0; i < 6; i++) {
        float want;
        qat_fqk_forward(&want, NULL, &xv[i], 0.25f, -4, -8, 7, 1);
        ck_assert(y->data[i] == want);
    }
    /* per channel, one channel out of range */
    qat_tensor *sc = qat_tensor_create(1, (int[]){3}, 1);
    sc->data[0] = 0.1f, sc->data[1] = -1.0f, sc->data[2] = 0.0f;
    ck_assert_ptr_nonnull(qat_fake_quant_lsq_per_channel(ctx, x, sc, NULL, 1, -7, 7, 0.0f));
    ck_assert(sc->data[0] == 0.1f && sc->data[1] == QAT_SCALE_EPS && sc->data[2] == QAT_SCALE_EPS);

    /* errors: NULL and an error message, parameters untouched */
    s->data[0] = INFINITY;
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.0f));
    ck_assert(strstr(qat_last_error(), "infinite") && s->data[0] == INFINITY);
    s->data[0] = 0.25f;
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, z, 7, -8, 0.0f));
    ck_assert(strstr(qat_last_error(), "range [7, -8]"));
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, z, -8, 70000, 0.0f));
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, z, -8, 7, -1.0f));
    ck_assert(strstr(qat_last_error(), "grad_factor"));
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, NULL, 1, 7, 0.0f)); /* zero point 0 outside */
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, s, z, -8, 0, 0.0f));    /* default g needs qmax > 0 */
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, x, sc, z, -8, 7, 0.0f));
    ck_assert(strstr(qat_last_error(), "scale has 3 elements, 1 expected"));
    ck_assert_ptr_null(qat_fake_quant_lsq_per_channel(ctx, x, s, z, 1, -8, 7, 0.0f));
    ck_assert_ptr_null(qat_fake_quant_lsq_per_channel(ctx, x, sc, NULL, 2, -8, 7, 0.0f));
    ck_assert(strstr(qat_last_error(), "axis 2 of a 2-d tensor"));
    ck_assert_ptr_null(qat_fake_quant_per_tensor(ctx, x, 0.0f, 0, -8, 7));
    ck_assert(strstr(qat_last_error(), "not a positive finite number"));
    ck_assert_ptr_null(qat_fake_quant_per_tensor(ctx, x, NAN, 0, -8, 7));
    ck_assert_ptr_null(qat_fake_quant_per_tensor(ctx, x, 0.1f, 8, -8, 7));
    ck_assert(strstr(qat_last_error(), "zero point 8"));
    const float s3[3] = {0.1f, 0.1f, -0.1f};
    const int32_t z3[3] = {0, 0, 0};
    ck_assert_ptr_null(qat_fake_quant_per_channel(ctx, x, s3, z3, 1, -8, 7));
    ck_assert(strstr(qat_last_error(), "channel 2"));
    ck_assert_ptr_null(qat_fake_quant_per_channel(ctx, x, s3, z3, -1, -8, 7));
    ck_assert_ptr_null(qat_fake_quant_per_channel(ctx, x, NULL, z3, 1, -8, 7));
    /* NULL input: NULL, no new error */
    qat_clear_error();
    ck_assert_ptr_null(qat_fake_quant_per_tensor(ctx, NULL, 0.1f, 0, -8, 7));
    ck_assert_ptr_null(qat_fake_quant_lsq(ctx, NULL, s, z, -8, 7, 0.0f));
    ck_assert_str_eq(qat_last_error(), "");
    /* no gradient wanted: no tape, same values */
    qat_ctx_set_grad(ctx, 0);
    qat_tensor *y2 = qat_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.0f);
    ck_assert_ptr_nonnull(y2);
    qat_tensor_free(s);
    qat_tensor_free(z);
    qat_tensor_free(sc);
    qat_ctx_free(ctx);
}
END_TEST

static Suite *fakequant_suite(void)
{
    Suite *s = suite_create("fakequant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fq_golden);
    tcase_add_test(tc, test_fq_hand);
    tcase_add_test(tc, test_zero_point_from_float);
    tcase_add_test(tc, test_fq_random_and_backward);
    tcase_add_test(tc, test_fq_relu_fused);
    tcase_add_test(tc, test_fqc_golden);
    tcase_add_test(tc, test_fqc_random_shapes);
    tcase_add_test(tc, test_lsq_golden);
    tcase_add_test(tc, test_lsq_simd_vs_portable);
    tcase_add_test(tc, test_lsqc_golden);
    tcase_add_test(tc, test_lsq_hand);
    tcase_add_test(tc, test_lsq_finite_differences);
    tcase_add_test(tc, test_lsq_large);
    tcase_add_test(tc, test_bias);
    tcase_add_test(tc, test_op_per_tensor_golden);
    tcase_add_test(tc, test_op_per_channel);
    tcase_add_test(tc, test_op_lsq_golden);
    tcase_add_test(tc, test_op_lsq_channel_golden);
    tcase_add_test(tc, test_op_lsq_gradcheck);
    tcase_add_test(tc, test_op_projection_and_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fakequant_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
