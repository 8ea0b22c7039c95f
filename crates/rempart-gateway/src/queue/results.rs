//! Where job states and results are kept for polls: idempotent per job id
//! (the first final state wins), and an `Idempotency-Key` maps to the one
//! job it created within the result time to live.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::decision::JobState;
use super::job::JobId;
use super::owner::Owner;

/// The store could not be reached or answered nonsense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job results store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Job states and results, each kept `result_ttl` after its last change.
/// Time is passed in, so expiry is tested without waiting.
pub trait ResultStore: Send + Sync + 'static {
    /// The job's state, if known and not expired.
    fn get(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<JobState>, StoreError>> + Send;

    /// Records `state` unless the job is already final, and returns the state
    /// now kept: a duplicate delivery's result does not replace the first.
    fn report(
        &self,
        id: JobId,
        state: JobState,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobState, StoreError>> + Send;

    /// Reopens a dead job as queued, for an operator's requeue; a done job
    /// stays done. Returns the state now kept.
    fn revive(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobState, StoreError>> + Send;

    /// The job `key` already names, or `candidate` once it is claimed for it:
    /// the same `Idempotency-Key` twice gives one job.
    fn job_for_key(
        &self,
        key: &str,
        candidate: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobId, StoreError>> + Send;

    /// Frees `key` if it still names `id`: the job was never queued (the
    /// broker did not confirm), so the client's retry must get a new one.
    fn forget_key(
        &self,
        key: &str,
        id: JobId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the right to replay `id` for `lease` under `token`, unless
    /// another delivery of the same job holds it: two copies of one job (a
    /// crash between re-publishing and acking leaves two) never run at once.
    fn begin_run(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives back the right taken with `token` (if still held by it).
    fn end_run(
        &self,
        id: JobId,
        token: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records who `id` belongs to, kept as long as its state: only that
    /// owner's polls see the job.
    fn own(
        &self,
        id: JobId,
        owner: Owner,
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Who `id` belongs to, if recorded and not expired.
    fn owner(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Owner>, StoreError>> + Send;
}

/// A store shared between the gateway and its worker.
impl<S: ResultStore> ResultStore for std::sync::Arc<S> {
    fn get(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<JobState>, StoreError>> + Send {
        (**self).get(id, now)
    }

    fn report(
        &self,
        id: JobId,
        state: JobState,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobState, StoreError>> + Send {
        (**self).report(id, state, now)
    }

    fn revive(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobState, StoreError>> + Send {
        (**self).revive(id, now)
    }

    fn job_for_key(
        &self,
        key: &str,
        candidate: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<JobId, StoreError>> + Send {
        (**self).job_for_key(key, candidate, now)
    }

    fn forget_key(
        &self,
        key: &str,
        id: JobId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).forget_key(key, id)
    }

    fn begin_run(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).begin_run(id, token, lease, now)
    }

    fn end_run(
        &self,
        id: JobId,
        token: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).end_run(id, token)
    }

    fn own(
        &self,
        id: JobId,
        owner: Owner,
        now: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).own(id, owner, now)
    }

    fn owner(
        &self,
        id: JobId,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Owner>, StoreError>> + Send {
        (**self).owner(id, now)
    }
}

/// An in-process [`ResultStore`] (the embedded default; lost on restart).
#[derive(Debug)]
pub struct MemoryResults {
    ttl: Duration,
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    jobs: HashMap<JobId, (JobState, SystemTime)>,
    keys: HashMap<String, (JobId, SystemTime)>,
    owners: HashMap<JobId, (Owner, SystemTime)>,
    runs: HashMap<JobId, (String, SystemTime)>,
    next_sweep: Option<SystemTime>,
}

impl Tables {
    /// Drops what expired, at most about four times per TTL, so the maps do
    /// not grow with jobs nobody polls again.
    fn sweep(&mut self, now: SystemTime, ttl: Duration) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.jobs.retain(|_, (_, until)| now < *until);
        self.keys.retain(|_, (_, until)| now < *until);
        self.runs.retain(|_, (_, until)| now < *until);
        self.owners.retain(|_, (_, until)| now < *until);
        self.next_sweep = Some(now + ttl / 4);
    }
}

impl Tables {
    /// Keeps `state` until `until`, and the job's owner as long: otherwise
    /// the result would turn invisible to its owner before it expires.
    fn keep(&mut self, id: JobId, state: JobState, until: SystemTime) {
        self.jobs.insert(id, (state, until));
        if let Some((_, owned_until)) = self.owners.get_mut(&id) {
            *owned_until = until;
        }
    }
}

impl MemoryResults {
    /// A store keeping each entry `ttl` after its last change.
    pub fn new(ttl: Duration) -> MemoryResults {
        MemoryResults {
            ttl,
            inner: Mutex::new(Tables::default()),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic elsewhere while holding the lock leaves consistent maps: every
        // change is a single insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResultStore for MemoryResults {
    async fn get(&self, id: JobId, now: SystemTime) -> Result<Option<JobState>, StoreError> {
        Ok(self
            .tables()
            .jobs
            .get(&id)
            .filter(|(_, until)| now < *until)
            .map(|(state, _)| state.clone()))
    }

    async fn report(
        &self,
        id: JobId,
        state: JobState,
        now: SystemTime,
    ) -> Result<JobState, StoreError> {
        let mut t = self.tables();
        t.sweep(now, self.ttl);
        // A final state keeps its expiry: a duplicate does not prolong it.
        let (kept, until) = match t.jobs.remove(&id) {
            Some((old, until)) if now < until && old.is_final() => (old, until),
            _ => (state, now + self.ttl),
        };
        t.keep(id, kept.clone(), until);
        Ok(kept)
    }

    async fn revive(&self, id: JobId, now: SystemTime) -> Result<JobState, StoreError> {
        let mut t = self.tables();
        t.sweep(now, self.ttl);
        let (kept, until) = match t.jobs.remove(&id) {
            Some((done @ JobState::Done(_), until)) if now < until => (done, until),
            _ => (JobState::Queued, now + self.ttl),
        };
        t.keep(id, kept.clone(), until);
        Ok(kept)
    }

    async fn job_for_key(
        &self,
        key: &str,
        candidate: JobId,
        now: SystemTime,
    ) -> Result<JobId, StoreError> {
        let mut t = self.tables();
        t.sweep(now, self.ttl);
        match t.keys.get(key) {
            Some((id, until)) if now < *until => Ok(*id),
            _ => {
                t.keys.insert(key.to_owned(), (candidate, now + self.ttl));
                Ok(candidate)
            }
        }
    }

    async fn forget_key(&self, key: &str, id: JobId) -> Result<(), StoreError> {
        let mut t = self.tables();
        if t.keys.get(key).is_some_and(|(named, _)| *named == id) {
            t.keys.remove(key);
        }
        Ok(())
    }

    async fn begin_run(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut t = self.tables();
        if t.runs.get(&id).is_some_and(|(_, until)| now < *until) {
            return Ok(false);
        }
        t.runs.insert(id, (token.to_owned(), now + lease));
        Ok(true)
    }

    async fn end_run(&self, id: JobId, token: &str) -> Result<(), StoreError> {
        let mut t = self.tables();
        if t.runs.get(&id).is_some_and(|(held, _)| held == token) {
            t.runs.remove(&id);
        }
        Ok(())
    }

    async fn own(&self, id: JobId, owner: Owner, now: SystemTime) -> Result<(), StoreError> {
        let mut t = self.tables();
        t.sweep(now, self.ttl);
        let until = t.jobs.get(&id).map_or(now + self.ttl, |(_, u)| *u);
        t.owners.insert(id, (owner, until.max(now + self.ttl)));
        Ok(())
    }

    async fn owner(&self, id: JobId, now: SystemTime) -> Result<Option<Owner>, StoreError> {
        Ok(self
            .tables()
            .owners
            .get(&id)
            .filter(|(_, until)| now < *until)
            .map(|(o, _)| *o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::decision::StoredAnswer;

    const TTL: Duration = Duration::from_secs(86_400);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    fn done(body: &str) -> JobState {
        JobState::Done(StoredAnswer {
            status: 200,
            content_type: Some("text/plain".into()),
            body: body.into(),
        })
    }

    #[tokio::test]
    async fn the_first_result_stored_wins() {
        let s = MemoryResults::new(TTL);
        let id = JobId::new(t0());
        s.report(id, JobState::Queued, t0()).await.unwrap();
        assert_eq!(
            s.report(id, done("first"), t0()).await.unwrap(),
            done("first")
        );
        assert_eq!(
            s.report(id, done("second"), t0()).await.unwrap(),
            done("first")
        );
        let stale = JobState::Retrying {
            attempt: 3,
            error: "late".into(),
        };
        assert_eq!(s.report(id, stale, t0()).await.unwrap(), done("first"));
        assert_eq!(s.get(id, t0()).await.unwrap(), Some(done("first")));
    }

    #[tokio::test]
    async fn a_requeue_reopens_a_dead_job_but_never_a_done_one() {
        let s = MemoryResults::new(TTL);
        let (dead, finished) = (JobId::new(t0()), JobId::new(t0()));
        let error = "503 five times".to_string();
        s.report(dead, JobState::Dead { error }, t0())
            .await
            .unwrap();
        s.report(finished, done("kept"), t0()).await.unwrap();
        assert_eq!(s.revive(dead, t0()).await.unwrap(), JobState::Queued);
        assert_eq!(s.get(dead, t0()).await.unwrap(), Some(JobState::Queued));
        assert_eq!(s.revive(finished, t0()).await.unwrap(), done("kept"));
        // Reopened, it takes its new result like any queued job.
        assert_eq!(
            s.report(dead, done("second life"), t0()).await.unwrap(),
            done("second life")
        );
    }

    #[tokio::test]
    async fn one_delivery_at_a_time_runs_a_job_until_it_ends_or_its_lease_runs_out() {
        let s = MemoryResults::new(TTL);
        let id = JobId::new(t0());
        let lease = Duration::from_secs(60);
        assert!(s.begin_run(id, "a", lease, t0()).await.unwrap());
        assert!(
            !s.begin_run(id, "b", lease, t0()).await.unwrap(),
            "a holds it"
        );
        s.end_run(id, "b").await.unwrap();
        assert!(
            !s.begin_run(id, "b", lease, t0()).await.unwrap(),
            "b cannot free a's"
        );
        s.end_run(id, "a").await.unwrap();
        assert!(s.begin_run(id, "b", lease, t0()).await.unwrap());
        // A holder that died: its lease runs out.
        assert!(s.begin_run(id, "c", lease, t0() + lease).await.unwrap());
    }

    #[tokio::test]
    async fn results_expire_after_the_ttl_from_their_last_change() {
        let s = MemoryResults::new(TTL);
        let id = JobId::new(t0());
        s.report(id, JobState::Queued, t0()).await.unwrap();
        let t1 = t0() + TTL / 2;
        s.report(id, done("x"), t1).await.unwrap();
        // A duplicate result neither replaces nor prolongs the first.
        s.report(id, done("y"), t1 + TTL / 2).await.unwrap();
        assert!(
            s.get(id, t1 + TTL - Duration::from_secs(1))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(s.get(id, t1 + TTL).await.unwrap(), None);
        // Swept from memory on a later write, not only hidden.
        s.report(JobId::new(t1 + TTL), JobState::Queued, t1 + TTL * 2)
            .await
            .unwrap();
        assert_eq!(s.tables().jobs.len(), 1);
    }

    #[tokio::test]
    async fn one_idempotency_key_gives_one_job_within_the_ttl() {
        let s = MemoryResults::new(TTL);
        let a = JobId::new(t0());
        let b = JobId::new(t0() + Duration::from_millis(1));
        assert_eq!(s.job_for_key("k", a, t0()).await.unwrap(), a);
        assert_eq!(s.job_for_key("k", b, t0() + TTL / 2).await.unwrap(), a);
        assert_eq!(s.job_for_key("other", b, t0()).await.unwrap(), b);
        let c = JobId::new(t0() + TTL);
        assert_eq!(s.job_for_key("k", c, t0() + TTL).await.unwrap(), c);
        s.forget_key("k", a).await.unwrap();
        assert_eq!(
            s.job_for_key("k", b, t0() + TTL).await.unwrap(),
            c,
            "not a's any more"
        );
        s.forget_key("k", c).await.unwrap();
        assert_eq!(s.job_for_key("k", b, t0() + TTL).await.unwrap(), b);
    }

    #[tokio::test]
    async fn the_owner_is_kept_as_long_as_the_result() {
        let s = MemoryResults::new(TTL);
        let id = JobId::new(t0());
        let o = Owner::of(&http::HeaderMap::new(), [10, 0, 0, 1].into());
        s.own(id, o, t0()).await.unwrap();
        s.report(id, JobState::Queued, t0()).await.unwrap();
        // Done late: the result lives TTL from then, and so does its owner.
        let t1 = t0() + TTL / 2;
        s.report(id, done("x"), t1).await.unwrap();
        let later = t0() + TTL + Duration::from_secs(1);
        assert!(s.get(id, later).await.unwrap().is_some());
        assert_eq!(s.owner(id, later).await.unwrap(), Some(o));
        assert_eq!(s.owner(id, t1 + TTL).await.unwrap(), None);
        assert_eq!(s.owner(JobId::new(t1), t1).await.unwrap(), None);
    }
}
