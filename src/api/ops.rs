//! The control operations, once: publish, remove, pin, verify, reload, fetch,
//! quotas and the usage report, as methods on [`App`]. The control socket's handlers
//! ([`super::control`], [`super::clients`]) and the D-Bus facade
//! ([`crate::dbus`]) both parse their own wire format and call these; what
//! an operation checks, changes and tells the mesh lives only here.
//!
//! Errors are [`ApiError`]s (a status and a message that is safe to show):
//! HTTP sends them as they are, D-Bus maps the status to an error name.

use std::net::Ipv4Addr;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Response, StatusCode};

use super::{ApiError, App, Body, Caller};
use crate::analytics::Report;
use crate::cache::ScrubReport;
use crate::cache::blobs::Ingested;
use crate::cache::sink::BlobSink;
use crate::catalog::{self, Access, ContentUrl, Entry, Priority};
use crate::daemon::ReloadOutcome;
use crate::shaping::ClientStatus;
use crate::shaping::quota::Quota;
use crate::store::PublishMeta;

/// What a publish says about the content (everything but the bytes), as the
/// caller gave it; [`App::publish_meta`] validates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// The URL path to publish under, e.g. `/index.html`.
    pub path: String,
    /// `1`-`4` or `essential` / `popular` / `standard` (default) / `personal`.
    pub priority: Option<String>,
    /// `public` (default), `community` or `private`.
    pub access: Option<String>,
    /// Search labels.
    pub tags: Vec<String>,
    /// MIME type; guessed from the path when absent.
    pub content_type: Option<String>,
    /// Pin it against eviction.
    pub pin: bool,
}

impl App {
    /// Checks a publish request and turns it into what the store takes.
    pub fn publish_meta(&self, r: &PublishRequest) -> Result<PublishMeta, ApiError> {
        let path = &r.path;
        let url = ContentUrl::new(self.node.callsign.clone(), path)
            .map_err(|e| ApiError::bad_request(format!("bad path {path:?}: {e}")))?;
        let priority: Priority = r
            .priority
            .as_deref()
            .unwrap_or("standard")
            .parse()
            .map_err(ApiError::bad_request)?;
        let access: Access = r
            .access
            .as_deref()
            .unwrap_or("public")
            .parse()
            .map_err(ApiError::bad_request)?;
        if r.tags.len() > catalog::MAX_TAGS {
            return Err(ApiError::bad_request(format!(
                "at most {} tags",
                catalog::MAX_TAGS
            )));
        }
        for t in &r.tags {
            catalog::validate_tag(t).map_err(ApiError::bad_request)?;
        }
        if let Some(ct) = &r.content_type
            && (ct.parse::<header::HeaderValue>().is_err() || !ct.contains('/'))
        {
            return Err(ApiError::bad_request(format!("bad content type {ct:?}")));
        }
        Ok(PublishMeta {
            // above every version the mesh has seen, so this edit wins everywhere
            version_floor: self.mesh.max_version(&url.to_string()),
            url,
            content_type: r.content_type.clone(),
            priority,
            access,
            tags: r.tags.clone(),
            origin: self.node.node_id,
            pinned: r.pin,
            version: None,
            timestamp_ms: None,
        })
    }

