//! The mesh driver: one task that owns the gossip core, the mesh catalog,
//! the peer book and the replication queue, and does their I/O.
//!
//! It carries the pure cores ([`crate::gossip::proto`], [`crate::sync`]) to
//! the network: gossip datagrams on UDP (the same port number as the HTTP
//! listener), reconciliation, record exchange and chunk transfer over the
//! node-to-node HTTP endpoints (`/mesh/v1/...`, served by [`crate::api`]),
//! peers from mDNS ([`crate::discovery::mdns`]), bootstrap nodes and static
//! peers. HTTP handlers read the shared [`MeshView`] (a lock never held
//! across `.await`) and send the task [`Cmd`]s; only the task writes.
//!
//! Replication ([`replicate`]) follows the priorities of the distributed-server
//! spec: essential (1) items are copied to every node, popular (2) ones once
//! the requests counted across the mesh pass `[sync] popular_threshold`,
//! standard (3) ones where they are read, personal (4) ones never leave
//! their origin.

pub mod client;
pub mod forward;
mod gateway;
pub mod links;
pub mod relay;
pub mod replicate;
mod task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::discovery::bootstrap::Registry;
use crate::node::NodeId;
use crate::sync::catalog::MeshCatalog;
use crate::sync::record::Signed;

pub use task::{MeshParams, spawn};

/// A catalog summary as heartbeats, mDNS TXT and the status API show it:
/// `<records>-<XOR fingerprint, 16 hex>`; equal digests, equal catalogs.
pub fn catalog_digest((len, xor): (u32, u64)) -> String {
    format!("{len}-{xor:016x}")
}

/// Commands queued to the mesh task.
const CMD_CAP: usize = 1024;

/// A handle to the mesh task and its shared view.
#[derive(Debug, Clone)]
pub struct Mesh {
    tx: mpsc::Sender<Cmd>,
    /// What HTTP handlers read.
    pub view: Arc<MeshView>,
}

/// Requests to the mesh task.
#[derive(Debug)]
pub enum Cmd {
    /// A URL changed in the local store through the control socket: sign a
    /// record (or a deletion) for it.
    LocalChanged(String, oneshot::Sender<()>),
    /// External content this node fetched and stored: sign a record from the
    /// stored entry itself (it may be evicted again before the task runs).
    Fetched(Box<FetchedEntry>, oneshot::Sender<()>),
    /// Signed records pushed by a peer.
    Records(Vec<Signed>),
    /// A client asked for a URL (demand for popular items).
    Requested(String),
}

/// What [`Cmd::Fetched`] signs.
#[derive(Debug)]
pub struct FetchedEntry {
    /// The entry as stored.
    pub entry: crate::catalog::Entry,
    /// Its chunk hashes (empty for one chunk).
    pub manifest: Vec<crate::catalog::ContentHash>,
    /// Its freshness from the origin.
    pub fetched: crate::sync::record::Fetched,
}

/// One row of the peer table (`GET /api/v1/peers`, `meshctl peers`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerStatus {
    /// Hex node id.
    pub node_id: String,
    /// `CALLSIGN-label`, once known.
    pub name: Option<String>,
    /// Addresses the peer broadcasts; empty for a silent peer.
    pub addrs: Vec<String>,
    /// Serves the bootstrap API.
    pub is_bootstrap: bool,
    /// A direct neighbour (we exchange datagrams with it).
    pub neighbour: bool,
    /// Its catalog summary from its last heartbeat.
    pub catalog: CatalogSummary,
    /// 0..1: how recently it was heard, relative to the heartbeat period.
    pub availability: f64,
    /// 0..1 from the round-trip time of our requests to it (1 / (1 + rtt / 100 ms)).
    pub performance: Option<f64>,
    /// Round-trip time of our last requests (ms, smoothed).
    pub rtt_ms: Option<f64>,
    /// Download rate measured on transfers from it (bytes/s, smoothed).
    pub bandwidth_bps: Option<f64>,
    /// Unix ms.
    pub discovered_at: i64,
    /// Unix ms.
    pub last_seen: i64,
    /// Unix ms: when it leaves the table unless heard from.
    pub expires_at: i64,
}

/// Entries and XOR fingerprint of a catalog.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct CatalogSummary {
    /// Records.
    pub entries: u32,
    /// XOR of the records' short ids (hex).
    pub fingerprint: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MeshCounters {
    /// Gossip datagrams sent.
    pub datagrams_sent: AtomicU64,
    /// Gossip bytes sent.
    pub datagram_bytes_sent: AtomicU64,
    /// Gossip datagrams received.
    pub datagrams_received: AtomicU64,
    /// Dropped: malformed or bad signature.
    pub dropped_invalid: AtomicU64,
    /// Dropped: duplicates.
    pub dropped_duplicate: AtomicU64,
    /// Dropped: dated in the future.
    pub dropped_future: AtomicU64,
    /// Reconciliations we started.
    pub reconciliations: AtomicU64,
    /// Reconciliation bytes (both directions) of exchanges we started.
    pub recon_bytes: AtomicU64,
    /// Records accepted.
    pub records_accepted: AtomicU64,
    /// Records rejected (bad signature or fields).
    pub records_rejected: AtomicU64,
    /// Chunks served to peers.
    pub chunks_served: AtomicU64,
    /// Chunks fetched from peers.
    pub chunks_fetched: AtomicU64,
    /// Transfers completed.
    pub transfers_done: AtomicU64,
    /// Transfers that failed (retried later).
    pub transfers_failed: AtomicU64,
    /// Essential items that did not fit the store quota.
    pub essential_refused: AtomicU64,
}

