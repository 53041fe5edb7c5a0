/* A growable byte string for building answers and statement parameters: appends that fail to
 * allocate make the buffer failed (sticky) instead of failing each caller, and it says so once
 * at the end. */
#ifndef COMMON_SBUF_H
#define COMMON_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-initialise ({0}) to start; p is NUL-terminated once anything was added. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool failed; /* an allocation failed: the contents are incomplete */
};

void sbuf_add(struct sbuf *b, const char *s, size_t n);
void sbuf_str(struct sbuf *b, const char *s);
void sbuf_int(struct sbuf *b, int64_t n);
/* The finished string, handed to the caller (frees it); NULL when an allocation failed. The
 * buffer is empty afterwards. */
char *sbuf_take(struct sbuf *b);
/* Frees the contents; the buffer is empty afterwards. */
void sbuf_release(struct sbuf *b);

#endif
