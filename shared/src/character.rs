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
//! style = ["Answer briefly."]
//!
//! [model]
//! temperature = 0.2
//!
//! [[tools]]
//! name = "get_bank_balance"
//! description = "Current balance of the company's bank accounts."
//! effect = "read"
//! method = "GET"
//! path = "/bank/balance"
//! parameters = { type = "object", properties = {} }
//!
//! [[tools]]
//! name = "remember_fact"
//! description = "Remember one durable fact about the owner."
//! effect = "read"
//! builtin = "remember_fact"
//!
//! [[triggers]]
//! on = "chat"
//!
//! [[triggers]]
//! on = "event"
//! event = "proposal.review_requested"
//! task = "Write notes for the reviewer."
//! post_to = "review_thread"
//!
//! [[triggers]]
//! on = "schedule"
//! cron = "0 0 7 * * Mon"
//! task = "Summarize last week."
//!
//! [memory]
//! history_messages = 40
//! history_days = 90
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::schedule::CronSchedule;

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
    /// Tools: HTTP endpoints of the Accounting API and builtins.
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

/// Whether a recorded event type (`automate_e.proposal.review_requested.v1`)
/// is the trigger's event (`proposal.review_requested`) in any version.
pub fn event_type_matches(trigger_event: &str, event_type: &str) -> bool {
    event_type
        .strip_prefix(EVENT_TYPE_PREFIX)
        .and_then(|rest| rest.strip_prefix(trigger_event))
        .and_then(|rest| rest.strip_prefix(".v"))
        .is_some_and(|version| !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
}

/// A SQL `LIKE` pattern (default escape character `\`) for the event types of
/// a trigger's event in any version: `automate\_e.proposal.review\_requested.v%`.
/// `%`, `_` and `\` in the name are escaped, so they match literally. The
/// pattern also matches a non-numeric version suffix; filter rows with
/// [`event_type_matches`] when that matters.
pub fn event_type_pattern(trigger_event: &str) -> String {
    let mut pattern = String::new();
    for c in EVENT_TYPE_PREFIX.chars().chain(trigger_event.chars()) {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(".v%");
    pattern
}

const EVENT_TYPE_PREFIX: &str = "automate_e.";

/// How much history and user knowledge a character's prompt holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// The most recent conversation messages shown to the model
    /// (1 – 200, default 40).
    pub history_messages: u32,
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
            history_days: None,
            facts: 20,
        }
    }
}

const MAX_HISTORY_MESSAGES: u32 = 200;
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

/// Whether calling a tool reads or changes the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Called during the turn.
    Read,
    /// Never called during the turn: it becomes a proposal for review.
    Write,
}

/// HTTP methods a tool may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`: arguments not in the path go in the query string.
    Get,
    /// `POST`: arguments not in the path go in a JSON body.
    Post,
    /// `PUT`: arguments not in the path go in a JSON body.
    Put,
    /// `PATCH`: arguments not in the path go in a JSON body.
    Patch,
    /// `DELETE`: arguments not in the path go in the query string.
    Delete,
}

impl HttpMethod {
    /// Whether arguments travel in a JSON body rather than the query string.
    pub fn has_body(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch)
    }

    /// The method as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
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
                "properties": {
                    "fromDate": { "type": "string", "description": "First day included, yyyy-mm-dd." },
                    "toDate": { "type": "string", "description": "Last day included, yyyy-mm-dd." }
                }
            }),
        }
    }
}

/// One tool the model may call: an HTTP endpoint of the Accounting API
/// (`method` and `path`) or a builtin the worker runs (`builtin`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// Function name shown to the model (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// Read or write (builtins are always read).
    pub effect: Effect,
    /// HTTP method (HTTP tools only).
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Path relative to the Accounting API base URL; `{param}` segments are
    /// filled from the arguments (HTTP tools only).
    #[serde(default)]
    pub path: Option<String>,
    /// Set for a tool the worker runs itself; it has no method or path.
    #[serde(default)]
    pub builtin: Option<Builtin>,
    /// JSON Schema (an object schema) of the arguments. Builtins leave it out
    /// in the file; it is filled from [`Builtin::parameters`] at load.
    #[serde(default)]
    pub parameters: Value,
    /// For write tools: the argument that identifies a pattern (e.g. merchant).
    #[serde(default)]
    pub pattern_key: Option<String>,
    /// For write tools: the arguments a learned pattern must match.
    #[serde(default)]
    pub pattern_fields: Vec<String>,
    /// For write tools: the integer arguments (minor units) whose sum is the
    /// amount checked against the tenant's auto-approval limit.
    #[serde(default)]
    pub amount_fields: Vec<String>,
}

