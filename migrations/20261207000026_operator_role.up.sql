-- Operators change companies' settings (`worker admin`) as automate_e_admin:
-- under the same row-level security as the services, one tenant per
-- transaction, with write access to the settings only (never to messages,
-- events or proposals). An operator's login is granted the role.
DO $$
BEGIN
    CREATE ROLE automate_e_admin NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO automate_e_admin', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO automate_e_admin;
GRANT EXECUTE ON FUNCTION automate_e_tenant() TO automate_e_admin;
GRANT SELECT, INSERT ON tenants TO automate_e_admin;
GRANT UPDATE (name, brief, review_channel, auto_approve_limit_minor, llm_tokens_per_day,
    user_per_minute, tenant_per_minute, accounting_company, accounting_credential,
    accounting_base_url, file_retention_days) ON tenants TO automate_e_admin;
GRANT SELECT, INSERT, DELETE ON tenant_routes, tenant_members, tenant_reviewers
    TO automate_e_admin;
GRANT UPDATE (character) ON tenant_routes TO automate_e_admin;
GRANT UPDATE (person) ON tenant_members TO automate_e_admin;
GRANT UPDATE (escalation) ON tenant_reviewers TO automate_e_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_review_windows TO automate_e_admin;

CREATE POLICY admin_tenant_isolation ON tenants TO automate_e_admin
    USING (id = automate_e_tenant()) WITH CHECK (id = automate_e_tenant());
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_routes', 'tenant_members', 'tenant_reviewers',
        'tenant_review_windows']
    LOOP
        EXECUTE format('CREATE POLICY admin_tenant_isolation ON %I TO automate_e_admin '
            'USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant())', t);
    END LOOP;
END
$$;

-- Every tenant's id and slug, for `worker admin tenant list` and to find a
-- tenant by its slug before one is set.
CREATE FUNCTION automate_e_tenant_slugs()
    RETURNS TABLE (id uuid, slug text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT t.id, t.slug FROM tenants t ORDER BY t.slug $$;
REVOKE ALL ON FUNCTION automate_e_tenant_slugs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_tenant_slugs() TO automate_e_admin;
