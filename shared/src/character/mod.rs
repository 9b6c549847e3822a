//! Character files: one agent each (persona, model settings, tools, triggers,
//! memory), parsed and validated at load so a bad file fails with a clear error.
//!
//! A character lives in `characters/<name>/character.toml`:
//!
//! ```toml
//! name = "book-e"
//! display_name = "Book-E"
//! language = "en"
//! persona = "You are Book-E, ..."
//! api = "fiken"
//!
//! [[tools]]
//! name = "get_bank_balances"
//! description = "Current balance of the company's bank accounts."
//! operation = "getBankBalances"
//!
//! [[triggers]]
//! on = "chat"
//!
//! [[triggers]]
//! on = "schedule"
//! cron = "0 0 7 * * Mon"
//! task = "Summarize last week."
//! ```
//!
//! A tool names an operation of its character's API (`api`, an OpenAPI
//! document in `characters/apis/`, see [`api`]): what the model may send
//! is derived from the document, so a character cannot drift from the API
//! it calls. [`load`] reads a directory of characters, [`validate`] holds
//! the rules a file must keep, [`schedule`] the cron expressions of
//! schedule triggers.

pub mod api;
pub mod load;
pub mod operation;
pub mod schedule;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use api::{ApiProfile, Apis};
pub use load::Characters;
pub use schedule::CronSchedule;

/// Longest accepted character file, in bytes.
pub const MAX_CHARACTER_FILE_BYTES: u64 = 256 * 1024;

/// A validated agent definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Character {
    /// Stable name, equal to the character's directory name (`book-e`).
    pub name: String,
    /// Name shown to users (`Book-E`).
    pub display_name: String,
    /// Language the agent answers in by default (BCP 47, e.g. `en`, `nb`).
    pub language: String,
    /// Who the agent is and what it does.
    pub persona: String,
    /// Background facts the agent knows.
    #[serde(default)]
    pub lore: Vec<String>,
    /// How the agent writes.
    #[serde(default)]
    pub style: Vec<String>,
    /// Model settings.
    #[serde(default)]
    pub model: ModelSettings,
    /// The API its operation tools call (`characters/apis/<api>.toml`).
    #[serde(default)]
    pub api: Option<String>,
    /// Tools: operations of the API and builtins.
    #[serde(default)]
    pub tools: Vec<ToolDef>,
    /// When the agent runs: chats routed to it, events, schedules.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// How much of the conversation and of what is known about the user goes
    /// into the prompt.
    #[serde(default)]
    pub memory: MemorySettings,
    /// The parsed cron expressions of the schedule triggers, in trigger order.
    #[serde(skip)]
    schedules: Vec<CronSchedule>,
    /// The loaded API of its operation tools.
    #[serde(skip)]
    api_profile: Option<Arc<ApiProfile>>,
}

/// When a character runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "TriggerInFile")]
pub enum Trigger {
    /// The agent answers chats routed to it.
    Chat,
    /// The agent runs `task` when an event of this type is recorded.
    Event {
        /// Event name `<context>.<action>` (`proposal.review_requested`): the
        /// event type without the `automate_e.` prefix and the version.
        event: String,
        /// What the agent is asked to do with the event.
        task: String,
        /// Where the agent's answer goes; see [`PostTo::default_for`].
        post_to: Option<PostTo>,
    },
    /// The agent runs `task` whenever the cron expression fires (UTC).
    Schedule {
        /// Cron expression; see [`crate::engine::schedule`] for the forms.
        cron: String,
        /// What the agent is asked to do.
        task: String,
    },
}

/// A trigger as written in a file. `Chat {}` is a struct variant so that
/// unknown fields next to `on = "chat"` are rejected too (serde ignores extra
/// fields of an internally tagged unit variant).
#[derive(Deserialize)]
#[serde(tag = "on", rename_all = "lowercase", deny_unknown_fields)]
enum TriggerInFile {
    Chat {},
    Event {
        event: String,
        task: String,
        #[serde(default)]
        post_to: Option<PostTo>,
    },
    Schedule {
        cron: String,
        task: String,
    },
}

impl From<TriggerInFile> for Trigger {
    fn from(t: TriggerInFile) -> Self {
        match t {
            TriggerInFile::Chat {} => Self::Chat,
            TriggerInFile::Event {
                event,
                task,
                post_to,
            } => Self::Event {
                event,
                task,
                post_to,
            },
            TriggerInFile::Schedule { cron, task } => Self::Schedule { cron, task },
        }
    }
}

