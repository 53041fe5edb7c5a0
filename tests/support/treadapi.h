/* Read API test helpers: GETs with the status checked, contract errors, /metrics values. */
#ifndef TESTS_TREADAPI_H
#define TESTS_TREADAPI_H

#include <jansson.h>
#include <stddef.h>

/* GET base (NULL: the stack's READAPI_URL) + path; fails the test when no response arrives.
 * The status into *status, the Retry-After header into retry_after (may be NULL; "" when
 * absent). Returns the body parsed (new reference), NULL when it is not JSON. */
json_t *tr_get(const char *base, const char *path, int *status, char *retry_after, size_t ra_len);
/* GET that must answer 200 with a JSON body; returns it (new reference). */
json_t *tr_get_ok(const char *base, const char *path);
/* method base (NULL: READAPI_URL) + path must answer status with a JSON error body: "error"
 * equal to code (any code when NULL) and a non-empty "message". _body: with a request body. */
void tr_expect_error(const char *method, const char *base, const char *path, int status, const char *code);
void tr_expect_error_body(const char *method, const char *base, const char *path, const char *body,
                          int status, const char *code);

/* Value of a series of base's (NULL: READAPI_URL) /metrics, as written before its value (name and labels:
 * "redis_errors_total{service=\"readapi\"}"); -1 when absent. Fails the test when /metrics
 * does not answer. */
double thttp_metric(const char *base, const char *series);

#endif
