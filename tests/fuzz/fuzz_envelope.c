/* libFuzzer harness: event envelope decoding (with upcasting) and the fold over the result. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event ev, again;
    struct err e;
    char *text;

    if (event_decode(&ev, (const char *)data, size, &e) != ST_OK)
        return 0;
    /* whatever decodes must encode and decode to the same event */
    text = event_encode(&ev);
    if (text == NULL)
        return 0;
    if (event_decode(&again, text, strlen(text), &e) != ST_OK)
        abort();
    if (again.stream_version != ev.stream_version || again.amount != ev.amount ||
        again.type != ev.type || strcmp(again.event_id, ev.event_id) != 0)
        abort();
    free(text);
    if (ev.type == EV_ACCOUNT_OPENED && ev.stream_version == 1) {
        struct account_view acc;
        struct statement_entry en;
        account_view_init(&acc, ev.stream_id);
        if (proj_evolve(&acc, &ev, &en, &e) == ST_OK) {
            char *doc = account_view_to_json(&acc);
            struct account_view back;
            if (doc == NULL || account_view_from_json(&back, doc, strlen(doc), &e) != ST_OK)
                abort();
            free(doc);
        }
    }
    return 0;
}
