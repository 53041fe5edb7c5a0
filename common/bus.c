/* NATS connection and the JetStream EVENTS stream. */
#include "bus.h"

#include <string.h>

#define BUS_MAX_SERVERS 16

/* Splits a comma-separated URL list into buf (modified in place); returns the count. */
static int split_servers(char *buf, const char **out, int max)
{
    int n = 0;
    char *save = NULL;

    for (char *tok = strtok_r(buf, ",", &save); tok != NULL && n < max; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok != '\0')
            out[n++] = tok;
    }
    return n;
}

static status connect_with(struct bus *b, const char *url, const char *name, int timeout_ms,
                           natsConnectionHandler reconnected, void *closure, bool send_asap, struct err *e)
{
    status st = ST_OK;
    natsStatus ns;
    natsOptions *opts = NULL;
    jsOptions jo;
    char list[1024];
    const char *servers[BUS_MAX_SERVERS];
    int nservers;

    memset(b, 0, sizeof *b);
    if (strlen(url) >= sizeof list)
        return err_set(e, ST_INVALID, "nats url list longer than %zu bytes", sizeof list - 1);
    memcpy(list, url, strlen(url) + 1);
    nservers = split_servers(list, servers, BUS_MAX_SERVERS);
    if (nservers == 0)
        return err_set(e, ST_INVALID, "no nats url in '%s'", url);
    if (natsOptions_Create(&opts) != NATS_OK) {
        st = err_set(e, ST_INTERNAL, "nats options: out of memory");
        goto cleanup;
    }
    /* The first connect fails fast (no RetryOnFailedConnect) so the caller owns the backoff;
     * once connected, the library reconnects forever on its own, to any server of the list (a
     * cluster node that dies hands its clients to the others). */
    ns = natsOptions_SetServers(opts, servers, nservers);
    if (ns == NATS_OK)
        ns = natsOptions_SetName(opts, name);
    if (ns == NATS_OK)
        ns = natsOptions_SetTimeout(opts, timeout_ms);
    if (ns == NATS_OK)
        ns = natsOptions_SetAllowReconnect(opts, true);
    if (ns == NATS_OK)
        ns = natsOptions_SetMaxReconnect(opts, -1);
    if (ns == NATS_OK)
        ns = natsOptions_SetReconnectWait(opts, 250);
    if (ns == NATS_OK && reconnected != NULL)
        ns = natsOptions_SetReconnectedCB(opts, reconnected, closure);
    if (ns == NATS_OK && send_asap)
        ns = natsOptions_SetSendAsap(opts, true);
    if (ns != NATS_OK) {
        st = err_set(e, ST_INVALID, "nats options for '%s': %s", url, natsStatus_GetText(ns));
        goto cleanup;
    }
    ns = natsConnection_Connect(&b->conn, opts);
    if (ns != NATS_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "connect to '%s': %s", url,
                      nats_GetLastError(NULL) != NULL ? nats_GetLastError(NULL) : natsStatus_GetText(ns));
        goto cleanup;
    }
    jsOptions_Init(&jo);
    jo.Wait = timeout_ms;
    ns = natsConnection_JetStream(&b->js, b->conn, &jo);
    if (ns != NATS_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "jetstream context: %s",
                      natsStatus_GetText(ns));
        goto cleanup;
    }
cleanup:
    natsOptions_Destroy(opts);
    if (st != ST_OK)
        bus_release(b);
    return st;
}

status bus_connect(struct bus *b, const char *url, const char *name, int timeout_ms, struct err *e)
{
    return connect_with(b, url, name, timeout_ms, NULL, NULL, false, e);
}

status bus_connect_cfg(struct bus *b, const struct cfg *c, const char *name, struct err *e)
{
    return bus_connect_watch(b, c, name, NULL, NULL, false, e);
}

status bus_connect_watch(struct bus *b, const struct cfg *c, const char *name, natsConnectionHandler reconnected,
                         void *closure, bool send_asap, struct err *e)
{
    status st = connect_with(b, c->nats_url, name, c->request_timeout_ms, reconnected, closure, send_asap, e);

    if (st == ST_OK)
        b->replicas = c->nats_replicas;
    return st;
}

status bus_ensure_stream(struct bus *b, struct err *e)
{
    status st = ST_OK;
    natsStatus ns;
    jsStreamInfo *si = NULL;
    jsStreamConfig sc;
    jsErrCode jerr = 0;
    const char *subjects[] = {BUS_SUBJECTS};

    ns = js_GetStreamInfo(&si, b->js, BUS_STREAM, NULL, &jerr);
    if (ns == NATS_OK)
        goto cleanup;
    if (ns != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "stream '%s' info: %s (%d)", BUS_STREAM,
                      natsStatus_GetText(ns), (int)jerr);
        goto cleanup;
    }
    jsStreamConfig_Init(&sc);
    sc.Name = BUS_STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = b->replicas > 0 ? b->replicas : 1;
    sc.Duplicates = (int64_t)BUS_DUPLICATE_WINDOW_MS * 1000000; /* nanoseconds */
    jerr = 0;
    ns = js_AddStream(&si, b->js, &sc, NULL, &jerr);
    /* another process may have created it in between: that is success */
    if (ns != NATS_OK && jerr != JSStreamNameExistErr) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "create stream '%s': %s (%d)",
                      BUS_STREAM, natsStatus_GetText(ns), (int)jerr);
        goto cleanup;
    }
cleanup:
    jsStreamInfo_Destroy(si);
    return st;
}

void bus_release(struct bus *b)
{
    if (b == NULL)
        return;
    jsCtx_Destroy(b->js);
    b->js = NULL;
    if (b->conn != NULL) {
        natsConnection_Close(b->conn);
        natsConnection_Destroy(b->conn);
    }
    b->conn = NULL;
}
