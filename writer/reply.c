/* The 2xx body of a committed command, built from its decision. */
#include "reply.h"

#include <jansson.h>

#include "jsonx.h"

static json_t *leg_json(const struct event *ev, int64_t balance)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I}", "event_id", ev->event_id, "account_id",
                     ev->stream_id, "version", (json_int_t)ev->stream_version, "position",
                     (json_int_t)ev->position, "balance", (json_int_t)balance);
}

/* The counterparty's leg: its balance only for an admin (c->actor ""), since a caller may read
 * only its own accounts and the counterparty is usually someone else's. */
static json_t *other_leg_json(const struct command *c, const struct event *ev, int64_t balance)
{
    json_t *leg = leg_json(ev, balance);

    if (leg != NULL && c->actor[0] != '\0')
        json_object_del(leg, "balance");
    return leg;
}

status reply_build(const struct command *c, const struct decision *d, struct store_reply *out,
                   struct err *e)
{
    const struct event *ev = &d->events[0];
    json_t *doc = NULL;

    out->http_status = 201;
    switch (c->kind) {
    case CMD_OPEN:
        doc = json_pack("{s:s, s:I, s:I}", "account_id", ev->stream_id, "version",
                        (json_int_t)ev->stream_version, "position", (json_int_t)ev->position);
        break;
    case CMD_TRANSFER:
        doc = json_pack("{s:s, s:o, s:o, s:I}", "transfer_id", ev->transfer_id, "from",
                        leg_json(&d->events[0], d->balance_after[0]), "to",
                        other_leg_json(c, &d->events[1], d->balance_after[1]), "position",
                        (json_int_t)d->events[1].position);
        break;
    case CMD_REVERSE:
        doc = leg_json(ev, d->balance_after[0]);
        if (doc != NULL) {
            json_object_set_new(doc, "reversed_event_id", json_string(ev->reversed_event_id));
            json_object_set_new(doc, "amount", json_integer(ev->amount));
            if (d->count > 1)
                json_object_set_new(doc, "counterparty",
                                    other_leg_json(c, &d->events[1], d->balance_after[1]));
        }
        break;
    case CMD_CLOSE:
        out->http_status = 200;
        doc = leg_json(ev, d->balance_after[0]);
        if (doc != NULL)
            json_object_set_new(doc, "status", json_string("closed"));
        break;
    default:
        doc = leg_json(ev, d->balance_after[0]);
        break;
    }
    out->body = jsonx_dump_decref(doc);
    if (out->body == NULL)
        return err_set(e, ST_INTERNAL, "out of memory building the reply");
    return ST_OK;
}
