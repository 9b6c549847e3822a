//! The durable inbox: every accepted inbound message, deduplicated on the
//! platform's message id, and its conversation.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
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

/// A conversation's key, with the character that answers it if it is new.
struct ConversationKey<'a> {
    platform: &'a str,
    chat: &'a str,
    thread: &'a str,
    character: &'a str,
}

impl<'a> ConversationKey<'a> {
    fn of(p: &'a NewMessageParams) -> Self {
        Self {
            platform: p.platform.as_str(),
            chat: &p.chat,
            thread: &p.thread,
            character: &p.character,
        }
    }
}

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
    let key = ConversationKey {
        platform: platform.as_str(),
        chat,
        thread,
        character,
    };
    let ids = conversations_for(conn, tenant, &[key]).await?;
    ids.into_iter()
        .next()
        .ok_or(StoreError::NotFound("conversation"))
}

/// The conversations of `keys`, in their order, each created if it does not
/// exist yet: one statement for any number of keys (two when another
/// transaction created one of them at the same moment).
async fn conversations_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    keys: &[ConversationKey<'_>],
) -> Result<Vec<ConversationId>, StoreError> {
    let key_of = |k: &ConversationKey<'_>| {
        (
            k.platform.to_owned(),
            k.chat.to_owned(),
            k.thread.to_owned(),
        )
    };
    let column = |keys: &[&ConversationKey<'_>],
                  field: for<'k> fn(&ConversationKey<'k>) -> &'k str| {
        keys.iter()
            .map(|k| field(k).to_owned())
            .collect::<Vec<String>>()
    };
    let mut found: HashMap<(String, String, String), ConversationId> = HashMap::new();
    // Two rounds: a concurrent first message of the same conversation may
    // insert the row after our look-up (our insert then waits for it and
    // skips it; the next round's look-up sees it).
    for _ in 0..2 {
        let missing: Vec<&ConversationKey<'_>> = keys
            .iter()
            .filter(|k| !found.contains_key(&key_of(k)))
            .collect();
        if missing.is_empty() {
            break;
        }
        // One statement: existing conversations are only read (a plain
        // read does not wait for a turn that holds the row, an insert
        // attempt would), each key on its own (LATERAL … LIMIT 1 keeps the
        // planner from scanning all of the tenant's conversations), and
        // only the keys not found are inserted.
        let new_ids: Vec<uuid::Uuid> = missing.iter().map(|_| ConversationId::new_v7().0).collect();
        let rows = sqlx::query!(
            r#"WITH k AS (
                 SELECT DISTINCT ON (platform, chat, thread) id, platform, chat, thread, character
                 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                     AS m (id, platform, chat, thread, character)),
             found AS (
                 SELECT c.id, c.platform, c.chat, c.thread FROM k,
                 LATERAL (SELECT c.id, c.platform, c.chat, c.thread FROM conversations c
                     WHERE c.tenant_id = $1 AND c.platform = k.platform AND c.chat = k.chat
                     AND c.thread = k.thread LIMIT 1) c),
             inserted AS (
                 INSERT INTO conversations (id, tenant_id, platform, chat, thread, character)
                 SELECT k.id, $1, k.platform, k.chat, k.thread, k.character FROM k
                 WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.platform = k.platform
                     AND f.chat = k.chat AND f.thread = k.thread)
                 ON CONFLICT (tenant_id, platform, chat, thread) DO NOTHING
                 RETURNING id, platform, chat, thread)
             SELECT id AS "id!: ConversationId", platform AS "platform!", chat AS "chat!",
             thread AS "thread!" FROM found
             UNION ALL SELECT id, platform, chat, thread FROM inserted"#,
            tenant as _,
            &new_ids,
            &column(&missing, |k| k.platform),
            &column(&missing, |k| k.chat),
            &column(&missing, |k| k.thread),
            &column(&missing, |k| k.character)
        )
        .fetch_all(&mut *conn)
        .await?;
        found.extend(
            rows.into_iter()
                .map(|r| ((r.platform, r.chat, r.thread), r.id)),
        );
    }
    let ids: Option<Vec<ConversationId>> = keys
        .iter()
        .map(|k| found.get(&key_of(k)).copied())
        .collect();
    if let Some(ids) = ids {
        return Ok(ids);
    }
    Err(StoreError::NotFound("conversation"))
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
    /// Records inbound messages of this tenant (and their conversations),
    /// each once: a redelivery, or the same message twice in `batch`, gets
    /// the existing row. Outcomes are in `batch` order. A fixed number of
    /// statements for any number of messages.
    pub async fn record_messages(
        &mut self,
        batch: &[&NewMessageParams],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let keys: Vec<ConversationKey<'_>> = batch.iter().map(|p| ConversationKey::of(p)).collect();
        let tenant = self.tenant;
        let conversations = conversations_for(self, tenant, &keys).await?;
        let ids: Vec<uuid::Uuid> = batch.iter().map(|_| InboxId::new_v7().0).collect();
        let platforms: Vec<&str> = batch.iter().map(|p| p.platform.as_str()).collect();
        let message_ids: Vec<&str> = batch
            .iter()
            .map(|p| p.platform_message_id.as_str())
            .collect();
        let inserted: HashSet<InboxId> = sqlx::query_scalar!(
            r#"INSERT INTO inbox (id, tenant_id, conversation_id, platform, platform_message_id,
             delivery_id, author_id, text, attachments, received_at)
             SELECT m.id, $1, m.conversation_id, m.platform, m.platform_message_id, m.delivery_id,
             m.author_id, m.text, m.attachments, m.received_at
             FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::jsonb[], $10::timestamptz[]) AS m (id, conversation_id, platform,
             platform_message_id, delivery_id, author_id, text, attachments, received_at)
             ON CONFLICT (platform, platform_message_id) DO NOTHING RETURNING id AS "id: InboxId""#,
            tenant as _,
            &ids,
            &conversations.iter().map(|c| c.0).collect::<Vec<_>>(),
            &platforms as _,
            &message_ids as _,
            &batch
                .iter()
                .map(|p| p.delivery_id.as_deref())
                .collect::<Vec<_>>() as _,
            &batch
                .iter()
                .map(|p| p.author_id.as_str())
                .collect::<Vec<_>>() as _,
            &batch.iter().map(|p| p.text.as_str()).collect::<Vec<_>>() as _,
            &batch
                .iter()
                .map(|p| Json(&p.attachments))
                .collect::<Vec<_>>() as _,
            &batch.iter().map(|p| p.received_at).collect::<Vec<_>>()
        )
        .fetch_all(&mut **self)
        .await?
        .into_iter()
        .collect();
        let mut existing = HashMap::new();
        if inserted.len() < batch.len() {
            let rows = sqlx::query!(
                r#"SELECT i.platform AS "platform!", i.platform_message_id AS "message!",
                   i.id AS "id!: InboxId", i.processed_at IS NOT NULL AS "processed!"
                   FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS k (platform, message)) k,
                   LATERAL (SELECT i.platform, i.platform_message_id, i.id, i.processed_at FROM inbox i
                       WHERE i.platform = k.platform AND i.platform_message_id = k.message LIMIT 1) i"#,
                &platforms as _,
                &message_ids as _
            )
            .fetch_all(&mut **self)
            .await?;
            existing.extend(
                rows.into_iter()
                    .map(|r| ((r.platform, r.message), (r.id, r.processed))),
            );
        }
        batch
            .iter()
            .zip(ids)
            .map(|(p, id)| {
                let id = InboxId(id);
                if inserted.contains(&id) {
                    return Ok(RecordOutcome::New { inbox_id: id });
                }
                let key = (
                    p.platform.as_str().to_owned(),
                    p.platform_message_id.clone(),
                );
                existing
                    .get(&key)
                    .map(|&(inbox_id, processed)| RecordOutcome::Duplicate {
                        inbox_id,
                        processed,
                    })
                    .ok_or(StoreError::NotFound("inbox message"))
            })
            .collect()
    }
}

impl TenantStore {
    /// Records an inbound message (and its conversation) once; a redelivery
    /// returns the existing row.
    pub async fn record_message(&self, p: &NewMessageParams) -> Result<RecordOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let outcome = tx.record_messages(&[p]).await?.into_iter().next();
        tx.commit().await?;
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
