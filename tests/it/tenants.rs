//! Tenant isolation by row-level security, as the services' role: a query
//! that forgets its tenant filter, or names another tenant on purpose, sees
//! and changes nothing of that tenant; with no tenant set it sees nothing.

use std::collections::HashMap;

use chrono::Utc;
use shared::access::store::{
    NewAgentRun, NewEvent, NewMessageParams, RecordOutcome, Store, StoreError, TenantStore,
};
use shared::event::{Actor, ActorKind};
use shared::ids::{ConversationId, InboxId, Platform, TenantId};
use sqlx::Row;
use tests::db::{TestDb, turn_start};
use tests::fake::openai::Scripted;
use tests::{FIXTURE_TEAM, fixture, run_test};

/// Tables of the services' role that hold no tenant's rows: dead jobs are
/// the operators' (ids and errors, listed across tenants).
const OPERATOR_TABLES: [&str; 1] = ["dead_jobs"];

/// A table of the services' role, from the catalog.
#[derive(Debug)]
struct ServiceTable {
    name: String,
    /// `tenant_id`, `id` for `tenants`; `None` for an operator table.
    tenant_column: Option<String>,
    /// Row-level security of its own, or a view that applies its tables' as the
    /// caller (`security_invoker`).
    row_security: bool,
    /// Columns a row can be written with (not generated, not identity).
    insertable: Vec<String>,
    can_insert: bool,
    /// Columns the role may update.
    updatable: Vec<String>,
    can_delete: bool,
}

/// Every table in `public` the services' role holds any privilege on.
async fn service_tables(db: &TestDb) -> Vec<ServiceTable> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, \
                (c.relrowsecurity OR (c.relkind = 'v' \
                    AND 'security_invoker=true' = ANY(c.reloptions))) AS row_security, \
                CASE WHEN c.relname = 'tenants' THEN 'id' ELSE ( \
                    SELECT a.attname::text FROM pg_attribute a \
                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
                END AS tenant_column, \
                ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                      AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '' \
                      AND a.attgenerated = '' ORDER BY a.attnum) AS insertable, \
                has_table_privilege('automate_e_service', c.oid, 'INSERT') AS can_insert, \
                ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                      AND a.attnum > 0 AND NOT a.attisdropped \
                      AND has_column_privilege('automate_e_service', c.oid, a.attnum, 'UPDATE') \
                      ORDER BY a.attnum) AS updatable, \
                has_table_privilege('automate_e_service', c.oid, 'DELETE') AS can_delete \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') \
           AND has_table_privilege('automate_e_service', c.oid, 'SELECT, INSERT, UPDATE, DELETE') \
         ORDER BY 1",
    )
    .fetch_all(&db.owner)
    .await
    .unwrap();
    rows.iter()
        .map(|r| ServiceTable {
            name: r.get("name"),
            tenant_column: r.get("tenant_column"),
            row_security: r.get("row_security"),
            insertable: r.get("insertable"),
            can_insert: r.get("can_insert"),
            updatable: r.get("updatable"),
            can_delete: r.get("can_delete"),
        })
        .collect()
}

/// Records one message (a conversation, an inbox row) and a fact for the
/// tenant; returns the message and its conversation.
async fn seed_activity(store: &TenantStore, text: &str) -> (InboxId, ConversationId) {
    let params = NewMessageParams {
        tenant_id: store.tenant_id(),
        character: "book-e".into(),
        platform: Platform::Slack,
        chat: "C1".into(),
        thread: format!("{text}.1"),
        platform_message_id: format!("{}:{text}", store.tenant_id()),
        delivery_id: None,
        author_id: "U1".into(),
        text: text.into(),
        attachments: vec![],
        received_at: Utc::now(),
    };
    let RecordOutcome::New { inbox_id } = store.record_message(&params).await.unwrap() else {
        panic!("a first message is new");
    };
    let conversation = store.inbox_message(inbox_id).await.unwrap().conversation_id;
    assert!(
        store
            .remember_fact(
                Platform::Slack,
                "U1",
                &format!("fact of {text}"),
                conversation
            )
            .await
            .unwrap()
    );
    store
        .add_token_usage(Utc::now().date_naive(), 10)
        .await
        .unwrap();
    let receipt = tests::receipt_pdf();
    let file = shared::request::FileRef {
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&receipt)),
        filename: format!("{text}.pdf"),
        content_type: "application/pdf".into(),
        size_bytes: receipt.len() as u64,
    };
    store.store_file(&file, &receipt).await.unwrap();
    let notice = store.record_notice(&params, "a notice").await.unwrap();
    store
        .next_delivery(notice, "test", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let event = NewEvent {
        tenant_id: store.tenant_id(),
        type_name: "automate_e.test.thing_happened.v1",
        payload: serde_json::json!({ "text": text }),
        actor: Actor {
            kind: ActorKind::System,
            id: "test".into(),
        },
        occurred_at: Utc::now(),
        dedupe_key: None,
        correlation_id: None,
        causation_id: None,
        trace_id: None,
        source: "test",
    };
    store
        .append(&format!("test-{text}"), 0, &[event])
        .await
        .unwrap();
    let run = NewAgentRun {
        character: "report-e".into(),
        dedupe_key: format!("test:{text}"),
        reason: serde_json::json!({}),
    };
    store
        .create_agent_run(&run)
        .await
        .unwrap()
        .expect("a new run");
    (inbox_id, conversation)
}

