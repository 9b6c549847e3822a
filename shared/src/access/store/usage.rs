//! LLM token usage per tenant and UTC day, against the tenant's daily budget.

use chrono::{DateTime, NaiveDate, Utc};

use super::tenant::SETTINGS_COLUMNS;
use super::{StoreError, TenantSettings, TenantStore, TenantTx, in_own_transaction};
use crate::engine::cost::UsageLine;

/// A tenant's LLM budget for one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenBudget {
    /// Tokens allowed per day; `None` = unlimited.
    #[sqlx(rename = "llm_tokens_per_day")]
    pub per_day: Option<i64>,
    /// Tokens used that day.
    #[sqlx(rename = "tokens_used")]
    pub used: i64,
}

/// The columns of [`TokenBudget`] from `tenants t`, for the day `$2`.
const BUDGET_COLUMNS: &str = "t.llm_tokens_per_day, \
     (SELECT coalesce(sum(u.tokens), 0)::bigint FROM tenant_llm_usage u \
      WHERE u.tenant_id = t.id AND u.day = $2) AS tokens_used";

/// A tenant's settings with its budget.
#[derive(sqlx::FromRow)]
struct SettingsWithBudget {
    #[sqlx(flatten)]
    settings: TenantSettings,
    #[sqlx(flatten)]
    budget: TokenBudget,
}

impl TokenBudget {
    /// Whether the day's budget is used up.
    pub fn is_spent(&self) -> bool {
        self.per_day.is_some_and(|limit| self.used >= limit)
    }
}

impl TenantStore {
    /// The tenant's recorded LLM usage per model (every LLM call and agent
    /// review event) and its Accounting API calls that got a response,
    /// between `from` (inclusive) and `to` (exclusive).
    pub async fn recorded_usage(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(Vec<UsageLine>, u64), StoreError> {
        let mut tx = self.begin().await?;
        // The types are written into the statements, not bound: the index
        // `events_usage` holds only events of these types (migration 12),
        // and only a plan that sees them can use it.
        let rows = sqlx::query_as::<_, (String, i64, i64, i64)>(&format!(
            "SELECT coalesce(payload->>'model', 'unknown'), \
             coalesce(sum((payload->>'input_tokens')::bigint), 0)::bigint, \
             coalesce(sum((payload->>'output_tokens')::bigint), 0)::bigint, count(*) \
             FROM events WHERE tenant_id = $1 \
             AND type IN ('{LLM_CALLED}', '{AGENT_REVIEWED}', '{RUN_COMPLETED}') \
             AND coalesce(payload->>'model', '') <> '' AND occurred_at >= $2 AND occurred_at < $3 \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(self.tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        let tool_calls = sqlx::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND type = '{TOOL_CALLED}' \
             AND payload->>'outcome' IN ('ok', 'http_error') \
             AND jsonb_typeof(payload->'request') = 'object' \
             AND occurred_at >= $2 AND occurred_at < $3"
        ))
        .bind(self.tenant)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let lines = rows
            .into_iter()
            .map(|(model, input, output, calls)| UsageLine {
                model,
                input_tokens: count(input),
                output_tokens: count(output),
                calls: count(calls),
            })
            .collect();
        Ok((lines, count(tool_calls)))
    }
}

const LLM_CALLED: &str = crate::event::ConversationEvent::LLM_CALLED;
const TOOL_CALLED: &str = crate::event::ConversationEvent::TOOL_CALLED;
const AGENT_REVIEWED: &str = crate::event::ProposalEvent::AGENT_REVIEWED;
/// An agent run's model usage, summed over its calls.
const RUN_COMPLETED: &str = crate::event::RunEvent::RUN_COMPLETED;

impl TenantTx {
    /// The tenant's budget and usage on `day`.
    pub async fn token_budget(&mut self, day: NaiveDate) -> Result<TokenBudget, StoreError> {
        sqlx::query_as::<_, TokenBudget>(&format!(
            "SELECT {BUDGET_COLUMNS} FROM tenants t WHERE t.id = $1"
        ))
        .bind(self.tenant)
        .bind(day)
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
    }

    /// The tenant's settings and its budget and usage on `day`, in one
    /// statement: like [`Self::settings`] then [`Self::token_budget`].
    pub async fn settings_with_budget(
        &mut self,
        day: NaiveDate,
    ) -> Result<(TenantSettings, TokenBudget), StoreError> {
        let row = sqlx::query_as::<_, SettingsWithBudget>(&format!(
            "SELECT {SETTINGS_COLUMNS}, {BUDGET_COLUMNS} FROM tenants t WHERE t.id = $1"
        ))
        .bind(self.tenant)
        .bind(day)
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        Ok((row.settings, row.budget))
    }

    /// Adds tokens to the tenant's usage on `day`; returns the budget with
    /// them.
    pub async fn add_token_usage(
        &mut self,
        day: NaiveDate,
        tokens: i64,
    ) -> Result<TokenBudget, StoreError> {
        self.add_tokens(day, tokens).await?;
        self.token_budget(day).await
    }

    /// Adds tokens to the tenant's usage on `day`, to one of its shards (so
    /// concurrent turns do not queue on one row lock). The shard row stays
    /// locked until the commit: best the last statement of a transaction.
    pub async fn add_tokens(&mut self, day: NaiveDate, tokens: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenant_llm_usage (tenant_id, day, shard, tokens) \
             VALUES ($1, $2, floor(random() * $4)::smallint, $3) \
             ON CONFLICT (tenant_id, day, shard) DO UPDATE SET tokens = tenant_llm_usage.tokens + EXCLUDED.tokens",
        )
        .bind(self.tenant)
        .bind(day)
        .bind(tokens)
        .bind(USAGE_SHARDS)
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

/// Rows a tenant's daily usage is spread over (migration 8).
const USAGE_SHARDS: f64 = 64.0;

in_own_transaction! {
    /// The tenant's budget and usage on `day`.
    fn token_budget(&self, day: NaiveDate) -> TokenBudget;
    /// Adds tokens to the tenant's usage on `day`; returns the budget with
    /// them.
    fn add_token_usage(&self, day: NaiveDate, tokens: i64) -> TokenBudget;
}
