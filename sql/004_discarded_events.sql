-- Events an operator gave up on (`projector discard-parked`): the audit record of who discarded
-- which parked event, when and why. Every fold (live, gap repair, sweep, rebuild, verify) reads
-- an event recorded here that does not fold as a no-op: the account's version moves past it,
-- its statement says "EventDiscarded" with the reason, nothing else changes. History itself
-- is never edited: the event stays in `events`.
CREATE TABLE discarded_events (
    event_id       uuid        PRIMARY KEY REFERENCES events (event_id),
    stream_id      uuid        NOT NULL,
    stream_version int         NOT NULL,
    reason         text        NOT NULL CHECK (reason <> ''),
    parked_reason  text        NOT NULL DEFAULT '',
    discarded_by   text        NOT NULL CHECK (discarded_by <> ''),
    db_user        text        NOT NULL DEFAULT current_user,
    discarded_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