/// A proposal row for the tenant's message, written by the owner.
async fn seed_proposal(
    db: &TestDb,
    tenant: TenantId,
    inbox: InboxId,
    conversation: ConversationId,
) {
    sqlx::query(
        "INSERT INTO proposals (id, tenant_id, conversation_id, inbox_id, tool, request, payload_sha256, \
         proposer, state, stream_version) \
         VALUES ($1, $2, $3, $4, 'register_purchase', '{}', repeat('a', 64), 'slack:U1', 'proposed', 1)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant)
    .bind(conversation)
    .bind(inbox)
    .execute(&db.owner)
    .await
    .unwrap();
}

/// Runs `sql` (binding `json`, if any) as the services' role with `tenant`
/// set (or none), and rolls back: the rows' first columns as text, or the
/// database's refusal.
async fn as_tenant(
    service: &Store,
    tenant: Option<TenantId>,
    sql: &str,
    json: Option<&str>,
) -> Result<(Vec<String>, u64), sqlx::Error> {
    let mut tx = service.pool().begin().await.unwrap();
    if let Some(tenant) = tenant {
        sqlx::query("SELECT set_config('automate_e.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let mut query = sqlx::query(sql);
    if let Some(json) = json {
        query = query.bind(json);
    }
    let outcome = if sql.starts_with("SELECT") {
        query
            .fetch_all(&mut *tx)
            .await
            .map(|rows| (rows.iter().map(|r| r.get::<String, _>(0)).collect(), 0))
    } else {
        query
            .execute(&mut *tx)
            .await
            .map(|done| (Vec::new(), done.rows_affected()))
    };
    tx.rollback().await.unwrap();
    outcome
}

/// The rows `sql` shows the services' role with `tenant` set (or none).
async fn visible_rows(service: &Store, tenant: Option<TenantId>, sql: &str) -> Vec<String> {
    as_tenant(service, tenant, sql, None).await.unwrap().0
}

/// Asserts the database refused a write for row-level security.
fn assert_refused(outcome: Result<(Vec<String>, u64), sqlx::Error>, what: &str) {
    match outcome {
        Err(e) => assert!(e.to_string().contains("row-level security"), "{what}: {e}"),
        Ok(done) => panic!("{what}: not refused ({done:?})"),
    }
}

/// Tries every write the services' role has on `table` against tenant
/// `b`'s rows while tenant `a` is set: each is refused or changes nothing.
async fn assert_writes_stay_home(
    db: &TestDb,
    service: &Store,
    table: &ServiceTable,
    column: &str,
    (a, b): (TenantId, TenantId),
) {
    let name = &table.name;
    if table.can_insert {
        // Beta's own row, written again while alpha is set.
        let columns = table.insertable.join(", ");
        let row: String = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM {name} t WHERE {column} = $1 LIMIT 1"
        ))
        .bind(b)
        .fetch_one(&db.owner)
        .await
        .unwrap();
        let copy = format!(
            "INSERT INTO {name} ({columns}) SELECT {columns} FROM json_populate_record(NULL::{name}, $1::json)"
        );
        assert_refused(
            as_tenant(service, Some(a), &copy, Some(&row)).await,
            &format!("{name}: alpha inserting beta's row"),
        );
    }
    for updatable in &table.updatable {
        let touch = format!("UPDATE {name} SET {updatable} = {updatable} WHERE {column} = '{b}'");
        let (_, changed) = as_tenant(service, Some(a), &touch, None).await.unwrap();
        assert_eq!(changed, 0, "{name}.{updatable}: alpha updated beta's rows");
    }
    if table.updatable.iter().any(|c| c == column) {
        let hand_over = format!("UPDATE {name} SET {column} = '{b}' WHERE {column} = '{a}'");
        assert_refused(
            as_tenant(service, Some(a), &hand_over, None).await,
            &format!("{name}: alpha handing its rows to beta"),
        );
    }
    if table.can_delete {
        let delete = format!("DELETE FROM {name} WHERE {column} = '{b}'");
        let (_, deleted) = as_tenant(service, Some(a), &delete, None).await.unwrap();
        assert_eq!(deleted, 0, "{name}: alpha deleted beta's rows");
    }
}

#[tokio::test]
async fn a_tenant_never_reads_or_changes_another_tenants_rows_even_through_wrong_queries() {
    TestDb::run(async |db| {
        let a = TenantId::from(db.seed_tenant("alpha", "slack", "TA", "*", "book-e").await);
        let b = TenantId::from(db.seed_tenant("beta", "slack", "TB", "*", "book-e").await);
        db.seed_review_policy(a.0, "CA", 0, &["WA"]).await;
        db.seed_review_policy(b.0, "CB", 0, &["WB"]).await;
        db.seed_member(a.0, "slack", "user", "WA", Some("ann"))
            .await;
        db.seed_member(b.0, "slack", "user", "WB", Some("bo")).await;
        for tenant in [a.0, b.0] {
            sqlx::query(
                "INSERT INTO tenant_review_windows (tenant_id, tool, hours) VALUES ($1, '*', 48)",
            )
            .bind(tenant)
            .execute(&db.owner)
            .await
            .expect("a review window");
        }
        let service = db.service_store().await;
        let (store_a, store_b) = (service.tenant(a), service.tenant(b));
        let (a_inbox, a_conversation) = seed_activity(&store_a, "alpha").await;
        let (b_inbox, b_conversation) = seed_activity(&store_b, "beta").await;
        seed_proposal(db, a, a_inbox, a_conversation).await;
        seed_proposal(db, b, b_inbox, b_conversation).await;
        for store in [&store_a, &store_b] {
            store
                .trigger_cursor("report-e", std::time::Duration::from_secs(60))
                .await
                .expect("a cursor row");
        }

        let tables = service_tables(db).await;
        let operator: Vec<&str> = tables
            .iter()
            .filter(|t| t.tenant_column.is_none())
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(operator, OPERATOR_TABLES, "tables without a tenant column");
        for table in tables.iter().filter(|t| t.tenant_column.is_some()) {
            let (name, column) = (&table.name, table.tenant_column.as_deref().unwrap());
            assert!(table.row_security, "{name} has no row-level security");
            // No filter at all: only the own tenant's rows come back.
            let all = format!("SELECT {column}::text FROM {name}");
            let seen = visible_rows(&service, Some(a), &all).await;
            assert!(
                seen.iter().all(|t| *t == a.to_string()),
                "{name}: tenant alpha saw {seen:?}"
            );
            // Asking for the other tenant by name: nothing.
            let other = format!("SELECT {column}::text FROM {name} WHERE {column} = '{b}'");
            assert_eq!(
                visible_rows(&service, Some(a), &other).await,
                Vec::<String>::new(),
                "{name}"
            );
            // No tenant set: nothing at all (fails closed).
            assert_eq!(
                visible_rows(&service, None, &all).await,
                Vec::<String>::new(),
                "{name} without a tenant"
            );
            // The tenant's own rows are there (the checks above can fail).
            let own = visible_rows(&service, Some(b), &all).await;
            assert!(!own.is_empty(), "{name}: beta's own rows");
            assert_writes_stay_home(db, &service, table, column, (a, b)).await;
        }

        // Functions that run as the owner (past row-level security) look
        // tenants up before one is known: none may write (a function that
        // is not volatile cannot) or be steered by the caller's search path.
        let definers: Vec<(String, String, Option<Vec<String>>)> = sqlx::query_as(
            "SELECT p.proname::text, p.provolatile::text, p.proconfig FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'public' AND p.prosecdef \
               AND has_function_privilege('automate_e_service', p.oid, 'EXECUTE') ORDER BY 1",
        )
        .fetch_all(&db.owner)
        .await
        .unwrap();
        assert!(!definers.is_empty(), "the tenant look-ups are definers");
        for (name, volatility, config) in definers {
            assert_ne!(
                volatility, "v",
                "{name} could write past row-level security"
            );
            assert!(
                config
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.starts_with("search_path=")),
                "{name} runs on the caller's search path"
            );
        }

        // Through the store: alpha cannot load beta's message, facts or history.
        assert!(matches!(
            store_a.inbox_message(b_inbox).await,
            Err(StoreError::NotFound(_))
        ));
        let memory = HashMap::new();
        let start = turn_start(b_inbox, "w", None, &memory, &[]);
        assert!(matches!(
            store_a.start_turn(&start).await,
            Err(StoreError::NotFound(_))
        ));
        let started = store_b.start_turn(&start).await.unwrap();
        assert_eq!(
            started.context.expect("beta's turn starts").pending.len(),
            1
        );
    })
    .await;
}

