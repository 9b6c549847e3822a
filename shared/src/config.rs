//! Configuration shared by the binaries: compiled defaults, then an optional
//! TOML file, then `AE_`-prefixed environment variables (`__` nests), then
//! validation. Loaded once in `main` and passed down.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Prefix of every environment variable the binaries read.
pub const ENV_PREFIX: &str = "AE_";

/// Loads a binary's config from `defaults`, the optional file and the environment.
pub fn load<T>(defaults: &T, file: Option<&Path>) -> Result<T, Box<figment::Error>>
where
    T: Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract()
        .map_err(Box::new)
}

/// Postgres connection settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Connection URL of the service role (not the tables' owner). Required.
    #[serde(skip_serializing)]
    pub url: SecretString,
    /// Largest number of pooled connections. Default 10.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, in seconds. Default 5.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::default(),
            max_connections: 10,
            acquire_timeout_secs: 5,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &"[REDACTED]")
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Redis (job queue) settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Connection URL. Default `redis://127.0.0.1:6379`.
    #[serde(skip_serializing)]
    pub url: SecretString,
    /// Prefix of every queue key, so deployments (and tests) can share a
    /// Redis. Default `automate-e`.
    pub namespace: String,
    /// How often an idle consumer looks for jobs nobody announced (retries
    /// coming due, jobs of a producer that could not announce them): a job
    /// pushed by the services wakes its consumer at once. Default 100 ms.
    pub poll_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            namespace: "automate-e".to_owned(),
            poll_interval_ms: 100,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"[REDACTED]")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `tracing` filter directives. Default `info`.
    pub filter: String,
    /// Output format. Default `pretty`.
    pub format: LogFormat,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g.
    /// `http://otel-collector:4318`); spans go to `<url>/v1/traces` as
    /// JSON. Unset: spans are not exported.
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Pretty,
            otlp_endpoint: None,
        }
    }
}

/// A required setting is missing or out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{field}` {problem}")]
pub struct ConfigError {
    /// The setting, as dotted path (`slack.signing_secret`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Fails when a required secret is empty.
pub fn require_secret(field: &'static str, value: &SecretString) -> Result<(), ConfigError> {
    if value.expose_secret().trim().is_empty() {
        return Err(ConfigError {
            field,
            problem: "must be set",
        });
    }
    Ok(())
}

/// Fails when a base URL is not an absolute http(s) URL.
pub fn require_http_url(field: &'static str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(ConfigError {
            field,
            problem: "must be an absolute http(s) URL",
        }),
    }
}

impl DatabaseConfig {
    /// Checks the required fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_secret("database.url", &self.url)
    }
}

impl RedisConfig {
    /// Checks the required fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_secret("redis.url", &self.url)?;
        if self.namespace.is_empty() || self.namespace.contains(char::is_whitespace) {
            return Err(ConfigError {
                field: "redis.namespace",
                problem: "must be a non-empty word",
            });
        }
        Ok(())
    }
}

/// Exponential backoff with jitter between attempts of a failed job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Pause after the first failure, in milliseconds (doubles each
    /// attempt, half of it random). Default 1 000.
    pub base_ms: u64,
    /// Longest pause, Retry-After included, in milliseconds. Default 60 000.
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 60_000,
        }
    }
}
