/* A small blocking HTTP/1.1 client for tests, benchmarks and the demo's checks. */
#ifndef TESTS_THTTP_H
#define TESTS_THTTP_H

#include <jansson.h>
#include <stddef.h>

struct thttp_resp {
    int status;        /* 0 when no response arrived */
    char *body;        /* NUL-terminated, owned (thttp_resp_release) */
    size_t body_len;
    char headers[8192]; /* raw header block, NUL-terminated */
};

/* One request on a fresh connection to base ("http://127.0.0.1:18080"). extra_headers: NULL or
 * "Name: value\r\n..." lines. body may be NULL. timeout_ms bounds connect, send and receive.
 * Returns 0 when a response was read, -1 otherwise (out->status 0). */
int thttp_request(struct thttp_resp *out, const char *method, const char *base, const char *path,
                  const char *body, const char *extra_headers, int timeout_ms);
/* The stack's API_TOKEN (admin) is sent unless extra_headers carry an Authorization. */
/* As thttp_request with auth_line ("Authorization: ...\r\n", "" or NULL: none) as given. */
int thttp_request_as(struct thttp_resp *out, const char *method, const char *base, const char *path,
                     const char *body, const char *extra_headers, const char *auth_line,
                     int timeout_ms);
/* Sends data_len raw bytes (a whole request, possibly malformed) on a fresh connection to base
 * and reads the answer until the server closes or timeout_ms passes; a server that answers
 * early and closes is read all the same. Returns 0 when a response was read (out as above). */
int thttp_exchange(struct thttp_resp *out, const char *base, const char *data, size_t data_len,
                   int timeout_ms);
void thttp_resp_release(struct thttp_resp *r);
/* A loopback TCP port free at the moment of the call (for a server a test starts itself). */
int thttp_free_port(void);
/* Fails the test when an error body (doc) names what belongs in the log only: a store's host
 * or port, an SQL state, a library's words. what: the request, for the failure message. */
void thttp_assert_no_internals(const char *what, const json_t *doc);
/* Parsed body (new reference) or NULL. */
json_t *thttp_json(const struct thttp_resp *r);
/* Value of a response header (case-insensitive) copied into buf; returns buf or NULL. */
const char *thttp_header(const struct thttp_resp *r, const char *name, char *buf, size_t len);

#endif
