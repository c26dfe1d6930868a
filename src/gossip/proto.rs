//! The gossip protocol core: membership and dissemination, sans-IO.
//!
//! One [`Gossip`] per node, driven by one task (or by the simulator): feed it
//! [`InEvent`]s with the current time, carry out the [`OutEvent`]s it returns.
//! Time is an argument and randomness a type parameter, so the same core runs
//! in the daemon, in tests and in [`super::sim`] (iroh-gossip's shape).
//!
//! - **Links.** `A` is the driver's address of a direct neighbour (a socket
//!   address in the daemon, an index in the simulator). A link becomes a
//!   neighbour when a signed HELLO arrives on it. The core never turns a link
//!   address into gossip: [`PeerInfo::addrs`] is only what a node says about
//!   itself, and a silent node (`broadcast = false`) says nothing. That is the
//!   IP-sharing rule, enforced by construction.
//! - **Dissemination.** The origin sends a new message to all its neighbours;
//!   each node that sees it for the first time forwards it to `fanout` random
//!   neighbours while `hops_left` lasts. Message ids (SHA-256 of the signed
//!   body) are remembered to drop duplicates; per-origin sequence numbers keep
//!   stale state from overwriting newer state; messages dated too far in the
//!   future are dropped. Every drop is counted.
//! - **Anti-entropy.** Heartbeats carry a fingerprint of the origin's catalog.
//!   When a neighbour's differs from ours, the core asks the driver to
//!   reconcile catalogs with it ([`OutEvent::Reconcile`], see
//!   [`crate::sync::recon`]); a node whose catalog grew that way tells its
//!   neighbours at once with a one-hop heartbeat, so repairs (after loss or a
//!   partition) spread at link speed rather than per heartbeat.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use rand::Rng;
use rand::seq::IndexedRandom;

use super::wire::{Datagram, Kind, MAX_BODY, MAX_LINKS, Message, PeerInfo, WireLink};
use crate::node::NodeId;

/// Tunables; defaults suit a community mesh of up to a few hundred nodes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Neighbours each forwarder passes a new message to (the default 3).
    pub fanout: usize,
    /// Hops a message may travel; 8 covers a 200-node mesh with margin.
    pub ttl: u8,
    /// Heartbeat period; 30 s keeps idle traffic tiny.
    pub heartbeat_ms: u64,
    /// A peer not heard from for this long is gone (3 heartbeats + margin).
    pub expiry_ms: u64,
    /// Messages dated further ahead than this (origin clock) are dropped.
    pub max_future_ms: i64,
    /// Message ids remembered for deduplication.
    pub seen_capacity: usize,
    /// Most peers in one PEER_LIST_RESPONSE (keeps it in one datagram).
    pub peer_list_max: usize,
    /// Each neighbour is pinged this often to measure round-trip time and loss.
    pub probe_ms: u64,
    /// Loss is the share of the last this-many pings left unanswered.
    pub probe_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fanout: 3,
            ttl: 8,
            heartbeat_ms: 30_000,
            expiry_ms: 95_000,
            max_future_ms: 300_000,
            seen_capacity: 8192,
            peer_list_max: 8,
            probe_ms: 2_000,
            probe_window: 16,
        }
    }
}

/// Signs and verifies bodies: Ed25519 in the daemon ([`crate::identity`]).
pub trait Crypto {
    /// This node.
    fn node_id(&self) -> NodeId;
    /// Signs a body.
    fn sign(&self, body: &[u8]) -> [u8; 64];
    /// Checks a body's signature by `origin`.
    fn verify(&self, origin: &NodeId, body: &[u8], sig: &[u8; 64]) -> bool;
}

impl<T: Crypto + ?Sized> Crypto for std::sync::Arc<T> {
    fn node_id(&self) -> NodeId {
        (**self).node_id()
    }
    fn sign(&self, body: &[u8]) -> [u8; 64] {
        (**self).sign(body)
    }
    fn verify(&self, origin: &NodeId, body: &[u8], sig: &[u8; 64]) -> bool {
        (**self).verify(origin, body, sig)
    }
}

