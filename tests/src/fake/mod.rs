//! Fake external services, built to the official API documents: real HTTP
//! servers on 127.0.0.1 that record what they receive and refuse, as the
//! real API would, a request its document does not allow. The documents are
//! the official files of `../shared/specs/`, copied unmodified into
//! `tests/specs/` (the Accounting API's into `characters/apis/`, where the
//! worker reads it).

pub mod accounting;
pub mod discord;
pub mod openai;
pub mod otlp;
pub mod slack;
pub mod telegram;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use shared::openapi::ApiSpec;
use tokio::net::TcpListener;

/// The external APIs the fakes stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's, for Chat Completions.
    OpenAi,
    /// Slack's Web API.
    Slack,
    /// Discord's REST API v10.
    Discord,
    /// Telegram's Bot API.
    Telegram,
}

/// The official document of `api`, read once per process.
pub fn spec(api: Api) -> &'static ApiSpec {
    static SPECS: [OnceLock<ApiSpec>; 4] = [const { OnceLock::new() }; 4];
    let (index, file) = match api {
        Api::OpenAi => (0, "openai.yaml"),
        Api::Slack => (1, "slack.json"),
        Api::Discord => (2, "discord.json"),
        Api::Telegram => (3, "telegram.json"),
    };
    SPECS[index].get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("specs")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let spec = if file.ends_with(".json") {
            ApiSpec::from_json(&text)
        } else {
            ApiSpec::from_yaml(&text)
        };
        spec.unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// The requests a fake refused because their API would: each is a product
/// bug, so [`crate::TestEnv::finish`] fails on any it did not take.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<Vec<String>>>);

impl Refusals {
    /// Notes a refusal.
    pub fn record(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    /// Takes the refusals noted so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Serves `router` on an ephemeral loopback port; returns its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("fake server address");
    tokio::spawn(axum::serve(listener, router).into_future());
    addr
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// Files a fake platform serves (Slack's `url_private`, Discord's CDN,
/// Telegram's file URLs), and which were fetched.
#[derive(Debug, Clone, Default)]
pub struct FileHost {
    /// Bytes and type, by path.
    files: Arc<Mutex<std::collections::HashMap<String, HostedFile>>>,
    fetched: Arc<Mutex<Vec<String>>>,
}

impl FileHost {
    /// Serves `bytes` as `content_type` at `path`.
    pub fn put(&self, path: &str, bytes: Vec<u8>, content_type: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (bytes, content_type.to_owned()));
    }

    /// The paths fetched so far, in order.
    pub fn fetched(&self) -> Vec<String> {
        self.fetched.lock().unwrap().clone()
    }

    /// The answer to a GET of `path`: 403 when the credential is missing
    /// or wrong, 404 for a file it does not have.
    pub fn answer(&self, path: &str, authorized: bool) -> axum::response::Response {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        if !authorized {
            return StatusCode::FORBIDDEN.into_response();
        }
        self.fetched.lock().unwrap().push(path.to_owned());
        match self.files.lock().unwrap().get(path) {
            Some((bytes, content_type)) => (
                [(axum::http::header::CONTENT_TYPE, content_type.clone())],
                bytes.clone(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// A file's bytes and its type.
type HostedFile = (Vec<u8>, String);

/// A post a fake answered: when, and how long it asked the sender to wait
/// (a 429), if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostAttempt {
    /// When it was answered.
    pub at: std::time::Instant,
    /// The wait asked for, for a 429.
    pub retry_after: Option<std::time::Duration>,
}

/// The 429s among `attempts`, and whether the sender waited each out: the
/// next attempt came no sooner than it asked.
pub fn rate_limits_waited_out(attempts: &[PostAttempt]) -> (usize, bool) {
    let limited = attempts.iter().filter(|a| a.retry_after.is_some()).count();
    let waited = attempts.windows(2).all(|pair| match pair[0].retry_after {
        Some(wait) => pair[1].at.duration_since(pair[0].at) >= wait,
        None => true,
    });
    (limited, waited)
}
