//! `rempart request` as a user runs it, against a real server on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

/// A server on loopback answering each request with the next status of
/// `statuses` (the last one for ever), and a body naming it.
fn server(statuses: &[u16]) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let statuses = statuses.to_vec();
    let count = Arc::new(Mutex::new(0usize));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let n = {
                let mut c = seen.lock().unwrap();
                *c += 1;
                *c
            };
            let code = statuses[(n - 1).min(statuses.len() - 1)];
            let body = format!("answer {n}");
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}/movies"), count)
}

fn config(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "rempart-request-{name}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

const FAST: &str =
    "[retry]\nmax_retries = 2\ninitial_delay = \"10ms\"\nmax_delay = \"50ms\"\njitter = false\n";

fn run(config: &PathBuf, url: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("request")
        .arg("--config")
        .arg(config)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_call_that_recovers_prints_each_attempt_and_exits_zero() {
    let (url, count) = server(&[503, 500, 200]);
    let (code, stdout, stderr) = run(&config("recover", FAST), &url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "answer 3");
    assert_eq!(*count.lock().unwrap(), 3);
    for line in [
        "attempt 1: HTTP 503",
        "next attempt in 10ms",
        "attempt 2: HTTP 500",
        "next attempt in 20ms",
        "attempt 3: HTTP 200",
        "breaker 127.0.0.1:",
        "HTTP 200 OK",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[test]
fn a_failing_call_exits_one_and_a_fallback_is_named() {
    let (url, _) = server(&[503]);
    let (code, _, stderr) = run(&config("fail", FAST), &url, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("gave up after 3 attempt(s): every attempt used"),
        "{stderr}"
    );

    let degraded =
        format!("{FAST}[retry.fallback]\nstrategy = \"degraded\"\ndegraded_body = \"later\"\n");
    let (code, stdout, stderr) = run(&config("degraded", &degraded), &url, &["-X", "GET"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "later");
    assert!(
        stderr.contains("fallback: the degraded answered"),
        "{stderr}"
    );
    assert!(stderr.contains("X-Degraded-Mode: true"), "{stderr}");
}

#[test]
fn a_post_with_a_body_is_sent_once_on_a_503() {
    let (url, count) = server(&[503]);
    let (code, _, stderr) = run(&config("post", FAST), &url, &["-X", "POST", "-d", "{}"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(*count.lock().unwrap(), 1);
}

#[test]
fn a_bad_config_exits_64_with_each_problem_and_its_line() {
    let bad = config(
        "bad",
        "[retry]\nmax_retries = \"three\"\n\n[retry.circuit_breaker]\nfailure_treshold = 5\n",
    );
    let (code, _, stderr) = run(&bad, "http://127.0.0.1:9/", &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(":2:15: `retry.max_retries`"), "{stderr}");
    assert!(
        stderr.contains(":5:1: `retry.circuit_breaker.failure_treshold`: unknown key; did you mean `failure_threshold`?"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&config("ok", FAST), "not a url", &[]);
    assert_eq!(code, Some(64), "{stderr}");
}

#[test]
fn an_unreachable_host_exits_one_and_names_it() {
    let (code, _, stderr) = run(&config("dns", FAST), "http://nowhere.invalid/", &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("attempt 3: dns_resolution"), "{stderr}");
    assert!(stderr.contains("nowhere.invalid"), "{stderr}");
}
