//! Events of a proposal stream (`proposal-<uuid>`): filed, reviewed, decided,
//! executed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ConversationId, InboxId, ProposalId};
use crate::proposal::{AgentVerdict, DecisionRefusal, PatternAssessment};
use crate::request::WritePlan;

/// A read the agent made before proposing: what the proposal rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The read tool.
    pub tool: String,
    /// HTTP status it answered.
    pub status: u16,
    /// The start of its answer.
    pub excerpt: String,
}

/// Longest evidence excerpt kept, in characters.
pub const MAX_EVIDENCE_CHARS: usize = 600;

/// Events of a proposal stream (`proposal-<uuid>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProposalEvent {
    /// The agent filed a write.
    Proposed(Proposed),
    /// The agent reviewer gave its verdict.
    AgentReviewed(AgentReviewed),
    /// A trusted pattern approved it.
    AutoApproved(AutoApproved),
    /// Human review was requested.
    ReviewRequested(ReviewRequested),
    /// The review message is in Slack.
    ReviewPosted(ReviewPosted),
    /// A reviewer decided.
    Decided(Decided),
    /// A decision was refused (unauthorized, own proposal, stale payload).
    DecisionRefused(DecisionRefused),
    /// The write started (attempt n).
    ExecutionStarted(ExecutionStarted),
    /// The write finished.
    ExecutionFinished(ExecutionFinished),
    /// A step's request is about to be sent: what its list showed before.
    StepStarted(StepStarted),
    /// A step's write is made (or found made), and what it created.
    StepFinished(StepFinished),
    /// Whether a step's write was made cannot be found out.
    ExecutionUncertain(ExecutionUncertain),
    /// The reviewers were reminded (or, escalated, other reviewers asked).
    ReviewReminded(ReviewReminded),
    /// Nobody decided in time.
    Expired(Expired),
}

/// A filed write: the exact request and what it is bound by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposed {
    pub proposal_id: ProposalId,
    /// The conversation it came from.
    pub conversation_id: ConversationId,
    /// The message whose turn filed it.
    pub inbox_id: InboxId,
    /// The exact writes, as approved.
    pub request: WritePlan,
    /// Its digest.
    pub payload_sha256: String,
    /// The pattern key's value (e.g. the merchant), if the tool declares one.
    pub pattern_value: Option<String>,
    /// The amount in minor units, if the tool declares its fields.
    pub amount_minor: Option<i64>,
    /// Who asked (`platform:user id`).
    pub proposer: String,
    /// The reads it rests on.
    pub evidence: Vec<Evidence>,
}

/// An agent reviewer's verdict on a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReviewed {
    pub agent: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
    pub verdict: AgentVerdict,
    /// Its notes for the humans.
    pub notes: String,
}

/// Auto-approval by a trusted pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoApproved {
    /// The digest approved.
    pub payload_sha256: String,
    /// The pattern that approved it.
    pub pattern: PatternAssessment,
}

/// Human review requested, and why no auto-approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRequested {
    /// Why a human must decide.
    pub reason: String,
}

/// The review message in Slack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewPosted {
    /// Review channel.
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
}

/// A reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// Approved (true) or rejected.
    pub approved: bool,
    /// Who (`platform:user id`).
    pub reviewer: String,
    /// The digest decided on.
    pub payload_sha256: String,
    /// Why, for a rejection.
    pub reason: Option<String>,
    /// Whether the agent reviewer's verdict agreed (when there was one).
    pub agent_agreed: Option<bool>,
}

/// A refused decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRefused {
    /// Who tried.
    pub reviewer: String,
    /// Why it was refused.
    pub refusal: DecisionRefusal,
}

/// The write started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStarted {
    /// Attempt number (1-based).
    pub attempt: u32,
}

/// The write finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionFinished {
    /// Whether the Accounting API accepted it.
    pub succeeded: bool,
    /// HTTP status, when it answered.
    pub status: Option<u16>,
    /// SHA-256 of its answer, when it answered.
    pub response_sha256: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// The intent to send a step's request, recorded before it is sent: if
/// its answer is lost, what is new in the list since then is what it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStarted {
    /// The step (index into the plan).
    pub step: usize,
    /// Ids of the items the step's list showed before (the items that
    /// matched the request, or all of them for an upload).
    pub before: Vec<String>,
    /// When the request is sent.
    #[serde(default)]
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How a step's write came to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// The API answered that it made it.
    Created,
    /// The answer was lost; the list showed it made.
    Confirmed,
    /// It was there already (find or create), so nothing was sent.
    Found,
}

/// A step done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFinished {
    /// The step (index into the plan).
    pub step: usize,
    /// The id of what it made or found, when the API says it.
    pub id: Option<String>,
    /// How.
    pub outcome: StepOutcome,
}

/// A step whose outcome could not be found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionUncertain {
    /// The step (index into the plan).
    pub step: usize,
    /// Ids of the new items that each could be what it made.
    pub candidates: Vec<String>,
    /// What a human should check.
    pub reason: String,
}

/// A reminder in the card's thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewReminded {
    /// Whether it asked the escalation reviewers.
    pub escalated: bool,
    /// Who was mentioned (`platform:user id`).
    pub mentioned: Vec<String>,
}

/// The end of a review window nobody decided in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// When the window ended.
    pub deadline: chrono::DateTime<chrono::Utc>,
}

