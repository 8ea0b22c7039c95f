//! Central's side of sync, the thin I/O around [`super::decide`]: a
//! register's batch goes in through the causal buffer and is appended in one
//! transaction keeping the register's chain; the register's acknowledged seq
//! is recorded; a shop's events are served to its registers.
//!
//! One intake at a time per process (a mutex): the causal buffer is this
//! process's memory, rebuilt from the store when the process starts or an
//! append fails. Events held back are not stored; if central restarts, the
//! register, whose ack did not move, sends them again.

use std::collections::{HashMap, HashSet};

use rempart_db::with_pool;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::chain::{hex, unhex};
use crate::clock::{CausalBuffer, RegisterNo, VectorClock};
use crate::conflict::StreamEvent;
use crate::journal::TechnicalKind;
use crate::store::{EventStore, ExpectedVersion, StoreError, StreamAppend};

use super::decide::{Enrolment, check_batch, check_enrolment, new_conflicts, take_batch};
use super::wire::{Ack, PullPage, PushBatch, WireEvent};
use super::{SYNC_SCHEMA, SyncError};

/// How many events a pull answers at most.
pub const MAX_PULL_EVENTS: u32 = 2_000;

/// Events held back at most, all registers together; past it a batch is
/// refused (503) and the register sends it again later.
pub const MAX_WAITING: usize = 20_000;

/// The central store's sync endpoint logic.
#[derive(Debug)]
pub struct Central {
    store: EventStore,
    intake: Mutex<Option<CausalBuffer<WireEvent>>>,
}

/// A conflict as central recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedConflict {
    /// The stream.
    pub stream_id: String,
    /// (register number, counter) of the event first in the total order.
    pub first: (u32, u64),
    /// (register number, counter) of the other.
    pub second: (u32, u64),
    /// The winning decisive event, if the stream has one.
    pub decision: Option<(u32, u64)>,
}

