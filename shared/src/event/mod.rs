//! Domain events recorded in the event log, one enum per kind of stream, and
//! their wire names (`automate_e.<context>.<action>.v<N>`): the names are
//! spelled only here.

mod conversation;
mod proposal;
mod run;

use serde::{Deserialize, Serialize};

pub use conversation::{
    Attachment, ConversationEvent, LlmCalled, MAX_ATTACHMENTS, MessageReceived, ReplyComposed,
    ToolCalled, ToolOutcome, TurnFailed,
};
pub use proposal::{
    AgentReviewed, AutoApproved, Decided, DecisionRefused, Evidence, ExecutionFinished,
    ExecutionStarted, ExecutionUncertain, Expired, MAX_EVIDENCE_CHARS, ProposalEvent, Proposed,
    ReviewPosted, ReviewReminded, ReviewRequested, StepFinished, StepOutcome, StepStarted,
};
pub use run::{DeliveryEvent, ReplyDelivered, RunCompleted, RunEvent};

use crate::ids::{AgentRunId, ConversationId, EVENT_TYPE_PREFIX, OutboxId, ProposalId};

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user`, `agent`, `system` or `reviewer`.
    pub kind: ActorKind,
    /// The platform user id, agent name or component name.
    pub id: String,
}

/// The kinds of actor in the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A person chatting with an agent.
    User,
    /// An agent (character).
    Agent,
    /// A component of the runtime.
    System,
    /// A person deciding on a proposal.
    Reviewer,
}

impl ActorKind {
    /// The name stored in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
            Self::System => "system",
            Self::Reviewer => "reviewer",
        }
    }
}

/// Whether a recorded event type (`automate_e.proposal.review_requested.v1`)
/// is `name` (`proposal.review_requested`) in any version.
pub fn event_type_matches(name: &str, event_type: &str) -> bool {
    event_type
        .strip_prefix(EVENT_TYPE_PREFIX)
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix(".v"))
        .is_some_and(|version| !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
}

/// The stream name of a conversation.
pub fn conversation_stream(id: ConversationId) -> String {
    format!("{CONVERSATION_STREAM_PREFIX}{id}")
}

/// What a conversation's stream name starts with (its id follows).
pub const CONVERSATION_STREAM_PREFIX: &str = "conversation-";

/// The stream name of an outbox item's delivery.
pub fn delivery_stream(id: OutboxId) -> String {
    format!("delivery-{id}")
}

/// The stream name of a proposal.
pub fn proposal_stream(id: ProposalId) -> String {
    format!("proposal-{id}")
}

/// The stream name of an agent run.
pub fn run_stream(id: AgentRunId) -> String {
    format!("agent-run-{id}")
}

/// The proposal a `proposal-<uuid>` stream belongs to.
pub fn proposal_of_stream(stream: &str) -> Option<ProposalId> {
    stream
        .strip_prefix("proposal-")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map(ProposalId::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_match_any_version_only() {
        let e = "proposal.review_requested";
        assert!(event_type_matches(e, ProposalEvent::REVIEW_REQUESTED));
        assert!(event_type_matches(
            e,
            "automate_e.proposal.review_requested.v12"
        ));
        for other in [
            "automate_e.proposal.review_requested.v",
            "automate_e.proposal.review_requested.v1x",
            "automate_e.proposal.review_requested",
            "automate_e.proposal.review_requested_again.v1",
            ProposalEvent::APPROVED,
            "proposal.review_requested.v1",
            "other.proposal.review_requested.v1",
        ] {
            assert!(!event_type_matches(e, other), "{other}");
        }
    }

    #[test]
    fn a_proposal_stream_names_its_proposal() {
        let id = ProposalId::new_v7();
        assert_eq!(proposal_of_stream(&proposal_stream(id)), Some(id));
        assert_eq!(proposal_of_stream("conversation-x"), None);
        assert_eq!(proposal_of_stream("proposal-nope"), None);
    }
}
