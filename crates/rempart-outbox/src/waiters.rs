//! PostgreSQL: a relay's row in `outbox_relay_waiting` while all its
//! pipelines are idle, so writers notify only then (see the relay's doc).

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The deadline of one registration statement.
const STATEMENT_DEADLINE: Duration = Duration::from_secs(5);

/// One relay's idle pipelines and its row. Every change runs under one
/// lock, in each pipeline's order (leave before its next cycle, enter
/// after its last), so when all pipelines are idle the last change was a
/// registration.
#[derive(Debug)]
pub(crate) struct Waiters {
    /// None: no listener (SQLite, or `LISTEN` failed): nothing to register.
    pool: Option<PgPool>,
    key: String,
    pipelines: usize,
    poll_interval: Duration,
    /// 1 while the row stands (the relay's metrics).
    waiting: Gauge,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    idle: usize,
    /// When the row was last written (None: no row).
    registered: Option<Instant>,
}

impl Waiters {
    pub(crate) fn new(
        pool: Option<PgPool>,
        owner: &str,
        pipelines: usize,
        poll_interval: Duration,
        waiting: Gauge,
    ) -> Self {
        Waiters {
            pool,
            // Per run: two relays given one owner name must not clear each other's row.
            key: format!("{owner}/{}", uuid::Uuid::new_v4().simple()),
            pipelines,
            poll_interval,
            waiting,
            state: Mutex::new(State::default()),
        }
    }

    /// A pipeline declares itself idle; the last one registers the relay.
    /// The caller then claims once more: a writer that read no row before
    /// this one committed, and committed before that claim, is in it.
    pub(crate) async fn enter(&self) {
        let mut s = self.state.lock().await;
        s.idle += 1;
        if s.idle >= self.pipelines {
            self.register(&mut s).await;
        }
    }

    /// An idle pipeline found rows (or failed): the relay is busy, so
    /// writers stop notifying.
    pub(crate) async fn leave(&self) {
        let mut s = self.state.lock().await;
        s.idle = s.idle.saturating_sub(1);
        if s.registered.take().is_some() {
            self.waiting.set(0);
            self.run(
                sqlx::query("DELETE FROM outbox_relay_waiting WHERE waiter = $1").bind(&self.key),
            )
            .await;
        }
    }

    /// An idle pipeline woke (poll or notification): renew the row before it expires.
    pub(crate) async fn renew(&self) {
        let mut s = self.state.lock().await;
        if s.registered
            .is_some_and(|at| at.elapsed() >= self.poll_interval / 2)
        {
            self.register(&mut s).await;
        }
    }

    async fn register(&self, s: &mut State) {
        // The row outlives a few polls (idle pipelines renew it as they
        // wake), and expires if the relay dies: writers then stop notifying.
        let expiry = self.poll_interval.saturating_mul(3) + Duration::from_secs(1);
        let ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        let written = self
            .run(
                sqlx::query(
                    "WITH gone AS (DELETE FROM outbox_relay_waiting WHERE until < now() AND waiter <> $1)
                     INSERT INTO outbox_relay_waiting (waiter, until)
                     VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
                     ON CONFLICT (waiter) DO UPDATE SET until = excluded.until",
                )
                .bind(&self.key)
                .bind(ms),
            )
            .await;
        // Not written: writers do not notify, the poll interval covers.
        s.registered = written.then(Instant::now);
        self.waiting.set(i64::from(written));
    }

    async fn run(
        &self,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> bool {
        let Some(pool) = &self.pool else {
            return false;
        };
        match tokio::time::timeout(STATEMENT_DEADLINE, q.execute(pool)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "outbox relay: waiting row not written; polling covers");
                false
            }
            Err(_) => {
                tracing::debug!("outbox relay: waiting row timed out; polling covers");
                false
            }
        }
    }
}
