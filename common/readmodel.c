/* Redis read-model layout: key names, the compare-and-set apply script, one-round-trip reads. */
#include "readmodel.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rds.h"

void rm_key_account(char *buf, size_t len, long gen, const char *id)
{
    snprintf(buf, len, "rm:%ld:a:{%s}", gen, id);
}

void rm_key_statement(char *buf, size_t len, long gen, const char *id)
{
    snprintf(buf, len, "rm:%ld:s:{%s}", gen, id);
}

void rm_key_checkpoint(char *buf, size_t len, long gen)
{
    snprintf(buf, len, "rm:%ld:checkpoint", gen);
}

void rm_key_tail(char *buf, size_t len, long gen)
{
    snprintf(buf, len, "rm:%ld:tail", gen);
}

void rm_key_partition(char *buf, size_t len, int part)
{
    snprintf(buf, len, "rm:part:%d", part);
}

/* Everything the script decides is read inside it, so two workers (or the live projector and a
 * rebuild) can never interleave between the version check and the write, and a fenced owner
 * writes nothing at all. Every account is checked before any is written; an account that fails
 * its check is skipped and reported, the others are applied. RPUSH goes in chunks because
 * unpack() is bounded by the Lua C stack (about 8000 values). Lua numbers are doubles: versions,
 * positions, sequences and epochs are exact up to 2^53. The live path's options make a batch one
 * round trip: the generation check replaces a read of the names before each batch, the stall
 * check a read of rm:stalled for an account folded from the worker's own last write, and the
 * notification leaves with the writes it announces (pcall: a refused PUBLISH must not undo
 * nothing and abort the rest). A batch of a few accounts (the live tail's) announces each
 * with the document written, so a read API answers the reads it wakes from memory. */
