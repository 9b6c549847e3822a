//! ConversationManager: answers a conversation's messages, one turn at a
//! time across all workers and in arrival order, under a conversation lease
//! (see `store::lease`). A turn answers the oldest pending message, folded
//! with the same author's rapid follow-ups, and writes in as few
//! transactions as its guarantees allow (`docs/design.md`, "A turn's
//! writes").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use shared::access::accounting::AccountingTarget;
use shared::access::queue::JobQueue;
use shared::access::store::{
    CharacterMemory, InboxModel, Lease, NewEvent, ReplyParams, Store, StoreError, StoredEvent,
    StreamTail, TenantStore, TenantTx, TokenBudget, TurnContext, TurnStart, TurnStartParams,
};
use shared::character::Character;
use shared::engine::prompt::{self, ChatMessage, PromptContext, ToolCall};
use shared::engine::tool::{CallSite, Receipt, records_call_first};
use shared::engine::turn;
use shared::event::{
    Actor, ActorKind, Attachment, ConversationEvent, Evidence, LlmCalled, MessageReceived,
    ReplyComposed, TurnFailed, conversation_stream,
};
use shared::ids::{ConversationId, InboxId, OutboxId, ProposalId, TenantId};
use shared::job::{Job, JobFailure, WorkerJob};
use shared::request::FileRef;
use tokio_util::sync::CancellationToken;

use super::AgentContext;
use super::accounts::Accounts;
use super::agent_loop::{AgentLoop, LoopSink, ModelCall};
use super::tools::{CallContext, ToolRunner};

/// How often a job waiting for a busy conversation looks again.
const LEASE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The event types of a conversation's history shown to the model.
const HISTORY_TYPES: [&str; 2] = [
    ConversationEvent::MESSAGE_RECEIVED,
    ConversationEvent::REPLY_COMPOSED,
];

/// What a `message_received`'s dedupe key starts with (the inbox id follows).
const RECEIVED_KEY_PREFIX: &str = "message:";

/// Settings of a turn that come from config.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Time-to-live of a conversation lease (renewed at a third of it while
    /// the turn runs; a killed holder's lease frees after it).
    pub lease_ttl: Duration,
    /// How long a job waits for a busy conversation before it is retried.
    pub lease_wait: Duration,
}

/// What a turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The reply is in the outbox and its delivery is queued.
    Replied(OutboxId),
    /// The message was answered before (a redelivered job), or by another
    /// job's turn it was folded into.
    AlreadyDone,
}

/// How a job's turns ended.
struct Done {
    outcome: TurnOutcome,
    /// The conversation's proposals no review picked up yet, when the last
    /// turn gave the lease back with its reply (else `finish` does both).
    unreviewed: Option<Vec<ProposalId>>,
}

/// The conversation before a turn.
struct Past {
    /// Earlier user messages and replies, oldest first, without the messages
    /// being answered now: the character's retention (newest
    /// `history_messages`, none older than its `history_days`).
    history: Vec<ChatMessage>,
    /// The messages being answered now whose `message_received` is in the
    /// log already (an earlier attempt, or a give-up before a replay,
    /// recorded it).
    recorded: Vec<InboxId>,
    /// The stream's last version.
    version: i64,
    /// The receipts the owner sent earlier in the conversation.
    receipts: Vec<Receipt>,
}

/// A reply written by a turn.
struct Reply {
    outbox_id: OutboxId,
    /// As in [`Done`]: set when this turn also gave the lease back.
    unreviewed: Option<Vec<ProposalId>>,
}

/// Runs agent turns.
#[derive(Debug, Clone)]
pub struct ConversationManager {
    store: Store,
    queue: JobQueue,
    agents: AgentContext,
    tools: ToolRunner,
    accounts: Accounts,
    settings: TurnSettings,
    /// This process's name as a lease holder.
    holder: String,
    /// Each character's memory, as a turn's start reads it.
    memory: HashMap<String, CharacterMemory>,
}

