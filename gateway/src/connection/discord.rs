//! Discord gateway edge (serenity): MESSAGE_CREATE events in routed channels
//! and DMs become inbound messages. A top-level message starts a thread
//! (whose id is the message's id); a message inside that thread continues it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serenity::all::{Context, EventHandler, GatewayIntents, GuildId, Message, MessageType, Ready};
use serenity::async_trait;
use shared::access::discord::DiscordClient;
use shared::access::store::Store;
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

/// Most pages of 100 messages read back per channel when catching up.
const CATCH_UP_PAGES: usize = 10;

/// Handles Discord messages; serenity calls it for every MESSAGE_CREATE.
#[derive(Clone)]
pub struct DiscordEdge {
    ingest: IngestManager,
    own_user_id: Arc<OnceLock<u64>>,
    allowed_bots: Arc<HashSet<u64>>,
    /// Where what was posted while the gateway was away is read back from.
    history: Option<(Store, DiscordClient)>,
}

impl DiscordEdge {
    /// An edge over the managers; `allowed_bot_ids` are bots whose messages
    /// are answered; with `history`, it catches up after (re)connecting.
    pub fn new(
        ingest: IngestManager,
        allowed_bot_ids: &[String],
        history: Option<(Store, DiscordClient)>,
    ) -> Self {
        Self {
            ingest,
            history,
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

impl DiscordEdge {
    /// Reads back what was posted while the gateway was away (down, rolling
    /// out, reconnecting): each explicitly routed channel's messages, and
    /// its recent conversation threads', from shortly before the newest one
    /// recorded (at most a day back; a quarter of an hour when none is),
    /// oldest first, ingested like live ones (a message recorded already
    /// is a duplicate). Returns how many were taken.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let Some((store, client)) = &self.history else {
            return Ok(0);
        };
        let (channels, newest) = store.discord_catch_up().await?;
        let start = catch_up_start(newest.as_deref(), Utc::now());
        let mut taken = 0;
        let mut roles: HashMap<(u64, u64), Vec<String>> = HashMap::new();
        for (channel, guild) in channels {
            let guild = guild.parse::<u64>().ok().map(GuildId::new);
            let mut after = start;
            for _ in 0..CATCH_UP_PAGES {
                let page = match client.messages_after(&channel, after).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, discord.channel = %channel, "Cannot read a channel back");
                        break;
                    }
                };
                let full = page.len() >= 100;
                for mut msg in page {
                    after = after.max(msg.id.get());
                    // Read back over REST, a message names neither its guild
                    // nor its author's roles (which may make them a member).
                    msg.guild_id = msg.guild_id.or(guild);
                    let Some(mut inbound) = self.normalize(&msg) else {
                        continue;
                    };
                    if let Some(guild) = guild {
                        let key = (guild.get(), msg.author.id.get());
                        if let Entry::Vacant(entry) = roles.entry(key) {
                            entry.insert(
                                client.member_roles(key.0, key.1).await.unwrap_or_default(),
                            );
                        }
                        inbound.author_roles.clone_from(&roles[&key]);
                    }
                    let outcome = self.ingest.accept(Platform::Discord, Some(inbound)).await?;
                    taken += usize::from(matches!(outcome, IngestOutcome::Accepted(_)));
                }
                if !full {
                    break;
                }
            }
        }
        metrics::counter!("automate_e_discord_caught_up_total").increment(taken as u64);
        tracing::info!(taken, "Discord caught up");
        Ok(taken)
    }

    /// Catches up in the background.
    pub fn spawn_catch_up(&self) {
        let edge = self.clone();
        tokio::spawn(async move {
            if let Err(e) = edge.catch_up().await {
                tracing::error!(error = format!("{e:#}"), "Discord catch-up failed");
            }
        });
    }
}

/// Discord's epoch (2015-01-01), in Unix milliseconds: snowflakes count
/// milliseconds from it in their upper bits.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

/// Margin before the newest recorded message: messages of other channels
/// posted at about the same time may not have been recorded.
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// The snowflake catching up starts after: shortly before the newest
/// recorded message, never more than a day back, a quarter of an hour back
/// when nothing is recorded.
fn catch_up_start(newest: Option<&str>, now: DateTime<Utc>) -> u64 {
    let at = |id: u64| {
        let ms = i64::try_from(id >> 22).unwrap_or(i64::MAX) + DISCORD_EPOCH_MS;
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(now)
    };
    let from = newest
        .and_then(|id| id.parse::<u64>().ok())
        .map_or(now - chrono::Duration::minutes(15), |id| {
            at(id) - CATCH_UP_MARGIN
        });
    let from = from.max(now - chrono::Duration::days(1));
    u64::try_from(from.timestamp_millis() - DISCORD_EPOCH_MS).unwrap_or(0) << 22
}

#[async_trait]
impl EventHandler for DiscordEdge {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.set_own_user_id(ready.user.id.get());
        tracing::info!(shard = ?ready.shard, "Discord gateway ready");
        // A new session: what was posted since the last one never comes as events.
        self.spawn_catch_up();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snowflake(at: DateTime<Utc>) -> u64 {
        u64::try_from(at.timestamp_millis() - DISCORD_EPOCH_MS).unwrap() << 22
    }

    #[test]
    fn catching_up_starts_shortly_before_the_newest_message_and_at_most_a_day_back() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let hour_ago = snowflake(now - chrono::Duration::hours(1)).to_string();
        assert_eq!(
            catch_up_start(Some(&hour_ago), now),
            snowflake(now - chrono::Duration::hours(1) - CATCH_UP_MARGIN)
        );
        let week_ago = snowflake(now - chrono::Duration::days(7)).to_string();
        assert_eq!(
            catch_up_start(Some(&week_ago), now),
            snowflake(now - chrono::Duration::days(1))
        );
        assert_eq!(
            catch_up_start(None, now),
            snowflake(now - chrono::Duration::minutes(15))
        );
    }
}
