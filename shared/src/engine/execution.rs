//! Carrying out a write plan exactly once against an API that takes no
//! idempotency key: where each step stands (from its events), the request a
//! step sends once earlier steps' ids are filled in, and what a list read
//! after a lost answer says the step made.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::character::api::Confirm;
use crate::engine::tool::encode_segment;
use crate::event::ProposalEvent;
use crate::request::{FillTarget, ToolRequest, WriteStep};

/// Where a step stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Not begun.
    Todo,
    /// Its request may have been sent: the ids its list showed before.
    Sent {
        /// The ids listed before it was sent.
        before: Vec<String>,
        /// When it was last sent.
        sent_at: Option<DateTime<Utc>>,
    },
    /// Made (or found made).
    Done {
        /// The id of what it made, when known.
        id: Option<String>,
    },
}

/// Each step's state, from the proposal's step events.
pub fn step_states(steps: usize, events: &[ProposalEvent]) -> Vec<StepState> {
    let mut states = vec![StepState::Todo; steps];
    for event in events {
        match event {
            ProposalEvent::StepStarted(e)
                if e.step < steps && !matches!(states[e.step], StepState::Done { .. }) =>
            {
                states[e.step] = StepState::Sent {
                    before: e.before.clone(),
                    sent_at: e.sent_at,
                };
            }
            ProposalEvent::StepFinished(e) if e.step < steps => {
                states[e.step] = StepState::Done { id: e.id.clone() };
            }
            _ => {}
        }
    }
    states
}

/// The request of `step` with the ids earlier steps made filled in; why not,
/// when one of them made nothing that says its id.
pub fn fill(step: &WriteStep, made: &[Option<String>]) -> Result<ToolRequest, String> {
    let mut request = step.request.clone();
    for fill in &step.fill {
        let id = made.get(fill.from_step).cloned().flatten().ok_or_else(|| {
            format!(
                "step {} needs the id step {} made, which the API did not say",
                step_label(&request),
                fill.from_step + 1
            )
        })?;
        match &fill.into {
            FillTarget::PathParam(name) => {
                request.path = request
                    .path
                    .replace(&format!("{{{name}}}"), &encode_segment(&id));
            }
            FillTarget::BodyField(pointer) => {
                let value = id
                    .parse::<i64>()
                    .map_or(Value::String(id.clone()), Value::from);
                let body = request
                    .body
                    .get_or_insert_with(|| Value::Object(Default::default()));
                let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
                if let Some(Value::Object(map)) = body.pointer_mut(parent) {
                    map.insert(field.to_owned(), value);
                }
            }
        }
    }
    Ok(request)
}

fn step_label(request: &ToolRequest) -> String {
    format!("`{}`", request.operation)
}

/// The query of the list that shows what `request` made: the values its
/// [`Confirm`] names, read from the request's body.
pub fn confirm_query(confirm: &Confirm, request: &ToolRequest) -> Vec<(String, String)> {
    let body = request.body.as_ref();
    confirm
        .query
        .iter()
        .filter_map(|(name, pointer)| {
            let value = body?.pointer(pointer)?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((name.clone(), text))
        })
        .collect()
}

