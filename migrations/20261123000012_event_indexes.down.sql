DROP INDEX events_usage;
CREATE INDEX events_by_tenant_type ON events (tenant_id, type, global_position);
DROP INDEX events_dedupe_key_key;
ALTER TABLE events ADD CONSTRAINT events_dedupe_key_key UNIQUE (dedupe_key);
