//! The Redis job queue (apalis-redis): worker jobs and delivery jobs, and the
//! true queue depth (apalis keeps new jobs in a sorted set, not a list).

use std::time::Duration;

use apalis::prelude::{AbortError, BoxDynError, TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio_util::sync::CancellationToken;

use crate::access::store::{NewDeadJob, Store};
use crate::config::RedisConfig;
use crate::engine::retry::Backoff;
use crate::job::{DeliveryJob, JobAbout, JobFailure, WorkerJob};

/// How often a live worker heartbeats; with [`MISSED_HEARTBEATS`] it bounds
/// how long a killed worker's jobs stay orphaned.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Heartbeats a worker may miss before its jobs are re-queued.
pub const MISSED_HEARTBEATS: usize = 3;

/// How often an idle worker polls for new jobs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A worker name unique across processes and restarts (apalis requires it).
pub fn unique_worker_name(role: &str) -> String {
    format!(
        "{role}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A future that completes when `token` is cancelled, as apalis' stop signal.
pub async fn stop_signal(token: tokio_util::sync::CancellationToken) -> std::io::Result<()> {
    token.cancelled_owned().await;
    Ok(())
}

/// Pause before a failed queue worker (e.g. Redis down) is started again.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a queue worker until `shutdown` is cancelled. `start` spawns the
/// worker under the name it is given; when the worker fails it is started
/// again, under a fresh name (apalis refuses a recently used one), after
/// [`RESTART_INTERVAL`].
///
/// `start` spawns rather than returns the worker's future so that future is
/// checked for `Send` with concrete types (rustc cannot prove it through a
/// generic async state machine).
pub async fn supervise<F, E>(
    role: &str,
    shutdown: tokio_util::sync::CancellationToken,
    mut start: F,
) where
    F: FnMut(String) -> tokio::task::JoinHandle<Result<(), E>>,
    E: std::fmt::Display,
{
    while !shutdown.is_cancelled() {
        let error = match start(unique_worker_name(role)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic.to_string(),
        };
        tracing::warn!(role, error, "Queue worker stopped; restarting");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(RESTART_INTERVAL) => {}
        }
    }
}

/// Attempts a job that only waits for other jobs ([`JobFailure::is_deferred`])
/// may make before it is given up; below apalis-redis' own hard limit (25),
/// past which it would drop the job without us knowing.
pub const MAX_DEFERRED_ATTEMPTS: usize = 20;

/// Whether a failed job is given up now: a permanent failure, or a
/// retryable one on its last attempt — except while the process is stopping
/// (a job handed back on shutdown is never dead-lettered). A deferred job
/// (waiting for another) gets [`MAX_DEFERRED_ATTEMPTS`].
pub fn gives_up(failure: &JobFailure, attempt: usize, max_attempts: usize, stopping: bool) -> bool {
    let limit = if failure.is_deferred() {
        MAX_DEFERRED_ATTEMPTS.max(max_attempts)
    } else {
        max_attempts
    };
    match failure {
        JobFailure::Permanent(_) => true,
        JobFailure::Retryable(_) => attempt >= limit && !stopping,
    }
}

/// Waits out the backoff after failed attempt `attempt` (exponential with
/// jitter, at least the server's Retry-After up to the cap) before the job
/// goes back to the queue; cut short by `shutdown`. The wait holds the
/// job's slot; apalis-redis then schedules the job `attempt` seconds later
/// (its fixed rule), so the real gap is the backoff plus that.
async fn back_off(
    backoff: &Backoff,
    attempt: usize,
    failure: &JobFailure,
    shutdown: &CancellationToken,
) {
    if shutdown.is_cancelled() {
        return;
    }
    let delay = backoff.delay(attempt, failure.retry_after(), fastrand::f64());
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// Records a job given up in the dead-letter table, for operators; a
/// failure to record is logged (the job is dead-lettered in Redis anyway).
async fn record_dead<J: Serialize>(store: &Store, run: &JobRun<'_, J>, failure: &JobFailure) {
    let (queue, attempt) = (run.queue, run.attempt);
    let dead = NewDeadJob {
        queue: queue.suffix(),
        task_id: run.task_id.clone(),
        kind: run.about.kind,
        subject: run.about.subject,
        job: serde_json::to_value(run.job).unwrap_or_default(),
        error: failure.to_string(),
        attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
    };
    match store.record_dead_job(&dead).await {
        Ok(id) => {
            tracing::error!(dead_job.id = %id, error = %failure, attempt, "Job dead-lettered")
        }
        Err(e) => {
            tracing::error!(error = %failure, record_error = %e, attempt, "Job dead-lettered; cannot record it")
        }
    }
    metrics::counter!("automate_e_dead_jobs_total", "queue" => queue.suffix()).increment(1);
}

/// How a consumer retries its jobs.
#[derive(Debug, Clone)]
pub struct RetryRules {
    /// Attempts before a job is given up.
    pub max_attempts: usize,
    /// Spacing of attempts.
    pub backoff: Backoff,
    /// Cancelled on SIGTERM.
    pub shutdown: CancellationToken,
}

/// One run of a job, as the consumer saw it.
#[derive(Debug)]
pub struct JobRun<'a, J> {
    /// The queue it came from.
    pub queue: QueueName,
    /// The job.
    pub job: &'a J,
    /// What it is about.
    pub about: JobAbout<'a>,
    /// Its queue task id.
    pub task_id: String,
    /// Which attempt this was (1 = the first).
    pub attempt: usize,
}

/// Ends a job run, the one place both queues decide retry or dead letter:
/// a failure to retry waits out its backoff; a job given up ([`gives_up`])
/// is recorded in `dead_jobs`. Returns apalis' result and, when the job was
/// given up, why (for telling the user).
pub async fn conclude<J: Serialize>(
    store: &Store,
    run: JobRun<'_, J>,
    rules: &RetryRules,
    result: Result<(), JobFailure>,
) -> (Result<(), BoxDynError>, Option<String>) {
    let stopping = rules.shutdown.is_cancelled();
    let mut reason = None;
    if let Err(failure) = &result {
        if gives_up(failure, run.attempt, rules.max_attempts, stopping) {
            record_dead(store, &run, failure).await;
            reason = Some(failure.to_string());
        } else {
            back_off(&rules.backoff, run.attempt, failure, &rules.shutdown).await;
        }
    }
    (settle(result, reason.is_some()), reason)
}

/// Turns a job's result into apalis' terms: `Ok`, an error apalis retries,
/// or — when the job is given up ([`gives_up`]) — an [`AbortError`] that
/// dead-letters it (apalis-redis ignores its own attempt limit).
fn settle(result: Result<(), JobFailure>, given_up: bool) -> Result<(), BoxDynError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if given_up => Err(AbortError::new(e.to_string()).into()),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "Job failed; will retry");
            Err(e.into())
        }
    }
}

