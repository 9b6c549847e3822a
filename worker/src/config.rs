//! The worker's configuration: Postgres, Redis, the LLM and the Accounting
//! API; never chat tokens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use shared::access::accounting::AccountingTarget;
use shared::access::store::TenantSettings;
use shared::config::{
    ConfigError, DatabaseConfig, LogConfig, RedisConfig, RetryConfig, require_http_url,
    require_secret,
};
use shared::engine::cost::PriceTable;

/// Worker settings; see `README.md` for the environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Address of the health and metrics server. Default `0.0.0.0:9090`.
    pub listen_addr: String,
    /// Postgres.
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    /// Logging.
    pub log: LogConfig,
    /// The model endpoint.
    pub llm: LlmConfig,
    /// The Accounting API.
    pub accounting: AccountingConfig,
    /// Directory of character files. Default `characters`.
    pub characters_dir: PathBuf,
    /// Turns run at once in this process. Default 16.
    pub concurrency: usize,
    /// Attempts before a job is dead-lettered. Default 5.
    pub max_attempts: usize,
    /// The relay re-queues work Redis lost.
    pub relay: RelayConfig,
    /// Spacing of job retries.
    pub retry: RetryConfig,
    /// Time-to-live of a conversation lease, in milliseconds: a killed
    /// worker's conversation is free again after it. Default 30 000.
    pub lease_ttl_ms: u64,
    /// How long a job waits for a conversation another worker is answering
    /// before it is retried, in milliseconds. Default 60 000.
    pub lease_wait_ms: u64,
    /// On SIGTERM, how long running jobs may take to finish before they are
    /// handed back to the queue, in milliseconds. Keep it below the pod's
    /// terminationGracePeriodSeconds. Default 25 000.
    pub shutdown_grace_ms: u64,
    /// Scheduled and event-triggered agents.
    pub scheduler: SchedulerConfig,
    /// Prices of model tokens and Accounting API calls, for usage reports.
    pub pricing: PriceTable,
}

/// The relay: re-queues inbox messages not yet answered and outbox items not
/// yet delivered, so losing Redis (a restart without persistence) loses nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Pause between sweeps, in milliseconds. Default 10 000.
    pub interval_ms: u64,
    /// Age before unfinished work counts as possibly lost, in milliseconds.
    /// Default 60 000 (a re-queued job that still exists is a no-op anyway).
    pub grace_ms: u64,
    /// Rows re-queued per sweep and kind. Default 500.
    pub batch: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            grace_ms: 60_000,
            batch: 500,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen_addr: "0.0.0.0:9090".to_owned(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            llm: LlmConfig::default(),
            accounting: AccountingConfig::default(),
            characters_dir: PathBuf::from("characters"),
            concurrency: 16,
            max_attempts: 5,
            relay: RelayConfig::default(),
            retry: RetryConfig::default(),
            lease_ttl_ms: 30_000,
            lease_wait_ms: 60_000,
            shutdown_grace_ms: 25_000,
            scheduler: SchedulerConfig::default(),
            pricing: PriceTable::default(),
        }
    }
}

/// An OpenAI-compatible Chat Completions endpoint.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmConfig {
    /// Base URL including `/v1`. Default `https://api.openai.com/v1`.
    pub base_url: String,
    /// API key. Required.
    #[serde(skip_serializing)]
    pub api_key: SecretString,
    /// Model used when a character names none. Default `gpt-4o-mini`.
    pub model: String,
    /// Timeout of one model call, in seconds. Default 60.
    pub timeout_secs: u64,
    /// Model rounds with tool calls per turn when a character sets none. Default 5.
    pub max_tool_rounds: u32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: SecretString::default(),
            model: "gpt-4o-mini".to_owned(),
            timeout_secs: 60,
            max_tool_rounds: 5,
        }
    }
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Fiken's API v2.
pub const FIKEN_API: &str = "https://api.fiken.no/api/v2";

/// The Accounting API the tools call.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountingConfig {
    /// Base URL. Default Fiken's, `https://api.fiken.no/api/v2`.
    pub base_url: String,
    /// Bearer token. Required.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// Tenants' own Accounting API credentials, by the reference name a
    /// tenant row holds (`tenants.accounting_credential`); the secrets live
    /// here, never in the database. E.g. `AE_ACCOUNTING__CREDENTIALS__ACME=…`.
    #[serde(skip_serializing)]
    pub credentials: BTreeMap<String, SecretString>,
    /// Timeout of one tool call, in seconds. Default 15.
    pub timeout_secs: u64,
    /// Largest response body read, in bytes. Default 1 MiB.
    pub max_response_bytes: usize,
}

impl AccountingConfig {
    /// The Accounting API of a tenant: its own base URL and credential
    /// where it has them, the defaults otherwise. An unknown credential
    /// reference is an error, never a silent fallback to the default.
    pub fn target_for(&self, tenant: &TenantSettings) -> Result<AccountingTarget, String> {
        let base_url = tenant
            .accounting_base_url
            .as_deref()
            .unwrap_or(&self.base_url);
        let token = match &tenant.accounting_credential {
            // The default token never goes to a tenant's own API.
            None if tenant.accounting_base_url.is_some() => {
                return Err(format!(
                    "tenant `{}` has its own Accounting API but no credential reference",
                    tenant.slug
                ));
            }
            None => self.token.clone(),
            Some(name) => self.credentials.get(name).cloned().ok_or_else(|| {
                format!(
                    "the Accounting API credential `{name}` of tenant `{}` is not configured",
                    tenant.slug
                )
            })?,
        };
        Ok(AccountingTarget::new(base_url, token))
    }
}

/// When scheduled and event-triggered agents run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Pause between looks at schedules and new events, in milliseconds. Default 1000.
    pub tick_ms: u64,
    /// A schedule period missed by more than this (all workers down) is
    /// skipped, in milliseconds. Default 3 600 000 (one hour).
    pub max_lateness_ms: u64,
    /// Events newer than this are read again on the next tick (a
    /// transaction still open may commit an earlier event), in milliseconds.
    /// Default 30 000.
    pub event_settle_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick_ms: 1_000,
            max_lateness_ms: 3_600_000,
            event_settle_ms: 30_000,
        }
    }
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            base_url: FIKEN_API.to_owned(),
            token: SecretString::default(),
            credentials: BTreeMap::new(),
            timeout_secs: 15,
            max_response_bytes: 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for AccountingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountingConfig")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    /// Checks required settings and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.problems().into_iter().next().map_or(Ok(()), Err)
    }

    /// Every problem of the settings (`worker --check-config` lists them).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        let mut check = |checked: Result<(), ConfigError>| found.extend(checked.err());
        check(self.database.validate());
        check(self.redis.validate());
        check(require_http_url("llm.base_url", &self.llm.base_url));
        check(require_secret("llm.api_key", &self.llm.api_key));
        check(require_http_url(
            "accounting.base_url",
            &self.accounting.base_url,
        ));
        check(require_secret("accounting.token", &self.accounting.token));
        if self.lease_ttl_ms < 1_000 {
            check(Err(ConfigError {
                field: "lease_ttl_ms",
                problem: "a conversation lease must live at least 1000 ms",
            }));
        }
        if self.concurrency == 0 || self.max_attempts == 0 || self.llm.max_tool_rounds == 0 {
            check(Err(ConfigError {
                field: "concurrency",
                problem: "concurrency, max_attempts and llm.max_tool_rounds must be at least 1",
            }));
        }
        found
    }
}
