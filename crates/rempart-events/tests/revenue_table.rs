//! The `chiffre_affaires` table on SQLite and the real PostgreSQL: a replay
//! changes nothing, the checkpoint goes with the rows, a rebuild gives the
//! incremental rows, and the totals are the tickets' to the cent.

use std::collections::BTreeMap;

use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_events::envelope::encode;
use rempart_events::money::{Cents, Discount, VatRate, ticket_totals};
use rempart_events::projection::Revenue;
use rempart_events::revenue::{Lag, RevenueRow, RevenueTable};
use rempart_events::schema::EVENTS_SCHEMA;
use rempart_events::store::{EventStore, ExpectedVersion, NewEvent};
use rempart_events::ticket::{
    ArticleAdded, BusinessDate, PaymentMode, PaymentReceived, TicketCancelled, TicketClosed,
    TicketEvent, TicketMeta, TicketOpened,
};

async fn setup(backend: &str) -> (EventStore, RevenueTable, TestDb) {
    let t = TestDb::new(backend).await.unwrap();
    t.db.migrate(&EVENTS_SCHEMA).await.unwrap();
    let store = EventStore::new(t.db.clone());
    let table = RevenueTable::open(t.db.clone()).await.unwrap();
    (store, table, t)
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One ticket's events, and its close if it was closed.
struct Sale {
    meta: TicketMeta,
    events: Vec<TicketEvent>,
    close: Option<TicketClosed>,
}

fn sale(rng: &mut Lcg, n: u32) -> Sale {
    let store = ["magasin-lyon-3", "magasin-paris-11", "magasin-lille-1"][rng.next(3) as usize];
    let meta = TicketMeta {
        store_id: store.into(),
        register_id: format!("{store}/caisse-{}", rng.next(2)).as_str().into(),
        business_date: BusinessDate::new(2026, 11, 27 + rng.next(3) as u8).unwrap(),
    };
    let training = rng.next(10) == 0;
    let mut events = vec![TicketEvent::Opened(TicketOpened {
        ticket_id: format!("t-{n}").as_str().into(),
        cashier_id: "c-1".into(),
        register_id: meta.register_id.clone(),
        training,
    })];
    let mut lines = Vec::new();
    for i in 0..1 + rng.next(4) {
        let rate = VatRate::FRENCH[rng.next(4) as usize];
        let quantity = 1 + rng.next(3) as u32;
        let unit = Cents::new(1 + rng.next(5_000) as i64);
        events.push(TicketEvent::ArticleAdded(ArticleAdded {
            code_ean: format!("ean-{i}"),
            label: "article".into(),
            quantity,
            unit_price: unit,
            vat_rate: rate,
        }));
        lines.push((rate, unit.checked_mul(i64::from(quantity)).unwrap()));
    }
    let discounts: Vec<Discount> = match rng.next(3) {
        0 => vec![Discount::Percent {
            basis_points: 1 + rng.next(3_000) as u32,
        }],
        _ => vec![],
    };
    let totals = ticket_totals(&lines, &discounts).unwrap();
    if rng.next(8) == 0 {
        events.push(TicketEvent::Cancelled(TicketCancelled {
            reason: "client parti".into(),
        }));
        return Sale {
            meta,
            events,
            close: None,
        };
    }
    events.push(TicketEvent::PaymentReceived(PaymentReceived {
        mode: PaymentMode::Card,
        amount: totals.ttc(),
    }));
    let close = TicketClosed::from_totals(totals, format!("{n:05}"), training).unwrap();
    events.push(TicketEvent::Closed(close.clone()));
    Sale {
        meta,
        events,
        close: Some(close),
    }
}

fn sales(seed: u64, count: u32) -> Vec<Sale> {
    let mut rng = Lcg(seed);
    (0..count).map(|n| sale(&mut rng, n)).collect()
}

async fn append(store: &EventStore, sales: &[Sale], first_ticket: usize) {
    for (i, s) in sales.iter().enumerate() {
        let events: Vec<NewEvent> = s.events.iter().map(|e| encode(&s.meta, e)).collect();
        store
            .append(
                &format!("ticket-{}", first_ticket + i),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .unwrap();
    }
}

/// What the rows must be, added up from the tickets' per-rate lines (not
/// from their totals, which is what the projection reads).
fn expected(sales: &[Sale]) -> Vec<RevenueRow> {
    let mut rows: BTreeMap<_, Revenue> = BTreeMap::new();
    for s in sales {
        let Some(c) = s.close.as_ref().filter(|c| !c.training) else {
            continue;
        };
        let row = rows
            .entry((s.meta.business_date, s.meta.store_id.clone()))
            .or_default();
        for line in c.breakdown.lines() {
            row.total_ht = Cents::new(row.total_ht.get() + line.ht.get());
            row.total_tva = Cents::new(row.total_tva.get() + line.tva.get());
        }
        row.ticket_count += 1;
    }
    rows.into_iter()
        .map(|((date, store_id), revenue)| RevenueRow {
            date,
            store_id,
            revenue,
        })
        .collect()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )* }
    };
}

