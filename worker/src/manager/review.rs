//! ReviewManager: decides how a new proposal is reviewed. The learned
//! pattern and the tenant's limit decide whether auto-approval is allowed;
//! the agent reviewer (Review-E) looks first and can only narrow that — it
//! flags to humans, it never approves what the policy would not.

use std::sync::Arc;

use shared::access::llm::{CompletionRequest, LlmClient};
use shared::access::queue::JobQueue;
use shared::access::store::{ProposalChanges, ProposalModel, Store, TenantStore};
use shared::character::Characters;
use shared::engine::prompt::{self, PromptContext};
use shared::engine::proposal::{
    AutoApproval, Transition, assess_pattern, auto_approval, next, parse_verdict,
};
use shared::engine::review::{ReviewCard, agent_brief};
use shared::event::{
    Actor, ActorKind, AgentReviewed, AutoApproved, Evidence, ProposalEvent, ReviewRequested,
    proposal_stream,
};
use shared::ids::{ProposalId, TenantId};
use shared::job::{DeliveryJob, Job, JobFailure, WorkerJob};
use shared::proposal::{AgentVerdict, PatternAssessment, ProposalState};

/// The character that reviews proposals before humans do, when deployed.
pub const AGENT_REVIEWER: &str = "review-e";

/// Executed proposals read to learn a pattern.
const PATTERN_HISTORY: i64 = 50;

/// Reviews new proposals.
#[derive(Debug, Clone)]
pub struct ReviewManager {
    store: Store,
    queue: JobQueue,
    llm: LlmClient,
    characters: Arc<Characters>,
    default_model: String,
}

/// The agent reviewer's verdict, with what it cost.
struct AgentReview {
    verdict: AgentVerdict,
    notes: String,
    model: String,
    input_tokens: u32,
    output_tokens: u32,
}

impl AgentReview {
    /// The `agent_reviewed` event recording this review, and its actor.
    fn recorded(&self) -> (ProposalEvent, Actor) {
        let reviewed = ProposalEvent::AgentReviewed(AgentReviewed {
            agent: AGENT_REVIEWER.to_owned(),
            model: self.model.clone(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            verdict: self.verdict.clone(),
            notes: self.notes.clone(),
        });
        let actor = Actor {
            kind: ActorKind::Agent,
            id: AGENT_REVIEWER.to_owned(),
        };
        (reviewed, actor)
    }
}

impl ReviewManager {
    /// A manager over its clients.
    pub fn new(
        store: Store,
        queue: JobQueue,
        llm: LlmClient,
        characters: Arc<Characters>,
        default_model: String,
    ) -> Self {
        Self {
            store,
            queue,
            llm,
            characters,
            default_model,
        }
    }

