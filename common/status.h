/* One status type for the whole project, generated from one table; 0 = ok. */
#ifndef COMMON_STATUS_H
#define COMMON_STATUS_H

#include <stdarg.h>

#define STATUS_MAP(X)                                   \
    X(OK, "ok")                                         \
    X(INVALID, "invalid input")                         \
    X(NOT_FOUND, "not found")                           \
    X(CONFLICT, "conflict")                             \
    X(REJECTED, "rejected by a business rule")          \
    X(TOO_LARGE, "too large")                           \
    X(UNAUTHORIZED, "unauthorized")                     \
    X(UNAVAILABLE, "dependency unavailable")            \
    X(INTERNAL, "internal error")

typedef enum {
#define STATUS_ENUM(name, text) ST_##name,
    STATUS_MAP(STATUS_ENUM)
#undef STATUS_ENUM
    ST__COUNT
} status;

/* Caller-owned error: a status, a machine code (the API's "error" field) and a human message. */
struct err {
    status code;
    char reason[40];
    char msg[256];
};

#define WUR __attribute__((warn_unused_result))

/* Static text of a status; never NULL. */
const char *status_str(status st);

/* Sets e (if not NULL) and returns st. reason may be NULL (keeps a default from the status). */
status err_set(struct err *e, status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
status err_setr(struct err *e, status st, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void err_clear(struct err *e);

#endif
