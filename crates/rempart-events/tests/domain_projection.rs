//! The revenue projection: keyed by (date, store) from the metadata, a
//! replay changes nothing, and a rebuild from zero gives the same rows.

use proptest::prelude::*;
use rempart_events::closure::close_day;
use rempart_events::money::{Cents, VatRate, ticket_totals};
use rempart_events::projection::{Revenue, RevenueProjection, Step};
use rempart_events::ticket::{
    BusinessDate, StoreId, TicketClosed, TicketEvent, TicketMeta, TicketSuspended,
};

fn meta(store: &str, register: &str, d: u8) -> TicketMeta {
    TicketMeta {
        store_id: store.into(),
        register_id: register.into(),
        business_date: BusinessDate::new(2026, 11, d).unwrap(),
    }
}

fn closed(cents: i64, rate: VatRate, training: bool) -> TicketEvent {
    TicketEvent::Closed(
        TicketClosed::from_totals(
            ticket_totals(&[(rate, Cents::new(cents))], &[]).unwrap(),
            "n",
            training,
        )
        .unwrap(),
    )
}

#[test]
fn a_replayed_event_is_not_counted_twice() {
    // The seed's upsert added the ticket again on each replay.
    let m = meta("magasin001", "magasin001_caisse01", 5);
    let e = closed(12_00, VatRate::NORMAL, false);
    let mut p = RevenueProjection::new();
    assert!(matches!(
        p.apply(1, &m, &e).unwrap(),
        Step::Advance {
            change: Some(_),
            ..
        }
    ));
    assert_eq!(p.apply(1, &m, &e).unwrap(), Step::AlreadyApplied);
    let row = p.row(m.business_date, &m.store_id).unwrap();
    assert_eq!(
        *row,
        Revenue {
            total_ht: Cents::new(10_00),
            total_tva: Cents::new(2_00),
            ticket_count: 1,
        }
    );
}

#[test]
fn the_store_comes_from_the_metadata_and_training_is_left_out() {
    // A register whose name does not start with its store's id.
    let m = meta("magasin-lyon-3", "caisse_12_bis", 5);
    let mut p = RevenueProjection::new();
    p.apply(1, &m, &closed(5_00, VatRate::NORMAL, false))
        .unwrap();
    p.apply(2, &m, &closed(7_00, VatRate::NORMAL, true))
        .unwrap();
    let suspend = TicketEvent::Suspended(TicketSuspended {
        register_id: "caisse_12_bis".into(),
    });
    assert_eq!(
        p.apply(3, &m, &suspend).unwrap(),
        Step::Advance {
            checkpoint: 3,
            change: None,
        }
    );
    assert_eq!(p.checkpoint(), Some(3));
    assert_eq!(p.rows().len(), 1);
    let row = p
        .row(m.business_date, &StoreId::from("magasin-lyon-3"))
        .unwrap();
    assert_eq!(row.ticket_count, 1);
    assert_eq!(
        row.total_ht.checked_add(row.total_tva).unwrap(),
        Cents::new(5_00)
    );
}

/// A global log: (position, meta, event), positions increasing with gaps.
fn log() -> impl Strategy<Value = Vec<(u64, TicketMeta, TicketEvent)>> {
    let event = prop_oneof![
        4 => (1i64..100_000, prop_oneof![Just(VatRate::NORMAL), Just(VatRate::REDUCED)], prop::bool::weighted(0.1))
            .prop_map(|(c, r, t)| closed(c, r, t)),
        1 => Just(TicketEvent::Suspended(TicketSuspended { register_id: "caisse".into() })),
    ];
    prop::collection::vec((1u64..3, 0usize..3, 1u8..4, event), 0..80).prop_map(|items| {
        let mut position = 0;
        items
            .into_iter()
            .map(|(gap, store, d, e)| {
                position += gap;
                let store = ["magasin-a", "magasin-b", "magasin-c"][store];
                (position, meta(store, "caisse", d), e)
            })
            .collect()
    })
}

proptest! {
    /// Crashes and redeliveries: after each crash, the projection restarts
    /// from its last committed (rows, checkpoint) and the subscription
    /// re-reads from an earlier position; events also arrive twice. The
    /// rows equal one clean pass, and a rebuild from zero.
    #[test]
    fn replay_with_duplicates_and_restarts_equals_one_pass(
        log in log(),
        rewinds in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..6),
    ) {
        let mut once = RevenueProjection::new();
        for (pos, m, e) in &log {
            once.apply(*pos, m, e).unwrap();
        }
        let mut rebuilt = RevenueProjection::new();
        for (pos, m, e) in &log {
            rebuilt.apply(*pos, m, e).unwrap();
        }
        prop_assert_eq!(&rebuilt, &once);

        // Each rewind: after `at` events, restart and re-read from `back` ≤ `at`.
        let mut rewinds: Vec<(usize, usize)> = rewinds
            .iter()
            .map(|(at, back)| {
                let at = at.index(log.len() + 1);
                (at, back.index(at + 1))
            })
            .collect();
        rewinds.sort();
        let mut rewinds = rewinds.into_iter().peekable();
        let mut p = RevenueProjection::new();
        let mut next = 0;
        while next < log.len() {
            let (pos, m, e) = &log[next];
            p.apply(*pos, m, e).unwrap();
            p.apply(*pos, m, e).unwrap(); // delivered twice
            next += 1;
            if let Some(&(at, back)) = rewinds.peek()
                && at <= next
            {
                rewinds.next();
                // A restart: the committed state (rows and checkpoint
                // together), and a subscription re-reading from earlier.
                p = p.clone();
                next = back;
            }
        }
        prop_assert_eq!(&p, &once);
    }

    /// With one register per store, a store's row equals its day closure.
    #[test]
    fn the_projection_equals_the_day_closures(log in log()) {
        let mut p = RevenueProjection::new();
        for (pos, m, e) in &log {
            p.apply(*pos, m, e).unwrap();
        }
        for ((date, store), row) in p.rows() {
            let events: Vec<_> = log
                .iter()
                .filter(|(_, m, _)| m.business_date == *date && &m.store_id == store)
                .map(|(_, m, e)| (m, e))
                .collect();
            let c = close_day(*date, Cents::ZERO, events).unwrap();
            let t = c.sales.breakdown.total().unwrap();
            prop_assert_eq!((row.total_ht, row.total_tva, row.ticket_count), (t.ht, t.tva, c.sales.ticket_count));
        }
    }
}
