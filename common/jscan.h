/* A JSON object scanner that builds no document tree: the fast path of the event envelope and
 * account document decoders (common/evparse.c).
 *
 * It reads one object (nested objects to depth JSCAN_DEPTH, at most JSCAN_MAX members in all) and
 * only the simple forms: strings without escapes (UTF-8 checked as jansson checks it), integers
 * of at most 18 digits, null, true and false. Anything else -- arrays, escapes, reals, longer
 * numbers, a duplicate key, more members, malformed text -- is "not handled" (false): the caller
 * then runs the full parser (jansson), which gives the exact result or error. So what it accepts,
 * jansson (with JSON_REJECT_DUPLICATES) accepts with the same values. */
#ifndef COMMON_JSCAN_H
#define COMMON_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSCAN_MAX 48
#define JSCAN_DEPTH 2 /* the top object and objects inside it */
#define JSCAN_TOP (-1) /* parent of the top object's members */

enum jscan_kind { JSCAN_NULL = 1, JSCAN_FALSE, JSCAN_TRUE, JSCAN_INT, JSCAN_STR, JSCAN_OBJ };

struct jscan_member {
    const char *key; /* borrowed from the input: klen bytes, no terminator */
    size_t klen;
    int parent;      /* index of the JSCAN_OBJ member holding it; JSCAN_TOP for the top object */
    enum jscan_kind kind;
    const char *str; /* JSCAN_STR: the bytes between the quotes (borrowed) */
    size_t len;
    int64_t num;     /* JSCAN_INT */
};

struct jscan {
    struct jscan_member m[JSCAN_MAX];
    int n;
};

/* Scans the whole of buf[0..len) (an object, surrounded by JSON whitespace only). */
bool jscan_parse(struct jscan *js, const char *buf, size_t len);

/* The member key of the object parent (JSCAN_TOP or a member's index); NULL when absent. */
const struct jscan_member *jscan_get(const struct jscan *js, int parent, const char *key);

/* The index of m (a member of js), to pass as parent. */
int jscan_index(const struct jscan *js, const struct jscan_member *m);

#endif
