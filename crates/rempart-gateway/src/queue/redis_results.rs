//! Job states and results in Redis (`results = "redis"`), shared by every
//! gateway and worker: the same rules as the memory store, made atomic by
//! Lua scripts, each entry expiring `result_ttl` after its last change
//! (Redis's clock: the `now` passed in is not used here).

use std::future::Future;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::decision::JobState;
use super::job::JobId;
use super::owner::Owner;
use super::results::{ResultStore, StoreError};

/// Stores the state unless a final one is there; the first byte marks final
/// (`F`) or waiting (`W`) so the script need not parse JSON. The owner
/// (KEYS[2]) then expires with the state.
const REPORT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 1) == 'F' then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ARGV[1]
";

/// Only a dead job reopens: serde writes the tag first, so a dead state
/// always starts `F{"state":"dead"`.
const REVIVE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 1) == 'F' and string.sub(cur, 1, 16) ~= 'F{"state":"dead"' then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ARGV[1]
"#;

/// The job a key names, or the candidate once claimed.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Deletes the key only if it still names this job.
const FORGET: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// A [`ResultStore`] in Redis.
#[derive(Clone)]
pub struct RedisResults {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    deadline: Duration,
    report: redis::Script,
    revive: redis::Script,
    claim: redis::Script,
    forget: redis::Script,
}

impl std::fmt::Debug for RedisResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResults")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisResults {
    /// Connects to `url` within `deadline` (which also bounds each command);
    /// keys start with `prefix` (such as `rempart:jobs:optimizer:`).
    pub async fn connect(
        url: &str,
        prefix: &str,
        ttl: Duration,
        deadline: Duration,
    ) -> Result<RedisResults, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError(format!("redis_url {url:?}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline))
            .set_response_timeout(Some(deadline));
        let conn = tokio::time::timeout(
            deadline * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError(format!("Redis at {url}: no answer within {deadline:?}")))?
        .map_err(|e| StoreError(format!("Redis at {url}: {e}")))?;
        Ok(RedisResults {
            conn,
            prefix: prefix.to_owned(),
            ttl,
            deadline,
            report: redis::Script::new(REPORT),
            revive: redis::Script::new(REVIVE),
            claim: redis::Script::new(CLAIM),
            forget: redis::Script::new(FORGET),
        })
    }

    /// Runs `script` to set the job's state to `state` (when its rule
    /// allows), and returns the state kept.
    async fn set_by(
        &self,
        script: &redis::Script,
        what: &str,
        id: JobId,
        state: &JobState,
    ) -> Result<JobState, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}job:{id}", self.prefix);
        let kept: String = self
            .within(
                what,
                script
                    .key(&key)
                    .key(format!("{}owner:{id}", self.prefix))
                    .arg(encode(state))
                    .arg(self.ttl_ms())
                    .invoke_async(&mut conn),
            )
            .await?;
        decode(&kept)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    async fn within<T>(
        &self,
        what: &str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.deadline, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(format!("{what}: {e}"))),
            Err(_) => Err(StoreError(format!(
                "{what}: no answer within {:?}",
                self.deadline
            ))),
        }
    }
}

fn encode(state: &JobState) -> String {
    let mark = if state.is_final() { 'F' } else { 'W' };
    let json = serde_json::to_string(state).expect("a job state always serializes");
    format!("{mark}{json}")
}

fn decode(stored: &str) -> Result<JobState, StoreError> {
    let json = stored.get(1..).unwrap_or("");
    serde_json::from_str(json).map_err(|e| StoreError(format!("unreadable job state: {e}")))
}

impl ResultStore for RedisResults {
    async fn get(&self, id: JobId, _now: SystemTime) -> Result<Option<JobState>, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}job:{id}", self.prefix);
        let got: Option<String> = self
            .within(
                "reading a job state",
                redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        got.as_deref().map(decode).transpose()
    }

    async fn report(
        &self,
        id: JobId,
        state: JobState,
        _now: SystemTime,
    ) -> Result<JobState, StoreError> {
        self.set_by(&self.report, "recording a job state", id, &state)
            .await
    }

    async fn revive(&self, id: JobId, _now: SystemTime) -> Result<JobState, StoreError> {
        self.set_by(&self.revive, "reopening a dead job", id, &JobState::Queued)
            .await
    }

    async fn job_for_key(
        &self,
        key: &str,
        candidate: JobId,
        _now: SystemTime,
    ) -> Result<JobId, StoreError> {
        let mut conn = self.conn.clone();
        let rkey = format!("{}key:{key}", self.prefix);
        let id: String = self
            .within(
                "claiming an Idempotency-Key",
                self.claim
                    .key(&rkey)
                    .arg(candidate.to_string())
                    .arg(self.ttl_ms())
                    .invoke_async(&mut conn),
            )
            .await?;
        id.parse().map_err(StoreError)
    }

    async fn forget_key(&self, key: &str, id: JobId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let rkey = format!("{}key:{key}", self.prefix);
        let _: i64 = self
            .within(
                "freeing an Idempotency-Key",
                self.forget
                    .key(&rkey)
                    .arg(id.to_string())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn begin_run(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
        _now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}run:{id}", self.prefix);
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .within(
                "taking a job's run",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn end_run(&self, id: JobId, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}run:{id}", self.prefix);
        // The same compare-and-delete as a key's: only the holder frees it.
        let _: i64 = self
            .within(
                "giving back a job's run",
                self.forget.key(&key).arg(token).invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn own(&self, id: JobId, owner: Owner, _now: SystemTime) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}owner:{id}", self.prefix);
        let _: () = self
            .within(
                "recording a job's owner",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(owner.to_string())
                    .arg("PX")
                    .arg(self.ttl_ms())
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn owner(&self, id: JobId, _now: SystemTime) -> Result<Option<Owner>, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}owner:{id}", self.prefix);
        let got: Option<String> = self
            .within(
                "reading a job's owner",
                redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        Ok(got.as_deref().and_then(Owner::from_hex))
    }
}
