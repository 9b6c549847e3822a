//! Bad Slack requests get a clear 4xx and nothing is recorded or enqueued.

use shared::job::QueueName;
use tests::signing::slack_signature;
use tests::{SLACK_SIGNING_SECRET, TestEnv, fixture, run_test};

async fn assert_nothing_accepted(t: &TestEnv) {
    assert_eq!(t.db.count("inbox").await, 0);
    let depth = t.queue.depth(QueueName::Worker).await.unwrap();
    assert_eq!(depth.backlog() + depth.delayed, 0, "{depth:?}");
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

#[tokio::test]
async fn forged_stale_missing_and_malformed_requests_are_rejected() {
    run_test(async |t| {
        let body = fixture("slack/event_callback.message.json");
        let ts = now();

        let wrong_secret = slack_signature("not-the-secret", &ts, &body);
        let response = t
            .post_slack_event_with(&body, &ts, &wrong_secret, &[])
            .await;
        assert_eq!(response.status(), 401);
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], "unauthorized");

        let tampered = slack_signature(SLACK_SIGNING_SECRET, &ts, &body);
        let response = t
            .post_slack_event_with(
                &body.replace("Hello World!", "Pay 1 000 000"),
                &ts,
                &tampered,
                &[],
            )
            .await;
        assert_eq!(response.status(), 401);

        let stale = (chrono::Utc::now().timestamp() - 301).to_string();
        let signed_stale = slack_signature(SLACK_SIGNING_SECRET, &stale, &body);
        let response = t
            .post_slack_event_with(&body, &stale, &signed_stale, &[])
            .await;
        assert_eq!(response.status(), 401);
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(
            error["detail"].as_str().unwrap().contains("timestamp"),
            "{error}"
        );

        let response = t
            .http
            .post(format!("{}/slack/events", t.gateway_url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);

        for malformed in ["{not json", "{\"type\":\"event_callback\"}", "[]", ""] {
            let signature = slack_signature(SLACK_SIGNING_SECRET, &ts, malformed);
            let response = t
                .post_slack_event_with(malformed, &ts, &signature, &[])
                .await;
            assert_eq!(response.status(), 400, "{malformed}");
        }

        let oversized = format!(
            "{{\"type\":\"url_verification\",\"challenge\":\"{}\"}}",
            "x".repeat(300 * 1024)
        );
        let signature = slack_signature(SLACK_SIGNING_SECRET, &ts, &oversized);
        assert_eq!(
            t.post_slack_event_with(&oversized, &ts, &signature, &[])
                .await
                .status(),
            413
        );

        assert_nothing_accepted(t).await;
    })
    .await;
}

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    run_test(async |t| {
        let body = fixture("slack/url_verification.json");
        let ts = now();
        let response = t
            .post_slack_event_with(
                &body,
                &ts,
                &slack_signature(SLACK_SIGNING_SECRET, &ts, &body),
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        let expected: serde_json::Value = serde_json::from_str(&body).unwrap();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["challenge"], expected["challenge"]);
    })
    .await;
}

#[tokio::test]
async fn bot_messages_edits_and_unrouted_teams_are_acknowledged_but_ignored() {
    run_test(async |t| {
        for name in [
            "slack/event_callback.message.bot_message.json",
            "slack/event_callback.message_changed.json",
        ] {
            assert_eq!(t.post_slack_event(&fixture(name)).await, 200, "{name}");
        }
        let unrouted = fixture("slack/event_callback.message.json").replace("\"T111\"", "\"T999\"");
        assert_eq!(t.post_slack_event(&unrouted).await, 200);
        assert_nothing_accepted(t).await;
    })
    .await;
}
