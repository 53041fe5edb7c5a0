-- The read API's lookups in the event store (readapi/lookup.c): a transfer's legs by its id,
-- and the accounts an owner opened, newest first. Both are immutable facts of the history.
CREATE INDEX IF NOT EXISTS events_transfer_id ON events ((data->>'transfer_id'))
    WHERE type IN ('TransferSent', 'TransferReceived');
CREATE INDEX IF NOT EXISTS events_opened_by_owner ON events ((data->>'owner'), position DESC)
    WHERE type = 'AccountOpened';
