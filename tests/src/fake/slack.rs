//! Fake Slack Web API: `chat.postMessage`, `chat.update`,
//! `chat.postEphemeral` and `views.open` (JSON bodies, bearer auth). A body
//! is checked against Slack's document (`tests/specs/slack.json`) and its
//! blocks against Block Kit's documented limits; a trigger id opens one
//! modal, within 3 s of the click; an ephemeral message reaches only a member
//! of the channel. What Slack refuses, the fake refuses with Slack's error.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
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

impl PostedCard {
    /// The card's buttons (Approve, Reject, then Receipt when it has one).
    pub fn buttons(&self) -> Vec<Value> {
        self.blocks
            .as_array()
            .and_then(|blocks| blocks.iter().find(|b| b["type"] == "actions"))
            .and_then(|actions| actions["elements"].as_array().cloned())
            .expect("the card has buttons")
    }

    /// The Approve button's value (the proposal and the digest shown).
    pub fn approve_value(&self) -> String {
        self.buttons()[0]["value"]
            .as_str()
            .expect("a button value")
            .to_owned()
    }
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
    /// Cards the test took: (channel, ts), still updatable.
    taken_cards: Vec<(String, String)>,
    updates: Vec<UpdatedMessage>,
    /// (channel, user, text)
    ephemerals: Vec<(String, String, String)>,
    /// (trigger_id, view)
    views: Vec<(String, Value)>,
    /// Scripted failures for the next calls: HTTP 429 with this Retry-After.
    rate_limit_next: VecDeque<u64>,
    /// chat.postMessage calls to accept whose answer the client cannot read.
    garbled_next: usize,
    /// Cards to post whose answer is then lost (a 503).
    lost_card_answers_next: usize,
    /// Channels that answer `channel_not_found` (deleted, or the bot removed).
    gone_channels: HashSet<String>,
    /// Who is in which channel (for ephemeral messages).
    members: HashMap<String, HashSet<String>>,
    /// `chat.postMessage` calls answered.
    attempts: Vec<super::PostAttempt>,
    /// Trigger ids of clicks: when each was issued, and whether it was used.
    triggers: HashMap<String, (Instant, bool)>,
    next_ts: u64,
}

/// The fake Slack Web API.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Mutex<Inner>>,
    /// The files users shared (`url_private`).
    pub files: super::FileHost,
    /// Requests refused for breaking Slack's rules.
    pub refusals: super::Refusals,
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

/// Slack's answer to arguments it refuses: the code and, per problem, the
/// `[ERROR] … [json-pointer:…]` line Slack writes (`invalid_blocks` also
/// lists them as `errors`).
fn invalid(code: &str, problems: &[String]) -> Response {
    let messages: Vec<String> = problems.iter().map(|p| format!("[ERROR] {p}")).collect();
    let mut body = json!({"ok": false, "error": code, "response_metadata": {"messages": messages}});
    if code == "invalid_blocks" {
        body["errors"] = json!(problems);
    }
    Json(body).into_response()
}

/// Checks the bearer token and JSON content type as Slack does, and the
/// body against the method's document; the body on success, Slack's
/// answer otherwise (a refusal of the document is noted).
fn checked(
    fake: &FakeSlack,
    method: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<Value, Box<Response>> {
    match super::bearer(headers) {
        None => return Err(Box::new(slack_error("not_authed"))),
        Some(t) if t != fake.bot_token => return Err(Box::new(slack_error("invalid_auth"))),
        Some(_) => {}
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Box::new(slack_error("invalid_post_type")));
    }
    let body: Value =
        serde_json::from_str(body).map_err(|_| Box::new(slack_error("invalid_json")))?;
    let spec = super::spec(super::Api::Slack);
    // Slack's document gives views.open as a query (`GET`); it takes the
    // same arguments as a JSON body, checked by `view_problems`.
    if let Some((op, path)) = spec.route("POST", &format!("/{method}")) {
        let request = shared::openapi::RequestParts {
            path,
            query: &[],
            body: Some(&body),
        };
        let problems = spec.check_request(op, &request);
        if !problems.is_empty() {
            fake.refusals
                .record(format!("{method}: {}", problems.join("; ")));
            return Err(Box::new(invalid("invalid_arguments", &problems)));
        }
    }
    let problems = match (method, body.get("blocks")) {
        ("views.open", _) => view_problems(&body["view"]),
        (_, Some(blocks)) => block_problems(blocks, MAX_MESSAGE_BLOCKS, "/blocks"),
        (_, None) => Vec::new(),
    };
    if !problems.is_empty() {
        fake.refusals
            .record(format!("{method}: {}", problems.join("; ")));
        let code = if method == "views.open" {
            "invalid_arguments"
        } else {
            "invalid_blocks"
        };
        return Err(Box::new(invalid(code, &problems)));
    }
    Ok(body)
}

