ALTER TABLE outbox ADD COLUMN enqueued_at timestamptz;
ALTER TABLE inbox ADD COLUMN enqueued_at timestamptz;
CREATE INDEX outbox_not_enqueued ON outbox (created_at) WHERE enqueued_at IS NULL;
CREATE INDEX inbox_not_enqueued ON inbox (received_at) WHERE enqueued_at IS NULL;
