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
use serde_json::{Value, json};

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

/// A Block Kit message the product posted (a review card).
#[derive(Debug, Clone, PartialEq)]
pub struct PostedCard {
    /// Channel id.
    pub channel: String,
    /// Its `ts`.
    pub ts: String,
    /// Notification text.
    pub text: String,
    /// The blocks.
    pub blocks: Value,
}

/// A `chat.update` the product made.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdatedMessage {
    /// Channel id.
    pub channel: String,
    /// The updated message's `ts`.
    pub ts: String,
    /// New text.
    pub text: String,
    /// New blocks.
    pub blocks: Value,
}

#[derive(Default)]
struct Inner {
    posted: VecDeque<PostedMessage>,
    cards: Vec<PostedCard>,
    updates: Vec<UpdatedMessage>,
    /// (channel, user, text)
    ephemerals: Vec<(String, String, String)>,
    /// (trigger_id, view)
    views: Vec<(String, Value)>,
    /// Scripted failures for the next calls: HTTP 429 with this Retry-After.
    rate_limit_next: VecDeque<u64>,
    /// Channels that answer `channel_not_found` (deleted, or the bot removed).
    gone_channels: std::collections::HashSet<String>,
    next_ts: u64,
}

/// The fake Slack Web API.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Mutex<Inner>>,
    /// Plain messages posted since the start (never taken back).
    posted_total: Arc<tokio::sync::watch::Sender<usize>>,
    bot_token: String,
    /// Base URL to configure as `slack.api_base_url`.
    pub base_url: String,
}

#[derive(Deserialize)]
struct PostMessage {
    channel: Option<String>,
    text: Option<String>,
    thread_ts: Option<String>,
    blocks: Option<Value>,
}

/// Slack's answer to a refused call: HTTP 200 with `ok: false` and the code.
fn slack_error(code: &str) -> Response {
    Json(json!({"ok": false, "error": code})).into_response()
}

/// Checks the bearer token and JSON content type as Slack does; the body on
/// success, Slack's error code otherwise.
fn authorized_json(
    fake: &FakeSlack,
    headers: &HeaderMap,
    body: &str,
) -> Result<Value, &'static str> {
    match super::bearer(headers) {
        None => return Err("not_authed"),
        Some(t) if t != fake.bot_token => return Err("invalid_auth"),
        Some(_) => {}
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err("invalid_post_type");
    }
    serde_json::from_str(body).map_err(|_| "invalid_form_data")
}

async fn update_message(
    State(fake): State<FakeSlack>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = match authorized_json(&fake, &headers, &body) {
        Ok(body) => body,
        Err(code) => return slack_error(code),
    };
    let (Some(channel), Some(ts)) = (body["channel"].as_str(), body["ts"].as_str()) else {
        return slack_error("message_not_found");
    };
    let mut inner = fake.inner.lock().unwrap();
    if !inner
        .cards
        .iter()
        .any(|c| c.channel == channel && c.ts == ts)
    {
        return slack_error("message_not_found");
    }
    let text = body["text"].as_str().unwrap_or_default().to_owned();
    inner.updates.push(UpdatedMessage {
        channel: channel.to_owned(),
        ts: ts.to_owned(),
        text: text.clone(),
        blocks: body["blocks"].clone(),
    });
    Json(json!({"ok": true, "channel": channel, "ts": ts, "text": text})).into_response()
}

async fn post_ephemeral(
    State(fake): State<FakeSlack>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = match authorized_json(&fake, &headers, &body) {
        Ok(body) => body,
        Err(code) => return slack_error(code),
    };
    let (Some(channel), Some(user), Some(text)) = (
        body["channel"].as_str(),
        body["user"].as_str(),
        body["text"].as_str(),
    ) else {
        return slack_error("invalid_arguments");
    };
    fake.inner.lock().unwrap().ephemerals.push((
        channel.to_owned(),
        user.to_owned(),
        text.to_owned(),
    ));
    Json(json!({"ok": true, "message_ts": "1700000000.000001"})).into_response()
}

