//! Postgres: the system of record (inbox, conversations, events, outbox, routes).
//!
//! Two handles: [`Store`] for the few lookups made before a tenant is known
//! (routing, the tenant list, dead letters), and [`TenantStore`] for
//! everything else. Every query of a tenant runs in a [`TenantTx`], a
//! transaction that first sets the tenant for row-level security, so even a
//! query that forgets its `tenant_id` filter sees only that tenant's rows
//! (migration 5). A use case that makes several queries in a row (a turn
//! step) runs them in one `TenantTx`; a `TenantStore` method runs in a
//! transaction of its own.

mod agent_runs;
mod cache;
mod dead_jobs;
mod events;
mod facts;
mod files;
mod inbox;
mod inbox_writer;
mod lease;
mod members;
mod outbox;
mod page;
mod proposals;
mod routes;
mod settings;
mod tenant;
mod turn;
mod usage;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgPoolOptions, Postgres};
use sqlx::{Connection, PgConnection, PgPool, Transaction};

use crate::config::DatabaseConfig;
use crate::ids::TenantId;

pub use agent_runs::{AgentRunModel, NewAgentRun, RunCompletion, RunDestination};
pub use dead_jobs::{DeadJobModel, NewDeadJob};
pub use events::{NewEvent, StoredEvent, StreamTail};
pub use facts::MAX_FACTS_PER_USER;
pub use inbox::{ConversationModel, InboxModel, NewMessageParams, RecordOutcome};
pub use inbox_writer::InboxWriter;
pub use lease::Lease;
pub use outbox::{DeliveryTurn, OutboxModel, ReplyParams};
pub use page::PageLine;
pub use proposals::{
    ExecutionRecord, NewProposal, ProposalChanges, ProposalModel, ProposalTx, TenantPolicy,
};
pub use routes::{MemberCache, RouteCache};
pub use settings::{MemberRow, TenantSetting};
pub use tenant::TenantSettings;
pub use turn::{CharacterMemory, TurnContext, TurnStart, TurnStartParams};
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
    /// An event appended as new has a dedupe key already in the log.
    #[error("an event appended to stream `{stream}` as new is already recorded")]
    AlreadyRecorded {
        /// The stream.
        stream: String,
    },
    /// The conversation's lease was taken over: this holder may not write.
    #[error("the conversation's lease was taken over by another worker")]
    LeaseLost,
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A background writer of the store is gone (the process is stopping).
    #[error("the {0} stopped")]
    Stopped(&'static str),
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<StoreError> for crate::job::JobFailure {
    fn from(e: StoreError) -> Self {
        match e {
            // A row that is not there will not appear on a retry.
            StoreError::NotFound(_) => Self::permanent(e, "Missing row"),
            // The same append would be refused again.
            StoreError::AlreadyRecorded { .. } => Self::permanent(e, "Event recorded twice"),
            _ => Self::retryable(e, "Database operation failed"),
        }
    }
}

/// SQLSTATEs the store's step functions raise (migrations 28 and 30).
const LEASE_LOST: &str = "AE001";
const ANSWERED_ALREADY: &str = "AE002";
const ANOTHER_TENANTS_MESSAGE: &str = "AE003";
const NO_CONVERSATION: &str = "AE004";

/// Whether a step function raised `e` as SQLSTATE `code`.
fn raised(e: &sqlx::Error, code: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// A step function's error as the store's: a lease taken over, a message
/// recorded for another tenant, a conversation neither found nor created.
fn step_error(e: sqlx::Error) -> StoreError {
    if raised(&e, LEASE_LOST) {
        StoreError::LeaseLost
    } else if raised(&e, ANOTHER_TENANTS_MESSAGE) {
        StoreError::NotFound("inbox message")
    } else if raised(&e, NO_CONVERSATION) {
        StoreError::NotFound("conversation")
    } else {
        StoreError::Database(e)
    }
}

/// How long a pooled connection may sit idle and still be used without a
/// ping (a round trip) first.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

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
            // sqlx pings a connection when it is given back; one given back
            // within `PING_IDLE_AFTER` is used as is, an older one is pinged
            // first (and replaced if dead, as after a Postgres restart).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(
                    async move { Ok(meta.idle_for < PING_IDLE_AFTER || conn.ping().await.is_ok()) },
                )
            })
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
        sqlx::query_scalar!("SELECT 1 AS ok")
            .fetch_one(&self.pool)
            .await?;
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
    /// one round trip. `SET LOCAL` rather than `set_config`: a utility
    /// statement is neither planned nor answered with a row.
    ///
    /// Not a query macro: two statements in one round trip need the simple
    /// protocol, which takes no parameters; the id is a UUID, so formatting
    /// it in cannot inject anything.
    pub async fn begin(&self) -> Result<TenantTx, StoreError> {
        let begin = format!("BEGIN; SET LOCAL automate_e.tenant_id = '{}'", self.tenant);
        Ok(TenantTx {
            tx: self.pool.begin_with(begin).await?,
            tenant: self.tenant,
            fenced: None,
        })
    }

    /// Begins a transaction that may write for the holder of `lease`: the
    /// lease's fence is checked and share-locked, so no takeover can happen
    /// before the transaction ends ([`StoreError::LeaseLost`] otherwise).
    pub async fn begin_fenced(&self, lease: &Lease) -> Result<TenantTx, StoreError> {
        let mut tx = self.begin().await?;
        lease::check_fence(&mut tx, lease).await?;
        tx.fenced = Some(*lease);
        Ok(tx)
    }
}

/// A transaction of one tenant (see the module docs). Dropped without
/// [`TenantTx::commit`], nothing it wrote stays.
#[derive(Debug)]
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    /// The lease whose fence this transaction checked and holds.
    fenced: Option<Lease>,
}

impl TenantTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Offers methods of [`TenantTx`] on [`TenantStore`], each in a transaction
/// of its own.
macro_rules! in_own_transaction {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty; )*) => {
        impl TenantStore {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$out, StoreError> {
                    let mut tx = self.begin().await?;
                    let out = tx.$name($($arg),*).await?;
                    tx.commit().await?;
                    Ok(out)
                }
            )*
        }
    };
}
use in_own_transaction;
