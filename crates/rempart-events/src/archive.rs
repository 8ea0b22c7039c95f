//! Archives (NF 525 *archivage*): one SQLite file per period, holding the
//! period's events exactly as stored (so their chain hashes and signatures
//! still check), the whole journal, the public keys, and a manifest per
//! register: its first and last chain seq, the hash just before the period
//! (where the archive's chain starts) and at its end, the event count, all
//! signed by the register's key. [`crate::verify::verify`] checks an archive
//! like a store, starting each chain at the manifest's hash.
//!
//! The period covers the positions from the first event recorded at or after
//! `from` to the last one recorded before `to`; every event between them is
//! included, so each chain's piece is contiguous even if a register's clock
//! stepped back.
//!
//! The manifest's signed message: `"rempart/manifest" ‖ 0x01` then, each as
//! u32 BE length ‖ bytes: register_id, period, first_position, last_position,
//! first_seq, last_seq (i64 BE each), prev_hash, head_hash, event_count,
//! created_at.

use std::path::Path;

use rempart_db::{Db, Durability, OpenOptions, with_pool};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::chain::{GENESIS, hex};
use crate::journal::TechnicalKind;
use crate::store::{EventStore, StoreError};

/// A manifest row's signed fields.
#[derive(Debug, Clone, Copy)]
pub struct ManifestFields<'a> {
    /// The register.
    pub register_id: &'a str,
    /// The period's label, e.g. `2026-11`.
    pub period: &'a str,
    /// The archive's first global position.
    pub first_position: i64,
    /// Its last.
    pub last_position: i64,
    /// The register's first chain seq in the archive.
    pub first_seq: i64,
    /// Its last.
    pub last_seq: i64,
    /// The chain hash before `first_seq`.
    pub prev_hash: &'a [u8],
    /// The chain hash at `last_seq`.
    pub head_hash: &'a [u8],
    /// The register's events in the archive.
    pub event_count: i64,
    /// When the archive was made.
    pub created_at: i64,
}

impl ManifestFields<'_> {
    /// The bytes the register signs.
    pub fn message(&self) -> Vec<u8> {
        let mut m = b"rempart/manifest".to_vec();
        m.push(crate::chain::CANONICAL_VERSION);
        let mut put = |b: &[u8]| {
            m.extend_from_slice(&(b.len() as u32).to_be_bytes());
            m.extend_from_slice(b);
        };
        put(self.register_id.as_bytes());
        put(self.period.as_bytes());
        for v in [
            self.first_position,
            self.last_position,
            self.first_seq,
            self.last_seq,
        ] {
            put(&v.to_be_bytes());
        }
        put(self.prev_hash);
        put(self.head_hash);
        put(&self.event_count.to_be_bytes());
        put(&self.created_at.to_be_bytes());
        m
    }
}

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveSummary {
    /// Events archived.
    pub events: u64,
    /// First and last global positions.
    pub positions: (u64, u64),
    /// Registers in it.
    pub registers: Vec<String>,
    /// SHA-256 of the file, also written to the source's journal.
    pub file_sha256: String,
}

/// One event row, copied byte for byte.
type RawEvent = (
    i64,
    uuid::Uuid,
    String,
    i64,
    String,
    String,
    String,
    String,
    bool,
    String,
    Vec<u8>,
    i64,
    Option<String>,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
);

