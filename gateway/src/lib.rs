//! The Automate-E gateway: receives chat platform messages (Slack Events API
//! today), records them in the durable inbox, enqueues turn jobs, and delivers
//! the workers' replies. It is the only process that holds chat tokens.

pub mod config;
pub mod http;
pub mod manager;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{
    AbortError, Attempt, BackendExt, BoxDynError, Data, ParallelizeExt, WorkerBuilder,
};
use secrecy::ExposeSecret;
use shared::access::queue::{JobQueue, POLL_INTERVAL, QueueName, settle, stop_signal, supervise};
use shared::access::slack::SlackClient;
use shared::access::store::Store;
use shared::job::DeliveryJob;
use shared::telemetry::trace_id;
use slack_morphism::SlackSigningSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
use http::HttpState;
use manager::delivery::DeliveryManager;
use manager::ingest::IngestManager;

/// A built gateway, ready to run.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    queue: JobQueue,
    delivery: Arc<DeliveryManager>,
    delivery_cfg: config::DeliveryConfig,
}

impl App {
    /// Connects to Postgres and Redis and binds the HTTP listener (or uses
    /// the given one, e.g. bound to port 0 by a test).
    pub async fn build(cfg: GatewayConfig, listener: Option<TcpListener>) -> anyhow::Result<Self> {
        cfg.validate()?;
        let store = Store::connect(&cfg.database)
            .await
            .context("Cannot connect to Postgres")?;
        let queue = JobQueue::connect(&cfg.redis)
            .await
            .context("Cannot connect to Redis")?;
        let http_client =
            shared::access::http_client(Duration::from_secs(cfg.slack.request_timeout_secs))
                .context("Cannot build HTTP client")?;
        let slack = SlackClient::new(
            http_client,
            &cfg.slack.api_base_url,
            cfg.slack.bot_token.clone(),
        );
        let state = HttpState {
            ingest: IngestManager::new(store.clone(), queue.clone()),
            store: store.clone(),
            queue: queue.clone(),
            slack_signing_secret: Arc::new(SlackSigningSecret::new(
                cfg.slack.signing_secret.expose_secret().to_owned(),
            )),
            metrics: shared::telemetry::metrics_handle(),
        };
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(&cfg.listen_addr.0)
                .await
                .with_context(|| format!("Cannot listen on {}", cfg.listen_addr.0))?,
        };
        Ok(Self {
            listener,
            router: http::router(state, cfg.slack.max_body_bytes),
            queue,
            delivery: Arc::new(DeliveryManager::new(store, slack)),
            delivery_cfg: cfg.delivery,
        })
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves HTTP and runs the delivery loop until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr: SocketAddr = self.listener.local_addr()?;
        tracing::info!(%addr, "Gateway listening");
        let http_shutdown = shutdown.clone();
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        let delivery = run_delivery(
            self.queue,
            self.delivery,
            self.delivery_cfg,
            shutdown.clone(),
        );
        let (served, delivered) = tokio::join!(server, delivery);
        served.context("HTTP server failed")?;
        delivered
    }
}

/// Consumes delivery jobs until shutdown.
async fn run_delivery(
    queue: JobQueue,
    manager: Arc<DeliveryManager>,
    cfg: config::DeliveryConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    supervise("gateway-delivery", shutdown, |name| {
        let worker = WorkerBuilder::new(name)
            .backend(
                queue
                    .delivery_storage(cfg.concurrency)
                    .poll_with_interval(POLL_INTERVAL),
            )
            .concurrency(cfg.concurrency)
            .parallelize(|job| tokio::spawn(job))
            .data(manager.clone())
            .data(DeliveryLimits {
                max_attempts: cfg.max_attempts,
            })
            .build(deliver);
        tokio::spawn(worker.run_until(stop_signal(stop.clone())))
    })
    .await;
    Ok(())
}

/// Settings a delivery job handler needs besides the manager.
#[derive(Debug, Clone, Copy)]
struct DeliveryLimits {
    /// Attempts before a job is dead-lettered.
    max_attempts: usize,
}

#[tracing::instrument(skip_all, fields(job.kind = "deliver", outbox.id = tracing::field::Empty, attempt = attempt.current()))]
async fn deliver(
    job: DeliveryJob,
    manager: Data<Arc<DeliveryManager>>,
    limits: Data<DeliveryLimits>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let DeliveryJob::DeliverV1 {
        outbox_id,
        traceparent,
    } = job
    else {
        return Err(AbortError::new("unknown delivery job kind").into());
    };
    tracing::Span::current().record("outbox.id", tracing::field::display(outbox_id));
    let result = manager.deliver(outbox_id, trace_id(&traceparent)).await;
    settle(
        QueueName::Delivery,
        attempt.current(),
        limits.max_attempts,
        result,
    )
}
