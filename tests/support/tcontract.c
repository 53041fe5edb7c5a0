/* The response contract check: an answer against the OpenAPI document's route, status, headers
 * and JSON schema (the subset of JSON Schema the document uses). */
#include "tcontract.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "support.h"

json_t *tc_load(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc;

    char exe[PATH_MAX], guess[PATH_MAX + 32];

    if (path == NULL)
        path = getenv("CQRS_OPENAPI_JSON");
    if (path == NULL) {
        /* run by hand or by `make valgrind` (no ctest environment): the build's own document,
         * <build>/openapi.json from <build>/tests/unit/<test> or <build>/tests/<test> */
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash;
        if (n <= 0) {
            snprintf(err, errlen, "CQRS_OPENAPI_JSON is not set (the build's openapi.json)");
            return NULL;
        }
        exe[n] = '\0';
        slash = strstr(exe, "/tests/");
        if (slash == NULL) {
            snprintf(err, errlen, "CQRS_OPENAPI_JSON is not set and %s is not under <build>/tests", exe);
            return NULL;
        }
        *slash = '\0';
        snprintf(guess, sizeof guess, "%s/openapi.json", exe);
        path = guess;
    }
    doc = json_load_file(path, 0, &je);
    if (doc == NULL)
        snprintf(err, errlen, "%s: %s (line %d)", path, je.text, je.line);
    return doc;
}

/* Appends one difference to err. */
static void note(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *err, size_t errlen, const char *fmt, ...)
{
    size_t n = strlen(err);
    va_list ap;

    if (n + 4 >= errlen)
        return;
    if (n > 0) {
        snprintf(err + n, errlen - n, "; ");
        n += 2;
    }
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - n, fmt, ap);
    va_end(ap);
}

/* The target of a local $ref ("#/components/schemas/X"), NULL when it does not resolve. */
static const json_t *resolve(const json_t *spec, const char *ref)
{
    const json_t *at = spec;
    char part[128];

    if (strncmp(ref, "#/", 2) != 0)
        return NULL;
    for (const char *p = ref + 2; at != NULL && *p != '\0';) {
        size_t n = 0;
        while (*p != '\0' && *p != '/' && n + 1 < sizeof part) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                part[n++] = p[1] == '0' ? '~' : '/';
                p += 2;
            } else {
                part[n++] = *p++;
            }
        }
        part[n] = '\0';
        if (*p == '/')
            p++;
        at = json_object_get(at, part);
    }
    return at;
}

/* Follows $ref chains of an object (a schema, a response, a header). */
static const json_t *deref(const json_t *spec, const json_t *node)
{
    for (int i = 0; i < 16 && json_is_object(node); i++) {
        const char *ref = json_string_value(json_object_get(node, "$ref"));
        if (ref == NULL)
            return node;
        node = resolve(spec, ref);
    }
    return node;
}