impl EventStore {
    /// Writes the events recorded in `[from_ms, to_ms)` to a new archive file
    /// `out` (which must not exist), labelled `period`; journals it here.
    /// Needs the key of every register with events in the period.
    pub async fn archive(
        &self,
        period: &str,
        from_ms: i64,
        to_ms: i64,
        out: &Path,
    ) -> Result<ArchiveSummary, StoreError> {
        if out.exists() {
            return Err(StoreError::Invalid(format!(
                "{} exists already; an archive is never overwritten, choose another file",
                out.display()
            )));
        }
        let err = |e| self.err(e);
        let (first, last): (Option<i64>, Option<i64>) = with_pool!(self.db(), pool => {
            sqlx::query_as("SELECT MIN(global_position), MAX(global_position) FROM events WHERE recorded_at >= $1 AND recorded_at < $2")
                .bind(from_ms).bind(to_ms).fetch_one(pool).await.map_err(err)?
        });
        let (Some(first), Some(last)) = (first, last) else {
            return Err(StoreError::Invalid(format!(
                "no events recorded in period {period}"
            )));
        };
        let sql = format!(
            "{} WHERE global_position BETWEEN $1 AND $2 ORDER BY global_position",
            crate::store::read::SELECT_EVENTS
        );
        let rows: Vec<RawEvent> = with_pool!(self.db(), pool => {
            sqlx::query_as(&sql).bind(first).bind(last).fetch_all(pool).await.map_err(err)?
        });
        let journal: Vec<(i64, String, String, String, i64, Vec<u8>)> = with_pool!(self.db(), pool => {
            sqlx::query_as("SELECT seq, register_id, kind, detail, recorded_at, chain_hash FROM technical_events ORDER BY seq")
                .fetch_all(pool).await.map_err(err)?
        });
        let keys: Vec<(String, Vec<u8>, i64)> = with_pool!(self.db(), pool => {
            sqlx::query_as("SELECT register_id, public_key, added_at FROM register_keys").fetch_all(pool).await.map_err(err)?
        });
        // Each register's piece of chain: first and last seq, hash before and at the end.
        let mut pieces: std::collections::BTreeMap<String, (i64, i64, Vec<u8>, i64)> =
            Default::default();
        for r in &rows {
            let p = pieces
                .entry(r.7.clone())
                .or_insert((r.13, r.13, Vec::new(), 0));
            p.1 = r.13;
            p.2 = r.14.clone();
            p.3 += 1;
        }
        let now = self.now_ms();
        let mut manifest = Vec::new();
        for (register, (first_seq, last_seq, head, count)) in &pieces {
            let prev: Vec<u8> = if *first_seq == 1 {
                GENESIS.to_vec()
            } else {
                with_pool!(self.db(), pool => {
                    sqlx::query_scalar("SELECT chain_hash FROM events WHERE register_id = $1 AND chain_seq = $2")
                        .bind(register).bind(first_seq - 1).fetch_one(pool).await.map_err(err)?
                })
            };
            let fields = ManifestFields {
                register_id: register,
                period,
                first_position: first,
                last_position: last,
                first_seq: *first_seq,
                last_seq: *last_seq,
                prev_hash: &prev,
                head_hash: head,
                event_count: *count,
                created_at: now,
            };
            let key = self.key(register).ok_or_else(|| StoreError::NoKey {
                register: register.clone(),
                kind: "archive",
            })?;
            manifest.push((
                register.clone(),
                prev.clone(),
                head.clone(),
                *first_seq,
                *last_seq,
                *count,
                key.sign(&fields.message()).to_vec(),
            ));
        }

        let url = format!("sqlite://{}", out.display());
        let dest = Db::open_with(
            &url,
            &OpenOptions {
                durability: Durability::Full,
                ..OpenOptions::default()
            },
        )
        .await?;
        dest.migrate(&crate::schema::EVENTS_SCHEMA).await?;
        let derr = |e| StoreError::Db(dest.error(e));
        with_pool!(dest, pool => {
            let mut tx = pool.begin().await.map_err(derr)?;
            for r in &rows {
                sqlx::query("INSERT INTO events (global_position, event_id, stream_id, stream_version, event_type, payload, \
                     store_id, register_id, training, metadata, clock, recorded_at, checkpoint, chain_seq, chain_hash, signature) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)")
                    .bind(r.0).bind(r.1).bind(&r.2).bind(r.3).bind(&r.4).bind(&r.5).bind(&r.6).bind(&r.7)
                    .bind(r.8).bind(&r.9).bind(&r.10).bind(r.11).bind(&r.12).bind(r.13).bind(&r.14).bind(&r.15)
                    .execute(&mut *tx).await.map_err(derr)?;
            }
            for j in &journal {
                sqlx::query("INSERT INTO technical_events (seq, register_id, kind, detail, recorded_at, chain_hash) VALUES ($1,$2,$3,$4,$5,$6)")
                    .bind(j.0).bind(&j.1).bind(&j.2).bind(&j.3).bind(j.4).bind(&j.5)
                    .execute(&mut *tx).await.map_err(derr)?;
            }
            for k in &keys {
                sqlx::query("INSERT INTO register_keys (register_id, public_key, added_at) VALUES ($1,$2,$3)")
                    .bind(&k.0).bind(&k.1).bind(k.2).execute(&mut *tx).await.map_err(derr)?;
            }
            for m in &manifest {
                sqlx::query("INSERT INTO archive_manifest (register_id, period, first_position, last_position, first_seq, last_seq, \
                     prev_hash, head_hash, event_count, created_at, signature) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)")
                    .bind(&m.0).bind(period).bind(first).bind(last).bind(m.3).bind(m.4).bind(&m.1).bind(&m.2)
                    .bind(m.5).bind(now).bind(&m.6)
                    .execute(&mut *tx).await.map_err(derr)?;
            }
            tx.commit().await.map_err(derr)?;
            // One self-contained file: fold the WAL back in.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await.map_err(derr)?;
        });
        dest.close().await;
        let bytes = std::fs::read(out)
            .map_err(|e| StoreError::Invalid(format!("cannot read back {}: {e}", out.display())))?;
        let file_sha256 = hex(&Sha256::digest(&bytes));
        let registers: Vec<String> = pieces.keys().cloned().collect();
        for register in &registers {
            self.journal(
                register,
                TechnicalKind::Archive,
                &json!({
                    "period": period,
                    "file": out.display().to_string(),
                    "file_sha256": file_sha256,
                    "positions": [first, last],
                }),
            )
            .await?;
        }
        Ok(ArchiveSummary {
            events: rows.len() as u64,
            positions: (first as u64, last as u64),
            registers,
            file_sha256,
        })
    }
}
