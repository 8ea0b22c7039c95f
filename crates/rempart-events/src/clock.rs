//! Vector clocks for 500 registers, and the causal delivery buffer central
//! appends through.
//!
//! Decisions:
//! - A register is a small number ([`RegisterNo`]) that central assigns once
//!   (its registry maps it to the register's name). The seed keyed clocks by
//!   name in JSON (`{"caisse_001": 42, …}`): 500 names repeated in every
//!   event.
//! - A clock is sparse: a register it has never heard of is absent (zero).
//!   A register's clock only holds the registers whose events it has seen,
//!   in practice those of its own store.
//! - [`VectorClock::encode`] is canonical (one byte string per clock, so
//!   it can be hashed): a LEB128 varint count, then per register in
//!   ascending order the gap from the previous number and the counter, both
//!   varints. Measured (test `clock_sizes` in `tests/domain_clock.rs`): 4
//!   bytes for a register's first event, 19 bytes for the 6 registers of
//!   one store at 10 000 events each, 1 502 bytes for all 500 registers at
//!   10 000 events each (the worst case: a clock that heard of every
//!   register), against 9 501 bytes for the latter as the seed's JSON with
//!   `caisse_NNN` keys. Stored as a BLOB, SQLite adds 1 to 2 header bytes.
//! - [`CausalBuffer`] releases an event from register `j` with clock `V` once
//!   the delivered clock `D` has `D[j] = V[j] − 1` and `D[k] ≥ V[k]` for
//!   every other `k` (the causal broadcast condition). An event is named by
//!   `(j, V[j])`: a second copy is a duplicate and is dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A register's number in the fleet (assigned by central).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegisterNo(pub u32);

/// How two clocks (two events) are related.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The first happened before the second.
    Before,
    /// The first happened after the second.
    After,
    /// The same clock.
    Equal,
    /// Neither knew of the other.
    Concurrent,
}

/// Why a clock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// A counter reached `u64::MAX`.
    #[error("vector clock counter of register {register} is at its maximum")]
    Overflow {
        /// The register.
        register: u32,
    },
    /// Bytes that are not a canonical clock encoding.
    #[error("invalid vector clock encoding at byte {at}: {what}")]
    Encoding {
        /// Offset of the bad byte.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A zero counter in a list of entries (zero entries are left out).
    #[error("vector clock entry for register {register} is 0: zero entries are left out")]
    ZeroEntry {
        /// The register.
        register: u32,
    },
    /// An event whose clock does not count the event itself.
    #[error(
        "event of register {register} has 0 for its own register in its clock: each event ticks its register's entry"
    )]
    NotTicked {
        /// The register.
        register: u32,
    },
}

/// A vector clock: a counter per register, absent meaning zero.
///
/// ```
/// use rempart_events::clock::{Causality, RegisterNo, VectorClock};
/// let (a, b) = (RegisterNo(1), RegisterNo(2));
/// let mut x = VectorClock::new();
/// x.tick(a).unwrap();
/// let mut y = x.clone();
/// y.tick(b).unwrap();
/// assert_eq!(x.compare(&y), Causality::Before);
/// x.tick(a).unwrap();
/// assert_eq!(x.compare(&y), Causality::Concurrent);
/// assert_eq!(x.merge(&y).get(a), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<u32, u64>", into = "BTreeMap<u32, u64>")]
pub struct VectorClock {
    entries: BTreeMap<RegisterNo, u64>,
}

impl VectorClock {
    /// The clock before anything happened.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `register` (0 if absent).
    pub fn get(&self, register: RegisterNo) -> u64 {
        self.entries.get(&register).copied().unwrap_or(0)
    }

