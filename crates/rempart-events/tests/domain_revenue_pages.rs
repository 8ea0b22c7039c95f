//! The projection's page fold, by proptest: however the events are cut
//! into pages, and whatever pages are handed over again (a replay), the
//! rows are those of one fold over every event, which are the in-memory
//! projection's.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rempart_events::envelope::encode;
use rempart_events::money::{Cents, VatRate, ticket_totals};
use rempart_events::projection::{Revenue, RevenueProjection};
use rempart_events::revenue::plan_page;
use rempart_events::store::RecordedEvent;
use rempart_events::ticket::{BusinessDate, TicketClosed, TicketEvent, TicketMeta};

/// Events as a store would hand them back, positions 1, 2, 3…
fn recorded(sales: &[(u8, u8, i64, bool)]) -> Vec<(RecordedEvent, TicketMeta, TicketEvent)> {
    sales
        .iter()
        .enumerate()
        .map(|(i, (store, day, cents, training))| {
            let meta = TicketMeta {
                store_id: format!("m-{store}").as_str().into(),
                register_id: "r".into(),
                business_date: BusinessDate::new(2026, 11, 1 + day).unwrap(),
            };
            let totals = ticket_totals(&[(VatRate::NORMAL, Cents::new(*cents))], &[]).unwrap();
            let event =
                TicketEvent::Closed(TicketClosed::from_totals(totals, "n", *training).unwrap());
            let e = encode(&meta, &event);
            let r = RecordedEvent {
                position: i as u64 + 1,
                event_id: e.event_id,
                stream_id: format!("ticket-{i}"),
                version: 1,
                event_type: e.event_type,
                payload: e.payload,
                metadata: e.metadata,
                clock: Vec::new(),
                recorded_at: i as i64,
                checkpoint: None,
                chain_seq: i as u64 + 1,
                chain_hash: [0; 32],
                signature: None,
            };
            (r, meta, event)
        })
        .collect()
}

proptest! {
    #[test]
    fn pages_and_replays_fold_to_the_in_memory_projection(
        sales in prop::collection::vec((0u8..3, 0u8..3, 1i64..100_000, prop::bool::weighted(0.1)), 1..60),
        cuts in prop::collection::vec((0usize..60, 1usize..20), 1..30),
    ) {
        let events = recorded(&sales);
        let mut memory = RevenueProjection::new();
        for (r, meta, event) in &events {
            memory.apply(r.position, meta, event).unwrap();
        }
        let all: Vec<RecordedEvent> = events.iter().map(|(r, _, _)| r.clone()).collect();

        // Pages starting anywhere at or before the checkpoint + 1: a replay
        // of what is applied, then what is new.
        let mut rows: BTreeMap<_, Revenue> = BTreeMap::new();
        let mut checkpoint: Option<u64> = None;
        let mut cuts = cuts.into_iter();
        while checkpoint.unwrap_or(0) < all.len() as u64 {
            let (back, len) = cuts.next().unwrap_or((0, 60));
            let next = checkpoint.unwrap_or(0) as usize;
            let start = next.saturating_sub(back);
            let page = &all[start..(next + len).min(all.len())];
            let plan = plan_page(checkpoint, page).unwrap();
            for (k, r) in plan.changes {
                let row = rows.entry(k).or_default();
                row.total_ht = row.total_ht.checked_add(r.total_ht).unwrap();
                row.total_tva = row.total_tva.checked_add(r.total_tva).unwrap();
                row.ticket_count += r.ticket_count;
            }
            checkpoint = plan.last.map(|a| a.position).or(checkpoint);
        }
        prop_assert_eq!(&rows, memory.rows());
        prop_assert_eq!(checkpoint, memory.checkpoint());
    }

    #[test]
    fn a_page_past_a_hole_is_refused(skip in 2u64..10) {
        let events = recorded(&[(0, 0, 100, false); 12]);
        let page: Vec<RecordedEvent> = events.into_iter().map(|(r, _, _)| r).skip(skip as usize).collect();
        let e = plan_page(Some(1), &page).unwrap_err();
        prop_assert!(e.to_string().contains("position 1 and was given position"), "{}", e);
    }
}
