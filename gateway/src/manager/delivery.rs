//! DeliveryManager: posts an outbox reply to its platform, chunked to the
//! platform's limit, resuming after the chunks already posted.

use chrono::Utc;
use shared::access::slack::SlackClient;
use shared::access::store::{NewEvent, Store};
use shared::engine::chunk::{SLACK_TEXT_LIMIT, chunk};
use shared::event::{Actor, ActorKind, ReplyDelivered, delivery_stream};
use shared::ids::{OutboxId, Platform};
use shared::job::JobFailure;

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
    ) -> Result<(), JobFailure> {
        let item = self.store.outbox_item(outbox_id).await?;
        if item.delivered_at.is_some() {
            return Ok(());
        }
        if Platform::parse(&item.platform) != Some(Platform::Slack) {
            return Err(JobFailure::Permanent(anyhow::anyhow!(
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
                .await?;
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
            .await?;
        metrics::counter!("automate_e_replies_delivered_total", "channel" => "slack").increment(1);
        metrics::counter!("automate_e_reply_chunks_posted_total", "channel" => "slack")
            .increment(chunks.len().saturating_sub(already) as u64);
        Ok(())
    }
}
