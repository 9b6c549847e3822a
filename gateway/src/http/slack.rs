//! Slack Events API edge: verifies the signature on the raw body, then
//! parses, normalizes and hands the message to the IngestManager.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use shared::event::{Attachment, MAX_ATTACHMENTS};
use shared::ids::Platform;
use slack_morphism::SlackMessageSender;
use slack_morphism::events::{
    SlackEventCallbackBody, SlackMessageEventType, SlackPushEvent, SlackPushEventCallback,
};
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};
use tracing::Instrument;

use super::{ApiError, HttpState};
use crate::manager::ingest::{InboundMessage, MAX_TEXT_CHARS};
use crate::manager::review_desk::ThreadReply;

/// `POST /slack/events`.
pub(super) async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    verify(&state, &headers, &body)?;
    let event: SlackPushEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack Events API payload: {e}")))?;
    // slack-morphism keeps neither field: the author's team, for membership.
    let teams: EventTeams = serde_json::from_slice(&body).unwrap_or_default();
    match event {
        SlackPushEvent::UrlVerification(v) => {
            Ok(Json(json!({ "challenge": v.challenge })).into_response())
        }
        SlackPushEvent::AppRateLimited(_) => {
            tracing::warn!("Slack reports the app is rate limited");
            Ok(ack())
        }
        SlackPushEvent::EventCallback(callback) => {
            let retry = headers
                .get("x-slack-retry-num")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_owned();
            let span = tracing::info_span!(
                "slack_event",
                slack.event_id = %callback.event_id.0,
                slack.retry_num = %retry,
                outcome = tracing::field::Empty,
            );
            handle_callback(&state, callback, teams.event.author_team())
                .instrument(span)
                .await
        }
    }
}

fn ack() -> Response {
    axum::http::StatusCode::OK.into_response()
}

/// Checks Slack's signature and timestamp on a raw request body.
/// Slack's replay window: a request signed more than five minutes from now
/// is refused.
const REPLAY_WINDOW_SECS: u64 = 300;

/// Whether a Slack request timestamp (seconds) is a number within the
/// replay window of `now`, without overflowing on any input.
fn within_replay_window(timestamp: &str, now: i64) -> bool {
    timestamp
        .parse::<i64>()
        .ok()
        .and_then(|ts| now.checked_sub(ts))
        .is_some_and(|skew| skew.unsigned_abs() <= REPLAY_WINDOW_SECS)
}

pub(super) fn verify(state: &HttpState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER)
        .ok_or(ApiError::Unauthorized("missing Slack signature"))?;
    let timestamp = header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP)
        .ok_or(ApiError::Unauthorized("missing Slack request timestamp"))?;
    // Checked here first: slack-morphism's own check overflows (and panics
    // in debug builds) on a timestamp near i64::MIN.
    if !within_replay_window(timestamp, Utc::now().timestamp()) {
        metrics::counter!("automate_e_webhooks_rejected_total", "channel" => "slack").increment(1);
        return Err(ApiError::Unauthorized(
            "stale or invalid Slack request timestamp",
        ));
    }
    let body =
        std::str::from_utf8(body).map_err(|_| ApiError::Unauthorized("invalid Slack signature"))?;
    let secret = state
        .slack_signing_secret
        .as_ref()
        .ok_or(ApiError::Unauthorized("Slack is off"))?;
    SlackEventSignatureVerifier::new(secret)
        .verify(signature, body, timestamp)
        .map_err(|e| {
            metrics::counter!("automate_e_webhooks_rejected_total", "channel" => "slack")
                .increment(1);
            match e {
                SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_) => {
                    ApiError::Unauthorized("stale or invalid Slack request timestamp")
                }
                _ => ApiError::Unauthorized("invalid Slack signature"),
            }
        })
}

/// The teams an event callback names besides the workspace's.
#[derive(Debug, Default, Deserialize)]
struct EventTeams {
    #[serde(default)]
    event: AuthorTeams,
}

#[derive(Debug, Default, Deserialize)]
struct AuthorTeams {
    /// The author's team (Slack Connect).
    user_team: Option<String>,
    /// The team of the author's message, the author's own where `user_team`
    /// is missing.
    team: Option<String>,
}

impl AuthorTeams {
    fn author_team(self) -> Option<String> {
        self.user_team.or(self.team)
    }
}

