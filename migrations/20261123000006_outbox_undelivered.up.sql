-- The relay's sweep for replies not yet delivered (`delivered_at IS NULL AND
-- created_at < $1 ORDER BY created_at`) read the whole outbox on every tick:
-- a cost that grew with history (found by `scripts/bench turn`).
CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL;
