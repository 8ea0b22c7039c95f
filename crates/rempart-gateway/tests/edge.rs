//! The gateway's edge: which path is routed and forwarded, who the client
//! is, and what the admin side lets through.

mod support;

use std::sync::{Arc, Mutex};

use http::Request;
use http_body_util::Full;
use rempart_gateway::config::GatewayConfig;
use rempart_gateway::server::RunningGateway;
use support::{client, gateway, gateway_with_server, get, send, text, upstream};

/// An upstream answering `name` that records each request's target and
/// `X-Forwarded-For` lines.
async fn recording(
    name: &'static str,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let addr = upstream(move |req| {
        let log = Arc::clone(&log);
        async move {
            let xff: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            log.lock()
                .unwrap()
                .push((req.uri().to_string(), xff.join(" | ")));
            text(200, name)
        }
    })
    .await;
    (addr, seen)
}

fn service(name: &str, addr: std::net::SocketAddr, prefix: &str) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\nupstreams = [\"http://{addr}\"]\n\
         [[routes]]\npath_prefix = \"{prefix}\"\nservice = \"{name}\"\n"
    )
}

#[tokio::test]
async fn paths_that_climb_out_of_their_route_are_routed_normalised_or_refused() {
    let (public, public_seen) = recording("public").await;
    let (internal, internal_seen) = recording("internal").await;
    let gw = gateway(&format!(
        "{}{}",
        service("public", public, "/public"),
        service("internal", internal, "/internal")
    ))
    .await;
    let c = client();
    let at = |p: &str| format!("http://{}{p}", gw.addr);

    // Dot segments, plain or percent-encoded, are resolved before routing:
    // the request goes where its real path says, with that path.
    for p in [
        "/public/../internal/admin?x=1",
        "/public/%2e%2e/internal/admin?x=1",
        "/public/.%2E/internal/./admin?x=1",
    ] {
        let a = get(&c, at(p)).await;
        assert_eq!((a.status, a.body.as_str()), (200, "internal"), "{p}");
    }
    assert!(public_seen.lock().unwrap().is_empty());
    let targets: Vec<String> = internal_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(targets, vec!["/internal/admin?x=1"; 3]);

    // An encoded slash or backslash, a climb above the root and a broken
    // escape are refused with a JSON 400, and nothing is forwarded.
    for p in [
        "/public/..%2finternal/admin",
        "/public/..%5Cinternal/admin",
        "/public/../../etc/passwd",
        "/public/%zz",
    ] {
        let a = get(&c, at(p)).await;
        assert_eq!(a.status, 400, "{p}: {}", a.body);
        assert!(a.body.contains("\"error\":\"bad_path\""), "{p}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/json");
    }
    assert!(public_seen.lock().unwrap().is_empty());
    assert_eq!(internal_seen.lock().unwrap().len(), 3);

    // Escapes of unreserved characters are decoded; a normal path is as is.
    assert_eq!(get(&c, at("/public/%7Ea/b")).await.body, "public");
    assert_eq!(get(&c, at("/public/x%20y")).await.body, "public");
    let targets: Vec<String> = public_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(targets, vec!["/public/~a/b", "/public/x%20y"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn trusted_proxies_under_server_name_the_client_without_a_rate_limit() {
    let (up, seen) = recording("ok").await;
    let gw =
        gateway_with_server("trusted_proxies = [\"127.0.0.1\"]", &service("up", up, "/")).await;
    let c = client();
    // Two header lines from the trusted proxy: both are kept, in order.
    let req = Request::get(format!("http://{}/x", gw.addr))
        .header("x-forwarded-for", "198.51.100.1")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    assert_eq!(
        seen.lock().unwrap()[0].1,
        "198.51.100.1, 203.0.113.7, 127.0.0.1"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_ipv4_mapped_peer_is_recognised_as_its_trusted_proxy() {
    let (up, seen) = recording("ok").await;
    let text = format!(
        "[server]\nlisten = \"[::]:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1\"]\n{}",
        service("up", up, "/")
    );
    let gw = RunningGateway::start(&GatewayConfig::parse(&text, "t.toml").unwrap())
        .await
        .unwrap();
    let c = client();
    // Over IPv4 to a dual-stack listener, the peer is ::ffff:127.0.0.1.
    let req = Request::get(format!("http://127.0.0.1:{}/x", gw.addr.port()))
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, req).await.status, 200);
    assert_eq!(seen.lock().unwrap()[0].1, "203.0.113.7, 127.0.0.1");
    gw.shutdown().await;
}

#[tokio::test]
async fn ipv6_clients_of_one_64_share_a_rate_limit() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server(
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!(
            "[rate_limit]\nrate = 1\nburst = 1\n{}",
            service("up", up, "/")
        ),
    )
    .await;
    let c = client();
    let from = |client_ip: &str| {
        Request::get(format!("http://{}/x", gw.addr))
            .header("x-forwarded-for", client_ip)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(&c, from("2001:db8:0:1::1")).await.status, 200);
    // Another address of the same /64: the same bucket, already empty.
    assert_eq!(send(&c, from("2001:db8:0:1::2")).await.status, 429);
    assert_eq!(
        send(&c, from("2001:db8:0:1:ffff:ffff:ffff:ffff"))
            .await
            .status,
        429
    );
    // Another /64 has its own.
    assert_eq!(send(&c, from("2001:db8:0:2::1")).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_query_token_opens_the_dashboard_page_only() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("admin_token = \"s3cret\"", &service("up", up, "/")).await;
    let c = client();
    let admin = |p: &str| format!("http://{}{p}", gw.admin_addr);
    assert_eq!(get(&c, admin("/dashboard?token=s3cret")).await.status, 200);
    assert_eq!(get(&c, admin("/?token=s3cret")).await.status, 200);
    for p in ["/status?token=s3cret", "/metrics?token=s3cret"] {
        let a = get(&c, admin(p)).await;
        assert_eq!(a.status, 401, "{p}");
        assert!(a.body.contains("Authorization: Bearer"), "{}", a.body);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_posts_need_the_admin_header_or_the_token() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway(&service("up", up, "/")).await;
    let c = client();
    let admin = gw.admin_addr;
    let post = |admin: std::net::SocketAddr, p: &str, header: Option<(&str, &str)>| {
        let mut r = Request::post(format!("http://{admin}{p}"));
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        r.body(Full::default()).unwrap()
    };
    // A form on any web page could send these: refused, and nothing tripped.
    for p in ["/breakers/up/trip", "/breakers/up/reset", "/reload"] {
        let a = send(&c, post(admin, p, None)).await;
        assert_eq!(a.status, 403, "{p}");
        assert!(a.body.contains("X-Rempart-Admin: 1"), "{}", a.body);
    }
    let a = send(
        &c,
        post(admin, "/breakers/up/trip", Some(("x-rempart-admin", "0"))),
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        gw.gateway().services()[0].breaker.state().to_string(),
        "Closed"
    );
    let a = send(
        &c,
        post(admin, "/breakers/up/trip", Some(("x-rempart-admin", "1"))),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        gw.gateway().services()[0].breaker.state().to_string(),
        "Open"
    );
    gw.shutdown().await;

    // With a token, the bearer header is proof enough.
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway_with_server("admin_token = \"s3cret\"", &service("up", up, "/")).await;
    let a = send(
        &c,
        post(
            gw.admin_addr,
            "/breakers/up/trip",
            Some(("authorization", "Bearer s3cret")),
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    gw.shutdown().await;
}
