//! End-to-end harness: the real gateway and worker against real Postgres and
//! Redis (an own database and key namespace per test) and fake external
//! services over HTTP. [`run_test`] starts them, runs the test, and always
//! cleans up, whether the test passed, panicked or timed out.
//!
//! ```no_run
//! # async fn example() {
//! tests::run_test(async |t| {
//!     let status = t.post_slack_event(&tests::fixture("slack/event_callback.message.json")).await;
//!     assert_eq!(status, 200);
//! })
//! .await;
//! # }
//! ```

pub mod db;
pub mod fake;
pub mod load;
pub mod process;
pub mod proxy;
pub mod signing;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use shared::access::queue::JobQueue;
use shared::config::{DatabaseConfig, LogConfig, RedisConfig};
use shared::job::QueueName;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::TestDb;
use crate::fake::accounting::FakeAccounting;
use crate::fake::discord::FakeDiscord;
use crate::fake::openai::FakeOpenAi;
use crate::fake::otlp::FakeCollector;
use crate::fake::slack::FakeSlack;
use crate::fake::telegram::FakeTelegram;
use crate::process::ServiceProcess;
use crate::proxy::TcpProxy;

/// Longest any wait in a test may take.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a whole test may take (nextest ends a test process after three
/// minutes; this fails it first, with the database dropped).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a service may take to stop once the test is over.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a bounded wait checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Secrets of the test deployment.
pub const SLACK_SIGNING_SECRET: &str = "test-signing-secret-8f742231b10e";
/// Slack bot token the fake accepts.
pub const SLACK_BOT_TOKEN: &str = "xoxb-test-token";
/// LLM key the fake accepts.
pub const LLM_API_KEY: &str = "sk-test-key";
/// Accounting API token the fake accepts.
pub const ACCOUNTING_TOKEN: &str = "acct-test-token";

/// Discord bot token the fake accepts.
pub const DISCORD_TOKEN: &str = "discord-test-token";
/// Telegram bot token the fake accepts.
pub const TELEGRAM_TOKEN: &str = "123456789:TEST-telegram-token";
/// The secret token of the Telegram webhook.
pub const TELEGRAM_SECRET: &str = "telegram-webhook-secret-1";

/// Price of the test model's input tokens, in micros per million.
pub const TEST_INPUT_PRICE: u64 = 2_000_000;
/// Price of the test model's output tokens, in micros per million.
pub const TEST_OUTPUT_PRICE: u64 = 8_000_000;

/// The bearer token the gateway requires on `/queue-depth` (KEDA's).
pub const QUEUE_DEPTH_TOKEN: &str = "keda-queue-depth-token";
/// The chat page's token (in-process gateways serve the page).
pub const PAGE_TOKEN: &str = "page-token-for-tests";

/// The Telegram user of the fixtures, a member of the test tenant.
pub const TELEGRAM_OWNER: &str = "111111111";

/// The tenant's Slack review channel.
pub const REVIEW_CHANNEL: &str = "CREVIEW";
/// The tenant's reviewers: W111 (who also chats as the owner in the Slack
/// fixtures), W222 and W333.
pub const REVIEWERS: [&str; 3] = ["W111", "W222", "W333"];
/// Amounts under 1 000,00 kr may be auto-approved by a trusted pattern.
pub const AUTO_APPROVE_LIMIT_MINOR: i64 = 100_000;

/// The Discord guild and channel of the payload fixture, routed to Book-E.
pub const DISCORD_GUILD: &str = "290926798999357249";
/// See [`DISCORD_GUILD`].
pub const DISCORD_CHANNEL: &str = "290926798999357250";

/// The Slack team and channel of the payload fixtures, routed to Book-E.
pub const FIXTURE_TEAM: &str = "T111";
/// See [`FIXTURE_TEAM`].
pub const FIXTURE_CHANNEL: &str = "C111";

/// The conversation events of a turn that makes one read and replies, in
/// log order.
pub const ONE_READ_TURN_EVENTS: [&str; 5] = [
    "automate_e.conversation.message_received.v1",
    "automate_e.conversation.llm_called.v1",
    "automate_e.conversation.tool_called.v1",
    "automate_e.conversation.llm_called.v1",
    "automate_e.conversation.reply_composed.v1",
];

/// A real platform payload from `tests/data/`.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The settings of the services under test, in one place: the in-process
/// services and the service processes are configured from the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Attempts of a worker job and of a delivery job before the dead letter.
    pub max_attempts: usize,
    /// Backoff before the second attempt, in milliseconds.
    pub retry_base_ms: u64,
    /// Longest backoff, in milliseconds.
    pub retry_max_ms: u64,
    /// How often the relay sweeps, in milliseconds.
    pub relay_interval_ms: u64,
    /// How old unanswered or undelivered work must be before the relay
    /// re-queues it, in milliseconds.
    pub relay_grace_ms: u64,
    /// Time-to-live of a conversation lease, in milliseconds.
    pub lease_ttl_ms: u64,
    /// Timeout of one model call, in seconds.
    pub llm_timeout_secs: u64,
    /// Model rounds for characters that set none.
    pub max_tool_rounds: u32,
    /// The gateway's inbound limit per user, messages a minute.
    pub user_per_minute: u32,
    /// How long a stopping worker lets its running jobs go on, in
    /// milliseconds.
    pub shutdown_grace_ms: u64,
    /// Timeout of one Accounting API call, in seconds.
    pub accounting_timeout_secs: u64,
    /// The largest file the gateway reads, in bytes.
    pub max_file_bytes: u64,
    /// How often idle consumers poll their queue, in milliseconds.
    pub poll_interval_ms: u64,
    /// The chat page says the model is scripted (the sandbox's).
    pub scripted_model: bool,
}

