//! Jobs on the Redis queues: small, versioned payloads that reference rows
//! in Postgres, in one envelope ([`Job`]) that says for which tenant and
//! under which trace (`traceparent`) the job was enqueued.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentRunId, InboxId, OutboxId, ProposalId, TenantId};

/// The two queues of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// Jobs for workers: turns, reviews, executions, agent runs.
    Worker,
    /// Reply deliveries and review cards, run by the gateway.
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

/// A job: its kind and the row it works on, the tenant it works for, and
/// the trace context of the span that enqueued it. On the wire the kind's
/// fields sit beside `tenant_id` and `traceparent`
/// (`{"type": "TurnV1", "inbox_id": …, "tenant_id": …, "traceparent": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job<K> {
    /// The tenant the job works for.
    pub tenant_id: TenantId,
    /// Trace context of the enqueuing span ("" when unknown).
    #[serde(default)]
    pub traceparent: String,
    /// What to do.
    #[serde(flatten)]
    pub kind: K,
}

impl<K> Job<K> {
    /// A job of `tenant`, enqueued under `traceparent`.
    pub fn new(tenant_id: TenantId, traceparent: &str, kind: K) -> Self {
        Self {
            tenant_id,
            traceparent: traceparent.to_owned(),
            kind,
        }
    }
}

/// What the kinds of job of one queue tell about themselves.
pub trait JobKind:
    Serialize + DeserializeOwned + std::fmt::Debug + Clone + Unpin + Send + Sync + 'static
{
    /// The queue these jobs go on.
    const QUEUE: QueueName;

    /// Short kind (`turn`, `review`, `execute`, `deliver`, …) for spans,
    /// metrics and dead letters.
    fn name(&self) -> &'static str;

    /// The row the job works on.
    fn subject(&self) -> Option<uuid::Uuid>;

    /// The queue task id: enqueuing the same job twice is a no-op.
    fn dedupe_key(&self) -> Option<String>;
}

/// Jobs the worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkerJob {
    /// Run the agent turn for one inbox message.
    TurnV1 {
        /// The inbox row.
        inbox_id: InboxId,
    },
    /// Review a new proposal: policy, pattern and the agent reviewer decide
    /// between auto-approval and human review.
    ReviewV1 {
        /// The proposal.
        proposal_id: ProposalId,
    },
    /// Carry out an approved proposal, exactly its approved request.
    ExecuteV1 {
        /// The proposal.
        proposal_id: ProposalId,
    },
    /// Run an agent for an event or a schedule period (an agent run row).
    RunV1 {
        /// The agent run.
        run_id: AgentRunId,
    },
    /// A job kind this build does not know (a newer producer): dead-lettered,
    /// never a decode error that would stop the worker.
    #[serde(other)]
    Unknown,
}

impl JobKind for WorkerJob {
    const QUEUE: QueueName = QueueName::Worker;

    fn name(&self) -> &'static str {
        match self {
            Self::TurnV1 { .. } => "turn",
            Self::ReviewV1 { .. } => "review",
            Self::ExecuteV1 { .. } => "execute",
            Self::RunV1 { .. } => "run",
            Self::Unknown => "unknown",
        }
    }

    fn subject(&self) -> Option<uuid::Uuid> {
        match self {
            Self::TurnV1 { inbox_id } => Some(inbox_id.0),
            Self::ReviewV1 { proposal_id } | Self::ExecuteV1 { proposal_id } => Some(proposal_id.0),
            Self::RunV1 { run_id } => Some(run_id.0),
            Self::Unknown => None,
        }
    }

    fn dedupe_key(&self) -> Option<String> {
        match self {
            Self::Unknown => None,
            kind => Some(format!("{}-{}", kind.name(), kind.subject()?)),
        }
    }
}

/// Jobs the gateway runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryJob {
    /// Post one outbox reply to its platform.
    DeliverV1 {
        /// The outbox row.
        outbox_id: OutboxId,
    },
    /// Post a proposal's review request to the tenant's review channel.
    ReviewRequestV1 {
        /// The proposal.
        proposal_id: ProposalId,
    },
    /// Fetch and store the files of an inbound message with its platform's
    /// credentials, then queue its turn.
    FetchFilesV1 {
        /// The inbox row.
        inbox_id: InboxId,
    },
    /// Remind, escalate or expire a proposal waiting for a reviewer.
    ReviewDueV1 {
        /// The proposal.
        proposal_id: ProposalId,
        /// What was due when it was queued (`remind`, `escalate`,
        /// `expire`); the gateway does what is due when it runs.
        due: String,
    },
    /// A job kind this build does not know.
    #[serde(other)]
    Unknown,
}

impl JobKind for DeliveryJob {
    const QUEUE: QueueName = QueueName::Delivery;

