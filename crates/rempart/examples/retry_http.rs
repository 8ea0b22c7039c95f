//! Retry outside a circuit breaker, judging simulated HTTP answers with
//! seed 003's rules. No network: a fake server answers from a script.
//!
//! `cargo run -p rempart --example retry_http`

use std::sync::Mutex;
use std::time::Duration;

use rempart::circuit_breaker::Outcome;
use rempart::retry::{
    Backoff, Decision, HttpOutcome, Jitter, Retry, RetryPolicy, StopWhenOpen, http_decision,
};
use rempart::{CircuitBreaker, CircuitError};

/// What the breaker learns from an answer: a 4xx is the client's problem,
/// not the server's, so it neither opens nor closes the circuit.
fn health_of(r: &Result<u16, HttpOutcome>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(HttpOutcome::Status { code, .. }) if *code < 500 && *code != 429 => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

/// Answers one scripted outcome per call.
struct FakeServer(Mutex<Vec<HttpOutcome>>);

impl FakeServer {
    async fn get(&self) -> Result<u16, HttpOutcome> {
        let next = self.0.lock().unwrap().remove(0);
        println!("  server: {next:?}");
        match next {
            HttpOutcome::Status { code, .. } if code < 400 => Ok(code),
            other => Err(other),
        }
    }
}

/// Seed 003's HTTP rules applied to the error side.
#[derive(Clone, Copy)]
struct HttpRules;

impl RetryPolicy<u16, HttpOutcome> for HttpRules {
    fn decide(&self, result: Result<&u16, &HttpOutcome>) -> Decision {
        match result {
            Ok(_) => Decision::Accept,
            Err(outcome) => http_decision(outcome),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let breaker = CircuitBreaker::builder()
        .name("catalogue")
        .failure_threshold(3)
        .build()
        .unwrap();
    let retry = Retry::builder()
        .name("catalogue")
        .max_attempts(4)
        .backoff(
            Backoff::exponential(Duration::from_millis(50), 2.0, Duration::from_millis(400))
                .unwrap(),
        )
        .jitter(Jitter::Equal)
        .build()
        .unwrap();
    let policy = StopWhenOpen(HttpRules);

    println!("1. a 503 with Retry-After, a connection reset, then a 200:");
    let server = FakeServer(Mutex::new(vec![
        HttpOutcome::Status {
            code: 503,
            retry_after: Some(Duration::from_millis(100)),
        },
        HttpOutcome::ConnectionReset,
        HttpOutcome::Status {
            code: 200,
            retry_after: None,
        },
    ]));
    let r = retry
        .call_with(policy, || {
            breaker.call_classified(health_of, || server.get())
        })
        .await;
    println!("  -> {r:?}\n");

    println!("2. a 404 is not retried:");
    let server = FakeServer(Mutex::new(vec![HttpOutcome::Status {
        code: 404,
        retry_after: None,
    }]));
    let r = retry
        .call_with(policy, || {
            breaker.call_classified(health_of, || server.get())
        })
        .await;
    println!("  -> {:?}\n", r.map_err(|e| e.attempts()));

    println!("3. a dead server: three failures open the circuit, the retry stops at the refusal:");
    let server = FakeServer(Mutex::new(vec![HttpOutcome::ConnectionRefused; 10]));
    let r = retry
        .call_with(policy, || {
            breaker.call_classified(health_of, || server.get())
        })
        .await;
    match r {
        Err(e) => println!(
            "  -> gave up after {} attempts; circuit {}; open refusal: {}",
            e.attempts(),
            breaker.state(),
            matches!(e.into_inner(), Some(CircuitError::Open))
        ),
        Ok(v) => println!("  -> {v}"),
    }
    println!("\nretry metrics: {:?}", retry.metrics());
}
