//! The gateway's configuration: only what the gateway needs (chat secrets,
//! Postgres, Redis), never LLM or Accounting API credentials.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use shared::config::{
    ConfigError, DatabaseConfig, LogConfig, RedisConfig, RetryConfig, require_http_url,
    require_secret,
};

/// Gateway settings; see `README.md` for the environment variables.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GatewayConfig {
    /// Address of the public server: webhooks, `/healthz` and receipt links.
    /// Default `0.0.0.0:8080`.
    pub listen_addr: ListenAddr,
    /// Address of the operators' server: `/metrics`, `/queue-depth`,
    /// `/readyz` (and `/healthz`). Default `0.0.0.0:9090`; never exposed.
    pub admin_addr: AdminAddr,
    /// Continue the trace of an inbound request's W3C `traceparent`. Off by
    /// default: the header comes from the internet, and a sender could tie
    /// its requests to traces of its choosing. On only behind a proxy that
    /// sets it.
    pub trust_inbound_traceparent: bool,
    /// Postgres.
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    /// Logging.
    pub log: LogConfig,
    /// Slack app.
    pub slack: SlackConfig,
    /// Discord bot; off unless `discord.token` is set.
    pub discord: DiscordConfig,
    /// Telegram bot; off unless `telegram.token` is set.
    pub telegram: TelegramConfig,
    /// The chat page; off unless `web.addr` is set.
    pub web: WebConfig,
    /// Reply delivery.
    pub delivery: DeliveryConfig,
    /// Files owners send (receipts).
    pub files: FilesConfig,
    /// Inbound message rate limits.
    pub limits: InboundLimits,
    /// Bearer token that readers of `/queue-depth` (KEDA) must send. Required.
    #[serde(skip_serializing)]
    pub queue_depth_token: SecretString,
}

/// A socket address to listen on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListenAddr(pub String);

impl Default for ListenAddr {
    fn default() -> Self {
        Self("0.0.0.0:8080".to_owned())
    }
}

/// The admin server's address to listen on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdminAddr(pub String);

impl Default for AdminAddr {
    fn default() -> Self {
        Self("0.0.0.0:9090".to_owned())
    }
}

/// Slack app settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SlackConfig {
    /// Signing secret of the Slack app (verifies Events API requests). With
    /// the bot token, turns Slack on; neither (the default) leaves it off.
    #[serde(skip_serializing)]
    pub signing_secret: SecretString,
    /// Bot token (`xoxb-…`) for chat.postMessage.
    #[serde(skip_serializing)]
    pub bot_token: SecretString,
    /// Web API base URL. Default `https://slack.com/api`.
    pub api_base_url: String,
    /// Largest accepted webhook body, in bytes. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Timeout of one Web API call, in seconds. Default 10.
    pub request_timeout_secs: u64,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            signing_secret: SecretString::default(),
            bot_token: SecretString::default(),
            api_base_url: "https://slack.com/api".to_owned(),
            max_body_bytes: 256 * 1024,
            request_timeout_secs: 10,
        }
    }
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_base_url", &self.api_base_url)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Discord bot settings.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DiscordConfig {
    /// Bot token. Empty (the default) turns Discord off.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// REST base URL replacing `https://discord.com` (a fake in tests).
    /// When set, serenity's own rate limiter is off (it ignores the URL).
    pub api_base_url: Option<String>,
    /// Open the gateway WebSocket (one connection per shard). Default true.
    pub connect_gateway: Option<bool>,
    /// Bot user ids whose messages are answered (other bots are ignored).
    pub allowed_bot_ids: Vec<String>,
}

impl std::fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("api_base_url", &self.api_base_url)
            .field("allowed_bot_ids", &self.allowed_bot_ids)
            .finish_non_exhaustive()
    }
}

impl SlackConfig {
    /// Whether Slack is configured (both its secrets are).
    pub fn enabled(&self) -> bool {
        !self.signing_secret.expose_secret().trim().is_empty()
            && !self.bot_token.expose_secret().trim().is_empty()
    }
}

impl DiscordConfig {
    /// Whether Discord is configured.
    pub fn enabled(&self) -> bool {
        !self.token.expose_secret().is_empty()
    }
}

/// How Telegram updates arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// Telegram posts updates to `POST /telegram/webhook` (production).
    #[default]
    Webhook,
    /// The gateway long-polls `getUpdates` (local use, no public URL).
    Polling,
}

/// Telegram bot settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelegramConfig {
    /// Bot token. Empty (the default) turns Telegram off.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// The `secret_token` given to `setWebhook`; required in webhook mode.
    #[serde(skip_serializing)]
    pub webhook_secret: SecretString,
    /// Bot API base URL. Default `https://api.telegram.org`.
    pub api_base_url: String,
    /// Webhook (default) or long polling.
    pub mode: TelegramMode,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            token: SecretString::default(),
            webhook_secret: SecretString::default(),
            api_base_url: "https://api.telegram.org".to_owned(),
            mode: TelegramMode::Webhook,
        }
    }
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("api_base_url", &self.api_base_url)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl TelegramConfig {
    /// Whether Telegram is configured.
    pub fn enabled(&self) -> bool {
        !self.token.expose_secret().is_empty()
    }
}

