/* Internals shared by the HTTP server's files (httpd.c: server and connection life cycle,
 * httpd_reply.c: what a handler reads and answers, httpd_limits.c: what a client may send,
 * httpd_park.c: parked read-your-writes requests and the ticker). Not for callers of httpd.h. */
#ifndef COMMON_HTTPD_PRIV_H
#define COMMON_HTTPD_PRIV_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "httpd.h"
#include "sbuf.h"

#define MAX_HEADERS 8
#define HEADERS_MAX_BYTES 8192  /* request headers beyond this: 431 with a JSON body */
#define HEADERS_MAX_COUNT 100
/* libmicrohttpd's per-connection pool holds the whole header block: past it, libmicrohttpd
 * answers 431 itself, in HTML, or closes. libmicrohttpd 0.9.75 zeroes the whole pool before
 * every request (MHD_pool_reset), so its size is paid on every request: a 1 MiB pool was 24%
 * of the writer's CPU, a 144 KiB one 12.6% of the read API's and 8.8% of the writer's, and the
 * read API served 70-77k requests/s under wrk with it against 112-117k with this one. So it is
 * sized for the legitimate bound (HEADERS_MAX_BYTES) with room for refuse_early's JSON 431 up
 * to 24 KiB of headers in up to 100 fields (test_httpd); larger header blocks get
 * libmicrohttpd's own 431. */
#define CONN_MEMORY (32 * 1024)
#define DRAIN_MAX (1024 * 1024)  /* body bytes dropped after a 413 before the connection closes */
#define TICK_MS 20
#define WAKE_RING 256 /* wake-ups remembered for a handler that is about to park */

enum { DEFER_NONE, DEFER_WAKE, DEFER_PARK }; /* http_response.deferred */
enum { PARK_NONE, PARK_PARKING, PARK_SUSPENDED, PARK_RESUME_EARLY }; /* conn_state.park */

struct http_response {
    int status;
    int deferred; /* DEFER_* */
    char request_id[REQID_MAX + 1];
    char *body;
    size_t body_len;
    const char *content_type;
    const char *route;
    int nheaders;
    char *hname[MAX_HEADERS];
    char *hvalue[MAX_HEADERS];
};

/* A connection, from accept to close: for the janitor's header deadline. */
struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    int64_t since_ms;  /* accepted, or its last request completed */
    int in_request;    /* headers of the current request are complete */
};

/* One request. */
struct conn_state {
    struct sbuf body;
    size_t dropped;
    int too_large;
    int begun;      /* the first handler call (headers complete) happened */
    int bad_uri;    /* a control byte, raw or %-encoded, in the request target */
    int waiting;    /* counts against max_waiters */
    int parked;
    int resumed;
    int64_t wake_at;
    uint64_t wake_key; /* http_defer_for's key hashed, 0: woken by every wake-up */
    struct MHD_Connection *conn;
    struct http_server *srv;
    int park;        /* PARK_*, under srv->mu: http_park's request from park to resume */
    int held;        /* parked by http_park once: counted in srv->nheld until completed */
    void *park_data; /* http_park's data, handed to the call after the resume */
    void (*park_drop)(void *data); /* park_data never handed over (the client went away) */
    struct conn_state *prev, *next; /* parked list */
    struct timespec started;
    int64_t started_ms;
    struct auth_principal who;
    char request_id[REQID_MAX + 1];
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_server_opts o;
    int can_defer;
    int can_suspend; /* an epoll pool: http_park works */
    pthread_mutex_t mu; /* the lists and counts below */
    struct conn_state *parked;
    struct conn_track *conns;
    int nwaiting;
    int nheld; /* http_park requests not yet completed (http_server_stop waits for them) */
    uint64_t wake_gen; /* wake-ups so far */
    struct {
        uint64_t gen, key; /* key 0: a wake-up of every parked request */
    } woke[WAKE_RING];     /* the last WAKE_RING wake-ups, at gen % WAKE_RING */
    int stopping;
    pthread_t ticker;
    int ticker_started;
    atomic_int ticker_stop;
};

/* What http_request.priv points at. */
struct req_priv {
    struct MHD_Connection *conn;
    struct conn_state *cs;
    struct http_server *srv;
};

/* httpd_reply.c: the response as libmicrohttpd queues it (request id stamped into error
 * bodies), and the response's own memory. */
enum MHD_Result http__send_response(struct MHD_Connection *conn, struct http_response *r);
void http__response_release(struct http_response *r);
/* Seconds since from (CLOCK_MONOTONIC). */
double http__elapsed(const struct timespec *from);

/* httpd_limits.c: the request's state, made from its raw target (libmicrohttpd's URI log
 * callback); what is refused before the body is read (true: resp holds the answer); the
 * header deadline, run by the ticker under srv->mu; the counters, 0 at start. */
void *http__on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
bool http__refuse_early(struct http_server *srv, struct MHD_Connection *conn, struct conn_state *cs,
                        struct http_response *resp);
void http__janitor_locked(struct http_server *srv, int64_t now);
void http__count_slow_closed(double v);

/* httpd_park.c: the ticker thread (wake-ups at wake_at, the janitor, the waiters gauge) and
 * the refused-waits counter. */
void *http__ticker_main(void *arg);
void http__count_waiter_refused(double v);
/* Whether a wake-up since wake_gen was gen concerns a request deferred on key (hashed; 0: none);
 * under srv->mu. */
bool http__woken_since_locked(const struct http_server *srv, uint64_t gen, uint64_t key);

#endif
