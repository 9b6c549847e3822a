//! LLM token usage per tenant and UTC day, against the tenant's daily budget.

use chrono::{DateTime, NaiveDate, Utc};

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::engine::cost::UsageLine;

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
        // and only a plan that sees them can use it. They are the types of
        // `ConversationEvent::LLM_CALLED`, `ProposalEvent::AGENT_REVIEWED`,
        // `RunEvent::RUN_COMPLETED` and `ConversationEvent::TOOL_CALLED`;
        // the usage test records each through its constant.
        let rows = sqlx::query!(
            r#"SELECT coalesce(payload->>'model', 'unknown') AS "model!",
               coalesce(sum((payload->>'input_tokens')::bigint), 0)::bigint AS "input!",
               coalesce(sum((payload->>'output_tokens')::bigint), 0)::bigint AS "output!",
               count(*) AS "calls!" FROM events WHERE tenant_id = $1
               AND type IN ('automate_e.conversation.llm_called.v1',
                   'automate_e.proposal.agent_reviewed.v1', 'automate_e.agent.run_completed.v1')
               AND coalesce(payload->>'model', '') <> '' AND occurred_at >= $2 AND occurred_at < $3
               GROUP BY 1 ORDER BY 1"#,
            self.tenant as _,
            from,
            to
        )
        .fetch_all(&mut *tx)
        .await?;
        let tool_calls = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM events WHERE tenant_id = $1
               AND type = 'automate_e.conversation.tool_called.v1'
               AND payload->>'outcome' IN ('ok', 'http_error')
               AND jsonb_typeof(payload->'request') = 'object'
               AND occurred_at >= $2 AND occurred_at < $3"#,
            self.tenant as _,
            from,
            to
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let lines = rows
            .into_iter()
            .map(|r| UsageLine {
                model: r.model,
                input_tokens: count(r.input),
                output_tokens: count(r.output),
                calls: count(r.calls),
            })
            .collect();
        Ok((lines, count(tool_calls)))
    }
}

impl TenantTx {
    /// The tenant's budget and usage on `day`.
    pub async fn token_budget(&mut self, day: NaiveDate) -> Result<TokenBudget, StoreError> {
        sqlx::query_as!(
            TokenBudget,
            r#"SELECT t.llm_tokens_per_day AS per_day,
               (SELECT coalesce(sum(u.tokens), 0)::bigint FROM tenant_llm_usage u
                WHERE u.tenant_id = t.id AND u.day = $2) AS "used!"
               FROM tenants t WHERE t.id = $1"#,
            self.tenant as _,
            day
        )
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
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
        sqlx::query!(
            "INSERT INTO tenant_llm_usage (tenant_id, day, shard, tokens) \
             VALUES ($1, $2, floor(random() * $4)::smallint, $3) \
             ON CONFLICT (tenant_id, day, shard) \
             DO UPDATE SET tokens = tenant_llm_usage.tokens + EXCLUDED.tokens",
            self.tenant as _,
            day,
            tokens,
            USAGE_SHARDS
        )
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

/// Rows a tenant's daily usage is spread over (migration 8; a turn's end,
/// `automate_e_turn_end` of migration 28, spreads its tokens over as many).
const USAGE_SHARDS: f64 = 64.0;

in_own_transaction! {
    /// The tenant's budget and usage on `day`.
    fn token_budget(&self, day: NaiveDate) -> TokenBudget;
    /// Adds tokens to the tenant's usage on `day`; returns the budget with
    /// them.
    fn add_token_usage(&self, day: NaiveDate, tokens: i64) -> TokenBudget;
}
