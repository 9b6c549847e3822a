//! The append-only event log with optimistic concurrency per stream.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::{StoreError, TenantStore, TenantTx, in_own_transaction};
use crate::engine::text::{json_holds_nul, strip_nul};
use crate::event::Actor;
use crate::ids::{EventId, TenantId};

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
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
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Event id.
    pub id: uuid::Uuid,
    /// Stream name.
    pub stream: String,
    /// Version within the stream.
    pub version: i64,
    /// Position in the whole log.
    pub global_position: i64,
    pub type_name: String,
    pub actor_kind: String,
    pub actor_id: String,
    /// The facts.
    pub payload: Value,
    pub correlation_id: Option<uuid::Uuid>,
    pub trace_id: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// Appends `events` to `stream`, whose last version must be `expected`, in
/// one statement; returns the stream's new version. Events whose dedupe key
/// is already in the log are skipped (and take no version).
pub(super) async fn append(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    if events.iter().all(|e| e.dedupe_key.is_none()) {
        return append_new(conn, stream, expected, events).await;
    }
    let events = storable(events);
    let c = Columns::of(&events);
    // Skipping needs a look-up per event and `ON CONFLICT`, a speculative
    // insertion per row: only appends with keys pay for them.
    let appended = insert_events!(
        "WHERE (n.dedupe_key IS NULL OR NOT EXISTS \
         (SELECT 1 FROM events e WHERE e.tenant_id = n.tenant_id AND e.dedupe_key = n.dedupe_key))",
        "ON CONFLICT (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING",
        stream,
        expected,
        c
    )
    .fetch_all(&mut *conn)
    .await;
    newest(appended, stream, expected)
}

/// Like [`append`], for events the caller knows are not in the log (its own
/// check in the same transaction rules a repeat out, such as a row it just
/// flipped from unprocessed): an event whose dedupe key is there fails the
/// append ([`StoreError::AlreadyRecorded`]) instead of being skipped. Without
/// the per-event look-up Postgres keeps its cached plan of the statement.
pub(super) async fn append_new(
    conn: &mut PgConnection,
    stream: &str,
    expected: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(expected);
    }
    let events = storable(events);
    let c = Columns::of(&events);
    let appended = insert_events!("", "", stream, expected, c)
        .fetch_all(&mut *conn)
        .await;
    newest(appended, stream, expected)
}

/// The events with every NUL character removed from their payloads (a model
/// answer or an API's reply may hold one; `jsonb` refuses it); borrowed when
/// there is none, as nearly always.
pub(super) fn storable(events: &[NewEvent]) -> Cow<'_, [NewEvent]> {
    if !events.iter().any(|e| json_holds_nul(&e.payload)) {
        return Cow::Borrowed(events);
    }
    let mut events = events.to_vec();
    events.iter_mut().for_each(|e| strip_nul(&mut e.payload));
    Cow::Owned(events)
}

/// The envelope fields of events to append, column by column (the append
/// unnests them: one statement for any number of events).
pub(super) struct Columns<'a> {
    pub(super) ids: Vec<uuid::Uuid>,
    pub(super) tenants: Vec<uuid::Uuid>,
    pub(super) types: Vec<&'a str>,
    pub(super) occurred: Vec<DateTime<Utc>>,
    pub(super) actor_kinds: Vec<&'a str>,
    pub(super) actor_ids: Vec<&'a str>,
    pub(super) payloads: Vec<&'a Value>,
    pub(super) dedupe_keys: Vec<Option<&'a str>>,
    pub(super) correlations: Vec<Option<uuid::Uuid>>,
    pub(super) causations: Vec<Option<uuid::Uuid>>,
    pub(super) trace_ids: Vec<Option<&'a str>>,
    pub(super) sources: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(events: &'a [NewEvent]) -> Self {
        fn column<'a, T>(events: &'a [NewEvent], field: impl Fn(&'a NewEvent) -> T) -> Vec<T> {
            events.iter().map(field).collect()
        }
        Self {
            ids: column(events, |_| EventId::new_v7().0),
            tenants: column(events, |e| e.tenant_id.0),
            types: column(events, |e| e.type_name),
            occurred: column(events, |e| e.occurred_at),
            actor_kinds: column(events, |e| e.actor.kind.as_str()),
            actor_ids: column(events, |e| e.actor.id.as_str()),
            payloads: column(events, |e| &e.payload),
            dedupe_keys: column(events, |e| e.dedupe_key.as_deref()),
            correlations: column(events, |e| e.correlation_id),
            causations: column(events, |e| e.causation_id),
            trace_ids: column(events, |e| e.trace_id.as_deref()),
            sources: column(events, |e| e.source),
        }
    }
}

