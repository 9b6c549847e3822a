//! ToolRunner: runs a model's tool call — refusals and held writes are
//! answered without a request; reads go to the Accounting API.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shared::access::accounting::AccountingClient;
use shared::character::Character;
use shared::engine::prompt::ToolCall;
use shared::engine::tool::{PlannedCall, plan_call};
use shared::engine::turn;
use shared::event::{ToolCalled, ToolOutcome};
use shared::ids::InboxId;

/// What the model is told when it calls a write tool, until proposals exist.
pub const WRITE_HELD: &str = "not carried out: changes to the books need a reviewed proposal, \
and proposals are not enabled in this deployment yet; nothing was written";

/// Runs tool calls against the Accounting API.
#[derive(Debug, Clone)]
pub struct ToolRunner {
    accounting: AccountingClient,
}

impl ToolRunner {
    /// A runner over the Accounting API client.
    pub fn new(accounting: AccountingClient) -> Self {
        Self { accounting }
    }

    /// Runs one call; returns what the model is told and the audit record.
    pub async fn run(
        &self,
        character: &Character,
        inbox_id: InboxId,
        call: &ToolCall,
        timeout: Duration,
    ) -> (String, ToolCalled) {
        let started = Instant::now();
        let mut record = refused(inbox_id, call, None);
        let content = match plan_call(character, &call.name, &call.arguments) {
            Err(refused) => {
                record.error = Some(refused.to_string());
                turn::refusal(&refused.to_string())
            }
            Ok(PlannedCall::Write(request)) => {
                record.request = Some(request);
                record.outcome = ToolOutcome::WriteHeld;
                turn::refusal(WRITE_HELD)
            }
            Ok(PlannedCall::Read(request)) => {
                let result = self.accounting.send(&request, None, timeout).await;
                record.request = Some(request);
                match result {
                    Ok(response) => {
                        record.outcome = if (200..300).contains(&response.status) {
                            ToolOutcome::Ok
                        } else {
                            ToolOutcome::HttpError
                        };
                        record.status = Some(response.status);
                        record.response_sha256 =
                            Some(hex::encode(Sha256::digest(response.body.as_bytes())));
                        record.response_bytes = Some(response.bytes as u64);
                        turn::read_result(response.status, &response.body)
                    }
                    Err(e) => {
                        record.outcome = ToolOutcome::Failed;
                        record.error = Some(e.to_string());
                        turn::refusal(&e.to_string())
                    }
                }
            }
        };
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics::counter!("automate_e_tool_calls_total", "outcome" => outcome_label(record.outcome)).increment(1);
        (content, record)
    }

    /// Answers a call beyond the per-answer limit without running it.
    pub fn refuse_over_limit(&self, inbox_id: InboxId, call: &ToolCall) -> (String, ToolCalled) {
        let content = turn::over_round_limit();
        let record = refused(inbox_id, call, Some(content.clone()));
        (content, record)
    }
}

/// The record of a call that made no request (yet).
fn refused(inbox_id: InboxId, call: &ToolCall, error: Option<String>) -> ToolCalled {
    ToolCalled {
        inbox_id,
        call_id: call.id.clone(),
        tool: call.name.clone(),
        request: None,
        outcome: ToolOutcome::Refused,
        status: None,
        response_sha256: None,
        response_bytes: None,
        error,
        duration_ms: 0,
    }
}

fn outcome_label(outcome: ToolOutcome) -> &'static str {
    match outcome {
        ToolOutcome::Ok => "ok",
        ToolOutcome::HttpError => "http_error",
        ToolOutcome::Failed => "failed",
        ToolOutcome::Refused => "refused",
        ToolOutcome::WriteHeld => "write_held",
    }
}
