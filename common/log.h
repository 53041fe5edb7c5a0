/* Log lines: time, level, service, message (context as key=value pairs in the message). */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

/* service is copied; level is the minimum level written. Thread-safe after init. */
void log_init(const char *service, enum log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* The request the calling thread works on (NULL: none): appended to its log lines as
 * req=<id> until cleared. id must stay valid until then. */
void log_set_request_id(const char *id);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __VA_ARGS__)

#endif
