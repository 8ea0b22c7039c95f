//! Concurrent events on one stream, and their deterministic resolution.
//!
//! The seed claimed conflicts are "structurally impossible"; that holds
//! only while one register writes a stream. A ticket suspended on one
//! register and resumed on another can be closed on both while they are cut
//! off from each other. Here:
//! - two events of a stream are **concurrent** when neither clock is below
//!   the other; every such pair is reported ([`Conflict`]), and both events
//!   are kept: facts are never dropped;
//! - the events are put in one total order that extends causality:
//!   by clock weight (the number of events the clock accounts for, which
//!   grows along every causal chain), then register number, then the
//!   register's own counter. Every node computes the same order whatever
//!   the arrival order;
//! - the domain hook [`resolve`] takes the first *decisive* event in that
//!   order (for a ticket: its close or cancel, [`resolve_ticket`]). What is in its
//!   causal past stands; every other event (the losing close, the other
//!   register's actions made without knowing of the close) becomes a
//!   [`Correction`] flagged for review, not a change to the closed ticket.

use crate::clock::{Causality, RegisterNo, VectorClock};
use crate::ticket::{Ticket, TicketEvent, apply};

/// An event of a stream, with where and when (causally) it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent<E> {
    /// The register that recorded it.
    pub origin: RegisterNo,
    /// Its vector clock (its own register's entry counts it).
    pub clock: VectorClock,
    /// The event.
    pub event: E,
}

impl<E> StreamEvent<E> {
    /// The event's identity: its register and that register's counter.
    pub fn key(&self) -> EventKey {
        EventKey {
            origin: self.origin,
            counter: self.clock.get(self.origin),
        }
    }

    fn order_key(&self) -> (u128, RegisterNo, u64) {
        (
            self.clock.weight(),
            self.origin,
            self.clock.get(self.origin),
        )
    }
}

/// An event's identity: the `counter`-th event of register `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// The register.
    pub origin: RegisterNo,
    /// Its counter for that event.
    pub counter: u64,
}

/// Two events of a stream, neither of which happened before the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The one first in the total order.
    pub first: EventKey,
    /// The other one.
    pub second: EventKey,
}

/// Why an event is set aside for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewReason {
    /// A decisive event (a close) that lost to an earlier one.
    LosingDecision,
    /// Made without knowledge of the winning decision (concurrent with it).
    ConcurrentWithDecision,
    /// Made after the decision was known (should have been refused).
    AfterDecision,
}

/// An event that does not apply to the resolved stream: kept, and flagged
/// for a person to turn into a correction (a refund, a new ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction<E> {
    /// The event.
    pub event: StreamEvent<E>,
    /// Why it was set aside.
    pub reason: ReviewReason,
    /// The decision it lost to.
    pub decision: EventKey,
}

/// A stream's events, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<E> {
    /// The events that stand, in the total order.
    pub accepted: Vec<StreamEvent<E>>,
    /// The events flagged for review, in the total order.
    pub for_review: Vec<Correction<E>>,
    /// Every concurrent pair, sorted.
    pub conflicts: Vec<Conflict>,
    /// The winning decisive event, if any.
    pub decision: Option<EventKey>,
}

/// Put a stream's events in the deterministic total order, dropping copies
/// of the same event (same register and counter).
pub fn total_order<E>(mut events: Vec<StreamEvent<E>>) -> Vec<StreamEvent<E>> {
    events.sort_by_key(|e| e.order_key());
    events.dedup_by_key(|e| e.key());
    events
}

/// Every pair of concurrent events among `ordered` (in total order).
/// Quadratic in the stream's length: meant for ticket streams (tens of
/// events), not for a store's whole log.
pub fn conflicts<E>(ordered: &[StreamEvent<E>]) -> Vec<Conflict> {
    let mut found = Vec::new();
    for (i, a) in ordered.iter().enumerate() {
        for b in &ordered[i + 1..] {
            if a.clock.compare(&b.clock) == Causality::Concurrent {
                found.push(Conflict {
                    first: a.key(),
                    second: b.key(),
                });
            }
        }
    }
    found.sort();
    found
}

/// Resolve a stream: the first event for which `decisive` holds wins, the
/// events in its causal past stand, the others are flagged for review. With
/// no decisive event everything stands (concurrent events are still
/// reported). The result depends only on the set of events, not on their
/// order or on duplicates.
pub fn resolve<E>(events: Vec<StreamEvent<E>>, decisive: impl Fn(&E) -> bool) -> Resolution<E> {
    let ordered = total_order(events);
    let conflicts = conflicts(&ordered);
    let Some(winner) = ordered.iter().find(|e| decisive(&e.event)) else {
        return Resolution {
            accepted: ordered,
            for_review: Vec::new(),
            conflicts,
            decision: None,
        };
    };
    let (decision, decision_clock) = (winner.key(), winner.clock.clone());
    let mut accepted = Vec::new();
    let mut for_review = Vec::new();
    for event in ordered {
        if event.clock.le(&decision_clock) {
            accepted.push(event);
            continue;
        }
        let reason = if decisive(&event.event) {
            ReviewReason::LosingDecision
        } else if decision_clock.le(&event.clock) {
            ReviewReason::AfterDecision
        } else {
            ReviewReason::ConcurrentWithDecision
        };
        for_review.push(Correction {
            event,
            reason,
            decision,
        });
    }
    Resolution {
        accepted,
        for_review,
        conflicts,
        decision: Some(decision),
    }
}

/// The ticket rule: the first close (or cancel: either ends the ticket)
/// wins; what the other register did without knowing of it is flagged for
/// review.
pub fn resolve_ticket(events: Vec<StreamEvent<TicketEvent>>) -> Resolution<TicketEvent> {
    resolve(events, |e| {
        matches!(e, TicketEvent::Closed(_) | TicketEvent::Cancelled(_))
    })
}

impl Resolution<TicketEvent> {
    /// The ticket the accepted events make.
    pub fn ticket(&self) -> Ticket {
        self.accepted
            .iter()
            .fold(Ticket::new(), |t, e| apply(t, &e.event))
    }
}
