//! The mesh task itself (see the module docs of [`crate::mesh`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::catalog_digest as digest;
use super::client::MeshClient;
use super::links::{self, ModeState, Subnets};
use super::replicate::should_hold;
use super::{CMD_CAP, CatalogSummary, Cmd, Mesh, MeshView, PeerStatus};
use crate::catalog::{Access, ContentUrl, Priority};
use crate::config::Config;
use crate::connectivity::{Mode, Uplink};
use crate::discovery::bootstrap::{Discover, Register, Registry};
use crate::discovery::mdns::{self, Mdns, MdnsConfig};
use crate::gossip::proto::{self, Gossip, InEvent, OutEvent};
use crate::gossip::wire::{MAX_ADDRS, MAX_DATAGRAM, PeerInfo};
use crate::identity::Identity;
use crate::node::NodeId;
use crate::routing::{LinkReport, Penalties, RouteTable, Topology};
use crate::store::now_ms as wall_ms;
use crate::store::{MeshSave, PeerRow, PublishMeta, StoreError, StoreHandle};
use crate::sync::catalog::{Insert, MeshCatalog};
use crate::sync::recon::{self, Id, Role, ShortId, short};
use crate::sync::record::{self, Content, Record, Signed};
use crate::sync::transfer::{self, Want};

/// Transfers running at once; the rest wait in priority order.
const TRANSFERS_MAX: usize = 2;
/// Short ids per `records/get` request, records per `records/put`.
const RECORD_BATCH: usize = 512;
/// Rounds before an exchange is abandoned (a healthy one needs ~5).
const RECON_ROUNDS_MAX: usize = 32;
/// Every URL is re-checked this often (retries failed transfers).
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Own changes closer together than this are announced in one message (the
/// first goes out at once; a burst of publishes costs one flood per window).
const ANNOUNCE_WINDOW: Duration = Duration::from_millis(100);
/// The peer book is written this often.
const BOOK_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// What the mesh task needs.
#[derive(Debug)]
pub struct MeshParams {
    /// The configuration (discovery, gossip and sync sections).
    pub cfg: Config,
    /// The node key.
    pub identity: Arc<Identity>,
    /// The store.
    pub store: StoreHandle,
    /// The bound public HTTP listeners; gossip binds UDP on the first one's
    /// address and port.
    pub http_listen: Vec<SocketAddr>,
    /// The uplink, from [`crate::connectivity::spawn`].
    pub uplink: watch::Receiver<Uplink>,
    /// Stations heard on RF lately (from [`crate::rf::spawn`]): with no
    /// uplink and no IP neighbour, one of them makes the mode `rf-only`.
    pub rf_stations: watch::Receiver<usize>,
    /// Stops the task.
    pub cancel: CancellationToken,
}

/// Links are re-measured and LINK_STATE refreshed at least this often.
const LINKS_INTERVAL: Duration = Duration::from_secs(2);

/// Results of the task's own background jobs.
#[derive(Debug)]
enum Internal {
    Records {
        recs: Vec<Signed>,
        from_recon: bool,
    },
    Rtt(SocketAddr, Duration),
    Dial(Vec<SocketAddr>),
    /// Records a reconciliation found missing: fetch them from this peer.
    Fetch(SocketAddr, Vec<ShortId>),
    ReconDone {
        bytes: usize,
    },
    TransferDone {
        target: String,
        result: Result<transfer::Report, String>,
        essential: bool,
    },
}

#[derive(Debug, Clone)]
struct Job {
    target: String,
    rec: Arc<Signed>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Perf {
    rtt_ms: Option<f64>,
    bw_bps: Option<f64>,
}

/// Starts the mesh task; the UDP socket is bound when this returns.
pub async fn spawn(p: MeshParams, tasks: &TaskTracker) -> anyhow::Result<Mesh> {
    let me = p.identity.node_id();
    let udp_addr = *p.http_listen.first().context("no HTTP listener")?;
    let udp = UdpSocket::bind(udp_addr)
        .await
        .with_context(|| format!("binding gossip UDP {udp_addr}"))?;
    let own_addrs = if p.cfg.discovery.broadcast {
        advertised(&p.http_listen)
    } else {
        Vec::new()
    };
    let mut catalog = MeshCatalog::new();
    let (wires, book) = p.store.mesh_load().await.context("loading mesh state")?;
    for w in wires {
        // verified when they arrived; a record that no longer decodes is skipped
        match record::open(&w, |_, _, _| true) {
            Ok(s) => {
                catalog.insert(s);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable stored record"),
        }
    }
    let view = Arc::new(MeshView {
        node: me,
        broadcast: p.cfg.discovery.broadcast,
        catalog: RwLock::new(catalog),
        peers: RwLock::new(Vec::new()),
        registry: Mutex::new(Registry::new(p.cfg.discovery.registration_ttl.0)),
        counters: Default::default(),
        refused: RwLock::new(HashMap::new()),
        own_addrs: own_addrs.clone(),
        neighbours: RwLock::new(Vec::new()),
        holders: Mutex::new(HashMap::new()),
        relayed: Mutex::new(Default::default()),
        client: MeshClient::new(p.identity.clone()),
        mode: RwLock::new(ModeState {
            mode: Mode::MeshOnly,
            since_ms: wall_ms(),
            changes: 0,
            uplink: p.uplink.borrow().clone(),
            gateway: None,
            failover_off: (!p.cfg.connectivity.failover)
                .then(|| "disabled in the config ([connectivity] failover = false)".to_string()),
        }),
        changes: watch::Sender::new(()),
        topology: RwLock::new(Arc::new(Topology::new(
            me,
            &HashMap::new(),
            &HashMap::new(),
        ))),
        routes: RwLock::new(Arc::new(RouteTable::build(
            me,
            &Topology::new(me, &HashMap::new(), &HashMap::new()),
        ))),
        penalties: Mutex::new(Penalties::new()),
        flights: Default::default(),
        started: Instant::now(),
    });
    let (tx, rx) = mpsc::channel(CMD_CAP);
    let (itx, irx) = mpsc::unbounded_channel();
    let (save_tx, save_rx) = mpsc::unbounded_channel();
    let info = PeerInfo {
        node: me,
        name: p.cfg.node_name(),
        addrs: own_addrs.iter().take(MAX_ADDRS).copied().collect(),
        is_bootstrap: p.cfg.discovery.broadcast,
    };
    let g = &p.cfg.gossip;
    let gcfg = proto::Config {
        fanout: g.fanout as usize,
        ttl: g.ttl,
        heartbeat_ms: g.heartbeat_interval.0.as_millis() as u64,
        expiry_ms: g.peer_expiry.0.as_millis() as u64,
        max_future_ms: g.max_clock_skew.0.as_millis() as i64,
        ..proto::Config::default()
    };
    let core = Gossip::new(
        gcfg,
        p.identity.clone(),
        SmallRng::seed_from_u64(seed()),
        info,
        0,
    );
    let (found_tx, found_rx) = mpsc::channel(64);
    let mdns = if p.cfg.discovery.mdns {
        let ifaces = if p.cfg.discovery.interfaces.is_empty() {
            Vec::new() // mdns module: every interface but the default route's
        } else {
            p.cfg.discovery.interfaces.clone()
        };
        match Mdns::start(
            MdnsConfig {
                interfaces: ifaces,
                port: udp_addr.port(),
                node: me,
                name: p.cfg.node_name(),
                digest: digest(view.catalog.read().expect("lock").set().fingerprint()),
            },
            found_tx,
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "mDNS could not start; discovery continues through bootstrap and static peers");
                None
            }
        }
    } else {
        None
    };
    let state_dir = p.cfg.node.state_dir.clone();
    let (gateway_tx, gateway_rx) = watch::channel(None);
    let c = &p.cfg.connectivity;
    if c.failover && !c.probes.is_empty() {
        let fcfg = crate::failover::FailoverConfig {
            table: c.failover_table,
            protocol: c.route_protocol,
            rule_priority: c.rule_priority,
            fwmark: c.fwmark,
        };
        tasks.spawn(super::gateway::run(
            fcfg,
            gateway_rx,
            view.clone(),
            p.cancel.clone(),
        ));
    }
    let mut t = Task {
        core,
        identity: p.identity.clone(),
        udp: Arc::new(udp),
        udp_addr,
        view: view.clone(),
        store: p.store.clone(),
        client: MeshClient::new(p.identity.clone()),
        me,
        name: p.cfg.node_name(),
        pacer: Arc::new(crate::sync::pace::Pacer::new(
            Some(p.cfg.sync.max_rate.bytes_per_sec()),
            crate::cache::blobs::CHUNK_SIZE,
        )),
        cfg: p.cfg,
        epoch: Instant::now(),
        next_tick: 0,
        book: book.into_iter().map(|r| (r.node, r)).collect(),
        book_dirty: HashSet::new(),
        perf: HashMap::new(),
        demand_local: HashMap::new(),
        demand_dirty: false,
        demand_mesh: HashMap::new(),
        queue: VecDeque::new(),
        running: HashMap::new(),
        retry: Vec::new(),
        attempts: HashMap::new(),
        refused_at_quota: HashMap::new(),
        itx,
        save_tx,
        mdns,
        last_digest: String::new(),
        partial: state_dir.join("partial"),
        own_addrs,
        peers_dirty: true,
        pending_announce: Vec::new(),
        announce_hold: Instant::now(),
        uplink: p.uplink,
        rf_stations: p.rf_stations,
        subnets: Subnets::read(),
        own_links: Vec::new(),
        links_sent: None,
        mode: Mode::MeshOnly,
        gateway_tx,
    };
    t.sync_own_all();
    tasks.spawn(saver(p.store, save_rx));
    tasks.spawn(t.run(rx, irx, found_rx, p.cancel));
    Ok(Mesh { tx, view })
}

/// Writes mesh state in the order it changed.
async fn saver(store: StoreHandle, mut rx: mpsc::UnboundedReceiver<MeshSave>) {
    while let Some(s) = rx.recv().await {
        if let Err(e) = store.mesh_save(s).await {
            tracing::error!(error = %e, "could not persist mesh state");
        }
    }
}

/// The addresses a broadcasting node tells others: its listeners, with an
/// unspecified address (0.0.0.0) replaced by the host's non-loopback ones.
fn advertised(listen: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for l in listen {
        if l.ip().is_unspecified() {
            if let Ok(ifs) = if_addrs::get_if_addrs() {
                for i in ifs {
                    let ip = i.ip();
                    if !ip.is_loopback() && ip.is_ipv4() == l.is_ipv4() && !is_link_local(&ip) {
                        out.push(SocketAddr::new(ip, l.port()));
                    }
                }
            }
        } else {
            out.push(*l);
        }
    }
    out.truncate(MAX_ADDRS);
    out
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => v.is_link_local(),
        std::net::IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| wall_ms() as u64 ^ std::process::id() as u64)
}

