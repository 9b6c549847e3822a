//! Discord, as owners use it: a message in a listened channel starts a thread
//! with the reply; follow-ups in the thread continue the conversation; long
//! replies arrive in order; bots are ignored; rate limits are waited out.

use gateway::manager::ingest::IngestOutcome;
use serde_json::{Value, json};
use tests::fake::discord::{DiscordPost, DiscordThread};
use tests::fake::openai::Scripted;
use tests::fake::rate_limits_waited_out;
use tests::{DISCORD_CHANNEL, TestOptions, fixture, run_test, run_test_with};

/// The MESSAGE_CREATE of the fixture: "Supa Hot" in the listened channel.
const MESSAGE_ID: &str = "334385199974967042";

fn message_create() -> Value {
    serde_json::from_str(&fixture("discord/gateway.MESSAGE_CREATE.json")).unwrap()
}

/// A follow-up typed inside the conversation's thread.
fn follow_up(id: &str, content: &str) -> Value {
    let mut dispatch = message_create();
    dispatch["d"]["id"] = json!(id);
    dispatch["d"]["channel_id"] = json!(MESSAGE_ID);
    dispatch["d"]["content"] = json!(content);
    dispatch["d"]["reactions"] = json!([]);
    dispatch
}

fn accepted(outcome: &IngestOutcome) -> bool {
    matches!(outcome, IngestOutcome::Accepted(_))
}

#[tokio::test]
async fn a_listened_channel_message_gets_a_thread_and_follow_ups_continue_it() {
    run_test(async |t| {
        t.openai.script([
            Scripted::Text("Hot indeed.".into()),
            Scripted::Text("25 % MVA.".into()),
        ]);

        let pdf = tests::receipt_pdf();
        let url = t.discord.add_attachment(DISCORD_CHANNEL, "adobe-receipt.pdf", pdf.clone(), "application/pdf");
        let mut first = message_create();
        first["d"]["attachments"] = json!([{
            "id": "1100000000000000001", "filename": "adobe-receipt.pdf", "size": pdf.len(),
            "url": url, "proxy_url": url, "content_type": "application/pdf"
        }]);
        assert!(accepted(&t.discord_message_create(&first).await));
        t.wait_for_discord_posts(1).await;
        assert_eq!(
            t.discord.thread(MESSAGE_ID),
            Some(DiscordThread {
                parent: DISCORD_CHANNEL.into(),
                id: MESSAGE_ID.into(),
                name: "Supa Hot".into()
            })
        );
        assert_eq!(
            t.discord.take_posts(),
            [DiscordPost {
                channel: MESSAGE_ID.into(),
                content: "Hot indeed.".into()
            }]
        );
        // The model read the receipt itself: the text names it by the id
        // its tools take, the PDF comes along as a file part.
        let user = t.openai.requests()[0]["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"]
            .clone();
        let receipt = tests::receipt_id(&pdf);
        assert_eq!(
            user,
            json!([
                {"type": "text", "text": format!("Supa Hot\n\nFiles:\n- {receipt}: adobe-receipt.pdf (application/pdf, 1 KB)")},
                {"type": "file", "file": {"filename": "adobe-receipt.pdf", "file_data": tests::data_url("application/pdf", &pdf)}}
            ])
        );

        assert!(accepted(
            &t.discord_message_create(&follow_up("334385199974967100", "And the VAT?"))
                .await
        ));
        t.wait_for_discord_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.discord.take_posts(),
            [DiscordPost {
                channel: MESSAGE_ID.into(),
                content: "25 % MVA.".into()
            }]
        );
        let second = t.openai.requests()[1]["messages"]
            .as_array()
            .unwrap()
            .clone();
        let roles: Vec<&str> = second.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(second[2]["content"], "Hot indeed.");
        // The follow-up is about the receipt sent before: the model sees it
        // again.
        assert_eq!(
            second[3]["content"],
            json!([
                {"type": "text", "text": "And the VAT?"},
                {"type": "file", "file": {"filename": "adobe-receipt.pdf", "file_data": tests::data_url("application/pdf", &pdf)}}
            ])
        );
        assert_eq!(t.db.count("conversations").await, 1);
        assert!(
            t.discord.typing_count(MESSAGE_ID) >= 1,
            "typing shown in the thread"
        );

        // The same event again (a gateway resume replays it): no second reply.
        assert!(matches!(
            t.discord_message_create(&first).await,
            IngestOutcome::Duplicate(_)
        ));
        t.wait_idle().await;
    })
    .await;
}

