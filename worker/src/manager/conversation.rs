//! ConversationManager: runs one agent turn for an inbox message — history,
//! prompt, model rounds with read tools, events, reply to the outbox, and
//! the reply's delivery job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shared::access::llm::{CompletionRequest, LlmClient};
use shared::access::queue::JobQueue;
use shared::access::store::{InboxModel, NewEvent, ReplyParams, Store};
use shared::character::{Character, Characters};
use shared::engine::prompt::{self, ChatMessage, PromptContext};
use shared::engine::tool::function_specs;
use shared::engine::turn::{self, Step};
use shared::event::{
    Actor, ActorKind, ConversationEvent, Evidence, LlmCalled, MessageReceived, ReplyComposed,
    conversation_stream,
};
use shared::ids::{InboxId, OutboxId};
use shared::job::{JobFailure, WorkerJob};

use super::tools::{CallContext, ToolRunner};

/// Settings of a turn that come from config.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Model when the character names none.
    pub default_model: String,
    /// Rounds when the character sets none.
    pub default_max_tool_rounds: u32,
    /// Timeout of one tool call.
    pub tool_timeout: Duration,
}

/// What a turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The reply is in the outbox and its delivery is queued.
    Replied(OutboxId),
    /// The message was answered before (a redelivered job).
    AlreadyDone,
}

/// Runs agent turns.
#[derive(Debug, Clone)]
pub struct ConversationManager {
    store: Store,
    queue: JobQueue,
    llm: LlmClient,
    tools: ToolRunner,
    characters: Arc<Characters>,
    settings: TurnSettings,
}

/// The running state of one turn: the stream version, shared event fields,
/// and the reads made so far (evidence for any proposal).
struct Turn<'a> {
    msg: &'a InboxModel,
    character: &'a Character,
    stream: String,
    version: i64,
    trace_id: Option<String>,
    evidence: Vec<Evidence>,
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
        characters: Arc<Characters>,
        settings: TurnSettings,
    ) -> Self {
        Self {
            store,
            queue,
            llm,
            tools,
            characters,
            settings,
        }
    }

    /// Runs the turn for one inbox message, at most once to completion.
    pub async fn run_turn(
        &self,
        inbox_id: InboxId,
        traceparent: &str,
    ) -> Result<TurnOutcome, JobFailure> {
        let msg = self.store.inbox_message(inbox_id).await?;
        if msg.processed_at.is_some() {
            self.review_proposals(inbox_id, traceparent).await?;
            return Ok(TurnOutcome::AlreadyDone);
        }
        let character = self
            .characters
            .get(&msg.character)
            .map_err(|e| JobFailure::permanent(e, "Cannot run the conversation's character"))?;
        let stream = conversation_stream(msg.conversation_id);
        let history = self.history(&stream, inbox_id).await?;
        let version = self.store.stream_version(&stream).await?;
        let mut turn = Turn {
            msg: &msg,
            character,
            stream,
            version,
            trace_id: shared::telemetry::trace_id(traceparent).map(str::to_owned),
            evidence: Vec::new(),
        };
        let received = ConversationEvent::MessageReceived(MessageReceived {
            inbox_id,
            conversation_id: msg.conversation_id,
            text: msg.text.clone(),
            attachments: msg.attachments.0.clone(),
        });
        let user = Actor {
            kind: ActorKind::User,
            id: msg.author_id.clone(),
        };
        let event = turn.event(&received, user, Some(format!("message:{inbox_id}")));
        self.append(&mut turn, &[event]).await?;

        let content = prompt::user_content(&msg.text, &msg.attachments);
        let messages = prompt::compose(
            character,
            &PromptContext {
                history: &history,
                message: &content,
                ..Default::default()
            },
        );
        let reply = self.converse(&mut turn, messages).await?;

        let outbox_id = OutboxId::new_v7();
        let composed = ConversationEvent::ReplyComposed(ReplyComposed {
            inbox_id,
            outbox_id,
            text: reply.clone(),
        });
        let params = ReplyParams {
            outbox_id,
            inbox_id,
            stream: turn.stream.clone(),
            expected_version: turn.version,
            events: vec![turn.event(&composed, turn.agent(), Some(format!("reply:{inbox_id}")))],
            text: reply,
        };
        if !self.store.complete_turn(&params).await? {
            self.review_proposals(inbox_id, traceparent).await?;
            return Ok(TurnOutcome::AlreadyDone);
        }
        self.review_proposals(inbox_id, traceparent).await?;
        self.queue
            .deliver_outbox(&self.store, outbox_id, traceparent)
            .await?;
        Ok(TurnOutcome::Replied(outbox_id))
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
            metrics::histogram!("automate_e_llm_call_seconds").record(duration.as_secs_f64());
            metrics::counter!("automate_e_llm_tokens_total", "direction" => "input")
                .increment(u64::from(completion.input_tokens));
            metrics::counter!("automate_e_llm_tokens_total", "direction" => "output")
                .increment(u64::from(completion.output_tokens));
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

    /// Queues the review of the proposals the message's turn filed (again
    /// after a crash: the queue drops a job it already holds).
    async fn review_proposals(
        &self,
        inbox_id: InboxId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        for proposal_id in self.store.unreviewed_proposals(inbox_id).await? {
            self.queue
                .enqueue_worker_job(WorkerJob::ReviewV1 {
                    proposal_id,
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
            .append(&turn.stream, turn.version, events)
            .await?;
        Ok(())
    }

    /// Earlier user messages and replies of the conversation, oldest first,
    /// without the message being answered now.
    async fn history(
        &self,
        stream: &str,
        current: InboxId,
    ) -> Result<Vec<ChatMessage>, JobFailure> {
        let types = [
            ConversationEvent::MESSAGE_RECEIVED,
            ConversationEvent::REPLY_COMPOSED,
        ];
        let events = self.store.read_stream(stream, &types).await?;
        Ok(events
            .into_iter()
            .filter_map(|e| ConversationEvent::from_stored(&e.type_name, e.payload))
            .filter_map(|e| match e {
                ConversationEvent::MessageReceived(m) if m.inbox_id != current => {
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
            .collect())
    }
}
