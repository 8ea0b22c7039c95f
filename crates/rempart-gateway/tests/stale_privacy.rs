//! The stale fallback never serves one user's answer to another (issue 10,
//! item 1), through a real gateway in front of a real upstream that can be
//! switched to failing, with the in-process store and with Redis.
//!
//! With Redis, every test uses paths no other run uses, so runs sharing the
//! Redis at 127.0.0.1:6379 never meet.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{Answer, client, gateway, send, text, upstream};

/// A service whose answers depend on the path, echoing the caller's
/// credentials and language; it answers 503 while `failing` is set.
struct Scene {
    gw: rempart_gateway::server::RunningGateway,
    failing: Arc<AtomicBool>,
    /// Makes this run's paths unique.
    run: String,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Scene {
    async fn start(backend: &str, fallback: &str) -> Scene {
        let failing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failing);
        let up = upstream(move |r| {
            let failing = flag.load(Ordering::SeqCst);
            async move {
                if failing {
                    return text(503, "down");
                }
                let h = |n: &str| {
                    r.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                let body = format!(
                    "{} for {} in {}",
                    r.uri().path(),
                    h("authorization"),
                    h("accept-language")
                );
                let mut resp = text(200, body);
                let headers = resp.headers_mut();
                let mut set = |n: &'static str, v: &str| {
                    headers.insert(n, v.parse().unwrap());
                };
                set("content-type", "text/plain; charset=utf-8");
                match r.uri().path().rsplit('/').next().unwrap_or("") {
                    "private" => set("cache-control", "private, max-age=60"),
                    "no-store" => set("cache-control", "no-store"),
                    "cookie" => set("set-cookie", "sid=alice"),
                    "vary" => set("vary", "Accept-Language"),
                    "vary-star" => set("vary", "*"),
                    "bounded" => set("cache-control", "max-age=0, stale-if-error=0"),
                    "full" => {
                        set("content-language", "fr");
                        set("etag", "\"v7\"");
                        set("last-modified", "Sun, 29 Nov 2026 10:00:00 GMT");
                        set("cache-control", "public, max-age=60, stale-if-error=600");
                        set("x-internal", "not kept");
                    }
                    _ => {}
                }
                resp
            }
        })
        .await;
        let cache = match backend {
            "redis" => "[cache]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n",
            _ => "",
        };
        let gw = gateway(&format!(
            "{cache}[[services]]\nname = \"shop\"\nupstreams = [ \"http://{up}\" ]\n{fallback}\n\
             [[routes]]\npath_prefix = \"/\"\nservice = \"shop\"\n"
        ))
        .await;
        let run = format!(
            "/run-{}-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed),
            backend
        );
        Scene { gw, failing, run }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(format!("http://{}{}{path}", self.gw.addr, self.run));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        send(&client(), req.body(Full::<Bytes>::default()).unwrap()).await
    }

    fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

fn degraded(a: &Answer) -> bool {
    a.headers
        .get("x-degraded-mode")
        .is_some_and(|v| v == "true")
}

/// The answer a failing service gives when nothing may be served stale: a
/// 503 (the upstream's, or the gateway's degraded one), never an earlier 200.
fn assert_not_served_stale(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: served stale: {:?}", a.body);
}

async fn an_answer_to_a_request_with_credentials_is_served_to_nobody(backend: &str) {
    let s = Scene::start(backend, "").await;
    let alice = [("authorization", "Bearer alice")];
    let fresh = s.get("/report", &alice).await;
    assert_eq!((fresh.status, fresh.body.contains("alice")), (200, true));
    s.fail();
    for (who, headers) in [
        ("bob", &[("authorization", "Bearer bob")][..]),
        ("an anonymous client", &[][..]),
        ("alice herself", &alice[..]),
        ("a cookie holder", &[("cookie", "sid=x")][..]),
    ] {
        let a = s.get("/report", headers).await;
        assert!(!a.body.contains("alice"), "{who} got alice's answer");
        assert_not_served_stale(&a, who);
    }
    s.gw.shutdown().await;
}

async fn private_no_store_cookie_and_vary_star_answers_are_not_served_stale(backend: &str) {
    let s = Scene::start(backend, "").await;
    for path in ["/private", "/no-store", "/cookie", "/vary-star"] {
        assert_eq!(s.get(path, &[]).await.status, 200);
    }
    assert_eq!(
        s.get("/report", &[("cache-control", "no-store")])
            .await
            .status,
        200
    );
    s.fail();
    for path in ["/private", "/no-store", "/cookie", "/vary-star", "/report"] {
        assert_not_served_stale(&s.get(path, &[]).await, path);
    }
    s.gw.shutdown().await;
}

async fn a_public_answer_is_served_stale_with_the_headers_to_read_it(backend: &str) {
    let s = Scene::start(backend, "").await;
    let fresh = s.get("/full", &[]).await;
    assert_eq!(fresh.status, 200);
    s.fail();
    let stale = s.get("/full", &[]).await;
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, fresh.body.as_str())
    );
    assert!(degraded(&stale));
    for name in [
        "content-type",
        "content-language",
        "etag",
        "last-modified",
        "cache-control",
    ] {
        assert_eq!(stale.headers.get(name), fresh.headers.get(name), "{name}");
    }
    assert_eq!(stale.headers.get("x-internal"), None);
    s.gw.shutdown().await;
}

async fn clients_differing_in_a_varied_header_never_get_each_others_answer(backend: &str) {
    let s = Scene::start(backend, "").await;
    let fr = [("accept-language", "fr")];
    let de = [("accept-language", "de")];
    let fresh_fr = s.get("/vary", &fr).await;
    assert!(fresh_fr.body.ends_with("in fr"));
    s.fail();
    let stale_fr = s.get("/vary", &fr).await;
    assert_eq!(stale_fr.body, fresh_fr.body);
    assert!(degraded(&stale_fr));
    assert_not_served_stale(&s.get("/vary", &de).await, "the German client");
    assert_not_served_stale(&s.get("/vary", &[]).await, "a client without a language");
    s.gw.shutdown().await;
}

async fn stale_if_error_bounds_the_age_of_a_stale_answer(backend: &str) {
    let s = Scene::start(backend, "").await;
    assert_eq!(s.get("/bounded", &[]).await.status, 200);
    assert_eq!(s.get("/report", &[]).await.status, 200);
    s.fail();
    // `max-age=0, stale-if-error=0`: too old as soon as it is stored.
    assert_not_served_stale(&s.get("/bounded", &[]).await, "/bounded");
    assert!(degraded(&s.get("/report", &[]).await));
    s.gw.shutdown().await;
}

async fn an_opted_in_service_serves_each_user_only_their_own_answer(backend: &str) {
    let s = Scene::start(backend, "fallback = { stale_cache_private = true }").await;
    let alice = [("authorization", "Bearer alice")];
    let fresh = s.get("/private", &alice).await;
    assert_eq!(fresh.status, 200);
    s.fail();
    let stale = s.get("/private", &alice).await;
    assert_eq!(
        (stale.body.as_str(), degraded(&stale)),
        (fresh.body.as_str(), true)
    );
    let bob = s.get("/private", &[("authorization", "Bearer bob")]).await;
    assert!(!bob.body.contains("alice"));
    assert_not_served_stale(&bob, "bob");
    assert_not_served_stale(&s.get("/private", &[]).await, "an anonymous client");
    s.gw.shutdown().await;
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case("memory").await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case("redis").await;
                }
            )*
        }
    };
}

on_both_backends!(
    an_answer_to_a_request_with_credentials_is_served_to_nobody,
    private_no_store_cookie_and_vary_star_answers_are_not_served_stale,
    a_public_answer_is_served_stale_with_the_headers_to_read_it,
    clients_differing_in_a_varied_header_never_get_each_others_answer,
    stale_if_error_bounds_the_age_of_a_stale_answer,
    an_opted_in_service_serves_each_user_only_their_own_answer,
);
