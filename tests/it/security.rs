//! Who may reach and change what: the database's own guards (the services'
//! columns, who may connect, keys kept per tenant, one review channel per
//! company) and the writes executed exactly as approved.

use serde_json::json;
use shared::engine::review::APPROVE_ACTION;
use shared::ids::TenantId;
use tests::db::TestDb;
use tests::fake::openai::Scripted;
use tests::{ACME, REVIEW_CHANNEL, TestOptions, fixture, run_test_with};

#[tokio::test]
async fn the_services_cannot_change_what_a_proposal_writes() {
    TestDb::run(async |db| {
        let service = db.service_store().await;
        for (column, value) in [
            ("request", "'{}'::jsonb"),
            ("payload_sha256", "repeat('b', 64)"),
            ("tool", "'pay_everything'"),
            ("proposer", "'slack:W999'"),
        ] {
            let refused = sqlx::query(&format!("UPDATE proposals SET {column} = {value}"))
                .execute(service.pool())
                .await
                .expect_err(column);
            assert!(
                refused.to_string().contains("permission denied"),
                "{column}: {refused}"
            );
        }
        // What the services do change, they may.
        sqlx::query("UPDATE proposals SET state = state, stream_version = stream_version")
            .execute(service.pool())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_login_that_is_not_the_services_cannot_connect_to_the_database() {
    TestDb::run(async |db| {
        sqlx::query(
            "DO $$ BEGIN CREATE ROLE automate_e_test_stranger LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .execute(&db.owner)
        .await
        .unwrap();
        let refused = sqlx::PgPool::connect(&db.url_as("automate_e_test_stranger"))
            .await
            .expect_err("a stranger's login");
        assert!(
            refused
                .to_string()
                .contains("permission denied for database"),
            "{refused}"
        );
        assert!(sqlx::PgPool::connect(&db.service_url()).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn dedupe_keys_are_each_tenants_own() {
    TestDb::run(async |db| {
        let a = TenantId::from(db.seed_tenant("alpha", "slack", "TA", "*", "book-e").await);
        let b = TenantId::from(db.seed_tenant("beta", "slack", "TB", "*", "book-e").await);
        let service = db.service_store().await;
        for tenant in [a, b] {
            let event = shared::access::store::NewEvent {
                tenant_id: tenant,
                type_name: "automate_e.test.thing_happened.v1",
                payload: json!({}),
                actor: shared::event::Actor {
                    kind: shared::event::ActorKind::System,
                    id: "test".into(),
                },
                occurred_at: chrono::Utc::now(),
                dedupe_key: Some("the-same-key".into()),
                correlation_id: None,
                causation_id: None,
                trace_id: None,
                source: "test",
            };
            service
                .tenant(tenant)
                .append(&format!("test-{tenant}"), 0, &[event])
                .await
                .unwrap();
        }
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE dedupe_key = 'the-same-key'")
                .fetch_one(&db.owner)
                .await
                .unwrap();
        assert_eq!(
            stored, 2,
            "one tenant's key does not swallow the other's event"
        );
    })
    .await;
}

#[tokio::test]
async fn one_review_channel_belongs_to_one_company() {
    TestDb::run(async |db| {
        let a = db.seed_tenant("alpha", "slack", "TA", "*", "book-e").await;
        let b = db.seed_tenant("beta", "slack", "TB", "*", "book-e").await;
        db.seed_review_policy(a, "CREVIEW", 0, &[]).await;
        let shared = sqlx::query("UPDATE tenants SET review_channel = 'CREVIEW' WHERE id = $1")
            .bind(b)
            .execute(&db.owner)
            .await
            .expect_err("a second company in the same review channel");
        assert!(
            shared.to_string().contains("tenants_review_channel"),
            "{shared}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_approved_proposal_whose_writes_were_changed_is_not_sent() {
    let options = TestOptions {
        worker_later: true,
        ..TestOptions::default()
    };
    run_test_with(options, async |t| {
        let args = json!({"merchant": "Adobe", "body": {"date": "2026-11-20", "kind": "cash_purchase",
            "paid": true, "currency": "NOK", "paymentAccount": "1920:10001",
            "lines": [{"description": "Creative Cloud", "netPrice": 15920, "vat": 3980,
                       "account": "6810", "vatType": "HIGH"}]}});
        t.openai.script([
            Scripted::tool_call("register_purchase", &args.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai.script_for(
            "Review-E",
            [Scripted::Text(r#"{"verdict": "approve", "notes": "Ok."}"#.into())],
        );
        t.start_worker().await;
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json")).await,
            200
        );
        t.wait_for_cards(1).await;
        t.wait_until("the reply and Review-E's note", || async {
            t.slack.posted_count() >= 2
        })
        .await;
        t.slack.take_posted();
        let card = t.slack.take_cards().remove(0);
        // Someone with the owner's rights rewrites the approved writes.
        sqlx::query(
            "UPDATE proposals SET request = jsonb_set(request, \
             '{steps,0,request,body,lines,0,netPrice}', '9900000')",
        )
        .execute(&t.db.owner)
        .await
        .unwrap();
        let value = card.approve_value();
        assert_eq!(t.click("W222", APPROVE_ACTION, &value).await, 200);
        t.wait_for_proposal("execution_failed").await;
        t.wait_idle().await;
        assert_eq!(t.accounting.writes(ACME), 0, "nothing sent");
        assert!(
            t.accounting.take_requests().iter().all(|r| r.method == "GET"),
            "no write attempted"
        );
        let failed = t.db.event_payloads("automate_e.proposal.execution_failed.v1").await;
        assert_eq!(failed[0]["error"], "the writes differ from the ones approved");
        t.wait_for_posts(2).await;
        let told = t.slack.take_posted();
        assert!(told.iter().any(|p| p.channel == REVIEW_CHANNEL), "{told:?}");
        assert_eq!(t.slack.take_updates().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_proposal_resting_on_long_reads_and_odd_text_still_gets_its_card_shown_literally() {
    tests::run_test(async |t| {
        for n in 0..3 {
            t.accounting.add_purchase(
                ACME,
                json!({"date": format!("2026-11-0{}", n + 1), "kind": "cash_purchase", "paid": true, "currency": "NOK",
                       "lines": [{"description": "x".repeat(400), "netPrice": 100, "vatType": "HIGH"}]}),
            );
        }
        let reads = (0..5)
            .map(|_| ("list_purchases".to_owned(), "{}".to_owned()))
            .collect();
        let args = json!({"merchant": "<!channel> Adobe", "body": {"date": "2026-11-20",
            "kind": "cash_purchase", "paid": true, "currency": "NOK", "paymentAccount": "1920:10001",
            "lines": [{"description": "Creative Cloud\n• *account*: 1920", "netPrice": 15920,
                       "vat": 3980, "account": "6810", "vatType": "HIGH"}]}});
        t.openai.script([
            Scripted::ToolCalls(reads),
            Scripted::tool_call("register_purchase", &args.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai.script_for(
            "Review-E",
            [Scripted::Text(r#"{"verdict": "flag", "notes": "<!here> approve it"}"#.into())],
        );
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json")).await,
            200
        );
        t.wait_for_cards(1).await;
        t.wait_until("the reply and Review-E's note", || async {
            t.slack.posted_count() >= 2
        })
        .await;
        let notes = t.slack.take_posted_in(REVIEW_CHANNEL);
        assert_eq!(notes[0].text, "Review-E (flagged): &lt;!here&gt; approve it");
        t.slack.take_posted();
        let card = t.slack.take_cards().remove(0);
        let shown = card.blocks.to_string();
        assert!(shown.contains("&lt;!channel&gt; Adobe"), "{shown}");
        assert!(shown.contains("Creative Cloud • *account*: 1920"), "{shown}");
        assert!(!shown.contains("<!channel>") && !shown.contains("<!here>"));
        assert_eq!(t.proposals().await[0].1, "review_requested");
    })
    .await;
}

#[tokio::test]
async fn a_nul_character_from_a_chat_or_the_model_is_dropped_and_never_a_server_error() {
    tests::run_test(async |t| {
        t.openai.script([
            Scripted::tool_call(
                "remember_fact",
                r#"{"fact": "Runs a bakery\u0000 in Bergen."}"#,
            ),
            Scripted::Text("Notert\u{0}.".into()),
        ]);
        let body = fixture("slack/event_callback.message.json")
            .replace("Hello World!", "Husk\\u0000 bakeriet");
        assert_eq!(t.post_slack_event(&body).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Notert."]);
        let asked = t.openai.requests()[0]["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"]
            .clone();
        assert_eq!(asked, "Husk bakeriet");
        let facts: Vec<String> = sqlx::query_scalar("SELECT fact FROM user_facts")
            .fetch_all(&t.db.owner)
            .await
            .unwrap();
        assert_eq!(facts, ["Runs a bakery in Bergen."]);
    })
    .await;
}
