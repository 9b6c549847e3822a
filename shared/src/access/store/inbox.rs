//! The durable inbox: every accepted inbound message, deduplicated on the
//! platform's message id, and its conversation.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::{StoreError, TenantStore};
use crate::event::Attachment;
use crate::ids::{ConversationId, InboxId, OutboxId, Platform, TenantId};

/// A normalized inbound message to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessageParams {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Character that answers.
    pub character: String,
    /// Platform.
    pub platform: Platform,
    /// Chat (Slack channel, Discord channel, Telegram chat).
    pub chat: String,
    /// Thread within the chat (Slack thread_ts, …), or "".
    pub thread: String,
    /// The platform's id of the message, unique per platform.
    pub platform_message_id: String,
    /// The platform's id of this delivery (Slack event_id), for audit.
    pub delivery_id: Option<String>,
    /// Author's platform user id.
    pub author_id: String,
    /// Message text.
    pub text: String,
    /// Files sent with it, by reference.
    pub attachments: Vec<Attachment>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// A conversation row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConversationModel {
    /// The row.
    pub id: ConversationId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Chat.
    pub chat: String,
    /// Thread within the chat.
    pub thread: String,
    /// Character that answers.
    pub character: String,
}

/// What recording a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// First time: a new inbox row.
    New {
        /// The new row.
        inbox_id: InboxId,
    },
    /// The platform delivered this message before.
    Duplicate {
        /// The existing row.
        inbox_id: InboxId,
        /// Whether its job was enqueued already.
        enqueued: bool,
    },
}

/// An inbox message with its conversation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxModel {
    /// The row.
    pub id: InboxId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Character of the conversation.
    pub character: String,
    /// Platform name.
    pub platform: String,
    /// Chat.
    pub chat: String,
    /// Thread.
    pub thread: String,
    /// Author's platform user id.
    pub author_id: String,
    /// Message text.
    pub text: String,
    /// Files sent with it, by reference.
    pub attachments: Json<Vec<Attachment>>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
    /// When its turn completed, if it did.
    pub processed_at: Option<DateTime<Utc>>,
}

/// Columns of [`InboxModel`] over `inbox i JOIN conversations c`.
pub(super) const INBOX_COLUMNS: &str = "i.id, i.tenant_id, i.conversation_id, c.character, \
     c.platform, c.chat, c.thread, i.author_id, i.text, i.attachments, i.received_at, i.processed_at";

/// The conversation `(tenant, platform, chat, thread)`, created for
/// `character` if it does not exist yet.
pub(super) async fn conversation_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    platform: Platform,
    chat: &str,
    thread: &str,
    character: &str,
) -> Result<ConversationId, StoreError> {
    // Two attempts: a concurrent first message of the same conversation may
    // insert the row between our insert and our select.
    for _ in 0..2 {
        let id = sqlx::query_scalar::<_, ConversationId>(
            "WITH inserted AS ( \
                INSERT INTO conversations (id, tenant_id, platform, chat, thread, character) \
                VALUES ($1, $2, $3, $4, $5, $6) \
                ON CONFLICT (tenant_id, platform, chat, thread) DO NOTHING RETURNING id) \
             SELECT id FROM inserted UNION ALL \
             SELECT id FROM conversations WHERE tenant_id = $2 AND platform = $3 AND chat = $4 AND thread = $5 \
             LIMIT 1",
        )
        .bind(ConversationId::new_v7())
        .bind(tenant)
        .bind(platform.as_str())
        .bind(chat)
        .bind(thread)
        .bind(character)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = id {
            return Ok(id);
        }
    }
    Err(StoreError::NotFound("conversation"))
}

async fn conversation_id(
    conn: &mut PgConnection,
    p: &NewMessageParams,
) -> Result<ConversationId, StoreError> {
    conversation_for(
        conn,
        p.tenant_id,
        p.platform,
        &p.chat,
        &p.thread,
        &p.character,
    )
    .await
}

