//! A fresh database per test, migrated by its owner, used by the services
//! through a login role that only has `automate_e_service`'s grants.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

/// Login role the services use in tests: not a superuser, not an owner.
pub const SERVICE_LOGIN_ROLE: &str = "automate_e_test_svc";

/// One test's database; dropped with [`Self::drop`], or when the value is
/// dropped without it (a test that failed before its clean-up).
pub struct TestDb {
    name: String,
    /// The owner's pool (for seeding and assertions).
    pub owner: PgPool,
    dropped: bool,
}

/// The admin URL of the test machine's Postgres (must be able to create databases).
pub fn admin_url() -> String {
    crate::machine_setting("AE_TEST_DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, user: Option<&str>, database: &str) -> String {
    let mut url = reqwest::Url::parse(url).expect("AE_TEST_DATABASE_URL is a URL");
    url.set_path(database);
    if let Some(user) = user {
        url.set_username(user).expect("URL takes a user");
        url.set_password(None).expect("URL takes no password");
    }
    url.to_string()
}

impl TestDb {
    /// Creates, migrates and grants a fresh database.
    pub async fn create() -> Self {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Postgres at AE_TEST_DATABASE_URL: {e}"));
        let name = format!("ae_test_{}", Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        admin.close().await;
        let owner = PgPoolOptions::new()
            .max_connections(4)
            .connect(&with_database(&admin_url(), None, &name))
            .await
            .expect("connect to test database");
        shared::MIGRATOR
            .run(&owner)
            .await
            .expect("apply migrations");
        // Roles are cluster-wide; parallel tests may race to create it.
        owner
            .execute(
                format!(
                    "DO $$ BEGIN CREATE ROLE {SERVICE_LOGIN_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                )
                .as_str(),
            )
            .await
            .expect("create service login role");
        let grant = format!("GRANT automate_e_service TO {SERVICE_LOGIN_ROLE}");
        for attempt in 0..3 {
            match owner.execute(grant.as_str()).await {
                Ok(_) => break,
                // Concurrent GRANTs of the same membership can conflict.
                Err(e) if attempt < 2 => eprintln!("retrying grant: {e}"),
                Err(e) => panic!("grant service role: {e}"),
            }
        }
        owner
            .execute(format!("GRANT CONNECT ON DATABASE {name} TO {SERVICE_LOGIN_ROLE}").as_str())
            .await
            .expect("grant connect");
        Self {
            name,
            owner,
            dropped: false,
        }
    }

    /// Runs `test` on a fresh database ([`Self::create`]) and drops it
    /// afterwards, whether the test passed or panicked.
    pub async fn run(test: impl AsyncFnOnce(&Self)) {
        use futures::FutureExt;

        let db = Self::create().await;
        let ran = std::panic::AssertUnwindSafe(test(&db)).catch_unwind().await;
        db.drop().await;
        if let Err(failure) = ran {
            std::panic::resume_unwind(failure);
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL for the services: the service login role on this database.
    pub fn service_url(&self) -> String {
        self.url_as(SERVICE_LOGIN_ROLE)
    }

    /// URL of this database for another login role.
    pub fn url_as(&self, role: &str) -> String {
        with_database(&admin_url(), Some(role), &self.name)
    }

    /// A store connected as the service role, as the services connect.
    pub async fn service_store(&self) -> shared::access::store::Store {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.service_url())
            .await
            .expect("connect as the service role");
        shared::access::store::Store::from_pool(pool)
    }

    /// Adds a tenant and one route to it; returns the tenant id.
    pub async fn seed_tenant(
        &self,
        slug: &str,
        platform: &str,
        workspace: &str,
        channel: &str,
        character: &str,
    ) -> Uuid {
        let id = Uuid::now_v7();
        // Each tenant keeps its books in the Fiken company of its own slug.
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, accounting_company) VALUES ($1, $2, $2, $2)",
        )
        .bind(id)
        .bind(slug)
        .execute(&self.owner)
        .await
        .expect("seed tenant");
        self.seed_route(id, platform, workspace, channel, character)
            .await;
        id
    }

    /// Routes a platform workspace/channel to a tenant's character.
    pub async fn seed_route(
        &self,
        tenant: Uuid,
        platform: &str,
        workspace: &str,
        channel: &str,
        character: &str,
    ) {
        sqlx::query("INSERT INTO tenant_routes (platform, workspace, channel, tenant_id, character) VALUES ($1, $2, $3, $4, $5)")
            .bind(platform)
            .bind(workspace)
            .bind(channel)
            .bind(tenant)
            .bind(character)
            .execute(&self.owner)
            .await
            .expect("seed route");
    }

    /// Lists a member of a tenant: a platform `user` (of `person`, when
    /// given), a Slack `team` or a Discord `role`.
    pub async fn seed_member(
        &self,
        tenant: Uuid,
        platform: &str,
        kind: &str,
        value: &str,
        person: Option<&str>,
    ) {
        sqlx::query(
            "INSERT INTO tenant_members (tenant_id, platform, kind, value, person) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(platform)
        .bind(kind)
        .bind(value)
        .bind(person)
        .execute(&self.owner)
        .await
        .expect("seed member");
    }

    /// Sets a tenant's review channel, auto-approval limit and Slack reviewers.
    pub async fn seed_review_policy(
        &self,
        tenant: Uuid,
        channel: &str,
        limit_minor: i64,
        reviewers: &[&str],
    ) {
        sqlx::query(
            "UPDATE tenants SET review_channel = $2, auto_approve_limit_minor = $3 WHERE id = $1",
        )
        .bind(tenant)
        .bind(channel)
        .bind(limit_minor)
        .execute(&self.owner)
        .await
        .expect("seed review policy");
        for reviewer in reviewers {
            sqlx::query("INSERT INTO tenant_reviewers (tenant_id, platform, user_id) VALUES ($1, 'slack', $2)")
                .bind(tenant)
                .bind(reviewer)
                .execute(&self.owner)
                .await
                .expect("seed reviewer");
        }
    }

    /// Puts a tenant on the chat page: every page chat routed to Book-E,
    /// `owner` its member, `reviewer` its reviewer, its cards on the page.
    pub async fn seed_page(&self, tenant: Uuid, owner: &str, reviewer: &str) {
        self.seed_route(tenant, "web", "page", "*", "book-e").await;
        self.seed_member(tenant, "web", "user", owner, None).await;
        sqlx::query("UPDATE tenants SET review_channel = 'web:reviews' WHERE id = $1")
            .bind(tenant)
            .execute(&self.owner)
            .await
            .expect("seed page review channel");
        sqlx::query(
            "INSERT INTO tenant_reviewers (tenant_id, platform, user_id) VALUES ($1, 'web', $2)",
        )
        .bind(tenant)
        .bind(reviewer)
        .execute(&self.owner)
        .await
        .expect("seed page reviewer");
    }

    /// Inbox messages not yet answered plus outbox replies not yet delivered
    /// (nor given up).
    pub async fn pending_work(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM inbox WHERE processed_at IS NULL) \
                  + (SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND given_up_at IS NULL)",
        )
        .fetch_one(&self.owner)
        .await
        .expect("count pending work")
    }

    /// Holders of the conversation leases not yet expired.
    pub async fn lease_holders(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT lease_holder FROM conversations \
             WHERE lease_holder IS NOT NULL AND lease_until > now()",
        )
        .fetch_all(&self.owner)
        .await
        .expect("read leases")
    }

    /// Number of rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.owner)
            .await
            .expect("count rows")
    }

    /// Event types of the streams starting with `prefix`, in log order.
    pub async fn event_types(&self, stream_prefix: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT type FROM events WHERE stream LIKE $1 || '%' ORDER BY global_position",
        )
        .bind(stream_prefix)
        .fetch_all(&self.owner)
        .await
        .expect("read events")
    }

    /// Payloads of the events of one type, in log order.
    pub async fn event_payloads(&self, type_name: &str) -> Vec<serde_json::Value> {
        sqlx::query_scalar("SELECT payload FROM events WHERE type = $1 ORDER BY global_position")
            .bind(type_name)
            .fetch_all(&self.owner)
            .await
            .expect("read event payloads")
    }

    /// For each conversation thread: the texts of the events of `type_name`
    /// in its stream, in stream order.
    pub async fn conversation_texts(
        &self,
        type_name: &str,
    ) -> std::collections::BTreeMap<String, Vec<String>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.thread, e.payload->>'text' FROM events e \
             JOIN conversations c ON e.stream = 'conversation-' || c.id::text \
             WHERE e.type = $1 ORDER BY c.thread, e.version",
        )
        .bind(type_name)
        .fetch_all(&self.owner)
        .await
        .expect("read conversation events");
        let mut texts = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (thread, text) in rows {
            texts.entry(thread).or_default().push(text);
        }
        texts
    }

    /// The id of the tenant with this slug.
    pub async fn tenant_id(&self, slug: &str) -> Uuid {
        sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_one(&self.owner)
            .await
            .expect("the tenant exists")
    }

    /// Sequential scans and the rows they read, per table that had any
    /// (benchmarks: a growing store must not be read in full).
    pub async fn seq_scans(&self) -> serde_json::Value {
        // Statistics reach the view when a backend's transaction ends.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, seq_scan, seq_tup_read FROM pg_stat_user_tables
             WHERE seq_tup_read > 0 ORDER BY seq_tup_read DESC",
        )
        .fetch_all(&self.owner)
        .await
        .expect("table statistics");
        rows.into_iter()
            .map(|(table, scans, rows)| {
                let read = serde_json::json!({"scans": scans, "rows_read": rows});
                (table, read)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Some proposal's id.
    pub async fn any_proposal(&self) -> shared::ids::ProposalId {
        sqlx::query_scalar("SELECT id FROM proposals LIMIT 1")
            .fetch_one(&self.owner)
            .await
            .expect("a proposal exists")
    }

    /// The conversation of `tenant`'s newest message.
    pub async fn last_conversation(&self, tenant: Uuid) -> Uuid {
        sqlx::query_scalar(
            "SELECT conversation_id FROM inbox WHERE tenant_id = $1 ORDER BY received_at DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_one(&self.owner)
        .await
        .expect("a message")
    }

    /// Events in a conversation's stream.
    pub async fn stream_length(&self, conversation: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream = 'conversation-' || $1")
            .bind(conversation)
            .fetch_one(&self.owner)
            .await
            .expect("count events")
    }

    /// Grows a conversation's history by `events` past events (benchmarks):
    /// rounds of a message, two model calls, a tool call and a reply.
    pub async fn seed_conversation(&self, tenant: Uuid, conversation: Uuid, events: i64) {
        sqlx::query(
            r#"INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind,
                                  actor_id, payload_schema, payload, source)
               SELECT gen_random_uuid(), $1, 'conversation-' || $2, last.version + g,
                      'automate_e.conversation.' || t.name || '.v1',
                      now() - interval '40 days', 'user', 'W111', 'seed',
                      CASE t.name
                          WHEN 'message_received' THEN jsonb_build_object('inbox_id',
                              gen_random_uuid(), 'conversation_id', $2, 'text', 'seeded',
                              'attachments', '[]'::jsonb)
                          WHEN 'reply_composed' THEN jsonb_build_object('inbox_id',
                              gen_random_uuid(), 'outbox_id', gen_random_uuid(), 'text', 'seeded')
                          ELSE '{"model": "gpt-test", "input_tokens": 120, "output_tokens": 30}'
                      END,
                      'bench'
               FROM (SELECT coalesce(max(version), 0) AS version FROM events
                     WHERE stream = 'conversation-' || $2) last,
                    generate_series(1, $3) g
               CROSS JOIN LATERAL (SELECT (ARRAY['message_received', 'llm_called',
                   'tool_called', 'llm_called', 'reply_composed'])[g % 5 + 1] AS name) t"#,
        )
        .bind(tenant)
        .bind(conversation)
        .bind(events)
        .execute(&self.owner)
        .await
        .expect("seed a conversation");
    }

    /// Grows `tenant`'s history by `events` events (benchmarks): past
    /// Slack conversations of ten events each (messages, model and tool
    /// calls, replies, deliveries; from 40 to 400 days ago), every one with
    /// its inbox row and one proposal (executed, rejected or waiting for
    /// review; 50 merchants). `batch` keeps the threads of repeated calls
    /// apart.
    pub async fn seed_history(&self, tenant: Uuid, events: i64, batch: usize) {
        let conversations = events / 10;
        let thread_prefix = format!("seed-{batch}-");
        sqlx::query(
            r#"WITH conversation AS (
                 INSERT INTO conversations (id, tenant_id, platform, chat, thread, character)
                 SELECT gen_random_uuid(), $1, 'slack', 'CSEED', $2 || g, 'book-e'
                 FROM generate_series(1, $3) g RETURNING id),
               message AS (
                 INSERT INTO inbox (id, tenant_id, conversation_id, platform, platform_message_id,
                                    author_id, text, received_at, processed_at)
                 SELECT gen_random_uuid(), $1, id, 'slack', 'seed-' || id, 'W111', 'seeded',
                        now(), now()
                 FROM conversation RETURNING id, conversation_id)
               INSERT INTO proposals (id, tenant_id, conversation_id, inbox_id, tool, request,
                                      payload_sha256, pattern_value, amount_minor, proposer,
                                      state, stream_version)
               SELECT gen_random_uuid(), $1, conversation_id, id, 'register_purchase',
                      '{"tool": "register_purchase", "api": "fiken",
                        "arguments": {"merchant": "seeded", "body": {"lines": [{"netPrice": 19900}]}},
                        "steps": [{"request": {"tool": "register_purchase", "operation": "createPurchase",
                          "method": "POST", "path": "/companies/acme/purchases", "query": [],
                          "body": {"lines": [{"netPrice": 19900}]}}}]}',
                      repeat('a', 64), 'merchant-' || (n % 50), 19900, 'W111',
                      (ARRAY['executed', 'rejected', 'review_requested'])[1 + (n % 3)::int], 1
               FROM (SELECT *, row_number() OVER () AS n FROM message) numbered"#,
        )
        .bind(tenant)
        .bind(&thread_prefix)
        .bind(conversations)
        .execute(&self.owner)
        .await
        .expect("seed conversations and proposals");
        sqlx::query(
            r#"INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind,
                                  actor_id, payload_schema, payload, source)
               SELECT gen_random_uuid(), $1, 'conversation-' || c.id, v,
                      'automate_e.' || t.name || '.v1',
                      now() - interval '40 days' - random() * interval '360 days',
                      'user', 'W111', 'seed',
                      CASE t.name WHEN 'conversation.llm_called'
                          THEN '{"model": "gpt-test", "input_tokens": 120, "output_tokens": 30}'
                          ELSE '{"text": "seeded"}' END::jsonb,
                      'bench'
               FROM conversations c CROSS JOIN generate_series(1, 10) v
               CROSS JOIN LATERAL (SELECT (ARRAY['conversation.message_received',
                   'conversation.llm_called', 'conversation.tool_called', 'conversation.llm_called',
                   'conversation.reply_composed', 'delivery.reply_delivered',
                   'conversation.message_received', 'conversation.llm_called',
                   'conversation.reply_composed', 'delivery.reply_delivered'])[v] AS name) t
               WHERE c.tenant_id = $1 AND c.chat = 'CSEED' AND c.thread LIKE $2 || '%'"#,
        )
        .bind(tenant)
        .bind(&thread_prefix)
        .execute(&self.owner)
        .await
        .expect("seed events");
        sqlx::query("ANALYZE")
            .execute(&self.owner)
            .await
            .expect("analyze");
    }

    /// Drops the database.
    pub async fn drop(mut self) {
        self.owner.close().await;
        drop_database(&self.name).await;
        self.dropped = true;
    }
}

async fn drop_database(name: &str) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url())
        .await
        .expect("connect admin");
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
}

impl Drop for TestDb {
    /// The safety net: a database nobody dropped is dropped on a thread of
    /// its own (this may run inside an async runtime that is unwinding).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(drop_database(&name)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A turn's start for `inbox_id` by `holder` (taking the lease, or under
/// `held`), with the characters' `memory`, the history of type `history`.
pub fn turn_start<'a>(
    inbox_id: shared::ids::InboxId,
    holder: &'a str,
    held: Option<shared::access::store::Lease>,
    memory: &'a std::collections::HashMap<String, shared::access::store::CharacterMemory>,
    history: &'a [&'a str],
) -> shared::access::store::TurnStartParams<'a> {
    shared::access::store::TurnStartParams {
        inbox_id,
        holder,
        ttl: std::time::Duration::from_secs(30),
        held,
        limit: 10,
        day: chrono::Utc::now().date_naive(),
        memory,
        history_types: history,
        received_key_prefix: "message:",
    }
}
