#include "boot.h"

#include <stdio.h>

#include "log.h"
#include "svc.h"

int boot_service(const char *name, int argc, char **argv, struct cfg *cfg, struct auth **auth)
{
    char errs[4096];
    struct err e = {0};

    if (argc > 1) {
        fprintf(stderr, "%s: unexpected argument '%s' (configuration is read from the environment)\n", name,
                argv[1]);
        return 2;
    }
    if (cfg_load(cfg, errs, sizeof errs) != ST_OK) {
        fprintf(stderr, "%s: invalid configuration:\n%s", name, errs);
        return 2;
    }
    if (auth_create(auth, cfg, &e) != ST_OK) {
        fprintf(stderr, "%s: invalid configuration:\n%s\n", name, e.msg);
        return 2;
    }
    log_init(name, (enum log_level)cfg->log_level, (enum log_format)cfg->log_format);
    /* Only the main thread takes SIGTERM/SIGINT: they are blocked before any thread starts. */
    svc_signals_install(1);
    return 0;
}
