//! `GET /files/<tenant>/<sha256>`: a kept file, for the reviewer a signed
//! link was given to (`ReviewDesk::show_receipts`), until it expires.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::engine::files::FileLink;
use shared::ids::TenantId;

use super::HttpState;

/// A link's query.
#[derive(Deserialize)]
pub struct LinkQuery {
    expires: i64,
    reviewer: String,
    signature: String,
}

/// Serves the file when the link is signed, its own and not expired; 403
/// otherwise, 404 when the file is not (or no longer) kept.
pub async fn serve(
    State(state): State<HttpState>,
    Path((tenant, sha256)): Path<(String, String)>,
    Query(query): Query<LinkQuery>,
) -> Response {
    let Some(secret) = &state.link_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(tenant) = uuid::Uuid::parse_str(&tenant).map(TenantId::from) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let link = FileLink {
        tenant,
        sha256: &sha256,
        expires: query.expires,
        reviewer: &query.reviewer,
    };
    let now = chrono::Utc::now().timestamp();
    if !link.is_valid(secret.expose_secret().as_bytes(), &query.signature, now) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match state.store.tenant(tenant).kept_file(&sha256).await {
        Ok(Some((file, bytes))) => (
            [
                (header::CONTENT_TYPE, file.content_type),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{}\"", file.filename),
                ),
                (header::CACHE_CONTROL, "private, no-store".to_owned()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                // Shown in the gateway's own origin: never as a page that runs.
                (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Cannot read a kept file");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
