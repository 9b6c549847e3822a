//! Fake Telegram Bot API 10.1: sendMessage, sendChatAction, deleteWebhook,
//! getUpdates. Bodies are checked against Telegram's document
//! (`tests/specs/telegram.json`), a forum topic must exist, and `getUpdates`
//! is refused while a webhook is set, as on Telegram. Method names match
//! case-insensitively, as on Telegram.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A message the product sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramPost {
    /// Chat id.
    pub chat_id: i64,
    /// Forum topic, if any.
    pub message_thread_id: Option<i64>,
    /// Text.
    pub text: String,
}

#[derive(Default)]
struct Inner {
    posts: VecDeque<TelegramPost>,
    chat_actions: u32,
    retry_after_next: u32,
    /// sendMessage calls to accept whose answer the client cannot read.
    garbled_next: u32,
    next_id: i64,
    updates: Vec<Value>,
    polls: u32,
    /// Forum topics that exist: (chat, message_thread_id).
    topics: HashSet<(i64, i64)>,
    /// Whether a webhook is set (the bot gets updates by webhook, not
    /// `getUpdates`).
    webhook_set: bool,
    /// sendMessage calls answered.
    attempts: Vec<super::PostAttempt>,
    /// Files users sent: `file_id` → (`file_path`, size).
    file_ids: std::collections::HashMap<String, (String, usize)>,
}

/// The fake Bot API.
#[derive(Clone)]
pub struct FakeTelegram {
    inner: Arc<Mutex<Inner>>,
    /// The files users sent, by `file_path`.
    pub files: super::FileHost,
    /// Requests refused for breaking Telegram's rules.
    pub refusals: super::Refusals,
    token: String,
    /// Base URL to configure as `telegram.api_base_url`.
    pub base_url: String,
}

fn failure(code: u16, description: &str) -> Response {
    let status = axum::http::StatusCode::from_u16(code).unwrap();
    (
        status,
        Json(json!({ "ok": false, "error_code": code, "description": description })),
    )
        .into_response()
}

impl FakeTelegram {
    /// Starts the fake; only `token` is accepted.
    pub async fn start(token: &str) -> Self {
        let mut fake = Self {
            inner: Arc::new(Mutex::new(Inner {
                webhook_set: true,
                ..Inner::default()
            })),
            files: super::FileHost::default(),
            refusals: super::Refusals::default(),
            token: token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/{bot}/{method}", post(method))
            .route("/file/{bot}/{*path}", axum::routing::get(serve_file))
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}");
        fake
    }

    /// Keeps a file a user sent; its `file_id` (as in a photo or document).
    pub fn add_file(&self, bytes: &[u8], content_type: &str) -> String {
        let id = format!("AgAC{}", uuid::Uuid::new_v4().simple());
        let path = format!(
            "photos/file_{}.jpg",
            self.inner.lock().unwrap().file_ids.len()
        );
        self.files.put(&path, bytes.to_vec(), content_type);
        self.inner
            .lock()
            .unwrap()
            .file_ids
            .insert(id.clone(), (path, bytes.len()));
        id
    }

    /// Answers the next `n` sendMessage calls with 429 and `retry_after: 1`.
    pub fn retry_after_next(&self, n: u32) {
        self.inner.lock().unwrap().retry_after_next += n;
    }

    /// Accepts the next `n` sendMessage calls (the message is sent) but
    /// answers `ok: true` with a message of the wrong shape.
    pub fn garble_next(&self, n: u32) {
        self.inner.lock().unwrap().garbled_next += n;
    }

    /// Takes the sent messages so far, oldest first.
    pub fn take_posts(&self) -> Vec<TelegramPost> {
        self.inner.lock().unwrap().posts.drain(..).collect()
    }

    /// How many sent messages are waiting to be taken.
    pub fn post_count(&self) -> usize {
        self.inner.lock().unwrap().posts.len()
    }

    /// Makes an update available to `getUpdates`.
    pub fn push_update(&self, update: Value) {
        self.note_topic(&update);
        self.inner.lock().unwrap().updates.push(update);
    }

    /// Makes the forum topic of an update's message exist (the message was
    /// written in it).
    pub fn note_topic(&self, update: &Value) {
        let message = &update["message"];
        if let (Some(chat), Some(topic)) = (
            message["chat"]["id"].as_i64(),
            message["message_thread_id"].as_i64(),
        ) {
            self.add_topic(chat, topic);
        }
    }

    /// `getUpdates` calls received.
    pub fn polls(&self) -> u32 {
        self.inner.lock().unwrap().polls
    }

    /// Chat actions (typing) received.
    pub fn chat_actions(&self) -> u32 {
        self.inner.lock().unwrap().chat_actions
    }

    /// Makes forum topic `thread` exist in `chat`.
    pub fn add_topic(&self, chat: i64, thread: i64) {
        self.inner.lock().unwrap().topics.insert((chat, thread));
    }

    /// The sendMessage calls answered so far, 429s included.
    pub fn post_attempts(&self) -> Vec<super::PostAttempt> {
        self.inner.lock().unwrap().attempts.clone()
    }
}

