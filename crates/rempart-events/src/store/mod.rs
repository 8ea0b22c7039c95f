//! The event store: streams with optimistic concurrency, a gapless global
//! position, reads both ways, catch-up subscriptions and snapshots, on
//! SQLite (a register) or PostgreSQL (central) through `rempart_db`.
//!
//! One type, [`EventStore`], serves both backends: every query is written
//! once and run on either pool (`with_pool!`), as the saga and outbox stores do.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use rempart_events::store::{EventStore, ExpectedVersion, Metadata, NewEvent};
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}", dir.path().join("register.db").display());
//! let store = EventStore::open(&url).await.unwrap();
//! let meta = Metadata::new("store-12", "register-12-3");
//! let opened = NewEvent::new("TICKET_OUVERT", serde_json::json!({"ticket": "t-1"}), meta);
//! let r = store.append("ticket-t-1", ExpectedVersion::NoStream, vec![opened]).await.unwrap();
//! assert_eq!((r.version, r.last_position), (1, 1));
//! let again = NewEvent::new("X", serde_json::json!({}), Metadata::new("store-12", "register-12-3"));
//! let err = store.append("ticket-t-1", ExpectedVersion::NoStream, vec![again]).await.unwrap_err();
//! assert!(err.to_string().contains("is at version 1"));
//! # });
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use rempart::clock::{Clock, UnixClock};
use rempart_db::{Db, DbError};
use serde_json::{Map, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::chain::Hash;
use crate::clock::RegisterNo;
use crate::signing::{KeyError, RegisterKey};

/// Opens a write transaction holding `$table`'s writer lock: SQLite's
/// `BEGIN IMMEDIATE` (the one writer), PostgreSQL's `LOCK TABLE … IN
/// EXCLUSIVE MODE` (writers wait, readers do not). Binds `$tx` on `$conn`.
macro_rules! begin_write {
    ($store:expr, $pool:ident, $conn:ident, $tx:ident, $err:expr, $table:literal) => {
        let mut $conn = $pool.acquire().await.map_err($err)?;
        let mut $tx = if $store.db().backend() == "sqlite" {
            sqlx::Connection::begin_with(&mut *$conn, "BEGIN IMMEDIATE")
                .await
                .map_err($err)?
        } else {
            sqlx::Connection::begin(&mut *$conn).await.map_err($err)?
        };
        if $store.db().backend() == "postgres" {
            sqlx::query(concat!("LOCK TABLE ", $table, " IN EXCLUSIVE MODE"))
                .execute(&mut *$tx)
                .await
                .map_err($err)?;
        }
    };
}
pub(crate) use begin_write;

mod append;
pub(crate) mod read;
mod subscribe;

pub(crate) use append::stored_hash;
pub use read::{Direction, Snapshot};
pub use subscribe::Subscription;

/// What the writer believes about a stream before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be at exactly this version (its number of events).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

impl ExpectedVersion {
    /// Does a stream at `current` (0: no stream) satisfy this?
    pub fn accepts(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(n) => current == n,
        }
    }
}

/// Who wrote an event, and how to read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The shop the register belongs to (never parsed out of the register id).
    pub store_id: String,
    /// The register that wrote it: the hash chain it belongs to.
    pub register_id: String,
    /// A training-mode record, kept out of revenue (NF 525 asks them marked).
    pub training: bool,
    /// Anything else (cashier, correlation id…), stored as JSON.
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Metadata for a register of a shop, not in training mode.
    pub fn new(store_id: &str, register_id: &str) -> Metadata {
        Metadata {
            store_id: store_id.to_owned(),
            register_id: register_id.to_owned(),
            training: false,
            extra: Map::new(),
        }
    }
}

/// What a signature marks an event as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// A closed ticket.
    Ticket,
    /// A closure (day, month, year): also recorded in the journal.
    Closure,
    /// An archive: also recorded in the journal.
    Archive,
}

