//! Counters without contended writes, shared by every policy's metrics.
//!
//! Every call bumps a counter, so a counter shared by all threads would bounce
//! its cache line between cores on every call. Instead each thread owns a row
//! of `N` counters (`thread_local::ThreadLocal`), written only by that thread
//! with a plain load and store, and [`PerThreadCounters::sum`] adds the rows up.
//! A row outlives its thread and is handed, with its counts, to the next
//! thread that takes that thread's id, so no count is ever lost.

use std::sync::atomic::{AtomicU64, Ordering};
use thread_local::ThreadLocal;

#[derive(Debug)]
#[repr(align(128))] // a row per cache-line pair, so neighbouring rows never share a line
struct Row<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Row<N> {
    fn default() -> Self {
        Row(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` monotonically growing counters, one row per thread.
#[derive(Debug, Default)]
pub(crate) struct PerThreadCounters<const N: usize> {
    rows: ThreadLocal<Row<N>>,
}

impl<const N: usize> PerThreadCounters<N> {
    /// Adds one to counter `i` (which must be below `N`).
    #[inline]
    pub(crate) fn bump(&self, i: usize) {
        self.add(i, 1);
    }

    /// Adds `n` to counter `i` (which must be below `N`).
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        let row = match self.rows.get() {
            Some(row) => row,
            None => self.first_row(),
        };
        let c = &row.0[i];
        // Only the owning thread writes its row, so load + store is exact and
        // needs no locked instruction.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// The calling thread's first count: make its row (once per thread).
    #[cold]
    #[inline(never)]
    fn first_row(&self) -> &Row<N> {
        self.rows.get_or_default()
    }

    /// Every counter, summed over the threads.
    pub(crate) fn sum(&self) -> [u64; N] {
        let mut total = [0u64; N];
        for row in self.rows.iter() {
            for (t, c) in total.iter_mut().zip(row.0.iter()) {
                *t = t.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_every_thread_add_up_exactly() {
        let c = Arc::new(PerThreadCounters::<2>::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.bump(0);
                    }
                    c.add(1, 7);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.sum(), [40_000, 28]);
    }
}
