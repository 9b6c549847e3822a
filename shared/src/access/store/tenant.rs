//! A tenant's own settings: brief, Accounting API, limits.

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};

/// What a tenant configured for its agents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TenantSettings {
    /// Short stable name.
    pub slug: String,
    /// The company's name.
    pub name: String,
    /// What every agent should know about the company.
    pub brief: String,
    /// The tenant's Accounting API; `None` uses the worker's default.
    pub accounting_base_url: Option<String>,
    /// The name of the tenant's Accounting API credential in the worker's
    /// secrets; `None` uses the default credential.
    pub accounting_credential: Option<String>,
    /// The tenant's company in the Accounting API (Fiken's `companySlug`);
    /// `None` until it is connected.
    pub accounting_company: Option<String>,
    /// Inbound messages per user and minute; `None` uses the default.
    pub user_per_minute: Option<i32>,
    /// Inbound messages per tenant and minute; `None` uses the default.
    pub tenant_per_minute: Option<i32>,
}

impl TenantSettings {
    /// The tenant's own inbound limits.
    pub fn limits(&self) -> crate::engine::route::TenantLimits {
        crate::engine::route::TenantLimits::from_stored(
            self.user_per_minute,
            self.tenant_per_minute,
        )
    }
}

impl TenantTx {
    /// The tenant's settings.
    pub async fn settings(&mut self) -> Result<TenantSettings, StoreError> {
        sqlx::query_as!(
            TenantSettings,
            "SELECT slug, name, brief, accounting_base_url, accounting_credential, \
             accounting_company, user_per_minute, tenant_per_minute FROM tenants WHERE id = $1",
            self.tenant as _
        )
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
    }
}

in_own_transaction! {
    /// The tenant's settings.
    fn settings(&self) -> TenantSettings;
}
