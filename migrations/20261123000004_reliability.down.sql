DROP INDEX IF EXISTS proposals_unreviewed;
DROP TABLE IF EXISTS tenant_llm_usage;
ALTER TABLE tenants DROP COLUMN IF EXISTS llm_tokens_per_day;
DROP TABLE IF EXISTS dead_jobs;
ALTER TABLE conversations
    DROP COLUMN IF EXISTS lease_fence,
    DROP COLUMN IF EXISTS lease_until,
    DROP COLUMN IF EXISTS lease_holder;
