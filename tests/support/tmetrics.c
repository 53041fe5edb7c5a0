/* Prometheus text exposition in tests: a parser of the format and exact-delta assertions. */
#include "tmetrics.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"

#define TM_MAX_LABELS 16
#define TM_KEY_SIZE 512

struct label {
    char name[64];
    char value[256];
};

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const struct label *)a)->name, ((const struct label *)b)->name);
}

static int is_name_char(int c, int first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Parses "name{labels}" from *p into key (canonical: labels sorted); advances *p past it.
 * Returns 0, or -1 with what went wrong in why. */
static int parse_series(const char **p, char *key, size_t len, const char **why)
{
    struct label l[TM_MAX_LABELS];
    const char *s = *p;
    char name[128];
    size_t n = 0, nl = 0, off;

    if (!is_name_char((unsigned char)*s, 1))
        return *why = "a metric name expected", -1;
    while (is_name_char((unsigned char)*s, 0) && n + 1 < sizeof name)
        name[n++] = *s++;
    name[n] = '\0';
    if (*s == '{') {
        s++;
        while (*s != '}') {
            size_t k = 0, v = 0;
            if (nl == TM_MAX_LABELS)
                return *why = "too many labels", -1;
            if (!is_name_char((unsigned char)*s, 1))
                return *why = "a label name expected", -1;
            while (is_name_char((unsigned char)*s, 0) && k + 1 < sizeof l[nl].name)
                l[nl].name[k++] = *s++;
            l[nl].name[k] = '\0';
            if (s[0] != '=' || s[1] != '"')
                return *why = "=\" expected after a label name", -1;
            s += 2;
            while (*s != '"') {
                char c = *s++;
                if (c == '\0' || c == '\n')
                    return *why = "unterminated label value", -1;
                if (c == '\\') {
                    c = *s++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return *why = "bad escape in a label value", -1;
                }
                if (v + 1 >= sizeof l[nl].value)
                    return *why = "label value too long", -1;
                l[nl].value[v++] = c;
            }
            l[nl].value[v] = '\0';
            s++;
            for (size_t i = 0; i < nl; i++)
                if (strcmp(l[i].name, l[nl].name) == 0)
                    return *why = "a label given twice", -1;
            nl++;
            if (*s == ',')
                s++;
            else if (*s != '}')
                return *why = ", or } expected after a label", -1;
        }
        s++;
    }
    qsort(l, nl, sizeof l[0], label_cmp);
    off = (size_t)snprintf(key, len, "%s", name);
    for (size_t i = 0; i < nl && off < len; i++) {
        off += (size_t)snprintf(key + off, len - off, "%s%s=\"", i == 0 ? "{" : ",", l[i].name);
        for (const char *c = l[i].value; *c != '\0' && off + 3 < len; c++) {
            if (*c == '"' || *c == '\\' || *c == '\n')
                key[off++] = '\\';
            key[off++] = *c == '\n' ? 'n' : *c;
        }
        off += (size_t)snprintf(key + off, len > off ? len - off : 0, "\"%s", i + 1 == nl ? "}" : "");
    }
    if (off >= len)
        return *why = "series too long", -1;
    *p = s;
    return 0;
}

char *tm_key(char *buf, size_t len, const char *series)
{
    const char *p = series, *why;
    return parse_series(&p, buf, len, &why) == 0 && *p == '\0' ? buf : NULL;
}

static int parse_value(const char *s, double *v)
{
    char *end;
    if (strncmp(s, "+Inf", 4) == 0 || strncmp(s, "Inf", 3) == 0)
        return *v = INFINITY, 0;
    if (strncmp(s, "-Inf", 4) == 0)
        return *v = -INFINITY, 0;
    if (strncmp(s, "NaN", 3) == 0)
        return *v = NAN, 0;
    *v = strtod(s, &end);
    if (end == s)
        return -1;
    while (*end == ' ')
        end++;
    while (isdigit((unsigned char)*end) || *end == '-') /* an optional timestamp */
        end++;
    return *end == '\0' || *end == '\n' ? 0 : -1;
}

int tm_parse(struct tm_scrape *out, const char *text, char *err, size_t errlen)
{
    size_t cap = 0, fcap = 0;
    int lineno = 0;

    memset(out, 0, sizeof *out);
    for (const char *line = text; *line != '\0'; lineno++) {
        const char *eol = strchr(line, '\n'), *p = line, *why = NULL;
        char key[TM_KEY_SIZE], buf[TM_KEY_SIZE];
        size_t ll = eol != NULL ? (size_t)(eol - line) : strlen(line);
        double v;

        if (ll >= sizeof buf) {
            why = "line too long";
            goto bad;
        }
        memcpy(buf, line, ll);
        buf[ll] = '\0';
        line += ll + (eol != NULL);
        p = buf;
        if (buf[0] == '\0')
            continue;
        if (buf[0] == '#') {
            char fam[128], type[32];
            if (sscanf(buf, "# TYPE %127s %31s", fam, type) == 2) {
                if (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0 && strcmp(type, "histogram") != 0 &&
                    strcmp(type, "summary") != 0 && strcmp(type, "untyped") != 0) {
                    why = "unknown type";
                    goto bad;
                }
                if (out->nfamily == fcap) {
                    fcap = fcap ? fcap * 2 : 32;
                    out->family = realloc(out->family, fcap * sizeof *out->family);
                }
                out->family[out->nfamily] = malloc(strlen(fam) + strlen(type) + 2);
                sprintf(out->family[out->nfamily++], "%s %s", fam, type);
            }
            continue;
        }
        if (parse_series(&p, key, sizeof key, &why) != 0)
            goto bad;
        if (*p != ' ') {
            why = "a space before the value expected";
            goto bad;
        }
        if (parse_value(p + 1, &v) != 0) {
            why = "a value expected";
            goto bad;
        }
        if (!isnan(tm_value(out, key))) {
            why = "a series given twice";
            goto bad;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            out->s = realloc(out->s, cap * sizeof *out->s);
        }
        out->s[out->n].key = strdup(key);
        out->s[out->n++].value = v;
        continue;
    bad:
        snprintf(err, errlen, "line %d: %s: %.120s", lineno + 1, why, buf);
        tm_release(out);
        return -1;
    }
    return 0;
}

void tm_release(struct tm_scrape *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->s[i].key);
    for (size_t i = 0; i < m->nfamily; i++)
        free(m->family[i]);
    free(m->s);
    free(m->family);
    memset(m, 0, sizeof *m);
}

