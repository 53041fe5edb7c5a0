/* Bearer authentication: JWT signature and claims (libjwt for the cryptography, the claims
 * checked here), the static tokens, and the scope and owner checks of a principal. */
#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEY_FILE_MAX (64 * 1024)

enum auth_mode { MODE_OFF, MODE_BEARER, MODE_LOOPBACK_OPEN };

struct auth {
    enum auth_mode mode;
    char *secret;       /* HS256 key or NULL */
    size_t secret_len;
    unsigned char *pubkey; /* PEM or NULL */
    size_t pubkey_len;
    char issuer[256];
    char audience[256];
    int leeway_s;
    char api_token[256];
    char metrics_token[256];
};

static bool is_loopback(const char *bind)
{
    struct in_addr a;

    if (strcmp(bind, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, bind, &a) == 1)
        return (ntohl(a.s_addr) >> 24) == 127;
    return strcmp(bind, "::1") == 0;
}

static status read_key_file(struct auth *a, const char *path, struct err *e)
{
    FILE *f = fopen(path, "rb");
    status st = ST_OK;
    size_t n;

    if (f == NULL)
        return err_set(e, ST_INVALID, "JWT_PUBLIC_KEY_FILE: unable to open '%s': %s", path,
                       strerror(errno));
    a->pubkey = malloc(KEY_FILE_MAX + 1);
    if (a->pubkey == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    n = fread(a->pubkey, 1, KEY_FILE_MAX, f);
    a->pubkey[n] = '\0';
    a->pubkey_len = n;
    if (n == 0 || n >= KEY_FILE_MAX || strstr((char *)a->pubkey, "PRIVATE") != NULL ||
        (strstr((char *)a->pubkey, "-----BEGIN PUBLIC KEY-----") == NULL &&
         strstr((char *)a->pubkey, "-----BEGIN RSA PUBLIC KEY-----") == NULL))
        st = err_set(e, ST_INVALID, "JWT_PUBLIC_KEY_FILE: '%s' is not a PEM public key", path);
cleanup:
    fclose(f);
    return st;
}

status auth_create(struct auth **out, const struct cfg *c, struct err *e)
{
    struct auth *a = calloc(1, sizeof *a);
    status st = ST_OK;
    bool any;

    *out = NULL;
    if (a == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    snprintf(a->issuer, sizeof a->issuer, "%s", c->jwt_issuer);
    snprintf(a->audience, sizeof a->audience, "%s", c->jwt_audience);
    snprintf(a->api_token, sizeof a->api_token, "%s", c->api_token);
    snprintf(a->metrics_token, sizeof a->metrics_token, "%s", c->metrics_token);
    a->leeway_s = c->jwt_leeway_s;
    if (c->jwt_secret[0] != '\0') {
        if (strlen(c->jwt_secret) < 32) {
            st = err_set(e, ST_INVALID, "JWT_SECRET: at least 32 bytes are needed for HS256");
            goto cleanup;
        }
        a->secret = strdup(c->jwt_secret);
        a->secret_len = strlen(c->jwt_secret);
    }
    if (c->jwt_public_key_file[0] != '\0' && (st = read_key_file(a, c->jwt_public_key_file, e)) != ST_OK)
        goto cleanup;
    any = a->secret != NULL || a->pubkey != NULL || a->api_token[0] != '\0';
    if (strcmp(c->auth_mode, "off") == 0) {
        a->mode = MODE_OFF;
    } else if (any) {
        a->mode = MODE_BEARER;
    } else if (strcmp(c->auth_mode, "on") == 0) {
        st = err_set(e, ST_INVALID, "AUTH=on needs JWT_SECRET, JWT_PUBLIC_KEY_FILE or API_TOKEN");
    } else if (!is_loopback(c->http_bind)) {
        st = err_set(e, ST_INVALID,
                     "HTTP_BIND '%s' is not a loopback address and no JWT_SECRET, "
                     "JWT_PUBLIC_KEY_FILE or API_TOKEN is set: configure one, or set AUTH=off "
                     "to serve without authentication",
                     c->http_bind);
    } else {
        a->mode = MODE_LOOPBACK_OPEN;
    }
cleanup:
    if (st != ST_OK)
        auth_free(&a);
    *out = a;
    return st;
}

void auth_free(struct auth **a)
{
    if (a == NULL || *a == NULL)
        return;
    if ((*a)->secret != NULL)
        memset((*a)->secret, 0, (*a)->secret_len);
    free((*a)->secret);
    free((*a)->pubkey);
    memset(*a, 0, sizeof **a);
    free(*a);
    *a = NULL;
}

const char *auth_mode_str(const struct auth *a)
{
    switch (a->mode) {
    case MODE_OFF:
        return "off";
    case MODE_LOOPBACK_OPEN:
        return "loopback-open";
    default:
        return "bearer";
    }
}

/* Constant-time in the length of want: no early exit on the first difference. */
static bool token_equal(const char *got, size_t got_len, const char *want)
{
    size_t n = strlen(want);
    unsigned char diff = got_len == n ? 0 : 1;

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
    return diff == 0;
}

static bool token68_char(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/';
}

status auth_bearer_token(const char *header, const char **token, size_t *len)
{
    const char *p = header, *start;

    *token = NULL;
    *len = 0;
    if (header == NULL)
        return ST_UNAUTHORIZED;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return ST_UNAUTHORIZED;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    start = p;
    while (token68_char((unsigned char)*p) && p - start <= AUTH_TOKEN_MAX)
        p++;
    while (*p == '=' && p - start <= AUTH_TOKEN_MAX)
        p++;
    if (p == start || p - start > AUTH_TOKEN_MAX)
        return ST_UNAUTHORIZED;
    *len = (size_t)(p - start);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '\0')
        return ST_UNAUTHORIZED;
    *token = start;
    return ST_OK;
}

static int b64url_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

status auth_jwt_alg(const char *token, size_t token_len, char *alg, size_t len)
{
    unsigned char head[512];
    size_t n = 0, seg = 0;
    unsigned bits = 0, acc = 0;
    json_t *doc = NULL;
    const char *s;
    status st = ST_UNAUTHORIZED;

    if (len > 0)
        alg[0] = '\0';
    while (seg < token_len && token[seg] != '.')
        seg++;
    if (seg == token_len || seg == 0 || seg > (sizeof head) * 4 / 3)
        return ST_UNAUTHORIZED;
    for (size_t i = 0; i < seg; i++) {
        int v = b64url_value((unsigned char)token[i]);
        if (v < 0)
            return ST_UNAUTHORIZED;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= sizeof head)
                return ST_UNAUTHORIZED;
            head[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    doc = json_loadb((const char *)head, n, JSON_REJECT_DUPLICATES, NULL);
    s = json_string_value(json_object_get(doc, "alg"));
    if (json_is_object(doc) && s != NULL && strlen(s) < len) {
        memcpy(alg, s, strlen(s) + 1);
        st = ST_OK;
    }
    json_decref(doc);
    return st;
}

unsigned auth_parse_scopes(const char *scope)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"accounts:read", AUTH_READ}, {"accounts:write", AUTH_WRITE}, {"admin", AUTH_ADMIN}};
    unsigned out = 0;
    const char *p = scope;

    while (p != NULL && *p != '\0') {
        size_t n;
        while (*p == ' ')
            p++;
        n = strcspn(p, " ");
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (n == strlen(names[i].name) && strncmp(p, names[i].name, n) == 0)
                out |= names[i].bit;
        p += n;
    }
    return out;
}