    /// The non-zero entries, ascending by register.
    pub fn entries(&self) -> impl Iterator<Item = (RegisterNo, u64)> + '_ {
        self.entries.iter().map(|(r, c)| (*r, *c))
    }

    /// How many registers have a non-zero entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before anything happened.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Set `register`'s counter (0 removes the entry).
    pub fn set(&mut self, register: RegisterNo, counter: u64) {
        if counter == 0 {
            self.entries.remove(&register);
        } else {
            self.entries.insert(register, counter);
        }
    }

    /// Count one event on `register`; returns its new counter.
    pub fn tick(&mut self, register: RegisterNo) -> Result<u64, ClockError> {
        let next = self
            .get(register)
            .checked_add(1)
            .ok_or(ClockError::Overflow {
                register: register.0,
            })?;
        self.entries.insert(register, next);
        Ok(next)
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let (mut less, mut greater) = (false, false);
        for register in self.entries.keys().chain(other.entries.keys()) {
            let (a, b) = (self.get(*register), other.get(*register));
            less |= a < b;
            greater |= a > b;
            if less && greater {
                return Causality::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// True if `self` ≤ `other` entry by entry (happened before, or equal).
    pub fn le(&self, other: &VectorClock) -> bool {
        self.entries.iter().all(|(r, c)| *c <= other.get(*r))
    }

    /// The least upper bound: the entry-wise maximum.
    pub fn merge(&self, other: &VectorClock) -> VectorClock {
        let mut merged = self.clone();
        merged.merge_in(other);
        merged
    }

    /// Merge `other` into `self`.
    pub fn merge_in(&mut self, other: &VectorClock) {
        for (register, counter) in &other.entries {
            let entry = self.entries.entry(*register).or_insert(0);
            *entry = (*entry).max(*counter);
        }
    }

    /// The number of events the clock accounts for (sum of its entries).
    /// It grows along every causal chain, so ordering by it extends the
    /// happened-before order to a total one.
    pub fn weight(&self) -> u128 {
        self.entries.values().map(|c| u128::from(*c)).sum()
    }

    /// The canonical binary encoding (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.entries.len() * 4);
        put_varint(&mut out, self.entries.len() as u64);
        let mut next = 0u64;
        for (register, counter) in &self.entries {
            put_varint(&mut out, u64::from(register.0) - next);
            put_varint(&mut out, *counter);
            next = u64::from(register.0) + 1;
        }
        out
    }

    /// Read a clock written by [`encode`](Self::encode); anything else
    /// (truncated, trailing bytes, a zero counter, a non-minimal varint) is
    /// refused, so one clock has exactly one encoding.
    pub fn decode(bytes: &[u8]) -> Result<VectorClock, ClockError> {
        let mut at = 0;
        let count = get_varint(bytes, &mut at)?;
        let mut entries = BTreeMap::new();
        let mut next = 0u64;
        for _ in 0..count {
            let start = at;
            let register = get_varint(bytes, &mut at)?
                .checked_add(next)
                .and_then(|r| u32::try_from(r).ok())
                .ok_or(ClockError::Encoding {
                    at: start,
                    what: "register number above u32",
                })?;
            let start = at;
            let counter = get_varint(bytes, &mut at)?;
            if counter == 0 {
                return Err(ClockError::Encoding {
                    at: start,
                    what: "zero counter (zero entries are left out)",
                });
            }
            entries.insert(RegisterNo(register), counter);
            next = u64::from(register) + 1;
        }
        if at != bytes.len() {
            return Err(ClockError::Encoding {
                at,
                what: "trailing bytes after the clock",
            });
        }
        Ok(VectorClock { entries })
    }
}

impl TryFrom<BTreeMap<u32, u64>> for VectorClock {
    type Error = ClockError;
    fn try_from(map: BTreeMap<u32, u64>) -> Result<Self, ClockError> {
        if let Some((register, _)) = map.iter().find(|(_, c)| **c == 0) {
            return Err(ClockError::ZeroEntry {
                register: *register,
            });
        }
        Ok(VectorClock {
            entries: map.into_iter().map(|(r, c)| (RegisterNo(r), c)).collect(),
        })
    }
}

impl From<VectorClock> for BTreeMap<u32, u64> {
    fn from(clock: VectorClock) -> Self {
        clock.entries.into_iter().map(|(r, c)| (r.0, c)).collect()
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64, ClockError> {
    let start = *at;
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = bytes.get(*at) else {
            return Err(ClockError::Encoding {
                at: *at,
                what: "truncated",
            });
        };
        *at += 1;
        let low = u64::from(byte & 0x7f);
        if shift == 63 && low > 1 {
            return Err(ClockError::Encoding {
                at: start,
                what: "varint above u64",
            });
        }
        n |= low << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && *at - start > 1 {
                return Err(ClockError::Encoding {
                    at: start,
                    what: "non-minimal varint",
                });
            }
            return Ok(n);
        }
    }
    Err(ClockError::Encoding {
        at: start,
        what: "varint longer than 10 bytes",
    })
}

/// An event released by a [`CausalBuffer`], in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<T> {
    /// The register that recorded it.
    pub origin: RegisterNo,
    /// Its clock.
    pub clock: VectorClock,
    /// The event.
    pub item: T,
}