static const char apply_lua[] =
    "if ARGV[5] ~= '' then\n"
    "  local function valid(k)\n"
    "    local g = redis.call('GET', k)\n"
    "    if g and redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') == 1 then return tonumber(g) end\n"
    "    return 0\n"
    "  end\n"
    "  if valid('rm:current') .. ':' .. valid('rm:building') ~= ARGV[5] then\n"
    "    return redis.error_reply('RMGENS the generations are no longer ' .. ARGV[5])\n"
    "  end\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return redis.error_reply('RMNOGEN ' .. KEYS[1] .. ' is missing: the generation does not exist')\n"
    "end\n"
    "local epoch = tonumber(ARGV[1])\n"
    "local fe, fs = 0, 0\n"
    "if epoch > 0 then\n"
    "  local f = redis.call('HMGET', KEYS[2], 'epoch', 'seq')\n"
    "  fe = tonumber(f[1] or '0')\n"
    "  fs = tonumber(f[2] or '0')\n"
    "  if fe > epoch then return {-1, fe, fs} end\n"
    "  if fe < epoch or fs < tonumber(ARGV[2]) then return {-2, fe, fs} end\n"
    "end\n"
    "local out = {1, fe, fs}\n"
    "local todo = {}\n"
    "local i, k, all = 8, 3, true\n"
    "while i <= #ARGV do\n"
    "  local exp, new, nent = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 4])\n"
    "  local cur = tonumber(redis.call('HGET', KEYS[k], 'v') or '0')\n"
    "  local res = -1\n"
    "  if cur ~= exp then res = cur\n"
    "  elseif ARGV[7] ~= '' and redis.call('HEXISTS', ARGV[7], string.match(KEYS[k], ':a:{(.*)}$') or '') == 1 then\n"
    "    res = cur\n"
    "  elseif nent < 1 or new ~= exp + nent or i + 4 + nent > #ARGV then\n"
    "    res = 'RMARGS ' .. nent .. ' entries do not lead from ' .. exp .. ' to ' .. new\n"
    "  else\n"
    "    local len = redis.call('LLEN', KEYS[k + 1])\n"
    "    if len ~= exp then res = 'RMBROKEN ' .. KEYS[k + 1] .. ' holds ' .. len .. ' entries but v is ' .. cur end\n"
    "  end\n"
    "  out[#out + 1] = res\n"
    "  if res == -1 then todo[#todo + 1] = {k, i} else all = false end\n"
    "  if type(nent) ~= 'number' or nent < 1 then break end\n"
    "  i = i + 5 + nent\n"
    "  k = k + 2\n"
    "end\n"
    "local pos = tonumber(redis.call('HGET', KEYS[1], 'position') or '0')\n"
    "local count = 0\n"
    "for _, t in ipairs(todo) do\n"
    "  local k, i = t[1], t[2]\n"
    "  local first, last = i + 5, i + 4 + tonumber(ARGV[i + 4])\n"
    "  for j = first, last, 1000 do\n"
    "    redis.call('RPUSH', KEYS[k + 1], unpack(ARGV, j, math.min(j + 999, last)))\n"
    "  end\n"
    "  redis.call('HSET', KEYS[k], 'v', ARGV[i + 1], 'doc', ARGV[i + 2])\n"
    "  if tonumber(ARGV[i + 3]) > pos then pos = tonumber(ARGV[i + 3]) end\n"
    "  count = count + last - first + 1\n"
    "end\n"
    "if count > 0 then\n"
    "  redis.call('HSET', KEYS[1], 'position', pos, 'at_ms', ARGV[4])\n"
    "  redis.call('HINCRBY', KEYS[1], 'events', count)\n"
    "end\n"
    "if epoch > 0 and all and tonumber(ARGV[3]) > fs then\n"
    "  redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'at_ms', ARGV[4])\n"
    "  out[3] = tonumber(ARGV[3])\n"
    "end\n"
    "if ARGV[6] == '1' then\n"
    "  local msg = {}\n"
    "  local gen = #todo <= " RM_APPLIED_DOCS_MAX " and string.match(KEYS[1], '^rm:(%d+):')\n"
    "  for _, t in ipairs(todo) do\n"
    "    local m = (string.match(KEYS[t[1]], ':a:{(.*)}$') or '') .. ':' .. ARGV[t[2] + 1]\n"
    "    if gen then m = m .. ':' .. gen .. ':' .. #ARGV[t[2] + 2] .. ':' .. ARGV[t[2] + 2] end\n"
    "    msg[#msg + 1] = m\n"
    "  end\n"
    "  local sent = 0\n"
    "  if #msg > 0 then\n"
    "    sent = redis.pcall('PUBLISH', '" RM_APPLIED_CHANNEL "', table.concat(msg, ' '))\n"
    "    if type(sent) == 'table' then sent = 'RMPUBLISH ' .. tostring(sent.err) end\n"
    "  end\n"
    "  out[#out + 1] = sent\n"
    "end\n"
    "return out\n";

/* A new owner installs its epoch before it reads anything: from then on an older owner's
 * apply is refused. reset >= 0 also sets seq (the stream was recreated below it). */
static const char claim_lua[] =
    "local f = redis.call('HMGET', KEYS[1], 'epoch', 'seq')\n"
    "local fe, fs = tonumber(f[1] or '0'), tonumber(f[2] or '0')\n"
    "local epoch = tonumber(ARGV[1])\n"
    "if fe > epoch then return {-1, fe, fs} end\n"
    "if tonumber(ARGV[2]) >= 0 then fs = tonumber(ARGV[2]) end\n"
    "redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', fs, 'owner', ARGV[3], 'at_ms', ARGV[4])\n"
    "return {1, epoch, fs}\n";

const char *rm_apply_script(void)
{
    return apply_lua;
}

const char *rm_claim_script(void)
{
    return claim_lua;
}

int rm_apply_argc(const struct rm_apply *a, int naccounts)
{
    int n = RM_APPLY_FIXED_ARGS;

    for (int i = 0; i < naccounts; i++)
        n += 2 + 5 + (a[i].nentries > 0 ? a[i].nentries : 0);
    return n;
}

