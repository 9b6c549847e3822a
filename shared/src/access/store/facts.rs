//! Durable facts agents learned about users, per tenant.

use super::{StoreError, TenantStore};
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
