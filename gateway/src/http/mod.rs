//! The gateway's HTTP edge: webhooks, health, readiness and metrics.

mod error;
mod files;
pub mod page;
mod slack;
mod slack_interactivity;
mod telegram;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use shared::access::queue::JobQueue;
use shared::access::store::Store;
use shared::job::QueueName;
use shared::telemetry::continue_trace;
use slack_morphism::SlackSigningSecret;
use subtle::ConstantTimeEq;
use tracing::Instrument;

pub use error::ApiError;

use crate::manager::ingest::IngestManager;
use crate::manager::review_desk::ReviewDesk;

/// What the HTTP handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Records and enqueues inbound messages.
    pub ingest: IngestManager,
    /// Reviewers' decisions and review-thread replies.
    pub reviews: ReviewDesk,
    /// For readiness.
    pub store: Store,
    /// For readiness.
    pub queue: JobQueue,
    /// Verifies Slack requests; `None` when Slack is off (its routes are
    /// not served).
    pub slack_signing_secret: Option<Arc<SlackSigningSecret>>,
    /// The Telegram webhook's secret token, when Telegram uses a webhook.
    pub telegram_secret: Option<Arc<SecretString>>,
    /// Renders metrics.
    pub metrics: PrometheusHandle,
    /// Bearer token `/queue-depth` requires.
    pub queue_depth_token: Arc<SecretString>,
    /// Whether an inbound `traceparent` is continued.
    pub trust_inbound_traceparent: bool,
    /// The key receipt links are signed with, when they are given.
    pub link_secret: Option<Arc<SecretString>>,
}

/// The public routes: webhooks, liveness and receipt links.
pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    let mut webhooks = Router::new();
    if state.slack_signing_secret.is_some() {
        webhooks = webhooks.route("/slack/events", post(slack::events)).route(
            "/slack/interactivity",
            post(slack_interactivity::interactivity),
        );
    }
    webhooks
        .route("/telegram/webhook", post(telegram::webhook))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), traced))
        .route("/healthz", get(|| async { "ok" }))
        .route("/files/{tenant}/{sha256}", get(files::serve))
        .with_state(state)
        // A bug must cost one request a 500, never the connection unanswered.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// The operators' routes, on their own port: readiness, metrics and the
/// queue depth KEDA scales on.
pub fn admin_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/queue-depth", get(queue_depth))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// Runs one webhook request in its own span. It continues the caller's W3C
/// `traceparent` only when told to trust it (a tracing ingress sets it);
/// otherwise the span starts a trace.
async fn traced(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "webhook",
        http.path = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|_| state.trust_inbound_traceparent)
        .unwrap_or_default();
    continue_trace(&span, parent);
    next.run(request).instrument(span).await
}

async fn readyz(State(state): State<HttpState>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("postgres"))?;
    state
        .queue
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("redis"))?;
    Ok("ready")
}

/// The true depth of both queues, for autoscaling (KEDA's metrics-api
/// scaler reads `worker.backlog`): apalis-redis keeps new jobs in a sorted
/// set, so a Redis list length would read 0. Needs the bearer token.
async fn queue_depth(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let sent = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = state.queue_depth_token.expose_secret().as_bytes();
    if !bool::from(sent.as_bytes().ct_eq(expected)) {
        return Err(ApiError::Unauthorized("a valid bearer token is required"));
    }
    Ok(axum::Json(measure_queues(&state.queue).await?))
}

/// Measures both queues and sets the `automate_e_queue_depth` gauges.
async fn measure_queues(queue: &JobQueue) -> Result<serde_json::Value, ApiError> {
    let mut depths = serde_json::Map::new();
    for name in [QueueName::Worker, QueueName::Delivery] {
        let depth = queue
            .depth(name)
            .await
            .map_err(|_| ApiError::Unavailable("redis"))?;
        #[expect(clippy::cast_precision_loss, reason = "a gauge of a job count")]
        metrics::gauge!("automate_e_queue_depth", "queue" => name.suffix())
            .set(depth.backlog() as f64);
        let mut value = serde_json::to_value(depth).unwrap_or_default();
        value["backlog"] = depth.backlog().into();
        depths.insert(name.suffix().to_owned(), value);
    }
    Ok(depths.into())
}

/// Prometheus metrics; the queue-depth gauges are measured for each scrape
/// (kept at their last value when Redis is unreachable).
async fn metrics(State(state): State<HttpState>) -> (StatusCode, String) {
    if measure_queues(&state.queue).await.is_err() {
        tracing::warn!("Cannot measure the queues for a metrics scrape");
    }
    (StatusCode::OK, state.metrics.render())
}
