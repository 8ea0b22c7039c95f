//! The technical-event journal (JET, NF 525): start, stop, sync, closure,
//! archive and failed verifications, in table `technical_events`, chained
//! like the events (see [`crate::chain::JournalFields`]) and append-only.
//!
//! Closures and archives are written here by the append that records them,
//! in the same transaction, with the register's chain head at that point:
//! that is what lets [`crate::verify`] see a tail cut below the last closure.

use rempart_db::with_pool;
use serde_json::Value;

use crate::chain::Hash;
use crate::store::{EventStore, StoreError};

/// What happened, technically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TechnicalKind {
    /// The register software started.
    Start,
    /// It stopped.
    Stop,
    /// A sync with central ran (detail: what was pushed and acknowledged).
    Sync,
    /// A closure (day, month, year) was recorded.
    Closure,
    /// An archive was written.
    Archive,
    /// A verification of the store failed (detail: the first bad record).
    VerificationFailed,
}

impl TechnicalKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TechnicalKind::Start => "start",
            TechnicalKind::Stop => "stop",
            TechnicalKind::Sync => "sync",
            TechnicalKind::Closure => "closure",
            TechnicalKind::Archive => "archive",
            TechnicalKind::VerificationFailed => "verification_failed",
        }
    }
}

/// A journal record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TechnicalEvent {
    /// Its place in the journal, from 1.
    pub seq: u64,
    /// The register that wrote it.
    pub register_id: String,
    /// Its kind's name.
    pub kind: String,
    /// Its detail.
    pub detail: Value,
    /// When (ms since the Unix epoch).
    pub recorded_at: i64,
    /// The journal's chain hash after it.
    pub chain_hash: Hash,
}

/// Appends one journal record inside the open transaction `$tx`; evaluates to its seq.
macro_rules! jet_append {
    ($tx:ident, $err:expr, $register:expr, $kind:expr, $detail:expr, $at:expr) => {{
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, chain_hash FROM technical_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await
                .map_err($err)?;
        let (seq, prev) = match last {
            Some((s, h)) => (s + 1, crate::store::stored_hash(&h, s as u64)?),
            None => (1, crate::chain::GENESIS),
        };
        let hash = crate::chain::JournalFields {
            seq,
            register_id: $register,
            kind: $kind,
            detail: $detail,
            recorded_at: $at,
        }
        .link(&prev);
        sqlx::query(
            "INSERT INTO technical_events (seq, register_id, kind, detail, recorded_at, chain_hash) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind($register)
        .bind($kind)
        .bind($detail)
        .bind($at)
        .bind(hash.to_vec())
        .execute(&mut *$tx)
        .await
        .map_err($err)?;
        seq
    }};
}
pub(crate) use jet_append;

impl EventStore {
    /// Records a technical event for `register`; returns its journal seq.
    pub async fn journal(
        &self,
        register: &str,
        kind: TechnicalKind,
        detail: &Value,
    ) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let detail = detail.to_string();
        let err = |e| self.err(e);
        let seq = with_pool!(self.db(), pool => {
            crate::store::begin_write!(self, pool, conn, tx, err, "technical_events");
            let seq = jet_append!(tx, err, register, kind.as_str(), &detail, now);
            tx.commit().await.map_err(err)?;
            seq
        });
        Ok(seq as u64)
    }

    /// The whole journal, in order.
    pub async fn read_journal(&self) -> Result<Vec<TechnicalEvent>, StoreError> {
        let err = |e| self.err(e);
        let rows: Vec<(i64, String, String, String, i64, Vec<u8>)> = with_pool!(self.db(), pool => {
            sqlx::query_as("SELECT seq, register_id, kind, detail, recorded_at, chain_hash FROM technical_events ORDER BY seq")
                .fetch_all(pool).await.map_err(err)?
        });
        rows.into_iter()
            .map(|(seq, register_id, kind, detail, recorded_at, hash)| {
                Ok(TechnicalEvent {
                    seq: seq as u64,
                    register_id,
                    kind,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                    recorded_at,
                    chain_hash: crate::store::stored_hash(&hash, seq as u64)?,
                })
            })
            .collect()
    }
}
