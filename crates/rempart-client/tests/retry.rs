//! Retries against a real loopback server, under tokio's paused time: what
//! is retried, how often, after which pauses, within which limits.

mod support;

use std::time::Duration;

use rempart_client::{AttemptOutcome, ErrorKind};
use support::{Act, Server, body, closed_port, config, resilient, status};

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn each_retryable_status_is_retried_with_the_seeds_pauses() {
    for code in [429, 500, 502, 503, 504] {
        let server = Server::start(vec![], status(code)).await;
        let (client, rec) = resilient(&config(""));
        let started = tokio::time::Instant::now();
        let resp = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code, "the last answer is returned");
        assert_eq!(server.requests(), 4, "{code}: 1 attempt + max_retries = 3");
        assert_eq!(rec.delays(), [S, 2 * S, 4 * S], "{code}");
        assert_eq!(
            rec.attempt_times(),
            [Duration::ZERO, S, 3 * S, 7 * S],
            "{code}"
        );
        assert_eq!(started.elapsed(), 7 * S, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_non_retryable_status_is_sent_once() {
    for code in [400, 401, 403, 404, 422] {
        let server = Server::start(vec![], status(code)).await;
        let (client, rec) = resilient(&config(""));
        let resp = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert_eq!(server.requests(), 1, "{code} is the server's answer");
        assert!(rec.delays().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_recovering_server_is_answered_after_the_retries() {
    let server = Server::start(vec![status(503), status(502)], body(200, "ok")).await;
    let (client, rec) = resilient(&config(""));
    let resp = client.get(server.url("/movies")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    assert_eq!(
        rec.attempts(),
        [
            AttemptOutcome::Status(503),
            AttemptOutcome::Status(502),
            AttemptOutcome::Status(200)
        ]
    );
    assert_eq!(rec.delays(), [S, 2 * S]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_connection_is_retried() {
    let server = Server::start(vec![Act::Reset, Act::Reset], body(200, "ok")).await;
    let (client, rec) = resilient(&config(""));
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    let attempts = rec.attempts();
    assert_eq!(attempts.len(), 3);
    for a in &attempts[..2] {
        assert!(
            matches!(a, AttemptOutcome::Failed(ErrorKind::ConnectionReset, _)),
            "{a:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_server_times_out_each_attempt_and_is_retried() {
    let server = Server::start(vec![Act::Hang, Act::Hang], body(200, "ok")).await;
    let (client, rec) = resilient(&config(""));
    let started = tokio::time::Instant::now();
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        rec.attempts()[..2],
        [
            AttemptOutcome::TimedOut(2 * S),
            AttemptOutcome::TimedOut(2 * S)
        ]
    );
    // Two 2 s attempts, and the pauses of 1 s and 2 s.
    assert_eq!(started.elapsed(), 7 * S);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_then_reported_as_reqwests_error() {
    let addr = closed_port().await;
    let (client, rec) = resilient(&config(""));
    let err = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let attempts = rec.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(matches!(
        attempts[0],
        AttemptOutcome::Failed(ErrorKind::ConnectionRefused, _)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_unresolvable_name_fails_locally_as_dns_and_is_retried() {
    let (client, rec) = resilient(&config(""));
    let err = client
        .get("http://no-such-host.invalid/")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let attempts = rec.attempts();
    assert_eq!(attempts.len(), 4);
    for a in &attempts {
        assert!(
            matches!(a, AttemptOutcome::Failed(ErrorKind::Dns, _)),
            "{a:?}"
        );
    }
    // Answered here, by the client's resolver, without asking a name server.
    let text = rempart_client::error_chain(&err);
    assert!(text.contains("never resolve (RFC 6761)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn the_seeds_file_lists_which_errors_are_retried() {
    // The seed's own list names two kinds: a reset is then not retried.
    let server = Server::start(vec![Act::Reset], body(200, "ok")).await;
    let (client, rec) = resilient(&config(
        "[retry.policy]\nretryable_status_codes = [429, 500, 502, 503, 504]\n\
         retryable_errors = [\"connection_timeout\", \"dns_resolution\"]\n",
    ));
    assert!(client.get(server.url("/")).send().await.is_err());
    assert_eq!(server.requests(), 1);
    assert_eq!(rec.attempts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_pause_within_max_delay() {
    let busy =
        |after: &str| Act::Answer(429, vec![("retry-after", after.to_owned())], String::new());
    let server = Server::start(vec![busy("3"), busy("120")], body(200, "ok")).await;
    let (client, rec) = resilient(&config(""));
    let started = tokio::time::Instant::now();
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(rec.delays(), [3 * S, 30 * S], "120 s is cut to max_delay");
    assert_eq!(started.elapsed(), 33 * S);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_ends_the_call_at_once() {
    let late = Act::Answer(503, vec![("retry-after", "20".into())], String::new());
    let server = Server::start(vec![], late).await;
    let (client, rec) = resilient(&config("timeout = \"10s\"\n"));
    let started = tokio::time::Instant::now();
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        server.requests(),
        1,
        "a 20 s pause cannot end before the 10 s deadline"
    );
    assert!(rec.delays().is_empty());
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_tells_the_server_its_time_left() {
    let server = Server::start(vec![Act::Hang], body(200, "ok")).await;
    let (client, _) = resilient(&config("timeout = \"2500ms\"\ninitial_delay = \"100ms\"\n"));
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.seen();
    let sent: Vec<&str> = seen
        .iter()
        .map(|s| s.header("x-request-timeout-ms").unwrap())
        .collect();
    // The first attempt has its whole 2 s; the second what the 2.5 s call
    // has left after it and the 100 ms pause.
    assert_eq!(sent, ["2000", "400"]);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_overall_timeout_fails_with_a_timeout() {
    let server = Server::start(vec![], Act::Hang).await;
    let (client, rec) = resilient(&config("timeout = \"5s\"\n"));
    let started = tokio::time::Instant::now();
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let err = err.to_string();
    assert!(err.contains("no answer from"), "{err}");
    // 2 s, pause 1 s, then the 2 s the call has left; no time for another pause.
    assert_eq!(started.elapsed(), 5 * S);
    assert_eq!(
        rec.attempts(),
        [
            AttemptOutcome::TimedOut(2 * S),
            AttemptOutcome::TimedOut(2 * S)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_once_it_may_have_been_processed() {
    let server = Server::start(vec![], status(503)).await;
    let (client, _) = resilient(&config(""));
    let resp = client
        .post(server.url("/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(server.requests(), 1);

    // ... unless the config allows it.
    let (client, _) = resilient(&config("[retry.policy]\nretry_non_idempotent = true\n"));
    client
        .post(server.url("/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(server.requests(), 1 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_host_override_and_a_budget_limit_retries() {
    let server = Server::start(vec![], status(500)).await;
    let (client, _) = resilient(&config(&format!(
        "[retry.hosts.\"{}\"]\nmax_retries = 1\n",
        server.key()
    )));
    client.get(server.url("/")).send().await.unwrap();
    assert_eq!(server.requests(), 2, "the host's own max_retries");

    let other = Server::start(vec![], status(500)).await;
    let (client, _) = resilient(&config("[retry.budget]\npercent = 0\nreserve = 1\n"));
    client.get(other.url("/")).send().await.unwrap();
    client.get(other.url("/")).send().await.unwrap();
    assert_eq!(other.requests(), 2 + 1, "one retry in reserve, none earned");
}

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_is_retried() {
    // A listener that never accepts, its queue filled: the kernel drops further
    // connection attempts, so connecting times out, on loopback.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        fillers.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let (client, rec) = resilient(&config("connect_timeout = \"1s\"\n"));
    let started = tokio::time::Instant::now();
    let err = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let attempts = rec.attempts();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    for a in &attempts {
        assert!(
            matches!(a, AttemptOutcome::Failed(ErrorKind::ConnectTimeout, _)),
            "{a:?}"
        );
    }
    // Four 1 s connects and the pauses of 1, 2 and 4 s.
    assert_eq!(started.elapsed(), 11 * S);
    drop((fillers, listener));
}

#[tokio::test(start_paused = true)]
async fn jitter_true_spreads_each_pause_by_ten_percent() {
    let server = Server::start(vec![], status(503)).await;
    let (client, rec) = resilient(&config(
        "jitter = true\nmax_retries = 6\nmax_delay = \"1h\"\ntimeout = \"10m\"\n\
         [retry.circuit_breaker]\nenabled = false\n",
    ));
    client.get(server.url("/")).send().await.unwrap();
    let delays = rec.delays();
    assert_eq!(delays.len(), 6);
    for (i, d) in delays.iter().enumerate() {
        let base = S * 2u32.pow(i as u32);
        assert!(
            *d >= base.mul_f64(0.9) && *d <= base.mul_f64(1.1),
            "pause {i}: {d:?} is not within ±10 % of {base:?}"
        );
    }
    assert!(
        delays
            .iter()
            .enumerate()
            .any(|(i, d)| *d != S * 2u32.pow(i as u32)),
        "no pause was spread: {delays:?}"
    );
}
