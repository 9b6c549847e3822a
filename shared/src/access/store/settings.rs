//! Operators' changes to a tenant's settings (`worker admin`), made as the
//! `automate_e_admin` role under row-level security: each change in a
//! transaction of that tenant, and idempotent (`true` when it changed
//! something).

use serde_json::{Value, json};

use super::{Store, StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::ids::{Platform, TenantId};

/// A setting of the `tenants` row an operator may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSetting {
    Name(String),
    Brief(String),
    ReviewChannel(Option<String>),
    AutoApproveLimitMinor(i64),
    /// `None`: unlimited.
    TokensPerDay(Option<i64>),
    /// `None`: the gateway's default.
    UserPerMinute(Option<i32>),
    /// `None`: the gateway's default.
    TenantPerMinute(Option<i32>),
    AccountingCompany(Option<String>),
    AccountingCredential(Option<String>),
    /// `None`: the worker's default Accounting API.
    AccountingUrl(Option<String>),
    FileRetentionDays(i32),
}

impl TenantSetting {
    /// The `tenants` column it sets, and that column's SQL type.
    fn column(&self) -> (&'static str, &'static str) {
        match self {
            Self::Name(_) => ("name", "text"),
            Self::Brief(_) => ("brief", "text"),
            Self::ReviewChannel(_) => ("review_channel", "text"),
            Self::AutoApproveLimitMinor(_) => ("auto_approve_limit_minor", "bigint"),
            Self::TokensPerDay(_) => ("llm_tokens_per_day", "bigint"),
            Self::UserPerMinute(_) => ("user_per_minute", "integer"),
            Self::TenantPerMinute(_) => ("tenant_per_minute", "integer"),
            Self::AccountingCompany(_) => ("accounting_company", "text"),
            Self::AccountingCredential(_) => ("accounting_credential", "text"),
            Self::AccountingUrl(_) => ("accounting_base_url", "text"),
            Self::FileRetentionDays(_) => ("file_retention_days", "integer"),
        }
    }

    /// Its value as text (`None`: NULL), cast to the column's type.
    fn value(&self) -> Option<String> {
        match self {
            Self::Name(v) | Self::Brief(v) => Some(v.clone()),
            Self::ReviewChannel(v)
            | Self::AccountingCompany(v)
            | Self::AccountingCredential(v)
            | Self::AccountingUrl(v) => v.clone(),
            Self::AutoApproveLimitMinor(v) => Some(v.to_string()),
            Self::TokensPerDay(v) => v.map(|v| v.to_string()),
            Self::UserPerMinute(v) | Self::TenantPerMinute(v) => v.map(|v| v.to_string()),
            Self::FileRetentionDays(v) => Some(v.to_string()),
        }
    }
}

/// A member, as `tenant_members` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow<'a> {
    pub platform: &'a str,
    /// `user`, `team` or `role`.
    pub kind: &'a str,
    pub value: &'a str,
    /// Links one person's identities (users only).
    pub person: Option<&'a str>,
}

impl Store {
    /// Every tenant's id and slug, by slug.
    pub async fn tenant_slugs(&self) -> Result<Vec<(TenantId, String)>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT id AS "id!: TenantId", slug AS "slug!" FROM automate_e_tenant_slugs()"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.slug)).collect())
    }
}

