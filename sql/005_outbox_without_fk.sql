-- The outbox's foreign key to events guarded nothing: its rows are inserted from the events just
-- inserted by the same statement, and events are never deleted (history is not edited, see
-- 004). Its check cost every command a row lock (SELECT ... FOR KEY SHARE on the new event, a
-- WAL record) and a trigger per outbox row: ~5% of Postgres's CPU under the writer's load.
-- The dead letters keep theirs: they are rare, and a dead letter must name a stored event.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_position_fkey;