/* Scrapes done per base URL: each is a GET /metrics the service counts in http_requests_total. */
static struct {
    char base[64];
    long n;
} scrapes[16];

long tm_scrapes(const char *base)
{
    for (int i = 0; i < 16; i++)
        if (strcmp(scrapes[i].base, base) == 0)
            return scrapes[i].n;
    return 0;
}

static void count_scrape(const char *base)
{
    for (int i = 0; i < 16; i++)
        if (strcmp(scrapes[i].base, base) == 0 || scrapes[i].base[0] == '\0') {
            snprintf(scrapes[i].base, sizeof scrapes[i].base, "%s", base);
            scrapes[i].n++;
            return;
        }
}

void tm_scrape(struct tm_scrape *out, const char *base)
{
    struct thttp_resp r;
    char err[256];

    count_scrape(base);
    if (thttp_request(&r, "GET", base, "/metrics", NULL, NULL, 5000) != 0 || r.status != 200)
        tfail("GET %s/metrics: status %d", base, r.status);
    if (tm_parse(out, r.body, err, sizeof err) != 0)
        tfail("%s/metrics does not parse: %s", base, err);
    thttp_resp_release(&r);
}

static const struct tm_sample *find(const struct tm_scrape *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->s[i].key, key) == 0)
            return &m->s[i];
    return NULL;
}

double tm_value(const struct tm_scrape *m, const char *series)
{
    char key[TM_KEY_SIZE];
    const struct tm_sample *s;

    if (tm_key(key, sizeof key, series) == NULL)
        tfail("not a series: %s", series);
    s = find(m, key);
    return s != NULL ? s->value : NAN;
}

double tm_delta(const struct tm_scrape *before, const struct tm_scrape *after, const char *series)
{
    double b = tm_value(before, series), a = tm_value(after, series);
    return isnan(a) ? NAN : a - (isnan(b) ? 0 : b);
}

const char *tm_family_type(const struct tm_scrape *m, const char *family)
{
    size_t n = strlen(family);
    for (size_t i = 0; i < m->nfamily; i++)
        if (strncmp(m->family[i], family, n) == 0 && m->family[i][n] == ' ')
            return m->family[i] + n + 1;
    return NULL;
}

/* Whether the sample key belongs to family (of the given type). */
static int of_family(const char *key, const char *family, const char *type)
{
    size_t n = strlen(family);
    const char *rest = key + n;

    if (strncmp(key, family, n) != 0)
        return 0;
    if (type != NULL && strcmp(type, "histogram") == 0) {
        if (strncmp(rest, "_bucket", 7) == 0)
            rest += 7;
        else if (strncmp(rest, "_sum", 4) == 0)
            rest += 4;
        else if (strncmp(rest, "_count", 6) == 0)
            rest += 6;
    }
    return *rest == '{' || *rest == '\0';
}