impl Default for ServiceSettings {
    /// Fast retries, a relay that stays idle (its grace outlasts a test),
    /// the worker's own lease, model timeout and round limit.
    fn default() -> Self {
        let worker = worker::WorkerConfig::default();
        Self {
            max_attempts: 3,
            retry_base_ms: 200,
            retry_max_ms: 1_000,
            relay_interval_ms: 200,
            relay_grace_ms: 60_000,
            lease_ttl_ms: worker.lease_ttl_ms,
            llm_timeout_secs: worker.llm.timeout_secs,
            max_tool_rounds: worker.llm.max_tool_rounds,
            user_per_minute: gateway::GatewayConfig::default().limits.user_per_minute,
            shutdown_grace_ms: 2_000,
            accounting_timeout_secs: worker.accounting.timeout_secs,
            max_file_bytes: gateway::GatewayConfig::default().files.max_bytes,
            poll_interval_ms: shared::config::RedisConfig::default().poll_interval_ms,
            scripted_model: false,
        }
    }
}

impl ServiceSettings {
    /// Services that ride out killed workers and outages: more attempts, a
    /// short lease and model timeout, the relay sweeping after 5 s.
    pub fn riding_out_faults() -> Self {
        Self {
            max_attempts: 8,
            relay_interval_ms: 500,
            relay_grace_ms: 5_000,
            lease_ttl_ms: 3_000,
            llm_timeout_secs: 2,
            ..Self::default()
        }
    }

