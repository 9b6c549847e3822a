//! DeliveryManager: posts an outbox reply to its platform, chunked to the
//! platform's limit, paced per chat, waiting out short `Retry-After`s, and
//! resuming after the chunks already posted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shared::access::discord::DiscordClient;
use shared::access::slack::SlackClient;
use shared::access::store::{DeliveryTurn, NewEvent, OutboxModel, Store, TenantStore};
use shared::access::telegram::TelegramClient;
use shared::engine::chunk::{
    DISCORD_LIMIT, MessageLimit, SLACK_LIMIT, TELEGRAM_LIMIT, WEB_LIMIT, chunk,
};
use shared::engine::pace::{MAX_INLINE_RETRY_AFTER, delivery_pace};
use shared::event::{Actor, ActorKind, DeliveryEvent, ReplyDelivered, delivery_stream};
use shared::ids::{ConversationId, OutboxId, Platform, TenantId};
use shared::job::JobFailure;
use shared::pacer::Pacer;

use super::page::PageBell;

/// Posts of one chunk before the attempt gives up and the job retries later.
const MAX_POSTS_PER_CHUNK: u32 = 5;

/// How long a delivery holds its conversation's deliveries without renewing:
/// longer than one chunk can take (every post waiting out the longest
/// inline `Retry-After`).
const HOLD_TTL: Duration = MAX_INLINE_RETRY_AFTER
    .saturating_mul(MAX_POSTS_PER_CHUNK)
    .saturating_add(Duration::from_secs(30));

/// How long a delivery waits for another delivery of its conversation
/// before it is retried later, and how often it looks.
const HOLD_WAIT: Duration = Duration::from_secs(2);
const HOLD_POLL: Duration = Duration::from_millis(20);

/// The chat platforms replies can go to; a platform without a client is off.
#[derive(Debug, Clone)]
pub struct ChatClients {
    /// Slack Web API, when Slack is configured.
    pub slack: Option<SlackClient>,
    /// Discord REST, when Discord is configured.
    pub discord: Option<DiscordClient>,
    /// Telegram Bot API, when Telegram is configured.
    pub telegram: Option<TelegramClient>,
    /// The chat page, when it is on: a reply is posted there by being
    /// recorded delivered (the page reads it), then the page is told.
    pub page: Option<PageBell>,
}

/// A failed post: the job failure, and how long the platform asked to wait.
struct PostFailure {
    failure: JobFailure,
    retry_after: Option<Duration>,
}

impl<E> From<E> for PostFailure
where
    E: Into<JobFailure> + PlatformWait,
{
    fn from(e: E) -> Self {
        let retry_after = e.wait();
        Self {
            failure: e.into(),
            retry_after,
        }
    }
}

/// How long a platform error asks the sender to wait, if it does.
trait PlatformWait {
    fn wait(&self) -> Option<Duration>;
}

macro_rules! platform_wait {
    ($($error:ty),+) => {$(
        impl PlatformWait for $error {
            fn wait(&self) -> Option<Duration> {
                self.retry_after()
            }
        }
    )+};
}

platform_wait!(
    shared::access::slack::SlackError,
    shared::access::discord::DiscordError,
    shared::access::telegram::TelegramError
);

/// Delivers replies.
#[derive(Debug, Clone)]
pub struct DeliveryManager {
    store: Store,
    chats: ChatClients,
    pacer: Arc<Pacer>,
}

fn limit(platform: Platform) -> MessageLimit {
    match platform {
        Platform::Slack => SLACK_LIMIT,
        Platform::Discord => DISCORD_LIMIT,
        Platform::Telegram => TELEGRAM_LIMIT,
        Platform::Web => WEB_LIMIT,
    }
}

impl DeliveryManager {
    /// A manager over the store, the platform clients and the shared pacer.
    pub fn new(store: Store, chats: ChatClients, pacer: Arc<Pacer>) -> Self {
        Self {
            store,
            chats,
            pacer,
        }
    }

