//! ExecutionManager: carries out an approved proposal's writes — exactly the
//! approved requests, each exactly once although the Accounting API takes
//! no idempotency key — and tells the owner.
//!
//! One execution holds a proposal at a time. Before a step's request is
//! sent, the step's list is read and the intent recorded with what it
//! showed; when the answer is lost (a dropped connection, a timeout, a
//! killed worker), the list is read again before anything is resent: one
//! new match is what the step made, none means it was not made, several
//! cannot be told apart — then the proposal waits for a human.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;

use sha2::{Digest, Sha256};
use shared::access::accounting::{AccountingClient, AccountingError, AccountingTarget};
use shared::access::queue::JobQueue;
use shared::access::store::{ExecutionRecord, ProposalChanges, ProposalModel, Store, TenantStore};
use shared::character::Apis;
use shared::character::api::{ApiProfile, Confirm};
use shared::engine::execution::{
    Made, StepState, candidates, confirm_query, fill, list_path, made_since, step_states,
    still_settling,
};
use shared::engine::proposal::{Transition, next, payload_digest};
use shared::engine::read::MAX_READ_PAGES;
use shared::engine::retry::WriteStatus;
use shared::engine::review::{notice_executed, notice_failed, notice_gave_up, notice_uncertain};
use shared::event::{
    Actor, ActorKind, ExecutionFinished, ExecutionStarted, ExecutionUncertain, ProposalEvent,
    StepFinished, StepOutcome, StepStarted,
};
use shared::ids::{ProposalId, TenantId};
use shared::job::JobFailure;
use shared::proposal::ProposalState;
use shared::request::ToolRequest;

use super::accounts::Accounts;

/// How many requests' time an execution holds its proposal without
/// renewing (before a request, it renews a hold older than one request's
/// time).
const HOLD_REQUESTS: u32 = 4;

/// Carries out approved proposals.
#[derive(Debug, Clone)]
pub struct ExecutionManager {
    store: Store,
    queue: JobQueue,
    accounting: AccountingClient,
    accounts: Accounts,
    apis: Apis,
    timeout: Duration,
}

/// What sending a step's request came to.
enum Sent {
    /// Made; the id the API gave, if any.
    Made(Option<String>),
    /// Refused for good.
    Refused(u16),
    /// Not handled (rate limited): send it later.
    NotMade(JobFailure),
    /// The answer was lost: it may have been made.
    Unknown(String),
}

/// How one step ended in this attempt.
enum Step {
    /// Made (or found made): go on.
    Done,
    /// The execution ends here (refused, or uncertain); told already.
    Stopped,
}

