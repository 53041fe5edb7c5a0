/* The stored form of a statement entry in Redis: compact text instead of the contract's JSON
 * (issue 12: at most 150 bytes of Redis per entry). The read API renders the JSON from it.
 *
 *   <type><amount>|<balance_after>|<at>|<event_id>|<counterparty>|<transfer_id>|<reversed>|<description>
 *
 * type: one character, 'A' + enum event_type, '-' for a discarded event's line; at: the 20 digits
 * of YYYY-MM-DDTHH:MM:SS.ffffffZ; UUIDs: 32 lower-case hex digits without dashes, empty when
 * absent; the description last, as is (it may hold '|'). The version is not stored: entry i of
 * the list is version i + 1. An entry that does not fit this form (a time in another format, a
 * UUID not in canonical form) is stored as the JSON, which decoding recognises by its '{'. */
#include "account.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DISCARDED_CODE '-'
#define AT_LEN 27 /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
#define AT_DIGITS 20

/* Positions of the digits in the time's text. */
static const unsigned char at_digit_pos[AT_DIGITS] = {0,  1,  2,  3,  5,  6,  8,  9,  11, 12,
                                                      14, 15, 17, 18, 20, 21, 22, 23, 24, 25};
static const char at_template[AT_LEN + 1] = "0000-00-00T00:00:00.000000Z";

static int at_compact(const char *at, char *out)
{
    if (strlen(at) != AT_LEN)
        return 0;
    for (int i = 0, d = 0; i < AT_LEN; i++) {
        if (d < AT_DIGITS && at_digit_pos[d] == i) {
            if (!isdigit((unsigned char)at[i]))
                return 0;
            out[d++] = at[i];
        } else if (at[i] != at_template[i]) {
            return 0;
        }
    }
    out[AT_DIGITS] = '\0';
    return 1;
}

static int at_expand(const char *digits, size_t len, char *out)
{
    if (len != AT_DIGITS)
        return 0;
    memcpy(out, at_template, AT_LEN + 1);
    for (int d = 0; d < AT_DIGITS; d++) {
        if (!isdigit((unsigned char)digits[d]))
            return 0;
        out[at_digit_pos[d]] = digits[d];
    }
    return 1;
}

/* "" stays ""; a canonical (lower-case) UUID loses its dashes; anything else: 0. */
static int uuid_compact(const char *u, char *out)
{
    char canon[UUID_STR_SIZE];
    int k = 0;

    if (u[0] == '\0') {
        out[0] = '\0';
        return 1;
    }
    if (!uuid_parse(u, strlen(u), canon) || strcmp(canon, u) != 0)
        return 0;
    for (int i = 0; u[i] != '\0'; i++)
        if (u[i] != '-')
            out[k++] = u[i];
    out[k] = '\0';
    return 1;
}

static int uuid_expand(const char *hex, size_t len, char out[UUID_STR_SIZE])
{
    char tmp[UUID_STR_SIZE];

    if (len == 0) {
        out[0] = '\0';
        return 1;
    }
    if (len != 32)
        return 0;
    snprintf(tmp, sizeof tmp, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
    return uuid_parse(tmp, 36, out) && strcmp(out, tmp) == 0;
}

/* Decimal text of v at p; returns its length. */
static size_t put_i64(char *p, int64_t v)
{
    char tmp[24];
    size_t n = 0, k = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        p[k++] = '-';
    while (n > 0)
        p[k++] = tmp[--n];
    return k;
}

static char *put_field(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    p[n] = '|';
    return p + n + 1;
}

char *statement_entry_encode(const struct statement_entry *en)
{
    char at[AT_DIGITS + 1], id[33], cp[33], tr[33], rev[33];
    size_t dlen;
    char *out, *p;
    int code = en->discarded ? DISCARDED_CODE : 'A' + (int)en->type;

    if ((!en->discarded && (en->type < 0 || en->type >= EV__COUNT)) || !at_compact(en->at, at) ||
        !uuid_compact(en->event_id, id) || id[0] == '\0' || !uuid_compact(en->counterparty, cp) ||
        !uuid_compact(en->transfer_id, tr) || !uuid_compact(en->reversed_event_id, rev))
        return statement_entry_to_json(en);
    /* code, two numbers of at most 20 characters, the time, four UUIDs, seven '|', the text */
    dlen = strlen(en->description);
    out = malloc(1 + 2 * 20 + AT_DIGITS + 4 * 32 + 7 + dlen + 1);
    if (out == NULL)
        return NULL;
    p = out;
    *p++ = (char)code;
    p += put_i64(p, en->amount);
    *p++ = '|';
    p += put_i64(p, en->balance_after);
    *p++ = '|';
    p = put_field(p, at, AT_DIGITS);
    p = put_field(p, id, strlen(id));
    p = put_field(p, cp, strlen(cp));
    p = put_field(p, tr, strlen(tr));
    p = put_field(p, rev, strlen(rev));
    memcpy(p, en->description, dlen + 1);
    return out;
}

static int parse_int(const char *s, size_t len, int64_t *out)
{
    char buf[24], *end;

    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *out = strtoll(buf, &end, 10);
    return *end == '\0';
}

status statement_entry_decode(struct statement_entry *en, int64_t version, const char *s, size_t len,
                              struct err *e)
{
    const char *f[8];
    size_t flen[8];
    const char *p = s, *end = s + len;
    int code;

    if (len > 0 && s[0] == '{')
        return statement_entry_from_json(en, s, len, e);
    memset(en, 0, sizeof *en);
    if (len < 2)
        return err_set(e, ST_INVALID, "statement entry %" PRId64 ": too short", version);
    code = (unsigned char)s[0];
    p = s + 1;
    /* seven '|'-terminated fields, then the description (the rest) */
    for (int k = 0; k < 7; k++) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        if (bar == NULL)
            return err_set(e, ST_INVALID, "statement entry %" PRId64 ": %d fields", version, k + 1);
        f[k] = p;
        flen[k] = (size_t)(bar - p);
        p = bar + 1;
    }
    f[7] = p;
    flen[7] = (size_t)(end - p);
    if (flen[7] >= sizeof en->description || !parse_int(f[0], flen[0], &en->amount) ||
        !parse_int(f[1], flen[1], &en->balance_after) || !at_expand(f[2], flen[2], en->at) ||
        !uuid_expand(f[3], flen[3], en->event_id) || en->event_id[0] == '\0' ||
        !uuid_expand(f[4], flen[4], en->counterparty) || !uuid_expand(f[5], flen[5], en->transfer_id) ||
        !uuid_expand(f[6], flen[6], en->reversed_event_id))
        return err_set(e, ST_INVALID, "statement entry %" PRId64 ": malformed", version);
    memcpy(en->description, f[7], flen[7]);
    en->description[flen[7]] = '\0';
    en->version = version;
    if (code == DISCARDED_CODE) {
        en->discarded = 1;
        en->type = event_type_parse(STATEMENT_DISCARDED_TYPE);
    } else if (code >= 'A' && code < 'A' + EV__COUNT) {
        en->type = (enum event_type)(code - 'A');
    } else {
        return err_set(e, ST_INVALID, "statement entry %" PRId64 ": type code '%c'", version, code);
    }
    return ST_OK;
}

char *statement_entry_render(const char *s, size_t len, int64_t version)
{
    struct statement_entry en;

    if (statement_entry_decode(&en, version, s, len, NULL) != ST_OK)
        return NULL;
    return statement_entry_to_json(&en);
}
