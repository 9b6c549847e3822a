//! How a turn copes with tool errors, model outages and a model that will not
//! stop calling tools: errors are fed back, retries stay exactly-once.

use serde_json::Value;
use shared::engine::turn::ROUND_LIMIT_REPLY;
use shared::job::QueueName;
use tests::fake::openai::Scripted;
use tests::{ServiceSettings, TestEnv, TestOptions, fixture, run_test, run_test_with};

/// The tool results the model was given in its `n`-th request.
fn tool_results(t: &TestEnv, n: usize) -> Vec<Value> {
    t.openai.requests()[n]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| serde_json::from_str(m["content"].as_str().unwrap()).unwrap())
        .collect()
}

/// Posts the fixture Slack message.
async fn send(t: &TestEnv) {
    assert_eq!(
        t.post_slack_event(&fixture("slack/event_callback.message.json"))
            .await,
        200
    );
}

/// Posts the fixture Slack message and waits for the reply.
async fn ask(t: &TestEnv) {
    send(t).await;
    t.wait_for_posts(1).await;
    t.wait_idle().await;
}

#[tokio::test]
async fn tool_errors_are_fed_back_to_the_model() {
    run_test(async |t| {
        t.accounting
            .respond_next(500, r#"{"error":"database down"}"#.into());
        t.accounting
            .respond_next(200, format!("[\"{}\"]", "x".repeat(2 * 1024 * 1024)));
        t.openai.script([
            Scripted::tool_call("list_purchases", r#"{"dateGe": 20261101}"#),
            Scripted::tool_call("list_invoices", "{}"),
            Scripted::tool_call("list_purchases", "{}"),
            Scripted::UnofferedToolCall("delete_everything".into()),
            Scripted::Text("Beklager, regnskapet svarer ikke nå.".into()),
        ]);
        ask(t).await;

        let results = tool_results(t, 4);
        assert_eq!(results.len(), 4);
        let refused = results[0]["error"].as_str().unwrap();
        assert!(
            refused.contains("arguments.dateGe") && refused.contains("\"string\""),
            "{refused}"
        );
        assert_eq!(results[1]["status"], 500);
        assert!(results[1]["error"].is_string());
        assert!(
            results[2]["error"]
                .as_str()
                .unwrap()
                .contains("larger than"),
            "{}",
            results[2]
        );
        assert!(
            results[3]["error"]
                .as_str()
                .unwrap()
                .contains("no tool named `delete_everything`")
        );
        let calls = t.accounting.take_requests();
        assert_eq!(
            calls.iter().map(|c| c.uri.as_str()).collect::<Vec<_>>(),
            [
                "/api/v2/companies/acme/invoices?page=0&pageSize=100",
                "/api/v2/companies/acme/purchases?page=0&pageSize=100"
            ]
        );
        let outcomes: Vec<Value> =
            t.db.event_payloads("automate_e.conversation.tool_called.v1")
                .await
                .into_iter()
                .map(|p| p["outcome"].clone())
                .collect();
        assert_eq!(outcomes, ["refused", "http_error", "failed", "refused"]);
        assert_eq!(
            t.slack.take_texts(),
            ["Beklager, regnskapet svarer ikke nå."]
        );
    })
    .await;
}

#[tokio::test]
async fn tool_rounds_are_bounded() {
    run_test(async |t| {
        // Book-E allows 5 model rounds; the model asks for a tool every time.
        t.openai
            .script((0..5).map(|_| Scripted::tool_call("get_bank_balances", "{}")));
        ask(t).await;
        assert_eq!(t.slack.take_texts(), [ROUND_LIMIT_REPLY]);
        assert_eq!(t.openai.request_count(), 5);
        assert_eq!(
            t.accounting.take_requests().len(),
            4,
            "the last round's calls are not run"
        );
    })
    .await;
}

#[tokio::test]
async fn a_model_outage_is_retried_and_the_message_answered_once() {
    run_test(async |t| {
        t.openai.script([
            Scripted::Error(503),
            Scripted::Error(429),
            Scripted::Text("Der er jeg.".into()),
        ]);
        ask(t).await;
        assert_eq!(t.slack.take_texts(), ["Der er jeg."]);
        assert_eq!(t.openai.request_count(), 3);
        assert_eq!(
            t.db.event_types("conversation-").await,
            [
                "automate_e.conversation.message_received.v1",
                "automate_e.conversation.llm_called.v1",
                "automate_e.conversation.reply_composed.v1",
            ]
        );
    })
    .await;
}

/// A read's model call is recorded with the turn's end; a turn that fails
/// before it records what it did on its own, so the log keeps the failed
/// attempt's call and read, and the retried turn records the message once.
#[tokio::test]
async fn a_turn_that_fails_after_a_read_keeps_its_steps_in_the_log() {
    run_test(async |t| {
        t.openai.script([
            Scripted::tool_call("get_bank_balances", "{}"),
            Scripted::Error(503),
            Scripted::Text("Saldoen er 100 kr.".into()),
        ]);
        ask(t).await;
        assert_eq!(t.slack.take_texts(), ["Saldoen er 100 kr."]);
        assert_eq!(t.accounting.take_requests().len(), 1);
        assert_eq!(
            t.db.event_types("conversation-").await,
            tests::ONE_READ_TURN_EVENTS
        );
    })
    .await;
}

/// A turn whose message is answered by another writer while it runs ends
/// without a reply, and still records what it did.
#[tokio::test]
async fn a_turn_whose_message_was_answered_meanwhile_keeps_its_steps_in_the_log() {
    run_test(async |t| {
        t.openai.set_latency(std::time::Duration::from_millis(1500));
        t.openai.script([
            Scripted::tool_call("get_bank_balances", "{}"),
            Scripted::Text("Saldoen er 100 kr.".into()),
        ]);
        send(t).await;
        // The second model call has begun: the message is answered elsewhere.
        t.wait_until("the second model call", || async {
            t.openai.request_count() == 2
        })
        .await;
        sqlx::query("UPDATE inbox SET processed_at = now()")
            .execute(&t.db.owner)
            .await
            .unwrap();
        t.wait_idle().await;
        assert!(t.slack.take_posted().is_empty());
        assert_eq!(
            t.db.event_types("conversation-").await,
            tests::ONE_READ_TURN_EVENTS[..4]
        );
    })
    .await;
}

/// A turn whose lease was taken over stops before its next model call
/// (its reads need no fence, but its end would be refused), and the retried
/// job answers once the lease is free again.
#[tokio::test]
async fn a_turn_whose_lease_was_taken_over_stops_calling_the_model() {
    run_test_with(
        TestOptions {
            settings: ServiceSettings {
                lease_ttl_ms: 1_500,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            t.openai.set_latency(std::time::Duration::from_millis(700));
            t.openai.script(
                (0..4)
                    .map(|_| Scripted::tool_call("get_bank_balances", "{}"))
                    .chain([Scripted::Text("Saldoen er 100 kr.".into())]),
            );
            send(t).await;
            t.wait_until("the first model call", || async {
                !t.openai.requests().is_empty()
            })
            .await;
            let take_over = "UPDATE conversations SET lease_fence = nextval('lease_fences'), \
                         lease_holder = 'another-worker', lease_until = now() + interval '1 hour'";
            sqlx::query(take_over).execute(&t.db.owner).await.unwrap();
            // Five rounds would take 3.5 s; the renewal notices within 0.5 s,
            // and the job goes back to the queue for a later attempt.
            t.wait_until("the turn to hand its job back", || async {
                t.queue.depth(QueueName::Worker).await.unwrap().delayed == 1
            })
            .await;
            let calls = t.openai.request_count();
            assert!(calls <= 3, "{calls} model calls under a lost lease");
            assert!(t.slack.take_posted().is_empty());

            sqlx::query("UPDATE conversations SET lease_until = NULL, lease_holder = NULL")
                .execute(&t.db.owner)
                .await
                .unwrap();
            t.wait_for_posts(1).await;
            assert_eq!(t.slack.take_texts(), ["Saldoen er 100 kr."]);
        },
    )
    .await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_to_operators_only() {
    run_test(async |t| {
        t.openai.script([Scripted::Text("Hei.".into())]);
        ask(t).await;
        t.slack.take_posted();
        let get = async |url: String| {
            let response = t.http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        };
        assert_eq!(
            get(format!("{}/healthz", t.gateway_url)).await,
            (200, "ok".into())
        );
        let admin = &t.gateway_admin_url;
        assert_eq!(get(format!("{admin}/readyz")).await, (200, "ready".into()));
        // The webhook port, the one on the internet, serves none of them.
        for path in ["/readyz", "/metrics", "/queue-depth"] {
            assert_eq!(
                get(format!("{}{path}", t.gateway_url)).await.0,
                404,
                "{path}"
            );
        }
        let metrics = t.metrics_of(admin).await;
        assert!(
            metrics.contains("automate_e_messages_total{channel=\"slack\",outcome=\"accepted\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("automate_e_replies_delivered_total"),
            "{metrics}"
        );
    })
    .await;
}

/// How long a woken consumer's job may take at most to show its effect in
/// these tests: ample for a debug build, a fraction of apalis' heartbeat
/// period (`HEARTBEAT_INTERVAL`). An idle consumer that misses an
/// announcement still fetches with its next heartbeat, up to that period
/// later, so a test waiting longer could not tell a wake-up from it.
pub(crate) const WOKEN_WITHIN: std::time::Duration = std::time::Duration::from_millis(1500);

/// How many consumers listen for announcements of pushes to `queue`.
pub(crate) async fn woken_consumers(t: &TestEnv, queue: QueueName) -> i64 {
    let client = redis::Client::open(tests::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = t.queue.wake_channel(queue);
    let (_, listening): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    listening
}

#[tokio::test]
async fn a_message_is_answered_without_waiting_for_a_poll() {
    run_test_with(
        TestOptions {
            settings: ServiceSettings {
                // Nobody polls within the test's time: only a wake-up answers.
                poll_interval_ms: 600_000,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            t.wait_until("the consumers listening", || async {
                woken_consumers(t, QueueName::Worker).await >= 1
                    && woken_consumers(t, QueueName::Delivery).await >= 1
            })
            .await;
            // Three in a row: each missed announcement had about a third
            // of a chance to be covered by a heartbeat in time.
            for (n, answer) in ["Straks.", "Igjen.", "Og igjen."].into_iter().enumerate() {
                t.openai.script([Scripted::Text(answer.into())]);
                let body = fixture("slack/event_callback.message.json")
                    .replace("1596183880.004200", &format!("1596183880.00420{n}"));
                assert_eq!(t.post_slack_event(&body).await, 200);
                t.wait_for_posts_within(1, WOKEN_WITHIN).await;
                assert_eq!(t.slack.take_texts(), [answer]);
            }
            t.wait_idle().await;
        },
    )
    .await;
}