/// A lease this worker holds, renewed in the background while it lives.
struct HeldLease {
    lease: Lease,
    /// Cancelled when a renewal finds the lease taken over: the turn stops
    /// before its next model call (its writes would be refused).
    lost: CancellationToken,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The running state of one turn: the stream version, shared event fields,
/// and the reads made so far (evidence for any proposal).
struct Turn<'a> {
    /// The first (oldest) message of the batch: the turn's lead (proposer,
    /// causation, proposal and reply dedupe).
    msg: &'a InboxModel,
    lease: Lease,
    /// Cancelled when the lease was found taken over.
    lease_lost: &'a CancellationToken,
    character: &'a Character,
    stream: String,
    version: i64,
    trace_id: Option<String>,
    evidence: Vec<Evidence>,
    /// The tenant's Accounting API.
    target: AccountingTarget,
    /// The tenant's company in it, once connected.
    company: Option<String>,
    /// The receipts the owner sent in the conversation, this turn's last.
    receipts: Vec<Receipt>,
    /// The tenant's token budget when the turn began.
    budget: TokenBudget,
    /// Events not written yet: written with the turn's next write.
    unwritten: Vec<NewEvent>,
    /// Tokens not added to the tenant's usage yet, by day.
    unwritten_tokens: Vec<(NaiveDate, i64)>,
}

impl Turn<'_> {
    fn event(
        &self,
        event: &ConversationEvent,
        actor: Actor,
        dedupe_key: Option<String>,
    ) -> NewEvent {
        new_event(self.msg, event, actor, dedupe_key, self.trace_id.clone())
    }

    fn agent(&self) -> Actor {
        Actor {
            kind: ActorKind::Agent,
            id: self.character.name.clone(),
        }
    }

    /// Writes the unwritten events in `tx`. They are new: a message's
    /// `message_received` already in the log is left out of them, and the
    /// other events are recorded once per attempt.
    async fn write_events(&mut self, tx: &mut TenantTx) -> Result<(), StoreError> {
        self.version = tx
            .append_new(&self.stream, self.version, &self.unwritten)
            .await?;
        Ok(())
    }

    /// Notes a model call's tokens, to be added to the tenant's usage with
    /// the turn's end.
    fn spend_tokens(&mut self, day: NaiveDate, tokens: i64) {
        match self.unwritten_tokens.iter_mut().find(|(d, _)| *d == day) {
            Some((_, sum)) => *sum = sum.saturating_add(tokens),
            None => self.unwritten_tokens.push((day, tokens)),
        }
    }
}

impl ConversationManager {
    /// A manager over its clients.
    pub fn new(
        store: Store,
        queue: JobQueue,
        agents: AgentContext,
        tools: ToolRunner,
        accounts: Accounts,
        settings: TurnSettings,
    ) -> Self {
        let memory = agents
            .characters
            .all()
            .map(|c| {
                let m = &c.memory;
                let memory = CharacterMemory {
                    facts: m.facts,
                    history_days: m.history_days,
                    history_messages: m.history_messages,
                };
                (c.name.clone(), memory)
            })
            .collect();
        Self {
            store,
            queue,
            agents,
            tools,
            accounts,
            settings,
            holder: shared::runner::unique_worker_name("turns"),
            memory,
        }
    }

