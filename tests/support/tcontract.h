/* The response contract: checks an HTTP answer against docs/openapi.yaml (as the build's
 * openapi.json): its route and method, its status, the headers the document requires and the
 * body against the response's JSON schema. */
#ifndef TESTS_TCONTRACT_H
#define TESTS_TCONTRACT_H

#include <jansson.h>
#include <stddef.h>

/* The document from a JSON file (NULL: $CQRS_OPENAPI_JSON, else the openapi.json of the build
 * the running test belongs to); NULL with a message in err when it cannot be read. Caller
 * json_decref-s. */
json_t *tc_load(const char *path, char *err, size_t errlen);

/* One answer of server (the description of a server of the document: "writer", "read API";
 * NULL: any): method and target (a query is ignored), status, the raw header block ("Name:
 * value\r\n" lines, may be NULL), the body (may be NULL). An unknown route must be a 404 and a
 * known route without the method a 405, checked against the components' NotFound and
 * MethodNotAllowed responses. Returns 0, or -1 with every difference found (up to errlen) in
 * err, each naming where ($.field) and what the document says. */
int tc_check(const json_t *spec, const char *server, const char *method, const char *target, int status,
             const char *headers, const char *body, char *err, size_t errlen);

/* Validates a JSON value against a schema of spec (resolving its $refs); the subset of JSON
 * Schema the document uses: type (or a list), const, enum, properties, required,
 * additionalProperties, items, allOf, anyOf, oneOf, minimum, maximum, minLength, maxLength,
 * pattern. Differences are appended to err under the path where. Returns their number. */
int tc_validate(const json_t *spec, const json_t *schema, const json_t *value, const char *where, char *err,
                size_t errlen);

/* Every answer thttp_request gets from the stack's writer or read API (WRITER_URL, READAPI_URL)
 * is checked here when $CQRS_OPENAPI_JSON is set (ctest sets it); a difference is appended, one
 * line, to <STACK_DIR>/logs/contract-<test program>.log (emptied by the program's first
 * answer), which ctest contract_report lists after the suites. Thread-safe. */
void tc_record(const char *base, const char *method, const char *target, int status, const char *headers,
               const char *body);

#endif
