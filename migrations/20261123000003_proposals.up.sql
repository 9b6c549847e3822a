-- Proposals: every write Book-E wants is a proposal, reviewed in Slack (or
-- auto-approved by a trusted learned pattern) and executed at most once.
-- Its lifecycle is the event stream `proposal-<id>`; `proposals` is the
-- projection, updated in the same transaction as each event.

ALTER TABLE tenants
    ADD COLUMN review_channel text,
    ADD COLUMN auto_approve_limit_minor bigint NOT NULL DEFAULT 0 CHECK (auto_approve_limit_minor >= 0);

-- Who may decide on a tenant's proposals (Slack user ids).
CREATE TABLE tenant_reviewers (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    platform   text NOT NULL CHECK (platform IN ('slack')),
    user_id    text NOT NULL,
    PRIMARY KEY (tenant_id, platform, user_id)
);

CREATE TABLE proposals (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    conversation_id    uuid NOT NULL REFERENCES conversations (id),
    inbox_id           uuid NOT NULL REFERENCES inbox (id),
    tool               text NOT NULL,
    request            jsonb NOT NULL,
    payload_sha256     text NOT NULL CHECK (payload_sha256 ~ '^[0-9a-f]{64}$'),
    pattern_value      text,
    amount_minor       bigint,
    proposer           text NOT NULL,
    state              text NOT NULL CHECK (state IN ('proposed', 'auto_approved', 'review_requested',
                           'approved', 'rejected', 'expired', 'executing', 'executed', 'execution_failed')),
    review_channel     text,
    review_ts          text,
    decided_by         text,
    decided_at         timestamptz,
    stream_version     bigint NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proposals_pattern_history ON proposals (tenant_id, tool, pattern_value, created_at DESC)
    WHERE state = 'executed';
CREATE INDEX proposals_by_review_message ON proposals (review_channel, review_ts);
CREATE INDEX proposals_by_state ON proposals (tenant_id, state);

GRANT SELECT ON tenant_reviewers TO automate_e_service;
GRANT SELECT, INSERT, UPDATE ON proposals TO automate_e_service;
