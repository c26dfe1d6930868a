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
pub mod sink;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::catalog::ContentHash;
use crate::store::{LiveEntry, StoreHandle};
use blobs::{BlobError, CHUNK_SIZE};
use memory::MemoryCache;

/// Large-file responses streaming at once; each holds at most two 256 KiB
/// chunks, so this bounds their RAM to 16 MiB whatever clients do.
pub const LARGE_STREAMS_MAX: usize = 32;

struct StreamState {
    reader: ContentReader,
    e: Arc<LiveEntry>,
    /// Chunk that `pending` reads.
    idx: u64,
    start: u64,
    end: u64,
    pending: Option<tokio::task::JoinHandle<Result<Bytes, BlobError>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Serves verified content and runs the scrub.
#[derive(Debug, Clone)]
pub struct ContentReader {
    store: StoreHandle,
    memory: Arc<MemoryCache>,
    streams: Arc<tokio::sync::Semaphore>,
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
    /// The pass stopped early (shutdown).
    pub interrupted: bool,
}

impl ContentReader {
    /// A reader over `store` with `memory_cap` bytes of RAM cache.
    pub fn new(store: StoreHandle, memory_cap: u64) -> Self {
        Self {
            store,
            memory: Arc::new(MemoryCache::new(memory_cap)),
            streams: Arc::new(tokio::sync::Semaphore::new(LARGE_STREAMS_MAX)),
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
    ///
    /// Each chunk is read by its own short `spawn_blocking` task and the next
    /// one is read while the client drains the current one; no thread ever
    /// waits on a slow client, and a stream holds at most two chunks. At most
    /// [`LARGE_STREAMS_MAX`] streams run at once (`None` beyond that: the
    /// caller answers 503 with Retry-After).
    pub fn stream_range(
        &self,
        e: Arc<LiveEntry>,
        start: u64,
        end: u64,
    ) -> Option<impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let permit = self.streams.clone().try_acquire_owned().ok()?;
        let first = self.read_chunk(&e, start / CHUNK_SIZE);
        let st = StreamState {
            reader: self.clone(),
            e,
            idx: start / CHUNK_SIZE,
            start,
            end,
            pending: Some(first),
            _permit: permit,
        };
        Some(futures_util::stream::unfold(st, |mut st| async move {
            let pending = st.pending.take()?;
            let r = pending
                .await
                .unwrap_or_else(|join| Err(BlobError::Io(io::Error::other(join))));
            match r {
                Ok(chunk) => {
                    let c0 = st.idx * CHUNK_SIZE;
                    if c0 + CHUNK_SIZE <= st.end {
                        st.idx += 1;
                        st.pending = Some(st.reader.read_chunk(&st.e, st.idx)); // read ahead
                    }
                    let from = st.start.saturating_sub(c0) as usize;
                    let to = ((st.end + 1 - c0) as usize).min(chunk.len());
                    Some((Ok(chunk.slice(from..to)), st))
                }
                Err(err) => {
                    st.reader.on_bad_blob(st.e.fields().hash, &err).await;
                    Some((Err(io::Error::other(err.to_string())), st)) // pending is None: the stream ends
                }
            }
        }))
    }

    fn read_chunk(
        &self,
        e: &Arc<LiveEntry>,
        idx: u64,
    ) -> tokio::task::JoinHandle<Result<Bytes, BlobError>> {
        let (blobs, e) = (self.store.blobs().clone(), e.clone());
        tokio::task::spawn_blocking(move || {
            let f = e.fields();
            let expected = e
                .manifest
                .get(idx as usize)
                .ok_or(BlobError::Corrupt(f.hash))?;
            let file = blobs.open_blob(&f.hash)?;
            blobs::read_chunk_verified(&file, &f.hash, f.size, idx, expected)
        })
    }

    async fn on_bad_blob(&self, hash: ContentHash, err: &BlobError) {
        if matches!(err, BlobError::Corrupt(_) | BlobError::Missing(_)) {
            self.memory.remove(&hash);
            // the store re-checks before it quarantines (a removal may have raced us)
            match self.store.quarantine(hash).await {
                Ok(urls) if !urls.is_empty() => {
                    self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    tracing::debug!(hash = %hash, "blob went away or was repaired while being read")
                }
                Err(e) => {
                    tracing::error!(hash = %hash, error = %e, "could not quarantine a bad blob")
                }
            }
        } else {
            tracing::warn!(hash = %hash, error = %err, "blob read failed");
        }
    }

    /// Re-hashes every stored blob; quarantines the bad ones. Stops between
    /// blobs when `cancel` fires (the report then says `interrupted`).
    pub async fn scrub(&self, cancel: &tokio_util::sync::CancellationToken) -> ScrubReport {
        let mut report = ScrubReport::default();
        let mut seen = std::collections::HashSet::new();
        for e in self.store.list() {
            if cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
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
                    self.memory.remove(&hash);
                    tracing::warn!(hash = %hash, error = %err, "scrub found a bad blob");
                    match self.store.quarantine(hash).await {
                        Ok(urls) => {
                            if !urls.is_empty() {
                                self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                            }
                            report.quarantined.extend(urls)
                        }
                        Err(e) => tracing::error!(error = %e, "could not quarantine"),
                    }
                }
                Err(join) => tracing::error!(error = %join, "scrub task failed"),
            }
        }
        report
    }
}
