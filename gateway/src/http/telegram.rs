//! Telegram webhook edge: checks `X-Telegram-Bot-Api-Secret-Token` in
//! constant time, parses the update, and acknowledges only once the message
//! is durable (Telegram re-sends on any other answer).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use secrecy::ExposeSecret;
use shared::ids::Platform;
use subtle::ConstantTimeEq;
use teloxide_core::types::Update;

use super::{ApiError, HttpState};
use crate::connection::telegram::normalize;

/// The header carrying the webhook's secret token.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// `POST /telegram/webhook`.
pub(super) async fn webhook(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let expected = state
        .telegram_secret
        .as_ref()
        .ok_or(ApiError::Unauthorized("Telegram webhook is not configured"))?;
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.expose_secret().as_bytes())) {
        metrics::counter!("automate_e_webhooks_rejected_total", "channel" => "telegram")
            .increment(1);
        return Err(ApiError::Unauthorized("invalid Telegram secret token"));
    }
    let update: Update = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Telegram update: {e}")))?;
    state
        .ingest
        .accept(Platform::Telegram, normalize(&update))
        .await?;
    Ok(StatusCode::OK)
}
