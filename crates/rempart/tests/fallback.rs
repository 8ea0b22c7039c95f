//! The fallback chain: order, predicate, counters, Prometheus, X-Degraded-Mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use rempart::fallback::{
    Degraded, Fallback, FallbackChain, FallbackCollector, FallbackLayer, FallbackMetrics,
    mark_degraded,
};
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(Debug, Clone, PartialEq)]
enum Err {
    Down,
    BadRequest,
}

async fn down() -> Result<&'static str, Err> {
    Err(Err::Down)
}

#[tokio::test]
async fn success_is_fresh_and_no_fallback_runs() {
    let looked = Arc::new(AtomicUsize::new(0));
    let l = looked.clone();
    let chain = FallbackChain::<&str, Err>::new("svc")
        .cached(move |_| {
            l.fetch_add(1, Ordering::SeqCst);
            async { Some(("cached", Duration::ZERO)) }
        })
        .default_value("default");
    let out = chain.call(|| async { Ok("live") }).await.unwrap();
    assert_eq!(
        out,
        Fallback {
            value: "live",
            mode: Degraded::Fresh
        }
    );
    assert_eq!(
        looked.load(Ordering::SeqCst),
        0,
        "the cache must not be read on success"
    );
    assert_eq!(chain.metrics(), FallbackMetrics::default());
}

#[tokio::test]
async fn steps_run_in_declared_order_until_one_answers() {
    let chain = FallbackChain::<&str, Err>::new("svc")
        .cached(|_| async { None })
        .default_value("default")
        .degraded(|_| "degraded");
    let out = chain.call(down).await.unwrap();
    assert_eq!(out.mode, Degraded::Default);
    assert_eq!(out.value, "default");

    let cached_first = FallbackChain::<&str, Err>::new("svc")
        .cached(|_| async { Some(("old", Duration::from_secs(42))) })
        .default_value("default");
    let out = cached_first.call(down).await.unwrap();
    assert_eq!(
        out.mode,
        Degraded::Stale {
            age: Duration::from_secs(42)
        }
    );
    assert_eq!(out.value, "old");

    let degraded_first = FallbackChain::<&str, Err>::new("svc")
        .degraded(|_| "degraded")
        .default_value("default");
    assert_eq!(
        degraded_first.call(down).await.unwrap().mode,
        Degraded::Degraded
    );
}

#[tokio::test]
async fn predicate_keeps_errors_it_rejects_and_empty_chain_returns_error() {
    let chain = FallbackChain::<&str, Err>::new("svc")
        .default_value("default")
        .when(|e| *e == Err::Down);
    assert_eq!(
        chain.call(|| async { Err(Err::BadRequest) }).await,
        Err(Err::BadRequest)
    );
    assert!(chain.call(down).await.is_ok());

    let empty = FallbackChain::<&str, Err>::new("svc").cached(|_| async { None });
    assert_eq!(empty.call(down).await, Err(Err::Down));
    assert_eq!(empty.metrics().unanswered, 1);
}

#[tokio::test]
async fn counters_and_prometheus_by_kind() {
    let chain = FallbackChain::<&str, Err>::new("reporting")
        .cached(|e: &Err| {
            let hit = *e == Err::Down;
            async move { hit.then_some(("old", Duration::ZERO)) }
        })
        .degraded(|_| "degraded");
    for _ in 0..3 {
        chain.call(down).await.unwrap();
    }
    chain.call(|| async { Err(Err::BadRequest) }).await.unwrap();
    assert_eq!(
        chain.metrics(),
        FallbackMetrics {
            cache: 3,
            default: 0,
            degraded: 1,
            unanswered: 0
        }
    );

    let collector = FallbackCollector::new();
    collector.add(&chain);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("# TYPE fallback_activations counter"),
        "{text}"
    );
    assert!(
        text.contains("fallback_activations_total{service=\"reporting\",kind=\"cache\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("fallback_activations_total{service=\"reporting\",kind=\"degraded\"} 1"),
        "{text}"
    );
}

#[test]
fn degraded_answers_carry_the_header_fresh_ones_do_not() {
    let mut fresh = http::Response::new(());
    mark_degraded(&mut fresh, Degraded::Fresh);
    assert!(fresh.headers().get("x-degraded-mode").is_none());

    let stale = Fallback {
        value: http::Response::new(()),
        mode: Degraded::Stale {
            age: Duration::from_secs(1),
        },
    };
    let resp = stale.into_marked_response();
    assert_eq!(resp.headers()["X-Degraded-Mode"], "true");
}

#[tokio::test]
async fn layer_answers_service_errors() {
    let chain = FallbackChain::<String, Err>::new("svc").default_value("default".to_owned());
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(chain))
        .service_fn(|fail: bool| async move {
            if fail {
                Err(Err::Down)
            } else {
                Ok("live".to_owned())
            }
        });
    let ok = svc.ready().await.unwrap().call(false).await.unwrap();
    assert_eq!((ok.value.as_str(), ok.mode), ("live", Degraded::Fresh));
    let fb = svc.ready().await.unwrap().call(true).await.unwrap();
    assert_eq!((fb.value.as_str(), fb.mode), ("default", Degraded::Default));
}
