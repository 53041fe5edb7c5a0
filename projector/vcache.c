/* A bounded set-associative table of account views (what the rebuild, or a partition owner, last
 * wrote per account).
 * Why a remembered view is safe to fold onto: the apply script writes only when Redis holds
 * exactly the version the fold started from, and the document at a version is the fold of the
 * event store's history up to it, whoever wrote it; a live worker that moved the account is a
 * compare-and-set conflict, after which the account is read from Redis as usual. Redis that
 * lost writes is not: an event at or below a remembered version is taken as applied and never
 * reaches the script, so the rebuild forgets every view whenever it goes over steps again or
 * retries after an error, and a partition owner when Redis went back in time or the connection
 * was lost (vc_clear). */
#include "vcache.h"

#include <stdlib.h>
#include <string.h>

#define VC_WAYS 2

struct vc_slot {
    int used;
    unsigned age; /* of the last use, for replacing the older way */
    struct account_view view;
};

struct vcache {
    long gen;
    unsigned clock;
    int nsets;
    long used; /* slots filled since the last wipe */
    struct vc_slot (*slot)[VC_WAYS];
};

struct vcache *vc_new(int nsets)
{
    struct vcache *c = calloc(1, sizeof *c);

    if (c == NULL || nsets < 1)
        goto fail;
    c->nsets = nsets;
    c->slot = calloc((size_t)nsets, sizeof *c->slot);
    if (c->slot != NULL)
        return c;
fail:
    free(c);
    return NULL;
}

void vc_free(struct vcache *c)
{
    if (c != NULL)
        free(c->slot);
    free(c);
}

static struct vc_slot *set_of(struct vcache *c, const char *id)
{
    return c->slot[fnv1a32(id) % (unsigned)c->nsets];
}

/* A fresh zeroed table rather than a memset: pages never used stay untouched (a partition
 * owner forgets at every claim, mostly with nothing remembered). */
static void wipe(struct vcache *c)
{
    void *fresh;

    if (c->used == 0)
        return;
    fresh = calloc((size_t)c->nsets, sizeof *c->slot);
    if (fresh != NULL) {
        free(c->slot);
        c->slot = fresh;
    } else {
        memset(c->slot, 0, (size_t)c->nsets * sizeof *c->slot);
    }
    c->used = 0;
}

/* A cache of another generation is forgotten at once. */
static void for_gen(struct vcache *c, long gen)
{
    if (c->gen != gen) {
        wipe(c);
        c->gen = gen;
    }
}

int vc_get(struct vcache *c, long gen, const char *id, struct account_view *out)
{
    struct vc_slot *s;

    if (c == NULL)
        return 0;
    for_gen(c, gen);
    s = set_of(c, id);
    for (int w = 0; w < VC_WAYS; w++)
        if (s[w].used && strcmp(s[w].view.account_id, id) == 0) {
            s[w].age = ++c->clock;
            *out = s[w].view;
            return 1;
        }
    return 0;
}

void vc_put(struct vcache *c, long gen, const struct account_view *view)
{
    struct vc_slot *s, *victim;

    if (c == NULL)
        return;
    for_gen(c, gen);
    s = set_of(c, view->account_id);
    victim = &s[0];
    for (int w = 0; w < VC_WAYS; w++) {
        if (s[w].used && strcmp(s[w].view.account_id, view->account_id) == 0) {
            victim = &s[w];
            break;
        }
        if (!s[w].used || (victim->used && s[w].age < victim->age))
            victim = &s[w];
    }
    if (!victim->used)
        c->used++;
    victim->used = 1;
    victim->age = ++c->clock;
    victim->view = *view;
}

void vc_drop(struct vcache *c, const char *id)
{
    struct vc_slot *s;

    if (c == NULL)
        return;
    s = set_of(c, id);
    for (int w = 0; w < VC_WAYS; w++)
        if (s[w].used && strcmp(s[w].view.account_id, id) == 0)
            s[w].used = 0;
}

void vc_clear(struct vcache *c)
{
    if (c != NULL)
        wipe(c);
}
