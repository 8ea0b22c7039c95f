//! Sync end to end on real stores: registers are SQLite files, central is
//! SQLite or PostgreSQL (a schema of its own). A seeded run sells tickets
//! and writes shop-shared streams while links go down and up, batches are
//! delivered twice, late (after later ones: pipelined pushes) or not
//! acknowledged, and registers and central restart. Afterwards: central
//! holds each event exactly once, in an order consistent with causality,
//! every chain verifies on central and on each register, and the concurrent
//! writes on shared streams are the conflicts central recorded.

use std::collections::{HashMap, HashSet};

use rempart::rng::{Rng, SplitMix64};
use rempart_db::test_support::TestDb;
use rempart_events::clock::{Causality, RegisterNo, VectorClock};
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use rempart_events::sync::wire::PushBatch;
use rempart_events::sync::{Central, RegisterSync};
use rempart_events::verify::{VerifyOptions, verify};
use serde_json::json;

struct Register {
    id: String,
    shop: String,
    no: u32,
    url: String,
    sync: RegisterSync,
    up: bool,
    /// The last seq sent (pipelined pushes start after it).
    sent: u64,
    tickets: u32,
}

async fn open_register(url: &str, id: &str, shop: &str, no: u32) -> RegisterSync {
    let key = RegisterKey::from_secret(id, [no as u8; 32]);
    RegisterSync::open(url, key, shop, RegisterNo(no))
        .await
        .unwrap()
}

fn chance(rng: &mut SplitMix64, p: f64) -> bool {
    rng.next_f64() < p
}

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

async fn sell(r: &mut Register) {
    r.tickets += 1;
    let meta = Metadata::new(&r.shop, &r.id);
    let events = vec![
        NewEvent::new("TICKET_OUVERT", json!({"ticket": r.tickets}), meta.clone()),
        NewEvent::new(
            "ARTICLE_AJOUTE",
            json!({"ean": "301", "cents": 250}),
            meta.clone(),
        ),
        NewEvent::new("TICKET_CLOS", json!({"total": 250}), meta).signed(Checkpoint::Ticket),
    ];
    let stream = format!("t-{}-{}", r.id, r.tickets);
    r.sync
        .store()
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
}

async fn count_shared(r: &Register) {
    let e = NewEvent::new(
        "COMPTEUR",
        json!({"by": r.id}),
        Metadata::new(&r.shop, &r.id),
    );
    r.sync
        .store()
        .append(&format!("shared-{}", r.shop), ExpectedVersion::Any, vec![e])
        .await
        .unwrap();
}

async fn deliver(central: &Central, r: &Register, batch: PushBatch, record_ack: bool) {
    let ack = central
        .receive(batch)
        .await
        .unwrap_or_else(|e| panic!("central refused {}'s batch: {e}", r.id));
    if record_ack {
        r.sync.record_ack(&ack).await.unwrap();
    }
}

async fn pull(central: &Central, r: &Register, max: u32) -> u64 {
    let (_, from) = r.sync.progress().await.unwrap();
    let page = central.pull(&r.shop, from, max).await.unwrap();
    r.sync.apply_pull(&page).await.unwrap();
    page.next_position - from
}

