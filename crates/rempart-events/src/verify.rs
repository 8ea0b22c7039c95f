//! `verify`: reads a store (a register's SQLite file, central's database, or
//! an archive file) and says whether it is intact, naming the first bad
//! record. It writes nothing, and trusts nothing the tamperer could have
//! changed except what it checks against: the chain, the signatures (with
//! central's copy of the public keys when given), the journal's closure
//! records, an archive's manifest, and external anchors (central's chain heads).
//!
//! What it checks, event by event in global-position order:
//! - positions run 1, 2, 3… with no hole (a hole: a deleted event);
//! - each register's chain seqs run 1, 2, 3… (a jump: deleted, or moved later;
//!   a step back: swapped or inserted), and each hash is
//!   `SHA-256(previous ‖ canonical bytes)` (a mismatch: a changed byte in a
//!   field, or an inserted event);
//! - each stream's versions run 1, 2, 3…;
//! - each checkpoint carries a signature by its register's key over the
//!   chain head (missing or not verifying: replaced);
//! - each anchor (a closure in the journal, central's head, a manifest's
//!   head) matches the chain at its seq, and the chain reaches it (a
//!   chain ending below it: a truncated tail);
//! - the journal's own chain.
//!
//! What it cannot see, stated plainly: whoever holds the file *and* the
//! register's secret key can rewrite everything; whoever holds only the file
//! can cut the tail after the last anchor, or append events after the last
//! signed checkpoint with a recomputed chain. Central's acknowledged heads and
//! the signed checkpoints bound what such a cut or addition can reach.

use std::collections::HashMap;
use std::path::Path;

use futures_util::TryStreamExt;
use rempart_db::{Db, DbError, Pool, with_pool};
use sqlx::Row as _;

use crate::chain::{EventFields, GENESIS, Hash, JournalFields, unhex};
use crate::signing::{checkpoint_message, signed_by_any};

/// What kind of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// A field's bytes differ from what the chain recorded (or the record was inserted).
    Altered,
    /// Records are missing here.
    Deleted,
    /// A record was moved: two swapped, or one inserted with a reused number.
    Reordered,
    /// A checkpoint's signature is missing, replaced or made with another key.
    Signature,
    /// The chain ends below a head recorded elsewhere (a closure, central, a manifest).
    Truncated,
    /// The technical-event journal is damaged.
    Journal,
    /// An archive's manifest is damaged or unsigned.
    Manifest,
}

/// One problem found, at the first record it shows at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What kind of damage.
    pub damage: Damage,
    /// The record's stream (`technical_events` for the journal).
    pub stream: Option<String>,
    /// The record's global position (the journal's seq for the journal).
    pub position: Option<u64>,
    /// The register whose chain it is.
    pub register_id: Option<String>,
    /// The record's place in that chain.
    pub chain_seq: Option<u64>,
    /// What is wrong, in words.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.damage)?;
        if let Some(s) = &self.stream {
            write!(f, " at stream {s}")?;
        }
        if let Some(p) = self.position {
            write!(f, " position {p}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The outcome: intact when `findings` is empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Distinct register chains.
    pub registers: usize,
    /// Checkpoint signatures checked.
    pub signatures: u64,
    /// Journal records read.
    pub journal_records: u64,
    /// Whether the file is an archive (has a manifest).
    pub archive: bool,
    /// Problems, the first bad event record first; empty when intact.
    pub findings: Vec<Finding>,
}

impl Report {
    /// No problem found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A head a register's chain must pass through, recorded outside the events table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The register.
    pub register_id: String,
    /// Its chain seq.
    pub chain_seq: u64,
    /// Its chain hash there.
    pub chain_hash: Hash,
    /// Where it was recorded, for the report (e.g. "closure in journal seq 4").
    pub source: String,
}

/// What to check against besides the file itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Public keys to trust per register (central's copy); a register listed
    /// here is checked against these only, never against the file's table.
    pub trusted_keys: HashMap<String, Vec<[u8; 32]>>,
    /// Heads recorded elsewhere (central's acknowledged heads).
    pub anchors: Vec<Anchor>,
}

