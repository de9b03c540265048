/* core/cpu.c: what this CPU can run, and the SIMD level of the float
 * training kernels (QAT_SIMD). GCC's __builtin_cpu_supports also checks
 * that the OS saves the vector registers (XGETBV) before it reports
 * AVX/AVX-512 features. */
#include <stdlib.h>

#include "core/internal.h"

int qat_cpu_has(qat_cpu_feature f)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    switch (f) {
    case QAT_CPU_AVX2: return __builtin_cpu_supports("avx2") != 0;
    case QAT_CPU_FMA: return __builtin_cpu_supports("fma") != 0;
    case QAT_CPU_F16C: return __builtin_cpu_supports("f16c") != 0;
    case QAT_CPU_AVX512F: return __builtin_cpu_supports("avx512f") != 0;
    case QAT_CPU_AVX512BW: return __builtin_cpu_supports("avx512bw") != 0;
    case QAT_CPU_AVX512VL: return __builtin_cpu_supports("avx512vl") != 0;
    case QAT_CPU_AVX512VNNI: return __builtin_cpu_supports("avx512vnni") != 0;
    default: return 0;
    }
#else
    (void)f;
    return 0;
#endif
}

static int simd_cpu = -1;   /* best level the CPU supports */
static int simd_level = -1; /* level in use */

static int detect(void)
{
    if (qat_cpu_has(QAT_CPU_AVX512F)) return QAT_SIMD_AVX512;
    if (qat_cpu_has(QAT_CPU_AVX2) && qat_cpu_has(QAT_CPU_FMA)) return QAT_SIMD_AVX2;
    return QAT_SIMD_PORTABLE;
}

int qat_simd_set_level(int level)
{
    if (simd_cpu < 0) simd_cpu = detect();
    if (level < 0) {
        const char *e = getenv("QAT_SIMD");
        level = (e && e[0] >= '0' && e[0] <= '2' && e[1] == 0) ? e[0] - '0' : simd_cpu;
    }
    simd_level = level < simd_cpu ? level : simd_cpu;
    return simd_level;
}

int qat_simd_level(void)
{
    if (simd_level < 0) qat_simd_set_level(-1);
    return simd_level;
}
