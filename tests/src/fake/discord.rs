//! Fake Discord REST API v10: thread from message, create message, typing.
//! Requests are checked against Discord's document (`tests/specs/
//! discord.json`: snowflake ids, bodies) and its documented limits (2,000
//! characters a message; 5 messages per 5 s per channel, with Discord's
//! rate-limit headers); unknown channels and messages are answered 404 with
//! Discord's codes. Threads get the id of their starter message, as on
//! Discord.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
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
    /// Channels that exist (threads included).
    channels: HashSet<String>,
    /// Messages that exist: id → channel.
    messages: HashMap<String, String>,
    /// What people posted in each channel (as the REST API returns it),
    /// oldest first.
    history: HashMap<String, Vec<Value>>,
    /// Each user's roles in the guild.
    roles: HashMap<String, Vec<String>>,
    typing: HashMap<String, u32>,
    rate_limit_next: u32,
    /// Messages to post whose answer the client cannot read.
    garbled_next: u32,
    /// Each channel's message bucket: when its window started, posts in it.
    buckets: HashMap<String, (Instant, u32)>,
    /// 429s answered: (scripted, over the bucket).
    rate_limited: (u32, u32),
    /// Message posts answered.
    attempts: Vec<super::PostAttempt>,
    next_id: u64,
}

/// Messages per channel per [`BUCKET_WINDOW`] (Discord's documented limit).
const BUCKET_LIMIT: u32 = 5;
/// See [`BUCKET_LIMIT`].
const BUCKET_WINDOW: Duration = Duration::from_secs(5);

/// The fake Discord API.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Mutex<Inner>>,
    /// The attachments users posted (its CDN).
    pub files: super::FileHost,
    /// Requests refused for breaking Discord's rules.
    pub refusals: super::Refusals,
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
            files: super::FileHost::default(),
            refusals: super::Refusals::default(),
            token: token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route(
                "/api/v10/channels/{channel}/messages/{message}/threads",
                post(create_thread),
            )
            .route(
                "/api/v10/channels/{channel}/messages",
                post(create_message).get(list_messages),
            )
            .route("/api/v10/channels/{channel}/typing", post(typing))
            .route(
                "/api/v10/guilds/{guild}/members/{user}",
                axum::routing::get(guild_member),
            )
            .route(
                "/attachments/{*path}",
                axum::routing::get(
                    |state: State<Self>, path: axum::extract::Path<String>| async move {
                        state.files.answer(&path.0, true)
                    },
                ),
            )
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}");
        fake
    }

    /// Where the fake's CDN serves attachments, for the gateway's
    /// `files.discord_base_urls`.
    pub fn cdn_base_url(&self) -> String {
        format!("{}/attachments/", self.base_url)
    }

    /// Serves an attachment a user posted in `channel`; its CDN URL.
    pub fn add_attachment(
        &self,
        channel: &str,
        name: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> String {
        let path = format!(
            "{channel}/{}/{name}",
            uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000
        );
        self.files.put(&path, bytes, content_type);
        format!("{}{path}", self.cdn_base_url())
    }

    /// Posts the next `n` messages but answers 200 with a message of the
    /// wrong shape.
    pub fn garble_next(&self, n: u32) {
        self.inner.lock().unwrap().garbled_next += n;
    }

    /// Answers the next `n` message posts with 429.
    pub fn rate_limit_next(&self, n: u32) {
        self.inner.lock().unwrap().rate_limit_next += n;
    }

    /// 429s answered so far: (scripted by [`Self::rate_limit_next`], for
    /// posting past a channel's bucket).
    pub fn rate_limited(&self) -> (u32, u32) {
        self.inner.lock().unwrap().rate_limited
    }

    /// The message posts answered so far, 429s included.
    pub fn post_attempts(&self) -> Vec<super::PostAttempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// Makes a message exist in a channel (and the channel), as a message
    /// someone sent.
    pub fn add_message(&self, channel: &str, message: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.channels.insert(channel.to_owned());
        inner
            .messages
            .insert(message.to_owned(), channel.to_owned());
    }

    /// Gives `user` these guild roles.
    pub fn give_roles(&self, user: &str, roles: &[&str]) {
        let roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self.inner
            .lock()
            .unwrap()
            .roles
            .insert(user.to_owned(), roles);
    }

    /// A person posts `content` in `channel` now (while no gateway hears
    /// it); returns the message's id, a snowflake of now.
    pub fn post_as_user(&self, channel: &str, content: &str) -> String {
        let mut inner = self.inner.lock().unwrap();
        let since_epoch = chrono::Utc::now().timestamp_millis() - 1_420_070_400_000;
        let history = inner.history.entry(channel.to_owned()).or_default();
        // Unique within the millisecond: the low bits count.
        let id = (u64::try_from(since_epoch).unwrap() << 22) + history.len() as u64;
        let mut message: Value =
            serde_json::from_str(&crate::fixture("discord/gateway.MESSAGE_CREATE.json"))
                .map(|dispatch: Value| dispatch["d"].clone())
                .unwrap();
        let object = message.as_object_mut().unwrap();
        // The REST API's message: no guild, no member.
        object.remove("guild_id");
        object.remove("member");
        object.insert("id".into(), json!(id.to_string()));
        object.insert("channel_id".into(), json!(channel));
        object.insert("content".into(), json!(content));
        object.insert("reactions".into(), json!([]));
        history.push(message);
        inner.channels.insert(channel.to_owned());
        inner.messages.insert(id.to_string(), channel.to_owned());
        id.to_string()
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
        let mut inner = self.inner.lock().unwrap();
        inner.foreign_threads.push(channel.to_owned());
        inner.channels.insert(channel.to_owned());
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

    /// Checks a request as Discord does: its token, then its path and body
    /// against the document (a refusal of the document is noted).
    fn check(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), Box<Response>> {
        self.check_parts(headers, method, path, &[], body)
    }

    /// [`Self::check`] of a request with a query string and no body.
    fn check_with_query(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<(), Box<Response>> {
        self.check_parts(headers, method, path, query, None)
    }

    fn check_parts(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<(), Box<Response>> {
        if !self.authorized(headers) {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                0,
                "401: Unauthorized",
            )));
        }
        let spec = super::spec(super::Api::Discord);
        let Some((op, params)) = spec.route(method, path) else {
            return Err(Box::new(error(StatusCode::NOT_FOUND, 0, "404: Not Found")));
        };
        let request = shared::openapi::RequestParts {
            path: params,
            query,
            body,
        };
        let problems = spec.check_request(op, &request);
        if problems.is_empty() {
            return Ok(());
        }
        self.refusals
            .record(format!("{method} {path}: {}", problems.join("; ")));
        Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "code": 50035, "message": "Invalid Form Body", "errors": problems })),
            )
                .into_response(),
        ))
    }
}