int rm_apply_argv(const struct rm_apply *a, int naccounts, const struct rm_fence *f,
                  const struct rm_apply_opts *o, long gen, int64_t at_ms, const char *sha,
                  struct rm_apply_buf *buf, const char **argv, size_t *lens)
{
    int n = 0, nkeys = 2 + 2 * naccounts;

    for (int i = 0; i < naccounts; i++)
        if (a[i].nentries < 1 || a[i].expected < 0 || a[i].new_version != a[i].expected + a[i].nentries)
            return -1;
    rm_key_checkpoint(buf->head[0], sizeof buf->head[0], gen);
    if (f != NULL)
        rm_key_partition(buf->head[1], sizeof buf->head[1], f->part);
    else
        snprintf(buf->head[1], sizeof buf->head[1], "rm:part:none");
    snprintf(buf->nums[0], sizeof buf->nums[0], "%d", nkeys);
    snprintf(buf->nums[1], sizeof buf->nums[1], "%" PRIu64, f != NULL ? f->epoch : 0);
    snprintf(buf->nums[2], sizeof buf->nums[2], "%" PRIu64, f != NULL ? f->expect_seq : 0);
    snprintf(buf->nums[3], sizeof buf->nums[3], "%" PRIu64, f != NULL ? f->new_seq : 0);
    snprintf(buf->nums[4], sizeof buf->nums[4], "%" PRId64, at_ms);
    snprintf(buf->gens, sizeof buf->gens, "%s", o != NULL && o->gens != NULL ? o->gens : "");
    argv[n++] = "EVALSHA";
    argv[n++] = sha;
    argv[n++] = buf->nums[0];
    argv[n++] = buf->head[0];
    argv[n++] = buf->head[1];
    for (int i = 0; i < naccounts; i++) {
        rm_key_account(buf->acct[i].keys[0], sizeof buf->acct[i].keys[0], gen, a[i].account_id);
        rm_key_statement(buf->acct[i].keys[1], sizeof buf->acct[i].keys[1], gen, a[i].account_id);
        argv[n++] = buf->acct[i].keys[0];
        argv[n++] = buf->acct[i].keys[1];
    }
    argv[n++] = buf->nums[1];
    argv[n++] = buf->nums[2];
    argv[n++] = buf->nums[3];
    argv[n++] = buf->nums[4];
    argv[n++] = buf->gens;
    argv[n++] = o != NULL && o->publish ? "1" : "0";
    argv[n++] = o != NULL && o->stall_key != NULL ? o->stall_key : "";
    for (int i = 0; i < naccounts; i++) {
        struct rm_apply_acct_buf *ab = &buf->acct[i];
        snprintf(ab->nums[0], sizeof ab->nums[0], "%" PRId64, a[i].expected);
        snprintf(ab->nums[1], sizeof ab->nums[1], "%" PRId64, a[i].new_version);
        snprintf(ab->nums[2], sizeof ab->nums[2], "%" PRId64, a[i].position);
        snprintf(ab->nums[3], sizeof ab->nums[3], "%d", a[i].nentries);
        argv[n++] = ab->nums[0];
        argv[n++] = ab->nums[1];
        argv[n++] = a[i].doc;
        argv[n++] = ab->nums[2];
        argv[n++] = ab->nums[3];
        for (int j = 0; j < a[i].nentries; j++)
            argv[n++] = a[i].entries[j];
    }
    for (int i = 0; i < n; i++)
        lens[i] = strlen(argv[i]);
    return n;
}

