//! `rempart jobs dlq`: the dead-letter queues of the gateway's deferred
//! jobs (seed 002), for an operator. The services and their queues come from
//! the gateway's own config file, so the operator names nothing twice.
//!
//! Exit 64 for a bad config file, an unknown `--service` or a malformed job
//! id; 1 when RabbitMQ cannot be reached (named, within `--timeout`) or the
//! job is not in any dead-letter queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use rempart_gateway::config::{GatewayConfig, QueueConfig};
use rempart_gateway::queue::dead_letters::{DeadLetter, DeadLetters, Selection};
use rempart_gateway::queue::job::JobId;
use rempart_gateway::queue::topology::{QueueNames, redact};

use crate::saga::runtime;
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// `rempart jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The dead-letter queues: jobs that failed `max_attempts` times, and
    /// messages the worker could not read.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `rempart jobs dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// What waits in each dead-letter queue. Nothing is consumed.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many messages per queue.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back on their work queue, attempt count reset; the
    /// worker replays them and their polls turn to done. Unreadable (poison)
    /// messages stay where they are.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Requeue {
        /// The job to put back (its id, as in the 202's `job_id`).
        #[arg(value_name = "ID")]
        id: Option<String>,
        /// Every readable job.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the queues are.
#[derive(Debug, Args)]
pub struct Target {
    /// The gateway's config file: its services with a `queue`.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Only this service (default: every service with a `queue`).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// The deadline of each broker operation.
    #[arg(long, default_value = "5s", value_parser = crate::outbox::parse_positive)]
    timeout: Duration,
}

type Failure = (u8, String);

/// Runs a `jobs` command; returns the exit code.
pub(crate) fn run(cmd: JobsCommand) -> u8 {
    let JobsCommand::Dlq(cmd) = cmd;
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        match cmd {
            DlqCommand::List {
                target,
                limit,
                json,
            } => list(&target, limit, json).await,
            DlqCommand::Requeue { id, all, target } => {
                let selection = match (id, all) {
                    (Some(id), _) => match id.parse::<JobId>() {
                        Ok(_) => Selection::One(id),
                        Err(e) => {
                            return Err((EXIT_USAGE, format!("{e}: give the `job_id` of a 202")));
                        }
                    },
                    (None, _) => Selection::All,
                };
                requeue(&target, &selection).await
            }
        }
    });
    match result {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// The services with a queue that `target` names, from its config file.
fn queues(target: &Target) -> Result<Vec<(String, QueueConfig)>, Failure> {
    let config =
        GatewayConfig::from_file(&target.config).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let with_queue: Vec<(String, QueueConfig)> = config
        .services
        .iter()
        .filter_map(|s| s.queue.clone().map(|q| (s.name.clone(), q)))
        .collect();
    let file = target.config.display();
    match &target.service {
        None if with_queue.is_empty() => Err((
            EXIT_USAGE,
            format!(
                "{file}: no service has a `queue = {{ ... }}`; nothing is deferred, so there are no dead letters"
            ),
        )),
        None => Ok(with_queue),
        Some(name) => {
            let names: Vec<&str> = with_queue.iter().map(|(n, _)| n.as_str()).collect();
            with_queue
                .iter()
                .find(|(n, _)| n == name)
                .cloned()
                .map(|one| vec![one])
                .ok_or_else(|| {
                    (
                        EXIT_USAGE,
                        format!(
                            "{file}: no service {name:?} with a `queue`; the services with one are: {}",
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ),
                    )
                })
        }
    }
}

async fn open(service: &str, q: &QueueConfig, timeout: Duration) -> Result<DeadLetters, Failure> {
    DeadLetters::open(&q.amqp_url, QueueNames::new(&q.name), timeout)
        .await
        .map_err(|e| {
            (
                EXIT_FAILURE,
                format!(
                    "service {service:?}: RabbitMQ at {} unreachable: {e}",
                    redact(&q.amqp_url)
                ),
            )
        })
}

fn broker(service: &str) -> impl Fn(rempart_gateway::queue::BrokerError) -> Failure + '_ {
    move |e| (EXIT_FAILURE, format!("service {service:?}: {e}"))
}

async fn list(target: &Target, limit: usize, json: bool) -> Result<(), Failure> {
    let mut all = Vec::new();
    for (service, q) in queues(target)? {
        let dlq = open(&service, &q, target.timeout).await?;
        let (letters, total) = dlq.list(limit).await.map_err(broker(&service))?;
        all.push((service, dlq.names().dead.clone(), letters, total));
    }
    if json {
        let value: Vec<serde_json::Value> = all
            .iter()
            .map(|(service, queue, letters, total)| {
                serde_json::json!({ "service": service, "queue": queue, "total": total, "messages": letters })
            })
            .collect();
        println!("{}", serde_json::Value::Array(value));
        return Ok(());
    }
    for (service, queue, letters, total) in &all {
        println!("{service}: {queue}: {total} dead");
        if !letters.is_empty() {
            println!(
                "  {:<36}  {:>8}  {:<24}  reason",
                "job", "attempts", "request"
            );
        }
        for l in letters {
            println!("  {}", row(l));
        }
        if (*total as usize) > letters.len() {
            println!(
                "  … {} more (raise --limit)",
                *total as usize - letters.len()
            );
        }
    }
    Ok(())
}

fn row(l: &DeadLetter) -> String {
    let request = l.request.clone().unwrap_or_else(|| "(unreadable)".into());
    let reason = l
        .reason
        .clone()
        .or_else(|| l.last_error.clone())
        .unwrap_or_default();
    let requeued = if l.requeued > 0 {
        format!(" (requeued {} times before)", l.requeued)
    } else {
        String::new()
    };
    format!(
        "{:<36}  {:>8}  {:<24}  {reason}{requeued}",
        l.job_id.as_deref().unwrap_or("?"),
        l.attempts,
        request
    )
}

async fn requeue(target: &Target, selection: &Selection) -> Result<(), Failure> {
    let mut found = false;
    for (service, q) in queues(target)? {
        let dlq = open(&service, &q, target.timeout).await?;
        let done = dlq.requeue(selection).await.map_err(broker(&service))?;
        for id in &done.requeued {
            println!("{service}: requeued {id} to {}", dlq.names().work);
        }
        for id in &done.unreadable {
            println!(
                "{service}: left {id} in {}: unreadable, the worker would dead-letter it again",
                dlq.names().dead
            );
        }
        found |= !done.requeued.is_empty() || !done.unreadable.is_empty();
        if found && matches!(selection, Selection::One(_)) {
            break;
        }
    }
    match selection {
        Selection::One(id) if !found => Err((
            EXIT_FAILURE,
            format!("no dead job {id} in {}", describe(&target.config)),
        )),
        Selection::All if !found => {
            println!("nothing to requeue: the dead-letter queues are empty");
            Ok(())
        }
        _ => Ok(()),
    }
}

fn describe(file: &Path) -> String {
    format!("the dead-letter queues of {}", file.display())
}
