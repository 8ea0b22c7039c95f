//! `rempart outbox`: the standalone relay process, and what waits in an
//! outbox for an operator. Exit 64 for bad input (a URL's scheme, a missing
//! SQLite file, a subject prefix), 1 when the database or the broker cannot
//! be reached at start (named, within `--connect-timeout`). Once running, the
//! relay rides out broker outages: rows wait in the table and drain later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use rempart_db::{Db, DbError, OpenOptions};
use rempart_outbox::schema::OUTBOX_SCHEMA;
use rempart_outbox::{
    AmqpDestination, Destination, Envelope, NatsDestination, OutboxStore, PublishError, Relay,
    RelayConfig, Routing,
};

use crate::saga::{db_failure, existing_sqlite, runtime};
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// Test hook for the crash tests: the relay process exits (code 86, no
/// cleanup) right after its N-th acknowledged publish, before the batch is
/// marked published, the window a random SIGKILL rarely hits.
pub const ABORT_AFTER_PUBLISH_ENV: &str = "REMPART_OUTBOX_ABORT_AFTER_PUBLISH";

/// The `outbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Publish committed outbox messages to NATS JetStream or RabbitMQ until
    /// SIGTERM or Ctrl-C (the cycle in flight finishes first).
    ///
    /// Subjects and routing keys are `<prefix>.<aggregate type>.<event type>`;
    /// on NATS a stream must capture `<prefix>.>` (rows wait until one does),
    /// on RabbitMQ a queue must be bound to the exchange. Several relays may
    /// share a PostgreSQL outbox; on SQLite one relay runs at a time (a lease).
    Relay(RelayArgs),
    /// What waits in an outbox: pending messages, the oldest one's age, the
    /// aggregates with a backlog and the dead letters.
    Status {
        /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`.
        #[arg(long, value_name = "URL")]
        database: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// How many aggregates and dead letters to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// `rempart outbox relay`'s arguments.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("broker").required(true).args(["nats", "amqp"])))]
pub struct RelayArgs {
    /// The outbox's database: `sqlite://PATH` or `postgres://…`.
    #[arg(long, value_name = "URL")]
    database: String,
    /// NATS with JetStream, e.g. `nats://127.0.0.1:4222`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// RabbitMQ, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (publisher confirms).
    #[arg(long, value_name = "URL")]
    amqp: Option<String>,
    /// With --amqp: the exchange to publish to.
    #[arg(long, default_value = "amq.topic")]
    exchange: String,
    /// The first token of every subject or routing key.
    #[arg(long, default_value = "events")]
    prefix: String,
    /// The deadline to reach the database and the broker, and of each publish.
    #[arg(long, default_value = "5s", value_parser = parse_positive)]
    connect_timeout: Duration,
    /// The poll when no notification comes (SQLite: the only wake-up).
    #[arg(long, default_value = "500ms", value_parser = parse_positive)]
    poll: Duration,
    /// Published rows are deleted this long after their publish, in batches
    /// ("0s": never).
    #[arg(long, default_value = "24h", value_parser = parse_any)]
    retention: Duration,
    /// SQLite: how long the relay lease outlives a relay that died.
    #[arg(long, default_value = "15s", value_parser = parse_positive)]
    lease: Duration,
}

fn parse_any(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"500ms\" or \"24h\" ({e})"))
}

pub(crate) fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = parse_any(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be above 0"));
    }
    Ok(d)
}

type Failure = (u8, String);

