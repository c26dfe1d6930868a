//! The RF task: the one owner of the TNC link, the airtime scheduler, the
//! ID timer and the table of stations heard.
//!
//! It queues a service beacon every `[rf] beacon_interval` (a newer one
//! replaces one still waiting), hands the scheduler's transmissions to the
//! driver while the TNC is there, counts each one's airtime (the status
//! view, and [`crate::analytics::Analytics::airtime`]), and reads every
//! frame heard: beacons fill the station table (node name, catalog summary,
//! beacons heard and lost by their sequence numbers), every frame counts
//! for its station. Every frame it builds has the station's callsign and
//! SSID as its source ([`Rf::send`] takes no source). Stations heard
//! lately go to the mesh task, whose network mode becomes `rf-only` when
//! they are all there is.
//!
//! With `[rf] enabled = false` nothing runs; the node says once that RF is
//! off, and the status says why.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::airtime::{
    self, AirtimeLog, BgKey, Burst, Lane, Micros, Model, Next, Params, Scheduler,
};
use super::ax25::{self, Address};
use super::beacon::{self, Beacon};
use super::driver::{self, Link, LinkState};
use super::http::{ContentAns, ContentReq};
use super::ident;
use super::msg::{self, Kind};
use super::sync::{Exchanges, Out, SyncStats, Timing};
use crate::config::RfConfig;
use crate::mesh::Mesh;
use crate::node::{Callsign, NodeId};

/// The window the status view reports airtime over.
pub const STATUS_WINDOW: Duration = Duration::from_secs(600);
/// Most stations kept; the one heard longest ago makes room.
pub const MAX_STATIONS: usize = 256;
/// A station not heard for this long leaves the table.
pub const STATION_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Commands queued to the task.
const CMD_CAP: usize = 32;
/// How often the status view and the count of recent stations refresh.
const REFRESH: Duration = Duration::from_secs(1);
/// The first beacon goes within this (or the interval, if shorter).
const FIRST_BEACON_MAX: Duration = Duration::from_secs(10);
/// How long a content request id is remembered for the loop rule.
const SEEN_FOR: Duration = Duration::from_secs(3600);
/// A sequence number further ahead than this is a restarted station, not
/// lost beacons.
const MAX_SEQ_GAP: u16 = 100;

/// The RF part of `GET /api/v1/status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    /// `[rf] enabled`.
    pub enabled: bool,
    /// The TNC address (`[rf] tnc`).
    pub tnc: Option<String>,
    /// The TNC is there and frames flow.
    pub connected: bool,
    /// The connection (`kiss-tcp 127.0.0.1:8001`, a tty, an interface).
    pub via: Option<String>,
    /// Why RF is off or the TNC is not connected.
    pub reason: Option<String>,
    /// This station on the air: `CALLSIGN-SSID` (`CALLSIGN` for SSID 0).
    pub callsign: Option<String>,
    /// `[rf] bitrate`.
    pub bitrate: u64,
    /// Airtime over the last [`STATUS_WINDOW`] and since start.
    pub airtime: AirtimeStatus,
    /// Frames waiting for airtime: background, requests.
    pub queued: Queued,
    /// Frames handed to the TNC since start (IDs included).
    pub frames_sent: u64,
    /// Frames heard since start.
    pub frames_heard: u64,
    /// Service beacons sent.
    pub beacons_sent: u64,
    /// Identification frames sent (alone or riding along).
    pub ids_sent: u64,
    /// Unix ms of the last ID.
    pub last_id: Option<i64>,
    /// Stations heard (beacons or any frame), most recent first.
    pub stations: Vec<Station>,
    /// Catalog sync over RF.
    pub sync: SyncStats,
    /// Content this node is fetching over RF.
    pub transfers: Vec<TransferStatus>,
    /// Content requests of other stations answered from this node's store.
    pub content_served: u64,
    /// Content requests relayed toward their holder.
    pub content_relayed: u64,
}

/// Airtime figures, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AirtimeStatus {
    /// The window of the `*_ms` figures, seconds.
    pub window_s: u64,
    /// Background airtime in the window.
    pub background_ms: u64,
    /// Of the window (0..1).
    pub background_share: f64,
    /// `[rf] airtime_budget`.
    pub background_budget: f64,
    /// Requested transfers' airtime in the window.
    pub requests_ms: u64,
    /// `[rf] request_budget`.
    pub request_budget: f64,
    /// Identification airtime in the window (outside both budgets).
    pub id_ms: u64,
    /// Totals since start: background, requests, ID.
    pub total_background_ms: u64,
    /// Since start.
    pub total_requests_ms: u64,
    /// Since start.
    pub total_id_ms: u64,
}

/// Queue lengths.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Queued {
    /// Background frames.
    pub background: usize,
    /// Request frames.
    pub requests: usize,
}

