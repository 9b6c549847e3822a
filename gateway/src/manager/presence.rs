//! Presence, part of ingesting a message: while its turn runs, shows the user that the agent is
//! working — starts the Discord thread and keeps a typing indicator up.

use std::time::Duration;

use shared::access::discord::DiscordClient;
use shared::access::store::Store;
use shared::access::telegram::TelegramClient;
use shared::ids::{InboxId, Platform, TenantId};
use tokio_util::sync::CancellationToken;

/// How often the typing indicator is renewed (Discord shows it for ~10 s,
/// Telegram for ~5 s).
const TYPING_INTERVAL: Duration = Duration::from_secs(4);

/// Longest a typing indicator is kept up for one message.
const TYPING_TIMEOUT: Duration = Duration::from_secs(120);

/// A conversation that just accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Working {
    pub platform: Platform,
    /// The conversation's chat.
    pub chat: String,
    /// The conversation's thread ("" when none).
    pub thread: String,
    /// The message being answered.
    pub inbox_id: InboxId,
    pub tenant_id: TenantId,
    /// Name for a new Discord thread.
    pub thread_name: String,
}

/// Shows presence on the chat platforms.
#[derive(Debug, Clone)]
pub struct Presence {
    store: Store,
    discord: Option<DiscordClient>,
    telegram: Option<TelegramClient>,
    shutdown: CancellationToken,
}

impl Presence {
    /// Presence over the platform clients it may use.
    pub fn new(
        store: Store,
        discord: Option<DiscordClient>,
        telegram: Option<TelegramClient>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            discord,
            telegram,
            shutdown,
        }
    }

    /// Starts the Discord thread (if the conversation has a new one) and keeps
    /// a typing indicator up until the message is answered. Best effort:
    /// failures are logged, never surfaced to the sender.
    pub async fn show_working(&self, working: Working) {
        // Slack has no typing indicator for bots; the page shows replies only.
        if matches!(working.platform, Platform::Slack | Platform::Web) {
            return;
        }
        if let (Platform::Discord, Some(discord)) = (working.platform, &self.discord)
            && !working.thread.is_empty()
            && working.chat != working.thread
            && let Err(e) = discord
                .ensure_thread(&working.chat, &working.thread, &working.thread_name)
                .await
        {
            tracing::warn!(error = %e, "Cannot start Discord thread");
        }
        let deadline = tokio::time::Instant::now() + TYPING_TIMEOUT;
        while tokio::time::Instant::now() < deadline
            && !self.answered(working.tenant_id, working.inbox_id).await
        {
            if let Err(e) = self.typing(&working).await {
                tracing::debug!(error = %e, "Typing indicator failed");
                return;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(TYPING_INTERVAL) => {}
            }
        }
    }

    async fn answered(&self, tenant: TenantId, inbox_id: InboxId) -> bool {
        // An unreadable row ends the indicator rather than spinning on errors.
        self.store
            .tenant(tenant)
            .inbox_message(inbox_id)
            .await
            .map_or(true, |m| m.processed_at.is_some())
    }

    async fn typing(&self, working: &Working) -> anyhow::Result<()> {
        match (working.platform, &self.discord, &self.telegram) {
            (Platform::Discord, Some(discord), _) => {
                let channel = if working.thread.is_empty() {
                    &working.chat
                } else {
                    &working.thread
                };
                discord.typing(channel).await?;
            }
            (Platform::Telegram, _, Some(telegram)) => {
                telegram.typing(&working.chat, &working.thread).await?
            }
            _ => {}
        }
        Ok(())
    }
}
