/* The rebuild's read-ahead: Postgres reads the next batch while Redis and the lanes apply the
 * current one. A batch read ahead is used only when the rebuild continues from exactly the
 * cursor it was read from (a retried or rewound batch reads again), so the cursor and
 * caught-up rules of pj_tail_read are unchanged: each batch is still one read in one snapshot. */
#include "rbread.h"

#include <string.h>

void rbr_init(struct rb_reader *r, const struct cfg *c)
{
    memset(r, 0, sizeof *r);
    pj_init(&r->pj, c);
}

static void *reader_main(void *arg)
{
    struct rb_reader *r = arg;

    err_clear(&r->e);
    r->to = r->from;
    r->st = pj_tail_read(&r->pj, &r->to, r->limit, &r->items, &r->n, &r->caught_up, &r->e);
    return NULL;
}

/* Waits for the running read (if any) and forgets its batch. */
static void drop(struct rb_reader *r)
{
    if (!r->running)
        return;
    pthread_join(r->thread, NULL);
    r->running = 0;
    pj_items_free(r->items, r->n);
    r->items = NULL;
    r->n = 0;
}

void rbr_start(struct rb_reader *r, const struct tail_cursor *from, int limit)
{
    drop(r);
    r->from = *from;
    r->limit = limit;
    r->items = NULL;
    r->n = 0;
    r->running = pthread_create(&r->thread, NULL, reader_main, r) == 0;
}

status rbr_take(struct rb_reader *r, struct tail_cursor *cur, int limit, struct pj_item **out, int *n,
                int *caught_up, struct err *e)
{
    if (r->running && r->limit == limit && r->from.tx_id == cur->tx_id && r->from.position == cur->position) {
        pthread_join(r->thread, NULL);
        r->running = 0;
        if (r->st != ST_OK) {
            if (e != NULL)
                *e = r->e;
            return r->st;
        }
        *cur = r->to;
        *out = r->items;
        *n = r->n;
        *caught_up = r->caught_up;
        r->items = NULL;
        r->n = 0;
        return ST_OK;
    }
    drop(r);
    return pj_tail_read(&r->pj, cur, limit, out, n, caught_up, e);
}

void rbr_release(struct rb_reader *r)
{
    drop(r);
    pj_release(&r->pj);
}
