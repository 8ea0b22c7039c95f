//! The per-register hash chain: `h_n = SHA-256(h_{n-1} ‖ canonical bytes of event n)`,
//! with `h_0` = 32 zero bytes.
//!
//! ## Canonical bytes, version 2
//! An explicit encoding, so the hash never depends on a serializer's whims:
//!
//! ```text
//! "rempart/event" (13 bytes) ‖ 0x01 (the version)
//! then each field as  u32 big-endian length ‖ bytes, in this order:
//!   event_id        16 bytes (the UUID's bytes)
//!   register_id     UTF-8            (whose chain this is)
//!   chain_seq       8 bytes, i64 BE  (1, 2, 3 … within the register)
//!   stream_id       UTF-8
//!   event_type      UTF-8
//!   payload         the JSON text exactly as stored
//!   store_id        UTF-8
//!   training        1 byte, 0 or 1
//!   metadata        the JSON text exactly as stored
//!   clock           the vector clock's bytes, opaque here
//!   recorded_at     8 bytes, i64 BE (ms since the Unix epoch)
//!   checkpoint      UTF-8, empty when the event is not a signed checkpoint
//! ```
//!
//! The global position and the stream version are left out on purpose:
//! both are the store's own numbering. Central numbers a register's events
//! differently, and a stream two registers wrote while cut off from each
//! other has two events at the same version on the registers and at two
//! versions on central (version 1 hashed the stream version, so central
//! could not keep such an event's chain). [`crate::verify`] checks both
//! numberings separately (gapless, in chain order); the order of a stream's
//! events is fixed by each register's chain and, across registers, by the
//! vector clocks, which are hashed.
//! The signature is left out too: it signs the chain head, so it cannot be
//! inside what it signs. Whether an event *must* carry one is inside
//! (`checkpoint`), so wiping a signature is seen.
//!
//! The journal of technical events (JET) has its own chain, tag
//! `"rempart/jet"`, fields: seq, register_id, kind, detail (JSON text),
//! recorded_at, encoded the same way.

use sha2::{Digest, Sha256};

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

/// The hash before the first event of a chain.
pub const GENESIS: Hash = [0; 32];

/// The canonical encoding's version, written after the tag.
pub const CANONICAL_VERSION: u8 = 2;

/// Every field of an event that the chain covers, borrowed from wherever
/// the event is (a new event, a row read back).
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// The event's id.
    pub event_id: &'a [u8; 16],
    /// Whose chain.
    pub register_id: &'a str,
    /// Its place in the register's chain, from 1.
    pub chain_seq: i64,
    /// The stream.
    pub stream_id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// The payload's JSON text as stored.
    pub payload: &'a str,
    /// The store (shop) the register belongs to.
    pub store_id: &'a str,
    /// A training-mode record.
    pub training: bool,
    /// The metadata's JSON text as stored.
    pub metadata: &'a str,
    /// The vector clock, opaque bytes.
    pub clock: &'a [u8],
    /// When it was recorded, ms since the Unix epoch.
    pub recorded_at: i64,
    /// The checkpoint kind's name, empty if none.
    pub checkpoint: &'a str,
}

/// Feeds length-prefixed fields to a hasher.
struct Fields<'h>(&'h mut Sha256);

impl Fields<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // Fields are far below 4 GiB; a longer one is refused at append.
        self.0.update((bytes.len() as u32).to_be_bytes());
        self.0.update(bytes);
    }
    fn int(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }
}

impl EventFields<'_> {
    /// The next chain hash: SHA-256 of `prev` and these fields' canonical bytes.
    pub fn link(&self, prev: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(b"rempart/event");
        h.update([CANONICAL_VERSION]);
        let mut f = Fields(&mut h);
        f.put(self.event_id);
        f.put(self.register_id.as_bytes());
        f.int(self.chain_seq);
        f.put(self.stream_id.as_bytes());
        f.put(self.event_type.as_bytes());
        f.put(self.payload.as_bytes());
        f.put(self.store_id.as_bytes());
        f.put(&[u8::from(self.training)]);
        f.put(self.metadata.as_bytes());
        f.put(self.clock);
        f.int(self.recorded_at);
        f.put(self.checkpoint.as_bytes());
        h.finalize().into()
    }
}

/// The fields of one technical event (JET record) the journal's chain covers.
#[derive(Debug, Clone, Copy)]
pub struct JournalFields<'a> {
    /// Its place in the journal, from 1.
    pub seq: i64,
    /// The register that wrote it.
    pub register_id: &'a str,
    /// `start`, `stop`, `sync`, `closure`, `archive`, `verification_failed`…
    pub kind: &'a str,
    /// Its detail, JSON text as stored.
    pub detail: &'a str,
    /// When, ms since the Unix epoch.
    pub recorded_at: i64,
}

impl JournalFields<'_> {
    /// The next journal hash after `prev`.
    pub fn link(&self, prev: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(b"rempart/jet");
        h.update([CANONICAL_VERSION]);
        let mut f = Fields(&mut h);
        f.int(self.seq);
        f.put(self.register_id.as_bytes());
        f.put(self.kind.as_bytes());
        f.put(self.detail.as_bytes());
        f.int(self.recorded_at);
        h.finalize().into()
    }
}

/// Lowercase hex, for reports and JSON.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase or uppercase hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> EventFields<'static> {
        EventFields {
            event_id: &[7; 16],
            register_id: "r1",
            chain_seq: 1,
            stream_id: "ticket-1",
            event_type: "TICKET_OUVERT",
            payload: "{}",
            store_id: "s1",
            training: false,
            metadata: "{}",
            clock: &[1, 2],
            recorded_at: 1_700_000_000_000,
            checkpoint: "",
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = fields().link(&GENESIS);
        let variants = [
            EventFields {
                event_id: &[8; 16],
                ..fields()
            },
            EventFields {
                register_id: "r2",
                ..fields()
            },
            EventFields {
                chain_seq: 2,
                ..fields()
            },
            EventFields {
                stream_id: "ticket-2",
                ..fields()
            },
            EventFields {
                event_type: "X",
                ..fields()
            },
            EventFields {
                payload: "{ }",
                ..fields()
            },
            EventFields {
                store_id: "s2",
                ..fields()
            },
            EventFields {
                training: true,
                ..fields()
            },
            EventFields {
                metadata: "[]",
                ..fields()
            },
            EventFields {
                clock: &[1, 3],
                ..fields()
            },
            EventFields {
                recorded_at: 1,
                ..fields()
            },
            EventFields {
                checkpoint: "ticket",
                ..fields()
            },
        ];
        for v in variants {
            assert_ne!(v.link(&GENESIS), base, "{v:?}");
        }
        assert_ne!(fields().link(&[1; 32]), base, "the previous hash counts");
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        // Without lengths, "ab"+"c" and "a"+"bc" would hash alike.
        let a = EventFields {
            stream_id: "ab",
            event_type: "c",
            ..fields()
        };
        let b = EventFields {
            stream_id: "a",
            event_type: "bc",
            ..fields()
        };
        assert_ne!(a.link(&GENESIS), b.link(&GENESIS));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 15, 255])), Some(vec![0, 15, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