enum rm_apply_result rm_apply_reply(const redisReply *r, struct rm_fence *f, int naccounts, int publish,
                                    int64_t *held)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_INTEGER)
        return RM_FAILED;
    if (f != NULL) {
        f->held_epoch = (uint64_t)r->element[1]->integer;
        f->held_seq = (uint64_t)r->element[2]->integer;
    }
    if (r->element[0]->integer == -1)
        return RM_FENCED;
    if (r->element[0]->integer == -2)
        return RM_REWOUND;
    if (r->elements != (size_t)naccounts + 3 + (publish ? 1 : 0))
        return RM_FAILED;
    for (int i = 0; i < naccounts; i++) {
        const redisReply *x = r->element[3 + i];
        held[i] = x->type == REDIS_REPLY_INTEGER ? (int64_t)x->integer : -2; /* -2: an error text */
    }
    return RM_APPLIED;
}

static status parse_gen(const redisReply *r, long *gen, struct err *e)
{
    char *end = NULL;
    long g;

    if (r->type == REDIS_REPLY_NIL)
        return err_setr(e, ST_NOT_FOUND, "read_model_unavailable", "no current read-model generation");
    if (r->type != REDIS_REPLY_STRING)
        return err_set(e, ST_INVALID, "%s: unexpected reply type %d", RM_CURRENT_KEY, r->type);
    g = strtol(r->str, &end, 10);
    if (end == r->str || *end != '\0' || g < 1)
        return err_set(e, ST_INVALID, "%s holds '%.32s', not a generation", RM_CURRENT_KEY, r->str);
    *gen = g;
    return ST_OK;
}

static status reply_failed(redisContext *c, const redisReply *r, const char *what, struct err *e)
{
    if (r == NULL)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis %s: %s", what,
                        rds_errstr(c));
    return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis %s: %s", what,
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
}

status rm_load_current(redisContext *c, long *gen, struct err *e)
{
    redisReply *r = rds_command(c, "GET %s", RM_CURRENT_KEY);
    status st;

    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = reply_failed(c, r, "get " RM_CURRENT_KEY, e);
    else
        st = parse_gen(r, gen, e);
    freeReplyObject(r);
    return st;
}

/* A name counts only when the generation's checkpoint exists. */
/* The current generation is read inside the script, so an answer never mixes generations and a
 * switch (rebuild, rollback) is seen by the very next request. A generation without its
 * checkpoint hash has no data (keys flushed, rm:current set by hand): answered as no model
 * (503) rather than with wrong zeros, until the projector's rebuild switches to a real one. */
static const char read_account_lua[] =
    "local g = redis.call('GET', 'rm:current')\n"
    "if not g or redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') == 0 then return {} end\n"
    "local h = redis.call('HMGET', 'rm:' .. g .. ':a:{' .. ARGV[1] .. '}', 'v', 'doc')\n"
    "return {g, h[1], h[2], redis.call('HGET', 'rm:stalled', ARGV[1])}\n";

/* The page is the versions lo..hi of the statement clipped to 1..v, at most limit of them, from
 * the top (desc) or the bottom (asc): cursors and time bounds are both version bounds by then. */
static const char read_statement_lua[] =
    "local g = redis.call('GET', 'rm:current')\n"
    "if not g or redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') == 0 then return {} end\n"
    "local h = redis.call('HMGET', 'rm:' .. g .. ':a:{' .. ARGV[1] .. '}', 'v', 'doc')\n"
    "local stalled = redis.call('HGET', 'rm:stalled', ARGV[1])\n"
    "if not h[1] then return {g, false, false, stalled, 0, 0, {}} end\n"
    "local v = tonumber(h[1])\n"
    "local lo = math.max(tonumber(ARGV[3]), 1)\n"
    "local hi = tonumber(ARGV[4])\n"
    "if hi == 0 or hi > v then hi = v end\n"
    "local limit = tonumber(ARGV[2])\n"
    "if ARGV[5] == 'asc' then hi = math.min(hi, lo + limit - 1) else lo = math.max(lo, hi - limit + 1) end\n"
    "local entries = {}\n"
    "if lo <= hi then entries = redis.call('LRANGE', 'rm:' .. g .. ':s:{' .. ARGV[1] .. '}', lo - 1, hi - 1)\n"
    "else lo = 0; hi = 0 end\n"
    "return {g, h[1], h[2], stalled, lo, hi, entries}\n";

