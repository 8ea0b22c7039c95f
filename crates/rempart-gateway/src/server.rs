//! Listeners: the client-facing proxy and the admin side, reload of the
//! settings they read, and the drain on shutdown.
//!
//! Shutdown runs in order: `/ready` turns 503 (the library's `Shutdown`,
//! which the admin side's `HealthRegistry` follows); the listener keeps
//! accepting for `drain_delay`, so a load balancer notices and stops sending;
//! then it closes, in-flight requests get `shutdown_grace` to finish, and the
//! connections still open after that are aborted, not merely logged.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rempart::clock::TokioClock;
use rempart::health::HealthRegistry;
use rempart::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::admin;
use crate::client_conn::{ClientStream, Connections};
use crate::config::{ConfigError, GatewayConfig, ServerConfig};
use crate::proxy::{Gateway, ReloadReport};

/// hyper refuses a read buffer under 8 KiB, so smaller head limits round up.
const MIN_HEAD_BUFFER: usize = 8 * 1024;

/// How long the admin side gets to close once the proxy has drained.
const ADMIN_CLOSE: Duration = Duration::from_secs(2);

/// The `[server]` settings in force, swapped whole by a reload: the admin
/// token is read per admin request, the head limits per new connection, the
/// grace and drain delay at shutdown. The listen addresses stay as bound.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) server: ArcSwap<ServerConfig>,
    /// The file `POST /reload` and SIGHUP re-read.
    pub(crate) config_path: Option<PathBuf>,
}

/// A gateway that is listening.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where clients connect (the real port when the config said `:0`).
    pub addr: SocketAddr,
    /// Where the admin side listens.
    pub admin_addr: SocketAddr,
    gateway: Gateway,
    live: Arc<Live>,
    /// Triggered first on shutdown: readiness follows it.
    draining: Shutdown,
    close: watch::Sender<bool>,
    close_admin: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: JoinHandle<()>,
    /// The embedded job workers, one per service with a queue.
    workers: Vec<JoinHandle<()>>,
    stop_workers: watch::Sender<bool>,
}

impl RunningGateway {
    /// Reads the config file at `path`, binds both listeners and starts
    /// serving; `POST /reload` on the admin side and [`reload`](Self::reload)
    /// re-read that file.
    pub async fn start_from_file(path: impl Into<PathBuf>) -> Result<RunningGateway, StartError> {
        let path = path.into();
        let config = GatewayConfig::from_file(&path).map_err(StartError::Config)?;
        Self::start_with(&config, Some(path))
            .await
            .map_err(StartError::Io)
    }

    /// Binds both listeners and starts serving `config`.
    pub async fn start(config: &GatewayConfig) -> std::io::Result<RunningGateway> {
        Self::start_with(config, None).await
    }

    /// Re-reads the config file and serves it; on any problem the running
    /// configuration stays. Without a file (started from a value), an error.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload(&self.live, &self.gateway)
    }

    async fn start_with(
        config: &GatewayConfig,
        config_path: Option<PathBuf>,
    ) -> std::io::Result<RunningGateway> {
        log_warnings(config);
        let gateway =
            Gateway::new(config, Arc::new(TokioClock::new())).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.server.listen).await?;
        let admin_listener = TcpListener::bind(config.server.admin_listen).await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let live = Arc::new(Live {
            server: ArcSwap::from_pointee(config.server.clone()),
            config_path,
        });
        let draining = Shutdown::new();
        let health = readiness(&gateway).follow_shutdown(&draining);
        let (close, closed) = watch::channel(false);
        let (close_admin, admin_closed) = watch::channel(false);
        let proxy = tokio::spawn(serve_proxy(
            listener,
            gateway.clone(),
            Arc::clone(&live),
            closed,
        ));
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            gateway.clone(),
            Arc::clone(&live),
            health,
            admin_closed,
        ));
        let (stop_workers, workers_stopped) = watch::channel(false);
        let workers = crate::jobs_worker::start(
            &gateway,
            crate::jobs_worker::Host::Gateway,
            &workers_stopped,
        );
        tracing::info!(%addr, %admin_addr, "gateway listening");
        Ok(RunningGateway {
            addr,
            admin_addr,
            gateway,
            live,
            draining,
            close,
            close_admin,
            proxy,
            admin,
            workers,
            stop_workers,
        })
    }

    /// The request handler, for inspection (breakers, metrics).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The drain a SIGTERM starts: `/ready` answers 503 at once, the
    /// listener keeps accepting for `server.drain_delay` so load balancers
    /// stop sending, then [`shutdown`](Self::shutdown).
    pub async fn drain(self) {
        self.drain_unless(std::future::pending()).await;
    }

    /// [`drain`](Self::drain), with the drain delay cut short if `hurry`
    /// completes first (a second SIGTERM or Ctrl-C: the operator insists).
    pub async fn drain_unless(self, hurry: impl Future<Output = ()>) {
        self.draining.trigger();
        let delay = self.live.server.load().drain_delay;
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: /ready answers 503; the listener closes after the drain delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = hurry => tracing::info!("asked again: closing the listener now"),
        }
        self.shutdown().await;
    }

    /// Stops accepting now, lets in-flight requests finish within
    /// `server.shutdown_grace`, closes the connections still open after it,
    /// and returns once both listeners are closed.
    pub async fn shutdown(self) {
        self.draining.trigger();
        let _ = self.close.send(true);
        // Probes are no request: they stop at once, not when the last
        // connection (which holds the services) lets go after the grace.
        for service in self.gateway.services() {
            if let Some(check) = service.health_check() {
                check.stop();
            }
        }
        let _ = self.proxy.await;
        // No request can defer a job any more: the workers finish the jobs in
        // hand within the grace; past it they are cut off and the broker
        // redelivers what they had not acked.
        let _ = self.stop_workers.send(true);
        let grace = self.live.server.load().shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        for mut worker in self.workers {
            if tokio::time::timeout_at(deadline, &mut worker)
                .await
                .is_err()
            {
                worker.abort();
            }
        }
        // The admin side closes last, so `/ready` said 503 during the drain.
        let _ = self.close_admin.send(true);
        let mut admin = self.admin;
        if tokio::time::timeout(ADMIN_CLOSE, &mut admin).await.is_err() {
            admin.abort();
        }
    }

    /// Serves until `signal` completes, then drains ([`drain`](Self::drain)).
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.drain().await;
    }
}

