//! Nothing lost: Postgres is the system of record; the relay brings back
//! jobs that Redis lost.

use shared::job::QueueName;
use tests::fake::openai::Scripted;
use tests::load::SlackLoad;
use tests::{
    QUEUE_DEPTH_TOKEN, ServiceSettings, TELEGRAM_SECRET, TestEnv, TestOptions, fixture, run_test,
    run_test_with,
};

#[tokio::test]
async fn a_message_accepted_before_redis_lost_its_queue_is_answered_once() {
    run_test_with(
        TestOptions {
            worker_later: true,
            settings: ServiceSettings {
                relay_grace_ms: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            t.openai.script([Scripted::Text("Fortsatt her.".into())]);
            assert_eq!(
                t.post_slack_event(&fixture("slack/event_callback.message.json"))
                    .await,
                200
            );
            let depth = t.queue.depth(QueueName::Worker).await.unwrap();
            assert_eq!(depth.backlog(), 1, "the accepted message's job is queued");

            // Redis restarts without persistence before any worker took the job.
            t.wipe_redis().await;
            assert_eq!(t.queue.depth(QueueName::Worker).await.unwrap().backlog(), 0);

            t.start_worker().await;
            t.wait_for_posts(1).await;
            t.wait_idle().await;
            assert_eq!(t.slack.take_texts(), ["Fortsatt her."]);
            assert_eq!(t.openai.request_count(), 1, "one turn");
        },
    )
    .await;
}

#[tokio::test]
async fn rapid_messages_of_one_author_are_folded_into_one_turn_in_order() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            t.openai.script([Scripted::Text("Alt i ett svar.".into())]);
            // Three quick messages from one author in one thread (arrival order 0, 2, 4;
            // messages 1 and 3 would be the other author's, and are not sent).
            for m in [0, 2, 4] {
                assert_eq!(t.post_slack_event(&SlackLoad::event(0, m)).await, 200);
            }
            t.start_worker().await;
            t.wait_for_posts(1).await;
            t.wait_idle().await;

            assert_eq!(t.slack.take_texts(), ["Alt i ett svar."]);
            let requests = t.openai.requests();
            assert_eq!(requests.len(), 1, "one turn for the three messages");
            let asked = requests[0]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned();
            let expected = [0, 2, 4].map(|m| SlackLoad::text(0, m)).join("\n\n");
            assert_eq!(asked, expected, "folded in arrival order");
            let received =
                t.db.conversation_texts("automate_e.conversation.message_received.v1")
                    .await;
            assert_eq!(
                received[&SlackLoad::root_ts(0)],
                [0, 2, 4].map(|m| SlackLoad::text(0, m))
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_conversations_replies_are_posted_in_the_order_they_were_written() {
    run_test(async |t| {
        t.openai.when_empty(Scripted::Echo);
        // The first reply's post is asked to wait longer than a delivery
        // waits inline: its job is retried later (1 s, the test's longest
        // backoff), and the second reply is written meanwhile.
        t.slack.rate_limit_next(1, 31);
        assert_eq!(t.post_slack_event(&SlackLoad::event(0, 0)).await, 200);
        t.wait_until("the first reply refused", || async {
            !t.slack.post_attempts().is_empty()
        })
        .await;
        assert_eq!(t.post_slack_event(&SlackLoad::event(0, 1)).await, 200);
        t.wait_for_posts(2).await;
        t.wait_idle().await;
        assert_eq!(
            t.slack.take_texts(),
            [0, 1].map(|m| format!("echo: {}", SlackLoad::text(0, m)))
        );
        let refused = t.slack.post_attempts()[0].retry_after;
        assert_eq!(refused, Some(std::time::Duration::from_secs(31)));
    })
    .await;
}

async fn queue_depth(t: &TestEnv) -> serde_json::Value {
    t.http
        .get(format!("{}/queue-depth", t.gateway_admin_url))
        .bearer_auth(QUEUE_DEPTH_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_queue_depth_endpoint_reports_the_real_backlog_pending_and_in_flight() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            t.openai.when_empty(Scripted::Echo);
            t.openai.set_latency(std::time::Duration::from_millis(1500));
            for c in 0..3 {
                assert_eq!(t.post_slack_event(&SlackLoad::event(c, 0)).await, 200);
            }
            let pending = queue_depth(t).await;
            assert_eq!(pending["worker"]["backlog"], 3, "{pending}");
            assert_eq!(pending["worker"]["due"], 3, "{pending}");
            // Prometheus sees the same backlog.
            let metrics = t.metrics_of(&t.gateway_admin_url).await;
            assert!(
                metrics.contains(r#"automate_e_queue_depth{queue="worker"} 3"#),
                "{metrics}"
            );
            // Without the token, or with another, the depth is not told.
            let url = format!("{}/queue-depth", t.gateway_admin_url);
            for request in [
                t.http.get(&url),
                t.http.get(&url).bearer_auth("not-the-token"),
            ] {
                assert_eq!(request.send().await.unwrap().status(), 401);
            }

            t.start_worker().await;
            t.wait_until("every turn running", || async {
                t.openai.request_count() >= 3
            })
            .await;
            let running = queue_depth(t).await;
            assert_eq!(running["worker"]["backlog"], 3, "{running}");
            assert_eq!(running["worker"]["in_flight"], 3, "{running}");
            let direct = t.queue.depth(QueueName::Worker).await.unwrap();
            assert_eq!(running["worker"]["backlog"], direct.backlog());

            t.wait_for_posts(3).await;
            t.wait_idle().await;
            let idle = queue_depth(t).await;
            assert_eq!(idle["worker"]["backlog"], 0, "{idle}");
            assert_eq!(idle["delivery"]["backlog"], 0, "{idle}");
            t.slack.take_posted();
        },
    )
    .await;
}

#[tokio::test]
async fn turn_jobs_pushed_together_are_each_queued_once() {
    use shared::ids::{InboxId, TenantId};
    use shared::job::{Job, WorkerJob};

    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            let turn = |n: u128| {
                Job::new(
                    TenantId(uuid::Uuid::from_u128(99)),
                    "",
                    WorkerJob::TurnV1 {
                        inbox_id: InboxId(uuid::Uuid::from_u128(n)),
                    },
                )
            };
            t.queue.enqueue(turn(1)).await.unwrap();
            // One push: a job already queued, two new ones, one of them twice.
            t.queue
                .enqueue_all(vec![turn(1), turn(2), turn(3), turn(3)])
                .await
                .unwrap();
            let depth = t.queue.depth(QueueName::Worker).await.unwrap();
            assert_eq!(depth.backlog(), 3, "{depth:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_reply_the_platform_accepted_is_not_sent_again_when_its_answer_cannot_be_read() {
    run_test(async |t| {
        t.slack.garble_next(1);
        t.openai.script([Scripted::Text("Slack-svar.".into())]);
        let slack = fixture("slack/event_callback.message.json");
        assert_eq!(t.post_slack_event(&slack).await, 200);
        t.wait_for_posts(1).await;

        t.telegram.garble_next(1);
        t.openai.script([Scripted::Text("Telegram-svar.".into())]);
        let telegram = fixture("telegram/update.message.private_command.json");
        let response = t
            .post_telegram_update(&telegram, Some(TELEGRAM_SECRET))
            .await;
        assert_eq!(response.status(), 200);
        t.wait_for_telegram_posts(1).await;

        t.discord.garble_next(1);
        t.openai.script([Scripted::Text("Discord-svar.".into())]);
        let discord: serde_json::Value =
            serde_json::from_str(&fixture("discord/gateway.MESSAGE_CREATE.json")).unwrap();
        assert_eq!(t.discord_message_create(&discord).await.label(), "accepted");
        t.wait_for_discord_posts(1).await;

        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Slack-svar."]);
        assert_eq!(t.telegram.take_posts()[..].len(), 1);
        assert_eq!(t.discord.take_posts()[..].len(), 1);
        assert_eq!(t.slack.post_attempts().len(), 1, "posted once");
        assert_eq!(t.telegram.post_attempts().len(), 1, "posted once");
        assert_eq!(t.discord.post_attempts().len(), 1, "posted once");
        let undelivered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(&t.db.owner)
                .await
                .unwrap();
        assert_eq!(undelivered, 0, "each delivery is recorded");
    })
    .await;
}

#[tokio::test]
async fn a_proposal_whose_card_job_redis_lost_still_gets_its_card() {
    run_test_with(
        TestOptions {
            settings: ServiceSettings {
                relay_grace_ms: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            let purchase = serde_json::json!({"merchant": "Adobe", "body": {"date": "2026-11-20",
                "kind": "cash_purchase", "paid": true, "currency": "NOK",
                "paymentAccount": "1920:10001", "lines": [{"description": "Creative Cloud",
                "netPrice": 15920, "vat": 3980, "account": "6810", "vatType": "HIGH"}]}});
            t.openai.script([
                Scripted::tool_call("register_purchase", &purchase.to_string()),
                Scripted::Text("Sendt til godkjenning.".into()),
            ]);
            t.openai.script_for(
                "Review-E",
                [Scripted::Text(
                    r#"{"verdict": "approve", "notes": "Ok."}"#.into(),
                )],
            );
            // The reply and the card meet a 429 for a minute: their jobs wait
            // in Redis, which then restarts empty.
            t.slack.rate_limit_next(2, 60);
            let body = fixture("slack/event_callback.message.json");
            assert_eq!(t.post_slack_event(&body).await, 200);
            t.wait_until("the reply and the card refused", || async {
                t.slack.post_attempts().len() >= 2
            })
            .await;
            t.wipe_redis().await;

            t.wait_for_cards(1).await;
            t.wait_for_posts(2).await; // the reply, and Review-E's note
            t.wait_idle().await;
            assert_eq!(t.slack.take_cards().len(), 1, "one card");
            let posted = t.slack.take_texts();
            assert!(
                posted.contains(&"Sendt til godkjenning.".to_owned()),
                "{posted:?}"
            );
            assert_eq!(t.proposals().await[0].1, "review_requested");
        },
    )
    .await;
}
