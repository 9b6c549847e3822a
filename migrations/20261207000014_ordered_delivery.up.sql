-- A conversation's replies are posted in the order they were written, one
-- delivery at a time per conversation. The holder of a conversation's
-- deliveries posts its undelivered replies oldest first; a killed gateway's
-- hold ends when `held_until` passes. A table of its own, not columns of
-- `conversations`: a turn holds a share lock on its conversation row while
-- it writes, which a delivery must not wait for.
CREATE TABLE delivery_holds (
    conversation_id  uuid PRIMARY KEY REFERENCES conversations (id),
    tenant_id        uuid NOT NULL,
    holder           text NOT NULL,
    held_until       timestamptz NOT NULL
);
ALTER TABLE delivery_holds ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON delivery_holds TO automate_e_service
    USING (tenant_id = automate_e_tenant()) WITH CHECK (tenant_id = automate_e_tenant());
GRANT SELECT, INSERT, UPDATE ON delivery_holds TO automate_e_service;

-- A conversation's undelivered replies, oldest first.
CREATE INDEX outbox_undelivered_by_conversation ON outbox (conversation_id, id)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
