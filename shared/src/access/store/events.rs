//! The append-only event log with optimistic concurrency per stream.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::event::Actor;
use crate::ids::{EventId, TenantId};

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// `automate_e.<context>.<action>.v<N>`.
    pub type_name: &'static str,
    /// The facts.
    pub payload: Value,
    /// Who caused it.
    pub actor: Actor,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Makes the append a no-op when an event with this key exists.
    pub dedupe_key: Option<String>,
    /// The id correlating all events of one request or turn.
    pub correlation_id: Option<uuid::Uuid>,
    /// The event or message that caused this one.
    pub causation_id: Option<uuid::Uuid>,
    /// W3C trace id.
    pub trace_id: Option<String>,
    /// The component that wrote it (`worker`, `gateway`).
    pub source: &'static str,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    /// Event id.
    pub id: uuid::Uuid,
    /// Stream name.
    pub stream: String,
    /// Version within the stream.
    pub version: i64,
    /// Position in the whole log.
    pub global_position: i64,
    /// Type name.
    #[sqlx(rename = "type")]
    pub type_name: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// The facts.
    pub payload: Value,
    /// Correlation id.
    pub correlation_id: Option<uuid::Uuid>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// Columns of [`StoredEvent`].
pub(super) const EVENT_COLUMNS: &str = "id, stream, version, global_position, type, actor_kind, \
     actor_id, payload, correlation_id, trace_id, occurred_at";

/// Appends `events` to `stream`, whose last version must be `expected`;
/// returns the stream's new version. Events whose dedupe key is already in
/// the log are skipped.
pub(super) async fn append(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    let mut version = expected;
    for event in events {
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind, \
             actor_id, payload_schema, payload, dedupe_key, correlation_id, causation_id, trace_id, source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING version",
        )
        .bind(EventId::new_v7())
        .bind(event.tenant_id)
        .bind(stream)
        .bind(version + 1)
        .bind(event.type_name)
        .bind(event.occurred_at)
        .bind(event.actor.kind.as_str())
        .bind(&event.actor.id)
        .bind(format!("urn:automate-e:schema:{}", event.type_name))
        .bind(&event.payload)
        .bind(&event.dedupe_key)
        .bind(event.correlation_id)
        .bind(event.causation_id)
        .bind(&event.trace_id)
        .bind(event.source)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key") => {
                StoreError::VersionConflict {
                    stream: stream.to_owned(),
                    expected: version,
                }
            }
            _ => StoreError::Database(e),
        })?;
        if inserted.is_some() {
            version += 1;
        }
    }
    Ok(version)
}

impl TenantStore {
    /// Appends events to a stream at the expected version; see [`append`].
    pub async fn append(
        &self,
        stream: &str,
        expected: i64,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let version = tx.append(stream, expected, events).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Appends like [`Self::append`], only while `lease` is still held.
    pub async fn append_fenced(
        &self,
        lease: &super::Lease,
        stream: &str,
        expected: i64,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_fenced(lease).await?;
        let version = tx.append(stream, expected, events).await?;
        tx.commit().await?;
        Ok(version)
    }
}

impl TenantTx {
    /// Appends events to a stream at the expected version; see [`append`].
    pub async fn append(
        &mut self,
        stream: &str,
        expected: i64,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        append(self, stream, expected, events).await
    }

    /// The last version of a stream (0 when empty).
    pub async fn stream_version(&mut self, stream: &str) -> Result<i64, StoreError> {
        let version = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(version) FROM events WHERE stream = $1",
        )
        .bind(stream)
        .fetch_one(&mut **self)
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// Events of a stream of the given types, oldest first.
    pub async fn read_stream(
        &mut self,
        stream: &str,
        types: &[&str],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        let events = sqlx::query_as::<_, StoredEvent>(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream = $1 AND (cardinality($2::text[]) = 0 OR type = ANY($2)) ORDER BY version"
        ))
        .bind(stream)
        .bind(&types)
        .fetch_all(&mut **self)
        .await?;
        Ok(events)
    }
}

in_own_transaction! {
    /// The last version of a stream (0 when empty).
    fn stream_version(&self, stream: &str) -> i64;
    /// Events of a stream of the given types, oldest first.
    fn read_stream(&self, stream: &str, types: &[&str]) -> Vec<StoredEvent>;
}
