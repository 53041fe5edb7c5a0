/* The Redis read-model layout (contract shared by the projector, the read API and the tests):
 * key names, the apply script, and read helpers. */
#ifndef COMMON_READMODEL_H
#define COMMON_READMODEL_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Layout:
 *   rm:current                 string: the current generation (integer >= 1), the one the read
 *                              API serves; missing = no model (the API answers 503)
 *   rm:building                string: the generation a rebuild is filling (never served)
 *   rm:previous                string: the generation before the last switch (rollback target)
 *   rm:genseq                  string: the highest generation number ever allocated
 *   rm:rebuild                 hash: gen, state (preparing|building|verifying|done), mode
 *                              (switch|verify|rollback), done, total, events_per_s, eta_s,
 *                              started_at_ms, updated_at_ms, cursor ("tx_id:position", resume)
 *   rm:rebuild:lease           string: token of the one process allowed to rebuild (SET NX PX)
 *   rm:<gen>:a:{<id>}          hash: v (applied stream_version), doc (GET /accounts/{id} body)
 *   rm:<gen>:s:{<id>}          list: element i = statement entry of version i+1; LLEN == v
 *   rm:<gen>:checkpoint        hash: position (highest applied), at_ms (last apply), events.
 *                              A generation exists only while this key does: the apply script
 *                              refuses to write into a generation without it, and the read API
 *                              treats a current generation without it as no model.
 *   rm:<gen>:tail              string: the projector's catch-up cursor "tx_id:position"
 *   rm:part:<p>                hash: epoch (fencing epoch of partition p's owner), seq (last
 *                              JetStream sequence of events.<p> applied to every generation),
 *                              owner, at_ms. Written by the claim and the apply scripts only.
 *   rm:head                    hash: position (event-store head seen by a projector), at_ms,
 *                              unapplied (events the store holds beyond the applied version of
 *                              the stalled accounts), lowest_unapplied (the lowest of their
 *                              positions, 0 when none): lag = position - checkpoint + unapplied
 *   rm:parked                  hash: event_id -> {"event_id","account_id","stream_version",
 *                              "position","reason","parked_at","payload"[,"jetstream_seq"]}
 *   rm:stalled                 hash: account_id -> {"event_id","reason","since"}: the served
 *                              generation's stalls
 *   rm:<gen>:stalled           the same for a generation being built (or kept for rollback):
 *                              the switch makes it rm:stalled and files the old one here
 *   rm:<gen>:fold              string: the fold version the generation is built with
 *   rm:applied:lost            counter: notifications a projector could not send (refused,
 *                              connection lost); the read API clears its cache when it moves
 *   channel rm:applied         "<account_id>:<version> ..." after each applied batch, "*" when
 *                              the switch script changes rm:current (read API caches follow);
 *                              a batch of at most RM_APPLIED_DOCS_MAX accounts announces each
 *                              as "<account_id>:<version>:<gen>:<length>:<document>" (the
 *                              document written, length in bytes)
 * The {id} hash tag keeps an account's two keys on one Redis Cluster slot, which the apply
 * script needs (it touches both atomically). */
#define RM_CURRENT_KEY "rm:current"
#define RM_BUILDING_KEY "rm:building"
#define RM_PREVIOUS_KEY "rm:previous"
#define RM_GENSEQ_KEY "rm:genseq"
#define RM_REBUILD_KEY "rm:rebuild"
#define RM_REBUILD_LEASE_KEY "rm:rebuild:lease"
#define RM_HEAD_KEY "rm:head"
#define RM_PARKED_KEY "rm:parked"
#define RM_APPLIED_LOST_KEY "rm:applied:lost"
#define RM_STALLED_KEY "rm:stalled"
#define RM_APPLIED_CHANNEL "rm:applied"
#define RM_APPLIED_DOCS_MAX "16" /* accounts of a batch whose notification carries documents */
#define RM_KEY_SIZE 128

/* Key builders: write the key into buf (len bytes, truncated safely; RM_KEY_SIZE is enough). */
void rm_key_account(char *buf, size_t len, long gen, const char *id);
void rm_key_statement(char *buf, size_t len, long gen, const char *id);
void rm_key_checkpoint(char *buf, size_t len, long gen);
void rm_key_tail(char *buf, size_t len, long gen);
void rm_key_partition(char *buf, size_t len, int part);

