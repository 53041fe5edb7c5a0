#!/usr/bin/env bash
# Checks compose/docker-compose.yml with `docker-compose config`: it parses, and it runs the six
# services with JetStream enabled and the services' settings. Exit 77 (skip) without the tool.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "docker-compose is not installed: skipped"; exit 77
fi
out="$(docker-compose -f "$ROOT/compose/docker-compose.yml" config)"
fail() { echo "compose check failed: $*" >&2; exit 1; }
for svc in postgres redis nats writer projector readapi; do
  grep -qE "^  $svc:$" <<<"$out" || fail "service '$svc' missing"
done
grep -q -- "- -js" <<<"$out" || fail "nats does not enable JetStream (-js)"
for var in DATABASE_URL NATS_URL REDIS_URL WRITER_PORT READAPI_PORT HTTP_BIND; do
  [ "$(grep -c "$var:" <<<"$out")" -ge 3 ] || fail "$var is not set for the three services"
done
grep -q "dockerfile: compose/Dockerfile" <<<"$out" || fail "services are not built from compose/Dockerfile"
grep -q "condition: service_healthy" <<<"$out" || fail "services do not wait for healthy dependencies"
[ -f "$ROOT/compose/Dockerfile" ] || fail "compose/Dockerfile missing"
grep -q "libnats3.4" "$ROOT/compose/Dockerfile" || fail "runtime image lacks libnats"
echo "compose config ok: 6 services"