/// A station heard on the air.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Station {
    /// `CALLSIGN-SSID` as heard.
    pub callsign: String,
    /// Its node name, from its beacons (none: not a meshnode, or no beacon
    /// heard yet).
    pub node: Option<String>,
    /// Its catalog summary from the last beacon (`records-fingerprint`).
    pub catalog_digest: Option<String>,
    /// Its HTTP mesh port, when it has IP.
    pub http_port: Option<u16>,
    /// The first 8 bytes of its node key (hex).
    pub key_prefix: Option<String>,
    /// Frames heard from it.
    pub frames_heard: u64,
    /// Beacons heard from it.
    pub beacons_heard: u64,
    /// Beacons missed, from gaps in their sequence numbers.
    pub beacons_lost: u64,
    /// `beacons_lost / (beacons_heard + beacons_lost)`.
    pub loss: f64,
    /// Round trip of exchanges with it (request to whole answer, smoothed),
    /// ms; none before one was answered at the first try.
    pub rtt_ms: Option<f64>,
    /// Requests to it sent again, and "missing" sent to it.
    pub retries: u64,
    /// Unix ms.
    pub first_heard: i64,
    /// Unix ms.
    pub last_heard: i64,
}

/// Commands to the task.
#[derive(Debug)]
enum Cmd {
    /// Content from a station over RF ([`Rf::fetch`]).
    Fetch {
        url: String,
        holder: NodeId,
        reply: oneshot::Sender<Result<Fetched, String>>,
    },
    /// The answer to a station's content request, from the node's store.
    Served {
        from: Address,
        id: u16,
        ans: ContentAns,
    },
}

/// Content fetched over RF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its type.
    pub content_type: String,
    /// Its bytes.
    pub body: Vec<u8>,
}

/// A station's request for content of this node's store; the daemon
/// answers it from the store (`api::rf`), the RF task sends the answer.
#[derive(Debug)]
pub struct ServeReq {
    /// The content URL.
    pub url: String,
    /// First byte.
    pub start: u64,
    /// Most bytes.
    pub max: u32,
    /// Where the answer goes.
    pub reply: oneshot::Sender<ContentAns>,
}

/// A transfer in progress (`GET /api/v1/status`, `rf.transfers`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransferStatus {
    /// The content URL.
    pub url: String,
    /// The station asked (the holder, or the one that relays to it).
    pub via: String,
    /// Bytes received.
    pub bytes: u64,
    /// The content's size, once the first chunk has come.
    pub total: Option<u64>,
    /// Unix ms.
    pub started: i64,
}

/// Handle on the RF task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Rf {
    tx: Option<mpsc::Sender<Cmd>>,
    view: Arc<RwLock<Status>>,
    stations: Arc<watch::Sender<usize>>,
}

impl Rf {
    /// The current state.
    pub fn status(&self) -> Status {
        self.view.read().expect("rf status lock").clone()
    }

    /// Stations heard lately (the count the network mode uses).
    pub fn stations_heard(&self) -> watch::Receiver<usize> {
        self.stations.subscribe()
    }

    /// Fetches `url` from node `holder` over RF: from its station if this
    /// one hears it, else through a station that hears it (its beacon
    /// lists it), in chunks under `request_budget`; progress shows in
    /// [`Status::transfers`]. `Err` says why not (RF off, the holder not
    /// reachable, no answer, its status).
    pub async fn fetch(&self, url: &str, holder: NodeId) -> Result<Fetched, String> {
        let tx = self.tx.as_ref().ok_or("RF is off")?;
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Fetch {
            url: url.to_string(),
            holder,
            reply,
        })
        .await
        .map_err(|_| "the RF task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the RF task has stopped".to_string())?
    }
}

/// What the RF task needs.
#[derive(Debug)]
pub struct RfParams {
    /// `[rf]`.
    pub cfg: RfConfig,
    /// `[node] callsign`.
    pub callsign: Callsign,
    /// The node's name, `CALLSIGN-label`.
    pub node_name: String,
    /// The node's key.
    pub node_id: NodeId,
    /// The HTTP mesh port, when the node listens on a routable address.
    pub http_port: Option<u16>,
    /// The mesh catalog: its summary goes into beacons, records learned
    /// over RF go into it.
    pub mesh: Mesh,
    /// Airtime is counted there.
    pub analytics: crate::analytics::Analytics,
    /// Where the count of stations heard lately goes (the mesh task's
    /// network mode reads it).
    pub stations: watch::Sender<usize>,
    /// Where other stations' content requests go to be answered from the
    /// store (none: they get 503).
    pub serve: Option<mpsc::Sender<ServeReq>>,
}

