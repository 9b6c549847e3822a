//! ProposalEngine: the proposal lifecycle, who may decide, what binds an
//! approval, and when a learned pattern may approve on its own.
//!
//! ```text
//! proposed ─► auto_approved ─────────────────┐
//!    └──────► review_requested ─► approved ──┼─► executing ─► executed
//!                     │            rejected  │        ├─────► execution_failed (retried, then dead)
//!                     └──────────► expired   │        └─────► execution_uncertain (a human looks)
//!                                            └ (an approval binds the payload hash of one exact version)
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::proposal::{AgentVerdict, DecisionRefusal, PatternAssessment, ProposalState};
use crate::request::WritePlan;

/// Something that moves a proposal on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A trusted pattern approves.
    AutoApprove,
    /// Hand it to human reviewers.
    RequestReview,
    /// A reviewer approves.
    Approve,
    /// A reviewer rejects.
    Reject,
    /// Review time ran out.
    Expire,
    /// Start (or, after a crash or failure, restart) the write.
    StartExecution,
    /// The write succeeded.
    Succeed,
    /// The write failed.
    Fail,
    /// Whether the write was made cannot be found out.
    Uncertain,
}

/// A transition the lifecycle does not allow from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a proposal that is {} cannot {transition:?}", from.as_str())]
pub struct InvalidTransition {
    /// The current state.
    pub from: ProposalState,
    /// What was tried.
    pub transition: Transition,
}

/// The state after `transition`, if the lifecycle allows it.
pub fn next(
    from: ProposalState,
    transition: Transition,
) -> Result<ProposalState, InvalidTransition> {
    use ProposalState as S;
    use Transition as T;
    let to = match (from, transition) {
        (S::Proposed, T::AutoApprove) => S::AutoApproved,
        (S::Proposed, T::RequestReview) => S::ReviewRequested,
        (S::ReviewRequested, T::Approve) => S::Approved,
        (S::ReviewRequested, T::Reject) => S::Rejected,
        (S::ReviewRequested, T::Expire) => S::Expired,
        // Restarting after a crash or failure first finds out what the
        // earlier attempt made, so each write still happens at most once.
        (S::AutoApproved | S::Approved | S::Executing | S::ExecutionFailed, T::StartExecution) => {
            S::Executing
        }
        (S::Executing, T::Succeed) => S::Executed,
        (S::Executing, T::Fail) => S::ExecutionFailed,
        (S::Executing, T::Uncertain) => S::ExecutionUncertain,
        _ => return Err(InvalidTransition { from, transition }),
    };
    Ok(to)
}

/// The SHA-256 of a plan's canonical JSON: what an approval binds (its
/// requests, and the digests of the files they upload).
pub fn payload_digest(plan: &WritePlan) -> String {
    // serde_json maps are ordered by key, so equal plans serialize equally.
    let json = serde_json::to_vec(plan).expect("a write plan always serializes");
    hex::encode(Sha256::digest(json))
}

/// The facts a decision is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCheck<'a> {
    /// The proposal's state now.
    pub state: ProposalState,
    /// The proposal's payload digest.
    pub payload_sha256: &'a str,
    /// Who proposed it (`platform:user id`).
    pub proposer: &'a str,
    /// Who is deciding (`platform:user id`).
    pub reviewer: &'a str,
    /// Whether the tenant lists proposer and reviewer as one person (with
    /// identities on several platforms).
    pub same_person: bool,
    /// Whether its review window has ended (expired, even before the
    /// expiry is recorded).
    pub past_deadline: bool,
    /// The tenant's reviewers (`platform:user id`).
    pub reviewers: &'a [String],
    /// The digest the reviewer saw.
    pub seen_sha256: &'a str,
}

