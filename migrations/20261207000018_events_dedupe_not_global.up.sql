-- no-transaction
-- The key unique across tenants goes (see migration 17).
DROP INDEX CONCURRENTLY IF EXISTS events_dedupe_key_key;
