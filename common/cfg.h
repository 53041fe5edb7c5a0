/* Configuration from environment variables: one table, defaults and bounds, read once at start. */
#ifndef COMMON_CFG_H
#define COMMON_CFG_H

#include <stddef.h>

#include "status.h"

#define CFG_MAX_SENTINELS 8

struct cfg_hostport {
    char host[128];
    int port;
};

struct cfg {
    char database_url[1024];
    char nats_url[512];   /* one URL or several, comma-separated */
    int nats_replicas;    /* of the stream (and buckets) the services create */
    char redis_url[512];
    char redis_host[256]; /* parsed from redis_url */
    int redis_port;
    int redis_db;
    char redis_username[128];  /* ACL user (empty: default) */
    char redis_password[256];  /* empty: no AUTH */
    char redis_sentinels[512]; /* empty: redis_host:redis_port is the server */
    char redis_master_name[128];
    struct cfg_hostport redis_sentinel[CFG_MAX_SENTINELS]; /* parsed from redis_sentinels */
    int redis_sentinel_count;
    char http_bind[64];   /* address the HTTP services listen on */
    int writer_port;
    int readapi_port;
    int projector_port;   /* the projector's /healthz, /readyz, /metrics */
    int log_level;        /* enum log_level */
    int log_format;       /* enum log_format */
    char api_token[256];  /* static admin bearer token for scripts (empty: none) */
    char metrics_token[256]; /* bearer token that may read /metrics only (empty: none) */
    char jwt_secret[512];    /* HS256 key (empty: none) */
    char jwt_public_key_file[512]; /* PEM public key for RS256/ES256 (empty: none) */
    char jwt_issuer[256];    /* required iss (empty: not checked) */
    char jwt_audience[256];  /* required in aud (empty: not checked) */
    int jwt_leeway_s;        /* clock skew allowed on exp/nbf */
    char auth_mode[8];       /* "auto", "on" or "off" */
    int http_max_connections;   /* connections an HTTP service holds at once */
    int http_per_ip_connections; /* of which from one client address */
    int http_timeout_s;         /* idle/slow connection timeout */
    int http_max_waiters;       /* concurrent min_version waits (beyond: 503 at once) */
    int pg_pool_size;     /* writer: Postgres connections for commands */
    int http_threads;     /* worker threads of an HTTP service */
    int projector_batch;  /* messages fetched per pull */
    int projector_fetch_bytes; /* bytes per fetch of a partition (a message larger comes alone) */
    int projector_worker_events; /* decoded events a worker holds at most over its partitions */
    int partitions;       /* stream partitions: events.<fnv1a32(stream_id) % partitions> */
    int projector_lease_ms; /* partition lease lifetime (KV bucket TTL) */
    int relay_batch;      /* outbox rows per publish round */
    int lock_timeout_ms;  /* writer: wait for an account row lock */
    int outcome_wait_ms;  /* writer: bound on resolving a lost COMMIT answer */
    int group_commit_delay_us; /* writer: gather time before a batch while commands come together */
    int idempotency_retention_s; /* writer: lifetime of an idempotency record */
    int relay_bus_giveup_ms;     /* writer: unpublishable this long: the relay lock is released */
    int publish_after_commit;    /* writer: events published right behind their COMMIT */
    int request_timeout_ms; /* bound on any single dependency call */
    int read_cache_ttl_ms;  /* read API: longest an account document is served from memory */
    int read_cache_slots;   /* read API: account documents kept in memory */
    int read_replicas;      /* read API: plain reads from a Redis replica (1) */
    char redis_replica_url[512]; /* that replica (empty: one the Sentinels list) */
    char redis_replica_host[256]; /* parsed from redis_replica_url */
    int redis_replica_port;
    int read_replica_max_lag_ms; /* a replica further behind is not read from */
};

/* Reads every variable of the table. Every bad value is reported on its own line in
 * errs (caller's buffer); returns ST_INVALID when any was bad. */
status cfg_load(struct cfg *c, char *errs, size_t errs_len) WUR;

/* Prints the variables service ("writer", "projector", "readapi"; NULL: all) reads, with
 * defaults and bounds (for --help). */
void cfg_usage(const char *service);

/* Parses "host:port,host:port,..." into out (at most max entries); ST_INVALID when malformed
 * or empty. */
status cfg_parse_hostports(const char *list, struct cfg_hostport *out, int max, int *count,
                           struct err *e) WUR;

/* Parses redis://host:port/db into parts; returns ST_INVALID on a malformed URL. */
status cfg_parse_redis_url(const char *url, char *host, size_t host_len, int *port, int *db,
                           struct err *e) WUR;

#endif
