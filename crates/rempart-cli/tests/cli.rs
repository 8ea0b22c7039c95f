//! The `rempart` binary as a user runs it: exit codes, config errors, signals.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod gateway_process;
use gateway_process::{free_port, signal, start_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

fn example_config() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/gateway.toml"
    ))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rempart-cli-{name}-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_exits_zero_and_explains_the_subcommands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["gateway", "check-config", "demo"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn bad_usage_exits_64() {
    for args in [
        vec!["--frobnicate"],
        vec![],
        vec!["gateway"],
        vec!["demo", "--duration", "soon"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(example_config())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (4 services, 4 routes"));
}

#[test]
fn check_config_warns_about_the_deprecated_trusted_proxies_key() {
    let text = std::fs::read_to_string(example_config())
        .unwrap()
        .replace("trusted_proxies = [\"127.0.0.1/32\"]", "")
        .replace(
            "burst = 20\n",
            "burst = 20\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        );
    let file = temp_file("deprecated", &text);
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`rate_limit.trusted_proxies`: deprecated"),
        "{err}"
    );
    assert!(err.contains("move this key to `[server]`"), "{err}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_config_is_reported_whole_and_the_gateway_refuses_to_start() {
    let file = temp_file(
        "bad",
        "[server]\nlisten = 8080\n[[services]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\ntimout = \"1s\"\n[[routes]]\npath_prefix = \"/\"\nservice = \"b\"\n",
    );
    for args in [
        vec!["check-config".to_owned()],
        vec!["gateway".to_owned(), "--config".to_owned()],
    ] {
        let out = Command::new(BIN).args(&args).arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("has 3 problems"), "{err}");
        assert!(err.contains(":2:10: `server.listen`"), "{err}");
        assert!(err.contains("did you mean `timeout`?"), "{err}");
        assert!(err.contains("no service named \"b\""), "{err}");
    }
    let _ = std::fs::remove_file(file);
}

/// An upstream that holds each request until `release` is raised, counting arrivals.
async fn holding_upstream(
    arrived: Arc<AtomicU32>,
    release: Arc<tokio::sync::Notify>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
                    async move {
                        let notified = release.notified();
                        arrived.fetch_add(1, Ordering::SeqCst);
                        notified.await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"done",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream answering `body` to everything.
async fn answering(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        body.as_bytes(),
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn gateway_config(upstream: SocketAddr, port: u16, admin: u16, timeout: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nshutdown_grace = \"20s\"\ndrain_delay = \"1s\"\n\
         [[services]]\nname = \"up\"\nupstreams = [\"http://{upstream}\"]\ntimeout = \"{timeout}\"\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_every_accepted_request_finish_then_exits_zero() {
    let arrived = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = holding_upstream(Arc::clone(&arrived), Arc::clone(&release)).await;
    let (port, admin) = (free_port(), free_port());
    let file = temp_file("term", &gateway_config(upstream, port, admin, "30s"));
    let mut gw = start_gateway(&file).await;

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut in_flight = Vec::new();
    for i in 0..8 {
        let c = client.clone();
        let url: http::Uri = format!("http://127.0.0.1:{port}/r{i}").parse().unwrap();
        in_flight.push(tokio::spawn(async move {
            let resp = c
                .get(url)
                .await
                .expect("an accepted request must be answered");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    while arrived.load(Ordering::SeqCst) < 8 {
        tokio::task::yield_now().await;
    }
    signal(&gw, "TERM");
    // First /ready turns 503 while the listener still accepts, so a load
    // balancer stops sending before anyone is refused.
    let mut not_ready = false;
    for _ in 0..400 {
        let r = client
            .get(format!("http://127.0.0.1:{admin}/ready").parse().unwrap())
            .await
            .expect("the admin side answers during the drain");
        if r.status() == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(not_ready, "after SIGTERM /ready must answer 503");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok(),
        "the listener stays open for the drain delay"
    );
    // Then the listener closes while the eight requests are still held upstream.
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "after SIGTERM the gateway must stop accepting");
    release.notify_waiters();
    for r in in_flight {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"done"[..]));
    }
    let status = tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_without_a_failed_request_and_refuses_a_bad_file() {
    let arrived = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = holding_upstream(Arc::clone(&arrived), Arc::clone(&release)).await;
    // Answer everything at once: a released Notify wakes only waiters present,
    // so keep releasing in the background.
    let releaser = {
        let release = Arc::clone(&release);
        tokio::spawn(async move {
            loop {
                release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (port, admin) = (free_port(), free_port());
    let file = temp_file("hup", &gateway_config(upstream, port, admin, "30s"));
    let mut gw = start_gateway(&file).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let stop = Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let client: Client<HttpConnector, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .get(format!("http://127.0.0.1:{port}/x").parse().unwrap())
                    .await
                    .expect("no request may fail during a reload");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    for i in 0..10 {
        let timeout = if i % 2 == 0 { "20s" } else { "25s" };
        std::fs::write(&file, gateway_config(upstream, port, admin, timeout)).unwrap();
        signal(&gw, "HUP");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A reload that changes the routing is seen: /moved goes elsewhere.
    let other = answering("other").await;
    let moved = format!(
        "{}[[services]]\nname = \"other\"\nupstreams = [\"http://{other}\"]\n\
         [[routes]]\npath_prefix = \"/moved\"\nservice = \"other\"\n",
        gateway_config(upstream, port, admin, "20s")
    );
    std::fs::write(&file, moved).unwrap();
    signal(&gw, "HUP");
    let probe: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut rerouted = false;
    for _ in 0..400 {
        let resp = probe
            .get(format!("http://127.0.0.1:{port}/moved/x").parse().unwrap())
            .await
            .unwrap();
        if resp.into_body().collect().await.unwrap().to_bytes() == "other" {
            rerouted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(rerouted, "after SIGHUP the new route must be served");
    // A bad file is refused; the gateway keeps serving the last good one.
    std::fs::write(&file, "[[services]]\nname = \"\"\n").unwrap();
    signal(&gw, "HUP");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        assert!(l.await.unwrap() > 0);
    }
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = client
        .get(
            format!("http://127.0.0.1:{port}/moved/after")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "other",
        "the refused file left the last good routing in place"
    );
    signal(&gw, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), gw.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    releaser.abort();
    let _ = std::fs::remove_file(file);
}
