//! A turn's start and its end, each one call of a function in Postgres
//! (migration 28): one round trip and one transaction, the call's own.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::events::{Columns, append_error, storable};
use super::lease::millis;
use super::{
    ANSWERED_ALREADY, InboxModel, Lease, ReplyParams, StoreError, StoredEvent, StreamTail,
    TenantSettings, TenantStore, TokenBudget, raised, step_error,
};
use crate::event::{Attachment, CONVERSATION_STREAM_PREFIX};
use crate::ids::{ConversationId, InboxId, Platform, ProposalId, TenantId};

/// What a character remembers, as a turn's start reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CharacterMemory {
    /// The newest facts about the author.
    pub facts: u32,
    /// Nothing older than this many days, if set.
    pub history_days: Option<u32>,
    /// The newest user messages and replies of the conversation.
    pub history_messages: u32,
}

/// How a turn's start takes or checks the lease and reads its context.
#[derive(Debug, Clone, Copy)]
pub struct TurnStartParams<'a> {
    /// The message the job answers.
    pub inbox_id: InboxId,
    /// This worker's name as a lease holder.
    pub holder: &'a str,
    /// The lease's time-to-live when taken.
    pub ttl: Duration,
    /// The lease an earlier turn of the job took: checked, not taken.
    pub held: Option<Lease>,
    /// The most pending messages read.
    pub limit: i64,
    /// The day whose token usage counts against the budget.
    pub day: NaiveDate,
    /// Each character's memory, by name.
    pub memory: &'a HashMap<String, CharacterMemory>,
    /// The event types of the conversation's history.
    pub history_types: &'a [&'a str],
    /// A `message_received`'s dedupe key without the inbox id.
    pub received_key_prefix: &'a str,
}

/// A turn's start: the message, and the lease with what the turn needs
/// when it holds one.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnStart {
    /// The message the job answers.
    pub message: InboxModel,
    /// The conversation's lease: none when the message was answered (unless
    /// one was held already) or another holder has it.
    pub lease: Option<Lease>,
    /// Read under the lease while the message was unanswered.
    pub context: Option<TurnContext>,
}

/// What a turn reads under its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnContext {
    /// The conversation's messages not answered yet, oldest first.
    pub pending: Vec<InboxModel>,
    /// The tenant's settings.
    pub settings: TenantSettings,
    /// The tenant's token budget on the day.
    pub budget: TokenBudget,
    /// The newest facts about the first pending message's author, oldest
    /// first.
    pub facts: Vec<String>,
    /// The end of the conversation's stream: the newest history events and
    /// the `message_received` of the pending messages and of the job's own.
    pub tail: StreamTail,
}

impl TenantStore {
    /// Starts a turn in one call: reads the message and, unless it was
    /// answered, takes its conversation's lease (or checks `p.held`:
    /// [`StoreError::LeaseLost`]), then reads the turn's context under it
    /// (see [`TurnContext`]) within the memory of the conversation's
    /// character.
    pub async fn start_turn(&self, p: &TurnStartParams<'_>) -> Result<TurnStart, StoreError> {
        let row = sqlx::query_scalar!(
            r#"SELECT automate_e_turn_start($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               AS "start: Json<StartRow>""#,
            self.tenant as _,
            p.inbox_id as _,
            p.holder,
            millis(p.ttl),
            p.held.map(|l| l.fence),
            p.limit,
            p.day,
            Json(p.memory) as _,
            p.history_types as _,
            CONVERSATION_STREAM_PREFIX,
            p.received_key_prefix
        )
        .fetch_one(&self.pool)
        .await
        .map_err(step_error)?
        .ok_or(StoreError::NotFound("inbox message"))?
        .0;
        let message = InboxModel::from(row.message);
        let lease = row.fence.map(|fence| Lease {
            tenant_id: self.tenant,
            conversation_id: message.conversation_id,
            fence,
        });
        let context = match (row.pending, row.tenant) {
            (Some(pending), Some(tenant)) => {
                let keep = p
                    .memory
                    .get(&message.character)
                    .map_or(0, |m| m.history_messages as usize);
                let limit = keep.saturating_add(pending.len());
                let mut facts = row.facts.unwrap_or_default();
                facts.reverse();
                let tail = row.tail.unwrap_or_default().into_iter().map(TailRow::split);
                Some(TurnContext {
                    pending: pending.into_iter().map(InboxModel::from).collect(),
                    budget: TokenBudget {
                        per_day: tenant.llm_tokens_per_day,
                        used: tenant.used,
                    },
                    settings: tenant.settings,
                    facts,
                    tail: StreamTail::from_rows(tail, p.history_types, limit),
                })
            }
            (Some(_), None) => return Err(StoreError::NotFound("tenant")),
            _ => None,
        };
        Ok(TurnStart {
            message,
            lease,
            context,
        })
    }

