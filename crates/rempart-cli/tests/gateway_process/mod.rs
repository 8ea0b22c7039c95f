//! `rempart gateway` as a child process, for the tests that signal or kill it.

use std::path::Path;
use std::process::{Command, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

/// A port free now (bound, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and waits for its "clients on" line.
pub(crate) async fn start_gateway(config: &Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(BIN)
        .arg("gateway")
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the gateway exited before listening");
        if line.contains("clients on") {
            break;
        }
    }
    // Keep draining stderr so the gateway never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Sends `sig` (a name such as `TERM`) to the child.
pub(crate) fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}
