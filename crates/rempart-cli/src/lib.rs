//! The `rempart` command line: argument parsing and the exit-code contract.
//!
//! Exit codes: 0 success; 64 bad usage or a bad config file (sysexits'
//! `EX_USAGE`), with every problem printed; 1 a failure while running (a port
//! already taken, say).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod breaker_demo;
mod events;
pub mod events_client;
pub mod events_serve;
mod gateway;
mod jobs;
mod outbox;
mod outbox_demo;
mod queue_demo;
mod registers_demo;
mod request;
mod saga;
mod saga_demo;
mod stop;
mod worker;

pub use events::EventsCommand;
pub use jobs::JobsCommand;
pub use outbox::{ABORT_AFTER_PUBLISH_ENV as OUTBOX_ABORT_AFTER_PUBLISH_ENV, OutboxCommand};
pub use outbox_demo::OutboxDemoArgs;
pub use queue_demo::QueueDemoArgs;
pub use registers_demo::RegistersDemoArgs;
pub use request::RequestArgs;
pub use saga::SagaCommand;
pub use saga_demo::{INVARIANTS as SAGA_DEMO_INVARIANTS, SagaDemoArgs};

/// Exit code for bad usage or a bad config file.
pub const EXIT_USAGE: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// rempart keeps services standing when what they depend on fails.
#[derive(Debug, Parser)]
#[command(name = "rempart", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the resilient API gateway from a TOML config file.
    ///
    /// On SIGTERM or Ctrl-C, `/ready` answers 503 at once, the listener closes
    /// after `server.drain_delay`, in-flight requests get `server.shutdown_grace`
    /// to finish, connections still open are closed, and it exits 0. On SIGHUP
    /// (or `POST /reload` with `X-Rempart-Admin: 1`) it re-reads the file: a
    /// valid file applies to new requests, and settings that need a restart
    /// (the listen addresses) are named in the log; an invalid one is refused
    /// and the running configuration keeps serving.
    Gateway {
        /// The config file (see docs/gateway-config.md and examples/gateway.toml).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a gateway config file and report every problem in it.
    ///
    /// Exits 0 when the file is valid, 64 otherwise.
    CheckConfig {
        /// The config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Watch seed 001 case 4 happen: a gateway in front of three simulated
    /// services, one of which fails for a while.
    ///
    /// Needs nothing but this binary: the services, the gateway and the
    /// clients all run in this process on loopback. A table shows each
    /// service's circuit state, answers and p99 every second: reporting fails,
    /// its circuit opens, clients get degraded answers at once, catalogue and
    /// orders keep their latency, reporting recovers and its circuit closes.
    #[command(args_conflicts_with_subcommands = true)]
    Demo {
        /// Another story: `rempart demo saga` (seed 001 case 2's order saga).
        #[command(subcommand)]
        story: Option<DemoStory>,
        /// How long the story lasts, e.g. "20s" or "1m".
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Append each table instead of redrawing it in place.
        #[arg(long)]
        no_redraw: bool,
        /// Show one circuit breaker alone instead: every call to a flaky
        /// dependency and every state change, as they happen.
        #[arg(long)]
        breaker: bool,
        /// With --breaker: how many calls to make.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(10..=10_000))]
        calls: u32,
        /// With --breaker: time between calls, e.g. "150ms".
        #[arg(long, default_value = "150ms", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Look at durable sagas and act on them: list, show, resume, abort.
    #[command(subcommand)]
    Saga(saga::SagaCommand),
    /// The offline-first event store: verify a store or archive (NF 525).
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Call a URL through seed 003's resilient client (a resilient curl):
    /// prints each attempt, its outcome, the pause before the next, the
    /// breaker's state and which fallback answered. Exits 0 on a 2xx, 1 on a
    /// failure, 64 on a bad config.
    Request(request::RequestArgs),
    /// Run the transactional outbox's relay, or see what waits in an outbox.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// The gateway's deferred jobs (seed 002): list the dead-letter queues,
    /// put dead jobs back once their cause is fixed.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Replay the gateway's deferred jobs without serving clients: one worker
    /// per service with a `queue` in the gateway's config file, through the
    /// same policies. SIGTERM or Ctrl-C drains it (jobs in hand finish or go
    /// back to the broker). Exits 64 on a bad config, 1 when a broker cannot
    /// be reached at start.
    Worker {
        /// The gateway's config file (see docs/gateway-config.md).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

/// The other demos.
#[derive(Debug, Subcommand)]
pub enum DemoStory {
    /// Seed 001 case 2: an order saga over inventory, payment and shipping,
    /// durable in SQLite or PostgreSQL; kill it any time, rerun to recover.
    Saga(SagaDemoArgs),
    /// Seed 001 case 1: orders, their items and their events in one
    /// transaction; a relay, a consumer with an inbox, and a broker outage
    /// midway. Ends with "orders: N, events delivered: N, duplicates applied: 0".
    Outbox(OutboxDemoArgs),
    /// Seed 001 case 3: cash registers sell offline-first while links come
    /// and go, sync to central, close their day; ends by checking each event
    /// is on central once, revenue equals the closures to the cent, and a
    /// tampered copy fails verify.
    Registers(RegistersDemoArgs),
    /// Seed 002: image uploads to an optimizer that fails for a while get
    /// 202 at once; the worker completes them once it recovers, and a corrupt
    /// image ends in the dead-letter queue after 5 attempts. Needs RabbitMQ.
    Queue(QueueDemoArgs),
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"150ms\" ({e})"))?;
    if d.is_zero() || d > Duration::from_secs(10) {
        return Err(format!("{s:?} must be above 0 and at most 10s"));
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"20s\" or \"1m\" ({e})"))?;
    if d < Duration::from_secs(2) {
        return Err(format!(
            "{s:?} is too short to show anything; use at least 2s"
        ));
    }
    Ok(d)
}

/// Parses `args` (the program name first) and runs; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    ExitCode::from(run(cli))
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Gateway { config } => gateway::serve(&config),
        Command::CheckConfig { file } => gateway::check(&file),
        Command::Demo {
            story: Some(DemoStory::Saga(args)),
            ..
        } => saga_demo::run(args),
        Command::Demo {
            story: Some(DemoStory::Outbox(args)),
            ..
        } => outbox_demo::run(args),
        Command::Demo {
            story: Some(DemoStory::Registers(args)),
            ..
        } => registers_demo::run(args),
        Command::Demo {
            story: Some(DemoStory::Queue(args)),
            ..
        } => queue_demo::run(args),
        Command::Demo {
            breaker: true,
            calls,
            interval,
            ..
        } => gateway::breaker_demo(calls, interval),
        Command::Demo {
            duration,
            no_redraw,
            ..
        } => gateway::demo(duration, no_redraw),
        Command::Saga(cmd) => saga::run(cmd),
        Command::Events(cmd) => events::run(cmd),
        Command::Request(args) => request::run(args),
        Command::Outbox(cmd) => outbox::run(cmd),
        Command::Jobs(cmd) => jobs::run(cmd),
        Command::Worker { config } => worker::run(&config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_must_be_readable_and_long_enough() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("1s").unwrap_err().contains("at least 2s"));
    }

    #[test]
    fn a_missing_subcommand_is_a_usage_error() {
        assert!(Cli::try_parse_from(["rempart"]).is_err());
        assert!(Cli::try_parse_from(["rempart", "gateway"]).is_err());
        assert!(Cli::try_parse_from(["rempart", "check-config", "x.toml"]).is_ok());
    }
}
