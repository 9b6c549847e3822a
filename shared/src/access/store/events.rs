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

/// Appends `events` to `stream`, whose last version must be `expected`, in
/// one statement; returns the stream's new version. Events whose dedupe key
/// is already in the log are skipped (and take no version).
pub(super) async fn append(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    let seen = if events.iter().any(|e| e.dedupe_key.is_some()) {
        Seen::Skip
    } else {
        Seen::Refuse
    };
    insert(conn, stream, expected, events, seen, None).await
}

/// Like [`append`], for events the caller knows are not in the log (its own
/// check in the same transaction rules a repeat out, such as a row it just
/// flipped from unprocessed): an event whose dedupe key is there fails the
/// append ([`StoreError::AlreadyRecorded`]) instead of being skipped.
///
/// Skipping needs a look-up per event in the statement, and Postgres then
/// plans that statement anew on every call (0.25 ms): its cached plan
/// assumes ten events where a turn passes one or two, so it looks costlier
/// than a fresh one. Without it the cached plan is used.
pub(super) async fn append_new(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    insert(conn, stream, expected, events, Seen::Refuse, None).await
}

/// Like [`append_new`], in the same statement as `gate`, and only when the
/// gate returns a row; `None` when it returned none (nothing appended).
/// `events` must not be empty: without events there is no statement, and
/// the gate does not run either.
pub(super) async fn append_new_gated(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
    gate: Gate<'_>,
) -> Result<Option<i64>, StoreError> {
    let version = insert(conn, stream, expected, events, Seen::Refuse, Some(gate)).await?;
    Ok((version != expected).then_some(version))
}

/// What an append does with an event whose dedupe key is already in the log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Leaves it out (it takes no version).
    Skip,
    /// Fails the append (the unique key refuses it).
    Refuse,
}

/// A data-modifying statement that gates an append made in the same
/// statement: its `RETURNING` rows are the gate, and without one nothing is
/// appended. Its parameters are numbered from `$15`, after the append's.
pub(super) struct Gate<'a> {
    /// The statement, `… RETURNING …`.
    pub sql: &'static str,
    /// Binds its parameters, in order.
    pub bind: Box<dyn for<'q> FnOnce(EventsQuery<'q>) -> EventsQuery<'q> + Send + 'a>,
}

/// The query of an append (returning the versions written).
pub(super) type EventsQuery<'a> =
    sqlx::query::QueryScalar<'a, sqlx::Postgres, i64, sqlx::postgres::PgArguments>;

