/* Logging to stderr, one line per call: text, or one JSON object per line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char log_service[32] = "cqrs";
static enum log_level log_min = LOG_LVL_INFO;
static enum log_format log_fmt = LOG_FMT_TEXT;
static _Thread_local const char *log_request_id;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_request_id(const char *id)
{
    log_request_id = id;
}

void log_init(const char *service, enum log_level level, enum log_format format)
{
    snprintf(log_service, sizeof log_service, "%s", service);
    log_min = level;
    log_fmt = format;
}

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

int log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    return parse_name(s, names, 4);
}

int log_format_parse(const char *s)
{
    static const char *const names[] = {"text", "json"};
    return parse_name(s, names, 2);
}

/* A bounded writer into a line buffer: each piece is written whole or not at all (then the
 * buffer is full and later pieces are dropped); 2 bytes stay reserved to close the object. */
struct lbuf {
    char *p;
    size_t len, used;
    int full, in_str;
};

static void lb_raw(struct lbuf *b, const char *s, size_t n)
{
    if (b->full || b->used + n + 3 > b->len) {
        b->full = 1;
        return;
    }
    memcpy(b->p + b->used, s, n);
    b->used += n;
    b->p[b->used] = '\0';
}

/* s (n bytes) as the inside of a JSON string. */
static void lb_escaped(struct lbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n && !b->full; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            lb_raw(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            lb_raw(b, esc, 6);
        } else {
            lb_raw(b, (const char *)&s[i], 1);
        }
    }
    if (b->full) {
        /* no half UTF-8 sequence at the cut */
        while (b->used > 0 && ((unsigned char)b->p[b->used - 1] & 0xC0) == 0x80)
            b->used--;
        if (b->used > 0 && (unsigned char)b->p[b->used - 1] >= 0xC0)
            b->used--;
        b->p[b->used] = '\0';
    }
}

/* "key":"value" (after a comma unless first), value n bytes; a NULL value: nothing. */
static void lb_field(struct lbuf *b, const char *key, const char *value, size_t n)
{
    if (value == NULL || b->full)
        return;
    lb_raw(b, b->used > 1 ? ",\"" : "\"", b->used > 1 ? 2 : 1);
    lb_raw(b, key, strlen(key));
    lb_raw(b, "\":\"", 3);
    if (b->full)
        return;
    b->in_str = 1;
    lb_escaped(b, value, n);
    lb_raw(b, "\"", 1);
    if (!b->full)
        b->in_str = 0;
}

/* The value of the first key=<value> pair of msg (key at a word start; value up to a space or
 * the end) and its length; NULL when absent. */
static const char *pair_value(const char *msg, const char *key, size_t *n)
{
    size_t klen = strlen(key);

    for (const char *p = strstr(msg, key); p != NULL; p = strstr(p + 1, key)) {
        if ((p == msg || p[-1] == ' ') && p[klen] == '=') {
            const char *v = p + klen + 1;
            *n = strcspn(v, " ,;");
            return *n > 0 ? v : NULL;
        }
    }
    return NULL;
}

void log_format_line(char *out, size_t len, enum log_format format, const char *stamp,
                     enum log_level level, const char *request_id, const char *message)
{
    struct lbuf b = {.p = out, .len = len};
    const char *v;
    size_t n = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    if (format == LOG_FMT_TEXT) {
        snprintf(out, len, "%s %s %s %s%s%s", stamp, level_names[level], log_service, message,
                 request_id != NULL ? " req=" : "", request_id != NULL ? request_id : "");
        return;
    }
    if (len < 8)
        return;
    lb_raw(&b, "{", 1);
    lb_field(&b, "time", stamp, strlen(stamp));
    lb_field(&b, "level", level_names[level], strlen(level_names[level]));
    lb_field(&b, "service", log_service, strlen(log_service));
    if (request_id != NULL)
        lb_field(&b, "request_id", request_id, strlen(request_id));
    v = pair_value(message, "account", &n);
    lb_field(&b, "account", v, n);
    v = pair_value(message, "event_id", &n);
    if (v == NULL)
        v = pair_value(message, "event", &n);
    lb_field(&b, "event_id", v, n);
    lb_field(&b, "message", message, strlen(message));
    /* the 2 reserved bytes: a string cut short is closed, then the object */
    if (b.in_str)
        b.p[b.used++] = '"';
    b.p[b.used++] = '}';
    b.p[b.used] = '\0';
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    char msg[1800];
    char stamp[40];
    char date[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level < log_min)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp, sizeof stamp, "%s.%03dZ", date, (int)(ts.tv_nsec / 1000000) % 1000);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_format_line(line, sizeof line - 1, log_fmt, stamp, level, log_request_id, msg);
    /* one fputs per line keeps lines from different threads whole */
    strcat(line, "\n");
    fputs(line, stderr);
}