/* The documents of several accounts (an owner's page) from one generation. */
static const char read_accounts_lua[] =
    "local g = redis.call('GET', 'rm:current')\n"
    "if not g or redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') == 0 then return {} end\n"
    "local out = {g}\n"
    "for i = 1, #ARGV do\n"
    "  out[i + 1] = redis.call('HGET', 'rm:' .. g .. ':a:{' .. ARGV[i] .. '}', 'doc')\n"
    "end\n"
    "return out\n";

static const char read_status_lua[] =
    "local g = redis.call('GET', 'rm:current')\n"
    "local b = redis.call('GET', 'rm:building')\n"
    "local cp = {}\n"
    "if g then cp = redis.call('HGETALL', 'rm:' .. g .. ':checkpoint') end\n"
    "local bcp = {}\n"
    "if b then bcp = redis.call('HGETALL', 'rm:' .. b .. ':checkpoint') end\n"
    "local parts = {}\n"
    "for p = 0, tonumber(ARGV[1] or '0') - 1 do\n"
    "  parts[#parts + 1] = redis.call('HGETALL', 'rm:part:' .. p)\n"
    "end\n"
    "return {g or false, b or false, cp, bcp, redis.call('HGETALL', 'rm:head'),\n"
    "        redis.call('HGETALL', 'rm:stalled'), redis.call('HGETALL', 'rm:rebuild'),\n"
    "        redis.call('HLEN', 'rm:parked'), redis.call('GET', 'rm:previous') or false,\n"
    "        g and redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') or 0, parts}\n";

const char *rm_read_account_script(void)
{
    return read_account_lua;
}

const char *rm_read_statement_script(void)
{
    return read_statement_lua;
}

const char *rm_read_accounts_script(void)
{
    return read_accounts_lua;
}

const char *rm_read_status_script(void)
{
    return read_status_lua;
}

static const char gens_lua[] =
    "local function valid(k)\n"
    "  local g = redis.call('GET', k)\n"
    "  if g and redis.call('EXISTS', 'rm:' .. g .. ':checkpoint') == 1 then return tonumber(g) end\n"
    "  return 0\n"
    "end\n"
    "return {valid('rm:current'), valid('rm:building'), valid('rm:previous'),\n"
    "        tonumber(redis.call('GET', 'rm:current') or '0') or 0}\n";

status rm_load_gens(redisContext *c, struct rm_gens *out, struct err *e)
{
    /* EVAL_RO: it only reads, so it also runs on a replica holding its stream (CLIENT PAUSE) */
    redisReply *r = rds_command(c, "EVAL_RO %s 0", gens_lua);
    status st = ST_OK;

    memset(out, 0, sizeof *out);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        st = reply_failed(c, r, "load generations", e);
    } else {
        out->current = (long)r->element[0]->integer;
        out->building = (long)r->element[1]->integer;
        out->previous = (long)r->element[2]->integer;
        out->current_named = (long)r->element[3]->integer;
    }
    freeReplyObject(r);
    return st;
}

/* A fresh generation is only allocated here, not named: no worker writes into it (it has no
 * checkpoint and is in no rm:* name) until rm_open_script, after the caller has removed whatever
 * keys of that number are left over. Clearing a generation that live workers already write
 * splits pairs: SCAN may return one key of a pair created during the scan. */
