-- Idempotency keys belong to their caller (the token's subject; '' without authentication):
-- the same key from two callers is two requests. created_at drives the retention purge.
ALTER TABLE idempotency_keys ADD COLUMN principal text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (principal, key);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- Outbox rows the relay cannot encode (an event this binary does not know): moved here with
-- the reason instead of being retried every round. `writer dead-letters` lists them.
CREATE TABLE outbox_dead_letters (
    position bigint      PRIMARY KEY REFERENCES events (position) ON DELETE CASCADE,
    event_id uuid        NOT NULL,
    reason   text        NOT NULL,
    moved_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
