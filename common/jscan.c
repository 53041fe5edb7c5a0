/* A tree-free scanner of simple JSON objects (see jscan.h): false means "use the full parser". */
#include "jscan.h"

#include <string.h>

#define INT_DIGITS_MAX 18 /* below 2^63 whatever the digits: no overflow to judge */

struct scan {
    const char *p, *end;
    struct jscan *js;
};

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* One UTF-8 sequence starting at p (a byte >= 0x80) by jansson's rules: no overlong forms, no
 * surrogates, nothing above U+10FFFF. Its length, or 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned u = p[0];
    size_t n;
    uint32_t v;

    if (u >= 0xC2 && u <= 0xDF) {
        n = 2;
        v = u & 0x1F;
    } else if (u >= 0xE0 && u <= 0xEF) {
        n = 3;
        v = u & 0x0F;
    } else if (u >= 0xF0 && u <= 0xF4) {
        n = 4;
        v = u & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
        return 0;
    return n;
}

/* A string at s->p (on its opening quote) without escapes or control characters. */
static bool scan_string(struct scan *s, const char **str, size_t *len)
{
    const unsigned char *p = (const unsigned char *)s->p + 1, *end = (const unsigned char *)s->end;

    *str = (const char *)p;
    while (p < end) {
        unsigned c = *p;
        if (c == '"') {
            *len = (size_t)((const char *)p - *str);
            s->p = (const char *)p + 1;
            return true;
        }
        if (c == '\\' || c < 0x20)
            return false;
        if (c < 0x80) {
            p++;
        } else {
            size_t n = utf8_seq(p, end);
            if (n == 0)
                return false;
            p += n;
        }
    }
    return false;
}

static bool scan_int(struct scan *s, int64_t *out)
{
    const char *p = s->p;
    bool neg = false;
    int64_t v = 0;
    int digits = 0;

    if (p < s->end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= s->end || *p < '0' || *p > '9')
        return false;
    if (*p == '0') {
        p++; /* a leading zero is an error for jansson, "0" alone is 0 */
        if (p < s->end && *p >= '0' && *p <= '9')
            return false;
    } else {
        while (p < s->end && *p >= '0' && *p <= '9') {
            if (++digits > INT_DIGITS_MAX)
                return false;
            v = v * 10 + (*p++ - '0');
        }
    }
    if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return false; /* a real */
    *out = neg ? -v : v;
    s->p = p;
    return true;
}

static bool scan_word(struct scan *s, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool duplicate(const struct jscan *js, int parent, const char *key, size_t klen)
{
    for (int i = 0; i < js->n; i++)
        if (js->m[i].parent == parent && js->m[i].klen == klen && memcmp(js->m[i].key, key, klen) == 0)
            return true;
    return false;
}

/* The object at s->p (on its '{'); its members get parent. */
static bool scan_object(struct scan *s, int parent, int depth)
{
    struct jscan *js = s->js;

    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return true;
    }
    for (;;) {
        struct jscan_member *m;
        const char *key;
        size_t klen;
        int at;

        if (s->p >= s->end || *s->p != '"' || !scan_string(s, &key, &klen))
            return false;
        if (js->n >= JSCAN_MAX || duplicate(js, parent, key, klen))
            return false;
        at = js->n++;
        m = &js->m[at];
        memset(m, 0, sizeof *m);
        m->key = key;
        m->klen = klen;
        m->parent = parent;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return false;
        s->p++;
        skip_ws(s);
        if (s->p >= s->end)
            return false;
        switch (*s->p) {
        case '"':
            m->kind = JSCAN_STR;
            if (!scan_string(s, &m->str, &m->len))
                return false;
            break;
        case '{':
            m->kind = JSCAN_OBJ;
            if (depth >= JSCAN_DEPTH || !scan_object(s, at, depth + 1))
                return false;
            m = &js->m[at];
            break;
        case 'n':
            m->kind = JSCAN_NULL;
            if (!scan_word(s, "null"))
                return false;
            break;
        case 't':
            m->kind = JSCAN_TRUE;
            if (!scan_word(s, "true"))
                return false;
            break;
        case 'f':
            m->kind = JSCAN_FALSE;
            if (!scan_word(s, "false"))
                return false;
            break;
        default:
            m->kind = JSCAN_INT;
            if (!scan_int(s, &m->num))
                return false;
        }
        skip_ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == '}') {
            s->p++;
            return true;
        }
        if (*s->p != ',')
            return false;
        s->p++;
        skip_ws(s);
    }
}

bool jscan_parse(struct jscan *js, const char *buf, size_t len)
{
    struct scan s = {buf, buf + len, js};

    js->n = 0;
    if (buf == NULL)
        return false;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{' || !scan_object(&s, JSCAN_TOP, 1))
        return false;
    skip_ws(&s);
    return s.p == s.end;
}

const struct jscan_member *jscan_get(const struct jscan *js, int parent, const char *key)
{
    size_t klen = strlen(key);

    for (int i = 0; i < js->n; i++)
        if (js->m[i].parent == parent && js->m[i].klen == klen && memcmp(js->m[i].key, key, klen) == 0)
            return &js->m[i];
    return NULL;
}

int jscan_index(const struct jscan *js, const struct jscan_member *m)
{
    return (int)(m - js->m);
}
