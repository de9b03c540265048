/* runtime/error.c: the runtime's errors go to qat's one thread-local
 * last-error slot (core/error.c, linked into libqat_runtime too), so
 * qat_last_error() and qat_rt_last_error() read the same message. */
#include <stdarg.h>

#include "core/internal.h"
#include "runtime/rt_internal.h"

int qat_rti_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qat_verror(status, fmt, ap);
    va_end(ap);
    return status;
}

const char *qat_rt_last_error(void) { return qat_last_error(); }