/// The one append statement, in the forms [`append`] and [`append_new`]
/// need: a filter of the events and a conflict clause, as literals (the
/// query is checked at compile time).
macro_rules! insert_events {
    ($filter:literal, $conflict:literal, $stream:expr, $expected:expr, $c:expr) => {
        sqlx::query_scalar!(
            "INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, \
                   actor_kind, actor_id, payload_schema, payload, dedupe_key, correlation_id, \
                   causation_id, trace_id, source) \
                   SELECT n.id, n.tenant_id, $1, $2 + row_number() OVER (ORDER BY n.ord), n.type, \
                   n.occurred_at, n.actor_kind, n.actor_id, 'urn:automate-e:schema:' || n.type, \
                   n.payload, n.dedupe_key, n.correlation_id, n.causation_id, n.trace_id, n.source \
                   FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::text[], \
                   $8::text[], $9::jsonb[], $10::text[], $11::uuid[], $12::uuid[], $13::text[], \
                   $14::text[]) WITH ORDINALITY AS n (id, tenant_id, type, occurred_at, actor_kind, \
                   actor_id, payload, dedupe_key, correlation_id, causation_id, trace_id, source, ord) "
                + $filter
                + " ORDER BY n.ord "
                + $conflict
                + " RETURNING version",
            $stream,
            $expected,
            &$c.ids,
            &$c.tenants,
            &$c.types as _,
            &$c.occurred,
            &$c.actor_kinds as _,
            &$c.actor_ids as _,
            &$c.payloads as _,
            &$c.dedupe_keys as _,
            &$c.correlations as _,
            &$c.causations as _,
            &$c.trace_ids as _,
            &$c.sources as _
        )
    };
}
use insert_events;

/// The stream's version after an append: the highest version written, or
/// `expected` when nothing was; the append's unique keys become their
/// errors.
fn newest(
    appended: Result<Vec<i64>, sqlx::Error>,
    stream: &str,
    expected: i64,
) -> Result<i64, StoreError> {
    let versions = appended.map_err(|e| append_error(e, stream, expected))?;
    Ok(versions.into_iter().max().unwrap_or(expected))
}

/// An append's error: its unique keys' as their [`StoreError`]s.
pub(super) fn append_error(e: sqlx::Error, stream: &str, expected: i64) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key") => {
            StoreError::VersionConflict {
                stream: stream.to_owned(),
                expected,
            }
        }
        sqlx::Error::Database(db) if db.constraint() == Some("events_tenant_dedupe_key") => {
            StoreError::AlreadyRecorded {
                stream: stream.to_owned(),
            }
        }
        _ => StoreError::Database(e),
    }
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
        let version =
            sqlx::query_scalar!("SELECT max(version) FROM events WHERE stream = $1", stream)
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
        let events = sqlx::query_as!(
            StoredEvent,
            "SELECT id, stream, version, global_position, type AS type_name, actor_kind, actor_id, \
             payload, correlation_id, trace_id, occurred_at FROM events \
             WHERE stream = $1 AND (cardinality($2::text[]) = 0 OR type = ANY($2)) ORDER BY version",
            stream,
            types as _
        )
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
        let rows = sqlx::query!(
            r#"(SELECT id AS "id!", stream AS "stream!", version AS "version!",
                 global_position AS "global_position!", type AS "type!", actor_kind AS "actor_kind!",
                 actor_id AS "actor_id!", payload AS "payload!", correlation_id, trace_id,
                 occurred_at AS "occurred_at!", false AS "keyed!" FROM events WHERE stream = $1
               AND (type = ANY($2) OR version = (SELECT max(version) FROM events WHERE stream = $1))
               ORDER BY version DESC LIMIT $3)
             UNION ALL
             SELECT id, stream, version, global_position, type, actor_kind, actor_id, payload,
                 correlation_id, trace_id, occurred_at, true FROM events
             WHERE dedupe_key = ANY($4) AND stream = $1"#,
            stream,
            types as _,
            i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1),
            keys
        )
        .fetch_all(&mut **self)
        .await?;
        let rows = rows.into_iter().map(|row| {
            let event = StoredEvent {
                id: row.id,
                stream: row.stream,
                version: row.version,
                global_position: row.global_position,
                type_name: row.r#type,
                actor_kind: row.actor_kind,
                actor_id: row.actor_id,
                payload: row.payload,
                correlation_id: row.correlation_id,
                trace_id: row.trace_id,
                occurred_at: row.occurred_at,
            };
            (event, row.keyed)
        });
        Ok(StreamTail::from_rows(rows, types, limit))
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

impl StreamTail {
    /// The tail of `rows` read by [`TenantTx::read_stream_tail`]'s query
    /// (each event with whether it was found by its key), for the newest
    /// `limit` events of `types`.
    pub(super) fn from_rows(
        rows: impl IntoIterator<Item = (StoredEvent, bool)>,
        types: &[&str],
        limit: usize,
    ) -> Self {
        let mut tail = Self::default();
        for (event, keyed) in rows {
            tail.version = tail.version.max(event.version);
            if keyed {
                tail.keyed.push(event);
            } else if types.contains(&event.type_name.as_str()) {
                tail.events.push(event);
            }
        }
        tail.events.sort_by_key(|e| std::cmp::Reverse(e.version));
        tail.events.truncate(limit);
        tail.events.reverse();
        tail.keyed.sort_by_key(|e| e.version);
        tail
    }
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
