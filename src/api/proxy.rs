//! The forward proxy on the public port: absolute-form requests
//! (`GET http://example.org/x HTTP/1.1`) and `CONNECT` tunnels, for the
//! mesh's own clients only (community addresses; never an open proxy).
//!
//! `GET`/`HEAD` of plain-HTTP URLs go through the mesh (see
//! [`crate::proxy`] for the rules): served from this node's store or routed
//! to a node holding it while fresh; otherwise fetched once by the online
//! node that [`crate::proxy::fetcher`] picks, kept and signed into the
//! catalog there. Other methods and `CONNECT` pass through untouched and
//! uncached, and only from a node that is online itself.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::content::{Hop, Served, serve_entry, via_mesh};
use super::{App, Body, Caller, full, is_community_ip};
use crate::analytics::Source;
use crate::cache::sink::BlobSink;
use crate::catalog::{Access, ContentUrl};
use crate::connectivity::Mode;
use crate::mesh::client::{HOPS_TAKEN_HEADER, SERVED_BY_HEADER};
use crate::mesh::forward::{Flight, Flights, Forward, forward, tee};
use crate::node::NodeId;
use crate::proxy::{fetcher, freshness, is_fresh};
use crate::store::PublishMeta;
use crate::sync::record::Fetched;

/// Connecting to an origin server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for an origin's response head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A follower waits this long for the fetch in flight.
const FLIGHT_WAIT: Duration = Duration::from_secs(60);

/// Request headers passed to the origin.
const TO_ORIGIN: [header::HeaderName; 4] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
    header::ACCEPT_ENCODING,
];
/// Response headers passed back from the origin.
const FROM_ORIGIN: [header::HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::LOCATION,
];

/// Is this a proxy request (absolute-form with a non-`.radio` host, or CONNECT)?
pub fn is_proxy_request(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        || (req.uri().scheme().is_some()
            && req
                .uri()
                .authority()
                .is_some_and(|a| crate::catalog::url::radio_host_callsign(a.as_str()).is_none()))
}

/// Serves a proxy request.
pub async fn serve(app: &App, caller: Caller, req: Request<Incoming>) -> Served {
    if !app.proxy.enabled {
        return plain(
            StatusCode::FORBIDDEN,
            "the proxy is disabled on this node ([proxy] enabled = false)",
        )
        .into();
    }
    if let Caller::Public(ip) = caller
        && !is_community_ip(ip)
    {
        return plain(
            StatusCode::FORBIDDEN,
            "the proxy serves the mesh's own networks only",
        )
        .into();
    }
    if req.method() == Method::CONNECT {
        return connect(app, req).await.into();
    }
    if req.uri().scheme_str() != Some("http") {
        return plain(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are proxied (use CONNECT for https)",
        )
        .into();
    }
    let authority = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = match ContentUrl::external(authority, pq) {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad URL: {e}")).into(),
    };
    if ![Method::GET, Method::HEAD].contains(req.method()) {
        return pass_through(app, &url, req).await.into();
    }
    get(app, &url, req.method(), req.headers()).await
}

/// `GET`/`HEAD` of an external URL: from the mesh while fresh, else fetched
/// once by its fetcher (also `meshctl fetch` through the control socket).
pub async fn get(app: &App, url: &ContentUrl, method: &Method, headers: &HeaderMap) -> Served {
    let key = url.to_string();
    let now = crate::store::now_ms();
    let online = online_nodes(app);
    let winner = app.mesh.winner(&key);
    let fetched = winner
        .as_ref()
        .and_then(|w| w.record.content.as_ref())
        .and_then(|c| c.fetched.clone());
    let fresh = is_fresh(fetched.as_ref(), now);
    let local = app
        .store
        .get(&key)
        .filter(|e| !e.fields().quarantined && e.fields().access != Access::Private)
        .filter(|e| {
            winner.as_ref().is_none_or(|w| {
                w.record
                    .content
                    .as_ref()
                    .is_some_and(|c| c.hash == e.fields().hash.0)
            })
        });
    if let Some(live) = local
        && (fresh || online.is_empty())
    {
        app.counters.content_hits.fetch_add(1, Ordering::Relaxed);
        let mut r = serve_entry(app, live, method, headers).await;
        cache_headers(&mut r.resp, fresh);
        return r;
    }
    if let Some(w) = winner.clone()
        && (fresh || online.is_empty())
    {
        let hop = Hop::start(app);
        let mut r = via_mesh(app, &key, w, hop, method, headers).await;
        if r.resp.status().is_success() {
            cache_headers(&mut r.resp, fresh);
            return r;
        }
    }
    let Some(at) = fetcher(&key, &online) else {
        return plain(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("{key}: the internet is unreachable from the mesh and no node has a copy"),
        )
        .into();
    };
    if at == app.node.node_id {
        return fetch_here(app, url, method, headers).await;
    }
    let hop = Hop::start(app);
    fetch_at(app, &key, at, hop).await
}