impl TenantStore {
    /// Creates the tenant (this store's id) with `slug` and `name`; `false`
    /// when it exists already.
    pub async fn create_tenant(&self, slug: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let created = sqlx::query!(
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            self.tenant as _,
            slug,
            name
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(created == 1)
    }
}

impl TenantTx {
    /// Sets one setting; `true` when its value changed.
    pub async fn set_tenant(&mut self, setting: &TenantSetting) -> Result<bool, StoreError> {
        let (column, sql_type) = setting.column();
        // Column and type are the enum's own constants; the value is bound.
        let sql = format!(
            "UPDATE tenants SET {column} = $2::{sql_type} \
             WHERE id = $1 AND {column} IS DISTINCT FROM $2::{sql_type}"
        );
        let done = sqlx::query(&sql)
            .bind(self.tenant.0)
            .bind(setting.value())
            .execute(&mut **self)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Routes a platform workspace's channel (or `*`) to `character`. A
    /// chat routed to another tenant is refused (the key's unique
    /// violation), not skipped.
    pub async fn add_route(
        &mut self,
        platform: &str,
        workspace: &str,
        channel: &str,
        character: &str,
    ) -> Result<bool, StoreError> {
        let current = sqlx::query_scalar!(
            "SELECT character FROM tenant_routes WHERE tenant_id = $1 AND platform = $2 \
             AND workspace = $3 AND channel = $4",
            self.tenant as _,
            platform,
            workspace,
            channel
        )
        .fetch_optional(&mut **self)
        .await?;
        let done = match current {
            Some(current) if current == character => return Ok(false),
            Some(_) => sqlx::query!(
                "UPDATE tenant_routes SET character = $5 WHERE tenant_id = $1 AND platform = $2 \
                 AND workspace = $3 AND channel = $4",
                self.tenant as _,
                platform,
                workspace,
                channel,
                character
            ),
            None => sqlx::query!(
                "INSERT INTO tenant_routes (tenant_id, platform, workspace, channel, character) \
                 VALUES ($1, $2, $3, $4, $5)",
                self.tenant as _,
                platform,
                workspace,
                channel,
                character
            ),
        }
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a route of this tenant.
    pub async fn remove_route(
        &mut self,
        platform: &str,
        workspace: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM tenant_routes WHERE tenant_id = $1 AND platform = $2 \
             AND workspace = $3 AND channel = $4",
            self.tenant as _,
            platform,
            workspace,
            channel
        )
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Lists a member (or changes its person).
    pub async fn add_member(&mut self, m: &MemberRow<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "INSERT INTO tenant_members (tenant_id, platform, kind, value, person) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, platform, kind, value) \
             DO UPDATE SET person = EXCLUDED.person \
             WHERE tenant_members.person IS DISTINCT FROM EXCLUDED.person",
            self.tenant as _,
            m.platform,
            m.kind,
            m.value,
            m.person
        )
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a member.
    pub async fn remove_member(
        &mut self,
        platform: &str,
        kind: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM tenant_members WHERE tenant_id = $1 AND platform = $2 AND kind = $3 \
             AND value = $4",
            self.tenant as _,
            platform,
            kind,
            value
        )
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes a Slack or chat page user a reviewer (or changes whether they
    /// are asked at escalation).
    pub async fn add_reviewer(
        &mut self,
        platform: Platform,
        user: &str,
        escalation: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "INSERT INTO tenant_reviewers (tenant_id, platform, user_id, escalation) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, platform, user_id) \
             DO UPDATE SET escalation = EXCLUDED.escalation \
             WHERE tenant_reviewers.escalation IS DISTINCT FROM EXCLUDED.escalation",
            self.tenant as _,
            platform as _,
            user,
            escalation
        )
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a reviewer.
    pub async fn remove_reviewer(
        &mut self,
        platform: Platform,
        user: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM tenant_reviewers WHERE tenant_id = $1 AND platform = $2 \
             AND user_id = $3",
            self.tenant as _,
            platform as _,
            user
        )
        .execute(&mut **self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets how long proposals of `tool` (`*`: the rest) wait for a
    /// decision; `None` removes it.
    pub async fn set_review_window(
        &mut self,
        tool: &str,
        hours: Option<i32>,
    ) -> Result<bool, StoreError> {
        let done = match hours {
            Some(hours) => sqlx::query!(
                "INSERT INTO tenant_review_windows (tenant_id, tool, hours) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, tool) DO UPDATE SET hours = EXCLUDED.hours \
                 WHERE tenant_review_windows.hours IS DISTINCT FROM EXCLUDED.hours",
                self.tenant as _,
                tool,
                hours
            )
            .execute(&mut **self)
            .await?,
            None => {
                sqlx::query!(
                    "DELETE FROM tenant_review_windows WHERE tenant_id = $1 AND tool = $2",
                    self.tenant as _,
                    tool
                )
                .execute(&mut **self)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's settings, routes, members, reviewers and review windows.
    pub async fn describe_tenant(&mut self) -> Result<Value, StoreError> {
        let t = sqlx::query!(
            "SELECT slug, name, brief, review_channel, auto_approve_limit_minor, \
             llm_tokens_per_day, user_per_minute, tenant_per_minute, accounting_company, \
             accounting_credential, accounting_base_url, file_retention_days \
             FROM tenants WHERE id = $1",
            self.tenant as _
        )
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        let routes = sqlx::query!(
            "SELECT platform, workspace, channel, character FROM tenant_routes \
             WHERE tenant_id = $1 ORDER BY 1, 2, 3",
            self.tenant as _
        )
        .fetch_all(&mut **self)
        .await?;
        let members = sqlx::query!(
            "SELECT platform, kind, value, person FROM tenant_members WHERE tenant_id = $1 \
             ORDER BY 1, 2, 3",
            self.tenant as _
        )
        .fetch_all(&mut **self)
        .await?;
        let reviewers = sqlx::query!(
            "SELECT user_id, escalation FROM tenant_reviewers WHERE tenant_id = $1 ORDER BY 1",
            self.tenant as _
        )
        .fetch_all(&mut **self)
        .await?;
        let windows = sqlx::query!(
            "SELECT tool, hours FROM tenant_review_windows WHERE tenant_id = $1 ORDER BY 1",
            self.tenant as _
        )
        .fetch_all(&mut **self)
        .await?;
        Ok(json!({
            "id": self.tenant,
            "slug": t.slug,
            "name": t.name,
            "brief": t.brief,
            "review_channel": t.review_channel,
            "auto_approve_limit_minor": t.auto_approve_limit_minor,
            "llm_tokens_per_day": t.llm_tokens_per_day,
            "user_per_minute": t.user_per_minute,
            "tenant_per_minute": t.tenant_per_minute,
            "accounting_company": t.accounting_company,
            "accounting_credential": t.accounting_credential,
            "accounting_base_url": t.accounting_base_url,
            "file_retention_days": t.file_retention_days,
            "routes": routes.iter().map(|r| json!({"platform": r.platform, "workspace": r.workspace,
                "channel": r.channel, "character": r.character})).collect::<Vec<_>>(),
            "members": members.iter().map(|m| json!({"platform": m.platform, "kind": m.kind,
                "value": m.value, "person": m.person})).collect::<Vec<_>>(),
            "reviewers": reviewers.iter().map(|r| json!({"slack_user": r.user_id,
                "escalation": r.escalation})).collect::<Vec<_>>(),
            "review_windows": windows.iter().map(|w| json!({"tool": w.tool, "hours": w.hours}))
                .collect::<Vec<_>>(),
        }))
    }
}

in_own_transaction! {
    /// The tenant's settings, routes, members, reviewers and review windows.
    fn describe_tenant(&self) -> Value;
}
