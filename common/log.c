/* Structured-enough logging to stderr, one line per call. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char log_service[32] = "cqrs";
static enum log_level log_min = LOG_LVL_INFO;
static _Thread_local const char *log_request_id;

void log_set_request_id(const char *id)
{
    log_request_id = id;
}

void log_init(const char *service, enum log_level level)
{
    snprintf(log_service, sizeof log_service, "%s", service);
    log_min = level;
}

int log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[2048];
    char stamp[40];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level < log_min)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof line, "%s.%03ldZ %s %s ", stamp, ts.tv_nsec / 1000000, names[level],
                 log_service);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (log_request_id != NULL) {
        size_t used = strlen(line);
        snprintf(line + used, sizeof line - used, " req=%s", log_request_id);
    }
    /* one fputs per line keeps lines from different threads whole */
    strncat(line, "\n", sizeof line - strlen(line) - 1);
    fputs(line, stderr);
}
