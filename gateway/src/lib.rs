//! The Automate-E gateway: receives chat platform messages (Slack Events API
//! today), records them in the durable inbox, enqueues turn jobs, and delivers
//! the workers' replies. It is the only process that holds chat tokens.

pub mod config;
pub mod connection;
pub mod http;
pub mod manager;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use shared::access::discord::DiscordClient;
use shared::access::queue::JobQueue;
use shared::access::slack::SlackClient;
use shared::access::store::Store;
use shared::access::telegram::TelegramClient;
use shared::engine::pace::per_minute;
use shared::job::{DeliveryJob, Job, JobFailure};
use shared::pacer::Pacer;
use shared::runner::{ConsumerSettings, JobHandler, consume};
use shared::telemetry::trace_id;
use slack_morphism::SlackSigningSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
use config::TelegramMode;
use connection::discord::{DiscordEdge, intents as discord_intents};
use http::HttpState;
use manager::delivery::{ChatClients, DeliveryManager};
use manager::files::{FileManager, FileSources};
use manager::ingest::{InboundLimiter, InboundPaces, IngestManager};
use manager::page::{ChatPage, PageBell};
use manager::presence::Presence;
use manager::review_desk::{ReceiptLinks, ReviewDesk};

/// The gateway's sockets: the public one (webhooks), the operators' and,
/// when it is on, the chat page's.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
    pub page: Option<TcpListener>,
}

impl Listeners {
    /// Binds both addresses of `cfg`.
    pub async fn bind(cfg: &GatewayConfig) -> anyhow::Result<Self> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .with_context(|| format!("Cannot listen on {addr}"))
        };
        let page = match &cfg.web.addr {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        Ok(Self {
            public: bind(cfg.listen_addr.0.clone()).await?,
            admin: bind(cfg.admin_addr.0.clone()).await?,
            page,
        })
    }
}

/// A built gateway, ready to run.
pub struct App {
    listeners: Listeners,
    router: axum::Router,
    admin_router: axum::Router,
    page_router: Option<axum::Router>,
    queue: JobQueue,
    delivery: Arc<DeliveryManagers>,
    ingest: IngestManager,
    discord_edge: Option<DiscordEdge>,
    telegram_polling: Option<TelegramClient>,
    cfg: GatewayConfig,
    /// Stops the gateway's own background work (typing indicators) too.
    stop: CancellationToken,
    /// Per-chat pacing of deliveries, shared with the delivery manager.
    /// Keyed limiters whose idle keys are forgotten every minute.
    pacers: Vec<Arc<Pacer>>,
}

