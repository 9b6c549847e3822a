//! ConversationManager: answers a conversation's messages, one turn at a
//! time across all workers and in arrival order, under a conversation lease
//! (see `store::lease`). A turn answers the oldest pending message, folded
//! with the same author's rapid follow-ups: history, prompt, model rounds
//! with read tools, events, reply to the outbox, and the reply's delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shared::access::accounting::AccountingTarget;
use shared::access::llm::{CompletionRequest, LlmClient};
use shared::access::queue::JobQueue;
use shared::access::store::{InboxModel, Lease, NewEvent, ReplyParams, Store, TenantStore};
use shared::character::{Character, Characters};
use shared::engine::prompt::{self, ChatMessage, PromptContext};
use shared::engine::tool::function_specs;
use shared::engine::turn::{self, Step};
use shared::event::{
    Actor, ActorKind, ConversationEvent, Evidence, LlmCalled, MessageReceived, ReplyComposed,
    TurnFailed, conversation_stream,
};
use shared::ids::{ConversationId, InboxId, OutboxId, Platform, TenantId};
use shared::job::{JobFailure, WorkerJob};
use tokio_util::sync::CancellationToken;

use super::accounts::Accounts;
use super::tools::{CallContext, ToolRunner};

/// How often a job waiting for a busy conversation looks again.
const LEASE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of a turn that come from config.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Model when the character names none.
    pub default_model: String,
    /// Rounds when the character sets none.
    pub default_max_tool_rounds: u32,
    /// Timeout of one tool call.
    pub tool_timeout: Duration,
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

/// Runs agent turns.
#[derive(Debug, Clone)]
pub struct ConversationManager {
    store: Store,
    queue: JobQueue,
    llm: LlmClient,
    tools: ToolRunner,
    accounts: Accounts,
    characters: Arc<Characters>,
    settings: TurnSettings,
    /// This process's name as a lease holder.
    holder: String,
}

/// Keeps a lease renewed while it lives.
struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running state of one turn: the stream version, shared event fields,
/// and the reads made so far (evidence for any proposal).
struct Turn<'a> {
    /// The first (oldest) message of the batch: the turn's lead (proposer,
    /// causation, proposal and reply dedupe).
    msg: &'a InboxModel,
    lease: Lease,
    character: &'a Character,
    stream: String,
    version: i64,
    trace_id: Option<String>,
    evidence: Vec<Evidence>,
    /// The tenant's Accounting API.
    target: AccountingTarget,
}

impl Turn<'_> {
    fn event(
        &self,
        event: &ConversationEvent,
        actor: Actor,
        dedupe_key: Option<String>,
    ) -> NewEvent {
        NewEvent {
            tenant_id: self.msg.tenant_id,
            type_name: event.type_name(),
            payload: event.payload(),
            actor,
            occurred_at: Utc::now(),
            dedupe_key,
            correlation_id: Some(self.msg.conversation_id.0),
            causation_id: Some(self.msg.id.0),
            trace_id: self.trace_id.clone(),
            source: "worker",
        }
    }

    fn agent(&self) -> Actor {
        Actor {
            kind: ActorKind::Agent,
            id: self.character.name.clone(),
        }
    }
}