/// Block Kit's documented limits (docs.slack.dev, reference/block-kit).
const MAX_MESSAGE_BLOCKS: usize = 50;
const MAX_VIEW_BLOCKS: usize = 100;
const MAX_SECTION_TEXT: usize = 3_000;
const MAX_SECTION_FIELDS: usize = 10;
const MAX_FIELD_TEXT: usize = 2_000;
const MAX_HEADER_TEXT: usize = 150;
const MAX_CONTEXT_ELEMENTS: usize = 10;
const MAX_ACTIONS_ELEMENTS: usize = 25;
const MAX_BUTTON_TEXT: usize = 75;
const MAX_BUTTON_VALUE: usize = 2_000;
const MAX_ID: usize = 255;
const MAX_INPUT_LABEL: usize = 2_000;
const MAX_INPUT_LENGTH: u64 = 3_000;
const MAX_VIEW_TITLE: usize = 24;
const MAX_PRIVATE_METADATA: usize = 3_000;

/// How Block Kit words a length over its limit, at a JSON pointer.
fn too_long(value: &Value, max: usize, pointer: &str) -> Option<String> {
    let text = value.as_str()?;
    (text.chars().count() > max).then(|| {
        format!(
            "must be less than {} characters [json-pointer:{pointer}]",
            max + 1
        )
    })
}

fn too_many(value: &Value, max: usize, pointer: &str) -> Option<String> {
    let items = value.as_array()?;
    (items.len() > max)
        .then(|| format!("must provide no more than {max} items [json-pointer:{pointer}]"))
}

/// What the blocks break of Block Kit's limits.
fn block_problems(blocks: &Value, max_blocks: usize, at: &str) -> Vec<String> {
    let Some(list) = blocks.as_array() else {
        return vec![format!("must provide an array [json-pointer:{at}]")];
    };
    let mut problems: Vec<String> = too_many(blocks, max_blocks, at).into_iter().collect();
    for (i, block) in list.iter().enumerate() {
        let at = format!("{at}/{i}");
        let mut check = |value: &Value, max: usize, path: &str| {
            problems.extend(too_long(value, max, &format!("{at}{path}")));
        };
        check(&block["block_id"], MAX_ID, "/block_id");
        match block["type"].as_str() {
            Some("section") => {
                check(&block["text"]["text"], MAX_SECTION_TEXT, "/text/text");
                if let Some(fields) = block["fields"].as_array() {
                    for (f, field) in fields.iter().enumerate() {
                        check(&field["text"], MAX_FIELD_TEXT, &format!("/fields/{f}/text"));
                    }
                }
                problems.extend(too_many(
                    &block["fields"],
                    MAX_SECTION_FIELDS,
                    &format!("{at}/fields"),
                ));
            }
            Some("header") => check(&block["text"]["text"], MAX_HEADER_TEXT, "/text/text"),
            Some("context") => {
                for (e, element) in block["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    check(
                        &element["text"],
                        MAX_SECTION_TEXT,
                        &format!("/elements/{e}/text"),
                    );
                }
                problems.extend(too_many(
                    &block["elements"],
                    MAX_CONTEXT_ELEMENTS,
                    &format!("{at}/elements"),
                ));
            }
            Some("actions") => {
                for (e, element) in block["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    check(
                        &element["text"]["text"],
                        MAX_BUTTON_TEXT,
                        &format!("/elements/{e}/text/text"),
                    );
                    check(
                        &element["value"],
                        MAX_BUTTON_VALUE,
                        &format!("/elements/{e}/value"),
                    );
                    check(
                        &element["action_id"],
                        MAX_ID,
                        &format!("/elements/{e}/action_id"),
                    );
                }
                problems.extend(too_many(
                    &block["elements"],
                    MAX_ACTIONS_ELEMENTS,
                    &format!("{at}/elements"),
                ));
            }
            Some("input") => {
                check(&block["label"]["text"], MAX_INPUT_LABEL, "/label/text");
                let max_length = block["element"]["max_length"].as_u64().unwrap_or(0);
                if max_length > MAX_INPUT_LENGTH {
                    problems.push(format!(
                        "must be less than {} [json-pointer:{at}/element/max_length]",
                        MAX_INPUT_LENGTH + 1
                    ));
                }
            }
            Some("divider" | "image" | "rich_text" | "markdown" | "file" | "video") => {}
            other => problems.push(format!(
                "unknown block type {other:?} [json-pointer:{at}/type]"
            )),
        }
    }
    problems
}

