//! Discord REST client (serenity's `Http`): threads, messages, typing.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use serenity::http::{
    DiscordJsonError, ErrorResponse, Http, HttpBuilder, HttpError, MessagePagination,
};
use serenity::model::id::{ChannelId, GuildId, MessageId, UserId};

/// Discord's error code for "a thread has already been created for this message".
const THREAD_ALREADY_CREATED: isize = 160_004;

/// Longest thread name Discord accepts, in characters.
pub const MAX_THREAD_NAME_CHARS: usize = 100;

/// Errors of the Discord REST API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscordError {
    /// Discord answered 429. With serenity's own rate limiter on, 429s are
    /// waited out inside serenity; this only surfaces when it is off (tests).
    #[error("rate limited by Discord")]
    RateLimited,
    /// Discord refused the request.
    #[error("Discord refused the request (HTTP {status}, code {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Discord's JSON error code.
        code: isize,
        /// Discord's message.
        message: String,
    },
    /// A stored id is not a Discord snowflake.
    #[error("`{0}` is not a Discord id")]
    InvalidId(String),
    /// The request did not complete.
    #[error("cannot reach Discord: {0}")]
    Transport(String),
}

impl DiscordError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited | Self::Transport(_) => true,
            Self::Api { status, .. } => *status >= 500,
            Self::InvalidId(_) => false,
        }
    }

    /// How long Discord asked us to wait, when it said (serenity does not
    /// expose `retry_after`, so a short default pause is used for a 429).
    pub fn retry_after(&self) -> Option<Duration> {
        matches!(self, Self::RateLimited).then_some(Duration::from_secs(1))
    }
}

impl From<serenity::Error> for DiscordError {
    fn from(e: serenity::Error) -> Self {
        match e {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(ErrorResponse {
                status_code,
                error,
                ..
            })) => {
                if status_code.as_u16() == 429 {
                    Self::RateLimited
                } else {
                    Self::Api {
                        status: status_code.as_u16(),
                        code: error.code,
                        message: error.message,
                    }
                }
            }
            other => Self::Transport(other.to_string()),
        }
    }
}

impl From<DiscordError> for crate::job::JobFailure {
    fn from(e: DiscordError) -> Self {
        let retryable = e.is_retryable();
        Self::new(e, retryable, "Cannot post to Discord")
    }
}

/// A Discord bot's REST client.
#[derive(Clone)]
pub struct DiscordClient {
    http: Arc<Http>,
}

impl std::fmt::Debug for DiscordClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordClient").finish_non_exhaustive()
    }
}

fn channel_id(raw: &str) -> Result<ChannelId, DiscordError> {
    raw.parse()
        .map_err(|_| DiscordError::InvalidId(raw.to_owned()))
}

fn message_id(raw: &str) -> Result<MessageId, DiscordError> {
    raw.parse()
        .map_err(|_| DiscordError::InvalidId(raw.to_owned()))
}

impl DiscordClient {
    /// A client for the real Discord API, or for the API at `api_base_url`
    /// (a fake in tests). serenity only honours a base URL with its rate
    /// limiter off, so 429s are then handled by the caller.
    pub fn new(token: &SecretString, api_base_url: Option<&str>) -> Self {
        let builder = HttpBuilder::new(token.expose_secret());
        let http = match api_base_url {
            Some(url) => builder.proxy(url).ratelimiter_disabled(true).build(),
            None => builder.build(),
        };
        Self {
            http: Arc::new(http),
        }
    }

    /// Starts a thread from `message` in `channel` (the thread's id is the
    /// message's id); a thread that already exists is fine.
    pub async fn ensure_thread(
        &self,
        channel: &str,
        message: &str,
        name: &str,
    ) -> Result<(), DiscordError> {
        let name: String = name.chars().take(MAX_THREAD_NAME_CHARS).collect();
        let name = if name.trim().is_empty() {
            "Conversation".to_owned()
        } else {
            name
        };
        let body = json!({ "name": name, "auto_archive_duration": 1440 });
        match self
            .http
            .create_thread_from_message(channel_id(channel)?, message_id(message)?, &body, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(ErrorResponse {
                error:
                    DiscordJsonError {
                        code: THREAD_ALREADY_CREATED,
                        ..
                    },
                ..
            }))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Posts `text` (at most 2,000 characters) to a channel or thread; returns
    /// the new message's id.
    pub async fn post_message(&self, channel: &str, text: &str) -> Result<String, DiscordError> {
        // Mentions in model output must never ping anyone.
        let body = json!({ "content": text, "allowed_mentions": { "parse": [] } });
        match self
            .http
            .send_message(channel_id(channel)?, Vec::new(), &body)
            .await
        {
            Ok(message) => Ok(message.id.to_string()),
            // Only a 2xx answer is read as a message: Discord posted it, and
            // sending it again would post it twice.
            Err(serenity::Error::Json(_)) => {
                tracing::warn!("Discord posted the message; its answer could not be read");
                Ok(String::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Up to 100 messages of `channel` posted after message `after`
    /// (snowflakes grow with time), oldest first.
    pub async fn messages_after(
        &self,
        channel: &str,
        after: u64,
    ) -> Result<Vec<serenity::model::channel::Message>, DiscordError> {
        let after = MessagePagination::After(MessageId::new(after.max(1)));
        let mut messages = self
            .http
            .get_messages(channel_id(channel)?, Some(after), Some(100))
            .await?;
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// The roles `user` holds in `guild` (`GET /guilds/{id}/members/{id}`):
    /// a message read back over REST does not carry them.
    pub async fn member_roles(&self, guild: u64, user: u64) -> Result<Vec<String>, DiscordError> {
        let member = self
            .http
            .get_member(GuildId::new(guild.max(1)), UserId::new(user.max(1)))
            .await?;
        Ok(member.roles.iter().map(ToString::to_string).collect())
    }

    /// Shows "typing…" in a channel for about ten seconds.
    pub async fn typing(&self, channel: &str) -> Result<(), DiscordError> {
        Ok(self.http.broadcast_typing(channel_id(channel)?).await?)
    }
}
