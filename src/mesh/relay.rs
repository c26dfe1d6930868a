//! Relaying a blob request for a peer that cannot reach the blob's holder
//! (e.g. a silent node's neighbour's neighbour): ask our own neighbours and
//! pass the first good answer back unchanged. The requester verifies every
//! chunk against the signed record, so a relay cannot tamper. Bounded by a
//! hop count, and a request id seen twice is a loop.

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::MeshView;
use super::client::{HOPS_HEADER, RELAY_HOPS, REQUEST_ID_HEADER};
use crate::catalog::ContentHash;
use crate::node::NodeId;

/// Holder hints kept; losing them costs one broadcast to the neighbours.
const HOLDERS_MAX: usize = 4096;

/// Why a relay gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// No hops left, no request id, or no neighbour has it.
    NotHere,
    /// This request id passed through here before.
    Loop,
}

/// Fetches `path` (a `/mesh/v1/blobs/...` request for `hash`) from our
/// neighbours other than `caller`, with `hops` (as received, capped at
/// [`RELAY_HOPS`]) minus one and the same request id.
pub async fn relay_blob(
    view: &MeshView,
    hash: &ContentHash,
    path: &str,
    caller: &NodeId,
    hops: u8,
    request_id: Option<&str>,
) -> Result<Bytes, RelayError> {
    let hops = hops.min(RELAY_HOPS);
    let rid = request_id.filter(|r| !r.is_empty() && r.len() <= 64);
    let (Some(rid), true) = (rid, hops > 0) else {
        return Err(RelayError::NotHere);
    };
    if !view.first_relay(rid) {
        return Err(RelayError::Loop);
    }
    let known = view
        .holders
        .lock()
        .expect("lock poisoned")
        .get(&hash.0)
        .copied();
    let mut candidates: Vec<SocketAddr> = known.into_iter().collect();
    candidates.extend(
        view.neighbours
            .read()
            .expect("lock poisoned")
            .iter()
            .filter(|(a, n)| n != caller && Some(*a) != known)
            .map(|(a, _)| *a),
    );
    let fwd = [
        (HOPS_HEADER, (hops - 1).to_string()),
        (REQUEST_ID_HEADER, rid.to_string()),
    ];
    // ask them all at once; the first good answer wins (dropping the set
    // cancels the others), so one dead neighbour costs nothing
    let mut asks = tokio::task::JoinSet::new();
    for a in candidates {
        let (c, path, fwd) = (view.client.clone(), path.to_string(), fwd.clone());
        asks.spawn(async move {
            let r = c
                .request_with(a, Method::GET, &path, Vec::new(), &fwd)
                .await;
            (a, r)
        });
    }
    while let Some(r) = asks.join_next().await {
        if let Ok((a, Ok((StatusCode::OK, body)))) = r {
            let mut h = view.holders.lock().expect("lock poisoned");
            if h.len() >= HOLDERS_MAX {
                h.clear();
            }
            h.insert(hash.0, a);
            return Ok(body);
        }
    }
    Err(RelayError::NotHere)
}