/// Starts the RF task (or, with RF off, says so once and returns a handle
/// whose status says why). The join handle finishes after `stop`.
pub fn spawn(p: RfParams, stop: CancellationToken) -> (Rf, tokio::task::JoinHandle<()>) {
    let stations = Arc::new(p.stations.clone());
    let cfg = &p.cfg;
    let station = Address::new(p.callsign.as_str(), cfg.ssid.0);
    let mut status = Status {
        enabled: cfg.enabled,
        tnc: Some(cfg.tnc.0.to_string()),
        bitrate: cfg.bitrate.0,
        airtime: AirtimeStatus {
            window_s: STATUS_WINDOW.as_secs(),
            background_budget: cfg.airtime_budget.0,
            request_budget: cfg.request_budget.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let station = match (cfg.enabled, station) {
        (false, _) => {
            tracing::info!("RF is off ([rf] enabled = false)");
            status.reason = Some("disabled in the configuration ([rf] enabled = false)".into());
            None
        }
        (true, Err(e)) => {
            // the callsign was checked when the config was read; keep going without RF
            tracing::error!(error = %e, "RF is off: the callsign does not fit an AX.25 address");
            status.reason = Some(format!("the callsign does not fit an AX.25 address: {e}"));
            None
        }
        (true, Ok(a)) => Some(a),
    };
    let view = Arc::new(RwLock::new(status));
    let Some(station) = station else {
        let rf = Rf {
            tx: None,
            view,
            stations,
        };
        return (rf, tokio::spawn(async {}));
    };
    let (tx, rx) = mpsc::channel(CMD_CAP);
    let (link, driver) = driver::spawn(p.cfg.tnc.0.clone(), stop.child_token());
    let task = Task::new(p, station, view.clone(), stations.clone(), tx.clone());
    let join = tokio::spawn(async move {
        task.run(link, rx, stop).await;
        let _finished_or_panicked = driver.await;
    });
    let rf = Rf {
        tx: Some(tx),
        view,
        stations,
    };
    (rf, join)
}

/// What the task knows of a station.
#[derive(Debug, Clone)]
struct Heard {
    station: Station,
    last_seq: Option<u16>,
    /// When last heard, on the task's clock.
    at: Instant,
    /// From its beacons: its node key's first 8 bytes, and the first 4 of
    /// the stations it hears.
    key: Option<[u8; 8]>,
    neighbours: Vec<[u8; 4]>,
}

/// What an exchange of the task's is for.
#[derive(Debug)]
enum Transfer {
    /// Content this node wants, chunk by chunk.
    Fetch {
        req: ContentReq,
        via: Address,
        got: Vec<u8>,
        total: Option<u64>,
        started: i64,
        reply: oneshot::Sender<Result<Fetched, String>>,
    },
    /// A request relayed for another station.
    Relay { from: Address, id: u16 },
}

struct Task {
    p: RfParams,
    station: Address,
    sched: Scheduler,
    log: AirtimeLog,
    view: Arc<RwLock<Status>>,
    stations_tx: Arc<watch::Sender<usize>>,
    heard: HashMap<Address, Heard>,
    epoch: Instant,
    seq: u16,
    /// The beacon waiting in the queue, to replace.
    beacon_ticket: Option<airtime::Ticket>,
    link_state: LinkState,
    counters: Counters,
    last_id_unix: Option<i64>,
    rng: SmallRng,
    /// The random extra wait under way: the time the scheduler said, and
    /// the extra µs.
    dither: Option<(Micros, Micros)>,
    /// Info lines about stations heard: what anyone on the air can trigger.
    log_gate: LogGate,
    /// Catalog sync and the other exchanges with stations.
    ex: Exchanges,
    /// Transfers by the exchange handle waiting for their answer.
    transfers: HashMap<u64, Transfer>,
    /// Content request ids seen (relayed, asked or answered), for the loop
    /// rule; forgotten after [`SEEN_FOR`].
    seen: HashMap<u64, Instant>,
    /// The task's own command queue (answers from the store come back
    /// through it).
    cmd_tx: mpsc::Sender<Cmd>,
    /// Content requests answered from this node's store, relayed.
    served: u64,
    relayed: u64,
}

/// At most [`LogGate::PER_MINUTE`] lines a minute; the rest go to debug.
#[derive(Debug, Default)]
struct LogGate {
    window: Option<Instant>,
    said: u32,
}

impl LogGate {
    const PER_MINUTE: u32 = 10;

    fn allow(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60))
        {
            self.window = Some(now);
            self.said = 0;
        }
        self.said += 1;
        self.said <= Self::PER_MINUTE
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    frames_sent: u64,
    frames_heard: u64,
    beacons_sent: u64,
    ids_sent: u64,
}

impl Task {
    fn new(
        p: RfParams,
        station: Address,
        view: Arc<RwLock<Status>>,
        stations_tx: Arc<watch::Sender<usize>>,
        cmd_tx: mpsc::Sender<Cmd>,
    ) -> Task {
        let cfg = &p.cfg;
        let model = Model {
            bitrate: cfg.bitrate.0,
            txdelay: cfg.txdelay.0.as_micros() as Micros,
            txtail: cfg.txtail.0.as_micros() as Micros,
        };
        let params = Params {
            model,
            background_budget: cfg.airtime_budget.0,
            request_budget: cfg.request_budget.0,
            max_frame: max_frame(cfg.paclen.0),
            id_interval: cfg.id_interval.0.as_micros() as Micros,
        };
        let sched = Scheduler::new(params, ident::id_frame(station), 0);
        let timing = Timing {
            bitrate: cfg.bitrate.0,
            overhead_us: model.overhead_us(),
            background_budget: cfg.airtime_budget.0,
            request_budget: cfg.request_budget.0,
            paclen: cfg.paclen.0,
        };
        let mut rng = SmallRng::seed_from_u64(getrandom::u64().unwrap_or(0x5eed));
        let ex = Exchanges::new(station, cfg.paclen.0, timing, rng.random());
        {
            let mut v = view.write().expect("rf status lock");
            v.callsign = Some(station.to_string());
            v.reason = Some("connecting to the TNC".into());
        }
        Task {
            p,
            station,
            sched,
            log: AirtimeLog::new(STATUS_WINDOW.as_micros() as Micros),
            view,
            stations_tx,
            heard: HashMap::new(),
            epoch: Instant::now(),
            seq: 0,
            beacon_ticket: None,
            link_state: LinkState::Connecting,
            counters: Counters::default(),
            last_id_unix: None,
            rng,
            dither: None,
            log_gate: LogGate::default(),
            ex,
            transfers: HashMap::new(),
            seen: HashMap::new(),
            cmd_tx,
            served: 0,
            relayed: 0,
        }
    }

    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn at(&self, t: Micros) -> Instant {
        self.epoch + Duration::from_micros(t)
    }

    /// The next beacon: the interval ± 10 %, so stations that started
    /// together drift apart instead of keying up together every time.
    fn next_beacon(&mut self) -> Option<Instant> {
        let every = self.p.cfg.beacon_interval.0;
        if every.is_zero() {
            return None;
        }
        Some(Instant::now() + every.mul_f64(self.rng.random_range(0.9..1.1)))
    }

    async fn run(mut self, mut link: Link, mut cmds: mpsc::Receiver<Cmd>, stop: CancellationToken) {
        tracing::info!(station = %self.station, tnc = %self.p.cfg.tnc.0, "RF on");
        // the first beacon soon, at a random moment within the interval (10
        // s at most): nodes that boot together (a power cut) do not all
        // beacon at once
        let mut beacon_at = match self.p.cfg.beacon_interval.0 {
            d if d.is_zero() => None,
            d => {
                let first = d
                    .min(FIRST_BEACON_MAX)
                    .mul_f64(self.rng.random_range(0.0..1.0));
                Some(Instant::now() + first)
            }
        };
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = if self.link_state.is_up() {
                self.transmit(&link)
            } else {
                None
            };
            let exchanges_due = self.ex.next_deadline().map(|t| self.at(t));
            tokio::select! {
                _ = stop.cancelled() => break,
                r = link.state.changed() => {
                    if r.is_err() {
                        break; // the driver has stopped
                    }
                    self.link_state = link.state.borrow_and_update().clone();
                    self.publish();
                }
                f = link.rx.recv() => match f {
                    Some(frame) => self.on_heard(&frame),
                    None => break,
                },
                Some(cmd) = cmds.recv() => self.on_cmd(cmd),
                _ = sleep_until_opt(beacon_at) => {
                    self.queue_beacon();
                    beacon_at = self.next_beacon();
                }
                _ = sleep_until_opt(wake) => {}
                _ = sleep_until_opt(exchanges_due) => {
                    let outs = {
                        let cat = self.p.mesh.view.catalog.read().expect("catalog lock");
                        self.ex.poll(self.now(), &cat)
                    };
                    self.carry_out(outs);
                }
                _ = refresh.tick() => self.publish(),
            }
        }
        tracing::debug!("RF task stopped");
    }

    /// Sends what the scheduler lets go now; returns when to look again.
    ///
    /// A wait for airtime ends a random moment later ([`Task::dither_max`]),
    /// and the airtime the buckets would
    /// accrue meanwhile is forgone ([`Scheduler::forgo`]), so each station's
    /// send times drift on their own: stations whose buckets refill at the
    /// same rate would otherwise key up in lockstep and collide every time
    /// (measured on the test channel: two stations with beacons always
    /// pending started within 10 ms of each other every 1.9 s, and neither
    /// was heard). An owed ID never waits for that.
    fn transmit(&mut self, link: &Link) -> Option<Instant> {
        loop {
            let now = self.now();
            if let Some((t, d)) = self.dither {
                let ready = self.sched.ready_at(now);
                if let Some(wake) = dither_holds(t, d, now, ready, self.sched.ident().due_at()) {
                    return Some(self.at(wake));
                }
                if now >= t + d {
                    self.sched.forgo(t, t + d);
                }
                self.dither = None;
            }
            match self.sched.next_send(now) {
                Next::Send(b) => self.hand_over(link, now, b),
                Next::Wait(t) if self.sched.ident().due_at() == Some(t) => {
                    return Some(self.at(t));
                }
                Next::Wait(t) => {
                    let d = self.rng.random_range(0..=self.dither_max());
                    self.dither = Some((t, d));
                    return Some(self.at(t + d));
                }
                Next::Idle => return None,
            }
        }
    }

    /// The longest random extra wait: three times the TNC's preamble and
    /// tail, at least 150 ms. Measured on the test channel (9600 bd, 120
    /// ms of preamble and tail, carrier sense needing some 50 ms to notice
    /// another station): with up to one preamble and tail, two saturated
    /// stations' send times wandered apart too slowly and about half their
    /// beacons collided. Costs a saturated lane about 1.5 preambles per
    /// transmission; the budget is a ceiling, not a target.
    fn dither_max(&self) -> Micros {
        // sync::random_wait_mean_us is half of it
        (3 * self.sched.model().overhead_us()).max(150_000)
    }

    fn hand_over(&mut self, link: &Link, now: Micros, b: Burst) {
        for frame in &b.frames {
            if let Err(e) = link.tx.try_send(frame.clone()) {
                tracing::warn!(error = %e, "frame dropped: the TNC driver is not taking frames");
            }
        }
        if b.id {
            self.counters.ids_sent += 1;
            self.last_id_unix = Some(crate::store::now_ms());
        }
        if self.beacon_ticket.is_some_and(|t| b.tickets.contains(&t)) {
            self.beacon_ticket = None;
            self.counters.beacons_sent += 1;
        }
        self.counters.frames_sent += b.frames.len() as u64;
        self.log.record(now, &b);
        self.p.analytics.airtime(b.airtime_us.div_ceil(1000));
        tracing::debug!(frames = b.frames.len(), id = b.id, lane = ?b.lane, airtime_ms = b.airtime_us / 1000, "transmission handed to the TNC");
    }

    fn queue_beacon(&mut self) {
        let b = {
            let (records, fingerprint) = self
                .p
                .mesh
                .view
                .catalog
                .read()
                .expect("catalog lock")
                .set()
                .fingerprint();
            let mut key = [0u8; 8];
            key.copy_from_slice(&self.p.node_id.0[..8]);
            let now = Instant::now();
            let mut near: Vec<&Heard> = self
                .heard
                .values()
                .filter(|h| h.key.is_some() && now.duration_since(h.at) < self.recent())
                .collect();
            near.sort_by_key(|h| std::cmp::Reverse(h.at));
            let neighbours = near
                .iter()
                .take(beacon::MAX_NEIGHBOURS)
                .filter_map(|h| h.key.map(|k| [k[0], k[1], k[2], k[3]]))
                .collect();
            Beacon {
                name: self.p.node_name.clone(),
                records,
                fingerprint,
                seq: self.seq,
                http_port: self.p.http_port,
                key_prefix: Some(key),
                neighbours,
            }
        };
        self.seq = self.seq.wrapping_add(1);
        if let Some(old) = self.beacon_ticket.take() {
            // still waiting: the new one carries newer figures
            self.sched.withdraw(old);
        }
        match self
            .sched
            .push_background(b.frame(self.station), BgKey::STATION)
        {
            Ok(q) => self.beacon_ticket = Some(q.ticket),
            Err(e) => tracing::warn!(error = %e, "beacon not queued"),
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Fetch { url, holder, reply } => {
                let mut target = [0u8; 8];
                target.copy_from_slice(&holder.0[..8]);
                let Some(via) = self.next_hop(target, None) else {
                    let _gone = reply.send(Err(format!(
                        "no station heard on RF is node {} or hears it",
                        holder.short()
                    )));
                    return;
                };
                let req = ContentReq {
                    url,
                    target,
                    hops_left: crate::mesh::client::CONTENT_HOPS,
                    request_id: self.rng.random(),
                    start: 0,
                    max: self.chunk(),
                };
                self.seen.insert(req.request_id, Instant::now());
                let t = Transfer::Fetch {
                    req,
                    via,
                    got: Vec::new(),
                    total: None,
                    started: crate::store::now_ms(),
                    reply,
                };
                self.ask(t);
            }
            Cmd::Served { from, id, ans } => {
                self.served += 1;
                self.answer(from, id, &ans);
            }
        }
    }

    /// The largest chunk of content one answer carries: what fits one
    /// message, at most 16 KiB (so progress shows and a lost answer costs
    /// little).
    fn chunk(&self) -> u32 {
        let per = msg::per_fragment(self.p.cfg.paclen.0).unwrap_or(1);
        (per * msg::MAX_FRAGMENTS)
            .saturating_sub(ContentAns::OVERHEAD)
            .clamp(1, 16 * 1024) as u32
    }

    /// Sends the request of a transfer (its next chunk) and keeps it until
    /// the answer comes.
    fn ask(&mut self, t: Transfer) {
        let (to, req) = match &t {
            Transfer::Fetch { req, via, .. } => (*via, req.encode()),
            Transfer::Relay { .. } => unreachable!("relays are sent by on_content_request"),
        };
        let back = self.chunk() as usize;
        match self
            .ex
            .request(to, Kind::HttpReq, &req, Lane::Requests, back, self.now())
        {
            Ok((handle, outs)) => {
                self.transfers.insert(handle, t);
                self.carry_out(outs);
            }
            Err(e) => {
                if let Transfer::Fetch { reply, .. } = t {
                    let _gone = reply.send(Err(format!("request not sent: {e}")));
                }
            }
        }
    }

    /// The station to send a request for node `target` (its key's first 8
    /// bytes) to: its own, if heard lately; else one heard lately whose
    /// beacon lists it (the least lossy), not `except`.
    fn next_hop(&self, target: [u8; 8], except: Option<Address>) -> Option<Address> {
        let now = Instant::now();
        let recent = self.recent();
        let lately = self
            .heard
            .iter()
            .filter(|(a, h)| now.duration_since(h.at) < recent && Some(**a) != except);
        let mut best: Option<(&Address, f64)> = None;
        for (a, h) in lately {
            if h.key == Some(target) {
                return Some(*a);
            }
            if h.neighbours.iter().any(|n| n[..] == target[..4])
                && best.is_none_or(|(_, loss)| h.station.loss < loss)
            {
                best = Some((a, h.station.loss));
            }
        }
        best.map(|(a, _)| *a)
    }

    /// Another station's content request: answered from the store when
    /// this node holds it, relayed toward the holder otherwise (the IP
    /// mesh's rules: each request id once, at most the hop limit).
    fn on_content_request(&mut self, from: Address, id: u16, payload: &[u8]) {
        let req = match ContentReq::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.answer(from, id, &ContentAns::error(400, &e.to_string())),
        };
        let me = &self.p.node_id.0[..8];
        if req.target[..] == *me {
            let Some(serve) = self.p.serve.clone() else {
                return self.answer(
                    from,
                    id,
                    &ContentAns::error(503, "this node serves no content over RF"),
                );
            };
            let back = self.cmd_tx.clone();
            tokio::spawn(async move {
                let (reply, rx) = oneshot::channel();
                let ask = ServeReq {
                    url: req.url,
                    start: req.start,
                    max: req.max,
                    reply,
                };
                let ans = match serve.send(ask).await {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| ContentAns::error(503, "the store did not answer")),
                    Err(_) => ContentAns::error(503, "the node is stopping"),
                };
                let _stopping = back.send(Cmd::Served { from, id, ans }).await;
            });
            return;
        }
        // a repeat of a request relayed before is not a loop: the exchange
        // layer answers repeats from what it sent; a new exchange with a
        // known request id is
        let now = Instant::now();
        self.seen.retain(|_, t| now.duration_since(*t) < SEEN_FOR);
        if self.seen.insert(req.request_id, now).is_some() {
            return self.answer(
                from,
                id,
                &ContentAns::error(508, "request passed this station before (a loop)"),
            );
        }
        if req.hops_left == 0 {
            return self.answer(from, id, &ContentAns::error(508, "hop limit reached"));
        }
        let Some(next) = self.next_hop(req.target, Some(from)) else {
            return self.answer(
                from,
                id,
                &ContentAns::error(
                    404,
                    &format!("{} hears no station that holds it", self.station),
                ),
            );
        };
        let fwd = ContentReq {
            hops_left: req.hops_left - 1,
            ..req
        };
        let back = fwd.max as usize;
        match self.ex.request(
            next,
            Kind::HttpReq,
            &fwd.encode(),
            Lane::Requests,
            back,
            self.now(),
        ) {
            Ok((handle, outs)) => {
                self.relayed += 1;
                self.transfers.insert(handle, Transfer::Relay { from, id });
                self.carry_out(outs);
            }
            Err(e) => self.answer(from, id, &ContentAns::error(503, &e.to_string())),
        }
    }

    fn answer(&mut self, to: Address, id: u16, ans: &ContentAns) {
        match self
            .ex
            .answer(to, id, Kind::HttpResp, &ans.encode(), Lane::Requests)
        {
            Ok(outs) => self.carry_out(outs),
            Err(e) => tracing::warn!(to = %to, error = %e, "RF answer not sent"),
        }
    }

    /// The answer to a transfer's request came (or it was given up).
    fn on_answer(&mut self, handle: u64, result: Result<Vec<u8>, String>) {
        let Some(t) = self.transfers.remove(&handle) else {
            return;
        };
        match t {
            Transfer::Relay { from, id } => {
                let ans = match result {
                    Ok(payload) => payload,
                    Err(e) => ContentAns::error(504, &e).encode(),
                };
                if let Err(e) = self
                    .ex
                    .answer(from, id, Kind::HttpResp, &ans, Lane::Requests)
                    .map(|o| self.carry_out(o))
                {
                    tracing::warn!(error = %e, "relayed RF answer not sent");
                }
            }
            Transfer::Fetch {
                mut req,
                via,
                mut got,
                started,
                reply,
                ..
            } => {
                let ans =
                    match result.and_then(|p| ContentAns::decode(&p).map_err(|e| e.to_string())) {
                        Ok(a) => a,
                        Err(e) => {
                            let _gone = reply.send(Err(e));
                            return;
                        }
                    };
                if ans.status != 200 {
                    let reason = String::from_utf8_lossy(&ans.body).into_owned();
                    let _gone =
                        reply.send(Err(format!("{} answered {}: {reason}", via, ans.status)));
                    return;
                }
                got.extend_from_slice(&ans.body);
                if got.len() as u64 >= ans.total || ans.body.is_empty() {
                    got.truncate(ans.total as usize);
                    let _gone = reply.send(Ok(Fetched {
                        content_type: ans.content_type,
                        body: got,
                    }));
                    return;
                }
                req.start = got.len() as u64;
                // each chunk is a request of its own (the loop rule is per request)
                req.request_id = self.rng.random();
                self.seen.insert(req.request_id, Instant::now());
                self.ask(Transfer::Fetch {
                    req,
                    via,
                    got,
                    total: Some(ans.total),
                    started,
                    reply,
                });
            }
        }
    }

    fn on_heard(&mut self, bytes: &[u8]) {
        self.counters.frames_heard += 1;
        let frame = match ax25::Frame::decode(bytes, ax25::Modulo::Eight) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, len = bytes.len(), "unreadable AX.25 frame heard");
                return;
            }
        };
        let src = frame.src().with_ch_bit(false).with_reserved_bits(0b11);
        if src.same_station(self.station) {
            return; // our own frame, repeated by a digipeater
        }
        let beacon = match Beacon::from_frame(&frame) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(from = %src, error = %e, "bad beacon heard");
                None
            }
        };
        let now = Instant::now();
        let unix = crate::store::now_ms();
        if !self.heard.contains_key(&src)
            && self.heard.len() >= MAX_STATIONS
            && let Some(oldest) = self.heard.iter().min_by_key(|(_, h)| h.at).map(|(a, _)| *a)
        {
            self.heard.remove(&oldest);
        }
        let loud = !self.heard.contains_key(&src) && self.log_gate.allow(now);
        let h = self.heard.entry(src).or_insert_with(|| {
            if loud {
                tracing::info!(station = %src, "station heard on RF");
            } else {
                tracing::debug!(station = %src, "station heard on RF");
            }
            Heard {
                station: Station {
                    callsign: src.to_string(),
                    node: None,
                    catalog_digest: None,
                    http_port: None,
                    key_prefix: None,
                    frames_heard: 0,
                    beacons_heard: 0,
                    beacons_lost: 0,
                    loss: 0.0,
                    rtt_ms: None,
                    retries: 0,
                    first_heard: unix,
                    last_heard: unix,
                },
                last_seq: None,
                at: now,
                key: None,
                neighbours: Vec::new(),
            }
        });
        h.at = now;
        h.station.frames_heard += 1;
        h.station.last_heard = unix;
        let Some(b) = beacon else {
            if frame.pid() == Some(msg::PID) && matches!(frame.control(), ax25::Control::Ui { .. })
            {
                let outs = {
                    let cat = self.p.mesh.view.catalog.read().expect("catalog lock");
                    self.ex
                        .on_frame(src, frame.dst(), frame.info(), self.now(), &cat)
                };
                self.carry_out(outs);
            }
            return;
        };
        {
            if let Some(last) = h.last_seq {
                match missed(last, b.seq) {
                    None => return, // the same beacon again (a digipeated copy)
                    Some(n) => h.station.beacons_lost += n,
                }
            }
            h.last_seq = Some(b.seq);
            h.station.beacons_heard += 1;
            let s = &mut h.station;
            s.loss = s.beacons_lost as f64 / (s.beacons_heard + s.beacons_lost) as f64;
            if s.node.as_deref() != Some(&b.name) {
                if self.log_gate.allow(now) {
                    tracing::info!(station = %src, node = %b.name, digest = %b.catalog_digest(), "meshnode beacon heard");
                } else {
                    tracing::debug!(station = %src, node = %b.name, "meshnode beacon heard");
                }
            }
            s.node = Some(b.name.clone());
            s.catalog_digest = Some(b.catalog_digest());
            s.http_port = b.http_port;
            s.key_prefix = b.key_prefix.map(hex::encode);
            h.key = b.key_prefix;
            h.neighbours = b.neighbours.clone();
        }
        let outs = {
            let cat = self.p.mesh.view.catalog.read().expect("catalog lock");
            self.ex
                .on_beacon(src, (b.records, b.fingerprint), self.now(), &cat)
        };
        self.carry_out(outs);
    }

    /// Does what the exchanges ask: queues their frames, hands records to
    /// the mesh task (verified here, as records from IP peers are).
    fn carry_out(&mut self, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::Send { to, lane, frames } => {
                    for info in frames {
                        let frame = match ax25::Frame::ui(self.station, to, &[], msg::PID, info) {
                            Ok(f) => f.encode(),
                            Err(e) => {
                                tracing::warn!(error = %e, "RF message not sent");
                                continue;
                            }
                        };
                        let queued = match lane {
                            Lane::Background => self
                                .sched
                                .push_background(frame, BgKey::EXCHANGE)
                                .map(|_| ()),
                            Lane::Requests => self.sched.push_request(frame).map(|_| ()),
                        };
                        if let Err(e) = queued {
                            // the other station asks again for what it lacks
                            tracing::debug!(to = %to, error = %e, "RF message fragment not queued");
                        }
                    }
                }
                Out::Records { from, wire } => {
                    let (recs, bad) =
                        crate::sync::record::open_many(&wire, crate::identity::verify);
                    let view = &self.p.mesh.view;
                    view.counters
                        .records_rejected
                        .fetch_add(bad as u64, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(from = %from, records = recs.len(), rejected = bad, "catalog records heard on RF");
                    if !recs.is_empty() {
                        let mesh = self.p.mesh.clone();
                        tokio::spawn(async move { mesh.push_records(recs).await });
                    }
                }
                Out::HttpRequest { from, id, payload } => {
                    self.on_content_request(from, id, &payload)
                }
                Out::Answer { handle, result } => self.on_answer(handle, result),
            }
        }
    }

    /// How long a station counts as "heard lately" for the network mode:
    /// three beacon intervals, from 30 s to an hour (30 minutes with
    /// beacons off).
    fn recent(&self) -> Duration {
        match self.p.cfg.beacon_interval.0 {
            d if d.is_zero() => Duration::from_secs(1800),
            d => (d * 3).clamp(Duration::from_secs(30), Duration::from_secs(3600)),
        }
    }

    /// Writes the status view and the count of recent stations.
    fn publish(&mut self) {
        let now = Instant::now();
        self.heard
            .retain(|_, h| now.duration_since(h.at) < STATION_EXPIRY);
        let recent = self.recent();
        let lately = self
            .heard
            .values()
            .filter(|h| now.duration_since(h.at) < recent)
            .count();
        self.stations_tx.send_if_modified(|n| {
            let changed = *n != lately;
            *n = lately;
            changed
        });
        let t = self.now();
        let used = self.log.used(t);
        let totals = self.log.totals();
        let (bg, req) = self.sched.queued();
        let mut stations: Vec<(&Address, &Heard)> = self.heard.iter().collect();
        stations.sort_by_key(|(_, h)| std::cmp::Reverse(h.at));
        let window = self.log.window().min(t.max(1));
        let mut v = self.view.write().expect("rf status lock");
        v.connected = self.link_state.is_up();
        (v.via, v.reason) = match &self.link_state {
            LinkState::Up { via } => (Some(via.clone()), None),
            LinkState::Connecting => (None, Some("connecting to the TNC".into())),
            LinkState::Down { reason } => (None, Some(reason.clone())),
        };
        let ms = |us: Micros| us / 1000;
        v.airtime.background_ms = ms(used.background_us);
        v.airtime.background_share = used.background_us as f64 / window as f64;
        v.airtime.requests_ms = ms(used.requests_us);
        v.airtime.id_ms = ms(used.id_us);
        v.airtime.total_background_ms = ms(totals.background_us);
        v.airtime.total_requests_ms = ms(totals.requests_us);
        v.airtime.total_id_ms = ms(totals.id_us);
        v.queued = Queued {
            background: bg,
            requests: req,
        };
        v.frames_sent = self.counters.frames_sent;
        v.frames_heard = self.counters.frames_heard;
        v.beacons_sent = self.counters.beacons_sent;
        v.ids_sent = self.counters.ids_sent;
        v.last_id = self.last_id_unix;
        v.stations = stations
            .into_iter()
            .map(|(a, h)| {
                let link = self.ex.link(a);
                Station {
                    rtt_ms: link.rtt_us.map(|us| us as f64 / 1000.0),
                    retries: link.retries,
                    ..h.station.clone()
                }
            })
            .collect();
        v.sync = self.ex.stats;
        v.transfers = self
            .transfers
            .values()
            .filter_map(|t| match t {
                Transfer::Fetch {
                    req,
                    via,
                    got,
                    total,
                    started,
                    ..
                } => Some(TransferStatus {
                    url: req.url.clone(),
                    via: via.to_string(),
                    bytes: got.len() as u64,
                    total: *total,
                    started: *started,
                }),
                Transfer::Relay { .. } => None,
            })
            .collect();
        v.content_served = self.served;
        v.content_relayed = self.relayed;
    }
}

