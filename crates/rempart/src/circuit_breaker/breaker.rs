//! The breaker's fast path, and the glue to `state.rs`.
//!
//! Admission while Closed reads one shared word: no lock, no allocation, no
//! shared write. With the consecutive-failure rule alone, outcomes are
//! lock-free too: a success writes only the calling thread's own counters, a
//! failure is a compare-and-swap on the word. The lock is taken, to ask
//! [`Core`](super::state::Core) and publish the new state in the word, by the
//! failure that reaches the threshold, by *every* Closed outcome when a rate
//! rule keeps a sliding window, and by Open expiring, HalfOpen trials and
//! operators' commands.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::CircuitState;
use super::config::{CircuitBreakerBuilder, CircuitBreakerConfig, Settings};
use super::error::Rejected;
use super::future::Call;
use super::listener::{CallEvent, CallOutcome, CircuitListener, StateChange, TransitionReason};
use super::metrics::{CircuitMetrics, Count, Counters};
use super::service::ErrorsAreFailures;
use super::state::{Change, CircuitMode, Core, Trial};
use crate::clock::{Clock, Instant, MonotonicClock};
use crate::rng::{Rng, SplitMix64};

// The shared word: | generation: 32 | unused: 8 | consecutive failures: 16 | unused: 4 | mode: 2 | state: 2 |
const STATE_MASK: u64 = 0b11;
const MODE_SHIFT: u32 = 2;
const MODE_MASK: u64 = 0b11 << MODE_SHIFT;
/// Zero exactly when the circuit is Closed under automatic control: the fast path.
const SLOW_PATH_MASK: u64 = STATE_MASK | MODE_MASK;
const FAILS_SHIFT: u32 = 8;
const FAILS_MAX: u64 = super::MAX_FAILURE_THRESHOLD as u64;
const FAILS_MASK: u64 = FAILS_MAX << FAILS_SHIFT;
const GEN_SHIFT: u32 = 32;

fn fails(w: u64) -> u64 {
    (w & FAILS_MASK) >> FAILS_SHIFT
}
fn generation(w: u64) -> u32 {
    (w >> GEN_SHIFT) as u32
}
fn state_of(w: u64) -> CircuitState {
    match w & STATE_MASK {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        _ => CircuitState::HalfOpen,
    }
}
fn mode_of(w: u64) -> CircuitMode {
    match (w & MODE_MASK) >> MODE_SHIFT {
        0 => CircuitMode::Automatic,
        1 => CircuitMode::ForcedOpen,
        2 => CircuitMode::Disabled,
        _ => CircuitMode::MetricsOnly,
    }
}
fn word_of(core: &Core) -> u64 {
    let state = match core.state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    };
    let mode = match core.mode {
        CircuitMode::Automatic => 0,
        CircuitMode::ForcedOpen => 1,
        CircuitMode::Disabled => 2,
        CircuitMode::MetricsOnly => 3,
    };
    (u64::from(core.generation) << GEN_SHIFT) | (mode << MODE_SHIFT) | state
}

/// How a classifier judges one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Counts for nothing: neither closes nor opens the circuit (a 404, a
    /// validation error, a cancelled request).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Admitted while Closed: feeds the failure run and the window.
    Closed = 0,
    /// A HalfOpen trial: holds a slot until recorded or dropped.
    Trial = 1,
    /// MetricsOnly: counted, decides nothing.
    Counted = 2,
    /// Disabled: not even counted.
    Uncounted = 3,
}

/// A permit's admission packed in one word, `generation << 32 | kind`, or
/// `DONE` once its outcome is recorded. One plain word because the permit
/// lives in the caller's future across the await and is copied in and out of
/// it: mixed-width fields there cost store-forwarding stalls on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket(u64);

impl Ticket {
    const DONE: Ticket = Ticket(u64::MAX);

