//! Replay into aggregates: 2,000 ten-event tickets (open, 7 articles,
//! payment, close) read back from a register's SQLite store and folded into
//! ticket states, three ways, to see where the time goes:
//!
//! - `per_stream`: what the till does before each command, for every
//!   ticket: `EventStore::ticket` (read the stream, decode, fold);
//! - `read_all`: everything in global order, a page of 1,000 at a time,
//!   decoded and folded into one state per stream;
//! - `replay_all`: the same through `EventStore::replay_all`, which lends
//!   each row's fold columns to the fold, and `decode_ref`, which parses
//!   the payload text straight into the ticket event;
//! - `fold_only`: the same decode and fold over events already in memory
//!   (no database): the ceiling the two above approach.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rempart_events::envelope::{decode, decode_ref};
use rempart_events::store::{EventStore, ExpectedVersion, RecordedEvent};
use rempart_events::ticket::{Ticket, TicketStatus, apply};
use rempart_events::till::TillError;

use super::workload;

const TICKETS: usize = 2_000;
const EVENTS: u64 = TICKETS as u64 * 10;

/// Folds `events` into `states`, one ticket per stream.
fn fold(states: &mut HashMap<String, Ticket>, events: &[RecordedEvent]) {
    for e in events {
        if let Some((_, event)) = decode(e).unwrap() {
            // The stream id is cloned only for a stream not seen yet.
            let state = match states.get_mut(&e.stream_id) {
                Some(state) => state,
                None => states.entry(e.stream_id.clone()).or_default(),
            };
            *state = apply(std::mem::take(state), &event);
        }
    }
}

async fn read_all(store: &EventStore) -> HashMap<String, Ticket> {
    let mut states = HashMap::with_capacity(TICKETS);
    let mut from = 1;
    loop {
        let page = store.read_all(from, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            return states;
        };
        from = last.position + 1;
        fold(&mut states, &page);
    }
}

async fn replay_all(store: &EventStore) -> HashMap<String, Ticket> {
    let mut states: HashMap<String, Ticket> = HashMap::with_capacity(TICKETS);
    let mut from = 1;
    while let Some(last) = store
        .replay_all(from, 1_000, |e| {
            if let Some((_, event)) = decode_ref(&e)? {
                let state = match states.get_mut(e.stream_id) {
                    Some(state) => state,
                    None => states.entry(e.stream_id.to_owned()).or_default(),
                };
                *state = apply(std::mem::take(state), &event);
            }
            Ok::<(), TillError>(())
        })
        .await
        .unwrap()
    {
        from = last + 1;
    }
    states
}

fn closed(states: &HashMap<String, Ticket>) -> usize {
    states
        .values()
        .filter(|t| t.status == TicketStatus::Closed)
        .count()
}

pub(crate) fn replaying(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, streams) = rt.block_on(async {
        let store = super::open(dir.path(), "replay.db").await;
        let mut streams = Vec::with_capacity(TICKETS);
        for t in 0..TICKETS {
            let id = format!("T-{t}");
            let events = workload::decide_all(&workload::ticket_commands(&id, 7));
            let stream = format!("ticket-{id}");
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    workload::envelopes(&events),
                )
                .await
                .unwrap();
            streams.push(stream);
        }
        (store, streams)
    });
    let mut g = c.benchmark_group("replay");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("per_stream", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut n = 0;
                for s in &streams {
                    let (ticket, _) = store.ticket(s).await.unwrap();
                    n += usize::from(ticket.status == TicketStatus::Closed);
                }
                assert_eq!(n, TICKETS);
            })
        })
    });
    g.bench_function("read_all", |b| {
        b.iter(|| assert_eq!(closed(&rt.block_on(read_all(&store))), TICKETS))
    });
    g.bench_function("replay_all", |b| {
        b.iter(|| assert_eq!(closed(&rt.block_on(replay_all(&store))), TICKETS))
    });
    let events: Vec<RecordedEvent> = rt.block_on(async {
        let mut all = Vec::new();
        while all.len() < EVENTS as usize {
            all.extend(store.read_all(all.len() as u64 + 1, 1_000).await.unwrap());
        }
        all
    });
    g.bench_function("fold_only", |b| {
        b.iter(|| {
            let mut states = HashMap::with_capacity(TICKETS);
            fold(&mut states, &events);
            assert_eq!(closed(&states), TICKETS);
        })
    });
    g.finish();
}
