/* The read API's answers: an account, its statement, an owner's accounts, an event, a transfer. */
#ifndef READAPI_SERVE_H
#define READAPI_SERVE_H

#include "httpd.h"
#include "query.h"

/* GET /accounts/{id} and GET /accounts/{id}/statement, with the bounded min_version wait
 * (http_defer); another owner's account is 404. */
void ra_serve_account(const struct http_request *req, const struct ra_query *q,
                      struct http_response *resp);
/* GET /accounts?owner= : the owner's accounts, newest first, documents from the read model. */
void ra_serve_owner_accounts(const struct ra_query *q, struct http_response *resp);
/* GET /events/{id} and GET /transfers/{id} from the event store, for a caller who may read
 * the account (a transfer: either account); otherwise 404. */
void ra_serve_lookup(const struct http_request *req, const struct ra_query *q,
                     struct http_response *resp);

/* The counters of waits and of 503s by reason at 0, so each series exists before its first event. */
void ra_serve_metrics_init(void);
/* Answers 503 with the error code reason (Retry-After: 1) and counts it in
 * readapi_unavailable_responses_total{reason}. */
void ra_reply_unavailable(struct http_response *resp, const char *reason, const char *message);
/* The answer to a failed read: 503 store_unavailable or read_model_unavailable (by e->reason),
 * 404 for ST_NOT_FOUND, else 500 internal_error. e->msg (hosts, library text) goes to the log,
 * never into the body. */
void ra_reply_status_error(struct http_response *resp, const struct err *e);

#endif
