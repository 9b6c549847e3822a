//! The rules a character file must keep, checked once at load.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::{
    Character, CharacterError, CronSchedule, Effect, MAX_FACTS, MAX_HISTORY_MESSAGES, PostTo,
    ToolDef, Trigger, is_proposal_event,
};
use crate::ids::EVENT_TYPE_PREFIX;

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

    pub(super) fn invalid(&self, reason: impl Into<String>) -> CharacterError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::character::{Builtin, HttpMethod, MINIMAL, MemorySettings};

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
}
