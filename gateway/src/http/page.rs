//! The chat page's HTTP side, on its own listener (`web.addr`): the page,
//! its script, a stream of what it shows (server-sent events) and the two
//! things it sends (a message, a decision). Opened once with `/?token=…`,
//! which becomes an HTTP-only, same-site cookie; every other request needs
//! that cookie, and what it sends must be JSON (no cross-site form posts).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::manager::page::{ChatPage, PageError, PageMessage, check_user};

/// The page's cookie.
const COOKIE: &str = "ae_page";

/// How often an open page looks again without a ring (what another
/// gateway or the worker changed).
const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// The page's own headers: nothing but its own script runs, and it is never
/// framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What the page's handlers need.
#[derive(Clone)]
pub struct PageState {
    pub page: ChatPage,
    pub token: Arc<SecretString>,
}

/// The page's routes.
pub fn router(state: PageState) -> Router {
    let max_body = state.page.max_body_bytes();
    Router::new()
        .route("/", get(index))
        .route("/page.js", get(script))
        .route("/page.css", get(style))
        .route("/page/stream", get(stream))
        .route("/page/messages", post(send))
        .route("/page/decisions", post(decide))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// Whether `sent` is the page's token.
fn is_token(state: &PageState, sent: &str) -> bool {
    let expected = state.token.expose_secret().as_bytes();
    !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected))
}

/// Whether the request carries the page's cookie.
fn signed_in(state: &PageState, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|sent| is_token(state, sent))
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "Open the address scripts/run-local printed (it carries the page's token).\n",
    )
        .into_response()
}

fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `/?token=…` sets the cookie and goes to `/` (so the token leaves the
/// address bar); `/` with the cookie is the page.
async fn index(
    State(state): State<PageState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = query.token {
        if !is_token(&state, &token) {
            return refused();
        }
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        let mut response = Redirect::to("/").into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return with_page_headers(response);
    }
    if !signed_in(&state, &headers) {
        return refused();
    }
    with_page_headers(Html(include_str!("page/index.html")).into_response())
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/page.js"),
    )
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("page/page.css"))
}

/// One of the page's own files.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_page_headers(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Deserialize)]
struct Viewers {
    owner: String,
    reviewer: String,
}

/// What the page shows, sent again each time it changes.
async fn stream(
    State(state): State<PageState>,
    Query(who): Query<Viewers>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&state, &headers) {
        return refused();
    }
    if let Err(e) = check_user(&who.owner).and(check_user(&who.reviewer)) {
        return page_error(e);
    }
    Sse::new(views(state.page, who))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Each view that differs from the one sent before, looked at on every ring
/// and every [`LOOK_AGAIN`].
fn views(page: ChatPage, who: Viewers) -> impl Stream<Item = Result<Event, Infallible>> {
    let bell = page.listen();
    futures::stream::unfold(
        (page, who, bell, String::new(), true),
        |(page, who, mut bell, last, mut first)| async move {
            loop {
                if !first {
                    tokio::select! {
                        _ = bell.changed() => {}
                        () = tokio::time::sleep(LOOK_AGAIN) => {}
                    }
                }
                first = false;
                let json = match page.view(&who.owner, &who.reviewer).await {
                    Ok(view) => serde_json::to_string(&view).unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot read the page's view");
                        continue;
                    }
                };
                if json != last {
                    let event = Event::default().event("view").data(json.clone());
                    return Some((Ok(event), (page, who, bell, json, false)));
                }
            }
        },
    )
}

fn page_error(e: PageError) -> Response {
    match e {
        PageError::Invalid(problem) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": problem }))).into_response()
        }
        PageError::Failed(e) => {
            tracing::error!(error = format!("{e:#}"), "Page request failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "temporarily unable to take it; try again" })),
            )
                .into_response()
        }
    }
}

async fn send(
    State(state): State<PageState>,
    headers: HeaderMap,
    Json(message): Json<PageMessage>,
) -> Response {
    if !signed_in(&state, &headers) {
        return refused();
    }
    match state.page.send(message).await {
        Ok(outcome) => Json(json!({ "outcome": outcome.label() })).into_response(),
        Err(e) => page_error(e),
    }
}

#[derive(Deserialize)]
struct PageDecision {
    reviewer: String,
    /// The card's value (`proposal:sha256`).
    value: String,
    approve: bool,
    reason: Option<String>,
}

async fn decide(
    State(state): State<PageState>,
    headers: HeaderMap,
    Json(decision): Json<PageDecision>,
) -> Response {
    if !signed_in(&state, &headers) {
        return refused();
    }
    let decided = state
        .page
        .decide(
            &decision.reviewer,
            &decision.value,
            decision.approve,
            decision.reason.as_deref(),
        )
        .await;
    match decided {
        Ok(None) => Json(json!({ "decided": true })).into_response(),
        Ok(Some(refusal)) => {
            Json(json!({ "decided": false, "refused": refusal.to_string() })).into_response()
        }
        Err(e) => page_error(e),
    }
}