impl App {
    /// Connects to Postgres and Redis, builds the platform clients and binds
    /// the HTTP listener (or uses the given one, e.g. bound to port 0 by a test).
    pub async fn build(cfg: GatewayConfig, listeners: Option<Listeners>) -> anyhow::Result<Self> {
        cfg.validate()?;
        let store = Store::connect(&cfg.database)
            .await
            .context("Cannot connect to Postgres")?;
        let queue = JobQueue::connect(&cfg.redis)
            .await
            .context("Cannot connect to Redis")?;
        let http_client =
            shared::access::http_client(Duration::from_secs(cfg.slack.request_timeout_secs))
                .context("Cannot build HTTP client")?;
        let bell = PageBell::default();
        let chats = ChatClients {
            page: cfg.web.enabled().then(|| bell.clone()),
            slack: cfg.slack.enabled().then(|| {
                SlackClient::new(
                    http_client.clone(),
                    &cfg.slack.api_base_url,
                    cfg.slack.bot_token.clone(),
                )
                .with_files_base_url(&cfg.files.slack_base_url)
            }),
            discord: cfg.discord.enabled().then(|| {
                DiscordClient::new(&cfg.discord.token, cfg.discord.api_base_url.as_deref())
            }),
            telegram: if cfg.telegram.enabled() {
                Some(
                    TelegramClient::new(&cfg.telegram.token, &cfg.telegram.api_base_url)
                        .context("Cannot build Telegram client")?,
                )
            } else {
                None
            },
        };
        let stop = CancellationToken::new();
        let presence = Presence::new(
            store.clone(),
            chats.discord.clone(),
            chats.telegram.clone(),
            stop.clone(),
        );
        let limiter = Arc::new(Pacer::default());
        let inbound = InboundLimiter::new(
            limiter.clone(),
            InboundPaces {
                user: per_minute(cfg.limits.user_per_minute),
                tenant: per_minute(cfg.limits.tenant_per_minute),
            },
        );
        let ingest = IngestManager::new(store.clone(), queue.clone(), presence, inbound.clone());
        let links = cfg.files.public_url.as_ref().map(|url| ReceiptLinks {
            public_url: url.clone(),
            secret: cfg.files.link_secret.clone(),
        });
        let reviews = ReviewDesk::new(
            store.clone(),
            queue.clone(),
            chats.slack.clone(),
            links,
            inbound,
            bell.clone(),
        );
        let telegram_webhook = cfg.telegram.enabled() && cfg.telegram.mode == TelegramMode::Webhook;
        let state = HttpState {
            ingest: ingest.clone(),
            reviews: reviews.clone(),
            store: store.clone(),
            queue: queue.clone(),
            slack_signing_secret: cfg.slack.enabled().then(|| {
                Arc::new(SlackSigningSecret::new(
                    cfg.slack.signing_secret.expose_secret().to_owned(),
                ))
            }),
            telegram_secret: telegram_webhook
                .then(|| Arc::new(cfg.telegram.webhook_secret.clone())),
            metrics: shared::telemetry::metrics_handle(),
            queue_depth_token: Arc::new(cfg.queue_depth_token.clone()),
            trust_inbound_traceparent: cfg.trust_inbound_traceparent,
            link_secret: cfg
                .files
                .public_url
                .is_some()
                .then(|| Arc::new(cfg.files.link_secret.clone())),
        };
        let listeners = match listeners {
            Some(l) => l,
            None => Listeners::bind(&cfg).await?,
        };
        let discord_edge = cfg.discord.enabled().then(|| {
            let history = chats.discord.clone().map(|client| (store.clone(), client));
            DiscordEdge::new(ingest.clone(), &cfg.discord.allowed_bot_ids, history)
        });
        let telegram_polling = chats
            .telegram
            .clone()
            .filter(|_| cfg.telegram.mode == TelegramMode::Polling);
        let page_router = cfg.web.enabled().then(|| {
            http::page::router(http::page::PageState {
                page: ChatPage::new(
                    store.clone(),
                    ingest.clone(),
                    reviews.clone(),
                    queue.clone(),
                    bell,
                    cfg.files.clone(),
                    cfg.web.scripted_model,
                ),
                token: Arc::new(cfg.web.token.clone()),
            })
        });
        let pacer = Arc::new(Pacer::default());
        Ok(Self {
            listeners,
            page_router,
            admin_router: http::admin_router(state.clone()),
            router: http::router(state, cfg.slack.max_body_bytes),
            queue: queue.clone(),
            delivery: Arc::new(DeliveryManagers {
                store: store.clone(),
                files: FileManager::new(
                    store.clone(),
                    queue.clone(),
                    FileSources {
                        slack: chats.slack.clone(),
                        telegram: chats.telegram.clone(),
                        http: http_client,
                        page: cfg.web.enabled(),
                    },
                    cfg.files.clone(),
                ),
                replies: DeliveryManager::new(store, chats, pacer.clone()),
                reviews,
            }),
            ingest,
            discord_edge,
            telegram_polling,
            cfg,
            stop,
            pacers: vec![pacer, limiter],
        })
    }

    /// The port the public server listens on.
    pub fn port(&self) -> u16 {
        self.listeners.public.local_addr().map_or(0, |a| a.port())
    }

    /// The port the admin server listens on.
    pub fn admin_port(&self) -> u16 {
        self.listeners.admin.local_addr().map_or(0, |a| a.port())
    }

    /// The port the chat page listens on, when it is on.
    pub fn page_port(&self) -> Option<u16> {
        let page = self.listeners.page.as_ref()?;
        page.local_addr().ok().map(|a| a.port())
    }

    /// The Discord edge, when Discord is configured: what the gateway
    /// WebSocket feeds (tests inject MESSAGE_CREATE events here).
    pub fn discord_edge(&self) -> Option<DiscordEdge> {
        self.discord_edge.clone()
    }

