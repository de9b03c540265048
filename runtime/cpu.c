/* runtime/cpu.c: which kernel families this CPU (and OS) can run.
 * GCC's __builtin_cpu_supports also checks that the OS saves the vector
 * registers (XGETBV) before it reports AVX/AVX-512 features. */
#include "runtime/rt_internal.h"

int qat_rti_cpu_has(qat_rt_isa isa)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    switch (isa) {
    case QAT_RT_ISA_REF: return 1;
    case QAT_RT_ISA_AVX2: return __builtin_cpu_supports("avx2") != 0;
    case QAT_RT_ISA_AVX512_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return isa == QAT_RT_ISA_REF;
#endif
}
