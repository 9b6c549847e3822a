//! AgentLoop: the model rounds of an agent. It asks the model, runs the
//! tool calls the answer asks for (at most [`MAX_TOOL_CALLS_PER_ROUND`];
//! every call gets an answer, as the Chat Completions API requires), and
//! asks again, until the model answers in text, the round limit is reached
//! or the tenant's token budget is spent. A conversation's turn, a
//! triggered run and Review-E differ only in their [`LoopSink`]: what they
//! record of each round and how they run a tool.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use shared::access::llm::{Completion, CompletionRequest, LlmClient, OfferedTools};
use shared::access::store::{TenantStore, TokenBudget};
use shared::character::Character;
use shared::engine::prompt::{ChatMessage, ToolCall};
use shared::engine::turn::{self, MAX_TOOL_CALLS_PER_ROUND, Step};
use shared::job::JobFailure;

use super::AgentContext;

/// What differs between the users of the loop.
pub trait LoopSink: Send {
    /// Before each model call; an error stops the loop (a lease lost).
    fn before_round(&mut self) -> impl Future<Output = Result<(), JobFailure>> + Send {
        async { Ok(()) }
    }

    /// The model answered in round `round` (1-based) on `day`; its tokens
    /// are counted against the budget already.
    fn answered(
        &mut self,
        answer: &ModelCall<'_>,
    ) -> impl Future<Output = Result<(), JobFailure>> + Send;

    /// Before the calls of one answer that will run (not those over the
    /// limit).
    fn calling(
        &mut self,
        _calls: &[ToolCall],
    ) -> impl Future<Output = Result<(), JobFailure>> + Send {
        async { Ok(()) }
    }

    /// Runs one call; returns what the model is told.
    fn call(&mut self, call: &ToolCall) -> impl Future<Output = Result<String, JobFailure>> + Send;

    /// A call over the per-answer limit, not run; returns what the model is
    /// told.
    fn refused(&mut self, call: &ToolCall) -> String;
}

/// One model call, as the sink sees it.
#[derive(Debug)]
pub struct ModelCall<'a> {
    /// 1-based round.
    pub round: u32,
    /// The UTC day its tokens count for.
    pub day: NaiveDate,
    /// The prompt it was given.
    pub prompt: &'a [ChatMessage],
    /// Its answer and cost.
    pub completion: &'a Completion,
    /// How long it took.
    pub duration: Duration,
}

impl ModelCall<'_> {
    /// Tokens the call cost, prompt and completion.
    pub fn tokens(&self) -> i64 {
        i64::from(self.completion.input_tokens) + i64::from(self.completion.output_tokens)
    }

    /// Adds the call's tokens to the tenant's usage at once (the sinks that
    /// keep no turn to write them with).
    pub async fn add_to_usage(&self, store: &TenantStore) -> Result<(), JobFailure> {
        store.add_token_usage(self.day, self.tokens()).await?;
        Ok(())
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model answered in text (or with nothing).
    Answered,
    /// The model still asked for tools in the last round.
    RoundLimit,
    /// The tenant's budget for the day was spent before a model call.
    BudgetSpent,
}

/// How the loop ended, and what its model calls cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopEnd {
    /// The reply.
    pub text: String,
    /// Why it ended.
    pub stop: Stop,
    /// The model that answered last (the one asked, when none answered).
    pub model: String,
    /// Prompt tokens of all calls.
    pub input_tokens: u64,
    /// Completion tokens of all calls.
    pub output_tokens: u64,
    /// Model calls made.
    pub llm_calls: u64,
    /// Tool calls run (not those over the limit).
    pub tool_calls: u64,
}

/// The model rounds of one agent.
#[derive(Debug)]
pub struct AgentLoop<'a> {
    llm: &'a LlmClient,
    character: &'a Character,
    model: &'a str,
    max_rounds: u32,
    tools: OfferedTools,
}

impl<'a> AgentLoop<'a> {
    /// The loop of `character` with all its tools, its model and round
    /// limit (or the worker's defaults).
    pub fn new(agents: &'a AgentContext, character: &'a Character) -> Self {
        Self {
            llm: &agents.llm,
            character,
            model: agents.model_of(character),
            max_rounds: character
                .model
                .max_tool_rounds
                .unwrap_or(agents.default_max_tool_rounds),
            tools: agents.tools_of(character),
        }
    }

    /// The loop of `character` with one model call and no tools.
    pub fn single_answer(agents: &'a AgentContext, character: &'a Character) -> Self {
        Self {
            max_rounds: 1,
            tools: OfferedTools::default(),
            ..Self::new(agents, character)
        }
    }

    /// Runs the rounds from `messages`, spending from `budget`.
    pub async fn run<S: LoopSink>(
        &self,
        mut messages: Vec<ChatMessage>,
        mut budget: TokenBudget,
        sink: &mut S,
    ) -> Result<LoopEnd, JobFailure> {
        let mut end = LoopEnd {
            text: turn::ROUND_LIMIT_REPLY.to_owned(),
            stop: Stop::RoundLimit,
            model: self.model.to_owned(),
            input_tokens: 0,
            output_tokens: 0,
            llm_calls: 0,
            tool_calls: 0,
        };
        for round in 1..=self.max_rounds {
            sink.before_round().await?;
            let day = Utc::now().date_naive();
            if budget.is_spent() {
                metrics::counter!("automate_e_budget_refusals_total").increment(1);
                end.text = turn::on_break_reply(day.succ_opt().unwrap_or(day));
                end.stop = Stop::BudgetSpent;
                return Ok(end);
            }
            let started = Instant::now();
            let completion = self.complete(&messages).await?;
            let (input, output) = (
                u64::from(completion.input_tokens),
                u64::from(completion.output_tokens),
            );
            budget.used = budget
                .used
                .saturating_add(i64::try_from(input + output).unwrap_or(i64::MAX));
            end.model.clone_from(&completion.model);
            end.input_tokens += input;
            end.output_tokens += output;
            end.llm_calls += 1;
            sink.answered(&ModelCall {
                round,
                day,
                prompt: &messages,
                completion: &completion,
                duration: started.elapsed(),
            })
            .await?;
            let calls = match turn::next_step(&completion.answer, round, self.max_rounds) {
                Step::Reply(text) => {
                    end.stop = if completion.answer.tool_calls.is_empty() {
                        Stop::Answered
                    } else {
                        Stop::RoundLimit
                    };
                    end.text = text;
                    return Ok(end);
                }
                Step::CallTools(calls) => calls,
            };
            let run = calls.len().min(MAX_TOOL_CALLS_PER_ROUND);
            sink.calling(&calls[..run]).await?;
            messages.push(ChatMessage::Assistant {
                content: completion.answer.content.clone(),
                tool_calls: calls.clone(),
            });
            for (index, call) in calls.iter().enumerate() {
                let content = if index < run {
                    end.tool_calls += 1;
                    sink.call(call).await?
                } else {
                    sink.refused(call)
                };
                messages.push(ChatMessage::Tool {
                    tool_call_id: call.id.clone(),
                    content,
                });
            }
        }
        // `next_step` replies on the last round, so the loop always returns.
        Ok(end)
    }

    async fn complete(&self, messages: &[ChatMessage]) -> Result<Completion, JobFailure> {
        let model = &self.character.model;
        Ok(self
            .llm
            .complete(&CompletionRequest {
                model: self.model,
                messages,
                tools: &self.tools,
                temperature: model.temperature,
                max_output_tokens: model.max_output_tokens,
            })
            .await?)
    }
}