static bool audience_ok(json_t *aud, const char *want)
{
    size_t i;
    json_t *v;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    json_array_foreach(aud, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    return false;
}

/* The registered claims and ours, once the signature held. */
static status check_claims(const struct auth *a, json_t *claims, int64_t now,
                           struct auth_principal *p, struct err *e)
{
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    json_t *scope = json_object_get(claims, "scope");

    if (!json_is_integer(exp) && !json_is_real(exp))
        return err_set(e, ST_UNAUTHORIZED, "token has no 'exp'");
    if ((int64_t)json_number_value(exp) + a->leeway_s <= now)
        return err_set(e, ST_UNAUTHORIZED, "token expired");
    if (nbf != NULL && (!json_is_number(nbf) || (int64_t)json_number_value(nbf) - a->leeway_s > now))
        return err_set(e, ST_UNAUTHORIZED, "token not valid yet ('nbf')");
    if (a->issuer[0] != '\0') {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, a->issuer) != 0)
            return err_set(e, ST_UNAUTHORIZED, "token issuer is not '%s'", a->issuer);
    }
    if (a->audience[0] != '\0' && !audience_ok(json_object_get(claims, "aud"), a->audience))
        return err_set(e, ST_UNAUTHORIZED, "token audience does not include '%s'", a->audience);
    if (sub == NULL || sub[0] == '\0' || strlen(sub) > AUTH_SUB_MAX)
        return err_set(e, ST_UNAUTHORIZED, "token has no usable 'sub'");
    if (json_is_string(scope)) {
        p->scopes = auth_parse_scopes(json_string_value(scope));
    } else if (json_is_array(scope)) {
        size_t i;
        json_t *v;
        json_array_foreach(scope, i, v)
            if (json_is_string(v))
                p->scopes |= auth_parse_scopes(json_string_value(v));
    }
    if (p->scopes == 0)
        return err_set(e, ST_UNAUTHORIZED, "token grants no known scope");
    snprintf(p->sub, sizeof p->sub, "%s", sub);
    return ST_OK;
}