/// Holds events back until the events they causally depend on were
/// delivered, then releases them once each.
///
/// ```
/// use rempart_events::clock::{CausalBuffer, RegisterNo, VectorClock};
/// let a = RegisterNo(0);
/// let mut first = VectorClock::new();
/// first.tick(a).unwrap();
/// let mut second = first.clone();
/// second.tick(a).unwrap();
/// let mut buffer = CausalBuffer::new();
/// // The second event arrives first: it waits.
/// assert!(buffer.offer(a, second.clone(), "second").unwrap().is_empty());
/// let out = buffer.offer(a, first.clone(), "first").unwrap();
/// assert_eq!(out.iter().map(|d| d.item).collect::<Vec<_>>(), ["first", "second"]);
/// // A copy sent again is dropped.
/// assert!(buffer.offer(a, first, "first").unwrap().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct CausalBuffer<T> {
    delivered: VectorClock,
    waiting: BTreeMap<RegisterNo, BTreeMap<u64, (VectorClock, T)>>,
    waiting_len: usize,
}

impl<T> Default for CausalBuffer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> CausalBuffer<T> {
    /// A buffer that has delivered nothing.
    pub fn new() -> Self {
        CausalBuffer {
            delivered: VectorClock::new(),
            waiting: BTreeMap::new(),
            waiting_len: 0,
        }
    }

    /// A buffer that already delivered everything up to `delivered` (after
    /// a restart: the clock of what the store holds).
    pub fn resume_from(delivered: VectorClock) -> Self {
        CausalBuffer {
            delivered,
            ..Self::new()
        }
    }

    /// What has been delivered: per register, how many of its events.
    pub fn delivered(&self) -> &VectorClock {
        &self.delivered
    }

    /// How many events wait for a missing one.
    pub fn waiting(&self) -> usize {
        self.waiting_len
    }

    /// What the waiting events still need, as (register, first event
    /// number not delivered): the gaps to ask the senders for. Sorted, one
    /// entry per register.
    pub fn missing(&self) -> Vec<(RegisterNo, u64)> {
        let mut needs: BTreeMap<RegisterNo, u64> = BTreeMap::new();
        for (origin, queue) in &self.waiting {
            let Some((number, (clock, _))) = queue.first_key_value() else {
                continue;
            };
            let own_gap = *number > self.delivered.get(*origin) + 1;
            let deps = clock
                .entries()
                .filter(|(r, c)| r != origin && *c > self.delivered.get(*r))
                .map(|(r, _)| r);
            for r in deps.chain(own_gap.then_some(*origin)) {
                needs.insert(r, self.delivered.get(r) + 1);
            }
        }
        needs.into_iter().collect()
    }

    /// Offer an event recorded by `origin` with `clock`; returns the events
    /// this releases, in an order consistent with causality (empty if it
    /// waits or is a duplicate).
    pub fn offer(
        &mut self,
        origin: RegisterNo,
        clock: VectorClock,
        item: T,
    ) -> Result<Vec<Delivered<T>>, ClockError> {
        let number = clock.get(origin);
        if number == 0 {
            return Err(ClockError::NotTicked { register: origin.0 });
        }
        if number <= self.delivered.get(origin) {
            return Ok(Vec::new());
        }
        let queue = self.waiting.entry(origin).or_default();
        if queue.contains_key(&number) {
            return Ok(Vec::new());
        }
        queue.insert(number, (clock, item));
        self.waiting_len += 1;
        Ok(self.release())
    }

    fn deliverable(&self, origin: RegisterNo, number: u64, clock: &VectorClock) -> bool {
        number == self.delivered.get(origin) + 1
            && clock
                .entries()
                .all(|(r, c)| r == origin || c <= self.delivered.get(r))
    }

    fn release(&mut self) -> Vec<Delivered<T>> {
        let mut out = Vec::new();
        loop {
            let ready: Vec<RegisterNo> = self
                .waiting
                .iter()
                .filter(|(origin, queue)| {
                    queue
                        .first_key_value()
                        .is_some_and(|(n, (clock, _))| self.deliverable(**origin, *n, clock))
                })
                .map(|(origin, _)| *origin)
                .collect();
            if ready.is_empty() {
                return out;
            }
            for origin in ready {
                // Drain this register's run: each delivery may enable its next.
                while let Some((&number, (clock, _))) =
                    self.waiting.get(&origin).and_then(|q| q.first_key_value())
                {
                    if !self.deliverable(origin, number, clock) {
                        break;
                    }
                    let Some(queue) = self.waiting.get_mut(&origin) else {
                        break;
                    };
                    let Some((_, (clock, item))) = queue.pop_first() else {
                        break;
                    };
                    if queue.is_empty() {
                        self.waiting.remove(&origin);
                    }
                    self.waiting_len -= 1;
                    self.delivered.set(origin, number);
                    out.push(Delivered {
                        origin,
                        clock,
                        item,
                    });
                }
            }
        }
    }
}
