//! Appending: one transaction per batch, whatever its streams, so a batch
//! is all there or not there. Inside it: the expected versions are checked,
//! each event gets the next global position, stream version and chain link
//! of its register, checkpoints are signed, closures and archives go to the
//! journal, and the rows go in with multi-row INSERTs.

use std::collections::HashMap;
use std::fmt::Write as _;

use rempart_db::with_pool;

use super::{AppendResult, EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend};
use crate::chain::{EventFields, GENESIS, Hash};
use crate::clock::VectorClock;
use crate::journal::{TechnicalKind, jet_append};

/// One row ready for the INSERT.
struct Row<'a> {
    position: i64,
    event: &'a NewEvent,
    clock: Vec<u8>,
    stream_id: &'a str,
    version: i64,
    payload: String,
    metadata: String,
    recorded_at: i64,
    seq: i64,
    hash: Hash,
    signature: Option<Vec<u8>>,
}

const COLUMNS: usize = 16;
/// Rows per INSERT: 500 × 16 binds stays under both backends' limits.
const ROWS_PER_INSERT: usize = 500;

/// The INSERT of `rows` rows. On SQLite the placeholders are anonymous
/// `?`: sqlx asks SQLite each numbered `$N`'s name, a linear scan there, so
/// `$N` made binding quadratic in the row count (a third of an append).
fn insert_sql(rows: usize, sqlite: bool) -> String {
    let mut s = String::from(
        "INSERT INTO events (global_position, event_id, stream_id, stream_version, event_type, payload, \
         store_id, register_id, training, metadata, clock, recorded_at, checkpoint, chain_seq, chain_hash, signature) VALUES ",
    );
    for i in 0..rows {
        s.push_str(if i == 0 { "(" } else { ",(" });
        for j in 0..COLUMNS {
            if j > 0 {
                s.push(',');
            }
            if sqlite {
                s.push('?');
            } else {
                let _ = write!(s, "${}", i * COLUMNS + j + 1);
            }
        }
        s.push(')');
    }
    s
}

/// `$register`'s clock now, inside the write transaction `$tx`: its last
/// own event's clock merged with the clocks of every event of another
/// register stored after it (pulled from central).
macro_rules! own_clock {
    ($store:expr, $tx:ident, $err:expr, $register:expr) => {
        async {
            let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT global_position, clock FROM events WHERE register_id = $1 ORDER BY chain_seq DESC LIMIT 1",
            )
            .bind($register)
            .fetch_optional(&mut *$tx)
            .await
            .map_err($err)?;
            let (after, mut clock) = match last {
                Some((at, bytes)) if !bytes.is_empty() => (at, decode_clock(&bytes, at)?),
                Some((at, _)) => (at, VectorClock::new()),
                None => (0, VectorClock::new()),
            };
            let since: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT global_position, clock FROM events WHERE global_position > $1 AND register_id <> $2",
            )
            .bind(after)
            .bind($register)
            .fetch_all(&mut *$tx)
            .await
            .map_err($err)?;
            for (at, bytes) in since {
                if !bytes.is_empty() {
                    clock.merge_in(&decode_clock(&bytes, at)?);
                }
            }
            Ok::<VectorClock, StoreError>(clock)
        }
        .await
    };
}

fn decode_clock(bytes: &[u8], position: i64) -> Result<VectorClock, StoreError> {
    VectorClock::decode(bytes).map_err(|e| StoreError::Corrupt {
        position: position as u64,
        what: e.to_string(),
    })
}

/// A stored hash, or the corruption it is.
pub(crate) fn stored_hash(bytes: &[u8], position: u64) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        position,
        what: format!("chain hash of {} bytes, not 32", bytes.len()),
    })
}

fn validate(batch: &[StreamAppend]) -> Result<(), StoreError> {
    let invalid = |m: String| Err(StoreError::Invalid(m));
    if batch.is_empty() {
        return invalid("an empty batch; give at least one stream with one event".into());
    }
    for sa in batch {
        if sa.stream_id.is_empty() {
            return invalid("a stream id is empty".into());
        }
        if sa.events.is_empty() {
            return invalid(format!("no events for stream {}", sa.stream_id));
        }
        for e in &sa.events {
            if e.event_type.is_empty() {
                return invalid(format!(
                    "event {} on stream {} has no type",
                    e.event_id, sa.stream_id
                ));
            }
            if e.metadata.register_id.is_empty() || e.metadata.store_id.is_empty() {
                return invalid(format!(
                    "event {} on stream {} has no register id or store id in its metadata",
                    e.event_id, sa.stream_id
                ));
            }
            if e.signature.is_some() && e.checkpoint.is_none() {
                return invalid(format!(
                    "event {} carries a signature but is not a checkpoint; set its checkpoint kind",
                    e.event_id
                ));
            }
        }
    }
    Ok(())
}

