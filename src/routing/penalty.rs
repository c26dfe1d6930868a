//! Short-term memory of next hops that failed or were slow, so the next
//! decision steers around them.
//!
//! Pure: time is an argument (ms on any monotonic clock). A penalty is extra
//! milliseconds added to a route's metric by [`RouteTable::decide`]; it decays
//! exponentially, so a node that recovers is used again within minutes
//! without anyone having to clear anything.
//!
//! [`RouteTable::decide`]: super::RouteTable::decide

use std::collections::HashMap;

use crate::node::NodeId;

/// A penalty halves every 30 s: long enough to stop retrying a dead hop on
/// every request, short enough that a rebooted router is back in use within
/// a couple of minutes.
pub const PENALTY_HALF_LIFE_MS: f64 = 30_000.0;

/// Added per failed forward, ms. Outweighs any plausible IP-path metric
/// difference, so one failure is enough to try an equally-shaped alternative.
pub const FAILURE_PENALTY_MS: f64 = 1_000.0;

/// A response counts as slow when it took more than this many times the
/// route's expected time…
pub const SLOW_RATIO: f64 = 2.0;

/// …and also more than this many ms over it (so jitter on fast LAN hops,
/// 1 ms expected and 3 ms observed, is not "slow").
pub const SLOW_MARGIN_MS: f64 = 50.0;

/// Share of a slow response's excess time (observed − expected) added as
/// penalty.
pub const SLOW_PENALTY_WEIGHT: f64 = 1.0;

/// A success multiplies the current penalty by this: one good answer
/// halves the suspicion, a few clear it.
pub const SUCCESS_FACTOR: f64 = 0.5;

/// No node's penalty exceeds this, ms, so even a long run of failures decays
/// to nothing in about 7 minutes (14 half-lives down to [`PENALTY_FORGET_MS`]).
pub const PENALTY_CAP_MS: f64 = 10_000.0;

/// Entries that decayed below this, ms, are forgotten.
pub const PENALTY_FORGET_MS: f64 = 1.0;

/// The most nodes remembered at once; bounds memory when a large mesh
/// misbehaves. Beyond this the smallest penalty is dropped.
pub const PENALTIES_MAX_NODES: usize = 1024;

/// One node's penalty as of `at_ms`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Penalty at `at_ms`, ms; `0 < value_ms <= PENALTY_CAP_MS`.
    value_ms: f64,
    /// When `value_ms` was last updated.
    at_ms: u64,
}

impl Entry {
    /// The value decayed to `now_ms`. A clock that went backwards counts as
    /// no time passed.
    fn at(&self, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.value_ms * (-elapsed * std::f64::consts::LN_2 / PENALTY_HALF_LIFE_MS).exp()
    }
}

/// Decaying per-next-hop penalties, ms. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Penalties {
    /// At most [`PENALTIES_MAX_NODES`] entries.
    entries: HashMap<NodeId, Entry>,
}

impl Penalties {
    /// No penalties.
    pub fn new() -> Penalties {
        Penalties::default()
    }

    /// A request forwarded to `node` failed (refused, timed out, reset).
    pub fn record_failure(&mut self, node: NodeId, now_ms: u64) {
        self.add(node, FAILURE_PENALTY_MS, now_ms);
    }

    /// A request forwarded to `node` took `observed_ms` where the route
    /// promised about `expected_ms` (its metric). Only a response much slower
    /// than expected (see [`SLOW_RATIO`], [`SLOW_MARGIN_MS`]) adds a penalty,
    /// proportional to the excess. Non-finite inputs are ignored.
    pub fn record_latency(
        &mut self,
        node: NodeId,
        observed_ms: f64,
        expected_ms: f64,
        now_ms: u64,
    ) {
        if !observed_ms.is_finite() || !expected_ms.is_finite() {
            return;
        }
        let expected_ms = expected_ms.max(0.0);
        let slow =
            observed_ms > expected_ms * SLOW_RATIO && observed_ms > expected_ms + SLOW_MARGIN_MS;
        if slow {
            self.add(
                node,
                (observed_ms - expected_ms) * SLOW_PENALTY_WEIGHT,
                now_ms,
            );
        }
    }

    /// A request forwarded to `node` succeeded: its penalty is cut by
    /// [`SUCCESS_FACTOR`].
    pub fn record_success(&mut self, node: NodeId, now_ms: u64) {
        if let Some(entry) = self.entries.get_mut(&node) {
            let value_ms = entry.at(now_ms) * SUCCESS_FACTOR;
            if value_ms < PENALTY_FORGET_MS {
                self.entries.remove(&node);
            } else {
                *entry = Entry {
                    value_ms,
                    at_ms: now_ms.max(entry.at_ms),
                };
            }
        }
    }

    /// The penalty for forwarding through `node` at `now_ms`, ms (0 if none).
    pub fn penalty(&self, node: &NodeId, now_ms: u64) -> f64 {
        self.entries.get(node).map_or(0.0, |e| e.at(now_ms))
    }

    /// Forgets entries that decayed below [`PENALTY_FORGET_MS`].
    /// Also done whenever a new node would be added.
    pub fn prune(&mut self, now_ms: u64) {
        self.entries
            .retain(|_, e| e.at(now_ms) >= PENALTY_FORGET_MS);
    }

