//! Which closure a `close` request records, with today passed in: in
//! order, from closed parts, never in the future, the grand total carried.

use rempart_events::calendar::parse_period;
use rempart_events::closing::{CloseRefusal, plan_close};
use rempart_events::closure::Closure;
use rempart_events::money::{Cents, VatRate, ticket_totals};
use rempart_events::ticket::{BusinessDate, TicketClosed, TicketEvent, TicketMeta};

fn d(s: &str) -> BusinessDate {
    s.parse().unwrap()
}

fn sale(day: &str, cents: i64) -> (TicketMeta, TicketEvent) {
    let totals = ticket_totals(&[(VatRate::NORMAL, Cents::new(cents))], &[]).unwrap();
    (
        TicketMeta {
            store_id: "m".into(),
            register_id: "r".into(),
            business_date: d(day),
        },
        TicketEvent::Closed(TicketClosed::from_totals(totals, "n", false).unwrap()),
    )
}

/// Closes `labels` in turn (as `close` would, all on `today`).
fn close_all(labels: &[&str], today: &str, sales: &[(TicketMeta, TicketEvent)]) -> Vec<Closure> {
    let mut done = Vec::new();
    for l in labels {
        let c = plan_close(parse_period(l).unwrap(), d(today), &done, sales)
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        done.push(c);
    }
    done
}

#[test]
fn the_grand_total_runs_through_days_months_and_years() {
    let sales = [
        sale("2025-12-31", 10_00),
        sale("2026-01-02", 2_50),
        sale("2026-01-02", 1_00),
    ];
    let done = close_all(
        &[
            "2025-12-31",
            "2025-12",
            "2025",
            "2026-01-01",
            "2026-01-02",
            "2026-01",
        ],
        "2026-02-01",
        &sales,
    );
    let gt: Vec<i64> = done.iter().map(|c| c.grand_total.get()).collect();
    assert_eq!(gt, [10_00, 10_00, 10_00, 10_00, 13_50, 13_50]);
    // January starts where December's year ended.
    assert_eq!(done[5].grand_total_before, Cents::new(10_00));
    assert_eq!(done[5].sales.ticket_count, 2);

    // A year without a sale carries the grand total on unchanged.
    let sales = [sale("2024-12-31", 7_00)];
    let done = close_all(
        &["2024-12-31", "2024-12", "2024", "2025"],
        "2026-02-01",
        &sales,
    );
    assert_eq!(done[3].grand_total_before, Cents::new(7_00));
    assert_eq!(done[3].grand_total, Cents::new(7_00));
}

#[test]
fn a_request_out_of_order_or_too_early_is_refused_with_what_to_do() {
    let sales = [sale("2026-01-30", 1_00), sale("2026-02-02", 1_00)];
    let today = d("2026-02-28");
    let p = |s: &str| parse_period(s).unwrap();
    let days = close_all(&["2026-01-30"], "2026-02-28", &sales);
    let refused =
        |period: &str, done: &[Closure]| plan_close(p(period), today, done, &sales).unwrap_err();
    assert_eq!(
        refused("2026-03-01", &days),
        CloseRefusal::Future("2026-03-01".into(), today)
    );
    assert_eq!(
        refused("2026-01-29", &days),
        CloseRefusal::BeforeLastClosed("2026-01-29".into(), "2026-01-30".into())
    );
    assert_eq!(
        refused("2026-01-30", &days),
        CloseRefusal::AlreadyClosed("2026-01-30".into())
    );
    // February's sale day must be closed before the month, January before February.
    let feb = close_all(&["2026-01-30", "2026-02-02"], "2026-02-28", &sales);
    assert!(
        matches!(refused("2026-02", &days), CloseRefusal::Unclosed { part, .. } if part == "2026-02-02")
    );
    assert!(
        matches!(refused("2026-02", &feb), CloseRefusal::Unclosed { part, .. } if part == "2026-01")
    );
    assert!(
        matches!(refused("2026", &feb), CloseRefusal::NotOver(_, last) if last == d("2026-12-31"))
    );
    // On its last day a month may be closed.
    assert!(plan_close(p("2026-01"), d("2026-01-31"), &days, &sales).is_ok());
}
