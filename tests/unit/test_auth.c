/* Unit tests of bearer authentication: header parsing, JWT algorithms and claims, static tokens,
 * scopes and owners, and the refusal to serve a public interface with nothing configured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "reqid.h"
#include "ttoken.h"

#define SECRET "0123456789abcdef0123456789abcdef-unit"

static void base_cfg(struct cfg *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->http_bind, sizeof c->http_bind, "127.0.0.1");
    snprintf(c->auth_mode, sizeof c->auth_mode, "auto");
    c->jwt_leeway_s = 30;
}

static void test_bearer_parsing(void **state)
{
    static const struct {
        const char *header;
        const char *token; /* NULL: refused */
    } rows[] = {
        {"Bearer abc.def.ghi", "abc.def.ghi"},
        {"bearer abc", "abc"},
        {"BEARER   abc  ", "abc"},
        {"  Bearer\tabc", "abc"},
        {"Bearer abc==", "abc=="},
        {"Bearer", NULL},
        {"Bearer ", NULL},
        {"Bearerabc", NULL},
        {"Basic abc", NULL},
        {"Bearer abc def", NULL},
        {"Bearer a=b", NULL},
        {"Bearer ab\"c", NULL},
        {"", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *t;
        size_t n;
        status st = auth_bearer_token(rows[i].header, &t, &n);
        if (rows[i].token == NULL) {
            assert_int_not_equal(st, ST_OK);
        } else {
            assert_int_equal(st, ST_OK);
            assert_int_equal(n, strlen(rows[i].token));
            assert_memory_equal(t, rows[i].token, n);
        }
    }
    {
        const char *t;
        size_t n;
        char *big = malloc(AUTH_TOKEN_MAX + 32);
        assert_non_null(big);
        memcpy(big, "Bearer ", 7);
        memset(big + 7, 'a', AUTH_TOKEN_MAX + 1);
        big[7 + AUTH_TOKEN_MAX + 1] = '\0';
        assert_int_not_equal(auth_bearer_token(big, &t, &n), ST_OK);
        free(big);
    }
    assert_int_not_equal(auth_bearer_token(NULL, &(const char *){NULL}, &(size_t){0}), ST_OK);
}

static void test_scopes(void **state)
{
    struct auth_principal p = {.sub = "alice"};
    (void)state;
    assert_int_equal(auth_parse_scopes("accounts:read"), AUTH_READ);
    assert_int_equal(auth_parse_scopes(" accounts:read  accounts:write "), AUTH_READ | AUTH_WRITE);
    assert_int_equal(auth_parse_scopes("admin"), AUTH_ADMIN);
    assert_int_equal(auth_parse_scopes("accounts:readx accounts admin:"), 0);
    p.scopes = AUTH_READ;
    assert_true(auth_has(&p, AUTH_READ));
    assert_false(auth_has(&p, AUTH_WRITE));
    assert_false(auth_has(&p, AUTH_ADMIN));
    assert_true(auth_owns(&p, "alice"));
    assert_false(auth_owns(&p, "bob"));
    assert_false(auth_owns(&p, NULL));
    p.scopes = AUTH_ADMIN;
    assert_true(auth_has(&p, AUTH_WRITE));
    assert_true(auth_has(&p, AUTH_METRICS));
    assert_true(auth_owns(&p, "bob"));
    p.scopes = AUTH_METRICS;
    assert_false(auth_has(&p, AUTH_READ));
}

