//! Proposals: the `proposal-<id>` event stream with its projection row,
//! changed only inside a transaction that holds the row lock.

use serde_json::Value;
use sqlx::types::Json;

use super::events::{NewEvent, append};
use super::{StoreError, TenantStore};
use crate::engine::review::ReviewCard;
use crate::event::{Actor, Evidence, ProposalEvent, proposal_stream};
use crate::ids::{ConversationId, InboxId, OutboxId, ProposalId, TenantId};
use crate::proposal::ProposalState;
use crate::request::ToolRequest;

/// A proposal row (the projection of its stream).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProposalModel {
    /// The proposal.
    pub id: ProposalId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The conversation it came from.
    pub conversation_id: ConversationId,
    /// The message whose turn filed it.
    pub inbox_id: InboxId,
    /// The write tool.
    pub tool: String,
    /// The exact request.
    pub request: Json<ToolRequest>,
    /// Its digest.
    pub payload_sha256: String,
    /// The pattern key's value.
    pub pattern_value: Option<String>,
    /// The amount in minor units.
    pub amount_minor: Option<i64>,
    /// Who asked (`platform:user id`).
    pub proposer: String,
    /// Lifecycle state name.
    pub state: String,
    /// Review channel, once posted.
    pub review_channel: Option<String>,
    /// Review message `ts`, once posted.
    pub review_ts: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The stream's last version.
    pub stream_version: i64,
}

impl ProposalModel {
    /// An event of this proposal's stream, with the envelope filled in.
    pub fn event(
        &self,
        event: &ProposalEvent,
        actor: Actor,
        trace_id: Option<&str>,
        source: &'static str,
    ) -> NewEvent {
        NewEvent {
            tenant_id: self.tenant_id,
            type_name: event.type_name(),
            payload: event.payload(),
            actor,
            occurred_at: chrono::Utc::now(),
            dedupe_key: None,
            correlation_id: Some(self.conversation_id.0),
            causation_id: Some(self.id.0),
            trace_id: trace_id.map(str::to_owned),
            source,
        }
    }

    /// What a review card shows of this proposal: why a human must decide
    /// (`reason`) and the reads it rests on.
    pub fn review_card<'a>(&'a self, reason: &'a str, evidence: &'a [Evidence]) -> ReviewCard<'a> {
        ReviewCard {
            proposal_id: self.id,
            tool: &self.tool,
            body: self.request.body.as_ref().unwrap_or(&Value::Null),
            amount_minor: self.amount_minor,
            proposer: &self.proposer,
            reason,
            evidence,
            payload_sha256: &self.payload_sha256,
        }
    }

    /// The lifecycle state.
    pub fn state(&self) -> ProposalState {
        ProposalState::parse(&self.state).expect("the projection only holds valid states")
    }
}

/// A new proposal and its `proposed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProposal {
    /// Its id.
    pub id: ProposalId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Message whose turn filed it.
    pub inbox_id: InboxId,
    /// The exact request.
    pub request: ToolRequest,
    /// Its digest.
    pub payload_sha256: String,
    /// The pattern key's value.
    pub pattern_value: Option<String>,
    /// The amount in minor units.
    pub amount_minor: Option<i64>,
    /// Who asked.
    pub proposer: String,
    /// The `proposed` event.
    pub event: NewEvent,
    /// The lease of the turn filing it.
    pub lease: super::Lease,
}

/// A tenant's review policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Slack channel where proposals are reviewed.
    pub review_channel: Option<String>,
    /// Amounts (minor units) below this may be auto-approved.
    pub auto_approve_limit_minor: i64,
    /// Reviewers (`platform:user id`).
    pub reviewers: Vec<String>,
}

/// Changes to the projection that come with an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProposalChanges {
    /// New lifecycle state.
    pub state: Option<ProposalState>,
    /// Review message location.
    pub review_message: Option<(String, String)>,
    /// Who decided.
    pub decided_by: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, conversation_id, inbox_id, tool, request, payload_sha256, pattern_value, \
     amount_minor, proposer, state, review_channel, review_ts, decided_by, stream_version";

/// A proposal locked for one change; dropped without commit, nothing changes.
pub struct ProposalTx {
    tx: super::TenantTx,
    /// The proposal as locked.
    pub proposal: ProposalModel,
}

