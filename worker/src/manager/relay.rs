//! Relay: Postgres is the system of record, Redis only holds the queue. Every
//! sweep re-queues inbox messages not yet answered and outbox items not yet
//! delivered, older than a grace period. Jobs are keyed by row id, so
//! re-queuing work that is still on the queue is a no-op; after a Redis
//! restart without persistence it brings the lost jobs back, and a turn
//! whose job ended without answering is pushed again under a fresh id. A
//! message whose files were not fetched yet gets its fetch pushed instead;
//! an approved write whose execution job was lost gets it back, and so do
//! a proposal not reviewed yet and one waiting for a card; a proposal
//! waiting for a reviewer is reminded, escalated and expired in time; files
//! past their tenant's retention are deleted.

use std::time::Duration;

use shared::access::queue::JobQueue;
use shared::access::store::{Store, TenantStore};
use shared::job::{DeliveryJob, Job, JobFailure, JobKind, WorkerJob};
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;

/// How long one fresh task id of open work whose job ended is used.
const FRESH_ID_PERIOD_SECS: i64 = 600;

/// Re-queues possibly lost work.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Store,
    queue: JobQueue,
    cfg: RelayConfig,
}

/// What one sweep re-queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Turn jobs pushed for unanswered messages.
    pub turns: usize,
    /// Delivery jobs pushed for undelivered replies.
    pub deliveries: usize,
    /// Agent run jobs pushed for runs not finished.
    pub runs: usize,
    /// Execution jobs pushed for approved writes not carried out.
    pub executions: usize,
    /// Review jobs (the check, or the card) pushed for proposals stuck
    /// before a reviewer could see them.
    pub reviews: usize,
    /// Reminders, escalations and expiries queued for waiting proposals.
    pub reviews_due: usize,
    /// Files deleted past their tenant's retention.
    pub files_expired: u64,
}

impl Relay {
    /// A relay over the store and the queue.
    pub fn new(store: Store, queue: JobQueue, cfg: RelayConfig) -> Self {
        Self { store, queue, cfg }
    }

    /// One sweep over every tenant.
    pub async fn sweep(&self) -> Result<Sweep, JobFailure> {
        let grace =
            chrono::Duration::milliseconds(i64::try_from(self.cfg.grace_ms).unwrap_or(i64::MAX));
        let before = chrono::Utc::now() - grace;
        let mut sweep = Sweep::default();
        for tenant in self.store.tenant_ids().await? {
            self.sweep_tenant(&self.store.tenant(tenant), before, &mut sweep)
                .await?;
        }
        Ok(sweep)
    }

    async fn sweep_tenant(
        &self,
        store: &TenantStore,
        before: chrono::DateTime<chrono::Utc>,
        sweep: &mut Sweep,
    ) -> Result<(), JobFailure> {
        let tenant_id = store.tenant_id();
        for (inbox_id, files_pending) in store.unanswered_inbox(before, self.cfg.batch).await? {
            if files_pending {
                // The gateway fetches the files first, then queues the turn.
                let job = Job::new(
                    tenant_id,
                    &shared::telemetry::current_traceparent(),
                    DeliveryJob::FetchFilesV1 { inbox_id },
                );
                self.queue
                    .enqueue(job)
                    .await
                    .map_err(|e| JobFailure::retryable(e, "Cannot re-queue a file fetch"))?;
                sweep.turns += 1;
                continue;
            }
            self.requeue(tenant_id, WorkerJob::TurnV1 { inbox_id }, true)
                .await?;
            sweep.turns += 1;
        }
        for outbox_id in store.undelivered_outbox(before, self.cfg.batch).await? {
            self.requeue(tenant_id, DeliveryJob::DeliverV1 { outbox_id }, true)
                .await?;
            sweep.deliveries += 1;
        }
        for run_id in store.unfinished_agent_runs(before, self.cfg.batch).await? {
            self.requeue(tenant_id, WorkerJob::RunV1 { run_id }, true)
                .await?;
            store.mark_agent_run_enqueued(run_id).await?;
            sweep.runs += 1;
        }
        for proposal_id in store.unexecuted_proposals(before, self.cfg.batch).await? {
            let job = WorkerJob::ExecuteV1 { proposal_id };
            sweep.executions += usize::from(self.requeue(tenant_id, job, false).await?);
        }
        for (proposal_id, card_missing) in
            store.unreviewed_proposals(before, self.cfg.batch).await?
        {
            let queued = if card_missing {
                let job = DeliveryJob::ReviewRequestV1 { proposal_id };
                self.requeue(tenant_id, job, false).await?
            } else {
                let job = WorkerJob::ReviewV1 { proposal_id };
                self.requeue(tenant_id, job, false).await?
            };
            sweep.reviews += usize::from(queued);
        }
        let now = chrono::Utc::now();
        for (proposal_id, due) in store.due_reviews(now, self.cfg.batch).await? {
            let due = due.as_str().to_owned();
            let job = DeliveryJob::ReviewDueV1 { proposal_id, due };
            sweep.reviews_due += usize::from(self.requeue(tenant_id, job, false).await?);
        }
        sweep.files_expired += store.delete_expired_files(self.cfg.batch).await?;
        Ok(())
    }

    /// Pushes `kind` again; `true` when pushed. A job that ended is left
    /// alone (concluded, or given up and someone told) unless `reopened`:
    /// the work is open again (a turn given up without its notice, a
    /// delivery or run reopened by a replay stopped before its push), and
    /// its spent id is replaced by a fresh one, the same for ten minutes, so
    /// that sweeps while it waits add nothing.
    async fn requeue<K: JobKind>(
        &self,
        tenant: shared::ids::TenantId,
        kind: K,
        reopened: bool,
    ) -> Result<bool, JobFailure> {
        let job = Job::new(tenant, &shared::telemetry::current_traceparent(), kind);
        let task_id = job.kind.dedupe_key().unwrap_or_default();
        let finished = self
            .queue
            .is_finished(K::QUEUE, &task_id)
            .await
            .map_err(|e| JobFailure::retryable(e, "Cannot read the queue"))?;
        let queued = match (finished, reopened) {
            (true, false) => return Ok(false),
            (true, true) => {
                let json = serde_json::to_value(&job).unwrap_or_default();
                let period = chrono::Utc::now().timestamp() / FRESH_ID_PERIOD_SECS;
                let fresh = format!("{task_id}~relay-{period}");
                self.queue.replay(K::QUEUE, &json, fresh).await
            }
            (false, _) => self.queue.enqueue(job).await,
        };
        queued.map_err(|e| JobFailure::retryable(e, "Cannot re-queue a job"))?;
        Ok(true)
    }

    /// Sweeps every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.interval_ms.max(50));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.sweep().await {
                Ok(sweep) if sweep != Sweep::default() => {
                    tracing::info!(
                        turns = sweep.turns,
                        deliveries = sweep.deliveries,
                        runs = sweep.runs,
                        executions = sweep.executions,
                        files_expired = sweep.files_expired,
                        "Relay re-queued unfinished work"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Relay sweep failed"),
            }
        }
    }
}
