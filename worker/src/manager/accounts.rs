//! Which Accounting API a tenant's tools and executions call, with which
//! credential: the tenant row names them, the worker's secrets hold them.

use shared::access::accounting::AccountingTarget;
use shared::access::store::{TenantSettings, TenantStore};
use shared::job::JobFailure;

use crate::config::AccountingConfig;

/// Resolves tenants' Accounting APIs.
#[derive(Debug, Clone)]
pub struct Accounts {
    config: AccountingConfig,
}

impl Accounts {
    /// Resolves against the worker's Accounting settings.
    pub fn new(config: AccountingConfig) -> Self {
        Self { config }
    }

    /// The tenant's settings and its Accounting API.
    pub async fn of(
        &self,
        store: &TenantStore,
    ) -> Result<(TenantSettings, AccountingTarget), JobFailure> {
        let settings = store.settings().await?;
        let target = self.target(&settings)?;
        Ok((settings, target))
    }

    /// The Accounting API of a tenant with these settings.
    pub fn target(&self, settings: &TenantSettings) -> Result<AccountingTarget, JobFailure> {
        self.config
            .target_for(settings)
            .map_err(|e| JobFailure::Permanent(anyhow::anyhow!(e)))
    }
}