/// Whether the reviewer may decide now.
pub fn check_decision(c: &DecisionCheck<'_>) -> Result<(), DecisionRefusal> {
    if !c.reviewers.iter().any(|r| r == c.reviewer) {
        return Err(DecisionRefusal::NotAReviewer);
    }
    if c.reviewer == c.proposer || c.same_person {
        return Err(DecisionRefusal::OwnProposal);
    }
    if c.state != ProposalState::ReviewRequested {
        return Err(DecisionRefusal::NotPending {
            state: c.state.as_str().to_owned(),
        });
    }
    if c.past_deadline {
        return Err(DecisionRefusal::NotPending {
            state: ProposalState::Expired.as_str().to_owned(),
        });
    }
    if c.seen_sha256 != c.payload_sha256 {
        return Err(DecisionRefusal::PayloadChanged);
    }
    Ok(())
}

/// Occurrences a pattern needs before it may approve on its own.
pub const MIN_PATTERN_OCCURRENCES: usize = 3;

/// Confidence a pattern needs before it may approve on its own.
pub const MIN_PATTERN_CONFIDENCE: f64 = 0.9;

fn field_values(arguments: &Value, fields: &[String]) -> Vec<Value> {
    fields
        .iter()
        .map(|f| arguments.pointer(f).cloned().unwrap_or(Value::Null))
        .collect()
}

/// Learns the pattern from `history` (arguments of executed proposals with
/// the same key) and checks `candidate` against it on `fields` (pointers).
pub fn assess_pattern(
    history: &[Value],
    candidate: &Value,
    fields: &[String],
) -> PatternAssessment {
    let mut counts: HashMap<String, (usize, Vec<Value>)> = HashMap::new();
    for body in history {
        let values = field_values(body, fields);
        let key = serde_json::to_string(&values).expect("values always serialize");
        counts.entry(key).or_insert((0, values)).0 += 1;
    }
    let Some((top_count, top_values)) = counts.into_values().max_by_key(|(count, _)| *count) else {
        return PatternAssessment {
            occurrences: 0,
            confidence: 0.0,
            matches: false,
        };
    };
    PatternAssessment {
        occurrences: history.len(),
        confidence: top_count as f64 / history.len() as f64,
        matches: !fields.is_empty() && field_values(candidate, fields) == top_values,
    }
}

/// Whether a proposal may be approved without a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum AutoApproval {
    /// The pattern is trusted and the amount is under the limit.
    Approve,
    /// A human must decide, and why.
    Review(String),
}

/// Decides auto-approval from the pattern and the tenant's amount limit
/// (amounts in minor units; a proposal without a known amount is reviewed).
pub fn auto_approval(
    pattern: &PatternAssessment,
    amount_minor: Option<i64>,
    limit_minor: i64,
) -> AutoApproval {
    let review = |why: String| AutoApproval::Review(why);
    if pattern.occurrences < MIN_PATTERN_OCCURRENCES {
        return review(format!(
            "only {} earlier approvals of this pattern",
            pattern.occurrences
        ));
    }
    if pattern.confidence < MIN_PATTERN_CONFIDENCE {
        return review(format!(
            "pattern confidence {:.2} is below {MIN_PATTERN_CONFIDENCE}",
            pattern.confidence
        ));
    }
    if !pattern.matches {
        return review("the payload differs from the learned pattern".to_owned());
    }
    match amount_minor {
        Some(amount) if amount >= 0 && amount < limit_minor => AutoApproval::Approve,
        Some(_) => review("the amount is not under the company's auto-approval limit".to_owned()),
        None => review("the amount is unknown".to_owned()),
    }
}

/// The pattern key's value in a write's arguments (`key` a pointer, or the
/// name of an argument), normalized (trimmed, lowercase).
pub fn pattern_value(arguments: &Value, key: &str) -> Option<String> {
    let value = if key.starts_with('/') {
        arguments.pointer(key)
    } else {
        arguments.get(key)
    };
    let raw = match value? {
        Value::String(s) => s.trim().to_lowercase(),
        Value::Null => return None,
        other => other.to_string(),
    };
    (!raw.is_empty()).then_some(raw)
}

