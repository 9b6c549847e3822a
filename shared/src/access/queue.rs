//! The Redis job queues (apalis-redis): pushing jobs, the storage consumers
//! read, and the true queue depth (apalis keeps new jobs in a sorted set,
//! not a list).

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::RedisConfig;
use crate::ids::{OutboxId, TenantId};
use crate::job::{DeliveryJob, Job, JobFailure, JobKind, QueueName, WorkerJob};

/// How often a live worker heartbeats; with [`MISSED_HEARTBEATS`] it bounds
/// how long a killed worker's jobs stay orphaned.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Heartbeats a worker may miss before its jobs are re-queued.
pub const MISSED_HEARTBEATS: usize = 3;

/// How long a consumer's wake-up subscription waits before it subscribes
/// again after Redis dropped it.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Wake-ups of an idle consumer: one item each time jobs were pushed to its
/// queue (the poll stays, for what nobody announces).
pub type WakeUps = std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send + Sync>>;

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
    /// For the wake-up subscriptions (a connection each).
    client: redis::Client,
    namespace: String,
    poll_interval: Duration,
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
            client: redis::Client::open(cfg.url.expose_secret())?,
            namespace: cfg.namespace.clone(),
            poll_interval: Duration::from_millis(cfg.poll_interval_ms.max(1)),
        })
    }

    /// How often an idle consumer polls for jobs nobody announced.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The channel that announces pushes to `queue`.
    pub fn wake_channel(&self, queue: QueueName) -> String {
        format!("{}:wake", self.key_prefix(queue))
    }

    /// Tells `queue`'s consumers that jobs were pushed. A lost announcement
    /// costs only latency: the consumers' poll finds the jobs.
    async fn announce(&self, queue: QueueName) {
        let mut conn = self.conn.clone();
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(self.wake_channel(queue))
            .arg(1)
            .query_async(&mut conn)
            .await;
        if let Err(e) = published {
            tracing::debug!(error = %e, "Cannot announce pushed jobs; the poll will find them");
        }
    }

    /// Announcements of pushes to `queue`, for as long as the stream lives
    /// (subscribed again after Redis drops the subscription).
    pub fn wake_ups(&self, queue: QueueName) -> WakeUps {
        let (tx, rx) = tokio::sync::watch::channel(());
        let (client, channel) = (self.client.clone(), self.wake_channel(queue));
        tokio::spawn(async move {
            while !tx.is_closed() {
                if let Ok(mut pubsub) = client.get_async_pubsub().await
                    && pubsub.subscribe(&channel).await.is_ok()
                {
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            () = tx.closed() => return,
                            message = futures::StreamExt::next(&mut messages) => {
                                if message.is_none() {
                                    break;
                                }
                                tx.send_replace(());
                            }
                        }
                    }
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                }
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        }))
    }

    /// The Redis key prefix of a queue.
    pub fn key_prefix(&self, queue: QueueName) -> String {
        format!("{}:{}", self.namespace, queue.suffix())
    }

    /// The storage of `K`'s queue, fetching `batch_size` jobs at a time:
    /// what a consumer reads and a producer pushes to.
    pub fn storage<K: JobKind>(&self, batch_size: usize) -> RedisStorage<Job<K>> {
        let config = Config::default()
            .queue(self.key_prefix(K::QUEUE))
            .batch_size(batch_size.max(1))
            .heartbeat_interval(HEARTBEAT_INTERVAL)
            .missed_heartbeats(MISSED_HEARTBEATS)
            .emit_events(false);
        RedisStorage::new(self.conn.clone()).with_config(config)
    }

    /// Enqueues a job; a job with the same dedupe key already on the queue
    /// makes this a no-op.
    pub async fn enqueue<K: JobKind>(&self, job: Job<K>) -> Result<(), QueueError> {
        self.enqueue_all(vec![job]).await
    }

    /// Enqueues jobs of one queue in one round trip to Redis, each
    /// deduplicated like [`Self::enqueue`].
    pub async fn enqueue_all<K: JobKind>(&self, jobs: Vec<Job<K>>) -> Result<(), QueueError> {
        let keyed = jobs.into_iter().map(|job| {
            let key = job.kind.dedupe_key();
            (job, key)
        });
        push(self.storage::<K>(1), keyed).await?;
        self.announce(K::QUEUE).await;
        Ok(())
    }

    /// Queues the delivery of an outbox item (the relay re-queues it when
    /// it stays undelivered).
    pub async fn deliver_outbox(
        &self,
        tenant_id: TenantId,
        outbox_id: OutboxId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        self.enqueue(Job::new(
            tenant_id,
            traceparent,
            DeliveryJob::DeliverV1 { outbox_id },
        ))
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
                let job: Job<WorkerJob> = serde_json::from_value(job.clone()).map_err(bad)?;
                push(self.storage::<WorkerJob>(1), [(job, Some(task_id))]).await?;
            }
            QueueName::Delivery => {
                let job: Job<DeliveryJob> = serde_json::from_value(job.clone()).map_err(bad)?;
                push(self.storage::<DeliveryJob>(1), [(job, Some(task_id))]).await?;
            }
        }
        self.announce(queue).await;
        Ok(())
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

    /// Keeps `bytes` (a file uploaded on the chat page) for `ttl` under a
    /// fresh id, until the file fetch of its message reads them.
    pub async fn stash(&self, bytes: &[u8], ttl: Duration) -> Result<String, QueueError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.stash_key(&id))
            .arg(bytes)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(id)
    }

    /// The bytes stashed under `id`, `None` once they expired.
    pub async fn unstash(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.stash_key(id))
            .query_async(&mut conn)
            .await?)
    }

    fn stash_key(&self, id: &str) -> String {
        format!("{}:stash:{id}", self.namespace)
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
async fn push<K: JobKind>(
    mut storage: RedisStorage<Job<K>>,
    jobs: impl IntoIterator<Item = (Job<K>, Option<String>)>,
) -> Result<(), QueueError> {
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