/// Why verification could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The path is not an event store or archive.
    #[error("{path} is not a rempart event store or archive: {reason}")]
    NotAStore {
        /// The path or URL.
        path: String,
        /// Why.
        reason: String,
    },
    /// The database failed while reading.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Opens a store to verify: a SQLite file read-only (nothing is written, not
/// even the WAL switch), or a `sqlite://` / `postgres://` URL.
pub async fn open_for_verify(path: &str) -> Result<Db, VerifyError> {
    if path.starts_with("postgres://") || path.starts_with("postgresql://") {
        return Ok(Db::open(path).await?);
    }
    let file = path.strip_prefix("sqlite://").unwrap_or(path);
    let not_store = |reason: String| VerifyError::NotAStore {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| not_store(e.to_string()))?;
    if !meta.is_file() {
        return Err(not_store("not a file".into()));
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(Path::new(file))
        .read_only(true)
        // As `Db::open` does: the scan's rows are not handed over 50 at a time.
        .row_buffer_size(1024);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| not_store(e.to_string()))?;
    Ok(Db::from_pool(
        Pool::Sqlite(pool),
        &format!("sqlite://{file}"),
    ))
}

/// Per-register state while scanning.
struct ChainState {
    next_seq: i64,
    prev: Hash,
    last_position: Option<u64>,
}

struct ManifestRow {
    register_id: String,
    first_position: i64,
    last_seq: i64,
    first_seq: i64,
    prev_hash: Hash,
}

fn finding(
    damage: Damage,
    stream: Option<&str>,
    position: Option<u64>,
    register: Option<&str>,
    seq: Option<i64>,
    detail: String,
) -> Finding {
    Finding {
        damage,
        stream: stream.map(str::to_owned),
        position,
        register_id: register.map(str::to_owned),
        chain_seq: seq.map(|s| s as u64),
        detail,
    }
}

fn as_hash(v: &[u8]) -> Option<Hash> {
    v.try_into().ok()
}

