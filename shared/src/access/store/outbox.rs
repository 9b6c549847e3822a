//! The durable outbox: replies written atomically with the end of their turn,
//! then delivered chunk by chunk.

use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::types::Json;

use super::events::{NewEvent, append_error, storable};
use super::lease::{Lease, millis};
use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::ids::{ConversationId, EventId, InboxId, OutboxId, Platform, TenantId};

/// A reply that ends a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyParams {
    /// The new outbox row's id.
    pub outbox_id: OutboxId,
    /// The inbox messages the turn answered, in arrival order (rapid
    /// messages folded into one turn); the first one is the turn's lead.
    pub inbox_ids: Vec<InboxId>,
    /// The conversation lease the turn ran under (checked); `None` writes
    /// unfenced.
    pub lease: Option<Lease>,
    /// The outbox row's dedupe key (`reply:<lead inbox id>`, …).
    pub dedupe_key: String,
    /// The conversation stream and the version the turn last saw.
    pub stream: String,
    /// Expected stream version.
    pub expected_version: i64,
    /// Events that end the turn (at least the reply).
    pub events: Vec<NewEvent>,
    /// The reply text.
    pub text: String,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct OutboxModel {
    pub id: OutboxId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub platform: Platform,
    pub chat: String,
    pub thread: String,
    /// Reply text.
    pub text: String,
    /// Chunks already posted (delivery resumes after them).
    pub chunks_delivered: i32,
    /// When delivery finished.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What the delivery of a reply finds in its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryTurn {
    /// Another delivery of the conversation is running.
    Busy,
    /// The conversation's deliveries are held; `next` is its oldest reply
    /// not delivered (nor given up) written no later than the one asked
    /// for, `None` when there is nothing left to post up to it.
    Held {
        conversation: ConversationId,
        next: Option<OutboxModel>,
    },
}

impl TenantStore {
    /// Holds the deliveries of `up_to`'s conversation for `holder` during
    /// `ttl` (taken, or renewed when `holder` has them) and finds the reply
    /// to post next: replies are posted in the order they were written.
    pub async fn next_delivery(
        &self,
        up_to: OutboxId,
        holder: &str,
        ttl: Duration,
    ) -> Result<DeliveryTurn, StoreError> {
        let turn = sqlx::query_scalar!(
            r#"SELECT automate_e_delivery_next($1, $2, $3, $4) AS "turn: Json<NextRow>""#,
            self.tenant as _,
            up_to as _,
            holder,
            millis(ttl)
        )
        .fetch_one(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("outbox item"))?
        .0;
        Ok(match turn.conversation {
            Some(conversation) => DeliveryTurn::Held {
                conversation,
                next: turn.next,
            },
            None => DeliveryTurn::Busy,
        })
    }

    /// Extends `holder`'s hold on the deliveries of `conversation` to `ttl`
    /// from now; `false` when it lost them (its hold ran out and another
    /// delivery took them).
    pub async fn renew_deliveries(
        &self,
        conversation: ConversationId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let renewed = sqlx::query!(
            "UPDATE delivery_holds SET held_until = now() + $3::bigint * interval '1 millisecond' \
             WHERE conversation_id = $1 AND holder = $2",
            conversation as _,
            holder,
            millis(ttl)
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(renewed == 1)
    }

    /// Ends a turn without giving its lease back or adding tokens; see
    /// [`TenantStore::end_turn`]. `false` (nothing written) when a message
    /// was answered already.
    pub async fn complete_turn(&self, p: &ReplyParams) -> Result<bool, StoreError> {
        Ok(self.end_turn(p, false, &[]).await?.is_some())
    }

    /// Outbox items not delivered (nor given up) that were written before
    /// `before`, oldest first.
    pub async fn undelivered_outbox(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxId>, StoreError> {
        let mut tx = self.begin().await?;
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id: OutboxId" FROM outbox WHERE tenant_id = $3 AND delivered_at IS NULL
               AND given_up_at IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2"#,
            before,
            limit,
            self.tenant as _
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Marks an undelivered reply given up (its delivery job was
    /// dead-lettered), or (`given_up` false, for a replay) not any more;
    /// `false` when there was nothing to change.
    pub async fn set_delivery_given_up(
        &self,
        id: OutboxId,
        given_up: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query!(
            "UPDATE outbox SET given_up_at = CASE WHEN $2 THEN now() END \
             WHERE id = $1 AND delivered_at IS NULL AND (given_up_at IS NULL) = $2",
            id as _,
            given_up
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// An outbox row.
    pub async fn outbox_item(&self, id: OutboxId) -> Result<OutboxModel, StoreError> {
        let mut tx = self.begin().await?;
        let out = sqlx::query_as!(
            OutboxModel,
            r#"SELECT id AS "id: OutboxId", tenant_id AS "tenant_id: TenantId",
               conversation_id AS "conversation_id: ConversationId", platform AS "platform: Platform",
               chat, thread, text, chunks_delivered, delivered_at FROM outbox WHERE id = $1"#,
            id as _
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("outbox item"));
        tx.commit().await?;
        out
    }

    /// Records that the first `count` chunks are posted, so a retry resumes after them.
    pub async fn record_chunks_delivered(
        &self,
        id: OutboxId,
        count: i32,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query!(
            "UPDATE outbox SET chunks_delivered = greatest(chunks_delivered, $2) WHERE id = $1",
            id as _,
            count
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the reply delivered (all `chunks` posted) and appends its
    /// delivery event; a no-op when it was marked before. With `release`
    /// (the conversation and the holder), the delivery's hold is given back
    /// in the same transaction.
    pub async fn complete_delivery(
        &self,
        id: OutboxId,
        chunks: i32,
        stream: &str,
        event: &NewEvent,
        release: Option<(ConversationId, &str)>,
    ) -> Result<(), StoreError> {
        let event = &storable(std::slice::from_ref(event))[0];
        let (conversation, holder) = release.unzip();
        sqlx::query!(
            "SELECT automate_e_delivery_done($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17)",
            self.tenant as _,
            id as _,
            chunks,
            stream,
            EventId::new_v7().0,
            event.type_name,
            event.occurred_at,
            event.actor.kind.as_str(),
            event.actor.id,
            &event.payload,
            event.dedupe_key,
            event.correlation_id,
            event.causation_id,
            event.trace_id,
            event.source,
            conversation as Option<ConversationId>,
            holder
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| append_error(e, stream, 0))?;
        Ok(())
    }
}

/// `automate_e_delivery_next`'s answer: no conversation when another
/// delivery holds it.
#[derive(serde::Deserialize)]
struct NextRow {
    conversation: Option<ConversationId>,
    next: Option<OutboxModel>,
}

impl TenantTx {
    /// Lets the deliveries of `conversation` go, if `holder` has them.
    pub async fn release_deliveries(
        &mut self,
        conversation: ConversationId,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE delivery_holds SET held_until = now() WHERE conversation_id = $1 AND holder = $2",
            conversation as _,
            holder
        )
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

in_own_transaction! {
    /// Lets the deliveries of `conversation` go, if `holder` has them.
    fn release_deliveries(&self, conversation: ConversationId, holder: &str) -> ();
}
