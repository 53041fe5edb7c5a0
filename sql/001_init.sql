-- The event store, the outbox, the write-side account state and idempotency records.

-- position comes from a sequence: it is unique and increasing in allocation order, but
-- transactions commit out of order, so tailing readers go by (tx_id, position) below the
-- snapshot horizon (see common/tail.h).
CREATE TABLE events (
    position       bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      uuid        NOT NULL,
    stream_version int         NOT NULL CHECK (stream_version >= 1),
    type           text        NOT NULL CHECK (type <> ''),
    schema         int         NOT NULL CHECK (schema >= 1),
    data           jsonb       NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    metadata       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- clock_timestamp(), not now(): several events of one transaction stay ordered in time
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_tx_position ON events (tx_id, position);

-- An event is reversed at most once, even under concurrent reversals of both transfer legs.
CREATE UNIQUE INDEX events_reversed_once ON events ((data->>'reversed_event_id'))
    WHERE type = 'TransactionReversed';

-- One row per event not yet acknowledged by JetStream; the relay deletes acked rows.
CREATE TABLE outbox (
    position   bigint      PRIMARY KEY REFERENCES events (position) ON DELETE CASCADE,
    event_id   uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The writer's decision state, updated in the same transaction as the events it derives from.
CREATE TABLE accounts (
    account_id      uuid        PRIMARY KEY,
    owner           text        NOT NULL CHECK (length(owner) BETWEEN 1 AND 128),
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    overdraft_limit bigint      NOT NULL CHECK (overdraft_limit >= 0),
    balance         bigint      NOT NULL DEFAULT 0,
    version         int         NOT NULL CHECK (version >= 0),
    status          text        NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed_at       timestamptz,
    CHECK (balance >= -overdraft_limit),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (status = 'open' OR balance = 0)
);

-- A name is unique per owner among open accounts only: it may be reused after closing.
CREATE UNIQUE INDEX accounts_owner_name_open ON accounts (owner, name) WHERE closed_at IS NULL;

-- Replays of a command sent with an Idempotency-Key: the first response, keyed by the key.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),
    request_hash  text        NOT NULL,
    status        int         NOT NULL,
    response_body text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