/// A file's URL: `/file/bot<token>/<file_path>`.
async fn serve_file(state: State<FakeTelegram>, path: Path<(String, String)>) -> Response {
    let (bot, file_path) = &path.0;
    state
        .files
        .answer(file_path, *bot == format!("bot{}", state.token))
}

async fn method(
    state: State<FakeTelegram>,
    path: Path<(String, String)>,
    body: String,
) -> Response {
    let response = method_now(&state.0, &path.0, &body);
    if response.headers().contains_key("x-fake-idle-poll") {
        // A short long-poll, so an idle poller does not spin.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    response
}

fn method_now(fake: &FakeTelegram, (bot, method): &(String, String), body: &str) -> Response {
    if *bot != format!("bot{}", fake.token) {
        return failure(401, "Unauthorized");
    }
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return failure(400, "Bad Request: invalid JSON");
    };
    let spec = super::spec(super::Api::Telegram);
    let path = format!("/{bot}/{method}");
    // Method names match case-insensitively; the document spells them once.
    let op = spec.route("POST", &path).or_else(|| {
        let known = [
            "sendMessage",
            "sendChatAction",
            "getUpdates",
            "deleteWebhook",
            "getFile",
        ];
        let name = known.iter().find(|k| k.eq_ignore_ascii_case(method))?;
        spec.route("POST", &format!("/{bot}/{name}"))
    });
    let Some((op, params)) = op else {
        return failure(404, "Not Found");
    };
    let request = shared::openapi::RequestParts {
        path: params,
        query: &[],
        body: Some(&body),
    };
    let problems = spec.check_request(op, &request);
    if !problems.is_empty() {
        fake.refusals
            .record(format!("{method}: {}", problems.join("; ")));
        return failure(400, &format!("Bad Request: {}", problems.join("; ")));
    }
    let mut inner = fake.inner.lock().unwrap();
    let topic = body["message_thread_id"].as_i64();
    if let (Some(chat), Some(topic)) = (body["chat_id"].as_i64(), topic)
        && !inner.topics.contains(&(chat, topic))
    {
        return failure(400, "Bad Request: message thread not found");
    }
    match method.to_ascii_lowercase().as_str() {
        "sendmessage" => {
            let limited = inner.retry_after_next > 0;
            inner.attempts.push(super::PostAttempt {
                at: Instant::now(),
                retry_after: limited.then(|| Duration::from_secs(1)),
            });
            if limited {
                inner.retry_after_next -= 1;
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
                                 "parameters": { "retry_after": 1 } })),
                )
                    .into_response();
            }
            let (Some(chat_id), Some(text)) = (body["chat_id"].as_i64(), body["text"].as_str())
            else {
                return failure(400, "Bad Request: chat_id and text are required");
            };
            if text.is_empty() {
                return failure(400, "Bad Request: message text is empty");
            }
            if text.encode_utf16().count() > 4096 {
                return failure(400, "Bad Request: message is too long");
            }
            let thread = body["message_thread_id"].as_i64();
            inner.next_id += 1;
            inner.posts.push_back(TelegramPost {
                chat_id,
                message_thread_id: thread,
                text: text.to_owned(),
            });
            let chat = if chat_id < 0 {
                json!({ "id": chat_id, "type": "supergroup", "title": "Regnskap", "is_forum": true })
            } else {
                json!({ "id": chat_id, "type": "private", "first_name": "Kari" })
            };
            let mut message = json!({ "message_id": 1000 + inner.next_id, "date": 1_780_315_300, "chat": chat, "text": text,
                "from": { "id": 222_222_222, "is_bot": true, "first_name": "Book-E" } });
            if let Some(thread) = thread {
                message["message_thread_id"] = json!(thread);
                message["is_topic_message"] = json!(true);
            }
            if inner.garbled_next > 0 {
                inner.garbled_next -= 1;
                message["date"] = json!("yesterday");
            }
            Json(json!({ "ok": true, "result": message })).into_response()
        }
        "sendchataction" => {
            inner.chat_actions += 1;
            Json(json!({ "ok": true, "result": true })).into_response()
        }
        "getfile" => {
            let id = body["file_id"].as_str().unwrap_or_default();
            match inner.file_ids.get(id) {
                Some((path, size)) => Json(json!({ "ok": true, "result": {
                    "file_id": id, "file_unique_id": format!("u{}", &id[..8]),
                    "file_size": size, "file_path": path } }))
                .into_response(),
                None => failure(400, "Bad Request: invalid file_id"),
            }
        }
        "deletewebhook" => {
            inner.webhook_set = false;
            Json(json!({ "ok": true, "result": true })).into_response()
        }
        "getupdates" if inner.webhook_set => failure(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
        ),
        "getupdates" => {
            // Updates with an id at or after `offset` (confirming the earlier ones).
            inner.polls += 1;
            let offset = body["offset"].as_i64().unwrap_or(0);
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            let pending = inner.updates.clone();
            let idle = pending.is_empty();
            let mut response = Json(json!({ "ok": true, "result": pending })).into_response();
            if idle {
                response.headers_mut().insert(
                    "x-fake-idle-poll",
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            response
        }
        _ => failure(404, "Not Found"),
    }
}
