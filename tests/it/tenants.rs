//! Tenant isolation by row-level security, as the services' role: a query
//! that forgets its tenant filter, or names another tenant on purpose, sees
//! and changes nothing of that tenant; with no tenant set it sees nothing.

use chrono::Utc;
use shared::access::store::{
    NewAgentRun, NewEvent, NewMessageParams, RecordOutcome, Store, StoreError, TenantStore,
};
use shared::event::{Actor, ActorKind};
use shared::ids::{ConversationId, InboxId, Platform, TenantId};
use sqlx::Row;
use tests::db::TestDb;
use tests::fake::openai::Scripted;
use tests::{FIXTURE_TEAM, fixture, run_test};

/// Tables that hold tenant rows, with their tenant column.
const TENANT_TABLES: [(&str, &str); 12] = [
    ("tenants", "id"),
    ("tenant_routes", "tenant_id"),
    ("tenant_reviewers", "tenant_id"),
    ("conversations", "tenant_id"),
    ("inbox", "tenant_id"),
    ("outbox", "tenant_id"),
    ("events", "tenant_id"),
    ("proposals", "tenant_id"),
    ("tenant_llm_usage", "tenant_id"),
    ("user_facts", "tenant_id"),
    ("agent_runs", "tenant_id"),
    ("trigger_cursors", "tenant_id"),
];

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
    store.record_notice(&params, "a notice").await.unwrap();
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
         VALUES ($1, $2, $3, $4, 'register_expense', '{}', repeat('a', 64), 'slack:U1', 'proposed', 1)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant)
    .bind(conversation)
    .bind(inbox)
    .execute(&db.owner)
    .await
    .unwrap();
}

/// Counts every row of `table` in a transaction of the service role with
/// `tenant` set (or none): the deliberately unfiltered query.
async fn visible_rows(service: &Store, tenant: Option<TenantId>, sql: &str) -> Vec<String> {
    let mut tx = service.pool().begin().await.unwrap();
    if let Some(tenant) = tenant {
        sqlx::query("SELECT set_config('automate_e.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let rows = sqlx::query(sql).fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

#[tokio::test]
async fn a_tenant_never_reads_or_changes_another_tenants_rows_even_through_wrong_queries() {
    TestDb::run(async |db| {
        let a = TenantId::from(db.seed_tenant("alpha", "slack", "TA", "*", "book-e").await);
        let b = TenantId::from(db.seed_tenant("beta", "slack", "TB", "*", "book-e").await);
        db.seed_review_policy(a.0, "CA", 0, &["WA"]).await;
        db.seed_review_policy(b.0, "CB", 0, &["WB"]).await;
        let service = db.service_store().await;
        let (store_a, store_b) = (service.tenant(a), service.tenant(b));
        let (a_inbox, a_conversation) = seed_activity(&store_a, "alpha").await;
        let (b_inbox, b_conversation) = seed_activity(&store_b, "beta").await;
        seed_proposal(db, a, a_inbox, a_conversation).await;
        seed_proposal(db, b, b_inbox, b_conversation).await;
        store_b
            .trigger_cursor("report-e", std::time::Duration::from_secs(60))
            .await
            .expect("a cursor row for beta");

        for (table, column) in TENANT_TABLES {
            // No filter at all: only the own tenant's rows come back.
            let all = format!("SELECT {column}::text FROM {table}");
            let seen = visible_rows(&service, Some(a), &all).await;
            assert!(
                seen.iter().all(|t| *t == a.to_string()),
                "{table}: tenant alpha saw {seen:?}"
            );
            // Asking for the other tenant by name: nothing.
            let other = format!("SELECT {column}::text FROM {table} WHERE {column} = '{b}'");
            assert_eq!(
                visible_rows(&service, Some(a), &other).await,
                Vec::<String>::new(),
                "{table}"
            );
            // No tenant set: nothing at all (fails closed).
            assert_eq!(
                visible_rows(&service, None, &all).await,
                Vec::<String>::new(),
                "{table} without a tenant"
            );
            // The tenant's own rows are there (the checks above can fail).
            let own = visible_rows(&service, Some(b), &all).await;
            assert!(!own.is_empty(), "{table}: beta's own rows");
        }

        // Writing into the other tenant is refused or touches nothing.
        let mut tx = service.pool().begin().await.unwrap();
        sqlx::query("SELECT set_config('automate_e.tenant_id', $1, true)")
            .bind(a.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let changed = sqlx::query("UPDATE inbox SET processed_at = now() WHERE tenant_id = $1")
            .bind(b)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(changed, 0);
        let forged = sqlx::query(
            "INSERT INTO user_facts (tenant_id, platform, user_id, fact) VALUES ($1, 'slack', 'U1', 'forged')",
        )
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap_err();
        assert!(
            forged.to_string().contains("row-level security"),
            "{forged}"
        );
        tx.rollback().await.unwrap();

        // Through the store: alpha cannot load beta's message, facts or history.
        assert!(matches!(
            store_a.inbox_message(b_inbox).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store_a
                .user_facts(Platform::Slack, "U1", None, 100)
                .await
                .unwrap()
                .iter()
                .all(|f| !f.contains("beta"))
        );
        assert_eq!(
            store_a
                .pending_messages(b_conversation, 10)
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            store_b
                .pending_messages(b_conversation, 10)
                .await
                .unwrap()
                .len(),
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
