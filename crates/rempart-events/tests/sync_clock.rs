//! Every event a register appends carries its vector clock, ticked by the
//! store; events pulled from store-mates merge into it; and the clock stays
//! small in a fleet of 500 registers (80 stores).

use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use rempart_events::clock::{Causality, RegisterNo, VectorClock};
use rempart_events::schema::EVENTS_SCHEMA;
use rempart_events::store::{EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::json;

async fn register_store(register: &str, no: u32) -> (EventStore, TestDb) {
    let t = TestDb::sqlite().await.unwrap();
    t.db.migrate(&EVENTS_SCHEMA).await.unwrap();
    let s = EventStore::new(t.db.clone()).with_register_no(register, RegisterNo(no));
    (s, t)
}

fn sale(store: &str, register: &str, n: u32) -> NewEvent {
    NewEvent::new(
        "TICKET_OUVERT",
        json!({ "n": n }),
        Metadata::new(store, register),
    )
}

fn clock(bytes: &[u8]) -> VectorClock {
    VectorClock::decode(bytes).unwrap()
}

#[tokio::test]
async fn each_local_append_ticks_and_a_pulled_event_is_merged() {
    let (a, _ta) = register_store("r-1", 1).await;
    let (b, _tb) = register_store("r-2", 2).await;
    a.append(
        "t-a1",
        ExpectedVersion::NoStream,
        vec![sale("s1", "r-1", 1), sale("s1", "r-1", 2)],
    )
    .await
    .unwrap();
    let on_a = a.read_all(1, 10).await.unwrap();
    let clocks: Vec<VectorClock> = on_a.iter().map(|e| clock(&e.clock)).collect();
    assert_eq!(
        clocks[0].entries().collect::<Vec<_>>(),
        [(RegisterNo(1), 1)]
    );
    assert_eq!(
        clocks[1].entries().collect::<Vec<_>>(),
        [(RegisterNo(1), 2)]
    );
    // B pulls A's events as they are (clock given), then sells: its clock knows A's.
    let pulled: Vec<NewEvent> = on_a
        .iter()
        .map(|e| {
            let mut n = NewEvent::new(&e.event_type, e.payload.clone(), e.metadata.clone());
            n.event_id = e.event_id;
            n.clock = e.clock.clone();
            n.recorded_at = Some(e.recorded_at);
            n.origin_link = Some((e.chain_seq, e.chain_hash));
            n
        })
        .collect();
    b.append("t-a1", ExpectedVersion::Any, pulled)
        .await
        .unwrap();
    b.append(
        "t-b1",
        ExpectedVersion::NoStream,
        vec![sale("s1", "r-2", 3)],
    )
    .await
    .unwrap();
    let last = b.read_all(3, 1).await.unwrap().remove(0);
    let c = clock(&last.clock);
    assert_eq!(
        c.entries().collect::<Vec<_>>(),
        [(RegisterNo(1), 2), (RegisterNo(2), 1)]
    );
    assert_eq!(clocks[1].compare(&c), Causality::Before);
    // A sells again without having pulled B's: concurrent with B's sale.
    a.append(
        "t-a2",
        ExpectedVersion::NoStream,
        vec![sale("s1", "r-1", 4)],
    )
    .await
    .unwrap();
    let a3 = clock(&a.read_all(3, 1).await.unwrap()[0].clock);
    assert_eq!(a3.compare(&c), Causality::Concurrent);
}

#[tokio::test]
async fn an_event_whose_chain_link_does_not_follow_is_refused() {
    let (a, _ta) = register_store("r-1", 1).await;
    let (b, _tb) = register_store("r-2", 2).await;
    a.append(
        "t",
        ExpectedVersion::NoStream,
        vec![sale("s1", "r-1", 1), sale("s1", "r-1", 2)],
    )
    .await
    .unwrap();
    let second = a.read_all(2, 1).await.unwrap().remove(0);
    let mut n = NewEvent::new(
        &second.event_type,
        second.payload.clone(),
        second.metadata.clone(),
    );
    n.event_id = second.event_id;
    n.clock = second.clock.clone();
    n.recorded_at = Some(second.recorded_at);
    n.origin_link = Some((second.chain_seq, second.chain_hash));
    let err = b
        .append("t", ExpectedVersion::Any, vec![n])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("from seq 1 on"), "{err}");
    assert_eq!(b.head_position().await.unwrap(), 0);
}

/// The measure the issue asks for: bytes per stored clock in a fleet of 500
/// registers in 80 stores, where a register pulls its store's events only.
#[tokio::test]
async fn clock_bytes_with_500_registers() {
    // Register 417 of a 7-register store (registers 413..=419: store 59 of
    // 80, numbers spread over the whole fleet), 200 sales of its own after
    // pulling 1 000 events from each store-mate.
    let (s, _t) = register_store("r-417", 417).await;
    let mut mates = VectorClock::new();
    for mate in (413..=419).filter(|r| *r != 417) {
        mates.set(RegisterNo(mate), 1_000);
    }
    let mut pulled = NewEvent::new("TICKET_CLOS", json!({}), Metadata::new("s59", "r-413"));
    pulled.clock = mates.encode();
    s.append("t-pulled", ExpectedVersion::Any, vec![pulled])
        .await
        .unwrap();
    for i in 0..200 {
        s.append(
            &format!("t-{i}"),
            ExpectedVersion::NoStream,
            vec![sale("s59", "r-417", i)],
        )
        .await
        .unwrap();
    }
    let (avg, max): (f64, i64) = with_pool!(s.db(), p => sqlx::query_as(
        "SELECT AVG(LENGTH(clock)), MAX(LENGTH(clock)) FROM events WHERE register_id = 'r-417'")
        .fetch_one(p).await.unwrap());
    let fleet: VectorClock = {
        let mut c = VectorClock::new();
        for r in 0..500 {
            c.set(RegisterNo(r), 10_000);
        }
        c
    };
    println!(
        "clock bytes per event, register of a 7-register store in a 500-register fleet: avg {avg:.1}, max {max}; a clock that heard of all 500 registers at 10 000 events: {}",
        fleet.encode().len()
    );
    assert!(
        max <= 24,
        "a store's clock should stay a few bytes per store-mate: {max}"
    );
}

/// A closure appended by another program (`rempart events close` opens the
/// store by URL) still gets the register's clock: sync recorded its number
/// in the store. And a register cannot come back under another number.
#[tokio::test]
async fn whoever_opens_a_registers_store_ticks_its_clock() {
    use rempart_events::signing::RegisterKey;
    use rempart_events::sync::RegisterSync;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r-5.sqlite").display());
    let key = || RegisterKey::from_secret("r-5", [5; 32]);
    let r = RegisterSync::open(&url, key(), "s1", RegisterNo(5))
        .await
        .unwrap();
    r.store()
        .append("t-1", ExpectedVersion::NoStream, vec![sale("s1", "r-5", 1)])
        .await
        .unwrap();
    let other = EventStore::open(&url).await.unwrap();
    other
        .append("closures", ExpectedVersion::Any, vec![sale("s1", "r-5", 2)])
        .await
        .unwrap();
    let last = other.read_all(2, 1).await.unwrap().remove(0);
    assert_eq!(
        clock(&last.clock).entries().collect::<Vec<_>>(),
        [(RegisterNo(5), 2)]
    );
    let err = RegisterSync::open(&url, key(), "s1", RegisterNo(6))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keeps its number"), "{err}");
}
