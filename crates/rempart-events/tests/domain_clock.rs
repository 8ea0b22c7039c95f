//! Vector clocks: the partial-order laws, merge as least upper bound, the
//! compact encoding and its size for 500 registers, and causal delivery.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use rempart_events::clock::{CausalBuffer, Causality, ClockError, RegisterNo, VectorClock};

fn clock() -> impl Strategy<Value = VectorClock> {
    // Few registers and small counters, so that every relation shows up.
    prop::collection::btree_map(0u32..6, 1u64..4, 0..6)
        .prop_map(|m| VectorClock::try_from(m).unwrap())
}

fn clock_of(entries: &[(u32, u64)]) -> VectorClock {
    let mut c = VectorClock::new();
    for (r, n) in entries {
        c.set(RegisterNo(*r), *n);
    }
    c
}

#[test]
fn compare_names_the_four_relations() {
    let a = clock_of(&[(1, 1)]);
    let b = clock_of(&[(1, 1), (2, 1)]);
    let c = clock_of(&[(1, 2)]);
    assert_eq!(a.compare(&a), Causality::Equal);
    assert_eq!(a.compare(&b), Causality::Before);
    assert_eq!(b.compare(&a), Causality::After);
    assert_eq!(b.compare(&c), Causality::Concurrent);
    // An absent entry is zero: {} is before everything else.
    assert_eq!(VectorClock::new().compare(&a), Causality::Before);
}

#[test]
fn clock_sizes() {
    // One store: 6 registers, 10 000 events each.
    let store = clock_of(&(0..6).map(|r| (r, 10_000)).collect::<Vec<_>>());
    // The whole fleet: 500 registers, 10 000 events each (a clock that heard
    // of every register: the worst case, not the usual one).
    let fleet = clock_of(&(0..500).map(|r| (r, 10_000)).collect::<Vec<_>>());
    // A register's first event.
    let fresh = clock_of(&[(417, 1)]);
    // The seed's JSON, for comparison.
    let seed_json = |c: &VectorClock| {
        let m: BTreeMap<String, u64> = c
            .entries()
            .map(|(r, n)| (format!("caisse_{:03}", r.0), n))
            .collect();
        serde_json::to_vec(&m).unwrap().len()
    };
    let sizes = [
        ("fresh", fresh.encode().len(), seed_json(&fresh)),
        ("store of 6", store.encode().len(), seed_json(&store)),
        ("fleet of 500", fleet.encode().len(), seed_json(&fleet)),
    ];
    for (what, ours, seed) in sizes {
        println!("{what}: {ours} bytes encoded, {seed} bytes as the seed's JSON");
    }
    // The module doc quotes these figures.
    assert_eq!(fresh.encode().len(), 4);
    assert_eq!(store.encode().len(), 19);
    assert_eq!(fleet.encode().len(), 1_502);
    assert_eq!(seed_json(&fleet), 9_501);
}