/// The chat page (`web`): the owner chats with the agent and reviewers
/// decide on proposals in a browser. Meant for trying the system and for
/// one operator's machine: whoever holds the token may speak as any page
/// user, and the members and reviewers listed for `web` decide who is heard.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct WebConfig {
    /// Address the page is served on, its own listener (e.g.
    /// `127.0.0.1:8090`); unset (the default) turns the page off.
    pub addr: Option<String>,
    /// The page's secret: opened once as `/?token=…`, then a cookie.
    /// Required with `addr`.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// Say at the top of the page that the model is scripted (the sandbox).
    pub scripted_model: bool,
}

impl WebConfig {
    /// Whether the page is on.
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("addr", &self.addr)
            .field("scripted_model", &self.scripted_model)
            .finish_non_exhaustive()
    }
}

/// Inbound message rate limits. Each is a per-minute rate with a burst of
/// one minute's worth; a message over a limit is not recorded, and its author
/// is told (at most once a minute) to slow down.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InboundLimits {
    /// Messages one user may send per minute, per tenant. Default 20.
    pub user_per_minute: u32,
    /// Messages one tenant may receive per minute. Default 300.
    pub tenant_per_minute: u32,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            user_per_minute: 20,
            tenant_per_minute: 300,
        }
    }
}

/// Reply delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Deliveries run at once. Default 8.
    pub concurrency: usize,
    /// Attempts before a delivery is dead-lettered. Default 8.
    pub max_attempts: usize,
    /// Spacing of retries.
    pub retry: RetryConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 8,
            retry: RetryConfig::default(),
        }
    }
}

/// Files owners send with their messages: fetched with each platform's
/// credential, only from its own file host, within limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesConfig {
    /// Largest file read, in bytes. Default 10 MiB.
    pub max_bytes: u64,
    /// Files read per message; later ones are refused. Default 5.
    pub max_per_message: usize,
    /// Timeout of one download, in seconds. Default 30.
    pub timeout_secs: u64,
    /// Where Slack serves files. Default `https://files.slack.com/`.
    pub slack_base_url: String,
    /// Where Discord serves attachments. Default its two CDN hosts.
    pub discord_base_urls: Vec<String>,
    /// The gateway's public base URL (`https://automate-e.example.com`):
    /// set, a review card gets a Receipt button that gives the reviewer a
    /// link to the files, served here for ten minutes. Unset: no links.
    pub public_url: Option<String>,
    /// The key receipt links are signed with. Required with `public_url`;
    /// the same on every gateway.
    #[serde(skip_serializing)]
    pub link_secret: SecretString,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            max_per_message: 5,
            timeout_secs: 30,
            slack_base_url: shared::access::slack::SLACK_FILES_BASE_URL.to_owned(),
            discord_base_urls: vec![
                "https://cdn.discordapp.com/".to_owned(),
                "https://media.discordapp.net/".to_owned(),
            ],
            public_url: None,
            link_secret: SecretString::default(),
        }
    }
}

