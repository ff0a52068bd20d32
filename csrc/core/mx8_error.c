#include "mx8_error.h"

#include <stdio.h>
#include <string.h>

int mx8_error_set(mx8_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
        err->sys_errno = 0;
    }
    return code;
}

int mx8_error_sys(mx8_error *err, int errnum, const char *fmt, ...) {
    if (err) {
        char head[MX8_ERROR_MSG_LEN - 64]; /* leave room for ": strerror" */
        char ebuf[128];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(head, sizeof head, fmt, ap);
        va_end(ap);
        /* strerror_r (XSI or GNU) is thread-safe; strerror is not. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
        const char *es = strerror_r(errnum, ebuf, sizeof ebuf);
#else
        const char *es = strerror_r(errnum, ebuf, sizeof ebuf) == 0 ? ebuf : "unknown error";
#endif
        snprintf(err->msg, sizeof err->msg, "%s: %.60s", head, es);
        err->code = MX8_ERR_IO;
        err->sys_errno = errnum;
    }
    return MX8_ERR_IO;
}

void mx8_error_clear(mx8_error *err) {
    if (err) {
        err->code = MX8_OK;
        err->sys_errno = 0;
        err->msg[0] = '\0';
    }
}
