//! The supervisor: starts the subsystems bottom-up, owns the current
//! [`Config`] and applies reloads, and stops everything top-down.
//!
//! Start order: state dir → identity → store → content reader → listeners
//! (bound before READY=1, so a socket-activated client never races us) →
//! D-Bus (optional: never fails the start) → background tasks. Stop order:
//! stop accepting (and give the D-Bus name back) → drain in-flight requests
//! (up to [`GRACE`]) → background tasks → store close (flush counters,
//! checkpoint the WAL). [`run`] takes its shutdown trigger as a future so
//! tests can stop a daemon in-process (the mini-redis `server::run` shape).

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, App, NodeInfo};
use crate::cache::ContentReader;
use crate::config::{self, Config};
use crate::identity::Identity;
use crate::store::{self, StoreHandle};
use crate::telemetry;

/// Time in-flight requests get to finish on shutdown.
pub const GRACE: Duration = Duration::from_secs(8);
/// Time background tasks (a running scrub, timers) then get to stop. With
/// [`GRACE`] and the store close this stays below systemd's `TimeoutStopSec`
/// (15 s in our unit) and procd's `term_timeout` (15 s in our init script).
pub const TASK_GRACE: Duration = Duration::from_secs(3);
/// How often read counts are written to SQLite.
const HIT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Reload requests queued to the supervisor.
const RELOAD_CAP: usize = 8;

/// What a reload did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadOutcome {
    /// Settings applied now.
    pub applied: Vec<String>,
    /// Changed keys that only take effect after a restart.
    pub restart_required: Vec<&'static str>,
    /// URLs evicted to fit a smaller quota.
    pub evicted: Vec<String>,
}

type ReloadReply = oneshot::Sender<Result<ReloadOutcome, String>>;

/// Asks the supervisor to re-read the config file.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadReply>,
}

impl ReloadHandle {
    /// Re-reads and applies the config file; an invalid file is refused and
    /// the running config stays.
    pub async fn reload(&self) -> Result<ReloadOutcome, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| "the daemon is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the daemon is shutting down".to_string())?
    }
}

/// Where the config came from, so reloads read the same file the same way.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The file; `None` for an in-memory config (tests): reload then re-applies it.
    pub path: Option<PathBuf>,
    /// `--state-dir` given on the command line.
    pub state_dir_override: Option<PathBuf>,
}

