//! Telegram edge: turns Bot API updates (from the webhook or from long
//! polling) into inbound messages. Private chats, groups and forum topics
//! (`message_thread_id`) are conversations of their own.

use std::time::Duration;

use chrono::Utc;
use shared::access::telegram::TelegramClient;
use shared::event::{Attachment, MAX_ATTACHMENTS};
use shared::ids::Platform;
use teloxide_core::types::{Message, Update, UpdateKind};
use tokio_util::sync::CancellationToken;

use crate::manager::ingest::{InboundMessage, IngestManager, MAX_TEXT_CHARS};

/// Workspace of Telegram routes (`tenant_routes.workspace`): routes name the
/// chat id (or `*`) as their channel.
pub use shared::engine::member::TELEGRAM_WORKSPACE as BOT_WORKSPACE;

/// Pause after a failed poll or ingest before trying again.
const POLL_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// The user message in an update, or `None` for anything else (edits,
/// callbacks, bots, service messages).
pub fn normalize(update: &Update) -> Option<InboundMessage> {
    let UpdateKind::Message(msg) = &update.kind else {
        return None;
    };
    let author = msg.from.as_ref()?;
    if author.is_bot {
        return None;
    }
    let attachments = attachments(msg);
    let text = msg.text().or_else(|| msg.caption()).unwrap_or_default();
    if text.trim().is_empty() && attachments.is_empty() {
        return None;
    }
    let chat = msg.chat.id.0.to_string();
    let thread = match (msg.is_topic_message, msg.thread_id) {
        (true, Some(thread)) => thread.0.0.to_string(),
        _ => String::new(),
    };
    Some(InboundMessage {
        platform: Platform::Telegram,
        workspace: BOT_WORKSPACE.to_owned(),
        // Message ids are unique within a chat.
        message_id: format!("{chat}:{}", msg.id.0),
        chat,
        thread,
        delivery_id: Some(update.id.0.to_string()),
        author_id: author.id.0.to_string(),
        author_team: None,
        author_roles: Vec::new(),
        text: text.chars().take(MAX_TEXT_CHARS).collect(),
        attachments,
        received_at: Utc::now(),
    })
}

/// Files in a message, by Telegram file id (fetched later with `getFile`).
fn attachments(msg: &Message) -> Vec<Attachment> {
    let mut files = Vec::new();
    if let Some(doc) = msg.document() {
        files.push(Attachment::announced(
            doc.file_name
                .clone()
                .unwrap_or_else(|| "document".to_owned()),
            format!("telegram-file:{}", doc.file.id.0),
            doc.mime_type.as_ref().map(ToString::to_string),
            Some(u64::from(doc.file.size)),
        ));
    }
    if let Some(photo) = msg.photo().and_then(<[_]>::last) {
        files.push(Attachment::announced(
            "photo.jpg".to_owned(),
            format!("telegram-file:{}", photo.file.id.0),
            Some("image/jpeg".to_owned()),
            Some(u64::from(photo.file.size)),
        ));
    }
    files.truncate(MAX_ATTACHMENTS);
    files
}

/// Long polling for local use: takes updates from `getUpdates` and ingests
/// each; the offset only moves past an update once it is recorded.
pub async fn poll(client: TelegramClient, ingest: IngestManager, shutdown: CancellationToken) {
    if let Err(e) = client.delete_webhook().await {
        tracing::warn!(error = %e, "Cannot delete the Telegram webhook before polling");
    }
    let mut offset = 0;
    while !shutdown.is_cancelled() {
        let updates = tokio::select! {
            () = shutdown.cancelled() => return,
            updates = client.updates(offset) => updates,
        };
        let updates = match updates {
            Ok(updates) => updates,
            Err(e) => {
                tracing::warn!(error = %e, "Telegram polling failed; retrying");
                pause(&shutdown).await;
                continue;
            }
        };
        for update in updates {
            if let Err(e) = ingest.accept(Platform::Telegram, normalize(&update)).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "Telegram update not recorded; retrying"
                );
                pause(&shutdown).await;
                break;
            }
            offset = update.id.as_offset();
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(POLL_RETRY_INTERVAL) => {}
    }
}
