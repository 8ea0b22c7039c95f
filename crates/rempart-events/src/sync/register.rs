//! A register's side of sync, the thin I/O around [`super::decide`]: what
//! to push (its chain after central's ack), recording central's ack, and
//! taking in its shop's events pulled from central (keeping their chains,
//! merging their clocks into its own on its next sale).
//!
//! Nothing here needs central to be up: the register sells into its own
//! store whatever happens, and its unsynced events are simply its chain
//! after the last ack.

use std::collections::HashSet;

use rempart_db::with_pool;
use serde_json::json;

use crate::chain::{hex, unhex};
use crate::clock::RegisterNo;
use crate::journal::TechnicalKind;
use crate::signing::RegisterKey;
use crate::store::{EventStore, ExpectedVersion, StoreError, StreamAppend};

use super::decide::{MAX_BATCH_EVENTS, advance_ack};
use super::wire::{Ack, PullPage, PushBatch, WireEvent};
use super::{SYNC_SCHEMA, SyncError};

/// A register's store, with what sync needs to know of it.
#[derive(Debug, Clone)]
pub struct RegisterSync {
    store: EventStore,
    register_id: String,
    store_id: String,
    no: RegisterNo,
    public_key: [u8; 32],
}

impl RegisterSync {
    /// Opens the register's store at `url` with its key, its shop and its
    /// number in the fleet; the store then ticks the register's clock on
    /// each of its appends.
    pub async fn open(
        url: &str,
        key: RegisterKey,
        store_id: &str,
        no: RegisterNo,
    ) -> Result<RegisterSync, StoreError> {
        let store = EventStore::open(url).await?;
        RegisterSync::new(store, key, store_id, no).await
    }

    /// [`open`](Self::open) on a store already open.
    pub async fn new(
        store: EventStore,
        key: RegisterKey,
        store_id: &str,
        no: RegisterNo,
    ) -> Result<RegisterSync, StoreError> {
        store.db().migrate(&SYNC_SCHEMA).await?;
        let register_id = key.register_id().to_owned();
        let public_key = key.public_key();
        let store = store
            .with_key(key)
            .await?
            .with_register_no(&register_id, no);
        let err = |e| store.err(e);
        let stored: i64 = with_pool!(store.db(), pool => {
            sqlx::query("INSERT INTO sync_peer (register_id, register_no, acked_seq, pulled_position) VALUES ($1, $2, 0, 0) ON CONFLICT (register_id) DO NOTHING")
                .bind(&register_id).bind(i64::from(no.0)).execute(pool).await.map_err(err)?;
            sqlx::query_scalar("SELECT register_no FROM sync_peer WHERE register_id = $1")
                .bind(&register_id).fetch_one(pool).await.map_err(err)?
        });
        if stored != i64::from(no.0) {
            return Err(StoreError::Invalid(format!(
                "register {register_id} is number {stored} in this store, not {}: a register keeps its number (its vector clock entry); fix its configuration",
                no.0
            )));
        }
        Ok(RegisterSync {
            store,
            register_id,
            store_id: store_id.to_owned(),
            no,
            public_key,
        })
    }

    /// Signs a request to central with the register's key (see [`super::auth`]).
    pub fn sign_request(
        &self,
        method: &str,
        path_and_query: &str,
        signed_at_ms: u64,
        body: &[u8],
    ) -> Result<super::auth::SignedRequest, StoreError> {
        let key = self.store.key(&self.register_id).ok_or_else(|| {
            StoreError::Invalid(format!(
                "register {} has no key in this store: it cannot sign its sync requests",
                self.register_id
            ))
        })?;
        Ok(super::auth::SignedRequest::sign(
            key,
            method,
            path_and_query,
            signed_at_ms,
            body,
        ))
    }

    /// The store: sell into it.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The register's id.
    pub fn register_id(&self) -> &str {
        &self.register_id
    }

    /// Its shop.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// (central's ack of this register's chain, central position pulled up to).
    pub async fn progress(&self) -> Result<(u64, u64), StoreError> {
        let err = |e| self.store.err(e);
        let (acked, pulled): (i64, i64) = with_pool!(self.store.db(), pool => {
            sqlx::query_as("SELECT acked_seq, pulled_position FROM sync_peer WHERE register_id = $1")
                .bind(&self.register_id).fetch_one(pool).await.map_err(err)?
        });
        Ok((acked as u64, pulled as u64))
    }