    /// A turn's start for message `inbox_id`: taking the lease, or under
    /// the `held` one.
    fn start_params(&self, inbox_id: InboxId, held: Option<Lease>) -> TurnStartParams<'_> {
        TurnStartParams {
            inbox_id,
            holder: &self.holder,
            ttl: self.settings.lease_ttl,
            held,
            limit: i64::try_from(turn::MAX_FOLDED_MESSAGES).unwrap_or(i64::MAX),
            day: Utc::now().date_naive(),
            memory: &self.memory,
            history_types: &HISTORY_TYPES,
            received_key_prefix: RECEIVED_KEY_PREFIX,
        }
    }

    /// Answers one inbox message, at most once: waits for the conversation's
    /// lease, then answers its pending messages oldest first until this one
    /// is answered (by its own turn or folded into an earlier one). On
    /// `shutdown` it stops between turns and hands the rest back.
    pub async fn run_turn(
        &self,
        tenant: TenantId,
        inbox_id: InboxId,
        traceparent: &str,
        shutdown: &CancellationToken,
    ) -> Result<TurnOutcome, JobFailure> {
        let store = self.store.tenant(tenant);
        let TurnStart {
            message: msg,
            lease,
            context,
        } = self.claim(&store, inbox_id).await?;
        let mut done = Done {
            outcome: TurnOutcome::AlreadyDone,
            unreviewed: None,
        };
        if let (Some(lease), Some(context)) = (lease, context) {
            let held = self.keep_renewed(lease);
            let answered = self
                .answer_until(&store, context, &held, inbox_id, traceparent, shutdown)
                .await;
            drop(held);
            match answered {
                Ok(answered) => done = answered,
                Err(e) => {
                    if let Err(release) =
                        Self::finish(&store, Some(lease), msg.conversation_id).await
                    {
                        tracing::warn!(error = %release, "Cannot release a conversation lease; it will expire");
                    }
                    return Err(e);
                }
            }
        }
        let unreviewed = match done.unreviewed {
            Some(ids) => ids,
            None => Self::finish(&store, lease, msg.conversation_id).await?,
        };
        self.review_proposals(tenant, unreviewed, traceparent)
            .await?;
        Ok(done.outcome)
    }

    /// Reads the message and takes its conversation's lease, waiting while
    /// another worker holds it, with the turn's context read under it; no
    /// lease when the message is answered.
    async fn claim(&self, store: &TenantStore, inbox_id: InboxId) -> Result<TurnStart, JobFailure> {
        let deadline = Instant::now() + self.settings.lease_wait;
        loop {
            let start = store.start_turn(&self.start_params(inbox_id, None)).await?;
            if start.message.processed_at.is_some() || start.lease.is_some() {
                return Ok(start);
            }
            if Instant::now() >= deadline {
                return Err(JobFailure::deferred(
                    anyhow::anyhow!("conversation {} is busy", start.message.conversation_id),
                    "Another worker holds the conversation",
                ));
            }
            tokio::time::sleep(LEASE_POLL_INTERVAL).await;
        }
    }

    /// Gives the lease back (if held) and lists the conversation's
    /// proposals no review picked up yet, in one transaction.
    async fn finish(
        store: &TenantStore,
        lease: Option<Lease>,
        conversation: ConversationId,
    ) -> Result<Vec<ProposalId>, StoreError> {
        let mut tx = store.begin().await?;
        let unreviewed = tx.hand_back(conversation, lease.as_ref()).await?;
        tx.commit().await?;
        Ok(unreviewed)
    }

    fn keep_renewed(&self, lease: Lease) -> HeldLease {
        let store = self.store.tenant(lease.tenant_id);
        let ttl = self.settings.lease_ttl;
        let lost = CancellationToken::new();
        let on_loss = lost.clone();
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew_lease(&lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("Conversation lease taken over; the turn stops");
                        on_loss.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot renew a conversation lease"),
                }
            }
        });
        HeldLease {
            lease,
            lost,
            renewal,
        }
    }

    /// Under the `held` lease, answers the conversation's pending messages
    /// oldest first until `own` is answered; `claimed` is the context read
    /// when the lease was taken.
    async fn answer_until(
        &self,
        store: &TenantStore,
        claimed: TurnContext,
        held: &HeldLease,
        own: InboxId,
        traceparent: &str,
        shutdown: &CancellationToken,
    ) -> Result<Done, JobFailure> {
        let mut claimed = Some(claimed);
        loop {
            // The claim read `own` unanswered just before taking the lease;
            // a later turn looks again.
            let mut context = match claimed.take() {
                Some(context) => context,
                None => {
                    let start = self.start_params(own, Some(held.lease));
                    match store.start_turn(&start).await?.context {
                        Some(context) => context,
                        None => {
                            return Ok(Done {
                                outcome: TurnOutcome::AlreadyDone,
                                unreviewed: None,
                            });
                        }
                    }
                }
            };
            let pending = std::mem::take(&mut context.pending);
            let authors: Vec<&str> = pending.iter().map(|m| m.author_id.as_str()).collect();
            // A message whose files the gateway is still fetching waits, and
            // so do the messages after it.
            let ready = pending
                .iter()
                .position(|m| m.attachments.iter().any(Attachment::is_pending))
                .unwrap_or(pending.len());
            let batch = &pending[..turn::fold_count(&authors).min(ready)];
            if batch.is_empty() && !pending.is_empty() {
                return Err(JobFailure::deferred(
                    anyhow::anyhow!("a message's files are being fetched"),
                    "The gateway has not stored the message's files yet",
                ));
            }
            let is_own = batch.iter().any(|m| m.id == own);
            match self
                .answer(store, context, held, batch, traceparent, is_own)
                .await
            {
                Ok(Some(reply)) if is_own => {
                    return Ok(Done {
                        outcome: TurnOutcome::Replied(reply.outbox_id),
                        unreviewed: reply.unreviewed,
                    });
                }
                // Answered, or a message was answered (given up) meanwhile:
                // look again.
                Ok(_) => {}
                Err(e) if is_own => return Err(e),
                // An earlier message's failure is its own job's to handle;
                // this one waits behind it.
                Err(e) => {
                    return Err(JobFailure::deferred(
                        anyhow::anyhow!("{e}"),
                        "An earlier message of the conversation is not answered yet",
                    ));
                }
            }
            if shutdown.is_cancelled() {
                return Err(JobFailure::retryable(
                    anyhow::anyhow!("the worker is stopping"),
                    "Turn handed back to the queue",
                ));
            }
        }
    }

    /// One turn for `batch` (a message and its folded follow-ups), with the
    /// `context` read under the `held` lease; `None` when another writer
    /// answered them first. The `last` turn of a job gives the lease back
    /// with its reply.
    async fn answer(
        &self,
        store: &TenantStore,
        context: TurnContext,
        held: &HeldLease,
        batch: &[InboxModel],
        traceparent: &str,
        last: bool,
    ) -> Result<Option<Reply>, JobFailure> {
        // The oldest message leads: the same on every retry of this turn,
        // so a proposal filed again is recognised (filed once per lead).
        let Some(msg) = batch.first() else {
            return Ok(None);
        };
        let character = self
            .agents
            .characters
            .get(&msg.character)
            .map_err(|e| JobFailure::permanent(e, "Cannot run the conversation's character"))?;
        if !character.takes_chat() {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "`{}` has no chat trigger; route the chat to an agent that takes chats",
                character.name
            )));
        }
        let TurnContext {
            settings: tenant,
            budget,
            facts,
            tail,
            ..
        } = context;
        let target = self.accounts.target(&tenant)?;
        let remembered_since = character
            .memory
            .history_days
            .map(|days| Utc::now() - chrono::Duration::days(i64::from(days)));
        let stream = conversation_stream(msg.conversation_id);
        let past = Self::past(tail, batch, character, remembered_since);
        let current: Vec<Receipt> = batch
            .iter()
            .flat_map(|m| stored_receipts(&m.attachments))
            .collect();
        let mut receipts = past.receipts;
        receipts.extend(current.iter().cloned());
        let mut turn = Turn {
            msg,
            lease: held.lease,
            lease_lost: &held.lost,
            character,
            stream,
            version: past.version,
            trace_id: shared::telemetry::trace_id(traceparent).map(str::to_owned),
            evidence: Vec::new(),
            target,
            company: tenant.accounting_company.clone(),
            receipts,
            budget,
            unwritten: Vec::new(),
            unwritten_tokens: Vec::new(),
        };
        // Recorded with the turn's first write.
        turn.unwritten = batch
            .iter()
            .filter(|m| !past.recorded.contains(&m.id))
            .map(|m| received(m, msg, turn.trace_id.clone()))
            .collect();

        let content = batch
            .iter()
            .map(|m| prompt::user_content(&m.text, &m.attachments))
            .collect::<Vec<_>>()
            .join("\n\n");
        // This turn's files, then the latest of the conversation's (an
        // answer to Book-E's question about a receipt sent before).
        let mut shown: Vec<FileRef> = Vec::new();
        for receipt in current.iter().chain(turn.receipts.iter().rev()) {
            if shown.len() < MAX_FILES_SHOWN && !shown.contains(&receipt.file) {
                shown.push(receipt.file.clone());
            }
        }
        let files = super::inline_files(store, &shown).await?;
        let messages = prompt::compose(
            character,
            &PromptContext {
                tenant_brief: Some(&tenant.brief),
                user_facts: &facts,
                history: &past.history,
                message: &content,
                files: &files,
            },
        );
        let replied = self
            .reply(store, &mut turn, batch, messages, traceparent, last)
            .await;
        if !matches!(replied, Ok(Some(_))) {
            Self::keep_what_was_spent(store, &mut turn).await;
        }
        replied
    }

    /// The model rounds of a turn and its end: the last events, the reply
    /// in the outbox (and, for the `last` turn, the lease given back) in one
    /// transaction, then the delivery queued.
    async fn reply(
        &self,
        store: &TenantStore,
        turn: &mut Turn<'_>,
        batch: &[InboxModel],
        messages: Vec<ChatMessage>,
        traceparent: &str,
        last: bool,
    ) -> Result<Option<Reply>, JobFailure> {
        let (msg, lease) = (turn.msg, turn.lease);
        let budget = turn.budget;
        let reply = AgentLoop::new(&self.agents, turn.character)
            .run(
                messages,
                budget,
                &mut TurnSink {
                    store,
                    tools: &self.tools,
                    turn,
                },
            )
            .await?
            .text;
        let outbox_id = OutboxId::new_v7();
        let composed = ConversationEvent::ReplyComposed(ReplyComposed {
            inbox_id: msg.id,
            outbox_id,
            text: reply.clone(),
        });
        // The turn's last events go in with the reply, in one statement;
        // they stay unwritten until the commit (a failed end records them
        // on its own).
        let mut events = turn.unwritten.clone();
        events.push(turn.event(&composed, turn.agent(), Some(format!("reply:{}", msg.id))));
        let params = ReplyParams {
            outbox_id,
            inbox_ids: batch.iter().map(|m| m.id).collect(),
            lease: Some(lease),
            dedupe_key: format!("reply:{}", msg.id),
            stream: turn.stream.clone(),
            expected_version: turn.version,
            events,
            text: reply,
        };
        let Some(unreviewed) = store
            .end_turn(&params, last, &turn.unwritten_tokens)
            .await?
        else {
            return Ok(None);
        };
        turn.unwritten.clear();
        turn.unwritten_tokens.clear();
        self.queue
            .deliver_outbox(msg.tenant_id, outbox_id, traceparent)
            .await?;
        Ok(Some(Reply {
            outbox_id,
            unreviewed: last.then_some(unreviewed),
        }))
    }

    /// Records what a turn that gave no reply got to (its messages, model
    /// calls and tool results; while it still holds the lease) and adds the
    /// tokens of its calls (they were paid for; the retried turn pays again),
    /// each in a transaction of its own. Best effort: a failure is only
    /// logged.
    async fn keep_what_was_spent(store: &TenantStore, turn: &mut Turn<'_>) {
        let events = std::mem::take(&mut turn.unwritten);
        if !events.is_empty() {
            let recorded = async {
                let mut tx = store.begin_fenced(&turn.lease).await?;
                let version = tx.stream_version(&turn.stream).await?;
                // A message answered by another turn meanwhile has its
                // `message_received`: skipped.
                tx.append(&turn.stream, version, &events).await?;
                tx.commit().await
            };
            if let Err(e) = recorded.await {
                tracing::warn!(error = %e, "Cannot record the steps of a failed turn");
            }
        }
        for (day, tokens) in turn.unwritten_tokens.drain(..) {
            if let Err(e) = store.add_token_usage(day, tokens).await {
                tracing::warn!(error = %e, tokens, "Cannot record the tokens of a failed turn");
            }
        }
    }

    /// Gives up on a message after its last attempt: under the
    /// conversation's lease, marks it answered with a notice to the user (so
    /// the conversation goes on), recorded as `turn_failed`. A no-op when it
    /// was answered meanwhile.
    pub async fn give_up(
        &self,
        tenant: TenantId,
        inbox_id: InboxId,
        reason: &str,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let TurnStart {
            message: msg,
            lease: Some(lease),
            context: Some(context),
        } = self.claim(&store, inbox_id).await?
        else {
            return Ok(());
        };
        let written = self
            .write_failure(&msg, lease, context.tail, reason, traceparent)
            .await;
        if let Err(e) = store.release_lease(&lease).await {
            tracing::warn!(error = %e, "Cannot release a conversation lease; it will expire");
        }
        let Some(outbox_id) = written? else {
            return Ok(());
        };
        self.queue
            .deliver_outbox(tenant, outbox_id, traceparent)
            .await
    }

    /// Answers `msg` with the failure notice; `tail` is its conversation's
    /// end, read under `lease`.
    async fn write_failure(
        &self,
        msg: &InboxModel,
        lease: Lease,
        tail: StreamTail,
        reason: &str,
        traceparent: &str,
    ) -> Result<Option<OutboxId>, JobFailure> {
        let store = self.store.tenant(msg.tenant_id);
        let stream = conversation_stream(msg.conversation_id);
        let trace_id = shared::telemetry::trace_id(traceparent).map(str::to_owned);
        let version = tail.version;
        let mut events = Vec::new();
        if !tail
            .keyed
            .iter()
            .any(|e| received_inbox_id(e) == Some(msg.id))
        {
            events.push(received(msg, msg, trace_id.clone()));
        }
        let outbox_id = OutboxId::new_v7();
        let failed = ConversationEvent::TurnFailed(TurnFailed {
            inbox_id: msg.id,
            outbox_id,
            reason: reason.to_owned(),
        });
        // Unique per give-up: a replayed turn may be given up again.
        let key = format!("turn-failed:{}:{outbox_id}", msg.id);
        let system = Actor {
            kind: ActorKind::System,
            id: "worker".to_owned(),
        };
        events.push(new_event(msg, &failed, system, Some(key.clone()), trace_id));
        let params = ReplyParams {
            outbox_id,
            inbox_ids: vec![msg.id],
            lease: Some(lease),
            dedupe_key: key,
            expected_version: version,
            stream,
            events,
            text: turn::TURN_FAILED_REPLY.to_owned(),
        };
        Ok(store.complete_turn(&params).await?.then_some(outbox_id))
    }

    /// Queues the review of the conversation's proposals no review picked up
    /// yet (again after a crash: the queue drops a job it already holds).
    async fn review_proposals(
        &self,
        tenant: TenantId,
        unreviewed: Vec<ProposalId>,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        for proposal_id in unreviewed {
            self.queue
                .enqueue(Job::new(
                    tenant,
                    traceparent,
                    WorkerJob::ReviewV1 { proposal_id },
                ))
                .await
                .map_err(|e| JobFailure::retryable(e, "Cannot enqueue a proposal review"))?;
        }
        Ok(())
    }

    /// The conversation before this turn, from the end of its stream
    /// (`tail`, read with the turn's start).
    fn past(
        tail: StreamTail,
        current: &[InboxModel],
        character: &Character,
        since: Option<chrono::DateTime<Utc>>,
    ) -> Past {
        let keep = usize::try_from(character.memory.history_messages).unwrap_or(usize::MAX);
        // The pending messages' own `message_received` (an earlier attempt
        // recorded them) were looked up by key; the history is the newest
        // events without the current ones. An event this version cannot
        // read takes its place in that window and is left out, so the
        // history can come out shorter than `keep`.
        let recorded: Vec<InboxId> = tail
            .keyed
            .iter()
            .filter_map(received_inbox_id)
            .filter(|id| current.iter().any(|c| c.id == *id))
            .collect();
        let mut past = Past {
            history: Vec::new(),
            recorded,
            version: tail.version,
            receipts: Vec::new(),
        };
        for e in tail.events {
            if received_inbox_id(&e).is_some_and(|id| current.iter().any(|c| c.id == id)) {
                continue;
            }
            let recent = since.is_none_or(|since| e.occurred_at >= since);
            match ConversationEvent::from_stored(&e.type_name, e.payload) {
                Some(ConversationEvent::MessageReceived(m)) if recent => {
                    past.receipts.extend(stored_receipts(&m.attachments));
                    past.history.push(ChatMessage::User {
                        content: prompt::user_content(&m.text, &m.attachments),
                        files: Vec::new(),
                    });
                }
                Some(ConversationEvent::ReplyComposed(r)) if recent => {
                    past.history.push(ChatMessage::Assistant {
                        content: Some(r.text),
                        tool_calls: vec![],
                    });
                }
                _ => {}
            }
        }
        past.history
            .drain(..past.history.len().saturating_sub(keep));
        let chars = usize::try_from(character.memory.history_chars).unwrap_or(usize::MAX);
        prompt::fit_history(&mut past.history, chars);
        past
    }
}

