/* Lost notifications: when the PUBLISH on rm:applied after a write fails (refused, e.g. an ACL
 * user without the channel, or the connection lost), the read API's caches still learn that
 * something changed: the projector bumps rm:applied:lost, which the read API's probe watches
 * (every 100 ms) and answers by clearing its cache. Counted and logged (at most once a minute). */
#include <stdatomic.h>
#include <stdio.h>

#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"

#define LOST_HELP                                                                                      \
    "Read API notifications (PUBLISH rm:applied) that could not be sent: refused by Redis, or the "   \
    "connection lost; caches are then cleared through rm:applied:lost."

void pj_notify_declare(void)
{
    metrics_counter_add_l("projector_notifications_lost_total", "reason=\"refused\"", LOST_HELP, 0);
    metrics_counter_add_l("projector_notifications_lost_total", "reason=\"connection\"", LOST_HELP, 0);
}

void pj_notify_lost(struct pj *p, const char *reason, const char *why)
{
    static _Atomic int64_t warned_ms;
    int64_t now = svc_mono_ms(), last = warned_ms;
    char labels[64];
    redisReply *r = NULL;

    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    metrics_counter_add_l("projector_notifications_lost_total", labels, LOST_HELP, 1);
    if (!rds_broken(p->rc))
        r = rds_command(p->rc, "INCR %s", RM_APPLIED_LOST_KEY);
    if ((last == 0 || now - last >= 60000) && atomic_compare_exchange_strong(&warned_ms, &last, now))
        log_warn("notification on %s not sent (%s): %s; read API caches are cleared through %s%s", RM_APPLIED_CHANNEL,
                 reason, why, RM_APPLIED_LOST_KEY,
                 r == NULL || r->type == REDIS_REPLY_ERROR ? " (which failed too: they expire by READ_CACHE_TTL_MS)" : "");
    /* a connection that failed is left to the caller: hiredis fails every later command on it
     * at once (its error is set), the caller's own error path or its next pj_redis() drops it.
     * Dropping it here left p->rc NULL under a caller that went on using it (a SIGSEGV) */
    freeReplyObject(r);
}