    /// The worker's settings as `AE_*` variables.
    fn worker_env(&self) -> ProcessEnv {
        [
            ("AE_MAX_ATTEMPTS", self.max_attempts.to_string()),
            ("AE_RETRY__BASE_MS", self.retry_base_ms.to_string()),
            ("AE_RETRY__MAX_MS", self.retry_max_ms.to_string()),
            ("AE_RELAY__INTERVAL_MS", self.relay_interval_ms.to_string()),
            ("AE_RELAY__GRACE_MS", self.relay_grace_ms.to_string()),
            ("AE_LEASE_TTL_MS", self.lease_ttl_ms.to_string()),
            ("AE_LLM__TIMEOUT_SECS", self.llm_timeout_secs.to_string()),
            ("AE_LLM__MAX_TOOL_ROUNDS", self.max_tool_rounds.to_string()),
            ("AE_SHUTDOWN_GRACE_MS", self.shutdown_grace_ms.to_string()),
            (
                "AE_ACCOUNTING__TIMEOUT_SECS",
                self.accounting_timeout_secs.to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    }

    /// The worker's settings applied to an in-process worker's config.
    fn apply_to_worker(&self, cfg: &mut worker::WorkerConfig) {
        cfg.max_attempts = self.max_attempts;
        cfg.retry.base_ms = self.retry_base_ms;
        cfg.retry.max_ms = self.retry_max_ms;
        cfg.relay.interval_ms = self.relay_interval_ms;
        cfg.relay.grace_ms = self.relay_grace_ms;
        cfg.lease_ttl_ms = self.lease_ttl_ms;
        cfg.llm.timeout_secs = self.llm_timeout_secs;
        cfg.llm.max_tool_rounds = self.max_tool_rounds;
        cfg.shutdown_grace_ms = self.shutdown_grace_ms;
        cfg.accounting.timeout_secs = self.accounting_timeout_secs;
    }

    /// The gateway's settings as `AE_*` variables.
    fn gateway_env(&self) -> ProcessEnv {
        [
            ("AE_DELIVERY__MAX_ATTEMPTS", self.max_attempts.to_string()),
            (
                "AE_DELIVERY__RETRY__BASE_MS",
                self.retry_base_ms.to_string(),
            ),
            ("AE_DELIVERY__RETRY__MAX_MS", self.retry_max_ms.to_string()),
            (
                "AE_LIMITS__USER_PER_MINUTE",
                self.user_per_minute.to_string(),
            ),
            ("AE_FILES__MAX_BYTES", self.max_file_bytes.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    }

    /// The gateway's settings applied to an in-process gateway's config.
    fn apply_to_gateway(&self, cfg: &mut gateway::GatewayConfig) {
        cfg.delivery.max_attempts = self.max_attempts;
        cfg.delivery.retry.base_ms = self.retry_base_ms;
        cfg.delivery.retry.max_ms = self.retry_max_ms;
        cfg.limits.user_per_minute = self.user_per_minute;
        cfg.files.max_bytes = self.max_file_bytes;
        cfg.web.scripted_model = self.scripted_model;
    }
}

/// A small valid PDF, as a receipt.
pub fn receipt_pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

/// A JPEG's first bytes and a body: what a photo of a receipt starts with.
pub fn receipt_jpeg(seed: u8) -> Vec<u8> {
    let mut jpeg = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];
    jpeg.extend(std::iter::repeat_n(seed, 2048));
    jpeg.extend([0xFF, 0xD9]);
    jpeg
}

/// The id the model is given for a stored receipt of these bytes.
pub fn receipt_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "receipt-{}",
        &hex::encode(sha2::Sha256::digest(bytes))[..12]
    )
}

/// The `data:` URL a file is shown to the model as.
pub fn data_url(content_type: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "data:{content_type};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The key the in-process gateway signs receipt links with.
pub const LINK_SECRET: &str = "test-receipt-link-secret";

/// The default tenant's slug, and its company in the Accounting API.
pub const ACME: &str = "acme";

/// Choices a test makes about the deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestOptions {
    /// The services' settings.
    pub settings: ServiceSettings,
    /// Telegram by long polling instead of the webhook.
    pub telegram_polling: bool,
    /// Do not start the worker; the test calls [`TestEnv::start_worker`].
    pub worker_later: bool,
    /// Run the gateway as a real process (the `gateway` binary) instead of
    /// in the test; Postgres and Redis reached through [`TcpProxy`]s.
    pub gateway_process: bool,
    /// Service processes log JSON at `info` and export their spans to a
    /// [`FakeCollector`] ([`TestEnv::collector`]).
    pub collect_traces: bool,
    /// Service processes reach Postgres and Redis directly instead of
    /// through the proxies the fault tests cut (benchmarks).
    pub direct_connections: bool,
    /// More `AE_*` settings of the gateway process (they override).
    pub gateway_env: &'static [(&'static str, &'static str)],
    /// Longest the test may take (default [`TEST_TIMEOUT`]).
    pub timeout: Option<Duration>,
}

/// Settings of a service process, as `AE_*` variables.
pub type ProcessEnv = Vec<(String, String)>;

/// A running deployment under test.
pub struct TestEnv {
    /// The test's database.
    pub db: TestDb,
    /// Where workers started from now on load characters (default: the
    /// repository's `characters/`).
    pub characters_dir: PathBuf,
    /// The test's Redis queue (own namespace).
    pub queue: JobQueue,
    /// Fake Slack Web API.
    pub slack: FakeSlack,
    /// Fake model endpoint.
    pub openai: FakeOpenAi,
    /// Fake Accounting API.
    pub accounting: FakeAccounting,
    /// Fake Discord REST API.
    pub discord: FakeDiscord,
    /// Fake Telegram Bot API.
    pub telegram: FakeTelegram,
    /// The gateway's Discord edge (stands in for the gateway WebSocket).
    pub discord_edge: Option<gateway::connection::discord::DiscordEdge>,
    /// The gateway's base URL.
    pub gateway_url: String,
    /// The gateway's admin server (`/metrics`, `/queue-depth`, `/readyz`).
    pub gateway_admin_url: String,
    /// The chat page's base URL (in-process gateways only; "" otherwise).
    pub page_url: String,
    /// The collector service processes export spans to
    /// ([`TestOptions::collect_traces`]).
    pub collector: Option<FakeCollector>,
    /// An HTTP client for requests to the gateway.
    pub http: reqwest::Client,
    redis_namespace: String,
    redis: Option<RedisConfig>,
    options: TestOptions,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Cancelled when a service task ends before the test does.
    service_ended: CancellationToken,
    /// Proxies to Postgres and Redis for service processes.
    pub postgres_proxy: Option<TcpProxy>,
    /// See [`Self::postgres_proxy`].
    pub redis_proxy: Option<TcpProxy>,
    processes: Vec<ServiceProcess>,
}

impl TestEnv {
    /// Starts fakes, a fresh database with one tenant routed to Book-E, and
    /// one gateway and one worker.
    pub async fn start() -> Self {
        Self::start_with(TestOptions::default()).await
    }

