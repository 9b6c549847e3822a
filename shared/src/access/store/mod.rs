//! Postgres: the system of record (inbox, conversations, events, outbox, routes).

mod dead_jobs;
mod events;
mod inbox;
mod lease;
mod outbox;
mod proposals;
mod routes;
mod usage;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

pub use dead_jobs::{DeadJobModel, NewDeadJob};
pub use events::{NewEvent, StoredEvent};
pub use inbox::{ConversationModel, InboxModel, NewMessageParams, RecordOutcome};
pub use lease::Lease;
pub use outbox::{OutboxModel, ReplyParams};
pub use proposals::{NewProposal, ProposalChanges, ProposalModel, ProposalTx, TenantPolicy};
pub use usage::TokenBudget;

/// Errors of the Postgres store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer appended to the stream first.
    #[error("stream `{stream}` is past version {expected}")]
    VersionConflict {
        /// The stream.
        stream: String,
        /// The version the writer expected.
        expected: i64,
    },
    /// The conversation's lease was taken over: this holder may not write.
    #[error("the conversation's lease was taken over by another worker")]
    LeaseLost,
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<StoreError> for crate::job::JobFailure {
    fn from(e: StoreError) -> Self {
        match e {
            // A row that is not there will not appear on a retry.
            StoreError::NotFound(_) => Self::permanent(e, "Missing row"),
            _ => Self::retryable(e, "Database operation failed"),
        }
    }
}

/// The Postgres store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects a pool as the service role.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(cfg.acquire_timeout_secs))
            .connect(cfg.url.expose_secret())
            .await?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
