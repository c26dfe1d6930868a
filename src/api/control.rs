//! Control-socket endpoints: publish, remove, pin, verify, reload, and reads
//! of any access level. Only reachable through the unix socket.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, Response, StatusCode};

use super::{ApiError, App, Body, Caller, json, param, query};
use crate::cache::blobs::Ingested;
use crate::cache::sink::BlobSink;
use crate::catalog::{self, Access, ContentUrl, Priority};
use crate::store::PublishMeta;

/// Is this a control-only endpoint? (Everything else falls through to the
/// read-only routes the public port has too.)
pub fn handles(method: &Method, path: &str) -> bool {
    match path {
        "/api/v1/content" => {
            [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method)
        }
        "/api/v1/content/pin" | "/api/v1/content/verify" | "/api/v1/reload" => true,
        _ => false,
    }
}

/// Runs a control request (one that [`handles`] accepted).
pub async fn dispatch(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let get = |k: &str| param(&q, k).map(String::from);
    let need_url = || -> Result<String, ApiError> {
        let raw = get("url").ok_or_else(|| ApiError::bad_request("missing ?url="))?;
        Ok(ContentUrl::parse(&raw)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .to_string())
    };
    let r = match (req.method().clone(), req.uri().path()) {
        (Method::PUT, "/api/v1/content") => {
            let entry = publish(app, &q, req).await?;
            json(StatusCode::CREATED, &entry)
        }
        (Method::GET | Method::HEAD, "/api/v1/content") => {
            let url = ContentUrl::parse(
                &get("url").ok_or_else(|| ApiError::bad_request("missing ?url="))?,
            );
            match url {
                // external: through the mesh, or fetched once for it (`meshctl fetch`)
                Ok(u) if u.is_external() => {
                    super::proxy::get(app, &u, req.method(), req.headers()).await
                }
                url => super::content::serve(app, Caller::Control, url, &req).await,
            }
        }
        (Method::DELETE, "/api/v1/content") => {
            let url = need_url()?;
            let entry = app.store.remove(&url).await?;
            app.mesh.local_changed(&url).await; // a deletion record for own content
            json(StatusCode::OK, &entry)
        }
        (Method::POST, "/api/v1/content/pin") => {
            let pinned = match get("pinned").as_deref() {
                None | Some("true" | "1") => true,
                Some("false" | "0") => false,
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "pinned must be true or false, not {v:?}"
                    )));
                }
            };
            json(
                StatusCode::OK,
                &app.store.set_pinned(&need_url()?, pinned).await?,
            )
        }
        (Method::POST, "/api/v1/content/verify") => json(
            StatusCode::OK,
            &app.reader
                .scrub(&tokio_util::sync::CancellationToken::new())
                .await,
        ),
        (Method::POST, "/api/v1/reload") => match app.reload.reload().await {
            Ok(outcome) => json(StatusCode::OK, &outcome),
            Err(msg) => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg)),
        },
        (m, p) => {
            let allow = match p {
                "/api/v1/content" => "GET, HEAD, PUT, DELETE",
                _ => "POST",
            };
            return Err(ApiError::method_not_allowed(
                format!("{m} is not allowed on {p}"),
                allow,
            ));
        }
    };
    Ok(r)
}

/// Reads what a publish says about the content (everything but the bytes).
fn publish_meta(app: &App, q: &[(String, String)]) -> Result<PublishMeta, ApiError> {
    let get = |k: &str| param(q, k);
    let path = get("path").ok_or_else(|| {
        ApiError::bad_request("missing ?path= (the URL path to publish under, e.g. /index.html)")
    })?;
    let url = ContentUrl::new(app.node.callsign.clone(), path)
        .map_err(|e| ApiError::bad_request(format!("bad path {path:?}: {e}")))?;
    let priority: Priority = get("priority")
        .unwrap_or("standard")
        .parse()
        .map_err(ApiError::bad_request)?;
    let access: Access = get("access")
        .unwrap_or("public")
        .parse()
        .map_err(ApiError::bad_request)?;
    let tags: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .collect();
    if tags.len() > catalog::MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "at most {} tags",
            catalog::MAX_TAGS
        )));
    }
    for t in &tags {
        catalog::validate_tag(t).map_err(ApiError::bad_request)?;
    }
    let content_type = match get("content_type") {
        Some(ct) if ct.parse::<header::HeaderValue>().is_err() || !ct.contains('/') => {
            return Err(ApiError::bad_request(format!("bad content type {ct:?}")));
        }
        ct => ct.map(String::from),
    };
    let pinned = matches!(get("pin"), Some("true" | "1"));
    Ok(PublishMeta {
        // above every version the mesh has seen, so this edit wins everywhere
        version_floor: app.mesh.max_version(&url.to_string()),
        url,
        content_type,
        priority,
        access,
        tags,
        origin: app.node.node_id,
        pinned,
        version: None,
        timestamp_ms: None,
    })
}

async fn publish(
    app: &App,
    q: &[(String, String)],
    req: Request<Incoming>,
) -> Result<crate::catalog::Entry, ApiError> {
    let meta = match publish_meta(app, q) {
        Ok(m) => m,
        Err(e) => {
            // read the upload before answering, so the client sees the 400
            // instead of a broken pipe (bounded by the quota, like an upload)
            drain(req.into_body(), app.store.stats().max_bytes).await;
            return Err(e);
        }
    };
    let blob = ingest(app, req).await?;
    let entry = app.store.publish(blob, meta).await?;
    app.mesh.local_changed(&entry.url).await; // signs its record before we answer
    tracing::info!(url = %entry.url, size = entry.size, version = entry.version, "published");
    Ok(entry)
}

/// Streams the request body into a new blob; refuses early what cannot fit.
async fn ingest(app: &App, req: Request<Incoming>) -> Result<Ingested, ApiError> {
    let limit = app.store.stats().max_bytes;
    let too_big = |n: u64| {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{n} bytes exceed the whole store quota (store.max_bytes = {limit})"),
        )
    };
    if let Some(n) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && n > limit
    {
        return Err(too_big(n));
    }
    let mut sink = BlobSink::begin(app.store.blobs()).map_err(io_err)?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if sink.size() + data.len() as u64 > limit {
                        // dropping the sink removes the partial file
                        return Err(too_big(sink.size() + data.len() as u64));
                    }
                    sink.write(data).await.map_err(io_err)?;
                }
            }
            Err(e) => return Err(ApiError::bad_request(format!("upload interrupted: {e}"))),
        }
    }
    sink.finish().await.map_err(io_err)
}

async fn drain(mut body: Incoming, limit: u64) {
    let mut n = 0u64;
    while let Some(Ok(f)) = body.frame().await {
        n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0);
        if n > limit {
            break;
        }
    }
}

fn io_err(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "writing an upload failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not store the upload: {e}"),
    )
}
