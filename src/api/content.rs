//! Serving one catalog entry over HTTP: ETag (the content hash),
//! `If-None-Match` → 304, single byte ranges → 206/416 (`If-Range` honoured),
//! HEAD without touching the disk, and the 404 that lists what exists.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::pages::Listed;
use super::{App, Body, Caller, full, html, json, pages, wants_json};
use crate::analytics::Source;
use crate::cache::blobs::BlobError;
use crate::catalog::{ContentUrl, UrlError};
use crate::mesh::client::{CONTENT_HOPS, request_id};
use crate::mesh::forward::{Flight, Flights, Forward, ForwardError, forward, own_headers};
use crate::node::NodeId;
use crate::store::LiveEntry;
use crate::sync::record::Signed;
use std::time::Duration;

/// Most entries a 404 page lists (the JSON says how many exist in all).
const NOT_FOUND_LIST_MAX: usize = 200;

/// A `Range` header, as far as we honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range: send everything (also for multi-range requests).
    Whole,
    /// Inclusive byte range within the content.
    Part(u64, u64),
    /// Syntactically fine but outside the content: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range against a content of `size` bytes (RFC 9110 §14).
pub fn parse_range(h: &str, size: u64) -> RangeSpec {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole; // multipart/byteranges is optional; the whole body is a valid answer
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let num = |s: &str| {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(n) if size > 0 => RangeSpec::Part(size.saturating_sub(n), size - 1),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Whole,
        },
        (first, last) => {
            let Some(first) = num(first) else {
                return RangeSpec::Whole;
            };
            let last = if last.is_empty() {
                Some(u64::MAX)
            } else {
                num(last)
            };
            match last {
                None => RangeSpec::Whole,
                Some(l) if l < first => RangeSpec::Whole, // invalid: ignore
                Some(_) if first >= size => RangeSpec::Unsatisfiable,
                Some(l) => RangeSpec::Part(first, l.min(size - 1)),
            }
        }
    }
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A content response and where its bytes came from, for analytics.
#[derive(Debug)]
pub struct Served {
    /// The response.
    pub resp: Response<Body>,
    /// `None`: nothing was served (not found, refused or failed).
    pub source: Option<Source>,
}

impl Served {
    /// `resp`, served from `source`.
    pub fn from(source: Source, resp: Response<Body>) -> Self {
        Served {
            resp,
            source: Some(source),
        }
    }
}

impl From<Response<Body>> for Served {
    /// A response that serves nothing (an error or a 404).
    fn from(resp: Response<Body>) -> Self {
        Served { resp, source: None }
    }
}

/// The key of a content URL (its canonical form), formatted once per
/// request and shared by the handler and analytics.
pub type Key = Result<String, UrlError>;

/// The key of `url`.
pub fn key(url: Result<ContentUrl, UrlError>) -> Key {
    url.map(|u| u.to_string())
}

/// Serves the entry for `key`, or the reason it cannot.
pub async fn serve(
    app: &App,
    caller: Caller,
    key: &Key,
    method: &Method,
    headers: &HeaderMap,
) -> Served {
    let key = match key {
        Ok(k) => k.as_str(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad content URL: {e}\n")).into(),
    };
    // private and (for outsiders) community content: not found, not even "forbidden"
    let readable = |app: &App| {
        app.store
            .get(key)
            .filter(|e| caller.may_read(e.fields().access))
    };
    let live = match readable(app) {
        Some(l) => l,
        None => match app
            .mesh
            .winner(key)
            .filter(|w| w.record.access().is_some_and(|a| caller.may_read(a)))
        {
            Some(rec) => {
                app.mesh.requested(key);
                let hop = Hop::start(app);
                return via_mesh(app, key, rec, hop, method, headers).await;
            }
            None => return not_found(app, caller, headers, key).into(),
        },
    };
    if live.fields().priority == crate::catalog::Priority::Popular {
        app.mesh.requested(key);
    }
    if live.fields().quarantined {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this content failed its integrity check and is quarantined until a good copy arrives\n",
        )
        .into();
    }
    app.counters.content_hits.fetch_add(1, Ordering::Relaxed);
    serve_entry(app, live, method, headers).await
}

/// How long a request waits for an identical one in flight before fetching
/// on its own.
const FLIGHT_WAIT: Duration = Duration::from_secs(60);

/// Where a routed request is on its way.
#[derive(Debug, Clone)]
pub struct Hop {
    /// Hops it may still take.
    pub hops_left: u8,
    /// Its id, the same on every hop.
    pub request_id: String,
    /// Nodes it passed, this one last.
    pub path: Vec<NodeId>,
}

