//! The Automate-E worker: stateless, scaled on queue depth. Takes turn jobs,
//! runs the agent (LLM + Accounting API tools), records events, writes the
//! reply to the outbox and enqueues its delivery. Holds LLM and Accounting
//! API credentials, never chat tokens.

pub mod config;
pub mod manager;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{
    AbortError, Attempt, BackendExt, BoxDynError, Data, ParallelizeExt, WorkerBuilder,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use shared::access::accounting::AccountingClient;
use shared::access::llm::LlmClient;
use shared::access::queue::{JobQueue, POLL_INTERVAL, QueueName, settle, stop_signal, supervise};
use shared::access::store::Store;
use shared::character::Characters;
use shared::job::WorkerJob;
use shared::telemetry::trace_id;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;
use manager::conversation::{ConversationManager, TurnOutcome, TurnSettings};
use manager::execution::ExecutionManager;
use manager::relay::Relay;
use manager::review::ReviewManager;
use manager::tools::ToolRunner;

/// A built worker, ready to run.
pub struct App {
    listener: TcpListener,
    store: Store,
    queue: JobQueue,
    managers: Arc<Managers>,
    relay: Relay,
    concurrency: usize,
    max_attempts: usize,
}

/// The managers that run the worker's jobs.
#[derive(Debug)]
struct Managers {
    conversations: ConversationManager,
    reviews: ReviewManager,
    executions: ExecutionManager,
}

impl App {
    /// Loads the characters, connects to Postgres and Redis and binds the
    /// health/metrics listener (or uses the given one).
    pub async fn build(cfg: WorkerConfig, listener: Option<TcpListener>) -> anyhow::Result<Self> {
        cfg.validate()?;
        let characters =
            Characters::load_dir(&cfg.characters_dir).context("Cannot load characters")?;
        tracing::info!(characters = ?characters.names().collect::<Vec<_>>(), "Characters loaded");
        let store = Store::connect(&cfg.database)
            .await
            .context("Cannot connect to Postgres")?;
        let queue = JobQueue::connect(&cfg.redis)
            .await
            .context("Cannot connect to Redis")?;
        let llm = LlmClient::new(
            &cfg.llm.base_url,
            &cfg.llm.api_key,
            Duration::from_secs(cfg.llm.timeout_secs),
        )
        .context("Cannot build LLM client")?;
        let tool_timeout = Duration::from_secs(cfg.accounting.timeout_secs);
        let accounting = AccountingClient::new(
            shared::access::http_client(tool_timeout).context("Cannot build HTTP client")?,
            &cfg.accounting.base_url,
            cfg.accounting.token.clone(),
            cfg.accounting.max_response_bytes,
        );
        let characters = Arc::new(characters);
        let reviews = ReviewManager::new(
            store.clone(),
            queue.clone(),
            llm.clone(),
            characters.clone(),
            cfg.llm.model.clone(),
        );
        let executions = ExecutionManager::new(
            store.clone(),
            queue.clone(),
            accounting.clone(),
            tool_timeout,
        );
        let conversations = ConversationManager::new(
            store.clone(),
            queue.clone(),
            llm,
            ToolRunner::new(accounting, store.clone()),
            characters,
            TurnSettings {
                default_model: cfg.llm.model.clone(),
                default_max_tool_rounds: cfg.llm.max_tool_rounds,
                tool_timeout,
            },
        );
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(&cfg.listen_addr)
                .await
                .with_context(|| format!("Cannot listen on {}", cfg.listen_addr))?,
        };
        let relay = Relay::new(store.clone(), queue.clone(), cfg.relay.clone());
        Ok(Self {
            listener,
            relay,
            store,
            queue,
            managers: Arc::new(Managers {
                conversations,
                reviews,
                executions,
            }),
            concurrency: cfg.concurrency,
            max_attempts: cfg.max_attempts,
        })
    }