impl Crypto for crate::identity::Identity {
    fn node_id(&self) -> NodeId {
        crate::identity::Identity::node_id(self)
    }
    fn sign(&self, body: &[u8]) -> [u8; 64] {
        crate::identity::Identity::sign(self, body)
    }
    fn verify(&self, origin: &NodeId, body: &[u8], sig: &[u8; 64]) -> bool {
        crate::identity::verify(origin, body, sig)
    }
}

/// Inputs.
#[derive(Debug, Clone)]
pub enum InEvent<A> {
    /// A datagram arrived on link `from`.
    Recv {
        /// The link.
        from: A,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The driver found a possible neighbour (mDNS, static, bootstrap): say HELLO.
    LinkUp(A),
    /// Time passed (the core asked for it with [`OutEvent::NextTick`]).
    Tick,
    /// Our catalog changed: new fingerprint; `ids` are records we originated
    /// (announced to the mesh); `tell_neighbours` sends a one-hop heartbeat.
    Catalog {
        /// Entries.
        len: u32,
        /// XOR fingerprint.
        xor: u64,
        /// New own records to announce.
        ids: Vec<[u8; 32]>,
        /// The change came from a reconciliation: let neighbours compare now.
        tell_neighbours: bool,
    },
    /// Our own info changed (name, broadcast addresses): PEER_UPDATE.
    SetInfo(PeerInfo),
    /// Our clients' cumulative requests for popular items.
    Demand(Vec<([u8; 8], u32)>),
    /// Our links and mode changed (the driver adds link kinds to what
    /// [`Gossip::link_quality`] measured): tell the mesh.
    LinkState {
        /// See [`Kind::LinkState`].
        mode: u8,
        /// At most [`MAX_LINKS`] are sent.
        links: Vec<WireLink>,
    },
}

/// Outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum OutEvent<A> {
    /// Send a datagram on a link.
    Send {
        /// The link.
        to: A,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Records announced by their origin: fetch those we lack.
    CatalogChange {
        /// Who announced them.
        origin: NodeId,
        /// Record ids.
        ids: Vec<[u8; 32]>,
        /// The link it came from (a node that has them).
        via: A,
    },
    /// Our catalog differs from this neighbour's: reconcile with it.
    Reconcile(A),
    /// Demand counts from a node's clients.
    Demand {
        /// Whose clients.
        origin: NodeId,
        /// (record short id, cumulative count).
        counts: Vec<([u8; 8], u32)>,
    },
    /// A peer (with broadcast addresses) to try as a neighbour.
    Dial(std::net::SocketAddr),
    /// A new peer.
    PeerJoined(NodeId),
    /// A peer expired.
    PeerLeft(NodeId),
    /// Call [`Gossip::handle`] with [`InEvent::Tick`] at this time (ms).
    NextTick(u64),
}

/// What the core knows about a peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// What it said about itself, if we heard an announcement.
    pub info: Option<PeerInfo>,
    /// When we first heard of it.
    pub discovered_at: u64,
    /// When we last heard from it.
    pub last_seen: u64,
    /// Highest sequence number seen from it.
    pub last_seq: u64,
    /// Its catalog fingerprint (entries, xor) from its last heartbeat.
    pub catalog: (u32, u64),
    /// Its last LINK_STATE: (mode, links).
    pub links: Option<(u8, Vec<WireLink>)>,
}

impl Peer {
    fn first_heard(now: u64) -> Self {
        Self {
            info: None,
            discovered_at: now,
            last_seen: now,
            last_seq: 0,
            catalog: (0, 0),
            links: None,
        }
    }
}

/// Counters of every branch, for metrics and the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the driver.
    pub sent: u64,
    /// Bytes handed to the driver.
    pub sent_bytes: u64,
    /// Datagrams received.
    pub received: u64,
    /// Dropped: bad framing, body or signature.
    pub dropped_invalid: u64,
    /// Dropped: seen before.
    pub dropped_duplicate: u64,
    /// Dropped: dated too far in the future.
    pub dropped_future: u64,
    /// Reconciliations requested.
    pub reconciles: u64,
}

#[derive(Debug)]
struct Neighbour {
    node: NodeId,
    last_heard: u64,
    /// Last time we asked to reconcile with it (rate limit).
    last_reconcile: Option<u64>,
    probe: Probe,
}

