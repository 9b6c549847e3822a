//! AgentReviewer: Review-E's look at a proposal, for the two managers that
//! ask for it — before an auto-approval (ReviewManager) and as notes for the
//! humans once review is requested (RunManager). Review-E flags, it never
//! decides; its verdict is recorded on the proposal and its model calls are
//! counted against the tenant's budget.

use chrono::Utc;
use shared::access::store::{ProposalChanges, TenantStore};
use shared::engine::prompt::{self, PromptContext, ToolCall};
use shared::engine::proposal::{AutoApproval, parse_verdict};
use shared::engine::review::{ReviewCard, agent_brief, agent_note};
use shared::engine::turn;
use shared::event::{Actor, ActorKind, AgentReviewed, Evidence, ProposalEvent, proposal_stream};
use shared::ids::ProposalId;
use shared::job::JobFailure;
use shared::proposal::{AgentVerdict, ProposalState};

use super::AgentContext;
use super::agent_loop::{AgentLoop, LoopSink, ModelCall, Stop};

/// The character that reviews proposals before humans do, when deployed.
pub const AGENT_REVIEWER: &str = "review-e";

/// The agent reviewer's verdict, with what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReview {
    /// Approve or flag.
    pub verdict: AgentVerdict,
    /// What a human reviewer should know.
    pub notes: String,
    model: String,
    input_tokens: u32,
    output_tokens: u32,
}

impl AgentReview {
    /// The `agent_reviewed` event recording this review, and its actor.
    pub fn recorded(&self) -> (ProposalEvent, Actor) {
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

/// Asks Review-E about proposals.
#[derive(Debug, Clone)]
pub struct AgentReviewer {
    agents: AgentContext,
}

impl AgentReviewer {
    /// A reviewer over the agents' model endpoint and characters.
    pub fn new(agents: AgentContext) -> Self {
        Self { agents }
    }

    /// Review-E's verdict on `card` under the policy's `decision`; `None`
    /// when Review-E is not deployed. A spent budget is a flag: a human
    /// looks instead.
    pub async fn review(
        &self,
        store: &TenantStore,
        card: &ReviewCard<'_>,
        decision: &AutoApproval,
    ) -> Result<Option<AgentReview>, JobFailure> {
        let Ok(reviewer) = self.agents.characters.get(AGENT_REVIEWER) else {
            return Ok(None);
        };
        let policy = match decision {
            AutoApproval::Approve => "a trusted pattern allows approval without a human".to_owned(),
            AutoApproval::Review(why) => format!("a human must decide: {why}"),
        };
        // The receipts the writes upload: Review-E checks them against the
        // writes.
        let receipts: Vec<_> = card.plan.files().cloned().collect();
        let files = super::inline_files(store, &receipts).await?;
        let messages = prompt::compose(
            reviewer,
            &PromptContext {
                message: &agent_brief(card, &policy),
                files: &files,
                ..Default::default()
            },
        );
        let budget = store.token_budget(Utc::now().date_naive()).await?;
        let end = AgentLoop::single_answer(&self.agents, reviewer)
            .run(messages, budget, &mut ReviewSink { store })
            .await?;
        let (verdict, notes) = match end.stop {
            Stop::BudgetSpent => (
                AgentVerdict::Flag,
                "Review-E did not look: the company's model budget for today is used up."
                    .to_owned(),
            ),
            Stop::Answered | Stop::RoundLimit => parse_verdict(&end.text),
        };
        let tokens = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        // No model was called: the usage report counts reviews with a model.
        let model = if end.llm_calls == 0 {
            String::new()
        } else {
            end.model
        };
        Ok(Some(AgentReview {
            verdict,
            notes,
            model,
            input_tokens: tokens(end.input_tokens),
            output_tokens: tokens(end.output_tokens),
        }))
    }

    /// Review-E's notes on a proposal waiting for humans, once: records its
    /// verdict on the proposal and returns the note for the review thread;
    /// `None` when it was reviewed already or is decided.
    pub async fn annotate(
        &self,
        store: &TenantStore,
        id: ProposalId,
        reason: &str,
    ) -> Result<Option<String>, JobFailure> {
        let proposal = store.proposal(id).await?;
        let types = [
            ProposalEvent::REVIEW_REQUESTED,
            ProposalEvent::AGENT_REVIEWED,
        ];
        let mut reviewed_before_request = false;
        let mut requested = false;
        for e in store.read_stream(&proposal_stream(id), &types).await? {
            match ProposalEvent::from_stored(&e.type_name, e.payload) {
                Some(ProposalEvent::ReviewRequested(_)) => requested = true,
                // An annotation an earlier attempt recorded, whose run did not
                // get to write the note: the same note again (the run's own
                // keys keep it to one).
                Some(ProposalEvent::AgentReviewed(a)) if requested => {
                    return Ok(Some(agent_note(&a.verdict, &a.notes)));
                }
                // The review that gated an auto-approval: shown with the card.
                Some(ProposalEvent::AgentReviewed(_)) => reviewed_before_request = true,
                _ => {}
            }
        }
        if reviewed_before_request || proposal.state() != ProposalState::ReviewRequested {
            return Ok(None);
        }
        let evidence = evidence(store, id).await?;
        let card = proposal.review_card(reason, &evidence, false);
        let decision = AutoApproval::Review(reason.to_owned());
        let Some(agent) = self.review(store, &card, &decision).await? else {
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
        Ok(Some(agent_note(&agent.verdict, &agent.notes)))
    }
}

/// The reads proposal `id` rests on.
pub async fn evidence(store: &TenantStore, id: ProposalId) -> Result<Vec<Evidence>, JobFailure> {
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

/// Review-E's single model call: its tokens are added to the tenant's usage.
struct ReviewSink<'a> {
    store: &'a TenantStore,
}

impl LoopSink for ReviewSink<'_> {
    async fn answered(&mut self, call: &ModelCall<'_>) -> Result<(), JobFailure> {
        call.add_to_usage(self.store).await
    }

    async fn call(&mut self, _call: &ToolCall) -> Result<String, JobFailure> {
        Ok(turn::refusal("the reviewer has no tools"))
    }

    fn refused(&mut self, _call: &ToolCall) -> String {
        turn::over_round_limit()
    }
}
