//! ReviewManager: decides how a new proposal is reviewed. The learned
//! pattern and the tenant's limit decide whether auto-approval is allowed;
//! the agent reviewer (Review-E) looks first and can only narrow that — it
//! flags to humans, it never approves what the policy would not.

use std::sync::Arc;

use shared::access::queue::JobQueue;
use shared::access::store::{ProposalChanges, ProposalModel, Store, TenantStore};
use shared::character::Characters;
use shared::engine::proposal::{AutoApproval, Transition, assess_pattern, auto_approval, next};
use shared::event::{Actor, ActorKind, AutoApproved, ProposalEvent, ReviewRequested};
use shared::ids::{ProposalId, TenantId};
use shared::job::{DeliveryJob, Job, JobFailure, WorkerJob};
use shared::proposal::{AgentVerdict, PatternAssessment, ProposalState};

use super::reviewer::{AgentReviewer, evidence};

/// Executed proposals read to learn a pattern.
const PATTERN_HISTORY: i64 = 50;

/// Reviews new proposals.
#[derive(Debug, Clone)]
pub struct ReviewManager {
    store: Store,
    queue: JobQueue,
    characters: Arc<Characters>,
    reviewer: AgentReviewer,
}

impl ReviewManager {
    /// A manager over its clients.
    pub fn new(
        store: Store,
        queue: JobQueue,
        characters: Arc<Characters>,
        reviewer: AgentReviewer,
    ) -> Self {
        Self {
            store,
            queue,
            characters,
            reviewer,
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
        let evidence = evidence(&store, id).await?;
        let pattern = self.pattern(&store, &proposal).await?;
        let decision = auto_approval(
            &pattern,
            proposal.amount_minor,
            policy.auto_approve_limit_minor,
        );
        let card = proposal.review_card("", &evidence, false);
        // Review-E gates an auto-approval here; a proposal for humans gets
        // its notes when it reacts to the review_requested event (`annotate`).
        let agent = match decision {
            AutoApproval::Approve => self.reviewer.review(&store, &card, &decision).await?,
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
        // A proposal for humans waits only so long (its tool's window).
        let review_hours = match transition {
            Transition::RequestReview => Some(tx.review_hours(&proposal.tool).await?),
            _ => None,
        };
        tx.record(
            &event(&follow_event, system),
            ProposalChanges {
                state: Some(state),
                review_hours,
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
            .executed_arguments(&proposal.tool, value, PATTERN_HISTORY)
            .await?;
        Ok(assess_pattern(
            &history,
            &proposal.request.arguments,
            &tool.pattern_fields,
        ))
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
