-- Turn and delivery jobs are keyed by their row's id, so queueing one again
-- is a no-op while it is on the queue, and the relay re-queues by
-- `processed_at` / `delivered_at`. The `enqueued_at` marks cost one more
-- commit per message and per reply (found by `scripts/bench`); nothing read
-- the outbox's, and a redelivered message is now simply queued again while
-- it is not answered.
DROP INDEX inbox_not_enqueued;
DROP INDEX outbox_not_enqueued;
ALTER TABLE inbox DROP COLUMN enqueued_at;
ALTER TABLE outbox DROP COLUMN enqueued_at;
