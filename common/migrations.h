/* The SQL migrations compiled into the binaries (generated from sql/). */
#ifndef COMMON_MIGRATIONS_H
#define COMMON_MIGRATIONS_H

struct migration {
    const char *name; /* file name, e.g. "001_init.sql": the version recorded in schema_migrations */
    const char *sql;
};

/* In file-name order, terminated by {NULL, NULL}. */
extern const struct migration migrations[];

#endif
