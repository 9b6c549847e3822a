//! Tenant routes: which platform workspace/channel belongs to which tenant's agent.

use super::{Store, StoreError};
use crate::engine::route::Route;
use crate::ids::{Platform, TenantId};

impl Store {
    /// The routes of one platform workspace (Slack team, Discord guild, …)
    /// that could cover `channel`.
    pub async fn routes(
        &self,
        platform: Platform,
        workspace: &str,
        channel: &str,
    ) -> Result<Vec<Route>, StoreError> {
        let rows = sqlx::query_as::<_, (String, TenantId, String)>(
            "SELECT channel, tenant_id, character FROM tenant_routes \
             WHERE platform = $1 AND workspace = $2 AND channel IN ($3, '*')",
        )
        .bind(platform.as_str())
        .bind(workspace)
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(channel, tenant_id, character)| Route {
                channel,
                tenant_id,
                character,
            })
            .collect())
    }
}
