//! Turns character tools into function schemas for the model, and a model's
//! tool call into an exact HTTP request or a checked builtin call (or a refusal
//! the model can read).

use serde_json::{Map, Value};

use crate::character::{Builtin, Character, Effect, HttpMethod, ToolDef};
use crate::request::ToolRequest;

/// Longest accepted tool-call arguments from the model, in bytes.
pub const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    /// The tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// The function schemas of all of a character's tools, builtins included.
pub fn function_specs(character: &Character) -> Vec<FunctionSpec> {
    character
        .tools
        .iter()
        .map(|t| FunctionSpec {
            name: t.name.clone(),
            description: match t.effect {
                Effect::Read => t.description.clone(),
                Effect::Write => format!(
                    "{} (Changes the books: calling it files a proposal for human review; \
                     it is NOT carried out until approved.)",
                    t.description
                ),
            },
            parameters: t.parameters.clone(),
        })
        .collect()
}

/// What to do with a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedCall {
    /// A read: call it now.
    Read(ToolRequest),
    /// A write: never called during the turn.
    Write(ToolRequest),
    /// A builtin the worker runs now, with arguments already checked against
    /// [`Builtin::parameters`] (null arguments dropped).
    Builtin(Builtin, Map<String, Value>),
}

/// Why a tool call was refused; the message is fed back to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    /// The model named a tool the character does not have.
    #[error("there is no tool named `{0}`")]
    UnknownTool(String),
    /// The arguments are too long.
    #[error("the arguments are longer than {MAX_ARGUMENTS_BYTES} bytes")]
    TooLarge,
    /// The arguments are not a JSON object.
    #[error("the arguments must be a JSON object: {0}")]
    NotAnObject(String),
    /// A required argument is missing.
    #[error("the required argument `{0}` is missing")]
    Missing(String),
    /// An argument has the wrong JSON type.
    #[error("the argument `{name}` must be of type {expected}")]
    WrongType {
        /// The argument.
        name: String,
        /// The type the schema declares.
        expected: String,
    },
    /// An argument the schema does not declare.
    #[error("the argument `{0}` is not accepted by this tool")]
    Unexpected(String),
}

/// Whether the model call that asks for tool `name` is recorded before the
/// tool runs: a write files a proposal, and a builtin works on the tenant's
/// own records (a fact stored; a usage report, which counts the call that
/// asked for it). A read of the Accounting API, or a name the character
/// lacks (refused), touches none of them: its call is recorded with the
/// turn's next write.
pub fn records_call_first(character: &Character, name: &str) -> bool {
    character
        .tool(name)
        .is_some_and(|tool| tool.builtin.is_some() || tool.effect == Effect::Write)
}

/// Validates the model's arguments for `name` and builds the exact request,
/// or the builtin call. A tool with neither a builtin nor an endpoint (only
/// possible for a character that skipped validation) is refused as unknown.
pub fn plan_call(
    character: &Character,
    name: &str,
    arguments: &str,
) -> Result<PlannedCall, ToolCallError> {
    let tool = character
        .tool(name)
        .ok_or_else(|| ToolCallError::UnknownTool(name.to_owned()))?;
    if arguments.len() > MAX_ARGUMENTS_BYTES {
        return Err(ToolCallError::TooLarge);
    }
    let mut args = parse_arguments(arguments)?;
    check_arguments(tool, &args)?;
    if let Some(builtin) = tool.builtin {
        args.retain(|_, v| !v.is_null());
        return Ok(PlannedCall::Builtin(builtin, args));
    }
    let (method, path) = tool
        .endpoint()
        .ok_or_else(|| ToolCallError::UnknownTool(name.to_owned()))?;
    let request = build_request(&tool.name, method, path, args);
    Ok(match tool.effect {
        Effect::Read => PlannedCall::Read(request),
        Effect::Write => PlannedCall::Write(request),
    })
}

fn parse_arguments(arguments: &str) -> Result<Map<String, Value>, ToolCallError> {
    // Models send "" for a call without arguments.
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ToolCallError::NotAnObject(format!(
            "got {}",
            type_name(&other)
        ))),
        Err(e) => Err(ToolCallError::NotAnObject(e.to_string())),
    }
}

