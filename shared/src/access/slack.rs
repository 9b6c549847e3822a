//! Slack Web API client (`chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`, `views.open`), with slack-morphism's request models
//! and Block Kit types.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use slack_morphism::api::{
    SlackApiChatPostEphemeralRequest, SlackApiChatPostMessageRequest, SlackApiChatUpdateRequest,
    SlackApiViewsOpenRequest,
};
use slack_morphism::prelude::{SlackBlock, SlackView};
use slack_morphism::{SlackChannelId, SlackMessageContent, SlackTriggerId, SlackTs, SlackUserId};

/// Errors of the Slack Web API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlackError {
    /// Slack asked us to slow down.
    #[error("rate limited by Slack; retry after {retry_after:?}")]
    RateLimited {
        /// Slack's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Slack answered `ok: false` with this error code.
    #[error("Slack refused the call: {0}")]
    Api(String),
    /// Slack answered with an unexpected HTTP status.
    #[error("Slack answered HTTP {0}")]
    Status(u16),
    /// The request did not complete.
    #[error("cannot reach Slack: {0}")]
    Transport(#[from] reqwest::Error),
    /// Slack's answer could not be read, not even whether it said `ok`.
    #[error("Slack's answer could not be read")]
    Unreadable,
}

impl SlackError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport(_) | Self::Unreadable => true,
            Self::Status(status) => *status >= 500,
            // Errors Slack documents as transient.
            Self::Api(code) => matches!(
                code.as_str(),
                "ratelimited"
                    | "rate_limited"
                    | "service_unavailable"
                    | "request_timeout"
                    | "internal_error"
                    | "fatal_error"
            ),
        }
    }
}

impl SlackError {
    /// How long Slack asked us to wait (a 429 without `Retry-After` means a second).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

impl From<SlackError> for crate::job::JobFailure {
    fn from(e: SlackError) -> Self {
        let retryable = e.is_retryable();
        Self::new(e, retryable, "Cannot post to Slack")
    }
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    error: Option<String>,
    ts: Option<String>,
}

/// An answer of an unexpected shape that still says whether Slack did it:
/// `ok: true` means the message was posted, and posting it again would
/// post it twice.
fn said_ok(body: &[u8]) -> Result<Envelope, ()> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(drop)?;
    let ok = value["ok"].as_bool().ok_or(())?;
    Ok(Envelope {
        ok,
        error: value["error"].as_str().map(str::to_owned),
        ts: value["ts"].as_str().map(str::to_owned),
    })
}

/// A Slack bot's Web API client.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    api_base_url: String,
    bot_token: SecretString,
    /// Where Slack serves files (`url_private`); the bot token goes nowhere
    /// else.
    files_base_url: String,
}

/// Where Slack serves the files of messages.
pub const SLACK_FILES_BASE_URL: &str = "https://files.slack.com/";

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("api_base_url", &self.api_base_url)
            .finish_non_exhaustive()
    }
}

impl SlackClient {
    /// A client for the Web API at `api_base_url` (`https://slack.com/api`).
    pub fn new(http: reqwest::Client, api_base_url: &str, bot_token: SecretString) -> Self {
        Self {
            http,
            api_base_url: api_base_url.trim_end_matches('/').to_owned(),
            bot_token,
            files_base_url: SLACK_FILES_BASE_URL.to_owned(),
        }
    }

    /// The same client, fetching files from `files_base_url`.
    #[must_use]
    pub fn with_files_base_url(mut self, files_base_url: &str) -> Self {
        files_base_url.clone_into(&mut self.files_base_url);
        self
    }