/// An event of the conversation `lead` belongs to, caused by `lead`.
fn new_event(
    lead: &InboxModel,
    event: &ConversationEvent,
    actor: Actor,
    dedupe_key: Option<String>,
    trace_id: Option<String>,
) -> NewEvent {
    NewEvent {
        tenant_id: lead.tenant_id,
        type_name: event.type_name(),
        payload: event.payload(),
        actor,
        occurred_at: Utc::now(),
        dedupe_key,
        correlation_id: Some(lead.conversation_id.0),
        causation_id: Some(lead.id.0),
        trace_id,
        source: "worker",
    }
}

/// The `message_received` of `m`, answered in the turn `lead` leads.
fn received(m: &InboxModel, lead: &InboxModel, trace_id: Option<String>) -> NewEvent {
    let event = ConversationEvent::MessageReceived(MessageReceived {
        inbox_id: m.id,
        conversation_id: m.conversation_id,
        text: m.text.clone(),
        attachments: m.attachments.0.clone(),
    });
    let user = Actor {
        kind: ActorKind::User,
        id: m.author_id.clone(),
    };
    new_event(lead, &event, user, Some(received_key(m.id)), trace_id)
}

/// The dedupe key of the `message_received` of inbox message `id`.
fn received_key(id: InboxId) -> String {
    format!("{RECEIVED_KEY_PREFIX}{id}")
}

