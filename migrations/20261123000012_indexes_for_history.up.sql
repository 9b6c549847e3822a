-- Reads that stay flat as history grows, and fewer index entries per event.
--
-- Half of a turn's events (model calls, tool calls) have no dedupe key; a
-- unique index over the keys that exist enforces the same uniqueness (nulls
-- never collided) without an entry for each of them. Appends that skip a
-- recorded key name the predicate in `ON CONFLICT`.
ALTER TABLE events DROP CONSTRAINT events_dedupe_key_key;
CREATE UNIQUE INDEX events_dedupe_key_key ON events (dedupe_key) WHERE dedupe_key IS NOT NULL;

-- The only reader of events by tenant and type is the usage report (Cost-E's
-- `usage_report`), which asks for a period: by (tenant, type, position) it
-- read every usage event of the tenant ever and filtered by time. This index
-- holds only the usage events, ordered by when they happened; the report's
-- queries name these types literally so that every plan of theirs can use it.
DROP INDEX events_by_tenant_type;
CREATE INDEX events_usage ON events (tenant_id, type, occurred_at)
    WHERE type IN ('automate_e.conversation.llm_called.v1',
                   'automate_e.conversation.tool_called.v1',
                   'automate_e.proposal.agent_reviewed.v1',
                   'automate_e.agent.run_completed.v1');

-- A retried turn looks up the proposal it filed by message and payload: by
-- these, not by a scan of all proposals. Unique, as filing is once per
-- message and payload.
CREATE UNIQUE INDEX proposals_by_message_payload ON proposals (inbox_id, payload_sha256);

-- The relay sweeps one tenant at a time: by tenant, not through every
-- tenant's unfinished rows. A delivery or agent run whose job was given up
-- (dead-lettered) is marked so and leaves the sweep until a replay: before,
-- such rows stayed the oldest unfinished ones forever, and once a tenant
-- had a sweep's batch of them, newer lost work was never re-queued.
ALTER TABLE outbox ADD COLUMN given_up_at timestamptz;
ALTER TABLE agent_runs ADD COLUMN given_up_at timestamptz;
DROP INDEX outbox_undelivered;
CREATE INDEX outbox_undelivered ON outbox (tenant_id, created_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
DROP INDEX agent_runs_unfinished;
CREATE INDEX agent_runs_unfinished ON agent_runs (tenant_id, created_at)
    WHERE finished_at IS NULL AND given_up_at IS NULL;
-- The inbox sweep stays on `inbox_pending_by_conversation`: its rows are only
-- the messages in flight, and an index by tenant would cost every inbound
-- message one more index entry.

-- Looked up per tenant every trigger tick, and per Slack thread reply: by
-- index, not a scan that grows with the number of tenants.
CREATE INDEX tenant_routes_by_tenant ON tenant_routes (tenant_id);
CREATE INDEX tenants_by_review_channel ON tenants (review_channel) WHERE review_channel IS NOT NULL;
