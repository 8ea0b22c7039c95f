//! Concurrent events on one ticket: detected, all kept, and resolved the
//! same way whatever the arrival order (the first close wins).

use proptest::prelude::*;
use rempart_events::clock::{Causality, RegisterNo, VectorClock};
use rempart_events::conflict::{EventKey, ReviewReason, StreamEvent, resolve, resolve_ticket};
use rempart_events::money::{Cents, VatRate};
use rempart_events::ticket::{
    ArticleAdded, PaymentMode, Ticket, TicketCommand, TicketEvent, TicketStatus, apply, decide,
};

const A: RegisterNo = RegisterNo(1);
const B: RegisterNo = RegisterNo(2);

/// One register's view of the ticket: its state, its clock, what it recorded.
struct Register {
    no: RegisterNo,
    name: &'static str,
    ticket: Ticket,
    clock: VectorClock,
}

impl Register {
    fn new(no: RegisterNo, name: &'static str) -> Self {
        Register {
            no,
            name,
            ticket: Ticket::new(),
            clock: VectorClock::new(),
        }
    }

    fn run(&mut self, command: TicketCommand, log: &mut Vec<StreamEvent<TicketEvent>>) {
        for event in decide(&self.ticket, &command).unwrap() {
            self.ticket = apply(self.ticket.clone(), &event);
            self.clock.tick(self.no).unwrap();
            log.push(StreamEvent {
                origin: self.no,
                clock: self.clock.clone(),
                event,
            });
        }
    }

    /// Pull what another register recorded (a sync through central).
    fn receive(&mut self, events: &[StreamEvent<TicketEvent>]) {
        for e in events {
            self.ticket = apply(self.ticket.clone(), &e.event);
            self.clock.merge_in(&e.clock);
        }
    }

    fn add(&mut self, ean: &str, cents: i64, log: &mut Vec<StreamEvent<TicketEvent>>) {
        self.run(
            TicketCommand::AddArticle(ArticleAdded {
                code_ean: ean.into(),
                label: ean.into(),
                quantity: 1,
                unit_price: Cents::new(cents),
                vat_rate: VatRate::NORMAL,
            }),
            log,
        );
    }

    /// Open a ticket, ring up one article and park it.
    fn open_add_park(&mut self, ticket_id: &str, log: &mut Vec<StreamEvent<TicketEvent>>) {
        self.run(
            TicketCommand::Open {
                ticket_id: ticket_id.into(),
                cashier_id: "c".into(),
                register_id: self.name.into(),
                training: false,
            },
            log,
        );
        self.add("pain", 1_20, log);
        self.run(
            TicketCommand::Suspend {
                register_id: self.name.into(),
            },
            log,
        );
    }

    fn resume_pay_close(&mut self, log: &mut Vec<StreamEvent<TicketEvent>>) {
        self.run(
            TicketCommand::Resume {
                register_id: self.name.into(),
            },
            log,
        );
        let totals = self.ticket.totals().unwrap();
        self.run(
            TicketCommand::ReceivePayment {
                mode: PaymentMode::Cash,
                amount: totals.ttc(),
            },
            log,
        );
        self.run(
            TicketCommand::Close {
                expected_total: totals.ttc(),
                expected_vat: totals.tva().unwrap(),
                ticket_number: format!("{}-1", self.name),
            },
            log,
        );
    }
}

/// A ticket opened and parked on A, taken up by B; cut off from each other,
/// both resume it and close it. B adds an article first, so its branch is
/// longer.
fn split_ticket() -> Vec<StreamEvent<TicketEvent>> {
    let (mut a, mut b) = (Register::new(A, "caisse-a"), Register::new(B, "caisse-b"));
    let mut shared = Vec::new();
    a.open_add_park("T-9", &mut shared);
    b.receive(&shared);
    let mut log = shared.clone();
    let mut b_log = Vec::new();
    b.run(
        TicketCommand::Resume {
            register_id: "caisse-b".into(),
        },
        &mut b_log,
    );
    b.add("lait", 95, &mut b_log);
    b.run(
        TicketCommand::Suspend {
            register_id: "caisse-b".into(),
        },
        &mut b_log,
    );
    b.resume_pay_close(&mut b_log);
    let mut a_log = Vec::new();
    a.resume_pay_close(&mut a_log);
    log.extend(b_log);
    log.extend(a_log);
    log
}

#[test]
fn both_closes_are_kept_and_the_first_wins() {
    let events = split_ticket();
    let total = events.len();
    let r = resolve_ticket(events);
    // A's close has seen 6 events, B's 9: A's is first.
    let decision = r.decision.unwrap();
    assert_eq!(
        decision,
        EventKey {
            origin: A,
            counter: 6
        }
    );
    let ticket = r.ticket();
    assert_eq!(ticket.status, TicketStatus::Closed);
    assert_eq!(ticket.closed.as_ref().unwrap().total, Cents::new(1_20));
    assert_eq!(ticket.closed.as_ref().unwrap().ticket_number, "caisse-a-1");
    // Nothing is dropped: B's branch is flagged for review, its close as the loser.
    assert_eq!(r.accepted.len() + r.for_review.len(), total);
    assert!(r.for_review.iter().all(|c| c.event.origin == B));
    let losing: Vec<_> = r
        .for_review
        .iter()
        .filter(|c| c.reason == ReviewReason::LosingDecision)
        .collect();
    assert_eq!(losing.len(), 1);
    assert!(matches!(losing[0].event.event, TicketEvent::Closed(_)));
    assert!(
        r.for_review
            .iter()
            .filter(|c| c.reason != ReviewReason::LosingDecision)
            .all(|c| c.reason == ReviewReason::ConcurrentWithDecision)
    );
    // Every pair across the two branches is reported as a conflict.
    assert_eq!(r.conflicts.len(), 3 * 6);
}