/// What the mesh task shares with the HTTP handlers.
#[derive(Debug)]
pub struct MeshView {
    /// This node.
    pub node: NodeId,
    /// Broadcasting nodes act as bootstrap nodes.
    pub broadcast: bool,
    /// The mesh catalog; written only by the mesh task.
    pub catalog: RwLock<MeshCatalog>,
    /// The peer table; rebuilt by the mesh task.
    pub peers: RwLock<Vec<PeerStatus>>,
    /// Bootstrap registrations (only used when `broadcast`).
    pub registry: Mutex<Registry>,
    /// Counters.
    pub counters: MeshCounters,
    /// Essential items this node could not store (URL → reason).
    pub refused: RwLock<HashMap<String, String>>,
    /// What this node broadcasts about itself (empty when silent).
    pub own_addrs: Vec<SocketAddr>,
    /// Current neighbours (link address, node), for relaying blob requests.
    pub neighbours: RwLock<Vec<(SocketAddr, NodeId)>>,
    /// Where a blob was last found through a relay (hash → neighbour).
    pub holders: Mutex<HashMap<[u8; 32], SocketAddr>>,
    /// Relayed request ids seen recently (loop detection).
    pub relayed: Mutex<std::collections::VecDeque<String>>,
    /// Signs the requests this node relays.
    pub client: client::MeshClient,
    /// Network mode, uplink and failover gateway.
    pub mode: RwLock<links::ModeState>,
    /// Ticked by the mesh task after it changed `mode` or rebuilt `peers`
    /// (watchers such as the D-Bus facade diff the view then).
    pub changes: tokio::sync::watch::Sender<()>,
    /// The mesh as LINK_STATE messages describe it.
    pub topology: RwLock<Arc<crate::routing::Topology>>,
    /// Routes to every reachable node, rebuilt with the topology.
    pub routes: RwLock<Arc<crate::routing::RouteTable>>,
    /// Next hops that failed or were slow recently.
    pub penalties: Mutex<crate::routing::Penalties>,
    /// Content requests in flight (collapsing identical ones).
    pub flights: forward::Flights,
    started: std::time::Instant,
}

/// Relayed request ids remembered.
const RELAYED_MAX: usize = 4096;

impl MeshView {
    /// Remembers a relayed request id; false if it was seen before (a loop).
    pub fn first_relay(&self, id: &str) -> bool {
        let mut r = self.relayed.lock().expect("lock poisoned");
        if r.iter().any(|x| x == id) {
            return false;
        }
        if r.len() >= RELAYED_MAX {
            r.pop_front();
        }
        r.push_back(id.to_string());
        true
    }

    /// Milliseconds since the view was made (the registry's clock).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Mesh {
    /// Tells the mesh a URL changed locally; returns once its record is signed.
    pub async fn local_changed(&self, url: &str) {
        self.ask(|tx| Cmd::LocalChanged(url.to_string(), tx)).await
    }

    /// External content fetched by this node and stored as `entry`; returns
    /// once its record (with the origin's freshness) is signed.
    pub async fn local_fetched(&self, fetched: FetchedEntry) {
        self.ask(|tx| Cmd::Fetched(Box::new(fetched), tx)).await
    }

    async fn ask(&self, cmd: impl FnOnce(oneshot::Sender<()>) -> Cmd) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(cmd(tx)).await.is_ok() {
            let _stopped_is_fine = rx.await;
        }
    }

    /// Hands records pushed by a peer to the mesh task.
    pub async fn push_records(&self, recs: Vec<Signed>) {
        let _stopped_is_fine = self.tx.send(Cmd::Records(recs)).await;
    }

    /// Counts a client request for `url` (never blocks the request).
    pub fn requested(&self, url: &str) {
        let _full_queue_drops_one_count = self.tx.try_send(Cmd::Requested(url.to_string()));
    }

    /// The catalog's winning record for `url`, if it has content.
    pub fn winner(&self, url: &str) -> Option<Arc<Signed>> {
        let cat = self.view.catalog.read().expect("catalog lock poisoned");
        cat.resolve(url)
            .winner
            .filter(|w| w.record.content.is_some())
    }

    /// The highest version the mesh knows for `url`.
    pub fn max_version(&self, url: &str) -> u64 {
        self.view
            .catalog
            .read()
            .expect("catalog lock poisoned")
            .max_version(url)
    }

    /// Wakes whenever the mode, the uplink or the peer table may have
    /// changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.view.changes.subscribe()
    }

    /// The number of records.
    pub fn records(&self) -> usize {
        self.view
            .catalog
            .read()
            .expect("catalog lock poisoned")
            .len()
    }
}
