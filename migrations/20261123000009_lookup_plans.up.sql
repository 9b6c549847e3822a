-- The gateway looks up a message's routes (and, for a thread, its tenant)
-- on every inbound message. As SECURITY DEFINER SQL functions they cannot be
-- inlined and their query was planned again on every call (0.25 ms of the
-- ~1 ms Postgres spent per webhook under `scripts/bench ingest`); PL/pgSQL
-- keeps each session's plan. Same results, same privileges.
CREATE OR REPLACE FUNCTION automate_e_routes(p_platform text, p_workspace text, p_channel text)
    RETURNS TABLE (channel text, tenant_id uuid, "character" text,
                   user_per_minute integer, tenant_per_minute integer)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    BEGIN
        RETURN QUERY
        SELECT r.channel, r.tenant_id, r.character, t.user_per_minute, t.tenant_per_minute
        FROM tenant_routes r JOIN tenants t ON t.id = r.tenant_id
        WHERE r.platform = p_platform AND r.workspace = p_workspace AND r.channel IN (p_channel, '*');
    END
    $$;

CREATE OR REPLACE FUNCTION automate_e_thread_tenant(p_platform text, p_thread text)
    RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    BEGIN
        RETURN (SELECT c.tenant_id FROM conversations c
                WHERE c.platform = p_platform AND c.thread = p_thread AND c.thread <> '' LIMIT 1);
    END
    $$;
