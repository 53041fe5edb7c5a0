/* Fast paths of the event envelope and account document codecs: the same results as
 * projections/event.c's event_decode and projections/account.c's account_view_{from,to}_json,
 * without building jansson trees (common/jscan.h).
 *
 * Each *_fast function handles only the plain, valid forms (what writers and the projector
 * write: no escapes in strings, no reals, no duplicate keys, known schemas) and returns false
 * for anything else, touching nothing the caller may rely on; the plain functions then run the
 * jansson codec, so results, errors and messages are exactly those of projections/ for every
 * input (tests/unit/test_evparse.c compares both on valid, edge and mutated inputs). The fold
 * stays in projections/; this file only reads and writes the same bytes faster. */
#ifndef COMMON_EVPARSE_H
#define COMMON_EVPARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "account.h"
#include "event.h"
#include "status.h"

/* event_decode(out, json, len, e), faster. */
status evparse_event(struct event *out, const char *json, size_t len, struct err *e) WUR;
/* true: *out is what event_decode gives (ST_OK); false: not handled here (*out undefined). */
bool evparse_event_fast(struct event *out, const char *json, size_t len);

/* The "data" object alone, for ev (type and schema set): true when event_data_from_json on its
 * jansson parse gives ST_OK and these fields; false: not handled (the data fields undefined). */
bool evparse_data_fast(struct event *ev, const char *json, size_t len);
/* The "metadata" object alone: true when event_metadata_from_json gives ST_OK and these fields. */
bool evparse_metadata_fast(struct event *ev, const char *json, size_t len);

/* account_view_from_json(acc, json, len, e), faster. */
status evparse_account(struct account_view *acc, const char *json, size_t len, struct err *e) WUR;
bool evparse_account_fast(struct account_view *acc, const char *json, size_t len);

/* account_view_to_json(acc), faster: the same bytes; caller frees, NULL as there. */
char *evparse_account_json(const struct account_view *acc);

#endif
