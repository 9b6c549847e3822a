//! Postgres: the system of record (inbox, conversations, events, outbox, routes).
//!
//! Two handles: [`Store`] for the few lookups made before a tenant is known
//! (routing, the tenant list, dead letters), and [`TenantStore`] for
//! everything else. Every query of a `TenantStore` runs in a transaction that
//! first sets the tenant for row-level security, so even a query that forgets
//! its `tenant_id` filter sees only that tenant's rows (migration 5).

mod agent_runs;
mod dead_jobs;
mod events;
mod facts;
mod inbox;
mod lease;
mod outbox;
mod proposals;
mod routes;
mod tenant;
mod usage;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;
use sqlx::postgres::Postgres;
use sqlx::{PgPool, Transaction};

use crate::config::DatabaseConfig;
use crate::ids::TenantId;

pub use agent_runs::{AgentRunModel, NewAgentRun, RunCompletion, RunDestination};
pub use dead_jobs::{DeadJobModel, NewDeadJob};
pub use events::{NewEvent, StoredEvent};
pub use facts::MAX_FACTS_PER_USER;
pub use inbox::{ConversationModel, InboxModel, NewMessageParams, RecordOutcome};
pub use lease::Lease;
pub use outbox::{OutboxModel, ReplyParams};
pub use proposals::{NewProposal, ProposalChanges, ProposalModel, ProposalTx, TenantPolicy};
pub use tenant::TenantSettings;
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

    /// The store of one tenant: its queries see only that tenant's rows.
    pub fn tenant(&self, tenant: TenantId) -> TenantStore {
        TenantStore {
            pool: self.pool.clone(),
            tenant,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The store of one tenant (see the module docs).
#[derive(Debug, Clone)]
pub struct TenantStore {
    pool: PgPool,
    tenant: TenantId,
}

impl TenantStore {
    /// The tenant this store is bound to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Begins a transaction with the tenant set for row-level security, in
    /// one round trip. The id is a UUID, so formatting it into the statement
    /// cannot inject anything.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let begin = format!(
            "BEGIN; SELECT set_config('automate_e.tenant_id', '{}', true)",
            self.tenant
        );
        Ok(self.pool.begin_with(begin).await?)
    }
}
