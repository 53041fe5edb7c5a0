/* The one place that reads the environment. */
#include "cfg.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum cfg_kind { CFG_STR, CFG_INT, CFG_LEVEL, CFG_LOGFMT };

struct cfg_entry {
    const char *name;
    enum cfg_kind kind;
    size_t offset;
    size_t size; /* strings: buffer size */
    const char *def;
    long min, max;
    const char *help;
};

#define S(field) offsetof(struct cfg, field), sizeof(((struct cfg *)0)->field)
#define I(field) offsetof(struct cfg, field), 0

static const struct cfg_entry cfg_table[] = {
    {"DATABASE_URL", CFG_STR, S(database_url), "postgresql://cqrs@127.0.0.1:25432/cqrs", 1, 0,
     "libpq connection string or URI"},
    {"NATS_URL", CFG_STR, S(nats_url), "nats://127.0.0.1:24222", 1, 0,
     "NATS server URL, or several comma-separated (a cluster)"},
    {"NATS_REPLICAS", CFG_INT, I(nats_replicas), "1", 1, 5,
     "replicas of the JetStream stream and buckets the services create (3 in a cluster)"},
    {"REDIS_URL", CFG_STR, S(redis_url), "redis://127.0.0.1:26379/0", 1, 0,
     "redis://host:port/db (with REDIS_SENTINELS only the db counts)"},
    {"REDIS_USERNAME", CFG_STR, S(redis_username), "", 0, 0,
     "Redis ACL user the service authenticates as (empty: the default user)"},
    {"REDIS_PASSWORD", CFG_STR, S(redis_password), "", 0, 0,
     "password of REDIS_USERNAME (or of the default user); empty: no AUTH"},
    {"REDIS_SENTINELS", CFG_STR, S(redis_sentinels), "", 0, 0,
     "comma-separated host:port of Redis Sentinels: the master is asked of them (empty: REDIS_URL)"},
    {"REDIS_MASTER_NAME", CFG_STR, S(redis_master_name), "", 0, 0,
     "the master name the Sentinels monitor (required with REDIS_SENTINELS)"},
    {"HTTP_BIND", CFG_STR, S(http_bind), "127.0.0.1", 1, 0, "address the HTTP services listen on"},
    {"WRITER_PORT", CFG_INT, I(writer_port), "8080", 1, 65535, "writer HTTP port"},
    {"READAPI_PORT", CFG_INT, I(readapi_port), "8081", 1, 65535, "read API HTTP port"},
    {"PROJECTOR_PORT", CFG_INT, I(projector_port), "8082", 1, 65535,
     "projector HTTP port (/healthz, /readyz, /metrics)"},
    {"LOG_LEVEL", CFG_LEVEL, I(log_level), "info", 0, 3, "debug, info, warn or error"},
    {"LOG_FORMAT", CFG_LOGFMT, I(log_format), "text", 0, 1,
     "text (one line: time level service message) or json (one JSON object per line: time, "
     "level, service, request_id, account, event_id, message)"},
    {"API_TOKEN", CFG_STR, S(api_token), "", 0, 0,
     "static bearer token with the admin scope, for scripts (empty: none)"},
    {"METRICS_TOKEN", CFG_STR, S(metrics_token), "", 0, 0,
     "bearer token that may read /metrics only (empty: none)"},
    {"JWT_SECRET", CFG_STR, S(jwt_secret), "", 0, 0, "HS256 key of the bearer JWTs (empty: none)"},
    {"JWT_PUBLIC_KEY_FILE", CFG_STR, S(jwt_public_key_file), "", 0, 0,
     "PEM public key verifying RS256/ES256 bearer JWTs (empty: none)"},
    {"JWT_ISSUER", CFG_STR, S(jwt_issuer), "", 0, 0, "required 'iss' of a JWT (empty: not checked)"},
    {"JWT_AUDIENCE", CFG_STR, S(jwt_audience), "", 0, 0,
     "required 'aud' of a JWT (empty: not checked)"},
    {"JWT_LEEWAY_S", CFG_INT, I(jwt_leeway_s), "30", 0, 300, "clock skew allowed on exp and nbf"},
    {"AUTH", CFG_STR, S(auth_mode), "auto", 1, 0,
     "auto (tokens when configured; none configured: loopback only), on, or off (no "
     "authentication, explicitly)"},
    {"HTTP_MAX_CONNECTIONS", CFG_INT, I(http_max_connections), "4096", 16, 60000,
     "connections an HTTP service holds at once"},
    {"HTTP_PER_IP_CONNECTIONS", CFG_INT, I(http_per_ip_connections), "256", 0, 60000,
     "connections from one client address (0: no limit)"},
    {"HTTP_TIMEOUT_S", CFG_INT, I(http_timeout_s), "15", 1, 3600,
     "a connection idle (or a request arriving slower) this long is closed"},
    {"HTTP_MAX_WAITERS", CFG_INT, I(http_max_waiters), "4096", 0, 60000,
     "concurrent min_version waits (beyond: 503 at once)"},
    {"PG_POOL_SIZE", CFG_INT, I(pg_pool_size), "8", 1, 256,
     "Postgres connections (writer: commands; read API: event-store lookups)"},
    {"HTTP_THREADS", CFG_INT, I(http_threads), "2", 0, 256,
     "HTTP worker threads of an epoll pool (writer 0: a thread per connection instead; read API "
     "0: 4)"},
    {"PROJECTOR_BATCH", CFG_INT, I(projector_batch), "512", 1, 10000, "messages per pull"},
    {"PROJECTOR_FETCH_BYTES", CFG_INT, I(projector_fetch_bytes), "4194304", 65536, 268435456,
     "bytes one fetch of a partition may bring (with PROJECTOR_BATCH, bounds a worker's memory)"},
    {"PROJECTOR_WORKER_EVENTS", CFG_INT, I(projector_worker_events), "24576", 1, 10000000,
     "decoded events one projector worker holds at most: a partition's batch is the smaller of "
     "PROJECTOR_BATCH and this divided by the partitions the worker holds"},
    {"PARTITIONS", CFG_INT, I(partitions), "16", 1, 1024,
     "stream partitions events.<p> (part of the deployment: see README before changing it)"},
    {"PROJECTOR_LEASE_MS", CFG_INT, I(projector_lease_ms), "6000", 500, 10000,
     "partition lease lifetime: a dead worker's partitions are taken over within it"},
    {"RELAY_BATCH", CFG_INT, I(relay_batch), "1000", 1, 100000, "outbox rows per publish round"},
    {"LOCK_TIMEOUT_MS", CFG_INT, I(lock_timeout_ms), "1000", 10, 60000,
     "writer: longest a command waits for an account another one holds (then 503, not applied)"},
    {"GROUP_COMMIT_DELAY_US", CFG_INT, I(group_commit_delay_us), "0", 0, 10000,
     "writer: after a batch of more than one command, wait this long for more before the next"},
    {"OUTCOME_WAIT_MS", CFG_INT, I(outcome_wait_ms), "10000", 100, 300000,
     "writer: how long a command whose COMMIT answer was lost asks Postgres for its outcome"},
    {"IDEMPOTENCY_RETENTION_S", CFG_INT, I(idempotency_retention_s), "86400", 1, 31536000,
     "writer: how long an Idempotency-Key and its first response are kept"},
    {"RELAY_BUS_GIVEUP_MS", CFG_INT, I(relay_bus_giveup_ms), "10000", 100, 600000,
     "writer: a relay that cannot publish for this long gives the outbox lock to a standby"},
    {"PUBLISH_AFTER_COMMIT", CFG_INT, I(publish_after_commit), "1", 0, 1,
     "writer: publish a command's events right behind its COMMIT (1), the relay sweeping only what "
     "that missed; 0: the relay publishes everything"},
    {"REQUEST_TIMEOUT_MS", CFG_INT, I(request_timeout_ms), "5000", 100, 120000,
     "bound on a single dependency call"},
    {"READ_CACHE_TTL_MS", CFG_INT, I(read_cache_ttl_ms), "5000", 0, 60000,
     "read API: longest an account document is served from memory when a notification is lost "
     "(0: no cache)"},
    {"READ_CACHE_SLOTS", CFG_INT, I(read_cache_slots), "65536", 256, 16777216,
     "read API: account documents kept in memory"},
    {"READ_REPLICAS", CFG_INT, I(read_replicas), "0", 0, 1,
     "read API: answer reads from a Redis replica (REDIS_REPLICA_URL, else one the Sentinels "
     "list); a read the replica cannot answer at min_version goes to the primary"},
    {"REDIS_REPLICA_URL", CFG_STR, S(redis_replica_url), "", 0, 0,
     "read API with READ_REPLICAS=1: redis://host:port of the replica (empty: one REDIS_SENTINELS "
     "list as healthy)"},
    {"READ_REPLICA_MAX_LAG_MS", CFG_INT, I(read_replica_max_lag_ms), "1000", 50, 10000,
     "read API: a replica further behind the primary than this (or whose link is down) is not "
     "read from"},
};

