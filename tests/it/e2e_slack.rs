//! Slack message in → Book-E turn with the model and a read tool → reply in
//! the same thread, everything recorded; redeliveries change nothing.

use serde_json::{Value, json};
use tests::fake::accounting::bank_balances;
use tests::fake::openai::Scripted;
use tests::fake::rate_limits_waited_out;
use tests::fake::slack::PostedMessage;
use tests::{ACCOUNTING_TOKEN, FIXTURE_CHANNEL, fixture, run_test};

const MESSAGE_TS: &str = "1596183880.004200";

#[tokio::test]
async fn slack_message_gets_a_tool_backed_reply_in_its_thread_once() {
    run_test(async |t| {
        let reply = "Saldoen på driftskontoen (1920:10001) er 1 234,50 kr.";
        t.openai.script([
            Scripted::tool_call("get_bank_balances", "{}"),
            Scripted::Text(reply.into()),
        ]);

        let body = fixture("slack/event_callback.message.json");
        assert_eq!(t.post_slack_event(&body).await, 200);
        t.wait_for_posts(1).await;
        t.wait_idle().await;

        assert_eq!(
            t.slack.take_posted(),
            vec![PostedMessage {
                channel: FIXTURE_CHANNEL.into(),
                thread_ts: Some(MESSAGE_TS.into()),
                text: reply.into()
            }]
        );

        // The tool ran against the Accounting API with the tenant's credential.
        let calls = t.accounting.take_requests();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].method, "GET");
        assert_eq!(
            calls[0].uri,
            "/api/v2/companies/acme/bankBalances?page=0&pageSize=100"
        );
        assert_eq!(calls[0].bearer.as_deref(), Some(ACCOUNTING_TOKEN));

        // The model saw the user's text, was offered the tools, and got the tool result back.
        let requests = t.openai.requests();
        assert_eq!(requests.len(), 2);
        let first = &requests[0];
        assert_eq!(first["model"], "gpt-test");
        assert_eq!(first["messages"][0]["role"], "system");
        assert_eq!(
            first["messages"].as_array().unwrap().last().unwrap(),
            &json!({"role": "user", "content": "Hello World!"})
        );
        let tools: Vec<&str> = first["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert!(
            tools.contains(&"get_bank_balances") && tools.contains(&"register_purchase"),
            "{tools:?}"
        );
        let second = requests[1]["messages"].as_array().unwrap();
        let assistant = &second[second.len() - 2];
        assert_eq!(
            assistant["tool_calls"][0]["function"]["name"],
            "get_bank_balances"
        );
        let tool_message = &second[second.len() - 1];
        assert_eq!(tool_message["role"], "tool");
        assert_eq!(
            tool_message["tool_call_id"],
            assistant["tool_calls"][0]["id"]
        );
        let result: Value =
            serde_json::from_str(tool_message["content"].as_str().unwrap()).unwrap();
        assert_eq!(result["status"], 200);
        assert_eq!(result["items"], bank_balances());
        assert_eq!(result["total"], 2);

        // Everything is in the event log, in order.
        assert_eq!(
            t.db.event_types("conversation-").await,
            tests::ONE_READ_TURN_EVENTS
        );
        assert_eq!(
            t.db.event_types("delivery-").await,
            ["automate_e.delivery.reply_delivered.v1"]
        );
        let llm =
            t.db.event_payloads("automate_e.conversation.llm_called.v1")
                .await[0]
                .clone();
        assert_eq!(
            (
                llm["model"].as_str(),
                llm["input_tokens"].as_u64(),
                llm["output_tokens"].as_u64()
            ),
            (Some("gpt-test"), Some(120), Some(30))
        );
        assert_eq!(llm["prompt_sha256"].as_str().map(str::len), Some(64));
        let tool =
            t.db.event_payloads("automate_e.conversation.tool_called.v1")
                .await[0]
                .clone();
        assert_eq!(
            (
                tool["tool"].as_str(),
                tool["outcome"].as_str(),
                tool["status"].as_u64()
            ),
            (Some("get_bank_balances"), Some("ok"), Some(200))
        );

        // One trace from the webhook through the turn to the delivery.
        let traces: Vec<Option<String>> =
            sqlx::query_scalar("SELECT DISTINCT trace_id FROM events")
                .fetch_all(&t.db.owner)
                .await
                .unwrap();
        assert_eq!(traces.len(), 1, "{traces:?}");
        assert!(
            traces[0].as_deref().is_some_and(|id| id.len() == 32),
            "{traces:?}"
        );

        // Slack retries the same event, and sends it again as an app_mention-style
        // duplicate delivery: no second turn, no second reply.
        let retry_ts = chrono::Utc::now().timestamp().to_string();
        let signature =
            tests::signing::slack_signature(tests::SLACK_SIGNING_SECRET, &retry_ts, &body);
        let retried = t
            .post_slack_event_with(
                &body,
                &retry_ts,
                &signature,
                &[
                    ("x-slack-retry-num", "1"),
                    ("x-slack-retry-reason", "http_timeout"),
                ],
            )
            .await;
        assert_eq!(retried.status(), 200);
        assert_eq!(
            t.post_slack_event(&body.replace("Ev111", "Ev999")).await,
            200
        );
        t.wait_idle().await;
        assert_eq!(t.db.count("inbox").await, 1);
        assert_eq!(t.db.count("outbox").await, 1);
        assert_eq!(t.openai.request_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_thread_reply_continues_the_conversation_with_history() {
    run_test(async |t| {
        t.openai.script([
            Scripted::Text("Hei! Hva kan jeg hjelpe med?".into()),
            Scripted::Text("I 2013.".into()),
        ]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_for_posts(1).await;

        let mut reply: Value =
            serde_json::from_str(&fixture("slack/event_callback.message.thread_reply.json"))
                .unwrap();
        reply["event"]["thread_ts"] = json!(MESSAGE_TS);
        assert_eq!(t.post_slack_event(&reply.to_string()).await, 200);
        t.wait_for_posts(2).await;
        t.wait_idle().await;

        let posted = t.slack.take_posted();
        assert_eq!(
            posted
                .iter()
                .map(|p| p.thread_ts.as_deref())
                .collect::<Vec<_>>(),
            [Some(MESSAGE_TS); 2]
        );
        assert_eq!(posted[1].text, "I 2013.");
        let second = t.openai.requests()[1]["messages"]
            .as_array()
            .unwrap()
            .clone();
        let tail: Vec<(&str, &str)> = second[1..]
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(
            tail,
            [
                ("user", "Hello World!"),
                ("assistant", "Hei! Hva kan jeg hjelpe med?"),
                ("user", "When Slack was released?")
            ]
        );
        assert_eq!(t.db.count("conversations").await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_long_reply_arrives_as_ordered_chunks_in_the_thread() {
    run_test(async |t| {
        let paragraph = format!(
            "{}\n\n",
            "Kvittering mangler for denne transaksjonen. ".repeat(40)
        );
        let long = paragraph.repeat(5).trim_end().to_owned();
        assert!(long.chars().count() > 8000);
        t.openai.script([Scripted::Text(long.clone())]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_for_posts(3).await;
        t.wait_idle().await;
        let posted = t.slack.take_posted();
        assert!(posted.len() >= 3, "{}", posted.len());
        assert!(
            posted
                .iter()
                .all(|p| p.text.chars().count() <= 4000
                    && p.thread_ts.as_deref() == Some(MESSAGE_TS))
        );
        assert_eq!(
            posted.iter().map(|p| p.text.as_str()).collect::<String>(),
            long
        );
    })
    .await;
}

#[tokio::test]
async fn a_rate_limited_delivery_is_retried_and_arrives_once() {
    run_test(async |t| {
        t.slack.rate_limit_next(1, 1);
        t.openai.script([Scripted::Text("Ferdig.".into())]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_for_posts(1).await;
        t.wait_idle().await;
        assert_eq!(t.slack.take_texts(), ["Ferdig."]);
        let attempts = t.slack.post_attempts();
        assert_eq!(
            rate_limits_waited_out(&attempts),
            (1, true),
            "one 429, its Retry-After waited: {attempts:?}"
        );
    })
    .await;
}
