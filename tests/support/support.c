/* Test support shared by the unit and integration suites. */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TENV_MAX 64

static char *tenv_keys[TENV_MAX];
static char *tenv_vals[TENV_MAX];
static int tenv_count = -1;

static void tenv_load(void)
{
    const char *path = getenv("CQRS_STACK_ENV");
    char line[2048];
    FILE *f;

    tenv_count = 0;
    if (path == NULL || (f = fopen(path, "r")) == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL && tenv_count < TENV_MAX) {
        char *eq = strchr(line, '=');
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (eq == NULL || line[0] == '#')
            continue;
        *eq = '\0';
        tenv_keys[tenv_count] = strdup(line);
        tenv_vals[tenv_count] = strdup(eq + 1);
        tenv_count++;
    }
    fclose(f);
}

const char *tenv(const char *key)
{
    const char *v = getenv(key);

    if (tenv_count < 0)
        tenv_load();
    for (int i = 0; i < tenv_count; i++)
        if (strcmp(tenv_keys[i], key) == 0)
            return tenv_vals[i];
    return v;
}

int64_t tnow_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
