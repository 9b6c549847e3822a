//! Proposals: the `proposal-<id>` event stream with its projection row,
//! changed only inside a transaction that holds the row lock.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::events::{NewEvent, append};
use super::inbox::{conversation_for, insert_outbox};
use super::lease::millis;
use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::engine::review::{ReviewCard, review_platform};
use crate::engine::review_clock::{DEFAULT_REVIEW_HOURS, ReviewClock, ReviewDue};
use crate::event::{Actor, Evidence, ProposalEvent, proposal_stream};
use crate::ids::{ConversationId, InboxId, OutboxId, ProposalId, TenantId};
use crate::proposal::ProposalState;
use crate::request::WritePlan;

/// A proposal row (the projection of its stream).
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalModel {
    /// The proposal.
    pub id: ProposalId,
    pub tenant_id: TenantId,
    /// The conversation it came from.
    pub conversation_id: ConversationId,
    /// The message whose turn filed it.
    pub inbox_id: InboxId,
    /// The write tool.
    pub tool: String,
    /// The exact request.
    pub request: Json<WritePlan>,
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
    /// When it started waiting for a reviewer.
    pub review_requested_at: Option<DateTime<Utc>>,
    /// When it expires unless decided.
    pub review_deadline: Option<DateTime<Utc>>,
    /// When the reviewers were reminded.
    pub review_reminded_at: Option<DateTime<Utc>>,
    /// When it was escalated.
    pub review_escalated_at: Option<DateTime<Utc>>,
}

impl ProposalModel {
    /// Its review window, once it waits for a reviewer.
    pub fn review_clock(&self) -> Option<ReviewClock> {
        ReviewClock::of(
            self.review_requested_at,
            self.review_deadline,
            self.review_reminded_at,
            self.review_escalated_at,
        )
    }

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
    /// (`reason`), the reads it rests on, and whether reviewers can be given
    /// links to its files.
    pub fn review_card<'a>(
        &'a self,
        reason: &'a str,
        evidence: &'a [Evidence],
        receipt_links: bool,
    ) -> ReviewCard<'a> {
        ReviewCard {
            proposal_id: self.id,
            tool: &self.tool,
            plan: &self.request,
            amount_minor: self.amount_minor,
            proposer: &self.proposer,
            reason,
            evidence,
            payload_sha256: &self.payload_sha256,
            receipt_links,
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
    pub id: ProposalId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    /// Message whose turn filed it.
    pub inbox_id: InboxId,
    /// The exact request.
    pub request: WritePlan,
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
    /// The reviewers asked when nobody answered (among `reviewers`).
    pub escalation_reviewers: Vec<String>,
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
    /// Starts the review window of this many hours.
    pub review_hours: Option<i32>,
    /// The reviewers were reminded.
    pub reminded: bool,
    /// The proposal was escalated.
    pub escalated: bool,
}

/// Reads proposals as [`ProposalModel`]s: the columns of one, and the rest
/// of the statement after them (a literal, so the query is checked).
macro_rules! select_proposals {
    ($rest:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            ProposalModel,
            r#"SELECT id AS "id: ProposalId", tenant_id AS "tenant_id: TenantId",
               conversation_id AS "conversation_id: ConversationId", inbox_id AS "inbox_id: InboxId",
               tool, request AS "request: Json<WritePlan>", payload_sha256, pattern_value,
               amount_minor, proposer, state, review_channel, review_ts, decided_by, stream_version,
               review_requested_at, review_deadline, review_reminded_at, review_escalated_at "#
                + $rest
            $(, $arg)*
        )
    };
}

/// A proposal locked for one change; dropped without commit, nothing changes.
pub struct ProposalTx {
    tx: TenantTx,
    /// The proposal as locked.
    pub proposal: ProposalModel,
}

/// The tenant's other queries, in the same transaction.
impl std::ops::Deref for ProposalTx {
    type Target = TenantTx;

    fn deref(&self) -> &TenantTx {
        &self.tx
    }
}

impl std::ops::DerefMut for ProposalTx {
    fn deref_mut(&mut self) -> &mut TenantTx {
        &mut self.tx
    }
}

/// What an execution needs of its proposal's stream.
#[derive(Debug, Default)]
pub struct ExecutionRecord {
    /// The digest the proposal was approved with (by a reviewer or a
    /// trusted pattern), if it was.
    pub approved_sha256: Option<String>,
    /// Its steps' events (started, finished), oldest first.
    pub steps: Vec<ProposalEvent>,
}

