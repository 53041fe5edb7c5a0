#!/bin/sh
# pgaf-node monitor|postgres: creates the node on first start (data in the volume), then runs
# its pg_autoctl keeper in the foreground. The monitor gets the failover timers of
# scripts/stack-ha (README "Running highly available" says what they cost).
set -eu
PGDATA=/var/lib/postgresql/data/pgaf
export PGDATA
role="${1:?monitor or postgres}"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  if [ "$role" = monitor ]; then
    pg_autoctl create monitor --pgdata "$PGDATA" --pgport 5432 --hostname "$(hostname)" \
      --auth trust --ssl-self-signed
    cat >>"$PGDATA/postgresql.conf" <<CONF
pgautofailover.health_check_period = 1000
pgautofailover.health_check_retry_delay = 500
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = 5000
CONF
  else
    pg_autoctl create postgres --pgdata "$PGDATA" --pgport 5432 --hostname "$(hostname)" \
      --name "$(hostname)" --auth trust --ssl-self-signed --dbname cqrs \
      --monitor "postgres://autoctl_node@${PGAF_MONITOR:?}:5432/pg_auto_failover?sslmode=require"
  fi
fi
exec pg_autoctl run --pgdata "$PGDATA"
