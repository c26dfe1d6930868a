//! Routed content requests (FR-010): a URL this node cannot serve from its
//! store is fetched from the best node that holds it, hop by hop.
//!
//! Each node on the way decides for itself with its [`RouteTable`]
//! (same subnet first, then fewest hops and lowest RTT, radio last; next hops
//! that failed or were slow recently are penalised), forwards
//! `GET /mesh/v1/content?url=...` to that neighbour and streams the answer
//! back as it arrives, so a hop adds a connection and a copy, not a
//! store-and-forward delay. A request carries a hop budget
//! ([`CONTENT_HOPS`]), a random request id and the path it took: a node
//! refuses an id it has seen (a loop) and a budget of zero, and never
//! forwards to a node on the path. A failing next hop is penalised and the
//! next best one tried.
//!
//! What passes through is kept according to the replication policy
//! ([`super::replicate::fetch_on_read`]): a relay and the asking node tee the
//! stream into their store, check it against the signed record's hash, and
//! publish it under the record; personal items are passed on, never kept.
//!
//! Identical concurrent requests are collapsed ([`Flights`]): the first
//! becomes the leader and fetches; the others wait for it and are then
//! served from the store.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{mpsc, watch};

use super::MeshView;
use super::client::{
    HOPS_HEADER, HOPS_TAKEN_HEADER, PATH_HEADER, REQUEST_ID_HEADER, SERVED_BY_HEADER,
};
use crate::cache::blobs::Ingested;
use crate::cache::sink::BlobSink;
use crate::catalog::{Access, ContentHash, ContentUrl, Priority};
use crate::node::NodeId;
use crate::store::{PublishMeta, StoreError, StoreHandle};
use crate::sync::record::Signed;

/// A response body: bytes as they arrive.
pub type Body = BoxBody<Bytes, io::Error>;

/// Next hops tried before giving up on a request.
const ATTEMPTS: usize = 3;

/// Response headers passed on unchanged.
const PASSED_ON: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ETAG,
    header::ACCEPT_RANGES,
];

/// A content request to route.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The catalog URL.
    pub url: String,
    /// The catalog's winning record for it; `None` for a request to fetch
    /// external content at [`Forward::to`].
    pub rec: Option<Arc<Signed>>,
    /// Route to this node rather than to a holder of `rec`.
    pub to: Option<NodeId>,
    /// Hops this request may still take.
    pub hops_left: u8,
    /// Same on every hop.
    pub request_id: String,
    /// Nodes it passed, this node last.
    pub path: Vec<NodeId>,
    /// The client's `Range`, passed on (a partial answer is never kept).
    pub range: Option<HeaderValue>,
}

/// Why a request could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No reachable node holds it (or every route is excluded).
    #[error("no route to a node holding it")]
    NoRoute,
    /// Every next hop tried failed.
    #[error("every route failed; last: {0}")]
    Failed(String),
}