impl ToolDef {
    /// The method and path of an HTTP tool; `None` for a builtin.
    pub fn endpoint(&self) -> Option<(HttpMethod, &str)> {
        match (self.builtin, self.method, self.path.as_deref()) {
            (None, Some(method), Some(path)) => Some((method, path)),
            _ => None,
        }
    }

    /// Names of the `{param}` placeholders in the path, in order (none for a
    /// builtin).
    pub fn path_params(&self) -> Vec<&str> {
        self.path
            .as_deref()
            .unwrap_or_default()
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }

    /// The declared properties of the argument schema.
    pub fn properties(&self) -> Option<&serde_json::Map<String, Value>> {
        self.parameters.get("properties").and_then(Value::as_object)
    }

    /// The required argument names of the schema.
    pub fn required(&self) -> Vec<&str> {
        self.parameters
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
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
    /// The file is larger than [`MAX_CHARACTER_FILE_BYTES`].
    #[error("character file {path} is {bytes} bytes; the limit is {MAX_CHARACTER_FILE_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
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
    /// No character with that name is loaded.
    #[error("no character named `{0}` is loaded")]
    Unknown(String),
}

impl Character {
    /// Parses and validates a character from TOML text.
    pub fn parse(toml_text: &str, path: &Path) -> Result<Self, CharacterError> {
        let mut character: Self =
            toml::from_str(toml_text).map_err(|e| CharacterError::Malformed {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
        character.validate()?;
        character.schedules = character.validate_triggers()?;
        for tool in &mut character.tools {
            if let Some(builtin) = tool.builtin {
                tool.parameters = builtin.parameters();
            }
        }
        Ok(character)
    }

    fn invalid(&self, reason: impl Into<String>) -> CharacterError {
        CharacterError::Invalid {
            character: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), CharacterError> {
        if !is_slug(&self.name) {
            return Err(self.invalid("name must be lowercase letters, digits and dashes"));
        }
        if self.persona.trim().is_empty() {
            return Err(self.invalid("persona must not be empty"));
        }
        if let Some(t) = self.model.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(self.invalid("model.temperature must be between 0.0 and 2.0"));
        }
        if self.model.max_tool_rounds == Some(0) {
            return Err(self.invalid("model.max_tool_rounds must be at least 1"));
        }
        self.validate_memory()?;
        let mut seen = HashSet::new();
        let mut builtins = HashSet::new();
        for tool in &self.tools {
            if !seen.insert(tool.name.as_str()) {
                return Err(self.invalid(format!("tool `{}` is declared twice", tool.name)));
            }
            if let Some(builtin) = tool.builtin
                && !builtins.insert(builtin)
            {
                return Err(self.invalid(format!(
                    "builtin `{}` is declared by two tools",
                    builtin.as_str()
                )));
            }
            self.validate_tool(tool)?;
        }
        Ok(())
    }

    fn validate_memory(&self) -> Result<(), CharacterError> {
        let memory = &self.memory;
        if !(1..=MAX_HISTORY_MESSAGES).contains(&memory.history_messages) {
            return Err(self.invalid(format!(
                "memory.history_messages must be between 1 and {MAX_HISTORY_MESSAGES}"
            )));
        }
        if memory.history_days == Some(0) {
            return Err(self.invalid(
                "memory.history_days must be at least 1 (leave it out to keep all days)",
            ));
        }
        if memory.facts > MAX_FACTS {
            return Err(self.invalid(format!("memory.facts must be at most {MAX_FACTS}")));
        }
        Ok(())
    }

    /// Checks the triggers and returns the parsed schedules, in order.
    fn validate_triggers(&self) -> Result<Vec<CronSchedule>, CharacterError> {
        let mut chats = 0;
        let mut events = HashSet::new();
        let mut schedules: Vec<CronSchedule> = Vec::new();
        for trigger in &self.triggers {
            match trigger {
                Trigger::Chat => {
                    chats += 1;
                    if chats > 1 {
                        return Err(self.invalid("at most one `on = \"chat\"` trigger is allowed"));
                    }
                }
                Trigger::Event {
                    event,
                    task,
                    post_to,
                } => {
                    let bad =
                        |reason: String| self.invalid(format!("event trigger `{event}`: {reason}"));
                    check_event_name(event).map_err(bad)?;
                    if task.trim().is_empty() {
                        return Err(bad("task must not be empty".into()));
                    }
                    if *post_to == Some(PostTo::ReviewThread) && !is_proposal_event(event) {
                        return Err(bad(
                            "post_to = \"review_thread\" needs a `proposal.*` event: only proposals have a review thread".into(),
                        ));
                    }
                    if !events.insert(event.as_str()) {
                        return Err(bad("declared twice".into()));
                    }
                }
                Trigger::Schedule { cron, task } => {
                    let bad = |reason: String| {
                        self.invalid(format!("schedule trigger `{cron}`: {reason}"))
                    };
                    let schedule = CronSchedule::parse(cron)
                        .map_err(|e| bad(format!("invalid cron expression: {e}")))?;
                    if task.trim().is_empty() {
                        return Err(bad("task must not be empty".into()));
                    }
                    if schedules.contains(&schedule) {
                        return Err(bad("declared twice".into()));
                    }
                    schedules.push(schedule);
                }
            }
        }
        Ok(schedules)
    }

    fn validate_tool(&self, tool: &ToolDef) -> Result<(), CharacterError> {
        let bad = |reason: String| self.invalid(format!("tool `{}`: {reason}", tool.name));
        let name_ok = (1..=64).contains(&tool.name.len())
            && tool
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(bad("name must match [a-zA-Z0-9_-]{1,64}".into()));
        }
        match (tool.builtin, tool.method, tool.path.as_deref()) {
            (Some(_), None, None) => return self.validate_builtin(tool),
            (Some(_), _, _) => return Err(bad("builtin tools have no method or path".into())),
            (None, Some(_), Some(path)) => {
                if !path.starts_with('/') || path.contains("..") || path.contains('?') {
                    return Err(bad(
                        "path must start with `/` and hold no `..` or query".into()
                    ));
                }
            }
            (None, _, _) => {
                return Err(bad(
                    "an HTTP tool needs both `method` and `path` (or set `builtin`)".into(),
                ));
            }
        }
        if tool.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(bad(
                "parameters must be a JSON Schema with type \"object\"".into()
            ));
        }
        let properties = tool.properties().cloned().unwrap_or_default();
        let required = tool.required();
        for param in tool.path_params() {
            if !properties.contains_key(param) || !required.contains(&param) {
                return Err(bad(format!(
                    "path parameter `{param}` must be a required property"
                )));
            }
        }
        for name in required.iter().copied() {
            if !properties.contains_key(name) {
                return Err(bad(format!("required `{name}` is not a declared property")));
            }
        }
        match tool.effect {
            Effect::Read
                if tool.pattern_key.is_some()
                    || !tool.pattern_fields.is_empty()
                    || !tool.amount_fields.is_empty() =>
            {
                Err(bad(
                    "only write tools declare pattern_key, pattern_fields and amount_fields".into(),
                ))
            }
            Effect::Write => {
                let declared = tool
                    .pattern_key
                    .iter()
                    .chain(&tool.pattern_fields)
                    .chain(&tool.amount_fields);
                match declared
                    .into_iter()
                    .find(|f| !properties.contains_key(f.as_str()))
                {
                    Some(f) => Err(bad(format!(
                        "pattern field `{f}` is not a declared property"
                    ))),
                    None => Ok(()),
                }
            }
            Effect::Read => Ok(()),
        }
    }

