-- Least privilege for the services' role, and tenants kept apart in the
-- keys they share.
--
-- The services may change only the columns they write; a proposal's
-- request, digest, tool and proposer never change after it is filed.
REVOKE UPDATE ON proposals, inbox, outbox, agent_runs, tenant_llm_usage, trigger_cursors,
    dead_jobs, delivery_holds FROM automate_e_service;
GRANT UPDATE (state, review_channel, review_ts, decided_by, decided_at, updated_at,
    stream_version, execution_holder, execution_until) ON proposals TO automate_e_service;
GRANT UPDATE (processed_at, attachments) ON inbox TO automate_e_service;
GRANT UPDATE (delivered_at, chunks_delivered, given_up_at) ON outbox TO automate_e_service;
GRANT UPDATE (enqueued_at, finished_at, given_up_at) ON agent_runs TO automate_e_service;
GRANT UPDATE (tokens) ON tenant_llm_usage TO automate_e_service;
GRANT UPDATE (position) ON trigger_cursors TO automate_e_service;
GRANT UPDATE (replayed_at, replay_task_id) ON dead_jobs TO automate_e_service;
GRANT UPDATE (holder, held_until) ON delivery_holds TO automate_e_service;

-- Roles are the cluster's, databases are not: only the services' role (and
-- the owner) may connect to this database, not every login of the cluster.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO automate_e_service', current_database());
END
$$;

-- One review channel is one company's: a click there decides for that
-- company only. Duplicates are reported before the index would fail on them.
DO $$
DECLARE
    shared_channels text;
BEGIN
    SELECT string_agg(DISTINCT review_channel, ', ') INTO shared_channels FROM (
        SELECT review_channel FROM tenants WHERE review_channel IS NOT NULL
        GROUP BY review_channel HAVING count(*) > 1) d;
    IF shared_channels IS NOT NULL THEN
        RAISE EXCEPTION 'review channels shared by several tenants: %; give each its own first',
            shared_channels;
    END IF;
END
$$;
CREATE UNIQUE INDEX tenants_review_channel ON tenants (review_channel)
    WHERE review_channel IS NOT NULL;

-- A new company starts with a daily model budget (2 million tokens); NULL
-- stays "unlimited" for a tenant that is given it on purpose.
ALTER TABLE tenants ALTER COLUMN llm_tokens_per_day SET DEFAULT 2000000;
