DROP FUNCTION automate_e_tenant_slugs();
DROP POLICY admin_tenant_isolation ON tenants;
DROP POLICY admin_tenant_isolation ON tenant_routes;
DROP POLICY admin_tenant_isolation ON tenant_members;
DROP POLICY admin_tenant_isolation ON tenant_reviewers;
DROP POLICY admin_tenant_isolation ON tenant_review_windows;
REVOKE ALL ON tenants, tenant_routes, tenant_members, tenant_reviewers, tenant_review_windows
    FROM automate_e_admin;
REVOKE EXECUTE ON FUNCTION automate_e_tenant() FROM automate_e_admin;
REVOKE USAGE ON SCHEMA public FROM automate_e_admin;
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM automate_e_admin', current_database());
END
$$;
