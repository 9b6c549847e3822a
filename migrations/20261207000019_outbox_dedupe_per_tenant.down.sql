-- no-transaction
DROP INDEX CONCURRENTLY IF EXISTS outbox_tenant_dedupe_key;