async fn open_view(State(fake): State<FakeSlack>, headers: HeaderMap, body: String) -> Response {
    let body = match authorized_json(&fake, &headers, &body) {
        Ok(body) => body,
        Err(code) => return slack_error(code),
    };
    let (Some(trigger), true) = (body["trigger_id"].as_str(), body["view"]["type"] == "modal")
    else {
        return slack_error("invalid_arguments");
    };
    fake.inner
        .lock()
        .unwrap()
        .views
        .push((trigger.to_owned(), body["view"].clone()));
    Json(json!({"ok": true, "view": {"id": "VFAKE1", "type": "modal"}})).into_response()
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
            posted_total: Arc::new(tokio::sync::watch::Sender::new(0)),
            bot_token: bot_token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update_message))
            .route("/api/chat.postEphemeral", post(post_ephemeral))
            .route("/api/views.open", post(open_view))
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

    /// Makes `channel` answer `channel_not_found` (`gone`), or not any more.
    pub fn set_channel_gone(&self, channel: &str, gone: bool) {
        let mut inner = self.inner.lock().unwrap();
        if gone {
            inner.gone_channels.insert(channel.to_owned());
        } else {
            inner.gone_channels.remove(channel);
        }
    }

    /// Takes the posted messages so far, oldest first.
    pub fn take_posted(&self) -> Vec<PostedMessage> {
        self.inner.lock().unwrap().posted.drain(..).collect()
    }

    /// Review cards (Block Kit messages) posted so far.
    pub fn cards(&self) -> Vec<PostedCard> {
        self.inner.lock().unwrap().cards.clone()
    }

    /// `chat.update` calls so far.
    pub fn updates(&self) -> Vec<UpdatedMessage> {
        self.inner.lock().unwrap().updates.clone()
    }

    /// Ephemeral messages so far: (channel, user, text).
    pub fn ephemerals(&self) -> Vec<(String, String, String)> {
        self.inner.lock().unwrap().ephemerals.clone()
    }

    /// Modals opened so far: (trigger_id, view).
    pub fn views(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().views.clone()
    }

    /// Waits (without polling) until `n` plain messages have been posted
    /// since the start, taken or not.
    pub async fn wait_posted_total(&self, n: usize) {
        let mut posted = self.posted_total.subscribe();
        // The sender lives as long as `self`.
        let _ = posted.wait_for(|total| *total >= n).await;
    }

    /// How many posted messages are waiting to be taken.
    pub fn posted_count(&self) -> usize {
        self.inner.lock().unwrap().posted.len()
    }
}

async fn post_message(State(fake): State<FakeSlack>, headers: HeaderMap, body: String) -> Response {
    if let Some(secs) = fake.inner.lock().unwrap().rate_limit_next.pop_front() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "",
        )
            .into_response();
    }
    let body = match authorized_json(&fake, &headers, &body) {
        Ok(body) => body,
        Err(code) => return slack_error(code),
    };
    let Ok(req) = serde_json::from_value::<PostMessage>(body) else {
        return slack_error("invalid_form_data");
    };
    let Some(channel) = req.channel.filter(|c| !c.is_empty()) else {
        return slack_error("channel_not_found");
    };
    if fake.inner.lock().unwrap().gone_channels.contains(&channel) {
        return slack_error("channel_not_found");
    }
    let Some(text) = req.text.filter(|t| !t.is_empty()) else {
        return slack_error("no_text");
    };
    if text.chars().count() > MAX_TEXT {
        return slack_error("msg_too_long");
    }
    let mut inner = fake.inner.lock().unwrap();
    inner.next_ts += 1;
    let ts = format!("{}.000100", inner.next_ts);
    match req.blocks {
        Some(blocks) if blocks.is_array() => inner.cards.push(PostedCard {
            channel: channel.clone(),
            ts: ts.clone(),
            text: text.clone(),
            blocks,
        }),
        Some(_) => return Json(json!({"ok": false, "error": "invalid_blocks"})).into_response(),
        None => {
            inner.posted.push_back(PostedMessage {
                channel: channel.clone(),
                thread_ts: req.thread_ts.clone(),
                text: text.clone(),
            });
            fake.posted_total.send_modify(|n| *n += 1);
        }
    }
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "bot_id": "B0FAKE", "thread_ts": req.thread_ts}
    }))
    .into_response()
}
