//! Chunked content download from several peers at once.
//!
//! Content is addressed by SHA-256 and cut into [`CHUNK_SIZE`] chunks listed
//! in a manifest of chunk hashes (one chunk: the content hash itself). A
//! download asks every candidate peer for the manifest
//! (`GET /mesh/v1/blobs/<hash>`), checks it against the signed record's
//! `manifest_root`, then keeps `parallel` chunk requests in flight
//! (`GET /mesh/v1/blobs/<hash>/<index>`), spread round-robin over the peers
//! that have it: torrent-like swarming over the mesh's own HTTP. Every chunk
//! is verified before it is written to `<state>/partial/<hash>/<index>`, so a
//! download survives a peer vanishing (its chunks go to the others), a
//! failed attempt (the next one starts where it stopped) and a restart. When
//! every chunk is there the content is assembled through the blob ingest
//! path, which hashes it once more as a whole.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::cache::blobs::{BlobDir, CHUNK_SIZE, Ingested};
use crate::catalog::ContentHash;
use crate::mesh::client::{
    ClientError, HOPS_HEADER, MeshClient, RELAY_HOPS, REQUEST_ID_HEADER, request_id,
};

use super::record::manifest_root;

/// What to download: from a signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Content hash.
    pub hash: ContentHash,
    /// Bytes.
    pub size: u64,
    /// Manifest root for multi-chunk content.
    pub manifest_root: Option<[u8; 32]>,
}

/// Why a download stopped; chunks already fetched stay for the next try.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No candidate has the content (or every one failed).
    #[error("no reachable peer has {0} ({1} of {2} chunks here)")]
    NoSource(ContentHash, usize, usize),
    /// The assembled content does not hash to the record's hash.
    #[error("assembled content does not match {0}")]
    Corrupt(ContentHash),
    /// Local disk.
    #[error("local storage: {0}")]
    Io(#[from] io::Error),
}

/// How a download went, for metrics and the peer table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Chunks fetched now, by peer.
    pub chunks_from: HashMap<SocketAddr, u32>,
    /// Bytes fetched now, by peer, with the time it took (for bandwidth estimates).
    pub bytes_from: HashMap<SocketAddr, (u64, std::time::Duration)>,
    /// Chunks found already on disk from an earlier attempt.
    pub resumed: usize,
    /// Chunks that failed verification (dropped, fetched again elsewhere).
    pub bad_chunks: u32,
}

/// Path of the manifest of a blob.
pub fn manifest_path(hash: &ContentHash) -> String {
    format!("/mesh/v1/blobs/{}", hash.to_hex())
}

/// Encodes a manifest response: `u64 size (BE) || chunk hashes` (none for one chunk).
pub fn encode_manifest(size: u64, chunks: &[ContentHash]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 32 * chunks.len());
    v.extend_from_slice(&size.to_be_bytes());
    for c in chunks {
        v.extend_from_slice(&c.0);
    }
    v
}

/// Decodes a manifest response; `None` if malformed.
pub fn decode_manifest(b: &[u8]) -> Option<(u64, Vec<ContentHash>)> {
    if b.len() < 8 || !(b.len() - 8).is_multiple_of(32) {
        return None;
    }
    let size = u64::from_be_bytes(b[..8].try_into().ok()?);
    let chunks = b[8..]
        .chunks_exact(32)
        .map(|c| ContentHash(c.try_into().expect("32")))
        .collect();
    Some((size, chunks))
}

type ManifestAnswer =
    Result<(SocketAddr, Result<bytes::Bytes, ClientError>), tokio::task::JoinError>;

/// A peer's manifest answer, if it is good: (peer, chunk hashes).
fn accept_manifest(want: &Want, r: ManifestAnswer) -> Option<(SocketAddr, Vec<ContentHash>)> {
    let Ok((p, Ok(body))) = r else { return None };
    let (size, list) = decode_manifest(&body)?;
    match check_manifest(want, size, list) {
        Some(list) => Some((p, list)),
        None => {
            tracing::warn!(peer = %p, hash = %want.hash, "peer sent a manifest that does not match the record");
            None
        }
    }
}

