//! The HTTP interfaces: the public port (content, read-only API, metrics,
//! status page) and the control socket (everything, including mutations).
//!
//! A thin facade: handlers parse, call subsystem handles ([`StoreHandle`],
//! [`ContentReader`], [`ReloadHandle`]) and render; no catalog or storage
//! logic lives here. Both listeners share one dispatcher; what differs is the
//! [`Caller`]: the public port only reads, and only what the caller's access
//! level allows; the control socket (mode 0660, group `meshadmin`) may do
//! anything. The routes are documented in docs/API.md.

pub mod client;
mod clients;
mod content;
mod control;
mod mesh;
pub mod ops;
mod pages;
pub(crate) mod proxy;
pub mod rf;
pub mod server;
mod status_page;

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::analytics::{self, Source};
use crate::cache::ContentReader;
use crate::catalog::url::radio_host_callsign;
use crate::catalog::{Access, ContentUrl};
use crate::daemon::ReloadHandle;
use crate::node::{Callsign, NodeId};
use crate::store::StoreHandle;
use crate::telemetry::HttpCounters;
use content::Served;

/// Response body: a whole buffer or a stream of verified chunks.
pub type Body = BoxBody<Bytes, io::Error>;

/// Who is asking: decides what may be read and whether mutations are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client of the public port, by address.
    Public(IpAddr),
    /// A local admin through the control socket.
    Control,
}

impl Caller {
    /// May this caller read content of this access level?
    pub fn may_read(self, access: Access) -> bool {
        match (self, access) {
            (Caller::Control, _) | (_, Access::Public) => true,
            (Caller::Public(ip), Access::Community) => is_community_ip(ip),
            (Caller::Public(_), Access::Private) => false,
        }
    }
}

/// Addresses that count as "the mesh's own networks" for `community` content:
/// loopback, RFC 1918, CGNAT 100.64/10 (used by many mesh overlays),
/// link-local, and IPv6 ULA and link-local.
pub fn is_community_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_community_ip(IpAddr::V4(v4));
            }
            let s = v6.segments()[0];
            v6.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Facts about this node shown by the API.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `CALLSIGN-label`.
    pub name: String,
    /// Base callsign.
    pub callsign: Callsign,
    /// Public key.
    pub node_id: NodeId,
}

/// Everything the handlers use; shared by all connections.
#[derive(Debug)]
pub struct App {
    /// Who we are.
    pub node: NodeInfo,
    /// The catalog and blobs.
    pub store: StoreHandle,
    /// Verified reads.
    pub reader: ContentReader,
    /// Reload requests go to the daemon supervisor.
    pub reload: ReloadHandle,
    /// Usage analytics.
    pub analytics: crate::analytics::Analytics,
    /// Request counters.
    pub counters: HttpCounters,
    /// Process start.
    pub started: Instant,
    /// The addresses the public port is bound to.
    pub listen: Vec<SocketAddr>,
    /// The mesh task (peers, mesh catalog, replication).
    pub mesh: crate::mesh::Mesh,
    /// `[proxy]` settings.
    pub proxy: crate::config::ProxyConfig,
    /// Per-client shaping, usage and quotas.
    pub shaping: crate::shaping::Shaping,
    /// The radio link.
    pub rf: crate::rf::Rf,
}

/// An error as the API reports it: a status and a message that is safe to show.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message, safe to show to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn method_not_allowed(message: impl Into<String>, allow: &'static str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: message.into(),
            allow: Some(allow),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut r = json(self.status, &serde_json::json!({ "error": self.message }));
        if let Some(a) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(a));
        }
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::Stale { .. } => StatusCode::CONFLICT,
            E::Closed | E::Locked(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Db(_) | E::Io(_) => {
                tracing::error!(error = %e, "store failure");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal store error (see the node's log)",
                );
            }
        };
        Self::new(status, e.to_string())
    }
}

