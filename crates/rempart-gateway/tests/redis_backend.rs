//! The Redis connection against a real Redis server: the shared one at
//! 127.0.0.1:6379 (`.ci/run` starts it), and a private one this test starts
//! and kills to see the gateway survive losing it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rempart_gateway::redis_backend::RedisBackend;

/// A throwaway redis-server on a free port, killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is on this machine (Debian's redis-server package)");
        PrivateRedis { child, port }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn commands_reach_the_shared_redis() {
    let r = RedisBackend::new("redis://127.0.0.1:6379").unwrap();
    let key = format!("rempart-test:{}", std::process::id());
    let ok: Option<()> = r
        .run(
            redis::cmd("SET")
                .arg(&key)
                .arg("v")
                .arg("EX")
                .arg(10)
                .clone(),
        )
        .await;
    assert!(
        ok.is_some(),
        "is redis running on 127.0.0.1:6379? (.ci/run starts it)"
    );
    let v: Option<String> = r.run(redis::cmd("GET").arg(&key).clone()).await;
    assert_eq!(v.as_deref(), Some("v"));
    assert!(r.is_healthy());
}

#[tokio::test]
async fn losing_redis_marks_the_backend_down_quickly_and_it_recovers() {
    let server = PrivateRedis::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let r = RedisBackend::new(&url).unwrap();
    let _probe = r.spawn_probe();
    eventually("the private redis to answer", async || r.is_healthy()).await;

    drop(server);
    // A command now fails within its deadline instead of hanging the request.
    let started = tokio::time::Instant::now();
    let v: Option<String> = r.run(redis::cmd("GET").arg("k").clone()).await;
    assert_eq!(v, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!r.is_healthy());

    // Same port again: the probe reconnects on its own.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut again = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the probe to reconnect", async || r.is_healthy()).await;
    let _ = again.kill();
    let _ = again.wait();
}
