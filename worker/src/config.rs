//! The worker's configuration: Postgres, Redis, the LLM and the Accounting
//! API; never chat tokens.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use shared::config::{
    ConfigError, DatabaseConfig, LogConfig, RedisConfig, RetryConfig, require_http_url,
    require_secret,
};

/// Worker settings; see `README.md` for the environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Address of the health and metrics server. Default `0.0.0.0:9090`.
    pub listen_addr: String,
    /// Postgres.
    pub database: DatabaseConfig,
    /// Redis.
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

/// The Accounting API the tools call.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountingConfig {
    /// Base URL. Required.
    pub base_url: String,
    /// Bearer token. Required.
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// Timeout of one tool call, in seconds. Default 15.
    pub timeout_secs: u64,
    /// Largest response body read, in bytes. Default 1 MiB.
    pub max_response_bytes: usize,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            token: SecretString::default(),
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
        self.database.validate()?;
        self.redis.validate()?;
        require_http_url("llm.base_url", &self.llm.base_url)?;
        require_secret("llm.api_key", &self.llm.api_key)?;
        require_http_url("accounting.base_url", &self.accounting.base_url)?;
        require_secret("accounting.token", &self.accounting.token)?;
        if self.lease_ttl_ms < 1_000 {
            return Err(ConfigError {
                field: "lease_ttl_ms",
                problem: "a conversation lease must live at least 1000 ms",
            });
        }
        if self.concurrency == 0 || self.max_attempts == 0 || self.llm.max_tool_rounds == 0 {
            return Err(ConfigError {
                field: "concurrency",
                problem: "concurrency, max_attempts and llm.max_tool_rounds must be at least 1",
            });
        }
        Ok(())
    }
}