#[test]
fn decode_refuses_what_encode_never_writes() {
    let c = clock_of(&[(3, 300), (9, 1)]);
    let bytes = c.encode();
    assert_eq!(VectorClock::decode(&bytes).unwrap(), c);
    // Truncated, trailing byte, zero counter, non-minimal varint.
    assert!(VectorClock::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(VectorClock::decode(&longer).is_err());
    assert!(VectorClock::decode(&[1, 0, 0]).is_err());
    assert!(matches!(
        VectorClock::decode(&[1, 0, 0x81, 0x00]),
        Err(ClockError::Encoding {
            what: "non-minimal varint",
            ..
        })
    ));
    assert!(serde_json::from_str::<VectorClock>(r#"{"3":0}"#).is_err());
}

proptest! {
    #[test]
    fn order_is_reflexive_and_antisymmetric(a in clock(), b in clock()) {
        prop_assert_eq!(a.compare(&a), Causality::Equal);
        prop_assert!(a.le(&a));
        if a.le(&b) && b.le(&a) {
            prop_assert_eq!(&a, &b);
        }
        let flipped = match a.compare(&b) {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            other => other,
        };
        prop_assert_eq!(b.compare(&a), flipped);
        prop_assert_eq!(a.compare(&b) == Causality::Before, a.le(&b) && a != b);
    }

    #[test]
    fn order_is_transitive(a in clock(), x in clock(), y in clock(), c in clock()) {
        // A chain built by merging, and random triples.
        let b = a.merge(&x);
        let d = b.merge(&y);
        prop_assert!(a.le(&b) && b.le(&d) && a.le(&d));
        if a.le(&c) && c.le(&x) {
            prop_assert!(a.le(&x));
        }
    }

    #[test]
    fn merge_is_the_least_upper_bound(a in clock(), b in clock(), c in clock(), z in clock()) {
        let m = a.merge(&b);
        prop_assert_eq!(&m, &b.merge(&a));
        prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        prop_assert_eq!(&a.merge(&a), &a);
        prop_assert!(a.le(&m) && b.le(&m));
        // Least: any upper bound is above the merge.
        let above = m.merge(&z);
        prop_assert!(m.le(&above));
        if a.le(&c) && b.le(&c) {
            prop_assert!(m.le(&c));
        }
    }

    #[test]
    fn encoding_round_trips(m in prop::collection::btree_map(any::<u32>(), 1u64.., 0..40)) {
        let c = VectorClock::try_from(m).unwrap();
        prop_assert_eq!(VectorClock::decode(&c.encode()).unwrap(), c.clone());
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<VectorClock>(&json).unwrap(), c);
    }

    #[test]
    fn decoding_any_bytes_never_panics_and_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        if let Ok(c) = VectorClock::decode(&bytes) {
            prop_assert_eq!(c.encode(), bytes);
        }
    }
}

/// A causally consistent history: register `r` either records an event on
/// its own or first receives an earlier event of the history (merging its
/// clock, so it now depends on it).
fn history(ops: &[(u32, Option<usize>)]) -> Vec<(RegisterNo, VectorClock)> {
    let mut clocks: BTreeMap<u32, VectorClock> = BTreeMap::new();
    let mut events: Vec<(RegisterNo, VectorClock)> = Vec::new();
    for (r, received) in ops {
        let mut c = clocks.remove(r).unwrap_or_default();
        if let Some(i) = received
            && !events.is_empty()
        {
            c.merge_in(&events[i % events.len()].1);
        }
        c.tick(RegisterNo(*r)).unwrap();
        events.push((RegisterNo(*r), c.clone()));
        clocks.insert(*r, c);
    }
    events
}

fn ops() -> impl Strategy<Value = Vec<(u32, Option<usize>)>> {
    prop::collection::vec(
        (0u32..5, prop::option::weighted(0.4, any::<usize>())),
        0..60,
    )
}

proptest! {
    #[test]
    fn causal_buffer_releases_each_event_once_in_causal_order(
        (events, deliveries) in ops().prop_flat_map(|ops| {
            let events = history(&ops);
            let n = events.len();
            // Every event at least once, some twice, in any order.
            let extra = prop::collection::vec(0..n.max(1), 0..n.max(1) / 2 + 1);
            (Just(events), extra.prop_flat_map(move |extra| {
                let mut order: Vec<usize> = (0..n).collect();
                order.extend(extra.into_iter().filter(|i| *i < n));
                Just(order).prop_shuffle()
            }))
        })
    ) {
        let mut buffer = CausalBuffer::new();
        let mut released = Vec::new();
        for i in deliveries {
            let (origin, clock) = &events[i];
            released.extend(buffer.offer(*origin, clock.clone(), i).unwrap());
        }
        prop_assert_eq!(buffer.waiting(), 0);
        prop_assert_eq!(released.len(), events.len());
        let once: HashSet<usize> = released.iter().map(|d| d.item).collect();
        prop_assert_eq!(once.len(), events.len());
        for (k, later) in released.iter().enumerate() {
            for earlier in &released[..k] {
                prop_assert!(
                    later.clock.compare(&earlier.clock) != Causality::Before,
                    "{:?} released after {:?}, which depends on it", later, earlier
                );
            }
        }
    }
}

#[test]
fn an_event_waits_for_what_it_depends_on() {
    let (a, b) = (RegisterNo(1), RegisterNo(2));
    let a1 = clock_of(&[(1, 1)]);
    let b1 = clock_of(&[(1, 1), (2, 1)]); // b received a1, then recorded.
    let b2 = clock_of(&[(1, 1), (2, 2)]);
    let mut buffer = CausalBuffer::new();
    assert!(buffer.offer(b, b2.clone(), "b2").unwrap().is_empty());
    assert!(buffer.offer(b, b1.clone(), "b1").unwrap().is_empty());
    assert_eq!(buffer.waiting(), 2);
    // b1 is there but waits for a1: a's first event is what is missing.
    assert_eq!(buffer.missing(), vec![(a, 1)]);
    let out = buffer.offer(a, a1, "a1").unwrap();
    let items: Vec<_> = out.iter().map(|d| d.item).collect();
    assert_eq!(items, ["a1", "b1", "b2"]);
    assert_eq!(buffer.delivered(), &b2);
    // After a restart, the store's delivered clock says what is in.
    let mut gap = CausalBuffer::new();
    gap.offer(a, clock_of(&[(1, 3)]), "a3").unwrap();
    assert_eq!(gap.missing(), vec![(a, 1)]);
    let mut resumed = CausalBuffer::resume_from(b2.clone());
    assert!(resumed.offer(b, b1, "b1 again").unwrap().is_empty());
    assert!(matches!(
        resumed.offer(a, clock_of(&[(2, 1)]), "not ticked"),
        Err(ClockError::NotTicked { register: 1 })
    ));
}

proptest! {
    /// One event never arrives: exactly the events that do not depend on it
    /// are released, and the buffer names what it waits for.
    #[test]
    fn a_lost_event_holds_back_exactly_what_depends_on_it(
        ops in ops(),
        lost in any::<prop::sample::Index>(),
    ) {
        let events = history(&ops);
        prop_assume!(!events.is_empty());
        let lost = lost.index(events.len());
        let (lost_origin, lost_clock) = &events[lost];
        let mut buffer = CausalBuffer::new();
        let mut released = HashSet::new();
        for (i, (origin, clock)) in events.iter().enumerate().rev() {
            if i != lost {
                released.extend(buffer.offer(*origin, clock.clone(), i).unwrap().into_iter().map(|d| d.item));
            }
        }
        let expected: HashSet<usize> = (0..events.len())
            .filter(|i| !lost_clock.le(&events[*i].1))
            .collect();
        prop_assert_eq!(&released, &expected);
        if released.len() + 1 < events.len() {
            prop_assert!(buffer.missing().contains(&(*lost_origin, lost_clock.get(*lost_origin))));
        }
    }
}