static const char begin_lua[] =
    "local b = redis.call('GET', 'rm:building')\n"
    "local rb = redis.call('HMGET', 'rm:rebuild', 'gen', 'state', 'cursor', 'done', 'mode')\n"
    "if b and rb[1] == b and rb[2] == 'building' and rb[3] and rb[5] == ARGV[1]\n"
    "   and redis.call('EXISTS', 'rm:' .. b .. ':checkpoint') == 1 then\n"
    "  redis.call('HSET', 'rm:rebuild', 'updated_at_ms', ARGV[2])\n"
    "  return {tonumber(b), rb[3], tonumber(rb[4] or '0'), 1, 0, 0, 0}\n"
    "end\n"
    "local seq = redis.call('GET', 'rm:genseq')\n"
    "local g = tonumber(seq or '0') or 0\n"
    "for _, k in ipairs({'rm:current', 'rm:building', 'rm:previous'}) do\n"
    "  local v = tonumber(redis.call('GET', k) or '0') or 0\n"
    "  if v > g then g = v end\n"
    "end\n"
    "g = g + 1\n"
    "local cur, prev = redis.call('GET', 'rm:current'), redis.call('GET', 'rm:previous')\n"
    "local stale, prep = 0, 0\n"
    "if b and b ~= cur and b ~= prev then stale = tonumber(b) or 0 end\n"
    "if rb[2] == 'preparing' and rb[1] and rb[1] ~= b and rb[1] ~= cur and rb[1] ~= prev then\n"
    "  prep = tonumber(rb[1]) or 0 end\n"
    "redis.call('SET', 'rm:genseq', g)\n"
    "redis.call('DEL', 'rm:building', 'rm:rebuild')\n"
    "redis.call('HSET', 'rm:rebuild', 'gen', g, 'state', 'preparing', 'mode', ARGV[1], 'done', 0,\n"
    "           'total', 0, 'events_per_s', 0, 'eta_s', 0, 'started_at_ms', ARGV[2],\n"
    "           'updated_at_ms', ARGV[2], 'cursor', '0:0')\n"
    "return {g, '0:0', 0, 0, stale, prep, seq and 0 or 1}\n";

static const char open_lua[] =
    "local rb = redis.call('HMGET', 'rm:rebuild', 'gen', 'state')\n"
    "if rb[1] ~= ARGV[1] or rb[2] ~= 'preparing' or redis.call('EXISTS', 'rm:building') == 1 then\n"
    "  return 0 end\n"
    "redis.call('HSET', 'rm:' .. ARGV[1] .. ':checkpoint', 'position', 0, 'events', 0, 'at_ms', ARGV[2])\n"
    "redis.call('SET', 'rm:building', ARGV[1])\n"
    "redis.call('HSET', 'rm:rebuild', 'state', 'building', 'updated_at_ms', ARGV[2])\n"
    "return 1\n";

/* The rebuild's cursor is compared with the one Redis holds: when Redis came back with writes
 * lost (a restore, a promoted replica, an everysec AOF), the generation holds only what that
 * older cursor claims, and the switch must wait for the rebuild to go over the rest again.
 * Stalls belong to a generation: the served one's are rm:stalled, a building one's
 * rm:<gen>:stalled; the switch keeps the old current's under its number (a rollback brings
 * them back) and makes the new one's rm:stalled, in the same step. */
static const char switch_lua[] =
    "if redis.call('GET', 'rm:building') ~= ARGV[1] then return -1 end\n"
    "if redis.call('HGET', 'rm:rebuild', 'cursor') ~= ARGV[3] then return -2 end\n"
    "redis.call('SET', 'rm:' .. ARGV[1] .. ':tail', ARGV[3])\n"
    "local c = redis.call('GET', 'rm:current')\n"
    "local p = redis.call('GET', 'rm:previous')\n"
    "local dropped = 0\n"
    "if c and c ~= ARGV[1] and redis.call('EXISTS', 'rm:' .. c .. ':checkpoint') == 1 then\n"
    "  redis.call('SET', 'rm:previous', c)\n"
    "  if p and p ~= c and p ~= ARGV[1] then dropped = tonumber(p) end\n"
    "elseif p == ARGV[1] then\n"
    "  redis.call('DEL', 'rm:previous')\n"
    "end\n"
    "if c and c ~= ARGV[1] and redis.call('EXISTS', 'rm:stalled') == 1 then\n"
    "  redis.call('RENAME', 'rm:stalled', 'rm:' .. c .. ':stalled')\n"
    "else\n"
    "  redis.call('DEL', 'rm:stalled')\n"
    "end\n"
    "if redis.call('EXISTS', 'rm:' .. ARGV[1] .. ':stalled') == 1 then\n"
    "  redis.call('RENAME', 'rm:' .. ARGV[1] .. ':stalled', 'rm:stalled')\n"
    "end\n"
    "redis.call('SET', 'rm:current', ARGV[1])\n"
    "redis.call('DEL', 'rm:building')\n"
    "redis.call('HSET', 'rm:rebuild', 'state', 'done', 'updated_at_ms', ARGV[2], 'eta_s', 0)\n"
    "redis.call('PUBLISH', 'rm:applied', '*')\n"
    "return dropped\n";

