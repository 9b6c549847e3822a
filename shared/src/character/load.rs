//! Loads the characters of a deployment from their directory.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Apis, Character, CharacterError, MAX_CHARACTER_FILE_BYTES, api};

/// All characters of a deployment, by name.
#[derive(Debug, Clone, Default)]
pub struct Characters {
    by_name: BTreeMap<String, Character>,
    apis: Apis,
}

impl Characters {
    /// Loads the APIs in `<dir>/apis/` and every `<dir>/<name>/character.toml`;
    /// the file's `name` must equal its directory name.
    pub fn load_dir(dir: &Path) -> Result<Self, CharacterError> {
        let apis = api::load_apis(&dir.join("apis"))?;
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
                return Err(CharacterError::TooLarge {
                    path: file,
                    bytes,
                    limit: MAX_CHARACTER_FILE_BYTES,
                });
            }
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            let character = Character::parse_with(&text, &file, &apis)?;
            if entry.file_name().to_str() != Some(character.name.as_str()) {
                return Err(
                    character.invalid(format!("its directory must be named `{}`", character.name))
                );
            }
            by_name.insert(character.name.clone(), character);
        }
        Ok(Self { by_name, apis })
    }

    /// The APIs the characters call, by name.
    pub fn apis(&self) -> &Apis {
        &self.apis
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
    use crate::character::{Builtin, Effect, MINIMAL, PostTo};

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
        assert_eq!(
            alert_e
                .tool("list_purchases_without_receipt")
                .unwrap()
                .only_without
                .as_deref(),
            Some("purchaseAttachments")
        );
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

    /// Every tool of every shipped character names an operation of its
    /// API's document; arguments and options are checked against it.
    #[test]
    fn every_shipped_tool_is_an_operation_of_its_api() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
        let all = Characters::load_dir(&dir).unwrap();
        for character in all.all() {
            for tool in character.tools.iter().filter(|t| t.builtin.is_none()) {
                let api = character.api().expect("operation tools need an API");
                let op = api
                    .operation(tool.operation.as_deref().unwrap())
                    .unwrap_or_else(|e| panic!("{}/{}: {e}", character.name, tool.name));
                assert_eq!(
                    tool.effect == Effect::Write,
                    op.method != "GET",
                    "{}/{}",
                    character.name,
                    tool.name
                );
            }
        }
        // The same check fails a character that names what the document
        // lacks: a path, an operation or a field.
        let book_e = std::fs::read_to_string(dir.join("book-e/character.toml")).unwrap();
        for (from, to, expected) in [
            (
                "operation = \"getSales\"",
                "operation = \"getFolioTransactions\"",
                "no operation `getFolioTransactions`",
            ),
            (
                "\"/body/lines/0/account\"",
                "\"/body/lines/0/accountCode\"",
                "`/body/lines/0/accountCode` is not an argument",
            ),
            (
                "contact_field = \"/supplierId\"",
                "contact_field = \"/supplier\"",
                "contact_field `/supplier` is not a field of the body",
            ),
        ] {
            assert!(book_e.contains(from), "{from}");
            let broken = book_e.replacen(from, to, 1);
            let apis = api::load_apis(&dir.join("apis")).unwrap();
            let err = Character::parse_with(&broken, Path::new("book-e.toml"), &apis)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "expected `{expected}` in `{err}`");
        }
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
