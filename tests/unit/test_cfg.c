/* Unit tests of configuration loading: defaults, bounds, every bad value reported at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "log.h"

static const char *const vars[] = {"DATABASE_URL", "NATS_URL", "REDIS_URL", "WRITER_PORT", "READAPI_PORT",
                                   "PROJECTOR_PORT", "LOG_LEVEL", "LOG_FORMAT", "API_TOKEN", "HTTP_THREADS", "PROJECTOR_BATCH",
                                   "NATS_REPLICAS", "REDIS_SENTINELS", "REDIS_MASTER_NAME", "READ_REPLICAS",
                                   "REDIS_REPLICA_URL", "READ_REPLICA_MAX_LAG_MS", NULL};

static int clear_env(void **state)
{
    (void)state;
    for (int i = 0; vars[i] != NULL; i++)
        unsetenv(vars[i]);
    return 0;
}

static void test_defaults(void **state)
{
    struct cfg c;
    char errs[1024];

    (void)state;
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_string_equal(errs, "");
    assert_int_equal(c.writer_port, 8080);
    assert_int_equal(c.readapi_port, 8081);
    assert_int_equal(c.projector_port, 8082);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 26379);
    assert_int_equal(c.redis_db, 0);
    assert_string_equal(c.api_token, "");
    assert_int_equal(c.log_format, LOG_FMT_TEXT);
}

static void test_values_read(void **state)
{
    struct cfg c;
    char errs[1024];

    (void)state;
    setenv("WRITER_PORT", "9000", 1);
    setenv("REDIS_URL", "redis://cache.local:7000/3", 1);
    setenv("LOG_LEVEL", "DEBUG", 1);
    setenv("API_TOKEN", "s3cret", 1);
    setenv("LOG_FORMAT", "json", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_int_equal(c.writer_port, 9000);
    assert_string_equal(c.redis_host, "cache.local");
    assert_int_equal(c.redis_port, 7000);
    assert_int_equal(c.redis_db, 3);
    assert_int_equal(c.log_level, 0);
    assert_int_equal(c.log_format, LOG_FMT_JSON);
    assert_string_equal(c.api_token, "s3cret");
}

static void test_every_bad_value_reported(void **state)
{
    struct cfg c;
    char errs[2048];

    (void)state;
    setenv("WRITER_PORT", "99999", 1);
    setenv("READAPI_PORT", "80a", 1);
    setenv("LOG_LEVEL", "loud", 1);
    setenv("LOG_FORMAT", "xml", 1);
    setenv("REDIS_URL", "http://x", 1);
    setenv("NATS_URL", "localhost:4222", 1);
    setenv("PROJECTOR_BATCH", "0", 1);
    setenv("DATABASE_URL", "", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_INVALID);
    assert_non_null(strstr(errs, "WRITER_PORT: '99999'"));
    assert_non_null(strstr(errs, "READAPI_PORT: '80a'"));
    assert_non_null(strstr(errs, "LOG_LEVEL: 'loud'"));
    assert_non_null(strstr(errs, "LOG_FORMAT: 'xml' is not one of text, json"));
    assert_non_null(strstr(errs, "REDIS_URL:"));
    assert_non_null(strstr(errs, "NATS_URL:"));
    assert_non_null(strstr(errs, "PROJECTOR_BATCH:"));
    assert_non_null(strstr(errs, "DATABASE_URL: must not be empty"));
}

static void test_redis_urls(void **state)
{
    static const struct {
        const char *url;
        status st;
        const char *host;
        int port, db;
    } cases[] = {
        {"redis://h", ST_OK, "h", 6379, 0},     {"redis://h:1/2", ST_OK, "h", 1, 2},
        {"redis://h/15", ST_OK, "h", 6379, 15}, {"redis://h:0", ST_INVALID, "", 0, 0},
        {"redis://h/16", ST_INVALID, "", 0, 0}, {"redis://:5", ST_INVALID, "", 0, 0},
        {"redis://u:p@h", ST_INVALID, "", 0, 0}, {"rediss://h", ST_INVALID, "", 0, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[64] = "";
        int port = 0, db = 0;
        struct err e;
        assert_int_equal(cfg_parse_redis_url(cases[i].url, host, sizeof host, &port, &db, &e), cases[i].st);
        if (cases[i].st == ST_OK) {
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
            assert_int_equal(db, cases[i].db);
        }
    }
}

/* The HA topology's settings: a NATS server list, replicas, Sentinels with a master name. */
static void test_cluster_settings(void **state)
{
    struct cfg c;
    char errs[2048];

    (void)state;
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_int_equal(c.nats_replicas, 1);
    assert_int_equal(c.redis_sentinel_count, 0);
    setenv("NATS_URL", "nats://127.0.0.1:1,nats://127.0.0.1:2, tls://h:3", 1);
    setenv("NATS_REPLICAS", "3", 1);
    setenv("REDIS_SENTINELS", "127.0.0.1:29020,s2:29021,s3:29022", 1);
    setenv("REDIS_MASTER_NAME", "cqrs", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_int_equal(c.nats_replicas, 3);
    assert_int_equal(c.redis_sentinel_count, 3);
    assert_string_equal(c.redis_sentinel[1].host, "s2");
    assert_int_equal(c.redis_sentinel[2].port, 29022);
    /* each URL of the list is checked; sentinels need a master name; ports are ports */
    setenv("NATS_URL", "nats://127.0.0.1:1,127.0.0.1:2", 1);
    setenv("NATS_REPLICAS", "6", 1);
    setenv("REDIS_SENTINELS", "127.0.0.1:29020,s2", 1);
    unsetenv("REDIS_MASTER_NAME");
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_INVALID);
    assert_non_null(strstr(errs, "NATS_URL: '127.0.0.1:2'"));
    assert_non_null(strstr(errs, "NATS_REPLICAS:"));
    assert_non_null(strstr(errs, "REDIS_SENTINELS: 's2' is not host:port"));
    assert_non_null(strstr(errs, "REDIS_MASTER_NAME:"));
    setenv("REDIS_SENTINELS", "h:0", 1);
    setenv("REDIS_MASTER_NAME", "cqrs", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_INVALID);
    assert_non_null(strstr(errs, "REDIS_SENTINELS: bad port"));
}

