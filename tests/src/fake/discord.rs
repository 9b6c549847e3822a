//! Fake Discord REST API v10 (`discord/openapi.json`): thread from message,
//! create message, typing. Threads get the id of their starter message, as
//! on Discord.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A message the product posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordPost {
    /// Channel (or thread) id.
    pub channel: String,
    /// Content.
    pub content: String,
}

/// A thread the product started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordThread {
    /// Parent channel.
    pub parent: String,
    /// Thread id (= starter message id).
    pub id: String,
    /// Thread name.
    pub name: String,
}

#[derive(Default)]
struct Inner {
    posts: VecDeque<DiscordPost>,
    threads: HashMap<String, DiscordThread>,
    /// Threads that exist without us having started them.
    foreign_threads: Vec<String>,
    typing: HashMap<String, u32>,
    rate_limit_next: u32,
    next_id: u64,
}

/// The fake Discord API.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Mutex<Inner>>,
    token: String,
    /// Base URL to configure as `discord.api_base_url` (serenity's proxy).
    pub base_url: String,
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

impl FakeDiscord {
    /// Starts the fake; only `Bot <token>` is accepted.
    pub async fn start(token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 900_000_000_000_000_000,
            ..Inner::default()
        }));
        let mut fake = Self {
            inner,
            token: token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route(
                "/api/v10/channels/{channel}/messages/{message}/threads",
                post(create_thread),
            )
            .route("/api/v10/channels/{channel}/messages", post(create_message))
            .route("/api/v10/channels/{channel}/typing", post(typing))
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}");
        fake
    }

    /// Answers the next `n` message posts with 429.
    pub fn rate_limit_next(&self, n: u32) {
        self.inner.lock().unwrap().rate_limit_next += n;
    }

    /// Takes the posted messages so far, oldest first.
    pub fn take_posts(&self) -> Vec<DiscordPost> {
        self.inner.lock().unwrap().posts.drain(..).collect()
    }

    /// How many posted messages are waiting to be taken.
    pub fn post_count(&self) -> usize {
        self.inner.lock().unwrap().posts.len()
    }

    /// Makes `channel` a thread someone else started (no thread can be
    /// started from a message inside it).
    pub fn add_foreign_thread(&self, channel: &str) {
        self.inner
            .lock()
            .unwrap()
            .foreign_threads
            .push(channel.to_owned());
    }

    /// The thread started from `message`, if any.
    pub fn thread(&self, message: &str) -> Option<DiscordThread> {
        self.inner.lock().unwrap().threads.get(message).cloned()
    }

    /// Typing indicators shown in `channel`.
    pub fn typing_count(&self, channel: &str) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .typing
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bot {}", self.token))
    }
}

async fn create_thread(
    State(fake): State<FakeDiscord>,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !fake.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
    }
    let mut inner = fake.inner.lock().unwrap();
    if inner.foreign_threads.contains(&channel) || inner.threads.contains_key(&channel) {
        return error(
            StatusCode::BAD_REQUEST,
            50_024,
            "Cannot execute action on this channel type",
        );
    }
    if inner.threads.contains_key(&message) {
        return error(
            StatusCode::BAD_REQUEST,
            160_004,
            "A thread has already been created for this message",
        );
    }
    inner.threads.insert(
        message.clone(),
        DiscordThread {
            parent: channel.clone(),
            id: message.clone(),
            name: name.clone(),
        },
    );
    Json(json!({ "id": message, "type": 11, "name": name, "parent_id": channel, "guild_id": "290926798999357249" }))
        .into_response()
}

async fn create_message(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !fake.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    let mut inner = fake.inner.lock().unwrap();
    if inner.rate_limit_next > 0 {
        inner.rate_limit_next -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({ "message": "You are being rate limited.", "retry_after": 0.5, "global": false, "code": 0 })),
        )
            .into_response();
    }
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    if content.is_empty() || content.chars().count() > 2000 {
        return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
    }
    if body["allowed_mentions"]["parse"] != json!([]) {
        return error(
            StatusCode::BAD_REQUEST,
            50035,
            "test fake: replies must not ping anyone",
        );
    }
    inner.next_id += 1;
    let id = inner.next_id.to_string();
    inner.posts.push_back(DiscordPost {
        channel: channel.clone(),
        content: content.clone(),
    });
    Json(json!({
        "id": id, "channel_id": channel, "content": content, "timestamp": "2026-11-23T10:00:00.000000+00:00",
        "author": { "id": "1000000000000000001", "username": "Book-E", "discriminator": "0000", "avatar": null, "bot": true },
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "type": 0
    }))
    .into_response()
}

async fn typing(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !fake.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    *fake
        .inner
        .lock()
        .unwrap()
        .typing
        .entry(channel)
        .or_default() += 1;
    StatusCode::NO_CONTENT.into_response()
}
