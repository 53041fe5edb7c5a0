/* Bearer tokens for tests: JWTs signed (or not) as a test needs, and the stack's own. */
#ifndef TESTS_TTOKEN_H
#define TESTS_TTOKEN_H

#include <stddef.h>

struct ttoken_spec {
    const char *alg;      /* "HS256" (default), "RS256", "ES256" or "none" */
    const char *key;      /* HS256: the secret; RS256/ES256: a PEM private key. NULL: the
                           * stack's JWT_SECRET */
    const char *sub;      /* NULL: no sub */
    const char *scope;    /* NULL: no scope */
    long exp_in_s;        /* exp = now + exp_in_s; 0: now + 300; LONG_MIN: no exp */
    long nbf_in_s;        /* 0: no nbf */
    const char *iss, *aud; /* NULL: absent */
};

/* A signed JWT (malloc'd); aborts the test when libjwt refuses. */
char *ttoken_make(const struct ttoken_spec *s);
/* "Authorization: Bearer <token>\r\n" for a token of the stack's secret (malloc'd). */
char *ttoken_header(const char *sub, const char *scope);
/* The stack's API_TOKEN as an Authorization header line in a static buffer ("" when none). */
const char *ttoken_admin_header(void);

#endif
