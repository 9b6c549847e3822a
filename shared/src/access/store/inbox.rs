//! The durable inbox: every accepted inbound message, deduplicated on the
//! platform's message id, and its conversation.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::{StoreError, TenantStore, TenantTx, in_own_transaction, step_error};
use crate::event::Attachment;
use crate::ids::{ConversationId, InboxId, OutboxId, Platform, TenantId};

/// A normalized inbound message to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessageParams {
    pub tenant_id: TenantId,
    /// Character that answers.
    pub character: String,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationModel {
    pub id: ConversationId,
    pub tenant_id: TenantId,
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
        /// Whether its turn is done (else its job is queued again, a no-op
        /// while it is still on the queue).
        processed: bool,
    },
}

/// An inbox message with its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxModel {
    pub id: InboxId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// Character of the conversation.
    pub character: String,
    pub platform: Platform,
    pub chat: String,
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

/// The conversation `(tenant, platform, chat, thread)`, created for
/// `character` if it does not exist yet (`automate_e_conversations`,
/// migration 30).
pub(super) async fn conversation_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    platform: Platform,
    chat: &str,
    thread: &str,
    character: &str,
) -> Result<ConversationId, StoreError> {
    let ids = sqlx::query_scalar!(
        r#"SELECT automate_e_conversations($1, ARRAY[$2::uuid], ARRAY[$3::text],
           ARRAY[$4::text], ARRAY[$5::text], ARRAY[$6::text]) AS "ids: Vec<Option<ConversationId>>""#,
        tenant as _,
        ConversationId::new_v7() as _,
        platform.as_str(),
        chat,
        thread,
        character
    )
    .fetch_one(&mut *conn)
    .await?;
    ids.into_iter()
        .flatten()
        .next()
        .flatten()
        .ok_or(StoreError::NotFound("conversation"))
}

/// Records `batch`, messages of `tenant`, in one call of
/// `automate_e_inbox_record` (migration 30): in the transaction of `conn`
/// when it has one, else in the call's own.
async fn record_batch(
    conn: impl sqlx::PgExecutor<'_>,
    tenant: TenantId,
    batch: &[&NewMessageParams],
) -> Result<Vec<RecordOutcome>, StoreError> {
    let column = |field: fn(&NewMessageParams) -> &str| -> Vec<&str> {
        batch.iter().map(|p| field(p)).collect()
    };
    let ids: Vec<uuid::Uuid> = batch.iter().map(|_| InboxId::new_v7().0).collect();
    // Used for the conversations that do not exist yet.
    let conversation_ids: Vec<uuid::Uuid> =
        batch.iter().map(|_| ConversationId::new_v7().0).collect();
    let rows = sqlx::query!(
        r#"SELECT inbox_id AS "inbox_id?: InboxId", created AS "created!",
           processed AS "processed!"
           FROM automate_e_inbox_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
        tenant as _,
        &ids,
        &conversation_ids,
        &column(|p| p.platform.as_str()) as _,
        &column(|p| &p.chat) as _,
        &column(|p| &p.thread) as _,
        &column(|p| &p.character) as _,
        &column(|p| &p.platform_message_id) as _,
        &batch
            .iter()
            .map(|p| p.delivery_id.as_deref())
            .collect::<Vec<_>>() as _,
        &column(|p| &p.author_id) as _,
        &column(|p| &p.text) as _,
        &batch
            .iter()
            .map(|p| Json(&p.attachments))
            .collect::<Vec<_>>() as _,
        &batch.iter().map(|p| p.received_at).collect::<Vec<_>>()
    )
    .fetch_all(conn)
    .await
    .map_err(step_error)?;
    if rows.len() != batch.len() {
        return Err(StoreError::NotFound("inbox message"));
    }
    rows.into_iter()
        .map(|r| match (r.inbox_id, r.created) {
            (Some(inbox_id), true) => Ok(RecordOutcome::New { inbox_id }),
            (Some(inbox_id), false) => Ok(RecordOutcome::Duplicate {
                inbox_id,
                processed: r.processed,
            }),
            (None, _) => Err(StoreError::NotFound("inbox message")),
        })
        .collect()
}

/// Writes `text` to the outbox under `dedupe_key`, for delivery into
/// conversation `conversation`; `None` when an item with that key exists.
pub(super) async fn insert_outbox(
    conn: &mut PgConnection,
    id: OutboxId,
    conversation: ConversationId,
    dedupe_key: &str,
    text: &str,
) -> Result<Option<OutboxId>, StoreError> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO outbox (id, tenant_id, conversation_id, dedupe_key, platform, chat, thread, text)
           SELECT $1, c.tenant_id, c.id, $2, c.platform, c.chat, c.thread, $3 FROM conversations c
           WHERE c.id = $4
           ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id AS "id: OutboxId""#,
        id as _,
        dedupe_key,
        text,
        conversation as _
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

