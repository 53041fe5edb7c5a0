/* A fixed-size metrics registry: families (name, help, type) and their labelled series in a
 * hash table, so an update costs one lock and one lookup and never allocates. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 256
#define HASH_SIZE (METRICS_MAX_SERIES * 2) /* open addressing, at most half full */
#define MAX_COLLECTORS 8

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM };

struct family {
    const char *name;
    const char *help;
    enum kind kind;
};

struct hist {
    const double *bounds;
    int nbounds;
    unsigned long long bucket[METRICS_MAX_BUCKETS]; /* not cumulative: rendering sums */
    unsigned long long count;
    double sum;
};

struct series {
    int family;
    int removed; /* a removed series keeps its slot (open addressing) until it comes back */
    char labels[METRICS_LABELS_SIZE];
    double value;
    int hist; /* index into hists, K_HISTOGRAM only */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct family families[MAX_FAMILIES];
static int nfamilies;
static struct series series[METRICS_MAX_SERIES];
static int nseries;
static int slots[HASH_SIZE]; /* series index + 1; 0 = empty */
static struct hist hists[METRICS_MAX_HISTOGRAMS];
static int nhists;
static unsigned long long dropped;
static struct {
    void (*fn)(void *);
    void *ctx;
} collectors[MAX_COLLECTORS];

const double metrics_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,   5,    10};
const int metrics_latency_nbounds = (int)(sizeof metrics_latency_bounds / sizeof metrics_latency_bounds[0]);

static uint32_t hash(const char *name, const char *labels)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '{') * 16777619u;
    for (const char *p = labels; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static int family_get(const char *name, const char *help, enum kind kind)
{
    for (int i = 0; i < nfamilies; i++)
        if (families[i].name == name || strcmp(families[i].name, name) == 0)
            return families[i].kind == kind ? i : -1;
    if (nfamilies == MAX_FAMILIES)
        return -1;
    families[nfamilies] = (struct family){name, help, kind};
    return nfamilies++;
}

/* The series name{labels}, created when create is set; NULL when absent or the registry is
 * full. Called with mu held. */
static struct series *lookup(const char *name, const char *labels, const char *help, enum kind kind,
                             int create)
{
    uint32_t h;
    int fam;

    if (labels == NULL)
        labels = "";
    h = hash(name, labels) % HASH_SIZE;
    for (;; h = (h + 1) % HASH_SIZE) {
        struct series *s;
        if (slots[h] == 0)
            break;
        s = &series[slots[h] - 1];
        if (strcmp(families[s->family].name, name) == 0 && strcmp(s->labels, labels) == 0) {
            if (families[s->family].kind != kind)
                return NULL;
            if (s->removed && create) {
                s->removed = 0;
                s->value = 0;
                if (s->hist >= 0)
                    memset(&hists[s->hist], 0, sizeof hists[s->hist]);
            }
            return s->removed ? NULL : s;
        }
    }
    if (!create)
        return NULL;
    if (nseries == METRICS_MAX_SERIES || strlen(labels) >= METRICS_LABELS_SIZE ||
        (kind == K_HISTOGRAM && nhists == METRICS_MAX_HISTOGRAMS) ||
        (fam = family_get(name, help, kind)) < 0) {
        dropped++;
        return NULL;
    }
    series[nseries] = (struct series){.family = fam, .hist = -1};
    strcpy(series[nseries].labels, labels);
    if (kind == K_HISTOGRAM)
        series[nseries].hist = nhists++;
    slots[h] = ++nseries;
    return &series[nseries - 1];
}

enum op { OP_ADD, OP_SET };

static void update(const char *name, const char *labels, const char *help, enum kind kind, enum op op,
                   double v)
{
    struct series *s;

    pthread_mutex_lock(&mu);
    s = lookup(name, labels, help, kind, 1);
    if (s != NULL)
        s->value = op == OP_ADD ? s->value + v : v;
    pthread_mutex_unlock(&mu);
}

void metrics_counter_add(const char *name, const char *help, double v)
{
    update(name, NULL, help, K_COUNTER, OP_ADD, v);
}

void metrics_counter_add_l(const char *name, const char *labels, const char *help, double v)
{
    update(name, labels, help, K_COUNTER, OP_ADD, v);
}

void metrics_counter_set(const char *name, const char *help, double v)
{
    update(name, NULL, help, K_COUNTER, OP_SET, v);
}

void metrics_counter_set_l(const char *name, const char *labels, const char *help, double v)
{
    update(name, labels, help, K_COUNTER, OP_SET, v);
}

void metrics_gauge_set(const char *name, const char *help, double v)
{
    update(name, NULL, help, K_GAUGE, OP_SET, v);
}

void metrics_gauge_set_l(const char *name, const char *labels, const char *help, double v)
{
    update(name, labels, help, K_GAUGE, OP_SET, v);
}

void metrics_gauge_add_l(const char *name, const char *labels, const char *help, double v)
{
    update(name, labels, help, K_GAUGE, OP_ADD, v);
}

void metrics_remove_l(const char *name, const char *labels)
{
    pthread_mutex_lock(&mu);
    for (int k = 0; k < 3; k++) {
        struct series *s = lookup(name, labels, NULL, (enum kind)k, 0);
        if (s != NULL)
            s->removed = 1;
    }
    pthread_mutex_unlock(&mu);
}

void metrics_histogram_observe(const char *name, const char *labels, const char *help,
                               const double *bounds, int nbounds, double v)
{
    struct series *s;

    if (nbounds > METRICS_MAX_BUCKETS)
        nbounds = METRICS_MAX_BUCKETS;
    pthread_mutex_lock(&mu);
    s = lookup(name, labels, help, K_HISTOGRAM, 1);
    if (s != NULL) {
        struct hist *h = &hists[s->hist];
        if (h->bounds == NULL) {
            h->bounds = bounds;
            h->nbounds = nbounds;
        }
        for (int b = 0; b < h->nbounds; b++)
            if (v <= h->bounds[b]) {
                h->bucket[b]++;
                break;
            }
        h->count++;
        h->sum += v;
    }
    pthread_mutex_unlock(&mu);
}

void metrics_http_observe(const char *route, int status, double seconds)
{
    char labels[METRICS_LABELS_SIZE], r[96];

    metrics_label_value(r, sizeof r, route != NULL ? route : "other");
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", r, status);
    metrics_counter_add_l("http_requests_total", labels, "HTTP requests by route and status.", 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", r);
    metrics_histogram_observe("http_request_duration_seconds", labels, "HTTP request latency.",
                              metrics_latency_bounds, metrics_latency_nbounds, seconds);
}

void metrics_collector_add(void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (collectors[i].fn == NULL) {
            collectors[i].fn = fn;
            collectors[i].ctx = ctx;
            break;
        }
    pthread_mutex_unlock(&mu);
}

void metrics_collector_remove(void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (collectors[i].fn == fn && collectors[i].ctx == ctx)
            collectors[i].fn = NULL;
    pthread_mutex_unlock(&mu);
}

char *metrics_label_value(char *buf, size_t len, const char *s)
{
    size_t i = 0;

    if (len == 0)
        return buf;
    for (; s != NULL && s[i] != '\0' && i + 1 < len; i++)
        buf[i] = s[i] == '"' || s[i] == '\\' || s[i] == '\n' ? '_' : s[i];
    buf[i] = '\0';
    return buf;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&mu);
    nfamilies = nseries = nhists = 0;
    dropped = 0;
    memset(slots, 0, sizeof slots);
    memset(hists, 0, sizeof hists);
    pthread_mutex_unlock(&mu);
}

struct buf {
    char *p;
    size_t len, cap;
    int failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        char *np = realloc(b->p, b->cap * 2 + (size_t)n);
        if (np == NULL) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = b->cap * 2 + (size_t)n;
    }
}

