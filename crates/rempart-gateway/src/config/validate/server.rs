//! `[server]`: listeners, the admin token, shutdown, request limits and the
//! trusted proxies; the admin listener must not be open without a token nor
//! share the public address.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ServerConfig;
use crate::config::reader::{Reader, Section, join};

impl Reader<'_> {
    /// `[server]`, and whether it set `trusted_proxies`.
    pub(super) fn server(&mut self, top: Section<'_>) -> (ServerConfig, bool) {
        let defaults = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_token: None,
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
            drain_delay: Duration::from_secs(5),
        };
        let Some((table, at, path)) = self.table(top, "server") else {
            return (defaults, false);
        };
        let s = Section {
            table,
            at,
            path: &path,
        };
        self.known_keys(
            s,
            &[
                "listen",
                "admin_listen",
                "admin_token",
                "shutdown_grace",
                "max_header_bytes",
                "max_body_bytes",
                "header_read_timeout",
                "write_timeout",
                "max_connections",
                "worker_threads",
                "trusted_proxies",
                "drain_delay",
            ],
        );
        let listen = self.socket(s, "listen", defaults.listen);
        let admin_listen = self.socket(s, "admin_listen", defaults.admin_listen);
        let admin_token = self.string(s, "admin_token", "a string", false);
        if !admin_listen.ip().is_loopback() && admin_token.as_deref().is_none_or(str::is_empty) {
            let at = self.entry(s, "admin_listen").map_or(at, |e| e.1);
            self.problem(
                at,
                join(&path, "admin_listen"),
                "the admin listener is bound to a non-loopback address, so it needs \
                 `admin_token` (its bearer token); set one or bind to 127.0.0.1",
            );
        }
        if listen == admin_listen && listen.port() != 0 {
            let at = self.entry(s, "admin_listen").map_or(at, |e| e.1);
            self.problem(
                at,
                join(&path, "admin_listen"),
                "the admin listener must not share `listen`'s address; pick another port",
            );
        }
        let trusted = self.nets(s, "trusted_proxies");
        let config = ServerConfig {
            listen,
            admin_listen,
            admin_token,
            shutdown_grace: self.duration(s, "shutdown_grace", defaults.shutdown_grace),
            max_header_bytes: self.bytes(s, "max_header_bytes", defaults.max_header_bytes),
            max_body_bytes: self.bytes(s, "max_body_bytes", defaults.max_body_bytes),
            header_read_timeout: self.duration(
                s,
                "header_read_timeout",
                defaults.header_read_timeout,
            ),
            write_timeout: self.duration(s, "write_timeout", defaults.write_timeout),
            max_connections: self.int(
                s,
                "max_connections",
                1,
                1_000_000,
                defaults.max_connections as i64,
            ) as usize,
            worker_threads: self.int(s, "worker_threads", 0, 1024, 0) as usize,
            trusted_proxies: trusted.clone().map(|t| t.0).unwrap_or_default(),
            drain_delay: self.duration(s, "drain_delay", defaults.drain_delay),
        };
        (config, trusted.is_some())
    }
}
