-- Reliability: conversation leases with fencing, durable dead letters, and
-- per-tenant LLM token budgets.

-- One turn at a time per conversation. A worker takes the lease by bumping
-- `lease_fence`; every write of its turn checks the fence is still its own,
-- so a holder whose lease expired and was taken over cannot write.
ALTER TABLE conversations
    ADD COLUMN lease_holder text,
    ADD COLUMN lease_until  timestamptz,
    ADD COLUMN lease_fence  bigint NOT NULL DEFAULT 0;

-- Jobs that failed for good, kept in Postgres so an operator can list,
-- inspect and replay them even after Redis lost its data.
CREATE TABLE dead_jobs (
    id              uuid PRIMARY KEY,
    queue           text NOT NULL CHECK (queue IN ('worker', 'delivery')),
    task_id         text NOT NULL,
    kind            text NOT NULL,
    subject         uuid,
    job             jsonb NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_task_id  text
);
CREATE INDEX dead_jobs_open ON dead_jobs (dead_at) WHERE replayed_at IS NULL;
CREATE INDEX dead_jobs_subject ON dead_jobs (subject);

-- LLM tokens per tenant and UTC day; NULL budget = unlimited.
ALTER TABLE tenants ADD COLUMN llm_tokens_per_day bigint CHECK (llm_tokens_per_day >= 0);
CREATE TABLE tenant_llm_usage (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    day        date NOT NULL,
    tokens     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

-- Unreviewed proposals are looked up per conversation after each turn.
CREATE INDEX proposals_unreviewed ON proposals (conversation_id) WHERE state = 'proposed';

GRANT UPDATE (lease_holder, lease_until, lease_fence) ON conversations TO automate_e_service;
GRANT SELECT, INSERT, UPDATE ON dead_jobs, tenant_llm_usage TO automate_e_service;
