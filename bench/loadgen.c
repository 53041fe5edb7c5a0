/* HTTP load generator for the benchmarks: keep-alive clients, closed loop or fixed rate, and the
 * command -> read-your-write latency (e2e). Loopback only; every run is bounded in time.
 *
 *   loadgen load --url http://127.0.0.1:P --path '/accounts/{id}/deposits' [--method POST]
 *                [--body '{"amount":1}'] [--ids FILE] [--conns 32] [--duration 10] [--rate 0]
 *                [--keyed 1]   (each request with an Idempotency-Key of its own)
 *   loadgen e2e  --url WRITER --read-url READAPI --ids FILE [--rate 2000] [--lanes 48]
 *                [--duration 10]
 *
 * Every connection is opened before the timed run starts (as a client with a connection pool
 * keeps them): the first requests of a run do not carry TCP handshakes and accepts (in e2e
 * runs at 2,000/s, 96 connects in the first 50 ms put a quarter of the run's slowest 1% in
 * its first 100 ms). A connection the server closes is opened again inside the run.
 *
 * Prints one line of key=value figures (rps, p50_ms, p99_ms, ...). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_IDS 200000
#define RESP_MAX (256 * 1024)

static char (*ids)[40];
static int nids;
static const char *opt_url, *opt_read_url, *opt_path = "/", *opt_method = "GET", *opt_body;
static int opt_conns = 32, opt_lanes = 48;
static const char *auth_token; /* $API_TOKEN (the stack's admin token), sent when set */
static double opt_duration = 10, opt_rate;
static int opt_keyed; /* --keyed: a fresh Idempotency-Key per request */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    int64_t d = t - now_ns();
    if (d > 0) {
        struct timespec ts = {.tv_sec = d / 1000000000LL, .tv_nsec = d % 1000000000LL};
        nanosleep(&ts, NULL);
    }
}

/* ---- a minimal keep-alive HTTP/1.1 client ---- */

struct conn {
    struct sockaddr_in addr;
    int fd;
    char buf[RESP_MAX];
    size_t have; /* bytes of the next response already read */
};

static int parse_url(struct sockaddr_in *a, const char *url)
{
    char host[64];
    int port;

    if (sscanf(url, "http://%63[^:]:%d", host, &port) != 2)
        return -1;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static int conn_open(struct conn *c)
{
    int one = 1;
    struct timeval tv = {.tv_sec = 10};

    c->have = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&c->addr, sizeof c->addr) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

/* One request; returns the status (0 on a transport failure) and the body in c->buf (NUL
 * terminated, *body points into it). Reconnects once when a kept-alive connection was closed. */
static int conn_request(struct conn *c, const char *method, const char *path, const char *body,
                        const char *key, const char **out_body)
{
    char req[2048];
    size_t blen = body != NULL ? strlen(body) : 0;

    for (int attempt = 0; attempt < 2; attempt++) {
        int n, status = 0;
        size_t hdr_end = 0, clen = 0;
        char *p;

        if (c->fd < 0 && conn_open(c) != 0)
            return 0;
        n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "%s%s%s%s%s%sContent-Length: %zu\r\n\r\n%s",
                     method, path, auth_token != NULL ? "Authorization: Bearer " : "",
                     auth_token != NULL ? auth_token : "", auth_token != NULL ? "\r\n" : "",
                     key != NULL ? "Idempotency-Key: " : "", key != NULL ? key : "", key != NULL ? "\r\n" : "",
                     blen, body != NULL ? body : "");
        c->have = 0; /* before the send: a failed one retries on a new connection */
        if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
            goto reconnect;
        for (;;) {
            ssize_t r;
            if (hdr_end == 0) {
                c->buf[c->have] = '\0';
                p = strstr(c->buf, "\r\n\r\n");
                if (p != NULL) {
                    char *cl;
                    hdr_end = (size_t)(p - c->buf) + 4;
                    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
                        goto reconnect;
                    cl = strcasestr(c->buf, "\r\nContent-Length:");
                    clen = cl != NULL && cl < p ? strtoul(cl + 17, NULL, 10) : 0;
                }
            }
            if (hdr_end != 0 && c->have >= hdr_end + clen)
                break;
            if (c->have >= sizeof c->buf - 1)
                goto reconnect;
            r = recv(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have, 0);
            if (r <= 0)
                goto reconnect;
            c->have += (size_t)r;
        }
        c->buf[hdr_end + clen] = '\0';
        if (out_body != NULL)
            *out_body = c->buf + hdr_end;
        return status;
    reconnect:
        close(c->fd);
        c->fd = -1;
        if (c->have > 0)
            return 0; /* a response started and broke: not safe to resend */
    }
    return 0;
}

