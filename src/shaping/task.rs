//! The shaping task: the one owner of the kernel's shaping state, the
//! client table and the usage database.
//!
//! Every `scan_interval` it reads the neighbour table of the LAN interfaces
//! (clients appear there), reads the classes' byte counters (usage: the LAN
//! interface's classes count downloads, its IFB's classes uploads), applies
//! quotas, plans both trees ([`super::share::tree`]) and applies the
//! difference to what it last applied ([`super::plan::diff`]): a client
//! joining, leaving or crossing its quota changes only its own class, its
//! filter and the other classes' rates, in place.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::autorate::{Baseline, Direction, Sample};
use super::plan::{Dir, Tree, diff};
use super::quota::{Quota, Usage};
use super::share::{ClientShape, Minors, client_share};
use super::tc::{Tc, TcError};
use super::usage::{Row, UsageDb};
use crate::config::ShapingConfig;

/// Bytes per scan below which a client counts as idle.
const IDLE_BYTES: u64 = 16 * 1024;

/// Rows are written at least this often (and at stop).
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// The shaping state as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `[shaping] enabled`.
    pub enabled: bool,
    /// Classes are in the kernel.
    pub active: bool,
    /// Why shaping is off, when it is.
    pub reason: Option<String>,
    /// Shaped LAN interfaces.
    pub interfaces: Vec<String>,
    /// Total download rate, bits per second.
    pub downlink_bps: u64,
    /// Total upload rate, bits per second.
    pub uplink_bps: u64,
    /// Congestion and autorate.
    pub congestion: Congestion,
    /// Every client with usage on record, active ones first.
    pub clients: Vec<ClientStatus>,
}

/// Congestion as the last scan saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Congestion {
    /// Downloads: queues building beyond this router under load.
    pub down_congested: bool,
    /// Uploads: the same.
    pub up_congested: bool,
    /// meshnode's download queues are dropping or holding packets (demand
    /// above the shaped rate: shaping at work).
    pub down_saturated: bool,
    /// The same for uploads.
    pub up_saturated: bool,
    /// Download rate shaped to now, bits per second (autorate).
    pub down_shaped_bps: u64,
    /// Upload rate shaped to now, bits per second.
    pub up_shaped_bps: u64,
    /// The last uplink probe RTT, ms.
    pub rtt_ms: Option<f64>,
    /// Its baseline, ms.
    pub baseline_ms: Option<f64>,
    /// Samples found congested since start.
    pub congested_samples: u64,
}

/// One client (`GET /api/v1/clients/{ip}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientStatus {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Has a class now.
    pub active: bool,
    /// Over quota: held at `[shaping] throttle`.
    pub throttled: bool,
    /// Counted bytes.
    pub usage: Usage,
    /// Quotas that apply (set for it, or the configured ones).
    pub quota: Quota,
    /// Whether `quota` was set for this client (`meshctl quota`).
    pub quota_set: bool,
    /// Bytes left before a quota bites; none when no quota applies.
    pub remaining: Option<u64>,
    /// Guaranteed download rate now, bits per second.
    pub share_down_bps: u64,
    /// Download ceiling now, bits per second.
    pub ceil_down_bps: u64,
    /// Guaranteed upload rate now, bits per second.
    pub share_up_bps: u64,
    /// Upload ceiling now, bits per second.
    pub ceil_up_bps: u64,
    /// Measured over the last scan, bits per second.
    pub rate_down_bps: u64,
    /// Measured over the last scan, bits per second.
    pub rate_up_bps: u64,
}

/// Commands to the task.
#[derive(Debug)]
enum Cmd {
    SetQuota(
        Ipv4Addr,
        Option<Quota>,
        oneshot::Sender<Result<ClientStatus, String>>,
    ),
    Reconfigure(Box<ShapingConfig>, oneshot::Sender<Reconfigured>),
}

