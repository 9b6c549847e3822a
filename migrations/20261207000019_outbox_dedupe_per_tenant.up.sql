-- no-transaction
-- The outbox's dedupe keys per tenant too (see migration 17).
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS outbox_tenant_dedupe_key ON outbox (tenant_id, dedupe_key);