    fn validate_builtin(&self, tool: &ToolDef) -> Result<(), CharacterError> {
        let bad = |reason: &str| self.invalid(format!("tool `{}`: {reason}", tool.name));
        if tool.effect != Effect::Read {
            return Err(bad("builtin tools are read tools: set effect = \"read\""));
        }
        if !tool.parameters.is_null() {
            return Err(bad(
                "builtin tools take their parameters from the runtime: remove `parameters`",
            ));
        }
        if tool.pattern_key.is_some()
            || !tool.pattern_fields.is_empty()
            || !tool.amount_fields.is_empty()
        {
            return Err(bad(
                "only write tools declare pattern_key, pattern_fields and amount_fields",
            ));
        }
        Ok(())
    }

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
}

/// Checks an event trigger's name: `<context>.<action>`, each part lowercase
/// letters and underscores.
fn check_event_name(event: &str) -> Result<(), String> {
    if event.starts_with(EVENT_TYPE_PREFIX) {
        return Err(
            "write the event without the `automate_e.` prefix and version, e.g. `proposal.review_requested`".into(),
        );
    }
    let part_ok = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    };
    let parts: Vec<&str> = event.split('.').collect();
    let is_version = |p: &&str| {
        p.strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if parts.len() > 2 && parts.last().is_some_and(is_version) {
        return Err("write the event without its version (`.v1`)".into());
    }
    if parts.len() != 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(
            "the event must be `<context>.<action>` in lowercase letters and underscores, e.g. `proposal.review_requested`".into(),
        );
    }
    // Every agent run ends in these: reacting to them would trigger itself.
    if matches!(parts[0], "agent" | "delivery") {
        return Err(format!(
            "`{}.*` events follow every agent run; an agent cannot react to them",
            parts[0]
        ));
    }
    Ok(())
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// All characters of a deployment, by name.
#[derive(Debug, Clone, Default)]
pub struct Characters {
    by_name: BTreeMap<String, Character>,
}

impl Characters {
    /// Loads every `<dir>/<name>/character.toml`; the file's `name` must equal
    /// its directory name.
    pub fn load_dir(dir: &Path) -> Result<Self, CharacterError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CharacterError::Io { path, source }
        };
        let mut by_name = BTreeMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let file = entry.path().join("character.toml");
            if !file.is_file() {
                continue;
            }
            let bytes = std::fs::metadata(&file).map_err(io(&file))?.len();
            if bytes > MAX_CHARACTER_FILE_BYTES {
                return Err(CharacterError::TooLarge { path: file, bytes });
            }
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            let character = Character::parse(&text, &file)?;
            if entry.file_name().to_str() != Some(character.name.as_str()) {
                return Err(
                    character.invalid(format!("its directory must be named `{}`", character.name))
                );
            }
            by_name.insert(character.name.clone(), character);
        }
        Ok(Self { by_name })
    }

    /// The character with this name.
    pub fn get(&self, name: &str) -> Result<&Character, CharacterError> {
        self.by_name
            .get(name)
            .ok_or_else(|| CharacterError::Unknown(name.to_owned()))
    }

    /// Every loaded character, by name.
    pub fn all(&self) -> impl Iterator<Item = &Character> {
        self.by_name.values()
    }

    /// Names of all loaded characters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "book-e"
        display_name = "Book-E"
        language = "en"
        persona = "An accountant."
    "#;

    fn parse(extra: &str) -> Result<Character, CharacterError> {
        Character::parse(&format!("{MINIMAL}\n{extra}"), Path::new("x.toml"))
    }

    fn reason(extra: &str) -> String {
        parse(extra).unwrap_err().to_string()
    }

    #[test]
    fn minimal_character_parses() {
        let c = parse("").unwrap();
        assert_eq!(c.name, "book-e");
        assert!(c.tools.is_empty());
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        assert!(reason("colour = 1").contains("colour"));
    }

    #[test]
    fn malformed_toml_names_the_file() {
        let err = Character::parse("name = ", Path::new("chars/x.toml")).unwrap_err();
        assert!(err.to_string().contains("chars/x.toml"), "{err}");
    }

    #[test]
    fn write_tool_with_pattern_parses() {
        let c = parse(
            r#"[[tools]]
            name = "create_purchase"
            description = "d"
            effect = "write"
            method = "POST"
            path = "/purchases"
            pattern_key = "supplier"
            pattern_fields = ["account"]
            parameters = { type = "object", properties = { supplier = { type = "string" }, account = { type = "string" } } }
            "#,
        )
        .unwrap();
        assert_eq!(c.tool("create_purchase").unwrap().effect, Effect::Write);
    }

    #[test]
    fn path_parameter_must_be_required_property() {
        let r = reason(
            r#"[[tools]]
            name = "get"
            description = "d"
            effect = "read"
            method = "GET"
            path = "/invoices/{id}"
            parameters = { type = "object", properties = { id = { type = "string" } } }
            "#,
        );
        assert!(r.contains("path parameter `id`"), "{r}");
    }

    #[test]
    fn rejects_rule_breaking_tools() {
        let tool = |fields: &str| {
            format!(
                "[[tools]]\nname = \"t\"\ndescription = \"d\"\n{fields}\nparameters = {{ type = \"object\", properties = {{ a = {{ type = \"string\" }} }} }}"
            )
        };
        let cases = [
            (
                tool("effect = \"read\"\nmethod = \"GET\"\npath = \"x\""),
                "path must start",
            ),
            (
                tool("effect = \"read\"\nmethod = \"GET\"\npath = \"/a/../b\""),
                "path must start",
            ),
            (
                tool("effect = \"read\"\nmethod = \"GET\"\npath = \"/a\"\npattern_key = \"a\""),
                "only write tools",
            ),
            (
                tool("effect = \"write\"\nmethod = \"POST\"\npath = \"/a\"\npattern_key = \"zz\""),
                "pattern field `zz`",
            ),
            (
                tool("effect = \"sideways\"\nmethod = \"GET\"\npath = \"/a\""),
                "sideways",
            ),
            (
                tool("effect = \"read\"\nmethod = \"TRACE\"\npath = \"/a\""),
                "TRACE",
            ),
        ];
        for (extra, expected) in cases {
            let r = reason(&extra);
            assert!(r.contains(expected), "expected `{expected}` in `{r}`");
        }
    }

    #[test]
    fn an_agent_cannot_react_to_what_every_run_emits() {
        for event in ["agent.run_completed", "delivery.reply_delivered"] {
            let r = reason(&format!(
                "[[triggers]]\non = \"event\"\nevent = \"{event}\"\ntask = \"t\"\npost_to = \"agent_channel\""
            ));
            assert!(r.contains("cannot react"), "{event}: {r}");
        }
    }

    #[test]
    fn duplicate_tool_is_rejected() {
        let t = "[[tools]]\nname = \"t\"\ndescription = \"d\"\neffect = \"read\"\nmethod = \"GET\"\npath = \"/a\"\nparameters = { type = \"object\" }\n";
        assert!(reason(&format!("{t}{t}")).contains("declared twice"));
    }

    #[test]
    fn bad_name_and_temperature_are_rejected() {
        let r = Character::parse(&MINIMAL.replace("book-e", "Book E"), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(r.contains("lowercase"), "{r}");
        assert!(reason("[model]\ntemperature = 3.0").contains("temperature"));
    }

    fn trigger(fields: &str) -> String {
        format!("[[triggers]]\n{fields}\n")
    }

    #[test]
    fn triggers_parse_with_defaults() {
        let c = parse(&[
            trigger("on = \"chat\""),
            trigger("on = \"event\"\nevent = \"proposal.review_requested\"\ntask = \"Review it.\""),
            trigger("on = \"event\"\nevent = \"proposal.executed\"\ntask = \"Tell them.\"\npost_to = \"agent_channel\""),
            trigger("on = \"event\"\nevent = \"conversation.turn_failed\"\ntask = \"Explain.\""),
            trigger("on = \"schedule\"\ncron = \"0 0 7 * * Mon\"\ntask = \"Weekly summary.\""),
            trigger("on = \"schedule\"\ncron = \"0 8 1 * *\"\ntask = \"Monthly summary.\""),
        ]
        .concat())
        .unwrap();
        assert!(c.takes_chat());
        assert_eq!(
            c.event_triggers().collect::<Vec<_>>(),
            [
                (
                    "proposal.review_requested",
                    "Review it.",
                    PostTo::ReviewThread
                ),
                ("proposal.executed", "Tell them.", PostTo::AgentChannel),
                ("conversation.turn_failed", "Explain.", PostTo::AgentChannel),
            ]
        );
        let schedules: Vec<_> = c.schedules().collect();
        assert_eq!(schedules.len(), 2);
        assert_eq!(
            (schedules[0].1, schedules[0].2),
            ("0 0 7 * * Mon", "Weekly summary.")
        );
        assert_eq!(
            schedules[0].0,
            &CronSchedule::parse("0 0 7 * * Mon").unwrap()
        );
        assert_eq!(
            (schedules[1].1, schedules[1].2),
            ("0 8 1 * *", "Monthly summary.")
        );
        assert_eq!(schedules[1].0.as_str(), "0 8 1 * *");
    }

    #[test]
    fn no_triggers_means_no_chat() {
        let c = parse("").unwrap();
        assert!(!c.takes_chat());
        assert_eq!(c.event_triggers().count(), 0);
        assert_eq!(c.schedules().count(), 0);
    }

    #[test]
    fn rejects_rule_breaking_triggers() {
        let event =
            |name: &str| trigger(&format!("on = \"event\"\nevent = \"{name}\"\ntask = \"t\""));
        let schedule = |cron: &str| {
            trigger(&format!(
                "on = \"schedule\"\ncron = \"{cron}\"\ntask = \"t\""
            ))
        };
        let chat = trigger("on = \"chat\"");
        let cases = [
            (chat.repeat(2), "at most one `on = \"chat\"` trigger"),
            (
                event("automate_e.proposal.review_requested.v1"),
                "without the `automate_e.` prefix",
            ),
            (event("proposal.review_requested.v1"), "without its version"),
            (event("proposal"), "`<context>.<action>`"),
            (event("Proposal.Approved"), "`<context>.<action>`"),
            (event("proposal.review-requested"), "`<context>.<action>`"),
            (event("proposal.approved2"), "`<context>.<action>`"),
            (event("proposal._x"), "`<context>.<action>`"),
            (event("proposal."), "`<context>.<action>`"),
            (event("a.b.c"), "`<context>.<action>`"),
            (event("proposal.approved%"), "`<context>.<action>`"),
            (
                trigger("on = \"event\"\nevent = \"proposal.approved\"\ntask = \"  \""),
                "event trigger `proposal.approved`: task must not be empty",
            ),
            (
                trigger(
                    "on = \"event\"\nevent = \"conversation.turn_failed\"\ntask = \"t\"\npost_to = \"review_thread\"",
                ),
                "event trigger `conversation.turn_failed`: post_to = \"review_thread\" needs a `proposal.*` event",
            ),
            (
                [event("proposal.approved"), event("proposal.approved")].concat(),
                "event trigger `proposal.approved`: declared twice",
            ),
            (
                schedule("0 0 25 * * *"),
                "schedule trigger `0 0 25 * * *`: invalid cron expression: Hours must be less than 23",
            ),
            (schedule("every monday"), "got 2"),
            (schedule("0 0 7 * * 1"), "must use names"),
            (
                trigger("on = \"schedule\"\ncron = \"0 0 7 * * *\"\ntask = \"\""),
                "schedule trigger `0 0 7 * * *`: task must not be empty",
            ),
            (
                [schedule("0 7 * * *"), schedule("0 0 7 * * *")].concat(),
                "schedule trigger `0 0 7 * * *`: declared twice",
            ),
            (trigger("on = \"sometimes\""), "sometimes"),
            (
                trigger("on = \"chat\"\ntask = \"t\""),
                "unknown field `task`",
            ),
            (
                trigger(
                    "on = \"event\"\nevent = \"proposal.approved\"\ntask = \"t\"\ncron = \"* * * * * *\"",
                ),
                "unknown field `cron`",
            ),
            (
                trigger(
                    "on = \"event\"\nevent = \"proposal.approved\"\ntask = \"t\"\npost_to = \"dm\"",
                ),
                "dm",
            ),
            (
                trigger("on = \"schedule\"\ntask = \"t\""),
                "missing field `cron`",
            ),
        ];
        for (extra, expected) in cases {
            let r = reason(&extra);
            assert!(r.contains(expected), "expected `{expected}` in `{r}`");
        }
    }

    #[test]
    fn event_types_match_any_version_only() {
        let e = "proposal.review_requested";
        assert!(event_type_matches(
            e,
            "automate_e.proposal.review_requested.v1"
        ));
        assert!(event_type_matches(
            e,
            "automate_e.proposal.review_requested.v12"
        ));
        for other in [
            "automate_e.proposal.review_requested.v",
            "automate_e.proposal.review_requested.v1x",
            "automate_e.proposal.review_requested",
            "automate_e.proposal.review_requested_again.v1",
            "automate_e.proposal.approved.v1",
            "proposal.review_requested.v1",
            "other.proposal.review_requested.v1",
        ] {
            assert!(!event_type_matches(e, other), "{other}");
        }
        assert_eq!(
            event_type_pattern(e),
            r"automate\_e.proposal.review\_requested.v%"
        );
        assert_eq!(event_type_pattern("a%b.c\\d"), r"automate\_e.a\%b.c\\d.v%");
    }

    #[test]
    fn memory_defaults_and_limits() {
        let c = parse("").unwrap();
        assert_eq!(
            c.memory,
            MemorySettings {
                history_messages: 40,
                history_days: None,
                facts: 20
            }
        );
        let c = parse("[memory]\nhistory_days = 90\nfacts = 0").unwrap();
        assert_eq!(c.memory.history_messages, 40);
        assert_eq!(c.memory.history_days, Some(90));
        assert_eq!(c.memory.facts, 0);
        assert_eq!(
            parse("[memory]\nhistory_messages = 200")
                .unwrap()
                .memory
                .history_messages,
            200
        );
        let cases = [
            (
                "[memory]\nhistory_messages = 0",
                "memory.history_messages must be between 1 and 200",
            ),
            (
                "[memory]\nhistory_messages = 201",
                "memory.history_messages must be between 1 and 200",
            ),
            (
                "[memory]\nhistory_days = 0",
                "memory.history_days must be at least 1",
            ),
            ("[memory]\nfacts = 101", "memory.facts must be at most 100"),
            ("[memory]\nhistory = 3", "unknown field `history`"),
        ];
        for (extra, expected) in cases {
            let r = reason(extra);
            assert!(r.contains(expected), "expected `{expected}` in `{r}`");
        }
    }

    #[test]
    fn builtin_tool_gets_runtime_parameters() {
        let c = parse(
            "[[tools]]\nname = \"remember_fact\"\ndescription = \"d\"\neffect = \"read\"\nbuiltin = \"remember_fact\"",
        )
        .unwrap();
        let tool = c.tool("remember_fact").unwrap();
        assert_eq!(tool.builtin, Some(Builtin::RememberFact));
        assert_eq!(tool.parameters, Builtin::RememberFact.parameters());
        assert_eq!(tool.required(), ["fact"]);
        assert_eq!(tool.endpoint(), None);
        assert!(tool.path_params().is_empty());
        let report = Builtin::UsageReport.parameters();
        assert_eq!(report["type"], "object");
        assert!(report.get("required").is_none());
        assert_eq!(report["properties"]["fromDate"]["type"], "string");
        assert_eq!(report["properties"]["toDate"]["type"], "string");
    }

    #[test]
    fn http_tool_has_an_endpoint() {
        let c = parse(
            "[[tools]]\nname = \"get\"\ndescription = \"d\"\neffect = \"read\"\nmethod = \"GET\"\npath = \"/invoices/{id}\"\nparameters = { type = \"object\", required = [\"id\"], properties = { id = { type = \"string\" } } }",
        )
        .unwrap();
        let tool = c.tool("get").unwrap();
        assert_eq!(tool.endpoint(), Some((HttpMethod::Get, "/invoices/{id}")));
        assert_eq!(tool.path_params(), ["id"]);
    }

    #[test]
    fn rejects_rule_breaking_builtins() {
        let tool =
            |fields: &str| format!("[[tools]]\nname = \"t\"\ndescription = \"d\"\n{fields}\n");
        let remember = "builtin = \"remember_fact\"";
        let cases = [
            (
                tool(&format!(
                    "effect = \"read\"\n{remember}\nparameters = {{ type = \"object\" }}"
                )),
                "tool `t`: builtin tools take their parameters from the runtime",
            ),
            (
                tool(&format!("effect = \"write\"\n{remember}")),
                "builtin tools are read tools",
            ),
            (
                tool(&format!("effect = \"read\"\n{remember}\nmethod = \"GET\"")),
                "builtin tools have no method or path",
            ),
            (
                tool(&format!("effect = \"read\"\n{remember}\npath = \"/a\"")),
                "builtin tools have no method or path",
            ),
            (
                tool(&format!(
                    "effect = \"read\"\n{remember}\npattern_key = \"fact\""
                )),
                "only write tools",
            ),
            (
                tool("effect = \"read\"\nbuiltin = \"launch_rockets\""),
                "launch_rockets",
            ),
            (
                tool("effect = \"read\"\nmethod = \"GET\"\nparameters = { type = \"object\" }"),
                "an HTTP tool needs both `method` and `path`",
            ),
            (
                tool("effect = \"read\"\npath = \"/a\"\nparameters = { type = \"object\" }"),
                "an HTTP tool needs both `method` and `path`",
            ),
            (
                tool("effect = \"read\"\nmethod = \"GET\"\npath = \"/a\""),
                "parameters must be a JSON Schema",
            ),
            (
                format!(
                    "{}[[tools]]\nname = \"u\"\ndescription = \"d\"\neffect = \"read\"\n{remember}\n",
                    tool(&format!("effect = \"read\"\n{remember}"))
                ),
                "builtin `remember_fact` is declared by two tools",
            ),
        ];
        for (extra, expected) in cases {
            let r = reason(&extra);
            assert!(r.contains(expected), "expected `{expected}` in `{r}`");
        }
    }

    #[test]
    fn shipped_characters_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
        let all = Characters::load_dir(&dir).unwrap();
        assert_eq!(
            all.names().collect::<Vec<_>>(),
            ["alert-e", "book-e", "cost-e", "report-e", "review-e"]
        );
        let writes = |c: &Character| c.tools.iter().any(|t| t.effect == Effect::Write);
        let builtins = |c: &Character| c.tools.iter().filter_map(|t| t.builtin).collect::<Vec<_>>();
        let crons = |c: &Character| {
            c.schedules()
                .map(|(_, cron, _)| cron.to_owned())
                .collect::<Vec<_>>()
        };

        let book_e = all.get("book-e").unwrap();
        assert!(book_e.tools.iter().any(|t| t.effect == Effect::Read));
        assert!(writes(book_e));
        assert!(book_e.takes_chat());
        assert_eq!(builtins(book_e), [Builtin::RememberFact]);
        assert_eq!(
            book_e.tool("remember_fact").unwrap().parameters,
            Builtin::RememberFact.parameters()
        );
        assert_eq!(book_e.memory.history_messages, 40);
        assert_eq!(book_e.memory.history_days, Some(90));

        let review_e = all.get("review-e").unwrap();
        assert!(!review_e.takes_chat());
        let events: Vec<_> = review_e.event_triggers().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "proposal.review_requested");
        assert_eq!(events[0].2, PostTo::ReviewThread);
        assert!(events[0].1.contains("Do not decide."));
        assert!(crons(review_e).is_empty());

        let cost_e = all.get("cost-e").unwrap();
        assert!(cost_e.takes_chat());
        assert_eq!(builtins(cost_e), [Builtin::UsageReport]);
        assert_eq!(crons(cost_e), ["0 0 8 1 * *"]);
        assert_eq!(cost_e.model.max_tool_rounds, Some(3));

        let alert_e = all.get("alert-e").unwrap();
        assert!(alert_e.takes_chat());
        assert_eq!(crons(alert_e), ["0 0 7 * * *"]);
        assert!(!writes(alert_e));
        assert!(alert_e.tool("list_bank_transactions").is_some());
        assert!(alert_e.tool("list_purchases").is_some());

        let report_e = all.get("report-e").unwrap();
        assert!(report_e.takes_chat());
        assert_eq!(crons(report_e), ["0 0 7 * * Mon"]);
        assert!(!writes(report_e));
        for name in ["get_bank_balances", "list_invoices", "list_purchases"] {
            assert_eq!(report_e.tool(name), book_e.tool(name), "{name}");
        }
        // The monthly and weekly schedules fire when the task says they do.
        use chrono::TimeZone;
        let monday_7 = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap();
        let (weekly, _, _) = report_e.schedules().next().unwrap();
        assert_eq!(
            weekly.latest_due(monday_7, chrono::Duration::minutes(5)),
            Some(monday_7)
        );
        let first_8 = chrono::Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap();
        let (monthly, _, _) = cost_e.schedules().next().unwrap();
        assert_eq!(
            monthly.latest_due(first_8, chrono::Duration::minutes(5)),
            Some(first_8)
        );
    }

    #[test]
    fn directory_name_must_match() {
        let dir = std::env::temp_dir().join(format!("ae-chars-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::write(dir.join("other/character.toml"), MINIMAL).unwrap();
        let err = Characters::load_dir(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("directory must be named `book-e`"), "{err}");
    }
}
