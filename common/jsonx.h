/* Typed field access on jansson objects with contract-style error messages. */
#ifndef COMMON_JSONX_H
#define COMMON_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Copies string field key into dst (size dstsz, UTF-8 checked by jansson, no NUL inside).
 * Missing: ST_NOT_FOUND when required is false (dst set to ""), ST_INVALID otherwise.
 * Longer than max_len bytes or shorter than min_len: ST_INVALID. */
status jsonx_str(const json_t *obj, const char *key, char *dst, size_t dstsz, size_t min_len,
                 size_t max_len, bool required, struct err *e) WUR;
/* Integer field within [min, max]; floats, strings and booleans are rejected. */
status jsonx_int(const json_t *obj, const char *key, int64_t *out, int64_t min, int64_t max,
                 bool required, struct err *e) WUR;
/* UUID field, canonicalised to lower case. */
status jsonx_uuid(const json_t *obj, const char *key, char dst[37], bool required, struct err *e) WUR;
/* Rejects any key of obj not in the NULL-terminated list allowed. */
status jsonx_only(const json_t *obj, const char *const *allowed, struct err *e) WUR;
/* Parses a whole document that must be an object; errors name the line and column. */
status jsonx_load_object(json_t **out, const char *buf, size_t len, struct err *e) WUR;
/* Serialises compactly; caller frees. NULL only on allocation failure. */
char *jsonx_dump(const json_t *v);
/* Serialises compactly and drops the reference to doc (which may be NULL); caller frees. */
char *jsonx_dump_decref(json_t *doc);
/* Sets key to the string value when value is not empty (optional fields). */
void jsonx_set_nonempty(json_t *obj, const char *key, const char *value);

#endif
