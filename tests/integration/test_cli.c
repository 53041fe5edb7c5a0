/* Issue 18: CLIs a person can read. Each binary's --help lists its own subcommands and only the
 * variables it reads; scripts/demo --help helps instead of running; and every exit code of
 * README's table is produced where it says (3 is shown by test_stall_and_heal and
 * test_rebuild: rebuild --verify). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "support.h"
#include "tstack.h"
#include "uuid.h"

static char out[32768];

/* Runs "<env> <bin dir>/<binary> <args>" (binary "scripts/..." runs from the source tree) with
 * the stack's settings, extra_env overriding them; output into out. Returns the exit code. */
static int run(const char *extra_env, const char *binary, const char *args)
{
    char cmd[4096], path[1024];
    size_t used = 0;
    FILE *p;
    int wst;

    if (strncmp(binary, "scripts/", 8) == 0)
        snprintf(path, sizeof path, "%s/%s", getenv("CQRS_SOURCE_DIR"), binary);
    else
        snprintf(path, sizeof path, "%s/%s", getenv("CQRS_BIN_DIR"), binary);
    snprintf(cmd, sizeof cmd,
             "env DATABASE_URL='%s' NATS_URL='%s' REDIS_URL='%s' REQUEST_TIMEOUT_MS=2000 %s '%s' %s 2>&1 </dev/null",
             tenv("DATABASE_URL"), tenv("NATS_URL"), tenv("REDIS_URL"), extra_env, path, args);
    p = popen(cmd, "r");
    if (p == NULL)
        tfail("popen %s", cmd);
    while (used + 1 < sizeof out) {
        size_t n = fread(out + used, 1, sizeof out - used - 1, p);
        if (n == 0)
            break;
        used += n;
    }
    out[used] = '\0';
    while (fgetc(p) != EOF)
        ;
    wst = pclose(p);
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
}

static void expect(int code, const char *extra_env, const char *binary, const char *args)
{
    int rc = run(extra_env, binary, args);

    fprintf(stderr, "%s %s %s -> %d\n", extra_env, binary, args, rc);
    if (rc != code)
        tfail("%s %s %s: exit %d, expected %d:\n%s", extra_env, binary, args, rc, code, out);
}

static void has(const char *what)
{
    if (strstr(out, what) == NULL)
        tfail("'%s' missing from:\n%s", what, out);
}

static void lacks(const char *what)
{
    if (strstr(out, what) != NULL)
        tfail("'%s' should not be in:\n%s", what, out);
}

static void test_help(void **state)
{
    static const char *const projector_cmds[] = {"run", "status", "replay-parked", "discard-parked", "rebuild",
                                                 "--verify", "--abort", "rollback", "drop-generation"};

    (void)state;
    expect(0, "", "writer", "--help");
    has("usage: writer");
    has("WRITER_PORT");
    has("RELAY_BATCH");
    has("exit status");
    lacks("READ_CACHE_TTL_MS");
    lacks("PROJECTOR_BATCH");
    lacks("READAPI_PORT");

    expect(0, "", "readapi", "--help");
    has("usage: readapi");
    has("READAPI_PORT");
    has("READ_CACHE_TTL_MS");
    lacks("RELAY_BATCH");
    lacks("PROJECTOR_BATCH");
    lacks("WRITER_PORT");
    lacks("NATS_URL");
    lacks("OUTCOME_WAIT_MS");

    expect(0, "", "projector", "--help");
    for (size_t i = 0; i < sizeof projector_cmds / sizeof projector_cmds[0]; i++)
        has(projector_cmds[i]);
    has("PROJECTOR_BATCH");
    has("5 not found");
    lacks("READ_CACHE_TTL_MS");
    lacks("WRITER_PORT");
    lacks("RELAY_BATCH");
    lacks("LOCK_TIMEOUT_MS");
    lacks("IDEMPOTENCY_RETENTION_S");

    expect(0, "", "scripts/demo", "--help");
    has("usage: scripts/demo");
    lacks("== open two accounts"); /* it helped instead of running */
}

static void test_exit_codes(void **state)
{
    redisContext *rc = tredis_open();
    char args[128], id[UUID_STR_SIZE];

    (void)state;
    /* 2: usage or configuration */
    expect(2, "", "projector", "");
    expect(2, "", "projector", "frobnicate");
    expect(2, "", "projector", "status extra");
    expect(2, "", "projector", "rebuild --bogus");
    expect(2, "", "projector", "replay-parked not-an-event-id");
    has("not an event id");
    expect(2, "", "projector", "discard-parked");
    expect(2, "", "projector", "discard-parked not-an-event-id --reason x");
    uuid_generate(id);
    snprintf(args, sizeof args, "discard-parked %s", id);
    expect(2, "", "projector", args);
    has("--reason is required");
    expect(2, "", "writer", "extra");
    expect(2, "", "readapi", "extra");
    expect(2, "WRITER_PORT=0", "writer", "");
    has("WRITER_PORT");
    expect(2, "LOG_LEVEL=loud", "projector", "status");
    expect(2, "", "scripts/demo", "extra");

    /* 1: a dependency does not answer */
    expect(1, "REDIS_URL=redis://127.0.0.1:1/0", "projector", "status");

    /* 0: nothing to do is done */
    expect(0, "", "projector", "replay-parked");
    has("no parked events");
    expect(0, "", "projector", "drop-generation");
    has("no previous generation to drop");
    expect(0, "", "projector", "rebuild --abort");
    has("no rebuild in progress");
    expect(0, "", "projector", "status");

    /* 5: not found */
    uuid_generate(id);
    snprintf(args, sizeof args, "replay-parked %s", id);
    expect(5, "", "projector", args);
    has("no parked event");
    expect(5, "", "projector", "rollback");
    snprintf(args, sizeof args, "discard-parked %s --reason 'gone'", id);
    expect(5, "", "projector", args);
    has("no parked event");

    /* 4: a parked message that is not in the event store cannot be discarded */
    freeReplyObject(redisCommand(rc, "HSET rm:parked %s {\"account_id\":\"%s\",\"stream_version\":2,\"reason\":\"cli\"}",
                                 id, id));
    expect(4, "", "projector", args);
    has("not in the event store");
    freeReplyObject(redisCommand(rc, "HDEL rm:parked %s", id));

    /* 4: refused while another rebuild holds the lease (it waits out one lease period first) */
    freeReplyObject(redisCommand(rc, "SET rm:rebuild:lease test-cli PX 60000"));
    expect(4, "", "projector", "rebuild");
    freeReplyObject(redisCommand(rc, "DEL rm:rebuild:lease"));
    redisFree(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_exit_codes),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
