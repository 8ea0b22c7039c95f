//! Reading: a stream forward or backward from a version, everything from a
//! global position, and snapshots.

use futures_util::TryStreamExt as _;
use rempart_db::with_pool;
use serde_json::{Map, Value};
use sqlx::Row as _;
use uuid::Uuid;

use super::{Checkpoint, EventStore, Metadata, RecordedEvent, StoreError, stored_hash};

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the given version up.
    Forward,
    /// From the given version down.
    Backward,
}

/// A stream's state at a version, saved so a long stream need not be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream version the state includes.
    pub version: u64,
    /// The state.
    pub state: Value,
    /// When it was taken (ms since the Unix epoch).
    pub taken_at: i64,
}

pub(crate) const SELECT_EVENTS: &str = "SELECT global_position, event_id, stream_id, stream_version, event_type, payload, \
     store_id, register_id, training, metadata, clock, recorded_at, checkpoint, chain_seq, chain_hash, signature FROM events";

/// Decodes one row of [`SELECT_EVENTS`] (either backend's row type).
macro_rules! decode_event {
    ($row:expr, $err:expr) => {{
        let r = $row;
        let position: i64 = r.try_get(0).map_err($err)?;
        let at = position as u64;
        let corrupt = |what: String| StoreError::Corrupt { position: at, what };
        // Borrowed from the row: the JSON is parsed straight from it, not
        // copied into a `String` first (two allocations per event less).
        let payload: &str = r.try_get(5).map_err($err)?;
        let metadata: &str = r.try_get(9).map_err($err)?;
        let checkpoint: Option<&str> = r.try_get(12).map_err($err)?;
        let hash: &[u8] = r.try_get(14).map_err($err)?;
        RecordedEvent {
            position: at,
            event_id: r.try_get::<Uuid, _>(1).map_err($err)?,
            stream_id: r.try_get(2).map_err($err)?,
            version: r.try_get::<i64, _>(3).map_err($err)? as u64,
            event_type: r.try_get(4).map_err($err)?,
            payload: serde_json::from_str(payload)
                .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?,
            metadata: Metadata {
                store_id: r.try_get(6).map_err($err)?,
                register_id: r.try_get(7).map_err($err)?,
                training: r.try_get(8).map_err($err)?,
                extra: serde_json::from_str::<Map<String, Value>>(metadata)
                    .map_err(|e| corrupt(format!("metadata is not a JSON object: {e}")))?,
            },
            clock: r.try_get(10).map_err($err)?,
            recorded_at: r.try_get(11).map_err($err)?,
            checkpoint: match checkpoint {
                None => None,
                Some(c) => Some(
                    Checkpoint::parse(c)
                        .ok_or_else(|| corrupt(format!("unknown checkpoint kind {c:?}")))?,
                ),
            },
            chain_seq: r.try_get::<i64, _>(13).map_err($err)? as u64,
            chain_hash: stored_hash(hash, at)?,
            signature: r.try_get(15).map_err($err)?,
        }
    }};
}

/// One event as a replay reads it: the columns a fold needs, borrowed from
/// the row (no copy), the payload and metadata as their stored JSON text so
/// the reader parses them straight into its own types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Its place in the whole store.
    pub position: u64,
    /// Its stream.
    pub stream_id: &'a str,
    /// Its version in the stream.
    pub version: u64,
    /// Its type.
    pub event_type: &'a str,
    /// Its data, JSON text exactly as stored (not checked here).
    pub payload: &'a str,
    /// The shop of the register that wrote it.
    pub store_id: &'a str,
    /// The register that wrote it.
    pub register_id: &'a str,
    /// A training-mode record.
    pub training: bool,
    /// The rest of its metadata, JSON text exactly as stored (not checked here).
    pub metadata: &'a str,
}

/// The columns of an [`EventRef`]: a replay reads 9 of the 16 columns, and
/// the driver copies each column it returns.
const SELECT_REPLAY: &str = "SELECT global_position, stream_id, stream_version, event_type, payload, \
     store_id, register_id, training, metadata FROM events";

