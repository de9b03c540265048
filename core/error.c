/* core/error.c: status strings and the thread-local last error, shared by
 * the training library and the runtime. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

const char *qat_status_str(int status)
{
    switch (status) {
#define QAT_X_CASE(name, value, desc) \
    case value:                       \
        return desc;
        QAT_STATUS_LIST(QAT_X_CASE)
#undef QAT_X_CASE
    }
    return "unknown status";
}

static _Thread_local char last_error[640];

const char *qat_last_error(void) { return last_error; }
void qat_clear_error(void) { last_error[0] = '\0'; }

static void set_error(const char *fmt, va_list ap)
{
    /* Format into a scratch buffer first: the arguments may point into
     * last_error itself (a message that quotes the previous error). */
    char buf[sizeof last_error];
    vsnprintf(buf, sizeof buf, fmt, ap);
    memcpy(last_error, buf, sizeof buf);
}

int qat_verror(int status, const char *fmt, va_list ap)
{
    set_error(fmt, ap);
    return status;
}

int qat_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return status;
}

void *qat_error_null(int status, const char *fmt, ...)
{
    va_list ap;
    (void)status;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return NULL;
}