static int is_type(const json_t *v, const char *type)
{
    if (strcmp(type, "integer") == 0)
        return json_is_integer(v);
    if (strcmp(type, "number") == 0)
        return json_is_number(v);
    if (strcmp(type, "string") == 0)
        return json_is_string(v);
    if (strcmp(type, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(type, "object") == 0)
        return json_is_object(v);
    if (strcmp(type, "array") == 0)
        return json_is_array(v);
    if (strcmp(type, "null") == 0)
        return json_is_null(v);
    return 0;
}

static const char *kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

int tc_validate(const json_t *spec, const json_t *schema, const json_t *value, const char *where, char *err,
                size_t errlen)
{
    const json_t *t, *props, *req, *addl, *sub;
    const char *key;
    json_t *v;
    size_t i;
    int bad = 0;
    char at[256];

    schema = deref(spec, schema);
    if (schema == NULL) {
        note(err, errlen, "%s: a $ref of the document does not resolve", where);
        return 1;
    }
    if (json_is_true(schema) || !json_is_object(schema))
        return 0;
    t = json_object_get(schema, "type");
    if (json_is_string(t) && !is_type(value, json_string_value(t))) {
        note(err, errlen, "%s: %s, the document says %s", where, kind(value), json_string_value(t));
        return 1;
    }
    if (json_is_array(t)) {
        int ok = 0;
        json_array_foreach(t, i, v) ok = ok || is_type(value, json_string_value(v));
        if (!ok) {
            note(err, errlen, "%s: %s, not one of the document's types", where, kind(value));
            return 1;
        }
    }
    if ((sub = json_object_get(schema, "const")) != NULL && !json_equal(sub, value)) {
        char *s = json_dumps(value, JSON_ENCODE_ANY), *w = json_dumps(sub, JSON_ENCODE_ANY);
        note(err, errlen, "%s: %s, the document says %s", where, s, w);
        free(s);
        free(w);
        bad++;
    }
    if ((sub = json_object_get(schema, "enum")) != NULL) {
        int ok = 0;
        json_array_foreach(sub, i, v) ok = ok || json_equal(v, value);
        if (!ok) {
            char *s = json_dumps(value, JSON_ENCODE_ANY);
            note(err, errlen, "%s: %s is not in the document's enum", where, s);
            free(s);
            bad++;
        }
    }
    if (json_is_number(value)) {
        double d = json_number_value(value);
        if ((sub = json_object_get(schema, "minimum")) != NULL && d < json_number_value(sub))
            note(err, errlen, "%s: %g is below the minimum %g", where, d, json_number_value(sub)), bad++;
        if ((sub = json_object_get(schema, "maximum")) != NULL && d > json_number_value(sub))
            note(err, errlen, "%s: %g is above the maximum %g", where, d, json_number_value(sub)), bad++;
    }
    if (json_is_string(value)) {
        size_t n = utf8_len(json_string_value(value));
        if ((sub = json_object_get(schema, "minLength")) != NULL && n < (size_t)json_integer_value(sub))
            note(err, errlen, "%s: %zu characters, fewer than %lld", where, n, (long long)json_integer_value(sub)), bad++;
        if ((sub = json_object_get(schema, "maxLength")) != NULL && n > (size_t)json_integer_value(sub))
            note(err, errlen, "%s: %zu characters, more than %lld", where, n, (long long)json_integer_value(sub)), bad++;
        if ((sub = json_object_get(schema, "pattern")) != NULL) {
            regex_t re;
            if (regcomp(&re, json_string_value(sub), REG_EXTENDED | REG_NOSUB) != 0) {
                note(err, errlen, "%s: the document's pattern %s does not compile", where, json_string_value(sub));
                bad++;
            } else {
                if (regexec(&re, json_string_value(value), 0, NULL, 0) != 0)
                    note(err, errlen, "%s: \"%.80s\" does not match %s", where, json_string_value(value),
                         json_string_value(sub)), bad++;
                regfree(&re);
            }
        }
    }
    if (json_is_object(value)) {
        props = json_object_get(schema, "properties");
        req = json_object_get(schema, "required");
        addl = json_object_get(schema, "additionalProperties");
        json_array_foreach(req, i, v) {
            if (json_object_get(value, json_string_value(v)) == NULL) {
                note(err, errlen, "%s: the required field \"%s\" is missing", where, json_string_value(v));
                bad++;
            }
        }
        json_object_foreach((json_t *)value, key, v) {
            const json_t *ps = json_object_get(props, key);
            snprintf(at, sizeof at, "%s.%s", where, key);
            if (ps != NULL)
                bad += tc_validate(spec, ps, v, at, err, errlen);
            else if (json_is_false(addl))
                note(err, errlen, "%s: a field the document does not have", at), bad++;
            else if (json_is_object(addl))
                bad += tc_validate(spec, addl, v, at, err, errlen);
        }
    }
    if (json_is_array(value) && (sub = json_object_get(schema, "items")) != NULL) {
        json_array_foreach(value, i, v) {
            snprintf(at, sizeof at, "%s[%zu]", where, i);
            bad += tc_validate(spec, sub, v, at, err, errlen);
        }
    }
    if ((sub = json_object_get(schema, "allOf")) != NULL) {
        json_array_foreach(sub, i, v) bad += tc_validate(spec, v, value, where, err, errlen);
    }
    if ((sub = json_object_get(schema, "anyOf")) != NULL || (sub = json_object_get(schema, "oneOf")) != NULL) {
        int matched = 0;
        char scratch[512];
        json_array_foreach(sub, i, v) {
            scratch[0] = '\0';
            matched += tc_validate(spec, v, value, where, scratch, sizeof scratch) == 0;
        }
        if (json_object_get(schema, "oneOf") != NULL ? matched != 1 : matched == 0)
            note(err, errlen, "%s: matches %d of the document's alternatives", where, matched), bad++;
    }
    return bad;
}

/* Whether target's path (before '?') matches the template; *params counts its {...} parts. */
static int path_matches(const char *tmpl, const char *target, int *params)
{
    const char *t = tmpl, *p = target;

    *params = 0;
    while (*t != '\0') {
        if (*t == '{') {
            const char *close = strchr(t, '}');
            if (close == NULL || *p == '\0' || *p == '/' || *p == '?')
                return 0;
            while (*p != '\0' && *p != '/' && *p != '?')
                p++;
            t = close + 1;
            (*params)++;
        } else if (*t++ != *p++) {
            return 0;
        }
    }
    return *p == '\0' || *p == '?';
}

/* Whether the raw header block has the header name. */
static int has_header(const char *headers, const char *name)
{
    size_t n = strlen(name);
    if (headers == NULL)
        return 0;
    for (const char *l = headers; l != NULL && *l != '\0'; l = strstr(l, "\n"), l = l != NULL ? l + 1 : NULL)
        if (strncasecmp(l, name, n) == 0 && l[n] == ':')
            return 1;
    return 0;
}

static int check_response(const json_t *spec, const json_t *resp, const char *what, const char *headers,
                          const char *body, int with_body, char *err, size_t errlen)
{
    const json_t *hdrs, *content, *media, *h;
    const char *name;
    int bad = 0;

    resp = deref(spec, resp);
    if (resp == NULL) {
        note(err, errlen, "%s: the document's response does not resolve", what);
        return 1;
    }
    hdrs = json_object_get(resp, "headers");
    json_object_foreach((json_t *)hdrs, name, h) {
        const json_t *hd = deref(spec, h);
        if (json_is_true(json_object_get(hd, "required")) && !has_header(headers, name))
            note(err, errlen, "%s: the required header %s is missing", what, name), bad++;
    }
    content = json_object_get(resp, "content");
    if (!with_body || content == NULL || json_object_size(content) == 0)
        return bad; /* HEAD: no body to check */
    media = json_object_get(content, "application/json");
    if (media == NULL)
        return bad; /* text (metrics): nothing more the document says */
    {
        json_error_t je;
        json_t *doc = body != NULL ? json_loads(body, JSON_DECODE_ANY, &je) : NULL;
        if (doc == NULL) {
            note(err, errlen, "%s: the body is not JSON: %.80s", what, body != NULL ? body : "(none)");
            return bad + 1;
        }
        bad += tc_validate(spec, json_object_get(media, "schema"), doc, "$", err, errlen);
        json_decref(doc);
    }
    return bad;
}

/* The operation of a path item for method on server (an operation naming other servers is not
 * there); NULL when none. */
static const json_t *operation(const json_t *item, const char *method, const char *server)
{
    const json_t *op = json_object_get(item, method), *servers, *sv;
    size_t i;
    int listed = 0;

    if (op == NULL || server == NULL || (servers = json_object_get(op, "servers")) == NULL)
        return op;
    json_array_foreach(servers, i, sv) {
        const char *d = json_string_value(json_object_get(sv, "description"));
        listed = listed || (d != NULL && strcmp(d, server) == 0);
    }
    return listed ? op : NULL;
}

int tc_check(const json_t *spec, const char *server, const char *method, const char *target, int status,
             const char *headers, const char *body, char *err, size_t errlen)
{
    const json_t *paths = json_object_get(spec, "paths"), *item = NULL, *op, *responses, *resp, *pi;
    const char *tmpl, *best = NULL;
    char lower[16], code[8], what[300];
    int best_params = 1 << 20, params;
    size_t i;

    err[0] = '\0';
    json_object_foreach((json_t *)paths, tmpl, pi) {
        if (path_matches(tmpl, target, &params) && params < best_params) {
            best = tmpl;
            best_params = params;
            item = pi;
        }
    }
    snprintf(what, sizeof what, "%s %.200s -> %d", method, target, status);
    snprintf(code, sizeof code, "%d", status);
    for (i = 0; method[i] != '\0' && i + 1 < sizeof lower; i++)
        lower[i] = (char)(method[i] | 0x20);
    lower[i] = '\0';
    op = item != NULL ? operation(item, strcmp(lower, "head") == 0 ? "get" : lower, server) : NULL;
    /* refused before routing (x-every-route): unless the operation documents the status itself */
    resp = json_object_get(json_object_get(spec, "x-every-route"), code);
    if (resp != NULL && json_object_get(json_object_get(op, "responses"), code) == NULL)
        return check_response(spec, resp, what, headers, body, strcmp(lower, "head") != 0, err, errlen) > 0 ? -1 : 0;
    if (item == NULL) {
        if (status != 404) {
            note(err, errlen, "%s: no route of the document, and not a 404", what);
            return -1;
        }
        return check_response(spec, resolve(spec, "#/components/responses/NotFound"), what, headers, body, 1,
                              err, errlen) > 0 ? -1 : 0;
    }
    if (op == NULL) {
        if (status != 405) {
            note(err, errlen, "%s: %s has no %s%s%s in the document, and not a 405", what, best, method,
                 server != NULL ? " on the " : "", server != NULL ? server : "");
            return -1;
        }
        return check_response(spec, resolve(spec, "#/components/responses/MethodNotAllowed"), what, headers, body,
                              1, err, errlen) > 0 ? -1 : 0;
    }
    responses = json_object_get(op, "responses");
    resp = json_object_get(responses, code);
    if (resp == NULL)
        resp = json_object_get(responses, "default");
    if (resp == NULL) {
        note(err, errlen, "%s: status %d is not documented for %s %s", what, status, method, best);
        return -1;
    }
    snprintf(what, sizeof what, "%s %s -> %d", method, best, status);
    return check_response(spec, resp, what, headers, body, strcmp(lower, "head") != 0, err, errlen) > 0
               ? -1
               : 0;
}

/* ---- every answer the suites get: recorded against the document ---- */

static struct {
    json_t *spec;
    const char *writer, *readapi;
    int fd;
} rec = {NULL, NULL, NULL, -1};

static void record_init(void)
{
    char err[256], path[512];
    const char *dir = tenv("STACK_DIR");

    if (getenv("CQRS_OPENAPI_JSON") == NULL || dir == NULL)
        return;
    rec.spec = tc_load(NULL, err, sizeof err);
    if (rec.spec == NULL) {
        fprintf(stderr, "contract: %s: answers are not checked\n", err);
        return;
    }
    rec.writer = tenv("WRITER_URL");
    rec.readapi = tenv("READAPI_URL");
    snprintf(path, sizeof path, "%s/logs/contract-%s.log", dir, program_invocation_short_name);
    rec.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
}

void tc_record(const char *base, const char *method, const char *target, int status, const char *headers,
               const char *body)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *server;
    char err[1024], line[1400];
    int n;

    pthread_once(&once, record_init);
    if (rec.fd < 0)
        return;
    if (rec.writer != NULL && strcmp(base, rec.writer) == 0)
        server = "writer";
    else if (rec.readapi != NULL && strcmp(base, rec.readapi) == 0)
        server = "read API";
    else
        return; /* a second instance, the projector: not the stack's two APIs */
    if (tc_check(rec.spec, server, method, target, status, headers, body, err, sizeof err) == 0)
        return;
    n = snprintf(line, sizeof line, "%s: %s %s %.200s -> %d: %s\n", program_invocation_short_name, server, method,
                 target, status, err);
    if (n > 0)
        (void)!write(rec.fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1); /* one append */
}