    /// Streams content into a new blob; refuses early what cannot fit
    /// (`declared`: the size the caller announced, if any). A stream error
    /// is the caller's (an interrupted upload, an unreadable file): 400.
    pub async fn ingest<S>(&self, declared: Option<u64>, mut body: S) -> Result<Ingested, ApiError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let limit = self.store.stats().max_bytes;
        let too_big = |n: u64| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("{n} bytes exceed the whole store quota (store.max_bytes = {limit})"),
            )
        };
        if let Some(n) = declared
            && n > limit
        {
            return Err(too_big(n));
        }
        let mut sink = BlobSink::begin(self.store.blobs()).map_err(io_err)?;
        while let Some(chunk) = body.next().await {
            let data = chunk.map_err(ApiError::bad_request)?;
            if sink.size() + data.len() as u64 > limit {
                // dropping the sink removes the partial file
                return Err(too_big(sink.size() + data.len() as u64));
            }
            sink.write(data).await.map_err(io_err)?;
        }
        sink.finish().await.map_err(io_err)
    }

    /// Commits an ingested blob as `meta` says and signs its mesh record
    /// before returning.
    pub async fn publish(&self, blob: Ingested, meta: PublishMeta) -> Result<Entry, ApiError> {
        let entry = self.store.publish(blob, meta).await?;
        self.mesh.local_changed(&entry.url).await; // signs its record before we answer
        tracing::info!(url = %entry.url, size = entry.size, version = entry.version, "published");
        Ok(entry)
    }

    /// Removes a URL (`http://<callsign>.radio/p`) from this store; own
    /// content gets a deletion record in the mesh.
    pub async fn remove(&self, url: &str) -> Result<Entry, ApiError> {
        let url = canonical(url)?;
        let entry = self.store.remove(&url).await?;
        self.mesh.local_changed(&url).await; // a deletion record for own content
        Ok(entry)
    }

    /// Pins (protects against eviction) or unpins a URL.
    pub async fn pin(&self, url: &str, pinned: bool) -> Result<Entry, ApiError> {
        Ok(self.store.set_pinned(&canonical(url)?, pinned).await?)
    }

    /// Re-hashes every blob now; bad ones are quarantined.
    pub async fn verify(&self) -> ScrubReport {
        self.reader
            .scrub(&tokio_util::sync::CancellationToken::new())
            .await
    }

    /// Re-reads the config file; an invalid one is refused (422) and the
    /// running configuration stays.
    pub async fn reload_config(&self) -> Result<ReloadOutcome, ApiError> {
        self.reload
            .reload()
            .await
            .map_err(|msg| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg))
    }

    /// Content by URL for an admin, any access level: this station's or the
    /// mesh's (`.radio` URLs), or external (`http://host/...`: through the
    /// mesh, or fetched once for it; `meshctl fetch`). The answer streams;
    /// routed and fetched content is kept on the way as its priority allows.
    pub async fn fetch(&self, url: &str, method: &Method, headers: &HeaderMap) -> Response<Body> {
        match ContentUrl::parse(url) {
            Ok(u) if u.is_external() => super::proxy::get(self, &u, method, headers).await.resp,
            url => {
                let key = super::content::key(url);
                super::content::serve(self, Caller::Control, &key, method, headers)
                    .await
                    .resp
            }
        }
    }

    /// One client's usage, quota and share; 404 says when shaping is off.
    pub fn client_status(&self, ip: Ipv4Addr) -> Result<ClientStatus, ApiError> {
        self.shaping.client(ip).ok_or_else(|| {
            let off = self
                .shaping
                .status()
                .reason
                .map(|r| format!(" (shaping is off: {r})"))
                .unwrap_or_default();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no usage on record for {ip}{off}"),
            )
        })
    }

    /// Sets a client's own quotas, bytes per UTC day and calendar month.
    /// Neither given: its own are cleared and the configured ones apply
    /// again. Shaping off: 503 saying why.
    pub async fn set_quota(
        &self,
        ip: Ipv4Addr,
        daily: Option<u64>,
        monthly: Option<u64>,
    ) -> Result<ClientStatus, ApiError> {
        let q = (daily.is_some() || monthly.is_some()).then_some(Quota { daily, monthly });
        self.shaping
            .set_quota(ip, q)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
    }
}

impl App {
    /// The usage report of the last `since` (e.g. `"7d"`; default a day)
    /// up to now, from the start of the hour `since` falls in. The public port's leaves out clients and the external
    /// URLs people fetched (only the mesh's own content is listed).
    pub async fn report(&self, caller: Caller, since: Option<&str>) -> Result<Report, ApiError> {
        let span = match since {
            None => std::time::Duration::from_secs(86_400),
            Some(s) => {
                crate::config::DurationStr::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("since: {e}")))?
                    .0
            }
        };
        let until = crate::store::now_ms() / 1000;
        // whole hours: the hour `since` falls in is counted in full
        let since = crate::analytics::rollup::hour_of(
            until - span.as_secs().min(i64::MAX as u64 / 2) as i64,
        );
        let mut r = self
            .analytics
            .report(since, until + 1)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        if caller != Caller::Control {
            r.top_clients = None;
            r.top_content
                .retain(|i| crate::catalog::url::radio_host_callsign(host_of(&i.key)).is_some());
        }
        Ok(r)
    }
}

/// The host of an absolute URL (`""` when there is none).
fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
}

/// A content URL in its canonical form, or 400.
fn canonical(raw: &str) -> Result<String, ApiError> {
    Ok(ContentUrl::parse(raw)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .to_string())
}

fn io_err(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "writing an upload failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not store the upload: {e}"),
    )
}