static status verify_jwt(const struct auth *a, const char *token, size_t len, int64_t now,
                         struct auth_principal *p, struct err *e)
{
    char alg[16], *copy = NULL, *grants = NULL;
    jwt_t *jwt = NULL;
    json_t *claims = NULL;
    jwt_alg_t want;
    const unsigned char *key;
    size_t key_len;
    status st;

    if (auth_jwt_alg(token, len, alg, sizeof alg) != ST_OK)
        return err_set(e, ST_UNAUTHORIZED, "token is neither a JWT nor a configured static token");
    /* The key decides the algorithm, never the token: a public key is never used as an HMAC
     * secret, and "none" or any other algorithm is refused before libjwt sees the token. */
    if (strcmp(alg, "HS256") == 0 && a->secret != NULL) {
        want = JWT_ALG_HS256;
        key = (const unsigned char *)a->secret;
        key_len = a->secret_len;
    } else if ((strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) && a->pubkey != NULL) {
        want = strcmp(alg, "RS256") == 0 ? JWT_ALG_RS256 : JWT_ALG_ES256;
        key = a->pubkey;
        key_len = a->pubkey_len;
    } else {
        return err_set(e, ST_UNAUTHORIZED, "token algorithm '%s' is not accepted", alg);
    }
    copy = strndup(token, len);
    if (copy == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    if (jwt_decode(&jwt, copy, key, (int)key_len) != 0 || jwt == NULL || jwt_get_alg(jwt) != want) {
        st = err_set(e, ST_UNAUTHORIZED, "token signature does not verify (%s)", alg);
        goto cleanup;
    }
    grants = jwt_get_grants_json(jwt, NULL);
    claims = grants != NULL ? json_loads(grants, 0, NULL) : NULL;
    if (!json_is_object(claims)) {
        st = err_set(e, ST_UNAUTHORIZED, "token claims are not a JSON object");
        goto cleanup;
    }
    st = check_claims(a, claims, now, p, e);
cleanup:
    json_decref(claims);
    free(grants);
    jwt_free(jwt);
    free(copy);
    return st;
}

status auth_authenticate(const struct auth *a, const char *authorization, int64_t now_s,
                         struct auth_principal *p, struct err *e)
{
    const char *token;
    size_t len;
    status st;

    memset(p, 0, sizeof *p);
    if (a->mode != MODE_BEARER) {
        snprintf(p->sub, sizeof p->sub, "anonymous");
        p->scopes = AUTH_READ | AUTH_WRITE | AUTH_ADMIN | AUTH_METRICS;
        return ST_OK;
    }
    if (authorization == NULL)
        return err_set(e, ST_UNAUTHORIZED, "no Authorization header");
    if (auth_bearer_token(authorization, &token, &len) != ST_OK)
        return err_set(e, ST_UNAUTHORIZED, "Authorization is not 'Bearer <token>'");
    if (token_equal(token, len, a->api_token)) {
        snprintf(p->sub, sizeof p->sub, "api-token");
        p->scopes = AUTH_READ | AUTH_WRITE | AUTH_ADMIN | AUTH_METRICS;
        return ST_OK;
    }
    if (token_equal(token, len, a->metrics_token)) {
        snprintf(p->sub, sizeof p->sub, "metrics-token");
        p->scopes = AUTH_METRICS;
        return ST_OK;
    }
    st = verify_jwt(a, token, len, now_s, p, e);
    if (st != ST_OK)
        memset(p, 0, sizeof *p);
    return st;
}

bool auth_has(const struct auth_principal *p, unsigned need)
{
    unsigned have = p->scopes;

    if (have & AUTH_ADMIN)
        have |= AUTH_READ | AUTH_WRITE | AUTH_METRICS;
    /* write implies read of one's own accounts */
    if (have & AUTH_WRITE)
        have |= AUTH_READ;
    return need != 0 && (have & need) == need;
}

bool auth_owns(const struct auth_principal *p, const char *owner)
{
    if (p->scopes & AUTH_ADMIN)
        return true;
    return owner != NULL && p->sub[0] != '\0' && strcmp(p->sub, owner) == 0;
}
