//! `rempart demo --breaker`: one circuit breaker in front of a simulated
//! dependency that is healthy, then fails, then recovers; every call's outcome
//! and every state change printed as it happens.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rempart::circuit_breaker::{CircuitListener, StateChange, TransitionReason};
use rempart::clock::{Clock, TokioClock};
use rempart::{CircuitBreaker, CircuitError, CircuitState};

/// The dependency's health over the run: healthy for the first `calls / 4`
/// calls, failing until `calls * 3 / 5`, then healthy again.
pub(crate) fn dependency_fails(call: u32, calls: u32) -> bool {
    (calls / 4..calls * 3 / 5).contains(&call)
}

/// Writes state changes to the shared output the moment the breaker makes them.
#[derive(Debug)]
struct Printer {
    out: Arc<Mutex<Vec<String>>>,
    clock: TokioClock,
}

impl CircuitListener for Printer {
    fn on_state_change(&self, c: &StateChange) {
        let why = match c.reason {
            TransitionReason::ConsecutiveFailures(n) => format!("{n} failures in a row"),
            TransitionReason::OpenTimeoutElapsed => "open period over: trial calls allowed".into(),
            TransitionReason::TrialFailed => "a trial call failed".into(),
            TransitionReason::TrialsSucceeded => "trial calls succeeded".into(),
            TransitionReason::Manual => "manual".into(),
            other => format!("{other:?}"),
        };
        let t = self.clock.now().as_nanos() as f64 / 1e9;
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{t:6.2}s  ==== {} → {}  ({why})", c.from, c.to));
    }
}

/// Runs `calls` calls `interval` apart; returns the state changes seen, in order.
pub(crate) async fn run(
    calls: u32,
    interval: Duration,
    out: &mut dyn Write,
) -> std::io::Result<Vec<(CircuitState, CircuitState)>> {
    let clock = TokioClock::new();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let transitions = Arc::new(Mutex::new(Vec::new()));
    #[derive(Debug)]
    struct Recorder(Arc<Mutex<Vec<(CircuitState, CircuitState)>>>);
    impl CircuitListener for Recorder {
        fn on_state_change(&self, c: &StateChange) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((c.from, c.to));
        }
    }
    // Short settings so the whole story fits in a few seconds.
    let open_for = interval * 8;
    let cb = CircuitBreaker::builder()
        .name("flaky-dependency")
        .failure_threshold(3)
        .success_threshold(2)
        .open_timeout(open_for)
        .half_open_max_calls(1)
        .clock(clock)
        .listener(Printer {
            out: Arc::clone(&lines),
            clock,
        })
        .listener(Recorder(Arc::clone(&transitions)))
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    writeln!(
        out,
        "rempart demo --breaker: {calls} calls, one every {interval:?}; the dependency fails from call {} to call {}.",
        calls / 4 + 1,
        calls * 3 / 5
    )?;
    writeln!(
        out,
        "breaker: opens after 3 failures in a row, stays open {open_for:?}, closes after 2 good trial calls.\n"
    )?;
    let start = tokio::time::Instant::now();
    for i in 0..calls {
        let fails = dependency_fails(i, calls);
        // Poll `state()` first: Open turns HalfOpen when its period ends, even with no call.
        let _ = cb.state();
        let result = cb
            .call(|| async move {
                if fails {
                    Err("connection refused")
                } else {
                    Ok("200 OK")
                }
            })
            .await;
        for line in lines.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            writeln!(out, "{line}")?;
        }
        let outcome = match result {
            Ok(v) => format!("ok ({v})"),
            Err(CircuitError::OperationFailed(e)) => format!("failed ({e})"),
            Err(CircuitError::Open) => "rejected: circuit open, dependency not called".into(),
            Err(CircuitError::HalfOpenRejected) => "rejected: half-open, trial slot busy".into(),
        };
        let t = start.elapsed().as_secs_f64();
        writeln!(
            out,
            "{t:6.2}s  call {:>3}  dependency {:<7}  {:<52} circuit {}",
            i + 1,
            if fails { "failing" } else { "healthy" },
            outcome,
            cb.state()
        )?;
        out.flush()?;
        tokio::time::sleep(interval).await;
    }
    let m = cb.metrics();
    writeln!(
        out,
        "\n{} calls: {} ok, {} failed, {} rejected without calling the dependency; {} state changes.",
        m.total_calls, m.successful_calls, m.failed_calls, m.rejected_calls, m.state_transitions
    )?;
    let seen = transitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_demo_goes_closed_open_half_open_closed_and_never_calls_while_open() {
        let mut out = Vec::new();
        let seen = run(60, Duration::from_millis(100), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        use CircuitState::*;
        let first_open = seen.iter().position(|t| *t == (Closed, Open)).expect(&text);
        let half = seen[first_open..]
            .iter()
            .position(|t| *t == (Open, HalfOpen))
            .expect(&text);
        assert!(
            seen[first_open + half..].contains(&(HalfOpen, Closed)),
            "{seen:?}\n{text}"
        );
        assert_eq!(
            seen.last(),
            Some(&(HalfOpen, Closed)),
            "it ends closed: {seen:?}"
        );
        // Every rejected call says the dependency was not called, and there were some.
        assert!(
            text.contains("rejected: circuit open, dependency not called"),
            "{text}"
        );
        assert!(
            text.contains("==== Closed → Open  (3 failures in a row)"),
            "{text}"
        );
    }

    #[test]
    fn the_dependency_fails_in_the_middle_of_the_run() {
        let failing: Vec<u32> = (0..20).filter(|i| dependency_fails(*i, 20)).collect();
        assert_eq!(failing, (5..12).collect::<Vec<_>>());
    }
}
