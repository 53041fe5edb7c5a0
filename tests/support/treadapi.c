/* Read API test helpers: GETs with the status checked, contract errors, /metrics values. */
#include "treadapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "thttp.h"

static const char *readapi_base(const char *base)
{
    return base != NULL ? base : tenv("READAPI_URL");
}

json_t *tr_get(const char *base, const char *path, int *status, char *retry_after, size_t ra_len)
{
    struct thttp_resp r;
    json_t *doc;

    base = readapi_base(base);
    if (thttp_request(&r, "GET", base, path, NULL, NULL, 15000) != 0)
        tfail("GET %s%.200s: no response", base, path);
    *status = r.status;
    if (retry_after != NULL && thttp_header(&r, "Retry-After", retry_after, ra_len) == NULL)
        retry_after[0] = '\0';
    doc = thttp_json(&r);
    thttp_resp_release(&r);
    return doc;
}

json_t *tr_get_ok(const char *base, const char *path)
{
    struct thttp_resp r;
    json_t *doc;

    base = readapi_base(base);
    if (thttp_request(&r, "GET", base, path, NULL, NULL, 15000) != 0)
        tfail("GET %s%.200s: no response", base, path);
    if (r.status != 200)
        tfail("GET %.200s: status %d, expected 200: %.500s", path, r.status, r.body);
    doc = thttp_json(&r);
    if (doc == NULL)
        tfail("GET %.200s: body is not JSON: %.500s", path, r.body);
    thttp_resp_release(&r);
    return doc;
}

void tr_expect_error_body(const char *method, const char *base, const char *path, const char *body,
                          int status, const char *code)
{
    struct thttp_resp r;
    json_t *doc;
    const char *error, *message;

    base = readapi_base(base);
    if (thttp_request(&r, method, base, path, body, NULL, 15000) != 0)
        tfail("%s %.200s: no response", method, path);
    if (r.status != status)
        tfail("%s %.200s: status %d, expected %d: %.500s", method, path, r.status, status, r.body);
    doc = thttp_json(&r);
    error = json_string_value(json_object_get(doc, "error"));
    message = json_string_value(json_object_get(doc, "message"));
    if (doc == NULL || error == NULL || message == NULL || message[0] == '\0')
        tfail("%s %.200s: %d without a JSON error and message: %.500s", method, path, r.status, r.body);
    if (code != NULL && strcmp(error, code) != 0)
        tfail("%s %.200s: error %s, expected %s", method, path, error, code);
    thttp_assert_no_internals(path, doc);
    json_decref(doc);
    thttp_resp_release(&r);
}

void tr_expect_error(const char *method, const char *base, const char *path, int status, const char *code)
{
    tr_expect_error_body(method, base, path, NULL, status, code);
}

double thttp_metric(const char *base, const char *series)
{
    struct thttp_resp r;
    char key[512];
    const char *line;
    double v = -1;

    base = readapi_base(base);
    snprintf(key, sizeof key, "%s ", series);
    if (thttp_request(&r, "GET", base, "/metrics", NULL, NULL, 5000) != 0)
        tfail("GET %s/metrics: no response", base);
    if (r.status != 200)
        tfail("GET %s/metrics: status %d", base, r.status);
    /* the series at the start of a line, not the tail of a longer name */
    for (line = strstr(r.body, key); line != NULL; line = strstr(line + 1, key))
        if (line == r.body || line[-1] == '\n') {
            v = atof(line + strlen(key));
            break;
        }
    thttp_resp_release(&r);
    return v;
}