fn unknown(what: &str, code: u32) -> Response {
    error(StatusCode::NOT_FOUND, code, &format!("Unknown {what}"))
}

/// Discord's rate-limit headers of `channel`'s message bucket, after a post
/// at `now`; `Err` with the 429 when the bucket is spent.
fn take_from_bucket(
    inner: &mut Inner,
    channel: &str,
    now: Instant,
) -> Result<Vec<(String, String)>, Box<Response>> {
    let (started, used) = inner.buckets.entry(channel.to_owned()).or_insert((now, 0));
    if now.duration_since(*started) >= BUCKET_WINDOW {
        (*started, *used) = (now, 0);
    }
    let reset_after = BUCKET_WINDOW
        .saturating_sub(now.duration_since(*started))
        .as_secs_f64();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        + reset_after;
    let spent = *used >= BUCKET_LIMIT;
    if !spent {
        *used += 1;
    }
    let headers = vec![
        ("x-ratelimit-limit".to_owned(), BUCKET_LIMIT.to_string()),
        (
            "x-ratelimit-remaining".to_owned(),
            (BUCKET_LIMIT - *used).to_string(),
        ),
        ("x-ratelimit-reset".to_owned(), format!("{reset:.3}")),
        (
            "x-ratelimit-reset-after".to_owned(),
            format!("{reset_after:.3}"),
        ),
        (
            "x-ratelimit-bucket".to_owned(),
            format!("messages-{channel}"),
        ),
    ];
    if !spent {
        return Ok(headers);
    }
    inner.rate_limited.1 += 1;
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "message": "You are being rate limited.", "retry_after": reset_after, "global": false })),
    )
        .into_response();
    for (name, value) in headers.into_iter().chain([
        ("retry-after".to_owned(), format!("{}", reset_after.ceil())),
        ("x-ratelimit-scope".to_owned(), "user".to_owned()),
    ]) {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    Err(Box::new(response))
}

