/* Test support shared by the unit and integration suites. */
#include "support.h"

#include "cfg.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#define TENV_MAX 64

static char *tenv_keys[TENV_MAX];
static char *tenv_vals[TENV_MAX];
static int tenv_count = -1;

static void tenv_load(void)
{
    const char *path = getenv("CQRS_STACK_ENV");
    char line[2048];
    FILE *f;

    tenv_count = 0;
    if (path == NULL || (f = fopen(path, "r")) == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL && tenv_count < TENV_MAX) {
        char *eq = strchr(line, '=');
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (eq == NULL || line[0] == '#')
            continue;
        *eq = '\0';
        tenv_keys[tenv_count] = strdup(line);
        tenv_vals[tenv_count] = strdup(eq + 1);
        tenv_count++;
    }
    fclose(f);
}

const char *tenv(const char *key)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *v = getenv(key);

    pthread_once(&once, tenv_load); /* the first call may come from several threads at once */
    for (int i = 0; i < tenv_count; i++)
        if (strcmp(tenv_keys[i], key) == 0)
            return tenv_vals[i];
    return v;
}

int64_t tnow_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "thttp.h"

void tfail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

static const char *const tenv_exported[] = {"DATABASE_URL",  "NATS_URL",        "REDIS_URL",
                                             "WRITER_PORT",   "READAPI_PORT",    "JWT_SECRET",
                                             "API_TOKEN",     "NATS_REPLICAS",   "REDIS_SENTINELS",
                                             "REDIS_MASTER_NAME", NULL};

/* Ports handed to the `projector run` processes this test started: several may run at once,
 * each needs its own HTTP port. The stack's PROJECTOR_PORT first, then the next ones (the
 * stack's services are 10 ports apart; +8 is the benchmark's nginx). */
#define PROJ_PORTS 7
static struct {
    pid_t pid;
    int port;
} proj_ports[64];

