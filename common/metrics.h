/* Process-wide metrics registry (counters, gauges, histograms with labels) in Prometheus text
 * format. Any module adds a series by calling an update with a new name or label set: there is
 * nothing to register first. Names follow the Prometheus conventions: base units in the name
 * (_seconds, _bytes), counters end in _total, gauges never do. Every series also carries
 * service="<name given to metrics_render>". */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include <stddef.h>

/* Most series the registry holds; updates of further series are dropped (and counted in
 * metrics_dropped_series_total). */
#define METRICS_MAX_SERIES 2048
#define METRICS_MAX_HISTOGRAMS 128
#define METRICS_LABELS_SIZE 160 /* labels text, e.g. type="deposit",result="ok" */
#define METRICS_MAX_BUCKETS 20

/* Label text: the inside of {...} without service, e.g. "type=\"deposit\",result=\"ok\"";
 * copied, NULL or "" for none. Values must not hold '"', '\\' or newlines (metrics_label_value
 * makes any string safe). name and help are static strings (their pointers are kept). */

/* Adds v to the counter name{labels} (name ends in _total). */
void metrics_counter_add(const char *name, const char *help, double v);
void metrics_counter_add_l(const char *name, const char *labels, const char *help, double v);
/* Sets the counter to v, for a count kept monotonic elsewhere. */
void metrics_counter_set(const char *name, const char *help, double v);
void metrics_counter_set_l(const char *name, const char *labels, const char *help, double v);
/* Sets the gauge name{labels}. */
void metrics_gauge_set(const char *name, const char *help, double v);
void metrics_gauge_set_l(const char *name, const char *labels, const char *help, double v);
/* Adds v (may be negative) to the gauge name{labels}. */
void metrics_gauge_add_l(const char *name, const char *labels, const char *help, double v);
/* Removes the series name{labels} (a partition no longer owned, say); no-op when absent. */
void metrics_remove_l(const char *name, const char *labels);

/* Observes v in the histogram name{labels}; bounds (static, ascending, at most
 * METRICS_MAX_BUCKETS) are the upper bounds of the buckets, +Inf is implied. */
void metrics_histogram_observe(const char *name, const char *labels, const char *help,
                               const double *bounds, int nbounds, double v);
/* Bucket bounds for latencies in seconds (0.5 ms .. 10 s). */
extern const double metrics_latency_bounds[];
extern const int metrics_latency_nbounds;

/* Counts one HTTP request: route is a static label ("GET /accounts/{id}"), seconds its latency. */
void metrics_http_observe(const char *route, int status, double seconds);

/* fn(ctx) runs at the start of every metrics_render (outside the registry lock), to set gauges
 * that are cheapest to read when scraped. At most 8; ctx must outlive the process's renders. */
void metrics_collector_add(void (*fn)(void *ctx), void *ctx);
/* Removes fn(ctx) again (the owner is going away). */
void metrics_collector_remove(void (*fn)(void *ctx), void *ctx);

/* Copies s into buf (len bytes) with the characters a label value may not hold replaced by
 * '_'; returns buf. */
char *metrics_label_value(char *buf, size_t len, const char *s);

/* The whole registry as Prometheus text; caller frees. NULL on allocation failure. */
char *metrics_render(const char *service);

/* Forgets every series (tests). */
void metrics_reset(void);

#endif