/// What a modal breaks of its limits.
fn view_problems(view: &Value) -> Vec<String> {
    if view["type"] != "modal" {
        return vec!["must be a modal view [json-pointer:/view/type]".to_owned()];
    }
    let mut problems: Vec<String> = [
        too_long(&view["title"]["text"], MAX_VIEW_TITLE, "/view/title/text"),
        too_long(&view["submit"]["text"], MAX_VIEW_TITLE, "/view/submit/text"),
        too_long(&view["close"]["text"], MAX_VIEW_TITLE, "/view/close/text"),
        too_long(
            &view["private_metadata"],
            MAX_PRIVATE_METADATA,
            "/view/private_metadata",
        ),
        too_long(&view["callback_id"], MAX_ID, "/view/callback_id"),
    ]
    .into_iter()
    .flatten()
    .collect();
    problems.extend(block_problems(
        &view["blocks"],
        MAX_VIEW_BLOCKS,
        "/view/blocks",
    ));
    problems
}

/// How long a click's trigger id opens a modal.
const TRIGGER_TTL: Duration = Duration::from_secs(3);

async fn update_message(
    State(fake): State<FakeSlack>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = match checked(&fake, "chat.update", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let (Some(channel), Some(ts)) = (body["channel"].as_str(), body["ts"].as_str()) else {
        return slack_error("message_not_found");
    };
    let mut inner = fake.inner.lock().unwrap();
    let posted = inner
        .cards
        .iter()
        .any(|c| c.channel == channel && c.ts == ts)
        || inner
            .taken_cards
            .iter()
            .any(|(c, t)| c == channel && t == ts);
    if !posted {
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
    let body = match checked(&fake, "chat.postEphemeral", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let (Some(channel), Some(user), Some(text)) = (
        body["channel"].as_str(),
        body["user"].as_str(),
        body["text"].as_str(),
    ) else {
        return slack_error("invalid_arguments");
    };
    let mut inner = fake.inner.lock().unwrap();
    if !inner.members.get(channel).is_some_and(|m| m.contains(user)) {
        return slack_error("user_not_in_channel");
    }
    inner
        .ephemerals
        .push((channel.to_owned(), user.to_owned(), text.to_owned()));
    Json(json!({"ok": true, "message_ts": "1700000000.000001"})).into_response()
}

async fn open_view(State(fake): State<FakeSlack>, headers: HeaderMap, body: String) -> Response {
    let body = match checked(&fake, "views.open", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let Some(trigger) = body["trigger_id"].as_str() else {
        return invalid(
            "invalid_arguments",
            &["missing required field: trigger_id".to_owned()],
        );
    };
    let mut inner = fake.inner.lock().unwrap();
    match inner.triggers.get_mut(trigger) {
        None => return slack_error("invalid_trigger_id"),
        Some((_, true)) => return slack_error("exchanged_trigger_id"),
        Some((issued, _)) if issued.elapsed() > TRIGGER_TTL => {
            return slack_error("expired_trigger_id");
        }
        Some((_, used)) => *used = true,
    }
    inner.views.push((trigger.to_owned(), body["view"].clone()));
    Json(json!({"ok": true, "view": {"id": "VFAKE1", "type": "modal"}})).into_response()
}

/// `url_private`: only with the bot token.
async fn serve_file(
    State(fake): State<FakeSlack>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorized = super::bearer(&headers).as_deref() == Some(fake.bot_token.as_str());
    fake.files.answer(&path, authorized)
}

/// Slack's longest accepted `text`.
const MAX_TEXT: usize = 40_000;

impl FakeSlack {
    /// Starts the fake; only `bot_token` is accepted.
    pub async fn start(bot_token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            next_ts: u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
            ..Inner::default()
        }));
        let mut fake = Self {
            inner,
            files: super::FileHost::default(),
            refusals: super::Refusals::default(),
            posted_total: Arc::new(tokio::sync::watch::Sender::new(0)),
            bot_token: bot_token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route(
                "/api/conversations.history",
                axum::routing::get(conversations_history),
            )
            .route("/api/chat.update", post(update_message))
            .route("/api/chat.postEphemeral", post(post_ephemeral))
            .route("/api/views.open", post(open_view))
            .route("/files/{*path}", axum::routing::get(serve_file))
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}/api");
        fake
    }

    /// Where the fake serves files (`url_private`), for the gateway's
    /// `files.slack_base_url`.
    pub fn files_base_url(&self) -> String {
        self.base_url.replace("/api", "/files/")
    }

    /// Plain messages posted to `channel` waiting to be taken.
    pub fn posted_in(&self, channel: &str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .posted
            .iter()
            .filter(|p| p.channel == channel)
            .count()
    }

    /// Takes the plain messages posted to `channel`, oldest first.
    pub fn take_posted_in(&self, channel: &str) -> Vec<PostedMessage> {
        let mut inner = self.inner.lock().unwrap();
        let (taken, kept) = std::mem::take(&mut inner.posted)
            .into_iter()
            .partition(|p| p.channel == channel);
        inner.posted = kept;
        taken.into()
    }

    /// Serves a file a user shared; its `url_private`.
    pub fn add_file(&self, name: &str, bytes: Vec<u8>, content_type: &str) -> String {
        let path = format!("F{}/{name}", uuid::Uuid::new_v4().simple());
        self.files.put(&path, bytes, content_type);
        format!("{}{path}", self.files_base_url())
    }

    /// Posts the next `n` messages but answers `ok: true` with a `ts` of
    /// the wrong type.
    pub fn garble_next(&self, n: usize) {
        self.inner.lock().unwrap().garbled_next += n;
    }

    /// Posts the next `n` cards (Block Kit messages) and answers 503, as
    /// when Slack's answer is lost after it posted.
    pub fn lose_card_answers_next(&self, n: usize) {
        self.inner.lock().unwrap().lost_card_answers_next += n;
    }

    /// Answers the next `n` calls with HTTP 429 and `Retry-After: secs`.
    pub fn rate_limit_next(&self, n: usize, secs: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.rate_limit_next.extend(std::iter::repeat_n(secs, n));
    }

    /// Makes `user` a member of `channel`.
    pub fn join(&self, channel: &str, user: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .members
            .entry(channel.to_owned())
            .or_default()
            .insert(user.to_owned());
    }

    /// Notes the trigger id of a click (an interaction Slack sent): it may
    /// open one modal within 3 s.
    pub fn issue_trigger(&self, trigger_id: &str) {
        self.issue_trigger_at(trigger_id, Instant::now());
    }

    /// Like [`Self::issue_trigger`], issued at `at`.
    pub fn issue_trigger_at(&self, trigger_id: &str, at: Instant) {
        let mut inner = self.inner.lock().unwrap();
        inner.triggers.insert(trigger_id.to_owned(), (at, false));
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

    /// Takes the texts of the posted messages so far, oldest first.
    pub fn take_texts(&self) -> Vec<String> {
        self.take_posted().into_iter().map(|p| p.text).collect()
    }

    /// Review cards (Block Kit messages) posted and not taken, oldest first.
    pub fn cards(&self) -> Vec<PostedCard> {
        self.inner.lock().unwrap().cards.clone()
    }

    /// Takes the review cards posted so far (they stay known to
    /// `chat.update`).
    pub fn take_cards(&self) -> Vec<PostedCard> {
        let mut inner = self.inner.lock().unwrap();
        let cards = std::mem::take(&mut inner.cards);
        inner
            .taken_cards
            .extend(cards.iter().map(|c| (c.channel.clone(), c.ts.clone())));
        cards
    }

    /// `chat.update` calls not taken.
    pub fn updates(&self) -> Vec<UpdatedMessage> {
        self.inner.lock().unwrap().updates.clone()
    }

    /// Takes the `chat.update` calls so far.
    pub fn take_updates(&self) -> Vec<UpdatedMessage> {
        std::mem::take(&mut self.inner.lock().unwrap().updates)
    }

    /// Ephemeral messages not taken: (channel, user, text).
    pub fn ephemerals(&self) -> Vec<(String, String, String)> {
        self.inner.lock().unwrap().ephemerals.clone()
    }

    /// Takes the ephemeral messages so far.
    pub fn take_ephemerals(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.inner.lock().unwrap().ephemerals)
    }

    /// Modals opened and not taken: (trigger_id, view).
    pub fn views(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().views.clone()
    }

    /// Takes the modals opened so far.
    pub fn take_views(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.inner.lock().unwrap().views)
    }

    /// Waits (without polling) until `n` plain messages have been posted
    /// since the start, taken or not.
    pub async fn wait_posted_total(&self, n: usize) {
        let mut posted = self.posted_total.subscribe();
        // The sender lives as long as `self`.
        let _ = posted.wait_for(|total| *total >= n).await;
    }

    /// The `chat.postMessage` calls answered so far, 429s included.
    pub fn post_attempts(&self) -> Vec<super::PostAttempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// How many posted messages are waiting to be taken.
    pub fn posted_count(&self) -> usize {
        self.inner.lock().unwrap().posted.len()
    }
}

