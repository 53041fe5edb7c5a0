/* A small fixed-size metrics registry: enough series for our services, no allocation per update. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROUTES 64
#define MAX_SERIES 64

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,   5,    10};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct route_stat {
    const char *route;
    int status;
    unsigned long long count;
};

struct route_hist {
    const char *route;
    unsigned long long bucket[NBUCKETS];
    unsigned long long count;
    double sum;
};

struct series {
    const char *name;
    const char *help;
    int gauge;
    double value;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct route_stat stats[MAX_ROUTES * 4];
static int nstats;
static struct route_hist hists[MAX_ROUTES];
static int nhists;
static struct series series[MAX_SERIES];
static int nseries;

void metrics_http_observe(const char *route, int status, double seconds)
{
    int i;

    if (route == NULL)
        route = "other";
    pthread_mutex_lock(&mu);
    for (i = 0; i < nstats; i++)
        if (stats[i].status == status && strcmp(stats[i].route, route) == 0)
            break;
    if (i == nstats && nstats < (int)(sizeof stats / sizeof stats[0]))
        stats[nstats++] = (struct route_stat){route, status, 0};
    if (i < nstats)
        stats[i].count++;
    for (i = 0; i < nhists; i++)
        if (strcmp(hists[i].route, route) == 0)
            break;
    if (i == nhists && nhists < MAX_ROUTES)
        hists[nhists++].route = route;
    if (i < nhists) {
        for (size_t b = 0; b < NBUCKETS; b++)
            if (seconds <= buckets[b])
                hists[i].bucket[b]++;
        hists[i].count++;
        hists[i].sum += seconds;
    }
    pthread_mutex_unlock(&mu);
}

enum series_op { OP_ADD, OP_SET_COUNTER, OP_SET_GAUGE };

static void series_update(const char *name, const char *help, enum series_op op, double v)
{
    int i;

    pthread_mutex_lock(&mu);
    for (i = 0; i < nseries; i++)
        if (strcmp(series[i].name, name) == 0)
            break;
    if (i == nseries && nseries < MAX_SERIES)
        series[nseries++] = (struct series){name, help, op == OP_SET_GAUGE, 0};
    if (i < nseries) {
        if (op == OP_ADD)
            series[i].value += v;
        else
            series[i].value = v;
    }
    pthread_mutex_unlock(&mu);
}

void metrics_counter_add(const char *name, const char *help, double v)
{
    series_update(name, help, OP_ADD, v);
}

void metrics_counter_set(const char *name, const char *help, double v)
{
    series_update(name, help, OP_SET_COUNTER, v);
}

void metrics_gauge_set(const char *name, const char *help, double v)
{
    series_update(name, help, OP_SET_GAUGE, v);
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

char *metrics_render(const char *service)
{
    struct buf b = {malloc(4096), 0, 4096, 0};

    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&mu);
    put(&b, "# HELP http_requests_total HTTP requests by route and status.\n");
    put(&b, "# TYPE http_requests_total counter\n");
    for (int i = 0; i < nstats; i++)
        put(&b, "http_requests_total{service=\"%s\",route=\"%s\",status=\"%d\"} %llu\n", service,
            stats[i].route, stats[i].status, stats[i].count);
    put(&b, "# HELP http_request_duration_seconds HTTP request latency.\n");
    put(&b, "# TYPE http_request_duration_seconds histogram\n");
    for (int i = 0; i < nhists; i++) {
        for (size_t k = 0; k < NBUCKETS; k++)
            put(&b, "http_request_duration_seconds_bucket{service=\"%s\",route=\"%s\",le=\"%g\"} %llu\n",
                service, hists[i].route, buckets[k], hists[i].bucket[k]);
        put(&b, "http_request_duration_seconds_bucket{service=\"%s\",route=\"%s\",le=\"+Inf\"} %llu\n",
            service, hists[i].route, hists[i].count);
        put(&b, "http_request_duration_seconds_sum{service=\"%s\",route=\"%s\"} %.6f\n", service,
            hists[i].route, hists[i].sum);
        put(&b, "http_request_duration_seconds_count{service=\"%s\",route=\"%s\"} %llu\n", service,
            hists[i].route, hists[i].count);
    }
    for (int i = 0; i < nseries; i++) {
        put(&b, "# HELP %s %s\n# TYPE %s %s\n", series[i].name, series[i].help, series[i].name,
            series[i].gauge ? "gauge" : "counter");
        put(&b, "%s{service=\"%s\"} %.17g\n", series[i].name, service, series[i].value);
    }
    pthread_mutex_unlock(&mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