#undef S
#undef I

__attribute__((format(printf, 3, 4))) static void append(char *errs, size_t len, const char *fmt, ...)
{
    size_t used = strlen(errs);
    va_list ap;
    if (used + 1 >= len)
        return;
    va_start(ap, fmt);
    vsnprintf(errs + used, len - used, fmt, ap);
    va_end(ap);
}

status cfg_load(struct cfg *c, char *errs, size_t errs_len)
{
    status st = ST_OK;

    memset(c, 0, sizeof *c);
    if (errs_len > 0)
        errs[0] = '\0';
    for (size_t i = 0; i < sizeof cfg_table / sizeof cfg_table[0]; i++) {
        const struct cfg_entry *t = &cfg_table[i];
        const char *v = getenv(t->name);
        char *field = (char *)c + t->offset;

        if (v == NULL)
            v = t->def;
        switch (t->kind) {
        case CFG_STR:
            if (strlen(v) >= t->size) {
                append(errs, errs_len, "%s: value longer than %zu bytes\n", t->name, t->size - 1);
                st = ST_INVALID;
            } else if (t->min > 0 && v[0] == '\0') {
                append(errs, errs_len, "%s: must not be empty\n", t->name);
                st = ST_INVALID;
            } else {
                memcpy(field, v, strlen(v) + 1);
            }
            break;
        case CFG_INT: {
            char *end = NULL;
            long n;
            errno = 0;
            n = strtol(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || n < t->min || n > t->max) {
                append(errs, errs_len, "%s: '%s' is not an integer in %ld..%ld\n", t->name, v, t->min,
                       t->max);
                st = ST_INVALID;
            } else {
                *(int *)field = (int)n;
            }
            break;
        }
        case CFG_LEVEL: {
            int lvl = log_level_parse(v);
            if (lvl < 0) {
                append(errs, errs_len, "%s: '%s' is not one of debug, info, warn, error\n", t->name, v);
                st = ST_INVALID;
            } else {
                *(int *)field = lvl;
            }
            break;
        }
        case CFG_LOGFMT: {
            int fmt = log_format_parse(v);
            if (fmt < 0) {
                append(errs, errs_len, "%s: '%s' is not one of text, json\n", t->name, v);
                st = ST_INVALID;
            } else {
                *(int *)field = fmt;
            }
            break;
        }
        }
    }
    if (c->redis_url[0] != '\0') {
        struct err e;
        if (cfg_parse_redis_url(c->redis_url, c->redis_host, sizeof c->redis_host, &c->redis_port,
                                &c->redis_db, &e) != ST_OK) {
            append(errs, errs_len, "REDIS_URL: %s\n", e.msg);
            st = ST_INVALID;
        }
    }
    if (strcmp(c->auth_mode, "auto") != 0 && strcmp(c->auth_mode, "on") != 0 &&
        strcmp(c->auth_mode, "off") != 0) {
        append(errs, errs_len, "AUTH: '%s' is not one of auto, on, off\n", c->auth_mode);
        st = ST_INVALID;
    }
    if (c->redis_sentinels[0] != '\0') {
        struct err e;
        if (cfg_parse_hostports(c->redis_sentinels, c->redis_sentinel, CFG_MAX_SENTINELS,
                                &c->redis_sentinel_count, &e) != ST_OK) {
            append(errs, errs_len, "REDIS_SENTINELS: %s\n", e.msg);
            st = ST_INVALID;
        }
        if (c->redis_master_name[0] == '\0') {
            append(errs, errs_len, "REDIS_MASTER_NAME: must be set with REDIS_SENTINELS\n");
            st = ST_INVALID;
        }
    }
    if (c->redis_replica_url[0] != '\0') {
        struct err e;
        int db = 0;
        if (cfg_parse_redis_url(c->redis_replica_url, c->redis_replica_host,
                                sizeof c->redis_replica_host, &c->redis_replica_port, &db, &e) != ST_OK) {
            append(errs, errs_len, "REDIS_REPLICA_URL: %s\n", e.msg);
            st = ST_INVALID;
        } else if (strchr(c->redis_replica_url + 8, '/') != NULL && db != c->redis_db) {
            append(errs, errs_len, "REDIS_REPLICA_URL: database %d is not REDIS_URL's %d\n", db,
                   c->redis_db);
            st = ST_INVALID;
        }
        if (!c->read_replicas) {
            append(errs, errs_len, "REDIS_REPLICA_URL: set but READ_REPLICAS is 0\n");
            st = ST_INVALID;
        }
    } else if (c->read_replicas && c->redis_sentinel_count == 0) {
        append(errs, errs_len, "READ_REPLICAS: 1 needs REDIS_REPLICA_URL or REDIS_SENTINELS\n");
        st = ST_INVALID;
    }
    for (const char *u = c->nats_url; *u != '\0';) {
        const char *end = strchr(u, ',');
        size_t len = end != NULL ? (size_t)(end - u) : strlen(u);
        while (len > 0 && *u == ' ')
            u++, len--;
        if (!(len > 7 && strncmp(u, "nats://", 7) == 0) && !(len > 6 && strncmp(u, "tls://", 6) == 0)) {
            append(errs, errs_len, "NATS_URL: '%.*s' must start with nats:// or tls://\n", (int)len, u);
            st = ST_INVALID;
            break;
        }
        u = end != NULL ? end + 1 : u + len;
    }
    return st;
}