/* (token, expected) rows against a verifier with a secret, an issuer and an audience. */
static void test_jwt_rows(void **state)
{
    struct cfg c;
    struct auth *a = NULL;
    struct err e = {0};
    struct {
        struct ttoken_spec spec;
        status want;
        unsigned scopes;
    } rows[] = {
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .iss = "cqrs", .aud = "bank"}, ST_OK, AUTH_READ},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read accounts:write admin", .iss = "cqrs", .aud = "bank"},
         ST_OK, AUTH_READ | AUTH_WRITE | AUTH_ADMIN},
        /* expired beyond the leeway; within it */
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .exp_in_s = -60, .iss = "cqrs", .aud = "bank"},
         ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .exp_in_s = -10, .iss = "cqrs", .aud = "bank"},
         ST_OK, AUTH_READ},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .exp_in_s = LONG_MIN, .iss = "cqrs", .aud = "bank"},
         ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .nbf_in_s = 120, .iss = "cqrs", .aud = "bank"},
         ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .nbf_in_s = 10, .iss = "cqrs", .aud = "bank"},
         ST_OK, AUTH_READ},
        /* wrong signature, issuer, audience; none; no sub; no known scope */
        {{.key = SECRET "x", .sub = "alice", .scope = "accounts:read", .iss = "cqrs", .aud = "bank"}, ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .iss = "other", .aud = "bank"}, ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .aud = "bank"}, ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:read", .iss = "cqrs", .aud = "shop"}, ST_UNAUTHORIZED, 0},
        {{.alg = "none", .sub = "alice", .scope = "admin", .iss = "cqrs", .aud = "bank"}, ST_UNAUTHORIZED, 0},
        {{.alg = "HS512", .key = SECRET, .sub = "alice", .scope = "admin", .iss = "cqrs", .aud = "bank"},
         ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .scope = "accounts:read", .iss = "cqrs", .aud = "bank"}, ST_UNAUTHORIZED, 0},
        {{.key = SECRET, .sub = "alice", .scope = "accounts:delete", .iss = "cqrs", .aud = "bank"}, ST_UNAUTHORIZED, 0},
    };

    (void)state;
    base_cfg(&c);
    snprintf(c.jwt_secret, sizeof c.jwt_secret, SECRET);
    snprintf(c.jwt_issuer, sizeof c.jwt_issuer, "cqrs");
    snprintf(c.jwt_audience, sizeof c.jwt_audience, "bank");
    assert_int_equal(auth_create(&a, &c, &e), ST_OK);
    assert_string_equal(auth_mode_str(a), "bearer");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *tok = ttoken_make(&rows[i].spec), hdr[4096];
        struct auth_principal p;
        status st;
        snprintf(hdr, sizeof hdr, "Bearer %s", tok);
        st = auth_authenticate(a, hdr, (int64_t)time(NULL), &p, &e);
        if (st != rows[i].want)
            fail_msg("row %zu: %s -> %d (%s), want %d", i, tok, st, e.msg, rows[i].want);
        assert_int_equal(p.scopes, rows[i].scopes);
        if (st == ST_OK)
            assert_string_equal(p.sub, "alice");
        free(tok);
    }
    {
        struct auth_principal p;
        assert_int_equal(auth_authenticate(a, NULL, 0, &p, &e), ST_UNAUTHORIZED);
        assert_int_equal(p.scopes, 0);
        assert_int_equal(auth_authenticate(a, "Bearer not-a-jwt", 0, &p, &e), ST_UNAUTHORIZED);
        /* a forged header: HS256 claimed, but a payload edited after signing */
        assert_int_equal(auth_authenticate(a, "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.AAAA", 0, &p, &e),
                         ST_UNAUTHORIZED);
    }
    auth_free(&a);
    assert_null(a);
}

static void test_static_tokens(void **state)
{
    struct cfg c;
    struct auth *a = NULL;
    struct err e = {0};
    struct auth_principal p;

    (void)state;
    base_cfg(&c);
    snprintf(c.api_token, sizeof c.api_token, "s3cret-t0ken");
    snprintf(c.metrics_token, sizeof c.metrics_token, "m3trics");
    assert_int_equal(auth_create(&a, &c, &e), ST_OK);
    assert_int_equal(auth_authenticate(a, "Bearer s3cret-t0ken", 0, &p, &e), ST_OK);
    assert_true(auth_has(&p, AUTH_ADMIN));
    assert_int_equal(auth_authenticate(a, "bearer s3cret-t0ken", 0, &p, &e), ST_OK);
    assert_int_equal(auth_authenticate(a, "Bearer s3cret-t0keN", 0, &p, &e), ST_UNAUTHORIZED);
    assert_int_equal(auth_authenticate(a, "Bearer s3cret-t0ke", 0, &p, &e), ST_UNAUTHORIZED);
    assert_int_equal(auth_authenticate(a, "Bearer s3cret-t0ken-and-more", 0, &p, &e), ST_UNAUTHORIZED);
    assert_int_equal(auth_authenticate(a, "Basic czNjcmV0LXQwa2Vu", 0, &p, &e), ST_UNAUTHORIZED);
    assert_int_equal(auth_authenticate(a, "Bearer m3trics", 0, &p, &e), ST_OK);
    assert_true(auth_has(&p, AUTH_METRICS));
    assert_false(auth_has(&p, AUTH_READ));
    /* no JWT key: a JWT is refused */
    {
        struct ttoken_spec s = {.key = SECRET, .sub = "alice", .scope = "admin"};
        char *tok = ttoken_make(&s), hdr[2048];
        snprintf(hdr, sizeof hdr, "Bearer %s", tok);
        assert_int_equal(auth_authenticate(a, hdr, (int64_t)time(NULL), &p, &e), ST_UNAUTHORIZED);
        free(tok);
    }
    auth_free(&a);
}