/* service="x" plus the series' labels plus extra (for le), as the text inside {...}. */
static void put_labels(struct buf *b, const char *service, const char *labels, const char *extra)
{
    put(b, "{service=\"%s\"%s%s%s}", service, labels[0] != '\0' ? "," : "", labels, extra);
}

static void put_value(struct buf *b, double v)
{
    if (v == (double)(long long)v && v < 9e15 && v > -9e15)
        put(b, " %lld\n", (long long)v);
    else
        put(b, " %.17g\n", v);
}

static void render_family(struct buf *b, const char *service, int f)
{
    const struct family *fam = &families[f];
    static const char *const types[] = {"counter", "gauge", "histogram"};
    int any = 0;

    for (int i = 0; i < nseries; i++) {
        const struct series *s = &series[i];
        if (s->family != f || s->removed)
            continue;
        if (!any) {
            put(b, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help != NULL ? fam->help : fam->name,
                fam->name, types[fam->kind]);
            any = 1;
        }
        if (fam->kind != K_HISTOGRAM) {
            put(b, "%s", fam->name);
            put_labels(b, service, s->labels, "");
            put_value(b, s->value);
            continue;
        }
        {
            const struct hist *h = &hists[s->hist];
            unsigned long long cum = 0;
            char le[48];
            for (int k = 0; k < h->nbounds; k++) {
                cum += h->bucket[k];
                snprintf(le, sizeof le, ",le=\"%g\"", h->bounds[k]);
                put(b, "%s_bucket", fam->name);
                put_labels(b, service, s->labels, le);
                put(b, " %llu\n", cum);
            }
            put(b, "%s_bucket", fam->name);
            put_labels(b, service, s->labels, ",le=\"+Inf\"");
            put(b, " %llu\n", h->count);
            put(b, "%s_sum", fam->name);
            put_labels(b, service, s->labels, "");
            put(b, " %.9g\n", h->sum);
            put(b, "%s_count", fam->name);
            put_labels(b, service, s->labels, "");
            put(b, " %llu\n", h->count);
        }
    }
}

char *metrics_render(const char *service)
{
    struct buf b = {malloc(16384), 0, 16384, 0};
    void (*fns[MAX_COLLECTORS])(void *);
    void *ctxs[MAX_COLLECTORS];

    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_COLLECTORS; i++) {
        fns[i] = collectors[i].fn;
        ctxs[i] = collectors[i].ctx;
    }
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < MAX_COLLECTORS; i++)
        if (fns[i] != NULL)
            fns[i](ctxs[i]);
    pthread_mutex_lock(&mu);
    for (int f = 0; f < nfamilies; f++)
        render_family(&b, service, f);
    put(&b, "# HELP metrics_dropped_series_total Updates dropped because the metrics registry was full.\n");
    put(&b, "# TYPE metrics_dropped_series_total counter\n");
    put(&b, "metrics_dropped_series_total{service=\"%s\"} %llu\n", service, dropped);
    pthread_mutex_unlock(&mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