/// Errors of the job queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The job could not be pushed.
    #[error("cannot push job: {0}")]
    Push(String),
}

/// The two queues of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// Jobs for workers (turns; later reviews, executions, triggers).
    Worker,
    /// Reply deliveries, run by the gateway.
    Delivery,
}

impl QueueName {
    /// The queue named `name` (as [`Self::suffix`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "worker" => Some(Self::Worker),
            "delivery" => Some(Self::Delivery),
            _ => None,
        }
    }

    /// The queue's name in keys, metrics and dead letters.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Delivery => "delivery",
        }
    }
}

/// Jobs waiting or running on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepth {
    /// Scheduled and due now.
    pub due: u64,
    /// Scheduled for later (retry backoff).
    pub delayed: u64,
    /// Fetched from the schedule, not yet claimed by a worker.
    pub active: u64,
    /// Claimed by a worker (running or buffered).
    pub in_flight: u64,
}

impl QueueDepth {
    /// Work a worker has to do now: due + active + in flight.
    pub fn backlog(&self) -> u64 {
        self.due + self.active + self.in_flight
    }
}

/// The Redis job queue.
#[derive(Clone)]
pub struct JobQueue {
    conn: ConnectionManager,
    namespace: String,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl JobQueue {
    /// Connects to Redis.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, QueueError> {
        let conn = apalis_redis::connect(cfg.url.expose_secret()).await?;
        Ok(Self {
            conn,
            namespace: cfg.namespace.clone(),
        })
    }

    /// The Redis key prefix of a queue.
    pub fn key_prefix(&self, queue: QueueName) -> String {
        format!("{}:{}", self.namespace, queue.suffix())
    }

    fn storage<T>(&self, queue: QueueName, batch_size: usize) -> RedisStorage<T>
    where
        T: Serialize + DeserializeOwned + Unpin + Send + Sync + 'static,
    {
        let config = Config::default()
            .queue(self.key_prefix(queue))
            .batch_size(batch_size.max(1))
            .heartbeat_interval(HEARTBEAT_INTERVAL)
            .missed_heartbeats(MISSED_HEARTBEATS)
            .emit_events(false);
        RedisStorage::new(self.conn.clone()).with_config(config)
    }

    /// The storage a worker process consumes, fetching `batch_size` at a time.
    pub fn worker_storage(&self, batch_size: usize) -> RedisStorage<WorkerJob> {
        self.storage(QueueName::Worker, batch_size)
    }

    /// The storage the gateway's delivery loop consumes.
    pub fn delivery_storage(&self, batch_size: usize) -> RedisStorage<DeliveryJob> {
        self.storage(QueueName::Delivery, batch_size)
    }

    /// Enqueues a worker job; a job with the same dedupe key already on the
    /// queue makes this a no-op.
    pub async fn enqueue_worker_job(&self, job: WorkerJob) -> Result<(), QueueError> {
        self.enqueue_worker_jobs(vec![job]).await
    }

