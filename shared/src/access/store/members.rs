//! A tenant's people: who may talk to its agents, and which platform
//! identities are one person.

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::engine::member::Members;
use crate::ids::Platform;

impl TenantTx {
    /// The tenant's members on `platform`.
    pub async fn members(&mut self, platform: Platform) -> Result<Members, StoreError> {
        let rows = sqlx::query!(
            "SELECT kind, value FROM tenant_members WHERE tenant_id = $1 AND platform = $2",
            self.tenant as _,
            platform as _
        )
        .fetch_all(&mut **self)
        .await?;
        let mut members = Members::default();
        for row in rows {
            let set = match row.kind.as_str() {
                "team" => &mut members.teams,
                "role" => &mut members.roles,
                _ => &mut members.users,
            };
            set.insert(row.value);
        }
        Ok(members)
    }

    /// Whether two identities (`platform:user id`) are listed as one person.
    pub async fn same_person(&mut self, a: &str, b: &str) -> Result<bool, StoreError> {
        let same = sqlx::query_scalar!(
            r#"SELECT EXISTS (
                 SELECT 1 FROM tenant_members x JOIN tenant_members y
                   ON y.tenant_id = x.tenant_id AND y.person = x.person
                 WHERE x.tenant_id = $1 AND x.kind = 'user' AND y.kind = 'user'
                   AND x.platform || ':' || x.value = $2 AND y.platform || ':' || y.value = $3
               ) AS "same!""#,
            self.tenant as _,
            a,
            b
        )
        .fetch_one(&mut **self)
        .await?;
        Ok(same)
    }
}

in_own_transaction! {
    /// The tenant's members on `platform`.
    fn members(&self, platform: Platform) -> Members;
    /// Whether two identities (`platform:user id`) are listed as one person.
    fn same_person(&self, a: &str, b: &str) -> bool;
}