impl Checkpoint {
    /// The name stored and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Ticket => "ticket",
            Checkpoint::Closure => "closure",
            Checkpoint::Archive => "archive",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Checkpoint> {
        match s {
            "ticket" => Some(Checkpoint::Ticket),
            "closure" => Some(Checkpoint::Closure),
            "archive" => Some(Checkpoint::Archive),
            _ => None,
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Its id: the same id appended twice (a sync batch resent) is refused.
    pub event_id: Uuid,
    /// Its type, e.g. `TICKET_CLOS`.
    pub event_type: String,
    /// Its data.
    pub payload: Value,
    /// Who wrote it.
    pub metadata: Metadata,
    /// The register's vector clock, encoded by its owner; opaque here.
    pub clock: Vec<u8>,
    /// When it happened (ms since the Unix epoch); `None`: the store's clock.
    /// Central passes the register's time through, so the chain hashes alike.
    pub recorded_at: Option<i64>,
    /// Sign the chain head at this event.
    pub checkpoint: Option<Checkpoint>,
    /// A signature made elsewhere (the register's, carried to central by sync);
    /// `None`: the store signs with the register's key if it holds it.
    pub signature: Option<Vec<u8>>,
    /// The chain link its register gave it (an event carried by sync): the
    /// append is refused unless this store's chain lands on the same seq and
    /// hash, so the register's chain is preserved, never rewritten.
    pub origin_link: Option<(u64, Hash)>,
}

impl NewEvent {
    /// A new event with a fresh id, no clock, the store's time, no checkpoint.
    pub fn new(event_type: &str, payload: Value, metadata: Metadata) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            payload,
            metadata,
            clock: Vec::new(),
            recorded_at: None,
            checkpoint: None,
            signature: None,
            origin_link: None,
        }
    }

    /// This event with the chain head signed at it.
    pub fn signed(mut self, kind: Checkpoint) -> NewEvent {
        self.checkpoint = Some(kind);
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Its place in the whole store, from 1, gapless, in commit order.
    pub position: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream, from 1.
    pub version: u64,
    /// Its type.
    pub event_type: String,
    /// Its data.
    pub payload: Value,
    /// Who wrote it.
    pub metadata: Metadata,
    /// The vector clock's bytes.
    pub clock: Vec<u8>,
    /// When (ms since the Unix epoch).
    pub recorded_at: i64,
    /// The checkpoint it marks, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Its place in its register's chain, from 1.
    pub chain_seq: u64,
    /// The chain hash after it.
    pub chain_hash: Hash,
    /// The register's signature of the chain head, at a checkpoint.
    pub signature: Option<Vec<u8>>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the first event appended.
    pub first_position: u64,
    /// The global position of the last event appended.
    pub last_position: u64,
}

/// One stream's part of an all-or-nothing batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream.
    pub stream_id: String,
    /// What the writer believes about it.
    pub expected: ExpectedVersion,
    /// Its new events, at least one.
    pub events: Vec<NewEvent>,
}

/// A store's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stream is not at the version the writer expected; nothing was
    /// written. Read the stream again, decide again, and retry.
    #[error(
        "stream {stream}: expected {expected}, but it is at version {current}; nothing was appended"
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// Its version now (0: it does not exist).
        current: u64,
    },
    /// An event id already in the store (a batch sent twice); nothing was written.
    #[error("event {0} is already in the store; nothing was appended")]
    Duplicate(Uuid),
    /// The events given cannot be stored as they are.
    #[error("cannot append: {0}")]
    Invalid(String),
    /// A checkpoint asked for a signature, and the store holds no key for that register.
    #[error(
        "event at a {kind} checkpoint of register {register} needs a signature, and this store has no key for that register; open it with its key (EventStore::with_key)"
    )]
    NoKey {
        /// The register.
        register: String,
        /// The checkpoint's kind.
        kind: &'static str,
    },
    /// The register's key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A row the code cannot read.
    #[error("unreadable row at position {position}: {what}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What is wrong.
        what: String,
    },
}

