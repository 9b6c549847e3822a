//! Limits and give-ups: dead letters (the user is told, an operator lists,
//! inspects and replays), the model's Retry-After, daily token budgets and
//! inbound rate limits.

use std::time::Duration;

use shared::engine::pace::RATE_LIMITED_REPLY;
use shared::engine::turn::TURN_FAILED_REPLY;
use tests::fake::openai::Scripted;
use tests::fake::rate_limits_waited_out;
use tests::load::SlackLoad;
use tests::{
    FIXTURE_CHANNEL, FIXTURE_TEAM, ServiceSettings, TestEnv, TestOptions, fixture, run_test,
    run_test_with,
};
use worker::config::RelayConfig;
use worker::manager::relay::Relay;

#[tokio::test]
async fn a_turn_out_of_attempts_tells_the_user_and_an_operator_can_replay_it() {
    run_test(async |t| {
        // The test worker makes 3 attempts.
        t.openai.script([
            Scripted::Error(500),
            Scripted::Error(502),
            Scripted::Error(500),
        ]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), [TURN_FAILED_REPLY]);
        let failed =
            t.db.event_payloads("automate_e.conversation.turn_failed.v1")
                .await;
        assert_eq!(failed.len(), 1);
        assert!(failed[0]["reason"].as_str().unwrap().contains("HTTP 500"));

        let store = t.db.service_store().await;
        let listed = worker::dead_jobs::command(&store, &t.queue, &["list".to_owned()])
            .await
            .unwrap();
        let dead = store.dead_jobs(true, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{listed}");
        let id = dead[0].id.to_string();
        assert!(listed.contains(&id) && listed.contains("turn"), "{listed}");
        let shown = worker::dead_jobs::command(&store, &t.queue, &["show".to_owned(), id.clone()])
            .await
            .unwrap();
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(shown["kind"], "turn");
        assert_eq!(shown["attempts"], 3);
        assert_eq!(shown["job"]["type"], "TurnV1");

        // The model is back; two operators replay the turn at once: one replay
        // goes on.
        t.openai.script([Scripted::Text("Her er svaret.".into())]);
        let replay = ["replay".to_owned(), id.clone()];
        let (first, second) = tokio::join!(
            worker::dead_jobs::command(&store, &t.queue, &replay),
            worker::dead_jobs::command(&store, &t.queue, &replay)
        );
        let (replayed, refused) = match (first, second) {
            (Ok(replayed), Err(refused)) | (Err(refused), Ok(replayed)) => (replayed, refused),
            other => panic!("one replay of two at once goes on: {other:?}"),
        };
        assert!(replayed.contains("~replay-"), "{replayed}");
        assert!(
            refused.to_string().contains("replayed already"),
            "{refused}"
        );
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Her er svaret."]);
        // The message is recorded once.
        assert_eq!(
            t.db.event_types("conversation-").await,
            [
                "automate_e.conversation.message_received.v1",
                "automate_e.conversation.turn_failed.v1",
                "automate_e.conversation.llm_called.v1",
                "automate_e.conversation.reply_composed.v1",
            ]
        );
        let again = worker::dead_jobs::command(&store, &t.queue, &["replay".to_owned(), id]).await;
        assert!(again.unwrap_err().to_string().contains("replayed"));
        assert!(store.dead_jobs(true, 10).await.unwrap().is_empty());
    })
    .await;
}

/// A reply whose channel is gone is dead-lettered and leaves the relay's
/// sweeps (before, it stayed their oldest undelivered reply for good, and a
/// sweep's batch of such replies kept newer lost ones from being re-queued);
/// a replay brings it back.
#[tokio::test]
async fn a_reply_that_cannot_be_delivered_leaves_the_relay_until_it_is_replayed() {
    run_test(async |t| {
        t.slack.set_channel_gone(FIXTURE_CHANNEL, true);
        t.openai.script([Scripted::Text("Her er svaret.".into())]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_idle().await;
        let store = t.db.service_store().await;
        let dead = store.dead_jobs(true, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].kind, "deliver");
        let relay = Relay::new(
            store.clone(),
            t.queue.clone(),
            RelayConfig {
                grace_ms: 0,
                ..RelayConfig::default()
            },
        );
        assert_eq!(given_up_replies(t).await, 1);
        assert_eq!(
            relay.sweep().await.unwrap().deliveries,
            0,
            "a reply given up is not re-queued"
        );

        // The bot is back in the channel; the operator replays the delivery.
        t.slack.set_channel_gone(FIXTURE_CHANNEL, false);
        let replay = ["replay".to_owned(), dead[0].id.to_string()];
        worker::dead_jobs::command(&store, &t.queue, &replay)
            .await
            .unwrap();
        assert_eq!(
            given_up_replies(t).await,
            0,
            "reopened before it was pushed: the relay covers it again"
        );
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Her er svaret."]);
        assert_eq!(relay.sweep().await.unwrap().deliveries, 0, "delivered");
    })
    .await;
}

