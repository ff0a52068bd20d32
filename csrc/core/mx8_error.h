/* Error reporting for the pure C core.
 *
 * Core functions return 0 on success or a negative-free mx8_code (> 0) on failure and
 * fill an mx8_error. Only csrc/python turns these into Python exceptions; nothing in
 * csrc/core includes Python.h. */
#ifndef MX8_ERROR_H
#define MX8_ERROR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    MX8_OK = 0,
    MX8_ERR_NOMEM = 1,     /* allocation failed */
    MX8_ERR_IO = 2,        /* open/read/write failed, missing file */
    MX8_ERR_RANGE = 3,     /* byte range runs past the end of its object */
    MX8_ERR_FORMAT = 4,    /* malformed manifest, tar, or other container */
    MX8_ERR_DECODE = 5,    /* corrupt, truncated or unsupported image */
    MX8_ERR_TOO_LARGE = 6, /* image above the pixel limit (decompression bomb) */
    MX8_ERR_ARG = 7,       /* invalid argument from the caller */
    MX8_ERR_CLOSED = 8,    /* engine closed while waiting */
} mx8_code;

#define MX8_ERROR_MSG_LEN 1024 /* room for a whole S3 error message with its endpoint and region */

typedef struct {
    int code;      /* mx8_code */
    int sys_errno; /* errno for MX8_ERR_IO, else 0 */
    char msg[MX8_ERROR_MSG_LEN];
} mx8_error;

/* Sets code and a printf-style message; returns code so callers can `return mx8_error_set(...)`.
 * A NULL err is allowed (the error is then only returned). */
int mx8_error_set(mx8_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like mx8_error_set for MX8_ERR_IO, appending strerror(errnum) and keeping errnum. */
int mx8_error_sys(mx8_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void mx8_error_clear(mx8_error *err);

#endif