/// `n` placeholders for an `IN (…)`: anonymous `?` on SQLite, where sqlx's
/// lookup of each `$N`'s name is a linear scan (quadratic in `n`).
fn in_list(n: usize, sqlite: bool) -> String {
    (0..n)
        .map(|i| {
            if sqlite {
                "?".to_owned()
            } else {
                format!("${}", i + 1)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Central {
    /// Central on `store`, migrating sync's tables.
    pub async fn new(store: EventStore) -> Result<Central, StoreError> {
        store.db().migrate(&SYNC_SCHEMA).await?;
        Ok(Central {
            store,
            intake: Mutex::new(None),
        })
    }

    /// Opens `url` (`sqlite://…` or `postgres://…`) and migrates both schemas.
    pub async fn open(url: &str) -> Result<Central, StoreError> {
        Central::new(EventStore::open(url).await?).await
    }

    /// The store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    async fn enrolments(&self) -> Result<HashMap<String, Enrolment>, StoreError> {
        let err = |e| self.store.err(e);
        let rows: Vec<(String, i64, String)> = with_pool!(self.store.db(), pool => {
            sqlx::query_as("SELECT register_id, register_no, store_id FROM sync_registers")
                .fetch_all(pool).await.map_err(err)?
        });
        Ok(rows
            .into_iter()
            .map(|(r, no, s)| {
                (
                    r,
                    Enrolment {
                        register_no: no as u32,
                        store_id: s,
                    },
                )
            })
            .collect())
    }

    /// What central delivered: per enrolled register, its chain's last seq here.
    async fn delivered(
        &self,
        enrolled: &HashMap<String, Enrolment>,
    ) -> Result<VectorClock, StoreError> {
        let err = |e| self.store.err(e);
        let heads: Vec<(String, i64)> = with_pool!(self.store.db(), pool => {
            sqlx::query_as("SELECT register_id, MAX(chain_seq) FROM events GROUP BY register_id")
                .fetch_all(pool).await.map_err(err)?
        });
        let mut clock = VectorClock::new();
        for (register, seq) in heads {
            if let Some(e) = enrolled.get(&register) {
                clock.set(RegisterNo(e.register_no), seq as u64);
            }
        }
        Ok(clock)
    }

    async fn known_ids(&self, events: &[WireEvent]) -> Result<HashSet<Uuid>, StoreError> {
        let err = |e| self.store.err(e);
        let mut known = HashSet::new();
        for chunk in events.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM events WHERE event_id IN ({})",
                in_list(chunk.len(), self.store.db().backend() == "sqlite")
            );
            let ids: Vec<Uuid> = with_pool!(self.store.db(), pool => {
                let mut q = sqlx::query_scalar(&sql);
                for e in chunk {
                    q = q.bind(e.event_id);
                }
                q.fetch_all(pool).await.map_err(err)?
            });
            known.extend(ids);
        }
        Ok(known)
    }

    /// Enrols the sender on its first batch (number, shop, public key), or
    /// checks it keeps them.
    async fn enrol(&self, batch: &PushBatch, known: Option<&Enrolment>) -> Result<(), SyncError> {
        let key = unhex(&batch.public_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                SyncError::Rejected(
                    "public_key must be 64 hex digits (an Ed25519 public key)".into(),
                )
            })?;
        let err = |e| SyncError::Store(self.store.err(e));
        let now = self.store.now_ms();
        let keys: Vec<Vec<u8>> = with_pool!(self.store.db(), pool => {
            sqlx::query_scalar("SELECT public_key FROM register_keys WHERE register_id = $1 ORDER BY added_at")
                .bind(&batch.register_id).fetch_all(pool).await.map_err(err)?
        });
        if let Some(first) = keys.first()
            && *first != key
        {
            return Err(SyncError::Conflict(format!(
                "register {} is known with public key {}, and this batch carries {}; a register keeps its key",
                batch.register_id,
                hex(first),
                batch.public_key
            )));
        }
        if known.is_some() {
            return Ok(());
        }
        let taken: Option<String> = with_pool!(self.store.db(), pool => {
            sqlx::query_scalar("SELECT register_id FROM sync_registers WHERE register_no = $1")
                .bind(i64::from(batch.register_no)).fetch_optional(pool).await.map_err(err)?
        });
        if let Some(other) = taken {
            return Err(SyncError::Conflict(format!(
                "register number {} is already {other}'s; give register {} its own number",
                batch.register_no, batch.register_id
            )));
        }
        with_pool!(self.store.db(), pool => {
            sqlx::query("INSERT INTO sync_registers (register_id, register_no, store_id, acked_seq, updated_at) VALUES ($1, $2, $3, 0, $4)")
                .bind(&batch.register_id).bind(i64::from(batch.register_no)).bind(&batch.store_id).bind(now)
                .execute(pool).await.map_err(err)?;
            if keys.is_empty() {
                sqlx::query("INSERT INTO register_keys (register_id, public_key, added_at) VALUES ($1, $2, $3) ON CONFLICT (register_id, public_key) DO NOTHING")
                    .bind(&batch.register_id).bind(key).bind(now)
                    .execute(pool).await.map_err(err)?;
            }
        });
        Ok(())
    }

    /// Takes a register's batch: checks it, ignores what central holds,
    /// holds back what waits for a missing event, appends the rest in one
    /// transaction (keeping the register's chain), records concurrent pairs
    /// and the register's acknowledged seq.
    pub async fn receive(&self, batch: PushBatch) -> Result<Ack, SyncError> {
        let mut intake = self.intake.lock().await;
        let enrolled = self.enrolments().await?;
        let known = enrolled.get(&batch.register_id).cloned();
        check_enrolment(&batch, known.as_ref()).map_err(SyncError::Conflict)?;
        check_batch(&batch, known.as_ref()).map_err(SyncError::Rejected)?;
        self.enrol(&batch, known.as_ref()).await?;
        let mut enrolled = enrolled;
        enrolled
            .entry(batch.register_id.clone())
            .or_insert(Enrolment {
                register_no: batch.register_no,
                store_id: batch.store_id.clone(),
            });
        // Taken out while it changes, put back only once the append is
        // committed: an error, or this future dropped mid-way (the request's
        // deadline), leaves none, and the next intake rebuilds it from the
        // store. Otherwise it would count as delivered events never stored,
        // and acknowledge them.
        let mut buffer = match intake.take() {
            Some(b) => b,
            None => CausalBuffer::resume_from(self.delivered(&enrolled).await?),
        };
        if buffer.waiting() + batch.events.len() > MAX_WAITING {
            let waiting = buffer.waiting();
            *intake = Some(buffer);
            return Err(SyncError::Busy(format!(
                "{waiting} events already wait for missing ones; send this batch again later"
            )));
        }
        let ids = self.known_ids(&batch.events).await?;
        let no = batch.register_no;
        let intake_result = take_batch(&mut buffer, &ids, no, batch.events)
            .map_err(|e| SyncError::Rejected(e.to_string()))?;
        let waiting = buffer.waiting() as u64;
        let appended = intake_result.append.len() as u64;
        let mut conflicts = 0;
        if !intake_result.append.is_empty() {
            let found = self.conflicts_of(&enrolled, &intake_result.append).await?;
            // Recorded before the append: a crash between the two leaves a
            // conflict whose events come again with the register's resend
            // (recorded once), never events whose conflict was lost.
            self.record_conflicts(&found).await?;
            self.append(&intake_result.append).await?;
            conflicts = found.len() as u64;
        }
        let acked = buffer.delivered().get(RegisterNo(no));
        *intake = Some(buffer);
        let now = self.store.now_ms();
        let err = |e| SyncError::Store(self.store.err(e));
        with_pool!(self.store.db(), pool => {
            sqlx::query("UPDATE sync_registers SET acked_seq = $1, updated_at = $2 WHERE register_id = $3 AND acked_seq <= $1")
                .bind(acked as i64).bind(now).bind(&batch.register_id)
                .execute(pool).await.map_err(err)?;
        });
        if appended > 0 {
            self.store
                .journal(
                    &batch.register_id,
                    TechnicalKind::Sync,
                    &json!({"side": "central", "appended": appended, "acked_seq": acked, "conflicts": conflicts}),
                )
                .await?;
        }
        Ok(Ack {
            acked_seq: acked,
            appended,
            duplicates: intake_result.duplicates,
            waiting,
            conflicts,
        })
    }

    async fn append(&self, events: &[WireEvent]) -> Result<(), SyncError> {
        let mut batch: Vec<StreamAppend> = Vec::new();
        for e in events {
            let new = e.to_new_event().map_err(SyncError::Rejected)?;
            match batch.last_mut() {
                Some(last) if last.stream_id == e.stream_id => last.events.push(new),
                _ => batch.push(StreamAppend {
                    stream_id: e.stream_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![new],
                }),
            }
        }
        self.store.append_batch(batch).await.map_err(|e| match e {
            StoreError::Invalid(m) => SyncError::Rejected(m),
            e => SyncError::Store(e),
        })?;
        Ok(())
    }

    /// The concurrent pairs the released events make on their streams.
    async fn conflicts_of(
        &self,
        enrolled: &HashMap<String, Enrolment>,
        events: &[WireEvent],
    ) -> Result<
        Vec<(
            String,
            crate::conflict::Conflict,
            Option<crate::conflict::EventKey>,
        )>,
        StoreError,
    > {
        let number = |register: &str| enrolled.get(register).map(|e| RegisterNo(e.register_no));
        let as_stream_event =
            |register: &str, clock: &[u8], kind: &str| -> Option<StreamEvent<String>> {
                Some(StreamEvent {
                    origin: number(register)?,
                    clock: VectorClock::decode(clock).ok()?,
                    event: kind.to_owned(),
                })
            };
        let mut new: HashMap<&str, Vec<StreamEvent<String>>> = HashMap::new();
        for e in events {
            let clock = e.clock_bytes().unwrap_or_default();
            if let Some(se) = as_stream_event(&e.register_id, &clock, &e.event_type) {
                new.entry(e.stream_id.as_str()).or_default().push(se);
            }
        }
        let streams: Vec<&str> = new.keys().copied().collect();
        let mut existing: HashMap<String, Vec<StreamEvent<String>>> = HashMap::new();
        let err = |e| self.store.err(e);
        for chunk in streams.chunks(500) {
            let sql = format!(
                "SELECT stream_id, register_id, clock, event_type FROM events WHERE stream_id IN ({})",
                in_list(chunk.len(), self.store.db().backend() == "sqlite")
            );
            let rows: Vec<(String, String, Vec<u8>, String)> = with_pool!(self.store.db(), pool => {
                let mut q = sqlx::query_as(&sql);
                for s in chunk {
                    q = q.bind(*s);
                }
                q.fetch_all(pool).await.map_err(err)?
            });
            for (stream, register, clock, kind) in rows {
                if let Some(se) = as_stream_event(&register, &clock, &kind) {
                    existing.entry(stream).or_default().push(se);
                }
            }
        }
        let mut found = Vec::new();
        for (stream, fresh) in new {
            // Single-writer streams cannot conflict: skip the quadratic scan.
            let before = existing.remove(stream).unwrap_or_default();
            let origins: HashSet<RegisterNo> =
                before.iter().chain(&fresh).map(|e| e.origin).collect();
            if origins.len() < 2 {
                continue;
            }
            for (c, d) in new_conflicts(before, fresh) {
                found.push((stream.to_owned(), c, d));
            }
        }
        Ok(found)
    }

    async fn record_conflicts(
        &self,
        found: &[(
            String,
            crate::conflict::Conflict,
            Option<crate::conflict::EventKey>,
        )],
    ) -> Result<(), StoreError> {
        let now = self.store.now_ms();
        let err = |e| self.store.err(e);
        for (stream, c, d) in found {
            with_pool!(self.store.db(), pool => {
                sqlx::query("INSERT INTO sync_conflicts (stream_id, first_register, first_counter, second_register, second_counter, decision_register, decision_counter, detected_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING")
                    .bind(stream)
                    .bind(i64::from(c.first.origin.0)).bind(c.first.counter as i64)
                    .bind(i64::from(c.second.origin.0)).bind(c.second.counter as i64)
                    .bind(d.map(|k| i64::from(k.origin.0))).bind(d.map(|k| k.counter as i64))
                    .bind(now)
                    .execute(pool).await.map_err(err)?;
            });
        }
        Ok(())
    }

    /// Every conflict recorded, sorted.
    pub async fn conflicts(&self) -> Result<Vec<RecordedConflict>, StoreError> {
        let err = |e| self.store.err(e);
        type Row = (String, i64, i64, i64, i64, Option<i64>, Option<i64>);
        let rows: Vec<Row> = with_pool!(self.store.db(), pool => {
            sqlx::query_as("SELECT stream_id, first_register, first_counter, second_register, second_counter, decision_register, decision_counter FROM sync_conflicts
                            ORDER BY stream_id, first_register, first_counter, second_register, second_counter")
                .fetch_all(pool).await.map_err(err)?
        });
        Ok(rows
            .into_iter()
            .map(|(s, fr, fc, sr, sc, dr, dc)| RecordedConflict {
                stream_id: s,
                first: (fr as u32, fc as u64),
                second: (sr as u32, sc as u64),
                decision: dr.zip(dc).map(|(r, c)| (r as u32, c as u64)),
            })
            .collect())
    }

    /// A ticket stream as the domain hook resolves it: the first close (or
    /// cancel) in the total order wins, what is in its causal past stands,
    /// and the rest (the losing close, the other register's actions made
    /// without knowing of it) is flagged for review as corrections.
    pub async fn review_ticket(
        &self,
        stream: &str,
    ) -> Result<crate::conflict::Resolution<crate::ticket::TicketEvent>, SyncError> {
        let enrolled = self.enrolments().await?;
        let events = self
            .store
            .read_stream(stream, 1, crate::store::Direction::Forward, u32::MAX)
            .await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let at = |what: String| {
                SyncError::Rejected(format!("stream {stream} position {}: {what}", e.position))
            };
            let origin = enrolled
                .get(&e.metadata.register_id)
                .map(|x| RegisterNo(x.register_no))
                .ok_or_else(|| {
                    at(format!(
                        "register {} is not enrolled",
                        e.metadata.register_id
                    ))
                })?;
            let clock = VectorClock::decode(&e.clock).map_err(|x| at(x.to_string()))?;
            let event: crate::ticket::TicketEvent =
                serde_json::from_value(json!({"type": e.event_type, "payload": e.payload}))
                    .map_err(|x| at(format!("not a ticket event: {x}")))?;
            out.push(StreamEvent {
                origin,
                clock,
                event,
            });
        }
        Ok(crate::conflict::resolve_ticket(out))
    }

    /// The shop and public keys central enrolled for `register` (None: it
    /// never pushed), to check the signature of its pulls.
    pub async fn enrolment(
        &self,
        register: &str,
    ) -> Result<Option<(String, Vec<[u8; 32]>)>, StoreError> {
        let err = |e| self.store.err(e);
        let (shop, keys): (Option<String>, Vec<Vec<u8>>) = with_pool!(self.store.db(), pool => {
            let shop = sqlx::query_scalar("SELECT store_id FROM sync_registers WHERE register_id = $1")
                .bind(register).fetch_optional(pool).await.map_err(err)?;
            let keys = sqlx::query_scalar("SELECT public_key FROM register_keys WHERE register_id = $1 ORDER BY added_at")
                .bind(register).fetch_all(pool).await.map_err(err)?;
            (shop, keys)
        });
        Ok(shop.map(|shop| {
            let keys = keys
                .iter()
                .filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
                .collect();
            (shop, keys)
        }))
    }

    /// The seq of `register`'s chain central acknowledged (None: never synced).
    pub async fn acked_seq(&self, register: &str) -> Result<Option<u64>, StoreError> {
        let err = |e| self.store.err(e);
        let v: Option<i64> = with_pool!(self.store.db(), pool => {
            sqlx::query_scalar("SELECT acked_seq FROM sync_registers WHERE register_id = $1")
                .bind(register).fetch_optional(pool).await.map_err(err)?
        });
        Ok(v.map(|v| v as u64))
    }

    /// Shop `store_id`'s events after central position `after` (at most
    /// `max`, capped at [`MAX_PULL_EVENTS`]), with its registers' public keys.
    pub async fn pull(&self, store_id: &str, after: u64, max: u32) -> Result<PullPage, StoreError> {
        let events = self
            .store
            .read_shop(store_id, after, max.clamp(1, MAX_PULL_EVENTS))
            .await?;
        let err = |e| self.store.err(e);
        let keys: Vec<(String, Vec<u8>)> = with_pool!(self.store.db(), pool => {
            sqlx::query_as("SELECT k.register_id, k.public_key FROM register_keys k JOIN sync_registers r ON r.register_id = k.register_id
                            WHERE r.store_id = $1 ORDER BY k.register_id, k.added_at")
                .bind(store_id).fetch_all(pool).await.map_err(err)?
        });
        Ok(PullPage {
            next_position: events.last().map_or(after, |e| e.position),
            events: events.iter().map(WireEvent::from_recorded).collect(),
            keys: keys.into_iter().map(|(r, k)| (r, hex(&k))).collect(),
        })
    }
}