    /// Moves a `proposed` proposal to `auto_approved` (and queues its
    /// execution) or to `review_requested` (and queues the Slack review).
    pub async fn review(
        &self,
        tenant: TenantId,
        id: ProposalId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let proposal = store.proposal(id).await?;
        if proposal.state() != ProposalState::Proposed {
            return Ok(());
        }
        let policy = store.tenant_policy().await?;
        let evidence = Self::evidence(&store, id).await?;
        let pattern = self.pattern(&store, &proposal).await?;
        let decision = auto_approval(
            &pattern,
            proposal.amount_minor,
            policy.auto_approve_limit_minor,
        );
        let body = proposal.request.body.clone().unwrap_or_default();
        let card = ReviewCard {
            proposal_id: id,
            tool: &proposal.tool,
            body: &body,
            amount_minor: proposal.amount_minor,
            proposer: &proposal.proposer,
            reason: "",
            evidence: &evidence,
            payload_sha256: &proposal.payload_sha256,
        };
        // Review-E gates an auto-approval here; a proposal for humans gets
        // its notes when it reacts to the review_requested event (`annotate`).
        let agent = match decision {
            AutoApproval::Approve => self.agent_review(&card, &decision).await?,
            AutoApproval::Review(_) => None,
        };

        let trace = shared::telemetry::trace_id(traceparent);
        let mut tx = store.lock_proposal(id).await?;
        if tx.proposal.state() != ProposalState::Proposed {
            return Ok(());
        }
        let event = |e: &ProposalEvent, actor: Actor| proposal.event(e, actor, trace, "worker");
        let system = Actor {
            kind: ActorKind::System,
            id: "review".to_owned(),
        };
        if let Some(agent) = &agent {
            let (reviewed, actor) = agent.recorded();
            tx.record(&event(&reviewed, actor), ProposalChanges::default())
                .await?;
        }
        let flagged = agent
            .as_ref()
            .is_some_and(|a| a.verdict == AgentVerdict::Flag);
        let (transition, follow_event, job): (Transition, ProposalEvent, FollowUp) =
            match (&decision, &agent) {
                (AutoApproval::Approve, _) if !flagged => (
                    Transition::AutoApprove,
                    ProposalEvent::AutoApproved(AutoApproved {
                        payload_sha256: proposal.payload_sha256.clone(),
                        pattern,
                    }),
                    WorkerJob::ExecuteV1 { proposal_id: id }.into(),
                ),
                (decision, agent) => {
                    let reason = match (decision, agent) {
                        (AutoApproval::Review(why), _) => why.clone(),
                        (_, Some(agent)) => format!("Review-E flagged it: {}", agent.notes),
                        (_, None) => "a human must decide".to_owned(),
                    };
                    (
                        Transition::RequestReview,
                        ProposalEvent::ReviewRequested(ReviewRequested { reason }),
                        DeliveryJob::ReviewRequestV1 { proposal_id: id }.into(),
                    )
                }
            };
        let state = next(ProposalState::Proposed, transition)
            .map_err(|e| JobFailure::permanent(e, "Invalid review"))?;
        tx.record(
            &event(&follow_event, system),
            ProposalChanges {
                state: Some(state),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("automate_e_proposals_total", "state" => state.as_str()).increment(1);
        match job {
            FollowUp::Worker(job) => self.queue.enqueue(Job::new(tenant, traceparent, job)).await,
            FollowUp::Delivery(job) => self.queue.enqueue(Job::new(tenant, traceparent, job)).await,
        }
        .map_err(|e| JobFailure::retryable(e, "Cannot enqueue the proposal's next step"))
    }

    /// The agent reviewer's notes on a proposal waiting for humans, once:
    /// records its verdict on the proposal and returns the note for the
    /// review thread; `None` when it was reviewed already or is decided.
    pub async fn annotate(
        &self,
        store: &TenantStore,
        id: ProposalId,
        reason: &str,
    ) -> Result<Option<String>, JobFailure> {
        let proposal = store.proposal(id).await?;
        let reviewed = store
            .read_stream(&proposal_stream(id), &[ProposalEvent::AGENT_REVIEWED])
            .await?;
        if !reviewed.is_empty() || proposal.state() != ProposalState::ReviewRequested {
            return Ok(None);
        }
        let evidence = Self::evidence(store, id).await?;
        let body = proposal.request.body.clone().unwrap_or_default();
        let card = ReviewCard {
            proposal_id: id,
            tool: &proposal.tool,
            body: &body,
            amount_minor: proposal.amount_minor,
            proposer: &proposal.proposer,
            reason,
            evidence: &evidence,
            payload_sha256: &proposal.payload_sha256,
        };
        let decision = AutoApproval::Review(reason.to_owned());
        let Some(agent) = self.agent_review(&card, &decision).await? else {
            return Ok(None);
        };
        let mut tx = store.lock_proposal(id).await?;
        if tx.proposal.state() != ProposalState::ReviewRequested {
            return Ok(None);
        }
        let (reviewed, actor) = agent.recorded();
        tx.record(
            &proposal.event(&reviewed, actor, None, "worker"),
            ProposalChanges::default(),
        )
        .await?;
        tx.commit().await?;
        let verdict = match agent.verdict {
            AgentVerdict::Approve => "no concerns",
            AgentVerdict::Flag => "flagged",
        };
        Ok(Some(format!("Review-E ({verdict}): {}", agent.notes)))
    }

    async fn evidence(store: &TenantStore, id: ProposalId) -> Result<Vec<Evidence>, JobFailure> {
        let events = store
            .read_stream(&proposal_stream(id), &[ProposalEvent::PROPOSED])
            .await?;
        Ok(events
            .into_iter()
            .filter_map(
                |e| match ProposalEvent::from_stored(&e.type_name, e.payload) {
                    Some(ProposalEvent::Proposed(p)) => Some(p.evidence),
                    _ => None,
                },
            )
            .flatten()
            .collect())
    }

    async fn pattern(
        &self,
        store: &TenantStore,
        proposal: &ProposalModel,
    ) -> Result<PatternAssessment, JobFailure> {
        let none = PatternAssessment {
            occurrences: 0,
            confidence: 0.0,
            matches: false,
        };
        let Some(value) = &proposal.pattern_value else {
            return Ok(none);
        };
        let character = store.inbox_message(proposal.inbox_id).await?.character;
        let Some(tool) = self
            .characters
            .get(&character)
            .ok()
            .and_then(|c| c.tool(&proposal.tool))
        else {
            return Ok(none);
        };
        let history = store
            .executed_bodies(&proposal.tool, value, PATTERN_HISTORY)
            .await?;
        let body = proposal.request.body.clone().unwrap_or_default();
        Ok(assess_pattern(&history, &body, &tool.pattern_fields))
    }

    /// Asks the agent reviewer, when one is deployed.
    async fn agent_review(
        &self,
        card: &ReviewCard<'_>,
        decision: &AutoApproval,
    ) -> Result<Option<AgentReview>, JobFailure> {
        let Ok(reviewer) = self.characters.get(AGENT_REVIEWER) else {
            return Ok(None);
        };
        let policy = match decision {
            AutoApproval::Approve => "a trusted pattern allows approval without a human".to_owned(),
            AutoApproval::Review(why) => format!("a human must decide: {why}"),
        };
        let messages = prompt::compose(
            reviewer,
            &PromptContext {
                message: &agent_brief(card, &policy),
                ..Default::default()
            },
        );
        let completion = self
            .llm
            .complete(&CompletionRequest {
                model: reviewer
                    .model
                    .name
                    .as_deref()
                    .unwrap_or(&self.default_model),
                messages: &messages,
                functions: &[],
                temperature: reviewer.model.temperature,
                max_output_tokens: reviewer.model.max_output_tokens,
            })
            .await?;
        let (verdict, notes) =
            parse_verdict(completion.answer.content.as_deref().unwrap_or_default());
        Ok(Some(AgentReview {
            verdict,
            notes,
            model: completion.model,
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
        }))
    }
}

/// The job that follows a review.
enum FollowUp {
    Worker(WorkerJob),
    Delivery(DeliveryJob),
}

impl From<WorkerJob> for FollowUp {
    fn from(job: WorkerJob) -> Self {
        Self::Worker(job)
    }
}

impl From<DeliveryJob> for FollowUp {
    fn from(job: DeliveryJob) -> Self {
        Self::Delivery(job)
    }
}