/// `GET conversations.history?channel=&oldest=&limit=`: the channel's cards
/// after `oldest`, newest first.
async fn conversations_history(
    State(fake): State<FakeSlack>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    match super::bearer(&headers) {
        None => return slack_error("not_authed"),
        Some(t) if t != fake.bot_token => return slack_error("invalid_auth"),
        Some(_) => {}
    }
    let spec = super::spec(super::Api::Slack);
    let Some((op, path)) = spec.route("GET", "/conversations.history") else {
        return slack_error("unknown_method");
    };
    let request = shared::openapi::RequestParts {
        path,
        query: &query,
        body: None,
    };
    let problems = spec.check_request(op, &request);
    if !problems.is_empty() {
        fake.refusals
            .record(format!("conversations.history: {}", problems.join("; ")));
        return invalid("invalid_arguments", &problems);
    }
    let value = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(channel), oldest) = (value("channel"), value("oldest")) else {
        return slack_error("channel_not_found");
    };
    let oldest: f64 = oldest.and_then(|o| o.parse().ok()).unwrap_or(0.0);
    let inner = fake.inner.lock().unwrap();
    let mut messages: Vec<Value> = inner
        .cards
        .iter()
        .filter(|c| c.channel == channel && c.ts.parse::<f64>().unwrap_or(0.0) > oldest)
        .map(|c| json!({"type": "message", "ts": c.ts, "text": c.text, "blocks": c.blocks, "bot_id": "B0FAKE"}))
        .collect();
    messages.reverse();
    Json(json!({"ok": true, "messages": messages, "has_more": false})).into_response()
}