both_backends!(
    replaying_the_same_events_twice_changes_nothing,
    a_failed_checkpoint_write_leaves_the_rows_untouched,
    a_rebuild_equals_the_incremental_result,
    totals_equal_the_sum_of_the_tickets_to_the_cent,
    the_lag_counts_positions_and_time_behind,
    two_runners_at_once_count_each_ticket_once,
);

async fn replaying_the_same_events_twice_changes_nothing(backend: &str) {
    let (store, table, _t) = setup(backend).await;
    let sold = sales(1, 30);
    append(&store, &sold, 0).await;
    let all = store.read_all(1, 10_000).await.unwrap();
    let first = table.apply(&all).await.unwrap();
    assert_eq!(first, all.len() as u64);
    let rows = table.rows().await.unwrap();
    assert_eq!(rows, expected(&sold));

    // The same page again, then a page overlapping the checkpoint: nothing moves.
    assert_eq!(table.apply(&all).await.unwrap(), 0);
    assert_eq!(table.apply(&all[all.len() / 2..]).await.unwrap(), 0);
    assert_eq!(table.catch_up(&store).await.unwrap(), 0);
    assert_eq!(table.rows().await.unwrap(), rows);

    // New tickets after a replayed prefix count once.
    let more = sales(2, 10);
    append(&store, &more, 30).await;
    let all = store.read_all(1, 10_000).await.unwrap();
    table.apply(&all).await.unwrap();
    table.apply(&all).await.unwrap();
    let both: Vec<Sale> = sold.into_iter().chain(more).collect();
    assert_eq!(table.rows().await.unwrap(), expected(&both));
    assert_eq!(
        table.applied().await.unwrap().unwrap().position,
        all.len() as u64
    );
}

/// A crash between the rows and the checkpoint, made deterministic: the
/// checkpoint write fails, so the rows must not have moved either.
async fn a_failed_checkpoint_write_leaves_the_rows_untouched(backend: &str) {
    let (store, table, t) = setup(backend).await;
    let sold = sales(3, 20);
    append(&store, &sold[..10], 0).await;
    table.catch_up(&store).await.unwrap();
    let before = table.rows().await.unwrap();
    let at = table.applied().await.unwrap();
    append(&store, &sold[10..], 10).await;

    let (fail, unfail): (&[&str], &[&str]) = if backend == "sqlite" {
        (
            &[
                "CREATE TRIGGER boom_i BEFORE INSERT ON projection_checkpoints BEGIN SELECT RAISE(ABORT, 'boom'); END",
                "CREATE TRIGGER boom_u BEFORE UPDATE ON projection_checkpoints BEGIN SELECT RAISE(ABORT, 'boom'); END",
            ],
            &["DROP TRIGGER boom_i", "DROP TRIGGER boom_u"],
        )
    } else {
        (
            &[
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$",
                "CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON projection_checkpoints FOR EACH ROW EXECUTE FUNCTION boom()",
            ],
            &["DROP TRIGGER boom ON projection_checkpoints"],
        )
    };
    for sql in fail {
        with_pool!(&t.db, p => { sqlx::query(sql).execute(p).await.unwrap(); });
    }
    let e = table.catch_up(&store).await.unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    assert_eq!(
        table.rows().await.unwrap(),
        before,
        "rows moved without their checkpoint"
    );
    assert_eq!(table.applied().await.unwrap(), at);

    for sql in unfail {
        with_pool!(&t.db, p => { sqlx::query(sql).execute(p).await.unwrap(); });
    }
    table.catch_up(&store).await.unwrap();
    assert_eq!(table.rows().await.unwrap(), expected(&sold));
}