impl ConversationManager {
    /// A manager over its clients.
    pub fn new(
        store: Store,
        queue: JobQueue,
        llm: LlmClient,
        tools: ToolRunner,
        accounts: Accounts,
        characters: Arc<Characters>,
        settings: TurnSettings,
    ) -> Self {
        Self {
            store,
            queue,
            llm,
            tools,
            accounts,
            characters,
            settings,
            holder: shared::access::queue::unique_worker_name("turns"),
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
        let msg = self.store.tenant(tenant).inbox_message(inbox_id).await?;
        let mut outcome = TurnOutcome::AlreadyDone;
        if msg.processed_at.is_none()
            && let Some(lease) = self.wait_for_lease(&msg).await?
        {
            let renewal = self.keep_renewed(lease);
            let answered = self
                .answer_until(lease, inbox_id, traceparent, shutdown)
                .await;
            drop(renewal);
            if let Err(e) = self.store.tenant(tenant).release_lease(&lease).await {
                tracing::warn!(error = %e, "Cannot release a conversation lease; it will expire");
            }
            outcome = answered?;
        }
        self.review_proposals(tenant, msg.conversation_id, traceparent)
            .await?;
        Ok(outcome)
    }

    /// Takes the conversation's lease, waiting while another worker holds
    /// it; `None` when this message got answered meanwhile.
    async fn wait_for_lease(&self, msg: &InboxModel) -> Result<Option<Lease>, JobFailure> {
        let deadline = Instant::now() + self.settings.lease_wait;
        loop {
            let lease = self
                .store
                .tenant(msg.tenant_id)
                .try_acquire_lease(msg.conversation_id, &self.holder, self.settings.lease_ttl)
                .await?;
            if lease.is_some() {
                return Ok(lease);
            }
            if self
                .store
                .tenant(msg.tenant_id)
                .inbox_message(msg.id)
                .await?
                .processed_at
                .is_some()
            {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(JobFailure::deferred(
                    anyhow::anyhow!("conversation {} is busy", msg.conversation_id),
                    "Another worker holds the conversation",
                ));
            }
            tokio::time::sleep(LEASE_POLL_INTERVAL).await;
        }
    }

    fn keep_renewed(&self, lease: Lease) -> Renewal {
        let store = self.store.tenant(lease.tenant_id);
        let ttl = self.settings.lease_ttl;
        Renewal(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew_lease(&lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            "Conversation lease taken over; the turn's writes will be refused"
                        );
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot renew a conversation lease"),
                }
            }
        }))
    }

    /// Under `lease`, answers the conversation's pending messages oldest
    /// first until `own` is answered.
    async fn answer_until(
        &self,
        lease: Lease,
        own: InboxId,
        traceparent: &str,
        shutdown: &CancellationToken,
    ) -> Result<TurnOutcome, JobFailure> {
        let limit = i64::try_from(turn::MAX_FOLDED_MESSAGES).unwrap_or(i64::MAX);
        loop {
            if self
                .store
                .tenant(lease.tenant_id)
                .inbox_message(own)
                .await?
                .processed_at
                .is_some()
            {
                return Ok(TurnOutcome::AlreadyDone);
            }
            let pending = self
                .store
                .tenant(lease.tenant_id)
                .pending_messages(lease.conversation_id, limit)
                .await?;
            let authors: Vec<&str> = pending.iter().map(|m| m.author_id.as_str()).collect();
            let batch = &pending[..turn::fold_count(&authors)];
            let is_own = batch.iter().any(|m| m.id == own);
            match self.answer(lease, batch, traceparent).await {
                Ok(Some(outbox_id)) if is_own => return Ok(TurnOutcome::Replied(outbox_id)),
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

    /// One turn for `batch` (a message and its folded follow-ups); `None`
    /// when another writer answered them first.
    async fn answer(
        &self,
        lease: Lease,
        batch: &[InboxModel],
        traceparent: &str,
    ) -> Result<Option<OutboxId>, JobFailure> {
        // The oldest message leads: the same on every retry of this turn,
        // so a proposal filed again is recognised (filed once per lead).
        let Some(msg) = batch.first() else {
            return Ok(None);
        };
        let character = self
            .characters
            .get(&msg.character)
            .map_err(|e| JobFailure::permanent(e, "Cannot run the conversation's character"))?;
        if !character.takes_chat() {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
                "`{}` has no chat trigger; route the chat to an agent that takes chats",
                character.name
            )));
        }
        let store = self.store.tenant(msg.tenant_id);
        let (tenant, target) = self.accounts.of(&store).await?;
        let memory = &character.memory;
        let remembered_since = memory
            .history_days
            .map(|days| Utc::now() - chrono::Duration::days(i64::from(days)));
        let facts = match Platform::parse(&msg.platform) {
            Some(platform) => {
                store
                    .user_facts(
                        platform,
                        &msg.author_id,
                        remembered_since,
                        i64::from(memory.facts),
                    )
                    .await?
            }
            None => Vec::new(),
        };
        let stream = conversation_stream(msg.conversation_id);
        let history = self
            .history(&store, &stream, batch, character, remembered_since)
            .await?;
        let version = store.stream_version(&stream).await?;
        let mut turn = Turn {
            msg,
            lease,
            character,
            stream,
            version,
            trace_id: shared::telemetry::trace_id(traceparent).map(str::to_owned),
            evidence: Vec::new(),
            target,
        };
        let received: Vec<NewEvent> = batch
            .iter()
            .map(|m| {
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
                turn.event(&event, user, Some(format!("message:{}", m.id)))
            })
            .collect();
        self.append(&mut turn, &received).await?;

        let content = batch
            .iter()
            .map(|m| prompt::user_content(&m.text, &m.attachments))
            .collect::<Vec<_>>()
            .join("\n\n");
        let messages = prompt::compose(
            character,
            &PromptContext {
                tenant_brief: Some(&tenant.brief),
                user_facts: &facts,
                history: &history,
                message: &content,
            },
        );
        let reply = self.converse(&mut turn, messages).await?;

        let outbox_id = OutboxId::new_v7();
        let composed = ConversationEvent::ReplyComposed(ReplyComposed {
            inbox_id: msg.id,
            outbox_id,
            text: reply.clone(),
        });
        let params = ReplyParams {
            outbox_id,
            inbox_ids: batch.iter().map(|m| m.id).collect(),
            lease: Some(lease),
            dedupe_key: format!("reply:{}", msg.id),
            stream: turn.stream.clone(),
            expected_version: turn.version,
            events: vec![turn.event(&composed, turn.agent(), Some(format!("reply:{}", msg.id)))],
            text: reply,
        };
        if !self
            .store
            .tenant(msg.tenant_id)
            .complete_turn(&params)
            .await?
        {
            return Ok(None);
        }
        self.queue
            .deliver_outbox(&self.store.tenant(msg.tenant_id), outbox_id, traceparent)
            .await?;
        Ok(Some(outbox_id))
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
        let msg = self.store.tenant(tenant).inbox_message(inbox_id).await?;
        if msg.processed_at.is_some() {
            return Ok(());
        }
        let Some(lease) = self.wait_for_lease(&msg).await? else {
            return Ok(());
        };
        let written = self.write_failure(&msg, lease, reason, traceparent).await;
        if let Err(e) = self.store.tenant(tenant).release_lease(&lease).await {
            tracing::warn!(error = %e, "Cannot release a conversation lease; it will expire");
        }
        let Some(outbox_id) = written? else {
            return Ok(());
        };
        self.queue
            .deliver_outbox(&self.store.tenant(tenant), outbox_id, traceparent)
            .await
    }

    async fn write_failure(
        &self,
        msg: &InboxModel,
        lease: Lease,
        reason: &str,
        traceparent: &str,
    ) -> Result<Option<OutboxId>, JobFailure> {
        let stream = conversation_stream(msg.conversation_id);
        let outbox_id = OutboxId::new_v7();
        let failed = ConversationEvent::TurnFailed(TurnFailed {
            inbox_id: msg.id,
            outbox_id,
            reason: reason.to_owned(),
        });
        // Unique per give-up: a replayed turn may be given up again.
        let key = format!("turn-failed:{}:{outbox_id}", msg.id);
        let event = NewEvent {
            tenant_id: msg.tenant_id,
            type_name: failed.type_name(),
            payload: failed.payload(),
            actor: Actor {
                kind: ActorKind::System,
                id: "worker".to_owned(),
            },
            occurred_at: Utc::now(),
            dedupe_key: Some(key.clone()),
            correlation_id: Some(msg.conversation_id.0),
            causation_id: Some(msg.id.0),
            trace_id: shared::telemetry::trace_id(traceparent).map(str::to_owned),
            source: "worker",
        };
        let params = ReplyParams {
            outbox_id,
            inbox_ids: vec![msg.id],
            lease: Some(lease),
            dedupe_key: key,
            expected_version: self
                .store
                .tenant(msg.tenant_id)
                .stream_version(&stream)
                .await?,
            stream,
            events: vec![event],
            text: turn::TURN_FAILED_REPLY.to_owned(),
        };
        Ok(self
            .store
            .tenant(msg.tenant_id)
            .complete_turn(&params)
            .await?
            .then_some(outbox_id))
    }

    /// Model rounds until the model answers without tools (or the round limit).
    async fn converse(
        &self,
        turn: &mut Turn<'_>,
        mut messages: Vec<ChatMessage>,
    ) -> Result<String, JobFailure> {
        let character = turn.character;
        let functions = function_specs(character);
        let model = character
            .model
            .name
            .as_deref()
            .unwrap_or(&self.settings.default_model);
        let max_rounds = character
            .model
            .max_tool_rounds
            .unwrap_or(self.settings.default_max_tool_rounds);
        for round in 1..=max_rounds {
            let today = Utc::now().date_naive();
            let budget = self
                .store
                .tenant(turn.msg.tenant_id)
                .token_budget(today)
                .await?;
            if budget.is_spent() {
                metrics::counter!("automate_e_budget_refusals_total").increment(1);
                return Ok(turn::on_break_reply(today.succ_opt().unwrap_or(today)));
            }
            let started = Instant::now();
            let completion = self
                .llm
                .complete(&CompletionRequest {
                    model,
                    messages: &messages,
                    functions: &functions,
                    temperature: character.model.temperature,
                    max_output_tokens: character.model.max_output_tokens,
                })
                .await?;
            let duration = started.elapsed();
            let called = ConversationEvent::LlmCalled(LlmCalled {
                inbox_id: turn.msg.id,
                round,
                model: completion.model.clone(),
                prompt_sha256: prompt::digest(&messages),
                response_id: completion.response_id.clone(),
                input_tokens: completion.input_tokens,
                output_tokens: completion.output_tokens,
                tool_calls: u32::try_from(completion.answer.tool_calls.len()).unwrap_or(u32::MAX),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            });
            let tokens = i64::from(completion.input_tokens) + i64::from(completion.output_tokens);
            self.store
                .tenant(turn.msg.tenant_id)
                .add_token_usage(today, tokens)
                .await?;
            let event = turn.event(&called, turn.agent(), None);
            self.append(turn, &[event]).await?;
            match turn::next_step(&completion.answer, round, max_rounds) {
                Step::Reply(text) => return Ok(text),
                Step::CallTools(calls) => {
                    messages.push(ChatMessage::Assistant {
                        content: completion.answer.content.clone(),
                        tool_calls: calls.clone(),
                    });
                    for (index, call) in calls.iter().enumerate() {
                        let run = if index < turn::MAX_TOOL_CALLS_PER_ROUND {
                            let ctx = CallContext {
                                character,
                                msg: turn.msg,
                                evidence: &turn.evidence,
                                timeout: self.settings.tool_timeout,
                                trace_id: turn.trace_id.as_deref(),
                                lease: &turn.lease,
                                target: &turn.target,
                            };
                            self.tools.run(&ctx, call).await?
                        } else {
                            self.tools.refuse_over_limit(turn.msg.id, call)
                        };
                        turn.evidence.extend(run.evidence);
                        let event = turn.event(
                            &ConversationEvent::ToolCalled(run.record),
                            turn.agent(),
                            None,
                        );
                        self.append(turn, &[event]).await?;
                        messages.push(ChatMessage::Tool {
                            tool_call_id: call.id.clone(),
                            content: run.content,
                        });
                    }
                }
            }
        }
        // `next_step` replies on the last round, so the loop always returns.
        Ok(turn::ROUND_LIMIT_REPLY.to_owned())
    }

    /// Queues the review of the conversation's proposals no review picked up
    /// yet (again after a crash: the queue drops a job it already holds).
    async fn review_proposals(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        for proposal_id in self
            .store
            .tenant(tenant)
            .unreviewed_proposals(conversation)
            .await?
        {
            self.queue
                .enqueue_worker_job(WorkerJob::ReviewV1 {
                    proposal_id,
                    tenant_id: tenant,
                    traceparent: traceparent.to_owned(),
                })
                .await
                .map_err(|e| JobFailure::retryable(e, "Cannot enqueue a proposal review"))?;
        }
        Ok(())
    }

    async fn append(&self, turn: &mut Turn<'_>, events: &[NewEvent]) -> Result<(), JobFailure> {
        turn.version = self
            .store
            .tenant(turn.msg.tenant_id)
            .append_fenced(&turn.lease, &turn.stream, turn.version, events)
            .await?;
        Ok(())
    }

    /// Earlier user messages and replies of the conversation, oldest first,
    /// without the messages being answered now: the character's retention
    /// (newest `history_messages`, none older than `since`).
    async fn history(
        &self,
        store: &TenantStore,
        stream: &str,
        current: &[InboxModel],
        character: &Character,
        since: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<ChatMessage>, JobFailure> {
        let types = [
            ConversationEvent::MESSAGE_RECEIVED,
            ConversationEvent::REPLY_COMPOSED,
        ];
        let events = store.read_stream(stream, &types).await?;
        let mut messages: Vec<ChatMessage> = events
            .into_iter()
            .filter(|e| since.is_none_or(|since| e.occurred_at >= since))
            .filter_map(|e| ConversationEvent::from_stored(&e.type_name, e.payload))
            .filter_map(|e| match e {
                ConversationEvent::MessageReceived(m)
                    if !current.iter().any(|c| c.id == m.inbox_id) =>
                {
                    Some(ChatMessage::User {
                        content: prompt::user_content(&m.text, &m.attachments),
                    })
                }
                ConversationEvent::ReplyComposed(r) => Some(ChatMessage::Assistant {
                    content: Some(r.text),
                    tool_calls: vec![],
                }),
                _ => None,
            })
            .collect();
        let keep = usize::try_from(character.memory.history_messages).unwrap_or(usize::MAX);
        messages.drain(..messages.len().saturating_sub(keep));
        Ok(messages)
    }
}
