//! Sync's pure decisions: what a register pushes, which batches central
//! refuses, and what central does with events arriving duplicated and out
//! of order (proptest).

use std::collections::HashSet;

use proptest::prelude::*;
use rempart_events::chain::hex;
use rempart_events::clock::{CausalBuffer, Causality, RegisterNo, VectorClock};
use rempart_events::conflict::StreamEvent;
use rempart_events::sync::decide::{
    Enrolment, MAX_BATCH_EVENTS, advance_ack, check_batch, new_conflicts, next_push, take_batch,
};
use rempart_events::sync::wire::{PushBatch, WireEvent};
use serde_json::json;
use uuid::Uuid;

fn wire(register: &str, no: u32, clock: &VectorClock, id: Uuid) -> WireEvent {
    WireEvent {
        event_id: id,
        stream_id: "t-1".into(),
        event_type: "ARTICLE_AJOUTE".into(),
        payload: json!({}),
        store_id: "s1".into(),
        register_id: register.into(),
        training: false,
        metadata: Default::default(),
        clock: hex(&clock.encode()),
        recorded_at: 0,
        checkpoint: None,
        chain_seq: clock.get(RegisterNo(no)),
        chain_hash: hex(&[0; 32]),
        signature: None,
        position: 0,
    }
}

fn chain(register: &str, no: u32, n: u64) -> Vec<WireEvent> {
    let mut c = VectorClock::new();
    (0..n)
        .map(|_| {
            c.tick(RegisterNo(no)).unwrap();
            wire(register, no, &c, Uuid::new_v4())
        })
        .collect()
}

fn batch(events: Vec<WireEvent>) -> PushBatch {
    PushBatch {
        register_id: "r-1".into(),
        register_no: 1,
        store_id: "s1".into(),
        public_key: hex(&[1; 32]),
        events,
    }
}

#[test]
fn a_register_pushes_what_central_has_not_acknowledged() {
    assert_eq!(next_push(0, 0, 100), None);
    assert_eq!(next_push(0, 5, 100), Some((1, 5)));
    assert_eq!(next_push(3, 500, 100), Some((4, 103)));
    assert_eq!(next_push(7, 7, 100), None);
    // A late answer to an earlier request does not move the ack back.
    assert_eq!(advance_ack(10, 4), 10);
    assert_eq!(advance_ack(4, 10), 10);
}

#[test]
fn central_refuses_a_batch_that_is_not_the_senders_chain() {
    let good = chain("r-1", 1, 3);
    assert_eq!(check_batch(&batch(good.clone()), None), Ok(()));
    // Another register's event inside.
    let mut other = good.clone();
    other[1].register_id = "r-2".into();
    let e = check_batch(&batch(other), None).unwrap_err();
    assert!(
        e.contains("events[1]") && e.contains("pushes its own chain only"),
        "{e}"
    );
    // Another shop.
    let mut shop = good.clone();
    shop[0].store_id = "s2".into();
    assert!(
        check_batch(&batch(shop), None)
            .unwrap_err()
            .contains("events[0]")
    );
    // A gap in the chain.
    let gap = vec![good[0].clone(), good[2].clone()];
    assert!(
        check_batch(&batch(gap), None)
            .unwrap_err()
            .contains("without gaps")
    );
    // A clock that does not count the event at its seq.
    let mut unticked = good.clone();
    unticked[2].chain_seq = 9;
    assert!(
        check_batch(&batch(unticked), None)
            .unwrap_err()
            .contains("ticks its own")
    );
    // Not hex.
    let mut garbled = good.clone();
    garbled[0].clock = "zz".into();
    assert!(
        check_batch(&batch(garbled), None)
            .unwrap_err()
            .contains("not hex")
    );
    // A register that changed number or shop.
    let known = Enrolment {
        register_no: 2,
        store_id: "s1".into(),
    };
    assert!(
        check_batch(&batch(good), Some(&known))
            .unwrap_err()
            .contains("enrolled as number 2")
    );
    // Too many events.
    let big = chain("r-1", 1, MAX_BATCH_EVENTS as u64 + 1);
    assert!(
        check_batch(&batch(big), None)
            .unwrap_err()
            .contains("at most")
    );
}

