//! A deterministic simulator of many gossip cores: virtual time, a seeded
//! RNG, per-link latency, random loss and partitions (iroh-gossip's
//! `proto/sim.rs` idea). Used by the tests and by `bench/gossip_sim`.
//!
//! Each node runs the real [`Gossip`] core and holds a catalog as an
//! [`IdSet`]. Catalog changes travel as the core announces them; a node that
//! hears of ids it lacks fetches them from the neighbour that told it (one
//! round trip later); differing heartbeats trigger a real
//! [`reconcile_in_memory`] run whose bytes are charged to both sides and whose
//! rounds cost round trips. Signatures use [`HashCrypto`], a keyed SHA-256
//! stand-in: Ed25519 is real in the wire tests and in the daemon, but at
//! millions of messages per scenario it would make the simulator too slow
//! to run in CI. Message sizes are the real ones (64-byte signatures).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::proto::{Config, Crypto, Gossip, InEvent, OutEvent};
use super::wire::PeerInfo;
use crate::node::NodeId;
use crate::sync::recon::{Id, IdSet, reconcile_in_memory};

/// Simulation stand-in for Ed25519: a 64-byte SHA-256 MAC keyed by the node id.
#[derive(Debug, Clone, Copy)]
pub struct HashCrypto(pub NodeId);

fn mac(node: &NodeId, body: &[u8]) -> [u8; 64] {
    use sha2::Digest;
    let a: [u8; 32] = sha2::Sha256::new()
        .chain_update(node.0)
        .chain_update(body)
        .finalize()
        .into();
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&a);
    out[32..].copy_from_slice(&a);
    out
}

impl Crypto for HashCrypto {
    fn node_id(&self) -> NodeId {
        self.0
    }
    fn sign(&self, body: &[u8]) -> [u8; 64] {
        mac(&self.0, body)
    }
    fn verify(&self, origin: &NodeId, body: &[u8], sig: &[u8; 64]) -> bool {
        mac(origin, body) == *sig
    }
}

/// A scenario.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes.
    pub nodes: usize,
    /// Overlay links per node (at least; a ring keeps the graph connected).
    pub degree: usize,
    /// One-way link latency, uniform in this range (ms).
    pub latency_ms: (u64, u64),
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// RNG seed: same seed, same run.
    pub seed: u64,
    /// The gossip core's tunables.
    pub gossip: Config,
}

impl SimConfig {
    /// 200 nodes, 6 links each, default gossip settings.
    pub fn mesh(latency_ms: (u64, u64), loss: f64, seed: u64) -> Self {
        Self {
            nodes: 200,
            degree: 6,
            latency_ms,
            loss,
            seed,
            gossip: Config::default(),
        }
    }
}

type Core = Gossip<u32, SmallRng, HashCrypto>;

struct SimNode {
    core: Core,
    catalog: IdSet,
    /// Bytes charged for reconciliations (both directions, half each side).
    recon_bytes: u64,
    /// Time each id arrived.
    arrived: HashMap<Id, u64>,
}

#[derive(Debug)]
enum Ev {
    Recv {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    Tick(u32),
    LinkUp(u32, u32),
    /// The driver's re-dial of known peers that are not neighbours (the persistent peer book).
    Redial(u32),
    Fetched {
        node: u32,
        ids: Vec<Id>,
    },
    Reconciled {
        a: u32,
        b: u32,
    },
}

struct Timed(u64, u64, Ev);
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    latency: HashMap<(u32, u32), u64>,
    adj: Vec<Vec<u32>>,
    queue: BinaryHeap<Reverse<Timed>>,
    side: Option<Vec<bool>>,
    /// Datagrams dropped by loss or partition.
    pub lost: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sim({} nodes at {} ms)", self.nodes.len(), self.now)
    }
}

fn node_id(i: u32) -> NodeId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[31] = 1;
    NodeId(b)
}

