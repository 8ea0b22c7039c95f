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