/// `base` ± 50 %, so nodes that lost the same link do not all re-dial at once.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + (seed() % 1000) as f64 / 1000.0)
}

struct Task {
    core: Gossip<SocketAddr, SmallRng, Arc<Identity>>,
    identity: Arc<Identity>,
    udp: Arc<UdpSocket>,
    udp_addr: SocketAddr,
    view: Arc<MeshView>,
    store: StoreHandle,
    client: MeshClient,
    me: NodeId,
    name: String,
    cfg: Config,
    epoch: Instant,
    next_tick: u64,
    book: HashMap<NodeId, PeerRow>,
    book_dirty: HashSet<NodeId>,
    perf: HashMap<NodeId, Perf>,
    demand_local: HashMap<ShortId, u32>,
    demand_dirty: bool,
    demand_mesh: HashMap<ShortId, HashMap<NodeId, u32>>,
    queue: VecDeque<Job>,
    running: HashMap<String, Job>,
    /// Failed transfers waiting for their next try, with the attempt count.
    retry: Vec<(Instant, Job, u32)>,
    attempts: HashMap<String, u32>,
    /// Essential items refused for lack of room, with the quota then: tried
    /// again only once the quota changes.
    refused_at_quota: HashMap<String, u64>,
    itx: mpsc::UnboundedSender<Internal>,
    save_tx: mpsc::UnboundedSender<MeshSave>,
    mdns: Option<Mdns>,
    last_digest: String,
    partial: PathBuf,
    /// Paces background replication to `[sync] max_rate`.
    pacer: Arc<crate::sync::pace::Pacer>,
    own_addrs: Vec<SocketAddr>,
    peers_dirty: bool,
    /// Own record ids waiting for the announce window to close.
    pending_announce: Vec<Id>,
    announce_hold: Instant,
    uplink: watch::Receiver<Uplink>,
    /// Stations heard on RF lately.
    rf_stations: watch::Receiver<usize>,
    subnets: Subnets,
    /// Our links as last measured.
    own_links: Vec<LinkReport>,
    /// When we last sent LINK_STATE.
    links_sent: Option<Instant>,
    mode: Mode,
    gateway_tx: watch::Sender<Option<std::net::IpAddr>>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("me", &self.me).finish()
    }
}