/// Routes a fetch of `url` to node `at` (the URL's fetcher).
pub async fn fetch_at(app: &App, url: &str, at: NodeId, hop: Hop) -> Served {
    let f = Forward {
        url: url.to_string(),
        rec: None,
        to: Some(at),
        hops_left: hop.hops_left,
        request_id: hop.request_id,
        path: hop.path,
        range: None,
    };
    match forward(&app.mesh.view, &app.store, f, None).await {
        // fetched by another node, for the mesh
        Ok(r) => Served::from(Source::Mesh, r),
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            &format!(
                "{url}: the node chosen to fetch it ({}) could not be reached: {e}",
                at.short()
            ),
        )
        .into(),
    }
}

/// The online nodes this node can reach (itself included when online).
fn online_nodes(app: &App) -> Vec<NodeId> {
    let me = app.node.node_id;
    let mut v = Vec::new();
    if app.mesh.view.mode.read().expect("lock").mode == Mode::Online {
        v.push(me);
    }
    let topo = app.mesh.view.topology.read().expect("lock").clone();
    let routes = app.mesh.view.routes.read().expect("lock").clone();
    v.extend(
        topo.nodes()
            .iter()
            .filter(|(id, m)| *id != me && m.mode.as_deref() == Some(Mode::Online.name()))
            .filter(|(id, _)| routes.best(id).is_some())
            .map(|(id, _)| *id),
    );
    v
}

/// Fetches `url` from its origin here, once for all concurrent askers, and
/// keeps it when the origin allows.
pub async fn fetch_here(app: &App, url: &ContentUrl, method: &Method, h: &HeaderMap) -> Served {
    let key = url.to_string();
    let flight = match Flights::join(&app.mesh.view, &format!("fetch:{key}")) {
        Flight::Leader(g) => Some(g),
        Flight::Follower(rx) => {
            Flight::wait(rx, FLIGHT_WAIT).await;
            if let Some(live) = app.store.get(&key).filter(|e| !e.fields().quarantined) {
                let mut r = serve_entry(app, live, method, h).await;
                cache_headers(&mut r.resp, true);
                return r;
            }
            None
        }
    };
    // a flight that ended just before this request joined has kept it
    if let Some(live) = app.store.get(&key).filter(|e| !e.fields().quarantined) {
        drop(flight);
        let mut r = serve_entry(app, live, method, h).await;
        cache_headers(&mut r.resp, true);
        return r;
    }
    let authority = url.authority().unwrap_or_default();
    let resp = match origin_get(authority, url.path(), h).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(url = %key, error = %e, "fetching from the origin failed");
            return plain(StatusCode::BAD_GATEWAY, &format!("{key}: {e}")).into();
        }
    };
    app.counters.origin_fetches.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = resp.into_parts();
    let now = crate::store::now_ms();
    let keepable = freshness(
        parts.status.as_u16(),
        &parts.headers,
        now,
        app.proxy.default_freshness.0,
    )
    .filter(|_| {
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_none_or(|n| n <= app.proxy.max_object.0)
    });
    let mut out = Response::builder().status(parts.status);
    for k in &FROM_ORIGIN {
        if let Some(v) = parts.headers.get(k) {
            out = out.header(k, v);
        }
    }
    out = out
        .header(HOPS_TAKEN_HEADER, "0")
        .header(SERVED_BY_HEADER, app.node.name.as_str())
        .header("x-meshnode-cache", "MISS");
    let sink = match keepable {
        Some(fetched) => match BlobSink::begin(app.store.blobs()) {
            Ok(s) => {
                let (store, mesh) = (app.store.clone(), app.mesh.clone());
                let meta = PublishMeta {
                    version_floor: mesh.max_version(&key),
                    url: url.clone(),
                    content_type: parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                    priority: app.proxy.priority,
                    access: Access::Public,
                    tags: vec!["external".into()],
                    origin: app.node.node_id,
                    pinned: false,
                    version: None,
                    timestamp_ms: None,
                };
                let max = app.proxy.max_object.0;
                Some((s, move |b: crate::cache::blobs::Ingested| {
                    keep(store, mesh, meta, fetched, b, max)
                }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep fetched content");
                None
            }
        },
        None => None,
    };
    let mut r = out.body(tee(body, sink, flight)).expect("valid response");
    if method == Method::HEAD {
        *r.body_mut() = full("");
    }
    Served::from(Source::Internet, r)
}

async fn keep(
    store: crate::store::StoreHandle,
    mesh: crate::mesh::Mesh,
    meta: PublishMeta,
    fetched: Fetched,
    blob: crate::cache::blobs::Ingested,
    max: u64,
) {
    if blob.size > max {
        return;
    }
    let manifest = blob.manifest.clone();
    match store.publish(blob, meta).await {
        Ok(entry) => {
            tracing::info!(url = %entry.url, size = entry.size, "fetched from the internet for the mesh");
            mesh.local_fetched(crate::mesh::FetchedEntry {
                entry,
                manifest,
                fetched,
            })
            .await;
        }
        Err(e) => tracing::info!(error = %e, "not keeping fetched content"),
    }
}

/// A connection to the origin `authority` (`host`, `host:port`, `[v6]:port`;
/// port 80 unless given).
async fn origin<B>(authority: &str) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        p.parse::<u16>().is_ok() && (!h.starts_with('[') || h.ends_with(']'))
    });
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if has_port => (h, p.parse::<u16>().expect("checked above")),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| format!("{authority}: no connection in {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| format!("{authority}: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _closed = conn.await;
    });
    Ok(send)
}