async fn post_message(State(fake): State<FakeSlack>, headers: HeaderMap, body: String) -> Response {
    let limited = {
        let mut inner = fake.inner.lock().unwrap();
        let limited = inner.rate_limit_next.pop_front();
        inner.attempts.push(super::PostAttempt {
            at: Instant::now(),
            retry_after: limited.map(Duration::from_secs),
        });
        limited
    };
    if let Some(secs) = limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "",
        )
            .into_response();
    }
    let body = match checked(&fake, "chat.postMessage", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
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
        Some(blocks) if blocks.is_array() => {
            inner.cards.push(PostedCard {
                channel: channel.clone(),
                ts: ts.clone(),
                text: text.clone(),
                blocks,
            });
            if inner.lost_card_answers_next > 0 {
                inner.lost_card_answers_next -= 1;
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
        Some(_) => {
            return invalid(
                "invalid_blocks",
                &["must provide an array [json-pointer:/blocks]".to_owned()],
            );
        }
        None => {
            inner.posted.push_back(PostedMessage {
                channel: channel.clone(),
                thread_ts: req.thread_ts.clone(),
                text: text.clone(),
            });
            fake.posted_total.send_modify(|n| *n += 1);
        }
    }
    if inner.garbled_next > 0 {
        inner.garbled_next -= 1;
        return Json(json!({"ok": true, "channel": channel, "ts": 17})).into_response();
    }
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "bot_id": "B0FAKE", "thread_ts": req.thread_ts}
    }))
    .into_response()
}
