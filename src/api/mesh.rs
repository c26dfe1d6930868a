//! Node-to-node endpoints on the public port (docs/PROTOCOL.md):
//! reconciliation, record exchange, blob manifests and chunks under
//! `/mesh/v1/`, and the bootstrap API under `/api/bootstrap/` (only on nodes
//! with `discovery.broadcast = true`). Every request but `discover` must be
//! signed by the calling node ([`crate::mesh::client`]).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{ApiError, App, Body, full, json};
use crate::cache::blobs::{self, CHUNK_SIZE};
use crate::catalog::{Access, ContentHash, ContentUrl};
use crate::discovery::bootstrap::{Discover, PeerEntry, Register, RegisterError};
use crate::mesh::client::verify_request;
use crate::node::NodeId;
use crate::sync::{recon, record, transfer};
use hyper::HeaderMap;

/// Largest request body (a reconciliation message or a batch of records).
const MAX_BODY: usize = 4 << 20;
/// Most short ids in one `records/get`.
const MAX_IDS: usize = 4096;

/// Is this a node-to-node route?
pub fn handles(path: &str) -> bool {
    path.starts_with("/mesh/") || path.starts_with("/api/bootstrap/")
}

/// Serves a node-to-node request.
pub async fn dispatch(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let headers = req.headers().clone();
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?
        .to_bytes();
    if method == Method::GET && path == "/api/bootstrap/discover" {
        return discover(app);
    }
    let caller = verify_request(&method, &pq, &headers, &body).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "node-to-node requests must carry a valid Mesh-Node / Mesh-Signature pair",
        )
    })?;
    let mesh = &app.mesh;
    match (method, path.as_str()) {
        (Method::POST, "/mesh/v1/recon") => {
            let msg = recon::decode(&body)
                .map_err(|e| ApiError::bad_request(format!("bad reconciliation message: {e}")))?;
            let reply = {
                let cat = mesh.view.catalog.read().expect("catalog lock poisoned");
                recon::respond(cat.set(), &msg, recon::Role::Responder).0
            };
            Ok(binary(recon::encode(&reply)))
        }
        (Method::POST, "/mesh/v1/records/get") => {
            if !body.len().is_multiple_of(8) || body.len() / 8 > MAX_IDS {
                return Err(ApiError::bad_request(format!(
                    "body must be 8-byte short ids, at most {MAX_IDS}"
                )));
            }
            let cat = mesh.view.catalog.read().expect("catalog lock poisoned");
            let mut out = Vec::new();
            for s in body.chunks_exact(8) {
                if let Some(r) = cat.by_short(s.try_into().expect("8 bytes")) {
                    out.extend_from_slice(&r.wire());
                }
            }
            Ok(binary(out))
        }
        (Method::POST, "/mesh/v1/records/put") => {
            let (recs, bad) = record::open_many(&body, crate::identity::verify);
            mesh.view
                .counters
                .records_rejected
                .fetch_add(bad as u64, Ordering::Relaxed);
            let accepted = recs.len();
            mesh.push_records(recs).await;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "accepted": accepted, "rejected": bad }),
            ))
        }
        (Method::GET, "/mesh/v1/content" | "/mesh/v1/fetch") => {
            Ok(content(app, &pq, caller, &headers).await)
        }
        (Method::GET, p) if p.starts_with("/mesh/v1/blobs/") => {
            blob(app, &p[15..], &caller, &headers).await
        }
        (Method::POST, "/api/bootstrap/register") => {
            bootstrap_only(app)?;
            let r: Register = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("bad registration: {e}")))?;
            let now = mesh.view.now_ms();
            let mut reg = mesh.view.registry.lock().expect("registry lock poisoned");
            match reg.register(caller, r, now) {
                Ok(()) => Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "ttl_s": reg.ttl().as_secs() }),
                )),
                Err(e @ RegisterError::Invalid(_)) => Err(ApiError::bad_request(e.to_string())),
                Err(e @ RegisterError::Full) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                )),
            }
        }
        (Method::DELETE, "/api/bootstrap/unregister") => {
            bootstrap_only(app)?;
            let was = mesh
                .view
                .registry
                .lock()
                .expect("registry lock poisoned")
                .unregister(&caller);
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "unregistered": was }),
            ))
        }
        (m, p) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node-to-node endpoint {m} {p}"),
        )),
    }
}