    #[inline]
    fn new(generation: u32, kind: Kind) -> Self {
        Ticket((u64::from(generation) << 32) | kind as u64)
    }
    #[inline]
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    #[inline]
    fn kind(self) -> Kind {
        match self.0 & 0b11 {
            0 => Kind::Closed,
            1 => Kind::Trial,
            2 => Kind::Counted,
            _ => Kind::Uncounted,
        }
    }
}

struct Shared {
    // Read on every call; written only on failures and state changes.
    word: AtomicU64,
    open_until: AtomicU64,
    /// No timing, no window, no listener: a Closed success only counts itself
    /// and ends a failure run if there is one.
    plain: bool,
    settings: Settings,
    clock: Arc<dyn Clock>,
    listeners: Box<[Arc<dyn CircuitListener>]>,
    counters: Counters,
    core: Mutex<Core>,
}

/// A circuit breaker: stops calling a dependency that keeps failing, and tries
/// it again, carefully, after a pause.
///
/// Cheap to clone: clones share one circuit. See the [module docs](crate::circuit_breaker)
/// for the rules, and [`CircuitBreaker::builder`] for the options.
///
/// ```
/// use rempart::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let cb = CircuitBreaker::new(CircuitBreakerConfig { failure_threshold: 2, ..Default::default() });
/// for _ in 0..2 {
///     let r = cb.call(|| async { Err::<(), _>("connection refused") }).await;
///     assert!(matches!(r, Err(CircuitError::OperationFailed("connection refused"))));
/// }
/// assert_eq!(cb.state(), CircuitState::Open);
/// // While open, the operation does not even run.
/// let r = cb.call(|| async { unreachable!("not called") as Result<(), &str> }).await;
/// assert!(matches!(r, Err(CircuitError::Open)));
/// # });
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.settings.name)
            .field("state", &self.state())
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A breaker with the seed's four settings, on the system clock.
    ///
    /// Zero thresholds and a zero `half_open_max_calls` are taken as 1, and a
    /// `failure_threshold` above [`MAX_FAILURE_THRESHOLD`](super::MAX_FAILURE_THRESHOLD)
    /// (65,535) as that maximum: this constructor, the seed's contract, never
    /// fails. [`CircuitBreaker::builder`] refuses such settings instead.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let settings = Settings {
            name: Arc::from("default"),
            failure_threshold: Some(
                config
                    .failure_threshold
                    .clamp(1, super::MAX_FAILURE_THRESHOLD),
            ),
            success_threshold: config.success_threshold.max(1),
            open_timeout: config.open_timeout,
            half_open_max_calls: config.half_open_max_calls.max(1),
            window: None,
            failure_rate_threshold: None,
            slow_call_duration: None,
            slow_call_rate_threshold: None,
            minimum_calls: 1,
            open_backoff: None,
        };
        Self::from_parts(
            settings,
            Arc::new(MonotonicClock::new()),
            Box::new(SplitMix64::from_entropy()),
            Vec::new(),
            CircuitState::Closed,
        )
    }

    /// A builder for every option beyond the seed's four, starting from the defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    pub(crate) fn from_parts(
        settings: Settings,
        clock: Arc<dyn Clock>,
        rng: Box<dyn Rng>,
        listeners: Vec<Arc<dyn CircuitListener>>,
        initial: CircuitState,
    ) -> Self {
        let mut core = Core::new(&settings, rng);
        let now = clock.now();
        match initial {
            CircuitState::Closed => {}
            CircuitState::Open => {
                core.trip(&settings, now, TransitionReason::Manual);
            }
            CircuitState::HalfOpen => {
                core.trip(&settings, now, TransitionReason::Manual);
                core.open_until = now;
                core.refresh(now);
            }
        }
        let shared = Shared {
            word: AtomicU64::new(word_of(&core)),
            open_until: AtomicU64::new(core.open_until.as_nanos()),
            plain: settings.slow_call_duration.is_none()
                && settings.window.is_none()
                && listeners.is_empty(),
            settings,
            clock,
            listeners: listeners.into_boxed_slice(),
            counters: Counters::default(),
            core: Mutex::new(core),
        };
        CircuitBreaker {
            shared: Arc::new(shared),
        }
    }

    /// The name given to the builder (`"default"` otherwise).
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// Whether `self` and `other` are clones of one breaker (sharing state),
    /// rather than two breakers that happen to have the same settings.
    ///
    /// ```
    /// use rempart::CircuitBreaker;
    ///
    /// let a = CircuitBreaker::builder().build().unwrap();
    /// assert!(a.ptr_eq(&a.clone()));
    /// assert!(!a.ptr_eq(&CircuitBreaker::builder().build().unwrap()));
    /// ```
    pub fn ptr_eq(&self, other: &CircuitBreaker) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Runs `operation` if the circuit lets it, and records its result: `Ok` is a
    /// success, `Err` a failure. Refusals are [`CircuitError::Open`](crate::circuit_breaker::CircuitError::Open) and
    /// [`CircuitError::HalfOpenRejected`](crate::circuit_breaker::CircuitError::HalfOpenRejected); the operation's own error comes back as
    /// [`CircuitError::OperationFailed`](crate::circuit_breaker::CircuitError::OperationFailed).
    ///
    /// Dropping the returned future before it finishes records nothing and frees
    /// any HalfOpen slot it held.
    #[inline]
    pub fn call<F, Fut, T, E>(&self, operation: F) -> Call<'_, ErrorsAreFailures, F, Fut>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Call::new(self, ErrorsAreFailures, operation)
    }

    /// Like [`call`](Self::call), with `classify` deciding what counts: a business
    /// error or a 4xx need not open the circuit, and a successful value (a 503
    /// response) may count as a failure.
    ///
    /// ```
    /// use rempart::{CircuitBreaker, CircuitState};
    /// use rempart::circuit_breaker::Outcome;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cb = CircuitBreaker::builder().failure_threshold(1).build().unwrap();
    /// let by_status = |r: &Result<u16, std::io::Error>| match r {
    ///     Ok(s) if *s >= 500 => Outcome::Failure,
    ///     Ok(s) if *s >= 400 => Outcome::Ignored,
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure,
    /// };
    /// let _ = cb.call_classified(by_status, || async { Ok(404) }).await;
    /// assert_eq!(cb.state(), CircuitState::Closed); // a 404 says nothing about health
    /// let _ = cb.call_classified(by_status, || async { Ok(503) }).await;
    /// assert_eq!(cb.state(), CircuitState::Open);
    /// # });
    /// ```
    #[inline]
    pub fn call_classified<C, F, Fut, T, E>(&self, classify: C, operation: F) -> Call<'_, C, F, Fut>
    where
        C: FnOnce(&Result<T, E>) -> Outcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Call::new(self, classify, operation)
    }

    /// Asks to make one call, for callers that cannot hand over a closure (a proxy).
    /// Record the result on the permit; a permit dropped unrecorded counts as
    /// ignored (cancelled) and frees its HalfOpen slot.
    ///
    /// ```
    /// use rempart::CircuitBreaker;
    ///
    /// let cb = CircuitBreaker::builder().build().unwrap();
    /// match cb.try_acquire() {
    ///     Ok(permit) => permit.success(),
    ///     Err(rejected) => println!("not now: {rejected}"),
    /// }
    /// assert_eq!(cb.metrics().successful_calls, 1);
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let (ticket, started) = self.shared.acquire()?;
        Ok(Permit {
            shared: &self.shared,
            ticket,
            started,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a handle to
    /// the breaker, for futures that must be `'static`.
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let (ticket, started) = self.shared.acquire()?;
        Ok(OwnedPermit {
            shared: Arc::clone(&self.shared),
            ticket,
            started,
        })
    }

    /// The current state. An Open circuit whose open period is over reports
    /// HalfOpen (and becomes HalfOpen), without waiting for a call.
    pub fn state(&self) -> CircuitState {
        let w = self.shared.word.load(Ordering::Acquire);
        if w & SLOW_PATH_MASK == 0 {
            return CircuitState::Closed;
        }
        let mut core = self.shared.lock();
        let now = self.shared.clock.now();
        let change = core.refresh(now);
        let state = core.reported();
        self.shared.apply(core, change, now);
        state
    }

    /// Whether a call would be let through now (claims nothing).
    pub fn can_execute(&self) -> bool {
        let w = self.shared.word.load(Ordering::Acquire);
        if w & SLOW_PATH_MASK == 0 {
            return true;
        }
        let mut core = self.shared.lock();
        let now = self.shared.clock.now();
        let change = core.refresh(now);
        let ok = core.can_execute(&self.shared.settings);
        self.shared.apply(core, change, now);
        ok
    }

    /// Closes the circuit, clears every count, and returns to automatic control.
    pub fn reset(&self) {
        let mut core = self.shared.lock();
        let change = core.close(TransitionReason::Manual);
        self.shared
            .apply(core, Some(change), self.shared.clock.now());
    }

    /// Opens the circuit now, for one open period, under automatic control: it
    /// half-opens when the period is over, as after a real trip.
    pub fn trip(&self) {
        let mut core = self.shared.lock();
        let now = self.shared.clock.now();
        let change = core.trip(&self.shared.settings, now, TransitionReason::Manual);
        self.shared.apply(core, Some(change), now);
    }

    /// Refuses every call until [`reset`](Self::reset) (resilience4j's `FORCED_OPEN`).
    pub fn force_open(&self) {
        self.set_mode(CircuitMode::ForcedOpen);
    }

    /// Lets every call through and records nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.set_mode(CircuitMode::Disabled);
    }

    /// Lets every call through, counting outcomes and telling listeners, but never
    /// changes state, until [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.set_mode(CircuitMode::MetricsOnly);
    }

    /// Who decides the state now.
    pub fn mode(&self) -> CircuitMode {
        mode_of(self.shared.word.load(Ordering::Acquire))
    }

    fn set_mode(&self, mode: CircuitMode) {
        let mut core = self.shared.lock();
        let change = core.set_mode(mode);
        self.shared
            .apply(core, Some(change), self.shared.clock.now());
    }

    /// The counters so far. Exact once the calls being counted have finished.
    pub fn metrics(&self) -> CircuitMetrics {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panicking listener must not wedge the breaker: the core's invariants
        // hold between statements, so a poisoned lock is still usable.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time a call starts, read only when slow calls are timed.
    #[inline]
    fn start_time(&self) -> Instant {
        if self.settings.slow_call_duration.is_some() {
            self.clock.now()
        } else {
            Instant::ZERO
        }
    }

    #[inline]
    fn acquire(&self) -> Result<(Ticket, Instant), Rejected> {
        let w = self.word.load(Ordering::Acquire);
        if w & SLOW_PATH_MASK == 0 {
            return Ok((Ticket::new(generation(w), Kind::Closed), self.start_time()));
        }
        self.acquire_slow(w)
    }

    #[cold]
    fn acquire_slow(&self, w: u64) -> Result<(Ticket, Instant), Rejected> {
        let ticket = |generation, kind| (Ticket::new(generation, kind), self.start_time());
        match mode_of(w) {
            CircuitMode::ForcedOpen => return Err(self.reject(Rejected::Open)),
            CircuitMode::Disabled => return Ok(ticket(0, Kind::Uncounted)),
            CircuitMode::MetricsOnly => return Ok(ticket(0, Kind::Counted)),
            CircuitMode::Automatic => {}
        }
        let now = self.clock.now();
        if state_of(w) == CircuitState::Open
            && now.as_nanos() < self.open_until.load(Ordering::Acquire)
        {
            return Err(self.reject(Rejected::Open));
        }
        let mut core = self.lock();
        let change = core.refresh(now);
        let admitted = match (core.mode, core.state) {
            (CircuitMode::Automatic, CircuitState::Closed) => Ok(Kind::Closed),
            (CircuitMode::Automatic, CircuitState::HalfOpen) => {
                if core.admit_trial(&self.settings) {
                    Ok(Kind::Trial)
                } else {
                    Err(Rejected::HalfOpenFull)
                }
            }
            (CircuitMode::Automatic, CircuitState::Open) | (CircuitMode::ForcedOpen, _) => {
                Err(Rejected::Open)
            }
            (CircuitMode::Disabled, _) => Ok(Kind::Uncounted),
            (CircuitMode::MetricsOnly, _) => Ok(Kind::Counted),
        };
        let generation = core.generation;
        self.apply(core, change, now);
        match admitted {
            Ok(kind) => Ok(ticket(generation, kind)),
            Err(r) => Err(self.reject(r)),
        }
    }

    fn reject(&self, r: Rejected) -> Rejected {
        self.counters.count(Count::Rejected, false);
        self.tell(CallEvent {
            outcome: CallOutcome::Rejected,
            slow: false,
            duration: None,
        });
        r
    }

    #[inline]
    fn tell(&self, event: CallEvent) {
        for l in self.listeners.iter() {
            l.on_call(&event);
        }
    }

    /// Records a permit's end: `None` when it was dropped unrecorded.
    #[inline]
    fn finish(&self, t: Ticket, started: Instant, outcome: Option<Outcome>) {
        if self.plain && t.kind() == Kind::Closed && outcome == Some(Outcome::Success) {
            self.counters.count(Count::Success, false);
            if fails(self.word.load(Ordering::Relaxed)) != 0 {
                self.closed_success(t.generation(), false);
            }
            return;
        }
        self.finish_other(t, started, outcome);
    }

    #[inline(never)]
    fn finish_other(&self, t: Ticket, started: Instant, outcome: Option<Outcome>) {
        if t.kind() == Kind::Uncounted {
            return;
        }
        let (slow, duration) = match self.settings.slow_call_duration {
            Some(limit) => {
                let d = self.clock.now().saturating_duration_since(started);
                (d >= limit, Some(d))
            }
            None => (false, None),
        };
        let (count, call_outcome) = match outcome {
            Some(Outcome::Success) => (Count::Success, CallOutcome::Success),
            Some(Outcome::Failure) => (Count::Failure, CallOutcome::Failure),
            Some(Outcome::Ignored) => (Count::Ignored, CallOutcome::Ignored),
            None => (Count::Ignored, CallOutcome::Cancelled),
        };
        self.counters.count(count, slow);
        if !self.listeners.is_empty() {
            self.tell(CallEvent {
                outcome: call_outcome,
                slow,
                duration,
            });
        }
        match t.kind() {
            Kind::Closed => match outcome {
                Some(Outcome::Success) => self.closed_success(t.generation(), slow),
                Some(Outcome::Failure) => self.closed_failure(t.generation(), slow),
                _ => {}
            },
            Kind::Trial => {
                let trial = match outcome {
                    Some(Outcome::Success) if !slow => Trial::Succeeded,
                    Some(Outcome::Success) | Some(Outcome::Failure) => Trial::Failed,
                    _ => Trial::Released,
                };
                let now = self.clock.now();
                let mut core = self.lock();
                let change = core.record_trial(&self.settings, t.generation(), trial, now);
                self.apply(core, change, now);
            }
            Kind::Counted | Kind::Uncounted => {}
        }
    }

    #[cold]
    fn closed_success(&self, generation_: u32, slow: bool) {
        let mut w = self.word.load(Ordering::Relaxed);
        // Ending a failure run is a shared write, made only when there is a run to end.
        while fails(w) != 0 && w & SLOW_PATH_MASK == 0 && generation(w) == generation_ {
            match self.word.compare_exchange_weak(
                w,
                w & !FAILS_MASK,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => w = current,
            }
        }
        if self.settings.window.is_some() {
            self.record_in_window(generation_, false, slow);
        }
    }

    #[cold]
    fn closed_failure(&self, generation_: u32, slow: bool) {
        if let Some(threshold) = self.settings.failure_threshold {
            let threshold = u64::from(threshold).min(FAILS_MAX);
            let mut w = self.word.load(Ordering::Relaxed);
            // Count the failure into the run of the generation that admitted the call;
            // the one CAS that reaches the threshold makes the trip, so it happens once.
            while w & SLOW_PATH_MASK == 0 && generation(w) == generation_ {
                let n = fails(w);
                let next = (n + 1).min(FAILS_MAX);
                match self.word.compare_exchange_weak(
                    w,
                    (w & !FAILS_MASK) | (next << FAILS_SHIFT),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        if n < threshold && next >= threshold {
                            let now = self.clock.now();
                            let mut core = self.lock();
                            let change = (core.generation == generation_
                                && core.state == CircuitState::Closed
                                && core.mode == CircuitMode::Automatic)
                                .then(|| {
                                    core.trip(
                                        &self.settings,
                                        now,
                                        TransitionReason::ConsecutiveFailures(next as u32),
                                    )
                                });
                            self.apply(core, change, now);
                            return;
                        }
                        break;
                    }
                    Err(current) => w = current,
                }
            }
        }
        if self.settings.window.is_some() {
            self.record_in_window(generation_, true, slow);
        }
    }

    fn record_in_window(&self, generation_: u32, failed: bool, slow: bool) {
        let now = self.clock.now();
        let mut core = self.lock();
        let change = core.record_closed(&self.settings, generation_, failed, slow, now);
        self.apply(core, change, now);
    }

    /// Publishes the core's state to the fast path, releases the lock, then tells
    /// listeners about `change` (outside the lock, so they may call back in).
    fn apply(&self, core: MutexGuard<'_, Core>, change: Option<Change>, at: Instant) {
        let Some(change) = change else {
            return;
        };
        self.open_until
            .store(core.open_until.as_nanos(), Ordering::Release);
        self.word.store(word_of(&core), Ordering::Release);
        let moved = change.from != change.to;
        if moved {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        }
        drop(core);
        if moved && !self.listeners.is_empty() {
            let event = StateChange {
                name: Arc::clone(&self.settings.name),
                from: change.from,
                to: change.to,
                reason: change.reason,
                at,
                open_for: change.open_for,
            };
            for l in self.listeners.iter() {
                l.on_state_change(&event);
            }
        }
    }
}

