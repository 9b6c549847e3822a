//! Shared building blocks of the Automate-E gateway and worker.
//!
//! - [`engine`]: pure decisions and transformations (no I/O).
//! - [`access`]: one client per external system (Postgres, Redis, Slack, LLM, Accounting API).
//! - [`character`], [`event`], [`job`], [`ids`], [`proposal`], [`request`],
//!   [`trigger`]: the domain's types.
//! - [`config`], [`telemetry`], [`batch`], [`pacer`], [`runner`]: utilities.

pub mod access;
pub mod batch;
pub mod character;
pub mod config;
pub mod engine;
pub mod event;
pub mod ids;
pub mod job;
pub mod openapi;
pub mod pacer;
pub mod proposal;
pub mod request;
pub mod runner;
pub mod telemetry;
pub mod trigger;

/// The database migrations, embedded. Tests and the `migrate` command use this
/// one migrator so they always agree on the schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
