/* Generations present in Redis and the janitor that removes unreachable ones. */
#include "gens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "readmodel.h"

static void add_key(struct pj_gens_present *out, const char *key)
{
    char *end = NULL;
    long g = strtol(key + 3, &end, 10);
    int i;

    if (end == key + 3 || *end != ':' || g < 1)
        return;
    for (i = 0; i < out->n && out->gen[i] < g; i++)
        ;
    if (i < out->n && out->gen[i] == g) {
        out->keys[i]++;
        return;
    }
    if (out->n == PJ_GENS_MAX)
        return;
    memmove(&out->gen[i + 1], &out->gen[i], (size_t)(out->n - i) * sizeof out->gen[0]);
    memmove(&out->keys[i + 1], &out->keys[i], (size_t)(out->n - i) * sizeof out->keys[0]);
    out->gen[i] = g;
    out->keys[i] = 1;
    out->n++;
}

status pj_gens_present(redisContext *c, struct pj_gens_present *out, struct err *e)
{
    char cursor[32] = "0";
    status st = ST_OK;

    memset(out, 0, sizeof *out);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH rm:[0-9]* COUNT 1000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis scan: %s",
                          r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (r->element[1]->element[i]->type == REDIS_REPLY_STRING)
                add_key(out, r->element[1]->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return st;
}

/* ARGV gen: when no name holds it, delete its checkpoint (no writer can touch it after that)
 * and reply 1; else 0. */
static const char unreachable_lua[] =
    "for _, k in ipairs({'rm:current', 'rm:building', 'rm:previous'}) do\n"
    "  if redis.call('GET', k) == ARGV[1] then return 0 end\n"
    "end\n"
    "redis.call('DEL', 'rm:' .. ARGV[1] .. ':checkpoint')\n"
    "return 1\n";

status pj_gens_drop_unreachable(redisContext *c, long *dropped, long *removed, struct err *e)
{
    struct pj_gens_present p;
    long nd = 0, nk = 0;
    status st = pj_gens_present(c, &p, e);

    for (int i = 0; st == ST_OK && i < p.n; i++) {
        redisReply *r = redisCommand(c, "EVAL %s 0 %ld", unreachable_lua, p.gen[i]);
        long k = 0;
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s",
                          r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
            freeReplyObject(r);
            break;
        }
        if (r->integer == 1) {
            st = rm_drop_generation(c, p.gen[i], &k, e);
            nd++;
            nk += k;
        }
        freeReplyObject(r);
    }
    if (dropped != NULL)
        *dropped = nd;
    if (removed != NULL)
        *removed = nk;
    return st;
}
