/* How an HTTP service (writer, read API) starts: what both do before their own work begins. */
#ifndef COMMON_BOOT_H
#define COMMON_BOOT_H

#include "auth.h"
#include "cfg.h"

/* Refuses arguments (configuration is the environment), loads the configuration and the token
 * verifier, starts logging and installs the stop signals (blocked in this and later threads).
 * Returns 0, or the exit status 2 after saying on stderr what is wrong. */
int boot_service(const char *name, int argc, char **argv, struct cfg *cfg, struct auth **auth);

#endif
