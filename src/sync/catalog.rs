//! The mesh catalog: every current signed record this node knows, and the
//! one rule that decides which version of a URL is served. Pure.
//!
//! **What is kept.** For each (URL, origin) only the highest version: a newer
//! record from the same origin supersedes (removes) the older one. Records of
//! *different* origins for the same URL all stay. So the set of kept ids is a
//! function of the records seen, not of the order they arrived in, and two
//! nodes that have seen the same records hold the same set: reconciliation
//! converges and never re-offers a record the other side dropped on purpose.
//!
//! **Who wins.** Among a URL's kept records the winner is the greatest by
//! `(version, published_ms, origin)`. The version is a per-URL counter that
//! the origin raises past every version it has seen for the URL (a Lamport
//! clock), so an edit made after seeing another always wins whatever the
//! clocks say. Only concurrent edits (the same version, e.g. on two sides of a
//! partition) fall to the wall clock, and only within a bound: clocks are
//! capped at the URL's earliest clock plus [`MAX_SKEW_MS`] (see [`rank`]), so
//! a router that booted in the year 2100 cannot win every tie. The last key,
//! the origin id, makes the order total, so every node picks the same winner.
//! A winning tombstone (deletion) hides the URL.
//!
//! **keep_both.** With `[sync] keep_both = true` every losing (non-deleted)
//! record stays reachable at [`derived_url`]; without it, losers are kept in
//! the set (for convergence) but not served.

use std::collections::HashMap;
use std::sync::Arc;

use crate::node::NodeId;

use super::recon::{Id, IdSet, ShortId};
use super::record::{Record, Signed};

/// Wall-clock values are clamped into this window around the latest clock
/// seen for the URL before they break a tie, so one node with a clock in the
/// far future cannot win every tie for ever.
pub const MAX_SKEW_MS: i64 = 24 * 3600 * 1000;

/// How an insert went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// New record kept; `superseded` is the older record of the same origin
    /// and URL it replaced.
    New {
        /// Removed older record.
        superseded: Option<Id>,
    },
    /// Already known.
    Known,
    /// Older than what we hold from the same origin for that URL; dropped.
    Stale,
}

/// The URL's current state as every node computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The winning record, unless the winner is a deletion.
    pub winner: Option<Arc<Signed>>,
    /// Losing records (not deletions) with the URL they are reachable at when
    /// `keep_both` is on.
    pub losers: Vec<(String, Arc<Signed>)>,
}

/// All current records.
#[derive(Debug, Default)]
pub struct MeshCatalog {
    records: HashMap<Id, Arc<Signed>>,
    /// Record ids by a hash of their URL (two URLs may share a bucket; the
    /// record's own URL is compared). Keeps no second copy of every URL.
    by_url: HashMap<u64, Vec<Id>>,
    set: IdSet,
}

fn url_key(url: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(url)
}

impl MeshCatalog {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a verified record.
    pub fn insert(&mut self, rec: Signed) -> Insert {
        if self.records.contains_key(&rec.id) {
            return Insert::Known;
        }
        let key = url_key(&rec.record.url);
        let mut superseded = None;
        if let Some(ids) = self.by_url.get(&key) {
            for id in ids {
                let old = &self.records[id].record;
                if old.origin == rec.record.origin && old.url == rec.record.url {
                    // the id settles an origin that signed two records with
                    // the same version and clock (a bug or an attack), so
                    // arrival order still does not matter
                    if (old.version, old.published_ms, *id)
                        >= (rec.record.version, rec.record.published_ms, rec.id)
                    {
                        return Insert::Stale;
                    }
                    superseded = Some(*id);
                }
            }
        }
        if let Some(old) = superseded {
            self.remove(&old);
        }
        let id = rec.id;
        self.set.insert(id);
        self.by_url.entry(key).or_default().push(id);
        self.records.insert(id, Arc::new(rec));
        Insert::New { superseded }
    }

