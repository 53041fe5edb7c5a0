/* libFuzzer harness: writer routing and command-body parsing/validation. Input: a kind byte,
 * then the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum cmd_kind kinds[] = {CMD_OPEN, CMD_DEPOSIT, CMD_WITHDRAW,
                                          CMD_TRANSFER, CMD_REVERSE, CMD_CLOSE};
    struct command c;
    struct err e;
    char *body;

    if (size < 1)
        return 0;
    body = malloc(size);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    if (cmd_parse(&c, kinds[data[0] % 6], "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", body, size - 1,
                  &e) == ST_OK) {
        /* a parsed command respects the bounds the store relies on */
        if ((c.kind == CMD_DEPOSIT || c.kind == CMD_WITHDRAW || c.kind == CMD_TRANSFER) &&
            c.amount <= 0)
            abort();
        if (c.kind == CMD_OPEN && (c.overdraft_limit < 0 || strlen(c.currency) != 3))
            abort();
    }
    free(body);
    return 0;
}
