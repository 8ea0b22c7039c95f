//! The breaker per host and the fallback chain, against a real loopback
//! server under tokio's paused time.

mod support;

use std::time::Duration;

use rempart::CircuitState;
use rempart::fallback::FallbackKind;
use rempart_client::{AttemptOutcome, BreakerKey, ClientError, FallbackAnswer};
use support::{Act, Event, Server, body, config, resilient, status};

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_sheds_calls_then_probes_and_closes() {
    let server = Server::start(vec![], status(500)).await;
    let (client, rec) = resilient(&config(
        "[retry.circuit_breaker]\nfailure_threshold = 5\nsuccess_threshold = 2\ntimeout = \"60s\"\n",
    ));
    // 4 failed attempts, then the 5th opens the circuit, which ends the retries.
    assert_eq!(
        client.get(server.url("/")).send().await.unwrap().status(),
        500
    );
    assert!(client.get(server.url("/")).send().await.is_err());
    assert_eq!(server.requests(), 5);
    let key = server.key();
    assert_eq!(
        client.resilience().breaker_state(&key),
        Some(CircuitState::Open)
    );
    let last = rec.attempts();
    assert_eq!(
        last.last(),
        Some(&AttemptOutcome::Refused(CircuitState::Open))
    );

    // Shed: refused at once, not sent, not retried.
    rec.clear();
    let started = tokio::time::Instant::now();
    let err = client.get(server.url("/")).send().await.unwrap_err();
    assert_eq!(server.requests(), 5);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(
        rec.attempts(),
        [AttemptOutcome::Refused(CircuitState::Open)]
    );
    let inner = match &err {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<ClientError>(),
        _ => None,
    };
    assert_eq!(inner, Some(&ClientError::CircuitOpen { key: key.clone() }));

    // After the open period, trial calls go through; two successes close it.
    tokio::time::sleep(60 * S).await;
    server.script(vec![], body(200, "back"));
    for _ in 0..2 {
        let resp = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "back");
    }
    assert_eq!(
        client.resilience().breaker_state(&key),
        Some(CircuitState::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn breakers_are_per_host_or_per_configured_key() {
    let down = Server::start(vec![], status(503)).await;
    let up = Server::start(vec![], body(200, "ok")).await;
    let (client, _) = resilient(&config(
        "max_retries = 0\n[retry.circuit_breaker]\nfailure_threshold = 1\n",
    ));
    client.get(down.url("/")).send().await.unwrap();
    assert_eq!(
        client.resilience().breaker_state(&down.key()),
        Some(CircuitState::Open)
    );
    assert_eq!(client.get(up.url("/")).send().await.unwrap().status(), 200);

    // Both hosts under one key: the failure of one opens it for the other.
    client
        .get(down.url("/"))
        .with_extension(BreakerKey::new("movies"))
        .send()
        .await
        .unwrap();
    assert!(
        client
            .get(up.url("/"))
            .with_extension(BreakerKey::new("movies"))
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        client.resilience().breaker_state("movies"),
        Some(CircuitState::Open)
    );
}

#[tokio::test(start_paused = true)]
async fn the_cache_answers_with_the_last_good_answer_until_its_ttl() {
    let server = Server::start(vec![body(200, "[\"Alien\"]")], status(503)).await;
    let (client, rec) = resilient(&config(
        "[retry.circuit_breaker]\nenabled = false\n\
         [retry.fallback]\nenabled = true\nstrategy = \"cache\"\ncache_ttl = \"1h\"\n",
    ));
    let fresh = client.get(server.url("/movies")).send().await.unwrap();
    assert!(fresh.headers().get("x-degraded-mode").is_none());
    assert_eq!(fresh.text().await.unwrap(), "[\"Alien\"]");

    tokio::time::sleep(10 * S).await;
    let stale = client.get(server.url("/movies")).send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-degraded-mode"], "true");
    let answer = stale.extensions().get::<FallbackAnswer>().copied().unwrap();
    assert_eq!(answer.kind, FallbackKind::Cache);
    // 10 s of waiting, then 1 + 2 + 4 s of pauses before giving up.
    assert_eq!(answer.age, Some(17 * S));
    assert_eq!(stale.text().await.unwrap(), "[\"Alien\"]");
    assert!(rec.events().contains(&Event::Fallback(FallbackKind::Cache)));

    // Another URL has nothing cached: the failure stands.
    let other = client.get(server.url("/series")).send().await.unwrap();
    assert_eq!(other.status(), 503);

    tokio::time::sleep(3600 * S).await;
    let expired = client.get(server.url("/movies")).send().await.unwrap();
    assert_eq!(
        expired.status(),
        503,
        "past cache_ttl the cache does not answer"
    );
}

/// With the cache fallback, a good answer's body is read whole to be kept:
/// that read is timed by the attempt's limit too, so a body that stalls
/// fails the attempt instead of holding the call for ever.
#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_while_it_is_kept_for_the_cache_times_the_attempt_out() {
    let server = Server::start(vec![Act::StallBody], body(200, "[\"Alien\"]")).await;
    let (client, rec) = resilient(&config(
        "max_retries = 1\n[retry.circuit_breaker]\nenabled = false\n\
         [retry.fallback]\nenabled = true\nstrategy = \"cache\"\ncache_ttl = \"1h\"\n",
    ));
    let started = tokio::time::Instant::now();
    let call = tokio::time::timeout(60 * S, client.get(server.url("/movies")).send());
    let resp = call.await.expect("the call ends").unwrap();
    assert_eq!(resp.text().await.unwrap(), "[\"Alien\"]");
    assert_eq!(rec.attempts()[0], AttemptOutcome::TimedOut(2 * S));
    // The stalled attempt's 2 s limit, then the 1 s pause before the retry.
    assert_eq!(started.elapsed(), 3 * S);
}

#[tokio::test(start_paused = true)]
async fn a_default_value_answers_when_nothing_is_cached() {
    let server = Server::start(vec![], status(500)).await;
    let (client, _) = resilient(&config(
        "max_retries = 0\n[retry.fallback]\nstrategy = [\"cache\", \"default_value\"]\n\
         default_body = \"[]\"\ndefault_content_type = \"application/json\"\n",
    ));
    let resp = client.get(server.url("/movies")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-degraded-mode"], "true");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.extensions().get::<FallbackAnswer>().map(|a| a.kind),
        Some(FallbackKind::Default)
    );
    assert_eq!(resp.text().await.unwrap(), "[]");
}

#[tokio::test(start_paused = true)]
async fn a_degraded_answer_covers_even_a_dead_host_and_an_open_circuit() {
    let addr = support::closed_port().await;
    let (client, _) = resilient(&config(
        "max_retries = 0\n[retry.circuit_breaker]\nfailure_threshold = 1\n\
         [retry.fallback]\nstrategy = \"degraded\"\ndegraded_status = 203\ndegraded_body = \"later\"\n",
    ));
    for _ in 0..2 {
        let resp = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(resp.status(), 203);
        assert_eq!(resp.headers()["x-degraded-mode"], "true");
        assert_eq!(resp.text().await.unwrap(), "later");
    }
    assert_eq!(
        client.resilience().breaker_state(&addr.to_string()),
        Some(CircuitState::Open)
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_the_servers_answer_not_a_fallback() {
    let server = Server::start(vec![], status(404)).await;
    let (client, rec) = resilient(&config("[retry.fallback]\nstrategy = \"degraded\"\n"));
    let resp = client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("x-degraded-mode").is_none());
    assert!(!rec.events().iter().any(|e| matches!(e, Event::Fallback(_))));
}