impl GatewayConfig {
    /// Checks required settings and ranges: the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.problems().into_iter().next().map_or(Ok(()), Err)
    }

    /// Every problem of the settings (`gateway --check-config` lists them).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        let mut check = |checked: Result<(), ConfigError>| found.extend(checked.err());
        check(self.database.validate());
        check(self.redis.validate());
        check(require_secret("queue_depth_token", &self.queue_depth_token));
        let slack = &self.slack;
        let half = |a: &SecretString, b: &SecretString| {
            a.expose_secret().trim().is_empty() != b.expose_secret().trim().is_empty()
        };
        if half(&slack.signing_secret, &slack.bot_token) {
            check(Err(ConfigError {
                field: "slack",
                problem: "needs both signing_secret and bot_token (or neither: Slack off)",
            }));
        }
        if slack.enabled() {
            check(require_http_url("slack.api_base_url", &slack.api_base_url));
            check(require_http_url(
                "files.slack_base_url",
                &self.files.slack_base_url,
            ));
        }
        if !slack.enabled()
            && !self.discord.enabled()
            && !self.telegram.enabled()
            && !self.web.enabled()
        {
            check(Err(ConfigError {
                field: "channels",
                problem: "no chat platform is on: set Slack's, Discord's or Telegram's token, or web.addr",
            }));
        }
        if self.web.enabled() {
            check(require_secret("web.token", &self.web.token));
        }
        if let Some(url) = &self.discord.api_base_url {
            check(require_http_url("discord.api_base_url", url));
        }
        if self.telegram.enabled() {
            check(require_http_url(
                "telegram.api_base_url",
                &self.telegram.api_base_url,
            ));
            if self.telegram.mode == TelegramMode::Webhook {
                check(require_secret(
                    "telegram.webhook_secret",
                    &self.telegram.webhook_secret,
                ));
            }
        }
        if self.limits.user_per_minute == 0 || self.limits.tenant_per_minute == 0 {
            check(Err(ConfigError {
                field: "limits",
                problem: "limits.user_per_minute and limits.tenant_per_minute must be at least 1",
            }));
        }
        if self.delivery.concurrency == 0 || self.delivery.max_attempts == 0 {
            check(Err(ConfigError {
                field: "delivery",
                problem: "concurrency and max_attempts must be at least 1",
            }));
        }
        if self.files.max_bytes == 0 || self.files.max_per_message == 0 {
            check(Err(ConfigError {
                field: "files",
                problem: "files.max_bytes and files.max_per_message must be at least 1",
            }));
        }
        for url in &self.files.discord_base_urls {
            check(require_http_url("files.discord_base_urls", url));
        }
        if let Some(url) = &self.files.public_url {
            check(require_http_url("files.public_url", url));
            check(require_secret("files.link_secret", &self.files.link_secret));
        }
        found
    }

    /// Which chat platforms are on, and what turns on the others: the
    /// gateway's first line.
    pub fn channels(&self) -> String {
        let slack = if self.slack.enabled() {
            "slack on (events, interactivity, review cards)".to_owned()
        } else {
            "slack off (set AE_SLACK__SIGNING_SECRET and AE_SLACK__BOT_TOKEN; without it no review cards in Slack)".to_owned()
        };
        let discord = if !self.discord.enabled() {
            "discord off (set AE_DISCORD__TOKEN)".to_owned()
        } else if self.discord.connect_gateway.unwrap_or(true) {
            "discord on".to_owned()
        } else {
            "discord on (REST only: no gateway connection)".to_owned()
        };
        let telegram = match (self.telegram.enabled(), self.telegram.mode) {
            (false, _) => "telegram off (set AE_TELEGRAM__TOKEN)",
            (true, TelegramMode::Webhook) => "telegram on (webhook)",
            (true, TelegramMode::Polling) => "telegram on (long polling)",
        };
        let web = match &self.web.addr {
            Some(addr) => format!("web on ({addr})"),
            None => "web off (set AE_WEB__ADDR and AE_WEB__TOKEN)".to_owned(),
        };
        format!("{slack}; {discord}; {telegram}; {web}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> GatewayConfig {
        let mut cfg = GatewayConfig::default();
        cfg.database.url = SecretString::from("postgres://u@localhost/db");
        cfg.slack.signing_secret = SecretString::from("signing");
        cfg.slack.bot_token = SecretString::from("xoxb-1");
        cfg.redis.url = SecretString::from("redis://localhost");
        cfg.queue_depth_token = SecretString::from("keda");
        cfg
    }

    #[test]
    fn any_one_platform_will_do_and_every_problem_is_listed() {
        let mut discord_only = complete();
        discord_only.slack = SlackConfig::default();
        discord_only.discord.token = SecretString::from("discord-token");
        assert!(discord_only.problems().is_empty());
        assert!(
            discord_only
                .channels()
                .starts_with("slack off (set AE_SLACK__SIGNING_SECRET")
        );
        assert!(discord_only.channels().contains("; discord on;"));

        let mut broken = GatewayConfig::default();
        broken.slack.bot_token = SecretString::from("xoxb-1");
        broken.limits.user_per_minute = 0;
        let fields: Vec<&str> = broken.problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "database.url",
                "queue_depth_token",
                "slack",
                "channels",
                "limits"
            ]
        );
    }

    #[test]
    fn the_page_alone_will_do_but_not_without_its_token() {
        let mut page_only = complete();
        page_only.slack = SlackConfig::default();
        page_only.web.addr = Some("127.0.0.1:8090".to_owned());
        let fields: Vec<&str> = page_only.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["web.token"]);
        page_only.web.token = SecretString::from("page-secret");
        assert!(page_only.problems().is_empty());
        assert!(page_only.channels().ends_with("; web on (127.0.0.1:8090)"));
        assert!(
            complete()
                .channels()
                .ends_with("web off (set AE_WEB__ADDR and AE_WEB__TOKEN)")
        );
    }

    #[test]
    fn the_queue_depth_token_is_required_and_operators_get_their_own_port() {
        let ok = complete().validate();
        assert!(ok.is_ok(), "{ok:?}");
        let mut open = complete();
        open.queue_depth_token = SecretString::from(" ");
        assert_eq!(open.validate().unwrap_err().field, "queue_depth_token");
        let defaults = GatewayConfig::default();
        assert_ne!(defaults.admin_addr.0, defaults.listen_addr.0);
        assert!(!defaults.trust_inbound_traceparent);
    }
}
