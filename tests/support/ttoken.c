/* Test tokens: libjwt signs what the services verify. */
#include "ttoken.h"

#include <jwt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support.h"

char *ttoken_make(const struct ttoken_spec *s)
{
    jwt_t *j = NULL;
    const char *alg = s->alg != NULL ? s->alg : "HS256";
    const char *key = s->key != NULL ? s->key : tenv("JWT_SECRET");
    long now = (long)time(NULL);
    char *out;
    jwt_alg_t a;

    if (jwt_new(&j) != 0)
        tfail("jwt_new");
    if (s->sub != NULL)
        jwt_add_grant(j, "sub", s->sub);
    if (s->scope != NULL)
        jwt_add_grant(j, "scope", s->scope);
    if (s->exp_in_s != LONG_MIN)
        jwt_add_grant_int(j, "exp", now + (s->exp_in_s != 0 ? s->exp_in_s : 300));
    if (s->nbf_in_s != 0)
        jwt_add_grant_int(j, "nbf", now + s->nbf_in_s);
    if (s->iss != NULL)
        jwt_add_grant(j, "iss", s->iss);
    if (s->aud != NULL)
        jwt_add_grant(j, "aud", s->aud);
    a = strcmp(alg, "none") == 0 ? JWT_ALG_NONE : jwt_str_alg(alg);
    if (a == JWT_ALG_NONE) {
        if (jwt_set_alg(j, JWT_ALG_NONE, NULL, 0) != 0)
            tfail("jwt_set_alg none");
    } else if (key == NULL || jwt_set_alg(j, a, (const unsigned char *)key, (int)strlen(key)) != 0) {
        tfail("jwt_set_alg %s (a key? JWT_SECRET in the stack env?)", alg);
    }
    out = jwt_encode_str(j);
    jwt_free(j);
    if (out == NULL)
        tfail("jwt_encode_str %s", alg);
    return out;
}

char *ttoken_header(const char *sub, const char *scope)
{
    struct ttoken_spec s = {.sub = sub, .scope = scope};
    char *tok = ttoken_make(&s), *line = NULL;

    if (asprintf(&line, "Authorization: Bearer %s\r\n", tok) < 0)
        tfail("asprintf");
    free(tok);
    return line;
}

const char *ttoken_admin_header(void)
{
    /* one per thread: reader threads call this concurrently, and a shared buffer being
     * rewritten while another thread sends it went out as a torn token (a 401) */
    static __thread char line[400];
    const char *t = tenv("API_TOKEN");

    if (t == NULL || t[0] == '\0')
        return "";
    snprintf(line, sizeof line, "Authorization: Bearer %s\r\n", t);
    return line;
}