    /// [`Self::start`] with options.
    pub async fn start_with(options: TestOptions) -> Self {
        shared::telemetry::install_crypto_provider();
        if machine_setting("TEST_LOG").is_some() {
            let _spans_not_exported = shared::telemetry::init(
                &LogConfig {
                    filter: "info,sqlx=warn".into(),
                    ..LogConfig::default()
                },
                "tests",
            );
        }
        let db = TestDb::create().await;
        let tenant = db
            .seed_tenant("acme", "slack", FIXTURE_TEAM, "*", "book-e")
            .await;
        db.seed_route(tenant, "discord", DISCORD_GUILD, DISCORD_CHANNEL, "book-e")
            .await;
        db.seed_route(tenant, "telegram", "bot", "*", "book-e")
            .await;
        // Every Telegram chat reaches the bot: only listed members are heard.
        db.seed_member(tenant, "telegram", "user", TELEGRAM_OWNER, Some("owner"))
            .await;
        db.seed_review_policy(tenant, REVIEW_CHANNEL, AUTO_APPROVE_LIMIT_MINOR, &REVIEWERS)
            .await;
        let slack = FakeSlack::start(SLACK_BOT_TOKEN).await;
        for reviewer in REVIEWERS {
            slack.join(REVIEW_CHANNEL, reviewer);
        }
        let openai = FakeOpenAi::start(LLM_API_KEY).await;
        let accounting = FakeAccounting::start(ACCOUNTING_TOKEN).await;
        let discord = FakeDiscord::start(DISCORD_TOKEN).await;
        let telegram = FakeTelegram::start(TELEGRAM_TOKEN).await;
        let redis_namespace = format!("ae-test-{}", Uuid::new_v4().simple());
        let redis = RedisConfig {
            url: SecretString::from(redis_url()),
            namespace: redis_namespace.clone(),
            poll_interval_ms: options.settings.poll_interval_ms,
        };
        let queue = JobQueue::connect(&redis).await.expect("connect to Redis");
        let mut env = Self {
            db,
            characters_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../characters"),
            queue,
            slack,
            openai,
            accounting,
            discord,
            telegram,
            discord_edge: None,
            gateway_url: String::new(),
            gateway_admin_url: String::new(),
            page_url: String::new(),
            collector: None,
            http: reqwest::Client::new(),
            redis_namespace,
            redis: None,
            options,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            service_ended: CancellationToken::new(),
            postgres_proxy: None,
            redis_proxy: None,
            processes: Vec::new(),
        };
        if options.collect_traces {
            env.collector = Some(FakeCollector::start().await);
        }
        if options.gateway_process {
            if !options.direct_connections {
                env.postgres_proxy = Some(env.counting_postgres_proxy().await);
                env.redis_proxy = Some(TcpProxy::start(service_addr(&redis_url())).await);
            }
            let gateway = ServiceProcess::start("gateway", &env.gateway_env()).await;
            env.gateway_url = gateway.url.clone();
            env.gateway_admin_url = gateway.admin_url.clone();
            env.processes.push(gateway);
        } else {
            (env.gateway_url, env.gateway_admin_url) =
                env.spawn_gateway(redis.clone(), options).await;
        }
        env.redis = Some(redis);
        env.options = options;
        if !options.worker_later {
            env.start_worker().await;
        }
        env
    }