impl ProposalEvent {
    /// Type of [`Self::Proposed`].
    pub const PROPOSED: &'static str = "automate_e.proposal.proposed.v1";
    /// Type of [`Self::AgentReviewed`].
    pub const AGENT_REVIEWED: &'static str = "automate_e.proposal.agent_reviewed.v1";
    /// Type of [`Self::AutoApproved`].
    pub const AUTO_APPROVED: &'static str = "automate_e.proposal.auto_approved.v1";
    /// Type of [`Self::ReviewRequested`].
    pub const REVIEW_REQUESTED: &'static str = "automate_e.proposal.review_requested.v1";
    /// Type of [`Self::ReviewPosted`].
    pub const REVIEW_POSTED: &'static str = "automate_e.proposal.review_posted.v1";
    /// Type of an approving [`Self::Decided`].
    pub const APPROVED: &'static str = "automate_e.proposal.approved.v1";
    /// Type of a rejecting [`Self::Decided`].
    pub const REJECTED: &'static str = "automate_e.proposal.rejected.v1";
    /// Type of [`Self::DecisionRefused`].
    pub const DECISION_REFUSED: &'static str = "automate_e.proposal.decision_refused.v1";
    /// Type of [`Self::ExecutionStarted`].
    pub const EXECUTING: &'static str = "automate_e.proposal.executing.v1";
    /// Type of a successful [`Self::ExecutionFinished`].
    pub const EXECUTED: &'static str = "automate_e.proposal.executed.v1";
    /// Type of a failed [`Self::ExecutionFinished`].
    pub const EXECUTION_FAILED: &'static str = "automate_e.proposal.execution_failed.v1";
    /// Type of [`Self::StepStarted`].
    pub const STEP_STARTED: &'static str = "automate_e.proposal.step_started.v1";
    /// Type of [`Self::StepFinished`].
    pub const STEP_FINISHED: &'static str = "automate_e.proposal.step_finished.v1";
    /// Type of [`Self::ExecutionUncertain`].
    pub const EXECUTION_UNCERTAIN: &'static str = "automate_e.proposal.execution_uncertain.v1";
    /// Type of a reminding [`Self::ReviewReminded`].
    pub const REVIEW_REMINDED: &'static str = "automate_e.proposal.review_reminded.v1";
    /// Type of an escalating [`Self::ReviewReminded`].
    pub const REVIEW_ESCALATED: &'static str = "automate_e.proposal.review_escalated.v1";
    /// Type of [`Self::Expired`].
    pub const EXPIRED: &'static str = "automate_e.proposal.expired.v1";

    /// The event's type in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Proposed(_) => Self::PROPOSED,
            Self::AgentReviewed(_) => Self::AGENT_REVIEWED,
            Self::AutoApproved(_) => Self::AUTO_APPROVED,
            Self::ReviewRequested(_) => Self::REVIEW_REQUESTED,
            Self::ReviewPosted(_) => Self::REVIEW_POSTED,
            Self::Decided(d) if d.approved => Self::APPROVED,
            Self::Decided(_) => Self::REJECTED,
            Self::DecisionRefused(_) => Self::DECISION_REFUSED,
            Self::ExecutionStarted(_) => Self::EXECUTING,
            Self::ExecutionFinished(f) if f.succeeded => Self::EXECUTED,
            Self::ExecutionFinished(_) => Self::EXECUTION_FAILED,
            Self::StepStarted(_) => Self::STEP_STARTED,
            Self::StepFinished(_) => Self::STEP_FINISHED,
            Self::ExecutionUncertain(_) => Self::EXECUTION_UNCERTAIN,
            Self::ReviewReminded(r) if r.escalated => Self::REVIEW_ESCALATED,
            Self::ReviewReminded(_) => Self::REVIEW_REMINDED,
            Self::Expired(_) => Self::EXPIRED,
        }
    }

    /// The payload stored in the log.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).expect("proposal events always serialize")
    }

    /// Reads an event back from its type and payload; `None` for other
    /// types, or a payload this version cannot read.
    pub fn from_stored(type_name: &str, payload: Value) -> Option<Self> {
        let parsed = match type_name {
            Self::PROPOSED => serde_json::from_value(payload).map(Self::Proposed),
            Self::AGENT_REVIEWED => serde_json::from_value(payload).map(Self::AgentReviewed),
            Self::AUTO_APPROVED => serde_json::from_value(payload).map(Self::AutoApproved),
            Self::REVIEW_REQUESTED => serde_json::from_value(payload).map(Self::ReviewRequested),
            Self::REVIEW_POSTED => serde_json::from_value(payload).map(Self::ReviewPosted),
            Self::APPROVED | Self::REJECTED => serde_json::from_value(payload).map(Self::Decided),
            Self::DECISION_REFUSED => serde_json::from_value(payload).map(Self::DecisionRefused),
            Self::EXECUTING => serde_json::from_value(payload).map(Self::ExecutionStarted),
            Self::EXECUTED | Self::EXECUTION_FAILED => {
                serde_json::from_value(payload).map(Self::ExecutionFinished)
            }
            Self::STEP_STARTED => serde_json::from_value(payload).map(Self::StepStarted),
            Self::STEP_FINISHED => serde_json::from_value(payload).map(Self::StepFinished),
            Self::EXECUTION_UNCERTAIN => {
                serde_json::from_value(payload).map(Self::ExecutionUncertain)
            }
            Self::REVIEW_REMINDED | Self::REVIEW_ESCALATED => {
                serde_json::from_value(payload).map(Self::ReviewReminded)
            }
            Self::EXPIRED => serde_json::from_value(payload).map(Self::Expired),
            _ => return None,
        };
        parsed.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_type_and_payload() {
        let event = ProposalEvent::ReviewRequested(ReviewRequested {
            reason: "over the limit".into(),
        });
        let back = ProposalEvent::from_stored(event.type_name(), event.payload());
        assert_eq!(back, Some(event));
        assert_eq!(
            ProposalEvent::from_stored(ProposalEvent::PROPOSED, Value::Null),
            None
        );
    }
}
