//! A load of Slack messages for fault tests: `conversations` threads of
//! `per_conversation` messages each, from two authors taking turns (so no
//! two are folded into one turn), answered by the fake model's echo. Every
//! accepted message must come back exactly once, in order per thread.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::{TestEnv, fixture};

/// Authors taking turns in every thread.
const AUTHORS: [&str; 2] = ["W111", "W222"];

/// The load.
#[derive(Debug, Clone, Copy)]
pub struct SlackLoad {
    /// Threads.
    pub conversations: usize,
    /// Messages per thread (the first starts it).
    pub per_conversation: usize,
}

impl SlackLoad {
    /// The thread parent `ts` of conversation `c`.
    pub fn root_ts(c: usize) -> String {
        format!("1700000{c:03}.000100")
    }

    fn ts(c: usize, m: usize) -> String {
        format!("1700000{c:03}.{:06}", 100 + m)
    }

    /// The text of message `m` of conversation `c`.
    pub fn text(c: usize, m: usize) -> String {
        format!("conversation {c} message {m}")
    }

    /// The Slack event of message `m` of conversation `c`.
    pub fn event(c: usize, m: usize) -> String {
        let mut event: serde_json::Value =
            serde_json::from_str(&fixture("slack/event_callback.message.json")).unwrap();
        event["event_id"] = json!(format!("Ev{c:03}{m:03}"));
        event["event"]["ts"] = json!(Self::ts(c, m));
        event["event"]["event_ts"] = json!(Self::ts(c, m));
        event["event"]["text"] = json!(Self::text(c, m));
        event["event"]["user"] = json!(AUTHORS[m % 2]);
        event["event"]["client_msg_id"] = json!(uuid::Uuid::new_v4().to_string());
        if m > 0 {
            event["event"]["thread_ts"] = json!(Self::root_ts(c));
        }
        event.to_string()
    }

    /// Posts message `m` of every conversation, each until the gateway
    /// acknowledges it (as Slack retries a delivery that got no 2xx);
    /// returns how many posts the gateway refused on the way.
    pub async fn post_round(&self, t: &TestEnv, m: usize) -> usize {
        let mut refused = 0;
        for c in 0..self.conversations {
            let body = Self::event(c, m);
            let mut tries = 0;
            loop {
                let status = t.post_slack_event(&body).await;
                if status == 200 {
                    break;
                }
                refused += 1;
                tries += 1;
                assert!(
                    tries < 120,
                    "message {c}/{m} never acknowledged (last {status})"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        refused
    }

    /// Posts every round in order; returns the posts refused on the way.
    pub async fn post_all(&self, t: &TestEnv) -> usize {
        let mut refused = 0;
        for m in 0..self.per_conversation {
            refused += self.post_round(t, m).await;
        }
        refused
    }

    /// Total messages.
    pub fn total(&self) -> usize {
        self.conversations * self.per_conversation
    }

    /// The echoes expected in each thread, in order.
    fn expected(&self) -> BTreeMap<String, Vec<String>> {
        (0..self.conversations)
            .map(|c| {
                let echoes = (0..self.per_conversation)
                    .map(|m| format!("echo: {}", Self::text(c, m)))
                    .collect();
                (Self::root_ts(c), echoes)
            })
            .collect()
    }

    /// Asserts every message was answered exactly once and in arrival order
    /// (one reply event per message in each conversation's stream, in
    /// order), each message recorded once, and each reply posted to Slack
    /// exactly once in its thread, in the order of the messages.
    pub async fn assert_answered_once_in_order(&self, t: &TestEnv) {
        let replies =
            t.db.conversation_texts("automate_e.conversation.reply_composed.v1")
                .await;
        assert_eq!(
            replies,
            self.expected(),
            "replies per thread, in stream order"
        );
        let received =
            t.db.conversation_texts("automate_e.conversation.message_received.v1")
                .await;
        let texts: BTreeMap<String, Vec<String>> = (0..self.conversations)
            .map(|c| {
                let texts = (0..self.per_conversation)
                    .map(|m| Self::text(c, m))
                    .collect();
                (Self::root_ts(c), texts)
            })
            .collect();
        assert_eq!(
            received, texts,
            "messages per thread, in arrival order, once each"
        );
        let mut posted = BTreeMap::<String, Vec<String>>::new();
        for post in t.slack.take_posted() {
            let thread = post.thread_ts.expect("replies go into the thread");
            posted.entry(thread).or_default().push(post.text);
        }
        assert_eq!(
            posted,
            self.expected(),
            "each reply posted exactly once, in order in its thread"
        );
    }
}
