//! Decides the next step of an agent turn from the model's answer, and what
//! the model is told about each tool call.

use serde_json::json;

use crate::engine::prompt::ToolCall;

/// Tool calls honoured from one model answer; more are refused.
pub const MAX_TOOL_CALLS_PER_ROUND: usize = 8;

/// Longest tool result handed back to the model, in characters.
pub const MAX_TOOL_RESULT_CHARS: usize = 12_000;

/// Reply when the model keeps asking for tools past the round limit.
pub const ROUND_LIMIT_REPLY: &str = "I could not finish looking this up within the limit of \
steps I may take for one message. Could you narrow the question down?";

/// Reply when the model answers with nothing.
pub const EMPTY_ANSWER_REPLY: &str = "Sorry, I have no answer to that right now.";

/// The model's answer, reduced to what decides the next step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelAnswer {
    /// Its text, if any.
    pub content: Option<String>,
    /// The tool calls it asks for.
    pub tool_calls: Vec<ToolCall>,
}

/// What the turn does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run these tool calls, then ask the model again.
    CallTools(Vec<ToolCall>),
    /// The turn is over: send this reply.
    Reply(String),
}

/// The next step after the model's answer in round `round` (1-based) of at
/// most `max_rounds`.
pub fn next_step(answer: &ModelAnswer, round: u32, max_rounds: u32) -> Step {
    if !answer.tool_calls.is_empty() {
        return if round < max_rounds {
            Step::CallTools(answer.tool_calls.clone())
        } else {
            Step::Reply(ROUND_LIMIT_REPLY.to_owned())
        };
    }
    match answer.content.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => Step::Reply(text.to_owned()),
        _ => Step::Reply(EMPTY_ANSWER_REPLY.to_owned()),
    }
}

/// What the model is told after a read tool answered.
pub fn read_result(status: u16, body: &str) -> String {
    let (body, truncated) = truncate_chars(body, MAX_TOOL_RESULT_CHARS);
    let mut result = json!({ "status": status, "body": body });
    if truncated {
        result["truncated"] = json!(true);
    }
    if !(200..300).contains(&status) {
        result["error"] = json!("the Accounting API refused the request");
    }
    result.to_string()
}

/// What the model is told when a tool call could not be made.
pub fn refusal(reason: &str) -> String {
    json!({ "error": reason }).to_string()
}

/// What the model is told when it calls more tools than one round allows.
pub fn over_round_limit() -> String {
    refusal(&format!(
        "not called: at most {MAX_TOOL_CALLS_PER_ROUND} tool calls are run per answer"
    ))
}

fn truncate_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// The reply when the tenant's LLM budget for the day is used up; the
/// budget is reset at the start of `back_on` (UTC).
pub fn on_break_reply(back_on: chrono::NaiveDate) -> String {
    format!(
        "The assistant is on a break until {back_on} 00:00 UTC: today's usage budget for this \
         workspace is used up. Your message is saved; please ask again after that."
    )
}

/// The notice to the user when their message could not be answered after
/// every attempt. `reason` is an operator-facing summary, never shown.
pub const TURN_FAILED_REPLY: &str = "Sorry, I could not answer this message: something went \
     wrong on my side and retrying did not help. An operator has been notified and can replay \
     it; you can also ask again later.";

/// At most this many rapid messages are folded into one turn.
pub const MAX_FOLDED_MESSAGES: usize = 10;

/// How many of a conversation's pending messages (authors in arrival order)
/// one turn answers: the first, and the ones right after it from the same
/// author, up to [`MAX_FOLDED_MESSAGES`]. Messages of different people are
/// never folded together: a proposal has exactly one proposer.
pub fn fold_count<S: AsRef<str>>(pending_authors: &[S]) -> usize {
    let Some(first) = pending_authors.first() else {
        return 0;
    };
    pending_authors
        .iter()
        .take(MAX_FOLDED_MESSAGES)
        .take_while(|a| a.as_ref() == first.as_ref())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "t".into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn tool_calls_run_while_rounds_remain() {
        let answer = ModelAnswer {
            content: None,
            tool_calls: vec![call("a")],
        };
        assert_eq!(next_step(&answer, 1, 3), Step::CallTools(vec![call("a")]));
        assert_eq!(
            next_step(&answer, 3, 3),
            Step::Reply(ROUND_LIMIT_REPLY.into())
        );
    }

    #[test]
    fn text_answer_is_the_reply_trimmed() {
        let answer = ModelAnswer {
            content: Some("  Saldo: 10 kr\n".into()),
            tool_calls: vec![],
        };
        assert_eq!(next_step(&answer, 1, 3), Step::Reply("Saldo: 10 kr".into()));
    }

    #[test]
    fn empty_answer_gets_a_fallback() {
        for content in [None, Some(String::new()), Some("  ".into())] {
            let answer = ModelAnswer {
                content,
                tool_calls: vec![],
            };
            assert_eq!(
                next_step(&answer, 1, 3),
                Step::Reply(EMPTY_ANSWER_REPLY.into())
            );
        }
    }

    #[test]
    fn read_result_carries_status_and_marks_errors_and_truncation() {
        let ok: serde_json::Value = serde_json::from_str(&read_result(200, "{\"a\":1}")).unwrap();
        assert_eq!(ok, json!({"status": 200, "body": "{\"a\":1}"}));
        let long = "x".repeat(MAX_TOOL_RESULT_CHARS + 5);
        let bad: serde_json::Value = serde_json::from_str(&read_result(500, &long)).unwrap();
        assert_eq!(bad["truncated"], json!(true));
        assert_eq!(bad["body"].as_str().unwrap().len(), MAX_TOOL_RESULT_CHARS);
        assert!(bad["error"].is_string());
    }

    #[test]
    fn folds_a_run_of_one_author_only() {
        assert_eq!(fold_count::<&str>(&[]), 0);
        assert_eq!(fold_count(&["u1"]), 1);
        assert_eq!(fold_count(&["u1", "u1", "u2", "u1"]), 2);
        assert_eq!(fold_count(&["u2", "u1"]), 1);
        assert_eq!(fold_count(&["u1"; 25]), MAX_FOLDED_MESSAGES);
    }
}
