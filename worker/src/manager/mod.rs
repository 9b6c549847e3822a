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

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::access::llm::{LlmClient, OfferedTools};
use shared::access::store::TenantStore;
use shared::character::{Character, Characters};
use shared::engine::prompt::InlineFile;
use shared::engine::tool::function_specs;
use shared::job::JobFailure;
use shared::request::FileRef;

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
    /// Each character's tools, serialized once: an API's operations are
    /// tens of kilobytes of schema, which every model call would otherwise
    /// serialize again.
    tools: Arc<BTreeMap<String, OfferedTools>>,
}

impl AgentContext {
    /// The context of `characters`, with the worker's defaults.
    pub fn new(
        llm: LlmClient,
        characters: Characters,
        default_model: String,
        default_max_tool_rounds: u32,
    ) -> Self {
        let tools = characters
            .all()
            .map(|c| (c.name.clone(), OfferedTools::new(&function_specs(c))))
            .collect();
        Self {
            llm,
            characters: Arc::new(characters),
            default_model,
            default_max_tool_rounds,
            tools: Arc::new(tools),
        }
    }

    /// `character`'s tools, as the model is offered them.
    pub fn tools_of(&self, character: &Character) -> OfferedTools {
        match self.tools.get(&character.name) {
            Some(tools) => tools.clone(),
            None => OfferedTools::new(&function_specs(character)),
        }
    }

    /// The model `character` is run with.
    pub fn model_of<'a>(&'a self, character: &'a Character) -> &'a str {
        character
            .model
            .name
            .as_deref()
            .unwrap_or(&self.default_model)
    }
}

/// Stored files read back for a model to see (a file no longer kept is
/// left out).
pub async fn inline_files(
    store: &TenantStore,
    files: &[FileRef],
) -> Result<Vec<InlineFile>, JobFailure> {
    use base64::Engine as _;
    let mut inline = Vec::new();
    for file in files {
        let Some((_, bytes)) = store.kept_file(&file.sha256).await? else {
            continue;
        };
        inline.push(InlineFile {
            filename: file.filename.clone(),
            content_type: file.content_type.clone(),
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        });
    }
    Ok(inline)
}
