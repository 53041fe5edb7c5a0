/* libFuzzer harness: the Authorization header (bearer parsing, the JWT header's alg, the whole
 * verification through libjwt with a configured secret and audience, scopes) and X-Request-Id
 * parsing. Input: the header value as sent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "reqid.h"

static struct auth *verifier(void)
{
    static struct auth *a;
    struct cfg c;
    struct err e;

    if (a != NULL)
        return a;
    memset(&c, 0, sizeof c);
    strcpy(c.http_bind, "127.0.0.1");
    strcpy(c.auth_mode, "on");
    strcpy(c.jwt_secret, "fuzz-secret-fuzz-secret-fuzz-secret!");
    strcpy(c.jwt_audience, "fuzz");
    strcpy(c.api_token, "static-admin-token");
    c.jwt_leeway_s = 30;
    if (auth_create(&a, &c, &e) != ST_OK)
        abort();
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_principal p;
    struct err e;
    char *s, alg[16], rid[REQID_MAX + 1];
    const char *tok;
    size_t n;

    s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (auth_bearer_token(s, &tok, &n) == ST_OK) {
        if (n == 0 || tok < s || tok + n > s + size)
            abort();
        (void)auth_jwt_alg(tok, n, alg, sizeof alg);
    }
    (void)auth_jwt_alg(s, size, alg, sizeof alg);
    (void)auth_parse_scopes(s);
    if (auth_authenticate(verifier(), s, 1800000000, &p, &e) == ST_OK && p.scopes == 0)
        abort(); /* an accepted caller always holds a scope */
    if (reqid_accept(s, rid) && (strlen(rid) == 0 || strlen(rid) > REQID_MAX || strcmp(rid, s) != 0))
        abort();
    reqid_take(s, rid);
    if (strlen(rid) == 0 || strlen(rid) > REQID_MAX)
        abort();
    free(s);
    return 0;
}