impl App {
    /// Handles one request on either listener.
    pub async fn handle(
        self: Arc<Self>,
        caller: Caller,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let resp = match self.dispatch(caller, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        self.counters.response(resp.status().as_u16());
        Ok(resp)
    }

    /// Counts a content response for analytics, when they are on (`url`
    /// gives its key then), and hands the response on. Nothing served is
    /// counted as not found (404) or refused/failed.
    fn served(
        &self,
        s: Served,
        caller: Caller,
        url: impl FnOnce() -> String,
        external: bool,
        method: &Method,
    ) -> Response<Body> {
        if self.analytics.enabled() {
            let r = &s.resp;
            self.analytics.record(analytics::Event {
                client: match caller {
                    Caller::Public(ip) => Some(ip),
                    Caller::Control => None,
                },
                url: url(),
                source: s.source.unwrap_or(if r.status() == StatusCode::NOT_FOUND {
                    Source::NotFound
                } else {
                    Source::Other
                }),
                external,
                bytes: body_len(r, method),
                to_peer: false,
            });
        }
        s.resp
    }

    async fn dispatch(
        &self,
        caller: Caller,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        // RFC 9112 §3.2.2: an absolute-form target's authority wins over Host
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        if proxy::is_proxy_request(&req) {
            let method = req.method().clone();
            let url = (self.analytics.enabled() && method != Method::CONNECT)
                .then(|| req.uri().to_string());
            let s = proxy::serve(self, caller, req).await;
            return Ok(match url {
                Some(url) => self.served(s, caller, || url, true, &method),
                None => s.resp,
            });
        }
        if !req.uri().path().starts_with('/') {
            // authority-form (CONNECT host:port) or asterisk-form: nothing to serve
            return Err(ApiError::bad_request("request target must be a path"));
        }
        // `<callsign>.radio` hosts serve content and nothing else
        if let Some(cs) = host.and_then(radio_host_callsign) {
            only_get(&req)?;
            let path = req.uri().path();
            let key = content::key(ContentUrl::new(cs, path));
            let s = content::serve(self, caller, &key, req.method(), req.headers()).await;
            let url = || key.unwrap_or_else(|_| path.to_string());
            return Ok(self.served(s, caller, url, false, req.method()));
        }
        let path = req.uri().path().to_string();
        if caller == Caller::Control && control::handles(req.method(), &path) {
            return control::dispatch(self, req).await;
        }
        if mesh::handles(&path) {
            let method = req.method().clone();
            let r = mesh::dispatch(self, req).await?;
            if path == "/mesh/v1/content" && r.status().is_success() && self.analytics.enabled() {
                self.analytics.record(analytics::Event {
                    client: None,
                    url: String::new(),
                    source: Source::Store,
                    external: false,
                    bytes: body_len(&r, &method),
                    to_peer: true,
                });
            }
            return Ok(r);
        }
        if clients::handles(&path) {
            return clients::dispatch(self, caller, req).await;
        }
        only_get(&req)?;
        match path.as_str() {
            "/" => Ok(status_page::page(self, caller, &query(&req))),
            "/api/v1/status" => Ok(json(StatusCode::OK, &self.status())),
            "/api/v1/peers" => Ok(json(StatusCode::OK, &self.peers())),
            "/api/v1/topology" => Ok(self.topology(&req)),
            "/api/v1/catalog" => Ok(json(StatusCode::OK, &self.catalog(caller, &query(&req))?)),
            "/api/v1/report" => {
                let q = query(&req);
                let format: analytics::Format = param(&q, "format")
                    .unwrap_or("json")
                    .parse()
                    .map_err(ApiError::bad_request)?;
                let r = self.report(caller, param(&q, "since")).await?;
                Ok(match format {
                    analytics::Format::Json => json(StatusCode::OK, &r),
                    f => text(
                        StatusCode::OK,
                        match f {
                            analytics::Format::Csv => "text/csv; charset=utf-8",
                            analytics::Format::Markdown => "text/markdown; charset=utf-8",
                            _ => "text/plain; charset=utf-8",
                        },
                        analytics::report::render(&r, f),
                    ),
                })
            }
            "/metrics" => Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics(),
            )),
            p if p.starts_with(status_page::ASSET_PREFIX) => status_page::asset(&req, p),
            p if p.starts_with("/api/") => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {p}"),
            )),
            p => {
                // the path form: /<callsign>.radio/<path>
                let rest = &p[1..];
                let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                match radio_host_callsign(host) {
                    Some(cs) => {
                        let url = ContentUrl::new(cs, if tail.is_empty() { "/" } else { tail });
                        let key = content::key(url);
                        let s =
                            content::serve(self, caller, &key, req.method(), req.headers()).await;
                        let url = || key.unwrap_or_else(|_| p.to_string());
                        Ok(self.served(s, caller, url, false, req.method()))
                    }
                    None => Ok(content::not_found(self, caller, req.headers(), p)),
                }
            }
        }
    }

    /// `GET /api/v1/status`
    pub fn status(&self) -> StatusBody {
        let conn = self.mesh.view.mode.read().expect("lock").clone();
        StatusBody {
            node: self.node.name.clone(),
            callsign: self.node.callsign.to_string(),
            node_id: self.node.node_id.to_hex(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            store: self.store.stats(),
            mesh: self.mesh_status(),
            mode: conn.mode,
            mode_since: conn.since_ms,
            connectivity: conn,
            licence: LicenceStatus {
                callsign: self.node.callsign.to_string(),
                state: "declared",
            },
            http: self.http_status(),
            shaping: ShapingSummary::from(&self.shaping.status()),
            rf: self.rf.status(),
        }
    }

    fn http_status(&self) -> HttpStatus {
        let c = &self.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        HttpStatus {
            responses: c.responses.iter().map(n).sum(),
            body_bytes: n(&c.body_bytes),
            content_hits: n(&c.content_hits),
            content_misses: n(&c.content_misses),
            via_mesh: n(&c.mesh_forwarded),
            origin_fetches: n(&c.origin_fetches),
        }
    }

    /// `GET /api/v1/topology`: JSON, or GraphViz DOT with `?format=dot` or
    /// `Accept: text/vnd.graphviz`.
    fn topology(&self, req: &Request<Incoming>) -> Response<Body> {
        let mut topo = (**self.mesh.view.topology.read().expect("lock")).clone();
        self.add_rf_links(&mut topo);
        let q = query(req);
        let dot = param(&q, "format") == Some("dot")
            || req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/vnd.graphviz"));
        if dot {
            text(
                StatusCode::OK,
                "text/vnd.graphviz; charset=utf-8",
                topo.to_dot(),
            )
        } else {
            json(StatusCode::OK, &topo.to_json())
        }
    }

    /// Adds this node's radio links: the meshnode stations it heard whose
    /// node is known (by the key prefix of their beacons: a node of the
    /// topology, or the origin of a catalog record, e.g. learned over RF)
    /// and with which an exchange was answered at the first try (its round
    /// trip measured). Loss is the beacons' loss.
    fn add_rf_links(&self, topo: &mut crate::routing::Topology) {
        use crate::routing::{LinkKind, LinkReport, NodeMeta};
        let rf = self.rf.status();
        for st in &rf.stations {
            let (Some(rtt_ms), Some(prefix)) = (st.rtt_ms, st.key_prefix.as_deref()) else {
                continue;
            };
            let Ok(prefix) = hex::decode(prefix) else {
                continue;
            };
            let known = topo
                .nodes()
                .iter()
                .map(|(id, _)| *id)
                .find(|id| id.0[..8] == prefix[..]);
            let node = known.or_else(|| {
                let cat = self
                    .mesh
                    .view
                    .catalog
                    .read()
                    .expect("catalog lock poisoned");
                cat.records()
                    .map(|r| r.record.origin)
                    .find(|o| o.0[..8] == prefix[..])
            });
            let Some(node) = node else {
                continue;
            };
            let meta = NodeMeta {
                name: st.node.clone(),
                mode: None,
            };
            let report = LinkReport {
                peer: node,
                kind: LinkKind::Rf,
                rtt_ms,
                loss: st.loss,
            };
            topo.add_local(node, meta, &report);
        }
    }

    /// The peer table.
    pub fn peers(&self) -> PeersBody {
        let peers = self
            .mesh
            .view
            .peers
            .read()
            .expect("peer lock poisoned")
            .clone();
        PeersBody {
            total: peers.len(),
            neighbours: peers.iter().filter(|p| p.neighbour).count(),
            peers,
        }
    }

    fn mesh_status(&self) -> MeshStatus {
        let v = &self.mesh.view;
        let (records, fp) = {
            let c = v.catalog.read().expect("catalog lock poisoned");
            (c.len(), c.set().fingerprint())
        };
        let peers = v.peers.read().expect("peer lock poisoned");
        MeshStatus {
            records,
            catalog_digest: crate::mesh::catalog_digest(fp),
            peers: peers.len(),
            neighbours: peers.iter().filter(|p| p.neighbour).count(),
            broadcast: v.broadcast,
            essential_refused: v.refused.read().expect("lock poisoned").clone(),
        }
    }

    /// `GET /api/v1/catalog` with its query (`q`, `callsign`, `limit`,
    /// `offset`), as `caller` may see it.
    pub fn catalog(&self, caller: Caller, q: &[(String, String)]) -> Result<CatalogBody, ApiError> {
        let get = |k: &str| param(q, k);
        let limit: usize = get("limit")
            .map(str::parse)
            .transpose()
            .map_err(|_| ApiError::bad_request("limit must be a number"))?
            .unwrap_or(1000);
        let offset: usize = get("offset")
            .map(str::parse)
            .transpose()
            .map_err(|_| ApiError::bad_request("offset must be a number"))?
            .unwrap_or(0);
        let needle = get("q").map(str::to_lowercase);
        let cs = get("callsign").map(|c| format!("http://{}.radio/", c.to_lowercase()));
        let matching: Vec<_> = self
            .store
            .list()
            .into_iter()
            .filter(|e| caller.may_read(e.fields().access))
            .filter(|e| cs.as_ref().is_none_or(|p| e.fields().url.starts_with(p)))
            .filter(|e| {
                needle.as_ref().is_none_or(|n| {
                    let f = e.fields();
                    f.url.to_lowercase().contains(n)
                        || f.tags.iter().any(|t| t.to_lowercase().contains(n))
                })
            })
            .collect();
        Ok(CatalogBody {
            total: matching.len(),
            entries: matching
                .iter()
                .skip(offset)
                .take(limit.min(10_000))
                .map(|e| e.entry())
                .collect(),
        })
    }

    fn metrics(&self) -> String {
        let c = &self.counters;
        let s = self.store.stats();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let classes: Vec<(String, u64)> = (1..=5)
            .map(|i| {
                (
                    format!("{{class=\"{i}xx\"}}"),
                    c.responses[i].load(Ordering::Relaxed),
                )
            })
            .collect();
        metric(
            "meshnode_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &classes,
        );
        metric(
            "meshnode_http_body_bytes_total",
            "counter",
            "Content bytes sent in response bodies.",
            &[(String::new(), c.body_bytes.load(Ordering::Relaxed))],
        );
        metric(
            "meshnode_content_hits_total",
            "counter",
            "Content requests served from this node's store.",
            &[(String::new(), c.content_hits.load(Ordering::Relaxed))],
        );
        metric(
            "meshnode_content_misses_total",
            "counter",
            "Content requests for URLs not in the catalog.",
            &[(String::new(), c.content_misses.load(Ordering::Relaxed))],
        );
        for (name, help, v) in [
            (
                "meshnode_content_via_mesh_total",
                "Content requests answered through the mesh (routed to another node).",
                &c.mesh_forwarded,
            ),
            (
                "meshnode_content_relayed_total",
                "Routed content requests from peers that this node passed on.",
                &c.mesh_relayed,
            ),
            (
                "meshnode_proxy_origin_fetches_total",
                "Requests this node sent to origin servers for the mesh (forward proxy).",
                &c.origin_fetches,
            ),
            (
                "meshnode_content_loops_refused_total",
                "Routed content requests refused: request id seen before, or hop limit reached.",
                &c.mesh_loops_refused,
            ),
        ] {
            metric(
                name,
                "counter",
                help,
                &[(String::new(), v.load(Ordering::Relaxed))],
            );
        }
        metric(
            "meshnode_integrity_failures_total",
            "counter",
            "Blobs that failed a hash check on read or scrub.",
            &[(
                String::new(),
                self.reader.integrity_failures.load(Ordering::Relaxed),
            )],
        );
        metric(
            "meshnode_catalog_entries",
            "gauge",
            "Entries in the local catalog.",
            &[(String::new(), s.entries as u64)],
        );
        metric(
            "meshnode_store_used_bytes",
            "gauge",
            "Bytes of healthy blobs in the store.",
            &[(String::new(), s.used_bytes)],
        );
        metric(
            "meshnode_store_max_bytes",
            "gauge",
            "The store quota (store.max_bytes).",
            &[(String::new(), s.max_bytes)],
        );
        let conn = self.mesh.view.mode.read().expect("lock").clone();
        let modes: Vec<(String, u64)> = [
            crate::connectivity::Mode::Online,
            crate::connectivity::Mode::MeshOnly,
            crate::connectivity::Mode::RfOnly,
        ]
        .iter()
        .map(|m| {
            (
                format!("{{mode=\"{}\"}}", m.name()),
                (conn.mode == *m) as u64,
            )
        })
        .collect();
        metric(
            "meshnode_network_mode",
            "gauge",
            "1 for the node's current network mode.",
            &modes,
        );
        metric(
            "meshnode_network_mode_changes_total",
            "counter",
            "Network mode changes since start.",
            &[(String::new(), conn.changes)],
        );
        metric(
            "meshnode_network_mode_since_seconds",
            "gauge",
            "Unix time of the last network mode change.",
            &[(String::new(), (conn.since_ms / 1000) as u64)],
        );
        metric(
            "meshnode_uplink_up",
            "gauge",
            "1 while the uplink probes pass.",
            &[(String::new(), conn.uplink.up as u64)],
        );
        metric(
            "meshnode_failover_active",
            "gauge",
            "1 while traffic is routed through a mesh gateway.",
            &[(
                String::new(),
                conn.gateway.as_ref().is_some_and(|g| g.installed) as u64,
            )],
        );
        let sh = self.shaping.status();
        metric(
            "meshnode_shaping_active",
            "gauge",
            "1 while per-client shaping classes are in the kernel.",
            &[(String::new(), sh.active as u64)],
        );
        metric(
            "meshnode_shaping_clients",
            "gauge",
            "Clients with a shaping class now.",
            &[(
                String::new(),
                sh.clients.iter().filter(|c| c.active).count() as u64,
            )],
        );
        metric(
            "meshnode_shaping_throttled_clients",
            "gauge",
            "Clients held at the throttle rate for being over quota.",
            &[(
                String::new(),
                sh.clients.iter().filter(|c| c.throttled).count() as u64,
            )],
        );
        let rf = self.rf.status();
        if rf.enabled {
            metric(
                "meshnode_rf_connected",
                "gauge",
                "1 while the TNC is connected.",
                &[(String::new(), u64::from(rf.connected))],
            );
            metric(
                "meshnode_rf_airtime_ms_total",
                "counter",
                "Airtime handed to the TNC, ms, by what paid for it.",
                &[
                    (
                        "{lane=\"background\"}".into(),
                        rf.airtime.total_background_ms,
                    ),
                    ("{lane=\"requests\"}".into(), rf.airtime.total_requests_ms),
                    ("{lane=\"id\"}".into(), rf.airtime.total_id_ms),
                ],
            );
            metric(
                "meshnode_rf_frames_sent_total",
                "counter",
                "Frames handed to the TNC.",
                &[(String::new(), rf.frames_sent)],
            );
            metric(
                "meshnode_rf_frames_heard_total",
                "counter",
                "Frames heard.",
                &[(String::new(), rf.frames_heard)],
            );
            metric(
                "meshnode_rf_stations",
                "gauge",
                "Stations in the table of stations heard.",
                &[(String::new(), rf.stations.len() as u64)],
            );
        }
        let m = &self.mesh.view.counters;
        for (name, help, c) in [
            (
                "meshnode_gossip_datagrams_sent_total",
                "Gossip datagrams sent.",
                &m.datagrams_sent,
            ),
            (
                "meshnode_gossip_bytes_sent_total",
                "Gossip bytes sent.",
                &m.datagram_bytes_sent,
            ),
            (
                "meshnode_gossip_datagrams_received_total",
                "Gossip datagrams received.",
                &m.datagrams_received,
            ),
            (
                "meshnode_gossip_dropped_invalid_total",
                "Gossip datagrams dropped: malformed or bad signature.",
                &m.dropped_invalid,
            ),
            (
                "meshnode_gossip_dropped_duplicate_total",
                "Gossip datagrams dropped: already seen (replays included).",
                &m.dropped_duplicate,
            ),
            (
                "meshnode_gossip_dropped_future_total",
                "Gossip datagrams dropped: dated too far in the future.",
                &m.dropped_future,
            ),
            (
                "meshnode_reconciliations_total",
                "Catalog reconciliations this node started.",
                &m.reconciliations,
            ),
            (
                "meshnode_reconciliation_bytes_total",
                "Bytes of those reconciliations, both directions.",
                &m.recon_bytes,
            ),
            (
                "meshnode_records_accepted_total",
                "Catalog records accepted.",
                &m.records_accepted,
            ),
            (
                "meshnode_records_rejected_total",
                "Catalog records rejected (bad signature or fields).",
                &m.records_rejected,
            ),
            (
                "meshnode_chunks_served_total",
                "Content chunks served to peers.",
                &m.chunks_served,
            ),
            (
                "meshnode_chunks_fetched_total",
                "Content chunks fetched from peers.",
                &m.chunks_fetched,
            ),
            (
                "meshnode_transfers_total",
                "Content transfers completed.",
                &m.transfers_done,
            ),
            (
                "meshnode_transfers_failed_total",
                "Content transfers that failed (retried later).",
                &m.transfers_failed,
            ),
            (
                "meshnode_essential_refused_total",
                "Essential items that did not fit the store quota.",
                &m.essential_refused,
            ),
        ] {
            metric(
                name,
                "counter",
                help,
                &[(String::new(), c.load(Ordering::Relaxed))],
            );
        }
        metric(
            "meshnode_mesh_records",
            "gauge",
            "Records in the mesh catalog.",
            &[(String::new(), self.mesh.records() as u64)],
        );
        metric(
            "meshnode_peers",
            "gauge",
            "Peers in the peer table.",
            &[(
                String::new(),
                self.mesh.view.peers.read().expect("lock").len() as u64,
            )],
        );
        metric(
            "meshnode_store_quarantined_entries",
            "gauge",
            "Entries whose blob is quarantined.",
            &[(String::new(), s.quarantined as u64)],
        );
        out
    }
}