impl Source {
    fn load(&self) -> Result<Option<Config>, config::ConfigError> {
        let Some(p) = &self.path else { return Ok(None) };
        let mut c = config::load(p)?;
        if let Some(d) = &self.state_dir_override {
            c.override_state_dir(d);
        }
        Ok(Some(c))
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    app: Arc<App>,
    store: StoreHandle,
    control_socket: PathBuf,
    ingress: CancellationToken,
    background: CancellationToken,
    servers: TaskTracker,
    tasks: TaskTracker,
    /// The D-Bus facade, when a bus took it.
    dbus: Option<crate::dbus::Dbus>,
}

impl Daemon {
    /// Starts a daemon: when this returns, every socket is bound.
    pub async fn start(cfg: Config, source: Source) -> anyhow::Result<Daemon> {
        let state_dir = cfg.node.state_dir.clone();
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating state_dir {}", state_dir.display()))?;
        restrict(&state_dir);
        let identity =
            Arc::new(Identity::load_or_create(&state_dir).context("loading the node key")?);
        let store = store::spawn(&state_dir, cfg.store.max_bytes.0, identity.node_id())
            .with_context(|| format!("opening the store in {}", state_dir.display()))?;
        let reader = ContentReader::new(store.clone(), cfg.store.memory_cache.0);
        let tcp = api::server::bind_tcp(&cfg.http.listen).await?;
        let unix = api::server::bind_unix(&cfg.http.control_socket).await?;
        let listen: Vec<SocketAddr> = tcp
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let (reload_tx, reload_rx) = mpsc::channel(RELOAD_CAP);
        let (ingress, background) = (CancellationToken::new(), CancellationToken::new());
        let (servers, tasks) = (TaskTracker::new(), TaskTracker::new());
        let c = &cfg.connectivity;
        let uplink = crate::connectivity::spawn(
            c.probes.clone(),
            crate::connectivity::Timing {
                interval: c.interval.0,
                retry_interval: c.retry_interval.0,
                down_after: c.down_after,
                timeout: c.timeout.0,
            },
            c.failover.then_some(c.fwmark),
            background.child_token(),
        );
        let (shaping, shaping_task) = crate::shaping::spawn(
            &cfg.shaping,
            &state_dir,
            uplink.clone(),
            background.child_token(),
        );
        tasks.spawn(async move {
            let _finished_or_panicked = shaping_task.await;
        });
        // stations heard on RF: the RF task counts them, the mesh task's
        // network mode reads them (rf-only)
        let (rf_stations_tx, rf_stations) = watch::channel(0usize);
        let mesh = crate::mesh::spawn(
            crate::mesh::MeshParams {
                uplink,
                rf_stations,
                cfg: cfg.clone(),
                identity: identity.clone(),
                store: store.clone(),
                http_listen: listen.clone(),
                cancel: background.child_token(),
            },
            &tasks,
        )
        .await?;
        let (analytics, analytics_task) = crate::analytics::spawn(
            &cfg.analytics,
            &state_dir,
            mesh.view.clone(),
            background.child_token(),
        );
        tasks.spawn(async move {
            let _finished_or_panicked = analytics_task.await;
        });
        // other stations' content requests, answered from the store
        let (rf_serve_tx, rf_serve_rx) = tokio::sync::mpsc::channel(8);
        let (rf, rf_task) = crate::rf::spawn(
            crate::rf::RfParams {
                cfg: cfg.rf.clone(),
                callsign: cfg.node.callsign.clone(),
                node_name: cfg.node_name(),
                node_id: identity.node_id(),
                http_port: routable_port(&listen),
                mesh: mesh.clone(),
                analytics: analytics.clone(),
                stations: rf_stations_tx,
                serve: Some(rf_serve_tx),
            },
            background.child_token(),
        );
        tasks.spawn(async move {
            let _finished_or_panicked = rf_task.await;
        });
        let app = Arc::new(App {
            analytics,
            rf,
            shaping,
            proxy: cfg.proxy.clone(),
            node: NodeInfo {
                name: cfg.node_name(),
                callsign: cfg.node.callsign.clone(),
                node_id: identity.node_id(),
            },
            store: store.clone(),
            reader: reader.clone(),
            reload: ReloadHandle { tx: reload_tx },
            counters: Default::default(),
            started: Instant::now(),
            listen: listen.clone(),
            mesh,
        });
        for l in tcp {
            servers.spawn(api::server::serve_tcp(
                l,
                app.clone(),
                ingress.child_token(),
                GRACE,
            ));
        }
        servers.spawn(api::server::serve_unix(
            unix,
            app.clone(),
            ingress.child_token(),
            GRACE,
        ));
        tasks.spawn(api::rf::serve(app.clone(), rf_serve_rx));
        let dbus = crate::dbus::start(&cfg.dbus, app.clone()).await;
        let (scrub_tx, scrub_rx) = watch::channel(cfg.store.scrub_interval.0);
        tasks.spawn(scrub_loop(reader, scrub_rx, background.child_token()));
        tasks.spawn(flush_loop(store.clone(), background.child_token()));
        if let Some(every) = telemetry::watchdog_interval() {
            tasks.spawn(watchdog_loop(every, background.child_token()));
        }
        let control_socket = cfg.http.control_socket.clone();
        tasks.spawn(supervise(
            cfg,
            source,
            Live {
                store: store.clone(),
                scrub: scrub_tx,
                shaping: app.shaping.clone(),
            },
            reload_rx,
            background.child_token(),
        ));
        tracing::info!(node = %app.node.name, node_id = %app.node.node_id, listen = ?listen, control = %control_socket.display(), "meshnode running");
        Ok(Daemon {
            app,
            store,
            control_socket,
            ingress,
            background,
            servers,
            tasks,
            dbus,
        })
    }

    /// The bound public addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.app.listen
    }

    /// The control socket path.
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    /// Reload requests (what SIGHUP does).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.app.reload.clone()
    }

    /// The store, for in-process tests and embedding.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Stops accepting, finishes in-flight requests, stops tasks, closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.ingress.cancel();
        if let Some(d) = self.dbus {
            d.stop().await;
        }
        self.servers.close();
        self.servers.wait().await; // each server drains for at most GRACE
        self.background.cancel();
        self.tasks.close();
        if tokio::time::timeout(GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        if let Err(e) = std::fs::remove_file(&self.control_socket) {
            tracing::debug!(error = %e, "control socket already gone");
        }
        self.store.close().await.context("closing the store")
    }
}