status cfg_parse_hostports(const char *list, struct cfg_hostport *out, int max, int *count,
                           struct err *e)
{
    const char *p = list;

    *count = 0;
    while (*p != '\0') {
        const char *end = strchr(p, ','), *colon;
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char *stop;
        long port;

        colon = memchr(p, ':', len);
        if (colon == NULL || colon == p || (size_t)(colon - p) >= sizeof out[0].host)
            return err_set(e, ST_INVALID, "'%.*s' is not host:port", (int)len, p);
        if (*count == max)
            return err_set(e, ST_INVALID, "more than %d entries", max);
        port = strtol(colon + 1, &stop, 10);
        if (stop == colon + 1 || stop != p + len || port < 1 || port > 65535)
            return err_set(e, ST_INVALID, "bad port in '%.*s'", (int)len, p);
        memcpy(out[*count].host, p, (size_t)(colon - p));
        out[*count].host[colon - p] = '\0';
        out[*count].port = (int)port;
        (*count)++;
        p = end != NULL ? end + 1 : p + len;
    }
    if (*count == 0)
        return err_set(e, ST_INVALID, "empty list");
    return ST_OK;
}

/* Which binaries read a variable, for --help (a variable not listed here: every binary). */
static const struct {
    const char *name, *users;
} cfg_users[] = {
    {"NATS_URL", " writer projector "},
    {"NATS_REPLICAS", " writer projector "},
    {"REDIS_URL", " projector readapi "},
    {"REDIS_USERNAME", " projector readapi "},
    {"REDIS_PASSWORD", " projector readapi "},
    {"REDIS_SENTINELS", " projector readapi "},
    {"REDIS_MASTER_NAME", " projector readapi "},
    {"HTTP_BIND", " writer readapi projector "},
    {"WRITER_PORT", " writer "},
    {"READAPI_PORT", " readapi "},
    {"PG_POOL_SIZE", " writer readapi "},
    {"HTTP_THREADS", " writer readapi "},
    {"PROJECTOR_BATCH", " projector "},
    {"PROJECTOR_FETCH_BYTES", " projector "},
    {"PROJECTOR_WORKER_EVENTS", " projector "},
    {"RELAY_BATCH", " writer "},
    {"LOCK_TIMEOUT_MS", " writer "},
    {"OUTCOME_WAIT_MS", " writer "},
    {"IDEMPOTENCY_RETENTION_S", " writer "},
    {"RELAY_BUS_GIVEUP_MS", " writer "},
    {"GROUP_COMMIT_DELAY_US", " writer "},
    {"PUBLISH_AFTER_COMMIT", " writer "},
    {"READ_CACHE_TTL_MS", " readapi "},
    {"READ_CACHE_SLOTS", " readapi "},
    {"READ_REPLICAS", " readapi "},
    {"REDIS_REPLICA_URL", " readapi "},
    {"READ_REPLICA_MAX_LAG_MS", " readapi "},
};