impl TenantStore {
    /// Records an inbound message (and its conversation) once; a redelivery
    /// returns the existing row.
    pub async fn record_message(&self, p: &NewMessageParams) -> Result<RecordOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let conversation_id = conversation_id(&mut tx, p).await?;
        let inserted = sqlx::query_scalar::<_, InboxId>(
            "INSERT INTO inbox (id, tenant_id, conversation_id, platform, platform_message_id, \
             delivery_id, author_id, text, attachments, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (platform, platform_message_id) DO NOTHING RETURNING id",
        )
        .bind(InboxId::new_v7())
        .bind(p.tenant_id)
        .bind(conversation_id)
        .bind(p.platform.as_str())
        .bind(&p.platform_message_id)
        .bind(&p.delivery_id)
        .bind(&p.author_id)
        .bind(&p.text)
        .bind(Json(&p.attachments))
        .bind(p.received_at)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match inserted {
            Some(inbox_id) => RecordOutcome::New { inbox_id },
            None => {
                let (inbox_id, enqueued) = sqlx::query_as::<_, (InboxId, bool)>(
                    "SELECT id, enqueued_at IS NOT NULL FROM inbox \
                     WHERE platform = $1 AND platform_message_id = $2",
                )
                .bind(p.platform.as_str())
                .bind(&p.platform_message_id)
                .fetch_one(&mut *tx)
                .await?;
                RecordOutcome::Duplicate { inbox_id, enqueued }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Writes a notice to the conversation a message would belong to (the
    /// message itself is not recorded), for delivery like a reply.
    pub async fn record_notice(
        &self,
        p: &NewMessageParams,
        text: &str,
    ) -> Result<OutboxId, StoreError> {
        let mut tx = self.begin().await?;
        let conversation_id = conversation_id(&mut tx, p).await?;
        let id = OutboxId::new_v7();
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, conversation_id, dedupe_key, platform, chat, thread, text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(p.tenant_id)
        .bind(conversation_id)
        .bind(format!("notice:{id}"))
        .bind(p.platform.as_str())
        .bind(&p.chat)
        .bind(&p.thread)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The conversation that lives in thread `thread` of `platform`, if any:
    /// a message posted inside that thread continues it.
    pub async fn conversation_in_thread(
        &self,
        platform: Platform,
        thread: &str,
    ) -> Result<Option<ConversationModel>, StoreError> {
        let mut tx = self.begin().await?;
        let conversation = sqlx::query_as::<_, ConversationModel>(
            "SELECT id, tenant_id, chat, thread, character FROM conversations \
             WHERE platform = $1 AND thread = $2 AND thread <> '' LIMIT 1",
        )
        .bind(platform.as_str())
        .bind(thread)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(conversation)
    }

    /// Inbox messages not answered that arrived before `before`, oldest first.
    pub async fn unanswered_inbox(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<InboxId>, StoreError> {
        let mut tx = self.begin().await?;
        let ids = sqlx::query_scalar::<_, InboxId>(
            "SELECT id FROM inbox WHERE processed_at IS NULL AND received_at < $1 ORDER BY received_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Opens a message given up on (its turn failed for good and the user
    /// got the failure notice) for another turn; `false` otherwise.
    pub async fn reopen_failed_message(&self, id: InboxId) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let reopened = sqlx::query(
            "UPDATE inbox SET processed_at = NULL WHERE id = $1 AND processed_at IS NOT NULL \
             AND EXISTS (SELECT 1 FROM outbox WHERE dedupe_key LIKE 'turn-failed:' || $1::text || ':%')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(reopened == 1)
    }

    /// Notes that the message's turn job is on the queue.
    pub async fn mark_inbox_enqueued(&self, id: InboxId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE inbox SET enqueued_at = now() WHERE id = $1 AND enqueued_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An inbox message with its conversation.
    pub async fn inbox_message(&self, id: InboxId) -> Result<InboxModel, StoreError> {
        let mut tx = self.begin().await?;
        let out = sqlx::query_as::<_, InboxModel>(&format!(
            "SELECT {INBOX_COLUMNS} FROM inbox i JOIN conversations c ON c.id = i.conversation_id \
             WHERE i.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("inbox message"));
        tx.commit().await?;
        out
    }
}
