//! The route table (for each destination, every next hop and its path cost)
//! and the forwarding decision over it.
//!
//! Pure. The cost order and the reasons for it are in the [module docs](super).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use crate::node::NodeId;

use super::topology::{Link, LinkKind, Topology};

/// Added to every link's metric so that zero-RTT links still make a path
/// longer, ms. Keeps the metric strictly increasing along a path.
pub const HOP_METRIC_MS: f64 = 1.0;

/// Loss above this is treated as this in the link metric, so a 100%-loss
/// report gives a 10× metric rather than a division by zero.
pub const LOSS_CAP: f64 = 0.9;

/// The cost of a path, compared lexicographically field by field, in
/// declaration order (see the [module docs](super) for why this order).
///
/// Counters saturate at 255; paths that long do not occur in a community mesh.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Packet-radio links on the path.
    pub rf_hops: u8,
    /// Links that are not same-subnet LAN (WAN and radio both count).
    pub non_lan_hops: u8,
    /// Links on the path.
    pub hops: u8,
    /// Sum of the links' ETX-like metrics (see [`link_metric_ms`]), plus any
    /// penalty the decision added, ms.
    pub metric_ms: f64,
}

impl Cost {
    /// The cost of the empty path.
    pub const ZERO: Cost = Cost {
        rf_hops: 0,
        non_lan_hops: 0,
        hops: 0,
        metric_ms: 0.0,
    };

    /// The cost of a single link.
    pub fn of_link(link: &Link) -> Cost {
        Cost {
            rf_hops: u8::from(link.kind == LinkKind::Rf),
            non_lan_hops: u8::from(link.kind != LinkKind::Lan),
            hops: 1,
            metric_ms: link_metric_ms(link.rtt_ms, link.loss),
        }
    }

    /// This path extended by a path costing `more`.
    pub fn then(self, more: Cost) -> Cost {
        Cost {
            rf_hops: self.rf_hops.saturating_add(more.rf_hops),
            non_lan_hops: self.non_lan_hops.saturating_add(more.non_lan_hops),
            hops: self.hops.saturating_add(more.hops),
            metric_ms: self.metric_ms + more.metric_ms,
        }
    }
}

/// The ETX-like metric of one link: `rtt_ms / (1 - min(loss, 0.9)) + 1`, ms.
///
/// Dividing by the delivery ratio approximates the expected time including
/// retransmissions; the `+ 1` ([`HOP_METRIC_MS`]) makes every hop count.
pub fn link_metric_ms(rtt_ms: f64, loss: f64) -> f64 {
    rtt_ms / (1.0 - loss.min(LOSS_CAP)) + HOP_METRIC_MS
}

impl Ord for Cost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rf_hops
            .cmp(&other.rf_hops)
            .then(self.non_lan_hops.cmp(&other.non_lan_hops))
            .then(self.hops.cmp(&other.hops))
            // total_cmp: a total order even for NaN, which the inputs are
            // sanitised against anyway (topology clamps, decide filters penalties).
            .then(self.metric_ms.total_cmp(&other.metric_ms))
    }
}

impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cost {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cost {}

/// One way to reach a destination: hand the request to `next_hop`, which is
/// one of our direct neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The neighbour to forward to.
    pub next_hop: NodeId,
    /// The cost of the best path from us through `next_hop` to the
    /// destination that does not come back through us.
    pub cost: Cost,
}

/// The outcome of [`RouteTable::decide`]: whom to fetch from and through whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The node holding the content that the request will reach.
    pub holder: NodeId,
    /// The neighbour to forward the request to (equal to `holder` when the
    /// holder is a direct neighbour and the direct link is best).
    pub next_hop: NodeId,
    /// The path cost, with the next hop's penalty included in `metric_ms`.
    pub cost: Cost,
}