async fn handle_callback(
    state: &HttpState,
    callback: SlackPushEventCallback,
    author_team: Option<String>,
) -> Result<Response, ApiError> {
    let message = normalize(&callback)
        .map(|m| InboundMessage { author_team, ..m })
        .and_then(InboundMessage::into_storable);
    // A reply in a review card's thread is a reviewer's question for the owner.
    if let (Some(m), Some((ts, thread_ts))) = (&message, thread_reply(&callback)) {
        let reply = ThreadReply {
            channel: &m.chat,
            thread_ts: &thread_ts,
            message_ts: &ts,
            author: &m.author_id,
            text: &m.text,
        };
        let forwarded = state
            .reviews
            .forward_thread_reply(&reply)
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::from(e)))?;
        if forwarded {
            tracing::Span::current().record("outcome", "review_comment");
            return Ok(ack());
        }
    }
    let outcome = state.ingest.accept(Platform::Slack, message).await?;
    tracing::Span::current().record("outcome", outcome.label());
    Ok(ack())
}

/// `(ts, thread_ts)` of a message that replies in a thread.
fn thread_reply(callback: &SlackPushEventCallback) -> Option<(String, String)> {
    let origin = match &callback.event {
        SlackEventCallbackBody::Message(m) => &m.origin,
        SlackEventCallbackBody::AppMention(m) => &m.origin,
        _ => return None,
    };
    let thread = origin.thread_ts.as_ref()?;
    (thread.0 != origin.ts.0).then(|| (origin.ts.0.clone(), thread.0.clone()))
}

/// The user message in a callback, or `None` for events that are not one
/// (edits, deletions, joins, bot messages including our own, other types).
fn normalize(callback: &SlackPushEventCallback) -> Option<InboundMessage> {
    let (origin, sender, content) = match &callback.event {
        SlackEventCallbackBody::Message(m) => {
            let plain = m.subtype.as_ref().is_none_or(|s| {
                matches!(
                    s,
                    SlackMessageEventType::ThreadBroadcast | SlackMessageEventType::FileShare
                )
            });
            if !plain {
                return None;
            }
            (&m.origin, &m.sender, m.content.as_ref())
        }
        SlackEventCallbackBody::AppMention(m) => {
            let sender = SlackMessageSender::new().with_user(m.user.clone());
            return build(
                callback,
                &m.origin,
                &sender,
                Some(&m.content),
                Some(&m.channel.0),
            );
        }
        _ => return None,
    };
    build(callback, origin, sender, content, None)
}

/// The files of a message (`url_private`, fetched later with the bot token).
fn files(content: Option<&slack_morphism::SlackMessageContent>) -> Vec<Attachment> {
    content
        .and_then(|c| c.files.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let url = f.url_private.as_ref()?;
            Some(Attachment::announced(
                f.name.clone().unwrap_or_else(|| "file".to_owned()),
                url.to_string(),
                f.mimetype.as_ref().map(|m| m.0.clone()),
                None,
            ))
        })
        .take(MAX_ATTACHMENTS)
        .collect()
}

fn build(
    callback: &SlackPushEventCallback,
    origin: &slack_morphism::SlackMessageOrigin,
    sender: &SlackMessageSender,
    content: Option<&slack_morphism::SlackMessageContent>,
    channel: Option<&str>,
) -> Option<InboundMessage> {
    if sender.bot_id.is_some() {
        return None;
    }
    let user = sender.user.as_ref()?.0.clone();
    let is_our_bot = callback
        .authorizations
        .iter()
        .flatten()
        .any(|a| a.is_bot == Some(true) && a.user_id.0 == user);
    if is_our_bot {
        return None;
    }
    let channel = channel
        .map(str::to_owned)
        .or_else(|| origin.channel.as_ref().map(|c| c.0.clone()))?;
    let attachments = files(content);
    let text = content.and_then(|c| c.text.clone()).unwrap_or_default();
    if text.trim().is_empty() && attachments.is_empty() {
        return None;
    }
    let text: String = text.chars().take(MAX_TEXT_CHARS).collect();
    let ts = origin.ts.0.clone();
    let thread = origin
        .thread_ts
        .as_ref()
        .map_or_else(|| ts.clone(), |t| t.0.clone());
    Some(InboundMessage {
        platform: Platform::Slack,
        workspace: callback.team_id.0.clone(),
        message_id: format!("{}:{channel}:{ts}", callback.team_id.0),
        chat: channel,
        thread,
        delivery_id: Some(callback.event_id.0.clone()),
        author_id: user,
        author_team: None,
        author_roles: Vec::new(),
        text,
        attachments,
        received_at: Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_refuses_stale_future_junk_and_extremes_without_overflow() {
        let now = 1_700_000_000;
        assert!(within_replay_window("1700000000", now));
        assert!(within_replay_window("1699999700", now));
        assert!(within_replay_window("1700000300", now));
        assert!(!within_replay_window("1699999699", now));
        assert!(!within_replay_window("1700000301", now));
        for junk in [
            "",
            "abc",
            "1.5",
            "-9223372036854775808",
            "9223372036854775807",
            "99999999999999999999",
        ] {
            assert!(!within_replay_window(junk, now), "{junk}");
        }
    }
}