fn bootstrap_only(app: &App) -> Result<(), ApiError> {
    if app.mesh.view.broadcast {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this node is not a bootstrap node (discovery.broadcast = false)",
        ))
    }
}

fn discover(app: &App) -> Result<Response<Body>, ApiError> {
    bootstrap_only(app)?;
    let v = &app.mesh.view;
    let mut reg = v.registry.lock().expect("registry lock poisoned");
    let mut peers = vec![PeerEntry {
        node: v.node.to_hex(),
        name: app.node.name.clone(),
        addrs: v.own_addrs.clone(),
        is_bootstrap: true,
    }];
    peers.extend(reg.discover(None, v.now_ms()));
    Ok(json(
        StatusCode::OK,
        &Discover {
            peers,
            ttl_s: reg.ttl().as_secs(),
        },
    ))
}

/// `GET /mesh/v1/blobs/<hash>` (manifest) and `.../<hash>/<index>` (chunk).
async fn blob(
    app: &App,
    rest: &str,
    caller: &NodeId,
    headers: &hyper::HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let (h, idx) = match rest.split_once('/') {
        Some((h, i)) => (
            h,
            Some(
                i.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("chunk index must be a number"))?,
            ),
        ),
        None => (rest, None),
    };
    let hash = ContentHash::from_hex(h)
        .ok_or_else(|| ApiError::bad_request("blob hash must be 64 hex digits"))?;
    let Some(live) = app.store.by_hash(&hash) else {
        return relay(
            app,
            &hash,
            &format!("/mesh/v1/blobs/{rest}"),
            caller,
            headers,
        )
        .await;
    };
    let size = live.fields().size;
    let manifest = live.manifest.clone();
    let Some(idx) = idx else {
        return Ok(binary(transfer::encode_manifest(size, &manifest)));
    };
    let chunks = size.div_ceil(CHUNK_SIZE).max(1);
    if idx >= chunks {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("chunk {idx} of {chunks}"),
        ));
    }
    let store = app.store.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Bytes, blobs::BlobError> {
        let b = store.blobs();
        if manifest.is_empty() {
            b.read_verified(&hash, size)
        } else {
            let f = b.open_blob(&hash)?;
            blobs::read_chunk_verified(&f, &hash, size, idx, &manifest[idx as usize])
        }
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "chunk read failed"))?;
    match read {
        Ok(bytes) => {
            app.mesh
                .view
                .counters
                .chunks_served
                .fetch_add(1, Ordering::Relaxed);
            Ok(binary(bytes))
        }
        Err(blobs::BlobError::Corrupt(h)) => {
            tracing::error!(hash = %h, "corrupt blob found while serving a peer; quarantining");
            let _logged_by_store = app.store.quarantine(h).await;
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "blob failed its integrity check",
            ))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// A blob this node lacks: relayed through its neighbours when the request
/// allows it ([`crate::mesh::relay`]).
async fn relay(
    app: &App,
    hash: &ContentHash,
    path: &str,
    caller: &NodeId,
    headers: &hyper::HeaderMap,
) -> Result<Response<Body>, ApiError> {
    use crate::mesh::client::{HOPS_HEADER, REQUEST_ID_HEADER};
    use crate::mesh::relay::{RelayError, relay_blob};
    let hops = headers
        .get(HOPS_HEADER)
        .and_then(|h| h.to_str().ok()?.parse::<u8>().ok())
        .unwrap_or(0);
    let rid = headers.get(REQUEST_ID_HEADER).and_then(|h| h.to_str().ok());
    match relay_blob(&app.mesh.view, hash, path, caller, hops, rid).await {
        Ok(body) => Ok(binary(body)),
        Err(RelayError::NotHere) => Err(ApiError::new(StatusCode::NOT_FOUND, "not held here")),
        Err(RelayError::Loop) => Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            "request already relayed through this node",
        )),
    }
}

