//! ReviewDesk: the reviewers' side of proposals in Slack — posts the review
//! card, records Approve / Reject decisions (authorized, not the proposer's
//! own, bound to the payload shown), updates the card so nobody can click
//! twice, and forwards questions in the review thread to the owner.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use shared::access::queue::JobQueue;
use shared::access::slack::SlackClient;
use shared::access::store::{ProposalChanges, ProposalModel, Store, StoredEvent, TenantStore};
use shared::engine::files::{FileLink, LINK_TTL_SECS};
use shared::engine::proposal::{DecisionCheck, Transition, check_decision, next};
use shared::engine::review::{
    DecisionView, MAX_REASON_CHARS, ReviewCard, agent_note, decided_card, expired_card,
    notice_expired, notice_rejected, notice_reviewer_comment, page_card, parse_action_value,
    reject_modal, review_card, review_platform, review_reminder,
};
use shared::engine::review_clock::ReviewDue;
use shared::event::{
    Actor, ActorKind, AgentReviewed, Decided, DecisionRefused, Evidence, Expired, ProposalEvent,
    ReviewPosted, ReviewReminded, proposal_stream,
};
use shared::ids::{Platform, ProposalId, TenantId};
use shared::job::{Job, JobFailure, WorkerJob};
use shared::proposal::{AgentVerdict, DecisionRefusal, ProposalState};

use super::ingest::InboundLimiter;
use super::page::PageBell;

/// Cards the chat page shows, newest first.
const PAGE_CARDS: i64 = 20;
use slack_morphism::prelude::SlackBlock;

/// A message posted in a thread of the review channel.
#[derive(Debug, Clone, Copy)]
pub struct ThreadReply<'a> {
    pub channel: &'a str,
    /// The thread's parent (a card, if it is one).
    pub thread_ts: &'a str,
    pub message_ts: &'a str,
    /// Its author's Slack user id.
    pub author: &'a str,
    pub text: &'a str,
}

/// A reviewer's click or submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click<'a> {
    /// The reviewer's Slack user id.
    pub user: &'a str,
    /// The channel the card is in (for a private answer).
    pub channel: Option<&'a str>,
    /// The button value or modal metadata (`proposal:sha256`).
    pub value: &'a str,
}

/// What the proposal's stream says beyond the projection.
#[derive(Debug, Default)]
struct History {
    evidence: Vec<Evidence>,
    reason: String,
    agent: Option<AgentReviewed>,
}

impl History {
    /// Read from the proposal's events.
    fn of(events: Vec<StoredEvent>) -> Self {
        let mut history = Self::default();
        for event in events {
            match ProposalEvent::from_stored(&event.type_name, event.payload) {
                Some(ProposalEvent::Proposed(p)) => history.evidence = p.evidence,
                Some(ProposalEvent::ReviewRequested(r)) => history.reason = r.reason,
                Some(ProposalEvent::AgentReviewed(a)) => history.agent = Some(a),
                _ => {}
            }
        }
        history
    }
}

/// Where reviewers' links to receipts point, and the key they are signed
/// with.
#[derive(Clone)]
pub struct ReceiptLinks {
    /// The gateway's public base URL.
    pub public_url: String,
    /// The signing key.
    pub secret: SecretString,
}

impl std::fmt::Debug for ReceiptLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLinks")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// The reviewers' desk.
#[derive(Debug, Clone)]
pub struct ReviewDesk {
    store: Store,
    queue: JobQueue,
    /// Reviews happen in Slack: without it there are no cards.
    slack: Option<SlackClient>,
    links: Option<ReceiptLinks>,
    /// Replies in review threads count against the inbound limits.
    limiter: InboundLimiter,
    /// Rung when a card on the chat page changes.
    page: PageBell,
}

impl ReviewDesk {
    /// A desk over the store, the queue and the Slack client; with `links`,
    /// reviewers can open a proposal's receipts.
    pub fn new(
        store: Store,
        queue: JobQueue,
        slack: Option<SlackClient>,
        links: Option<ReceiptLinks>,
        limiter: InboundLimiter,
        page: PageBell,
    ) -> Self {
        Self {
            store,
            queue,
            slack,
            links,
            limiter,
            page,
        }
    }