/// The one statement of [`append`], [`append_new`] and [`append_new_gated`].
async fn insert(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
    seen: Seen,
    gate: Option<Gate<'_>>,
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(expected);
    }
    fn column<'a, T>(events: &'a [NewEvent], field: impl Fn(&'a NewEvent) -> T) -> Vec<T> {
        events.iter().map(field).collect()
    }
    let ids = column(events, |_| EventId::new_v7());
    let tenants = column(events, |e| e.tenant_id);
    let types = column(events, |e| e.type_name);
    let occurred = column(events, |e| e.occurred_at);
    let actor_kinds = column(events, |e| e.actor.kind.as_str());
    let actor_ids = column(events, |e| e.actor.id.as_str());
    let payloads = column(events, |e| &e.payload);
    let dedupe_keys = column(events, |e| e.dedupe_key.as_deref());
    let correlations = column(events, |e| e.correlation_id);
    let causations = column(events, |e| e.causation_id);
    let trace_ids = column(events, |e| e.trace_id.as_deref());
    let sources = column(events, |e| e.source);
    let mut conditions = Vec::new();
    // Else a plain insert: `ON CONFLICT` costs a speculative insertion per row.
    let on_conflict = if seen == Seen::Skip {
        conditions.push(
            "(n.dedupe_key IS NULL OR NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.dedupe_key = n.dedupe_key))",
        );
        "ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
    } else {
        ""
    };
    let with_gate = match &gate {
        Some(gate) => {
            conditions.push("EXISTS (SELECT 1 FROM gate)");
            format!("WITH gate AS ({}) ", gate.sql)
        }
        None => String::new(),
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "{with_gate}INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind, \
         actor_id, payload_schema, payload, dedupe_key, correlation_id, causation_id, trace_id, source) \
         SELECT n.id, n.tenant_id, $1, $2 + row_number() OVER (ORDER BY n.ord), n.type, \
         n.occurred_at, n.actor_kind, n.actor_id, 'urn:automate-e:schema:' || n.type, n.payload, \
         n.dedupe_key, n.correlation_id, n.causation_id, n.trace_id, n.source \
         FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], \
         $9::jsonb[], $10::text[], $11::uuid[], $12::uuid[], $13::text[], $14::text[]) WITH ORDINALITY \
         AS n (id, tenant_id, type, occurred_at, actor_kind, actor_id, payload, dedupe_key, \
         correlation_id, causation_id, trace_id, source, ord) \
         {filter} ORDER BY n.ord {on_conflict} RETURNING version"
    );
    let query = sqlx::query_scalar::<_, i64>(&sql)
        .bind(stream)
        .bind(expected)
        .bind(&ids)
        .bind(&tenants)
        .bind(&types)
        .bind(&occurred)
        .bind(&actor_kinds)
        .bind(&actor_ids)
        .bind(&payloads)
        .bind(&dedupe_keys)
        .bind(&correlations)
        .bind(&causations)
        .bind(&trace_ids)
        .bind(&sources);
    let query = match gate {
        Some(gate) => (gate.bind)(query),
        None => query,
    };
    let versions = query.fetch_all(&mut *conn).await.map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key") => {
            StoreError::VersionConflict {
                stream: stream.to_owned(),
                expected,
            }
        }
        sqlx::Error::Database(db) if db.constraint() == Some("events_dedupe_key_key") => {
            StoreError::AlreadyRecorded {
                stream: stream.to_owned(),
            }
        }
        _ => StoreError::Database(e),
    })?;
    Ok(versions.into_iter().max().unwrap_or(expected))
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

    /// Appends events known to be new; see [`append_new`].
    pub async fn append_new(
        &mut self,
        stream: &str,
        expected: i64,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        append_new(self, stream, expected, events).await
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

    /// The end of a stream, in one statement whose cost does not grow with
    /// the stream: its newest `limit` events of the given types (oldest
    /// first; none when `types` is empty, unlike [`Self::read_stream`]), the
    /// events of the stream whose dedupe key is one of `keys` (found through
    /// the key's index wherever they are), and its last version (0 when
    /// empty).
    pub async fn read_stream_tail(
        &mut self,
        stream: &str,
        types: &[&str],
        limit: usize,
        keys: &[String],
    ) -> Result<StreamTail, StoreError> {
        // The newest rows read backwards along (stream, version); the last
        // event comes along whatever its type, for the version.
        let rows = sqlx::query_as::<_, TailRow>(&format!(
            "(SELECT {EVENT_COLUMNS}, false AS keyed FROM events WHERE stream = $1 \
               AND (type = ANY($2) OR version = (SELECT max(version) FROM events WHERE stream = $1)) \
               ORDER BY version DESC LIMIT $3) \
             UNION ALL \
             SELECT {EVENT_COLUMNS}, true FROM events \
             WHERE dedupe_key = ANY($4) AND stream = $1"
        ))
        .bind(stream)
        .bind(types)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .bind(keys)
        .fetch_all(&mut **self)
        .await?;
        let mut tail = StreamTail::default();
        for row in rows {
            tail.version = tail.version.max(row.event.version);
            if row.keyed {
                tail.keyed.push(row.event);
            } else if types.contains(&row.event.type_name.as_str()) {
                tail.events.push(row.event);
            }
        }
        tail.events.sort_by_key(|e| std::cmp::Reverse(e.version));
        tail.events.truncate(limit);
        tail.events.reverse();
        tail.keyed.sort_by_key(|e| e.version);
        Ok(tail)
    }
}

/// The end of a stream; see [`TenantTx::read_stream_tail`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamTail {
    /// The newest events of the types asked for, oldest first.
    pub events: Vec<StoredEvent>,
    /// The events with one of the dedupe keys asked for, oldest first.
    pub keyed: Vec<StoredEvent>,
    /// The stream's last version (0 when empty).
    pub version: i64,
}

/// A row of [`TenantTx::read_stream_tail`].
#[derive(sqlx::FromRow)]
struct TailRow {
    #[sqlx(flatten)]
    event: StoredEvent,
    keyed: bool,
}

in_own_transaction! {
    /// Appends events known to be new; see [`append_new`].
    fn append_new(&self, stream: &str, expected: i64, events: &[NewEvent]) -> i64;
    /// The last version of a stream (0 when empty).
    fn stream_version(&self, stream: &str) -> i64;
    /// The end of a stream; see [`TenantTx::read_stream_tail`].
    fn read_stream_tail(&self, stream: &str, types: &[&str], limit: usize, keys: &[String]) -> StreamTail;
    /// Events of a stream of the given types, oldest first.
    fn read_stream(&self, stream: &str, types: &[&str]) -> Vec<StoredEvent>;
}
