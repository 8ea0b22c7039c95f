//! The event store's speed on SQLite (a register's store), beside the limit
//! measured in the same run: raw inserts of rows of the same shape, through
//! the same driver, at the same durability (WAL, `synchronous=NORMAL`).
//!
//! - `append/batch_100_chained`: 100-event batches, hash-chained, one stream each;
//! - `append/raw_insert_100`: the same 100 rows as one multi-row INSERT in a
//!   transaction, no version check, no chain: the physical limit;
//! - `append/single_event`: one event per committed transaction;
//! - `verify/20k_events`: `verify` over a 20,000-event store (one signed
//!   checkpoint every 10 events);
//! - `ticket_100/*`: a 100-event ticket (open, 97 articles, payment, close)
//!   validated and committed as one batch, ours beside the Rust peer
//!   cqrs-es, on SQLite and on PostgreSQL ([`peer`]);
//! - `replay/*`: 2,000 ten-event tickets read back and folded into ticket
//!   aggregates ([`replay`]).
//!
//! Run: `cargo bench -p rempart-events --bench store` (PostgreSQL on
//! 127.0.0.1:5432 for the `*_postgres` rows; they are skipped without it).

mod peer;
mod replay;
mod workload;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rempart_db::test_support::TestDb;
use rempart_db::{Db, with_pool};
use rempart_events::clock::RegisterNo;
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent};
use rempart_events::verify::{VerifyOptions, verify};
use serde_json::json;

fn event(i: u32) -> NewEvent {
    let mut e = NewEvent::new(
        "ARTICLE_AJOUTE",
        json!({"ean": "3017620422003", "libelle": "pate a tartiner", "quantite": 1, "prix_cents": 429 + i}),
        Metadata::new("store-12", "register-12-3"),
    );
    e.clock = vec![0; 12];
    e
}

async fn open(dir: &std::path::Path, name: &str) -> EventStore {
    let url = format!("sqlite://{}", dir.join(name).display());
    EventStore::open(&url)
        .await
        .unwrap()
        .with_key(RegisterKey::from_secret("register-12-3", [1; 32]))
        .await
        .unwrap()
}

const RAW_TABLE: &str = "CREATE TABLE raw_events (
  global_position INTEGER PRIMARY KEY, event_id BLOB NOT NULL, stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL,
  event_type TEXT NOT NULL, payload TEXT NOT NULL, store_id TEXT NOT NULL, register_id TEXT NOT NULL, training BOOLEAN NOT NULL,
  metadata TEXT NOT NULL, clock BLOB NOT NULL, recorded_at BIGINT NOT NULL, checkpoint TEXT, chain_seq BIGINT NOT NULL,
  chain_hash BLOB NOT NULL, signature BLOB)";

async fn raw_insert(db: &Db, sql: &str, base: i64, events: &[NewEvent]) {
    with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        let mut q = sqlx::query(sql);
        for (i, e) in events.iter().enumerate() {
            q = q.bind(base + i as i64).bind(e.event_id).bind("stream").bind(i as i64).bind(&e.event_type)
                .bind(e.payload.to_string()).bind(&e.metadata.store_id).bind(&e.metadata.register_id)
                .bind(false).bind("{}").bind(&e.clock).bind(0i64).bind(None::<String>).bind(base + i as i64)
                .bind(vec![0u8; 32]).bind(None::<Vec<u8>>);
        }
        q.execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    });
}

