//! The rules a character file must keep, checked once at load.

use std::collections::HashSet;
use std::path::Path;

use super::{
    Apis, Character, CharacterError, CronSchedule, HISTORY_CHARS, MAX_FACTS, MAX_HISTORY_MESSAGES,
    PostTo, ToolDef, Trigger, is_proposal_event, operation,
};
use crate::ids::EVENT_TYPE_PREFIX;

impl Character {
    /// Parses and validates a character that calls no API.
    pub fn parse(toml_text: &str, path: &Path) -> Result<Self, CharacterError> {
        Self::parse_with(toml_text, path, &Apis::new())
    }

    /// Parses and validates a character from TOML text; its operation tools
    /// are checked against its API among `apis` and their arguments derived
    /// from it.
    pub fn parse_with(toml_text: &str, path: &Path, apis: &Apis) -> Result<Self, CharacterError> {
        let mut character: Self =
            toml::from_str(toml_text).map_err(|e| CharacterError::Malformed {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
        if let Some(api) = &character.api {
            let profile = apis
                .get(api)
                .ok_or_else(|| character.invalid(format!("no API named `{api}` in apis/")))?;
            character.api_profile = Some(profile.clone());
        }
        character.validate()?;
        character.schedules = character.validate_triggers()?;
        let profile = character.api_profile.clone();
        let name = character.name.clone();
        for tool in &mut character.tools {
            if let Some(builtin) = tool.builtin {
                tool.parameters = builtin.parameters();
                continue;
            }
            let profile = profile.as_deref().ok_or_else(|| CharacterError::Invalid {
                character: name.clone(),
                reason: format!(
                    "tool `{}` names an operation but the character sets no `api`",
                    tool.name
                ),
            })?;
            let (effect, parameters) =
                operation::derive(profile, tool).map_err(|reason| CharacterError::Invalid {
                    character: name.clone(),
                    reason: format!("tool `{}`: {reason}", tool.name),
                })?;
            tool.effect = effect;
            tool.parameters = parameters;
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
        if !HISTORY_CHARS.contains(&memory.history_chars) {
            return Err(self.invalid(format!(
                "memory.history_chars must be between {} and {}",
                HISTORY_CHARS.start(),
                HISTORY_CHARS.end()
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
        match (tool.builtin, tool.operation.as_deref()) {
            (Some(_), None) => self.validate_builtin(tool),
            (Some(_), Some(_)) => Err(bad("a builtin tool names no operation".into())),
            (None, Some(_)) => Ok(()),
            (None, None) => Err(bad(
                "a tool names an `operation` of its API or a `builtin`".into()
            )),
        }
    }

    fn validate_builtin(&self, tool: &ToolDef) -> Result<(), CharacterError> {
        let bad = |reason: &str| self.invalid(format!("tool `{}`: {reason}", tool.name));
        let options = [
            tool.receipt.is_some(),
            tool.contact_field.is_some(),
            tool.only_without.is_some(),
            tool.pattern_key.is_some(),
            !tool.pattern_fields.is_empty(),
            !tool.amount_fields.is_empty(),
        ];
        if options.into_iter().any(|set| set) {
            return Err(bad("builtin tools take no operation options"));
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
    use crate::character::{Builtin, Effect, MINIMAL, MemorySettings, test_apis};

    fn parse(extra: &str) -> Result<Character, CharacterError> {
        Character::parse_with(
            &format!("{MINIMAL}\napi = \"fiken\"\n{extra}"),
            Path::new("x.toml"),
            test_apis(),
        )
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
    fn a_write_tool_derives_its_arguments_from_the_operation() {
        let c = parse(
            r#"[[tools]]
            name = "register_purchase"
            description = "d"
            operation = "createPurchase"
            receipt = "addAttachmentToPurchase"
            contact_field = "/supplierId"
            pattern_key = "merchant"
            pattern_fields = ["/body/lines/0/account"]
            amount_fields = ["/body/lines/*/netPrice"]
            "#,
        )
        .unwrap();
        let tool = c.tool("register_purchase").unwrap();
        assert_eq!(tool.effect, Effect::Write);
        let params = &tool.parameters;
        assert_eq!(params["required"], serde_json::json!(["body", "merchant"]));
        let body = &params["properties"]["body"];
        // Fiken's purchaseRequest, inlined: its required fields, the line
        // schema, and no read-only field.
        assert_eq!(
            body["required"],
            serde_json::json!(["date", "kind", "paid", "lines", "currency"])
        );
        assert_eq!(
            body["properties"]["kind"]["enum"],
            serde_json::json!(["cash_purchase", "supplier"])
        );
        let line = &body["properties"]["lines"]["items"];
        assert!(line["properties"]["vatType"].is_object());
        assert!(line["properties"].get("lineId").is_none());
        assert!(body["properties"].get("transactionId").is_none());
        assert!(params["properties"]["receipt"].is_object());
        assert_eq!(
            params["properties"]["newContact"]["required"],
            serde_json::json!(["name"])
        );
        // The company is the tenant's, never the model's.
        assert!(params["properties"].get("companySlug").is_none());
    }

    #[test]
    fn a_read_tool_offers_the_operations_query_but_not_its_paging() {
        let c = parse(
            "[[tools]]\nname = \"list_purchases\"\ndescription = \"d\"\noperation = \"getPurchases\"",
        )
        .unwrap();
        let tool = c.tool("list_purchases").unwrap();
        assert_eq!(tool.effect, Effect::Read);
        let properties = tool.properties().unwrap();
        for name in ["date", "dateGe", "dateLe", "paid", "contactId", "sortBy"] {
            assert!(properties.contains_key(name), "{name}");
        }
        for name in ["page", "pageSize", "companySlug"] {
            assert!(!properties.contains_key(name), "{name}");
        }
    }

    #[test]
    fn rejects_tools_that_stray_from_their_api() {
        let tool =
            |fields: &str| format!("[[tools]]\nname = \"t\"\ndescription = \"d\"\n{fields}\n");
        let cases = [
            (
                tool("operation = \"getFolioTransactions\""),
                "has no operation `getFolioTransactions`",
            ),
            (
                tool("operation = \"getPurchases\"\npattern_key = \"merchant\""),
                "`pattern_key` is for write tools",
            ),
            (
                tool("operation = \"createPurchase\"\npattern_fields = [\"/body/merchant\"]"),
                "`/body/merchant` is not an argument",
            ),
            (
                tool("operation = \"createPurchase\"\ncontact_field = \"/customerId\""),
                "contact_field `/customerId` is not a field of the body",
            ),
            (
                tool("operation = \"createPurchase\"\nreceipt = \"getPurchases\""),
                "`getPurchases` does not upload a file",
            ),
            (
                tool("operation = \"createPurchaseDraft\""),
                "has no [confirm.createPurchaseDraft]",
            ),
            (
                tool("operation = \"createPurchase\"\nonly_without = \"x\""),
                "`only_without` is for read tools",
            ),
            (
                tool("operation = \"getPurchases\"\nmethod = \"GET\""),
                "unknown field `method`",
            ),
            (tool(""), "names an `operation` of its API or a `builtin`"),
        ];
        for (extra, expected) in cases {
            let r = reason(&extra);
            assert!(r.contains(expected), "expected `{expected}` in `{r}`");
        }
        // Without an API, an operation tool has nothing to call.
        let r = Character::parse(
            &format!("{MINIMAL}\n[[tools]]\nname = \"t\"\ndescription = \"d\"\noperation = \"getPurchases\""),
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(r.contains("sets no `api`"), "{r}");
        let r = Character::parse_with(
            &format!("{MINIMAL}\napi = \"visma\""),
            Path::new("x.toml"),
            test_apis(),
        )
        .unwrap_err()
        .to_string();
        assert!(r.contains("no API named `visma`"), "{r}");
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
        let t = "[[tools]]\nname = \"t\"\ndescription = \"d\"\noperation = \"getPurchases\"\n";
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
                history_chars: 48_000,
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
                "[memory]\nhistory_chars = 999",
                "memory.history_chars must be between 1000 and 400000",
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
            "[[tools]]\nname = \"remember_fact\"\ndescription = \"d\"\nbuiltin = \"remember_fact\"",
        )
        .unwrap();
        let tool = c.tool("remember_fact").unwrap();
        assert_eq!(tool.builtin, Some(Builtin::RememberFact));
        assert_eq!(tool.effect, Effect::Read);
        assert_eq!(tool.parameters, Builtin::RememberFact.parameters());
        assert_eq!(tool.parameters["required"], serde_json::json!(["fact"]));
        let report = Builtin::UsageReport.parameters();
        assert_eq!(report["type"], "object");
        assert!(report.get("required").is_none());
        assert_eq!(report["properties"]["fromDate"]["type"], "string");
        assert_eq!(report["properties"]["toDate"]["type"], "string");
    }

    #[test]
    fn rejects_rule_breaking_builtins() {
        let tool =
            |fields: &str| format!("[[tools]]\nname = \"t\"\ndescription = \"d\"\n{fields}\n");
        let remember = "builtin = \"remember_fact\"";
        let cases = [
            (
                tool(&format!("{remember}\nparameters = {{ type = \"object\" }}")),
                "unknown field `parameters`",
            ),
            (
                tool(&format!("{remember}\noperation = \"getPurchases\"")),
                "a builtin tool names no operation",
            ),
            (
                tool(&format!("{remember}\npattern_key = \"fact\"")),
                "builtin tools take no operation options",
            ),
            (tool("builtin = \"launch_rockets\""), "launch_rockets"),
            (
                format!(
                    "{}[[tools]]\nname = \"u\"\ndescription = \"d\"\n{remember}\n",
                    tool(remember)
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