/// For every reachable destination, one [`Route`] per neighbour of ours that
/// can reach it, best first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The node this table is for.
    me: NodeId,
    /// Destination → the range of its routes in `routes`.
    index: HashMap<NodeId, (u32, u32)>,
    /// All routes, grouped by destination, each group sorted best first.
    /// One flat vector instead of a `Vec` per destination: one allocation.
    routes: Vec<Route>,
}

/// Dijkstra's working state: path cost so far, node index.
type HeapEntry = Reverse<(Cost, usize)>;

impl RouteTable {
    /// Computes the table for `me` over `topo`.
    ///
    /// For each neighbour `n` of `me`, one Dijkstra run from `n` over the
    /// graph with `me` removed, starting at the cost of the link `me`–`n`.
    /// Removing `me` is what makes every route via `n` a path that never
    /// returns through us. Dijkstra is exact with the lexicographic [`Cost`]
    /// because extending a path never makes it cheaper (every link adds a
    /// hop) and extending two paths by the same link keeps their order.
    ///
    /// Unreachable destinations, and `me` itself, are absent. If `me` is not
    /// in `topo` the table is empty.
    pub fn build(me: NodeId, topo: &Topology) -> RouteTable {
        let ids: Vec<NodeId> = topo.nodes().iter().map(|(id, _)| *id).collect();
        let slot: HashMap<NodeId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut adjacent: Vec<Vec<(usize, Cost)>> = vec![Vec::new(); ids.len()];
        for link in topo.links() {
            // Every link end is a topology node by construction; skip defensively.
            let (Some(&a), Some(&b)) = (slot.get(&link.a), slot.get(&link.b)) else {
                continue;
            };
            let cost = Cost::of_link(link);
            adjacent[a].push((b, cost));
            adjacent[b].push((a, cost));
        }

        let mut found: Vec<(usize, Route)> = Vec::new();
        if let Some(&me_slot) = slot.get(&me) {
            let mut best: Vec<Option<Cost>> = vec![None; ids.len()];
            let mut heap: BinaryHeap<HeapEntry> = BinaryHeap::new();
            for &(first, first_cost) in &adjacent[me_slot] {
                best.fill(None);
                shortest_paths(&adjacent, me_slot, first, first_cost, &mut best, &mut heap);
                found.extend(best.iter().enumerate().filter_map(|(dest, cost)| {
                    let cost = (*cost)?;
                    Some((
                        dest,
                        Route {
                            next_hop: ids[first],
                            cost,
                        },
                    ))
                }));
            }
        }

        // Group by destination, best first; ties broken by next-hop id so the
        // table does not depend on hash-map iteration order.
        found.sort_unstable_by(|(d1, r1), (d2, r2)| {
            d1.cmp(d2)
                .then(r1.cost.cmp(&r2.cost))
                .then(r1.next_hop.cmp(&r2.next_hop))
        });
        let mut index = HashMap::new();
        let mut start = 0;
        for group in found.chunk_by(|(d1, _), (d2, _)| d1 == d2) {
            let end = start + group.len();
            // Fewer than 2^32 routes: at most neighbours × nodes.
            index.insert(ids[group[0].0], (start as u32, end as u32));
            start = end;
        }
        let routes = found.into_iter().map(|(_, route)| route).collect();
        RouteTable { me, index, routes }
    }

    /// The node this table is for.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every route to `dest`, best first; empty if unreachable.
    pub fn routes(&self, dest: &NodeId) -> &[Route] {
        match self.index.get(dest) {
            Some(&(start, end)) => &self.routes[start as usize..end as usize],
            None => &[],
        }
    }

    /// The best route to `dest`, ignoring penalties.
    pub fn best(&self, dest: &NodeId) -> Option<&Route> {
        self.routes(dest).first()
    }