/// The chunk hashes to fetch, checked against the record.
fn check_manifest(want: &Want, size: u64, chunks: Vec<ContentHash>) -> Option<Vec<ContentHash>> {
    if size != want.size {
        return None;
    }
    let n = want.size.div_ceil(CHUNK_SIZE).max(1) as usize;
    match want.manifest_root {
        None if n == 1 && chunks.is_empty() => Some(vec![want.hash]),
        Some(root) if chunks.len() == n && manifest_root(&chunks) == root => Some(chunks),
        _ => None,
    }
}

/// How fast a transfer may go.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Chunk downloads in flight.
    pub parallel: usize,
    /// Shared by every background transfer.
    pub pacer: std::sync::Arc<super::pace::Pacer>,
}

/// Downloads `want` from `peers` into `blobs`, keeping partial state under
/// `partial_root`. Returns the ingested (not yet committed) blob.
pub async fn fetch(
    client: &MeshClient,
    peers: &[SocketAddr],
    want: &Want,
    blobs: &BlobDir,
    partial_root: &Path,
    flow: &Flow,
) -> Result<(Ingested, Report), TransferError> {
    let (parallel, pacer) = (flow.parallel, &flow.pacer);
    let dir = partial_root.join(want.hash.to_hex());
    tokio::fs::create_dir_all(&dir).await?;
    let mut report = Report::default();

    // who has it, and the manifest
    let mut asks = JoinSet::new();
    for p in peers {
        let (c, p, path) = (client.clone(), *p, manifest_path(&want.hash));
        asks.spawn(async move {
            let r = match c
                .request_with(p, Method::GET, &path, Vec::new(), &relay_headers())
                .await
            {
                Ok((StatusCode::OK, b)) => Ok(b),
                Ok((s, _)) => Err(ClientError::Status(p, s)),
                Err(e) => Err(e),
            };
            (p, r)
        });
    }
    // start as soon as one peer has answered with a good manifest; peers
    // that answer later join the swarm, and one that never answers (switched
    // off, out of range) holds nothing up
    let mut sources = Vec::new();
    let mut chunks: Option<Vec<ContentHash>> = None;
    while chunks.is_none() {
        let Some(r) = asks.join_next().await else {
            break;
        };
        if let Some(list) = accept_manifest(want, r) {
            chunks = Some(list.1);
            sources.push(list.0);
        }
    }
    let total = want.size.div_ceil(CHUNK_SIZE).max(1) as usize;
    let done = chunks_on_disk(&dir, total).await?;
    let Some(chunks) = chunks else {
        let have = done.iter().filter(|d| **d).count();
        return Err(TransferError::NoSource(want.hash, have, total));
    };
    report.resumed = done.iter().filter(|d| **d).count();
    let mut todo: VecDeque<usize> = (0..total).filter(|i| !done[*i]).collect();
    let mut failures: HashMap<SocketAddr, u32> = HashMap::new();
    let mut next_source = 0usize;
    let mut inflight = JoinSet::new();
    loop {
        while inflight.len() < parallel.max(1) && !todo.is_empty() && !sources.is_empty() {
            let idx = todo.pop_front().expect("not empty");
            let peer = sources[next_source % sources.len()];
            next_source += 1;
            let (c, expected, file) = (client.clone(), chunks[idx], dir.join(idx.to_string()));
            let path = format!("{}/{idx}", manifest_path(&want.hash));
            let pacer = pacer.clone();
            inflight.spawn(async move {
                pacer.take(CHUNK_SIZE).await;
                let t = std::time::Instant::now();
                let r = get_chunk(&c, peer, &path, &expected, &file).await;
                (idx, peer, t.elapsed(), r)
            });
        }
        if inflight.is_empty() && (todo.is_empty() || asks.is_empty()) {
            break; // finished, or out of sources with nobody left to ask
        }
        tokio::select! {
            Some(r) = asks.join_next(), if !asks.is_empty() => {
                if let Some((p, list)) = accept_manifest(want, r)
                    && list == chunks
                    && !sources.contains(&p)
                {
                    sources.push(p);
                }
            }
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let (idx, peer, took, r) = done.map_err(|e| io::Error::other(e.to_string()))?;
                match r {
                    Ok(n) => {
                        *report.chunks_from.entry(peer).or_default() += 1;
                        let b = report.bytes_from.entry(peer).or_default();
                        b.0 += n;
                        b.1 += took;
                    }
                    Err(e) => {
                        if matches!(e, ChunkError::Bad) {
                            report.bad_chunks += 1;
                        }
                        tracing::debug!(peer = %peer, chunk = idx, error = %e, "chunk failed; trying another peer");
                        todo.push_back(idx);
                        let f = failures.entry(peer).or_default();
                        *f += 1;
                        if *f >= 2 || matches!(e, ChunkError::Client(ClientError::Io(..))) {
                            sources.retain(|s| *s != peer);
                        }
                    }
                }
            }
        }
    }
    if !todo.is_empty() {
        return Err(TransferError::NoSource(
            want.hash,
            total - todo.len(),
            total,
        ));
    }
    let ingested = assemble(blobs, &dir, total).await?;
    if ingested.hash != want.hash || ingested.size != want.size {
        // a chunk on disk went bad after it was verified: start over
        let _ignored = tokio::fs::remove_dir_all(&dir).await;
        return Err(TransferError::Corrupt(want.hash));
    }
    let _leftover_is_harmless = tokio::fs::remove_dir_all(&dir).await;
    Ok((ingested, report))
}

