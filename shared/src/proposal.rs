//! The vocabulary of proposals: where one is in its life, and what reviews
//! conclude about it. The decisions themselves are in
//! [`crate::engine::proposal`].

use serde::{Deserialize, Serialize};

/// Where a proposal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Just filed by the agent.
    Proposed,
    /// A trusted pattern approved it.
    AutoApproved,
    /// Waiting for a human reviewer.
    ReviewRequested,
    /// A reviewer approved this exact payload.
    Approved,
    /// A reviewer rejected it.
    Rejected,
    /// Nobody decided in time.
    Expired,
    /// The write is being made.
    Executing,
    /// The write was made.
    Executed,
    /// The write failed (retried, then dead).
    ExecutionFailed,
    /// Whether a write was made could not be found out: a human must look
    /// in the books; nothing is sent again.
    ExecutionUncertain,
}

impl ProposalState {
    /// The name stored in the projection.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::AutoApproved => "auto_approved",
            Self::ReviewRequested => "review_requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Executing => "executing",
            Self::Executed => "executed",
            Self::ExecutionFailed => "execution_failed",
            Self::ExecutionUncertain => "execution_uncertain",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Proposed,
            Self::AutoApproved,
            Self::ReviewRequested,
            Self::Approved,
            Self::Rejected,
            Self::Expired,
            Self::Executing,
            Self::Executed,
            Self::ExecutionFailed,
            Self::ExecutionUncertain,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// Why a reviewer's decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum DecisionRefusal {
    /// The clicker is not a reviewer of the proposal's tenant.
    #[error("you are not a reviewer for this company")]
    NotAReviewer,
    /// The clicker proposed it.
    #[error("you cannot decide on your own proposal")]
    OwnProposal,
    /// The click was for a different payload than the proposal holds.
    #[error("this proposal changed since it was shown to you")]
    PayloadChanged,
    /// It is not waiting for a decision any more.
    #[error("this proposal is already {state}")]
    NotPending {
        /// Its state.
        state: String,
    },
}

/// What the history of executed proposals says about a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternAssessment {
    /// Executed proposals with the same pattern key.
    pub occurrences: usize,
    /// Share of them whose pattern fields agree with the most common values.
    pub confidence: f64,
    /// Whether the new proposal has those most common values.
    pub matches: bool,
}

/// What an agent reviewer concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentVerdict {
    /// Within policy as far as the agent can tell.
    Approve,
    /// Needs a human's attention.
    Flag,
}
