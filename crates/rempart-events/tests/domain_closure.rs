//! Closures: a day adds up its tickets per VAT rate, a month its days, a
//! year its months; the perpetual grand total runs on; training is apart.

use proptest::prelude::*;
use rempart_events::closure::{ClosureError, Period, close_day, close_month, close_year};
use rempart_events::money::{Cents, Discount, VatBreakdown, VatRate, ticket_totals};
use rempart_events::ticket::{BusinessDate, TicketClosed, TicketEvent, TicketMeta};

fn day(d: u8) -> BusinessDate {
    BusinessDate::new(2026, 11, d).unwrap()
}

fn meta(date: BusinessDate) -> TicketMeta {
    TicketMeta {
        store_id: "magasin-lyon-3".into(),
        register_id: "caisse-02".into(),
        business_date: date,
    }
}

/// A closed ticket with these lines and an optional percentage discount.
fn closed(lines: &[(VatRate, i64)], discount_bp: u32, training: bool) -> TicketEvent {
    let lines: Vec<_> = lines.iter().map(|(r, c)| (*r, Cents::new(*c))).collect();
    let discounts = [Discount::Percent {
        basis_points: discount_bp,
    }];
    TicketEvent::Closed(
        TicketClosed::from_totals(ticket_totals(&lines, &discounts).unwrap(), "n", training)
            .unwrap(),
    )
}

#[test]
fn a_day_adds_up_its_tickets_per_rate_and_keeps_training_apart() {
    let m = meta(day(2));
    let events = [
        closed(
            &[(VatRate::NORMAL, 10_00), (VatRate::REDUCED, 5_00)],
            0,
            false,
        ),
        closed(&[(VatRate::NORMAL, 2_00)], 0, false),
        closed(&[(VatRate::NORMAL, 99_00)], 0, true),
    ];
    let pairs: Vec<_> = events.iter().map(|e| (&m, e)).collect();
    let c = close_day(day(2), Cents::new(100_000), pairs).unwrap();
    assert_eq!(c.period, Period::Day { date: day(2) });
    assert_eq!(c.sales.ticket_count, 2);
    let normal = c.sales.breakdown.get(VatRate::NORMAL).unwrap();
    // 10.00 € → 1.67 VAT, 2.00 € → 0.33: the tickets' figures, added.
    assert_eq!(
        (normal.ttc, normal.tva),
        (Cents::new(12_00), Cents::new(2_00))
    );
    assert_eq!(
        c.sales.breakdown.get(VatRate::REDUCED).unwrap().ttc,
        Cents::new(5_00)
    );
    assert_eq!(c.training.ticket_count, 1);
    assert_eq!(c.training.ttc().unwrap(), Cents::new(99_00));
    // The grand total runs on from the previous closure, training excluded.
    assert_eq!(c.grand_total_before, Cents::new(100_000));
    assert_eq!(c.grand_total, Cents::new(101_700));
}

#[test]
fn a_ticket_of_another_day_is_refused() {
    let other = meta(day(3));
    let e = closed(&[(VatRate::NORMAL, 1_00)], 0, false);
    assert!(matches!(
        close_day(day(2), Cents::ZERO, [(&other, &e)]),
        Err(ClosureError::OutOfPeriod { .. })
    ));
}

#[test]
fn a_roll_up_refuses_parts_missing_altered_or_out_of_place() {
    let e = closed(&[(VatRate::NORMAL, 1_00)], 0, false);
    let d1 = close_day(day(1), Cents::ZERO, [(&meta(day(1)), &e)]).unwrap();
    let d2 = close_day(day(2), d1.grand_total, [(&meta(day(2)), &e)]).unwrap();
    assert!(close_month(2026, 11, Cents::ZERO, &[d1.clone(), d2.clone()]).is_ok());
    // Out of order, twice, from another month.
    assert!(matches!(
        close_month(2026, 11, Cents::ZERO, &[d2.clone(), d1.clone()]),
        Err(ClosureError::Unchained { .. } | ClosureError::Unordered { .. })
    ));
    assert!(matches!(
        close_month(2026, 12, Cents::ZERO, std::slice::from_ref(&d1)),
        Err(ClosureError::NotAPart { .. })
    ));
    // A day whose grand total was altered breaks the chain.
    let mut forged = d1.clone();
    forged.grand_total = Cents::new(5);
    assert!(matches!(
        close_month(2026, 11, Cents::ZERO, &[forged, d2.clone()]),
        Err(ClosureError::Unchained { .. })
    ));
    // A day whose figures were altered no longer matches its grand total.
    let mut forged = d2.clone();
    forged.sales.breakdown = VatBreakdown::new();
    assert!(matches!(
        close_month(2026, 11, Cents::ZERO, &[d1, forged]),
        Err(ClosureError::Unchained { .. })
    ));
}