fn check_arguments(tool: &ToolDef, args: &Map<String, Value>) -> Result<(), ToolCallError> {
    for name in tool.required() {
        if args.get(name).is_none_or(Value::is_null) {
            return Err(ToolCallError::Missing(name.to_owned()));
        }
    }
    let properties = tool.properties();
    for (name, value) in args {
        let Some(schema) = properties.and_then(|p| p.get(name)) else {
            return Err(ToolCallError::Unexpected(name.clone()));
        };
        if value.is_null() {
            continue;
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str)
            && !has_type(value, expected)
        {
            return Err(ToolCallError::WrongType {
                name: name.clone(),
                expected: expected.to_owned(),
            });
        }
    }
    Ok(())
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn build_request(
    tool: &str,
    method: HttpMethod,
    path: &str,
    mut args: Map<String, Value>,
) -> ToolRequest {
    let path = path
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => {
                    encode_segment(&scalar_text(&args.remove(param).unwrap_or_default()))
                }
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/");
    args.retain(|_, v| !v.is_null());
    let (query, body) = if method.has_body() {
        (Vec::new(), Some(Value::Object(args)))
    } else {
        // serde_json's map is ordered by key, so the query order is stable.
        let query = args
            .into_iter()
            .map(|(k, v)| (k, scalar_text(&v)))
            .collect();
        (query, None)
    };
    ToolRequest {
        tool: tool.to_owned(),
        method: method.as_str().to_owned(),
        path,
        query,
        body,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes one path segment, so an argument can never add segments
/// (`../`) or a query to the path.
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(byte as char),
            // A lone "." or ".." must not survive as a dot segment.
            b'.' if !raw.trim_matches('.').is_empty() => out.push('.'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn character() -> Character {
        Character::parse(
            r#"
            name = "book-e"
            display_name = "Book-E"
            language = "en"
            persona = "p"

            [[tools]]
            name = "list_transactions"
            description = "Bank transactions."
            effect = "read"
            method = "GET"
            path = "/accounts/{account}/transactions"
            parameters = { type = "object", required = ["account"], properties = { account = { type = "string" }, from = { type = "string" }, limit = { type = "integer" } } }

            [[tools]]
            name = "create_purchase"
            description = "Register a purchase."
            effect = "write"
            method = "POST"
            path = "/purchases"
            pattern_key = "supplier"
            parameters = { type = "object", required = ["supplier"], properties = { supplier = { type = "string" }, amount = { type = "integer" } } }

            [[tools]]
            name = "remember_fact"
            description = "Remember a fact."
            effect = "read"
            builtin = "remember_fact"
            "#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn read_call_fills_path_and_query() {
        let planned = plan_call(
            &character(),
            "list_transactions",
            r#"{"account":"1920 main","limit":5,"from":"2026-01-01"}"#,
        )
        .unwrap();
        assert_eq!(
            planned,
            PlannedCall::Read(ToolRequest {
                tool: "list_transactions".into(),
                method: "GET".into(),
                path: "/accounts/1920%20main/transactions".into(),
                query: vec![
                    ("from".into(), "2026-01-01".into()),
                    ("limit".into(), "5".into())
                ],
                body: None,
            })
        );
    }

    #[test]
    fn write_call_is_planned_as_write_with_body() {
        let planned = plan_call(
            &character(),
            "create_purchase",
            r#"{"supplier":"Adobe","amount":19900}"#,
        )
        .unwrap();
        let PlannedCall::Write(req) = planned else {
            panic!("expected a write")
        };
        assert_eq!(
            req.body,
            Some(json!({"supplier": "Adobe", "amount": 19900}))
        );
        assert!(req.query.is_empty());
    }

    #[test]
    fn path_arguments_cannot_escape_their_segment() {
        for evil in ["../admin", "..", "a/b", "x?y=1", "%2e%2e"] {
            let args = json!({ "account": evil }).to_string();
            let PlannedCall::Read(req) =
                plan_call(&character(), "list_transactions", &args).unwrap()
            else {
                panic!()
            };
            let segment = req.path.split('/').nth(2).unwrap();
            assert!(
                !segment.contains('/') && !segment.contains('?'),
                "{evil} -> {}",
                req.path
            );
            assert_ne!(segment, "..");
            assert_ne!(segment, ".");
            assert_eq!(req.path.split('/').count(), 4, "{evil} -> {}", req.path);
        }
    }

    #[test]
    fn refusals_explain_what_is_wrong() {
        let c = character();
        let cases = [
            ("nope", "{}", ToolCallError::UnknownTool("nope".into())),
            (
                "list_transactions",
                "{}",
                ToolCallError::Missing("account".into()),
            ),
            (
                "list_transactions",
                "[1]",
                ToolCallError::NotAnObject("got an array".into()),
            ),
            (
                "list_transactions",
                r#"{"account":"a","limit":"five"}"#,
                ToolCallError::WrongType {
                    name: "limit".into(),
                    expected: "integer".into(),
                },
            ),
            (
                "list_transactions",
                r#"{"account":"a","sql":"drop"}"#,
                ToolCallError::Unexpected("sql".into()),
            ),
        ];
        for (name, args, expected) in cases {
            assert_eq!(
                plan_call(&c, name, args).unwrap_err(),
                expected,
                "{name} {args}"
            );
        }
        assert!(matches!(
            plan_call(&c, "list_transactions", "{not json"),
            Err(ToolCallError::NotAnObject(_))
        ));
        let huge = format!(r#"{{"account":"{}"}}"#, "a".repeat(MAX_ARGUMENTS_BYTES));
        assert_eq!(
            plan_call(&c, "list_transactions", &huge),
            Err(ToolCallError::TooLarge)
        );
    }

    #[test]
    fn empty_arguments_mean_no_arguments() {
        let err = plan_call(&character(), "list_transactions", "").unwrap_err();
        assert_eq!(err, ToolCallError::Missing("account".into()));
    }

    #[test]
    fn write_tools_tell_the_model_they_need_review() {
        let specs = function_specs(&character());
        assert_eq!(specs[0].description, "Bank transactions.");
        assert!(
            specs[1]
                .description
                .contains("NOT carried out until approved")
        );
    }

    #[test]
    fn builtin_call_is_planned_as_builtin_with_checked_arguments() {
        let planned = plan_call(
            &character(),
            "remember_fact",
            r#"{"fact":"Owns a bakery in Bergen."}"#,
        )
        .unwrap();
        let mut expected = Map::new();
        expected.insert("fact".into(), json!("Owns a bakery in Bergen."));
        assert_eq!(
            planned,
            PlannedCall::Builtin(Builtin::RememberFact, expected)
        );
        let cases = [
            ("{}", ToolCallError::Missing("fact".into())),
            (r#"{"fact":null}"#, ToolCallError::Missing("fact".into())),
            (
                r#"{"fact":42}"#,
                ToolCallError::WrongType {
                    name: "fact".into(),
                    expected: "string".into(),
                },
            ),
            (
                r#"{"fact":"x","path":"/purchases"}"#,
                ToolCallError::Unexpected("path".into()),
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(
                plan_call(&character(), "remember_fact", args).unwrap_err(),
                expected,
                "{args}"
            );
        }
    }

    #[test]
    fn builtin_is_never_an_http_call_even_with_an_endpoint() {
        // Even if method and path were smuggled onto a builtin after loading,
        // it is planned as the builtin, never as an Accounting API request.
        let mut c = character();
        let tool = c
            .tools
            .iter_mut()
            .find(|t| t.name == "remember_fact")
            .unwrap();
        tool.method = Some(HttpMethod::Post);
        tool.path = Some("/purchases".into());
        let planned = plan_call(&c, "remember_fact", r#"{"fact":"f"}"#).unwrap();
        assert!(
            matches!(planned, PlannedCall::Builtin(Builtin::RememberFact, _)),
            "{planned:?}"
        );
        // A tool with neither a builtin nor an endpoint is refused.
        let tool = c
            .tools
            .iter_mut()
            .find(|t| t.name == "remember_fact")
            .unwrap();
        tool.builtin = None;
        tool.method = None;
        assert_eq!(
            plan_call(&c, "remember_fact", r#"{"fact":"f"}"#),
            Err(ToolCallError::UnknownTool("remember_fact".into()))
        );
    }

    #[test]
    fn calls_for_writes_and_builtins_are_recorded_first() {
        let c = character();
        assert!(records_call_first(&c, "create_purchase"));
        assert!(records_call_first(&c, "remember_fact"));
        assert!(!records_call_first(&c, "list_transactions"));
        assert!(!records_call_first(&c, "no_such_tool"));
    }

    #[test]
    fn builtins_are_offered_with_their_runtime_parameters() {
        let specs = function_specs(&character());
        let spec = specs.iter().find(|s| s.name == "remember_fact").unwrap();
        assert_eq!(spec.description, "Remember a fact.");
        assert_eq!(spec.parameters, Builtin::RememberFact.parameters());
        assert_eq!(spec.parameters["required"], json!(["fact"]));
    }
}
