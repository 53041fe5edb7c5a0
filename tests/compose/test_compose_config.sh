#!/usr/bin/env bash
# Checks that compose/docker-compose.yml is valid and wires the system as documented; no Docker
# engine needed (`config` only parses and normalises). Exit 77 (skipped) without docker-compose.
set -uo pipefail
# the compose files demand a JWT secret (the services refuse a public interface without auth)
export JWT_SECRET="${JWT_SECRET:-compose-config-check-secret-0123456789abcdef}"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
FILE="$ROOT/compose/docker-compose.yml"

if command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  echo "test_compose_config: SKIP: neither docker-compose nor 'docker compose' is installed"
  exit 77
fi

fail() { echo "test_compose_config: FAIL: $*" >&2; exit 1; }

[ -f "$FILE" ] || fail "'$FILE' does not exist"

# LOG_LEVEL etc. from the caller's environment must not change the result
if ! out="$(env -u LOG_LEVEL "${COMPOSE[@]}" -f "$FILE" config 2>&1)"; then
  printf '%s\n' "$out" >&2
  fail "'${COMPOSE[*]} -f compose/docker-compose.yml config' failed"
fi

# the six services, as top-level keys under services:
services="$(printf '%s\n' "$out" | awk '/^services:/ {in_s = 1; next} /^[^ ]/ {in_s = 0} in_s && /^  [A-Za-z0-9_.-]+:$/ {sub(/:$/, ""); gsub(/ /, ""); print}')"
for s in postgres redis nats writer projector readapi; do
  grep -qx "$s" <<<"$services" || fail "service '$s' is missing (found: $(echo $services))"
done

expect() {
  grep -qE -- "$1" <<<"$out" || fail "normalised config lacks $2 (pattern '$1')"
}
expect '^ *- -js$' "the JetStream flag -js for nats (stream EVENTS needs JetStream)"
expect '^ *- -sd$' "a JetStream store dir (-sd) for nats"
expect 'image: postgres:15' "the official postgres:15 image"
expect 'image: redis:7' "the official redis:7 image"
expect 'image: nats:2\.9' "the official nats:2.9 image"
expect 'appendonly' "Redis appendonly"
expect 'DATABASE_URL: postgresql://cqrs:cqrs@postgres:5432/cqrs' "DATABASE_URL"
expect 'NATS_URL: nats://nats:4222' "NATS_URL"
expect 'REDIS_URL: redis://redis:6379/0' "REDIS_URL"
expect "WRITER_PORT: '?8080'?" "WRITER_PORT"
expect "READAPI_PORT: '?8081'?" "READAPI_PORT"
expect "PROJECTOR_PORT: '?8082'?" "PROJECTOR_PORT"
expect 'HTTP_BIND: 0\.0\.0\.0' "HTTP_BIND=0.0.0.0 for the services"
expect 'JWT_SECRET: compose-config-check' "JWT_SECRET passed to the services"
if env -u JWT_SECRET "${COMPOSE[@]}" -f "$FILE" config >/dev/null 2>&1; then
  fail "compose config accepted a deployment without JWT_SECRET"
fi
expect 'condition: service_healthy' "depends_on with condition service_healthy"
expect 'dockerfile: compose/Dockerfile' "the services built from compose/Dockerfile"
expect '^ *- projector$' "the projector command"
expect '^ *- run$' "'projector run'"
expect 'host_ip: 127\.0\.0\.1|127\.0\.0\.1:8080:8080' "the writer port published on 127.0.0.1"
expect 'published: 8081|127\.0\.0\.1:8081:8081' "the read API port published"

# every service the engine builds needs the three URLs: count them
n="$(printf '%s\n' "$out" | grep -c 'DATABASE_URL: ')"
[ "$n" -ge 3 ] || fail "DATABASE_URL is set for $n services, expected writer, projector and readapi"

# The HA topology (compose/docker-compose.ha.yml): the same contract as scripts/stack-ha
HA="$ROOT/compose/docker-compose.ha.yml"
[ -f "$HA" ] || fail "'$HA' does not exist"
if ! out="$(env -u LOG_LEVEL "${COMPOSE[@]}" -f "$HA" config 2>&1)"; then
  printf '%s\n' "$out" >&2
  fail "'${COMPOSE[*]} -f compose/docker-compose.ha.yml config' failed"
fi
services="$(printf '%s\n' "$out" | awk '/^services:/ {in_s = 1; next} /^[^ ]/ {in_s = 0} in_s && /^  [A-Za-z0-9_.-]+:$/ {sub(/:$/, ""); gsub(/ /, ""); print}')"
for s in nats1 nats2 nats3 redis1 redis2 sentinel1 sentinel2 sentinel3 pg-monitor pg1 pg2 \
  writer1 writer2 readapi1 readapi2 projector1 projector2 haproxy; do
  grep -qx "$s" <<<"$services" || fail "HA service '$s' is missing (found: $(echo $services))"
done
expect '^ *- --cluster_name$' "a NATS cluster"
expect 'image: nats:2\.9' "the official nats:2.9 image (HA)"
expect 'image: haproxy:2\.6' "the official haproxy image"
expect 'sentinel monitor cqrs redis1 6379 2' "Sentinels watching redis1 with quorum 2"
expect '^ *- --replicaof$' "a Redis replica"
expect 'NATS_URL: nats://nats1:4222,nats://nats2:4222,nats://nats3:4222' "the NATS server list"
expect "NATS_REPLICAS: '?3'?" "stream replicas 3"
expect 'REDIS_SENTINELS: sentinel1:26379,sentinel2:26379,sentinel3:26379' "REDIS_SENTINELS"
expect 'REDIS_MASTER_NAME: cqrs' "REDIS_MASTER_NAME"
expect "READ_REPLICAS: '?1'?" "the read APIs reading from the Redis replica"
expect 'target_session_attrs=read-write' "a multi-host DATABASE_URL following the primary"
n="$(printf '%s\n' "$out" | grep -c 'REDIS_SENTINELS: ')"
[ "$n" -ge 6 ] || fail "REDIS_SENTINELS is set for $n services, expected 2 writers, 2 read APIs, 2 projectors"
grep -q 'option httpchk GET /readyz' "$ROOT/compose/haproxy.cfg" || fail "haproxy checks GET /readyz"

echo "test_compose_config: ok (${COMPOSE[*]}, 6 services; HA topology, 18 services)"