/// Runs an `outbox` subcommand; returns the exit code.
pub(crate) fn run(cmd: OutboxCommand) -> u8 {
    let runtime = match runtime(2) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        match cmd {
            OutboxCommand::Relay(args) => relay(args).await,
            OutboxCommand::Status {
                database,
                json,
                limit,
            } => status(&database, json, limit).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

/// Opens the outbox's database and migrates its schema. A missing SQLite
/// file is a typo, not a database to create.
async fn open(url: &str, connect_timeout: Duration) -> Result<OutboxStore, Failure> {
    existing_sqlite(url, "the service's")?;
    let opts = OpenOptions {
        connect_timeout,
        ..OpenOptions::default()
    };
    let db = Db::open_with(url, &opts).await.map_err(db_failure)?;
    db.migrate(&OUTBOX_SCHEMA).await.map_err(db_failure)?;
    Ok(OutboxStore::new(db))
}

fn check_prefix(prefix: &str) -> Result<(), Failure> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err((
            EXIT_USAGE,
            format!(
                "--prefix {prefix:?}: use subject tokens (letters, digits, '_', '-') separated by dots, e.g. \"events\""
            ),
        ))
    }
}

async fn relay(args: RelayArgs) -> Result<(), Failure> {
    // Listening before connecting: a SIGTERM during the start stops cleanly.
    let stop = crate::stop::stop_signal();
    let mut stop = std::pin::pin!(stop);
    check_prefix(&args.prefix)?;
    // Both URLs are checked before anything is reached: bad input is 64.
    if let Some(url) = &args.nats {
        url.parse::<async_nats::ServerAddr>().map_err(|e| {
            (
                EXIT_USAGE,
                format!("--nats {url:?} is not a NATS URL such as nats://127.0.0.1:4222 ({e})"),
            )
        })?;
    }
    if let Some(url) = &args.amqp {
        url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            (
                EXIT_USAGE,
                format!(
                    "--amqp {:?} is not an AMQP URL such as amqp://guest:guest@127.0.0.1:5672/%2f ({e})",
                    rempart_db::redact(url)
                ),
            )
        })?;
    }
    let Some(store) = unless_stopped(&mut stop, open(&args.database, args.connect_timeout)).await
    else {
        return Ok(());
    };
    let store = store?;
    let routing = Routing::prefixed(&args.prefix);
    let config = RelayConfig {
        poll_interval: args.poll,
        publish_timeout: args.connect_timeout,
        lease: args.lease,
        ..RelayConfig::default()
    };
    let db = rempart_db::redact(&args.database);
    if let Some(url) = &args.nats {
        let Some(dest) = unless_stopped(
            &mut stop,
            NatsDestination::connect(url, routing, args.connect_timeout),
        )
        .await
        else {
            return Ok(());
        };
        let dest = dest.map_err(|e| (EXIT_FAILURE, e.to_string()))?;
        eprintln!(
            "rempart outbox relay: {db} -> NATS {url}, subjects {}.<aggregate type>.<event type>",
            args.prefix
        );
        serve(store, dest, config, args.retention, stop.as_mut()).await
    } else {
        let url = args.amqp.as_deref().unwrap_or_default();
        let Some(dest) = unless_stopped(
            &mut stop,
            AmqpDestination::connect(url, &args.exchange, routing, args.connect_timeout),
        )
        .await
        else {
            return Ok(());
        };
        let dest = dest.map_err(|e| (EXIT_FAILURE, e.to_string()))?;
        eprintln!(
            "rempart outbox relay: {db} -> RabbitMQ {}, exchange {}, routing keys {}.<aggregate type>.<event type>",
            rempart_db::redact(url),
            args.exchange,
            args.prefix
        );
        serve(store, dest, config, args.retention, stop.as_mut()).await
    }
}

/// `work`'s output, or `None` when a stop request came first.
async fn unless_stopped<T>(
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        () = stop.as_mut() => {
            eprintln!("rempart outbox relay: stopped before it started");
            None
        }
    }
}