impl Hop {
    /// A new request starting at this node; its id is remembered here, so a
    /// request that comes back is a loop.
    pub fn start(app: &App) -> Self {
        let hop = Hop {
            hops_left: CONTENT_HOPS,
            request_id: request_id(),
            path: vec![app.node.node_id],
        };
        app.mesh.view.first_relay(&hop.request_id);
        hop
    }
}

/// Serves `url` (not in the store; `rec` is the catalog's winner) through
/// the mesh: collapsed with identical requests in flight, routed to the
/// best holder, kept on the way when the policy says so.
pub async fn via_mesh(
    app: &App,
    url: &str,
    rec: Arc<Signed>,
    hop: Hop,
    method: &Method,
    h: &HeaderMap,
) -> Served {
    let range = h
        .get(header::RANGE)
        .filter(|_| method == Method::GET)
        .cloned();
    let flight = if range.is_none() {
        match Flights::join(&app.mesh.view, url) {
            Flight::Leader(g) => Some(g),
            Flight::Follower(rx) => {
                Flight::wait(rx, FLIGHT_WAIT).await;
                if let Some(live) = app.store.get(url).filter(|e| !e.fields().quarantined) {
                    // the leader brought it through the mesh for both
                    let s = serve_entry(app, live, method, h).await;
                    return Served {
                        source: s.source.map(|_| Source::Mesh),
                        ..s
                    };
                }
                None // the leader kept nothing (personal, failed): fetch on our own
            }
        }
    } else {
        None
    };
    let f = Forward {
        url: url.to_string(),
        rec: Some(rec.clone()),
        to: None,
        hops_left: hop.hops_left,
        request_id: hop.request_id,
        path: hop.path,
        range,
    };
    match forward(&app.mesh.view, &app.store, f, flight).await {
        Ok(mut r) => {
            app.counters.mesh_forwarded.fetch_add(1, Ordering::Relaxed);
            if method == Method::HEAD {
                // the copy (if any) is still kept by the tee
                *r.body_mut() = full("");
            }
            Served::from(Source::Mesh, r)
        }
        Err(e @ ForwardError::NoRoute) => match via_rf(app, url, &rec, method).await {
            Ok(s) => s,
            Err(rf) => plain(
                StatusCode::NOT_FOUND,
                &format!(
                    "{url} is in the mesh catalog, but no node holding it is reachable ({e}; over RF: {rf})\n"
                ),
            )
            .into(),
        },
        Err(e) => {
            tracing::debug!(url, error = %e, "routing a content request failed");
            plain(
                StatusCode::BAD_GATEWAY,
                &format!("{url} is in the mesh catalog but could not be fetched: {e}\n"),
            )
            .into()
        }
    }
}

/// Fetches `url` from its origin node over packet radio (when no IP route
/// reaches a holder): the RF task finds the origin's station, or one that
/// hears it, and brings the content in chunks. The bytes are checked
/// against the record's hash before they are served.
async fn via_rf(app: &App, url: &str, rec: &Signed, method: &Method) -> Result<Served, String> {
    let content = rec.record.content.as_ref().ok_or("a deletion")?;
    let got = app.rf.fetch(url, rec.record.origin).await?;
    let hash = crate::catalog::ContentHash::of(&got.body);
    if hash.0 != content.hash || got.body.len() as u64 != content.size {
        return Err(format!(
            "the {} bytes that came do not match the catalog's hash",
            got.body.len()
        ));
    }
    let len = got.body.len();
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, format!("\"{}\"", hash.to_hex()))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&got.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(header::CONTENT_LENGTH, len)
        .header("x-meshnode-via", "rf");
    if let Some(h) = r.headers_mut() {
        own_headers(h, &app.node.name);
    }
    let body = if method == Method::HEAD {
        full("")
    } else {
        full(got.body)
    };
    Ok(Served::from(
        Source::Rf,
        r.body(body).expect("valid response"),
    ))
}

/// Serves a stored entry ([`Source::Store`] when it is served).
pub(super) async fn serve_entry(
    app: &App,
    live: Arc<LiveEntry>,
    method: &Method,
    h: &HeaderMap,
) -> Served {
    let r = entry_response(app, live, method, h).await;
    if r.status().is_success() || r.status() == StatusCode::NOT_MODIFIED {
        Served::from(Source::Store, r)
    } else {
        r.into()
    }
}

