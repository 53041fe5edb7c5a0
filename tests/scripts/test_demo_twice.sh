#!/usr/bin/env bash
# `make demo` twice in a row works, and `make down` leaves no process of the stack behind.
# Runs on its own stack (STACK=h5) so a developer's `make up` is not disturbed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STACK=h5
# exactly what a user runs: `make demo` builds build/ (up to date after make test's build)
make_demo() { make --no-print-directory demo STACK=$STACK >"$1" 2>&1; }
for run in 1 2; do
  log="$(mktemp)"
  if ! make_demo "$log"; then echo "make demo run $run failed:"; tail -30 "$log"; exit 1; fi
  grep -q "demo: ok" "$log" || { echo "run $run: no 'demo: ok'"; tail -30 "$log"; exit 1; }
  grep -q '"balance"' "$log" || { echo "run $run: no read model printed"; exit 1; }
  echo "make demo run $run: ok"
  rm -f "$log"
done
make --no-print-directory down STACK=$STACK >/dev/null
sleep 0.5
if pgrep -af "\.stack/$STACK/" >/dev/null; then
  echo "processes left behind after make down:"; pgrep -af "\.stack/$STACK/"; exit 1
fi
. "$ROOT/.stack/$STACK/env"
for p in "$PG_PORT" "$REDIS_PORT" "$NATS_PORT" "$WRITER_PORT" "$READAPI_PORT" "$PROJECTOR_PORT"; do
  if ss -ltnH "sport = :$p" | grep -q .; then echo "port $p still listening after make down"; exit 1; fi
done
echo "make down: no process or port of stack $STACK left"