static int used_by(const char *name, const char *service)
{
    char word[64];

    if (service == NULL)
        return 1;
    snprintf(word, sizeof word, " %s ", service);
    for (size_t i = 0; i < sizeof cfg_users / sizeof cfg_users[0]; i++)
        if (strcmp(cfg_users[i].name, name) == 0)
            return strstr(cfg_users[i].users, word) != NULL;
    return 1;
}

void cfg_usage(const char *service)
{
    fprintf(stderr, "environment variables:\n");
    for (size_t i = 0; i < sizeof cfg_table / sizeof cfg_table[0]; i++) {
        const struct cfg_entry *t = &cfg_table[i];
        if (!used_by(t->name, service))
            continue;
        if (t->kind == CFG_INT)
            fprintf(stderr, "  %-22s %s (default %s, %ld..%ld)\n", t->name, t->help, t->def, t->min,
                    t->max);
        else
            fprintf(stderr, "  %-22s %s (default '%s')\n", t->name, t->help, t->def);
    }
}

status cfg_parse_redis_url(const char *url, char *host, size_t host_len, int *port, int *db,
                           struct err *e)
{
    const char *p = url;
    const char *colon, *slash, *hend;
    long n;
    char *end;

    if (strncmp(p, "redis://", 8) != 0)
        return err_set(e, ST_INVALID, "'%s' must start with redis://", url);
    p += 8;
    if (strchr(p, '@') != NULL)
        return err_set(e, ST_INVALID, "credentials in '%s' are not supported", url);
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon != NULL && slash != NULL && colon > slash)
        colon = NULL;
    hend = colon != NULL ? colon : (slash != NULL ? slash : p + strlen(p));
    if (hend == p || (size_t)(hend - p) >= host_len)
        return err_set(e, ST_INVALID, "bad host in '%s'", url);
    memcpy(host, p, (size_t)(hend - p));
    host[hend - p] = '\0';
    *port = 6379;
    *db = 0;
    if (colon != NULL) {
        n = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || n < 1 || n > 65535 || (*end != '\0' && *end != '/'))
            return err_set(e, ST_INVALID, "bad port in '%s'", url);
        *port = (int)n;
    }
    if (slash != NULL && slash[1] != '\0') {
        n = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end != '\0' || n < 0 || n > 15)
            return err_set(e, ST_INVALID, "bad database number in '%s'", url);
        *db = (int)n;
    }
    return ST_OK;
}
