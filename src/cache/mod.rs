//! The content cache: reading blobs for serving, verified, with a RAM tier;
//! plus the eviction policy and the periodic scrub.
//!
//! Integrity rule: no byte leaves this module unless the hash that covers it
//! was checked on this read (or the bytes sit in RAM since such a check). A
//! small object is hashed whole; a large one chunk by chunk against its
//! manifest, so a corrupt chunk stops the response before its bytes are sent.
//! Any mismatch quarantines the blob through the store and is counted.

pub mod blobs;
pub mod memory;
pub mod policy;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::catalog::ContentHash;
use crate::store::{LiveEntry, StoreHandle};
use blobs::{BlobError, CHUNK_SIZE};
use memory::MemoryCache;

/// Chunks read ahead of the network while streaming a large blob.
const READ_AHEAD: usize = 4;

/// Serves verified content and runs the scrub.
#[derive(Debug, Clone)]
pub struct ContentReader {
    store: StoreHandle,
    memory: Arc<MemoryCache>,
    /// Integrity failures seen on read or scrub (exported as a metric).
    pub integrity_failures: Arc<AtomicU64>,
}

/// Result of a scrub pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScrubReport {
    /// Blobs checked.
    pub checked: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// URLs whose blob failed and was quarantined in this pass.
    pub quarantined: Vec<String>,
    /// URLs that were already quarantined before this pass.
    pub already_quarantined: Vec<String>,
}

impl ContentReader {
    /// A reader over `store` with `memory_cap` bytes of RAM cache.
    pub fn new(store: StoreHandle, memory_cap: u64) -> Self {
        Self {
            store,
            memory: Arc::new(MemoryCache::new(memory_cap)),
            integrity_failures: Arc::default(),
        }
    }

    /// The whole content of a single-chunk entry, verified.
    pub async fn read_small(&self, e: &LiveEntry) -> Result<Bytes, BlobError> {
        let (hash, size) = (e.fields().hash, e.fields().size);
        if let Some(b) = self.memory.get(&hash) {
            return Ok(b);
        }
        let blobs = self.store.blobs().clone();
        let r = tokio::task::spawn_blocking(move || blobs.read_verified(&hash, size))
            .await
            .map_err(|e| BlobError::Io(io::Error::other(e)))?;
        match r {
            Ok(b) => {
                self.memory.insert(hash, b.clone());
                Ok(b)
            }
            Err(e) => {
                self.on_bad_blob(hash, &e).await;
                Err(e)
            }
        }
    }

    /// Streams bytes `start..=end` of a multi-chunk entry, each chunk verified
    /// before any of it is sent. A failure ends the stream with an error, so
    /// the HTTP connection is cut short and the client sees an incomplete body.
    pub fn stream_range(
        &self,
        e: Arc<LiveEntry>,
        start: u64,
        end: u64,
    ) -> mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let this = self.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let f = e.fields();
            let fail = |err: BlobError| {
                let this = this.clone();
                let hash = f.hash;
                rt.spawn(async move { this.on_bad_blob(hash, &err).await });
            };
            let file = match this.store.blobs().open_blob(&f.hash) {
                Ok(file) => file,
                Err(err) => {
                    let _closed = tx.blocking_send(Err(io::Error::other(err.to_string())));
                    return fail(err);
                }
            };
            for idx in start / CHUNK_SIZE..=end / CHUNK_SIZE {
                let Some(expected) = e.manifest.get(idx as usize) else {
                    let _closed =
                        tx.blocking_send(Err(io::Error::other("manifest shorter than blob")));
                    return;
                };
                match blobs::read_chunk_verified(&file, &f.hash, f.size, idx, expected) {
                    Ok(chunk) => {
                        let c0 = idx * CHUNK_SIZE;
                        let from = start.saturating_sub(c0) as usize;
                        let to = ((end + 1 - c0) as usize).min(chunk.len());
                        if tx.blocking_send(Ok(chunk.slice(from..to))).is_err() {
                            return; // client went away
                        }
                    }
                    Err(err) => {
                        let _closed = tx.blocking_send(Err(io::Error::other(err.to_string())));
                        return fail(err);
                    }
                }
            }
        });
        rx
    }

    async fn on_bad_blob(&self, hash: ContentHash, err: &BlobError) {
        if matches!(err, BlobError::Corrupt(_) | BlobError::Missing(_)) {
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
            self.memory.remove(&hash);
            if let Err(e) = self.store.quarantine(hash).await {
                tracing::error!(hash = %hash, error = %e, "could not quarantine a bad blob");
            }
        } else {
            tracing::warn!(hash = %hash, error = %err, "blob read failed");
        }
    }

    /// Re-hashes every stored blob; quarantines the bad ones.
    pub async fn scrub(&self) -> ScrubReport {
        let mut report = ScrubReport::default();
        let mut seen = std::collections::HashSet::new();
        for e in self.store.list() {
            let f = e.fields();
            if f.quarantined {
                report.already_quarantined.push(f.url.clone());
                continue;
            }
            if !seen.insert(f.hash) {
                continue;
            }
            let (blobs, hash, size) = (self.store.blobs().clone(), f.hash, f.size);
            let r = tokio::task::spawn_blocking(move || blobs.verify(&hash, size)).await;
            report.checked += 1;
            report.bytes += size;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                    self.memory.remove(&hash);
                    tracing::warn!(hash = %hash, error = %err, "scrub found a bad blob");
                    match self.store.quarantine(hash).await {
                        Ok(urls) => report.quarantined.extend(urls),
                        Err(e) => tracing::error!(error = %e, "could not quarantine"),
                    }
                }
                Err(join) => tracing::error!(error = %join, "scrub task failed"),
            }
        }
        report
    }
}
