//! Sliding windows of call outcomes, for failure-rate and slow-call-rate rules.
//! Pure: time comes in as an argument.

use super::config::SlidingWindow;
use crate::clock::{Instant, duration_to_nanos};

/// Calls, failures and slow calls in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failed);
        self.slow += u64::from(slow);
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count {
        // Each entry: bit 0 failed, bit 1 slow, bit 2 occupied.
        ring: Box<[u8]>,
        next: usize,
        totals: Totals,
    },
    Time {
        bucket_nanos: u64,
        // (absolute bucket number, totals of that bucket)
        buckets: Box<[(u64, Totals)]>,
    },
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count { calls } => Window::Count {
                ring: vec![0; calls as usize].into_boxed_slice(),
                next: 0,
                totals: Totals::default(),
            },
            SlidingWindow::Time { period, buckets } => Window::Time {
                bucket_nanos: (duration_to_nanos(period) / u64::from(buckets)).max(1),
                // u64::MAX marks an empty bucket: no absolute bucket number reaches it.
                buckets: vec![(u64::MAX, Totals::default()); buckets as usize].into_boxed_slice(),
            },
        }
    }

    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        match self {
            Window::Count { ring, next, totals } => {
                let old = ring[*next];
                if old & 4 != 0 {
                    totals.calls -= 1;
                    totals.failures -= u64::from(old & 1);
                    totals.slow -= u64::from((old >> 1) & 1);
                }
                ring[*next] = 4 | u8::from(failed) | (u8::from(slow) << 1);
                *next = (*next + 1) % ring.len();
                totals.add(failed, slow);
            }
            Window::Time {
                bucket_nanos,
                buckets,
            } => {
                let n = now.as_nanos() / *bucket_nanos;
                let len = buckets.len() as u64;
                let slot = &mut buckets[(n % len) as usize];
                if slot.0 != n {
                    *slot = (n, Totals::default());
                }
                slot.1.add(failed, slow);
            }
        }
    }

    pub(crate) fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count { totals, .. } => *totals,
            Window::Time {
                bucket_nanos,
                buckets,
            } => {
                let n = now.as_nanos() / *bucket_nanos;
                let len = buckets.len() as u64;
                let mut t = Totals::default();
                for (b, bt) in buckets.iter() {
                    // Buckets from the last `len` slices, the current one included.
                    if *b != u64::MAX && *b <= n && n - *b < len {
                        t.calls += bt.calls;
                        t.failures += bt.failures;
                        t.slow += bt.slow;
                    }
                }
                t
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count { ring, next, totals } => {
                ring.fill(0);
                *next = 0;
                *totals = Totals::default();
            }
            Window::Time { buckets, .. } => buckets.fill((u64::MAX, Totals::default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let mut w = Window::new(SlidingWindow::Count { calls: 3 });
        let t = Instant::ZERO;
        w.record(t, true, false);
        w.record(t, false, true);
        w.record(t, false, false);
        assert_eq!(
            w.totals(t),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(t, false, false); // pushes out the failure
        assert_eq!(
            w.totals(t),
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
    }

    #[test]
    fn time_window_drops_buckets_older_than_the_period() {
        let mut w = Window::new(SlidingWindow::Time {
            period: Duration::from_secs(10),
            buckets: 10,
        });
        let at = |s: u64| Instant::from_nanos(s * 1_000_000_000);
        w.record(at(0), true, false);
        w.record(at(5), false, false);
        assert_eq!(w.totals(at(9)).calls, 2);
        // at 10 s the bucket [0 s, 1 s) has left the window
        assert_eq!(
            w.totals(at(10)),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.totals(at(15)).calls, 0);
        // a bucket reused after a full turn starts from zero
        w.record(at(20), true, false);
        assert_eq!(
            w.totals(at(20)),
            Totals {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
    }
}
