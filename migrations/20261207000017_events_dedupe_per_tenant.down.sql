-- no-transaction
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_dedupe_key;
