ALTER TABLE tenants ALTER COLUMN llm_tokens_per_day DROP DEFAULT;
DROP INDEX tenants_review_channel;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO PUBLIC', current_database());
END
$$;
GRANT UPDATE ON proposals, inbox, outbox, agent_runs, tenant_llm_usage, trigger_cursors,
    dead_jobs, delivery_holds TO automate_e_service;
