//! Lookups made before a tenant is known: which tenant and agent a platform
//! chat, thread or review channel belongs to, and the list of tenants. They
//! go through SECURITY DEFINER functions that return ids and routes only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError};
use crate::engine::route::{Route, TenantLimits};
use crate::ids::{Platform, ProposalId, TenantId};

impl Store {
    /// The routes of one platform workspace (Slack team, Discord guild, …)
    /// that could cover `channel`.
    pub async fn routes(
        &self,
        platform: Platform,
        workspace: &str,
        channel: &str,
    ) -> Result<Vec<Route>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT channel AS "channel!", tenant_id AS "tenant_id!: TenantId",
               character AS "character!", user_per_minute, tenant_per_minute
               FROM automate_e_routes($1, $2, $3)"#,
            platform as _,
            workspace,
            channel
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Route {
                channel: r.channel,
                tenant_id: r.tenant_id,
                character: r.character,
                limits: TenantLimits::from_stored(r.user_per_minute, r.tenant_per_minute),
            })
            .collect())
    }

    /// The tenant whose conversation lives in thread `thread` of `platform`.
    pub async fn thread_tenant(
        &self,
        platform: Platform,
        thread: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        let tenant = sqlx::query_scalar!(
            r#"SELECT automate_e_thread_tenant($1, $2) AS "tenant: TenantId""#,
            platform as _,
            thread
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(tenant)
    }

    /// The tenant whose review channel `channel` is.
    pub async fn review_tenant(&self, channel: &str) -> Result<Option<TenantId>, StoreError> {
        let tenant = sqlx::query_scalar!(
            r#"SELECT automate_e_review_tenant($1) AS "tenant: TenantId""#,
            channel
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(tenant)
    }

    /// The tenant of a proposal.
    pub async fn proposal_tenant(&self, id: ProposalId) -> Result<Option<TenantId>, StoreError> {
        let tenant = sqlx::query_scalar!(
            r#"SELECT automate_e_proposal_tenant($1) AS "tenant: TenantId""#,
            id as _
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(tenant)
    }

    /// Every tenant's id.
    pub async fn tenant_ids(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids = sqlx::query_scalar!(r#"SELECT automate_e_tenant_ids() AS "id!: TenantId""#)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }
}

/// Most (platform, workspace, channel) keys a [`RouteCache`] keeps.
const ROUTE_CACHE_KEYS: usize = 10_000;

type RouteKey = (Platform, String, String);

/// Each key's routes, with when they were read.
type RouteEntries = HashMap<RouteKey, (Instant, Arc<[Route]>)>;

/// [`Store::routes`] read through a short-lived cache: the gateway looks
/// routes up for every inbound message, and they change rarely. A changed
/// route (or tenant limit) takes effect within the time-to-live.
#[derive(Debug, Clone)]
pub struct RouteCache {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<RouteEntries>>,
}

impl RouteCache {
    /// A cache over `store` keeping each answer for `ttl`.
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Arc::default(),
        }
    }

    /// Like [`Store::routes`], at most `ttl` old.
    pub async fn routes(
        &self,
        platform: Platform,
        workspace: &str,
        channel: &str,
    ) -> Result<Arc<[Route]>, StoreError> {
        let key = (platform, workspace.to_owned(), channel.to_owned());
        if let Some((read_at, routes)) = self.lock().get(&key)
            && read_at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(routes));
        }
        let routes: Arc<[Route]> = self
            .store
            .routes(platform, workspace, channel)
            .await?
            .into();
        let mut entries = self.lock();
        if entries.len() >= ROUTE_CACHE_KEYS {
            entries.retain(|_, (read_at, _)| read_at.elapsed() < self.ttl);
            if entries.len() >= ROUTE_CACHE_KEYS {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), Arc::clone(&routes)));
        Ok(routes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouteEntries> {
        // A panic while holding the map leaves it usable: it is only a cache.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
