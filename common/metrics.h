/* Process-wide metrics (counters, gauges, HTTP request histograms) in Prometheus text format. */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

/* Counts one HTTP request: route is a static label ("GET /accounts/{id}"), seconds its latency. */
void metrics_http_observe(const char *route, int status, double seconds);
/* Adds v to the counter name (static string, must end in _total); help is a static string. */
void metrics_counter_add(const char *name, const char *help, double v);
/* Sets the counter name to v, for a count kept elsewhere (monotonic by its owner). */
void metrics_counter_set(const char *name, const char *help, double v);
/* Sets the gauge name (static string). */
void metrics_gauge_set(const char *name, const char *help, double v);
/* The whole registry as Prometheus text; caller frees. NULL on allocation failure. */
char *metrics_render(const char *service);

#endif
