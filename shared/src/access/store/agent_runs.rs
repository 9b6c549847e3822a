//! Agent runs for triggers that are not chat messages (an event on the event
//! store, a schedule period), each run once per dedupe key however many
//! workers see the trigger, and the event triggers' read positions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::events::{NewEvent, StoredEvent, append};
use super::inbox::{conversation_for, insert_outbox};
use super::{StoreError, TenantStore};
use crate::ids::{AgentRunId, OutboxId, Platform};

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgentRun {
    /// The agent.
    pub character: String,
    /// Runs with the same key are one run (`event:<agent>:<event id>`,
    /// `schedule:<agent>:<cron>:<fire time>`).
    pub dedupe_key: String,
    /// Why it runs (a serialized [`crate::trigger::RunReason`]).
    pub reason: Value,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRunModel {
    /// The run.
    pub id: AgentRunId,
    /// The agent.
    pub character: String,
    /// Why it runs.
    pub reason: Value,
    /// When it finished, if it did.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a run's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDestination {
    pub platform: Platform,
    /// Chat (channel) id.
    pub chat: String,
    /// Thread within the chat; empty for the channel itself.
    pub thread: String,
}

/// The end of a run, written at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCompletion<'a> {
    pub run: AgentRunId,
    /// The agent.
    pub character: &'a str,
    /// Where the answer goes.
    pub destination: &'a RunDestination,
    /// The answer.
    pub text: &'a str,
    /// The outbox row to write.
    pub outbox_id: OutboxId,
    /// Events of the run's stream.
    pub events: &'a [NewEvent],
}