/// What [`Shaping::reconfigure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// Nothing differed.
    Unchanged,
    /// Applied in place: the classes were re-rated, the clients kept their
    /// classes and counters.
    InPlace,
    /// Shaping was started, stopped, or rebuilt (the interfaces changed).
    Restarted,
}

/// Handle on the shaping task.
#[derive(Debug, Clone)]
pub struct Shaping {
    tx: mpsc::Sender<Cmd>,
    view: Arc<RwLock<Status>>,
    /// Ticked by the task after it wrote `view`.
    changes: Arc<watch::Sender<()>>,
}

impl Shaping {
    /// The current state.
    pub fn status(&self) -> Status {
        self.view.read().expect("lock").clone()
    }

    /// One client's state.
    pub fn client(&self, ip: Ipv4Addr) -> Option<ClientStatus> {
        self.view
            .read()
            .expect("lock")
            .clients
            .iter()
            .find(|c| c.ip == ip)
            .cloned()
    }

    /// Sets (`Some`) or clears (`None`: the configured ones apply again) a
    /// client's quotas.
    pub async fn set_quota(&self, ip: Ipv4Addr, q: Option<Quota>) -> Result<ClientStatus, String> {
        let (r, rx) = oneshot::channel();
        self.tx
            .send(Cmd::SetQuota(ip, q, r))
            .await
            .map_err(|_| "the shaping task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the shaping task has stopped".to_string())?
    }

    /// Applies a new `[shaping]` section (a config reload). Rates, shares,
    /// quotas, priority and exempt lists, timings and autorate change in
    /// place; turning shaping on or off or changing the interfaces
    /// rebuilds it (usage is saved first and carries on).
    pub async fn reconfigure(&self, cfg: ShapingConfig) -> Result<Reconfigured, String> {
        let (r, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Reconfigure(Box::new(cfg), r))
            .await
            .map_err(|_| "the shaping task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the shaping task has stopped".to_string())
    }

