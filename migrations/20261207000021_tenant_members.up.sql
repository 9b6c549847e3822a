-- A company's people: only they may talk to its agents. A member is a
-- platform user, a whole Slack team or a Discord guild role. A user's
-- `person` links the identities of one person across platforms, so that
-- nobody proposes on one platform and approves on another.
CREATE TABLE tenant_members (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    platform   text NOT NULL CHECK (platform IN ('slack', 'discord', 'telegram')),
    kind       text NOT NULL CHECK (kind IN ('user', 'team', 'role')),
    value      text NOT NULL CHECK (value <> '' AND length(value) <= 64),
    person     text CHECK (person <> '' AND length(person) <= 200),
    PRIMARY KEY (tenant_id, platform, kind, value),
    CHECK (kind = 'user' OR person IS NULL),
    CHECK (kind <> 'team' OR platform = 'slack'),
    CHECK (kind <> 'role' OR platform = 'discord')
);
CREATE INDEX tenant_members_person ON tenant_members (tenant_id, person) WHERE person IS NOT NULL;
ALTER TABLE tenant_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_members TO automate_e_service
    USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant());
GRANT SELECT ON tenant_members TO automate_e_service;