impl ExecutionManager {
    /// A manager over its clients and the deployment's APIs.
    pub fn new(
        store: Store,
        queue: JobQueue,
        accounting: AccountingClient,
        accounts: Accounts,
        apis: Apis,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            queue,
            accounting,
            accounts,
            apis,
            timeout,
        }
    }

    /// After every attempt (its job is dead-lettered): an execution that
    /// began ends `execution_failed`, or `execution_uncertain` when a step's
    /// request may have been made (the reviewers are asked to check the
    /// books); the owner is told, once.
    pub async fn give_up(
        &self,
        tenant: TenantId,
        id: ProposalId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let mut tx = store.lock_proposal(id).await?;
        let proposal = tx.proposal.clone();
        // Only an approved write that did not finish has anything to tell.
        if !matches!(
            proposal.state(),
            ProposalState::Approved
                | ProposalState::AutoApproved
                | ProposalState::Executing
                | ProposalState::ExecutionFailed
        ) {
            return Ok(());
        }
        let steps = tx.execution_record(id).await?.steps;
        let unknown = step_states(proposal.request.steps.len(), &steps)
            .iter()
            .position(|s| matches!(s, StepState::Sent { .. }));
        let ended = match (proposal.state(), unknown) {
            (ProposalState::Executing, Some(step)) => Some((
                Transition::Uncertain,
                ProposalEvent::ExecutionUncertain(ExecutionUncertain {
                    step,
                    candidates: Vec::new(),
                    reason: "the attempts ran out while the outcome of a request was unknown"
                        .to_owned(),
                }),
            )),
            (ProposalState::Executing, None) => Some((
                Transition::Fail,
                ProposalEvent::ExecutionFinished(ExecutionFinished {
                    succeeded: false,
                    status: None,
                    response_sha256: None,
                    error: Some("the attempts ran out".to_owned()),
                }),
            )),
            _ => None,
        };
        let trace = shared::telemetry::trace_id(traceparent);
        if let Some((transition, event)) = &ended {
            let state = next(proposal.state(), *transition)
                .map_err(|e| JobFailure::permanent(e, "Invalid execution result"))?;
            tx.record(
                &proposal.event(event, system(), trace, "worker"),
                ProposalChanges {
                    state: Some(state),
                    ..Default::default()
                },
            )
            .await?;
        }
        let text = notice_gave_up(&proposal.tool, id);
        let owner = tx
            .notify_conversation(&format!("execution-gave-up:{id}"), &text)
            .await?;
        let reviewers = if unknown.is_some() {
            tx.notify_review_thread(&format!("execution-gave-up-review:{id}"), &text)
                .await?
        } else {
            None
        };
        tx.commit().await?;
        self.deliver(tenant, [owner, reviewers], traceparent).await
    }

    /// Executes the proposal if it is approved and not yet executed.
    pub async fn execute(
        &self,
        tenant: TenantId,
        id: ProposalId,
        traceparent: &str,
        attempt: u32,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let holder = shared::runner::unique_worker_name("execution");
        let trace = shared::telemetry::trace_id(traceparent);
        let held_at = Instant::now();
        let Some(started) = self.start(&store, id, &holder, trace, attempt).await? else {
            return Ok(());
        };
        let run = Run {
            manager: self,
            store: &store,
            target: &started.target,
            id,
            holder: &holder,
            held_at: Mutex::new(held_at),
            trace,
            traceparent,
        };
        let executed = run.execute(started.proposal, started.record).await;
        if let Err(e) = store.release_execution(id, &holder).await {
            tracing::warn!(error = %e, "Cannot release a proposal's execution; its hold runs out");
        }
        executed
    }

    /// Takes the proposal's execution for `holder` and marks it executing,
    /// in one transaction; `None` when there is nothing (more) to do.
    async fn start(
        &self,
        store: &TenantStore,
        id: ProposalId,
        holder: &str,
        trace: Option<&str>,
        attempt: u32,
    ) -> Result<Option<Started>, JobFailure> {
        let mut tx = store.lock_proposal(id).await?;
        let proposal = tx.proposal.clone();
        let state = match next(proposal.state(), Transition::StartExecution) {
            Ok(state) => state,
            // Executed, rejected, expired or waiting for a human: nothing
            // (more) to do.
            Err(_)
                if matches!(
                    proposal.state(),
                    ProposalState::Executed
                        | ProposalState::Rejected
                        | ProposalState::Expired
                        | ProposalState::ExecutionUncertain
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(JobFailure::permanent(e, "Proposal is not approved")),
        };
        // Rolled back on a missing credential: the write is not marked as
        // started.
        let target = self.accounts.target(&tx.settings().await?)?;
        if !tx.hold_execution(id, holder, self.hold_ttl()).await? {
            return Err(JobFailure::deferred(
                anyhow::anyhow!("proposal {id} is being executed"),
                "Another execution holds the proposal",
            ));
        }
        let record = tx.execution_record(id).await?;
        let started = ProposalEvent::ExecutionStarted(ExecutionStarted { attempt });
        tx.record(
            &proposal.event(&started, system(), trace, "worker"),
            ProposalChanges {
                state: Some(state),
                ..Default::default()
            },
        )
        .await?;
        Ok(Some(Started {
            proposal: tx.commit().await?,
            target,
            record,
        }))
    }

    /// How long one execution holds its proposal: longer than a request
    /// may take, so a live execution never loses it between renewals.
    fn hold_ttl(&self) -> Duration {
        self.timeout * HOLD_REQUESTS
    }

    async fn deliver(
        &self,
        tenant: TenantId,
        notices: impl IntoIterator<Item = Option<shared::ids::OutboxId>>,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        for outbox_id in notices.into_iter().flatten() {
            self.queue
                .deliver_outbox(tenant, outbox_id, traceparent)
                .await?;
        }
        Ok(())
    }
}

/// One execution of one proposal, holding it.
struct Run<'a> {
    manager: &'a ExecutionManager,
    store: &'a TenantStore,
    target: &'a AccountingTarget,
    id: ProposalId,
    holder: &'a str,
    /// When the hold was last taken or renewed (before the statement).
    held_at: Mutex<Instant>,
    trace: Option<&'a str>,
    traceparent: &'a str,
}

/// A proposal whose execution was started and is held.
struct Started {
    proposal: ProposalModel,
    target: AccountingTarget,
    record: ExecutionRecord,
}

