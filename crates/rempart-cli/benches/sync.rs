//! Sync from a register to central over loopback HTTP, as in production:
//! central is `rempart events serve`'s own axum router on 127.0.0.1:0 over
//! a SQLite central store, the register is the CLI's `CentralClient` with
//! its default policies, every request signed with the register's key.
//!
//! - `sync/push_<n>`: a register holding 10,000 unsynced events (1,000
//!   ten-event tickets) pushes them all in batches of n, each acknowledged
//!   and recorded (`CentralClient::push`, as `sync` does);
//! - `sync/both_ways_200`: the CLI's whole `sync` (push, then pull the
//!   shop's events back);
//! - then, not through criterion, the revenue projection's lag after sync:
//!   a projector (`RevenueTable` on central's store, woken by its appends)
//!   runs while a register pushes a 20,000-event backlog in batches of 100;
//!   per batch, the time from the push being sent (and from its ack) to the
//!   projection having applied it; p50, p99 and max are printed.
//!
//! Run: `cargo bench -p rempart-cli --bench sync`.

// A bench times the wall clock itself: no ManualClock to stand in for it.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use rempart_cli::events_client::{CentralClient, DEFAULT_SYNC_CLIENT_TOML};
use rempart_cli::events_serve::router;
use rempart_events::clock::RegisterNo;
use rempart_events::envelope::encode;
use rempart_events::money::{Cents, VatRate};
use rempart_events::revenue::RevenueTable;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, ExpectedVersion, NewEvent};
use rempart_events::sync::{Central, RegisterSync};
use rempart_events::ticket::{
    ArticleAdded, PaymentMode, PaymentReceived, Ticket, TicketClosed, TicketEvent, TicketMeta,
    TicketOpened,
};

const SHOP: &str = "magasin-1";

/// Ticket `n` of `register`: open, 7 articles, paid, closed (10 events).
fn ticket(register: &str, n: usize) -> Vec<TicketEvent> {
    let mut events = vec![TicketEvent::Opened(TicketOpened {
        ticket_id: format!("{register}-{n}").as_str().into(),
        cashier_id: "caissier-7".into(),
        register_id: register.into(),
        training: false,
    })];
    for i in 0..7 {
        events.push(TicketEvent::ArticleAdded(ArticleAdded {
            code_ean: format!("301762042{i:04}"),
            label: "article".into(),
            quantity: 1,
            unit_price: Cents::new(1_29 + (n as i64 % 50) + i),
            vat_rate: if i == 0 {
                VatRate::NORMAL
            } else {
                VatRate::REDUCED
            },
        }));
    }
    let totals = Ticket::replay(&events).totals().unwrap();
    events.push(TicketEvent::PaymentReceived(PaymentReceived {
        mode: PaymentMode::Card,
        amount: totals.ttc(),
    }));
    events.push(TicketEvent::Closed(
        TicketClosed::from_totals(totals, n.to_string(), false).unwrap(),
    ));
    events
}

