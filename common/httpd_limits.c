/* What a client may send: the request target (no control bytes), the size and count of the
 * header block, a body's announced length, and the header deadline that closes connections
 * whose request headers arrive too slowly (slowloris). */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "httpd_priv.h"
#include "metrics.h"
#include "svc.h"

void http__count_slow_closed(double v)
{
    metrics_counter_add("http_slow_connections_closed_total",
                        "Connections closed because their request headers came too slowly.", v);
}

/* Header deadline: a connection whose request headers are not complete within the timeout
 * (slowloris) is shut down; libmicrohttpd then sees the end of the stream and closes it. The
 * fd stays libmicrohttpd's, so it cannot be reused under us. */
void http__janitor_locked(struct http_server *srv, int64_t now)
{
    int64_t limit = (int64_t)srv->o.timeout_s * 1000;

    for (struct conn_track *t = srv->conns; t != NULL; t = t->next) {
        if (!t->in_request && t->fd >= 0 && now - t->since_ms > limit) {
            shutdown(t->fd, SHUT_RDWR);
            t->fd = -1;
            http__count_slow_closed(1);
        }
    }
}

static bool control_in_target(const char *uri)
{
    for (const unsigned char *p = (const unsigned char *)uri; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return true;
        if (*p == '%' && p[1] != '\0' && p[2] != '\0') {
            char hex[3] = {(char)p[1], (char)p[2], '\0'};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == '\0' && (v < 0x20 || v == 0x7f))
                return true;
        }
    }
    return false;
}

/* Called with the raw request target, before libmicrohttpd decodes %00 into a NUL that would
 * silently cut the path: its result becomes the request's state. */
void *http__on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct conn_state *cs = calloc(1, sizeof *cs);

    if (cs == NULL)
        return NULL;
    cs->conn = conn;
    cs->srv = cls;
    cs->bad_uri = uri == NULL || control_in_target(uri);
    clock_gettime(CLOCK_MONOTONIC, &cs->started);
    cs->started_ms = svc_mono_ms();
    return cs;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    size_t *sum = cls;

    (void)kind;
    sum[0] += strlen(key) + (value != NULL ? strlen(value) : 0) + 4;
    sum[1]++;
    return MHD_YES;
}

/* First call, headers complete: what can be refused before any body is read. */
bool http__refuse_early(struct http_server *srv, struct MHD_Connection *conn, struct conn_state *cs,
                         struct http_response *resp)
{
    size_t sum[2] = {0, 0};
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, sum);
    if (sum[0] > HEADERS_MAX_BYTES || sum[1] > HEADERS_MAX_COUNT) {
        http_set_route(resp, "headers_too_large");
        http_reply_error(resp, 431, "headers_too_large",
                         "the request headers exceed %d bytes or %d fields", HEADERS_MAX_BYTES,
                         HEADERS_MAX_COUNT);
        return true;
    }
    if (cs->bad_uri) {
        http_set_route(resp, "invalid_path");
        http_reply_error(resp, 400, "invalid_path",
                         "the request target contains a control character");
        return true;
    }
    if (cl != NULL && strtoull(cl, NULL, 10) > srv->o.max_body) {
        /* answered before the body is read; libmicrohttpd closes the connection after it */
        http_set_route(resp, "body_too_large");
        http_reply_error(resp, 413, "body_too_large", "the request body exceeds %zu bytes",
                         srv->o.max_body);
        return true;
    }
    return false;
}
