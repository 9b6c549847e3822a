//! IngestManager: a normalized inbound message → durable inbox row → turn job.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::access::queue::JobQueue;
use shared::access::store::{
    ConversationModel, InboxWriter, MemberCache, NewMessageParams, RecordOutcome, RouteCache, Store,
};
use shared::batch::Batcher;
use shared::engine::member::{Admission, Author, admit};
use shared::engine::pace::{
    LIMIT_NOTICE_PACE, NOT_A_MEMBER_NOTICE_PACE, NOT_A_MEMBER_REPLY, Pace, RATE_LIMITED_REPLY,
    per_minute,
};
use shared::engine::route::{self, TenantLimits};
use shared::engine::text::{into_storable, storable};
use shared::event::Attachment;
use shared::ids::{InboxId, Platform, TenantId};
use shared::job::{DeliveryJob, Job, WorkerJob};
use shared::pacer::Pacer;
use shared::telemetry::{current_traceparent, record_trace_id};

use super::presence::{Presence, Working};

/// An inbound chat message, normalized from any platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
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
    /// The author's own Slack team (a Slack Connect guest's differs from
    /// the workspace); `None` elsewhere or when Slack did not say.
    pub author_team: Option<String>,
    /// The author's Discord guild roles.
    pub author_roles: Vec<String>,
    /// Message text.
    pub text: String,
    /// Files sent with it, by reference.
    pub attachments: Vec<Attachment>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

impl InboundMessage {
    /// The message as Postgres can store it: `None` when an id holds a NUL
    /// character (no platform sends one: a forgery or a bug, ignored); NUL
    /// characters of the text and of file names are dropped.
    pub fn into_storable(mut self) -> Option<Self> {
        let ids = [
            &self.workspace,
            &self.chat,
            &self.thread,
            &self.message_id,
            &self.author_id,
        ];
        let ids_storable = ids.into_iter().all(|id| storable(id))
            && self.delivery_id.as_deref().is_none_or(storable)
            && self.author_team.as_deref().is_none_or(storable)
            && self.author_roles.iter().all(|r| storable(r));
        if !ids_storable {
            tracing::warn!(
                platform = self.platform.as_str(),
                "A message whose ids hold NUL was ignored"
            );
            return None;
        }
        self.text = into_storable(self.text);
        for file in &mut self.attachments {
            file.filename = into_storable(std::mem::take(&mut file.filename));
            file.url = into_storable(std::mem::take(&mut file.url));
            file.content_type = file.content_type.take().map(into_storable);
        }
        Some(self)
    }
}

/// Where an accepted message's conversation lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The new inbox row.
    pub inbox_id: InboxId,
    pub tenant_id: TenantId,
    /// The conversation's chat.
    pub chat: String,
    /// The conversation's thread ("" when none).
    pub thread: String,
}

/// Longest message text accepted, in characters (Slack's own maximum; more
/// than Discord and Telegram allow).
pub const MAX_TEXT_CHARS: usize = 40_000;

/// What happened to an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Not a message for an agent (a bot, an edit, a service message): ignored.
    Ignored,
    /// Recorded and queued for a turn.
    Accepted(Accepted),
    /// Seen before and already queued: nothing to do.
    Duplicate(InboxId),
    /// No tenant route covers the chat: ignored.
    Unrouted,
    /// Over the author's or the tenant's inbound rate limit: not recorded;
    /// the author is told to slow down.
    Limited,
    /// The author is not one of the tenant's people: not recorded; told
    /// once in a while.
    NotAMember,
    /// A route open to anybody (every Telegram chat, every Discord DM) of a
    /// tenant that lists no members there: ignored.
    RouteNeedsMembers,
}

/// Most messages one round of the inbox writer records.
const INBOX_BATCH: usize = 64;

/// Most turn jobs pushed to Redis in one round trip.
const TURN_PUSH_BATCH: usize = 64;

/// How long a route or member lookup is reused: a changed route, tenant
/// limit or member takes effect within this.
const ROUTE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Inbound rates, per user (within a tenant) and per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPaces {
    /// One user's messages.
    pub user: Pace,
    /// One tenant's messages.
    pub tenant: Pace,
}

/// The inbound rate limits: per user within a tenant and per tenant, the
/// tenant's own where it set them. Shared by everything that takes what
/// people write (messages, replies in review threads).
#[derive(Debug, Clone)]
pub struct InboundLimiter {
    pacer: Arc<Pacer>,
    paces: InboundPaces,
}

impl InboundLimiter {
    /// Limits kept in `pacer`, at `paces` unless a tenant set its own.
    pub fn new(pacer: Arc<Pacer>, paces: InboundPaces) -> Self {
        Self { pacer, paces }
    }