#[test]
fn a_batch_sent_twice_adds_nothing_the_second_time() {
    let events = chain("r-1", 1, 4);
    let mut buffer = CausalBuffer::new();
    let first = take_batch(&mut buffer, &HashSet::new(), 1, events.clone()).unwrap();
    assert_eq!((first.append.len(), first.duplicates), (4, 0));
    // Central lost its memory (restart) but holds the ids.
    let known: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    let mut fresh = CausalBuffer::new();
    let again = take_batch(&mut fresh, &known, 1, events.clone()).unwrap();
    assert_eq!((again.append.len(), again.duplicates), (0, 4));
    // Same process, ids not looked up: the buffer knows them by (register, counter).
    let again = take_batch(&mut buffer, &HashSet::new(), 1, events).unwrap();
    assert_eq!((again.append.len(), again.duplicates), (0, 4));
}

#[test]
fn a_later_batch_waits_for_the_earlier_one() {
    let events = chain("r-1", 1, 6);
    let mut buffer = CausalBuffer::new();
    let late = take_batch(&mut buffer, &HashSet::new(), 1, events[3..].to_vec()).unwrap();
    assert!(late.append.is_empty());
    assert_eq!(buffer.waiting(), 3);
    let early = take_batch(&mut buffer, &HashSet::new(), 1, events[..3].to_vec()).unwrap();
    let ids: Vec<Uuid> = early.append.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
}

#[test]
fn concurrent_closes_on_one_stream_are_reported_with_the_first_close_winning() {
    let (a, b) = (RegisterNo(1), RegisterNo(2));
    let mut opened = VectorClock::new();
    opened.tick(a).unwrap();
    let mut close_a = opened.clone();
    close_a.tick(a).unwrap();
    let mut close_b = opened.clone();
    close_b.tick(b).unwrap();
    let ev = |origin, clock: &VectorClock, t: &str| StreamEvent {
        origin,
        clock: clock.clone(),
        event: t.to_owned(),
    };
    let existing = vec![
        ev(a, &opened, "TICKET_OUVERT"),
        ev(a, &close_a, "TICKET_CLOS"),
    ];
    let found = new_conflicts(existing.clone(), vec![ev(b, &close_b, "TICKET_CLOS")]);
    assert_eq!(found.len(), 1);
    let (c, decision) = found[0];
    assert_eq!((c.first.origin, c.second.origin), (a, b));
    assert_eq!(decision.map(|d| d.origin), Some(a));
    // Nothing new: nothing reported again.
    assert!(new_conflicts(existing, vec![]).is_empty());
}

