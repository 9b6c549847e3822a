//! Discord gateway edge (serenity): MESSAGE_CREATE events in routed channels
//! and DMs become inbound messages. A top-level message starts a thread
//! (whose id is the message's id); a message inside that thread continues it.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use chrono::Utc;
use serenity::all::{Context, EventHandler, GatewayIntents, Message, MessageType, Ready};
use serenity::async_trait;
use shared::event::{Attachment, MAX_ATTACHMENTS};
use shared::ids::Platform;

use crate::manager::ingest::{InboundMessage, IngestManager, IngestOutcome, MAX_TEXT_CHARS};

/// Workspace name of direct messages in Discord routes (`tenant_routes.workspace`).
pub use shared::engine::member::DISCORD_DM_WORKSPACE as DM_WORKSPACE;

/// Attempts to record one Discord message before it is given up.
const INGEST_ATTEMPTS: u32 = 8;

/// First pause between attempts; doubles up to [`INGEST_RETRY_MAX`].
const INGEST_RETRY_START: std::time::Duration = std::time::Duration::from_millis(200);

/// Longest pause between attempts.
const INGEST_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The intents the gateway connection asks for.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

/// Handles Discord messages; serenity calls it for every MESSAGE_CREATE.
#[derive(Clone)]
pub struct DiscordEdge {
    ingest: IngestManager,
    own_user_id: Arc<OnceLock<u64>>,
    allowed_bots: Arc<HashSet<u64>>,
}

impl DiscordEdge {
    /// An edge over the managers; `allowed_bot_ids` are bots whose messages
    /// are answered.
    pub fn new(ingest: IngestManager, allowed_bot_ids: &[String]) -> Self {
        Self {
            ingest,
            own_user_id: Arc::new(OnceLock::new()),
            allowed_bots: Arc::new(
                allowed_bot_ids
                    .iter()
                    .filter_map(|id| id.parse().ok())
                    .collect(),
            ),
        }
    }

    /// Sets the bot's own user id (from READY), so its own messages are ignored.
    pub fn set_own_user_id(&self, id: u64) {
        let _ = self.own_user_id.set(id);
    }

    /// Ingests one MESSAGE_CREATE.
    pub async fn on_message(&self, msg: &Message) -> anyhow::Result<IngestOutcome> {
        self.ingest
            .accept(Platform::Discord, self.normalize(msg))
            .await
    }

    fn normalize(&self, msg: &Message) -> Option<InboundMessage> {
        let author = msg.author.id.get();
        if self.own_user_id.get() == Some(&author)
            || (msg.author.bot && !self.allowed_bots.contains(&author))
        {
            return None;
        }
        if !matches!(msg.kind, MessageType::Regular | MessageType::InlineReply) {
            return None;
        }
        let attachments: Vec<Attachment> = msg
            .attachments
            .iter()
            .take(MAX_ATTACHMENTS)
            .map(|a| {
                Attachment::announced(
                    a.filename.clone(),
                    a.url.clone(),
                    a.content_type.clone(),
                    Some(u64::from(a.size)),
                )
            })
            .collect();
        if msg.content.trim().is_empty() && attachments.is_empty() {
            return None;
        }
        let channel = msg.channel_id.to_string();
        let (workspace, thread) = match msg.guild_id {
            // A top-level guild message starts a thread with the message's id;
            // if the channel is itself a conversation's thread, the
            // IngestManager continues that conversation instead.
            Some(guild) => (guild.to_string(), msg.id.to_string()),
            None => (DM_WORKSPACE.to_owned(), String::new()),
        };
        Some(InboundMessage {
            platform: Platform::Discord,
            workspace,
            chat: channel,
            thread,
            message_id: msg.id.to_string(),
            delivery_id: None,
            author_id: author.to_string(),
            author_team: None,
            author_roles: msg
                .member
                .iter()
                .flat_map(|m| m.roles.iter().map(ToString::to_string))
                .collect(),
            text: msg.content.chars().take(MAX_TEXT_CHARS).collect(),
            attachments,
            received_at: Utc::now(),
        })
    }
}

#[async_trait]
impl EventHandler for DiscordEdge {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.set_own_user_id(ready.user.id.get());
        tracing::info!(shard = ?ready.shard, "Discord gateway ready");
    }

    async fn message(&self, _ctx: Context, msg: Message) {
        // Discord never redelivers a gateway event, so a failed record is
        // retried here (Postgres or Redis briefly down) before giving up.
        let mut wait = INGEST_RETRY_START;
        for attempt in 1..=INGEST_ATTEMPTS {
            match self.on_message(&msg).await {
                Ok(_) => return,
                Err(e) if attempt < INGEST_ATTEMPTS => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        attempt,
                        "Discord message not recorded yet; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(INGEST_RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), discord.message_id = %msg.id, "Discord message lost")
                }
            }
        }
    }
}