    fn name(&self) -> &'static str {
        match self {
            Self::DeliverV1 { .. } => "deliver",
            Self::ReviewRequestV1 { .. } => "review_request",
            Self::FetchFilesV1 { .. } => "fetch_files",
            Self::ReviewDueV1 { .. } => "review_due",
            Self::Unknown => "unknown",
        }
    }

    fn subject(&self) -> Option<uuid::Uuid> {
        match self {
            Self::DeliverV1 { outbox_id } => Some(outbox_id.0),
            Self::ReviewRequestV1 { proposal_id } => Some(proposal_id.0),
            Self::FetchFilesV1 { inbox_id } => Some(inbox_id.0),
            Self::ReviewDueV1 { proposal_id, .. } => Some(proposal_id.0),
            Self::Unknown => None,
        }
    }

    fn dedupe_key(&self) -> Option<String> {
        match self {
            Self::DeliverV1 { outbox_id } => Some(format!("deliver-{outbox_id}")),
            Self::ReviewRequestV1 { proposal_id } => Some(format!("review-request-{proposal_id}")),
            Self::FetchFilesV1 { inbox_id } => Some(format!("fetch-files-{inbox_id}")),
            Self::ReviewDueV1 { proposal_id, due } => {
                Some(format!("review-due-{proposal_id}-{due}"))
            }
            Self::Unknown => None,
        }
    }
}

/// Why a job did not complete: decides between a retry and the dead letter
/// (see [`crate::engine::retry`]).
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// Trying again later may succeed (an outage, a rate limit, a conflict).
    #[error("{error:#}")]
    Retryable {
        /// What went wrong.
        error: anyhow::Error,
        /// The server asked to be called again no sooner than this
        /// (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Not the job's own failure: it waits for another job (its
    /// conversation is busy with another worker, or an earlier message of
    /// it is not answered yet). Retried without using up the job's attempts,
    /// up to a hard limit.
    #[error("{0:#}")]
    Deferred(anyhow::Error),
    /// Trying again will not help (bad data, a refused request).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl JobFailure {
    /// A failure with context, retryable or not.
    pub fn new(e: impl Into<anyhow::Error>, retryable: bool, context: &'static str) -> Self {
        if retryable {
            Self::retryable(e, context)
        } else {
            Self::permanent(e, context)
        }
    }

    /// A retryable failure with context.
    pub fn retryable(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Retryable {
            error: e.into().context(context),
            retry_after: None,
        }
    }

    /// A permanent failure with context.
    pub fn permanent(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Permanent(e.into().context(context))
    }

    /// A failure that waits for another job, with context.
    pub fn deferred(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Deferred(e.into().context(context))
    }

    /// The same failure, with the wait a server asked for when it is
    /// retryable.
    #[must_use]
    pub fn with_retry_after(self, wait: Option<Duration>) -> Self {
        match self {
            Self::Retryable { error, .. } => Self::Retryable {
                error,
                retry_after: wait,
            },
            other => other,
        }
    }

    /// The wait a server asked for, if this failure carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::Deferred(_) | Self::Permanent(_) => None,
        }
    }

    /// What went wrong, whatever the kind of failure.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Self::Retryable { error, .. } | Self::Deferred(error) | Self::Permanent(error) => error,
        }
    }

    /// What went wrong, taken out of the failure.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Self::Retryable { error, .. } | Self::Deferred(error) | Self::Permanent(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_kept_only_when_retryable() {
        let after = Some(Duration::from_secs(7));
        let failure =
            JobFailure::retryable(anyhow::anyhow!("HTTP 429"), "x").with_retry_after(after);
        assert_eq!(failure.retry_after(), after);
        let failure =
            JobFailure::permanent(anyhow::anyhow!("HTTP 400"), "x").with_retry_after(after);
        assert_eq!(failure.retry_after(), None);
        let failure = JobFailure::deferred(anyhow::anyhow!("busy"), "x").with_retry_after(after);
        assert_eq!(failure.retry_after(), None);
    }

    #[test]
    fn the_envelope_keeps_the_wire_format_of_the_kind() {
        let inbox = InboxId::from(uuid::Uuid::nil());
        let tenant = TenantId::from(uuid::Uuid::max());
        let job = Job::new(tenant, "tp", WorkerJob::TurnV1 { inbox_id: inbox });
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "TurnV1",
                "inbox_id": inbox,
                "tenant_id": tenant,
                "traceparent": "tp",
            })
        );
        assert_eq!(serde_json::from_value::<Job<WorkerJob>>(json).unwrap(), job);
    }

    #[test]
    fn unknown_kinds_decode() {
        let tenant = uuid::Uuid::nil();
        let future: Job<WorkerJob> = serde_json::from_value(
            serde_json::json!({"type": "ReviewV9", "x": 1, "tenant_id": tenant}),
        )
        .unwrap();
        assert_eq!(future.kind, WorkerJob::Unknown);
        let future: Job<DeliveryJob> = serde_json::from_value(
            serde_json::json!({"type": "DeliverV2", "tenant_id": tenant, "traceparent": ""}),
        )
        .unwrap();
        assert_eq!(future.kind, DeliveryJob::Unknown);
    }

    #[test]
    fn dedupe_keys_name_the_kind_and_its_row() {
        let id = ProposalId::from(uuid::Uuid::nil());
        assert_eq!(
            WorkerJob::ExecuteV1 { proposal_id: id }.dedupe_key(),
            Some(format!("execute-{id}"))
        );
        assert_eq!(
            DeliveryJob::ReviewRequestV1 { proposal_id: id }.dedupe_key(),
            Some(format!("review-request-{id}"))
        );
        assert_eq!(WorkerJob::Unknown.dedupe_key(), None);
    }
}