/// Round-trip time and loss of one link, from PING/PONG.
#[derive(Debug, Default)]
struct Probe {
    /// Pings in flight: (nonce, sent at).
    pending: VecDeque<(u32, u64)>,
    /// Outcomes of the last pings, newest last: answered or not.
    outcomes: VecDeque<bool>,
    /// Smoothed RTT (ms), EWMA with weight 1/4 for a new sample.
    rtt_ms: Option<f64>,
}

impl Probe {
    fn outcome(&mut self, ok: bool, window: usize) {
        self.outcomes.push_back(ok);
        while self.outcomes.len() > window {
            self.outcomes.pop_front();
        }
    }

    /// Share of the recent pings left unanswered (0 before any ping ended).
    fn loss(&self) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.outcomes.iter().filter(|ok| !**ok).count() as f64 / self.outcomes.len() as f64
    }
}

/// A neighbour's link as measured by PING/PONG.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkQuality<A> {
    /// The link.
    pub addr: A,
    /// The neighbour.
    pub node: NodeId,
    /// Smoothed round-trip time (ms); `None` before the first answer.
    pub rtt_ms: Option<f64>,
    /// Share of recent pings unanswered, 0..=1.
    pub loss: f64,
}

/// One node's gossip state.
#[derive(Debug)]
pub struct Gossip<A, R, C> {
    cfg: Config,
    crypto: C,
    rng: R,
    me: PeerInfo,
    seq: u64,
    catalog: (u32, u64),
    peers: HashMap<NodeId, Peer>,
    neighbours: HashMap<A, Neighbour>,
    seen: HashMap<[u8; 16], ()>,
    seen_order: VecDeque<[u8; 16]>,
    next_heartbeat: u64,
    /// When we last flooded a PEER_ANNOUNCEMENT of ourselves.
    last_announce: Option<u64>,
    next_probe: u64,
    nonce: u32,
    /// Counters.
    pub stats: Stats,
}

impl<A: Clone + Eq + Hash, R: Rng, C: Crypto> Gossip<A, R, C> {
    /// A core for the node described by `me` (its `addrs` empty unless it broadcasts).
    pub fn new(cfg: Config, crypto: C, rng: R, me: PeerInfo, now: u64) -> Self {
        let next_heartbeat = now + cfg.heartbeat_ms;
        Self {
            cfg,
            crypto,
            rng,
            me,
            seq: 0,
            catalog: (0, 0),
            peers: HashMap::new(),
            neighbours: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            next_heartbeat,
            last_announce: None,
            next_probe: now,
            nonce: 0,
            stats: Stats::default(),
        }
    }

    /// The peer table.
    pub fn peers(&self) -> &HashMap<NodeId, Peer> {
        &self.peers
    }

    /// Current neighbours (links that said HELLO).
    pub fn neighbours(&self) -> impl Iterator<Item = (&A, &NodeId)> {
        self.neighbours.iter().map(|(a, n)| (a, &n.node))
    }

    /// Round-trip time and loss of every neighbour's link.
    pub fn link_quality(&self) -> Vec<LinkQuality<A>> {
        self.neighbours
            .iter()
            .map(|(a, n)| LinkQuality {
                addr: a.clone(),
                node: n.node,
                rtt_ms: n.probe.rtt_ms,
                loss: n.probe.loss(),
            })
            .collect()
    }