/// Routes `f` to the best holder and streams the answer. `store` keeps a
/// copy when the policy allows.
/// `flight`, if given, is released once the answer is through (and kept).
pub async fn forward(
    view: &Arc<MeshView>,
    store: &StoreHandle,
    f: Forward,
    flight: Option<FlightGuard>,
) -> Result<Response<Body>, ForwardError> {
    let mut holders = match (&f.to, &f.rec) {
        (Some(t), _) => vec![*t],
        (None, Some(rec)) => holders(view, rec),
        (None, None) => return Err(ForwardError::NoRoute),
    };
    if holders.is_empty() {
        // the holder is this node, and it no longer has it (an evicted
        // fetched page): nobody else is known to
        return Err(ForwardError::NoRoute);
    }
    let mut exclude = f.path.clone();
    let mut last = ForwardError::NoRoute;
    for _ in 0..ATTEMPTS {
        let now = view.now_ms();
        let choice = {
            let routes = view.routes.read().expect("lock").clone();
            let pen = view.penalties.lock().expect("lock");
            routes.decide(&holders, &exclude, |n| pen.penalty(n, now))
        };
        // no route yet (the topology is still spreading, or a holder's links
        // are unknown): ask the nearest neighbour not on the path; it does the
        // same, and the request id and hop budget bound the search
        let choice = match choice {
            Some(c) => c,
            None => match nearest_neighbour(view, &exclude) {
                Some(n) => crate::routing::Choice {
                    holder: holders[0],
                    next_hop: n,
                    cost: crate::routing::Cost::ZERO,
                },
                None => return Err(last),
            },
        };
        exclude.push(choice.next_hop);
        let addr = view
            .neighbours
            .read()
            .expect("lock")
            .iter()
            .find(|(_, n)| *n == choice.next_hop)
            .map(|(a, _)| *a);
        let Some(addr) = addr else {
            continue; // the neighbour left since the table was built
        };
        let mut path: Vec<String> = f.path.iter().map(|n| n.to_hex()).collect();
        if f.path.last() != Some(&view.node) {
            path.push(view.node.to_hex());
        }
        let mut headers = vec![
            (HOPS_HEADER, f.hops_left.saturating_sub(1).to_string()),
            (REQUEST_ID_HEADER, f.request_id.clone()),
            (PATH_HEADER, path.join(",")),
        ];
        if let Some(r) = f.range.as_ref().and_then(|r| r.to_str().ok()) {
            headers.push(("range", r.to_string()));
        }
        let (endpoint, q) = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("url", &f.url);
            let endpoint = match &f.to {
                Some(to) => {
                    q.append_pair("to", &to.to_hex());
                    "/mesh/v1/fetch"
                }
                None => "/mesh/v1/content",
            };
            (endpoint, q.finish())
        };
        let started = Instant::now();
        let r = view
            .client
            .stream(addr, &format!("{endpoint}?{q}"), &headers)
            .await;
        let took_ms = started.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(resp) if resp.status().is_success() => {
                let mut pen = view.penalties.lock().expect("lock");
                let now = view.now_ms();
                pen.record_latency(choice.next_hop, took_ms, choice.cost.metric_ms, now);
                pen.record_success(choice.next_hop, now);
                drop(pen);
                let keep = f.rec.clone().filter(|rec| {
                    f.range.is_none() && resp.status() == StatusCode::OK && keeps(rec, &view.node)
                });
                return Ok(pass_on(
                    resp,
                    store,
                    keep.map(|rec| (f.url.clone(), rec)),
                    flight,
                ));
            }
            Ok(resp) => {
                last = ForwardError::Failed(format!(
                    "{} answered {}",
                    choice.next_hop.short(),
                    resp.status()
                ));
                if resp.status() == StatusCode::NOT_FOUND && choice.next_hop == choice.holder {
                    // the holder itself says it has none (evicted): asking
                    // others on its behalf would only search the mesh
                    holders.retain(|h| *h != choice.holder);
                    if holders.is_empty() {
                        return Err(ForwardError::NoRoute);
                    }
                }
            }
            Err(e) => last = ForwardError::Failed(e.to_string()),
        }
        tracing::debug!(url = %f.url, next_hop = %choice.next_hop.short(), error = %last, "forwarding failed; trying another route");
        view.penalties
            .lock()
            .expect("lock")
            .record_failure(choice.next_hop, view.now_ms());
    }
    Err(last)
}

/// The neighbour with the best link, among those not excluded.
fn nearest_neighbour(view: &MeshView, exclude: &[NodeId]) -> Option<NodeId> {
    let topo = view.topology.read().expect("lock").clone();
    let metric = |n: &NodeId| {
        topo.link(&view.node, n).map_or(f64::MAX, |l| {
            crate::routing::link_metric_ms(l.rtt_ms, l.loss)
        })
    };
    view.neighbours
        .read()
        .expect("lock")
        .iter()
        .map(|(_, n)| *n)
        .filter(|n| !exclude.contains(n))
        .min_by(|a, b| metric(a).total_cmp(&metric(b)).then(a.cmp(b)))
}

/// Nodes that hold `rec`'s content: its origin, and for essential items
/// every node (they copy them as soon as they learn of them).
/// Never this node itself (it is asking because it has none).
fn holders(view: &MeshView, rec: &Signed) -> Vec<NodeId> {
    let mut v = vec![rec.record.origin];
    v.retain(|h| *h != view.node);
    if rec.record.priority() == Some(Priority::Essential) {
        let topo = view.topology.read().expect("lock").clone();
        v.extend(
            topo.nodes()
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != view.node && *id != rec.record.origin),
        );
    }
    v
}

/// Does the policy let this node keep a copy of what passes through?
fn keeps(rec: &Signed, me: &NodeId) -> bool {
    rec.record.origin != *me && super::replicate::fetch_on_read(&rec.record)
}