/// A causal history: registers sell (tick) and pull from each other (merge).
fn history(steps: &[(u8, u8, bool)], registers: u32) -> Vec<(u32, VectorClock, Uuid)> {
    let mut clocks = vec![VectorClock::new(); registers as usize];
    let mut out = Vec::new();
    for &(who, from, pull) in steps {
        let (who, from) = (u32::from(who) % registers, u32::from(from) % registers);
        if pull {
            let theirs = clocks[from as usize].clone();
            clocks[who as usize].merge_in(&theirs);
        } else {
            clocks[who as usize].tick(RegisterNo(who)).unwrap();
            out.push((who, clocks[who as usize].clone(), Uuid::new_v4()));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the duplication and reordering of deliveries, once every
    /// event has arrived at least once, central appends each exactly once,
    /// and never one before an event it causally depends on.
    #[test]
    fn central_appends_each_event_once_in_causal_order(
        steps in prop::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..80),
        registers in 1u32..5,
        deliveries in prop::collection::vec((any::<prop::sample::Index>(), 1usize..4), 0..120),
        restart_at in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let events = history(&steps, registers);
        // Arrivals: random batches of a register's consecutive events (any
        // start, so duplicates and gaps), then every event once, shuffled
        // order of registers, so everything arrives at least once.
        let mut arrivals: Vec<Vec<usize>> = Vec::new();
        for (pick, len) in &deliveries {
            if events.is_empty() { break; }
            let i = pick.index(events.len());
            let origin = events[i].0;
            let run: Vec<usize> = (i..events.len()).filter(|j| events[*j].0 == origin).take(*len).collect();
            arrivals.push(run);
        }
        for r in (0..registers).rev() {
            arrivals.push((0..events.len()).filter(|j| events[*j].0 == r).collect());
        }
        let restart = restart_at.map(|i| i.index(arrivals.len()));
        let mut buffer: CausalBuffer<WireEvent> = CausalBuffer::new();
        let mut appended: Vec<(u32, VectorClock, Uuid)> = Vec::new();
        for (n, run) in arrivals.iter().enumerate() {
            if Some(n) == restart {
                // Central restarts: the buffer is rebuilt from what is stored.
                let mut delivered = VectorClock::new();
                for (o, c, _) in &appended { delivered.set(RegisterNo(*o), c.get(RegisterNo(*o))); }
                buffer = CausalBuffer::resume_from(delivered);
            }
            let Some(first) = run.first() else { continue };
            let origin = events[*first].0;
            let batch: Vec<WireEvent> = run.iter().map(|j| {
                let (o, c, id) = &events[*j];
                wire(&format!("r-{o}"), *o, c, *id)
            }).collect();
            let known: HashSet<Uuid> = appended.iter().map(|e| e.2).collect();
            let intake = take_batch(&mut buffer, &known, origin, batch).unwrap();
            for e in intake.append {
                let clock = VectorClock::decode(&rempart_events::chain::unhex(&e.clock).unwrap()).unwrap();
                let origin: u32 = e.register_id[2..].parse().unwrap();
                appended.push((origin, clock, e.event_id));
            }
        }
        // Registers resend what central has not acknowledged (events held
        // back by a central that then restarted), until acknowledged.
        for _ in 0..=registers {
            for r in 0..registers {
                let acked = buffer.delivered().get(RegisterNo(r));
                let batch: Vec<WireEvent> = events.iter()
                    .filter(|(o, c, _)| *o == r && c.get(RegisterNo(r)) > acked)
                    .map(|(o, c, id)| wire(&format!("r-{o}"), *o, c, *id))
                    .collect();
                let known: HashSet<Uuid> = appended.iter().map(|e| e.2).collect();
                for e in take_batch(&mut buffer, &known, r, batch).unwrap().append {
                    let clock = VectorClock::decode(&rempart_events::chain::unhex(&e.clock).unwrap()).unwrap();
                    let origin: u32 = e.register_id[2..].parse().unwrap();
                    appended.push((origin, clock, e.event_id));
                }
            }
        }
        let ids: Vec<Uuid> = appended.iter().map(|e| e.2).collect();
        let unique: HashSet<Uuid> = ids.iter().copied().collect();
        prop_assert_eq!(ids.len(), unique.len(), "an event appended twice");
        prop_assert_eq!(unique.len(), events.len(), "an event never appended");
        for (i, a) in appended.iter().enumerate() {
            for b in &appended[i + 1..] {
                prop_assert_ne!(b.1.compare(&a.1), Causality::Before, "appended before what it depends on");
            }
        }
    }

    /// The pairs reported when events join a stream are exactly the
    /// concurrent pairs with at least one new event.
    #[test]
    fn new_conflicts_are_the_concurrent_pairs_with_a_new_event(
        steps in prop::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..40),
        split in any::<prop::sample::Index>(),
    ) {
        let events: Vec<StreamEvent<String>> = history(&steps, 3)
            .into_iter()
            .map(|(o, c, _)| StreamEvent { origin: RegisterNo(o), clock: c, event: "ARTICLE_AJOUTE".into() })
            .collect();
        let k = split.index(events.len() + 1);
        let (old, new) = events.split_at(k);
        let found = new_conflicts(old.to_vec(), new.to_vec());
        let mut expected = 0;
        for (i, a) in events.iter().enumerate() {
            for (j, b) in events.iter().enumerate().skip(i + 1) {
                if (i >= k || j >= k) && a.clock.compare(&b.clock) == Causality::Concurrent {
                    expected += 1;
                }
            }
        }
        prop_assert_eq!(found.len(), expected);
        prop_assert!(found.iter().all(|(_, d)| d.is_none()), "no close: no decision");
    }
}