    /// Posts the reply and records the delivery, after the replies written
    /// before it in its conversation (a conversation's replies appear in
    /// the order they were written, one delivery at a time).
    pub async fn deliver(
        &self,
        tenant: TenantId,
        outbox_id: OutboxId,
        trace_id: Option<&str>,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let holder = uuid::Uuid::new_v4().to_string();
        let mut held = None;
        let delivered = self
            .deliver_in_order(&store, outbox_id, &holder, &mut held, trace_id)
            .await;
        if let Some(conversation) = held
            && let Err(e) = store.release_deliveries(conversation, &holder).await
        {
            tracing::warn!(error = %e, "Cannot release a conversation's deliveries; its hold runs out");
        }
        delivered
    }

    /// Holds the conversation's deliveries (waiting a little while another
    /// delivery has them) and posts its undelivered replies oldest first up
    /// to `outbox_id`. An earlier reply that fails defers this one: that
    /// reply's own job decides its fate.
    async fn deliver_in_order(
        &self,
        store: &TenantStore,
        outbox_id: OutboxId,
        holder: &str,
        held: &mut Option<ConversationId>,
        trace_id: Option<&str>,
    ) -> Result<(), JobFailure> {
        let deadline = Instant::now() + HOLD_WAIT;
        loop {
            let next = match store.next_delivery(outbox_id, holder, HOLD_TTL).await? {
                DeliveryTurn::Held { conversation, next } => {
                    *held = Some(conversation);
                    next
                }
                DeliveryTurn::Busy if Instant::now() < deadline => {
                    tokio::time::sleep(HOLD_POLL).await;
                    continue;
                }
                DeliveryTurn::Busy => {
                    return Err(JobFailure::deferred(
                        anyhow::anyhow!("the conversation's deliveries are held"),
                        "Another delivery of the conversation is running",
                    ));
                }
            };
            let Some(item) = next else {
                return Ok(());
            };
            let own = item.id == outbox_id;
            match self.post_reply(store, &item, holder, own, trace_id).await {
                Err(failure) if !own => {
                    return Err(JobFailure::deferred(
                        failure.into_error(),
                        "An earlier reply of the conversation is not delivered",
                    ));
                }
                posted => posted?,
            }
            if own {
                // Given back with the delivery's record.
                *held = None;
                return Ok(());
            }
        }
    }