    /// Enqueues worker jobs in one round trip to Redis, each deduplicated
    /// like [`Self::enqueue_worker_job`].
    pub async fn enqueue_worker_jobs(&self, jobs: Vec<WorkerJob>) -> Result<(), QueueError> {
        let keyed = jobs.into_iter().map(|job| {
            let key = job.dedupe_key();
            (job, key)
        });
        push(self.storage(QueueName::Worker, 1), keyed).await
    }

    /// Enqueues a delivery job; deduplicated like [`Self::enqueue_worker_job`].
    pub async fn enqueue_delivery_job(&self, job: DeliveryJob) -> Result<(), QueueError> {
        let key = job.dedupe_key();
        push(self.storage(QueueName::Delivery, 1), [(job, key)]).await
    }

    /// Queues the delivery of an outbox item (the relay re-queues it when
    /// it stays undelivered).
    pub async fn deliver_outbox(
        &self,
        tenant_id: crate::ids::TenantId,
        outbox_id: crate::ids::OutboxId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        self.enqueue_delivery_job(DeliveryJob::DeliverV1 {
            outbox_id,
            tenant_id,
            traceparent: traceparent.to_owned(),
        })
        .await
        .map_err(|e| JobFailure::retryable(e, "Cannot enqueue a delivery"))
    }

    /// Pushes a recorded job again under `task_id`, a new id: apalis keeps a
    /// finished job's data under its old id, so that id cannot be reused.
    pub async fn replay(
        &self,
        queue: QueueName,
        job: &serde_json::Value,
        task_id: String,
    ) -> Result<(), QueueError> {
        let bad =
            |e: serde_json::Error| QueueError::Push(format!("not a {} job: {e}", queue.suffix()));
        match queue {
            QueueName::Worker => {
                let job: WorkerJob = serde_json::from_value(job.clone()).map_err(bad)?;
                push(self.storage(queue, 1), [(job, Some(task_id))]).await
            }
            QueueName::Delivery => {
                let job: DeliveryJob = serde_json::from_value(job.clone()).map_err(bad)?;
                push(self.storage(queue, 1), [(job, Some(task_id))]).await
            }
        }
    }

    /// Whether the job with `task_id` ran to its end on `queue` (done or
    /// dead): pushing it again under the same id would be a no-op.
    pub async fn is_finished(&self, queue: QueueName, task_id: &str) -> Result<bool, QueueError> {
        let config = Config::default().queue(self.key_prefix(queue));
        let mut conn = self.conn.clone();
        let (done, dead): (bool, bool) = redis::pipe()
            .cmd("SISMEMBER")
            .arg(config.done_jobs_set())
            .arg(task_id)
            .cmd("SISMEMBER")
            .arg(config.dead_jobs_set())
            .arg(task_id)
            .query_async(&mut conn)
            .await?;
        Ok(done || dead)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Jobs waiting or running on a queue, read straight from apalis' keys.
    pub async fn depth(&self, queue: QueueName) -> Result<QueueDepth, QueueError> {
        let prefix = self.key_prefix(queue);
        let mut conn = self.conn.clone();
        let now = chrono::Utc::now().timestamp();
        let workers: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}:workers"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZCOUNT")
            .arg(format!("{prefix}:scheduled"))
            .arg("-inf")
            .arg(now)
            .cmd("ZCOUNT")
            .arg(format!("{prefix}:scheduled"))
            .arg(format!("({now}"))
            .arg("+inf")
            .cmd("LLEN")
            .arg(format!("{prefix}:active"));
        for worker in &workers {
            // Members are worker names or, after a graceful stop, the
            // inflight key itself (an apalis quirk): accept both.
            let key = if worker.starts_with(&format!("{prefix}:inflight:")) {
                worker.clone()
            } else {
                format!("{prefix}:inflight:{worker}")
            };
            pipe.cmd("SCARD").arg(key);
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(QueueDepth {
            due: counts[0],
            delayed: counts[1],
            active: counts[2],
            in_flight: counts[3..].iter().sum(),
        })
    }
}

/// Pushes jobs (each under its task id, when it has one) in one call of
/// apalis' batch push script.
async fn push<T>(
    mut storage: RedisStorage<T>,
    jobs: impl IntoIterator<Item = (T, Option<String>)>,
) -> Result<(), QueueError>
where
    T: Serialize + DeserializeOwned + Unpin + Send + Sync + 'static,
{
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(job, key)| {
            let mut task = TaskBuilder::new(job);
            if let Some(key) = key {
                task = task.task_id(TaskId::from_string(&key));
            }
            task.build()
        })
        .collect();
    storage
        .push_all(futures::stream::iter(tasks))
        .await
        .map_err(|e| QueueError::Push(e.to_string()))
}
