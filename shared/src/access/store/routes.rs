//! Lookups made before a tenant is known: which tenant and agent a platform
//! chat, thread or review channel belongs to, and the list of tenants. They
//! go through SECURITY DEFINER functions that return ids and routes only.

use std::sync::Arc;
use std::time::Duration;

use super::cache::TtlCache;
use super::{Store, StoreError};
use crate::engine::member::Members;
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

    /// The Discord channels to catch up on after a reconnect (explicitly
    /// routed channels and their recent conversation threads), each with its
    /// guild, and the newest Discord message recorded.
    pub async fn discord_catch_up(
        &self,
    ) -> Result<(Vec<(String, String)>, Option<String>), StoreError> {
        let channels = sqlx::query!(
            r#"SELECT channel AS "channel!", guild AS "guild!" FROM automate_e_discord_channels()"#
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.channel, r.guild))
        .collect();
        let newest = sqlx::query_scalar!(r#"SELECT automate_e_discord_newest_message() AS "id""#)
            .fetch_one(&self.pool)
            .await?;
        Ok((channels, newest))
    }

    /// Every tenant's id.
    pub async fn tenant_ids(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids = sqlx::query_scalar!(r#"SELECT automate_e_tenant_ids() AS "id!: TenantId""#)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }
}

/// [`Store::routes`] read through a short-lived cache: the gateway looks
/// routes up for every inbound message, and they change rarely. A changed
/// route (or tenant limit) takes effect within the time-to-live.
#[derive(Debug, Clone)]
pub struct RouteCache {
    store: Store,
    cache: TtlCache<(Platform, String, String), [Route]>,
}

impl RouteCache {
    /// A cache over `store` keeping each answer for `ttl`.
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            cache: TtlCache::new(ttl),
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
        let load = async {
            let routes = self.store.routes(platform, workspace, channel).await?;
            Ok(Arc::from(routes))
        };
        self.cache.get_or_load(key, load).await
    }
}

/// Each tenant's members on each platform, read through a short-lived cache
/// like the routes: a member added or removed counts within the time-to-live.
#[derive(Debug, Clone)]
pub struct MemberCache {
    store: Store,
    cache: TtlCache<(TenantId, Platform), Members>,
}

impl MemberCache {
    /// A cache over `store` keeping each answer for `ttl`.
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            cache: TtlCache::new(ttl),
        }
    }

    /// Like [`TenantStore::members`](super::TenantStore::members), at most `ttl` old.
    pub async fn members(
        &self,
        tenant: TenantId,
        platform: Platform,
    ) -> Result<Arc<Members>, StoreError> {
        let load = async { Ok(Arc::new(self.store.tenant(tenant).members(platform).await?)) };
        self.cache.get_or_load((tenant, platform), load).await
    }
}