/// Where the answer to an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostTo {
    /// The review thread of the proposal the event is about (`proposal.*`
    /// events only).
    ReviewThread,
    /// The agent's own channel.
    AgentChannel,
}

impl PostTo {
    /// Where an event trigger posts when its file does not say:
    /// [`PostTo::ReviewThread`] for `proposal.*` events, otherwise
    /// [`PostTo::AgentChannel`].
    pub fn default_for(event: &str) -> Self {
        if is_proposal_event(event) {
            Self::ReviewThread
        } else {
            Self::AgentChannel
        }
    }
}

fn is_proposal_event(event: &str) -> bool {
    event.starts_with("proposal.")
}

/// How much history and user knowledge a character's prompt holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// The most recent conversation messages shown to the model
    /// (1 – 200, default 40).
    pub history_messages: u32,
    /// The most characters of those messages shown (1,000 – 400,000,
    /// default 48,000, some 12,000 tokens): the newest whole, the one that
    /// crosses the line cut, older ones left out. A chat's longest message
    /// is 40,000 characters: forty of them would overflow any model.
    pub history_chars: u32,
    /// When set (at least 1), messages older than this many days are not
    /// shown to the model, even within `history_messages`.
    pub history_days: Option<u32>,
    /// The most known facts about the user put into the prompt
    /// (0 – 100, default 20).
    pub facts: u32,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            history_messages: 40,
            history_chars: 48_000,
            history_days: None,
            facts: 20,
        }
    }
}

const MAX_HISTORY_MESSAGES: u32 = 200;
const HISTORY_CHARS: std::ops::RangeInclusive<u32> = 1_000..=400_000;
const MAX_FACTS: u32 = 100;

/// Model settings of a character; unset fields fall back to the worker's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model name; `None` uses the worker's configured default model.
    pub name: Option<String>,
    /// Sampling temperature (0.0 – 2.0).
    pub temperature: Option<f32>,
    /// Upper bound on tokens in one model answer.
    pub max_output_tokens: Option<u32>,
    /// Upper bound on LLM rounds with tool calls in one turn.
    pub max_tool_rounds: Option<u32>,
}

/// Whether calling a tool reads or changes the books: a `GET` operation
/// or a builtin reads, every other operation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effect {
    /// Called during the turn.
    #[default]
    Read,
    /// Never called during the turn: it becomes a proposal for review.
    Write,
}

/// Tools the worker runs itself instead of calling the Accounting API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Stores one durable fact about the user the agent is talking to.
    RememberFact,
    /// Reports the tenant's recorded LLM and Accounting API usage and cost.
    UsageReport,
}

impl Builtin {
    /// The name used in character files (`remember_fact`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RememberFact => "remember_fact",
            Self::UsageReport => "usage_report",
        }
    }

    /// The JSON Schema of the builtin's arguments.
    pub fn parameters(self) -> Value {
        match self {
            Self::RememberFact => json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["fact"],
                "properties": {
                    "fact": {
                        "type": "string",
                        "description": "One short durable fact about the user, e.g. their role or a preference."
                    }
                }
            }),
            Self::UsageReport => json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "fromDate": { "type": "string", "description": "First day included, yyyy-mm-dd." },
                    "toDate": { "type": "string", "description": "Last day included, yyyy-mm-dd." }
                }
            }),
        }
    }
}

/// One tool the model may call: an operation of the character's API or a
/// builtin the worker runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// Function name shown to the model (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// The API operation it calls, by `operationId`.
    #[serde(default)]
    pub operation: Option<String>,
    /// Set for a tool the worker runs itself.
    #[serde(default)]
    pub builtin: Option<Builtin>,
    /// Write tools: the operation that attaches a receipt the owner sent to
    /// what the write creates (the model names the receipt; the file is
    /// uploaded after the write).
    #[serde(default)]
    pub receipt: Option<String>,
    /// Write tools: the body field (a JSON pointer, `/supplierId`) that
    /// holds a contact's id. The model may give a new contact instead,
    /// which is found by name or created first.
    #[serde(default)]
    pub contact_field: Option<String>,
    /// Read tools: keep only the listed items whose array field of this
    /// name is empty (purchases without `purchaseAttachments`).
    #[serde(default)]
    pub only_without: Option<String>,
    /// Write tools: what identifies a learned pattern: a pointer into the
    /// arguments (`/body/supplierId`), or the name of an argument of its
    /// own the model fills (`merchant`), which is not sent to the API.
    #[serde(default)]
    pub pattern_key: Option<String>,
    /// Write tools: the arguments (pointers) a learned pattern must match.
    #[serde(default)]
    pub pattern_fields: Vec<String>,
    /// Write tools: the integer arguments (pointers; `*` for every item of
    /// an array) whose sum, in minor units, is checked against the
    /// tenant's auto-approval limit.
    #[serde(default)]
    pub amount_fields: Vec<String>,
    /// Read or write, from the operation's method.
    #[serde(skip)]
    pub effect: Effect,
    /// The JSON Schema of the arguments the model sends, derived at load.
    #[serde(skip)]
    pub parameters: Value,
}