#[test]
fn equal_weights_are_broken_by_register_number() {
    let mk = |origin, entries: &[(u32, u64)], decisive| {
        let mut clock = VectorClock::new();
        for (r, n) in entries {
            clock.set(RegisterNo(*r), *n);
        }
        StreamEvent {
            origin,
            clock,
            event: decisive,
        }
    };
    let root = mk(A, &[(1, 1)], false);
    let close_b = mk(B, &[(1, 1), (2, 1)], true);
    let close_a = mk(A, &[(1, 2)], true);
    for events in [
        vec![root.clone(), close_b.clone(), close_a.clone()],
        vec![close_a.clone(), close_b.clone(), root.clone()],
    ] {
        let r = resolve(events, |d| *d);
        assert_eq!(r.decision, Some(close_a.key()));
        assert_eq!(r.for_review.len(), 1);
        assert_eq!(r.for_review[0].event, close_b);
    }
}

#[test]
fn a_cancel_ends_the_ticket_like_a_close() {
    // A parks the ticket; B takes it up and closes it while A, cut off,
    // cancels it. A's cancel has seen fewer events: it wins, B's sale is
    // flagged for review.
    let (mut a, mut b) = (Register::new(A, "caisse-a"), Register::new(B, "caisse-b"));
    let mut log = Vec::new();
    a.open_add_park("T-3", &mut log);
    b.receive(&log);
    b.resume_pay_close(&mut log);
    a.run(
        TicketCommand::Resume {
            register_id: "caisse-a".into(),
        },
        &mut log,
    );
    a.run(
        TicketCommand::Cancel {
            reason: "client parti".into(),
        },
        &mut log,
    );
    let r = resolve_ticket(log);
    assert_eq!(
        r.decision,
        Some(EventKey {
            origin: A,
            counter: 5
        })
    );
    assert_eq!(r.ticket().status, TicketStatus::Cancelled);
    assert_eq!(r.for_review.len(), 3);
    assert!(r.for_review.iter().all(|c| c.event.origin == B));
}

#[test]
fn a_single_writer_stream_has_no_conflict() {
    let mut a = Register::new(A, "caisse-a");
    let mut log = Vec::new();
    a.open_add_park("T-1", &mut log);
    a.resume_pay_close(&mut log);
    let n = log.len();
    let r = resolve_ticket(log);
    assert!(r.conflicts.is_empty());
    assert!(r.for_review.is_empty());
    assert_eq!(r.accepted.len(), n);
}

/// Random histories of a shared stream: each event is recorded by a
/// register, maybe after receiving an earlier one, and may be decisive.
fn stream() -> impl Strategy<Value = Vec<StreamEvent<bool>>> {
    prop::collection::vec(
        (
            0u32..4,
            prop::option::weighted(0.5, any::<usize>()),
            prop::bool::weighted(0.2),
        ),
        0..25,
    )
    .prop_map(|ops| {
        let mut clocks = vec![VectorClock::new(); 4];
        let mut events: Vec<StreamEvent<bool>> = Vec::new();
        for (r, received, decisive) in ops {
            let c = &mut clocks[r as usize];
            if let Some(i) = received
                && !events.is_empty()
            {
                c.merge_in(&events[i % events.len()].clock);
            }
            c.tick(RegisterNo(r)).unwrap();
            events.push(StreamEvent {
                origin: RegisterNo(r),
                clock: c.clone(),
                event: decisive,
            });
        }
        events
    })
}

proptest! {
    #[test]
    fn resolution_does_not_depend_on_arrival_order(
        (events, arrival) in stream().prop_flat_map(|events| {
            let n = events.len();
            let order = prop::collection::vec(0..n.max(1), 0..n + 1).prop_flat_map(move |extra| {
                let mut order: Vec<usize> = (0..n).collect();
                order.extend(extra.into_iter().filter(|i| *i < n));
                Just(order).prop_shuffle()
            });
            (Just(events), order)
        })
    ) {
        let reference = resolve(events.clone(), |d| *d);
        let shuffled: Vec<_> = arrival.iter().map(|i| events[*i].clone()).collect();
        let r = resolve(shuffled, |d| *d);
        prop_assert_eq!(&r, &reference);
        // Nothing lost, nothing twice.
        prop_assert_eq!(r.accepted.len() + r.for_review.len(), events.len());
        // The accepted events are the decision's causal past; the conflicts
        // are exactly the concurrent pairs.
        if let Some(d) = r.decision {
            let winner = events.iter().find(|e| e.key() == d).unwrap();
            prop_assert!(r.accepted.iter().all(|e| e.clock.le(&winner.clock)));
            prop_assert!(r.for_review.iter().all(|c| !c.event.clock.le(&winner.clock)));
            // No decisive event in the causal past of the winner besides itself.
            prop_assert!(r.accepted.iter().filter(|e| e.event).count() == 1);
        } else {
            prop_assert!(events.iter().all(|e| !e.event));
        }
        let concurrent = events
            .iter()
            .enumerate()
            .flat_map(|(i, a)| events[i + 1..].iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.clock.compare(&b.clock) == Causality::Concurrent)
            .count();
        prop_assert_eq!(r.conflicts.len(), concurrent);
    }
}
