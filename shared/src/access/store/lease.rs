//! Conversation leases: one turn at a time per conversation, across any
//! number of workers. A lease expires (a killed holder frees it after its
//! time-to-live) and carries a fencing token: taking a lease sets the
//! conversation's fence to a number never given before (a sequence, which
//! even a rolled-back take does not rewind), and every write of a turn
//! checks, under a row lock, that the fence is still its own — a stale
//! holder cannot write.

use std::time::Duration;

use sqlx::PgConnection;

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::ids::{ConversationId, ProposalId, TenantId};

/// A held conversation lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The conversation's tenant.
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// The fencing token: the conversation's fence when the lease was taken.
    pub fence: i64,
}

/// A time-to-live as the whole milliseconds SQL adds to `now()`.
pub(super) fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Fails with [`StoreError::LeaseLost`] unless `lease` is still the
/// conversation's; holds a share lock on the conversation row until the
/// transaction ends, so no one can take the lease over before it commits.
pub(super) async fn check_fence(conn: &mut PgConnection, lease: &Lease) -> Result<(), StoreError> {
    let held = sqlx::query_scalar!(
        "SELECT 1 AS held FROM conversations WHERE id = $1 AND lease_fence = $2 FOR SHARE",
        lease.conversation_id as _,
        lease.fence
    )
    .fetch_optional(&mut *conn)
    .await?;
    held.map(|_| ()).ok_or(StoreError::LeaseLost)
}

impl TenantTx {
    /// Takes the conversation's lease for `ttl` unless another holder's lease
    /// is still running: sets its fence to a number never given before.
    pub async fn try_acquire_lease(
        &mut self,
        conversation: ConversationId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let fence = sqlx::query_scalar!(
            r#"UPDATE conversations SET lease_fence = nextval('lease_fences'), lease_holder = $2,
               lease_until = now() + $3::bigint * interval '1 millisecond'
               WHERE (lease_until IS NULL OR lease_until < now()) AND id = $1
               RETURNING lease_fence AS "lease_fence!""#,
            conversation as _,
            holder,
            millis(ttl)
        )
        .fetch_optional(&mut **self)
        .await?;
        Ok(self.hold(conversation, fence))
    }

    /// The lease `fence` stands for, if one was taken. The conversation's
    /// row stays locked until this transaction ends: it may write for the
    /// lease as if begun fenced.
    fn hold(&mut self, conversation: ConversationId, fence: Option<i64>) -> Option<Lease> {
        let lease = fence.map(|fence| Lease {
            tenant_id: self.tenant,
            conversation_id: conversation,
            fence,
        });
        if lease.is_some() {
            self.fenced = lease;
        }
        lease
    }

    /// Extends a held lease; `false` when it was taken over or released.
    pub async fn renew_lease(&mut self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query!(
            "UPDATE conversations SET lease_until = now() + $3::bigint * interval '1 millisecond' \
             WHERE id = $1 AND lease_fence = $2 AND lease_until IS NOT NULL",
            lease.conversation_id as _,
            lease.fence,
            millis(ttl)
        )
        .execute(&mut **self)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives a lease back (a no-op when it was taken over).
    pub async fn release_lease(&mut self, lease: &Lease) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE conversations SET lease_until = NULL, lease_holder = NULL \
             WHERE id = $1 AND lease_fence = $2",
            lease.conversation_id as _,
            lease.fence
        )
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    /// Gives `lease` back (when one is held) and lists the conversation's
    /// proposals no review picked up yet, in one statement.
    pub async fn hand_back(
        &mut self,
        conversation: ConversationId,
        lease: Option<&Lease>,
    ) -> Result<Vec<ProposalId>, StoreError> {
        // The release is a no-op without a lease (a null fence matches no row).
        let ids = sqlx::query_scalar!(
            r#"WITH released AS (UPDATE conversations SET lease_until = NULL, lease_holder = NULL
                 WHERE id = $1 AND lease_fence = $2)
             SELECT id AS "id: ProposalId" FROM proposals
             WHERE conversation_id = $1 AND state = 'proposed' ORDER BY created_at"#,
            conversation as _,
            lease.map(|l| l.fence)
        )
        .fetch_all(&mut **self)
        .await?;
        Ok(ids)
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
}