static int port_bindable(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, ok;

    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int proj_port_pick(void)
{
    const char *v = tenv("PROJECTOR_PORT");
    int base = v != NULL ? atoi(v) : 8082;

    for (int k = 0; k < PROJ_PORTS; k++) {
        int taken = 0;
        for (size_t i = 0; i < sizeof proj_ports / sizeof proj_ports[0]; i++)
            if (proj_ports[i].pid > 0 && proj_ports[i].port == base + k && kill(proj_ports[i].pid, 0) == 0)
                taken = 1;
        if (!taken && port_bindable(base + k))
            return base + k;
    }
    tfail("no free projector port in %d..%d", base, base + PROJ_PORTS - 1);
}

static void proj_port_note(pid_t pid, int port)
{
    size_t best = 0;
    for (size_t i = 0; i < sizeof proj_ports / sizeof proj_ports[0]; i++)
        if (proj_ports[i].pid <= 0 || kill(proj_ports[i].pid, 0) != 0) {
            best = i;
            break;
        }
    proj_ports[best].pid = pid;
    proj_ports[best].port = port;
}

int tsvc_projector_port(pid_t pid)
{
    for (size_t i = 0; i < sizeof proj_ports / sizeof proj_ports[0]; i++)
        if (proj_ports[i].pid == pid)
            return proj_ports[i].port;
    return -1;
}

pid_t tsvc_spawn(const char *binary, const char *const *args, const char *const *extra_env, int out_fd)
{
    const char *bindir = getenv("CQRS_BIN_DIR");
    const char *vals[sizeof tenv_exported / sizeof tenv_exported[0]];
    char path[1024];
    const char *argv[16];
    char proj_port_env[16];
    int argc = 0, proj_port = 0;
    pid_t pid;

    if (bindir == NULL)
        tfail("CQRS_BIN_DIR is not set");
    snprintf(path, sizeof path, "%s/%s", bindir, binary);
    argv[argc++] = path;
    for (int i = 0; args != NULL && args[i] != NULL && argc < 15; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    /* looked up before the fork: the child only sets and execs */
    for (int i = 0; tenv_exported[i] != NULL; i++)
        vals[i] = tenv(tenv_exported[i]);
    if (strcmp(binary, "projector") == 0 && args != NULL && args[0] != NULL && strcmp(args[0], "run") == 0)
        proj_port = proj_port_pick();
    snprintf(proj_port_env, sizeof proj_port_env, "%d", proj_port);
    pid = fork();
    if (pid < 0)
        tfail("fork: %s", strerror(errno));
    if (pid == 0) {
        /* a test that aborts must not leave services holding the stack's ports */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (out_fd >= 0) {
            dup2(out_fd, 1);
            dup2(out_fd, 2);
            close(out_fd);
        }
        for (int i = 0; tenv_exported[i] != NULL; i++)
            if (vals[i] != NULL)
                setenv(tenv_exported[i], vals[i], 1);
        if (proj_port > 0)
            setenv("PROJECTOR_PORT", proj_port_env, 1);
        setenv("LOG_LEVEL", "info", 1);
        for (int i = 0; extra_env != NULL && extra_env[i] != NULL; i++)
            putenv((char *)extra_env[i]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    if (proj_port > 0)
        proj_port_note(pid, proj_port);
    return pid;
}

pid_t tsvc_start(const char *binary, const char *const *args, const char *const *extra_env)
{
    const char *stackdir = tenv("STACK_DIR");
    char logpath[1024];
    int fd;
    pid_t pid;

    snprintf(logpath, sizeof logpath, "%s/logs/test-%s.log", stackdir != NULL ? stackdir : "/tmp",
             binary);
    /* close-on-exec here: only the child's stdout and stderr keep it */
    fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid = tsvc_spawn(binary, args, extra_env, fd);
    if (fd >= 0)
        close(fd);
    return pid;
}

int tsvc_stop(pid_t pid, int sig, int timeout_ms)
{
    int wst = 0;
    int64_t deadline = tnow_ms() + timeout_ms;

    if (pid <= 0)
        return -1;
    kill(pid, sig);
    for (;;) {
        pid_t r = waitpid(pid, &wst, WNOHANG);
        if (r == pid)
            break;
        if (r < 0)
            return -1;
        if (tnow_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &wst, 0);
            break;
        }
        usleep(10000);
    }
    if (WIFEXITED(wst))
        return WEXITSTATUS(wst);
    return 128 + WTERMSIG(wst);
}

bool twait_http_ok(const char *base, const char *path, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;

    while (tnow_ms() < deadline) {
        struct thttp_resp r;
        int ok = thttp_request(&r, "GET", base, path, NULL, NULL, 1000) == 0 && r.status == 200;
        thttp_resp_release(&r);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

void tsvc_start_all(pid_t *writer, pid_t *projector, pid_t *readapi, int ready_timeout_ms)
{
    static const char *const run[] = {"run", NULL};

    *writer = tsvc_start("writer", NULL, NULL);
    *projector = tsvc_start("projector", run, NULL);
    *readapi = tsvc_start("readapi", NULL, NULL);
    if (!twait_http_ok(tenv("WRITER_URL"), "/healthz", 20000))
        tfail("writer did not become healthy at %s", tenv("WRITER_URL"));
    if (!twait_http_ok(tenv("READAPI_URL"), "/healthz", 20000))
        tfail("readapi did not become healthy at %s", tenv("READAPI_URL"));
    /* ready: Redis reachable and a current generation (the projector creates it at start) */
    if (!twait_http_ok(tenv("READAPI_URL"), "/readyz", ready_timeout_ms))
        tfail("readapi did not become ready at %s", tenv("READAPI_URL"));
}

void treset_state(void)
{
    PGconn *pg = PQconnectdb(tenv("DATABASE_URL"));
    PGresult *res;

    if (PQstatus(pg) != CONNECTION_OK)
        tfail("connect to postgres: %s", PQerrorMessage(pg));
    /* tables exist only after a service ran its migrations once */
    res = PQexec(pg, "DO $$ BEGIN IF to_regclass('outbox_dead_letters') IS NOT NULL THEN "
                     "TRUNCATE outbox_dead_letters, outbox, events, accounts, idempotency_keys "
                     "RESTART IDENTITY CASCADE; "
                     "ELSIF to_regclass('events') IS NOT NULL THEN "
                     "TRUNCATE outbox, events, accounts, idempotency_keys RESTART IDENTITY CASCADE; "
                     "END IF; END $$");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("reset postgres: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    treset_read_side();
}

void tsentinel_master(char *host, size_t host_len, int *port)
{
    struct cfg_hostport s[CFG_MAX_SENTINELS];
    int n = 0;
    struct err e;

    if (cfg_parse_hostports(tenv("REDIS_SENTINELS"), s, CFG_MAX_SENTINELS, &n, &e) != ST_OK)
        tfail("REDIS_SENTINELS: %s", e.msg);
    for (int i = 0; i < n; i++) {
        redisContext *c = redisConnect(s[i].host, s[i].port);
        redisReply *r = c != NULL && !c->err
                            ? redisCommand(c, "SENTINEL get-master-addr-by-name %s", tenv("REDIS_MASTER_NAME"))
                            : NULL;
        int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
        if (ok) {
            snprintf(host, host_len, "%s", r->element[0]->str);
            *port = atoi(r->element[1]->str);
        }
        freeReplyObject(r);
        if (c != NULL)
            redisFree(c);
        if (ok)
            return;
    }
    tfail("no sentinel of '%s' names the master", tenv("REDIS_SENTINELS"));
}

redisContext *tredis_open(void)
{
    char host[256];
    int port = 0, db = 0;
    struct err e;
    redisContext *rc;
    redisReply *r;

    if (cfg_parse_redis_url(tenv("REDIS_URL"), host, sizeof host, &port, &db, &e) != ST_OK)
        tfail("REDIS_URL: %s", e.msg);
    if (tenv("REDIS_SENTINELS") != NULL && tenv("REDIS_SENTINELS")[0] != '\0')
        tsentinel_master(host, sizeof host, &port);
    rc = redisConnect(host, port);
    if (rc == NULL || rc->err)
        tfail("connect to redis %s:%d", host, port);
    r = redisCommand(rc, "SELECT %d", db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("select redis database %d", db);
    freeReplyObject(r);
    return rc;
}

long tredis_count_keys(redisContext *rc, const char *pattern)
{
    char cursor[32] = "0";
    long n = 0;

    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY)
            tfail("scan failed");
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        n += (long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

void treset_read_side(void)
{
    redisContext *rc = tredis_open();
    redisReply *rep;
    struct bus b = {0};
    struct err e;

    rep = redisCommand(rc, "FLUSHDB");
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
        tfail("flush redis");
    freeReplyObject(rep);
    redisFree(rc);

    if (bus_connect(&b, tenv("NATS_URL"), "test-reset", 10000, &e) != ST_OK)
        tfail("connect to nats: %s", e.msg);
    {
        jsErrCode jerr = 0;
        natsStatus s = js_DeleteStream(b.js, BUS_STREAM, NULL, &jerr);
        if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
            tfail("delete stream: %s (%d)", natsStatus_GetText(s), (int)jerr);
        /* the partition leases go with the stream: workers of the next test start fresh */
        s = js_DeleteKeyValue(b.js, "projector_leases");
        if (s != NATS_OK && s != NATS_NOT_FOUND)
            tfail("delete lease bucket: %s", natsStatus_GetText(s));
    }
    bus_release(&b);
}

int trun_capture(const char *binary, const char *args, char *out, size_t len)
{
    char cmd[4096];
    size_t used = 0;
    FILE *p;
    int wst;

    snprintf(cmd, sizeof cmd, "env DATABASE_URL='%s' NATS_URL='%s' REDIS_URL='%s' '%s/%s' %s 2>&1",
             tenv("DATABASE_URL"), tenv("NATS_URL"), tenv("REDIS_URL"), getenv("CQRS_BIN_DIR"),
             binary, args);
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    while (used + 1 < len) {
        size_t n = fread(out + used, 1, len - used - 1, p);
        if (n == 0)
            break;
        used += n;
    }
    out[used] = '\0';
    while (fgetc(p) != EOF) /* drain what did not fit */
        ;
    wst = pclose(p);
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
}

/* A "<field>:  <n> kB" line of /proc/<pid>/status; -1 when the process is gone. */
static long proc_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t len = strlen(field);
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':')
            kib = atol(line + len + 1);
    fclose(f);
    return kib;
}

long tproc_rss_kib(pid_t pid)
{
    return proc_status_kib(pid, "VmRSS");
}

long tproc_hwm_kib(pid_t pid)
{
    return proc_status_kib(pid, "VmHWM");
}

int tproc_fds(pid_t pid)
{
    char path[64];
    struct dirent *d;
    DIR *dir;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (dir == NULL)
        return -1;
    while ((d = readdir(dir)) != NULL)
        if (d->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}
