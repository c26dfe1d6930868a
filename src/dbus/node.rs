//! The `org.meshnode.Node1` interface itself: each method parses its D-Bus
//! arguments and calls what the control socket's handler calls
//! ([`crate::api::ops`], or the view an HTTP route reads), answering with
//! the same JSON text. Property getters read the live views; the watcher in
//! [`super`] says when they changed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde::Serialize;
use zbus::object_server::SignalEmitter;
use zbus::{OwnedFd, OwnedVariant, fdo, interface};

use crate::api::ops::PublishRequest;
use crate::api::{ApiError, App, Caller, json_text};
use crate::catalog::ContentUrl;

/// Bytes read from a published file at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The object at `/org/meshnode/Node`.
#[derive(Debug)]
pub struct Node {
    app: Arc<App>,
}

impl Node {
    pub(super) fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Publish and PublishData: checks what the caller says first, so bad
    /// options cost no read.
    async fn publish_from<S>(
        &self,
        path: String,
        options: HashMap<String, OwnedVariant>,
        declared: Option<u64>,
        content: S,
    ) -> fdo::Result<String>
    where
        S: futures_util::Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let meta = self
            .app
            .publish_meta(&publish_request(path, options)?)
            .map_err(fail)?;
        let blob = self.app.ingest(declared, content).await.map_err(fail)?;
        let entry = self.app.publish(blob, meta).await.map_err(fail)?;
        Ok(json_text(&entry))
    }
}

/// An API error as a D-Bus error: the same message, a name from its status.
fn fail(e: ApiError) -> fdo::Error {
    let m = e.message().to_string();
    match e.status() {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => fdo::Error::InvalidArgs(m),
        StatusCode::FORBIDDEN => fdo::Error::AccessDenied(m),
        StatusCode::NOT_FOUND => fdo::Error::FileNotFound(m),
        StatusCode::INSUFFICIENT_STORAGE => fdo::Error::LimitsExceeded(m),
        _ => fdo::Error::Failed(m),
    }
}

fn ipv4(ip: &str) -> fdo::Result<Ipv4Addr> {
    ip.parse()
        .map_err(|_| fdo::Error::InvalidArgs(format!("{ip:?} is not an IPv4 address")))
}

/// `Publish`'s options (`a{sv}`) as the control socket's query has them.
fn publish_request(
    path: String,
    options: HashMap<String, OwnedVariant>,
) -> fdo::Result<PublishRequest> {
    let mut r = PublishRequest {
        path,
        ..Default::default()
    };
    let bad = |k: &str, want: &str| fdo::Error::InvalidArgs(format!("option {k:?} must be {want}"));
    for (k, v) in options {
        match k.as_str() {
            "priority" => r.priority = Some(String::try_from(v).map_err(|_| bad(&k, "a string"))?),
            "access" => r.access = Some(String::try_from(v).map_err(|_| bad(&k, "a string"))?),
            "content_type" => {
                r.content_type = Some(String::try_from(v).map_err(|_| bad(&k, "a string"))?)
            }
            "tags" => {
                r.tags = Vec::<String>::try_from(v).map_err(|_| bad(&k, "an array of strings"))?
            }
            "pin" => r.pin = bool::try_from(v).map_err(|_| bad(&k, "a boolean"))?,
            _ => {
                return Err(fdo::Error::InvalidArgs(format!(
                    "unknown option {k:?} (known: priority, access, tags, content_type, pin)"
                )));
            }
        }
    }
    Ok(r)
}

/// What `Fetch` answers.
#[derive(Debug, Serialize)]
struct Fetched {
    /// The URL as asked.
    url: String,
    /// The HTTP status the control socket would have answered.
    status: u16,
    /// Bytes of content received.
    bytes: u64,
    /// Its type.
    content_type: Option<String>,
    /// The node that answered, when it came through the mesh.
    served_by: Option<String>,
    /// The URL is in this node's store now.
    stored: bool,
}

/// The node's status, content, clients and control operations.
///
/// Reads (Status, Peers, properties) are open to everyone by the policy
/// file; everything else is for root and group meshadmin.
#[interface(name = "org.meshnode.Node1")]
impl Node {
    /// The node's status as JSON: the same text as GET /api/v1/status.
    async fn status(&self) -> String {
        json_text(&self.app.status())
    }

    /// The peer table as JSON: the same text as GET /api/v1/peers.
    async fn peers(&self) -> String {
        json_text(&self.app.peers())
    }

    /// This node's catalog as JSON (GET /api/v1/catalog through the control
    /// socket: every access level), filtered by a search text ("" = all).
    async fn catalog(&self, search: &str) -> fdo::Result<String> {
        let q = if search.is_empty() {
            Vec::new()
        } else {
            vec![("q".to_string(), search.to_string())]
        };
        Ok(json_text(
            &self.app.catalog(Caller::Control, &q).map_err(fail)?,
        ))
    }

    /// Every client's usage, quota and share as JSON (GET /api/v1/clients).
    async fn clients(&self) -> String {
        json_text(&self.app.shaping.status())
    }

