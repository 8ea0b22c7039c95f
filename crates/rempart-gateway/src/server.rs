//! Listeners: the client-facing proxy and the admin side, and graceful shutdown.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rempart::clock::TokioClock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::client_conn::{ClientStream, Connections};
use crate::config::{ConfigError, GatewayConfig};
use crate::proxy::{Gateway, ReloadReport};

/// hyper refuses a read buffer under 8 KiB, so smaller head limits round up.
const MIN_HEAD_BUFFER: usize = 8 * 1024;

/// A gateway that is listening.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where clients connect (the real port when the config said `:0`).
    pub addr: SocketAddr,
    /// Where the admin side listens.
    pub admin_addr: SocketAddr,
    gateway: Gateway,
    config_path: Option<PathBuf>,
    stop: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: JoinHandle<()>,
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
        reload(&self.gateway, self.config_path.as_deref())
    }

    async fn start_with(
        config: &GatewayConfig,
        config_path: Option<PathBuf>,
    ) -> std::io::Result<RunningGateway> {
        let gateway =
            Gateway::new(config, Arc::new(TokioClock::new())).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.server.listen).await?;
        let admin_listener = TcpListener::bind(config.server.admin_listen).await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let proxy = tokio::spawn(serve_proxy(
            listener,
            gateway.clone(),
            config.clone(),
            stopped.clone(),
        ));
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            gateway.clone(),
            config.server.admin_token.clone(),
            config_path.clone(),
            stopped,
        ));
        tracing::info!(%addr, %admin_addr, "gateway listening");
        Ok(RunningGateway {
            addr,
            admin_addr,
            gateway,
            config_path,
            stop,
            proxy,
            admin,
        })
    }

    /// The request handler, for inspection (breakers, metrics).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Stops accepting, lets in-flight requests finish within the config's
    /// `shutdown_grace`, and returns once both listeners are closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // Probes are no request: they stop at once, not when the last
        // connection (which holds the services) lets go after the grace.
        for service in self.gateway.services() {
            if let Some(check) = service.health_check() {
                check.stop();
            }
        }
        let _ = self.proxy.await;
        let _ = self.admin.await;
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        self.shutdown().await;
    }
}

async fn serve_proxy(
    listener: TcpListener,
    gateway: Gateway,
    config: GatewayConfig,
    mut stopped: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .max_buf_size(
            usize::try_from(config.server.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(MIN_HEAD_BUFFER),
        )
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let connections = Connections::new(config.server.max_connections);
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
                // Past the cap: refused at once, before it costs a task.
                let Some(client) = connections.admit() else {
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
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            _ = async { let _ = stopped.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    let grace = config.server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "shutdown grace ran out; closing remaining connections"
        );
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

pub(crate) fn reload(gateway: &Gateway, path: Option<&Path>) -> Result<ReloadReport, ReloadError> {
    let path = path.ok_or(ReloadError::NoFile)?;
    let config = GatewayConfig::from_file(path).map_err(ReloadError::Config)?;
    gateway.reload(&config).map_err(ReloadError::Apply)
}
