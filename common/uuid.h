/* UUID text handling: validation, canonical lower-case form, random v4 generation. */
#ifndef COMMON_UUID_H
#define COMMON_UUID_H

#include <stdbool.h>
#include <stddef.h>

#define UUID_STR_SIZE 37 /* 36 characters and the terminator */

/* True when s (length len) is 8-4-4-4-12 hex; writes the lower-case form to out when not NULL. */
bool uuid_parse(const char *s, size_t len, char out[UUID_STR_SIZE]);
/* Random (version 4) UUID into out. */
void uuid_generate(char out[UUID_STR_SIZE]);

#endif