/// The response for our caller: the upstream's status and content headers,
/// one more hop, and the body streamed through (and into the store when
/// `keep` names the URL and record).
fn pass_on(
    resp: Response<Incoming>,
    store: &StoreHandle,
    keep: Option<(String, Arc<Signed>)>,
    flight: Option<FlightGuard>,
) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let hops = parts
        .headers
        .get(HOPS_TAKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    let mut out = Response::builder().status(parts.status);
    for h in &PASSED_ON {
        if let Some(v) = parts.headers.get(h) {
            out = out.header(h, v);
        }
    }
    for h in [
        "x-meshnode-version",
        "x-meshnode-cache",
        "last-modified",
        "cache-control",
        "expires",
        "content-encoding",
        SERVED_BY_HEADER,
    ] {
        if let Some(v) = parts.headers.get(h) {
            out = out.header(h, v);
        }
    }
    out = out.header(HOPS_TAKEN_HEADER, u16::from(hops));
    let sink = keep.and_then(|(url, rec)| match BlobSink::begin(store.blobs()) {
        Ok(s) => {
            let store = store.clone();
            Some((s, move |b: Ingested| keep_copy(store, url, rec, b)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a copy of passing content");
            None
        }
    });
    out.body(tee(body, sink, flight)).expect("valid response")
}

/// Streams `body` to the caller; with a `sink`, writes it there as well and
/// calls its function with the finished blob. The copy continues when the
/// caller hangs up, so a transfer started is never wasted. `flight` is
/// released at the very end.
pub fn tee<F, Fut>(
    mut body: Incoming,
    mut sink: Option<(BlobSink, F)>,
    flight: Option<FlightGuard>,
) -> Body
where
    F: FnOnce(Ingested) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    tokio::spawn(async move {
        let _flight = flight;
        let mut caller = true;
        let mut complete = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let Ok(data) = f.into_data() else { continue };
                    if let Some((s, _)) = sink.as_mut()
                        && let Err(e) = s.write(data.clone()).await
                    {
                        tracing::warn!(error = %e, "keeping a copy failed");
                        sink = None;
                    }
                    if caller && tx.send(Ok(data)).await.is_err() {
                        caller = false;
                        if sink.is_none() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    complete = false;
                    let _caller_gone = tx.send(Err(io::Error::other(e))).await;
                    break;
                }
            }
        }
        drop(tx);
        if complete && let Some((s, done)) = sink {
            match s.finish().await {
                Ok(b) => done(b).await,
                Err(e) => tracing::warn!(error = %e, "keeping a copy failed"),
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    BodyExt::boxed(StreamBody::new(stream.map(|r| r.map(Frame::data))))
}

/// Checks a passing copy against its record and stores it under it.
async fn keep_copy(store: StoreHandle, url: String, rec: Arc<Signed>, blob: Ingested) {
    let Some(c) = rec.record.content.as_ref() else {
        return;
    };
    if blob.hash != ContentHash(c.hash) || blob.size != c.size {
        tracing::warn!(url = %url, "content passing through does not match its record; not kept");
        return;
    }
    let Some(meta) = meta_of(&url, &rec) else {
        return;
    };
    match store.publish(blob, meta).await {
        Ok(e) => tracing::debug!(url = %e.url, "kept a copy of content passing through"),
        Err(StoreError::Stale { .. }) => {}
        Err(e) => tracing::info!(url = %url, error = %e, "not keeping a copy of passing content"),
    }
}

/// The store's view of a peer's record for `url` (the catalog URL, which
/// differs from the record's for a kept conflict loser).
pub fn meta_of(url: &str, rec: &Signed) -> Option<PublishMeta> {
    let c = rec.record.content.as_ref()?;
    Some(PublishMeta {
        url: ContentUrl::parse(url).ok()?,
        content_type: Some(c.content_type.clone()),
        priority: Priority::from_u8(c.priority).unwrap_or(Priority::Standard),
        access: Access::from_u8(c.access).unwrap_or(Access::Community),
        tags: c.tags.clone(),
        origin: rec.record.origin,
        pinned: false,
        version: Some(rec.record.version),
        timestamp_ms: Some(rec.record.published_ms),
        version_floor: 0,
    })
}

/// Requests in flight by key (URL): one leader fetches, followers wait.
#[derive(Debug, Default)]
pub struct Flights(Mutex<HashMap<String, watch::Receiver<()>>>);

/// The outcome of [`Flights::join`].
#[derive(Debug)]
pub enum Flight {
    /// Fetch it; followers wait until this is dropped.
    Leader(FlightGuard),
    /// Someone else is fetching it: wait with [`Flight::wait`].
    Follower(watch::Receiver<()>),
}

/// Held by a flight's leader; dropping it releases the followers.
#[derive(Debug)]
pub struct FlightGuard {
    flights: Arc<MeshView>,
    key: String,
    _tx: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flights
            .flights
            .0
            .lock()
            .expect("lock")
            .remove(&self.key);
    }
}

impl Flights {
    /// Leads a new flight for `key` or follows the one in the air.
    pub fn join(view: &Arc<MeshView>, key: &str) -> Flight {
        let mut m = view.flights.0.lock().expect("lock");
        if let Some(rx) = m.get(key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        m.insert(key.to_string(), rx);
        Flight::Leader(FlightGuard {
            flights: view.clone(),
            key: key.to_string(),
            _tx: tx,
        })
    }
}

impl Flight {
    /// Waits (at most `wait`) for the leader to finish.
    pub async fn wait(mut rx: watch::Receiver<()>, wait: Duration) {
        // the leader never sends; `changed` ends when its sender is dropped
        let _ = tokio::time::timeout(wait, rx.changed()).await;
    }
}

/// Answer headers a node adds to content it serves from its own store.
pub fn own_headers(h: &mut HeaderMap, served_by: &str) {
    h.insert(HOPS_TAKEN_HEADER, HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(served_by) {
        h.insert(SERVED_BY_HEADER, v);
    }
}
