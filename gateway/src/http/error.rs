//! One error type for every HTTP handler: typed cases map to 4xx/503 with a
//! JSON `{code, detail}` body; anything else is an opaque 500, logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP handler's failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is not authentic (signature, secret, timestamp).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A dependency is down; the platform should retry.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "Request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let detail = match &self {
            // Internal details stay in the log.
            Self::Internal(_) => "temporarily unable to accept the request".to_owned(),
            other => other.to_string(),
        };
        (status, Json(json!({ "code": code, "detail": detail }))).into_response()
    }
}
