//! What travels between a register and central, as JSON: bytes (clock,
//! hashes, signatures) as lowercase hex, the payload as JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::chain::{Hash, hex, unhex};
use crate::store::{Checkpoint, Metadata, NewEvent, RecordedEvent};

/// One event as it travels, with its register's chain link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// The event's id, the same everywhere.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its type.
    pub event_type: String,
    /// Its data.
    pub payload: Value,
    /// The shop.
    pub store_id: String,
    /// The register whose chain it is.
    pub register_id: String,
    /// A training-mode record.
    #[serde(default)]
    pub training: bool,
    /// The rest of its metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The vector clock, hex of [`crate::clock::VectorClock::encode`].
    pub clock: String,
    /// When, ms since the Unix epoch.
    pub recorded_at: i64,
    /// The checkpoint it marks.
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    /// Its place in its register's chain.
    pub chain_seq: u64,
    /// The chain hash after it, hex.
    pub chain_hash: String,
    /// The register's signature at a checkpoint, hex.
    #[serde(default)]
    pub signature: Option<String>,
    /// Its global position in the store it was read from (central's, in a
    /// pull; the register's own, in a push: informative only).
    #[serde(default)]
    pub position: u64,
}

impl WireEvent {
    /// The wire form of a stored event.
    pub fn from_recorded(e: &RecordedEvent) -> WireEvent {
        WireEvent {
            event_id: e.event_id,
            stream_id: e.stream_id.clone(),
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            store_id: e.metadata.store_id.clone(),
            register_id: e.metadata.register_id.clone(),
            training: e.metadata.training,
            metadata: e.metadata.extra.clone(),
            clock: hex(&e.clock),
            recorded_at: e.recorded_at,
            checkpoint: e.checkpoint,
            chain_seq: e.chain_seq,
            chain_hash: hex(&e.chain_hash),
            signature: e.signature.as_deref().map(hex),
            position: e.position,
        }
    }

    /// The clock's bytes, or what is wrong with them.
    pub fn clock_bytes(&self) -> Result<Vec<u8>, String> {
        unhex(&self.clock)
            .ok_or_else(|| format!("event {}: clock {:?} is not hex", self.event_id, self.clock))
    }

    /// The chain hash, or what is wrong with it.
    pub fn hash(&self) -> Result<Hash, String> {
        unhex(&self.chain_hash)
            .and_then(|h| Hash::try_from(h.as_slice()).ok())
            .ok_or_else(|| format!("event {}: chain_hash is not 64 hex digits", self.event_id))
    }

    /// The event to append elsewhere, keeping its id, clock, time,
    /// signature and chain link (the append checks the link).
    pub fn to_new_event(&self) -> Result<NewEvent, String> {
        let signature = match &self.signature {
            None => None,
            Some(s) => Some(
                unhex(s).ok_or_else(|| format!("event {}: signature is not hex", self.event_id))?,
            ),
        };
        Ok(NewEvent {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
            metadata: Metadata {
                store_id: self.store_id.clone(),
                register_id: self.register_id.clone(),
                training: self.training,
                extra: self.metadata.clone(),
            },
            clock: self.clock_bytes()?,
            recorded_at: Some(self.recorded_at),
            checkpoint: self.checkpoint,
            signature,
            origin_link: Some((self.chain_seq, self.hash()?)),
        })
    }
}

/// A register's push: the next piece of its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    /// The register.
    pub register_id: String,
    /// Its number in the fleet (its vector clock entry).
    pub register_no: u32,
    /// Its shop.
    pub store_id: String,
    /// Its Ed25519 public key, hex: recorded by central the first time.
    pub public_key: String,
    /// Its events, in chain order.
    pub events: Vec<WireEvent>,
}

/// Central's answer to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The last seq of the register's chain central holds: everything up to
    /// it is stored, and the register pushes from the next one.
    pub acked_seq: u64,
    /// Events of this batch (or released by it) appended now.
    pub appended: u64,
    /// Events central already held (a batch sent again).
    pub duplicates: u64,
    /// Events held back until those they depend on arrive.
    pub waiting: u64,
    /// Concurrent pairs found on a stream (kept, and recorded).
    pub conflicts: u64,
}

/// A page of a shop's events, for a register to pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// The events, in central's order.
    pub events: Vec<WireEvent>,
    /// The public keys of the registers whose events these are, hex.
    pub keys: Vec<(String, String)>,
    /// Where the next pull starts (after this position).
    pub next_position: u64,
}