/* ---- latency samples ---- */

struct samples {
    double *v;
    size_t n, cap;
};

static void samples_add(struct samples *s, double ms)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (s->v == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const struct samples *s, double p)
{
    size_t i;
    if (s->n == 0)
        return 0;
    i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

static void samples_merge(struct samples *into, const struct samples *from)
{
    for (size_t i = 0; i < from->n; i++)
        samples_add(into, from->v[i]);
}

/* ---- workers ---- */

struct worker {
    pthread_t th;
    int index, count; /* fixed rate: this worker's share of the schedule */
    uint64_t rng;
    struct conn *wc, *rc;
    struct samples lat, lat2;
    long ok, errors, not_yet;
};

static int64_t t_start, t_end;

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

static void fill_path(char *out, size_t len, const char *tmpl, const char *id)
{
    const char *p = strstr(tmpl, "{id}");
    if (p == NULL || id == NULL)
        snprintf(out, len, "%s", tmpl);
    else
        snprintf(out, len, "%.*s%s%s", (int)(p - tmpl), tmpl, id, p + 4);
}

/* The time of this worker's k-th request on a fixed-rate schedule (0 rate: now). */
static int64_t scheduled(const struct worker *w, long k)
{
    double interval_ns = 1e9 / opt_rate;
    return t_start + (int64_t)(((double)k * w->count + w->index) * interval_ns);
}

static void *load_main(void *arg)
{
    struct worker *w = arg;
    char path[512], key[64];

    for (long k = 0;; k++) {
        int64_t t0 = opt_rate > 0 ? scheduled(w, k) : now_ns();
        int status;
        if (t0 >= t_end)
            break;
        if (opt_rate > 0)
            sleep_until(t0);
        fill_path(path, sizeof path, opt_path, nids > 0 ? ids[rnd(&w->rng) % (uint64_t)nids] : NULL);
        /* unique per run, worker and request: every keyed request is a first use */
        snprintf(key, sizeof key, "lg-%d-%lld-%d-%ld", (int)getpid(), (long long)t_start, w->index, k);
        status = conn_request(w->wc, opt_method, path, opt_body, opt_keyed ? key : NULL, NULL);
        /* latency from the scheduled start: a stalled server is not hidden (no coordinated omission) */
        if (status >= 200 && status < 300) {
            w->ok++;
            samples_add(&w->lat, (double)(now_ns() - t0) / 1e6);
        } else {
            w->errors++;
        }
    }
    return NULL;
}

static long json_int(const char *body, const char *key)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = body != NULL ? strstr(body, pat) : NULL;
    return p != NULL ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* A deposit, then the read API asked for that version: latency from the 2xx of the command to
 * the 200 of the read (lat), and of the command itself (lat2). */
static void *e2e_main(void *arg)
{
    struct worker *w = arg;
    char path[512];

    for (long k = 0;; k++) {
        int64_t t0 = scheduled(w, k), t1;
        const char *body = NULL;
        const char *id = ids[rnd(&w->rng) % (uint64_t)nids];
        long version;
        int status;

        if (t0 >= t_end)
            break;
        sleep_until(t0);
        snprintf(path, sizeof path, "/accounts/%s/deposits", id);
        status = conn_request(w->wc, "POST", path, "{\"amount\":1,\"description\":\"e2e\"}", NULL, &body);
        t1 = now_ns();
        version = status == 201 ? json_int(body, "version") : -1;
        if (version < 1) {
            w->errors++;
            continue;
        }
        samples_add(&w->lat2, (double)(t1 - t0) / 1e6);
        snprintf(path, sizeof path, "/accounts/%s?min_version=%ld&wait_ms=5000", id, version);
        status = conn_request(w->rc, "GET", path, NULL, NULL, &body);
        if (status != 200) {
            w->not_yet++;
            continue;
        }
        w->ok++;
        samples_add(&w->lat, (double)(now_ns() - t1) / 1e6);
    }
    return NULL;
}

static void load_ids(const char *file)
{
    FILE *f = fopen(file, "r");
    char line[128];

    if (f == NULL) {
        fprintf(stderr, "loadgen: unable to open '%s'\n", file);
        exit(2);
    }
    ids = calloc(MAX_IDS, sizeof *ids);
    while (ids != NULL && nids < MAX_IDS && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != '\0')
            snprintf(ids[nids++], sizeof ids[0], "%.39s", line);
    }
    fclose(f);
    if (nids == 0) {
        fprintf(stderr, "loadgen: no ids in '%s'\n", file);
        exit(2);
    }
}