    /// How many nodes currently carry a penalty (including decayed ones not
    /// yet pruned).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no node carries a penalty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `extra_ms` to `node`'s decayed penalty, capped.
    fn add(&mut self, node: NodeId, extra_ms: f64, now_ms: u64) {
        if !self.entries.contains_key(&node) && self.entries.len() >= PENALTIES_MAX_NODES {
            self.prune(now_ms);
            if self.entries.len() >= PENALTIES_MAX_NODES {
                self.evict_smallest(now_ms);
            }
        }
        let entry = self.entries.entry(node).or_insert(Entry {
            value_ms: 0.0,
            at_ms: now_ms,
        });
        let value_ms = (entry.at(now_ms) + extra_ms).min(PENALTY_CAP_MS);
        // If the clock went backwards, keep the later timestamp so decay
        // never runs in reverse.
        *entry = Entry {
            value_ms,
            at_ms: now_ms.max(entry.at_ms),
        };
    }

    /// Drops the entry with the smallest current penalty (a linear scan; runs
    /// only when the map is full of live entries).
    fn evict_smallest(&mut self, now_ms: u64) {
        let smallest = self
            .entries
            .iter()
            .min_by(|(_, x), (_, y)| x.at(now_ms).total_cmp(&y.at(now_ms)))
            .map(|(node, _)| *node);
        if let Some(node) = smallest {
            self.entries.remove(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{LinkKind, LinkReport, RouteTable, Topology};

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn failure_penalty_halves_every_half_life() {
        let mut p = Penalties::new();
        p.record_failure(id(1), 1_000);
        assert_eq!(p.penalty(&id(1), 1_000), FAILURE_PENALTY_MS);
        let later = 1_000 + PENALTY_HALF_LIFE_MS as u64;
        assert!((p.penalty(&id(1), later) - FAILURE_PENALTY_MS / 2.0).abs() < 1e-9);
        assert_eq!(p.penalty(&id(2), later), 0.0, "others unaffected");
        // A clock stepping back does not grow the penalty.
        assert_eq!(p.penalty(&id(1), 0), FAILURE_PENALTY_MS);
    }

    #[test]
    fn failures_accumulate_up_to_the_cap() {
        let mut p = Penalties::new();
        p.record_failure(id(1), 0);
        p.record_failure(id(1), 0);
        assert_eq!(p.penalty(&id(1), 0), 2.0 * FAILURE_PENALTY_MS);
        for _ in 0..100 {
            p.record_failure(id(1), 0);
        }
        assert_eq!(p.penalty(&id(1), 0), PENALTY_CAP_MS);
    }

    #[test]
    fn only_much_slower_than_expected_is_penalised() {
        let mut p = Penalties::new();
        p.record_latency(id(1), 3.0, 1.0, 0); // 3× but only 2 ms over: jitter
        p.record_latency(id(1), 150.0, 100.0, 0); // 50 ms over but 1.5×
        p.record_latency(id(1), f64::NAN, 1.0, 0);
        assert!(p.is_empty());
        p.record_latency(id(1), 400.0, 100.0, 0);
        assert_eq!(p.penalty(&id(1), 0), 300.0 * SLOW_PENALTY_WEIGHT);
    }

    #[test]
    fn success_reduces_and_eventually_forgets() {
        let mut p = Penalties::new();
        p.record_failure(id(1), 0);
        p.record_success(id(1), 0);
        assert_eq!(p.penalty(&id(1), 0), FAILURE_PENALTY_MS * SUCCESS_FACTOR);
        for _ in 0..20 {
            p.record_success(id(1), 0);
        }
        assert!(p.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_decayed_entries_pruned() {
        let mut p = Penalties::new();
        for i in 0..PENALTIES_MAX_NODES + 10 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            p.record_failure(NodeId(bytes), i as u64);
        }
        assert_eq!(p.len(), PENALTIES_MAX_NODES);
        // The oldest (most decayed) entries were the ones evicted.
        assert_eq!(p.penalty(&NodeId([0; 32]), 2_000), 0.0);
        p.prune(3_600_000);
        assert!(p.is_empty(), "an hour later everything has decayed");
    }

    #[test]
    fn a_failed_next_hop_is_avoided_then_used_again_after_decay() {
        // Square: A-B-D and A-C-D, all LAN; D holds the content. Via B is
        // better (metric 2+2 vs 21+2), so B is the first choice.
        let reports = std::collections::HashMap::from([
            (
                id(1),
                vec![
                    LinkReport {
                        peer: id(2),
                        kind: LinkKind::Lan,
                        rtt_ms: 1.0,
                        loss: 0.0,
                    },
                    LinkReport {
                        peer: id(3),
                        kind: LinkKind::Lan,
                        rtt_ms: 20.0,
                        loss: 0.0,
                    },
                ],
            ),
            (
                id(4),
                vec![
                    LinkReport {
                        peer: id(2),
                        kind: LinkKind::Lan,
                        rtt_ms: 1.0,
                        loss: 0.0,
                    },
                    LinkReport {
                        peer: id(3),
                        kind: LinkKind::Lan,
                        rtt_ms: 1.0,
                        loss: 0.0,
                    },
                ],
            ),
        ]);
        let topo = Topology::new(id(1), &Default::default(), &reports);
        let table = RouteTable::build(id(1), &topo);
        let mut p = Penalties::new();
        let next_hop_at = |p: &Penalties, now_ms: u64| {
            table
                .decide(&[id(4)], &[], |n| p.penalty(n, now_ms))
                .map(|c| c.next_hop)
        };
        assert_eq!(next_hop_at(&p, 0), Some(id(2)));
        p.record_failure(id(2), 10_000);
        assert_eq!(next_hop_at(&p, 10_000), Some(id(3)), "B failed: go via C");
        assert_eq!(
            next_hop_at(&p, 60_000),
            Some(id(3)),
            "still avoided after 50 s"
        );
        assert_eq!(
            next_hop_at(&p, 310_000),
            Some(id(2)),
            "back to B after 5 minutes"
        );
    }
}