    fn database_config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: SecretString::from(self.db.service_url()),
            ..DatabaseConfig::default()
        }
    }

    /// Starts the gateway in this process; its public and admin base URLs.
    async fn spawn_gateway(
        &mut self,
        redis: RedisConfig,
        options: TestOptions,
    ) -> (String, String) {
        let mut cfg = gateway::GatewayConfig {
            database: self.database_config(),
            redis,
            ..Default::default()
        };
        cfg.slack.signing_secret = SecretString::from(SLACK_SIGNING_SECRET);
        cfg.slack.bot_token = SecretString::from(SLACK_BOT_TOKEN);
        cfg.slack.api_base_url = self.slack.base_url.clone();
        options.settings.apply_to_gateway(&mut cfg);
        cfg.queue_depth_token = SecretString::from(QUEUE_DEPTH_TOKEN);
        cfg.discord.token = SecretString::from(DISCORD_TOKEN);
        cfg.discord.api_base_url = Some(self.discord.base_url.clone());
        cfg.discord.connect_gateway = Some(false);
        cfg.telegram.token = SecretString::from(TELEGRAM_TOKEN);
        cfg.telegram.webhook_secret = SecretString::from(TELEGRAM_SECRET);
        cfg.telegram.api_base_url = self.telegram.base_url.clone();
        cfg.files.slack_base_url = self.slack.files_base_url();
        cfg.files.discord_base_urls = vec![self.discord.cdn_base_url()];
        if options.telegram_polling {
            cfg.telegram.mode = gateway::config::TelegramMode::Polling;
        }
        let bind = async || {
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind gateway")
        };
        let listeners = gateway::Listeners {
            public: bind().await,
            admin: bind().await,
            page: Some(bind().await),
        };
        cfg.web.addr = Some("127.0.0.1:0".to_owned());
        cfg.web.token = SecretString::from(PAGE_TOKEN);
        let port = listeners
            .public
            .local_addr()
            .expect("gateway address")
            .port();
        cfg.files.public_url = Some(format!("http://127.0.0.1:{port}"));
        cfg.files.link_secret = SecretString::from(LINK_SECRET);
        let app = gateway::App::build(cfg, Some(listeners))
            .await
            .expect("build gateway");
        let url = format!("http://127.0.0.1:{}", app.port());
        let admin_url = format!("http://127.0.0.1:{}", app.admin_port());
        self.discord_edge = app.discord_edge();
        self.page_url = format!("http://127.0.0.1:{}", app.page_port().unwrap_or_default());
        self.spawn_service(app.run_until_stopped(self.shutdown.clone()));
        (url, admin_url)
    }

    /// Starts a worker (one per call).
    pub async fn start_worker(&mut self) {
        let redis = self.redis.clone().expect("Redis is configured");
        let mut cfg = worker::WorkerConfig {
            database: self.database_config(),
            redis,
            ..Default::default()
        };
        cfg.llm.base_url = self.openai.base_url.clone();
        cfg.llm.api_key = SecretString::from(LLM_API_KEY);
        cfg.llm.model = "gpt-test".into();
        cfg.accounting.base_url = self.accounting.base_url.clone();
        cfg.accounting.token = SecretString::from(ACCOUNTING_TOKEN);
        cfg.characters_dir = self.characters_dir.clone();
        cfg.pricing.models.insert(
            "gpt-test".into(),
            shared::engine::cost::ModelPrice {
                input_per_million_micros: TEST_INPUT_PRICE,
                output_per_million_micros: TEST_OUTPUT_PRICE,
            },
        );
        self.options.settings.apply_to_worker(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
        let app = worker::App::build(cfg, Some(listener))
            .await
            .expect("build worker");
        self.spawn_service(app.run_until_stopped(self.shutdown.clone()));
    }

    /// Runs an in-process service until the test's shutdown: a service that
    /// ends before then fails the test ([`run_test`]).
    pub fn spawn_service<F>(&mut self, service: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let ended = self.service_ended.clone();
        self.tasks.push(tokio::spawn(async move {
            let result = service.await;
            ended.cancel();
            result
        }));
    }

    /// A new proxy to Postgres that counts its traffic (for one process).
    pub async fn counting_postgres_proxy(&self) -> TcpProxy {
        TcpProxy::postgres(service_addr(&db::admin_url())).await
    }

    /// The service role's database URL, through `proxy` if given (which
    /// reads the messages, so without TLS).
    pub fn postgres_url_via(&self, proxy: Option<&TcpProxy>) -> String {
        let mut url = reqwest::Url::parse(&self.db.service_url()).expect("service URL");
        if let Some(proxy) = proxy {
            url.set_port(Some(proxy.port)).expect("URL takes a port");
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        url.to_string()
    }

    /// Settings both service processes share: the database and Redis
    /// through the proxies.
    fn process_env(&self) -> ProcessEnv {
        let via = |url: &str, proxy: &Option<TcpProxy>| {
            let mut url = reqwest::Url::parse(url).expect("service URL");
            if let Some(proxy) = proxy {
                url.set_port(Some(proxy.port)).expect("URL takes a port");
            }
            url.to_string()
        };
        [
            (
                "AE_DATABASE__URL",
                self.postgres_url_via(self.postgres_proxy.as_ref()),
            ),
            ("AE_DATABASE__ACQUIRE_TIMEOUT_SECS", "2".to_owned()),
            ("AE_REDIS__URL", via(&redis_url(), &self.redis_proxy)),
            ("AE_REDIS__NAMESPACE", self.redis_namespace.clone()),
            (
                "AE_REDIS__POLL_INTERVAL_MS",
                self.options.settings.poll_interval_ms.to_string(),
            ),
        ]
        .into_iter()
        .chain(self.collector.iter().flat_map(|collector| {
            [
                ("AE_LOG__OTLP_ENDPOINT", collector.base_url.clone()),
                ("AE_LOG__FORMAT", "json".to_owned()),
                ("AE_LOG__FILTER", "info,sqlx=warn".to_owned()),
                // Export every 100 ms instead of every 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ]
        }))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn gateway_env(&self) -> ProcessEnv {
        let mut env = self.process_env();
        env.extend(
            [
                ("AE_SLACK__SIGNING_SECRET", SLACK_SIGNING_SECRET.to_owned()),
                ("AE_SLACK__BOT_TOKEN", SLACK_BOT_TOKEN.to_owned()),
                ("AE_SLACK__API_BASE_URL", self.slack.base_url.clone()),
                ("AE_FILES__SLACK_BASE_URL", self.slack.files_base_url()),
                ("AE_DISCORD__TOKEN", DISCORD_TOKEN.to_owned()),
                ("AE_DISCORD__API_BASE_URL", self.discord.base_url.clone()),
                // No WebSocket: messages reach a gateway process only by catching up.
                ("AE_DISCORD__CONNECT_GATEWAY", "false".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env.extend(self.options.settings.gateway_env());
        env.push((
            "AE_QUEUE_DEPTH_TOKEN".to_owned(),
            QUEUE_DEPTH_TOKEN.to_owned(),
        ));
        env.extend(
            self.options
                .gateway_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    /// The value of a counter without labels that the in-process services
    /// recorded (they share this process's metrics recorder); 0 before the
    /// first increment.
    pub fn counter(&self, name: &str) -> u64 {
        shared::telemetry::metrics_handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// What `url`'s `/metrics` renders now.
    pub async fn metrics_of(&self, url: &str) -> String {
        let response = self
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    }

    /// The gateway process ([`TestOptions::gateway_process`]).
    pub fn gateway_process(&self) -> &ServiceProcess {
        self.processes
            .first()
            .expect("started with gateway_process")
    }

    /// Stops the gateway process (SIGTERM); [`Self::start_gateway_process`]
    /// starts it again.
    pub async fn stop_gateway_process(&mut self) {
        assert!(self.options.gateway_process, "started with gateway_process");
        let gateway = self.processes.remove(0);
        let status = gateway.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "the gateway exited with {status}");
    }

    /// Starts the gateway process again (on new ports).
    pub async fn start_gateway_process(&mut self) {
        self.start_gateway_process_without(&[]).await;
    }

    /// Starts the gateway process again without the settings `unset`.
    pub async fn start_gateway_process_without(&mut self, unset: &[&str]) {
        let mut env = self.gateway_env();
        env.retain(|(key, _)| !unset.contains(&key.as_str()));
        let gateway = ServiceProcess::start("gateway", &env).await;
        self.gateway_url = gateway.url.clone();
        self.gateway_admin_url = gateway.admin_url.clone();
        self.processes.insert(0, gateway);
    }

    /// Settings of a worker process like [`Self::start_worker`]'s; `extra`
    /// overrides.
    pub fn worker_env(&self, extra: &[(&str, &str)]) -> ProcessEnv {
        let mut env = self.process_env();
        let characters = &self.characters_dir;
        env.extend(
            [
                ("AE_LLM__BASE_URL", self.openai.base_url.clone()),
                ("AE_LLM__API_KEY", LLM_API_KEY.to_owned()),
                ("AE_LLM__MODEL", "gpt-test".to_owned()),
                ("AE_ACCOUNTING__BASE_URL", self.accounting.base_url.clone()),
                ("AE_ACCOUNTING__TOKEN", ACCOUNTING_TOKEN.to_owned()),
                ("AE_CHARACTERS_DIR", characters.display().to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env.extend(self.options.settings.worker_env());
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    /// Starts a worker process with [`Self::worker_env`]; returns it for the
    /// test to kill or stop (dropping it kills it).
    pub async fn start_worker_process(&self, extra: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::start("worker", &self.worker_env(extra)).await
    }

    /// Posts a body to the Slack events endpoint, signed now; returns the status.
    pub async fn post_slack_event(&self, body: &str) -> u16 {
        let ts = chrono::Utc::now().timestamp().to_string();
        self.post_slack_event_with(
            body,
            &ts,
            &signing::slack_signature(SLACK_SIGNING_SECRET, &ts, body),
            &[],
        )
        .await
        .status()
        .as_u16()
    }

    /// Posts a body with the given timestamp, signature and extra headers.
    pub async fn post_slack_event_with(
        &self,
        body: &str,
        timestamp: &str,
        signature: &str,
        extra_headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/slack/events", self.gateway_url))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", timestamp)
            .header("x-slack-signature", signature)
            .body(body.to_owned());
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("gateway answers")
    }

    /// Posts a signed Slack interactivity payload (form-encoded, as Slack does).
    pub async fn post_interaction(&self, payload: &serde_json::Value) -> reqwest::Response {
        // What Slack knows of the click: the clicker sees the channel, and
        // its trigger id may open one modal.
        if let (Some(user), Some(channel)) = (
            payload["user"]["id"].as_str(),
            payload["channel"]["id"].as_str(),
        ) {
            self.slack.join(channel, user);
        }
        if let Some(trigger) = payload["trigger_id"].as_str() {
            self.slack.issue_trigger(trigger);
        }
        let body =
            serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form body");
        let ts = chrono::Utc::now().timestamp().to_string();
        self.http
            .post(format!("{}/slack/interactivity", self.gateway_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                signing::slack_signature(SLACK_SIGNING_SECRET, &ts, &body),
            )
            .body(body)
            .send()
            .await
            .expect("gateway answers")
    }

    /// A reviewer clicks a button (`action_id`, `value`) on a review card:
    /// Slack's own `block_actions` payload with this user, action and value.
    pub async fn click(&self, user: &str, action_id: &str, value: &str) -> u16 {
        let mut payload: serde_json::Value =
            serde_json::from_str(&fixture("slack/block_actions.json")).unwrap();
        payload["user"]["id"] = serde_json::json!(user);
        payload["channel"]["id"] = serde_json::json!(REVIEW_CHANNEL);
        payload["container"]["channel_id"] = serde_json::json!(REVIEW_CHANNEL);
        payload["actions"][0]["action_id"] = serde_json::json!(action_id);
        payload["actions"][0]["value"] = serde_json::json!(value);
        payload["trigger_id"] =
            serde_json::json!(format!("trigger-{user}-{}", Uuid::new_v4().simple()));
        self.post_interaction(&payload).await.status().as_u16()
    }

    /// A reviewer submits the reject-reason modal that `view` describes.
    pub async fn submit_modal(
        &self,
        user: &str,
        view: &serde_json::Value,
        reason: &str,
    ) -> reqwest::Response {
        let mut submitted = view.clone();
        submitted["id"] = serde_json::json!("VFAKE1");
        submitted["team_id"] = serde_json::json!(FIXTURE_TEAM);
        submitted["hash"] = serde_json::json!("156772938.1827394");
        submitted["state"] = serde_json::json!({"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}});
        let payload = serde_json::json!({
            "type": "view_submission",
            "team": {"id": FIXTURE_TEAM, "domain": "workspace-domain"},
            "user": {"id": user, "username": user, "name": user, "team_id": FIXTURE_TEAM},
            "api_app_id": "A111",
            "token": "verification_token",
            "trigger_id": "111.222.submit",
            "view": submitted
        });
        self.post_interaction(&payload).await
    }

    /// The state of every proposal, oldest first: (id, state).
    pub async fn proposals(&self) -> Vec<(Uuid, String)> {
        sqlx::query_as("SELECT id, state FROM proposals ORDER BY created_at")
            .fetch_all(&self.db.owner)
            .await
            .expect("read proposals")
    }

    /// Waits until some proposal is in `state`; returns its id.
    pub async fn wait_for_proposal(&self, state: &str) -> Uuid {
        self.wait_for_proposal_within(state, WAIT_TIMEOUT).await
    }

    /// [`Self::wait_for_proposal`] with its own time limit.
    pub async fn wait_for_proposal_within(&self, state: &str, limit: Duration) -> Uuid {
        self.wait_until_within(&format!("a proposal {state}"), limit, || async {
            self.proposals().await.iter().any(|(_, s)| s == state)
        })
        .await;
        self.proposals()
            .await
            .into_iter()
            .find(|(_, s)| s == state)
            .map(|(id, _)| id)
            .expect("found")
    }

    /// Waits until the fake Slack has `n` review cards.
    pub async fn wait_for_cards(&self, n: usize) {
        self.wait_until(&format!("{n} review cards"), || async {
            self.slack.cards().len() >= n
        })
        .await;
    }

    /// Posts a Telegram update to the webhook with this secret header (if any).
    pub async fn post_telegram_update(
        &self,
        body: &str,
        secret: Option<&str>,
    ) -> reqwest::Response {
        if let Ok(update) = serde_json::from_str(body) {
            self.telegram.note_topic(&update);
        }
        let mut request = self
            .http
            .post(format!("{}/telegram/webhook", self.gateway_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(secret) = secret {
            request = request.header("x-telegram-bot-api-secret-token", secret);
        }
        request.send().await.expect("gateway answers")
    }

    /// Feeds a Discord MESSAGE_CREATE dispatch (`{op, d, s, t}`) to the gateway's
    /// Discord edge, as the gateway WebSocket would.
    pub async fn discord_message_create(
        &self,
        dispatch: &serde_json::Value,
    ) -> gateway::manager::ingest::IngestOutcome {
        // The message exists on Discord, in its channel.
        if let (Some(channel), Some(id)) = (
            dispatch["d"]["channel_id"].as_str(),
            dispatch["d"]["id"].as_str(),
        ) {
            self.discord.add_message(channel, id);
        }
        let message = serde_json::from_value(dispatch["d"].clone()).expect("a Discord message");
        self.discord_edge
            .as_ref()
            .expect("Discord is configured")
            .on_message(&message)
            .await
            .expect("message ingested")
    }

    /// Waits until the fake Discord has `n` posted messages waiting.
    pub async fn wait_for_discord_posts(&self, n: usize) {
        self.wait_until(&format!("{n} Discord posts"), || async {
            self.discord.post_count() >= n
        })
        .await;
    }

    /// Waits until the fake Telegram has `n` sent messages waiting.
    pub async fn wait_for_telegram_posts(&self, n: usize) {
        self.wait_until(&format!("{n} Telegram posts"), || async {
            self.telegram.post_count() >= n
        })
        .await;
    }

    /// Waits until the fake Slack has `n` posted messages waiting.
    pub async fn wait_for_posts(&self, n: usize) {
        self.wait_for_posts_within(n, WAIT_TIMEOUT).await;
    }

    /// [`Self::wait_for_posts`] with its own time limit.
    pub async fn wait_for_posts_within(&self, n: usize, limit: Duration) {
        self.wait_until_within(&format!("{n} Slack posts"), limit, || async {
            self.slack.posted_count() >= n
        })
        .await;
    }

    /// Waits until no job is waiting or running and every accepted message
    /// has been answered and delivered.
    pub async fn wait_idle(&self) {
        self.wait_idle_within(WAIT_TIMEOUT).await;
    }

    /// [`Self::wait_idle`] with its own time limit.
    pub async fn wait_idle_within(&self, limit: Duration) {
        self.wait_until_within("the system to be idle", limit, || async {
            self.jobs_in_redis().await == 0 && self.db.pending_work().await == 0
        })
        .await;
    }

    /// Jobs on both queues, due, delayed or running.
    pub async fn jobs_in_redis(&self) -> u64 {
        let mut jobs = 0;
        for queue in [QueueName::Worker, QueueName::Delivery] {
            let depth = self.queue.depth(queue).await.expect("queue depth");
            jobs += depth.backlog() + depth.delayed;
        }
        jobs
    }

    /// Polls `condition` until it holds; panics after [`WAIT_TIMEOUT`].
    pub async fn wait_until<F, Fut>(&self, what: &str, condition: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.wait_until_within(what, WAIT_TIMEOUT, condition).await;
    }

    /// [`Self::wait_until`] with its own time limit (fault recovery waits
    /// out heartbeats and leases).
    pub async fn wait_until_within<F, Fut>(&self, what: &str, limit: Duration, condition: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(task) = self.tasks.iter().find(|t| t.is_finished()) {
                panic!("a service stopped while waiting for {what}: {task:?}");
            }
            if condition().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the services, checks nothing was left unconsumed (extra replies
    /// or unused model answers fail the test) and cleans up; [`run_test`]
    /// calls it after a test that passed.
    pub async fn finish(mut self) {
        let mut problems = self.stop_services().await;
        let extra = self.slack.take_posted();
        if !extra.is_empty() {
            problems.push(format!("unexpected Slack posts: {extra:?}"));
        }
        let extra = self.discord.take_posts();
        if !extra.is_empty() {
            problems.push(format!("unexpected Discord posts: {extra:?}"));
        }
        let extra = self.telegram.take_posts();
        if !extra.is_empty() {
            problems.push(format!("unexpected Telegram posts: {extra:?}"));
        }
        let unused = self.openai.unused_script();
        if unused > 0 {
            problems.push(format!("{unused} scripted model answers were not used"));
        }
        for refused in self.telegram.refusals.take() {
            problems.push(format!("Telegram refused a request: {refused}"));
        }
        for refused in self.discord.refusals.take() {
            problems.push(format!("Discord refused a request: {refused}"));
        }
        for refused in self.slack.refusals.take() {
            problems.push(format!("Slack refused a request: {refused}"));
        }
        for refused in self.accounting.refusals().take() {
            problems.push(format!("the Accounting API refused a request: {refused}"));
        }
        let leftovers = [
            ("review cards", self.slack.take_cards().len()),
            ("card updates", self.slack.take_updates().len()),
            ("ephemeral messages", self.slack.take_ephemerals().len()),
            ("modals", self.slack.take_views().len()),
        ];
        for (what, count) in leftovers {
            if count > 0 {
                problems.push(format!("{count} Slack {what} the test did not take"));
            }
        }
        for unoffered in self.openai.take_unoffered_calls() {
            problems.push(format!(
                "the script called a tool the request did not offer: {unoffered}"
            ));
        }
        for refused in self.openai.refusals.take() {
            problems.push(format!("the model API refused a request: {refused}"));
        }
        self.clean_up().await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Stops every service; what went wrong while they ran or stopped.
    async fn stop_services(&mut self) -> Vec<String> {
        self.shutdown.cancel();
        let mut problems = Vec::new();
        for process in std::mem::take(&mut self.processes) {
            match process.stop(SERVICE_STOP_TIMEOUT).await {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!("a service process exited with {status}")),
                Err(problem) => problems.push(problem),
            }
        }
        for mut task in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(SERVICE_STOP_TIMEOUT, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => problems.push(format!("a service failed: {e:#}")),
                Ok(Err(e)) => problems.push(format!("a service panicked: {e}")),
                Err(_) => {
                    task.abort();
                    problems.push(format!(
                        "a service did not stop within {SERVICE_STOP_TIMEOUT:?}"
                    ));
                }
            }
        }
        problems
    }

    /// Deletes the test's Redis keys and drops its database.
    async fn clean_up(self) {
        self.wipe_redis().await;
        self.db.drop().await;
    }
}

/// Runs `test` against a fresh deployment ([`TestEnv::start`]), then
/// [`TestEnv::finish`]es it. Whatever happens — the test panics, a service
/// ends early, [`TEST_TIMEOUT`] passes — the services are stopped, the Redis
/// keys deleted and the database dropped before the test fails.
pub async fn run_test(test: impl AsyncFnOnce(&mut TestEnv)) {
    run_test_with(TestOptions::default(), test).await;
}

/// [`run_test`] with options.
pub async fn run_test_with(options: TestOptions, test: impl AsyncFnOnce(&mut TestEnv)) {
    use futures::FutureExt;

    let mut env = TestEnv::start_with(options).await;
    let ended = env.service_ended.clone();
    let timeout = options.timeout.unwrap_or(TEST_TIMEOUT);
    let outcome = tokio::select! {
        ran = std::panic::AssertUnwindSafe(test(&mut env)).catch_unwind() => ran.err(),
        () = ended.cancelled() => Some(Box::new("a service stopped while the test ran".to_owned()) as _),
        () = tokio::time::sleep(timeout) => Some(Box::new(format!("the test timed out after {timeout:?}")) as _),
    };
    let Some(failure) = outcome else {
        env.finish().await;
        return;
    };
    let problems = env.stop_services().await;
    env.clean_up().await;
    for problem in problems {
        eprintln!("while stopping after the failure: {problem}");
    }
    std::panic::resume_unwind(failure);
}

impl TestEnv {
    /// The prefix of every Redis key of the test.
    pub fn redis_namespace(&self) -> &str {
        &self.redis_namespace
    }

    /// Deletes every key of the test's Redis namespace, as a Redis restart
    /// without persistence would.
    pub async fn wipe_redis(&self) {
        let mut conn = redis::Client::open(redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.redis_namespace))
            .query_async(&mut conn)
            .await
            .expect("list test keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("delete test keys");
        }
    }
}

/// Host and port of a service URL.
fn service_addr(url: &str) -> std::net::SocketAddr {
    let url = reqwest::Url::parse(url).expect("service URL");
    let host = url.host_str().expect("URL has a host");
    let port = url.port_or_known_default().unwrap_or(match url.scheme() {
        "redis" => 6379,
        _ => 5432,
    });
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolve service host")
        .next()
        .expect("service host has an address")
}

/// Redis URL of the test machine (`AE_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    machine_setting("AE_TEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A setting of the machine the tests run on, from the environment.
#[expect(
    clippy::disallowed_methods,
    reason = "the harness reads where the test machine's services are"
)]
pub fn machine_setting(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