impl Sim {
    /// Builds the overlay and starts every node (links come up in the first second).
    pub fn new(cfg: SimConfig) -> Self {
        let rng = SmallRng::seed_from_u64(cfg.seed);
        let n = cfg.nodes as u32;
        let mut nodes = Vec::new();
        for i in 0..n {
            let me = PeerInfo {
                node: node_id(i),
                name: format!("N{i}-sim"),
                addrs: vec![],
                is_bootstrap: false,
            };
            let core = Gossip::new(
                cfg.gossip.clone(),
                HashCrypto(node_id(i)),
                SmallRng::seed_from_u64(cfg.seed ^ u64::from(i)),
                me,
                0,
            );
            nodes.push(SimNode {
                core,
                catalog: IdSet::default(),
                recon_bytes: 0,
                arrived: HashMap::new(),
            });
        }
        let mut sim = Sim {
            cfg,
            now: 0,
            seq: 0,
            rng,
            nodes,
            latency: HashMap::new(),
            adj: vec![Vec::new(); n as usize],
            queue: BinaryHeap::new(),
            side: None,
            lost: 0,
        };
        let mut degree = vec![0usize; n as usize];
        let add = |sim: &mut Sim, degree: &mut Vec<usize>, a: u32, b: u32| {
            let key = (a.min(b), a.max(b));
            if a == b || sim.latency.contains_key(&key) {
                return false;
            }
            let (lo, hi) = sim.cfg.latency_ms;
            let l = sim.rng.random_range(lo..=hi);
            sim.latency.insert(key, l);
            sim.adj[a as usize].push(b);
            sim.adj[b as usize].push(a);
            degree[a as usize] += 1;
            degree[b as usize] += 1;
            let at = sim.rng.random_range(0..1000);
            sim.push(at, Ev::LinkUp(a, b));
            true
        };
        for i in 0..n {
            add(&mut sim, &mut degree, i, (i + 1) % n);
        }
        for i in 0..n {
            let mut tries = 0;
            while degree[i as usize] < sim.cfg.degree && tries < 100 {
                let j = sim.rng.random_range(0..n);
                add(&mut sim, &mut degree, i, j);
                tries += 1;
            }
        }
        for i in 0..n {
            let at = sim.rng.random_range(0..sim.cfg.gossip.heartbeat_ms);
            sim.push(at, Ev::Tick(i));
            let at =
                sim.cfg.gossip.heartbeat_ms + sim.rng.random_range(0..sim.cfg.gossip.heartbeat_ms);
            sim.push(at, Ev::Redial(i));
        }
        sim
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Timed(at, self.seq, ev)));
    }

    fn link_latency(&self, a: u32, b: u32) -> u64 {
        self.latency
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(self.cfg.latency_ms.1)
    }

    /// Virtual time now (ms).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Processes events up to time `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(Reverse(Timed(at, _, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            let Reverse(Timed(at, _, ev)) = self.queue.pop().expect("peeked");
            self.now = at;
            self.step(ev);
        }
        self.now = t;
    }

    fn feed(&mut self, i: u32, ev: InEvent<u32>) {
        let now = self.now;
        let out = self.nodes[i as usize].core.handle(ev, now, now as i64);
        for o in out {
            match o {
                OutEvent::Send { to, bytes } => {
                    let cut = self
                        .side
                        .as_ref()
                        .is_some_and(|s| s[i as usize] != s[to as usize]);
                    if cut || self.rng.random_bool(self.cfg.loss) {
                        self.lost += 1;
                        continue;
                    }
                    let at = now + self.link_latency(i, to);
                    self.push(at, Ev::Recv { to, from: i, bytes });
                }
                OutEvent::NextTick(t) => self.push(t.max(now + 1), Ev::Tick(i)),
                OutEvent::CatalogChange { ids, via, .. } => {
                    let missing: Vec<Id> = ids
                        .into_iter()
                        .filter(|id| !self.nodes[i as usize].catalog.contains(id))
                        .collect();
                    if !missing.is_empty() {
                        let at = now + 2 * self.link_latency(i, via);
                        self.push(
                            at,
                            Ev::Fetched {
                                node: i,
                                ids: missing,
                            },
                        );
                    }
                }
                OutEvent::Reconcile(peer) => {
                    let (_, rounds, bytes) = reconcile_in_memory(
                        &self.nodes[i as usize].catalog,
                        &self.nodes[peer as usize].catalog,
                    );
                    self.nodes[i as usize].recon_bytes += bytes as u64 / 2;
                    self.nodes[peer as usize].recon_bytes += bytes as u64 / 2;
                    let at = now + 2 * self.link_latency(i, peer) * rounds as u64;
                    self.push(at, Ev::Reconciled { a: i, b: peer });
                }
                OutEvent::Dial(_)
                | OutEvent::PeerJoined(_)
                | OutEvent::PeerLeft(_)
                | OutEvent::Demand { .. } => {}
            }
        }
    }

    fn add_ids(&mut self, i: u32, ids: &[Id], announce_own: bool) -> bool {
        let node = &mut self.nodes[i as usize];
        let mut grew = false;
        for id in ids {
            if node.catalog.insert(*id) {
                node.arrived.insert(*id, self.now);
                grew = true;
            }
        }
        if grew {
            let (len, xor) = node.catalog.fingerprint();
            let ids = if announce_own {
                ids.to_vec()
            } else {
                Vec::new()
            };
            self.feed(
                i,
                InEvent::Catalog {
                    len,
                    xor,
                    ids,
                    tell_neighbours: !announce_own,
                },
            );
        }
        grew
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Recv { to, from, bytes } => self.feed(to, InEvent::Recv { from, bytes }),
            Ev::Tick(i) => self.feed(i, InEvent::Tick),
            Ev::LinkUp(a, b) => self.feed(a, InEvent::LinkUp(b)),
            Ev::Redial(i) => {
                let lost: Vec<u32> = {
                    let core = &self.nodes[i as usize].core;
                    let have: Vec<u32> = core.neighbours().map(|(a, _)| *a).collect();
                    self.adj[i as usize]
                        .iter()
                        .filter(|j| !have.contains(j))
                        .copied()
                        .collect()
                };
                for j in lost {
                    self.feed(i, InEvent::LinkUp(j));
                }
                // jittered, like the daemon's re-dial schedule
                let hb = self.cfg.gossip.heartbeat_ms;
                let at = self.now + hb / 2 + self.rng.random_range(0..hb);
                self.push(at, Ev::Redial(i));
            }
            Ev::Fetched { node, ids } => {
                self.add_ids(node, &ids, false);
            }
            Ev::Reconciled { a, b } => {
                let cut = self
                    .side
                    .as_ref()
                    .is_some_and(|s| s[a as usize] != s[b as usize]);
                if cut {
                    return;
                }
                let from_b: Vec<Id> = self.nodes[b as usize].catalog.iter().copied().collect();
                let from_a: Vec<Id> = self.nodes[a as usize].catalog.iter().copied().collect();
                self.add_ids(a, &from_b, false);
                self.add_ids(b, &from_a, false);
            }
        }
    }

    /// Node `i` publishes a new record id.
    pub fn publish(&mut self, i: u32, id: Id) {
        self.add_ids(i, &[id], true);
    }

    /// Splits the nodes in two halves (by index); links across drop everything.
    pub fn partition(&mut self) {
        let n = self.nodes.len();
        self.side = Some((0..n).map(|i| i < n / 2).collect());
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.side = None;
    }

    /// How many nodes hold `id`.
    pub fn holders(&self, id: &Id) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.arrived.contains_key(id))
            .count()
    }

    /// Runs until every node holds every id in `ids` or `deadline` passes;
    /// returns the time it took (from now), or `None`.
    pub fn run_until_everyone_has(&mut self, ids: &[Id], deadline: u64) -> Option<u64> {
        let start = self.now;
        while self.now < deadline {
            if ids.iter().all(|id| self.holders(id) == self.nodes.len()) {
                let last = self
                    .nodes
                    .iter()
                    .flat_map(|n| ids.iter().filter_map(|id| n.arrived.get(id)))
                    .max()
                    .copied()
                    .unwrap_or(start);
                return Some(last.saturating_sub(start));
            }
            let t = (self.now + 50).min(deadline);
            self.run_until(t);
        }
        None
    }

    /// Datagram bytes sent and reconciliation bytes per node, summed.
    pub fn traffic(&self) -> (u64, u64, u64) {
        let msgs = self.nodes.iter().map(|n| n.core.stats.sent).sum();
        let bytes = self.nodes.iter().map(|n| n.core.stats.sent_bytes).sum();
        let recon = self.nodes.iter().map(|n| n.recon_bytes).sum();
        (msgs, bytes, recon)
    }

    /// Do all nodes hold the same catalog?
    pub fn converged(&self) -> bool {
        let first = self.nodes[0].catalog.fingerprint();
        self.nodes.iter().all(|n| n.catalog.fingerprint() == first)
    }

    /// Nodes in the run.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a simulation has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Figures of one scenario run (see [`run_scenario`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Time for a change published on one node to reach all (ms).
    pub spread_ms: Option<u64>,
    /// Gossip datagrams per node per second in steady state.
    pub msgs_per_node_s: f64,
    /// Gossip + reconciliation bytes per node per second in steady state.
    pub bytes_per_node_s: f64,
    /// After a 50/50 partition with edits on both sides and a heal: time to
    /// converge (ms), if a partition was part of the scenario.
    pub heal_ms: Option<u64>,
    /// Every node ended with the same catalog.
    pub converged: bool,
}