#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("chunk does not match its manifest hash")]
    Bad,
    #[error(transparent)]
    Io(#[from] io::Error),
}

async fn get_chunk(
    c: &MeshClient,
    peer: SocketAddr,
    path: &str,
    expected: &ContentHash,
    file: &Path,
) -> Result<u64, ChunkError> {
    let (status, body) = c
        .request_with(peer, Method::GET, path, Vec::new(), &relay_headers())
        .await?;
    if status != StatusCode::OK {
        return Err(ClientError::Status(peer, status).into());
    }
    if body.len() as u64 > CHUNK_SIZE || ContentHash::of(&body) != *expected {
        return Err(ChunkError::Bad);
    }
    let tmp = file.with_extension("tmp");
    tokio::fs::write(&tmp, &body).await?;
    tokio::fs::rename(&tmp, file).await?;
    Ok(body.len() as u64)
}

/// Peers that lack a blob relay the request to their neighbours (silent
/// nodes are reached this way), a few hops at most.
fn relay_headers() -> [(&'static str, String); 2] {
    [
        (HOPS_HEADER, RELAY_HOPS.to_string()),
        (REQUEST_ID_HEADER, request_id()),
    ]
}

/// Which chunks an earlier attempt left on disk (stat calls, off the runtime).
async fn chunks_on_disk(dir: &Path, total: usize) -> io::Result<Vec<bool>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        (0..total)
            .map(|i| dir.join(i.to_string()).exists())
            .collect()
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))
}

async fn assemble(blobs: &BlobDir, dir: &Path, total: usize) -> io::Result<Ingested> {
    let blobs = blobs.clone();
    let dir: PathBuf = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut w = blobs.begin()?;
        for i in 0..total {
            w.write(&std::fs::read(dir.join(i.to_string()))?)?;
        }
        w.finish()
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Copies a blob this node already has (under another URL) into a new
/// ingest, verifying it on the way.
pub async fn copy_local(blobs: &BlobDir, hash: ContentHash, size: u64) -> io::Result<Ingested> {
    let blobs = blobs.clone();
    tokio::task::spawn_blocking(move || {
        let data = blobs
            .read_verified(&hash, size)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut w = blobs.begin()?;
        w.write(&data)?;
        w.finish()
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_codec_and_check() {
        let chunks = vec![ContentHash([1; 32]), ContentHash([2; 32])];
        let b = encode_manifest(CHUNK_SIZE + 1, &chunks);
        let (size, back) = decode_manifest(&b).unwrap();
        assert_eq!((size, &back), (CHUNK_SIZE + 1, &chunks));
        assert!(decode_manifest(&b[..b.len() - 1]).is_none());
        let want = Want {
            hash: ContentHash([9; 32]),
            size: CHUNK_SIZE + 1,
            manifest_root: Some(manifest_root(&chunks)),
        };
        assert_eq!(
            check_manifest(&want, size, back.clone()),
            Some(chunks.clone())
        );
        let mut forged = back;
        forged[1] = ContentHash([3; 32]);
        assert_eq!(check_manifest(&want, size, forged), None);
        let small = Want {
            hash: ContentHash([9; 32]),
            size: 5,
            manifest_root: None,
        };
        assert_eq!(
            check_manifest(&small, 5, vec![]),
            Some(vec![ContentHash([9; 32])])
        );
        assert_eq!(check_manifest(&small, 6, vec![]), None);
    }
}