impl Run<'_> {
    async fn execute(
        &self,
        proposal: ProposalModel,
        record: ExecutionRecord,
    ) -> Result<(), JobFailure> {
        // Exactly what was approved: the writes still hash to the digest the
        // approval bound.
        let digest = payload_digest(&proposal.request);
        if record.approved_sha256.as_deref() != Some(digest.as_str())
            || digest != proposal.payload_sha256
        {
            let finished = ExecutionFinished {
                succeeded: false,
                status: None,
                response_sha256: None,
                error: Some("the writes differ from the ones approved".to_owned()),
            };
            let notice = notice_failed(&proposal.tool, self.id, None, &[]);
            tracing::error!(proposal = %self.id, "A proposal's writes differ from the approved ones; not sent");
            return self
                .conclude(
                    Transition::Fail,
                    ProposalEvent::ExecutionFinished(finished),
                    &notice,
                    true,
                )
                .await;
        }
        let plan = &proposal.request.0;
        let api = self.manager.apis.get(&plan.api).ok_or_else(|| {
            JobFailure::Permanent(anyhow::anyhow!("no API named `{}` is loaded", plan.api))
        })?;
        let mut states = step_states(plan.steps.len(), &record.steps);
        let mut made: Vec<Option<String>> = vec![None; plan.steps.len()];
        for (i, step) in plan.steps.iter().enumerate() {
            if let StepState::Done { id } = &states[i] {
                made[i].clone_from(id);
                continue;
            }
            self.renew().await?;
            let request =
                fill(step, &made).map_err(|e| JobFailure::Permanent(anyhow::anyhow!(e)))?;
            let state = std::mem::replace(&mut states[i], StepState::Todo);
            match self
                .step(&proposal, api, i, &request, state, &mut made)
                .await?
            {
                Step::Done => {}
                Step::Stopped => return Ok(()),
            }
        }
        self.finish(&proposal).await
    }

    /// Renews the hold on the proposal; a deferral when another execution
    /// took it over (this one's hold ran out). A hold taken or renewed less
    /// than one request's time ago is left alone: most of it is left, and
    /// no one can have taken it over.
    async fn renew(&self) -> Result<(), JobFailure> {
        let held_at = || self.held_at.lock().unwrap_or_else(PoisonError::into_inner);
        if held_at().elapsed() < self.manager.timeout {
            return Ok(());
        }
        let at = Instant::now();
        if self
            .store
            .hold_execution(self.id, self.holder, self.manager.hold_ttl())
            .await?
        {
            *held_at() = at;
            return Ok(());
        }
        Err(JobFailure::deferred(
            anyhow::anyhow!("the execution of {} was taken over", self.id),
            "The execution's hold ran out",
        ))
    }

    /// Makes step `i` once: after a possibly sent request, finds out first
    /// what it made; a find-or-create step uses what is there.
    async fn step(
        &self,
        proposal: &ProposalModel,
        api: &ApiProfile,
        i: usize,
        request: &ToolRequest,
        state: StepState,
        made: &mut [Option<String>],
    ) -> Result<Step, JobFailure> {
        let confirm = api.confirm.get(&request.operation).ok_or_else(|| {
            JobFailure::Permanent(anyhow::anyhow!(
                "`{}` has no [confirm] in the API profile",
                request.operation
            ))
        })?;
        let file = self.file(request).await?;
        let before = match state {
            StepState::Sent { before, sent_at } => {
                let now = self.candidates(api, confirm, request).await?;
                match made_since(&before, &now) {
                    Made::One(id) => return self.made(i, id, StepOutcome::Confirmed, made).await,
                    Made::Several(ids) => return self.uncertain(proposal, i, request, ids).await,
                    Made::Nothing => {}
                }
                // The request may still be at work: it is not sent again
                // before it had the time to finish.
                if let Some(wait) = still_settling(sent_at, Utc::now(), self.manager.hold_ttl()) {
                    return Err(JobFailure::deferred(
                        anyhow::anyhow!("the lost write may still be at work for {wait:?}"),
                        "The write is not sent again before it had the time to finish",
                    ));
                }
                before
            }
            _ => {
                let before = self.candidates(api, confirm, request).await?;
                if confirm.reuse
                    && let Some(found) = before.first()
                {
                    return self.made(i, found.clone(), StepOutcome::Found, made).await;
                }
                before
            }
        };
        let started = ProposalEvent::StepStarted(StepStarted {
            step: i,
            before: before.clone(),
            sent_at: Some(Utc::now()),
        });
        self.record(&started).await?;
        match self.send(request, file).await {
            Sent::Made(id) => {
                let finished = ProposalEvent::StepFinished(StepFinished {
                    step: i,
                    id: id.clone(),
                    outcome: StepOutcome::Created,
                });
                self.record(&finished).await?;
                made[i] = id;
                Ok(Step::Done)
            }
            Sent::Refused(status) => {
                self.refused(proposal, i, request, status).await?;
                Ok(Step::Stopped)
            }
            Sent::NotMade(failure) => Err(failure),
            Sent::Unknown(error) => {
                let now = self.candidates(api, confirm, request).await?;
                match made_since(&before, &now) {
                    Made::One(id) => self.made(i, id, StepOutcome::Confirmed, made).await,
                    Made::Several(ids) => self.uncertain(proposal, i, request, ids).await,
                    Made::Nothing => {
                        tracing::warn!(error = %error, "A write's answer was lost; the books are read again before it is resent");
                        Err(not_seen_yet().with_retry_after(Some(self.manager.hold_ttl())))
                    }
                }
            }
        }
    }

    async fn made(
        &self,
        i: usize,
        id: String,
        outcome: StepOutcome,
        made: &mut [Option<String>],
    ) -> Result<Step, JobFailure> {
        let finished = ProposalEvent::StepFinished(StepFinished {
            step: i,
            id: Some(id.clone()),
            outcome,
        });
        self.record(&finished).await?;
        made[i] = Some(id);
        Ok(Step::Done)
    }

    /// The bytes of the file an upload sends, checked against the digest
    /// the approval bound.
    async fn file(&self, request: &ToolRequest) -> Result<Option<Vec<u8>>, JobFailure> {
        let Some(file) = &request.file else {
            return Ok(None);
        };
        let (_, bytes) = self.store.kept_file(&file.sha256).await?.ok_or_else(|| {
            JobFailure::Permanent(anyhow::anyhow!(
                "the receipt {} is no longer kept",
                file.filename
            ))
        })?;
        if hex::encode(Sha256::digest(&bytes)) != file.sha256 {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "the stored receipt {} does not match the approved digest",
                file.filename
            )));
        }
        Ok(Some(bytes))
    }

    async fn send(&self, request: &ToolRequest, file: Option<Vec<u8>>) -> Sent {
        if let Err(failure) = self.renew().await {
            return Sent::NotMade(failure);
        }
        let m = self.manager;
        match m
            .accounting
            .send(self.target, request, file, m.timeout)
            .await
        {
            Ok(r) => match WriteStatus::of(r.status) {
                WriteStatus::Succeeded => Sent::Made(r.created_id().map(str::to_owned)),
                WriteStatus::Refused => Sent::Refused(r.status),
                WriteStatus::NotMade => {
                    let wait = r
                        .header("retry-after")
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs);
                    Sent::NotMade(
                        JobFailure::retryable(
                            anyhow::anyhow!("HTTP {}", r.status),
                            "The accounting system asked to wait",
                        )
                        .with_retry_after(wait),
                    )
                }
                WriteStatus::Unknown => Sent::Unknown(format!("HTTP {}", r.status)),
            },
            Err(AccountingError::InvalidRequest(e)) => Sent::NotMade(JobFailure::Permanent(
                anyhow::anyhow!("invalid request: {e}"),
            )),
            Err(e) => Sent::Unknown(e.to_string()),
        }
    }

    /// The ids of what the step's list shows that could be what `request`
    /// makes, page by page.
    async fn candidates(
        &self,
        api: &ApiProfile,
        confirm: &Confirm,
        request: &ToolRequest,
    ) -> Result<Vec<String>, JobFailure> {
        let unreadable = |why: String| {
            JobFailure::retryable(
                anyhow::anyhow!(why),
                "Cannot read the books to confirm a write",
            )
        };
        let list = api
            .spec
            .operation(&confirm.list)
            .ok_or_else(|| unreadable(format!("no operation `{}`", confirm.list)))?;
        let (_, params) = api
            .spec
            .route(&request.method, &request.path)
            .ok_or_else(|| unreadable(format!("`{}` names no operation", request.path)))?;
        let query = confirm_query(confirm, request);
        let paging = api
            .paging
            .as_ref()
            .filter(|p| list.params.iter().any(|param| param.name == p.page));
        let mut ids = Vec::new();
        let mut page = 0;
        loop {
            let mut page_query = query.clone();
            if let Some(p) = paging {
                page_query.push((p.page.clone(), page.to_string()));
                page_query.push((p.size.clone(), p.max_size.to_string()));
            }
            let read = ToolRequest {
                tool: request.tool.clone(),
                operation: list.id.clone(),
                method: list.method.clone(),
                path: list_path(&list.path, &params),
                query: page_query,
                body: None,
                file: None,
            };
            self.renew().await?;
            let m = self.manager;
            let response = m
                .accounting
                .send(self.target, &read, None, m.timeout)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            if !(200..300).contains(&response.status) {
                return Err(unreadable(format!(
                    "`{}` answered HTTP {}",
                    list.id, response.status
                )));
            }
            let items: Vec<serde_json::Value> = serde_json::from_str(&response.body)
                .map_err(|e| unreadable(format!("`{}` answered no list: {e}", list.id)))?;
            ids.extend(candidates(confirm, request, &items));
            page += 1;
            let pages = paging
                .and_then(|p| response.header(&p.page_count_header))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(page);
            if page >= pages {
                break;
            }
            if page >= MAX_READ_PAGES * 4 {
                return Err(unreadable(format!(
                    "`{}` lists more than {} pages for this write",
                    list.id, page
                )));
            }
        }
        Ok(ids)
    }

    async fn record(&self, event: &ProposalEvent) -> Result<(), JobFailure> {
        let mut tx = self.store.lock_proposal(self.id).await?;
        let proposal = tx.proposal.clone();
        tx.record(
            &proposal.event(event, system(), self.trace, "worker"),
            ProposalChanges::default(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self, proposal: &ProposalModel) -> Result<(), JobFailure> {
        let finished = ExecutionFinished {
            succeeded: true,
            status: None,
            response_sha256: None,
            error: None,
        };
        let notice = notice_executed(&proposal.tool, self.id);
        self.conclude(
            Transition::Succeed,
            ProposalEvent::ExecutionFinished(finished),
            &notice,
            false,
        )
        .await
    }

    async fn refused(
        &self,
        proposal: &ProposalModel,
        i: usize,
        request: &ToolRequest,
        status: u16,
    ) -> Result<(), JobFailure> {
        let done: Vec<&str> = proposal.request.steps[..i]
            .iter()
            .map(|s| s.request.operation.as_str())
            .collect();
        let finished = ExecutionFinished {
            succeeded: false,
            status: Some(status),
            response_sha256: None,
            error: Some(format!(
                "step {} (`{}`) answered HTTP {status}",
                i + 1,
                request.operation
            )),
        };
        let notice = notice_failed(&proposal.tool, self.id, Some(status), &done);
        self.conclude(
            Transition::Fail,
            ProposalEvent::ExecutionFinished(finished),
            &notice,
            false,
        )
        .await
    }

    async fn uncertain(
        &self,
        proposal: &ProposalModel,
        i: usize,
        request: &ToolRequest,
        candidates: Vec<String>,
    ) -> Result<Step, JobFailure> {
        let notice = notice_uncertain(&proposal.tool, self.id, &request.operation, &candidates);
        let event = ProposalEvent::ExecutionUncertain(ExecutionUncertain {
            step: i,
            candidates,
            reason: format!(
                "`{}`: several new entries match the write; which one it made cannot be told",
                request.operation
            ),
        });
        self.conclude(Transition::Uncertain, event, &notice, true)
            .await?;
        Ok(Step::Stopped)
    }

    /// Records how the execution ended and tells the owner (and, when
    /// `reviewers`, the review thread).
    async fn conclude(
        &self,
        transition: Transition,
        event: ProposalEvent,
        notice: &str,
        reviewers: bool,
    ) -> Result<(), JobFailure> {
        let mut tx = self.store.lock_proposal(self.id).await?;
        let proposal = tx.proposal.clone();
        let state = next(proposal.state(), transition)
            .map_err(|e| JobFailure::permanent(e, "Invalid execution result"))?;
        tx.record(
            &proposal.event(&event, system(), self.trace, "worker"),
            ProposalChanges {
                state: Some(state),
                ..Default::default()
            },
        )
        .await?;
        let owner = tx
            .notify_conversation(&format!("execution:{}", self.id), notice)
            .await?;
        let thread = if reviewers {
            tx.notify_review_thread(&format!("execution-review:{}", self.id), notice)
                .await?
        } else {
            None
        };
        tx.commit().await?;
        metrics::counter!("automate_e_proposals_total", "state" => state.as_str()).increment(1);
        self.manager
            .deliver(self.store.tenant_id(), [owner, thread], self.traceparent)
            .await
    }
}

/// A write whose answer was lost and that the books do not show yet.
fn not_seen_yet() -> JobFailure {
    JobFailure::retryable(
        anyhow::anyhow!("the write's answer was lost and the books do not show it yet"),
        "The books are read again before the write is resent",
    )
}

fn system() -> Actor {
    Actor {
        kind: ActorKind::System,
        id: "execution".to_owned(),
    }
}
