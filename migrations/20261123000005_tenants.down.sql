DROP FUNCTION IF EXISTS automate_e_routes(text, text, text), automate_e_thread_tenant(text, text),
    automate_e_review_tenant(text), automate_e_proposal_tenant(uuid), automate_e_tenant_ids();
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'tenant_routes', 'conversations', 'inbox', 'events', 'outbox',
        'tenant_reviewers', 'proposals', 'tenant_llm_usage', 'user_facts', 'agent_runs',
        'trigger_cursors']
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS automate_e_tenant();
DROP INDEX IF EXISTS events_by_tenant_position;
DROP TABLE IF EXISTS trigger_cursors, agent_runs, user_facts;
ALTER TABLE tenants
    DROP COLUMN IF EXISTS brief,
    DROP COLUMN IF EXISTS accounting_base_url,
    DROP COLUMN IF EXISTS accounting_credential,
    DROP COLUMN IF EXISTS user_per_minute,
    DROP COLUMN IF EXISTS tenant_per_minute;
