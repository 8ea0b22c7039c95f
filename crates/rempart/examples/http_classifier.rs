//! A breaker in front of an HTTP-like service, as a tower layer, with a
//! classifier: 5xx opens the circuit, 4xx says nothing about the upstream's
//! health, and a refused request never reaches the service.
//!
//! Run it with `cargo run -p rempart --example http_classifier`.

use rempart::circuit_breaker::{CircuitBreakerLayer, Outcome};
use rempart::{CircuitBreaker, CircuitError};
use std::time::Duration;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = CircuitBreaker::builder()
        .name("orders")
        .failure_threshold(3)
        .open_timeout(Duration::from_secs(5))
        .build()?;

    let by_status = |r: &Result<u16, std::io::Error>| match r {
        Ok(s) if *s >= 500 => Outcome::Failure,
        Ok(s) if *s >= 400 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let mut orders = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(by_status))
        .service_fn(|status: u16| async move { Ok::<u16, std::io::Error>(status) });

    // The upstream answers these statuses, in order.
    for status in [200, 404, 404, 503, 502, 404, 504, 200, 200] {
        let answer = orders.ready().await?.call(status).await;
        let shown = match answer {
            Ok(s) => format!("upstream answered {s}"),
            Err(CircuitError::Open) => "refused: circuit open".to_string(),
            Err(e) => format!("error: {e}"),
        };
        println!("{shown:<28} circuit {}", breaker.state());
    }
    let m = breaker.metrics();
    println!(
        "calls {} = {} ok + {} failed + {} refused + {} ignored",
        m.total_calls, m.successful_calls, m.failed_calls, m.rejected_calls, m.ignored_calls
    );
    Ok(())
}
