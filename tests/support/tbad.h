/* The bad-input suite's tables, shared by its tests with every store up
 * (test_bad_input_bodies) and with one down (test_bad_input_stores). */
#ifndef TESTS_TBAD_H
#define TESTS_TBAD_H

#include <stddef.h>

enum tbad_target { TB_OPEN, TB_DEPOSIT, TB_WITHDRAW, TB_TRANSFER, TB_REVERSE, TB_CLOSE };

/* A hostile command body and what the writer answers with every store up. */
struct tbad_body {
    enum tbad_target t;
    const char *body; /* %1$s: the account, %2$s: the other account, %3$s: an event id, %4$s: 8,000 bytes */
    int status;
    const char *code;
};
extern const struct tbad_body tbad_bodies[];
extern const size_t tbad_nbodies;
/* Query strings a statement read refuses with 400. */
extern const char *const tbad_query_params[];
extern const size_t tbad_nquery_params;

/* The command's path for account (into buf unless it needs no account). */
const char *tbad_path(enum tbad_target t, const char *account, char *buf, size_t len);
/* b's body with its substitutions into out (at least 9 KiB for the long-string rows). */
void tbad_format(char *out, size_t cap, const struct tbad_body *b, const char *acct1, const char *acct2,
                 const char *event_id);

#endif
