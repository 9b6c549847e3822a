//! ToolRunner: runs a model's tool call. Refusals are answered without a
//! request; reads go to the Accounting API; a write is never made here — it
//! is filed as a proposal and the model is told its id and state.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::access::accounting::{
    AccountingClient, AccountingError, AccountingResponse, AccountingTarget,
};
use shared::access::store::{InboxModel, Lease, NewEvent, NewProposal, Store, TenantStore};
use shared::character::operation::is_paging;
use shared::character::{Builtin, Character};
use shared::engine::cost::PriceTable;
use shared::engine::prompt::ToolCall;
use shared::engine::proposal::{amount_minor, pattern_value, payload_digest};
use shared::engine::read::PagedRead;
use shared::engine::tool::{CallSite, PlannedCall, plan_call};
use shared::engine::turn;
use shared::event::{
    Actor, ActorKind, Evidence, MAX_EVIDENCE_CHARS, ProposalEvent, Proposed, ToolCalled,
    ToolOutcome,
};
use shared::ids::{InboxId, ProposalId};
use shared::job::JobFailure;
use shared::request::{ToolRequest, WritePlan};

/// What one tool call came to.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRun {
    /// What the model is told.
    pub content: String,
    /// The audit record.
    pub record: ToolCalled,
    /// A successful read, as evidence for later proposals in the turn.
    pub evidence: Option<Evidence>,
    /// The proposal a write filed.
    pub proposal: Option<ProposalId>,
}

/// The turn a call belongs to.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The agent.
    pub character: &'a Character,
    /// The message being answered.
    pub msg: &'a InboxModel,
    /// Reads made earlier in the turn.
    pub evidence: &'a [Evidence],
    /// Trace id of the turn.
    pub trace_id: Option<&'a str>,
    /// The conversation lease the turn runs under (fences its proposals).
    pub lease: &'a Lease,
    /// The tenant's Accounting API.
    pub target: &'a AccountingTarget,
    /// The tenant's company there and the owner's receipts.
    pub site: CallSite<'a>,
}

/// Runs tool calls.
#[derive(Debug, Clone)]
pub struct ToolRunner {
    accounting: AccountingClient,
    store: Store,
    pricing: PriceTable,
    /// Timeout of one read.
    timeout: Duration,
}

impl ToolRunner {
    /// A runner over the Accounting API (reads time out after `timeout`),
    /// the store (proposals, facts, usage) and the price table (usage
    /// reports).
    pub fn new(
        accounting: AccountingClient,
        store: Store,
        pricing: PriceTable,
        timeout: Duration,
    ) -> Self {
        Self {
            accounting,
            store,
            pricing,
            timeout,
        }
    }

    /// Runs one call.
    pub async fn run(&self, ctx: &CallContext<'_>, call: &ToolCall) -> Result<ToolRun, JobFailure> {
        let started = Instant::now();
        let mut run = ToolRun {
            content: String::new(),
            record: refused(ctx.msg.id, call, None),
            evidence: None,
            proposal: None,
        };
        match plan_call(ctx.character, &call.name, &call.arguments, &ctx.site) {
            Err(refused) => {
                run.record.error = Some(refused.to_string());
                run.content = turn::refusal(&refused.to_string());
            }
            Ok(PlannedCall::Builtin(builtin, args)) => {
                run.content = self.run_builtin(ctx, builtin, &args).await?;
                run.record.outcome = ToolOutcome::Ok;
            }
            Ok(PlannedCall::Write(plan)) => {
                let id = self.file_proposal(ctx, &plan).await?;
                run.record.outcome = ToolOutcome::Proposed;
                run.record.proposal_id = Some(id);
                run.proposal = Some(id);
                run.content = json!({
                    "proposal_id": id.to_string(),
                    "state": "pending_review",
                    "note": "Filed for review: nothing has been written. A reviewer must approve it first; \
                             tell the user it is waiting for approval."
                })
                .to_string();
            }
            Ok(PlannedCall::Read(request)) => {
                let result = self.read_pages(ctx.character, ctx.target, &request).await;
                run.record.request = Some(Box::new(request));
                run.content = match result {
                    Ok(read) => {
                        run.record.outcome = if read.ok {
                            ToolOutcome::Ok
                        } else {
                            ToolOutcome::HttpError
                        };
                        run.record.status = Some(read.status);
                        run.record.response_sha256 = Some(read.sha256);
                        run.record.response_bytes = Some(read.bytes);
                        if read.ok {
                            run.evidence = Some(Evidence {
                                tool: call.name.clone(),
                                status: read.status,
                                excerpt: read.content.chars().take(MAX_EVIDENCE_CHARS).collect(),
                            });
                        }
                        read.content
                    }
                    Err(e) => {
                        run.record.outcome = ToolOutcome::Failed;
                        run.record.error = Some(e.to_string());
                        turn::refusal(&e.to_string())
                    }
                };
            }
        }
        run.record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics::counter!("automate_e_tool_calls_total", "outcome" => outcome_label(run.record.outcome)).increment(1);
        Ok(run)
    }