/// The message a `message_received` records, told by its id alone, so one
/// this version cannot read whole still counts as recorded.
fn received_inbox_id(e: &StoredEvent) -> Option<InboxId> {
    (e.type_name == ConversationEvent::MESSAGE_RECEIVED)
        .then(|| serde_json::from_value::<InboxId>(e.payload["inbox_id"].clone()).ok())
        .flatten()
}

/// What a conversation's turn records of its model rounds: each call and
/// tool result as an event, written with the turn's next write; a round
/// that asks for a write or a builtin is written before that tool acts.
struct TurnSink<'a, 'b> {
    store: &'a TenantStore,
    tools: &'a ToolRunner,
    turn: &'a mut Turn<'b>,
}

impl TurnSink<'_, '_> {
    fn record(&mut self, event: &ConversationEvent) {
        let event = self.turn.event(event, self.turn.agent(), None);
        self.turn.unwritten.push(event);
    }
}

impl LoopSink for TurnSink<'_, '_> {
    async fn before_round(&mut self) -> Result<(), JobFailure> {
        // Its reads need no fence; the next call would be paid for nothing,
        // as the end's write would be refused.
        if self.turn.lease_lost.is_cancelled() {
            return Err(StoreError::LeaseLost.into());
        }
        Ok(())
    }