/// `/ready`'s checks: every service has a host to send to, and Redis (when
/// configured) answers. Read live, so they follow reloads.
pub(crate) fn readiness(gateway: &Gateway) -> HealthRegistry {
    let gw = gateway.clone();
    let mut health = HealthRegistry::new().check("upstreams", move || {
        let gw = gw.clone();
        async move {
            let out: Vec<String> = gw
                .services()
                .iter()
                .filter(|s| s.upstreams.available() == 0)
                .map(|s| s.config.name.clone())
                .collect();
            if out.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "every upstream host of {} is ejected or failing its health checks",
                    out.join(", ")
                ))
            }
        }
    });
    if let Some(redis) = gateway.redis() {
        let redis = Arc::clone(redis);
        health = health.check("cache", move || {
            let redis = Arc::clone(&redis);
            async move {
                if redis.is_healthy() {
                    Ok(())
                } else {
                    Err(format!(
                        "redis at {} is unreachable; serving with in-process fallbacks",
                        redis.url()
                    ))
                }
            }
        });
    }
    health
}

/// An HTTP/1 server for the head limits in `server`.
fn http1_for(server: &ServerConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(
            usize::try_from(server.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(MIN_HEAD_BUFFER),
        )
        .keep_alive(true);
    http
}

async fn serve_proxy(
    listener: TcpListener,
    gateway: Gateway,
    live: Arc<Live>,
    mut closed: watch::Receiver<bool>,
) {
    let mut settings = live.server.load_full();
    let mut http = http1_for(&settings);
    let graceful = GracefulShutdown::new();
    // Every connection's task, so those left after the grace can be aborted.
    let mut connections = JoinSet::new();
    let open = Connections::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A reload's head limits apply from the next connection.
                let now = live.server.load_full();
                if !Arc::ptr_eq(&now, &settings) {
                    http = http1_for(&now);
                    settings = now;
                }
                // Past the cap: refused at once, before it costs a task.
                let Some(client) = open.admit(settings.max_connections) else {
                    crate::client_conn::refuse(&stream);
                    tracing::debug!(%peer, "connection refused: max_connections reached");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                let io = ClientStream::new(stream, Arc::clone(&client));
                let conn = http.serve_connection(
                    TokioIo::new(io),
                    service_fn(move |req| {
                        let gw = gw.clone();
                        let client = Arc::clone(&client);
                        async move { gw.handle_on(req, peer, &client).await }
                    }),
                );
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            // Reap finished connections as they go, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { let _ = closed.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    let grace = live.server.load().shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            open = connections.len(),
            "shutdown grace ran out; closing the remaining connections"
        );
    }
    // Dropping a connection's future closes its socket: the client sees EOF.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn log_warnings(config: &GatewayConfig) {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
}

/// Why the gateway did not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration was refused.
    Config(ConfigError),
    /// A listener could not be bound.
    Io(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "cannot start the gateway: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Why a reload was refused; the old configuration keeps serving.
#[derive(Debug)]
pub enum ReloadError {
    /// The gateway was started from a value, so there is no file to re-read.
    NoFile,
    /// The new file was refused.
    Config(ConfigError),
    /// The new configuration could not be put in place.
    Apply(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoFile => write!(f, "the gateway was not started from a config file"),
            ReloadError::Config(e) => write!(
                f,
                "reload refused, still serving the old configuration: {e}"
            ),
            ReloadError::Apply(e) => write!(
                f,
                "reload refused, still serving the old configuration: {e}"
            ),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Re-reads the config file and applies it: the routes and services, and
/// the `[server]` settings that can change live. Those that cannot (the
/// listen addresses, the worker threads) keep their old value and are named
/// in the report's `needs_restart` and in the log.
pub(crate) fn reload(live: &Live, gateway: &Gateway) -> Result<ReloadReport, ReloadError> {
    let path = live.config_path.as_deref().ok_or(ReloadError::NoFile)?;
    let config = GatewayConfig::from_file(path).map_err(ReloadError::Config)?;
    log_warnings(&config);
    let old = live.server.load_full();
    // The file's check saw its own `admin_listen`; the one bound is the old.
    if !old.admin_listen.ip().is_loopback()
        && config
            .server
            .admin_token
            .as_deref()
            .is_none_or(str::is_empty)
    {
        return Err(ReloadError::Apply(format!(
            "the admin listener is bound to {}, not loopback, so `server.admin_token` \
             cannot be removed without a restart",
            old.admin_listen
        )));
    }
    let mut report = gateway.reload(&config).map_err(ReloadError::Apply)?;
    let mut server = config.server.clone();
    // Bound once: the new values wait for a restart, the old ones stay.
    server.listen = old.listen;
    server.admin_listen = old.admin_listen;
    if old.worker_threads != server.worker_threads {
        report.needs_restart.push("server.worker_threads".into());
        server.worker_threads = old.worker_threads;
    }
    live.server.store(Arc::new(server));
    if !report.needs_restart.is_empty() {
        tracing::warn!(
            settings = %report.needs_restart.join(", "),
            "reload: these settings changed but only take effect on restart"
        );
    }
    Ok(report)
}