/// `GET path` on the origin `authority`.
async fn origin_get(
    authority: &str,
    path: &str,
    h: &HeaderMap,
) -> Result<Response<Incoming>, String> {
    let mut send = origin(authority).await?;
    let mut req = Request::get(path).header(header::HOST, authority);
    for k in &TO_ORIGIN {
        if let Some(v) = h.get(k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .header(header::VIA, "1.1 meshnode")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(HEAD_TIMEOUT, send.send_request(req))
        .await
        .map_err(|_| format!("{authority}: no answer in {HEAD_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())
}

/// Other methods: straight to the origin, uncached, when this node is online.
async fn pass_through(app: &App, url: &ContentUrl, req: Request<Incoming>) -> Response<Body> {
    if app.mesh.view.mode.read().expect("lock").mode != Mode::Online {
        return plain(
            StatusCode::BAD_GATEWAY,
            "only GET and HEAD go through the mesh; this node has no uplink for other methods",
        );
    }
    let authority = url.authority().unwrap_or_default();
    let r = async {
        let mut send = origin(authority).await?;
        let (mut parts, body) = req.into_parts();
        parts.uri = url.path().parse().map_err(|e| format!("{e}"))?;
        parts.headers.insert(
            header::HOST,
            HeaderValue::from_str(authority).map_err(|e| e.to_string())?,
        );
        send.send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match r {
        Ok(resp) => resp.map(|b| b.map_err(std::io::Error::other).boxed()),
        Err(e) => plain(StatusCode::BAD_GATEWAY, &format!("{url}: {e}")),
    }
}

/// `CONNECT host:port`: a TCP tunnel, bytes passed untouched.
async fn connect(app: &App, req: Request<Incoming>) -> Response<Body> {
    if !app.proxy.connect {
        return plain(
            StatusCode::FORBIDDEN,
            "CONNECT is disabled on this node ([proxy] connect = false)",
        );
    }
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if crate::catalog::url::radio_host_callsign(&target).is_some() {
        return plain(
            StatusCode::BAD_REQUEST,
            "<callsign>.radio is served over plain HTTP by the mesh; there is nothing to tunnel to",
        );
    }
    let upstream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&target),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return plain(StatusCode::BAD_GATEWAY, &format!("{target}: {e}")),
        Err(_) => {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("{target}: no connection"),
            );
        }
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let mut client = TokioIo::new(up);
                let mut upstream = upstream;
                let _ended = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(full(""))
}

/// Marks a cached answer as fresh or stale (RFC 9111 §5.5 `Warning` 110 is
/// obsolete but still what clients show).
fn cache_headers(r: &mut Response<Body>, fresh: bool) {
    let h = r.headers_mut();
    if fresh {
        h.insert("x-meshnode-cache", HeaderValue::from_static("HIT"));
    } else {
        h.insert("x-meshnode-cache", HeaderValue::from_static("STALE"));
        h.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    super::respond(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}
