//! Graceful shutdown (seed 002): on SIGTERM/SIGINT or a call to
//! [`Shutdown::trigger`], stop accepting work, let in-flight work drain
//! within a deadline (30 s by default), then run shutdown hooks in the order
//! they were declared (seed 002: server, broker, cache), each within its own
//! timeout, and report what failed or timed out.
//!
//! ```
//! use std::time::Duration;
//! use rempart::shutdown::{HookOutcome, Shutdown};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let shutdown = Shutdown::new()
//!     .hook("broker", Duration::from_secs(5), || async { Ok(()) })
//!     .hook("cache", Duration::from_secs(5), || async { Err("flush failed".to_owned()) });
//! let request = shutdown.in_flight(); // held while a request runs
//! let s = shutdown.clone();
//! tokio::spawn(async move {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     drop(request);
//! });
//! let report = shutdown.run().await;
//! assert!(report.drained);
//! assert_eq!(report.hooks[1].outcome, HookOutcome::Failed("flush failed".into()));
//! assert!(s.is_triggered());
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// The default time in-flight work has to finish (seed 002).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

type HookFn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send>;

struct Hook {
    name: String,
    timeout: Duration,
    run: HookFn,
}

struct Shared {
    triggered: watch::Sender<bool>,
    in_flight: AtomicUsize,
    drained: Notify,
    hooks: Mutex<Vec<Hook>>,
    drain_deadline: Duration,
}

/// A shutdown handle. Cheap to clone; every clone sees the same trigger,
/// in-flight count and hooks.
#[derive(Clone)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("in_flight", &self.in_flight_count())
            .field("drain_deadline", &self.shared.drain_deadline)
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Held while one unit of work runs; dropping it tells the shutdown the
/// work is done.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.drained.notify_waiters();
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

/// How one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// It returned `Ok`.
    Done,
    /// It returned this error.
    Failed(String),
    /// It was still running at its timeout, and was dropped.
    TimedOut(Duration),
}

/// One hook's name and outcome, in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    /// The hook's name.
    pub name: String,
    /// How it ended.
    pub outcome: HookOutcome,
}

/// What a shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// `true` if all in-flight work finished before the deadline.
    pub drained: bool,
    /// Work still in flight when the hooks started (0 if drained).
    pub abandoned: usize,
    /// Every hook, in the order declared.
    pub hooks: Vec<HookReport>,
}

impl ShutdownReport {
    /// `true` if the work drained and every hook succeeded.
    pub fn is_clean(&self) -> bool {
        self.drained && self.hooks.iter().all(|h| h.outcome == HookOutcome::Done)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.drained {
            write!(f, "in-flight work drained")?;
        } else {
            write!(
                f,
                "drain deadline exceeded with {} call(s) in flight",
                self.abandoned
            )?;
        }
        for h in &self.hooks {
            match &h.outcome {
                HookOutcome::Done => write!(f, "; {}: done", h.name)?,
                HookOutcome::Failed(e) => write!(f, "; {}: failed: {e}", h.name)?,
                HookOutcome::TimedOut(d) => write!(f, "; {}: timed out after {d:?}", h.name)?,
            }
        }
        Ok(())
    }
}

impl Shutdown {
    /// A handle with the 30 s drain deadline and no hooks.
    pub fn new() -> Self {
        Self::with_drain_deadline(DEFAULT_DRAIN_DEADLINE)
    }

    /// A handle giving in-flight work `deadline` to finish.
    pub fn with_drain_deadline(deadline: Duration) -> Self {
        Shutdown {
            shared: Arc::new(Shared {
                triggered: watch::channel(false).0,
                in_flight: AtomicUsize::new(0),
                drained: Notify::new(),
                hooks: Mutex::new(Vec::new()),
                drain_deadline: deadline,
            }),
        }
    }

    /// Adds a hook, run after the drain, after every hook added before it,
    /// and abandoned if it takes longer than `timeout`.
    pub fn hook<F, Fut>(self, name: impl Into<String>, timeout: Duration, run: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let hook = Hook {
            name: name.into(),
            timeout,
            run: Box::new(move || Box::pin(run())),
        };
        match self.shared.hooks.lock() {
            Ok(mut hooks) => hooks.push(hook),
            Err(p) => p.into_inner().push(hook),
        }
        self
    }

    /// Starts the shutdown: [`Shutdown::triggered`] resolves everywhere.
    pub fn trigger(&self) {
        self.shared.triggered.send_replace(true);
    }

    /// `true` once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.shared.triggered.borrow()
    }

    /// Resolves once the shutdown is triggered: give it to the server as its
    /// "stop accepting" signal (e.g. hyper's or axum's graceful shutdown).
    pub async fn triggered(&self) {
        let mut rx = self.shared.triggered.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|t| *t).await;
    }

    /// Waits for SIGTERM or SIGINT (Ctrl-C), or a programmatic trigger,
    /// whichever comes first, and triggers the shutdown.
    pub async fn wait_for_signal(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown initiated"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown initiated"),
                _ = self.triggered() => {}
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; tracing::info!(signal = "ctrl-c", "shutdown initiated") }
                _ = self.triggered() => {}
            }
        }
        self.trigger();
        Ok(())
    }

    /// Counts one unit of work as in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            shared: self.shared.clone(),
        }
    }

    /// Work in flight now.
    pub fn in_flight_count(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    async fn drained(&self) {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            // Register before reading the count, so a drop in between still wakes us.
            notified.as_mut().enable();
            if self.in_flight_count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Triggers (if not yet), waits for in-flight work up to the drain
    /// deadline, then runs the hooks in declared order. Hooks run once: a
    /// second call reports only the drain.
    pub async fn run(&self) -> ShutdownReport {
        self.trigger();
        let drained = tokio::time::timeout(self.shared.drain_deadline, self.drained())
            .await
            .is_ok();
        let abandoned = self.in_flight_count();
        if !drained {
            tracing::error!(abandoned, "drain deadline exceeded, shutting down anyway");
        }
        let hooks = match self.shared.hooks.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        let mut reports = Vec::with_capacity(hooks.len());
        for hook in hooks {
            let outcome = match tokio::time::timeout(hook.timeout, (hook.run)()).await {
                Ok(Ok(())) => HookOutcome::Done,
                Ok(Err(e)) => HookOutcome::Failed(e),
                Err(_) => HookOutcome::TimedOut(hook.timeout),
            };
            if outcome != HookOutcome::Done {
                tracing::error!(hook = %hook.name, ?outcome, "shutdown hook did not finish cleanly");
            }
            reports.push(HookReport {
                name: hook.name,
                outcome,
            });
        }
        ShutdownReport {
            drained,
            abandoned: if drained { 0 } else { abandoned },
            hooks: reports,
        }
    }
}