/// Verifies the store in `db`; see the module's documentation for what is checked.
pub async fn verify(db: &Db, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    let not_store = |reason: String| VerifyError::NotAStore {
        path: db.url().to_owned(),
        reason,
    };
    let err = |e| VerifyError::Db(db.error(e));
    let version: Option<i64> = with_pool!(db, pool => {
        sqlx::query_scalar("SELECT version FROM rempart_schema_versions WHERE component = 'events'")
            .fetch_optional(pool).await.map_err(|e| not_store(e.to_string()))?
    });
    if version.is_none() {
        return Err(not_store("it has no `events` schema".into()));
    }
    let mut report = Report {
        events: 0,
        registers: 0,
        signatures: 0,
        journal_records: 0,
        archive: false,
        findings: Vec::new(),
    };

    // Keys: the file's, unless the caller trusts its own copy for a register.
    // Only a register's first key: a key inserted later by someone holding
    // the file does not make their signatures good.
    let file_keys: Vec<(String, Vec<u8>)> = with_pool!(db, pool => {
        sqlx::query_as("SELECT register_id, public_key FROM register_keys ORDER BY added_at, public_key").fetch_all(pool).await.map_err(err)?
    });
    let mut keys: HashMap<String, Vec<[u8; 32]>> = HashMap::new();
    for (r, k) in file_keys {
        if opts.trusted_keys.contains_key(&r) || keys.contains_key(&r) {
            continue;
        }
        if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
            keys.insert(r, vec![k]);
        }
    }
    for (r, ks) in &opts.trusted_keys {
        keys.insert(r.clone(), ks.clone());
    }

    // The journal first: it is small, and its closures are anchors.
    let mut anchors: HashMap<(String, i64), Anchor> = HashMap::new();
    let mut journal_finding = None;
    let jet: Vec<(i64, String, String, String, i64, Vec<u8>)> = with_pool!(db, pool => {
        sqlx::query_as("SELECT seq, register_id, kind, detail, recorded_at, chain_hash FROM technical_events ORDER BY seq")
            .fetch_all(pool).await.map_err(err)?
    });
    let mut prev = GENESIS;
    for (i, (seq, register, kind, detail, at, hash)) in jet.iter().enumerate() {
        report.journal_records += 1;
        let at_seq = |d: String| {
            finding(
                Damage::Journal,
                Some("technical_events"),
                Some(*seq as u64),
                Some(register),
                Some(*seq),
                d,
            )
        };
        if *seq != i as i64 + 1 {
            journal_finding = Some(at_seq(format!(
                "journal record {seq} found where {} was expected: records deleted or moved",
                i + 1
            )));
            break;
        }
        let computed = JournalFields {
            seq: *seq,
            register_id: register,
            kind,
            detail,
            recorded_at: *at,
        }
        .link(&prev);
        if as_hash(hash) != Some(computed) {
            journal_finding = Some(at_seq(
                "the journal's chain hash does not match the record: a field was changed".into(),
            ));
            break;
        }
        prev = computed;
        if kind == "closure" || kind == "archive" {
            let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
            if let (Some(s), Some(h)) = (
                d["chain_seq"].as_i64(),
                d["chain_hash"]
                    .as_str()
                    .and_then(unhex)
                    .and_then(|h| as_hash(&h)),
            ) {
                anchors.insert(
                    (register.clone(), s),
                    Anchor {
                        register_id: register.clone(),
                        chain_seq: s as u64,
                        chain_hash: h,
                        source: format!("the {kind} in journal record {seq}"),
                    },
                );
            }
        }
    }
    for a in &opts.anchors {
        anchors.insert((a.register_id.clone(), a.chain_seq as i64), a.clone());
    }

    // An archive starts mid-chain: its manifest gives where.
    let manifest: Vec<ManifestRow> = with_pool!(db, pool => {
        let rows = sqlx::query("SELECT register_id, period, first_position, last_position, first_seq, last_seq, prev_hash, head_hash, event_count, created_at, signature FROM archive_manifest ORDER BY register_id")
            .fetch_all(pool).await.map_err(err)?;
        let mut out = Vec::new();
        for r in &rows {
            let register: String = r.try_get(0).map_err(err)?;
            let fields = crate::archive::ManifestFields {
                register_id: &register,
                period: &r.try_get::<String, _>(1).map_err(err)?,
                first_position: r.try_get(2).map_err(err)?,
                last_position: r.try_get(3).map_err(err)?,
                first_seq: r.try_get(4).map_err(err)?,
                last_seq: r.try_get(5).map_err(err)?,
                prev_hash: &r.try_get::<Vec<u8>, _>(6).map_err(err)?,
                head_hash: &r.try_get::<Vec<u8>, _>(7).map_err(err)?,
                event_count: r.try_get(8).map_err(err)?,
                created_at: r.try_get(9).map_err(err)?,
            };
            let signature: Option<Vec<u8>> = r.try_get(10).map_err(err)?;
            let signed = signature.as_deref().is_some_and(|s| signed_by_any(keys.get(&register).map_or(&[][..], Vec::as_slice), &fields.message(), s));
            let (Some(prev_hash), Some(head_hash)) = (as_hash(fields.prev_hash), as_hash(fields.head_hash)) else {
                report.findings.push(finding(Damage::Manifest, None, None, Some(&register), None, "the manifest's hashes are not 32 bytes".into()));
                continue;
            };
            if !signed {
                report.findings.push(finding(Damage::Manifest, None, Some(fields.first_position as u64), Some(&register), Some(fields.first_seq),
                    "the manifest's signature is missing or does not verify with the register's key".into()));
            }
            anchors.insert((register.clone(), fields.last_seq), Anchor {
                register_id: register.clone(),
                chain_seq: fields.last_seq as u64,
                chain_hash: head_hash,
                source: "the archive's manifest".into(),
            });
            out.push(ManifestRow { register_id: register.clone(), first_position: fields.first_position, last_seq: fields.last_seq, first_seq: fields.first_seq, prev_hash });
        }
        out
    });
    report.archive = !manifest.is_empty();
    if report.archive {
        // The journal in an archive runs past the period: keep its anchors
        // that fall inside each register's archived piece.
        anchors.retain(|(register, seq), _| {
            manifest
                .iter()
                .any(|m| m.register_id == *register && (m.first_seq..=m.last_seq).contains(seq))
        });
    }
    let mut chains: HashMap<String, ChainState> = manifest
        .iter()
        .map(|m| {
            (
                m.register_id.clone(),
                ChainState {
                    next_seq: m.first_seq,
                    prev: m.prev_hash,
                    last_position: None,
                },
            )
        })
        .collect();
    let mut expected_position: i64 = manifest.iter().map(|m| m.first_position).min().unwrap_or(1);
    let mut versions: HashMap<String, i64> = HashMap::new();
    // The anchors by register then seq, looked up per event by borrowed
    // name (no key built per row).
    let mut anchored: HashMap<&str, HashMap<i64, &Anchor>> = HashMap::new();
    for ((register, seq), a) in &anchors {
        anchored
            .entry(register.as_str())
            .or_default()
            .insert(*seq, a);
    }

    // The events, streamed in position order.
    let mut first: Option<Finding> = None;
    // A seq that went missing: if it shows up later, it was moved, not deleted.
    let mut missing: Option<(String, i64)> = None;
    let mut moved = false;
    let sql = format!(
        "{} ORDER BY global_position",
        crate::store::read::SELECT_EVENTS
    );
    with_pool!(db, pool => {
        let mut rows = sqlx::query(&sql).fetch(pool);
        while let Some(r) = rows.try_next().await.map_err(err)? {
            // Every column is borrowed from the row: the chain hashes the
            // stored bytes as they are, with no copy per field.
            let position: i64 = r.try_get(0).map_err(err)?;
            let register: &str = r.try_get(7).map_err(err)?;
            let seq: i64 = r.try_get(13).map_err(err)?;
            if first.is_some() {
                if let Some((reg, s)) = &missing
                    && reg == register && *s == seq {
                    moved = true;
                    break;
                }
                continue;
            }
            report.events += 1;
            let stream: &str = r.try_get(2).map_err(err)?;
            let at = |d: Damage, detail: String| finding(d, Some(stream), Some(position as u64), Some(register), Some(seq), detail);
            if position != expected_position {
                first = Some(finding(Damage::Deleted, None, Some(expected_position as u64), None, None, format!(
                    "positions {expected_position}..={} are missing (the next record is stream {stream} position {position}): events deleted",
                    position - 1)));
                continue;
            }
            expected_position += 1;
            let chain = match chains.get_mut(register) {
                Some(chain) => chain,
                None => chains.entry(register.to_owned()).or_insert(ChainState { next_seq: 1, prev: GENESIS, last_position: None }),
            };
            if seq > chain.next_seq {
                missing = Some((register.to_owned(), chain.next_seq));
                first = Some(at(Damage::Deleted, format!(
                    "register {register}'s chain jumps from seq {} to {seq}: events deleted", chain.next_seq - 1)));
                continue;
            }
            if seq < chain.next_seq {
                first = Some(at(Damage::Reordered, format!(
                    "register {register}'s seq {seq} comes after seq {}: events swapped, or one inserted", chain.next_seq - 1)));
                continue;
            }
            let event_id: uuid::Uuid = r.try_get(1).map_err(err)?;
            let version: i64 = r.try_get(3).map_err(err)?;
            let event_type: &str = r.try_get(4).map_err(err)?;
            let payload: &str = r.try_get(5).map_err(err)?;
            let store_id: &str = r.try_get(6).map_err(err)?;
            let training: bool = r.try_get(8).map_err(err)?;
            let metadata: &str = r.try_get(9).map_err(err)?;
            let clock: &[u8] = r.try_get(10).map_err(err)?;
            let recorded_at: i64 = r.try_get(11).map_err(err)?;
            let checkpoint: Option<&str> = r.try_get(12).map_err(err)?;
            let stored: &[u8] = r.try_get(14).map_err(err)?;
            let signature: Option<&[u8]> = r.try_get(15).map_err(err)?;
            let computed = EventFields {
                event_id: event_id.as_bytes(),
                register_id: register,
                chain_seq: seq,
                stream_id: stream,
                event_type,
                payload,
                store_id,
                training,
                metadata,
                clock,
                recorded_at,
                checkpoint: checkpoint.unwrap_or(""),
            }
            .link(&chain.prev);
            if as_hash(stored) != Some(computed) {
                first = Some(at(Damage::Altered, "the chain hash does not match this record's content: a field was changed, or the record inserted".into()));
                continue;
            }
            if let Some(a) = anchored.get(register).and_then(|by_seq| by_seq.get(&seq))
                && a.chain_hash != computed {
                first = Some(at(Damage::Altered, format!("the chain here differs from the head recorded by {}", a.source)));
                continue;
            }
            let next_version = match versions.get_mut(stream) {
                Some(v) => v,
                None => versions.entry(stream.to_owned()).or_insert(if report.archive { version } else { 1 }),
            };
            if version != *next_version {
                // The chain does not hash the version (each store numbers its
                // streams): a version out of step is a changed field.
                first = Some(at(Damage::Altered, format!("stream {stream}'s version {version} comes where {next_version} was expected: a version was changed, or an event moved")));
                continue;
            }
            *next_version += 1;
            if let Some(kind) = checkpoint {
                report.signatures += 1;
                let ks = keys.get(register).map_or(&[][..], Vec::as_slice);
                let ok = signature.is_some_and(|s| signed_by_any(ks, &checkpoint_message(register, seq, &computed), s));
                if !ok {
                    let why = if ks.is_empty() { "no public key is known for the register" } else if signature.is_none() { "the signature is missing" } else { "the signature does not verify with the register's key: replaced" };
                    first = Some(at(Damage::Signature, format!("{kind} checkpoint: {why}")));
                    continue;
                }
            }
            chain.next_seq += 1;
            chain.prev = computed;
            chain.last_position = Some(position as u64);
        }
        Ok::<(), VerifyError>(())
    })?;
    if let Some(mut f) = first {
        if moved {
            f.damage = Damage::Reordered;
            f.detail = format!(
                "{}; the missing seq appears later, so events were moved (swapped)",
                f.detail
                    .split(": events deleted")
                    .next()
                    .unwrap_or(&f.detail)
            );
        }
        report.findings.insert(0, f);
    } else {
        // Every anchor must be reached: a chain ending below one was cut.
        let mut cut: Vec<&Anchor> = anchors
            .values()
            .filter(|a| {
                chains
                    .get(&a.register_id)
                    .is_none_or(|c| (c.next_seq - 1) < a.chain_seq as i64)
            })
            .collect();
        cut.sort_by_key(|a| (a.register_id.clone(), a.chain_seq));
        for a in cut {
            let end = chains.get(&a.register_id);
            let last_seq = end.map_or(0, |c| c.next_seq - 1);
            report.findings.push(finding(
                Damage::Truncated,
                None,
                end.and_then(|c| c.last_position).map(|p| p + 1),
                Some(&a.register_id),
                Some(last_seq + 1),
                format!("register {}'s chain ends at seq {last_seq}, below seq {} recorded by {}: the tail was cut", a.register_id, a.chain_seq, a.source),
            ));
        }
        for m in &manifest {
            if let Some(c) = chains.get(&m.register_id)
                && c.next_seq - 1 > m.last_seq
            {
                report.findings.push(finding(Damage::Manifest, None, c.last_position, Some(&m.register_id), Some(c.next_seq - 1),
                    format!("register {} has events past the manifest's last seq {}: events added to the archive", m.register_id, m.last_seq)));
            }
        }
    }
    report.registers = chains.len();
    if let Some(j) = journal_finding {
        report.findings.push(j);
    }
    Ok(report)
}
