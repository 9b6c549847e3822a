-- Foundation schema: tenants and routes, conversations, the durable inbox and
-- outbox, and the append-only event log (DESIGN.md §4).
--
-- The services never connect as the owner of these tables. They log in as a
-- role that is a member of `automate_e_service`, which gets only the grants
-- below: in particular no UPDATE or DELETE on `events`.

DO $$
BEGIN
    CREATE ROLE automate_e_service NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
EXCEPTION
    -- Roles are cluster-wide: another database (or a concurrent migration) may
    -- already have created it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which platform workspace/channel belongs to which tenant and agent.
-- `channel = '*'` routes every channel of the workspace not routed explicitly.
CREATE TABLE tenant_routes (
    platform    text NOT NULL CHECK (platform IN ('slack', 'discord', 'telegram')),
    workspace   text NOT NULL,
    channel     text NOT NULL DEFAULT '*',
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    character   text NOT NULL,
    PRIMARY KEY (platform, workspace, channel)
);

-- One conversation per (tenant, platform, chat, thread).
CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    platform    text NOT NULL CHECK (platform IN ('slack', 'discord', 'telegram')),
    chat        text NOT NULL,
    thread      text NOT NULL DEFAULT '',
    character   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, platform, chat, thread)
);

-- Every accepted inbound message, deduplicated on the platform's message id.
CREATE TABLE inbox (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    conversation_id      uuid NOT NULL REFERENCES conversations (id),
    platform             text NOT NULL,
    platform_message_id  text NOT NULL,
    delivery_id          text,
    author_id            text NOT NULL,
    text                 text NOT NULL,
    received_at          timestamptz NOT NULL,
    enqueued_at          timestamptz,
    processed_at         timestamptz,
    UNIQUE (platform, platform_message_id)
);
CREATE INDEX inbox_not_enqueued ON inbox (received_at) WHERE enqueued_at IS NULL;
CREATE INDEX inbox_pending_by_conversation ON inbox (conversation_id, received_at) WHERE processed_at IS NULL;

-- The append-only event log. `version` is unique per stream (optimistic
-- concurrency); `global_position` orders all events.
CREATE TABLE events (
    global_position  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               uuid NOT NULL UNIQUE,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    stream           text NOT NULL,
    version          bigint NOT NULL CHECK (version > 0),
    type             text NOT NULL CHECK (type ~ '^automate_e\.[a-z_]+\.[a-z_]+\.v[0-9]+$'),
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    actor_kind       text NOT NULL CHECK (actor_kind IN ('user', 'agent', 'system', 'reviewer')),
    actor_id         text NOT NULL,
    payload_schema   text NOT NULL,
    payload          jsonb NOT NULL,
    dedupe_key       text UNIQUE,
    correlation_id   uuid,
    causation_id     uuid,
    trace_id         text,
    source           text NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX events_by_tenant_type ON events (tenant_id, type, global_position);

-- Replies waiting for (or done with) delivery to the platform.
CREATE TABLE outbox (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    conversation_id   uuid NOT NULL REFERENCES conversations (id),
    dedupe_key        text NOT NULL UNIQUE,
    platform          text NOT NULL,
    chat              text NOT NULL,
    thread            text NOT NULL DEFAULT '',
    text              text NOT NULL,
    chunks_delivered  integer NOT NULL DEFAULT 0 CHECK (chunks_delivered >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    enqueued_at       timestamptz,
    delivered_at      timestamptz
);
CREATE INDEX outbox_not_enqueued ON outbox (created_at) WHERE enqueued_at IS NULL;

GRANT USAGE ON SCHEMA public TO automate_e_service;
GRANT SELECT ON tenants, tenant_routes TO automate_e_service;
GRANT SELECT, INSERT ON conversations TO automate_e_service;
GRANT SELECT, INSERT, UPDATE ON inbox, outbox TO automate_e_service;
GRANT SELECT, INSERT ON events TO automate_e_service;
