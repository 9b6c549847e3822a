-- no-transaction
-- Dedupe keys are unique per tenant, not across them: one tenant's key can
-- neither block nor reveal another's. Built concurrently, so writers go on
-- while it is built; each such migration holds one statement (Postgres runs
-- several sent at once in one transaction). An interrupted build leaves an
-- invalid index: drop it and run the migrations again.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS events_tenant_dedupe_key
    ON events (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
