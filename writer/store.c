/* The writer's Postgres side: the pool, and each command routed to group commit or to a
 * transaction of its own. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#include "fastpub.h"
#include "group.h"
#include "pool.h"
#include "single.h"
#include "sql.h"

struct store {
    struct pool *pool;
    struct group *group;
    struct fastpub *pub; /* NULL: PUBLISH_AFTER_COMMIT=0 */
};

status store_create(struct store **out, const struct cfg *cfg, struct err *e)
{
    struct store *s = calloc(1, sizeof *s);
    status st;

    *out = NULL;
    if (s == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    st = pool_create(&s->pool, cfg, e);
    if (st == ST_OK)
        st = fastpub_start(&s->pub, cfg, e);
    if (st == ST_OK)
        st = group_create(&s->group, s->pool, s->pub, e);
    if (st != ST_OK) {
        store_free(&s);
        return st;
    }
    *out = s;
    return ST_OK;
}

void store_free(struct store **sp)
{
    struct store *s = *sp;

    if (s == NULL)
        return;
    group_free(&s->group);
    fastpub_stop(&s->pub);
    pool_free(&s->pool);
    free(s);
    *sp = NULL;
}

status store_execute(struct store *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    if (group_accepts(c, m))
        return group_execute(s->group, c, m, out, e);
    return single_execute(s->pool, s->pub, c, m, out, e);
}

status store_ping(struct store *s, struct err *e)
{
    struct pool_slot *sl = NULL;
    PGresult *res = NULL;
    status st = pool_checkout(s->pool, &sl, e);

    if (st != ST_OK)
        return st;
    st = sql_run(sl->conn, &res, "ping", 0, NULL, PGRES_TUPLES_OK, e);
    if (st == ST_OK && PQntuples(res) != 1)
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "the database is read-only (in recovery)");
    PQclear(res);
    pool_checkin(s->pool, sl);
    return st;
}