impl Task {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut found: mpsc::Receiver<mdns::Found>,
        cancel: CancellationToken,
    ) {
        let udp = self.udp.clone();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut next_redial = Instant::now(); // dial at once, then jittered
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        let mut book_save = tokio::time::interval(BOOK_SAVE_INTERVAL);
        let mut recon_all = tokio::time::interval(self.cfg.sync.reconcile_interval.0);
        let mut demand = tokio::time::interval(Duration::from_secs(5));
        let mut peers_refresh = tokio::time::interval(Duration::from_millis(200));
        let mut retry_tick = tokio::time::interval(Duration::from_millis(500));
        let mut links_tick = tokio::time::interval(LINKS_INTERVAL);
        let mut subnets_tick = tokio::time::interval(Duration::from_secs(60));
        let mut uplink = self.uplink.clone();
        let mut rf_stations = self.rf_stations.clone();
        self.update_mode();
        self.announce_catalog(Vec::new(), false);
        let out = self.core.handle(InEvent::Tick, self.now(), wall_ms());
        self.process(out);
        loop {
            let tick_at = self.epoch + Duration::from_millis(self.next_tick);
            let announce_at = self.announce_hold;
            let announce_pending = !self.pending_announce.is_empty();
            tokio::select! {
                _ = tokio::time::sleep_until(announce_at.into()), if announce_pending => {
                    self.flush_announce();
                }
                _ = cancel.cancelled() => break,
                r = udp.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        if n > MAX_DATAGRAM {
                            self.view.counters.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let out = self.core.handle(InEvent::Recv { from, bytes: buf[..n].to_vec() }, self.now(), wall_ms());
                        self.process(out);
                    }
                    Err(e) => tracing::debug!(error = %e, "gossip socket receive error"),
                },
                Some(cmd) = cmds.recv() => self.on_cmd(cmd),
                Some(ev) = internal.recv() => self.on_internal(ev),
                Some(f) = found.recv() => {
                    let addr = f.addrs.iter().find(|a| a.is_ipv4()).or(f.addrs.first()).copied();
                    if let Some(a) = addr {
                        tracing::debug!(peer = %f.name, addr = %a, "found by mDNS");
                        self.link_up(a);
                    }
                }
                _ = tokio::time::sleep_until(tick_at.into()) => {
                    let out = self.core.handle(InEvent::Tick, self.now(), wall_ms());
                    self.process(out);
                }
                _ = tokio::time::sleep_until(next_redial.into()) => {
                    self.redial();
                    next_redial = Instant::now() + jitter(self.cfg.discovery.redial_interval.0);
                }
                _ = sweep.tick() => self.sweep(),
                _ = book_save.tick() => self.save_book(),
                _ = recon_all.tick() => {
                    let ns: Vec<SocketAddr> = self.core.neighbours().map(|(a, _)| *a).collect();
                    for a in ns { self.reconcile(a); }
                }
                _ = demand.tick() => self.flush_demand(),
                _ = retry_tick.tick() => self.retry_due(),
                _ = peers_refresh.tick() => {
                    if self.peers_dirty { self.rebuild_peers(); }
                }
                _ = links_tick.tick() => self.update_links(false),
                _ = subnets_tick.tick() => self.subnets = Subnets::read(),
                Ok(()) = uplink.changed() => {
                    uplink.borrow_and_update();
                    self.update_mode();
                }
                Ok(()) = rf_stations.changed() => {
                    rf_stations.borrow_and_update();
                    self.update_mode();
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        self.save_book();
        if let Some(m) = self.mdns.take() {
            m.shutdown();
        }
        if self.cfg.discovery.broadcast {
            for b in self.cfg.discovery.bootstrap.clone() {
                if let Some(a) = resolve(&b.0).await {
                    let _best_effort = self
                        .client
                        .request(a, Method::DELETE, "/api/bootstrap/unregister", Vec::new())
                        .await;
                }
            }
        }
    }

    fn process(&mut self, out: Vec<OutEvent<SocketAddr>>) {
        let view = self.view.clone();
        let c = &view.counters;
        for o in out {
            match o {
                OutEvent::Send { to, bytes } => {
                    c.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                    c.datagram_bytes_sent
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if let Err(e) = self.udp.try_send_to(&bytes, to) {
                        tracing::debug!(to = %to, error = %e, "gossip send failed");
                    }
                }
                OutEvent::NextTick(t) => self.next_tick = t,
                OutEvent::CatalogChange { ids, via, .. } => {
                    let missing: Vec<ShortId> = {
                        let cat = self.view.catalog.read().expect("lock");
                        ids.iter()
                            .filter(|id| cat.get(id).is_none())
                            .map(short)
                            .collect()
                    };
                    if !missing.is_empty() {
                        self.fetch_records(via, missing, false);
                    }
                }
                OutEvent::Reconcile(peer) => self.reconcile(peer),
                OutEvent::Dial(a) => self.link_up(a),
                OutEvent::PeerJoined(n) => {
                    tracing::info!(peer = %n.short(), "peer joined");
                    self.peers_dirty = true;
                }
                OutEvent::PeerLeft(n) => {
                    tracing::info!(peer = %n.short(), "peer left");
                    self.peers_dirty = true;
                }
                OutEvent::Demand { origin, counts } => {
                    let mut touched = Vec::new();
                    for (s, n) in counts {
                        self.demand_mesh.entry(s).or_default().insert(origin, n);
                        touched.push(s);
                    }
                    let urls: Vec<String> = {
                        let cat = self.view.catalog.read().expect("lock");
                        touched
                            .iter()
                            .filter_map(|s| cat.by_short(s).map(|r| r.record.url.clone()))
                            .collect()
                    };
                    for u in urls {
                        self.apply(&u);
                    }
                }
            }
        }
        let s = &self.core.stats;
        c.datagrams_received.store(s.received, Ordering::Relaxed);
        c.dropped_invalid
            .store(s.dropped_invalid, Ordering::Relaxed);
        c.dropped_duplicate
            .store(s.dropped_duplicate, Ordering::Relaxed);
        c.dropped_future.store(s.dropped_future, Ordering::Relaxed);
        self.note_neighbours();
        self.sync_neighbours();
        self.peers_dirty = true;
    }

    /// Records every current neighbour in the peer book.
    fn note_neighbours(&mut self) {
        let now_s = wall_ms() / 1000;
        let ns: Vec<(SocketAddr, NodeId)> = self.core.neighbours().map(|(a, n)| (*a, *n)).collect();
        for (a, n) in ns {
            let info = self.core.peers().get(&n).and_then(|p| p.info.clone());
            let row = self.book.entry(n).or_insert_with(|| PeerRow {
                node: n,
                name: String::new(),
                addrs: Vec::new(),
                link_addr: None,
                is_bootstrap: false,
                first_seen: now_s,
                last_seen: now_s,
            });
            let mut changed = row.link_addr != Some(a) || row.last_seen + 60 < now_s;
            row.link_addr = Some(a);
            row.last_seen = now_s;
            if let Some(i) = info
                && (row.name != i.name
                    || row.addrs != i.addrs
                    || row.is_bootstrap != i.is_bootstrap)
            {
                row.name = i.name;
                row.addrs = i.addrs;
                row.is_bootstrap = i.is_bootstrap;
                changed = true;
            }
            if changed {
                self.book_dirty.insert(n);
            }
        }
    }

    fn save_book(&mut self) {
        if self.book_dirty.is_empty() {
            return;
        }
        let peers = self
            .book_dirty
            .drain()
            .filter_map(|n| self.book.get(&n).cloned())
            .collect();
        let _stopped = self.save_tx.send(MeshSave {
            peers,
            ..Default::default()
        });
    }

    fn is_self(&self, a: &SocketAddr) -> bool {
        *a == self.udp_addr || self.own_addrs.contains(a)
    }

    fn link_up(&mut self, a: SocketAddr) {
        if self.is_self(&a) || self.core.neighbours().any(|(n, _)| *n == a) {
            return;
        }
        let out = self.core.handle(InEvent::LinkUp(a), self.now(), wall_ms());
        self.process(out);
    }

    /// Static peers, bootstrap nodes, and every peer in the book we are not
    /// linked to.
    fn redial(&mut self) {
        let linked: HashSet<NodeId> = self.core.neighbours().map(|(_, n)| *n).collect();
        let known: Vec<SocketAddr> = self
            .book
            .values()
            .filter(|r| !linked.contains(&r.node))
            .filter_map(|r| r.link_addr.or_else(|| r.addrs.first().copied()))
            .collect();
        for a in known {
            self.link_up(a);
        }
        let statics: Vec<String> = self
            .cfg
            .discovery
            .static_peers
            .iter()
            .map(|p| p.0.clone())
            .collect();
        let boots: Vec<String> = self
            .cfg
            .discovery
            .bootstrap
            .iter()
            .map(|p| p.0.clone())
            .collect();
        if statics.is_empty() && boots.is_empty() {
            return;
        }
        let client = self.client.clone();
        let register = Register {
            name: self.name.clone(),
            addrs: self.own_addrs.clone(),
        };
        let broadcast = self.cfg.discovery.broadcast;
        let me = self.me;
        let tx = self.itx.clone();
        tokio::spawn(async move {
            let mut addrs = Vec::new();
            for s in statics {
                match resolve(&s).await {
                    Some(a) => addrs.push(a),
                    None => tracing::warn!(peer = %s, "static peer does not resolve"),
                }
            }
            for b in boots {
                let Some(a) = resolve(&b).await else {
                    tracing::warn!(bootstrap = %b, "bootstrap node does not resolve");
                    continue;
                };
                addrs.push(a);
                if broadcast {
                    let body = serde_json::to_vec(&register).expect("serializes");
                    if let Err(e) = client
                        .ok(a, Method::POST, "/api/bootstrap/register", body)
                        .await
                    {
                        tracing::warn!(bootstrap = %b, error = %e, "bootstrap registration failed");
                    }
                }
                let t = Instant::now();
                match client
                    .ok(a, Method::GET, "/api/bootstrap/discover", Vec::new())
                    .await
                {
                    Ok(body) => {
                        let _gone = tx.send(Internal::Rtt(a, t.elapsed()));
                        match serde_json::from_slice::<Discover>(&body) {
                            Ok(d) => {
                                for p in d.peers {
                                    if p.node != me.to_hex() {
                                        addrs.extend(p.addrs.first().copied());
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(bootstrap = %b, error = %e, "bad discover answer")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(bootstrap = %b, error = %e, "bootstrap discover failed")
                    }
                }
            }
            let _stopped = tx.send(Internal::Dial(addrs));
        });
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::LocalChanged(url, done) => {
                if let Some(s) = self.own_record(&url) {
                    self.announce_own(s);
                }
                let _caller_gone = done.send(());
            }
            Cmd::Fetched(f, done) => {
                let own = self
                    .view
                    .catalog
                    .read()
                    .expect("lock")
                    .own(&f.entry.url, &self.me)
                    .cloned();
                if let Some(s) =
                    self.record_for(&f.entry, &f.manifest, own.as_ref(), Some(f.fetched))
                {
                    self.announce_own(s);
                }
                let _caller_gone = done.send(());
            }
            Cmd::Records(recs) => self.insert(recs, true),
            Cmd::Requested(url) => {
                let id = {
                    let cat = self.view.catalog.read().expect("lock");
                    cat.resolve(&url)
                        .winner
                        .filter(|w| w.record.priority() == Some(Priority::Popular))
                        .map(|w| w.id)
                };
                if let Some(id) = id {
                    *self.demand_local.entry(short(&id)).or_default() += 1;
                    self.demand_dirty = true;
                }
            }
        }
    }

    /// Inserts a record of our own and announces it (batched).
    fn announce_own(&mut self, s: Signed) {
        let id = s.id;
        self.insert(vec![s], false);
        self.pending_announce.push(id);
        if Instant::now() >= self.announce_hold {
            self.flush_announce();
        }
    }

    fn flush_announce(&mut self) {
        let ids = std::mem::take(&mut self.pending_announce);
        self.announce_hold = Instant::now() + ANNOUNCE_WINDOW;
        if !ids.is_empty() {
            self.announce_catalog(ids, false);
        }
    }

    fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Records { recs, from_recon } => self.insert(recs, from_recon),
            Internal::Fetch(peer, shorts) => self.fetch_records(peer, shorts, true),
            Internal::Dial(addrs) => {
                for a in addrs {
                    self.link_up(a);
                }
            }
            Internal::Rtt(a, d) => {
                if let Some(n) = self.node_at(&a) {
                    let p = self.perf.entry(n).or_default();
                    let ms = d.as_secs_f64() * 1000.0;
                    p.rtt_ms = Some(p.rtt_ms.map_or(ms, |r| 0.8 * r + 0.2 * ms));
                }
            }
            Internal::ReconDone { bytes } => {
                let c = &self.view.counters;
                c.reconciliations.fetch_add(1, Ordering::Relaxed);
                c.recon_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Internal::TransferDone {
                target,
                result,
                essential,
            } => {
                let job = self.running.remove(&target);
                let view = self.view.clone();
                let c = &view.counters;
                match result {
                    Ok(report) => {
                        c.transfers_done.fetch_add(1, Ordering::Relaxed);
                        self.attempts.remove(&target);
                        // e.g. the winner waiting for our own loser's copy
                        if let Some(j) = &job
                            && self.held_matches(&target, &j.rec)
                        {
                            self.apply(&j.rec.record.url.clone());
                        }
                        for (a, (bytes, took)) in &report.bytes_from {
                            c.chunks_fetched.fetch_add(
                                report.chunks_from.get(a).copied().unwrap_or(0) as u64,
                                Ordering::Relaxed,
                            );
                            if let Some(n) = self.node_at(a)
                                && !took.is_zero()
                            {
                                let bps = *bytes as f64 / took.as_secs_f64();
                                let p = self.perf.entry(n).or_default();
                                p.bw_bps = Some(p.bw_bps.map_or(bps, |b| 0.7 * b + 0.3 * bps));
                            }
                        }
                        self.view.refused.write().expect("lock").remove(&target);
                    }
                    Err(e) => {
                        c.transfers_failed.fetch_add(1, Ordering::Relaxed);
                        if essential && e.contains("not enough storage") {
                            c.essential_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(url = %target, error = %e, "cannot store an ESSENTIAL item: raise store.max_bytes or free space");
                            self.view
                                .refused
                                .write()
                                .expect("lock")
                                .insert(target.clone(), e.clone());
                            self.refused_at_quota
                                .insert(target.clone(), self.store.stats().max_bytes);
                        } else if let Some(job) = job {
                            // back off 1, 2, 4 ... 30 s: the holder may be one hop
                            // further and still fetching, or just out of reach
                            let n = self.attempts.entry(target.clone()).or_default();
                            *n += 1;
                            let wait = Duration::from_secs((1u64 << (*n).min(5)).min(30));
                            tracing::info!(url = %target, error = %e, retry_in = ?wait, "transfer failed; will retry");
                            self.retry.push((Instant::now() + wait, job, *n));
                        }
                    }
                }
                self.start_jobs();
            }
        }
    }

    fn node_at(&self, a: &SocketAddr) -> Option<NodeId> {
        self.core
            .neighbours()
            .find(|(x, _)| *x == a)
            .map(|(_, n)| *n)
            .or_else(|| {
                self.book
                    .values()
                    .find(|r| r.link_addr == Some(*a) || r.addrs.contains(a))
                    .map(|r| r.node)
            })
    }

    /// Inserts verified records, persists them, and replicates what changed.
    fn insert(&mut self, recs: Vec<Signed>, from_recon: bool) {
        let mut save = MeshSave::default();
        let mut urls = BTreeSet::new();
        {
            let mut cat = self.view.catalog.write().expect("lock");
            for r in recs {
                let (id, wire, url) = (r.id, r.wire(), r.record.url.clone());
                if let Insert::New { superseded } = cat.insert(r) {
                    save.add.push((id, wire));
                    save.remove.extend(superseded);
                    urls.insert(url);
                }
            }
        }
        if urls.is_empty() {
            return;
        }
        self.view
            .counters
            .records_accepted
            .fetch_add(save.add.len() as u64, Ordering::Relaxed);
        let _stopped = self.save_tx.send(save);
        for u in &urls {
            self.apply(u);
        }
        self.announce_catalog(Vec::new(), from_recon);
    }

    /// Tells the gossip core (and mDNS) our catalog fingerprint; `ids` are
    /// new records of our own to announce.
    fn announce_catalog(&mut self, ids: Vec<Id>, tell_neighbours: bool) {
        let (len, xor) = self.view.catalog.read().expect("lock").set().fingerprint();
        let out = self.core.handle(
            InEvent::Catalog {
                len,
                xor,
                ids,
                tell_neighbours,
            },
            self.now(),
            wall_ms(),
        );
        self.process(out);
        let d = digest((len, xor));
        if d != self.last_digest {
            if let Some(m) = &self.mdns
                && let Err(e) = m.set_digest(&d)
            {
                tracing::debug!(error = %e, "mDNS digest update failed");
            }
            self.last_digest = d;
        }
    }

    /// Our record for `url` if the store's state differs from the catalog's.
    /// `fetched`: new freshness for external content; otherwise what our
    /// record of the same content said stays.
    fn own_record(&self, url: &str) -> Option<Signed> {
        let cat = self.view.catalog.read().expect("lock");
        let own = cat.own(url, &self.me);
        match self.store.get(url) {
            Some(e) if e.fields().origin == self.me.to_hex() => {
                self.record_for(e.fields(), &e.manifest, own, None)
            }
            Some(_) => None, // another origin's version is held; ours stands in the catalog
            None => tombstone(&cat, own, url, &self.me).map(|r| r.sign(|b| self.client_sign(b))),
        }
    }

    /// The record for own content `f` (a deletion when it is private), or
    /// `None` when `own`, our record in the catalog, already says the same.
    /// `fetched` defaults to what `own` says for the same content.
    fn record_for(
        &self,
        f: &crate::catalog::Entry,
        manifest: &[crate::catalog::ContentHash],
        own: Option<&Arc<Signed>>,
        fetched: Option<record::Fetched>,
    ) -> Option<Signed> {
        if f.access == Access::Private {
            let cat = self.view.catalog.read().expect("lock");
            return tombstone(&cat, own, &f.url, &self.me).map(|r| r.sign(|b| self.client_sign(b)));
        }
        let content = Content {
            hash: f.hash.0,
            size: f.size,
            manifest_root: (!manifest.is_empty()).then(|| record::manifest_root(manifest)),
            content_type: f.content_type.clone(),
            priority: f.priority as u8,
            access: f.access.to_u8(),
            tags: f.tags.clone(),
            fetched: fetched.or_else(|| {
                own.and_then(|o| o.record.content.as_ref())
                    .filter(|c| c.hash == f.hash.0)
                    .and_then(|c| c.fetched.clone())
            }),
        };
        if own.is_some_and(|o| {
            o.record.version == f.version && o.record.content.as_ref() == Some(&content)
        }) {
            return None;
        }
        Some(
            Record {
                origin: self.me,
                url: f.url.clone(),
                version: f.version.max(own.map_or(0, |o| o.record.version + 1)),
                published_ms: f.timestamp_ms,
                content: Some(content),
            }
            .sign(|b| self.client_sign(b)),
        )
    }

    fn client_sign(&self, b: &[u8]) -> [u8; 64] {
        self.identity.sign(b)
    }

    /// At start: records for own content published while the mesh was not
    /// running (or by an older version), deletions for own content removed.
    fn sync_own_all(&mut self) {
        let me_hex = self.me.to_hex();
        // copies of our own losing versions (keep_both) are not publications
        let derived: HashSet<String> = self
            .view
            .catalog
            .read()
            .expect("lock")
            .records()
            .filter(|r| r.record.origin == self.me)
            .map(|r| crate::sync::catalog::derived_url(&r.record))
            .collect();
        let mut urls: BTreeSet<String> = self
            .store
            .list()
            .into_iter()
            .filter(|e| e.fields().origin == me_hex && !derived.contains(&e.fields().url))
            .map(|e| e.fields().url.clone())
            .collect();
        {
            let cat = self.view.catalog.read().expect("lock");
            urls.extend(
                cat.records()
                    .filter(|r| r.record.origin == self.me)
                    .map(|r| r.record.url.clone()),
            );
        }
        // fetched external pages the store evicted keep their records:
        // eviction is not deletion, other nodes may hold copies
        let recs: Vec<Signed> = urls
            .iter()
            .filter(|u| self.store.get(u).is_some() || !crate::catalog::is_external_url(u))
            .filter_map(|u| self.own_record(u))
            .collect();
        if !recs.is_empty() {
            tracing::info!(records = recs.len(), "signed records for own content");
            self.insert(recs, false);
        }
    }

    fn held_matches(&self, target: &str, rec: &Signed) -> bool {
        match (self.store.get(target), &rec.record.content) {
            (Some(e), Some(c)) => {
                let f = e.fields();
                f.hash.0 == c.hash && f.version == rec.record.version && !f.quarantined
            }
            _ => false,
        }
    }

    fn demand_for(&self, id: &Id) -> u64 {
        let s = short(id);
        let local = self.demand_local.get(&s).copied().unwrap_or(0) as u64;
        let mesh: u64 = self
            .demand_mesh
            .get(&s)
            .map(|m| m.values().map(|v| *v as u64).sum())
            .unwrap_or(0);
        local + mesh
    }

    /// Brings the local store in line with the catalog's resolution of `url`.
    fn apply(&mut self, url: &str) {
        let res = self.view.catalog.read().expect("lock").resolve(url);
        let me_hex = self.me.to_hex();
        // losers first: with keep_both, our own losing version must be copied
        // to its derived URL before the winner replaces it at `url`
        let mut targets = Vec::new();
        if self.cfg.sync.keep_both {
            targets.extend(res.losers.iter().cloned());
        }
        if let Some(w) = &res.winner {
            targets.push((url.to_string(), w.clone()));
        }
        // a replica of a version that is no longer the winner goes
        if let Some(held) = self.store.get(url) {
            let f = held.fields();
            let current = res
                .winner
                .as_ref()
                .is_some_and(|w| self.held_matches(url, w));
            if f.origin != me_hex && !current {
                let keep_for_refetch = res.winner.as_ref().is_some_and(|w| {
                    should_hold(
                        &w.record,
                        &self.me,
                        true,
                        self.demand_for(&w.id),
                        self.cfg.sync.popular_threshold,
                    )
                });
                if !keep_for_refetch {
                    let store = self.store.clone();
                    let u = url.to_string();
                    tokio::spawn(async move {
                        if let Err(e) = store.remove(&u).await {
                            tracing::debug!(url = %u, error = %e, "could not drop a stale replica");
                        }
                    });
                }
            }
        }
        let mut own_loser_pending = false;
        for (target, rec) in targets {
            if self.held_matches(&target, &rec) {
                continue;
            }
            if rec.record.origin == self.me {
                if target != url {
                    own_loser_pending = true;
                    self.enqueue(Job { target, rec });
                }
                continue;
            }
            if target == url && own_loser_pending {
                continue; // after the copy is safe (its TransferDone re-applies)
            }
            if self.refused_at_quota.get(&target) == Some(&self.store.stats().max_bytes) {
                continue; // did not fit; waits for a bigger quota
            }
            let cached = self.store.get(&target).is_some();
            if should_hold(
                &rec.record,
                &self.me,
                cached,
                self.demand_for(&rec.id),
                self.cfg.sync.popular_threshold,
            ) {
                self.enqueue(Job { target, rec });
            }
        }
    }

    fn retry_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(t, _, _)| *t <= now);
        self.retry = later;
        for (_, job, _) in due {
            // only if it is still wanted: the catalog may have moved on
            self.apply(&job.rec.record.url.clone());
        }
    }

    fn sweep(&mut self) {
        let urls: Vec<String> = self
            .view
            .catalog
            .read()
            .expect("lock")
            .urls()
            .into_iter()
            .map(str::to_string)
            .collect();
        for u in urls {
            self.apply(&u);
        }
    }

    fn enqueue(&mut self, job: Job) {
        if self.running.contains_key(&job.target)
            || self.queue.iter().any(|j| j.target == job.target)
        {
            return;
        }
        let prio = job.rec.record.priority().map_or(9, |p| p as u8);
        // essential first, then popular, ...
        let pos = self
            .queue
            .iter()
            .position(|j| j.rec.record.priority().map_or(9, |p| p as u8) > prio)
            .unwrap_or(self.queue.len());
        self.queue.insert(pos, job);
        self.start_jobs();
    }

    fn start_jobs(&mut self) {
        while self.running.len() < TRANSFERS_MAX {
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            let Some(content) = job.rec.record.content.clone() else {
                continue;
            };
            self.running.insert(job.target.clone(), job.clone());
            let sources: Vec<SocketAddr> = self.core.neighbours().map(|(a, _)| *a).collect();
            let (client, store, tx) = (self.client.clone(), self.store.clone(), self.itx.clone());
            let partial = self.partial.clone();
            let flow = transfer::Flow {
                parallel: self.cfg.sync.parallel_chunks as usize,
                pacer: self.pacer.clone(),
            };
            let essential = job.rec.record.priority() == Some(Priority::Essential);
            tokio::spawn(async move {
                let result =
                    run_job(&client, &store, &sources, &job, &content, &partial, &flow).await;
                let _stopped = tx.send(Internal::TransferDone {
                    target: job.target,
                    result,
                    essential,
                });
            });
        }
    }

    fn flush_demand(&mut self) {
        if !self.demand_dirty {
            return;
        }
        self.demand_dirty = false;
        let counts: Vec<([u8; 8], u32)> = self.demand_local.iter().map(|(k, v)| (*k, *v)).collect();
        let out = self
            .core
            .handle(InEvent::Demand(counts), self.now(), wall_ms());
        self.process(out);
        // our own clients' demand counts here too
        let urls: Vec<String> = {
            let cat = self.view.catalog.read().expect("lock");
            self.demand_local
                .keys()
                .filter_map(|s| cat.by_short(s).map(|r| r.record.url.clone()))
                .collect()
        };
        for u in urls {
            self.apply(&u);
        }
    }

    /// Fetches records by short id from `peer`. A forwarder passes a
    /// CATALOG_CHANGE on before its own fetch of the records has finished, so
    /// ids it does not have yet are asked for again a little later.
    fn fetch_records(&self, peer: SocketAddr, shorts: Vec<ShortId>, from_recon: bool) {
        let (client, tx, view) = (self.client.clone(), self.itx.clone(), self.view.clone());
        tokio::spawn(async move {
            let mut want: BTreeSet<ShortId> = shorts.into_iter().collect();
            for attempt in 0..4u64 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
                }
                let ask: Vec<ShortId> = want.iter().copied().collect();
                for batch in ask.chunks(RECORD_BATCH) {
                    let body: Vec<u8> = batch.iter().flatten().copied().collect();
                    let t = Instant::now();
                    match client
                        .ok(peer, Method::POST, "/mesh/v1/records/get", body)
                        .await
                    {
                        Ok(b) => {
                            let _gone = tx.send(Internal::Rtt(peer, t.elapsed()));
                            let (recs, bad) = record::open_many(&b, crate::identity::verify);
                            view.counters
                                .records_rejected
                                .fetch_add(bad as u64, Ordering::Relaxed);
                            for r in &recs {
                                want.remove(&short(&r.id));
                            }
                            let _stopped = tx.send(Internal::Records { recs, from_recon });
                        }
                        Err(e) => {
                            tracing::debug!(peer = %peer, error = %e, "fetching records failed");
                            return;
                        }
                    }
                }
                if want.is_empty() {
                    return;
                }
            }
        });
    }

    /// Runs a reconciliation with `peer` as the initiator, then pulls the
    /// records we lack and pushes the ones it lacks.
    fn reconcile(&self, peer: SocketAddr) {
        let (client, tx, view) = (self.client.clone(), self.itx.clone(), self.view.clone());
        tokio::spawn(async move {
            let mut msg = view.catalog.read().expect("lock").set().initiate();
            let mut need = BTreeSet::new();
            let mut give = BTreeSet::new();
            let mut bytes = 0;
            for _ in 0..RECON_ROUNDS_MAX {
                let body = recon::encode(&msg);
                bytes += body.len();
                let t = Instant::now();
                let resp = match client.ok(peer, Method::POST, "/mesh/v1/recon", body).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "reconciliation failed");
                        return;
                    }
                };
                let _gone = tx.send(Internal::Rtt(peer, t.elapsed()));
                bytes += resp.len();
                let Ok(reply) = recon::decode(&resp) else {
                    tracing::warn!(peer = %peer, "peer sent a malformed reconciliation message");
                    return;
                };
                if reply.is_empty() {
                    break;
                }
                let (next, learned) = {
                    let cat = view.catalog.read().expect("lock");
                    recon::respond(cat.set(), &reply, Role::Initiator)
                };
                need.extend(learned.need);
                give.extend(learned.give);
                if next.is_empty() {
                    break;
                }
                msg = next;
            }
            let _gone = tx.send(Internal::ReconDone { bytes });
            if !give.is_empty() {
                let wires: Vec<Vec<u8>> = {
                    let cat = view.catalog.read().expect("lock");
                    give.iter()
                        .filter_map(|id| cat.get(id).map(|r| r.wire()))
                        .collect()
                };
                for batch in wires.chunks(RECORD_BATCH) {
                    let body = batch.concat();
                    if let Err(e) = client
                        .ok(peer, Method::POST, "/mesh/v1/records/put", body)
                        .await
                    {
                        tracing::debug!(peer = %peer, error = %e, "pushing records failed");
                        break;
                    }
                }
            }
            if !need.is_empty() {
                let _stopped = tx.send(Internal::Fetch(peer, need.into_iter().collect()));
            }
        });
    }

    /// Re-measures our links; tells the mesh when they changed (or the
    /// refresh is due, or `force`).
    fn update_links(&mut self, force: bool) {
        let own = links::own_reports(&self.core.link_quality(), &self.subnets);
        let refresh = self
            .links_sent
            .is_none_or(|t| t.elapsed() >= self.cfg.gossip.heartbeat_interval.0);
        let changed = links::significant_change(&self.own_links, &own);
        self.own_links = own;
        if force || refresh || changed {
            self.links_sent = Some(Instant::now());
            let out = self.core.handle(
                InEvent::LinkState {
                    mode: self.mode.to_u8(),
                    links: links::to_wire(&self.own_links),
                },
                self.now(),
                wall_ms(),
            );
            self.process(out);
        }
        self.update_mode();
    }

    /// Mode from the uplink and the neighbours; the failover gateway.
    fn update_mode(&mut self) {
        let uplink = self.uplink.borrow().clone();
        let neighbours: Vec<(SocketAddr, NodeId)> =
            self.core.neighbours().map(|(a, n)| (*a, *n)).collect();
        let rf = *self.rf_stations.borrow();
        let mode = crate::connectivity::mode(uplink.up, neighbours.len(), rf);
        let modes: HashMap<NodeId, Mode> = self
            .core
            .peers()
            .iter()
            .filter_map(|(id, p)| Some((*id, Mode::from_u8(p.links.as_ref()?.0)?)))
            .collect();
        let want_gateway = self.cfg.connectivity.failover && uplink.probed && !uplink.up;
        let gw = want_gateway
            .then(|| links::choose_gateway(&neighbours, &modes, &self.own_links))
            .flatten();
        let mut changed = false;
        let mut touched = false;
        {
            let mut m = self.view.mode.write().expect("lock");
            touched |= m.uplink != uplink;
            m.uplink = uplink;
            if m.mode != mode {
                tracing::warn!(
                    from = m.mode.name(),
                    to = mode.name(),
                    "network mode changed"
                );
                m.mode = mode;
                m.since_ms = wall_ms();
                m.changes += 1;
                changed = true;
            }
            if m.gateway.as_ref().map(|g| g.addr) != gw.map(|(_, a)| a) {
                touched = true;
                m.gateway = gw.map(|(n, addr)| links::GatewayState {
                    node_id: n.to_hex(),
                    name: self
                        .core
                        .peers()
                        .get(&n)
                        .and_then(|p| p.info.as_ref())
                        .map(|i| i.name.clone()),
                    addr,
                    installed: false,
                });
                self.gateway_tx.send_replace(gw.map(|(_, a)| a));
            }
        }
        if changed || touched {
            self.view.changes.send_replace(());
        }
        if changed {
            self.mode = mode;
            self.update_links(true);
        }
    }

    /// The topology and route table from our links and every LINK_STATE.
    fn rebuild_routes(&mut self) {
        let peers: HashMap<NodeId, links::PeerLinks> = self
            .core
            .peers()
            .iter()
            .map(|(id, p)| {
                (
                    *id,
                    (p.info.as_ref().map(|i| i.name.clone()), p.links.clone()),
                )
            })
            .collect();
        let topo = links::topology(self.me, &self.name, self.mode, &self.own_links, &peers);
        let table = RouteTable::build(self.me, &topo);
        *self.view.topology.write().expect("lock") = Arc::new(topo);
        *self.view.routes.write().expect("lock") = Arc::new(table);
    }

    fn rebuild_peers(&mut self) {
        self.peers_dirty = false;
        let now = self.now();
        let wall = wall_ms();
        let hb = self.cfg.gossip.heartbeat_interval.0.as_millis() as f64;
        let expiry = self.cfg.gossip.peer_expiry.0.as_millis() as i64;
        let neighbours: HashSet<NodeId> = self.core.neighbours().map(|(_, n)| *n).collect();
        let mut rows: Vec<PeerStatus> = self
            .core
            .peers()
            .iter()
            .map(|(id, p)| {
                let ago = now.saturating_sub(p.last_seen) as f64;
                let availability = if ago <= hb * 1.5 {
                    1.0
                } else {
                    (1.0 - (ago - hb * 1.5) / (expiry as f64 - hb * 1.5).max(1.0)).clamp(0.0, 1.0)
                };
                let perf = self.perf.get(id).copied().unwrap_or_default();
                let to_wall = |t: u64| wall - (now.saturating_sub(t)) as i64;
                let info = p.info.as_ref();
                PeerStatus {
                    node_id: id.to_hex(),
                    name: info
                        .map(|i| i.name.clone())
                        .or_else(|| self.book.get(id).map(|r| r.name.clone()))
                        .filter(|n| !n.is_empty()),
                    addrs: info
                        .map(|i| i.addrs.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    is_bootstrap: info.is_some_and(|i| i.is_bootstrap),
                    neighbour: neighbours.contains(id),
                    catalog: CatalogSummary {
                        entries: p.catalog.0,
                        fingerprint: p.catalog.1,
                    },
                    availability,
                    performance: perf.rtt_ms.map(|r| 1.0 / (1.0 + r / 100.0)),
                    rtt_ms: perf.rtt_ms,
                    bandwidth_bps: perf.bw_bps,
                    discovered_at: to_wall(p.discovered_at),
                    last_seen: to_wall(p.last_seen),
                    expires_at: to_wall(p.last_seen) + expiry,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.node_id.cmp(&b.node_id)));
        *self.view.peers.write().expect("lock") = rows;
        self.view.changes.send_replace(());
        if !self.sync_neighbours() {
            self.rebuild_routes();
        }
    }

    /// Publishes the current neighbours to the view (request routing reads
    /// them) as soon as the protocol core's set changes, so a request that
    /// arrives right after a peer joins already has a next hop. Returns
    /// whether they changed (and the routes were rebuilt).
    fn sync_neighbours(&mut self) -> bool {
        let ns: Vec<(SocketAddr, NodeId)> = self.core.neighbours().map(|(a, n)| (*a, *n)).collect();
        if *self.view.neighbours.read().expect("lock") == ns {
            return false;
        }
        *self.view.neighbours.write().expect("lock") = ns;
        // a link came or went: tell the mesh now, not at the next tick
        self.update_links(true);
        self.rebuild_routes();
        true
    }
}

fn tombstone(
    cat: &MeshCatalog,
    own: Option<&Arc<Signed>>,
    url: &str,
    me: &NodeId,
) -> Option<Record> {
    let own = own?;
    own.record.content.as_ref()?;
    Some(Record {
        origin: *me,
        url: url.to_string(),
        version: cat.max_version(url).max(own.record.version) + 1,
        published_ms: wall_ms(),
        content: None,
    })
}

async fn resolve(hostport: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(hostport).await.ok()?.next()
}

async fn run_job(
    client: &MeshClient,
    store: &StoreHandle,
    sources: &[SocketAddr],
    job: &Job,
    content: &Content,
    partial: &std::path::Path,
    flow: &transfer::Flow,
) -> Result<transfer::Report, String> {
    let hash = crate::catalog::ContentHash(content.hash);
    let (ingested, report) = match store.by_hash(&hash) {
        Some(e) => (
            transfer::copy_local(store.blobs(), hash, e.fields().size)
                .await
                .map_err(|e| e.to_string())?,
            transfer::Report::default(),
        ),
        None => transfer::fetch(
            client,
            sources,
            &Want {
                hash,
                size: content.size,
                manifest_root: content.manifest_root,
            },
            store.blobs(),
            partial,
            flow,
        )
        .await
        .map_err(|e| e.to_string())?,
    };
    let url = ContentUrl::parse(&job.target).map_err(|e| e.to_string())?;
    let r = &job.rec.record;
    let meta = PublishMeta {
        url,
        content_type: Some(content.content_type.clone()),
        priority: Priority::from_u8(content.priority).unwrap_or(Priority::Standard),
        access: Access::from_u8(content.access).unwrap_or(Access::Community),
        tags: content.tags.clone(),
        origin: r.origin,
        pinned: false,
        version: Some(r.version),
        timestamp_ms: Some(r.published_ms),
        version_floor: 0,
    };
    match store.publish(ingested, meta).await {
        Ok(_) => Ok(report),
        Err(StoreError::Stale { .. }) => Ok(report), // a newer one got here first
        Err(e) => Err(e.to_string()),
    }
}