fn rid(n: u64) -> Id {
    use sha2::Digest;
    sha2::Sha256::digest(n.to_le_bytes()).into()
}

/// The scenario: warm up, measure steady-state traffic over
/// `steady_ms`, publish one change and time its spread, then (optionally)
/// partition 50/50, edit both halves, heal after `partition_ms` and time the merge.
pub fn run_scenario(cfg: SimConfig, steady_ms: u64, partition_ms: Option<u64>) -> Report {
    let mut sim = Sim::new(cfg.clone());
    let warm = 2 * cfg.gossip.heartbeat_ms;
    sim.run_until(warm);
    let (m0, b0, r0) = sim.traffic();
    sim.run_until(warm + steady_ms);
    let (m1, b1, r1) = sim.traffic();
    let secs = steady_ms as f64 / 1000.0 * sim.len() as f64;
    let msgs_per_node_s = (m1 - m0) as f64 / secs;
    let bytes_per_node_s = ((b1 - b0) + (r1 - r0)) as f64 / secs;
    let change = rid(1);
    sim.publish(0, change);
    let spread_ms = sim.run_until_everyone_has(&[change], sim.now() + 120_000);
    let heal_ms = partition_ms.map(|p| {
        sim.partition();
        let (a, b) = (rid(2), rid(3));
        sim.publish(0, a);
        sim.publish(sim.len() as u32 - 1, b);
        sim.run_until(sim.now() + p);
        sim.heal();
        sim.run_until_everyone_has(&[a, b], sim.now() + 600_000)
            .unwrap_or(u64::MAX)
    });
    Report {
        spread_ms,
        msgs_per_node_s,
        bytes_per_node_s,
        heal_ms,
        converged: sim.converged(),
    }
}