    /// One client's usage, quota and share as JSON (GET /api/v1/clients/IP).
    async fn client(&self, ip: &str) -> fdo::Result<String> {
        Ok(json_text(&self.app.client_status(ipv4(ip)?).map_err(fail)?))
    }

    /// Publishes the content of an open file under this station's PATH and
    /// returns the catalog entry as JSON (PUT /api/v1/content). The caller
    /// opens the file with its own rights and passes the descriptor; it is
    /// read to its end. Options: priority (s: 1-4 or essential, popular,
    /// standard, personal), access (s: public, community, private), tags
    /// (as), content_type (s), pin (b).
    async fn publish(
        &self,
        file: OwnedFd,
        path: String,
        options: HashMap<String, OwnedVariant>,
    ) -> fdo::Result<String> {
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(file));
        let declared = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let reader = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            READ_CHUNK,
        )
        .map(|r| r.map_err(|e| format!("reading the file: {e}")));
        self.publish_from(path, options, declared, reader).await
    }

    /// Publishes CONTENT itself under this station's PATH, for small
    /// content and tools that cannot pass a descriptor (busctl); otherwise
    /// as Publish.
    async fn publish_data(
        &self,
        content: Vec<u8>,
        path: String,
        options: HashMap<String, OwnedVariant>,
    ) -> fdo::Result<String> {
        let declared = Some(content.len() as u64);
        let one = futures_util::stream::iter([Ok(Bytes::from(content))]);
        self.publish_from(path, options, declared, one).await
    }

    /// Removes a URL from this node's store and returns its entry as JSON
    /// (DELETE /api/v1/content).
    async fn remove(&self, url: &str) -> fdo::Result<String> {
        Ok(json_text(&self.app.remove(url).await.map_err(fail)?))
    }

    /// Pins (true) or unpins a URL against eviction; returns the entry as
    /// JSON (POST /api/v1/content/pin).
    async fn pin(&self, url: &str, pinned: bool) -> fdo::Result<String> {
        Ok(json_text(&self.app.pin(url, pinned).await.map_err(fail)?))
    }

    /// Gets a URL the way meshctl fetch and content get do (GET
    /// /api/v1/content): this station's, the mesh's (routed, kept here as
    /// its priority allows) or external (through the mesh, or fetched once
    /// for it). The bytes are not returned; the answer says what came and
    /// whether this node stores it now.
    async fn fetch(&self, url: &str) -> fdo::Result<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let resp = self.app.fetch(url, &Method::GET, &headers).await;
        let status = resp.status();
        let head = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_type = head(header::CONTENT_TYPE.as_str());
        let served_by = head(crate::mesh::client::SERVED_BY_HEADER);
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fdo::Error::IOError(format!("{url}: {e}")))?;
            if let Ok(d) = frame.into_data() {
                bytes += d.len() as u64;
                if !status.is_success() && text.len() < 4096 {
                    text.extend_from_slice(&d);
                }
            }
        }
        if !status.is_success() {
            return Err(fail(ApiError::new(status, error_text(&Bytes::from(text)))));
        }
        let stored = ContentUrl::parse(url)
            .ok()
            .is_some_and(|u| self.app.store.get(&u.to_string()).is_some());
        Ok(json_text(&Fetched {
            url: url.to_string(),
            status: status.as_u16(),
            bytes,
            content_type,
            served_by,
            stored,
        }))
    }

    /// Re-hashes every blob now; returns the scrub report as JSON (POST
    /// /api/v1/content/verify).
    async fn verify(&self) -> String {
        json_text(&self.app.verify().await)
    }

    /// Re-reads the config file and applies what can change live; returns
    /// what it did as JSON (POST /api/v1/reload). An invalid file is
    /// refused (InvalidArgs) and the running configuration stays.
    async fn reload(&self) -> fdo::Result<String> {
        Ok(json_text(&self.app.reload_config().await.map_err(fail)?))
    }

    /// Sets a client's own quotas in bytes per UTC day and calendar month
    /// (0: none); both 0 clears them and the configured ones apply again.
    /// Returns the client as JSON (PUT /api/v1/clients/IP/quota). Fails
    /// saying why when shaping is off.
    async fn set_quota(&self, ip: &str, daily: u64, monthly: u64) -> fdo::Result<String> {
        let some = |n: u64| (n > 0).then_some(n);
        let st = self
            .app
            .set_quota(ipv4(ip)?, some(daily), some(monthly))
            .await
            .map_err(fail)?;
        Ok(json_text(&st))
    }

    /// The usage report of the last `since` ("7d"; "" = a day) as `format`
    /// ("json" (""), "table", "csv" or "markdown"): GET /api/v1/report
    /// through the control socket, clients included.
    async fn report(&self, since: &str, format: &str) -> fdo::Result<String> {
        let f: crate::analytics::Format = if format.is_empty() {
            crate::analytics::Format::Json
        } else {
            format.parse().map_err(fdo::Error::InvalidArgs)?
        };
        let r = self
            .app
            .report(Caller::Control, (!since.is_empty()).then_some(since))
            .await
            .map_err(fail)?;
        Ok(crate::analytics::report::render(&r, f))
    }

    /// The node's name, CALLSIGN-label.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn node_name(&self) -> String {
        self.app.node.name.clone()
    }

    /// The base callsign; content lives at http://CALLSIGN.radio/.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn callsign(&self) -> String {
        self.app.node.callsign.to_string()
    }

    /// The node's public key (hex), its identity in the mesh.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn node_id(&self) -> String {
        self.app.node.node_id.to_hex()
    }

    /// The meshnode version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// online, mesh-only or rf-only.
    #[zbus(property)]
    async fn network_mode(&self) -> String {
        self.app
            .mesh
            .view
            .mode
            .read()
            .expect("lock")
            .mode
            .name()
            .to_string()
    }

    /// Unix ms of the last network mode change (or of the start).
    #[zbus(property)]
    async fn mode_since(&self) -> i64 {
        self.app.mesh.view.mode.read().expect("lock").since_ms
    }

    /// The own uplink's probes pass.
    #[zbus(property)]
    async fn uplink_up(&self) -> bool {
        self.app.mesh.view.mode.read().expect("lock").uplink.up
    }

    /// Peers in the peer table.
    #[zbus(property)]
    async fn peer_count(&self) -> u32 {
        self.app.mesh.view.peers.read().expect("lock").len() as u32
    }

    /// Direct neighbours among the peers.
    #[zbus(property)]
    async fn neighbour_count(&self) -> u32 {
        let peers = self.app.mesh.view.peers.read().expect("lock");
        peers.iter().filter(|p| p.neighbour).count() as u32
    }

    /// Bytes of healthy blobs in the store.
    #[zbus(property)]
    async fn store_used_bytes(&self) -> u64 {
        self.app.store.stats().used_bytes
    }

    /// The store quota (store.max_bytes).
    #[zbus(property)]
    async fn store_max_bytes(&self) -> u64 {
        self.app.store.stats().max_bytes
    }

    /// Entries in the store's catalog.
    #[zbus(property)]
    async fn store_entries(&self) -> u32 {
        self.app.store.stats().entries as u32
    }

    /// Entries whose blob failed an integrity check.
    #[zbus(property)]
    async fn store_quarantined(&self) -> u32 {
        self.app.store.stats().quarantined as u32
    }

    /// [shaping] enabled in the configuration.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn shaping_enabled(&self) -> bool {
        self.app.shaping.status().enabled
    }

    /// Per-client shaping classes are in the kernel.
    #[zbus(property)]
    async fn shaping_active(&self) -> bool {
        self.app.shaping.status().active
    }

    /// Why shaping is off; empty while it is on.
    #[zbus(property)]
    async fn shaping_reason(&self) -> String {
        self.app.shaping.status().reason.unwrap_or_default()
    }

    /// Clients with a shaping class now.
    #[zbus(property)]
    async fn shaping_clients(&self) -> u32 {
        let s = self.app.shaping.status();
        s.clients.iter().filter(|c| c.active).count() as u32
    }

    /// Clients held at the throttle rate for being over a quota.
    #[zbus(property)]
    async fn shaping_throttled(&self) -> u32 {
        let s = self.app.shaping.status();
        s.clients.iter().filter(|c| c.throttled).count() as u32
    }

    /// A peer entered the peer table.
    #[zbus(signal)]
    async fn peer_joined(e: &SignalEmitter<'_>, node_id: &str, name: &str) -> zbus::Result<()>;

    /// A peer left the peer table (gone quiet past gossip.peer_expiry).
    #[zbus(signal)]
    async fn peer_left(e: &SignalEmitter<'_>, node_id: &str, name: &str) -> zbus::Result<()>;

    /// The network mode changed (online, mesh-only, rf-only).
    #[zbus(signal)]
    async fn mode_changed(e: &SignalEmitter<'_>, mode: &str, previous: &str) -> zbus::Result<()>;

    /// A URL entered the store or got a new version: published here,
    /// replicated from a peer, fetched or cached on the way.
    #[zbus(signal)]
    async fn content_added(
        e: &SignalEmitter<'_>,
        url: &str,
        hash: &str,
        size: u64,
        version: u64,
    ) -> zbus::Result<()>;

    /// A URL left the store: removed or evicted.
    #[zbus(signal)]
    async fn content_removed(e: &SignalEmitter<'_>, url: &str) -> zbus::Result<()>;

    /// A client went over its daily or monthly quota and is held at the
    /// throttle rate until the period rolls over.
    #[zbus(signal)]
    async fn quota_exceeded(
        e: &SignalEmitter<'_>,
        ip: &str,
        period: &str,
        used: u64,
        quota: u64,
    ) -> zbus::Result<()>;
}

/// The message of an HTTP error body: its JSON `error`, or its text.
fn error_text(body: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}