static double wanted(const struct tm_want *wants, const char *key, int *found)
{
    char k[TM_KEY_SIZE];
    for (const struct tm_want *w = wants; w != NULL && w->series != NULL; w++) {
        if (tm_key(k, sizeof k, w->series) == NULL)
            tfail("not a series: %s", w->series);
        if (strcmp(k, key) == 0)
            return (*found = 1), w->delta;
    }
    return (*found = 0), 0;
}

static int check_one(const struct tm_scrape *before, const struct tm_scrape *after, const char *key,
                     const struct tm_want *wants)
{
    const struct tm_sample *b = find(before, key), *a = find(after, key);
    int found;
    double want = wanted(wants, key, &found), got;

    if (a == NULL)
        tfail("%s: gone from the second scrape", key);
    got = a->value - (b != NULL ? b->value : 0);
    if (got != want)
        tfail("%s moved by %g, expected %g (%g -> %g)", key, got, want, b != NULL ? b->value : 0, a->value);
    return 1;
}

int tm_expect_family(const struct tm_scrape *before, const struct tm_scrape *after, const char *family,
                     const struct tm_want *wants)
{
    const char *type = tm_family_type(after, family);
    char key[TM_KEY_SIZE];
    int checked = 0;

    if (type == NULL)
        tfail("family %s is not in the scrape", family);
    for (size_t i = 0; i < after->n; i++)
        if (of_family(after->s[i].key, family, type))
            checked += check_one(before, after, after->s[i].key, wants);
    for (size_t i = 0; i < before->n; i++)
        if (of_family(before->s[i].key, family, type) && find(after, before->s[i].key) == NULL)
            tfail("%s: gone from the second scrape", before->s[i].key);
    /* every wanted series must exist (a want of a series nobody exported is a test bug) */
    for (const struct tm_want *w = wants; w != NULL && w->series != NULL; w++) {
        if (tm_key(key, sizeof key, w->series) == NULL || !of_family(key, family, type))
            tfail("%s is not a series of %s", w->series, family);
        if (find(after, key) == NULL)
            tfail("%s: not in the scrape", w->series);
    }
    fprintf(stderr, "  %s (%s): %d series moved as expected\n", family, type, checked);
    return checked;
}

void tm_expect_delta(const struct tm_scrape *before, const struct tm_scrape *after, const char *series,
                     double delta)
{
    double got = tm_delta(before, after, series);
    if (got != delta)
        tfail("%s moved by %g, expected %g", series, got, delta);
}

void tm_await(struct tm_scrape *after, const char *base, const struct tm_scrape *before, const char *series,
              double delta, int timeout_ms, int settle_ms)
{
    int64_t until = tnow_ms() + timeout_ms;
    double got = NAN;

    for (;;) {
        tm_scrape(after, base);
        got = tm_delta(before, after, series);
        if (!isnan(got) && got >= delta)
            break;
        tm_release(after);
        if (tnow_ms() > until)
            tfail("%s moved by %g within %d ms, expected %g", series, got, timeout_ms, delta);
        usleep(100 * 1000);
    }
    if (settle_ms > 0) {
        tm_release(after);
        usleep((useconds_t)settle_ms * 1000);
        tm_scrape(after, base);
    }
}

void tm_print_moves(const struct tm_scrape *before, const struct tm_scrape *after, const char *prefix)
{
    size_t pl = prefix != NULL ? strlen(prefix) : 0;
    for (size_t i = 0; i < after->n; i++) {
        const struct tm_sample *b = find(before, after->s[i].key);
        double d = after->s[i].value - (b != NULL ? b->value : 0);
        if (d != 0 && (pl == 0 || strncmp(after->s[i].key, prefix, pl) == 0) && strstr(after->s[i].key, "_bucket") == NULL)
            fprintf(stderr, "    moved %+g  %s\n", d, after->s[i].key);
    }
}

void tm_await_value(struct tm_scrape *m, const char *base, const char *series, double value, int timeout_ms)
{
    int64_t until = tnow_ms() + timeout_ms;
    for (;;) {
        tm_scrape(m, base);
        if (tm_value(m, series) == value)
            return;
        if (tnow_ms() > until)
            tfail("%s is %g after %d ms, expected %g", series, tm_value(m, series), timeout_ms, value);
        tm_release(m);
        usleep(100 * 1000);
    }
}
