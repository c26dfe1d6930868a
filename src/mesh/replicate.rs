//! Which records this node should hold a copy of. Pure.
//!
//! | priority | held by |
//! |---|---|
//! | 1 essential | every node, pushed as soon as the record arrives |
//! | 2 popular | its origin, and every node once requests counted across the mesh reach `popular_threshold` |
//! | 3 standard | its origin, and nodes where it was read (a newer version replaces the cached one) |
//! | 4 personal | its origin only |

use crate::catalog::Priority;
use crate::node::NodeId;
use crate::sync::record::Record;

/// Should this node hold `rec`'s content?
/// `cached`: the store holds some version of the URL (it was read here);
/// `demand`: requests for the item summed over the mesh.
pub fn should_hold(rec: &Record, me: &NodeId, cached: bool, demand: u64, threshold: u32) -> bool {
    if rec.origin == *me {
        return true;
    }
    match rec.priority() {
        Some(Priority::Essential) => true,
        Some(Priority::Popular) => cached || demand >= threshold as u64,
        Some(Priority::Standard) => cached,
        Some(Priority::Personal) | None => false,
    }
}

/// May a reader's request on another node pull a copy here?
pub fn fetch_on_read(rec: &Record) -> bool {
    !matches!(rec.priority(), Some(Priority::Personal) | None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::record::Content;

    fn rec(priority: u8, origin: u8) -> Record {
        Record {
            origin: NodeId([origin; 32]),
            url: "http://n0call.radio/a".into(),
            version: 1,
            published_ms: 0,
            content: Some(Content {
                hash: [0; 32],
                size: 1,
                manifest_root: None,
                content_type: "text/plain".into(),
                priority,
                access: 0,
                tags: vec![],
                fetched: None,
            }),
        }
    }

    #[test]
    fn the_priority_table() {
        let me = NodeId([1; 32]);
        assert!(should_hold(&rec(1, 2), &me, false, 0, 10));
        assert!(!should_hold(&rec(2, 2), &me, false, 9, 10));
        assert!(should_hold(&rec(2, 2), &me, false, 10, 10));
        assert!(!should_hold(&rec(3, 2), &me, false, 1000, 10));
        assert!(should_hold(&rec(3, 2), &me, true, 0, 10));
        assert!(!should_hold(&rec(4, 2), &me, true, 1000, 10));
        assert!(should_hold(&rec(4, 1), &me, false, 0, 10), "own content");
        assert!(!fetch_on_read(&rec(4, 2)) && fetch_on_read(&rec(3, 2)));
    }
}
