//! Fake Slack Web API: `chat.postMessage` as specified in
//! `slack/web-api/slack_web_openapi_v3.derived.json` (JSON body, bearer auth).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// A message the product posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    /// Channel id.
    pub channel: String,
    /// Thread parent `ts`, if any.
    pub thread_ts: Option<String>,
    /// Text.
    pub text: String,
}

#[derive(Default)]
struct Inner {
    posted: VecDeque<PostedMessage>,
    /// Scripted failures for the next calls: HTTP 429 with this Retry-After.
    rate_limit_next: VecDeque<u64>,
    next_ts: u64,
}

/// The fake Slack Web API.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Mutex<Inner>>,
    bot_token: String,
    /// Base URL to configure as `slack.api_base_url`.
    pub base_url: String,
}

#[derive(Deserialize)]
struct PostMessage {
    channel: Option<String>,
    text: Option<String>,
    thread_ts: Option<String>,
}

/// Slack's longest accepted `text`.
const MAX_TEXT: usize = 40_000;

impl FakeSlack {
    /// Starts the fake; only `bot_token` is accepted.
    pub async fn start(bot_token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            next_ts: 1_700_000_000,
            ..Inner::default()
        }));
        let mut fake = Self {
            inner,
            bot_token: bot_token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}/api");
        fake
    }

    /// Answers the next `n` calls with HTTP 429 and `Retry-After: secs`.
    pub fn rate_limit_next(&self, n: usize, secs: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.rate_limit_next.extend(std::iter::repeat_n(secs, n));
    }

    /// Takes the posted messages so far, oldest first.
    pub fn take_posted(&self) -> Vec<PostedMessage> {
        self.inner.lock().unwrap().posted.drain(..).collect()
    }

    /// How many posted messages are waiting to be taken.
    pub fn posted_count(&self) -> usize {
        self.inner.lock().unwrap().posted.len()
    }
}

async fn post_message(State(fake): State<FakeSlack>, headers: HeaderMap, body: String) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    if let Some(secs) = inner.rate_limit_next.pop_front() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "",
        )
            .into_response();
    }
    match super::bearer(&headers) {
        None => return Json(json!({"ok": false, "error": "not_authed"})).into_response(),
        Some(t) if t != fake.bot_token => {
            return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
        }
        Some(_) => {}
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Json(json!({"ok": false, "error": "invalid_post_type"})).into_response();
    }
    let Ok(req) = serde_json::from_str::<PostMessage>(&body) else {
        return Json(json!({"ok": false, "error": "invalid_form_data"})).into_response();
    };
    let Some(channel) = req.channel.filter(|c| !c.is_empty()) else {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    };
    let Some(text) = req.text.filter(|t| !t.is_empty()) else {
        return Json(json!({"ok": false, "error": "no_text"})).into_response();
    };
    if text.chars().count() > MAX_TEXT {
        return Json(json!({"ok": false, "error": "msg_too_long"})).into_response();
    }
    inner.next_ts += 1;
    let ts = format!("{}.000100", inner.next_ts);
    inner.posted.push_back(PostedMessage {
        channel: channel.clone(),
        thread_ts: req.thread_ts.clone(),
        text: text.clone(),
    });
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "bot_id": "B0FAKE", "thread_ts": req.thread_ts}
    }))
    .into_response()
}
