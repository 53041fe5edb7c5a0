/* Prometheus text exposition in tests: parse a scrape, look series up by name and labels in any
 * order, and assert what moved between two scrapes (exact deltas, per labelled series). */
#ifndef TESTS_TMETRICS_H
#define TESTS_TMETRICS_H

#include <stddef.h>

/* One sample: its series key (name{k="v",...} with the labels sorted by name) and value. */
struct tm_sample {
    char *key;
    double value;
};
/* One scrape: the samples and the families its # TYPE lines declare. */
struct tm_scrape {
    struct tm_sample *s;
    size_t n;
    char **family; /* "name type" strings */
    size_t nfamily;
};

/* Parses exposition text into out (release with tm_release). Returns 0, or -1 with a message in
 * err (line number and what is wrong) for a malformed line. */
int tm_parse(struct tm_scrape *out, const char *text, char *err, size_t errlen);
void tm_release(struct tm_scrape *m);
/* GET base/metrics with the stack's admin token and parse it; fails the test otherwise. */
void tm_scrape(struct tm_scrape *out, const char *base);

/* How many scrapes of base this process made (tm_scrape, tm_await): the GET /metrics the
 * service counts in http_requests_total. */
long tm_scrapes(const char *base);

/* The canonical key of series ("name" or "name{labels}" in any label order) into buf; returns
 * buf, or NULL when series does not parse. */
char *tm_key(char *buf, size_t len, const char *series);
/* Value of series (NAN when absent). service="..." must be given like any other label. */
double tm_value(const struct tm_scrape *m, const char *series);
/* after - before of series, a series absent before counting as 0; NAN when absent after. */
double tm_delta(const struct tm_scrape *before, const struct tm_scrape *after, const char *series);
/* Type of a declared family ("counter", "gauge", "histogram"), NULL when not declared. */
const char *tm_family_type(const struct tm_scrape *m, const char *family);

/* What a series of a family must have moved by. */
struct tm_want {
    const char *series;
    double delta;
};
/* Fails the test unless every series of family (for a histogram: its _bucket, _sum and _count
 * series) moved between before and after by exactly the delta wants give it (a list ended by
 * {NULL, 0}), and every other series of the family by 0. Returns the number of series checked. */
int tm_expect_family(const struct tm_scrape *before, const struct tm_scrape *after, const char *family,
                     const struct tm_want *wants);
/* Fails the test unless series moved by exactly delta. */
void tm_expect_delta(const struct tm_scrape *before, const struct tm_scrape *after, const char *series,
                     double delta);
/* Scrapes base until series has moved from before by at least delta (fails after timeout_ms),
 * then waits settle_ms and scrapes once more into after, so an overshoot shows. */
void tm_await(struct tm_scrape *after, const char *base, const struct tm_scrape *before, const char *series,
              double delta, int timeout_ms, int settle_ms);
/* Prints (stderr) every series whose key starts with prefix (NULL: any) that moved, buckets
 * left out: what a test saw, for its log. */
void tm_print_moves(const struct tm_scrape *before, const struct tm_scrape *after, const char *prefix);

/* Scrapes base into m until series equals value (gauges refreshed by a timer), at most
 * timeout_ms; fails the test with the last value otherwise. */
void tm_await_value(struct tm_scrape *m, const char *base, const char *series, double value, int timeout_ms);

#endif
