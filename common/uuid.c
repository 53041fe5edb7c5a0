/* UUID parsing and v4 generation from the kernel's random source. */
#include "uuid.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* The lower-case form of a hex digit (as isxdigit/tolower in the C locale), 0 for anything else. */
static inline char hex_lower(unsigned char c)
{
    if ((unsigned)(c - '0') < 10u)
        return (char)c;
    c |= 0x20;
    return (unsigned)(c - 'a') < 6u ? (char)c : 0;
}

bool uuid_parse(const char *s, size_t len, char out[UUID_STR_SIZE])
{
    char tmp[UUID_STR_SIZE];

    if (s == NULL || len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
            tmp[i] = '-';
        } else if ((tmp[i] = hex_lower((unsigned char)s[i])) == 0) {
            return false;
        }
    }
    tmp[36] = '\0';
    if (out != NULL)
        memcpy(out, tmp, UUID_STR_SIZE);
    return true;
}

void uuid_generate(char out[UUID_STR_SIZE])
{
    uint8_t b[16];
    size_t got = 0;

    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, UUID_STR_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}
