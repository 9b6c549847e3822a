//! Events of a conversation stream (`conversation-<uuid>`): what a turn
//! received, asked the model, called and replied.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ConversationId, InboxId, OutboxId, ProposalId};
use crate::request::ToolRequest;

/// Events of a conversation stream (`conversation-<uuid>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConversationEvent {
    /// A user's message reached the worker.
    MessageReceived(MessageReceived),
    /// The model was called once.
    LlmCalled(LlmCalled),
    /// A tool call was made, or refused.
    ToolCalled(ToolCalled),
    /// The turn's reply was written to the outbox.
    ReplyComposed(ReplyComposed),
    /// The message's turn failed for good; the user was told.
    TurnFailed(TurnFailed),
}

/// A turn given up after its last attempt (dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnFailed {
    /// The inbox row that was not answered.
    pub inbox_id: InboxId,
    /// The outbox row holding the notice to the user.
    pub outbox_id: OutboxId,
    /// Why, for operators (no message text).
    pub reason: String,
}

/// A user's message, as the agent received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceived {
    pub inbox_id: InboxId,
    pub conversation_id: ConversationId,
    /// The message text.
    pub text: String,
    /// Files sent with the message, by reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file sent with a message (e.g. a receipt): where the platform has it,
/// then, once the gateway fetched it, the stored file or why it was not
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name as sent.
    pub filename: String,
    /// Where the platform has it (a URL, or `telegram-file:<file id>`).
    pub url: String,
    /// MIME type, when the platform says.
    pub content_type: Option<String>,
    /// Size in bytes, when the platform says.
    pub size_bytes: Option<u64>,
    /// The stored file (`files`), once fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<crate::request::FileRef>,
    /// Why it was not stored (too large, a type that is not read, not
    /// reachable), once the gateway gave up on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Attachment {
    /// A file the platform announced, not fetched yet.
    pub fn announced(
        filename: String,
        url: String,
        content_type: Option<String>,
        size_bytes: Option<u64>,
    ) -> Self {
        Self {
            filename,
            url,
            content_type,
            size_bytes,
            stored: None,
            refused: None,
        }
    }

    /// Whether the gateway has still to fetch it.
    pub fn is_pending(&self) -> bool {
        self.stored.is_none() && self.refused.is_none()
    }
}

/// Most attachments kept from one message.
pub const MAX_ATTACHMENTS: usize = 10;

/// One model call: what was asked (by digest) and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCalled {
    /// The inbox row whose turn made the call.
    pub inbox_id: InboxId,
    /// 1-based round within the turn.
    pub round: u32,
    /// Model name sent.
    pub model: String,
    /// SHA-256 of the prompt messages.
    pub prompt_sha256: String,
    /// Provider's response id.
    pub response_id: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
    /// Tool calls asked for.
    pub tool_calls: u32,
    /// Wall time of the call, in milliseconds.
    pub duration_ms: u64,
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// The Accounting API answered 2xx.
    Ok,
    /// The Accounting API answered with an error status.
    HttpError,
    /// The request could not be completed (timeout, connection, size cap).
    Failed,
    /// The call was refused before any request (bad arguments, unknown tool).
    Refused,
    /// A write tool: not called during the turn; filed as a proposal.
    Proposed,
}

/// One tool call and its result, by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCalled {
    /// The inbox row whose turn made the call.
    pub inbox_id: InboxId,
    /// The model's call id.
    pub call_id: String,
    /// The tool name.
    pub tool: String,
    /// The exact request, when one was built.
    pub request: Option<Box<ToolRequest>>,
    /// The proposal a write call filed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<ProposalId>,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// SHA-256 of the response body, when a response came.
    pub response_sha256: Option<String>,
    /// Size of the response body in bytes, when a response came.
    pub response_bytes: Option<u64>,
    /// Why it was refused or failed.
    pub error: Option<String>,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
}

/// The reply of a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyComposed {
    /// The inbox row the reply answers.
    pub inbox_id: InboxId,
    /// The outbox row holding it.
    pub outbox_id: OutboxId,
    /// The reply text.
    pub text: String,
}

impl ConversationEvent {
    /// Type of [`Self::MessageReceived`].
    pub const MESSAGE_RECEIVED: &'static str = "automate_e.conversation.message_received.v1";
    /// Type of [`Self::LlmCalled`].
    pub const LLM_CALLED: &'static str = "automate_e.conversation.llm_called.v1";
    /// Type of [`Self::ToolCalled`].
    pub const TOOL_CALLED: &'static str = "automate_e.conversation.tool_called.v1";
    /// Type of [`Self::ReplyComposed`].
    pub const REPLY_COMPOSED: &'static str = "automate_e.conversation.reply_composed.v1";
    /// Type of [`Self::TurnFailed`].
    pub const TURN_FAILED: &'static str = "automate_e.conversation.turn_failed.v1";

    /// The event's type in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::MessageReceived(_) => Self::MESSAGE_RECEIVED,
            Self::LlmCalled(_) => Self::LLM_CALLED,
            Self::ToolCalled(_) => Self::TOOL_CALLED,
            Self::ReplyComposed(_) => Self::REPLY_COMPOSED,
            Self::TurnFailed(_) => Self::TURN_FAILED,
        }
    }

    /// The payload stored in the log.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).expect("conversation events always serialize")
    }

    /// Reads an event back from its type and payload; `None` for other types.
    pub fn from_stored(type_name: &str, payload: Value) -> Option<Self> {
        let parsed = match type_name {
            Self::MESSAGE_RECEIVED => serde_json::from_value(payload).map(Self::MessageReceived),
            Self::LLM_CALLED => serde_json::from_value(payload).map(Self::LlmCalled),
            Self::TOOL_CALLED => serde_json::from_value(payload).map(Self::ToolCalled),
            Self::REPLY_COMPOSED => serde_json::from_value(payload).map(Self::ReplyComposed),
            Self::TURN_FAILED => serde_json::from_value(payload).map(Self::TurnFailed),
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
        let event = ConversationEvent::ReplyComposed(ReplyComposed {
            inbox_id: InboxId::new_v7(),
            outbox_id: OutboxId::new_v7(),
            text: "hei".into(),
        });
        let back = ConversationEvent::from_stored(event.type_name(), event.payload());
        assert_eq!(back, Some(event));
        assert_eq!(
            ConversationEvent::from_stored("automate_e.other.thing.v1", Value::Null),
            None
        );
    }
}