    /// Wakes whenever the state (clients, usage, throttling, why it is off)
    /// may have changed: after every scan and every command, and when
    /// starting failed.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

/// Most time between attempts to start shaping when it could not start
/// (an interface missing, e.g. a bridge that netifd creates later; no
/// CAP_NET_ADMIN): five scan intervals, at least 1 s, at most this.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Starts the shaping task. When shaping cannot run (disabled, no
/// CAP_NET_ADMIN, an interface missing) the task records why, says so once
/// in the log, and tries again every few seconds (at most [`RETRY_MAX`])
/// while enabled. It
/// stops, removing every qdisc, class and IFB device of ours, when `stop`
/// is cancelled; the returned join handle finishes after that.
pub fn spawn(
    cfg: &ShapingConfig,
    state_dir: &Path,
    uplink: tokio::sync::watch::Receiver<crate::connectivity::Uplink>,
    stop: CancellationToken,
) -> (Shaping, tokio::task::JoinHandle<()>) {
    let view = Arc::new(RwLock::new(Status {
        reason: Some("starting".into()),
        ..Default::default()
    }));
    let (tx, rx) = mpsc::channel(16);
    let changes = Arc::new(watch::Sender::new(()));
    let sup = Supervisor {
        cfg: cfg.clone(),
        state_dir: state_dir.to_path_buf(),
        uplink,
        view: view.clone(),
        changes: changes.clone(),
        said: None,
    };
    let join = tokio::spawn(sup.run(rx, stop));
    (Shaping { tx, view, changes }, join)
}

/// Starts, restarts and stops the [`Task`] as the configuration says and
/// the machine allows; the commands go through it.
struct Supervisor {
    cfg: ShapingConfig,
    state_dir: std::path::PathBuf,
    uplink: tokio::sync::watch::Receiver<crate::connectivity::Uplink>,
    view: Arc<RwLock<Status>>,
    changes: Arc<watch::Sender<()>>,
    /// The last reason logged for shaping being off, so it is said once.
    said: Option<String>,
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, stop: CancellationToken) {
        let mut task = self.start().await;
        let (mut tick, mut retry) = self.timers();
        loop {
            self.changes.send_replace(());
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick(), if task.is_some() => {
                    let t = task.as_mut().expect("running");
                    t.scan().await;
                    if let Some(why) = t.lost.take() {
                        task.take().expect("running").teardown().await;
                        self.off(why);
                    }
                }
                _ = retry.tick(), if task.is_none() && self.cfg.enabled => {
                    task = self.start().await;
                }
                Some(cmd) = rx.recv() => match cmd {
                    Cmd::SetQuota(ip, q, reply) => {
                        let r = match task.as_mut() {
                            Some(t) => Ok(t.set_quota(ip, q).await),
                            None => Err(format!("shaping is off: {}", self.reason())),
                        };
                        let _gone = reply.send(r);
                    }
                    Cmd::Reconfigure(new, reply) => {
                        let r = self.reconfigure(&mut task, *new).await;
                        (tick, retry) = self.timers();
                        let _gone = reply.send(r);
                    }
                },
            }
        }
        if let Some(t) = task {
            t.teardown().await;
        }
    }

    /// The scan tick and the retry tick (whose first tick is one period away).
    fn timers(&self) -> (tokio::time::Interval, tokio::time::Interval) {
        let mut scan = tokio::time::interval(self.cfg.scan_interval.0);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.retry_every();
        let mut retry = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (scan, retry)
    }

    fn retry_every(&self) -> Duration {
        (self.cfg.scan_interval.0 * 5).clamp(Duration::from_secs(1), RETRY_MAX)
    }

    async fn reconfigure(&mut self, task: &mut Option<Task>, new: ShapingConfig) -> Reconfigured {
        if new == self.cfg {
            return Reconfigured::Unchanged;
        }
        let rebuild = new.enabled != self.cfg.enabled || new.interfaces != self.cfg.interfaces;
        self.cfg = new;
        match task {
            Some(t) if !rebuild => {
                t.cfg = self.cfg.clone();
                {
                    let mut v = self.view.write().expect("lock");
                    v.downlink_bps = self.cfg.downlink.0;
                    v.uplink_bps = self.cfg.uplink.0;
                }
                t.scan().await;
                tracing::info!("shaping reconfigured in place");
                Reconfigured::InPlace
            }
            _ => {
                if let Some(t) = task.take() {
                    t.teardown().await;
                }
                self.said = None;
                *task = self.start().await;
                Reconfigured::Restarted
            }
        }
    }

    /// Starts a task if the configuration wants one and the machine allows;
    /// otherwise records why not.
    async fn start(&mut self) -> Option<Task> {
        {
            let mut v = self.view.write().expect("lock");
            *v = Status {
                enabled: self.cfg.enabled,
                interfaces: self.cfg.interfaces.clone(),
                downlink_bps: self.cfg.downlink.0,
                uplink_bps: self.cfg.uplink.0,
                reason: v.reason.clone(),
                ..Default::default()
            };
        }
        if !self.cfg.enabled {
            self.off("disabled in the configuration ([shaping] enabled = false)".into());
            return None;
        }
        let db = UsageDb::open(&self.state_dir).and_then(|db| db.load().map(|rows| (db, rows)));
        let (db, rows) = match db {
            Ok(x) => x,
            Err(e) => {
                self.off(format!("cannot open the usage database: {e}"));
                return None;
            }
        };
        match Task::start(
            self.cfg.clone(),
            self.view.clone(),
            db,
            rows,
            self.uplink.clone(),
        )
        .await
        {
            Ok(mut t) => {
                self.said = None;
                self.view.write().expect("lock").reason = None;
                t.scan().await;
                Some(t)
            }
            Err(reason) => {
                self.off(reason);
                None
            }
        }
    }

    /// Records why shaping is off; logs it when the reason is new.
    fn off(&mut self, reason: String) {
        if self.said.as_ref() != Some(&reason) {
            if self.cfg.enabled {
                let every = self.retry_every();
                tracing::warn!("shaping is off: {reason}; trying again every {every:?}");
            } else {
                tracing::info!("shaping is off: {reason}");
            }
            self.said = Some(reason.clone());
        }
        let mut v = self.view.write().expect("lock");
        v.active = false;
        v.clients.clear();
        v.reason = Some(reason);
    }

    fn reason(&self) -> String {
        self.view
            .read()
            .expect("lock")
            .reason
            .clone()
            .unwrap_or_else(|| "shaping is off".into())
    }
}