async fn entry_response(
    app: &App,
    live: Arc<LiveEntry>,
    method: &Method,
    h: &HeaderMap,
) -> Response<Body> {
    let f = live.fields();
    let etag = format!("\"{}\"", f.hash.to_hex());
    let mut resp = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-meshnode-version", f.version);
    if let Some(h) = resp.headers_mut() {
        own_headers(h, &app.node.name);
    }
    if let Some(inm) = h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag)
    {
        live.record_hit();
        return resp
            .status(StatusCode::NOT_MODIFIED)
            .body(full(""))
            .expect("valid response");
    }
    let if_range_ok = h
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        // RFC 9110 §14.2: Range is defined for GET only
        Some(r) if if_range_ok && method == Method::GET => parse_range(r, f.size),
        _ => RangeSpec::Whole,
    };
    let (status, start, end) = match range {
        RangeSpec::Unsatisfiable => {
            return resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", f.size))
                .body(full(""))
                .expect("valid response");
        }
        RangeSpec::Whole => (StatusCode::OK, 0, f.size.saturating_sub(1)),
        RangeSpec::Part(a, b) => {
            resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", f.size));
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
    };
    let len = if f.size == 0 { 0 } else { end - start + 1 };
    resp = resp
        .status(status)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&f.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(header::CONTENT_LENGTH, len);
    if method == Method::HEAD {
        return resp.body(full("")).expect("valid response");
    }
    live.record_hit();
    app.counters.body_bytes.fetch_add(len, Ordering::Relaxed);
    let body = if live.manifest.is_empty() {
        match app.reader.read_small(&live).await {
            Ok(b) if len == 0 => full(b.slice(0..0)),
            Ok(b) => full(b.slice(start as usize..=end as usize)),
            Err(e @ (BlobError::Corrupt(_) | BlobError::Missing(_))) => {
                tracing::warn!(url = %f.url, error = %e, "refused to serve a bad blob");
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this content failed its integrity check and is quarantined until a good copy arrives\n",
                );
            }
            Err(e) => {
                tracing::error!(url = %f.url, error = %e, "blob read failed");
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not read the content (see the node's log)\n",
                );
            }
        }
    } else {
        match app.reader.stream_range(live.clone(), start, end) {
            Some(s) => BodyExt::boxed(StreamBody::new(s.map(|r| r.map(Frame::data)))),
            None => {
                let mut r = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many large downloads at once; retry shortly\n",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                return r;
            }
        }
    };
    resp.body(body).expect("valid response")
}

/// 404 listing what this node has: JSON for programs, HTML for browsers.
pub fn not_found(app: &App, caller: Caller, headers: &HeaderMap, wanted: &str) -> Response<Body> {
    app.counters.content_misses.fetch_add(1, Ordering::Relaxed);
    let mut all: Vec<Listed> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in app.store.list() {
        let f = e.fields();
        if caller.may_read(f.access) && !f.quarantined && seen.insert(f.url.clone()) {
            all.push(Listed {
                url: f.url.clone(),
                size: f.size,
                content_type: f.content_type.clone(),
                priority: f.priority,
                here: true,
            });
        }
    }
    {
        let cat = app.mesh.view.catalog.read().expect("catalog lock poisoned");
        for url in cat.urls() {
            if seen.contains(url) {
                continue;
            }
            let Some(w) = cat.resolve(url).winner else {
                continue;
            };
            let Some(c) = w.record.content.as_ref() else {
                continue;
            };
            if w.record.access().is_some_and(|a| caller.may_read(a)) && seen.insert(url.to_string())
            {
                all.push(Listed {
                    url: url.to_string(),
                    size: c.size,
                    content_type: c.content_type.clone(),
                    priority: crate::catalog::Priority::from_u8(c.priority)
                        .unwrap_or(crate::catalog::Priority::Standard),
                    here: false,
                });
            }
        }
    }
    // the station that was asked for first, then this node's, then by URL
    let prefix = ContentUrl::parse(wanted)
        .ok()
        .and_then(|u| u.callsign().map(|c| format!("http://{}/", c.radio_host())));
    all.sort_by(|a, b| {
        let key = |e: &Listed| {
            (
                prefix.as_ref().is_none_or(|p| !e.url.starts_with(p)),
                !e.here,
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.url.cmp(&b.url))
    });
    let total = all.len();
    let shown: Vec<Listed> = all.into_iter().take(NOT_FOUND_LIST_MAX).collect();
    let mut r = if wants_json(headers) {
        let list = &shown;
        json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("not found: {wanted}"), "url": wanted, "total": total, "available": list }),
        )
    } else {
        html(
            StatusCode::NOT_FOUND,
            pages::not_found(app, wanted, &shown, total),
        )
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    super::respond(status, "text/plain; charset=utf-8", msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeSpec::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Whole);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Whole);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"a\", \"b\"", "\"b\""));
        assert!(etag_matches("W/\"b\"", "\"b\""));
        assert!(etag_matches("*", "\"b\""));
        assert!(!etag_matches("\"c\"", "\"b\""));
    }

    proptest! {
        /// Any header: a part is always inside the content.
        #[test]
        fn parts_are_in_bounds(h in "bytes=[0-9-]{0,12}", size in 0u64..10_000) {
            if let RangeSpec::Part(a, b) = parse_range(&h, size) {
                prop_assert!(a <= b && b < size);
            }
        }
    }
}