    /// Serves HTTP, holds the platform connections and runs the delivery loop
    /// until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr: SocketAddr = self.listeners.public.local_addr()?;
        let admin: SocketAddr = self.listeners.admin.local_addr()?;
        tracing::info!(%addr, %admin, channels = %self.cfg.channels(), "Gateway listening");
        let stop = self.stop.clone();
        let forward = shutdown.clone();
        tokio::spawn(async move {
            forward.cancelled().await;
            stop.cancel();
        });
        let serve = |listener, router| {
            let stop = shutdown.clone();
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
        };
        let public = serve(self.listeners.public, self.router);
        let admin = serve(self.listeners.admin, self.admin_router);
        let page = async {
            match (self.listeners.page, self.page_router) {
                (Some(listener), Some(router)) => serve(listener, router).await,
                _ => Ok(()),
            }
        };
        let server = async {
            let (public, admin, page) =
                tokio::join!(public.into_future(), admin.into_future(), page);
            public.and(admin).and(page)
        };
        let settings = ConsumerSettings {
            role: "gateway-delivery",
            concurrency: self.cfg.delivery.concurrency,
            max_attempts: self.cfg.delivery.max_attempts,
            retry: self.cfg.delivery.retry.clone(),
            shutdown_grace: None,
        };
        let store = self.delivery.store.clone();
        let delivery = consume(self.queue, store, self.delivery, settings, shutdown.clone());
        let discord = run_discord(&self.cfg.discord, self.discord_edge, shutdown.clone());
        let telegram = async {
            if let Some(client) = self.telegram_polling {
                connection::telegram::poll(client, self.ingest, shutdown.clone()).await;
            }
        };
        let pacer = forget_idle_chats(self.pacers, shutdown.clone());
        let (served, (), connected, (), ()) =
            tokio::join!(server, delivery, discord, telegram, pacer);
        served.context("HTTP server failed")?;
        connected
    }
}

/// How often the pacer forgets chats that have been quiet long enough.
const PACER_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the pacers' memory bounded: one entry per recently active chat,
/// user or tenant.
async fn forget_idle_chats(pacers: Vec<Arc<Pacer>>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PACER_CLEANUP_INTERVAL) => pacers.iter().for_each(|p| p.forget_idle()),
        }
    }
}

/// Holds the Discord gateway connection (one per shard) until shutdown.
async fn run_discord(
    cfg: &config::DiscordConfig,
    edge: Option<DiscordEdge>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(edge) = edge else {
        return Ok(());
    };
    if !cfg.connect_gateway.unwrap_or(true) {
        // No connection whose READY would start it: catch up once now.
        edge.spawn_catch_up();
        return Ok(());
    }
    let token = cfg.token.expose_secret();
    let builder = match &cfg.api_base_url {
        Some(url) => serenity::client::ClientBuilder::new_with_http(
            serenity::http::HttpBuilder::new(token)
                .proxy(url.as_str())
                .ratelimiter_disabled(true)
                .build(),
            discord_intents(),
        ),
        None => serenity::Client::builder(token, discord_intents()),
    };
    let mut client = builder
        .event_handler(edge)
        .await
        .context("Cannot build the Discord client")?;
    let shards = client.shard_manager.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        shards.shutdown_all().await;
    });
    client
        .start_autosharded()
        .await
        .context("Discord gateway connection failed")
}

/// The managers that run delivery jobs.
#[derive(Debug)]
struct DeliveryManagers {
    store: Store,
    replies: DeliveryManager,
    reviews: ReviewDesk,
    files: FileManager,
}

impl JobHandler<DeliveryJob> for DeliveryManagers {
    async fn run(
        &self,
        job: &Job<DeliveryJob>,
        _attempt: usize,
        _shutdown: &CancellationToken,
    ) -> Result<(), JobFailure> {
        let tenant = job.tenant_id;
        match job.kind {
            DeliveryJob::DeliverV1 { outbox_id } => {
                self.replies
                    .deliver(tenant, outbox_id, trace_id(&job.traceparent))
                    .await
            }
            DeliveryJob::ReviewRequestV1 { proposal_id } => {
                self.reviews.post_review(tenant, proposal_id).await
            }
            DeliveryJob::FetchFilesV1 { inbox_id } => {
                self.files.fetch(tenant, inbox_id, &job.traceparent).await
            }
            DeliveryJob::ReviewDueV1 { proposal_id, .. } => {
                self.reviews.review_due(tenant, proposal_id).await
            }
            DeliveryJob::Unknown => Err(JobFailure::permanent(
                anyhow::anyhow!("unknown delivery job kind"),
                "Job from a newer producer",
            )),
        }
    }

    /// A reply that cannot be delivered leaves the relay's sweeps until a
    /// replay; a message whose files cannot be fetched goes on without them.
    async fn given_up(&self, job: &Job<DeliveryJob>, _reason: &str) {
        if let DeliveryJob::FetchFilesV1 { inbox_id } = job.kind {
            if let Err(e) = self
                .files
                .give_up(job.tenant_id, inbox_id, &job.traceparent)
                .await
            {
                tracing::error!(error = %e, "Cannot go on without a message's files");
            }
            return;
        }
        let DeliveryJob::DeliverV1 { outbox_id } = job.kind else {
            return;
        };
        if let Err(e) = self
            .store
            .tenant(job.tenant_id)
            .set_delivery_given_up(outbox_id, true)
            .await
        {
            tracing::error!(error = %e, "Cannot mark a reply given up");
        }
    }
}
