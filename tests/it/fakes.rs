//! The fakes refuse what the real APIs refuse, with the real API's answer:
//! a product request that would fail in production fails the tests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::fake::discord::FakeDiscord;
use tests::fake::openai::FakeOpenAi;
use tests::fake::slack::FakeSlack;
use tests::fake::telegram::FakeTelegram;
use tests::{DISCORD_TOKEN, LLM_API_KEY, SLACK_BOT_TOKEN, TELEGRAM_TOKEN};

async fn post(
    url: &str,
    auth: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    shared::telemetry::install_crypto_provider();
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

#[tokio::test]
async fn openai_refuses_a_body_its_schema_forbids_and_an_unanswered_tool_call() {
    let fake = FakeOpenAi::start(LLM_API_KEY).await;
    let url = format!("{}/chat/completions", fake.base_url);
    let auth = format!("Bearer {LLM_API_KEY}");
    let cases = [
        (json!({"model": "gpt-test"}), "messages"),
        (
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "gpt-test", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{}"}
            ]}),
            "call_2",
        ),
        (
            json!({"model": "gpt-test", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "{}"}
            ]}),
            "role 'tool'",
        ),
    ];
    for (body, named) in cases {
        let (status, answer, _) = post(&url, Some(&auth), &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "`{named}` in {message}");
    }
    assert_eq!(fake.refusals.take().len(), 4);

    // A tools array is checked once; the rest of each body every time, and
    // a refused array every time.
    let messages = json!([{"role": "user", "content": "hi"}]);
    let tools =
        json!([{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}]);
    let allowed = json!({"model": "gpt-test", "messages": messages, "tools": tools});
    assert_ne!(post(&url, Some(&auth), &allowed).await.0, 400);
    let hot =
        json!({"model": "gpt-test", "messages": messages, "tools": tools, "temperature": "hot"});
    assert_eq!(post(&url, Some(&auth), &hot).await.0, 400);
    let broken = json!({"model": "gpt-test", "messages": messages,
        "tools": [{"type": "function", "function": {"name": 5}}]});
    for _ in 0..2 {
        assert_eq!(post(&url, Some(&auth), &broken).await.0, 400, "{broken}");
    }
    assert_eq!(fake.refusals.take().len(), 3);
    // Each kept request gives its whole body back, its shared array too.
    assert_ne!(post(&url, Some(&auth), &allowed).await.0, 400);
    let kept = fake.requests();
    assert_eq!(kept.iter().filter(|r| **r == allowed).count(), 2);

    // Not JSON, or not sent as JSON: refused before any check.
    let client = reqwest::Client::new();
    for (content_type, body, status) in [
        ("application/json", "{\"model\": ", 400),
        ("text/plain", "{\"model\": \"gpt-test\"}", 415),
    ] {
        let response = client
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the fake answers");
        assert_eq!(response.status().as_u16(), status, "{content_type} {body}");
    }
    assert_eq!(fake.refusals.take().len(), 2);
    assert_eq!(fake.request_count(), kept.len(), "refused, not kept");
}