impl TenantStore {
    /// Creates a run unless one with its key exists; its id when created.
    pub async fn create_agent_run(
        &self,
        run: &NewAgentRun,
    ) -> Result<Option<AgentRunId>, StoreError> {
        let mut tx = self.begin().await?;
        let id = sqlx::query_scalar!(
            r#"INSERT INTO agent_runs (id, tenant_id, character, dedupe_key, reason)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
               RETURNING id AS "id: AgentRunId""#,
            AgentRunId::new_v7() as _,
            self.tenant as _,
            run.character,
            run.dedupe_key,
            run.reason
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A run.
    pub async fn agent_run(&self, id: AgentRunId) -> Result<AgentRunModel, StoreError> {
        let mut tx = self.begin().await?;
        let run = sqlx::query_as!(
            AgentRunModel,
            r#"SELECT id AS "id: AgentRunId", character, reason, finished_at FROM agent_runs
               WHERE id = $1"#,
            id as _
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("agent run"));
        tx.commit().await?;
        run
    }

    /// Notes that the run's job is on the queue.
    pub async fn mark_agent_run_enqueued(&self, id: AgentRunId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query!(
            "UPDATE agent_runs SET enqueued_at = now() WHERE id = $1 AND enqueued_at IS NULL",
            id as _
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks an unfinished run given up (its job was dead-lettered), or
    /// (`given_up` false, for a replay) not any more; `false` when there was
    /// nothing to change.
    pub async fn set_agent_run_given_up(
        &self,
        id: AgentRunId,
        given_up: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query!(
            "UPDATE agent_runs SET given_up_at = CASE WHEN $2 THEN now() END \
             WHERE id = $1 AND finished_at IS NULL AND (given_up_at IS NULL) = $2",
            id as _,
            given_up
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Runs neither finished nor given up that were created before `before`
    /// (their job may never have reached the queue, or Redis lost it).
    pub async fn unfinished_agent_runs(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AgentRunId>, StoreError> {
        let mut tx = self.begin().await?;
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id: AgentRunId" FROM agent_runs WHERE tenant_id = $3
               AND finished_at IS NULL AND given_up_at IS NULL AND created_at < $1
               ORDER BY created_at LIMIT $2"#,
            before,
            limit,
            self.tenant as _
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Ends a run at once: marks it finished, appends its events to
    /// `stream`, and writes its answer to the outbox in its destination's
    /// conversation. `false` (and nothing written) when it was finished already.
    pub async fn complete_agent_run(
        &self,
        stream: &str,
        c: &RunCompletion<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !finish_run(&mut tx, c.run).await? {
            return Ok(false);
        }
        append(&mut tx, stream, 0, c.events).await?;
        let d = c.destination;
        let conversation = conversation_for(
            &mut tx,
            self.tenant,
            d.platform,
            &d.chat,
            &d.thread,
            c.character,
        )
        .await?;
        let key = format!("agent-run:{}", c.run);
        insert_outbox(&mut tx, c.outbox_id, conversation, &key, c.text)
            .await?
            .ok_or(StoreError::NotFound("run's conversation"))?;
        tx.commit().await?;
        Ok(true)
    }

    /// Where the agent's event triggers have read up to. A new cursor
    /// starts before the events of the last `horizon`: an agent reacts to
    /// what happened shortly before it first ran, not to all history.
    pub async fn trigger_cursor(
        &self,
        character: &str,
        horizon: Duration,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query_scalar!(
            "SELECT position FROM trigger_cursors WHERE tenant_id = $1 AND character = $2",
            self.tenant as _,
            character
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(position) = existing {
            return Ok(position);
        }
        // Only a new cursor looks back over the horizon (a cost that grows
        // with the events in it, so not on every tick).
        let position = sqlx::query_scalar!(
            r#"WITH inserted AS (
                INSERT INTO trigger_cursors (tenant_id, character, position)
                SELECT $1, $2, coalesce(max(global_position), 0) FROM events
                WHERE tenant_id = $1 AND recorded_at < now() - $3::bigint * interval '1 millisecond'
                ON CONFLICT (tenant_id, character) DO NOTHING RETURNING position)
             SELECT position AS "position!" FROM inserted UNION ALL
             SELECT position FROM trigger_cursors WHERE tenant_id = $1 AND character = $2 LIMIT 1"#,
            self.tenant as _,
            character,
            i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX),
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Events after `position` whose type is one of the event `names`
    /// (`proposal.review_requested`) in any version, and that have no run
    /// under `key_prefix || event id` yet, oldest first. A caller that must
    /// tell versions apart checks [`crate::event::event_type_matches`]: the
    /// look-up also matches a non-numeric version suffix.
    ///
    /// The run check reads one index entry per event. Written plainly, it
    /// read all of the tenant's runs on every tick: row-level security keeps
    /// a comparison with a computed key (`||` is not leakproof) out of the
    /// index condition, and `NOT EXISTS` is planned as an anti-join over the
    /// whole table. A key computed in a sub-select is a parameter of the
    /// look-up instead.
    pub async fn untriggered_events(
        &self,
        position: i64,
        names: &[&str],
        key_prefix: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.begin().await?;
        let patterns: Vec<String> = names.iter().map(|n| event_type_pattern(n)).collect();
        let events = sqlx::query_as!(
            StoredEvent,
            "SELECT e.id, e.stream, e.version, e.global_position, e.type AS type_name, \
             e.actor_kind, e.actor_id, e.payload, e.correlation_id, e.trace_id, e.occurred_at \
             FROM events e \
             WHERE e.tenant_id = $1 AND e.global_position > $2 AND e.type LIKE ANY($3) \
             AND (SELECT r.id FROM agent_runs r \
                 WHERE r.tenant_id = $1 AND r.dedupe_key = (SELECT $4 || e.id::text)) IS NULL \
             ORDER BY e.global_position LIMIT $5",
            self.tenant as _,
            position,
            &patterns,
            key_prefix,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Moves the agent's cursor up to the first event recorded less than
    /// `settle` ago (or to the newest event when there is none): a
    /// transaction still open may commit an event with a lower position
    /// than one already visible, so the newest stretch is read again.
    /// `up_to` caps the move (the last event read when a batch was full).
    /// Only the events between the cursor and that first one are scanned.
    pub async fn advance_trigger_cursor(
        &self,
        character: &str,
        settle: Duration,
        up_to: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query!(
            "UPDATE trigger_cursors t SET position = greatest(t.position, least(coalesce( \
                (SELECT e.global_position - 1 FROM events e WHERE e.tenant_id = $1 \
                 AND e.global_position > t.position \
                 AND e.recorded_at >= now() - $3::bigint * interval '1 millisecond' \
                 ORDER BY e.global_position LIMIT 1), \
                (SELECT max(e.global_position) FROM events e WHERE e.tenant_id = $1), \
                t.position), \
                coalesce($4, 9223372036854775807))) \
             WHERE t.tenant_id = $1 AND t.character = $2",
            self.tenant as _,
            character,
            i64::try_from(settle.as_millis()).unwrap_or(i64::MAX),
            up_to
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl TenantStore {
    /// The characters the tenant routes a concrete channel to: the agents
    /// whose schedules and channel posts it runs.
    pub async fn routed_characters(&self) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let names = sqlx::query_scalar!(
            "SELECT DISTINCT character FROM tenant_routes \
             WHERE tenant_id = $1 AND channel <> '*' ORDER BY 1",
            self.tenant as _
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(names)
    }

    /// Where an agent posts what no chat asked for: the first concrete
    /// channel the tenant routes to it.
    pub async fn agent_channel(
        &self,
        character: &str,
    ) -> Result<Option<RunDestination>, StoreError> {
        let mut tx = self.begin().await?;
        let destination = sqlx::query_as!(
            RunDestination,
            r#"SELECT platform AS "platform: Platform", channel AS chat, '' AS "thread!"
               FROM tenant_routes WHERE tenant_id = $1 AND character = $2 AND channel <> '*'
               ORDER BY platform, channel LIMIT 1"#,
            self.tenant as _,
            character
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(destination)
    }
}

impl TenantStore {
    /// Ends a run that posts nothing: marks it finished and appends its
    /// event; `false` when it was finished already.
    pub async fn complete_agent_run_silently(
        &self,
        run: AgentRunId,
        stream: &str,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !finish_run(&mut tx, run).await? {
            return Ok(false);
        }
        append(&mut tx, stream, 0, std::slice::from_ref(event)).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Marks run `id` finished; `false` when it was finished already.
async fn finish_run(conn: &mut PgConnection, id: AgentRunId) -> Result<bool, StoreError> {
    let finished = sqlx::query!(
        "UPDATE agent_runs SET finished_at = now() WHERE id = $1 AND finished_at IS NULL",
        id as _
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(finished == 1)
}

/// A SQL `LIKE` pattern (default escape character `\`) for the types of
/// event `name` in any version: `automate\_e.proposal.review\_requested.v%`.
/// `%`, `_` and `\` in the name are escaped, so they match literally.
fn event_type_pattern(name: &str) -> String {
    let mut pattern = String::new();
    for c in crate::ids::EVENT_TYPE_PREFIX.chars().chain(name.chars()) {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(".v%");
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_patterns_escape_like_wildcards() {
        assert_eq!(
            event_type_pattern("proposal.review_requested"),
            r"automate\_e.proposal.review\_requested.v%"
        );
        assert_eq!(event_type_pattern("a%b.c\\d"), r"automate\_e.a\%b.c\\d.v%");
    }
}
