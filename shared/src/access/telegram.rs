//! Telegram Bot API client (teloxide-core): messages and chat actions.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use teloxide_core::RequestError;
use teloxide_core::prelude::*;
use teloxide_core::types::{ChatAction, MessageId, ThreadId};

/// Errors of the Telegram Bot API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelegramError {
    /// Telegram asked us to wait.
    #[error("rate limited by Telegram; retry after {0:?}")]
    RetryAfter(Duration),
    /// Telegram refused the request.
    #[error("Telegram refused the request: {0}")]
    Api(String),
    /// A stored id is not a Telegram id.
    #[error("`{0}` is not a Telegram id")]
    InvalidId(String),
    /// The request did not complete.
    #[error("cannot reach Telegram: {0}")]
    Transport(String),
}

impl TelegramError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RetryAfter(_) | Self::Transport(_))
    }

    /// How long Telegram asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter(wait) => Some(*wait),
            _ => None,
        }
    }
}

impl From<RequestError> for TelegramError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::RetryAfter(wait) => Self::RetryAfter(wait.duration()),
            RequestError::Api(api) => Self::Api(api.to_string()),
            RequestError::MigrateToChatId(id) => Self::Api(format!("the group moved to chat {id}")),
            // Its text would hold the raw answer: the message text.
            RequestError::InvalidJson { .. } => Self::Transport("an unreadable answer".to_owned()),
            other => Self::Transport(other.to_string()),
        }
    }
}

impl From<TelegramError> for crate::job::JobFailure {
    fn from(e: TelegramError) -> Self {
        let retryable = e.is_retryable();
        Self::new(e, retryable, "Cannot post to Telegram")
    }
}

/// Long-poll wait per `getUpdates` call, in seconds (the HTTP timeout is longer).
pub const LONG_POLL_SECS: u32 = 25;

/// A Telegram bot's client.
#[derive(Clone)]
pub struct TelegramClient {
    bot: Bot,
}

impl std::fmt::Debug for TelegramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramClient").finish_non_exhaustive()
    }
}

fn chat_id(raw: &str) -> Result<ChatId, TelegramError> {
    raw.parse()
        .map(ChatId)
        .map_err(|_| TelegramError::InvalidId(raw.to_owned()))
}

fn thread_id(raw: &str) -> Result<Option<ThreadId>, TelegramError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(|id| Some(ThreadId(MessageId(id))))
        .map_err(|_| TelegramError::InvalidId(raw.to_owned()))
}

/// Whether an answer teloxide could not read says `ok: true`: the message
/// was sent, and sending it again would post it twice.
fn accepted(raw: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(raw).is_ok_and(|v| v["ok"] == true)
}

impl TelegramClient {
    /// A client for the Bot API at `api_base_url` (`https://api.telegram.org`).
    pub fn new(token: &SecretString, api_base_url: &str) -> Result<Self, TelegramError> {
        let url = reqwest::Url::parse(api_base_url.trim_end_matches('/'))
            .map_err(|e| TelegramError::InvalidId(format!("api url: {e}")))?;
        let http = teloxide_core::net::default_reqwest_settings()
            .timeout(Duration::from_secs(u64::from(LONG_POLL_SECS) + 15))
            .build()
            .map_err(|e| TelegramError::Transport(e.to_string()))?;
        Ok(Self {
            bot: Bot::with_client(token.expose_secret(), http).set_api_url(url),
        })
    }

    /// Posts `text` (at most 4,096 UTF-16 units) to a chat, in a forum topic
    /// when `thread` is not empty; returns the new message's id.
    pub async fn post_message(
        &self,
        chat: &str,
        thread: &str,
        text: &str,
    ) -> Result<String, TelegramError> {
        let mut request = self.bot.send_message(chat_id(chat)?, text);
        if let Some(thread) = thread_id(thread)? {
            request = request.message_thread_id(thread);
        }
        match request.await {
            Ok(message) => Ok(message.id.0.to_string()),
            Err(RequestError::InvalidJson { raw, .. }) if accepted(&raw) => {
                tracing::warn!("Telegram sent the message; its answer could not be read");
                Ok(String::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Shows "typing…" in a chat (or topic) for about five seconds.
    pub async fn typing(&self, chat: &str, thread: &str) -> Result<(), TelegramError> {
        let mut request = self
            .bot
            .send_chat_action(chat_id(chat)?, ChatAction::Typing);
        if let Some(thread) = thread_id(thread)? {
            request = request.message_thread_id(thread);
        }
        request.await?;
        Ok(())
    }

    /// Fetches a file by its id: `getFile`, then the file's URL (which
    /// holds the bot token), at most `max_bytes`.
    pub async fn download(
        &self,
        http: &reqwest::Client,
        file_id: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, crate::access::download::DownloadError> {
        use crate::access::download::{self, DownloadError};
        let file = self
            .bot
            .get_file(teloxide_core::types::FileId(file_id.to_owned()))
            .await
            .map_err(|e| match TelegramError::from(e) {
                TelegramError::Api(_) => DownloadError::Refused(400),
                other => DownloadError::Unavailable(other.to_string()),
            })?;
        if u64::from(file.size) > max_bytes {
            return Err(DownloadError::TooLarge {
                limit_bytes: max_bytes,
            });
        }
        let url = format!(
            "{}/file/bot{}/{}",
            self.bot.api_url().as_str().trim_end_matches('/'),
            self.bot.token(),
            file.path
        );
        download::fetch(http, &url, None, max_bytes, timeout).await
    }

    /// Stops webhook delivery so long polling can take over.
    pub async fn delete_webhook(&self) -> Result<(), TelegramError> {
        self.bot.delete_webhook().await?;
        Ok(())
    }

    /// Updates after `offset`, waiting up to [`LONG_POLL_SECS`] for one.
    pub async fn updates(
        &self,
        offset: i32,
    ) -> Result<Vec<teloxide_core::types::Update>, TelegramError> {
        Ok(self
            .bot
            .get_updates()
            .offset(offset)
            .timeout(LONG_POLL_SECS)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unreadable_answer_counts_as_sent_only_when_it_says_ok() {
        assert!(super::accepted(r#"{"ok":true,"result":{"date":"x"}}"#));
        assert!(!super::accepted(
            r#"{"ok":false,"description":"Bad Request"}"#
        ));
        assert!(!super::accepted("<html>bad gateway</html>"));
    }
}
