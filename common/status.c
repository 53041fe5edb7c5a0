/* Status names and the caller-owned error struct. */
#include "status.h"

#include <stdio.h>
#include <string.h>

static const char *const status_text[] = {
#define STATUS_TEXT(name, text) text,
    STATUS_MAP(STATUS_TEXT)
#undef STATUS_TEXT
};

static const char *const status_reason[] = {
    [ST_OK] = "ok",
    [ST_INVALID] = "invalid_field",
    [ST_NOT_FOUND] = "not_found",
    [ST_CONFLICT] = "conflict",
    [ST_REJECTED] = "rejected",
    [ST_TOO_LARGE] = "body_too_large",
    [ST_UNAUTHORIZED] = "unauthorized",
    [ST_UNAVAILABLE] = "unavailable",
    [ST_INTERNAL] = "internal_error",
};

const char *status_str(status st)
{
    if ((unsigned)st >= ST__COUNT)
        return "unknown status";
    return status_text[st];
}

__attribute__((format(printf, 4, 0))) static status err_vset(struct err *e, status st, const char *reason,
                                                         const char *fmt, va_list ap)
{
    if (e == NULL)
        return st;
    e->code = st;
    snprintf(e->reason, sizeof e->reason, "%s",
             reason != NULL ? reason : ((unsigned)st < ST__COUNT ? status_reason[st] : "internal_error"));
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return st;
}

status err_set(struct err *e, status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, st, NULL, fmt, ap);
    va_end(ap);
    return st;
}

status err_setr(struct err *e, status st, const char *reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, st, reason, fmt, ap);
    va_end(ap);
    return st;
}

void err_clear(struct err *e)
{
    if (e == NULL)
        return;
    memset(e, 0, sizeof *e);
}