/// The list's path: its template with the path parameters the create
/// request was sent with.
pub fn list_path(template: &str, params: &BTreeMap<String, String>) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => encode_segment(params.get(name).map_or("", String::as_str)),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The ids of the listed items that could be what `request` made: for an
/// upload every item (an attachment shows no name), otherwise the items
/// that share the [`Confirm`]'s fields with the body (every field both
/// have, when it names none).
pub fn candidates(confirm: &Confirm, request: &ToolRequest, items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter(|item| {
            request.file.is_some()
                || match &request.body {
                    Some(body) if confirm.match_fields.is_empty() => same(body, item),
                    Some(body) => confirm
                        .match_fields
                        .iter()
                        .all(|p| body.pointer(p).is_some() && body.pointer(p) == item.pointer(p)),
                    None => true,
                }
        })
        .filter_map(|item| match &item[&confirm.id] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether every field of `sent` that `listed` also has is equal there
/// (arrays item by item, numbers as numbers, text without surrounding
/// space): what a create sent, as the list shows it back.
fn same(sent: &Value, listed: &Value) -> bool {
    match (sent, listed) {
        (Value::Object(sent), Value::Object(listed)) => sent
            .iter()
            .all(|(key, value)| listed.get(key).is_none_or(|l| same(value, l))),
        (Value::Array(sent), Value::Array(listed)) => {
            sent.len() == listed.len() && sent.iter().zip(listed).all(|(s, l)| same(s, l))
        }
        // 12500 and 12500.0 are one amount; text may come back trimmed.
        (Value::Number(sent), Value::Number(listed)) => sent.as_f64() == listed.as_f64(),
        (Value::String(sent), Value::String(listed)) => sent.trim() == listed.trim(),
        (sent, listed) => sent == listed,
    }
}

/// What a list read after a lost answer says the step made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// Exactly one new candidate: what it made.
    One(String),
    /// No new candidate: it was not made.
    Nothing,
    /// Several new candidates: which is its own cannot be told.
    Several(Vec<String>),
}

/// How long to wait before an empty list may be believed: a request whose
/// answer was lost may still be at work on the server until `settle` after
/// it was sent. `None` when it may be believed now.
pub fn still_settling(
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settle: Duration,
) -> Option<Duration> {
    let sent_at = sent_at?;
    let settled_at = sent_at + chrono::Duration::from_std(settle).ok()?;
    (settled_at > now).then(|| (settled_at - now).to_std().unwrap_or_default())
}

/// The candidates listed now that were not listed before the request.
pub fn made_since(before: &[String], now: &[String]) -> Made {
    let new: Vec<String> = now
        .iter()
        .filter(|id| !before.contains(id))
        .cloned()
        .collect();
    match new.as_slice() {
        [] => Made::Nothing,
        [one] => Made::One(one.clone()),
        _ => Made::Several(new),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{StepFinished, StepOutcome, StepStarted};
    use crate::request::{FileRef, Fill};

    fn request(operation: &str, path: &str, body: Option<Value>) -> ToolRequest {
        ToolRequest {
            tool: "register_purchase".into(),
            operation: operation.into(),
            method: "POST".into(),
            path: path.into(),
            query: vec![],
            body,
            file: None,
        }
    }

    fn confirm(match_fields: &[&str]) -> Confirm {
        Confirm {
            list: "getPurchases".into(),
            query: [("date".to_owned(), "/date".to_owned())].into(),
            id: "purchaseId".into(),
            match_fields: match_fields.iter().map(|s| (*s).to_owned()).collect(),
            reuse: false,
        }
    }

    #[test]
    fn a_step_is_sent_once_started_and_done_once_finished() {
        let events = [
            ProposalEvent::StepStarted(StepStarted {
                step: 0,
                before: vec!["7".into()],
                sent_at: None,
            }),
            ProposalEvent::StepFinished(StepFinished {
                step: 0,
                id: Some("9".into()),
                outcome: StepOutcome::Created,
            }),
            ProposalEvent::StepStarted(StepStarted {
                step: 1,
                before: vec![],
                sent_at: None,
            }),
            ProposalEvent::StepStarted(StepStarted {
                step: 9,
                before: vec![],
                sent_at: None,
            }),
        ];
        assert_eq!(
            step_states(3, &events),
            [
                StepState::Done {
                    id: Some("9".into())
                },
                StepState::Sent {
                    before: vec![],
                    sent_at: None
                },
                StepState::Todo
            ]
        );
    }

    #[test]
    fn an_empty_list_is_believed_only_once_the_request_had_time_to_finish() {
        let sent = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .to_utc();
        let settle = Duration::from_secs(8);
        let at = |secs| sent + chrono::Duration::seconds(secs);
        assert_eq!(
            still_settling(Some(sent), at(3), settle),
            Some(Duration::from_secs(5))
        );
        assert_eq!(still_settling(Some(sent), at(8), settle), None);
        assert_eq!(still_settling(None, at(0), settle), None);
    }

    #[test]
    fn earlier_ids_fill_the_path_and_the_body() {
        let upload = WriteStep {
            request: request(
                "addAttachmentToPurchase",
                "/companies/a/purchases/{purchaseId}/attachments",
                None,
            ),
            fill: vec![Fill {
                from_step: 1,
                into: FillTarget::PathParam("purchaseId".into()),
            }],
        };
        let filled = fill(&upload, &[None, Some("123".into())]).unwrap();
        assert_eq!(filled.path, "/companies/a/purchases/123/attachments");
        let purchase = WriteStep {
            request: request(
                "createPurchase",
                "/companies/a/purchases",
                Some(json!({"kind": "supplier"})),
            ),
            fill: vec![Fill {
                from_step: 0,
                into: FillTarget::BodyField("/supplierId".into()),
            }],
        };
        let filled = fill(&purchase, &[Some("55".into())]).unwrap();
        assert_eq!(
            filled.body,
            Some(json!({"kind": "supplier", "supplierId": 55}))
        );
        let err = fill(&purchase, &[None]).unwrap_err();
        assert!(err.contains("step 1"), "{err}");
    }

    #[test]
    fn a_lost_create_is_what_is_new_and_matches_what_was_sent() {
        let sent = request(
            "createPurchase",
            "/companies/a/purchases",
            Some(
                json!({"date": "2026-11-20", "kind": "cash_purchase", "supplierId": 3,
                        "lines": [{"netPrice": 100, "vatType": "HIGH"}]}),
            ),
        );
        assert_eq!(
            confirm_query(&confirm(&[]), &sent),
            [("date".into(), "2026-11-20".into())]
        );
        let listed = [
            json!({"purchaseId": 1, "date": "2026-11-20", "kind": "cash_purchase", "lines": [{"lineId": 4, "netPrice": 100, "vatType": "HIGH"}]}),
            json!({"purchaseId": 2, "date": "2026-11-20", "kind": "cash_purchase", "lines": [{"netPrice": 999, "vatType": "HIGH"}]}),
            json!({"purchaseId": 3, "date": "2026-11-20", "kind": "cash_purchase", "lines": [{"netPrice": 100, "vatType": "HIGH"}, {"netPrice": 1, "vatType": "LOW"}]}),
        ];
        assert_eq!(candidates(&confirm(&[]), &sent, &listed), ["1"]);
        assert_eq!(made_since(&[], &["1".into()]), Made::One("1".into()));
        assert_eq!(made_since(&["1".into()], &["1".into()]), Made::Nothing);
        assert_eq!(
            made_since(&[], &["1".into(), "5".into()]),
            Made::Several(vec!["1".into(), "5".into()])
        );
        // Named fields only, when the profile names them (contacts by name).
        let contact = request(
            "createContact",
            "/companies/a/contacts",
            Some(json!({"name": "Kontorland AS", "supplier": true})),
        );
        let contacts =
            [json!({"contactId": 8, "name": "Kontorland AS", "supplier": false, "customer": true})];
        let mut by_name = confirm(&["/name"]);
        by_name.id = "contactId".into();
        assert_eq!(candidates(&by_name, &contact, &contacts), ["8"]);
        // An upload shows no name: every listed attachment is a candidate.
        let mut upload = request(
            "addAttachmentToPurchase",
            "/p/1/attachments",
            Some(json!({"filename": "r.jpg"})),
        );
        upload.file = Some(FileRef {
            sha256: "ab".repeat(32),
            filename: "r.jpg".into(),
            content_type: "image/jpeg".into(),
            size_bytes: 1,
        });
        let mut attachments = confirm(&[]);
        attachments.id = "identifier".into();
        assert_eq!(
            candidates(
                &attachments,
                &upload,
                &[json!({"identifier": "a1"}), json!({"identifier": "a2"})]
            ),
            ["a1", "a2"]
        );
        assert_eq!(
            list_path(
                "/companies/{companySlug}/purchases/{purchaseId}/attachments",
                &[
                    ("companySlug".to_owned(), "acme".to_owned()),
                    ("purchaseId".to_owned(), "7".to_owned())
                ]
                .into()
            ),
            "/companies/acme/purchases/7/attachments"
        );
    }
}