    /// Posts a reply's chunks not yet posted (renewing the hold before each
    /// but the first) and records the delivery, giving the hold back with
    /// it when `last`.
    async fn post_reply(
        &self,
        store: &TenantStore,
        item: &OutboxModel,
        holder: &str,
        last: bool,
        trace_id: Option<&str>,
    ) -> Result<(), JobFailure> {
        let outbox_id = item.id;
        let platform = item.platform;
        let target = self.target(platform, item).await.map_err(|f| f.failure)?;
        let chunks = chunk(&item.text, limit(platform));
        let already = usize::try_from(item.chunks_delivered).unwrap_or(0);
        let mut posted = Vec::new();
        for (index, text) in chunks.iter().enumerate().skip(already) {
            if index > already
                && !store
                    .renew_deliveries(item.conversation_id, holder, HOLD_TTL)
                    .await?
            {
                return Err(JobFailure::deferred(
                    anyhow::anyhow!("the conversation's deliveries were taken over"),
                    "The delivery's hold ran out",
                ));
            }
            posted.push(self.post_chunk(platform, &target, text).await?);
            // The last chunk is recorded with the delivery itself.
            if index + 1 < chunks.len() {
                let delivered = i32::try_from(index + 1).unwrap_or(i32::MAX);
                store.record_chunks_delivered(outbox_id, delivered).await?;
            }
        }
        let event = NewEvent {
            tenant_id: item.tenant_id,
            type_name: DeliveryEvent::REPLY_DELIVERED,
            payload: DeliveryEvent::ReplyDelivered(ReplyDelivered {
                outbox_id,
                platform_message_ids: posted,
            })
            .payload(),
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
        store
            .complete_delivery(
                outbox_id,
                i32::try_from(chunks.len()).unwrap_or(i32::MAX),
                &delivery_stream(outbox_id),
                &event,
                last.then_some((item.conversation_id, holder)),
            )
            .await?;
        metrics::counter!("automate_e_replies_delivered_total", "channel" => platform.as_str())
            .increment(1);
        if let (Platform::Web, Some(page)) = (platform, &self.chats.page) {
            page.ring();
        }
        Ok(())
    }

    /// Posts one chunk: paced per chat, waiting out short `Retry-After`s.
    async fn post_chunk(
        &self,
        platform: Platform,
        target: &Target,
        text: &str,
    ) -> Result<String, JobFailure> {
        let key = format!("{platform}:{}", target.chat);
        let pace = delivery_pace(platform, &target.chat);
        let mut posts = 0;
        loop {
            self.pacer.wait(&key, pace).await;
            posts += 1;
            match self.post(platform, target, text).await {
                Ok(id) => {
                    metrics::counter!("automate_e_reply_chunks_posted_total", "channel" => platform.as_str())
                        .increment(1);
                    return Ok(id);
                }
                Err(PostFailure {
                    retry_after: Some(wait),
                    failure,
                }) if wait <= MAX_INLINE_RETRY_AFTER && posts < MAX_POSTS_PER_CHUNK => {
                    tracing::warn!(error = %failure, wait_ms = wait.as_millis() as u64, "Platform rate limit; waiting");
                    tokio::time::sleep(wait).await;
                }
                Err(PostFailure { failure, .. }) => return Err(failure),
            }
        }
    }

    /// Where the reply goes. A Discord conversation's thread is its own
    /// channel and must exist first; where no thread can be started (the
    /// message was itself in a thread we did not start) the reply goes to the
    /// message's channel.
    async fn target(&self, platform: Platform, item: &OutboxModel) -> Result<Target, PostFailure> {
        let thread = Some(item.thread.clone()).filter(|t| !t.is_empty());
        if platform != Platform::Discord {
            return Ok(Target {
                chat: item.chat.clone(),
                thread,
            });
        }
        let Some(thread) = thread else {
            return Ok(Target {
                chat: item.chat.clone(),
                thread: None,
            });
        };
        match self
            .discord()?
            .ensure_thread(&item.chat, &thread, "Conversation")
            .await
        {
            Ok(()) => Ok(Target {
                chat: thread,
                thread: None,
            }),
            Err(e) if !e.is_retryable() => {
                tracing::warn!(error = %e, "Cannot start a Discord thread; replying in the channel");
                Ok(Target {
                    chat: item.chat.clone(),
                    thread: None,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn post(
        &self,
        platform: Platform,
        target: &Target,
        text: &str,
    ) -> Result<String, PostFailure> {
        let chat = target.chat.as_str();
        let thread = target.thread.as_deref();
        Ok(match platform {
            Platform::Slack => self.slack()?.post_message(chat, thread, text).await?,
            Platform::Discord => self.discord()?.post_message(chat, text).await?,
            Platform::Telegram => {
                self.telegram()?
                    .post_message(chat, thread.unwrap_or_default(), text)
                    .await?
            }
            Platform::Web => {
                self.chats
                    .page
                    .as_ref()
                    .ok_or_else(|| not_configured("The chat page"))?;
                format!("page:{}", uuid::Uuid::new_v4())
            }
        })
    }

    fn slack(&self) -> Result<&SlackClient, PostFailure> {
        self.chats
            .slack
            .as_ref()
            .ok_or_else(|| not_configured("Slack"))
    }

    fn discord(&self) -> Result<&DiscordClient, PostFailure> {
        self.chats
            .discord
            .as_ref()
            .ok_or_else(|| not_configured("Discord"))
    }

    fn telegram(&self) -> Result<&TelegramClient, PostFailure> {
        self.chats
            .telegram
            .as_ref()
            .ok_or_else(|| not_configured("Telegram"))
    }
}

fn not_configured(platform: &str) -> PostFailure {
    PostFailure {
        failure: JobFailure::Permanent(anyhow::anyhow!(
            "{platform} is not configured on this gateway"
        )),
        retry_after: None,
    }
}

/// Where a reply is posted: the chat (for Discord, the channel or thread to
/// post in) and the thread within it (Slack `thread_ts`, Telegram topic).
struct Target {
    chat: String,
    thread: Option<String>,
}