    /// Files the writes as a proposal (once per message and payload).
    async fn file_proposal(
        &self,
        ctx: &CallContext<'_>,
        plan: &WritePlan,
    ) -> Result<ProposalId, JobFailure> {
        let tool = ctx
            .character
            .tool(&plan.tool)
            .expect("a planned call names a known tool");
        let id = ProposalId::new_v7();
        let proposed = Proposed {
            proposal_id: id,
            conversation_id: ctx.msg.conversation_id,
            inbox_id: ctx.msg.id,
            request: plan.clone(),
            payload_sha256: payload_digest(plan),
            pattern_value: tool
                .pattern_key
                .as_deref()
                .and_then(|key| pattern_value(&plan.arguments, key)),
            amount_minor: amount_minor(&plan.arguments, &tool.amount_fields),
            proposer: format!("{}:{}", ctx.msg.platform, ctx.msg.author_id),
            evidence: ctx.evidence.to_vec(),
        };
        let event = ProposalEvent::Proposed(proposed.clone());
        let filed = self
            .store
            .tenant(ctx.msg.tenant_id)
            .file_proposal(&NewProposal {
                id,
                tenant_id: ctx.msg.tenant_id,
                conversation_id: proposed.conversation_id,
                inbox_id: proposed.inbox_id,
                request: proposed.request,
                payload_sha256: proposed.payload_sha256,
                pattern_value: proposed.pattern_value,
                amount_minor: proposed.amount_minor,
                proposer: proposed.proposer,
                event: NewEvent {
                    tenant_id: ctx.msg.tenant_id,
                    type_name: event.type_name(),
                    payload: event.payload(),
                    actor: Actor {
                        kind: ActorKind::Agent,
                        id: ctx.character.name.clone(),
                    },
                    occurred_at: Utc::now(),
                    dedupe_key: None,
                    correlation_id: Some(ctx.msg.conversation_id.0),
                    causation_id: Some(ctx.msg.id.0),
                    trace_id: ctx.trace_id.map(str::to_owned),
                    source: "worker",
                },
                lease: *ctx.lease,
            })
            .await?;
        metrics::counter!("automate_e_proposals_total", "state" => "proposed").increment(1);
        Ok(filed.id)
    }