/// `GET /api/v1/status` body.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    /// `CALLSIGN-label`.
    pub node: String,
    /// Base callsign.
    pub callsign: String,
    /// Hex public key.
    pub node_id: String,
    /// meshnode version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Public listeners.
    pub listen: Vec<String>,
    /// Store figures.
    pub store: crate::store::StoreStats,
    /// Mesh figures.
    pub mesh: MeshStatus,
    /// `online`, `mesh-only` or `rf-only`.
    pub mode: crate::connectivity::Mode,
    /// Unix ms of the last mode change (or of the start).
    pub mode_since: i64,
    /// Mode, uplink probes and failover in detail.
    pub connectivity: crate::mesh::links::ModeState,
    /// The operator's licence as far as this node knows it.
    pub licence: LicenceStatus,
    /// Request counters since start (as in `/metrics`), for live charts.
    pub http: HttpStatus,
    /// Per-client shaping in brief (`GET /api/v1/clients` has the detail).
    pub shaping: ShapingSummary,
    /// The radio link: TNC, airtime against the budgets, stations heard.
    pub rf: crate::rf::Status,
}

/// The licence part of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct LicenceStatus {
    /// The operator's base callsign (`[node] callsign`).
    pub callsign: String,
    /// `declared`: the callsign is configured, no licence certificate has
    /// been checked (there is no certificate check yet). Certificate checks
    /// will add other states.
    pub state: &'static str,
}