static void test_modes(void **state)
{
    struct cfg c;
    struct auth *a = NULL;
    struct err e = {0};
    struct auth_principal p;

    (void)state;
    base_cfg(&c);
    assert_int_equal(auth_create(&a, &c, &e), ST_OK); /* loopback, nothing configured */
    assert_string_equal(auth_mode_str(a), "loopback-open");
    assert_int_equal(auth_authenticate(a, NULL, 0, &p, &e), ST_OK);
    auth_free(&a);
    snprintf(c.http_bind, sizeof c.http_bind, "0.0.0.0");
    assert_int_equal(auth_create(&a, &c, &e), ST_INVALID); /* the default refusal */
    assert_null(a);
    assert_non_null(strstr(e.msg, "AUTH=off"));
    snprintf(c.auth_mode, sizeof c.auth_mode, "off");
    assert_int_equal(auth_create(&a, &c, &e), ST_OK);
    assert_string_equal(auth_mode_str(a), "off");
    auth_free(&a);
    snprintf(c.auth_mode, sizeof c.auth_mode, "on");
    snprintf(c.http_bind, sizeof c.http_bind, "127.0.0.1");
    assert_int_equal(auth_create(&a, &c, &e), ST_INVALID);
    snprintf(c.jwt_secret, sizeof c.jwt_secret, "short");
    assert_int_equal(auth_create(&a, &c, &e), ST_INVALID);
    snprintf(c.jwt_secret, sizeof c.jwt_secret, SECRET);
    snprintf(c.http_bind, sizeof c.http_bind, "0.0.0.0");
    assert_int_equal(auth_create(&a, &c, &e), ST_OK);
    auth_free(&a);
    c.jwt_secret[0] = '\0';
    snprintf(c.jwt_public_key_file, sizeof c.jwt_public_key_file, "/nonexistent/key.pem");
    assert_int_equal(auth_create(&a, &c, &e), ST_INVALID);
}

/* RS256 and ES256 with keys made by openssl; a public key is never taken as an HMAC secret. */
static void test_public_keys(void **state)
{
    static const struct {
        const char *alg, *gen;
    } kinds[] = {
        {"RS256", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"},
        {"ES256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"},
    };
    char dir[] = "/tmp/test_auth_XXXXXX", cmd[512], path[300];

    (void)state;
    if (mkdtemp(dir) == NULL || system("command -v openssl >/dev/null") != 0)
        skip();
    for (size_t k = 0; k < 2; k++) {
        struct cfg c;
        struct auth *a = NULL;
        struct err e = {0};
        struct auth_principal p;
        char priv[8192], pub[8192], hdr[8192], *tok;
        FILE *f;
        size_t n;

        snprintf(cmd, sizeof cmd, "openssl genpkey %s -out %s/priv.pem 2>/dev/null", kinds[k].gen, dir);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "openssl pkey -in %s/priv.pem -pubout -out %s/pub.pem 2>/dev/null", dir, dir);
        assert_int_equal(system(cmd), 0);
        snprintf(path, sizeof path, "%s/priv.pem", dir);
        f = fopen(path, "r");
        assert_non_null(f);
        n = fread(priv, 1, sizeof priv - 1, f);
        priv[n] = '\0';
        fclose(f);
        snprintf(path, sizeof path, "%s/pub.pem", dir);
        f = fopen(path, "r");
        assert_non_null(f);
        n = fread(pub, 1, sizeof pub - 1, f);
        pub[n] = '\0';
        fclose(f);

        base_cfg(&c);
        snprintf(c.jwt_public_key_file, sizeof c.jwt_public_key_file, "%s", path);
        assert_int_equal(auth_create(&a, &c, &e), ST_OK);
        tok = ttoken_make(&(struct ttoken_spec){.alg = kinds[k].alg, .key = priv, .sub = "bob", .scope = "accounts:read"});
        snprintf(hdr, sizeof hdr, "Bearer %s", tok);
        if (auth_authenticate(a, hdr, (int64_t)time(NULL), &p, &e) != ST_OK)
            fail_msg("%s: %s", kinds[k].alg, e.msg);
        assert_string_equal(p.sub, "bob");
        free(tok);
        /* alg confusion: HS256 signed with the public key's PEM as the secret */
        tok = ttoken_make(&(struct ttoken_spec){.alg = "HS256", .key = pub, .sub = "bob", .scope = "admin"});
        snprintf(hdr, sizeof hdr, "Bearer %s", tok);
        assert_int_equal(auth_authenticate(a, hdr, (int64_t)time(NULL), &p, &e), ST_UNAUTHORIZED);
        free(tok);
        auth_free(&a);
        /* a private key in JWT_PUBLIC_KEY_FILE is refused at start */
        snprintf(c.jwt_public_key_file, sizeof c.jwt_public_key_file, "%s/priv.pem", dir);
        assert_int_equal(auth_create(&a, &c, &e), ST_INVALID);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_request_ids(void **state)
{
    char out[REQID_MAX + 1], big[REQID_MAX + 2];
    (void)state;
    assert_true(reqid_accept("abc-123_x.y:z", out));
    assert_string_equal(out, "abc-123_x.y:z");
    assert_false(reqid_accept("", out));
    assert_false(reqid_accept(NULL, out));
    assert_false(reqid_accept("a b", out));
    assert_false(reqid_accept("a\nb", out));
    assert_false(reqid_accept("a\"b", out));
    memset(big, 'a', REQID_MAX + 1);
    big[REQID_MAX + 1] = '\0';
    assert_false(reqid_accept(big, out));
    big[REQID_MAX] = '\0';
    assert_true(reqid_accept(big, out));
    reqid_take("x y", out);
    assert_int_equal(strlen(out), 32);
    reqid_take("given-1", out);
    assert_string_equal(out, "given-1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer_parsing), cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_jwt_rows),       cmocka_unit_test(test_static_tokens),
        cmocka_unit_test(test_modes),          cmocka_unit_test(test_public_keys),
        cmocka_unit_test(test_request_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
