//! DeliveryManager: posts an outbox reply to its platform, chunked to the
//! platform's limit, resuming after the chunks already posted.

use anyhow::Context;
use chrono::Utc;
use shared::access::slack::{SlackClient, SlackError};
use shared::access::store::{NewEvent, Store};
use shared::engine::chunk::{SLACK_TEXT_LIMIT, chunk};
use shared::event::{Actor, ActorKind, ReplyDelivered, delivery_stream};
use shared::ids::{OutboxId, Platform};

/// Why a delivery did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Trying again later may succeed.
    #[error("delivery failed, will retry: {0:#}")]
    Retryable(anyhow::Error),
    /// Trying again will not help.
    #[error("delivery failed for good: {0:#}")]
    Permanent(anyhow::Error),
}

impl From<SlackError> for DeliveryError {
    fn from(e: SlackError) -> Self {
        if e.is_retryable() {
            Self::Retryable(e.into())
        } else {
            Self::Permanent(e.into())
        }
    }
}

/// Delivers replies.
#[derive(Debug, Clone)]
pub struct DeliveryManager {
    store: Store,
    slack: SlackClient,
}

impl DeliveryManager {
    /// A manager over the store and the Slack client.
    pub fn new(store: Store, slack: SlackClient) -> Self {
        Self { store, slack }
    }

    /// Posts the reply (the chunks not yet posted) and records the delivery.
    pub async fn deliver(
        &self,
        outbox_id: OutboxId,
        trace_id: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let item = self
            .store
            .outbox_item(outbox_id)
            .await
            .context("Cannot load outbox item")
            .map_err(DeliveryError::Retryable)?;
        if item.delivered_at.is_some() {
            return Ok(());
        }
        if Platform::parse(&item.platform) != Some(Platform::Slack) {
            return Err(DeliveryError::Permanent(anyhow::anyhow!(
                "no delivery channel for platform `{}`",
                item.platform
            )));
        }
        let thread = Some(item.thread.as_str()).filter(|t| !t.is_empty());
        let chunks = chunk(&item.text, SLACK_TEXT_LIMIT);
        let already = usize::try_from(item.chunks_delivered).unwrap_or(0);
        let mut posted = Vec::new();
        for (index, text) in chunks.iter().enumerate().skip(already) {
            posted.push(self.slack.post_message(&item.chat, thread, text).await?);
            self.store
                .record_chunks_delivered(outbox_id, i32::try_from(index + 1).unwrap_or(i32::MAX))
                .await
                .context("Cannot record delivered chunk")
                .map_err(DeliveryError::Retryable)?;
        }
        let event = NewEvent {
            tenant_id: item.tenant_id,
            type_name: ReplyDelivered::TYPE_NAME,
            payload: serde_json::to_value(ReplyDelivered {
                outbox_id,
                platform_message_ids: posted,
            })
            .expect("delivery events always serialize"),
            actor: Actor {
                kind: ActorKind::System,
                id: "gateway".to_owned(),
            },
            occurred_at: Utc::now(),
            dedupe_key: Some(format!("delivered:{outbox_id}")),
            correlation_id: Some(item.conversation_id.0),
            causation_id: Some(outbox_id.0),
            trace_id: trace_id.map(str::to_owned),
            source: "gateway",
        };
        self.store
            .complete_delivery(outbox_id, &delivery_stream(outbox_id), &event)
            .await
            .context("Cannot record delivery")
            .map_err(DeliveryError::Retryable)?;
        metrics::counter!("automate_e_replies_delivered_total", "channel" => "slack").increment(1);
        metrics::counter!("automate_e_reply_chunks_posted_total", "channel" => "slack")
            .increment(chunks.len().saturating_sub(already) as u64);
        Ok(())
    }
}
