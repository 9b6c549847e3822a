//! The gateway's HTTP edge: webhooks, health, readiness and metrics.

mod error;
mod slack;
mod slack_interactivity;
mod telegram;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use shared::access::queue::{JobQueue, QueueName};
use shared::access::store::Store;
use slack_morphism::SlackSigningSecret;

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
    /// Verifies Slack requests.
    pub slack_signing_secret: Arc<SlackSigningSecret>,
    /// The Telegram webhook's secret token, when Telegram uses a webhook.
    pub telegram_secret: Option<Arc<SecretString>>,
    /// Renders metrics.
    pub metrics: PrometheusHandle,
}

/// The gateway's routes.
pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/slack/events", post(slack::events))
        .route(
            "/slack/interactivity",
            post(slack_interactivity::interactivity),
        )
        .route("/telegram/webhook", post(telegram::webhook))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/queue-depth", get(queue_depth))
        .with_state(state)
        // A bug must cost one request a 500, never the connection unanswered.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
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
/// set, so a Redis list length would read 0. Also set as gauges.
async fn queue_depth(
    State(state): State<HttpState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut depths = serde_json::Map::new();
    for queue in [QueueName::Worker, QueueName::Delivery] {
        let depth = state
            .queue
            .depth(queue)
            .await
            .map_err(|_| ApiError::Unavailable("redis"))?;
        #[expect(clippy::cast_precision_loss, reason = "a gauge of a job count")]
        metrics::gauge!("automate_e_queue_depth", "queue" => queue.suffix())
            .set(depth.backlog() as f64);
        let mut value = serde_json::to_value(depth).unwrap_or_default();
        value["backlog"] = depth.backlog().into();
        depths.insert(queue.suffix().to_owned(), value);
    }
    Ok(axum::Json(depths.into()))
}

async fn metrics(State(state): State<HttpState>) -> (StatusCode, String) {
    (StatusCode::OK, state.metrics.render())
}
