/* The `projector run` loop: ownership of partitions, their consumers, the sweep and self-heal. */
#ifndef PROJECTOR_WORKER_H
#define PROJECTOR_WORKER_H

#include "cfg.h"

/* Runs until SIGTERM/SIGINT; returns the exit code. */
int worker_run(const struct cfg *c);

#endif