/// The sum of the amount fields (pointers into the arguments, `*` for every
/// item of an array; integers in minor units): the gross. `None` when any is
/// missing, not an integer or negative (a negative line could offset the
/// rest under a limit).
pub fn amount_minor(arguments: &Value, fields: &[String]) -> Option<i64> {
    if fields.is_empty() {
        return None;
    }
    fields.iter().try_fold(0i64, |sum, field| {
        let mut values = Vec::new();
        collect(arguments, field.trim_start_matches('/'), &mut values);
        if values.is_empty() {
            return None;
        }
        values.into_iter().try_fold(sum, |sum, v| {
            sum.checked_add(v.as_i64().filter(|n| *n >= 0)?)
        })
    })
}

/// The values a pointer with `*` steps names.
fn collect<'a>(value: &'a Value, pointer: &str, out: &mut Vec<&'a Value>) {
    let (part, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
    let children: Vec<&Value> = match (part, value) {
        ("*", Value::Array(items)) => items.iter().collect(),
        (_, Value::Array(items)) => part
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .into_iter()
            .collect(),
        (_, Value::Object(map)) => map.get(part).into_iter().collect(),
        _ => Vec::new(),
    };
    for child in children {
        if rest.is_empty() {
            out.push(child);
        } else {
            collect(child, rest, out);
        }
    }
}

