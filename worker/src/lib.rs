//! The Automate-E worker: stateless, scaled on queue depth. Takes turn jobs,
//! runs the agent (LLM + Accounting API tools), records events, writes the
//! reply to the outbox and enqueues its delivery. Holds LLM and Accounting
//! API credentials, never chat tokens.

pub mod admin;
pub mod config;
pub mod dead_jobs;
pub mod manager;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use shared::access::accounting::AccountingClient;
use shared::access::llm::LlmClient;
use shared::access::queue::JobQueue;
use shared::access::store::Store;
use shared::character::Characters;
use shared::config::RetryConfig;
use shared::job::{Job, JobFailure, WorkerJob};
use shared::runner::{ConsumerSettings, JobHandler, consume};
use shared::telemetry::current_traceparent;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;
use manager::AgentContext;
use manager::accounts::Accounts;
use manager::conversation::{ConversationManager, TurnOutcome, TurnSettings};
use manager::execution::ExecutionManager;
use manager::relay::Relay;
use manager::review::ReviewManager;
use manager::reviewer::AgentReviewer;
use manager::runs::RunManager;
use manager::tools::ToolRunner;
use manager::triggers::Triggers;

/// A built worker, ready to run.
pub struct App {
    listener: TcpListener,
    store: Store,
    queue: JobQueue,
    managers: Arc<Managers>,
    relay: Relay,
    triggers: Triggers,
    concurrency: usize,
    max_attempts: usize,
    retry: RetryConfig,
    shutdown_grace: Duration,
}

/// The managers that run the worker's jobs.
#[derive(Debug)]
struct Managers {
    store: Store,
    conversations: ConversationManager,
    reviews: ReviewManager,
    executions: ExecutionManager,
    runs: RunManager,
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
            cfg.accounting.max_response_bytes,
        );
        let accounts = Accounts::new(cfg.accounting.clone());
        let agents = AgentContext::new(
            llm,
            characters,
            cfg.llm.model.clone(),
            cfg.llm.max_tool_rounds,
        );
        let reviewer = AgentReviewer::new(agents.clone());
        let reviews = ReviewManager::new(
            store.clone(),
            queue.clone(),
            agents.characters.clone(),
            reviewer.clone(),
        );
        let executions = ExecutionManager::new(
            store.clone(),
            queue.clone(),
            accounting.clone(),
            accounts.clone(),
            agents.characters.apis().clone(),
            tool_timeout,
        );
        let tools = ToolRunner::new(accounting, store.clone(), cfg.pricing.clone(), tool_timeout);
        let runs = RunManager::new(
            store.clone(),
            queue.clone(),
            agents.clone(),
            tools.clone(),
            accounts.clone(),
            reviewer,
        );
        let triggers = Triggers::new(
            store.clone(),
            queue.clone(),
            agents.characters.clone(),
            cfg.scheduler.clone(),
        );
        let conversations = ConversationManager::new(
            store.clone(),
            queue.clone(),
            agents,
            tools,
            accounts,
            TurnSettings {
                lease_ttl: Duration::from_millis(cfg.lease_ttl_ms),
                lease_wait: Duration::from_millis(cfg.lease_wait_ms),
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
            triggers,
            store: store.clone(),
            queue,
            managers: Arc::new(Managers {
                store,
                conversations,
                reviews,
                executions,
                runs,
            }),
            concurrency: cfg.concurrency,
            max_attempts: cfg.max_attempts,
            retry: cfg.retry.clone(),
            shutdown_grace: Duration::from_millis(cfg.shutdown_grace_ms),
        })
    }

    /// The port of the health/metrics server.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes jobs and serves health/metrics until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Installed before the first job, so nothing is recorded into the void.
        let metrics = shared::telemetry::metrics_handle();
        let health = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(move || async move { metrics.render() }))
            .with_state((self.store.clone(), self.queue.clone()));
        let stop = shutdown.clone();
        let server = axum::serve(self.listener, health)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        let relay = self.relay.run(shutdown.clone());
        let triggers = self.triggers.run(shutdown.clone());
        let settings = ConsumerSettings {
            role: "worker",
            concurrency: self.concurrency,
            max_attempts: self.max_attempts,
            retry: self.retry,
            shutdown_grace: Some(self.shutdown_grace),
        };
        let jobs = consume(self.queue, self.store, self.managers, settings, shutdown);
        let (served, (), (), ()) = tokio::join!(server, jobs, relay, triggers);
        served.context("Health server failed")
    }
}

async fn readyz(State((store, queue)): State<(Store, JobQueue)>) -> StatusCode {
    match (store.ping().await, queue.ping().await) {
        (Ok(()), Ok(())) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl JobHandler<WorkerJob> for Managers {
    async fn run(
        &self,
        job: &Job<WorkerJob>,
        attempt: usize,
        shutdown: &CancellationToken,
    ) -> Result<(), JobFailure> {
        // What this job enqueues continues the job's span, not its producer's.
        let traceparent = &current_traceparent();
        let tenant = job.tenant_id;
        match job.kind {
            WorkerJob::TurnV1 { inbox_id } => {
                let outcome = self
                    .conversations
                    .run_turn(tenant, inbox_id, traceparent, shutdown)
                    .await?;
                match outcome {
                    TurnOutcome::Replied(outbox_id) => {
                        tracing::info!(outbox.id = %outbox_id, "Turn replied");
                    }
                    TurnOutcome::AlreadyDone => tracing::info!("Turn already done"),
                }
                Ok(())
            }
            WorkerJob::ReviewV1 { proposal_id } => {
                self.reviews.review(tenant, proposal_id, traceparent).await
            }
            WorkerJob::ExecuteV1 { proposal_id } => {
                let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
                self.executions
                    .execute(tenant, proposal_id, traceparent, attempt)
                    .await
            }
            WorkerJob::RunV1 { run_id } => self.runs.run(tenant, run_id, traceparent).await,
            WorkerJob::Unknown => Err(JobFailure::permanent(
                anyhow::anyhow!("unknown worker job kind"),
                "Job from a newer producer",
            )),
        }
    }

    /// Tells the user, where there is someone to tell, and takes an agent
    /// run out of the relay's sweeps.
    async fn given_up(&self, job: &Job<WorkerJob>, reason: &str) {
        let traceparent = &current_traceparent();
        let tenant = job.tenant_id;
        let told = match job.kind {
            WorkerJob::TurnV1 { inbox_id } => {
                self.conversations
                    .give_up(tenant, inbox_id, reason, traceparent)
                    .await
            }
            WorkerJob::ExecuteV1 { proposal_id } => {
                self.executions
                    .give_up(tenant, proposal_id, traceparent)
                    .await
            }
            // No one to tell; the relay leaves the run alone until a replay.
            WorkerJob::RunV1 { run_id } => self
                .store
                .tenant(tenant)
                .set_agent_run_given_up(run_id, true)
                .await
                .map(|_| ())
                .map_err(JobFailure::from),
            // A review that cannot run leaves the proposal unreviewed (never
            // approved); operators see it among the dead jobs.
            WorkerJob::ReviewV1 { .. } | WorkerJob::Unknown => Ok(()),
        };
        if let Err(e) = told {
            tracing::error!(error = %e, "Cannot act on a job given up");
        }
    }
}
