//! Files the owners send (receipts): kept once per tenant and digest, for
//! the tenant's retention.

use super::{StoreError, TenantStore};
use crate::request::FileRef;

impl TenantStore {
    /// Keeps a file for the tenant's retention; the same bytes stored again
    /// keep the first copy (and its name) and are kept as long as the later.
    pub async fn store_file(&self, file: &FileRef, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query!(
            "INSERT INTO files (tenant_id, sha256, content_type, filename, size_bytes, bytes, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, now() + file_retention_days * interval '1 day' \
             FROM tenants WHERE id = $1 \
             ON CONFLICT (tenant_id, sha256) DO UPDATE \
             SET expires_at = greatest(files.expires_at, EXCLUDED.expires_at)",
            self.tenant as _,
            file.sha256,
            file.content_type,
            file.filename,
            i64::try_from(file.size_bytes).unwrap_or(i64::MAX),
            bytes
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A kept file and its bytes, `None` when it is not (or no longer)
    /// kept.
    pub async fn kept_file(&self, sha256: &str) -> Result<Option<(FileRef, Vec<u8>)>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query!(
            "SELECT sha256, content_type, filename, size_bytes, bytes FROM files \
             WHERE tenant_id = $1 AND sha256 = $2",
            self.tenant as _,
            sha256
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| {
            let file = FileRef {
                sha256: r.sha256,
                content_type: r.content_type,
                filename: r.filename,
                size_bytes: u64::try_from(r.size_bytes).unwrap_or_default(),
            };
            (file, r.bytes)
        }))
    }

    /// Deletes at most `limit` files past their retention; how many went.
    pub async fn delete_expired_files(&self, limit: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query!(
            "DELETE FROM files WHERE tenant_id = $1 AND sha256 IN \
             (SELECT sha256 FROM files WHERE tenant_id = $1 AND expires_at < now() LIMIT $2)",
            self.tenant as _,
            limit
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}
