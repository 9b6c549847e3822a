//! Character files: one agent each (persona, model settings, HTTP tools),
//! parsed and validated at load so a bad file fails with a clear error.
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
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

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
    /// HTTP tools on the Accounting API.
    #[serde(default)]
    pub tools: Vec<ToolDef>,
}

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

/// One HTTP endpoint of the Accounting API that the model may call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// Function name shown to the model (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// Read or write.
    pub effect: Effect,
    /// HTTP method.
    pub method: HttpMethod,
    /// Path relative to the Accounting API base URL; `{param}` segments are
    /// filled from the arguments.
    pub path: String,
    /// JSON Schema (an object schema) of the arguments.
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
    /// Names of the `{param}` placeholders in the path, in order.
    pub fn path_params(&self) -> Vec<&str> {
        self.path
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
        let character: Self = toml::from_str(toml_text).map_err(|e| CharacterError::Malformed {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        character.validate()?;
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
        let mut seen = HashSet::new();
        for tool in &self.tools {
            if !seen.insert(tool.name.as_str()) {
                return Err(self.invalid(format!("tool `{}` is declared twice", tool.name)));
            }
            self.validate_tool(tool)?;
        }
        Ok(())
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
        if !tool.path.starts_with('/') || tool.path.contains("..") || tool.path.contains('?') {
            return Err(bad(
                "path must start with `/` and hold no `..` or query".into()
            ));
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

    /// The tool with this name, if the character has it.
    pub fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }
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

    #[test]
    fn shipped_characters_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
        let all = Characters::load_dir(&dir).unwrap();
        let book_e = all.get("book-e").unwrap();
        assert!(book_e.tools.iter().any(|t| t.effect == Effect::Read));
        assert!(book_e.tools.iter().any(|t| t.effect == Effect::Write));
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