/// Leave to make one call through a breaker, from [`CircuitBreaker::try_acquire`].
/// Record how the call went with [`success`](Self::success),
/// [`failure`](Self::failure), [`ignore`](Self::ignore) or [`record`](Self::record).
/// Dropped unrecorded, it counts as ignored and frees its HalfOpen slot: a
/// caller who gave up has learnt nothing about the dependency's health.
#[must_use = "record the call's outcome on the permit"]
#[derive(Debug)]
pub struct Permit<'a> {
    shared: &'a Shared,
    ticket: Ticket,
    started: Instant,
}

/// A [`Permit`] that owns a handle to its breaker (`'static`), from
/// [`CircuitBreaker::try_acquire_owned`].
#[must_use = "record the call's outcome on the permit"]
#[derive(Debug)]
pub struct OwnedPermit {
    shared: Arc<Shared>,
    ticket: Ticket,
    started: Instant,
}

macro_rules! permit_methods {
    ($t:ty) => {
        impl $t {
            /// Records the call's outcome.
            #[inline]
            pub fn record(mut self, outcome: Outcome) {
                let ticket = std::mem::replace(&mut self.ticket, Ticket::DONE);
                self.shared.finish(ticket, self.started, Some(outcome));
            }
            /// Records a success.
            #[inline]
            pub fn success(self) {
                self.record(Outcome::Success)
            }
            /// Records a failure.
            #[inline]
            pub fn failure(self) {
                self.record(Outcome::Failure)
            }
            /// Records a result that counts for nothing.
            #[inline]
            pub fn ignore(self) {
                self.record(Outcome::Ignored)
            }
        }
        impl Drop for $t {
            #[inline]
            fn drop(&mut self) {
                if self.ticket != Ticket::DONE {
                    self.shared.finish(self.ticket, self.started, None);
                }
            }
        }
    };
}
permit_methods!(Permit<'_>);
permit_methods!(OwnedPermit);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}
