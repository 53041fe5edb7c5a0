/* Log lines: time, level, service, message (context as key=value pairs in the message), as
 * text or as one JSON object per line (LOG_FORMAT=json). */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON };

/* service is copied; level is the minimum level written. Thread-safe after init. */
void log_init(const char *service, enum log_level level, enum log_format format);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* Parses "text", "json"; returns -1 when unknown. */
int log_format_parse(const char *s);
/* The request the calling thread works on (NULL: none): appended to its log lines as
 * req=<id> (JSON: "request_id") until cleared. id must stay valid until then. */
void log_set_request_id(const char *id);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line as log_write writes it (without the newline) into out (len bytes): the format, a
 * time stamp, the request id and the message given; for tests and log_write. In JSON the
 * message's account=<v> and event=<v> (or event_id=<v>) pairs also become the fields
 * "account" and "event_id". */
void log_format_line(char *out, size_t len, enum log_format format, const char *stamp,
                     enum log_level level, const char *request_id, const char *message);

#define log_debug(...) log_write(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __VA_ARGS__)

#endif
