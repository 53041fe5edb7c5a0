/* Generations present in Redis, the janitor that removes unreachable ones, and the fold
 * version each generation is built with. */
#include "gens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "engine.h"
#include "log.h"
#include "rds.h"
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
        redisReply *r = rds_command(c, "SCAN %s MATCH rm:[0-9]* COUNT 1000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis scan: %s",
                          r == NULL ? rds_errstr(c) : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
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
        redisReply *r = rds_command(c, "EVAL %s 0 %ld", unreachable_lua, p.gen[i]);
        long k = 0;
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s",
                          r == NULL ? rds_errstr(c) : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
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

/* ---- fold versions ---- */

status pj_gen_fold(redisContext *c, long gen, char *out, size_t len, struct err *e)
{
    redisReply *r = rds_command(c, "GET rm:%ld:fold", gen);
    status st = ST_OK;

    out[0] = '\0';
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis fold version of generation %ld: %s", gen,
                      r == NULL ? rds_errstr(c) : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    else if (r->type == REDIS_REPLY_STRING)
        snprintf(out, len, "%s", r->str);
    freeReplyObject(r);
    return st;
}

status pj_gen_fold_set(redisContext *c, long gen, struct err *e)
{
    redisReply *r = rds_command(c, "SET rm:%ld:fold %s", gen, proj_fold_version());
    status st = ST_OK;

    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis set the fold version of generation %ld: %s",
                      gen, r == NULL ? rds_errstr(c) : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return st;
}

int pj_fold_writable(struct pj *p, long gen)
{
    char fold[64];
    struct err e;

    if (gen == p->fold_building)
        return p->fold_building_ok;
    if (pj_gen_fold(p->rc, gen, fold, sizeof fold, &e) != ST_OK)
        return 0; /* asked again with the next batch */
    p->fold_building = gen;
    p->fold_building_ok = strcmp(fold, proj_fold_version()) == 0;
    if (!p->fold_building_ok)
        log_info("generation %ld is being built with fold version %s, this worker folds %s: its rebuild "
                 "folds every event of it, this worker only the current generation",
                 gen, fold[0] ? fold : "(none)", proj_fold_version());
    return p->fold_building_ok;
}

void pj_fold_note_current(struct pj *p, long gen)
{
    char fold[64];
    struct err e;

    if (gen <= 0 || gen == p->fold_current)
        return;
    if (pj_gen_fold(p->rc, gen, fold, sizeof fold, &e) != ST_OK)
        return;
    p->fold_current = gen;
    if (fold[0] != '\0' && strcmp(fold, proj_fold_version()) != 0)
        log_warn("current generation %ld was built with fold version %s, this worker folds %s: run the same "
                 "projector binary everywhere (and rebuild with it)", gen, fold, proj_fold_version());
}