/// Central serving on 127.0.0.1:0, and its address.
struct Served {
    central: Arc<Central>,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(dir: &std::path::Path, name: &str) -> Served {
    let url = format!("sqlite://{}", dir.join(name).display());
    let central = Arc::new(Central::open(&url).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(central.clone());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served {
        central,
        base,
        task,
    }
}

/// A register `id` holding `tickets` unsynced ten-event tickets.
async fn register(dir: &std::path::Path, id: &str, no: u32, tickets: usize) -> RegisterSync {
    let url = format!("sqlite://{}", dir.join(format!("{id}.sqlite")).display());
    let r = RegisterSync::open(
        &url,
        RegisterKey::from_secret(id, [no as u8; 32]),
        SHOP,
        RegisterNo(no),
    )
    .await
    .unwrap();
    let meta = TicketMeta {
        store_id: SHOP.into(),
        register_id: id.into(),
        business_date: "2026-11-29".parse().unwrap(),
    };
    for n in 0..tickets {
        let events: Vec<NewEvent> = ticket(id, n)
            .iter()
            .map(|e| {
                let new = encode(&meta, e);
                if matches!(e, TicketEvent::Closed(_)) {
                    new.signed(Checkpoint::Ticket)
                } else {
                    new
                }
            })
            .collect();
        r.store()
            .append(
                &format!("ticket-{id}-{n}"),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .unwrap();
    }
    r
}

/// Pushes everything `r` holds, in batches of `batch`; returns the events
/// central appended.
async fn push_all(client: &CentralClient, r: &RegisterSync, batch: usize) -> u64 {
    let mut appended = 0;
    while let Some(next) = r.outbox(batch).await.unwrap() {
        let ack = client.push(r, &next).await.unwrap();
        appended += ack.appended;
        r.record_ack(&ack).await.unwrap();
    }
    appended
}

const TICKETS: usize = 1_000;
const EVENTS: u64 = TICKETS as u64 * 10;

fn syncing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("sync");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(EVENTS));
    let mut run = 0;
    // Each iteration: a fresh central and a fresh register (set up untimed),
    // then the timed sync of the register's whole backlog.
    let mut measure =
        |g: &mut criterion::BenchmarkGroup<'_, _>, name: BenchmarkId, batch: usize, both: bool| {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            run += 1;
                            let served = serve(dir.path(), &format!("central-{run}.sqlite")).await;
                            let client =
                                CentralClient::new(&served.base, DEFAULT_SYNC_CLIENT_TOML).unwrap();
                            let r =
                                register(dir.path(), &format!("caisse-{run}"), 1, TICKETS).await;
                            let start = Instant::now();
                            let pushed = if both {
                                client.sync(&r, batch, usize::MAX).await.unwrap().pushed
                            } else {
                                push_all(&client, &r, batch).await
                            };
                            spent += start.elapsed();
                            assert_eq!(pushed, EVENTS);
                            served.task.abort();
                        }
                        spent
                    })
                })
            });
        };
    for batch in [200, 1_000] {
        measure(&mut g, BenchmarkId::new("push", batch), batch, false);
    }
    measure(&mut g, BenchmarkId::new("both_ways", 200), 200, true);
    g.finish();
}

/// The revenue projection on central, woken by central's appends: after
/// each page it records the position it reached and when.
fn projector(
    central: &Central,
    applied: Arc<Mutex<Vec<(u64, Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    let store = central.store().clone();
    tokio::spawn(async move {
        let table = RevenueTable::open(store.db().clone()).await.unwrap();
        loop {
            let from = table.applied().await.unwrap().map_or(0, |a| a.position) + 1;
            // Waits for an event past the checkpoint (woken by the append).
            let mut sub = store.subscribe_all(from, Duration::from_millis(500));
            sub.next().await.unwrap();
            table.catch_up(&store).await.unwrap();
            let at = table.applied().await.unwrap().map_or(0, |a| a.position);
            applied.lock().unwrap().push((at, Instant::now()));
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn projection_lag() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (from_send, from_ack, batches) = rt.block_on(async {
        let served = serve(dir.path(), "central.sqlite").await;
        let client = CentralClient::new(&served.base, DEFAULT_SYNC_CLIENT_TOML).unwrap();
        let r = register(dir.path(), "caisse-lag", 1, 2_000).await;
        let applied = Arc::new(Mutex::new(Vec::new()));
        let projecting = projector(&served.central, applied.clone());
        // (sent, acked, central's head once acked) per batch.
        let mut sent = Vec::new();
        while let Some(next) = r.outbox(100).await.unwrap() {
            let t0 = Instant::now();
            let ack = client.push(&r, &next).await.unwrap();
            let t1 = Instant::now();
            r.record_ack(&ack).await.unwrap();
            let head = served.central.store().head_position().await.unwrap();
            sent.push((t0, t1, head));
        }
        let last = sent.last().unwrap().2;
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied
            .lock()
            .unwrap()
            .last()
            .is_none_or(|(p, _)| *p < last)
        {
            assert!(
                Instant::now() < deadline,
                "the projection did not catch up within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        projecting.abort();
        served.task.abort();
        let applied = applied.lock().unwrap().clone();
        let (mut from_send, mut from_ack) = (Vec::new(), Vec::new());
        for (t0, t1, head) in &sent {
            let (_, at) = applied.iter().find(|(p, _)| p >= head).unwrap();
            from_send.push(at.saturating_duration_since(*t0));
            from_ack.push(at.saturating_duration_since(*t1));
        }
        from_send.sort();
        from_ack.sort();
        (from_send, from_ack, sent.len())
    });
    for (what, lags) in [
        ("from the push sent", &from_send),
        ("from the ack received", &from_ack),
    ] {
        println!(
            "projection_lag/{what}: {batches} batches of 100 events, p50 {:?}, p99 {:?}, max {:?}",
            percentile(lags, 0.50),
            percentile(lags, 0.99),
            lags.last().unwrap()
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    syncing(&mut c);
    c.final_summary();
    projection_lag();
}