    /// Takes a slot from `author`'s and the tenant's limits; `false` when
    /// either is used up.
    pub fn allows(&self, tenant: TenantId, limits: TenantLimits, author: &str) -> bool {
        let user = limits.user_per_minute.map_or(self.paces.user, per_minute);
        let whole = limits
            .tenant_per_minute
            .map_or(self.paces.tenant, per_minute);
        self.pacer
            .try_take(&format!("user:{tenant}:{author}"), user)
            && self.pacer.try_take(&format!("tenant:{tenant}"), whole)
    }

    /// Whether `key` may happen now at `pace` (a notice to one author).
    fn may(&self, key: &str, pace: Pace) -> bool {
        self.pacer.try_take(key, pace)
    }
}

impl IngestOutcome {
    /// Label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ignored => "ignored",
            Self::Accepted(_) => "accepted",
            Self::Duplicate(_) => "duplicate",
            Self::Unrouted => "unrouted",
            Self::Limited => "limited",
            Self::NotAMember => "not_a_member",
            Self::RouteNeedsMembers => "route_needs_members",
        }
    }
}

/// Records inbound messages and enqueues their turns.
#[derive(Debug, Clone)]
pub struct IngestManager {
    store: Store,
    routes: RouteCache,
    members: MemberCache,
    inbox: InboxWriter,
    turns: Batcher<Job<WorkerJob>, Result<(), String>>,
    queue: JobQueue,
    presence: Presence,
    limiter: InboundLimiter,
}

impl IngestManager {
    /// A manager over the store, the queue, the platforms' presence and the
    /// inbound rate limiter. Starts the inbox's writer task and the task
    /// that pushes turn jobs (both group what arrives together).
    pub fn new(store: Store, queue: JobQueue, presence: Presence, limiter: InboundLimiter) -> Self {
        Self {
            routes: RouteCache::new(store.clone(), ROUTE_CACHE_TTL),
            members: MemberCache::new(store.clone(), ROUTE_CACHE_TTL),
            inbox: InboxWriter::start(&store, INBOX_BATCH),
            turns: push_turns(queue.clone()),
            store,
            queue,
            presence,
            limiter,
        }
    }

    /// The routes it reads, through its cache.
    pub fn routes(&self) -> &RouteCache {
        &self.routes
    }