impl TenantTx {
    /// [`TenantStore::record_messages`] in this transaction.
    pub async fn record_messages(
        &mut self,
        batch: &[&NewMessageParams],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let tenant = self.tenant;
        record_batch(&mut **self, tenant, batch).await
    }
}

impl TenantStore {
    /// Records inbound messages of this tenant (and their conversations),
    /// each once: a redelivery, or the same message twice in `batch`, gets
    /// the existing row. Outcomes are in `batch` order. One round trip and
    /// one transaction for any number of messages.
    pub async fn record_messages(
        &self,
        batch: &[&NewMessageParams],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        record_batch(&self.pool, self.tenant, batch).await
    }

    /// Records an inbound message (and its conversation) once; a redelivery
    /// returns the existing row.
    pub async fn record_message(&self, p: &NewMessageParams) -> Result<RecordOutcome, StoreError> {
        let outcome = self.record_messages(&[p]).await?.into_iter().next();
        outcome.ok_or(StoreError::NotFound("inbox message"))
    }

    /// Writes a notice to the conversation a message would belong to (the
    /// message itself is not recorded), for delivery like a reply.
    pub async fn record_notice(
        &self,
        p: &NewMessageParams,
        text: &str,
    ) -> Result<OutboxId, StoreError> {
        let mut tx = self.begin().await?;
        let conversation_id = conversation_for(
            &mut tx,
            p.tenant_id,
            p.platform,
            &p.chat,
            &p.thread,
            &p.character,
        )
        .await?;
        let id = OutboxId::new_v7();
        insert_outbox(&mut tx, id, conversation_id, &format!("notice:{id}"), text)
            .await?
            .ok_or(StoreError::NotFound("notice's conversation"))?;
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
        let conversation = sqlx::query_as!(
            ConversationModel,
            r#"SELECT id AS "id: ConversationId", tenant_id AS "tenant_id: TenantId", chat, thread,
               character FROM conversations WHERE platform = $1 AND thread = $2 AND thread <> ''
               LIMIT 1"#,
            platform as _,
            thread
        )
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
    ) -> Result<Vec<(InboxId, bool)>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id AS "id: InboxId",
                 jsonb_path_exists(attachments, '$[*] ? (!exists(@.stored) && !exists(@.refused))')
                   AS "files_pending!"
               FROM inbox WHERE tenant_id = $3 AND processed_at IS NULL
               AND received_at < $1 ORDER BY received_at LIMIT $2"#,
            before,
            limit,
            self.tenant as _
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|r| (r.id, r.files_pending)).collect())
    }

    /// Records what became of an unanswered message's files; `false` when
    /// it was answered meanwhile.
    pub async fn set_attachments(
        &self,
        id: InboxId,
        attachments: &[Attachment],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query!(
            "UPDATE inbox SET attachments = $2 WHERE id = $1 AND processed_at IS NULL",
            id as _,
            Json(attachments) as _
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Writes a notice into a conversation (delivered like a reply); `None`
    /// when one with this key exists already.
    pub async fn notify(
        &self,
        conversation: ConversationId,
        dedupe_key: &str,
        text: &str,
    ) -> Result<Option<OutboxId>, StoreError> {
        let mut tx = self.begin().await?;
        let id = insert_outbox(&mut tx, OutboxId::new_v7(), conversation, dedupe_key, text).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Opens a message given up on (its turn failed for good and the user
    /// got the failure notice) for another turn; `false` otherwise. The
    /// notice is found by a byte-wise range of its key (every key that
    /// starts `turn-failed:<id>:`), which row-level security lets the
    /// `outbox_failure_notices` index answer; the `LIKE` names that index.
    pub async fn reopen_failed_message(&self, id: InboxId) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let reopened = sqlx::query!(
            "UPDATE inbox SET processed_at = NULL WHERE id = $1 AND processed_at IS NOT NULL \
             AND EXISTS (SELECT 1 FROM outbox WHERE dedupe_key LIKE 'turn-failed:%' \
                 AND dedupe_key ~>=~ ('turn-failed:' || $1::text || ':') \
                 AND dedupe_key ~<~ ('turn-failed:' || $1::text || ';'))",
            id as _
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(reopened == 1)
    }
}

impl TenantTx {
    /// An inbox message with its conversation.
    pub async fn inbox_message(&mut self, id: InboxId) -> Result<InboxModel, StoreError> {
        sqlx::query_as!(
            InboxModel,
            r#"SELECT i.id AS "id: InboxId", i.tenant_id AS "tenant_id: TenantId",
               i.conversation_id AS "conversation_id: ConversationId", c.character,
               c.platform AS "platform: Platform", c.chat, c.thread, i.author_id, i.text,
               i.attachments AS "attachments: Json<Vec<Attachment>>", i.received_at, i.processed_at
               FROM inbox i JOIN conversations c ON c.id = i.conversation_id WHERE i.id = $1"#,
            id as _
        )
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("inbox message"))
    }
}

in_own_transaction! {
    /// An inbox message with its conversation.
    fn inbox_message(&self, id: InboxId) -> InboxModel;
}
