//! Job payloads on the Redis queue: small, versioned, referencing rows in
//! Postgres, carrying the W3C `traceparent` of the span that enqueued them.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentRunId, InboxId, OutboxId, ProposalId, TenantId};

/// Jobs the worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkerJob {
    /// Run the agent turn for one inbox message.
    TurnV1 {
        /// The inbox row.
        inbox_id: InboxId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Review a new proposal: policy, pattern and the agent reviewer decide
    /// between auto-approval and human review.
    ReviewV1 {
        /// The proposal.
        proposal_id: ProposalId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Carry out an approved proposal, exactly its approved request.
    ExecuteV1 {
        /// The proposal.
        proposal_id: ProposalId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Run an agent for an event or a schedule period (an agent run row).
    RunV1 {
        /// The agent run.
        run_id: AgentRunId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// A job kind this build does not know (a newer producer): dead-lettered,
    /// never a decode error that would stop the worker.
    #[serde(other)]
    Unknown,
}

/// Jobs the gateway runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryJob {
    /// Post one outbox reply to its platform.
    DeliverV1 {
        /// The outbox row.
        outbox_id: OutboxId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Post a proposal's review request to the tenant's review channel.
    ReviewRequestV1 {
        /// The proposal.
        proposal_id: ProposalId,
        /// The tenant the job works for.
        tenant_id: TenantId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// A job kind this build does not know.
    #[serde(other)]
    Unknown,
}

/// Why a job did not complete: decides between a retry and the dead letter.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// Trying again later may succeed (an outage, a rate limit, a conflict).
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Trying again will not help (bad data, a refused request).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

/// A server asked to be called again no sooner than this (`Retry-After`);
/// attached as context to a retryable failure, read by the job's backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("asked to retry after {0:?}")]
pub struct RetryAfter(pub std::time::Duration);

/// Marks a retryable failure that is not the job's own: its conversation is
/// busy with another worker, or an earlier message of it is not answered
/// yet. Retried without using up the job's attempts (up to a hard limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("waiting for another job")]
pub struct Deferred;

impl JobFailure {
    /// A retryable failure that waits for another job ([`Deferred`]).
    pub fn deferred(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Retryable(e.into().context(Deferred).context(context))
    }

    /// Whether this failure only waits for another job.
    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Retryable(e) if e.downcast_ref::<Deferred>().is_some())
    }

    /// The wait a server asked for, if this failure carries one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Retryable(e) => e.downcast_ref::<RetryAfter>().map(|r| r.0),
            Self::Permanent(_) => None,
        }
    }

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
        Self::Retryable(e.into().context(context))
    }

    /// A permanent failure with context.
    pub fn permanent(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Permanent(e.into().context(context))
    }
}

/// What a job is about: for spans, metrics and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobAbout<'a> {
    /// Short kind (`turn`, `review`, `execute`, `deliver`, …).
    pub kind: &'static str,
    /// The row it works on.
    pub subject: Option<uuid::Uuid>,
    /// The tenant it works for.
    pub tenant: Option<TenantId>,
    /// Trace context of the enqueuing span ("" for unknown jobs).
    pub traceparent: &'a str,
}

impl JobAbout<'_> {
    /// The span a job runs in: a child of the span that enqueued it (its
    /// `traceparent`), carrying kind, subject, attempt and trace id.
    pub fn span(&self, attempt: usize) -> tracing::Span {
        let span = tracing::info_span!(
            "job",
            job.kind = self.kind,
            job.subject = tracing::field::Empty,
            attempt,
            trace_id = tracing::field::Empty,
        );
        if let Some(subject) = self.subject {
            span.record("job.subject", tracing::field::display(subject));
        }
        crate::telemetry::continue_trace(&span, self.traceparent);
        span
    }
}