async fn create_thread(
    State(fake): State<FakeDiscord>,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/channels/{channel}/messages/{message}/threads");
    if let Err(refused) = fake.check(&headers, "POST", &path, Some(&body)) {
        return *refused;
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let mut inner = fake.inner.lock().unwrap();
    if !inner.channels.contains(&channel) {
        return unknown("Channel", 10_003);
    }
    if inner.messages.get(&message) != Some(&channel) {
        return unknown("Message", 10_008);
    }
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
    inner.channels.insert(message.clone());
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

/// `GET /guilds/{id}/members/{id}`: the member, with the roles set by
/// [`FakeDiscord::give_roles`] (none by default).
async fn guild_member(
    State(fake): State<FakeDiscord>,
    Path((guild, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/guilds/{guild}/members/{user}");
    if let Err(refused) = fake.check(&headers, "GET", &path, None) {
        return *refused;
    }
    let roles = fake
        .inner
        .lock()
        .unwrap()
        .roles
        .get(&user)
        .cloned()
        .unwrap_or_default();
    Json(json!({
        "user": { "id": user, "username": "member", "discriminator": "0", "avatar": null },
        "roles": roles, "joined_at": "2017-07-01T10:00:00.000000+00:00", "deaf": false,
        "mute": false, "flags": 0
    }))
    .into_response()
}

/// `GET /channels/{id}/messages?after=&limit=`: the `limit` (≤ 100)
/// messages right after `after`, newest first, as Discord answers.
async fn list_messages(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/channels/{channel}/messages");
    if let Err(refused) = fake.check_with_query(&headers, "GET", &path, &query) {
        return *refused;
    }
    let value = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let after: u64 = value("after").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = value("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
    let inner = fake.inner.lock().unwrap();
    if !inner.channels.contains(&channel) {
        return unknown("Channel", 10_003);
    }
    let id = |m: &Value| {
        m["id"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut page: Vec<Value> = inner
        .history
        .get(&channel)
        .into_iter()
        .flatten()
        .filter(|m| id(m) > after)
        .take(limit)
        .cloned()
        .collect();
    page.reverse();
    Json(page).into_response()
}

async fn create_message(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/channels/{channel}/messages");
    if let Err(refused) = fake.check(&headers, "POST", &path, Some(&body)) {
        return *refused;
    }
    let mut inner = fake.inner.lock().unwrap();
    if !inner.channels.contains(&channel) {
        return unknown("Channel", 10_003);
    }
    if inner.rate_limit_next > 0 {
        inner.rate_limit_next -= 1;
        inner.rate_limited.0 += 1;
        inner.attempts.push(super::PostAttempt {
            at: Instant::now(),
            retry_after: Some(Duration::from_secs(1)),
        });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({ "message": "You are being rate limited.", "retry_after": 1.0, "global": false })),
        )
            .into_response();
    }
    let bucket = match take_from_bucket(&mut inner, &channel, Instant::now()) {
        Ok(headers) => headers,
        Err(limited) => {
            fake.refusals.record(format!(
                "POST {path}: more than {BUCKET_LIMIT} messages in {BUCKET_WINDOW:?}"
            ));
            return *limited;
        }
    };
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
    inner.attempts.push(super::PostAttempt {
        at: Instant::now(),
        retry_after: None,
    });
    inner.next_id += 1;
    let id = inner.next_id.to_string();
    inner.messages.insert(id.clone(), channel.clone());
    inner.posts.push_back(DiscordPost {
        channel: channel.clone(),
        content: content.clone(),
    });
    if inner.garbled_next > 0 {
        inner.garbled_next -= 1;
        return Json(json!({ "id": id, "channel_id": channel, "timestamp": 17 })).into_response();
    }
    let mut response = Json(json!({
        "id": id, "channel_id": channel, "content": content, "timestamp": "2026-11-23T10:00:00.000000+00:00",
        "author": { "id": "1000000000000000001", "username": "Book-E", "discriminator": "0000", "avatar": null, "bot": true },
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "type": 0
    }))
    .into_response();
    for (name, value) in bucket {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

async fn typing(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/channels/{channel}/typing");
    if let Err(refused) = fake.check(&headers, "POST", &path, None) {
        return *refused;
    }
    let mut inner = fake.inner.lock().unwrap();
    if !inner.channels.contains(&channel) {
        return unknown("Channel", 10_003);
    }
    *inner.typing.entry(channel).or_default() += 1;
    StatusCode::NO_CONTENT.into_response()
}
