-- The Redis work of one projected event, as the projector's apply script does it (version
-- check, statement append, account document, checkpoint), for redis-benchmark's baseline.
-- KEYS: account, statement, checkpoint; ARGV: expected (ignored: the current version is used
-- so every call writes), new version (ignored), doc, position, at_ms, entry.
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local len = redis.call('LLEN', KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[1], 'v', cur + 1, 'doc', ARGV[3])
local p = tonumber(redis.call('HGET', KEYS[3], 'position') or '0')
if tonumber(ARGV[4]) > p then redis.call('HSET', KEYS[3], 'position', ARGV[4]) end
redis.call('HSET', KEYS[3], 'at_ms', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'events', 1)
return len