/// A LAN interface and its IFB.
#[derive(Debug)]
struct Iface {
    name: String,
    index: u32,
    ifb: String,
    ifb_index: u32,
    /// What we last applied: downloads (LAN egress), uploads (IFB egress).
    down: Option<Tree>,
    up: Option<Tree>,
}

#[derive(Debug)]
struct Client {
    iface: u32,
    minor: u16,
    last_down: Option<u64>,
    last_up: Option<u64>,
    last_active: Instant,
    rate_down: u64,
    rate_up: u64,
}

struct Task {
    cfg: ShapingConfig,
    view: Arc<RwLock<Status>>,
    tc: Tc,
    neigh: rtnetlink::Handle,
    ifaces: Vec<Iface>,
    /// Written on the blocking pool (SQLite blocks); the mutex only hands
    /// it there, this task is its one user.
    db: Arc<std::sync::Mutex<UsageDb>>,
    rows: BTreeMap<Ipv4Addr, Row>,
    clients: BTreeMap<Ipv4Addr, Client>,
    minors: Minors,
    last_scan: Instant,
    last_save: Instant,
    uplink: tokio::sync::watch::Receiver<crate::connectivity::Uplink>,
    last_probe: Option<i64>,
    baseline: Baseline,
    down_rate: Direction,
    up_rate: Direction,
    /// Last root-class byte and qdisc drop counters, by (ifindex, dir).
    roots: HashMap<(u32, bool), (u64, u64)>,
    congested_samples: u64,
    /// Set when an interface went away (ENODEV): the supervisor tears this
    /// task down and starts again when the interface is back.
    lost: Option<String>,
}

