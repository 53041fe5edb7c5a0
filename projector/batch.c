/* Pure helpers of the projector: decoding into items, ordering, poison records, backoff. */
#include "batch.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evparse.h"
#include "jsonx.h"
#include "uuid.h"

void pj_item_decode(struct pj_item *it, const char *payload, size_t len, uint64_t seq)
{
    memset(it, 0, sizeof *it);
    it->payload = payload;
    it->payload_len = len;
    it->seq = seq;
    if (evparse_event(&it->ev, payload, len, &it->why) == ST_OK) {
        it->ok = 1;
        return;
    }
    pj_peek(&it->ev, payload, len);
}

void pj_item_release(struct pj_item *it)
{
    if (it == NULL)
        return;
    free(it->owned_payload);
    it->owned_payload = NULL;
    it->payload = NULL;
}

void pj_peek(struct event *ev, const char *payload, size_t len)
{
    json_t *env = json_loadb(payload, len, 0, NULL);
    json_t *v;

    memset(ev, 0, sizeof *ev);
    if (!json_is_object(env))
        goto cleanup;
    v = json_object_get(env, "event_id");
    if (json_is_string(v) && !uuid_parse(json_string_value(v), json_string_length(v), ev->event_id))
        ev->event_id[0] = '\0';
    v = json_object_get(env, "stream_id");
    if (json_is_string(v) && !uuid_parse(json_string_value(v), json_string_length(v), ev->stream_id))
        ev->stream_id[0] = '\0';
    v = json_object_get(env, "stream_version");
    if (json_is_integer(v) && json_integer_value(v) > 0)
        ev->stream_version = json_integer_value(v);
    v = json_object_get(env, "position");
    if (json_is_integer(v) && json_integer_value(v) > 0)
        ev->position = json_integer_value(v);
cleanup:
    json_decref(env);
}

static int item_cmp(const void *a, const void *b)
{
    const struct pj_item *x = *(const struct pj_item *const *)a;
    const struct pj_item *y = *(const struct pj_item *const *)b;
    int c = strcmp(x->ev.stream_id, y->ev.stream_id);

    if (c != 0)
        return c;
    if (x->ev.stream_version != y->ev.stream_version)
        return x->ev.stream_version < y->ev.stream_version ? -1 : 1;
    /* a decodable copy first, so the duplicate that is kept for folding is a good one */
    if (x->ok != y->ok)
        return x->ok ? -1 : 1;
    /* stable on the source order for equal keys (qsort is not) */
    return x < y ? -1 : x > y;
}

void pj_sort(struct pj_item **v, int n)
{
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, item_cmp);
}

char *pj_park_record(const struct event *ev, const char *reason, const char *parked_at,
                     const char *payload, size_t payload_len, uint64_t jetstream_seq)
{
    json_t *doc = json_object();

    if (doc == NULL)
        return NULL;
    json_object_set_new(doc, "event_id", json_string(ev->event_id));
    json_object_set_new(doc, "account_id", ev->stream_id[0] != '\0' ? json_string(ev->stream_id) : json_null());
    json_object_set_new(doc, "stream_version", json_integer((json_int_t)ev->stream_version));
    json_object_set_new(doc, "position", json_integer((json_int_t)ev->position));
    json_object_set_new(doc, "reason", json_string(reason));
    json_object_set_new(doc, "parked_at", json_string(parked_at));
    /* the payload may be any bytes: keep it as text only when it is valid UTF-8 */
    json_object_set_new(doc, "payload", payload != NULL ? json_stringn(payload, payload_len) : json_null());
    if (json_object_get(doc, "payload") == NULL)
        json_object_set_new(doc, "payload", json_string("(not valid UTF-8)"));
    if (jetstream_seq != 0)
        json_object_set_new(doc, "jetstream_seq", json_integer((json_int_t)jetstream_seq));
    return jsonx_dump_decref(doc);
}

char *pj_stall_record(const char *event_id, const char *reason, const char *since)
{
    return jsonx_dump_decref(
        json_pack("{s:s, s:s, s:s}", "event_id", event_id, "reason", reason, "since", since));
}

int pj_partition_batch(int batch, int worker_events, int share)
{
    int n = worker_events / (share > 1 ? share : 1);

    n = n < batch ? n : batch;
    return n > 1 ? n : 1;
}

int pj_backoff_ms(int attempt, int max_ms)
{
    int ms = 100;

    for (int i = 0; i < attempt && ms < max_ms; i++)
        ms *= 2;
    return ms < max_ms ? ms : max_ms;
}

void pj_now_iso(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

int64_t pj_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