/// The argument naming a receipt, for tools with [`ToolDef::receipt`] and
/// for operations that upload a file.
pub const RECEIPT_ARGUMENT: &str = "receipt";

/// The argument holding a new contact, for tools with
/// [`ToolDef::contact_field`].
pub const NEW_CONTACT_ARGUMENT: &str = "newContact";

/// The argument holding an operation's body.
pub const BODY_ARGUMENT: &str = "body";

impl ToolDef {
    /// The declared properties of the argument schema.
    pub fn properties(&self) -> Option<&serde_json::Map<String, Value>> {
        self.parameters.get("properties").and_then(Value::as_object)
    }

    /// The pattern key when it is an argument of the tool's own (not sent
    /// to the API).
    pub fn own_pattern_argument(&self) -> Option<&str> {
        self.pattern_key.as_deref().filter(|k| !k.starts_with('/'))
    }
}

/// Why a character file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CharacterError {
    /// The file could not be read.
    #[error("cannot read character file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than its limit.
    #[error("{path} is {bytes} bytes; the limit is {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("character file {path} is malformed: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The file parsed but breaks a rule.
    #[error("character `{character}` is invalid: {reason}")]
    Invalid {
        /// The character's name.
        character: String,
        /// What is wrong.
        reason: String,
    },
    /// An API profile breaks a rule.
    #[error("API `{api}` is invalid: {reason}")]
    InvalidApi {
        /// The profile's name.
        api: String,
        /// What is wrong.
        reason: String,
    },
    /// No character with that name is loaded.
    #[error("no character named `{0}` is loaded")]
    Unknown(String),
}

impl Character {
    /// Whether the agent answers chats routed to it.
    pub fn takes_chat(&self) -> bool {
        self.triggers.contains(&Trigger::Chat)
    }

    /// The event triggers as `(event, task, post_to)`, with `post_to`
    /// defaulted by [`PostTo::default_for`].
    pub fn event_triggers(&self) -> impl Iterator<Item = (&str, &str, PostTo)> {
        self.triggers.iter().filter_map(|t| match t {
            Trigger::Event {
                event,
                task,
                post_to,
            } => Some((
                event.as_str(),
                task.as_str(),
                post_to.unwrap_or_else(|| PostTo::default_for(event)),
            )),
            _ => None,
        })
    }

    /// The schedule triggers as `(schedule, cron text, task)`, of a character
    /// loaded with [`Character::parse`].
    pub fn schedules(&self) -> impl Iterator<Item = (&CronSchedule, &str, &str)> {
        let texts = self.triggers.iter().filter_map(|t| match t {
            Trigger::Schedule { cron, task } => Some((cron.as_str(), task.as_str())),
            _ => None,
        });
        self.schedules
            .iter()
            .zip(texts)
            .map(|(schedule, (cron, task))| (schedule, cron, task))
    }

    /// The tool with this name, if the character has it.
    pub fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The API its operation tools call, once loaded.
    pub fn api(&self) -> Option<&Arc<ApiProfile>> {
        self.api_profile.as_ref()
    }
}

/// The shipped APIs (`characters/apis/`), loaded once, for tests.
#[cfg(test)]
pub(crate) fn test_apis() -> &'static Apis {
    static APIS: std::sync::OnceLock<Apis> = std::sync::OnceLock::new();
    APIS.get_or_init(|| {
        api::load_apis(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters/apis"))
            .expect("the shipped APIs load")
    })
}

/// The smallest valid character file, for tests.
#[cfg(test)]
const MINIMAL: &str = r#"
    name = "book-e"
    display_name = "Book-E"
    language = "en"
    persona = "An accountant."
"#;
