//! Events of the streams that close a unit of work: an agent run
//! (`agent-run-<uuid>`) and a reply's delivery (`delivery-<uuid>`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentRunId, OutboxId};
use crate::trigger::RunReason;

/// Events of an agent run's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunEvent {
    /// The run ended (once per run).
    RunCompleted(RunCompleted),
}

/// An agent run ended: why it ran and what its model calls cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCompleted {
    pub run_id: AgentRunId,
    pub agent: String,
    /// Its trigger.
    pub reason: RunReason,
    /// Whether it posted an answer.
    pub posted: bool,
    /// The model that answered last, when the run called one.
    pub model: Option<String>,
    /// Prompt tokens of all its model calls.
    pub input_tokens: u64,
    /// Completion tokens of all its model calls.
    pub output_tokens: u64,
    /// Model calls made.
    pub llm_calls: u64,
    /// Tool calls answered.
    pub tool_calls: u64,
}

impl RunEvent {
    /// Type of [`Self::RunCompleted`].
    pub const RUN_COMPLETED: &'static str = "automate_e.agent.run_completed.v1";

    /// The event's type in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RunCompleted(_) => Self::RUN_COMPLETED,
        }
    }

    /// The payload stored in the log.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).expect("run events always serialize")
    }
}

/// Events of a delivery stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeliveryEvent {
    /// Every chunk of the reply is posted.
    ReplyDelivered(ReplyDelivered),
}

/// A reply is posted, in these platform messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyDelivered {
    pub outbox_id: OutboxId,
    /// The platform's ids of the posted messages, one per chunk.
    pub platform_message_ids: Vec<String>,
}

impl DeliveryEvent {
    /// Type of [`Self::ReplyDelivered`].
    pub const REPLY_DELIVERED: &'static str = "automate_e.delivery.reply_delivered.v1";

    /// The event's type in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ReplyDelivered(_) => Self::REPLY_DELIVERED,
        }
    }

    /// The payload stored in the log.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).expect("delivery events always serialize")
    }
}
