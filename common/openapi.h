/* The OpenAPI description of the HTTP APIs (docs/openapi.yaml as JSON), compiled in. */
#ifndef COMMON_OPENAPI_H
#define COMMON_OPENAPI_H

/* The document, NUL-terminated JSON; static storage, never freed. */
const char *openapi_document(void);

#endif
