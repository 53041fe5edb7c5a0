/* Rebuild test helpers: commands with output, Redis questions, load and watcher threads. */
#include <pthread.h>

#include "trebuild.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "support.h"
#include "thttp.h"
#include "twriter.h"

int trb_run(const char *binary, const char *const *args, char **out)
{
    int fds[2], wst = 0;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    pid_t pid;

    if (buf == NULL)
        tfail("out of memory");
    /* close-on-exec: the child keeps only its stdout and stderr on the pipe */
    if (pipe2(fds, O_CLOEXEC) != 0)
        tfail("pipe: %s", strerror(errno));
    pid = tsvc_spawn(binary, args, NULL, fds[1]);
    close(fds[1]);
    for (;;) {
        ssize_t n;
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        n = read(fds[0], buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fds[0]);
    waitpid(pid, &wst, 0);
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
}

int trb_wait(pid_t pid, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;
    int wst = 0;

    /* at least once: a timeout of 0 asks whether it has exited already */
    do {
        pid_t r = waitpid(pid, &wst, WNOHANG);
        if (r == pid)
            return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
        if (timeout_ms > 0)
            usleep(20000);
    } while (tnow_ms() < deadline);
    return -1;
}

static long reply_long(redisReply *r)
{
    long v = 0;

    if (r == NULL)
        tfail("redis: no reply");
    if (r->type == REDIS_REPLY_STRING)
        v = atol(r->str);
    else if (r->type == REDIS_REPLY_INTEGER)
        v = (long)r->integer;
    freeReplyObject(r);
    return v;
}

long trb_get(redisContext *rc, const char *key)
{
    return reply_long(redisCommand(rc, "GET %s", key));
}

long trb_hget(redisContext *rc, const char *key, const char *field)
{
    return reply_long(redisCommand(rc, "HGET %s %s", key, field));
}

void trb_load_open(struct trb_load *l, int n, int rate_per_s)
{
    memset(l, 0, sizeof *l);
    l->n = n;
    l->rate_per_s = rate_per_s;
    l->ids = calloc((size_t)n, sizeof *l->ids);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "load %d %lld", i, (long long)tnow_ms());
        tw_open(l->ids[i], "rebuild-load", name, "EUR", 0);
    }
}

static void *load_main(void *arg)
{
    struct trb_load *l = arg;
    int64_t t0 = tnow_ms();

    while (!l->stop) {
        json_t *r = tw_money(l->ids[l->sent % l->n], "deposits", 100 + l->sent % 7, "steady load");
        json_decref(r);
        l->sent++;
        /* a steady rate: sleep until the next slot */
        {
            int64_t due = t0 + l->sent * 1000 / l->rate_per_s, now = tnow_ms();
            if (due > now)
                usleep((useconds_t)(due - now) * 1000);
        }
    }
    return NULL;
}

void trb_load_start(struct trb_load *l)
{
    l->stop = 0;
    if (pthread_create(&l->thread, NULL, load_main, l) != 0)
        tfail("load thread");
}

void trb_load_stop(struct trb_load *l)
{
    l->stop = 1;
    pthread_join(l->thread, NULL);
}

static void problem(struct trb_watch *w, const char *what, const char *id, int status, const char *body)
{
    if (w->first_problem[0] == '\0')
        snprintf(w->first_problem, sizeof w->first_problem, "%s: %s %d %s", id, what, status,
                 body != NULL ? body : "");
}

static void *watch_main(void *arg)
{
    struct trb_watch *w = arg;

    for (long k = 0; !w->stop; k++) {
        int i = (int)(k % w->n);
        char path[128];
        struct thttp_resp r;
        json_t *doc;

        snprintf(path, sizeof path, "/accounts/%s", w->ids[i]);
        w->requests++;
        if (thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000) != 0) {
            w->errors++;
            problem(w, "no response", w->ids[i], 0, NULL);
            thttp_resp_release(&r);
            continue;
        }
        doc = thttp_json(&r);
        if (r.status == 200) {
            int64_t v = (int64_t)json_integer_value(json_object_get(doc, "version"));
            w->ok++;
            if (v < w->seen[i]) {
                w->regressions++;
                problem(w, "version went back from", w->ids[i], (int)w->seen[i], r.body);
            } else {
                w->seen[i] = v;
            }
        } else if (r.status == 503 && strcmp(json_string_value(json_object_get(doc, "error")) ? json_string_value(json_object_get(doc, "error")) : "", "read_model_unavailable") == 0) {
            w->unavailable++;
            problem(w, "status", w->ids[i], r.status, r.body);
        } else if (r.status >= 500) {
            w->other_5xx++;
            problem(w, "status", w->ids[i], r.status, r.body);
        } else if (r.status == 404 && w->seen[i] == 0) {
            w->not_yet++; /* opened a moment ago and not projected yet: no answer was taken back */
        } else if (r.status == 404) {
            w->not_found++;
            problem(w, "status", w->ids[i], r.status, r.body);
        } else {
            w->errors++;
            problem(w, "status", w->ids[i], r.status, r.body);
        }
        json_decref(doc);
        thttp_resp_release(&r);
    }
    return NULL;
}

void trb_watch_start(struct trb_watch *w, int n, char (*ids)[UUID_STR_SIZE])
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->ids = ids;
    w->seen = calloc((size_t)n, sizeof *w->seen);
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0)
        tfail("watch thread");
}

void trb_watch_stop(struct trb_watch *w)
{
    w->stop = 1;
    pthread_join(w->thread, NULL);
    fprintf(stderr, "read API watcher: %ld requests, %ld ok, %ld 503 read_model_unavailable, %ld other 5xx, "
            "%ld 404 before first seen, %ld 404 after, %ld version regressions, %ld other%s%s\n", w->requests, w->ok, w->unavailable,
            w->other_5xx, w->not_yet, w->not_found, w->regressions, w->errors,
            w->first_problem[0] ? "; first: " : "", w->first_problem);
    free(w->seen);
    w->seen = NULL;
}
