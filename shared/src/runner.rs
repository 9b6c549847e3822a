//! The job runner both binaries consume their queue with. Each job runs in
//! its own span and is timed; a failure waits out its backoff and goes back
//! to the queue, and a job given up ([`gives_up`]) is recorded among the
//! dead jobs for operators and handed to its handler, which tells whoever
//! waits for it. A consumer that fails (Redis down) is started again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{
    AbortError, Attempt, BoxDynError, Data, ParallelizeExt, PollWith, Strategy, TaskId,
    WorkerBuilder,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access::queue::JobQueue;
use crate::access::store::{NewDeadJob, Store};
use crate::config::RetryConfig;
use crate::engine::retry::{Backoff, gives_up};
use crate::job::{Job, JobFailure, JobKind};

/// Pause before a failed consumer (e.g. Redis down) is started again.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// What a consumer does with the jobs of its queue.
pub trait JobHandler<K: JobKind>: Send + Sync + 'static {
    /// Runs one job; `shutdown` is cancelled on SIGTERM.
    fn run(
        &self,
        job: &Job<K>,
        attempt: usize,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), JobFailure>> + Send;

    /// Acts on a job given up after its dead letter is recorded: tells the
    /// user, where someone waits for it, and takes its row out of the
    /// relay's sweeps. Logs what it cannot do.
    fn given_up(&self, job: &Job<K>, reason: &str) -> impl Future<Output = ()> + Send;
}

/// How a consumer runs and retries its jobs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Names the consumer in logs and in its apalis worker name.
    pub role: &'static str,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Attempts before a job is given up.
    pub max_attempts: usize,
    /// Spacing of attempts.
    pub retry: RetryConfig,
    /// How long running jobs may go on after SIGTERM before they are handed
    /// back to the queue; `None` lets them finish.
    pub shutdown_grace: Option<Duration>,
}

/// A worker name unique across processes and restarts (apalis requires it).
pub fn unique_worker_name(role: &str) -> String {
    format!(
        "{role}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Consumes `K`'s queue with `handler` until `shutdown` is cancelled.
pub async fn consume<K, H>(
    queue: JobQueue,
    store: Store,
    handler: Arc<H>,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) where
    K: JobKind,
    H: JobHandler<K>,
{
    let consumer = Arc::new(Consumer {
        handler,
        store,
        settings: settings.clone(),
        shutdown: shutdown.clone(),
    });
    while !shutdown.is_cancelled() {
        // Woken the moment a job is announced; the poll finds the rest
        // (retries coming due, jobs whose announcement was lost).
        let wake = Strategy::new()
            .stream(queue.wake_ups(K::QUEUE))
            .interval(queue.poll_interval());
        let worker = WorkerBuilder::new(unique_worker_name(settings.role))
            .backend(PollWith::new(
                queue.storage::<K>(settings.concurrency),
                wake,
            ))
            .concurrency(settings.concurrency)
            .parallelize(|job| tokio::spawn(job))
            .data(consumer.clone())
            .build(handle::<K, H>);
        let stop = shutdown.clone();
        let ran = tokio::spawn(worker.run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        }));
        let error = match ran.await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic.to_string(),
        };
        // apalis refuses a recently used name: the next start takes a new one.
        tracing::warn!(
            role = settings.role,
            error,
            "Queue consumer stopped; restarting"
        );
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(RESTART_INTERVAL) => {}
        }
    }
}

/// A consumer's handler with what concluding a job needs.
struct Consumer<H> {
    handler: Arc<H>,
    store: Store,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
}

async fn handle<K, H>(
    job: Job<K>,
    consumer: Data<Arc<Consumer<H>>>,
    attempt: Attempt,
    task_id: TaskId,
) -> Result<(), BoxDynError>
where
    K: JobKind,
    H: JobHandler<K>,
{
    let span = job_span(&job, attempt.current());
    consumer
        .run_one(&job, attempt.current(), task_id.to_string())
        .instrument(span)
        .await
}