    /// Handles one event at time `now` (ms, monotonic) with wall clock `wall_ms`.
    pub fn handle(&mut self, ev: InEvent<A>, now: u64, wall_ms: i64) -> Vec<OutEvent<A>> {
        let mut out = Vec::new();
        match ev {
            InEvent::Recv { from, bytes } => self.on_recv(from, &bytes, now, wall_ms, &mut out),
            InEvent::LinkUp(a) => {
                let hello = self.seal(Kind::Hello(self.me.clone()), 0, wall_ms);
                self.send(a, hello, &mut out);
            }
            InEvent::Tick => self.on_tick(now, wall_ms, &mut out),
            InEvent::SetInfo(info) => {
                self.me = info.clone();
                self.originate(Kind::PeerUpdate(info), wall_ms, &mut out);
            }
            InEvent::Demand(counts) => {
                // 12 bytes each; split so every message fits one datagram
                for chunk in counts.chunks((MAX_BODY - 64) / 13) {
                    self.originate(
                        Kind::Demand {
                            counts: chunk.to_vec(),
                        },
                        wall_ms,
                        &mut out,
                    );
                }
            }
            InEvent::LinkState { mode, mut links } => {
                links.truncate(MAX_LINKS);
                self.originate(Kind::LinkState { mode, links }, wall_ms, &mut out);
            }
            InEvent::Catalog {
                len,
                xor,
                ids,
                tell_neighbours,
            } => {
                self.catalog = (len, xor);
                // ids travel 32 bytes each; split so each message fits one datagram
                for chunk in ids.chunks((MAX_BODY - 64) / 33) {
                    self.originate(
                        Kind::CatalogChange {
                            ids: chunk.to_vec(),
                        },
                        wall_ms,
                        &mut out,
                    );
                }
                if tell_neighbours && !self.neighbours.is_empty() {
                    let hb = self.seal(
                        Kind::Heartbeat {
                            catalog_len: len,
                            catalog_xor: xor,
                        },
                        0,
                        wall_ms,
                    );
                    for a in self.neighbours.keys().cloned().collect::<Vec<_>>() {
                        self.send(a, hb.clone(), &mut out);
                    }
                }
            }
        }
        out
    }

    fn seal(&mut self, kind: Kind, hops: u8, wall_ms: i64) -> Vec<u8> {
        self.seq += 1;
        let m = Message {
            origin: self.me.node,
            seq: self.seq,
            sent_ms: wall_ms,
            kind,
        };
        let bytes = m
            .seal(hops, |b| self.crypto.sign(b))
            .expect("callers keep messages under MAX_BODY");
        self.remember(Message::id_of(&bytes[super::wire::BODY_OFFSET..]));
        bytes
    }

    fn send(&mut self, to: A, bytes: Vec<u8>, out: &mut Vec<OutEvent<A>>) {
        self.stats.sent += 1;
        self.stats.sent_bytes += bytes.len() as u64;
        out.push(OutEvent::Send { to, bytes });
    }

    /// A new message of ours goes to every neighbour.
    fn originate(&mut self, kind: Kind, wall_ms: i64, out: &mut Vec<OutEvent<A>>) {
        let bytes = self.seal(kind, self.cfg.ttl, wall_ms);
        for a in self.neighbours.keys().cloned().collect::<Vec<_>>() {
            self.send(a, bytes.clone(), out);
        }
    }