#[tokio::test]
async fn a_5000_character_reply_arrives_as_ordered_chunks_in_the_thread() {
    run_test(async |t| {
        let long: String = (0..110)
            .map(|i| format!("Linje {i:03}: kvittering mangler for transaksjonen.\n"))
            .collect();
        assert!(long.chars().count() >= 5000);
        t.openai.script([Scripted::Text(long.clone())]);
        assert!(accepted(&t.discord_message_create(&message_create()).await));
        t.wait_for_discord_posts(3).await;
        t.wait_idle().await;
        let posts = t.discord.take_posts();
        assert_eq!(posts.len(), 3);
        assert!(
            posts
                .iter()
                .all(|p| p.channel == MESSAGE_ID && p.content.chars().count() <= 2000)
        );
        assert_eq!(
            posts.iter().map(|p| p.content.as_str()).collect::<String>(),
            long.trim_end()
        );
    })
    .await;
}

#[tokio::test]
async fn a_reply_longer_than_the_channels_bucket_is_paced_without_a_429() {
    run_test(async |t| {
        // Seven chunks: two more than a channel's 5 messages per 5 s.
        let long: String = (0..7)
            .map(|i| format!("{}\n", char::from(b'a' + i).to_string().repeat(1_990)))
            .collect();
        t.openai.script([Scripted::Text(long.clone())]);
        assert!(accepted(&t.discord_message_create(&message_create()).await));
        t.wait_until_within(
            "seven chunks",
            std::time::Duration::from_secs(60),
            || async { t.discord.post_count() >= 7 },
        )
        .await;
        t.wait_idle().await;
        let posts = t.discord.take_posts();
        assert_eq!(posts.len(), 7);
        assert_eq!(
            posts.iter().map(|p| p.content.as_str()).collect::<String>(),
            long.trim_end()
        );
        assert_eq!(t.discord.rate_limited(), (0, 0), "no post past the bucket");
        let attempts = t.discord.post_attempts();
        let span = attempts[6].at.duration_since(attempts[0].at);
        assert!(
            span >= std::time::Duration::from_secs(5),
            "the sixth waited for a new window: {span:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bots_are_ignored_and_unlistened_channels_are_unrouted() {
    run_test(async |t| {
        let mut bot = message_create();
        bot["d"]["author"]["bot"] = json!(true);
        assert_eq!(t.discord_message_create(&bot).await, IngestOutcome::Ignored);
        let mut elsewhere = message_create();
        elsewhere["d"]["channel_id"] = json!("290926798999357999");
        assert_eq!(
            t.discord_message_create(&elsewhere).await,
            IngestOutcome::Unrouted
        );
        let mut system = message_create();
        system["d"]["type"] = json!(18); // THREAD_CREATED
        assert_eq!(
            t.discord_message_create(&system).await,
            IngestOutcome::Ignored
        );
        assert_eq!(t.db.count("inbox").await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_direct_message_is_answered_in_the_dm_without_a_thread() {
    run_test(async |t| {
        let tenant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants")
            .fetch_one(&t.db.owner)
            .await
            .unwrap();
        t.db.seed_route(tenant, "discord", "@dm", "*", "book-e")
            .await;
        t.db.seed_member(tenant, "discord", "user", "53908099506183680", None)
            .await;
        t.openai.script([Scripted::Text("Hei i DM.".into())]);
        let mut dm = message_create();
        dm["d"].as_object_mut().unwrap().remove("guild_id");
        dm["d"].as_object_mut().unwrap().remove("member");
        dm["d"]["channel_id"] = json!("555000000000000001");
        assert!(accepted(&t.discord_message_create(&dm).await));
        t.wait_for_discord_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.discord.take_posts(),
            [DiscordPost {
                channel: "555000000000000001".into(),
                content: "Hei i DM.".into()
            }]
        );
        assert_eq!(t.discord.thread(MESSAGE_ID), None);
    })
    .await;
}

#[tokio::test]
async fn a_rate_limited_post_is_retried_and_arrives_once() {
    run_test(async |t| {
        t.discord.rate_limit_next(2);
        t.openai.script([Scripted::Text("Etter pausen.".into())]);
        assert!(accepted(&t.discord_message_create(&message_create()).await));
        t.wait_for_discord_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.discord.take_posts(),
            [DiscordPost {
                channel: MESSAGE_ID.into(),
                content: "Etter pausen.".into()
            }]
        );
        let attempts = t.discord.post_attempts();
        assert_eq!(
            rate_limits_waited_out(&attempts),
            (2, true),
            "two 429s, each Retry-After waited: {attempts:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_in_a_thread_we_did_not_start_is_answered_in_that_thread() {
    run_test(async |t| {
        let tenant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants")
            .fetch_one(&t.db.owner)
            .await
            .unwrap();
        t.db.seed_route(tenant, "discord", tests::DISCORD_GUILD, "*", "book-e")
            .await;
        let foreign = "777000000000000001";
        t.discord.add_foreign_thread(foreign);
        t.openai.script([Scripted::Text("Svar i tråden.".into())]);
        let mut dispatch = message_create();
        dispatch["d"]["channel_id"] = json!(foreign);
        assert!(accepted(&t.discord_message_create(&dispatch).await));
        t.wait_for_discord_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.discord.take_posts(),
            [DiscordPost {
                channel: foreign.into(),
                content: "Svar i tråden.".into()
            }]
        );
    })
    .await;
}

#[tokio::test]
async fn messages_posted_while_the_gateway_was_down_are_answered_when_it_is_back() {
    run_test_with(
        TestOptions {
            gateway_process: true,
            ..Default::default()
        },
        async |t| {
            // The company's Discord people are those with its staff role.
            let acme = t.db.tenant_id(tests::ACME).await;
            t.db.seed_member(acme, "discord", "role", "777000000000000001", None)
                .await;
            t.discord
                .give_roles("53908099506183680", &["777000000000000001"]);
            // Down: the owner asks in the listened channel.
            t.stop_gateway_process().await;
            t.openai.script([Scripted::Text("Svar én.".into())]);
            let first = t.discord.post_as_user(DISCORD_CHANNEL, "Hva er saldoen?");
            t.start_gateway_process().await;
            t.wait_for_discord_posts(1).await;
            t.wait_idle().await;
            let answer = |content: &str| DiscordPost {
                channel: first.clone(),
                content: content.into(),
            };
            assert_eq!(
                t.discord.take_posts(),
                [answer("Svar én.")],
                "in its thread"
            );

            // Down again: a follow-up in that thread.
            t.stop_gateway_process().await;
            t.openai.script([Scripted::Text("Svar to.".into())]);
            t.discord.post_as_user(&first, "Og i går?");
            t.start_gateway_process().await;
            t.wait_for_discord_posts(1).await;
            t.wait_idle().await;
            assert_eq!(t.discord.take_posts(), [answer("Svar to.")]);
            assert_eq!(t.db.count("inbox").await, 2, "each message once");
            let requests = t.openai.requests();
            assert_eq!(requests.len(), 2);
            assert!(
                requests[1]["messages"]
                    .to_string()
                    .contains("Hva er saldoen?"),
                "the follow-up continues the conversation"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_discord_only_gateway_starts_without_any_slack_setting() {
    run_test_with(
        TestOptions {
            gateway_process: true,
            gateway_env: &[("AE_LOG__FILTER", "info")],
            ..Default::default()
        },
        async |t| {
            t.stop_gateway_process().await;
            t.openai.script([Scripted::Text("Hei fra Discord.".into())]);
            let id = t.discord.post_as_user(DISCORD_CHANNEL, "Hei?");
            t.start_gateway_process_without(&[
                "AE_SLACK__SIGNING_SECRET",
                "AE_SLACK__BOT_TOKEN",
                "AE_SLACK__API_BASE_URL",
                "AE_FILES__SLACK_BASE_URL",
            ])
            .await;
            t.wait_for_discord_posts(1).await;
            t.wait_idle().await;
            assert_eq!(
                t.discord.take_posts(),
                [DiscordPost {
                    channel: id,
                    content: "Hei fra Discord.".into()
                }]
            );
            let log = t.gateway_process().log();
            assert!(
                log.contains("slack off (set AE_SLACK__SIGNING_SECRET and AE_SLACK__BOT_TOKEN"),
                "the startup line says what turns Slack on:\n{log}"
            );
            let slack = t
                .http
                .post(format!("{}/slack/events", t.gateway_url))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(slack.status(), 404, "no Slack endpoint without Slack");
        },
    )
    .await;
}

#[tokio::test]
async fn check_config_lists_every_problem_and_fails() {
    let (status, _, stderr) = tests::process::run_to_end(
        "gateway",
        &["--check-config"],
        &[
            ("AE_SLACK__BOT_TOKEN", "xoxb-1"),
            ("AE_LIMITS__USER_PER_MINUTE", "0"),
        ],
    )
    .await;
    assert!(!status.success(), "{stderr}");
    for field in [
        "database.url",
        "queue_depth_token",
        "`slack`",
        "channels",
        "limits",
    ] {
        assert!(stderr.contains(field), "{field} in:\n{stderr}");
    }
    let (status, stdout, stderr) = tests::process::run_to_end(
        "gateway",
        &["--check-config"],
        &[
            ("AE_DATABASE__URL", "postgres://u@localhost/db"),
            ("AE_QUEUE_DEPTH_TOKEN", "keda"),
            ("AE_TELEGRAM__TOKEN", "123:abc"),
            ("AE_TELEGRAM__MODE", "polling"),
        ],
    )
    .await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("telegram on (long polling)"), "{stdout}");
    // The worker's too.
    let (status, _, stderr) = tests::process::run_to_end(
        "worker",
        &["--check-config"],
        &[("AE_LLM__BASE_URL", "ftp://x")],
    )
    .await;
    assert!(!status.success(), "{stderr}");
    for field in [
        "database.url",
        "llm.base_url",
        "llm.api_key",
        "accounting.token",
    ] {
        assert!(stderr.contains(field), "{field} in:\n{stderr}");
    }
}