    /// Tells the author of a message that was not taken `text`, at most
    /// once per `pace` and author, through the outbox like any reply.
    async fn tell_author(
        &self,
        params: &NewMessageParams,
        traceparent: &str,
        (text, pace): (&str, Pace),
    ) -> anyhow::Result<()> {
        let key = format!(
            "notice:{}:{}:{}:{}",
            params.tenant_id,
            params.platform.as_str(),
            params.author_id,
            pace.period.as_secs()
        );
        if !self.limiter.may(&key, pace) {
            return Ok(());
        }
        let store = self.store.tenant(params.tenant_id);
        let outbox_id = store
            .record_notice(params, text)
            .await
            .context("Cannot record the notice")?;
        self.queue
            .deliver_outbox(store.tenant_id(), outbox_id, traceparent)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Ingests what an edge received on `platform` (`None`: nothing for an
    /// agent), counts the outcome, and shows the sender that the agent is
    /// working on an accepted message.
    #[tracing::instrument(skip_all, fields(platform = platform.as_str(), trace_id))]
    pub async fn accept(
        &self,
        platform: Platform,
        msg: Option<InboundMessage>,
    ) -> anyhow::Result<IngestOutcome> {
        let outcome = match msg.and_then(InboundMessage::into_storable) {
            None => IngestOutcome::Ignored,
            Some(msg) => {
                let thread_name = msg.text.lines().next().unwrap_or_default().to_owned();
                record_trace_id(&tracing::Span::current());
                let outcome = self.ingest(msg, &current_traceparent()).await?;
                if let IngestOutcome::Accepted(accepted) = &outcome {
                    let presence = self.presence.clone();
                    let working = Working {
                        platform,
                        chat: accepted.chat.clone(),
                        thread: accepted.thread.clone(),
                        inbox_id: accepted.inbox_id,
                        tenant_id: accepted.tenant_id,
                        thread_name,
                    };
                    tokio::spawn(async move { presence.show_working(working).await });
                }
                outcome
            }
        };
        tracing::info!(
            platform = platform.as_str(),
            outcome = outcome.label(),
            "Message handled"
        );
        metrics::counter!("automate_e_messages_total", "channel" => platform.as_str(), "outcome" => outcome.label())
            .increment(1);
        Ok(outcome)
    }

    /// The conversation a message posted inside its thread continues, with
    /// its tenant's limits.
    async fn continued_conversation(
        &self,
        msg: &InboundMessage,
    ) -> anyhow::Result<Option<(ConversationModel, TenantLimits)>> {
        if !msg.platform.threads_are_chats() {
            return Ok(None);
        }
        let Some(tenant) = self
            .store
            .thread_tenant(msg.platform, &msg.chat)
            .await
            .context("Cannot look up the thread's tenant")?
        else {
            return Ok(None);
        };
        let store = self.store.tenant(tenant);
        let Some(conversation) = store
            .conversation_in_thread(msg.platform, &msg.chat)
            .await
            .context("Cannot look up the thread's conversation")?
        else {
            return Ok(None);
        };
        let settings = store.settings().await.context("Cannot load the tenant")?;
        Ok(Some((conversation, settings.limits())))
    }

    /// Records the message once and makes sure its turn job is queued. Returns
    /// only after both are durable, so the platform may be acknowledged.
    pub async fn ingest(
        &self,
        msg: InboundMessage,
        traceparent: &str,
    ) -> anyhow::Result<IngestOutcome> {
        let (tenant_id, limits, character, chat, thread, route_channel) =
            match self.continued_conversation(&msg).await? {
                Some((c, limits)) => {
                    let channel = c.chat.clone();
                    (c.tenant_id, limits, c.character, c.chat, c.thread, channel)
                }
                None => {
                    let routes = self
                        .routes
                        .routes(msg.platform, &msg.workspace, &msg.chat)
                        .await
                        .context("Cannot load routes")?;
                    let Some(route) = route::pick(&routes, &msg.chat) else {
                        return Ok(IngestOutcome::Unrouted);
                    };
                    (
                        route.tenant_id,
                        route.limits,
                        route.character.clone(),
                        msg.chat,
                        msg.thread,
                        route.channel.clone(),
                    )
                }
            };
        let members = self
            .members
            .members(tenant_id, msg.platform)
            .await
            .context("Cannot load members")?;
        let author = Author {
            platform: msg.platform,
            workspace: &msg.workspace,
            user: &msg.author_id,
            team: msg.author_team.as_deref(),
            roles: &msg.author_roles,
        };
        let admission = admit(&members, &route_channel, &author);
        let files = !msg.attachments.is_empty();
        let params = NewMessageParams {
            tenant_id,
            character,
            platform: msg.platform,
            chat: chat.clone(),
            thread: thread.clone(),
            platform_message_id: msg.message_id,
            delivery_id: msg.delivery_id,
            author_id: msg.author_id,
            text: msg.text,
            attachments: msg.attachments,
            received_at: msg.received_at,
        };
        match admission {
            Admission::Member => {}
            Admission::RouteNeedsMembers => return Ok(IngestOutcome::RouteNeedsMembers),
            Admission::NotAMember => {
                let notice = (NOT_A_MEMBER_REPLY, NOT_A_MEMBER_NOTICE_PACE);
                self.tell_author(&params, traceparent, notice).await?;
                return Ok(IngestOutcome::NotAMember);
            }
        }
        if !self.limiter.allows(tenant_id, limits, &params.author_id) {
            let notice = (RATE_LIMITED_REPLY, LIMIT_NOTICE_PACE);
            self.tell_author(&params, traceparent, notice).await?;
            return Ok(IngestOutcome::Limited);
        }
        let (inbox_id, outcome) = match self
            .inbox
            .record(params)
            .await
            .context("Cannot record message")?
        {
            RecordOutcome::New { inbox_id } => (
                inbox_id,
                IngestOutcome::Accepted(Accepted {
                    inbox_id,
                    tenant_id,
                    chat,
                    thread,
                }),
            ),
            RecordOutcome::Duplicate {
                inbox_id,
                processed: true,
            } => {
                return Ok(IngestOutcome::Duplicate(inbox_id));
            }
            // Seen before and not answered yet: queue it again, in case the
            // first delivery did not get to (a no-op while it is queued).
            RecordOutcome::Duplicate {
                inbox_id,
                processed: false,
            } => (inbox_id, IngestOutcome::Duplicate(inbox_id)),
        };
        if files {
            // Its files are fetched first; that job queues the turn.
            self.queue
                .enqueue(Job::new(
                    tenant_id,
                    traceparent,
                    DeliveryJob::FetchFilesV1 { inbox_id },
                ))
                .await
                .context("Cannot enqueue the file fetch")?;
            return Ok(outcome);
        }
        self.turns
            .submit(Job::new(
                tenant_id,
                traceparent,
                WorkerJob::TurnV1 { inbox_id },
            ))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|pushed| pushed.map_err(anyhow::Error::msg))
            .context("Cannot enqueue turn")?;
        Ok(outcome)
    }
}

/// Pushes the turn jobs that wait together in one round trip; each caller
/// gets the round's result.
fn push_turns(queue: JobQueue) -> Batcher<Job<WorkerJob>, Result<(), String>> {
    Batcher::start(TURN_PUSH_BATCH, move |jobs: Vec<Job<WorkerJob>>| {
        let queue = queue.clone();
        async move {
            let count = jobs.len();
            let pushed = queue.enqueue_all(jobs).await.map_err(|e| e.to_string());
            vec![pushed; count]
        }
    })
}
