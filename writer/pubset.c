/* A set of events published to JetStream at once, their acks, and the deletion of the acked
 * outbox rows (shared by the relay and the publish-after-commit path). */
#include "pubset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "svc.h"

status pubset_init(struct pubset *ps, int cap, unsigned partitions, struct err *e)
{
    memset(ps, 0, sizeof *ps);
    ps->partitions = partitions;
    pthread_mutex_init(&ps->mu, NULL);
    ps->cap = cap;
    ps->positions = calloc((size_t)cap, sizeof *ps->positions);
    ps->ids = calloc((size_t)cap, sizeof *ps->ids);
    ps->acked = calloc((size_t)cap, sizeof *ps->acked);
    ps->answered = calloc((size_t)cap, sizeof *ps->answered);
    ps->answer_ns = calloc((size_t)cap, sizeof *ps->answer_ns);
    if (ps->positions == NULL || ps->ids == NULL || ps->acked == NULL || ps->answered == NULL ||
        ps->answer_ns == NULL) {
        pubset_free(ps);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    return ST_OK;
}

void pubset_free(struct pubset *ps)
{
    free(ps->positions);
    free(ps->ids);
    free(ps->acked);
    free(ps->answered);
    free(ps->answer_ns);
    ps->positions = NULL;
    ps->ids = NULL;
    ps->acked = NULL;
    ps->answered = NULL;
    ps->answer_ns = NULL;
    ps->cap = 0;
    pthread_mutex_destroy(&ps->mu);
}

void pubset_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct pubset *ps = closure;
    const char *id = NULL;
    bool answered = false;

    (void)js;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != NULL) {
        pthread_mutex_lock(&ps->mu);
        /* acks mostly come in publish order: start from the one after the last found */
        for (int k = 0; k < ps->n; k++) {
            int i = (ps->next_hint + k) % ps->n;
            if (strcmp(ps->ids[i], id) == 0) {
                if (pa != NULL)
                    ps->acked[i] = true; /* Duplicate too: the stream has it already */
                if (!ps->answered[i]) {
                    ps->answered[i] = true;
                    ps->answer_ns[i] = svc_mono_ns();
                    ps->nanswered++;
                    answered = true;
                }
                ps->next_hint = (i + 1) % ps->n;
                break;
            }
        }
        if (pa == NULL && pae != NULL)
            snprintf(ps->last_error, sizeof ps->last_error, "%s (%d): %s", natsStatus_GetText(pae->Err),
                     (int)pae->ErrCode, pae->ErrText != NULL ? pae->ErrText : "");
        pthread_mutex_unlock(&ps->mu);
    }
    natsMsg_Destroy(msg);
    if (answered && ps->on_answer != NULL)
        ps->on_answer(ps->on_answer_arg);
}

int pubset_unanswered(struct pubset *ps)
{
    int n;

    pthread_mutex_lock(&ps->mu);
    n = ps->n - ps->nanswered;
    pthread_mutex_unlock(&ps->mu);
    return n;
}

int64_t pubset_answer_ns(struct pubset *ps, int i)
{
    int64_t t = 0;

    pthread_mutex_lock(&ps->mu);
    if (i >= 0 && i < ps->n && ps->answered[i])
        t = ps->answer_ns[i];
    pthread_mutex_unlock(&ps->mu);
    return t;
}

status pubset_read_outbox(PGconn *pg, int limit, int min_age_ms, PGresult **out, struct err *e)
{
    char lim[16], age[16], msg[200];
    const char *p[2] = {lim, age};

    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(age, sizeof age, "%d", min_age_ms);
    *out = PQexecParams(pg,
                        "SELECT " DB_EVENT_COLUMNS " FROM (SELECT position FROM outbox WHERE created_at <= "
                        "clock_timestamp() - make_interval(secs => $2::int / 1000.0) ORDER BY position "
                        "LIMIT $1::int) o JOIN events USING (position) ORDER BY position",
                        2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(*out) != PGRES_TUPLES_OK) {
        status st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read outbox: %s",
                             db_error(msg, sizeof msg, pg, *out));
        PQclear(*out);
        *out = NULL;
        return st;
    }
    return ST_OK;
}

void pubset_begin(struct pubset *ps)
{
    pthread_mutex_lock(&ps->mu);
    ps->n = 0;
    ps->nanswered = 0;
    ps->next_hint = 0;
    ps->last_error[0] = '\0';
    pthread_mutex_unlock(&ps->mu);
}

void pubset_end(struct pubset *ps)
{
    pthread_mutex_lock(&ps->mu);
    ps->n = 0;
    ps->nanswered = 0;
    pthread_mutex_unlock(&ps->mu);
}