    /// Runs a tool the runtime provides; the model gets its JSON result.
    async fn run_builtin(
        &self,
        ctx: &CallContext<'_>,
        builtin: Builtin,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, JobFailure> {
        let store = self.store.tenant(ctx.msg.tenant_id);
        let text = |name: &str| args.get(name).and_then(serde_json::Value::as_str);
        Ok(match builtin {
            Builtin::RememberFact => {
                let fact: String = text("fact")
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .take(MAX_FACT_CHARS)
                    .collect();
                if fact.is_empty() {
                    return Ok(turn::refusal("the fact is empty"));
                }
                let stored = store
                    .remember_fact(
                        ctx.msg.platform,
                        &ctx.msg.author_id,
                        &fact,
                        ctx.msg.conversation_id,
                    )
                    .await?;
                json!({ "remembered": stored }).to_string()
            }
            Builtin::UsageReport => self.usage_report(&store, args).await?,
        })
    }

    /// The tenant's recorded usage and its cost for the period the model
    /// asked for (`fromDate`, `toDate`), as the tool result.
    pub async fn usage_report(
        &self,
        store: &TenantStore,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, JobFailure> {
        let text = |name: &str| args.get(name).and_then(serde_json::Value::as_str);
        let (from, to) = match usage_period(text("fromDate"), text("toDate"), Utc::now()) {
            Ok(period) => period,
            Err(why) => return Ok(turn::refusal(&why)),
        };
        let (usage, tool_calls) = store.recorded_usage(from, to).await?;
        let report = self.pricing.report(&usage, tool_calls);
        Ok(json!({
            "from": from.date_naive().to_string(),
            "to_exclusive": to.date_naive().to_string(),
            "report": report,
            "summary": report.summary(),
        })
        .to_string())
    }

    /// Sends a read to the tenant's Accounting API, page by page for a
    /// paged list; the model gets the items, or the status and body of an
    /// error.
    pub async fn read_pages(
        &self,
        character: &Character,
        target: &AccountingTarget,
        request: &ToolRequest,
    ) -> Result<ReadOutcome, AccountingError> {
        let api = character.api();
        let paging = api.and_then(|api| {
            let op = api.spec.operation(&request.operation)?;
            let paging = api.paging.as_ref()?;
            is_paging(api, op, &paging.page).then_some(paging)
        });
        let Some(paging) = paging else {
            let response = self
                .accounting
                .send(target, request, None, self.timeout)
                .await?;
            return Ok(ReadOutcome::of(
                &response,
                turn::read_result(response.status, &response.body),
            ));
        };
        let only_without = character
            .tool(&request.tool)
            .and_then(|t| t.only_without.as_deref());
        let mut read = PagedRead::new(paging, only_without);
        let mut digest = Sha256::new();
        let mut bytes = 0;
        while let Some(query) = read.next_query(&request.query) {
            let page = ToolRequest {
                query,
                ..request.clone()
            };
            let response = self
                .accounting
                .send(target, &page, None, self.timeout)
                .await?;
            digest.update(response.body.as_bytes());
            bytes += response.bytes as u64;
            if !(200..300).contains(&response.status) {
                return Ok(ReadOutcome::of(
                    &response,
                    turn::read_result(response.status, &response.body),
                ));
            }
            let count = |name: &str| response.header(name).and_then(|v| v.trim().parse().ok());
            if let Err(e) = read.take(
                &response.body,
                count(&paging.page_count_header).and_then(|c: u64| u32::try_from(c).ok()),
                count(&paging.result_count_header),
            ) {
                return Ok(ReadOutcome::of(&response, turn::refusal(&e)));
            }
        }
        Ok(ReadOutcome {
            ok: true,
            status: 200,
            sha256: hex::encode(digest.finalize()),
            bytes,
            content: read.result(),
        })
    }

    /// Answers a call beyond the per-answer limit without running it.
    pub fn refuse_over_limit(&self, inbox_id: InboxId, call: &ToolCall) -> ToolRun {
        let content = turn::over_round_limit();
        ToolRun {
            record: refused(inbox_id, call, Some(content.clone())),
            content,
            evidence: None,
            proposal: None,
        }
    }
}

/// What a read came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Whether every page was answered 2xx.
    pub ok: bool,
    /// The last status.
    pub status: u16,
    /// SHA-256 of the bodies, in order.
    pub sha256: String,
    /// Bytes read.
    pub bytes: u64,
    /// What the model is told.
    pub content: String,
}

impl ReadOutcome {
    fn of(response: &AccountingResponse, content: String) -> Self {
        Self {
            ok: (200..300).contains(&response.status),
            status: response.status,
            sha256: hex::encode(Sha256::digest(response.body.as_bytes())),
            bytes: response.bytes as u64,
            content,
        }
    }
}

/// The record of a call that made no request (yet).
fn refused(inbox_id: InboxId, call: &ToolCall, error: Option<String>) -> ToolCalled {
    ToolCalled {
        inbox_id,
        call_id: call.id.clone(),
        tool: call.name.clone(),
        request: None,
        proposal_id: None,
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
        ToolOutcome::Proposed => "proposed",
    }
}

/// Longest fact an agent may store, in characters.
const MAX_FACT_CHARS: usize = 300;

/// The period of a usage report: `fromDate` (default: the first of this
/// month) to `toDate` inclusive (default: today), as UTC instants.
fn usage_period(
    from: Option<&str>,
    to: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Result<(chrono::DateTime<Utc>, chrono::DateTime<Utc>), String> {
    use chrono::{Datelike, NaiveDate};
    let parse = |s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| format!("`{s}` is not a yyyy-mm-dd date"))
    };
    let today = now.date_naive();
    let from = match from {
        Some(s) => parse(s)?,
        None => today.with_day(1).unwrap_or(today),
    };
    let to = match to {
        Some(s) => parse(s)?,
        None => today,
    };
    if to < from {
        return Err("toDate is before fromDate".to_owned());
    }
    let start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    Ok((start(from), start(to.succ_opt().unwrap_or(to))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_period_defaults_to_this_month_and_includes_the_last_day() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .to_utc();
        let (from, to) = usage_period(None, None, now).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-24T00:00:00+00:00");
        let (from, to) = usage_period(Some("2026-10-01"), Some("2026-10-31"), now).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert!(usage_period(Some("2026-10-02"), Some("2026-10-01"), now).is_err());
        assert!(usage_period(Some("last month"), None, now).is_err());
    }
}