    /// How many destinations are reachable.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if no destination is reachable (we have no neighbours).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Picks the holder and next hop to forward a request to.
    ///
    /// Considers every route to every holder, skipping holders and next hops
    /// listed in `exclude` (the node the request came from and the nodes on
    /// its path so far). Each candidate's `metric_ms` is raised by
    /// `penalty(next_hop)` (ms; negative or NaN counts as 0); the lowest
    /// [`Cost`] wins, ties going to the lower holder id then next-hop id.
    ///
    /// `me` among `holders` is ignored: serving locally is the caller's check,
    /// made before asking where to forward. Returns `None` if no holder is
    /// reachable without an excluded next hop.
    ///
    /// Allocation-free: a hash lookup per holder and a scan of its routes.
    pub fn decide(
        &self,
        holders: &[NodeId],
        exclude: &[NodeId],
        penalty: impl Fn(&NodeId) -> f64,
    ) -> Option<Choice> {
        let mut choice: Option<Choice> = None;
        for holder in holders {
            if *holder == self.me || exclude.contains(holder) {
                continue;
            }
            for route in self.routes(holder) {
                if exclude.contains(&route.next_hop) {
                    continue;
                }
                let extra = penalty(&route.next_hop);
                // `!(extra > 0.0)` is true for NaN too.
                let extra = if extra > 0.0 { extra } else { 0.0 };
                let candidate = Choice {
                    holder: *holder,
                    next_hop: route.next_hop,
                    cost: Cost {
                        metric_ms: route.cost.metric_ms + extra,
                        ..route.cost
                    },
                };
                let better = match &choice {
                    None => true,
                    Some(current) => {
                        (candidate.cost, candidate.holder, candidate.next_hop)
                            < (current.cost, current.holder, current.next_hop)
                    }
                };
                if better {
                    choice = Some(candidate);
                }
            }
        }
        choice
    }
}

