-- The outbox key unique across tenants goes (see migration 19).
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_dedupe_key_key;
