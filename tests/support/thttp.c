/* Blocking HTTP/1.1 client: Connection: close, Content-Length bodies (what our services send). */
#include "thttp.h"
#include "support.h"
#include "tcontract.h"
#include "ttoken.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short ev, long long deadline)
{
    struct pollfd p = {fd, ev, 0};
    long long left = deadline - mono_ms();
    if (left <= 0)
        return -1;
    return poll(&p, 1, (int)left) == 1 ? 0 : -1;
}

static int parse_base(const char *base, char *host, size_t hlen, int *port)
{
    const char *p = base;
    const char *colon;

    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    colon = strchr(p, ':');
    if (colon == NULL || (size_t)(colon - p) >= hlen)
        return -1;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 ? 0 : -1;
}

int thttp_request(struct thttp_resp *out, const char *method, const char *base, const char *path,
                  const char *body, const char *extra_headers, int timeout_ms)
{
    /* the stack's admin token unless the caller brings its own Authorization */
    const char *auth = extra_headers != NULL && strcasestr(extra_headers, "Authorization:") != NULL
                           ? ""
                           : ttoken_admin_header();
    return thttp_request_as(out, method, base, path, body, extra_headers, auth, timeout_ms);
}

int thttp_request_as(struct thttp_resp *out, const char *method, const char *base, const char *path,
                     const char *body, const char *extra_headers, const char *auth_line,
                     int timeout_ms)
{
    char host[128];
    int port, rc, reqlen;
    char *req;
    size_t blen = body != NULL ? strlen(body) : 0;

    memset(out, 0, sizeof *out);
    if (parse_base(base, host, sizeof host, &port) != 0)
        return -1;
    req = malloc(blen + 16384);
    if (req == NULL)
        return -1;
    reqlen = snprintf(req, 16384,
                      "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s%s%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, host, port, body != NULL ? "Content-Type: application/json\r\n" : "",
                      extra_headers != NULL ? extra_headers : "", auth_line != NULL ? auth_line : "",
                      blen);
    if (reqlen < 0 || reqlen >= 16384) {
        free(req);
        return -1;
    }
    memcpy(req + reqlen, body != NULL ? body : "", blen);
    rc = thttp_exchange(out, base, req, (size_t)reqlen + blen, timeout_ms);
    free(req);
    if (rc == 0)
        tc_record(base, method, path, out->status, out->headers, out->body);
    return rc;
}

int thttp_exchange(struct thttp_resp *out, const char *base, const char *data, size_t data_len,
                   int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    char host[128];
    int port, fd = -1, rc = -1;
    struct sockaddr_in addr;
    char *buf = NULL;
    size_t cap = 65536, len = 0;

    memset(out, 0, sizeof *out);
    if (parse_base(base, host, sizeof host, &port) != 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &addr.sin_addr) != 1)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS)
        goto cleanup;
    if (wait_fd(fd, POLLOUT, deadline) != 0)
        goto cleanup;
    {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0)
            goto cleanup;
    }
    for (size_t sent = 0; sent < data_len;) {
        ssize_t n = send(fd, data + sent, data_len - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 0)
                goto cleanup;
            continue;
        }
        break; /* the server may answer early (413, 431) and close: read what it said */
    }
    buf = malloc(cap);
    if (buf == NULL)
        goto cleanup;
    for (;;) {
        ssize_t n;
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                goto cleanup;
            buf = nb;
            cap *= 2;
        }
        n = recv(fd, buf + len, cap - len - 1, 0);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, deadline) != 0)
                break;
            continue;
        }
        break;
    }
    buf[len] = '\0';
    {
        char *hend = strstr(buf, "\r\n\r\n");
        size_t hlen;
        if (hend == NULL || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1)
            goto cleanup;
        hlen = (size_t)(hend - buf);
        if (hlen >= sizeof out->headers)
            hlen = sizeof out->headers - 1;
        memcpy(out->headers, buf, hlen);
        out->headers[hlen] = '\0';
        out->body_len = len - (size_t)(hend + 4 - buf);
        out->body = malloc(out->body_len + 1);
        if (out->body == NULL)
            goto cleanup;
        memcpy(out->body, hend + 4, out->body_len);
        out->body[out->body_len] = '\0';
    }
    rc = 0;
cleanup:
    if (rc != 0)
        out->status = 0;
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

void thttp_resp_release(struct thttp_resp *r)
{
    free(r->body);
    r->body = NULL;
}

json_t *thttp_json(const struct thttp_resp *r)
{
    if (r->body == NULL)
        return NULL;
    return json_loadb(r->body, r->body_len, 0, NULL);
}

const char *thttp_header(const struct thttp_resp *r, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    const char *p = r->headers;

    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            const char *end = strstr(v, "\r\n");
            size_t n = end != NULL ? (size_t)(end - v) : strlen(v);
            while (n > 0 && *v == ' ') {
                v++;
                n--;
            }
            if (n >= len)
                n = len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* What an answer must never name (DESIGN, section 4): the stores' addresses and ports, SQL
 * states, the libraries' words. Ports are matched as ":<port>" or "port <port>", so the digits
 * of a quoted UUID cannot match; the request id is left out for the same reason. */
void thttp_assert_no_internals(const char *what, const json_t *doc)
{
    static const char *const words[] = {"127.0.0.1", "localhost", "sqlstate", "postgres", "redis",
                                        "nats",      "libpq",     "refused",  "could not connect",
                                        "connection to server"};
    static const char *const port_keys[] = {"PG_PORT", "REDIS_PORT", "NATS_PORT"};
    json_t *copy = json_deep_copy(doc);
    char *text = NULL, pat[64];

    json_object_del(copy, "request_id");
    text = json_dumps(copy, JSON_COMPACT);
    json_decref(copy);
    if (text == NULL)
        tfail("%s: the answer is not JSON", what);
    for (char *p = text; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(text, words[i]) != NULL)
            tfail("%s: the answer names '%s': %s", what, words[i], text);
    for (size_t i = 0; i < sizeof port_keys / sizeof port_keys[0]; i++) {
        const char *port = tenv(port_keys[i]);
        if (port == NULL)
            continue;
        snprintf(pat, sizeof pat, ":%s", port);
        if (strstr(text, pat) != NULL)
            tfail("%s: the answer names port %s: %s", what, port, text);
        snprintf(pat, sizeof pat, "port %s", port);
        if (strstr(text, pat) != NULL)
            tfail("%s: the answer names port %s: %s", what, port, text);
    }
    free(text);
}

int thttp_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        tfail("no free loopback port: %s", strerror(errno));
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}
