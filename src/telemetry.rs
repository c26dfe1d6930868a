//! Logging, service-manager notifications and the process's counters.
//!
//! Logs go to journald when our stderr is connected to it (systemd sets
//! `JOURNAL_STREAM`), otherwise to stderr without timestamps (journald and
//! procd's logd add their own) and without colours unless stderr is a
//! terminal. `RUST_LOG` selects levels; the default is `info`.
//! sd-notify calls are no-ops without `NOTIFY_SOCKET`, so the same binary runs
//! under systemd, procd or a shell.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber. Call once, from `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .without_time()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .init();
}

/// Tells the service manager something (READY=1, STOPPING=1, WATCHDOG=1).
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// How often to ping the systemd watchdog, if it is enabled (half its timeout).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Counters of the HTTP front; read by `/metrics` and the status API.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Responses by status class: 1xx..5xx at index 1..5.
    pub responses: [AtomicU64; 6],
    /// Content bytes sent in bodies.
    pub body_bytes: AtomicU64,
    /// Content requests served from this node's store.
    pub content_hits: AtomicU64,
    /// Content requests that found nothing.
    pub content_misses: AtomicU64,
    /// Content requests answered through the mesh (routed to another node).
    pub mesh_forwarded: AtomicU64,
    /// Routed requests from peers that this node passed on.
    pub mesh_relayed: AtomicU64,
    /// Routed requests refused: loop (request id seen) or hop limit.
    pub mesh_loops_refused: AtomicU64,
    /// Requests this node sent to origin servers on the internet (proxy).
    pub origin_fetches: AtomicU64,
}

impl HttpCounters {
    /// Counts one response.
    pub fn response(&self, status: u16) {
        let class = (status / 100).min(5) as usize;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}
