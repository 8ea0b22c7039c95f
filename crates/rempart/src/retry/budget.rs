//! Retry budgets: retries limited to a share of the traffic.
//!
//! Why: with three attempts per request, an outage turns every client request
//! into three, tripling the load on a service that is already failing (a
//! retry storm), and every layer that retries multiplies it again. A budget
//! (tower's `TpsBudget`, Envoy's `retry_budget`, Finagle) lets retries add at
//! most a fixed share to the requests actually made, plus a small reserve so a
//! quiet service can still retry its occasional failure.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::ConfigError;

/// A share of traffic that retries may add, plus a reserve.
///
/// Each first attempt deposits `percent` hundredths of a retry; each retry
/// withdraws one whole retry; the balance never exceeds the reserve, so a
/// long quiet spell cannot bank an unbounded burst of retries. Cheap to share:
/// one atomic word.
///
/// ```
/// use rempart::retry::RetryBudget;
///
/// let budget = RetryBudget::new(20, 2).unwrap(); // 20 % of requests, reserve of 2
/// assert!(budget.withdraw() && budget.withdraw());
/// assert!(!budget.withdraw()); // reserve spent
/// for _ in 0..5 { budget.deposit(); } // 5 requests at 20 %: one retry earned
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// In hundredths of a retry.
    balance: AtomicI64,
    percent: i64,
    cap: i64,
}

impl RetryBudget {
    /// Retries may add `percent` % (0 to 1000) to the requests made, with a
    /// reserve of `reserve` retries that also caps what can be saved up.
    pub fn new(percent: u32, reserve: u32) -> Result<RetryBudget, ConfigError> {
        if percent > 1000 {
            return Err(ConfigError::new(
                super::POLICY,
                "budget percent",
                format!(
                    "{percent} % would let retries be {}x the traffic; use 0 to 1000 (20 is usual)",
                    percent / 100
                ),
            ));
        }
        let cap = i64::from(reserve) * 100;
        Ok(RetryBudget {
            balance: AtomicI64::new(cap),
            percent: i64::from(percent),
            cap,
        })
    }

    /// Records one request (a first attempt).
    pub fn deposit(&self) {
        // Full already: skip the write, so busy callers do not all hit one line.
        if self.balance.load(Ordering::Relaxed) >= self.cap {
            return;
        }
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                (b < self.cap).then(|| (b + self.percent).min(self.cap))
            });
    }

    /// Takes one retry; false if the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                (b >= 100).then_some(b - 100)
            })
            .is_ok()
    }
}