fn ticket() -> impl Strategy<Value = (u8, TicketEvent)> {
    let rate = prop_oneof![
        Just(VatRate::NORMAL),
        Just(VatRate::INTERMEDIATE),
        Just(VatRate::REDUCED),
        Just(VatRate::SUPER_REDUCED),
    ];
    (
        1u8..=28,
        prop::collection::vec((rate, 1i64..50_000), 1..5),
        prop_oneof![Just(0u32), 1u32..5_000],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(d, lines, bp, training)| (d, closed(&lines, bp, training)))
}

proptest! {
    /// A month closure equals the sum of its days, a year the sum of its
    /// months, and both equal the sum of the tickets themselves.
    #[test]
    fn month_is_the_sum_of_days_and_year_the_sum_of_months(
        tickets in prop::collection::vec((1u8..=2, ticket()), 0..60),
    ) {
        let months = [10u8, 11];
        let mut grand_total = Cents::new(12_345);
        let start = grand_total;
        let mut month_closures = Vec::new();
        let mut all = VatBreakdown::new();
        let mut count = 0u64;
        for (mi, month) in months.iter().enumerate() {
            let mut days = Vec::new();
            for d in 1..=28u8 {
                let date = BusinessDate::new(2026, *month, d).unwrap();
                let m = TicketMeta { business_date: date, ..meta(date) };
                let events: Vec<_> = tickets
                    .iter()
                    .filter(|(which, (td, _))| usize::from(*which) == mi + 1 && *td == d)
                    .map(|(_, (_, e))| e)
                    .collect();
                for e in &events {
                    if let TicketEvent::Closed(c) = e && !c.training {
                        all.add_all(&c.breakdown).unwrap();
                        count += 1;
                    }
                }
                let c = close_day(date, grand_total, events.iter().map(|e| (&m, *e))).unwrap();
                grand_total = c.grand_total;
                days.push(c);
            }
            let before = days[0].grand_total_before;
            let mc = close_month(2026, *month, before, &days).unwrap();
            let mut sum_days = VatBreakdown::new();
            for d in &days {
                sum_days.add_all(&d.sales.breakdown).unwrap();
            }
            prop_assert_eq!(&mc.sales.breakdown, &sum_days);
            prop_assert_eq!(mc.grand_total, days.last().unwrap().grand_total);
            month_closures.push(mc);
        }
        let year = close_year(2026, start, &month_closures).unwrap();
        let mut sum_months = VatBreakdown::new();
        for m in &month_closures {
            sum_months.add_all(&m.sales.breakdown).unwrap();
        }
        prop_assert_eq!(&year.sales.breakdown, &sum_months);
        prop_assert_eq!(&year.sales.breakdown, &all);
        prop_assert_eq!(year.sales.ticket_count, count);
        prop_assert_eq!(
            year.grand_total,
            start.checked_add(all.total().unwrap().ttc).unwrap()
        );
        let t = year.sales.breakdown.total().unwrap();
        prop_assert_eq!(t.ht.get() + t.tva.get(), t.ttc.get());
    }
}

#[test]
fn a_closure_reads_back_as_it_was_written() {
    let m = meta(day(2));
    let e = closed(
        &[(VatRate::NORMAL, 10_00), (VatRate::REDUCED, 3_00)],
        500,
        false,
    );
    let c = close_day(day(2), Cents::new(42), [(&m, &e)]).unwrap();
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["periode"], "JOUR");
    assert_eq!(json["date"], "2026-11-02");
    assert_eq!(json["grandTotalPerpetuel"], c.grand_total.get());
    let back: rempart_events::closure::Closure = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
    let meta_json = serde_json::to_value(&m).unwrap();
    assert_eq!(meta_json["magasinId"], "magasin-lyon-3");
    assert_eq!(serde_json::from_value::<TicketMeta>(meta_json).unwrap(), m);
}

#[test]
fn business_dates_are_real_days() {
    for good in ["2024-02-29", "2000-02-29", "2026-12-31", "0001-01-01"] {
        assert_eq!(good.parse::<BusinessDate>().unwrap().to_string(), good);
    }
    for bad in [
        "1900-02-29",
        "2026-02-29",
        "2026-04-31",
        "2026-13-01",
        "2026-00-10",
        "2026-1-01",
        "26-11-01",
        "2026/11/01",
        "+026-11-01",
        "",
    ] {
        let err = bad.parse::<BusinessDate>().unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"), "{bad}: {err}");
    }
}