status pubset_publish(struct pubset *ps, jsCtx *js, const struct event *ev, struct err *e)
{
    char subject[32], *payload;
    natsMsg *msg = NULL;
    natsStatus ns;

    if (ps->n >= ps->cap)
        return err_set(e, ST_INTERNAL, "publish set full");
    payload = event_encode(ev);
    if (payload == NULL)
        return err_set(e, ST_INTERNAL, "out of memory encoding an event");
    /* registered before the publish: its ack may come back before the call returns */
    pthread_mutex_lock(&ps->mu);
    ps->positions[ps->n] = ev->position;
    snprintf(ps->ids[ps->n], UUID_STR_SIZE, "%s", ev->event_id);
    ps->acked[ps->n] = false;
    ps->answered[ps->n] = false;
    ps->answer_ns[ps->n] = 0;
    ps->n++;
    pthread_mutex_unlock(&ps->mu);
    event_subject(ev->stream_id, ps->partitions, subject, sizeof subject);
    ns = natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload));
    if (ns == NATS_OK)
        ns = natsMsgHeader_Set(msg, "Nats-Msg-Id", ev->event_id);
    if (ns == NATS_OK)
        ns = js_PublishMsgAsync(js, &msg, NULL);
    natsMsg_Destroy(msg); /* NULL (a no-op) once the library took it */
    free(payload);
    if (ns != NATS_OK) {
        pthread_mutex_lock(&ps->mu);
        ps->n--;
        if (ps->answered[ps->n]) /* answered before the call failed: not counted twice */
            ps->nanswered--;
        snprintf(ps->last_error, sizeof ps->last_error, "publish: %s", natsStatus_GetText(ns));
        pthread_mutex_unlock(&ps->mu);
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "publish: %s", natsStatus_GetText(ns));
    }
    return ST_OK;
}

void pubset_complete(struct pubset *ps, jsCtx *js, int wait_ms)
{
    jsPubOptions po;
    natsStatus ns;

    jsPubOptions_Init(&po);
    po.MaxWait = wait_ms;
    ns = js_PublishAsyncComplete(js, &po);
    if (ns != NATS_OK) {
        /* take back what is still unacked: those rows are published again by a later round,
         * and the Nats-Msg-Id makes JetStream drop the copies it did store */
        natsMsgList pending;
        if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
            natsMsgList_Destroy(&pending);
        pthread_mutex_lock(&ps->mu);
        if (ps->last_error[0] == '\0')
            snprintf(ps->last_error, sizeof ps->last_error, "waiting for acks: %s", natsStatus_GetText(ns));
        pthread_mutex_unlock(&ps->mu);
    }
}

void pubset_last_error(struct pubset *ps, char *buf, size_t len)
{
    pthread_mutex_lock(&ps->mu);
    snprintf(buf, len, "%s", ps->last_error);
    pthread_mutex_unlock(&ps->mu);
}

#define DELETE_SQL "DELETE FROM outbox WHERE position = ANY($1::bigint[])"

int pubset_take_acked(struct pubset *ps, int64_t *out)
{
    int n = 0;

    pthread_mutex_lock(&ps->mu);
    for (int i = 0; i < ps->n; i++)
        if (ps->acked[i])
            out[n++] = ps->positions[i];
    pthread_mutex_unlock(&ps->mu);
    return n;
}

status pubset_send_delete(PGconn *pg, const int64_t *positions, int n, bool *sent, struct err *e)
{
    size_t cap = (size_t)n * 21 + 3, len = 1;
    char *arr, msg[200];
    status st = ST_OK;

    *sent = false;
    if (n <= 0)
        return ST_OK;
    arr = malloc(cap);
    if (arr == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    /* a bigint[] literal */
    arr[0] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(arr + len, cap - len, "%s%lld", i > 0 ? "," : "", (long long)positions[i]);
    snprintf(arr + len, cap - len, "}");
    {
        const char *p[1] = {arr};
        if (PQsendQueryParams(pg, DELETE_SQL, 1, NULL, p, NULL, NULL, 0) != 1)
            st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "delete from outbox: %s",
                          db_error(msg, sizeof msg, pg, NULL));
        else
            *sent = true;
    }
    free(arr);
    return st;
}

status pubset_delete_wait(PGconn *pg, struct err *e)
{
    PGresult *res;
    char msg[200];
    status st = ST_OK;

    while ((res = PQgetResult(pg)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && st == ST_OK)
            st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "delete from outbox: %s",
                          db_error(msg, sizeof msg, pg, res));
        PQclear(res);
    }
    return st;
}

status pubset_delete_acked(struct pubset *ps, PGconn *pg, int *acked, struct err *e)
{
    int64_t *positions = malloc((size_t)(ps->cap > 0 ? ps->cap : 1) * sizeof *positions);
    bool sent = false;
    status st;

    *acked = 0;
    if (positions == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    *acked = pubset_take_acked(ps, positions);
    st = pubset_send_delete(pg, positions, *acked, &sent, e);
    free(positions);
    if (st == ST_OK && sent)
        st = pubset_delete_wait(pg, e);
    return st;
}
