//! Conversation leases: one turn at a time per conversation, across any
//! number of workers. A lease expires (a killed holder frees it after its
//! time-to-live) and carries a fencing token: taking a lease sets the
//! conversation's fence to a number never given before (a sequence, which
//! even a rolled-back take does not rewind), and every write of a turn
//! checks, under a row lock, that the fence is still its own — a stale
//! holder cannot write.

use std::time::Duration;

use sqlx::PgConnection;

use super::{InboxModel, StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::ids::{ConversationId, TenantId};

/// A held conversation lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The conversation's tenant.
    pub tenant_id: TenantId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The fencing token: the conversation's fence when the lease was taken.
    pub fence: i64,
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Fails with [`StoreError::LeaseLost`] unless `lease` is still the
/// conversation's; holds a share lock on the conversation row until the
/// transaction ends, so no one can take the lease over before it commits.
pub(super) async fn check_fence(conn: &mut PgConnection, lease: &Lease) -> Result<(), StoreError> {
    let held = sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM conversations WHERE id = $1 AND lease_fence = $2 FOR SHARE",
    )
    .bind(lease.conversation_id)
    .bind(lease.fence)
    .fetch_optional(&mut *conn)
    .await?;
    held.map(|_| ()).ok_or(StoreError::LeaseLost)
}

impl TenantTx {
    /// Takes the conversation's lease for `ttl` unless another holder's lease
    /// is still running.
    pub async fn try_acquire_lease(
        &mut self,
        conversation: ConversationId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let fence = sqlx::query_scalar::<_, i64>(
            "UPDATE conversations SET lease_fence = nextval('lease_fences'), lease_holder = $2, \
             lease_until = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND (lease_until IS NULL OR lease_until < now()) RETURNING lease_fence",
        )
        .bind(conversation)
        .bind(holder)
        .bind(millis(ttl))
        .fetch_optional(&mut **self)
        .await?;
        let lease = fence.map(|fence| Lease {
            tenant_id: self.tenant,
            conversation_id: conversation,
            fence,
        });
        // The row stays locked until this transaction ends: it may write
        // for the lease as if begun fenced.
        if lease.is_some() {
            self.fenced = lease;
        }
        Ok(lease)
    }

    /// Extends a held lease; `false` when it was taken over or released.
    pub async fn renew_lease(&mut self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE conversations SET lease_until = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND lease_fence = $2 AND lease_until IS NOT NULL",
        )
        .bind(lease.conversation_id)
        .bind(lease.fence)
        .bind(millis(ttl))
        .execute(&mut **self)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives a lease back (a no-op when it was taken over).
    pub async fn release_lease(&mut self, lease: &Lease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET lease_until = NULL, lease_holder = NULL \
             WHERE id = $1 AND lease_fence = $2",
        )
        .bind(lease.conversation_id)
        .bind(lease.fence)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    /// The conversation's messages not answered yet, in arrival order.
    pub async fn pending_messages(
        &mut self,
        conversation: ConversationId,
        limit: i64,
    ) -> Result<Vec<InboxModel>, StoreError> {
        let messages = sqlx::query_as::<_, InboxModel>(&format!(
            "SELECT {} FROM inbox i JOIN conversations c ON c.id = i.conversation_id \
             WHERE i.conversation_id = $1 AND i.processed_at IS NULL \
             ORDER BY i.received_at, i.id LIMIT $2",
            super::inbox::INBOX_COLUMNS
        ))
        .bind(conversation)
        .bind(limit)
        .fetch_all(&mut **self)
        .await?;
        Ok(messages)
    }
}

in_own_transaction! {
    /// Takes the conversation's lease for `ttl` unless another holder's lease
    /// is still running.
    fn try_acquire_lease(&self, conversation: ConversationId, holder: &str, ttl: Duration) -> Option<Lease>;
    /// Extends a held lease; `false` when it was taken over or released.
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> bool;
    /// Gives a lease back (a no-op when it was taken over).
    fn release_lease(&self, lease: &Lease) -> ();
    /// The conversation's messages not answered yet, in arrival order.
    fn pending_messages(&self, conversation: ConversationId, limit: i64) -> Vec<InboxModel>;
}