/// Beacons missed between sequence numbers `last` and `seq`: `None` for
/// the same beacon again; 0 after a jump of more than [`MAX_SEQ_GAP`]
/// (the station restarted its count, or it was out of range for long).
pub fn missed(last: u16, seq: u16) -> Option<u64> {
    match seq.wrapping_sub(last) {
        0 => None,
        gap if gap <= MAX_SEQ_GAP => Some(u64::from(gap - 1)),
        _ => Some(0),
    }
}

/// Whether the random extra wait that began when the scheduler said "not
/// before `t`" (`d` µs more) still holds at `now`, and until when: not
/// once over, nor when an ID is due, nor when something can go before `t`
/// (`ready`, the scheduler's earliest time now: a frame queued meanwhile
/// on a lane with airtime, e.g. a user's request while a beacon waits for
/// the background budget, does not wait for another lane's turn).
pub fn dither_holds(
    t: Micros,
    d: Micros,
    now: Micros,
    ready: Option<Micros>,
    id_due: Option<Micros>,
) -> Option<Micros> {
    if now >= t + d || id_due.is_some_and(|due| due <= now) || ready.is_some_and(|r| r < t) {
        return None;
    }
    Some(id_due.map_or(t + d, |due| due.min(t + d)))
}

/// Sleeps until `t`, or forever without one.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The largest frame the link sends: a UI header without digipeaters and
/// `paclen` info bytes, or a beacon if that is longer.
pub fn max_frame(paclen: usize) -> usize {
    2 * ax25::ADDR_LEN + 2 + paclen.max(beacon::MAX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacons_missed_from_sequence_numbers() {
        assert_eq!(missed(5, 6), Some(0));
        assert_eq!(missed(5, 9), Some(3));
        assert_eq!(missed(65535, 1), Some(1), "wraps");
        assert_eq!(missed(5, 5), None, "a digipeated copy");
        assert_eq!(missed(500, 3), Some(0), "a restart is not a loss");
    }

    #[test]
    fn a_random_wait_holds_only_for_what_waited() {
        const S: Micros = 1_000_000;
        // a beacon waits for the background budget until 30 s, + 1 s at random
        assert_eq!(
            dither_holds(30 * S, S, 10 * S, Some(30 * S), None),
            Some(31 * S)
        );
        // a request queued at 10 s can go now: the wait is over for it
        assert_eq!(dither_holds(30 * S, S, 10 * S, Some(10 * S), None), None);
        // ... or a little later, still before the beacon's turn
        assert_eq!(dither_holds(30 * S, S, 10 * S, Some(12 * S), None), None);
        // the random part after the turn holds (that is its point)
        assert_eq!(
            dither_holds(30 * S, S, 30 * S + 1, Some(30 * S), None),
            Some(31 * S)
        );
        assert_eq!(dither_holds(30 * S, S, 31 * S, Some(30 * S), None), None);
        // an owed ID wakes it, and never waits
        assert_eq!(
            dither_holds(30 * S, S, 10 * S, Some(30 * S), Some(20 * S)),
            Some(20 * S)
        );
        assert_eq!(
            dither_holds(30 * S, S, 20 * S, Some(20 * S), Some(20 * S)),
            None
        );
    }

    #[test]
    fn the_largest_frame_holds_a_beacon() {
        assert_eq!(max_frame(256), 16 + 256);
        assert_eq!(max_frame(32), 16 + beacon::MAX_LEN);
    }

    #[test]
    fn the_log_gate_lets_ten_a_minute_through() {
        let mut g = LogGate::default();
        let t = Instant::now();
        assert_eq!((0..15).filter(|_| g.allow(t)).count(), 10);
        assert!(g.allow(t + Duration::from_secs(61)));
    }
}