    /// The next batch to push: the register's own events after central's
    /// ack, at most `max`; `None` when central has them all.
    pub async fn outbox(&self, max: usize) -> Result<Option<PushBatch>, StoreError> {
        let (acked, _) = self.progress().await?;
        self.outbox_after(acked, max).await
    }

    /// The batch after seq `after` of the register's chain: a register may
    /// send its next batch before the previous one is acknowledged (central
    /// holds it back until the earlier one arrives).
    pub async fn outbox_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Option<PushBatch>, StoreError> {
        let acked = after;
        let max = max.clamp(1, MAX_BATCH_EVENTS) as u32;
        let events = self.store.read_chain(&self.register_id, acked, max).await?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(PushBatch {
            register_id: self.register_id.clone(),
            register_no: self.no.0,
            store_id: self.store_id.clone(),
            public_key: hex(&self.public_key),
            events: events.iter().map(WireEvent::from_recorded).collect(),
        }))
    }

    /// A batch with no events: it enrols the register at central (its
    /// number, shop and key), so it may pull before it has sold anything.
    pub fn enrolment_batch(&self) -> PushBatch {
        PushBatch {
            register_id: self.register_id.clone(),
            register_no: self.no.0,
            store_id: self.store_id.clone(),
            public_key: hex(&self.public_key),
            events: Vec::new(),
        }
    }

    /// Records central's answer to a push (never moving the ack back).
    pub async fn record_ack(&self, ack: &Ack) -> Result<u64, StoreError> {
        let (current, _) = self.progress().await?;
        let next = advance_ack(current, ack.acked_seq);
        if next != current {
            let err = |e| self.store.err(e);
            with_pool!(self.store.db(), pool => {
                sqlx::query("UPDATE sync_peer SET acked_seq = $1 WHERE register_id = $2")
                    .bind(next as i64).bind(&self.register_id).execute(pool).await.map_err(err)?;
            });
            self.store
                .journal(
                    &self.register_id,
                    TechnicalKind::Sync,
                    &json!({"side": "register", "acked_seq": next}),
                )
                .await?;
        }
        Ok(next)
    }

    /// Takes in a page pulled from central: its shop-mates' events (its own
    /// come back too, and are skipped), appended with their chains and
    /// clocks in one transaction, and their public keys; then the pull
    /// position moves. Applying a page twice adds nothing. Returns how many
    /// events were added.
    pub async fn apply_pull(&self, page: &PullPage) -> Result<u64, SyncError> {
        let mut foreign: Vec<&WireEvent> = page
            .events
            .iter()
            .filter(|e| e.register_id != self.register_id)
            .collect();
        if let Some(e) = foreign.iter().find(|e| e.store_id != self.store_id) {
            return Err(SyncError::Rejected(format!(
                "central sent event {} of shop {} to a register of shop {}",
                e.event_id, e.store_id, self.store_id
            )));
        }
        let mut here = HashSet::new();
        for e in &foreign {
            if self.store.event_position(e.event_id).await?.is_some() {
                here.insert(e.event_id);
            }
        }
        foreign.retain(|e| !here.contains(&e.event_id));
        let added = foreign.len() as u64;
        let err = |e| SyncError::Store(self.store.err(e));
        let now = self.store.now_ms();
        for (register, key) in &page.keys {
            if *register == self.register_id {
                continue;
            }
            let key = unhex(key).filter(|k| k.len() == 32).ok_or_else(|| {
                SyncError::Rejected(format!(
                    "central sent a malformed public key for {register}"
                ))
            })?;
            with_pool!(self.store.db(), pool => {
                sqlx::query("INSERT INTO register_keys (register_id, public_key, added_at) VALUES ($1, $2, $3) ON CONFLICT (register_id, public_key) DO NOTHING")
                    .bind(register).bind(key).bind(now).execute(pool).await.map_err(err)?;
            });
        }
        if !foreign.is_empty() {
            let mut batch: Vec<StreamAppend> = Vec::new();
            for e in foreign {
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
            self.store.append_batch(batch).await?;
        }
        with_pool!(self.store.db(), pool => {
            sqlx::query("UPDATE sync_peer SET pulled_position = $1 WHERE register_id = $2 AND pulled_position < $1")
                .bind(page.next_position as i64).bind(&self.register_id).execute(pool).await.map_err(err)?;
        });
        Ok(added)
    }
}
