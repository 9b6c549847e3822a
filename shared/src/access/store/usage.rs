//! LLM token usage per tenant and UTC day, against the tenant's daily budget.

use chrono::NaiveDate;

use super::{Store, StoreError};
use crate::ids::TenantId;

/// A tenant's LLM budget for one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Tokens allowed per day; `None` = unlimited.
    pub per_day: Option<i64>,
    /// Tokens used that day.
    pub used: i64,
}

impl TokenBudget {
    /// Whether the day's budget is used up.
    pub fn is_spent(&self) -> bool {
        self.per_day.is_some_and(|limit| self.used >= limit)
    }
}

impl Store {
    /// The tenant's budget and usage on `day`.
    pub async fn token_budget(
        &self,
        tenant: TenantId,
        day: NaiveDate,
    ) -> Result<TokenBudget, StoreError> {
        let (per_day, used) = sqlx::query_as::<_, (Option<i64>, i64)>(
            "SELECT t.llm_tokens_per_day, coalesce(u.tokens, 0) FROM tenants t \
             LEFT JOIN tenant_llm_usage u ON u.tenant_id = t.id AND u.day = $2 WHERE t.id = $1",
        )
        .bind(tenant)
        .bind(day)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        Ok(TokenBudget { per_day, used })
    }

    /// Adds tokens to the tenant's usage on `day`.
    pub async fn add_token_usage(
        &self,
        tenant: TenantId,
        day: NaiveDate,
        tokens: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenant_llm_usage (tenant_id, day, tokens) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, day) DO UPDATE SET tokens = tenant_llm_usage.tokens + EXCLUDED.tokens",
        )
        .bind(tenant)
        .bind(day)
        .bind(tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
