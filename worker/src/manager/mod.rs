//! Worker managers: orchestrate one use case each.

pub mod accounts;
pub mod agent_loop;
pub mod conversation;
pub mod execution;
pub mod relay;
pub mod review;
pub mod reviewer;
pub mod runs;
pub mod tools;
pub mod triggers;

use std::sync::Arc;

use shared::access::llm::LlmClient;
use shared::character::{Character, Characters};

/// What every manager that runs agents shares: the model endpoint, the
/// loaded characters, and the defaults for what a character leaves unset.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The OpenAI-compatible endpoint.
    pub llm: LlmClient,
    /// The deployment's characters.
    pub characters: Arc<Characters>,
    /// Model when the character names none.
    pub default_model: String,
    /// Model rounds with tool calls when the character sets none.
    pub default_max_tool_rounds: u32,
}

impl AgentContext {
    /// The model `character` is run with.
    pub fn model_of<'a>(&'a self, character: &'a Character) -> &'a str {
        character
            .model
            .name
            .as_deref()
            .unwrap_or(&self.default_model)
    }
}