/// The request counters in `GET /api/v1/status`; counts since start.
#[derive(Debug, Serialize)]
pub struct HttpStatus {
    /// Responses of every kind (API and status page included).
    pub responses: u64,
    /// Content bytes sent in response bodies.
    pub body_bytes: u64,
    /// Content requests served from this node's store.
    pub content_hits: u64,
    /// Content requests for URLs that nobody has.
    pub content_misses: u64,
    /// Content requests answered through the mesh.
    pub via_mesh: u64,
    /// Requests this node sent to origin servers (forward proxy).
    pub origin_fetches: u64,
}

/// The shaping part of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct ShapingSummary {
    /// `[shaping] enabled`.
    pub enabled: bool,
    /// Classes are in the kernel.
    pub active: bool,
    /// Why shaping is off, when it is.
    pub reason: Option<String>,
    /// Configured total download rate, bits per second.
    pub downlink_bps: u64,
    /// Configured total upload rate, bits per second.
    pub uplink_bps: u64,
    /// Download rate shaped to now (autorate), bits per second.
    pub down_shaped_bps: u64,
    /// Upload rate shaped to now, bits per second.
    pub up_shaped_bps: u64,
    /// Queues are building beyond this router (either direction).
    pub congested: bool,
    /// Clients with a class now.
    pub clients: usize,
    /// Of which held at the throttle rate for being over quota.
    pub throttled: usize,
}