/// The event store on one database.
#[derive(Clone)]
pub struct EventStore {
    db: Db,
    keys: Arc<HashMap<String, RegisterKey>>,
    /// The registers this store ticks vector clocks for (its own), by number.
    numbers: Arc<HashMap<String, RegisterNo>>,
    /// Read as time since the Unix epoch (`recorded_at`).
    clock: Arc<dyn Clock>,
    /// The last position this process appended: wakes local subscribers at once.
    head: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("db", &self.db.url())
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EventStore {
    /// A store on `db`, whose `events` schema must be migrated
    /// (`db.migrate(&EVENTS_SCHEMA)`; [`EventStore::open`] does it).
    pub fn new(db: Db) -> EventStore {
        EventStore {
            db,
            keys: Arc::new(HashMap::new()),
            numbers: Arc::new(HashMap::new()),
            clock: Arc::new(UnixClock::new()),
            head: Arc::new(watch::channel(0).0),
        }
    }

    /// Opens `url` (`sqlite://PATH` or `postgres://…`), migrates, returns the store.
    pub async fn open(url: &str) -> Result<EventStore, StoreError> {
        let db = Db::open(url).await?;
        db.migrate(&crate::schema::EVENTS_SCHEMA).await?;
        // A register's number, if sync recorded one: whoever opens the
        // store (a closure from the command line) then ticks its clock.
        let numbers: Vec<(String, i64)> = rempart_db::with_pool!(db, pool => {
            sqlx::query_as("SELECT register_id, register_no FROM sync_peer")
                .fetch_all(pool).await.unwrap_or_default()
        });
        let mut store = EventStore::new(db);
        for (register, no) in numbers {
            if let Ok(no) = u32::try_from(no) {
                store = store.with_register_no(&register, RegisterNo(no));
            }
        }
        Ok(store)
    }

    /// This store on another clock (its nanoseconds read as time since the
    /// Unix epoch), e.g. a `ManualClock` in tests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> EventStore {
        self.clock = clock;
        self
    }

    /// This store signing checkpoints of `key`'s register with it; records
    /// the public key in `register_keys` if it is not there yet.
    pub async fn with_key(mut self, key: RegisterKey) -> Result<EventStore, StoreError> {
        let at = self.now_ms();
        let db = self.db.clone();
        rempart_db::with_pool!(db, pool => {
            sqlx::query(
                "INSERT INTO register_keys (register_id, public_key, added_at) VALUES ($1, $2, $3)
                 ON CONFLICT (register_id, public_key) DO NOTHING",
            )
            .bind(key.register_id())
            .bind(key.public_key().to_vec())
            .bind(at)
            .execute(pool)
            .await
            .map_err(|e| db.error(e))?;
        });
        Arc::make_mut(&mut self.keys).insert(key.register_id().to_owned(), key);
        Ok(self)
    }

    /// This store ticking `register`'s vector clock entry `no` on each of
    /// its events appended with an empty clock: the event gets the
    /// register's clock (its last own event's, merged with every event from
    /// elsewhere stored since), ticked. `no` is the register's number in the
    /// fleet, assigned by central; it lives in the register's configuration
    /// like its key. Events of other registers are left as given.
    pub fn with_register_no(mut self, register: &str, no: RegisterNo) -> EventStore {
        Arc::make_mut(&mut self.numbers).insert(register.to_owned(), no);
        self
    }

    /// The number this store ticks for `register`, if it is one of its own.
    pub fn register_no(&self, register: &str) -> Option<RegisterNo> {
        self.numbers.get(register).copied()
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().as_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    pub(crate) fn key(&self, register: &str) -> Option<&RegisterKey> {
        self.keys.get(register)
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> StoreError {
        StoreError::Db(self.db.error(e))
    }
}
