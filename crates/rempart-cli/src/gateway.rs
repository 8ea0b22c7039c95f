//! `rempart gateway`, `rempart check-config` and `rempart demo`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use rempart_gateway::config::GatewayConfig;
use rempart_gateway::demo::DemoOptions;
use rempart_gateway::server::{RunningGateway, StartError};

use crate::{EXIT_FAILURE, EXIT_USAGE};

fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // One thread: a current-thread runtime, which skips the work-stealing
    // scheduler's cross-thread wake-ups that a single worker never needs.
    let mut b = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 0 {
            b.worker_threads(worker_threads);
        }
        b
    };
    b.enable_all().build()
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn check(file: &Path) -> u8 {
    match GatewayConfig::from_file(file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} services, {} routes; clients on {}, admin on {})",
                file.display(),
                c.services.len(),
                c.routes.len(),
                c.server.listen,
                c.server.admin_listen
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}

pub(crate) fn serve(file: &Path) -> u8 {
    // Parse first, before any runtime: a bad file is a usage error, reported whole.
    let config = match GatewayConfig::from_file(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "the gateway did not start; fix the file (`rempart check-config {}` re-checks it)",
                file.display()
            );
            return EXIT_USAGE;
        }
    };
    init_logging();
    let rt = match runtime(config.server.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(async {
        // Handlers first: a SIGHUP that arrives once clients can connect must
        // reload, not end the process (SIGHUP's default action).
        let mut signals = Signals::install();
        let gw = match RunningGateway::start_from_file(file).await {
            Ok(gw) => gw,
            Err(StartError::Config(e)) => {
                eprintln!("{e}");
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("{e}");
                return EXIT_FAILURE;
            }
        };
        eprintln!(
            "rempart gateway: clients on http://{}, admin on http://{} (dashboard at /dashboard)",
            gw.addr, gw.admin_addr
        );
        wait_for_signals(&gw, &mut signals).await;
        // A second SIGTERM or Ctrl-C cuts the drain delay short.
        gw.drain_unless(next_stop(&mut signals)).await;
        eprintln!("rempart gateway: stopped");
        0
    })
}

/// The signals the gateway acts on, listened for from before it accepts.
#[cfg(unix)]
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some((term, int, hup))),
            _ => Signals(None),
        }
    }
}

/// The next SIGTERM or SIGINT.
#[cfg(unix)]
async fn next_stop(signals: &mut Signals) {
    match &mut signals.0 {
        Some((term, int, _)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        None => std::future::pending().await,
    }
}

/// Returns on SIGTERM or SIGINT; reloads the config on SIGHUP.
#[cfg(unix)]
async fn wait_for_signals(gw: &RunningGateway, signals: &mut Signals) {
    let Signals(Some((term, int, hup))) = signals else {
        eprintln!("cannot listen for signals; stop the gateway with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match gw.reload() {
                Ok(report) if report.needs_restart.is_empty() => {
                    tracing::info!(?report, "SIGHUP: configuration reloaded")
                }
                Ok(report) => tracing::warn!(
                    ?report,
                    "SIGHUP: configuration reloaded, but {} only change on restart",
                    report.needs_restart.join(", ")
                ),
                Err(e) => tracing::error!("SIGHUP: {e}"),
            },
        }
    }
    tracing::info!(
        "stopping: /ready answers 503, the listener closes after `drain_delay`, \
         then in-flight requests get `shutdown_grace`"
    );
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_gw: &RunningGateway, _signals: &mut Signals) {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(not(unix))]
async fn next_stop(_signals: &mut Signals) {
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) fn demo(duration: Duration, no_redraw: bool) -> u8 {
    let rt = match runtime(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let options = DemoOptions {
        duration,
        refresh: Duration::from_secs(1),
        redraw: !no_redraw && std::io::stdout().is_terminal(),
    };
    let mut out = std::io::stdout();
    match rt.block_on(rempart_gateway::demo::run(options, &mut out)) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("the demo failed: {e}");
            EXIT_FAILURE
        }
    }
}

pub(crate) fn breaker_demo(calls: u32, interval: Duration) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let mut out = std::io::stdout();
    match rt.block_on(crate::breaker_demo::run(calls, interval, &mut out)) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("the demo failed: {e}");
            EXIT_FAILURE
        }
    }
}