    fn remove(&mut self, id: &Id) {
        if let Some(r) = self.records.remove(id) {
            self.set.remove(id);
            let key = url_key(&r.record.url);
            if let Some(v) = self.by_url.get_mut(&key) {
                v.retain(|x| x != id);
                if v.is_empty() {
                    self.by_url.remove(&key);
                }
            }
        }
    }

    /// The reconciliation set.
    pub fn set(&self) -> &IdSet {
        &self.set
    }

    /// A record by id.
    pub fn get(&self, id: &Id) -> Option<&Arc<Signed>> {
        self.records.get(id)
    }

    /// A record by short id.
    pub fn by_short(&self, s: &ShortId) -> Option<&Arc<Signed>> {
        self.set.by_short(s).and_then(|id| self.records.get(&id))
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every URL with at least one record (each once).
    pub fn urls(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .records
            .values()
            .map(|r| r.record.url.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The records of one URL.
    fn of_url<'a, 'u>(
        &'a self,
        url: &'u str,
    ) -> impl Iterator<Item = &'a Arc<Signed>> + use<'a, 'u> {
        self.by_url
            .get(&url_key(url))
            .into_iter()
            .flatten()
            .map(|i| &self.records[i])
            .filter(move |r| r.record.url == url)
    }

    /// Every record.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Signed>> {
        self.records.values()
    }

    /// The highest version any origin has given `url` (for the next publish).
    pub fn max_version(&self, url: &str) -> u64 {
        self.of_url(url)
            .map(|r| r.record.version)
            .max()
            .unwrap_or(0)
    }

    /// Our own record for `url`, if any.
    pub fn own(&self, url: &str, me: &NodeId) -> Option<&Arc<Signed>> {
        self.of_url(url).find(|r| r.record.origin == *me)
    }

    /// Which record of `url` is served, and where the losers live.
    pub fn resolve(&self, url: &str) -> Resolved {
        let mut recs: Vec<&Arc<Signed>> = self.of_url(url).collect();
        let newest_clock = recs
            .iter()
            .map(|r| r.record.published_ms)
            .min()
            .unwrap_or(0)
            .saturating_add(MAX_SKEW_MS);
        recs.sort_by_key(|r| std::cmp::Reverse(rank(&r.record, newest_clock)));
        let mut it = recs.into_iter();
        let winner = it.next().filter(|r| r.record.content.is_some()).cloned();
        let losers = it
            .filter(|r| r.record.content.is_some())
            .map(|r| (derived_url(&r.record), r.clone()))
            .collect();
        Resolved { winner, losers }
    }
}

/// The total order of versions of one URL. `clock_cap` bounds the wall
/// clock: no tie can be won by a clock more than [`MAX_SKEW_MS`] ahead of the
/// earliest clock among the URL's records.
pub fn rank(r: &Record, clock_cap: i64) -> (u64, i64, NodeId) {
    (r.version, r.published_ms.min(clock_cap), r.origin)
}

/// Where a losing version stays reachable with `keep_both`:
/// `<url>~<first 8 hex of origin>-v<version>`.
pub fn derived_url(r: &Record) -> String {
    format!("{}~{}-v{}", r.url, r.origin.short(), r.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::Crypto;
    use crate::gossip::sim::HashCrypto;
    use crate::sync::record::Content;
    use proptest::prelude::*;

    fn rec(origin: u8, path: &str, version: u64, ms: i64, deleted: bool) -> Signed {
        let r = Record {
            origin: NodeId([origin; 32]),
            url: format!("http://n0call.radio{path}"),
            version,
            published_ms: ms,
            content: (!deleted).then(|| Content {
                hash: [origin; 32],
                size: 1,
                manifest_root: None,
                content_type: "text/plain".into(),
                priority: 3,
                access: 0,
                tags: vec![],
                fetched: None,
            }),
        };
        let c = HashCrypto(NodeId([origin; 32]));
        r.sign(|b| c.sign(b))
    }

    #[test]
    fn newer_version_of_same_origin_supersedes() {
        let mut c = MeshCatalog::new();
        let a1 = rec(1, "/a", 1, 10, false);
        let a2 = rec(1, "/a", 2, 5, false);
        assert_eq!(c.insert(a1.clone()), Insert::New { superseded: None });
        assert_eq!(
            c.insert(a2.clone()),
            Insert::New {
                superseded: Some(a1.id)
            }
        );
        assert_eq!(c.insert(a1.clone()), Insert::Stale);
        assert_eq!(c.insert(a2.clone()), Insert::Known);
        assert_eq!(c.len(), 1);
        assert_eq!(c.resolve("http://n0call.radio/a").winner.unwrap().id, a2.id);
    }

    #[test]
    fn conflict_winner_and_derived_loser() {
        let mut c = MeshCatalog::new();
        let x = rec(1, "/a", 3, 1000, false);
        let y = rec(2, "/a", 3, 2000, false); // same version, later clock
        c.insert(x.clone());
        c.insert(y.clone());
        let r = c.resolve("http://n0call.radio/a");
        assert_eq!(r.winner.unwrap().id, y.id);
        assert_eq!(r.losers.len(), 1);
        assert_eq!(
            r.losers[0].0,
            format!("http://n0call.radio/a~{}-v3", NodeId([1; 32]).short())
        );
        // a higher version wins whatever its clock says
        let z = rec(1, "/a", 4, 0, false);
        c.insert(z.clone());
        assert_eq!(c.resolve("http://n0call.radio/a").winner.unwrap().id, z.id);
    }

    #[test]
    fn far_future_clock_is_capped() {
        let mut c = MeshCatalog::new();
        let early = rec(5, "/a", 1, 1_000_000, false);
        let honest = rec(9, "/a", 1, 1_000_000 + 2 * MAX_SKEW_MS, false);
        let liar = rec(1, "/a", 1, i64::MAX / 2, false);
        c.insert(early);
        c.insert(honest.clone());
        c.insert(liar);
        // both late clocks are capped at earliest + MAX_SKEW; the tie then
        // falls to the origin id, and 9 > 1
        assert_eq!(
            c.resolve("http://n0call.radio/a").winner.unwrap().id,
            honest.id
        );
    }

    #[test]
    fn tombstone_hides_url() {
        let mut c = MeshCatalog::new();
        c.insert(rec(1, "/a", 1, 1, false));
        c.insert(rec(1, "/a", 2, 2, true));
        let r = c.resolve("http://n0call.radio/a");
        assert!(r.winner.is_none() && r.losers.is_empty());
        assert_eq!(
            c.len(),
            1,
            "the tombstone itself is kept so deletion spreads"
        );
    }

    proptest! {
        /// Every node resolves the same way whatever order records arrive in.
        #[test]
        fn order_does_not_matter(
            specs in proptest::collection::vec((1u8..4, 0u8..3, 1u64..4, 0i64..5, any::<bool>()), 1..20),
            seed in any::<u64>(),
        ) {
            let recs: Vec<Signed> = specs.iter()
                .map(|(o, p, v, ms, d)| rec(*o, &format!("/{p}"), *v, *ms, *d))
                .collect();
            let mut a = MeshCatalog::new();
            for r in &recs { a.insert(r.clone()); }
            let mut shuffled = recs.clone();
            use rand::{SeedableRng, seq::SliceRandom};
            shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(seed));
            let mut b = MeshCatalog::new();
            for r in &shuffled { b.insert(r.clone()); }
            prop_assert_eq!(a.set().fingerprint(), b.set().fingerprint());
            for p in 0..3 {
                let u = format!("http://n0call.radio/{p}");
                prop_assert_eq!(a.resolve(&u), b.resolve(&u));
            }
        }
    }
}
