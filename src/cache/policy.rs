//! Eviction policy: which entries leave the store when a new blob does not fit.
//!
//! Pure. Never evicted: essential items (priority 1), pinned items, and the
//! node's own items (but not external pages it fetched for the mesh: the
//! internet can give those again); these are `protected`. The rest go by
//! popularity with aging: each entry has a score that halves every [`HALF_LIFE_SECS`] and
//! gains 1 per read, so a page read 100 times last month loses to one read 10
//! times today. Blobs are shared by URLs with equal content, so bytes come
//! free only when the last entry naming a blob goes.

use std::collections::HashMap;

use crate::catalog::ContentHash;

/// Popularity half-life: one week, long enough that a weekly bulletin keeps its place.
pub const HALF_LIFE_SECS: f64 = 7.0 * 86_400.0;

/// An entry as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Caller's key for the entry (e.g. the URL).
    pub key: String,
    /// Its blob.
    pub hash: ContentHash,
    /// Score already decayed to "now" (see [`decayed`]).
    pub score: f64,
    /// Never evict.
    pub protected: bool,
}

/// Not enough evictable content to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// Bytes that had to be freed.
    pub need: u64,
    /// Bytes that could have been freed at most.
    pub evictable: u64,
}

/// Score `score` (last updated at `at`, Unix seconds) decayed to `now`.
pub fn decayed(score: f64, at: i64, now: i64) -> f64 {
    let age = (now - at).max(0) as f64;
    score * 0.5f64.powf(age / HALF_LIFE_SECS)
}

/// Adds `hits` reads at `now` to a score.
pub fn bump(score: f64, at: i64, now: i64, hits: u64) -> f64 {
    decayed(score, at, now) + hits as f64
}

/// Chooses entries to evict so that `need` more bytes fit. `entries` must
/// list *every* entry that names a stored blob (protected ones included), so
/// reference counts are right; `blob_sizes` holds every stored blob's size.
///
/// Planning is per blob: a blob frees its bytes only when all entries naming
/// it go, so a blob that any protected entry names is never touched, and the
/// entries of one blob leave together, ranked by their most popular member.
/// Returns the keys to evict, least popular blob first.
pub fn plan_eviction(
    entries: &[Candidate],
    blob_sizes: &HashMap<ContentHash, u64>,
    need: u64,
) -> Result<Vec<String>, NoRoom> {
    if need == 0 {
        return Ok(Vec::new());
    }
    struct Group<'a> {
        keys: Vec<&'a str>,
        best: f64,
        protected: bool,
    }
    let mut groups: HashMap<ContentHash, Group<'_>> = HashMap::new();
    for e in entries {
        let g = groups.entry(e.hash).or_insert(Group {
            keys: Vec::new(),
            best: f64::MIN,
            protected: false,
        });
        g.keys.push(&e.key);
        g.best = g.best.max(e.score);
        g.protected |= e.protected;
    }
    let mut order: Vec<(ContentHash, Group<'_>)> =
        groups.into_iter().filter(|(_, g)| !g.protected).collect();
    for (_, g) in order.iter_mut() {
        g.keys.sort_unstable();
    }
    order.sort_by(|(_, a), (_, b)| {
        a.best
            .total_cmp(&b.best)
            .then_with(|| a.keys[0].cmp(b.keys[0]))
    });
    let mut freed = 0u64;
    let mut out = Vec::new();
    for (hash, g) in order {
        let size = blob_sizes.get(&hash).copied().unwrap_or(0);
        if size == 0 {
            continue; // nothing to gain (e.g. a quarantined blob)
        }
        out.extend(g.keys.iter().map(|k| k.to_string()));
        freed += size;
        if freed >= need {
            return Ok(out);
        }
    }
    Err(NoRoom {
        need,
        evictable: freed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: &str, h: u8, score: f64, protected: bool) -> Candidate {
        Candidate {
            key: key.into(),
            hash: ContentHash([h; 32]),
            score,
            protected,
        }
    }

    fn sizes(list: &[(u8, u64)]) -> HashMap<ContentHash, u64> {
        list.iter()
            .map(|&(h, s)| (ContentHash([h; 32]), s))
            .collect()
    }

    #[test]
    fn least_popular_goes_first_and_only_as_many_as_needed() {
        let e = [
            c("a", 1, 5.0, false),
            c("b", 2, 1.0, false),
            c("c", 3, 3.0, false),
        ];
        let s = sizes(&[(1, 100), (2, 100), (3, 100)]);
        assert_eq!(plan_eviction(&e, &s, 150).unwrap(), vec!["b", "c"]);
        assert_eq!(plan_eviction(&e, &s, 0).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn protected_entries_are_never_chosen() {
        let e = [c("own", 1, 0.0, true), c("x", 2, 9.0, false)];
        let s = sizes(&[(1, 1000), (2, 10)]);
        assert_eq!(plan_eviction(&e, &s, 10).unwrap(), vec!["x"]);
        assert_eq!(
            plan_eviction(&e, &s, 11),
            Err(NoRoom {
                need: 11,
                evictable: 10
            })
        );
    }

    #[test]
    fn shared_blob_frees_bytes_only_with_its_last_entry() {
        let e = [
            c("a", 1, 0.0, false),
            c("b", 1, 0.5, false),
            c("z", 1, 0.0, true),
        ];
        let s = sizes(&[(1, 100)]);
        // a protected URL holds the blob: evicting a and b frees nothing
        assert_eq!(
            plan_eviction(&e, &s, 1),
            Err(NoRoom {
                need: 1,
                evictable: 0
            })
        );
        assert_eq!(plan_eviction(&e[..2], &s, 100).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn aging_halves_per_half_life() {
        let week = HALF_LIFE_SECS as i64;
        assert!((decayed(100.0, 0, week) - 50.0).abs() < 1e-9);
        assert!(bump(100.0, 0, 4 * week, 10) < bump(10.0, 4 * week, 4 * week, 10));
        assert_eq!(decayed(8.0, 10, 5), 8.0); // clock going backwards never inflates
    }
}