static const char rollback_lua[] =
    "if redis.call('GET', 'rm:previous') ~= ARGV[1] then return {0} end\n"
    "if redis.call('EXISTS', 'rm:building') == 1 then return {0} end\n"
    "if redis.call('EXISTS', 'rm:' .. ARGV[1] .. ':checkpoint') == 0 then return {0} end\n"
    "redis.call('SET', 'rm:building', ARGV[1])\n"
    "redis.call('DEL', 'rm:rebuild')\n"
    "local t = redis.call('GET', 'rm:' .. ARGV[1] .. ':tail') or '0:0'\n"
    "redis.call('HSET', 'rm:rebuild', 'gen', ARGV[1], 'state', 'building', 'mode', 'rollback',\n"
    "           'done', 0, 'total', 0, 'started_at_ms', ARGV[2], 'updated_at_ms', ARGV[2], 'cursor', t)\n"
    "return {1, t}\n";

const char *rm_begin_script(void)
{
    return begin_lua;
}

const char *rm_open_script(void)
{
    return open_lua;
}

const char *rm_switch_script(void)
{
    return switch_lua;
}

const char *rm_rollback_script(void)
{
    return rollback_lua;
}

/* UNLINK of every key matching pattern, SCAN COUNT 1000 at a time: never blocks Redis. */
static status scan_unlink(redisContext *c, const char *pattern, long *removed, struct err *e)
{
    char cursor[32] = "0";
    redisReply *r = NULL, *u = NULL;
    status st = ST_OK;

    do {
        redisReply *keys;
        const char **argv = NULL;
        r = rds_command(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            st = reply_failed(c, r, "scan generation", e);
            goto cleanup;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        keys = r->element[1];
        if (keys->elements > 0) {
            argv = calloc(keys->elements + 1, sizeof *argv);
            if (argv == NULL) {
                st = err_set(e, ST_INTERNAL, "out of memory");
                goto cleanup;
            }
            argv[0] = "UNLINK";
            for (size_t i = 0; i < keys->elements; i++)
                argv[i + 1] = keys->element[i]->str;
            u = rds_command_argv(c, (int)keys->elements + 1, argv, NULL);
            free(argv);
            if (u == NULL || u->type == REDIS_REPLY_ERROR) {
                st = reply_failed(c, u, "unlink generation", e);
                goto cleanup;
            }
            *removed += (long)u->integer;
            freeReplyObject(u);
            u = NULL;
        }
        freeReplyObject(r);
        r = NULL;
    } while (strcmp(cursor, "0") != 0);
cleanup:
    freeReplyObject(r);
    freeReplyObject(u);
    return st;
}

status rm_drop_generation(redisContext *c, long gen, long *removed, struct err *e)
{
    char pattern[64], key[RM_KEY_SIZE];
    redisReply *r = NULL;
    status st = ST_OK;
    long n = 0;

    if (gen < 1)
        goto cleanup;
    rm_key_checkpoint(key, sizeof key, gen);
    r = rds_command(c, "DEL %s", key);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = reply_failed(c, r, "drop generation", e);
        goto cleanup;
    }
    n += (long)r->integer;
    snprintf(pattern, sizeof pattern, "rm:%ld:*", gen);
    st = scan_unlink(c, pattern, &n, e);
cleanup:
    freeReplyObject(r);
    if (removed != NULL)
        *removed = n;
    return st;
}

