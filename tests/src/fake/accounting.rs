//! Fake Accounting API: Fiken-shaped read endpoints (field names from
//! `fiken/swagger.yaml`, amounts in cents) that record every request.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A request the product made.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Bearer token sent.
    pub bearer: Option<String>,
    /// `Idempotency-Key` sent.
    pub idempotency_key: Option<String>,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// The bank balances the fake reports.
pub fn bank_balances() -> Value {
    json!([
        {"source": "BANK", "bankAccountId": 2747365, "bankAccountCode": "1920:10001", "date": "2026-11-23", "amount": 123450},
        {"source": "BANK", "bankAccountId": 2747366, "bankAccountCode": "1920:10002", "date": "2026-11-23", "amount": 2500000}
    ])
}

/// The fake Accounting API.
#[derive(Clone)]
pub struct FakeAccounting {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    overrides: Arc<Mutex<std::collections::VecDeque<(u16, String)>>>,
    /// Writes by idempotency key: the same key gets the same answer.
    writes: Arc<Mutex<Vec<(String, Value)>>>,
    token: String,
    /// Base URL to configure as `accounting.base_url`.
    pub base_url: String,
}

impl FakeAccounting {
    /// Starts the fake; only `token` is accepted.
    pub async fn start(token: &str) -> Self {
        let mut fake = Self {
            requests: Arc::default(),
            overrides: Arc::default(),
            writes: Arc::default(),
            token: token.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/{*path}", any(handle))
            .with_state(fake.clone());
        let addr = super::serve(router).await;
        fake.base_url = format!("http://{addr}/companies/fake-company");
        fake
    }

    /// Answers the next authorized request with this status and body instead.
    pub fn respond_next(&self, status: u16, body: String) {
        self.overrides.lock().unwrap().push_back((status, body));
    }

    /// Distinct writes made (one per idempotency key): (key, created object).
    pub fn writes(&self) -> Vec<(String, Value)> {
        self.writes.lock().unwrap().clone()
    }

    /// Takes the requests so far.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

async fn handle(
    State(fake): State<FakeAccounting>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let bearer = super::bearer(&headers);
    fake.requests.lock().unwrap().push(RecordedRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        bearer: bearer.clone(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_str(&body).ok(),
    });
    if bearer.as_deref() != Some(fake.token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    let scripted = fake.overrides.lock().unwrap().pop_front();
    if let Some((status, body)) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("content-type", "application/json")], body).into_response();
    }
    match (
        method,
        uri.path().trim_start_matches("/companies/fake-company"),
    ) {
        (Method::GET, "/bankBalances") => Json(bank_balances()).into_response(),
        (Method::GET, "/purchases" | "/invoices" | "/folio/transactions") => {
            Json(json!([])).into_response()
        }
        (Method::POST, "/purchases" | "/invoices") => {
            let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "Idempotency-Key is required"})),
                )
                    .into_response();
            };
            let Ok(body) = serde_json::from_str::<Value>(&body) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid JSON"})),
                )
                    .into_response();
            };
            let mut writes = fake.writes.lock().unwrap();
            if let Some((_, created)) = writes.iter().find(|(k, _)| k == key) {
                return (StatusCode::CREATED, Json(created.clone())).into_response();
            }
            let mut created = body;
            created["purchaseId"] = json!(3_458_156 + writes.len() as i64);
            writes.push((key.to_owned(), created.clone()));
            (StatusCode::CREATED, Json(created)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response(),
    }
}
