//! A real RabbitMQ on 127.0.0.1:5672 (guest/guest) for the queue tests:
//! queue names of their own per test, deleted afterwards.

use std::time::{Duration, SystemTime};

use rempart::clock::UnixClock;
use rempart_gateway::queue::wall_time;

use lapin::options::QueueDeleteOptions;
use rempart_gateway::queue::topology::{self, QueueNames};

/// The broker every queue test uses.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The deadline on the tests' own broker operations.
pub const T: Duration = Duration::from_secs(5);

/// Now, as wall time (job ids are dates).
pub fn now() -> SystemTime {
    wall_time(&UnixClock::new())
}

/// Queue names no other test (or run) uses.
pub fn unique_names(test: &str) -> QueueNames {
    let nanos = wall_time(&UnixClock::new())
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    QueueNames::new(&format!("rq-{test}-{}-{nanos}", std::process::id()))
}

/// Deletes a test's queues (work, dead letters, delays up to
/// `max_attempts`) when dropped, even when the test failed: on a thread of
/// its own, since the test's runtime may be unwinding.
pub struct Cleanup {
    pub names: QueueNames,
    pub max_attempts: u32,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (names, max_attempts) = (self.names.clone(), self.max_attempts);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let conn = topology::connect(AMQP, T).await.unwrap();
                let ch = conn.create_channel().await.unwrap();
                for q in names.all(max_attempts) {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            });
        })
        .join();
    }
}

/// What the broker says of `queue` now: (messages ready, consumers). A
/// message a consumer holds unacked is not ready.
pub async fn queue_state(queue: &str) -> (u32, u32) {
    let conn = topology::connect(AMQP, T).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
        .unwrap();
    let _ = conn.close(200, "read".into()).await;
    (q.message_count(), q.consumer_count())
}

/// Waits up to 10 s for `queue` to hold `ready` messages and no consumer:
/// a held worker's state once it has handed its deliveries back.
pub async fn wait_held(queue: &str, ready: u32) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = queue_state(queue).await;
        if state == (ready, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{queue}: (ready, consumers) = {state:?}, expected ({ready}, 0)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
