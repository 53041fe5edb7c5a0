/* Typed, bounded reading of JSON objects. */
#include "jsonx.h"

#include <string.h>

#include "uuid.h"

status jsonx_str(const json_t *obj, const char *key, char *dst, size_t dstsz, size_t min_len,
                 size_t max_len, bool required, struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    size_t n;

    dst[0] = '\0';
    if (v == NULL || json_is_null(v)) {
        if (required)
            return err_setr(e, ST_INVALID, "invalid_field", "'%s' is required", key);
        return ST_NOT_FOUND;
    }
    if (!json_is_string(v))
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' must be a string", key);
    n = json_string_length(v);
    if (n > max_len || n + 1 > dstsz)
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' is longer than %zu bytes", key,
                        max_len);
    if (n < min_len)
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' must be at least %zu character%s", key,
                        min_len, min_len == 1 ? "" : "s");
    memcpy(dst, json_string_value(v), n);
    dst[n] = '\0';
    return ST_OK;
}

status jsonx_int(const json_t *obj, const char *key, int64_t *out, int64_t min, int64_t max,
                 bool required, struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    json_int_t n;

    if (v == NULL || json_is_null(v)) {
        if (required)
            return err_setr(e, ST_INVALID, "invalid_field", "'%s' is required", key);
        return ST_NOT_FOUND;
    }
    if (!json_is_integer(v))
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' must be an integer number of minor units",
                        key);
    n = json_integer_value(v);
    if (n < min || n > max)
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' must be between %lld and %lld", key,
                        (long long)min, (long long)max);
    *out = (int64_t)n;
    return ST_OK;
}

status jsonx_uuid(const json_t *obj, const char *key, char dst[37], bool required, struct err *e)
{
    const json_t *v = json_object_get(obj, key);

    dst[0] = '\0';
    if (v == NULL || json_is_null(v)) {
        if (required)
            return err_setr(e, ST_INVALID, "invalid_field", "'%s' is required", key);
        return ST_NOT_FOUND;
    }
    if (!json_is_string(v) || !uuid_parse(json_string_value(v), json_string_length(v), dst))
        return err_setr(e, ST_INVALID, "invalid_field", "'%s' must be a UUID", key);
    return ST_OK;
}

status jsonx_only(const json_t *obj, const char *const *allowed, struct err *e)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        (void)v;
        for (const char *const *a = allowed; *a != NULL; a++)
            if (strcmp(*a, key) == 0)
                ok = true;
        if (!ok)
            return err_setr(e, ST_INVALID, "invalid_field", "unknown field '%.64s'", key);
    }
    return ST_OK;
}

status jsonx_load_object(json_t **out, const char *buf, size_t len, struct err *e)
{
    json_error_t je;
    json_t *doc;

    *out = NULL;
    doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL) {
        /* well-formed JSON with a number past int64 is a field error, not a syntax error */
        if (strstr(je.text, "too big") != NULL)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "a number at line %d column %d is outside the 64-bit integer range",
                            je.line, je.column);
        return err_setr(e, ST_INVALID, "invalid_json", "malformed JSON at line %d column %d: %s",
                        je.line, je.column, je.text);
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        return err_setr(e, ST_INVALID, "invalid_json", "the body must be a JSON object");
    }
    *out = doc;
    return ST_OK;
}

char *jsonx_dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT);
}

char *jsonx_dump_decref(json_t *doc)
{
    char *s;

    if (doc == NULL)
        return NULL;
    s = jsonx_dump(doc);
    json_decref(doc);
    return s;
}

void jsonx_set_nonempty(json_t *obj, const char *key, const char *value)
{
    if (value[0] != '\0')
        json_object_set_new(obj, key, json_string(value));
}