status rm_check_noeviction(redisContext *c, struct err *e)
{
    redisReply *r = rds_command(c, "INFO memory");
    const char *p;
    char policy[64] = "";
    status st = ST_OK;

    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        st = reply_failed(c, r, "info memory", e);
        goto cleanup;
    }
    p = strstr(r->str, "maxmemory_policy:");
    if (p != NULL)
        sscanf(p + strlen("maxmemory_policy:"), "%63[^\r\n]", policy);
    if (strcmp(policy, "noeviction") != 0)
        st = err_set(e, ST_INVALID,
                     "Redis maxmemory-policy is '%s': it must be noeviction (an evicting Redis drops "
                     "one key of an account's pair or a generation's checkpoint)", policy[0] ? policy : "unknown");
cleanup:
    freeReplyObject(r);
    return st;
}

static char *dup_reply(const redisReply *r)
{
    char *s = malloc(r->len + 1);

    if (s != NULL) {
        memcpy(s, r->str, r->len);
        s[r->len] = '\0';
    }
    return s;
}

status rm_load_account(redisContext *c, long gen, const char *id, struct rm_account *out,
                       struct err *e)
{
    status st = ST_OK;
    redisReply *r = NULL;
    char key[RM_KEY_SIZE];

    memset(out, 0, sizeof *out);
    rm_key_account(key, sizeof key, gen, id);
    r = rds_command(c, "HMGET %s v doc", key);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        st = reply_failed(c, r, "load account", e);
        goto cleanup;
    }
    if (r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        goto cleanup; /* not in this generation */
    out->version = strtoll(r->element[0]->str, NULL, 10);
    out->doc = dup_reply(r->element[1]);
    if (out->doc == NULL)
        st = err_set(e, ST_INTERNAL, "out of memory");
cleanup:
    freeReplyObject(r);
    if (st != ST_OK)
        rm_account_release(out);
    return st;
}

status rm_load_statement(redisContext *c, long gen, const char *id, int64_t from, int64_t to,
                         struct rm_page *out, struct err *e)
{
    status st = ST_OK;
    redisReply *r = NULL;
    char key[RM_KEY_SIZE];

    memset(out, 0, sizeof *out);
    if (from < 1)
        from = 1;
    if (to < from)
        return ST_OK;
    rm_key_statement(key, sizeof key, gen, id);
    r = rds_command(c, "LRANGE %s %lld %lld", key, (long long)(from - 1), (long long)(to - 1));
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        st = reply_failed(c, r, "load statement", e);
        goto cleanup;
    }
    if (r->elements == 0)
        goto cleanup;
    out->entries = calloc(r->elements, sizeof *out->entries);
    if (out->entries == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) {
            st = err_set(e, ST_INVALID, "statement '%s' holds a non-string entry", key);
            goto cleanup;
        }
        out->entries[i] = dup_reply(r->element[i]);
        if (out->entries[i] == NULL) {
            st = err_set(e, ST_INTERNAL, "out of memory");
            goto cleanup;
        }
        out->n = (int)i + 1;
    }
    out->first_version = from;
cleanup:
    freeReplyObject(r);
    if (st != ST_OK)
        rm_page_release(out);
    return st;
}

void rm_account_release(struct rm_account *a)
{
    if (a == NULL)
        return;
    free(a->doc);
    memset(a, 0, sizeof *a);
}

void rm_page_release(struct rm_page *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n; i++)
        free(p->entries[i]);
    free(p->entries);
    memset(p, 0, sizeof *p);
}