/* Reads from a replica: off by default; a replica URL or Sentinels to find one; its database is
 * REDIS_URL's; a URL without READ_REPLICAS=1 is refused rather than ignored. */
static void test_replica_settings(void **state)
{
    struct cfg c;
    char errs[2048];

    (void)state;
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_int_equal(c.read_replicas, 0);
    assert_int_equal(c.read_replica_max_lag_ms, 1000);
    setenv("READ_REPLICAS", "1", 1);
    setenv("REDIS_REPLICA_URL", "redis://10.0.0.2:6380", 1);
    setenv("READ_REPLICA_MAX_LAG_MS", "250", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    assert_string_equal(c.redis_replica_host, "10.0.0.2");
    assert_int_equal(c.redis_replica_port, 6380);
    assert_int_equal(c.read_replica_max_lag_ms, 250);
    unsetenv("REDIS_REPLICA_URL");
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_INVALID);
    assert_non_null(strstr(errs, "READ_REPLICAS: 1 needs REDIS_REPLICA_URL or REDIS_SENTINELS"));
    setenv("REDIS_SENTINELS", "127.0.0.1:29020", 1);
    setenv("REDIS_MASTER_NAME", "cqrs", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_OK);
    setenv("READ_REPLICAS", "0", 1);
    setenv("REDIS_REPLICA_URL", "redis://h:1/3", 1);
    setenv("READ_REPLICA_MAX_LAG_MS", "5", 1);
    assert_int_equal(cfg_load(&c, errs, sizeof errs), ST_INVALID);
    assert_non_null(strstr(errs, "REDIS_REPLICA_URL: set but READ_REPLICAS is 0"));
    assert_non_null(strstr(errs, "REDIS_REPLICA_URL: database 3 is not REDIS_URL's 0"));
    assert_non_null(strstr(errs, "READ_REPLICA_MAX_LAG_MS:"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_values_read, clear_env),
        cmocka_unit_test_setup(test_every_bad_value_reported, clear_env),
        cmocka_unit_test_setup(test_redis_urls, clear_env),
        cmocka_unit_test_setup(test_cluster_settings, clear_env),
        cmocka_unit_test_setup(test_replica_settings, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