    /// Fetches a message's file (its `url_private`) with the bot token, at
    /// most `max_bytes`.
    pub async fn download(
        &self,
        url_private: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, crate::access::download::DownloadError> {
        use crate::access::download;
        if !download::is_under(url_private, &self.files_base_url) {
            return Err(download::DownloadError::NotAllowed);
        }
        download::fetch(
            &self.http,
            url_private,
            Some(&self.bot_token),
            max_bytes,
            timeout,
        )
        .await
    }

    /// Posts `text` to `channel`, in the thread `thread_ts` if given; returns
    /// the new message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<String, SlackError> {
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackMessageContent::new().with_text(text.to_owned()),
        )
        .opt_thread_ts(thread_ts.map(|ts| SlackTs::new(ts.to_owned())));
        self.posted("chat.postMessage", &request).await
    }

    /// Posts a Block Kit message (`text` is the notification fallback);
    /// returns its `ts`.
    pub async fn post_blocks(
        &self,
        channel: &str,
        text: &str,
        blocks: Vec<SlackBlock>,
    ) -> Result<String, SlackError> {
        let request = SlackApiChatPostMessageRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackMessageContent::new()
                .with_text(text.to_owned())
                .with_blocks(blocks),
        );
        self.posted("chat.postMessage", &request).await
    }

    /// Replaces a message's text and blocks (`chat.update`).
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Vec<SlackBlock>,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackMessageContent::new()
                .with_text(text.to_owned())
                .with_blocks(blocks),
            SlackTs::new(ts.to_owned()),
        );
        self.call("chat.update", &request).await.map(drop)
    }

    /// Shows `text` to one user only (`chat.postEphemeral`).
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatPostEphemeralRequest::new(
            SlackChannelId::new(channel.to_owned()),
            SlackUserId::new(user.to_owned()),
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        self.call("chat.postEphemeral", &request).await.map(drop)
    }

    /// The messages of `channel` posted since `oldest` (at most 100, newest
    /// first; `conversations.history`, scope `channels:history` or
    /// `groups:history`), as JSON.
    pub async fn history_since(
        &self,
        channel: &str,
        oldest: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<serde_json::Value>, SlackError> {
        let oldest = format!(
            "{}.{:06}",
            oldest.timestamp(),
            oldest.timestamp_subsec_micros()
        );
        let response = self
            .http
            .get(format!("{}/conversations.history", self.api_base_url))
            .bearer_auth(self.bot_token.expose_secret())
            .query(&[("channel", channel), ("oldest", &oldest), ("limit", "100")])
            .send()
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SlackError::RateLimited { retry_after: None });
        }
        if !status.is_success() {
            return Err(SlackError::Status(status.as_u16()));
        }
        let body: serde_json::Value = response.json().await?;
        if body["ok"] != true {
            let code = body["error"].as_str().unwrap_or("unknown");
            return Err(SlackError::Api(code.to_owned()));
        }
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }

    /// Opens a modal for the user who triggered `trigger_id` (`views.open`).
    pub async fn open_view(&self, trigger_id: &str, view: SlackView) -> Result<(), SlackError> {
        let request =
            SlackApiViewsOpenRequest::new(SlackTriggerId::new(trigger_id.to_owned()), view);
        self.call("views.open", &request).await.map(drop)
    }

    /// Calls a method that posts a message; returns the message's `ts`
    /// ("" when Slack said `ok` without one: it posted the message).
    async fn posted<R: Serialize>(&self, method: &str, request: &R) -> Result<String, SlackError> {
        let envelope = self.call(method, request).await?;
        if envelope.ts.is_none() {
            tracing::warn!(method, "Slack posted the message; its ts could not be read");
        }
        Ok(envelope.ts.unwrap_or_default())
    }

    /// Calls a Web API method with a JSON body.
    async fn call<R: Serialize>(&self, method: &str, request: &R) -> Result<Envelope, SlackError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.api_base_url))
            .bearer_auth(self.bot_token.expose_secret())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(serde_json::to_vec(request).expect("a Slack request always serializes"))
            .send()
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(SlackError::RateLimited { retry_after });
        }
        if !status.is_success() {
            return Err(SlackError::Status(status.as_u16()));
        }
        let body = response.bytes().await?;
        let envelope = serde_json::from_slice::<Envelope>(&body)
            .or_else(|_| said_ok(&body))
            .map_err(|()| SlackError::Unreadable)?;
        if envelope.ok {
            Ok(envelope)
        } else {
            Err(SlackError::Api(
                envelope.error.unwrap_or_else(|| "unknown".to_owned()),
            ))
        }
    }
}