/// Reads an agent reviewer's answer: a JSON object `{"verdict": "approve" |
/// "flag", "notes": "…"}`, possibly inside other text. Anything unreadable
/// is a flag, so a confused reviewer never lets a write through.
pub fn parse_verdict(answer: &str) -> (AgentVerdict, String) {
    let parsed = answer
        .find('{')
        .zip(answer.rfind('}'))
        .filter(|(start, end)| start < end)
        .and_then(|(start, end)| serde_json::from_str::<Value>(&answer[start..=end]).ok());
    let notes = |v: &Value| v["notes"].as_str().unwrap_or_default().trim().to_owned();
    match parsed {
        Some(v) if v["verdict"] == "approve" => (AgentVerdict::Approve, notes(&v)),
        Some(v) if v["verdict"] == "flag" => (AgentVerdict::Flag, notes(&v)),
        _ => (
            AgentVerdict::Flag,
            "The review could not be read; a human should look.".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan(body: Value) -> WritePlan {
        WritePlan {
            tool: "register_purchase".into(),
            api: "fiken".into(),
            arguments: json!({ "body": body.clone() }),
            steps: vec![crate::request::WriteStep {
                request: crate::request::ToolRequest {
                    tool: "register_purchase".into(),
                    operation: "createPurchase".into(),
                    method: "POST".into(),
                    path: "/companies/acme/purchases".into(),
                    query: vec![],
                    body: Some(body),
                    file: None,
                },
                fill: vec![],
            }],
        }
    }

    #[test]
    fn lifecycle_allows_only_the_drawn_paths() {
        use ProposalState as S;
        use Transition as T;
        assert_eq!(next(S::Proposed, T::RequestReview), Ok(S::ReviewRequested));
        assert_eq!(next(S::Proposed, T::AutoApprove), Ok(S::AutoApproved));
        assert_eq!(next(S::ReviewRequested, T::Approve), Ok(S::Approved));
        assert_eq!(next(S::Approved, T::StartExecution), Ok(S::Executing));
        assert_eq!(next(S::Executing, T::Succeed), Ok(S::Executed));
        assert_eq!(next(S::Executing, T::Fail), Ok(S::ExecutionFailed));
        assert_eq!(
            next(S::ExecutionFailed, T::StartExecution),
            Ok(S::Executing)
        );
        assert_eq!(next(S::Executing, T::Uncertain), Ok(S::ExecutionUncertain));
        for (from, t) in [
            (S::ExecutionUncertain, T::StartExecution),
            (S::Approved, T::Uncertain),
            (S::Proposed, T::StartExecution),
            (S::ReviewRequested, T::StartExecution),
            (S::Rejected, T::StartExecution),
            (S::Expired, T::Approve),
            (S::Executed, T::StartExecution),
            (S::Approved, T::Approve),
            (S::Approved, T::Reject),
            (S::Executed, T::Fail),
        ] {
            assert_eq!(
                next(from, t),
                Err(InvalidTransition {
                    from,
                    transition: t
                })
            );
        }
    }

    #[test]
    fn states_round_trip_their_names() {
        for name in [
            "proposed",
            "auto_approved",
            "review_requested",
            "approved",
            "rejected",
            "expired",
            "executing",
            "executed",
            "execution_failed",
            "execution_uncertain",
        ] {
            assert_eq!(ProposalState::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(ProposalState::parse("done"), None);
    }

    #[test]
    fn digest_binds_the_exact_payload_whatever_the_key_order() {
        let a = plan(json!({"identifier": "A1", "currency": "NOK"}));
        let b = plan(serde_json::from_str(r#"{"currency":"NOK","identifier":"A1"}"#).unwrap());
        let c = plan(json!({"identifier": "A1", "currency": "SEK"}));
        assert_eq!(payload_digest(&a), payload_digest(&b));
        assert_ne!(payload_digest(&a), payload_digest(&c));
        // The file an upload sends is bound by its digest.
        let mut with_file = a.clone();
        with_file.steps[0].request.file = Some(crate::request::FileRef {
            sha256: "ab".repeat(32),
            filename: "r.jpg".into(),
            content_type: "image/jpeg".into(),
            size_bytes: 1,
        });
        let mut other_file = with_file.clone();
        other_file.steps[0].request.file.as_mut().unwrap().sha256 = "cd".repeat(32);
        assert_ne!(payload_digest(&with_file), payload_digest(&a));
        assert_ne!(payload_digest(&with_file), payload_digest(&other_file));
    }

    fn check<'a>(
        reviewer: &'a str,
        reviewers: &'a [String],
        state: ProposalState,
        seen: &'a str,
    ) -> Result<(), DecisionRefusal> {
        check_decision(&DecisionCheck {
            state,
            payload_sha256: "abc",
            proposer: "slack:U1",
            reviewer,
            same_person: false,
            past_deadline: false,
            reviewers,
            seen_sha256: seen,
        })
    }

    #[test]
    fn decisions_need_an_authorized_other_reviewer_of_the_same_payload() {
        let reviewers = vec!["slack:U1".to_owned(), "slack:R1".to_owned()];
        let pending = ProposalState::ReviewRequested;
        assert_eq!(check("slack:R1", &reviewers, pending, "abc"), Ok(()));
        assert_eq!(
            check("slack:X9", &reviewers, pending, "abc"),
            Err(DecisionRefusal::NotAReviewer)
        );
        assert_eq!(
            check("slack:U1", &reviewers, pending, "abc"),
            Err(DecisionRefusal::OwnProposal)
        );
        assert_eq!(
            check("slack:R1", &reviewers, pending, "abd"),
            Err(DecisionRefusal::PayloadChanged)
        );
        let same_person = DecisionCheck {
            state: pending,
            payload_sha256: "abc",
            proposer: "discord:7",
            reviewer: "slack:R1",
            same_person: true,
            past_deadline: false,
            reviewers: &reviewers,
            seen_sha256: "abc",
        };
        assert_eq!(
            check_decision(&same_person),
            Err(DecisionRefusal::OwnProposal)
        );
        let late = DecisionCheck {
            proposer: "slack:U1",
            same_person: false,
            past_deadline: true,
            ..same_person
        };
        assert_eq!(
            check_decision(&late),
            Err(DecisionRefusal::NotPending {
                state: "expired".into()
            })
        );
        assert_eq!(
            check("slack:R1", &reviewers, ProposalState::Approved, "abc"),
            Err(DecisionRefusal::NotPending {
                state: "approved".into()
            })
        );
    }

    fn expense(account: &str, vat: &str) -> Value {
        json!({"merchant": "Adobe", "body": {"lines": [{"account": account, "vatType": vat, "netPrice": 100, "vat": 25}]}})
    }

    #[test]
    fn patterns_learn_the_most_common_fields() {
        let fields = vec![
            "/body/lines/0/account".to_owned(),
            "/body/lines/0/vatType".to_owned(),
        ];
        let history: Vec<Value> = (0..9)
            .map(|_| expense("6810", "HIGH"))
            .chain([expense("6800", "HIGH")])
            .collect();
        let a = assess_pattern(&history, &expense("6810", "HIGH"), &fields);
        assert_eq!((a.occurrences, a.confidence, a.matches), (10, 0.9, true));
        assert!(!assess_pattern(&history, &expense("6800", "HIGH"), &fields).matches);
        assert_eq!(
            assess_pattern(&[], &expense("6810", "HIGH"), &fields).occurrences,
            0
        );
    }

    #[test]
    fn auto_approval_needs_occurrences_confidence_match_and_amount_under_limit() {
        let trusted = PatternAssessment {
            occurrences: 3,
            confidence: 1.0,
            matches: true,
        };
        assert_eq!(
            auto_approval(&trusted, Some(19_900), 50_000),
            AutoApproval::Approve
        );
        let cases = [
            (
                PatternAssessment {
                    occurrences: 2,
                    ..trusted.clone()
                },
                Some(1),
            ),
            (
                PatternAssessment {
                    confidence: 0.89,
                    ..trusted.clone()
                },
                Some(1),
            ),
            (
                PatternAssessment {
                    matches: false,
                    ..trusted.clone()
                },
                Some(1),
            ),
            (trusted.clone(), Some(50_000)),
            (trusted.clone(), Some(-5)),
            (trusted.clone(), None),
        ];
        for (pattern, amount) in cases {
            assert!(
                matches!(
                    auto_approval(&pattern, amount, 50_000),
                    AutoApproval::Review(_)
                ),
                "{pattern:?} {amount:?}"
            );
        }
    }

    #[test]
    fn pattern_values_and_amounts_are_read_from_the_arguments() {
        let args = json!({"merchant": "  Adobe Systems ", "body": {"supplierId": 7, "lines": [
            {"netPrice": 15920, "vat": 3980, "description": "x"},
            {"netPrice": 1000, "vat": 250}
        ]}});
        assert_eq!(
            pattern_value(&args, "merchant").as_deref(),
            Some("adobe systems")
        );
        assert_eq!(
            pattern_value(&args, "/body/supplierId").as_deref(),
            Some("7")
        );
        assert_eq!(pattern_value(&args, "missing"), None);
        let fields = vec![
            "/body/lines/*/netPrice".to_owned(),
            "/body/lines/*/vat".to_owned(),
        ];
        assert_eq!(amount_minor(&args, &fields), Some(21_150));
        assert_eq!(
            amount_minor(&args, &["/body/lines/0/netPrice".to_owned()]),
            Some(15_920)
        );
        assert_eq!(
            amount_minor(&args, &["/body/lines/*/description".to_owned()]),
            None,
            "a line without it, or not an integer"
        );
        assert_eq!(amount_minor(&args, &["/body/total".to_owned()]), None);
        let offset = json!({"body": {"lines": [{"netPrice": 5_000_000, "vat": -4_999_000}]}});
        assert_eq!(
            amount_minor(&offset, &fields),
            None,
            "a negative amount is never under a limit"
        );
        assert_eq!(amount_minor(&args, &[]), None);
    }

    #[test]
    fn verdicts_fail_safe_to_flag() {
        assert_eq!(
            parse_verdict(r#"Sure: {"verdict":"approve","notes":"Matches Adobe."}"#),
            (AgentVerdict::Approve, "Matches Adobe.".into())
        );
        assert_eq!(
            parse_verdict(r#"{"verdict":"flag","notes":"Odd amount"}"#).0,
            AgentVerdict::Flag
        );
        for unreadable in ["approve", "{\"verdict\":\"yes\"}", "", "}{"] {
            assert_eq!(
                parse_verdict(unreadable).0,
                AgentVerdict::Flag,
                "{unreadable}"
            );
        }
    }
}