async fn all_events(store: &rempart_events::store::EventStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        let page = store.read_all(out.len() as u64 + 1, 1_000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn run(seed: u64, central_db: &TestDb) -> (u64, usize) {
    let mut rng = SplitMix64::seeded(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut central = Central::open(&central_db.url).await.unwrap();
    let mut registers = Vec::new();
    // Two shops of two registers, numbers spread as in a fleet.
    for (i, (shop, no)) in [("s1", 11), ("s1", 12), ("s2", 301), ("s2", 302)]
        .into_iter()
        .enumerate()
    {
        let id = format!("r-{no}");
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("{id}.sqlite")).display()
        );
        let sync = open_register(&url, &id, shop, no).await;
        registers.push(Register {
            id,
            shop: shop.into(),
            no,
            url,
            sync,
            up: i % 2 == 0,
            sent: 0,
            tickets: 0,
        });
    }
    let mut late: Vec<(usize, PushBatch)> = Vec::new();
    let (mut duplicated, mut reordered, mut restarts) = (0, 0, 0);
    for _ in 0..160 {
        let i = pick(&mut rng, registers.len());
        let roll = rng.next_f64();
        if roll < 0.35 {
            sell(&mut registers[i]).await;
        } else if roll < 0.47 {
            count_shared(&registers[i]).await;
        } else if roll < 0.57 {
            registers[i].up = !registers[i].up;
        } else if roll < 0.62 {
            // The register restarts: what it sent but was not acked is sent again.
            let r = &mut registers[i];
            r.sync = open_register(&r.url, &r.id, &r.shop, r.no).await;
            r.sent = r.sync.progress().await.unwrap().0;
            restarts += 1;
        } else if roll < 0.64 {
            central = Central::open(&central_db.url).await.unwrap();
            restarts += 1;
        } else if registers[i].up {
            let (acked, _) = registers[i].sync.progress().await.unwrap();
            let pipelined = chance(&mut rng, 0.4);
            let after = if pipelined {
                registers[i].sent.max(acked)
            } else {
                acked
            };
            let max = 1 + pick(&mut rng, 6);
            if let Some(batch) = registers[i].sync.outbox_after(after, max).await.unwrap() {
                let last = batch.events.last().map_or(after, |e| e.chain_seq);
                registers[i].sent = registers[i].sent.max(last);
                if chance(&mut rng, 0.25) {
                    late.push((i, batch));
                } else {
                    if chance(&mut rng, 0.25) {
                        deliver(&central, &registers[i], batch.clone(), false).await;
                        duplicated += 1;
                    }
                    let acked = !chance(&mut rng, 0.2);
                    deliver(&central, &registers[i], batch, acked).await;
                }
            }
            if !late.is_empty() && chance(&mut rng, 0.5) {
                let (j, batch) = late.remove(pick(&mut rng, late.len()));
                deliver(&central, &registers[j], batch, true).await;
                reordered += 1;
            }
            let max = 1 + pick(&mut rng, 8) as u32;
            pull(&central, &registers[i], max).await;
        }
    }
    // The network heals; late batches land; everyone syncs until quiet.
    for (j, batch) in std::mem::take(&mut late) {
        deliver(&central, &registers[j], batch, true).await;
        reordered += 1;
    }
    for _ in 0..100 {
        let mut moved = false;
        for r in &registers {
            // Bounded: a central that never acknowledges must fail the test, not hang it.
            if let Some(batch) = r.sync.outbox(50).await.unwrap() {
                deliver(&central, r, batch, true).await;
                moved = true;
            }
            if pull(&central, r, 100).await > 0 {
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    for r in &registers {
        assert!(
            r.sync.outbox(1).await.unwrap().is_none(),
            "seed {seed}: {} still has unacknowledged events after healing",
            r.id
        );
    }
    assert!(
        duplicated > 0 && reordered > 0 && restarts > 0,
        "seed {seed} exercised too little: {duplicated} {reordered} {restarts}"
    );

    // Central holds each register's chain exactly once, byte for byte.
    let on_central = all_events(central.store()).await;
    let mut own_total = 0;
    let ids: HashSet<_> = on_central.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), on_central.len(), "an event twice on central");
    let by_id: HashMap<_, _> = on_central.iter().map(|e| (e.event_id, e)).collect();
    for r in &registers {
        let local = all_events(r.sync.store()).await;
        let own: Vec<_> = local
            .iter()
            .filter(|e| e.metadata.register_id == r.id)
            .collect();
        own_total += own.len();
        for e in &own {
            let c = by_id
                .get(&e.event_id)
                .unwrap_or_else(|| panic!("seed {seed}: {} lost", e.event_id));
            assert_eq!(
                (c.chain_seq, c.chain_hash, &c.clock),
                (e.chain_seq, e.chain_hash, &e.clock)
            );
        }
        assert_eq!(
            central.acked_seq(&r.id).await.unwrap(),
            Some(own.len() as u64)
        );
        // The register holds its shop's events, and verifies with their chains.
        let shop_on_central = on_central
            .iter()
            .filter(|e| e.metadata.store_id == r.shop)
            .count();
        assert_eq!(
            local.len(),
            shop_on_central,
            "seed {seed}: {} did not pull its whole shop",
            r.id
        );
        let report = verify(r.sync.store().db(), &VerifyOptions::default())
            .await
            .unwrap();
        assert!(
            report.intact(),
            "seed {seed}: register {} fails verify: {:?}",
            r.id,
            report.findings
        );
    }
    assert_eq!(
        on_central.len(),
        own_total,
        "seed {seed}: central holds other than each event once"
    );
    // In an order consistent with causality.
    let clocks: Vec<VectorClock> = on_central
        .iter()
        .map(|e| VectorClock::decode(&e.clock).unwrap())
        .collect();
    for (i, a) in clocks.iter().enumerate() {
        for (j, b) in clocks.iter().enumerate().skip(i + 1) {
            assert_ne!(
                b.compare(a),
                Causality::Before,
                "seed {seed}: position {} depends on the later {}",
                i + 1,
                j + 1
            );
        }
    }
    let report = verify(central.store().db(), &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report.intact(),
        "seed {seed}: central fails verify: {:?}",
        report.findings
    );
    // The conflicts recorded are the concurrent pairs on each stream.
    let mut expected = 0;
    for (i, a) in on_central.iter().enumerate() {
        for (j, b) in on_central.iter().enumerate().skip(i + 1) {
            if a.stream_id == b.stream_id && clocks[i].compare(&clocks[j]) == Causality::Concurrent
            {
                expected += 1;
            }
        }
    }
    let recorded = central.conflicts().await.unwrap();
    assert_eq!(recorded.len(), expected, "seed {seed}: conflicts recorded");
    (on_central.len() as u64, recorded.len())
}

const SEEDS: [u64; 3] = [1, 2, 0x5eed];

#[tokio::test]
async fn sync_under_partitions_duplicates_reordering_and_restarts_on_sqlite() {
    for seed in SEEDS {
        let central = TestDb::sqlite().await.unwrap();
        let (events, conflicts) = run(seed, &central).await;
        println!("sqlite seed {seed}: {events} events on central, {conflicts} conflicts recorded");
    }
}

#[tokio::test]
async fn sync_under_partitions_duplicates_reordering_and_restarts_on_postgres() {
    for seed in SEEDS {
        let central = TestDb::postgres().await.unwrap();
        let (events, conflicts) = run(seed, &central).await;
        println!(
            "postgres seed {seed}: {events} events on central, {conflicts} conflicts recorded"
        );
    }
}
