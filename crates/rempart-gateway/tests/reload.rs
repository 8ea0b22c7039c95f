//! Reloading the configuration while the gateway serves.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Request;
use http_body_util::Full;
use rempart::CircuitState;
use rempart_gateway::server::RunningGateway;
use support::{client, get, send, text, upstream};

fn config(users: std::net::SocketAddr, orders: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[services]]
name = "users"
upstreams = [ "http://{users}" ]

[[services]]
name = "orders"
upstreams = [ "http://{orders}" ]

[[routes]]
path_prefix = "/users"
service = "users"
{extra_route}
"#
    )
}

struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("rempart-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }
    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const ORDERS_ROUTE: &str = "[[routes]]\npath_prefix = \"/orders\"\nservice = \"orders\"\n";

#[tokio::test]
async fn a_reload_adds_routes_and_keeps_the_state_of_unchanged_breakers() {
    let users = upstream(|_| async { text(200, "users") }).await;
    let orders = upstream(|_| async { text(200, "orders") }).await;
    let file = ConfigFile::new("reload-keep", &config(users, orders, ""));
    let gw = RunningGateway::start_from_file(&file.0).await.unwrap();
    let c = client();
    assert_eq!(
        get(&c, format!("http://{}/orders", gw.addr)).await.status,
        404
    );
    gw.gateway().services()[0].breaker.trip();

    file.write(&config(users, orders, ORDERS_ROUTE));
    let report = gw.reload().unwrap();
    assert_eq!(report.breakers_kept, vec!["users", "orders"]);
    assert_eq!(
        get(&c, format!("http://{}/orders", gw.addr)).await.body,
        "orders"
    );
    // The tripped breaker survived the reload: users is still refused.
    assert_eq!(
        gw.gateway().services()[0].breaker.state(),
        CircuitState::Open
    );
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.status,
        503
    );

    // Changing a breaker's settings gives that service a fresh breaker.
    let changed = config(users, orders, ORDERS_ROUTE).replace(
        "name = \"users\"\n",
        "name = \"users\"\ncircuit_breaker = { reset_timeout = \"5s\" }\n",
    );
    file.write(&changed);
    let report = gw.reload().unwrap();
    assert_eq!(report.breakers_new, vec!["users"]);
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_reload_is_refused_and_the_old_configuration_keeps_serving() {
    let users = upstream(|_| async { text(200, "users") }).await;
    let orders = upstream(|_| async { text(200, "orders") }).await;
    let file = ConfigFile::new("reload-bad", &config(users, orders, ""));
    let gw = RunningGateway::start_from_file(&file.0).await.unwrap();
    let c = client();

    file.write(&config(
        users,
        orders,
        "[[routes]]\npath_prefix = \"/x\"\nservice = \"nobody\"\n",
    ));
    let err = gw.reload().unwrap_err();
    assert!(
        err.to_string().contains("no service named \"nobody\""),
        "{err}"
    );
    // Through the admin API, the same refusal as a 400 naming the problem.
    let a = send(
        &c,
        Request::post(format!("http://{}/reload", gw.admin_addr))
            .header("x-rempart-admin", "1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("routes[1].service"), "{}", a.body);
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.body,
        "users"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_no_request() {
    let users = upstream(|_| async { text(200, "users") }).await;
    let orders = upstream(|_| async { text(200, "orders") }).await;
    let file = ConfigFile::new("reload-load", &config(users, orders, ORDERS_ROUTE));
    let gw = RunningGateway::start_from_file(&file.0).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4 {
        let (c, stop, addr) = (client(), Arc::clone(&stop), gw.addr);
        load.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 2 == 0 { "users" } else { "orders" };
                let a = get(&c, format!("http://{addr}/{path}")).await;
                assert_eq!((a.status, a.body.as_str()), (200, path));
                answered += 1;
            }
            answered
        }));
    }
    for n in 0..20 {
        let timeout = if n % 2 == 0 { "3s" } else { "4s" };
        file.write(&config(users, orders, ORDERS_ROUTE).replace(
            "name = \"orders\"\n",
            &format!("name = \"orders\"\ntimeout = \"{timeout}\"\n"),
        ));
        gw.reload().unwrap();
        // Let requests run on the new configuration before the next swap.
        let c = client();
        let _ = get(&c, format!("http://{}/users", gw.addr)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        assert!(l.await.unwrap() > 0);
    }
    gw.shutdown().await;
}

/// A raw request with a `header_kib` KiB header on a new connection; the
/// status line of the answer.
async fn status_line_with_header(addr: std::net::SocketAddr, header_kib: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(header_kib * 1024);
    s.write_all(
        format!("GET /users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {big}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_reload_applies_the_admin_token_and_limits_and_names_what_needs_a_restart() {
    let users = upstream(|_| async { text(200, "users") }).await;
    let orders = upstream(|_| async { text(200, "orders") }).await;
    let file = ConfigFile::new("reload-server", &config(users, orders, ""));
    let gw = RunningGateway::start_from_file(&file.0).await.unwrap();
    let c = client();
    let admin = |p: &str| format!("http://{}{p}", gw.admin_addr);
    assert_eq!(get(&c, admin("/status")).await.status, 200);
    assert_eq!(
        status_line_with_header(gw.addr, 12).await,
        "HTTP/1.1 200 OK"
    );

    file.write(&config(users, orders, "").replace(
        "listen = \"127.0.0.1:0\"\nadmin_listen",
        "listen = \"127.0.0.1:1\"\nadmin_token = \"fresh\"\nmax_header_bytes = \"8KiB\"\n\
         max_body_bytes = 16\nworker_threads = 3\nadmin_listen",
    ));
    let a = send(
        &c,
        Request::post(admin("/reload"))
            .header("x-rempart-admin", "1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body
            .contains("\"needs_restart\":[\"server.listen\",\"server.worker_threads\"]"),
        "{}",
        a.body
    );
    // The new token guards the very next admin request.
    assert_eq!(get(&c, admin("/status")).await.status, 401);
    let with_token = Request::get(admin("/status"))
        .header("authorization", "Bearer fresh")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&c, with_token).await.status, 200);
    // The head limit holds from the next connection, the body limit at once.
    assert!(
        status_line_with_header(gw.addr, 12)
            .await
            .starts_with("HTTP/1.1 431"),
    );
    let body = Request::post(format!("http://{}/users", gw.addr))
        .body(Full::new(bytes::Bytes::from_static(&[b'x'; 32])))
        .unwrap();
    assert_eq!(send(&c, body).await.status, 413);
    // The listener stays where it was bound.
    assert_eq!(
        get(&c, format!("http://{}/users", gw.addr)).await.body,
        "users"
    );
    gw.shutdown().await;
}
