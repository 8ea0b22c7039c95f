//! The gateway applies the library's order of policies to every attempt:
//! retry → circuit breaker → bulkhead → per-try timeout (ARCHITECTURE.md,
//! "One order of policies"). These tests guard what that order means for a
//! user: the breaker sees every attempt, an open circuit ends the retries,
//! and a retry's pause holds no bulkhead slot.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use support::{client, gateway, get, text, upstream};
use tokio::sync::Notify;

fn service(name: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!("[[services]]\nname = \"{name}\"\nupstreams = [ \"http://{addr}\" ]\n{extra}\n")
}

fn route(prefix: &str, service: &str) -> String {
    format!("[[routes]]\npath_prefix = \"{prefix}\"\nservice = \"{service}\"\n")
}

/// An upstream that answers 503 to everything, counting the calls.
async fn failing() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let up = upstream(move |_| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            text(503, "down")
        }
    })
    .await;
    (up, calls)
}

#[tokio::test]
async fn the_breaker_counts_every_attempt_not_one_outcome_per_request() {
    let (up, calls) = failing().await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "orders",
            up,
            "retry = { attempts = 3, initial = \"1ms\", max = \"2ms\", on = [503] }\n\
             circuit_breaker = { volume_threshold = 100 }"
        ),
        route("/", "orders"),
    ))
    .await;
    let a = get(&client(), format!("http://{}/x", gw.addr)).await;
    assert_eq!(a.status, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let breaker = &gw.gateway().services()[0].breaker;
    assert_eq!(
        breaker.metrics().failed_calls,
        3,
        "each failed attempt is a failure the breaker sees"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_open_circuit_ends_the_retries_at_once_and_the_last_answer_stands() {
    let (up, calls) = failing().await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "orders",
            up,
            "retry = { attempts = 5, initial = \"1ms\", max = \"2ms\", on = [503] }\n\
             circuit_breaker = { error_threshold_percentage = 50, volume_threshold = 2, reset_timeout = \"60s\" }"
        ),
        route("/", "orders"),
    ))
    .await;
    let a = get(&client(), format!("http://{}/x", gw.addr)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the second failure opens the circuit: no third attempt"
    );
    assert_eq!(
        (a.status, a.body.as_str()),
        (503, "down"),
        "the upstream's own last answer, not a made-up refusal"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_pausing_between_retries_holds_no_bulkhead_slot() {
    // /flaky fails and its retry pauses 30 s; /ok answers at once. One slot.
    let first_failure = Arc::new(Notify::new());
    let notify = Arc::clone(&first_failure);
    let up = upstream(move |r| {
        let notify = Arc::clone(&notify);
        async move {
            if r.uri().path() == "/flaky" {
                notify.notify_one();
                text(503, "down")
            } else {
                text(200, "ok")
            }
        }
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        service(
            "api",
            up,
            "timeout = \"60s\"\n\
             retry = { attempts = 2, backoff = \"constant\", initial = \"30s\", max = \"30s\", jitter = \"none\", on = [503] }\n\
             bulkhead = { max_concurrent = 1, max_wait = \"50ms\" }"
        ),
        route("/", "api"),
    ))
    .await;
    let c = client();
    let flaky = tokio::spawn({
        let c = c.clone();
        let url = format!("http://{}/flaky", gw.addr);
        async move { get(&c, url).await }
    });
    first_failure.notified().await;
    let ok = get(&c, format!("http://{}/ok", gw.addr)).await;
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "ok"),
        "the slot is free while the other request waits to retry"
    );
    flaky.abort();
    gw.shutdown().await;
}