fn raw_sql(rows: usize) -> String {
    let mut s = String::from("INSERT INTO raw_events VALUES ");
    for i in 0..rows {
        s.push_str(if i == 0 { "(" } else { ",(" });
        let cols: Vec<String> = (1..=16).map(|j| format!("${}", i * 16 + j)).collect();
        s.push_str(&cols.join(","));
        s.push(')');
    }
    s
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(open(dir.path(), "bench.db"));
    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(100));
    g.bench_function("batch_100_chained", |b| {
        b.iter_batched(
            || (0..100).map(event).collect::<Vec<_>>(),
            |events| {
                let stream = format!("ticket-{}", uuid::Uuid::new_v4().simple());
                rt.block_on(store.append(&stream, ExpectedVersion::NoStream, events))
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let raw = rt.block_on(async {
        let db = Db::open(&format!("sqlite://{}", dir.path().join("raw.db").display()))
            .await
            .unwrap();
        with_pool!(db, p => { sqlx::query(RAW_TABLE).execute(p).await.unwrap(); });
        db
    });
    let sql = raw_sql(100);
    let mut base = 1i64;
    g.bench_function("raw_insert_100", |b| {
        b.iter_batched(
            || (0..100).map(event).collect::<Vec<_>>(),
            |events| {
                rt.block_on(raw_insert(&raw, &sql, base, &events));
                base += 100;
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_event", |b| {
        b.iter_batched(
            || event(1),
            |e| {
                rt.block_on(store.append("till-journal", ExpectedVersion::Any, vec![e]))
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn verifying(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let s = open(dir.path(), "verify.db").await;
        for t in 0..2_000 {
            let mut events: Vec<NewEvent> = (0..10).map(event).collect();
            let last = events.pop().unwrap().signed(Checkpoint::Ticket);
            events.push(last);
            s.append(&format!("ticket-{t}"), ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
        s
    });
    let mut g = c.benchmark_group("verify");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(20_000));
    g.bench_function("20k_events", |b| {
        b.iter(|| {
            let r = rt
                .block_on(verify(store.db(), &VerifyOptions::default()))
                .unwrap();
            assert!(r.intact() && r.events == 20_000);
        })
    });
    g.finish();
}

/// Ours beside cqrs-es on one backend: each iteration rings up a new
/// 100-event ticket, decided and committed in one transaction.
fn ticket_pair(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    backend: &str,
    ours: &EventStore,
    peer_db: &Db,
) {
    rt.block_on(async {
        with_pool!(peer_db, p => { sqlx::raw_sql(&peer::tables(backend)).execute(p).await.unwrap(); });
    });
    let commands = || {
        let id = uuid::Uuid::new_v4().simple().to_string();
        (id.clone(), workload::ticket_commands(&id, 97))
    };
    g.bench_function(format!("ours_{backend}"), |b| {
        b.iter_batched(
            commands,
            |(id, commands)| {
                let events = workload::envelopes(&workload::decide_all(&commands));
                rt.block_on(ours.append(&format!("ticket-{id}"), ExpectedVersion::NoStream, events))
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    match peer_db.pool() {
        rempart_db::Pool::Sqlite(pool) => {
            let cqrs = sqlite_es::sqlite_cqrs::<peer::PeerTicket>(pool.clone(), vec![], ());
            g.bench_function("cqrs_es_sqlite", |b| {
                b.iter_batched(
                    commands,
                    |(id, commands)| {
                        rt.block_on(cqrs.execute(&id, peer::RingUp(commands)))
                            .unwrap()
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        rempart_db::Pool::Postgres(pool) => {
            let cqrs = postgres_es::postgres_cqrs::<peer::PeerTicket>(pool.clone(), vec![], ());
            g.bench_function("cqrs_es_postgres", |b| {
                b.iter_batched(
                    commands,
                    |(id, commands)| {
                        rt.block_on(cqrs.execute(&id, peer::RingUp(commands)))
                            .unwrap()
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
}

fn tickets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Both on the same pool options (WAL, synchronous=NORMAL, the same
    // busy timeout and pool size): the same durability.
    let (ours, peer_db) = rt.block_on(async {
        let ours = open(dir.path(), "ours.db")
            .await
            .with_register_no("register-12-3", RegisterNo(3));
        let url = format!("sqlite://{}", dir.path().join("cqrs.db").display());
        (ours, Db::open(&url).await.unwrap())
    });
    let mut g = c.benchmark_group("ticket_100");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(100));
    ticket_pair(&mut g, &rt, "sqlite", &ours, &peer_db);
    let postgres = rt.block_on(async {
        let ours = TestDb::postgres().await.ok()?;
        let peer = TestDb::postgres().await.ok()?;
        Some((ours, peer))
    });
    match postgres {
        Some((ours_db, peer_db)) => {
            let ours = rt.block_on(async {
                EventStore::open(&ours_db.url)
                    .await
                    .unwrap()
                    .with_key(RegisterKey::from_secret("register-12-3", [1; 32]))
                    .await
                    .unwrap()
                    .with_register_no("register-12-3", RegisterNo(3))
            });
            ticket_pair(&mut g, &rt, "postgres", &ours, &peer_db.db);
        }
        None => eprintln!(
            "ticket_100: no PostgreSQL on 127.0.0.1:5432, the *_postgres rows are skipped"
        ),
    }
    g.finish();
}

criterion_group!(benches, appends, tickets, replay::replaying, verifying);
criterion_main!(benches);