impl EventStore {
    /// Appends `events` to `stream` if it is at the `expected` version, all
    /// or nothing; returns the new version and the events' positions.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let mut r = self
            .append_batch(vec![StreamAppend {
                stream_id: stream.to_owned(),
                expected,
                events,
            }])
            .await?;
        Ok(r.remove(0))
    }

    /// Appends to several streams in one transaction: every stream's
    /// expected version must hold, or nothing is written.
    pub async fn append_batch(
        &self,
        batch: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        validate(&batch)?;
        let now = self.now_ms();
        let err = |e| self.err(e);
        let results = with_pool!(self.db(), pool => {
            // One writer at a time: positions are gapless and in commit order.
            super::begin_write!(self, pool, conn, tx, err, "events");
            let mut position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(&mut *tx).await.map_err(err)?;
            let mut versions: HashMap<&str, i64> = HashMap::new();
            let mut heads: HashMap<&str, (i64, Hash)> = HashMap::new();
            // The clocks of this store's own registers, as of the batch so far.
            let mut clocks: HashMap<&str, VectorClock> = HashMap::new();
            let mut rows: Vec<Row<'_>> = Vec::with_capacity(batch.iter().map(|s| s.events.len()).sum());
            let mut results = Vec::with_capacity(batch.len());
            for sa in &batch {
                let current = match versions.get(sa.stream_id.as_str()) {
                    Some(v) => *v,
                    None => sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = $1")
                        .bind(&sa.stream_id).fetch_one(&mut *tx).await.map_err(err)?,
                };
                if !sa.expected.accepts(current as u64) {
                    return Err(StoreError::WrongExpectedVersion {
                        stream: sa.stream_id.clone(),
                        expected: sa.expected,
                        current: current as u64,
                    });
                }
                let mut version = current;
                for e in &sa.events {
                    let register = e.metadata.register_id.as_str();
                    let head = match heads.get(register) {
                        Some(h) => *h,
                        None => {
                            let last: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
                                "SELECT chain_seq, chain_hash, global_position FROM events WHERE register_id = $1 ORDER BY chain_seq DESC LIMIT 1")
                                .bind(register).fetch_optional(&mut *tx).await.map_err(err)?;
                            match last {
                                Some((seq, hash, at)) => (seq, stored_hash(&hash, at as u64)?),
                                None => (0, GENESIS),
                            }
                        }
                    };
                    position += 1;
                    version += 1;
                    let clock = match self.register_no(register) {
                        Some(no) if e.clock.is_empty() => {
                            let current = match clocks.remove(register) {
                                Some(c) => c,
                                None => own_clock!(self, tx, err, register)?,
                            };
                            let mut c = current;
                            c.tick(no).map_err(|x| StoreError::Invalid(x.to_string()))?;
                            let bytes = c.encode();
                            clocks.insert(register, c);
                            bytes
                        }
                        _ => {
                            // An event from elsewhere: the own clocks already
                            // loaded learn of it (the rest read it from the table).
                            if !clocks.is_empty() && !e.clock.is_empty() && self.register_no(register).is_none()
                                && let Ok(theirs) = VectorClock::decode(&e.clock) {
                                for c in clocks.values_mut() {
                                    c.merge_in(&theirs);
                                }
                            }
                            e.clock.clone()
                        }
                    };
                    let payload = e.payload.to_string();
                    let metadata = Value::Object(e.metadata.extra.clone()).to_string();
                    let recorded_at = e.recorded_at.unwrap_or(now);
                    let seq = head.0 + 1;
                    let hash = EventFields {
                        event_id: e.event_id.as_bytes(),
                        register_id: register,
                        chain_seq: seq,
                        stream_id: &sa.stream_id,
                        event_type: &e.event_type,
                        payload: &payload,
                        store_id: &e.metadata.store_id,
                        training: e.metadata.training,
                        metadata: &metadata,
                        clock: &clock,
                        recorded_at,
                        checkpoint: e.checkpoint.map_or("", |c| c.as_str()),
                    }
                    .link(&head.1);
                    if let Some((origin_seq, origin_hash)) = e.origin_link
                        && (origin_seq != seq as u64 || origin_hash != hash) {
                        return Err(StoreError::Invalid(format!(
                            "event {} is seq {origin_seq} of register {register}'s chain, and this store's chain of that register is at seq {}{}: \
                             send the register's events from seq {} on, unchanged",
                            e.event_id, head.0,
                            if origin_seq == seq as u64 { " with another hash (the event or one before it differs)" } else { "" },
                            head.0 + 1)));
                    }
                    let signature = match (e.checkpoint, &e.signature) {
                        (None, _) => None,
                        (Some(_), Some(s)) => Some(s.clone()),
                        (Some(kind), None) => match self.key(register) {
                            Some(k) => Some(k.sign_checkpoint(seq, &hash).to_vec()),
                            None => return Err(StoreError::NoKey { register: register.to_owned(), kind: kind.as_str() }),
                        },
                    };
                    heads.insert(register, (seq, hash));
                    rows.push(Row { position, event: e, clock, stream_id: &sa.stream_id, version, payload, metadata, recorded_at, seq, hash, signature });
                }
                versions.insert(&sa.stream_id, version);
                results.push(AppendResult {
                    version: version as u64,
                    first_position: (position as u64) + 1 - sa.events.len() as u64,
                    last_position: position as u64,
                });
            }
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = insert_sql(chunk.len(), self.db().backend() == "sqlite");
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(r.position)
                        .bind(r.event.event_id)
                        .bind(r.stream_id)
                        .bind(r.version)
                        .bind(&r.event.event_type)
                        .bind(&r.payload)
                        .bind(&r.event.metadata.store_id)
                        .bind(&r.event.metadata.register_id)
                        .bind(r.event.metadata.training)
                        .bind(&r.metadata)
                        .bind(&r.clock)
                        .bind(r.recorded_at)
                        .bind(r.event.checkpoint.map(|c| c.as_str()))
                        .bind(r.seq)
                        .bind(r.hash.to_vec())
                        .bind(r.signature.as_deref());
                }
                if let Err(e) = q.execute(&mut *tx).await {
                    let duplicate = e.as_database_error().is_some_and(|d| {
                        d.is_unique_violation()
                            && (d.message().contains("event_id") || d.constraint() == Some("events_event_id_key"))
                    });
                    if duplicate {
                        drop(tx);
                        return Err(self.which_duplicate(&batch).await);
                    }
                    return Err(err(e));
                }
            }
            let journaled: Vec<&Row<'_>> = rows
                .iter()
                .filter(|r| matches!(r.event.checkpoint, Some(super::Checkpoint::Closure | super::Checkpoint::Archive)))
                .collect();
            if !journaled.is_empty() && self.db().backend() == "postgres" {
                sqlx::query("LOCK TABLE technical_events IN EXCLUSIVE MODE").execute(&mut *tx).await.map_err(err)?;
            }
            for r in journaled {
                // The journal keeps the chain head at each closure, so a tail
                // cut below it is seen by `verify`.
                let detail = serde_json::json!({
                    "stream": r.stream_id,
                    "position": r.position,
                    "chain_seq": r.seq,
                    "chain_hash": crate::chain::hex(&r.hash),
                    "event_type": r.event.event_type,
                })
                .to_string();
                let kind = match r.event.checkpoint {
                    Some(super::Checkpoint::Archive) => TechnicalKind::Archive,
                    _ => TechnicalKind::Closure,
                };
                jet_append!(tx, err, &r.event.metadata.register_id, kind.as_str(), &detail, now);
            }
            tx.commit().await.map_err(err)?;
            results
        });
        if let Some(last) = results.last() {
            self.head.send_replace(last.last_position);
        }
        Ok(results)
    }

    /// After a unique violation on `event_id`: which of the batch's ids is there.
    async fn which_duplicate(&self, batch: &[StreamAppend]) -> StoreError {
        for e in batch.iter().flat_map(|s| &s.events) {
            match self.event_position(e.event_id).await {
                Ok(Some(_)) => return StoreError::Duplicate(e.event_id),
                Ok(None) => {}
                Err(err) => return err,
            }
        }
        // The same id twice inside the batch itself.
        let mut seen = std::collections::HashSet::new();
        for e in batch.iter().flat_map(|s| &s.events) {
            if !seen.insert(e.event_id) {
                return StoreError::Duplicate(e.event_id);
            }
        }
        StoreError::Invalid("an event id is duplicated".into())
    }
}

use serde_json::Value;
