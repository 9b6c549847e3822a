-- Fiken API v2 and receipts.
--
-- Every Fiken path is under /companies/{companySlug}: each tenant names its
-- own company. Receipts the owners send are kept here, not in Redis or on
-- disk, under the tenant's row-level security, for the tenant's retention
-- (default five years, the bookkeeping act's).
ALTER TABLE tenants
    ADD COLUMN accounting_company text CHECK (accounting_company ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    ADD COLUMN file_retention_days integer NOT NULL DEFAULT 1827 CHECK (file_retention_days >= 1);

CREATE TABLE files (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type  text NOT NULL,
    filename      text NOT NULL,
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    bytes         bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
);
CREATE INDEX files_expiring ON files (tenant_id, expires_at);
ALTER TABLE files ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON files TO automate_e_service
    USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant());
GRANT SELECT, INSERT, DELETE ON files TO automate_e_service;
GRANT UPDATE (expires_at) ON files TO automate_e_service;

-- A write whose outcome could not be found out (Fiken showed two candidates
-- for one create) waits for a human; and one execution runs at a time per
-- proposal, held like a lease so a killed worker's hold runs out.
ALTER TABLE proposals DROP CONSTRAINT proposals_state_check;
ALTER TABLE proposals ADD CONSTRAINT proposals_state_check CHECK (state IN ('proposed',
    'auto_approved', 'review_requested', 'approved', 'rejected', 'expired', 'executing',
    'executed', 'execution_failed', 'execution_uncertain'));
ALTER TABLE proposals
    ADD COLUMN execution_holder text,
    ADD COLUMN execution_until timestamptz;

-- The relay finds approved writes whose execution job was lost.
CREATE INDEX proposals_unexecuted ON proposals (tenant_id, updated_at)
    WHERE state IN ('approved', 'auto_approved', 'executing');