impl From<&crate::shaping::Status> for ShapingSummary {
    fn from(s: &crate::shaping::Status) -> Self {
        Self {
            enabled: s.enabled,
            active: s.active,
            reason: s.reason.clone(),
            downlink_bps: s.downlink_bps,
            uplink_bps: s.uplink_bps,
            down_shaped_bps: s.congestion.down_shaped_bps,
            up_shaped_bps: s.congestion.up_shaped_bps,
            congested: s.congestion.down_congested || s.congestion.up_congested,
            clients: s.clients.iter().filter(|c| c.active).count(),
            throttled: s.clients.iter().filter(|c| c.throttled).count(),
        }
    }
}

/// The mesh part of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct MeshStatus {
    /// Records in the mesh catalog.
    pub records: usize,
    /// `<records>-<xor fingerprint, 16 hex>`: equal digests, equal catalogs.
    pub catalog_digest: String,
    /// Peers in the peer table.
    pub peers: usize,
    /// Of which direct neighbours.
    pub neighbours: usize,
    /// Does this node broadcast its addresses (and serve as a bootstrap node)?
    pub broadcast: bool,
    /// Essential items this node could not store, with the reason.
    pub essential_refused: std::collections::HashMap<String, String>,
}

/// `GET /api/v1/peers`.
#[derive(Debug, Serialize)]
pub struct PeersBody {
    /// Rows.
    pub total: usize,
    /// Direct neighbours among them.
    pub neighbours: usize,
    /// The peer table.
    pub peers: Vec<crate::mesh::PeerStatus>,
}

