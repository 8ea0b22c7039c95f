//! The breaker against a plain sequential model of the rules: the same random
//! sequence of calls, held permits, outcomes, clock advances, trips and resets
//! goes to both, and their states and counters must agree after every step.

use proptest::prelude::*;
use rempart::circuit_breaker::{CircuitBreakerBuilder, Permit};
use rempart::clock::ManualClock;
use rempart::*;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Success,
    Failure,
    Drop,
}

#[derive(Debug, Clone)]
enum Op {
    /// Acquire and record at once.
    Call(Fate),
    /// Acquire and keep the permit for later.
    Hold,
    /// Finish the held permit at this index (modulo the number held).
    Finish(usize, Fate),
    Advance(u64),
    Trip,
    Reset,
    State,
}

fn op() -> impl Strategy<Value = Op> {
    let fate = prop_oneof![Just(Fate::Success), Just(Fate::Failure), Just(Fate::Drop)];
    prop_oneof![
        4 => fate.clone().prop_map(Op::Call),
        2 => Just(Op::Hold),
        2 => (any::<usize>(), fate).prop_map(|(i, f)| Op::Finish(i, f)),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Trip),
        1 => Just(Op::Reset),
        1 => Just(Op::State),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Closed,
    Trial,
}

#[derive(Debug)]
struct Model {
    cfg: CircuitBreakerConfig,
    now: u64,
    state: CircuitState,
    generation: u64,
    fails: u32,
    open_until: u64,
    in_flight: u32,
    successes: u32,
    ok: u64,
    failed: u64,
    rejected: u64,
    ignored: u64,
    transitions: u64,
}

impl Model {
    fn enter(&mut self, to: CircuitState) {
        if self.state != to {
            self.transitions += 1;
        }
        self.state = to;
        self.generation += 1;
        self.fails = 0;
        self.in_flight = 0;
        self.successes = 0;
    }
    fn trip(&mut self) {
        self.enter(CircuitState::Open);
        self.open_until = self.now + self.cfg.open_timeout.as_millis() as u64;
    }
    fn refresh(&mut self) {
        if self.state == CircuitState::Open && self.now >= self.open_until {
            self.enter(CircuitState::HalfOpen);
        }
    }
    fn acquire(&mut self) -> Option<(u64, Kind)> {
        self.refresh();
        match self.state {
            CircuitState::Closed => Some((self.generation, Kind::Closed)),
            CircuitState::HalfOpen if self.in_flight < self.cfg.half_open_max_calls => {
                self.in_flight += 1;
                Some((self.generation, Kind::Trial))
            }
            _ => {
                self.rejected += 1;
                None
            }
        }
    }
    fn finish(&mut self, (generation, kind): (u64, Kind), fate: Fate) {
        match fate {
            Fate::Success => self.ok += 1,
            Fate::Failure => self.failed += 1,
            Fate::Drop => self.ignored += 1,
        }
        if generation != self.generation {
            return;
        }
        match (kind, fate) {
            (Kind::Closed, Fate::Success) => self.fails = 0,
            (Kind::Closed, Fate::Failure) => {
                self.fails += 1;
                if self.fails >= self.cfg.failure_threshold {
                    self.trip();
                }
            }
            (Kind::Closed, Fate::Drop) => {}
            (Kind::Trial, _) => {
                self.in_flight -= 1;
                match fate {
                    Fate::Success => {
                        self.successes += 1;
                        if self.successes >= self.cfg.success_threshold {
                            self.enter(CircuitState::Closed);
                        }
                    }
                    Fate::Failure => self.trip(),
                    Fate::Drop => {}
                }
            }
        }
    }
}

fn finish(p: Permit<'_>, fate: Fate) {
    match fate {
        Fate::Success => p.success(),
        Fate::Failure => p.failure(),
        Fate::Drop => drop(p),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_agrees_with_the_sequential_model(
        failure_threshold in 1u32..5,
        success_threshold in 1u32..4,
        half_open_max_calls in 1u32..4,
        open_ms in 1u64..50,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let cfg = CircuitBreakerConfig {
            failure_threshold,
            success_threshold,
            open_timeout: Duration::from_millis(open_ms),
            half_open_max_calls,
        };
        let clock = ManualClock::new();
        let cb = CircuitBreakerBuilder::from_config(cfg.clone()).clock(clock.clone()).build().unwrap();
        let mut model = Model {
            cfg, now: 0, state: CircuitState::Closed, generation: 0, fails: 0, open_until: 0,
            in_flight: 0, successes: 0, ok: 0, failed: 0, rejected: 0, ignored: 0, transitions: 0,
        };
        let mut held: Vec<(Permit<'_>, (u64, Kind))> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call(fate) => {
                    let real = cb.try_acquire();
                    let modelled = model.acquire();
                    prop_assert_eq!(real.is_ok(), modelled.is_some(), "step {}: admission differs", step);
                    if let (Ok(p), Some(t)) = (real, modelled) {
                        finish(p, fate);
                        model.finish(t, fate);
                    }
                }
                Op::Hold => {
                    let real = cb.try_acquire();
                    let modelled = model.acquire();
                    prop_assert_eq!(real.is_ok(), modelled.is_some(), "step {}: admission differs", step);
                    if let (Ok(p), Some(t)) = (real, modelled) {
                        held.push((p, t));
                    }
                }
                Op::Finish(i, fate) => {
                    if !held.is_empty() {
                        let (p, t) = held.swap_remove(i % held.len());
                        finish(p, fate);
                        model.finish(t, fate);
                    }
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms;
                }
                Op::Trip => { cb.trip(); model.trip(); }
                Op::Reset => { cb.reset(); model.enter(CircuitState::Closed); }
                Op::State => {}
            }
            model.refresh();
            prop_assert_eq!(cb.state(), model.state, "step {}: state differs", step);
            let m = cb.metrics();
            prop_assert_eq!(
                (m.successful_calls, m.failed_calls, m.rejected_calls, m.ignored_calls, m.state_transitions),
                (model.ok, model.failed, model.rejected, model.ignored, model.transitions),
                "step {}: counters differ", step
            );
        }
    }
}