fn binary(b: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(full(b))
        .expect("static headers are valid")
}

/// `GET /mesh/v1/content?url=`: a routed content request. Served from the
/// store when this node holds it; otherwise passed on towards a holder,
/// unless its request id passed here before (508, a loop) or its hop budget
/// is spent (508).
async fn content(app: &App, pq: &str, caller: NodeId, h: &HeaderMap) -> Response<Body> {
    use crate::mesh::client::{HOPS_HEADER, PATH_HEADER, REQUEST_ID_HEADER};
    let refuse = |status: StatusCode, msg: String| {
        super::respond(status, "text/plain; charset=utf-8", msg + "\n")
    };
    let q: Vec<(String, String)> =
        form_urlencoded::parse(pq.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .into_owned()
            .collect();
    let Some(url) = super::param(&q, "url").and_then(|u| ContentUrl::parse(u).ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "missing or bad ?url=".into());
    };
    let to = super::param(&q, "to").and_then(NodeId::from_hex);
    let url = url.to_string();
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    // mesh callers read public and community content, never private
    if let Some(live) = app
        .store
        .get(&url)
        .filter(|e| e.fields().access != Access::Private && !e.fields().quarantined)
    {
        return super::content::serve_entry(app, live, &Method::GET, h)
            .await
            .resp;
    }
    if to == Some(app.node.node_id) {
        // this node was chosen to fetch it from the internet
        let url = ContentUrl::parse(&url).expect("canonical above");
        return super::proxy::fetch_here(app, &url, &Method::GET, h)
            .await
            .resp;
    }
    let rec = app.mesh.winner(&url);
    if rec.is_none() && to.is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("{url} is not in this node's catalog"),
        );
    }
    let Some(rid) = header(REQUEST_ID_HEADER).filter(|r| !r.is_empty() && r.len() <= 64) else {
        return refuse(StatusCode::BAD_REQUEST, "missing mesh-request-id".into());
    };
    let hops: u8 = header(HOPS_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let counters = &app.counters;
    if hops == 0 {
        counters.mesh_loops_refused.fetch_add(1, Ordering::Relaxed);
        return refuse(
            StatusCode::LOOP_DETECTED,
            format!("hop limit reached for {url}"),
        );
    }
    if !app.mesh.view.first_relay(rid) {
        counters.mesh_loops_refused.fetch_add(1, Ordering::Relaxed);
        return refuse(
            StatusCode::LOOP_DETECTED,
            format!("request {rid} passed this node before (a routing loop)"),
        );
    }
    let mut path: Vec<NodeId> = header(PATH_HEADER)
        .unwrap_or("")
        .split(',')
        .filter_map(NodeId::from_hex)
        .take(crate::mesh::client::CONTENT_HOPS as usize * 2)
        .collect();
    path.push(caller);
    path.push(app.node.node_id);
    counters.mesh_relayed.fetch_add(1, Ordering::Relaxed);
    let hop = super::content::Hop {
        hops_left: hops.min(crate::mesh::client::CONTENT_HOPS),
        request_id: rid.to_string(),
        path,
    };
    match (to, rec) {
        (Some(at), _) => super::proxy::fetch_at(app, &url, at, hop).await.resp,
        (None, Some(rec)) => {
            super::content::via_mesh(app, &url, rec, hop, &Method::GET, h)
                .await
                .resp
        }
        (None, None) => refuse(
            StatusCode::NOT_FOUND,
            format!("{url} is not in this node's catalog"),
        ),
    }
}