impl ProposalTx {
    /// Appends an event to the proposal's stream and applies `changes`.
    pub async fn record(
        &mut self,
        event: &NewEvent,
        changes: ProposalChanges,
    ) -> Result<(), StoreError> {
        let stream = proposal_stream(self.proposal.id);
        let version = append(
            &mut self.tx,
            &stream,
            self.proposal.stream_version,
            std::slice::from_ref(event),
        )
        .await?;
        let (channel, ts) = changes.review_message.unzip();
        let updated = sqlx::query_as::<_, ProposalModel>(&format!(
            "UPDATE proposals SET stream_version = $2, state = coalesce($3, state), \
             review_channel = coalesce($4, review_channel), review_ts = coalesce($5, review_ts), \
             decided_by = coalesce($6, decided_by), decided_at = CASE WHEN $6 IS NULL THEN decided_at ELSE now() END, \
             updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(self.proposal.id)
        .bind(version)
        .bind(changes.state.map(ProposalState::as_str))
        .bind(channel)
        .bind(ts)
        .bind(changes.decided_by)
        .fetch_one(&mut *self.tx)
        .await?;
        self.proposal = updated;
        Ok(())
    }

    /// Writes a notice into the proposal's conversation (delivered like a
    /// reply); `None` when a notice with this key exists already.
    pub async fn notify_conversation(
        &mut self,
        dedupe_key: &str,
        text: &str,
    ) -> Result<Option<OutboxId>, StoreError> {
        let id = sqlx::query_scalar::<_, OutboxId>(
            "INSERT INTO outbox (id, tenant_id, conversation_id, dedupe_key, platform, chat, thread, text) \
             SELECT $1, c.tenant_id, c.id, $2, c.platform, c.chat, c.thread, $3 FROM conversations c WHERE c.id = $4 \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(OutboxId::new_v7())
        .bind(dedupe_key)
        .bind(text)
        .bind(self.proposal.conversation_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Commits the change.
    pub async fn commit(self) -> Result<ProposalModel, StoreError> {
        self.tx.commit().await?;
        Ok(self.proposal)
    }
}

impl TenantStore {
    /// Files a proposal, once per message and payload: a retried turn gets
    /// the proposal it filed before.
    pub async fn file_proposal(&self, p: &NewProposal) -> Result<ProposalModel, StoreError> {
        let mut tx = self.begin_fenced(&p.lease).await?;
        // Serializes concurrent filings of the same payload from one message.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:{}", p.inbox_id, p.payload_sha256))
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query_as::<_, ProposalModel>(&format!(
            "SELECT {COLUMNS} FROM proposals WHERE inbox_id = $1 AND payload_sha256 = $2"
        ))
        .bind(p.inbox_id)
        .bind(&p.payload_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let version = append(
            &mut tx,
            &proposal_stream(p.id),
            0,
            std::slice::from_ref(&p.event),
        )
        .await?;
        let proposal = sqlx::query_as::<_, ProposalModel>(&format!(
            "INSERT INTO proposals (id, tenant_id, conversation_id, inbox_id, tool, request, payload_sha256, \
             pattern_value, amount_minor, proposer, state, stream_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'proposed', $11) RETURNING {COLUMNS}"
        ))
        .bind(p.id)
        .bind(p.tenant_id)
        .bind(p.conversation_id)
        .bind(p.inbox_id)
        .bind(&p.request.tool)
        .bind(Json(&p.request))
        .bind(&p.payload_sha256)
        .bind(&p.pattern_value)
        .bind(p.amount_minor)
        .bind(&p.proposer)
        .bind(version)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(proposal)
    }

    /// A proposal.
    pub async fn proposal(&self, id: ProposalId) -> Result<ProposalModel, StoreError> {
        let mut tx = self.begin().await?;
        let out = sqlx::query_as::<_, ProposalModel>(&format!(
            "SELECT {COLUMNS} FROM proposals WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("proposal"));
        tx.commit().await?;
        out
    }

    /// Locks a proposal for one change.
    pub async fn lock_proposal(&self, id: ProposalId) -> Result<ProposalTx, StoreError> {
        let mut tx = self.begin().await?;
        let proposal = sqlx::query_as::<_, ProposalModel>(&format!(
            "SELECT {COLUMNS} FROM proposals WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("proposal"))?;
        Ok(ProposalTx { tx, proposal })
    }

    /// The proposal whose review message is `ts` in `channel`.
    pub async fn proposal_by_review_message(
        &self,
        channel: &str,
        ts: &str,
    ) -> Result<Option<ProposalModel>, StoreError> {
        let mut tx = self.begin().await?;
        let proposal = sqlx::query_as::<_, ProposalModel>(&format!(
            "SELECT {COLUMNS} FROM proposals WHERE review_channel = $1 AND review_ts = $2"
        ))
        .bind(channel)
        .bind(ts)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(proposal)
    }

    /// The tenant's review channel, auto-approval limit and reviewers.
    pub async fn tenant_policy(&self) -> Result<TenantPolicy, StoreError> {
        let mut tx = self.begin().await?;
        let (review_channel, auto_approve_limit_minor) =
            sqlx::query_as::<_, (Option<String>, i64)>(
                "SELECT review_channel, auto_approve_limit_minor FROM tenants WHERE id = $1",
            )
            .bind(self.tenant)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        let reviewers = sqlx::query_scalar::<_, String>(
            "SELECT platform || ':' || user_id FROM tenant_reviewers WHERE tenant_id = $1 ORDER BY 1",
        )
        .bind(self.tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TenantPolicy {
            review_channel,
            auto_approve_limit_minor,
            reviewers,
        })
    }

    /// Request bodies of the tenant's executed proposals of `tool` with this
    /// pattern value, newest first.
    pub async fn executed_bodies(
        &self,
        tool: &str,
        pattern_value: &str,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        let mut tx = self.begin().await?;
        let bodies = sqlx::query_scalar::<_, Value>(
            "SELECT coalesce(request->'body', 'null'::jsonb) FROM proposals \
             WHERE tenant_id = $1 AND tool = $2 AND pattern_value = $3 AND state = 'executed' \
             ORDER BY created_at DESC LIMIT $4",
        )
        .bind(self.tenant)
        .bind(tool)
        .bind(pattern_value)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(bodies)
    }
}