impl<H> Consumer<H> {
    /// Runs a job and concludes it: `Ok`, an error apalis retries, or an
    /// [`AbortError`] that dead-letters it (apalis-redis ignores its own
    /// attempt limit).
    async fn run_one<K>(
        &self,
        job: &Job<K>,
        attempt: usize,
        task_id: String,
    ) -> Result<(), BoxDynError>
    where
        K: JobKind,
        H: JobHandler<K>,
    {
        let started = Instant::now();
        let result = tokio::select! {
            result = self.handler.run(job, attempt, &self.shutdown) => result,
            () = grace_ended(&self.shutdown, self.settings.shutdown_grace) => Err(JobFailure::retryable(
                anyhow::anyhow!("the shutdown grace period ended"),
                "Job handed back to the queue",
            )),
        };
        metrics::histogram!("automate_e_job_seconds", "kind" => job.kind.name())
            .record(started.elapsed().as_secs_f64());
        let Err(failure) = result else {
            return Ok(());
        };
        let stopping = self.shutdown.is_cancelled();
        if gives_up(&failure, attempt, self.settings.max_attempts, stopping) {
            let reason = failure.to_string();
            self.record_dead(job, task_id, attempt, &reason).await;
            self.handler.given_up(job, &reason).await;
            return Err(AbortError::new(reason).into());
        }
        self.back_off(attempt, &failure).await;
        tracing::warn!(error = format!("{failure:#}"), "Job failed; will retry");
        Err(failure.into())
    }

    /// Waits out the backoff after failed attempt `attempt` (at least the
    /// server's Retry-After, up to the cap) before the job goes back to the
    /// queue; cut short by shutdown. The wait holds the job's slot;
    /// apalis-redis then schedules the job `attempt` seconds later (its fixed
    /// rule), so the real gap is the backoff plus that.
    async fn back_off(&self, attempt: usize, failure: &JobFailure) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let retry = &self.settings.retry;
        let backoff = Backoff {
            base: Duration::from_millis(retry.base_ms),
            max: Duration::from_millis(retry.max_ms),
        };
        let delay = backoff.delay(attempt, failure.retry_after(), fastrand::f64());
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    /// Records a job given up in the dead-letter table, for operators; a
    /// failure to record is logged (the job is dead-lettered in Redis anyway).
    async fn record_dead<K: JobKind>(
        &self,
        job: &Job<K>,
        task_id: String,
        attempt: usize,
        reason: &str,
    ) {
        let queue = K::QUEUE.suffix();
        let dead = NewDeadJob {
            queue,
            task_id,
            kind: job.kind.name(),
            subject: job.kind.subject(),
            job: serde_json::to_value(job).unwrap_or_default(),
            error: reason.to_owned(),
            attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
        };
        match self.store.record_dead_job(&dead).await {
            Ok(id) => {
                tracing::error!(dead_job.id = %id, error = reason, attempt, "Job dead-lettered")
            }
            Err(e) => {
                tracing::error!(error = reason, record_error = %e, attempt, "Job dead-lettered; cannot record it")
            }
        }
        metrics::counter!("automate_e_dead_jobs_total", "queue" => queue).increment(1);
    }
}

/// The span a job runs in: a child of the span that enqueued it (its
/// `traceparent`), carrying its kind, subject, attempt and trace id.
fn job_span<K: JobKind>(job: &Job<K>, attempt: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        job.kind = job.kind.name(),
        job.subject = tracing::field::Empty,
        attempt,
        trace_id = tracing::field::Empty,
    );
    if let Some(subject) = job.kind.subject() {
        span.record("job.subject", tracing::field::display(subject));
    }
    crate::telemetry::continue_trace(&span, &job.traceparent);
    span
}

/// Completes `grace` after `shutdown` is cancelled; never without a grace.
async fn grace_ended(shutdown: &CancellationToken, grace: Option<Duration>) {
    let Some(grace) = grace else {
        return std::future::pending().await;
    };
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}
