//! What the gateway's chat page shows: the messages and delivered replies of
//! one chat on the page, and the proposals reviewed in one channel there.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{StoreError, TenantStore};
use crate::event::Attachment;

/// One line of a chat on the page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PageLine {
    /// The inbox or outbox row.
    pub id: uuid::Uuid,
    /// The thread it belongs to ("" for the chat itself; a review card's id).
    pub thread: String,
    /// Who wrote it: a page user id, or "" for the agent.
    pub author: String,
    pub text: String,
    /// The names of the files sent with it.
    pub files: Vec<String>,
    /// When it was received or delivered.
    pub at: DateTime<Utc>,
}

impl TenantStore {
    /// The newest `limit` lines of page chat `chat` (every thread), oldest
    /// first: what its people wrote and the replies delivered to it.
    pub async fn page_lines(&self, chat: &str, limit: i64) -> Result<Vec<PageLine>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", thread AS "thread!", author AS "author!", text AS "text!",
                      files AS "files!: Json<Vec<Attachment>>", at AS "at!"
               FROM (SELECT i.id, c.thread, i.author_id AS author, i.text, i.attachments AS files,
                            i.received_at AS at
                     FROM conversations c JOIN inbox i ON i.conversation_id = c.id
                     WHERE c.tenant_id = $1 AND c.platform = 'web' AND c.chat = $2
                     UNION ALL
                     SELECT o.id, c.thread, '', o.text, '[]'::jsonb, o.delivered_at
                     FROM conversations c JOIN outbox o ON o.conversation_id = c.id
                     WHERE c.tenant_id = $1 AND c.platform = 'web' AND c.chat = $2
                       AND o.delivered_at IS NOT NULL) lines
               ORDER BY at DESC LIMIT $3"#,
            self.tenant as _,
            chat,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .rev()
            .map(|r| PageLine {
                id: r.id,
                thread: r.thread,
                author: r.author,
                text: r.text,
                files: r.files.0.into_iter().map(|f| f.filename).collect(),
                at: r.at,
            })
            .collect())
    }
}