    fn remember(&mut self, id: [u8; 16]) -> bool {
        if self.seen.insert(id, ()).is_some() {
            return false;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > self.cfg.seen_capacity
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    fn on_recv(
        &mut self,
        from: A,
        bytes: &[u8],
        now: u64,
        wall_ms: i64,
        out: &mut Vec<OutEvent<A>>,
    ) {
        self.stats.received += 1;
        let d = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(_) => {
                self.stats.dropped_invalid += 1;
                return;
            }
        };
        let id = Message::id_of(d.body);
        if self.seen.contains_key(&id) {
            self.stats.dropped_duplicate += 1;
            if let Some(n) = self.neighbours.get_mut(&from) {
                n.last_heard = now;
            }
            return;
        }
        let m = match d.open_with(|o, b, s| self.crypto.verify(o, b, s)) {
            Ok(m) => m,
            Err(_) => {
                self.stats.dropped_invalid += 1;
                return;
            }
        };
        if m.sent_ms > wall_ms + self.cfg.max_future_ms {
            self.stats.dropped_future += 1;
            return;
        }
        self.remember(id);
        if m.origin == self.me.node {
            return; // our own message came back
        }
        if let Some(n) = self.neighbours.get_mut(&from) {
            n.last_heard = now;
        }
        // peer table: newer state only
        let fresh = {
            let p = self
                .peers
                .entry(m.origin)
                .or_insert_with(|| Peer::first_heard(now));
            let fresh = m.seq > p.last_seq;
            if fresh {
                p.last_seq = m.seq;
                p.last_seen = now;
            }
            fresh
        };
        if self.peers[&m.origin].discovered_at == now && self.peers[&m.origin].last_seq == m.seq {
            out.push(OutEvent::PeerJoined(m.origin));
        }
        let forward = matches!(
            m.kind,
            Kind::PeerAnnouncement(_)
                | Kind::Heartbeat { .. }
                | Kind::PeerUpdate(_)
                | Kind::CatalogChange { .. }
                | Kind::Demand { .. }
                | Kind::LinkState { .. }
        );
        match &m.kind {
            Kind::Hello(info) => {
                self.set_info(info, fresh);
                let new = !self.neighbours.contains_key(&from);
                self.neighbours.insert(
                    from.clone(),
                    Neighbour {
                        node: m.origin,
                        last_heard: now,
                        last_reconcile: None,
                        probe: Probe::default(),
                    },
                );
                if new {
                    let hello = self.seal(Kind::Hello(self.me.clone()), 0, wall_ms);
                    self.send(from.clone(), hello, out);
                    let req = self.seal(
                        Kind::PeerRequest {
                            max: self.cfg.peer_list_max as u16,
                        },
                        0,
                        wall_ms,
                    );
                    self.send(from.clone(), req, out);
                    // compare catalogs on first contact
                    let hb = self.seal(
                        Kind::Heartbeat {
                            catalog_len: self.catalog.0,
                            catalog_xor: self.catalog.1,
                        },
                        0,
                        wall_ms,
                    );
                    self.send(from.clone(), hb, out);
                    // tell the mesh we exist (with our info), at most once per
                    // heartbeat period however many links come up
                    if self
                        .last_announce
                        .is_none_or(|t| now >= t + self.cfg.heartbeat_ms)
                    {
                        self.last_announce = Some(now);
                        self.originate(Kind::PeerAnnouncement(self.me.clone()), wall_ms, out);
                    }
                }
            }
            Kind::PeerAnnouncement(info) | Kind::PeerUpdate(info) => self.set_info(info, fresh),
            Kind::PeerRequest { max } => {
                let n = (*max as usize).min(self.cfg.peer_list_max);
                // only what nodes said about themselves; silent nodes carry no address
                let mut list: Vec<PeerInfo> = vec![self.me.clone()];
                list.extend(
                    self.peers
                        .values()
                        .filter_map(|p| p.info.clone())
                        .filter(|i| i.node != m.origin)
                        .take(n.saturating_sub(1)),
                );
                let resp = self.seal(Kind::PeerListResponse(list), 0, wall_ms);
                self.send(from.clone(), resp, out);
            }
            Kind::PeerListResponse(list) => {
                for info in list {
                    if info.node == self.me.node {
                        continue;
                    }
                    let known_neighbour = self.neighbours.values().any(|n| n.node == info.node);
                    if !known_neighbour {
                        out.extend(info.addrs.iter().map(|a| OutEvent::Dial(*a)));
                    }
                    let p = self
                        .peers
                        .entry(info.node)
                        .or_insert_with(|| Peer::first_heard(now));
                    p.info.get_or_insert_with(|| info.clone());
                }
            }
            Kind::Heartbeat {
                catalog_len,
                catalog_xor,
            } => {
                if fresh && let Some(p) = self.peers.get_mut(&m.origin) {
                    p.catalog = (*catalog_len, *catalog_xor);
                }
                let direct = self
                    .neighbours
                    .get(&from)
                    .is_some_and(|n| n.node == m.origin);
                if direct && (*catalog_len, *catalog_xor) != self.catalog {
                    let n = self.neighbours.get_mut(&from).expect("checked above");
                    // at most one request per neighbour per second: replies are in flight
                    if n.last_reconcile.is_none_or(|t| now >= t + 1000) {
                        n.last_reconcile = Some(now);
                        self.stats.reconciles += 1;
                        out.push(OutEvent::Reconcile(from.clone()));
                    }
                }
            }
            Kind::Demand { counts } => {
                if fresh {
                    out.push(OutEvent::Demand {
                        origin: m.origin,
                        counts: counts.clone(),
                    });
                }
            }
            Kind::Ping { nonce } => {
                let direct = self
                    .neighbours
                    .get(&from)
                    .is_some_and(|n| n.node == m.origin);
                if direct {
                    let pong = self.seal(Kind::Pong { nonce: *nonce }, 0, wall_ms);
                    self.send(from.clone(), pong, out);
                }
            }
            Kind::Pong { nonce } => {
                let window = self.cfg.probe_window;
                if let Some(n) = self.neighbours.get_mut(&from)
                    && n.node == m.origin
                    && let Some(i) = n.probe.pending.iter().position(|(x, _)| x == nonce)
                {
                    let (_, sent) = n.probe.pending.remove(i).expect("index found above");
                    let sample = now.saturating_sub(sent) as f64;
                    n.probe.rtt_ms = Some(match n.probe.rtt_ms {
                        Some(r) => r + (sample - r) / 4.0,
                        None => sample,
                    });
                    n.probe.outcome(true, window);
                }
            }
            Kind::LinkState { mode, links } => {
                if fresh && let Some(p) = self.peers.get_mut(&m.origin) {
                    p.links = Some((*mode, links.clone()));
                }
            }
            Kind::CatalogChange { ids } => {
                out.push(OutEvent::CatalogChange {
                    origin: m.origin,
                    ids: ids.clone(),
                    via: from.clone(),
                });
            }
        }
        if forward && let Some(fwd) = Datagram::forwarded(bytes) {
            let candidates: Vec<A> = self
                .neighbours
                .iter()
                .filter(|(a, n)| **a != from && n.node != m.origin)
                .map(|(a, _)| a.clone())
                .collect();
            let chosen: Vec<A> = candidates
                .choose_multiple(&mut self.rng, self.cfg.fanout)
                .cloned()
                .collect();
            for a in chosen {
                self.send(a, fwd.clone(), out);
            }
        }
    }

    fn set_info(&mut self, info: &PeerInfo, fresh: bool) {
        if let Some(p) = self.peers.get_mut(&info.node)
            && (fresh || p.info.is_none())
        {
            p.info = Some(info.clone());
        }
    }

    fn on_tick(&mut self, now: u64, wall_ms: i64, out: &mut Vec<OutEvent<A>>) {
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_ms;
            let (catalog_len, catalog_xor) = self.catalog;
            self.originate(
                Kind::Heartbeat {
                    catalog_len,
                    catalog_xor,
                },
                wall_ms,
                out,
            );
        }
        let expiry = self.cfg.expiry_ms;
        let gone: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.last_seen + expiry < now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.peers.remove(&id);
            out.push(OutEvent::PeerLeft(id));
        }
        self.neighbours.retain(|_, n| n.last_heard + expiry >= now);
        if now >= self.next_probe {
            self.next_probe = now + self.cfg.probe_ms;
            self.probe(now, wall_ms, out);
        }
        out.push(OutEvent::NextTick(
            self.next_heartbeat.min(self.next_probe).min(now + 5_000),
        ));
    }

    /// Pings every neighbour; a ping unanswered after two probe periods is lost.
    fn probe(&mut self, now: u64, wall_ms: i64, out: &mut Vec<OutEvent<A>>) {
        let (window, lost_after) = (self.cfg.probe_window, 2 * self.cfg.probe_ms);
        let links: Vec<A> = self.neighbours.keys().cloned().collect();
        for a in links {
            self.nonce = self.nonce.wrapping_add(1);
            let nonce = self.nonce;
            let n = self.neighbours.get_mut(&a).expect("key from the map");
            while let Some(&(_, sent)) = n.probe.pending.front()
                && sent + lost_after <= now
            {
                n.probe.pending.pop_front();
                n.probe.outcome(false, window);
            }
            n.probe.pending.push_back((nonce, now));
            let ping = self.seal(Kind::Ping { nonce }, 0, wall_ms);
            self.send(a, ping, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::sim::HashCrypto;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    type Core = Gossip<u32, SmallRng, HashCrypto>;

    fn core(n: u8, broadcast: bool) -> Core {
        let id = NodeId([n; 32]);
        let addrs = if broadcast {
            vec![format!("192.0.2.{n}:8080").parse().unwrap()]
        } else {
            vec![]
        };
        let me = PeerInfo {
            node: id,
            name: format!("N0CALL-{n}"),
            addrs,
            is_bootstrap: broadcast,
        };
        Gossip::new(
            Config::default(),
            HashCrypto(id),
            SmallRng::seed_from_u64(n as u64),
            me,
            0,
        )
    }

    fn sends(out: &[OutEvent<u32>]) -> Vec<(u32, Vec<u8>)> {
        out.iter()
            .filter_map(|e| {
                if let OutEvent::Send { to, bytes } = e {
                    Some((*to, bytes.clone()))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Delivers what core `from` sent (and everything that follows) until quiet.
    fn deliver(cores: &mut [Core], from: u32, out: &[OutEvent<u32>]) -> Vec<OutEvent<u32>> {
        pump(
            cores,
            sends(out)
                .into_iter()
                .map(|(to, b)| (from, to, b))
                .collect(),
        )
    }

    /// Delivers everything until quiet between cores indexed by their link number.
    fn pump(cores: &mut [Core], first: Vec<(u32, u32, Vec<u8>)>) -> Vec<OutEvent<u32>> {
        let mut queue: VecDeque<(u32, u32, Vec<u8>)> = first.into();
        let mut other = Vec::new();
        while let Some((from, to, bytes)) = queue.pop_front() {
            let out = cores[to as usize].handle(InEvent::Recv { from, bytes }, 1, 1);
            for e in out {
                match e {
                    OutEvent::Send { to: t, bytes } => queue.push_back((to, t, bytes)),
                    e => other.push(e),
                }
            }
        }
        other
    }

    /// Delivers `out`'s sends from core `from` at time `now`; returns what the
    /// receivers sent back, as (sender, receiver, bytes).
    fn hop(
        cores: &mut [Core],
        from: u32,
        out: Vec<OutEvent<u32>>,
        now: u64,
    ) -> Vec<(u32, u32, Vec<u8>)> {
        let mut back = Vec::new();
        for (to, bytes) in sends(&out) {
            for e in cores[to as usize].handle(InEvent::Recv { from, bytes }, now, now as i64) {
                if let OutEvent::Send { to: t, bytes } = e {
                    back.push((to, t, bytes));
                }
            }
        }
        back
    }

    #[test]
    fn pings_measure_rtt_and_loss_and_link_state_reaches_the_mesh() {
        let mut c = vec![core(0, false), core(1, false), core(2, false)];
        for (a, b) in [(0u32, 1u32), (1, 2)] {
            let out = c[a as usize].handle(InEvent::LinkUp(b), 0, 0);
            deliver(&mut c, a, &out);
        }
        // node 0 pings at t=10 000; node 1 answers; the pong lands 30 ms later
        let out = c[0].handle(InEvent::Tick, 10_000, 10_000);
        let pongs = hop(&mut c, 0, out, 10_000);
        assert_eq!(pongs.len(), 1, "one neighbour, one pong");
        for (from, to, bytes) in pongs {
            c[to as usize].handle(InEvent::Recv { from, bytes }, 10_030, 10_030);
        }
        let q = c[0].link_quality();
        assert_eq!(q.len(), 1);
        assert_eq!(
            (q[0].node, q[0].rtt_ms, q[0].loss),
            (NodeId([1; 32]), Some(30.0), 0.0)
        );
        // the next ping is never answered: lost after two probe periods
        let _unanswered = c[0].handle(InEvent::Tick, 12_000, 12_000);
        let _ = c[0].handle(InEvent::Tick, 16_000, 16_000);
        let q = c[0].link_quality();
        assert_eq!(q[0].loss, 0.5, "one of two pings answered");
        assert_eq!(q[0].rtt_ms, Some(30.0), "a lost ping is no RTT sample");
        // node 0's link state travels 0 -> 1 -> 2
        let link = WireLink {
            node: NodeId([1; 32]),
            kind: 0,
            rtt_us: 30_000,
            loss_permille: 500,
        };
        let out = c[0].handle(
            InEvent::LinkState {
                mode: 1,
                links: vec![link],
            },
            16_001,
            16_001,
        );
        deliver(&mut c, 0, &out);
        assert_eq!(c[2].peers()[&NodeId([0; 32])].links, Some((1, vec![link])));
    }

    #[test]
    fn hello_makes_neighbours_and_peer_lists_respect_the_ip_rule() {
        let mut c = vec![core(0, true), core(1, false), core(2, true)];
        // 1 meets 0 and 2 (1 is silent)
        for target in [0u32, 2] {
            let out = c[1].handle(InEvent::LinkUp(target), 0, 0);
            deliver(&mut c, 1, &out);
        }
        assert_eq!(c[1].neighbours().count(), 2);
        assert_eq!(c[0].neighbours().count(), 1);
        assert!(c[0].peers().contains_key(&NodeId([1; 32])));
        // node 0 asks 1 for peers: it learns 2 (broadcasting, with address) and 1 without any address
        let req = c[0].seal(Kind::PeerRequest { max: 8 }, 0, 1);
        let out = c[1].handle(
            InEvent::Recv {
                from: 0,
                bytes: req,
            },
            2,
            2,
        );
        let (_, resp) = sends(&out).pop().unwrap();
        let m = Datagram::parse(&resp)
            .unwrap()
            .open_with(|o, b, s| HashCrypto(*o).verify(o, b, s))
            .unwrap();
        let Kind::PeerListResponse(list) = m.kind else {
            panic!()
        };
        let one = list.iter().find(|p| p.node == NodeId([1; 32])).unwrap();
        assert!(
            one.addrs.is_empty(),
            "a silent node's address never travels"
        );
        let two = list.iter().find(|p| p.node == NodeId([2; 32])).unwrap();
        assert_eq!(two.addrs.len(), 1);
        // the answer makes 0 dial 2
        let dials = c[0].handle(
            InEvent::Recv {
                from: 1,
                bytes: resp,
            },
            3,
            3,
        );
        assert!(dials.contains(&OutEvent::Dial("192.0.2.2:8080".parse().unwrap())));
    }

    #[test]
    fn duplicates_forgeries_and_future_messages_are_dropped_and_counted() {
        let mut a = core(0, false);
        let mut b = core(1, false);
        let hello = sends(&a.handle(InEvent::LinkUp(1), 0, 0)).pop().unwrap().1;
        b.handle(
            InEvent::Recv {
                from: 0,
                bytes: hello.clone(),
            },
            0,
            0,
        );
        b.handle(
            InEvent::Recv {
                from: 0,
                bytes: hello.clone(),
            },
            0,
            0,
        );
        assert_eq!(b.stats.dropped_duplicate, 1);
        let mut forged = hello.clone();
        *forged.last_mut().unwrap() ^= 0x55;
        b.handle(
            InEvent::Recv {
                from: 0,
                bytes: forged,
            },
            0,
            0,
        );
        b.handle(
            InEvent::Recv {
                from: 0,
                bytes: vec![1, 2, 3],
            },
            0,
            0,
        );
        assert_eq!(b.stats.dropped_invalid, 2);
        let future = a.seal(
            Kind::Heartbeat {
                catalog_len: 0,
                catalog_xor: 0,
            },
            3,
            10_000_000,
        );
        b.handle(
            InEvent::Recv {
                from: 0,
                bytes: future,
            },
            0,
            0,
        );
        assert_eq!(b.stats.dropped_future, 1);
    }

    #[test]
    fn differing_catalog_on_a_direct_heartbeat_asks_for_reconciliation() {
        let mut c = vec![core(0, false), core(1, false)];
        let out = c[0].handle(InEvent::LinkUp(1), 0, 0);
        deliver(&mut c, 0, &out);
        let out = c[0].handle(
            InEvent::Catalog {
                len: 1,
                xor: 7,
                ids: vec![[9; 32]],
                tell_neighbours: true,
            },
            2,
            2,
        );
        let other = deliver(&mut c, 0, &out);
        assert!(
            other
                .iter()
                .any(|e| matches!(e, OutEvent::CatalogChange { ids, .. } if ids == &vec![[9; 32]]))
        );
        assert!(other.contains(&OutEvent::Reconcile(0)), "{other:?}");
    }

    #[test]
    fn silent_peers_expire() {
        let mut c = vec![core(0, false), core(1, false)];
        let out = c[0].handle(InEvent::LinkUp(1), 0, 0);
        deliver(&mut c, 0, &out);
        assert!(c[1].peers().contains_key(&NodeId([0; 32])));
        let out = c[1].handle(InEvent::Tick, 200_000, 200_000);
        assert!(out.contains(&OutEvent::PeerLeft(NodeId([0; 32]))));
        assert_eq!(c[1].neighbours().count(), 0);
    }
}