/// Borrows one row of [`SELECT_REPLAY`] (either backend's row type).
macro_rules! event_ref {
    ($row:expr, $err:expr) => {{
        let r = $row;
        EventRef {
            position: r.try_get::<i64, _>(0).map_err($err)? as u64,
            stream_id: r.try_get(1).map_err($err)?,
            version: r.try_get::<i64, _>(2).map_err($err)? as u64,
            event_type: r.try_get(3).map_err($err)?,
            payload: r.try_get(4).map_err($err)?,
            store_id: r.try_get(5).map_err($err)?,
            register_id: r.try_get(6).map_err($err)?,
            training: r.try_get(7).map_err($err)?,
            metadata: r.try_get(8).map_err($err)?,
        }
    }};
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl EventStore {
    /// Up to `max` events of `stream`: from version `from` up (`Forward`),
    /// or from `from` down (`Backward`; `u64::MAX` starts at the end).
    pub async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = match direction {
            Direction::Forward => format!(
                "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
            ),
            Direction::Backward => format!(
                "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version <= $2 ORDER BY stream_version DESC LIMIT $3"
            ),
        };
        let err = |e| self.err(e);
        with_pool!(self.db(), pool => {
            let rows = sqlx::query(&sql).bind(stream).bind(clamp(from)).bind(i64::from(max))
                .fetch_all(pool).await.map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(decode_event!(row, err));
            }
            Ok(out)
        })
    }

    /// Up to `max` events of the whole store, from global position `from` up.
    pub async fn read_all(&self, from: u64, max: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE global_position >= $1 ORDER BY global_position LIMIT $2"
        );
        let err = |e| self.err(e);
        with_pool!(self.db(), pool => {
            let rows = sqlx::query(&sql).bind(clamp(from)).bind(i64::from(max))
                .fetch_all(pool).await.map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(decode_event!(row, err));
            }
            Ok(out)
        })
    }

    /// Replays up to `max` events of the whole store from global position
    /// `from` up, handing each to `visit` borrowed from its row; the first
    /// error `visit` returns stops the replay and is returned. Gives the
    /// position of the last event visited (`None`: none left), to read the
    /// next page from. What [`EventStore::read_all`] gives, minus the copies:
    /// a fold decodes the payload text into its own types (e.g.
    /// [`crate::envelope::decode_ref`]) instead of a JSON tree.
    pub async fn replay_all<E: From<StoreError>>(
        &self,
        from: u64,
        max: u32,
        mut visit: impl FnMut(EventRef<'_>) -> Result<(), E>,
    ) -> Result<Option<u64>, E> {
        let sql = format!(
            "{SELECT_REPLAY} WHERE global_position >= $1 ORDER BY global_position LIMIT $2"
        );
        let err = |e| E::from(self.err(e));
        with_pool!(self.db(), pool => {
            let mut rows = sqlx::query(&sql).bind(clamp(from)).bind(i64::from(max)).fetch(pool);
            let mut last = None;
            while let Some(row) = rows.try_next().await.map_err(err)? {
                let event = event_ref!(&row, err);
                last = Some(event.position);
                visit(event)?;
            }
            Ok(last)
        })
    }

    /// Up to `max` events of `register`'s own chain after seq `after`, in
    /// chain order: what a register pushes to central.
    pub async fn read_chain(
        &self,
        register: &str,
        after: u64,
        max: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE register_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3"
        );
        let err = |e| self.err(e);
        with_pool!(self.db(), pool => {
            let rows = sqlx::query(&sql).bind(register).bind(clamp(after)).bind(i64::from(max))
                .fetch_all(pool).await.map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(decode_event!(row, err));
            }
            Ok(out)
        })
    }

    /// Up to `max` events of shop `store_id` after global position `after`,
    /// in position order: what central sends a register of that shop.
    pub async fn read_shop(
        &self,
        store_id: &str,
        after: u64,
        max: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE store_id = $1 AND global_position > $2 ORDER BY global_position LIMIT $3"
        );
        let err = |e| self.err(e);
        with_pool!(self.db(), pool => {
            let rows = sqlx::query(&sql).bind(store_id).bind(clamp(after)).bind(i64::from(max))
                .fetch_all(pool).await.map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(decode_event!(row, err));
            }
            Ok(out)
        })
    }

    /// The stream's version (0: it does not exist).
    pub async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let err = |e| self.err(e);
        let v: i64 = with_pool!(self.db(), pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = $1")
                .bind(stream).fetch_one(pool).await.map_err(err)?
        });
        Ok(v as u64)
    }

    /// The last global position (0: the store is empty).
    pub async fn head_position(&self) -> Result<u64, StoreError> {
        let err = |e| self.err(e);
        let v: i64 = with_pool!(self.db(), pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(pool).await.map_err(err)?
        });
        Ok(v as u64)
    }

    /// The global position of the event with this id, if stored.
    pub async fn event_position(&self, id: Uuid) -> Result<Option<u64>, StoreError> {
        let err = |e| self.err(e);
        let v: Option<i64> = with_pool!(self.db(), pool => {
            sqlx::query_scalar("SELECT global_position FROM events WHERE event_id = $1")
                .bind(id).fetch_optional(pool).await.map_err(err)?
        });
        Ok(v.map(|p| p as u64))
    }

    /// Saves `state` as `stream`'s snapshot at `version`, replacing an older one.
    pub async fn save_snapshot(
        &self,
        stream: &str,
        version: u64,
        state: &Value,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let err = |e| self.err(e);
        with_pool!(self.db(), pool => {
            sqlx::query(
                "INSERT INTO event_snapshots (stream_id, stream_version, state, taken_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version,
                   state = excluded.state, taken_at = excluded.taken_at
                 WHERE excluded.stream_version >= event_snapshots.stream_version",
            )
            .bind(stream).bind(clamp(version)).bind(state.to_string()).bind(now)
            .execute(pool).await.map_err(err)?;
        });
        Ok(())
    }

    /// The latest snapshot of `stream`, if any: replay from `version + 1`.
    pub async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let err = |e| self.err(e);
        let row: Option<(i64, String, i64)> = with_pool!(self.db(), pool => {
            sqlx::query_as("SELECT stream_version, state, taken_at FROM event_snapshots WHERE stream_id = $1")
                .bind(stream).fetch_optional(pool).await.map_err(err)?
        });
        row.map(|(v, state, taken_at)| {
            Ok(Snapshot {
                version: v as u64,
                state: serde_json::from_str(&state).map_err(|e| StoreError::Corrupt {
                    position: 0,
                    what: format!("snapshot of {stream} is not JSON: {e}"),
                })?,
                taken_at,
            })
        })
        .transpose()
    }
}