impl ProposalTx {
    /// How long the tenant's proposals of `tool` wait for a reviewer.
    pub async fn review_hours(&mut self, tool: &str) -> Result<i32, StoreError> {
        let hours = sqlx::query_scalar!(
            "SELECT hours FROM tenant_review_windows WHERE tenant_id = $1 AND tool IN ($2, '*') \
             ORDER BY tool = '*' LIMIT 1",
            self.proposal.tenant_id as _,
            tool
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(hours.unwrap_or(DEFAULT_REVIEW_HOURS))
    }

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
        let (channel, ts) = changes
            .review_message
            .as_ref()
            .map(|(c, t)| (c.as_str(), t.as_str()))
            .unzip();
        let clock = sqlx::query!(
            "UPDATE proposals SET stream_version = $2, state = coalesce($3, state), \
             review_channel = coalesce($4, review_channel), review_ts = coalesce($5, review_ts), \
             decided_by = coalesce($6, decided_by), \
             decided_at = CASE WHEN $6 IS NULL THEN decided_at ELSE now() END, \
             review_requested_at = CASE WHEN $7::int IS NULL THEN review_requested_at ELSE now() END, \
             review_deadline = CASE WHEN $7::int IS NULL THEN review_deadline \
                 ELSE now() + make_interval(hours => $7::int) END, \
             review_reminded_at = CASE WHEN $8 THEN coalesce(review_reminded_at, now()) \
                 ELSE review_reminded_at END, \
             review_escalated_at = CASE WHEN $9 THEN coalesce(review_escalated_at, now()) \
                 ELSE review_escalated_at END, \
             updated_at = now() WHERE id = $1 \
             RETURNING review_requested_at, review_deadline, review_reminded_at, review_escalated_at",
            self.proposal.id as _,
            version,
            changes.state.map(ProposalState::as_str),
            channel,
            ts,
            changes.decided_by,
            changes.review_hours,
            changes.reminded,
            changes.escalated
        )
        .fetch_one(&mut *self.tx)
        .await?;
        let p = &mut self.proposal;
        p.review_requested_at = clock.review_requested_at;
        p.review_deadline = clock.review_deadline;
        p.review_reminded_at = clock.review_reminded_at;
        p.review_escalated_at = clock.review_escalated_at;
        p.stream_version = version;
        if let Some(state) = changes.state {
            state.as_str().clone_into(&mut p.state);
        }
        p.review_channel = channel.map(str::to_owned).or(p.review_channel.take());
        p.review_ts = ts.map(str::to_owned).or(p.review_ts.take());
        p.decided_by = changes.decided_by.clone().or(p.decided_by.take());
        Ok(())
    }

    /// Writes a notice into the proposal's conversation (delivered like a
    /// reply); `None` when a notice with this key exists already.
    pub async fn notify_conversation(
        &mut self,
        dedupe_key: &str,
        text: &str,
    ) -> Result<Option<OutboxId>, StoreError> {
        insert_outbox(
            &mut self.tx,
            OutboxId::new_v7(),
            self.proposal.conversation_id,
            dedupe_key,
            text,
        )
        .await
    }