fn wall_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Task {
    async fn start(
        cfg: ShapingConfig,
        view: Arc<RwLock<Status>>,
        db: UsageDb,
        rows: BTreeMap<Ipv4Addr, Row>,
        uplink: tokio::sync::watch::Receiver<crate::connectivity::Uplink>,
    ) -> Result<Task, String> {
        let tc = Tc::connect().await.map_err(|e| e.to_string())?;
        let (conn, neigh, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        tokio::spawn(conn);
        // every interface must be there before anything is changed
        let mut indexes = Vec::new();
        for name in &cfg.interfaces {
            let index = tc
                .ifindex(name)
                .await
                .map_err(|e| format!("interface {name}: {e}"))?;
            indexes.push(index);
        }
        let mut ifaces: Vec<Iface> = Vec::new();
        let mut minors = Minors::default();
        for (i, (name, index)) in cfg.interfaces.iter().zip(indexes).enumerate() {
            let ifb = format!("mnifb{i}");
            let set_up = async {
                let ifb_index = tc.ensure_ifb(&ifb).await.map_err(|e| {
                    if e.errno() == Some(nix::errno::Errno::EPERM) {
                        format!("no CAP_NET_ADMIN to shape {name} ({e})")
                    } else {
                        format!("creating {ifb} for {name}'s uploads: {e}")
                    }
                })?;
                tc.redirect_ingress(index, ifb_index)
                    .await
                    .map_err(|e| format!("redirecting {name}'s ingress to {ifb}: {e}"))?;
                // adopt our classes from an earlier run, so counters carry on
                let down = tc
                    .read_tree(index)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let up = tc
                    .read_tree(ifb_index)
                    .await
                    .map_err(|e| format!("{ifb}: {e}"))?;
                Ok::<_, String>((ifb_index, down, up))
            };
            let (ifb_index, down, up) = match set_up.await {
                Ok(x) => x,
                Err(e) => {
                    // leave nothing half made behind
                    for (idx, ifb) in ifaces
                        .iter()
                        .map(|i| (i.index, i.ifb.clone()))
                        .chain([(index, ifb.clone())])
                    {
                        let _ = tc.remove(idx).await;
                        let _ = tc.delete_link(&ifb).await;
                    }
                    return Err(e);
                }
            };
            if let Some(t) = &down {
                for f in &t.filters {
                    if let Some(ip) = f.key.ip() {
                        minors.adopt(ip, f.class);
                    }
                }
            }
            ifaces.push(Iface {
                name: name.clone(),
                index,
                ifb,
                ifb_index,
                down,
                up,
            });
        }
        tracing::info!(interfaces = ?cfg.interfaces, downlink = %cfg.downlink, uplink = %cfg.uplink, "shaping on");
        let now = Instant::now();
        Ok(Task {
            cfg,
            view,
            tc,
            neigh,
            ifaces,
            db: Arc::new(std::sync::Mutex::new(db)),
            rows,
            clients: BTreeMap::new(),
            minors,
            last_scan: now,
            last_save: now,
            uplink,
            last_probe: None,
            baseline: Baseline::default(),
            down_rate: Direction::default(),
            up_rate: Direction::default(),
            roots: HashMap::new(),
            congested_samples: 0,
            lost: None,
        })
    }

    async fn set_quota(&mut self, ip: Ipv4Addr, q: Option<Quota>) -> ClientStatus {
        self.rows.entry(ip).or_default().quota = q;
        self.save().await;
        self.scan().await;
        self.client_status(ip)
    }

    /// Saves usage and removes everything of ours from the kernel.
    async fn teardown(mut self) {
        self.save().await;
        for i in &self.ifaces {
            for (what, idx) in [(&i.name, i.index), (&i.ifb, i.ifb_index)] {
                match self.tc.remove(idx).await {
                    Err(e) if e.errno() != Some(nix::errno::Errno::ENODEV) => {
                        tracing::warn!(interface = %what, error = %e, "removing shaping failed");
                    }
                    _ => {}
                }
            }
            if let Err(e) = self.tc.delete_link(&i.ifb).await {
                tracing::warn!(interface = %i.ifb, error = %e, "removing the IFB device failed");
            }
        }
        let mut v = self.view.write().expect("lock");
        v.active = false;
        v.clients.clear();
        tracing::info!("shaping removed");
    }

    fn quota_of(&self, ip: &Ipv4Addr) -> (Quota, bool) {
        match self.rows.get(ip).and_then(|r| r.quota) {
            Some(q) => (q, true),
            None => (
                Quota {
                    daily: self.cfg.daily_quota.map(|b| b.0),
                    monthly: self.cfg.monthly_quota.map(|b| b.0),
                },
                false,
            ),
        }
    }

    /// Reads the neighbour tables: IPv4 neighbours on our interfaces that
    /// the kernel considers present, with whether they are in active use.
    async fn neighbours(&self) -> Vec<(u32, Ipv4Addr, bool)> {
        let mut out = Vec::new();
        let mut dump = self.neigh.neighbours().get().execute();
        loop {
            match dump.try_next().await {
                Ok(Some(m)) => {
                    let idx = m.header.ifindex;
                    if !self.ifaces.iter().any(|i| i.index == idx) {
                        continue;
                    }
                    // REACHABLE, DELAY, PROBE: packets are going to it now;
                    // STALE, PERMANENT: it was there
                    let busy = match m.header.state {
                        NeighbourState::Reachable
                        | NeighbourState::Delay
                        | NeighbourState::Probe => true,
                        NeighbourState::Stale | NeighbourState::Permanent => false,
                        _ => continue,
                    };
                    for a in &m.attributes {
                        if let NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) = a {
                            out.push((idx, *ip, busy));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the neighbour table failed");
                    break;
                }
            }
        }
        out
    }

    async fn scan(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_scan).as_secs_f64().max(0.001);
        self.last_scan = now;
        let wall = wall_secs();
        // an interface deleted (or deleted and made again: a new index)
        // takes our qdiscs with it; start over when it is back
        for i in &self.ifaces {
            for (name, index) in [(&i.name, i.index), (&i.ifb, i.ifb_index)] {
                match self.tc.ifindex(name).await {
                    Ok(now) if now == index => {}
                    Ok(_) => self.lost = Some(format!("interface {name} was made again")),
                    Err(TcError::NoSuchLink { .. }) => {
                        self.lost = Some(format!("interface {name} went away"))
                    }
                    Err(e) => {
                        tracing::debug!(interface = %name, error = %e, "looking up the interface failed")
                    }
                }
            }
        }
        if self.lost.is_some() {
            return;
        }
        // clients come with the neighbour table
        for (iface, ip, busy) in self.neighbours().await {
            if self.cfg.exempt.contains(&ip) || self.cfg.priority_hosts.contains(&ip) {
                continue;
            }
            if let Some(c) = self.clients.get_mut(&ip) {
                if busy {
                    c.last_active = now;
                }
                continue;
            }
            if !busy {
                continue; // a stale entry alone does not make a client
            }
            // a class adopted from an earlier run has counted bytes already
            // (its first reading is the baseline); a new one starts at zero
            let adopted = self.minors.get(&ip).is_some();
            let Some(minor) = self.minors.get_or_assign(ip) else {
                tracing::warn!(client = %ip, "no class left for a new client");
                continue;
            };
            tracing::info!(client = %ip, class = minor, "client joined");
            let baseline = (!adopted).then_some(0);
            self.clients.insert(
                ip,
                Client {
                    iface,
                    minor,
                    last_down: baseline,
                    last_up: baseline,
                    last_active: now,
                    rate_down: 0,
                    rate_up: 0,
                },
            );
        }
        // usage from the class counters
        let mut down: HashMap<(u32, u16), u64> = HashMap::new();
        let mut up: HashMap<(u32, u16), u64> = HashMap::new();
        for i in &self.ifaces {
            for (idx, map) in [(i.index, &mut down), (i.ifb_index, &mut up)] {
                match self.tc.class_stats(idx).await {
                    Ok(stats) => {
                        for s in stats {
                            map.insert((i.index, s.minor), s.bytes);
                        }
                    }
                    Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV) => {
                        self.lost = Some(format!("interface {} went away", i.name));
                    }
                    Err(e) => {
                        tracing::debug!(interface = %i.name, error = %e, "reading class counters failed")
                    }
                }
            }
        }
        for (ip, c) in self.clients.iter_mut() {
            let d = down.get(&(c.iface, c.minor)).copied();
            let u = up.get(&(c.iface, c.minor)).copied();
            let dd = match (c.last_down, d) {
                (Some(a), Some(b)) => super::quota::delta(a, b),
                _ => 0,
            };
            let du = match (c.last_up, u) {
                (Some(a), Some(b)) => super::quota::delta(a, b),
                _ => 0,
            };
            c.last_down = d.or(c.last_down);
            c.last_up = u.or(c.last_up);
            c.rate_down = (dd as f64 * 8.0 / dt) as u64;
            c.rate_up = (du as f64 * 8.0 / dt) as u64;
            // a few stray packets (retransmissions, ARP-driven probes) do
            // not keep a class: real use moves more than that
            if dd + du > IDLE_BYTES {
                c.last_active = now;
            }
            self.rows.entry(*ip).or_default().usage.add(wall, du, dd);
        }
        for r in self.rows.values_mut() {
            r.usage.roll(wall);
        }
        // clients idle for long enough give their class back
        let idle = self.cfg.idle_after.0;
        let gone: Vec<Ipv4Addr> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_active) > idle)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            self.clients.remove(&ip);
            self.minors.release(&ip);
            tracing::info!(client = %ip, "client left");
        }
        self.congestion(&down, &up, dt).await;
        self.apply().await;
        if now.duration_since(self.last_save) >= SAVE_EVERY {
            self.save().await;
        }
        self.publish();
    }

    fn shapes(&self, iface: u32) -> Vec<ClientShape> {
        self.clients
            .iter()
            .filter(|(_, c)| c.iface == iface)
            .map(|(ip, c)| {
                let (q, _) = self.quota_of(ip);
                let throttled = self.rows.get(ip).is_some_and(|r| r.usage.over(&q));
                ClientShape {
                    ip: *ip,
                    minor: c.minor,
                    throttled,
                }
            })
            .collect()
    }

    async fn apply(&mut self) {
        let mut ok = true;
        for k in 0..self.ifaces.len() {
            let shapes = self.shapes(self.ifaces[k].index);
            let down = super::share::tree(&self.cfg, Dir::Dst, self.link(true), &shapes);
            let up = super::share::tree(&self.cfg, Dir::Src, self.link(false), &shapes);
            for (is_down, want) in [(true, down), (false, up)] {
                let i = &self.ifaces[k];
                let (idx, have, name) = if is_down {
                    (i.index, &i.down, i.name.clone())
                } else {
                    (i.ifb_index, &i.up, i.ifb.clone())
                };
                let ops = diff(&want, have.as_ref());
                if ops.is_empty() {
                    continue;
                }
                let now = match self.tc.apply(idx, &ops).await {
                    Ok(()) => Some(want),
                    Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV) => {
                        self.lost = Some(format!("interface {name} went away"));
                        return;
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(interface = %name, error = %e, "applying the shaping tree failed; reading it back");
                        self.tc.read_tree(idx).await.ok().flatten()
                    }
                };
                let i = &mut self.ifaces[k];
                *(if is_down { &mut i.down } else { &mut i.up }) = now;
            }
        }
        let mut v = self.view.write().expect("lock");
        v.active = ok;
        v.reason =
            (!ok).then(|| "the kernel refused part of the shaping tree (see the log)".into());
    }

    /// The rate a direction is shaped to now, bytes per second: the
    /// configured one times autorate's factor.
    fn link(&self, down: bool) -> u64 {
        let (cfg, d) = if down {
            (self.cfg.downlink, &self.down_rate)
        } else {
            (self.cfg.uplink, &self.up_rate)
        };
        (cfg.bytes_per_sec() as f64 * d.factor) as u64
    }

    /// Feeds autorate: the uplink probes' newest RTT, each direction's
    /// throughput through our root classes, our queues' drops and backlog.
    async fn congestion(
        &mut self,
        down: &HashMap<(u32, u16), u64>,
        up: &HashMap<(u32, u16), u64>,
        dt: f64,
    ) {
        let rtt = {
            let u = self.uplink.borrow();
            if u.checked_ms.is_some() && u.checked_ms != self.last_probe {
                self.last_probe = u.checked_ms;
                u.probes
                    .iter()
                    .filter(|p| p.ok)
                    .filter_map(|p| p.ms)
                    .min_by(f64::total_cmp)
            } else {
                None
            }
        };
        let rise = rtt.map(|rtt| {
            let base = self.baseline.update(rtt).unwrap_or(rtt);
            Duration::from_secs_f64(((rtt - base) / 1e3).max(0.0))
        });
        let mut samples = [Sample::default(), Sample::default()];
        for i in &self.ifaces {
            for (k, idx, map) in [(0, i.index, down), (1, i.ifb_index, up)] {
                let bytes = map
                    .get(&(i.index, super::share::ROOT))
                    .copied()
                    .unwrap_or(0);
                let (drops, backlog) = match self.tc.qdisc_stats(idx).await {
                    Ok(Some(q)) => (u64::from(q.drops), u64::from(q.backlog_bytes)),
                    _ => (0, 0),
                };
                let (b0, d0) = self
                    .roots
                    .insert((idx, k == 0), (bytes, drops))
                    .unwrap_or((bytes, drops));
                samples[k].rate += super::quota::delta(b0, bytes) as f64 / dt;
                samples[k].drops += super::quota::delta(d0, drops);
                samples[k].backlog += backlog;
            }
        }
        let delay = self.cfg.congestion_delay.0;
        for (k, down) in [(0usize, true), (1, false)] {
            let shaped = self.link(down) as f64;
            let s = Sample {
                shaped,
                ..samples[k]
            };
            let dir = if down {
                &mut self.down_rate
            } else {
                &mut self.up_rate
            };
            let was = dir.congested;
            let mut d = dir.clone();
            d.update(s, rise, delay);
            if !self.cfg.autorate {
                d.factor = 1.0;
            }
            if d.congested {
                self.congested_samples += 1;
            }
            if d.congested != was {
                let what = if down { "downlink" } else { "uplink" };
                if d.congested {
                    tracing::warn!(
                        direction = what,
                        rtt_rise_ms = rise.map_or(0.0, |r| r.as_secs_f64() * 1e3),
                        "congestion: queues are building beyond this router; lowering the shaped rate"
                    );
                } else {
                    tracing::info!(direction = what, factor = d.factor, "congestion cleared");
                }
            }
            *dir = d;
        }
        let c = Congestion {
            down_congested: self.down_rate.congested,
            up_congested: self.up_rate.congested,
            down_saturated: self.down_rate.saturated,
            up_saturated: self.up_rate.saturated,
            down_shaped_bps: self.link(true) * 8,
            up_shaped_bps: self.link(false) * 8,
            rtt_ms: rtt.or(self.view.read().expect("lock").congestion.rtt_ms),
            baseline_ms: self.baseline.get(),
            congested_samples: self.congested_samples,
        };
        self.view.write().expect("lock").congestion = c;
    }

    fn client_status(&self, ip: Ipv4Addr) -> ClientStatus {
        let (quota, quota_set) = self.quota_of(&ip);
        let usage = self.rows.get(&ip).map(|r| r.usage).unwrap_or_default();
        let c = self.clients.get(&ip);
        let throttled = usage.over(&quota);
        let n = c.map_or(0, |c| {
            self.clients.values().filter(|o| o.iface == c.iface).count()
        });
        let (sd, su) = if c.is_some() {
            (
                client_share(&self.cfg, self.link(true), n, throttled),
                client_share(&self.cfg, self.link(false), n, throttled),
            )
        } else {
            Default::default()
        };
        ClientStatus {
            ip,
            active: c.is_some(),
            throttled,
            usage,
            quota,
            quota_set,
            remaining: usage.remaining(&quota),
            share_down_bps: sd.rate * 8,
            ceil_down_bps: sd.ceil * 8,
            share_up_bps: su.rate * 8,
            ceil_up_bps: su.ceil * 8,
            rate_down_bps: c.map_or(0, |c| c.rate_down),
            rate_up_bps: c.map_or(0, |c| c.rate_up),
        }
    }

    fn publish(&self) {
        let mut list: Vec<ClientStatus> = self
            .rows
            .keys()
            .chain(self.clients.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|ip| self.client_status(ip))
            .collect();
        list.sort_by_key(|c| (!c.active, c.ip));
        self.view.write().expect("lock").clients = list;
    }

    async fn save(&mut self) {
        self.last_save = Instant::now();
        let (db, rows) = (self.db.clone(), self.rows.clone());
        let r = tokio::task::spawn_blocking(move || db.lock().expect("lock").save(&rows)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "saving client usage failed"),
            Err(e) => tracing::warn!(error = %e, "saving client usage failed"),
        }
    }
}
