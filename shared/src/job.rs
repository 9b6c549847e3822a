//! Job payloads on the Redis queue: small, versioned, referencing rows in
//! Postgres, carrying the W3C `traceparent` of the span that enqueued them.

use serde::{Deserialize, Serialize};

use crate::ids::{InboxId, OutboxId, ProposalId};

/// Jobs the worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkerJob {
    /// Run the agent turn for one inbox message.
    TurnV1 {
        /// The inbox row.
        inbox_id: InboxId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Review a new proposal: policy, pattern and the agent reviewer decide
    /// between auto-approval and human review.
    ReviewV1 {
        /// The proposal.
        proposal_id: ProposalId,
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Carry out an approved proposal, exactly its approved request.
    ExecuteV1 {
        /// The proposal.
        proposal_id: ProposalId,
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
        /// Trace context of the enqueuing span.
        traceparent: String,
    },
    /// Post a proposal's review request to the tenant's review channel.
    ReviewRequestV1 {
        /// The proposal.
        proposal_id: ProposalId,
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
        Self::Retryable(e.into().context(context))
    }

    /// A permanent failure with context.
    pub fn permanent(e: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Permanent(e.into().context(context))
    }
}

impl WorkerJob {
    /// The queue task id: enqueuing the same job twice is a no-op.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            Self::TurnV1 { inbox_id, .. } => Some(format!("turn-{inbox_id}")),
            Self::ReviewV1 { proposal_id, .. } => Some(format!("review-{proposal_id}")),
            Self::ExecuteV1 { proposal_id, .. } => Some(format!("execute-{proposal_id}")),
            Self::Unknown => None,
        }
    }
}

impl DeliveryJob {
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
    fn jobs_are_tagged_and_unknown_kinds_decode() {
        let job = WorkerJob::TurnV1 {
            inbox_id: InboxId::from(uuid::Uuid::nil()),
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