    /// The store of the proposal's tenant.
    async fn proposal_store(&self, id: ProposalId) -> Result<TenantStore, JobFailure> {
        let tenant = self
            .store
            .proposal_tenant(id)
            .await?
            .ok_or_else(|| JobFailure::Permanent(anyhow::anyhow!("no proposal {id}")))?;
        Ok(self.store.tenant(tenant))
    }

    async fn history(store: &TenantStore, id: ProposalId) -> Result<History, JobFailure> {
        Ok(History::of(
            store.read_stream(&proposal_stream(id), &[]).await?,
        ))
    }

    /// The Slack client; a permanent failure when Slack is off.
    fn slack(&self) -> Result<&SlackClient, JobFailure> {
        self.slack.as_ref().ok_or_else(|| {
            JobFailure::Permanent(anyhow::anyhow!(
                "review cards need Slack: set AE_SLACK__SIGNING_SECRET and AE_SLACK__BOT_TOKEN"
            ))
        })
    }

    /// Posts the review card to the tenant's review channel (once), with the
    /// agent reviewer's notes in its thread.
    pub async fn post_review(&self, tenant: TenantId, id: ProposalId) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let proposal = store.proposal(id).await?;
        if proposal.review_ts.is_some() || proposal.state() != ProposalState::ReviewRequested {
            return Ok(());
        }
        let policy = store.tenant_policy().await?;
        let channel = policy.review_channel.ok_or_else(|| {
            JobFailure::Permanent(anyhow::anyhow!("the tenant has no review channel"))
        })?;
        if review_platform(&channel) == Platform::Web {
            return self.show_on_page(&store, &proposal, channel).await;
        }
        let slack = self.slack()?;
        let history = Self::history(&store, id).await?;
        let card = proposal.review_card(&history.reason, &history.evidence, self.links.is_some());
        // Slack takes no idempotency key: an earlier attempt may have posted
        // the card and lost Slack's answer. Read it back before posting again.
        let ts = match store.mark_review_posting(id).await? {
            Some(since) => self.posted_card(&channel, id, since).await?,
            None => None,
        };
        let ts = match ts {
            Some(ts) => ts,
            None => {
                let (text, blocks) = review_card(&card);
                slack.post_blocks(&channel, &text, blocks).await?
            }
        };
        Self::record_posted(&store, &proposal, channel.clone(), ts.clone()).await?;
        if let Some(agent) = history.agent {
            let note = agent_note(&agent.verdict, &agent.notes);
            if let Err(e) = slack.post_message(&channel, Some(&ts), &note).await {
                tracing::warn!(error = %e, "Cannot post Review-E's notes");
            }
        }
        Ok(())
    }

    /// Records where the card of `proposal` is (its thread).
    async fn record_posted(
        store: &TenantStore,
        proposal: &ProposalModel,
        channel: String,
        ts: String,
    ) -> Result<(), JobFailure> {
        let mut tx = store.lock_proposal(proposal.id).await?;
        let posted = ProposalEvent::ReviewPosted(ReviewPosted {
            channel: channel.clone(),
            ts: ts.clone(),
        });
        let system = Actor {
            kind: ActorKind::System,
            id: "review-desk".to_owned(),
        };
        tx.record(
            &proposal.event(&posted, system, None, "gateway"),
            ProposalChanges {
                review_message: Some((channel, ts)),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A card on the chat page is the proposal itself, read by the page:
    /// its thread is named after the proposal, and the page is told.
    async fn show_on_page(
        &self,
        store: &TenantStore,
        proposal: &ProposalModel,
        channel: String,
    ) -> Result<(), JobFailure> {
        Self::record_posted(store, proposal, channel, proposal.id.to_string()).await?;
        self.page.ring();
        Ok(())
    }

    /// The newest cards of review channel `channel` on the chat page, with
    /// their state and who decided.
    pub async fn page_cards(
        &self,
        store: &TenantStore,
        channel: &str,
    ) -> Result<Vec<serde_json::Value>, JobFailure> {
        let mut cards = Vec::new();
        for proposal in store
            .proposals_in_review_channel(channel, PAGE_CARDS)
            .await?
        {
            let history = Self::history(store, proposal.id).await?;
            let card = page_card(&proposal.review_card(&history.reason, &history.evidence, false));
            let agent = history.agent.map(|a| agent_note(&a.verdict, &a.notes));
            cards.push(serde_json::json!({
                "card": card,
                "thread": proposal.review_ts,
                "state": proposal.state().as_str(),
                "decided_by": proposal.decided_by,
                "deadline": proposal.review_deadline,
                "agent": agent,
            }));
        }
        Ok(cards)
    }

    /// The `ts` of proposal `id`'s card, if one was posted to `channel`
    /// since `since` (its buttons carry the proposal's id).
    async fn posted_card(
        &self,
        channel: &str,
        id: ProposalId,
        since: chrono::DateTime<Utc>,
    ) -> Result<Option<String>, JobFailure> {
        let margin = chrono::Duration::seconds(10);
        let messages = self.slack()?.history_since(channel, since - margin).await?;
        let reference = format!("\"{id}:");
        Ok(messages
            .iter()
            .find(|m| m["blocks"].to_string().contains(&reference))
            .and_then(|m| m["ts"].as_str().map(str::to_owned)))
    }

    /// Approve: records the decision and queues the execution.
    pub async fn approve(&self, click: &Click<'_>) -> Result<(), JobFailure> {
        let refused = self
            .decide(Platform::Slack, click.user, click.value, true, None)
            .await?;
        self.tell_refusal(click, refused);
        Ok(())
    }

    /// Reject, first step: asks for a reason in a modal (only of someone who
    /// may decide).
    pub async fn ask_reject_reason(
        &self,
        click: &Click<'_>,
        trigger_id: &str,
    ) -> Result<(), JobFailure> {
        let Some((id, sha)) = parse_action_value(click.value) else {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "malformed proposal reference"
            )));
        };
        let store = self.proposal_store(id).await?;
        let proposal = store.proposal(id).await?;
        let reviewers = store.tenant_policy().await?.reviewers;
        let reviewer = format!("slack:{}", click.user);
        let same_person = store.same_person(&proposal.proposer, &reviewer).await?;
        match may_decide(&proposal, &reviewers, &reviewer, same_person, &sha) {
            Ok(()) => Ok(self
                .slack()?
                .open_view(trigger_id, reject_modal(id, &sha))
                .await?),
            Err(refusal) => {
                self.tell_reviewer(click, &refusal);
                Ok(())
            }
        }
    }

    /// Reject, second step: the reason was submitted.
    pub async fn reject(&self, click: &Click<'_>, reason: &str) -> Result<(), JobFailure> {
        let reason: String = reason.trim().chars().take(MAX_REASON_CHARS).collect();
        let refused = self
            .decide(
                Platform::Slack,
                click.user,
                click.value,
                false,
                Some(reason),
            )
            .await?;
        self.tell_refusal(click, refused);
        Ok(())
    }

    /// A decision made on the chat page by page user `user` on the card
    /// whose buttons carry `value`: why it did not count, if it did not.
    pub async fn decide_on_page(
        &self,
        user: &str,
        value: &str,
        approved: bool,
        reason: Option<&str>,
    ) -> Result<Option<DecisionRefusal>, JobFailure> {
        let reason = reason.map(|r| r.trim().chars().take(MAX_REASON_CHARS).collect());
        self.decide(Platform::Web, user, value, approved, reason)
            .await
    }

    /// Records `user`'s decision on the card whose buttons carry `value`
    /// (or the refusal, which it returns), and queues the execution of an
    /// approved write.
    async fn decide(
        &self,
        platform: Platform,
        user: &str,
        value: &str,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Option<DecisionRefusal>, JobFailure> {
        let Some((id, seen_sha)) = parse_action_value(value) else {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "malformed proposal reference"
            )));
        };
        let store = self.proposal_store(id).await?;
        let reviewer = format!("{platform}:{user}");
        let actor = Actor {
            kind: ActorKind::Reviewer,
            id: reviewer.clone(),
        };
        let mut tx = store.lock_proposal(id).await?;
        let proposal = tx.proposal.clone();
        let reviewers = tx.tenant_policy().await?.reviewers;
        let history = History::of(tx.read_stream(&proposal_stream(id), &[]).await?);
        let same_person = tx.same_person(&proposal.proposer, &reviewer).await?;
        if let Err(refusal) = may_decide(&proposal, &reviewers, &reviewer, same_person, &seen_sha) {
            let refused = ProposalEvent::DecisionRefused(DecisionRefused {
                reviewer,
                refusal: refusal.clone(),
            });
            tx.record(
                &proposal.event(&refused, actor, None, "gateway"),
                ProposalChanges::default(),
            )
            .await?;
            tx.commit().await?;
            metrics::counter!("automate_e_review_refusals_total").increment(1);
            return Ok(Some(refusal));
        }
        let transition = if approved {
            Transition::Approve
        } else {
            Transition::Reject
        };
        let state = next(proposal.state(), transition)
            .map_err(|e| JobFailure::permanent(e, "Invalid decision"))?;
        let agent_agreed = history
            .agent
            .as_ref()
            .map(|a| (a.verdict == AgentVerdict::Approve) == approved);
        let decided = ProposalEvent::Decided(Decided {
            approved,
            reviewer: reviewer.clone(),
            payload_sha256: proposal.payload_sha256.clone(),
            reason: reason.clone(),
            agent_agreed,
        });
        let changes = ProposalChanges {
            state: Some(state),
            decided_by: Some(reviewer),
            ..Default::default()
        };
        tx.record(&proposal.event(&decided, actor, None, "gateway"), changes)
            .await?;
        let notice = match &reason {
            Some(reason) if !approved => {
                tx.notify_conversation(
                    &format!("decision:{id}"),
                    &notice_rejected(&proposal.tool, id, reason),
                )
                .await?
            }
            _ => None,
        };
        tx.commit().await?;
        metrics::counter!("automate_e_proposals_total", "state" => state.as_str()).increment(1);
        if let Some(agreed) = agent_agreed {
            metrics::counter!("automate_e_agent_review_agreement_total", "agreed" => agreed.to_string()).increment(1);
        }
        if approved {
            self.queue
                .enqueue(Job::new(
                    store.tenant_id(),
                    &shared::telemetry::current_traceparent(),
                    WorkerJob::ExecuteV1 { proposal_id: id },
                ))
                .await
                .map_err(|e| JobFailure::retryable(e, "Cannot enqueue the execution"))?;
        }
        self.deliver_notice(&store, notice).await?;
        self.show_decision(
            &proposal,
            &history,
            DecisionView {
                approved,
                reviewer: user,
                at: Utc::now(),
                reason: reason.as_deref(),
            },
        )
        .await;
        Ok(None)
    }

    /// Does what is due for a proposal waiting for a reviewer: a reminder in
    /// its card's thread, an escalation (mentioning the escalation reviewers,
    /// or all when none are named), or its expiry (recorded, the owner told,
    /// the card closed). Each is written with its notice in one transaction.
    pub async fn review_due(&self, tenant: TenantId, id: ProposalId) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let policy = store.tenant_policy().await?;
        let mut tx = store.lock_proposal(id).await?;
        let proposal = tx.proposal.clone();
        let now = Utc::now();
        let due = proposal
            .review_clock()
            .filter(|_| proposal.state() == ProposalState::ReviewRequested)
            .and_then(|clock| Some((clock.deadline, clock.due(now)?)));
        let Some((deadline, due)) = due else {
            return Ok(());
        };
        let system = Actor {
            kind: ActorKind::System,
            id: "review-clock".to_owned(),
        };
        if due == ReviewDue::Expire {
            let expired = ProposalEvent::Expired(Expired { deadline });
            let state = next(proposal.state(), Transition::Expire)
                .map_err(|e| JobFailure::permanent(e, "Invalid expiry"))?;
            let changes = ProposalChanges {
                state: Some(state),
                ..Default::default()
            };
            tx.record(&proposal.event(&expired, system, None, "gateway"), changes)
                .await?;
            let notice = tx
                .notify_conversation(
                    &format!("expired:{id}"),
                    &notice_expired(&proposal.tool, id),
                )
                .await?;
            tx.commit().await?;
            metrics::counter!("automate_e_proposals_total", "state" => state.as_str()).increment(1);
            self.deliver_notice(&store, notice).await?;
            let history = Self::history(&store, id).await?;
            self.close_card(&proposal, &history, |card| expired_card(card, deadline))
                .await;
            return Ok(());
        }
        let escalated = due == ReviewDue::Escalate;
        let mentioned = if escalated && !policy.escalation_reviewers.is_empty() {
            policy.escalation_reviewers
        } else {
            policy.reviewers
        };
        let note = review_reminder(&mentioned, deadline, escalated);
        let reminded = ProposalEvent::ReviewReminded(ReviewReminded {
            escalated,
            mentioned,
        });
        let changes = ProposalChanges {
            reminded: true,
            escalated,
            ..Default::default()
        };
        tx.record(&proposal.event(&reminded, system, None, "gateway"), changes)
            .await?;
        let notice = tx
            .notify_review_thread(&format!("{}:{id}", due.as_str()), &note)
            .await?;
        tx.commit().await?;
        self.deliver_notice(&store, notice).await
    }

    /// Replaces the card's buttons with who decided and when.
    async fn show_decision(
        &self,
        proposal: &ProposalModel,
        history: &History,
        decision: DecisionView<'_>,
    ) {
        self.close_card(proposal, history, |card| decided_card(card, &decision))
            .await;
    }

    /// Replaces the card with `closed` (no buttons); a card that cannot be
    /// updated keeps its buttons, which then refuse.
    async fn close_card(
        &self,
        proposal: &ProposalModel,
        history: &History,
        closed: impl FnOnce(&ReviewCard<'_>) -> (String, Vec<SlackBlock>),
    ) {
        let (Some(channel), Some(ts)) = (&proposal.review_channel, &proposal.review_ts) else {
            return;
        };
        if review_platform(channel) == Platform::Web {
            self.page.ring();
            return;
        }
        let card = proposal.review_card(&history.reason, &history.evidence, false);
        let (text, blocks) = closed(&card);
        let Some(slack) = &self.slack else {
            return;
        };
        if let Err(e) = slack.update_message(channel, ts, &text, blocks).await {
            tracing::warn!(error = %e, "Cannot update the review card");
        }
    }

    /// Gives a reviewer of the proposal's tenant, privately, a link to each
    /// file its writes upload, for ten minutes; anyone else is told they
    /// are not a reviewer.
    pub async fn show_receipts(&self, click: &Click<'_>) -> Result<(), JobFailure> {
        let Some((id, _)) = parse_action_value(click.value) else {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "malformed proposal reference"
            )));
        };
        let Some(links) = &self.links else {
            return Ok(());
        };
        let store = self.proposal_store(id).await?;
        let proposal = store.proposal(id).await?;
        let reviewer = format!("slack:{}", click.user);
        if !store.tenant_policy().await?.reviewers.contains(&reviewer) {
            self.tell_reviewer(click, &DecisionRefusal::NotAReviewer);
            return Ok(());
        }
        let expires = Utc::now().timestamp() + LINK_TTL_SECS;
        let lines: Vec<String> = proposal
            .request
            .files()
            .map(|file| {
                let link = FileLink {
                    tenant: store.tenant_id(),
                    sha256: &file.sha256,
                    expires,
                    reviewer: &reviewer,
                };
                let signature = link.signature(links.secret.expose_secret().as_bytes());
                let query = serde_urlencoded::to_string([
                    ("expires", expires.to_string()),
                    ("reviewer", reviewer.clone()),
                    ("signature", signature),
                ])
                .unwrap_or_default();
                format!(
                    "• <{}/files/{}/{}?{query}|{}> ({}, {} KB)",
                    links.public_url.trim_end_matches('/'),
                    store.tenant_id(),
                    file.sha256,
                    file.filename,
                    file.content_type,
                    file.size_bytes.div_ceil(1024)
                )
            })
            .collect();
        self.tell(
            click,
            format!(
                "The receipts of proposal {id}, for you for {} minutes:\n{}",
                LINK_TTL_SECS / 60,
                lines.join("\n")
            ),
        );
        Ok(())
    }

    /// Tells only the clicker why their decision did not count.
    fn tell_reviewer(&self, click: &Click<'_>, refusal: &DecisionRefusal) {
        self.tell(click, refusal.to_string());
    }

    /// Tells the clicker of a decision that did not count why.
    fn tell_refusal(&self, click: &Click<'_>, refused: Option<DecisionRefusal>) {
        if let Some(refusal) = refused {
            self.tell_reviewer(click, &refusal);
        }
    }

    /// Tells only the clicker `text`.
    fn tell(&self, click: &Click<'_>, text: String) {
        let (Some(channel), Some(slack)) = (click.channel.map(str::to_owned), self.slack.clone())
        else {
            return;
        };
        let user = click.user.to_owned();
        tokio::spawn(async move {
            if let Err(e) = slack.post_ephemeral(&channel, &user, &text).await {
                tracing::warn!(error = %e, "Cannot tell the reviewer");
            }
        });
    }

    /// A reply in a review card's thread reaches the proposal's conversation;
    /// `false` when the thread is not a review card's.
    pub async fn forward_thread_reply(&self, reply: &ThreadReply<'_>) -> Result<bool, JobFailure> {
        let ThreadReply {
            channel,
            thread_ts,
            message_ts,
            author,
            text,
        } = *reply;
        let Some(tenant) = self.store.review_tenant(channel).await? else {
            return Ok(false);
        };
        let store = self.store.tenant(tenant);
        let Some(proposal) = store.proposal_by_review_message(channel, thread_ts).await? else {
            return Ok(false);
        };
        // Only a reviewer speaks for the company here, and no faster than
        // anybody may write.
        let reviewer = format!("slack:{author}");
        let outcome = if !store.tenant_policy().await?.reviewers.contains(&reviewer) {
            "not_a_reviewer"
        } else if !self
            .limiter
            .allows(tenant, store.settings().await?.limits(), author)
        {
            "limited"
        } else {
            "forwarded"
        };
        metrics::counter!("automate_e_review_comments_total", "outcome" => outcome).increment(1);
        if outcome != "forwarded" {
            return Ok(true);
        }
        let mut tx = store.lock_proposal(proposal.id).await?;
        let notice = tx
            .notify_conversation(
                &format!("comment:{channel}:{message_ts}"),
                &notice_reviewer_comment(text),
            )
            .await?;
        tx.commit().await?;
        self.deliver_notice(&store, notice).await?;
        Ok(true)
    }
}

/// Whether `reviewer` may decide on `proposal` having seen `seen_sha256`.
fn may_decide(
    proposal: &ProposalModel,
    reviewers: &[String],
    reviewer: &str,
    same_person: bool,
    seen_sha256: &str,
) -> Result<(), DecisionRefusal> {
    check_decision(&DecisionCheck {
        state: proposal.state(),
        payload_sha256: &proposal.payload_sha256,
        proposer: &proposal.proposer,
        reviewer,
        same_person,
        past_deadline: proposal
            .review_clock()
            .is_some_and(|clock| Utc::now() >= clock.deadline),
        reviewers,
        seen_sha256,
    })
}

impl ReviewDesk {
    /// Queues the delivery of a notice written to the owner's conversation.
    async fn deliver_notice(
        &self,
        store: &TenantStore,
        notice: Option<shared::ids::OutboxId>,
    ) -> Result<(), JobFailure> {
        match notice {
            Some(outbox_id) => {
                let traceparent = shared::telemetry::current_traceparent();
                self.queue
                    .deliver_outbox(store.tenant_id(), outbox_id, &traceparent)
                    .await
            }
            None => Ok(()),
        }
    }
}
