//! Only the company's people reach its agent: a stranger is told once and
//! nothing of theirs is recorded or run; a route anybody can reach needs a
//! member list; four-eyes holds across one person's platforms.

use serde_json::{Value, json};
use shared::engine::pace::NOT_A_MEMBER_REPLY;
use shared::engine::review::APPROVE_ACTION;
use tests::fake::openai::Scripted;
use tests::fake::slack::PostedMessage;
use tests::fake::telegram::TelegramPost;
use tests::{ACME, FIXTURE_CHANNEL, TELEGRAM_SECRET, TestEnv, fixture, run_test};

/// A private Telegram message from user `from` (in their own chat).
fn telegram_message(from: i64, update_id: i64, text: &str) -> String {
    let mut update: Value =
        serde_json::from_str(&fixture("telegram/update.message.private_command.json")).unwrap();
    update["update_id"] = json!(update_id);
    update["message"]["message_id"] = json!(update_id);
    update["message"]["from"]["id"] = json!(from);
    update["message"]["chat"]["id"] = json!(from);
    update["message"]["text"] = json!(text);
    update["message"]
        .as_object_mut()
        .unwrap()
        .remove("entities");
    update.to_string()
}

async fn post_telegram(t: &TestEnv, update: &str) {
    let response = t.post_telegram_update(update, Some(TELEGRAM_SECRET)).await;
    assert_eq!(response.status(), 200);
}

fn not_a_member_total(t: &TestEnv, channel: &str) -> u64 {
    t.counter(&format!(
        "automate_e_messages_total{{channel=\"{channel}\",outcome=\"not_a_member\"}}"
    ))
}

#[tokio::test]
async fn a_stranger_who_finds_the_bot_is_told_once_and_nothing_is_recorded_or_run() {
    run_test(async |t| {
        const STRANGER: i64 = 222_222_222;
        post_telegram(
            t,
            &telegram_message(STRANGER, 1, "What is the bank balance?"),
        )
        .await;
        t.wait_for_telegram_posts(1).await;
        post_telegram(t, &telegram_message(STRANGER, 2, "Pay invoice 7")).await;
        t.wait_idle().await;
        assert_eq!(
            t.telegram.take_posts(),
            [TelegramPost {
                chat_id: STRANGER,
                message_thread_id: None,
                text: NOT_A_MEMBER_REPLY.into()
            }],
            "told once, not twice"
        );
        assert_eq!(t.db.count("inbox").await, 0, "nothing recorded");
        assert!(t.openai.requests().is_empty(), "no model call");
        assert_eq!(not_a_member_total(t, "telegram"), 2);

        // The tenant's listed member is heard on the same route.
        t.openai
            .script([Scripted::Text("Saldoen er 1 234,50 kr.".into())]);
        post_telegram(
            t,
            &telegram_message(111_111_111, 3, "What is the bank balance?"),
        )
        .await;
        t.wait_for_telegram_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.telegram.take_posts()[0].text, "Saldoen er 1 234,50 kr.");
        assert_eq!(t.db.count("inbox").await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_route_anybody_can_reach_hears_nobody_until_the_tenant_lists_members() {
    run_test(async |t| {
        sqlx::query("DELETE FROM tenant_members")
            .execute(&t.db.owner)
            .await
            .unwrap();
        post_telegram(t, &telegram_message(111_111_111, 1, "Hei")).await;
        t.wait_idle().await;
        assert!(t.telegram.take_posts().is_empty(), "no answer, no notice");
        assert_eq!(t.db.count("inbox").await, 0);
        assert_eq!(
            t.counter(
                "automate_e_messages_total{channel=\"telegram\",outcome=\"route_needs_members\"}"
            ),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn a_slack_connect_guest_in_a_workspace_wide_channel_is_not_the_companys() {
    run_test(async |t| {
        let guest = fixture("slack/event_callback.message.json")
            .replace(r#""user": "W111""#, r#""user": "W999""#)
            .replace(
                r#""team": "T111""#,
                r#""team": "T111", "user_team": "T999""#,
            );
        assert_eq!(t.post_slack_event(&guest).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.slack.take_posted(),
            [PostedMessage {
                channel: FIXTURE_CHANNEL.into(),
                thread_ts: Some("1596183880.004200".into()),
                text: NOT_A_MEMBER_REPLY.into()
            }]
        );
        assert_eq!(t.db.count("inbox").await, 0);
        assert!(t.openai.requests().is_empty());
        assert_eq!(not_a_member_total(t, "slack"), 1);
    })
    .await;
}

#[tokio::test]
async fn nobody_proposes_on_telegram_and_approves_their_own_write_in_slack() {
    run_test(async |t| {
        // The Telegram owner is also Slack reviewer W222: one person.
        let acme = t.db.tenant_id(ACME).await;
        t.db.seed_member(acme, "slack", "user", "W222", Some("owner"))
            .await;
        let purchase = json!({"merchant": "Adobe", "body": {"date": "2026-11-20",
            "kind": "cash_purchase", "paid": true, "currency": "NOK", "paymentAccount": "1920:10001",
            "lines": [{"description": "Creative Cloud", "netPrice": 15920, "vat": 3980,
                       "account": "6810", "vatType": "HIGH"}]}});
        t.openai.script([
            Scripted::tool_call("register_purchase", &purchase.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai.script_for(
            "Review-E",
            [Scripted::Text(r#"{"verdict": "approve", "notes": "ok"}"#.into())],
        );
        post_telegram(t, &telegram_message(111_111_111, 1, "Registrer Adobe, 199 kr")).await;
        t.wait_for_cards(1).await;
        t.wait_for_posts(1).await; // Review-E's note in the card's thread
        t.slack.take_posted();
        let value = t.slack.take_cards().remove(0).approve_value();

        assert_eq!(t.click("W222", APPROVE_ACTION, &value).await, 200);
        t.wait_until("the refusal", || async { !t.slack.ephemerals().is_empty() })
            .await;
        let refused = t
            .db
            .event_payloads("automate_e.proposal.decision_refused.v1")
            .await;
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0]["reviewer"], "slack:W222");
        assert_eq!(refused[0]["refusal"]["refusal"], "own_proposal");
        assert_eq!(t.proposals().await[0].1, "review_requested");
        assert_eq!(t.slack.take_ephemerals().len(), 1, "W222 is told why");

        // Another person approves.
        assert_eq!(t.click("W333", APPROVE_ACTION, &value).await, 200);
        t.wait_for_proposal("executed").await;
        t.wait_for_telegram_posts(2).await;
        t.wait_idle().await;
        assert_eq!(t.accounting.writes(ACME), 1);
        assert_eq!(t.slack.take_updates().len(), 1);
        t.telegram.take_posts();
    })
    .await;
}