/* The apply script (static text, never freed): compare-and-set of many accounts into a
 * generation that exists (its checkpoint hash is there; else the error "RMNOGEN ..."), fenced by
 * the partition's owner epoch:
 *   KEYS = generation checkpoint, rm:part:<p>, then per account: account hash, statement list
 *   ARGV = epoch (0: unfenced, the sweep and the rebuild), expected seq, new seq (0: keep), at_ms,
 *          generations ("<current>:<building>" as rm_load_gens reads them, "": unchecked),
 *          publish ("1": announce the applied accounts on rm:applied), stall hash ("": none),
 *          then per account: expected version, new version, doc, position, n, entry 1..n
 *          (n = new - expected, the entries of versions expected+1 .. new, in order)
 * With generations given and other ones named, nothing is written: the error "RMGENS ...".
 * Fenced calls first read rm:part:<p>: an epoch above the caller's refuses the whole call
 * (reply {-1, epoch, seq}); an epoch below it or a seq below the expected one means the store
 * went back in time (reply {-2, epoch, seq}); nothing is written in either case. Otherwise the
 * reply is {1, epoch, seq, r_1 .. r_n}: r_i = -1 applied, an integer >= 0 the version the
 * account holds when it is not the expected one (or, with a stall hash, when the hash names the
 * account: the caller reads it again), or an error text (RMBROKEN: the list length disagrees with
 * v; RMARGS) and that account is not written. seq moves to the new seq only when every account
 * of the call was applied. With publish, one more element ends the reply: the PUBLISH's answer
 * (receivers, 0 when nothing was applied) or its error as text "RMPUBLISH ..." (the writes
 * stand). */
const char *rm_apply_script(void);
/* The claim script: KEYS rm:part:<p>; ARGV epoch, reset seq (-1: keep), owner, at_ms. Installs
 * the epoch unless a newer one is there: reply {1, epoch, seq} or {-1, held epoch, seq}. */
const char *rm_claim_script(void);

/* EVALSHA sha numkeys k1 k2 epoch expect_seq new_seq at_ms gens publish stall_key */
#define RM_APPLY_FIXED_ARGS 12

/* One account's part of an apply: the caller owns every string and keeps them alive while argv
 * is used. */
struct rm_apply {
    const char *account_id;
    int64_t expected;    /* version the hash must hold (0: absent) */
    int64_t new_version; /* expected + nentries */
    const char *doc;
    int64_t position;    /* highest global position among the entries */
    int nentries;
    char *const *entries; /* statement entries of versions expected+1 .. new_version */
};

/* The partition fence of a live owner's apply. */
struct rm_fence {
    int part;
    uint64_t epoch;      /* the owner's lease revision */
    uint64_t expect_seq; /* the seq rm:part:<p> must hold at least */
    uint64_t new_seq;    /* seq to record when every account applies (0: keep) */
    uint64_t held_epoch, held_seq; /* from the reply */
};

/* Scratch space for the argument strings of one apply call: acct has one slot per account
 * (caller-allocated). */
struct rm_apply_acct_buf {
    char keys[2][RM_KEY_SIZE];
    char nums[4][24];
};
struct rm_apply_buf {
    char head[2][RM_KEY_SIZE];
    char nums[5][24];
    char gens[48];
    struct rm_apply_acct_buf *acct;
};

/* The live path's options of one apply call (rm_apply_argv's o; NULL: none): the generations
 * the batch was built for ("<current>:<building>", NULL: unchecked), whether to announce the
 * applied accounts on rm:applied, and the stall hash to check each account in (NULL: none). */
struct rm_apply_opts {
    const char *gens;
    int publish;
    const char *stall_key;
};

/* Number of argv slots rm_apply_argv needs for the n accounts of a. */
int rm_apply_argc(const struct rm_apply *a, int n);
/* Builds "EVALSHA sha numkeys keys... args..." into argv/lens (rm_apply_argc slots); f NULL:
 * unfenced, o NULL: no options. The strings point into a, o, sha and buf. Returns the argc, or
 * -1 when an account is inconsistent (new_version != expected + nentries, nentries < 1). */
int rm_apply_argv(const struct rm_apply *a, int n, const struct rm_fence *f, const struct rm_apply_opts *o,
                  long gen, int64_t at_ms, const char *sha, struct rm_apply_buf *buf, const char **argv,
                  size_t *lens);

enum rm_apply_result { RM_APPLIED = 0, RM_FENCED, RM_REWOUND, RM_FAILED };
/* Interprets the script's reply: f's held_epoch/held_seq are set (f may be NULL); on RM_APPLIED
 * held[i] is -1 (applied), the held version (>= 0) on a conflict, or -2 (an error text: the
 * caller reads the reply's element 3 + i); publish: the call asked for the notification, whose
 * answer is element 3 + n. */
enum rm_apply_result rm_apply_reply(const redisReply *r, struct rm_fence *f, int n, int publish, int64_t *held);

/* The read API's scripts (static text), each one round trip with the generation read inside,
 * so an answer never mixes generations. A generation without its checkpoint hash counts as no
 * model. Replies:
 *   account   (ARGV id):       {} when no model, else {gen, v|nil, doc|nil, stalled|nil}
 *   statement (ARGV id, limit, lo, hi|0, "asc"|"desc"): {} when no model, else {gen, v|nil,
 *              doc|nil, stalled|nil, first, last, entries of versions first..last oldest first}:
 *              the versions lo..hi clipped to 1..v, at most limit of them from the top (desc)
 *              or the bottom (asc); first = last = 0 when none
 *   accounts  (ARGV id...):      {} when no model, else {gen, doc|nil per id}
 *   status    (ARGV partitions, may be absent): {current|false, building|false, current
 *              checkpoint pairs, building checkpoint pairs, rm:head pairs, rm:stalled pairs,
 *              rm:rebuild pairs, parked count, previous|false, current checkpoint exists 0/1,
 *              {rm:part:0 pairs, ..., rm:part:<partitions-1> pairs}}
 * stalled is the account's rm:stalled record (JSON) when a parked event holds it back. */
