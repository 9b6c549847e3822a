//! Logging, tracing and metrics set-up, once per process, and the W3C
//! `traceparent` that carries a trace from the gateway through a job into
//! the worker's spans.
//!
//! Every process installs one subscriber: logs (JSON or pretty, filtered by
//! `log.filter`) and OpenTelemetry spans (always built, so log lines and
//! jobs share real trace ids; exported over OTLP/HTTP only when
//! `log.otlp_endpoint` is set).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// The span exporter of a process; [`Self::shutdown`] flushes what is
/// still buffered (call it before the process exits).
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "Cannot flush the last spans");
        }
    }
}

/// How long one OTLP export may take before it is dropped.
const OTLP_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global `tracing` subscriber for `service` (`gateway`,
/// `worker`). Later calls (tests start several apps in one process) keep
/// the first subscriber. Fails only on a malformed OTLP endpoint.
pub fn init(cfg: &LogConfig, service: &'static str) -> anyhow::Result<Telemetry> {
    let mut provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder_empty().with_service_name(service).build());
    if let Some(endpoint) = cfg.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(OTLP_TIMEOUT)
            .build()
            .with_context(|| format!("invalid log.otlp_endpoint {endpoint:?}"))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        // Busy/idle times and thread ids on every span cost a clock read and
        // attributes per poll of every instrumented future; nobody reads them.
        .with_tracked_inactivity(false)
        .with_threads(false)
        // Spans join traces whatever the log filter says.
        .with_filter(LevelFilter::INFO);
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match cfg.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
    };
    // An error here only means a subscriber is already installed.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

/// Makes `span` (not yet entered) a child of the remote span in
/// `traceparent`, from a job or an HTTP header, and records its trace id
/// in the span's `trace_id` field (so JSON log lines carry it). A
/// malformed `traceparent` starts a new trace.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// Records the trace id of `span` in its `trace_id` field.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// The W3C `traceparent` of the current span, for the jobs it enqueues; a
/// new trace where the current span has none.
pub fn current_traceparent() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return new_traceparent();
    }
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// Upper bounds (seconds) of the buckets of every `*_seconds` histogram.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide Prometheus recorder, installed on first use;
/// `*_seconds` histograms are exported with buckets.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other global metrics recorder is installed")
        })
        .clone()
}

/// Installs ring as the process's rustls crypto provider; call at the start
/// of `main` (and in tests) before any TLS client is built.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutdown requested");
    token.cancel();
}

/// A new W3C `traceparent` header value for a trace started here.
fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// The trace id of a W3C `traceparent`, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(_flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(span, 16)).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_traceparent_is_a_sampled_w3c_header_of_a_new_trace() {
        let (first, second) = (new_traceparent(), new_traceparent());
        let parts: Vec<&str> = first.split('-').collect();
        assert_eq!(parts.len(), 4, "{first}");
        assert_eq!((parts[0], parts[3]), ("00", "01"), "{first}");
        for (part, len) in [(parts[1], 32), (parts[2], 16)] {
            assert_eq!(part.len(), len, "{first}");
            assert!(
                part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{first}"
            );
            assert!(part.bytes().any(|b| b != b'0'), "all-zero ids are invalid");
        }
        assert_eq!(trace_id(&first), Some(parts[1]));
        assert_ne!(trace_id(&first), trace_id(&second));
    }

    #[test]
    fn malformed_traceparent_has_no_trace_id() {
        for bad in [
            "",
            "00-abc-def-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        assert_eq!(
            trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }
}
