/* Who is calling: bearer JWTs (HS256, RS256, ES256 with libjwt), the static admin and metrics
 * tokens, and what a principal may do. */
#ifndef COMMON_AUTH_H
#define COMMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "status.h"

#define AUTH_SUB_MAX 128     /* an owner is at most this long (OWNER_MAX) */
#define AUTH_TOKEN_MAX 8192  /* longer bearer tokens are refused unread */

/* Scopes of a principal (bit set). ADMIN acts on every account and the operator routes. */
enum auth_scope {
    AUTH_READ = 1u << 0,    /* "accounts:read" */
    AUTH_WRITE = 1u << 1,   /* "accounts:write" */
    AUTH_ADMIN = 1u << 2,   /* "admin" */
    AUTH_METRICS = 1u << 3, /* METRICS_TOKEN: GET /metrics only */
};

/* The authenticated caller. scopes 0: nobody (no token, or a refused one). */
struct auth_principal {
    char sub[AUTH_SUB_MAX + 1];
    unsigned scopes;
};

struct auth;

/* Verifier from the configuration (reads JWT_PUBLIC_KEY_FILE). ST_INVALID when the settings
 * contradict each other, or when nothing is configured, AUTH is not off and HTTP_BIND is not a
 * loopback address (the default refusal on a public interface). *out owned (auth_free). */
status auth_create(struct auth **out, const struct cfg *c, struct err *e) WUR;
void auth_free(struct auth **a);
/* "off" (every caller is admin), "bearer" or "loopback-open" (nothing configured, loopback);
 * static text for the start-up log line. */
const char *auth_mode_str(const struct auth *a);

/* Authenticates the Authorization header value (NULL: absent) at now_s (Unix seconds) into p.
 * ST_UNAUTHORIZED with a log-only reason in e when the token is missing or refused (p then
 * has no scope). With authentication off, p is "anonymous" with every scope. */
status auth_authenticate(const struct auth *a, const char *authorization, int64_t now_s,
                         struct auth_principal *p, struct err *e) WUR;

/* True when p holds every scope of need (ADMIN holds READ and WRITE too). */
bool auth_has(const struct auth_principal *p, unsigned need);
/* True when p may act on an account of owner (admin, or sub == owner). */
bool auth_owns(const struct auth_principal *p, const char *owner);

/* Pure parsing, fuzzed: the token of "Bearer <token>" (scheme case-insensitive, token68
 * characters, at most AUTH_TOKEN_MAX) as a pointer into header and its length. */
status auth_bearer_token(const char *header, const char **token, size_t *len) WUR;
/* Pure parsing, fuzzed: the "alg" of a JWT's header segment into alg (len bytes). */
status auth_jwt_alg(const char *token, size_t token_len, char *alg, size_t len) WUR;
/* Pure parsing, fuzzed: the scopes named in a space-separated "scope" claim. */
unsigned auth_parse_scopes(const char *scope);

#endif