async fn a_rebuild_equals_the_incremental_result(backend: &str) {
    let (store, table, _t) = setup(backend).await;
    let sold = sales(4, 60);
    // Incremental: small batches, each caught up (some twice), as central would.
    for (i, chunk) in sold.chunks(7).enumerate() {
        append(&store, chunk, i * 7).await;
        table.catch_up(&store).await.unwrap();
        if i % 3 == 0 {
            let all = store.read_all(1, 10_000).await.unwrap();
            table.apply(&all).await.unwrap();
        }
    }
    let incremental = table.rows().await.unwrap();
    let at = table.applied().await.unwrap();
    assert_eq!(incremental, expected(&sold));

    let folded = table.rebuild(&store).await.unwrap();
    assert_eq!(folded, store.head_position().await.unwrap());
    assert_eq!(table.rows().await.unwrap(), incremental);
    assert_eq!(table.applied().await.unwrap(), at);
    // Rebuilding again is the same again, and catching up after it adds nothing.
    table.rebuild(&store).await.unwrap();
    assert_eq!(table.catch_up(&store).await.unwrap(), 0);
    assert_eq!(table.rows().await.unwrap(), incremental);
}

async fn totals_equal_the_sum_of_the_tickets_to_the_cent(backend: &str) {
    let (store, table, _t) = setup(backend).await;
    let sold = sales(5, 120);
    append(&store, &sold, 0).await;
    table.catch_up(&store).await.unwrap();
    let rows = table.rows().await.unwrap();
    assert_eq!(rows, expected(&sold));
    // And overall: HT + TVA is what the customers paid, training and
    // cancelled tickets left out.
    let paid: i64 = sold
        .iter()
        .filter_map(|s| s.close.as_ref())
        .filter(|c| !c.training)
        .map(|c| c.total.get())
        .sum();
    let projected: i64 = rows
        .iter()
        .map(|r| r.revenue.total_ht.get() + r.revenue.total_tva.get())
        .sum();
    assert_eq!(projected, paid);
    let counted: u64 = rows.iter().map(|r| r.revenue.ticket_count).sum();
    assert!(
        counted > 50 && counted < 120,
        "{counted}: the mix lost its training or cancelled tickets"
    );
}

async fn the_lag_counts_positions_and_time_behind(backend: &str) {
    let (store, table, _t) = setup(backend).await;
    let sold = sales(6, 4);
    let at = |ms: i64, s: &Sale| -> Vec<NewEvent> {
        s.events
            .iter()
            .map(|e| NewEvent {
                recorded_at: Some(ms),
                ..encode(&s.meta, e)
            })
            .collect()
    };
    assert_eq!(
        table.lag(&store, 0).await.unwrap(),
        Lag {
            head: 0,
            checkpoint: 0,
            behind: 0,
            since_last_applied_ms: None
        }
    );
    let mut events_first = 0;
    for (i, s) in sold.iter().enumerate() {
        let events = at(1_000_000 + i as i64 * 1_000, s);
        if i < 2 {
            events_first += events.len() as u64;
        }
        store
            .append(&format!("ticket-{i}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        if i == 1 {
            table.catch_up(&store).await.unwrap();
        }
    }
    let head = store.head_position().await.unwrap();
    let lag = table.lag(&store, 1_005_000).await.unwrap();
    assert_eq!(
        lag,
        Lag {
            head,
            checkpoint: events_first,
            behind: head - events_first,
            // The last applied event was recorded at 1 001 000 ms.
            since_last_applied_ms: Some(4_000),
        }
    );
    table.catch_up(&store).await.unwrap();
    let lag = table.lag(&store, 1_005_000).await.unwrap();
    assert_eq!((lag.behind, lag.since_last_applied_ms), (0, Some(2_000)));
}

/// Two projection runners on the same table while tickets keep coming:
/// each reads the checkpoint under the table's lock, so none is counted twice.
async fn two_runners_at_once_count_each_ticket_once(backend: &str) {
    let (store, table, _t) = setup(backend).await;
    let sold = sales(7, 80);
    let runner = |table: RevenueTable, store: EventStore| {
        tokio::spawn(async move {
            for _ in 0..40 {
                table.catch_up(&store).await.unwrap();
                // Replays of whatever is there, as a restarted runner would.
                let all = store.read_all(1, 10_000).await.unwrap();
                table.apply(&all).await.unwrap();
            }
        })
    };
    let a = runner(table.clone(), store.clone());
    let b = runner(table.clone(), store.clone());
    for (i, chunk) in sold.chunks(5).enumerate() {
        append(&store, chunk, i * 5).await;
    }
    a.await.unwrap();
    b.await.unwrap();
    table.catch_up(&store).await.unwrap();
    assert_eq!(table.rows().await.unwrap(), expected(&sold));
}
