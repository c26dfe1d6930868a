//! Mesh request routing: which node to fetch a URL from, which neighbour to
//! hand the request to, and the topology map behind both.
//!
//! Pure: no I/O and no clock (time is passed in as `u64` ms). The mesh task
//! feeds in link reports from gossip, rebuilds a [`Topology`] and a
//! [`RouteTable`] when they change, and calls [`RouteTable::decide`] for every
//! request it cannot serve from its own store. DESIGN.md, "mesh routing":
//! nearest/strongest source, loop-free.
//!
//! # Parts
//!
//! - [`Topology`] (`topology.rs`): merges both ends' [`LinkReport`]s into
//!   undirected [`Link`]s; renders JSON for the API and DOT for `meshctl`.
//! - [`RouteTable`] (`table.rs`): for every destination, one [`Route`] per
//!   neighbour of ours, best first; [`RouteTable::decide`] picks a holder and
//!   next hop for a request.
//! - [`Penalties`] (`penalty.rs`): next hops that recently failed or were
//!   slow, as decaying extra milliseconds for `decide`.
//!
//! # The cost order
//!
//! A path's [`Cost`] compares its fields in this order, each only breaking
//! ties of the ones before:
//!
//! 1. **radio hops** (fewest): packet radio runs at 1200–9600 baud and its
//!    airtime is shared by every station on the channel, so any IP path,
//!    however long, beats one using radio. Radio is the last resort.
//! 2. **non-LAN hops** (fewest): a same-subnet link (Ethernet, one Wi-Fi
//!    segment) is cheap, stable and keeps traffic off shared uplinks and
//!    tunnels, so a 2-hop all-LAN path beats a 1-hop WAN path.
//! 3. **hops** (fewest): every forwarding node adds queueing, a TCP
//!    connection and a failure point, so among paths of the same kinds the
//!    shorter one wins even if its links are slower.
//! 4. **metric** (lowest): among equally shaped paths, the sum of the links'
//!    ETX-like metric `rtt_ms / (1 − min(loss, 0.9)) + 1` (RTT inflated by the
//!    expected retransmissions, plus 1 ms per hop), plus the next hop's
//!    penalty when deciding.
//!
//! # Why the decision is loop-free
//!
//! Every node computes its routes from the same topology (gossip converges
//! it). A node's best route has the smallest `(radio, non-LAN, hops)` triple
//! of any path from it to the holder: leaving out paths back through itself
//! loses nothing, as a shortest path never revisits its start. A node picked
//! its next hop because the next hop's own shortest path continues its path,
//! so the next hop's triple is smaller by that link (at least one hop). The
//! triple strictly falls at every hop, so no node is visited twice and a
//! request takes at most N−1 hops. Penalties only change the metric, the
//! last field, so they cannot break this, and excluding nodes already on the
//! path never removes the best route (their triples are larger); a proptest
//! checks all of it on random graphs. While nodes' topologies disagree
//! (gossip still spreading a change) the argument does not hold, which is
//! why a forwarded request carries its path and callers pass it as `exclude`.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use meshnode::node::NodeId;
//! use meshnode::routing::{LinkKind, LinkReport, Penalties, RouteTable, Topology};
//!
//! let (me, hill, valley) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
//! let reports = HashMap::from([
//!     (me, vec![LinkReport { peer: hill, kind: LinkKind::Lan, rtt_ms: 2.0, loss: 0.0 }]),
//!     (hill, vec![LinkReport { peer: valley, kind: LinkKind::Wan, rtt_ms: 30.0, loss: 0.01 }]),
//! ]);
//! let topo = Topology::new(me, &HashMap::new(), &reports);
//! let table = RouteTable::build(me, &topo);
//!
//! let penalties = Penalties::new();
//! let now_ms = 0;
//! let choice = table
//!     .decide(&[valley], &[], |n| penalties.penalty(n, now_ms))
//!     .expect("valley is reachable");
//! assert_eq!((choice.holder, choice.next_hop, choice.cost.hops), (valley, hill, 2));
//! ```

mod penalty;
mod table;
mod topology;

pub use penalty::{
    FAILURE_PENALTY_MS, PENALTIES_MAX_NODES, PENALTY_CAP_MS, PENALTY_FORGET_MS,
    PENALTY_HALF_LIFE_MS, Penalties, SLOW_MARGIN_MS, SLOW_PENALTY_WEIGHT, SLOW_RATIO,
    SUCCESS_FACTOR,
};
pub use table::{Choice, Cost, HOP_METRIC_MS, LOSS_CAP, Route, RouteTable, link_metric_ms};
pub use topology::{Link, LinkKind, LinkReport, NodeMeta, RTT_MAX_MS, Topology};