/// Dijkstra from `start` (reached at `start_cost`) over `adjacent` without
/// the node `skip`, writing the best cost to every reached node into `best`.
///
/// `best` must be all `None` on entry; `heap` is scratch space, reused across
/// runs to save allocations.
fn shortest_paths(
    adjacent: &[Vec<(usize, Cost)>],
    skip: usize,
    start: usize,
    start_cost: Cost,
    best: &mut [Option<Cost>],
    heap: &mut BinaryHeap<HeapEntry>,
) {
    heap.clear();
    best[start] = Some(start_cost);
    heap.push(Reverse((start_cost, start)));
    while let Some(Reverse((cost, node))) = heap.pop() {
        // A stale entry: the node was reached more cheaply since it was pushed.
        if best[node].is_some_and(|b| cost > b) {
            continue;
        }
        for &(next, link_cost) in &adjacent[node] {
            if next == skip {
                continue;
            }
            let via = cost.then(link_cost);
            if best[next].is_none_or(|b| via < b) {
                best[next] = Some(via);
                heap.push(Reverse((via, next)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::topology::{LinkReport, NodeMeta};
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    /// A topology from undirected `(x, y, kind, rtt_ms)` links, each
    /// reported by its first end only, lossless.
    fn topo(me: u8, links: &[(u8, u8, LinkKind, f64)]) -> Topology {
        let mut reports: HashMap<NodeId, Vec<LinkReport>> = HashMap::new();
        for &(x, y, kind, rtt_ms) in links {
            reports.entry(id(x)).or_default().push(LinkReport {
                peer: id(y),
                kind,
                rtt_ms,
                loss: 0.0,
            });
        }
        Topology::new(id(me), &HashMap::<NodeId, NodeMeta>::new(), &reports)
    }

    fn no_penalty(_: &NodeId) -> f64 {
        0.0
    }

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const D: u8 = 4;
    const E: u8 = 5;

    use LinkKind::{Lan, Rf, Wan};

    #[test]
    fn line_from_the_end_and_from_the_middle() {
        let t = topo(A, &[(A, B, Lan, 10.0), (B, C, Lan, 20.0)]);

        let from_a = RouteTable::build(id(A), &t);
        assert_eq!(from_a.len(), 2, "B and C, not A itself");
        let to_c = from_a.routes(&id(C));
        assert_eq!(to_c.len(), 1);
        assert_eq!(to_c[0].next_hop, id(B));
        assert_eq!(to_c[0].cost.hops, 2);
        assert_eq!(to_c[0].cost.metric_ms, 10.0 + 1.0 + 20.0 + 1.0);
        let to_b = from_a.best(&id(B)).expect("B is a neighbour");
        assert_eq!((to_b.next_hop, to_b.cost.hops), (id(B), 1));

        let from_b = RouteTable::build(id(B), &t);
        for end in [A, C] {
            let routes = from_b.routes(&id(end));
            assert_eq!(routes.len(), 1, "the only path not back through B");
            assert_eq!((routes[0].next_hop, routes[0].cost.hops), (id(end), 1));
        }
    }

    #[test]
    fn route_via_a_neighbour_never_comes_back_through_me() {
        // From A, C is reachable via C directly and via B (B-E-C). Via B,
        // B-A-C would be as many hops and far cheaper, but goes back through A.
        let t = topo(
            A,
            &[
                (A, B, Lan, 1.0),
                (A, C, Lan, 1.0),
                (B, E, Lan, 500.0),
                (E, C, Lan, 500.0),
            ],
        );
        let table = RouteTable::build(id(A), &t);
        let routes = table.routes(&id(C));
        assert_eq!(routes.len(), 2);
        assert_eq!((routes[0].next_hop, routes[0].cost.hops), (id(C), 1));
        assert_eq!((routes[1].next_hop, routes[1].cost.hops), (id(B), 3));
        assert_eq!(routes[1].cost.metric_ms, 2.0 + 501.0 + 501.0);
    }

    #[test]
    fn two_lan_hops_beat_one_wan_hop() {
        // D is the holder: directly over WAN, or A-B-D over LAN.
        let t = topo(A, &[(A, D, Wan, 5.0), (A, B, Lan, 50.0), (B, D, Lan, 50.0)]);
        let c = RouteTable::build(id(A), &t)
            .decide(&[id(D)], &[], no_penalty)
            .expect("reachable");
        assert_eq!(c.next_hop, id(B));
        assert_eq!((c.cost.non_lan_hops, c.cost.hops), (0, 2));
    }

    #[test]
    fn radio_loses_to_any_ip_path() {
        // Direct RF, fast; or four WAN hops, slow.
        let t = topo(
            A,
            &[
                (A, E, Rf, 1.0),
                (A, B, Wan, 300.0),
                (B, C, Wan, 300.0),
                (C, D, Wan, 300.0),
                (D, E, Wan, 300.0),
            ],
        );
        let c = RouteTable::build(id(A), &t)
            .decide(&[id(E)], &[], no_penalty)
            .expect("reachable");
        assert_eq!(c.next_hop, id(B));
        assert_eq!(
            (c.cost.rf_hops, c.cost.non_lan_hops, c.cost.hops),
            (0, 4, 4)
        );
    }

    #[test]
    fn among_equal_kinds_fewer_hops_win_over_lower_rtt() {
        let t = topo(A, &[(A, D, Lan, 80.0), (A, B, Lan, 1.0), (B, D, Lan, 1.0)]);
        let c = RouteTable::build(id(A), &t)
            .decide(&[id(D)], &[], no_penalty)
            .expect("reachable");
        assert_eq!((c.next_hop, c.cost.hops), (id(D), 1));
    }

    #[test]
    fn among_equal_hops_lower_rtt_wins() {
        // Two holders, both one LAN hop away; and two 2-hop routes to a third.
        let t = topo(
            A,
            &[
                (A, B, Lan, 30.0),
                (A, C, Lan, 10.0),
                (B, D, Lan, 1.0),
                (C, D, Lan, 1.0),
            ],
        );
        let table = RouteTable::build(id(A), &t);
        let c = table
            .decide(&[id(B), id(C)], &[], no_penalty)
            .expect("reachable");
        assert_eq!(c.holder, id(C));
        let c = table.decide(&[id(D)], &[], no_penalty).expect("reachable");
        assert_eq!(c.next_hop, id(C));
    }

    #[test]
    fn cost_order_is_lexicographic_in_field_order() {
        let cost = |rf, non_lan, hops, metric_ms| Cost {
            rf_hops: rf,
            non_lan_hops: non_lan,
            hops,
            metric_ms,
        };
        assert!(cost(0, 9, 9, 9e9) < cost(1, 0, 1, 0.0));
        assert!(cost(0, 0, 9, 9e9) < cost(0, 1, 1, 0.0));
        assert!(cost(0, 0, 1, 9e9) < cost(0, 0, 2, 0.0));
        assert!(cost(0, 0, 1, 1.0) < cost(0, 0, 1, 2.0));
        assert_eq!(cost(0, 0, 1, 1.0), cost(0, 0, 1, 1.0));
    }

    #[test]
    fn loss_raises_the_metric() {
        assert_eq!(link_metric_ms(10.0, 0.0), 11.0);
        assert_eq!(link_metric_ms(10.0, 0.5), 21.0);
        // 1 - 0.9 is not exactly 0.1 in binary: compare with a tolerance.
        let capped = link_metric_ms(10.0, 1.0);
        assert!(
            (capped - 101.0).abs() < 1e-9,
            "loss capped at 0.9: {capped}"
        );
        assert_eq!(link_metric_ms(0.0, 0.0), HOP_METRIC_MS);
    }

    #[test]
    fn excluded_next_hops_and_holders_are_never_chosen() {
        // Square A-B-D, A-C-D; D holds, B is the better way.
        let t = topo(
            A,
            &[
                (A, B, Lan, 1.0),
                (A, C, Lan, 5.0),
                (B, D, Lan, 1.0),
                (C, D, Lan, 1.0),
            ],
        );
        let table = RouteTable::build(id(A), &t);
        let c = table.decide(&[id(D)], &[], no_penalty).expect("reachable");
        assert_eq!(c.next_hop, id(B));
        let c = table.decide(&[id(D)], &[id(B)], no_penalty).expect("via C");
        assert_eq!(c.next_hop, id(C));
        assert_eq!(table.decide(&[id(D)], &[id(B), id(C)], no_penalty), None);
        // An excluded holder is skipped even when it is the closest.
        let c = table
            .decide(&[id(B), id(D)], &[id(B)], no_penalty)
            .expect("D via C");
        assert_eq!((c.holder, c.next_hop), (id(D), id(C)));
    }

    #[test]
    fn me_as_holder_and_unknown_holders_give_none() {
        let t = topo(A, &[(A, B, Lan, 1.0)]);
        let table = RouteTable::build(id(A), &t);
        assert_eq!(table.decide(&[id(A)], &[], no_penalty), None);
        assert_eq!(table.decide(&[id(9)], &[], no_penalty), None);
        assert_eq!(table.decide(&[], &[], no_penalty), None);
        let c = table.decide(&[id(A), id(B)], &[], no_penalty).expect("B");
        assert_eq!(c.holder, id(B));
        // A node not in the topology has an empty table.
        assert!(RouteTable::build(id(9), &t).is_empty());
    }

    #[test]
    fn penalty_adds_to_the_metric_only() {
        let t = topo(
            A,
            &[
                (A, B, Lan, 1.0),
                (A, C, Lan, 5.0),
                (B, D, Lan, 1.0),
                (C, D, Wan, 1.0),
            ],
        );
        let table = RouteTable::build(id(A), &t);
        // A huge penalty on B still loses to a path with a WAN hop…
        let c = table
            .decide(&[id(D)], &[], |n| if *n == id(B) { 1e9 } else { 0.0 })
            .expect("reachable");
        assert_eq!(c.next_hop, id(B));
        assert_eq!(c.cost.metric_ms, 4.0 + 1e9);
        // …and NaN or negative penalties count as none.
        let c = table
            .decide(&[id(D)], &[], |_| f64::NAN)
            .expect("reachable");
        assert_eq!(c.cost.metric_ms, 4.0);
        let c = table.decide(&[id(D)], &[], |_| -50.0).expect("reachable");
        assert_eq!(c.cost.metric_ms, 4.0);
    }

    /// A connected random graph: a random spanning tree plus extra edges.
    fn arb_graph() -> impl Strategy<Value = (usize, Vec<(usize, usize, LinkKind, f64)>)> {
        (5usize..=40).prop_flat_map(|n| {
            let kind = prop_oneof![Just(Lan), Just(Wan), Just(Rf)];
            let tree = proptest::collection::vec(
                (
                    any::<proptest::sample::Index>(),
                    kind.clone(),
                    0.0..500.0f64,
                ),
                n - 1,
            );
            let extra = proptest::collection::vec((0..n, 0..n, kind, 0.0..500.0f64), 0..2 * n);
            (Just(n), tree, extra).prop_map(|(n, tree, extra)| {
                let mut links: Vec<(usize, usize, LinkKind, f64)> = tree
                    .into_iter()
                    .enumerate()
                    .map(|(i, (parent, kind, rtt))| (i + 1, parent.index(i + 1), kind, rtt))
                    .collect();
                links.extend(extra.into_iter().filter(|(x, y, _, _)| x != y));
                (n, links)
            })
        })
    }

    /// Node ids spread over the id space so that id order is not index order.
    fn node(i: usize) -> NodeId {
        let mut bytes = [0u8; 32];
        bytes[0] = (i as u8).wrapping_mul(97);
        bytes[1] = i as u8;
        NodeId(bytes)
    }

    proptest! {
        /// With one shared topology, following `decide` hop by hop, each hop
        /// excluding the node it came from (or the whole path so far), reaches
        /// the holder without revisiting a node, in at most N-1 hops: even with
        /// every node applying its own arbitrary penalties, which only touch
        /// the metric (see the loop-freedom argument in the module docs).
        #[test]
        fn hop_by_hop_forwarding_is_loop_free(
            (n, links) in arb_graph(),
            source in any::<proptest::sample::Index>(),
            holder in any::<proptest::sample::Index>(),
            penalties in proptest::collection::vec(proptest::collection::vec(0.0..1000.0f64, 40), 40),
            with_penalties in any::<bool>(),
        ) {
            let mut reports: HashMap<NodeId, Vec<LinkReport>> = HashMap::new();
            for &(x, y, kind, rtt_ms) in &links {
                reports.entry(node(x)).or_default().push(LinkReport { peer: node(y), kind, rtt_ms, loss: 0.0 });
            }
            let topo = Topology::new(node(0), &HashMap::new(), &reports);
            let tables: HashMap<NodeId, RouteTable> =
                (0..n).map(|i| (node(i), RouteTable::build(node(i), &topo))).collect();
            let index_of: HashMap<NodeId, usize> = (0..n).map(|i| (node(i), i)).collect();
            let (source, holder) = (node(source.index(n)), node(holder.index(n)));

            for exclude_whole_path in [false, true] {
                let mut path = vec![source];
                let mut at = source;
                while at != holder {
                    prop_assert!(path.len() < n, "more than N-1 hops: {path:?}");
                    let exclude: &[NodeId] = if exclude_whole_path {
                        &path
                    } else if path.len() >= 2 {
                        &path[path.len() - 2..path.len() - 1]
                    } else {
                        &[]
                    };
                    let me = index_of[&at];
                    let penalty = |next: &NodeId| {
                        if with_penalties { penalties[me][index_of[next]] } else { 0.0 }
                    };
                    let choice = tables[&at].decide(&[holder], exclude, penalty);
                    let choice = choice.ok_or_else(|| TestCaseError::fail(format!("stuck at {at:?} on {path:?}")))?;
                    prop_assert_eq!(choice.holder, holder);
                    prop_assert!(!path.contains(&choice.next_hop), "revisits {:?} after {:?}", choice.next_hop, path);
                    prop_assert!(topo.link(&at, &choice.next_hop).is_some(), "next hop is a neighbour");
                    path.push(choice.next_hop);
                    at = choice.next_hop;
                }
            }
        }
    }
}
