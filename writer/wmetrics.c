/* Writer metrics: names and help texts in one place, series in the common registry. */
#include "wmetrics.h"

#include <stdio.h>

#include "metrics.h"

static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

static const char *kind_name(enum cmd_kind k)
{
    switch (k) {
    case CMD_OPEN:
        return "open";
    case CMD_DEPOSIT:
        return "deposit";
    case CMD_WITHDRAW:
        return "withdraw";
    case CMD_TRANSFER:
        return "transfer";
    case CMD_REVERSE:
        return "reverse";
    case CMD_CLOSE:
        return "close";
    default:
        return "other";
    }
}

void wm_command(enum cmd_kind kind, const char *result)
{
    char labels[METRICS_LABELS_SIZE], r[64];

    snprintf(labels, sizeof labels, "type=\"%s\",result=\"%s\"", kind_name(kind),
             metrics_label_value(r, sizeof r, result != NULL ? result : "unknown"));
    metrics_counter_add_l("writer_commands_total", labels,
                          "Commands answered, by type and result (ok, replayed or the error code).", 1);
}

void wm_batch(int n)
{
    metrics_histogram_observe("writer_group_commit_batch_commands", NULL,
                              "Commands carried by one group-commit transaction.", batch_bounds,
                              (int)(sizeof batch_bounds / sizeof batch_bounds[0]), n);
}

void wm_publish_after_commit(double seconds)
{
    metrics_histogram_observe("writer_publish_after_commit_seconds", NULL,
                              "From a committed event handed to the writer's publisher to JetStream's ack "
                              "(the oldest event of each hand-over).",
                              metrics_latency_bounds, metrics_latency_nbounds, seconds);
}

static void pool_failures(double v)
{
    metrics_counter_add("writer_pool_checkout_failures_total", "Pool checkouts that timed out or could not connect.", v);
}

void wm_pool_checkout(double wait_s, int ok)
{
    metrics_histogram_observe("writer_pool_wait_seconds", NULL,
                              "Time a command waited for a Postgres connection of the pool.",
                              metrics_latency_bounds, metrics_latency_nbounds, wait_s);
    if (!ok)
        pool_failures(1);
}

void wm_pool_in_use(int delta, int size)
{
    metrics_gauge_add_l("writer_pool_connections_in_use", NULL, "Postgres connections of the pool checked out.",
                        delta);
    metrics_gauge_set("writer_pool_connections", "Size of the Postgres connection pool.", size);
}

void wm_relay_active(int active)
{
    metrics_gauge_set("writer_relay_active", "1 while this writer's relay holds the outbox lock and publishes.",
                      active);
}

void wm_relay_round(int published, int acked, int failed)
{
    metrics_counter_add("writer_relay_published_total", "Events the relay handed to JetStream.", published);
    metrics_counter_add("writer_relay_acked_total", "Events JetStream acknowledged (deleted from the outbox).",
                        acked);
    metrics_counter_add("writer_relay_failed_total", "Events published but not acknowledged (published again).",
                        failed);
}

static void relay_errors(double v)
{
    metrics_counter_add("writer_relay_errors_total", "Relay rounds that failed (Postgres or NATS unavailable).", v);
}

void wm_relay_error(void)
{
    relay_errors(1);
}

void wm_dead_lettered(int n)
{
    metrics_counter_add("writer_outbox_dead_lettered_total", "outbox rows moved to outbox_dead_letters (undecodable)",
                        (double)n);
}

void wm_keys_purged(long n)
{
    metrics_counter_add("writer_idempotency_keys_purged_total", "idempotency records deleted after their retention",
                        (double)n);
}

void wm_init(void)
{
    /* counters without labels exist from the start at 0, so rate() and alerts see them */
    pool_failures(0);
    relay_errors(0);
    wm_relay_round(0, 0, 0);
    wm_dead_lettered(0);
    wm_keys_purged(0);
    wm_relay_active(0);
}

void wm_outbox(double rows, double oldest_age_s)
{
    metrics_gauge_set("writer_outbox_rows", "Rows in the outbox (events not yet acknowledged by JetStream).", rows);
    metrics_gauge_set("writer_outbox_oldest_age_seconds", "Age of the oldest outbox row (0 when empty).",
                      oldest_age_s);
}
