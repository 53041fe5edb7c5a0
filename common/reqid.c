/* Request ids: validation of a caller's X-Request-Id and random ids for the rest. */
#include "reqid.h"

#include <string.h>

#include "uuid.h"

bool reqid_accept(const char *header, char out[REQID_MAX + 1])
{
    size_t n = 0;

    out[0] = '\0';
    if (header == NULL)
        return false;
    for (const char *p = header; *p != '\0'; p++, n++) {
        unsigned char ch = (unsigned char)*p;
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == ':' || ch == '-';
        if (!ok || n >= REQID_MAX)
            return false;
    }
    if (n == 0)
        return false;
    memcpy(out, header, n + 1);
    return true;
}

void reqid_take(const char *header, char out[REQID_MAX + 1])
{
    char u[UUID_STR_SIZE];
    size_t n = 0;

    if (reqid_accept(header, out))
        return;
    uuid_generate(u);
    for (const char *p = u; *p != '\0'; p++)
        if (*p != '-')
            out[n++] = *p;
    out[n] = '\0';
}
