-- no-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS events_dedupe_key_key ON events (dedupe_key) WHERE dedupe_key IS NOT NULL;
