/* Test helpers for the partition-owned projector: leases, partition checkpoints, worker logs. */
#include "tproj.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "event.h"
#include "ownership.h"
#include "readmodel.h"
#include "support.h"
#include "tgen.h"

void tproj_seed_generation(void)
{
    redisContext *rc = tredis_open();
    redisReply *r = redisCommand(rc, "EVAL %s 0", "redis.call('SET', 'rm:genseq', 1) "
                                 "redis.call('HSET', 'rm:1:checkpoint', 'position', 0, 'at_ms', 0, 'events', 0) "
                                 "redis.call('SET', 'rm:current', 1) return 1");
    if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        tfail("seed generation");
    freeReplyObject(r);
    redisFree(rc);
}

void tproj_publish(struct bus *b, const struct tgen_history *h, long from, long n)
{
    struct tgen_history chunk = *h;

    chunk.events = h->events + from;
    chunk.n = n;
    tgen_insert(&chunk, tenv("DATABASE_URL"));
    for (long k = from; k < from + n; k++) {
        const struct event *ev = &h->events[k];
        char subject[32];
        char *payload = event_encode(ev);
        natsMsg *msg = NULL;
        event_subject(ev->stream_id, EVENT_PARTITIONS, subject, sizeof subject);
        if (natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload)) != NATS_OK ||
            natsMsgHeader_Set(msg, "Nats-Msg-Id", ev->event_id) != NATS_OK ||
            js_PublishMsgAsync(b->js, &msg, NULL) != NATS_OK)
            tfail("publish");
        natsMsg_Destroy(msg);
        free(payload);
    }
    if (js_PublishAsyncComplete(b->js, NULL) != NATS_OK)
        tfail("publish acks");
}

uint64_t tproj_stream_last(struct bus *b, int part)
{
    char subject[32];
    natsMsg *m = NULL;
    uint64_t seq = 0;
    natsStatus ns;

    snprintf(subject, sizeof subject, "events.%d", part);
    ns = js_GetLastMsg(&m, b->js, BUS_STREAM, subject, NULL, NULL);
    if (ns == NATS_OK)
        seq = natsMsg_GetSequence(m);
    else if (ns != NATS_NOT_FOUND)
        tfail("last message of %s: %s", subject, natsStatus_GetText(ns));
    natsMsg_Destroy(m);
    return seq;
}

void tproj_part(int part, uint64_t *seq, uint64_t *epoch)
{
    redisContext *rc = tredis_open();
    char key[RM_KEY_SIZE];
    redisReply *r;

    rm_key_partition(key, sizeof key, part);
    r = redisCommand(rc, "HMGET %s seq epoch", key);
    *seq = 0;
    *epoch = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (r->element[0]->type == REDIS_REPLY_STRING)
            *seq = strtoull(r->element[0]->str, NULL, 10);
        if (r->element[1]->type == REDIS_REPLY_STRING)
            *epoch = strtoull(r->element[1]->str, NULL, 10);
    }
    freeReplyObject(r);
    redisFree(rc);
}

void tproj_wait_seq(int part, uint64_t seq, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;
    uint64_t have = 0, epoch = 0;

    while (tnow_ms() < deadline) {
        tproj_part(part, &have, &epoch);
        if (have >= seq)
            return;
        usleep(50000);
    }
    tfail("partition %d: seq %llu not reached in %d ms (at %llu)", part, (unsigned long long)seq,
          timeout_ms, (unsigned long long)have);
}

int tproj_owners(int n, char (*owner)[TPROJ_OWNER_SIZE], uint64_t *epoch)
{
    struct bus b = {0};
    kvStore *kv = NULL;
    struct err e;
    int owned = 0;

    if (bus_connect(&b, tenv("NATS_URL"), "test-owners", 5000, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    if (own_bind(&kv, &b, &e) == ST_OK) {
        for (int p = 0; p < n; p++) {
            if (own_read(kv, p, owner[p], TPROJ_OWNER_SIZE, &epoch[p], &e) != ST_OK)
                tfail("lease of %d: %s", p, e.msg);
            owned += owner[p][0] != '\0';
        }
        kvStore_Destroy(kv);
    } else {
        for (int p = 0; p < n; p++) {
            owner[p][0] = '\0';
            epoch[p] = 0;
        }
    }
    bus_release(&b);
    return owned;
}

pid_t tproj_spawn(const char *logpath, const char *const *extra_env)
{
    static const char *const run[] = {"run", NULL};
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t pid;

    if (fd < 0)
        tfail("open %s", logpath);
    pid = tsvc_spawn("projector", run, extra_env, fd);
    close(fd);
    return pid;
}

long tproj_log_count(const char *logpath, const char *text)
{
    FILE *f = fopen(logpath, "r");
    char line[2048];
    long n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

long tproj_log_number(const char *logpath, const char *before)
{
    FILE *f = fopen(logpath, "r");
    char line[2048];
    long v = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        const char *s = strstr(line, before);
        if (s != NULL)
            v = strtol(s + strlen(before), NULL, 10);
    }
    fclose(f);
    return v;
}

int tproj_log_worker(const char *logpath, char *name, size_t len)
{
    FILE *f = fopen(logpath, "r");
    char line[2048];
    int found = 0;

    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        const char *s = strstr(line, "starting worker ");
        if (s != NULL) {
            s += strlen("starting worker ");
            snprintf(name, len, "%.*s", (int)strcspn(s, ":"), s);
            found = 1;
        }
    }
    fclose(f);
    return found;
}
