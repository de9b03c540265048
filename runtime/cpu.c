/* runtime/cpu.c: which kernel families this CPU (and OS) can run, from
 * core/'s feature detection. */
#include "core/internal.h"
#include "runtime/rt_internal.h"

int qat_rti_cpu_has(qat_rt_isa isa)
{
    switch (isa) {
    case QAT_RT_ISA_REF: return 1;
    case QAT_RT_ISA_AVX2: return qat_cpu_has(QAT_CPU_AVX2);
    case QAT_RT_ISA_AVX512_VNNI:
        return qat_cpu_has(QAT_CPU_AVX512F) && qat_cpu_has(QAT_CPU_AVX512BW) &&
               qat_cpu_has(QAT_CPU_AVX512VL) && qat_cpu_has(QAT_CPU_AVX512VNNI);
    default: return 0;
    }
}