    /// The port of the health/metrics server.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes jobs and serves health/metrics until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let health = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route(
                "/metrics",
                get(|| async { shared::telemetry::metrics_handle().render() }),
            )
            .with_state((self.store.clone(), self.queue.clone()));
        let stop = shutdown.clone();
        let server = axum::serve(self.listener, health)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        let relay = self.relay.run(shutdown.clone());
        let jobs = run_jobs(
            self.queue,
            self.managers,
            self.concurrency,
            self.max_attempts,
            shutdown,
        );
        let (served, (), ()) = tokio::join!(server, jobs, relay);
        served.context("Health server failed")
    }
}

async fn readyz(State((store, queue)): State<(Store, JobQueue)>) -> StatusCode {
    match (store.ping().await, queue.ping().await) {
        (Ok(()), Ok(())) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Settings a job handler needs besides the manager.
#[derive(Debug, Clone, Copy)]
struct JobLimits {
    max_attempts: usize,
}

/// Consumes worker jobs until shutdown.
async fn run_jobs(
    queue: JobQueue,
    managers: Arc<Managers>,
    concurrency: usize,
    max_attempts: usize,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    supervise("worker", shutdown, |name| {
        let worker = WorkerBuilder::new(name)
            .backend(
                queue
                    .worker_storage(concurrency)
                    .poll_with_interval(POLL_INTERVAL),
            )
            .concurrency(concurrency)
            .parallelize(|job| tokio::spawn(job))
            .data(managers.clone())
            .data(JobLimits { max_attempts })
            .build(handle_job);
        tokio::spawn(worker.run_until(stop_signal(stop.clone())))
    })
    .await;
}

#[tracing::instrument(skip_all, fields(job.kind, job.subject, attempt = attempt.current(), trace_id))]
async fn handle_job(
    job: WorkerJob,
    managers: Data<Arc<Managers>>,
    limits: Data<JobLimits>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let span = tracing::Span::current();
    let (kind, subject, traceparent) = match &job {
        WorkerJob::TurnV1 {
            inbox_id,
            traceparent,
        } => ("turn", inbox_id.to_string(), traceparent),
        WorkerJob::ReviewV1 {
            proposal_id,
            traceparent,
        } => ("review", proposal_id.to_string(), traceparent),
        WorkerJob::ExecuteV1 {
            proposal_id,
            traceparent,
        } => ("execute", proposal_id.to_string(), traceparent),
        WorkerJob::Unknown => {
            tracing::error!("Unknown job kind dead-lettered");
            return Err(AbortError::new("unknown worker job kind").into());
        }
    };
    span.record("job.kind", kind);
    span.record("job.subject", subject.as_str());
    if let Some(trace) = trace_id(traceparent) {
        span.record("trace_id", trace);
    }
    let started = std::time::Instant::now();
    let result = match &job {
        WorkerJob::TurnV1 {
            inbox_id,
            traceparent,
        } => managers
            .conversations
            .run_turn(*inbox_id, traceparent)
            .await
            .map(|outcome| match outcome {
                TurnOutcome::Replied(outbox_id) => {
                    tracing::info!(outbox.id = %outbox_id, "Turn replied")
                }
                TurnOutcome::AlreadyDone => tracing::info!("Turn already done"),
            }),
        WorkerJob::ReviewV1 {
            proposal_id,
            traceparent,
        } => managers.reviews.review(*proposal_id, traceparent).await,
        WorkerJob::ExecuteV1 {
            proposal_id,
            traceparent,
        } => {
            let attempt = u32::try_from(attempt.current()).unwrap_or(u32::MAX);
            managers
                .executions
                .execute(*proposal_id, traceparent, attempt)
                .await
        }
        WorkerJob::Unknown => unreachable!("handled above"),
    };
    metrics::histogram!("automate_e_job_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    settle(
        QueueName::Worker,
        attempt.current(),
        limits.max_attempts,
        result,
    )
}
