/* libFuzzer harness: HTTP path and query parsing of the writer and the read API. Input: a
 * selector byte, then the path or value. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const params[] = {"min_version", "wait_ms", "limit", "before",
                                         "after", "order", "from", "to"};
    struct cmd_route r;
    struct ra_query q;
    struct err e;
    char *s;

    if (size < 1)
        return 0;
    s = malloc(size);
    if (s == NULL)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 4) {
    case 0:
        (void)cmd_route(&r, s, &e);
        break;
    case 1:
        if (ra_parse_path(&q, s, &e) == ST_OK && (q.route == RA_ACCOUNT || q.route == RA_STATEMENT) &&
            strlen(q.account_id) != 36)
            abort();
        break;
    case 2:
        if (ra_parse_path(&q, "/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/statement", &e) == ST_OK &&
            ra_parse_param(&q, params[(size > 1 ? data[1] : 0) % 8], s, &e) == ST_OK &&
            (q.limit < 1 || q.limit > RA_LIMIT_MAX || q.wait_ms < 0 || q.wait_ms > RA_WAIT_MAX_MS ||
             q.min_version < 0 || q.before < 0))
            abort();
        break;
    default: {
        int64_t v;
        (void)cmd_parse_if_match(&v, s, &e);
        (void)cmd_check_idempotency_key(s, &e);
        break;
    }
    }
    free(s);
    return 0;
}