    /// Ends a turn in one call: while `p.lease` is held
    /// ([`StoreError::LeaseLost`] otherwise), marks its messages answered,
    /// writes the reply to the outbox, appends its events (known to be new),
    /// gives the lease back when `hand_back` and adds the `tokens` spent, by
    /// day. `None`, with nothing written, when a message was answered
    /// already; else the conversation's proposals no review picked up yet
    /// when it gave the lease back (none otherwise).
    pub async fn end_turn(
        &self,
        p: &ReplyParams,
        hand_back: bool,
        tokens: &[(NaiveDate, i64)],
    ) -> Result<Option<Vec<ProposalId>>, StoreError> {
        let (lead, folded) = p
            .inbox_ids
            .split_first()
            .ok_or(StoreError::NotFound("turn message"))?;
        let events = storable(&p.events);
        let c = Columns::of(&events);
        let (days, spent): (Vec<NaiveDate>, Vec<i64>) = tokens.iter().copied().unzip();
        let ended = sqlx::query_scalar!(
            r#"SELECT automate_e_turn_end($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
               $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) AS "unreviewed!: Vec<ProposalId>""#,
            self.tenant as _,
            p.lease.map(|l| l.conversation_id) as Option<ConversationId>,
            p.lease.map(|l| l.fence),
            lead as _,
            folded as _,
            p.outbox_id as _,
            p.dedupe_key,
            p.text,
            p.stream,
            p.expected_version,
            &c.ids,
            &c.types as _,
            &c.occurred,
            &c.actor_kinds as _,
            &c.actor_ids as _,
            &c.payloads as _,
            &c.dedupe_keys as _,
            &c.correlations as _,
            &c.causations as _,
            &c.trace_ids as _,
            &c.sources as _,
            hand_back,
            &days,
            &spent
        )
        .fetch_one(&self.pool)
        .await;
        match ended {
            Ok(unreviewed) => Ok(Some(unreviewed)),
            Err(e) if raised(&e, ANSWERED_ALREADY) => Ok(None),
            Err(e) => Err(match step_error(e) {
                StoreError::Database(e) => append_error(e, &p.stream, p.expected_version),
                lost => lost,
            }),
        }
    }
}

/// `automate_e_turn_start`'s answer.
#[derive(Deserialize)]
struct StartRow {
    message: MessageRow,
    fence: Option<i64>,
    pending: Option<Vec<MessageRow>>,
    tenant: Option<TenantRow>,
    facts: Option<Vec<String>>,
    tail: Option<Vec<TailRow>>,
}

/// A row of `automate_e_inbox_messages`.
#[derive(Deserialize)]
struct MessageRow {
    id: InboxId,
    tenant_id: TenantId,
    conversation_id: ConversationId,
    character: String,
    platform: Platform,
    chat: String,
    thread: String,
    author_id: String,
    text: String,
    attachments: Vec<Attachment>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
}

impl From<MessageRow> for InboxModel {
    fn from(m: MessageRow) -> Self {
        Self {
            id: m.id,
            tenant_id: m.tenant_id,
            conversation_id: m.conversation_id,
            character: m.character,
            platform: m.platform,
            chat: m.chat,
            thread: m.thread,
            author_id: m.author_id,
            text: m.text,
            attachments: Json(m.attachments),
            received_at: m.received_at,
            processed_at: m.processed_at,
        }
    }
}

/// A tenant's settings with its budget and the day's usage.
#[derive(Deserialize)]
struct TenantRow {
    #[serde(flatten)]
    settings: TenantSettings,
    llm_tokens_per_day: Option<i64>,
    used: i64,
}

/// An event of a stream's end, `keyed` when found by its dedupe key.
#[derive(Deserialize)]
struct TailRow {
    id: uuid::Uuid,
    stream: String,
    version: i64,
    global_position: i64,
    #[serde(rename = "type")]
    type_name: String,
    actor_kind: String,
    actor_id: String,
    payload: serde_json::Value,
    correlation_id: Option<uuid::Uuid>,
    trace_id: Option<String>,
    occurred_at: DateTime<Utc>,
    keyed: bool,
}

impl TailRow {
    fn split(self) -> (StoredEvent, bool) {
        let event = StoredEvent {
            id: self.id,
            stream: self.stream,
            version: self.version,
            global_position: self.global_position,
            type_name: self.type_name,
            actor_kind: self.actor_kind,
            actor_id: self.actor_id,
            payload: self.payload,
            correlation_id: self.correlation_id,
            trace_id: self.trace_id,
            occurred_at: self.occurred_at,
        };
        (event, self.keyed)
    }
}