/// `GET /api/v1/catalog` body.
#[derive(Debug, Serialize)]
pub struct CatalogBody {
    /// Matching entries before paging.
    pub total: usize,
    /// This page.
    pub entries: Vec<crate::catalog::Entry>,
}

fn only_get(req: &Request<Incoming>) -> Result<(), ApiError> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(
            format!(
                "{} is not allowed here; the public port is read-only (mutations go through the control socket)",
                req.method()
            ),
            "GET, HEAD",
        ))
    }
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The first value of query parameter `k`.
fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn wants_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// A whole-buffer body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An API value as JSON text, exactly as the HTTP API sends it (D-Bus
/// methods return the same text).
pub fn json_text(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).expect("API types serialise")
}

fn json(status: StatusCode, v: &impl Serialize) -> Response<Body> {
    respond(status, "application/json", json_text(v))
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    respond(status, content_type, body)
}

/// Body bytes a response carries: its Content-Length, else the length of a
/// body known in full (0 for HEAD; a streamed answer without a length,
/// such as a chunked origin answer, counts 0).
fn body_len(r: &Response<Body>, method: &Method) -> u64 {
    use hyper::body::Body as _;
    if method == Method::HEAD {
        return 0;
    }
    // a body in memory knows its size: no header lookup and parse (a
    // quarter of analytics' cost per request, measured with callgrind)
    r.body()
        .size_hint()
        .exact()
        .or_else(|| {
            r.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.5",
            "172.16.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_community_ip(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert!(!is_community_ip(a.parse().unwrap()), "{a}");
        }
        let outsider = Caller::Public("198.51.100.7".parse().unwrap());
        assert!(outsider.may_read(Access::Public));
        assert!(!outsider.may_read(Access::Community));
        assert!(!Caller::Public("10.0.0.1".parse().unwrap()).may_read(Access::Private));
        assert!(Caller::Control.may_read(Access::Private));
    }
}