    /// Writes a notice into the proposal's review thread (delivered like a
    /// reply); `None` when it has no review card, or a notice with this key
    /// exists already.
    pub async fn notify_review_thread(
        &mut self,
        dedupe_key: &str,
        text: &str,
    ) -> Result<Option<OutboxId>, StoreError> {
        let (Some(channel), Some(ts)) = (
            self.proposal.review_channel.clone(),
            self.proposal.review_ts.clone(),
        ) else {
            return Ok(None);
        };
        let character = sqlx::query_scalar!(
            "SELECT character FROM conversations WHERE id = $1",
            self.proposal.conversation_id as _
        )
        .fetch_one(&mut *self.tx)
        .await?;
        let thread = conversation_for(
            &mut self.tx,
            self.proposal.tenant_id,
            review_platform(&channel),
            &channel,
            &ts,
            &character,
        )
        .await?;
        insert_outbox(&mut self.tx, OutboxId::new_v7(), thread, dedupe_key, text).await
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
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            format!("{}:{}", p.inbox_id, p.payload_sha256)
        )
        .execute(&mut *tx)
        .await?;
        let existing = select_proposals!(
            "FROM proposals WHERE inbox_id = $1 AND payload_sha256 = $2",
            p.inbox_id as _,
            p.payload_sha256
        )
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
        sqlx::query!(
            "INSERT INTO proposals (id, tenant_id, conversation_id, inbox_id, tool, request, \
             payload_sha256, pattern_value, amount_minor, proposer, state, stream_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'proposed', $11)",
            p.id as _,
            p.tenant_id as _,
            p.conversation_id as _,
            p.inbox_id as _,
            p.request.tool,
            Json(&p.request) as _,
            p.payload_sha256,
            p.pattern_value,
            p.amount_minor,
            p.proposer,
            version
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ProposalModel {
            id: p.id,
            tenant_id: p.tenant_id,
            conversation_id: p.conversation_id,
            inbox_id: p.inbox_id,
            tool: p.request.tool.clone(),
            request: Json(p.request.clone()),
            payload_sha256: p.payload_sha256.clone(),
            pattern_value: p.pattern_value.clone(),
            amount_minor: p.amount_minor,
            proposer: p.proposer.clone(),
            state: ProposalState::Proposed.as_str().to_owned(),
            review_channel: None,
            review_ts: None,
            decided_by: None,
            stream_version: version,
            review_requested_at: None,
            review_deadline: None,
            review_reminded_at: None,
            review_escalated_at: None,
        })
    }

    /// The newest `limit` proposals whose card is in review channel
    /// `channel`, newest first.
    pub async fn proposals_in_review_channel(
        &self,
        channel: &str,
        limit: i64,
    ) -> Result<Vec<ProposalModel>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = select_proposals!(
            "FROM proposals WHERE tenant_id = $1 AND review_channel = $2 \
             ORDER BY created_at DESC LIMIT $3",
            self.tenant as _,
            channel,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A proposal.
    pub async fn proposal(&self, id: ProposalId) -> Result<ProposalModel, StoreError> {
        let mut tx = self.begin().await?;
        let out = select_proposals!("FROM proposals WHERE id = $1", id as _)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("proposal"));
        tx.commit().await?;
        out
    }

    /// Locks a proposal for one change.
    pub async fn lock_proposal(&self, id: ProposalId) -> Result<ProposalTx, StoreError> {
        let mut tx = self.begin().await?;
        let proposal = select_proposals!("FROM proposals WHERE id = $1 FOR UPDATE", id as _)
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
        let proposal = select_proposals!(
            "FROM proposals WHERE review_channel = $1 AND review_ts = $2",
            channel,
            ts
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(proposal)
    }

    /// Lets the proposal's execution go, if `holder` has it.
    pub async fn release_execution(&self, id: ProposalId, holder: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query!(
            "UPDATE proposals SET execution_until = NULL, execution_holder = NULL \
             WHERE id = $1 AND execution_holder = $2",
            id as _,
            holder
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Approved proposals not executed (nor held by an execution) since
    /// before `before`, oldest first: their execution jobs may be lost.
    pub async fn unexecuted_proposals(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<ProposalId>, StoreError> {
        let mut tx = self.begin().await?;
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id: ProposalId" FROM proposals
               WHERE tenant_id = $1 AND state IN ('approved', 'auto_approved', 'executing')
               AND updated_at < $2 AND (execution_until IS NULL OR execution_until < now())
               ORDER BY updated_at LIMIT $3"#,
            self.tenant as _,
            before,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Notes that the proposal's review card is about to be sent; when it
    /// was first sent, if before (the card may be in the channel already).
    pub async fn mark_review_posting(
        &self,
        id: ProposalId,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut tx = self.begin().await?;
        let before = sqlx::query_scalar!(
            "SELECT review_posting_at FROM proposals WHERE id = $1 FOR UPDATE",
            id as _
        )
        .fetch_one(&mut *tx)
        .await?;
        if before.is_none() {
            sqlx::query!(
                "UPDATE proposals SET review_posting_at = now() WHERE id = $1",
                id as _
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(before)
    }

    /// Proposals waiting for a reviewer that need a reminder, an escalation
    /// or to expire at `now`, with what is due.
    pub async fn due_reviews(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(ProposalId, ReviewDue)>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id AS "id: ProposalId", review_requested_at, review_deadline,
                      review_reminded_at, review_escalated_at
               FROM proposals
               WHERE tenant_id = $1 AND state = 'review_requested' AND review_ts IS NOT NULL
               AND review_requested_at + (review_deadline - review_requested_at) / 2 <= $2
               AND (review_escalated_at IS NULL OR review_deadline <= $2)
               ORDER BY review_deadline LIMIT $3"#,
            self.tenant as _,
            now,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let clock = ReviewClock::of(
                    r.review_requested_at,
                    r.review_deadline,
                    r.review_reminded_at,
                    r.review_escalated_at,
                )?;
                Some((r.id, clock.due(now)?))
            })
            .collect())
    }

    /// Proposals whose next review step may have been lost, untouched since
    /// `before`: filed but not reviewed (`proposed`), or waiting for a
    /// reviewer with no card posted; `true` for the latter.
    pub async fn unreviewed_proposals(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<(ProposalId, bool)>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id AS "id: ProposalId", state = 'review_requested' AS "card_missing!"
               FROM proposals
               WHERE tenant_id = $1 AND updated_at < $2
               AND (state = 'proposed' OR (state = 'review_requested' AND review_ts IS NULL))
               ORDER BY updated_at LIMIT $3"#,
            self.tenant as _,
            before,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|r| (r.id, r.card_missing)).collect())
    }

    /// The arguments of the tenant's executed proposals of `tool` with this
    /// pattern value, newest first.
    pub async fn executed_arguments(
        &self,
        tool: &str,
        pattern_value: &str,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        let mut tx = self.begin().await?;
        let bodies = sqlx::query_scalar!(
            r#"SELECT coalesce(request->'arguments', 'null'::jsonb) AS "arguments!" FROM proposals
               WHERE tenant_id = $1 AND tool = $2 AND pattern_value = $3 AND state = 'executed'
               ORDER BY created_at DESC LIMIT $4"#,
            self.tenant as _,
            tool,
            pattern_value,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(bodies)
    }
}

impl TenantTx {
    /// The tenant's review channel, auto-approval limit and reviewers.
    pub async fn tenant_policy(&mut self) -> Result<TenantPolicy, StoreError> {
        let tenant = sqlx::query!(
            "SELECT review_channel, auto_approve_limit_minor FROM tenants WHERE id = $1",
            self.tenant as _
        )
        .fetch_optional(&mut **self)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        let rows = sqlx::query!(
            r#"SELECT platform || ':' || user_id AS "reviewer!", escalation FROM tenant_reviewers
               WHERE tenant_id = $1 ORDER BY 1"#,
            self.tenant as _
        )
        .fetch_all(&mut **self)
        .await?;
        let escalation_reviewers = rows
            .iter()
            .filter(|r| r.escalation)
            .map(|r| r.reviewer.clone())
            .collect();
        Ok(TenantPolicy {
            review_channel: tenant.review_channel,
            auto_approve_limit_minor: tenant.auto_approve_limit_minor,
            reviewers: rows.into_iter().map(|r| r.reviewer).collect(),
            escalation_reviewers,
        })
    }

    /// Holds the proposal's execution for `holder` during `ttl` (taken, or
    /// renewed when `holder` has it); `false` while another holds it.
    pub async fn hold_execution(
        &mut self,
        id: ProposalId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let held = sqlx::query!(
            "UPDATE proposals SET execution_holder = $2, \
             execution_until = now() + $3::bigint * interval '1 millisecond' \
             WHERE id = $1 AND (execution_until IS NULL OR execution_until < now() OR execution_holder = $2)",
            id as _,
            holder,
            millis(ttl)
        )
        .execute(&mut **self)
        .await?
        .rows_affected();
        Ok(held == 1)
    }

    /// What an execution needs of the proposal's stream: the digest it was
    /// approved with and its steps' events.
    pub async fn execution_record(
        &mut self,
        id: ProposalId,
    ) -> Result<ExecutionRecord, StoreError> {
        let events = self
            .read_stream(
                &proposal_stream(id),
                &[
                    ProposalEvent::APPROVED,
                    ProposalEvent::AUTO_APPROVED,
                    ProposalEvent::STEP_STARTED,
                    ProposalEvent::STEP_FINISHED,
                ],
            )
            .await?;
        let mut record = ExecutionRecord::default();
        for event in events {
            match ProposalEvent::from_stored(&event.type_name, event.payload) {
                Some(ProposalEvent::Decided(d)) => record.approved_sha256 = Some(d.payload_sha256),
                Some(ProposalEvent::AutoApproved(a)) => {
                    record.approved_sha256 = Some(a.payload_sha256);
                }
                Some(step) => record.steps.push(step),
                None => {}
            }
        }
        Ok(record)
    }
}

in_own_transaction! {
    /// The tenant's review channel, auto-approval limit and reviewers.
    fn tenant_policy(&self) -> TenantPolicy;
    /// Holds the proposal's execution for `holder` during `ttl` (taken, or
    /// renewed when `holder` has it); `false` while another holds it.
    fn hold_execution(&self, id: ProposalId, holder: &str, ttl: std::time::Duration) -> bool;
}