/// Two companies on one worker: each turn's prompt holds its own tenant's
/// brief, facts and history, never the other's.
#[tokio::test]
async fn each_tenants_turn_sees_only_its_own_brief_facts_and_history() {
    run_test(async |t| {
        let acme: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'acme'")
            .fetch_one(&t.db.owner)
            .await
            .unwrap();
        let beta =
            t.db.seed_tenant("beta", "slack", "T222", "*", "book-e")
                .await;
        for (tenant, brief, fact) in [
            (
                acme,
                "Acme AS sells bicycles.",
                "Acme owner prefers short answers",
            ),
            (beta, "Beta AS runs a bakery.", "Beta owner banks with DNB"),
        ] {
            sqlx::query("UPDATE tenants SET brief = $2 WHERE id = $1")
                .bind(tenant)
                .bind(brief)
                .execute(&t.db.owner)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO user_facts (tenant_id, platform, user_id, fact) VALUES ($1, 'slack', 'W111', $2)",
            )
            .bind(tenant)
            .bind(fact)
            .execute(&t.db.owner)
            .await
            .unwrap();
        }
        t.openai.when_empty(Scripted::Text("Noted.".into()));
        let message = |team: &str, ts: &str, text: &str| {
            fixture("slack/event_callback.message.json")
                .replace(FIXTURE_TEAM, team)
                .replace("Ev111", &format!("Ev{}", ts.replace('.', "")))
                .replace("1596183880.004200", ts)
                .replace("Hello World!", text)
        };
        // Beta talks first (its history), then the same user id in Acme.
        assert_eq!(
            t.post_slack_event(&message(
                "T222",
                "1700000000.000100",
                "Beta ledger code 4242"
            ))
            .await,
            200
        );
        t.wait_for_posts(1).await;
        assert_eq!(
            t.post_slack_event(&message(
                FIXTURE_TEAM,
                "1700000001.000100",
                "Hello from Acme"
            ))
            .await,
            200
        );
        t.wait_for_posts(2).await;

        let requests = t.openai.requests();
        let prompt_with = |needle: &str| {
            requests
                .iter()
                .find(|r| r.to_string().contains(needle))
                .unwrap_or_else(|| panic!("no model request holds `{needle}`"))
                .to_string()
        };
        let acme_prompt = prompt_with("Hello from Acme");
        let beta_prompt = prompt_with("Beta ledger code 4242");
        for own in [
            "Acme AS sells bicycles.",
            "Acme owner prefers short answers",
        ] {
            assert!(acme_prompt.contains(own), "acme's prompt lacks {own}");
        }
        for foreign in ["Beta AS", "DNB", "4242"] {
            assert!(
                !acme_prompt.contains(foreign),
                "acme's prompt holds {foreign}"
            );
        }
        assert!(beta_prompt.contains("Beta owner banks with DNB"));
        assert!(!beta_prompt.contains("Acme"));
        t.slack.take_posted();
    })
    .await;
}
