//! A small in-RAM cache of verified blobs, keyed by hash, bounded in bytes,
//! least recently used out first.
//!
//! Shared by the HTTP handlers behind a `std::sync::Mutex` that is never held
//! across `.await` (the mini-redis `db.rs` reasoning): lookups are a hash-map
//! probe and a tick update. Entries are immutable content-addressed bytes, so a
//! hit is always correct, and a blob verified once is served from RAM without
//! re-reading or re-hashing the disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use crate::catalog::ContentHash;

/// Objects larger than this never enter the cache (one chunk).
pub const MAX_OBJECT: u64 = super::blobs::CHUNK_SIZE;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<ContentHash, (Bytes, u64)>,
    by_tick: BTreeMap<u64, ContentHash>,
    bytes: u64,
    tick: u64,
}

/// The cache.
#[derive(Debug)]
pub struct MemoryCache {
    cap: u64,
    inner: Mutex<Inner>,
}

impl MemoryCache {
    /// A cache holding at most `cap` bytes of objects.
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A cached object, marking it recently used.
    pub fn get(&self, h: &ContentHash) -> Option<Bytes> {
        let mut g = self.inner.lock().expect("memory cache lock poisoned");
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        let (bytes, old) = inner.map.get_mut(h)?;
        inner.by_tick.remove(old);
        *old = tick;
        inner.by_tick.insert(tick, *h);
        Some(bytes.clone())
    }

    /// Adds a verified object, pushing out the least recently used ones.
    pub fn insert(&self, h: ContentHash, data: Bytes) {
        let len = data.len() as u64;
        if len > MAX_OBJECT || len > self.cap {
            return;
        }
        let mut g = self.inner.lock().expect("memory cache lock poisoned");
        let inner = &mut *g;
        if inner.map.contains_key(&h) {
            return;
        }
        while inner.bytes + len > self.cap {
            let Some((_, victim)) = inner.by_tick.pop_first() else {
                break;
            };
            if let Some((b, _)) = inner.map.remove(&victim) {
                inner.bytes -= b.len() as u64;
            }
        }
        inner.tick += 1;
        inner.by_tick.insert(inner.tick, h);
        inner.map.insert(h, (data, inner.tick));
        inner.bytes += len;
    }

    /// Forgets an object (its blob was removed or quarantined).
    pub fn remove(&self, h: &ContentHash) {
        let mut g = self.inner.lock().expect("memory cache lock poisoned");
        if let Some((b, tick)) = g.map.remove(h) {
            g.by_tick.remove(&tick);
            g.bytes -= b.len() as u64;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().expect("memory cache lock poisoned").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_within_budget() {
        let c = MemoryCache::new(10);
        let h = |n| ContentHash([n; 32]);
        c.insert(h(1), Bytes::from_static(b"aaaa"));
        c.insert(h(2), Bytes::from_static(b"bbbb"));
        assert!(c.get(&h(1)).is_some()); // 1 is now newer than 2
        c.insert(h(3), Bytes::from_static(b"cccc"));
        assert!(c.get(&h(2)).is_none());
        assert_eq!(c.get(&h(1)).unwrap(), "aaaa");
        assert_eq!(c.bytes(), 8);
        c.insert(h(4), Bytes::from(vec![0; 11])); // larger than the whole cache
        assert!(c.get(&h(4)).is_none());
        c.remove(&h(1));
        assert_eq!(c.bytes(), 4);
    }
}