impl WorkerJob {
    /// What the job is about.
    pub fn about(&self) -> JobAbout<'_> {
        let (kind, subject, tenant, traceparent) = match self {
            Self::TurnV1 {
                inbox_id,
                tenant_id,
                traceparent,
            } => (
                "turn",
                Some(inbox_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::ReviewV1 {
                proposal_id,
                tenant_id,
                traceparent,
            } => (
                "review",
                Some(proposal_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::ExecuteV1 {
                proposal_id,
                tenant_id,
                traceparent,
            } => (
                "execute",
                Some(proposal_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::RunV1 {
                run_id,
                tenant_id,
                traceparent,
            } => (
                "run",
                Some(run_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::Unknown => ("unknown", None, None, ""),
        };
        JobAbout {
            kind,
            subject,
            tenant,
            traceparent,
        }
    }

    /// The queue task id: enqueuing the same job twice is a no-op.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            Self::TurnV1 { inbox_id, .. } => Some(format!("turn-{inbox_id}")),
            Self::ReviewV1 { proposal_id, .. } => Some(format!("review-{proposal_id}")),
            Self::ExecuteV1 { proposal_id, .. } => Some(format!("execute-{proposal_id}")),
            Self::RunV1 { run_id, .. } => Some(format!("run-{run_id}")),
            Self::Unknown => None,
        }
    }
}

impl DeliveryJob {
    /// What the job is about.
    pub fn about(&self) -> JobAbout<'_> {
        let (kind, subject, tenant, traceparent) = match self {
            Self::DeliverV1 {
                outbox_id,
                tenant_id,
                traceparent,
            } => (
                "deliver",
                Some(outbox_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::ReviewRequestV1 {
                proposal_id,
                tenant_id,
                traceparent,
            } => (
                "review_request",
                Some(proposal_id.0),
                Some(*tenant_id),
                traceparent.as_str(),
            ),
            Self::Unknown => ("unknown", None, None, ""),
        };
        JobAbout {
            kind,
            subject,
            tenant,
            traceparent,
        }
    }

    /// The queue task id: enqueuing the same job twice is a no-op.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            Self::DeliverV1 { outbox_id, .. } => Some(format!("deliver-{outbox_id}")),
            Self::ReviewRequestV1 { proposal_id, .. } => {
                Some(format!("review-request-{proposal_id}"))
            }
            Self::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_found_under_later_context_and_only_when_retryable() {
        let after = std::time::Duration::from_secs(7);
        let e = anyhow::anyhow!("HTTP 429").context(RetryAfter(after));
        let failure = JobFailure::retryable(e, "Cannot get an answer");
        assert_eq!(failure.retry_after(), Some(after));
        let e = anyhow::anyhow!("HTTP 429").context(RetryAfter(after));
        assert_eq!(JobFailure::permanent(e, "x").retry_after(), None);
        assert_eq!(
            JobFailure::retryable(anyhow::anyhow!("HTTP 500"), "x").retry_after(),
            None
        );
    }

    #[test]
    fn deferral_is_found_under_later_context() {
        let failure = JobFailure::deferred(anyhow::anyhow!("busy"), "Waiting");
        assert!(failure.is_deferred());
        assert!(!JobFailure::retryable(anyhow::anyhow!("busy"), "x").is_deferred());
    }

    #[test]
    fn jobs_are_tagged_and_unknown_kinds_decode() {
        let job = WorkerJob::TurnV1 {
            inbox_id: InboxId::from(uuid::Uuid::nil()),
            tenant_id: TenantId::from(uuid::Uuid::nil()),
            traceparent: "tp".into(),
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["type"], "TurnV1");
        assert_eq!(serde_json::from_value::<WorkerJob>(json).unwrap(), job);
        let future: WorkerJob = serde_json::from_str(r#"{"type":"ReviewV9","x":1}"#).unwrap();
        assert_eq!(future, WorkerJob::Unknown);
        let future: DeliveryJob = serde_json::from_str(r#"{"type":"DeliverV2"}"#).unwrap();
        assert_eq!(future, DeliveryJob::Unknown);
    }
}
