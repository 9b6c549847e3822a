//! Durable facts agents learned about users, per tenant.

use chrono::{DateTime, Utc};

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::ids::{ConversationId, Platform};

/// Facts kept per user; an agent cannot store more.
pub const MAX_FACTS_PER_USER: i64 = 100;

impl TenantStore {
    /// Stores a fact about a user once; `false` when it was known already or
    /// the user has [`MAX_FACTS_PER_USER`] facts.
    pub async fn remember_fact(
        &self,
        platform: Platform,
        user_id: &str,
        fact: &str,
        conversation: ConversationId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let stored = sqlx::query!(
            "INSERT INTO user_facts (tenant_id, platform, user_id, fact, conversation_id) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE (SELECT count(*) FROM user_facts \
                    WHERE tenant_id = $1 AND platform = $2 AND user_id = $3) < $6 \
             ON CONFLICT DO NOTHING",
            self.tenant as _,
            platform as _,
            user_id,
            fact,
            conversation as _,
            MAX_FACTS_PER_USER
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(stored == 1)
    }
}

impl TenantTx {
    /// The newest `limit` facts about a user learned since `since`, oldest first.
    pub async fn user_facts(
        &mut self,
        platform: Platform,
        user_id: &str,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut facts = sqlx::query_scalar!(
            "SELECT fact FROM user_facts WHERE tenant_id = $1 AND platform = $2 AND user_id = $3 \
             AND ($4::timestamptz IS NULL OR learned_at >= $4) \
             ORDER BY learned_at DESC, fact LIMIT $5",
            self.tenant as _,
            platform as _,
            user_id,
            since,
            limit
        )
        .fetch_all(&mut **self)
        .await?;
        facts.reverse();
        Ok(facts)
    }
}

in_own_transaction! {
    /// The newest `limit` facts about a user learned since `since`, oldest first.
    fn user_facts(&self, platform: Platform, user_id: &str, since: Option<DateTime<Utc>>, limit: i64) -> Vec<String>;
}