async fn serve<D: Destination>(
    store: OutboxStore,
    dest: D,
    config: RelayConfig,
    retention: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    let abort_after = std::env::var(ABORT_AFTER_PUBLISH_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let relay = Relay::new(store.clone(), AbortAfter::new(dest, abort_after), config);
    let purge = (!retention.is_zero()).then(|| tokio::spawn(purge(store, retention)));
    eprintln!("rempart outbox relay: running; stop with Ctrl-C or SIGTERM");
    let result = relay.run(stop).await;
    if let Some(p) = purge {
        p.abort();
    }
    result.map_err(|e| (EXIT_FAILURE, e.to_string()))?;
    eprintln!("rempart outbox relay: stopped");
    Ok(())
}

/// Deletes published rows past their retention, a thousand per statement, every minute.
async fn purge(store: OutboxStore, retention: Duration) {
    loop {
        match store.purge_published(retention, 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "outbox: published rows past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "outbox: retention purge failed"),
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// The destination, and the crash tests' hook ([`ABORT_AFTER_PUBLISH_ENV`]).
struct AbortAfter<D> {
    inner: D,
    left: Option<AtomicU64>,
}

impl<D> AbortAfter<D> {
    fn new(inner: D, after: Option<u64>) -> Self {
        AbortAfter {
            inner,
            left: after.map(AtomicU64::new),
        }
    }
}

impl<D: Destination> Destination for AbortAfter<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_payload(&self) -> Option<usize> {
        self.inner.max_payload()
    }

    async fn publish(&self, message: &Envelope) -> Result<(), PublishError> {
        let r = self.inner.publish(message).await;
        if r.is_ok()
            && let Some(left) = &self.left
            && left.fetch_sub(1, Ordering::SeqCst) == 1
        {
            eprintln!("{ABORT_AFTER_PUBLISH_ENV}: exiting after a publish, before its mark");
            std::process::exit(86);
        }
        r
    }
}

async fn status(database: &str, json: bool, limit: u32) -> Result<(), Failure> {
    let store = open(database, Duration::from_secs(5)).await?;
    let fail = |e: DbError| db_failure(e);
    let backlog = store.backlog().await.map_err(fail)?;
    let aggregates = store.backlog_by_aggregate(limit).await.map_err(fail)?;
    let dead = store.dead_count().await.map_err(fail)?;
    let dead_letters = store.dead_letters(limit).await.map_err(fail)?;
    if json {
        let v = serde_json::json!({
            "pending": backlog.pending,
            "oldest_pending_age_seconds": backlog.oldest_age_seconds,
            "aggregates_with_backlog": aggregates.iter().map(|a| serde_json::json!({
                "aggregate_type": a.aggregate_type,
                "aggregate_id": a.aggregate_id,
                "pending": a.pending,
                "oldest_age_seconds": a.oldest_age_seconds,
                "last_error": a.last_error,
            })).collect::<Vec<_>>(),
            "dead_letters": dead,
            "dead": dead_letters.iter().map(|d| serde_json::json!({
                "id": d.id.to_string(),
                "aggregate_type": d.aggregate_type,
                "aggregate_id": d.aggregate_id,
                "seq": d.seq,
                "event_type": d.event_type,
                "attempts": d.attempts,
                "error": d.error,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("pending             {}", backlog.pending);
    println!("oldest pending age  {:.1} s", backlog.oldest_age_seconds);
    println!("dead letters        {dead}");
    if !aggregates.is_empty() {
        println!();
        println!(
            "{:<20}  {:<36}  {:>8}  {:>10}  LAST ERROR",
            "AGGREGATE TYPE", "AGGREGATE ID", "PENDING", "OLDEST (s)"
        );
        for a in &aggregates {
            println!(
                "{:<20}  {:<36}  {:>8}  {:>10.1}  {}",
                a.aggregate_type,
                a.aggregate_id,
                a.pending,
                a.oldest_age_seconds,
                a.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !dead_letters.is_empty() {
        println!();
        println!(
            "{:<36}  {:<20}  {:<20}  {:>5}  {:<16}  ERROR",
            "DEAD LETTER", "AGGREGATE TYPE", "AGGREGATE ID", "SEQ", "EVENT"
        );
        for d in &dead_letters {
            println!(
                "{:<36}  {:<20}  {:<20}  {:>5}  {:<16}  {}",
                d.id, d.aggregate_type, d.aggregate_id, d.seq, d.event_type, d.error
            );
        }
    }
    Ok(())
}
