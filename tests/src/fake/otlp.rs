//! Fake OpenTelemetry collector: the OTLP/HTTP trace receiver
//! (`POST /v1/traces`, JSON encoding of `ExportTraceServiceRequest`, ids as
//! hex strings, as the OTLP specification defines), recording every span.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A span a service exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The exporting process's `service.name` resource attribute.
    pub service: String,
    /// Span name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; empty for a root span.
    pub parent_span_id: String,
}

/// The fake collector.
#[derive(Clone, Default)]
pub struct FakeCollector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    /// Base URL to configure as `log.otlp_endpoint`.
    pub base_url: String,
}

impl FakeCollector {
    /// Starts the collector.
    pub async fn start() -> Self {
        let mut fake = Self::default();
        let router = Router::new()
            .route("/v1/traces", post(export))
            .with_state(fake.clone());
        fake.base_url = format!("http://{}", super::serve(router).await);
        fake
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

async fn export(
    State(fake): State<FakeCollector>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let json_content = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_content {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"message": "JSON only"})),
        );
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "not JSON"})),
        );
    };
    let mut received = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource_spans["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default();
        let spans = resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|scope| scope["spans"].as_array().into_iter().flatten());
        for span in spans {
            let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
            received.push(ExportedSpan {
                service: service.to_owned(),
                name: text("name"),
                trace_id: text("traceId"),
                span_id: text("spanId"),
                parent_span_id: text("parentSpanId"),
            });
        }
    }
    fake.spans.lock().unwrap().extend(received);
    // An ExportTraceServiceResponse with nothing rejected.
    (StatusCode::OK, Json(json!({})))
}