const char *rm_read_account_script(void);
const char *rm_read_statement_script(void);
const char *rm_read_accounts_script(void);
const char *rm_read_status_script(void);

/* Read helpers. Each is one round trip and never keeps a reply past the call. */

struct rm_account {
    int64_t version; /* 0 with doc NULL: the account is not in the generation */
    char *doc;       /* malloc'd, owned by the struct (rm_account_release) */
};

struct rm_page {
    int64_t first_version; /* version of entries[0] (0 when n == 0) */
    int n;
    char **entries;        /* malloc'd JSON strings, oldest first; owned by the struct */
};

/* The current generation into *gen; ST_NOT_FOUND when rm:current is missing (no read model),
 * ST_UNAVAILABLE on a Redis failure, ST_INVALID when it does not hold an integer >= 1. */
status rm_load_current(redisContext *c, long *gen, struct err *e) WUR;
/* The generations in one atomic read. A generation whose checkpoint hash is missing (keys
 * flushed, or a name set by hand) is reported as 0: it must be neither served nor written. */
struct rm_gens {
    long current, building, previous;
    long current_named; /* rm:current as set, valid or not (0: missing) */
};
status rm_load_gens(redisContext *c, struct rm_gens *out, struct err *e) WUR;

/* Scripts of the generation switches (static text). Each checks what it expects first and
 * changes nothing (reply 0) when another process got there before:
 *   begin:    KEYS none; ARGV mode, now_ms. Resumes the rebuild in progress when rm:building
 *             and rm:rebuild agree (reply {gen, cursor, done, 1, 0, 0, 0}); otherwise allocates
 *             a new generation WITHOUT naming it (rm:rebuild state "preparing", no checkpoint,
 *             rm:building removed) and replies {gen, "0:0", 0, 0, stale, prepared, reused}:
 *             stale = the abandoned building generation to drop, prepared = one a dead rebuild
 *             allocated but never opened (drop it too), 0 when none (never the current or
 *             previous one, e.g. a dead rollback's target); reused = 1 when rm:genseq was
 *             missing, so keys of that number may be left over (drop them before opening)
 *   open:     ARGV gen, now_ms. If rm:rebuild is preparing gen and nothing is building: creates
 *             its checkpoint, names it rm:building (live workers write it from now on); 1, else 0
 *   switch:   ARGV gen, now_ms, cursor. If rm:building == gen and rm:rebuild's cursor is
 *             cursor (Redis did not lose the rebuild's last steps): the generation's sweep
 *             cursor = cursor, rm:previous = rm:current (when valid), rm:current = gen, DEL
 *             rm:building; reply the generation that stopped being previous (to drop, 0 when
 *             none); -1 when gen is not building, -2 when the cursor differs (nothing changed)
 *   rollback: ARGV previous, now_ms. If rm:previous == previous and no rebuild is running: it
 *             becomes rm:building so a catch-up can run before the switch, and rm:rebuild
 *             says so (mode rollback, cursor = its sweep cursor) in the same step; reply
 *             {1, that cursor}, else {0} */
const char *rm_begin_script(void);
const char *rm_open_script(void);
const char *rm_switch_script(void);
const char *rm_rollback_script(void);

/* Removes every key of generation gen without blocking Redis: DEL of its checkpoint first (no
 * writer can recreate the generation after that), then SCAN MATCH rm:<gen>:* in batches of
 * 1000 with one UNLINK per batch. *removed (may be NULL) counts the keys. */
status rm_drop_generation(redisContext *c, long gen, long *removed, struct err *e) WUR;
/* ST_OK when Redis's maxmemory-policy is noeviction, else ST_INVALID naming the policy: any
 * eviction policy can drop one key of an account's pair or a generation's checkpoint. */
status rm_check_noeviction(redisContext *c, struct err *e) WUR;

/* Loads v and doc of one account (HMGET: one round trip) into out (caller releases). */
status rm_load_account(redisContext *c, long gen, const char *id, struct rm_account *out,
                       struct err *e) WUR;
/* Loads the statement entries of versions from..to (inclusive, 1-based, clipped to the list)
 * into out (caller releases). */
status rm_load_statement(redisContext *c, long gen, const char *id, int64_t from, int64_t to,
                         struct rm_page *out, struct err *e) WUR;
/* Frees the contents and zeroes the struct; NULL-safe. */
void rm_account_release(struct rm_account *a);
void rm_page_release(struct rm_page *p);

#endif
