//! IngestManager: a normalized inbound message → durable inbox row → turn job.

use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::access::queue::JobQueue;
use shared::access::store::{NewMessageParams, RecordOutcome, Store};
use shared::engine::route;
use shared::ids::{InboxId, Platform};
use shared::job::WorkerJob;

/// An inbound chat message, normalized from any platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Platform.
    pub platform: Platform,
    /// Workspace (Slack team, Discord guild) used for routing.
    pub workspace: String,
    /// Chat (channel) id.
    pub chat: String,
    /// Thread within the chat ("" when none).
    pub thread: String,
    /// The platform's unique id of the message.
    pub message_id: String,
    /// The platform's id of this delivery attempt, if any.
    pub delivery_id: Option<String>,
    /// Author's platform user id.
    pub author_id: String,
    /// Message text.
    pub text: String,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// What happened to an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Recorded and queued for a turn.
    Accepted(InboxId),
    /// Seen before and already queued: nothing to do.
    Duplicate(InboxId),
    /// No tenant route covers the chat: ignored.
    Unrouted,
}

impl IngestOutcome {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted(_) => "accepted",
            Self::Duplicate(_) => "duplicate",
            Self::Unrouted => "unrouted",
        }
    }
}

/// Records inbound messages and enqueues their turns.
#[derive(Debug, Clone)]
pub struct IngestManager {
    store: Store,
    queue: JobQueue,
}

impl IngestManager {
    /// A manager over the store and the queue.
    pub fn new(store: Store, queue: JobQueue) -> Self {
        Self { store, queue }
    }

    /// Records the message once and makes sure its turn job is queued. Returns
    /// only after both are durable, so the platform may be acknowledged.
    pub async fn ingest(
        &self,
        msg: InboundMessage,
        traceparent: &str,
    ) -> anyhow::Result<IngestOutcome> {
        let routes = self
            .store
            .routes(msg.platform, &msg.workspace, &msg.chat)
            .await
            .context("Cannot load routes")?;
        let Some(route) = route::pick(&routes, &msg.chat) else {
            return Ok(IngestOutcome::Unrouted);
        };
        let params = NewMessageParams {
            tenant_id: route.tenant_id,
            character: route.character.clone(),
            platform: msg.platform,
            chat: msg.chat,
            thread: msg.thread,
            platform_message_id: msg.message_id,
            delivery_id: msg.delivery_id,
            author_id: msg.author_id,
            text: msg.text,
            received_at: msg.received_at,
        };
        let (inbox_id, outcome) = match self
            .store
            .record_message(&params)
            .await
            .context("Cannot record message")?
        {
            RecordOutcome::New { inbox_id } => (inbox_id, IngestOutcome::Accepted(inbox_id)),
            RecordOutcome::Duplicate {
                inbox_id,
                enqueued: true,
            } => {
                return Ok(IngestOutcome::Duplicate(inbox_id));
            }
            // Seen before, but the enqueue did not finish: finish it now.
            RecordOutcome::Duplicate {
                inbox_id,
                enqueued: false,
            } => (inbox_id, IngestOutcome::Duplicate(inbox_id)),
        };
        self.queue
            .enqueue_worker_job(WorkerJob::TurnV1 {
                inbox_id,
                traceparent: traceparent.to_owned(),
            })
            .await
            .context("Cannot enqueue turn")?;
        self.store
            .mark_inbox_enqueued(inbox_id)
            .await
            .context("Cannot mark message enqueued")?;
        Ok(outcome)
    }
}
