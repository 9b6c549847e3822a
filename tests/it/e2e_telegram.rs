//! Telegram: webhook secret checked, replies in the same chat and forum
//! topic, redeliveries answered once, long replies split at 4,096, 429s
//! waited out.

use serde_json::{Value, json};
use shared::job::QueueName;
use tests::fake::openai::Scripted;
use tests::fake::rate_limits_waited_out;
use tests::fake::telegram::TelegramPost;
use tests::{TELEGRAM_SECRET, TestOptions, fixture, run_test, run_test_with};

const GROUP: i64 = -1_001_234_567_890;

#[tokio::test]
async fn a_forum_topic_message_is_answered_in_its_topic_once() {
    run_test(async |t| {
        t.openai
            .script([Scripted::Text("Faktura 42 er klar for godkjenning.".into())]);
        let update = fixture("telegram/update.message.supergroup_topic_reply.json");
        assert_eq!(
            t.post_telegram_update(&update, Some(TELEGRAM_SECRET))
                .await
                .status(),
            200
        );
        t.wait_for_telegram_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.telegram.take_posts(),
            [TelegramPost {
                chat_id: GROUP,
                message_thread_id: Some(7),
                text: "Faktura 42 er klar for godkjenning.".into()
            }]
        );
        let user = t.openai.requests()[0]["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"]
            .clone();
        assert_eq!(user, "Send invoice 42 to ACME");

        // Telegram re-sends the same update: acknowledged, not answered again.
        assert_eq!(
            t.post_telegram_update(&update, Some(TELEGRAM_SECRET))
                .await
                .status(),
            200
        );
        t.wait_idle().await;
        assert_eq!(t.db.count("inbox").await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_401_and_nothing_is_enqueued() {
    run_test(async |t| {
        let update = fixture("telegram/update.message.private_command.json");
        for secret in [
            Some("wrong-secret"),
            Some(""),
            None,
            Some("telegram-webhook-secret-11"),
        ] {
            let response = t.post_telegram_update(&update, secret).await;
            assert_eq!(response.status(), 401, "{secret:?}");
        }
        assert_eq!(
            t.post_telegram_update("{\"update_id\":", Some(TELEGRAM_SECRET))
                .await
                .status(),
            400
        );
        assert_eq!(t.db.count("inbox").await, 0);
        let depth = t.queue.depth(QueueName::Worker).await.unwrap();
        assert_eq!(depth.backlog() + depth.delayed, 0);
    })
    .await;
}

#[tokio::test]
async fn a_private_chat_gets_a_long_reply_in_order_after_a_rate_limit() {
    run_test(async |t| {
        t.telegram.retry_after_next(1);
        // Emoji count twice in Telegram's UTF-16 limit.
        let long = "Kvittering 🧾 mangler for denne transaksjonen. ".repeat(120);
        t.openai.script([Scripted::Text(long.trim().to_owned())]);
        let update = fixture("telegram/update.message.private_command.json");
        assert_eq!(
            t.post_telegram_update(&update, Some(TELEGRAM_SECRET))
                .await
                .status(),
            200
        );
        t.wait_for_telegram_posts(2).await;
        t.wait_idle().await;
        let posts = t.telegram.take_posts();
        assert!(posts.len() >= 2);
        assert!(
            posts
                .iter()
                .all(|p| p.chat_id == 111_111_111 && p.message_thread_id.is_none())
        );
        assert!(posts.iter().all(|p| p.text.encode_utf16().count() <= 4096));
        assert_eq!(
            posts.iter().map(|p| p.text.as_str()).collect::<String>(),
            long.trim()
        );
        let attempts = t.telegram.post_attempts();
        assert_eq!(
            rate_limits_waited_out(&attempts),
            (1, true),
            "one 429, its retry_after waited: {attempts:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn edits_callbacks_and_bots_are_acknowledged_but_ignored() {
    run_test(async |t| {
        let mut from_bot: Value =
            serde_json::from_str(&fixture("telegram/update.message.private_command.json")).unwrap();
        from_bot["message"]["from"]["is_bot"] = json!(true);
        for body in [
            fixture("telegram/update.edited_message.json"),
            fixture("telegram/update.callback_query.json"),
            from_bot.to_string(),
        ] {
            assert_eq!(
                t.post_telegram_update(&body, Some(TELEGRAM_SECRET))
                    .await
                    .status(),
                200
            );
        }
        assert_eq!(t.db.count("inbox").await, 0);
    })
    .await;
}

#[tokio::test]
async fn long_polling_answers_each_update_once() {
    run_test_with(
        TestOptions {
            telegram_polling: true,
            ..Default::default()
        },
        async |t| {
            t.openai.script([Scripted::Text("Hei Kari!".into())]);
            let update: Value =
                serde_json::from_str(&fixture("telegram/update.message.private_command.json"))
                    .unwrap();
            t.telegram.push_update(update);
            t.wait_for_telegram_posts(1).await;
            t.wait_idle().await;
            // Further polls confirm the update (offset moves past it): no second turn.
            let polls = t.telegram.polls();
            t.wait_until("two more polls", || async {
                t.telegram.polls() >= polls + 2
            })
            .await;
            t.wait_idle().await;
            assert_eq!(
                t.telegram.take_posts(),
                [TelegramPost {
                    chat_id: 111_111_111,
                    message_thread_id: None,
                    text: "Hei Kari!".into()
                }]
            );
            assert_eq!(t.db.count("inbox").await, 1);
            // The webhook is off in polling mode.
            let body = fixture("telegram/update.message.private_command.json");
            let webhook = t.post_telegram_update(&body, Some(TELEGRAM_SECRET)).await;
            assert_eq!(webhook.status(), 401);
        },
    )
    .await;
}
