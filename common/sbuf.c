/* A growable byte string with a sticky allocation failure (see sbuf.h). */
#include "sbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 1024 : b->cap;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_str(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_int(struct sbuf *b, int64_t n)
{
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)n);
    sbuf_str(b, num);
}

char *sbuf_take(struct sbuf *b)
{
    char *p = b->p;

    if (b->failed) {
        free(p);
        p = NULL;
    } else if (p == NULL) {
        p = strdup("");
    }
    *b = (struct sbuf){0};
    return p;
}

void sbuf_release(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){0};
}
