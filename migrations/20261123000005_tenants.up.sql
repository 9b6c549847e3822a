-- Many companies on one runtime: per-tenant settings, learned user facts,
-- agent runs (event and schedule triggers), and row-level security on every
-- tenant-owned table.
--
-- Every query of the services runs in a transaction that first sets
-- `automate_e.tenant_id` (transaction-local). The policies compare each row's
-- tenant with that setting, so a query with no tenant set sees no rows and
-- may write none: RLS fails closed. The services' role is neither a superuser
-- nor the tables' owner, so it cannot bypass RLS. The few lookups that must
-- find a tenant before one is known (routing an inbound message, a click in a
-- review channel, the list of tenants for the relay and the scheduler) are
-- SECURITY DEFINER functions that return ids and routes only.

ALTER TABLE tenants
    -- What every agent of this tenant should know about the company.
    ADD COLUMN brief text NOT NULL DEFAULT '' CHECK (length(brief) <= 4000),
    -- The tenant's Accounting API; NULL uses the worker's default.
    -- (https only, no user:password part; it needs its own credential).
    ADD COLUMN accounting_base_url text CHECK (accounting_base_url ~ '^https://[^[:space:]@]+$'),
    -- The NAME of the credential in the worker's secrets (never the secret).
    ADD COLUMN accounting_credential text CHECK (accounting_credential ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    -- Inbound message limits; NULL uses the gateway's defaults.
    ADD COLUMN user_per_minute integer CHECK (user_per_minute > 0),
    ADD COLUMN tenant_per_minute integer CHECK (tenant_per_minute > 0),
    ADD CONSTRAINT own_api_has_own_credential
        CHECK (accounting_base_url IS NULL OR accounting_credential IS NOT NULL);

-- Durable facts an agent learned about a user (their role, preferences).
CREATE TABLE user_facts (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    platform         text NOT NULL CHECK (platform IN ('slack', 'discord', 'telegram')),
    user_id          text NOT NULL,
    fact             text NOT NULL CHECK (length(fact) BETWEEN 1 AND 300),
    conversation_id  uuid REFERENCES conversations (id),
    learned_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, platform, user_id, fact)
);
CREATE INDEX user_facts_newest ON user_facts (tenant_id, platform, user_id, learned_at DESC);

-- One run of an agent for a trigger that is not a chat message: an event on
-- the event store or a schedule period. `dedupe_key` makes each trigger run
-- once however many workers see it.
CREATE TABLE agent_runs (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    character    text NOT NULL,
    dedupe_key   text NOT NULL,
    reason       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    enqueued_at  timestamptz,
    finished_at  timestamptz,
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX agent_runs_not_enqueued ON agent_runs (created_at) WHERE enqueued_at IS NULL;
CREATE INDEX agent_runs_unfinished ON agent_runs (created_at) WHERE finished_at IS NULL;

-- How far each tenant's event triggers of each agent have read the event log.
CREATE TABLE trigger_cursors (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    character  text NOT NULL,
    position   bigint NOT NULL,
    PRIMARY KEY (tenant_id, character)
);

-- Event triggers scan by tenant and position across types.
CREATE INDEX events_by_tenant_position ON events (tenant_id, global_position);

GRANT SELECT, INSERT ON user_facts TO automate_e_service;
GRANT SELECT, INSERT, UPDATE ON agent_runs, trigger_cursors TO automate_e_service;

-- The tenant of the current transaction; NULL when none is set.
CREATE FUNCTION automate_e_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('automate_e.tenant_id', true), '')::uuid $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_routes', 'conversations', 'inbox', 'events', 'outbox',
        'tenant_reviewers', 'proposals', 'tenant_llm_usage', 'user_facts', 'agent_runs',
        'trigger_cursors']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO automate_e_service '
            'USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant())', t);
    END LOOP;
END
$$;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants TO automate_e_service
    USING (id = automate_e_tenant()) WITH CHECK (id = automate_e_tenant());

-- Lookups before a tenant is known. They run as the owner (who is not
-- subject to RLS) with a fixed search_path, and return no message text.

-- The routes of a platform workspace that could cover `channel`, with the
-- tenant's inbound limits.
CREATE FUNCTION automate_e_routes(p_platform text, p_workspace text, p_channel text)
    RETURNS TABLE (channel text, tenant_id uuid, "character" text,
                   user_per_minute integer, tenant_per_minute integer)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT r.channel, r.tenant_id, r.character, t.user_per_minute, t.tenant_per_minute
        FROM tenant_routes r JOIN tenants t ON t.id = r.tenant_id
        WHERE r.platform = p_platform AND r.workspace = p_workspace AND r.channel IN (p_channel, '*')
    $$;

-- The tenant whose conversation lives in a platform thread.
CREATE FUNCTION automate_e_thread_tenant(p_platform text, p_thread text)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        SELECT c.tenant_id FROM conversations c
        WHERE c.platform = p_platform AND c.thread = p_thread AND c.thread <> '' LIMIT 1
    $$;

-- The tenant whose review channel this is.
CREATE FUNCTION automate_e_review_tenant(p_channel text)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT t.id FROM tenants t WHERE t.review_channel = p_channel LIMIT 1 $$;

-- The tenant of a proposal, for a reviewer's click (authorized afterwards
-- against that tenant's reviewers).
CREATE FUNCTION automate_e_proposal_tenant(p_id uuid)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT p.tenant_id FROM proposals p WHERE p.id = p_id $$;

-- Every tenant id, for the relay and the scheduler.
CREATE FUNCTION automate_e_tenant_ids()
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT t.id FROM tenants t ORDER BY t.id $$;

REVOKE ALL ON FUNCTION automate_e_routes(text, text, text), automate_e_thread_tenant(text, text),
    automate_e_review_tenant(text), automate_e_proposal_tenant(uuid), automate_e_tenant_ids()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_tenant(), automate_e_routes(text, text, text),
    automate_e_thread_tenant(text, text), automate_e_review_tenant(text),
    automate_e_proposal_tenant(uuid), automate_e_tenant_ids()
    TO automate_e_service;
