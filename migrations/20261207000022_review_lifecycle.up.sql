-- A proposal waits for a reviewer only so long: reminded in its card's
-- thread at half its window, escalated at three quarters, expired at the
-- end (the card updated and the owner told). Nothing proceeds silently.
ALTER TABLE proposals
    ADD COLUMN review_requested_at timestamptz,
    ADD COLUMN review_deadline timestamptz,
    ADD COLUMN review_reminded_at timestamptz,
    ADD COLUMN review_escalated_at timestamptz;
GRANT UPDATE (review_requested_at, review_deadline, review_reminded_at, review_escalated_at)
    ON proposals TO automate_e_service;

-- How long a tenant's proposals wait for a decision, per tool ('*': every
-- tool without its own); 72 hours where none is set. A payment may wait
-- longer than a receipt.
CREATE TABLE tenant_review_windows (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    tool       text NOT NULL CHECK (tool ~ '^(\*|[a-z][a-z0-9_]{0,63})$'),
    hours      integer NOT NULL CHECK (hours BETWEEN 1 AND 2160),
    PRIMARY KEY (tenant_id, tool)
);
ALTER TABLE tenant_review_windows ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_review_windows TO automate_e_service
    USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant());
GRANT SELECT ON tenant_review_windows TO automate_e_service;

-- Reviewers asked when nobody answered (mentioned at escalation); they may
-- decide like the others.
ALTER TABLE tenant_reviewers ADD COLUMN escalation boolean NOT NULL DEFAULT false;
