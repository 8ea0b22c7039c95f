//! `rempart worker`: the gateway's job workers alone, without a listener,
//! for replaying deferred jobs (seed 002) on other machines than the
//! gateways. Same config file, same policies, same drain on SIGTERM.

use std::path::Path;

use rempart_gateway::config::GatewayConfig;
use rempart_gateway::jobs_worker::{StandaloneWorkers, StartWorkersError};

use crate::stop::stop_signal;
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// Runs the workers of `file` until SIGTERM or Ctrl-C; returns the exit code.
pub(crate) fn run(file: &Path) -> u8 {
    let config = match GatewayConfig::from_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "the worker did not start; fix the file (`rempart check-config {}` re-checks it)",
                file.display()
            );
            return EXIT_USAGE;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(async {
        // Listening before the workers start: a SIGTERM during the start
        // must drain, not kill the process with jobs in hand.
        let stop = stop_signal();
        let workers = match StandaloneWorkers::start(&config).await {
            Ok(w) => w,
            Err(StartWorkersError::NoQueue) => {
                eprintln!("{}: {}", file.display(), StartWorkersError::NoQueue);
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("the worker did not start");
                return EXIT_FAILURE;
            }
        };
        for w in workers.warnings() {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "rempart worker: replaying the jobs of {} (SIGTERM or Ctrl-C drains and stops)",
            workers.services().join(", ")
        );
        stop.await;
        eprintln!(
            "rempart worker: draining: no new job; those in hand finish or go back to the broker"
        );
        workers.drain().await;
        eprintln!("rempart worker: stopped");
        0
    })
}
