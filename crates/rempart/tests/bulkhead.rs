//! Bulkhead: exact concurrency, the bounded wait on tokio's paused time, a
//! slot held by a streaming body until it ends, and per-service isolation.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use rempart::bulkhead::{
    Bulkhead, BulkheadCollector, BulkheadError, BulkheadLayer, Bulkheads, PermitBody,
};
use rempart::clock::TokioClock;
use tokio::sync::mpsc;
use tower::{Service, ServiceBuilder, ServiceExt};

fn bulkhead(max: u32, wait: Duration) -> Bulkhead {
    Bulkhead::builder()
        .name("optimizer")
        .max_concurrent(max)
        .max_wait(wait)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// Tracks calls in flight and the most ever seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    async fn hold(&self, d: Duration) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(d).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_calls_run_and_the_rest_queue_in_waves() {
    let b = bulkhead(10, Duration::from_secs(3600));
    let gauge = Arc::new(Gauge::default());
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (b, gauge) = (b.clone(), gauge.clone());
            tokio::spawn(async move { b.call(|| gauge.hold(Duration::from_secs(1))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 10);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(10),
        "100 calls, 10 at a time, 1 s each"
    );
    let m = b.metrics();
    assert_eq!((m.admitted, m.refused, m.in_flight), (100, 0, 0));
}

#[test]
fn concurrency_bound_holds_across_threads() {
    let b = Bulkhead::builder().max_concurrent(4).build().unwrap();
    let gauge = Gauge::default();
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    if let Ok(_slot) = b.try_acquire() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        let n = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                        gauge.max.fetch_max(n, Ordering::SeqCst);
                        std::hint::spin_loop();
                        gauge.now.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert!(gauge.max.load(Ordering::SeqCst) <= 4);
    let m = b.metrics();
    assert_eq!(m.admitted as usize, admitted.load(Ordering::Relaxed));
    assert_eq!(m.admitted + m.refused, 80_000);
    assert_eq!(m.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_max_wait_for_a_slot_then_is_refused() {
    let b = bulkhead(2, Duration::from_secs(5));
    let _held = (
        b.try_acquire_owned().unwrap(),
        b.try_acquire_owned().unwrap(),
    );
    let start = tokio::time::Instant::now();
    let refused = b.call(|| async {}).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(refused.waited, Duration::from_secs(5));
    assert_eq!(refused.max_concurrent, 2);
    assert_eq!(&*refused.name, "optimizer");
    assert_eq!(
        refused.to_string(),
        "bulkhead `optimizer` is full: all 2 slots stayed taken for 5s"
    );
    assert_eq!(refused.to_response::<String>().status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_slot_freed_before_max_wait_admits_the_waiting_call() {
    let b = bulkhead(1, Duration::from_secs(5));
    let held = b.try_acquire_owned().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        drop(held);
    });
    let start = tokio::time::Instant::now();
    assert_eq!(b.call(|| async { 7 }).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_millis(4_999));
}

#[tokio::test(start_paused = true)]
async fn zero_max_wait_refuses_at_once() {
    let b = bulkhead(1, Duration::ZERO);
    let _held = b.try_acquire().unwrap();
    let start = tokio::time::Instant::now();
    let refused = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(refused.waited, Duration::ZERO);
}

/// Issue 10: the library's 503 carried no `Retry-After`, while the gateway's
/// does; a client could only guess when to come back.
#[tokio::test(start_paused = true)]
async fn a_refusal_answers_503_with_a_retry_after_of_max_wait_rounded_up() {
    let b = bulkhead(1, Duration::from_millis(2_500));
    let _held = b.try_acquire_owned().unwrap();
    let refused = b.acquire().await.unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(3));
    let response = refused.to_response::<String>();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");

    // Refusing at once still asks for at least a second, never `Retry-After: 0`.
    let at_once = bulkhead(1, Duration::ZERO);
    let _held = at_once.try_acquire().unwrap();
    let refused = at_once.acquire().await.unwrap_err();
    assert_eq!(
        refused.to_response::<String>().headers()["retry-after"],
        "1"
    );
}

#[tokio::test(start_paused = true)]
async fn the_caller_sets_the_retry_after_a_refusal_carries() {
    let b = Bulkhead::builder()
        .name("reporting")
        .max_concurrent(1)
        .retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(b.retry_after(), Duration::from_secs(30));
    let _held = b.try_acquire().unwrap();
    let refused = b.acquire().await.unwrap_err();
    assert_eq!(
        refused.to_response::<String>().headers()["retry-after"],
        "30"
    );
}

/// A body whose frames arrive through a channel: a stream still being produced.
#[derive(Debug)]
struct Streaming(mpsc::Receiver<Bytes>);

impl Body for Streaming {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn a_streaming_body_holds_its_slot_until_it_ends() {
    let reporting = bulkhead(1, Duration::ZERO);
    let (tx, rx) = mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let mut svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(reporting.clone()).hold_through_body())
        .service_fn(move |_req: ()| {
            let body = Streaming(rx.lock().unwrap().take().unwrap());
            async move { Ok::<_, std::io::Error>(http::Response::new(body)) }
        });
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        reporting.in_flight(),
        1,
        "the headers are out, the body is not"
    );
    let second = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(matches!(second, BulkheadError::Full(_)));

    let mut body = response.into_body();
    tx.send(Bytes::from_static(b"row 1\n")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "row 1\n");
    assert!(body.holds_slot());
    assert_eq!(reporting.in_flight(), 1, "still streaming");

    drop(tx); // the report is complete
    assert!(body.frame().await.is_none());
    assert!(!body.holds_slot());
    assert_eq!(reporting.in_flight(), 0);
    assert!(reporting.try_acquire().is_ok());
}

#[tokio::test]
async fn dropping_a_body_mid_stream_frees_its_slot() {
    let b = bulkhead(1, Duration::ZERO);
    let (tx, rx) = mpsc::channel(1);
    let body = PermitBody::new(Streaming(rx), b.try_acquire_owned().unwrap());
    tx.send(Bytes::from_static(b"partial")).await.unwrap();
    assert_eq!(b.in_flight(), 1);
    drop(body); // the client went away
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn without_hold_through_body_the_slot_is_freed_with_the_response() {
    let b = bulkhead(1, Duration::ZERO);
    let mut svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(b.clone()))
        .service_fn(|_req: ()| async { Ok::<_, std::io::Error>(http::Response::new(())) });
    let _response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_layer_waits_for_a_slot_in_poll_ready() {
    let b = bulkhead(1, Duration::from_secs(5));
    let held = b.try_acquire_owned().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(b.clone()))
        .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) });
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(held);
    });
    let start = tokio::time::Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Now hold the slot past max_wait: readiness succeeds, the call is refused.
    let _held = b.try_acquire_owned().unwrap();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.full().unwrap().waited, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn saturating_reporting_leaves_the_other_services_untouched() {
    let bulkheads = Bulkheads::parse(
        "analytics: 5, users: 30, orders: 20, inventory: 20, notifications: 50, reporting: 3",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(bulkheads.len(), 6);
    // The slow reporting service: three 30-second reports.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let b = bulkheads["reporting"].clone();
            tokio::spawn(async move {
                b.call(|| tokio::time::sleep(Duration::from_secs(30)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(bulkheads["reporting"].in_flight(), 3);

    // Every other service still gets its full capacity, at once.
    let gauge = Arc::new(Gauge::default());
    let start = tokio::time::Instant::now();
    let fast: Vec<_> = (0..30)
        .map(|_| {
            let (b, g) = (bulkheads["users"].clone(), gauge.clone());
            tokio::spawn(async move { b.call(|| g.hold(Duration::from_millis(50))).await })
        })
        .chain((0..20).map(|_| {
            let (b, g) = (bulkheads["orders"].clone(), gauge.clone());
            tokio::spawn(async move { b.call(|| g.hold(Duration::from_millis(50))).await })
        }))
        .collect();
    for t in fast {
        t.await.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_millis(50), "no call waited");
    assert_eq!(gauge.max.load(Ordering::SeqCst), 50);

    // A fourth report waits 5 s and is refused; the three keep running.
    let refused = bulkheads["reporting"].call(|| async {}).await.unwrap_err();
    assert_eq!(&*refused.name, "reporting");
    assert_eq!(refused.max_concurrent, 3);
    for t in slow {
        t.await.unwrap();
    }
    assert_eq!(bulkheads["users"].metrics().refused, 0);
    assert_eq!(bulkheads["reporting"].metrics().refused, 1);
}

#[test]
fn bad_limits_say_which_service_and_how_to_fix_it() {
    let e = Bulkheads::parse("users: 30, orders: twenty", Duration::ZERO).unwrap_err();
    assert_eq!(e.field(), "orders");
    assert!(
        e.to_string().contains("`twenty` is not a whole number"),
        "{e}"
    );
    let e = Bulkheads::parse("users 30", Duration::ZERO).unwrap_err();
    assert_eq!(e.field(), "item 1");
    let e = Bulkheads::parse("users: 30, users: 5", Duration::ZERO).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    let e = Bulkheads::parse("reporting: 0", Duration::ZERO).unwrap_err();
    assert_eq!(e.field(), "reporting");
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert!(Bulkhead::builder().build().is_err());
    assert!(Bulkheads::parse("users: 30,", Duration::ZERO).is_ok());
    assert!(
        Bulkheads::new([("a", 1), ("b", 2)], Duration::ZERO)
            .unwrap()
            .get("c")
            .is_none()
    );
}

#[test]
fn prometheus_shows_in_flight_and_refusals_per_service() {
    let bulkheads = Bulkheads::parse("reporting: 2, users: 30", Duration::ZERO).unwrap();
    let collector = BulkheadCollector::new();
    collector.add_all(&bulkheads);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let _a = bulkheads["reporting"].try_acquire().unwrap();
    let _b = bulkheads["reporting"].try_acquire().unwrap();
    assert!(bulkheads["reporting"].try_acquire().is_err());
    let _c = bulkheads["users"].try_acquire().unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"bulkhead_inflight{service="reporting"} 2"#,
        r#"bulkhead_inflight{service="users"} 1"#,
        r#"bulkhead_max_concurrent{service="users"} 30"#,
        r#"bulkhead_rejected_total{service="reporting"} 1"#,
        r#"bulkhead_rejected_total{service="users"} 0"#,
        r#"bulkhead_admitted_total{service="reporting"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

/// Everything `f` logs through `tracing`, at DEBUG and above, as text.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_refusal_is_an_info_event_naming_the_bulkhead() {
    let b = Bulkhead::builder()
        .name("reporting")
        .max_concurrent(1)
        .build()
        .unwrap();
    let log = logged(|| {
        let _slot = b.try_acquire().unwrap();
        let _ = b.try_acquire();
    });
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("INFO")
            && lines[0].contains("bulkhead full")
            && lines[0].contains("bulkhead=reporting")
            && lines[0].contains("max_concurrent=1"),
        "{log}"
    );
}