/// Runs a daemon until `shutdown` resolves; `hangups` yields on each SIGHUP.
pub async fn run(
    cfg: Config,
    source: Source,
    shutdown: impl Future,
    mut hangups: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let daemon = Daemon::start(cfg, source).await?;
    telemetry::notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let reload = daemon.reload_handle();
    let hup = async {
        while hangups.recv().await.is_some() {
            match reload.reload().await {
                Ok(o) => {
                    tracing::info!(applied = ?o.applied, restart_required = ?o.restart_required, "reloaded on SIGHUP")
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running configuration stays")
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = shutdown => {}
        _ = hup => {}
    }
    telemetry::notify(&[NotifyState::Stopping]);
    daemon.shutdown().await
}

/// The HTTP port other stations could reach this node on: that of the
/// first listener on a non-loopback address (beacons announce it).
fn routable_port(listen: &[SocketAddr]) -> Option<u16> {
    listen
        .iter()
        .find(|a| !a.ip().is_loopback())
        .map(SocketAddr::port)
}

/// The state dir holds the node's secret key: owner and group only.
fn restrict(dir: &Path) {
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not set state_dir mode 0750");
    }
}

/// What a reload can change in the running subsystems.
struct Live {
    store: StoreHandle,
    scrub: watch::Sender<Duration>,
    shaping: crate::shaping::Shaping,
}

async fn supervise(
    mut current: Config,
    source: Source,
    live: Live,
    mut requests: mpsc::Receiver<ReloadReply>,
    cancel: CancellationToken,
) {
    loop {
        let reply = tokio::select! {
            _ = cancel.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let outcome = match source.load() {
            Err(e) => Err(e.to_string()),
            Ok(new) => {
                let new = new.unwrap_or_else(|| current.clone());
                apply(&mut current, new, &live).await
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
        }
        if reply.send(outcome).is_err() {
            tracing::debug!("reload requester went away");
        }
    }
}

/// Applies what can change live from `new` to the running `current`. Keys
/// that need a restart keep their running values in `current`, so every later
/// reload still names them until the restart happens.
async fn apply(current: &mut Config, new: Config, live: &Live) -> Result<ReloadOutcome, String> {
    let Live {
        store,
        scrub,
        shaping,
    } = live;
    let mut out = ReloadOutcome {
        applied: Vec::new(),
        restart_required: current.restart_required(&new),
        evicted: Vec::new(),
    };
    if new.store.memory_cache != current.store.memory_cache {
        out.restart_required.push("store.memory_cache");
    }
    if new.store.max_bytes != current.store.max_bytes {
        out.evicted = store
            .set_max_bytes(new.store.max_bytes.0)
            .await
            .map_err(|e| format!("applying store.max_bytes failed: {e}"))?;
        current.store.max_bytes = new.store.max_bytes;
        out.applied
            .push(format!("store.max_bytes = {}", new.store.max_bytes));
    }
    if new.store.scrub_interval != current.store.scrub_interval {
        scrub
            .send(new.store.scrub_interval.0)
            .map_err(|_| "the scrub task has stopped".to_string())?;
        current.store.scrub_interval = new.store.scrub_interval;
        out.applied.push(format!(
            "store.scrub_interval = {:?}",
            new.store.scrub_interval.0
        ));
    }
    if new.shaping != current.shaping {
        let how = shaping
            .reconfigure(new.shaping.clone())
            .await
            .map_err(|e| format!("applying [shaping] failed: {e}"))?;
        current.shaping = new.shaping;
        out.applied.push(match how {
            crate::shaping::Reconfigured::Restarted => "shaping (restarted)".into(),
            _ => "shaping".into(),
        });
    }
    Ok(out)
}

async fn scrub_loop(
    reader: ContentReader,
    mut every: watch::Receiver<Duration>,
    cancel: CancellationToken,
) {
    loop {
        let wait = *every.borrow_and_update();
        let tick = async {
            if wait.is_zero() {
                std::future::pending::<()>().await // store.scrub_interval = "0s": scrub off
            }
            tokio::time::sleep(wait).await
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.changed() => continue,
            _ = tick => {
                let r = reader.scrub(&cancel).await;
                tracing::info!(checked = r.checked, bytes = r.bytes, quarantined = r.quarantined.len(), interrupted = r.interrupted, "scrub finished");
            }
        }
    }
}

async fn flush_loop(store: StoreHandle, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(HIT_FLUSH_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = store.flush_hits().await {
                    tracing::warn!(error = %e, "could not persist access counts");
                }
            }
        }
    }
}

async fn watchdog_loop(every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => telemetry::notify(&[NotifyState::Watchdog]),
        }
    }
}