async fn given_up_replies(t: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE given_up_at IS NOT NULL")
        .fetch_one(&t.db.owner)
        .await
        .unwrap()
}

/// A turn that fails before it records anything (a chat routed to an agent
/// that takes no chats fails for good at once) is given up with the message
/// and the failure both in the log.
#[tokio::test]
async fn a_turn_given_up_before_it_recorded_anything_records_the_message() {
    run_test(async |t| {
        let acme = t.db.tenant_id("acme").await;
        t.db.seed_route(acme, "slack", FIXTURE_TEAM, "CNOCHAT", "review-e")
            .await;
        let body = fixture("slack/event_callback.message.json").replace(FIXTURE_CHANNEL, "CNOCHAT");
        assert_eq!(t.post_slack_event(&body).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), [TURN_FAILED_REPLY]);
        assert!(t.openai.requests().is_empty());
        assert_eq!(
            t.db.event_types("conversation-").await,
            [
                "automate_e.conversation.message_received.v1",
                "automate_e.conversation.turn_failed.v1",
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn the_model_asking_to_wait_seven_seconds_is_not_asked_again_sooner() {
    // The backoff cap must exceed the wait asked for, or the cap wins.
    let settings = ServiceSettings {
        retry_max_ms: 10_000,
        ..ServiceSettings::default()
    };
    run_test_with(
        TestOptions {
            settings,
            ..TestOptions::default()
        },
        async |t| {
            t.openai
                .script([Scripted::RateLimited(7), Scripted::Text("Svar.".into())]);
            assert_eq!(
                t.post_slack_event(&fixture("slack/event_callback.message.json"))
                    .await,
                200
            );
            t.wait_for_posts(1).await;
            assert_eq!(t.slack.take_texts(), ["Svar."]);
            let attempts = t.openai.attempts();
            assert_eq!(attempts.len(), 2);
            assert_eq!(attempts[0].retry_after, Some(Duration::from_secs(7)));
            assert_eq!(rate_limits_waited_out(&attempts), (1, true));
        },
    )
    .await;
}

async fn limit_tokens_per_day(t: &TestEnv, tokens: i64) {
    sqlx::query("UPDATE tenants SET llm_tokens_per_day = $1")
        .bind(tokens)
        .execute(&t.db.owner)
        .await
        .unwrap();
}

/// The tenants' recorded token usage, all days.
async fn tokens_used(t: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT sum(tokens)::bigint FROM tenant_llm_usage")
        .fetch_one(&t.db.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_spent_token_budget_gets_the_on_a_break_reply_without_a_model_call() {
    run_test(async |t| {
        limit_tokens_per_day(t, 100).await;
        t.openai.script([Scripted::Text("Første svar.".into())]);
        assert_eq!(t.post_slack_event(&SlackLoad::event(0, 0)).await, 200);
        t.wait_for_posts(1).await;
        assert_eq!(t.post_slack_event(&SlackLoad::event(1, 0)).await, 200);
        t.wait_for_posts(2).await;
        t.wait_idle().await;

        let posted = t.slack.take_posted();
        assert_eq!(posted[0].text, "Første svar.");
        let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap();
        assert!(
            posted[1]
                .text
                .contains(&format!("on a break until {tomorrow}")),
            "{}",
            posted[1].text
        );
        assert_eq!(t.openai.request_count(), 1, "no model call once spent");
        let used = tokens_used(t).await;
        assert_eq!(used, 150, "the fake model reports 120 + 30 tokens");
    })
    .await;
}

#[tokio::test]
async fn a_budget_spent_by_the_turns_own_first_call_stops_its_next_round() {
    run_test(async |t| {
        limit_tokens_per_day(t, 100).await;
        t.openai
            .script([Scripted::ToolThenEcho("get_bank_balances".into())]);
        assert_eq!(t.post_slack_event(&SlackLoad::event(0, 0)).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;

        let posted = t.slack.take_posted();
        assert!(
            posted[0].text.contains("on a break until"),
            "{}",
            posted[0].text
        );
        assert_eq!(
            t.openai.request_count(),
            1,
            "the tool round's 150 tokens spend the budget of 100 within the turn"
        );
        let used = tokens_used(t).await;
        assert_eq!(used, 150, "added with the turn's end");
    })
    .await;
}

#[tokio::test]
async fn a_user_over_the_inbound_limit_is_told_once_and_nothing_is_recorded() {
    run_test_with(
        TestOptions {
            settings: ServiceSettings {
                user_per_minute: 2,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            t.openai
                .script([Scripted::Text("En.".into()), Scripted::Text("To.".into())]);
            for c in 0..4 {
                assert_eq!(t.post_slack_event(&SlackLoad::event(c, 0)).await, 200);
            }
            t.wait_for_posts(3).await;
            t.wait_idle().await;

            assert_eq!(
                t.db.count("inbox").await,
                2,
                "messages over the limit are not recorded"
            );
            let posted = t.slack.take_posted();
            let notices = posted
                .iter()
                .filter(|p| p.text == RATE_LIMITED_REPLY)
                .count();
            assert_eq!(notices, 1, "told once, not per message: {posted:?}");
            assert_eq!(posted.len(), 3);
        },
    )
    .await;
}

#[tokio::test]
async fn a_history_of_forty_longest_messages_is_cut_to_fit_the_model() {
    run_test(async |t| {
        t.openai.script([Scripted::Text("Hei.".into())]);
        let first = fixture("slack/event_callback.message.json");
        assert_eq!(t.post_slack_event(&first).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        t.slack.take_posted();
        // Forty of the longest messages a chat allows (40,000 characters).
        let acme = t.db.tenant_id("acme").await;
        let conversation = t.db.last_conversation(acme).await;
        sqlx::query(
            r#"INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind,
                                  actor_id, payload_schema, payload, source)
               SELECT gen_random_uuid(), $1, 'conversation-' || $2, last.version + g,
                      'automate_e.conversation.message_received.v1', now(), 'user', 'W111',
                      'seed', jsonb_build_object('inbox_id', gen_random_uuid(),
                      'conversation_id', $2, 'text', g || repeat('x', 39990),
                      'attachments', '[]'::jsonb), 'test'
               FROM (SELECT max(version) AS version FROM events
                     WHERE stream = 'conversation-' || $2) last, generate_series(1, 40) g"#,
        )
        .bind(acme)
        .bind(conversation)
        .execute(&t.db.owner)
        .await
        .unwrap();

        t.openai.script([Scripted::Text("Fortsatt her.".into())]);
        let follow_up = first
            .replace(
                r#""ts": "1596183880.004200""#,
                r#""ts": "1596183990.000100", "thread_ts": "1596183880.004200""#,
            )
            .replace("Hello World!", "Og nå?");
        assert_eq!(t.post_slack_event(&follow_up).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Fortsatt her."]);
        let request = &t.openai.requests()[1];
        let messages = request["messages"].as_array().unwrap();
        let history_chars: usize = messages[1..messages.len() - 1]
            .iter()
            .filter_map(|m| m["content"].as_str())
            .map(|c| c.chars().count())
            .sum();
        assert!(
            history_chars <= 48_000,
            "{history_chars} characters of history"
        );
        assert!(
            history_chars > 40_000,
            "the newest history is kept: {history_chars}"
        );
        let newest = messages[messages.len() - 2]["content"].as_str().unwrap();
        assert!(
            newest.starts_with("40x"),
            "the newest seeded message, whole"
        );
        assert_eq!(messages.last().unwrap()["content"], "Og nå?");
    })
    .await;
}

/// A replay that stopped between reopening a delivery and pushing its job
/// (the operator's process killed there) leaves the reply open: the relay
/// pushes it, under a fresh task id since the dead job's is spent.
#[tokio::test]
async fn a_replay_stopped_before_its_push_is_finished_by_the_relay() {
    run_test(async |t| {
        t.slack.set_channel_gone(FIXTURE_CHANNEL, true);
        t.openai.script([Scripted::Text("Her er svaret.".into())]);
        let body = fixture("slack/event_callback.message.json");
        assert_eq!(t.post_slack_event(&body).await, 200);
        t.wait_idle().await;
        let store = t.db.service_store().await;
        let dead = store.dead_jobs(true, 10).await.unwrap();
        assert_eq!(dead[0].kind, "deliver", "{dead:?}");
        t.slack.set_channel_gone(FIXTURE_CHANNEL, false);

        // What `worker dead replay` does before its push.
        assert!(
            store
                .mark_dead_job_replayed(dead[0].id, "stopped~replay")
                .await
                .unwrap()
        );
        let tenant = shared::ids::TenantId::from(t.db.tenant_id("acme").await);
        let outbox = shared::ids::OutboxId::from(dead[0].subject.expect("its outbox row"));
        assert!(
            store
                .tenant(tenant)
                .set_delivery_given_up(outbox, false)
                .await
                .unwrap()
        );

        let relay = Relay::new(
            store.clone(),
            t.queue.clone(),
            RelayConfig {
                grace_ms: 0,
                ..RelayConfig::default()
            },
        );
        assert_eq!(relay.sweep().await.unwrap().deliveries, 1);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Her er svaret."]);
        assert_eq!(relay.sweep().await.unwrap().deliveries, 0, "delivered");
    })
    .await;
}
