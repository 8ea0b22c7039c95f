//! Sync's decisions, as plain functions over plain data: what a register
//! pushes, whether central takes a batch, what central does with each of
//! its events, which concurrent pairs a stream now has. No I/O here.

use std::collections::HashSet;

use uuid::Uuid;

use crate::clock::{CausalBuffer, ClockError, RegisterNo, VectorClock};
use crate::conflict::{Conflict, EventKey, StreamEvent, resolve};

use super::wire::{PushBatch, WireEvent};

/// The most events a push may carry: bounds central's memory per request.
pub const MAX_BATCH_EVENTS: usize = 2_000;

/// The seqs of its own chain a register pushes next: those after central's
/// acknowledgement, at most `max`. `None` when central has everything.
pub fn next_push(acked_seq: u64, head_seq: u64, max: u64) -> Option<(u64, u64)> {
    (head_seq > acked_seq && max > 0).then(|| (acked_seq + 1, head_seq.min(acked_seq + max)))
}

/// A register's new acknowledged seq: acks can arrive out of order (a
/// retried request answered late), and must never move it back.
pub fn advance_ack(current: u64, answered: u64) -> u64 {
    current.max(answered)
}

/// Central's record of a register, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The register's number in the fleet.
    pub register_no: u32,
    /// Its shop.
    pub store_id: String,
}

/// Does the sender keep the number and shop central enrolled it with?
/// (A mismatch is answered 409: the register's configuration is wrong.)
pub fn check_enrolment(batch: &PushBatch, known: Option<&Enrolment>) -> Result<(), String> {
    match known {
        Some(k) if k.register_no != batch.register_no || k.store_id != batch.store_id => {
            Err(format!(
                "register {} is enrolled as number {} of shop {}, and this batch says number {} of shop {}; fix the register's configuration",
                batch.register_id, k.register_no, k.store_id, batch.register_no, batch.store_id
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a push before anything is read or written; the error says what
/// is wrong, where, and how to fix it (answered as a 4xx).
///
/// A batch is taken only if every event is the sender's own, of its shop,
/// with a clock that counts the event at its chain seq, and the seqs follow
/// each other; and only if the register keeps the number and shop central
/// knows it by.
pub fn check_batch(batch: &PushBatch, known: Option<&Enrolment>) -> Result<(), String> {
    if batch.register_id.is_empty() || batch.store_id.is_empty() {
        return Err("register_id and store_id must not be empty".into());
    }
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(format!(
            "{} events in one batch; send at most {MAX_BATCH_EVENTS} per request",
            batch.events.len()
        ));
    }
    check_enrolment(batch, known)?;
    let no = RegisterNo(batch.register_no);
    let mut previous: Option<u64> = None;
    for (i, e) in batch.events.iter().enumerate() {
        let at = |what: String| Err(format!("events[{i}] ({}): {what}", e.event_id));
        if e.register_id != batch.register_id || e.store_id != batch.store_id {
            return at(format!(
                "it belongs to register {} of shop {}, not to the sender {} of shop {}; a register pushes its own chain only",
                e.register_id, e.store_id, batch.register_id, batch.store_id
            ));
        }
        let clock = e
            .clock_bytes()
            .and_then(|b| VectorClock::decode(&b).map_err(|x| x.to_string()));
        let clock = match clock {
            Ok(c) => c,
            Err(why) => return at(why),
        };
        if e.chain_seq == 0 {
            return at("chain_seq is 0; a chain starts at seq 1".into());
        }
        if clock.get(no) != e.chain_seq {
            return at(format!(
                "its clock counts {} events of register number {}, and it is seq {} of the chain: each event ticks its own register's entry",
                clock.get(no),
                batch.register_no,
                e.chain_seq
            ));
        }
        if let Err(why) = e.hash() {
            return at(why);
        }
        if let Some(p) = previous
            && e.chain_seq != p + 1
        {
            return at(format!(
                "seq {} follows seq {p}; send the chain's events in order, without gaps",
                e.chain_seq
            ));
        }
        previous = Some(e.chain_seq);
    }
    Ok(())
}

/// What central does with a batch's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Intake {
    /// Events to append now, in an order consistent with causality (may
    /// include events of earlier batches that this one released).
    pub append: Vec<WireEvent>,
    /// Events central already holds, or already holds back: ignored.
    pub duplicates: u64,
}

/// Passes a checked batch's events through central's causal buffer:
/// events whose id central holds (`known`) are ignored, the others wait
/// until what they depend on was delivered. `buffer` lives across batches
/// (a later batch may release an earlier one's events).
pub fn take_batch(
    buffer: &mut CausalBuffer<WireEvent>,
    known: &HashSet<Uuid>,
    register_no: u32,
    events: Vec<WireEvent>,
) -> Result<Intake, ClockError> {
    let origin = RegisterNo(register_no);
    let mut append = Vec::new();
    let mut duplicates = 0;
    for e in events {
        if known.contains(&e.event_id) {
            duplicates += 1;
            continue;
        }
        // check_batch decoded it already; a failure here is a bug upstream.
        let clock = e
            .clock_bytes()
            .ok()
            .and_then(|b| VectorClock::decode(&b).ok())
            .unwrap_or_default();
        let before = buffer.waiting();
        let released = buffer.offer(origin, clock, e)?;
        if released.is_empty() && buffer.waiting() == before {
            duplicates += 1;
        }
        append.extend(released.into_iter().map(|d| d.item));
    }
    Ok(Intake { append, duplicates })
}

/// The decisive events of a ticket stream: the first close or cancel wins.
pub fn decisive(event_type: &str) -> bool {
    matches!(event_type, "TICKET_CLOS" | "TICKET_ANNULE")
}

/// The concurrent pairs a stream has once `new` join `existing`, keeping
/// only pairs with a new event (the old ones were recorded before), each
/// with the decision the domain hook takes over the whole stream (the
/// first close wins; see [`crate::conflict::resolve`]).
pub fn new_conflicts(
    existing: Vec<StreamEvent<String>>,
    new: Vec<StreamEvent<String>>,
) -> Vec<(Conflict, Option<EventKey>)> {
    if new.is_empty() {
        return Vec::new();
    }
    let fresh: HashSet<EventKey> = new.iter().map(StreamEvent::key).collect();
    let all: Vec<StreamEvent<String>> = existing.into_iter().chain(new).collect();
    let resolution = resolve(all, |t: &String| decisive(t));
    resolution
        .conflicts
        .into_iter()
        .filter(|c| fresh.contains(&c.first) || fresh.contains(&c.second))
        .map(|c| (c, resolution.decision))
        .collect()
}
