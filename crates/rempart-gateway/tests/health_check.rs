//! Active health checks take a failing host out of rotation and bring it
//! back, on real sockets. Rounds of probes are run by the test (the
//! configured interval is an hour), so no test waits for a timer.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use support::{client, gateway, get, text, upstream};

/// An upstream answering `name` everywhere but `/health`, which answers the
/// status in `health`.
async fn host(name: &'static str, health: Arc<AtomicU16>) -> std::net::SocketAddr {
    upstream(move |req| {
        let health = Arc::clone(&health);
        async move {
            if req.uri().path() == "/health" {
                text(health.load(Ordering::SeqCst), "")
            } else {
                text(200, name)
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_host_failing_its_checks_takes_no_traffic_until_it_passes_again() {
    let a_health = Arc::new(AtomicU16::new(200));
    let b_health = Arc::new(AtomicU16::new(503));
    let a = host("a", Arc::clone(&a_health)).await;
    let b = host("b", Arc::clone(&b_health)).await;
    let gw = gateway(&format!(
        "[[services]]\nname = \"svc\"\nupstreams = [ \"http://{a}\", \"http://{b}\" ]\n\
         circuit_breaker = {{ enabled = false }}\n\
         fallback = {{ stale_cache = false }}\n\
         health_check = {{ path = \"/health\", interval = \"1h\", unhealthy_threshold = 2, healthy_threshold = 2 }}\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"svc\"\n"
    ))
    .await;
    let c = client();
    let check = Arc::clone(
        gw.gateway().services()[0]
            .health_check()
            .expect("configured"),
    );
    let served = |c: support::TestClient, addr| async move {
        let mut bodies = Vec::new();
        for _ in 0..40 {
            let r = get(&c, format!("http://{addr}/x")).await;
            assert_eq!(r.status, 200, "every request is served");
            bodies.push(r.body);
        }
        bodies
    };
    let status = |c: support::TestClient, admin| async move {
        get(&c, format!("http://{admin}/status")).await.body
    };

    // A new host is presumed healthy: both take traffic.
    let bodies = served(c.clone(), gw.addr).await;
    assert!(bodies.iter().any(|b| b == "b") && bodies.iter().any(|b| b == "a"));

    // One failed probe is not enough (threshold 2).
    check.probe_all_once().await;
    assert!(served(c.clone(), gw.addr).await.iter().any(|b| b == "b"));

    // The second takes b out.
    check.probe_all_once().await;
    let bodies = served(c.clone(), gw.addr).await;
    assert!(
        bodies.iter().all(|b| b == "a"),
        "b still took traffic: {bodies:?}"
    );
    assert!(
        status(c.clone(), gw.admin_addr)
            .await
            .contains("\"health_check\":\"failing\"")
    );
    let ready = get(&c, format!("http://{}/ready", gw.admin_addr)).await;
    assert_eq!(ready.status, 200, "one host of two is enough to be ready");

    // A reload that changes neither the hosts nor the checks keeps the verdict.
    let same = gw.gateway().config();
    gw.gateway().reload(&same).unwrap();
    assert!(served(c.clone(), gw.addr).await.iter().all(|b| b == "a"));
    let check = Arc::clone(gw.gateway().services()[0].health_check().unwrap());

    // b recovers: one pass is not enough, two bring it back.
    b_health.store(200, Ordering::SeqCst);
    check.probe_all_once().await;
    assert!(served(c.clone(), gw.addr).await.iter().all(|b| b == "a"));
    check.probe_all_once().await;
    assert!(served(c.clone(), gw.addr).await.iter().any(|b| b == "b"));
    assert!(!status(c.clone(), gw.admin_addr).await.contains("failing"));

    // Every host failing: not ready, but traffic still flows to all of them
    // (a check failing everywhere is likelier wrong than every host).
    a_health.store(500, Ordering::SeqCst);
    b_health.store(500, Ordering::SeqCst);
    check.probe_all_once().await;
    check.probe_all_once().await;
    let ready = get(&c, format!("http://{}/ready", gw.admin_addr)).await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("svc"), "{}", ready.body);
    let bodies = served(c.clone(), gw.addr).await;
    assert!(bodies.iter().any(|b| b == "a") && bodies.iter().any(|b| b == "b"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_host_that_does_not_answer_its_probe_in_time_fails_it() {
    // Accepts connections and never answers: only the probe timeout ends it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let gw = gateway(&format!(
        "[[services]]\nname = \"svc\"\nupstreams = [ \"http://{silent}\" ]\n\
         health_check = {{ interval = \"1h\", timeout = \"200ms\", unhealthy_threshold = 1 }}\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"svc\"\n"
    ))
    .await;
    let svc = &gw.gateway().services()[0];
    // Paused time: the 200 ms timeout passes without waiting for it.
    tokio::time::pause();
    svc.health_check().unwrap().probe_all_once().await;
    tokio::time::resume();
    assert!(
        svc.upstreams.hosts()[0].is_probed_unhealthy(),
        "a silent host passed its probe"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_changes_only_the_checks_keeps_a_failing_host_out_and_can_bring_it_back() {
    let a = host("a", Arc::new(AtomicU16::new(200))).await;
    let b_health = Arc::new(AtomicU16::new(503));
    let b = host("b", Arc::clone(&b_health)).await;
    let gw = gateway(&format!(
        "[[services]]\nname = \"svc\"\nupstreams = [ \"http://{a}\", \"http://{b}\" ]\n\
         circuit_breaker = {{ enabled = false }}\n\
         fallback = {{ stale_cache = false }}\n\
         health_check = {{ interval = \"1h\", unhealthy_threshold = 1, healthy_threshold = 2 }}\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"svc\"\n"
    ))
    .await;
    let c = client();
    let served = |c: support::TestClient, addr| async move {
        let mut bodies = Vec::new();
        for _ in 0..40 {
            bodies.push(get(&c, format!("http://{addr}/x")).await.body);
        }
        bodies
    };
    let check = |gw: &rempart_gateway::server::RunningGateway| {
        Arc::clone(gw.gateway().services()[0].health_check().unwrap())
    };
    check(&gw).probe_all_once().await;
    assert!(served(c.clone(), gw.addr).await.iter().all(|b| b == "a"));

    // New thresholds, same hosts: the hosts keep their standing, and the
    // new checks start from it rather than from "healthy".
    let mut new = gw.gateway().config();
    new.services[0]
        .health_check
        .as_mut()
        .unwrap()
        .healthy_threshold = 3;
    gw.gateway().reload(&new).unwrap();
    let check = check(&gw);
    assert_eq!(check.config().healthy_threshold, 3, "the reload took");
    assert!(served(c.clone(), gw.addr).await.iter().all(|b| b == "a"));

    b_health.store(200, Ordering::SeqCst);
    check.probe_all_once().await;
    check.probe_all_once().await;
    assert!(served(c.clone(), gw.addr).await.iter().all(|b| b == "a"));
    check.probe_all_once().await;
    let bodies = served(c.clone(), gw.addr).await;
    assert!(
        bodies.iter().any(|b| b == "b"),
        "b passed 3 probes in a row and still took no traffic"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn checks_stop_when_a_reload_replaces_them_and_when_the_gateway_shuts_down() {
    let a = host("a", Arc::new(AtomicU16::new(200))).await;
    // b fails "/health" but answers 200 everywhere else.
    let b = host("b", Arc::new(AtomicU16::new(503))).await;
    let gw = gateway(&format!(
        "[[services]]\nname = \"svc\"\nupstreams = [ \"http://{a}\", \"http://{b}\" ]\n\
         health_check = {{ interval = \"1h\", unhealthy_threshold = 1 }}\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"svc\"\n"
    ))
    .await;
    let svc = gw.gateway().services()[0].clone();
    let old = Arc::clone(svc.health_check().unwrap());
    assert!(old.is_probing(), "the checks run in the background");

    let mut new = gw.gateway().config();
    new.services[0].health_check.as_mut().unwrap().path = "/ready".into();
    gw.gateway().reload(&new).unwrap();
    let current = Arc::clone(gw.gateway().services()[0].health_check().unwrap());
    assert!(
        !Arc::ptr_eq(&old, &current),
        "the reload replaced the checks"
    );
    assert!(!old.is_probing(), "the replaced checks still probe");
    assert!(current.is_probing());
    // The old checks' path fails on b; once replaced they decide nothing.
    old.probe_all_once().await;
    assert!(
        !svc.upstreams.hosts()[1].is_probed_unhealthy(),
        "replaced checks overruled their successor"
    );
    current.probe_all_once().await;
    assert!(!svc.upstreams.hosts()[1].is_probed_unhealthy());

    gw.shutdown().await;
    assert!(!current.is_probing(), "the checks outlived the gateway");
}