    async fn answered(&mut self, call: &ModelCall<'_>) -> Result<(), JobFailure> {
        let c = call.completion;
        self.record(&ConversationEvent::LlmCalled(LlmCalled {
            inbox_id: self.turn.msg.id,
            round: call.round,
            model: c.model.clone(),
            prompt_sha256: prompt::digest(call.prompt),
            response_id: c.response_id.clone(),
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            tool_calls: u32::try_from(c.answer.tool_calls.len()).unwrap_or(u32::MAX),
            duration_ms: u64::try_from(call.duration.as_millis()).unwrap_or(u64::MAX),
        }));
        self.turn.spend_tokens(call.day, call.tokens());
        Ok(())
    }

    async fn calling(&mut self, calls: &[ToolCall]) -> Result<(), JobFailure> {
        let turn = &mut *self.turn;
        if calls
            .iter()
            .any(|c| records_call_first(turn.character, &c.name))
        {
            let mut tx = self.store.begin_fenced(&turn.lease).await?;
            turn.write_events(&mut tx).await?;
            tx.commit().await?;
            // The tokens are added with the turn's end.
            turn.unwritten.clear();
        }
        Ok(())
    }

    async fn call(&mut self, call: &ToolCall) -> Result<String, JobFailure> {
        let turn = &*self.turn;
        let ctx = CallContext {
            character: turn.character,
            msg: turn.msg,
            evidence: &turn.evidence,
            trace_id: turn.trace_id.as_deref(),
            lease: &turn.lease,
            target: &turn.target,
            site: CallSite {
                company: turn.company.as_deref(),
                receipts: &turn.receipts,
            },
        };
        let run = self.tools.run(&ctx, call).await?;
        self.turn.evidence.extend(run.evidence);
        self.record(&ConversationEvent::ToolCalled(run.record));
        Ok(run.content)
    }

    fn refused(&mut self, call: &ToolCall) -> String {
        let run = self.tools.refuse_over_limit(self.turn.msg.id, call);
        self.record(&ConversationEvent::ToolCalled(run.record));
        run.content
    }
}

/// Most files shown to the model in one turn.
const MAX_FILES_SHOWN: usize = 5;

/// The receipts among a message's files: those the gateway stored.
fn stored_receipts(attachments: &[Attachment]) -> impl Iterator<Item = Receipt> + '_ {
    attachments
        .iter()
        .filter_map(|a| a.stored.clone())
        .map(Receipt::of)
}