static struct conn *conn_new(const char *url)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL || parse_url(&c->addr, url) != 0) {
        fprintf(stderr, "loadgen: bad url '%s' (http://127.0.0.1:PORT)\n", url);
        exit(2);
    }
    c->fd = -1;
    return c;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int e2e = strcmp(mode, "e2e") == 0, n;
    struct worker *ws;
    struct samples all = {0}, all2 = {0};
    long ok = 0, errors = 0, not_yet = 0;

    auth_token = getenv("API_TOKEN");
    if (auth_token != NULL && auth_token[0] == '\0')
        auth_token = NULL;
    double secs;

    if (!e2e && strcmp(mode, "load") != 0) {
        fprintf(stderr, "usage: loadgen load|e2e [options] (see the header of bench/loadgen.c)\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--url") == 0) opt_url = v;
        else if (strcmp(k, "--read-url") == 0) opt_read_url = v;
        else if (strcmp(k, "--path") == 0) opt_path = v;
        else if (strcmp(k, "--method") == 0) opt_method = v;
        else if (strcmp(k, "--body") == 0) opt_body = v;
        else if (strcmp(k, "--ids") == 0) load_ids(v);
        else if (strcmp(k, "--conns") == 0) opt_conns = atoi(v);
        else if (strcmp(k, "--lanes") == 0) opt_lanes = atoi(v);
        else if (strcmp(k, "--duration") == 0) opt_duration = atof(v);
        else if (strcmp(k, "--rate") == 0) opt_rate = atof(v);
        else if (strcmp(k, "--keyed") == 0) opt_keyed = atoi(v);
        else {
            fprintf(stderr, "loadgen: unknown option '%s'\n", k);
            return 2;
        }
    }
    if (opt_url == NULL || (e2e && (opt_read_url == NULL || nids == 0 || opt_rate <= 0)) ||
        opt_duration <= 0 || opt_duration > 600) {
        fprintf(stderr, "loadgen: --url (and for e2e --read-url, --ids, --rate) needed; duration 0..600 s\n");
        return 2;
    }
    n = e2e ? opt_lanes : opt_conns;
    ws = calloc((size_t)n, sizeof *ws);
    for (int i = 0; i < n; i++) {
        ws[i].index = i;
        ws[i].count = n;
        ws[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
        ws[i].wc = conn_new(opt_url);
        ws[i].rc = e2e ? conn_new(opt_read_url) : NULL;
        /* opened now, before the clock starts (a failure here is tried again by the request) */
        (void)conn_open(ws[i].wc);
        if (ws[i].rc != NULL)
            (void)conn_open(ws[i].rc);
    }
    t_start = now_ns() + 50000000LL;
    t_end = t_start + (int64_t)(opt_duration * 1e9);
    for (int i = 0; i < n; i++)
        pthread_create(&ws[i].th, NULL, e2e ? e2e_main : load_main, &ws[i]);
    for (int i = 0; i < n; i++) {
        pthread_join(ws[i].th, NULL);
        ok += ws[i].ok;
        errors += ws[i].errors;
        not_yet += ws[i].not_yet;
        samples_merge(&all, &ws[i].lat);
        samples_merge(&all2, &ws[i].lat2);
    }
    secs = (double)(now_ns() - t_start) / 1e9;
    qsort(all.v, all.n, sizeof *all.v, cmp_double);
    qsort(all2.v, all2.n, sizeof *all2.v, cmp_double);
    printf("ok=%ld errors=%ld rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f", ok, errors,
           (double)ok / secs, pct(&all, 0.5), pct(&all, 0.99), all.n ? all.v[all.n - 1] : 0.0);
    if (e2e)
        printf(" not_yet=%ld cmd_p50_ms=%.3f cmd_p99_ms=%.3f", not_yet, pct(&all2, 0.5), pct(&all2, 0.99));
    printf("\n");
    return 0;
}