#[tokio::test]
async fn slack_refuses_blocks_past_block_kit_limits_with_its_error_body() {
    let fake = FakeSlack::start(SLACK_BOT_TOKEN).await;
    let auth = format!("Bearer {SLACK_BOT_TOKEN}");
    let long_section = json!({
        "channel": "C111", "text": "card",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3_001)}}]
    });
    let (status, answer, _) = post(
        &format!("{}/chat.postMessage", fake.base_url),
        Some(&auth),
        &long_section,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"], "invalid_blocks");
    assert_eq!(
        answer["errors"],
        json!(["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"])
    );
    assert_eq!(
        answer["response_metadata"]["messages"][0],
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    );
    let too_many =
        json!({"channel": "C111", "text": "card", "blocks": vec![json!({"type": "divider"}); 51]});
    let (_, answer, _) = post(
        &format!("{}/chat.postMessage", fake.base_url),
        Some(&auth),
        &too_many,
    )
    .await;
    assert_eq!(answer["error"], "invalid_blocks");
    let button = json!({"channel": "C111", "text": "card", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "value": "v".repeat(2_001), "text": {"type": "plain_text", "text": "x".repeat(76)}}]}]});
    let (_, answer, _) = post(
        &format!("{}/chat.postMessage", fake.base_url),
        Some(&auth),
        &button,
    )
    .await;
    assert_eq!(answer["errors"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(fake.refusals.take().len(), 3);
    assert!(fake.cards().is_empty());
}

#[tokio::test]
async fn slack_opens_a_modal_once_per_trigger_within_three_seconds() {
    let fake = FakeSlack::start(SLACK_BOT_TOKEN).await;
    let auth = format!("Bearer {SLACK_BOT_TOKEN}");
    let url = format!("{}/views.open", fake.base_url);
    let view = |title: &str| json!({"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": []});
    let open = |trigger: &str, title: &str| json!({"trigger_id": trigger, "view": view(title)});
    fake.issue_trigger("t1");
    let (_, answer, _) = post(&url, Some(&auth), &open("t1", &"t".repeat(25))).await;
    assert_eq!(
        answer["error"], "invalid_arguments",
        "a title over 24 characters"
    );
    assert_eq!(
        answer["response_metadata"]["messages"][0],
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
    );
    assert_eq!(
        post(&url, Some(&auth), &open("t1", "Reject")).await.1["ok"],
        true
    );
    assert_eq!(
        post(&url, Some(&auth), &open("t1", "Reject")).await.1["error"],
        "exchanged_trigger_id"
    );
    assert_eq!(
        post(&url, Some(&auth), &open("t2", "Reject")).await.1["error"],
        "invalid_trigger_id"
    );
    fake.issue_trigger_at("t3", Instant::now() - Duration::from_secs(4));
    assert_eq!(
        post(&url, Some(&auth), &open("t3", "Reject")).await.1["error"],
        "expired_trigger_id"
    );
    assert_eq!(fake.take_views().len(), 1);
    assert_eq!(fake.refusals.take().len(), 1);
}

#[tokio::test]
async fn slack_shows_an_ephemeral_message_only_to_a_member_of_the_channel() {
    let fake = FakeSlack::start(SLACK_BOT_TOKEN).await;
    let auth = format!("Bearer {SLACK_BOT_TOKEN}");
    let url = format!("{}/chat.postEphemeral", fake.base_url);
    let body = json!({"channel": "CREVIEW", "user": "W999", "text": "not yours"});
    assert_eq!(
        post(&url, Some(&auth), &body).await.1["error"],
        "user_not_in_channel"
    );
    fake.join("CREVIEW", "W999");
    assert_eq!(post(&url, Some(&auth), &body).await.1["ok"], true);
    assert_eq!(fake.take_ephemerals().len(), 1);
}

#[tokio::test]
async fn discord_refuses_bad_ids_unknown_channels_and_a_sixth_message_in_five_seconds() {
    let fake = FakeDiscord::start(DISCORD_TOKEN).await;
    let auth = format!("Bot {DISCORD_TOKEN}");
    let api = format!("{}/api/v10", fake.base_url);
    let message = json!({"content": "hei", "allowed_mentions": {"parse": []}});
    let (status, answer, _) = post(
        &format!("{api}/channels/not-a-snowflake/messages"),
        Some(&auth),
        &message,
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (400, Some(50_035)));
    let (status, answer, _) = post(
        &format!("{api}/channels/111111111111111111/messages"),
        Some(&auth),
        &message,
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (404, Some(10_003)));
    assert_eq!(answer["message"], "Unknown Channel");
    fake.add_message("222222222222222222", "333333333333333333");
    let thread = json!({"name": "Tråd"});
    let (status, answer, _) = post(
        &format!("{api}/channels/222222222222222222/messages/444444444444444444/threads"),
        Some(&auth),
        &thread,
    )
    .await;
    assert_eq!((status, answer["code"].as_u64()), (404, Some(10_008)));
    for n in 0..5 {
        let (status, _, headers) = post(
            &format!("{api}/channels/222222222222222222/messages"),
            Some(&auth),
            &message,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit"], "5");
        assert_eq!(
            headers["x-ratelimit-remaining"],
            (4 - n).to_string().as_str()
        );
    }
    let (status, answer, headers) = post(
        &format!("{api}/channels/222222222222222222/messages"),
        Some(&auth),
        &message,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(answer["global"], false);
    assert!(headers.contains_key("retry-after") && headers.contains_key("x-ratelimit-reset-after"));
    assert_eq!(fake.rate_limited(), (0, 1));
    assert_eq!(
        fake.refusals.take().len(),
        2,
        "the bad id and the sixth message"
    );
    assert_eq!(fake.take_posts().len(), 5);
}

#[tokio::test]
async fn telegram_refuses_a_chat_action_without_action_an_unknown_topic_and_polling_under_a_webhook()
 {
    let fake = FakeTelegram::start(TELEGRAM_TOKEN).await;
    let api = format!("{}/bot{TELEGRAM_TOKEN}", fake.base_url);
    let (status, answer, _) = post(
        &format!("{api}/sendChatAction"),
        None,
        &json!({"chat_id": 1}),
    )
    .await;
    assert_eq!((status, answer["ok"].as_bool()), (400, Some(false)));
    assert!(
        answer["description"].as_str().unwrap().contains("action"),
        "{answer}"
    );
    let in_topic = json!({"chat_id": -1001, "message_thread_id": 7, "text": "hei"});
    let (status, answer, _) = post(&format!("{api}/sendMessage"), None, &in_topic).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["description"],
        "Bad Request: message thread not found"
    );
    fake.add_topic(-1001, 7);
    assert_eq!(
        post(&format!("{api}/sendMessage"), None, &in_topic).await.0,
        200
    );
    let (status, answer, _) = post(&format!("{api}/getUpdates"), None, &json!({})).await;
    assert_eq!(status, 409);
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .starts_with("Conflict:")
    );
    assert_eq!(
        post(&format!("{api}/deleteWebhook"), None, &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        post(&format!("{api}/getUpdates"), None, &json!({})).await.0,
        200
    );
    assert_eq!(
        fake.refusals.take().len(),
        1,
        "the chat action without action"
    );
    assert_eq!(fake.take_posts().len(), 1);
}
